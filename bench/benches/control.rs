//! What control costs the proxy, per statement and per revocation.
//!
//! - `control/policy_decide_{allow,deny,grant}`: one [`Policy::decide`] on a realistic
//!   compiled policy (20 rules over 10 resources: group and user rules, `*` rules, a deny, a
//!   rule with hours, request rules) with 100 grants and 10 revocations in the snapshot. The
//!   allow is found by the 5th rule covering the resource; the deny matches no rule (its
//!   message and hint are formatted, as the user sees them); the grant case matches only a
//!   request rule and finds the user's active grant among the 100.
//! - `control/gate_statement_check`: the proxy's real per-statement check
//!   ([`Gate::statement_check`]) in steady state (no new generation: one atomic load of the
//!   shared generation word and an integer compare), and
//!   `control/gate_statement_check_after_publish`: the first statement after control
//!   published a new generation (drain the socket, map and validate the sealed memfd, decode
//!   and compile the view, decide again for the session).
//! - `control/view_compile`: [`View::from_payload`] for that snapshot (once per generation
//!   per worker, never per statement).
//! - `control/revoke_to_session_end`: end to end against a real PostgreSQL with control and a
//!   two-worker gateway in-process: from the `sluice revoke` admin call (the clock starts just
//!   before it) until the revoked principal's running `SELECT pg_sleep(30)` returns its
//!   `57P01` FATAL. Each iteration uses a fresh user (revocations refuse every token issued
//!   before them). Gateway workers act on a new generation for idle sessions on their
//!   periodic tick ([`TICK`], 100 ms), so the revocations are spread evenly over the tick
//!   period: the result is about half a tick plus control's publish and the termination
//!   (the worst case is about one tick more than the best). Skipped when no PostgreSQL server
//!   binaries are found.
//!
//! The snapshot channel's own numbers (`snapshot/current_generation`, `snapshot/refresh_64k`)
//! are in `benches/snapshot.rs`.

use std::hint::black_box;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode};
use sluice_control::admin::{call, AdminRequest};
use sluice_control::content::{millis, SnapshotContent, View, CONTENT_FORMAT};
use sluice_control::identity::IdentityContent;
use sluice_control::policy::{
    Access, Decision, DenyKind, HoursConfig, Policy, PolicyConfig, RuleConfig, Subject, Via,
};
use sluice_control::service::{paths, Control};
use sluice_control::snapshot::{Publisher, SnapshotServer};
use sluice_control::state::{Grant, Revocation};
use sluice_pgharness::{ClusterOptions, PgCluster};
use sluice_proxy::config::Driver;
use sluice_proxy::deployment::{self, BackendSpec, Deployment};
use sluice_proxy::gate::{Gate, TICK};
use sluice_proxy::{Config, Gateway};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

const RESOURCES: [&str; 10] = [
    "shop",
    "billing",
    "analytics",
    "inventory",
    "hr",
    "payroll",
    "crm",
    "logs",
    "metrics",
    "audit",
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn rule(
    name: &str,
    groups: &[&str],
    users: &[&str],
    resources: &[&str],
    access: Access,
) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        groups: strings(groups),
        users: strings(users),
        resources: strings(resources),
        access,
        approvers: Vec::new(),
        max_session: None,
        max_grant: None,
        masking: None,
        hours: None,
    }
}

/// The rules before their terms (hours, approvers, masking, limits) are filled in.
#[rustfmt::skip]
fn base_rules() -> Vec<RuleConfig> {
    use Access::{Allow, Deny, Request};
    vec![
        rule("dba-everything", &["dba"], &[], &["*"], Allow),
        rule("interns-not-pay", &["interns"], &[], &["payroll", "hr"], Deny),
        rule("support-office-hours", &["support"], &[], &["crm", "shop"], Allow),
        rule("finance-money", &["finance"], &[], &["billing", "payroll"], Allow),
        rule("analysts-stats", &["analysts"], &[], &["analytics", "metrics"], Allow),
        rule("bob-logs", &[], &["bob"], &["logs"], Allow),
        rule("sre-observability", &["sre"], &[], &["metrics", "logs", "audit"], Allow),
        rule("contractors-ask-shop", &["contractors"], &[], &["shop", "inventory"], Request),
        rule("hr-team", &["hr"], &[], &["hr"], Allow),
        rule("auditors-read", &["auditors"], &[], &["audit", "billing", "shop"], Allow),
        rule("carol-crm", &[], &["carol"], &["crm"], Allow),
        rule("engineering-shop", &["engineering"], &[], &["shop", "inventory"], Allow),
        rule("contractors-ask-payroll", &["contractors"], &[], &["payroll"], Request),
        rule("pager-bot-everywhere", &[], &["pager-bot"], &["*"], Allow),
        rule("eve-nowhere", &[], &["eve"], &["*"], Deny),
        rule("analysts-shop-masked", &["analysts"], &[], &["shop"], Allow),
        rule("warehouse-inventory", &["warehouse"], &[], &["inventory"], Allow),
        rule("marketing-crm", &["marketing"], &[], &["crm", "analytics"], Allow),
        rule("dave-billing", &[], &["dave"], &["billing"], Allow),
        rule("security-audit", &["security"], &[], &["audit", "logs"], Allow),
    ]
}

/// 20 rules over the 10 resources. Rules covering `shop`, in order: 0 (`*`), 2 (hours), 7
/// (request), 9, 11 (`engineering`: the one that allows alice), 13 (`*`), 14 (`*` deny for
/// eve), 15 (also matches alice, but the first allow wins).
fn policy_config() -> PolicyConfig {
    let h = |s: u64| Some(Duration::from_secs(s * 3600));
    let mut rules = base_rules();
    rules[0].max_session = h(12);
    rules[2].masking = Some("pii".into());
    rules[2].hours = Some(HoursConfig {
        days: Some(strings(&["mon", "tue", "wed", "thu", "fri"])),
        from: "08:00".into(),
        to: "18:00".into(),
        utc_offset: Some("+02:00".into()),
    });
    rules[4].masking = Some("pii".into());
    rules[7].approvers = strings(&["dba"]);
    rules[7].max_grant = h(4);
    rules[9].masking = Some("pii".into());
    rules[11].max_session = h(12);
    rules[12].approvers = strings(&["finance", "dba"]);
    rules[12].max_grant = h(2);
    rules[12].max_session = h(2);
    rules[15].masking = Some("pii".into());
    PolicyConfig {
        default_max_grant: h(8),
        rules,
        ..PolicyConfig::default()
    }
}

/// The user with the grant the `grant` case finds.
const GRANTEE: &str = "carl";
/// Where in the grant list it sits.
const GRANTEE_AT: usize = 73;

/// 100 active grants on various resources (one of them carl's on payroll) and 10
/// revocations of other users.
fn grants_and_revocations(now_ms: u64) -> (Vec<Grant>, Vec<Revocation>) {
    let grants = (0..100)
        .map(|i| {
            let (user, resource) = if i == GRANTEE_AT {
                (GRANTEE.to_owned(), "payroll")
            } else {
                (format!("contractor-{i}"), RESOURCES[i % RESOURCES.len()])
            };
            Grant {
                id: format!("0197a1b2-c3d4-7e5f-8a9b-{i:012x}"),
                user,
                resource: resource.into(),
                created_at_ms: now_ms - 3_600_000,
                expires_at_ms: now_ms + 3_600_000,
                granted_by: "dana".into(),
                reason: format!("ticket {i}"),
                request_id: None,
            }
        })
        .collect();
    let revocations = (0..10)
        .map(|i| Revocation {
            user: format!("former-{i}"),
            resource: (i % 2 == 0).then(|| RESOURCES[i].to_owned()),
            at_ms: now_ms - 86_400_000,
            by: "operator".into(),
            reason: "left the company".into(),
        })
        .collect();
    (grants, revocations)
}

fn content(now_ms: u64) -> SnapshotContent {
    let (grants, revocations) = grants_and_revocations(now_ms);
    SnapshotContent {
        format: CONTENT_FORMAT,
        built_at_ms: now_ms,
        identity: IdentityContent::default(),
        require_user_match: true,
        resources: strings(&RESOURCES),
        policy: policy_config(),
        grants,
        revocations,
        approvals: vec![],
        approval_timeout_ms: 600_000,
        masking_key: String::new(),
    }
}

fn policy_decide(c: &mut Criterion) {
    let now_ms = millis(SystemTime::now());
    let issued_ms = now_ms - 600_000;
    let names: Vec<&str> = RESOURCES.to_vec();
    let policy = Policy::compile(&policy_config(), &names).expect("policy compiles");
    let (grants, revocations) = grants_and_revocations(now_ms);

    let alice_groups = strings(&["engineering", "oncall", "analysts"]);
    let alice = Subject {
        user: "alice",
        groups: &alice_groups,
    };
    let zoe_groups = strings(&["sales", "emea", "all-staff"]);
    let zoe = Subject {
        user: "zoe",
        groups: &zoe_groups,
    };
    let carl_groups = strings(&["contractors", "vendors", "emea"]);
    let carl = Subject {
        user: GRANTEE,
        groups: &carl_groups,
    };

    // Each case decides what it claims to, or the numbers mean nothing.
    let decide =
        |s: &Subject<'_>, r: &str| policy.decide(s, r, now_ms, issued_ms, &grants, &revocations);
    match decide(&alice, "shop") {
        Decision::Allow(a) => assert_eq!(a.via, Via::Rule("engineering-shop")),
        d => panic!("alice on shop: {d:?}"),
    }
    match decide(&zoe, "payroll") {
        Decision::Deny(d) => assert_eq!(d.kind, DenyKind::NoRule),
        d => panic!("zoe on payroll: {d:?}"),
    }
    match decide(&carl, "payroll") {
        Decision::Allow(a) => assert!(matches!(a.via, Via::Grant { .. }), "{a:?}"),
        d => panic!("carl on payroll: {d:?}"),
    }

    c.bench_function("control/policy_decide_allow", |b| {
        b.iter(|| decide(black_box(&alice), black_box("shop")))
    });
    c.bench_function("control/policy_decide_deny", |b| {
        b.iter(|| decide(black_box(&zoe), black_box("payroll")))
    });
    c.bench_function("control/policy_decide_grant", |b| {
        b.iter(|| decide(black_box(&carl), black_box("payroll")))
    });
}

fn gate(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path();
    let now = SystemTime::now();
    let payload = content(millis(now)).encode();
    let mut server = SnapshotServer::bind(
        paths::snapshot_socket(state_dir),
        Publisher::new().expect("publisher"),
    )
    .expect("bind");
    server.publish(&payload, now).expect("publish");
    server.heartbeat(now);

    c.bench_function("control/view_compile", |b| {
        b.iter(|| View::from_payload(black_box(&payload)).expect("view"))
    });

    let mut gate = Gate::new(
        state_dir,
        Duration::from_secs(300),
        Duration::from_secs(1),
        0,
    );
    let view: Rc<View> = gate.view().expect("a fresh view");
    let groups = strings(&["engineering", "oncall", "analysts"]);
    let subject = Subject {
        user: "alice",
        groups: &groups,
    };
    let now_ms = millis(SystemTime::now());
    let decision = view.decide(&subject, "shop", now_ms, now_ms);
    assert!(decision.is_allow(), "{decision:?}");
    let session = gate.register(
        "bench-session".into(),
        subject.user,
        subject.groups,
        "shop",
        &view,
        &decision,
        now_ms,
    );
    drop(decision);
    drop(view);
    assert!(gate.statement_check(&session).is_none(), "allowed");

    c.bench_function("control/gate_statement_check", |b| {
        b.iter(|| gate.statement_check(black_box(&session)))
    });

    let epoch = gate.epoch();
    server
        .publish(&payload, SystemTime::now())
        .expect("publish");
    assert!(gate.statement_check(&session).is_none(), "still allowed");
    assert_eq!(gate.epoch(), epoch + 1, "the new generation was installed");

    c.bench_function("control/gate_statement_check_after_publish", |b| {
        b.iter_batched(
            || {
                server
                    .publish(&payload, SystemTime::now())
                    .expect("publish");
            },
            |()| gate.statement_check(black_box(&session)),
            BatchSize::PerIteration,
        )
    });
    assert!(gate.statement_check(&session).is_none(), "still allowed");
}

/// Resource (and backend database) of the end-to-end deployment.
const RESOURCE: &str = "app";
const BACKEND_USER: &str = "gw";
/// Guard against hangs; not a timing assertion.
const GUARD: Duration = Duration::from_secs(20);

/// PostgreSQL, control and a gateway, all running; torn down gateway first.
struct Live {
    gateway: Option<Gateway>,
    control: Option<Control>,
    watcher: Option<Client>,
    rt: tokio::runtime::Runtime,
    deployment: Deployment,
    port: u16,
    next_user: usize,
    _dir: tempfile::TempDir,
    _cluster: PgCluster,
}

impl Live {
    fn start() -> Live {
        let cluster = PgCluster::start(ClusterOptions::default()).expect("start PostgreSQL");
        let password = format!("gw-{}", std::process::id());
        cluster
            .create_role(BACKEND_USER, &password, false)
            .expect("create backend role");
        cluster
            .psql(
                "postgres",
                &format!("CREATE DATABASE {RESOURCE} OWNER {BACKEND_USER};"),
            )
            .expect("create backend database");
        let dir = tempfile::tempdir().expect("deployment tempdir");
        let deployment = deployment::write(
            dir.path(),
            0,
            Driver::IoUring,
            &BackendSpec {
                resource: RESOURCE.into(),
                host: cluster.host().into(),
                port: cluster.port(),
                database: RESOURCE.into(),
                user: BACKEND_USER.into(),
                password,
            },
        )
        .expect("write deployment");
        let mut config = Config::load(&deployment.config).expect("load config");
        config.listen.workers = 2;
        config.listen.pin_workers = false;
        let control = Control::start(&deployment.config).expect("start control");
        let gateway = Gateway::start(config).expect("start gateway");
        let port = gateway.local_addr().port();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut live = Live {
            gateway: Some(gateway),
            control: Some(control),
            watcher: None,
            rt,
            deployment,
            port,
            next_user: 0,
            _dir: dir,
            _cluster: cluster,
        };
        let token = live.token("watcher");
        live.watcher = Some(live.rt.block_on(connect(port, "watcher", &token)));
        live
    }

    fn token(&self, user: &str) -> String {
        self.deployment
            .mint(user, &["engineering"], Duration::from_secs(600))
            .expect("mint token")
    }

    /// One revocation: a fresh user's `pg_sleep(30)` is running; returns the time from the
    /// revoke call to the sleeping query's error.
    fn revoke_one(&mut self) -> Duration {
        self.next_user += 1;
        let n = self.next_user;
        let user = format!("bench-{n}");
        let token = self.token(&user);
        let admin = paths::admin_socket(&self.deployment.state_dir);
        let watcher = self.watcher.as_ref().expect("watcher");
        let port = self.port;
        self.rt.block_on(async move {
            let client = connect(port, &user, &token).await;
            let sql = format!("SELECT pg_sleep(30), '{user}'");
            let sleeper = tokio::spawn({
                let sql = sql.clone();
                async move {
                    let result = client.simple_query(&sql).await.map(drop);
                    (result, Instant::now())
                }
            });
            tokio::time::timeout(GUARD, async {
                loop {
                    let row = watcher
                        .query_one(
                            "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
                            &[&sql],
                        )
                        .await
                        .expect("pg_stat_activity");
                    if row.get::<_, i64>(0) == 1 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
            .await
            .expect("the sleeping query shows up in pg_stat_activity");

            // Each iteration starts right after the previous session ended, i.e. right
            // after a worker tick: revoking at once would always land ~TICK before the next
            // tick and measure the worst case. Spread the revocations evenly over the tick
            // period instead (golden-ratio sequence), outside the measured span.
            let phase = (n as f64 * 0.618_033_988_749_895).fract();
            tokio::time::sleep(TICK.mul_f64(phase)).await;

            let start = Instant::now();
            revoke(&admin, &user);
            let (result, ended) = tokio::time::timeout(GUARD, sleeper)
                .await
                .expect("the revocation ends the session")
                .expect("sleeper task");
            match result {
                Ok(()) => panic!("{user}'s pg_sleep(30) finished instead of being ended"),
                Err(e) => {
                    let code = e.as_db_error().map(|db| db.code().code().to_owned());
                    assert_eq!(code.as_deref(), Some("57P01"), "{user}: {e:?}");
                }
            }
            ended.duration_since(start)
        })
    }
}

fn revoke(admin: &Path, user: &str) {
    let result: serde_json::Value = call(
        admin,
        &AdminRequest::Revoke {
            token: None,
            user: user.into(),
            resource: None,
            reason: "bench".into(),
        },
    )
    .expect("revoke");
    assert!(result["generation"].as_u64().is_some(), "{result}");
}

impl Drop for Live {
    fn drop(&mut self) {
        drop(self.watcher.take());
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown_handle().stop();
            if let Err(e) = gateway.join() {
                eprintln!("gateway join failed: {e:#}");
            }
        }
        drop(self.control.take());
        // The cluster is stopped and removed when its field drops.
    }
}

async fn connect(port: u16, user: &str, token: &str) -> Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(token)
        .dbname(RESOURCE)
        .application_name("sluice-bench")
        .ssl_mode(SslMode::Disable)
        .connect_timeout(Duration::from_secs(10));
    let (client, connection) = tokio::time::timeout(GUARD, config.connect(NoTls))
        .await
        .expect("connect: no answer")
        .unwrap_or_else(|e| panic!("connect as {user}: {e:?}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn revoke_to_session_end(c: &mut Criterion) {
    if let Err(e) = sluice_pgharness::find_bindir() {
        eprintln!("skipping control/revoke_to_session_end: no PostgreSQL server binaries ({e:#})");
        return;
    }
    let mut group = c.benchmark_group("control");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    // Started on first use, so a filter that skips this bench starts no cluster.
    let mut live: Option<Live> = None;
    group.bench_function("revoke_to_session_end", |b| {
        let live = live.get_or_insert_with(Live::start);
        b.iter_custom(|iters| (0..iters).map(|_| live.revoke_one()).sum())
    });
    group.finish();
    drop(live);
}

criterion_group!(benches, policy_decide, gate, revoke_to_session_end);
criterion_main!(benches);
