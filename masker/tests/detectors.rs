//! Table-driven tests of the content detectors and mask styles.
//!
//! Each detector has a named table of (input, the values it must find) with positive and
//! negative rows; every table runs twice: with only that detector on (exactly those
//! values, nothing else) and with the default profile (all detectors on: the values are
//! still found, by that detector). Styles have their own table of (style, kind, value,
//! masked form). A property test checks the invariants of `find` and `mask_into` on
//! arbitrary and on detector-shaped input.

use proptest::prelude::*;
use sluice_masker::detect::{Detectors, Span};
use sluice_masker::style::{mask_same_length, mask_value, MaskKey};
use sluice_masker::{DetectorKind, LiteralRule, PatternRule, ProfileConfig, Style};

use DetectorKind::*;

fn profile(detectors: Option<Vec<DetectorKind>>) -> ProfileConfig {
    ProfileConfig {
        detectors,
        style: None,
        detector_styles: Default::default(),
        phone_regions: None,
        columns: vec![],
        literals: vec![],
        patterns: vec![],
    }
}

fn compile(p: &ProfileConfig) -> Detectors {
    match Detectors::compile(p) {
        Ok(d) => d,
        Err(e) => panic!("profile does not compile: {e}"),
    }
}

/// The spans of `text` as (rule name, matched text).
fn found(d: &Detectors, text: &str) -> Vec<(String, String)> {
    let mut spans = Vec::new();
    d.find(text.as_bytes(), &mut spans);
    check_spans(d, text.as_bytes(), &spans);
    spans
        .iter()
        .map(|s| {
            (
                d.rule_names()[usize::from(s.rule)].clone(),
                text[s.start..s.end].to_string(),
            )
        })
        .collect()
}

/// The invariants of `find`: in bounds, ordered, non-overlapping, non-empty, bounded.
fn check_spans(d: &Detectors, text: &[u8], spans: &[Span]) {
    let mut last_end = 0;
    for s in spans {
        assert!(s.start < s.end, "empty span {s:?}");
        assert!(
            s.end <= text.len(),
            "span {s:?} past the end ({})",
            text.len()
        );
        assert!(
            s.start >= last_end,
            "span {s:?} overlaps or is out of order"
        );
        assert!(
            s.end - s.start <= d.max_span_len(),
            "span {s:?} longer than max_span_len {}",
            d.max_span_len()
        );
        assert!(usize::from(s.rule) < d.rule_names().len(), "span {s:?}");
        last_end = s.end;
    }
}

/// A table row: an input and the values the detector must find in it.
type Row = (&'static str, &'static [&'static str]);

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\nKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END RSA PRIVATE KEY-----";

const CARD: &[Row] = &[
    // The demo's formats: 16 digits plain, with spaces, with dashes; Visa and Mastercard.
    ("4111111111111111", &["4111111111111111"]),
    (
        "card 4111 1111 1111 1111 exp 12/27",
        &["4111 1111 1111 1111"],
    ),
    ("4111-1111-1111-1111", &["4111-1111-1111-1111"]),
    ("5555 5555 5555 4444", &["5555 5555 5555 4444"]),
    ("5105105105105100", &["5105105105105100"]),
    ("2223003122003222", &["2223003122003222"]),
    (
        "amex 378282246310005 and 3782 822463 10005",
        &["378282246310005", "3782 822463 10005"],
    ),
    ("6011111111111117", &["6011111111111117"]),
    ("3530111333300000", &["3530111333300000"]),
    ("diners 30569309025904", &["30569309025904"]),
    ("visa13 4222222222222", &["4222222222222"]),
    // Computed columns and documents.
    (
        r#"{"id":1,"email":"a@b.co","card_number":"4111 1111 1111 1111"}"#,
        &["4111 1111 1111 1111"],
    ),
    (
        "{4111111111111111,5555555555554444}",
        &["4111111111111111", "5555555555554444"],
    ),
    ("4111111111111111,2024-03-15,12.50", &["4111111111111111"]),
    ("Größe 4242 4242 4242 4242 — ok ✓", &["4242 4242 4242 4242"]),
    // A card followed by another number in free text.
    ("4111 1111 1111 1111 2024", &["4111 1111 1111 1111"]),
    // Negatives: Luhn, length, longer runs, no issuer.
    ("4111111111111112", &[]),
    ("41111111111111111111", &[]),
    ("12345678901234567890", &[]),
    ("4111-1111-1111-1111-1111", &[]),
    ("ID4111111111111111", &[]),
    ("4111111111111111x", &[]),
    ("0.4111111111111111", &[]),
    ("4111111111111111.25", &[]),
    ("1234 5678 9012 3456", &[]),
    ("411111111111111", &[]),
    ("4111 11 1111 1111 111", &[]),
];

const EMAIL: &[Row] = &[
    ("john.doe@example.com", &["john.doe@example.com"]),
    ("Mail JOHN@EXAMPLE.COM now", &["JOHN@EXAMPLE.COM"]),
    (r#"{"email":"a@b.co"}"#, &["a@b.co"]),
    (r#"{a@b.com,"x y"}"#, &["a@b.com"]),
    ("'x+tag@mail.example.co.uk'", &["x+tag@mail.example.co.uk"]),
    ("<jane_d@corp.io>.", &["jane_d@corp.io"]),
    ("email=ana@x.org&y=1", &["ana@x.org"]),
    ("über josé@correo.es", &["josé@correo.es"]),
    ("«zoë@mail.fr»", &["zoë@mail.fr"]),
    (
        "punycode a@xn--80ak6aa92e.xn--p1ai",
        &["a@xn--80ak6aa92e.xn--p1ai"],
    ),
    ("two: a@b.io, c@d.io", &["a@b.io", "c@d.io"]),
    ("..dots.@x.io", &[]),
    ("a@b", &[]),
    ("user@localhost", &[]),
    ("@handle", &[]),
    ("qty 3 @ 4.99", &[]),
    ("a@b.c", &[]),
    ("x@1.2.3.4", &[]),
    ("foo@bar.c0m", &[]),
    ("foo@-bar.com", &[]),
];

const SSN: &[Row] = &[
    ("123-45-6789", &["123-45-6789"]),
    ("SSN: 123 45 6789.", &["123 45 6789"]),
    (r#"{"ssn":"219-09-9999"}"#, &["219-09-9999"]),
    ("ssn,078-05-1120,x", &["078-05-1120"]),
    ("000-12-3456", &[]),
    ("666-12-3456", &[]),
    ("900-12-3456", &[]),
    ("999-99-9999", &[]),
    ("123-00-4567", &[]),
    ("123-45-0000", &[]),
    ("123456789", &[]),
    ("123-45 6789", &[]),
    ("123-45-67890", &[]),
    ("1123-45-6789", &[]),
    ("123-45-6789-1", &[]),
    ("A123-45-6789", &[]),
    ("2024-03-15", &[]),
];

const IBAN: &[Row] = &[
    (
        "GB82 WEST 1234 5698 7654 32",
        &["GB82 WEST 1234 5698 7654 32"],
    ),
    ("GB82WEST12345698765432", &["GB82WEST12345698765432"]),
    (
        "pay to DE89 3704 0044 0532 0130 00 today",
        &["DE89 3704 0044 0532 0130 00"],
    ),
    (
        "IBAN: FR14 2004 1010 0505 0001 3M02 606.",
        &["FR14 2004 1010 0505 0001 3M02 606"],
    ),
    (r#"{"iban":"NL91ABNA0417164300"}"#, &["NL91ABNA0417164300"]),
    ("BE68539007547034", &["BE68539007547034"]),
    ("GB82 WEST 1234 5698 7654 33", &[]),
    ("GB82WEST1234569876543", &[]),
    ("GB82WEST123456987654321", &[]),
    ("XGB82WEST12345698765432", &[]),
    ("gb82west12345698765432", &[]),
    ("AB12", &[]),
];

const PHONE: &[Row] = &[
    // The demo's format.
    ("+1-415-555-0142", &["+1-415-555-0142"]),
    (r#"{"phone":"+1-415-555-0142"}"#, &["+1-415-555-0142"]),
    ("(415) 555-0142", &["(415) 555-0142"]),
    ("call 415-555-0142.", &["415-555-0142"]),
    ("415.555.0142", &["415.555.0142"]),
    ("1-415-555-0142", &["1-415-555-0142"]),
    ("+1 (415) 555-0142", &["+1 (415) 555-0142"]),
    ("+14155550142", &["+14155550142"]),
    ("+44 20 7946 0958", &["+44 20 7946 0958"]),
    ("+44 (0)20 7946 0958", &["+44 (0)20 7946 0958"]),
    ("+33 1 23 45 67 89", &["+33 1 23 45 67 89"]),
    ("tel:+4915123456789", &["+4915123456789"]),
    ("4155550142", &[]),
    ("+12", &[]),
    ("12:34:56.789+00", &[]),
    ("2024-03-15T12:34:56+05:30", &[]),
    ("+12345678.90", &[]),
    ("+0123456789", &[]),
    ("123-555-0142", &[]),
    ("415-155-0142", &[]),
    ("415-555-01423", &[]),
    ("2024-415-555-0142", &[]),
    ("x+14155550142", &[]),
    ("+1234567890123456", &[]),
    ("020 7946 0958", &[]),
];

const IPV4: &[Row] = &[
    ("192.168.1.10", &["192.168.1.10"]),
    ("host 10.0.0.1:5432", &["10.0.0.1"]),
    ("resolver 8.8.8.8.", &["8.8.8.8"]),
    (r#"{"ip":"203.0.113.7"}"#, &["203.0.113.7"]),
    ("255.255.255.255", &["255.255.255.255"]),
    ("10.1.2.3/24", &["10.1.2.3"]),
    ("256.1.1.1", &[]),
    ("1.2.3", &[]),
    ("1.2.3.4.5", &[]),
    ("v1.2.3.4", &[]),
    ("1.2.3.4a", &[]),
    ("15.03.2024", &[]),
    ("1.2.3.1000", &[]),
];

const IPV6: &[Row] = &[
    ("2001:db8::1", &["2001:db8::1"]),
    (
        "from fe80::1ff:fe23:4567:890a port 22",
        &["fe80::1ff:fe23:4567:890a"],
    ),
    ("localhost ::1", &["::1"]),
    (
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        &["2001:0db8:85a3:0000:0000:8a2e:0370:7334"],
    ),
    ("::ffff:192.0.2.128", &["::ffff:192.0.2.128"]),
    ("[2001:db8::2]:443", &["2001:db8::2"]),
    ("addr 2001:DB8::A.", &["2001:DB8::A"]),
    ("12:34:56", &[]),
    ("at 10:30", &[]),
    ("::", &[]),
    ("std::vector", &[]),
    ("Foo::Bar", &[]),
    ("2024-03-15T12:34:56Z", &[]),
    ("de:ad:be:ef", &[]),
    ("00:1a:2b:3c:4d:5e", &[]),
    ("1:2:3:4:5:6:7:8:9", &[]),
];

const JWT_ROWS: &[Row] = &[
    (JWT, &[JWT]),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c", &[JWT]),
    // alg none, empty signature.
    ("t=eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", &["eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."]),
    // No "alg" in the header.
    ("eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ4In0.c2ln", &[]),
    ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0", &[]),
    ("xeyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", &[]),
    ("eyJhbGciOiJub25lIn0..sig", &[]),
];

const SECRET: &[Row] = &[
    ("AKIAIOSFODNN7EXAMPLE", &["AKIAIOSFODNN7EXAMPLE"]),
    ("aws_access_key_id = ASIAY34FZKBOKMUTVV7A", &["ASIAY34FZKBOKMUTVV7A"]),
    ("key sk_live_4eC39HqLyjWDarjtT1zdp7dc", &["sk_live_4eC39HqLyjWDarjtT1zdp7dc"]),
    ("rk_live_51H8abcdefghijklmnop", &["rk_live_51H8abcdefghijklmnop"]),
    ("sk_test_abcdefghijklmnop1234", &["sk_test_abcdefghijklmnop1234"]),
    (
        "token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 ok",
        &["ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"],
    ),
    (
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        &["github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"],
    ),
    (
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        &["xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"],
    ),
    (PEM, &[PEM]),
    // Inside a JSON string, newlines escaped.
    (
        r#"{"key":"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\n-----END EC PRIVATE KEY-----\n"}"#,
        &[r#"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\n-----END EC PRIVATE KEY-----"#],
    ),
    // A block cut by the end of the text is masked to the end.
    (
        "key: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
        &["-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC"],
    ),
    ("AKIAIOSFODNN7EXAMPL", &[]),
    ("AKIAIOSFODNN7EXAMPLE1", &[]),
    ("MyAKIAIOSFODNN7EXAMPLE", &[]),
    ("sk_live_short", &[]),
    ("ghp_short", &[]),
    ("xoxb-123", &[]),
    ("-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAK==\n-----END PUBLIC KEY-----", &[]),
    ("-----BEGIN CERTIFICATE-----", &[]),
    // A header alone (nothing to hide yet).
    ("-----BEGIN RSA PRIVATE KEY-----", &[]),
    ("-----BEGIN RSA PRIVATE KEY-----\n-----END RSA PRIVATE KEY-----", &[]),
];

const TABLES: &[(&str, DetectorKind, &[Row])] = &[
    ("card", Card, CARD),
    ("email", Email, EMAIL),
    ("ssn", Ssn, SSN),
    ("iban", Iban, IBAN),
    ("phone", Phone, PHONE),
    ("ipv4", Ipv4, IPV4),
    ("ipv6", Ipv6, IPV6),
    ("jwt", Jwt, JWT_ROWS),
    ("secret", Secret, SECRET),
];

#[test]
fn each_detector_alone() {
    let mut failures = Vec::new();
    for &(table, kind, rows) in TABLES {
        let d = compile(&profile(Some(vec![kind])));
        assert_eq!(d.rule_names(), [kind.name().to_string()]);
        for &(input, want) in rows {
            let got: Vec<String> = found(&d, input).into_iter().map(|(_, v)| v).collect();
            if got != want {
                failures.push(format!("{table}: {input:?}: found {got:?}, want {want:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn each_detector_among_all() {
    let d = compile(&profile(None));
    let mut failures = Vec::new();
    for &(table, kind, rows) in TABLES {
        for &(input, want) in rows {
            let got = found(&d, input);
            for w in want {
                if !got.iter().any(|(rule, v)| rule == kind.name() && v == w) {
                    failures.push(format!(
                        "{table}: {input:?}: {w:?} not found by {table} among {got:?}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Values at the start and the end of a text, and multi-byte characters right against
/// them, for every detector.
#[test]
fn edges_and_utf8_neighbours() {
    let d = compile(&profile(None));
    let values = [
        ("card", "4111111111111111"),
        ("email", "jöhn@example.com"),
        ("ssn", "123-45-6789"),
        ("iban", "GB82WEST12345698765432"),
        ("phone", "+1-415-555-0142"),
        ("ipv4", "192.168.1.10"),
        ("ipv6", "2001:db8::1"),
        ("jwt", JWT),
        ("secret", "AKIAIOSFODNN7EXAMPLE"),
    ];
    for (rule, v) in values {
        for text in [
            v.to_string(),
            format!("{v} é"),
            format!("é {v}"),
            format!("→{v}←"),
            format!("«{v}»"),
            format!("日本：{v}。"),
        ] {
            let got = found(&d, &text);
            assert_eq!(got, [(rule.to_string(), v.to_string())], "{text:?}");
        }
    }
}

/// Every detector's value at every offset of a text longer than one window, so that
/// it crosses each 64-byte block boundary of the bitmap prefilter.
#[test]
fn every_offset_of_a_long_text() {
    let d = compile(&profile(None));
    let values = [
        ("card", "4111 1111 1111 1111"),
        ("card", "378282246310005"),
        ("email", "jane.doe@example.com"),
        ("ssn", "123-45-6789"),
        ("iban", "GB82WEST12345698765432"),
        ("iban", "DE89 3704 0044 0532 0130 00"),
        ("phone", "+1-415-555-0142"),
        ("phone", "1 (415) 555-0142"),
        ("phone", "(415) 555-0142"),
        ("ipv4", "192.168.1.10"),
        ("ipv6", "2001:db8::1"),
        ("jwt", JWT),
        ("secret", "AKIAIOSFODNN7EXAMPLE"),
    ];
    let filler = "Order shipped to Jane, total due by Friday; thanks! ".repeat(6);
    for (rule, v) in values {
        for offset in 0..200 {
            let text = format!("{} {v} {}", &filler[..offset], &filler[offset..]);
            let got = found(&d, &text);
            assert_eq!(
                got,
                [(rule.to_string(), v.to_string())],
                "{rule} at offset {offset} of a {}-byte text",
                text.len()
            );
        }
    }
}

#[test]
fn national_phone_regions() {
    let mut p = profile(Some(vec![Phone]));
    p.phone_regions = Some(vec!["GB".into(), "de".into(), "FR".into(), "IN".into()]);
    let d = compile(&p);
    let rows: &[Row] = &[
        ("020 7946 0958", &["020 7946 0958"]),
        ("07700 900123", &["07700 900123"]),
        ("0121 496 0000", &["0121 496 0000"]),
        ("07700900123", &["07700900123"]),
        ("030 12345678", &["030 12345678"]),
        ("030/12345678", &["030/12345678"]),
        ("0151 23456789", &["0151 23456789"]),
        ("01 23 45 67 89", &["01 23 45 67 89"]),
        ("01.23.45.67.89", &["01.23.45.67.89"]),
        ("98765 43210", &["98765 43210"]),
        ("011-2345-6789", &["011-2345-6789"]),
        ("+91 98765 43210", &["+91 98765 43210"]),
        // US forms are off when the list does not name US.
        ("415-555-0142", &[]),
        ("01 23 45 67", &[]),
        ("0000 000000", &[]),
    ];
    for &(input, want) in rows {
        let got: Vec<String> = found(&d, input).into_iter().map(|(_, v)| v).collect();
        assert_eq!(got, want, "{input:?}");
    }
    p.phone_regions = Some(vec!["US".into(), "XX".into()]);
    let err = Detectors::compile(&p).expect_err("unknown region");
    assert!(err.0.contains("phone_regions[1]"), "{err}");
}

#[test]
fn literals_and_patterns() {
    let mut p = profile(Some(vec![Email]));
    p.literals = vec![
        LiteralRule {
            name: "codename".into(),
            values: vec!["Project Falcon".into(), "falcon-x".into()],
            case_insensitive: true,
            style: None,
        },
        LiteralRule {
            name: "customer".into(),
            values: vec!["ACME".into()],
            case_insensitive: false,
            style: Some(Style::Partial),
        },
    ];
    p.patterns = vec![PatternRule {
        name: "employee_id".into(),
        regex: "EMP-[0-9]{6}".into(),
        style: Some(Style::Hash),
    }];
    let d = compile(&p);
    assert_eq!(
        d.rule_names(),
        ["email", "codename", "customer", "employee_id"]
    );
    assert_eq!(d.kind(0), Some(Email));
    assert_eq!(d.kind(1), None);
    assert_eq!(d.style(0), Style::Partial);
    assert_eq!(d.style(1), Style::Redact);
    assert_eq!(d.style(2), Style::Partial);
    assert_eq!(d.style(3), Style::Hash);
    assert_eq!(d.max_span_len(), 318);
    let got = found(
        &d,
        "PROJECT FALCON for acme/ACME by EMP-123456 (FALCON-X, a@b.io, EMP-12345)",
    );
    let want = [
        ("codename", "PROJECT FALCON"),
        ("customer", "ACME"),
        ("employee_id", "EMP-123456"),
        ("codename", "FALCON-X"),
        ("email", "a@b.io"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want);

    // Pattern matches are cut at 256 bytes, on a character boundary.
    p.patterns = vec![PatternRule {
        name: "long".into(),
        regex: "X[^;]+;".into(),
        style: None,
    }];
    let d = compile(&p);
    let text = format!("X{};", "é".repeat(300));
    let got = found(&d, &text);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.len(), 255);
}

#[test]
fn config_errors_name_the_field() {
    let cases: Vec<(ProfileConfig, &str)> = vec![
        {
            let mut p = profile(None);
            p.patterns = vec![PatternRule {
                name: "e".into(),
                regex: "a*".into(),
                style: None,
            }];
            (p, "patterns[0]")
        },
        {
            let mut p = profile(None);
            p.patterns = vec![PatternRule {
                name: "p".into(),
                regex: "(".into(),
                style: None,
            }];
            (p, "patterns[0]")
        },
        {
            let mut p = profile(None);
            p.patterns = vec![
                PatternRule {
                    name: "ok".into(),
                    regex: "abc".into(),
                    style: None,
                },
                PatternRule {
                    name: "huge".into(),
                    regex: "\\w{40}[0-9]\\w{60}".into(),
                    style: None,
                },
            ];
            (p, "patterns[1] (\"huge\")")
        },
        {
            let mut p = profile(None);
            p.literals = vec![LiteralRule {
                name: "l".into(),
                values: vec![],
                case_insensitive: false,
                style: None,
            }];
            (p, "literals[0]")
        },
        {
            let mut p = profile(None);
            p.literals = vec![LiteralRule {
                name: "l".into(),
                values: vec!["a".into(), String::new()],
                case_insensitive: false,
                style: None,
            }];
            (p, "literals[0] (\"l\").values[1]")
        },
        {
            let mut p = profile(None);
            p.literals = vec![LiteralRule {
                name: "email".into(),
                values: vec!["x".into()],
                case_insensitive: false,
                style: None,
            }];
            (p, "literals[0].name")
        },
        {
            let mut p = profile(None);
            p.literals = vec![LiteralRule {
                name: "dup".into(),
                values: vec!["x".into()],
                case_insensitive: false,
                style: None,
            }];
            p.patterns = vec![PatternRule {
                name: "dup".into(),
                regex: "y".into(),
                style: None,
            }];
            (p, "patterns[0].name")
        },
        {
            let mut p = profile(None);
            p.phone_regions = Some(vec!["ZZ".into()]);
            (p, "phone_regions[0]")
        },
    ];
    for (p, field) in cases {
        match Detectors::compile(&p) {
            Ok(_) => panic!("{field}: compiled"),
            Err(e) => assert!(e.0.contains(field), "{field}: {e}"),
        }
    }
}

#[test]
fn profile_switches() {
    let d = compile(&profile(Some(vec![])));
    assert!(d.is_empty());
    assert_eq!(d.max_span_len(), 0);
    let mut spans = Vec::new();
    d.find(b"4111111111111111 a@b.co", &mut spans);
    assert!(spans.is_empty());

    let all = compile(&profile(None));
    assert!(!all.is_empty());
    let names: Vec<&str> = DetectorKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(all.rule_names(), names);
    assert_eq!(all.max_span_len(), 8192);

    // Order follows DetectorKind::ALL whatever the order in the file.
    let mut p = profile(Some(vec![Secret, Card, Card]));
    p.style = Some(Style::Hash);
    p.detector_styles.insert(Card, Style::Redact);
    let d = compile(&p);
    assert_eq!(d.rule_names(), ["card", "secret"]);
    assert_eq!(d.style(0), Style::Redact);
    assert_eq!(d.style(1), Style::Hash);
    assert_eq!(d.style(99), Style::Redact);
    assert_eq!(d.kind(99), None);
}

fn key() -> MaskKey {
    MaskKey::new(b"test key")
}

fn masked(style: Style, kind: Option<DetectorKind>, value: &str) -> String {
    let mut out = b"prefix:".to_vec();
    mask_value(style, kind, value.as_bytes(), &key(), &mut out);
    let s = String::from_utf8(out).expect("masks of UTF-8 are UTF-8");
    s.strip_prefix("prefix:").expect("appends").to_string()
}

const STYLES: &[(Style, Option<DetectorKind>, &str, &str)] = &[
    (Style::Redact, Some(Card), "4111111111111111", "****"),
    (Style::Redact, None, "anything at all", "****"),
    (Style::Null, Some(Email), "a@b.co", "****"),
    (
        Style::Partial,
        Some(Card),
        "4242 4242 4242 4242",
        "**** **** **** 4242",
    ),
    (
        Style::Partial,
        Some(Card),
        "4242-4242-4242-4242",
        "****-****-****-4242",
    ),
    (
        Style::Partial,
        Some(Card),
        "4242424242424242",
        "************4242",
    ),
    (Style::Partial, Some(Ssn), "123-45-6789", "***-**-6789"),
    (
        Style::Partial,
        Some(Email),
        "john@example.com",
        "j***@*******.com",
    ),
    (
        Style::Partial,
        Some(Email),
        "x.y@mail.example.co.uk",
        "x**@****.*******.**.uk",
    ),
    (Style::Partial, Some(Email), "j@x.io", "*@*.io"),
    (
        Style::Partial,
        Some(Email),
        "josé@correo.es",
        "j***@******.es",
    ),
    (
        Style::Partial,
        Some(Phone),
        "+1-415-555-0142",
        "+*-***-***-**42",
    ),
    (
        Style::Partial,
        Some(Phone),
        "(415) 555-0142",
        "(***) ***-**42",
    ),
    (
        Style::Partial,
        Some(Iban),
        "GB82 WEST 1234 5698 7654 32",
        "GB** **** **** **** **54 32",
    ),
    (
        Style::Partial,
        Some(Iban),
        "GB82WEST12345698765432",
        "GB****************5432",
    ),
    (Style::Partial, Some(Ipv4), "192.168.1.10", "***.***.*.**"),
    (Style::Partial, Some(Ipv6), "fe80::1", "****::*"),
    (
        Style::Partial,
        Some(Ipv6),
        "::ffff:192.0.2.1",
        "::****:***.*.*.*",
    ),
    (Style::Partial, Some(Jwt), JWT, "eyJ****"),
    (
        Style::Partial,
        Some(Secret),
        "AKIAIOSFODNN7EXAMPLE",
        "AKIA****",
    ),
    (
        Style::Partial,
        Some(Secret),
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "sk_live_****",
    ),
    (
        Style::Partial,
        Some(Secret),
        "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "ghp_****",
    ),
    (
        Style::Partial,
        Some(Secret),
        "github_pat_11ABCDEFG0123456789_abcdefghijklmn",
        "github_pat_****",
    ),
    (
        Style::Partial,
        Some(Secret),
        "xoxb-123456789012-1234567890123",
        "xoxb-****",
    ),
    (
        Style::Partial,
        Some(Secret),
        PEM,
        "-----BEGIN RSA PRIVATE KEY-----****",
    ),
    (Style::Partial, Some(Secret), "unknown shape", "****"),
    (Style::Partial, None, "short", "****"),
    (Style::Partial, None, "12345678901", "****"),
    (Style::Partial, None, "123456789012", "********9012"),
    (Style::Partial, None, "ÄÖÜäöüßÄÖÜäöü", "*********Üäöü"),
];

#[test]
fn style_table() {
    let mut failures = Vec::new();
    for &(style, kind, value, want) in STYLES {
        let got = masked(style, kind, value);
        if got != want {
            failures.push(format!(
                "{style:?} {kind:?} {value:?}: {got:?}, want {want:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn partial_never_cuts_a_character_in_invalid_utf8() {
    // Not UTF-8: works on bytes, every masked byte becomes one '*'.
    let mut out = Vec::new();
    mask_value(
        Style::Partial,
        None,
        b"\xff\xfe0123456789ab",
        &key(),
        &mut out,
    );
    assert_eq!(out, b"**********89ab");
}

#[test]
fn hash_style() {
    let h1 = masked(Style::Hash, Some(Email), "john@example.com");
    assert!(h1.starts_with("h:"), "{h1}");
    assert_eq!(h1.len(), 18);
    assert!(h1[2..]
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    // Stable for one key, whatever found it (joins line up).
    assert_eq!(h1, masked(Style::Hash, None, "john@example.com"));
    assert_ne!(h1, masked(Style::Hash, Some(Email), "jane@example.com"));
    let mut other = Vec::new();
    mask_value(
        Style::Hash,
        None,
        b"john@example.com",
        &MaskKey::new(b"other key"),
        &mut other,
    );
    assert_ne!(h1.as_bytes(), other.as_slice());
}

#[test]
fn format_preserving_style() {
    let values = [
        "4111-1111-1111-1111",
        "John Smith",
        "john.doe@example.com",
        "+1 (415) 555-0142",
        "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz",
        "Zoë Ünal",
        "日本 42",
    ];
    for v in values {
        let m = masked(Style::FormatPreserving, None, v);
        assert_eq!(
            m,
            masked(Style::FormatPreserving, Some(Card), v),
            "deterministic"
        );
        assert_eq!(m.chars().count(), v.chars().count(), "{v:?} -> {m:?}");
        for (a, b) in v.chars().zip(m.chars()) {
            if a.is_ascii_digit() {
                assert!(b.is_ascii_digit() && a != b, "{v:?} -> {m:?}");
            } else if a.is_ascii_lowercase() {
                assert!(b.is_ascii_lowercase() && a != b, "{v:?} -> {m:?}");
            } else if a.is_ascii_uppercase() {
                assert!(b.is_ascii_uppercase() && a != b, "{v:?} -> {m:?}");
            } else if a.is_alphabetic() {
                assert!(b.is_ascii_alphabetic(), "{v:?} -> {m:?}");
                assert_eq!(a.is_uppercase(), b.is_ascii_uppercase(), "{v:?} -> {m:?}");
            } else if a.is_numeric() {
                assert!(b.is_ascii_digit(), "{v:?} -> {m:?}");
            } else {
                assert_eq!(a, b, "{v:?} -> {m:?}");
            }
        }
        let mut other = Vec::new();
        mask_value(
            Style::FormatPreserving,
            None,
            v.as_bytes(),
            &MaskKey::new(b"k2"),
            &mut other,
        );
        assert_ne!(m.as_bytes(), other.as_slice(), "keyed");
    }
    assert_eq!(masked(Style::FormatPreserving, None, "-- ,."), "-- ,.");
    // Invalid UTF-8 keeps its byte length and becomes ASCII.
    let mut out = Vec::new();
    mask_value(Style::FormatPreserving, None, b"\xff12ab", &key(), &mut out);
    assert_eq!(out.len(), 5);
    assert!(out.is_ascii());
}

#[test]
fn same_length_fill() {
    for v in [&b""[..], b"a", b"4111 1111 1111 1111", "é日".as_bytes()] {
        let mut out = b"x".to_vec();
        mask_same_length(v, &mut out);
        assert_eq!(out.len(), 1 + v.len());
        assert!(out[1..].iter().all(|&b| b == b'*'));
    }
}

#[test]
fn mask_into_rewrites_and_counts() {
    let d = compile(&profile(None));
    let k = key();
    let mut counts = vec![0u64; d.rule_names().len()];
    let mut scratch = Vec::new();
    let mut out = b"kept|".to_vec();

    // Nothing found: false, `out` untouched, nothing counted.
    assert!(!d.mask_into(
        b"Acme Corp, order 1234, 2024-03-15",
        &k,
        false,
        &mut out,
        &mut counts,
        &mut scratch
    ));
    assert_eq!(out, b"kept|");
    assert!(counts.iter().all(|&c| c == 0));

    let text = "Contact jöhn@example.com or +1-415-555-0142, cards 4111 1111 1111 1111 and 5555555555554444 ✓";
    assert!(d.mask_into(
        text.as_bytes(),
        &k,
        false,
        &mut out,
        &mut counts,
        &mut scratch
    ));
    assert_eq!(
        String::from_utf8(out.clone()).expect("utf-8"),
        "kept|Contact j***@*******.com or +*-***-***-**42, cards **** **** **** 1111 and ************4444 ✓"
    );
    let count = |counts: &[u64], name: &str| {
        counts[d.rule_names().iter().position(|n| n == name).expect("rule")]
    };
    let c = &counts;
    assert_eq!(
        (
            count(c, "email"),
            count(c, "phone"),
            count(c, "card"),
            count(c, "ssn")
        ),
        (1, 1, 2, 0)
    );

    // Same length: every span overwritten byte for byte.
    out.clear();
    assert!(d.mask_into(
        text.as_bytes(),
        &k,
        true,
        &mut out,
        &mut counts,
        &mut scratch
    ));
    assert_eq!(out.len(), text.len());
    assert_eq!(
        String::from_utf8(out.clone()).expect("utf-8"),
        "Contact ***************** or ***************, cards ******************* and **************** ✓"
    );
    assert_eq!(count(&counts, "card"), 4);

    // A counts slice that is too short is not a panic.
    out.clear();
    assert!(d.mask_into(b"a@b.co", &k, false, &mut out, &mut [], &mut scratch));
    assert_eq!(out, b"*@*.co");
}

#[test]
fn mask_into_styles_per_rule() {
    let mut p = profile(None);
    p.style = Some(Style::Redact);
    p.detector_styles.insert(Ssn, Style::Hash);
    p.detector_styles.insert(Card, Style::FormatPreserving);
    p.detector_styles.insert(Email, Style::Null);
    let d = compile(&p);
    let mut out = Vec::new();
    let mut counts = vec![0; d.rule_names().len()];
    let text = b"123-45-6789 4111111111111111 a@b.co 10.0.0.1";
    assert!(d.mask_into(text, &key(), false, &mut out, &mut counts, &mut Vec::new()));
    let s = String::from_utf8(out).expect("utf-8");
    let parts: Vec<&str> = s.split(' ').collect();
    assert!(parts[0].starts_with("h:") && parts[0].len() == 18, "{s}");
    assert!(
        parts[1].len() == 16 && parts[1].bytes().all(|b| b.is_ascii_digit()),
        "{s}"
    );
    assert_ne!(parts[1], "4111111111111111");
    assert_eq!(&parts[2..], ["****", "****"]);
}

// ---------------------------------------------------------------------------------------
// Property tests.

/// Pieces that make detectors fire, nearly fire, and overlap.
const PIECES: &[&str] = &[
    "4111111111111111",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "5555555555554444",
    "john@example.com",
    "a@b.co",
    "@",
    ".",
    "..",
    "-",
    " ",
    ",",
    ":",
    "::",
    "+",
    "(",
    ")",
    "123-45-6789",
    "123 45 6789",
    "GB82 WEST 1234 5698 7654 32",
    "DE89370400440532013000",
    "+1-415-555-0142",
    "(415) 555-0142",
    "415.555.0142",
    "192.168.1.10",
    "1.2.3.4.5",
    "2001:db8::1",
    "::ffff:1.2.3.4",
    "fe80::",
    JWT,
    "eyJ",
    "AKIAIOSFODNN7EXAMPLE",
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----END RSA PRIVATE KEY-----",
    "sk_live_",
    "ghp_",
    "xoxb-",
    "é",
    "日本",
    "0",
    "9",
    "42",
    "2024-03-15",
    "12:34:56",
    "falcon",
    "EMP-",
    "000123",
    "\"",
    "{",
    "}",
    "\n",
];

fn detector_shaped() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(prop::sample::select(PIECES), 0..24)
            .prop_map(|p| p.concat().into_bytes()),
        prop::collection::vec(
            prop_oneof![
                prop::sample::select(PIECES).prop_map(|s| s.as_bytes().to_vec()),
                prop::collection::vec(any::<u8>(), 1..4),
                prop::collection::vec(b'0'..=b'9', 1..20),
            ],
            0..16
        )
        .prop_map(|p| p.concat()),
    ]
}

/// Every detector, every phone region, a literal list and a pattern; `style` for all
/// (`None`: the defaults, partial for detectors).
fn everything(style: Option<Style>) -> Detectors {
    let mut p = profile(None);
    p.style = style;
    p.phone_regions = Some(vec![
        "US".into(),
        "GB".into(),
        "DE".into(),
        "FR".into(),
        "IN".into(),
    ]);
    p.literals = vec![LiteralRule {
        name: "codename".into(),
        values: vec!["falcon".into(), "EMP-000123".into()],
        case_insensitive: true,
        style: style.or(Some(Style::Partial)),
    }];
    p.patterns = vec![PatternRule {
        name: "employee".into(),
        regex: "EMP-[0-9]{3,}".into(),
        style: style.or(Some(Style::FormatPreserving)),
    }];
    compile(&p)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// `find` never panics and its spans are in bounds, ordered, non-overlapping and
    /// bounded; `mask_into` writes the text with each span replaced by its rule's mask
    /// (which never contains the original of a span of 4 bytes or more), counts each,
    /// and keeps the length with `same_length`.
    #[test]
    fn find_and_mask_invariants(text in detector_shaped(), same_length in any::<bool>()) {
        let d = everything(None);
        let k = key();
        let mut spans = Vec::new();
        d.find(&text, &mut spans);
        check_spans(&d, &text, &spans);

        // `find` appends: a second call after existing spans leaves them alone.
        let mut again = vec![Span { start: 0, end: 0, rule: 0 }];
        d.find(&text, &mut again);
        prop_assert_eq!(&again[1..], &spans[..]);

        let mut out = Vec::new();
        let mut counts = vec![0u64; d.rule_names().len()];
        let changed = d.mask_into(&text, &k, same_length, &mut out, &mut counts, &mut Vec::new());
        prop_assert_eq!(changed, !spans.is_empty());
        prop_assert_eq!(counts.iter().sum::<u64>(), spans.len() as u64);
        if !changed {
            prop_assert!(out.is_empty());
            return Ok(());
        }
        let mut want = Vec::new();
        let mut pos = 0;
        for s in &spans {
            want.extend_from_slice(&text[pos..s.start]);
            let original = &text[s.start..s.end];
            let mut replacement = Vec::new();
            if same_length {
                mask_same_length(original, &mut replacement);
            } else {
                mask_value(d.style(s.rule), d.kind(s.rule), original, &k, &mut replacement);
            }
            prop_assert!(
                original.len() < 4 || memchr::memmem::find(&replacement, original).is_none(),
                "{:?} masked as {:?}", String::from_utf8_lossy(original), String::from_utf8_lossy(&replacement)
            );
            want.extend_from_slice(&replacement);
            pos = s.end;
        }
        want.extend_from_slice(&text[pos..]);
        prop_assert_eq!(&out, &want);
        if same_length {
            prop_assert_eq!(out.len(), text.len());
        }
    }

    /// With styles that write only `*`, the original of a span (4 bytes or more) is
    /// nowhere in the output, unless the text has it outside every span too (`1.2.3.4
    /// v1.2.3.4`: the second is not an address). (`partial` keeps parts by design, a TLD,
    /// the last digits, and `hash` writes hex digits: either may happen to spell another
    /// span's text together with the text next to it; `find_and_mask_invariants` checks
    /// every style's replacement on its own.)
    #[test]
    fn nothing_of_a_span_survives(text in detector_shaped(), style in prop::sample::select(vec![Style::Redact, Style::Null])) {
        let d = everything(Some(style));
        let mut spans = Vec::new();
        d.find(&text, &mut spans);
        let mut out = Vec::new();
        let mut counts = vec![0u64; d.rule_names().len()];
        d.mask_into(&text, &key(), false, &mut out, &mut counts, &mut Vec::new());
        // The text outside every span, spans replaced by a byte no mask writes.
        let mut outside = Vec::new();
        let mut pos = 0;
        for s in &spans {
            outside.extend_from_slice(&text[pos..s.start]);
            outside.push(0);
            pos = s.end;
        }
        outside.extend_from_slice(&text[pos..]);
        for s in &spans {
            let original = &text[s.start..s.end];
            if original.len() < 4 || memchr::memmem::find(&outside, original).is_some() {
                continue;
            }
            prop_assert!(
                memchr::memmem::find(&out, original).is_none(),
                "{:?} survives in {:?}", String::from_utf8_lossy(original), String::from_utf8_lossy(&out)
            );
        }
    }
}
