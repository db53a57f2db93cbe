//! JWKS documents: public signing keys by `kid`.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

use super::config::SigningAlgorithm;
use super::error::JwksError;

/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (bounds verification cost).
const MAX_RSA_BITS: usize = 8192;
/// Largest number of keys kept from one document.
const MAX_KEYS: usize = 64;

/// The type of a usable public key; each type goes with exactly one algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyType {
    /// `kty: RSA` (RS256).
    Rsa,
    /// `kty: EC`, `crv: P-256` (ES256).
    EcP256,
    /// `kty: OKP`, `crv: Ed25519` (EdDSA).
    Ed25519,
}

impl KeyType {
    pub(crate) fn algorithm(self) -> SigningAlgorithm {
        match self {
            KeyType::Rsa => SigningAlgorithm::RS256,
            KeyType::EcP256 => SigningAlgorithm::ES256,
            KeyType::Ed25519 => SigningAlgorithm::EdDSA,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            KeyType::Rsa => "RSA",
            KeyType::EcP256 => "EC P-256",
            KeyType::Ed25519 => "Ed25519",
        }
    }
}

/// One usable public key.
#[derive(Clone)]
pub(crate) struct PublicKey {
    pub(crate) kty: KeyType,
    /// The JWK's own `alg`, if it declares one (then it must equal `kty.algorithm()`).
    pub(crate) alg: Option<SigningAlgorithm>,
    pub(crate) key: DecodingKey,
    /// The JWK as published (public members only), to re-serialize the set.
    raw: Value,
}

/// A key the parser left out, and why (for control's logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// The key's `kid`, if it had one.
    pub kid: Option<String>,
    /// Why it was skipped.
    pub reason: String,
}

/// A parsed JWKS: the usable public signing keys, by `kid`.
///
/// Keys that are not for signatures (`use` other than `sig`), of unsupported types or
/// curves, with an unsupported `alg`, without a `kid`, symmetric (`oct`: never turned into
/// an HMAC key), or malformed are skipped and listed in [`skipped`](Jwks::skipped); one odd
/// key never fails the whole set.
#[derive(Clone, Default)]
pub struct Jwks {
    keys: HashMap<String, Vec<PublicKey>>,
    skipped: Vec<SkippedKey>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("Jwks")
            .field("kids", &kids)
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl Jwks {
    /// An empty key set (verifies nothing).
    pub fn empty() -> Jwks {
        Jwks::default()
    }

    /// Parses a JWKS document (`{"keys": [...]}`). Fails only if the document itself is not
    /// a JWKS; individual unusable keys are skipped.
    pub fn from_json(doc: &str) -> Result<Jwks, JwksError> {
        let value: Value = serde_json::from_str(doc)
            .map_err(|e| JwksError::Parse(format!("invalid JSON: {e}")))?;
        let keys = value
            .get("keys")
            .ok_or_else(|| JwksError::Parse("no \"keys\" member".into()))?
            .as_array()
            .ok_or_else(|| JwksError::Parse("\"keys\" is not an array".into()))?;
        let mut jwks = Jwks::default();
        let mut kept = 0usize;
        for jwk in keys {
            let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
            if kept >= MAX_KEYS {
                jwks.skipped.push(SkippedKey {
                    kid,
                    reason: format!("more than {MAX_KEYS} usable keys in the document"),
                });
                continue;
            }
            match parse_key(jwk) {
                Ok((kid, key)) => {
                    jwks.keys.entry(kid).or_default().push(key);
                    kept += 1;
                }
                Err(reason) => jwks.skipped.push(SkippedKey { kid, reason }),
            }
        }
        Ok(jwks)
    }

    /// Key ids with at least one usable key.
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    /// Whether `kid` names a usable key.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.values().map(Vec::len).sum()
    }

    /// Whether there is no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys that were left out, and why.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// The usable keys as a JWKS document (public members only), e.g. to carry them in a
    /// snapshot; [`Jwks::from_json`] parses it back to the same set.
    pub fn to_json(&self) -> String {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        let keys: Vec<Value> = kids
            .into_iter()
            .flat_map(|k| self.keys[k].iter().map(|key| key.raw.clone()))
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    pub(crate) fn get(&self, kid: &str) -> Option<&[PublicKey]> {
        self.keys.get(kid).map(Vec::as_slice)
    }
}

fn b64(field: &str, v: Option<&Value>) -> Result<Vec<u8>, String> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing or non-string \"{field}\""))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| format!("\"{field}\" is not base64url: {e}"))
}

fn str_member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{name}\" is not a string")),
    }
}

/// Public members kept when re-serializing a key.
const PUBLIC_MEMBERS: [&str; 9] = ["kty", "kid", "use", "alg", "n", "e", "crv", "x", "y"];

fn parse_key(value: &Value) -> Result<(String, PublicKey), String> {
    let jwk = value.as_object().ok_or("not a JSON object")?;
    let kid = str_member(jwk, "kid")?.ok_or("no \"kid\"")?;
    if kid.is_empty() {
        return Err("empty \"kid\"".into());
    }
    if let Some(usage) = str_member(jwk, "use")? {
        if usage != "sig" {
            return Err(format!("\"use\" is {usage:?}, not \"sig\""));
        }
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err("\"key_ops\" does not include \"verify\"".into());
        }
    }
    let kty = str_member(jwk, "kty")?.ok_or("no \"kty\"")?;
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|m| jwk.contains_key(*m))
        && kty != "oct"
    {
        return Err("contains private key material; publish only public keys".into());
    }
    let (kty, key) = match kty {
        "RSA" => {
            let n = b64("n", jwk.get("n"))?;
            let e = b64("e", jwk.get("e"))?;
            let n = strip_leading_zeros(&n);
            let e = strip_leading_zeros(&e);
            let bits = bit_len(n);
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "RSA modulus is {bits} bits; at least {MIN_RSA_BITS} are required"
                ));
            }
            if bits > MAX_RSA_BITS {
                return Err(format!("RSA modulus is {bits} bits; at most {MAX_RSA_BITS}"));
            }
            if e.is_empty() || e.len() > 8 || e[e.len() - 1] & 1 == 0 {
                return Err("RSA exponent is not a small odd integer".into());
            }
            (KeyType::Rsa, DecodingKey::from_rsa_raw_components(n, e))
        }
        "EC" => {
            let crv = str_member(jwk, "crv")?.ok_or("EC key without \"crv\"")?;
            if crv != "P-256" {
                return Err(format!("EC curve {crv:?} is not supported (only P-256)"));
            }
            let x = b64("x", jwk.get("x"))?;
            let y = b64("y", jwk.get("y"))?;
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes each".into());
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (KeyType::EcP256, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            let crv = str_member(jwk, "crv")?.ok_or("OKP key without \"crv\"")?;
            if crv != "Ed25519" {
                return Err(format!("OKP curve {crv:?} is not supported (only Ed25519)"));
            }
            let x = b64("x", jwk.get("x"))?;
            if x.len() != 32 {
                return Err("Ed25519 public key must be 32 bytes".into());
            }
            (KeyType::Ed25519, DecodingKey::from_ed_der(&x))
        }
        "oct" => {
            return Err(
                "symmetric (oct) keys are never used: a shared secret cannot come from a public key set"
                    .into(),
            )
        }
        other => return Err(format!("key type {other:?} is not supported")),
    };
    let alg = match str_member(jwk, "alg")? {
        None => None,
        Some(name) => match SigningAlgorithm::from_name(name) {
            Some(a) if a == kty.algorithm() => Some(a),
            Some(a) => return Err(format!("\"alg\" {a} does not fit a {} key", kty.name())),
            None => return Err(format!("\"alg\" {name:?} is not supported")),
        },
    };
    let mut raw = Map::new();
    for m in PUBLIC_MEMBERS {
        if let Some(v) = jwk.get(m) {
            raw.insert(m.to_owned(), v.clone());
        }
    }
    Ok((
        kid.to_owned(),
        PublicKey {
            kty,
            alg,
            key,
            raw: Value::Object(raw),
        },
    ))
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}

fn bit_len(be: &[u8]) -> usize {
    match be.first() {
        None => 0,
        Some(&top) => be.len() * 8 - top.leading_zeros() as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_n(bits: usize) -> String {
        let mut n = vec![0xc5u8; bits / 8];
        n[0] |= 0x80;
        URL_SAFE_NO_PAD.encode(n)
    }

    #[test]
    fn parses_usable_keys_and_skips_odd_ones_without_failing() {
        let x32 = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let doc = serde_json::json!({ "keys": [
            { "kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": rsa_n(2048), "e": "AQAB" },
            { "kty": "EC", "kid": "ec-1", "crv": "P-256", "x": x32, "y": x32 },
            { "kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": x32, "alg": "EdDSA" },
            // odd keys, each skipped for its own reason
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": rsa_n(2048), "e": "AQAB" },
            { "kty": "RSA", "kid": "small", "n": rsa_n(1024), "e": "AQAB" },
            { "kty": "RSA", "kid": "ps", "alg": "PS256", "n": rsa_n(2048), "e": "AQAB" },
            { "kty": "RSA", "kid": "mismatch", "alg": "ES256", "n": rsa_n(2048), "e": "AQAB" },
            { "kty": "EC", "kid": "p384", "crv": "P-384", "x": x32, "y": x32 },
            { "kty": "OKP", "kid": "x25519", "crv": "X25519", "x": x32 },
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
            { "kty": "RSA", "n": rsa_n(2048), "e": "AQAB" },
            { "kty": "EC", "kid": "short", "crv": "P-256", "x": "AAAA", "y": x32 },
            { "kty": "RSA", "kid": "private", "n": rsa_n(2048), "e": "AQAB", "d": "AQAB" },
            { "kty": "RSA", "kid": "encrypt-ops", "key_ops": ["encrypt"], "n": rsa_n(2048), "e": "AQAB" },
            { "kty": "RSA", "kid": "bad-b64", "n": "!!!", "e": "AQAB" },
            "not an object",
            { "kty": "weird", "kid": "weird" }
        ]});
        let jwks = Jwks::from_json(&doc.to_string()).expect("set");
        assert_eq!(jwks.kids(), vec!["ec-1", "ed-1", "rsa-1"]);
        assert_eq!(jwks.len(), 3);
        assert_eq!(jwks.skipped().len(), 14, "{:#?}", jwks.skipped());
        let reason = |kid: &str| {
            jwks.skipped()
                .iter()
                .find(|s| s.kid.as_deref() == Some(kid))
                .map(|s| s.reason.clone())
                .unwrap_or_else(|| panic!("{kid} not skipped"))
        };
        assert!(reason("enc").contains("\"use\""));
        assert!(reason("small").contains("1024 bits"));
        assert!(reason("ps").contains("PS256"));
        assert!(reason("mismatch").contains("does not fit"));
        assert!(reason("p384").contains("P-384"));
        assert!(reason("x25519").contains("X25519"));
        assert!(reason("hmac").contains("oct"));
        assert!(reason("short").contains("32 bytes"));
        assert!(reason("private").contains("private"));
        assert!(reason("encrypt-ops").contains("key_ops"));
        assert!(reason("bad-b64").contains("base64url"));

        let round = Jwks::from_json(&jwks.to_json()).expect("round trip");
        assert_eq!(round.kids(), jwks.kids());
        assert!(round.skipped().is_empty());
        assert!(!round.to_json().contains("\"k\""));
    }

    #[test]
    fn only_a_broken_document_fails() {
        for bad in ["", "[]", "{}", r#"{"keys": {}}"#, "not json"] {
            assert!(
                matches!(Jwks::from_json(bad), Err(JwksError::Parse(_))),
                "{bad}"
            );
        }
        let empty = Jwks::from_json(r#"{"keys": []}"#).expect("empty set");
        assert!(empty.is_empty());
    }
}
