//! `sluice demo`: a throwaway PostgreSQL with the `shop` sample data, a complete commented
//! config, keys, certificates and tokens for four identities, and control and the gateway in
//! front of it, run exactly as `sluice up` runs them (control here, the gateway as a
//! supervised child process).

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use sluice_pgharness::{ClusterOptions, PgCluster};
use sluice_proxy::deployment::{self, BackendSpec, Deployment};

/// Options of `sluice demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Directory for the cluster, config, keys and tokens (default: a new temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Port the gateway listens on (127.0.0.1).
    #[arg(long, default_value_t = 6432)]
    port: u16,
    /// Keep the cluster and files after exit.
    #[arg(long)]
    keep: bool,
    /// I/O driver of the gateway (io_uring | epoll).
    #[arg(long, default_value = "io_uring")]
    driver: sluice_proxy::config::Driver,
    #[command(flatten)]
    profile: crate::tune::ProfileArg,
}

impl DemoArgs {
    /// `--profile`, passed on to `sluice up`.
    pub fn profile(&self) -> Option<String> {
        self.profile.profile.clone()
    }
}

/// The role the gateway logs in to the backend as; only the gateway knows its password.
const GATEWAY_ROLE: &str = "sluice_gateway";

/// Identities the demo mints tokens for: (user, group).
const IDENTITIES: &[(&str, &str)] = &[
    ("alice", "engineering"),
    ("bob", "support"),
    ("carol", "dba"),
    ("dave", "contractors"),
];

/// Runs the demo until SIGINT/SIGTERM.
pub fn run(args: DemoArgs, log_format: crate::LogFormat) -> anyhow::Result<()> {
    let (dir, _temp) = match &args.dir {
        Some(dir) => {
            if !dir.exists() {
                std::fs::create_dir_all(dir)?;
                // PostgreSQL runs as an unprivileged user when we are root; it must be able
                // to reach its cluster below this directory. Secrets inside are 0600.
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
            }
            (dir.canonicalize()?, None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("sluice-demo-")
                .permissions(std::fs::Permissions::from_mode(0o755))
                .tempdir()?;
            if args.keep {
                (temp.keep(), None)
            } else {
                (temp.path().to_path_buf(), Some(temp))
            }
        }
    };
    eprintln!(
        "sluice demo: starting PostgreSQL in {}",
        dir.join("pg").display()
    );
    let cluster = PgCluster::start(ClusterOptions {
        dir: Some(dir.join("pg")),
        keep: args.keep,
        ..ClusterOptions::default()
    })
    .context("starting the demo PostgreSQL cluster")?;
    let deployment = prepare(&dir, &cluster, args.port, args.driver)?;

    let files = write_env(&dir, &cluster, args.port, &deployment)?;
    // The banner goes out once the gateway accepts connections, so what it says works.
    let banner = {
        let (dir, port, keep) = (dir.clone(), args.port, args.keep);
        let files = DemoFiles {
            config: files.config.clone(),
            env: files.env.clone(),
        };
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            while std::time::Instant::now() < deadline {
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    print_banner(&dir, &files, port, keep);
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // Exactly what `sluice up` does: control in this process, the gateway as its
    // supervised child; Ctrl-C stops the gateway gracefully, then control.
    let result = crate::run::up(&files.config, log_format, args.profile());
    drop(banner);
    drop(cluster);
    if args.keep {
        eprintln!("sluice demo: kept {}", dir.display());
    }
    result
}

struct DemoFiles {
    config: PathBuf,
    env: PathBuf,
}

/// Seeds the cluster, creates the gateway's backend role and writes the deployment.
fn prepare(
    dir: &Path,
    cluster: &PgCluster,
    port: u16,
    driver: sluice_proxy::config::Driver,
) -> anyhow::Result<Deployment> {
    let seeded = cluster
        .psql(
            "postgres",
            "SELECT 1 FROM pg_database WHERE datname = 'shop'",
        )?
        .trim()
        == "1";
    if !seeded {
        eprintln!("sluice demo: loading 10,000 customers and 50,000 orders into database shop");
        sluice_pgharness::demo::seed_shop(cluster)?;
    }
    let backend_password: String = {
        use rand::distr::{Alphanumeric, SampleString};
        Alphanumeric.sample_string(&mut rand::rng(), 32)
    };
    let role_sql = format!(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{GATEWAY_ROLE}') THEN
             CREATE ROLE {GATEWAY_ROLE} LOGIN;
           END IF;
         END $$;
         ALTER ROLE {GATEWAY_ROLE} PASSWORD '{backend_password}';"
    );
    cluster.psql("postgres", &role_sql)?;
    cluster.psql(
        "shop",
        &format!(
            "ALTER DATABASE shop OWNER TO {GATEWAY_ROLE};
             ALTER SCHEMA public OWNER TO {GATEWAY_ROLE};
             ALTER TABLE customers OWNER TO {GATEWAY_ROLE};
             ALTER TABLE orders OWNER TO {GATEWAY_ROLE};"
        ),
    )?;

    deployment::write(
        dir,
        port,
        driver,
        &BackendSpec {
            resource: "shop".into(),
            host: cluster.host().to_owned(),
            port: cluster.port(),
            database: "shop".into(),
            user: GATEWAY_ROLE.into(),
            password: backend_password,
        },
    )
}

/// Writes `demo.env`: the config path, port, CA and a token for each identity (signed with
/// control's current signing key).
fn write_env(
    dir: &Path,
    cluster: &PgCluster,
    port: u16,
    deployment: &Deployment,
) -> anyhow::Result<DemoFiles> {
    let config = deployment.config.clone();

    let mut env = String::new();
    writeln!(
        env,
        "# Written by `sluice demo`; source it: . {}",
        dir.join("demo.env").display()
    )?;
    writeln!(env, "export SLUICE_CONFIG='{}'", config.display())?;
    writeln!(env, "export SLUICE_PORT={port}")?;
    writeln!(env, "export SLUICE_CA='{}'", dir.join("ca.crt").display())?;
    // `sluice` itself may not be on PATH (e.g. run with `cargo run`): a function that
    // names this very binary makes the admin commands in the banner work as printed.
    if let Ok(exe) = std::env::current_exe() {
        writeln!(env, "sluice() {{ '{}' \"$@\"; }}", exe.display())?;
    }
    for (user, group) in IDENTITIES {
        let token = deployment.mint(user, &[group], Duration::from_secs(12 * 3600))?;
        writeln!(env, "export {}_TOKEN='{token}'", user.to_uppercase())?;
    }
    writeln!(
        env,
        "export DEMO_BACKEND_URL='postgres://{}:{}@127.0.0.1:{}/shop'",
        cluster.superuser(),
        cluster.superuser_password(),
        cluster.port()
    )?;
    let env_path = dir.join("demo.env");
    deployment::write_secret(&env_path, &env)?;
    Ok(DemoFiles {
        config,
        env: env_path,
    })
}

fn print_banner(dir: &Path, files: &DemoFiles, port: u16, keep: bool) {
    let env = files.env.display();
    let ca = dir.join("ca.crt");
    let ca = ca.display();
    eprintln!(
        r#"
  Sluice demo is running on 127.0.0.1:{port}, in front of database "shop".

  In another terminal:
    . {env}
    PGPASSWORD=$BOB_TOKEN psql "host=127.0.0.1 port=$SLUICE_PORT dbname=shop user=bob"
    PGPASSWORD=$ALICE_TOKEN psql "host=localhost port=$SLUICE_PORT dbname=shop user=alice sslmode=verify-full sslrootcert={ca}"
    PGPASSWORD=wrong psql "host=127.0.0.1 port=$SLUICE_PORT dbname=shop user=carol"   # refused: 28P01

  Statement policy: bob (support) may only read; alice (engineering) reads and writes, but
  DDL and DELETE/UPDATE without WHERE wait for a dba; carol (dba) may run anything:
    bob>   DELETE FROM customers;           -- ERROR 42501, naming the rule; bob's session goes on
    alice> DROP TABLE orders;               -- NOTICE: held for approval: request ID ...
    sluice approvals list                   # in a third terminal
    sluice approvals approve ID --token $CAROL_TOKEN     # or: deny ID --reason "..." --token ...
    sluice policy explain --user alice --groups engineering --resource shop --query "TRUNCATE orders"
    sluice audit --statements --user bob    # one event per statement: class, rule, decision, rows

  Just-in-time access: dave (contractors) must ask, carol (dba) approves:
    PGPASSWORD=$DAVE_TOKEN psql "host=127.0.0.1 port=$SLUICE_PORT dbname=shop user=dave"  # refused: 42501, with a hint
    ID=$(sluice access request --resource shop --for 30m --reason "ticket 42" --token $DAVE_TOKEN)
    sluice access approve $ID --token $CAROL_TOKEN
    sluice revoke --user dave      # ends dave's live sessions at once

  Every session is recorded (what the client sent and what it was shown, after masking)
  under {recordings}:
    sluice sessions list --config {config}              # take a session ID from here
    sluice replay ID --config {config}                  # the session as its user saw it
    sluice audit --statements --grep customers --since 1h --config {config}
    sluice audit verify --config {config}               # checksums, hash chain, gaps

  What the gateway costs and decides, live (Prometheus text; readiness; top statements):
    curl -s http://127.0.0.1:{metrics_port}/metrics | grep -v '^#'
    sluice status                           # control and gateway: snapshot, workers, backend
    sluice top --watch 2                    # statement fingerprints by the latency Sluice adds

  Identities: alice (engineering), bob (support), carol (dba), dave (contractors); tokens in {env}.
  Config: {config} (commented; the starting point for a real deployment).
  Ctrl-C stops the gateway and {cleanup}.
"#,
        config = files.config.display(),
        metrics_port = deployment::metrics_port(port),
        recordings = crate::recordings::recording_dir(&files.config)
            .map_or_else(|e| format!("(unknown: {e})"), |d| d.display().to_string()),
        cleanup = if keep {
            "PostgreSQL (files are kept)"
        } else {
            "removes everything it created"
        },
    );
}
