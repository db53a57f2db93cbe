//! Signal handling.
//!
//! For the gateway (`sluice proxy`, `sluice demo`): SIGTERM drains (stop accepting, let
//! sessions finish within the grace period); SIGINT does the same, and a second signal of
//! either kind closes everything at once.
//!
//! For `sluice control` and `sluice up`: signals are delivered as numbers on a channel, so
//! the main thread can wait for a signal and for its child process at the same time.

use std::sync::mpsc::{self, Receiver};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use sluice_proxy::ShutdownHandle;

/// Spawns a thread that turns signals into shutdown phases for `handle`.
pub fn forward_to(handle: ShutdownHandle) -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                if seen == 1 {
                    tracing::info!(
                        signal,
                        "shutting down: no new connections, sessions may finish"
                    );
                    handle.drain();
                } else {
                    tracing::warn!(signal, "second signal: closing all sessions now");
                    handle.stop();
                }
            }
        })?;
    Ok(())
}

/// Installs handlers for `signals` (their default actions no longer apply) and returns a
/// channel that receives each signal's number as it arrives.
pub fn channel(signals: &[libc::c_int]) -> anyhow::Result<Receiver<libc::c_int>> {
    let mut iter = Signals::new(signals)?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            for signal in iter.forever() {
                if tx.send(signal).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}
