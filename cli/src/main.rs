//! # sluice — the one user-facing binary
//!
//! Processes: `up` (control in this process and the gateway as a supervised child), `control`
//! (control alone), `proxy` (the gateway alone), `demo` (both in front of a throwaway
//! PostgreSQL with sample data).
//!
//! Operations on a running control, over its admin socket (`state_dir/admin.sock`):
//! `token`, `login --saml`, `keys rotate|list`, `reload`, `status`,
//! `access request|approve|deny|list`, `approvals list|approve|deny`, `grant`, `grants list`,
//! `revoke`, `audit`. Offline, from the config file: `policy check|explain`; from the
//! session recordings: `sessions list`, `replay`, `audit verify|export` and the recorded
//! side of `audit --statements`.
//!
//! It owns argument parsing, logging set-up, signal handling, process supervision and
//! output formatting, and nothing else: every behaviour lives in a library crate so it can
//! be tested without this binary. Errors are printed as `error: <message>` with exit code 1.
//!
//! Tuning: `up`, `proxy` and `demo` take `--profile NAME` (a profile merged over the config
//! file, see `sluice-tuning`); `tune profiles|show|check` lists and explains the profiles
//! and checks the host without changing it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

mod admin;
mod approvals;
mod args;
mod demo;
mod masking_plan;
mod observe;
mod output;
mod policy;
mod recordings;
mod run;
mod signals;
mod statement_audit;
mod tune;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Access gateway in the data path to PostgreSQL"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SLUICE_LOG_FORMAT")]
    log_format: LogFormat,
    /// Path to sluice.toml, for every subcommand that reads one (before or after the
    /// subcommand).
    #[arg(long, short, global = true, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The value `--log-format` takes for this format.
    fn as_arg(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Start a throwaway PostgreSQL with sample data, with control and a gateway in front.
    Demo(demo::DemoArgs),
    /// Run control and the gateway (the usual way to run Sluice).
    ///
    /// Control runs in this process, the gateway as a supervised child process (restarted
    /// with backoff if it exits). SIGHUP reloads the config; SIGTERM/SIGINT stops the
    /// gateway gracefully (a second signal closes all sessions), then control.
    Up(tune::ProfileArg),
    /// Run control alone (identity, policy, grants, snapshots, admin socket).
    ///
    /// SIGHUP reloads the config; SIGTERM/SIGINT stops. The gateway (`sluice proxy`) keeps
    /// serving from its last snapshot while control is down, for control.snapshot_max_age.
    Control,
    /// Run the gateway alone from a configuration file (--config or $SLUICE_CONFIG).
    Proxy {
        /// Override `listen.driver` (io_uring | epoll).
        #[arg(long)]
        driver: Option<sluice_proxy::config::Driver>,
        /// Override `listen.workers` (0 = one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Override `listen.address`, e.g. 127.0.0.1:6433.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        #[command(flatten)]
        profile: tune::ProfileArg,
    },
    /// Mint a Sluice token; prints the token alone on stdout. Needs a running control.
    Token(admin::TokenArgs),
    /// Exchange a SAML Response from your identity provider for a Sluice token; prints the
    /// token alone on stdout. Needs a running control and an [[identity.saml]] IdP.
    Login(admin::LoginArgs),
    /// Token signing keys.
    #[command(subcommand)]
    Keys(admin::KeysCommand),
    /// Make control re-read the config file and publish it (like SIGHUP).
    Reload,
    /// Control's status (snapshot generation, gateway subscribers, grants, issuers) and,
    /// with `[metrics] listen`, the gateway's readiness; exits non-zero when either cannot be
    /// asked.
    Status(admin::JsonFlag),
    /// The statement fingerprints that cost the most, live, from the gateway's workers
    /// (`[metrics] listen`), like pg_stat_statements at the gateway.
    Top(observe::TopArgs),
    /// Check or explain the access policy, offline from the config file.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Just-in-time access requests: ask, approve, deny, list.
    #[command(subcommand)]
    Access(admin::AccessCommand),
    /// Statements held for approval: list, approve, deny.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Grant a user access to a resource for a while (approvers only); prints the grant ID.
    Grant(admin::GrantArgs),
    /// Grants in force.
    #[command(subcommand)]
    Grants(admin::GrantsCommand),
    /// End a user's access now, on one resource or all.
    ///
    /// Live sessions end, grants end, and tokens issued before now are refused.
    Revoke(admin::RevokeArgs),
    /// The most recent audit events: control's (access, grants, approvals, keys) or, with
    /// --statements, the gateway's per-statement events and recorded decisions; `verify`
    /// and `export` work on the session recordings.
    Audit(recordings::AuditCli),
    /// Recorded sessions (offline, from the recording directory).
    #[command(subcommand)]
    Sessions(recordings::SessionsCommand),
    /// Replay a recorded session as its user saw it (after masking).
    Replay(recordings::ReplayArgs),
    /// Tuning profiles (list, show, compare with a config) and a read-only check of this
    /// host.
    #[command(subcommand)]
    Tune(tune::TuneCommand),
    /// Load-test PostgreSQL endpoints side by side, or run fault scenarios (`chaos`).
    Loadtest(sluice_loadtest::LoadtestArgs),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        // Commands whose exit code carries a verdict of its own (a failed check or
        // --fail-if threshold is not an error).
        Command::Tune(command) => tune::run(cli.config.as_deref(), command),
        Command::Loadtest(args) => sluice_loadtest::run(args),
        _ => run(cli).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = |what: &str| {
        cli.config.clone().with_context(|| {
            format!("sluice {what} needs a configuration: --config FILE or $SLUICE_CONFIG")
        })
    };
    let socket = |what: &str| admin::socket(&config(what)?);
    match cli.command {
        Command::Demo(args) => demo::run(args, cli.log_format),
        Command::Up(profile) => run::up(&config("up")?, cli.log_format, profile.profile),
        Command::Control => run::control(&config("control")?),
        Command::Proxy {
            driver,
            workers,
            listen,
            profile,
        } => {
            // The profile first, then these flags: a flag given here is the last word.
            let applied = sluice_tuning::load(&config("proxy")?, profile.profile.as_deref())?;
            applied.log();
            let mut config = applied.config;
            if let Some(driver) = driver {
                config.listen.driver = driver;
            }
            if let Some(workers) = workers {
                config.listen.workers = workers;
            }
            if let Some(listen) = listen {
                config.listen.address = listen;
            }
            let gateway = sluice_proxy::Gateway::start(config)?;
            signals::forward_to(gateway.shutdown_handle())?;
            gateway.join()
        }
        Command::Token(a) => admin::token(&socket("token")?, a),
        Command::Login(a) => admin::login(&socket("login")?, a),
        Command::Keys(c) => admin::keys(&socket("keys")?, c),
        Command::Reload => admin::reload(&socket("reload")?),
        Command::Status(f) => admin::status(&config("status")?, f),
        Command::Top(a) => observe::top(cli.config.as_deref(), a),
        Command::Policy(c) => policy::run(&config("policy")?, c),
        Command::Access(c) => admin::access(&socket("access")?, c),
        Command::Approvals(c) => approvals::run(&socket("approvals")?, c),
        Command::Grant(a) => admin::grant(&socket("grant")?, a),
        Command::Grants(c) => admin::grants(&socket("grants")?, c),
        Command::Revoke(a) => admin::revoke(&socket("revoke")?, a),
        Command::Audit(recordings::AuditCli {
            command: Some(c), ..
        }) => recordings::audit_command(&config("audit")?, c),
        Command::Audit(a) if a.args.statements => recordings::statements(&config("audit")?, &a),
        Command::Audit(a) => admin::audit(&socket("audit")?, a.args),
        Command::Sessions(c) => recordings::sessions(&config("sessions")?, c),
        Command::Replay(a) => recordings::replay(&config("replay")?, a),
        Command::Tune(_) | Command::Loadtest(_) => unreachable!("handled in main"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_and_tokens_parse_on_the_operations_that_take_them() {
        let cli = Cli::try_parse_from([
            "sluice",
            "access",
            "request",
            "--resource",
            "shop",
            "--for",
            "1h 30m",
            "--reason",
            "incident 42",
            "--token",
            "t",
        ])
        .expect("parse");
        let Command::Access(admin::AccessCommand::Request { duration, .. }) = cli.command else {
            panic!("not access request");
        };
        assert_eq!(duration, std::time::Duration::from_secs(5400));
        let err = Cli::try_parse_from([
            "sluice",
            "grant",
            "--user",
            "a",
            "--resource",
            "r",
            "--for",
            "soon",
            "--reason",
            "x",
            "--token",
            "t",
        ])
        .err()
        .expect("bad duration refused");
        assert!(err.to_string().contains("not a duration"), "{err}");
    }

    #[test]
    fn every_command_that_starts_a_gateway_takes_a_checked_profile() {
        let profile_of = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).expect("parse");
            match cli.command {
                Command::Up(p) => p.profile,
                Command::Proxy { profile, .. } => profile.profile,
                Command::Demo(d) => d.profile(),
                _ => panic!("not a gateway command"),
            }
        };
        if std::env::var_os("SLUICE_PROFILE").is_none() {
            assert_eq!(profile_of(&["sluice", "up"]), None);
        }
        for command in ["up", "proxy", "demo"] {
            assert_eq!(
                profile_of(&["sluice", command, "--profile", "small-host"]).as_deref(),
                Some("small-host"),
                "{command}"
            );
            let err = Cli::try_parse_from(["sluice", command, "--profile", "fast"])
                .err()
                .expect("unknown profile refused");
            assert!(err.to_string().contains("low-latency"), "{err}");
        }
    }

    #[test]
    fn revoke_has_a_default_reason_and_an_optional_token() {
        let cli = Cli::try_parse_from(["sluice", "revoke", "--user", "bob"]).expect("parse");
        let Command::Revoke(a) = cli.command else {
            panic!("not revoke");
        };
        assert_eq!(a.reason, "revoked by operator");
        assert_eq!(a.resource, None);
        if std::env::var_os("SLUICE_TOKEN").is_none() {
            assert_eq!(a.token, None);
        }
    }
}
