//! SIGTERM drains (stop accepting, let sessions finish within the grace period); SIGINT
//! does the same, and a second signal of either kind closes everything at once.

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
