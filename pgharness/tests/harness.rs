//! Real-cluster tests for the harness itself.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_pgharness::{demo, pid_alive, ClusterOptions, HostAuth, PgCluster};

/// Polls `cond` until true or `timeout`; returns the final value.
fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn start_query_drop_leaves_nothing() {
    let cluster = PgCluster::start(ClusterOptions::default()).expect("start");
    assert_eq!(cluster.host(), "127.0.0.1");
    assert!(cluster.port() > 0);
    let pid = cluster.postmaster_pid().expect("postmaster running");
    assert!(pid_alive(pid));
    let dir = cluster.dir().to_path_buf();
    assert!(cluster.data_dir().join("PG_VERSION").exists());
    assert!(cluster.socket_dir().exists());

    assert_eq!(cluster.psql("postgres", "SELECT 1 + 1").unwrap(), "2");
    let settings = cluster
        .psql(
            "postgres",
            "SELECT current_setting('listen_addresses'), current_setting('port'), \
             current_setting('fsync'), current_setting('max_connections'), \
             current_setting('shared_buffers'), current_setting('server_encoding')",
        )
        .unwrap();
    assert_eq!(
        settings,
        format!("127.0.0.1|{}|off|200|128MB|UTF8", cluster.port())
    );
    let url = cluster.url("postgres");
    assert_eq!(
        url,
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            cluster.superuser_password(),
            cluster.port()
        )
    );

    cluster.create_database("app").unwrap();
    assert_eq!(
        cluster.psql("app", "SELECT current_database()").unwrap(),
        "app"
    );
    let err = cluster
        .psql("postgres", "SELECT * FROM no_such_table")
        .unwrap_err();
    assert!(format!("{err:#}").contains("no_such_table"), "{err:#}");

    drop(cluster);
    assert!(!pid_alive(pid), "postmaster {pid} survived drop");
    assert!(!dir.exists(), "{} survived drop", dir.display());
}

#[test]
fn host_auth_scram_md5_trust() {
    let cluster = PgCluster::start(ClusterOptions::default()).expect("start");
    // SCRAM (default).
    cluster.create_role("alice", "alice-pw", false).unwrap();
    cluster.create_role("boss", "boss-pw", true).unwrap();
    assert_eq!(
        cluster
            .psql_as("alice", "alice-pw", "postgres", "SELECT current_user")
            .unwrap(),
        "alice"
    );
    assert_eq!(
        cluster
            .psql_as(
                "boss",
                "boss-pw",
                "postgres",
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            )
            .unwrap(),
        "t"
    );
    let err = cluster
        .psql_as("alice", "wrong", "postgres", "SELECT 1")
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("password authentication failed"),
        "{err:#}"
    );
    assert_eq!(
        cluster
            .psql(
                "postgres",
                "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'alice'"
            )
            .unwrap(),
        "SCRAM-SHA-256$"
    );

    // md5: a role whose password is stored as md5.
    cluster.set_host_auth(HostAuth::Md5).unwrap();
    assert_eq!(cluster.host_auth(), HostAuth::Md5);
    cluster
        .create_role_with_encryption("bob", "bob-pw", "md5")
        .unwrap();
    assert_eq!(
        cluster
            .psql(
                "postgres",
                "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'bob'"
            )
            .unwrap(),
        "md5"
    );
    assert_eq!(
        cluster
            .psql_as("bob", "bob-pw", "postgres", "SELECT current_user")
            .unwrap(),
        "bob"
    );
    assert!(cluster
        .psql_as("bob", "nope", "postgres", "SELECT 1")
        .is_err());
    // The superuser (SCRAM-stored) still works: md5 upgrades to SCRAM.
    assert_eq!(cluster.psql("postgres", "SELECT 1").unwrap(), "1");

    // trust: any password (or none) works.
    cluster.set_host_auth(HostAuth::Trust).unwrap();
    assert_eq!(
        cluster
            .psql_as("bob", "whatever", "postgres", "SELECT current_user")
            .unwrap(),
        "bob"
    );

    // Back to SCRAM: the md5-stored role can no longer log in, which also
    // proves the reload really took effect.
    cluster.set_host_auth(HostAuth::ScramSha256).unwrap();
    assert!(cluster
        .psql_as("bob", "bob-pw", "postgres", "SELECT 1")
        .is_err());
    assert!(cluster
        .psql_as("alice", "alice-pw", "postgres", "SELECT 1")
        .is_ok());
    cluster
        .set_role_password("bob", "bob-pw2", "scram-sha-256")
        .unwrap();
    assert!(cluster
        .psql_as("bob", "bob-pw2", "postgres", "SELECT 1")
        .is_ok());
}

#[test]
fn md5_cluster_restart_keeps_port() {
    let mut cluster = PgCluster::start(ClusterOptions {
        auth: HostAuth::Md5,
        superuser: "admin".into(),
        superuser_password: "p@ss word/:1".into(),
        ..Default::default()
    })
    .expect("start");
    // Superuser password is md5-stored so md5 auth is real.
    assert_eq!(
        cluster
            .psql(
                "postgres",
                "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'admin'"
            )
            .unwrap(),
        "md5"
    );
    assert!(cluster
        .url("postgres")
        .starts_with("postgres://admin:p%40ss%20word%2F%3A1@127.0.0.1:"));
    let port = cluster.port();
    let pid1 = cluster.postmaster_pid().unwrap();
    cluster
        .psql(
            "postgres",
            "CREATE TABLE t (x int); INSERT INTO t VALUES (42);",
        )
        .unwrap();

    cluster.stop().unwrap();
    cluster.stop().unwrap(); // idempotent
    assert!(!cluster.is_running());
    assert!(!pid_alive(pid1));
    assert!(cluster.psql("postgres", "SELECT 1").is_err());

    cluster.start_again().unwrap();
    assert_eq!(cluster.port(), port);
    assert_eq!(cluster.psql("postgres", "SELECT x FROM t").unwrap(), "42");

    cluster.restart().unwrap();
    assert_eq!(cluster.port(), port);
    let pid2 = cluster.postmaster_pid().unwrap();
    assert_ne!(pid1, pid2);
    assert_eq!(cluster.psql("postgres", "SELECT x FROM t").unwrap(), "42");
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    assert!(!pid_alive(pid2));
    assert!(!dir.exists());
}

#[test]
fn keep_then_reuse_user_dir() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("cluster");
    let password = "kept-pw".to_string();
    let cluster = PgCluster::start(ClusterOptions {
        dir: Some(dir.clone()),
        keep: true,
        superuser_password: password.clone(),
        ..Default::default()
    })
    .expect("start");
    cluster.create_database("kept").unwrap();
    let pid = cluster.postmaster_pid().unwrap();
    drop(cluster);
    assert!(!pid_alive(pid), "keep must still stop the server");
    assert!(
        dir.join("data/PG_VERSION").exists(),
        "keep must leave the data dir"
    );

    // Re-use the kept cluster with a new password.
    let cluster = PgCluster::start(ClusterOptions {
        dir: Some(dir.clone()),
        superuser_password: "new-pw".into(),
        ..Default::default()
    })
    .expect("re-use");
    assert_eq!(
        cluster
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_database WHERE datname = 'kept'"
            )
            .unwrap(),
        "1"
    );
    let pid = cluster.postmaster_pid().unwrap();
    drop(cluster);
    assert!(!pid_alive(pid));
    // A re-used cluster is not ours to delete.
    assert!(dir.join("data/PG_VERSION").exists());

    // A data dir we did not create is refused.
    let foreign = parent.path().join("foreign");
    std::fs::create_dir_all(foreign.join("data")).unwrap();
    std::fs::write(foreign.join("data/PG_VERSION"), "15\n").unwrap();
    let err = PgCluster::start(ClusterOptions {
        dir: Some(foreign.clone()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("refusing"), "{err:#}");
    assert!(foreign.join("data/PG_VERSION").exists());
}

#[test]
fn port_in_use_fails_cleanly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("c");
    let err = PgCluster::start(ClusterOptions {
        dir: Some(dir.clone()),
        port: Some(port),
        ..Default::default()
    })
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("Address already in use"), "{msg}");
    assert!(!dir.exists(), "failed start left {}", dir.display());
}

fn luhn_ok(card: &str) -> bool {
    let digits: Vec<u32> = card
        .chars()
        .filter(|c| *c != ' ' && *c != '-')
        .map(|c| c.to_digit(10).expect("digit"))
        .collect();
    if digits.len() != 16 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

#[test]
fn seed_shop_is_complete_valid_and_deterministic() {
    let cluster = PgCluster::start(ClusterOptions::default()).expect("start");
    let t = Instant::now();
    demo::seed_shop(&cluster).unwrap();
    eprintln!("seed_shop took {:?}", t.elapsed());

    let q = |sql: &str| cluster.psql("shop", sql).unwrap();
    assert_eq!(q("SELECT count(*) FROM customers"), "10000");
    assert_eq!(q("SELECT count(*) FROM orders"), "50000");
    assert_eq!(
        q("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'"),
        "postgres"
    );
    assert_eq!(
        q("SELECT count(*) FROM customers WHERE NOT demo.luhn_valid(card_number)"),
        "0"
    );
    // Every card checked independently in Rust.
    let cards = q("SELECT card_number FROM customers ORDER BY id");
    let cards: Vec<&str> = cards.lines().collect();
    assert_eq!(cards.len(), 10_000);
    for c in &cards {
        assert!(luhn_ok(c), "card {c} fails Luhn");
        let d: String = c.chars().filter(char::is_ascii_digit).collect();
        assert!(
            d.starts_with('4')
                || ("51".."56").contains(&&d[..2])
                || (2221..=2720).contains(&d[..4].parse::<u32>().unwrap()),
            "{c} has an unexpected prefix"
        );
    }
    assert!(cards.iter().any(|c| c.contains(' ')));
    assert!(cards.iter().any(|c| c.contains('-')));
    assert!(cards.iter().filter(|c| c.len() == 16).count() > 6000);

    // SSN / email / phone shapes.
    assert_eq!(
        q(
            r"SELECT count(*) FROM customers WHERE ssn !~ '^\d{3}-\d{2}-\d{4}$'
              OR left(ssn, 3) IN ('000', '666') OR left(ssn, 1) = '9'
              OR substr(ssn, 5, 2) = '00' OR right(ssn, 4) = '0000'"
        ),
        "0"
    );
    assert_eq!(
        q(
            r"SELECT count(*) FROM customers WHERE email !~ '^[a-z]+\.[a-z]+\d*@[a-z.]*example\.(com|org|net)$'"
        ),
        "0"
    );
    assert_eq!(
        q(r"SELECT count(*) FROM customers WHERE phone !~ '^\+1-[2-9]\d{2}-555-01\d{2}$'"),
        "0"
    );
    // Notes that mention an email or a card exist.
    assert!(
        q("SELECT count(*) FROM customers WHERE notes LIKE '%' || email || '%'")
            .parse::<u32>()
            .unwrap()
            > 500
    );
    assert!(
        q("SELECT count(*) FROM customers WHERE notes LIKE '%' || card_number || '%'")
            .parse::<u32>()
            .unwrap()
            > 500
    );
    // ANALYZE ran.
    assert_eq!(
        q("SELECT reltuples::bigint FROM pg_class WHERE relname = 'orders'"),
        "50000"
    );

    // Deterministic: a second seed produces identical data.
    let digest = "SELECT md5(string_agg(c::text, ',' ORDER BY c.id)) FROM customers c \
                  UNION ALL SELECT md5(string_agg(o::text, ',' ORDER BY o.id)) FROM orders o";
    let before = cluster.psql("shop", digest).unwrap();
    demo::seed_shop(&cluster).unwrap();
    assert_eq!(cluster.psql("shop", digest).unwrap(), before);
}

const CHILD_ENV: &str = "SLUICE_PGHARNESS_WATCHDOG_CHILD";

/// Helper for `sigkill_owner_watchdog_cleans_up`: a no-op unless started by
/// that test with `SLUICE_PGHARNESS_WATCHDOG_CHILD=1`, in which case it
/// starts a cluster, reports it and waits to be killed.
#[test]
fn watchdog_child_process() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let cluster = PgCluster::start(ClusterOptions::default()).expect("start");
    println!(
        "READY {} {}",
        cluster.postmaster_pid().unwrap(),
        cluster.dir().display()
    );
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn sigkill_owner_watchdog_cleans_up() {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "watchdog_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut ready = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // The harness prints "test name ... " without a newline first.
        if let Some((_, rest)) = line.split_once("READY ") {
            let (pid, dir) = rest.split_once(' ').unwrap();
            ready = Some((pid.parse::<u32>().unwrap(), PathBuf::from(dir)));
            break;
        }
    }
    let (pid, dir) = ready.expect("child never reported READY");
    assert!(pid_alive(pid));
    assert!(dir.exists());

    child.kill().unwrap(); // SIGKILL: no Drop runs in the child.
    child.wait().unwrap();

    assert!(
        eventually(Duration::from_secs(10), || !pid_alive(pid)),
        "postmaster {pid} still running after its owner was SIGKILLed"
    );
    assert!(
        eventually(Duration::from_secs(10), || !dir.exists()),
        "{} still exists after its owner was SIGKILLed",
        dir.display()
    );
}
