//! Cancel keys. Each session hands its client a key that Sluice made up, never the
//! backend's; a CancelRequest carrying that key is turned into a CancelRequest with the
//! backend's own key, sent to the backend that runs the session.
//!
//! A cancel arrives on a fresh connection that SO_REUSEPORT may give to any worker, so the
//! table is process-wide behind a mutex. It is touched at session start, session end and
//! on cancel only, never per statement, so the data path stays lock-free.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;

/// Where a cancel for one session must go.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    /// Backend address.
    pub backend: SocketAddr,
    /// Backend process ID.
    pub pid: u32,
    /// Backend secret key.
    pub secret: Bytes,
    /// Resource name, for logs.
    pub resource: String,
    /// Raised when a client's CancelRequest names this session: a statement the gateway
    /// holds for approval (never sent, so the backend's cancel cannot reach it) is
    /// withdrawn when it sees this.
    pub cancel_requested: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

struct Entry {
    secret: [u8; 4],
    target: CancelTarget,
}

fn table() -> &'static Mutex<HashMap<u32, Entry>> {
    static TABLE: OnceLock<Mutex<HashMap<u32, Entry>>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A registered key; unregisters itself when the session ends.
#[derive(Debug)]
pub struct CancelKey {
    pid: u32,
    secret: [u8; 4],
}

impl CancelKey {
    /// Registers a new random key for `target`.
    pub fn register(target: CancelTarget) -> CancelKey {
        let mut table = table()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            // Positive, non-zero, like a real PID, so clients that print it are not confused.
            let pid = rand::random::<u32>() & 0x7fff_ffff;
            if pid == 0 || table.contains_key(&pid) {
                continue;
            }
            let secret: [u8; 4] = rand::random();
            table.insert(pid, Entry { secret, target });
            return CancelKey { pid, secret };
        }
    }

    /// The process ID half, as sent in BackendKeyData.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The secret half.
    pub fn secret(&self) -> [u8; 4] {
        self.secret
    }
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        let mut table = table()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        table.remove(&self.pid);
    }
}

/// Looks up the backend target for a client's cancel key. The secret is compared in
/// constant time so a guesser learns nothing from timing.
pub fn lookup(pid: u32, secret: &[u8]) -> Option<CancelTarget> {
    let table = table()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let entry = table.get(&pid)?;
    if secret.len() != entry.secret.len() {
        return None;
    }
    let diff = entry
        .secret
        .iter()
        .zip(secret)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    (diff == 0).then(|| entry.target.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> CancelTarget {
        CancelTarget {
            backend: SocketAddr::from(([127, 0, 0, 1], 5432)),
            pid: 42,
            secret: Bytes::from_static(&[9, 9, 9, 9]),
            resource: "shop".into(),
            cancel_requested: Default::default(),
        }
    }

    #[test]
    fn a_key_maps_to_its_target_only_with_the_right_secret_and_only_while_alive() {
        let key = CancelKey::register(target());
        let found = lookup(key.pid(), &key.secret()).expect("registered");
        assert_eq!(found.pid, 42);
        let mut wrong = key.secret();
        wrong[0] ^= 1;
        assert!(lookup(key.pid(), &wrong).is_none());
        assert!(lookup(key.pid(), &key.secret()[..3]).is_none());
        let (pid, secret) = (key.pid(), key.secret());
        drop(key);
        assert!(lookup(pid, &secret).is_none());
    }

    #[test]
    fn keys_are_distinct() {
        let keys: Vec<_> = (0..100).map(|_| CancelKey::register(target())).collect();
        let mut pids: Vec<_> = keys.iter().map(CancelKey::pid).collect();
        pids.sort_unstable();
        pids.dedup();
        assert_eq!(pids.len(), 100);
    }
}
