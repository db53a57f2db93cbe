//! Throwaway PostgreSQL clusters for `sluice demo` and the integration tests.
//!
//! # What this crate owns
//!
//! [`PgCluster::start`] creates a brand-new cluster with `initdb` in a
//! directory of its own (a fresh temporary directory by default), configures
//! it for speed (`fsync=off`, …), starts it with `pg_ctl`, and tears it down
//! again on [`Drop`]. [`demo::seed_shop`] fills a cluster with the synthetic
//! `shop` database the demo and masking tests use. [`http::DocumentServer`] is a
//! loopback HTTP endpoint serving one replaceable JSON document (an identity provider's
//! JWKS in the OIDC tests); [`http::WebhookReceiver`] one that records what is posted to it
//! (webhook deliveries), answering 500 when told to.
//!
//! # What it must never do
//!
//! * **Touch a cluster it did not create.** It only ever runs `initdb` in an
//!   empty directory, only re-uses a data directory that carries its own
//!   marker file (left behind by an earlier run with `keep`), and only
//!   signals a postmaster whose PID file lives in its own data directory and
//!   whose process is still a `postgres`.
//! * **Listen beyond loopback.** The server listens on `127.0.0.1` and on a
//!   Unix socket inside the cluster directory; `listen_addresses` cannot be
//!   overridden through [`ClusterOptions::extra_conf`].
//! * **Leave processes or directories behind.** `Drop` stops the server
//!   (`-m immediate`) and removes what it created, and a small watchdog
//!   process does the same if the owning process is killed outright (see
//!   `watchdog.rs`).
//!
//! # Running as root
//!
//! PostgreSQL refuses to run as root. When the effective uid is 0, `initdb`,
//! `pg_ctl` and `postgres` run as an unprivileged account: `SLUICE_PG_USER`
//! if set, else the `postgres` system user, else a `sluice-pg` system user
//! created on first use with `useradd --system --no-create-home`. The
//! switch is done with `setgid`/`setgroups([])`/`setuid` in the child (the
//! same thing `setpriv`/`runuser` do), and the cluster directory is
//! `chown`ed to that account. `psql` itself runs as the calling user (it
//! connects over TCP or the socket, so its uid does not matter).
//!
//! The PostgreSQL binaries are found via `SLUICE_PG_BINDIR`, then
//! `pg_config --bindir`, then the highest `/usr/lib/postgresql/*/bin`.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{chown, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod demo;
pub mod http;
mod sys;
mod watchdog;

pub use sys::{find_bindir, free_loopback_port, pid_alive};

use sys::RunAs;
use watchdog::Watchdog;

/// File written into the cluster directory after a successful `initdb`;
/// only directories carrying it are ever re-used.
const MARKER: &str = ".sluice-pgharness-cluster";
/// Our settings live in this file inside the data directory, included at
/// the end of `postgresql.conf` so they win over initdb's defaults.
const CONF_FILE: &str = "sluice.conf";
/// How many ports to try when the port is chosen automatically.
const PORT_ATTEMPTS: usize = 3;
/// Longest Unix socket path the kernel accepts (sun_path minus NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How host (TCP) connections authenticate, i.e. the method on the `host`
/// lines of `pg_hba.conf`. Local (Unix socket) connections always use
/// `trust`; the socket lives in a directory only the cluster owner can read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HostAuth {
    /// `scram-sha-256` (the PostgreSQL default).
    #[default]
    ScramSha256,
    /// `md5`. Note that PostgreSQL silently upgrades to SCRAM for roles
    /// whose stored password is a SCRAM verifier; use
    /// [`PgCluster::create_role_with_encryption`] with `"md5"` to get a
    /// role that really authenticates with md5.
    Md5,
    /// `trust`: no password needed.
    Trust,
}

impl HostAuth {
    /// The `pg_hba.conf` method keyword.
    pub fn method(self) -> &'static str {
        match self {
            HostAuth::ScramSha256 => "scram-sha-256",
            HostAuth::Md5 => "md5",
            HostAuth::Trust => "trust",
        }
    }
}

impl fmt::Display for HostAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method())
    }
}

/// How to create a cluster. See [`PgCluster::start`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// `None`: a fresh temporary directory, removed on drop.
    /// `Some(dir)`: use `dir` (created if missing). The cluster lives in
    /// `dir/data`, its socket in `dir/sock`, its log in `dir/server.log`.
    /// What this run created there is removed on drop unless `keep`; a
    /// cluster left there by an earlier `keep` run is re-used and never
    /// removed.
    pub dir: Option<PathBuf>,
    /// `None`: pick a free loopback port (retrying if it gets taken).
    pub port: Option<u16>,
    /// Bootstrap superuser name. Default `postgres`.
    pub superuser: String,
    /// Superuser password. Default: 24 random alphanumerics.
    pub superuser_password: String,
    /// Method for host connections. Default SCRAM-SHA-256. With
    /// [`HostAuth::Md5`] the cluster also sets `password_encryption = md5`
    /// and stores the superuser password as md5.
    pub auth: HostAuth,
    /// Extra `postgresql.conf` settings (`name`, `value`); values are
    /// written quoted. `listen_addresses`, `port` and
    /// `unix_socket_directories` are rejected.
    pub extra_conf: Vec<(String, String)>,
    /// Leave the cluster directory on drop (the server is still stopped,
    /// with a clean `-m fast` shutdown). For `sluice demo --keep`.
    pub keep: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            dir: None,
            port: None,
            superuser: "postgres".to_string(),
            superuser_password: sys::random_token(24),
            auth: HostAuth::default(),
            extra_conf: Vec::new(),
            keep: false,
        }
    }
}

/// A running throwaway PostgreSQL cluster. Stopped (and its directory
/// removed, unless `keep` or re-used) on drop.
pub struct PgCluster {
    bindir: PathBuf,
    run_as: Option<RunAs>,
    base: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    host: String,
    port: u16,
    superuser: String,
    password: String,
    auth: Mutex<HostAuth>,
    keep: bool,
    running: bool,
    /// Paths removed on drop (and by the watchdog).
    remove_on_drop: Vec<PathBuf>,
    watchdog: Option<Watchdog>,
}

impl fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCluster")
            .field("dir", &self.base)
            .field("port", &self.port)
            .field("superuser", &self.superuser)
            .field("running", &self.running)
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

/// What [`prepare_dir`] found/created.
struct Prepared {
    base: PathBuf,
    /// Cluster already initialised by an earlier run of this crate.
    reuse: bool,
    remove_on_drop: Vec<PathBuf>,
}

impl PgCluster {
    /// Creates and starts a cluster.
    ///
    /// Runs `initdb -U <superuser> --auth-local=trust --auth-host=<auth>
    /// --pwfile=… -E UTF8 --no-locale --no-sync`, writes the settings
    /// (`listen_addresses='127.0.0.1'`, `port`, `unix_socket_directories`,
    /// `fsync=off`, `synchronous_commit=off`, `full_page_writes=off`,
    /// `max_connections=200`, `shared_buffers=128MB`, then `extra_conf`),
    /// and starts the server with `pg_ctl -w -t 60`. On failure the error
    /// includes the tail of the server log and everything created is
    /// removed again.
    pub fn start(opts: ClusterOptions) -> Result<PgCluster> {
        validate_options(&opts)?;
        let bindir = sys::find_bindir()?;
        let run_as = sys::run_as()?;
        let prepared = prepare_dir(&opts, run_as.as_ref())?;
        let base = prepared.base.clone();
        let data = base.join("data");
        let sock = base.join("sock");
        let log = base.join("server.log");

        let sock_len = sock.as_os_str().len() + "/.s.PGSQL.65535".len();
        if sock_len > MAX_SOCKET_PATH {
            cleanup_paths(&prepared.remove_on_drop);
            bail!(
                "cluster directory {} is too long for a Unix socket path ({sock_len} > \
                 {MAX_SOCKET_PATH} bytes); choose a shorter directory",
                base.display()
            );
        }

        // Armed before anything else so even a SIGKILL during initdb is
        // cleaned up.
        let watchdog = match Watchdog::spawn(&data, opts.keep, &prepared.remove_on_drop) {
            Ok(w) => w,
            Err(e) => {
                cleanup_paths(&prepared.remove_on_drop);
                return Err(e);
            }
        };

        let mut cluster = PgCluster {
            bindir,
            run_as,
            base,
            data,
            sock,
            log,
            host: "127.0.0.1".to_string(),
            port: opts.port.unwrap_or(0),
            superuser: opts.superuser.clone(),
            password: opts.superuser_password.clone(),
            auth: Mutex::new(opts.auth),
            keep: opts.keep,
            running: false,
            remove_on_drop: prepared.remove_on_drop,
            watchdog: Some(watchdog),
        };
        // On error `cluster` is dropped, which stops and removes everything.
        cluster.bootstrap(&opts, prepared.reuse)?;
        Ok(cluster)
    }

    fn bootstrap(&mut self, opts: &ClusterOptions, reuse: bool) -> Result<()> {
        let started = Instant::now();
        if !reuse {
            self.initdb(opts)?;
        }
        self.make_owned_dir(&self.sock)?;
        self.write_hba(opts.auth)?;
        self.write_include_line()?;

        let attempts = if opts.port.is_some() {
            1
        } else {
            PORT_ATTEMPTS
        };
        for attempt in 1..=attempts {
            self.port = match opts.port {
                Some(p) => p,
                None => free_loopback_port().context("cannot pick a free loopback port")?,
            };
            self.write_conf(opts)?;
            let log_len = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
            match self.pg_ctl_start() {
                Ok(()) => break,
                Err(e) => {
                    // Bind-then-release race: someone took the port between
                    // free_loopback_port() and the server binding it.
                    let new_log = read_from(&self.log, log_len);
                    let port_taken = new_log.contains("Address already in use")
                        || new_log.contains("could not create any TCP/IP sockets");
                    if port_taken && attempt < attempts {
                        tracing::debug!(port = self.port, "port taken, retrying with another");
                        continue;
                    }
                    return Err(e);
                }
            }
        }

        if reuse || opts.auth == HostAuth::Md5 {
            // Re-set the superuser password: a re-used cluster may have had
            // another one, and md5 needs an md5-stored password.
            let encryption = if opts.auth == HostAuth::Md5 {
                "md5"
            } else {
                "scram-sha-256"
            };
            self.set_password_via_socket(&self.superuser, &self.password, encryption)?;
        }
        tracing::info!(
            dir = %self.base.display(),
            port = self.port,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "PostgreSQL cluster started"
        );
        Ok(())
    }

    fn initdb(&self, opts: &ClusterOptions) -> Result<()> {
        self.make_owned_dir(&self.data)?;
        let pwfile = self.base.join(".pwfile");
        {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&pwfile)
                .with_context(|| format!("cannot create {}", pwfile.display()))?;
            writeln!(f, "{}", opts.superuser_password)?;
        }
        self.chown_to_runner(&pwfile)?;
        let mut cmd = self.pg_command("initdb");
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-U")
            .arg(&opts.superuser)
            .arg("--auth-local=trust")
            .arg(format!("--auth-host={}", opts.auth.method()))
            .arg(format!("--pwfile={}", pwfile.display()))
            .args([
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ]);
        let res = sys::run_checked(&mut cmd);
        let _ = fs::remove_file(&pwfile);
        res.context("initdb failed")?;
        fs::write(
            self.base.join(MARKER),
            "cluster created by sluice-pgharness; safe to delete together with this directory\n",
        )
        .context("cannot write cluster marker")?;
        Ok(())
    }

    /// Appends `include 'sluice.conf'` to `postgresql.conf` once.
    fn write_include_line(&self) -> Result<()> {
        let conf = self.data.join("postgresql.conf");
        let text =
            fs::read_to_string(&conf).with_context(|| format!("cannot read {}", conf.display()))?;
        let line = format!("include '{CONF_FILE}'");
        if !text.lines().any(|l| l.trim() == line) {
            let mut f = fs::OpenOptions::new().append(true).open(&conf)?;
            writeln!(f, "\n# Added by sluice-pgharness; must stay last.\n{line}")?;
        }
        Ok(())
    }

    fn write_conf(&self, opts: &ClusterOptions) -> Result<()> {
        let mut text = String::from("# Written by sluice-pgharness.\n");
        let mut set = |k: &str, v: &str| {
            text.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
        };
        set("listen_addresses", "127.0.0.1");
        set("port", &self.port.to_string());
        set("unix_socket_directories", &self.sock.to_string_lossy());
        set("fsync", "off");
        set("synchronous_commit", "off");
        set("full_page_writes", "off");
        set("max_connections", "200");
        set("shared_buffers", "128MB");
        if opts.auth == HostAuth::Md5 {
            set("password_encryption", "md5");
        }
        for (k, v) in &opts.extra_conf {
            set(k, v);
        }
        self.write_owned_file(&self.data.join(CONF_FILE), &text)
    }

    fn write_hba(&self, auth: HostAuth) -> Result<()> {
        let m = auth.method();
        let text = format!(
            "# Written by sluice-pgharness. Loopback only.\n\
             # TYPE  DATABASE     USER  ADDRESS       METHOD\n\
             local   all          all                 trust\n\
             local   replication  all                 trust\n\
             host    all          all   127.0.0.1/32  {m}\n\
             host    replication  all   127.0.0.1/32  {m}\n"
        );
        self.write_owned_file(&self.data.join("pg_hba.conf"), &text)
    }

    /// Writes a file atomically (temp + rename), owned by the server user.
    fn write_owned_file(&self, path: &Path, text: &str) -> Result<()> {
        let tmp = path.with_extension("sluice-tmp");
        fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
        self.chown_to_runner(&tmp)?;
        fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
        Ok(())
    }

    fn make_owned_dir(&self, dir: &Path) -> Result<()> {
        if !dir.exists() {
            fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        self.chown_to_runner(dir)
    }

    fn chown_to_runner(&self, path: &Path) -> Result<()> {
        if let Some(r) = &self.run_as {
            chown(path, Some(r.uid), Some(r.gid))
                .with_context(|| format!("cannot chown {} to {}", path.display(), r.user))?;
        }
        Ok(())
    }

    /// A command for one of the server binaries, run as the server user.
    fn pg_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        sys::scrub_pg_env(&mut cmd);
        cmd.current_dir(&self.base).stdin(Stdio::null());
        if let Some(r) = &self.run_as {
            cmd.uid(r.uid).gid(r.gid);
            cmd.env("USER", &r.user).env("LOGNAME", &r.user);
        }
        cmd
    }

    fn pg_ctl_start(&mut self) -> Result<()> {
        if !self.log.exists() {
            fs::File::create(&self.log)?;
        }
        fs::set_permissions(&self.log, fs::Permissions::from_mode(0o644))?;
        self.chown_to_runner(&self.log)?;
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("start")
            .arg("-w")
            .args(["-t", "60"])
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log);
        match sys::run_checked(&mut cmd) {
            Ok(_) => {
                self.running = true;
                Ok(())
            }
            Err(e) => {
                // pg_ctl may time out with the server still coming up.
                self.force_stop(false);
                Err(e.context(format!(
                    "PostgreSQL failed to start on 127.0.0.1:{} (data dir {}); server log tail:\n{}",
                    self.port,
                    self.data.display(),
                    sys::tail(&self.log, 30)
                )))
            }
        }
    }

    /// Port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The `PGDATA` directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.sock
    }

    /// The cluster directory (parent of data, socket dir and log).
    pub fn dir(&self) -> &Path {
        &self.base
    }

    /// Path of the server log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Bootstrap superuser name.
    pub fn superuser(&self) -> &str {
        &self.superuser
    }

    /// Bootstrap superuser password.
    pub fn superuser_password(&self) -> &str {
        &self.password
    }

    /// Current `host` method in `pg_hba.conf`.
    pub fn host_auth(&self) -> HostAuth {
        *self.auth.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// PID of the postmaster if it is running.
    pub fn postmaster_pid(&self) -> Option<u32> {
        sys::postmaster_pid(&self.data)
    }

    /// Whether the server is running (per this handle and the PID file).
    pub fn is_running(&self) -> bool {
        self.running && self.postmaster_pid().is_some()
    }

    /// `postgres://superuser:password@127.0.0.1:port/database`
    /// (components percent-encoded).
    pub fn url(&self, database: &str) -> String {
        self.url_for(&self.superuser, &self.password, database)
    }

    /// Connection URL for another role.
    pub fn url_for(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{}",
            sys::percent_encode(user),
            sys::percent_encode(password),
            self.host,
            self.port,
            sys::percent_encode(database)
        )
    }

    /// Runs `sql` with `psql -X -A -t -q -w -v ON_ERROR_STOP=1` over TCP as
    /// the superuser (script fed on stdin, so several statements and psql
    /// meta-commands such as `\connect` work). Returns stdout with trailing
    /// newlines removed; the error includes psql's stderr.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        self.psql_as(&self.superuser, &self.password, database, sql)
    }

    /// Like [`PgCluster::psql`] but as another role, with `PGPASSWORD` set
    /// to `password` (handy for testing authentication).
    pub fn psql_as(&self, user: &str, password: &str, database: &str, sql: &str) -> Result<String> {
        self.run_psql(&self.host, user, Some(password), database, sql, &[])
    }

    /// psql over the Unix socket (local trust) as the superuser.
    fn psql_socket(&self, database: &str, sql: &str, vars: &[(&str, &str)]) -> Result<String> {
        let host = self.sock.to_string_lossy().into_owned();
        self.run_psql(&host, &self.superuser, None, database, sql, vars)
    }

    fn run_psql(
        &self,
        host: &str,
        user: &str,
        password: Option<&str>,
        database: &str,
        sql: &str,
        vars: &[(&str, &str)],
    ) -> Result<String> {
        let mut cmd = Command::new(self.bindir.join("psql"));
        sys::scrub_pg_env(&mut cmd);
        cmd.args(["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(host)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(user)
            .arg("-d")
            .arg(database)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "sluice-pgharness")
            .env("PGSSLMODE", "disable")
            .env("PGPASSFILE", "/dev/null");
        for (k, v) in vars {
            cmd.arg("-v").arg(format!("{k}={v}"));
        }
        if let Some(pw) = password {
            cmd.env("PGPASSWORD", pw);
        }
        cmd.arg("-f")
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("failed to run psql")?;
        let mut stdin = child.stdin.take().context("psql stdin")?;
        let sql_owned = sql.to_owned();
        // Write on a thread so a large script cannot deadlock against a
        // full stdout pipe.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(sql_owned.as_bytes());
        });
        let out = child
            .wait_with_output()
            .context("failed to wait for psql")?;
        let _ = writer.join();
        if !out.status.success() {
            bail!(
                "psql as {user} on {host}:{}/{database} failed ({}): {}",
                self.port,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        let mut s = String::from_utf8(out.stdout).context("psql output is not UTF-8")?;
        while s.ends_with('\n') {
            s.pop();
        }
        Ok(s)
    }

    /// `CREATE DATABASE name` (owned by the superuser).
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql_socket("postgres", "CREATE DATABASE :\"name\";", &[("name", name)])
            .with_context(|| format!("cannot create database {name}"))?;
        Ok(())
    }

    /// Creates a `LOGIN` role with `password`, stored per the server's
    /// current `password_encryption` (scram-sha-256 unless the cluster was
    /// started with [`HostAuth::Md5`]).
    pub fn create_role(&self, name: &str, password: &str, superuser: bool) -> Result<()> {
        let attrs = if superuser {
            "LOGIN SUPERUSER"
        } else {
            "LOGIN"
        };
        let sql = format!("CREATE ROLE :\"name\" {attrs} PASSWORD :'pw';");
        self.psql_socket("postgres", &sql, &[("name", name), ("pw", password)])
            .with_context(|| format!("cannot create role {name}"))?;
        Ok(())
    }

    /// Creates a non-superuser `LOGIN` role whose password is stored with
    /// the given `encryption`: `"md5"` or `"scram-sha-256"`.
    pub fn create_role_with_encryption(
        &self,
        name: &str,
        password: &str,
        encryption: &str,
    ) -> Result<()> {
        check_encryption(encryption)?;
        let sql = format!(
            "SET password_encryption = '{encryption}';\n\
             CREATE ROLE :\"name\" LOGIN PASSWORD :'pw';"
        );
        self.psql_socket("postgres", &sql, &[("name", name), ("pw", password)])
            .with_context(|| format!("cannot create role {name}"))?;
        Ok(())
    }

    /// Changes a role's password, stored with `encryption` (`"md5"` or
    /// `"scram-sha-256"`).
    pub fn set_role_password(&self, name: &str, password: &str, encryption: &str) -> Result<()> {
        check_encryption(encryption)?;
        self.set_password_via_socket(name, password, encryption)
    }

    fn set_password_via_socket(&self, name: &str, password: &str, encryption: &str) -> Result<()> {
        let sql = format!(
            "SET password_encryption = '{encryption}';\n\
             ALTER ROLE :\"name\" PASSWORD :'pw';"
        );
        self.psql_socket("postgres", &sql, &[("name", name), ("pw", password)])
            .with_context(|| format!("cannot set password of role {name}"))?;
        Ok(())
    }

    /// Rewrites the `host` lines of `pg_hba.conf` to use `auth` and reloads
    /// the server, returning once new connections see the change.
    pub fn set_host_auth(&self, auth: HostAuth) -> Result<()> {
        let mut current = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        self.write_hba(auth)?;
        *current = auth;
        if self.running {
            self.reload()?;
        }
        Ok(())
    }

    /// Reloads the configuration and waits until new backends see it.
    pub fn reload(&self) -> Result<()> {
        let q = "SELECT pg_conf_load_time();";
        let before = self.psql_socket("postgres", q, &[])?;
        self.psql_socket("postgres", "SELECT pg_reload_conf();", &[])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // New backends inherit the postmaster's reload time, which is set
            // in the same (signal-blocked) step that reloads pg_hba.conf.
            if self.psql_socket("postgres", q, &[])? != before {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("server did not reload its configuration within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server (`pg_ctl stop -m fast`). Idempotent. The directory
    /// stays; [`PgCluster::start_again`] brings the server back.
    pub fn stop(&mut self) -> Result<()> {
        if !self.running && self.postmaster_pid().is_none() {
            self.running = false;
            return Ok(());
        }
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60"]);
        let res = sys::run_checked(&mut cmd);
        if let Err(e) = res {
            if self.postmaster_pid().is_some() {
                return Err(e.context("pg_ctl stop failed"));
            }
        }
        self.running = false;
        Ok(())
    }

    /// Starts a stopped server again on the same port and directory.
    /// No-op if it is running.
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.pg_ctl_start()
    }

    /// [`PgCluster::stop`] then [`PgCluster::start_again`] (same port).
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Stops the postmaster without ceremony: `pg_ctl stop -m immediate`
    /// (or `-m fast` when `fast`), falling back to signals.
    fn force_stop(&mut self, fast: bool) {
        if let Some(pid) = self.postmaster_pid() {
            let mut cmd = self.pg_command("pg_ctl");
            cmd.arg("stop")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", if fast { "fast" } else { "immediate" }])
                .args(["-w", "-t", "30"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = cmd.status();
            if sys::postgres_pid_alive(pid) {
                sys::signal(pid, libc::SIGQUIT);
                if !sys::wait_pid_gone(pid, Duration::from_secs(5)) {
                    sys::signal(pid, libc::SIGKILL);
                    sys::wait_pid_gone(pid, Duration::from_secs(5));
                }
            }
        }
        self.running = false;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let keep = self.keep;
        self.force_stop(keep);
        if !keep {
            cleanup_paths(&self.remove_on_drop);
        }
        if let Some(w) = self.watchdog.take() {
            w.disarm();
        }
    }
}

fn cleanup_paths(paths: &[PathBuf]) {
    for p in paths {
        let res = if p.is_dir() {
            fs::remove_dir_all(p)
        } else {
            fs::remove_file(p)
        };
        if let Err(e) = res {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove cluster path");
            }
        }
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let start = (offset as usize).min(bytes.len());
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(_) => String::new(),
    }
}

fn check_encryption(encryption: &str) -> Result<()> {
    match encryption {
        "md5" | "scram-sha-256" => Ok(()),
        other => bail!("password encryption must be \"md5\" or \"scram-sha-256\", not {other:?}"),
    }
}

fn validate_options(opts: &ClusterOptions) -> Result<()> {
    if opts.superuser.is_empty() || opts.superuser.contains('\0') {
        bail!("superuser name must be non-empty");
    }
    if opts.superuser_password.is_empty() || opts.superuser_password.contains(['\n', '\r', '\0']) {
        bail!("superuser password must be non-empty and single-line");
    }
    if opts.port == Some(0) {
        bail!("port 0 is not valid; use None to pick a free port");
    }
    for (k, v) in &opts.extra_conf {
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            bail!("invalid setting name {k:?} in extra_conf");
        }
        let lower = k.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "listen_addresses" | "port" | "unix_socket_directories"
        ) {
            bail!("extra_conf may not override {k}: the harness controls where the server listens");
        }
        if v.contains(['\n', '\r', '\0']) {
            bail!("value of {k} in extra_conf must be single-line");
        }
    }
    Ok(())
}

/// Creates the cluster directory (temporary or user-supplied) and decides
/// what to remove on drop.
fn prepare_dir(opts: &ClusterOptions, run_as: Option<&RunAs>) -> Result<Prepared> {
    let chown_base = |p: &Path| -> Result<()> {
        if let Some(r) = run_as {
            chown(p, Some(r.uid), Some(r.gid))
                .with_context(|| format!("cannot chown {} to {}", p.display(), r.user))?;
        }
        Ok(())
    };
    match &opts.dir {
        None => {
            let mut parent = std::env::temp_dir();
            if run_as.is_some() && !sys::world_traversable(&parent) {
                // The server user must be able to reach its data directory.
                parent = PathBuf::from("/tmp");
            }
            let dir = tempfile::Builder::new()
                .prefix("sluice-pg-")
                .tempdir_in(&parent)
                .with_context(|| format!("cannot create a temp dir in {}", parent.display()))?
                .keep();
            let res = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(anyhow::Error::from)
                .and_then(|()| chown_base(&dir));
            if let Err(e) = res {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
            Ok(Prepared {
                remove_on_drop: vec![dir.clone()],
                base: dir,
                reuse: false,
            })
        }
        Some(dir) => {
            let dir = if dir.is_absolute() {
                dir.clone()
            } else {
                std::env::current_dir()?.join(dir)
            };
            let created = !dir.exists();
            if created {
                fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
                chown_base(&dir)?;
            }
            if let Some(r) = run_as {
                if !sys::reachable_by(&dir, r.uid, r.gid) {
                    bail!(
                        "PostgreSQL runs as user {} here, which cannot reach {}; use a directory \
                         whose parents are world-traversable (e.g. under /tmp)",
                        r.user,
                        dir.display()
                    );
                }
            }
            let data = dir.join("data");
            let data_nonempty = fs::read_dir(&data)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if data_nonempty {
                if !dir.join(MARKER).exists() {
                    bail!(
                        "{} already holds a data directory that was not created by \
                         sluice-pgharness; refusing to touch it",
                        data.display()
                    );
                }
                if data.join("postmaster.pid").exists() && sys::postmaster_pid(&data).is_some() {
                    bail!(
                        "the cluster in {} is already running; stop it first",
                        data.display()
                    );
                }
                return Ok(Prepared {
                    base: dir,
                    reuse: true,
                    remove_on_drop: Vec::new(),
                });
            }
            let remove_on_drop = if opts.keep {
                Vec::new()
            } else if created {
                vec![dir.clone()]
            } else {
                ["data", "sock", "server.log", MARKER, ".pwfile"]
                    .iter()
                    .map(|p| dir.join(p))
                    .collect()
            };
            Ok(Prepared {
                base: dir,
                reuse: false,
                remove_on_drop,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_listen_override() {
        let opts = ClusterOptions {
            extra_conf: vec![("listen_addresses".into(), "*".into())],
            ..Default::default()
        };
        assert!(validate_options(&opts).is_err());
        let opts = ClusterOptions {
            extra_conf: vec![("work_mem".into(), "8MB".into())],
            ..Default::default()
        };
        assert!(validate_options(&opts).is_ok());
    }

    #[test]
    fn default_password_is_random() {
        let a = ClusterOptions::default();
        let b = ClusterOptions::default();
        assert_eq!(a.superuser, "postgres");
        assert_eq!(a.superuser_password.len(), 24);
        assert_ne!(a.superuser_password, b.superuser_password);
        assert_eq!(a.auth, HostAuth::ScramSha256);
    }
}
