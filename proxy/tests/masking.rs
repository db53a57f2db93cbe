//! Inline masking at the gateway, against a real PostgreSQL holding the demo's shop data,
//! with tokio-postgres as the client. bob (`support`, masking profile `pii`) must not see
//! one raw email, phone number, card number or SSN of the customers he reads, whichever way
//! he asks: plain selects, casts, concatenation, `upper()`, `row_to_json`, `json_agg`,
//! `string_agg`, arrays, binary-format results, `COPY … TO STDOUT` in text, CSV and
//! binary, an error that echoes a value, a notification payload. Every check compares what
//! bob received with the raw values read directly from the backend. carol (`dba`, no
//! masking) sees them as they are.
//!
//! No assertion here is about speed: timeouts only turn a hang into a failure.

mod common;

use std::time::Duration;

use common::{describe, guard, Fixture, BACKEND_USER, RESOURCE};
use futures_util::{StreamExt, TryStreamExt};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

/// Customers whose values every check looks for (the queries read ids 1..=CHECKED).
const CHECKED: i32 = 300;

/// The sensitive values of the customers, read straight from the backend.
struct Raw {
    emails: Vec<String>,
    phones: Vec<String>,
    cards: Vec<String>,
    ssns: Vec<String>,
}

impl Raw {
    async fn read(fx: &Fixture) -> Raw {
        let mut config = tokio_postgres::Config::new();
        config
            .host(fx.cluster.host())
            .port(fx.cluster.port())
            .user(BACKEND_USER)
            .password(&fx.backend_password)
            .dbname(RESOURCE);
        let (client, connection) = config.connect(NoTls).await.expect("direct connection");
        tokio::spawn(connection);
        let rows = client
            .query(
                "SELECT email, phone, card_number, ssn FROM customers WHERE id <= $1 ORDER BY id",
                &[&CHECKED],
            )
            .await
            .expect("raw values");
        let column = |i: usize| rows.iter().map(|r| r.get::<_, String>(i)).collect();
        let raw = Raw {
            emails: column(0),
            phones: column(1),
            cards: column(2),
            ssns: column(3),
        };
        assert_eq!(raw.cards.len(), CHECKED as usize);
        assert!(
            raw.cards.iter().any(|c| c.contains(' ')) && raw.cards.iter().any(|c| c.contains('-')),
            "the demo data groups some cards with spaces and dashes"
        );
        raw
    }

    /// Panics, naming the query and the kind of value (never printing the value itself
    /// beyond its first characters), if `seen` holds any raw value in any common spelling.
    fn assert_absent(&self, what: &str, seen: &[u8]) {
        let text = String::from_utf8_lossy(seen);
        let lower = text.to_lowercase();
        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
        let only_digits = |s: &str| -> String { s.chars().filter(char::is_ascii_digit).collect() };
        for email in &self.emails {
            assert!(
                !lower.contains(&email.to_lowercase()),
                "{what}: a raw email ({}…) reached the client",
                &email[..3]
            );
        }
        for card in &self.cards {
            assert!(
                !text.contains(card.as_str()),
                "{what}: a raw card number reached the client"
            );
            // However it is regrouped, its 16 digits in a row are the card.
            assert!(
                !digits.contains(&only_digits(card)),
                "{what}: the digits of a raw card number reached the client"
            );
        }
        for phone in &self.phones {
            assert!(
                !text.contains(phone.as_str()),
                "{what}: a raw phone number reached the client"
            );
            assert!(
                !digits.contains(&only_digits(phone)),
                "{what}: the digits of a raw phone number reached the client"
            );
        }
        for ssn in &self.ssns {
            assert!(
                !text.contains(ssn.as_str()),
                "{what}: a raw SSN reached the client"
            );
            assert!(
                !text.contains(&ssn.replace('-', " ")),
                "{what}: a raw SSN reached the client"
            );
        }
    }

    /// Panics unless `seen` holds every raw value (the unmasked control case).
    fn assert_present(&self, what: &str, seen: &[u8]) {
        let text = String::from_utf8_lossy(seen);
        for value in self.emails.iter().chain(&self.cards).chain(&self.ssns) {
            assert!(text.contains(value.as_str()), "{what}: a value is missing");
        }
    }
}

/// Any column's bytes as the server sent them in binary format.
struct Bytes(Vec<u8>);

impl<'a> FromSql<'a> for Bytes {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Bytes(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

async fn member(fx: &Fixture, user: &str, group: &str) -> Client {
    let token = fx
        .deployment
        .mint(user, &[group], Duration::from_secs(600))
        .expect("mint");
    fx.connect(user, &token).await
}

/// Every value of every row of a simple (text-format) query, concatenated.
async fn simple_text(client: &Client, sql: &str) -> Vec<u8> {
    let messages = guard(sql, client.simple_query(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    let mut out = Vec::new();
    let mut rows = 0;
    for message in messages {
        if let SimpleQueryMessage::Row(row) = message {
            rows += 1;
            for i in 0..row.len() {
                out.extend_from_slice(row.get(i).unwrap_or("NULL").as_bytes());
                out.push(b'\t');
            }
            out.push(b'\n');
        }
    }
    assert!(rows > 0, "{sql}: no rows");
    out
}

/// Every column of every row of an extended-protocol query, in binary format.
async fn binary(client: &Client, sql: &str) -> Vec<u8> {
    let rows = guard(sql, client.query(sql, &[]))
        .await
        .unwrap_or_else(|e| panic!("{sql} (binary): {}", describe(&e)));
    assert!(!rows.is_empty(), "{sql}: no rows");
    let mut out = Vec::new();
    for row in rows {
        for i in 0..row.len() {
            if let Some(Bytes(bytes)) = row.get::<_, Option<Bytes>>(i) {
                out.extend_from_slice(&bytes);
            }
            out.push(b'\t');
        }
        out.push(b'\n');
    }
    out
}

async fn copy_out(client: &Client, sql: &str) -> Vec<u8> {
    let stream = guard(sql, client.copy_out(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    let chunks: Vec<bytes::Bytes> = guard(sql, stream.try_collect())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    let out: Vec<u8> = chunks.concat();
    assert!(out.len() > 100, "{sql}: too little data");
    out
}

fn seed(fx: &Fixture) {
    sluice_pgharness::demo::seed_shop_tables(&fx.cluster, RESOURCE, BACKEND_USER)
        .expect("seed the shop tables");
}

const RESULT_QUERIES: &[&str] = &[
    "SELECT id, full_name, email, phone, card_number, ssn, notes FROM customers WHERE id <= 300 ORDER BY id",
    // Casts and aliases: no column name gives them away.
    "SELECT email::varchar(200) AS a, card_number::char(40) AS b, ssn::text AS c, phone::varchar AS d FROM customers WHERE id <= 300",
    // The source column behind an alias.
    "SELECT ssn AS x, card_number AS y FROM customers WHERE id <= 300",
    // Concatenation and functions.
    "SELECT email || '' AS a, card_number || ' ' AS b, 'tel:' || phone AS c, ssn || '!' AS d FROM customers WHERE id <= 300",
    "SELECT upper(email) AS a, lower(card_number) AS b, upper(ssn) AS c, substr(phone, 1, 40) AS d FROM customers WHERE id <= 300",
    // Whole rows as JSON, aggregates.
    "SELECT row_to_json(c) AS doc FROM customers c WHERE id <= 300",
    "SELECT to_jsonb(c) AS doc FROM customers c WHERE id <= 300",
    "SELECT json_agg(c) AS docs FROM (SELECT * FROM customers WHERE id <= 300) c",
    "SELECT string_agg(email || ' ' || card_number || ' ' || phone || ' ' || ssn, ', ') AS all_of_it FROM customers WHERE id <= 300",
    "SELECT array_agg(email) AS a, array_agg(card_number) AS b, array_agg(ssn) AS c, array_agg(phone) AS d FROM customers WHERE id <= 300",
    // A value inside free text.
    "SELECT notes FROM customers WHERE id <= 300 AND notes IS NOT NULL",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_never_sees_a_raw_value_in_any_result_format_and_carol_sees_them_all() {
    let fx = Fixture::start();
    seed(&fx);
    let raw = Raw::read(&fx).await;
    let bob = member(&fx, "bob", "support").await;

    for sql in RESULT_QUERIES {
        raw.assert_absent(&format!("{sql} (text)"), &simple_text(&bob, sql).await);
        raw.assert_absent(&format!("{sql} (binary)"), &binary(&bob, sql).await);
    }

    // What bob does see is still useful: the last four digits of a card, an email's first
    // letter and top-level domain, the shape of the values.
    let shown = simple_text(
        &bob,
        "SELECT card_number, email FROM customers WHERE id = 1",
    )
    .await;
    let shown = String::from_utf8_lossy(&shown);
    let last4 = &raw.cards[0][raw.cards[0].len() - 4..];
    assert!(
        shown.contains(last4),
        "partial keeps a card's last 4: {shown}"
    );
    assert!(shown.contains('*'), "{shown}");

    // carol is a dba: no masking profile applies to her.
    let carol = member(&fx, "carol", "dba").await;
    raw.assert_present(
        "carol",
        &simple_text(
            &carol,
            "SELECT email, card_number, ssn FROM customers WHERE id <= 300 ORDER BY id",
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_errors_and_notifications_are_masked_too() {
    let fx = Fixture::start();
    seed(&fx);
    let raw = Raw::read(&fx).await;
    let bob = member(&fx, "bob", "support").await;

    for sql in [
        "COPY (SELECT id, email, phone, card_number, ssn, notes FROM customers WHERE id <= 300 ORDER BY id) TO STDOUT",
        "COPY (SELECT id, email, phone, card_number, ssn, notes FROM customers WHERE id <= 300 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)",
        "COPY (SELECT id, email, phone, card_number, ssn, notes FROM customers WHERE id <= 300 ORDER BY id) TO STDOUT WITH (FORMAT binary)",
        "COPY (SELECT row_to_json(c) FROM customers c WHERE id <= 300) TO STDOUT",
    ] {
        raw.assert_absent(sql, &copy_out(&bob, sql).await);
    }
    // A binary COPY stays a valid binary COPY: header, tuples, trailer.
    let binary_copy = copy_out(
        &bob,
        "COPY (SELECT card_number FROM customers WHERE id <= 300 ORDER BY id) TO STDOUT WITH (FORMAT binary)",
    )
    .await;
    assert!(
        binary_copy.starts_with(b"PGCOPY\n\xff\r\n\0"),
        "binary COPY header"
    );
    assert!(binary_copy.ends_with(&[0xff, 0xff]), "binary COPY trailer");

    // carol registers customer 1's card; bob's attempt to register it again fails with a
    // unique violation whose detail would echo the card number.
    let carol = member(&fx, "carol", "dba").await;
    carol
        .batch_execute(
            "CREATE TABLE registered_cards (card text PRIMARY KEY);
             INSERT INTO registered_cards SELECT card_number FROM customers WHERE id = 1;
             CREATE FUNCTION register_card(c text) RETURNS int LANGUAGE sql
               AS $$ INSERT INTO registered_cards VALUES (c) RETURNING 1 $$;
             GRANT ALL ON registered_cards TO PUBLIC;",
        )
        .await
        .unwrap_or_else(|e| panic!("carol's setup: {}", describe(&e)));
    let e = bob
        .query(
            "SELECT register_card(card_number) FROM customers WHERE id = 1",
            &[],
        )
        .await
        .expect_err("a duplicate card");
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "23505", "{}", describe(&e));
    let detail = db.detail().unwrap_or_default();
    assert!(detail.contains("already exists"), "{detail}");
    raw.assert_absent("the unique violation's detail", detail.as_bytes());
    raw.assert_absent("the unique violation's message", db.message().as_bytes());

    // A notification whose payload is a card number.
    let token = fx
        .deployment
        .mint("bob", &["support"], Duration::from_secs(600))
        .expect("mint");
    let (listener, mut connection) = fx
        .pg_config("bob", &token, RESOURCE)
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("bob's listener: {}", describe(&e)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    listener
        .batch_execute("LISTEN cards")
        .await
        .expect("LISTEN");
    carol
        .batch_execute("SELECT pg_notify('cards', 'new card ' || card_number || ' for ' || email) FROM customers WHERE id = 2")
        .await
        .expect("NOTIFY");
    let payload = guard("the notification", rx.recv())
        .await
        .expect("a notification");
    assert!(payload.starts_with("new card "), "{payload}");
    raw.assert_absent("the notification payload", payload.as_bytes());
}
