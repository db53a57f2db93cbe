//! Email addresses, found from their `@`.
//!
//! The local part is the RFC 5322 "dot-atom" restricted to the characters that occur in
//! real addresses (`A-Z a-z 0-9 . _ % + -`, and non-ASCII letters and digits as RFC 6531
//! allows): the rarer atext characters (`{ } | ' = / ? # ...`) are exactly the ones that
//! delimit an address in the texts we scan (`{a@b.co}` in array output, `'a@b.co'`,
//! `email=a@b.co`), so leaving them out finds the address without its surroundings. The domain is dot-separated labels of `A-Z a-z 0-9 -` (not
//! starting or ending with `-`), at least two, the last (the TLD) two or more letters or
//! an IDN `xn--` label.

use super::scan::at;

/// The longest local part (RFC 5321).
const LOCAL_MAX: usize = 64;
/// The longest domain (RFC 1035).
const DOMAIN_MAX: usize = 253;
/// The longest address reported.
pub(crate) const MAX_LEN: usize = LOCAL_MAX + 1 + DOMAIN_MAX;

/// Bytes of a local part (non-ASCII ones are sorted out by [`non_ascii_start`]).
const LOCAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-') || c >= 0x80;
        b += 1;
    }
    t
};

/// Bytes of a domain label.
const LABEL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'-';
        b += 1;
    }
    t
};

#[inline(always)]
fn is_local(b: u8) -> bool {
    LOCAL[usize::from(b)]
}

#[inline(always)]
fn is_label(b: u8) -> bool {
    LABEL[usize::from(b)]
}

/// An address around the `@` at `a`: its span, and where the `@` scan resumes.
pub(crate) fn around(text: &[u8], a: usize) -> (Option<(usize, usize)>, usize) {
    // Local part: back from the `@`, at most 64 characters (a longer run keeps its last
    // 64, which is what gets masked).
    let mut s = a;
    while s > 0 && a - s < LOCAL_MAX && is_local(at(text, s - 1)) {
        s -= 1;
    }
    if text.get(s..a).is_some_and(|l| !l.is_ascii()) {
        s = non_ascii_start(text, s, a);
    }
    while s < a && at(text, s) == b'.' {
        s += 1;
    }
    if s == a || at(text, a - 1) == b'.' {
        return (None, a + 1);
    }
    // Domain: labels, remembering where the last one that could be a TLD ends.
    let mut pos = a + 1;
    let mut labels = 0;
    let mut end = None;
    loop {
        let l_start = pos;
        while is_label(at(text, pos)) && pos - l_start < 63 {
            pos += 1;
        }
        let label = text.get(l_start..pos).unwrap_or_default();
        if label.is_empty()
            || label.first() == Some(&b'-')
            || label.last() == Some(&b'-')
            || is_label(at(text, pos))
            || pos - (a + 1) > DOMAIN_MAX
        {
            break;
        }
        labels += 1;
        if labels >= 2 && is_tld(label) {
            end = Some(pos);
        }
        if at(text, pos) == b'.' && is_label(at(text, pos + 1)) {
            pos += 1;
        } else {
            break;
        }
    }
    match end {
        Some(e) => (Some((s, e)), e),
        None => (None, a + 1),
    }
}

/// Where a local part `text[s..a]` with non-ASCII bytes really starts: on a character
/// boundary, after the last non-ASCII character that is not a letter or digit (`«`,
/// `“`, `→`), or after the last non-ASCII byte if the text is not UTF-8 there.
fn non_ascii_start(text: &[u8], mut s: usize, a: usize) -> usize {
    while s < a && at(text, s) & 0xC0 == 0x80 {
        s += 1;
    }
    let local = text.get(s..a).unwrap_or_default();
    match std::str::from_utf8(local) {
        Ok(l) => match l
            .char_indices()
            .rev()
            .find(|(_, c)| !c.is_ascii() && !c.is_alphanumeric())
        {
            Some((i, c)) => s + i + c.len_utf8(),
            None => s,
        },
        Err(_) => match local.iter().rposition(|&b| b >= 0x80) {
            Some(p) => s + p + 1,
            None => s,
        },
    }
}

/// Two or more letters, or an IDN label `xn--…`.
fn is_tld(label: &[u8]) -> bool {
    (label.len() >= 2 && label.iter().all(u8::is_ascii_alphabetic))
        || (label.len() > 4 && label[..4].eq_ignore_ascii_case(b"xn--"))
}
