//! The per-session masking state machine ([`SessionMasker`]).
//!
//! # What this module owns
//!
//! Following a session's protocol closely enough to know, for every value the server
//! sends, which column it belongs to and in which format, and rewriting it before the
//! client (or the recorder) sees it:
//!
//! * **which plan applies to a row.** In the simple protocol a `RowDescription` comes
//!   before the rows. In the extended protocol rows often come with none (`Execute` of a
//!   portal bound to a statement described once, as tokio-postgres and `pgbench -M
//!   prepared` do), and the description's format codes are all zero: the real formats are
//!   the `Bind`'s. So the client's frames are followed too: each prepared statement and
//!   portal gets a slot that its `Describe` response fills, and each client frame queues
//!   the responses it will produce, so that each backend frame is matched with the client
//!   frame it answers (an `ErrorResponse` in the extended protocol drops everything up to
//!   the next `Sync`, as the server does);
//! * **rewriting** `DataRow`s ([`rows`]), `COPY` data ([`copy`]), error and notice fields,
//!   notification payloads and function-call results ([`text`]), into new frames with
//!   correct lengths, or saying "forward the original" when nothing changes.
//!
//! # Failing closed
//!
//! Whatever the gateway cannot place is masked as if a rule named it: rows whose columns
//! were never described, rows whose column count or lengths do not add up, rows that come
//! while the protocol sequence is not one this module can follow ("confused" until the
//! queue of expected responses drains cleanly at a `ReadyForQuery`), and `COPY` output
//! under a profile with column rules (COPY carries no column names). Prepared statements
//! and portals that SQL can create or drop behind the protocol's back (`PREPARE`,
//! `DEALLOCATE`, `DISCARD`, `DECLARE`, `CLOSE` anywhere in a query text) lose their
//! descriptions, so a statement redefined that way is never masked with a stale plan.
//!
//! # Bounded memory
//!
//! The queue of expected responses, the prepared-statement and portal tables, the names
//! kept, the description cache and the COPY carry all have caps. Past the queue's cap the
//! session stops matching responses and masks every row fail-closed until the backlog has
//! been answered; past the tables' caps new names are not tracked, which makes their rows
//! fail-closed too.

/// The masking state of a session other than its protocol state, borrowed apart from it.
macro_rules! sink {
    ($s:ident) => {
        rows::Sink {
            counts: &mut $s.counts,
            spans: &mut $s.spans,
            tmp: &mut $s.tmp,
        }
    };
}

mod copy;
pub(crate) mod frames;
mod rows;
mod text;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use crate::detect::Span;
use crate::plan::{session_words, Catalog, Desc, Field, Formats, Plan};
use crate::{CatalogColumn, Masker};

use frames::Reader;

/// Most client frames whose responses are awaited at once.
const MAX_QUEUE: usize = 4096;
/// Most prepared statements tracked (drivers' statement caches hold a few hundred).
const MAX_STATEMENTS: usize = 1024;
/// Most portals tracked.
const MAX_PORTALS: usize = 1024;
/// Longest statement or portal name tracked (PostgreSQL truncates at 63 bytes; longer
/// names are not tracked, which makes their results fail-closed).
const MAX_NAME: usize = 256;
/// Most `RowDescription`s whose plans are cached, and the largest one cached.
const DESC_CACHE: usize = 16;
const DESC_CACHE_MAX_BODY: usize = 8 * 1024;
/// Largest capacity the reused buffers keep between frames.
const MAX_KEPT_BUFFER: usize = 1 << 20;

/// One session's masking: follows the client's and the backend's frames and rewrites what
/// the backend sends. Single-threaded; one per session.
#[derive(Debug)]
pub struct SessionMasker {
    masker: Arc<Masker>,
    inert: bool,
    catalog: Catalog,
    /// Masked values per rule, indexed like `Masker::rule_names`, plus the
    /// unknown-columns pseudo-rule at the end.
    counts: Vec<u64>,
    spans: Vec<Span>,
    tmp: Vec<u8>,
    queue: VecDeque<Expect>,
    overflow: Option<Overflow>,
    statements: HashMap<Box<[u8]>, Arc<Statement>>,
    portals: HashMap<Box<[u8]>, Arc<Portal>>,
    /// The rows currently arriving: set by a `RowDescription` (simple protocol) or on the
    /// first row of an `Execute`, cleared when the result ends.
    result: Option<Active>,
    /// The response sequence was not what the client's frames predicted: every row is
    /// masked fail-closed until the queue drains cleanly.
    confused: bool,
    copy: Option<copy::CopyOut>,
    descs: VecDeque<(Box<[u8]>, Arc<Desc>)>,
    pass: Arc<Plan>,
}

// A session may move between threads with its connection.
const _: () = {
    const fn send<T: Send>() {}
    send::<SessionMasker>();
};

/// Most result format codes a `Bind` can meaningfully carry (PostgreSQL's column limit);
/// more are kept as "binary" (the server refuses such a Bind anyway).
const MAX_FORMAT_CODES: u16 = 1664;

/// A prepared statement as the client defined it; its description arrives later.
#[derive(Debug, Default)]
struct Statement {
    /// `Some(None)`: described as returning no rows.
    desc: OnceLock<Option<Arc<Desc>>>,
}

/// A portal as the client bound it.
#[derive(Debug)]
struct Portal {
    statement: Option<Arc<Statement>>,
    formats: Formats,
    desc: OnceLock<Option<Arc<Desc>>>,
}

/// A client frame whose responses are awaited, in the order the server answers them.
#[derive(Debug)]
enum Expect {
    /// `ParseComplete`.
    Parse(Undo<Statement>),
    /// `BindComplete`.
    Bind(Undo<Portal>),
    /// `CloseComplete`.
    Close(Closed),
    /// `ParameterDescription`, then `RowDescription` or `NoData`.
    DescribeStatement(Option<Arc<Statement>>),
    /// `RowDescription` or `NoData`.
    DescribePortal(Option<Arc<Portal>>),
    /// `DataRow`s, then `CommandComplete`, `PortalSuspended`, `EmptyQueryResponse` (or a
    /// COPY).
    Execute(Option<Arc<Portal>>),
    /// `ReadyForQuery`.
    Sync,
    /// Any number of results (or COPYs), then `ReadyForQuery`.
    Query,
    /// `FunctionCallResponse`, then `ReadyForQuery`; `binary` is the result format.
    FunctionCall { binary: bool },
    /// An extended-protocol frame that could not be read (the server will refuse it).
    Unreadable,
}

impl Expect {
    fn ends_with_ready(&self) -> bool {
        matches!(
            self,
            Expect::Sync | Expect::Query | Expect::FunctionCall { .. }
        )
    }
}

/// How to take back a `Parse` or `Bind` the server did not carry out.
#[derive(Debug)]
struct Undo<T> {
    /// The name, if tracked.
    name: Option<Box<[u8]>>,
    /// What the name meant before.
    prev: Option<Arc<T>>,
    /// What the frame made it mean.
    slot: Arc<T>,
}

/// How to take back a `Close` the server did not carry out.
#[derive(Debug)]
enum Closed {
    Statement(Option<(Box<[u8]>, Arc<Statement>)>),
    Portal(Option<(Box<[u8]>, Arc<Portal>)>),
    Other,
}

/// Client frames sent past the queue's cap: only how many `ReadyForQuery`s they will
/// produce is known.
#[derive(Debug)]
struct Overflow {
    ready: u64,
    /// Frames were sent after the last one that produces a `ReadyForQuery`.
    tail: bool,
}

/// The result whose rows are arriving.
#[derive(Debug)]
enum Active {
    /// Columns known: the plan for them, and how many there are (a row with another
    /// count cannot be placed).
    Known {
        plan: Arc<Plan>,
        columns: u16,
        noticed: bool,
    },
    /// Columns unknown: everything is masked (formats from the `Bind` when known).
    Unknown { formats: Formats, noticed: bool },
}

impl SessionMasker {
    /// A session under `masker`'s profile. Give it the catalog
    /// ([`set_catalog`](Self::set_catalog)) before the first client frame when the
    /// profile has one ([`Masker::catalog_query`]); the frames of that catalog query itself
    /// must not be passed to it. Startup-phase frames need not be passed (a
    /// `ReadyForQuery` with nothing awaited is ignored).
    pub fn new(masker: Arc<Masker>) -> SessionMasker {
        let inert = masker.is_inert();
        let counts = vec![0; masker.rule_names().len() + 1];
        SessionMasker {
            masker,
            inert,
            catalog: Catalog::default(),
            counts,
            spans: Vec::new(),
            tmp: Vec::new(),
            queue: VecDeque::new(),
            overflow: None,
            statements: HashMap::new(),
            portals: HashMap::new(),
            result: None,
            confused: false,
            copy: None,
            descs: VecDeque::new(),
            pass: Arc::new(Plan::pass()),
        }
    }

    /// The profile this session masks with.
    pub fn masker(&self) -> &Arc<Masker> {
        &self.masker
    }

    /// The answer to [`Masker::catalog_query`]: source table and column names for the
    /// table OIDs and attribute numbers that `RowDescription`s carry. Tables it does not
    /// list match no `table` rule.
    pub fn set_catalog(&mut self, columns: Vec<CatalogColumn>) {
        self.catalog = Catalog::new(&self.masker, columns);
        self.descs.clear();
    }

    /// Whether [`client_frame`](Self::client_frame) must see client frames with this tag
    /// (whole): `Query`, `Parse`, `Bind`, `Describe`, `Execute`, `Close`, `Sync`,
    /// `FunctionCall`.
    pub fn inspects_client(tag: u8) -> bool {
        matches!(tag, b'Q' | b'P' | b'B' | b'D' | b'E' | b'C' | b'S' | b'F')
    }

    /// A client frame (of a tag [`inspects_client`](Self::inspects_client) accepts), as it
    /// is forwarded to the backend, in order. `body` is everything after the length.
    pub fn client_frame(&mut self, tag: u8, body: &[u8]) {
        if self.inert {
            return;
        }
        let entry = match tag {
            b'Q' => {
                let sql = Reader::new(body).cstr().unwrap_or(body);
                self.on_sql(sql);
                Expect::Query
            }
            b'P' => self.on_parse(body),
            b'B' => self.on_bind(body),
            b'D' => self.on_describe(body),
            b'E' => {
                let mut r = Reader::new(body);
                match r.cstr() {
                    Some(name) => Expect::Execute(self.portals.get(name).cloned()),
                    None => Expect::Unreadable,
                }
            }
            b'C' => self.on_close(body),
            b'S' => Expect::Sync,
            b'F' => {
                // The result format code is the frame's last Int16.
                let binary = body
                    .len()
                    .checked_sub(2)
                    .and_then(|at| Reader::new(body.get(at..)?).i16())
                    .is_none_or(|f| f != 0);
                Expect::FunctionCall { binary }
            }
            _ => return,
        };
        if matches!(entry, Expect::Unreadable) {
            self.confused = true;
        }
        self.push(entry);
    }

    /// Whether [`backend_frame`](Self::backend_frame) must see backend frames with this
    /// tag (whole). Every frame that carries data or moves the response sequence along;
    /// not authentication, `BackendKeyData`, `ParameterStatus`,
    /// `NegotiateProtocolVersion`, or tags this module does not know.
    pub fn inspects_backend(tag: u8) -> bool {
        matches!(
            tag,
            b'T' | b'D'
                | b'C'
                | b'I'
                | b'E'
                | b'N'
                | b'1'
                | b'2'
                | b'3'
                | b't'
                | b'n'
                | b's'
                | b'Z'
                | b'G'
                | b'H'
                | b'W'
                | b'd'
                | b'c'
                | b'V'
                | b'A'
        )
    }

    /// One whole backend frame (`body`: everything after the length). Returns `false`:
    /// forward the original bytes unchanged (nothing was appended to `out`). Returns
    /// `true`: send what was appended to `out` instead (zero or more complete frames, each
    /// with a correct length).
    pub fn backend_frame(&mut self, tag: u8, body: &[u8], out: &mut Vec<u8>) -> bool {
        if tag == b'D' {
            if let Some(Active::Known { plan, columns, .. }) = &self.result {
                if plan.all_pass && !self.confused && body.get(..2) == Some(&columns.to_be_bytes())
                {
                    return false;
                }
            }
            if self.inert {
                return false;
            }
            return self.data_row(body, out);
        }
        if self.inert {
            return false;
        }
        let rewritten = match tag {
            b'd' => self.copy_data(body, out),
            b'N' => text::report(&self.masker, &mut sink!(self), b'N', body, out),
            b'A' => text::notification(&self.masker, &mut sink!(self), body, out),
            _ => self.response(tag, body, out),
        };
        // A huge value leaves the reused buffers huge: give the memory back.
        if self.tmp.capacity() > MAX_KEPT_BUFFER {
            self.tmp = Vec::new();
        }
        if self.spans.capacity() > MAX_KEPT_BUFFER / 16 {
            self.spans = Vec::new();
        }
        rewritten
    }

    /// Masked values so far, per rule name (only rules that masked something). Values
    /// masked because their columns were unknown count under
    /// [`UNKNOWN_COLUMNS_RULE`](crate::plan::UNKNOWN_COLUMNS_RULE).
    pub fn counts(&self) -> impl Iterator<Item = (&str, u64)> {
        let names = self.masker.rule_names();
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(move |(i, &n)| {
                let name = names
                    .get(i)
                    .map_or(crate::plan::UNKNOWN_COLUMNS_RULE, String::as_str);
                (name, n)
            })
    }

    // ---- client side ----

    fn push(&mut self, entry: Expect) {
        if self.overflow.is_none() && self.queue.len() < MAX_QUEUE {
            self.queue.push_back(entry);
            return;
        }
        let ready = entry.ends_with_ready();
        let overflow = self.overflow.get_or_insert(Overflow {
            ready: 0,
            tail: false,
        });
        if ready {
            overflow.ready += 1;
            overflow.tail = false;
        } else {
            overflow.tail = true;
        }
        self.confused = true;
    }

    /// SQL that may create or drop named statements or portals makes their descriptions
    /// untrustworthy: forget them (their rows are then masked fail-closed).
    fn on_sql(&mut self, sql: &[u8]) {
        let (statements, portals) = session_words(&self.masker, sql);
        if statements {
            self.statements.retain(|name, _| name.is_empty());
        }
        if portals {
            self.portals.retain(|name, _| name.is_empty());
        }
    }

    fn on_parse(&mut self, body: &[u8]) -> Expect {
        let mut r = Reader::new(body);
        let Some(name) = r.cstr() else {
            return Expect::Unreadable;
        };
        let sql = r.cstr().unwrap_or_default();
        self.on_sql(sql);
        let slot = Arc::new(Statement::default());
        let (name, prev) = track(&mut self.statements, name, &slot, MAX_STATEMENTS);
        Expect::Parse(Undo { name, prev, slot })
    }

    fn on_bind(&mut self, body: &[u8]) -> Expect {
        let mut r = Reader::new(body);
        let Some(portal) = r.cstr() else {
            return Expect::Unreadable;
        };
        let Some((statement, formats)) = read_bind(&mut r) else {
            // The server refuses it; meanwhile the portal name means nothing known.
            self.portals.remove(portal);
            return Expect::Unreadable;
        };
        let slot = Arc::new(Portal {
            statement: self.statements.get(statement).cloned(),
            formats,
            desc: OnceLock::new(),
        });
        let (name, prev) = track(&mut self.portals, portal, &slot, MAX_PORTALS);
        Expect::Bind(Undo { name, prev, slot })
    }

    fn on_describe(&mut self, body: &[u8]) -> Expect {
        let mut r = Reader::new(body);
        match (r.u8(), r.cstr()) {
            (Some(b'S'), Some(name)) => {
                Expect::DescribeStatement(self.statements.get(name).cloned())
            }
            (Some(b'P'), Some(name)) => Expect::DescribePortal(self.portals.get(name).cloned()),
            _ => Expect::Unreadable,
        }
    }

    fn on_close(&mut self, body: &[u8]) -> Expect {
        let mut r = Reader::new(body);
        match (r.u8(), r.cstr()) {
            (Some(b'S'), Some(name)) => Expect::Close(Closed::Statement(
                self.statements
                    .remove_entry(name)
                    .filter(|(n, _)| !n.is_empty()),
            )),
            (Some(b'P'), Some(name)) => Expect::Close(Closed::Portal(
                self.portals
                    .remove_entry(name)
                    .filter(|(n, _)| !n.is_empty()),
            )),
            (Some(_), Some(_)) => Expect::Close(Closed::Other),
            _ => Expect::Unreadable,
        }
    }

    /// Takes back the client-side effect of a frame the server did not carry out.
    fn undo(&mut self, entry: Expect) {
        match entry {
            Expect::Parse(u) => undo(&mut self.statements, u),
            Expect::Bind(u) => undo(&mut self.portals, u),
            Expect::Close(Closed::Statement(Some((name, slot)))) => {
                self.statements.entry(name).or_insert(slot);
            }
            Expect::Close(Closed::Portal(Some((name, slot)))) => {
                self.portals.entry(name).or_insert(slot);
            }
            _ => {}
        }
    }

    // ---- backend side ----

    /// Frames that answer client frames.
    fn response(&mut self, tag: u8, body: &[u8], out: &mut Vec<u8>) -> bool {
        // A COPY ends at the first frame that is not part of it: send what it carried
        // before that frame.
        let flushed = match &mut self.copy {
            Some(c) if tag != b'd' => {
                let wrote = c.finish(&self.masker, &mut sink!(self), out);
                self.copy = None;
                wrote
            }
            _ => false,
        };
        let rewritten = match tag {
            b'T' => {
                self.on_row_description(body);
                false
            }
            b'E' => {
                let r = text::report(&self.masker, &mut sink!(self), b'E', body, out);
                self.on_error();
                r
            }
            b'Z' => {
                self.on_ready();
                false
            }
            b'C' | b'I' => {
                self.result = None;
                match self.queue.front() {
                    Some(Expect::Execute(_)) => self.pop(),
                    Some(Expect::Query) => {}
                    _ => self.confused = true,
                }
                false
            }
            b's' => {
                self.expect(|e| matches!(e, Expect::Execute(_)));
                false
            }
            b'1' => {
                self.expect(|e| matches!(e, Expect::Parse(_)));
                false
            }
            b'2' => {
                self.expect(|e| matches!(e, Expect::Bind(_)));
                false
            }
            b'3' => {
                self.expect(|e| matches!(e, Expect::Close(_)));
                false
            }
            b't' => {
                if !matches!(self.queue.front(), Some(Expect::DescribeStatement(_))) {
                    self.confused = true;
                }
                false
            }
            b'n' => {
                self.on_description(None);
                false
            }
            b'G' => {
                if !matches!(self.queue.front(), Some(Expect::Query | Expect::Execute(_))) {
                    self.confused = true;
                }
                false
            }
            b'H' | b'W' => self.on_copy_start(tag, body, out),
            b'V' => {
                let binary = match self.queue.front() {
                    Some(Expect::FunctionCall { binary }) => *binary,
                    _ => {
                        self.confused = true;
                        true
                    }
                };
                text::function_result(&self.masker, &mut sink!(self), binary, body, out)
            }
            // CopyDone: the COPY state was flushed and dropped above.
            _ => false,
        };
        if flushed && !rewritten {
            frames::frame(out, tag, body);
        }
        flushed || rewritten
    }

    /// Pops the front entry if `ok` says the frame answers it; otherwise the sequence is
    /// not one we can follow.
    fn expect(&mut self, ok: impl Fn(&Expect) -> bool) {
        if self.queue.front().is_some_and(ok) {
            self.pop();
        } else {
            self.confused = true;
        }
    }

    fn pop(&mut self) {
        self.queue.pop_front();
        self.result = None;
    }

    fn on_row_description(&mut self, body: &[u8]) {
        let desc = self.desc(body);
        match self.queue.front() {
            Some(Expect::DescribeStatement(_) | Expect::DescribePortal(_)) => {
                self.on_description(desc);
            }
            front => {
                if !matches!(front, Some(Expect::Query)) {
                    self.confused = true;
                }
                self.result = Some(match desc {
                    Some(d) => Active::Known {
                        plan: d.plan(&self.masker, None, &self.pass),
                        columns: d.columns(),
                        noticed: false,
                    },
                    None => Active::Unknown {
                        formats: Formats::Text,
                        noticed: false,
                    },
                });
            }
        }
    }

    /// A `RowDescription` (`Some`, or `None` if unreadable) or `NoData` (`None`) answering
    /// a `Describe`.
    fn on_description(&mut self, desc: Option<Arc<Desc>>) {
        match self.queue.front() {
            Some(Expect::DescribeStatement(s)) => {
                if let Some(s) = s {
                    let _ = s.desc.set(desc);
                }
            }
            Some(Expect::DescribePortal(p)) => {
                if let Some(p) = p {
                    let _ = p.desc.set(desc);
                }
            }
            _ => {
                self.confused = true;
                return;
            }
        }
        self.pop();
    }

    fn on_error(&mut self) {
        self.result = None;
        match self.queue.front() {
            // Part of these responses: ReadyForQuery follows.
            Some(Expect::Query | Expect::FunctionCall { .. } | Expect::Sync) | None => {}
            Some(_) => {
                // The failed extended-protocol frame, and everything up to the next Sync,
                // which the server skips.
                let mut skipped = Vec::new();
                if let Some(failed) = self.queue.pop_front() {
                    // A failed Parse or Bind of a named statement or portal leaves the
                    // earlier one in place (the unnamed ones are gone either way).
                    let named = match &failed {
                        Expect::Parse(u) => u.name.as_ref().is_some_and(|n| !n.is_empty()),
                        Expect::Bind(u) => u.name.as_ref().is_some_and(|n| !n.is_empty()),
                        _ => false,
                    };
                    if named {
                        self.undo(failed);
                    }
                }
                while let Some(front) = self.queue.front() {
                    if matches!(front, Expect::Sync) {
                        break;
                    }
                    if let Some(e) = self.queue.pop_front() {
                        skipped.push(e);
                    }
                }
                for e in skipped.into_iter().rev() {
                    self.undo(e);
                }
            }
        }
    }

    fn on_ready(&mut self) {
        self.result = None;
        let mut clean = true;
        loop {
            match self.queue.pop_front() {
                Some(e) if e.ends_with_ready() => break,
                Some(_) => clean = false,
                None => {
                    match &mut self.overflow {
                        Some(o) if o.ready > 0 => {
                            o.ready -= 1;
                            if o.ready == 0 && !o.tail {
                                self.overflow = None;
                            }
                        }
                        // ReadyForQuery with nothing awaited (the one that ends startup):
                        // there is nothing it could be matched with wrongly.
                        _ => {}
                    }
                    break;
                }
            }
        }
        if !clean {
            self.confused = true;
        } else if self.queue.is_empty() && self.overflow.is_none() {
            self.confused = false;
        }
    }

    /// The description for a `RowDescription` body, cached by its bytes.
    fn desc(&mut self, body: &[u8]) -> Option<Arc<Desc>> {
        if let Some((_, d)) = self.descs.iter().find(|(b, _)| **b == *body) {
            return Some(d.clone());
        }
        let fields = read_row_description(body)?;
        let desc = Arc::new(self.masker.describe(&fields, &self.catalog));
        if body.len() <= DESC_CACHE_MAX_BODY {
            if self.descs.len() >= DESC_CACHE {
                self.descs.pop_front();
            }
            self.descs.push_back((body.into(), desc.clone()));
        }
        Some(desc)
    }

    /// What the rows now arriving are, when no `RowDescription` said so.
    fn resolve(&self) -> Active {
        let unknown = |formats: Formats| Active::Unknown {
            formats,
            noticed: false,
        };
        let portal = match self.queue.front() {
            Some(Expect::Execute(portal)) => portal,
            // A query's rows with no RowDescription before them: text, as the simple
            // protocol always is.
            Some(Expect::Query) => return unknown(Formats::Text),
            // Rows nothing asked for: their formats are unknown too.
            _ => return unknown(Formats::All(true)),
        };
        let Some(portal) = portal else {
            // A portal we do not track (bound by SQL, or past the caps).
            return unknown(Formats::All(true));
        };
        let known = |desc: &Arc<Desc>, formats: Option<&Formats>| Active::Known {
            plan: desc.plan(&self.masker, formats, &self.pass),
            columns: desc.columns(),
            noticed: false,
        };
        match portal.desc.get() {
            Some(Some(desc)) => return known(desc, None),
            // Described as returning no rows, yet rows come.
            Some(None) => return unknown(portal.formats.clone()),
            None => {}
        }
        match portal.statement.as_ref().and_then(|s| s.desc.get()) {
            Some(Some(desc)) => known(desc, Some(&portal.formats)),
            _ => unknown(portal.formats.clone()),
        }
    }

    fn data_row(&mut self, body: &[u8], out: &mut Vec<u8>) -> bool {
        let rewritten = self.data_row_inner(body, out);
        if self.tmp.capacity() > MAX_KEPT_BUFFER {
            self.tmp = Vec::new();
        }
        rewritten
    }

    fn data_row_inner(&mut self, body: &[u8], out: &mut Vec<u8>) -> bool {
        if self.confused && !matches!(self.result, Some(Active::Unknown { .. })) {
            // Nothing is known about these rows: not even their formats, so every value
            // is treated as binary (NULL is a valid value in either format).
            self.result = Some(Active::Unknown {
                formats: Formats::All(true),
                noticed: false,
            });
        }
        if self.result.is_none() {
            self.result = Some(self.resolve());
        }
        let (plan, notice) = match &mut self.result {
            Some(Active::Known {
                plan,
                columns,
                noticed,
            }) => {
                if plan.all_pass && body.get(..2) == Some(&columns.to_be_bytes()) {
                    return false;
                }
                // (An all-pass plan with another column count falls through: its row
                // cannot be placed and is masked fail-closed.)
                let notice = if *noticed {
                    None
                } else {
                    plan.notice.as_deref()
                };
                *noticed = true;
                (rows::RowPlan::Known(plan), notice.map(rows::Notice::Frame))
            }
            Some(Active::Unknown { formats, noticed }) => {
                let notice = (!*noticed && self.masker.has_column_rules())
                    .then_some(rows::Notice::UnknownColumns);
                *noticed = true;
                (rows::RowPlan::Unknown(formats), notice)
            }
            None => return false,
        };
        let mut sink = sink!(self);
        rows::mask_row(&self.masker, &mut sink, plan, notice, body, out)
    }

    fn copy_data(&mut self, body: &[u8], out: &mut Vec<u8>) -> bool {
        if self.copy.is_none() {
            // COPY data with no CopyOutResponse before it: nothing is known about it.
            self.confused = true;
            self.copy = copy::CopyOut::new(&self.masker, true);
        }
        let Some(c) = &mut self.copy else {
            return false;
        };
        let mut sink = sink!(self);
        c.data(&self.masker, &mut sink, body, out)
    }

    fn on_copy_start(&mut self, tag: u8, body: &[u8], out: &mut Vec<u8>) -> bool {
        if !matches!(self.queue.front(), Some(Expect::Query | Expect::Execute(_))) {
            self.confused = true;
        }
        // CopyBoth (replication) data is never COPY text: treat it as binary.
        let binary = tag == b'W' || Reader::new(body).u8().is_none_or(|f| f != 0);
        self.copy = copy::CopyOut::new(&self.masker, binary);
        if self.masker.has_column_rules() {
            frames::frame(out, tag, body);
            copy::notice(&self.masker, out);
            return true;
        }
        false
    }
}

/// Maps `name` to `slot` (if the name is short enough and the table has room or already
/// has the name); returns the tracked name and what it meant before.
fn track<T>(
    table: &mut HashMap<Box<[u8]>, Arc<T>>,
    name: &[u8],
    slot: &Arc<T>,
    cap: usize,
) -> (Option<Box<[u8]>>, Option<Arc<T>>) {
    let prev = table.remove(name);
    if name.len() > MAX_NAME || table.len() >= cap {
        return (None, prev);
    }
    let name: Box<[u8]> = name.into();
    table.insert(name.clone(), slot.clone());
    (Some(name), prev)
}

fn undo<T>(table: &mut HashMap<Box<[u8]>, Arc<T>>, u: Undo<T>) {
    let Some(name) = u.name else {
        return;
    };
    if table
        .get(&name)
        .is_some_and(|cur| Arc::ptr_eq(cur, &u.slot))
    {
        match u.prev {
            Some(prev) => {
                table.insert(name, prev);
            }
            None => {
                table.remove(&name);
            }
        }
    }
}

/// The statement name and result formats of a `Bind` (after its portal name).
fn read_bind<'a>(r: &mut Reader<'a>) -> Option<(&'a [u8], Formats)> {
    let statement = r.cstr()?;
    let n = r.u16()?;
    r.take(usize::from(n) * 2)?;
    let params = r.u16()?;
    for _ in 0..params {
        r.nullable()?;
    }
    let n = r.u16()?;
    let formats = match n {
        0 => Formats::Text,
        1 => Formats::All(r.i16()? != 0),
        n if n > MAX_FORMAT_CODES => {
            r.take(usize::from(n) * 2)?;
            Formats::All(true)
        }
        n => {
            let mut codes = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                codes.push(r.i16()?);
            }
            Formats::Each(codes.into())
        }
    };
    r.is_empty().then_some((statement, formats))
}

/// The fields of a `RowDescription`, `None` if it does not read as one.
fn read_row_description(body: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut r = Reader::new(body);
    let n = r.u16()?;
    // Each field takes at least 19 bytes: check before reserving.
    if usize::from(n) * 19 > r.rest().len() {
        return None;
    }
    let mut fields = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let name = r.cstr()?;
        let table_oid = r.u32()?;
        let attnum = r.i16()?;
        let type_oid = r.u32()?;
        let _size = r.i16()?;
        let _modifier = r.i32()?;
        let format = r.i16()?;
        fields.push(Field {
            name,
            table_oid,
            attnum,
            type_oid,
            format,
        });
    }
    r.is_empty().then_some(fields)
}
