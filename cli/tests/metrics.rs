//! The gateway's observability endpoint under real load: `/metrics` scraped while pgbench
//! runs through the gateway must agree with what pgbench reports, the added-latency
//! histogram must fill, `sluice top` must show pgbench's statement, and `/readyz` and
//! `sluice status` must follow the backend's and control's state.
//!
//! Nothing asserts on speed; deadlines only stop a hang from blocking the run.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{number_after, pgbench, plain, run, Gateway, Options};

fn get(port: u16, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().expect("body");
    (status, body)
}

/// Samples of a Prometheus text exposition, keyed by `name{labels}` exactly as written.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

const READ_ALLOW: &str = r#"sluice_statements_total{resource="app",class="read",decision="allow"}"#;
const ADDED_COUNT: &str = r#"sluice_added_latency_seconds_count{resource="app",class="read"}"#;
const ADDED_SUM: &str = r#"sluice_added_latency_seconds_sum{resource="app",class="read"}"#;
const UPSTREAM_COUNT: &str =
    r#"sluice_upstream_latency_seconds_count{resource="app",class="read"}"#;
const ERRORS: &str = r#"sluice_statement_errors_total{resource="app"}"#;

#[test]
fn metrics_scraped_during_pgbench_add_up_to_what_pgbench_reports() {
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice");
    pgbench(&gw, &token, &["-i", "-s", "1", "-q"]);

    let (status, body) = get(gw.metrics_port, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let before = samples(&get(gw.metrics_port, "/metrics").1);

    // Scrape every 100 ms while pgbench runs, as Prometheus would (faster).
    let stop = Arc::new(AtomicBool::new(false));
    let peak_active = Arc::new(Mutex::new(0.0f64));
    let scraper = {
        let (stop, peak_active, port) = (stop.clone(), peak_active.clone(), gw.metrics_port);
        std::thread::spawn(move || {
            let mut scrapes = 0;
            while !stop.load(Ordering::Relaxed) {
                let (status, text) = get(port, "/metrics");
                assert_eq!(status, 200);
                let s = samples(&text);
                let mut peak = peak_active.lock().expect("lock");
                *peak = peak.max(value(&s, "sluice_connections_active"));
                scrapes += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            scrapes
        })
    };
    let clients = 4u64;
    let per_client = 1500u64;
    let report = pgbench(
        &gw,
        &token,
        &[
            "-S",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-t",
            &per_client.to_string(),
            "-M",
            "prepared",
        ],
    );
    stop.store(true, Ordering::Relaxed);
    let scrapes = scraper.join().expect("scraper");
    assert!(scrapes >= 2, "only {scrapes} scrapes during the run");
    assert!(
        *peak_active.lock().expect("lock") >= clients as f64,
        "a scrape during the run saw fewer open connections than pgbench had"
    );

    let processed = number_after(&report, "number of transactions actually processed:");
    let failed = number_after(&report, "number of failed transactions:");
    assert_eq!(processed, clients * per_client, "{report}");

    // The workers publish their fingerprint tables on their tick (100 ms).
    std::thread::sleep(Duration::from_millis(500));
    let after_text = get(gw.metrics_port, "/metrics").1;
    let after = samples(&after_text);
    let delta = |key: &str| value(&after, key) - value(&before, key);

    // Each -S transaction is one SELECT; pgbench's own set-up adds a couple of reads
    // (scale and partition checks) on its first connection.
    let reads = delta(READ_ALLOW) as u64;
    assert!(
        (processed..=processed + 10).contains(&reads),
        "pgbench processed {processed}, the gateway counted {reads} reads:\n{after_text}"
    );
    assert_eq!(delta(ERRORS) as u64, failed, "{after_text}");
    assert!(
        delta("sluice_sessions_started_total") as u64 > clients,
        "{after_text}"
    );
    // Every round trip is timed when one is not already in flight: pgbench does not
    // pipeline, so nearly every statement is.
    let timed = delta(ADDED_COUNT) as u64;
    assert!(
        timed >= processed * 9 / 10 && timed <= reads,
        "{timed} timed round trips for {reads} reads:\n{after_text}"
    );
    assert_eq!(delta(UPSTREAM_COUNT) as u64, timed);
    assert!(delta(ADDED_SUM) > 0.0);
    // The histogram's buckets are cumulative and end at the count.
    let inf = r#"sluice_added_latency_seconds_bucket{resource="app",class="read",le="+Inf"}"#;
    assert_eq!(value(&after, inf), value(&after, ADDED_COUNT));
    let le_10s = r#"sluice_added_latency_seconds_bucket{resource="app",class="read",le="10"}"#;
    assert!(value(&after, le_10s) <= value(&after, inf));
    assert_eq!(
        value(&after, "sluice_connections_active"),
        0.0,
        "pgbench is done: {after_text}"
    );
    assert!(value(&after, r#"sluice_snapshot_fresh{worker="0"}"#) == 1.0);
    assert!(value(&after, "sluice_recording_records_total") > 0.0);

    // `sluice top` shows pgbench's statement first by count, with its calls.
    let out = gw.sluice(&["top", "--by", "count", "--limit", "3"]);
    let top = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{top}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = top.lines().nth(1).unwrap_or_default();
    assert!(
        first
            .to_lowercase()
            .contains("select abalance from pgbench_accounts where aid = $1"),
        "{top}"
    );
    let calls: u64 = first
        .split_whitespace()
        .next()
        .and_then(|c| c.trim_start_matches('~').parse().ok())
        .unwrap_or_else(|| panic!("no call count in {first:?}"));
    assert!(calls >= processed, "{top}");
    let json = gw.sluice(&["top", "--json", "--by", "added-latency"]);
    let reply: serde_json::Value = serde_json::from_slice(&json.stdout).expect("top --json");
    let entry = &reply["entries"][0];
    assert!(entry["added_samples"].as_u64().unwrap_or(0) > 0, "{reply}");
    assert!(entry["added_max_ns"].as_u64().unwrap_or(0) > 0, "{reply}");
}

#[test]
fn readiness_follows_the_backend_and_control() {
    let mut gw = Gateway::start(Options::default());
    // Ready once every worker runs its tick with a current snapshot, as a probe would see.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        let (status, body) = get(gw.metrics_port, "/readyz");
        if status == 200 || std::time::Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["backends"][0]["resource"], "app");
    let out = gw.sluice(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("gateway:") && text.contains("ready"),
        "{text}"
    );

    // The backend goes away: not ready, and the problem names the resource.
    gw.cluster.stop().expect("stop PostgreSQL");
    std::thread::sleep(Duration::from_millis(1100)); // past the check's reuse window
    let (status, body) = get(gw.metrics_port, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("resource \\\"app\\\" is unreachable"),
        "{body}"
    );
    let out = gw.sluice(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "both processes answer: {text}");
    assert!(
        text.contains("NOT READY") && text.contains("resource app: UNREACHABLE"),
        "{text}"
    );
    gw.cluster.start_again().expect("start PostgreSQL");

    // Control goes away: the gateway stays live; status says control is unreachable.
    if let Some(control) = gw.control.as_mut() {
        control.signal("KILL");
        control.wait_timeout(Duration::from_secs(30));
    }
    let alive = std::net::TcpStream::connect(("127.0.0.1", gw.metrics_port)).is_ok();
    assert!(
        alive,
        "the endpoint went away with control:\n{}",
        gw.proc.log_text()
    );
    let (status, _) = get(gw.metrics_port, "/healthz");
    assert_eq!(status, 200);
    let out = gw.sluice(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    assert!(v["control_error"].is_string(), "{v}");
    assert!(v["gateway"]["workers"].is_array(), "{v}");
    assert!(!out.status.success());
}

/// One login with a wrong token over plain TCP, as fast as the protocol allows.
fn bad_login(port: u16) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let params = b"user\0carol\0database\0app\0\0";
    let mut startup = ((8 + params.len()) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&196_608u32.to_be_bytes());
    startup.extend_from_slice(params);
    stream.write_all(&startup).expect("startup");
    let mut ask = [0u8; 9];
    stream.read_exact(&mut ask).expect("password request");
    assert_eq!(ask[0], b'R', "asked for a password");
    let password = b"not-a-token\0";
    let mut message = vec![b'p'];
    message.extend_from_slice(&((4 + password.len()) as u32).to_be_bytes());
    message.extend_from_slice(password);
    stream.write_all(&message).expect("password");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert_eq!(answer.first(), Some(&b'E'), "refused with an error");
}

#[test]
fn a_flood_of_bad_logins_is_summarized_and_sampled_traces_hold_no_values() {
    let gw = Gateway::start(Options {
        edit_config: Some(|text| {
            text.replace(
                "[shutdown]",
                "[logging]\nrefusals_per_second = 3\nprotocol_trace_sample = 1.0\n\n[shutdown]",
            )
        }),
        ..Options::default()
    });
    // Two hundred wrong tokens as fast as a client can send them: every one refused and
    // counted, three a second per worker logged one by one, the rest summarized.
    const ATTEMPTS: u64 = 200;
    for _ in 0..ATTEMPTS {
        bad_login(gw.port);
    }
    // A traced session: its messages are listed, its literals are not.
    let mut cmd = gw.psql(&gw.token("carol"), &gw.conninfo("carol", ""));
    cmd.args(["-c", "SELECT 'secret-literal-4242' AS x"]);
    let out = run(&mut cmd, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The summary comes on the worker's next tick.
    std::thread::sleep(Duration::from_millis(1500));
    let metrics = samples(&get(gw.metrics_port, "/metrics").1);
    assert_eq!(
        value(
            &metrics,
            r#"sluice_connections_refused_total{reason="auth"}"#
        ),
        ATTEMPTS as f64
    );
    let log = plain(&gw.proc.log_text());
    let refused_lines = log
        .lines()
        .filter(|l| l.contains("session end") && l.contains("28P01"))
        .count();
    let summarized: u64 = log
        .lines()
        .filter(|l| l.contains("were not logged one by one"))
        .filter_map(|l| {
            let rest = &l[l.find("suppressed")? + "suppressed".len()..];
            let digits: String = rest
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u64>().ok()
        })
        .sum();
    assert_eq!(
        refused_lines as u64 + summarized,
        ATTEMPTS,
        "every refusal is logged or summarized:\n{log}"
    );
    assert!(summarized > 0, "a flood this fast is summarized:\n{log}");
    assert!(log.contains("protocol message"), "{log}");
    assert!(log.contains("kind=Q") && log.contains("kind=D"), "{log}");
    assert!(
        log.contains("statement=select '?' as x"),
        "the statement, normalized:\n{log}"
    );
    assert!(
        !log.contains("secret-literal-4242"),
        "a literal reached the log:\n{log}"
    );
}
