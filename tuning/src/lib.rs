//! # sluice-tuning — profiles for the gateway's config, and checks of the host
//!
//! It owns two things operators use before and while deploying Sluice:
//!
//! - **Profiles** ([`profiles`]): named, commented sets of gateway settings
//!   (`tuning/profiles/*.toml`, embedded in the binary). [`apply`] merges one onto the
//!   operator's `sluice.toml` *as TOML*, before the gateway's [`sluice_proxy::Config`] is
//!   deserialized, so a profile goes through exactly the parsing and validation a
//!   hand-written file does, and it reports every value of the file it replaced.
//! - **Host checks** ([`check`]): what the kernel and the process limits say about running
//!   the gateway with a given config (cores, io_uring, memlock, somaxconn, descriptors,
//!   ports, THP, CPU governor), each with why it matters and the command that changes it.
//!   Reading the host is a thin shell ([`check::HostFacts::read`]); judging the readings is
//!   pure ([`check::evaluate`]) and tested with fixture strings.
//!
//! It must never change the host: no sysctl writes, no rlimit changes, nothing under
//! `/sys` or `/proc` written. It reads, probes (an io_uring ring that is created and
//! dropped) and proposes; the operator applies. And a profile must never touch what is
//! not tuning: addresses, TLS, identity, policy, resources or where recordings go.

pub mod apply;
pub mod check;
pub mod merge;
pub mod profiles;

pub use apply::{apply, effective_tunables, load, Applied, Origin, ProfileChoice};
pub use merge::Change;
pub use profiles::{Profile, UnknownProfile, PROFILES};
