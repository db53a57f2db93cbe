//! # sluice-control — not built yet
//!
//! Will own every slow or stateful decision: OIDC/JWKS validation keys, Sluice token keys,
//! policy, just-in-time grants, approvals and revocations, compiled into immutable,
//! versioned snapshots that are published to the proxy through sealed memfds and a seqlock
//! generation header.
//!
//! It must never be on the proxy's data path: the proxy reads its snapshot and never waits
//! on it. Today the proxy verifies Sluice tokens with a key from its own config (see
//! `sluice_proxy::auth`); the control-process issue moves the key source here.
