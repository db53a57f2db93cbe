//! End-to-end tests of the gateway against a real PostgreSQL: a throwaway cluster per test
//! (pgharness), the deployment the demo writes, the gateway in-process on an ephemeral
//! port, and tokio-postgres (or hand-built bytes) as the client.
//!
//! No assertion here is about speed: timeouts only turn a hang into a failure.

mod common;

use std::fmt::Write as _;
use std::pin::pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::raw::{self, Reply};
use common::{
    assert_alive, describe, expect_sqlstate, guard, loopback, Fixture, Options, RESOURCE,
};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use sluice_pgharness::{ClusterOptions, HostAuth};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

fn rows_of(messages: &[SimpleQueryMessage]) -> Vec<&tokio_postgres::SimpleQueryRow> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .collect()
}

// 1. Simple query protocol, DDL, and server errors passing through intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_queries_ddl_and_server_errors_pass_through() {
    let fx = Fixture::start();
    let client = fx.client("alice").await;

    let messages = guard(
        "multi-statement simple query",
        client.simple_query("SELECT 1 AS one, 'two' AS two; SELECT generate_series(1, 3) AS n"),
    )
    .await
    .expect("simple query");
    let rows = rows_of(&messages);
    assert_eq!(rows.len(), 4, "{messages:?}");
    assert_eq!(rows[0].get("one"), Some("1"));
    assert_eq!(rows[0].get("two"), Some("two"));
    let series: Vec<_> = rows[1..].iter().map(|r| r.get("n").unwrap()).collect();
    assert_eq!(series, ["1", "2", "3"]);
    let completions = messages
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
        .count();
    assert_eq!(completions, 2, "one CommandComplete per statement");

    // The backend session is the gateway's role on the resource's database.
    let row = client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .expect("whoami");
    assert_eq!(row.get::<_, String>(0), common::BACKEND_USER);
    assert_eq!(row.get::<_, String>(1), RESOURCE);

    guard(
        "DDL",
        client.batch_execute(
            "CREATE TABLE pets (id int PRIMARY KEY, name text NOT NULL);
             INSERT INTO pets VALUES (1, 'rex'), (2, 'tom'), (3, 'kit');
             UPDATE pets SET name = upper(name) WHERE id = 2;",
        ),
    )
    .await
    .expect("DDL and DML");
    let names: Vec<String> = client
        .query("SELECT name FROM pets ORDER BY id", &[])
        .await
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["rex", "TOM", "kit"]);
    let deleted = client
        .execute("DELETE FROM pets WHERE id > 1", &[])
        .await
        .expect("delete");
    assert_eq!(deleted, 2);

    // Server errors reach the client with their SQLSTATE and message, and the session
    // goes on after each.
    let e = expect_sqlstate(client.simple_query("SELECT 1/0").await, "22012");
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("division by zero"),
        "{}",
        describe(&e)
    );
    assert_alive(&client, "after 22012").await;
    expect_sqlstate(
        client.query("SELECT * FROM no_such_table", &[]).await,
        "42P01",
    );
    expect_sqlstate(
        client
            .execute("INSERT INTO pets VALUES (1, 'dup')", &[])
            .await,
        "23505",
    );
    expect_sqlstate(client.simple_query("SELEKT 1").await, "42601");
    assert_alive(&client, "after several errors").await;

    // An error inside a transaction aborts it, as it would directly.
    client.batch_execute("BEGIN").await.expect("begin");
    expect_sqlstate(client.simple_query("SELECT 1/0").await, "22012");
    expect_sqlstate(client.simple_query("SELECT 1").await, "25P02");
    client.batch_execute("ROLLBACK").await.expect("rollback");

    client.batch_execute("DROP TABLE pets").await.expect("drop");
    expect_sqlstate(client.query("SELECT * FROM pets", &[]).await, "42P01");
    assert_alive(&client, "end of test").await;
}

// 2. Extended protocol: prepared statements with parameters, many rows, streaming,
// values larger than the relay buffer both ways, and pipelining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_and_pipelining() {
    let fx = Fixture::start();
    let client = fx.client("alice").await;

    let stmt = guard(
        "prepare",
        client.prepare("SELECT $1::int8 + $2::int8, $3::text || '!', $4::text IS NULL"),
    )
    .await
    .expect("prepare");
    for (a, b) in [(1i64, 2i64), (-5, 5), (i64::MAX - 1, 1)] {
        let name = format!("n{a}");
        let row = client
            .query_one(&stmt, &[&a, &b, &name, &None::<String>])
            .await
            .expect("execute prepared");
        assert_eq!(row.get::<_, i64>(0), a + b);
        assert_eq!(row.get::<_, String>(1), format!("{name}!"));
        assert!(row.get::<_, bool>(2));
    }

    let rows = guard(
        "many rows",
        client.query(
            "SELECT i, md5(i::text) FROM generate_series(1, $1) AS i",
            &[&20_000i32],
        ),
    )
    .await
    .expect("many rows");
    assert_eq!(rows.len(), 20_000);
    assert_eq!(rows[0].get::<_, i32>(0), 1);
    assert_eq!(
        rows[0].get::<_, String>(1),
        "c4ca4238a0b923820dcc509a6f75849b"
    );
    assert_eq!(rows[19_999].get::<_, i32>(0), 20_000);

    let limit = 50_000i64;
    let params: [&(dyn ToSql + Sync); 1] = [&limit];
    let stream = guard(
        "query_raw",
        client.query_raw("SELECT i FROM generate_series(1::int8, $1) AS i", params),
    )
    .await
    .expect("query_raw");
    let (count, sum) = guard(
        "stream rows",
        stream.try_fold((0i64, 0i64), |(n, s), row| async move {
            Ok((n + 1, s + row.get::<_, i64>(0)))
        }),
    )
    .await
    .expect("stream");
    assert_eq!(count, limit);
    assert_eq!(sum, limit * (limit + 1) / 2);

    // A parameter and a result value far larger than the 64 KiB relay buffer.
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let row = guard(
        "large bind",
        client.query_one("SELECT $1::bytea, length($1::bytea)", &[&blob]),
    )
    .await
    .expect("large parameter round trip");
    assert_eq!(row.get::<_, i32>(1), blob.len() as i32);
    assert!(row.get::<_, Vec<u8>>(0) == blob, "bytea came back altered");
    let row = client
        .query_one("SELECT repeat('x', 5000000)", &[])
        .await
        .expect("large value");
    assert_eq!(row.get::<_, String>(0).len(), 5_000_000);

    // Pipelining: tokio-postgres writes all 50 before reading any answer.
    let queries = (0..50i32).map(|i| {
        let client = &client;
        async move {
            let row = client
                .query_one("SELECT $1::int4 * 2, pg_backend_pid()", &[&i])
                .await?;
            Ok::<_, tokio_postgres::Error>((i, row.get::<_, i32>(0), row.get::<_, i32>(1)))
        }
    });
    let results = guard("pipeline", futures_util::future::join_all(queries)).await;
    let mut pids = std::collections::HashSet::new();
    for result in results {
        let (i, doubled, pid) = result.unwrap_or_else(|e| panic!("{}", describe(&e)));
        assert_eq!(doubled, i * 2);
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 1, "one session, one backend");

    // A failing query in the middle of a pipeline fails alone.
    let (a, b, c) = tokio::join!(
        client.query_one("SELECT 1", &[]),
        client.query_one("SELECT 1/0", &[]),
        client.query_one("SELECT 3", &[]),
    );
    assert_eq!(a.expect("first").get::<_, i32>(0), 1);
    expect_sqlstate(b, "22012");
    assert_eq!(c.expect("third").get::<_, i32>(0), 3);
}

// 3. COPY in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_copy_out() {
    const ROWS: usize = 100_000;
    let fx = Fixture::start();
    let client = fx.client("alice").await;
    client
        .batch_execute("CREATE TABLE items (id int, label text)")
        .await
        .expect("create");

    let sink = guard("copy in", client.copy_in("COPY items FROM STDIN")).await;
    let mut sink = pin!(sink.expect("COPY FROM STDIN starts"));
    for chunk in 0..10 {
        let mut data = String::new();
        for i in chunk * (ROWS / 10)..(chunk + 1) * (ROWS / 10) {
            writeln!(data, "{i}\tlabel-{i}").unwrap();
        }
        guard("copy data", sink.send(Bytes::from(data)))
            .await
            .expect("send CopyData");
    }
    let copied = guard("copy done", sink.as_mut().finish())
        .await
        .expect("COPY completes");
    assert_eq!(copied, ROWS as u64);

    let row = client
        .query_one("SELECT count(*), sum(id)::int8, max(label) FROM items", &[])
        .await
        .expect("count");
    assert_eq!(row.get::<_, i64>(0), ROWS as i64);
    assert_eq!(row.get::<_, i64>(1), (ROWS as i64 - 1) * ROWS as i64 / 2);
    assert_eq!(row.get::<_, String>(2), "label-99999");

    let stream = guard("copy out", client.copy_out("COPY items TO STDOUT"))
        .await
        .expect("COPY TO STDOUT starts");
    let (lines, bytes) = guard(
        "copy out data",
        stream.try_fold((0usize, 0usize), |(lines, bytes), chunk| async move {
            let newlines = chunk.iter().filter(|&&b| b == b'\n').count();
            Ok((lines + newlines, bytes + chunk.len()))
        }),
    )
    .await
    .expect("COPY TO STDOUT");
    assert_eq!(lines, ROWS);
    let expected_bytes: usize = (0..ROWS).map(|i| format!("{i}\tlabel-{i}\n").len()).sum();
    assert_eq!(bytes, expected_bytes);

    // Bad COPY data fails with the server's error and the session goes on.
    let sink = client
        .copy_in("COPY items FROM STDIN")
        .await
        .expect("second COPY starts");
    let mut sink = pin!(sink);
    let sent = sink.send(Bytes::from_static(b"not-a-number\tx\n")).await;
    let result = match sent {
        Ok(()) => sink.as_mut().finish().await,
        Err(e) => Err(e),
    };
    expect_sqlstate(result, "22P02");
    assert_alive(&client, "after failed COPY").await;
}

// 4. A large result streams through without anyone holding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_result_streams_through() {
    const N: i64 = 1_000_000;
    let fx = Fixture::start();
    let client = fx.client("alice").await;
    let params: [&(dyn ToSql + Sync); 1] = [&N];
    let stream = guard(
        "query_raw",
        client.query_raw(
            "SELECT i, 'row number ' || i FROM generate_series(1::int8, $1) AS i",
            params,
        ),
    )
    .await
    .expect("query_raw");
    let (count, sum, last) = tokio::time::timeout(
        Duration::from_secs(60),
        stream.try_fold((0i64, 0i64, 0i64), |(n, s, _), row| async move {
            let i: i64 = row.get(0);
            let text: &str = row.get(1);
            assert!(text.ends_with(&i.to_string()), "{text} for {i}");
            Ok((n + 1, s + i, i))
        }),
    )
    .await
    .expect("a million rows within 60 s (hang guard)")
    .expect("stream");
    assert_eq!(count, N);
    assert_eq!(sum, N * (N + 1) / 2);
    assert_eq!(last, N, "rows arrive in order");
    assert_alive(&client, "after the large result").await;
}

// 5. LISTEN/NOTIFY across two sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify() {
    let fx = Fixture::start();
    let token = fx.token("alice");
    let (listener, mut connection) = guard(
        "connect listener",
        fx.pg_config("alice", &token, RESOURCE).connect(NoTls),
    )
    .await
    .expect("listener connects");
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send(n);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    listener
        .batch_execute("LISTEN sluice_events")
        .await
        .expect("LISTEN");

    let notifier = fx.client("bob").await;
    notifier
        .batch_execute("NOTIFY sluice_events, 'hello from bob'")
        .await
        .expect("NOTIFY");
    let long_payload = "p".repeat(7000);
    notifier
        .execute("SELECT pg_notify('sluice_events', $1)", &[&long_payload])
        .await
        .expect("pg_notify");

    let first = guard("first notification", notifications.recv())
        .await
        .expect("listener connection ended");
    assert_eq!(first.channel(), "sluice_events");
    assert_eq!(first.payload(), "hello from bob");
    let second = guard("second notification", notifications.recv())
        .await
        .expect("listener connection ended");
    assert_eq!(second.payload(), long_payload);
    assert_alive(&listener, "listener after notifications").await;
}

// 6. Cancel: the gateway's cancel key reaches the right backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_reaches_the_backend() {
    let fx = Fixture::start();
    let client = fx.client("alice").await;
    let watcher = fx.client("alice").await;
    let cancel = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let result = client.simple_query("SELECT pg_sleep(30)").await;
        (client, result)
    });
    // Cancel only once the query runs; a cancel that arrives first is a no-op by design.
    guard("query starts", async {
        loop {
            let row = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE state = 'active' AND query = 'SELECT pg_sleep(30)'",
                    &[],
                )
                .await
                .expect("pg_stat_activity");
            if row.get::<_, i64>(0) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    guard("send cancel", cancel.cancel_query(NoTls))
        .await
        .expect("cancel request sent");
    let (client, result) = guard("cancelled query returns", sleeper)
        .await
        .expect("task");
    expect_sqlstate(result, "57014");
    assert_alive(&client, "after cancel").await;

    // A cancel request with a key the gateway never issued is ignored: nothing breaks.
    let mut stream = TcpStream::connect(fx.addr()).await.expect("connect");
    let mut packet = 16u32.to_be_bytes().to_vec();
    packet.extend_from_slice(&80_877_102u32.to_be_bytes());
    packet.extend_from_slice(&12345u32.to_be_bytes());
    packet.extend_from_slice(&[1, 2, 3, 4]);
    stream.write_all(&packet).await.expect("send");
    let verdict = raw::read_until_close(&mut stream).await;
    assert!(verdict.error.is_none(), "{verdict:?}");
    assert_alive(&client, "after a bogus cancel").await;
}

// 7a. TLS with verify-full semantics against the deployment's CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_full_against_the_deployment_ca() {
    let fx = Fixture::start();
    let token = fx.token("alice");
    let ca = std::fs::read(fx.ca()).expect("read CA");

    let client = fx
        .try_connect_tls(fx.tls_pg_config("alice", &token), &ca)
        .await
        .unwrap_or_else(|e| panic!("TLS connect: {}", describe(&e)));
    let row = client
        .query_one("SELECT $1::text", &[&"over TLS"])
        .await
        .expect("query over TLS");
    assert_eq!(row.get::<_, String>(0), "over TLS");
    let total: i64 = client
        .query_one(
            "SELECT sum(i)::int8 FROM generate_series(1, 100000) AS i",
            &[],
        )
        .await
        .expect("aggregate")
        .get(0);
    assert_eq!(total, 5_000_050_000);
    let rows = client
        .query(
            "SELECT repeat('y', 1000) FROM generate_series(1, 2000)",
            &[],
        )
        .await
        .expect("many rows over TLS");
    assert_eq!(rows.len(), 2000);

    // The certificate is really checked: a foreign CA and a wrong host name both fail.
    let foreign = sluice_proxy::tls::generate_loopback_certs().expect("certs");
    let err = fx
        .try_connect_tls(
            fx.tls_pg_config("alice", &token),
            foreign.ca_cert_pem.as_bytes(),
        )
        .await
        .map(|_| ())
        .expect_err("a certificate from another CA must be refused");
    assert!(err.as_db_error().is_none(), "{}", describe(&err));
    let wrong_name = fx.tls_pg_config_for_name("db.example.invalid", "alice", &token);
    let err = fx
        .try_connect_tls(wrong_name, &ca)
        .await
        .map(|_| ())
        .expect_err("a certificate for another name must be refused");
    assert!(err.as_db_error().is_none(), "{}", describe(&err));
    assert_alive(&client, "TLS session after failed handshakes").await;
}

// 7b. No TLS configured: SSLRequest is answered 'N'; require fails, plain works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_request_without_tls_config() {
    let fx = Fixture::with_config(|config| config.tls = None);
    let token = fx.token("alice");
    let ca = std::fs::read(fx.ca()).expect("read CA");

    let err = fx
        .try_connect_tls(fx.tls_pg_config("alice", &token), &ca)
        .await
        .map(|_| ())
        .expect_err("sslmode=require must fail when the gateway has no certificate");
    assert!(
        err.to_string().to_lowercase().contains("tls"),
        "{}",
        describe(&err)
    );

    let mut prefer = fx.tls_pg_config("alice", &token);
    prefer.ssl_mode(tokio_postgres::config::SslMode::Prefer);
    let client = fx
        .try_connect_tls(prefer, &ca)
        .await
        .unwrap_or_else(|e| panic!("sslmode=prefer falls back to plain: {}", describe(&e)));
    assert_alive(&client, "prefer → plain").await;

    let plain = fx.connect("alice", &token).await;
    assert_alive(&plain, "plain").await;
}

fn connection_lines(fx: &Fixture) -> usize {
    std::fs::read_to_string(fx.cluster.log_path())
        .expect("read server log")
        .matches("connection received")
        .count()
}

// 8. Token refusals, and the backend never hears of a refused client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refusals_never_reach_the_backend() {
    let fx = Fixture::with(Options {
        cluster: ClusterOptions {
            extra_conf: vec![("log_connections".into(), "on".into())],
            ..ClusterOptions::default()
        },
        ..Options::default()
    });
    let bystander = fx.client("carol").await;
    let before = connection_lines(&fx);

    let e = expect_sqlstate(
        fx.try_connect("alice", "not-a-token", RESOURCE).await,
        "28P01",
    );
    assert_eq!(e.as_db_error().unwrap().severity(), "FATAL");

    let forged = fx.foreign_token("alice");
    expect_sqlstate(fx.try_connect("alice", &forged, RESOURCE).await, "28P01");

    let expired = fx.token_at(
        "alice",
        Duration::ZERO,
        SystemTime::now() - Duration::from_secs(3600),
    );
    let e = expect_sqlstate(fx.try_connect("alice", &expired, RESOURCE).await, "28000");
    assert!(
        e.as_db_error().unwrap().message().contains("expired"),
        "{}",
        describe(&e)
    );

    let alices = fx.token("alice");
    let e = expect_sqlstate(fx.try_connect("bob", &alices, RESOURCE).await, "28000");
    assert!(
        e.as_db_error().unwrap().message().contains("alice"),
        "{}",
        describe(&e)
    );

    // Refusals never reached PostgreSQL. Positive control: one good login must add
    // exactly one "connection received" line (so the log is live, not lagging).
    assert_eq!(
        connection_lines(&fx),
        before,
        "a refused client reached the backend"
    );
    let good = fx.connect("alice", &alices).await;
    assert_alive(&good, "good login").await;
    guard("log shows the good login", async {
        while connection_lines(&fx) == before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(connection_lines(&fx), before + 1);
    assert_alive(&bystander, "bystander after refusals").await;
}

// 9. Unknown resource; backend down and back up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_resource_and_backend_down() {
    let mut fx = Fixture::start();
    let token = fx.token("alice");
    let e = expect_sqlstate(fx.try_connect("alice", &token, "nope").await, "3D000");
    assert!(
        e.as_db_error().unwrap().message().contains("nope"),
        "{}",
        describe(&e)
    );

    let open = fx.connect("alice", &token).await;
    fx.cluster.stop().expect("stop cluster");
    // The open session learns that its backend went away instead of hanging.
    let result = guard("query on a dead backend", open.simple_query("SELECT 1")).await;
    assert!(result.is_err(), "query after backend stop: {result:?}");

    let e = expect_sqlstate(fx.try_connect("alice", &token, RESOURCE).await, "08001");
    assert!(
        e.as_db_error().unwrap().message().contains(RESOURCE),
        "{}",
        describe(&e)
    );

    fx.cluster.start_again().expect("start cluster again");
    let client = fx.connect("alice", &token).await;
    assert_alive(&client, "after the backend came back").await;
}

/// Sends `bytes` on a fresh socket (optionally half-closing it) and reads the verdict.
async fn send_raw(fx: &Fixture, bytes: &[u8], then_close_write: bool) -> raw::Verdict {
    let mut stream = TcpStream::connect(fx.addr()).await.expect("connect");
    stream.write_all(bytes).await.expect("send");
    if then_close_write {
        stream.shutdown().await.expect("half-close");
    }
    raw::read_until_close(&mut stream).await
}

#[track_caller]
fn assert_protocol_error(verdict: &raw::Verdict, codes: &[&str], what: &str) {
    let (severity, code, message) = verdict
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: expected an ErrorResponse, got {verdict:?}"));
    assert!(codes.contains(&code.as_str()), "{what}: {verdict:?}");
    assert_eq!(severity, "FATAL", "{what}: {message}");
    assert!(verdict.closed, "{what}");
}

// 10a. Bad input before authentication: an error or a clean close, never a crash, and
// other sessions carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_before_authentication_hurts_no_one() {
    let fx = Fixture::with_config(|config| config.limits.handshake_timeout_secs = 2);
    let bystander = fx.client("carol").await;

    let verdict = send_raw(&fx, b"GET / HTTP/1.1\r\nHost: sluice\r\n\r\n", false).await;
    assert_protocol_error(&verdict, &["08P01"], "HTTP request");
    assert_alive(&bystander, "after HTTP garbage").await;

    let mut junk = 16u32.to_be_bytes().to_vec();
    junk.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8]);
    let verdict = send_raw(&fx, &junk, false).await;
    assert_protocol_error(&verdict, &["08P01", "0A000"], "unknown request code");
    assert_alive(&bystander, "after an unknown request code").await;

    let verdict = send_raw(&fx, &[0, 0, 0, 4], false).await;
    assert_protocol_error(&verdict, &["08P01"], "length below minimum");

    let mut huge = 0x8000_0000u32.to_be_bytes().to_vec();
    huge.extend_from_slice(&196_608u32.to_be_bytes());
    let verdict = send_raw(&fx, &huge, false).await;
    assert_protocol_error(&verdict, &["08P01"], "2 GiB startup packet");
    assert_alive(&bystander, "after a 2 GiB startup claim").await;

    // A valid startup, then a password message claiming 100 MB.
    let token = fx.token("alice");
    let mut stream = TcpStream::connect(fx.addr()).await.expect("connect");
    stream
        .write_all(&raw::startup_packet(&[
            ("user", "alice"),
            ("database", RESOURCE),
        ]))
        .await
        .expect("startup");
    match raw::read_message(&mut stream).await {
        Reply::Message { tag: b'R', .. } => {}
        other => panic!("expected a password request, got {other:?}"),
    }
    let mut claim = vec![b'p'];
    claim.extend_from_slice(&100_000_000u32.to_be_bytes());
    claim.extend_from_slice(token.as_bytes());
    stream.write_all(&claim).await.expect("send");
    let verdict = raw::read_until_close(&mut stream).await;
    assert_protocol_error(&verdict, &["08P01"], "100 MB password message");
    assert_alive(&bystander, "after a 100 MB password claim").await;

    // A startup packet cut in half, then the client closes: a clean close, no reply.
    let packet = raw::startup_packet(&[("user", "alice"), ("database", RESOURCE)]);
    let verdict = send_raw(&fx, &packet[..packet.len() / 2], true).await;
    assert!(verdict.error.is_none() && verdict.closed, "{verdict:?}");
    assert_alive(&bystander, "after a truncated startup").await;

    // A client that connects and says nothing is dropped after the handshake timeout.
    let verdict = send_raw(&fx, &[], false).await;
    assert!(verdict.closed, "{verdict:?}");
    assert_alive(&bystander, "after a silent client").await;

    // Bytes before the TLS handshake (after SSLRequest) are refused, not read as TLS.
    let mut ssl_then_plain = 8u32.to_be_bytes().to_vec();
    ssl_then_plain.extend_from_slice(&80_877_103u32.to_be_bytes());
    ssl_then_plain.extend_from_slice(&raw::startup_packet(&[("user", "alice")]));
    let verdict = send_raw(&fx, &ssl_then_plain, false).await;
    assert_protocol_error(&verdict, &["08P01"], "data after SSLRequest");

    // The gateway still accepts and serves new sessions.
    let fresh = fx.client("dave").await;
    assert_alive(&fresh, "new session after all of it").await;
    assert_alive(&bystander, "bystander at the end").await;
}

// 10b. A malformed frame after authentication ends that session only, with a FATAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frame_after_authentication_is_fatal_to_that_session_only() {
    let fx = Fixture::with_config(|config| config.limits.max_message_bytes = 1 << 20);
    let bystander = fx.client("carol").await;
    let token = fx.token("alice");

    let mut stream = raw::authenticated(fx.addr(), "alice", &token, RESOURCE).await;
    stream.write_all(b"Q\0\0\0\x02").await.expect("send");
    let verdict = raw::read_until_close(&mut stream).await;
    assert_protocol_error(&verdict, &["08P01"], "'Q' with length 2");
    assert_alive(&bystander, "after a bad frame length").await;

    // Over the configured message limit, checked from the length prefix.
    let mut stream = raw::authenticated(fx.addr(), "alice", &token, RESOURCE).await;
    stream
        .write_all(&raw::frame(b'Q', b"SELECT 1\0"))
        .await
        .expect("send");
    let mut saw_ready = false;
    while !saw_ready {
        match raw::read_message(&mut stream).await {
            Reply::Message { tag: b'Z', .. } => saw_ready = true,
            Reply::Message { tag: b'E', body } => panic!("{:?}", raw::error_fields(&body)),
            Reply::Message { .. } => {}
            Reply::Closed => panic!("closed after a valid query"),
        }
    }
    let mut claim = vec![b'Q'];
    claim.extend_from_slice(&(512u32 << 20).to_be_bytes());
    claim.extend_from_slice(b"SELECT 1");
    stream.write_all(&claim).await.expect("send");
    let verdict = raw::read_until_close(&mut stream).await;
    assert_protocol_error(&verdict, &["08P01"], "512 MiB frame over a 1 MiB limit");
    assert_alive(&bystander, "after an oversized frame").await;

    // The backend sessions of the killed clients are gone (Terminate was sent to them).
    guard("backends of dead sessions exit", async {
        loop {
            let row = bystander
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .expect("pg_stat_activity");
            if row.get::<_, i64>(0) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

// 11. The gateway logs in to backends with SCRAM, md5 or trust.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_auth_methods() {
    let fx = Fixture::with(Options {
        cluster: ClusterOptions {
            extra_conf: vec![("log_connections".into(), "on".into())],
            ..ClusterOptions::default()
        },
        ..Options::default()
    });
    let cases = [
        (HostAuth::ScramSha256, Some("scram-sha-256")),
        (HostAuth::Md5, Some("md5")),
        (HostAuth::Trust, None),
    ];
    for (auth, encryption) in cases {
        fx.cluster.set_host_auth(auth).expect("set host auth");
        if let Some(encryption) = encryption {
            fx.cluster
                .set_role_password(common::BACKEND_USER, &fx.backend_password, encryption)
                .expect("set password");
        }
        let log_start = std::fs::read_to_string(fx.cluster.log_path())
            .expect("log")
            .len();
        let client = fx.client("alice").await;
        assert_alive(&client, &format!("backend auth {auth}")).await;
        if encryption.is_some() {
            // PostgreSQL logs the method it authenticated the gateway's login with.
            let wanted = format!("method={}", auth.method());
            guard("authentication logged", async {
                loop {
                    let log = std::fs::read_to_string(fx.cluster.log_path()).expect("log");
                    if log[log_start..].contains(&wanted) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
        }
    }

    // A gateway credential the backend refuses is the operator's problem: 08001 for the
    // client (its token was fine), never 28xxx.
    fx.cluster
        .set_host_auth(HostAuth::ScramSha256)
        .expect("scram");
    fx.cluster
        .set_role_password(
            common::BACKEND_USER,
            "not-the-configured-one",
            "scram-sha-256",
        )
        .expect("change password");
    let token = fx.token("alice");
    let e = expect_sqlstate(fx.try_connect("alice", &token, RESOURCE).await, "08001");
    assert!(
        e.as_db_error().unwrap().message().contains(RESOURCE),
        "{}",
        describe(&e)
    );
}

// 12a. drain(): no new sessions, open sessions run on, join() returns when they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_refuses_new_sessions_and_waits_for_open_ones() {
    // The grace period is long so that join() returning proves it waited for the session,
    // not for the clock; the guard below is far shorter than the grace period.
    let mut fx = Fixture::with_config(|config| config.shutdown.grace_secs = 60);
    let token = fx.token("alice");
    let client = fx.connect("alice", &token).await;
    let addr = fx.addr();
    let gateway = fx.take_gateway();
    gateway.shutdown_handle().drain();

    // Workers see the phase change asynchronously and each closes its own SO_REUSEPORT
    // listener. A connect that lands in the backlog of the listener closing first is reset
    // while another worker still listens, so one failure is not proof: wait for several
    // in a row.
    guard("listeners close", async {
        let mut refused_in_a_row = 0;
        while refused_in_a_row < 5 {
            if TcpStream::connect(addr).await.is_ok() {
                refused_in_a_row = 0;
            } else {
                refused_in_a_row += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let refused = fx.try_connect("alice", &token, RESOURCE).await;
    assert!(
        refused.is_err(),
        "a new session was accepted while draining"
    );
    assert!(TcpStream::connect(loopback(addr.port())).await.is_err());

    assert_alive(&client, "open session while draining").await;
    client
        .batch_execute("CREATE TABLE drained (x int); INSERT INTO drained VALUES (1)")
        .await
        .expect("work while draining");
    drop(client);

    let joined = tokio::task::spawn_blocking(move || gateway.join());
    let result = tokio::time::timeout(Duration::from_secs(15), joined)
        .await
        .expect("join() returns once the last session closes, not after the 60 s grace")
        .expect("join task");
    result.expect("workers exit cleanly");
}

/// Opens a session, applies `shutdown` to the gateway, joins it, and checks that the
/// session is really over on both sides: the client sees its connection end and the backend
/// session exits. `join()` returning while a session lives on would leave its sockets open
/// with no thread serving them.
async fn assert_join_closes_open_sessions(
    grace_secs: u64,
    shutdown: impl FnOnce(&sluice_proxy::ShutdownHandle),
) {
    let mut fx = Fixture::with_config(move |config| config.shutdown.grace_secs = grace_secs);
    let client = fx.client("alice").await;
    assert_alive(&client, "before shutdown").await;
    let gateway = fx.take_gateway();
    shutdown(&gateway.shutdown_handle());
    let joined = tokio::task::spawn_blocking(move || gateway.join());
    guard("join", joined)
        .await
        .expect("join task")
        .expect("workers exit cleanly");

    let backends = || {
        fx.cluster
            .psql(
                "postgres",
                &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{RESOURCE}'"),
            )
            .expect("psql")
    };
    guard("backend session ends after join", async {
        while backends() != "0" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let result = guard("query after join", client.simple_query("SELECT 1")).await;
    assert!(result.is_err(), "session survived the gateway: {result:?}");
}

// 12b. When the grace period runs out, remaining sessions are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_expiry_closes_remaining_sessions() {
    assert_join_closes_open_sessions(1, |handle| handle.drain()).await;
}

// 12c. stop() (the second signal) closes open sessions at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_open_sessions() {
    assert_join_closes_open_sessions(60, |handle| handle.stop()).await;
}

// Backend TLS per resource: `require` encrypts, `verify-full` also checks the certificate
// against `tls_ca`, and a backend whose certificate does not verify is refused with 08001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_require_and_verify_full() {
    use sluice_proxy::config::BackendTls;
    use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};

    let certs = sluice_proxy::tls::generate_loopback_certs().expect("certs");
    let foreign = sluice_proxy::tls::generate_loopback_certs().expect("foreign certs");
    let cas = tempfile::tempdir().expect("tempdir");
    let ca = cas.path().join("backend-ca.crt");
    let foreign_ca = cas.path().join("foreign-ca.crt");
    std::fs::write(&ca, &certs.ca_cert_pem).expect("write ca");
    std::fs::write(&foreign_ca, &foreign.ca_cert_pem).expect("write ca");

    for (mode, ca_file, expect_ok) in [
        (BackendTls::Require, None, true),
        (BackendTls::VerifyFull, Some(ca.clone()), true),
        (BackendTls::VerifyFull, Some(foreign_ca.clone()), false),
    ] {
        let fx = Fixture::with_config(move |config| {
            let resource = config.resources.get_mut(RESOURCE).expect("resource");
            resource.tls = mode;
            resource.tls_ca = ca_file;
        });
        // Turn TLS on in the running cluster: PostgreSQL wants its key owned by the
        // user it runs as and not readable by others.
        let data = fx.cluster.data_dir().to_path_buf();
        let owner = std::fs::metadata(&data).expect("data dir").uid();
        for (name, pem) in [
            ("server.crt", &certs.server_cert_pem),
            ("server.key", &certs.server_key_pem),
        ] {
            let path = data.join(name);
            std::fs::write(&path, pem).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            chown(&path, Some(owner), None).expect("chown");
        }
        fx.cluster
            .psql("postgres", "ALTER SYSTEM SET ssl = on")
            .expect("ssl on");
        fx.cluster.reload().expect("reload");

        if expect_ok {
            let client = fx.client("alice").await;
            let row = guard(
                "backend ssl status",
                client.query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                ),
            )
            .await
            .expect("query");
            assert!(
                row.get::<_, bool>(0),
                "{mode:?}: the backend connection must be encrypted"
            );
        } else {
            let token = fx.token("alice");
            let err = guard(
                "connect with an unverifiable backend",
                fx.pg_config("alice", &token, RESOURCE).connect(NoTls),
            )
            .await
            .err()
            .expect("a backend certificate from another CA must be refused");
            assert_eq!(common::sqlstate(&err), Some("08001"), "{}", describe(&err));
            // The TLS handshake itself failed (not a server without TLS saying `N`).
            let text = describe(&err);
            assert!(
                text.contains(&format!("TLS to resource \"{RESOURCE}\" failed")),
                "{text}"
            );
        }
    }
}

// A client that sends a query and half-closes its socket still gets the whole answer, as
// it would from PostgreSQL itself; then the session ends cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_client_still_receives_its_result() {
    let fx = Fixture::start();
    let token = fx.token("alice");
    let mut stream = raw::authenticated(fx.addr(), "alice", &token, RESOURCE).await;
    stream
        .write_all(&raw::frame(
            b'Q',
            b"SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g\0",
        ))
        .await
        .expect("send");
    stream.shutdown().await.expect("half-close");
    let (mut rows, mut completed, mut ready) = (0, false, false);
    guard("result after half-close", async {
        loop {
            match raw::read_message(&mut stream).await {
                Reply::Message { tag: b'D', .. } => rows += 1,
                Reply::Message { tag: b'C', .. } => completed = true,
                Reply::Message { tag: b'Z', .. } => ready = true,
                Reply::Message { tag: b'E', body } => panic!("{:?}", raw::error_fields(&body)),
                Reply::Message { .. } => {}
                Reply::Closed => break,
            }
        }
    })
    .await;
    assert_eq!(rows, 5000);
    assert!(
        completed && ready,
        "CommandComplete and ReadyForQuery arrive before the close"
    );
}
