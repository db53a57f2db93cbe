//! # sluice-control — the control sidecar (being built)
//!
//! Owns every slow or stateful decision: OIDC/JWKS validation keys, Sluice token keys,
//! policy, just-in-time grants, approvals and revocations, compiled into immutable,
//! versioned snapshots that are published to the proxy through sealed memfds and a seqlock
//! generation header.
//!
//! It must never be on the proxy's data path: the proxy reads its snapshot and never waits
//! on it.
//!
//! Built so far: the two mechanisms below, as libraries with their own tests. Not yet: the
//! control process itself (`sluice up` / `sluice control`), policy, grants, the state store
//! and the admin API; until they land the proxy verifies Sluice tokens with a key from its
//! own config (`sluice_proxy::auth`) and does not read a snapshot.
//!
//! [`oidc`] validates tokens from OIDC identity providers. Fetching an issuer's JWKS is
//! control's I/O ([`oidc::JwksCache`], rate-limited refetch on an unknown `kid` so key
//! rotation needs no restart); verification ([`oidc::OidcVerifier`]) is pure, with the
//! clock passed in, so the proxy can run it on public keys carried in the snapshot. It must
//! never build an HMAC key from public key material (algorithm confusion), accept
//! `alg: none`, or trust a token without `iss`, `aud` and `exp`.
//!
//! [`snapshot`] owns the shared-memory channel that carries control's compiled state to the
//! proxy: each generation is a self-describing, CRC32C-checked envelope in a new sealed memfd,
//! its fd pushed to subscribers over a Unix socket (SCM_RIGHTS), and announced through a
//! seqlock counter in a small shared header that a worker checks with one atomic load per
//! statement. It is hand-written (libc memfd/seals/mmap/sendmsg) because it is one of the hot
//! paths the design keeps in our own hands. It must never block a reader, never let a reader
//! see a half-written payload (payloads are sealed before they are announced), and never
//! accept a snapshot it has not validated (seals, size, magic, version, checksum).

pub mod admin;
pub mod config;
pub mod content;
pub mod identity;
pub mod oidc;
pub mod policy;
pub mod service;
pub mod snapshot;
pub mod state;
pub mod store;
