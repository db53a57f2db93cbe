//! OIDC issuers: validating identity-provider tokens against the issuer's published keys.
//!
//! The module is split along the crate's sans-I/O line (design §2):
//!
//! - [`IssuerConfig`] says which issuer is trusted, for which audience, where its keys are
//!   published and which claims carry the subject and the groups.
//! - [`Jwks`] is a parsed key set: decoding keys by `kid`, with keys we cannot or must not
//!   use (encryption keys, HMAC `oct` keys, unsupported curves) skipped, never failing the
//!   whole set for one odd key.
//! - [`OidcVerifier`] is **pure**: a config, a key set and the caller's clock in, an
//!   [`OidcPrincipal`] or a precise [`OidcError`] out. The proxy can run it on public keys
//!   carried in the snapshot.
//! - [`JwksCache`] is control's I/O: it loads the key set from a file or fetches it over
//!   HTTPS with a timeout, and refetches (rate-limited) when a token names a key id it does
//!   not know, which is how key rotation is picked up without a restart.
//!   [`verify_with_refresh`] ties the two together.
//!
//! Never: build an HMAC key from public key material (algorithm confusion), accept
//! `alg: none`, or trust a token without `iss`, `aud` and `exp`.

mod cache;
mod config;
mod error;
mod jwks;
mod verifier;

pub use cache::{verify_with_refresh, JwksCache};
pub use config::{IssuerConfig, SigningAlgorithm};
pub use error::{JwksError, OidcError};
pub use jwks::{Jwks, SkippedKey};
pub use verifier::{groups_at_path, unverified_issuer, OidcPrincipal, OidcVerifier};
