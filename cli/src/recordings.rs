//! The audit side of session recordings, offline from the recording directory
//! (`[recording] dir`, default `<control.state_dir>/recordings`; control need not run):
//!
//! - `sluice sessions list`: one line per recorded session ([`Archive::sessions`]).
//! - `sluice replay ID`: a session as its user saw it, decoded from the recorded
//!   PostgreSQL messages (the client's, and the server's *after masking*), as psql-like
//!   text or as one JSON object per event.
//! - `sluice audit --statements`: the statement search, extended with `--grep`, `--since`,
//!   `--until` and the recordings' Decision records (see [`statements`] for how the two
//!   sources are merged).
//! - `sluice audit verify`: [`sluice_recorder::verify`] over the directory.
//! - `sluice audit export`: recorded decisions and session starts/ends as JSON lines, for
//!   a SIEM.
//!
//! Everything shown comes from recordings written by the gateway, which masked values
//! before recording them; this module never sees more than the recorded user saw. Text
//! that came from a session (statements, cell values, messages) is passed through
//! [`clean`] before it reaches a terminal.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_codecs::backend::{self, BackendMessage, FieldDescription, Fields};
use sluice_codecs::frontend::{self, FrontendMessage};
use sluice_codecs::{Decode, Limits};
use sluice_recorder::{
    Approval, ApprovalOutcome, Archive, Decision, Record, RecordKind, Regex, SearchQuery,
    SegmentReader, SessionEnd, SessionFilter, SessionStart, SessionSummary, Uuid, Verdict,
};

use crate::output::{clean, print, print_json, span, Table};

// ---------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------

/// `sluice sessions`.
#[derive(clap::Subcommand)]
pub enum SessionsCommand {
    /// Recorded sessions, oldest first: ID, user, resource, start (UTC), duration,
    /// statements, bytes in/out, and how it ended ("live" while it runs).
    List(ListArgs),
}

/// `sluice sessions list`.
#[derive(clap::Args)]
pub struct ListArgs {
    /// Only this user's sessions.
    #[arg(long)]
    pub user: Option<String>,
    /// Only sessions on this resource.
    #[arg(long)]
    pub resource: Option<String>,
    /// Only sessions with activity at or after this time: RFC 3339
    /// (2026-03-01T09:30:00Z, 2026-03-01T10:30:00+01:00, 2026-03-01) or that long ago
    /// (15m, 2h, 1d).
    #[arg(long, value_name = "TIME", value_parser = time_arg)]
    pub since: Option<u64>,
    /// Only sessions with activity at or before this time (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = time_arg)]
    pub until: Option<u64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `sluice replay`.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The session's ID as `sluice sessions list` shows it (a unique prefix will do).
    pub session: String,
    /// Replay in time: sleep the recorded gaps between events divided by N (1 = as it
    /// happened, 10 = ten times faster).
    #[arg(long, value_name = "N", conflicts_with = "instant", value_parser = speed_arg)]
    pub speed: Option<f64>,
    /// Print everything at once, without waiting (the default).
    #[arg(long)]
    pub instant: bool,
    /// `text`: psql-like, for people; `json`: one JSON object per event, for tools.
    #[arg(long, value_enum, default_value_t = ReplayFormat::Text)]
    pub format: ReplayFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayFormat {
    Text,
    Json,
}

/// `sluice audit` with its flags (control's events, or `--statements`) or one of the
/// recording subcommands. The flags live in [`crate::admin::AuditArgs`] and
/// [`StatementSearch`]; a subcommand cannot be combined with them.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditCli {
    #[command(flatten)]
    pub args: crate::admin::AuditArgs,
    #[command(flatten)]
    pub search: StatementSearch,
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
}

/// Search options of `sluice audit --statements` beyond the per-field filters.
#[derive(clap::Args, Default)]
pub struct StatementSearch {
    /// Only statements whose (masked, normalized) text matches this regular expression,
    /// case-insensitively.
    #[arg(long, value_name = "REGEX", requires = "statements")]
    pub grep: Option<String>,
    /// Only statements at or after this time: RFC 3339 or that long ago (15m, 2h, 1d).
    #[arg(long, value_name = "TIME", value_parser = time_arg, requires = "statements")]
    pub since: Option<u64>,
    /// Only statements at or before this time (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = time_arg, requires = "statements")]
    pub until: Option<u64>,
    /// Where statements come from: `merged` (default) takes the gateway's statement
    /// events and adds the recorded decisions of sessions those events do not cover;
    /// `events` or `recordings` uses one source only.
    #[arg(long, value_enum, requires = "statements")]
    pub source: Option<StatementSource>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum StatementSource {
    Merged,
    Events,
    Recordings,
}

/// `sluice audit verify|export`.
#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Check the recordings for tampering and damage: every block checksum, every sealed
    /// segment's chain hash and link to its predecessor, sequence gaps not accounted for
    /// by retention.log, and with --public-key every signature. Exit code 1 if anything
    /// is wrong.
    Verify(VerifyArgs),
    /// Recorded decisions (one per statement) and session starts and ends as JSON lines,
    /// oldest first, for a SIEM: session, principal, resource, time (RFC 3339 and µs
    /// since the epoch), class, verdict, rule, reason, statement (masked).
    Export(ExportArgs),
}

/// `sluice audit verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Ed25519 public key the segments' chain hashes must be signed with: a file holding
    /// the 32-byte key raw or as 64 hex digits.
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
}

/// `sluice audit export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// Only events at or after this time: RFC 3339 or that long ago (15m, 2h, 1d).
    /// Default: from the first recording.
    #[arg(long, value_name = "TIME", value_parser = time_arg)]
    pub since: Option<u64>,
    /// Only events at or before this time (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = time_arg)]
    pub until: Option<u64>,
    /// Output format (one JSON object per line).
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
}

// ---------------------------------------------------------------------------------------
// Times
// ---------------------------------------------------------------------------------------

fn now_us() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros(),
    )
    .unwrap_or(u64::MAX)
}

/// `--since`/`--until`: a time as µs since the epoch.
fn time_arg(text: &str) -> Result<u64, String> {
    parse_time(text, now_us())
}

/// Parses an RFC 3339 time (`Z` or a `±HH:MM` offset; a date alone is midnight UTC) or a
/// duration meaning that long before `now_us` (`15m`, `2h`, `1d`, `1h 30m`).
pub fn parse_time(text: &str, now_us: u64) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(d) = humantime::parse_duration(text) {
        let ago = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        return Ok(now_us.saturating_sub(ago));
    }
    let bad = || {
        format!(
            "{text:?} is neither an RFC 3339 time (2026-03-01T09:30:00Z) nor a duration ago \
             (15m, 2h, 1d)"
        )
    };
    // humantime reads UTC only; a numeric offset is applied here.
    let (base, offset_secs) = match split_offset(text) {
        Some((base, offset)) => (base, offset),
        None => (text, 0),
    };
    let base = if base.len() == 10 {
        format!("{base}T00:00:00Z")
    } else {
        base.to_owned()
    };
    let t = humantime::parse_rfc3339_weak(base.trim_end_matches(['Z', 'z'])).map_err(|_| bad())?;
    let us = t.duration_since(UNIX_EPOCH).map_err(|_| bad())?.as_micros() as i128
        - i128::from(offset_secs) * 1_000_000;
    u64::try_from(us).map_err(|_| bad())
}

/// Splits `...+HH:MM` / `...-HH:MM` at the end of an RFC 3339 time into the rest and the
/// offset in seconds east of UTC.
fn split_offset(text: &str) -> Option<(&str, i64)> {
    let b = text.as_bytes();
    if b.len() < 16 || !text.is_char_boundary(b.len() - 6) {
        return None;
    }
    let (base, offset) = text.split_at(b.len() - 6);
    let ob = offset.as_bytes();
    let sign = match ob[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if ob[3] != b':' || !base.contains(['T', 't', ' ']) {
        return None;
    }
    let hours: i64 = offset[1..3].parse().ok()?;
    let minutes: i64 = offset[4..6].parse().ok()?;
    Some((base, sign * (hours * 3600 + minutes * 60)))
}

fn speed_arg(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}

/// µs since the epoch as RFC 3339 UTC with microseconds.
fn rfc3339_us(us: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(us)).to_string()
}

/// µs since the epoch as RFC 3339 UTC to the second.
fn rfc3339_s(us: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_micros(us)).to_string()
}

// ---------------------------------------------------------------------------------------
// Where recordings are
// ---------------------------------------------------------------------------------------

/// The recording directory the config names. The file is parsed but not validated: an
/// auditor needs neither the TLS key nor the backends the file refers to.
pub fn recording_dir(config: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("reading config {}", config.display()))?;
    let mut parsed =
        sluice_proxy::Config::parse(&text).with_context(|| format!("in {}", config.display()))?;
    parsed.base_dir = config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(parsed.recording_dir())
}

/// Opens the archive, or `None` when the directory does not exist (recording off, or no
/// session recorded yet). Damaged segments are reported on stderr; what can be read is
/// still used.
fn open_archive(dir: &Path) -> anyhow::Result<Option<Archive>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let archive = Archive::open(dir).with_context(|| format!("reading {}", dir.display()))?;
    for p in archive.problems() {
        eprintln!("warning: {}", clean(&p.to_string()));
    }
    Ok(Some(archive))
}

fn no_recordings(dir: &Path) -> String {
    format!(
        "no recordings in {} (recording is off, or no session has been recorded yet)",
        dir.display()
    )
}

// ---------------------------------------------------------------------------------------
// sluice sessions list
// ---------------------------------------------------------------------------------------

/// `sluice sessions …`.
pub fn sessions(config: &Path, command: SessionsCommand) -> anyhow::Result<()> {
    let SessionsCommand::List(a) = command;
    let dir = recording_dir(config)?;
    let Some(archive) = open_archive(&dir)? else {
        return if a.json {
            print_json(&json!([]))
        } else {
            print(&no_recordings(&dir))
        };
    };
    let list = archive.sessions(&SessionFilter {
        principal: a.user,
        resource: a.resource,
        from_wall_us: a.since,
        to_wall_us: a.until,
    });
    if a.json {
        return print_json(&Value::Array(list.iter().map(session_json).collect()));
    }
    if list.is_empty() {
        return print("no recorded sessions match");
    }
    print(&sessions_table(&list).render())
}

fn session_json(s: &SessionSummary) -> Value {
    json!({
        "session": s.session.to_string(),
        "principal": s.principal,
        "resource": s.resource,
        "start": rfc3339_us(s.start_wall_us),
        "start_us": s.start_wall_us,
        "last_us": s.last_wall_us,
        "duration_us": u64::try_from(s.duration.as_micros()).unwrap_or(u64::MAX),
        "statements": s.statements,
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "records": s.records,
        "worker": s.worker,
        "ended": s.ended,
        "end_reason": s.end_reason,
    })
}

fn sessions_table(list: &[SessionSummary]) -> Table {
    let mut t = Table::new(&[
        "SESSION",
        "USER",
        "RESOURCE",
        "START (UTC)",
        "DURATION",
        "STATEMENTS",
        "IN",
        "OUT",
        "END",
    ]);
    let unknown = || "?".to_owned();
    for s in list {
        let (bytes_in, bytes_out) = if s.ended {
            (size(s.bytes_in), size(s.bytes_out))
        } else {
            ("-".to_owned(), "-".to_owned())
        };
        t.row(vec![
            s.session.to_string(),
            s.principal.clone().unwrap_or_else(unknown),
            s.resource.clone().unwrap_or_else(unknown),
            rfc3339_s(s.start_wall_us),
            span(s.duration),
            s.statements.to_string(),
            bytes_in,
            bytes_out,
            if s.ended {
                s.end_reason.clone().unwrap_or_else(unknown)
            } else {
                "live".to_owned()
            },
        ]);
    }
    t
}

/// Bytes for people: `512 B`, `12.3 KiB`, `4.0 MiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

// ---------------------------------------------------------------------------------------
// sluice replay
// ---------------------------------------------------------------------------------------

/// Finds the session `wanted` names: its full ID or a unique prefix of it.
fn resolve_session(archive: &Archive, wanted: &str, dir: &Path) -> anyhow::Result<Uuid> {
    if let Ok(id) = Uuid::parse_str(wanted) {
        if archive
            .sessions(&SessionFilter::default())
            .iter()
            .any(|s| s.session == id)
        {
            return Ok(id);
        }
        bail!(
            "session {id} is not in the recordings in {} (see: sluice sessions list)",
            dir.display()
        );
    }
    let prefix = wanted.trim().to_ascii_lowercase();
    if prefix.is_empty() {
        bail!("name a session: sluice replay ID (see: sluice sessions list)");
    }
    let matches: Vec<Uuid> = archive
        .sessions(&SessionFilter::default())
        .into_iter()
        .map(|s| s.session)
        .filter(|id| id.to_string().starts_with(&prefix))
        .collect();
    match matches.as_slice() {
        [id] => Ok(*id),
        [] => bail!(
            "no recorded session matches {:?} in {} (see: sluice sessions list)",
            clean(wanted),
            dir.display()
        ),
        _ => bail!(
            "{:?} matches {} sessions; give more of the ID",
            clean(wanted),
            matches.len()
        ),
    }
}

/// `sluice replay`.
pub fn replay(config: &Path, a: ReplayArgs) -> anyhow::Result<()> {
    let dir = recording_dir(config)?;
    let Some(archive) = open_archive(&dir)? else {
        bail!("{}", no_recordings(&dir));
    };
    let id = resolve_session(&archive, &a.session, &dir)?;
    let found = archive.records(id);
    for p in &found.problems {
        eprintln!(
            "warning: part of the session is unreadable: {}",
            clean(&p.to_string())
        );
    }
    if found.records.is_empty() {
        bail!("session {id}: none of its records could be read");
    }
    let speed = if a.instant { None } else { a.speed };
    let stdout = io::stdout().lock();
    let result = match a.format {
        ReplayFormat::Text => run_replay(&found.records, speed, TextOut::new(stdout)),
        ReplayFormat::Json => run_replay(&found.records, speed, JsonOut { w: stdout }),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Feeds `records` through the decoder into `out`, sleeping the recorded gaps divided by
/// `speed` when one is given.
fn run_replay<O: Sink>(records: &[Record], speed: Option<f64>, mut out: O) -> io::Result<()> {
    let mut decoder = Decoder::new(records.first().map_or(0, |r| r.mono_us));
    let mut last_mono = records.first().map_or(0, |r| r.mono_us);
    let mut events = Vec::new();
    for record in records {
        if let Some(speed) = speed {
            let gap = record.mono_us.saturating_sub(last_mono);
            if gap > 0 {
                out.flush()?;
                std::thread::sleep(Duration::from_secs_f64(gap as f64 / 1e6 / speed));
            }
        }
        last_mono = last_mono.max(record.mono_us);
        decoder.feed(record, &mut events);
        for e in events.drain(..) {
            out.event(e)?;
        }
    }
    decoder.finish(&mut events);
    for e in events.drain(..) {
        out.event(e)?;
    }
    out.finish()
}

/// When an event happened.
#[derive(Debug, Clone, Copy)]
pub struct At {
    pub wall_us: u64,
    /// Since the session's first record, by the monotonic clock.
    pub offset_us: u64,
}

/// One row of a result: text (or `\x` hex) values, `None` for NULL.
pub type Row = Vec<Option<String>>;

/// A result column.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    pub format: i16,
}

/// What a replay shows, decoded from records.
#[derive(Debug, Clone)]
pub enum EventKind {
    Start(SessionStart),
    /// SQL the client sent (`Query`, or `Parse` with `extended`).
    Statement {
        sql: String,
        extended: bool,
    },
    /// Parameters of a `Bind` (text, `\x` hex for binary, `None` for NULL).
    Bind(Vec<Option<String>>),
    Decision(Decision),
    Approval(Approval),
    /// A result set (columns and rows) or a command's completion (`columns` empty),
    /// `tag` from CommandComplete (`None` when the rows were cut short by an error or a
    /// row limit).
    Result {
        columns: Vec<Column>,
        rows: Vec<Row>,
        tag: Option<String>,
    },
    Error(Fields),
    Notice(Fields),
    CopyData {
        from_client: bool,
        data: String,
    },
    Notification {
        pid: u32,
        channel: String,
        payload: String,
    },
    End(SessionEnd),
    /// A payload that did not decode as PostgreSQL messages.
    Undecodable {
        from_client: bool,
        what: String,
    },
}

#[derive(Debug, Clone)]
pub struct Event {
    pub at: At,
    pub kind: EventKind,
}

/// Turns records into [`Event`]s: decodes Client/Server payloads (each may hold several
/// whole messages) and gathers rows between RowDescription and CommandComplete.
struct Decoder {
    start_mono: u64,
    /// The result set being received: columns (from RowDescription) and rows so far.
    result: Option<(Vec<Column>, Vec<Row>)>,
    /// Result column formats of the last Bind, for rows described by a statement Describe
    /// (which always says text).
    bind_formats: Vec<i16>,
    limits: Limits,
    last_at: At,
}

impl Decoder {
    fn new(start_mono: u64) -> Decoder {
        Decoder {
            start_mono,
            result: None,
            bind_formats: Vec::new(),
            limits: Limits::default(),
            last_at: At {
                wall_us: 0,
                offset_us: 0,
            },
        }
    }

    fn feed(&mut self, record: &Record, out: &mut Vec<Event>) {
        let at = At {
            wall_us: record.wall_us,
            offset_us: record.mono_us.saturating_sub(self.start_mono),
        };
        self.last_at = at;
        let mut push = |kind| out.push(Event { at, kind });
        match &record.kind {
            RecordKind::SessionStart(s) => push(EventKind::Start(s.clone())),
            RecordKind::Decision(d) => push(EventKind::Decision(d.clone())),
            RecordKind::Approval(a) => push(EventKind::Approval(a.clone())),
            RecordKind::SessionEnd(e) => {
                self.close_result(None, at, out);
                out.push(Event {
                    at,
                    kind: EventKind::End(e.clone()),
                });
            }
            RecordKind::Client(bytes) => self.frames(bytes, true, at, out),
            RecordKind::Server(bytes) => self.frames(bytes, false, at, out),
        }
    }

    /// A result set still open when the records end (the session was cut short).
    fn finish(&mut self, out: &mut Vec<Event>) {
        self.close_result(None, self.last_at, out);
    }

    /// Decodes the whole messages of one Client or Server record; bytes that do not decode
    /// end the record with an `Undecodable` event.
    fn frames(&mut self, bytes: &Bytes, from_client: bool, at: At, out: &mut Vec<Event>) {
        let mut buf = BytesMut::from(&bytes[..]);
        while !buf.is_empty() {
            let decoded = if from_client {
                match frontend::decode(&mut buf, &self.limits) {
                    Ok(Decode::Frame(m)) => {
                        self.client(m, at, out);
                        true
                    }
                    Ok(Decode::NeedMore(_)) | Err(_) => false,
                }
            } else {
                match backend::decode(&mut buf, &self.limits) {
                    Ok(Decode::Frame(m)) => {
                        self.server(m, at, out);
                        true
                    }
                    Ok(Decode::NeedMore(_)) | Err(_) => false,
                }
            };
            if !decoded {
                out.push(Event {
                    at,
                    kind: EventKind::Undecodable {
                        from_client,
                        what: format!("{} bytes", buf.len()),
                    },
                });
                break;
            }
        }
    }

    fn client(&mut self, m: FrontendMessage, at: At, out: &mut Vec<Event>) {
        let kind = match m {
            FrontendMessage::Query { sql } => EventKind::Statement {
                sql: String::from_utf8_lossy(&sql).into_owned(),
                extended: false,
            },
            FrontendMessage::Parse { sql, .. } => EventKind::Statement {
                sql: String::from_utf8_lossy(&sql).into_owned(),
                extended: true,
            },
            FrontendMessage::Bind {
                param_formats,
                params,
                result_formats,
                ..
            } => {
                self.bind_formats = result_formats;
                if params.is_empty() {
                    return;
                }
                let values = params
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let format = match param_formats.as_slice() {
                            [] => 0,
                            [one] => *one,
                            many => many.get(i).copied().unwrap_or(0),
                        };
                        p.as_ref().map(|v| value_text(v, format))
                    })
                    .collect();
                EventKind::Bind(values)
            }
            FrontendMessage::CopyData(data) => EventKind::CopyData {
                from_client: true,
                data: String::from_utf8_lossy(&data).into_owned(),
            },
            _ => return,
        };
        out.push(Event { at, kind });
    }

    fn server(&mut self, m: BackendMessage, at: At, out: &mut Vec<Event>) {
        match m {
            BackendMessage::RowDescription { fields } => {
                self.close_result(None, at, out);
                let columns = fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| self.column(i, f))
                    .collect();
                self.result = Some((columns, Vec::new()));
            }
            BackendMessage::DataRow(row) => {
                let formats: Vec<i16> = self
                    .result
                    .as_ref()
                    .map(|(c, _)| c.iter().map(|c| c.format).collect())
                    .unwrap_or_default();
                let values = row
                    .raw_columns()
                    .enumerate()
                    .map(|(i, v)| v.map(|v| value_text(v, formats.get(i).copied().unwrap_or(0))))
                    .collect();
                match &mut self.result {
                    Some((_, rows)) => rows.push(values),
                    // Rows without a description (Execute of a portal described earlier):
                    // unnamed columns.
                    None => self.result = Some((Vec::new(), vec![values])),
                }
            }
            BackendMessage::CommandComplete { tag } => {
                let tag = String::from_utf8_lossy(&tag).into_owned();
                if self.result.is_some() {
                    self.close_result(Some(tag), at, out);
                } else {
                    out.push(Event {
                        at,
                        kind: EventKind::Result {
                            columns: Vec::new(),
                            rows: Vec::new(),
                            tag: Some(tag),
                        },
                    });
                }
            }
            BackendMessage::PortalSuspended | BackendMessage::ReadyForQuery { .. } => {
                self.close_result(None, at, out);
            }
            BackendMessage::ErrorResponse(fields) => {
                self.close_result(None, at, out);
                out.push(Event {
                    at,
                    kind: EventKind::Error(fields),
                });
            }
            BackendMessage::NoticeResponse(fields) => out.push(Event {
                at,
                kind: EventKind::Notice(fields),
            }),
            BackendMessage::CopyData(data) => out.push(Event {
                at,
                kind: EventKind::CopyData {
                    from_client: false,
                    data: String::from_utf8_lossy(&data).into_owned(),
                },
            }),
            BackendMessage::NotificationResponse {
                pid,
                channel,
                payload,
            } => out.push(Event {
                at,
                kind: EventKind::Notification {
                    pid,
                    channel: String::from_utf8_lossy(&channel).into_owned(),
                    payload: String::from_utf8_lossy(&payload).into_owned(),
                },
            }),
            _ => {}
        }
    }

    fn column(&self, i: usize, f: &FieldDescription) -> Column {
        let format = match self.bind_formats.as_slice() {
            [] => f.format,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(f.format),
        };
        Column {
            name: String::from_utf8_lossy(&f.name).into_owned(),
            type_oid: f.type_oid,
            format: if f.format != 0 { f.format } else { format },
        }
    }

    fn close_result(&mut self, tag: Option<String>, at: At, out: &mut Vec<Event>) {
        if let Some((columns, rows)) = self.result.take() {
            out.push(Event {
                at,
                kind: EventKind::Result { columns, rows, tag },
            });
        }
    }
}

/// A value as psql shows it: text as is, binary as `\x` hex.
fn value_text(v: &[u8], format: i16) -> String {
    if format == 1 {
        let mut s = String::with_capacity(2 + 2 * v.len());
        s.push_str("\\x");
        for b in v {
            s.push_str(&format!("{b:02x}"));
        }
        s
    } else {
        String::from_utf8_lossy(v).into_owned()
    }
}

/// Where replay events go.
trait Sink {
    fn event(&mut self, e: Event) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
    fn finish(&mut self) -> io::Result<()>;
}

/// One JSON object per line.
struct JsonOut<W: Write> {
    w: W,
}

impl<W: Write> Sink for JsonOut<W> {
    fn event(&mut self, e: Event) -> io::Result<()> {
        serde_json::to_writer(&mut self.w, &event_json(&e))?;
        self.w.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

fn fields_json(f: &Fields) -> Value {
    let get = |code: u8| f.get(code).map(|v| String::from_utf8_lossy(v).into_owned());
    json!({
        "severity": get(b'V').or_else(|| get(b'S')),
        "sqlstate": get(b'C'),
        "message": get(b'M'),
        "detail": get(b'D'),
        "hint": get(b'H'),
    })
}

/// The JSON form of one replay event: `event` names it, `time`/`wall_us`/`offset_us` say
/// when, the rest is the event's own fields.
pub fn event_json(e: &Event) -> Value {
    let mut v = match &e.kind {
        EventKind::Start(s) => {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            v["event"] = json!("session_start");
            v
        }
        EventKind::Statement { sql, extended } => json!({
            "event": "statement",
            "sql": sql,
            "protocol": if *extended { "extended" } else { "simple" },
        }),
        EventKind::Bind(params) => json!({"event": "bind", "params": params}),
        EventKind::Decision(d) => {
            let mut v = serde_json::to_value(d).unwrap_or_default();
            v["event"] = json!("decision");
            v
        }
        EventKind::Approval(a) => {
            let mut v = serde_json::to_value(a).unwrap_or_default();
            v["event"] = json!("approval");
            v
        }
        EventKind::Result { columns, rows, tag } if columns.is_empty() && rows.is_empty() => {
            json!({"event": "command_complete", "tag": tag})
        }
        EventKind::Result { columns, rows, tag } => json!({
            "event": "result",
            "columns": columns
                .iter()
                .map(|c| json!({"name": c.name, "type_oid": c.type_oid, "format": c.format}))
                .collect::<Vec<_>>(),
            "rows": rows,
            "row_count": rows.len(),
            "tag": tag,
        }),
        EventKind::Error(f) => {
            let mut v = fields_json(f);
            v["event"] = json!("error");
            v
        }
        EventKind::Notice(f) => {
            let mut v = fields_json(f);
            v["event"] = json!("notice");
            v
        }
        EventKind::CopyData { from_client, data } => json!({
            "event": "copy_data",
            "direction": if *from_client { "in" } else { "out" },
            "data": data,
        }),
        EventKind::Notification {
            pid,
            channel,
            payload,
        } => json!({
            "event": "notification",
            "pid": pid,
            "channel": channel,
            "payload": payload,
        }),
        EventKind::End(end) => {
            let mut v = serde_json::to_value(end).unwrap_or_default();
            v["event"] = json!("session_end");
            v
        }
        EventKind::Undecodable { from_client, what } => json!({
            "event": "undecodable",
            "direction": if *from_client { "client" } else { "server" },
            "what": what,
        }),
    };
    v["time"] = json!(rfc3339_us(e.at.wall_us));
    v["wall_us"] = json!(e.at.wall_us);
    v["offset_us"] = json!(e.at.offset_us);
    v
}

/// psql-like text.
///
/// A statement's decision may be recorded before the statement's client message (the
/// gateway judges, then forwards) or after it; a denied statement is never forwarded, so
/// its decision is all there is. Decisions are therefore held until the next client
/// statement (shown under it) or the next server message (shown on their own, with the
/// decision's statement text).
struct TextOut<W: Write> {
    w: W,
    pending: Vec<(At, Decision)>,
    /// A client statement was shown and its decision has not come yet.
    undecided: bool,
}

impl<W: Write> TextOut<W> {
    fn new(w: W) -> TextOut<W> {
        TextOut {
            w,
            pending: Vec::new(),
            undecided: false,
        }
    }

    fn statement_line(&mut self, at: At, sql: &str) -> io::Result<()> {
        let prefix = format!("[+{:.3}s] => ", at.offset_us as f64 / 1e6);
        let indent = " ".repeat(prefix.chars().count());
        for (i, line) in sql.trim_end().lines().enumerate() {
            let line = clean(line);
            if i == 0 {
                writeln!(self.w, "{prefix}{line}")?;
            } else {
                writeln!(self.w, "{indent}{line}")?;
            }
        }
        if sql.trim().is_empty() {
            writeln!(self.w, "{prefix}")?;
        }
        Ok(())
    }

    fn decision_line(&mut self, d: &Decision, with_text: bool) -> io::Result<()> {
        let rule = d
            .rule
            .as_deref()
            .map_or("no rule".to_owned(), |r| format!("rule {}", clean(r)));
        let what = match d.verdict {
            Verdict::Allow => "allowed",
            Verdict::Deny => "DENIED",
            Verdict::Held => "HELD for approval",
        };
        let mut line = format!("-- {what} ({}, {rule})", clean(&d.class));
        if let Some(reason) = &d.reason {
            line.push_str(": ");
            line.push_str(&clean(reason));
        }
        if with_text {
            line.push_str(" — ");
            line.push_str(&clean(&d.statement));
        }
        writeln!(self.w, "{line}")
    }

    /// Shows decisions that no client statement claimed, each with its own text.
    fn flush_pending(&mut self) -> io::Result<()> {
        for (at, d) in std::mem::take(&mut self.pending) {
            self.statement_line(at, &d.statement)?;
            self.decision_line(&d, false)?;
        }
        self.undecided = false;
        Ok(())
    }

    fn fields(&mut self, f: &Fields, default_severity: &str) -> io::Result<()> {
        let get = |code: u8| f.get(code).map(|v| clean(&String::from_utf8_lossy(v)));
        let severity = get(b'S')
            .or_else(|| get(b'V'))
            .unwrap_or_else(|| default_severity.to_owned());
        writeln!(self.w, "{severity}:  {}", get(b'M').unwrap_or_default())?;
        for (code, label) in [(b'D', "DETAIL"), (b'H', "HINT")] {
            if let Some(v) = get(code) {
                writeln!(self.w, "{label}:  {v}")?;
            }
        }
        if let Some(code) = get(b'C') {
            writeln!(self.w, "SQLSTATE:  {code}")?;
        }
        Ok(())
    }

    fn table(&mut self, columns: &[Column], rows: &[Row]) -> io::Result<()> {
        let width = |s: &str| s.chars().count();
        let ncols = columns
            .len()
            .max(rows.iter().map(Vec::len).max().unwrap_or(0));
        let names: Vec<String> = (0..ncols)
            .map(|i| columns.get(i).map_or(String::new(), |c| clean(&c.name)))
            .collect();
        let right: Vec<bool> = (0..ncols)
            .map(|i| columns.get(i).is_some_and(|c| is_numeric(c.type_oid)))
            .collect();
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                (0..ncols)
                    .map(|i| {
                        r.get(i)
                            .cloned()
                            .flatten()
                            .map_or(String::new(), |v| clean(&v))
                    })
                    .collect()
            })
            .collect();
        let mut widths: Vec<usize> = names.iter().map(|n| width(n)).collect();
        for row in &cells {
            for (i, c) in row.iter().enumerate() {
                widths[i] = widths[i].max(width(c));
            }
        }
        let mut header = String::new();
        let mut rule = String::new();
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                header.push('|');
                rule.push('+');
            }
            let pad = widths[i] - width(name);
            let left = pad / 2;
            header.push(' ');
            header.extend(std::iter::repeat_n(' ', left));
            header.push_str(name);
            header.extend(std::iter::repeat_n(' ', pad - left));
            header.push(' ');
            rule.extend(std::iter::repeat_n('-', widths[i] + 2));
        }
        writeln!(self.w, "{}", header.trim_end())?;
        writeln!(self.w, "{rule}")?;
        for row in &cells {
            let mut line = String::new();
            for (i, c) in row.iter().enumerate() {
                if i > 0 {
                    line.push('|');
                }
                let pad = widths[i] - width(c);
                line.push(' ');
                if right[i] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                line.push(' ');
            }
            writeln!(self.w, "{}", line.trim_end())?;
        }
        let n = rows.len();
        writeln!(self.w, "({n} row{})", if n == 1 { "" } else { "s" })
    }
}

/// Types psql right-aligns.
fn is_numeric(oid: u32) -> bool {
    // int8, int2, int4, oid, float4, float8, money, numeric
    matches!(oid, 20 | 21 | 23 | 26 | 700 | 701 | 790 | 1700)
}

impl<W: Write> Sink for TextOut<W> {
    fn event(&mut self, e: Event) -> io::Result<()> {
        let at = e.at;
        match e.kind {
            EventKind::Decision(d) => {
                if self.undecided {
                    self.undecided = false;
                    self.decision_line(&d, false)?;
                } else {
                    self.pending.push((at, d));
                }
                return Ok(());
            }
            EventKind::Statement { sql, .. } => {
                self.statement_line(at, &sql)?;
                let pending = std::mem::take(&mut self.pending);
                let several = pending.len() > 1;
                for (_, d) in &pending {
                    self.decision_line(d, several)?;
                }
                self.undecided = pending.is_empty();
                return Ok(());
            }
            EventKind::Start(s) => {
                self.flush_pending()?;
                writeln!(
                    self.w,
                    "Session of {} ({}) on {}",
                    clean(&s.principal),
                    clean(&s.groups.join(", ")),
                    clean(&s.resource)
                )?;
                writeln!(self.w, "  client:  {}", clean(&s.client_addr))?;
                match &s.tls {
                    Some(t) => writeln!(
                        self.w,
                        "  TLS:     {} {}",
                        clean(&t.version),
                        clean(&t.cipher)
                    )?,
                    None => writeln!(self.w, "  TLS:     none")?,
                }
                writeln!(
                    self.w,
                    "  masking: {}",
                    s.masking_profile
                        .as_deref()
                        .map_or("none".to_owned(), clean)
                )?;
                writeln!(self.w, "  started: {}", rfc3339_us(at.wall_us))?;
                writeln!(self.w)?;
                return Ok(());
            }
            _ => {}
        }
        self.flush_pending()?;
        match e.kind {
            EventKind::Bind(params) => {
                let shown: Vec<String> = params
                    .iter()
                    .enumerate()
                    .map(|(i, p)| match p {
                        Some(v) => format!("${}='{}'", i + 1, clean(v)),
                        None => format!("${}=NULL", i + 1),
                    })
                    .collect();
                writeln!(self.w, "-- parameters: {}", shown.join(", "))?;
            }
            EventKind::Approval(a) => {
                let by = a
                    .approver
                    .as_deref()
                    .map_or(String::new(), |b| format!(" by {}", clean(b)));
                let what = match a.outcome {
                    ApprovalOutcome::Approved => "approved",
                    ApprovalOutcome::Rejected => "REJECTED",
                    ApprovalOutcome::TimedOut => "approval TIMED OUT",
                };
                writeln!(
                    self.w,
                    "-- {what}{by} (request {})",
                    clean(&a.request_id)
                )?;
            }
            EventKind::Result { columns, rows, tag } => {
                if !columns.is_empty() || !rows.is_empty() {
                    self.table(&columns, &rows)?;
                    // psql shows "(N rows)" for row-returning commands, the tag otherwise.
                    if let Some(tag) = tag.filter(|t| !t.starts_with("SELECT")) {
                        writeln!(self.w, "{}", clean(&tag))?;
                    }
                    writeln!(self.w)?;
                } else if let Some(tag) = tag {
                    writeln!(self.w, "{}", clean(&tag))?;
                }
            }
            EventKind::Error(f) => self.fields(&f, "ERROR")?,
            EventKind::Notice(f) => self.fields(&f, "NOTICE")?,
            EventKind::CopyData { data, .. } => {
                for line in data.lines() {
                    // Tabs separate COPY's columns: kept, unlike other control characters.
                    let line: Vec<String> = line.split('\t').map(clean).collect();
                    writeln!(self.w, "{}", line.join("\t"))?;
                }
            }
            EventKind::Notification {
                pid,
                channel,
                payload,
            } => writeln!(
                self.w,
                "Asynchronous notification \"{}\" with payload \"{}\" received from server process with PID {pid}.",
                clean(&channel),
                clean(&payload)
            )?,
            EventKind::End(end) => {
                let masked: Vec<String> = end
                    .masked
                    .iter()
                    .map(|(rule, n)| format!("{} {n}", clean(rule)))
                    .collect();
                writeln!(
                    self.w,
                    "[+{:.3}s] -- session ended: {} ({} statements, {} in, {} out{})",
                    at.offset_us as f64 / 1e6,
                    clean(&end.reason),
                    end.statements,
                    size(end.bytes_in),
                    size(end.bytes_out),
                    if masked.is_empty() {
                        String::new()
                    } else {
                        format!("; masked: {}", masked.join(", "))
                    }
                )?;
            }
            EventKind::Undecodable { from_client, what } => writeln!(
                self.w,
                "-- ({} payload of {what} did not decode as PostgreSQL messages)",
                if from_client { "client" } else { "server" }
            )?,
            EventKind::Decision(_) | EventKind::Statement { .. } | EventKind::Start(_) => {}
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.flush_pending()?;
        self.w.flush()
    }
}

// ---------------------------------------------------------------------------------------
// sluice audit --statements
// ---------------------------------------------------------------------------------------

/// A statement event of the gateway's JSON-lines files, the fields the search needs (the
/// whole object is kept for `--json`).
#[derive(Deserialize)]
struct EventLine {
    time_ms: u64,
    session: String,
    user: String,
    resource: String,
    class: String,
    decision: String,
    rule: Option<String>,
    #[serde(default)]
    approval: Option<String>,
    #[serde(default)]
    outcome: String,
    sqlstate: Option<String>,
    rows: Option<u64>,
    #[serde(default)]
    duration_us: u64,
    statement: String,
}

/// One row of the statement search, from either source.
struct Found {
    time_us: u64,
    session: String,
    user: String,
    resource: String,
    class: String,
    decision: String,
    rule: Option<String>,
    outcome: String,
    statement: String,
    json: Value,
}

/// `sluice audit --statements` with any filters.
///
/// **Sources.** The gateway writes each statement twice: as a JSON-lines event under
/// `state_dir/audit/` (with the outcome: rows, SQLSTATE, duration, approval) and as a
/// Decision record in the session's recording (tamper-evident, indexed). By default
/// (`--source merged`) the events are taken for every session they cover — they say more
/// — and the recordings add the decisions of sessions that have no event at all (event
/// files lost, rotated or never written, e.g. recordings shipped from another host). The
/// recordings are searched through [`Archive::search`], which skips segments and blocks
/// from their indexes. `--source recordings` uses the recordings alone (what an auditor
/// who trusts only the hash chain wants); `--source events` the events alone.
pub fn statements(config: &Path, a: &AuditCli) -> anyhow::Result<()> {
    let file = sluice_control::config::ControlFile::load(config).map_err(|e| anyhow::anyhow!(e))?;
    let state_dir = file.state_dir();
    let rec_dir = recording_dir(config)?;
    let s = &a.search;
    let source = s.source.unwrap_or(StatementSource::Merged);
    let grep = match &s.grep {
        Some(pattern) => Some(
            Regex::new(&format!("(?i){pattern}"))
                .with_context(|| format!("--grep {pattern:?} is not a regular expression"))?,
        ),
        None => None,
    };
    let f = &a.args.filter;
    let in_range = |us: u64| s.since.is_none_or(|t| us >= t) && s.until.is_none_or(|t| us <= t);

    let mut found = Vec::new();
    let mut covered: HashSet<String> = HashSet::new();
    if source != StatementSource::Recordings {
        for (line, value) in read_event_lines(&state_dir.join("audit"))? {
            covered.insert(line.session.clone());
            let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
            let time_us = line.time_ms.saturating_mul(1000);
            let keep = is(&f.user, &line.user)
                && is(&f.resource, &line.resource)
                && is(&f.class, &line.class)
                && is(&f.decision, &line.decision)
                && in_range(time_us)
                && grep.as_ref().is_none_or(|re| re.is_match(&line.statement));
            if !keep {
                continue;
            }
            let outcome = match (&line.sqlstate, line.rows) {
                (Some(code), _) => format!("{} {code}", line.outcome),
                (None, Some(rows)) => {
                    format!("{} ({rows} rows, {} µs)", line.outcome, line.duration_us)
                }
                (None, None) => format!("{} ({} µs)", line.outcome, line.duration_us),
            };
            let decision = match &line.approval {
                Some(id) => format!("{} ({id})", line.decision),
                None => line.decision.clone(),
            };
            found.push(Found {
                time_us,
                session: line.session,
                user: line.user,
                resource: line.resource,
                class: line.class,
                decision,
                rule: line.rule,
                outcome,
                statement: line.statement,
                json: value,
            });
        }
    }
    if source != StatementSource::Events {
        if let Some(archive) = open_archive(&rec_dir)? {
            let verdict = match f.decision.as_deref() {
                None => Some(None),
                Some("allow") => Some(Some(Verdict::Allow)),
                Some("deny") => Some(Some(Verdict::Deny)),
                Some("held") => Some(Some(Verdict::Held)),
                // approved/refused are outcomes of the events only.
                Some(_) => None,
            };
            if let Some(verdict) = verdict {
                let result = archive.search(&SearchQuery {
                    principal: f.user.clone(),
                    resource: f.resource.clone(),
                    class: f.class.clone(),
                    verdict,
                    from_wall_us: s.since,
                    to_wall_us: s.until,
                    statement: grep.clone(),
                });
                for p in &result.problems {
                    eprintln!("warning: {}", clean(&p.to_string()));
                }
                for hit in result.hits {
                    let session = hit.session.to_string();
                    if covered.contains(&session) {
                        continue;
                    }
                    let d = hit.decision;
                    found.push(Found {
                        time_us: hit.wall_us,
                        json: json!({
                            "source": "recording",
                            "time_ms": hit.wall_us / 1000,
                            "time_us": hit.wall_us,
                            "session": session,
                            "user": hit.principal,
                            "resource": hit.resource,
                            "class": d.class,
                            "decision": verdict_name(d.verdict),
                            "rule": d.rule,
                            "reason": d.reason,
                            "statement": d.statement,
                        }),
                        session,
                        user: hit.principal.unwrap_or_else(|| "?".into()),
                        resource: hit.resource.unwrap_or_else(|| "?".into()),
                        class: d.class,
                        decision: verdict_name(d.verdict).to_owned(),
                        rule: d.rule,
                        outcome: "(recorded)".into(),
                        statement: d.statement,
                    });
                }
            }
        }
    }
    found.sort_by(|a, b| (a.time_us, &a.session).cmp(&(b.time_us, &b.session)));
    let skip = found.len().saturating_sub(a.args.limit);
    let found = &found[skip..];
    if a.args.json {
        return print_json(&Value::Array(
            found.iter().map(|f| f.json.clone()).collect(),
        ));
    }
    if found.is_empty() {
        return print("no statement audit events match");
    }
    let mut table = Table::new(&[
        "TIME",
        "SESSION",
        "USER",
        "RESOURCE",
        "CLASS",
        "DECISION",
        "RULE",
        "OUTCOME",
        "STATEMENT",
    ]);
    for e in found {
        let mut statement = e.statement.clone();
        if statement.chars().count() > 60 {
            statement = statement.chars().take(59).collect::<String>() + "…";
        }
        table.row(vec![
            rfc3339_s(e.time_us),
            e.session.clone(),
            e.user.clone(),
            e.resource.clone(),
            e.class.clone(),
            e.decision.clone(),
            e.rule.clone().unwrap_or_else(|| "(no rule)".to_owned()),
            e.outcome.clone(),
            statement,
        ]);
    }
    print(&table.render())
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
        Verdict::Held => "held",
    }
}

/// Every parseable event of the workers' `statements-*.jsonl` files (a torn last line is
/// skipped), with its JSON object.
fn read_event_lines(dir: &Path) -> anyhow::Result<Vec<(EventLine, Value)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let is_events = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("statements-") && n.ends_with(".jsonl"));
        if !is_events {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines() {
            let Ok(value) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if let Ok(event) = serde_json::from_value::<EventLine>(value.clone()) {
                out.push((event, value));
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// sluice audit verify | export
// ---------------------------------------------------------------------------------------

/// `sluice audit verify|export`.
pub fn audit_command(config: &Path, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify(a) => verify(config, a),
        AuditCommand::Export(a) => export(config, a),
    }
}

fn read_public_key(path: &Path) -> anyhow::Result<sluice_recorder::VerifyingKey> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let raw: Vec<u8> = if bytes.len() == 32 {
        bytes
    } else {
        let text = String::from_utf8_lossy(&bytes);
        let hex = text.trim();
        if hex.len() != 64 || !hex.is_ascii() {
            bail!(
                "{}: expected a 32-byte Ed25519 public key, raw or as 64 hex digits",
                path.display()
            );
        }
        (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: not hex", path.display()))?
    };
    let key: [u8; 32] = raw
        .try_into()
        .map_err(|_| anyhow::anyhow!("not 32 bytes"))?;
    sluice_recorder::VerifyingKey::from_bytes(&key)
        .with_context(|| format!("{}: not an Ed25519 public key", path.display()))
}

fn verify(config: &Path, a: VerifyArgs) -> anyhow::Result<()> {
    let dir = recording_dir(config)?;
    if !dir.is_dir() {
        bail!("{}", no_recordings(&dir));
    }
    let key = a.public_key.as_deref().map(read_public_key).transpose()?;
    let report = sluice_recorder::verify(&dir, key.as_ref())
        .with_context(|| format!("verifying {}", dir.display()))?;
    let mut text = format!(
        "{}: {} segments ({} sealed, {} live), {} blocks, {} records checked{}\n",
        dir.display(),
        report.segments,
        report.sealed,
        report.live.len(),
        report.blocks,
        report.records,
        if key.is_some() {
            ", signatures included"
        } else {
            ""
        }
    );
    for live in &report.live {
        text.push_str(&format!(
            "live (unsealed, checked block by block): {}\n",
            live.display()
        ));
    }
    for name in &report.removed_by_retention {
        text.push_str(&format!("removed by retention (logged): {name}\n"));
    }
    if report.is_ok() {
        text.push_str("OK: no problems found\n");
        return print(&text);
    }
    for p in &report.problems {
        text.push_str(&format!("PROBLEM: {}\n", clean(&p.to_string())));
    }
    print(&text)?;
    bail!(
        "{} problem{} found in {}",
        report.problems.len(),
        if report.problems.len() == 1 { "" } else { "s" },
        dir.display()
    )
}

/// One exported line.
struct ExportLine {
    wall_us: u64,
    session: Uuid,
    seq: u64,
    value: Value,
}

/// Reads only the blocks that can hold what is exported: the blocks with decisions, and
/// each session's first (start) and last (end) block, within the time range.
fn export(config: &Path, a: ExportArgs) -> anyhow::Result<()> {
    let ExportFormat::Jsonl = a.format;
    let dir = recording_dir(config)?;
    let Some(archive) = open_archive(&dir)? else {
        bail!("{}", no_recordings(&dir));
    };
    let who: BTreeMap<Uuid, (Option<String>, Option<String>)> = archive
        .sessions(&SessionFilter::default())
        .into_iter()
        .map(|s| (s.session, (s.principal, s.resource)))
        .collect();
    let overlaps = |first: u64, last: u64| {
        a.since.is_none_or(|f| last >= f) && a.until.is_none_or(|t| first <= t)
    };
    let mut segments: Vec<(u16, u64, PathBuf)> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            sluice_recorder::format::parse_segment_file_name(&p).map(|(w, s)| (w, s, p))
        })
        .collect();
    segments.sort();
    let mut lines: Vec<ExportLine> = Vec::new();
    let mut seq = 0u64;
    for (_, _, path) in segments {
        let reader = match SegmentReader::open(&path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("warning: {}", clean(&e.to_string()));
                continue;
            }
        };
        let index = match reader.read_footer() {
            Ok(Some(footer)) => footer.index,
            Ok(None) => reader.scan_index().0,
            Err(e) => {
                eprintln!("warning: {}; blocks scanned instead", clean(&e.to_string()));
                reader.scan_index().0
            }
        };
        let block_range: BTreeMap<u64, (u64, u64)> = index
            .blocks
            .iter()
            .map(|b| (b.offset, (b.first_wall_us, b.last_wall_us)))
            .collect();
        let mut offsets = std::collections::BTreeSet::new();
        for s in &index.sessions {
            offsets.extend(s.decision_blocks.iter().copied());
            if s.start.is_some() {
                offsets.extend(s.blocks.first().copied());
            }
            if s.end.is_some() {
                offsets.extend(s.blocks.last().copied());
            }
        }
        for offset in offsets {
            let Some(&(first, last)) = block_range.get(&offset) else {
                continue;
            };
            if !overlaps(first, last) {
                continue;
            }
            let block = match reader.read_block_at(offset) {
                Ok(b) => b,
                Err(bad) => {
                    eprintln!(
                        "warning: {} at offset {}: {}",
                        path.display(),
                        bad.offset,
                        clean(&bad.what)
                    );
                    continue;
                }
            };
            for r in block.records {
                if !overlaps(r.wall_us, r.wall_us) {
                    continue;
                }
                let (principal, resource) = who.get(&r.session).cloned().unwrap_or_default();
                let mut v = match r.kind {
                    RecordKind::Decision(d) => json!({
                        "type": "decision",
                        "class": d.class,
                        "verdict": verdict_name(d.verdict),
                        "rule": d.rule,
                        "reason": d.reason,
                        "statement": d.statement,
                    }),
                    RecordKind::SessionStart(s) => json!({
                        "type": "session_start",
                        "groups": s.groups,
                        "client_addr": s.client_addr,
                        "tls": s.tls,
                        "masking_profile": s.masking_profile,
                    }),
                    RecordKind::SessionEnd(e) => json!({
                        "type": "session_end",
                        "reason": e.reason,
                        "statements": e.statements,
                        "bytes_in": e.bytes_in,
                        "bytes_out": e.bytes_out,
                        "masked": e.masked,
                    }),
                    _ => continue,
                };
                v["session"] = json!(r.session.to_string());
                v["principal"] = json!(principal);
                v["resource"] = json!(resource);
                v["time"] = json!(rfc3339_us(r.wall_us));
                v["time_us"] = json!(r.wall_us);
                lines.push(ExportLine {
                    wall_us: r.wall_us,
                    session: r.session,
                    seq,
                    value: v,
                });
                seq += 1;
            }
        }
    }
    lines.sort_by_key(|l| (l.wall_us, l.session, l.seq));
    let mut out = io::BufWriter::new(io::stdout().lock());
    let result = (|| -> io::Result<()> {
        for l in &lines {
            serde_json::to_writer(&mut out, &l.value)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    })();
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sluice_codecs::backend::{DataRow, FieldDescription};

    #[test]
    fn times_are_rfc3339_or_durations_ago() {
        let now = 1_772_357_400_000_000; // 2026-03-01T09:30:00Z
        assert_eq!(parse_time("2026-03-01T09:30:00Z", now), Ok(now));
        assert_eq!(parse_time("2026-03-01T10:30:00+01:00", now), Ok(now));
        assert_eq!(parse_time("2026-03-01T08:30:00-01:00", now), Ok(now));
        assert_eq!(parse_time("2026-03-01T09:30:00.5Z", now), Ok(now + 500_000));
        assert_eq!(
            parse_time("2026-03-01", now),
            Ok(now - (9 * 3600 + 30 * 60) * 1_000_000)
        );
        assert_eq!(parse_time("15m", now), Ok(now - 900_000_000));
        assert_eq!(parse_time("1d", now), Ok(now - 86_400_000_000));
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("2026-13-01T00:00:00Z", now).is_err());
    }

    fn server(msgs: &[BackendMessage]) -> RecordKind {
        let mut out = BytesMut::new();
        for m in msgs {
            m.encode(&mut out);
        }
        RecordKind::Server(out.freeze())
    }

    fn client(msgs: &[FrontendMessage]) -> RecordKind {
        let mut out = BytesMut::new();
        for m in msgs {
            m.encode(&mut out);
        }
        RecordKind::Client(out.freeze())
    }

    fn field(name: &str, type_oid: u32) -> FieldDescription {
        FieldDescription {
            name: Bytes::copy_from_slice(name.as_bytes()),
            table_oid: 0,
            column_id: 0,
            type_oid,
            type_size: -1,
            type_modifier: -1,
            format: 0,
        }
    }

    fn fields(pairs: &[(u8, &str)]) -> Fields {
        Fields(
            pairs
                .iter()
                .map(|(c, v)| (*c, Bytes::copy_from_slice(v.as_bytes())))
                .collect(),
        )
    }

    fn session() -> Vec<Record> {
        let id = Uuid::from_u128(7);
        let rec = |mono_us: u64, kind| Record {
            session: id,
            mono_us,
            wall_us: 1_772_357_400_000_000 + mono_us,
            kind,
        };
        let decision = |sql: &str, class: &str, verdict, rule: &str| {
            RecordKind::Decision(Decision {
                statement: sql.into(),
                class: class.into(),
                verdict,
                rule: Some(rule.into()),
                reason: (verdict == Verdict::Deny).then(|| "support may only read".into()),
            })
        };
        vec![
            rec(
                0,
                RecordKind::SessionStart(SessionStart {
                    principal: "bob".into(),
                    groups: vec!["support".into()],
                    resource: "shop".into(),
                    client_addr: "127.0.0.1:5000".into(),
                    tls: None,
                    masking_profile: Some("pii".into()),
                }),
            ),
            rec(
                1_000,
                decision(
                    "select email, id from customers",
                    "read",
                    Verdict::Allow,
                    "support-reads",
                ),
            ),
            rec(
                1_100,
                client(&[FrontendMessage::Query {
                    sql: Bytes::from_static(b"select email, id from customers limit 2"),
                }]),
            ),
            rec(
                2_500,
                server(&[
                    BackendMessage::RowDescription {
                        fields: vec![field("email", 25), field("id", 23)],
                    },
                    BackendMessage::DataRow(DataRow::from_columns(&[
                        Some(b"a****@example.com"),
                        Some(b"1"),
                    ])),
                    BackendMessage::DataRow(DataRow::from_columns(&[None, Some(b"10")])),
                    BackendMessage::CommandComplete {
                        tag: Bytes::from_static(b"SELECT 2"),
                    },
                ]),
            ),
            rec(
                1_234_000,
                decision("delete from customers", "write", Verdict::Deny, "no-rule"),
            ),
            rec(
                1_234_100,
                server(&[BackendMessage::ErrorResponse(fields(&[
                    (b'S', "ERROR"),
                    (b'C', "42501"),
                    (b'M', "no statement rule lets \"bob\" run write statements"),
                    (b'H', "ask an operator"),
                ]))]),
            ),
            rec(
                2_000_000,
                server(&[
                    BackendMessage::CopyOutResponse(backend::CopyResponse {
                        format: 0,
                        column_formats: vec![0],
                    }),
                    BackendMessage::CopyData(Bytes::from_static(b"x****@example.com\n")),
                    BackendMessage::CopyDone,
                    BackendMessage::CommandComplete {
                        tag: Bytes::from_static(b"COPY 1"),
                    },
                    BackendMessage::ReadyForQuery {
                        status: backend::TransactionStatus::Idle,
                    },
                ]),
            ),
            rec(
                3_000_000,
                RecordKind::SessionEnd(SessionEnd {
                    reason: "client closed".into(),
                    statements: 3,
                    bytes_in: 100,
                    bytes_out: 2048,
                    masked: [("emails".to_owned(), 2)].into_iter().collect(),
                }),
            ),
        ]
    }

    #[test]
    fn text_replay_reads_like_psql_with_decisions() {
        let mut out = Vec::new();
        run_replay(&session(), None, TextOut::new(&mut out)).expect("replay");
        let text = String::from_utf8(out).expect("utf-8");
        let want = "Session of bob (support) on shop
  client:  127.0.0.1:5000
  TLS:     none
  masking: pii
  started: 2026-03-01T09:30:00.000000Z

[+0.001s] => select email, id from customers limit 2
-- allowed (read, rule support-reads)
       email       | id
-------------------+----
 a****@example.com |  1
                   | 10
(2 rows)

[+1.234s] => delete from customers
-- DENIED (write, rule no-rule): support may only read
ERROR:  no statement rule lets \"bob\" run write statements
HINT:  ask an operator
SQLSTATE:  42501
x****@example.com
COPY 1
[+3.000s] -- session ended: client closed (3 statements, 100 B in, 2.0 KiB out; masked: emails 2)
";
        assert_eq!(text, want);
    }

    #[test]
    fn json_replay_has_one_object_per_event() {
        let mut out = Vec::new();
        run_replay(&session(), None, JsonOut { w: &mut out }).expect("replay");
        let events: Vec<Value> = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "session_start",
                "decision",
                "statement",
                "result",
                "decision",
                "error",
                "copy_data",
                "command_complete",
                "session_end"
            ]
        );
        assert_eq!(
            events[3]["rows"],
            json!([["a****@example.com", "1"], [null, "10"]])
        );
        assert_eq!(events[3]["columns"][1]["name"], "id");
        assert_eq!(events[5]["sqlstate"], "42501");
        assert_eq!(events[4]["verdict"], "deny");
        assert_eq!(events[5]["offset_us"], 1_234_100);
    }

    #[test]
    fn replayed_text_cannot_smuggle_terminal_control() {
        let id = Uuid::from_u128(1);
        let records = vec![Record {
            session: id,
            mono_us: 0,
            wall_us: 0,
            kind: client(&[FrontendMessage::Query {
                sql: Bytes::from_static(b"select '\x1b[2J'"),
            }]),
        }];
        let mut out = Vec::new();
        run_replay(&records, None, TextOut::new(&mut out)).expect("replay");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(!text.contains('\u{1b}'), "{text:?}");
    }

    #[test]
    fn binary_values_are_hex_and_sizes_are_human() {
        assert_eq!(value_text(&[0xde, 0xad], 1), "\\xdead");
        assert_eq!(value_text(b"abc", 0), "abc");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 20), "5.0 MiB");
    }
}
