//! The gateway's observability endpoint: Prometheus metrics, liveness, readiness and the
//! statement fingerprint table, over plain HTTP on an address of its own.
//!
//! It runs on a thread of its own (unpinned, outside every worker's runtime): a scrape
//! reads the workers' counters where they lie ([`crate::metrics`]) and never asks a worker
//! for anything, so a scrape costs the data path nothing and still answers when a worker
//! is stuck (its tick age then says so). The endpoint has no authentication; it listens on
//! loopback unless configured otherwise and serves no statement literals.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde::Serialize;
use tracing::{info, warn};

use crate::metrics::{
    merged_top, render_prometheus, BackendCheck, RecordingFigures, ScrapeExtras, TopOrder,
    WorkerMetrics,
};

/// How old a worker's last tick may be before readiness calls it stuck.
const WORKER_STALL: Duration = Duration::from_secs(3);
/// How long a backend check result is reused (probes often come every second).
const BACKEND_CHECK_REUSE: Duration = Duration::from_secs(1);

/// What the endpoint reads.
pub struct Observed {
    /// Every worker's metrics.
    pub workers: Vec<Arc<WorkerMetrics>>,
    /// Backends to check for readiness: resource name and address.
    pub backends: Vec<(String, SocketAddr)>,
    /// Timeout of one backend check.
    pub backend_timeout: Duration,
    /// Capacity of each worker's recording queue (bytes), when recording is on.
    pub recording_queue_bytes: Option<u64>,
    /// Whether workers stamp round trips (false leaves the latency histograms empty).
    pub latency: bool,
}

struct State {
    observed: Observed,
    scrapes: AtomicU64,
    backend_cache: Mutex<Option<(Instant, Vec<BackendCheck>)>>,
}

/// The readiness verdict, as `/readyz` and `sluice status` show it.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// Whether the gateway can serve sessions now.
    pub ready: bool,
    /// Why not, one line per failed check.
    pub problems: Vec<String>,
    /// Per worker: whether it ticks and admits sessions.
    pub workers: Vec<WorkerReadiness>,
    /// Per resource: whether its backend answers.
    pub backends: Vec<BackendCheck>,
}

/// One worker's part of [`Readiness`].
#[derive(Debug, Serialize)]
pub struct WorkerReadiness {
    /// Worker index.
    pub worker: usize,
    /// Whether its tick ran recently.
    pub ticking: bool,
    /// Whether it has a current snapshot (and so admits sessions).
    pub snapshot_fresh: bool,
    /// Control's generation in force on it.
    pub snapshot_generation: u64,
    /// Seconds since control last proved alive (`None`: never).
    pub snapshot_age_secs: Option<f64>,
    /// Connections open on it.
    pub connections: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl State {
    fn backend_checks(&self) -> Vec<BackendCheck> {
        let mut cache = self
            .backend_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((at, checks)) = cache.as_ref() {
            if at.elapsed() < BACKEND_CHECK_REUSE {
                return checks.clone();
            }
        }
        // One thread per backend so that one unreachable host costs one timeout, not one
        // per resource.
        let timeout = self.observed.backend_timeout;
        let probes: Vec<_> = self
            .observed
            .backends
            .iter()
            .map(|(name, addr)| {
                let (name, addr) = (name.clone(), *addr);
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let result = TcpStream::connect_timeout(&addr, timeout);
                    BackendCheck {
                        resource: name,
                        reachable: result.is_ok(),
                        error: result.err().map(|e| format!("{addr}: {e}")),
                        connect_us: started.elapsed().as_micros() as u64,
                    }
                })
            })
            .collect();
        let checks: Vec<BackendCheck> = probes
            .into_iter()
            .zip(&self.observed.backends)
            .map(|(probe, (name, addr))| {
                probe.join().unwrap_or_else(|_| BackendCheck {
                    resource: name.clone(),
                    reachable: false,
                    error: Some(format!("{addr}: the check failed")),
                    connect_us: 0,
                })
            })
            .collect();
        *cache = Some((Instant::now(), checks.clone()));
        checks
    }

    fn readiness(&self) -> Readiness {
        let now = now_ms();
        let workers: Vec<WorkerReadiness> = self
            .observed
            .workers
            .iter()
            .map(|w| {
                let heard = w.snapshot_heard_ms.get();
                WorkerReadiness {
                    worker: w.worker,
                    ticking: now.saturating_sub(w.last_tick_ms.get())
                        <= WORKER_STALL.as_millis() as u64,
                    snapshot_fresh: w.snapshot_fresh.get() == 1,
                    snapshot_generation: w.snapshot_generation.get(),
                    snapshot_age_secs: (heard != 0)
                        .then(|| now.saturating_sub(heard) as f64 / 1000.0),
                    connections: w
                        .connections_accepted
                        .get()
                        .saturating_sub(w.connections_closed.get()),
                }
            })
            .collect();
        let backends = self.backend_checks();
        let mut problems = Vec::new();
        if !workers.iter().any(|w| w.ticking && w.snapshot_fresh) {
            problems.push(
                "no worker has a current policy snapshot: is control running? (sluice status)"
                    .to_owned(),
            );
        }
        for w in workers.iter().filter(|w| !w.ticking) {
            problems.push(format!(
                "worker {} has not ticked for over {} s",
                w.worker,
                WORKER_STALL.as_secs()
            ));
        }
        for b in backends.iter().filter(|b| !b.reachable) {
            problems.push(format!(
                "resource \"{}\" is unreachable: {}",
                b.resource,
                b.error.as_deref().unwrap_or("no answer")
            ));
        }
        Readiness {
            ready: problems.is_empty(),
            problems,
            workers,
            backends,
        }
    }

    fn metrics(&self) -> String {
        let scrapes = self.scrapes.fetch_add(1, Ordering::Relaxed) + 1;
        let recording = match self.observed.recording_queue_bytes {
            None => Vec::new(),
            Some(capacity) => self
                .observed
                .workers
                .iter()
                .filter_map(|w| w.recorder.get())
                .map(|r| {
                    let s = r.stats();
                    RecordingFigures {
                        records: s.writer.records,
                        bytes_in: s.writer.bytes_in,
                        bytes_out: s.writer.bytes_out,
                        blocks: s.writer.blocks,
                        flushes: s.flushes,
                        flush_sum_us: s.flush_latency_sum_us,
                        flush_max_us: s.flush_latency_max_us,
                        queue_full: s.queue_full,
                        queued_bytes: s.queued_bytes,
                        queue_capacity: capacity,
                        unwritten: s.unwritten_after_error,
                        segments_sealed: s.writer.segments_sealed,
                        fsyncs: s.writer.fsyncs,
                    }
                })
                .collect(),
        };
        let extras = ScrapeExtras {
            recording,
            backends: self
                .backend_cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(|(_, c)| c.clone())
                .unwrap_or_default(),
            now_ms: now_ms(),
            scrapes,
        };
        render_prometheus(&self.observed.workers, &extras)
    }
}

/// A running observability endpoint.
pub struct Endpoint {
    addr: SocketAddr,
}

impl Endpoint {
    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Binds `addr` and serves on a thread of its own until the process ends.
pub fn start(addr: SocketAddr, observed: Observed) -> anyhow::Result<Endpoint> {
    let server = tiny_http::Server::from_listener(reuseport_listener(addr)?, None)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("serving the metrics listener {addr}"))?;
    let local = server
        .server_addr()
        .to_ip()
        .context("the metrics listener has no IP address")?;
    if !local.ip().is_loopback() {
        warn!(address = %local, "the metrics endpoint listens beyond loopback and has no authentication; restrict it with a firewall");
    }
    let state = Arc::new(State {
        observed,
        scrapes: AtomicU64::new(0),
        backend_cache: Mutex::new(None),
    });
    std::thread::Builder::new()
        .name("sluice-metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                respond(&state, request);
            }
        })
        .context("spawning the metrics thread")?;
    info!(address = %local, "metrics, health and statement statistics at http://{local}/metrics, /healthz, /readyz, /top");
    Ok(Endpoint { addr: local })
}

/// The endpoint's socket, with `SO_REUSEPORT` like the data path's: a new gateway that
/// `sluice up` starts beside the one it is about to retire binds the same address (scrapes
/// reach either while both run).
fn reuseport_listener(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding the metrics listener {addr}"))?;
    socket.listen(128)?;
    Ok(socket.into())
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn respond(state: &State, request: tiny_http::Request) {
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let (status, content_type, body) = if *request.method() != tiny_http::Method::Get {
        (405, "text/plain", "only GET\n".to_owned())
    } else {
        match path {
            "/metrics" => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                state.metrics(),
            ),
            "/healthz" => (200, "text/plain", "ok\n".to_owned()),
            "/readyz" => {
                let r = state.readiness();
                let status = if r.ready { 200 } else { 503 };
                (
                    status,
                    "application/json",
                    serde_json::to_string_pretty(&r).unwrap_or_default() + "\n",
                )
            }
            "/top" => {
                let order =
                    query_param(query, "by").map_or(Some(TopOrder::AddedLatency), TopOrder::parse);
                let limit = query_param(query, "limit")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(20usize);
                let resource = query_param(query, "resource");
                match order {
                    None => (
                        400,
                        "text/plain",
                        "by must be one of added-latency, count, rows, time\n".to_owned(),
                    ),
                    Some(order) => {
                        let entries = merged_top(&state.observed.workers, resource, order, limit);
                        (
                            200,
                            "application/json",
                            serde_json::to_string(&TopReply {
                                latency_measured: state.observed.latency,
                                entries,
                            })
                            .unwrap_or_default()
                                + "\n",
                        )
                    }
                }
            }
            _ => (
                404,
                "text/plain",
                "not found: try /metrics, /healthz, /readyz or /top\n".to_owned(),
            ),
        }
    };
    let mut response = tiny_http::Response::from_string(body).with_status_code(status);
    if let Ok(header) = tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
    {
        response.add_header(header);
    }
    // A scraper that went away is its own problem.
    let _ = request.respond(response);
}

/// What `/top` answers.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct TopReply {
    /// Whether workers measure gateway time (the `added_*` fields are zero otherwise).
    pub latency_measured: bool,
    /// The fingerprints, most costly first.
    pub entries: Vec<crate::metrics::TopEntry>,
}
