//! What classifying a statement costs the proxy (design.md §4).
//!
//! For three statements — pgbench's select-only query and its TPC-B `UPDATE` (simple
//! protocol, literals inline, as `pgbench -M simple` sends them) and a ~1 KiB analytic
//! query with CTEs, joins, window functions and many literals:
//!
//! - `classify/hit/*`: [`Classifier::classify`] when the normalized text is cached: one
//!   lexer pass and one lookup. Each iteration takes the next of 1024 variants of the
//!   statement that differ only in their literals (they share one cache entry, two for the
//!   update's signed delta), with the Query message's trailing NUL, as the proxy would pass
//!   them.
//! - `classify/miss/*`: the same through a classifier without a cache (capacity 0), so
//!   every call lexes, parses with `pg_query` and walks the tree.
//! - `classify/normalize/*`: the lexer alone ([`lexer::normalize`] into a reused buffer).
//!
//! Every variant is classified once before timing and its class asserted, and the number
//! of cache entries they need is asserted, so a classifier that returns the wrong
//! answer (or a cache that never hits) fails the bench instead of looking fast.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_classify::{lexer, Class, Classifier};

const VARIANTS: usize = 1024;

/// A statement with its literals generated from a seed, its expected class, and how many
/// cache entries its variants need.
struct Workload {
    name: &'static str,
    class: Class,
    make: fn(usize) -> String,
    /// The lexer (like PostgreSQL's) reads `-4521` as the operator `-` and `4521`, so
    /// pgbench's signed delta gives the TPC-B update two normalized texts.
    keys: usize,
}

fn select_only(i: usize) -> String {
    let aid = 1 + (i * 7919) % 1_000_000;
    format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};")
}

fn tpcb_update(i: usize) -> String {
    let aid = 1 + (i * 7919) % 1_000_000;
    let delta = (i as i64 * 37) % 10_001 - 5000;
    format!("UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid};")
}

fn analytic(i: usize) -> String {
    format!(
        "WITH recent AS (\n\
         \x20 SELECT o.customer_id, o.order_id, o.total, o.created_at\n\
         \x20 FROM sales.orders o\n\
         \x20 WHERE o.created_at >= DATE '2024-{month:02}-01' AND o.status IN ('paid', 'shipped', 'delivered')\n\
         ), ranked AS (\n\
         \x20 SELECT r.customer_id, r.total,\n\
         \x20        row_number() OVER (PARTITION BY r.customer_id ORDER BY r.total DESC) AS rn,\n\
         \x20        sum(r.total) OVER (PARTITION BY r.customer_id) AS lifetime\n\
         \x20 FROM recent r\n\
         )\n\
         SELECT c.id, c.name, c.region, k.total AS best_order, k.lifetime,\n\
         \x20      CASE WHEN k.lifetime > {gold} THEN 'gold' WHEN k.lifetime > {silver} THEN 'silver' ELSE 'bronze' END AS tier,\n\
         \x20      coalesce(s.open_tickets, 0) AS open_tickets,\n\
         \x20      round(k.lifetime / nullif(extract(day FROM now() - c.created_at), 0), 2) AS per_day\n\
         FROM customers c\n\
         JOIN ranked k ON k.customer_id = c.id AND k.rn = 1\n\
         LEFT JOIN (SELECT customer_id, count(*) AS open_tickets FROM support.tickets\n\
         \x20          WHERE state <> 'closed' AND priority >= {prio} GROUP BY customer_id) s ON s.customer_id = c.id\n\
         WHERE c.region = ANY (ARRAY['emea', 'apac', 'amer']) AND c.name NOT LIKE '%test%'\n\
         ORDER BY k.lifetime DESC, c.id\n\
         LIMIT {limit} OFFSET {offset};",
        month = 1 + i % 12,
        gold = 10_000 + i,
        silver = 1_000 + i,
        prio = i % 5,
        limit = 50 + i % 50,
        offset = i * 50,
    )
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "pgbench_select",
        class: Class::Read,
        make: select_only,
        keys: 1,
    },
    Workload {
        name: "tpcb_update",
        class: Class::Write,
        make: tpcb_update,
        keys: 2,
    },
    Workload {
        name: "analytic_1k",
        class: Class::Read,
        make: analytic,
        keys: 1,
    },
];

/// The variants of a workload as Query message bodies (NUL-terminated).
fn variants(w: &Workload) -> Vec<Vec<u8>> {
    (0..VARIANTS)
        .map(|i| {
            let mut body = (w.make)(i).into_bytes();
            body.push(0);
            body
        })
        .collect()
}

/// Classifies every variant once, asserting the class and that literals do not change the
/// cache key (beyond the sign of a number).
fn check(w: &Workload, bodies: &[Vec<u8>]) {
    let mut classifier = Classifier::new(16);
    for body in bodies {
        let c = classifier.classify(body, true);
        assert_eq!(c.statements.len(), 1, "{}: {c:?}", w.name);
        assert_eq!(c.statements[0].class, w.class, "{}: {c:?}", w.name);
    }
    assert_eq!(classifier.cache_len(), w.keys, "{}", w.name);
    assert_eq!(classifier.cache_misses(), w.keys as u64, "{}", w.name);
}

fn classify(c: &mut Criterion) {
    for w in &WORKLOADS {
        let bodies = variants(w);
        check(w, &bodies);
        let mean_len = bodies.iter().map(Vec::len).sum::<usize>() / bodies.len();
        eprintln!("{}: {mean_len} bytes", w.name);

        let mut g = c.benchmark_group("classify");
        g.throughput(Throughput::Elements(1));

        let mut cached = Classifier::new(1024);
        for body in &bodies {
            cached.classify(body, true);
        }
        let mut i = 0;
        g.bench_function(format!("hit/{}", w.name), |b| {
            b.iter(|| {
                i = (i + 1) % VARIANTS;
                black_box(cached.classify(black_box(&bodies[i]), true))
            })
        });
        assert!(cached.cache_hits() > 0 && cached.cache_misses() <= w.keys as u64);

        let mut uncached = Classifier::new(0);
        g.bench_function(format!("miss/{}", w.name), |b| {
            b.iter(|| {
                i = (i + 1) % VARIANTS;
                black_box(uncached.classify(black_box(&bodies[i]), true))
            })
        });

        let mut out = Vec::with_capacity(4096);
        g.bench_function(format!("normalize/{}", w.name), |b| {
            b.iter(|| {
                i = (i + 1) % VARIANTS;
                let body = &bodies[i][..bodies[i].len() - 1];
                black_box(lexer::normalize(black_box(body), true, &mut out).is_ok())
            })
        });
        g.finish();
    }
}

criterion_group!(benches, classify);
criterion_main!(benches);
