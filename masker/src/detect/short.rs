//! One pass over a short value (up to [`SHORT`] bytes: most values of a result) that
//! gives every prefilter what it needs: the digit, anchor (`@`, `:`, `+`) and capital
//! bitmaps, and whether a token prefix may be in the value at all.
//!
//! This is the masker's hottest loop (every byte of every text value goes through it
//! when content detectors are on), so it is written with vector intrinsics: 32 bytes per
//! step with AVX2 where the CPU has it (detected once per compiled profile, see
//! [`Simd::detect`]), 16 bytes per step with SSE2 (the x86_64 baseline) otherwise, and
//! a portable per-byte version elsewhere. Measured on the masking bench, the AVX2 path
//! makes the whole detector pass about twice as fast as the SSE2 one.

/// The longest text [`classify`] takes.
pub(crate) const SHORT: usize = 128;

/// Bitmaps of a whole text of at most [`SHORT`] bytes: bit `j` describes byte `j`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Short {
    /// `[0-9]`.
    pub(crate) digit: u128,
    /// Bytes equal to one of the anchors, when asked for (else 0).
    pub(crate) anchor: u128,
    /// `[A-Z]`, when asked for (else 0).
    pub(crate) upper: u128,
    /// Whether one of [`PREFIX_PAIRS`] is in the text, when asked for (else `false`).
    pub(crate) prefix: bool,
}

/// The byte pairs [`Short::prefix`] looks for: every prefix in `token::SECRET_PREFIXES`
/// and `token::JWT_PREFIX` holds at least one (`eyJ`, `AKIA`, `ASIA`, `-----BEGIN `,
/// `xoxb-`, and `_` in the others), and prose and business data rarely do. A pair is
/// (the byte before, the byte), `None` standing for "any byte". The vector versions
/// below spell the same pairs out (a loop over the table would not fold its constants).
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
pub(crate) const PREFIX_PAIRS: &[(Option<u8>, u8)] = &[
    (Some(b'y'), b'J'),
    (Some(b'A'), b'K'),
    (Some(b'A'), b'S'),
    (Some(b'-'), b'-'),
    (Some(b'o'), b'x'),
    (None, b'_'),
];

/// The vector instructions [`classify`] may use. Only [`Simd::detect`] turns AVX2 on,
/// after asking the CPU, which is what makes calling the AVX2 code sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Simd {
    avx2: bool,
}

impl Simd {
    /// What this CPU has.
    pub(crate) fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            Simd {
                avx2: std::arch::is_x86_feature_detected!("avx2"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Simd { avx2: false }
        }
    }

    /// The baseline only (SSE2 on x86_64), whatever the CPU has.
    #[cfg(test)]
    pub(crate) fn baseline() -> Simd {
        Simd { avx2: false }
    }

    /// Whether the AVX2 path is on.
    #[cfg(test)]
    pub(crate) fn has_avx2(self) -> bool {
        self.avx2
    }
}

/// The bitmaps of a text of at most [`SHORT`] bytes (a longer one is cut there): the
/// anchor bitmap (bytes in `anchors`) only when `ANCHORS`, the prefix test only when
/// `PREFIX`, the capital bitmap only when `UPPER`.
#[inline(always)]
pub(crate) fn classify<const ANCHORS: bool, const PREFIX: bool, const UPPER: bool>(
    text: &[u8],
    anchors: [u8; 3],
    simd: Simd,
) -> Short {
    let text = text.get(..SHORT).unwrap_or(text);
    #[cfg(target_arch = "x86_64")]
    if simd.avx2 && text.len() >= 32 {
        // SAFETY: `simd.avx2` is only ever set by `Simd::detect`, after
        // `is_x86_feature_detected!("avx2")` said this CPU has AVX2, the one target
        // feature the function is compiled with.
        return unsafe { avx2::classify::<ANCHORS, PREFIX, UPPER>(text, anchors) };
    }
    let _ = simd;
    baseline::classify::<ANCHORS, PREFIX, UPPER>(text, anchors)
}

/// 16 bytes per step: SSE2 on x86_64, per byte elsewhere.
mod baseline {
    use super::{Short, SHORT};

    /// Per 16 bytes: digit, anchor, capital and prefix-pair bitmaps.
    type Masks16 = (u32, u32, u32, u32);

    /// The classes of the 16 bytes in `bytes` (byte `j` in bits `8j..8j + 8`), whose
    /// preceding byte is `before`.
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[inline(always)]
    fn classify16<const ANCHORS: bool, const PREFIX: bool, const UPPER: bool>(
        bytes: u128,
        before: u8,
        anchors: [u8; 3],
    ) -> Masks16 {
        use core::arch::x86_64::{
            __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8,
            _mm_cvtsi32_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_set_epi64x,
            _mm_slli_si128,
        };
        let (lo, hi) = (bytes as u64 as i64, (bytes >> 64) as u64 as i64);
        // SAFETY: these intrinsics only need SSE2, which this function is compiled only
        // with (`cfg(target_feature = "sse2")`, part of the x86_64 baseline); they take
        // and return values (no pointer is read or written). Covered by
        // `tests::classify_matches_a_plain_scan`.
        unsafe {
            let v = _mm_set_epi64x(hi, lo);
            // Signed compares: bytes >= 0x80 are negative, so in no class.
            let between = |x: __m128i, first: u8, last: u8| {
                _mm_and_si128(
                    _mm_cmpgt_epi8(x, _mm_set1_epi8((first - 1) as i8)),
                    _mm_cmplt_epi8(x, _mm_set1_epi8((last + 1) as i8)),
                )
            };
            let eq = |x: __m128i, b: u8| _mm_cmpeq_epi8(x, _mm_set1_epi8(b as i8));
            let digit = _mm_movemask_epi8(between(v, b'0', b'9')) as u32;
            let anchor = if ANCHORS {
                let any = _mm_or_si128(
                    _mm_or_si128(eq(v, anchors[0]), eq(v, anchors[1])),
                    eq(v, anchors[2]),
                );
                _mm_movemask_epi8(any) as u32
            } else {
                0
            };
            let upper = if UPPER {
                _mm_movemask_epi8(between(v, b'A', b'Z')) as u32
            } else {
                0
            };
            let prefix = if PREFIX {
                // Byte j of `p` is byte j - 1 of the text.
                let p = _mm_or_si128(_mm_slli_si128(v, 1), _mm_cvtsi32_si128(i32::from(before)));
                let pair = |before: u8, byte: u8| _mm_and_si128(eq(v, byte), eq(p, before));
                let any = _mm_or_si128(
                    _mm_or_si128(pair(b'y', b'J'), pair(b'A', b'K')),
                    _mm_or_si128(
                        _mm_or_si128(pair(b'A', b'S'), pair(b'-', b'-')),
                        _mm_or_si128(pair(b'o', b'x'), eq(v, b'_')),
                    ),
                );
                _mm_movemask_epi8(any) as u32
            } else {
                0
            };
            (digit, anchor, upper, prefix)
        }
    }

    /// The portable version of [`classify16`]: plain per-byte tests, no branch per byte.
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    #[inline(always)]
    fn classify16<const ANCHORS: bool, const PREFIX: bool, const UPPER: bool>(
        bytes: u128,
        before: u8,
        anchors: [u8; 3],
    ) -> Masks16 {
        let (mut digit, mut anchor, mut upper, mut prefix) = (0u32, 0u32, 0u32, 0u32);
        let mut p = before;
        for (j, b) in bytes.to_le_bytes().into_iter().enumerate() {
            digit |= u32::from(b.is_ascii_digit()) << j;
            if ANCHORS {
                anchor |= u32::from(anchors.contains(&b)) << j;
            }
            if UPPER {
                upper |= u32::from(b.is_ascii_uppercase()) << j;
            }
            if PREFIX {
                let hit = super::PREFIX_PAIRS
                    .iter()
                    .any(|&(before, byte)| b == byte && before.is_none_or(|x| x == p));
                prefix |= u32::from(hit) << j;
            }
            p = b;
        }
        (digit, anchor, upper, prefix)
    }

    /// `text[s..s + 16]` as a little-endian `u128`, bytes past the end 0. Whole chunks
    /// are one read; the last partial one is the text's last 16 bytes shifted down, or
    /// (for a text shorter than 16 bytes) two overlapping 8-byte reads, so that no byte
    /// goes through memory on its own (a narrow store then a wide load of it stalls).
    #[inline(always)]
    fn load16(text: &[u8], s: usize) -> u128 {
        let word = |b: &[u8]| -> u64 {
            let mut w = [0u8; 8];
            w.copy_from_slice(b.get(..8).unwrap_or(&[0; 8]));
            u64::from_le_bytes(w)
        };
        let pair =
            |b: &[u8]| u128::from(word(b)) | u128::from(word(b.get(8..).unwrap_or(&[]))) << 64;
        if let Some(c) = text.get(s..s + 16) {
            return pair(c);
        }
        let n = text.len().saturating_sub(s);
        if n == 0 {
            return 0;
        }
        if let Some(last) = text.len().checked_sub(16).and_then(|from| text.get(from..)) {
            return pair(last) >> (8 * (16 - n));
        }
        // The whole text is shorter than 16 bytes (and `s` is 0).
        let len = text.len();
        let (lo, hi) = if len >= 8 {
            let tail = text.get(len - 8..).map_or(0, word);
            let hi = if len > 8 { tail >> (8 * (16 - len)) } else { 0 };
            (word(text), hi)
        } else {
            let mut lo = 0u64;
            for (i, &b) in text.iter().enumerate() {
                lo |= u64::from(b) << (8 * i);
            }
            (lo, 0)
        };
        u128::from(lo) | u128::from(hi) << 64
    }

    #[inline(always)]
    pub(super) fn classify<const ANCHORS: bool, const PREFIX: bool, const UPPER: bool>(
        text: &[u8],
        anchors: [u8; 3],
    ) -> Short {
        // Each step's bits enter at the top and everything moves down 16 (constant
        // shifts; a shift by `16 * k` is a branchy variable shift of a `u128` in every
        // step), and one final shift puts byte 0 at bit 0.
        let (mut digit, mut anchor, mut upper) = (0u128, 0u128, 0u128);
        let mut prefix = 0;
        let steps = text.len().div_ceil(16).min(SHORT / 16);
        let mut previous = 0u128;
        for k in 0..steps {
            let bytes = load16(text, 16 * k);
            let before = (previous >> 120) as u8;
            previous = bytes;
            let (d, a, u, p) = classify16::<ANCHORS, PREFIX, UPPER>(bytes, before, anchors);
            digit = (digit >> 16) | (u128::from(d) << 112);
            anchor = (anchor >> 16) | (u128::from(a) << 112);
            upper = (upper >> 16) | (u128::from(u) << 112);
            prefix |= p;
        }
        let down = 16 * (SHORT / 16 - steps) as u32;
        Short {
            digit: digit.checked_shr(down).unwrap_or(0),
            anchor: anchor.checked_shr(down).unwrap_or(0),
            upper: upper.checked_shr(down).unwrap_or(0),
            prefix: prefix != 0,
        }
    }
}

/// 32 bytes per step with AVX2.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::{
        __m256i, _mm256_alignr_epi8, _mm256_and_si256, _mm256_cmpeq_epi8, _mm256_cmpgt_epi8,
        _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256, _mm256_permute2x128_si256,
        _mm256_set1_epi8, _mm256_setzero_si256,
    };

    use super::{Short, SHORT};

    /// `text[start..start + 32]` as a vector (the caller guarantees the range).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load(text: &[u8], start: usize) -> __m256i {
        match text.get(start..start + 32) {
            // SAFETY: `c` is 32 readable bytes; the load has no alignment requirement.
            Some(c) => unsafe { _mm256_loadu_si256(c.as_ptr().cast()) },
            None => _mm256_setzero_si256(),
        }
    }

    /// The text of 32 to [`SHORT`] bytes, 32 bytes per step; a last partial step
    /// classifies the text's last 32 bytes and drops the bits of those the step before
    /// already did.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn classify<const ANCHORS: bool, const PREFIX: bool, const UPPER: bool>(
        text: &[u8],
        anchors: [u8; 3],
    ) -> Short {
        let n = text.len().min(SHORT);
        let steps = n.div_ceil(32);
        let between = |x: __m256i, first: u8, last: u8| {
            // Signed compares: bytes >= 0x80 are negative, so in no class.
            _mm256_and_si256(
                _mm256_cmpgt_epi8(x, _mm256_set1_epi8((first - 1) as i8)),
                _mm256_cmpgt_epi8(_mm256_set1_epi8((last + 1) as i8), x),
            )
        };
        let eq = |x: __m256i, b: u8| _mm256_cmpeq_epi8(x, _mm256_set1_epi8(b as i8));
        let (mut digit, mut anchor, mut upper) = (0u128, 0u128, 0u128);
        let mut prefix = _mm256_setzero_si256();
        let mut previous = _mm256_setzero_si256();
        for k in 0..steps {
            let start = 32 * k;
            let (v, p, drop) = if start + 32 <= n {
                // SAFETY: AVX2 is on (this function's contract); the range is in `text`.
                let v = unsafe { load(text, start) };
                // Byte j of `p` is byte start + j - 1: the vector shifted up one byte,
                // the last byte of the step before (or 0) coming in at the bottom.
                let spill = _mm256_permute2x128_si256::<0x03>(v, previous);
                (v, _mm256_alignr_epi8::<15>(v, spill), 0)
            } else {
                // n > 32 here (a text of exactly 32 bytes is one whole step).
                // SAFETY: as above; n - 33 + 32 < n.
                let (v, p) = unsafe { (load(text, n - 32), load(text, n - 33)) };
                (v, p, 32 - (n - start))
            };
            previous = v;
            let d = _mm256_movemask_epi8(between(v, b'0', b'9')) as u32 >> drop;
            let a = if ANCHORS {
                let any = _mm256_or_si256(
                    _mm256_or_si256(eq(v, anchors[0]), eq(v, anchors[1])),
                    eq(v, anchors[2]),
                );
                _mm256_movemask_epi8(any) as u32 >> drop
            } else {
                0
            };
            let u = if UPPER {
                _mm256_movemask_epi8(between(v, b'A', b'Z')) as u32 >> drop
            } else {
                0
            };
            if PREFIX {
                // Bytes the step before saw again here are harmless: only whether a
                // pair is present matters.
                let pair = |before: u8, byte: u8| _mm256_and_si256(eq(v, byte), eq(p, before));
                let any = _mm256_or_si256(
                    _mm256_or_si256(pair(b'y', b'J'), pair(b'A', b'K')),
                    _mm256_or_si256(
                        _mm256_or_si256(pair(b'A', b'S'), pair(b'-', b'-')),
                        _mm256_or_si256(pair(b'o', b'x'), eq(v, b'_')),
                    ),
                );
                prefix = _mm256_or_si256(prefix, any);
            }
            // As in the baseline: bits enter at the top, one final shift at the end.
            digit = (digit >> 32) | (u128::from(d) << 96);
            anchor = (anchor >> 32) | (u128::from(a) << 96);
            upper = (upper >> 32) | (u128::from(u) << 96);
        }
        let down = 32 * (SHORT / 32 - steps) as u32;
        Short {
            digit: digit.checked_shr(down).unwrap_or(0),
            anchor: anchor.checked_shr(down).unwrap_or(0),
            upper: upper.checked_shr(down).unwrap_or(0),
            prefix: _mm256_movemask_epi8(prefix) != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `classify` must say about `text`, byte by byte.
    fn plain(text: &[u8], anchors: [u8; 3]) -> Short {
        let text = text.get(..SHORT).unwrap_or(text);
        let mut s = Short::default();
        let mut p = 0u8;
        for (j, &b) in text.iter().enumerate() {
            s.digit |= u128::from(b.is_ascii_digit()) << j;
            s.anchor |= u128::from(anchors.contains(&b)) << j;
            s.upper |= u128::from(b.is_ascii_uppercase()) << j;
            s.prefix |= PREFIX_PAIRS
                .iter()
                .any(|&(before, byte)| b == byte && before.is_none_or(|x| x == p));
            p = b;
        }
        s
    }

    fn sample() -> Vec<u8> {
        let mut text: Vec<u8> = (0..=255u8).collect();
        text.extend_from_slice(
            b"ab12c3.45:6789Z01+234AZ@[`5678901@234567890+12345678.9:01234567890",
        );
        text.extend_from_slice(b"key eyJhb AKIA ASIA ----- b-x xoxb- box a_b GB82WEST AZ9 ");
        text
    }

    #[test]
    fn classify_matches_a_plain_scan() {
        let text = sample();
        let anchors = [b'@', b':', b'+'];
        let mut modes = vec![Simd::baseline()];
        if Simd::detect().has_avx2() {
            modes.push(Simd::detect());
        }
        let mut cases = 0;
        for simd in modes {
            for start in (0..text.len()).step_by(5) {
                for len in 0..=SHORT + 1 {
                    let Some(t) = text.get(start..start + len) else {
                        continue;
                    };
                    let want = plain(t, anchors);
                    let all = classify::<true, true, true>(t, anchors, simd);
                    assert_eq!(all, want, "{simd:?} {start} {len}");
                    let digits_only = Short {
                        digit: want.digit,
                        ..Short::default()
                    };
                    assert_eq!(
                        classify::<false, false, false>(t, anchors, simd),
                        digits_only
                    );
                    let got = classify::<false, true, false>(t, anchors, simd);
                    assert_eq!((got.prefix, got.anchor, got.upper), (want.prefix, 0, 0));
                    cases += 1;
                }
            }
        }
        assert!(cases > 5000, "{cases}");
    }

    #[test]
    fn every_token_prefix_holds_a_prefix_pair() {
        let prefixes = super::super::token::SECRET_PREFIXES
            .iter()
            .map(|&(p, _)| p)
            .chain([super::super::token::JWT_PREFIX]);
        for simd in [Simd::baseline(), Simd::detect()] {
            for prefix in prefixes.clone() {
                // Alone, after a word, and deep inside a long value.
                for text in [
                    prefix.to_string(),
                    format!("x{prefix}"),
                    format!("{}{prefix}", "order shipped ".repeat(5)),
                ] {
                    let s = classify::<false, true, false>(text.as_bytes(), [1; 3], simd);
                    assert!(s.prefix, "{prefix} in {text:?}");
                }
            }
            let prose =
                b"Order 2024-03-15 shipped to Jane Doe, 12 Market Street; invoice INV-7731 (paid)";
            assert!(!classify::<false, true, false>(prose, [1; 3], simd).prefix);
        }
    }
}
