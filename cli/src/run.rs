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
pub fn up(config: &Path, log_format: LogFormat) -> anyhow::Result<()> {
    let config =
        std::path::absolute(config).with_context(|| format!("resolving {}", config.display()))?;
    // Refuse a config the gateway would refuse, rather than restarting it forever.
    sluice_proxy::Config::load(&config)?;
    let signals = crate::signals::channel(&[SIGHUP, SIGINT, SIGTERM])?;
    let control = start_control(&config)?;
    let proxy = ProxyCommand {
        exe: std::env::current_exe().context("finding the sluice executable")?,
        config,
        log_format,
    };
    let result = supervise(&proxy, &signals, &control);
    control.stop();
    result
}

/// How to start the gateway child.
struct ProxyCommand {
    exe: PathBuf,
    config: PathBuf,
    log_format: LogFormat,
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
            .stdin(Stdio::null())
            .process_group(0);
        let parent = std::process::id();
        // SAFETY: between fork and exec the closure calls only async-signal-safe functions
        // (prctl, getppid) and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // If `up` is killed outright, the gateway must not outlive it unsupervised.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        info!(pid = child.id(), "gateway started");
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
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new();
    let mut state = Proxy::Running {
        child: proxy.spawn().context("starting the gateway")?,
        started: Instant::now(),
    };
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
