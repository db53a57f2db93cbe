//! What the gateway measures about itself: per-worker counters, latency histograms and a
//! top-K of statement fingerprints, merged only when someone scrapes them.
//!
//! Every worker owns one [`WorkerMetrics`] and is the only thread that writes it, so an
//! increment is a relaxed load and store on a cache line no other core writes (no
//! `lock`-prefixed instruction, no line bouncing between cores); the scrape thread reads
//! the same words and may see a counter one increment behind, which is harmless. Nothing
//! here takes a lock on the data path: the fingerprint table lives in the worker
//! ([`StatementTop`]) and is copied into a mutex-guarded slot once per gate tick, and the
//! per-rule masking counts are added once per session end.
//!
//! Histograms have fixed log-linear buckets (ten per decade, 1 µs to 800 s: a value lands
//! in a bucket whose bounds are within 25 % of each other), so a worker records with a
//! binary search over 90 words and the scrape adds buckets across workers without any
//! conversion; Prometheus gets a coarser, aligned subset of the bounds.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use sluice_classify::Class;

/// A counter written by one thread only (its worker) and read by any.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker calls this: a load and a store, not a
    /// read-modify-write, because no other thread writes the word.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Replaces the value (for gauges the worker refreshes on its tick).
    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bucket upper bounds in nanoseconds: 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k µs.
const STEPS_PER_DECADE: [u64; 10] = [100, 125, 150, 200, 250, 300, 400, 500, 600, 800];
const DECADES: usize = 9;
/// Number of finite bounds; one more bucket holds everything above the last.
pub const BOUNDS: usize = DECADES * STEPS_PER_DECADE.len();

const fn bounds_ns() -> [u64; BOUNDS] {
    let mut out = [0u64; BOUNDS];
    let mut decade = 0;
    let mut scale = 10u64; // 100 × 10 ns = 1 µs
    while decade < DECADES {
        let mut step = 0;
        while step < STEPS_PER_DECADE.len() {
            out[decade * STEPS_PER_DECADE.len() + step] = STEPS_PER_DECADE[step] * scale;
            step += 1;
        }
        scale *= 10;
        decade += 1;
    }
    out
}

/// Upper bound of each finite bucket, in nanoseconds.
pub static BOUNDS_NS: [u64; BOUNDS] = bounds_ns();

/// The `le` bounds (ns) of the statement latency histograms in Prometheus: 5 µs to 10 s.
pub const LATENCY_EXPOSED_NS: [u64; 20] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The `le` bounds (ns) of approval waits: 1 s to 500 s.
pub const WAIT_EXPOSED_NS: [u64; 9] = [
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    25_000_000_000,
    50_000_000_000,
    100_000_000_000,
    250_000_000_000,
    500_000_000_000,
];

/// A latency histogram with the fixed buckets above, written by one worker.
#[derive(Debug)]
pub struct Histogram {
    buckets: [Counter; BOUNDS + 1],
    sum_ns: Counter,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| Counter::default()),
            sum_ns: Counter::default(),
        }
    }
}

impl Histogram {
    /// Records one duration.
    #[inline]
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.record_ns(ns);
    }

    /// Records one duration given in nanoseconds.
    #[inline]
    pub fn record_ns(&self, ns: u64) {
        let index = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.buckets[index].inc();
        self.sum_ns.add(ns);
    }

    /// A copy of the current buckets, to merge.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut out = HistogramSnapshot::default();
        out.add(self);
        out
    }
}

/// Histogram buckets merged across workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Count per bucket (the last is above every bound).
    pub buckets: [u64; BOUNDS + 1],
    /// Sum of every recorded value (ns).
    pub sum_ns: u64,
}

impl Default for HistogramSnapshot {
    fn default() -> Self {
        HistogramSnapshot {
            buckets: [0; BOUNDS + 1],
            sum_ns: 0,
        }
    }
}

impl HistogramSnapshot {
    /// Adds a worker's histogram.
    pub fn add(&mut self, h: &Histogram) {
        for (total, bucket) in self.buckets.iter_mut().zip(&h.buckets) {
            *total += bucket.get();
        }
        self.sum_ns += h.sum_ns.get();
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Values at or below `bound_ns`, which must be one of [`BOUNDS_NS`].
    pub fn count_le(&self, bound_ns: u64) -> u64 {
        let last = BOUNDS_NS.partition_point(|&b| b <= bound_ns);
        self.buckets[..last].iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), in nanoseconds; `None`
    /// when nothing was recorded. Values above the last bound report the last bound.
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(BOUNDS_NS[index.min(BOUNDS - 1)]);
            }
        }
        Some(BOUNDS_NS[BOUNDS - 1])
    }
}

/// How a statement's policy decision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A rule allowed it.
    Allow,
    /// A rule refused it.
    Deny,
    /// It was held and an approver let it run.
    Approved,
    /// It was held and refused (rejected, timed out, or no approver reachable).
    Rejected,
}

impl Decision {
    /// Every decision, in label order.
    pub const ALL: [Decision; 4] = [
        Decision::Allow,
        Decision::Deny,
        Decision::Approved,
        Decision::Rejected,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Approved => "approved",
            Decision::Rejected => "rejected",
        }
    }
}

/// Why a connection was refused before it became a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedReason {
    /// Bad or missing token.
    Auth,
    /// Policy refused the session, or there is no current policy.
    Policy,
    /// A limit (connections, rate, size).
    Limits,
    /// An invalid startup or authentication message, or a failed TLS handshake.
    Protocol,
    /// The handshake took too long.
    Timeout,
    /// The backend could not be reached or refused the gateway's login.
    Backend,
    /// Anything else.
    Other,
}

impl RefusedReason {
    /// Every reason, in label order.
    pub const ALL: [RefusedReason; 7] = [
        RefusedReason::Auth,
        RefusedReason::Policy,
        RefusedReason::Limits,
        RefusedReason::Protocol,
        RefusedReason::Timeout,
        RefusedReason::Backend,
        RefusedReason::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusedReason::Auth => "auth",
            RefusedReason::Policy => "policy",
            RefusedReason::Limits => "limits",
            RefusedReason::Protocol => "protocol",
            RefusedReason::Timeout => "timeout",
            RefusedReason::Backend => "backend",
            RefusedReason::Other => "other",
        }
    }

    /// The reason a refusal with this SQLSTATE stands for.
    pub fn of_sqlstate(code: &str) -> RefusedReason {
        match code.get(..2) {
            Some("28") => RefusedReason::Auth,
            Some("53") => RefusedReason::Limits,
            Some("08") if code == "08001" || code == "08006" => RefusedReason::Backend,
            Some("08") | Some("0A") => RefusedReason::Protocol,
            Some("58") => RefusedReason::Backend,
            _ if code == "42501" || code == "57P03" || code == "3D000" => RefusedReason::Policy,
            _ => RefusedReason::Other,
        }
    }
}

fn class_index(class: Class) -> usize {
    Class::ALL
        .iter()
        .position(|c| *c == class)
        .unwrap_or(Class::ALL.len() - 1)
}

/// One resource's statement counters and latency histograms on one worker.
#[derive(Debug)]
pub struct ResourceMetrics {
    /// Resource name (from the config).
    pub name: String,
    statements: Vec<[Counter; 4]>,
    added: Vec<Histogram>,
    upstream: Vec<Histogram>,
    /// Statements the backend answered with an error.
    pub statement_errors: Counter,
    /// Rows reported by `CommandComplete`.
    pub rows: Counter,
}

impl ResourceMetrics {
    fn new(name: String) -> ResourceMetrics {
        let classes = Class::ALL.len();
        ResourceMetrics {
            name,
            statements: (0..classes)
                .map(|_| std::array::from_fn(|_| Counter::default()))
                .collect(),
            added: (0..classes).map(|_| Histogram::default()).collect(),
            upstream: (0..classes).map(|_| Histogram::default()).collect(),
            statement_errors: Counter::default(),
            rows: Counter::default(),
        }
    }

    /// Counts one statement with its decision.
    #[inline]
    pub fn statement(&self, class: Class, decision: Decision) {
        let d = Decision::ALL
            .iter()
            .position(|x| *x == decision)
            .unwrap_or(0);
        self.statements[class_index(class)][d].inc();
    }

    /// Records the time a round trip spent in the gateway (both directions) and at the
    /// backend.
    #[inline]
    pub fn round_trip(&self, class: Class, added_ns: u64, upstream_ns: u64) {
        let c = class_index(class);
        self.added[c].record_ns(added_ns);
        self.upstream[c].record_ns(upstream_ns);
    }
}

/// Everything one worker measures. Written only by that worker's thread.
pub struct WorkerMetrics {
    /// The worker's index.
    pub worker: usize,
    /// Connections accepted.
    pub connections_accepted: Counter,
    /// Connections whose session (or refusal) is over.
    pub connections_closed: Counter,
    connections_refused: [Counter; 7],
    /// Client TLS handshakes completed.
    pub tls_handshakes: Counter,
    /// Client TLS handshakes that failed.
    pub tls_failures: Counter,
    /// From the first byte of a connection to the verdict on its token and policy.
    pub auth_latency: Histogram,
    /// Sessions that reached the backend and relayed.
    pub sessions_started: Counter,
    /// Per resource, in config order.
    pub resources: Vec<ResourceMetrics>,
    /// Statements held for approval so far, and settled so far (the gauge is the
    /// difference).
    pub held: Counter,
    /// Held statements whose wait is over.
    pub held_settled: Counter,
    /// How long held statements waited.
    pub approval_wait: Histogram,
    /// Bytes read from clients and from backends.
    pub bytes_from_client: Counter,
    /// Bytes read from backends.
    pub bytes_from_backend: Counter,
    /// Backend bytes walked by sessions with a masking profile.
    pub masking_bytes: Counter,
    /// Time spent walking (and masking) those bytes.
    pub masking_ns: Counter,
    /// Values masked, by (profile, rule); added at each session end.
    masked: Mutex<BTreeMap<(String, String), u64>>,
    /// Control's generation of the snapshot in force.
    pub snapshot_generation: Counter,
    /// Snapshots installed (including the first).
    pub snapshot_installs: Counter,
    /// Snapshots refused as invalid.
    pub snapshot_failures: Counter,
    /// When control last proved alive (ms since the epoch; 0 = never).
    pub snapshot_heard_ms: Counter,
    /// 1 when the worker admits sessions (snapshot present and fresh).
    pub snapshot_fresh: Counter,
    /// The worker's last tick (ms since the epoch): a worker that stops ticking is stuck.
    pub last_tick_ms: Counter,
    /// The fingerprint table as of the worker's last tick.
    top: Mutex<Vec<TopEntry>>,
    /// The worker's session recorder, once it has one (its own counters are read at
    /// scrape time).
    pub recorder: std::sync::OnceLock<sluice_recorder::RecorderHandle>,
}

impl std::fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerMetrics")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl WorkerMetrics {
    /// Metrics for worker `worker` serving `resources` (config order).
    pub fn new(worker: usize, resources: impl IntoIterator<Item = String>) -> WorkerMetrics {
        WorkerMetrics {
            worker,
            connections_accepted: Counter::default(),
            connections_closed: Counter::default(),
            connections_refused: std::array::from_fn(|_| Counter::default()),
            tls_handshakes: Counter::default(),
            tls_failures: Counter::default(),
            auth_latency: Histogram::default(),
            sessions_started: Counter::default(),
            resources: resources.into_iter().map(ResourceMetrics::new).collect(),
            held: Counter::default(),
            held_settled: Counter::default(),
            approval_wait: Histogram::default(),
            bytes_from_client: Counter::default(),
            bytes_from_backend: Counter::default(),
            masking_bytes: Counter::default(),
            masking_ns: Counter::default(),
            masked: Mutex::new(BTreeMap::new()),
            snapshot_generation: Counter::default(),
            snapshot_installs: Counter::default(),
            snapshot_failures: Counter::default(),
            snapshot_heard_ms: Counter::default(),
            snapshot_fresh: Counter::default(),
            last_tick_ms: Counter::default(),
            top: Mutex::new(Vec::new()),
            recorder: std::sync::OnceLock::new(),
        }
    }

    /// Index of a resource by name.
    pub fn resource_index(&self, name: &str) -> Option<usize> {
        self.resources.iter().position(|r| r.name == name)
    }

    /// Counts a refused connection.
    pub fn refused(&self, reason: RefusedReason) {
        let i = RefusedReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(RefusedReason::ALL.len() - 1);
        self.connections_refused[i].inc();
    }

    /// Adds a session's masked counts (once, at its end).
    pub fn add_masked(&self, profile: &str, counts: &BTreeMap<String, u64>) {
        if counts.is_empty() {
            return;
        }
        let mut masked = self.masked.lock().unwrap_or_else(PoisonError::into_inner);
        for (rule, n) in counts {
            *masked
                .entry((profile.to_owned(), rule.clone()))
                .or_default() += n;
        }
    }

    /// Publishes the worker's fingerprint table for scrapes.
    pub fn publish_top(&self, entries: Vec<TopEntry>) {
        *self.top.lock().unwrap_or_else(PoisonError::into_inner) = entries;
    }
}

/// One statement fingerprint's totals, as `sluice top` shows them.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TopEntry {
    /// Fingerprint (hex).
    pub fingerprint: String,
    /// Resource.
    pub resource: String,
    /// Statement class.
    pub class: String,
    /// Normalized text (literals replaced), cut to [`TOP_TEXT_MAX`] bytes.
    pub statement: String,
    /// Statements answered (an over-estimate by at most `error` once the table is full).
    pub count: u64,
    /// Upper bound of the over-estimate in `count` (space-saving).
    pub error: u64,
    /// Statements the backend answered with an error.
    pub errors: u64,
    /// Rows reported by `CommandComplete`.
    pub rows: u64,
    /// Time from sending to the answer, summed (µs).
    pub total_us: u64,
    /// Round trips whose gateway time was measured, and its sum and maximum (ns).
    pub added_samples: u64,
    /// Sum of the measured gateway time (ns).
    pub added_sum_ns: u64,
    /// Largest measured gateway time (ns).
    pub added_max_ns: u64,
}

/// Hashes a statement fingerprint (itself a 64-bit hash) to itself.
#[derive(Default)]
pub struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys reach this map; fold anything else rather than panic.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Longest statement text kept per fingerprint.
pub const TOP_TEXT_MAX: usize = 200;

/// A worker's table of the statement fingerprints seen most (space-saving sketch): when
/// the table is full, a new fingerprint replaces the one with the smallest count and
/// inherits that count as its possible over-estimate, so the heavy hitters are never
/// lost whatever the stream. Worker-local; copied out on the tick.
#[derive(Debug)]
pub struct StatementTop {
    capacity: usize,
    entries: Vec<TopEntry>,
    /// Fingerprint → index in `entries`. A fingerprint is already a hash: it is used as
    /// its own (no SipHash on every statement).
    index: HashMap<u64, usize, std::hash::BuildHasherDefault<FingerprintHasher>>,
    /// Resource and fingerprint of each entry (the key as numbers).
    keys: Vec<u64>,
    dirty: bool,
}

impl StatementTop {
    /// A table of at most `capacity` fingerprints.
    pub fn new(capacity: usize) -> StatementTop {
        StatementTop {
            capacity: capacity.max(1),
            entries: Vec::new(),
            index: HashMap::default(),
            keys: Vec::new(),
            dirty: false,
        }
    }

    /// Counts one answered statement.
    #[allow(clippy::too_many_arguments)]
    pub fn statement(
        &mut self,
        fingerprint: u64,
        resource: &str,
        class: Class,
        text: &str,
        failed: bool,
        rows: u64,
        total_us: u64,
    ) {
        let i = self.slot(fingerprint, resource, class, text);
        let e = &mut self.entries[i];
        e.count += 1;
        e.errors += u64::from(failed);
        e.rows += rows;
        e.total_us += total_us;
        self.dirty = true;
    }

    /// Adds a measured gateway time to a fingerprint already in the table.
    pub fn added(&mut self, fingerprint: u64, ns: u64) {
        if let Some(&i) = self.index.get(&fingerprint) {
            let e = &mut self.entries[i];
            e.added_samples += 1;
            e.added_sum_ns += ns;
            e.added_max_ns = e.added_max_ns.max(ns);
            self.dirty = true;
        }
    }

    fn slot(&mut self, fingerprint: u64, resource: &str, class: Class, text: &str) -> usize {
        if let Some(&i) = self.index.get(&fingerprint) {
            return i;
        }
        let fresh = TopEntry {
            fingerprint: format!("{fingerprint:016x}"),
            resource: resource.to_owned(),
            class: class.as_str().to_owned(),
            statement: cut(text, TOP_TEXT_MAX).to_owned(),
            count: 0,
            error: 0,
            errors: 0,
            rows: 0,
            total_us: 0,
            added_samples: 0,
            added_sum_ns: 0,
            added_max_ns: 0,
        };
        if self.entries.len() < self.capacity {
            self.entries.push(fresh);
            self.keys.push(fingerprint);
            self.index.insert(fingerprint, self.entries.len() - 1);
            return self.entries.len() - 1;
        }
        let (victim, _) = self
            .entries
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.count)
            .unwrap_or((0, &self.entries[0]));
        let inherited = self.entries[victim].count;
        self.index.remove(&self.keys[victim]);
        self.entries[victim] = TopEntry {
            count: inherited,
            error: inherited,
            ..fresh
        };
        self.keys[victim] = fingerprint;
        self.index.insert(fingerprint, victim);
        victim
    }

    /// The table, if it changed since the last call.
    pub fn take_changed(&mut self) -> Option<Vec<TopEntry>> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        Some(self.entries.clone())
    }
}

fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Sort orders for the fingerprint table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopOrder {
    /// Total gateway time added (mean × count).
    AddedLatency,
    /// Statements answered.
    Count,
    /// Rows returned or affected.
    Rows,
    /// Total time from sending to answer.
    Time,
}

impl TopOrder {
    /// Parses a `by` value.
    pub fn parse(s: &str) -> Option<TopOrder> {
        match s {
            "added-latency" | "added" => Some(TopOrder::AddedLatency),
            "count" | "calls" => Some(TopOrder::Count),
            "rows" => Some(TopOrder::Rows),
            "time" | "total-time" => Some(TopOrder::Time),
            _ => None,
        }
    }
}

/// Merges every worker's published table: one entry per (resource, fingerprint), sorted by
/// `order`, at most `limit`.
pub fn merged_top(
    workers: &[Arc<WorkerMetrics>],
    resource: Option<&str>,
    order: TopOrder,
    limit: usize,
) -> Vec<TopEntry> {
    let mut merged: BTreeMap<(String, String), TopEntry> = BTreeMap::new();
    for w in workers {
        let entries = w.top.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for e in entries {
            if resource.is_some_and(|r| r != e.resource) {
                continue;
            }
            match merged.entry((e.resource.clone(), e.fingerprint.clone())) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(e);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let m = o.get_mut();
                    m.count += e.count;
                    m.error += e.error;
                    m.errors += e.errors;
                    m.rows += e.rows;
                    m.total_us += e.total_us;
                    m.added_samples += e.added_samples;
                    m.added_sum_ns += e.added_sum_ns;
                    m.added_max_ns = m.added_max_ns.max(e.added_max_ns);
                }
            }
        }
    }
    let mut out: Vec<TopEntry> = merged.into_values().collect();
    let key = |e: &TopEntry| -> u128 {
        match order {
            TopOrder::AddedLatency => {
                // Mean measured time × statements: what the fingerprint costs in total.
                let mean = e.added_sum_ns.checked_div(e.added_samples).unwrap_or(0);
                u128::from(mean) * u128::from(e.count)
            }
            TopOrder::Count => u128::from(e.count),
            TopOrder::Rows => u128::from(e.rows),
            TopOrder::Time => u128::from(e.total_us),
        }
    };
    out.sort_by(|a, b| key(b).cmp(&key(a)).then(a.fingerprint.cmp(&b.fingerprint)));
    out.truncate(limit);
    out
}

/// Backend reachability as the readiness check last saw it.
#[derive(Debug, Clone, Serialize)]
pub struct BackendCheck {
    /// Resource name.
    pub resource: String,
    /// Whether a TCP connection opened within the timeout.
    pub reachable: bool,
    /// The error, when not.
    pub error: Option<String>,
    /// How long the connect took (µs).
    pub connect_us: u64,
}

/// Recording figures of one worker, read from its recorder.
#[derive(Debug, Clone, Default)]
pub struct RecordingFigures {
    /// Records written.
    pub records: u64,
    /// Record bytes before compression.
    pub bytes_in: u64,
    /// Bytes written to segment files.
    pub bytes_out: u64,
    /// Blocks written.
    pub blocks: u64,
    /// Writer operations that wrote at least one block.
    pub flushes: u64,
    /// Their total time (µs).
    pub flush_sum_us: u64,
    /// Their worst time (µs).
    pub flush_max_us: u64,
    /// Appends that found the queue full.
    pub queue_full: u64,
    /// Bytes waiting in the queue now.
    pub queued_bytes: u64,
    /// The queue's capacity (bytes).
    pub queue_capacity: u64,
    /// Records lost to a writer failure.
    pub unwritten: u64,
    /// Segments sealed.
    pub segments_sealed: u64,
    /// fsync calls.
    pub fsyncs: u64,
}

/// A Prometheus text exposition writer that emits each family's `HELP`/`TYPE` once.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                escape_label(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        h: &HistogramSnapshot,
        exposed: &[u64],
    ) {
        let bucket = format!("{name}_bucket");
        for &bound in exposed {
            let le = seconds(bound);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, h.count_le(bound));
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, h.count());
        self.sample(&format!("{name}_sum"), labels, seconds(h.sum_ns));
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

fn seconds(ns: u64) -> String {
    let s = format!("{:.9}", ns as f64 / 1e9);
    let s = s.trim_end_matches('0');
    s.strip_suffix('.').unwrap_or(s).to_owned()
}

fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// What a scrape reads besides the workers' own metrics.
#[derive(Debug, Default)]
pub struct ScrapeExtras {
    /// Per worker, its recorder's figures (when recording is on).
    pub recording: Vec<RecordingFigures>,
    /// Backend checks, when the scrape ran them.
    pub backends: Vec<BackendCheck>,
    /// Now, ms since the epoch.
    pub now_ms: u64,
    /// Scrapes served so far (this one included).
    pub scrapes: u64,
}

/// Renders every worker's metrics, merged, as Prometheus text (format 0.0.4).
pub fn render_prometheus(workers: &[Arc<WorkerMetrics>], extras: &ScrapeExtras) -> String {
    let mut x = Exposition {
        out: String::with_capacity(16 * 1024),
    };
    let sum = |f: &dyn Fn(&WorkerMetrics) -> u64| -> u64 { workers.iter().map(|w| f(w)).sum() };

    x.family(
        "sluice_connections_accepted_total",
        "counter",
        "Client connections accepted.",
    );
    x.sample(
        "sluice_connections_accepted_total",
        &[],
        sum(&|w| w.connections_accepted.get()),
    );
    x.family(
        "sluice_connections_active",
        "gauge",
        "Client connections open now (handshaking or in a session).",
    );
    x.sample(
        "sluice_connections_active",
        &[],
        sum(&|w| w.connections_accepted.get()).saturating_sub(sum(&|w| w.connections_closed.get())),
    );
    x.family(
        "sluice_connections_refused_total",
        "counter",
        "Connections refused before a session started, by reason.",
    );
    for (i, reason) in RefusedReason::ALL.iter().enumerate() {
        x.sample(
            "sluice_connections_refused_total",
            &[("reason", reason.as_str())],
            sum(&|w| w.connections_refused[i].get()),
        );
    }
    x.family(
        "sluice_sessions_started_total",
        "counter",
        "Sessions admitted and logged in to their backend.",
    );
    x.sample(
        "sluice_sessions_started_total",
        &[],
        sum(&|w| w.sessions_started.get()),
    );
    x.family(
        "sluice_tls_handshakes_total",
        "counter",
        "Client TLS handshakes, by outcome.",
    );
    x.sample(
        "sluice_tls_handshakes_total",
        &[("outcome", "ok")],
        sum(&|w| w.tls_handshakes.get()),
    );
    x.sample(
        "sluice_tls_handshakes_total",
        &[("outcome", "failed")],
        sum(&|w| w.tls_failures.get()),
    );
    let mut auth = HistogramSnapshot::default();
    for w in workers {
        auth.add(&w.auth_latency);
    }
    x.family(
        "sluice_auth_duration_seconds",
        "histogram",
        "From accepting a connection to the verdict on its token and policy.",
    );
    x.histogram(
        "sluice_auth_duration_seconds",
        &[],
        &auth,
        &LATENCY_EXPOSED_NS,
    );

    // Statements: one series per (resource, class, decision) that has been seen.
    x.family(
        "sluice_statements_total",
        "counter",
        "Statements judged, by resource, class and decision.",
    );
    let resources: Vec<&str> = workers
        .first()
        .map(|w| w.resources.iter().map(|r| r.name.as_str()).collect())
        .unwrap_or_default();
    for (ri, resource) in resources.iter().enumerate() {
        for (ci, class) in Class::ALL.iter().enumerate() {
            for (di, decision) in Decision::ALL.iter().enumerate() {
                let n = sum(&|w| {
                    w.resources
                        .get(ri)
                        .map_or(0, |r| r.statements[ci][di].get())
                });
                if n > 0 {
                    x.sample(
                        "sluice_statements_total",
                        &[
                            ("resource", resource),
                            ("class", class.as_str()),
                            ("decision", decision.as_str()),
                        ],
                        n,
                    );
                }
            }
        }
    }
    x.family(
        "sluice_statement_errors_total",
        "counter",
        "Statements the backend answered with an error, by resource.",
    );
    for (ri, resource) in resources.iter().enumerate() {
        x.sample(
            "sluice_statement_errors_total",
            &[("resource", resource)],
            sum(&|w| w.resources.get(ri).map_or(0, |r| r.statement_errors.get())),
        );
    }
    x.family(
        "sluice_statement_rows_total",
        "counter",
        "Rows reported by CommandComplete, by resource.",
    );
    for (ri, resource) in resources.iter().enumerate() {
        x.sample(
            "sluice_statement_rows_total",
            &[("resource", resource)],
            sum(&|w| w.resources.get(ri).map_or(0, |r| r.rows.get())),
        );
    }
    for (family, help, pick) in [
        (
            "sluice_added_latency_seconds",
            "Time a round trip spent in the gateway: client's last byte to backend, plus backend's first byte to client.",
            0,
        ),
        (
            "sluice_upstream_latency_seconds",
            "Time from the gateway's send to the backend's first byte of the answer.",
            1,
        ),
    ] {
        x.family(family, "histogram", help);
        for (ri, resource) in resources.iter().enumerate() {
            for (ci, class) in Class::ALL.iter().enumerate() {
                let mut h = HistogramSnapshot::default();
                for w in workers {
                    if let Some(r) = w.resources.get(ri) {
                        h.add(if pick == 0 { &r.added[ci] } else { &r.upstream[ci] });
                    }
                }
                if h.count() > 0 {
                    x.histogram(
                        family,
                        &[("resource", resource), ("class", class.as_str())],
                        &h,
                        &LATENCY_EXPOSED_NS,
                    );
                }
            }
        }
    }
    x.family(
        "sluice_statements_held",
        "gauge",
        "Statements waiting for an approver now.",
    );
    x.sample(
        "sluice_statements_held",
        &[],
        sum(&|w| w.held.get()).saturating_sub(sum(&|w| w.held_settled.get())),
    );
    let mut wait = HistogramSnapshot::default();
    for w in workers {
        wait.add(&w.approval_wait);
    }
    x.family(
        "sluice_approval_wait_seconds",
        "histogram",
        "How long held statements waited for a decision.",
    );
    x.histogram("sluice_approval_wait_seconds", &[], &wait, &WAIT_EXPOSED_NS);

    x.family(
        "sluice_relayed_bytes_total",
        "counter",
        "Bytes relayed, by direction.",
    );
    x.sample(
        "sluice_relayed_bytes_total",
        &[("direction", "client_to_backend")],
        sum(&|w| w.bytes_from_client.get()),
    );
    x.sample(
        "sluice_relayed_bytes_total",
        &[("direction", "backend_to_client")],
        sum(&|w| w.bytes_from_backend.get()),
    );

    x.family(
        "sluice_masked_values_total",
        "counter",
        "Values masked, by masking profile and rule (added when a session ends).",
    );
    let mut masked: BTreeMap<(String, String), u64> = BTreeMap::new();
    for w in workers {
        for (k, v) in w
            .masked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            *masked.entry(k.clone()).or_default() += v;
        }
    }
    for ((profile, rule), n) in &masked {
        x.sample(
            "sluice_masked_values_total",
            &[("profile", profile), ("rule", rule)],
            n,
        );
    }
    x.family(
        "sluice_masking_scanned_bytes_total",
        "counter",
        "Backend bytes walked by sessions with a masking profile.",
    );
    x.sample(
        "sluice_masking_scanned_bytes_total",
        &[],
        sum(&|w| w.masking_bytes.get()),
    );
    x.family(
        "sluice_masking_seconds_total",
        "counter",
        "Time spent walking and masking those bytes.",
    );
    x.sample(
        "sluice_masking_seconds_total",
        &[],
        seconds(sum(&|w| w.masking_ns.get())),
    );

    if !extras.recording.is_empty() {
        let rsum =
            |f: &dyn Fn(&RecordingFigures) -> u64| -> u64 { extras.recording.iter().map(f).sum() };
        for (name, kind, help, value) in [
            (
                "sluice_recording_records_total",
                "counter",
                "Records written to session recordings.",
                rsum(&|r| r.records),
            ),
            (
                "sluice_recording_input_bytes_total",
                "counter",
                "Record bytes before compression.",
                rsum(&|r| r.bytes_in),
            ),
            (
                "sluice_recording_written_bytes_total",
                "counter",
                "Bytes written to segment files.",
                rsum(&|r| r.bytes_out),
            ),
            (
                "sluice_recording_blocks_total",
                "counter",
                "Compressed blocks written.",
                rsum(&|r| r.blocks),
            ),
            (
                "sluice_recording_flushes_total",
                "counter",
                "Writer passes that wrote at least one block.",
                rsum(&|r| r.flushes),
            ),
            (
                "sluice_recording_queue_full_total",
                "counter",
                "Appends that found the queue full (the session waited, or was refused under fail_closed).",
                rsum(&|r| r.queue_full),
            ),
            (
                "sluice_recording_unwritten_records_total",
                "counter",
                "Records lost because a writer failed (each failure also ends its sessions).",
                rsum(&|r| r.unwritten),
            ),
            (
                "sluice_recording_segments_sealed_total",
                "counter",
                "Segments sealed.",
                rsum(&|r| r.segments_sealed),
            ),
            (
                "sluice_recording_fsyncs_total",
                "counter",
                "fsync calls.",
                rsum(&|r| r.fsyncs),
            ),
            (
                "sluice_recording_queued_bytes",
                "gauge",
                "Bytes waiting for the writers now.",
                rsum(&|r| r.queued_bytes),
            ),
            (
                "sluice_recording_queue_capacity_bytes",
                "gauge",
                "The writers' queue capacity.",
                rsum(&|r| r.queue_capacity),
            ),
        ] {
            x.family(name, kind, help);
            x.sample(name, &[], value);
        }
        x.family(
            "sluice_recording_flush_seconds_total",
            "counter",
            "Time spent in writer passes that wrote blocks.",
        );
        x.sample(
            "sluice_recording_flush_seconds_total",
            &[],
            seconds(rsum(&|r| r.flush_sum_us).saturating_mul(1000)),
        );
        x.family(
            "sluice_recording_flush_max_seconds",
            "gauge",
            "The slowest writer pass so far.",
        );
        x.sample(
            "sluice_recording_flush_max_seconds",
            &[],
            seconds(
                extras
                    .recording
                    .iter()
                    .map(|r| r.flush_max_us)
                    .max()
                    .unwrap_or(0)
                    .saturating_mul(1000),
            ),
        );
    }

    // Snapshot: per worker, since each worker installs its own copy.
    x.family(
        "sluice_snapshot_generation",
        "gauge",
        "Control's generation of the policy snapshot in force, per worker.",
    );
    for w in workers {
        let worker = w.worker.to_string();
        x.sample(
            "sluice_snapshot_generation",
            &[("worker", &worker)],
            w.snapshot_generation.get(),
        );
    }
    x.family(
        "sluice_snapshot_age_seconds",
        "gauge",
        "Time since control last proved alive, per worker (-1: never).",
    );
    for w in workers {
        let worker = w.worker.to_string();
        let heard = w.snapshot_heard_ms.get();
        let age = if heard == 0 {
            "-1".to_owned()
        } else {
            seconds(
                extras
                    .now_ms
                    .saturating_sub(heard)
                    .saturating_mul(1_000_000),
            )
        };
        x.sample("sluice_snapshot_age_seconds", &[("worker", &worker)], age);
    }
    x.family(
        "sluice_snapshot_fresh",
        "gauge",
        "1 when the worker has a current snapshot and admits sessions.",
    );
    for w in workers {
        let worker = w.worker.to_string();
        x.sample(
            "sluice_snapshot_fresh",
            &[("worker", &worker)],
            w.snapshot_fresh.get(),
        );
    }
    x.family(
        "sluice_snapshot_reloads_total",
        "counter",
        "Snapshots installed.",
    );
    x.sample(
        "sluice_snapshot_reloads_total",
        &[],
        sum(&|w| w.snapshot_installs.get()),
    );
    x.family(
        "sluice_snapshot_validation_failures_total",
        "counter",
        "Snapshots refused as invalid (the previous one stays in force).",
    );
    x.sample(
        "sluice_snapshot_validation_failures_total",
        &[],
        sum(&|w| w.snapshot_failures.get()),
    );
    x.family(
        "sluice_worker_tick_age_seconds",
        "gauge",
        "Time since each worker last ran its periodic tick (a stuck worker's grows).",
    );
    for w in workers {
        let worker = w.worker.to_string();
        let age = extras.now_ms.saturating_sub(w.last_tick_ms.get());
        x.sample(
            "sluice_worker_tick_age_seconds",
            &[("worker", &worker)],
            seconds(age.saturating_mul(1_000_000)),
        );
    }
    if !extras.backends.is_empty() {
        x.family(
            "sluice_backend_up",
            "gauge",
            "1 when the readiness check reached the resource's backend.",
        );
        for b in &extras.backends {
            x.sample(
                "sluice_backend_up",
                &[("resource", &b.resource)],
                u8::from(b.reachable),
            );
        }
    }
    x.family(
        "sluice_metrics_scrapes_total",
        "counter",
        "Scrapes of this endpoint served.",
    );
    x.sample("sluice_metrics_scrapes_total", &[], extras.scrapes);
    x.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_rise_and_the_exposed_bounds_are_bucket_bounds() {
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(BOUNDS_NS[0], 1_000);
        assert_eq!(BOUNDS_NS[BOUNDS - 1], 800_000_000_000);
        for b in LATENCY_EXPOSED_NS.iter().chain(&WAIT_EXPOSED_NS) {
            assert!(BOUNDS_NS.contains(b), "{b} is not a bucket bound");
        }
    }

    #[test]
    fn histogram_counts_land_at_or_below_their_bound() {
        let h = Histogram::default();
        for ns in [
            500,
            1_000,
            1_001,
            7_000,
            30_000,
            30_000,
            2_000_000,
            u64::MAX,
        ] {
            h.record_ns(ns);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 8);
        assert_eq!(s.count_le(1_000), 2);
        assert_eq!(s.count_le(10_000), 4);
        assert_eq!(s.count_le(50_000), 6);
        assert_eq!(s.count_le(10_000_000_000), 7);
        assert_eq!(s.quantile_ns(0.5), Some(8_000));
        assert_eq!(s.quantile_ns(0.75), Some(30_000));
        assert_eq!(HistogramSnapshot::default().quantile_ns(0.5), None);
    }

    #[test]
    fn refusals_map_to_bounded_reasons() {
        assert_eq!(RefusedReason::of_sqlstate("28P01"), RefusedReason::Auth);
        assert_eq!(RefusedReason::of_sqlstate("42501"), RefusedReason::Policy);
        assert_eq!(RefusedReason::of_sqlstate("57P03"), RefusedReason::Policy);
        assert_eq!(RefusedReason::of_sqlstate("53300"), RefusedReason::Limits);
        assert_eq!(RefusedReason::of_sqlstate("08P01"), RefusedReason::Protocol);
        assert_eq!(RefusedReason::of_sqlstate("08001"), RefusedReason::Backend);
        assert_eq!(RefusedReason::of_sqlstate("XX000"), RefusedReason::Other);
        assert_eq!(RefusedReason::of_sqlstate(""), RefusedReason::Other);
    }

    #[test]
    fn the_top_table_keeps_heavy_hitters_and_bounds_its_error() {
        let mut top = StatementTop::new(3);
        for _ in 0..100 {
            top.statement(1, "shop", Class::Read, "SELECT $1", false, 1, 10);
        }
        for f in 2..50u64 {
            top.statement(
                f,
                "shop",
                Class::Write,
                "UPDATE t SET a = $1",
                f % 2 == 0,
                0,
                5,
            );
        }
        top.added(1, 4_000);
        top.added(1, 6_000);
        top.added(999, 1);
        let entries = top.take_changed().expect("changed");
        assert!(top.take_changed().is_none());
        assert_eq!(entries.len(), 3);
        let heavy = entries
            .iter()
            .find(|e| e.fingerprint == format!("{:016x}", 1))
            .expect("the heavy hitter stays");
        assert_eq!((heavy.count, heavy.error, heavy.rows), (100, 0, 100));
        assert_eq!(
            (heavy.added_samples, heavy.added_sum_ns, heavy.added_max_ns),
            (2, 10_000, 6_000)
        );
        for e in &entries {
            assert!(e.count >= e.error);
        }
        let m = Arc::new(WorkerMetrics::new(0, ["shop".to_owned()]));
        m.publish_top(entries);
        let merged = merged_top(&[m.clone(), m], None, TopOrder::Count, 1);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].count, 200);
        assert_eq!(merged[0].added_max_ns, 6_000);
    }

    /// Every family a full scrape can hold, by name.
    fn every_family() -> Vec<String> {
        let w = Arc::new(WorkerMetrics::new(0, ["shop".to_owned()]));
        let extras = ScrapeExtras {
            recording: vec![RecordingFigures::default()],
            backends: vec![BackendCheck {
                resource: "shop".into(),
                reachable: true,
                error: None,
                connect_us: 1,
            }],
            now_ms: 1,
            scrapes: 1,
        };
        render_prometheus(&[w], &extras)
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_readme_documents_every_series_and_the_dashboard_uses_only_real_ones() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
        let families = every_family();
        assert!(families.len() > 30, "{families:?}");
        for family in &families {
            assert!(
                readme.contains(&format!("`{family}`")),
                "{family} is not documented in README.md"
            );
        }
        let dashboard =
            std::fs::read_to_string(root.join("tuning/grafana-dashboard.json")).expect("dashboard");
        let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
        assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 8));
        let mut used = 0;
        for (at, _) in dashboard.match_indices("sluice_") {
            let name: String = dashboard[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| families.iter().any(|f| f == base))
                .unwrap_or(&name);
            assert!(
                families.iter().any(|f| f == family),
                "the dashboard uses {name}, which the gateway does not export"
            );
            used += 1;
        }
        assert!(used > 20);
    }

    #[test]
    fn exposition_merges_workers_and_skips_unseen_series() {
        let a = Arc::new(WorkerMetrics::new(0, ["shop".to_owned(), "hr".to_owned()]));
        let b = Arc::new(WorkerMetrics::new(1, ["shop".to_owned(), "hr".to_owned()]));
        a.connections_accepted.add(3);
        b.connections_accepted.add(2);
        a.connections_closed.add(1);
        a.refused(RefusedReason::Auth);
        a.resources[0].statement(Class::Read, Decision::Allow);
        b.resources[0].statement(Class::Read, Decision::Allow);
        b.resources[0].round_trip(Class::Read, 20_000, 300_000);
        a.add_masked("pii", &BTreeMap::from([("email".to_owned(), 7)]));
        b.add_masked("pii", &BTreeMap::from([("email".to_owned(), 5)]));
        let text = render_prometheus(&[a, b], &ScrapeExtras::default());
        assert!(
            text.contains("sluice_connections_accepted_total 5\n"),
            "{text}"
        );
        assert!(text.contains("sluice_connections_active 4\n"));
        assert!(text.contains("sluice_connections_refused_total{reason=\"auth\"} 1\n"));
        assert!(text.contains(
            "sluice_statements_total{resource=\"shop\",class=\"read\",decision=\"allow\"} 2\n"
        ));
        assert!(!text.contains("resource=\"hr\",class"));
        assert!(text.contains(
            "sluice_added_latency_seconds_bucket{resource=\"shop\",class=\"read\",le=\"0.000025\"} 1\n"
        ));
        assert!(text.contains(
            "sluice_added_latency_seconds_bucket{resource=\"shop\",class=\"read\",le=\"0.00001\"} 0\n"
        ));
        assert!(text.contains(
            "sluice_upstream_latency_seconds_sum{resource=\"shop\",class=\"read\"} 0.0003\n"
        ));
        assert!(text.contains("sluice_masked_values_total{profile=\"pii\",rule=\"email\"} 12\n"));
        // Every family is declared exactly once.
        let mut seen = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(seen.insert(line.to_owned()), "{line} twice");
        }
    }
}
