//! The control process on its own (no proxy, no PostgreSQL): its admin socket, its state
//! surviving a restart, a proxy-side subscriber seeing each change, and refusals that say
//! what to do.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{admin, token};
use serde_json::Value;
use sluice_control::admin::AdminRequest;
use sluice_control::content::{millis, View};
use sluice_control::policy::{Decision, Subject};
use sluice_control::service::{paths, Control};
use sluice_control::snapshot::Subscriber;

const CONFIG: &str = r#"
[control]
state_dir = "state"

[[policy.rules]]
name = "eng"
groups = ["engineering"]
resources = ["app"]
access = "allow"

[[policy.rules]]
name = "contractors"
groups = ["contractors"]
resources = ["app"]
access = "request"
approvers = ["dba"]

[resources.app]
host = "127.0.0.1"
database = "app"
user = "gw"
"#;

fn view(dir: &Path) -> View {
    let sub = Subscriber::connect(paths::snapshot_socket(&dir.join("state"))).expect("subscribe");
    let snapshot = sub.current().expect("a snapshot").clone();
    View::from_payload(snapshot.payload()).expect("compiles")
}

fn allowed(view: &View, user: &str, groups: &[String]) -> bool {
    let subject = Subject { user, groups };
    matches!(
        view.decide(
            &subject,
            "app",
            millis(SystemTime::now()),
            millis(SystemTime::now())
        ),
        Decision::Allow(_)
    )
}

#[test]
fn grants_and_revocations_survive_a_restart_and_reach_subscribers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    let control = Control::start(&config).expect("start");
    let Err(second) = Control::start(&config) else {
        panic!("a second control started on the same state dir");
    };
    assert!(second.contains("already running"), "{second}");

    let dba = token(dir.path(), "dana", &["dba"]);
    let contractors = vec!["contractors".to_owned()];
    assert!(!allowed(&view(dir.path()), "carl", &contractors));
    let grant = admin(
        dir.path(),
        AdminRequest::Grant {
            token: dba.clone(),
            user: "carl".into(),
            resource: "app".into(),
            for_ms: 3_600_000,
            reason: "ticket 7".into(),
        },
    )
    .expect("grant");
    assert_eq!(grant["granted_by"], "dana");
    assert!(
        allowed(&view(dir.path()), "carl", &contractors),
        "the new generation carries the grant"
    );

    let missing = admin(
        dir.path(),
        AdminRequest::Grant {
            token: dba.clone(),
            user: "carl".into(),
            resource: "nope".into(),
            for_ms: 1000,
            reason: "x".into(),
        },
    )
    .expect_err("unknown resource");
    assert!(missing.contains("configured: app"), "{missing}");
    let forged = admin(
        dir.path(),
        AdminRequest::Grant {
            token: "not-a-token".into(),
            user: "carl".into(),
            resource: "app".into(),
            for_ms: 1000,
            reason: "x".into(),
        },
    )
    .expect_err("bad token");
    assert!(forged.contains("token refused"), "{forged}");

    admin(
        dir.path(),
        AdminRequest::Revoke {
            token: None,
            user: "erin".into(),
            resource: None,
            reason: "left".into(),
        },
    )
    .expect("revoke");
    drop(control);

    // Restart: the grant, the revocation and the audit trail are back.
    let _control = Control::start(&config).expect("restart");
    let grants = admin(dir.path(), AdminRequest::GrantsList).expect("list");
    assert_eq!(grants.as_array().expect("array").len(), 1, "{grants}");
    let view = view(dir.path());
    assert!(allowed(&view, "carl", &contractors));
    let engineering = vec!["engineering".to_owned()];
    let subject = Subject {
        user: "erin",
        groups: &engineering,
    };
    let issued_before = millis(SystemTime::now() - Duration::from_secs(60));
    assert!(
        matches!(
            view.decide(&subject, "app", millis(SystemTime::now()), issued_before),
            Decision::Deny(_)
        ),
        "erin's old credentials stay revoked"
    );
    let audit = admin(dir.path(), AdminRequest::Audit { limit: 100 }).expect("audit");
    let actions: Vec<&str> = audit
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for expected in ["token.mint", "grant", "revoke"] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    let status = admin(dir.path(), AdminRequest::Status).expect("status");
    assert!(status["generation"].as_u64().expect("generation") >= 1);
}

#[test]
fn garbage_on_the_admin_socket_gets_an_error_and_control_keeps_serving() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    let _control = Control::start(&config).expect("start");
    let socket = paths::admin_socket(&dir.path().join("state"));
    let ask = |bytes: &[u8]| {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        // A client may vanish half-way; the write may fail for the oversized case.
        let _ = stream.write_all(bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        let _ = BufReader::new(stream).read_line(&mut answer);
        answer
    };
    for bad in [
        &b"not json\n"[..],
        b"{\"op\":\"drop_everything\"}\n",
        b"{\"op\":\"grant\"}\n",
        b"\xff\xfe\n",
    ] {
        let answer: Value = serde_json::from_str(&ask(bad)).expect("a JSON answer");
        assert_eq!(answer["ok"], false, "{answer}");
        let error = answer["error"].as_str().expect("error");
        assert!(
            error.contains("not an admin request") || error.contains("reading the request"),
            "{error}"
        );
    }
    let huge = vec![b'x'; 2 << 20];
    let answer = ask(&huge);
    assert!(
        answer.is_empty() || answer.contains("\"ok\":false"),
        "{answer}"
    );
    // A client that connects and says nothing, then one that goes away at once.
    drop(std::os::unix::net::UnixStream::connect(&socket).expect("connect"));
    let status = admin(dir.path(), AdminRequest::Status).expect("still serving");
    assert!(status["generation"].as_u64().is_some());
}
