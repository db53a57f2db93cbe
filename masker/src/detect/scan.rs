//! Byte-level helpers shared by the validators: the digit prefilter (a SWAR scan, eight
//! bytes per step) and the boundary tests every detector applies at both ends of a
//! candidate so that a value is never found inside a longer token.

/// The byte at `i`, or 0 past the end (0 is never a digit, letter or separator, so every
/// look-ahead can be written without a bounds check of its own).
#[inline(always)]
pub(crate) fn at(text: &[u8], i: usize) -> u8 {
    match text.get(i) {
        Some(&b) => b,
        None => 0,
    }
}

/// `[0-9]`.
#[inline(always)]
pub(crate) fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

/// `[A-Za-z0-9_]`: a byte that continues a token (identifiers, ids, numbers).
#[inline(always)]
pub(crate) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `[0-9A-Fa-f]`.
#[inline(always)]
pub(crate) fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// The number of consecutive digits from `i`.
#[inline]
pub(crate) fn digits_from(text: &[u8], i: usize) -> usize {
    match text.get(i..) {
        Some(rest) => rest.iter().take_while(|b| b.is_ascii_digit()).count(),
        None => 0,
    }
}

/// The numeric value of `text[i..i + n]`, all digits, `n <= 9`.
#[inline]
pub(crate) fn number(text: &[u8], i: usize, n: usize) -> u32 {
    text.get(i..i + n)
        .unwrap_or_default()
        .iter()
        .fold(0, |acc, &b| acc * 10 + u32::from(b.wrapping_sub(b'0')))
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `w` that is an ASCII digit. Exact (no false positives,
/// unlike the classic zero-byte trick): the high bits are cleared first so the two
/// additions cannot carry into the next byte.
#[inline(always)]
fn digit_mask(w: u64) -> u64 {
    let low7 = w & !HI;
    let ge_0 = low7.wrapping_add(LO * (0x80 - u64::from(b'0')));
    let ge_colon = low7.wrapping_add(LO * (0x80 - u64::from(b'9' + 1)));
    ge_0 & !ge_colon & !w & HI
}

/// The eight high bits of a byte mask (one per byte, as the SWAR tests below leave
/// them) packed into the low byte, byte 0 in bit 0.
#[inline(always)]
fn pack(m: u64) -> u64 {
    ((m >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

/// The high bit of every byte of `w` that is an ASCII uppercase letter (exact).
#[inline(always)]
fn upper_mask(w: u64) -> u64 {
    let low7 = w & !HI;
    let ge_a = low7.wrapping_add(LO * (0x80 - u64::from(b'A')));
    let ge_after_z = low7.wrapping_add(LO * (0x80 - u64::from(b'Z' + 1)));
    ge_a & !ge_after_z & !w & HI
}

/// Bitmaps of a 64-byte block: bit `j` describes byte `base + j` (bytes past the end
/// are in no class).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Block {
    /// `[0-9]`.
    pub(crate) digit: u64,
    /// `[A-Z]`, when asked for (else 0).
    pub(crate) upper: u64,
}

/// The bitmaps of `text[base..base + 64]` (the uppercase one only when `UPPER`): one
/// SWAR step per 8 bytes the text has there, no branch per byte. A last partial word is
/// read as the text's last 8 bytes shifted down (no copy), or byte by byte when the
/// whole text is shorter than 8 bytes.
#[inline]
pub(crate) fn classify<const UPPER: bool>(text: &[u8], base: usize) -> Block {
    let rest = text.get(base..).unwrap_or_default();
    let block = rest.get(..64).unwrap_or(rest);
    let mut b = Block::default();
    let mut add = |w: u64, shift: usize| {
        b.digit |= pack(digit_mask(w)) << shift;
        if UPPER {
            b.upper |= pack(upper_mask(w)) << shift;
        }
    };
    let mut words = block.chunks_exact(8);
    let mut shift = 0;
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        add(u64::from_le_bytes(word), shift);
        shift += 8;
    }
    let tail = words.remainder().len();
    if tail > 0 {
        let mut word = [0u8; 8];
        match text.len().checked_sub(8).and_then(|from| text.get(from..)) {
            Some(last) => {
                word.copy_from_slice(last);
                add(u64::from_le_bytes(word) >> (8 * (8 - tail)), shift);
            }
            None => {
                for (d, s) in word.iter_mut().zip(words.remainder()) {
                    *d = *s;
                }
                add(u64::from_le_bytes(word), shift);
            }
        }
    }
    b
}

/// The digit and (when `UPPER`) capital bitmaps of whole words (`words.len()` a multiple
/// of 8, at most 64 bytes).
#[inline(always)]
fn classify_words<const UPPER: bool>(words: &[u8]) -> (u64, u64) {
    let (mut digit, mut upper) = (0u64, 0u64);
    for (k, w) in words.chunks_exact(8).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        let w = u64::from_le_bytes(word);
        digit |= pack(digit_mask(w)) << (8 * k);
        if UPPER {
            upper |= pack(upper_mask(w)) << (8 * k);
        }
    }
    (digit, upper)
}

/// The digit and (when `UPPER`) capital bitmaps of a whole text of at most 128 bytes,
/// as one 128-bit word each: the common case of a short value, in one pass.
#[inline]
pub(crate) fn classify_short<const UPPER: bool>(text: &[u8]) -> (u128, u128) {
    let text = text.get(..128).unwrap_or(text);
    let whole = text.len() & !7;
    let (first, second) = text[..whole].split_at(whole.min(64));
    let (d0, u0) = classify_words::<UPPER>(first);
    let (d1, u1) = classify_words::<UPPER>(second);
    let mut digit = u128::from(d0) | (u128::from(d1) << 64);
    let mut upper = u128::from(u0) | (u128::from(u1) << 64);
    let tail = text.len() - whole;
    if tail > 0 {
        let mut word = [0u8; 8];
        let w = match text.len().checked_sub(8).and_then(|from| text.get(from..)) {
            Some(last) => {
                word.copy_from_slice(last);
                u64::from_le_bytes(word) >> (8 * (8 - tail))
            }
            None => {
                for (d, s) in word.iter_mut().zip(&text[whole..]) {
                    *d = *s;
                }
                u64::from_le_bytes(word)
            }
        };
        digit |= u128::from(pack(digit_mask(w))) << whole;
        if UPPER {
            upper |= u128::from(pack(upper_mask(w))) << whole;
        }
    }
    (digit, upper)
}

/// The digit, (when `UPPER`) capital and (when `ANCHORS`) anchor bitmaps of 16 bytes, bit
/// `j` for byte `j`: SSE2 compares and `movemask`, a handful of instructions for the
/// three bitmaps (the portable per-byte version below does not vectorize as well).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn classify16<const UPPER: bool, const ANCHORS: bool>(
    chunk: &[u8; 16],
    anchors: [u8; 3],
) -> (u32, u32, u32) {
    use core::arch::x86_64::{
        _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_movemask_epi8,
        _mm_or_si128, _mm_set1_epi8, _mm_set_epi64x,
    };
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    let (l, h) = chunk.split_at(8);
    lo.copy_from_slice(l);
    hi.copy_from_slice(h);
    // SAFETY: these intrinsics only need SSE2, which this function is compiled only with
    // (`cfg(target_feature = "sse2")`, part of the x86_64 baseline); they take and return
    // values (no pointer is read or written). Covered by
    // `tests::classify_window_matches_a_plain_scan` and `tests::classify16_matches_bytes`.
    unsafe {
        let v = _mm_set_epi64x(i64::from_le_bytes(hi), i64::from_le_bytes(lo));
        // Signed compares: bytes >= 0x80 are negative, so in no class.
        let between = |first: u8, last: u8| {
            _mm_and_si128(
                _mm_cmpgt_epi8(v, _mm_set1_epi8((first - 1) as i8)),
                _mm_cmplt_epi8(v, _mm_set1_epi8((last + 1) as i8)),
            )
        };
        let digit = _mm_movemask_epi8(between(b'0', b'9')) as u32;
        let upper = if UPPER {
            _mm_movemask_epi8(between(b'A', b'Z')) as u32
        } else {
            0
        };
        let anchor = if ANCHORS {
            let eq = |a: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(a as i8));
            _mm_movemask_epi8(_mm_or_si128(
                _mm_or_si128(eq(anchors[0]), eq(anchors[1])),
                eq(anchors[2]),
            )) as u32
        } else {
            0
        };
        (digit, upper, anchor)
    }
}

/// The portable version of the 16-byte classification: plain per-byte tests over a
/// fixed-size array, no branch per byte.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn classify16<const UPPER: bool, const ANCHORS: bool>(
    chunk: &[u8; 16],
    anchors: [u8; 3],
) -> (u32, u32, u32) {
    let mut digit = 0u32;
    for (j, &b) in chunk.iter().enumerate() {
        digit |= u32::from(b.wrapping_sub(b'0') < 10) << j;
    }
    let mut upper = 0u32;
    if UPPER {
        for (j, &b) in chunk.iter().enumerate() {
            upper |= u32::from(b.wrapping_sub(b'A') < 26) << j;
        }
    }
    let mut anchor = 0u32;
    if ANCHORS {
        let [a0, a1, a2] = anchors;
        for (j, &b) in chunk.iter().enumerate() {
            anchor |= u32::from((b == a0) | (b == a1) | (b == a2)) << j;
        }
    }
    (digit, upper, anchor)
}

/// Bitmaps of up to 128 bytes of a text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Window {
    /// `[0-9]`.
    pub(crate) digit: u128,
    /// `[A-Z]`, when asked for (else 0).
    pub(crate) upper: u128,
    /// Bytes equal to one of the anchors, when asked for (else 0).
    pub(crate) anchor: u128,
}

/// The bitmaps of `text[base..base + n]` (`n <= 128`; bytes past the end are in no
/// class): the uppercase one only when `UPPER`, the one of the bytes in `anchors` only
/// when `ANCHORS` (anchors are never 0). 16 bytes per step; a last partial chunk is read
/// as the text's last 16 bytes shifted down (no copy), or through a zero-padded copy when
/// the whole text is shorter than 16 bytes.
#[inline(always)]
pub(crate) fn classify_window<const UPPER: bool, const ANCHORS: bool>(
    text: &[u8],
    base: usize,
    n: usize,
    anchors: [u8; 3],
) -> Window {
    let end = text.len().min(base.saturating_add(n.min(128)));
    // Per 16-byte chunk, combined with constant shifts at the end (a variable shift of a
    // `u128` costs a branch and several instructions).
    let mut m = [(0u32, 0u32, 0u32); 8];
    let mut k = 0;
    let mut i = base;
    while let (Some(chunk), Some(slot)) =
        (text.get(i..i + 16).filter(|_| i + 16 <= end), m.get_mut(k))
    {
        let mut c = [0u8; 16];
        c.copy_from_slice(chunk);
        *slot = classify16::<UPPER, ANCHORS>(&c, anchors);
        i += 16;
        k += 1;
    }
    if let (true, Some(slot)) = (i < end, m.get_mut(k)) {
        let tail = end - i;
        let mut c = [0u8; 16];
        match end.checked_sub(16).and_then(|from| text.get(from..end)) {
            Some(last) => {
                c.copy_from_slice(last);
                let (d, u, a) = classify16::<UPPER, ANCHORS>(&c, anchors);
                let k = 16 - tail;
                *slot = (d >> k, u >> k, a >> k);
            }
            None => {
                for (d, s) in c.iter_mut().zip(text.get(i..end).unwrap_or_default()) {
                    *d = *s;
                }
                *slot = classify16::<UPPER, ANCHORS>(&c, anchors);
            }
        }
    }
    let join = |part: fn(&(u32, u32, u32)) -> u32| {
        m.iter()
            .rev()
            .fold(0u128, |acc, x| (acc << 16) | u128::from(part(x)))
    };
    Window {
        digit: join(|x| x.0),
        upper: if UPPER { join(|x| x.1) } else { 0 },
        anchor: if ANCHORS { join(|x| x.2) } else { 0 },
    }
}

/// Whether a number starting at `i` starts a token of its own: the byte before it does
/// not continue a word, and is not a `-`, `.`, `/` or `:` right after a digit (which
/// would make it the tail of a date, a decimal, a version or a longer id). A space or a
/// comma before it is a boundary (free text, CSV).
#[inline]
pub(crate) fn fresh(text: &[u8], i: usize) -> bool {
    if i == 0 {
        return true;
    }
    let p = at(text, i - 1);
    if is_word(p) {
        return false;
    }
    !(matches!(p, b'-' | b'.' | b'/' | b':') && i >= 2 && is_digit(at(text, i - 2)))
}

/// Whether a number ending before `end` ends a token of its own: the next byte does not
/// continue a word, and is not a `-` or `.` followed by a digit.
#[inline]
pub(crate) fn ends(text: &[u8], end: usize) -> bool {
    let n = at(text, end);
    !(is_word(n) || (matches!(n, b'-' | b'.') && is_digit(at(text, end + 1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_matches_a_plain_scan() {
        let mut text: Vec<u8> = (0..=255u8).collect();
        text.extend_from_slice(
            b"ab12c3.456789Z01234AZ@[`567890123456789012345678.901234567890x1234567\xb9",
        );
        let short = [
            (0, 0),
            (3, 0),
            (7, 0),
            (8, 0),
            (9, 0),
            (13, 5),
            (100, 0),
            (128, 0),
        ];
        let crossing = [(100, 64), (101, 60)];
        let long = [0, 1, 5, 60, 64, 70, 75, 250, 300, 400].map(|b| (text.len(), b));
        for (len, base) in short.into_iter().chain(crossing).chain(long) {
            let text = &text[..len];
            let b = classify::<true>(text, base);
            for j in 0..64 {
                let byte = text.get(base + j);
                assert_eq!(
                    b.digit >> j & 1 == 1,
                    byte.is_some_and(u8::is_ascii_digit),
                    "{base} {j}"
                );
                assert_eq!(
                    b.upper >> j & 1 == 1,
                    byte.is_some_and(u8::is_ascii_uppercase),
                    "{base} {j}"
                );
            }
            assert_eq!(classify::<false>(text, base).upper, 0);
            if base == 0 && len <= 128 {
                let (d, u) = classify_short::<true>(text);
                let next = classify::<true>(text, 64);
                assert_eq!(d, u128::from(b.digit) | u128::from(next.digit) << 64);
                assert_eq!(u, u128::from(b.upper) | u128::from(next.upper) << 64);
                assert_eq!(classify_short::<false>(text), (d, 0));
            }
            assert_eq!(classify::<false>(text, base).digit, b.digit);
        }
    }

    #[test]
    fn classify16_matches_bytes() {
        let anchors = [b'@', b':', b'+'];
        for start in (0..=255u8).step_by(16) {
            let mut c = [0u8; 16];
            for (j, d) in c.iter_mut().enumerate() {
                *d = start + j as u8;
            }
            let (d, u, a) = classify16::<true, true>(&c, anchors);
            for (j, b) in c.iter().enumerate() {
                assert_eq!(d >> j & 1 == 1, b.is_ascii_digit(), "{b}");
                assert_eq!(u >> j & 1 == 1, b.is_ascii_uppercase(), "{b}");
                assert_eq!(a >> j & 1 == 1, anchors.contains(b), "{b}");
            }
            assert_eq!(classify16::<false, false>(&c, anchors), (d, 0, 0));
        }
    }

    #[test]
    fn classify_window_matches_a_plain_scan() {
        let mut text: Vec<u8> = (0..=255u8).collect();
        text.extend_from_slice(
            b"ab12c3.45:6789Z01+234AZ@[`5678901@234567890+12345678.9:01234567890",
        );
        let anchors = [b'@', b':', b'+'];
        for len in [
            0,
            1,
            7,
            15,
            16,
            17,
            31,
            33,
            64,
            100,
            127,
            128,
            129,
            200,
            text.len(),
        ] {
            for base in [0, 1, 15, 16, 60, 100, 250, 300] {
                let text = &text[..len];
                for n in [64, 128] {
                    let w = classify_window::<true, true>(text, base, n, anchors);
                    for j in 0..128 {
                        let byte = text.get(base + j).filter(|_| j < n);
                        let bit = |m: u128| m >> j & 1 == 1;
                        assert_eq!(bit(w.digit), byte.is_some_and(u8::is_ascii_digit));
                        assert_eq!(bit(w.upper), byte.is_some_and(u8::is_ascii_uppercase));
                        assert_eq!(bit(w.anchor), byte.is_some_and(|b| anchors.contains(b)));
                    }
                    let plain = classify_window::<false, false>(text, base, n, anchors);
                    assert_eq!((plain.digit, plain.upper, plain.anchor), (w.digit, 0, 0));
                }
            }
        }
    }
}
