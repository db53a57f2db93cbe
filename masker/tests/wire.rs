//! The session masker against protocol sequences built frame by frame: simple and extended
//! protocol (tokio-postgres and `pgbench -M prepared` shapes), text and binary formats,
//! catalog-resolved table rules, fail-closed paths, errors, notifications, function calls
//! and COPY streams split at every byte.

use std::sync::Arc;

use proptest::prelude::*;
use sluice_masker::{
    CatalogColumn, ColumnInfo, ColumnVerdict, Masker, ProfileConfig, SessionMasker, Style,
};

// ---- frames ----

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

fn query(sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql.as_bytes());
    b
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name.as_bytes());
    cstr(&mut b, sql.as_bytes());
    b.extend_from_slice(&0u16.to_be_bytes());
    b
}

fn bind(portal: &str, statement: &str, params: &[&[u8]], formats: &[i16]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal.as_bytes());
    cstr(&mut b, statement.as_bytes());
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as i32).to_be_bytes());
        b.extend_from_slice(p);
    }
    b.extend_from_slice(&(formats.len() as u16).to_be_bytes());
    for f in formats {
        b.extend_from_slice(&f.to_be_bytes());
    }
    b
}

fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    cstr(&mut b, name.as_bytes());
    b
}

fn execute(portal: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal.as_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b
}

/// A RowDescription: (name, table OID, attnum, type OID, format).
fn row_description(fields: &[(&str, u32, i16, u32, i16)]) -> Vec<u8> {
    let mut b = (fields.len() as u16).to_be_bytes().to_vec();
    for (name, table, attnum, ty, format) in fields {
        cstr(&mut b, name.as_bytes());
        b.extend_from_slice(&table.to_be_bytes());
        b.extend_from_slice(&attnum.to_be_bytes());
        b.extend_from_slice(&ty.to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&format.to_be_bytes());
    }
    b
}

fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
    let mut b = (values.len() as u16).to_be_bytes().to_vec();
    for v in values {
        match v {
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
        }
    }
    b
}

fn fields(fields: &[(u8, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (code, v) in fields {
        b.push(*code);
        cstr(&mut b, v.as_bytes());
    }
    b.push(0);
    b
}

fn command_complete(tag: &str) -> Vec<u8> {
    query(tag)
}

fn copy_response(format: u8, columns: u16) -> Vec<u8> {
    let mut b = vec![format];
    b.extend_from_slice(&columns.to_be_bytes());
    for _ in 0..columns {
        b.extend_from_slice(&i16::from(format).to_be_bytes());
    }
    b
}

/// Splits `out` into whole frames, checking every length.
fn split_frames(mut out: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !out.is_empty() {
        assert!(out.len() >= 5, "truncated frame header");
        let tag = out[0];
        let len = u32::from_be_bytes(out[1..5].try_into().unwrap()) as usize;
        assert!(
            len >= 4 && out.len() > len,
            "frame length {len} overruns the output"
        );
        frames.push((tag, out[5..1 + len].to_vec()));
        out = &out[1 + len..];
    }
    frames
}

/// A DataRow body's values, checking that the lengths add up.
fn values(body: &[u8]) -> Vec<Option<Vec<u8>>> {
    let n = u16::from_be_bytes(body[..2].try_into().unwrap()) as usize;
    let mut rest = &body[2..];
    let mut vals = Vec::new();
    for _ in 0..n {
        let len = i32::from_be_bytes(rest[..4].try_into().unwrap());
        rest = &rest[4..];
        if len < 0 {
            assert_eq!(len, -1);
            vals.push(None);
        } else {
            vals.push(Some(rest[..len as usize].to_vec()));
            rest = &rest[len as usize..];
        }
    }
    assert!(rest.is_empty(), "DataRow has trailing bytes");
    vals
}

fn field_value(body: &[u8], code: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&c, tail)) = rest.split_first() {
        if c == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap();
        if c == code {
            return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
        }
        rest = &tail[end + 1..];
    }
    None
}

// ---- harness ----

fn profile(toml_text: &str) -> ProfileConfig {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("bad test profile: {e}"))
}

fn masker(toml_text: &str) -> Arc<Masker> {
    Arc::new(Masker::compile("test", &profile(toml_text), b"test key").unwrap())
}

struct Session {
    sm: SessionMasker,
}

impl Session {
    fn new(toml_text: &str) -> Session {
        Session {
            sm: SessionMasker::new(masker(toml_text)),
        }
    }

    fn client(&mut self, tag: u8, body: &[u8]) {
        assert!(SessionMasker::inspects_client(tag));
        self.sm.client_frame(tag, body);
    }

    /// What the client receives for one backend frame.
    fn backend(&mut self, tag: u8, body: &[u8]) -> Vec<(u8, Vec<u8>)> {
        assert!(SessionMasker::inspects_backend(tag));
        let mut out = Vec::new();
        if self.sm.backend_frame(tag, body, &mut out) {
            split_frames(&out)
        } else {
            assert!(out.is_empty(), "returned false but wrote to out");
            vec![(tag, body.to_vec())]
        }
    }

    /// Whether the frame was forwarded unchanged (zero copy).
    fn forwards(&mut self, tag: u8, body: &[u8]) -> bool {
        let mut out = Vec::new();
        let rewritten = self.sm.backend_frame(tag, body, &mut out);
        !rewritten
    }

    /// The rows the client receives for one DataRow, and the notices before it.
    fn row(&mut self, vals: &[Option<&[u8]>]) -> (Vec<Option<Vec<u8>>>, Vec<Vec<u8>>) {
        let frames = self.backend(b'D', &data_row(vals));
        let mut notices = Vec::new();
        let mut row = None;
        for (tag, body) in frames {
            match tag {
                b'N' => notices.push(body),
                b'D' => {
                    assert!(row.is_none(), "two rows for one");
                    row = Some(values(&body));
                }
                other => panic!("unexpected frame {}", other as char),
            }
        }
        (row.expect("no row"), notices)
    }

    fn ready(&mut self) {
        self.backend(b'Z', b"I");
    }

    fn counts(&self) -> Vec<(String, u64)> {
        self.sm.counts().map(|(n, c)| (n.to_owned(), c)).collect()
    }
}

fn v(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

const STARS: &str = "****";

// ---- simple protocol ----

#[test]
fn simple_query_masks_a_named_column() {
    let mut s = Session::new(
        r#"
        detectors = []
        [[columns]]
        name = "pii-email"
        column = "*email*"
        "#,
    );
    s.client(b'Q', &query("SELECT id, email, name FROM customers"));
    s.backend(
        b'T',
        &row_description(&[
            ("id", 0, 0, 23, 0),
            ("Work_Email", 0, 0, 25, 0),
            ("name", 0, 0, 25, 0),
        ]),
    );
    let (row, notices) = s.row(&[Some(b"1"), Some(b"ann@example.com"), Some(b"Ann")]);
    assert!(notices.is_empty());
    assert_eq!(row, vec![v("1"), v(STARS), v("Ann")]);
    // NULL stays NULL and is not counted.
    let (row, _) = s.row(&[Some(b"2"), None, Some(b"Bob")]);
    assert_eq!(row, vec![v("2"), None, v("Bob")]);
    s.backend(b'C', &command_complete("SELECT 2"));
    s.ready();
    assert_eq!(s.counts(), vec![("pii-email".to_owned(), 1)]);
}

#[test]
fn rows_of_unmasked_results_are_forwarded_unread() {
    let mut s = Session::new(
        r#"
        detectors = []
        [[columns]]
        column = "ssn"
        "#,
    );
    s.client(
        b'Q',
        &query("SELECT abalance FROM pgbench_accounts WHERE aid = 1"),
    );
    assert!(s.forwards(b'T', &row_description(&[("abalance", 16400, 3, 23, 0)])));
    for _ in 0..3 {
        assert!(s.forwards(b'D', &data_row(&[Some(b"4111111111111111")])));
    }
    // Even a row that does not read as one: an all-pass plan never looks.
    assert!(s.forwards(b'D', b"\0\x01garbage"));
    assert!(s.forwards(b'C', &command_complete("SELECT 1")));
    assert!(s.forwards(b'Z', b"I"));
    assert_eq!(s.counts(), vec![]);
}

#[test]
fn an_inert_profile_touches_nothing() {
    let mut s = Session::new("detectors = []");
    s.client(b'Q', &query("SELECT 1"));
    assert!(s.forwards(b'D', &data_row(&[Some(b"ann@example.com")])));
    assert!(s.forwards(b'E', &fields(&[(b'M', "ann@example.com")])));
    assert!(s.forwards(b'd', b"ann@example.com\n"));
}

#[test]
fn styles_null_and_json_columns() {
    let mut s = Session::new(
        r#"
        detectors = []
        [[columns]]
        column = "gone"
        style = "null"
        [[columns]]
        column = "doc*"
        "#,
    );
    s.client(b'Q', &query("SELECT gone, doc, docb FROM t"));
    s.backend(
        b'T',
        &row_description(&[
            ("gone", 0, 0, 25, 0),
            ("doc", 0, 0, 114, 0),
            ("docb", 0, 0, 3802, 0),
        ]),
    );
    let (row, _) = s.row(&[Some(b"x"), Some(br#"{"a":1}"#), Some(br#"{"b":2}"#)]);
    assert_eq!(row, vec![None, v("\"****\""), v("\"****\"")]);
}

#[test]
fn binary_values_with_rules_and_detectors() {
    let mut s = Session::new(
        r#"
        detectors = ["email"]
        [[columns]]
        column = "doc"
        "#,
    );
    s.client(b'P', &parse("", "SELECT doc, note, tags, raw, n FROM t"));
    s.client(b'B', &bind("", "", &[], &[1]));
    s.client(b'D', &describe(b'P', ""));
    s.client(b'E', &execute(""));
    s.client(b'S', b"");
    s.backend(b'1', b"");
    s.backend(b'2', b"");
    s.backend(
        b'T',
        &row_description(&[
            ("doc", 0, 0, 3802, 1),
            ("note", 0, 0, 25, 1),
            ("tags", 0, 0, 1009, 1),
            ("raw", 0, 0, 17, 1),
            ("n", 0, 0, 20, 1),
        ]),
    );
    let mut array = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 25, 0, 0, 0, 1, 0, 0, 0, 1];
    array.extend_from_slice(&15i32.to_be_bytes());
    array.extend_from_slice(b"ann@example.com");
    let (row, notices) = s.row(&[
        Some(b"\x01{\"a\": 1}"),
        Some(b"write to ann@example.com"),
        Some(&array),
        Some(b"\x00ann@example.com\xff"),
        Some(&7i64.to_be_bytes()),
    ]);
    assert!(notices.is_empty());
    assert_eq!(
        row[0],
        Some(b"\x01\"****\"".to_vec()),
        "jsonb keeps its version byte"
    );
    let note = row[1].clone().unwrap();
    assert!(note.starts_with(b"write to ") && !note.ends_with(b"ann@example.com"));
    let tags = row[2].clone().unwrap();
    assert_eq!(tags.len(), array.len(), "arrays are masked in place");
    assert_eq!(tags[..24], array[..24], "their length prefixes stay");
    assert!(!String::from_utf8_lossy(&tags).contains("ann@example.com"));
    let raw = row[3].clone().unwrap();
    assert_eq!(raw.len(), 17);
    assert!(!String::from_utf8_lossy(&raw).contains("ann@example.com"));
    assert_eq!(
        row[4],
        Some(7i64.to_be_bytes().to_vec()),
        "binary int8 is not scanned"
    );
}

// ---- table rules and the catalog ----

const CUSTOMERS: u32 = 16_385;
const ORDERS: u32 = 16_390;

fn catalog() -> Vec<CatalogColumn> {
    let col = |oid, attnum, table: &str, column: &str| CatalogColumn {
        table_oid: oid,
        attnum,
        schema: "public".into(),
        table: table.into(),
        column: column.into(),
    };
    vec![
        col(CUSTOMERS, 1, "customers", "id"),
        col(CUSTOMERS, 2, "customers", "email"),
        col(CUSTOMERS, 3, "customers", "name"),
        col(ORDERS, 1, "orders", "id"),
        col(ORDERS, 2, "orders", "email"),
    ]
}

#[test]
fn table_rules_see_through_aliases_and_name_rules_do_not() {
    let toml = r#"
        detectors = []
        [[columns]]
        name = "customer-email"
        table = "public.cust*"
        column = "email"
        style = "hash"
        [[columns]]
        name = "contact"
        column = "contact"
    "#;
    let m = masker(toml);
    let sql = m.catalog_query().expect("a table rule needs the catalog");
    assert!(sql.contains("E'public.cust%'"), "{sql}");
    let mut s = Session {
        sm: SessionMasker::new(m),
    };
    s.sm.set_catalog(catalog());
    s.client(
        b'Q',
        &query("SELECT c.email AS contact_addr, o.email, c.name AS contact FROM ..."),
    );
    s.backend(
        b'T',
        &row_description(&[
            ("contact_addr", CUSTOMERS, 2, 25, 0),
            ("email", ORDERS, 2, 25, 0),
            ("contact", CUSTOMERS, 3, 25, 0),
        ]),
    );
    let (row, _) = s.row(&[
        Some(b"ann@example.com"),
        Some(b"ops@example.com"),
        Some(b"Ann"),
    ]);
    let hashed = row[0].clone().unwrap();
    assert_ne!(
        hashed, b"ann@example.com",
        "the alias hid the source column"
    );
    assert_eq!(
        row[1],
        v("ops@example.com"),
        "orders is not a customers table"
    );
    assert_eq!(row[2], v(STARS), "the name rule sees the alias");
    // A table the catalog does not know matches no table rule.
    s.backend(b'C', &command_complete("SELECT 1"));
    s.ready();
    s.client(b'Q', &query("SELECT email FROM new_table"));
    s.backend(b'T', &row_description(&[("email", 99_999, 2, 25, 0)]));
    let (row, _) = s.row(&[Some(b"ann@example.com")]);
    assert_eq!(row, vec![v("ann@example.com")]);
}

#[test]
fn catalog_rows_read_from_text() {
    let row: Vec<Option<&[u8]>> = vec![
        Some(b"16385"),
        Some(b"2"),
        Some(b"public"),
        Some(b"customers"),
        Some(b"email"),
    ];
    assert_eq!(
        CatalogColumn::from_text_row(&row),
        Some(CatalogColumn {
            table_oid: 16385,
            attnum: 2,
            schema: "public".into(),
            table: "customers".into(),
            column: "email".into(),
        })
    );
    assert_eq!(CatalogColumn::from_text_row(&row[..4]), None);
    assert_eq!(masker("detectors = []").catalog_query(), None);
}

// ---- extended protocol ----

/// tokio-postgres: prepare = Parse + Describe(S) + Sync; query = Bind (binary results) +
/// Execute + Sync, with no RowDescription before the rows.
#[test]
fn extended_describe_statement_then_bind_binary_and_execute() {
    let mut s = Session::new(
        r#"
        detectors = []
        [[columns]]
        name = "pii"
        column = "email"
        [[columns]]
        name = "balance"
        column = "balance"
        "#,
    );
    s.client(
        b'P',
        &parse(
            "s1",
            "SELECT id, email, balance FROM customers WHERE id = $1",
        ),
    );
    s.client(b'D', &describe(b'S', "s1"));
    s.client(b'S', b"");
    assert!(s.forwards(b'1', b""));
    assert!(s.forwards(b't', b"\0\x01\0\0\0\x17"));
    assert!(s.forwards(
        b'T',
        &row_description(&[
            ("id", 0, 0, 23, 0),
            ("email", 0, 0, 25, 0),
            ("balance", 0, 0, 20, 0),
        ])
    ));
    s.ready();

    for id in 1..=3u32 {
        s.client(b'B', &bind("", "s1", &[&id.to_be_bytes()], &[1]));
        s.client(b'E', &execute(""));
        s.client(b'S', b"");
        assert!(s.forwards(b'2', b""));
        let (row, notices) = s.row(&[
            Some(&id.to_be_bytes()),
            Some(b"ann@example.com"),
            Some(&1234i64.to_be_bytes()),
        ]);
        assert_eq!(
            row,
            vec![Some(id.to_be_bytes().to_vec()), v(STARS), None],
            "binary text rewritten, binary int8 NULL"
        );
        assert_eq!(notices.len(), 1, "one notice per plan");
        let message = field_value(&notices[0], b'M').unwrap();
        assert!(message.contains("\"balance\""), "{message}");
        assert!(!message.contains("1234"), "{message}");
        assert_eq!(field_value(&notices[0], b'C').as_deref(), Some("01000"));
        // A second row of the same execution: no second notice.
        let (_, notices) = s.row(&[Some(b"\0\0\0\x09"), None, None]);
        assert!(notices.is_empty());
        s.backend(b'C', &command_complete("SELECT 2"));
        s.ready();
    }
}

/// `pgbench -M prepared` (libpq PQexecPrepared): Parse once, then per transaction Bind +
/// Describe(P) + Execute + Sync, the portal's RowDescription carrying the real formats.
#[test]
fn extended_describe_portal_each_time() {
    let mut s = Session::new(
        r#"
        detectors = []
        [[columns]]
        column = "filler"
        style = "null"
        "#,
    );
    s.client(
        b'P',
        &parse(
            "P0_1",
            "SELECT abalance, filler FROM pgbench_accounts WHERE aid = $1",
        ),
    );
    s.client(b'S', b"");
    s.backend(b'1', b"");
    s.ready();
    for _ in 0..5 {
        s.client(b'B', &bind("", "P0_1", &[b"7"], &[]));
        s.client(b'D', &describe(b'P', ""));
        s.client(b'E', &execute(""));
        s.client(b'S', b"");
        s.backend(b'2', b"");
        s.backend(
            b'T',
            &row_description(&[("abalance", 16400, 3, 23, 0), ("filler", 16400, 4, 1042, 0)]),
        );
        let (row, notices) = s.row(&[Some(b"0"), Some(b"   filler   ")]);
        assert!(notices.is_empty());
        assert_eq!(row, vec![v("0"), None]);
        s.backend(b'C', &command_complete("SELECT 1"));
        s.ready();
    }
    assert_eq!(s.counts(), vec![("column:filler".to_owned(), 5)]);
}

#[test]
fn pipelined_parse_describe_bind_execute_before_any_response() {
    let mut s = Session::new(
        r#"
        detectors = []
        [[columns]]
        column = "email"
        "#,
    );
    // Everything is sent before the first response arrives.
    s.client(b'P', &parse("", "SELECT email FROM c"));
    s.client(b'D', &describe(b'S', ""));
    s.client(b'B', &bind("", "", &[], &[1]));
    s.client(b'E', &execute(""));
    s.client(b'P', &parse("", "SELECT 1 AS one"));
    s.client(b'B', &bind("", "", &[], &[]));
    s.client(b'D', &describe(b'P', ""));
    s.client(b'E', &execute(""));
    s.client(b'S', b"");
    s.backend(b'1', b"");
    s.backend(b't', b"\0\0");
    s.backend(b'T', &row_description(&[("email", 0, 0, 1043, 0)]));
    s.backend(b'2', b"");
    let (row, notices) = s.row(&[Some(b"ann@example.com")]);
    assert_eq!((row, notices.len()), (vec![v(STARS)], 0));
    s.backend(b'C', &command_complete("SELECT 1"));
    s.backend(b'1', b"");
    s.backend(b'2', b"");
    s.backend(b'T', &row_description(&[("one", 0, 0, 23, 0)]));
    assert!(s.forwards(b'D', &data_row(&[Some(b"1")])));
    s.backend(b'C', &command_complete("SELECT 1"));
    s.ready();
}

#[test]
fn rows_of_an_undescribed_statement_are_masked_fail_closed() {
    let mut s = Session::new(
        r#"
        detectors = []
        [[columns]]
        column = "secret"
        "#,
    );
    s.client(b'P', &parse("", "SELECT id, note, n FROM t"));
    s.client(b'B', &bind("", "", &[], &[0, 0, 1]));
    s.client(b'E', &execute(""));
    s.client(b'S', b"");
    s.backend(b'1', b"");
    s.backend(b'2', b"");
    let (row, notices) = s.row(&[Some(b"1"), Some(b"hello"), Some(b"\0\0\0\x01")]);
    assert_eq!(row, vec![v(STARS), v(STARS), None]);
    assert_eq!(notices.len(), 1);
    let message = field_value(&notices[0], b'M').unwrap();
    assert!(message.contains("could not see the columns"), "{message}");
    assert!(field_value(&notices[0], b'H')
        .unwrap()
        .contains("Describe the statement"));
    let (row, notices) = s.row(&[None, Some(b"x"), None]);
    assert_eq!((row, notices.len()), (vec![None, v(STARS), None], 0));
    s.backend(b'C', &command_complete("SELECT 2"));
    s.ready();
    assert_eq!(s.counts(), vec![("unknown-columns".to_owned(), 4)]);
}

#[test]
fn undescribed_rows_without_column_rules_go_through_the_detectors() {
    let mut s = Session::new("detectors = [\"email\"]");
    s.client(b'B', &bind("", "", &[], &[]));
    s.client(b'E', &execute(""));
    s.client(b'S', b"");
    s.backend(b'2', b"");
    let (row, notices) = s.row(&[Some(b"mail ann@example.com now"), Some(b"plain")]);
    assert!(notices.is_empty());
    let masked = String::from_utf8(row[0].clone().unwrap()).unwrap();
    assert!(
        !masked.contains("ann@example.com") && masked.starts_with("mail "),
        "{masked}"
    );
    assert_eq!(row[1], v("plain"));
}

#[test]
fn an_error_skips_to_sync_and_the_session_stays_in_step() {
    let mut s = Session::new(
        r#"
        detectors = []
        [[columns]]
        column = "email"
        "#,
    );
    s.client(b'P', &parse("good", "SELECT email FROM c"));
    s.client(b'D', &describe(b'S', "good"));
    s.client(b'S', b"");
    s.backend(b'1', b"");
    s.backend(b't', b"\0\0");
    s.backend(b'T', &row_description(&[("email", 0, 0, 25, 0)]));
    s.ready();
    // A batch whose first Execute fails: the server skips to the Sync, so the Parse of
    // "good" that came next never happened and "good" keeps its description.
    s.client(b'B', &bind("", "good", &[], &[]));
    s.client(b'E', &execute(""));
    s.client(b'P', &parse("good", "SELECT 1"));
    s.client(b'D', &describe(b'S', "good"));
    s.client(b'B', &bind("", "good", &[], &[]));
    s.client(b'E', &execute(""));
    s.client(b'S', b"");
    s.backend(b'2', b"");
    s.backend(
        b'E',
        &fields(&[(b'S', "ERROR"), (b'C', "57014"), (b'M', "canceled")]),
    );
    s.ready();
    s.client(b'B', &bind("", "good", &[], &[]));
    s.client(b'E', &execute(""));
    s.client(b'S', b"");
    s.backend(b'2', b"");
    let (row, notices) = s.row(&[Some(b"ann@example.com")]);
    assert_eq!((row, notices.len()), (vec![v(STARS)], 0));
    s.backend(b'C', &command_complete("SELECT 1"));
    s.ready();
    // And a simple query after it is in step too (no fail-closed notice).
    s.client(b'Q', &query("SELECT 1 AS x"));
    s.backend(b'T', &row_description(&[("x", 0, 0, 23, 0)]));
    assert!(s.forwards(b'D', &data_row(&[Some(b"1")])));
}

#[test]
fn a_refused_parse_of_a_named_statement_keeps_the_old_one() {
    let mut s = Session::new(
        r#"
        detectors = []
        [[columns]]
        column = "email"
        "#,
    );
    s.client(b'P', &parse("q", "SELECT email FROM c"));
    s.client(b'D', &describe(b'S', "q"));
    s.client(b'S', b"");
    s.backend(b'1', b"");
    s.backend(b't', b"\0\0");
    s.backend(b'T', &row_description(&[("email", 0, 0, 25, 0)]));
    s.ready();
    s.client(b'P', &parse("q", "SELECT 1"));
    s.client(b'S', b"");
    s.backend(
        b'E',
        &fields(&[
            (b'C', "42P05"),
            (b'M', "prepared statement \"q\" already exists"),
        ]),
    );
    s.ready();
    s.client(b'B', &bind("", "q", &[], &[]));
    s.client(b'E', &execute(""));
    s.client(b'S', b"");
    s.backend(b'2', b"");
    let (row, notices) = s.row(&[Some(b"ann@example.com")]);
    assert_eq!((row, notices.len()), (vec![v(STARS)], 0));
}

#[test]
fn sql_prepare_forgets_protocol_statement_descriptions() {
    let mut s = Session::new(
        r#"
        detectors = []
        [[columns]]
        column = "ssn"
        "#,
    );
    s.client(b'P', &parse("s", "SELECT 1 AS n"));
    s.client(b'D', &describe(b'S', "s"));
    s.client(b'S', b"");
    s.backend(b'1', b"");
    s.backend(b't', b"\0\0");
    s.backend(b'T', &row_description(&[("n", 0, 0, 25, 0)]));
    s.ready();
    // The statement is redefined from SQL, behind the protocol's back.
    s.client(
        b'Q',
        &query("DEALLOCATE s; PREPARE s AS SELECT ssn FROM people"),
    );
    s.backend(b'C', &command_complete("DEALLOCATE"));
    s.backend(b'C', &command_complete("PREPARE"));
    s.ready();
    s.client(b'B', &bind("", "s", &[], &[]));
    s.client(b'E', &execute(""));
    s.client(b'S', b"");
    s.backend(b'2', b"");
    let (row, notices) = s.row(&[Some(b"078-05-1120")]);
    assert_eq!((row, notices.len()), (vec![v(STARS)], 1));
}

#[test]
fn an_unexpected_sequence_masks_fail_closed_until_back_in_step() {
    let mut s = Session::new(
        r#"
        detectors = []
        [[columns]]
        column = "secret"
        "#,
    );
    s.client(b'Q', &query("SELECT 1 AS x"));
    // BindComplete in answer to a Query: not a sequence we can follow.
    s.backend(b'2', b"");
    s.backend(b'T', &row_description(&[("x", 0, 0, 25, 0)]));
    let (row, notices) = s.row(&[Some(b"1")]);
    assert_eq!((row, notices.len()), (vec![None], 1));
    s.backend(b'C', &command_complete("SELECT 1"));
    s.ready();
    s.client(b'Q', &query("SELECT 1 AS x"));
    s.backend(b'T', &row_description(&[("x", 0, 0, 25, 0)]));
    assert!(s.forwards(b'D', &data_row(&[Some(b"1")])));
}

#[test]
fn a_queue_past_its_cap_masks_fail_closed_then_recovers() {
    let mut s = Session::new(
        r#"
        detectors = []
        [[columns]]
        column = "secret"
        "#,
    );
    let n = 5000;
    for _ in 0..n {
        s.client(b'Q', &query("SELECT 1 AS x"));
    }
    for _ in 0..n {
        s.backend(b'T', &row_description(&[("x", 0, 0, 25, 0)]));
        let (row, _) = s.row(&[Some(b"1")]);
        assert_eq!(row, vec![None], "masked while the backlog drains");
        s.backend(b'C', &command_complete("SELECT 1"));
        s.ready();
    }
    s.client(b'Q', &query("SELECT 1 AS x"));
    s.backend(b'T', &row_description(&[("x", 0, 0, 25, 0)]));
    assert!(s.forwards(b'D', &data_row(&[Some(b"1")])));
}

#[test]
fn malformed_rows_come_out_well_formed_and_masked() {
    let mut s = Session::new(
        r#"
        detectors = []
        [[columns]]
        column = "email"
        "#,
    );
    s.client(b'Q', &query("SELECT email, name FROM c"));
    s.backend(
        b'T',
        &row_description(&[("email", 0, 0, 25, 0), ("name", 0, 0, 25, 0)]),
    );
    // Second length overruns the body.
    let mut body = data_row(&[Some(b"ann@example.com"), Some(b"Ann")]);
    body.truncate(body.len() - 1);
    let (tag, out) = s.backend(b'D', &body).pop().unwrap();
    assert_eq!(tag, b'D');
    assert_eq!(values(&out), vec![None, None]);
    // Trailing bytes.
    let mut body = data_row(&[Some(b"ann@example.com"), Some(b"Ann")]);
    body.extend_from_slice(b"xx");
    let (_, out) = s.backend(b'D', &body).pop().unwrap();
    assert_eq!(values(&out), vec![None, None]);
    // A column count that is not the description's.
    let (row, _) = s.row(&[Some(b"Ann")]);
    assert_eq!(row, vec![None]);
    // Nothing at all.
    let (_, out) = s.backend(b'D', b"").pop().unwrap();
    assert_eq!(values(&out), vec![]);
}

#[test]
fn function_call_results_go_through_the_detectors() {
    let mut s = Session::new("detectors = [\"email\"]");
    let mut call = 1234u32.to_be_bytes().to_vec();
    call.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // no arg formats, no args, text result
    s.client(b'F', &call);
    let mut body = 17i32.to_be_bytes().to_vec();
    body.extend_from_slice(b"x ann@example.com");
    let frames = s.backend(b'V', &body);
    let (tag, out) = &frames[0];
    assert_eq!(*tag, b'V');
    let len = i32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
    assert_eq!(len, out.len() - 4);
    assert!(!String::from_utf8_lossy(&out[4..]).contains("ann@example.com"));
    s.ready();
}

// ---- errors, notices, notifications ----

#[test]
fn error_details_are_masked() {
    let mut s = Session::new("detectors = [\"card\", \"email\"]");
    s.client(
        b'Q',
        &query("INSERT INTO cards VALUES ('4111 1111 1111 1111')"),
    );
    let frames = s.backend(
        b'E',
        &fields(&[
            (b'S', "ERROR"),
            (b'V', "ERROR"),
            (b'C', "23505"),
            (
                b'M',
                "duplicate key value violates unique constraint \"cards_pkey\"",
            ),
            (
                b'D',
                "Key (card_number)=(4111 1111 1111 1111) already exists.",
            ),
            (b's', "public"),
            (b't', "cards"),
            (b'n', "cards_pkey"),
        ]),
    );
    let (tag, body) = &frames[0];
    assert_eq!(*tag, b'E');
    let detail = field_value(body, b'D').unwrap();
    assert!(detail.starts_with("Key (card_number)=("), "{detail}");
    assert!(!detail.contains("4111 1111 1111 1111"), "{detail}");
    assert_eq!(field_value(body, b'C').as_deref(), Some("23505"));
    assert_eq!(field_value(body, b'n').as_deref(), Some("cards_pkey"));
    s.ready();

    // A column rule masks the key's values whole, whatever they are.
    let mut s = Session::new(
        r#"
        detectors = []
        [[columns]]
        name = "ids"
        column = "national_id"
        "#,
    );
    s.client(b'Q', &query("INSERT ..."));
    let detail = |s: &mut Session, d: &str| {
        let frames = s.backend(b'E', &fields(&[(b'C', "23505"), (b'D', d)]));
        field_value(&frames[0].1, b'D').unwrap()
    };
    assert_eq!(
        detail(
            &mut s,
            "Key (country, national_id)=(FR, 1 85 05 78 006 084 36) already exists."
        ),
        "Key (country, national_id)=(****) already exists."
    );
    assert_eq!(
        detail(
            &mut s,
            "Key (lower(national_id::text))=(abc) already exists."
        ),
        "Key (lower(national_id::text))=(****) already exists."
    );
    assert_eq!(
        detail(
            &mut s,
            "Key (\"National_ID\")=(x) is not present in table \"p\"."
        ),
        "Key (\"National_ID\")=(****) is not present in table \"p\"."
    );
    assert_eq!(
        detail(&mut s, "Key (other)=(abc) already exists."),
        "Key (other)=(abc) already exists."
    );
    assert_eq!(
        detail(&mut s, "Failing row contains (1, secret, null)."),
        "Failing row contains (****)."
    );
}

#[test]
fn notices_notifications_and_malformed_reports() {
    let mut s = Session::new("detectors = [\"email\"]");
    let frames = s.backend(
        b'N',
        &fields(&[(b'S', "NOTICE"), (b'M', "mailing ann@example.com")]),
    );
    let m = field_value(&frames[0].1, b'M').unwrap();
    assert!(
        m.starts_with("mailing ") && !m.contains("ann@example.com"),
        "{m}"
    );
    assert!(s.forwards(b'N', &fields(&[(b'S', "NOTICE"), (b'M', "nothing here")])));

    let mut body = 42u32.to_be_bytes().to_vec();
    cstr(&mut body, b"signups");
    cstr(&mut body, b"{\"email\":\"ann@example.com\"}");
    let frames = s.backend(b'A', &body);
    let (tag, out) = &frames[0];
    assert_eq!(*tag, b'A');
    assert_eq!(&out[..4], &42u32.to_be_bytes());
    assert!(out.ends_with(b"\0") && out[4..].starts_with(b"signups\0"));
    assert!(!String::from_utf8_lossy(out).contains("ann@example.com"));

    // Unterminated: masked in place, same length.
    let body = b"Mmail ann@example.com";
    let frames = s.backend(b'E', body);
    assert_eq!(frames[0].1.len(), body.len());
    assert!(!String::from_utf8_lossy(&frames[0].1).contains("ann@example.com"));
}

// ---- COPY ----

fn copy_stream(s: &mut Session, format: u8, chunks: &[&[u8]]) -> (Vec<u8>, Vec<(u8, Vec<u8>)>) {
    s.client(b'Q', &query("COPY t TO STDOUT"));
    let mut others = Vec::new();
    let mut data = Vec::new();
    let mut take = |frames: Vec<(u8, Vec<u8>)>| {
        for (tag, body) in frames {
            if tag == b'd' {
                data.extend_from_slice(&body);
            } else {
                others.push((tag, body));
            }
        }
    };
    take(s.backend(b'H', &copy_response(format, 2)));
    for c in chunks {
        take(s.backend(b'd', c));
    }
    take(s.backend(b'c', b""));
    take(s.backend(b'C', &command_complete("COPY 3")));
    take(s.backend(b'Z', b"I"));
    (data, others)
}

const COPY_TEXT: &[u8] = b"1\tann@example.com\t4111 1111 1111 1111\n\
2\tno secrets here\t\\N\n\
3\t\"quoted, bob@example.org\"\t+1 415 555 2671\n";

#[test]
fn copy_text_rows_are_masked_and_clean_rows_forwarded() {
    let mut s = Session::new("");
    let lines: Vec<&[u8]> = COPY_TEXT.split_inclusive(|&b| b == b'\n').collect();
    s.client(b'Q', &query("COPY t TO STDOUT"));
    assert!(s.forwards(b'H', &copy_response(0, 3)));
    assert!(!s.forwards(b'd', lines[0]));
    assert!(s.forwards(b'd', lines[1]), "a clean row is forwarded as is");
    let (data, _) = copy_stream(&mut Session::new(""), 0, &lines);
    let text = String::from_utf8(data).unwrap();
    assert_eq!(text.lines().count(), 3);
    for secret in [
        "ann@example.com",
        "4111 1111 1111 1111",
        "bob@example.org",
        "415 555 2671",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(text.contains("no secrets here"));
}

/// Masking a COPY stream split at any points gives the bytes masking it whole gives.
fn check_splits(toml: &str, format: u8, stream: &[u8], cuts: &[usize]) {
    let (whole, whole_others) = copy_stream(&mut Session::new(toml), format, &[stream]);
    let mut chunks = Vec::new();
    let mut at = 0;
    for &c in cuts {
        let c = c.clamp(at, stream.len());
        chunks.push(&stream[at..c]);
        at = c;
    }
    chunks.push(&stream[at..]);
    let mut s = Session::new(toml);
    let (split, split_others) = copy_stream(&mut s, format, &chunks);
    assert_eq!(
        String::from_utf8_lossy(&split),
        String::from_utf8_lossy(&whole),
        "cuts {cuts:?}"
    );
    assert_eq!(split_others, whole_others);
}

#[test]
fn copy_split_at_every_byte() {
    for toml in ["", "detectors = [\"email\"]"] {
        for i in 0..=COPY_TEXT.len() {
            check_splits(toml, 0, COPY_TEXT, &[i]);
        }
    }
    let binary = binary_copy(&[&[b"ann@example.com", b"1"], &[b"x", b"4111111111111111"]]);
    for i in 0..=binary.len() {
        check_splits("", 1, &binary, &[i]);
    }
}

fn binary_copy(rows: &[&[&[u8]]]) -> Vec<u8> {
    let mut b = b"PGCOPY\n\xff\r\n\0".to_vec();
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    for row in rows {
        b.extend_from_slice(&(row.len() as i16).to_be_bytes());
        for v in *row {
            b.extend_from_slice(&(v.len() as i32).to_be_bytes());
            b.extend_from_slice(v);
        }
    }
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b
}

#[test]
fn binary_copy_is_masked_in_place() {
    let stream = binary_copy(&[&[b"ann@example.com", b"1"]]);
    let (data, _) = copy_stream(&mut Session::new(""), 1, &[&stream]);
    assert_eq!(data.len(), stream.len());
    assert!(!String::from_utf8_lossy(&data).contains("ann@example.com"));
}

#[test]
fn long_copy_lines_are_cut_without_splitting_values() {
    // One line much longer than the carry, emails everywhere.
    let mut line = Vec::new();
    let mut i = 0;
    while line.len() < 300_000 {
        line.extend_from_slice(format!("user{i}@example.com ").as_bytes());
        i += 1;
    }
    line.push(b'\n');
    let (data, _) = copy_stream(&mut Session::new("detectors = [\"email\"]"), 0, &[&line]);
    let text = String::from_utf8_lossy(&data);
    assert!(!text.contains("@example.com"), "a value escaped at a cut");
    for cuts in [vec![1], vec![65_000, 65_600, 131_100], vec![200_000]] {
        check_splits("detectors = [\"email\"]", 0, &line, &cuts);
    }
}

#[test]
fn copy_under_column_rules_masks_everything() {
    let toml = r#"
        detectors = []
        [[columns]]
        column = "email"
    "#;
    let (data, others) = copy_stream(&mut Session::new(toml), 0, &[COPY_TEXT]);
    assert_eq!(data, b"****\n****\n****\n");
    let notice = others.iter().find(|(t, _)| *t == b'N').expect("a notice");
    assert!(field_value(&notice.1, b'M')
        .unwrap()
        .contains("COPY output"));
    for i in 0..=COPY_TEXT.len() {
        check_splits(toml, 0, COPY_TEXT, &[i]);
    }

    let stream = binary_copy(&[&[b"ann@example.com", b"1"], &[b"x", b"y"]]);
    let (data, _) = copy_stream(&mut Session::new(toml), 1, &[&stream]);
    let mut want = b"PGCOPY\n\xff\r\n\0".to_vec();
    want.extend_from_slice(&[0; 8]);
    for _ in 0..2 {
        want.extend_from_slice(&2i16.to_be_bytes());
        want.extend_from_slice(&(-1i32).to_be_bytes());
        want.extend_from_slice(&(-1i32).to_be_bytes());
    }
    want.extend_from_slice(&(-1i16).to_be_bytes());
    assert_eq!(data, want);
    for i in 0..=stream.len() {
        check_splits(toml, 1, &stream, &[i]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn copy_splits_never_change_the_output(
        rows in prop::collection::vec(
            prop::sample::select(vec![
                "plain row\twith text",
                "ann@example.com\t4111-1111-1111-1111",
                "call +44 20 7946 0958 or 415-555-2671",
                "078-05-1120\tDE89 3704 0044 0532 0130 00",
                "key AKIAIOSFODNN7EXAMPLE\tip 192.168.1.20",
                "",
            ]),
            0..12,
        ),
        cuts in prop::collection::vec(0usize..600, 0..6),
        binary in any::<bool>(),
    ) {
        let mut stream = Vec::new();
        for r in &rows {
            stream.extend_from_slice(r.as_bytes());
            stream.push(b'\n');
        }
        let mut cuts = cuts;
        cuts.sort_unstable();
        check_splits("", u8::from(binary), &stream, &cuts);
    }
}

// ---- compile and explain ----

#[test]
fn compile_errors_name_the_profile_and_field() {
    let err = |toml: &str| {
        Masker::compile("pii", &profile(toml), b"k")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = err("[[columns]]\ntype = [\"citext\"]");
    assert!(
        e.contains("\"pii\"") && e.contains("columns[0].type") && e.contains("citext"),
        "{e}"
    );
    let e = err("[[columns]]\nstyle = \"hash\"");
    assert!(e.contains("columns[0]"), "{e}");
    let e = err("[[columns]]\ntable = \"users\"\ncolumn = \"x\"");
    assert!(
        e.contains("columns[0].table") && e.contains("*.users"),
        "{e}"
    );
    let e = err("[[columns]]\ncolumn = \"a\"\n[[columns]]\ncolumn = \"a\"");
    assert!(e.contains("columns[1].name"), "{e}");
    let e = err("[[columns]]\nname = \"email\"\ncolumn = \"a\"");
    assert!(e.contains("columns[0].name"), "{e}");
    let e = err("[[columns]]\nname = \"unknown-columns\"\ncolumn = \"a\"");
    assert!(e.contains("reserved"), "{e}");
    let e = err("phone_regions = [\"XX\"]");
    assert!(e.contains("\"pii\""), "{e}");
}

#[test]
fn explain_states_each_columns_fate() {
    let m = masker(
        r#"
        detectors = ["card", "email"]
        [[columns]]
        name = "pii-email"
        column = "email"
        style = "partial"
        [[columns]]
        name = "cust"
        table = "public.customers"
        column = "ssn"
    "#,
    );
    assert_eq!(m.name(), "test");
    assert_eq!(m.rule_names(), ["card", "email", "pii-email", "cust"]);
    let col = |name: &str, table: Option<&str>, source: Option<&str>, ty| ColumnInfo {
        name: name.into(),
        table: table.map(Into::into),
        source_column: source.map(Into::into),
        type_oid: ty,
    };
    let verdicts = m.describe_plan(&[
        col("email", None, None, 25),
        col("x", Some("public.customers"), Some("ssn"), 25),
        col("note", None, None, 25),
        col("n", None, None, 23),
    ]);
    assert_eq!(
        verdicts[0],
        ColumnVerdict::Masked {
            rule: "pii-email".into(),
            style: Style::Partial
        }
    );
    let shown: Vec<String> = verdicts.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "masked by rule \"pii-email\" (partial)",
            "masked by rule \"cust\" (redact)",
            "scanned by detectors card, email",
            "passed through",
        ]
    );
}

#[test]
fn the_fuzz_body_runs_on_fixed_inputs_and_the_committed_corpus() {
    let maskers = sluice_masker::fuzzing::maskers();
    for data in [&b""[..], b"\x00\x01Q\x00\x05x", &[0xff; 64]] {
        sluice_masker::fuzzing::wire_stream_with(&maskers, data);
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/wire_stream");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).expect("the committed corpus") {
        let path = entry.unwrap().path();
        sluice_masker::fuzzing::wire_stream_with(&maskers, &std::fs::read(&path).unwrap());
        seeds += 1;
    }
    assert!(seeds >= 10, "only {seeds} seeds in {}", dir.display());
}

/// Text the gateway writes itself (a statement's literals in an audit event) goes through
/// the same detectors; without detectors there is nothing to do.
#[test]
fn mask_text_masks_what_the_detectors_find() {
    let m = masker(r#"detectors = ["card", "email"]"#);
    let masked = m
        .mask_text("SELECT * FROM customers WHERE card_number = '4111 1111 1111 1111' OR email = 'ann@example.com'")
        .expect("two values found");
    assert!(!masked.contains("4111 1111 1111 1111"), "{masked}");
    assert!(!masked.contains("ann@example.com"), "{masked}");
    assert!(
        masked.starts_with("SELECT * FROM customers WHERE card_number = '"),
        "{masked}"
    );
    assert_eq!(m.mask_text("SELECT count(*) FROM orders"), None);
    assert_eq!(masker("detectors = []").mask_text("ann@example.com"), None);
}

#[test]
fn client_frames_are_masked_in_place_for_the_recording() {
    let m = masker("");
    let query = |sql: &str| {
        let mut f = vec![b'Q'];
        f.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        f.extend_from_slice(sql.as_bytes());
        f.push(0);
        f
    };
    let mut frames =
        query("INSERT INTO customers VALUES ('ann@example.com', '4111 1111 1111 1111')");
    frames.extend(query("SELECT 1"));
    let mut out = Vec::new();
    assert!(m.mask_client_frames(&frames, &mut out));
    // Same length, same frame boundaries, no raw value left.
    assert_eq!(out.len(), frames.len());
    assert_eq!(out[..5], frames[..5]);
    let text = String::from_utf8_lossy(&out);
    assert!(
        !text.contains("ann@example.com") && !text.contains("4111 1111 1111 1111"),
        "{text}"
    );
    assert!(text.contains("SELECT 1"));
    // Nothing to mask, or a cut frame: nothing appended / the tail masked as a body.
    let mut out = Vec::new();
    assert!(!m.mask_client_frames(&query("SELECT 1"), &mut out));
    assert!(out.is_empty());
    assert!(m.mask_client_frames(&frames[..52], &mut out));
    assert_eq!(out.len(), 52);
    assert!(!masker("detectors = []").mask_client_frames(&frames, &mut Vec::new()));
}
