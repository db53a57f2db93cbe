//! The statement audit trail: one JSON line per statement a client sent — who, where,
//! what (fingerprint, class, normalized text), the policy decision and the rule that made
//! it, any approval, and how it ended (duration, rows from `CommandComplete`, SQLSTATE).
//!
//! Each worker appends to its own file (`state_dir/audit/statements-w<N>.jsonl`), so no
//! worker waits on another. Lines are formatted into a worker-local buffer and written
//! when it fills or on the gate's tick (every 100 ms): at most one tick of events is lost
//! if the process is killed. Statement text is normalized (literals replaced) unless the
//! policy says `audit_literals = true`.
//!
//! [`Pending`] pairs each forwarded statement with the backend's answer to it: answers
//! come back in the order statements were sent, one `CommandComplete`, `ErrorResponse`,
//! `EmptyQueryResponse`, `PortalSuspended` or `FunctionCallResponse` each; statements
//! that got none by their `ReadyForQuery` were skipped (an earlier error aborted them).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sluice_classify::{Class, Flag};
use sluice_control::policy::StatementAccess;
use tracing::{error, warn};

use crate::statements::Audited;

/// Buffer size at which events are written without waiting for the tick.
const FLUSH_AT: usize = 64 * 1024;

/// A worker's statement audit file.
pub struct AuditLog {
    path: PathBuf,
    file: RefCell<Option<File>>,
    buf: RefCell<Vec<u8>>,
    write_failures: Cell<u64>,
}

impl AuditLog {
    /// Opens (appending) worker `worker`'s file under `state_dir/audit`. A file that cannot
    /// be opened is logged; events are then counted as lost, never silently.
    pub fn open(state_dir: &Path, worker: usize) -> AuditLog {
        let dir = state_dir.join("audit");
        let path = dir.join(format!("statements-w{worker}.jsonl"));
        let file = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .and_then(|_| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(&path)
            })
            .map_err(|e| error!(path = %path.display(), error = %e, "cannot open the statement audit file; statement events will be lost"))
            .ok();
        AuditLog {
            path,
            file: RefCell::new(file),
            buf: RefCell::new(Vec::with_capacity(FLUSH_AT + 4096)),
            write_failures: Cell::new(0),
        }
    }

    /// Where the events go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event.
    pub fn record(&self, event: &StatementEvent<'_>) {
        let full = {
            let mut buf = self.buf.borrow_mut();
            if serde_json::to_writer(&mut *buf, event).is_ok() {
                buf.push(b'\n');
            }
            buf.len() >= FLUSH_AT
        };
        if full {
            self.flush();
        }
    }

    /// Writes buffered events to the file.
    pub fn flush(&self) {
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() {
            return;
        }
        let mut file = self.file.borrow_mut();
        match file.as_mut() {
            Some(f) => {
                if let Err(e) = f.write_all(&buf) {
                    let failures = self.write_failures.get() + 1;
                    self.write_failures.set(failures);
                    if failures.is_power_of_two() {
                        warn!(path = %self.path.display(), error = %e, failures, "could not write statement audit events");
                    }
                }
            }
            None => self.write_failures.set(self.write_failures.get() + 1),
        }
        buf.clear();
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Who and where, for every event of a session.
#[derive(Debug, Clone)]
pub struct SessionFacts {
    /// Session ID.
    pub session: String,
    /// Principal.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Resource.
    pub resource: String,
}

/// One line of the statement audit file.
#[derive(Debug, Serialize)]
pub struct StatementEvent<'a> {
    /// When the statement was sent (ms since the epoch).
    pub time_ms: u64,
    /// Session ID.
    pub session: &'a str,
    /// Principal.
    pub user: &'a str,
    /// Groups.
    pub groups: &'a [String],
    /// Resource.
    pub resource: &'a str,
    /// Fingerprint (16 hex digits).
    #[serde(serialize_with = "hex16")]
    pub fingerprint: u64,
    /// Statement class.
    pub class: Class,
    /// Command (`SELECT`, `DROP TABLE`, ...).
    pub command: &'a str,
    /// Flags.
    #[serde(serialize_with = "flag_names")]
    pub flags: sluice_classify::Flags,
    /// Tables.
    pub tables: &'a [String],
    /// `allow`, `deny`, or for held statements `approved` / `refused`.
    pub decision: &'static str,
    /// The statement rule that decided (`null`: no rule matched, default deny).
    pub rule: Option<&'a str>,
    /// Approval request ID, when the statement was held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<&'a str>,
    /// Who approved (or refused) it.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub approvers: &'a [String],
    /// From sending the statement to the backend's answer, in µs (including any wait for
    /// approval).
    pub duration_us: u64,
    /// Rows affected or returned, from `CommandComplete`.
    pub rows: Option<u64>,
    /// SQLSTATE of the error, if it failed or was refused.
    pub sqlstate: Option<&'a str>,
    /// `completed`, `failed`, `refused` or `skipped` (not run: an earlier statement of its
    /// query string or pipeline failed).
    pub outcome: &'static str,
    /// Statement text: normalized (literals replaced) unless policy keeps literals.
    pub statement: &'a str,
}

fn hex16<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:016x}"))
}

fn flag_names<S: serde::Serializer>(v: &sluice_classify::Flags, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(Flag::as_str))
}

/// How a held statement was settled.
#[derive(Debug, Clone)]
pub struct Approval {
    /// Request ID.
    pub id: String,
    /// Who decided.
    pub approvers: Vec<String>,
    /// Whether it was approved.
    pub approved: bool,
}

/// A statement sent to the backend (or refused in its place), awaiting its answer.
#[derive(Debug)]
pub struct PendingStatement {
    /// Sync window it was sent in.
    pub window: u64,
    /// What was judged.
    pub audited: Audited,
    /// The approval, when it was held.
    pub approval: Option<Approval>,
    /// The raw text, when policy keeps literals.
    pub raw: Option<String>,
    /// When it was sent.
    pub sent: Instant,
    /// Wall-clock send time (ms since the epoch).
    pub sent_ms: u64,
    /// Whether the gateway refused it (its answer is our error).
    pub refused: bool,
}

/// A session's statements in flight, oldest first.
#[derive(Debug, Default)]
pub struct Pending {
    queue: VecDeque<PendingStatement>,
}

/// The backend's answer to one statement.
#[derive(Debug, Clone, Copy)]
pub enum Answer<'a> {
    /// `CommandComplete` with its tag.
    Complete(&'a [u8]),
    /// `ErrorResponse` with its SQLSTATE.
    Error(&'a str),
    /// `EmptyQueryResponse`, `PortalSuspended` or `FunctionCallResponse`.
    Other,
}

impl Pending {
    /// Queues a statement.
    pub fn push(&mut self, statement: PendingStatement) {
        self.queue.push_back(statement);
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The backend answered the oldest statement.
    pub fn answer(&mut self, answer: Answer<'_>, facts: &SessionFacts, log: &AuditLog) {
        if let Some(statement) = self.queue.pop_front() {
            let (outcome, rows, sqlstate) = match answer {
                Answer::Complete(tag) => ("completed", rows_from_tag(tag), None),
                Answer::Error(code) if statement.refused => ("refused", None, Some(code)),
                Answer::Error(code) => ("failed", None, Some(code)),
                Answer::Other => ("completed", None, None),
            };
            emit(&statement, outcome, rows, sqlstate, facts, log);
        }
    }

    /// A `ReadyForQuery` closed `window`: whatever of it got no answer was skipped.
    pub fn window_closed(&mut self, window: u64, facts: &SessionFacts, log: &AuditLog) {
        while self.queue.front().is_some_and(|s| s.window <= window) {
            if let Some(statement) = self.queue.pop_front() {
                let outcome = if statement.refused {
                    "refused"
                } else {
                    "skipped"
                };
                let sqlstate = statement.refused.then_some(crate::statements::REFUSED);
                emit(&statement, outcome, None, sqlstate, facts, log);
            }
        }
    }

    /// The session ended: what is still in flight never got an answer.
    pub fn abandon(&mut self, facts: &SessionFacts, log: &AuditLog) {
        while let Some(statement) = self.queue.pop_front() {
            let outcome = if statement.refused {
                "refused"
            } else {
                "skipped"
            };
            emit(&statement, outcome, None, None, facts, log);
        }
    }
}

fn emit(
    statement: &PendingStatement,
    outcome: &'static str,
    rows: Option<u64>,
    sqlstate: Option<&str>,
    facts: &SessionFacts,
    log: &AuditLog,
) {
    let audited = &statement.audited;
    let judged = audited.statement();
    let decision = match (&statement.approval, &audited.decision.access) {
        (Some(a), _) if a.approved => "approved",
        (Some(_), _) => "refused",
        (None, StatementAccess::Allow) => "allow",
        (None, StatementAccess::Deny) => "deny",
        // A held statement always has its approval by the time it is sent.
        (None, StatementAccess::Request) => "refused",
    };
    let text = statement
        .raw
        .as_deref()
        .unwrap_or(&audited.classification.normalized);
    log.record(&StatementEvent {
        time_ms: statement.sent_ms,
        session: &facts.session,
        user: &facts.user,
        groups: &facts.groups,
        resource: &facts.resource,
        fingerprint: audited.classification.fingerprint,
        class: judged.map_or(Class::Unknown, |s| s.class),
        command: judged.map_or("UNKNOWN", |s| s.command.as_str()),
        flags: audited.decision.flags,
        tables: judged.map_or(&[][..], |s| &s.tables),
        decision,
        rule: audited.decision.rule.as_deref(),
        approval: statement.approval.as_ref().map(|a| a.id.as_str()),
        approvers: statement
            .approval
            .as_ref()
            .map_or(&[][..], |a| &a.approvers),
        duration_us: statement.sent.elapsed().as_micros() as u64,
        rows,
        sqlstate,
        outcome,
        statement: text,
    });
}

/// Rows from a `CommandComplete` tag: its last word, when it is a number (`SELECT 5`,
/// `INSERT 0 3`, `UPDATE 2`, `COPY 10`).
pub fn rows_from_tag(tag: &[u8]) -> Option<u64> {
    let tag = tag.strip_suffix(&[0]).unwrap_or(tag);
    let last = tag.rsplit(|&b| b == b' ').next()?;
    if last.is_empty() || !last.iter().all(u8::is_ascii_digit) || last.len() == tag.len() {
        return None;
    }
    std::str::from_utf8(last).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_from_the_last_number_of_the_tag() {
        assert_eq!(rows_from_tag(b"SELECT 5\0"), Some(5));
        assert_eq!(rows_from_tag(b"INSERT 0 3\0"), Some(3));
        assert_eq!(rows_from_tag(b"UPDATE 12"), Some(12));
        assert_eq!(rows_from_tag(b"CREATE TABLE\0"), None);
        assert_eq!(rows_from_tag(b"BEGIN"), None);
        assert_eq!(rows_from_tag(b"42"), None);
        assert_eq!(rows_from_tag(b""), None);
    }
}
