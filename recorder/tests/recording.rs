//! Recording end to end on real files: codecs, sessions, rotation, recovery, tamper
//! evidence, retention, the writer thread and search.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sluice_recorder::*;
use uuid::Uuid;

fn session(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | n)
}

fn start(principal: &str, resource: &str) -> RecordKind {
    RecordKind::SessionStart(SessionStart {
        principal: principal.into(),
        groups: vec!["engineering".into()],
        resource: resource.into(),
        client_addr: "10.0.0.7:51234".into(),
        tls: Some(TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
        }),
        masking_profile: Some("support".into()),
    })
}

fn data_row(i: u64) -> Bytes {
    let body = format!(
        "order-{i:08}|Jane Doe|12 Market Street|San Francisco|{}",
        "x".repeat((i % 200) as usize)
    );
    let mut frame = vec![b'D'];
    frame.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    frame.extend_from_slice(body.as_bytes());
    Bytes::from(frame)
}

fn query(sql: &str) -> Bytes {
    let mut frame = vec![b'Q'];
    frame.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
    frame.extend_from_slice(sql.as_bytes());
    frame.push(0);
    Bytes::from(frame)
}

fn decision(sql: &str, class: &str, verdict: Verdict) -> RecordKind {
    RecordKind::Decision(Decision {
        statement: sql.into(),
        class: class.into(),
        verdict,
        rule: Some("default".into()),
        reason: None,
    })
}

fn end(statements: u64) -> RecordKind {
    RecordKind::SessionEnd(SessionEnd {
        reason: "client closed".into(),
        statements,
        bytes_in: 100,
        bytes_out: 5000,
        masked: BTreeMap::from([("email".into(), 3)]),
    })
}

fn rec(s: Uuid, t: u64, kind: RecordKind) -> Record {
    Record {
        session: s,
        mono_us: t,
        wall_us: 1_700_000_000_000_000 + t,
        kind,
    }
}

/// A small, realistic session: start, a few statements with rows, end.
fn session_records(s: Uuid, principal: &str, t0: u64, rows: u64) -> Vec<Record> {
    let mut out = vec![rec(s, t0, start(principal, "shop"))];
    let mut t = t0;
    for q in 0..3 {
        t += 10;
        let sql = format!("select * from orders where id > {q}");
        out.push(rec(s, t, decision(&sql, "read", Verdict::Allow)));
        out.push(rec(s, t + 1, RecordKind::Client(query(&sql))));
        for r in 0..rows {
            out.push(rec(s, t + 2 + r, RecordKind::Server(data_row(r))));
        }
        t += rows + 2;
    }
    out.push(rec(s, t + 1, end(3)));
    out
}

fn config(codec: Codec) -> RecorderConfig {
    RecorderConfig {
        codec,
        block_bytes: 4 << 10,
        fsync: FsyncPolicy::Off,
        ..RecorderConfig::default()
    }
}

fn all_records(path: &Path) -> Vec<Record> {
    let reader = SegmentReader::open(path).expect("open segment");
    reader
        .blocks()
        .flat_map(|b| b.expect("valid block").records)
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    out.sort();
    out
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

#[test]
fn roundtrip_every_codec() {
    for codec in [
        Codec::None,
        Codec::Zstd { level: 1 },
        Codec::Zstd { level: 3 },
        Codec::Lz4,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::create(dir.path(), 3, config(codec)).unwrap();
        assert!(writer.recovery().is_none());
        let mut expected = session_records(session(1), "alice", 0, 50);
        expected.push(rec(
            session(1),
            9_999,
            RecordKind::Approval(Approval {
                request_id: "req-1".into(),
                approver: Some("carol".into()),
                outcome: ApprovalOutcome::Approved,
            }),
        ));
        for r in &expected {
            writer.append(r).unwrap();
        }
        let sealed = writer.seal().unwrap();
        assert_eq!(sealed.path.file_name().unwrap(), "w003-0000000000.seg");
        assert_eq!(all_records(&sealed.path), expected, "{codec:?}");
        let reader = SegmentReader::open(&sealed.path).unwrap();
        let footer = reader.read_footer().unwrap().expect("sealed");
        assert_eq!(footer.chain_hash, sealed.chain_hash);
        let s = &footer.index.sessions[0];
        assert_eq!(s.start.as_ref().unwrap().principal, "alice");
        assert_eq!(s.end.as_ref().unwrap().statements, 3);
        assert_eq!(s.records, expected.len() as u64);
        assert!(footer.index.blocks.len() > 1, "{codec:?}: several blocks");
        assert!(verify(dir.path(), None).unwrap().is_ok());
    }
}

#[test]
fn interleaved_sessions_come_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = SegmentWriter::create(dir.path(), 0, config(Codec::Lz4)).unwrap();
    let streams: Vec<Vec<Record>> = (0..4)
        .map(|i| session_records(session(i), &format!("user{i}"), i as u64, 40))
        .collect();
    // Round-robin interleave, as a worker serving four sessions would.
    let longest = streams.iter().map(Vec::len).max().unwrap();
    for k in 0..longest {
        for s in &streams {
            if let Some(r) = s.get(k) {
                writer.append(r).unwrap();
            }
        }
    }
    writer.seal().unwrap();
    let archive = Archive::open(dir.path()).unwrap();
    assert!(archive.problems().is_empty());
    for (i, stream) in streams.iter().enumerate() {
        let got = archive.records(session(i as u128));
        assert!(got.problems.is_empty());
        assert_eq!(&got.records, stream, "session {i}");
    }
    let listed = archive.sessions(&SessionFilter::default());
    assert_eq!(listed.len(), 4);
    let alice = archive.sessions(&SessionFilter {
        principal: Some("user2".into()),
        ..SessionFilter::default()
    });
    assert_eq!(alice.len(), 1);
    let s = &alice[0];
    assert_eq!(s.session, session(2));
    assert_eq!(s.resource.as_deref(), Some("shop"));
    assert!(s.ended);
    assert_eq!(s.end_reason.as_deref(), Some("client closed"));
    assert_eq!((s.statements, s.bytes_in, s.bytes_out), (3, 100, 5000));
    assert!(s.duration > Duration::ZERO);
}

#[test]
fn rotation_by_size_keeps_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    let cfg = RecorderConfig {
        segment_bytes: 16 << 10,
        signing_key: Some(key.clone()),
        ..config(Codec::None)
    };
    let mut writer = SegmentWriter::create(dir.path(), 1, cfg.clone()).unwrap();
    let records = session_records(session(9), "bob", 0, 400);
    for r in &records {
        writer.append(r).unwrap();
    }
    writer.seal().unwrap();
    let files = segments(dir.path());
    assert!(files.len() >= 4, "rotated into {} segments", files.len());
    let mut prev = [0u8; 32];
    for (seq, path) in files.iter().enumerate() {
        let reader = SegmentReader::open(path).unwrap();
        assert_eq!(reader.header().seq, seq as u64);
        assert_eq!(
            reader.header().prev_hash,
            prev,
            "segment {seq} links to its predecessor"
        );
        assert!(
            reader.len() < (16 << 10) + (8 << 10),
            "segment {seq} stays near the limit"
        );
        prev = reader.read_footer().unwrap().unwrap().chain_hash;
    }
    let report = verify(dir.path(), Some(&key.verifying_key())).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.records, records.len() as u64);
    let archive = Archive::open(dir.path()).unwrap();
    assert_eq!(archive.records(session(9)).records, records);
    // A different key does not verify.
    let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
    let report = verify(dir.path(), Some(&other)).unwrap();
    assert_eq!(report.problems.len(), files.len());
    assert!(report.problems[0].what.contains("signature"));

    // A restart continues the chain with the next seq.
    let writer = SegmentWriter::create(dir.path(), 1, cfg).unwrap();
    assert_eq!(writer.seq(), files.len() as u64);
    writer.seal().unwrap();
    assert!(verify(dir.path(), Some(&key.verifying_key()))
        .unwrap()
        .is_ok());
}

#[test]
fn rotation_by_age_only_with_records() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RecorderConfig {
        segment_age: Duration::from_secs(60),
        ..config(Codec::Lz4)
    };
    let mut writer = SegmentWriter::create(dir.path(), 0, cfg).unwrap();
    let later = SystemTime::now() + Duration::from_secs(120);
    assert!(
        !writer.rotate_if_due(later).unwrap(),
        "an empty segment is not rotated"
    );
    writer.append(&rec(session(1), 1, start("a", "b"))).unwrap();
    assert!(!writer.rotate_if_due(SystemTime::now()).unwrap());
    assert!(writer.rotate_if_due(later).unwrap());
    assert_eq!(writer.seq(), 1);
    writer.seal().unwrap();
    assert!(verify(dir.path(), None).unwrap().is_ok());
}

#[test]
fn torn_tail_is_cut_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer =
        SegmentWriter::create(dir.path(), 2, config(Codec::Zstd { level: 1 })).unwrap();
    let records = session_records(session(5), "carol", 0, 100);
    for r in &records {
        writer.append(r).unwrap();
    }
    writer.flush_block().unwrap();
    let path = writer.path().to_path_buf();
    let good_len = fs::metadata(&path).unwrap().len();
    let blocks = writer.blocks_in_segment() as u64;
    // The process dies mid-way through writing another block.
    writer
        .append(&rec(session(5), 99_999, RecordKind::Server(data_row(7))))
        .unwrap();
    writer.flush_block().unwrap();
    drop(writer);
    let full_len = fs::metadata(&path).unwrap().len();
    let torn_len = good_len + (full_len - good_len) / 2;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(torn_len)
        .unwrap();
    assert!(
        verify(dir.path(), None).unwrap().is_ok(),
        "a live torn tail is not tampering"
    );

    let writer = SegmentWriter::create(dir.path(), 2, config(Codec::Zstd { level: 1 })).unwrap();
    let recovery = writer.recovery().expect("recovered").clone();
    assert_eq!(recovery.segment, path);
    assert_eq!(recovery.kept_blocks, blocks);
    assert_eq!(recovery.kept_records, records.len() as u64);
    assert_eq!(recovery.cut_bytes, torn_len - good_len);
    assert!(recovery.bad_blocks.is_empty());
    assert_eq!(writer.seq(), 1);
    writer.seal().unwrap();
    assert_eq!(all_records(&path), records);
    let report = verify(dir.path(), None).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.sealed, 2);
}

#[test]
fn empty_file_from_a_crash_at_creation_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    SegmentWriter::create(dir.path(), 0, config(Codec::Lz4))
        .unwrap()
        .seal()
        .unwrap();
    fs::write(dir.path().join("w000-0000000001.seg"), b"SLC").unwrap();
    let writer = SegmentWriter::create(dir.path(), 0, config(Codec::Lz4)).unwrap();
    assert!(writer.recovery().unwrap().removed_empty);
    assert_eq!(writer.seq(), 1);
    writer.seal().unwrap();
    assert!(verify(dir.path(), None).unwrap().is_ok());
}

/// Three sealed segments of worker 0 with a few blocks each.
fn three_segments(dir: &Path) -> Vec<PathBuf> {
    let cfg = config(Codec::Lz4);
    for i in 0..3 {
        let mut writer = SegmentWriter::create(dir, 0, cfg.clone()).unwrap();
        for r in session_records(session(i), "dave", i as u64 * 1000, 60) {
            writer.append(&r).unwrap();
        }
        writer.seal().unwrap();
    }
    let files = segments(dir);
    assert_eq!(files.len(), 3);
    files
}

#[test]
fn verify_detects_a_flipped_byte_in_a_block() {
    let dir = tempfile::tempdir().unwrap();
    let files = three_segments(dir.path());
    assert!(verify(dir.path(), None).unwrap().is_ok());
    // Inside the first block's payload of the middle segment.
    let offset = 68 + 40 + 10;
    flip_byte(&files[1], offset);
    let report = verify(dir.path(), None).unwrap();
    assert!(!report.is_ok());
    let block = report
        .problems
        .iter()
        .find(|p| p.what.contains("checksum"))
        .expect("block checksum problem");
    assert_eq!(block.segment, files[1]);
    assert_eq!(block.offset, Some(68));
    assert!(report
        .problems
        .iter()
        .any(|p| p.what.contains("hash mismatch")));
    // The reader skips the bad block and keeps reading the rest.
    let reader = SegmentReader::open(&files[1]).unwrap();
    let items: Vec<_> = reader.blocks().collect();
    assert!(items[0].is_err());
    assert!(items[1..].iter().all(|b| b.is_ok()));
    let archive = Archive::open(dir.path()).unwrap();
    let got = archive.records(session(1));
    assert_eq!(got.problems.len(), 1);
    assert!(!got.records.is_empty());
}

#[test]
fn verify_detects_a_flipped_byte_in_a_footer() {
    let dir = tempfile::tempdir().unwrap();
    let files = three_segments(dir.path());
    let reader = SegmentReader::open(&files[0]).unwrap();
    let footer_at = reader.blocks_end();
    drop(reader);
    flip_byte(&files[0], footer_at + 20);
    let report = verify(dir.path(), None).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.segment == files[0] && p.what.contains("footer")),
        "{:?}",
        report.problems
    );
}

#[test]
fn verify_detects_a_recomputed_hash_through_the_chain() {
    // An attacker who edits a block and rewrites its footer (new CRC, new hash) still
    // breaks the next segment's link.
    let dir = tempfile::tempdir().unwrap();
    let files = three_segments(dir.path());
    let records = all_records(&files[0]);
    fs::remove_file(&files[0]).unwrap();
    let mut forged: Vec<Record> = records;
    forged.truncate(5);
    let mut writer = SegmentWriter::create(dir.path(), 0, config(Codec::Lz4)).unwrap();
    // Writes seq 3; rename it over seq 0 after sealing: header seq mismatch + chain break.
    for r in &forged {
        writer.append(r).unwrap();
    }
    let sealed = writer.seal().unwrap();
    fs::rename(&sealed.path, &files[0]).unwrap();
    let report = verify(dir.path(), None).unwrap();
    assert!(report
        .problems
        .iter()
        .any(|p| p.segment == files[1] && p.what.contains("chain broken")));
}

#[test]
fn verify_tells_removal_from_retention() {
    let dir = tempfile::tempdir().unwrap();
    let files = three_segments(dir.path());
    fs::remove_file(&files[1]).unwrap();
    let report = verify(dir.path(), None).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.what.contains("segment missing") && p.what.contains("seq 1")),
        "{:?}",
        report.problems
    );

    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    // Everything older than now: the two oldest go, the newest stays.
    let removed =
        apply_retention(dir.path(), Some(Duration::ZERO), None, SystemTime::now()).unwrap();
    assert_eq!(
        removed.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert!(removed.iter().all(|r| r.reason == "age"));
    let report = verify(dir.path(), None).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.removed_by_retention.len(), 2);
    let log = fs::read_to_string(dir.path().join(RETENTION_LOG)).unwrap();
    assert!(log.contains("w000-0000000000.seg") && log.contains("w000-0000000001.seg"));

    // By size: remove until under the limit.
    let dir = tempfile::tempdir().unwrap();
    let files = three_segments(dir.path());
    let last = fs::metadata(&files[2]).unwrap().len();
    let middle = fs::metadata(&files[1]).unwrap().len();
    let removed =
        apply_retention(dir.path(), None, Some(last + middle), SystemTime::now()).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].reason, "bytes");
    assert!(verify(dir.path(), None).unwrap().is_ok());
}

#[test]
fn reader_refuses_garbage_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w000-0000000000.seg");
    for bytes in [&b""[..], b"SLCREC", &[0u8; 200][..]] {
        fs::write(&path, bytes).unwrap();
        assert!(SegmentReader::open(&path).is_err());
    }
    // A valid segment with every byte after the header flipped in turn.
    let dir2 = tempfile::tempdir().unwrap();
    let mut writer =
        SegmentWriter::create(dir2.path(), 0, config(Codec::Zstd { level: 1 })).unwrap();
    for r in session_records(session(1), "e", 0, 3) {
        writer.append(&r).unwrap();
    }
    let sealed = writer.seal().unwrap();
    let original = fs::read(&sealed.path).unwrap();
    for i in (0..original.len()).step_by(3) {
        let mut bytes = original.clone();
        bytes[i] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        if let Ok(reader) = SegmentReader::open(&path) {
            let _ = reader.read_footer();
            let _ = reader.blocks().count();
        }
    }
}

#[test]
fn search_uses_indexes_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RecorderConfig {
        segment_bytes: 8 << 10,
        // Uncompressed, so that three sessions span several segments.
        ..config(Codec::None)
    };
    let mut writer = SegmentWriter::create(dir.path(), 0, cfg).unwrap();
    for (i, who) in ["alice", "bob", "alice"].iter().enumerate() {
        let s = session(i as u128);
        let t0 = i as u64 * 1_000_000;
        writer.append(&rec(s, t0, start(who, "shop"))).unwrap();
        writer
            .append(&rec(
                s,
                t0 + 1,
                decision("select * from customers", "read", Verdict::Allow),
            ))
            .unwrap();
        for r in 0..60 {
            writer
                .append(&rec(s, t0 + 2 + r, RecordKind::Server(data_row(r))))
                .unwrap();
        }
        writer
            .append(&rec(
                s,
                t0 + 100,
                decision("drop table orders", "ddl", Verdict::Deny),
            ))
            .unwrap();
        for r in 0..60 {
            writer
                .append(&rec(s, t0 + 200 + r, RecordKind::Server(data_row(r))))
                .unwrap();
        }
        writer.append(&rec(s, t0 + 300, end(2))).unwrap();
    }
    writer.seal().unwrap();
    let archive = Archive::open(dir.path()).unwrap();
    let total_blocks: u64 = segments(dir.path())
        .iter()
        .map(|p| SegmentReader::open(p).unwrap().blocks().count() as u64)
        .sum();

    let all = archive.search(&SearchQuery::default());
    assert_eq!(all.hits.len(), 6);
    assert!(
        all.blocks_read < total_blocks,
        "{} of {total_blocks}",
        all.blocks_read
    );

    let denied = archive.search(&SearchQuery {
        principal: Some("alice".into()),
        verdict: Some(Verdict::Deny),
        ..SearchQuery::default()
    });
    assert_eq!(denied.hits.len(), 2);
    assert!(denied
        .hits
        .iter()
        .all(|h| h.decision.class == "ddl" && h.principal.as_deref() == Some("alice")));

    let regex = archive.search(&SearchQuery {
        statement: Some(Regex::new(r"(?i)\bcustomers\b").unwrap()),
        class: Some("read".into()),
        ..SearchQuery::default()
    });
    assert_eq!(regex.hits.len(), 3);

    // Only bob's session is in this time range: the other segments are skipped unread.
    let base = 1_700_000_000_000_000;
    let ranged = archive.search(&SearchQuery {
        from_wall_us: Some(base + 1_000_000),
        to_wall_us: Some(base + 1_000_150),
        ..SearchQuery::default()
    });
    assert_eq!(ranged.hits.len(), 2);
    assert!(ranged
        .hits
        .iter()
        .all(|h| h.principal.as_deref() == Some("bob")));
    assert!(ranged.segments_skipped > 0);
    assert!(ranged.blocks_read <= 3);
}

#[test]
fn writer_thread_appends_flushes_and_seals() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RecorderConfig {
        flush_interval: Duration::from_millis(50),
        ..config(Codec::Lz4)
    };
    let (handle, join) = Recorder::spawn(dir.path(), 4, cfg, 1 << 20, Overflow::Block).unwrap();
    let records = session_records(session(1), "alice", 0, 500);
    for r in &records {
        handle.append(r.clone()).unwrap();
    }
    handle.flush().unwrap();
    let live = segments(dir.path());
    assert_eq!(
        all_records(&live[0]),
        records,
        "flush wrote everything queued"
    );

    // A quiet session's record reaches the file without an explicit flush.
    let late = rec(session(2), 1, start("bob", "shop"));
    handle.append(late.clone()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while all_records(&live[0]).last() != Some(&late) {
        assert!(
            std::time::Instant::now() < deadline,
            "periodic flush never happened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = handle.stats();
    assert_eq!(stats.writer.records, records.len() as u64 + 1);
    assert!(stats.writer.blocks > 1 && stats.writer.bytes_out > 0 && stats.flushes > 0);

    let sealed = handle.shutdown().unwrap().expect("sealed");
    assert!(matches!(handle.append(late), Err(RecordError::Closed)));
    join.join().unwrap().unwrap();
    assert!(SegmentReader::open(&sealed.path)
        .unwrap()
        .read_footer()
        .unwrap()
        .is_some());
    assert!(verify(dir.path(), None).unwrap().is_ok());
}

#[test]
fn fail_closed_refuses_when_full_and_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RecorderConfig {
        fsync: FsyncPolicy::EveryBlock,
        block_bytes: 1024,
        ..config(Codec::Zstd { level: 3 })
    };
    let (handle, join) = Recorder::spawn(dir.path(), 0, cfg, 4096, Overflow::FailClosed).unwrap();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..5000 {
        let r = rec(session(1), i, RecordKind::Server(data_row(i)));
        match handle.append(r.clone()) {
            Ok(()) => accepted.push(r),
            Err(RecordError::Full { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        refused > 0,
        "a 4 KiB queue in front of fsync-per-block fills up"
    );
    assert_eq!(handle.stats().queue_full, refused);
    handle.shutdown().unwrap();
    join.join().unwrap().unwrap();
    let archive = Archive::open(dir.path()).unwrap();
    assert_eq!(archive.records(session(1)).records, accepted);
}

#[test]
fn blocking_overflow_waits_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, join) =
        Recorder::spawn(dir.path(), 0, config(Codec::None), 2048, Overflow::Block).unwrap();
    let producers: Vec<_> = (0..3u128)
        .map(|p| {
            let handle = handle.clone();
            std::thread::spawn(move || {
                for i in 0..2000 {
                    handle
                        .append(rec(session(p), i, RecordKind::Server(data_row(i))))
                        .unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    handle.shutdown().unwrap();
    let stats = join.join().unwrap().unwrap();
    assert_eq!(stats.records, 6000);
    assert!(handle.stats().queue_full > 0);
    let archive = Archive::open(dir.path()).unwrap();
    for p in 0..3 {
        let got = archive.records(session(p)).records;
        assert_eq!(got.len(), 2000);
        assert!(got.windows(2).all(|w| w[0].mono_us < w[1].mono_us));
    }
}

#[test]
fn on_seal_runs_with_the_segment_path() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = tempfile::tempdir().unwrap();
    let cfg = RecorderConfig {
        on_seal: Some(format!("cp -t '{}'", shipped.path().display())),
        ..config(Codec::Lz4)
    };
    let mut writer = SegmentWriter::create(dir.path(), 0, cfg).unwrap();
    writer.append(&rec(session(1), 1, start("a", "b"))).unwrap();
    writer.seal().unwrap();
    let copy = shipped.path().join("w000-0000000000.seg");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !copy.exists() || fs::metadata(&copy).unwrap().len() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "on_seal did not ship the segment"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn unknown_trailing_garbage_on_a_live_segment_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = SegmentWriter::create(dir.path(), 0, config(Codec::Lz4)).unwrap();
    for r in session_records(session(1), "a", 0, 10) {
        writer.append(&r).unwrap();
    }
    writer.flush_block().unwrap();
    let path = writer.path().to_path_buf();
    drop(writer);
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"SLBK garbage")
        .unwrap();
    let writer = SegmentWriter::create(dir.path(), 0, config(Codec::Lz4)).unwrap();
    assert_eq!(writer.recovery().unwrap().cut_bytes, 12);
    writer.seal().unwrap();
    assert!(verify(dir.path(), None).unwrap().is_ok());
}

#[test]
fn a_second_writer_for_the_same_worker_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = SegmentWriter::create(dir.path(), 3, RecorderConfig::default()).expect("first");
    let second = SegmentWriter::create(dir.path(), 3, RecorderConfig::default());
    let err = second.err().expect("refused while the first lives");
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    let err = err.to_string();
    assert!(
        err.contains("another process is recording as worker 3"),
        "{err}"
    );
    // Another worker number is fine; and the lock goes with the writer.
    SegmentWriter::create(dir.path(), 4, RecorderConfig::default()).expect("other worker");
    first.seal().expect("seal");
    SegmentWriter::create(dir.path(), 3, RecorderConfig::default()).expect("after the first");
}
