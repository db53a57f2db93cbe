//! # sluice-loadtest — the load generator behind `sluice loadtest`
//!
//! ## What it owns
//!
//! Driving one or more PostgreSQL endpoints (PostgreSQL itself, Sluice, PgBouncer, …) with
//! pgbench-compatible workloads (`select-only`, `tpcb-like`, and `--init` to create their
//! tables with plain SQL), the demo's `point-select` and `wide-rows`, and custom scripts
//! in a pgbench-like format; over the simple, extended or prepared protocol, optionally
//! pipelined; closed loop or open loop at a fixed rate; several targets interleaved in
//! rounds so machine noise hits all of them alike. It reports TPS, latency percentiles
//! from hdrhistogram, errors by SQLSTATE, the ratio to the first target and CPU time per
//! transaction of itself and of any local process named with `--pid`. `sluice loadtest
//! chaos` adds faults (backend or control restarts, clients that vanish mid-result, slow
//! readers) and checks that nothing hangs and no backend connection leaks.
//!
//! ## What it must never do
//!
//! * **Be the bottleneck.** On a 2-core machine shared with the server it measures, every
//!   microsecond it spends is taken from the thing under test. One OS thread per `-j`,
//!   each with its own single-threaded monoio runtime; a connection's loop encodes into a
//!   reused buffer, scans backend frames in place and parses only ErrorResponse and
//!   ReadyForQuery.
//! * **Hold a lock or touch a shared atomic per transaction.** Each thread keeps its own
//!   histograms and counters (in a `RefCell` its tasks share), merged once the run is over.
//!   The progress bar reads a few relaxed atomics that a per-thread ticker stores every
//!   100 ms.
//! * **Hide coordinated omission.** With `--rate` a transaction's latency is measured from
//!   when it was due, not from when a busy connection got round to sending it.
//! * **Hang.** Every client operation has a deadline (`--op-timeout`); a missed one is
//!   counted as `timeout` and the connection replaced.
//! * **Print a password.** Target URLs are shown without theirs (often a gateway token).
//!
//! ## Why the client is hand-written
//!
//! A general driver (tokio-postgres) allocates per row and per statement, runs a
//! connection task beside the caller and decodes every message; under load that costs more
//! CPU than the server under test, and its figures would be about the driver. Here the
//! message encoding, SCRAM-SHA-256 and md5 come from `postgres-protocol`, and the rest is
//! a frame scanner of a few dozen lines (`client.rs`).
//!
//! ## Runtime choice
//!
//! monoio, one single-threaded runtime per thread, on its epoll driver by default and on
//! io_uring with `--driver io-uring` (see `runtime.rs` for the measurement behind the
//! default: a closed-loop client has nothing to batch, and epoll's direct `send`/`recv`
//! costs less per transaction here). TLS uses monoio-rustls, which covers what is needed
//! (a client handshake over a monoio `TcpStream`, then owned-buffer reads and writes), so
//! tokio is not pulled in.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

mod args;
mod chaos;
mod client;
mod cpu;
mod engine;
mod report;
mod runtime;
mod setup;
mod tls;
mod url;
mod workload;

pub use args::{ChaosArgs, LoadArgs, LoadtestArgs, LoadtestCommand, Scenario};
pub use report::{Report, Threshold};
pub use runtime::Driver;
pub use url::{SslMode, Target};
pub use workload::{Builtin, Protocol};

use engine::{Plan, Progress, Stats, Window};
use report::{Latency, RoundResult, TargetReport};
use workload::Script;

/// Runs `sluice loadtest …`: the load (or, with `chaos`, the fault scenarios), prints the
/// report, and returns exit code 1 when a --fail-if threshold or a chaos check failed.
pub fn run(args: LoadtestArgs) -> Result<ExitCode> {
    match args.command {
        Some(LoadtestCommand::Chaos(chaos)) => chaos::run(*chaos),
        None => run_load(*args.load),
    }
}

/// A parsed --target with its TLS configuration.
pub(crate) struct ResolvedTarget {
    pub name: String,
    pub target: Target,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

pub(crate) fn resolve_targets(args: &LoadArgs) -> Result<Vec<ResolvedTarget>> {
    args.targets
        .iter()
        .map(|t| {
            let target = Target::parse(&t.url).with_context(|| format!("target {}", t.name))?;
            let tls = tls::client_config(&target).with_context(|| format!("target {}", t.name))?;
            Ok(ResolvedTarget {
                name: t.name.clone(),
                target,
                tls,
            })
        })
        .collect()
}

/// The script a run executes: built-in at the right scale, or read from --script.
pub(crate) fn load_script(args: &LoadArgs, first: &ResolvedTarget) -> Result<Script> {
    let workload = args.workload();
    let text = match (&args.script, workload) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read script {}", path.display()))?,
        (None, w) if w.uses_pgbench_tables() => {
            let scale = match args.scale {
                Some(s) => s,
                None => setup::detect_scale(&first.target, first.tls.as_ref())?,
            };
            w.script(scale)
        }
        (None, w) => w.script(1),
    };
    let script = Script::parse(&text)?;
    if args.pipeline > 1 && script.statements.len() > 1 {
        bail!(
            "--pipeline works with single-statement workloads; this one has {} statements",
            script.statements.len()
        );
    }
    Ok(script)
}

fn run_load(args: LoadArgs) -> Result<ExitCode> {
    args.validate()?;
    runtime::set_driver(args.driver);
    let targets = resolve_targets(&args)?;
    let first = &targets[0];
    if args.init {
        let scale = args.scale.unwrap_or(1);
        let started = Instant::now();
        setup::init(&first.target, first.tls.as_ref(), scale)?;
        eprintln!(
            "initialised pgbench tables at scale {scale} on {} in {:.1}s",
            first.name,
            started.elapsed().as_secs_f64()
        );
        if args.init_only {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let script = load_script(&args, first)?;
    let report = measure(&args, &targets, &script)?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if report.failed_thresholds.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for failure in &report.failed_thresholds {
            eprintln!("loadtest: {failure}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// Runs every target once per round, in order, and builds the report.
pub(crate) fn measure(
    args: &LoadArgs,
    targets: &[ResolvedTarget],
    script: &Script,
) -> Result<Report> {
    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    let mut rounds: Vec<Vec<RoundResult>> = vec![Vec::new(); targets.len()];
    let mut merged: Vec<Stats> = targets.iter().map(|_| Stats::new()).collect();
    for round in 1..=args.rounds {
        for (index, t) in targets.iter().enumerate() {
            let plan = Arc::new(plan_for(
                args,
                t,
                script,
                u64::from(round) << 32 | index as u64,
            ));
            let label = format!("{} round {round}/{}", t.name, args.rounds);
            let (stats, result) = run_one(args, plan, &label, show_progress, round)
                .with_context(|| format!("target {} round {round}", t.name))?;
            merged[index].merge(stats);
            rounds[index].push(result);
        }
    }
    let mut reports: Vec<TargetReport> = Vec::with_capacity(targets.len());
    for ((t, stats), rounds) in targets.iter().zip(merged).zip(rounds) {
        let mut tps: Vec<f64> = rounds.iter().map(|r| r.tps).collect();
        let median_tps = report::median(&mut tps);
        let mut pid_names: Vec<String> = args.pids.iter().map(|p| p.name.clone()).collect();
        pid_names.dedup();
        let process_cpu = pid_names
            .into_iter()
            .map(|name| {
                let v = report::median_opt(
                    rounds
                        .iter()
                        .map(|r| r.process_cpu_us_per_txn.get(&name).copied().flatten()),
                );
                (name, v)
            })
            .collect();
        reports.push(TargetReport {
            name: t.name.clone(),
            url: t.target.to_string(),
            median_tps,
            ratio: 0.0,
            latency: Latency::of(&stats.latency),
            connect: Latency::of(&stats.connect),
            error_total: stats.errors.values().sum(),
            errors: stats.errors,
            hangs: stats.hangs,
            loadtest_cpu_us_per_txn: report::median_opt(
                rounds.iter().map(|r| r.loadtest_cpu_us_per_txn),
            ),
            process_cpu_us_per_txn: process_cpu,
            rounds,
        });
    }
    let base = reports.first().map_or(0.0, |r| r.median_tps);
    for r in &mut reports {
        r.ratio = if base > 0.0 { r.median_tps / base } else { 0.0 };
    }
    let thresholds: Vec<Threshold> = args
        .fail_if
        .iter()
        .map(|c| Threshold::parse(c))
        .collect::<Result<_>>()?;
    let failed_thresholds = thresholds
        .iter()
        .flat_map(|th| reports.iter().filter_map(|r| th.check(r)))
        .collect();
    Ok(Report {
        settings: report::Settings {
            workload: value_name(args.workload()),
            protocol: value_name(args.protocol),
            connections: args.connections,
            threads: args.threads(),
            pipeline: args.pipeline,
            rate: args.rate,
            duration_s: args.duration.as_secs_f64(),
            transactions: args.transactions,
            warmup_s: args.warmup.as_secs_f64(),
            rounds: args.rounds,
            reconnect_every: args.reconnect_every,
            driver: runtime::driver_name(args.driver).into(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        targets: reports,
        failed_thresholds,
    })
}

pub(crate) fn plan_for(args: &LoadArgs, t: &ResolvedTarget, script: &Script, seed: u64) -> Plan {
    Plan {
        target: t.target.clone(),
        tls: t.tls.clone(),
        script: script.clone(),
        protocol: args.protocol,
        pipeline: args.pipeline,
        connections: args.connections,
        threads: args.threads(),
        rate: args.rate,
        duration: args.duration,
        transactions: args.transactions,
        warmup: args.warmup,
        reconnect_every: args.reconnect_every,
        op_timeout: args.op_timeout,
        driver: args.driver,
        seed,
    }
}

/// The name clap accepts for an enum value (`select-only`, not `SelectOnly`).
pub(crate) fn value_name(v: impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_string())
}

/// CPU times sampled at the edges of the measured window.
#[derive(Clone)]
struct CpuSample {
    own: Option<Duration>,
    pids: Vec<Option<Duration>>,
}

impl CpuSample {
    fn take(args: &LoadArgs) -> CpuSample {
        CpuSample {
            own: cpu::own_cpu(),
            pids: args.pids.iter().map(|p| cpu::process_cpu(p.pid)).collect(),
        }
    }
}

fn per_txn(before: Option<Duration>, after: Option<Duration>, txns: u64) -> Option<f64> {
    let (b, a) = (before?, after?);
    (txns > 0).then(|| a.saturating_sub(b).as_secs_f64() * 1e6 / txns as f64)
}

fn run_one(
    args: &LoadArgs,
    plan: Arc<Plan>,
    label: &str,
    show_progress: bool,
    round: u32,
) -> Result<(Stats, RoundResult)> {
    let progress = Arc::new(Progress::new(plan.threads));
    let bar = show_progress.then(|| {
        let bar = indicatif::ProgressBar::new(match plan.transactions {
            Some(t) => t,
            None => (plan.warmup + plan.duration).as_millis() as u64,
        });
        let style =
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed_precise} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        bar
    });
    let start_sample: std::cell::RefCell<Option<CpuSample>> = Default::default();
    let mut end_sample: Option<CpuSample> = None;
    let mut last = (Instant::now(), 0u64);
    let by_count = plan.transactions.is_some();
    let stats = engine::run(
        plan.clone(),
        progress,
        |w: Window| {
            if w.measure_from <= Instant::now() {
                *start_sample.borrow_mut() = Some(CpuSample::take(args));
            }
        },
        |p: &Progress, w: Window| {
            let now = Instant::now();
            if start_sample.borrow().is_none() && now >= w.measure_from {
                *start_sample.borrow_mut() = Some(CpuSample::take(args));
            }
            if end_sample.is_none() && w.end.is_some_and(|end| now >= end) {
                end_sample = Some(CpuSample::take(args));
            }
            if let Some(bar) = &bar {
                let done: u64 = p
                    .done
                    .iter()
                    .map(|d| d.load(std::sync::atomic::Ordering::Relaxed))
                    .sum();
                let p99 = p
                    .p99_ns
                    .iter()
                    .map(|d| d.load(std::sync::atomic::Ordering::Relaxed))
                    .max()
                    .unwrap_or(0);
                let position = if by_count {
                    done
                } else {
                    now.duration_since(w.start).as_millis() as u64
                };
                bar.set_position(position);
                let span = now.duration_since(last.0).as_secs_f64();
                if span >= 1.0 {
                    let tps = (done - last.1.min(done)) as f64 / span;
                    bar.set_message(format!("{tps:.0} TPS, p99 {:.2}ms", p99 as f64 / 1e6));
                    last = (now, done);
                }
            }
        },
    )?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let end_sample = end_sample.unwrap_or_else(|| CpuSample::take(args));
    let start_sample = start_sample
        .into_inner()
        .unwrap_or_else(|| end_sample.clone());
    let txns = stats.ok + stats.failed;
    let seconds = stats.measured_seconds();
    let result = RoundResult {
        round,
        tps: if seconds > 0.0 {
            stats.ok as f64 / seconds
        } else {
            0.0
        },
        transactions: stats.ok,
        failed_transactions: stats.failed,
        measured_seconds: seconds,
        latency: Latency::of(&stats.latency),
        connect: Latency::of(&stats.connect),
        errors: stats.errors.clone(),
        hangs: stats.hangs,
        loadtest_cpu_us_per_txn: per_txn(start_sample.own, end_sample.own, txns),
        process_cpu_us_per_txn: args
            .pids
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    p.name.clone(),
                    per_txn(
                        start_sample.pids.get(i).copied().flatten(),
                        end_sample.pids.get(i).copied().flatten(),
                        txns,
                    ),
                )
            })
            .collect(),
    };
    Ok((stats, result))
}
