//! A complete deployment directory for one backend: TLS certificate (with its CA), control's
//! state directory with its token signing key, the backend password file and a fully
//! commented `sluice.toml`. `sluice
//! demo` writes one for its throwaway cluster and the integration tests write one per test,
//! so the file a newcomer reads is the file the tests run.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::config::Driver;
use crate::tls::generate_loopback_certs;
use sluice_control::identity::Keyring;
use sluice_control::service::paths;

/// The backend a deployment points at.
#[derive(Debug, Clone)]
pub struct BackendSpec {
    /// Resource name clients use as `dbname`.
    pub resource: String,
    /// Backend host.
    pub host: String,
    /// Backend port.
    pub port: u16,
    /// Database on the backend.
    pub database: String,
    /// Role the gateway logs in as.
    pub user: String,
    /// That role's password (written to `backend.password`, mode 0600).
    pub password: String,
}

/// Files of a written deployment.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The directory.
    pub dir: PathBuf,
    /// `sluice.toml`.
    pub config: PathBuf,
    /// CA certificate for clients' `sslrootcert`.
    pub ca: PathBuf,
    /// Control's state directory (keys, state log, sockets).
    pub state_dir: PathBuf,
}

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

/// Writes a deployment for `backend` into `dir`, listening on `127.0.0.1:port`.
pub fn write(
    dir: &Path,
    port: u16,
    driver: Driver,
    backend: &BackendSpec,
) -> anyhow::Result<Deployment> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_secret(
        &dir.join("backend.password"),
        &format!("{}\n", backend.password),
    )?;

    let certs = generate_loopback_certs()?;
    std::fs::write(dir.join("ca.crt"), &certs.ca_cert_pem)?;
    std::fs::write(dir.join("server.crt"), &certs.server_cert_pem)?;
    write_secret(&dir.join("server.key"), &certs.server_key_pem)?;

    // Control would make its first key on start; making it now lets the caller mint
    // tokens before anything runs.
    let state_dir = dir.join("state");
    Keyring::open_or_create(&paths::keys_dir(&state_dir), SystemTime::now())
        .map_err(anyhow::Error::msg)?;

    let config = dir.join("sluice.toml");
    std::fs::write(&config, config_text(port, driver, backend))?;
    Ok(Deployment {
        dir: dir.to_path_buf(),
        config,
        ca: dir.join("ca.crt"),
        state_dir,
    })
}

impl Deployment {
    /// Mints a Sluice token for `subject` with control's current signing key (reading the
    /// keyring directly, as `sluice token` does through control).
    pub fn mint(&self, subject: &str, groups: &[&str], ttl: Duration) -> anyhow::Result<String> {
        let now = SystemTime::now();
        let ring = Keyring::open_or_create(&paths::keys_dir(&self.state_dir), now)
            .map_err(anyhow::Error::msg)?;
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        ring.mint("sluice", subject, &groups, ttl, now)
            .map_err(anyhow::Error::msg)
    }
}

/// The metrics endpoint's port in a written deployment: the gateway's next one (0, an
/// ephemeral port, when the gateway's is 0 or the last).
pub fn metrics_port(port: u16) -> u16 {
    match port {
        0 | u16::MAX => 0,
        p => p + 1,
    }
}

fn config_text(port: u16, driver: Driver, backend: &BackendSpec) -> String {
    format!(
        r#"# Sluice gateway configuration, written by `sluice demo` (sluice_proxy::deployment).
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

[control]
# Control's directory: token signing keys (keys/), the state log of grants, requests and
# revocations, the audit log, and the sockets (admin.sock, snapshot.sock, events.sock).
state_dir = "state"
# Fail-static window: if control stops publishing for this long, the proxy refuses new
# sessions and statements until it is back. (default "5m")
snapshot_max_age = "5m"
# How often control refreshes its heartbeat. (default "1s")
heartbeat = "1s"
# How often control refetches OIDC key sets even without an unknown key id. (default "10m")
jwks_refresh = "10m"
# Pending access requests nobody decides expire after this. (default "24h")
request_ttl = "24h"

[identity]
# The token's subject must equal the `user` the client connects as. (default true)
require_user_match = true

[identity.sluice_tokens]
# Control signs short-lived tokens of its own:
#   sluice token --user alice --groups engineering --ttl 8h
enabled = true
issuer = "sluice"
# Longest token lifetime; a rotated key stays trusted this long. (default "12h")
max_ttl = "12h"
clock_skew = "30s"

# OIDC issuers (any number); their tokens are accepted like Sluice tokens:
# [[identity.oidc]]
# issuer = "https://idp.example.com/realms/prod"
# audience = "sluice"
# jwks_uri = "https://idp.example.com/realms/prod/protocol/openid-connect/certs"
# groups_claim = "groups"

# Policy: who may open sessions on which resource. Rules match by group or user; a deny
# wins over an allow; `request` means only with a just-in-time grant from an approver.
[[policy.rules]]
name = "engineering-uses-{name}"
groups = ["engineering"]
resources = ["{name}"]
access = "allow"
max_session = "12h"

[[policy.rules]]
name = "support-uses-{name}"
groups = ["support"]
resources = ["{name}"]
access = "allow"
max_session = "8h"
# What support sees is masked by the profile "pii" below.
masking = "pii"

[[policy.rules]]
name = "dba-uses-{name}"
groups = ["dba"]
resources = ["{name}"]
access = "allow"

[[policy.rules]]
name = "contractors-ask-first"
groups = ["contractors"]
resources = ["{name}"]
access = "request"
approvers = ["dba"]
max_grant = "4h"
masking = "pii"

# Masking profiles, chosen per rule with `masking = "NAME"`. Values are masked in the
# gateway, before the client, its logs or Sluice's recordings see them, while rows stream.
# Column rules name result columns; content detectors find sensitive values anywhere else
# (computed columns, JSON, free text, COPY data, error details, notifications).
[policy.masking.pii]
# Built-in detectors (default: all): card, email, ssn, iban, phone, ipv4, ipv6, jwt, secret.
detectors = ["card", "email", "ssn", "iban", "phone", "jwt", "secret"]
# Style of what a detector finds: redact (****), partial (keeps e.g. a card's last 4),
# hash (keyed HMAC, stable so joins still line up), null, format-preserving. (default partial)
style = "partial"
# National phone formats besides E.164. (default ["US"])
phone_regions = ["US"]

[[policy.masking.pii.columns]]
name = "emails"
# Glob on the result column's name (case-insensitive).
column = "*email*"
style = "partial"

[[policy.masking.pii.columns]]
name = "phones"
column = "*phone*"
style = "partial"

[[policy.masking.pii.columns]]
name = "cards"
column = "card_*"
style = "partial"

[[policy.masking.pii.columns]]
name = "ssns"
column = "ssn"
style = "redact"

[[policy.masking.pii.columns]]
name = "customer-ssn-by-source"
# With `table`, the rule follows the table's own column, whatever the query calls it
# (`SELECT ssn AS x FROM customers` is still masked).
table = "public.customers"
column = "ssn"
style = "redact"

# Statement rules: what each statement may do, decided before the database sees it. The
# first matching rule wins; a statement no rule matches is refused (42501). `request`
# holds the statement until an approver runs `sluice approvals approve ID`.
[[policy.statements]]
name = "only-dba-calls-dangerous-functions"
groups = ["engineering", "support", "contractors"]
resources = ["*"]
flags = ["dangerous_function"]
access = "deny"

[[policy.statements]]
name = "engineering-ddl-needs-approval"
groups = ["engineering"]
resources = ["*"]
classes = ["ddl"]
access = "request"
approvers = ["dba"]

[[policy.statements]]
name = "engineering-bulk-changes-need-approval"
groups = ["engineering"]
resources = ["*"]
flags = ["no_where"]
access = "request"
approvers = ["dba"]

[[policy.statements]]
name = "engineering-reads-and-writes"
groups = ["engineering"]
resources = ["*"]
classes = ["read", "write", "transaction", "session", "copy_out"]
access = "allow"

[[policy.statements]]
name = "support-reads"
groups = ["support", "contractors"]
resources = ["*"]
classes = ["read", "copy_out", "transaction", "session"]
access = "allow"

[[policy.statements]]
name = "dba-runs-anything"
groups = ["dba"]
resources = ["*"]
classes = ["*", "copy_program"]
access = "allow"

[approvals]
# A held statement not decided within this time is refused.
timeout = "10m"
# Distinct approvers needed (the requester never counts).
min_approvals = 1

[limits]
# Statement classifications each worker caches (by normalized text). (default 8192)
classify_cache_entries = 8192
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

[metrics]
# Prometheus metrics (/metrics), liveness (/healthz), readiness (/readyz) and statement
# statistics (/top, read by `sluice top`). No authentication: keep it on loopback. (default: off)
listen = "127.0.0.1:{metrics_port}"
# Time each round trip for the added-latency histograms and `sluice top`. (default true)
latency = true
# Statement fingerprints each worker keeps for `sluice top`. (default 256)
top_statements = 256

[shutdown]
# After SIGTERM, sessions may finish for this many seconds; a second signal closes them at once. (default 30)
grace_secs = 5

# One [resources.NAME] per backend; clients choose it with dbname=NAME.
# The credentials below are held by the gateway only; users never see them.
[resources.{name}]
host = "{host}"
port = {backend_port}
database = "{database}"
user = "{user}"
# Backend password source: a file (first line) or an environment variable (password_env).
password_file = "backend.password"
# TLS to the backend: "disable", "require" or "verify-full" (then set tls_ca). (default "disable")
tls = "disable"
"#,
        metrics_port = metrics_port(port),
        name = backend.resource,
        host = backend.host,
        backend_port = backend.port,
        database = backend.database,
        user = backend.user,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_config_loads_and_matches_the_documented_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = BackendSpec {
            resource: "shop".into(),
            host: "127.0.0.1".into(),
            port: 5432,
            database: "shop".into(),
            user: "gw".into(),
            password: "pw".into(),
        };
        let deployment = write(dir.path(), 6432, Driver::IoUring, &backend).expect("write");
        let config = crate::Config::load(&deployment.config).expect("loads and validates");
        assert_eq!(config.listen.address.port(), 6432);
        assert_eq!(config.resources["shop"].user, "gw");
        let defaults = crate::config::LimitsConfig::default();
        assert_eq!(config.limits.max_message_bytes, defaults.max_message_bytes);
        assert_eq!(config.limits.buffer_bytes, defaults.buffer_bytes);
        assert_eq!(
            config.resources["shop"]
                .password(&config)
                .expect("password"),
            Some("pw".to_owned())
        );
        let token = deployment
            .mint("alice", &["engineering"], Duration::from_secs(60))
            .expect("mint");
        assert_eq!(token.split('.').count(), 3, "a JWT");
        assert_eq!(config.policy.rules.len(), 4);
        assert_eq!(config.state_dir(), deployment.state_dir);
    }
}
