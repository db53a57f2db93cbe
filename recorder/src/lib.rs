//! # sluice-recorder — not built yet
//!
//! Will own session recordings: per-worker append-only segment files of checksummed,
//! compressed blocks (client messages and the *masked* server messages), crash recovery
//! to the last valid block, a hash chain across sealed segments, and the replay and audit
//! search behind `sluice sessions` / `sluice replay`.
//!
//! It must never sit on a worker's hot path with blocking I/O, silently drop a frame, or
//! see a value before the masker has. Nothing is implemented here yet (see the recording
//! issue).
