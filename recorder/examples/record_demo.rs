//! Writes a small recording (three workers, one per codec, one crash recovered) into the
//! directory given as the first argument, then verifies it and lists its sessions:
//!
//! ```sh
//! cargo run -p sluice-recorder --example record_demo -- /tmp/recording
//! ```
//!
//! Also the source of the fuzz seed corpus (`recorder/fuzz/corpus/segment_reader`).

use std::path::PathBuf;

use bytes::Bytes;
use sluice_recorder::*;
use uuid::Uuid;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "recording".into()),
    );
    let codecs = [Codec::Zstd { level: 3 }, Codec::Lz4, Codec::None];
    for (worker, codec) in codecs.into_iter().enumerate() {
        let config = RecorderConfig {
            codec,
            block_bytes: 512,
            segment_bytes: 2048,
            signing_key: Some(SigningKey::from_bytes(&[1; 32])),
            ..RecorderConfig::default()
        };
        let mut writer = SegmentWriter::create(&dir, worker as u16, config.clone())?;
        let session = Uuid::now_v7();
        let mut t = 0;
        let mut record = |kind| {
            t += 1;
            Record {
                session,
                mono_us: t,
                wall_us: 1_700_000_000_000_000 + t,
                kind,
            }
        };
        writer.append(&record(RecordKind::SessionStart(SessionStart {
            principal: "alice".into(),
            groups: vec!["engineering".into()],
            resource: "shop".into(),
            client_addr: "127.0.0.1:50000".into(),
            tls: None,
            masking_profile: Some("support".into()),
        })))?;
        writer.append(&record(RecordKind::Decision(Decision {
            statement: "select email from customers".into(),
            class: "read".into(),
            verdict: Verdict::Allow,
            rule: Some("support-read".into()),
            reason: None,
        })))?;
        writer.append(&record(RecordKind::Client(Bytes::from_static(
            b"Q\0\0\0\x20select email from customers\0",
        ))))?;
        for i in 0..20 {
            let row = format!("D\0\0\0\x1c\0\x01\0\0\0\x12j***@example.com{i:02}");
            writer.append(&record(RecordKind::Server(Bytes::from(row.into_bytes()))))?;
        }
        writer.append(&record(RecordKind::SessionEnd(SessionEnd {
            reason: "client closed".into(),
            statements: 1,
            bytes_in: 33,
            bytes_out: 560,
            masked: [("email".to_string(), 20)].into(),
        })))?;
        if worker == 1 {
            // Leave this one unsealed, as a crash would; the next create recovers it.
            writer.flush_block()?;
            drop(writer);
            let writer = SegmentWriter::create(&dir, 1, config)?;
            println!("recovered: {:?}", writer.recovery());
            writer.seal()?;
        } else {
            writer.seal()?;
        }
    }
    let report = verify(
        &dir,
        Some(&SigningKey::from_bytes(&[1; 32]).verifying_key()),
    )?;
    println!(
        "verify: {} segments, {} blocks, {} records, problems: {:?}",
        report.segments, report.blocks, report.records, report.problems
    );
    for s in Archive::open(&dir)?.sessions(&SessionFilter::default()) {
        println!(
            "{} worker {} {:?}@{:?} {} statements, ended: {:?}",
            s.session, s.worker, s.principal, s.resource, s.statements, s.end_reason
        );
    }
    Ok(())
}
