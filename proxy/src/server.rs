//! Worker threads: one monoio runtime per core, each pinned, each with its own
//! `SO_REUSEPORT` listener, sharing nothing mutable on the data path.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::DirBuilderExt;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::panic::AssertUnwindSafe;

use anyhow::Context;
use futures_util::future::{AbortHandle, Abortable, Aborted};
use futures_util::FutureExt;
use monoio::net::TcpListener;
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use rustls::pki_types::ServerName;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{BackendTls, Config, Driver, IoConfig};
use crate::gate::{Gate, TICK};
use crate::metrics::WorkerMetrics;
use crate::tls;

/// TLS settings toward one backend.
pub struct BackendTlsTarget {
    /// rustls client config.
    pub config: Arc<rustls::ClientConfig>,
    /// Name the certificate must match.
    pub server_name: ServerName<'static>,
}

/// A resource resolved for connecting: address, login, secret.
pub struct BackendTarget {
    /// Resource name clients use.
    pub name: String,
    /// Resolved backend address.
    pub addr: SocketAddr,
    /// Database on the backend.
    pub database: String,
    /// Backend role.
    pub user: String,
    /// Backend password (never logged).
    pub password: Option<String>,
    /// TLS toward the backend, if configured.
    pub tls: Option<BackendTlsTarget>,
}

impl std::fmt::Debug for BackendTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTarget")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Everything a worker reads while serving sessions. Built once, shared read-only.
pub struct Shared {
    /// Configuration.
    pub config: Config,
    /// Client-facing TLS, when configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Backends by resource name.
    pub backends: HashMap<String, BackendTarget>,
}

/// Per-worker view of [`Shared`], owned by the worker thread.
pub struct WorkerContext {
    /// Configuration.
    pub config: Config,
    /// This worker's view of control: snapshot, identity, policy, live sessions.
    pub gate: RefCell<Gate>,
    /// TLS acceptor (cheap clone of an `Arc`).
    pub tls: Option<monoio_rustls::TlsAcceptor>,
    /// Backends by resource name.
    pub backends: Arc<HashMap<String, BackendTarget>>,
    /// This worker's statement classifier and its cache.
    pub classifier: RefCell<sluice_classify::Classifier>,
    /// This worker's statement audit file.
    pub audit: crate::audit::AuditLog,
    /// This worker's session recorder (`None` when `recording.enabled = false`).
    pub recorder: Option<sluice_recorder::RecorderHandle>,
    /// This worker's counters and histograms (read by the metrics endpoint).
    pub metrics: Arc<crate::metrics::WorkerMetrics>,
    /// This worker's statement fingerprint table (published on each tick).
    pub top: Rc<RefCell<crate::metrics::StatementTop>>,
    /// Whether round trips are timed (`metrics.latency`).
    pub time_round_trips: bool,
    /// Log lines left this second for connections that end before a session.
    pub refusal_log: crate::session::RefusalLogBudget,
}

impl Shared {
    /// Loads keys, certificates and backend secrets named by the config.
    pub fn from_config(config: Config) -> anyhow::Result<Shared> {
        let tls = match &config.tls {
            Some(t) => Some(tls::server_config(
                &config.resolve(&t.cert),
                &config.resolve(&t.key),
            )?),
            None => None,
        };
        let mut backends = HashMap::new();
        for (name, resource) in &config.resources {
            let addr = (resource.host.as_str(), resource.port)
                .to_socket_addrs()
                .with_context(|| format!("resolving resources.{name}.host {}", resource.host))?
                .next()
                .with_context(|| {
                    format!("resources.{name}.host {} has no address", resource.host)
                })?;
            let backend_tls = match resource.tls {
                BackendTls::Disable => None,
                BackendTls::Require | BackendTls::VerifyFull => {
                    let config_for_backend = if resource.tls == BackendTls::VerifyFull {
                        let ca = resource
                            .tls_ca
                            .as_ref()
                            .context("verify-full needs tls_ca")?;
                        tls::backend_verified(&config.resolve(ca))?
                    } else {
                        tls::backend_unverified()?
                    };
                    let server_name =
                        ServerName::try_from(resource.host.clone()).with_context(|| {
                            format!("resources.{name}.host is not a valid TLS name")
                        })?;
                    Some(BackendTlsTarget {
                        config: config_for_backend,
                        server_name,
                    })
                }
            };
            backends.insert(
                name.clone(),
                BackendTarget {
                    name: name.clone(),
                    addr,
                    database: resource.database.clone(),
                    user: resource.user.clone(),
                    password: resource.password(&config)?,
                    tls: backend_tls,
                },
            );
        }
        Ok(Shared {
            config,
            tls,
            backends,
        })
    }
}

/// Shutdown phases broadcast to workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Running,
    /// Stop accepting; let sessions finish until the grace period ends.
    Draining,
    /// Close everything now.
    Stop,
}

/// Handle to ask a running gateway to stop.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<Phase>>);

impl ShutdownHandle {
    /// SIGTERM behaviour: stop accepting, let sessions finish up to the grace period.
    pub fn drain(&self) {
        self.0.send_if_modified(|phase| {
            let change = *phase == Phase::Running;
            if change {
                *phase = Phase::Draining;
            }
            change
        });
    }

    /// SIGINT (second signal) behaviour: close everything now.
    pub fn stop(&self) {
        self.0.send_replace(Phase::Stop);
    }
}

/// A started gateway.
pub struct Gateway {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shutdown: ShutdownHandle,
    workers: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Gateway {
    /// Binds the listeners and starts the workers. Returns once every worker is accepting.
    pub fn start(config: Config) -> anyhow::Result<Gateway> {
        if cfg!(feature = "bench-no-statement-policy") {
            error!("this is a benchmark build (feature bench-no-statement-policy): statements are NOT checked against policy and NOT audited; never run it in front of real data");
        }
        let shared = Shared::from_config(config)?;
        let workers = shared.config.worker_count();
        let driver = shared.config.listen.driver;
        let pin = shared.config.listen.pin_workers;
        let entries = shared.config.listen.uring_entries;
        let io = shared.config.io.clone();
        let backlog = i32::try_from(io.backlog).unwrap_or(i32::MAX);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);

        let (tx, rx) = watch::channel(Phase::Running);
        let metrics: Vec<Arc<WorkerMetrics>> = (0..workers)
            .map(|index| {
                Arc::new(WorkerMetrics::new(
                    index,
                    shared.config.resources.keys().cloned(),
                ))
            })
            .collect();
        let backend_addrs: Vec<(String, SocketAddr)> = shared
            .config
            .resources
            .keys()
            .filter_map(|name| shared.backends.get(name).map(|b| (name.clone(), b.addr)))
            .collect();
        // Bound before the gateway's own port, so that a taken port stops the start-up and
        // whoever finds the gateway's port open finds this one open too.
        let metrics_addr = match shared.config.metrics.listen {
            None => None,
            Some(addr) => {
                let observed = crate::observe::Observed {
                    workers: metrics.clone(),
                    backends: backend_addrs,
                    backend_timeout: Duration::from_millis(
                        shared.config.metrics.backend_check_timeout_ms,
                    ),
                    recording_queue_bytes: shared
                        .config
                        .recording
                        .enabled
                        .then(|| (shared.config.recording.queue_mib * 1024 * 1024) as u64),
                    latency: shared.config.metrics.latency,
                };
                Some(crate::observe::start(addr, observed)?.local_addr())
            }
        };
        // Bind every listener here so port 0 resolves once and all workers share it.
        let first = reuseport_listener(shared.config.listen.address, backlog)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..workers {
            listeners.push(reuseport_listener(local_addr, backlog)?);
        }

        let backends = Arc::new(shared.backends);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let mut handles = Vec::new();
        let mut tick_writers = Vec::new();
        for (index, listener) in listeners.into_iter().enumerate() {
            let (tick_tx, tick_rx) = std::os::unix::net::UnixStream::pair()
                .context("creating a worker's tick socket pair")?;
            tick_rx.set_nonblocking(true)?;
            tick_writers.push(tick_tx);
            let ctx = WorkerSeed {
                config: shared.config.clone(),
                tls: shared.tls.clone(),
                backends: backends.clone(),
                tick: tick_rx,
                metrics: Arc::clone(&metrics[index]),
            };
            let rx = rx.clone();
            let ready = ready_tx.clone();
            let io = io.clone();
            let handle = std::thread::Builder::new()
                .name(format!("sluice-worker-{index}"))
                .spawn(move || {
                    if pin {
                        if let Err(e) = monoio::utils::bind_to_cpu_set([index % cores]) {
                            warn!(worker = index, error = ?e, "could not pin worker to its core");
                        }
                    }
                    run_worker(index, driver, entries, &io, listener, ctx, rx, ready)
                })
                .context("spawning worker thread")?;
            handles.push(handle);
        }
        drop(ready_tx);
        spawn_ticker(tick_writers)?;
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => anyhow::bail!("a worker exited before it started accepting"),
            }
        }
        info!(address = %local_addr, workers, %driver, "sluice gateway accepting");
        Ok(Gateway {
            local_addr,
            metrics_addr,
            shutdown: ShutdownHandle(Arc::new(tx)),
            workers: handles,
        })
    }

    /// Address the workers listen on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Address of the metrics endpoint, when `[metrics] listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Handle to stop the gateway.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Waits for every worker to finish.
    pub fn join(self) -> anyhow::Result<()> {
        let mut first_error = None;
        for handle in self.workers {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    error!(error = %format!("{e:#}"), "worker failed");
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert_with(|| anyhow::anyhow!("a worker panicked"));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn reuseport_listener(addr: SocketAddr, backlog: i32) -> anyhow::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

struct WorkerSeed {
    config: Config,
    tls: Option<Arc<rustls::ServerConfig>>,
    backends: Arc<HashMap<String, BackendTarget>>,
    /// Read end of this worker's tick pipe (see [`spawn_ticker`]).
    tick: std::os::unix::net::UnixStream,
    /// This worker's metrics.
    metrics: Arc<WorkerMetrics>,
}

/// Starts the thread that wakes every worker's gate every [`TICK`]: one byte down each
/// worker's socket pair. A timer inside the worker would do the same, but a runtime with a
/// timer always pending arms a timeout on every park, which costs measurably on every idle
/// moment of a busy worker; a pending read costs nothing until it completes. The thread
/// ends when every worker has gone (its writes fail).
fn spawn_ticker(writers: Vec<std::os::unix::net::UnixStream>) -> anyhow::Result<()> {
    use std::io::Write;
    for w in &writers {
        w.set_nonblocking(true)?;
    }
    std::thread::Builder::new()
        .name("sluice-gate-tick".into())
        .spawn(move || loop {
            std::thread::sleep(TICK);
            let mut alive = 0;
            for mut w in &writers {
                match w.write(&[1]) {
                    Ok(_) => alive += 1,
                    // A worker that is busy has ticks queued already.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => alive += 1,
                    Err(_) => {}
                }
            }
            if alive == 0 {
                return;
            }
        })
        .context("spawning the gate tick thread")?;
    Ok(())
}

/// The io_uring setup flags one attempt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RingFlags {
    sqpoll: bool,
    coop_taskrun: bool,
}

/// The rings to try, best first: what `[io]` asks for, then without SQPOLL (a kernel or
/// host may refuse it), then without COOP_TASKRUN (kernels before 5.19). A flag the
/// kernel refuses costs a warning, never the worker.
fn ring_attempts(io: &IoConfig) -> Vec<RingFlags> {
    let wanted = RingFlags {
        sqpoll: io.uring_sqpoll,
        coop_taskrun: io.uring_coop_taskrun,
    };
    let mut attempts = vec![wanted];
    if wanted.sqpoll {
        attempts.push(RingFlags {
            sqpoll: false,
            ..wanted
        });
    }
    if wanted.coop_taskrun {
        attempts.push(RingFlags {
            sqpoll: false,
            coop_taskrun: false,
        });
    }
    attempts
}

/// io_uring setup flags (design.md §7): cooperative task running cuts completion
/// interrupts to a busy worker; SQPOLL trades a polling kernel thread for submit calls.
fn uring_builder(flags: RingFlags, sqpoll_idle_ms: u32) -> io_uring::Builder {
    let mut builder = io_uring::IoUring::builder();
    if flags.coop_taskrun {
        builder.setup_coop_taskrun().setup_taskrun_flag();
    }
    if flags.sqpoll {
        builder.setup_sqpoll(sqpoll_idle_ms);
    }
    builder
}

#[allow(clippy::too_many_arguments)]
fn run_worker(
    index: usize,
    driver: Driver,
    entries: u32,
    io: &IoConfig,
    listener: std::net::TcpListener,
    seed: WorkerSeed,
    rx: watch::Receiver<Phase>,
    ready: std::sync::mpsc::Sender<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let run = |listener, seed, rx, ready| worker_main(index, listener, seed, rx, ready);
    if driver == Driver::IoUring {
        let attempts = ring_attempts(io);
        let mut built = None;
        for (n, flags) in attempts.iter().enumerate() {
            match RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(entries)
                .uring_builder(uring_builder(*flags, io.uring_sqpoll_idle_ms))
                .enable_timer()
                .build()
            {
                Ok(rt) => {
                    built = Some(rt);
                    break;
                }
                Err(e) => match attempts.get(n + 1) {
                    Some(next) => warn!(
                        worker = index,
                        error = %e,
                        refused = ?flags,
                        retrying_with = ?next,
                        "io_uring refused these setup flags; retrying with fewer"
                    ),
                    None => {
                        warn!(worker = index, error = %e, "io_uring unavailable; falling back to epoll")
                    }
                },
            }
        }
        if let Some(mut rt) = built {
            return rt.block_on(run(listener, seed, rx, ready));
        }
    }
    let mut rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()
        .context("building epoll runtime")?;
    rt.block_on(run(listener, seed, rx, ready))
}

async fn worker_main(
    index: usize,
    listener: std::net::TcpListener,
    seed: WorkerSeed,
    mut rx: watch::Receiver<Phase>,
    ready: std::sync::mpsc::Sender<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(anyhow::anyhow!("worker {index}: listener: {e}")));
            return Err(e.into());
        }
    };
    let grace = Duration::from_secs(seed.config.shutdown.grace_secs);
    let gate = Gate::new(
        &seed.config.state_dir(),
        seed.config.control.snapshot_max_age,
        seed.config.control.heartbeat,
        index,
    );
    let classifier = sluice_classify::Classifier::new(seed.config.limits.classify_cache_entries);
    let mut audit = crate::audit::AuditLog::open(&seed.config.state_dir(), index);
    let (recorder, recorder_thread) = match start_recorder(&seed.config, index) {
        Ok(Some((handle, thread))) => (Some(handle), Some(thread)),
        Ok(None) => (None, None),
        Err(e) => {
            // Recording is on: without it, no session may run.
            let e = e.context(format!("worker {index}: session recorder"));
            let _ = ready.send(Err(anyhow::anyhow!("{e:#}")));
            return Err(e);
        }
    };
    audit.set_recorder(recorder.clone());
    if let Some(handle) = &recorder {
        let _ = seed.metrics.recorder.set(handle.clone());
    }
    let top = crate::metrics::StatementTop::new(seed.config.metrics.top_statements);
    let time_round_trips = seed.config.metrics.latency;
    let refusal_log =
        crate::session::RefusalLogBudget::new(seed.config.logging.refusals_per_second);
    let ctx = Rc::new(WorkerContext {
        config: seed.config,
        gate: RefCell::new(gate),
        tls: seed.tls.map(monoio_rustls::TlsAcceptor::from),
        backends: seed.backends,
        classifier: RefCell::new(classifier),
        audit,
        recorder,
        metrics: seed.metrics,
        top: Rc::new(RefCell::new(top)),
        time_round_trips,
        refusal_log,
    });
    ctx.gate
        .borrow()
        .publish_metrics(&ctx.metrics, std::time::SystemTime::now());
    let _ = ready.send(Ok(()));
    drop(ready);
    // The gate's tick: reconnects to control, keeps the fail-static flag current and ends
    // sessions whose access was revoked or ran out. It lives as long as the worker.
    let ticker = {
        let ctx = Rc::clone(&ctx);
        let (handle, registration) = AbortHandle::new_pair();
        let tick = monoio::net::UnixStream::from_std(seed.tick);
        monoio::spawn(Abortable::new(
            async move {
                let mut tick = match tick {
                    Ok(tick) => tick,
                    Err(e) => {
                        error!(worker = index, error = %e, "no gate tick: revocations and time limits reach sessions only on their next statement");
                        return;
                    }
                };
                let mut buf = vec![0u8; 64];
                loop {
                    let (result, b) = monoio::io::AsyncReadRent::read(&mut tick, buf).await;
                    buf = b;
                    match result {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            let now = std::time::SystemTime::now();
                            ctx.gate.borrow_mut().tick(now);
                            ctx.gate.borrow().publish_metrics(&ctx.metrics, now);
                            if let Some(entries) = ctx.top.borrow_mut().take_changed() {
                                ctx.metrics.publish_top(entries);
                            }
                            ctx.audit.flush();
                            ctx.refusal_log.roll(Instant::now());
                        }
                    }
                }
            },
            registration,
        ));
        handle
    };
    let sessions = Sessions::default();
    // Every ShutdownHandle dropped (the embedder went away): nobody can stop us any more,
    // so behave as if told to stop now.
    let mut orphaned = false;
    loop {
        if orphaned || *rx.borrow() != Phase::Running {
            break;
        }
        // The accept is cancelled through monoio's cancel handle rather than by dropping
        // it: an accept that completes in the kernel while we stop is still returned (and
        // served) instead of leaking a connection nobody reads.
        let canceller = monoio::io::Canceller::new();
        let accept = listener.cancelable_accept(canceller.handle());
        let mut accept = std::pin::pin!(accept);
        let accepted = monoio::select! {
            accepted = &mut accept => accepted,
            changed = rx.changed() => {
                orphaned = changed.is_err();
                canceller.cancel();
                match accept.await {
                    Ok(conn) => Ok(conn),
                    // Cancelled: loop around to see the new phase.
                    Err(_) => continue,
                }
            }
        };
        match accepted {
            Ok((stream, peer)) => sessions.spawn(index, stream, peer, ctx.clone()),
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(worker = index, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    let deadline = Instant::now() + grace;
    if sessions.len() > 0 {
        info!(
            worker = index,
            sessions = sessions.len(),
            grace_secs = grace.as_secs(),
            "draining"
        );
    }
    while sessions.len() > 0
        && Instant::now() < deadline
        && !orphaned
        && *rx.borrow() != Phase::Stop
    {
        monoio::time::sleep(Duration::from_millis(50)).await;
    }
    if sessions.len() > 0 {
        warn!(
            worker = index,
            sessions = sessions.len(),
            "closing sessions still open at shutdown"
        );
        // monoio does not drop tasks parked on I/O when its runtime goes away, so open
        // sessions are aborted explicitly: dropping a session closes both its sockets.
        sessions.abort_all();
        while sessions.len() > 0 {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    ticker.abort();
    // Every session is over: seal this worker's segment (its footer and chain hash), so
    // a clean stop leaves nothing to recover.
    if let Some(handle) = ctx.recorder.clone() {
        if let Err(e) = handle.shutdown() {
            error!(worker = index, error = %e, "sealing the session recording failed");
        }
    }
    if let Some(thread) = recorder_thread {
        match thread.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => error!(worker = index, error = %e, "session recorder failed"),
            Err(_) => error!(worker = index, "session recorder thread panicked"),
        }
    }
    Ok(())
}

/// Distance between the recording writer numbers a worker tries (more workers than this
/// per gateway would make two workers' numbers meet).
const WRITER_STRIDE: u16 = 256;

/// The worker's session recorder, when recording is on: its writer thread, after
/// recovering whatever a crash left in its last segment (logged). Worker 0 also applies
/// retention, on a thread of its own, every ten minutes.
#[allow(clippy::type_complexity)]
fn start_recorder(
    config: &Config,
    index: usize,
) -> anyhow::Result<
    Option<(
        sluice_recorder::RecorderHandle,
        std::thread::JoinHandle<std::io::Result<sluice_recorder::WriterStats>>,
    )>,
> {
    if !config.recording.enabled {
        return Ok(None);
    }
    let dir = config.recording_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let overflow = match config.recording.overflow {
        crate::config::RecordingOverflow::Block => sluice_recorder::Overflow::Block,
        crate::config::RecordingOverflow::FailClosed => sluice_recorder::Overflow::FailClosed,
    };
    // A worker records as writer `index`; while another gateway process on the same
    // directory holds that writer (the old gateway a new `sluice up` starts beside and
    // then retires), it records as `index + 256`, `index + 512`, … instead: each writer
    // number is its own chain of segments, so the two never share a file.
    let mut writer = u16::try_from(index).context("more than 65535 workers")?;
    let (handle, thread) = loop {
        match sluice_recorder::Recorder::spawn(
            &dir,
            writer,
            config.recorder_config(),
            config.recording.queue_mib * 1024 * 1024,
            overflow,
        ) {
            Ok(started) => break started,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let next = writer.checked_add(WRITER_STRIDE).with_context(|| {
                    format!("every recording writer for worker {index} in {} is held by another process", dir.display())
                })?;
                info!(
                    worker = index,
                    busy = writer,
                    writer = next,
                    "another gateway holds this worker's recording; recording as another writer"
                );
                writer = next;
            }
            Err(e) => return Err(e).with_context(|| format!("opening {}", dir.display())),
        }
    };
    if let Some(r) = handle.recovery() {
        warn!(
            worker = index,
            segment = %r.segment.display(),
            kept_blocks = r.kept_blocks,
            kept_records = r.kept_records,
            cut_bytes = r.cut_bytes,
            bad_blocks = r.bad_blocks.len(),
            "recovered a session recording segment left unsealed by a crash"
        );
    }
    let r = &config.recording;
    if index == 0 && (r.retention_days.is_some() || r.retention_gib.is_some()) {
        let max_age = r.retention_days.map(|d| Duration::from_secs(d * 86_400));
        let max_bytes = r.retention_gib.map(|g| g * 1024 * 1024 * 1024);
        let dir = dir.clone();
        std::thread::Builder::new()
            .name("sluice-retention".into())
            .spawn(move || loop {
                match sluice_recorder::apply_retention(
                    &dir,
                    max_age,
                    max_bytes,
                    std::time::SystemTime::now(),
                ) {
                    Ok(removed) if !removed.is_empty() => {
                        info!(
                            removed = removed.len(),
                            "recording retention removed sealed segments"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "recording retention failed"),
                }
                std::thread::sleep(Duration::from_secs(600));
            })
            .context("starting the retention thread")?;
    }
    Ok(Some((handle, thread)))
}

/// The sessions a worker is serving. Each runs as its own task wrapped in an abort handle,
/// so shutdown can end the ones still open after the grace period; polling the handle is
/// an atomic load, with no lock on the data path.
/// Counts a connection closed when its task ends or is dropped.
struct ClosedOnDrop(Arc<WorkerMetrics>);

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        self.0.connections_closed.inc();
    }
}

#[derive(Default, Clone)]
struct Sessions {
    open: Rc<RefCell<HashMap<u64, AbortHandle>>>,
    next_id: Rc<std::cell::Cell<u64>>,
}

impl Sessions {
    fn len(&self) -> usize {
        self.open.borrow().len()
    }

    fn spawn(
        &self,
        worker: usize,
        stream: monoio::net::TcpStream,
        peer: SocketAddr,
        ctx: Rc<WorkerContext>,
    ) {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (handle, registration) = AbortHandle::new_pair();
        self.open.borrow_mut().insert(id, handle);
        let open = self.open.clone();
        ctx.metrics.connections_accepted.inc();
        // Counted closed however the session ends (finished, aborted, panicked).
        let closed = ClosedOnDrop(Arc::clone(&ctx.metrics));
        monoio::spawn(async move {
            let _closed = closed;
            // A bug in one session must not take the worker, and every other session on
            // it, down with it.
            let session = AssertUnwindSafe(crate::session::serve(stream, peer, ctx)).catch_unwind();
            match Abortable::new(session, registration).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    error!(worker, %peer, "session panicked; its connections were closed")
                }
                Err(Aborted) => warn!(worker, %peer, "session closed by gateway shutdown"),
            }
            open.borrow_mut().remove(&id);
        });
    }

    fn abort_all(&self) {
        for handle in self.open.borrow().values() {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_ring_flags_are_dropped_one_at_a_time() {
        let flags = |sqpoll, coop_taskrun| RingFlags {
            sqpoll,
            coop_taskrun,
        };
        let io = |sqpoll, coop| IoConfig {
            uring_sqpoll: sqpoll,
            uring_coop_taskrun: coop,
            ..IoConfig::default()
        };
        assert_eq!(
            ring_attempts(&IoConfig::default()),
            [flags(false, true), flags(false, false)]
        );
        assert_eq!(
            ring_attempts(&io(true, true)),
            [flags(true, true), flags(false, true), flags(false, false)]
        );
        assert_eq!(
            ring_attempts(&io(true, false)),
            [flags(true, false), flags(false, false)]
        );
        assert_eq!(ring_attempts(&io(false, false)), [flags(false, false)]);
    }
}
