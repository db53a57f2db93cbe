//! What statement policy costs per statement on a worker, without the network: the guard's
//! verdict on a Query frame (lexer, cache, statement rules) plus the audit event written when
//! the backend's CommandComplete arrives, exactly as the relay runs them. The policy is the
//! demo's, judged for alice (engineering), whose reads pass three rules before the one that
//! allows them.
//!
//!   cargo bench -p sluice-bench --bench statements

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use sluice_classify::Classifier;
use sluice_control::policy::{Policy, PolicyConfig, StatementAccess, Subject};
use sluice_proxy::audit::{Answer, AuditLog, Pending, PendingStatement, SessionFacts};
use sluice_proxy::statements::{Action, Guard};

const POLICY: &str = r#"
[[rules]]
name = "engineering-uses-shop"
groups = ["engineering"]
resources = ["shop"]
access = "allow"

[[statements]]
name = "only-dba-calls-dangerous-functions"
groups = ["engineering", "support", "contractors"]
resources = ["*"]
flags = ["dangerous_function"]
access = "deny"

[[statements]]
name = "engineering-ddl-needs-approval"
groups = ["engineering"]
resources = ["*"]
classes = ["ddl"]
access = "request"
approvers = ["dba"]

[[statements]]
name = "engineering-bulk-changes-need-approval"
groups = ["engineering"]
resources = ["*"]
flags = ["no_where"]
access = "request"
approvers = ["dba"]

[[statements]]
name = "engineering-reads-and-writes"
groups = ["engineering"]
resources = ["*"]
classes = ["read", "write", "transaction", "session", "copy_out"]
access = "allow"
"#;

fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    body
}

fn statement_path(c: &mut Criterion) {
    let config: PolicyConfig = toml::from_str(POLICY).expect("policy parses");
    let policy = Policy::compile(&config, &["shop"]).expect("policy compiles");
    let groups = vec!["engineering".to_owned()];
    let subject = Subject {
        user: "alice",
        groups: &groups,
    };
    let rules = policy.statement_rules(&subject, "shop");
    let mut classifier = Classifier::new(8192);
    let mut guard = Guard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = AuditLog::open(dir.path(), 0);
    let facts = SessionFacts::new(
        "019ab100-0000-7000-8000-000000000000".into(),
        "alice".into(),
        groups.clone(),
        "shop".into(),
    );
    let mut pending = Pending::default();
    let select = query("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;");
    let update =
        query("UPDATE pgbench_accounts SET abalance = abalance + -4521 WHERE aid = 48213;");

    // Check the answer before timing it.
    let checked = guard.check(b'Q', &select, &mut classifier, &rules);
    assert!(matches!(checked.action, Action::Forward), "{checked:?}");
    assert_eq!(
        checked.audit[0].decision.rule.as_deref(),
        Some("engineering-reads-and-writes")
    );
    assert!(matches!(
        checked.audit[0].decision.access,
        StatementAccess::Allow
    ));

    let mut run = |body: &[u8]| {
        let mut checked = guard.check(b'Q', black_box(body), &mut classifier, &rules);
        let sent = Instant::now();
        for audited in checked.audit.drain(..) {
            pending.push(PendingStatement {
                window: 0,
                audited,
                approval: None,
                raw: None,
                sent,
                sent_ms: 1_764_000_000_000,
                refused: false,
            });
        }
        guard.forwarded(checked);
        pending.answer(Answer::Complete(b"SELECT 1\0"), &facts, &log);
    };
    c.bench_function("statements/pgbench_select_check_and_audit", |b| {
        b.iter(|| run(&select))
    });
    c.bench_function("statements/pgbench_update_check_and_audit", |b| {
        b.iter(|| run(&update))
    });
    for (name, body) in [("select", &select), ("update", &update)] {
        c.bench_function(&format!("statements/pgbench_{name}_check_only"), |b| {
            b.iter(|| {
                let checked = guard.check(b'Q', black_box(body), &mut classifier, &rules);
                black_box(&checked);
                guard.forwarded(checked);
            })
        });
    }
    assert!(
        classifier.cache_misses() <= 2,
        "the benchmark measured cache hits ({} misses)",
        classifier.cache_misses()
    );
}

criterion_group!(benches, statement_path);
criterion_main!(benches);
