//! Tokens with a recognisable prefix: JSON web tokens and secrets (AWS access key IDs,
//! PEM private key blocks, Stripe keys, GitHub tokens, Slack tokens). One Aho-Corasick
//! automaton over every enabled prefix finds the candidates (a SIMD "packed" search for
//! this few short patterns); the validators below decide.

use super::scan::{at, is_word};

/// Bound on a JWT and on a PEM block. A longer JWT is masked over its first 8 KiB (its
/// header and claims; what is left is the tail of the signature); a PEM block whose END
/// line is not within 8 KiB is masked over 8 KiB or to the end of the text.
pub(crate) const LONG_MAX_LEN: usize = 8192;
/// Bound on the other secrets (Stripe keys are ~100 bytes, GitHub tokens 40–93); a longer
/// run is masked over its first 255 bytes.
pub(crate) const SHORT_MAX_LEN: usize = 255;

/// What a prefix announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefix {
    /// `eyJ`: a JWT.
    Jwt,
    /// `AKIA`, `ASIA`.
    Aws,
    /// `-----BEGIN `.
    Pem,
    /// `sk_live_`, `rk_live_`, `sk_test_`, `rk_test_`.
    Stripe,
    /// `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`.
    GitHub,
    /// `github_pat_`.
    GitHubPat,
    /// `xoxa-`, `xoxb-`, `xoxp-`, `xoxo-`, `xoxs-`, `xoxr-`.
    Slack,
}

/// Every prefix the secret detector looks for.
pub(crate) const SECRET_PREFIXES: &[(&str, Prefix)] = &[
    ("AKIA", Prefix::Aws),
    ("ASIA", Prefix::Aws),
    ("-----BEGIN ", Prefix::Pem),
    ("sk_live_", Prefix::Stripe),
    ("rk_live_", Prefix::Stripe),
    ("sk_test_", Prefix::Stripe),
    ("rk_test_", Prefix::Stripe),
    ("ghp_", Prefix::GitHub),
    ("gho_", Prefix::GitHub),
    ("ghu_", Prefix::GitHub),
    ("ghs_", Prefix::GitHub),
    ("ghr_", Prefix::GitHub),
    ("github_pat_", Prefix::GitHubPat),
    ("xoxa-", Prefix::Slack),
    ("xoxb-", Prefix::Slack),
    ("xoxp-", Prefix::Slack),
    ("xoxo-", Prefix::Slack),
    ("xoxs-", Prefix::Slack),
    ("xoxr-", Prefix::Slack),
];

/// The prefix the JWT detector looks for (`{"` in base64url).
pub(crate) const JWT_PREFIX: &str = "eyJ";

/// The token announced by `prefix` at `s`: its end.
pub(crate) fn at_prefix(text: &[u8], s: usize, prefix: Prefix, prefix_len: usize) -> Option<usize> {
    if prefix != Prefix::Pem && s > 0 && is_word(at(text, s - 1)) {
        return None;
    }
    let body = s + prefix_len;
    match prefix {
        Prefix::Jwt => jwt(text, s),
        Prefix::Aws => {
            let n = run(text, body, 17, |b| {
                b.is_ascii_uppercase() || b.is_ascii_digit()
            });
            (n == 16 && !is_word(at(text, body + n))).then_some(body + n)
        }
        Prefix::Pem => pem(text, s),
        Prefix::Stripe => capped(text, s, body, 16, u8::is_ascii_alphanumeric),
        Prefix::GitHub => capped(text, s, body, 36, u8::is_ascii_alphanumeric),
        Prefix::GitHubPat => capped(text, s, body, 22, |b| is_word(*b)),
        Prefix::Slack => {
            let end = capped(text, s, body, 10, |b| {
                b.is_ascii_alphanumeric() || *b == b'-'
            })?;
            let mut e = end;
            while e > body && at(text, e - 1) == b'-' {
                e -= 1;
            }
            (e - body >= 10).then_some(e)
        }
    }
}

/// The number of bytes from `i` (at most `max`) that satisfy `f`.
fn run(text: &[u8], i: usize, max: usize, f: impl Fn(u8) -> bool) -> usize {
    text.get(i..)
        .unwrap_or_default()
        .iter()
        .take(max)
        .take_while(|&&b| f(b))
        .count()
}

/// A body of at least `min` bytes satisfying `f` from `body`; the token (from `s`) is cut
/// at [`SHORT_MAX_LEN`].
fn capped(
    text: &[u8],
    s: usize,
    body: usize,
    min: usize,
    f: impl Fn(&u8) -> bool,
) -> Option<usize> {
    let room = SHORT_MAX_LEN.checked_sub(body - s)?;
    let n = run(text, body, room, |b| f(&b));
    (n >= min).then_some(body + n)
}

#[inline]
fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// `header.payload.signature` (the signature may be empty), the header decoding to JSON
/// with an `"alg"` member.
fn jwt(text: &[u8], s: usize) -> Option<usize> {
    if s > 0 && matches!(at(text, s - 1), b'-' | b'.') {
        return None;
    }
    let h = run(text, s, LONG_MAX_LEN, is_b64url);
    let dot1 = s + h;
    if at(text, dot1) != b'.' || !header_has_alg(text.get(s..dot1)?) {
        return None;
    }
    let p = run(text, dot1 + 1, LONG_MAX_LEN, is_b64url);
    let dot2 = dot1 + 1 + p;
    if p == 0 || at(text, dot2) != b'.' {
        return None;
    }
    let sig = run(text, dot2 + 1, LONG_MAX_LEN, is_b64url);
    Some((dot2 + 1 + sig).min(s + LONG_MAX_LEN))
}

/// Whether the base64url header (its first 512 characters) decodes to text containing
/// `"alg"`.
fn header_has_alg(h: &[u8]) -> bool {
    let mut buf = [0u8; 384];
    let mut n = 0;
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in h.iter().take(512) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return false,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            if let Some(slot) = buf.get_mut(n) {
                *slot = (acc >> bits) as u8;
                n += 1;
            }
            acc &= (1 << bits) - 1;
        }
    }
    memchr::memmem::find(&buf[..n], b"\"alg\"").is_some()
}

/// `-----BEGIN <label>PRIVATE KEY-----`, key material, then `-----END <same label>-----`
/// or the end of the text (cut), within [`LONG_MAX_LEN`].
fn pem(text: &[u8], s: usize) -> Option<usize> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let label_start = s + BEGIN.len();
    let label_len = run(text, label_start, 48, |b| {
        b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' '
    });
    let label = text.get(label_start..label_start + label_len)?;
    let header_end = label_start + label_len + 5;
    if !label.ends_with(b"PRIVATE KEY")
        || text.get(label_start + label_len..header_end) != Some(b"-----")
    {
        return None;
    }
    // Key material must follow (a header alone holds no secret): past line breaks,
    // literal or JSON-escaped, the next byte is base64 or a `Proc-Type:` header.
    let mut body = header_end;
    loop {
        match at(text, body) {
            b' ' | b'\t' | b'\r' | b'\n' => body += 1,
            b'\\' if matches!(at(text, body + 1), b'n' | b'r') => body += 2,
            _ => break,
        }
    }
    let first = at(text, body);
    if !(first.is_ascii_alphanumeric() || first == b'+' || first == b'/') {
        return None;
    }
    let limit = text.len().min(s + LONG_MAX_LEN);
    let window = text.get(header_end..limit)?;
    let mut from = 0;
    while let Some(p) = memchr::memmem::find(window.get(from..)?, b"-----END ") {
        let l = from + p + b"-----END ".len();
        if window.get(l..l + label_len) == Some(label)
            && window.get(l + label_len..l + label_len + 5) == Some(b"-----")
        {
            return Some(header_end + l + label_len + 5);
        }
        from = l;
    }
    Some(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_header() {
        // {"alg":"HS256","typ":"JWT"}
        assert!(header_has_alg(b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"));
        // {"typ":"JWT"}
        assert!(!header_has_alg(b"eyJ0eXAiOiJKV1QifQ"));
        assert!(!header_has_alg(b"eyJ!"));
    }
}
