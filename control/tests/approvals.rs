//! Statements held for approval, control's side, with real parts only: a real control on a
//! temp state directory, the proxy's events sent as datagrams to its events socket, the
//! operator's and approvers' requests on its admin socket, the proxy's view read from the
//! published snapshot, and webhook deliveries received by a loopback HTTP server.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::{admin, token};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use sluice_control::admin::AdminRequest;
use sluice_control::content::{millis, ApprovalScope, View};
use sluice_control::service::{paths, Control, ProxyEvent};
use sluice_control::snapshot::Subscriber;
use sluice_pgharness::http::WebhookReceiver;

/// `support` may run reads; their writes on `app` are held until `dba` or `ops` approves.
const POLICY: &str = r#"
[[policy.rules]]
name = "staff"
groups = ["support", "dba", "ops"]
resources = ["app"]
access = "allow"

[[policy.statements]]
name = "support-writes"
groups = ["support"]
resources = ["app"]
classes = ["write"]
access = "request"
approvers = ["dba", "ops"]

[[policy.statements]]
name = "everything-else"
groups = ["support", "dba", "ops"]
resources = ["app"]
access = "allow"

[resources.app]
host = "127.0.0.1"
database = "app"
user = "gw"
"#;

const FINGERPRINT: &str = "5f3c2a1b0e9d8c7b";
const SECRET: &str = "a-long-webhook-secret-for-tests";
const WAIT: Duration = Duration::from_secs(20);

/// Writes the config (`[control]` with a short heartbeat, then `approvals`, then the
/// policy) and starts control on it.
fn start(dir: &Path, approvals: &str) -> Control {
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[control]\nstate_dir = \"state\"\nheartbeat = \"200ms\"\n\n[approvals]\n{approvals}\n{POLICY}"
        ),
    )
    .expect("write config");
    Control::start(&config).expect("start control")
}

fn send(dir: &Path, event: &ProxyEvent) {
    let socket = UnixDatagram::unbound().expect("datagram socket");
    let bytes = serde_json::to_vec(event).expect("encode");
    socket
        .send_to(&bytes, paths::events_socket(&dir.join("state")))
        .expect("send event");
}

/// What the proxy sends when erin's `DELETE` is held in `session`.
fn held(id: &str, session: &str) -> ProxyEvent {
    ProxyEvent::ApprovalRequested {
        id: id.into(),
        session: session.into(),
        user: "erin".into(),
        groups: vec!["support".into()],
        resource: "app".into(),
        rule: "support-writes".into(),
        statement: "DELETE FROM orders WHERE id = $1".into(),
        fingerprint: FINGERPRINT.into(),
        class: "write".into(),
        requested_at_ms: millis(SystemTime::now()),
    }
}

fn list(dir: &Path, all: bool) -> Vec<Value> {
    admin(
        dir,
        AdminRequest::ApprovalsList {
            resource: None,
            all,
        },
    )
    .expect("list")
    .as_array()
    .expect("array")
    .clone()
}

/// The request `id` as `approvals list --all` shows it, once `ready` holds for it.
fn wait_for(dir: &Path, id: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = list(dir, true).into_iter().find(|a| a["id"] == id) {
            if ready(&found) {
                return found;
            }
        }
        assert!(
            Instant::now() < deadline,
            "request {id} never got there: {:?}",
            list(dir, true)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn approve(
    dir: &Path,
    token: &str,
    id: &str,
    reason: Option<&str>,
    scope: ApprovalScope,
) -> Result<Value, String> {
    admin(
        dir,
        AdminRequest::ApprovalsApprove {
            token: token.into(),
            id: id.into(),
            reason: reason.map(str::to_owned),
            scope,
        },
    )
}

fn deny(dir: &Path, token: &str, id: &str, reason: Option<&str>) -> Result<Value, String> {
    admin(
        dir,
        AdminRequest::ApprovalsDeny {
            token: token.into(),
            id: id.into(),
            reason: reason.map(str::to_owned),
        },
    )
}

fn view(dir: &Path) -> View {
    let sub = Subscriber::connect(paths::snapshot_socket(&dir.join("state"))).expect("subscribe");
    let snapshot = sub.current().expect("a snapshot").clone();
    View::from_payload(snapshot.payload()).expect("compiles")
}

fn audit_actions(dir: &Path) -> Vec<(String, String, String)> {
    admin(dir, AdminRequest::Audit { limit: 1000 })
        .expect("audit")
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (field("actor"), field("action"), field("target"))
        })
        .collect()
}

#[test]
fn a_held_statement_is_listed_approved_by_an_approver_and_published() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _control = start(dir.path(), "");
    let erin = token(dir.path(), "erin", &["support"]);
    let frank = token(dir.path(), "frank", &["support"]);
    let dana = token(dir.path(), "dana", &["dba"]);

    send(dir.path(), &held("req-1", "sess-1"));
    let listed = wait_for(dir.path(), "req-1", |_| true);
    assert_eq!(listed["status"]["status"], "pending", "{listed}");
    for (key, want) in [
        ("user", "erin"),
        ("resource", "app"),
        ("rule", "support-writes"),
        ("class", "write"),
        ("fingerprint", FINGERPRINT),
        ("statement", "DELETE FROM orders WHERE id = $1"),
        ("session", "sess-1"),
    ] {
        assert_eq!(listed[key], want, "{key} in {listed}");
    }
    assert_eq!(listed["required"], 1);
    assert_eq!(list(dir.path(), false).len(), 1, "pending without --all");
    let other = admin(
        dir.path(),
        AdminRequest::ApprovalsList {
            resource: Some("elsewhere".into()),
            all: true,
        },
    )
    .expect("list");
    assert_eq!(other, Value::Array(vec![]), "filtered by resource");
    let status = admin(dir.path(), AdminRequest::Status).expect("status");
    assert_eq!(status["pending_approvals"], 1, "{status}");

    // The same datagram twice is one request.
    send(dir.path(), &held("req-1", "sess-1"));

    let own = approve(dir.path(), &erin, "req-1", None, ApprovalScope::Statement)
        .expect_err("the requester");
    assert!(own.contains("you cannot approve your own request"), "{own}");
    let peer = approve(dir.path(), &frank, "req-1", None, ApprovalScope::Statement)
        .expect_err("not an approver");
    assert!(
        peer.contains("\"frank\" may not decide") && peer.contains("dba, ops"),
        "{peer}"
    );
    let forged = approve(dir.path(), "nope", "req-1", None, ApprovalScope::Statement)
        .expect_err("bad token");
    assert!(forged.contains("token refused"), "{forged}");
    let unknown = approve(dir.path(), &dana, "req-x", None, ApprovalScope::Statement)
        .expect_err("unknown request");
    assert!(
        unknown.contains("no held statement with request ID req-x"),
        "{unknown}"
    );
    assert!(
        view(dir.path()).approval("req-1").is_none(),
        "nothing decided yet"
    );

    let generation = admin(dir.path(), AdminRequest::Status).expect("status")["generation"]
        .as_u64()
        .expect("generation");
    let result = approve(
        dir.path(),
        &dana,
        "req-1",
        Some("ticket 7"),
        ApprovalScope::Statement,
    )
    .expect("approve");
    assert_eq!(result["status"], "approved", "{result}");
    assert_eq!(result["approvals"], 1);
    assert!(result["generation"].as_u64().expect("published") > generation);

    let view = view(dir.path());
    let decision = view
        .approval("req-1")
        .expect("the decision is in the snapshot");
    assert!(decision.approved);
    assert_eq!(decision.session, "sess-1");
    assert_eq!(decision.fingerprint, FINGERPRINT);
    assert_eq!(decision.scope, ApprovalScope::Statement);
    assert_eq!(decision.approvers, ["dana"]);
    assert_eq!(decision.reason.as_deref(), Some("dana: ticket 7"));
    assert!(
        view.fingerprint_approved("sess-1", FINGERPRINT).is_none(),
        "scope statement approves this one statement only"
    );
    assert_eq!(view.approval_timeout_ms, 600_000);

    let again =
        approve(dir.path(), &dana, "req-1", None, ApprovalScope::Statement).expect_err("decided");
    assert!(again.contains("already approved (by dana)"), "{again}");
    assert!(list(dir.path(), false).is_empty(), "nothing pending");
    assert_eq!(
        list(dir.path(), true).len(),
        1,
        "--all shows the decided one"
    );

    let actions = audit_actions(dir.path());
    assert!(
        actions.contains(&(
            "erin".into(),
            "approval.request".into(),
            format!("id=req-1 session=sess-1 resource=app rule=support-writes fingerprint={FINGERPRINT}")
        )),
        "{actions:?}"
    );
    assert_eq!(
        actions
            .iter()
            .filter(|(a, act, _)| a == "dana" && act == "approval.approve")
            .count(),
        1,
        "{actions:?}"
    );
    let audit_log =
        std::fs::read_to_string(dir.path().join("state").join("audit.log")).expect("audit.log");
    assert!(
        audit_log.contains("approval.request") && audit_log.contains("approval.approve"),
        "{audit_log}"
    );
    assert!(
        audit_log.contains("scope=statement reason=ticket 7"),
        "{audit_log}"
    );
}

#[test]
fn two_distinct_approvers_are_needed_and_one_denial_denies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _control = start(dir.path(), "min_approvals = 2");
    let dana = token(dir.path(), "dana", &["dba"]);
    let olga = token(dir.path(), "olga", &["ops"]);

    send(dir.path(), &held("req-2", "sess-2"));
    let listed = wait_for(dir.path(), "req-2", |_| true);
    assert_eq!(listed["required"], 2);

    let first = approve(dir.path(), &dana, "req-2", None, ApprovalScope::Fingerprint)
        .expect("first approval");
    assert_eq!(first["status"], "pending", "{first}");
    assert_eq!(first["approvals"], 1);
    assert_eq!(first["required"], 2);
    assert!(first["generation"].is_null(), "nothing to publish yet");
    let twice = approve(dir.path(), &dana, "req-2", None, ApprovalScope::Fingerprint)
        .expect_err("the same approver again");
    assert!(
        twice.contains("already approved request req-2")
            && twice.contains("counts once")
            && twice.contains("1 of 2"),
        "{twice}"
    );
    assert!(view(dir.path()).approval("req-2").is_none());
    let listed = wait_for(dir.path(), "req-2", |_| true);
    assert_eq!(listed["approvals"].as_array().expect("votes").len(), 1);

    let second = approve(
        dir.path(),
        &olga,
        "req-2",
        Some("looks right"),
        ApprovalScope::Fingerprint,
    )
    .expect("second approval");
    assert_eq!(second["status"], "approved", "{second}");
    assert_eq!(second["scope"], "fingerprint");
    assert_eq!(second["approvers"], serde_json::json!(["dana", "olga"]));
    let v = view(dir.path());
    let decision = v
        .fingerprint_approved("sess-2", FINGERPRINT)
        .expect("later statements like it run in this session");
    assert_eq!(decision.id, "req-2");
    assert!(v.fingerprint_approved("sess-other", FINGERPRINT).is_none());

    // Both approvers must agree to the wider scope.
    send(dir.path(), &held("req-3", "sess-3"));
    wait_for(dir.path(), "req-3", |_| true);
    approve(dir.path(), &dana, "req-3", None, ApprovalScope::Fingerprint).expect("first");
    let narrow = approve(dir.path(), &olga, "req-3", None, ApprovalScope::Statement).expect("2nd");
    assert_eq!(narrow["scope"], "statement", "{narrow}");
    assert!(view(dir.path())
        .fingerprint_approved("sess-3", FINGERPRINT)
        .is_none());

    // One denial decides, even after an approval.
    send(dir.path(), &held("req-4", "sess-4"));
    wait_for(dir.path(), "req-4", |_| true);
    approve(dir.path(), &dana, "req-4", None, ApprovalScope::Statement).expect("first");
    let denied = deny(dir.path(), &olga, "req-4", Some("use the staging copy")).expect("deny");
    assert_eq!(denied["status"], "denied", "{denied}");
    let v = view(dir.path());
    let decision = v.approval("req-4").expect("published");
    assert!(!decision.approved);
    assert_eq!(decision.approvers, ["olga"]);
    assert_eq!(decision.reason.as_deref(), Some("use the staging copy"));
    let late =
        approve(dir.path(), &dana, "req-4", None, ApprovalScope::Statement).expect_err("decided");
    assert!(late.contains("already denied (by olga)"), "{late}");
    let actions = audit_actions(dir.path());
    assert!(
        actions
            .iter()
            .any(|(a, act, t)| a == "olga" && act == "approval.deny" && t.contains("id=req-4")),
        "{actions:?}"
    );

    // The session that holds the fingerprint approval ends: its decisions leave the
    // snapshot.
    assert!(view(dir.path()).approval("req-2").is_some());
    send(
        dir.path(),
        &ProxyEvent::SessionEnd {
            session: "sess-2".into(),
            user: "erin".into(),
            resource: "app".into(),
            reason: "client closed".into(),
            masking: None,
            masked: Default::default(),
        },
    );
    let deadline = Instant::now() + WAIT;
    while view(dir.path())
        .fingerprint_approved("sess-2", FINGERPRINT)
        .is_some()
    {
        assert!(
            Instant::now() < deadline,
            "the approval outlived its session"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(view(dir.path()).approval("req-2").is_none());
    assert!(
        view(dir.path()).approval("req-4").is_some(),
        "other sessions' decisions stay"
    );
}

#[test]
fn undecided_requests_expire_and_withdrawn_ones_cannot_be_decided() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _control = start(dir.path(), "timeout = \"2s\"");
    let dana = token(dir.path(), "dana", &["dba"]);

    send(dir.path(), &held("req-expiring", "sess-5"));
    send(dir.path(), &held("req-cancelled", "sess-6"));
    send(dir.path(), &held("req-orphan", "sess-7"));
    wait_for(dir.path(), "req-orphan", |_| true);
    send(
        dir.path(),
        &ProxyEvent::ApprovalWithdrawn {
            id: "req-cancelled".into(),
            reason: "cancelled by the client".into(),
        },
    );
    send(
        dir.path(),
        &ProxyEvent::SessionEnd {
            session: "sess-7".into(),
            user: "erin".into(),
            resource: "app".into(),
            reason: "terminated".into(),
            masking: None,
            masked: Default::default(),
        },
    );
    let cancelled = wait_for(dir.path(), "req-cancelled", |a| {
        a["status"]["status"] == "withdrawn"
    });
    assert_eq!(cancelled["status"]["reason"], "cancelled by the client");
    let orphan = wait_for(dir.path(), "req-orphan", |a| {
        a["status"]["status"] == "withdrawn"
    });
    assert_eq!(orphan["status"]["reason"], "session ended");
    let err = approve(
        dir.path(),
        &dana,
        "req-cancelled",
        None,
        ApprovalScope::Statement,
    )
    .expect_err("withdrawn");
    assert!(
        err.contains("was withdrawn (cancelled by the client)"),
        "{err}"
    );

    let expired = wait_for(dir.path(), "req-expiring", |a| {
        a["status"]["status"] == "expired"
    });
    let requested = expired["requested_at_ms"]
        .as_u64()
        .expect("requested_at_ms");
    assert_eq!(expired["status"]["at_ms"], requested + 2000);
    let err = approve(
        dir.path(),
        &dana,
        "req-expiring",
        None,
        ApprovalScope::Statement,
    )
    .expect_err("expired");
    assert!(err.contains("expired: nobody decided within"), "{err}");
    let err = deny(dir.path(), &dana, "req-expiring", None).expect_err("expired");
    assert!(err.contains("expired"), "{err}");
    assert!(view(dir.path()).approval("req-expiring").is_none());
    assert!(list(dir.path(), false).is_empty());

    let actions = audit_actions(dir.path());
    for (actor, action, id) in [
        ("control", "approval.expire", "req-expiring"),
        ("erin", "approval.withdraw", "req-cancelled"),
        ("erin", "approval.withdraw", "req-orphan"),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, act, t)| a == actor && act == action && t.contains(id)),
            "{action} {id} in {actions:?}"
        );
    }
}

fn verify_signature(body: &[u8], header: &str) {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    let want = mac.finalize().into_bytes();
    let hex: String = want.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(header, format!("sha256={hex}"));
}

#[test]
fn webhook_deliveries_are_signed_and_retried_after_a_500() {
    let receiver = WebhookReceiver::start("/hooks/sluice").expect("receiver");
    receiver.fail_next(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let _control = start(
        dir.path(),
        &format!(
            "webhook_url = \"{}\"\nwebhook_secret = \"{SECRET}\"\nwebhook_retries = 3",
            receiver.uri()
        ),
    );
    let dana = token(dir.path(), "dana", &["dba"]);

    send(dir.path(), &held("req-hook", "sess-8"));
    let got = receiver.wait_for(2, WAIT);
    assert_eq!(got.len(), 2, "one failed attempt and its retry: {got:?}");
    assert_eq!(got[0].status, 500);
    assert_eq!(got[1].status, 200);
    assert_eq!(got[0].body, got[1].body, "a retry sends the same body");
    assert_eq!(
        got[0].header("x-sluice-delivery"),
        got[1].header("x-sluice-delivery"),
        "and the same delivery ID"
    );
    let delivered = &got[1];
    assert_eq!(delivered.method, "POST");
    assert_eq!(
        delivered.header("x-sluice-event"),
        Some("approval_requested")
    );
    assert_eq!(delivered.header("content-type"), Some("application/json"));
    verify_signature(
        &delivered.body,
        delivered.header("x-sluice-signature").expect("signed"),
    );
    let body: Value = serde_json::from_slice(&delivered.body).expect("JSON body");
    assert_eq!(body["event"], "approval_requested");
    assert_eq!(body["id"], "req-hook");
    assert_eq!(body["user"], "erin");
    assert_eq!(body["rule"], "support-writes");
    assert_eq!(body["fingerprint"], FINGERPRINT);
    assert_eq!(body["statement"], "DELETE FROM orders WHERE id = $1");
    assert_eq!(body["approver_groups"], serde_json::json!(["dba", "ops"]));
    assert_eq!(body["approve_command"], "sluice approvals approve req-hook");

    approve(
        dir.path(),
        &dana,
        "req-hook",
        Some("ok"),
        ApprovalScope::Fingerprint,
    )
    .expect("approve");
    let got = receiver.wait_for(3, WAIT);
    assert_eq!(got.len(), 3, "{got:?}");
    let decided = &got[2];
    assert_eq!(decided.header("x-sluice-event"), Some("approval_decided"));
    verify_signature(
        &decided.body,
        decided.header("x-sluice-signature").expect("signed"),
    );
    let body: Value = serde_json::from_slice(&decided.body).expect("JSON body");
    assert_eq!(body["event"], "approval_decided");
    assert_eq!(body["status"], "approved");
    assert_eq!(body["scope"], "fingerprint");
    assert_eq!(body["decided_by"], serde_json::json!(["dana"]));
}

#[test]
fn an_unreachable_webhook_blocks_nothing() {
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let _control = start(
        dir.path(),
        &format!(
            "webhook_url = \"http://127.0.0.1:{port}/hook\"\nwebhook_secret = \"{SECRET}\"\nwebhook_retries = 2"
        ),
    );
    let dana = token(dir.path(), "dana", &["dba"]);
    send(dir.path(), &held("req-nohook", "sess-9"));
    wait_for(dir.path(), "req-nohook", |a| {
        a["status"]["status"] == "pending"
    });
    let started = Instant::now();
    let result = approve(
        dir.path(),
        &dana,
        "req-nohook",
        None,
        ApprovalScope::Statement,
    )
    .expect("approvable without the webhook");
    assert_eq!(result["status"], "approved");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the admin socket never waits for the webhook"
    );
    assert!(view(dir.path()).approval("req-nohook").is_some());
}

#[test]
fn held_statements_and_decisions_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let control = start(dir.path(), "min_approvals = 2");
    let dana = token(dir.path(), "dana", &["dba"]);
    let olga = token(dir.path(), "olga", &["ops"]);
    send(dir.path(), &held("req-a", "sess-a"));
    send(dir.path(), &held("req-b", "sess-b"));
    wait_for(dir.path(), "req-b", |_| true);
    wait_for(dir.path(), "req-a", |_| true);
    approve(dir.path(), &dana, "req-a", None, ApprovalScope::Statement).expect("1 of 2");
    approve(dir.path(), &dana, "req-b", None, ApprovalScope::Fingerprint).expect("1 of 2");
    approve(dir.path(), &olga, "req-b", None, ApprovalScope::Fingerprint).expect("2 of 2");
    drop(control);

    let _control = start(dir.path(), "min_approvals = 2");
    let pending = list(dir.path(), false);
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["id"], "req-a");
    assert_eq!(pending[0]["approvals"][0]["by"], "dana");
    let v = view(dir.path());
    assert!(v.approval("req-b").expect("republished").approved);
    assert!(v.fingerprint_approved("sess-b", FINGERPRINT).is_some());
    let twice = approve(dir.path(), &dana, "req-a", None, ApprovalScope::Statement)
        .expect_err("still counted once after the restart");
    assert!(twice.contains("counts once"), "{twice}");
    let done = approve(dir.path(), &olga, "req-a", None, ApprovalScope::Statement).expect("2 of 2");
    assert_eq!(done["status"], "approved");
    assert!(view(dir.path()).approval("req-a").is_some());
}
