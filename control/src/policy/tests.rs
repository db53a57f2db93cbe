//! Policy tests: real TOML in, decisions and reports out.

use std::time::Duration;

use serde::Deserialize;

use super::*;

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;
/// 2026-11-24 06:00 UTC, a Tuesday (`date -u -d '2026-11-24 06:00' +%s`).
const TUE_0600: u64 = 1_795_500_000_000;
/// 2026-11-24 07:30 UTC = Tuesday 09:30 at +02:00, inside the analysts' window.
const TUE_0730: u64 = TUE_0600 + 90 * MIN;
/// 2026-11-20 17:00 UTC = Friday 19:00 at +02:00, after the window.
const FRI_1700: u64 = 1_795_176_000_000 + 5 * HOUR;
/// 2026-11-21 10:00 UTC, a Saturday.
const SAT_1000: u64 = 1_795_255_200_000;

const POLICY: &str = r#"
[policy]
default_max_grant = "4h"

[[policy.rules]]
name = "analysts-read-shop"
groups = ["analysts"]
resources = ["shop"]
access = "allow"
max_session = "8h"
masking = "pii"
hours = { days = ["mon","tue","wed","thu","fri"], from = "08:00", to = "18:00", utc_offset = "+02:00" }

[[policy.rules]]
name = "no-contractors"
groups = ["contractors"]
resources = ["*"]
access = "deny"
approvers = ["security"]

[[policy.rules]]
name = "billing-jit"
groups = ["analysts", "dev"]
resources = ["billing"]
access = "request"
approvers = ["dba"]
max_session = "1h"
max_grant = "2h"
masking = "pii-strict"

[[policy.rules]]
name = "dba-all"
groups = ["dba"]
resources = ["*"]
access = "allow"
approvers = ["dba"]

[[policy.rules]]
name = "alice-billing"
users = ["alice"]
resources = ["billing"]
access = "allow"

[policy.masking.pii]

[policy.masking.pii-strict]
style = "redact"
"#;

const KNOWN: &[&str] = &["shop", "billing", "audit"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    policy: PolicyConfig,
}

fn parse(text: &str) -> PolicyConfig {
    toml::from_str::<File>(text)
        .unwrap_or_else(|e| panic!("{e}"))
        .policy
}

fn policy() -> Policy {
    Policy::compile(&parse(POLICY), KNOWN).unwrap_or_else(|e| panic!("{e}"))
}

fn groups(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn grant(id: &str, user: &str, resource: &str, from: u64, to: u64) -> Grant {
    Grant {
        id: id.into(),
        user: user.into(),
        resource: resource.into(),
        created_at_ms: from,
        expires_at_ms: to,
        granted_by: "dave".into(),
        reason: "incident 42".into(),
        request_id: None,
    }
}

fn revocation(user: &str, resource: Option<&str>, at_ms: u64) -> Revocation {
    Revocation {
        user: user.into(),
        resource: resource.map(str::to_owned),
        at_ms,
        by: "ops".into(),
        reason: "laptop stolen".into(),
    }
}

fn denied(d: Decision<'_>) -> Denied {
    match d {
        Decision::Deny(d) => d,
        Decision::Allow(a) => panic!("expected a denial, got {a:?}"),
    }
}

fn allowed(d: Decision<'_>) -> Allowed<'_> {
    match d {
        Decision::Allow(a) => a,
        Decision::Deny(d) => panic!("expected access, got {d}"),
    }
}

#[test]
fn allow_rule_inside_hours_gives_its_terms() {
    let p = policy();
    let g = groups(&["analysts"]);
    let bob = Subject {
        user: "bob",
        groups: &g,
    };
    let a = allowed(p.decide(&bob, "shop", TUE_0730, TUE_0730 - HOUR, &[], &[]));
    assert_eq!(a.via, Via::Rule("analysts-read-shop"));
    // The window closes at 18:00 +02:00 = 16:00 UTC.
    assert_eq!(a.valid_until_ms, Some(TUE_0600 + 10 * HOUR));
    assert_eq!(format_utc(TUE_0600 + 10 * HOUR), "2026-11-24 16:00 UTC");
    assert_eq!(a.max_session, Some(Duration::from_secs(8 * 3600)));
    assert_eq!(a.masking, Some("pii"));
}

#[test]
fn revocation_beats_allow_only_for_older_credentials() {
    let p = policy();
    let g = groups(&["analysts"]);
    let bob = Subject {
        user: "bob",
        groups: &g,
    };
    let revs = [revocation("bob", Some("shop"), TUE_0730 - 10 * MIN)];
    let d = denied(p.decide(&bob, "shop", TUE_0730, TUE_0730 - HOUR, &[], &revs));
    assert_eq!(d.kind, DenyKind::Revoked);
    assert_eq!(
        d.message,
        "access to resource \"shop\" denied for \"bob\": access was revoked by \"ops\" at 2026-11-24 07:20 UTC (laptop stolen), after this credential was issued"
    );
    assert!(d.hint.contains("sign in again"), "{}", d.hint);

    // A credential issued after the revocation is judged by the rules again.
    let a = allowed(p.decide(&bob, "shop", TUE_0730, TUE_0730 - MIN, &[], &revs));
    assert_eq!(a.via, Via::Rule("analysts-read-shop"));
    // A revocation on another resource does not apply; one on every resource does.
    let other = [revocation("bob", Some("billing"), TUE_0730 - MIN)];
    assert!(p
        .decide(&bob, "shop", TUE_0730, TUE_0730 - HOUR, &[], &other)
        .is_allow());
    let all = [revocation("bob", None, TUE_0730 - MIN)];
    let d = denied(p.decide(&bob, "shop", TUE_0730, TUE_0730 - HOUR, &[], &all));
    assert_eq!(d.kind, DenyKind::Revoked);
    assert!(
        d.message.contains("all access was revoked"),
        "{}",
        d.message
    );
    // Someone else's revocation does not touch bob.
    let carols = [revocation("carol", None, TUE_0730 - MIN)];
    assert!(p
        .decide(&bob, "shop", TUE_0730, TUE_0730 - HOUR, &[], &carols)
        .is_allow());
}

#[test]
fn deny_beats_allow_and_grants() {
    let p = policy();
    let g = groups(&["analysts", "contractors"]);
    let carol = Subject {
        user: "carol",
        groups: &g,
    };
    let grants = [grant("g1", "carol", "shop", TUE_0600, TUE_0600 + 4 * HOUR)];
    let d = denied(p.decide(&carol, "shop", TUE_0730, TUE_0730, &grants, &[]));
    assert_eq!(d.kind, DenyKind::DeniedByRule("no-contractors".into()));
    assert_eq!(
        d.message,
        "access to resource \"shop\" denied for \"carol\": rule \"no-contractors\" denies it"
    );
    assert!(d.hint.contains("grants cannot override"), "{}", d.hint);
}

#[test]
fn allow_rule_beats_grant() {
    let p = policy();
    let g = groups(&["analysts"]);
    let bob = Subject {
        user: "bob",
        groups: &g,
    };
    let grants = [grant("g1", "bob", "shop", TUE_0600, TUE_0600 + 4 * HOUR)];
    let a = allowed(p.decide(&bob, "shop", TUE_0730, TUE_0730, &grants, &[]));
    assert_eq!(a.via, Via::Rule("analysts-read-shop"));
    assert_eq!(a.masking, Some("pii"));
}

#[test]
fn grant_allows_where_only_a_request_rule_exists() {
    let p = policy();
    let g = groups(&["analysts"]);
    let bob = Subject {
        user: "bob",
        groups: &g,
    };
    let grants = [
        grant(
            "other-user",
            "eve",
            "billing",
            TUE_0600,
            TUE_0600 + 9 * HOUR,
        ),
        grant("other-res", "bob", "audit", TUE_0600, TUE_0600 + 9 * HOUR),
        grant("g1", "bob", "billing", TUE_0600, TUE_0600 + 2 * HOUR),
    ];
    let a = allowed(p.decide(&bob, "billing", TUE_0730, TUE_0730, &grants, &[]));
    assert_eq!(
        a.via,
        Via::Grant {
            id: "g1",
            granted_by: "dave"
        }
    );
    assert_eq!(a.valid_until_ms, Some(TUE_0600 + 2 * HOUR));
    // Terms come from the request rule.
    assert_eq!(a.max_session, Some(Duration::from_secs(3600)));
    assert_eq!(a.masking, Some("pii-strict"));

    // A grant made directly to someone no request rule names still takes the resource's
    // request-rule terms (masking is not lost).
    let none: Vec<String> = Vec::new();
    let zed = Subject {
        user: "zed",
        groups: &none,
    };
    let grants = [grant("g2", "zed", "billing", TUE_0600, TUE_0600 + 2 * HOUR)];
    let a = allowed(p.decide(&zed, "billing", TUE_0730, TUE_0730, &grants, &[]));
    assert_eq!(a.masking, Some("pii-strict"));
}

#[test]
fn expired_grant_needs_approval_again() {
    let p = policy();
    let g = groups(&["dev"]);
    let dan = Subject {
        user: "dan",
        groups: &g,
    };
    let grants = [grant("g1", "dan", "billing", TUE_0600 - 3 * HOUR, TUE_0600)];
    let d = denied(p.decide(&dan, "billing", TUE_0730, TUE_0730, &grants, &[]));
    assert_eq!(d.kind, DenyKind::NeedsApproval("billing-jit".into()));
    assert_eq!(
        d.message,
        "access to resource \"billing\" denied for \"dan\": rule \"billing-jit\" allows it only with an approved access request (grant \"g1\" expired at 2026-11-24 06:00 UTC)"
    );
    assert_eq!(
        d.hint,
        "run: sluice access request --resource billing --for 1h --reason \"...\" (approvers: dba)"
    );
    // A grant that has not started yet does not count either.
    let future = [grant(
        "g2",
        "dan",
        "billing",
        TUE_0730 + HOUR,
        TUE_0730 + 2 * HOUR,
    )];
    let d = denied(p.decide(&dan, "billing", TUE_0730, TUE_0730, &future, &[]));
    assert_eq!(d.kind, DenyKind::NeedsApproval("billing-jit".into()));
}

#[test]
fn outside_hours_says_when_the_window_opens() {
    let p = policy();
    let g = groups(&["analysts"]);
    let bob = Subject {
        user: "bob",
        groups: &g,
    };
    // Friday 19:00 local and Saturday: the next window is Monday 08:00 +02:00.
    for now in [FRI_1700, SAT_1000] {
        let d = denied(p.decide(&bob, "shop", now, now, &[], &[]));
        assert_eq!(d.kind, DenyKind::OutsideHours("analysts-read-shop".into()));
        assert_eq!(
            d.message,
            "access to resource \"shop\" denied for \"bob\": rule \"analysts-read-shop\" allows it only during mon-fri 08:00-18:00 UTC+02:00; the next window opens 2026-11-23 06:00 UTC"
        );
        assert_eq!(d.hint, "connect again from 2026-11-23 06:00 UTC");
    }
    // Tuesday 07:00 local: later the same day.
    let now = TUE_0600 - HOUR;
    let d = denied(p.decide(&bob, "shop", now, now, &[], &[]));
    assert!(
        d.message
            .ends_with("the next window opens 2026-11-24 06:00 UTC"),
        "{}",
        d.message
    );
    // A window end is exclusive: 18:00 local sharp is outside; next is Wednesday.
    let now = TUE_0600 + 10 * HOUR;
    let d = denied(p.decide(&bob, "shop", now, now, &[], &[]));
    assert!(
        d.message.ends_with("opens 2026-11-25 06:00 UTC"),
        "{}",
        d.message
    );
    // A grant still works outside the hours (step 4 comes before step 5).
    let grants = [grant("g1", "bob", "shop", SAT_1000 - HOUR, SAT_1000 + HOUR)];
    let a = allowed(p.decide(&bob, "shop", SAT_1000, SAT_1000, &grants, &[]));
    assert!(matches!(a.via, Via::Grant { id: "g1", .. }), "{a:?}");
}

#[test]
fn outside_hours_hint_offers_a_request_when_a_request_rule_matches() {
    let config = parse(
        r#"
[[policy.rules]]
name = "night"
groups = ["ops"]
resources = ["shop"]
access = "allow"
hours = { from = "00:00", to = "06:00" }

[[policy.rules]]
name = "ops-jit"
groups = ["ops"]
resources = ["shop"]
access = "request"
approvers = ["leads"]
max_grant = "30m"
"#,
    );
    let p = Policy::compile(&config, &["shop"]).expect("valid");
    let g = groups(&["ops"]);
    let o = Subject {
        user: "o",
        groups: &g,
    };
    let d = denied(p.decide(&o, "shop", TUE_0730, TUE_0730, &[], &[]));
    assert_eq!(d.kind, DenyKind::OutsideHours("night".into()));
    assert!(
        d.message.contains(
            "only during every day 00:00-06:00 UTC; the next window opens 2026-11-25 00:00 UTC"
        ),
        "{}",
        d.message
    );
    assert_eq!(
        d.hint,
        "connect again from 2026-11-25 00:00 UTC; for access now, run: sluice access request --resource shop --for 30m --reason \"...\" (approvers: leads)"
    );
    let a = allowed(p.decide(&o, "shop", TUE_0600 - 3 * HOUR, 0, &[], &[]));
    assert_eq!(a.valid_until_ms, Some(TUE_0600));
}

#[test]
fn wildcard_resources_and_user_rules() {
    let p = policy();
    let dba = groups(&["dba"]);
    let d = Subject {
        user: "dora",
        groups: &dba,
    };
    for r in ["audit", "shop", "billing"] {
        let a = allowed(p.decide(&d, r, TUE_0730, TUE_0730, &[], &[]));
        assert_eq!(a.via, Via::Rule("dba-all"), "{r}");
        assert_eq!(a.valid_until_ms, None);
    }
    // The wildcard deny reaches resources no rule names.
    let c = groups(&["contractors", "dba"]);
    let carl = Subject {
        user: "carl",
        groups: &c,
    };
    let den = denied(p.decide(&carl, "audit", TUE_0730, TUE_0730, &[], &[]));
    assert_eq!(den.kind, DenyKind::DeniedByRule("no-contractors".into()));

    // A rule naming a user applies without any group.
    let none: Vec<String> = Vec::new();
    let alice = Subject {
        user: "alice",
        groups: &none,
    };
    let a = allowed(p.decide(&alice, "billing", TUE_0730, TUE_0730, &[], &[]));
    assert_eq!(a.via, Via::Rule("alice-billing"));
    assert_eq!(a.masking, None);
    let den = denied(p.decide(&alice, "shop", TUE_0730, TUE_0730, &[], &[]));
    assert_eq!(den.kind, DenyKind::NoRule);
    assert!(
        den.hint.contains("(your token carries no groups)"),
        "{}",
        den.hint
    );
}

#[test]
fn no_rule_names_the_groups_and_the_approvers() {
    let p = policy();
    let g = groups(&["marketing", "interns"]);
    let m = Subject {
        user: "mia",
        groups: &g,
    };
    let d = denied(p.decide(&m, "audit", TUE_0730, TUE_0730, &[], &[]));
    assert_eq!(d.kind, DenyKind::NoRule);
    assert_eq!(
        d.message,
        "access to resource \"audit\" denied for \"mia\": no policy rule names this user or any of their groups for it"
    );
    assert_eq!(
        d.hint,
        "no rule covers \"audit\" for user \"mia\" or groups (marketing, interns); ask an operator to add a [[policy.rules]] entry, or ask an approver (security, dba) for a just-in-time grant"
    );
}

#[test]
fn empty_policy_denies_everything() {
    let p = Policy::compile(&PolicyConfig::default(), &[]).expect("empty is valid");
    let g = groups(&["dba"]);
    let s = Subject {
        user: "root",
        groups: &g,
    };
    let d = denied(p.decide(&s, "shop", TUE_0730, TUE_0730, &[], &[]));
    assert_eq!(d.kind, DenyKind::NoRule);
    assert!(!Policy::default()
        .decide(&s, "shop", TUE_0730, TUE_0730, &[], &[])
        .is_allow());
    assert_eq!(p.max_grant(&s, "shop"), DEFAULT_MAX_GRANT);
    assert_eq!(
        render_summary(&p.summary()),
        "the policy has no rules: every connection is denied\n"
    );
    // `[policy]` may be absent or hold only the default.
    assert_eq!(parse(""), PolicyConfig::default());
    assert!(parse("[policy]\ndefault_max_grant = \"1h\"")
        .rules
        .is_empty());
}

#[test]
fn validation_lists_every_problem() {
    let config = parse(
        r#"
[policy]
default_max_grant = "0s"

[[policy.rules]]
name = "x"
groups = ["a"]
resources = ["shopp", "shop"]
access = "allow"
max_session = "0s"
hours = { days = ["mon", "funday"], from = "18:00", to = "08:00", utc_offset = "+2" }

[[policy.rules]]
name = "x"
resources = []
access = "request"

[[policy.rules]]
users = ["u"]
resources = ["*"]
access = "deny"
masking = "pii"

[[policy.rules]]
name = "late"
groups = ["a"]
resources = ["billing"]
access = "deny"
hours = { from = "08:00", to = "24:00" }
max_grant = "1h"
"#,
    );
    let err = Policy::compile(&config, &["shop", "billing"]).expect_err("invalid");
    let expected = [
        "policy: default_max_grant: must be longer than zero (omit it for 8h)",
        "rule \"x\": resources: \"shopp\" is not a configured resource (known: shop, billing)",
        "rule \"x\": max_session: must be longer than zero (omit it for no limit)",
        "rule \"x\": hours.days: \"funday\" is not a day; use mon, tue, wed, thu, fri, sat, sun",
        "rule \"x\": hours: from \"18:00\" is not before to \"08:00\"; a window cannot cross midnight, so split it into two rules",
        "rule \"x\": hours.utc_offset: \"+2\" is not a UTC offset; write +HH:MM or -HH:MM (e.g. \"+02:00\"), at most 18:00",
        "rule \"x\": name: also used by rule #1; names must be unique",
        "rule \"x\": groups, users: both are empty; name at least one group or user the rule applies to",
        "rule \"x\": resources: is empty; list resource names, or \"*\" for every resource",
        "rule \"x\": approvers: is empty; a rule with access = \"request\" needs the groups who approve requests",
        "rule #3 (unnamed): name: is empty; every rule needs a unique name",
        "rule #3 (unnamed): masking: has no effect on an access = \"deny\" rule; remove it",
        "rule \"late\": max_grant: applies only to access = \"request\" rules; remove it",
        "rule \"late\": hours: applies only to access = \"allow\" rules; remove it",
        "rule #3 (unnamed): masking: profile \"pii\" is not defined (no [policy.masking.NAME] profile is defined)",
    ];
    assert_eq!(err.errors, expected, "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("invalid [policy]: 15 problems\n  - "),
        "{text}"
    );

    // A masking profile that does not compile is named with what is wrong.
    let config = parse(
        r#"
[[policy.rules]]
name = "r"
groups = ["g"]
resources = ["shop"]
access = "allow"
masking = "pii"

[policy.masking.pii]
detectors = ["card"]

[[policy.masking.pii.patterns]]
name = "empty"
regex = "x*"
"#,
    );
    let err = Policy::compile(&config, &["shop"]).expect_err("bad profile");
    assert_eq!(err.errors.len(), 1, "{err}");
    assert!(err.errors[0].starts_with("policy.masking.pii: "), "{err}");
    assert!(err.errors[0].contains("empty"), "the rule is named: {err}");

    // No configured resources at all.
    let config = parse(
        "[[policy.rules]]\nname = \"r\"\ngroups = [\"g\"]\nresources = [\"shop\"]\naccess = \"allow\"",
    );
    let err = Policy::compile(&config, &[]).expect_err("unknown resource");
    assert_eq!(
        err.errors,
        ["rule \"r\": resources: \"shop\" is not a configured resource (none are configured)"]
    );
}

#[test]
fn toml_mistakes_are_parse_errors() {
    let unknown = "[[policy.rules]]\nname = \"r\"\ngroups = [\"g\"]\nresources = [\"*\"]\naccess = \"allow\"\nmax_sesion = \"1h\"";
    let err = toml::from_str::<File>(unknown)
        .err()
        .expect("unknown field");
    assert!(err.to_string().contains("max_sesion"), "{err}");
    let bad_access = "[[policy.rules]]\nname = \"r\"\ngroups = [\"g\"]\nresources = [\"*\"]\naccess = \"permit\"";
    let err = toml::from_str::<File>(bad_access)
        .err()
        .expect("bad access");
    assert!(err.to_string().contains("permit"), "{err}");
    let bad_duration = "[[policy.rules]]\nname = \"r\"\ngroups = [\"g\"]\nresources = [\"*\"]\naccess = \"allow\"\nmax_session = \"8 hourz\"";
    let err = toml::from_str::<File>(bad_duration)
        .err()
        .expect("bad duration");
    assert!(
        err.to_string().contains("invalid duration \"8 hourz\""),
        "{err}"
    );
    let hours_typo = "[[policy.rules]]\nname = \"r\"\ngroups = [\"g\"]\nresources = [\"*\"]\naccess = \"allow\"\nhours = { from = \"08:00\", to = \"18:00\", tz = \"+01:00\" }";
    let err = toml::from_str::<File>(hours_typo)
        .err()
        .expect("hours typo");
    assert!(err.to_string().contains("tz"), "{err}");
}

#[test]
fn config_round_trips_through_json() {
    let config = parse(POLICY);
    assert_eq!(
        config.default_max_grant,
        Some(Duration::from_secs(4 * 3600))
    );
    assert_eq!(config.rules.len(), 5);
    assert_eq!(config.rules[2].access, Access::Request);
    let json = serde_json::to_string(&config).expect("serialize");
    assert!(json.contains(r#""max_session":"8h""#), "{json}");
    assert!(json.contains(r#""access":"request""#), "{json}");
    let back: PolicyConfig = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, config);

    // Odd durations survive too.
    let mut odd = config.clone();
    odd.rules[0].max_session = Some(Duration::from_millis(5_400_250));
    let back: PolicyConfig =
        serde_json::from_str(&serde_json::to_string(&odd).expect("serialize")).expect("parse");
    assert_eq!(back, odd);

    // And the compiled policy keeps the configuration it came from.
    assert_eq!(policy().config(), &config);
}

#[test]
fn approvers() {
    let p = policy();
    let dba = groups(&["dba"]);
    let analysts = groups(&["analysts"]);
    let security = groups(&["security"]);
    let s = |g| Subject {
        user: "someone",
        groups: g,
    };
    assert!(p.may_approve(&s(&dba), "billing"));
    assert!(p.may_approve(&s(&dba), "audit"), "dba-all covers \"*\"");
    assert!(!p.may_approve(&s(&analysts), "billing"));
    assert!(
        p.may_approve(&s(&security), "shop"),
        "any access kind counts"
    );
    assert_eq!(p.approvers_for("billing"), ["security", "dba"]);
    assert_eq!(p.approvers_for("audit"), ["security", "dba"]);

    let only_named = Policy::compile(
        &parse(
            "[[policy.rules]]\nname = \"r\"\ngroups = [\"g\"]\nresources = [\"shop\"]\naccess = \"request\"\napprovers = [\"leads\", \"leads\"]",
        ),
        &["shop", "billing"],
    )
    .expect("valid");
    assert_eq!(only_named.approvers_for("shop"), ["leads"]);
    assert!(only_named.approvers_for("billing").is_empty());
}

#[test]
fn max_grant_precedence() {
    let p = policy();
    let analysts = groups(&["analysts"]);
    let bob = Subject {
        user: "bob",
        groups: &analysts,
    };
    assert_eq!(p.max_grant(&bob, "billing"), Duration::from_secs(2 * 3600));
    assert_eq!(p.max_grant(&bob, "shop"), Duration::from_secs(4 * 3600));
    let mut config = parse(POLICY);
    config.default_max_grant = None;
    let p = Policy::compile(&config, KNOWN).expect("valid");
    assert_eq!(p.max_grant(&bob, "shop"), DEFAULT_MAX_GRANT);
}

#[test]
fn explain_traces_rules_grants_and_revocations() {
    let p = policy();
    let g = groups(&["analysts"]);
    let bob = Subject {
        user: "bob",
        groups: &g,
    };
    let grants = [grant(
        "g1",
        "bob",
        "shop",
        TUE_0600 - 5 * HOUR,
        TUE_0600 - 4 * HOUR,
    )];
    let revs = [revocation("bob", Some("shop"), TUE_0600 - 3 * HOUR)];
    let e = p.explain(&bob, "shop", TUE_0730, TUE_0600 - HOUR, &grants, &revs);
    assert_eq!(e.matched_rule(), Some("analysts-read-shop"));
    let results: Vec<(&str, &RuleMatch)> = e
        .rules
        .iter()
        .map(|r| (r.rule.as_str(), &r.result))
        .collect();
    assert_eq!(
        results,
        [
            (
                "analysts-read-shop",
                &RuleMatch::InsideHours {
                    hours: "mon-fri 08:00-18:00 UTC+02:00".into(),
                    until_ms: Some(TUE_0600 + 10 * HOUR)
                }
            ),
            ("no-contractors", &RuleMatch::WrongSubject),
            ("billing-jit", &RuleMatch::WrongResource),
            ("dba-all", &RuleMatch::WrongSubject),
        ]
    );
    assert_eq!(e.grants.len(), 1);
    assert_eq!(e.grants[0].state, GrantState::Expired);
    assert_eq!(e.revocations.len(), 1);
    assert!(!e.revocations[0].applies);

    let text = e.to_string();
    assert!(
        text.ends_with("verdict: ALLOW, matched rule \"analysts-read-shop\""),
        "{text}"
    );
    assert!(text.contains("\"g1\" by \"dave\""), "{text}");
    assert!(
        text.contains("does not apply: the credential was issued after it"),
        "{text}"
    );
    assert!(
        text.contains("deny    \"no-contractors\": no match: covers \"shop\""),
        "{text}"
    );

    // A denial ends in its verdict too, after the message and the hint.
    let text = p
        .explain(&bob, "shop", SAT_1000, SAT_1000, &[], &[])
        .to_string();
    assert!(
        text.contains("would match, but outside hours mon-fri 08:00-18:00 UTC+02:00 (next window opens 2026-11-23 06:00 UTC)"),
        "{text}"
    );
    assert!(text.contains("\nhint: connect again"), "{text}");
    assert!(
        text.ends_with("verdict: DENY, matched rule \"analysts-read-shop\" (outside its hours)"),
        "{text}"
    );
    // The explanation serializes for --json.
    let json = serde_json::to_value(p.explain(&bob, "billing", TUE_0730, TUE_0730, &[], &[]))
        .expect("json");
    assert_eq!(
        json["decision"]["deny"]["kind"]["needs_approval"],
        "billing-jit"
    );
}

#[test]
fn summary_lists_groups_and_users() {
    let p = policy();
    let s = p.summary();
    let names: Vec<(PrincipalKind, &str)> = s.iter().map(|p| (p.kind, p.name.as_str())).collect();
    assert_eq!(
        names,
        [
            (PrincipalKind::Group, "analysts"),
            (PrincipalKind::Group, "contractors"),
            (PrincipalKind::Group, "dba"),
            (PrincipalKind::Group, "dev"),
            (PrincipalKind::Group, "security"),
            (PrincipalKind::User, "alice"),
        ]
    );
    let analysts = &s[0];
    assert_eq!(analysts.entries.len(), 2);
    assert_eq!(
        analysts.entries[0],
        SummaryEntry {
            resource: "shop".into(),
            access: Access::Allow,
            rule: "analysts-read-shop".into(),
            max_session: Some(Duration::from_secs(8 * 3600)),
            hours: Some("mon-fri 08:00-18:00 UTC+02:00".into()),
            masking: Some("pii".into()),
        }
    );
    assert_eq!(analysts.entries[1].access, Access::Request);
    let dba = &s[2];
    assert_eq!(dba.approves.len(), 2, "{dba:?}");
    assert_eq!(dba.approves[0].resource, "billing");
    assert_eq!(dba.approves[1].resource, "*");

    let text = render_summary(&s);
    assert!(text.starts_with("group analysts\n  allow   shop (rule \"analysts-read-shop\"; sessions end after 8h; hours mon-fri 08:00-18:00 UTC+02:00; masking \"pii\")\n"), "{text}");
    assert!(
        text.contains("group dba\n  allow   * (every resource) (rule \"dba-all\")\n  approves access to: billing (rule \"billing-jit\"), * (rule \"dba-all\")\n"),
        "{text}"
    );
    assert!(text.contains("user alice\n"), "{text}");

    let json = serde_json::to_value(&s).expect("json");
    assert_eq!(json[0]["kind"], "group");
    assert_eq!(json[0]["entries"][0]["max_session"], "8h");
}

// ---------------------------------------------------------------------------------------
// Statement rules ([[policy.statements]]).

use std::cell::Cell;

use sluice_classify::{Class, Classification, Flag, Flags, Statement};

const STATEMENTS: &str = r#"
[policy]
audit_literals = true

[[policy.rules]]
name = "everyone-shop"
groups = ["support", "eng", "dba"]
resources = ["shop", "billing"]
access = "allow"

[[policy.statements]]
name = "no-secrets"
groups = ["support", "eng"]
resources = ["*"]
tables = ["secret_*", "hr.salaries"]
access = "deny"

[[policy.statements]]
name = "support-read-only"
groups = ["support"]
resources = ["shop"]
classes = ["read", "transaction", "session"]
access = "allow"

[[policy.statements]]
name = "no-mass-delete"
groups = ["eng"]
resources = ["*"]
classes = ["write"]
flags = ["no_where"]
access = "deny"

[[policy.statements]]
name = "eng-hold-ddl"
groups = ["eng"]
resources = ["shop"]
classes = ["ddl"]
access = "request"
approvers = ["dba", "leads"]

[[policy.statements]]
name = "no-sleep"
users = ["alice"]
resources = ["shop"]
patterns = ["PG_SLEEP(", "generate_series("]
access = "deny"

[[policy.statements]]
name = "no-danger"
groups = ["eng"]
resources = ["*"]
flags = ["dangerous_function"]
access = "deny"

[[policy.statements]]
name = "eng-work"
groups = ["eng"]
resources = ["shop"]
access = "allow"

[[policy.statements]]
name = "dba-all"
groups = ["dba"]
resources = ["*"]
classes = ["*", "copy_program"]
access = "allow"

[[policy.statements]]
name = "never-unknown"
groups = ["dba"]
resources = ["billing"]
classes = ["unknown"]
access = "deny"
"#;

fn statement_policy() -> Policy {
    Policy::compile(&parse(STATEMENTS), KNOWN).unwrap_or_else(|e| panic!("{e}"))
}

/// A statement as the classifier would report it.
fn stmt(class: Class, command: &str) -> Statement {
    Statement {
        class,
        flags: Flags::default(),
        command: command.to_owned(),
        tables: Vec::new(),
        functions: Vec::new(),
        prepares: None,
        executes: None,
        deallocates: None,
        reason: None,
    }
}

fn on(mut s: Statement, tables: &[&str]) -> Statement {
    s.tables = tables.iter().map(|t| t.to_string()).collect();
    s
}

fn calling(mut s: Statement, functions: &[&str]) -> Statement {
    s.functions = functions.iter().map(|t| t.to_string()).collect();
    s
}

fn flagged(mut s: Statement, flag: Flag) -> Statement {
    s.flags.insert(flag);
    s
}

fn rules_for(p: &Policy, user: &str, groups: &[&str], resource: &str) -> SessionStatementRules {
    let g: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
    p.statement_rules(&Subject { user, groups: &g }, resource)
}

fn rule_of(d: &StatementDecision) -> Option<&str> {
    d.rule.as_deref()
}

#[test]
fn statements_first_matching_rule_wins() {
    let p = statement_policy();
    let eng = rules_for(&p, "erin", &["eng"], "shop");
    assert_eq!(
        eng.rule_names().collect::<Vec<_>>(),
        [
            "no-secrets",
            "no-mass-delete",
            "eng-hold-ddl",
            "no-danger",
            "eng-work"
        ]
    );
    let select = on(stmt(Class::Read, "SELECT"), &["orders"]);
    let d = eng.decide(&select, 1, b"select * from orders");
    assert_eq!(d.access, StatementAccess::Allow);
    assert_eq!(rule_of(&d), Some("eng-work"));
    assert!(d.message.is_empty() && d.hint.is_empty() && d.command.is_empty());

    // An earlier deny beats a later allow that also matches.
    let delete = flagged(on(stmt(Class::Write, "DELETE"), &["orders"]), Flag::NoWhere);
    let d = eng.decide(&delete, 1, b"delete from orders");
    assert_eq!(d.access, StatementAccess::Deny);
    assert_eq!(rule_of(&d), Some("no-mass-delete"));
    assert_eq!(
        d.message,
        "write statement (DELETE; no_where) denied for \"erin\" on \"shop\": statement rule \"no-mass-delete\" denies it"
    );
    assert!(d.hint.contains("ask an operator"), "{}", d.hint);
    assert_eq!(d.command, "DELETE");
    assert_eq!(d.class, Class::Write);
    // The same write with a WHERE falls through to the allow.
    let d = eng.decide(
        &on(stmt(Class::Write, "DELETE"), &["orders"]),
        1,
        b"delete from orders where id = 1",
    );
    assert_eq!(rule_of(&d), Some("eng-work"));
    // The secret-table deny comes first for every class.
    let d = eng.decide(&on(stmt(Class::Read, "SELECT"), &["secret_keys"]), 1, b"");
    assert_eq!(rule_of(&d), Some("no-secrets"));
}

#[test]
fn statements_default_deny_names_class_command_and_the_way_out() {
    let p = statement_policy();
    let bob = rules_for(&p, "bob", &["support"], "shop");
    let drop = on(stmt(Class::Ddl, "DROP TABLE"), &["orders"]);
    let d = bob.decide(&drop, 7, b"drop table orders");
    assert_eq!(d.access, StatementAccess::Deny);
    assert_eq!(d.rule, None);
    assert_eq!(
        d.message,
        "no statement rule lets \"bob\" run ddl statements (DROP TABLE) on \"shop\""
    );
    assert_eq!(
        d.hint,
        "ask an operator to add a [[policy.statements]] rule allowing ddl statements on \"shop\" for user \"bob\" or groups (support); `sluice policy explain --query` shows the rules considered"
    );
    // Reads are allowed on shop but not on billing, which no allow rule for support covers.
    let select = stmt(Class::Read, "SELECT");
    assert!(bob.decide(&select, 7, b"").is_allow());
    let billing = rules_for(&p, "bob", &["support"], "billing");
    assert_eq!(billing.rule_names().collect::<Vec<_>>(), ["no-secrets"]);
    assert_eq!(
        billing.decide(&select, 7, b"").access,
        StatementAccess::Deny
    );
    // Nobody named at all: every statement is denied.
    let nobody = rules_for(&p, "zed", &[], "shop");
    assert!(nobody.is_empty());
    let d = nobody.decide(&select, 7, b"");
    assert!(
        d.hint.contains("(your token carries no groups)"),
        "{}",
        d.hint
    );
    // So is everything under the empty policy.
    let d = Policy::default()
        .statement_rules(
            &Subject {
                user: "root",
                groups: &[],
            },
            "shop",
        )
        .decide(&select, 7, b"");
    assert_eq!(d.access, StatementAccess::Deny);
}

#[test]
fn statements_each_criterion() {
    let p = statement_policy();
    let eng = rules_for(&p, "erin", &["eng"], "shop");
    let read = || stmt(Class::Read, "SELECT");

    // tables: a glob without a dot matches the name part of a qualified table; one with a
    // dot needs the schema written.
    for (tables, denied) in [
        (&["secret_keys"][..], true),
        (&["vault.secret_keys"][..], true),
        (&["SECRET_KEYS"][..], true),
        (&["secrets"][..], false),
        (&["hr.salaries"][..], true),
        (&["shop.hr.salaries"][..], true),
        (&["salaries"][..], false),
        (&["public.salaries"][..], false),
        (&["orders", "hr.salaries"][..], true),
        (&[][..], false),
    ] {
        let d = eng.decide(&on(read(), tables), 1, b"");
        assert_eq!(
            rule_of(&d) == Some("no-secrets"),
            denied,
            "{tables:?}: {d:?}"
        );
    }

    // flags: any of them.
    let d = eng.decide(
        &flagged(stmt(Class::Write, "UPDATE"), Flag::RowLock),
        1,
        b"",
    );
    assert_eq!(rule_of(&d), Some("eng-work"));
    let d = eng.decide(
        &flagged(
            flagged(stmt(Class::Write, "UPDATE"), Flag::RowLock),
            Flag::NoWhere,
        ),
        1,
        b"",
    );
    assert_eq!(rule_of(&d), Some("no-mass-delete"));

    // classes: `eng-hold-ddl` takes only ddl.
    let d = eng.decide(&stmt(Class::Ddl, "CREATE TABLE"), 1, b"");
    assert_eq!(d.access, StatementAccess::Request);
    let d = eng.decide(&stmt(Class::Dcl, "GRANT"), 1, b"");
    assert_eq!(rule_of(&d), Some("eng-work"));

    // functions and fingerprints.
    let config = parse(
        r#"
[[policy.statements]]
name = "no-sleep-fn"
groups = ["g"]
resources = ["shop"]
functions = ["pg_sleep", "public.slow_*"]
access = "deny"

[[policy.statements]]
name = "known-report"
groups = ["g"]
resources = ["shop"]
classes = ["write"]
fingerprints = ["00000000000000ff", "9F2C0A1B3D4E5F60"]
access = "allow"

[[policy.statements]]
name = "reads"
groups = ["g"]
resources = ["shop"]
classes = ["read"]
access = "allow"
"#,
    );
    let p = Policy::compile(&config, KNOWN).expect("valid");
    let g = rules_for(&p, "u", &["g"], "shop");
    for (functions, denied) in [
        (&["pg_sleep"][..], true),
        (&["pg_catalog.pg_sleep"][..], true),
        (&["pg_sleep_for"][..], false),
        (&["count", "public.slow_report"][..], true),
        (&["slow_report"][..], false),
        (&["other.slow_report"][..], false),
    ] {
        let d = g.decide(&calling(read(), functions), 0, b"");
        assert_eq!(
            d.access == StatementAccess::Deny,
            denied,
            "{functions:?}: {d:?}"
        );
    }
    let insert = stmt(Class::Write, "INSERT");
    assert!(g.decide(&insert, 0xff, b"").is_allow());
    assert!(g.decide(&insert, 0x9f2c_0a1b_3d4e_5f60, b"").is_allow());
    assert!(!g.decide(&insert, 0xfe, b"").is_allow());
}

#[test]
fn statements_patterns_are_case_insensitive_substrings_of_the_raw_text() {
    let p = statement_policy();
    let alice = rules_for(&p, "alice", &["eng"], "shop");
    let select = calling(stmt(Class::Read, "SELECT"), &["pg_sleep"]);
    for (sql, denied) in [
        (&b"select pg_sleep(10)"[..], true),
        (b"SELECT PG_SLEEP(10)", true),
        (b"select Pg_Sleep(10)", true),
        (b"select * from generate_series(1, 1e9)", true),
        (b"select pg_sleep (10)", false),
        (b"select 1", false),
    ] {
        let d = alice.decide(&select, 1, sql);
        assert_eq!(
            rule_of(&d) == Some("no-sleep"),
            denied,
            "{}: {d:?}",
            String::from_utf8_lossy(sql)
        );
    }
    // The rule names alice only.
    let erin = rules_for(&p, "erin", &["eng"], "shop");
    assert!(erin.decide(&select, 1, b"select pg_sleep(10)").is_allow());
}

#[test]
fn statements_dangerous_functions_default_list_and_override() {
    let p = statement_policy();
    let eng = rules_for(&p, "erin", &["eng"], "shop");
    let d = eng.decide(
        &calling(
            stmt(Class::Read, "SELECT"),
            &["count", "pg_catalog.pg_read_file"],
        ),
        1,
        b"",
    );
    assert_eq!(rule_of(&d), Some("no-danger"));
    assert!(d.flags.contains(Flag::DangerousFunction));
    assert!(
        d.message.contains("(SELECT; dangerous_function)"),
        "{}",
        d.message
    );
    for f in [
        "dblink_exec",
        "lo_export",
        "set_config",
        "pg_terminate_backend",
    ] {
        let d = eng.decide(&calling(stmt(Class::Read, "SELECT"), &[f]), 1, b"");
        assert_eq!(rule_of(&d), Some("no-danger"), "{f}");
    }
    // The flag is reported on allowed statements too.
    let dba = rules_for(&p, "dora", &["dba"], "shop");
    let d = dba.decide(
        &calling(stmt(Class::Read, "SELECT"), &["pg_ls_dir"]),
        1,
        b"",
    );
    assert!(d.is_allow());
    assert_eq!(
        d.flags.iter().collect::<Vec<_>>(),
        [Flag::DangerousFunction]
    );
    let d = eng.decide(&calling(stmt(Class::Read, "SELECT"), &["pg_sleep"]), 1, b"");
    assert_eq!(rule_of(&d), Some("eng-work"));
    assert_eq!(p.dangerous_functions(), DEFAULT_DANGEROUS_FUNCTIONS);

    // An explicit list replaces the default one.
    let mut config = parse(STATEMENTS);
    config.dangerous_functions = Some(vec!["pg_sleep*".into()]);
    let p = Policy::compile(&config, KNOWN).expect("valid");
    let eng = rules_for(&p, "erin", &["eng"], "shop");
    let d = eng.decide(
        &calling(stmt(Class::Read, "SELECT"), &["pg_read_file"]),
        1,
        b"",
    );
    assert_eq!(rule_of(&d), Some("eng-work"));
    let d = eng.decide(
        &calling(stmt(Class::Read, "SELECT"), &["pg_sleep_for"]),
        1,
        b"",
    );
    assert_eq!(rule_of(&d), Some("no-danger"));
    assert_eq!(p.dangerous_functions(), ["pg_sleep*"]);
    // And an empty one means nothing is dangerous.
    config.dangerous_functions = Some(Vec::new());
    let p = Policy::compile(&config, KNOWN).expect("valid");
    let d = rules_for(&p, "erin", &["eng"], "shop").decide(
        &calling(stmt(Class::Read, "SELECT"), &["pg_sleep", "pg_read_file"]),
        1,
        b"",
    );
    assert_eq!(d.flags, Flags::default());
}

#[test]
fn statements_unknown_and_copy_program_need_naming_and_unknown_is_never_allowed() {
    let p = statement_policy();
    let dba = rules_for(&p, "dora", &["dba"], "shop");
    // copy_program is allowed only because dba-all names it.
    let copy = stmt(Class::CopyProgram, "COPY");
    assert_eq!(rule_of(&dba.decide(&copy, 1, b"")), Some("dba-all"));
    let eng = rules_for(&p, "erin", &["eng"], "shop");
    let d = eng.decide(&copy, 1, b"");
    assert_eq!((d.access, d.rule), (StatementAccess::Deny, None));

    // Unknown statements match no wildcard: denied, with the classifier's reason.
    let mut unknown = Statement::unknown("syntax error at or near \"SELEC\"");
    unknown.command = "UNKNOWN".into();
    for rules in [&dba, &eng] {
        let d = rules.decide(&unknown, 1, b"SELEC 1");
        assert_eq!(d.access, StatementAccess::Deny);
        assert_eq!(d.rule, None);
        assert!(
            d.message
                .ends_with("the gateway could not classify it (syntax error at or near \"SELEC\")"),
            "{}",
            d.message
        );
        assert!(d.hint.contains("never allowed"), "{}", d.hint);
    }
    // A deny rule may name unknown.
    let billing = rules_for(&p, "dora", &["dba"], "billing");
    let d = billing.decide(&unknown, 1, b"");
    assert_eq!(rule_of(&d), Some("never-unknown"));
    assert_eq!(
        d.message,
        "unknown statement (UNKNOWN) denied for \"dora\" on \"billing\": statement rule \"never-unknown\" denies it (not classified: syntax error at or near \"SELEC\")"
    );

    // No allow (or request) rule may name it.
    for access in ["allow", "request"] {
        let config = parse(&format!(
            "[[policy.statements]]\nname = \"u\"\ngroups = [\"g\"]\nresources = [\"*\"]\nclasses = [\"read\", \"unknown\"]\naccess = \"{access}\"\napprovers = {}",
            if access == "request" { "[\"dba\"]" } else { "[]" }
        ));
        let err = Policy::compile(&config, KNOWN).expect_err(access);
        assert_eq!(
            err.errors,
            ["statement rule \"u\": classes: \"unknown\" is only allowed in access = \"deny\" rules; statements Sluice cannot classify are never allowed or held"]
        );
    }
}

#[test]
fn statements_request_carries_approvers() {
    let p = statement_policy();
    let eng = rules_for(&p, "erin", &["eng"], "shop");
    let d = eng.decide(&stmt(Class::Ddl, "DROP TABLE"), 1, b"drop table t");
    assert_eq!(d.access, StatementAccess::Request);
    assert_eq!(rule_of(&d), Some("eng-hold-ddl"));
    assert_eq!(&*d.approvers, ["dba", "leads"]);
    assert_eq!(d.command, "DROP TABLE");
    assert_eq!(
        d.message,
        "ddl statement (DROP TABLE) by \"erin\" on \"shop\" is held for approval: statement rule \"eng-hold-ddl\" lets it run only once an approver (dba, leads) approves it"
    );
    assert!(d.hint.contains("dba, leads"), "{}", d.hint);
    assert_eq!(
        p.statement_rule_approvers("eng-hold-ddl"),
        Some(&["dba".to_owned(), "leads".to_owned()][..])
    );
    assert_eq!(
        p.statement_rule_approvers("eng-work"),
        None,
        "not a request rule"
    );
    assert_eq!(p.statement_rule_approvers("nope"), None);
    // Allowed and denied decisions carry none.
    assert!(eng
        .decide(&stmt(Class::Read, "SELECT"), 1, b"")
        .approvers
        .is_empty());
}

#[test]
fn statements_decide_all_refuses_the_whole_string() {
    let p = statement_policy();
    let eng = rules_for(&p, "erin", &["eng"], "shop");
    let all = |statements: Vec<Statement>| Classification {
        fingerprint: 1,
        normalized: String::new(),
        statements,
    };
    let read = stmt(Class::Read, "SELECT");
    let ddl = stmt(Class::Ddl, "DROP TABLE");
    let mass = flagged(stmt(Class::Write, "DELETE"), Flag::NoWhere);

    let d = eng.decide_all(&all(vec![read.clone(), read.clone()]), b"");
    assert!(d.is_allow());
    assert_eq!(rule_of(&d), Some("eng-work"));

    // A held statement holds the string; a denied one anywhere refuses it, even after a hold.
    let d = eng.decide_all(&all(vec![read.clone(), ddl.clone()]), b"");
    assert_eq!(d.access, StatementAccess::Request);
    assert!(
        d.message
            .ends_with("(statement 2 of 2: the whole query string is held)"),
        "{}",
        d.message
    );
    let d = eng.decide_all(
        &all(vec![ddl.clone(), read.clone(), mass.clone(), read]),
        b"",
    );
    assert_eq!(d.access, StatementAccess::Deny);
    assert_eq!(rule_of(&d), Some("no-mass-delete"));
    assert!(
        d.message
            .ends_with("(statement 3 of 4: the whole query string is refused)"),
        "{}",
        d.message
    );
    // One statement: no note.
    let d = eng.decide_all(&all(vec![mass]), b"");
    assert!(d.message.ends_with("denies it"), "{}", d.message);
    // No statement at all: allowed.
    let d = eng.decide_all(&all(Vec::new()), b"");
    assert!(d.is_allow());
    assert_eq!(d.rule, None);
}

#[test]
fn statements_validation_lists_every_problem() {
    let config = parse(
        r#"
[policy]
dangerous_functions = ["pg_read_file", "", "dblink[0-9]"]

[[policy.statements]]
name = "a"
groups = ["g"]
resources = ["shopp"]
classes = ["reed", "write"]
flags = ["no_were"]
tables = ["public.", "ok"]
functions = []
fingerprints = ["xyz", "00000000000000ff"]
patterns = ["ok", ""]
access = "allow"
approvers = ["dba"]

[[policy.statements]]
name = "a"
resources = []
access = "request"

[[policy.statements]]
groups = ["g"]
resources = ["*"]
classes = []
access = "deny"
"#,
    );
    let err = Policy::compile(&config, &["shop"]).expect_err("invalid");
    let expected = [
        "policy: dangerous_functions: \"\" is empty",
        "policy: dangerous_functions: \"dblink[0-9]\" uses '[': only `*` (any run of characters) and `?` (one character) are wildcards; list several globs instead",
        "statement rule \"a\": resources: \"shopp\" is not a configured resource (known: shop)",
        "statement rule \"a\": classes: unknown statement class \"reed\" (known: read, write, ddl, dcl, admin, transaction, session, copy_in, copy_out, copy_program, procedural, unknown), or \"*\"",
        "statement rule \"a\": flags: unknown statement flag \"no_were\" (known: no_where, row_lock, server_file, dangerous_function)",
        "statement rule \"a\": fingerprints: \"xyz\" is not a fingerprint; write the 16 hex digits `sluice policy explain --query` prints",
        "statement rule \"a\": tables: \"public.\" has an empty part around a dot",
        "statement rule \"a\": functions: is empty; list globs or omit it",
        "statement rule \"a\": patterns: contains an empty string, which would match every statement",
        "statement rule \"a\": approvers: applies only to access = \"request\" statement rules; remove it",
        "statement rule \"a\": name: also used by statement rule #1; names must be unique",
        "statement rule \"a\": groups, users: both are empty; name at least one group or user the rule applies to",
        "statement rule \"a\": resources: is empty; list resource names, or \"*\" for every resource",
        "statement rule \"a\": approvers: is empty; a statement rule with access = \"request\" needs the groups who approve held statements",
        "statement rule #3 (unnamed): name: is empty; every statement rule needs a unique name",
        "statement rule #3 (unnamed): classes: is empty; list classes, or omit it for every class but unknown and copy_program",
    ];
    assert_eq!(err.errors, expected, "{err}");

    // Statement rule names are their own namespace: a session rule may share one.
    let config = parse(
        "[[policy.rules]]\nname = \"r\"\ngroups = [\"g\"]\nresources = [\"shop\"]\naccess = \"allow\"\n[[policy.statements]]\nname = \"r\"\ngroups = [\"g\"]\nresources = [\"shop\"]\naccess = \"allow\"",
    );
    assert!(Policy::compile(&config, &["shop"]).is_ok());
    // A typo in a statement rule's field is a parse error.
    let typo = "[[policy.statements]]\nname = \"r\"\ngroups = [\"g\"]\nresources = [\"*\"]\naccess = \"allow\"\ntable = [\"t\"]";
    let err = toml::from_str::<File>(typo).err().expect("unknown field");
    assert!(err.to_string().contains("table"), "{err}");
}

#[test]
fn statements_config_round_trips_through_json() {
    let config = parse(STATEMENTS);
    assert!(config.audit_literals);
    assert_eq!(config.statements.len(), 9);
    assert_eq!(config.statements[3].access, Access::Request);
    let json = serde_json::to_string(&config).expect("serialize");
    let back: PolicyConfig = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, config);
    assert!(statement_policy().audit_literals());

    // Defaults stay out of the JSON, so older payloads and newer ones read the same.
    let plain = parse(POLICY);
    let json = serde_json::to_value(&plain).expect("serialize");
    for absent in ["statements", "audit_literals", "dangerous_functions"] {
        assert!(json.get(absent).is_none(), "{absent}: {json}");
    }
    assert!(!policy().audit_literals());
    let mut listed = plain.clone();
    listed.dangerous_functions = Some(Vec::new());
    let back: PolicyConfig =
        serde_json::from_str(&serde_json::to_string(&listed).expect("serialize")).expect("parse");
    assert_eq!(
        back.dangerous_functions,
        Some(Vec::new()),
        "[] is not the default list"
    );
}

#[test]
fn statements_explain_traces_every_rule() {
    let p = statement_policy();
    let g = groups(&["eng"]);
    let erin = Subject {
        user: "erin",
        groups: &g,
    };
    let classification = Classification {
        fingerprint: 0x9f2c_0a1b_3d4e_5f60,
        normalized: "select * from orders; drop table orders".into(),
        statements: vec![
            calling(on(stmt(Class::Read, "SELECT"), &["orders"]), &["pg_ls_dir"]),
            on(stmt(Class::Ddl, "DROP TABLE"), &["orders"]),
        ],
    };
    let sql = b"select *, pg_ls_dir('.') from orders; drop table orders";
    let e = p.explain_statements(&erin, "shop", &classification, sql);
    assert_eq!(e.fingerprint, "9f2c0a1b3d4e5f60");
    assert_eq!(e.statements.len(), 2);
    let first: Vec<(&str, &StatementRuleMatch)> = e.statements[0]
        .rules
        .iter()
        .map(|r| (r.rule.as_str(), &r.result))
        .collect();
    assert_eq!(first[0].0, "no-secrets");
    assert!(
        matches!(first[0].1, StatementRuleMatch::NoMatch { criterion: Criterion::Tables, detail } if detail == "none of its tables (orders) matches secret_*, hr.salaries"),
        "{first:?}"
    );
    assert_eq!(
        first[1],
        ("support-read-only", &StatementRuleMatch::WrongSubject)
    );
    assert!(matches!(
        first[2].1,
        StatementRuleMatch::NoMatch {
            criterion: Criterion::Classes,
            ..
        }
    ));
    assert_eq!(first[5], ("no-danger", &StatementRuleMatch::Decides));
    assert_eq!(first[6], ("eng-work", &StatementRuleMatch::AlsoMatches));
    assert_eq!(first[7], ("dba-all", &StatementRuleMatch::WrongSubject));
    assert_eq!(
        first.len(),
        8,
        "never-unknown neither names erin nor covers shop"
    );
    assert_eq!(e.statements[0].dangerous_functions, ["pg_ls_dir (pg_ls_*)"]);
    assert_eq!(e.statements[1].decision.access, StatementAccess::Request);
    assert_eq!(e.decision.access, StatementAccess::Deny);
    assert_eq!(e.decision.rule.as_deref(), Some("no-danger"));

    let text = e.to_string();
    for needle in [
        "statements for user \"erin\" (groups: eng) on resource \"shop\": 2 statements, fingerprint 9f2c0a1b3d4e5f60\n",
        "statement 1 of 2: SELECT (class read; flags: dangerous_function)\n  tables: orders; functions: pg_ls_dir\n  dangerous: pg_ls_dir (pg_ls_*)\n",
        "    deny    \"no-mass-delete\": no match: classes: read is not among write\n",
        "    deny    \"no-danger\": matches, decides\n",
        "    allow   \"eng-work\": matches too, but an earlier rule decided\n",
        "  verdict: DENY, matched statement rule \"no-danger\"\n",
        "    request \"eng-hold-ddl\": matches, decides\n",
        "  verdict: REQUEST, matched statement rule \"eng-hold-ddl\" (approvers: dba, leads)\n",
    ] {
        assert!(text.contains(needle), "{needle}\n---\n{text}");
    }
    assert!(
        text.ends_with("verdict for the query string: DENY: read statement (SELECT; dangerous_function) denied for \"erin\" on \"shop\": statement rule \"no-danger\" denies it (statement 1 of 2: the whole query string is refused)"),
        "{text}"
    );
    let json = serde_json::to_value(&e).expect("json");
    assert_eq!(json["statements"][0]["flags"][0], "dangerous_function");
    assert_eq!(
        json["statements"][0]["rules"][0]["result"]["result"],
        "no_match"
    );
    assert_eq!(
        json["statements"][0]["rules"][0]["result"]["criterion"],
        "tables"
    );
    assert_eq!(json["statements"][1]["decision"]["approvers"][1], "leads");
    assert_eq!(json["decision"]["access"], "deny");
    assert_eq!(json["decision"]["class"], "read");
}

#[test]
fn statements_summary_says_what_each_principal_may_run() {
    let p = statement_policy();
    let s = p.summary();
    let text = render_summary(&s);
    assert!(
        text.contains("group support\n  allow   shop (rule \"everyone-shop\")\n  allow   billing (rule \"everyone-shop\")\n  statements on * (every resource): deny * with tables secret_*, hr.salaries (rule \"no-secrets\")\n  statements on shop: allow read, transaction, session (rule \"support-read-only\")\n"),
        "{text}"
    );
    assert!(
        text.contains("  statements on shop: request ddl (rule \"eng-hold-ddl\", approvers dba, leads); allow * (rule \"eng-work\")\n"),
        "{text}"
    );
    assert!(
        text.contains("user alice\n  statements on shop: deny * with patterns \"PG_SLEEP(\", \"generate_series(\" (rule \"no-sleep\")\n"),
        "{text}"
    );
    assert!(
        text.contains("group leads\n  approves statements on: shop (rule \"eng-hold-ddl\")\n"),
        "{text}"
    );
    // A principal that may connect but is named by no statement rule is warned about.
    let text = render_summary(&policy().summary());
    assert!(
        text.contains("group analysts\n  allow   shop (rule \"analysts-read-shop\"; sessions end after 8h; hours mon-fri 08:00-18:00 UTC+02:00; masking \"pii\")\n  request billing (rule \"billing-jit\"; sessions end after 1h; masking \"pii-strict\")\n  statements: no statement rule names it"),
        "{text}"
    );
    let json = serde_json::to_value(&s).expect("json");
    let eng = s.iter().position(|p| p.name == "eng").expect("eng");
    assert_eq!(json[eng]["statements"][2]["approvers"][0], "dba");
}

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

/// Counts this thread's allocations, to prove the allow path allocates nothing.
struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// const-initialized thread-local Cell, which neither allocates nor re-enters it.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded with the caller's layout.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged.
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (out, ALLOCATIONS.with(Cell::get) - before)
}

#[test]
fn statements_allow_path_does_not_allocate() {
    let p = statement_policy();
    let eng = rules_for(&p, "alice", &["eng"], "shop");
    let select = calling(
        on(stmt(Class::Read, "SELECT"), &["public.orders"]),
        &["count"],
    );
    let sql = b"select count(*) from public.orders where id = $1";
    let (d, n) = allocations(|| eng.decide(&select, 42, sql));
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(n, 0, "an allowed statement allocated");
    let classification = Classification {
        fingerprint: 42,
        normalized: String::new(),
        statements: vec![select.clone(), select],
    };
    let (d, n) = allocations(|| eng.decide_all(&classification, sql));
    assert!(d.is_allow());
    assert_eq!(n, 0, "an allowed query string allocated");
    let copy = eng.clone();
    let (_, n) = allocations(|| copy.clone());
    assert_eq!(n, 0, "cloning the session's rules allocated");
    // The counter does count: a denial builds its message.
    let (d, n) = allocations(|| eng.decide(&stmt(Class::Ddl, "DROP TABLE"), 42, b""));
    assert!(!d.is_allow());
    assert!(n > 0);
}
