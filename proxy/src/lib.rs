//! # sluice-proxy — the data path
//!
//! Owns sockets, timers and the worker runtimes: a thread-per-core PostgreSQL gateway on
//! monoio (io_uring, or epoll by configuration), one pinned runtime per core with its own
//! `SO_REUSEPORT` listener. It terminates client TLS, checks the client's token with the
//! public keys in control's snapshot, asks its worker's [`gate`] whether policy admits the
//! session (and, per statement, whether it still does), logs in to the backend with
//! credentials only the gateway holds, and relays the protocol with zero-copy frame
//! forwarding. Identity and policy come only from control's snapshot: without a fresh one
//! the gateway admits nothing.
//!
//! It is a thin I/O shell: protocol decisions live in sans-I/O modules that never touch a
//! socket or a clock ([`handshake`], [`backend_login`], [`walker`], control's `policy` and
//! `identity`) and in the `codecs` crate, so they are tested without a network. It must
//! never block a worker (no locks or cross-thread channels on the data path; the cancel-key
//! table is touched only at session start/end and on cancel; each worker's [`metrics`] are
//! written by that worker alone and read by the [`observe`] thread where they lie), never
//! hold a backend secret
//! where a log could print it, never reach a backend before the client is authenticated and
//! admitted by policy, and never let one session's bad input end another session.

pub mod audit;
pub mod auth;
pub mod backend_login;
pub mod cancel;
pub mod config;
pub mod conn;
pub mod deployment;
pub mod gate;
pub mod handshake;
pub mod metrics;
pub mod observe;
pub mod recording;
pub mod server;
pub mod session;
pub mod statements;
pub mod tls;
pub mod walker;

pub use config::Config;
pub use server::{Gateway, ShutdownHandle};
