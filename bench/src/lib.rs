//! Workloads for Sluice's micro-benchmarks (`benches/`).
//!
//! The builders live in the library, not in the bench files, so that their
//! shape (frame counts, sizes) is unit-tested and every bench can assert it
//! decoded exactly the frames it was given: a benchmark that silently stops
//! early measures nothing (design.md §5.9).

use bytes::{Bytes, BytesMut};
use sluice_codecs::backend::{BackendMessage, DataRow, FieldDescription, TransactionStatus};
use sluice_codecs::frontend::FrontendMessage;

/// A backend stream and the number of frames in it.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The encoded frames, back to back.
    pub bytes: Bytes,
    /// How many frames a correct decoder finds.
    pub frames: usize,
}

/// Text type OID, used for every column of the result set.
const TEXT_OID: u32 = 25;

/// A result set as a server streams it for a wide `SELECT`: RowDescription
/// of 6 text columns, `rows` DataRows of about 100 bytes each (frame size
/// 106 bytes), CommandComplete and ReadyForQuery.
pub fn result_set(rows: usize) -> Workload {
    let mut out = BytesMut::new();
    let names = ["id", "name", "email", "city", "amount", "created_at"];
    BackendMessage::RowDescription {
        fields: names
            .iter()
            .enumerate()
            .map(|(i, n)| FieldDescription {
                name: Bytes::from_static(n.as_bytes()),
                table_oid: 16_384,
                column_id: i as i16 + 1,
                type_oid: TEXT_OID,
                type_size: -1,
                type_modifier: -1,
                format: 0,
            })
            .collect(),
    }
    .encode(&mut out);
    for r in 0..rows {
        let id = format!("{:07}", r);
        let name = format!("customer {:07}", r);
        let email = format!("c{:07}@example.invalid", r);
        let city = format!("city {:05}", r % 100_000);
        let amount = format!("{:05}.{:02}", r % 100_000, r % 100);
        let created = "2024-05-17";
        let cols: [Option<&[u8]>; 6] = [
            Some(id.as_bytes()),
            Some(name.as_bytes()),
            Some(email.as_bytes()),
            Some(city.as_bytes()),
            Some(amount.as_bytes()),
            Some(created.as_bytes()),
        ];
        BackendMessage::DataRow(DataRow::from_columns(&cols)).encode(&mut out);
    }
    BackendMessage::CommandComplete {
        tag: Bytes::from(format!("SELECT {rows}")),
    }
    .encode(&mut out);
    BackendMessage::ReadyForQuery {
        status: TransactionStatus::Idle,
    }
    .encode(&mut out);
    Workload {
        bytes: out.freeze(),
        frames: rows + 3,
    }
}

/// What a pgbench `-S -M extended` client sends: per transaction a Parse of
/// the unnamed statement, a Bind of one text parameter, Execute and Sync.
pub fn pgbench_select(transactions: usize) -> Workload {
    let mut out = BytesMut::new();
    let sql = Bytes::from_static(b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;");
    for t in 0..transactions {
        FrontendMessage::Parse {
            name: Bytes::new(),
            sql: sql.clone(),
            param_types: vec![],
        }
        .encode(&mut out);
        FrontendMessage::Bind {
            portal: Bytes::new(),
            statement: Bytes::new(),
            param_formats: vec![],
            params: vec![Some(Bytes::from((t % 1_000_000 + 1).to_string()))],
            result_formats: vec![],
        }
        .encode(&mut out);
        FrontendMessage::Execute {
            portal: Bytes::new(),
            max_rows: 0,
        }
        .encode(&mut out);
        FrontendMessage::Sync.encode(&mut out);
    }
    Workload {
        bytes: out.freeze(),
        frames: transactions * 4,
    }
}

/// A small deterministic generator for benchmark data (a bench must not depend on a seed's
/// luck, nor pull in a random-number crate for it).
pub struct Lcg(pub u64);

impl Lcg {
    /// The next pseudo-random number (31 bits).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as usize
    }

    /// One of `items`.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next() % items.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_codecs::{backend, frontend, Decode, Limits};

    #[test]
    fn result_set_shape() {
        let w = result_set(1_000);
        let mut buf = BytesMut::from(&w.bytes[..]);
        let mut frames = 0;
        let mut rows = 0;
        while let Ok(Decode::Frame(m)) = backend::decode(&mut buf, &Limits::default()) {
            frames += 1;
            if let BackendMessage::DataRow(r) = m {
                assert_eq!(r.len(), 6);
                assert!((95..=105).contains(&r.body().len()), "{}", r.body().len());
                rows += 1;
            }
        }
        assert!(buf.is_empty());
        assert_eq!((frames, rows), (w.frames, 1_000));
    }

    #[test]
    fn pgbench_shape() {
        let w = pgbench_select(100);
        let mut buf = BytesMut::from(&w.bytes[..]);
        let mut frames = 0;
        while let Ok(Decode::Frame(_)) = frontend::decode(&mut buf, &Limits::default()) {
            frames += 1;
        }
        assert!(buf.is_empty());
        assert_eq!(frames, w.frames);
    }
}
