//! One target run: threads, each with its own runtime and connections, each keeping its
//! own counters and histograms; merged when the run is over.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use hdrhistogram::Histogram;

use crate::client::{Conn, ConnError, SqlState};
use crate::url::Target;
use crate::workload::{Protocol, Rng, Script};

/// Latencies are kept in nanoseconds up to an hour, to three significant digits.
const HIST_MAX_NS: u64 = 3_600_000_000_000;
/// Pause between failed connection attempts, so a dead server is not hammered.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// monoio's timer wheel ticks in milliseconds: how late a sleeping connection may wake
/// before the delay counts against the server.
const TIMER_SLACK: Duration = Duration::from_millis(2);
/// How often the progress counters are published.
pub const PROGRESS_TICK: Duration = Duration::from_millis(100);

pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts; failing here is a programming error.
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("valid histogram bounds")
}

/// Everything one target run needs; shared read-only by all threads.
pub struct Plan {
    pub target: Target,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub script: Script,
    pub protocol: Protocol,
    pub pipeline: u32,
    pub connections: u32,
    pub threads: usize,
    pub rate: Option<f64>,
    pub duration: Duration,
    pub transactions: Option<u64>,
    pub warmup: Duration,
    pub reconnect_every: Option<u64>,
    pub op_timeout: Duration,
    pub driver: crate::runtime::Driver,
    pub seed: u64,
}

/// What one thread (and, merged, one run) measured.
pub struct Stats {
    /// Transaction latency, ns (open loop: from the intended start).
    pub latency: Histogram<u64>,
    /// Connect + TLS + authentication until the first ReadyForQuery, ns.
    pub connect: Histogram<u64>,
    /// Transactions completed inside the measured window without error.
    pub ok: u64,
    /// Transactions completed inside the window with an error (or lost with their
    /// connection).
    pub failed: u64,
    /// Errors by SQLSTATE (or `connect`, `io`, `timeout`, `protocol`), whole run.
    pub errors: BTreeMap<String, u64>,
    /// Client operations that hit --op-timeout.
    pub hangs: u64,
    /// When the last measured transaction completed.
    pub last_completion: Option<Instant>,
    /// The run's window (set once the run is over).
    pub window: Option<Window>,
    sqlstates: HashMap<SqlState, u64>,
    /// All transactions finished, warm-up included (for the progress bar).
    done_total: u64,
    recent: Histogram<u64>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            latency: new_histogram(),
            connect: new_histogram(),
            ok: 0,
            failed: 0,
            errors: BTreeMap::new(),
            hangs: 0,
            last_completion: None,
            window: None,
            sqlstates: HashMap::new(),
            done_total: 0,
            recent: new_histogram(),
        }
    }

    fn count_error(&mut self, label: &str) {
        *self.errors.entry(label.to_string()).or_default() += 1;
    }

    fn count_conn_error(&mut self, e: &ConnError) {
        self.count_error(&e.label());
    }

    /// Folds the per-SQLSTATE counts into `errors`; done once, off the hot path.
    fn settle(&mut self) {
        for (state, n) in self.sqlstates.drain() {
            *self
                .errors
                .entry(String::from_utf8_lossy(&state).into_owned())
                .or_default() += n;
        }
    }

    /// Length of the measured window: the configured duration, or (with --transactions)
    /// until the last transaction completed.
    pub fn measured_seconds(&self) -> f64 {
        let Some(w) = self.window else { return 0.0 };
        let end = match w.end {
            Some(end) => end,
            None => match self.last_completion {
                Some(last) => last,
                None => return 0.0,
            },
        };
        end.saturating_duration_since(w.measure_from).as_secs_f64()
    }

    pub fn merge(&mut self, mut other: Stats) {
        other.settle();
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.connect.add(&other.connect);
        self.ok += other.ok;
        self.failed += other.failed;
        self.hangs += other.hangs;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.last_completion = self.last_completion.max(other.last_completion);
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// Read by the progress bar every [`PROGRESS_TICK`]; written by each thread's ticker,
/// never by the transaction path.
pub struct Progress {
    pub done: Vec<AtomicU64>,
    pub p99_ns: Vec<AtomicU64>,
    pub finished: AtomicBool,
}

impl Progress {
    pub fn new(threads: usize) -> Progress {
        Progress {
            done: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            p99_ns: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            finished: AtomicBool::new(false),
        }
    }
}

/// The measured window, fixed once every connection is up.
#[derive(Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub measure_from: Instant,
    /// `None` with --transactions: the run ends when the quota is done.
    pub end: Option<Instant>,
}

/// Runs `plan` on its threads. `on_window` is called (on this thread) once every
/// connection is established, with the window that is about to start; `tick` is called
/// every [`PROGRESS_TICK`] until the threads are done.
pub fn run(
    plan: Arc<Plan>,
    progress: Arc<Progress>,
    mut on_window: impl FnMut(Window),
    mut tick: impl FnMut(&Progress, Window),
) -> Result<Stats> {
    let threads = plan.threads;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut go_txs = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    for index in 0..threads {
        let (go_tx, go_rx) = mpsc::channel::<Option<Window>>();
        go_txs.push(go_tx);
        let plan = plan.clone();
        let progress = progress.clone();
        let ready_tx = ready_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("loadtest-{index}"))
            .spawn(move || run_thread(index, plan, progress, ready_tx, go_rx))
            .context("spawning a load thread")?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut setup_error = None;
    for _ in 0..threads {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => setup_error = Some(e),
            Err(_) => setup_error = Some("a load thread exited during set-up".into()),
        }
    }
    let window = setup_error.is_none().then(|| {
        let start = Instant::now();
        Window {
            start,
            measure_from: start + plan.warmup,
            end: plan
                .transactions
                .is_none()
                .then(|| start + plan.warmup + plan.duration),
        }
    });
    for tx in &go_txs {
        let _ = tx.send(window);
    }
    if let Some(w) = window {
        on_window(w);
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(PROGRESS_TICK);
            tick(&progress, w);
        }
    }
    progress.finished.store(true, Relaxed);
    let mut total = Stats::new();
    for h in handles {
        let stats = h
            .join()
            .map_err(|_| anyhow!("a load thread panicked"))?
            .map_err(|e| anyhow!("{e:#}"))?;
        total.merge(stats);
    }
    if let Some(e) = setup_error {
        return Err(anyhow!("{e}"));
    }
    total.window = window;
    Ok(total)
}

fn run_thread(
    index: usize,
    plan: Arc<Plan>,
    progress: Arc<Progress>,
    ready: mpsc::Sender<Result<(), String>>,
    go: mpsc::Receiver<Option<Window>>,
) -> Result<Stats> {
    crate::runtime::set_driver(plan.driver);
    crate::runtime::block_on(thread_main(index, plan, progress, ready, go))
}

/// Per-thread state shared by the thread's connection tasks (one thread: no locks).
struct ThreadCtx {
    plan: Arc<Plan>,
    window: Window,
    stats: RefCell<Stats>,
    running: Cell<bool>,
}

async fn thread_main(
    index: usize,
    plan: Arc<Plan>,
    progress: Arc<Progress>,
    ready: mpsc::Sender<Result<(), String>>,
    go: mpsc::Receiver<Option<Window>>,
) -> Result<Stats> {
    // Connections are spread round-robin over the threads.
    let mine: Vec<u32> = (0..plan.connections)
        .filter(|c| *c as usize % plan.threads == index)
        .collect();
    let mut stats = Stats::new();
    let mut conns = Vec::with_capacity(mine.len());
    let mut first_error = None;
    for _ in &mine {
        match connect(&plan, &mut stats).await {
            Ok(conn) => conns.push(conn),
            Err(e) => {
                first_error
                    .get_or_insert_with(|| format!("cannot connect to {}: {e}", plan.target));
            }
        }
    }
    let _ = ready.send(match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    });
    // Blocking here is fine: every connection is idle until the window opens.
    let Ok(Some(window)) = go.recv() else {
        for c in conns {
            c.close().await;
        }
        return Ok(stats);
    };
    let ctx = Rc::new(ThreadCtx {
        plan: plan.clone(),
        window,
        stats: RefCell::new(stats),
        running: Cell::new(true),
    });
    let ticker = monoio::spawn(publish_progress(ctx.clone(), progress, index));
    let quota_total = plan.transactions.unwrap_or(u64::MAX);
    let mut tasks = Vec::with_capacity(conns.len());
    for (conn, id) in conns.into_iter().zip(mine) {
        // Split the quota so the connections together run exactly --transactions.
        let quota = if quota_total == u64::MAX {
            u64::MAX
        } else {
            let n = plan.connections as u64;
            quota_total / n + u64::from((id as u64) < quota_total % n)
        };
        let seed = plan.seed ^ (u64::from(id) + 1).wrapping_mul(0xA24B_AED4_963E_E407);
        tasks.push(monoio::spawn(drive(ctx.clone(), conn, quota, seed)));
    }
    for t in tasks {
        t.await;
    }
    ctx.running.set(false);
    ticker.await;
    let ctx = Rc::try_unwrap(ctx).map_err(|_| anyhow!("thread context still shared"))?;
    let mut stats = ctx.stats.into_inner();
    stats.settle();
    Ok(stats)
}

async fn publish_progress(ctx: Rc<ThreadCtx>, progress: Arc<Progress>, index: usize) {
    while ctx.running.get() {
        monoio::time::sleep(PROGRESS_TICK).await;
        let mut stats = ctx.stats.borrow_mut();
        progress.done[index].store(stats.done_total, Relaxed);
        progress.p99_ns[index].store(stats.recent.value_at_quantile(0.99), Relaxed);
        stats.recent.reset();
    }
}

async fn connect(plan: &Plan, stats: &mut Stats) -> Result<Conn, ConnError> {
    let started = Instant::now();
    let attempt = monoio::time::timeout(plan.op_timeout, async {
        let mut conn = Conn::connect(&plan.target, plan.tls.as_ref()).await?;
        if plan.protocol == Protocol::Prepared {
            plan.script
                .encode_prepare(&mut conn.out)
                .map_err(|e| ConnError {
                    kind: crate::client::ErrorKind::Protocol,
                    sqlstate: None,
                    detail: format!("{e:#}"),
                })?;
            conn.flush().await?;
            let summary = conn.read_result().await?;
            if let Some(state) = summary.error {
                // A statement that does not prepare fails at every Bind too; say so once
                // here and let the run count the failures.
                *stats
                    .errors
                    .entry(String::from_utf8_lossy(&state).into_owned())
                    .or_default() += 1;
            }
        }
        Ok::<_, ConnError>(conn)
    })
    .await;
    match attempt {
        Ok(Ok(conn)) => {
            stats
                .connect
                .saturating_record(started.elapsed().as_nanos() as u64);
            Ok(conn)
        }
        Ok(Err(e)) => {
            stats.count_conn_error(&e);
            Err(e)
        }
        Err(_) => {
            stats.hangs += 1;
            stats.count_error("timeout");
            Err(ConnError {
                kind: crate::client::ErrorKind::Connect,
                sqlstate: None,
                detail: "connecting took longer than --op-timeout".into(),
            })
        }
    }
}

enum Step {
    Ok(crate::client::ResultSummary),
    Failed,
}

/// Awaits `fut` within the operation deadline; a miss is a hang, counted as `timeout`.
async fn within<T>(
    ctx: &ThreadCtx,
    fut: impl std::future::Future<Output = Result<T, ConnError>>,
) -> Option<T> {
    match monoio::time::timeout(ctx.plan.op_timeout, fut).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            ctx.stats.borrow_mut().count_conn_error(&e);
            None
        }
        Err(_) => {
            let mut stats = ctx.stats.borrow_mut();
            stats.hangs += 1;
            stats.count_error("timeout");
            None
        }
    }
}

/// One connection's load loop: keep up to `depth` transactions in flight, start them as
/// fast as they complete (closed loop) or when they are due (open loop), and record each
/// one's latency when its last ReadyForQuery arrives.
async fn drive(ctx: Rc<ThreadCtx>, conn: Conn, quota: u64, seed: u64) {
    let plan = &ctx.plan;
    let window = ctx.window;
    let statements = &plan.script.statements;
    let depth = if statements.len() == 1 {
        plan.pipeline as usize
    } else {
        1
    };
    let mut rng = Rng::new(seed);
    // Open loop: this connection's share of the rate, as Poisson arrivals.
    let mean_gap = plan
        .rate
        .map(|r| Duration::from_secs_f64(plan.connections as f64 / r));
    let mut next_due = window.start;
    let draw_gap = |rng: &mut Rng| -> Duration {
        mean_gap.map_or(Duration::ZERO, |g| g.mul_f64(-rng.unit().ln()))
    };
    if mean_gap.is_some() {
        next_due += draw_gap(&mut rng);
    }
    let mut conn = Some(conn);
    let mut inflight: VecDeque<Instant> = VecDeque::with_capacity(depth);
    let mut values = Vec::new();
    let mut scratch = String::new();
    let mut on_this_conn = 0u64;
    let mut measured = 0u64;
    // Multi-statement transactions: which statement is out, and whether one failed.
    let mut statement = 0usize;
    let mut txn_error: Option<SqlState> = None;
    // Without an end time (--transactions), a server that stays unreachable for longer
    // than the operation deadline ends this connection's run.
    let mut down_since: Option<Instant> = None;

    loop {
        let Some(c) = conn.as_mut() else {
            let now = Instant::now();
            let down_too_long = down_since.is_some_and(|t| now.duration_since(t) > plan.op_timeout);
            if window.end.is_some_and(|end| now >= end) || measured >= quota || down_too_long {
                return;
            }
            let mut stats = Stats::new();
            let fresh = connect(plan, &mut stats).await;
            ctx.stats.borrow_mut().merge_connect(stats);
            match fresh {
                Ok(fresh) => {
                    conn = Some(fresh);
                    on_this_conn = 0;
                    down_since = None;
                }
                Err(_) => {
                    down_since.get_or_insert(now);
                    monoio::time::sleep(RECONNECT_BACKOFF).await
                }
            }
            continue;
        };

        let mut now = Instant::now();
        let recycle = plan.reconnect_every.is_some_and(|n| on_this_conn >= n);
        while inflight.len() < depth
            && !recycle
            && measured + (inflight.len() as u64) < quota
            && window.end.is_none_or(|end| now < end)
        {
            let due = if mean_gap.is_some() {
                let slept = next_due > now;
                if slept {
                    if !inflight.is_empty() {
                        break;
                    }
                    monoio::time::sleep(next_due - now).await;
                    now = Instant::now();
                    if window.end.is_some_and(|end| next_due >= end) {
                        break;
                    }
                }
                // An idle connection that slept until the transaction was due wakes up to a
                // timer tick late; that is the generator's lateness, not the server's, so
                // the clock starts at wake-up. Anything later than the slack (a backlog
                // behind a slow server, or a starved generator) still counts.
                let due = if slept && now.saturating_duration_since(next_due) <= TIMER_SLACK {
                    now.max(next_due)
                } else {
                    next_due
                };
                next_due += draw_gap(&mut rng);
                due
            } else {
                now
            };
            plan.script.draw(&mut rng, &mut values);
            if statements[0]
                .encode(plan.protocol, &values, &mut scratch, &mut c.out)
                .is_err()
            {
                ctx.stats.borrow_mut().count_error("encode");
                return;
            }
            inflight.push_back(due);
            statement = 0;
            txn_error = None;
        }
        if inflight.is_empty() {
            if recycle {
                if let Some(old) = conn.take() {
                    old.close().await;
                }
                continue;
            }
            break;
        }

        // With results already buffered, new requests wait in `out` and go out together
        // with the ones the next buffered results release.
        let flushed = if c.result_buffered() {
            Some(())
        } else {
            within(&ctx, c.flush()).await
        };
        let step = match flushed {
            Some(()) => match within(&ctx, c.read_result()).await {
                Some(summary) => Step::Ok(summary),
                None => Step::Failed,
            },
            None => Step::Failed,
        };
        let summary = match step {
            Step::Ok(s) => s,
            Step::Failed => {
                // The connection is gone and its transactions with it.
                let now = Instant::now();
                let lost = inflight.len() as u64;
                inflight.clear();
                let mut stats = ctx.stats.borrow_mut();
                stats.done_total += lost;
                if in_window(&window, now) {
                    stats.failed += lost;
                    measured += lost;
                }
                conn = None;
                continue;
            }
        };
        if let Some(state) = summary.error {
            *ctx.stats.borrow_mut().sqlstates.entry(state).or_default() += 1;
            txn_error.get_or_insert(state);
        }
        if statement + 1 < statements.len() {
            statement += 1;
            if statements[statement]
                .encode(plan.protocol, &values, &mut scratch, &mut c.out)
                .is_err()
            {
                ctx.stats.borrow_mut().count_error("encode");
                return;
            }
            continue;
        }
        let Some(due) = inflight.pop_front() else {
            continue;
        };
        let failed = txn_error.take().is_some() || summary.error.is_some();
        statement = 0;
        on_this_conn += 1;
        let now = Instant::now();
        let mut stats = ctx.stats.borrow_mut();
        stats.done_total += 1;
        let latency = now.saturating_duration_since(due).as_nanos() as u64;
        stats.recent.saturating_record(latency);
        if in_window(&window, now) {
            measured += 1;
            if failed {
                stats.failed += 1;
            } else {
                stats.ok += 1;
                stats.latency.saturating_record(latency);
            }
            stats.last_completion = Some(now);
        }
    }
    if let Some(c) = conn {
        c.close().await;
    }
}

fn in_window(window: &Window, at: Instant) -> bool {
    at >= window.measure_from && window.end.is_none_or(|end| at <= end)
}

impl Stats {
    /// Keeps what a reconnect measured (connect time, connect errors, hangs).
    fn merge_connect(&mut self, other: Stats) {
        let _ = self.connect.add(&other.connect);
        self.hangs += other.hangs;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}
