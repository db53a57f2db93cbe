//! Codec throughput on the gateway's two hot paths: a DataRow-heavy result
//! set coming back from the server (fully decoded, and split by header only
//! as the relay does for frames it does not inspect), and a pgbench-like
//! extended-protocol stream from the client.
//!
//! Every routine counts the frames it produced and asserts the count, so a
//! decoder that stops early fails the bench instead of looking fast.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sluice_bench::{pgbench_select, result_set, Workload};
use sluice_codecs::{backend, frontend, peek_header, Decode, Limits};

const ROWS: usize = 10_000;
const TRANSACTIONS: usize = 10_000;

fn backend_decode_all(mut buf: BytesMut, limits: &Limits) -> usize {
    let mut frames = 0;
    while let Ok(Decode::Frame(m)) = backend::decode(&mut buf, limits) {
        black_box(&m);
        frames += 1;
    }
    frames
}

/// The relay's path: only the 5-byte header is read, the frame is split off
/// the buffer and frozen exactly as it would be forwarded.
fn split_by_header(mut buf: BytesMut, limits: &Limits) -> usize {
    let mut frames = 0;
    while let Ok(Decode::Frame(h)) = peek_header(&buf, limits.max_message_len) {
        if buf.len() < h.frame_len() {
            break;
        }
        black_box(buf.split_to(h.frame_len()).freeze());
        frames += 1;
    }
    frames
}

fn frontend_decode_all(mut buf: BytesMut, limits: &Limits) -> usize {
    let mut frames = 0;
    while let Ok(Decode::Frame(m)) = frontend::decode(&mut buf, limits) {
        black_box(&m);
        frames += 1;
    }
    frames
}

type Routine = fn(BytesMut, &Limits) -> usize;

fn cases() -> [(&'static str, Workload, Routine); 3] {
    [
        (
            "backend_decode/result_set",
            result_set(ROWS),
            backend_decode_all,
        ),
        (
            "peek_header_split/result_set",
            result_set(ROWS),
            split_by_header,
        ),
        (
            "frontend_decode/pgbench_select",
            pgbench_select(TRANSACTIONS),
            frontend_decode_all,
        ),
    ]
}

fn bench(c: &mut Criterion, group: &str, throughput: fn(&Workload) -> Throughput) {
    let limits = Limits::default();
    let mut g = c.benchmark_group(group);
    for (name, w, routine) in cases() {
        g.throughput(throughput(&w));
        g.bench_function(name, |b| {
            // Copying the input into a fresh receive buffer is setup, not
            // decoding; iter_batched keeps it out of the measurement.
            b.iter_batched(
                || BytesMut::from(&w.bytes[..]),
                |buf| {
                    let frames = routine(buf, &limits);
                    assert_eq!(frames, w.frames, "{name}: wrong frame count");
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn codecs(c: &mut Criterion) {
    bench(c, "codecs/bytes", |w| {
        Throughput::Bytes(w.bytes.len() as u64)
    });
    bench(c, "codecs/frames", |w| {
        Throughput::Elements(w.frames as u64)
    });
}

criterion_group!(benches, codecs);
criterion_main!(benches);
