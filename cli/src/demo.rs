//! `sluice demo`: a throwaway PostgreSQL with the `shop` sample data, a complete commented
//! config, keys, certificates and tokens for three identities, and the gateway in front.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use sluice_pgharness::{ClusterOptions, PgCluster};
use sluice_proxy::auth::{generate_token_keys, mint_token};
use sluice_proxy::tls::generate_loopback_certs;

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
}

/// The role the gateway logs in to the backend as; only the gateway knows its password.
const GATEWAY_ROLE: &str = "sluice_gateway";

/// Identities the demo mints tokens for: (user, group).
const IDENTITIES: &[(&str, &str)] = &[
    ("alice", "engineering"),
    ("bob", "support"),
    ("carol", "dba"),
];

/// Writes a file readable by its owner only.
pub fn write_secret(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// Runs the demo until SIGINT/SIGTERM.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (dir, _temp) = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            (dir.canonicalize()?, None)
        }
        None => {
            let temp = tempfile::Builder::new().prefix("sluice-demo-").tempdir()?;
            (temp.path().to_path_buf(), (!args.keep).then_some(temp))
        }
    };
    // With --keep and no --dir, the temp dir must outlive us.
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
    let files = prepare(&dir, &cluster, args.port, args.driver)?;

    let config = sluice_proxy::Config::load(&files.config)?;
    let gateway = sluice_proxy::Gateway::start(config)?;
    crate::signals::forward_to(gateway.shutdown_handle())?;
    print_banner(&dir, &files, gateway.local_addr().port(), args.keep);
    let result = gateway.join();
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

fn prepare(
    dir: &Path,
    cluster: &PgCluster,
    port: u16,
    driver: sluice_proxy::config::Driver,
) -> anyhow::Result<DemoFiles> {
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
    write_secret(
        &dir.join("backend.password"),
        &format!("{backend_password}\n"),
    )?;

    let certs = generate_loopback_certs()?;
    std::fs::write(dir.join("ca.crt"), &certs.ca_cert_pem)?;
    std::fs::write(dir.join("server.crt"), &certs.server_cert_pem)?;
    write_secret(&dir.join("server.key"), &certs.server_key_pem)?;

    let keys = generate_token_keys()?;
    write_secret(&dir.join("token-signing.key"), &keys.private_pem)?;
    std::fs::write(dir.join("token-signing.pub.pem"), &keys.public_pem)?;

    let config = dir.join("sluice.toml");
    std::fs::write(&config, config_text(port, cluster.port(), driver))?;

    let mut env = String::new();
    writeln!(
        env,
        "# Written by `sluice demo`; source it: . {}",
        dir.join("demo.env").display()
    )?;
    writeln!(env, "export SLUICE_CONFIG='{}'", config.display())?;
    writeln!(env, "export SLUICE_PORT={port}")?;
    writeln!(env, "export SLUICE_CA='{}'", dir.join("ca.crt").display())?;
    let now = SystemTime::now();
    for (user, group) in IDENTITIES {
        let token = mint_token(
            keys.private_pem.as_bytes(),
            "sluice",
            user,
            &[group.to_string()],
            Duration::from_secs(12 * 3600),
            now,
        )?;
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
    write_secret(&env_path, &env)?;
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

  Identities: alice (engineering), bob (support), carol (dba); tokens in {env}.
  Config: {config} (commented; the starting point for a real deployment).
  Ctrl-C stops the gateway and {cleanup}.
"#,
        config = files.config.display(),
        cleanup = if keep {
            "PostgreSQL (files are kept)"
        } else {
            "removes everything it created"
        },
    );
}

fn config_text(port: u16, backend_port: u16, driver: sluice_proxy::config::Driver) -> String {
    format!(
        r#"# Sluice gateway configuration, written by `sluice demo`.
# Every field is shown with its value; fields marked (default) can be left out.
# Relative paths are resolved against this file's directory.

[listen]
# Address every worker binds with SO_REUSEPORT.
address = "127.0.0.1:{port}"
# Worker threads, one monoio runtime each; 0 = one per core. (default 0)
workers = 0
# I/O driver: "io_uring" (falls back to epoll if the kernel refuses it) or "epoll". (default io_uring)
driver = "{driver}"
# Pin worker i to core i: cross-core wake-ups are expensive on small VMs. (default true)
pin_workers = true
# Plaintext clients from non-loopback addresses: tokens are passwords, keep this off. (default false)
allow_plaintext_non_loopback = false
# io_uring queue entries per worker. (default 1024)
uring_entries = 1024

[tls]
# Certificate and key presented to clients (sslmode=require / verify-full).
# The demo made a throwaway CA (ca.crt) and a certificate for localhost/127.0.0.1/::1.
cert = "server.crt"
key = "server.key"

[auth]
# Ed25519 public key that Sluice tokens are verified with. Mint tokens with
#   sluice token mint --key token-signing.key --sub alice --group engineering --ttl 8h
token_public_key = "token-signing.pub.pem"
# Expected `iss` claim. (default "sluice")
token_issuer = "sluice"
# Allowed clock difference between minter and gateway, seconds. (default 30)
clock_skew_secs = 30
# The token's subject must equal the `user` the client connects as. (default true)
require_user_match = true

[limits]
# Largest protocol message, bytes; checked from the length prefix before buffering. (default 1 GiB)
max_message_bytes = 1073741824
# Largest startup packet, bytes. (default 10000)
max_startup_bytes = 10000
# TLS + startup + token must complete within this many seconds. (default 15)
handshake_timeout_secs = 15
# Connecting and logging in to a backend, seconds. (default 5)
backend_connect_timeout_secs = 5
# Read buffer per direction per session, bytes; large results stream through it. (default 65536)
buffer_bytes = 65536

[shutdown]
# After SIGTERM, sessions may finish for this many seconds; a second signal closes them at once. (default 30)
grace_secs = 5

# One [resources.NAME] per backend; clients choose it with dbname=NAME.
# The credentials below are held by the gateway only; users never see them.
[resources.shop]
host = "127.0.0.1"
port = {backend_port}
database = "shop"
user = "{GATEWAY_ROLE}"
# Backend password source: a file (first line) or an environment variable (password_env).
password_file = "backend.password"
# TLS to the backend: "disable", "require" or "verify-full" (then set tls_ca). (default "disable")
tls = "disable"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_config_is_valid_and_matches_the_documented_defaults() {
        let text = config_text(6432, 5432, sluice_proxy::config::Driver::IoUring);
        let config = sluice_proxy::Config::parse(&text).expect("demo config parses");
        assert_eq!(config.listen.address.port(), 6432);
        assert_eq!(config.resources["shop"].user, GATEWAY_ROLE);
        let defaults = sluice_proxy::config::LimitsConfig::default();
        assert_eq!(config.limits.max_message_bytes, defaults.max_message_bytes);
        assert_eq!(config.limits.buffer_bytes, defaults.buffer_bytes);
    }
}
