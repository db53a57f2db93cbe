//! Command-line arguments of `sluice loadtest` and `sluice loadtest chaos`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::workload::{Builtin, Protocol};

/// `sluice loadtest`: drive one or more PostgreSQL endpoints and compare them.
#[derive(clap::Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LoadtestArgs {
    #[command(subcommand)]
    pub command: Option<LoadtestCommand>,
    // Boxed: the `sluice` binary keeps this beside much smaller subcommands.
    #[command(flatten)]
    pub load: Box<LoadArgs>,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum LoadtestCommand {
    /// Faults while load runs: backend or control restarts, clients that vanish mid-result,
    /// slow readers. Fails on a hang or a leaked backend connection.
    Chaos(Box<ChaosArgs>),
}

/// A target to load: `NAME=URL`.
#[derive(Debug, Clone)]
pub struct NamedTarget {
    pub name: String,
    pub url: String,
}

fn parse_named_target(s: &str) -> Result<NamedTarget, String> {
    let (name, url) = s
        .split_once('=')
        .filter(|(n, _)| !n.is_empty() && !n.contains("://"))
        .ok_or_else(|| format!("expected NAME=URL, got {s:?}"))?;
    Ok(NamedTarget {
        name: name.to_string(),
        url: url.to_string(),
    })
}

/// A process whose CPU time is charged per transaction: `NAME=PID`.
#[derive(Debug, Clone)]
pub struct NamedPid {
    pub name: String,
    pub pid: u32,
}

fn parse_named_pid(s: &str) -> Result<NamedPid, String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PID, got {s:?}"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("{pid:?} is not a process id"))?;
    Ok(NamedPid {
        name: name.to_string(),
        pid,
    })
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?} is not a duration (e.g. 10s, 500ms, 2m)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Load shape and reporting, shared by a plain run and the chaos scenarios.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// A server to load, as NAME=postgres://user:password@host:port/db?sslmode=…
    /// (sslmode disable|require|verify-full, sslrootcert=FILE). Repeat to compare: the
    /// report gives every target's TPS as a ratio to the first one.
    #[arg(long = "target", value_name = "NAME=URL", value_parser = parse_named_target)]
    pub targets: Vec<NamedTarget>,
    /// What each transaction does.
    #[arg(long, short = 'w', value_enum, default_value_t = Builtin::SelectOnly)]
    pub workload: Builtin,
    /// SQL script for the custom workload (pgbench-like: `\set n random(1, 100)` lines,
    /// `:n` references, statements ending with `;`). Implies --workload custom.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// How statements are sent.
    #[arg(long, short = 'M', value_enum, default_value_t = Protocol::Simple)]
    pub protocol: Protocol,
    /// Transactions in flight per connection (single-statement workloads only).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub pipeline: u32,
    /// Connections per target (pgbench's -c; no short option here, because `sluice`'s
    /// global -c is --config).
    #[arg(long, visible_aliases = ["clients", "client"], default_value_t = 8)]
    pub connections: u32,
    /// Threads, each with its own runtime (default: one per core).
    #[arg(long, short = 'j')]
    pub threads: Option<usize>,
    /// Open loop: start transactions at this total rate (per second, Poisson arrivals)
    /// and measure latency from when each was due, not from when it was sent.
    #[arg(long, short = 'R', value_name = "TPS")]
    pub rate: Option<f64>,
    /// How long each target runs per round, after the warm-up.
    #[arg(long, short = 'T', value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Stop after this many transactions per target run (total over connections) instead
    /// of after --duration.
    #[arg(long, short = 't')]
    pub transactions: Option<u64>,
    /// Load that runs before measuring starts, per target run.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Interleaved rounds: every target runs once per round, in order.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Close and reopen each connection after this many transactions; connect and
    /// handshake time is reported apart from transaction latency.
    #[arg(long, value_name = "N")]
    pub reconnect_every: Option<u64>,
    /// Create pgbench's tables (with SQL, no pgbench needed) on the first target first.
    #[arg(long, short = 'i')]
    pub init: bool,
    /// With --init: stop after creating the tables.
    #[arg(long, requires = "init")]
    pub init_only: bool,
    /// pgbench scale factor: rows created by --init, and the key range of select-only and
    /// tpcb-like (default: counted from pgbench_branches).
    #[arg(long, short = 's')]
    pub scale: Option<i64>,
    /// Charge this local process's CPU time (utime+stime) per transaction: NAME=PID.
    #[arg(long = "pid", value_name = "NAME=PID", value_parser = parse_named_pid)]
    pub pids: Vec<NamedPid>,
    /// Fail (exit 1) when a threshold is crossed, e.g. 'p99>5ms', 'tps<1000', 'errors>0',
    /// 'ratio<0.8'. Repeatable; checked against every target's medians.
    #[arg(long = "fail-if", value_name = "COND")]
    pub fail_if: Vec<String>,
    /// Write the full report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// I/O driver of the load threads' runtimes (io-uring falls back to epoll where the
    /// kernel refuses it).
    #[arg(long, value_enum, default_value_t = crate::runtime::Driver::Epoll)]
    pub driver: crate::runtime::Driver,
    /// Longest any single client operation may take before it counts as a hang (error
    /// `timeout`) and the connection is replaced.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub op_timeout: Duration,
}

impl LoadArgs {
    pub fn workload(&self) -> Builtin {
        if self.script.is_some() {
            Builtin::Custom
        } else {
            self.workload
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, self.connections.max(1) as usize)
    }

    pub fn validate(&self) -> Result<()> {
        if self.targets.is_empty() {
            bail!("give at least one --target NAME=URL");
        }
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        if self.workload == Builtin::Custom && self.script.is_none() {
            bail!("--workload custom needs --script FILE");
        }
        if let Some(rate) = self.rate {
            if !(rate > 0.0 && rate.is_finite()) {
                bail!("--rate must be a positive number of transactions per second");
            }
        }
        if self.transactions == Some(0) || self.reconnect_every == Some(0) {
            bail!("--transactions and --reconnect-every must be at least 1");
        }
        if self.scale.is_some_and(|s| s < 1) {
            bail!("--scale must be at least 1");
        }
        let mut names: Vec<&str> = self.targets.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            bail!("target names must be unique");
        }
        for cond in &self.fail_if {
            crate::report::Threshold::parse(cond).with_context(|| format!("--fail-if {cond:?}"))?;
        }
        Ok(())
    }
}

/// `sluice loadtest chaos`: load one target while faults happen, then check that nothing
/// hung and no backend connection was left behind.
#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// A direct connection to the backend PostgreSQL (any role that may read
    /// pg_stat_activity) for counting the target's backend connections before and after.
    #[arg(long, value_name = "URL")]
    pub admin_url: String,
    /// Backend role whose connections are counted (default: the target URL's user; set it
    /// when a gateway logs in to the backend as another role).
    #[arg(long)]
    pub backend_user: Option<String>,
    /// Backend database whose connections are counted (default: the target URL's).
    #[arg(long)]
    pub backend_database: Option<String>,
    /// Scenarios to run, in order (default: every one whose commands are given).
    #[arg(long = "scenario", value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Shell command that kills the backend PostgreSQL (run mid-load).
    #[arg(long)]
    pub kill_backend_cmd: Option<String>,
    /// Shell command that starts the backend again.
    #[arg(long)]
    pub start_backend_cmd: Option<String>,
    /// Shell command that kills the control process (run mid-load).
    #[arg(long)]
    pub kill_control_cmd: Option<String>,
    /// Shell command that starts control again.
    #[arg(long)]
    pub start_control_cmd: Option<String>,
    /// Clients per result-stream scenario (disconnect-mid-result, slow-client).
    #[arg(long, default_value_t = 4)]
    pub stream_clients: u32,
    /// Rows of the large result the stream scenarios open.
    #[arg(long, default_value_t = 200_000)]
    pub result_rows: u64,
    /// How long to wait for backend connections to drain back to the count before.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub drain_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Kill the backend mid-run, start it again, load continues.
    BackendRestart,
    /// Kill control mid-run, start it again, load continues.
    ControlRestart,
    /// Clients open a large result and close the socket after its first row.
    DisconnectMidResult,
    /// Clients read a large result a few bytes at a time while the load runs.
    SlowClient,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_named_target("a=postgres://x@y/z").is_ok());
        assert!(parse_named_target("postgres://x@y/z").is_err());
        assert!(parse_named_pid("pg=12").is_ok());
        assert!(parse_named_pid("pg=x").is_err());
    }
}

#[cfg(test)]
mod cli_tests {
    use clap::{CommandFactory, Parser, Subcommand};

    /// The shape of the `sluice` binary: a global `-c/--config` beside this subcommand.
    #[derive(Parser)]
    struct Binary {
        #[arg(long, short, global = true)]
        config: Option<std::path::PathBuf>,
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Subcommand)]
    enum Sub {
        Loadtest(super::LoadtestArgs),
    }

    #[test]
    fn fits_into_the_sluice_binary() {
        Binary::command().debug_assert();
        let parsed = Binary::try_parse_from([
            "sluice",
            "loadtest",
            "--target",
            "a=postgres://u@h/d",
            "--clients",
            "3",
        ])
        .expect("parse");
        let Sub::Loadtest(args) = parsed.command;
        assert_eq!(args.load.connections, 3);
    }
}
