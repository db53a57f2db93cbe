//! IBANs: two-letter country code, two check digits, the BBAN (uppercase letters and
//! digits), written in one piece or in space-separated groups of four, with the length
//! the country registered and a valid ISO 7064 mod-97 checksum.

use super::scan::{at, is_digit, is_word};

/// 34 characters and 8 group separators.
pub(crate) const MAX_LEN: usize = 42;

/// Lengths from the SWIFT IBAN registry. Countries not listed are taken at 15–34.
#[rustfmt::skip]
const LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24), (b"AE", 23), (b"AL", 28), (b"AT", 20), (b"AZ", 28), (b"BA", 20),
    (b"BE", 16), (b"BG", 22), (b"BH", 22), (b"BI", 27), (b"BR", 29), (b"BY", 28),
    (b"CH", 21), (b"CR", 22), (b"CY", 28), (b"CZ", 24), (b"DE", 22), (b"DJ", 27),
    (b"DK", 18), (b"DO", 28), (b"EE", 20), (b"EG", 29), (b"ES", 24), (b"FI", 18),
    (b"FK", 18), (b"FO", 18), (b"FR", 27), (b"GB", 22), (b"GE", 22), (b"GI", 23),
    (b"GL", 18), (b"GR", 27), (b"GT", 28), (b"HN", 28), (b"HR", 21), (b"HU", 28),
    (b"IE", 22), (b"IL", 23), (b"IQ", 23), (b"IS", 26), (b"IT", 27), (b"JO", 30),
    (b"KW", 30), (b"KZ", 20), (b"LB", 28), (b"LC", 32), (b"LI", 21), (b"LT", 20),
    (b"LU", 20), (b"LV", 21), (b"LY", 25), (b"MC", 27), (b"MD", 24), (b"ME", 22),
    (b"MK", 19), (b"MN", 20), (b"MR", 27), (b"MT", 31), (b"MU", 30), (b"NI", 28),
    (b"NL", 18), (b"NO", 15), (b"OM", 23), (b"PK", 24), (b"PL", 28), (b"PS", 29),
    (b"PT", 25), (b"QA", 29), (b"RO", 24), (b"RS", 22), (b"RU", 33), (b"SA", 24),
    (b"SC", 31), (b"SD", 18), (b"SE", 24), (b"SI", 19), (b"SK", 24), (b"SM", 27),
    (b"SO", 23), (b"ST", 25), (b"SV", 28), (b"TL", 23), (b"TN", 24), (b"TR", 26),
    (b"UA", 29), (b"VA", 22), (b"VG", 24), (b"XK", 20), (b"YE", 30),
];

fn registered_len(cc: [u8; 2]) -> Option<usize> {
    LENGTHS.iter().find(|(c, _)| **c == cc).map(|&(_, len)| len)
}

#[inline]
fn is_bban(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

/// An IBAN whose check digits start the digit run at `i`: its span (it starts two bytes
/// earlier, at the country code).
pub(crate) fn at_run(text: &[u8], i: usize) -> Option<(usize, usize)> {
    let s = i.checked_sub(2)?;
    let cc = [at(text, s), at(text, s + 1)];
    if !cc[0].is_ascii_uppercase()
        || !cc[1].is_ascii_uppercase()
        || !is_digit(at(text, i + 1))
        || (s > 0 && is_word(at(text, s - 1)))
    {
        return None;
    }
    let expected = registered_len(cc);
    let max = expected.unwrap_or(34);
    let mut buf = [0u8; 34];
    buf[..2].copy_from_slice(&cc);
    buf[2] = at(text, i);
    buf[3] = at(text, i + 1);
    let mut n = 4;
    let mut pos = i + 2;
    let spaced = at(text, pos) == b' ' && is_bban(at(text, pos + 1));
    while n < max {
        if spaced && n % 4 == 0 {
            if at(text, pos) == b' ' && is_bban(at(text, pos + 1)) {
                pos += 1;
            } else {
                break;
            }
        }
        let b = at(text, pos);
        if !is_bban(b) {
            break;
        }
        buf[n] = b;
        n += 1;
        pos += 1;
    }
    let len_ok = match expected {
        Some(len) => n == len,
        None => (15..=34).contains(&n),
    };
    (len_ok && !is_word(at(text, pos)) && mod97(&buf[..n]) == 1).then_some((s, pos))
}

/// ISO 7064 mod 97-10 of the IBAN rearranged (BBAN, then country code and check
/// digits), letters as 10–35.
fn mod97(iban: &[u8]) -> u32 {
    let (head, bban) = iban.split_at(4.min(iban.len()));
    bban.iter().chain(head).fold(0u32, |acc, &b| {
        if b.is_ascii_digit() {
            (acc * 10 + u32::from(b - b'0')) % 97
        } else {
            (acc * 100 + u32::from(b - b'A') + 10) % 97
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum() {
        assert_eq!(mod97(b"GB82WEST12345698765432"), 1);
        assert_eq!(mod97(b"DE89370400440532013000"), 1);
        assert_ne!(mod97(b"GB82WEST12345698765433"), 1);
    }
}
