//! The snapshot channel with real memfds, real Unix sockets in a temp dir, and a real child
//! process.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_control::snapshot::{
    encode_envelope, Publisher, SnapshotError, SnapshotServer, Subscriber, ENVELOPE_HEADER_LEN,
};

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn server() -> (tempfile::TempDir, SnapshotServer) {
    let dir = tempfile::tempdir().unwrap();
    let server =
        SnapshotServer::bind(dir.path().join("snap.sock"), Publisher::new().unwrap()).unwrap();
    (dir, server)
}

/// Waits (bounded) until the server has registered `n` subscribers, so publishes reach them.
fn wait_subscribers(server: &SnapshotServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.publisher().subscriber_count() < n {
        assert!(Instant::now() < deadline, "subscriber never registered");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn publish_then_subscribe_reads_the_payload() {
    let (_dir, mut server) = server();
    let p = server.publish(b"policy v1", t(0)).unwrap();
    assert_eq!(p.generation, 1);
    let sub = Subscriber::connect(server.path()).unwrap();
    assert_eq!(sub.current_generation(), 1);
    let snap = sub.current().expect("current payload loaded on connect");
    assert_eq!(snap.payload(), b"policy v1");
    assert_eq!(snap.generation(), 1);
    assert_eq!(snap.published_at(), t(0));
    assert!(!sub.needs_refresh());
}

#[test]
fn subscribe_before_first_publish() {
    let (_dir, mut server) = server();
    let mut sub = Subscriber::connect(server.path()).unwrap();
    assert_eq!(sub.current_generation(), 0);
    assert!(sub.current().is_none());
    assert!(sub.refresh().unwrap().is_none());
    assert!(
        !sub.is_fresh(t(0), Duration::from_secs(60)),
        "no snapshot is never fresh"
    );
    wait_subscribers(&server, 1);
    server.publish(b"first", t(1)).unwrap();
    assert!(sub.needs_refresh());
    let snap = sub.refresh().unwrap().expect("new generation");
    assert_eq!(snap.payload(), b"first");
}

#[test]
fn hundred_generations_are_monotonic_and_old_mappings_stay_valid() {
    let (_dir, mut server) = server();
    server.publish(b"gen 1", t(0)).unwrap();
    let mut sub = Subscriber::connect(server.path()).unwrap();
    wait_subscribers(&server, 1);
    let first: Arc<_> = Arc::clone(sub.current().unwrap());
    let mut last_gen = sub.current_generation();
    for i in 2..=100u64 {
        let payload = format!("gen {i}").repeat(i as usize);
        let p = server.publish(payload.as_bytes(), t(i)).unwrap();
        assert_eq!(p.generation, i);
        assert_eq!(p.delivered, 1);
        let g = sub.current_generation();
        assert!(g > last_gen, "generation went from {last_gen} to {g}");
        last_gen = g;
        let snap = sub.refresh().unwrap().expect("a new generation each time");
        assert_eq!(snap.generation(), i);
        assert_eq!(snap.payload(), payload.as_bytes());
    }
    assert_eq!(
        sub.current().unwrap().payload(),
        "gen 100".repeat(100).as_bytes()
    );
    // The Arc taken at generation 1 still reads generation 1's bytes.
    assert_eq!(first.generation(), 1);
    assert_eq!(first.payload(), b"gen 1");
}

#[test]
fn a_subscriber_that_skips_generations_gets_the_newest() {
    let (_dir, mut server) = server();
    let mut sub = Subscriber::connect(server.path()).unwrap();
    wait_subscribers(&server, 1);
    for i in 1..=20u64 {
        server.publish(format!("p{i}").as_bytes(), t(i)).unwrap();
    }
    let snap = sub.refresh().unwrap().unwrap();
    assert_eq!(snap.generation(), 20);
    assert_eq!(snap.payload(), b"p20");
    assert!(sub.refresh().unwrap().is_none());
}

#[test]
fn a_lagging_subscriber_is_dropped_not_waited_for_and_reconnects() {
    let (_dir, mut server) = server();
    let mut sub = Subscriber::connect(server.path()).unwrap();
    wait_subscribers(&server, 1);
    // Never drain: eventually the socket is full and control drops the subscriber instead of
    // blocking. Small payloads, so this is quick.
    let mut dropped_at = None;
    for i in 1..=5000u64 {
        let p = server.publish(b"x", t(i)).unwrap();
        if p.dropped == 1 {
            dropped_at = Some(i);
            break;
        }
    }
    let dropped_at = dropped_at.expect("a subscriber that never drains is eventually dropped");
    // What was queued before the drop is still valid; the newest announced one is not reachable.
    let err = loop {
        match sub.refresh() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("refresh hid a disconnect"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, SnapshotError::Disconnected { announced, .. } if announced == dropped_at),
        "{err}"
    );
    assert!(!sub.is_connected());
    let sub2 = Subscriber::connect(server.path()).unwrap();
    assert_eq!(sub2.current().unwrap().generation(), dropped_at);
}

#[test]
fn payload_memfd_is_really_sealed() {
    let (_dir, mut server) = server();
    server.publish(b"immutable", t(0)).unwrap();
    let sub = Subscriber::connect(server.path()).unwrap();
    let snap = sub.current().unwrap();
    let fd = snap.as_fd().try_clone_to_owned().unwrap();
    // Write through the fd (reopened writable through /proc so O_RDONLY is not the reason).
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap();
    let err = f.write_all(b"X").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let err = f.set_len(1).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    // A writable shared mapping is refused too.
    // SAFETY: mapping a file we own; the result is only compared with MAP_FAILED and unmapped
    // if the kernel unexpectedly allowed it.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    let errno = std::io::Error::last_os_error().raw_os_error();
    if ptr != libc::MAP_FAILED {
        // SAFETY: unmapping the mapping just created.
        unsafe { libc::munmap(ptr, 4096) };
        panic!("a writable shared mapping of a sealed payload was allowed");
    }
    assert_eq!(errno, Some(libc::EPERM));
    assert_eq!(snap.payload(), b"immutable");
}

#[test]
fn corrupt_snapshot_is_refused_and_the_previous_one_kept() {
    let (_dir, mut server) = server();
    server.publish(b"good", t(0)).unwrap();
    let mut sub = Subscriber::connect(server.path()).unwrap();
    wait_subscribers(&server, 1);
    let gen = server.publisher().next_generation();
    let mut env = encode_envelope(gen, 1, b"evil payload");
    *env.last_mut().unwrap() ^= 0x40;
    server
        .publisher_mut()
        .publish_raw_envelope(&env, t(1))
        .unwrap();
    assert!(sub.needs_refresh());
    let err = sub.refresh().unwrap_err();
    assert!(
        matches!(err, SnapshotError::ChecksumMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("checksum"), "{err}");
    assert_eq!(sub.current().unwrap().payload(), b"good");
    assert_eq!(sub.loaded_generation(), 1);
    assert!(sub.last_error().unwrap().contains("checksum"));
    // Refused once, not re-tried on every statement.
    assert!(!sub.needs_refresh());
    assert!(sub.refresh().unwrap().is_none());
    // The next good generation is accepted.
    server.publish(b"good again", t(2)).unwrap();
    assert_eq!(sub.refresh().unwrap().unwrap().payload(), b"good again");
    assert!(sub.last_error().is_none());
}

#[test]
fn wrong_version_is_refused_naming_both_versions() {
    let (_dir, mut server) = server();
    server.publish(b"v1 payload", t(0)).unwrap();
    let mut sub = Subscriber::connect(server.path()).unwrap();
    wait_subscribers(&server, 1);
    let gen = server.publisher().next_generation();
    let mut env = encode_envelope(gen, 1, b"from the future");
    env[8..12].copy_from_slice(&7u32.to_le_bytes());
    server
        .publisher_mut()
        .publish_raw_envelope(&env, t(1))
        .unwrap();
    let err = sub.refresh().unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            SnapshotError::WrongVersion {
                found: 7,
                supported: 1
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("version 7") && msg.contains("version 1"),
        "{msg}"
    );
    assert_eq!(sub.current().unwrap().payload(), b"v1 payload");
}

#[test]
fn envelope_generation_must_match_the_announced_one() {
    let (_dir, mut server) = server();
    server.publish(b"a", t(0)).unwrap();
    let mut sub = Subscriber::connect(server.path()).unwrap();
    wait_subscribers(&server, 1);
    // A valid envelope, but for an old generation (a replay).
    let env = encode_envelope(1, 1, b"replayed");
    server
        .publisher_mut()
        .publish_raw_envelope(&env, t(1))
        .unwrap();
    let err = sub.refresh().unwrap_err();
    assert!(matches!(err, SnapshotError::Mismatch(_)), "{err}");
    assert_eq!(sub.current().unwrap().payload(), b"a");
}

#[test]
fn control_death_keeps_the_last_snapshot_until_max_age() {
    let (_dir, mut server) = server();
    server.publish(b"last words", t(100)).unwrap();
    let mut sub = Subscriber::connect(server.path()).unwrap();
    let held = Arc::clone(sub.current().unwrap());
    server.heartbeat(t(110));
    drop(server); // control dies
    assert!(sub.refresh().unwrap().is_none(), "nothing new, no error");
    assert_eq!(sub.current().unwrap().payload(), b"last words");
    assert_eq!(held.payload(), b"last words");
    let max_age = Duration::from_secs(30);
    assert_eq!(sub.age(t(115)), Some(Duration::from_secs(5)));
    assert!(sub.is_fresh(t(115), max_age));
    assert!(sub.is_fresh(t(140), max_age));
    assert!(!sub.is_fresh(t(141), max_age));
    // A clock that steps backwards does not make the snapshot stale.
    assert!(sub.is_fresh(t(0), max_age));
}

#[test]
fn heartbeat_extends_freshness_without_a_new_generation() {
    let (_dir, mut server) = server();
    server.publish(b"p", t(0)).unwrap();
    let sub = Subscriber::connect(server.path()).unwrap();
    let max_age = Duration::from_secs(10);
    assert!(!sub.is_fresh(t(20), max_age));
    server.heartbeat(t(15));
    assert_eq!(sub.current_generation(), 1);
    assert!(!sub.needs_refresh());
    assert!(sub.is_fresh(t(20), max_age));
}

#[test]
fn restarted_control_replaces_a_stale_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.sock");
    // A socket file nobody listens on (as a SIGKILLed control leaves behind).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut server = SnapshotServer::bind(&path, Publisher::new().unwrap()).unwrap();
    server.publish(b"back", t(0)).unwrap();
    let sub = Subscriber::connect(&path).unwrap();
    assert_eq!(sub.current().unwrap().payload(), b"back");
    // A live server is not displaced.
    assert!(SnapshotServer::bind(&path, Publisher::new().unwrap()).is_err());
}

const CHILD_ENV: &str = "SLUICE_SNAPSHOT_CHILD_SOCKET";

/// Child half of `cross_process_subscriber_sees_publishes`: a no-op unless the env var is set.
#[test]
fn child_subscriber() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut sub = Subscriber::connect(&path).unwrap();
    let mut out = std::io::stdout().lock();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut report = |s: &Subscriber| {
        let snap = s.current().unwrap();
        writeln!(
            out,
            "SEEN {} {}",
            snap.generation(),
            String::from_utf8_lossy(snap.payload())
        )
        .unwrap();
        out.flush().unwrap();
        snap.payload() == b"final"
    };
    if sub.current().is_some() && report(&sub) {
        return;
    }
    loop {
        assert!(
            Instant::now() < deadline,
            "child never saw the final payload"
        );
        if sub.needs_refresh() && sub.refresh().unwrap().is_some() && report(&sub) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn cross_process_subscriber_sees_publishes() {
    let (_dir, mut server) = server();
    server.publish(b"hello from control", t(0)).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_subscriber",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, server.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_seen = || loop {
        let line = lines.next().expect("child output ended early").unwrap();
        // libtest may print "test child_subscriber ... " on the same line first.
        if let Some(at) = line.find("SEEN ") {
            return line[at + 5..].to_string();
        }
    };
    assert_eq!(next_seen(), "1 hello from control");
    wait_subscribers(&server, 1);
    server.publish(b"final", t(1)).unwrap();
    assert_eq!(next_seen(), "2 final");
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
}

#[test]
fn payload_is_zero_copy_view_of_the_mapping() {
    let (_dir, mut server) = server();
    let big = vec![0xabu8; 64 * 1024];
    server.publish(&big, t(0)).unwrap();
    let sub = Subscriber::connect(server.path()).unwrap();
    let snap = sub.current().unwrap();
    assert_eq!(snap.payload().len(), big.len());
    assert_eq!(snap.payload(), &big[..]);
    // The payload starts right after the envelope header in the same mapping (page-aligned).
    assert_eq!(
        (snap.payload().as_ptr() as usize - ENVELOPE_HEADER_LEN) % 4096,
        0
    );
}
