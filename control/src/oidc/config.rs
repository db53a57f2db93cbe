//! Issuer configuration.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A JWS algorithm an OIDC issuer may sign with. Only asymmetric algorithms exist here:
/// HMAC (`HS*`) cannot be configured, so a public key can never become a shared secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`kty: RSA`, at least 2048-bit modulus).
    RS256,
    /// ECDSA on P-256 with SHA-256 (`kty: EC`, `crv: P-256`).
    ES256,
    /// Ed25519 (`kty: OKP`, `crv: Ed25519`).
    EdDSA,
}

impl SigningAlgorithm {
    /// Every supported algorithm, the default allowed list.
    pub const ALL: [SigningAlgorithm; 3] = [
        SigningAlgorithm::RS256,
        SigningAlgorithm::ES256,
        SigningAlgorithm::EdDSA,
    ];

    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::RS256 => "RS256",
            SigningAlgorithm::ES256 => "ES256",
            SigningAlgorithm::EdDSA => "EdDSA",
        }
    }

    /// Parses a JWS `alg` name (exact spelling, as RFC 7518 requires).
    pub fn from_name(name: &str) -> Option<SigningAlgorithm> {
        SigningAlgorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == name)
    }

    pub(crate) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            SigningAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            SigningAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            SigningAlgorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

impl std::fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_subject_claim() -> String {
    "sub".to_owned()
}
fn default_groups_claim() -> String {
    "groups".to_owned()
}
fn default_algorithms() -> Vec<SigningAlgorithm> {
    SigningAlgorithm::ALL.to_vec()
}
fn default_clock_skew_secs() -> u64 {
    30
}
fn default_min_refresh_interval_secs() -> u64 {
    30
}
fn default_fetch_timeout_secs() -> u64 {
    10
}

/// One trusted OIDC issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The issuer identifier; a token's `iss` must equal it exactly
    /// (e.g. `https://idp.example.com/realms/prod`).
    pub issuer: String,
    /// The audience this gateway is registered as; a token's `aud` (a string or an array)
    /// must contain it.
    pub audience: String,
    /// Where the issuer publishes its JWKS. Must be `https://`; `http://` is accepted only
    /// for a loopback host (127.0.0.0/8, `::1`, `localhost`). Exactly one of `jwks_uri`
    /// and `jwks_file` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// A JWKS document on disk, for air-gapped setups and tests. Exactly one of
    /// `jwks_uri` and `jwks_file` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// Dotted path to the groups claim, e.g. `groups` or `realm_access.roles`. The value
    /// there may be an array of strings or one string; a missing claim means no groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// The claim that holds the stable subject (default `sub`). Must be a non-empty string
    /// in every accepted token.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Algorithms accepted from this issuer: a non-empty subset of `RS256`, `ES256`,
    /// `EdDSA` (default: all three). A token's `alg` must be listed here and match the
    /// type of the key its `kid` names.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<SigningAlgorithm>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds (default 30, at most 300).
    #[serde(default = "default_clock_skew_secs")]
    pub clock_skew_secs: u64,
    /// A token with an unknown `kid` triggers a JWKS refetch at most once per this many
    /// seconds (default 30, at least 1), so a flood of tokens with random key ids cannot
    /// hammer the identity provider.
    #[serde(default = "default_min_refresh_interval_secs")]
    pub min_refresh_interval_secs: u64,
    /// Timeout for one JWKS fetch, in seconds (default 10, 1..=120).
    #[serde(default = "default_fetch_timeout_secs")]
    pub fetch_timeout_secs: u64,
}

impl IssuerConfig {
    /// A config with defaults for everything but the issuer, audience and key source.
    pub fn new(issuer: &str, audience: &str) -> IssuerConfig {
        IssuerConfig {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            jwks_uri: None,
            jwks_file: None,
            groups_claim: default_groups_claim(),
            subject_claim: default_subject_claim(),
            algorithms: default_algorithms(),
            clock_skew_secs: default_clock_skew_secs(),
            min_refresh_interval_secs: default_min_refresh_interval_secs(),
            fetch_timeout_secs: default_fetch_timeout_secs(),
        }
    }

    /// Checks the config, saying what to fix.
    pub fn validate(&self) -> Result<(), String> {
        let who = if self.issuer.is_empty() {
            "an OIDC issuer".to_owned()
        } else {
            format!("OIDC issuer {:?}", self.issuer)
        };
        if self.issuer.trim().is_empty() {
            return Err("an OIDC issuer has an empty `issuer`; set it to the IdP's issuer URL (the `iss` of its tokens)".into());
        }
        if self.issuer.trim() != self.issuer {
            return Err(format!("{who}: `issuer` has leading or trailing whitespace; tokens' `iss` must match it exactly"));
        }
        if self.audience.trim().is_empty() {
            return Err(format!("{who}: `audience` is empty; set it to the client id this gateway is registered as at the IdP"));
        }
        match (&self.jwks_uri, &self.jwks_file) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{who}: set either `jwks_uri` or `jwks_file`, not both"
                ))
            }
            (None, None) => {
                return Err(format!(
                    "{who}: set `jwks_uri` (the IdP's JWKS endpoint) or `jwks_file`"
                ))
            }
            (Some(uri), None) => check_jwks_uri(uri).map_err(|e| format!("{who}: {e}"))?,
            (None, Some(path)) => {
                if path.as_os_str().is_empty() {
                    return Err(format!("{who}: `jwks_file` is empty"));
                }
            }
        }
        check_claim_path(&self.groups_claim).map_err(|e| format!("{who}: `groups_claim` {e}"))?;
        check_claim_path(&self.subject_claim).map_err(|e| format!("{who}: `subject_claim` {e}"))?;
        if self.algorithms.is_empty() {
            return Err(format!(
                "{who}: `algorithms` is empty; list some of RS256, ES256, EdDSA"
            ));
        }
        if self.clock_skew_secs > 300 {
            return Err(format!(
                "{who}: `clock_skew_secs` = {} is more than 300; fix the clocks instead",
                self.clock_skew_secs
            ));
        }
        if self.min_refresh_interval_secs == 0 {
            return Err(format!(
                "{who}: `min_refresh_interval_secs` must be at least 1 (it rate-limits JWKS refetches)"
            ));
        }
        if !(1..=120).contains(&self.fetch_timeout_secs) {
            return Err(format!(
                "{who}: `fetch_timeout_secs` = {} must be between 1 and 120",
                self.fetch_timeout_secs
            ));
        }
        Ok(())
    }
}

fn check_claim_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("is empty".into());
    }
    if path.split('.').any(str::is_empty) {
        return Err(format!(
            "{path:?} has an empty segment; use a dotted path like `realm_access.roles`"
        ));
    }
    Ok(())
}

/// Whether `uri` is acceptable as a JWKS endpoint: https anywhere, http only on loopback.
pub(crate) fn check_jwks_uri(uri: &str) -> Result<(), String> {
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| format!("`jwks_uri` {uri:?} is not an absolute URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    if authority.contains('@') {
        return Err(format!(
            "`jwks_uri` {uri:?} contains credentials; JWKS endpoints are public"
        ));
    }
    if host_port.is_empty() {
        return Err(format!("`jwks_uri` {uri:?} has no host"));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http" if is_loopback_host(host_port) => Ok(()),
        "http" => Err(format!(
            "`jwks_uri` {uri:?} uses plain http; use https (http is allowed only for a loopback host)"
        )),
        other => Err(format!(
            "`jwks_uri` {uri:?} has scheme {other:?}; use https"
        )),
    }
}

/// `host_port` is `host`, `host:port`, `[v6]` or `[v6]:port`.
pub(crate) fn is_loopback_host(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, _)) => h,
            None => return false,
        }
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> IssuerConfig {
        let mut c = IssuerConfig::new("https://idp.example", "sluice");
        c.jwks_uri = Some("https://idp.example/jwks.json".into());
        c
    }

    #[test]
    fn defaults_and_validation() {
        let c: IssuerConfig = serde_json::from_str(
            r#"{"issuer":"https://idp.example","audience":"sluice","jwks_uri":"https://idp.example/certs"}"#,
        )
        .expect("parse");
        assert_eq!(c.subject_claim, "sub");
        assert_eq!(c.groups_claim, "groups");
        assert_eq!(c.algorithms, SigningAlgorithm::ALL.to_vec());
        assert_eq!(c.clock_skew_secs, 30);
        assert_eq!(c.min_refresh_interval_secs, 30);
        c.validate().expect("valid");

        let err = serde_json::from_str::<IssuerConfig>(
            r#"{"issuer":"i","audience":"a","jwks_uri":"https://x","algorithms":["HS256"]}"#,
        )
        .expect_err("HS256 cannot be configured");
        assert!(err.to_string().contains("HS256"), "{err}");
        let err = serde_json::from_str::<IssuerConfig>(
            r#"{"issuer":"i","audience":"a","jwks_uri":"https://x","audiance":"typo"}"#,
        )
        .expect_err("unknown field");
        assert!(err.to_string().contains("audiance"), "{err}");
    }

    #[test]
    fn key_source_rules() {
        let mut c = base();
        c.jwks_file = Some("/etc/jwks.json".into());
        assert!(c.validate().unwrap_err().contains("not both"));
        c.jwks_uri = None;
        c.validate().expect("file only");
        c.jwks_file = None;
        assert!(c.validate().unwrap_err().contains("jwks_uri"));
        for ok in [
            "https://idp.example/certs",
            "http://127.0.0.1:8080/jwks.json",
            "http://localhost/jwks",
            "http://[::1]:9000/jwks",
        ] {
            c.jwks_uri = Some(ok.into());
            c.validate().unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://idp.example/certs",
            "http://10.0.0.1/jwks",
            "ftp://idp.example/jwks",
            "idp.example/jwks",
            "https://user:pw@idp.example/jwks",
            "http://127.0.0.1.evil.example/jwks",
        ] {
            c.jwks_uri = Some(bad.into());
            assert!(c.validate().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn other_fields_are_checked() {
        let mut c = base();
        c.algorithms.clear();
        assert!(c.validate().unwrap_err().contains("algorithms"));
        let mut c = base();
        c.groups_claim = "realm_access..roles".into();
        assert!(c.validate().unwrap_err().contains("groups_claim"));
        let mut c = base();
        c.min_refresh_interval_secs = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .contains("min_refresh_interval_secs"));
        let mut c = base();
        c.audience = " ".into();
        assert!(c.validate().unwrap_err().contains("audience"));
        let mut c = base();
        c.issuer = String::new();
        assert!(c.validate().unwrap_err().contains("issuer"));
    }
}
