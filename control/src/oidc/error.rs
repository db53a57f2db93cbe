//! Why a token or a key set was refused.

/// Why an OIDC token was refused. Every variant has a message that tells the user what is
/// wrong and a [`sqlstate`](OidcError::sqlstate) for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// Not a JWT at all, or a JWT whose header or claims cannot be read.
    #[error("the password is not a valid OIDC token ({0}); sign in to your identity provider again and use the token it issues")]
    Malformed(String),
    /// `alg: none`: an unsigned token.
    #[error("the token is unsigned (alg \"none\"); unsigned tokens are never accepted")]
    Unsigned,
    /// An HMAC (`HS*`) algorithm: the classic confusion attack where the issuer's public
    /// key is used as a shared secret. Refused outright.
    #[error("the token claims {alg}, a shared-secret (HMAC) algorithm; only tokens signed with the identity provider's private key are accepted (possible algorithm-confusion attack)")]
    SymmetricAlgorithm {
        /// The header's `alg`.
        alg: String,
    },
    /// An algorithm this issuer is not configured to use.
    #[error("the token is signed with {alg:?}, which issuer {issuer:?} is not allowed to use here (allowed: {allowed})")]
    AlgorithmNotAllowed {
        /// The header's `alg`.
        alg: String,
        /// Configured issuer.
        issuer: String,
        /// The allowed algorithms, comma-separated.
        allowed: String,
    },
    /// The header has no `kid`, so the signing key cannot be chosen.
    #[error("the token's header has no key id (kid), so its signing key cannot be found; tokens from issuer {issuer:?} must name their key")]
    MissingKid {
        /// Configured issuer.
        issuer: String,
    },
    /// The `kid` is not in the issuer's key set (the caller may refresh the key set and
    /// retry: see [`verify_with_refresh`](super::verify_with_refresh)).
    #[error("the token is signed with key id {0:?}, which the identity provider does not publish (anymore); sign in again for a fresh token")]
    UnknownKid(String),
    /// The key named by `kid` is of a different type than the header's `alg`
    /// (e.g. `ES256` with an RSA key).
    #[error("the token claims {alg} but its key {kid:?} is a {key_type} key; the token was not signed by this identity provider")]
    KeyAlgorithmMismatch {
        /// The header's `kid`.
        kid: String,
        /// The header's `alg`.
        alg: String,
        /// What the key is (`RSA`, `EC P-256`, `Ed25519`) and, if it declares one, its alg.
        key_type: String,
    },
    /// The signature does not verify with the key named by `kid`.
    #[error("the token's signature does not verify with the identity provider's key {kid:?}; the token is forged or corrupted")]
    BadSignature {
        /// The header's `kid`.
        kid: String,
    },
    /// `iss` is another issuer.
    #[error("the token was issued by {found:?}, not by {expected:?}")]
    WrongIssuer {
        /// `iss` in the token.
        found: String,
        /// Configured issuer.
        expected: String,
    },
    /// A claim that must be present is missing or has the wrong type.
    #[error("the token has no usable {claim:?} claim ({detail}); it cannot be trusted without it")]
    MissingClaim {
        /// The claim (`iss`, `aud`, `exp`, or the configured subject claim).
        claim: String,
        /// What was wrong with it.
        detail: String,
    },
    /// `aud` does not contain this gateway's audience.
    #[error("the token is for audience {found:?}, not for this gateway ({expected:?}); request a token for {expected:?}")]
    WrongAudience {
        /// `aud` in the token (one or more values).
        found: Vec<String>,
        /// Configured audience.
        expected: String,
    },
    /// Past `exp` beyond the allowed skew.
    #[error("the token expired {ago_secs} s ago; sign in again for a fresh token")]
    Expired {
        /// Seconds since `exp`.
        ago_secs: u64,
    },
    /// `nbf` is in the future beyond the allowed skew.
    #[error("the token is not valid yet (nbf is {in_secs} s from now); check the clocks")]
    NotYetValid {
        /// Seconds until `nbf`.
        in_secs: u64,
    },
    /// The groups claim is present but not a string or an array of strings.
    #[error("the token's groups claim {path:?} is {found}, not a string or an array of strings")]
    BadGroupsClaim {
        /// Configured dotted path.
        path: String,
        /// What was found there.
        found: String,
    },
    /// The key set could not be refreshed to look for the token's `kid`.
    #[error("the identity provider's signing keys could not be fetched to check key id {kid:?}; try again shortly")]
    KeysUnavailable {
        /// The header's `kid`.
        kid: String,
    },
}

impl OidcError {
    /// SQLSTATE sent to the client: 28P01 (invalid_password) when the token itself is bad
    /// or forged, 28000 (invalid_authorization_specification) when a genuine token is used
    /// at the wrong time or for the wrong audience, or its keys are momentarily unavailable.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            OidcError::WrongAudience { .. }
            | OidcError::Expired { .. }
            | OidcError::NotYetValid { .. }
            | OidcError::KeysUnavailable { .. } => "28000",
            OidcError::Malformed(_)
            | OidcError::Unsigned
            | OidcError::SymmetricAlgorithm { .. }
            | OidcError::AlgorithmNotAllowed { .. }
            | OidcError::MissingKid { .. }
            | OidcError::UnknownKid(_)
            | OidcError::KeyAlgorithmMismatch { .. }
            | OidcError::BadSignature { .. }
            | OidcError::WrongIssuer { .. }
            | OidcError::MissingClaim { .. }
            | OidcError::BadGroupsClaim { .. } => "28P01",
        }
    }
}

/// Why a key set could not be loaded (for control's logs; never sent to clients).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The document is not a JWKS (`{"keys": [...]}`).
    #[error("not a JWKS document: {0}")]
    Parse(String),
    /// Reading `jwks_file` failed.
    #[error("cannot read JWKS file {path}: {detail}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        detail: String,
    },
    /// Fetching `jwks_uri` failed (connect, TLS, timeout, HTTP status, size).
    #[error("cannot fetch JWKS from {uri}: {detail}")]
    Fetch {
        /// The endpoint.
        uri: String,
        /// What went wrong.
        detail: String,
    },
    /// The issuer config is invalid.
    #[error("invalid OIDC issuer config: {0}")]
    Config(String),
}
