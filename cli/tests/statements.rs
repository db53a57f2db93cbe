//! Statement policy end to end, the way people use it: real psql sessions for bob
//! (`support`), alice (`engineering`) and carol (`dba`) through `sluice control` and
//! `sluice proxy` processes with the demo policy, and carol deciding alice's held
//! statements from another terminal with `sluice approvals`.
//!
//! No assertion is about speed; timeouts only turn a hang into a failure.

mod support;

use std::time::{Duration, Instant};

use support::{send_signal, Gateway, Options, Session};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn member(gw: &Gateway, user: &str, group: &str) -> String {
    gw.deployment
        .mint(user, &[group], Duration::from_secs(3600))
        .expect("mint")
}

/// The approval request ID in a "held for approval: request ID — ..." notice.
fn request_id(stderr: &str) -> String {
    let at = stderr
        .find("held for approval: request ")
        .unwrap_or_else(|| panic!("no held notice in {stderr}"));
    stderr[at + "held for approval: request ".len()..]
        .split_whitespace()
        .next()
        .expect("an ID")
        .to_owned()
}

fn approvals(gw: &Gateway, args: &[&str]) -> std::process::Output {
    let mut all = vec!["approvals"];
    all.extend_from_slice(args);
    gw.sluice(&all)
}

#[test]
fn readers_are_refused_risky_statements_are_held_and_a_dba_decides() {
    let gw = Gateway::start(Options::default());
    let carol_token = member(&gw, "carol", "dba");
    let alice_token = member(&gw, "alice", "engineering");
    let bob_token = member(&gw, "bob", "support");

    let mut carol = Session::open(&gw, "carol", &carol_token);
    carol.send(
        "CREATE TABLE customers (id int PRIMARY KEY, email text);
         INSERT INTO customers SELECT g, 'c' || g || '@example.com' FROM generate_series(1, 4) g;
         CREATE TABLE orders (id int PRIMARY KEY, total numeric);
         INSERT INTO orders VALUES (1, 10), (2, 20);
         SELECT 'seeded';",
    );
    carol.expect_out("seeded");

    // bob may only read: the DELETE and the multi-statement DROP are refused with 42501,
    // and his session keeps working.
    let mut bob = Session::open(&gw, "bob", &bob_token);
    bob.send("\\set VERBOSITY verbose");
    bob.send("DELETE FROM customers;");
    let err = bob.expect_err("42501");
    assert!(err.contains("ERROR"), "{err}");
    bob.send("SELECT 1; DROP TABLE orders;");
    bob.expect_err("42501");
    bob.send("SELECT count(*) FROM orders;");
    bob.expect_out("2");

    // alice reads and writes freely ...
    let mut alice = Session::open(&gw, "alice", &alice_token);
    alice.send("UPDATE customers SET email = 'x@example.com' WHERE id = 1; SELECT 'updated';");
    alice.expect_out("updated");

    // ... but her DROP is held until carol approves it, and she cannot approve it herself.
    alice.send("DROP TABLE orders;");
    let held = alice.expect_err("held for approval: request");
    let id = request_id(&held);
    let listed = approvals(&gw, &["list"]);
    assert!(
        text(&listed.stdout).contains(&id),
        "pending request listed: {}{}",
        text(&listed.stdout),
        text(&listed.stderr)
    );
    let own = approvals(&gw, &["approve", &id, "--token", &alice_token]);
    assert!(!own.status.success(), "alice approved her own request");
    assert!(
        text(&own.stderr).contains("own request"),
        "{}",
        text(&own.stderr)
    );
    let bobs = approvals(&gw, &["approve", &id, "--token", &bob_token]);
    assert!(!bobs.status.success(), "bob is no approver");
    let ok = approvals(&gw, &["approve", &id, "--token", &carol_token]);
    assert!(ok.status.success(), "carol approves: {}", text(&ok.stderr));
    alice.send("SELECT to_regclass('orders') IS NULL;");
    alice.expect_out("t");
    let approved_id = id;

    // A DELETE without WHERE is held too; carol refuses it with a reason, alice sees it
    // as an error and goes on.
    alice.send("DELETE FROM customers;");
    let held = alice.expect_err("held for approval: request");
    let id = request_id(&held);
    let denied = approvals(
        &gw,
        &[
            "deny",
            &id,
            "--reason",
            "use a WHERE clause",
            "--token",
            &carol_token,
        ],
    );
    assert!(denied.status.success(), "{}", text(&denied.stderr));
    let err = alice.expect_err("use a WHERE clause");
    assert!(err.contains("ERROR"), "{err}");
    alice.send("SELECT count(*) FROM customers;");
    alice.expect_out("4");

    // Approving with --scope fingerprint lets the same statement, with other literals, run
    // again in this session without asking.
    alice.send("UPDATE customers SET email = 'a@example.com';");
    let held = alice.expect_err("held for approval: request");
    let id = request_id(&held);
    let ok = approvals(
        &gw,
        &[
            "approve",
            &id,
            "--scope",
            "fingerprint",
            "--token",
            &carol_token,
        ],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    alice.send("SELECT 'first';");
    alice.expect_out("first");
    alice.send("UPDATE customers SET email = 'b@example.com';");
    alice.send("SELECT count(*) FROM customers WHERE email = 'b@example.com';");
    alice.expect_out("4");

    // Cancelling a held statement (Ctrl-C in psql) withdraws the request: the gateway sees
    // psql's CancelRequest even though the backend never saw the statement.
    alice.send("TRUNCATE customers;");
    let held = alice.expect_err("held for approval: request");
    let id = request_id(&held);
    send_signal(alice.proc.pid(), "INT");
    alice.expect_err("canceling statement due to user request");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = approvals(&gw, &["list"]);
        if !text(&listed.stdout).contains(&id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "withdrawn request still pending: {}",
            text(&listed.stdout)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // psql running a script stops after a Ctrl-C; alice starts a new session.
    alice.proc.wait_timeout(Duration::from_secs(30));
    let mut alice = Session::open(&gw, "alice", &alice_token);
    alice.send("SELECT count(*) FROM customers;");
    alice.expect_out("4");

    // carol runs anything without approval.
    carol.send("DROP TABLE customers; VACUUM; SELECT 'carol done';");
    carol.expect_out("carol done");
    assert!(bob.proc.try_wait().is_none(), "bob's session survived");
    assert!(alice.proc.try_wait().is_none(), "alice's session survived");

    // The audit trail has bob's refusals and the approved DROP with its approver.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (bobs, alices) = loop {
        let bobs = gw.sluice(&[
            "audit",
            "--statements",
            "--user",
            "bob",
            "--decision",
            "deny",
        ]);
        let alices = gw.sluice(&[
            "audit",
            "--statements",
            "--user",
            "alice",
            "--decision",
            "approved",
            "--json",
        ]);
        let found = text(&bobs.stdout).contains("delete from customers")
            && text(&alices.stdout).contains(&approved_id);
        if found || Instant::now() > deadline {
            break (bobs, alices);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let bobs = text(&bobs.stdout);
    assert!(bobs.contains("delete from customers"), "{bobs}");
    assert!(bobs.contains("drop table orders"), "{bobs}");
    let alices: serde_json::Value = serde_json::from_slice(&alices.stdout).expect("JSON");
    let drop = alices
        .as_array()
        .and_then(|events| {
            events
                .iter()
                .find(|e| e["approval"] == approved_id.as_str())
        })
        .unwrap_or_else(|| panic!("no approved DROP in {alices}"));
    assert_eq!(drop["class"], "ddl", "{drop}");
    assert_eq!(drop["rule"], "engineering-ddl-needs-approval", "{drop}");
    assert_eq!(drop["outcome"], "completed", "{drop}");
    assert_eq!(drop["approvers"], serde_json::json!(["carol"]), "{drop}");

    // alice's recording keeps the approval of her DROP, with its approver.
    let deadline = Instant::now() + Duration::from_secs(30);
    let replayed = loop {
        let list = gw.sluice(&["sessions", "list", "--user", "alice", "--json"]);
        let sessions: serde_json::Value =
            serde_json::from_slice(&list.stdout).unwrap_or(serde_json::Value::Null);
        let replayed: Vec<String> = sessions
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["session"].as_str())
            .map(|id| text(&gw.sluice(&["replay", id, "--format", "json"]).stdout))
            .collect();
        let found = replayed
            .iter()
            .any(|r| r.contains(&approved_id) && r.contains("\"approval\""));
        if found || Instant::now() > deadline {
            break replayed;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let approval = replayed
        .iter()
        .flat_map(|r| r.lines())
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "approval" && e["request_id"] == approved_id.as_str())
        .unwrap_or_else(|| panic!("no approval event for {approved_id} in {replayed:?}"));
    assert_eq!(approval["outcome"], "approved", "{approval}");
    assert_eq!(approval["approver"], "carol", "{approval}");
}

// `sluice policy explain --query` for a masked session shows which rule masks each result
// column; the backend describes the query (with the gateway's credentials), so an alias
// does not hide the column it comes from.
#[test]
fn policy_explain_shows_the_masking_plan_of_a_query() {
    let gw = Gateway::start(Options::default());
    let carol = member(&gw, "carol", "dba");
    let mut session = Session::open(&gw, "carol", &carol);
    session.send(
        "CREATE TABLE customers (id int PRIMARY KEY, email text, ssn text, notes text);
         SELECT 'created';",
    );
    session.expect_out("created");

    let explained = gw.sluice(&[
        "policy",
        "explain",
        "--user",
        "bob",
        "--groups",
        "support",
        "--resource",
        "app",
        "--query",
        "SELECT id, email, ssn AS x, notes FROM customers",
    ]);
    let out = text(&explained.stdout);
    assert!(
        explained.status.success(),
        "{out}{}",
        text(&explained.stderr)
    );
    assert!(
        out.contains("masking plan for the result (profile \"pii\")"),
        "{out}"
    );
    assert!(
        out.contains("\"email\" (type oid 25, from public.customers.email): masked by rule \"emails\" (partial)"),
        "{out}"
    );
    assert!(
        out.contains("\"x\" (type oid 25, from public.customers.ssn): masked by rule \"customer-ssn-by-source\" (redact)"),
        "{out}"
    );
    assert!(
        out.contains("\"notes\" (type oid 25, from public.customers.notes): scanned by detectors card, email"),
        "{out}"
    );
    assert!(
        out.contains("\"id\" (type oid 23, from public.customers.id): passed through"),
        "{out}"
    );

    // carol (dba) has no masking profile: no plan.
    let explained = gw.sluice(&[
        "policy",
        "explain",
        "--user",
        "carol",
        "--groups",
        "dba",
        "--resource",
        "app",
        "--query",
        "SELECT email FROM customers",
    ]);
    assert!(explained.status.success());
    assert!(!text(&explained.stdout).contains("masking plan"));
}
