//! What recording a session costs the writer thread, in bytes of frames per second.
//!
//! The workload is ~4 MiB of a realistic stream: 8 interleaved sessions, each running
//! simple queries (a ~60-byte client `Query` frame, a policy `Decision`) answered by 20
//! DataRow-like server frames of ~600 bytes (six text columns of business-like text from
//! a deterministic generator, so compression sees realistic, not repeated, data). Each
//! iteration creates a [`SegmentWriter`] in a fresh directory on disk (fsync off, 64 KiB
//! blocks), appends every record and seals the segment:
//!
//! - `recorder/zstd1`, `recorder/zstd3`: zstd at levels 1 and 3;
//! - `recorder/lz4`: lz4 block compression;
//! - `recorder/none`: no compression, the write path's (and the disk's) limit.
//!
//! Each codec first writes the workload once and checks that every record reads back,
//! and prints the compression ratio, so a writer that drops records fails the bench
//! instead of looking fast.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_bench::Lcg;
use sluice_recorder::{
    Codec, Decision, FsyncPolicy, Record, RecordKind, RecorderConfig, SegmentReader, SegmentWriter,
    Uuid, Verdict,
};

const TARGET_BYTES: usize = 4 << 20;
const SESSIONS: u64 = 8;
const ROWS_PER_QUERY: u64 = 20;

const NAMES: &[&str] = &[
    "Jane Doe",
    "Omar Haddad",
    "Li Wei",
    "Priya Patel",
    "Lukas Becker",
    "Amara Okafor",
];
const STREETS: &[&str] = &[
    "Market Street",
    "Rue de Rivoli",
    "Hauptstrasse",
    "Calle Mayor",
    "King's Road",
];
const CITIES: &[&str] = &["San Francisco", "Paris", "Berlin", "Madrid", "Lyon", "Oslo"];
const WORDS: &[&str] = &[
    "shipped",
    "pending",
    "invoice",
    "reviewed",
    "customer",
    "requested",
    "refund",
    "priority",
    "delivery",
    "warehouse",
    "backorder",
    "j***@example.com",
    "confirmed",
    "partial",
];

/// A DataRow of six text columns, about 600 bytes.
fn data_row(rng: &mut Lcg) -> Bytes {
    let mut note = String::new();
    while note.len() < 420 {
        note.push_str(rng.pick(WORDS));
        note.push(' ');
    }
    let columns = [
        format!("ORD-{:09}", rng.next() % 1_000_000_000),
        rng.pick(NAMES).to_string(),
        format!(
            "{} {}, {}",
            rng.next() % 400,
            rng.pick(STREETS),
            rng.pick(CITIES)
        ),
        format!("{}.{:02}", rng.next() % 10_000, rng.next() % 100),
        format!(
            "2025-{:02}-{:02} {:02}:{:02}:00",
            1 + rng.next() % 12,
            1 + rng.next() % 28,
            rng.next() % 24,
            rng.next() % 60
        ),
        note,
    ];
    let mut body = (columns.len() as u16).to_be_bytes().to_vec();
    for c in &columns {
        body.extend_from_slice(&(c.len() as i32).to_be_bytes());
        body.extend_from_slice(c.as_bytes());
    }
    let mut frame = vec![b'D'];
    frame.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Bytes::from(frame)
}

fn query(sql: &str) -> Bytes {
    let mut frame = vec![b'Q'];
    frame.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
    frame.extend_from_slice(sql.as_bytes());
    frame.push(0);
    Bytes::from(frame)
}

/// The records and the frame bytes they carry.
fn workload() -> (Vec<Record>, usize) {
    let mut rng = Lcg(42);
    let mut records = Vec::new();
    let mut bytes = 0;
    let mut t = 1_700_000_000_000_000u64;
    let mut q = 0u64;
    while bytes < TARGET_BYTES {
        let session =
            Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | u128::from(q % SESSIONS));
        let sql = format!(
            "select * from orders where customer_id = {} order by created_at",
            rng.next() % 100_000
        );
        let mut push = |kind: RecordKind, len: usize| {
            t += 3;
            records.push(Record {
                session,
                mono_us: t,
                wall_us: t,
                kind,
            });
            bytes += len;
        };
        push(
            RecordKind::Decision(Decision {
                statement: sql.clone(),
                class: "read".into(),
                verdict: Verdict::Allow,
                rule: Some("support-read".into()),
                reason: None,
            }),
            sql.len(),
        );
        let frame = query(&sql);
        push(RecordKind::Client(frame.clone()), frame.len());
        for _ in 0..ROWS_PER_QUERY {
            let row = data_row(&mut rng);
            push(RecordKind::Server(row.clone()), row.len());
        }
        q += 1;
    }
    (records, bytes)
}

fn config(codec: Codec) -> RecorderConfig {
    RecorderConfig {
        codec,
        fsync: FsyncPolicy::Off,
        ..RecorderConfig::default()
    }
}

/// Writes the workload into a new segment under `base` and seals it; returns its size.
fn write_all(base: &Path, codec: Codec, records: &[Record]) -> u64 {
    let dir = tempfile::tempdir_in(base).expect("scratch dir");
    let mut writer = SegmentWriter::create(dir.path(), 0, config(codec)).expect("create");
    for r in records {
        writer.append(r).expect("append");
    }
    writer.seal().expect("seal").bytes
}

fn recorder(c: &mut Criterion) {
    let (records, frame_bytes) = workload();
    // On disk (not tmpfs) when the target dir is: next to the build output.
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("bench dir");
    let codecs = [
        ("zstd1", Codec::Zstd { level: 1 }),
        ("zstd3", Codec::Zstd { level: 3 }),
        ("lz4", Codec::Lz4),
        ("none", Codec::None),
    ];
    for (name, codec) in codecs {
        let dir = tempfile::tempdir_in(base.path()).expect("check dir");
        let mut writer = SegmentWriter::create(dir.path(), 0, config(codec)).expect("create");
        for r in &records {
            writer.append(r).expect("append");
        }
        let sealed = writer.seal().expect("seal");
        let reader = SegmentReader::open(&sealed.path).expect("open");
        let read: usize = reader
            .blocks()
            .map(|b| b.expect("valid block").records.len())
            .sum();
        assert_eq!(read, records.len(), "{name}: every record reads back");
        eprintln!(
            "recorder/{name}: {} records, {frame_bytes} frame bytes -> {} bytes on disk ({:.1}x)",
            records.len(),
            sealed.bytes,
            frame_bytes as f64 / sealed.bytes as f64
        );
    }

    let mut g = c.benchmark_group("recorder");
    g.throughput(Throughput::Bytes(frame_bytes as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    for (name, codec) in codecs {
        g.bench_function(name, |b| {
            b.iter(|| black_box(write_all(base.path(), codec, &records)))
        });
    }
    g.finish();
}

criterion_group!(benches, recorder);
criterion_main!(benches);
