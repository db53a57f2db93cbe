//! `sluice control` and `sluice up`: the long-running processes.
//!
//! `control` runs the control sidecar in this process. `up` runs control in this process and
//! the gateway as a supervised child process (`sluice proxy` with the same config), so a
//! gateway crash never takes control (and its state) down and is restarted with backoff,
//! while the gateway keeps serving from its last snapshot if control stops.
//!
//! Signals: SIGHUP reloads the config in control (the gateway picks the new snapshot up by
//! itself); SIGTERM or SIGINT stops. In `up`, stopping means: SIGTERM to the gateway (it
//! stops accepting and lets sessions finish within its grace period), wait for it, stop
//! control. A second SIGTERM/SIGINT is forwarded, and the gateway closes every session at
//! once. The gateway runs in its own process group, so Ctrl-C in a terminal reaches only
//! `up`, which forwards it exactly once.
//!
//! If `up` itself dies (and control with it), the gateway is not taken down: it keeps
//! serving from its last snapshot for `control.snapshot_max_age`, like a separate `sluice
//! proxy`. The next `up` on the same state directory finds it through `proxy.pid` (pid and
//! start time), starts its own gateway beside it, and then asks the old one to drain.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use sluice_control::service::Control;
use tracing::{error, info, warn};

use crate::output::span;
use crate::LogFormat;

/// How often `up` looks at its child between signals.
const TICK: Duration = Duration::from_millis(100);

fn start_control(config: &Path) -> anyhow::Result<Control> {
    Control::start(config).map_err(|e| anyhow!("starting control: {e}"))
}

fn reload(control: &Control) {
    match control.reload() {
        Ok(generation) => info!(generation, "config reloaded and published"),
        Err(e) => error!(error = %e, "reload refused; the running config stays"),
    }
}

/// `sluice control`: runs until SIGTERM/SIGINT.
pub fn control(config: &Path) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives while control starts is not lost.
    let signals = crate::signals::channel(&[SIGHUP, SIGINT, SIGTERM])?;
    let control = start_control(config)?;
    for signal in signals.iter() {
        if signal == SIGHUP {
            reload(&control);
        } else {
            info!(signal, "stopping control");
            break;
        }
    }
    control.stop();
    Ok(())
}

/// `sluice up`: control here, the gateway as a supervised child, until SIGTERM/SIGINT.
/// `profile` (`--profile`) is passed on to the gateway, which applies and logs it.
pub fn up(config: &Path, log_format: LogFormat, profile: Option<String>) -> anyhow::Result<()> {
    let config =
        std::path::absolute(config).with_context(|| format!("resolving {}", config.display()))?;
    // Refuse a config the gateway would refuse, rather than restarting it forever.
    let applied = sluice_tuning::load(&config, profile.as_deref())?;
    if let Some((p, _)) = applied.profile {
        info!(profile = p.name, "the gateway runs with a tuning profile");
    }
    let signals = crate::signals::channel(&[SIGHUP, SIGINT, SIGTERM])?;
    let control = start_control(&config)?;
    let state_dir = sluice_control::config::ControlFile::load(&config)
        .map_err(|e| anyhow!(e))?
        .state_dir();
    let proxy = ProxyCommand {
        exe: std::env::current_exe().context("finding the sluice executable")?,
        config,
        log_format,
        pid_file: state_dir.join("proxy.pid"),
        profile,
    };
    let previous = previous_gateway(&proxy.pid_file);
    let result = supervise(&proxy, &signals, &control, previous);
    let _ = std::fs::remove_file(&proxy.pid_file);
    control.stop();
    result
}

/// How to start the gateway child.
struct ProxyCommand {
    exe: PathBuf,
    config: PathBuf,
    log_format: LogFormat,
    /// `state_dir/proxy.pid`: the running child's pid and start time.
    pid_file: PathBuf,
    /// `--profile` given to `up`; the file's own `[tuning] profile` the child reads itself.
    profile: Option<String>,
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat` field 22), which
/// tells a live gateway from an unrelated process that reused its pid.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; the fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

fn write_pid_file(path: &Path, pid: u32) -> std::io::Result<()> {
    let ticks = start_ticks(pid).unwrap_or(0);
    std::fs::write(path, format!("{pid} {ticks}\n"))
}

/// The gateway a previous `sluice up` on this state directory left running (it was killed
/// without stopping its child), if that process is still the same gateway.
fn previous_gateway(pid_file: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    let mut fields = text.split_whitespace();
    let pid: u32 = fields.next()?.parse().ok()?;
    let ticks: u64 = fields.next()?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let is_gateway = String::from_utf8_lossy(&cmdline).contains("proxy");
    (is_gateway && start_ticks(pid) == Some(ticks)).then_some(pid)
}

impl ProxyCommand {
    /// Must be called from the thread that stays alive for the whole supervision: the
    /// child's parent-death signal fires when the spawning *thread* exits.
    fn spawn(&self) -> std::io::Result<Child> {
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.arg("--log-format")
            .arg(self.log_format.as_arg())
            .arg("proxy")
            .arg("--config")
            .arg(&self.config)
            .args(self.profile.iter().flat_map(|p| ["--profile", p.as_str()]))
            .stdin(Stdio::null())
            .process_group(0);
        // No parent-death signal: if `up` (and with it control) dies, the gateway keeps
        // serving from its last snapshot for `snapshot_max_age`, as a separate `sluice
        // proxy` would; the next `up` finds it by its pid file and retires it.
        let child = cmd.spawn()?;
        info!(pid = child.id(), "gateway started");
        if let Err(e) = write_pid_file(&self.pid_file, child.id()) {
            warn!(error = %e, "could not record the gateway's pid; a later `sluice up` will not find it if this one is killed");
        }
        Ok(child)
    }
}

/// Delay before restarting a child that exited: 200 ms doubling up to 10 s, back to
/// 200 ms once a child has run for a minute.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const INITIAL: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(10);
    const RESET_AFTER: Duration = Duration::from_secs(60);

    fn new() -> Backoff {
        Backoff {
            next: Self::INITIAL,
        }
    }

    /// The delay before the next start, after a child that ran for `ran`.
    fn delay(&mut self, ran: Duration) -> Duration {
        if ran >= Self::RESET_AFTER {
            self.next = Self::INITIAL;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

enum Proxy {
    Running { child: Child, started: Instant },
    Waiting { until: Instant },
}

fn supervise(
    proxy: &ProxyCommand,
    signals: &Receiver<i32>,
    control: &Control,
    previous: Option<u32>,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new();
    let mut state = Proxy::Running {
        child: proxy.spawn().context("starting the gateway")?,
        started: Instant::now(),
    };
    if let Some(pid) = previous {
        // The new gateway shares the port (SO_REUSEPORT); once it listens, the old one
        // drains: its sessions finish within its grace period, new ones go to the new one.
        std::thread::sleep(Duration::from_secs(1));
        info!(
            pid,
            "retiring the gateway a previous `sluice up` left running"
        );
        // SAFETY: kill has no memory-safety preconditions; the pid was checked against the
        // process's start time just before, so it names that gateway.
        if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } == -1 {
            warn!(pid, error = %std::io::Error::last_os_error(), "could not signal the previous gateway");
        }
    }
    loop {
        match signals.recv_timeout(TICK) {
            Ok(SIGHUP) => reload(control),
            Ok(signal) => {
                info!(signal, "stopping");
                if let Proxy::Running { child, .. } = state {
                    stop_child(child, signals, control);
                }
                return Ok(());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(anyhow!("the signal thread ended"));
            }
        }
        state = match state {
            Proxy::Running { mut child, started } => match child.try_wait() {
                Ok(Some(status)) => {
                    let ran = started.elapsed();
                    let delay = backoff.delay(ran);
                    warn!(
                        status = %status,
                        ran = %span(ran),
                        restart_in = %span(delay),
                        "the gateway exited unexpectedly; restarting it"
                    );
                    Proxy::Waiting {
                        until: Instant::now() + delay,
                    }
                }
                Ok(None) => Proxy::Running { child, started },
                Err(e) => {
                    error!(error = %e, "could not check on the gateway");
                    Proxy::Running { child, started }
                }
            },
            Proxy::Waiting { until } if Instant::now() >= until => match proxy.spawn() {
                Ok(child) => Proxy::Running {
                    child,
                    started: Instant::now(),
                },
                Err(e) => {
                    let delay = backoff.delay(Duration::ZERO);
                    error!(error = %e, retry_in = %span(delay), "could not start the gateway");
                    Proxy::Waiting {
                        until: Instant::now() + delay,
                    }
                }
            },
            waiting => waiting,
        };
    }
}

fn sigterm(child: &Child) {
    // The child is not reaped until we wait for it, so its pid cannot have been reused.
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, libc::SIGTERM) } == -1 {
        warn!(pid, error = %std::io::Error::last_os_error(), "could not signal the gateway");
    }
}

/// SIGTERM to the gateway, then waits for it: it drains within its own grace period. A
/// further SIGTERM/SIGINT is forwarded (the gateway then closes every session at once).
fn stop_child(mut child: Child, signals: &Receiver<i32>, control: &Control) {
    info!(
        pid = child.id(),
        "asking the gateway to stop: no new connections, sessions may finish"
    );
    sigterm(&child);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                info!(status = %status, "gateway stopped");
                return;
            }
            Ok(None) => {}
            Err(e) => {
                error!(error = %e, "could not wait for the gateway");
                return;
            }
        }
        match signals.recv_timeout(TICK) {
            Ok(SIGHUP) => reload(control),
            Ok(signal) => {
                warn!(signal, "second signal: the gateway closes all sessions now");
                sigterm(&child);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // No more signals can arrive; just wait.
                match child.wait() {
                    Ok(status) => info!(status = %status, "gateway stopped"),
                    Err(e) => error!(error = %e, "could not wait for the gateway"),
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_ten_seconds_and_resets_after_a_minute_of_running() {
        let mut b = Backoff::new();
        let quick = Duration::from_millis(50);
        let delays: Vec<u64> = (0..9).map(|_| b.delay(quick).as_millis() as u64).collect();
        assert_eq!(
            delays,
            [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        assert_eq!(b.delay(Duration::from_secs(59)), Duration::from_secs(10));
        assert_eq!(b.delay(Duration::from_secs(60)), Duration::from_millis(200));
        assert_eq!(b.delay(quick), Duration::from_millis(400));
    }
}
