//! What masking result rows costs the proxy, in bytes of DataRow frames per second.
//!
//! The workload is ~1 MiB of DataRows of six text columns of ~100 bytes of business-like
//! text (order ids, names, addresses, amounts, dates, notes), every 16th row with an
//! email in its note and every 40th with a card number in its comment, fed to
//! [`SessionMasker::backend_frame`] after a simple query's RowDescription, frame by
//! frame as the proxy would:
//!
//! - `masking/pass_through`: a profile whose column rule matches no column and with no
//!   detectors: every row is forwarded untouched (target ≥ 5 GB/s);
//! - `masking/column_rules`: two of the six columns named by rules, no detectors: every
//!   row rebuilt;
//! - `masking/detectors`: every default detector over every value (target ≥ 1 GB/s);
//! - `masking/literals_100`: one literal rule of 100 values, no built-in detectors;
//! - `masking/memcpy`: copying the same bytes once, the physical limit.
//!
//! Each profile first runs once over the whole workload and asserts the number of masked
//! values (and, where nothing may change, that nothing did), so a masker that finds the
//! wrong things — or nothing — fails the bench instead of looking fast.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_bench::Lcg;
use sluice_masker::{Masker, ProfileConfig, SessionMasker};

const TARGET_BYTES: usize = 1 << 20;
const EMAIL_EVERY: usize = 16;
const CARD_EVERY: usize = 40;
const LITERAL_EVERY: usize = 10;

const FIRST: &[&str] = &[
    "Jane", "Omar", "Li", "Priya", "Lukas", "Amara", "Mateo", "Sofia",
];
const LAST: &[&str] = &[
    "Doe",
    "Haddad",
    "Wei",
    "Patel",
    "Becker",
    "Okafor",
    "Rossi",
    "Lindqvist",
];
const STREETS: &[&str] = &[
    "Market Street",
    "Rue de Rivoli",
    "Hauptstrasse",
    "Calle Mayor",
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
    "confirmed",
    "discount",
    "quarterly",
    "renewal",
];

fn sentence(rng: &mut Lcg, len: usize) -> String {
    let mut s = String::new();
    while s.len() < len {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(rng.pick(WORDS));
    }
    s.truncate(len);
    s
}

/// The product names the literal profile lists.
fn literal(i: usize) -> String {
    format!(
        "Gizmo {} {i:03}",
        ["Alpha", "Beta", "Gamma", "Delta"][i % 4]
    )
}

/// The six column values of row `i` (~100 bytes each).
fn row(rng: &mut Lcg, i: usize) -> [String; 6] {
    let order = format!(
        "ORD-2024-{:06} placed {} {:02}:{:02} status {} total EUR {}.{:02} lines {}",
        i,
        ["2024-03-15", "2024-04-02", "2024-05-21"][i % 3],
        rng.next() % 24,
        rng.next() % 60,
        rng.pick(&["paid", "shipped", "delivered", "open"]),
        rng.next() % 900 + 100,
        rng.next() % 100,
        rng.next() % 9 + 1,
    );
    let customer = format!(
        "{} {} (account {}), {} tier, since {}, {}",
        rng.pick(FIRST),
        rng.pick(LAST),
        rng.pick(&["retail", "wholesale", "partner"]),
        rng.pick(&["gold", "silver", "bronze"]),
        ["2019", "2021", "2023"][i % 3],
        sentence(rng, 40),
    );
    let address = format!(
        "{} {}, {}, {}",
        rng.next() % 200 + 1,
        rng.pick(STREETS),
        rng.pick(CITIES),
        sentence(rng, 55),
    );
    let mut note = sentence(rng, 70);
    if i % EMAIL_EVERY == 0 {
        note.push_str(&format!(" contact {}.{}@example.com", rng.pick(FIRST), i).to_lowercase());
    }
    let mut comment = sentence(rng, 70);
    if i % CARD_EVERY == 0 {
        comment.push_str(" paid with 4111 1111 1111 1111");
    }
    let mut product = sentence(rng, 80);
    if i % LITERAL_EVERY == 0 {
        product.push_str(&format!(" item {}", literal(i % 100)));
    }
    [order, customer, address, note, comment, product]
}

fn data_row(values: &[String; 6]) -> Vec<u8> {
    let mut b = 6u16.to_be_bytes().to_vec();
    for v in values {
        b.extend_from_slice(&(v.len() as i32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

const COLUMNS: [&str; 6] = [
    "order_info",
    "customer",
    "address",
    "note",
    "comment",
    "product",
];

fn row_description() -> Vec<u8> {
    let mut b = 6u16.to_be_bytes().to_vec();
    for name in COLUMNS {
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&25u32.to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
    }
    b
}

/// The workload: the whole stream of DataRow frames, and each frame's body range.
struct Workload {
    stream: Vec<u8>,
    bodies: Vec<std::ops::Range<usize>>,
    rows: usize,
}

fn workload() -> Workload {
    let mut rng = Lcg(0x5eed);
    let mut stream = Vec::with_capacity(TARGET_BYTES + 1024);
    let mut bodies = Vec::new();
    let mut i = 0;
    while stream.len() < TARGET_BYTES {
        let body = data_row(&row(&mut rng, i));
        stream.push(b'D');
        stream.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        bodies.push(stream.len()..stream.len() + body.len());
        stream.extend_from_slice(&body);
        i += 1;
    }
    Workload {
        stream,
        bodies,
        rows: i,
    }
}

fn session(profile: &str) -> SessionMasker {
    let config: ProfileConfig = toml::from_str(profile).expect("bench profile");
    let masker = Masker::compile("bench", &config, b"bench key").expect("bench profile compiles");
    let mut sm = SessionMasker::new(Arc::new(masker));
    let mut sql = b"SELECT * FROM orders".to_vec();
    sql.push(0);
    sm.client_frame(b'Q', &sql);
    let mut out = Vec::new();
    assert!(!sm.backend_frame(b'T', &row_description(), &mut out));
    sm
}

/// One pass over the workload; returns how many rows were rewritten.
fn run(sm: &mut SessionMasker, w: &Workload, out: &mut Vec<u8>) -> usize {
    let mut rewritten = 0;
    for r in &w.bodies {
        out.clear();
        if sm.backend_frame(b'D', &w.stream[r.clone()], out) {
            rewritten += 1;
        }
        black_box(&out);
    }
    rewritten
}

fn literals_profile() -> String {
    let values: Vec<String> = (0..100).map(|i| format!("{:?}", literal(i))).collect();
    format!(
        "detectors = []\n[[literals]]\nname = \"products\"\nvalues = [{}]\n",
        values.join(", ")
    )
}

/// A profile to time, with the answer it must give over the workload.
struct Case {
    name: &'static str,
    profile: String,
    /// Masked values per rule.
    counts: Vec<(&'static str, usize)>,
    /// Rows rewritten (the others forwarded untouched).
    rewritten: usize,
}

fn masking(c: &mut Criterion) {
    let w = workload();
    let emails = w.rows.div_ceil(EMAIL_EVERY);
    let cards = w.rows.div_ceil(CARD_EVERY);
    let literals = w.rows.div_ceil(LITERAL_EVERY);
    eprintln!(
        "masking: {} rows, {} bytes; {emails} emails, {cards} cards, {literals} literals",
        w.rows,
        w.stream.len()
    );

    let cases = [
        Case {
            name: "pass_through",
            profile: "detectors = []\n[[columns]]\ncolumn = \"ssn\"\n".into(),
            counts: vec![],
            rewritten: 0,
        },
        Case {
            name: "column_rules",
            profile: "detectors = []\n[[columns]]\nname = \"who\"\ncolumn = \"customer\"\n\
                      [[columns]]\nname = \"where\"\ncolumn = \"address\"\n"
                .into(),
            counts: vec![("who", w.rows), ("where", w.rows)],
            rewritten: w.rows,
        },
        Case {
            name: "detectors",
            profile: String::new(),
            counts: vec![("card", cards), ("email", emails)],
            rewritten: (0..w.rows)
                .filter(|i| i % EMAIL_EVERY == 0 || i % CARD_EVERY == 0)
                .count(),
        },
        Case {
            name: "literals_100",
            profile: literals_profile(),
            counts: vec![("products", literals)],
            rewritten: literals,
        },
    ];

    let mut g = c.benchmark_group("masking");
    g.throughput(Throughput::Bytes(w.stream.len() as u64));
    let mut out = Vec::with_capacity(64 * 1024);
    for Case {
        name,
        profile,
        counts,
        rewritten,
    } in &cases
    {
        // Check the answer once before timing.
        let mut sm = session(profile);
        assert_eq!(
            run(&mut sm, &w, &mut out),
            *rewritten,
            "{name}: rows rewritten"
        );
        let mut got: Vec<(String, u64)> = sm.counts().map(|(n, c)| (n.to_owned(), c)).collect();
        got.sort();
        let mut want: Vec<(String, u64)> = counts
            .iter()
            .map(|(n, c)| ((*n).to_owned(), *c as u64))
            .collect();
        want.sort();
        assert_eq!(got, want, "{name}: masked values per rule");

        let mut sm = session(profile);
        g.bench_function(*name, |b| b.iter(|| run(&mut sm, &w, &mut out)));
    }
    let mut copy = Vec::with_capacity(w.stream.len());
    g.bench_function("memcpy", |b| {
        b.iter(|| {
            copy.clear();
            copy.extend_from_slice(black_box(&w.stream));
            black_box(&copy);
        })
    });
    g.finish();
}

criterion_group!(benches, masking);
criterion_main!(benches);
