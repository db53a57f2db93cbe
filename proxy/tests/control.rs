//! The gateway under control's orders, end to end against a real PostgreSQL: policy reloads
//! reaching live sessions, revocations and grant expiry ending them, just-in-time access,
//! key rotation, and the fail-static window when control dies.
//!
//! Control and the gateway run in-process (control's admin API over its real Unix socket,
//! snapshots over real memfds); the CLI tests drive the same through `sluice` processes.
//! No assertion here is about speed: timeouts only turn a hang into a failure; the
//! revoke-to-end time is measured by the bench (`bench/benches/control.rs`).

mod common;

use std::time::{Duration, Instant};

use common::{assert_alive, describe, expect_sqlstate, guard, Fixture, RESOURCE};
use serde_json::Value;
use sluice_control::admin::{call, AdminRequest};
use sluice_control::service::{paths, Control};
use tokio_postgres::SimpleQueryMessage;

fn admin(fx: &Fixture, request: AdminRequest) -> Result<Value, String> {
    call(&paths::admin_socket(&fx.deployment.state_dir), &request)
}

fn mint(fx: &Fixture, user: &str, groups: &[&str]) -> String {
    fx.deployment
        .mint(user, groups, Duration::from_secs(600))
        .expect("mint")
}

fn edit_config(fx: &Fixture, from: &str, to: &str) {
    let text = std::fs::read_to_string(&fx.deployment.config).expect("read config");
    assert!(text.contains(from), "config has {from:?}");
    std::fs::write(&fx.deployment.config, text.replacen(from, to, 1)).expect("write config");
}

fn control(fx: &Fixture) -> &Control {
    fx.control.as_ref().expect("control running")
}

async fn scalar(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<String, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default())
}

/// Waits until `check` holds (a generation takes a moment to reach every worker).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    guard(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// A rule an operator appends to freeze a resource for a group.
const FREEZE: &str = r#"
[[policy.rules]]
name = "freeze-app"
groups = ["engineering", "dba"]
resources = ["app"]
access = "deny"
"#;

// A policy change (SIGHUP / `sluice reload`) reaches a live session on its next statement,
// over both protocols and inside a transaction, without dropping it; restoring the policy
// lets the same session go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reload_changes_what_a_live_session_may_do() {
    let fx = Fixture::start();
    let client = fx.client("alice").await;
    assert_eq!(scalar(&client, "SELECT 1").await.expect("allowed"), "1");
    client.batch_execute("BEGIN").await.expect("begin");

    let original = std::fs::read_to_string(&fx.deployment.config).expect("read config");
    std::fs::write(&fx.deployment.config, format!("{original}\n{FREEZE}")).expect("write");
    let generation = control(&fx).reload().expect("reload");
    assert!(generation >= 2);

    // Simple protocol, inside the open transaction.
    let e = expect_sqlstate(client.simple_query("SELECT 2").await, "42501");
    let db = e.as_db_error().expect("db error");
    assert_eq!(db.severity(), "ERROR", "a statement error, not FATAL");
    assert!(db.message().contains("freeze-app"), "{}", describe(&e));
    // Extended protocol (Parse/Bind/Execute/Sync) is refused the same way.
    let e = expect_sqlstate(client.query("SELECT $1::int", &[&7i32]).await, "42501");
    assert!(
        e.as_db_error().expect("db").hint().is_some(),
        "says how to get access"
    );
    // Pipelined: every statement of the pipeline gets its own refusal, in order.
    let (a, b, c) = tokio::join!(
        client.query("SELECT 1", &[]),
        client.query("SELECT 2", &[]),
        client.simple_query("SELECT 3; SELECT 4"),
    );
    expect_sqlstate(a, "42501");
    expect_sqlstate(b, "42501");
    expect_sqlstate(c, "42501");

    std::fs::write(&fx.deployment.config, &original).expect("restore config");
    control(&fx).reload().expect("reload");
    // The refusal aborted the transaction on the backend, exactly as a failed statement
    // would: PostgreSQL semantics hold through the gateway.
    let e = expect_sqlstate(client.simple_query("SELECT 3").await, "25P02");
    assert!(describe(&e).contains("aborted"), "{}", describe(&e));
    client.batch_execute("ROLLBACK").await.expect("rollback");
    let row = client
        .query_one("SELECT $1::int + 1", &[&7i32])
        .await
        .expect("allowed again");
    assert_eq!(row.get::<_, i32>(0), 8);
    assert_alive(&client, "same session after the policy came back").await;

    // A bad policy file is refused on reload and the running policy stays.
    edit_config(&fx, "access = \"allow\"", "access = \"maybe\"");
    let err = control(&fx).reload().expect_err("invalid policy");
    assert!(err.contains("maybe"), "{err}");
    assert_alive(&client, "after a refused reload").await;
}

// `sluice revoke` ends the principal's live sessions at once (even one sitting in a long
// statement, which is cancelled on the backend), refuses tokens issued before it, and
// leaves other principals alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_ends_live_sessions_and_refuses_older_tokens() {
    let fx = Fixture::start();
    let bob = fx.client("bob").await;
    let alice = fx.client("alice").await;
    let bobs_token = fx.token("bob");
    let sleeper = tokio::spawn(async move {
        let started = Instant::now();
        let result = bob.simple_query("SELECT pg_sleep(30)").await;
        (result, started.elapsed())
    });
    let watcher = fx.client("carol").await;
    eventually("bob's pg_sleep is running", || async {
        scalar(&watcher, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")
            .await
            .expect("count")
            == "1"
    })
    .await;

    let revoked = admin(
        &fx,
        AdminRequest::Revoke {
            token: None,
            user: "bob".into(),
            resource: None,
            reason: "laptop stolen".into(),
        },
    )
    .expect("revoke");
    assert!(revoked["generation"].as_u64().is_some());

    let (result, elapsed) = guard("bob's session ends", sleeper).await.expect("join");
    let e = expect_sqlstate(result, "57P01");
    let db = e.as_db_error().expect("db error");
    assert_eq!(db.severity(), "FATAL");
    assert!(db.message().contains("laptop stolen"), "{}", describe(&e));
    eprintln!("revoke ended bob's pg_sleep(30) after {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(20),
        "ended by the revocation, not by pg_sleep"
    );

    // The backend statement was cancelled, not left running.
    eventually("bob's pg_sleep is gone from the backend", || async {
        scalar(
            &watcher,
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'",
        )
        .await
        .expect("count")
            == "0"
    })
    .await;

    // His old token is refused; a token minted after the revocation works.
    let e = expect_sqlstate(fx.try_connect("bob", &bobs_token, RESOURCE).await, "28000");
    assert!(describe(&e).contains("laptop stolen"), "{}", describe(&e));
    tokio::time::sleep(Duration::from_millis(1100)).await; // token times are in seconds
    let fresh = fx.token("bob");
    let bob = fx.connect("bob", &fresh).await;
    assert_alive(&bob, "bob with a new token").await;
    assert_alive(&alice, "alice was never revoked").await;

    let audit = admin(&fx, AdminRequest::Audit { limit: 10 }).expect("audit");
    assert!(
        audit
            .as_array()
            .expect("list")
            .iter()
            .any(|e| e["action"] == "revoke"
                && e["detail"].as_str().unwrap_or("").contains("laptop stolen")),
        "{audit}"
    );
}

// Just-in-time access: a `request` rule refuses with a hint, an access request approved by
// someone in the approver group (never the requester) becomes a grant, and the grant's end
// ends the session it allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn just_in_time_grants_open_and_close_access() {
    let fx = Fixture::start();
    let carl = mint(&fx, "carl", &["contractors"]);
    let dana = mint(&fx, "dana", &["dba"]);
    let e = expect_sqlstate(fx.try_connect("carl", &carl, RESOURCE).await, "42501");
    let db = e.as_db_error().expect("db");
    assert!(
        db.hint().unwrap_or("").contains("sluice access request"),
        "{}",
        describe(&e)
    );

    let requested = admin(
        &fx,
        AdminRequest::AccessRequest {
            token: carl.clone(),
            resource: RESOURCE.into(),
            for_ms: 60_000,
            reason: "fix ticket 42".into(),
        },
    )
    .expect("request");
    let id = requested["request"]["id"].as_str().expect("id").to_owned();
    let own = admin(
        &fx,
        AdminRequest::AccessApprove {
            token: carl.clone(),
            id: id.clone(),
        },
    )
    .expect_err("requester cannot approve");
    assert!(
        own.contains("may not approve") || own.contains("person who made it"),
        "{own}"
    );
    let engineer = mint(&fx, "erin", &["engineering"]);
    let err = admin(
        &fx,
        AdminRequest::AccessApprove {
            token: engineer,
            id: id.clone(),
        },
    )
    .expect_err("not an approver");
    assert!(err.contains("dba"), "{err}");
    let grant = admin(
        &fx,
        AdminRequest::AccessApprove {
            token: dana.clone(),
            id,
        },
    )
    .expect("approve");
    assert_eq!(grant["user"], "carl");
    assert_eq!(grant["granted_by"], "dana");

    let session = fx.connect("carl", &carl).await;
    assert_alive(&session, "carl on his grant").await;

    // A short direct grant: its expiry ends the session it allowed.
    let fay = mint(&fx, "fay", &["contractors"]);
    admin(
        &fx,
        AdminRequest::Grant {
            token: dana.clone(),
            user: "fay".into(),
            resource: RESOURCE.into(),
            for_ms: 1500,
            reason: "quick look".into(),
        },
    )
    .expect("grant");
    let fays = fx.connect("fay", &fay).await;
    assert_alive(&fays, "fay within her grant").await;
    let ended = guard("fay's grant runs out", async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Err(e) = fays.simple_query("SELECT 1").await {
                return e;
            }
        }
    })
    .await;
    let text = describe(&ended);
    assert!(text.contains("57P01") || fays.is_closed(), "{text}");
    assert_alive(&session, "carl's longer grant is untouched").await;

    let grants = admin(&fx, AdminRequest::GrantsList).expect("list");
    let users: Vec<&str> = grants
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|g| g["user"].as_str())
        .collect();
    assert_eq!(users, vec!["carl"], "fay's grant expired");
}

// Rotating control's signing key: tokens signed with the old key keep working until they
// expire, new tokens are signed with the new key; nothing restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_old_tokens_valid_and_signs_new_ones() {
    let fx = Fixture::start();
    let old = fx.token("alice");
    let rotated = admin(&fx, AdminRequest::KeysRotate).expect("rotate");
    let kid = rotated["kid"].as_str().expect("kid").to_owned();
    let new = admin(
        &fx,
        AdminRequest::Token {
            user: "alice".into(),
            groups: vec!["engineering".into()],
            ttl_ms: 60_000,
        },
    )
    .expect("token")["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let header = jsonwebtoken::decode_header(&new).expect("header");
    assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
    let a = fx.connect("alice", &old).await;
    let b = fx.connect("alice", &new).await;
    assert_alive(&a, "old key").await;
    assert_alive(&b, "new key").await;
    let too_long = admin(
        &fx,
        AdminRequest::Token {
            user: "alice".into(),
            groups: vec![],
            ttl_ms: 48 * 3600 * 1000,
        },
    )
    .expect_err("over max_ttl");
    assert!(too_long.contains("max_ttl"), "{too_long}");
}

// Control dies: sessions keep working for `snapshot_max_age` (fail-static), then sessions
// and statements are refused with a message saying why; a new control restores service
// without restarting the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_outage_is_fail_static_then_closed_then_recovers() {
    // The gateway's fail-static window (control's heartbeat stays at 1 s).
    let mut fx = Fixture::with_config(|c| c.control.snapshot_max_age = Duration::from_secs(10));
    let client = fx.client("alice").await;
    let token = fx.token("alice");

    let control = fx.control.take().expect("control");
    control.stop();
    // Within the window: the existing session and a new one both work.
    assert_alive(&client, "inside the fail-static window").await;
    let during = fx.connect("alice", &token).await;
    assert_alive(&during, "new session inside the window").await;

    let e = guard("the window closes", async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Err(e) = client.simple_query("SELECT 1").await {
                return e;
            }
        }
    })
    .await;
    assert_eq!(common::sqlstate(&e), Some("57P03"), "{}", describe(&e));
    assert!(describe(&e).contains("control"), "{}", describe(&e));
    let e = expect_sqlstate(fx.try_connect("alice", &token, RESOURCE).await, "57P03");
    assert!(describe(&e).contains("out of date"), "{}", describe(&e));

    fx.control = Some(Control::start(&fx.deployment.config).expect("restart control"));
    eventually("service is back", || async {
        client.simple_query("SELECT 1").await.is_ok()
    })
    .await;
    let after = fx.connect("alice", &token).await;
    assert_alive(&after, "new session after control came back").await;
}
