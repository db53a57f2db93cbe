//! `sluice approvals` through the real binary against a real control (in this process, on a
//! temp state directory): a statement the proxy reports as held is listed, refused to its
//! requester, approved by an approver (token from `$SLUICE_TOKEN`), and a second one
//! denied. What scripts capture is alone on stdout.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use sluice_control::content::millis;
use sluice_control::service::{paths, Control, ProxyEvent};
use support::{run, run_ok, scrub_env, sluice_bin};

const CONFIG: &str = r#"
[control]
state_dir = "state"

[[policy.rules]]
name = "staff"
groups = ["support", "dba"]
resources = ["app"]
access = "allow"

[[policy.statements]]
name = "support-writes"
groups = ["support"]
resources = ["app"]
classes = ["write"]
access = "request"
approvers = ["dba"]

[resources.app]
host = "127.0.0.1"
database = "app"
user = "gw"
"#;

const MINUTE: Duration = Duration::from_secs(60);

fn sluice(config: &Path, args: &[&str], token: Option<&str>) -> Command {
    let mut cmd = Command::new(sluice_bin());
    scrub_env(&mut cmd);
    cmd.args(args).arg("--config").arg(config);
    if let Some(t) = token {
        cmd.env("SLUICE_TOKEN", t);
    }
    cmd
}

fn ok(config: &Path, args: &[&str], token: Option<&str>) -> String {
    run_ok(&mut sluice(config, args, token), MINUTE)
}

fn fails(config: &Path, args: &[&str], token: Option<&str>) -> Output {
    let out = run(&mut sluice(config, args, token), MINUTE);
    assert!(!out.status.success(), "sluice {args:?} succeeded");
    out
}

fn hold(dir: &Path, id: &str) {
    let event = ProxyEvent::ApprovalRequested {
        id: id.into(),
        session: format!("session-of-{id}"),
        user: "erin".into(),
        groups: vec!["support".into()],
        resource: "app".into(),
        rule: "support-writes".into(),
        statement: "UPDATE orders SET status = $1 WHERE id = $2".into(),
        fingerprint: "9a8b7c6d5e4f3a2b".into(),
        class: "write".into(),
        requested_at_ms: millis(SystemTime::now()),
    };
    UnixDatagram::unbound()
        .expect("socket")
        .send_to(
            &serde_json::to_vec(&event).expect("encode"),
            paths::events_socket(&dir.join("state")),
        )
        .expect("send");
}

#[test]
fn approvals_are_listed_approved_and_denied_through_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let _control = Control::start(&config).expect("control");
    let token = |user: &str, groups: &str| {
        ok(
            &config,
            &["token", "--user", user, "--groups", groups, "--ttl", "10m"],
            None,
        )
        .trim()
        .to_owned()
    };
    let (erin, dana) = (token("erin", "support"), token("dana", "dba"));

    hold(dir.path(), "req-cli-1");
    hold(dir.path(), "req-cli-2");
    let deadline = Instant::now() + MINUTE;
    loop {
        let listed: serde_json::Value =
            serde_json::from_str(&ok(&config, &["approvals", "list", "--json"], None))
                .expect("JSON");
        if listed.as_array().is_some_and(|a| a.len() == 2) {
            assert_eq!(listed[0]["id"], "req-cli-1", "oldest first: {listed}");
            break;
        }
        assert!(Instant::now() < deadline, "never listed: {listed}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let table = ok(&config, &["approvals", "list"], None);
    let row = table
        .lines()
        .find(|l| l.starts_with("req-cli-1"))
        .unwrap_or_else(|| panic!("no row:\n{table}"));
    for want in [
        "erin",
        "app",
        "write",
        "support-writes",
        "UPDATE orders SET status = $1 WHERE id = $2",
        "9a8b7c6d5e4f3a2b",
        "0/1",
    ] {
        assert!(row.contains(want), "{want} in {row}");
    }

    let own = fails(&config, &["approvals", "approve", "req-cli-1"], Some(&erin));
    let err = String::from_utf8_lossy(&own.stderr);
    assert!(err.contains("you cannot approve your own request"), "{err}");

    let out = run(
        &mut sluice(
            &config,
            &[
                "approvals",
                "approve",
                "req-cli-1",
                "--reason",
                "ticket 12",
                "--scope",
                "fingerprint",
            ],
            Some(&dana),
        ),
        MINUTE,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "approved\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fingerprint scope"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let denied = ok(
        &config,
        &[
            "approvals",
            "deny",
            "req-cli-2",
            "--reason",
            "not today",
            "--token",
            &dana,
        ],
        None,
    );
    assert_eq!(denied, "denied\n");

    assert_eq!(
        ok(&config, &["approvals", "list"], None),
        "no statements waiting for approval\n"
    );
    let all = ok(&config, &["approvals", "list", "--all"], None);
    assert!(all.contains("approved (fingerprint)"), "{all}");
    assert!(all.contains("denied by dana: not today"), "{all}");
    let audit = ok(&config, &["audit", "--json"], None);
    assert!(
        audit.contains("approval.approve") && audit.contains("approval.deny"),
        "{audit}"
    );
}
