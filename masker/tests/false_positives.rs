//! False positives of the default detectors on business-like values.
//!
//! Every text value of every result goes through the detectors, and a false positive
//! rewrites data a client needed (an order id masked as a phone number breaks the
//! application that reads it back). This generates 100,000 values of the shapes that
//! fill real tables, none of them sensitive, runs them through the default profile (all
//! detectors on, phone region US), and requires fewer than 0.1 % to have anything
//! found; the aim is none. Each family is here because it looks like something a
//! detector looks for:
//!
//! * order and invoice ids (`ORD-2024-000123`, `INV/88231`): dashed digit groups, like
//!   SSNs, phones and grouped cards;
//! * 9-digit numbers that fail the SSN rules (area 000, 666, 900–999; group 00; serial
//!   0000), with dashes, spaces and none: exactly the SSN shape, minus validity;
//! * timestamps (`2024-03-15 12:34:56.789+00`, ISO 8601 with `T`, `Z` and offsets):
//!   colons (IPv6), `+` and digits (E.164), dashed digit groups;
//! * UUIDs: hex groups (IPv6-like), digit runs after letters (IBAN check digits);
//! * amounts (`1234.56`, `-12.00`, `$1,234.56`, `€1.234,56`, `+12.50`): digits with dots
//!   and signs (IPv4, E.164);
//! * dates (`2024-03-15`, `15/03/2024`, `15.03.2024`, `20240315`): short digit groups;
//! * version strings (`1.2.3`, `v2.14.1`, `v1.2.3.4`, `10.0.19045.2965`): dotted numbers,
//!   like IPv4 addresses (a bare four-part version with every part at most 255, `1.2.3.4`,
//!   *is* an IPv4 address by shape and is masked as one, so it is not in this family;
//!   with its `v`, or a part over 255, it is not);
//! * short product codes (`SKU-48213`, `AB-1234`, `A1B2C3`, `X12-Y34`): letters then
//!   digits, like IBANs and AWS keys;
//! * 12-digit and 20-digit ids: just below and just above a card's 13–19 digits;
//! * ISBN-13s, plain and hyphenated: 13 digits (a card length);
//! * times and ranges (`12:34`, `10:00-18:00`): colon groups (IPv6) and dashed numbers;
//! * decimals, percentages, scientific notation, coordinates (`37.7749,-122.4194`);
//! * hex digests (SHA-1, SHA-256): long alphanumeric runs;
//! * free text mixing the above with names (`Order 1234 shipped to Jane Doe on …`,
//!   `Qty 3 @ $4.99`): the `@` anchor of emails, numbers in prose.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_masker::detect::Detectors;
use sluice_masker::ProfileConfig;

const VALUES: usize = 100_000;

fn digits(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

fn hex(rng: &mut StdRng, n: usize, upper: bool) -> String {
    let set: &[u8] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    (0..n)
        .map(|_| char::from(set[rng.random_range(0..16)]))
        .collect()
}

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn date(rng: &mut StdRng) -> (u32, u32, u32) {
    (
        rng.random_range(1990..2031),
        rng.random_range(1..13),
        rng.random_range(1..29),
    )
}

fn order_id(rng: &mut StdRng) -> String {
    let y = rng.random_range(2015..2031);
    match rng.random_range(0..6) {
        0 => format!("ORD-{y}-{:06}", rng.random_range(0..1_000_000)),
        1 => format!("INV/{:05}", rng.random_range(0..100_000)),
        2 => format!("PO#{:07}", rng.random_range(0..10_000_000)),
        3 => format!("SO-{:08}", rng.random_range(0..100_000_000)),
        4 => format!("ORD{:010}", rng.random_range(0..10_000_000_000u64)),
        _ => format!(
            "INV-{y}-{:04}-{:03}",
            rng.random_range(0..10_000),
            rng.random_range(0..1000)
        ),
    }
}

/// Nine digits that break at least one SSN rule.
fn invalid_ssn(rng: &mut StdRng) -> String {
    let mut area = rng.random_range(1..900);
    let mut group = rng.random_range(1..100);
    let mut serial = rng.random_range(1..10_000);
    match rng.random_range(0..5) {
        0 => area = 0,
        1 => area = 666,
        2 => area = rng.random_range(900..1000),
        3 => group = 0,
        _ => serial = 0,
    }
    match rng.random_range(0..3) {
        0 => format!("{area:03}-{group:02}-{serial:04}"),
        1 => format!("{area:03} {group:02} {serial:04}"),
        _ => format!("{area:03}{group:02}{serial:04}"),
    }
}

fn timestamp(rng: &mut StdRng) -> String {
    let (y, mo, d) = date(rng);
    let (h, mi, s) = (
        rng.random_range(0..24),
        rng.random_range(0..60),
        rng.random_range(0..60),
    );
    match rng.random_range(0..5) {
        0 => format!(
            "{y}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{:03}+00",
            rng.random_range(0..1000)
        ),
        1 => format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
        2 => format!(
            "{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:06}{}",
            rng.random_range(0..1_000_000),
            pick(rng, &["+05:30", "-08:00", "+00:00", "+01:00", "-03:30"])
        ),
        3 => format!("{y}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"),
        _ => format!("{y}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z"),
    }
}

fn uuid(rng: &mut StdRng) -> String {
    let upper = rng.random_bool(0.2);
    format!(
        "{}-{}-{}-{}-{}",
        hex(rng, 8, upper),
        hex(rng, 4, upper),
        hex(rng, 4, upper),
        hex(rng, 4, upper),
        hex(rng, 12, upper)
    )
}

fn amount(rng: &mut StdRng) -> String {
    let units = rng.random_range(0..10_000_000u64);
    let cents = rng.random_range(0..100);
    let grouped = {
        let s = units.to_string();
        let mut g = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                g.push(',');
            }
            g.push(c);
        }
        g
    };
    match rng.random_range(0..7) {
        0 => format!("{units}.{cents:02}"),
        1 => format!("-{units}.{cents:02}"),
        2 => format!("${grouped}.{cents:02}"),
        3 => format!("€{}.{cents:02}", grouped.replace(',', ".")).replacen(
            &format!(".{cents:02}"),
            &format!(",{cents:02}"),
            1,
        ),
        4 => format!("+{units}.{cents:02}"),
        5 => format!("({grouped}.{cents:02})"),
        _ => format!("{units} USD"),
    }
}

fn a_date(rng: &mut StdRng) -> String {
    let (y, mo, d) = date(rng);
    match rng.random_range(0..6) {
        0 => format!("{y}-{mo:02}-{d:02}"),
        1 => format!("{d:02}/{mo:02}/{y}"),
        2 => format!("{mo:02}/{d:02}/{y}"),
        3 => format!("{d:02}.{mo:02}.{y}"),
        4 => format!("{y}{mo:02}{d:02}"),
        _ => format!(
            "{} {d}, {y}",
            pick(
                rng,
                &[
                    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                    "Dec"
                ]
            )
        ),
    }
}

fn version(rng: &mut StdRng) -> String {
    let (a, b, c) = (
        rng.random_range(0..30),
        rng.random_range(0..60),
        rng.random_range(0..300),
    );
    match rng.random_range(0..6) {
        0 => format!("{a}.{b}.{c}"),
        1 => format!("v{a}.{b}.{c}"),
        2 => format!("{a}.{b}.{c}-beta.{}", rng.random_range(0..10)),
        3 => format!("v{a}.{b}.{c}.{}", rng.random_range(0..300)),
        4 => format!("{a}.{b}.{c}+build.{}", rng.random_range(0..1000)),
        _ => format!(
            "10.0.{}.{}",
            rng.random_range(10_000..30_000),
            rng.random_range(0..5000)
        ),
    }
}

fn product_code(rng: &mut StdRng) -> String {
    let letters = |rng: &mut StdRng, n: usize| -> String {
        (0..n)
            .map(|_| char::from(b'A' + rng.random_range(0..26u8)))
            .collect()
    };
    match rng.random_range(0..6) {
        0 => format!("SKU-{}", digits(rng, 5)),
        1 => format!("{}-{}", letters(rng, 2), digits(rng, 4)),
        2 => format!("X{}-Y{}", digits(rng, 2), digits(rng, 2)),
        3 => format!("P/N {}-{}", digits(rng, 4), digits(rng, 2)),
        4 => {
            let a = letters(rng, 1);
            let b = letters(rng, 1);
            let c = letters(rng, 1);
            format!(
                "{a}{}{b}{}{c}{}",
                digits(rng, 1),
                digits(rng, 1),
                digits(rng, 1)
            )
        }
        _ => format!("{}{}", letters(rng, 3), digits(rng, 6)),
    }
}

fn long_id(rng: &mut StdRng) -> String {
    let n = if rng.random_bool(0.5) { 12 } else { 20 };
    let first = char::from(b'1' + rng.random_range(0..9u8));
    format!("{first}{}", digits(rng, n - 1))
}

fn isbn(rng: &mut StdRng) -> String {
    let body = format!("978{}", digits(rng, 9));
    let sum: u32 = body
        .bytes()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    let check = (10 - sum % 10) % 10;
    let full = format!("{body}{check}");
    if rng.random_bool(0.5) {
        full
    } else {
        format!(
            "{}-{}-{}-{}-{}",
            &full[..3],
            &full[3..4],
            &full[4..6],
            &full[6..12],
            &full[12..]
        )
    }
}

fn time_range(rng: &mut StdRng) -> String {
    let (h, m) = (rng.random_range(0..24), rng.random_range(0..60));
    match rng.random_range(0..4) {
        0 => format!("{h:02}:{m:02}"),
        1 => format!("{h:02}:{m:02}:{:02}", rng.random_range(0..60)),
        2 => format!("{h:02}:00-{:02}:00", rng.random_range(0..24)),
        _ => format!("PT{h}H{m}M"),
    }
}

fn number(rng: &mut StdRng) -> String {
    match rng.random_range(0..5) {
        0 => format!("{}.{}%", rng.random_range(0..100), rng.random_range(0..10)),
        1 => format!(
            "{}.{}e-{}",
            rng.random_range(1..10),
            rng.random_range(0..10),
            rng.random_range(1..20)
        ),
        2 => format!("0.{}", digits(rng, 6)),
        3 => format!(
            "{}.{},-{}.{}",
            rng.random_range(0..90),
            digits(rng, 4),
            rng.random_range(0..180),
            digits(rng, 4)
        ),
        _ => rng.random_range(0..100_000).to_string(),
    }
}

fn digest(rng: &mut StdRng) -> String {
    let n = if rng.random_bool(0.5) { 40 } else { 64 };
    hex(rng, n, false)
}

fn free_text(rng: &mut StdRng) -> String {
    let name = pick(
        rng,
        &[
            "Jane Doe",
            "Acme Corp",
            "Müller GmbH",
            "José Álvarez",
            "李小龙",
            "O'Brien & Sons",
        ],
    );
    match rng.random_range(0..6) {
        0 => {
            let id = order_id(rng);
            let d = a_date(rng);
            format!("Order {id} shipped to {name} on {d}")
        }
        1 => {
            let a = amount(rng);
            format!("Qty {} @ {a} each", rng.random_range(1..50))
        }
        2 => format!(
            "Room {}, floor {}, building {}",
            rng.random_range(1..500),
            rng.random_range(0..40),
            pick(rng, &["A", "B", "North"])
        ),
        3 => {
            let t = time_range(rng);
            let v = version(rng);
            format!("Deployed {v} at {t} by {name}")
        }
        4 => {
            let (o, d, a, p) = (order_id(rng), a_date(rng), amount(rng), product_code(rng));
            format!("{o},{d},{a},{p},{name}")
        }
        _ => {
            let u = uuid(rng);
            let ts = timestamp(rng);
            format!("{{\"id\":\"{u}\",\"at\":\"{ts}\",\"by\":\"{name}\"}}")
        }
    }
}

type Family = (&'static str, fn(&mut StdRng) -> String);

const FAMILIES: &[Family] = &[
    ("order id", order_id),
    ("invalid ssn", invalid_ssn),
    ("timestamp", timestamp),
    ("uuid", uuid),
    ("amount", amount),
    ("date", a_date),
    ("version", version),
    ("product code", product_code),
    ("12/20-digit id", long_id),
    ("isbn", isbn),
    ("time", time_range),
    ("number", number),
    ("digest", digest),
    ("free text", free_text),
];

#[test]
fn default_detectors_on_business_values() {
    let profile = ProfileConfig {
        detectors: None,
        style: None,
        detector_styles: Default::default(),
        phone_regions: None,
        columns: vec![],
        literals: vec![],
        patterns: vec![],
    };
    let d = match Detectors::compile(&profile) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let mut rng = StdRng::seed_from_u64(0x5eed_5a1c_e000_0001);
    let mut spans = Vec::new();
    let mut offenders = Vec::new();
    let mut per_family = vec![0usize; FAMILIES.len()];
    for _ in 0..VALUES {
        let f = rng.random_range(0..FAMILIES.len());
        let (family, make) = FAMILIES[f];
        let value = make(&mut rng);
        spans.clear();
        d.find(value.as_bytes(), &mut spans);
        if !spans.is_empty() {
            per_family[f] += 1;
            let found: Vec<String> = spans
                .iter()
                .map(|s| {
                    format!(
                        "{}:{:?}",
                        d.rule_names()[usize::from(s.rule)],
                        &value[s.start..s.end]
                    )
                })
                .collect();
            offenders.push(format!("{family}: {value:?} -> {}", found.join(", ")));
        }
    }
    let rate = offenders.len() as f64 / VALUES as f64;
    eprintln!(
        "false positives: {} of {VALUES} values ({:.4} %)",
        offenders.len(),
        rate * 100.0
    );
    for (i, (family, _)) in FAMILIES.iter().enumerate() {
        if per_family[i] > 0 {
            eprintln!("  {family}: {}", per_family[i]);
        }
    }
    assert!(
        rate < 0.001,
        "false-positive rate {:.4} % is over 0.1 %; first offenders:\n{}",
        rate * 100.0,
        offenders
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
