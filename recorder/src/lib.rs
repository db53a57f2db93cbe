//! # sluice-recorder — session recordings
//!
//! Owns what a session did, on disk: per-worker append-only **segment files** of
//! checksummed, compressed **blocks** of records (the client's PostgreSQL messages, the
//! server's messages *as the client saw them* — already masked — and metadata: session
//! start and end, policy decisions, approvals), crash recovery to the last valid block,
//! a SHA-256 **hash chain** (optionally Ed25519-signed) across each worker's sealed
//! segments, retention, and the audit side: session listings, replay of one session's
//! records, and decision search.
//!
//! ## What it must never do
//!
//! - **Block a proxy worker's I/O loop**, except by the documented [`Overflow::Block`]
//!   policy. Files are written only by [`Recorder`]'s dedicated thread; the worker only
//!   pushes onto a queue bounded in bytes.
//! - **Silently drop a record.** A full queue either waits ([`Overflow::Block`]) or refuses
//!   ([`Overflow::FailClosed`] → [`RecordError::Full`], and the proxy refuses the
//!   statement). After a write error every append and flush returns [`RecordError::Io`]
//!   (the proxy fails closed) and [`RecorderStats::unwritten_after_error`] counts what the
//!   failure left unwritten. Records are durable once [`RecorderHandle::flush`] returns
//!   `Ok` (to the page cache; to the disk as the [`FsyncPolicy`] says).
//! - **See a value the masker has not seen.** The proxy hands it masked server frames and
//!   masked statement text (design: decode → mask → record → send). This crate does not
//!   parse or transform frame contents.
//! - **Panic on file contents.** A damaged segment is an error or a reported bad block /
//!   cut, never a panic (fuzzed: `recorder/fuzz`, target `segment_reader`).
//!
//! ## Segment file format (version 1)
//!
//! Files are named `w{worker:03}-{seq:010}.seg` in the recording directory; each worker
//! numbers its own segments from 0. All integers are little-endian.
//!
//! **Header** (68 bytes, at offset 0)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `SLCREC\0\x01` |
//! | 8 | 2 | format version (1) |
//! | 10 | 2 | worker |
//! | 12 | 4 | reserved, zero |
//! | 16 | 8 | seq |
//! | 24 | 8 | creation wall time, µs since the Unix epoch |
//! | 32 | 32 | previous segment's chain hash (zeros for seq 0) |
//! | 64 | 4 | CRC32C of bytes 0..64 |
//!
//! **Blocks**, back to back after the header; each is a 40-byte header then its payload:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SLBK` |
//! | 4 | 1 | codec: 0 none, 1 zstd, 2 lz4 (block format) |
//! | 5 | 3 | reserved, zero |
//! | 8 | 4 | uncompressed length |
//! | 12 | 4 | compressed length (payload size) |
//! | 16 | 4 | record count |
//! | 20 | 8 | first wall µs |
//! | 28 | 8 | last wall µs |
//! | 36 | 4 | CRC32C over bytes 0..36 of this header and the payload |
//!
//! The uncompressed payload is a sequence of records: session id (16), `mono_us` (8),
//! `wall_us` (8), kind (1: 1 SessionStart, 2 Client, 3 Server, 4 Decision, 5 Approval,
//! 6 SessionEnd), payload length (4), payload (raw frame bytes for Client/Server, JSON for
//! the others). See [`record`].
//!
//! **Footer** (sealed segments only), at `footer_offset`:
//!
//! | size | field |
//! |---|---|
//! | 4 | index length *n* |
//! | *n* | index, JSON ([`SegmentIndex`]): every block (offset, records, time range) and every session (block offsets, time range, record and decision counts, blocks holding decisions, SessionStart summary: principal, resource; SessionEnd summary: reason, statements, bytes) |
//! | 32 | chain hash = SHA-256(previous chain hash ‖ file bytes 0..footer_offset ‖ index) |
//! | 2 | signature length (0 or 64) |
//! | 0/64 | Ed25519 signature of the chain hash |
//!
//! The chain hash deliberately also covers the index, so an edited index is as evident as
//! an edited block.
//!
//! **Trailer** (24 bytes, last in the file): footer offset (8), footer length (4), CRC32C
//! of the footer (4), magic `SLCEND\0\x01` (8). A file that does not end in the trailer
//! magic is unsealed.
//!
//! ## Writing, crashes, rotation
//!
//! [`SegmentWriter`] encodes records into a block buffer, and writes each block with one
//! `write` (so a crash tears at most the last block). A segment is sealed (footer written)
//! when it reaches `segment_bytes` or `segment_age`, and the next one carries its chain
//! hash. On start, [`SegmentWriter::create`] finds the worker's last segment; if a crash
//! left it unsealed it keeps every block whose length and CRC check, truncates the torn
//! tail, seals it so the chain continues, and reports a [`Recovery`]. A last segment whose
//! *header* is unreadable is an error (it is evidence; move it aside after looking).
//!
//! `on_seal` ([`RecorderConfig::on_seal`]) is a shell command run as
//! `sh -c '<command> "$1"' sluice-on-seal <sealed segment path>` after each seal, on a
//! helper thread that only waits for it and logs a failure — e.g.
//! `aws s3 cp --only-show-errors` or `rclone copyto ... ` to ship sealed segments to
//! object storage, which also gives [`verify`] an outside copy to compare with.
//!
//! ## Tamper evidence and retention
//!
//! [`verify`] recomputes every block CRC and footer hash, checks each segment's `prev`
//! link and signatures, and reports sequence gaps. [`apply_retention`] removes the oldest
//! sealed segments by age or total size and logs each one (name and hash) to
//! `retention.log` first, so `verify` accepts those gaps — and only those.

pub mod archive;
pub mod format;
mod index;
pub mod reader;
pub mod record;
pub mod recorder;
pub mod verify;
pub mod writer;

pub use archive::{
    Archive, Problem, SearchHit, SearchQuery, SearchResult, SessionFilter, SessionRecords,
    SessionSummary,
};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use format::{
    Codec, EndSummary, Footer, SegmentHeader, SegmentIndex, SessionIndex, StartSummary,
};
pub use reader::{BadBlock, Block, ReadError, SegmentReader};
pub use record::{
    Approval, ApprovalOutcome, Decision, Record, RecordKind, SessionEnd, SessionStart, TlsInfo,
    Verdict,
};
pub use recorder::{Overflow, RecordError, Recorder, RecorderHandle, RecorderStats};
pub use regex::Regex;
pub use uuid::Uuid;
pub use verify::{apply_retention, verify, RemovedSegment, VerifyReport, RETENTION_LOG};
pub use writer::{
    FsyncPolicy, RecorderConfig, Recovery, SealedSegment, SegmentWriter, WriterStats,
};
