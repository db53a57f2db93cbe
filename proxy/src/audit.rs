//! The statement audit trail: one JSON line per statement a client sent — who, where,
//! what (fingerprint, class, normalized text), the policy decision and the rule that made
//! it, any approval, and how it ended (duration, rows from `CommandComplete`, SQLSTATE).
//!
//! Each worker appends to its own file (`state_dir/audit/statements-w<N>.jsonl`), so no
//! worker waits on another. Lines are formatted into a worker-local buffer and handed to
//! the worker's writer thread when it fills or on the gate's tick (every 100 ms): at most
//! one tick of events is lost if the process is killed. Statement text is normalized (literals replaced) unless the
//! policy says `audit_literals = true`.
//!
//! [`Pending`] pairs each forwarded statement with the backend's answer to it: answers
//! come back in the order statements were sent, one `CommandComplete`, `ErrorResponse`,
//! `EmptyQueryResponse`, `PortalSuspended` or `FunctionCallResponse` each; statements
//! that got none by their `ReadyForQuery` were skipped (an earlier error aborted them).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sluice_classify::{Class, Flag};
use sluice_control::policy::StatementAccess;
use tracing::{error, warn};

use crate::statements::Audited;

/// Buffer size at which events are handed to the writer without waiting for the tick.
const FLUSH_AT: usize = 64 * 1024;
/// Buffers in flight to the writer thread; when they are all taken the worker waits (the
/// disk slows the gateway down rather than events being dropped).
const IN_FLIGHT: usize = 8;

/// A worker's statement audit file. Formatting happens on the worker; the file is written
/// by a thread of its own, so a slow disk never blocks the worker inside a system call
/// (only, once [`IN_FLIGHT`] buffers are queued, on handing over the next one).
pub struct AuditLog {
    path: PathBuf,
    buf: RefCell<Vec<u8>>,
    writer: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Buffers the writer has emptied, for reuse.
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    /// The worker's session recorder: each event also goes into the session's recording
    /// as a decision record (what `sluice audit` searches).
    recorder: Option<sluice_recorder::RecorderHandle>,
}

impl AuditLog {
    /// Opens (appending) worker `worker`'s file under `state_dir/audit`. A file that cannot
    /// be opened or written is logged (with a count of the events lost), never skipped
    /// silently.
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
        let (writer, queue) = std::sync::mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
        let (recycle, spare) = std::sync::mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
        let thread_path = path.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sluice-audit-w{worker}"))
            .spawn(move || write_events(file, thread_path, queue, recycle))
            .map_err(|e| error!(error = %e, "cannot start the statement audit writer; statement events will be lost"))
            .ok();
        AuditLog {
            path,
            buf: RefCell::new(Vec::with_capacity(FLUSH_AT + 4096)),
            writer: thread.as_ref().map(|_| writer),
            thread,
            spare,
            recorder: None,
        }
    }

    /// Also records each event as a decision in the session's recording.
    pub fn set_recorder(&mut self, recorder: Option<sluice_recorder::RecorderHandle>) {
        self.recorder = recorder;
    }

    /// Where the events go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event, written by `write` into the worker's buffer (one JSON object; the
    /// newline is added here).
    fn record(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let full = {
            let mut buf = self.buf.borrow_mut();
            write(&mut buf);
            buf.push(b'\n');
            buf.len() >= FLUSH_AT
        };
        if full {
            self.flush();
        }
    }

    /// Hands the buffered events to the writer thread.
    pub fn flush(&self) {
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() {
            return;
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(FLUSH_AT + 4096));
        let full = std::mem::replace(&mut *buf, next);
        match &self.writer {
            Some(writer) => {
                if writer.send(full).is_err() {
                    error!(path = %self.path.display(), "the statement audit writer has stopped; statement events are lost");
                }
            }
            None => {
                warn!(path = %self.path.display(), bytes = full.len(), "statement audit events lost: no writer")
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.flush();
        // Closing the channel lets the writer finish what is queued and stop.
        self.writer = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: appends each buffer to the file, then offers it back for reuse.
fn write_events(
    mut file: Option<File>,
    path: PathBuf,
    queue: std::sync::mpsc::Receiver<Vec<u8>>,
    recycle: std::sync::mpsc::SyncSender<Vec<u8>>,
) {
    let mut failures: u64 = 0;
    for mut events in queue {
        let written = match file.as_mut() {
            Some(f) => f.write_all(&events),
            None => Err(std::io::Error::other("the audit file is not open")),
        };
        if let Err(e) = written {
            failures += 1;
            let lines = events.iter().filter(|&&b| b == b'\n').count();
            if failures.is_power_of_two() {
                error!(path = %path.display(), error = %e, lines, failures, "could not write statement audit events; they are lost");
            }
        }
        events.clear();
        let _ = recycle.try_send(events);
    }
}

/// Who and where, for every event of a session.
#[derive(Debug, Clone)]
pub struct SessionFacts {
    /// Session ID.
    pub session: String,
    /// The same, as the recording keys it.
    pub id: sluice_recorder::Uuid,
    /// Principal.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Resource.
    pub resource: String,
    /// `"session":…,"user":…,"groups":[…],"resource":…` as JSON, written once per session
    /// rather than once per statement.
    json: Vec<u8>,
    /// Where the session's statements are counted (`None` in unit tests).
    pub meter: Option<SessionMeter>,
}

/// A session's link to its worker's metrics: counters, histograms and the fingerprint
/// table, for the resource it uses.
#[derive(Clone)]
pub struct SessionMeter {
    /// The worker's metrics.
    pub metrics: std::sync::Arc<crate::metrics::WorkerMetrics>,
    /// The worker's fingerprint table.
    pub top: std::rc::Rc<RefCell<crate::metrics::StatementTop>>,
    /// The session's resource, as an index into `metrics.resources`.
    pub resource: usize,
}

impl std::fmt::Debug for SessionMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionMeter")
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

impl SessionMeter {
    /// The resource's counters.
    pub fn resource(&self) -> Option<&crate::metrics::ResourceMetrics> {
        self.metrics.resources.get(self.resource)
    }
}

impl SessionFacts {
    /// Facts for a session.
    pub fn new(session: String, user: String, groups: Vec<String>, resource: String) -> Self {
        let mut json = Vec::with_capacity(128);
        json.extend_from_slice(b"\"session\":");
        json_str(&mut json, &session);
        json.extend_from_slice(b",\"user\":");
        json_str(&mut json, &user);
        json.extend_from_slice(b",\"groups\":");
        json_list(&mut json, groups.iter().map(String::as_str));
        json.extend_from_slice(b",\"resource\":");
        json_str(&mut json, &resource);
        SessionFacts {
            id: sluice_recorder::Uuid::parse_str(&session).unwrap_or_default(),
            session,
            user,
            groups,
            resource,
            json,
            meter: None,
        }
    }
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

/// Writes one event line. Hand-written rather than through serde: it runs once per
/// statement on the worker, and the session's own fields are formatted once per session.
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
    let duration_us = statement.sent.elapsed().as_micros() as u64;
    if let Some(meter) = &facts.meter {
        let class = judged.map_or(Class::Unknown, |s| s.class);
        let failed = outcome == "failed";
        if let Some(resource) = meter.resource() {
            let counted = match decision {
                "allow" => crate::metrics::Decision::Allow,
                "deny" => crate::metrics::Decision::Deny,
                "approved" => crate::metrics::Decision::Approved,
                _ => crate::metrics::Decision::Rejected,
            };
            resource.statement(class, counted);
            if failed {
                resource.statement_errors.inc();
            }
            resource.rows.add(rows.unwrap_or(0));
        }
        meter.top.borrow_mut().statement(
            audited.classification.fingerprint,
            &facts.resource,
            class,
            &audited.classification.normalized,
            failed,
            rows.unwrap_or(0),
            duration_us,
        );
    }
    let mut number = itoa::Buffer::new();
    log.record(|out| {
        out.extend_from_slice(b"{\"time_ms\":");
        out.extend_from_slice(number.format(statement.sent_ms).as_bytes());
        out.push(b',');
        out.extend_from_slice(&facts.json);
        out.extend_from_slice(b",\"fingerprint\":\"");
        out.extend_from_slice(&format_hex(audited.classification.fingerprint));
        out.extend_from_slice(b"\",\"class\":\"");
        out.extend_from_slice(
            judged
                .map_or(Class::Unknown, |s| s.class)
                .as_str()
                .as_bytes(),
        );
        out.extend_from_slice(b"\",\"command\":");
        json_str(out, judged.map_or("UNKNOWN", |s| s.command.as_str()));
        out.extend_from_slice(b",\"flags\":");
        json_list(out, audited.decision.flags.iter().map(Flag::as_str));
        out.extend_from_slice(b",\"tables\":");
        json_list(
            out,
            judged
                .map_or(&[][..], |s| &s.tables)
                .iter()
                .map(String::as_str),
        );
        out.extend_from_slice(b",\"decision\":\"");
        out.extend_from_slice(decision.as_bytes());
        out.extend_from_slice(b"\",\"rule\":");
        match audited.decision.rule.as_deref() {
            Some(rule) => json_str(out, rule),
            None => out.extend_from_slice(b"null"),
        }
        if let Some(approval) = &statement.approval {
            out.extend_from_slice(b",\"approval\":");
            json_str(out, &approval.id);
            out.extend_from_slice(b",\"approvers\":");
            json_list(out, approval.approvers.iter().map(String::as_str));
        }
        out.extend_from_slice(b",\"duration_us\":");
        out.extend_from_slice(number.format(duration_us).as_bytes());
        out.extend_from_slice(b",\"rows\":");
        match rows {
            Some(rows) => out.extend_from_slice(number.format(rows).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"sqlstate\":");
        match sqlstate {
            Some(code) => json_str(out, code),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"outcome\":\"");
        out.extend_from_slice(outcome.as_bytes());
        out.extend_from_slice(b"\",\"statement\":");
        json_str(out, text);
        out.push(b'}');
    });
    if let Some(recorder) = &log.recorder {
        let verdict = match decision {
            "allow" | "approved" => sluice_recorder::Verdict::Allow,
            _ => sluice_recorder::Verdict::Deny,
        };
        let mut reason = format!("{decision}; {outcome}");
        if let Some(code) = sqlstate {
            reason.push_str("; sqlstate ");
            reason.push_str(code);
        }
        if let Some(rows) = rows {
            reason.push_str(&format!("; {rows} rows"));
        }
        if let Some(approval) = &statement.approval {
            reason.push_str(&format!("; approval {}", approval.id));
        }
        let (mono_us, wall_us) = crate::recording::now_us();
        // A failure here also fails the session's next client or server record, which
        // ends the session; the decision itself is still in the statement audit file.
        let _ = recorder.append(sluice_recorder::Record {
            session: facts.id,
            mono_us,
            wall_us,
            kind: sluice_recorder::RecordKind::Decision(sluice_recorder::Decision {
                statement: text.to_owned(),
                class: judged
                    .map_or(Class::Unknown, |s| s.class)
                    .as_str()
                    .to_owned(),
                verdict,
                rule: audited.decision.rule.as_deref().map(str::to_owned),
                reason: Some(reason),
            }),
        });
    }
}

fn format_hex(value: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = DIGITS[((value >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// A JSON string: quote, backslash and control characters escaped (the text is valid UTF-8
/// already).
fn json_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn json_list<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a str>) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, item);
    }
    out.push(b']');
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
    fn strings_are_escaped_as_json_and_facts_parse() {
        let mut out = Vec::new();
        json_str(&mut out, "a\"b\\c\nd\u{1}é");
        let back: String = serde_json::from_slice(&out).expect("valid JSON string");
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
        let facts = SessionFacts::new(
            "s1".into(),
            "bob \"the\" builder".into(),
            vec!["support".into(), "a\\b".into()],
            "shop".into(),
        );
        let mut object = b"{".to_vec();
        object.extend_from_slice(&facts.json);
        object.push(b'}');
        let object: serde_json::Value = serde_json::from_slice(&object).expect("valid JSON");
        assert_eq!(object["user"], "bob \"the\" builder");
        assert_eq!(object["groups"][1], "a\\b");
        assert_eq!(&format_hex(0x0123_4567_89ab_cdef), b"0123456789abcdef");
    }

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
