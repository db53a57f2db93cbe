//! End-to-end tests of the `sluice` binary with the real `psql` and `pgbench` against a
//! real PostgreSQL cluster: what a user sees when they follow the README.
//!
//! Each test starts its own cluster and gateway on free ports, so they run in parallel.
//! Deadlines only stop a hang from blocking the run; nothing asserts on speed.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{number_after, pgbench, run, run_ok, scrub_env, sluice_bin, Gateway, Options, Proc};

const MINUTE: Duration = Duration::from_secs(60);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------------
// 1. psql: queries, DDL, \copy, TLS modes, \watch
// ---------------------------------------------------------------------------------------

/// One CSV line per row, with values that need CSV quoting and non-ASCII text, written
/// the way PostgreSQL's CSV output writes them so the round trip is byte-identical.
fn csv_rows(n: u32) -> String {
    let mut csv = String::with_capacity(n as usize * 32);
    for i in 1..=n {
        let name = match i % 4 {
            0 => format!("\"name \"\"{i}\"\", quoted\""),
            1 => format!("plain{i}"),
            2 => format!("ünïcödé-{i}"),
            _ => format!("\"comma,{i}\""),
        };
        csv.push_str(&format!("{i},{name},{}.{:02}\n", i / 7, i % 100));
    }
    csv
}

#[test]
fn psql_runs_queries_ddl_and_copy_in_and_out() {
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice");
    let conninfo = gw.conninfo("alice", "");

    assert_eq!(gw.query("SELECT 1 + 1"), "2");
    // The gateway logs in with its own role; the client never learns its password.
    assert_eq!(gw.query("SELECT current_user"), "gw");

    let ddl = "CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL, amount numeric NOT NULL);
               CREATE INDEX t_name ON t (name);
               ALTER TABLE t ADD COLUMN note text;
               ALTER TABLE t DROP COLUMN note;";
    let mut cmd = gw.psql(&token, &conninfo);
    cmd.args(["-q", "-c", ddl]);
    run_ok(&mut cmd, MINUTE);

    const ROWS: u32 = 50_000;
    let input = gw.dir.path().join("in.csv");
    let output = gw.dir.path().join("out.csv");
    let csv = csv_rows(ROWS);
    std::fs::write(&input, &csv).expect("write csv");

    let mut cmd = gw.psql(&token, &conninfo);
    cmd.arg("-c").arg(format!(
        "\\copy t (id, name, amount) from '{}' with (format csv)",
        input.display()
    ));
    let out = run_ok(&mut cmd, MINUTE);
    assert_eq!(out.trim(), format!("COPY {ROWS}"));

    assert_eq!(
        gw.query("SELECT count(*), sum(id), count(DISTINCT name) FROM t"),
        format!(
            "{ROWS}|{}|{ROWS}",
            u64::from(ROWS) * u64::from(ROWS + 1) / 2
        )
    );
    assert_eq!(
        gw.query("SELECT name FROM t WHERE id = 4"),
        "name \"4\", quoted"
    );

    let mut cmd = gw.psql(&token, &conninfo);
    cmd.arg("-c").arg(format!(
        "\\copy (SELECT id, name, amount FROM t ORDER BY id) to '{}' with (format csv)",
        output.display()
    ));
    let out = run_ok(&mut cmd, MINUTE);
    assert_eq!(out.trim(), format!("COPY {ROWS}"));
    let copied = std::fs::read_to_string(&output).expect("read copied csv");
    assert_eq!(copied.lines().count(), ROWS as usize);
    assert!(copied == csv, "\\copy out differs from the file copied in");

    // An error in the middle of a script reaches psql with its SQLSTATE and stops it.
    let mut cmd = gw.psql(&token, &conninfo);
    cmd.args(["-v", "VERBOSITY=verbose", "-c", "SELECT 1/0"]);
    let out = run(&mut cmd, MINUTE);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("22012"), "{}", text(&out.stderr));
}

#[test]
fn psql_tls_require_and_verify_full_work_and_a_wrong_ca_is_refused() {
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice");
    let conninfo_check = |conninfo: &str| {
        let mut cmd = gw.psql(&token, conninfo);
        cmd.args(["-c", "\\conninfo", "-A", "-t", "-c", "SELECT 'ok'"]);
        run_ok(&mut cmd, MINUTE)
    };

    let out = conninfo_check(&gw.conninfo("alice", "sslmode=require"));
    assert!(out.contains("SSL connection"), "{out}");
    assert!(out.contains("ok"), "{out}");

    let ca = gw.deployment.ca.display().to_string();
    let verify_full = format!(
        "host=localhost port={} dbname=app user=alice sslmode=verify-full sslrootcert={ca}",
        gw.port
    );
    let out = conninfo_check(&verify_full);
    assert!(out.contains("SSL connection"), "{out}");
    assert!(out.contains("ok"), "{out}");

    // Plaintext from loopback is allowed and really is plaintext.
    let out = conninfo_check(&gw.conninfo("alice", "sslmode=disable"));
    assert!(!out.contains("SSL connection"), "{out}");

    // Another deployment's CA did not sign this gateway's certificate.
    let other = support::shared_tempdir();
    let other = sluice_proxy::deployment::write(
        other.path(),
        1,
        sluice_proxy::config::Driver::Epoll,
        &sluice_proxy::deployment::BackendSpec {
            resource: "x".into(),
            host: "127.0.0.1".into(),
            port: 1,
            database: "x".into(),
            user: "x".into(),
            password: "x".into(),
        },
    )
    .expect("second deployment");
    let wrong_ca = format!(
        "host=localhost port={} dbname=app user=alice sslmode=verify-full sslrootcert={}",
        gw.port,
        other.ca.display()
    );
    let mut cmd = gw.psql(&token, &wrong_ca);
    cmd.args(["-c", "SELECT 1"]);
    let out = run(&mut cmd, MINUTE);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // Each generated CA has its own name and the server certificate names its issuer's
    // key, so libpq reports an unknown issuer, before the token is looked at.
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
    assert!(!stderr.contains("token"), "{stderr}");
}

#[test]
fn psql_watch_repeats_until_interrupted() {
    let gw = Gateway::start(Options::default());
    let mut cmd = gw.psql(&gw.token("alice"), &gw.conninfo("alice", ""));
    cmd.args(["-P", "pager=off"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut psql = Proc::spawn("psql \\watch", &mut cmd, None);
    let stderr = support::drain(psql.child_mut().stderr.take().expect("stderr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stdout = {
        let seen = seen.clone();
        let mut pipe = psql.child_mut().stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        })
    };
    {
        let mut stdin = psql.child_mut().stdin.take().expect("stdin");
        stdin
            .write_all(b"SELECT now() AS watched \\watch 0.2\n")
            .expect("write to psql");
        // Dropping stdin: after \watch is interrupted psql reads EOF and exits.
    }
    let blocks = |bytes: &[u8]| text(bytes).matches("(every 0.2s)").count();
    let deadline = Instant::now() + Duration::from_secs(20);
    while blocks(&seen.lock().expect("lock")) < 3 {
        if let Some(status) = psql.try_wait() {
            panic!(
                "psql exited early ({status}); stdout:\n{}\nstderr:\n{}",
                text(&seen.lock().expect("lock")),
                text(&stderr.join().expect("stderr"))
            );
        }
        assert!(
            Instant::now() < deadline,
            "\\watch printed fewer than 3 results within 20 s:\n{}",
            text(&seen.lock().expect("lock"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    psql.signal("INT");
    psql.wait_timeout(Duration::from_secs(15));
    stdout.join().expect("stdout reader");
    let stderr = text(&stderr.join().expect("stderr"));
    let out = text(&seen.lock().expect("lock"));
    assert!(blocks(out.as_bytes()) >= 2, "{out}");
    assert!(out.matches("watched").count() >= 2, "{out}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// 2. Ctrl-C cancels the running statement through the gateway
// ---------------------------------------------------------------------------------------

#[test]
fn ctrl_c_in_psql_cancels_the_running_statement() {
    let gw = Gateway::start(Options::default());
    let mut cmd = gw.psql(&gw.token("alice"), &gw.conninfo("alice", ""));
    cmd.args(["-c", "SELECT pg_sleep(30)"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut psql = Proc::spawn("psql pg_sleep", &mut cmd, None);
    let stdout = support::drain(psql.child_mut().stdout.take().expect("stdout"));
    let stderr = support::drain(psql.child_mut().stderr.take().expect("stderr"));

    // Wait until the backend is really executing the statement (instead of sleeping a
    // guessed amount), then press Ctrl-C.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let active = gw
            .cluster
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
            )
            .expect("pg_stat_activity");
        if active.trim() == "1" {
            break;
        }
        if let Some(status) = psql.try_wait() {
            panic!(
                "psql exited ({status}) before its query started: {}",
                text(&stderr.join().expect("stderr"))
            );
        }
        assert!(Instant::now() < deadline, "pg_sleep never became active");
        std::thread::sleep(Duration::from_millis(50));
    }
    psql.signal("INT");
    // 15 s guard: psql must not sit out the 30 s sleep.
    let status = psql.wait_timeout(Duration::from_secs(15));
    let stderr = text(&stderr.join().expect("stderr"));
    let _ = stdout.join();
    assert!(
        stderr.contains("canceling statement due to user request"),
        "psql stderr: {stderr}\ngateway log:\n{}",
        gw.proc.log_text()
    );
    assert_eq!(status.code(), Some(1), "{stderr}");

    // The session that was cancelled is gone and the gateway still serves.
    assert_eq!(gw.query("SELECT 'still serving'"), "still serving");
}

// ---------------------------------------------------------------------------------------
// 3. A large result streams through with flat gateway memory
// ---------------------------------------------------------------------------------------

#[test]
fn a_million_row_result_streams_without_growing_gateway_memory() {
    let gw = Gateway::start(Options::default());
    // Warm up: TLS, a session and its buffers have been allocated once.
    assert_eq!(gw.query("SELECT repeat('x', 100000) IS NOT NULL"), "t");
    let before = support::vm_hwm_bytes(gw.proc.pid());

    let mut cmd = gw.psql(&gw.token("alice"), &gw.conninfo("alice", ""));
    cmd.args([
        "-A",
        "-t",
        "-c",
        "select g, repeat('x',100) from generate_series(1,1000000) g",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut psql = Proc::spawn("psql 1M rows", &mut cmd, None);
    let stderr = support::drain(psql.child_mut().stderr.take().expect("stderr"));
    // Count lines and bytes without keeping them (the test must not hold 110 MB either).
    let stdout = {
        let pipe = psql.child_mut().stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut reader = BufReader::with_capacity(1 << 16, pipe);
            let (mut lines, mut bytes) = (0u64, 0u64);
            loop {
                let buf = reader.fill_buf().expect("read psql output");
                if buf.is_empty() {
                    break;
                }
                lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
                bytes += buf.len() as u64;
                let n = buf.len();
                reader.consume(n);
            }
            (lines, bytes)
        })
    };
    let status = psql.wait_timeout(Duration::from_secs(120));
    let (lines, bytes) = stdout.join().expect("stdout reader");
    let stderr = text(&stderr.join().expect("stderr"));
    assert!(status.success(), "psql failed ({status}): {stderr}");
    assert_eq!(lines, 1_000_000, "every row arrived");
    assert!(bytes > 100_000_000, "{bytes} bytes");

    let after = support::vm_hwm_bytes(gw.proc.pid());
    let growth = after.saturating_sub(before);
    eprintln!(
        "gateway VmHWM before {} KiB, after {} KiB, relayed {bytes} bytes",
        before >> 10,
        after >> 10
    );
    assert!(
        growth < 64 << 20,
        "gateway peak RSS grew by {} MiB ({} -> {} MiB) relaying a ~110 MB result",
        growth >> 20,
        before >> 20,
        after >> 20
    );
}

// ---------------------------------------------------------------------------------------
// 4. pgbench in every query mode, with both I/O drivers
// ---------------------------------------------------------------------------------------

fn pgbench_all_modes(driver: &'static str) {
    let gw = Gateway::start(Options {
        driver: Some(driver),
        ..Options::default()
    });
    let token = gw.token("alice");
    pgbench(&gw, &token, &["-i", "-s", "1", "-q"]);
    assert_eq!(gw.query("SELECT count(*) FROM pgbench_accounts"), "100000");
    for mode in ["simple", "extended", "prepared"] {
        let report = pgbench(
            &gw,
            &token,
            &["-S", "-c", "8", "-j", "2", "-T", "5", "-M", mode],
        );
        assert!(
            report.contains(&format!("query mode: {mode}")),
            "{mode}: {report}"
        );
        let processed = number_after(&report, "number of transactions actually processed:");
        assert!(
            processed > 0,
            "{driver}/{mode}: nothing processed:\n{report}"
        );
        let failed = number_after(&report, "number of failed transactions:");
        assert_eq!(failed, 0, "{driver}/{mode}:\n{report}");
    }
}

#[test]
fn pgbench_select_only_all_query_modes_io_uring() {
    pgbench_all_modes("io_uring");
}

#[test]
fn pgbench_select_only_all_query_modes_epoll() {
    pgbench_all_modes("epoll");
}

// ---------------------------------------------------------------------------------------
// 5. A wrong token is refused before any backend connection
// ---------------------------------------------------------------------------------------

fn connections_received(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .expect("server log")
        .matches("connection received")
        .count()
}

/// Runs one successful query through the gateway and waits until the backend logged the
/// connection it caused; returns how many "connection received" lines it added.
fn barrier_connection(gw: &Gateway) -> usize {
    let before = connections_received(gw.cluster.log_path());
    assert_eq!(gw.query("SELECT 'barrier'"), "barrier");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let added = connections_received(gw.cluster.log_path()) - before;
        if added > 0 {
            return added;
        }
        assert!(
            Instant::now() < deadline,
            "the backend never logged the gateway's connection"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_wrong_token_is_refused_without_reaching_the_backend() {
    let gw = Gateway::start(Options {
        log_connections: true,
        ..Options::default()
    });
    // How many log lines one real session through the gateway produces.
    let per_session = barrier_connection(&gw);

    let before = connections_received(gw.cluster.log_path());
    let another_key = {
        // A keyring this deployment never trusted.
        let dir = support::shared_tempdir();
        let now = std::time::SystemTime::now();
        sluice_control::identity::Keyring::open_or_create(&dir.path().join("keys"), now)
            .expect("keyring")
            .mint("sluice", "alice", &[], Duration::from_secs(600), now)
            .expect("mint with another key")
    };
    let refusals = [
        ("garbage", "sslmode=prefer", "not a valid token"),
        ("garbage", "sslmode=disable", "not a valid token"),
        ("garbage", "sslmode=require", "not a valid token"),
        (
            another_key.as_str(),
            "sslmode=prefer",
            "which this gateway does not trust",
        ),
    ];
    for (token, extra, expected) in refusals {
        let mut cmd = gw.psql(token, &gw.conninfo("alice", extra));
        cmd.args(["-c", "SELECT 1"]);
        let out = run(&mut cmd, MINUTE);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {stderr}");
        assert!(stderr.contains(expected), "{extra}: {stderr}");
    }
    // A genuine token for bob, used as alice.
    let mut cmd = gw.psql(&gw.token("bob"), &gw.conninfo("alice", ""));
    cmd.args(["-c", "SELECT 1"]);
    let out = run(&mut cmd, MINUTE);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("belongs to \"bob\""),
        "{}",
        text(&out.stderr)
    );

    // The barrier session is logged after anything the refused attempts could have caused.
    barrier_connection(&gw);
    let added = connections_received(gw.cluster.log_path()) - before;
    assert_eq!(
        added,
        per_session,
        "refused clients caused backend connections; server log:\n{}",
        std::fs::read_to_string(gw.cluster.log_path()).unwrap_or_default()
    );
}

// ---------------------------------------------------------------------------------------
// 6. SIGTERM drains: no new connections, open sessions finish, exit 0
// ---------------------------------------------------------------------------------------

/// Reads lines from psql's stdout until one equals `want`.
fn read_until(lines: &std::sync::mpsc::Receiver<String>, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.trim() == want => return,
            Ok(_) => {}
            Err(e) => panic!("psql did not print {want:?}: {e}"),
        }
    }
}

#[test]
fn sigterm_refuses_new_connections_lets_open_sessions_finish_and_exits_zero() {
    let mut gw = Gateway::start(Options {
        edit_config: Some(|text| {
            let mut found = false;
            let edited: Vec<String> = text
                .lines()
                .map(|line| {
                    if line.starts_with("grace_secs") {
                        found = true;
                        "grace_secs = 5".to_owned()
                    } else {
                        line.to_owned()
                    }
                })
                .collect();
            assert!(found, "sluice.toml has no grace_secs line");
            edited.join("\n")
        }),
        ..Options::default()
    });
    let token = gw.token("alice");
    let mut cmd = gw.psql(&token, &gw.conninfo("alice", ""));
    cmd.args(["-A", "-t", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut psql = Proc::spawn("psql session", &mut cmd, None);
    let mut stdin = psql.child_mut().stdin.take().expect("stdin");
    let stderr = support::drain(psql.child_mut().stderr.take().expect("stderr"));
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = {
        let pipe = psql.child_mut().stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    };
    // The session is established once the first result comes back.
    stdin.write_all(b"SELECT 1;\n").expect("write");
    stdin.flush().expect("flush");
    read_until(&lines, "1");

    gw.proc.signal("TERM");

    // New connections are refused once every worker has dropped its listener. A connect
    // caught in the backlog of the first listener to close is refused while another
    // worker still listens, so wait for several refusals in a row.
    let addr = SocketAddr::from(([127, 0, 0, 1], gw.port));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refused_in_a_row = 0;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused_in_a_row += 1,
            _ => refused_in_a_row = 0,
        }
        if refused_in_a_row == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway still accepts connections after SIGTERM; log:\n{}",
            gw.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut cmd = gw.psql(&token, &gw.conninfo("alice", ""));
    cmd.args(["-c", "SELECT 1"]);
    let out = run(&mut cmd, MINUTE);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refused"),
        "{}",
        text(&out.stderr)
    );

    // The open session still works.
    stdin.write_all(b"SELECT 42;\n").expect("write");
    stdin.flush().expect("flush");
    read_until(&lines, "42");
    assert!(
        gw.proc.try_wait().is_none(),
        "the gateway exited with a session open"
    );

    drop(stdin);
    let status = psql.wait_timeout(Duration::from_secs(15));
    let stderr = text(&stderr.join().expect("stderr"));
    stdout.join().expect("stdout reader");
    assert!(status.success(), "psql: {status}: {stderr}");

    // Guard only: the grace period is 5 s and the session has ended.
    let status = gw.proc.wait_timeout(Duration::from_secs(20));
    let log = gw.proc.log_text();
    assert!(status.success(), "gateway exit {status}; log:\n{log}");
    assert!(
        !log.contains("closing sessions still open"),
        "the session should have finished on its own; log:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------
// 7. `sluice demo`
// ---------------------------------------------------------------------------------------

fn parse_env_file(text: &str) -> std::collections::HashMap<String, String> {
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

fn postgres_processes_mentioning(path: &Path) -> Vec<u32> {
    let needle = path.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = text(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) && sluice_pgharness::pid_alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn demo_serves_the_shop_data_and_cleans_up_on_ctrl_c() {
    let dir = support::shared_tempdir();
    let demo_dir = dir.path().join("demo");
    let log_path = dir.path().join("demo.log");
    let port = sluice_pgharness::free_loopback_port().expect("port");
    let mut cmd = Command::new(sluice_bin());
    scrub_env(&mut cmd);
    cmd.arg("demo")
        .arg("--dir")
        .arg(&demo_dir)
        .args(["--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"));
    let mut demo = Proc::spawn("sluice demo", &mut cmd, Some(log_path));

    let env_path = demo_dir.join("demo.env");
    support::wait_for_file(&env_path, &mut demo, Duration::from_secs(120));
    // The gateway starts after demo.env is complete.
    support::wait_for_port(port, &mut demo, Duration::from_secs(120));
    let env = parse_env_file(&std::fs::read_to_string(&env_path).expect("demo.env"));
    assert_eq!(env["SLUICE_PORT"], port.to_string());
    let data = demo_dir.join("pg").join("data");
    let postmaster: u32 = std::fs::read_to_string(data.join("postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("postmaster pid");
    assert!(sluice_pgharness::pid_alive(postmaster));

    let psql = |token: &str, conninfo: String, sql: &str| {
        let mut cmd = Command::new("psql");
        scrub_env(&mut cmd);
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(conninfo)
            .args(["-c", sql])
            .env("PGPASSWORD", token);
        run_ok(&mut cmd, MINUTE).trim().to_owned()
    };
    let bob = format!("host=127.0.0.1 port={port} dbname=shop user=bob");
    assert_eq!(
        psql(
            &env["BOB_TOKEN"],
            bob.clone(),
            "select count(*) from customers"
        ),
        "10000"
    );
    assert_eq!(
        psql(
            &env["BOB_TOKEN"],
            bob.clone(),
            "select count(*) from orders"
        ),
        "50000"
    );
    // bob (support) reads through the masking profile "pii"; carol (dba) sees the data.
    let carol = format!("host=127.0.0.1 port={port} dbname=shop user=carol");
    let sensitive = "select email, card_number from customers where id = 1";
    let raw = psql(&env["CAROL_TOKEN"], carol, sensitive);
    let masked = psql(&env["BOB_TOKEN"], bob, sensitive);
    let (raw_email, raw_card) = raw.split_once('|').expect("two columns");
    assert!(raw_email.contains('@') && !raw_card.contains('*'), "{raw}");
    assert!(
        !masked.contains(raw_email) && !masked.contains(raw_card) && masked.contains('*'),
        "bob sees {masked}"
    );
    let alice = format!(
        "host=localhost port={port} dbname=shop user=alice sslmode=verify-full sslrootcert={}",
        env["SLUICE_CA"]
    );
    assert_eq!(
        psql(&env["ALICE_TOKEN"], alice, "select 'verified'"),
        "verified"
    );

    // The banner's just-in-time flow, with the binary and environment the demo wrote.
    let dave = format!("host=127.0.0.1 port={port} dbname=shop user=dave");
    let mut cmd = Command::new("psql");
    scrub_env(&mut cmd);
    cmd.args(["-X", "-c", "select 1"])
        .arg(&dave)
        .env("PGPASSWORD", &env["DAVE_TOKEN"]);
    let out = run(&mut cmd, MINUTE);
    assert_eq!(out.status.code(), Some(2), "dave needs a grant first");
    assert!(
        text(&out.stderr).contains("sluice access request"),
        "{}",
        text(&out.stderr)
    );
    let sluice = |args: &[&str]| {
        let mut cmd = Command::new(sluice_bin());
        scrub_env(&mut cmd);
        cmd.args(args).env("SLUICE_CONFIG", &env["SLUICE_CONFIG"]);
        run_ok(&mut cmd, MINUTE).trim().to_owned()
    };
    let id = sluice(&[
        "access",
        "request",
        "--resource",
        "shop",
        "--for",
        "30m",
        "--reason",
        "ticket 42",
        "--token",
        &env["DAVE_TOKEN"],
    ]);
    sluice(&["access", "approve", &id, "--token", &env["CAROL_TOKEN"]]);
    assert_eq!(
        psql(&env["DAVE_TOKEN"], dave, "select 'granted'"),
        "granted"
    );

    // The gateway runs as the demo's child, exactly as under `sluice up`.
    let gateways = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", demo.pid()))
        .unwrap_or_default()
        .split_whitespace()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmd| String::from_utf8_lossy(&cmd).contains("proxy"))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(gateways, 1, "one gateway child");

    demo.signal("INT");
    let status = demo.wait_timeout(MINUTE);
    assert!(status.success(), "demo exit {status}:\n{}", demo.log_text());
    assert!(
        !sluice_pgharness::pid_alive(postmaster),
        "postmaster {postmaster} still running"
    );
    assert_eq!(
        postgres_processes_mentioning(&data),
        Vec::<u32>::new(),
        "processes of the demo cluster remain"
    );
    assert!(!data.exists(), "{} was not removed", data.display());
}

// ---------------------------------------------------------------------------------------
// 8. `sluice token` and `sluice keys rotate`, through control's admin socket
// ---------------------------------------------------------------------------------------

#[test]
fn sluice_token_and_key_rotation_through_control() {
    let gw = Gateway::start(Options::default());
    let out = gw.sluice(&[
        "token",
        "--user",
        "alice",
        "--groups",
        "engineering",
        "--ttl",
        "10m",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout);
    let token = token.trim();
    assert_eq!(token.lines().count(), 1, "the token alone on stdout");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let mut cmd = gw.psql(token, &gw.conninfo("alice", ""));
    cmd.args(["-A", "-t", "-c", "SELECT 'accepted'"]);
    assert_eq!(run_ok(&mut cmd, MINUTE).trim(), "accepted");

    // The token is for alice only.
    let mut cmd = gw.psql(token, &gw.conninfo("bob", ""));
    cmd.args(["-c", "SELECT 1"]);
    let out = run(&mut cmd, MINUTE);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // Keys live in the state dir, private.
    {
        use std::os::unix::fs::PermissionsExt;
        let keys = gw.deployment.state_dir.join("keys");
        let mode = std::fs::metadata(&keys)
            .expect("keys dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "keys dir readable by others: {mode:o}");
        for entry in std::fs::read_dir(&keys).expect("list keys") {
            let path = entry.expect("entry").path();
            let mode = std::fs::metadata(&path).expect("key").permissions().mode();
            assert_eq!(
                mode & 0o077,
                0,
                "{} readable by others: {mode:o}",
                path.display()
            );
        }
    }

    // Rotation: a new signing key; the old token keeps working, new tokens use the new key.
    let out = gw.sluice(&["keys", "rotate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let kid = text(&out.stdout).trim().to_owned();
    let out = gw.sluice(&["token", "--user", "alice", "--groups", "engineering"]);
    let new = text(&out.stdout).trim().to_owned();
    let header = jsonwebtoken::decode_header(&new).expect("JWT header");
    assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
    for t in [token, new.as_str()] {
        let mut cmd = gw.psql(t, &gw.conninfo("alice", ""));
        cmd.args(["-A", "-t", "-c", "SELECT 'still accepted'"]);
        assert_eq!(run_ok(&mut cmd, MINUTE).trim(), "still accepted");
    }
    let out = gw.sluice(&["keys", "list", "--json"]);
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON list");
    assert_eq!(keys.as_array().expect("array").len(), 2, "{keys}");

    // A lifetime past identity.sluice_tokens.max_ttl is refused with the reason.
    let out = gw.sluice(&["token", "--user", "alice", "--ttl", "30d"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("max_ttl"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "nothing on stdout when refused");
}

#[test]
fn proxy_finds_its_config_through_sluice_config() {
    let gw = Gateway::start(Options {
        config_from_env: true,
        ..Options::default()
    });
    assert_eq!(gw.query("SELECT 6 * 7"), "42");

    let mut cmd = Command::new(sluice_bin());
    scrub_env(&mut cmd);
    cmd.arg("proxy");
    let out = run(&mut cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--config FILE or $SLUICE_CONFIG"),
        "{stderr}"
    );
}
