//! `--profile` and `sluice tune` as an operator uses them: a gateway started with a
//! profile says in its log what the profile replaced and runs with it; the tune commands
//! list, explain and check without a database.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{plain, run, run_ok, scrub_env, sluice_bin, Gateway, Options};

const MINUTE: Duration = Duration::from_secs(60);

fn sluice(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(sluice_bin());
    scrub_env(&mut cmd);
    cmd.args(args);
    run(&mut cmd, MINUTE)
}

fn sluice_ok(args: &[&str]) -> String {
    let mut cmd = Command::new(sluice_bin());
    scrub_env(&mut cmd);
    cmd.args(args);
    run_ok(&mut cmd, MINUTE)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A demo-style deployment written without starting anything.
fn deployment(dir: &std::path::Path) -> sluice_proxy::deployment::Deployment {
    sluice_proxy::deployment::write(
        dir,
        6432,
        sluice_proxy::config::Driver::IoUring,
        &sluice_proxy::deployment::BackendSpec {
            resource: "app".into(),
            host: "127.0.0.1".into(),
            port: 5432,
            database: "app".into(),
            user: "gw".into(),
            password: "pw".into(),
        },
    )
    .expect("write deployment")
}

#[test]
fn up_with_a_profile_logs_each_replaced_value_and_serves_with_it() {
    let gw = Gateway::start(Options {
        up: true,
        // The file asks for 128 KiB buffers; small-host says 16 KiB and wins, loudly.
        edit_config: Some(|text| text.replace("buffer_bytes = 65536", "buffer_bytes = 131072")),
        extra_args: vec!["--profile", "small-host"],
        ..Options::default()
    });
    assert_eq!(gw.query("SELECT 40 + 2"), "42");
    let log = plain(&gw.proc.log_text());
    assert!(
        log.contains("tuning profile applied") && log.contains("profile=\"small-host\""),
        "{log}"
    );
    let replaced: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tuning profile replaced a value from the config file"))
        .collect();
    // The demo file writes its defaults out, so every key small-host sets differently
    // from them is reported; keys where the two agree (pin_workers, driver, ...) are not.
    let keys: Vec<&str> = replaced
        .iter()
        .filter_map(|l| l.split("key=").nth(1)?.split(' ').next())
        .collect();
    assert_eq!(
        keys,
        [
            "limits.buffer_bytes",
            "limits.classify_cache_entries",
            "listen.uring_entries",
            "listen.workers"
        ],
        "{log}"
    );
    assert!(
        replaced[0].contains("file=131072") && replaced[0].contains("profile_value=16384"),
        "{}",
        replaced[0]
    );
    assert!(log.contains("replaced_from_file=4"), "{log}");
    // small-host runs one worker.
    let accepting = log
        .lines()
        .find(|l| l.contains("sluice gateway accepting"))
        .expect("accepting line");
    assert!(accepting.contains("workers=1"), "{accepting}");
}

#[test]
fn the_file_can_name_its_profile_and_the_flag_wins_over_it() {
    let gw = Gateway::start(Options {
        edit_config: Some(|text| format!("[tuning]\nprofile = \"small-host\"\n{text}")),
        extra_args: vec!["--profile", "low-latency"],
        ..Options::default()
    });
    assert_eq!(gw.query("SELECT 1"), "1");
    let log = plain(&gw.proc.log_text());
    assert!(log.contains("profile=\"low-latency\""), "{log}");
    assert!(
        log.contains("--profile wins over the config file's [tuning] profile")
            && log.contains("file_profile=small-host"),
        "{log}"
    );
}

#[test]
fn an_unknown_profile_is_refused_with_the_known_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deployment = deployment(dir.path());
    let config = deployment.config.to_str().expect("utf-8 path");
    let out = sluice(&["proxy", "--config", config, "--profile", "turbo"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = text(&out.stderr);
    assert!(
        err.contains("\"turbo\"") && err.contains("audit-heavy"),
        "{err}"
    );

    // Named in the file, the same message, before anything starts.
    let body = std::fs::read_to_string(&deployment.config).expect("read");
    std::fs::write(
        &deployment.config,
        format!("[tuning]\nprofile = \"turbo\"\n{body}"),
    )
    .expect("write");
    let out = sluice(&["up", "--config", config]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("\"turbo\"") && err.contains("small-host"),
        "{err}"
    );
}

#[test]
fn tune_profiles_show_and_check() {
    let out = sluice_ok(&["tune", "profiles"]);
    for name in [
        "balanced",
        "low-latency",
        "high-throughput",
        "audit-heavy",
        "small-host",
    ] {
        assert!(out.contains(name), "{out}");
    }
    assert!(out.contains("(default)"), "{out}");

    let shown = sluice_ok(&["tune", "show", "audit-heavy"]);
    assert!(shown.starts_with("# audit-heavy: "), "{shown}");
    assert!(shown.contains("fsync = \"every_block\""), "{shown}");

    let dir = tempfile::tempdir().expect("tempdir");
    let deployment = deployment(dir.path());
    let mut cmd = Command::new(sluice_bin());
    scrub_env(&mut cmd);
    cmd.args(["tune", "show", "audit-heavy", "--config"])
        .arg(&deployment.config);
    let diff = run_ok(&mut cmd, MINUTE);
    assert!(
        diff.contains("recording.fsync")
            && diff.contains("\"interval\" (default)")
            && diff.contains("\"every_block\""),
        "{diff}"
    );
    // The demo file sets grace_secs = 5 itself.
    assert!(diff.contains("5 (file)"), "{diff}");
    assert!(diff.contains("the result loads and validates"), "{diff}");

    let mut cmd = Command::new(sluice_bin());
    scrub_env(&mut cmd);
    cmd.args([
        "tune",
        "check",
        "--json",
        "--profile",
        "small-host",
        "--config",
    ])
    .arg(&deployment.config);
    let out = run(&mut cmd, MINUTE);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("tune check --json prints JSON");
    assert_eq!(report["plan"]["workers"], 1, "small-host's one worker");
    let findings = report["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), sluice_tuning::check::ITEMS.len());
    let failed = report["status"] == "FAIL";
    assert_eq!(
        out.status.success(),
        !failed,
        "exit code follows the verdict"
    );

    let mut cmd = Command::new(sluice_bin());
    scrub_env(&mut cmd);
    cmd.args(["tune", "check"]);
    let out = run(&mut cmd, MINUTE);
    let report = text(&out.stdout);
    assert!(report.contains("read-only"), "{report}");
    for item in sluice_tuning::check::ITEMS {
        assert!(report.contains(item), "{report}");
    }
}
