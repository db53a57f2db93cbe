//! # sluice-control — the control sidecar
//!
//! Owns every slow or stateful decision: who a token says a client is (Sluice's own
//! Ed25519 tokens and OIDC issuers), the access policy, just-in-time grants, approvals and
//! revocations, and the audit trail. It compiles them into immutable, versioned snapshots
//! and publishes them to the proxy through sealed memfds and a seqlock generation header;
//! it serves the operator's `sluice` subcommands on a 0600 Unix socket.
//!
//! It must never be on the proxy's data path: the proxy reads its snapshot and never waits
//! on it (events from the proxy are datagrams that are dropped, and counted, rather than
//! ever blocking a worker). It must never hand the proxy a private key, or publish a
//! snapshot that it has not compiled exactly as the proxy will.
//!
//! Modules: [`config`] (its sections of `sluice.toml`), [`identity`] (keyring and the pure
//! multi-issuer verifier), [`oidc`], [`policy`] (rules and the pure decision), [`state`] and
//! [`store`] (grants, requests, statements held for approval, revocations, audit;
//! append-only log), [`content`] (the
//! snapshot payload and the proxy's compiled [`content::View`]), [`snapshot`] (the channel),
//! [`service`] (the control process and its threads), [`admin`] (the admin protocol),
//! [`saml`] (SAML Responses exchanged for Sluice tokens; signatures checked by xmlsec through
//! `samael`), [`webhook`] (signed announcements of statements held for approval, delivered
//! off the event loop) and [`fuzzing`] (fuzz target bodies). The hand-written parts are the ones the
//! design keeps in our own hands (the shm snapshot); tokens use `jsonwebtoken`, JWKS fetching
//! `ureq`.
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
pub mod fuzzing;
pub mod identity;
pub mod oidc;
pub mod policy;
pub mod saml;
pub mod service;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod webhook;
