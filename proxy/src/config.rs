//! The gateway's configuration file (TOML): every field documented, defaults that are
//! safe, and a `validate()` pass after loading so that a bad file is refused at start-up
//! with a message naming the field, never discovered by the first client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use sluice_control::config::{check_control, check_identity, ControlSection, IdentityConfig};
use sluice_control::policy::{Policy, PolicyConfig};

/// Top-level configuration, as read from `sluice.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect and how the worker threads are laid out.
    #[serde(default)]
    pub listen: ListenConfig,
    /// Client-side TLS. Without it only loopback clients can connect (unless
    /// `listen.allow_plaintext_non_loopback` is set).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Control's state directory and the fail-static window (control's section; the proxy
    /// reads `state_dir` to find control's sockets and `snapshot_max_age`).
    #[serde(default)]
    pub control: ControlSection,
    /// Who may log in with which tokens (control's section; reaches the proxy through the
    /// snapshot).
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Who may use which resource (control's section; reaches the proxy through the
    /// snapshot).
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Size and time limits that protect the gateway from bad or slow peers.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// What happens on SIGTERM.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Session recordings (what each session sent and was shown, after masking).
    #[serde(default)]
    pub recording: RecordingConfig,
    /// The metrics, health and statement-statistics endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Log volume: rate limits and sampled protocol traces.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Backends, keyed by the resource name that clients put in `dbname`.
    #[serde(default)]
    pub resources: BTreeMap<String, ResourceConfig>,
    /// Statements held for approval (control's section; its effect reaches the proxy
    /// through the snapshot). Kept here only so the shared file parses.
    #[serde(default)]
    pub approvals: Option<toml::Value>,
    /// The listen queue and how each worker's io_uring is set up.
    #[serde(default)]
    pub io: IoConfig,
    /// Which tuning profile the `sluice` binary merges onto this file before parsing it.
    #[serde(default)]
    pub tuning: TuningSection,
    /// Directory that relative paths in this file are resolved against (the file's own
    /// directory); not read from the file.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Listener and worker layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Address every worker binds with `SO_REUSEPORT`.
    pub address: SocketAddr,
    /// Worker threads, one monoio runtime each; `0` means one per available core.
    pub workers: usize,
    /// I/O driver of each worker: `io_uring` (falls back to `epoll` with a warning when the
    /// kernel refuses io_uring) or `epoll`.
    pub driver: Driver,
    /// Pin worker *i* to core *i* (modulo the cores available). Cross-core wake-ups cost
    /// tens of microseconds on small VMs, so this is on by default.
    pub pin_workers: bool,
    /// Accept plaintext (non-TLS) clients from non-loopback addresses. Tokens travel as
    /// passwords, so this is off by default.
    pub allow_plaintext_non_loopback: bool,
    /// io_uring submission queue entries per worker.
    pub uring_entries: u32,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 6432)),
            workers: 0,
            driver: Driver::IoUring,
            pin_workers: true,
            allow_plaintext_non_loopback: false,
            uring_entries: 1024,
        }
    }
}

/// The I/O driver of a worker runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// io_uring with COOP_TASKRUN + TASKRUN_FLAG (design.md §7).
    IoUring,
    /// epoll readiness (mio).
    Epoll,
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        })
    }
}

impl std::str::FromStr for Driver {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "io_uring" | "io-uring" | "uring" => Ok(Driver::IoUring),
            "epoll" => Ok(Driver::Epoll),
            other => bail!("unknown driver {other:?}: expected io_uring or epoll"),
        }
    }
}

/// Kernel-facing settings of each worker: its listen queue and its io_uring. The defaults
/// are what the gateway did before they could be set; the tuning profiles change them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IoConfig {
    /// `listen(2)` backlog of each worker's socket: connections the kernel has completed
    /// and keeps until the worker accepts them. The kernel silently caps it at
    /// `net.core.somaxconn` (`sluice tune check` compares the two).
    pub backlog: u32,
    /// `IORING_SETUP_COOP_TASKRUN` + `TASKRUN_FLAG`: completions are handled when the
    /// worker next enters the kernel instead of interrupting it (design.md §7: ~4× fewer
    /// interrupts to a busy worker). Dropped with a warning if the kernel refuses it.
    pub uring_coop_taskrun: bool,
    /// `IORING_SETUP_SQPOLL`: a kernel thread per worker polls the submission queue, so a
    /// busy worker submits without a system call. That thread spins on a CPU of its own,
    /// which on a host with few cores is taken from PostgreSQL and the workers (design.md
    /// §7), hence off by default. A kernel or host that refuses it (before 5.11 it needs
    /// CAP_SYS_ADMIN) gets a warning and a ring without it, never a failed start.
    pub uring_sqpoll: bool,
    /// With `uring_sqpoll`: how long the polling thread spins without work before it
    /// sleeps, in milliseconds. Longer keeps an idle-then-busy worker fast and burns more
    /// CPU while idle.
    pub uring_sqpoll_idle_ms: u32,
}

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig {
            backlog: 1024,
            uring_coop_taskrun: true,
            uring_sqpoll: false,
            uring_sqpoll_idle_ms: 1000,
        }
    }
}

impl IoConfig {
    /// Largest ring the kernel accepts (`IORING_MAX_ENTRIES`).
    pub const MAX_URING_ENTRIES: u32 = 32768;

    fn check(&self, listen: &ListenConfig) -> anyhow::Result<()> {
        if !(1..=65535).contains(&self.backlog) {
            bail!("io.backlog must be 1 to 65535");
        }
        if !(1..=Self::MAX_URING_ENTRIES).contains(&listen.uring_entries) {
            bail!(
                "listen.uring_entries must be 1 to {}",
                Self::MAX_URING_ENTRIES
            );
        }
        if self.uring_sqpoll {
            if listen.driver != Driver::IoUring {
                bail!("io.uring_sqpoll = true needs listen.driver = \"io_uring\"");
            }
            if !(1..=60_000).contains(&self.uring_sqpoll_idle_ms) {
                bail!("io.uring_sqpoll_idle_ms must be 1 to 60000");
            }
        }
        Ok(())
    }
}

/// `[tuning]`: the profile the `sluice` binary applies (crate `sluice-tuning`). The merge
/// happens on the TOML text before this struct exists, so a [`Config`] loaded with
/// [`Config::load`] alone has the file's own values, without the profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TuningSection {
    /// Name of a profile (`sluice tune profiles`); `sluice up --profile` overrides it.
    pub profile: Option<String>,
}

/// Client-facing TLS certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain presented to clients.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Limits on sizes and time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest regular protocol message accepted in either direction (bytes). Checked from
    /// the length prefix before any buffer grows.
    pub max_message_bytes: usize,
    /// Largest startup packet (bytes).
    pub max_startup_bytes: usize,
    /// A client must finish TLS, startup and authentication within this time.
    pub handshake_timeout_secs: u64,
    /// Time allowed to connect and log in to a backend.
    pub backend_connect_timeout_secs: u64,
    /// Per-direction read buffer of a session (bytes). Frames the gateway does not need to
    /// inspect stream through in pieces of this size, so memory stays flat for any result.
    pub buffer_bytes: usize,
    /// Statement classifications each worker keeps, keyed by normalized text (so
    /// statements that differ only in literals share one entry). A miss costs a full
    /// parse (tens of µs); an entry costs about 1 KiB. `0` disables the cache.
    pub classify_cache_entries: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: 1 << 30,
            max_startup_bytes: 10_000,
            handshake_timeout_secs: 15,
            backend_connect_timeout_secs: 5,
            buffer_bytes: 64 * 1024,
            classify_cache_entries: 8192,
        }
    }
}

/// SIGTERM handling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// After SIGTERM, sessions may finish for this long before they are closed.
    pub grace_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { grace_secs: 30 }
    }
}

/// Session recording: every worker appends what its sessions did (client messages, the
/// server's messages as the client saw them, policy decisions, start and end) to its own
/// segment files under `dir`. See the `sluice-recorder` crate for the format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Record sessions at all.
    pub enabled: bool,
    /// Where segments go; relative paths are resolved against this file's directory.
    /// Default: `<control.state_dir>/recordings`.
    pub dir: Option<PathBuf>,
    /// Block compression: `zstd` (smaller), `lz4` (faster), `none`.
    pub codec: RecordingCodec,
    /// zstd level (1 is fast; 3 and up trade speed for size).
    pub zstd_level: i32,
    /// Uncompressed bytes per block (a crash loses at most the block being filled, beyond
    /// what `fsync` says).
    pub block_kib: usize,
    /// A segment is sealed (footer, chain hash) at this size...
    pub segment_mib: u64,
    /// ...or at this age.
    pub segment_age_secs: u64,
    /// When blocks reach the disk: `every_block` (each block fsynced before the next is
    /// written: a power loss costs at most the block being filled), `interval` (fsync
    /// every `fsync_interval_ms`: a power loss costs at most that much), `off` (the
    /// kernel decides; a process crash loses nothing flushed, a power loss may lose
    /// recent blocks).
    pub fsync: RecordingFsync,
    /// Interval for `fsync = "interval"`.
    pub fsync_interval_ms: u64,
    /// Bytes a worker may have queued for its writer thread before `overflow` applies.
    pub queue_mib: usize,
    /// When the disk cannot keep up: `block` (the worker waits for the disk: its sessions
    /// slow down, nothing is lost) or `fail_closed` (a session whose recording is refused
    /// is ended with SQLSTATE 53000 rather than continue unrecorded).
    pub overflow: RecordingOverflow,
    /// Sealed segments older than this are removed (none if unset).
    pub retention_days: Option<u64>,
    /// Oldest sealed segments are removed beyond this total size (none if unset).
    pub retention_gib: Option<u64>,
    /// Shell command run with each sealed segment's path as `$1`, e.g. to copy it to
    /// object storage.
    pub on_seal: Option<String>,
}

/// `recording.codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingCodec {
    /// zstd at `zstd_level`.
    Zstd,
    /// LZ4 block format.
    Lz4,
    /// Uncompressed.
    None,
}

/// `recording.fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingFsync {
    /// fsync after every block.
    EveryBlock,
    /// fsync every `fsync_interval_ms`.
    Interval,
    /// Never fsync explicitly.
    Off,
}

/// `recording.overflow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingOverflow {
    /// Wait for the disk.
    Block,
    /// End the session instead of continuing unrecorded.
    FailClosed,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            enabled: true,
            dir: None,
            codec: RecordingCodec::Zstd,
            zstd_level: 1,
            block_kib: 64,
            segment_mib: 256,
            segment_age_secs: 3600,
            fsync: RecordingFsync::Interval,
            fsync_interval_ms: 1000,
            queue_mib: 16,
            overflow: RecordingOverflow::Block,
            retention_days: None,
            retention_gib: None,
            on_seal: None,
        }
    }
}

/// `[metrics]`: Prometheus metrics (`/metrics`), liveness (`/healthz`), readiness
/// (`/readyz`) and the statement fingerprint table (`/top`, read by `sluice top`) over
/// plain HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the HTTP listener; no endpoint when unset. It has no authentication:
    /// keep it on loopback or behind a firewall.
    pub listen: Option<SocketAddr>,
    /// Whether workers time each round trip (two clock reads per direction) for the
    /// added-latency and upstream histograms and `sluice top`. Counters are kept either
    /// way.
    pub latency: bool,
    /// Statement fingerprints each worker keeps for `sluice top` (space-saving sketch:
    /// the heaviest survive whatever the mix).
    pub top_statements: usize,
    /// Timeout of the readiness check's TCP connect to each backend.
    pub backend_check_timeout_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            latency: true,
            top_statements: 256,
            backend_check_timeout_ms: 1000,
        }
    }
}

/// `[logging]`: what keeps the log useful under a flood, and what it may show for
/// debugging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Per worker and second, how many connections that end before becoming a session
    /// (refused, timed out, failed TLS, bad startup) get their own log line; beyond that
    /// they are counted and summarized in one line per second, so a flood of bad
    /// connections cannot fill the disk. Sessions that started are always logged.
    pub refusals_per_second: u32,
    /// Fraction of sessions (0 to 1) whose protocol messages are logged one line each
    /// (direction, type, length, statement text with literals replaced, SQLSTATE; never
    /// a value), under the log target `sluice::protocol`.
    pub protocol_trace_sample: f64,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            refusals_per_second: 20,
            protocol_trace_sample: 0.0,
        }
    }
}

/// One backend database that clients reach by its resource name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Backend host name or address.
    pub host: String,
    /// Backend port.
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Database name on the backend.
    pub database: String,
    /// Role the gateway logs in as.
    pub user: String,
    /// File holding the backend password (first line). Preferred over `password_env`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the backend password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// TLS to the backend: `disable`, `require` (encrypt, do not verify) or `verify-full`.
    #[serde(default)]
    pub tls: BackendTls,
    /// CA bundle for `verify-full`.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
}

fn default_pg_port() -> u16 {
    5432
}

/// TLS mode toward a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTls {
    /// Plain TCP.
    #[default]
    Disable,
    /// Encrypted, certificate not verified.
    Require,
    /// Encrypted, certificate verified against `tls_ca` and the host name.
    VerifyFull,
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let mut config = Config::parse(&text).with_context(|| format!("in {}", path.display()))?;
        config.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text without validating file references.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        Ok(config)
    }

    /// Checks cross-field rules and that referenced files exist.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.limits.max_message_bytes < 1024 {
            bail!("limits.max_message_bytes must be at least 1024");
        }
        if self.limits.max_startup_bytes < 64 {
            bail!("limits.max_startup_bytes must be at least 64");
        }
        if self.limits.buffer_bytes < 4096 {
            bail!("limits.buffer_bytes must be at least 4096");
        }
        self.io.check(&self.listen)?;
        let r = &self.recording;
        if !(1..=22).contains(&r.zstd_level) {
            bail!("recording.zstd_level must be 1 to 22");
        }
        if !(4..=4096).contains(&r.block_kib) {
            bail!("recording.block_kib must be 4 to 4096");
        }
        if !(0.0..=1.0).contains(&self.logging.protocol_trace_sample) {
            bail!("logging.protocol_trace_sample must be between 0 and 1");
        }
        if self.metrics.top_statements == 0 || self.metrics.top_statements > 100_000 {
            bail!("metrics.top_statements must be between 1 and 100000");
        }
        if self.metrics.backend_check_timeout_ms == 0 {
            bail!("metrics.backend_check_timeout_ms must be positive");
        }
        if r.segment_mib == 0 || r.segment_age_secs == 0 || r.queue_mib == 0 {
            bail!("recording.segment_mib, segment_age_secs and queue_mib must be positive");
        }
        if r.fsync == RecordingFsync::Interval && r.fsync_interval_ms == 0 {
            bail!("recording.fsync_interval_ms must be positive with fsync = \"interval\"");
        }
        check_control(&self.control).map_err(anyhow::Error::msg)?;
        check_identity(&self.identity).map_err(anyhow::Error::msg)?;
        let names: Vec<&str> = self.resources.keys().map(String::as_str).collect();
        Policy::compile(&self.policy, &names).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(tls) = &self.tls {
            for (field, path) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
                let path = self.resolve(path);
                if !path.is_file() {
                    bail!("{field}: {} does not exist", path.display());
                }
            }
        }
        if self.resources.is_empty() {
            bail!("no [resources.NAME] configured: clients would have nothing to reach");
        }
        for (name, resource) in &self.resources {
            if resource.password_file.is_none() && resource.password_env.is_none() {
                // Trust-authenticated backends need no secret; that is allowed.
                tracing::debug!(resource = %name, "no backend password configured");
            }
            if resource.password_file.is_some() && resource.password_env.is_some() {
                bail!("resources.{name}: set password_file or password_env, not both");
            }
            if let Some(file) = &resource.password_file {
                let file = self.resolve(file);
                if !file.is_file() {
                    bail!(
                        "resources.{name}.password_file: {} does not exist",
                        file.display()
                    );
                }
            }
            if resource.tls == BackendTls::VerifyFull && resource.tls_ca.is_none() {
                bail!("resources.{name}: tls = \"verify-full\" needs tls_ca");
            }
        }
        Ok(())
    }

    /// Resolves a path from the file relative to the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// Control's state directory (its sockets live there).
    pub fn state_dir(&self) -> PathBuf {
        self.resolve(&self.control.state_dir)
    }

    /// Where session recordings are written (and read by `sluice sessions`, `replay`,
    /// `audit`).
    pub fn recording_dir(&self) -> PathBuf {
        match &self.recording.dir {
            Some(dir) => self.resolve(dir),
            None => self.state_dir().join("recordings"),
        }
    }

    /// The recorder's settings for this file's `[recording]` section.
    pub fn recorder_config(&self) -> sluice_recorder::RecorderConfig {
        let r = &self.recording;
        sluice_recorder::RecorderConfig {
            codec: match r.codec {
                RecordingCodec::Zstd => sluice_recorder::Codec::Zstd {
                    level: r.zstd_level,
                },
                RecordingCodec::Lz4 => sluice_recorder::Codec::Lz4,
                RecordingCodec::None => sluice_recorder::Codec::None,
            },
            block_bytes: r.block_kib * 1024,
            segment_bytes: r.segment_mib * 1024 * 1024,
            segment_age: Duration::from_secs(r.segment_age_secs),
            fsync: match r.fsync {
                RecordingFsync::EveryBlock => sluice_recorder::FsyncPolicy::EveryBlock,
                RecordingFsync::Interval => sluice_recorder::FsyncPolicy::Interval(
                    Duration::from_millis(r.fsync_interval_ms),
                ),
                RecordingFsync::Off => sluice_recorder::FsyncPolicy::Off,
            },
            on_seal: r.on_seal.clone(),
            ..sluice_recorder::RecorderConfig::default()
        }
    }

    /// Number of workers after resolving `0` to the core count.
    pub fn worker_count(&self) -> usize {
        match self.listen.workers {
            0 => std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1),
            n => n,
        }
    }

    /// Handshake deadline as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.handshake_timeout_secs)
    }

    /// Backend connect + login deadline.
    pub fn backend_connect_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.backend_connect_timeout_secs)
    }
}

impl ResourceConfig {
    /// Reads the backend password from its configured source. The value is never logged.
    pub fn password(&self, config: &Config) -> anyhow::Result<Option<String>> {
        if let Some(file) = &self.password_file {
            let path = config.resolve(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading backend password file {}", path.display()))?;
            return Ok(Some(text.lines().next().unwrap_or_default().to_owned()));
        }
        if let Some(var) = &self.password_env {
            let value = std::env::var(var)
                .with_context(|| format!("backend password variable {var} is not set"))?;
            return Ok(Some(value));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [resources.shop]
        host = "127.0.0.1"
        database = "shop"
        user = "app"
        password_env = "SHOP_PASSWORD"
    "#;

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = Config::parse(MINIMAL).expect("parses");
        assert_eq!(config.listen.address.port(), 6432);
        assert_eq!(config.listen.driver, Driver::IoUring);
        assert!(config.listen.pin_workers);
        assert!(!config.listen.allow_plaintext_non_loopback);
        assert_eq!(config.limits.max_message_bytes, 1 << 30);
        assert_eq!(config.resources["shop"].port, 5432);
        assert_eq!(config.resources["shop"].tls, BackendTls::Disable);
        assert!(config.identity.require_user_match);
        assert_eq!(config.control.snapshot_max_age, Duration::from_secs(300));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = format!("{MINIMAL}\n[listen]\nadress = \"1.2.3.4:1\"\n");
        let err = Config::parse(&text).expect_err("typo must not be ignored");
        assert!(format!("{err:#}").contains("adress"), "{err:#}");
    }

    #[test]
    fn io_defaults_are_the_behaviour_before_the_section_existed() {
        let config = Config::parse(MINIMAL).expect("parses");
        assert_eq!(config.io, IoConfig::default());
        assert_eq!(config.io.backlog, 1024);
        assert!(config.io.uring_coop_taskrun);
        assert!(!config.io.uring_sqpoll);
        assert_eq!(config.tuning.profile, None);
    }

    #[test]
    fn io_settings_are_validated_with_the_field_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (extra, field) in [
            ("[io]\nbacklog = 0", "io.backlog"),
            ("[listen]\nuring_entries = 65536", "listen.uring_entries"),
            (
                "[io]\nuring_sqpoll = true\nuring_sqpoll_idle_ms = 0",
                "io.uring_sqpoll_idle_ms",
            ),
            (
                "[io]\nuring_sqpoll = true\n[listen]\ndriver = \"epoll\"",
                "io.uring_sqpoll",
            ),
        ] {
            let mut config = Config::parse(&format!("{MINIMAL}\n{extra}\n")).expect("parses");
            config.base_dir = dir.path().to_path_buf();
            let err = config.validate().expect_err(extra);
            assert!(err.to_string().contains(field), "{extra}: {err}");
        }
        let mut config = Config::parse(&format!(
            "{MINIMAL}\n[io]\nuring_sqpoll = true\nuring_sqpoll_idle_ms = 5\nbacklog = 4096\n"
        ))
        .expect("parses");
        config.base_dir = dir.path().to_path_buf();
        config.validate().expect("valid");
    }

    #[test]
    fn validate_names_the_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::parse(MINIMAL).expect("parses");
        config.base_dir = dir.path().to_path_buf();
        config.validate().expect("valid");
        config
            .resources
            .get_mut("shop")
            .expect("shop")
            .password_file = Some("pw".into());
        config.resources.get_mut("shop").expect("shop").password_env = None;
        let err = config.validate().expect_err("password file is missing");
        assert!(err.to_string().contains("password_file"), "{err}");
        std::fs::write(dir.path().join("pw"), "x").expect("write");
        config.validate().expect("valid once the file exists");
        config.resources.get_mut("shop").expect("shop").tls = BackendTls::VerifyFull;
        let err = config.validate().expect_err("verify-full needs a CA");
        assert!(err.to_string().contains("tls_ca"), "{err}");
    }
}
