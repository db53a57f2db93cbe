//! `sluice loadtest` against a real PostgreSQL (sluice-pgharness). Counts and structure
//! are asserted, never timings: this machine is shared and 2-core.

use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use serde_json::Value;
use sluice_pgharness::{ClusterOptions, PgCluster};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: sluice_loadtest::LoadtestArgs,
}

fn run(args: &[&str]) -> ExitCode {
    let mut argv = vec!["loadtest", "-q"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("arguments parse");
    sluice_loadtest::run(cli.args).expect("loadtest runs")
}

/// Runs with `--json` and returns the exit code and the parsed document.
fn run_json(args: &[&str]) -> (ExitCode, Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("report.json");
    let path_str = path.to_str().expect("utf-8 path");
    let mut all = args.to_vec();
    all.extend_from_slice(&["--json", path_str]);
    let code = run(&all);
    let text = std::fs::read_to_string(&path).expect("JSON report written");
    (
        code,
        serde_json::from_str(&text).expect("JSON report parses"),
    )
}

fn script(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write script");
    path.to_str().expect("utf-8 path").to_string()
}

fn first_target(report: &Value) -> &Value {
    &report["targets"][0]
}

fn start_cluster() -> PgCluster {
    PgCluster::start(ClusterOptions::default()).expect("PostgreSQL starts")
}

#[test]
fn pgbench_workloads_and_custom_scripts_in_every_protocol() {
    let cluster = start_cluster();
    let url = cluster.url("postgres");
    let target = format!("db={url}");
    assert_eq!(
        run(&["--target", &target, "--init", "--init-only", "-s", "1"]),
        ExitCode::SUCCESS
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let custom = script(
        dir.path(),
        "custom.sql",
        "-- two statements, one variable used twice\n\\set a random(1, 100000)\n\\set k 3\n\
         SELECT :a::int + :k::int;\nSELECT abalance\n  FROM pgbench_accounts WHERE aid = :a;\n",
    );
    for protocol in ["simple", "extended", "prepared"] {
        for (workload, extra) in [
            ("select-only", vec![]),
            (
                "select-only",
                vec!["--pipeline", "8", "--driver", "io-uring"],
            ),
            ("tpcb-like", vec![]),
            ("custom", vec!["--script", custom.as_str()]),
        ] {
            let mut args = vec![
                "--target",
                &target,
                "-w",
                workload,
                "-M",
                protocol,
                "--connections",
                "4",
                "-j",
                "2",
                "-t",
                "120",
            ];
            args.extend(extra.iter().copied());
            let (code, report) = run_json(&args);
            assert_eq!(code, ExitCode::SUCCESS, "{workload} {protocol} {extra:?}");
            let t = first_target(&report);
            assert_eq!(
                t["rounds"][0]["transactions"], 120,
                "{workload} {protocol} {extra:?}: {t}"
            );
            assert_eq!(t["error_total"], 0, "{workload} {protocol} {extra:?}: {t}");
            assert_eq!(t["latency"]["count"], 120);
            assert!(t["latency"]["p99_us"].as_f64().expect("p99") > 0.0);
        }
    }
    // tpcb-like really wrote: one history row per transaction (3 protocols × 120).
    assert_eq!(
        cluster
            .psql("postgres", "SELECT count(*) FROM pgbench_history")
            .expect("count"),
        "360"
    );

    // Open loop, reconnects, two targets in two interleaved rounds.
    let second = format!("again={url}");
    let (code, report) = run_json(&[
        "--target",
        &target,
        "--target",
        &second,
        "--rounds",
        "2",
        "--connections",
        "2",
        "-t",
        "40",
        "--rate",
        "400",
        "--reconnect-every",
        "5",
        "-M",
        "prepared",
    ]);
    assert_eq!(code, ExitCode::SUCCESS);
    let targets = report["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 2);
    for t in targets {
        let rounds = t["rounds"].as_array().expect("rounds");
        assert_eq!(rounds.len(), 2);
        for r in rounds {
            assert_eq!(r["transactions"], 40, "{r}");
            // 2 initial connections, then one more per 5 transactions (minus the last).
            assert!(
                r["connect"]["count"].as_u64().expect("connects") >= 8,
                "{r}"
            );
        }
        assert!(t["ratio"].as_f64().expect("ratio") > 0.0);
    }
    assert_eq!(targets[0]["ratio"], 1.0);
    assert_eq!(report["settings"]["rate"], 400.0);

    // Duration mode with a warm-up.
    let (code, report) = run_json(&[
        "--target",
        &target,
        "--connections",
        "2",
        "-T",
        "1s",
        "--warmup",
        "200ms",
        "--pid",
        "self=1",
    ]);
    assert_eq!(code, ExitCode::SUCCESS);
    let t = first_target(&report);
    assert!(
        t["rounds"][0]["transactions"].as_u64().expect("count") > 0,
        "{t}"
    );
    assert!(t["process_cpu_us_per_txn"].get("self").is_some(), "{t}");
}

#[test]
fn errors_are_counted_by_sqlstate_and_thresholds_decide_the_exit_code() {
    let cluster = start_cluster();
    let target = format!("db={}", cluster.url("postgres"));
    let dir = tempfile::tempdir().expect("tempdir");
    let failing = script(
        dir.path(),
        "fail.sql",
        "\\set n random(1, 10)\nSELECT :n;\nSELECT * FROM no_such_table WHERE x = :n;\n",
    );
    for protocol in ["simple", "extended"] {
        let (code, report) = run_json(&[
            "--target",
            &target,
            "-f",
            &failing,
            "-M",
            protocol,
            "--connections",
            "2",
            "-t",
            "50",
        ]);
        assert_eq!(code, ExitCode::SUCCESS, "errors alone do not fail a run");
        let t = first_target(&report);
        assert_eq!(t["errors"]["42P01"], 50, "{protocol}: {t}");
        assert_eq!(t["rounds"][0]["failed_transactions"], 50, "{protocol}: {t}");
        assert_eq!(t["rounds"][0]["transactions"], 0, "{protocol}: {t}");
    }
    let (code, report) = run_json(&[
        "--target",
        &target,
        "-f",
        &failing,
        "--connections",
        "1",
        "-t",
        "5",
        "--fail-if",
        "errors>0",
        "--fail-if",
        "p99>60s",
    ]);
    assert_eq!(code, ExitCode::FAILURE);
    let failed = report["failed_thresholds"].as_array().expect("list");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].as_str().expect("text").contains("errors>0"));

    let ok = script(dir.path(), "ok.sql", "SELECT 1;\n");
    // Five single-connection transactions of `SELECT 1`, judged by the given thresholds.
    let judged = |conditions: &[&str]| {
        let mut args = vec![
            "--target",
            target.as_str(),
            "-f",
            ok.as_str(),
            "--connections",
            "1",
            "-t",
            "5",
        ];
        for condition in conditions {
            args.extend(["--fail-if", condition]);
        }
        run(&args)
    };
    assert_eq!(judged(&["p99>60s", "errors>0"]), ExitCode::SUCCESS);
    assert_eq!(judged(&["p50<1us"]), ExitCode::SUCCESS);
    assert_eq!(judged(&["tps<1000000000"]), ExitCode::FAILURE);
}

/// Turns on TLS with a certificate for 127.0.0.1 signed by a fresh CA; returns the CA's
/// PEM file.
fn enable_tls(cluster: &PgCluster, dir: &Path) -> String {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("server certificate");
    let data = cluster.data_dir();
    let owner = std::fs::metadata(data).expect("data dir");
    for (name, text) in [
        ("server.crt", cert.pem()),
        ("server.key", key.serialize_pem()),
    ] {
        let path = data.join(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        chown(&path, Some(owner.uid()), Some(owner.gid())).expect("chown");
    }
    cluster
        .psql("postgres", "ALTER SYSTEM SET ssl = on;")
        .expect("ssl on");
    cluster.reload().expect("reload");
    script(dir, "ca.pem", &ca_cert.pem())
}

#[test]
fn tls_targets_verify_the_server() {
    let cluster = start_cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = enable_tls(&cluster, dir.path());
    let url = cluster.url("postgres");
    let ok = script(dir.path(), "ok.sql", "SELECT 1;\n");
    let verify = format!("verified={url}?sslmode=verify-full&sslrootcert={ca}");
    let require = format!("encrypted={url}?sslmode=require");
    let plain = format!("plain={url}?sslmode=disable");
    let (code, report) = run_json(&[
        "--target",
        &plain,
        "--target",
        &verify,
        "--target",
        &require,
        "-f",
        &ok,
        "--connections",
        "2",
        "-t",
        "30",
        "-M",
        "extended",
    ]);
    assert_eq!(code, ExitCode::SUCCESS);
    for t in report["targets"].as_array().expect("targets") {
        assert_eq!(t["rounds"][0]["transactions"], 30, "{t}");
        assert_eq!(t["error_total"], 0, "{t}");
    }
    // A CA that did not sign the server's certificate is refused at connect.
    let other = enable_tls_ca_only(dir.path());
    let wrong = format!("wrong={url}?sslmode=verify-full&sslrootcert={other}");
    let cli = Cli::try_parse_from(["loadtest", "-q", "--target", &wrong, "-f", &ok, "-t", "1"])
        .expect("parse");
    let err = sluice_loadtest::run(cli.args).expect_err("unknown CA refused");
    assert!(format!("{err:#}").contains("connect"), "{err:#}");
}

fn enable_tls_ca_only(dir: &Path) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("certificate");
    script(dir, "other-ca.pem", &cert.pem())
}

/// pg_ctl as the cluster's owner (PostgreSQL refuses to run as root).
fn pg_ctl_cmd(cluster: &PgCluster, action: &str) -> String {
    let bindir = sluice_pgharness::find_bindir().expect("PostgreSQL binaries");
    let data = cluster.data_dir().display().to_string();
    let pg_ctl = format!("{}/pg_ctl -D {data} -w -t 60", bindir.display());
    let cmd = match action {
        "stop" => format!("{pg_ctl} -m immediate stop"),
        _ => format!("{pg_ctl} -l {} start", cluster.log_path().display()),
    };
    let owner = std::fs::metadata(cluster.data_dir())
        .expect("data dir")
        .uid();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        format!("runuser -u \"$(id -nu {owner})\" -- {cmd} >/dev/null")
    } else {
        format!("{cmd} >/dev/null")
    }
}

#[test]
fn chaos_backend_restart_and_vanishing_clients_leak_nothing() {
    let cluster = start_cluster();
    let url = cluster.url("postgres");
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = script(dir.path(), "ok.sql", "SELECT 1;\n");
    let kill = pg_ctl_cmd(&cluster, "stop");
    let start = pg_ctl_cmd(&cluster, "start");
    let path = dir.path().join("chaos.json");
    let target = format!("db={url}");
    let cli = Cli::try_parse_from([
        "loadtest",
        "chaos",
        "-q",
        "--target",
        &target,
        "--admin-url",
        &url,
        "-f",
        &ok,
        "--connections",
        "2",
        "-T",
        "3s",
        "--op-timeout",
        "10s",
        "--drain-timeout",
        "15s",
        "--stream-clients",
        "2",
        "--kill-backend-cmd",
        &kill,
        "--start-backend-cmd",
        &start,
        "--json",
        path.to_str().expect("utf-8"),
    ])
    .expect("parse");
    let code = sluice_loadtest::run(cli.args).expect("chaos runs");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("json")).expect("parses");
    assert_eq!(code, ExitCode::SUCCESS, "{report:#}");
    let scenarios = report.as_array().expect("list");
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["scenario"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["backend-restart", "disconnect-mid-result", "slow-client"]
    );
    for s in scenarios {
        assert_eq!(s["passed"], true, "{s}");
        assert_eq!(s["hangs"], 0, "{s}");
        assert_eq!(s["leaked"], false, "{s}");
        assert!(s["load_transactions"].as_u64().expect("txns") > 0, "{s}");
    }
    // The restart was noticed: the load saw its connections fail.
    assert!(
        !scenarios[0]["errors"]
            .as_object()
            .expect("errors")
            .is_empty(),
        "{}",
        scenarios[0]
    );
}

#[test]
fn demo_workloads_read_the_shop() {
    let cluster = start_cluster();
    sluice_pgharness::demo::seed_shop(&cluster).expect("seed shop");
    let target = format!("shop={}", cluster.url("shop"));
    for (workload, protocol) in [
        ("point-select", "prepared"),
        ("wide-rows", "extended"),
        ("wide-rows", "simple"),
    ] {
        let (code, report) = run_json(&[
            "--target",
            &target,
            "-w",
            workload,
            "-M",
            protocol,
            "--connections",
            "2",
            "-t",
            "40",
        ]);
        assert_eq!(code, ExitCode::SUCCESS, "{workload} {protocol}");
        let t = first_target(&report);
        assert_eq!(
            t["rounds"][0]["transactions"], 40,
            "{workload} {protocol}: {t}"
        );
        assert_eq!(t["error_total"], 0, "{workload} {protocol}: {t}");
    }
}
