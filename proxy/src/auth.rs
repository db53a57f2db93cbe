//! Client identity: the password a client sends is a token, and a [`TokenVerifier`] turns
//! it into a [`Principal`] or says precisely why not.
//!
//! Today the one implementation is [`SluiceTokenVerifier`]: Ed25519-signed JWTs minted by
//! `sluice token mint` (or the demo) with subject, groups and expiry. The control-process
//! issue adds OIDC issuers and moves the key source into the shared-memory snapshot; the
//! trait is the seam. Verification is pure: the current time is passed in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Who a client is, once its token has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable subject (`sub`).
    pub subject: String,
    /// Groups the subject belongs to; policy rules name these.
    pub groups: Vec<String>,
    /// When the token stops being valid.
    pub expires_at: SystemTime,
}

/// Why a token was refused. Each variant maps to a SQLSTATE and a message that tells the
/// user what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token at all (wrong shape, bad encoding, missing claims).
    #[error("the password is not a valid Sluice token ({0}); use a token from `sluice token mint` or your identity provider")]
    Malformed(String),
    /// Signature does not verify with any trusted key, or wrong algorithm.
    #[error("the token's signature is not valid for this gateway; mint a new token")]
    BadSignature,
    /// The token was issued by someone this gateway does not trust.
    #[error("the token was issued by {found:?}, not by {expected:?}")]
    WrongIssuer {
        /// `iss` in the token.
        found: String,
        /// Configured issuer.
        expected: String,
    },
    /// Past its `exp` (beyond the allowed clock skew).
    #[error("the token expired {ago_secs} s ago; mint a new one")]
    Expired {
        /// Seconds since expiry.
        ago_secs: u64,
    },
    /// `nbf` is in the future.
    #[error("the token is not valid yet (nbf is {in_secs} s from now)")]
    NotYetValid {
        /// Seconds until the token becomes valid.
        in_secs: u64,
    },
}

impl TokenError {
    /// SQLSTATE sent to the client: 28P01 (invalid_password) when the token itself is
    /// wrong, 28000 (invalid_authorization_specification) when a genuine token is used at
    /// the wrong time.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            TokenError::Malformed(_)
            | TokenError::BadSignature
            | TokenError::WrongIssuer { .. } => "28P01",
            TokenError::Expired { .. } | TokenError::NotYetValid { .. } => "28000",
        }
    }
}

/// Turns a presented token into a principal. Implementations must be cheap to call from a
/// worker (no I/O: keys are in memory) and safe to share between workers.
pub trait TokenVerifier: Send + Sync {
    /// Verifies `token` at time `now`.
    fn verify(&self, token: &str, now: SystemTime) -> Result<Principal, TokenError>;
}

/// Claims of a Sluice token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SluiceClaims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// Verifies Ed25519-signed (EdDSA) JWTs with one public key.
pub struct SluiceTokenVerifier {
    key: DecodingKey,
    issuer: String,
    skew: Duration,
    validation: Validation,
}

impl SluiceTokenVerifier {
    /// Builds a verifier from a PEM `PUBLIC KEY` (SPKI) Ed25519 key.
    pub fn from_public_pem(pem: &[u8], issuer: &str, skew: Duration) -> anyhow::Result<Self> {
        let key = DecodingKey::from_ed_pem(pem)
            .map_err(|e| anyhow::anyhow!("token public key is not an Ed25519 PEM key: {e}"))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Time-based checks are done here with the caller's clock so the verifier stays
        // pure; the library would read the system clock itself.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Ok(SluiceTokenVerifier {
            key,
            issuer: issuer.to_owned(),
            skew,
            validation,
        })
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl TokenVerifier for SluiceTokenVerifier {
    fn verify(&self, token: &str, now: SystemTime) -> Result<Principal, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<SluiceClaims>(token.trim(), &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    TokenError::BadSignature
                }
                ErrorKind::InvalidToken => TokenError::Malformed("not a JWT".into()),
                _ => TokenError::Malformed(e.to_string()),
            })?;
        let claims = data.claims;
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer {
                found: claims.iss,
                expected: self.issuer.clone(),
            });
        }
        let now_secs = unix_secs(now);
        let skew = self.skew.as_secs();
        if now_secs > claims.exp.saturating_add(skew) {
            return Err(TokenError::Expired {
                ago_secs: now_secs - claims.exp,
            });
        }
        if let Some(nbf) = claims.nbf {
            if nbf > now_secs.saturating_add(skew) {
                return Err(TokenError::NotYetValid {
                    in_secs: nbf - now_secs,
                });
            }
        }
        if claims.sub.is_empty() {
            return Err(TokenError::Malformed("empty subject".into()));
        }
        Ok(Principal {
            subject: claims.sub,
            groups: claims.groups,
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
        })
    }
}

/// An Ed25519 signing key pair for Sluice tokens, as PEM.
pub struct TokenKeyPair {
    /// PKCS#8 private key (keep secret: it mints tokens).
    pub private_pem: String,
    /// SPKI public key (goes into `auth.token_public_key`).
    pub public_pem: String,
}

/// Generates a fresh Ed25519 key pair.
pub fn generate_token_keys() -> anyhow::Result<TokenKeyPair> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    Ok(TokenKeyPair {
        private_pem: pair.serialize_pem(),
        public_pem: pair.public_key_pem(),
    })
}

/// Mints a token signed with a PEM PKCS#8 Ed25519 private key.
pub fn mint_token(
    private_pem: &[u8],
    issuer: &str,
    subject: &str,
    groups: &[String],
    ttl: Duration,
    now: SystemTime,
) -> anyhow::Result<String> {
    let key = EncodingKey::from_ed_pem(private_pem)
        .map_err(|e| anyhow::anyhow!("signing key is not an Ed25519 PKCS#8 PEM key: {e}"))?;
    let iat = unix_secs(now);
    let claims = SluiceClaims {
        iss: issuer.to_owned(),
        sub: subject.to_owned(),
        groups: groups.to_vec(),
        exp: iat.saturating_add(ttl.as_secs()),
        iat,
        nbf: None,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims,
        &key,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (TokenKeyPair, SluiceTokenVerifier) {
        let keys = generate_token_keys().expect("keys");
        let verifier = SluiceTokenVerifier::from_public_pem(
            keys.public_pem.as_bytes(),
            "sluice",
            Duration::from_secs(30),
        )
        .expect("verifier");
        (keys, verifier)
    }

    #[test]
    fn minted_token_verifies_to_its_principal() {
        let (keys, verifier) = setup();
        let now = SystemTime::now();
        let groups = vec!["engineering".to_owned()];
        let token = mint_token(
            keys.private_pem.as_bytes(),
            "sluice",
            "alice",
            &groups,
            Duration::from_secs(3600),
            now,
        )
        .expect("mint");
        let principal = verifier.verify(&token, now).expect("valid");
        assert_eq!(principal.subject, "alice");
        assert_eq!(principal.groups, groups);
    }

    #[test]
    fn expiry_is_checked_against_the_given_clock_with_skew() {
        let (keys, verifier) = setup();
        let now = SystemTime::now();
        let token = mint_token(
            keys.private_pem.as_bytes(),
            "sluice",
            "bob",
            &[],
            Duration::from_secs(60),
            now,
        )
        .expect("mint");
        assert!(verifier
            .verify(&token, now + Duration::from_secs(80))
            .is_ok());
        let err = verifier
            .verify(&token, now + Duration::from_secs(200))
            .expect_err("expired");
        assert!(matches!(err, TokenError::Expired { .. }), "{err:?}");
        assert_eq!(err.sqlstate(), "28000");
    }

    #[test]
    fn foreign_key_wrong_issuer_and_garbage_are_refused() {
        let (_, verifier) = setup();
        let (other_keys, _) = setup();
        let now = SystemTime::now();
        let forged = mint_token(
            other_keys.private_pem.as_bytes(),
            "sluice",
            "mallory",
            &[],
            Duration::from_secs(60),
            now,
        )
        .expect("mint");
        let err = verifier.verify(&forged, now).expect_err("other key");
        assert_eq!(err, TokenError::BadSignature);
        assert_eq!(err.sqlstate(), "28P01");

        for garbage in ["", "hunter2", "a.b.c", "eyJ.eyJ.x"] {
            let err = verifier.verify(garbage, now).expect_err(garbage);
            assert_eq!(err.sqlstate(), "28P01", "{garbage}: {err:?}");
        }
    }

    #[test]
    fn issuer_must_match() {
        let keys = generate_token_keys().expect("keys");
        let verifier = SluiceTokenVerifier::from_public_pem(
            keys.public_pem.as_bytes(),
            "sluice-prod",
            Duration::ZERO,
        )
        .expect("verifier");
        let now = SystemTime::now();
        let token = mint_token(
            keys.private_pem.as_bytes(),
            "sluice-staging",
            "alice",
            &[],
            Duration::from_secs(60),
            now,
        )
        .expect("mint");
        let err = verifier.verify(&token, now).expect_err("issuer");
        assert!(matches!(err, TokenError::WrongIssuer { .. }), "{err:?}");
    }
}
