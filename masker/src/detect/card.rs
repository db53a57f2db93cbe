//! Payment card numbers: 13–19 digits, plain or grouped by single spaces or dashes, with
//! a known issuer prefix and length, Luhn-valid, not inside a longer number.

use super::scan::{at, digits_from, ends, is_digit};

/// 19 digits and up to 18 separators.
pub(crate) const MAX_LEN: usize = 37;

/// A card number starting at `i`, the start of a fresh run of `run` digits: its end.
///
/// Plain numbers are one run of 13–19 digits. Grouped numbers start with a group of 4
/// (every issuer prints 4 first: 4-4-4-4, Amex 4-6-5, Diners 4-6-4, 4-4-4-4-3), then
/// groups of 4–6, the last 1–6, all with the same separator. When groups follow one
/// another with spaces, the longest valid prefix wins (a card followed by another
/// number in free text); with dashes, a longer dashed run is another kind of id.
pub(crate) fn at_run(text: &[u8], i: usize, run: usize) -> Option<usize> {
    if (13..=19).contains(&run) {
        let end = i + run;
        let digits = text.get(i..end)?;
        return (ends(text, end) && valid(digits)).then_some(end);
    }
    if run != 4 {
        return None;
    }
    let sep = at(text, i + 4);
    if sep != b' ' && sep != b'-' {
        return None;
    }
    let mut digits = [0u8; 19];
    digits[..4].copy_from_slice(text.get(i..i + 4)?);
    let mut n = 4;
    let mut pos = i + 4;
    let mut middles_ok = true;
    let mut best = None;
    while at(text, pos) == sep && is_digit(at(text, pos + 1)) {
        let g = digits_from(text, pos + 1);
        if n + g > 19 || g > 6 {
            break;
        }
        digits[n..n + g].copy_from_slice(text.get(pos + 1..pos + 1 + g)?);
        n += g;
        pos += 1 + g;
        if n >= 13 && middles_ok {
            let continues = at(text, pos) == sep && is_digit(at(text, pos + 1));
            let bounded = ends(text, pos) || (continues && sep == b' ');
            if bounded && valid(&digits[..n]) {
                best = Some(pos);
            }
        }
        middles_ok &= (4..=6).contains(&g);
    }
    best
}

/// Issuer prefix and length, then Luhn.
fn valid(d: &[u8]) -> bool {
    issuer(d) && luhn(d)
}

/// Whether the number has a known issuer's prefix and one of its lengths.
fn issuer(d: &[u8]) -> bool {
    let len = d.len();
    let p = |k: usize| -> u32 {
        d.iter()
            .take(k)
            .fold(0, |a, &b| a * 10 + u32::from(b.wrapping_sub(b'0')))
    };
    match d.first() {
        // Visa.
        Some(b'4') => matches!(len, 13 | 16 | 19),
        // Mastercard 51–55; Maestro 50, 56–59.
        Some(b'5') => {
            let p2 = p(2);
            ((51..=55).contains(&p2) && len == 16)
                || ((p2 == 50 || (56..=59).contains(&p2)) && (16..=19).contains(&len))
        }
        // Mastercard 2221–2720; Mir 2200–2204.
        Some(b'2') => {
            let p4 = p(4);
            ((2221..=2720).contains(&p4) && len == 16)
                || ((2200..=2204).contains(&p4) && (16..=19).contains(&len))
        }
        // Amex 34/37; JCB 3528–3589; Diners 300–305, 3095, 36, 38, 39.
        Some(b'3') => {
            let (p2, p3, p4) = (p(2), p(3), p(4));
            (matches!(p2, 34 | 37) && len == 15)
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&len))
                || (((300..=305).contains(&p3) || p4 == 3095 || matches!(p2, 36 | 38 | 39))
                    && (14..=19).contains(&len))
        }
        // Discover 6011, 644–649, 65; UnionPay 62; Maestro 6x.
        Some(b'6') => (16..=19).contains(&len),
        _ => false,
    }
}

/// The Luhn checksum.
fn luhn(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, &c) in d.iter().rev().enumerate() {
        let mut v = u32::from(c.wrapping_sub(b'0'));
        if k % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_issuers() {
        assert!(luhn(b"4111111111111111"));
        assert!(!luhn(b"4111111111111112"));
        assert!(valid(b"378282246310005"));
        assert!(valid(b"5555555555554444"));
        assert!(valid(b"2223003122003222"));
        assert!(valid(b"6011111111111117"));
        assert!(valid(b"3530111333300000"));
        assert!(valid(b"30569309025904"));
        assert!(!valid(b"1111111111111117"));
        assert!(!valid(b"411111111111111")); // Visa has no 15-digit numbers
    }
}
