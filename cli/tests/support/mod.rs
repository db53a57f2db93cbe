//! Helpers for the end-to-end tests of the `sluice` binary: child processes that are
//! killed on drop, bounded waits, a PostgreSQL cluster with a gateway in front of it, and
//! `psql`/`pgbench` invocations against that gateway.
//!
//! Every wait here has a deadline so a hang fails the test instead of blocking the run;
//! none of the deadlines is an assertion about speed.

#![allow(dead_code)] // each test binary uses a different part of the fixture

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_pgharness::{ClusterOptions, PgCluster};
use sluice_proxy::config::Driver;
use sluice_proxy::deployment::{self, BackendSpec, Deployment};

/// Path of the binary under test.
pub fn sluice_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// Removes every `PG*` variable (and `SLUICE_*`) inherited from the environment so the
/// invocation depends only on what the test passes.
pub fn scrub_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("PG") || name.starts_with("SLUICE_") {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd.env("PGPASSFILE", "/dev/null")
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PSQLRC", "/dev/null");
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a failing
/// assertion never leaves it running.
pub struct Proc {
    child: Option<Child>,
    name: String,
    log: Option<PathBuf>,
}

impl Proc {
    /// Spawns `cmd`, naming it `name` in messages. `log` is a file its stderr goes to
    /// (set up by the caller), shown when something goes wrong.
    pub fn spawn(name: &str, cmd: &mut Command, log: Option<PathBuf>) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc {
            child: Some(child),
            name: name.to_owned(),
            log,
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    /// The child (e.g. to take its pipes).
    pub fn child(&self) -> &Child {
        self.child.as_ref().expect("child already reaped")
    }

    /// The child, mutably.
    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child already reaped")
    }

    /// Whether the process was already waited for.
    pub fn is_reaped(&self) -> bool {
        self.child.is_none()
    }

    /// Whatever the process wrote to its log file so far.
    pub fn log_text(&self) -> String {
        match &self.log {
            Some(path) => std::fs::read_to_string(path).unwrap_or_default(),
            None => String::new(),
        }
    }

    /// Exit status if the process has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child_mut()
            .try_wait()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name))
    }

    /// Waits for the process to exit; panics (and kills it) after `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not exit within {timeout:?}; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal by name (`INT`, `TERM`, …) with kill(1).
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `kill -s SIGNAL pid` (the crate has no libc dependency).
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -s {signal} {pid} failed: {status}");
}

/// Drains a pipe on a thread so the child can never block on a full pipe.
pub fn drain<R: Read + Send + 'static>(mut pipe: R) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Runs `cmd` to completion with stdout/stderr captured; panics (after killing it) if it
/// takes longer than `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut proc = Proc::spawn(&program, cmd, None);
    let stdout = drain(proc.child_mut().stdout.take().expect("stdout"));
    let stderr = drain(proc.child_mut().stderr.take().expect("stderr"));
    let status = proc.wait_timeout(timeout);
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Like [`run`] but panics unless the command succeeded; returns stdout as text.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> String {
    let description = format!("{cmd:?}");
    let out = run(cmd, timeout);
    assert!(
        out.status.success(),
        "{description} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Waits until `127.0.0.1:port` accepts TCP connections; panics with the process log if
/// `proc` exits first or the deadline passes.
pub fn wait_for_port(port: u16, proc: &mut Proc, timeout: Duration) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = proc.try_wait() {
            panic!(
                "{} exited ({status}) before listening on {port}; log:\n{}",
                proc.name,
                proc.log_text()
            );
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{} did not listen on {port} within {timeout:?}; log:\n{}",
                proc.name,
                proc.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `path` to exist; panics with the process log if `proc` exits first.
pub fn wait_for_file(path: &Path, proc: &mut Proc, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if let Some(status) = proc.try_wait() {
            panic!(
                "{} exited ({status}) before writing {}; log:\n{}",
                proc.name,
                path.display(),
                proc.log_text()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "{} did not write {} within {timeout:?}; log:\n{}",
                proc.name,
                path.display(),
                proc.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A temporary directory that the unprivileged PostgreSQL account can traverse (the
/// harness runs the server as another user when the tests run as root).
pub fn shared_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("sluice-e2e-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod tempdir");
    dir
}

/// `VmHWM` (peak resident set) of a process, in bytes.
pub fn vm_hwm_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM line");
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmHWM value");
    kb * 1024
}

/// How a [`Gateway`] fixture is set up.
#[derive(Default)]
pub struct Options {
    /// `--driver` passed to `sluice proxy` (None: the config's io_uring).
    pub driver: Option<&'static str>,
    /// Start the cluster with `log_connections = on`.
    pub log_connections: bool,
    /// Rewrites the written `sluice.toml` before the gateway starts.
    pub edit_config: Option<fn(String) -> String>,
    /// Runs after the deployment is written and before the gateway starts.
    pub before_start: Option<fn(&Deployment)>,
    /// Name the config through `$SLUICE_CONFIG` instead of `--config`.
    pub config_from_env: bool,
    /// Run `sluice up` (control in-process, the proxy as its supervised child) instead of
    /// `sluice control` and `sluice proxy` as two processes.
    pub up: bool,
    /// More arguments for `sluice up` / `sluice proxy` (e.g. `--profile NAME`).
    pub extra_args: Vec<&'static str>,
}

/// Password of the backend role the gateway logs in as.
pub const BACKEND_PASSWORD: &str = "gw-secret-only-the-gateway-knows";

/// A PostgreSQL cluster with role `gw` owning database `app`, a deployment directory,
/// `sluice control` and `sluice proxy` (as two processes, the way two systemd units run
/// them) on a free port in front of it. Fields drop in order: the gateway is killed before
/// the cluster is removed.
pub struct Gateway {
    /// The `sluice proxy` process (`sluice up` with [`Options::up`]).
    pub proc: Proc,
    /// The `sluice control` process (none with [`Options::up`]).
    pub control: Option<Proc>,
    /// Port the gateway listens on (127.0.0.1).
    pub port: u16,
    /// Port of its metrics endpoint (127.0.0.1).
    pub metrics_port: u16,
    /// The written deployment (config, CA, signing key).
    pub deployment: Deployment,
    /// Holds the deployment directory and the gateway log.
    pub dir: tempfile::TempDir,
    /// The backend.
    pub cluster: PgCluster,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // `sluice up` leaves its gateway running if it is killed outright (fail-static), so
        // stop it the way an operator would: SIGTERM, and wait for the gateway to drain.
        if !self.proc.is_reaped() && self.proc.try_wait().is_none() {
            self.proc.signal("TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.proc.try_wait().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // `proc` drops next (killed if it is somehow still there), then the cluster.
    }
}

/// Kills the given processes when dropped: for gateways a test orphaned on purpose.
pub struct KillOnDrop(pub Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &pid.to_string()])
                .status();
        }
    }
}

impl Gateway {
    /// Starts everything; returns once the gateway accepts connections.
    pub fn start(options: Options) -> Gateway {
        let mut extra_conf = Vec::new();
        if options.log_connections {
            extra_conf.push(("log_connections".to_owned(), "on".to_owned()));
        }
        let cluster = PgCluster::start(ClusterOptions {
            extra_conf,
            ..ClusterOptions::default()
        })
        .expect("starting PostgreSQL");
        cluster
            .create_role("gw", BACKEND_PASSWORD, false)
            .expect("create role gw");
        cluster
            .psql("postgres", "CREATE DATABASE app OWNER gw;")
            .expect("create database app");

        let dir = shared_tempdir();
        let port = sluice_pgharness::free_loopback_port().expect("free port");
        let deployment = deployment::write(
            &dir.path().join("deploy"),
            port,
            Driver::IoUring,
            &BackendSpec {
                resource: "app".into(),
                host: cluster.host().to_owned(),
                port: cluster.port(),
                database: "app".into(),
                user: "gw".into(),
                password: BACKEND_PASSWORD.into(),
            },
        )
        .expect("writing the deployment");
        // The deployment puts the metrics endpoint on the next port, which another test
        // may hold: give it a free one of its own.
        let metrics_port = sluice_pgharness::free_loopback_port().expect("free port");
        {
            let text = std::fs::read_to_string(&deployment.config).expect("read sluice.toml");
            let planned = format!("listen = \"127.0.0.1:{}\"", deployment::metrics_port(port));
            assert!(
                text.contains(&planned),
                "the deployment names no metrics port"
            );
            let text = text.replace(&planned, &format!("listen = \"127.0.0.1:{metrics_port}\""));
            std::fs::write(&deployment.config, text).expect("write sluice.toml");
        }
        if let Some(edit) = options.edit_config {
            let text = std::fs::read_to_string(&deployment.config).expect("read sluice.toml");
            std::fs::write(&deployment.config, edit(text)).expect("write sluice.toml");
        }
        if let Some(hook) = options.before_start {
            hook(&deployment);
        }

        let control = (!options.up).then(|| start_control(&deployment, dir.path()));

        let log_path = dir.path().join("gateway.log");
        let log = std::fs::File::create(&log_path).expect("gateway log");
        let mut cmd = Command::new(sluice_bin());
        scrub_env(&mut cmd);
        cmd.arg(if options.up { "up" } else { "proxy" });
        if options.config_from_env {
            cmd.env("SLUICE_CONFIG", &deployment.config);
        } else {
            cmd.arg("--config").arg(&deployment.config);
        }
        cmd.env("SLUICE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(driver) = options.driver {
            cmd.args(["--driver", driver]);
        }
        cmd.args(&options.extra_args);
        let name = if options.up {
            "sluice up"
        } else {
            "sluice proxy"
        };
        let mut proc = Proc::spawn(name, &mut cmd, Some(log_path));
        wait_for_port(port, &mut proc, Duration::from_secs(30));
        Gateway {
            proc,
            control,
            port,
            metrics_port,
            deployment,
            dir,
            cluster,
        }
    }

    /// Runs `sluice ARGS --config FILE` and returns its output (success or not).
    pub fn sluice(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(sluice_bin());
        scrub_env(&mut cmd);
        cmd.args(args).arg("--config").arg(&self.deployment.config);
        run(&mut cmd, Duration::from_secs(60))
    }

    /// A one-hour token for `user` in group `dba` (the demo policy lets it run any
    /// statement; tests of statement policy mint their own).
    pub fn token(&self, user: &str) -> String {
        self.deployment
            .mint(user, &["dba"], Duration::from_secs(3600))
            .expect("mint")
    }

    /// `host=127.0.0.1 port=P dbname=app user=USER` followed by `extra`.
    pub fn conninfo(&self, user: &str, extra: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=app user={user} {extra}",
            self.port
        )
    }

    /// `psql -X -v ON_ERROR_STOP=1 CONNINFO` with `PGPASSWORD=token` and a clean
    /// environment; the caller adds `-c`, `-f`, … .
    pub fn psql(&self, token: &str, conninfo: &str) -> Command {
        let mut cmd = Command::new("psql");
        scrub_env(&mut cmd);
        cmd.args(["-X", "-v", "ON_ERROR_STOP=1"])
            .arg(conninfo)
            .env("PGPASSWORD", token);
        cmd
    }

    /// Runs one SQL command as alice with `-A -t` and returns the trimmed output.
    pub fn query(&self, sql: &str) -> String {
        let mut cmd = self.psql(&self.token("alice"), &self.conninfo("alice", ""));
        cmd.args(["-A", "-t", "-c", sql]);
        run_ok(&mut cmd, Duration::from_secs(60)).trim().to_owned()
    }
}

/// Starts `sluice control` for `deployment` (log in `dir/control.log`) and waits until its
/// admin socket answers.
pub fn start_control(deployment: &Deployment, dir: &Path) -> Proc {
    let log_path = dir.join("control.log");
    let log = std::fs::File::create(&log_path).expect("control log");
    let mut cmd = Command::new(sluice_bin());
    scrub_env(&mut cmd);
    cmd.arg("control")
        .arg("--config")
        .arg(&deployment.config)
        .env("SLUICE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let mut proc = Proc::spawn("sluice control", &mut cmd, Some(log_path));
    let socket = deployment.state_dir.join("admin.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if let Some(status) = proc.try_wait() {
            panic!("sluice control exited with {status}:\n{}", proc.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "control never opened {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    proc
}

/// How long a [`Session`] waits for a line before calling it a hang.
const SESSION_WAIT: Duration = Duration::from_secs(60);

/// An interactive psql whose stdout and stderr lines can be awaited. It keeps going after
/// an error, as a person at the prompt would.
pub struct Session {
    pub proc: Proc,
    stdin: ChildStdin,
    out: Receiver<String>,
    err: Receiver<String>,
}

fn lines_of<R: std::io::Read + Send + 'static>(pipe: R) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Session {
    pub fn open(gw: &Gateway, user: &str, token: &str) -> Session {
        let mut cmd = Command::new("psql");
        scrub_env(&mut cmd);
        cmd.args(["-X", "-A", "-t", "-q"])
            .arg(gw.conninfo(user, ""))
            .env("PGPASSWORD", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn("psql session", &mut cmd, None);
        let stdin = proc.child_mut().stdin.take().expect("stdin");
        let out = lines_of(proc.child_mut().stdout.take().expect("stdout"));
        let err = lines_of(proc.child_mut().stderr.take().expect("stderr"));
        let mut session = Session {
            proc,
            stdin,
            out,
            err,
        };
        session.send("SELECT 'ready';");
        session.expect_out("ready");
        session
    }

    pub fn send(&mut self, sql: &str) {
        writeln!(self.stdin, "{sql}").expect("write to psql");
        self.stdin.flush().expect("flush psql");
    }

    pub fn expect_out(&self, want: &str) {
        let deadline = Instant::now() + SESSION_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(line) if line == want => return,
                Ok(_) => {}
                Err(e) => panic!(
                    "psql never printed {want:?} ({e:?}); stderr so far: {:?}",
                    self.err.try_iter().collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Waits for a stderr line containing `needle`; returns everything read up to it.
    pub fn expect_err(&self, needle: &str) -> String {
        let deadline = Instant::now() + SESSION_WAIT;
        let mut seen = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains(needle) {
                        return seen;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    panic!("psql never printed {needle:?} on stderr; got:\n{seen}")
                }
            }
        }
    }
}

/// The gateway's log without terminal colour codes (`ESC [ … m`).
pub fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs pgbench as alice against the gateway's `app` with `token`; panics with its output
/// and the gateway's log unless it succeeds. Returns its report.
pub fn pgbench(gw: &Gateway, token: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("pgbench");
    scrub_env(&mut cmd);
    cmd.args(args)
        .args(["-h", "127.0.0.1", "-p", &gw.port.to_string(), "-U", "alice"])
        .arg("app")
        .env("PGPASSWORD", token);
    let out = run(&mut cmd, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pgbench {} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}\ngateway log:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        gw.proc.log_text()
    );
    stdout
}

/// The number after `label` on its line of a pgbench report (`12/34` gives 12).
pub fn number_after(report: &str, label: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?} in pgbench output:\n{report}"))
}
