//! Out-of-process cleanup for when the owning process dies without running
//! `Drop` (SIGKILL, abort, a signal with default disposition).
//!
//! The watchdog is a `sh` process whose stdin is a pipe from the owning
//! process. It blocks reading that pipe; the read only returns EOF once every
//! copy of the write end is closed, i.e. once the owner has exited, however
//! it died. It then stops the postmaster recorded in `postmaster.pid` (after
//! checking the PID still belongs to a `postgres` process) and removes the
//! paths it was given. It runs in its own process group so a terminal
//! Ctrl-C aimed at the owner does not kill it before it has done its job.
//! On an orderly drop the owner cleans up itself and then kills the watchdog.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, Result};

const SCRIPT: &str = r#"
trap '' HUP INT TERM PIPE
data="$1"; sig="$2"; shift 2
# Block until the owner is gone (EOF on stdin). Lines are ignored.
while IFS= read -r _line; do :; done
alive() {
  [ -r "/proc/$1/stat" ] || return 1
  case "$(cat "/proc/$1/stat" 2>/dev/null)" in
    "") return 1 ;;
    *") Z "*|*") X "*) return 1 ;;
  esac
  comm=$(cat "/proc/$1/comm" 2>/dev/null)
  [ "$comm" = postgres ] || [ "$comm" = postmaster ]
}
# A few rounds in case the server was still starting up when the owner died.
round=0
while [ $round -lt 3 ]; do
  pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null)
  case "$pid" in ''|*[!0-9]*) pid= ;; esac
  if [ -n "$pid" ] && alive "$pid"; then
    kill -"$sig" "$pid" 2>/dev/null
    n=0
    while alive "$pid" && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
  round=$((round+1))
  [ $round -lt 3 ] && sleep 0.2
done
for p in "$@"; do rm -rf -- "$p"; done
"#;

/// A running watchdog. Kill it with [`Watchdog::disarm`] after an orderly
/// cleanup; dropping it without disarming leaves it armed until the owning
/// process exits.
pub(crate) struct Watchdog {
    child: Child,
    _stdin: ChildStdin,
}

impl Watchdog {
    /// Starts a watchdog for the cluster in `data_dir`. When the owner dies
    /// it sends `SIGQUIT` (immediate shutdown) or `SIGINT` (fast shutdown,
    /// `fast == true`) to the postmaster and then removes `remove`.
    pub(crate) fn spawn(data_dir: &Path, fast: bool, remove: &[PathBuf]) -> Result<Watchdog> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("sluice-pg-watchdog")
            .arg(data_dir)
            .arg(if fast { "INT" } else { "QUIT" })
            .args(remove)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            .process_group(0);
        let mut child = cmd.spawn().context("failed to start cluster watchdog")?;
        let stdin = child
            .stdin
            .take()
            .context("watchdog stdin was not captured")?;
        Ok(Watchdog {
            child,
            _stdin: stdin,
        })
    }

    /// Kills the watchdog without letting it clean up (the owner did).
    pub(crate) fn disarm(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
