//! `sluice loadtest chaos`: faults while load runs, then two checks — nothing hung (every
//! client operation met its deadline) and no backend connection leaked (the target's
//! backend sessions in pg_stat_activity drain back to the count before the scenario).

use std::collections::BTreeMap;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::args::{ChaosArgs, Scenario};
use crate::client::{Conn, ConnError};
use crate::engine::{self, Progress, Stats};
use crate::url::Target;
use crate::{load_script, plan_for, resolve_targets, ResolvedTarget};

/// Where the kill command falls in the load, as a fraction of --duration.
const FAULT_AT: f64 = 1.0 / 3.0;
/// How long the killed process stays down before the start command runs.
const DOWN_FOR: Duration = Duration::from_secs(1);
/// Pause between reads of a slow client.
const SLOW_READ_PAUSE: Duration = Duration::from_millis(20);
const SLOW_READ_BYTES: usize = 1024;
/// How often a disconnecting client repeats its open-and-vanish.
const DISCONNECTS_PER_CLIENT: u32 = 3;

#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    pub scenario: Scenario,
    /// Transactions of the background load that succeeded.
    pub load_transactions: u64,
    /// Errors by SQLSTATE (or connect/io/timeout), load and scenario clients together.
    pub errors: BTreeMap<String, u64>,
    pub hangs: u64,
    pub backends_before: i64,
    pub backends_after: i64,
    pub leaked: bool,
    pub command_failures: Vec<String>,
    pub passed: bool,
}

pub fn run(args: ChaosArgs) -> Result<ExitCode> {
    let load = &args.load;
    load.validate()?;
    crate::runtime::set_driver(load.driver);
    if load.targets.len() != 1 {
        bail!("chaos runs against exactly one --target");
    }
    if load.transactions.is_some() {
        bail!("chaos runs for --duration, not --transactions");
    }
    let targets = resolve_targets(load)?;
    let target = &targets[0];
    let admin = Target::parse(&args.admin_url).context("--admin-url")?;
    let admin_tls = crate::tls::client_config(&admin).context("--admin-url")?;
    let backend_user = args
        .backend_user
        .clone()
        .unwrap_or_else(|| target.target.user.clone());
    let backend_db = args
        .backend_database
        .clone()
        .unwrap_or_else(|| target.target.database.clone());
    let counter = BackendCounter {
        admin,
        tls: admin_tls,
        sql: format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = {} AND datname = {} \
             AND pid <> pg_backend_pid()",
            quote_literal(&backend_user),
            quote_literal(&backend_db)
        ),
    };
    let scenarios = choose_scenarios(&args)?;
    let script = load_script(load, target)?;

    let mut reports = Vec::new();
    for (i, scenario) in scenarios.iter().enumerate() {
        let before = counter
            .count_within(args.drain_timeout)
            .context("counting backend connections before the scenario")?;
        eprintln!(
            "chaos: {} (backend sessions before: {before})",
            crate::value_name(*scenario)
        );
        let plan = Arc::new(plan_for(load, target, &script, 0xC4A0_5000 + i as u64));
        let (stats, command_failures) = match scenario {
            Scenario::BackendRestart => with_fault(
                plan,
                load.duration,
                args.kill_backend_cmd.as_deref(),
                args.start_backend_cmd.as_deref(),
            )?,
            Scenario::ControlRestart => with_fault(
                plan,
                load.duration,
                args.kill_control_cmd.as_deref(),
                args.start_control_cmd.as_deref(),
            )?,
            Scenario::DisconnectMidResult | Scenario::SlowClient => {
                let load_thread = std::thread::spawn(move || {
                    let progress = Arc::new(Progress::new(plan.threads));
                    engine::run(plan, progress, |_| {}, |_, _| {})
                });
                let mut stats = stream_clients(&args, target, *scenario)?;
                let load_stats = load_thread
                    .join()
                    .map_err(|_| anyhow!("the load thread panicked"))??;
                stats.merge(load_stats);
                (stats, Vec::new())
            }
        };
        let after = counter.drain_to(before, args.drain_timeout);
        let leaked = after > before;
        let passed = stats.hangs == 0 && !leaked && command_failures.is_empty();
        reports.push(ScenarioReport {
            scenario: *scenario,
            load_transactions: stats.ok,
            errors: stats.errors,
            hangs: stats.hangs,
            backends_before: before,
            backends_after: after,
            leaked,
            command_failures,
            passed,
        });
    }

    print!("{}", table(&reports));
    if let Some(path) = &load.json {
        std::fs::write(path, serde_json::to_string_pretty(&reports)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let failed: Vec<&ScenarioReport> = reports.iter().filter(|r| !r.passed).collect();
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for r in failed {
        let mut why = Vec::new();
        if r.hangs > 0 {
            why.push(format!("{} client operation(s) hung", r.hangs));
        }
        if r.leaked {
            why.push(format!(
                "backend sessions did not drain ({} before, {} after)",
                r.backends_before, r.backends_after
            ));
        }
        why.extend(r.command_failures.iter().cloned());
        eprintln!(
            "chaos: {} failed: {}",
            crate::value_name(r.scenario),
            why.join("; ")
        );
    }
    Ok(ExitCode::FAILURE)
}

fn choose_scenarios(args: &ChaosArgs) -> Result<Vec<Scenario>> {
    let backend = args.kill_backend_cmd.is_some() && args.start_backend_cmd.is_some();
    let control = args.kill_control_cmd.is_some() && args.start_control_cmd.is_some();
    if args.scenarios.is_empty() {
        let mut all = Vec::new();
        if backend {
            all.push(Scenario::BackendRestart);
        }
        if control {
            all.push(Scenario::ControlRestart);
        }
        all.extend([Scenario::DisconnectMidResult, Scenario::SlowClient]);
        return Ok(all);
    }
    for s in &args.scenarios {
        match s {
            Scenario::BackendRestart if !backend => {
                bail!("backend-restart needs --kill-backend-cmd and --start-backend-cmd")
            }
            Scenario::ControlRestart if !control => {
                bail!("control-restart needs --kill-control-cmd and --start-control-cmd")
            }
            _ => {}
        }
    }
    Ok(args.scenarios.clone())
}

/// Runs the load; a third of the way in runs `kill`, waits, runs `start`.
fn with_fault(
    plan: Arc<engine::Plan>,
    duration: Duration,
    kill: Option<&str>,
    start: Option<&str>,
) -> Result<(Stats, Vec<String>)> {
    let warmup = plan.warmup;
    let load_thread = std::thread::spawn(move || {
        let progress = Arc::new(Progress::new(plan.threads));
        engine::run(plan, progress, |_| {}, |_, _| {})
    });
    std::thread::sleep(warmup + duration.mul_f64(FAULT_AT));
    let mut failures = Vec::new();
    for (what, cmd) in [("kill", kill), ("start", start)] {
        let Some(cmd) = cmd else { continue };
        if let Err(e) = shell(cmd) {
            failures.push(format!("{what} command failed: {e:#}"));
        }
        if what == "kill" {
            std::thread::sleep(DOWN_FOR);
        }
    }
    let stats = load_thread
        .join()
        .map_err(|_| anyhow!("the load thread panicked"))??;
    Ok((stats, failures))
}

fn shell(cmd: &str) -> Result<()> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The result-stream scenarios, run on this thread while the load runs on others.
fn stream_clients(args: &ChaosArgs, target: &ResolvedTarget, scenario: Scenario) -> Result<Stats> {
    let query = format!(
        "SELECT g, repeat('x', 200) FROM generate_series(1, {}) AS g",
        args.result_rows
    );
    let deadline = args.load.op_timeout;
    let slow_for = args.load.warmup + args.load.duration.mul_f64(0.5);
    crate::runtime::block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..args.stream_clients {
            let query = query.clone();
            let server = target.target.clone();
            let tls = target.tls.clone();
            tasks.push(monoio::spawn(async move {
                let mut stats = Stats::new();
                let rounds = match scenario {
                    Scenario::SlowClient => 1,
                    _ => DISCONNECTS_PER_CLIENT,
                };
                for _ in 0..rounds {
                    let outcome =
                        monoio::time::timeout(deadline, Conn::connect(&server, tls.as_ref())).await;
                    let mut conn = match outcome {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) => {
                            record(&mut stats, &e);
                            continue;
                        }
                        Err(_) => {
                            stats.hangs += 1;
                            *stats.errors.entry("timeout".into()).or_default() += 1;
                            continue;
                        }
                    };
                    if let Err(e) =
                        postgres_protocol::message::frontend::query(&query, &mut conn.out)
                    {
                        *stats.errors.entry(format!("encode: {e}")).or_default() += 1;
                        break;
                    }
                    let result = match scenario {
                        Scenario::SlowClient => slow_read(&mut conn, slow_for, deadline).await,
                        _ => {
                            timed(deadline, async {
                                conn.flush().await?;
                                conn.read_first_data_row().await
                            })
                            .await
                        }
                    };
                    match result {
                        Ok(()) => {}
                        Err(Fault::Error(e)) => record(&mut stats, &e),
                        Err(Fault::Hang) => {
                            stats.hangs += 1;
                            *stats.errors.entry("timeout".into()).or_default() += 1;
                        }
                    }
                    // Dropped without Terminate: the socket just closes mid-result.
                    drop(conn);
                }
                stats
            }));
        }
        let mut total = Stats::new();
        for t in tasks {
            total.merge(t.await);
        }
        Ok(total)
    })
}

enum Fault {
    Error(ConnError),
    Hang,
}

async fn timed(
    deadline: Duration,
    fut: impl std::future::Future<Output = Result<(), ConnError>>,
) -> Result<(), Fault> {
    match monoio::time::timeout(deadline, fut).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Fault::Error(e)),
        Err(_) => Err(Fault::Hang),
    }
}

/// Reads the result a kilobyte at a time with pauses, for `slow_for`.
async fn slow_read(conn: &mut Conn, slow_for: Duration, deadline: Duration) -> Result<(), Fault> {
    timed(deadline, conn.flush()).await?;
    let until = Instant::now() + slow_for;
    while Instant::now() < until {
        match timed(deadline, async {
            conn.read_some(SLOW_READ_BYTES).await.map(drop)
        })
        .await
        {
            Ok(()) => {}
            // The whole result was read before the time was up: nothing left to be slow on.
            Err(Fault::Error(e)) if e.kind == crate::client::ErrorKind::Io => return Ok(()),
            Err(other) => return Err(other),
        }
        monoio::time::sleep(SLOW_READ_PAUSE).await;
    }
    Ok(())
}

fn record(stats: &mut Stats, e: &ConnError) {
    *stats.errors.entry(e.label()).or_default() += 1;
}

struct BackendCounter {
    admin: Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    sql: String,
}

impl BackendCounter {
    fn count(&self) -> Result<i64> {
        let sql = self.sql.clone();
        let rows =
            crate::setup::with_conn(&self.admin, self.tls.as_ref(), async move |c: &mut Conn| {
                c.query_column(&sql).await.map_err(|e| anyhow!("{e}"))
            })?;
        rows.first()
            .cloned()
            .flatten()
            .and_then(|v| v.parse().ok())
            .context("unexpected answer from pg_stat_activity")
    }

    /// Counts, retrying while the server is unreachable (it may be restarting).
    fn count_within(&self, limit: Duration) -> Result<i64> {
        let until = Instant::now() + limit;
        loop {
            match self.count() {
                Ok(n) => return Ok(n),
                Err(e) if Instant::now() >= until => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Waits up to `limit` for the count to fall to `target`; returns the last count
    /// (`i64::MAX` if the server could not be asked at all).
    fn drain_to(&self, target: i64, limit: Duration) -> i64 {
        let until = Instant::now() + limit;
        let mut last = i64::MAX;
        loop {
            if let Ok(n) = self.count() {
                last = n;
                if n <= target {
                    return n;
                }
            }
            if Instant::now() >= until {
                return last;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn table(reports: &[ScenarioReport]) -> String {
    let mut out = String::from(
        "| scenario | result | load txns | errors | hangs | backends before → after |\n|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let errors = if r.errors.is_empty() {
            "0".to_string()
        } else {
            r.errors
                .iter()
                .map(|(k, v)| format!("{k}×{v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} → {} |\n",
            crate::value_name(r.scenario),
            if r.passed { "pass" } else { "FAIL" },
            r.load_transactions,
            errors,
            r.hangs,
            r.backends_before,
            r.backends_after
        ));
    }
    out
}
