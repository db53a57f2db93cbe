//! `kill -9` at random moments: every record the child had flushed survives recovery.
//!
//! The test re-runs its own binary as the child (`CRASH_CHILD_DIR` set): it appends
//! records with small blocks and segments (so kills also land in rotations and seals),
//! calls `flush_block` every few records and prints `FLUSHED <n>` once that returns. The
//! parent kills it with SIGKILL after a random delay, recovers with
//! `SegmentWriter::create`, and checks that records `0..n` of that run are all there, in
//! order and intact, that nothing after them is garbled, and that `verify` stays clean.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sluice_recorder::*;
use uuid::Uuid;

const ITERATIONS: u64 = 100;
const ITERATIONS_PER_DIR: u64 = 10;
const SESSIONS: u64 = 4;

fn child_config() -> RecorderConfig {
    RecorderConfig {
        codec: Codec::Lz4,
        block_bytes: 2 << 10,
        segment_bytes: 48 << 10,
        // A process kill loses nothing the kernel accepted; fsync would only slow the
        // child down without changing what this test can observe.
        fsync: FsyncPolicy::Off,
        ..RecorderConfig::default()
    }
}

fn session_of(run: u64, s: u64) -> Uuid {
    Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0000 | u128::from(run) << 16 | u128::from(s),
    )
}

/// The payload of record `i` of `run`: checkable byte for byte after recovery.
fn payload(run: u64, i: u64) -> Bytes {
    let body = format!("run {run} record {i} {}", "r".repeat((i % 300) as usize));
    let mut frame = vec![b'D'];
    frame.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    frame.extend_from_slice(body.as_bytes());
    Bytes::from(frame)
}

fn child(dir: &Path, run: u64) {
    let mut writer = SegmentWriter::create(dir, 0, child_config()).expect("child create");
    let mut i = 0u64;
    loop {
        let record = Record {
            session: session_of(run, i % SESSIONS),
            mono_us: i,
            wall_us: i,
            kind: RecordKind::Server(payload(run, i)),
        };
        writer.append(&record).expect("append");
        i += 1;
        if i % 7 == 0 {
            writer.flush_block().expect("flush");
            println!("FLUSHED {i}");
        }
    }
}

#[test]
fn crash_child() {
    // Only does something when re-run by `kill_nine_at_random_moments`.
    if let Ok(dir) = std::env::var("CRASH_CHILD_DIR") {
        let run = std::env::var("CRASH_CHILD_RUN").unwrap().parse().unwrap();
        child(Path::new(&dir), run);
    }
}

struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn kill_nine_at_random_moments() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = XorShift(seed);
    let exe = std::env::current_exe().unwrap();
    let mut dir = tempfile::tempdir().unwrap();
    let mut recoveries = 0;
    let mut cut_total = 0;
    let started = Instant::now();
    for run in 0..ITERATIONS {
        if run % ITERATIONS_PER_DIR == 0 && run > 0 {
            let report = verify(dir.path(), None).unwrap();
            assert!(report.is_ok(), "seed {seed}: {:?}", report.problems);
            dir = tempfile::tempdir().unwrap();
        }
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env("CRASH_CHILD_DIR", dir.path())
            .env("CRASH_CHILD_RUN", run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(2_000 + rng.below(40_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let flushed = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| {
                l.strip_prefix("FLUSHED ")
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .max()
            .unwrap_or(0);

        let writer = SegmentWriter::create(dir.path(), 0, child_config())
            .unwrap_or_else(|e| panic!("seed {seed} run {run}: recovery failed: {e}"));
        if let Some(r) = writer.recovery() {
            recoveries += 1;
            cut_total += r.cut_bytes;
            assert!(r.bad_blocks.is_empty(), "seed {seed} run {run}: {r:?}");
        }
        writer.seal().unwrap();

        let archive = Archive::open(dir.path()).unwrap();
        assert!(
            archive.problems().is_empty(),
            "seed {seed} run {run}: {:?}",
            archive.problems()
        );
        let mut seen: BTreeMap<u64, Record> = BTreeMap::new();
        for s in 0..SESSIONS {
            let got = archive.records(session_of(run, s));
            assert!(
                got.problems.is_empty(),
                "seed {seed} run {run}: {:?}",
                got.problems
            );
            for r in got.records {
                assert_eq!(r.mono_us % SESSIONS, s);
                seen.insert(r.mono_us, r);
            }
        }
        // Every flushed record is back; what survived beyond them is a prefix too
        // (blocks are written whole, in order).
        let kept = seen.len() as u64;
        assert!(
            kept >= flushed,
            "seed {seed} run {run}: flushed {flushed}, recovered {kept}"
        );
        for (expected, (i, r)) in seen.iter().enumerate() {
            assert_eq!(
                *i, expected as u64,
                "seed {seed} run {run}: hole before record {i}"
            );
            assert_eq!(
                r.kind,
                RecordKind::Server(payload(run, *i)),
                "seed {seed} run {run}"
            );
        }
    }
    let report = verify(dir.path(), None).unwrap();
    assert!(report.is_ok(), "seed {seed}: {:?}", report.problems);
    eprintln!(
        "{ITERATIONS} kills, {recoveries} recoveries, {cut_total} torn bytes cut, {:?}",
        started.elapsed()
    );
    assert!(
        recoveries > ITERATIONS / 2,
        "most kills should land mid-segment"
    );
}
