//! Session recording end to end, with the real parts: `sluice demo` (PostgreSQL with the
//! shop data, control, the gateway recording every session), real psql as bob (support,
//! masking profile "pii"), then the recording side of the CLI: `sessions list`, `replay`,
//! `audit --statements --grep`, `audit export`, and `audit verify` against a damaged and
//! an incomplete recording directory.
//!
//! The invariant checked throughout: a raw email or card number read directly from the
//! backend appears nowhere — not in what replay prints, not in the audit output, not in
//! any record of any decompressed segment.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_recorder::{RecordKind, SegmentReader};
use support::{run, run_ok, scrub_env, sluice_bin, Proc};

const MINUTE: Duration = Duration::from_secs(60);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn parse_env_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(name, value)| {
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(value);
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// `sluice demo --dir DIR` on a free port; returns it once the gateway accepts
/// connections, with the environment it wrote.
fn start_demo(demo_dir: &Path, log: PathBuf) -> (Proc, u16, HashMap<String, String>) {
    let port = sluice_pgharness::free_loopback_port().expect("port");
    let mut cmd = Command::new(sluice_bin());
    scrub_env(&mut cmd);
    cmd.arg("demo")
        .arg("--dir")
        .arg(demo_dir)
        .args(["--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    let mut demo = Proc::spawn("sluice demo", &mut cmd, Some(log));
    support::wait_for_port(port, &mut demo, Duration::from_secs(180));
    let env_path = demo_dir.join("demo.env");
    let env = parse_env_file(&std::fs::read_to_string(&env_path).expect("demo.env"));
    assert_eq!(env["SLUICE_PORT"], port.to_string(), "demo.env of this run");
    (demo, port, env)
}

fn stop_demo(mut demo: Proc) {
    demo.signal("INT");
    let status = demo.wait_timeout(MINUTE);
    assert!(status.success(), "demo exit {status}:\n{}", demo.log_text());
}

/// `sluice ARGS --config CONFIG`, success or not.
fn sluice(config: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(sluice_bin());
    scrub_env(&mut cmd);
    cmd.args(args).arg("--config").arg(config);
    run(&mut cmd, MINUTE)
}

fn sluice_ok(config: &str, args: &[&str]) -> String {
    let out = sluice(config, args);
    assert!(
        out.status.success(),
        "sluice {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Every segment file in `dir`, sorted by name (worker, then seq).
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("recording dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    out.sort();
    out
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn sessions_are_recorded_masked_replayed_searched_and_verified() {
    let dir = support::shared_tempdir();
    let demo_dir = dir.path().join("demo");
    let (demo, port, env) = start_demo(&demo_dir, dir.path().join("demo-1.log"));
    let config = env["SLUICE_CONFIG"].clone();

    // The raw values, straight from the backend.
    let mut cmd = Command::new("psql");
    scrub_env(&mut cmd);
    cmd.args(["-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1"])
        .arg(&env["DEMO_BACKEND_URL"])
        .args([
            "-c",
            "select email, card_number from customers where id <= 3 order by id",
        ]);
    let raw_out = run_ok(&mut cmd, MINUTE);
    let raw: Vec<String> = raw_out
        .lines()
        .flat_map(|l| l.split('|'))
        .map(str::to_owned)
        .collect();
    assert_eq!(raw.len(), 6, "{raw_out}");
    assert!(raw[0].contains('@') && raw[1].chars().filter(char::is_ascii_digit).count() >= 15);

    // One psql session as bob: a masked SELECT, an INSERT and a DELETE (bob may only
    // read: both refused) and a COPY out. psql goes on after an error without
    // ON_ERROR_STOP; every -c is one Query.
    let select = "select id, email, card_number, phone from customers where id <= 3 order by id";
    let copy =
        "copy (select email, card_number from customers where id <= 3 order by id) to stdout";
    let mut cmd = Command::new("psql");
    scrub_env(&mut cmd);
    cmd.args(["-X", "-A", "-F", "|"])
        .arg(format!("host=127.0.0.1 port={port} dbname=shop user=bob"))
        .env("PGPASSWORD", &env["BOB_TOKEN"])
        .args(["-c", select])
        .args([
            "-c",
            "insert into customers (full_name, notes) values ('Replay Test', 'inserted by the recording test')",
        ])
        .args(["-c", "delete from customers"])
        .args(["-c", copy]);
    let psql = run(&mut cmd, MINUTE);
    let (psql_out, psql_err) = (text(&psql.stdout), text(&psql.stderr));
    let shown_rows: Vec<Vec<String>> = psql_out
        .lines()
        .filter(|l| l.split('|').count() == 4 && !l.starts_with("id|"))
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect();
    assert_eq!(
        shown_rows.len(),
        3,
        "psql stdout:\n{psql_out}\nstderr:\n{psql_err}"
    );
    assert!(
        shown_rows
            .iter()
            .all(|r| r[1].contains('*') && r[2].contains('*')),
        "bob sees masked values: {shown_rows:?}"
    );
    // COPY's lines follow the SELECT's footer (masked as the masker sees fit).
    let copy_lines: Vec<&str> = psql_out
        .lines()
        .skip_while(|l| *l != "(3 rows)")
        .skip(1)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(copy_lines.len(), 3, "COPY out lines:\n{psql_out}");
    let errors: Vec<&str> = psql_err
        .lines()
        .filter(|l| l.starts_with("ERROR:"))
        .collect();
    assert_eq!(
        errors.len(),
        2,
        "the INSERT and the DELETE are refused:\n{psql_err}"
    );

    // The session is listed once its records are written.
    let deadline = Instant::now() + Duration::from_secs(30);
    let session = loop {
        let list: serde_json::Value = serde_json::from_str(&sluice_ok(
            &config,
            &["sessions", "list", "--user", "bob", "--json"],
        ))
        .expect("sessions list --json");
        let ended = list
            .as_array()
            .expect("array")
            .iter()
            .rfind(|s| s["principal"] == "bob" && s["ended"] == true)
            .cloned();
        if let Some(s) = ended {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "bob's session never appeared as ended: {list}\n{}",
            demo.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let id = session["session"].as_str().expect("id").to_owned();
    assert_eq!(session["resource"], "shop");
    assert!(
        session["statements"].as_u64().unwrap_or(0) >= 4,
        "{session}"
    );
    let listed = sluice_ok(&config, &["sessions", "list", "--since", "1h"]);
    let line = listed
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{listed}"));
    assert!(line.contains(" bob ") && line.contains(" shop "), "{line}");

    // Replay: each statement, the decisions, and exactly what psql showed.
    let replay = sluice_ok(&config, &["replay", &id, "--instant"]);
    assert!(
        replay.contains("Session of bob (support) on shop"),
        "{replay}"
    );
    assert!(replay.contains("masking: pii"), "{replay}");
    assert!(replay.contains(&format!("=> {select}")), "{replay}");
    assert!(replay.contains(&format!("=> {copy}")), "{replay}");
    assert!(replay.contains("-- allowed (read"), "{replay}");
    assert_eq!(
        replay.matches("-- DENIED (write").count(),
        2,
        "the INSERT and the DELETE:\n{replay}"
    );
    assert!(replay.contains("insert into customers"), "{replay}");
    assert!(replay.contains("delete from customers"), "{replay}");
    for e in &errors {
        assert!(
            replay.contains(e),
            "psql's {e:?} not in the replay:\n{replay}"
        );
    }
    assert!(replay.contains("SQLSTATE:  42501"), "{replay}");
    for row in &shown_rows {
        let found = replay.lines().any(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            cells == row.iter().map(String::as_str).collect::<Vec<_>>()
        });
        assert!(found, "psql showed {row:?}; replay:\n{replay}");
    }
    assert!(replay.contains("(3 rows)"), "{replay}");
    for l in &copy_lines {
        assert!(
            replay.lines().any(|r| r == *l),
            "COPY line {l:?} not replayed:\n{replay}"
        );
    }
    assert!(replay.contains("COPY 3"), "{replay}");
    assert!(replay.contains("-- session ended"), "{replay}");
    assert!(
        replay
            .lines()
            .any(|l| l.starts_with("[+") && l.contains("s] => ")),
        "time offsets: {replay}"
    );

    // The same as JSON, one object per event; a prefix of the ID is enough.
    let json_replay = sluice_ok(&config, &["replay", &id[..24], "--format", "json"]);
    let events: Vec<serde_json::Value> = json_replay
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for kind in [
        "session_start",
        "statement",
        "decision",
        "result",
        "error",
        "copy_data",
        "session_end",
    ] {
        assert!(kinds.contains(&kind), "no {kind} event in {kinds:?}");
    }
    assert!(events
        .iter()
        .any(|e| e["event"] == "decision" && e["verdict"] == "deny"));
    let result = events
        .iter()
        .find(|e| e["event"] == "result" && e["row_count"] == 3)
        .expect("the SELECT's result");
    assert_eq!(result["rows"][0][1], shown_rows[0][1].as_str());

    // An unknown session is a clear error.
    let missing = sluice(&config, &["replay", "00000000-0000-7000-8000-000000000000"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("is not in the recordings"),
        "{}",
        text(&missing.stderr)
    );

    // Audit search over the statement events and the recordings.
    let audit = sluice_ok(
        &config,
        &[
            "audit",
            "--statements",
            "--user",
            "bob",
            "--grep",
            "customers",
            "--since",
            "1h",
        ],
    );
    assert!(audit.contains("delete from customers"), "{audit}");
    let recorded = sluice_ok(
        &config,
        &[
            "audit",
            "--statements",
            "--source",
            "recordings",
            "--grep",
            "^insert",
            "--decision",
            "deny",
            "--json",
        ],
    );
    let recorded: serde_json::Value = serde_json::from_str(&recorded).expect("JSON");
    let hits = recorded.as_array().expect("array");
    assert_eq!(hits.len(), 1, "{recorded}");
    assert_eq!(hits[0]["session"], id.as_str());
    assert_eq!(hits[0]["user"], "bob");
    assert_eq!(hits[0]["source"], "recording");
    let future = sluice_ok(
        &config,
        &[
            "audit",
            "--statements",
            "--source",
            "recordings",
            "--since",
            "2099-01-01T00:00:00Z",
        ],
    );
    assert!(
        future.contains("no statement audit events match"),
        "{future}"
    );
    let export = sluice_ok(
        &config,
        &["audit", "export", "--since", "1h", "--format", "jsonl"],
    );
    let exported: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .filter(|v: &serde_json::Value| v["session"] == id.as_str())
        .collect();
    assert!(exported
        .iter()
        .any(|v| v["type"] == "session_start" && v["principal"] == "bob"));
    assert!(exported.iter().any(|v| v["type"] == "session_end"));
    assert!(exported
        .iter()
        .any(|v| v["type"] == "decision" && v["verdict"] == "deny" && v["time"].is_string()));

    // No raw value anywhere.
    for value in &raw {
        for (what, out) in [
            ("replay", &replay),
            ("JSON replay", &json_replay),
            ("audit", &audit),
            ("export", &export),
        ] {
            assert!(!out.contains(value.as_str()), "raw {value:?} in {what}");
        }
    }
    let recordings = demo_dir.join("state").join("recordings");
    let check_segments = |when: &str| {
        let mut records = 0;
        for path in segments(&recordings) {
            let reader = SegmentReader::open(&path).expect("segment");
            for block in reader.blocks() {
                let block = block.unwrap_or_else(|b| panic!("{}: {b:?}", path.display()));
                for record in block.records {
                    records += 1;
                    let bytes: Vec<u8> = match record.kind {
                        RecordKind::Client(b) | RecordKind::Server(b) => b.to_vec(),
                        RecordKind::Decision(d) => d.statement.into_bytes(),
                        RecordKind::SessionStart(s) => format!("{s:?}").into_bytes(),
                        RecordKind::SessionEnd(e) => format!("{e:?}").into_bytes(),
                        RecordKind::Approval(a) => format!("{a:?}").into_bytes(),
                    };
                    for value in &raw {
                        assert!(
                            !contains_bytes(&bytes, value.as_bytes()),
                            "{when}: raw {value:?} recorded in {}",
                            path.display()
                        );
                    }
                }
            }
        }
        assert!(
            records > 0,
            "{when}: no records in {}",
            recordings.display()
        );
    };
    check_segments("live");

    // Stopped, every segment is sealed and verifies.
    stop_demo(demo);
    check_segments("sealed");
    let ok = sluice_ok(&config, &["audit", "verify"]);
    assert!(ok.contains("OK: no problems found"), "{ok}");

    // A second run of the demo starts new segments, chained to the first ones.
    let (demo, port, env) = start_demo(&demo_dir, dir.path().join("demo-2.log"));
    for _ in 0..4 {
        let mut cmd = Command::new("psql");
        scrub_env(&mut cmd);
        cmd.args(["-X", "-A", "-t", "-c", "select count(*) from orders"])
            .arg(format!("host=127.0.0.1 port={port} dbname=shop user=bob"))
            .env("PGPASSWORD", &env["BOB_TOKEN"]);
        assert_eq!(run_ok(&mut cmd, MINUTE).trim(), "50000");
    }
    stop_demo(demo);
    let ok = sluice_ok(&config, &["audit", "verify"]);
    assert!(ok.contains("OK: no problems found"), "{ok}");

    // One flipped byte inside a block of a sealed segment: verify fails and names it.
    let target = segments(&recordings)
        .into_iter()
        .find(|p| {
            let reader = SegmentReader::open(p).expect("segment");
            reader.is_sealed()
                && reader
                    .blocks()
                    .any(|b| b.is_ok_and(|b| b.records.iter().any(|r| r.session.to_string() == id)))
        })
        .expect("the sealed segment holding bob's session");
    let mut bytes = std::fs::read(&target).expect("read segment");
    let at = 68 + 40 + 3; // segment header, block header, then inside the first payload
    bytes[at] ^= 0x01;
    std::fs::write(&target, &bytes).expect("write segment");
    let bad = sluice(&config, &["audit", "verify"]);
    let report = text(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{report}");
    let name = target.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("PROBLEM") && l.contains(&name)),
        "{report}"
    );
    bytes[at] ^= 0x01;
    std::fs::write(&target, &bytes).expect("restore segment");
    let ok = sluice_ok(&config, &["audit", "verify"]);
    assert!(ok.contains("OK: no problems found"), "restored: {ok}");

    // A deleted segment (not the newest of its worker) is a gap.
    let all = segments(&recordings);
    let removed = all
        .iter()
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let (worker, _) = name.split_once('-').expect("wNNN-SEQ.seg");
            all.iter().any(|q| {
                let other = q.file_name().unwrap().to_string_lossy().into_owned();
                other.starts_with(worker) && other > name
            })
        })
        .unwrap_or_else(|| panic!("no worker has two segments: {all:?}"))
        .clone();
    std::fs::remove_file(&removed).expect("remove segment");
    let gap = sluice(&config, &["audit", "verify"]);
    let report = text(&gap.stdout);
    assert_eq!(gap.status.code(), Some(1), "{report}");
    assert!(report.contains("segment missing"), "{report}");
    assert!(
        report.contains(&*removed.file_name().unwrap().to_string_lossy()),
        "{report}"
    );
}
