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
            assert_eq!(classify::<false>(text, base).digit, b.digit);
        }
    }
}
