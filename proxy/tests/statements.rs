//! Statement policy at the gateway, against a real PostgreSQL, with tokio-postgres as the
//! client: refused statements in the simple and extended protocols (pipelined too), inside
//! transaction blocks, prepared statements run by name, and the audit trail they leave.
//!
//! The deployment is the demo's: `support` may read, `engineering` may read and write
//! (DDL and bulk changes are held for a `dba`), `dba` may run anything. No assertion here
//! is about speed: timeouts only turn a hang into a failure.

mod common;

use std::time::Duration;

use common::{assert_alive, describe, expect_sqlstate, guard, Fixture};
use futures_util::future::join_all;
use tokio_postgres::Client;

const REFUSED: &str = "42501";

async fn as_member(fx: &Fixture, user: &str, group: &str) -> Client {
    let token = fx
        .deployment
        .mint(user, &[group], Duration::from_secs(600))
        .expect("mint");
    fx.connect(user, &token).await
}

async fn seed(fx: &Fixture) {
    let carol = as_member(fx, "carol", "dba").await;
    guard(
        "seed",
        carol.batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL);
             INSERT INTO customers SELECT g, 'c' || g || '@example.com' FROM generate_series(1, 5) g;
             CREATE TABLE orders (id int PRIMARY KEY, customer int, total numeric);
             INSERT INTO orders VALUES (1, 1, 10), (2, 2, 20);",
        ),
    )
    .await
    .expect("seed as dba");
}

async fn count(client: &Client, table: &str) -> i64 {
    guard(
        "count",
        client.query_one(&format!("SELECT count(*) FROM {table}"), &[]),
    )
    .await
    .unwrap_or_else(|e| panic!("count {table}: {}", describe(&e)))
    .get(0)
}

// A reader's writes and DDL are refused in both protocols, with the rule and a way to get
// access in the error; nothing reaches the tables and the session keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_is_refused_writes_and_ddl_and_keeps_working() {
    let fx = Fixture::start();
    seed(&fx).await;
    let bob = as_member(&fx, "bob", "support").await;

    let e = expect_sqlstate(
        guard("simple delete", bob.simple_query("DELETE FROM customers")).await,
        REFUSED,
    );
    let db = e.as_db_error().expect("db error");
    assert!(db.message().contains("bob"), "{}", describe(&e));
    assert!(db.message().contains("write"), "{}", describe(&e));
    assert!(db.hint().is_some(), "a refusal says how to get access");
    assert_alive(&bob, "after a refused DELETE").await;

    // A multi-statement string is refused as a whole: the SELECT does not run either.
    expect_sqlstate(
        guard(
            "select then drop",
            bob.simple_query("SELECT 1; DROP TABLE orders"),
        )
        .await,
        REFUSED,
    );
    assert_eq!(count(&bob, "orders").await, 2, "orders is still there");

    // Extended protocol: refused at Parse; the pipeline around it still answers in order.
    let select = bob.query("SELECT id FROM customers WHERE id = $1", &[&1i32]);
    let delete = bob.execute("DELETE FROM customers WHERE id = $1", &[&2i32]);
    let again = bob.query("SELECT count(*) FROM customers", &[]);
    let (select, delete, again) =
        guard("pipeline", async { tokio::join!(select, delete, again) }).await;
    assert_eq!(select.expect("select before")[0].get::<_, i32>(0), 1);
    expect_sqlstate(delete, REFUSED);
    assert_eq!(again.expect("select after")[0].get::<_, i64>(0), 5);

    // Many pipelined statements, every other one refused.
    let futures = (0..20).map(|i| {
        let sql = if i % 2 == 0 {
            "SELECT 1"
        } else {
            "UPDATE customers SET email = 'x' WHERE id = 1"
        };
        bob.simple_query(sql)
    });
    let results = guard("pipelined mix", join_all(futures)).await;
    for (i, result) in results.into_iter().enumerate() {
        match (i % 2, result) {
            (0, Ok(_)) => {}
            (1, Err(e)) => assert_eq!(e.code().map(|c| c.code()), Some(REFUSED), "{i}"),
            (_, other) => panic!("statement {i}: unexpected {other:?}"),
        }
    }
    assert_eq!(count(&bob, "customers").await, 5);
    assert_alive(&bob, "after the pipeline").await;
}

// Inside a transaction block a refusal aborts the transaction exactly as a PostgreSQL
// error would: later statements fail with 25P02 until ROLLBACK, which works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_inside_a_transaction_aborts_it_like_an_error() {
    let fx = Fixture::start();
    seed(&fx).await;
    let bob = as_member(&fx, "bob", "support").await;
    guard("begin", bob.batch_execute("BEGIN"))
        .await
        .expect("begin");
    assert_eq!(count(&bob, "customers").await, 5);
    expect_sqlstate(
        guard("truncate", bob.batch_execute("TRUNCATE customers")).await,
        REFUSED,
    );
    expect_sqlstate(
        guard("after refusal", bob.query("SELECT 1", &[])).await,
        "25P02",
    );
    guard("rollback", bob.batch_execute("ROLLBACK"))
        .await
        .expect("rollback");
    assert_alive(&bob, "after rollback").await;
}

// A statement prepared by SQL PREPARE or by Parse is judged, when it runs, by what it
// runs: EXECUTE of a prepared DELETE is a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_are_judged_by_what_they_run() {
    let fx = Fixture::start();
    seed(&fx).await;
    let bob = as_member(&fx, "bob", "support").await;

    guard(
        "prepare a read",
        bob.batch_execute("PREPARE r AS SELECT count(*) FROM customers"),
    )
    .await
    .expect("PREPARE of a read");
    let rows = guard("execute read", bob.simple_query("EXECUTE r"))
        .await
        .expect("EXECUTE of a read");
    assert!(!rows.is_empty());

    guard(
        "prepare a write",
        bob.batch_execute("PREPARE w AS DELETE FROM customers"),
    )
    .await
    .expect("PREPARE itself only prepares");
    expect_sqlstate(
        guard("execute write", bob.batch_execute("EXECUTE w")).await,
        REFUSED,
    );
    expect_sqlstate(
        guard(
            "execute unknown",
            bob.batch_execute("EXECUTE never_prepared"),
        )
        .await,
        REFUSED,
    );
    assert_eq!(count(&bob, "customers").await, 5);

    // Extended protocol: a named statement prepared once, executed many times.
    let statement = guard(
        "prepare",
        bob.prepare("SELECT email FROM customers WHERE id = $1"),
    )
    .await
    .expect("prepare");
    for id in 1..=5i32 {
        let row = guard("run prepared", bob.query_one(&statement, &[&id]))
            .await
            .expect("prepared read");
        // bob reads through the demo's masking profile: the email is masked, every time.
        let email: String = row.get(0);
        assert!(
            email.ends_with(".com") && email.contains('*') && !email.contains(&format!("c{id}@")),
            "{email}"
        );
    }
    expect_sqlstate(
        guard(
            "prepare write",
            bob.prepare("UPDATE customers SET email = $1 WHERE id = 1"),
        )
        .await,
        REFUSED,
    );
    assert_alive(&bob, "after prepared statements").await;
}

// Every statement leaves one audit line: who, what, the decision, the rule, the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_leaves_an_audit_event() {
    let fx = Fixture::start();
    seed(&fx).await;
    let bob = as_member(&fx, "bob", "support").await;
    guard(
        "select",
        bob.simple_query("SELECT * FROM customers WHERE email = 'c1@example.com'"),
    )
    .await
    .expect("select");
    let _ = guard("delete", bob.simple_query("DELETE FROM orders")).await;
    drop(bob);

    let dir = fx.deployment.state_dir.join("audit");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let events: Vec<serde_json::Value> = loop {
        let mut events = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            events.extend(
                text.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter(|e| e["user"] == "bob"),
            );
        }
        if events.len() >= 2 || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let select = events
        .iter()
        .find(|e| e["command"] == "SELECT")
        .unwrap_or_else(|| panic!("no SELECT event in {events:?}"));
    assert_eq!(select["decision"], "allow", "{select}");
    assert_eq!(select["rule"], "support-reads", "{select}");
    assert_eq!(select["class"], "read", "{select}");
    assert_eq!(select["rows"], 1, "{select}");
    assert_eq!(select["outcome"], "completed", "{select}");
    let text = select["statement"].as_str().expect("statement text");
    assert!(
        !text.contains("c1@example.com"),
        "literals are not kept by default: {text}"
    );
    assert_eq!(select["fingerprint"].as_str().map(str::len), Some(16));
    let delete = events
        .iter()
        .find(|e| e["command"] == "DELETE")
        .unwrap_or_else(|| panic!("no DELETE event in {events:?}"));
    assert_eq!(delete["decision"], "deny", "{delete}");
    assert_eq!(delete["sqlstate"], REFUSED, "{delete}");
    assert_eq!(delete["outcome"], "refused", "{delete}");
    assert!(delete["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "no_where")));
}

// A session without a masking profile gets the policy's error, not the stand-in's, for a
// statement refused in the extended protocol after earlier round trips (each Sync opens a
// new window of the backend's answers, and the refusal must be matched to its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_session_gets_the_policy_error_after_earlier_syncs() {
    let fx = Fixture::start();
    seed(&fx).await;
    let alice = as_member(&fx, "alice", "engineering").await;
    for id in 1..=3i32 {
        let row = guard(
            "read",
            alice.query_one("SELECT email FROM customers WHERE id = $1", &[&id]),
        )
        .await
        .expect("engineering reads");
        let email: String = row.get(0);
        assert_eq!(email, format!("c{id}@example.com"), "alice is not masked");
    }
    let e = expect_sqlstate(
        guard(
            "dangerous function",
            alice.query_one("SELECT pg_read_file($1)", &[&"/etc/hostname"]),
        )
        .await,
        REFUSED,
    );
    assert!(
        describe(&e).contains("only-dba-calls-dangerous-functions"),
        "the refusal names its rule: {}",
        describe(&e)
    );
    assert_alive(&alice, "after the refusal").await;
}
