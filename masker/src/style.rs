//! Mask styles: how a found or named value is rewritten.
//!
//! Every function appends to a caller's buffer and allocates nothing of its own, so a
//! rewritten frame is produced in one pass. Styles work on UTF-8 characters when the
//! value is valid UTF-8 (a multi-byte character is kept or masked whole, never cut) and
//! on bytes otherwise.
//!
//! * `redact`: `****`, whatever the value (its length is not revealed).
//! * `partial`: what identifies nothing on its own is kept, the rest becomes `*` one
//!   character for one, separators are kept (see [`mask_value`] for each detector).
//! * `hash`: `h:` and the first 16 hex digits (64 bits) of HMAC-SHA-256 under the
//!   profile's key: stable for one key, so joins and group-bys on masked output line up,
//!   and not reversible by enumerating likely values without the key.
//! * `null`: `****` inside a text (the wire side nulls whole columns itself).
//! * `format-preserving`: same length in characters and same shape, see
//!   [`mask_value`].
//!
//! The `hash` and `format-preserving` styles use two keys derived from the profile's key
//! (domain separation), so a hash never gives away anything about the format-preserving
//! output of the same value, or the reverse.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{DetectorKind, Style};

type HmacSha256 = Hmac<Sha256>;

/// What `redact` writes, and what `partial` writes when it keeps nothing.
pub const REDACTED: &[u8] = b"****";
/// The prefix of a `hash` mask.
pub const HASH_PREFIX: &[u8] = b"h:";
/// The number of hex digits of a `hash` mask after its prefix.
pub const HASH_HEX_LEN: usize = 16;

/// The key of the `hash` and `format-preserving` styles (from control).
#[derive(Clone)]
pub struct MaskKey {
    /// HMAC keyed for `hash`.
    hash: HmacSha256,
    /// HMAC keyed for `format-preserving` (a subkey derived from the key).
    fpe: HmacSha256,
}

impl std::fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaskKey(..)")
    }
}

/// HMAC-SHA-256 keyed with `key` (HMAC takes keys of any length).
fn hmac(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC hashes a long key and pads a short one: new_from_slice cannot fail.
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

impl MaskKey {
    /// A key from its bytes.
    pub fn new(key: &[u8]) -> MaskKey {
        let mut derive = hmac(key);
        derive.update(b"sluice-masker/format-preserving/v1");
        let fpe_key = derive.finalize().into_bytes();
        MaskKey {
            hash: hmac(key),
            fpe: hmac(&fpe_key),
        }
    }
}

/// Appends the masked form of a whole `value` in `style`. `kind` is the detector that
/// found it (`None` for column, literal and pattern rules); `partial` uses it to know
/// what to keep. `Style::Null` appends `****` (a whole column is nulled by the caller).
///
/// `partial` keeps, and masks every other character but the separators with `*`:
///
/// | kind | keeps | example |
/// |---|---|---|
/// | card, SSN | the last 4 digits; ` ` `-` | `**** **** **** 4242`, `***-**-6789` |
/// | email | the local part's first character (if it has two or more) and the TLD; `@` `.` | `j***@*******.com` |
/// | phone | the last 2 digits; ` ` `-` `.` `(` `)` `+` | `+*-***-***-**42` |
/// | IBAN | the country code and the last 4 characters; ` ` | `GB** **** **** **** **54 32` |
/// | IPv4, IPv6 | nothing; `.` `:` | `***.***.*.**`, `****::*` |
/// | JWT, secret | the prefix that says what it is, then `****` | `eyJ****`, `AKIA****`, `-----BEGIN RSA PRIVATE KEY-----****` |
/// | none | the last 4 characters if there are 12 or more, else `****` | `********4242` |
///
/// `format-preserving` writes as many characters as the value has: each ASCII digit
/// becomes another digit, each ASCII letter another letter of the same case, each
/// non-ASCII letter or digit an ASCII letter (lowercase unless it is uppercase) or
/// digit, everything else is kept. The replacements come from a keystream derived from
/// the keyed HMAC of the whole value, so one value always masks the same way under one
/// key (joins line up) and reveals nothing without the key beyond its shape. Guarantee:
/// every ASCII digit and letter is replaced by a *different* one (the keystream picks
/// among the 9 other digits or 25 other letters), so the output differs from any value
/// with at least one ASCII letter or digit; a value with none (only punctuation and
/// spaces) is returned as is. Two different values can, rarely, mask the same. On a
/// value that is not valid UTF-8, bytes from 0x80 up count as letters, so the output
/// has the same byte length and is ASCII.
pub fn mask_value(
    style: Style,
    kind: Option<DetectorKind>,
    value: &[u8],
    key: &MaskKey,
    out: &mut Vec<u8>,
) {
    match style {
        Style::Redact | Style::Null => out.extend_from_slice(REDACTED),
        Style::Hash => hash(value, key, out),
        Style::FormatPreserving => format_preserving(value, key, out),
        Style::Partial => partial(kind, value, out),
    }
}

/// Appends a fill of exactly `value.len()` bytes that reveals nothing of `value`, for
/// places where a length prefix cannot be rewritten.
pub fn mask_same_length(value: &[u8], out: &mut Vec<u8>) {
    out.resize(out.len() + value.len(), b'*');
}

fn hash(value: &[u8], key: &MaskKey, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut mac = key.hash.clone();
    mac.update(value);
    let tag = mac.finalize().into_bytes();
    out.extend_from_slice(HASH_PREFIX);
    for &b in tag.iter().take(HASH_HEX_LEN / 2) {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
}

/// The keystream of a format-preserving mask: SHA-256(seed ‖ counter) blocks, the seed
/// being the keyed HMAC of the value.
struct Keystream {
    seed: [u8; 32],
    block: [u8; 32],
    used: usize,
    counter: u64,
}

impl Keystream {
    fn new(value: &[u8], key: &MaskKey) -> Keystream {
        let mut mac = key.fpe.clone();
        mac.update(value);
        Keystream {
            seed: mac.finalize().into_bytes().into(),
            block: [0; 32],
            used: 32,
            counter: 0,
        }
    }

    fn next(&mut self) -> u8 {
        if self.used == self.block.len() {
            let mut h = Sha256::new();
            h.update(self.seed);
            h.update(self.counter.to_le_bytes());
            self.block = h.finalize().into();
            self.counter += 1;
            self.used = 0;
        }
        let b = self.block[self.used];
        self.used += 1;
        b
    }

    /// A digit other than `d` (0–9).
    fn other_digit(&mut self, d: u8) -> u8 {
        b'0' + (d + 1 + self.next() % 9) % 10
    }

    /// A letter other than `l` (0–25), from `base` (`a` or `A`).
    fn other_letter(&mut self, l: u8, base: u8) -> u8 {
        base + (l + 1 + self.next() % 25) % 26
    }
}

fn format_preserving(value: &[u8], key: &MaskKey, out: &mut Vec<u8>) {
    let mut ks = Keystream::new(value, key);
    let ascii = |b: u8, ks: &mut Keystream| match b {
        b'0'..=b'9' => Some(ks.other_digit(b - b'0')),
        b'a'..=b'z' => Some(ks.other_letter(b - b'a', b'a')),
        b'A'..=b'Z' => Some(ks.other_letter(b - b'A', b'A')),
        _ => None,
    };
    match std::str::from_utf8(value) {
        Ok(s) => {
            let mut buf = [0u8; 4];
            for c in s.chars() {
                if c.is_ascii() {
                    let b = c as u8;
                    out.push(ascii(b, &mut ks).unwrap_or(b));
                } else if c.is_numeric() {
                    out.push(b'0' + ks.next() % 10);
                } else if c.is_alphabetic() {
                    let base = if c.is_uppercase() { b'A' } else { b'a' };
                    out.push(base + ks.next() % 26);
                } else {
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        Err(_) => {
            for &b in value {
                let m = if b >= 0x80 {
                    b'a' + ks.next() % 26
                } else {
                    ascii(b, &mut ks).unwrap_or(b)
                };
                out.push(m);
            }
        }
    }
}

/// The units a partial mask works on: UTF-8 characters (as byte ranges) when the value
/// is valid UTF-8, bytes otherwise. ASCII values (the common case: every built-in
/// detector finds ASCII, but for emails' local parts) take the byte path without
/// decoding.
fn units(value: &[u8]) -> Units<'_> {
    let utf8 = !value.is_ascii() && std::str::from_utf8(value).is_ok();
    Units { value, utf8 }
}

/// See [`units`].
#[derive(Clone, Copy)]
struct Units<'a> {
    value: &'a [u8],
    utf8: bool,
}

impl<'a> Iterator for Units<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let first = *self.value.first()?;
        let len = if self.utf8 {
            match first {
                0x00..=0x7f => 1,
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                _ => 4,
            }
        } else {
            1
        };
        let (unit, rest) = self.value.split_at(len.min(self.value.len()));
        self.value = rest;
        Some(unit)
    }
}

/// A single-byte unit satisfying `f`.
fn unit_is(unit: &[u8], f: impl Fn(u8) -> bool) -> bool {
    matches!(unit, [b] if f(*b))
}

fn partial(kind: Option<DetectorKind>, value: &[u8], out: &mut Vec<u8>) {
    match kind {
        Some(DetectorKind::Card | DetectorKind::Ssn) => keep_last(
            value,
            out,
            |b| matches!(b, b' ' | b'-'),
            |b| b.is_ascii_digit(),
            4,
        ),
        Some(DetectorKind::Phone) => keep_last(
            value,
            out,
            |b| matches!(b, b' ' | b'-' | b'.' | b'(' | b')' | b'+'),
            |b| b.is_ascii_digit(),
            2,
        ),
        Some(DetectorKind::Ipv4 | DetectorKind::Ipv6) => {
            keep_last(value, out, |b| matches!(b, b'.' | b':'), |_| false, 0)
        }
        Some(DetectorKind::Iban) => iban(value, out),
        Some(DetectorKind::Email) => email(value, out),
        Some(DetectorKind::Jwt | DetectorKind::Secret) => {
            let keep = token_prefix_len(value);
            out.extend_from_slice(value.get(..keep).unwrap_or_default());
            out.extend_from_slice(REDACTED);
        }
        None => {
            let all = units(value);
            let n = all.count();
            if n < 12 {
                out.extend_from_slice(REDACTED);
            } else {
                for (k, unit) in all.enumerate() {
                    if k + 4 < n {
                        out.push(b'*');
                    } else {
                        out.extend_from_slice(unit);
                    }
                }
            }
        }
    }
}

/// Keeps separators and the last `keep` significant units; masks every other unit.
fn keep_last(
    value: &[u8],
    out: &mut Vec<u8>,
    is_sep: impl Fn(u8) -> bool,
    is_sig: impl Fn(u8) -> bool,
    keep: usize,
) {
    let all = units(value);
    let total = all.filter(|u| unit_is(u, &is_sig)).count();
    let mut seen = 0;
    for unit in all {
        if unit_is(unit, &is_sig) {
            seen += 1;
            if seen + keep > total {
                out.extend_from_slice(unit);
                continue;
            }
        } else if unit_is(unit, &is_sep) {
            out.extend_from_slice(unit);
            continue;
        }
        out.push(b'*');
    }
}

/// Country code (two uppercase letters first) and the last 4 alphanumerics; spaces kept.
fn iban(value: &[u8], out: &mut Vec<u8>) {
    let cc = value.len() >= 2 && value[..2].iter().all(u8::is_ascii_uppercase);
    let all = units(value);
    let total = all
        .filter(|u| unit_is(u, |b| b.is_ascii_alphanumeric()))
        .count();
    let mut seen = 0;
    for unit in all {
        if unit_is(unit, |b| b.is_ascii_alphanumeric()) {
            seen += 1;
            if (cc && seen <= 2) || seen + 4 > total {
                out.extend_from_slice(unit);
                continue;
            }
        } else if unit == b" " {
            out.push(b' ');
            continue;
        }
        out.push(b'*');
    }
}

/// The local part's first character (when it has two or more) and the TLD (when it is
/// letters); `@` and `.` kept.
fn email(value: &[u8], out: &mut Vec<u8>) {
    let Some(at) = memchr::memrchr(b'@', value) else {
        return partial(None, value, out);
    };
    let (local, domain) = (&value[..at], &value[at + 1..]);
    let local_units = units(local);
    let mut probe = local_units;
    let keep_first = probe.nth(1).is_some();
    for (k, unit) in local_units.enumerate() {
        if k == 0 && keep_first {
            out.extend_from_slice(unit);
        } else {
            out.push(b'*');
        }
    }
    out.push(b'@');
    let tld_at = memchr::memrchr(b'.', domain).map(|d| d + 1);
    let tld = tld_at.and_then(|t| domain.get(t..)).unwrap_or_default();
    let keep_tld = !tld.is_empty() && tld.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-');
    let masked_end = if keep_tld {
        tld_at.unwrap_or(domain.len())
    } else {
        domain.len()
    };
    for unit in units(&domain[..masked_end]) {
        out.push(if unit == b"." { b'.' } else { b'*' });
    }
    if keep_tld {
        out.extend_from_slice(tld);
    }
}

/// The length of the recognisable prefix of a token: `eyJ`, `AKIA`, `sk_live_`, `ghp_`,
/// `github_pat_`, `xoxb-`, or a PEM block's BEGIN line; 0 for anything else.
fn token_prefix_len(value: &[u8]) -> usize {
    const FIXED: &[&[u8]] = &[
        b"eyJ",
        b"AKIA",
        b"ASIA",
        b"sk_live_",
        b"rk_live_",
        b"sk_test_",
        b"rk_test_",
        b"github_pat_",
        b"ghp_",
        b"gho_",
        b"ghu_",
        b"ghs_",
        b"ghr_",
        b"xoxa-",
        b"xoxb-",
        b"xoxp-",
        b"xoxo-",
        b"xoxs-",
        b"xoxr-",
    ];
    const BEGIN: &[u8] = b"-----BEGIN ";
    if value.starts_with(BEGIN) {
        let head = value
            .get(BEGIN.len()..value.len().min(80))
            .unwrap_or_default();
        return match memchr::memmem::find(head, b"-----") {
            Some(p) => BEGIN.len() + p + 5,
            None => 0,
        };
    }
    FIXED
        .iter()
        .find(|p| value.starts_with(p) && value.len() > p.len())
        .map_or(0, |p| p.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial_of(kind: Option<DetectorKind>, v: &str) -> String {
        let mut out = Vec::new();
        partial(kind, v.as_bytes(), &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn partial_units() {
        assert_eq!(partial_of(None, "Grüße aus Köln!"), "***********öln!");
        assert_eq!(
            partial_of(Some(DetectorKind::Email), "öhn@ex.com"),
            "ö**@**.com"
        );
    }
}
