//! The snapshot channel's hot paths: the per-statement generation check (one atomic load on
//! the shared header) and picking up a new 64 KiB generation (drain the socket, map, validate
//! seals + envelope + CRC32C).

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use sluice_control::snapshot::{Publisher, SnapshotServer, Subscriber};

fn snapshot(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = SnapshotServer::bind(
        dir.path().join("snap.sock"),
        Publisher::new().expect("publisher"),
    )
    .expect("bind");
    let payload = vec![0x5au8; 64 * 1024];
    server
        .publish(&payload, SystemTime::now())
        .expect("publish");
    let mut sub = Subscriber::connect(server.path()).expect("connect");
    while server.publisher().subscriber_count() == 0 {
        std::thread::yield_now();
    }

    c.bench_function("snapshot/current_generation", |b| {
        b.iter(|| black_box(&sub).current_generation())
    });
    c.bench_function("snapshot/needs_refresh", |b| {
        b.iter(|| black_box(&sub).needs_refresh())
    });

    c.bench_function("snapshot/refresh_64k", |b| {
        b.iter_batched(
            || {
                server
                    .publish(&payload, SystemTime::now())
                    .expect("publish");
            },
            |()| {
                let snap = sub.refresh().expect("refresh").expect("new generation");
                black_box(snap.payload().len())
            },
            BatchSize::PerIteration,
        )
    });
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
