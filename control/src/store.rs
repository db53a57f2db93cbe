//! Control's persistent state: grants, access requests, statements held for approval,
//! revocations and the audit trail, kept
//! in the state directory so that they survive a restart of the control process, `kill -9`
//! included.
//!
//! # What it owns
//!
//! * [`Record`], one change to control's state as persisted, and [`State`], what the records
//!   add up to ([`State::apply`], [`State::prune`], [`State::to_records`]).
//! * [`StateStore`], the interface control writes through, and [`LogStore`], its only
//!   implementation: two files in the state directory.
//!   * `state.log`: every record, one per line, compacted from time to time into the records
//!     that rebuild the current state ([`StateStore::compact`]). Replayed on open.
//!   * `audit.log`: every audit event, one per line (a [`Record::Audit`], in the same line
//!     format), **never compacted** (the state log keeps only the most recent [`AUDIT_TAIL`]
//!     events). Control only ever appends to it; on open
//!     it checks the last line, nothing else.
//!
//! # Why an append-only log and not SQLite
//!
//! There is one writer (control), the volume is tiny (admin actions: a grant, an approval, a
//! revocation), and the whole state fits in memory. An append-only log of JSON lines needs no
//! C dependency, is durable with one `write` + `fdatasync` per change, and is readable by an
//! operator with standard tools (`cut -d' ' -f2- state.log | jq .`). The same [`Record`] type
//! is what a later PostgreSQL-backed store would insert (see [`StateStore`]).
//!
//! # Line format
//!
//! `<CRC32C of the JSON bytes, 8 lowercase hex digits> <JSON of one Record>\n`. The JSON is
//! serde_json's compact form and never contains a raw newline.
//!
//! # Crash safety
//!
//! * An append is one `write` on an `O_APPEND` handle followed by `fdatasync`; `append`
//!   returns `Ok` only after both. An audit event goes to `audit.log` first and to
//!   `state.log` second, so `audit.log` may hold an event whose state change was never
//!   acknowledged (a crash between the two), never the reverse.
//! * On open, a last line that is incomplete (no trailing newline) or fails its checksum is
//!   the torn tail of an append that never returned `Ok`: the file is truncated to the end of
//!   the last good line and the cut is reported in [`Recovery`], not logged. A bad line that
//!   is *not* the last one is real corruption: [`StoreError::Corrupt`] names the file and the
//!   line and the file is left exactly as it is. So is a last line whose checksum matches but
//!   whose JSON this build cannot read (it was written whole, most likely by a newer Sluice):
//!   cutting it would lose an acknowledged change.
//! * Compaction writes `state.log.tmp`, fsyncs it, renames it over `state.log` and fsyncs
//!   the directory: after a crash either the old or the new log is there, complete.
//! * After a failed write or fsync the tail of a log is unknown (and after a failed fsync the
//!   page cache can no longer be trusted), so the store refuses further writes
//!   ([`StoreError::Poisoned`]) until it is reopened, which repairs the tail.
//! * The state directory is locked (`flock`) for as long as the [`LogStore`] lives, so a
//!   second control on the same directory fails to open instead of interleaving appends.
//!
//! # What it must never do
//!
//! Acknowledge a change before it is durable; modify a file it found corrupt; cut anything
//! but a torn last line; compact or rewrite `audit.log`; panic on anything read from disk;
//! create its files readable by anyone but their owner (files are `0600`, a directory it
//! creates is `0700`).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::{
    AccessRequest, ApprovalDecision, ApprovalScope, ApprovalStatus, ApprovalVote, AuditEvent,
    Grant, RequestStatus, Revocation, StatementApproval,
};

/// How many of the most recent audit events [`State`] (and so `state.log`) keeps. The full
/// trail is in `audit.log`.
pub const AUDIT_TAIL: usize = 1000;
/// File name of the state log inside the state directory.
pub const STATE_LOG: &str = "state.log";
/// File name of the audit log inside the state directory.
pub const AUDIT_LOG: &str = "audit.log";
/// How long past `approvals.timeout` a decision on a held statement stays in the snapshot:
/// a session can only be waiting for it that long (the margin covers clock skew and
/// delays).
pub const DECISION_MARGIN_MS: u64 = 60_000;
/// How long an approval with fingerprint scope stays in the snapshot at most when control
/// never learns that its session ended (the end event is a datagram and can be lost).
pub const FINGERPRINT_APPROVAL_MAX_AGE_MS: u64 = 24 * 3600 * 1000;
/// File name compaction writes before renaming it over [`STATE_LOG`].
pub const STATE_LOG_TMP: &str = "state.log.tmp";

/// Mode of the log files.
const FILE_MODE: u32 = 0o600;
/// Mode of a state directory the store creates.
const DIR_MODE: u32 = 0o700;

/// One change to control's state, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A grant was made (directly or by approving a request).
    GrantCreated {
        /// The grant.
        grant: Grant,
    },
    /// A grant ended before its expiry: revoked or cut short. It is removed from the state.
    GrantEnded {
        /// ID of the grant.
        id: String,
        /// When it ended.
        at_ms: u64,
        /// Principal who ended it.
        by: String,
        /// Why.
        reason: String,
    },
    /// An access request was made.
    RequestCreated {
        /// The request, with its status at creation (normally pending).
        request: AccessRequest,
    },
    /// An access request was approved, denied or expired.
    RequestDecided {
        /// ID of the request.
        id: String,
        /// Its new status.
        status: RequestStatus,
    },
    /// The proxy held a statement for approval.
    ApprovalRequested {
        /// The request, with its status and approvals at creation (normally pending, none).
        approval: StatementApproval,
    },
    /// An approver approved a held statement (it is decided only once enough distinct
    /// approvers have: [`Record::ApprovalDecided`] follows then).
    ApprovalVoted {
        /// ID of the request.
        id: String,
        /// The approval.
        vote: ApprovalVote,
    },
    /// A held statement was approved, denied, withdrawn or expired.
    ApprovalDecided {
        /// ID of the request.
        id: String,
        /// Its new status.
        status: ApprovalStatus,
    },
    /// A session that held statements ended: no decision about it matters any more (they
    /// leave the snapshot).
    ApprovalSessionEnded {
        /// Session ID.
        session: String,
        /// When control learned it.
        at_ms: u64,
    },
    /// A principal's access was revoked.
    Revoked {
        /// The revocation.
        revocation: Revocation,
    },
    /// An entry of the audit trail (also appended to `audit.log`).
    Audit {
        /// The event.
        event: AuditEvent,
    },
}

/// Everything the records add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Grants by ID. Ended grants are removed; expired ones stay until [`State::prune`].
    pub grants: BTreeMap<String, Grant>,
    /// Access requests by ID, pending and decided (until [`State::prune`]).
    pub requests: BTreeMap<String, AccessRequest>,
    /// Statements held for approval by ID, pending and ended (until [`State::prune`]).
    pub approvals: BTreeMap<String, StatementApproval>,
    /// Revocations, in the order they were made.
    pub revocations: Vec<Revocation>,
    /// The most recent [`AUDIT_TAIL`] audit events, oldest first.
    pub audit: VecDeque<AuditEvent>,
}

impl State {
    /// Applies one record. Never panics and never fails: a record about an unknown grant or
    /// request ID is ignored, a record that creates something already present replaces it,
    /// a revocation identical to one already held is not added twice, and a decision replaces
    /// the request's status whatever it was (the log is the authority; control decides what
    /// it writes). Applying the same creation or decision twice is therefore harmless.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::GrantCreated { grant } => {
                self.grants.insert(grant.id.clone(), grant.clone());
            }
            Record::GrantEnded { id, .. } => {
                self.grants.remove(id);
            }
            Record::RequestCreated { request } => {
                self.requests.insert(request.id.clone(), request.clone());
            }
            Record::RequestDecided { id, status } => {
                if let Some(request) = self.requests.get_mut(id) {
                    request.status = status.clone();
                }
            }
            Record::ApprovalRequested { approval } => {
                self.approvals.insert(approval.id.clone(), approval.clone());
            }
            Record::ApprovalVoted { id, vote } => {
                if let Some(approval) = self.approvals.get_mut(id) {
                    if !approval.approvals.iter().any(|v| v.by == vote.by) {
                        approval.approvals.push(vote.clone());
                    }
                }
            }
            Record::ApprovalDecided { id, status } => {
                if let Some(approval) = self.approvals.get_mut(id) {
                    approval.status = status.clone();
                }
            }
            Record::ApprovalSessionEnded { session, at_ms } => {
                for approval in self.approvals.values_mut() {
                    if approval.session == *session && approval.session_ended_at_ms.is_none() {
                        approval.session_ended_at_ms = Some(*at_ms);
                    }
                }
            }
            Record::Revoked { revocation } => {
                if !self.revocations.contains(revocation) {
                    self.revocations.push(revocation.clone());
                }
            }
            Record::Audit { event } => {
                self.audit.push_back(event.clone());
                while self.audit.len() > AUDIT_TAIL {
                    self.audit.pop_front();
                }
            }
        }
    }

    /// The grants in force at `now_ms` ([`Grant::is_active`]), in ID order.
    pub fn active_grants(&self, now_ms: u64) -> impl Iterator<Item = &Grant> {
        self.grants.values().filter(move |g| g.is_active(now_ms))
    }

    /// The held statements still waiting for approvers, in ID order.
    pub fn pending_approvals(&self) -> impl Iterator<Item = &StatementApproval> {
        self.approvals.values().filter(|a| a.is_pending())
    }

    /// The decisions on held statements the snapshot carries at `now_ms`, in ID order: those
    /// made within the last `timeout_ms` + [`DECISION_MARGIN_MS`] (a session may still be
    /// waiting for them), and approvals with fingerprint scope for up to
    /// [`FINGERPRINT_APPROVAL_MAX_AGE_MS`] (their session runs such statements without
    /// asking again). Nothing about a session control knows has ended.
    pub fn carried_decisions(&self, now_ms: u64, timeout_ms: u64) -> Vec<ApprovalDecision> {
        let window = timeout_ms.saturating_add(DECISION_MARGIN_MS);
        self.approvals
            .values()
            .filter(|a| a.session_ended_at_ms.is_none())
            .filter_map(|a| {
                let d = a.decision()?;
                let age = now_ms.saturating_sub(d.decided_at_ms);
                let lasting = d.approved
                    && d.scope == ApprovalScope::Fingerprint
                    && age <= FINGERPRINT_APPROVAL_MAX_AGE_MS;
                (age <= window || lasting).then_some(d)
            })
            .collect()
    }

    /// The requests still waiting for an approver, in ID order.
    pub fn pending_requests(&self) -> impl Iterator<Item = &AccessRequest> {
        self.requests
            .values()
            .filter(|r| r.status == RequestStatus::Pending)
    }

    /// Drops what can no longer matter at `now_ms`:
    ///
    /// * grants that have expired (`expires_at_ms <= now_ms`);
    /// * pending requests older than `request_ttl_ms` (`now_ms - created_at_ms >
    ///   request_ttl_ms`) become [`RequestStatus::Expired`], lapsed at `created_at_ms +
    ///   request_ttl_ms`; the [`Record::RequestDecided`] records this produced are returned
    ///   so the caller can persist them;
    /// * decided requests whose decision (or lapse) is older than `keep_ms`;
    /// * held statements that were decided, withdrawn or expired more than `keep_ms` ago
    ///   (pending ones are expired by control on its own schedule, `approvals.timeout`,
    ///   through [`Record::ApprovalDecided`]);
    /// * revocations older than `keep_ms` (a revocation only matters while tokens issued
    ///   before it can still be valid, so `keep_ms` must be at least the longest token
    ///   lifetime).
    ///
    /// Pruning itself is not a record: the log catches up at the next compaction, and a
    /// state replayed from the log and pruned with the same arguments is the same state.
    /// The audit tail is left alone (it is already bounded).
    pub fn prune(&mut self, now_ms: u64, keep_ms: u64, request_ttl_ms: u64) -> Vec<Record> {
        self.grants.retain(|_, g| g.expires_at_ms > now_ms);

        let mut expired = Vec::new();
        for request in self.requests.values_mut() {
            if request.status == RequestStatus::Pending
                && now_ms.saturating_sub(request.created_at_ms) > request_ttl_ms
            {
                let status = RequestStatus::Expired {
                    at_ms: request.created_at_ms.saturating_add(request_ttl_ms),
                };
                request.status = status.clone();
                expired.push(Record::RequestDecided {
                    id: request.id.clone(),
                    status,
                });
            }
        }

        self.requests.retain(|_, r| match decided_at(&r.status) {
            None => true,
            Some(at_ms) => now_ms.saturating_sub(at_ms) <= keep_ms,
        });
        self.approvals.retain(|_, a| match a.status.ended_at_ms() {
            None => true,
            Some(at_ms) => now_ms.saturating_sub(at_ms) <= keep_ms,
        });
        self.revocations
            .retain(|v| now_ms.saturating_sub(v.at_ms) <= keep_ms);
        expired
    }

    /// The records that rebuild this state (for compaction): applying them in order to an
    /// empty [`State`] gives back this one. Requests and held statements carry their
    /// current status (and approvals), so no decision records are needed.
    pub fn to_records(&self) -> Vec<Record> {
        let mut records = Vec::with_capacity(
            self.grants.len()
                + self.requests.len()
                + self.approvals.len()
                + self.revocations.len()
                + self.audit.len(),
        );
        records.extend(
            self.requests
                .values()
                .map(|r| Record::RequestCreated { request: r.clone() }),
        );
        records.extend(self.approvals.values().map(|a| Record::ApprovalRequested {
            approval: a.clone(),
        }));
        records.extend(
            self.grants
                .values()
                .map(|g| Record::GrantCreated { grant: g.clone() }),
        );
        records.extend(self.revocations.iter().map(|v| Record::Revoked {
            revocation: v.clone(),
        }));
        records.extend(
            self.audit
                .iter()
                .map(|e| Record::Audit { event: e.clone() }),
        );
        records
    }
}

/// When a decided request was decided (or lapsed); `None` while it is pending.
fn decided_at(status: &RequestStatus) -> Option<u64> {
    match status {
        RequestStatus::Pending => None,
        RequestStatus::Approved { at_ms, .. }
        | RequestStatus::Denied { at_ms, .. }
        | RequestStatus::Expired { at_ms } => Some(*at_ms),
    }
}

/// Where control keeps its state. The embedded [`LogStore`] is the only implementation today.
///
/// Control keeps the whole [`State`] in memory: it persists a change with
/// [`append`](StateStore::append) and, once that returned `Ok`, applies it
/// ([`State::apply`]). The store never reads back after opening.
///
/// Planned, not built: a PostgreSQL-backed store so that the controls of several gateway
/// hosts share grants, requests and revocations. It would insert the same [`Record`]s (their
/// JSON in a `jsonb` column) into one table keyed by `(host, seq)`, or into a table per record
/// type; every host's control would read it to build its state and follow it for changes
/// made elsewhere, and compaction would become deleting what [`State::prune`] dropped.
pub trait StateStore: Send {
    /// Persists one record. Returns `Ok` only once it is durable (fsynced).
    fn append(&mut self, record: &Record) -> Result<(), StoreError>;
    /// Atomically replaces the persisted records with `state.to_records()`: after a crash,
    /// either the old records or the new ones are there, never a mix.
    fn compact(&mut self, state: &State) -> Result<(), StoreError>;
}

/// What replaying the logs found on open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records replayed from `state.log`.
    pub records: usize,
    /// Bytes of a torn last line cut from `state.log` (0: none).
    pub torn_tail_bytes: u64,
    /// Bytes of a torn last line cut from `audit.log` (0: none).
    pub audit_torn_tail_bytes: u64,
}

/// Why the store could not open, read or write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A system call failed.
    #[error("state store: {context}: {source}")]
    Io {
        /// What was being done, and on which file.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A line that is not a torn tail is unreadable. The file was left as it is.
    #[error("state store: {path} line {line} is corrupt ({reason}); the file was left untouched: restore it from a backup or repair it by hand")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A record could not be encoded as JSON.
    #[error("state store: encoding a record: {0}")]
    Encode(#[source] serde_json::Error),
    /// Another process (another control?) holds the state directory.
    #[error("state store: {path} is locked by another process (is another control running on this state directory?)")]
    Locked {
        /// The state directory.
        path: PathBuf,
    },
    /// An earlier write or fsync failed, so the end of a log is unknown; the store refuses
    /// writes until it is reopened ([`LogStore::open`] repairs a torn tail).
    #[error("state store refuses writes after an earlier failure ({reason}); reopen it")]
    Poisoned {
        /// The earlier failure.
        reason: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// Encodes one record as a log line, newline included.
fn encode_line(record: &Record) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(record).map_err(StoreError::Encode)?;
    let mut line = Vec::with_capacity(json.len() + 10);
    line.extend_from_slice(format!("{:08x} ", crc32c::crc32c(&json)).as_bytes());
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

/// Why a line could not be decoded.
enum LineFault {
    /// Incomplete or failing its checksum: what a torn write leaves.
    Damaged(String),
    /// Whole and checksummed, but not a record this build reads.
    Unreadable(String),
}

/// Decodes one line (without its newline).
fn decode_line(line: &[u8]) -> Result<Record, LineFault> {
    if line.len() < 9 || line[8] != b' ' {
        return Err(LineFault::Damaged(
            "no `<crc32c> ` prefix of 8 hex digits and a space".into(),
        ));
    }
    let mut declared: u32 = 0;
    for &b in &line[..8] {
        let nibble = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => {
                return Err(LineFault::Damaged(
                    "checksum prefix is not 8 lowercase hex digits".into(),
                ))
            }
        };
        declared = (declared << 4) | u32::from(nibble);
    }
    let json = &line[9..];
    let computed = crc32c::crc32c(json);
    if computed != declared {
        return Err(LineFault::Damaged(format!(
            "checksum mismatch: the line says {declared:08x}, its bytes give {computed:08x}"
        )));
    }
    serde_json::from_slice(json).map_err(|e| {
        LineFault::Unreadable(format!(
            "the checksum matches but this build cannot read the record (written by a newer Sluice?): {e}"
        ))
    })
}

/// Decodes the last segment of a file: `segment` is everything after the last newline that
/// precedes it, its own newline included when present.
fn decode_last(segment: &[u8]) -> Result<Record, LineFault> {
    match segment.split_last() {
        Some((b'\n', line)) => decode_line(line),
        _ => Err(LineFault::Damaged("incomplete line (no newline)".into())),
    }
}

/// What replaying `state.log` found.
#[derive(Debug)]
struct Replay {
    state: State,
    records: usize,
    /// Length up to the end of the last good line.
    good_len: u64,
    /// Bytes after `good_len` (a torn tail to cut).
    torn: u64,
}

/// Replays a whole state log. A damaged last line is a torn tail; anything else bad is
/// [`StoreError::Corrupt`].
fn replay(path: &Path, bytes: &[u8]) -> Result<Replay, StoreError> {
    let mut state = State::default();
    let mut records = 0;
    let mut pos = 0;
    let mut line_no = 0;
    while pos < bytes.len() {
        line_no += 1;
        let rest = &bytes[pos..];
        let next = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => pos + i + 1,
            None => bytes.len(),
        };
        let last = next == bytes.len();
        let decoded = if last {
            decode_last(rest)
        } else {
            decode_line(&bytes[pos..next - 1])
        };
        match decoded {
            Ok(record) => {
                state.apply(&record);
                records += 1;
            }
            Err(LineFault::Damaged(_)) if last => {
                return Ok(Replay {
                    state,
                    records,
                    good_len: pos as u64,
                    torn: (bytes.len() - pos) as u64,
                });
            }
            Err(LineFault::Damaged(reason) | LineFault::Unreadable(reason)) => {
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    line: line_no,
                    reason,
                });
            }
        }
        pos = next;
    }
    Ok(Replay {
        state,
        records,
        good_len: bytes.len() as u64,
        torn: 0,
    })
}

/// Offset of the first byte of the last line of a file of `len` bytes: just after the last
/// newline before the final byte, or 0. Reads backwards, so a long log costs one chunk.
fn last_line_start(file: &File, len: u64) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = len.saturating_sub(1);
    let mut buf = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        buf.resize((end - start) as usize, 0);
        file.read_exact_at(&mut buf, start)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Checks the last line of `audit.log` and cuts it if it is torn. Returns the bytes cut.
/// Earlier lines are not read: control only appends to this file.
fn repair_audit_tail(file: &File, path: &Path) -> Result<u64, StoreError> {
    let ctx = || format!("checking the tail of {}", path.display());
    let len = file.metadata().map_err(io_err(ctx()))?.len();
    if len == 0 {
        return Ok(0);
    }
    let start = last_line_start(file, len).map_err(io_err(ctx()))?;
    let mut segment = vec![0u8; (len - start) as usize];
    file.read_exact_at(&mut segment, start)
        .map_err(io_err(ctx()))?;
    match decode_last(&segment) {
        Ok(_) => Ok(0),
        Err(LineFault::Damaged(_)) => {
            file.set_len(start).map_err(io_err(format!(
                "cutting the torn tail of {}",
                path.display()
            )))?;
            file.sync_all()
                .map_err(io_err(format!("fsync {}", path.display())))?;
            Ok(len - start)
        }
        Err(LineFault::Unreadable(reason)) => {
            // The line number would need a full scan; count the newlines before it.
            let line = count_lines_before(file, start).map_err(io_err(ctx()))? + 1;
            Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                line,
                reason,
            })
        }
    }
}

/// Number of newlines in the first `end` bytes of `file`.
fn count_lines_before(file: &File, end: u64) -> io::Result<usize> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0;
    let mut lines = 0;
    while pos < end {
        let n = (end - pos).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], pos)?;
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
        pos += n as u64;
    }
    Ok(lines)
}

/// Opens (creating, mode 0600) a log file for reading and appending.
fn open_log(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))
}

/// Takes away any access a looser mode than 0600 gave to others. Called only once the file
/// has been read and found sound, so a corrupt file is left exactly as it was.
fn tighten_mode(file: &File, path: &Path) -> Result<(), StoreError> {
    let mode = file
        .metadata()
        .map_err(io_err(format!("stat {}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o777 != FILE_MODE {
        file.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(io_err(format!("chmod 600 {}", path.display())))?;
    }
    Ok(())
}

/// Takes an exclusive, non-blocking `flock` on the state directory; held until `handle`
/// is closed.
fn lock_dir(handle: &File, dir: &Path) -> Result<(), StoreError> {
    // SAFETY: `handle` is an open descriptor owned by the caller for the whole call; flock
    // takes no pointers.
    let rc = unsafe { libc::flock(handle.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::WouldBlock {
        Err(StoreError::Locked {
            path: dir.to_path_buf(),
        })
    } else {
        Err(io_err(format!("locking {}", dir.display()))(err))
    }
}

/// Removes `path` if it exists.
fn remove_if_exists(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io_err(format!("removing {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// The embedded store: `state.log` and `audit.log` in the state directory (see the module
/// documentation). Holds both files open (`O_APPEND`) and the directory locked.
#[derive(Debug)]
pub struct LogStore {
    dir: PathBuf,
    path: PathBuf,
    audit_path: PathBuf,
    state_file: File,
    audit_file: File,
    /// Holds the `flock`; also fsynced after a rename.
    dir_handle: File,
    /// Set after a failed write or fsync: why further writes are refused.
    poisoned: Option<String>,
}

impl LogStore {
    /// Opens (creating) `dir/state.log` (file mode 0600, `dir` created 0700 if missing) and
    /// replays it; opens (creating) `dir/audit.log` and checks its last line. Torn last lines
    /// are cut and reported in the [`Recovery`]; corruption anywhere else is
    /// [`StoreError::Corrupt`] and leaves the file untouched. Fails with
    /// [`StoreError::Locked`] if another process has the directory open as a store. A
    /// leftover `state.log.tmp` from a compaction that never finished is removed.
    pub fn open(dir: &Path) -> Result<(LogStore, State, Recovery), StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io_err(format!("creating {}", dir.display())))?;
        let dir_handle = File::open(dir).map_err(io_err(format!("opening {}", dir.display())))?;
        lock_dir(&dir_handle, dir)?;
        remove_if_exists(&dir.join(STATE_LOG_TMP))?;

        let path = dir.join(STATE_LOG);
        let mut state_file = open_log(&path)?;
        let mut bytes = Vec::new();
        state_file
            .read_to_end(&mut bytes)
            .map_err(io_err(format!("reading {}", path.display())))?;
        let replay = replay(&path, &bytes)?;
        if replay.torn > 0 {
            state_file.set_len(replay.good_len).map_err(io_err(format!(
                "cutting the torn tail of {}",
                path.display()
            )))?;
            state_file
                .sync_all()
                .map_err(io_err(format!("fsync {}", path.display())))?;
        }
        tighten_mode(&state_file, &path)?;

        let audit_path = dir.join(AUDIT_LOG);
        let audit_file = open_log(&audit_path)?;
        let audit_torn = repair_audit_tail(&audit_file, &audit_path)?;
        tighten_mode(&audit_file, &audit_path)?;

        // Make the files' directory entries durable if they were just created.
        dir_handle
            .sync_all()
            .map_err(io_err(format!("fsync {}", dir.display())))?;

        let recovery = Recovery {
            records: replay.records,
            torn_tail_bytes: replay.torn,
            audit_torn_tail_bytes: audit_torn,
        };
        let store = LogStore {
            dir: dir.to_path_buf(),
            path,
            audit_path,
            state_file,
            audit_file,
            dir_handle,
            poisoned: None,
        };
        Ok((store, replay.state, recovery))
    }

    /// Path of the state log (`dir/state.log`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path of the audit log (`dir/audit.log`).
    pub fn audit_path(&self) -> &Path {
        &self.audit_path
    }

    fn check_usable(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(reason) => Err(StoreError::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// Writes `line` to `file` and fsyncs it; on failure records why in `poisoned`.
fn append_durably(
    file: &mut File,
    path: &Path,
    line: &[u8],
    poisoned: &mut Option<String>,
) -> Result<(), StoreError> {
    file.write_all(line)
        .and_then(|()| file.sync_data())
        .map_err(|source| {
            let context = format!("appending to {}", path.display());
            *poisoned = Some(format!("{context}: {source}"));
            StoreError::Io { context, source }
        })
}

impl StateStore for LogStore {
    /// Appends the record to `state.log` (an audit event to `audit.log` first), each
    /// fsynced before the next step.
    fn append(&mut self, record: &Record) -> Result<(), StoreError> {
        self.check_usable()?;
        let line = encode_line(record)?;
        if matches!(record, Record::Audit { .. }) {
            append_durably(
                &mut self.audit_file,
                &self.audit_path,
                &line,
                &mut self.poisoned,
            )?;
        }
        append_durably(&mut self.state_file, &self.path, &line, &mut self.poisoned)
    }

    /// Writes `state.to_records()` to `state.log.tmp`, fsyncs it, renames it over
    /// `state.log` and fsyncs the directory. `audit.log` is not touched.
    fn compact(&mut self, state: &State) -> Result<(), StoreError> {
        self.check_usable()?;
        let mut bytes = Vec::new();
        for record in state.to_records() {
            bytes.extend_from_slice(&encode_line(&record)?);
        }
        let tmp = self.dir.join(STATE_LOG_TMP);
        remove_if_exists(&tmp)?;
        // Opened for appending so that, once renamed, this handle *is* the new state log.
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(io_err(format!("creating {}", tmp.display())))?;
        if let Err(source) = file.write_all(&bytes).and_then(|()| file.sync_all()) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::Io {
                context: format!("writing {}", tmp.display()),
                source,
            });
        }
        if let Err(source) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::Io {
                context: format!("renaming {} over {}", tmp.display(), self.path.display()),
                source,
            });
        }
        // The old handle now points at an unlinked file: from here on, append to the new one.
        self.state_file = file;
        self.dir_handle.sync_all().map_err(|source| {
            let context = format!("fsync {} after compaction", self.dir.display());
            self.poisoned = Some(format!("{context}: {source}"));
            StoreError::Io { context, source }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn grant(id: &str, created: u64, expires: u64) -> Grant {
        Grant {
            id: id.into(),
            user: "alice@example.com".into(),
            resource: "orders".into(),
            created_at_ms: created,
            expires_at_ms: expires,
            granted_by: "bob@example.com".into(),
            reason: "incident 42".into(),
            request_id: None,
        }
    }

    fn request(id: &str, created: u64, status: RequestStatus) -> AccessRequest {
        AccessRequest {
            id: id.into(),
            user: "carol@example.com".into(),
            groups: vec!["dev".into()],
            resource: "billing".into(),
            duration_ms: 3_600_000,
            reason: "debug \"quoted\"\nmultiline".into(),
            created_at_ms: created,
            status,
        }
    }

    fn revocation(user: &str, at: u64) -> Revocation {
        Revocation {
            user: user.into(),
            resource: None,
            at_ms: at,
            by: "operator".into(),
            reason: "left the company".into(),
        }
    }

    fn approval(id: &str, session: &str, requested: u64) -> StatementApproval {
        StatementApproval {
            id: id.into(),
            session: session.into(),
            user: "erin@example.com".into(),
            groups: vec!["support".into()],
            resource: "billing".into(),
            rule: "writes-need-approval".into(),
            statement: "DELETE FROM invoices WHERE id = $1".into(),
            fingerprint: "0123456789abcdef".into(),
            class: "write".into(),
            requested_at_ms: requested,
            required: 2,
            approvals: vec![],
            status: ApprovalStatus::Pending,
            session_ended_at_ms: None,
        }
    }

    fn vote(by: &str, at: u64, scope: ApprovalScope) -> ApprovalVote {
        ApprovalVote {
            by: by.into(),
            at_ms: at,
            scope,
            reason: Some(format!("ok by {by}")),
        }
    }

    fn audit(n: u64) -> AuditEvent {
        AuditEvent {
            at_ms: 1_000 + n,
            actor: "operator".into(),
            action: "grant".into(),
            target: format!("user=u{n}"),
            detail: "ok".into(),
        }
    }

    /// A varied sequence of records touching every variant.
    fn sample_records() -> Vec<Record> {
        vec![
            Record::Audit { event: audit(1) },
            Record::RequestCreated {
                request: request("r1", 1_000, RequestStatus::Pending),
            },
            Record::RequestCreated {
                request: request("r2", 1_100, RequestStatus::Pending),
            },
            Record::RequestDecided {
                id: "r1".into(),
                status: RequestStatus::Approved {
                    by: "bob@example.com".into(),
                    grant_id: "g1".into(),
                    at_ms: 1_200,
                },
            },
            Record::GrantCreated {
                grant: grant("g1", 1_200, 5_000),
            },
            Record::GrantCreated {
                grant: grant("g2", 1_300, 9_000),
            },
            Record::GrantEnded {
                id: "g2".into(),
                at_ms: 1_400,
                by: "operator".into(),
                reason: "cut short".into(),
            },
            Record::Revoked {
                revocation: revocation("dave@example.com", 1_500),
            },
            Record::ApprovalRequested {
                approval: approval("a1", "s1", 1_600),
            },
            Record::ApprovalVoted {
                id: "a1".into(),
                vote: vote("bob@example.com", 1_700, ApprovalScope::Fingerprint),
            },
            Record::ApprovalRequested {
                approval: approval("a2", "s2", 1_650),
            },
            Record::ApprovalDecided {
                id: "a2".into(),
                status: ApprovalStatus::Withdrawn {
                    reason: "cancelled by the client".into(),
                    at_ms: 1_750,
                },
            },
            Record::ApprovalSessionEnded {
                session: "s2".into(),
                at_ms: 1_800,
            },
            Record::Audit { event: audit(2) },
        ]
    }

    /// Opens a store in `dir`, appends `records`, applying each, and returns the store and
    /// the in-memory state.
    fn write_records(dir: &Path, records: &[Record]) -> (LogStore, State) {
        let (mut store, mut state, _) = LogStore::open(dir).unwrap();
        for r in records {
            store.append(r).unwrap();
            state.apply(r);
        }
        (store, state)
    }

    fn append_raw(path: &Path, bytes: &[u8]) {
        let mut f = OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(bytes).unwrap();
    }

    #[test]
    fn replay_after_reopen_equals_the_state_before() {
        let dir = tempfile::tempdir().unwrap();
        let records = sample_records();
        let (store, state) = write_records(dir.path(), &records);
        assert_eq!(state.grants.len(), 1, "g2 ended, g1 remains");
        assert_eq!(state.audit.len(), 2);
        drop(store);

        let (store, replayed, recovery) = LogStore::open(dir.path()).unwrap();
        assert_eq!(replayed, state);
        assert_eq!(
            recovery,
            Recovery {
                records: records.len(),
                torn_tail_bytes: 0,
                audit_torn_tail_bytes: 0,
            }
        );
        assert_eq!(store.path(), dir.path().join(STATE_LOG));
        // Every line is `<8 hex> <json>` and the JSON is the record (readable with jq).
        let text = fs::read_to_string(store.path()).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(&first[8..9], " ");
        let v: serde_json::Value = serde_json::from_str(&first[9..]).unwrap();
        assert_eq!(v["type"], "audit");
    }

    #[test]
    fn appends_after_reopen_continue_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut state) = write_records(dir.path(), &sample_records()[..4]);
        drop(store);
        let (mut store, replayed, _) = LogStore::open(dir.path()).unwrap();
        assert_eq!(replayed, state);
        for r in &sample_records()[4..] {
            store.append(r).unwrap();
            state.apply(r);
        }
        drop(store);
        let (_, replayed, recovery) = LogStore::open(dir.path()).unwrap();
        assert_eq!(replayed, state);
        assert_eq!(recovery.records, sample_records().len());
    }

    /// Writes the sample, then `tail` by hand, and checks that reopening cuts exactly the
    /// tail and keeps everything before it.
    fn check_torn_tail(tail: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let (store, state) = write_records(dir.path(), &sample_records());
        let path = store.path().to_path_buf();
        drop(store);
        let good = fs::read(&path).unwrap();
        append_raw(&path, tail);

        let (mut store, replayed, recovery) = LogStore::open(dir.path()).unwrap();
        assert_eq!(replayed, state);
        assert_eq!(recovery.torn_tail_bytes, tail.len() as u64);
        assert_eq!(recovery.records, sample_records().len());
        assert_eq!(fs::read(&path).unwrap(), good, "only the tail was cut");

        // The log is clean again: a new append lands on a line of its own.
        let extra = Record::Audit { event: audit(99) };
        store.append(&extra).unwrap();
        drop(store);
        let (_, replayed, recovery) = LogStore::open(dir.path()).unwrap();
        let mut expected = state;
        expected.apply(&extra);
        assert_eq!(replayed, expected);
        assert_eq!(recovery.torn_tail_bytes, 0);
    }

    #[test]
    fn torn_tail_half_a_line_is_cut() {
        let line = encode_line(&Record::GrantCreated {
            grant: grant("g9", 1, 2),
        })
        .unwrap();
        check_torn_tail(&line[..line.len() / 2]);
    }

    #[test]
    fn torn_tail_garbage_last_line_is_cut() {
        check_torn_tail(b"\0\0\0\0garbage \xff\xfe not a record\n");
    }

    #[test]
    fn torn_tail_valid_line_with_bad_crc_is_cut() {
        let mut line = encode_line(&Record::GrantCreated {
            grant: grant("g9", 1, 2),
        })
        .unwrap();
        line[0] = if line[0] == b'0' { b'1' } else { b'0' };
        assert!(line.ends_with(b"\n"));
        check_torn_tail(&line);
    }

    #[test]
    fn complete_line_missing_only_its_newline_is_cut() {
        let line = encode_line(&Record::Audit { event: audit(7) }).unwrap();
        check_torn_tail(&line[..line.len() - 1]);
    }

    #[test]
    fn corruption_in_the_middle_is_an_error_and_the_file_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = write_records(dir.path(), &sample_records());
        let path = store.path().to_path_buf();
        drop(store);
        let mut bytes = fs::read(&path).unwrap();
        // Flip one byte of the JSON on line 3.
        let line3 = bytes
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(1)
            .map(|(i, _)| i + 1)
            .unwrap();
        bytes[line3 + 20] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();

        match LogStore::open(dir.path()) {
            Err(StoreError::Corrupt {
                path: p,
                line,
                reason,
            }) => {
                assert_eq!(p, path);
                assert_eq!(line, 3);
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert_eq!(fs::read(&path).unwrap(), bytes, "file must not be modified");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
    }

    #[test]
    fn unreadable_but_checksummed_last_line_is_an_error_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = write_records(dir.path(), &sample_records());
        let path = store.path().to_path_buf();
        drop(store);
        let json = br#"{"type":"from_the_future","x":1}"#;
        let mut line = format!("{:08x} ", crc32c::crc32c(json)).into_bytes();
        line.extend_from_slice(json);
        line.push(b'\n');
        append_raw(&path, &line);
        let before = fs::read(&path).unwrap();

        let err = LogStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { line, .. } if line == sample_records().len() + 1),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn compaction_preserves_state_and_shrinks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut state) = write_records(dir.path(), &sample_records());
        // Churn: many grants made and ended.
        for i in 0..50 {
            let id = format!("tmp{i}");
            for r in [
                Record::GrantCreated {
                    grant: grant(&id, 1, 10_000),
                },
                Record::GrantEnded {
                    id,
                    at_ms: 2,
                    by: "operator".into(),
                    reason: "done".into(),
                },
            ] {
                store.append(&r).unwrap();
                state.apply(&r);
            }
        }
        let before = fs::metadata(store.path()).unwrap().len();
        store.compact(&state).unwrap();
        let after = fs::metadata(store.path()).unwrap().len();
        assert!(after < before, "{after} < {before}");
        assert!(!dir.path().join(STATE_LOG_TMP).exists());
        assert_eq!(
            fs::metadata(store.path()).unwrap().mode() & 0o777,
            FILE_MODE
        );

        // Appends after compaction go to the new file.
        let extra = Record::Revoked {
            revocation: revocation("erin@example.com", 3_000),
        };
        store.append(&extra).unwrap();
        state.apply(&extra);
        drop(store);

        let (_, replayed, recovery) = LogStore::open(dir.path()).unwrap();
        assert_eq!(replayed, state);
        assert_eq!(recovery.records, state.to_records().len());
    }

    #[test]
    fn to_records_rebuilds_the_state() {
        let mut state = State::default();
        for r in sample_records() {
            state.apply(&r);
        }
        let mut rebuilt = State::default();
        for r in state.to_records() {
            rebuilt.apply(&r);
        }
        assert_eq!(rebuilt, state);
        assert!(!state.requests.is_empty() && !state.revocations.is_empty());
        assert_eq!(state.approvals.len(), 2);
        assert_eq!(state.approvals["a1"].approvals.len(), 1);
        assert_eq!(state.approvals["a2"].session_ended_at_ms, Some(1_800));
    }

    #[test]
    fn leftover_tmp_from_an_unfinished_compaction_is_ignored_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, state) = write_records(dir.path(), &sample_records());
        drop(store);
        fs::write(dir.path().join(STATE_LOG_TMP), b"half a compac").unwrap();
        let (_, replayed, _) = LogStore::open(dir.path()).unwrap();
        assert_eq!(replayed, state);
        assert!(!dir.path().join(STATE_LOG_TMP).exists());
    }

    #[test]
    fn prune_drops_what_no_longer_matters() {
        let now = 1_000_000;
        let keep = 10_000;
        let ttl = 5_000;
        let mut state = State::default();
        for r in [
            Record::GrantCreated {
                grant: grant("expired", 0, now - 1),
            },
            Record::GrantCreated {
                grant: grant("ends-now", 0, now),
            },
            Record::GrantCreated {
                grant: grant("active", 0, now + 1),
            },
            Record::GrantCreated {
                grant: grant("future", now + 10, now + 20),
            },
            Record::RequestCreated {
                request: request("old-pending", now - ttl - 1, RequestStatus::Pending),
            },
            Record::RequestCreated {
                request: request("fresh-pending", now - ttl, RequestStatus::Pending),
            },
            Record::RequestCreated {
                request: request(
                    "old-denied",
                    0,
                    RequestStatus::Denied {
                        by: "bob".into(),
                        reason: "no".into(),
                        at_ms: now - keep - 1,
                    },
                ),
            },
            Record::RequestCreated {
                request: request(
                    "recent-approved",
                    0,
                    RequestStatus::Approved {
                        by: "bob".into(),
                        grant_id: "active".into(),
                        at_ms: now - keep,
                    },
                ),
            },
            Record::Revoked {
                revocation: revocation("old", now - keep - 1),
            },
            Record::Revoked {
                revocation: revocation("recent", now - keep),
            },
        ] {
            state.apply(&r);
        }

        let produced = state.prune(now, keep, ttl);

        let grants: Vec<&str> = state.grants.keys().map(String::as_str).collect();
        assert_eq!(grants, ["active", "future"]);
        let active: Vec<&str> = state.active_grants(now).map(|g| g.id.as_str()).collect();
        assert_eq!(active, ["active"]);

        let expired = RequestStatus::Expired {
            at_ms: now - ttl - 1 + ttl,
        };
        assert_eq!(
            produced,
            vec![Record::RequestDecided {
                id: "old-pending".into(),
                status: expired.clone(),
            }]
        );
        assert_eq!(state.requests["old-pending"].status, expired);
        let requests: Vec<&str> = state.requests.keys().map(String::as_str).collect();
        assert_eq!(
            requests,
            ["fresh-pending", "old-pending", "recent-approved"]
        );
        let pending: Vec<&str> = state.pending_requests().map(|r| r.id.as_str()).collect();
        assert_eq!(pending, ["fresh-pending"]);

        let users: Vec<&str> = state.revocations.iter().map(|v| v.user.as_str()).collect();
        assert_eq!(users, ["recent"]);

        // Pruning again at the same time changes nothing and produces nothing.
        let again = state.clone();
        assert!(state.prune(now, keep, ttl).is_empty());
        assert_eq!(state, again);

        // Long after, the expired request goes too.
        state.prune(now + ttl + keep, keep, ttl);
        assert!(!state.requests.contains_key("old-pending"));
    }

    #[test]
    fn prune_records_persisted_then_replayed_give_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let records = [
            Record::RequestCreated {
                request: request("r", 0, RequestStatus::Pending),
            },
            Record::GrantCreated {
                grant: grant("g", 0, 50),
            },
        ];
        let (mut store, mut state) = write_records(dir.path(), &records);
        let produced = state.prune(1_000, 10_000, 100);
        assert_eq!(produced.len(), 1);
        for r in &produced {
            store.append(r).unwrap();
        }
        drop(store);
        let (_, mut replayed, _) = LogStore::open(dir.path()).unwrap();
        assert!(replayed.prune(1_000, 10_000, 100).is_empty());
        assert_eq!(replayed, state);
    }

    #[test]
    fn grant_ended_removes_the_grant_and_unknown_ids_are_ignored() {
        let mut state = State::default();
        state.apply(&Record::GrantCreated {
            grant: grant("g1", 0, 100),
        });
        state.apply(&Record::GrantCreated {
            grant: grant("g2", 0, 100),
        });
        assert_eq!(state.active_grants(50).count(), 2);
        state.apply(&Record::GrantEnded {
            id: "g1".into(),
            at_ms: 10,
            by: "operator".into(),
            reason: "revoked".into(),
        });
        assert!(!state.grants.contains_key("g1"));
        assert_eq!(state.active_grants(50).count(), 1);

        let before = state.clone();
        state.apply(&Record::GrantEnded {
            id: "nope".into(),
            at_ms: 10,
            by: "operator".into(),
            reason: "x".into(),
        });
        state.apply(&Record::RequestDecided {
            id: "nope".into(),
            status: RequestStatus::Expired { at_ms: 1 },
        });
        assert_eq!(state, before);

        // A revocation applied twice is held once.
        let rev = Record::Revoked {
            revocation: revocation("x", 1),
        };
        state.apply(&rev);
        state.apply(&rev);
        assert_eq!(state.revocations.len(), 1);
    }

    #[test]
    fn approvals_count_each_approver_once_and_keep_their_decision() {
        let mut state = State::default();
        state.apply(&Record::ApprovalRequested {
            approval: approval("a", "s", 10),
        });
        let first = vote("bob", 20, ApprovalScope::Fingerprint);
        for r in [
            Record::ApprovalVoted {
                id: "a".into(),
                vote: first.clone(),
            },
            // The same approver again (with another scope): still one approval.
            Record::ApprovalVoted {
                id: "a".into(),
                vote: vote("bob", 25, ApprovalScope::Statement),
            },
            Record::ApprovalVoted {
                id: "nope".into(),
                vote: vote("bob", 25, ApprovalScope::Statement),
            },
        ] {
            state.apply(&r);
        }
        let a = &state.approvals["a"];
        assert_eq!(a.approvals, vec![first]);
        assert!(a.is_pending() && a.decision().is_none());
        assert_eq!(state.pending_approvals().count(), 1);

        state.apply(&Record::ApprovalVoted {
            id: "a".into(),
            vote: vote("carol", 30, ApprovalScope::Fingerprint),
        });
        state.apply(&Record::ApprovalDecided {
            id: "a".into(),
            status: ApprovalStatus::Approved {
                at_ms: 30,
                scope: ApprovalScope::Fingerprint,
            },
        });
        let decision = state.approvals["a"].decision().expect("decided");
        assert!(decision.approved);
        assert_eq!(decision.scope, ApprovalScope::Fingerprint);
        assert_eq!(decision.approvers, ["bob", "carol"]);
        assert_eq!(
            decision.reason.as_deref(),
            Some("bob: ok by bob; carol: ok by carol")
        );
        assert_eq!(decision.decided_at_ms, 30);
        assert_eq!(state.pending_approvals().count(), 0);

        state.apply(&Record::ApprovalSessionEnded {
            session: "s".into(),
            at_ms: 40,
        });
        assert_eq!(state.approvals["a"].session_ended_at_ms, Some(40));
        // A later end of the same session keeps the first time.
        state.apply(&Record::ApprovalSessionEnded {
            session: "s".into(),
            at_ms: 50,
        });
        assert_eq!(state.approvals["a"].session_ended_at_ms, Some(40));

        // Ended requests are kept for `keep_ms`, pending ones whatever their age.
        state.apply(&Record::ApprovalRequested {
            approval: approval("old-pending", "s2", 0),
        });
        state.prune(30 + 100, 100, 1_000_000);
        assert!(state.approvals.contains_key("a"));
        state.prune(30 + 101, 100, 1_000_000);
        let left: Vec<&str> = state.approvals.keys().map(String::as_str).collect();
        assert_eq!(left, ["old-pending"]);
    }

    #[test]
    fn the_snapshot_carries_recent_decisions_and_lasting_approvals_of_live_sessions() {
        let timeout = 600_000;
        let decided = 1_000_000;
        let mut state = State::default();
        let approved = |scope| ApprovalStatus::Approved {
            at_ms: decided,
            scope,
        };
        for (id, session, status) in [
            ("once", "s1", approved(ApprovalScope::Statement)),
            ("every", "s1", approved(ApprovalScope::Fingerprint)),
            (
                "no",
                "s1",
                ApprovalStatus::Denied {
                    by: "olga".into(),
                    reason: None,
                    at_ms: decided,
                },
            ),
            ("ended", "s2", approved(ApprovalScope::Fingerprint)),
            ("waiting", "s1", ApprovalStatus::Pending),
            (
                "gone",
                "s1",
                ApprovalStatus::Withdrawn {
                    reason: "timed out".into(),
                    at_ms: decided,
                },
            ),
        ] {
            state.apply(&Record::ApprovalRequested {
                approval: approval(id, session, 0),
            });
            state.apply(&Record::ApprovalDecided {
                id: id.into(),
                status,
            });
        }
        state.apply(&Record::ApprovalSessionEnded {
            session: "s2".into(),
            at_ms: decided,
        });
        let ids = |now| -> Vec<String> {
            state
                .carried_decisions(now, timeout)
                .into_iter()
                .map(|d| d.id)
                .collect()
        };
        let window_end = decided + timeout + DECISION_MARGIN_MS;
        assert_eq!(ids(decided), ["every", "no", "once"]);
        assert_eq!(ids(window_end), ["every", "no", "once"]);
        assert_eq!(ids(window_end + 1), ["every"]);
        let lasting_end = decided + FINGERPRINT_APPROVAL_MAX_AGE_MS;
        assert_eq!(ids(lasting_end), ["every"]);
        assert!(ids(lasting_end + 1).is_empty());
    }

    #[test]
    fn narrowest_scope_wins() {
        use ApprovalScope::{Fingerprint, Statement};
        assert_eq!(Fingerprint.narrowest(Fingerprint), Fingerprint);
        assert_eq!(Fingerprint.narrowest(Statement), Statement);
        assert_eq!(Statement.narrowest(Fingerprint), Statement);
        assert_eq!(ApprovalScope::default(), Statement);
    }

    #[test]
    fn audit_tail_is_bounded_oldest_first() {
        let mut state = State::default();
        for n in 0..(AUDIT_TAIL as u64 + 5) {
            state.apply(&Record::Audit { event: audit(n) });
        }
        assert_eq!(state.audit.len(), AUDIT_TAIL);
        assert_eq!(state.audit.front(), Some(&audit(5)));
        assert_eq!(state.audit.back(), Some(&audit(AUDIT_TAIL as u64 + 4)));
    }

    #[test]
    fn files_are_0600_and_a_created_dir_is_0700() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state").join("control");
        let (store, _, _) = LogStore::open(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, DIR_MODE);
        assert_eq!(
            fs::metadata(store.path()).unwrap().mode() & 0o777,
            FILE_MODE
        );
        assert_eq!(
            fs::metadata(store.audit_path()).unwrap().mode() & 0o777,
            FILE_MODE
        );
        drop(store);

        // A looser mode found on open is tightened.
        fs::set_permissions(dir.join(STATE_LOG), Permissions::from_mode(0o644)).unwrap();
        let (store, _, _) = LogStore::open(&dir).unwrap();
        assert_eq!(
            fs::metadata(store.path()).unwrap().mode() & 0o777,
            FILE_MODE
        );
    }

    #[test]
    fn audit_log_gets_every_event_and_survives_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut state) = write_records(dir.path(), &sample_records());
        let n = AUDIT_TAIL as u64 + 10;
        for i in 0..n {
            let r = Record::Audit { event: audit(i) };
            store.append(&r).unwrap();
            state.apply(&r);
        }
        store.compact(&state).unwrap();
        let extra = Record::Audit { event: audit(n) };
        store.append(&extra).unwrap();
        state.apply(&extra);
        let audit_path = store.audit_path().to_path_buf();
        drop(store);

        let text = fs::read_to_string(&audit_path).unwrap();
        let events: Vec<AuditEvent> = text
            .lines()
            .map(|l| match decode_line(l.as_bytes()) {
                Ok(Record::Audit { event }) => event,
                _ => panic!("audit.log holds a non-audit line: {l}"),
            })
            .collect();
        let mut expected = vec![audit(1), audit(2)];
        expected.extend((0..=n).map(audit));
        assert_eq!(events, expected);

        let (_, replayed, _) = LogStore::open(dir.path()).unwrap();
        assert_eq!(replayed, state);
        assert_eq!(replayed.audit.len(), AUDIT_TAIL);
        assert_eq!(replayed.audit.back(), Some(&audit(n)));
    }

    #[test]
    fn torn_audit_log_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (store, state) = write_records(dir.path(), &sample_records());
        let audit_path = store.audit_path().to_path_buf();
        drop(store);
        let good = fs::read(&audit_path).unwrap();
        let line = encode_line(&Record::Audit { event: audit(5) }).unwrap();
        append_raw(&audit_path, &line[..line.len() - 3]);

        let (mut store, replayed, recovery) = LogStore::open(dir.path()).unwrap();
        assert_eq!(replayed, state);
        assert_eq!(recovery.audit_torn_tail_bytes, (line.len() - 3) as u64);
        assert_eq!(fs::read(&audit_path).unwrap(), good);

        store.append(&Record::Audit { event: audit(6) }).unwrap();
        let text = fs::read_to_string(&audit_path).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().all(|l| decode_line(l.as_bytes()).is_ok()));
    }

    #[test]
    fn last_line_start_finds_lines_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut bytes = vec![b'a'; 70_000];
        bytes.push(b'\n');
        bytes.extend(vec![b'b'; 100_000]);
        bytes.push(b'\n');
        fs::write(&path, &bytes).unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(last_line_start(&f, bytes.len() as u64).unwrap(), 70_001);
        assert_eq!(last_line_start(&f, 70_001).unwrap(), 0);
        assert_eq!(last_line_start(&f, 1).unwrap(), 0);
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = LogStore::open(dir.path()).unwrap();
        let err = LogStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        drop(store);
        assert!(LogStore::open(dir.path()).is_ok());
    }

    #[test]
    fn a_failed_write_poisons_the_store_until_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = write_records(dir.path(), &sample_records()[..2]);
        // Swap in a read-only handle so the next write fails.
        store.state_file = File::open(store.path()).unwrap();
        let r = Record::Revoked {
            revocation: revocation("x", 1),
        };
        assert!(matches!(store.append(&r), Err(StoreError::Io { .. })));
        assert!(matches!(store.append(&r), Err(StoreError::Poisoned { .. })));
        assert!(matches!(
            store.compact(&State::default()),
            Err(StoreError::Poisoned { .. })
        ));
        drop(store);
        let (mut store, state, _) = LogStore::open(dir.path()).unwrap();
        store.append(&r).unwrap();
        assert_eq!(state.requests.len(), 1);
    }
}
