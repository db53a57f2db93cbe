//! Client identity: the password a client sends is a token, and a [`TokenVerifier`] turns
//! it into a [`Principal`] or says precisely why not.
//!
//! The verifier the proxy runs is control's pure [`Identity`], rebuilt from each snapshot
//! generation (Sluice tokens with control's published public keys, OIDC tokens with the
//! issuers' key sets as control last fetched them). The trait is the seam the handshake
//! state machine is tested through. Verification is pure: the current time is passed in.

use std::time::SystemTime;

use sluice_control::identity::Identity;

/// Why a token was refused (with its SQLSTATE and a message that says what to do).
pub use sluice_control::identity::IdentityError as TokenError;

/// Who a client is, once its token has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable subject (`sub`, or the issuer's configured subject claim).
    pub subject: String,
    /// Groups the subject belongs to; policy rules name these.
    pub groups: Vec<String>,
    /// When the token stops being valid.
    pub expires_at: SystemTime,
    /// When the token was issued: revocations refuse tokens issued before them.
    pub issued_at: SystemTime,
    /// Who vouched for the subject.
    pub issuer: String,
}

/// Turns a presented token into a principal. Implementations must be cheap to call from a
/// worker (no I/O: keys are in memory).
pub trait TokenVerifier {
    /// Verifies `token` at time `now`.
    fn verify(&self, token: &str, now: SystemTime) -> Result<Principal, TokenError>;
}

impl TokenVerifier for Identity {
    fn verify(&self, token: &str, now: SystemTime) -> Result<Principal, TokenError> {
        let verified = Identity::verify(self, token, now)?;
        Ok(Principal {
            subject: verified.subject,
            groups: verified.groups,
            expires_at: verified.expires_at,
            issued_at: verified.issued_at,
            issuer: verified.issuer,
        })
    }
}
