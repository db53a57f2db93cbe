//! # sluice — the one user-facing binary
//!
//! Subcommands: `demo` (a gateway in front of a throwaway PostgreSQL with sample data),
//! `proxy` (the gateway from a config file), `token` (keys and tokens). It owns argument
//! parsing, logging set-up and signal handling, and nothing else: every behaviour lives in
//! a library crate so it can be tested without this binary.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

mod demo;
mod signals;

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

#[derive(Subcommand)]
enum Command {
    /// Start a throwaway PostgreSQL with sample data and a gateway in front of it.
    Demo(demo::DemoArgs),
    /// Run the gateway from a configuration file (--config or $SLUICE_CONFIG).
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
    },
    /// Token keys and tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Generate an Ed25519 signing key pair for Sluice tokens.
    Keygen {
        /// Directory to write token-signing.key (private) and token-signing.pub.pem into.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
    },
    /// Mint a token (printed on stdout).
    Mint {
        /// Private signing key (PEM PKCS#8).
        #[arg(long)]
        key: PathBuf,
        /// Subject: the user name the token is for.
        #[arg(long)]
        sub: String,
        /// Group memberships (repeat).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Lifetime, e.g. 15m, 8h.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// Issuer claim; must match `auth.token_issuer`.
        #[arg(long, default_value = "sluice")]
        issuer: String,
    },
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Proxy {
            driver,
            workers,
            listen,
        } => {
            let path = cli
                .config
                .context("sluice proxy needs a configuration: --config FILE or $SLUICE_CONFIG")?;
            let mut config = sluice_proxy::Config::load(&path)?;
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
        Command::Token(TokenCommand::Keygen { out_dir }) => {
            let keys = sluice_proxy::auth::generate_token_keys()?;
            std::fs::create_dir_all(&out_dir)?;
            let private = out_dir.join("token-signing.key");
            sluice_proxy::deployment::write_secret(&private, &keys.private_pem)?;
            let public = out_dir.join("token-signing.pub.pem");
            std::fs::write(&public, &keys.public_pem)?;
            eprintln!(
                "wrote {} (keep secret) and {}",
                private.display(),
                public.display()
            );
            Ok(())
        }
        Command::Token(TokenCommand::Mint {
            key,
            sub,
            groups,
            ttl,
            issuer,
        }) => {
            let pem = std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?;
            let token = sluice_proxy::auth::mint_token(
                &pem,
                &issuer,
                &sub,
                &groups,
                Duration::from(ttl),
                SystemTime::now(),
            )?;
            println!("{token}");
            Ok(())
        }
    }
}
