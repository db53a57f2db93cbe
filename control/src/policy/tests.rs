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
    ];
    assert_eq!(err.errors, expected, "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("invalid [policy]: 14 problems\n  - "),
        "{text}"
    );

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
