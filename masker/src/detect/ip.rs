//! IP addresses: IPv4 dotted quads and IPv6 in every textual form (full, `::`-compressed,
//! with an embedded IPv4 tail).

use super::scan::{at, digits_from, is_digit, is_hex, is_word, number};

/// `255.255.255.255`.
pub(crate) const V4_MAX_LEN: usize = 15;
/// `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`.
pub(crate) const V6_MAX_LEN: usize = 45;

/// An IPv4 address starting at `i`, the start of a fresh run of `run` digits: its end.
///
/// Four octets of 1–3 digits, each at most 255, not preceded by a `.` and not followed
/// by `.` and a digit (so the first four parts of a version `1.2.3.4.5` are not an
/// address).
pub(crate) fn v4_at_run(text: &[u8], i: usize, run: usize) -> Option<usize> {
    if run > 3 || at(text, i + run) != b'.' || (i > 0 && at(text, i - 1) == b'.') {
        return None;
    }
    let end = quad(text, i)?;
    let n = at(text, end);
    let longer = is_word(n) || (n == b'.' && is_digit(at(text, end + 1)));
    (!longer).then_some(end)
}

/// The end of a dotted quad at `i` (no boundary checks).
fn quad(text: &[u8], i: usize) -> Option<usize> {
    let mut pos = i;
    for k in 0..4 {
        let n = digits_from(text, pos);
        if n == 0 || n > 3 || number(text, pos, n) > 255 {
            return None;
        }
        pos += n;
        if k < 3 {
            if at(text, pos) != b'.' {
                return None;
            }
            pos += 1;
        }
    }
    Some(pos)
}

/// An IPv6 address around the colon at `c`, the first colon not yet looked at. Returns
/// the span if there is one, and where the caller's colon scan resumes (past the whole
/// candidate token, so a long run of colons is looked at once).
pub(crate) fn v6_around(text: &[u8], c: usize) -> (Option<(usize, usize)>, usize) {
    // At most 4 hex digits before the first colon.
    let mut s = c;
    while s > 0 && c - s < 5 && is_hex(at(text, s - 1)) {
        s -= 1;
    }
    // The token: hex digits, colons and dots (an IPv4 tail).
    let mut e = c;
    while let Some(&b) = text.get(e) {
        if !(is_hex(b) || b == b':' || b == b'.') {
            break;
        }
        e += 1;
    }
    let resume = e;
    if c - s > 4 || e - s > V6_MAX_LEN + 1 {
        return (None, resume);
    }
    // Left boundary: not inside a word, a dotted name or a longer colon list.
    if s > 0 && (is_word(at(text, s - 1)) || matches!(at(text, s - 1), b'.' | b':')) {
        return (None, resume);
    }
    // A sentence may end right after the address.
    while e > c && at(text, e - 1) == b'.' {
        e -= 1;
    }
    if is_word(at(text, e)) || e - s > V6_MAX_LEN {
        return (None, resume);
    }
    match text.get(s..e) {
        // Every form has two colons or more; a time of day (`14:05`) has one.
        Some(token) if memchr::memchr_iter(b':', token).nth(1).is_some() && valid_v6(token) => {
            (Some((s, e)), resume)
        }
        _ => (None, resume),
    }
}

/// Whether `t` is exactly an IPv6 address: 8 groups of 1–4 hex digits, or fewer around
/// one `::` (at least one group: `::` alone is not taken), the last two groups possibly
/// written as a dotted quad.
fn valid_v6(t: &[u8]) -> bool {
    match memchr::memmem::find(t, b"::") {
        Some(dc) => {
            let (head, tail) = (&t[..dc], &t[dc + 2..]);
            if tail.first() == Some(&b':') || memchr::memmem::find(tail, b"::").is_some() {
                return false;
            }
            match (groups(head, false), groups(tail, true)) {
                (Some(h), Some(t)) => (1..=7).contains(&(h + t)),
                _ => false,
            }
        }
        None => groups(t, true) == Some(8),
    }
}

/// The number of 16-bit groups in a `:`-separated list (empty: 0), the last one possibly
/// a dotted quad (2 groups) when `v4_tail`.
fn groups(seg: &[u8], v4_tail: bool) -> Option<usize> {
    if seg.is_empty() {
        return Some(0);
    }
    let mut count = 0;
    let mut parts = seg.split(|&b| b == b':').peekable();
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        if part.contains(&b'.') {
            if !(last && v4_tail && quad(part, 0) == Some(part.len())) {
                return None;
            }
            count += 2;
        } else if (1..=4).contains(&part.len()) && part.iter().all(|&b| is_hex(b)) {
            count += 1;
        } else {
            return None;
        }
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v6_grammar() {
        for ok in [
            &b"2001:db8::1"[..],
            b"::1",
            b"fe80::",
            b"2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            b"::ffff:192.0.2.128",
            b"64:ff9b::192.0.2.33",
            b"1:2:3:4:5:6:1.2.3.4",
        ] {
            assert!(valid_v6(ok), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"::"[..],
            b"12:34:56",
            b"1:2:3:4:5:6:7",
            b"1:2:3:4:5:6:7:8:9",
            b"1::2::3",
            b":::1",
            b"12345::1",
            b"1.2.3.4::",
            b"1:2:3:4:5:6:7:1.2.3.4",
            b"::1.2.3",
        ] {
            assert!(!valid_v6(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
}
