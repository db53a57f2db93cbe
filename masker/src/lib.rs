//! # sluice-masker
//!
//! Owns the redaction of sensitive values in what PostgreSQL returns, applied to frames as
//! they stream through the gateway, one frame at a time, never holding a result set:
//!
//! * [`config`]: masking profiles as the policy file states them;
//! * [`detect`]: content detectors (cards with Luhn, emails, SSNs, IBANs, phones, IP
//!   addresses, JWTs, secret formats, user literals and regexes), each a cheap SIMD
//!   prefilter (`memchr`, `aho-corasick`) that finds candidates and a validator that
//!   decides;
//! * [`style`]: how a found or named value is rewritten (redact, partial, keyed hash,
//!   null, format-preserving);
//! * [`plan`]: a compiled profile ([`Masker`]) and the masking plan computed once per
//!   `RowDescription`;
//! * [`wire`]: the per-session state machine ([`SessionMasker`]) that follows the
//!   client's and the backend's frames and rewrites `DataRow`, `COPY` data, error and
//!   notice fields, notifications and function-call results.
//!
//! It must never do I/O, read a clock, log, or let the unmasked value of a column a rule
//! names through; a raw value never goes into an error, a count or a name. It is
//! hand-written rather than built on a general-purpose library because it runs on every
//! byte of every result on the data path: frames that need no change must cost a scan
//! and nothing else, and rewritten frames must be produced in one pass.

pub mod config;
pub mod detect;
pub mod fuzzing;
pub mod plan;
pub mod style;
pub mod wire;

pub use config::{ColumnRule, DetectorKind, LiteralRule, PatternRule, ProfileConfig, Style};
pub use plan::{CatalogColumn, ColumnInfo, ColumnVerdict, Masker};
pub use wire::SessionMasker;

/// A masking profile that cannot be compiled; the message names the profile's field and
/// says what is wrong (never a value from a result).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
