//! Control and the gateway as real processes, driven the way an operator does: `sluice
//! revoke` ending a live psql session, SIGHUP reloading the policy under a live session,
//! SIGKILL of control (fail-static, then closed, then a restarted control restoring
//! service), and `sluice up` supervising the proxy.
//!
//! No assertion is about speed; timeouts only turn a hang into a failure. The time from
//! `sluice revoke` to the session's end is printed here and measured by the bench.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{run, scrub_env, start_control, Gateway, Options, Proc, Session};

const MINUTE: Duration = Duration::from_secs(60);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sluice_ok(gw: &Gateway, args: &[&str]) -> String {
    let out = gw.sluice(args);
    assert!(
        out.status.success(),
        "sluice {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn generation(gw: &Gateway) -> u64 {
    let status: serde_json::Value =
        serde_json::from_str(&sluice_ok(gw, &["status", "--json"])).expect("status JSON");
    status["generation"].as_u64().expect("generation")
}

fn generation_subscribers(gw: &Gateway) -> u64 {
    let status: serde_json::Value =
        serde_json::from_str(&sluice_ok(gw, &["status", "--json"])).expect("status JSON");
    status["subscribers"].as_u64().expect("subscribers")
}

fn one_shot(gw: &Gateway, user: &str, token: &str, sql: &str) -> std::process::Output {
    let mut cmd = gw.psql(token, &gw.conninfo(user, ""));
    cmd.args(["-A", "-t", "-c", sql]);
    run(&mut cmd, MINUTE)
}

#[test]
fn sluice_revoke_ends_a_live_pg_sleep_and_refuses_the_old_token() {
    let gw = Gateway::start(Options::default());
    let bobs = gw
        .deployment
        .mint("bob", &["support"], Duration::from_secs(600))
        .expect("mint");
    let mut bob = Session::open(&gw, "bob", &bobs);
    bob.send("SELECT pg_sleep(30);");
    let deadline = Instant::now() + MINUTE;
    while gw.query("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30);' AND state = 'active'") != "1" {
        assert!(Instant::now() < deadline, "bob's pg_sleep never started");
        std::thread::sleep(Duration::from_millis(50));
    }

    let started = Instant::now();
    let printed = sluice_ok(&gw, &["revoke", "--user", "bob", "--reason", "offboarded"]);
    let stderr = bob.expect_err("offboarded");
    let status = bob.proc.wait_timeout(Duration::from_secs(20));
    let elapsed = started.elapsed();
    eprintln!("`sluice revoke` to the end of bob's pg_sleep(30): {elapsed:?}");
    assert!(stderr.contains("FATAL"), "{stderr}");
    assert!(!status.success(), "psql saw its session end");
    assert!(!printed.is_empty());
    assert!(
        elapsed < Duration::from_secs(25),
        "ended by the revocation, not pg_sleep"
    );
    assert_eq!(
        gw.query("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30);'"),
        "0",
        "the backend statement was cancelled"
    );

    let out = one_shot(&gw, "bob", &bobs, "SELECT 1");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("offboarded"),
        "{}",
        text(&out.stderr)
    );

    let audit = sluice_ok(&gw, &["audit", "--json"]);
    assert!(
        audit.contains("\"revoke\"") && audit.contains("offboarded"),
        "{audit}"
    );
}

const FREEZE: &str = r#"
[[policy.rules]]
name = "freeze-app"
groups = ["engineering", "dba"]
resources = ["app"]
access = "deny"
"#;

#[test]
fn sighup_and_sluice_reload_change_what_a_live_session_may_do() {
    let gw = Gateway::start(Options::default());
    let mut alice = Session::open(&gw, "alice", &gw.token("alice"));
    let original = std::fs::read_to_string(&gw.deployment.config).expect("config");

    std::fs::write(&gw.deployment.config, format!("{original}{FREEZE}")).expect("write");
    let before = generation(&gw);
    gw.control.as_ref().expect("control").signal("HUP");
    let deadline = Instant::now() + MINUTE;
    while generation(&gw) == before {
        assert!(Instant::now() < deadline, "SIGHUP published nothing");
        std::thread::sleep(Duration::from_millis(50));
    }
    alice.send("SELECT 2;");
    let stderr = alice.expect_err("freeze-app");
    assert!(
        stderr.contains("ERROR"),
        "a statement error, the session stays: {stderr}"
    );

    std::fs::write(&gw.deployment.config, &original).expect("restore");
    let printed = sluice_ok(&gw, &["reload"]);
    assert!(printed.contains("reloaded"), "{printed}");
    alice.send("SELECT 3;");
    alice.expect_out("3");
    assert!(
        alice.proc.try_wait().is_none(),
        "the same psql session throughout"
    );

    // A broken policy is refused by `sluice reload`, saying why, and changes nothing.
    std::fs::write(
        &gw.deployment.config,
        original.replace("access = \"allow\"", "access = \"perhaps\""),
    )
    .expect("write");
    let out = gw.sluice(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("perhaps"),
        "{}",
        text(&out.stderr)
    );
    alice.send("SELECT 4;");
    alice.expect_out("4");
}

#[test]
fn sigkill_of_control_is_fail_static_then_closed_and_a_new_control_restores_service() {
    let mut gw = Gateway::start(Options {
        edit_config: Some(|text| {
            text.replace("snapshot_max_age = \"5m\"", "snapshot_max_age = \"20s\"")
        }),
        ..Options::default()
    });
    let token = gw.token("alice");
    let mut alice = Session::open(&gw, "alice", &token);
    let proxy_pid = gw.proc.pid();

    let mut control = gw.control.take().expect("control");
    control.signal("KILL");
    control.wait_timeout(Duration::from_secs(10));
    // Inside the window: the open session and a new one both work.
    alice.send("SELECT 10;");
    alice.expect_out("10");
    let out = one_shot(&gw, "alice", &token, "SELECT 'during'");
    assert_eq!(text(&out.stdout).trim(), "during", "{}", text(&out.stderr));

    // Then new sessions and statements are refused, saying why.
    let deadline = Instant::now() + MINUTE;
    let refused = loop {
        let out = one_shot(&gw, "alice", &token, "SELECT 1");
        if !out.status.success() {
            break text(&out.stderr);
        }
        assert!(
            Instant::now() < deadline,
            "never refused after control died"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(refused.contains("out of date"), "{refused}");
    alice.send("SELECT 11;");
    let stderr = alice.expect_err("control process");
    assert!(
        stderr.contains("57P03") || stderr.contains("out of date"),
        "{stderr}"
    );

    // A new control restores service; the proxy was never restarted.
    let _control = start_control(&gw.deployment, gw.dir.path());
    let deadline = Instant::now() + MINUTE;
    while !one_shot(&gw, "alice", &token, "SELECT 1").status.success() {
        assert!(Instant::now() < deadline, "service never came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Each worker finds the new control on its own tick, and alice's session may be on
    // another worker than that connection was: wait until the gateway's readiness says
    // every worker is fresh.
    loop {
        let out = gw.sluice(&["status", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let all_fresh = status["gateway"]["workers"]
            .as_array()
            .is_some_and(|w| !w.is_empty() && w.iter().all(|w| w["snapshot_fresh"] == true));
        if all_fresh {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every worker came back: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    alice.send("SELECT 12;");
    alice.expect_out("12");
    assert_eq!(gw.proc.pid(), proxy_pid);
    assert!(gw.proc.try_wait().is_none(), "the proxy kept running");
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn sluice_up_restarts_a_dead_proxy_and_stops_cleanly() {
    let mut gw = Gateway::start(Options {
        up: true,
        ..Options::default()
    });
    assert_eq!(gw.query("SELECT 'up'"), "up");
    let proxies = children(gw.proc.pid());
    assert_eq!(proxies.len(), 1, "one proxy child: {proxies:?}");
    support::send_signal(proxies[0], "KILL");
    let deadline = Instant::now() + MINUTE;
    loop {
        let now = children(gw.proc.pid());
        if now.len() == 1 && now[0] != proxies[0] {
            let out = one_shot(&gw, "alice", &gw.token("alice"), "SELECT 'again'");
            if out.status.success() {
                assert_eq!(text(&out.stdout).trim(), "again");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the proxy was not restarted; log:\n{}",
            gw.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    gw.proc.signal("TERM");
    let status = gw.proc.wait_timeout(Duration::from_secs(45));
    assert!(
        status.success(),
        "sluice up exit {status}; log:\n{}",
        gw.proc.log_text()
    );
    assert!(
        !gw.deployment.state_dir.join("admin.sock").exists(),
        "control cleaned up its socket"
    );
}

fn gateway_children(pid: u32) -> Vec<u32> {
    children(pid)
        .into_iter()
        .filter(|child| {
            std::fs::read(format!("/proc/{child}/cmdline"))
                .map(|cmd| String::from_utf8_lossy(&cmd).contains("proxy"))
                .unwrap_or(false)
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn a_killed_sluice_up_leaves_its_gateway_serving_and_the_next_up_retires_it() {
    let mut gw = Gateway::start(Options {
        up: true,
        ..Options::default()
    });
    let first = gateway_children(gw.proc.pid());
    assert_eq!(first.len(), 1, "{first:?}");
    let old_gateway = first[0];
    let _guard = support::KillOnDrop(vec![old_gateway]);
    // Both workers hold a snapshot before control goes away.
    let deadline = Instant::now() + MINUTE;
    while generation_subscribers(&gw) < 2 {
        assert!(
            Instant::now() < deadline,
            "the gateway's workers never subscribed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Control dies with `up`; the gateway serves on from its snapshot (fail-static).
    gw.proc.signal("KILL");
    gw.proc.wait_timeout(Duration::from_secs(10));
    assert!(alive(old_gateway), "the gateway outlived `up`");
    assert_eq!(gw.query("SELECT 'still serving'"), "still serving");

    // The next `up` starts its own gateway beside it and retires the old one.
    let log = gw.dir.path().join("up2.log");
    let mut cmd = Command::new(support::sluice_bin());
    scrub_env(&mut cmd);
    cmd.arg("up")
        .arg("--config")
        .arg(&gw.deployment.config)
        .env("SLUICE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    let mut second = Proc::spawn("second sluice up", &mut cmd, Some(log));
    let deadline = Instant::now() + MINUTE;
    while alive(old_gateway) {
        assert!(
            Instant::now() < deadline,
            "the old gateway was not retired; log:\n{}",
            second.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let new = gateway_children(second.pid());
    assert_eq!(new.len(), 1, "the new up runs one gateway: {new:?}");
    let _guard2 = support::KillOnDrop(new.clone());
    assert_eq!(gw.query("SELECT 'new gateway'"), "new gateway");
    assert!(
        second.log_text().contains("retiring the gateway"),
        "{}",
        second.log_text()
    );

    second.signal("TERM");
    let status = second.wait_timeout(Duration::from_secs(45));
    assert!(status.success(), "second up exit {status}");
    assert!(!alive(new[0]), "the new gateway stopped with its up");
}
