//! Pure OIDC token verification: config, key set and clock in; principal or refusal out.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Validation;
use serde_json::{Map, Value};

use super::config::{IssuerConfig, SigningAlgorithm};
use super::error::OidcError;
use super::jwks::Jwks;

/// Longest token accepted, in bytes (PostgreSQL passwords are short; this bounds work).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Who a client is, once its OIDC token has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcPrincipal {
    /// Stable subject (the configured subject claim, `sub` by default).
    pub subject: String,
    /// Groups from the configured groups claim (empty if the claim is absent).
    pub groups: Vec<String>,
    /// When the token stops being valid (`exp`, without skew).
    pub expires_at: SystemTime,
    /// The issuer that vouched for the subject.
    pub issuer: String,
    /// When the token was issued (`iat`), if it says; revocations refuse tokens issued
    /// before them.
    pub issued_at: Option<SystemTime>,
}

/// Verifies tokens from one issuer against one key set. Pure: no I/O, the current time is
/// passed in, so the proxy can run it on keys carried in a snapshot. Cheap to share.
#[derive(Debug, Clone)]
pub struct OidcVerifier {
    config: IssuerConfig,
    jwks: Arc<Jwks>,
}

impl OidcVerifier {
    /// A verifier for `config` (which should have passed [`IssuerConfig::validate`]) and
    /// the issuer's current key set.
    pub fn new(config: IssuerConfig, jwks: Arc<Jwks>) -> OidcVerifier {
        OidcVerifier { config, jwks }
    }

    /// The issuer config.
    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// The key set in use.
    pub fn jwks(&self) -> &Arc<Jwks> {
        &self.jwks
    }

    /// Verifies `token` at time `now`. Checks, in order: shape; `alg` (never `none`, never
    /// HMAC, must be allowed for the issuer); `kid` known; key type fits `alg`; signature;
    /// `iss`; `aud`; `exp` and `nbf` with skew; subject; groups.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<OidcPrincipal, OidcError> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_LEN {
            return Err(OidcError::Malformed(format!(
                "{} bytes is longer than any accepted token",
                token.len()
            )));
        }
        let raw_header = raw_header(token)?;
        let alg = self.check_alg(&raw_header)?;
        if raw_header.contains_key("crit") {
            return Err(OidcError::Malformed(
                "the header has critical extensions (crit), which are not supported".into(),
            ));
        }
        // Cross-check with the library's own header parser: both must agree.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| OidcError::Malformed(format!("bad header: {e}")))?;
        if header.alg != alg.to_jwt() {
            return Err(OidcError::Malformed("inconsistent header".into()));
        }
        let kid = match header.kid {
            Some(kid) if !kid.is_empty() => kid,
            _ => {
                return Err(OidcError::MissingKid {
                    issuer: self.config.issuer.clone(),
                })
            }
        };
        let candidates = self
            .jwks
            .get(&kid)
            .ok_or_else(|| OidcError::UnknownKid(kid.clone()))?;
        // The key must be of the type `alg` needs (and, if it declares an alg, that alg):
        // the library then gets exactly one asymmetric algorithm and one matching key.
        let key = candidates
            .iter()
            .find(|k| k.kty.algorithm() == alg && k.alg.is_none_or(|a| a == alg))
            .ok_or_else(|| OidcError::KeyAlgorithmMismatch {
                kid: kid.clone(),
                alg: alg.to_string(),
                key_type: candidates
                    .iter()
                    .map(|k| match k.alg {
                        Some(a) => format!("{} ({a})", k.kty.name()),
                        None => k.kty.name().to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(" / "),
            })?;

        let mut validation = Validation::new(alg.to_jwt());
        // Time, issuer and audience are checked below with the caller's clock and with
        // messages that say what is wrong; the library only checks the signature.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidKeyFormat
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::Signing(_) => OidcError::BadSignature { kid: kid.clone() },
                ErrorKind::Base64(_) => OidcError::BadSignature { kid: kid.clone() },
                ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                    OidcError::Malformed("the claims are not a JSON object".into())
                }
                _ => OidcError::Malformed(e.to_string()),
            })?;
        self.check_claims(&data.claims, now)
    }

    fn check_alg(&self, header: &Map<String, Value>) -> Result<SigningAlgorithm, OidcError> {
        let alg = match header.get("alg") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(OidcError::Malformed("\"alg\" is not a string".into())),
            None => return Err(OidcError::Malformed("the header has no \"alg\"".into())),
        };
        if alg.eq_ignore_ascii_case("none") {
            return Err(OidcError::Unsigned);
        }
        if alg.len() >= 2 && alg[..2].eq_ignore_ascii_case("HS") {
            return Err(OidcError::SymmetricAlgorithm {
                alg: alg.to_owned(),
            });
        }
        match SigningAlgorithm::from_name(alg) {
            Some(a) if self.config.algorithms.contains(&a) => Ok(a),
            _ => Err(OidcError::AlgorithmNotAllowed {
                alg: alg.to_owned(),
                issuer: self.config.issuer.clone(),
                allowed: self
                    .config
                    .algorithms
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now: SystemTime,
    ) -> Result<OidcPrincipal, OidcError> {
        let missing = |claim: &str, detail: &str| OidcError::MissingClaim {
            claim: claim.to_owned(),
            detail: detail.to_owned(),
        };
        let iss = match claims.get("iss") {
            Some(Value::String(s)) => s,
            Some(_) => return Err(missing("iss", "not a string")),
            None => return Err(missing("iss", "absent")),
        };
        if *iss != self.config.issuer {
            return Err(OidcError::WrongIssuer {
                found: iss.clone(),
                expected: self.config.issuer.clone(),
            });
        }
        let aud: Vec<String> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| missing("aud", "an array with non-string entries"))?,
            Some(_) => return Err(missing("aud", "not a string or an array of strings")),
            None => return Err(missing("aud", "absent")),
        };
        if !aud.contains(&self.config.audience) {
            return Err(OidcError::WrongAudience {
                found: aud,
                expected: self.config.audience.clone(),
            });
        }
        let exp = numeric_date(claims.get("exp")).map_err(|d| missing("exp", d))?;
        let exp = exp.ok_or_else(|| missing("exp", "absent"))?;
        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let skew = self.config.clock_skew_secs;
        if now_secs > exp.saturating_add(skew) {
            return Err(OidcError::Expired {
                ago_secs: now_secs - exp,
            });
        }
        if let Some(nbf) = numeric_date(claims.get("nbf")).map_err(|d| missing("nbf", d))? {
            if nbf > now_secs.saturating_add(skew) {
                return Err(OidcError::NotYetValid {
                    in_secs: nbf - now_secs,
                });
            }
        }
        let subject_claim = &self.config.subject_claim;
        let subject = match lookup(claims, subject_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) => return Err(missing(subject_claim, "empty")),
            Some(_) => return Err(missing(subject_claim, "not a string")),
            None => return Err(missing(subject_claim, "absent")),
        };
        let groups = groups_at_path(claims, &self.config.groups_claim)?;
        let issued_at = numeric_date(claims.get("iat")).map_err(|d| missing("iat", d))?;
        Ok(OidcPrincipal {
            subject,
            groups,
            expires_at: UNIX_EPOCH + Duration::from_secs(exp),
            issuer: iss.clone(),
            issued_at: issued_at.map(|t| UNIX_EPOCH + Duration::from_secs(t)),
        })
    }
}

/// Decodes the header segment into a JSON object (before any library parsing, so `none`
/// and HMAC algorithms get their own refusal rather than a parse error).
fn raw_header(token: &str) -> Result<Map<String, Value>, OidcError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OidcError::Malformed(
            "a JWT has three dot-separated parts".into(),
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| OidcError::Malformed("the header is not base64url".into()))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(OidcError::Malformed(
            "the header is not a JSON object".into(),
        )),
    }
}

/// A NumericDate claim: absent, or a non-negative number of seconds (fractions dropped).
fn numeric_date(v: Option<&Value>) -> Result<Option<u64>, &'static str> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite() && *f >= 0.0) {
                Ok(Some(f as u64))
            } else {
                Err("not a non-negative number of seconds")
            }
        }
        Some(_) => Err("not a number"),
    }
}

/// The value at a dotted path (`realm_access.roles`). A claim whose own name contains dots
/// is found too: at each level the longest matching key wins.
fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut cut = path.len();
    while let Some(dot) = path[..cut].rfind('.') {
        if let Some(Value::Object(inner)) = claims.get(&path[..dot]) {
            if let Some(v) = lookup(inner, &path[dot + 1..]) {
                return Some(v);
            }
        }
        cut = dot;
    }
    None
}

/// Groups at the dotted `path` in `claims`: an array of strings, or one string; a missing
/// claim (or `null`) is no groups. Anything else is refused, not silently dropped.
pub fn groups_at_path(claims: &Map<String, Value>, path: &str) -> Result<Vec<String>, OidcError> {
    let bad = |found: &str| OidcError::BadGroupsClaim {
        path: path.to_owned(),
        found: found.to_owned(),
    };
    match lookup(claims, path) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("an array with non-string entries")),
        Some(Value::Object(_)) => Err(bad("an object")),
        Some(Value::Number(_)) => Err(bad("a number")),
        Some(Value::Bool(_)) => Err(bad("a boolean")),
    }
}

/// The `iss` a token *claims*, read without verifying anything. Only for choosing which
/// issuer's verifier to run; never for trusting the token.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.trim().split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn groups_from_dotted_paths() {
        let c = claims(json!({
            "groups": ["eng", "ops"],
            "realm_access": { "roles": ["admin", "reader"], "single": "one" },
            "resource_access": { "sluice": { "roles": ["dba"] } },
            "https://example.com/groups": ["namespaced"],
            "role": "solo",
            "nullish": null,
        }));
        let g = |p: &str| groups_at_path(&c, p);
        assert_eq!(g("groups").unwrap(), ["eng", "ops"]);
        assert_eq!(g("realm_access.roles").unwrap(), ["admin", "reader"]);
        assert_eq!(g("realm_access.single").unwrap(), ["one"]);
        assert_eq!(g("resource_access.sluice.roles").unwrap(), ["dba"]);
        assert_eq!(g("https://example.com/groups").unwrap(), ["namespaced"]);
        assert_eq!(g("role").unwrap(), ["solo"]);
        assert!(g("missing").unwrap().is_empty());
        assert!(g("realm_access.missing").unwrap().is_empty());
        assert!(g("groups.deeper").unwrap().is_empty());
        assert!(g("nullish").unwrap().is_empty());
    }

    #[test]
    fn odd_groups_claims_are_refused_not_dropped() {
        let c = claims(json!({
            "n": 3, "o": { "a": 1 }, "mixed": ["a", 1], "b": true
        }));
        for (path, what) in [
            ("n", "a number"),
            ("o", "an object"),
            ("mixed", "non-string"),
            ("b", "a boolean"),
        ] {
            let err = groups_at_path(&c, path).expect_err(path);
            assert!(matches!(err, OidcError::BadGroupsClaim { .. }), "{err:?}");
            assert!(err.to_string().contains(what), "{err}");
        }
    }

    #[test]
    fn unverified_issuer_reads_without_trusting() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"https://idp"}"#);
        assert_eq!(
            unverified_issuer(&format!("x.{payload}.y")).as_deref(),
            Some("https://idp")
        );
        assert_eq!(unverified_issuer("garbage"), None);
    }
}
