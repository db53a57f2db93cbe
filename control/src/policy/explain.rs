//! `sluice policy explain`: a decision together with the reasoning behind it.

use std::fmt;

use serde::Serialize;
use sluice_classify::{Class, Classification, Flag, Flags};

use super::hours::Window;
use super::statements::{ser_flags, wildcard_classes, Criterion};
use super::{
    covers_resource, format_utc, names_resource, names_subject, subject_matches, Access, Decision,
    DenyKind, Policy, StatementAccess, StatementDecision, Subject, Via,
};
use crate::state::{Grant, Revocation};

/// The outcome of [`Policy::explain`]: the decision and everything that was weighed.
/// `Display` prints a readable multi-line report ending in the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation<'a> {
    /// The principal asked about.
    pub user: String,
    /// Their groups.
    pub groups: Vec<String>,
    /// The resource asked about.
    pub resource: String,
    /// When the decision was taken (ms since the epoch).
    pub now_ms: u64,
    /// When the credential was issued (ms since the epoch).
    pub credential_issued_at_ms: u64,
    /// Every rule that covers the resource or names the principal, in file order.
    pub rules: Vec<RuleTrace>,
    /// The principal's grants on the resource.
    pub grants: Vec<GrantTrace>,
    /// The revocations covering the principal on the resource.
    pub revocations: Vec<RevocationTrace>,
    /// The decision, exactly as [`Policy::decide`] returns it.
    pub decision: Decision<'a>,
}

/// How one rule relates to the question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleTrace {
    /// The rule's name.
    pub rule: String,
    /// What the rule does.
    pub access: Access,
    /// Whether it matched, and if not, why not.
    pub result: RuleMatch,
}

/// Whether a rule matched the principal on the resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RuleMatch {
    /// It names the principal (or a group of theirs) and covers the resource.
    Matches,
    /// It matches and its time window is open.
    InsideHours {
        /// The window, e.g. `mon-fri 08:00-18:00 UTC+02:00`.
        hours: String,
        /// When the window closes, if ever.
        until_ms: Option<u64>,
    },
    /// It would match, but its time window is closed.
    OutsideHours {
        /// The window, e.g. `mon-fri 08:00-18:00 UTC+02:00`.
        hours: String,
        /// When the window opens next.
        next_ms: Option<u64>,
    },
    /// It covers the resource but names neither the user nor any of their groups.
    WrongSubject,
    /// It names the user or one of their groups but does not cover the resource.
    WrongResource,
}

/// One of the principal's grants on the resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantTrace {
    /// The grant's ID.
    pub id: String,
    /// Who made it.
    pub granted_by: String,
    /// When it starts.
    pub created_at_ms: u64,
    /// When it ends.
    pub expires_at_ms: u64,
    /// Whether it is in force at the time asked about.
    pub state: GrantState,
}

/// Whether a grant is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    /// In force.
    Active,
    /// Ended.
    Expired,
    /// Starts later.
    NotYetValid,
}

/// A revocation covering the principal on the resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevocationTrace {
    /// Who ordered it.
    pub by: String,
    /// The resource it names, or `None` for every resource.
    pub resource: Option<String>,
    /// When it was ordered.
    pub at_ms: u64,
    /// Why.
    pub reason: String,
    /// Whether it applies: it was ordered after the credential was issued.
    pub applies: bool,
}

impl Policy {
    /// Like [`decide`](Policy::decide), and also reports every rule that covers the
    /// resource or names the principal, and the grants and revocations considered.
    pub fn explain<'a>(
        &'a self,
        subject: &Subject<'_>,
        resource: &str,
        now_ms: u64,
        credential_issued_at_ms: u64,
        grants: &'a [Grant],
        revocations: &'a [Revocation],
    ) -> Explanation<'a> {
        let mut rules = Vec::new();
        for (i, rule) in self.config.rules.iter().enumerate() {
            let who = subject_matches(rule, subject);
            let what = covers_resource(rule, resource);
            let result = match (who, what) {
                (false, false) => continue,
                (false, true) => RuleMatch::WrongSubject,
                (true, false) => RuleMatch::WrongResource,
                (true, true) => match self.hours[i].as_ref() {
                    None => RuleMatch::Matches,
                    Some(h) => match h.check(now_ms) {
                        Window::Inside { until_ms } => RuleMatch::InsideHours {
                            hours: h.to_string(),
                            until_ms,
                        },
                        Window::Outside { next_ms } => RuleMatch::OutsideHours {
                            hours: h.to_string(),
                            next_ms,
                        },
                    },
                },
            };
            rules.push(RuleTrace {
                rule: rule.name.clone(),
                access: rule.access,
                result,
            });
        }
        let grants_seen = grants
            .iter()
            .filter(|g| g.user == subject.user && g.resource == resource)
            .map(|g| GrantTrace {
                id: g.id.clone(),
                granted_by: g.granted_by.clone(),
                created_at_ms: g.created_at_ms,
                expires_at_ms: g.expires_at_ms,
                state: if g.is_active(now_ms) {
                    GrantState::Active
                } else if now_ms < g.created_at_ms {
                    GrantState::NotYetValid
                } else {
                    GrantState::Expired
                },
            })
            .collect();
        let revocations_seen = revocations
            .iter()
            .filter(|r| r.covers(subject.user, resource))
            .map(|r| RevocationTrace {
                by: r.by.clone(),
                resource: r.resource.clone(),
                at_ms: r.at_ms,
                reason: r.reason.clone(),
                applies: r.at_ms > credential_issued_at_ms,
            })
            .collect();
        Explanation {
            user: subject.user.to_owned(),
            groups: subject.groups.to_vec(),
            resource: resource.to_owned(),
            now_ms,
            credential_issued_at_ms,
            rules,
            grants: grants_seen,
            revocations: revocations_seen,
            decision: self.decide(
                subject,
                resource,
                now_ms,
                credential_issued_at_ms,
                grants,
                revocations,
            ),
        }
    }
}

impl Explanation<'_> {
    /// The rule the decision rests on, if it rests on one.
    pub fn matched_rule(&self) -> Option<&str> {
        match &self.decision {
            Decision::Allow(a) => match a.via {
                Via::Rule(name) => Some(name),
                Via::Grant { .. } => None,
            },
            Decision::Deny(d) => match &d.kind {
                DenyKind::DeniedByRule(n)
                | DenyKind::OutsideHours(n)
                | DenyKind::NeedsApproval(n) => Some(n),
                DenyKind::Revoked | DenyKind::NoRule => None,
            },
        }
    }
}

impl fmt::Display for Explanation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups = if self.groups.is_empty() {
            "no groups".to_owned()
        } else {
            format!("groups: {}", self.groups.join(", "))
        };
        writeln!(
            f,
            "user {:?} ({groups}) on resource {:?} at {}, credential issued {}",
            self.user,
            self.resource,
            format_utc(self.now_ms),
            format_utc(self.credential_issued_at_ms)
        )?;

        writeln!(f, "rules:")?;
        if self.rules.is_empty() {
            writeln!(
                f,
                "  (no rule covers {:?} or names this user or their groups)",
                self.resource
            )?;
        }
        for r in &self.rules {
            write!(f, "  {:<7} {:?}: ", r.access.as_str(), r.rule)?;
            match &r.result {
                RuleMatch::Matches => writeln!(f, "matches")?,
                RuleMatch::InsideHours { hours, until_ms } => {
                    write!(f, "matches, inside hours {hours}")?;
                    match until_ms {
                        Some(t) => writeln!(f, " (window closes {})", format_utc(*t))?,
                        None => writeln!(f)?,
                    }
                }
                RuleMatch::OutsideHours { hours, next_ms } => {
                    write!(f, "would match, but outside hours {hours}")?;
                    match next_ms {
                        Some(t) => writeln!(f, " (next window opens {})", format_utc(*t))?,
                        None => writeln!(f)?,
                    }
                }
                RuleMatch::WrongSubject => writeln!(
                    f,
                    "no match: covers {:?} but names neither this user nor their groups",
                    self.resource
                )?,
                RuleMatch::WrongResource => writeln!(
                    f,
                    "no match: names this user or a group of theirs but not resource {:?}",
                    self.resource
                )?,
            }
        }

        writeln!(f, "grants for {:?} on {:?}:", self.user, self.resource)?;
        if self.grants.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for g in &self.grants {
            let state = match g.state {
                GrantState::Active => "active",
                GrantState::Expired => "expired",
                GrantState::NotYetValid => "not valid yet",
            };
            writeln!(
                f,
                "  {:?} by {:?}, {} to {}: {state}",
                g.id,
                g.granted_by,
                format_utc(g.created_at_ms),
                format_utc(g.expires_at_ms)
            )?;
        }

        writeln!(f, "revocations of {:?} on {:?}:", self.user, self.resource)?;
        if self.revocations.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for r in &self.revocations {
            let scope = match &r.resource {
                Some(res) => format!("on {res:?}"),
                None => "on every resource".to_owned(),
            };
            let applies = if r.applies {
                "applies: the credential predates it"
            } else {
                "does not apply: the credential was issued after it"
            };
            writeln!(
                f,
                "  by {:?} at {} {scope} ({:?}): {applies}",
                r.by,
                format_utc(r.at_ms),
                r.reason
            )?;
        }

        match &self.decision {
            Decision::Allow(a) => {
                let mut terms = Vec::new();
                if let Some(t) = a.valid_until_ms {
                    terms.push(format!("valid until {}", format_utc(t)));
                }
                if let Some(d) = a.max_session {
                    terms.push(format!(
                        "sessions end after {}",
                        humantime::format_duration(d)
                    ));
                }
                if let Some(m) = a.masking {
                    terms.push(format!("masking profile {m:?}"));
                }
                if terms.is_empty() {
                    terms.push("no time limit, no masking".to_owned());
                }
                writeln!(f, "terms: {}", terms.join("; "))?;
                match a.via {
                    Via::Rule(name) => write!(f, "verdict: ALLOW, matched rule {name:?}"),
                    Via::Grant { id, granted_by } => write!(
                        f,
                        "verdict: ALLOW via grant {id:?} (granted by {granted_by:?}), no allow rule matched"
                    ),
                }
            }
            Decision::Deny(d) => {
                writeln!(f, "message: {}", d.message)?;
                writeln!(f, "hint: {}", d.hint)?;
                match &d.kind {
                    DenyKind::Revoked => write!(f, "verdict: DENY, access revoked"),
                    DenyKind::DeniedByRule(n) => write!(f, "verdict: DENY, matched rule {n:?}"),
                    DenyKind::OutsideHours(n) => {
                        write!(f, "verdict: DENY, matched rule {n:?} (outside its hours)")
                    }
                    DenyKind::NeedsApproval(n) => write!(
                        f,
                        "verdict: DENY, matched rule {n:?} (needs an approved request)"
                    ),
                    DenyKind::NoRule => write!(f, "verdict: DENY, no rule matched"),
                }
            }
        }
    }
}

/// The outcome of [`Policy::explain_statements`]: how each statement of a query string
/// was classified and which statement rules were weighed for it. `Display` prints a
/// readable report ending in the verdict on the whole string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementExplanation {
    /// The principal asked about.
    pub user: String,
    /// Their groups.
    pub groups: Vec<String>,
    /// The resource asked about.
    pub resource: String,
    /// The query string's fingerprint, 16 hex digits (what `fingerprints` rules name).
    pub fingerprint: String,
    /// The normalized query text (literals replaced by placeholders).
    pub normalized: String,
    /// One entry per statement, in order.
    pub statements: Vec<StatementTrace>,
    /// The verdict on the whole string, exactly as [`SessionStatementRules::decide_all`]
    /// returns it.
    ///
    /// [`SessionStatementRules::decide_all`]: super::SessionStatementRules::decide_all
    pub decision: StatementDecision,
}

/// One statement of an explained query string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementTrace {
    /// Its command (`SELECT`, `DROP TABLE`, ...).
    pub command: String,
    /// Its class.
    pub class: Class,
    /// Its flags, `dangerous_function` included (a list of names).
    #[serde(serialize_with = "ser_flags")]
    pub flags: Flags,
    /// The tables it touches.
    pub tables: Vec<String>,
    /// The functions it calls.
    pub functions: Vec<String>,
    /// Those of its functions on the danger list, each with the glob it matched
    /// (`"pg_catalog.pg_ls_dir (pg_ls_*)"`).
    pub dangerous_functions: Vec<String>,
    /// Why it is `unknown`, if it is.
    pub reason: Option<String>,
    /// For `PREPARE name AS ...`: the name (what it prepares is judged when it runs).
    pub prepares: Option<String>,
    /// For `EXECUTE name`: the name (the gateway judges what the session prepared under it).
    pub executes: Option<String>,
    /// Every statement rule that covers the resource or names the principal, in file order.
    pub rules: Vec<StatementRuleTrace>,
    /// The verdict on this statement, exactly as
    /// [`SessionStatementRules::decide`](super::SessionStatementRules::decide) returns it.
    pub decision: StatementDecision,
}

/// How one statement rule relates to one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementRuleTrace {
    /// The rule's name.
    pub rule: String,
    /// What the rule does.
    pub access: Access,
    /// Whether it matched, and if not, why not.
    pub result: StatementRuleMatch,
}

/// Whether a statement rule matched a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum StatementRuleMatch {
    /// It matches, and it is the first that does: it decides.
    Decides,
    /// It matches too, but an earlier rule decided (the first match wins).
    AlsoMatches,
    /// It applies to the principal on the resource, but the statement fails a criterion.
    NoMatch {
        /// The first criterion the statement fails.
        criterion: Criterion,
        /// Why, in words: `ddl is not among read, transaction, session`.
        detail: String,
    },
    /// It covers the resource but names neither the user nor any of their groups.
    WrongSubject,
    /// It names the user or one of their groups but does not cover the resource.
    WrongResource,
}

impl Policy {
    /// Like [`SessionStatementRules::decide_all`](super::SessionStatementRules::decide_all)
    /// on [`statement_rules`](Policy::statement_rules)`(subject, resource)`, and also
    /// reports, for each statement of `classification`, every statement rule that covers
    /// the resource or names the principal, and why it did or did not match. `raw_sql` is
    /// the query text (for `patterns`).
    pub fn explain_statements(
        &self,
        subject: &Subject<'_>,
        resource: &str,
        classification: &Classification,
        raw_sql: &[u8],
    ) -> StatementExplanation {
        let session = self.statement_rules(subject, resource);
        let mut statements = Vec::with_capacity(classification.statements.len());
        for statement in &classification.statements {
            let flags = self.danger.flags_of(statement);
            let mut decided = false;
            let mut rules = Vec::new();
            for compiled in &self.statements {
                let config = &self.config.statements[compiled.index];
                let who = names_subject(&config.users, &config.groups, subject);
                let what = names_resource(&config.resources, resource);
                let result = match (who, what) {
                    (false, false) => continue,
                    (false, true) => StatementRuleMatch::WrongSubject,
                    (true, false) => StatementRuleMatch::WrongResource,
                    (true, true) => {
                        match compiled.check(statement, flags, classification.fingerprint, raw_sql)
                        {
                            Ok(()) if decided => StatementRuleMatch::AlsoMatches,
                            Ok(()) => {
                                decided = true;
                                StatementRuleMatch::Decides
                            }
                            Err(criterion) => StatementRuleMatch::NoMatch {
                                criterion,
                                detail: mismatch_detail(
                                    criterion,
                                    config,
                                    statement,
                                    flags,
                                    classification,
                                ),
                            },
                        }
                    }
                };
                rules.push(StatementRuleTrace {
                    rule: config.name.clone(),
                    access: config.access,
                    result,
                });
            }
            statements.push(StatementTrace {
                command: statement.command.clone(),
                class: statement.class,
                flags,
                tables: statement.tables.clone(),
                functions: statement.functions.clone(),
                dangerous_functions: statement
                    .functions
                    .iter()
                    .filter_map(|f| self.danger.matching(f).map(|g| format!("{f} ({g})")))
                    .collect(),
                reason: statement.reason.clone(),
                prepares: statement.prepares.as_ref().map(|(name, _)| name.clone()),
                executes: statement.executes.clone(),
                rules,
                decision: session.decide(statement, classification.fingerprint, raw_sql),
            });
        }
        StatementExplanation {
            user: subject.user.to_owned(),
            groups: subject.groups.to_vec(),
            resource: resource.to_owned(),
            fingerprint: classification.fingerprint_hex(),
            normalized: classification.normalized.clone(),
            statements,
            decision: session.decide_all(classification, raw_sql),
        }
    }
}

/// Why a statement fails `criterion` of a rule, in words.
fn mismatch_detail(
    criterion: Criterion,
    rule: &super::StatementRuleConfig,
    statement: &sluice_classify::Statement,
    flags: Flags,
    classification: &Classification,
) -> String {
    let list = |items: &Option<Vec<String>>| items.as_deref().unwrap_or_default().join(", ");
    let names = |items: &[String]| items.join(", ");
    match criterion {
        Criterion::Classes => {
            let class = statement.class;
            let classes = rule.classes.as_ref().map_or_else(
                || "* (absent: every class but unknown and copy_program)".to_owned(),
                |c| c.join(", "),
            );
            if class.bit() & wildcard_classes() == 0 {
                format!("{class} is not among {classes}; \"*\" never covers {class}, a rule must name it")
            } else {
                format!("{class} is not among {classes}")
            }
        }
        Criterion::Flags => {
            let has: Vec<&str> = flags.iter().map(Flag::as_str).collect();
            let has = if has.is_empty() {
                "none".to_owned()
            } else {
                has.join(", ")
            };
            format!(
                "the statement has none of {} (its flags: {has})",
                list(&rule.flags)
            )
        }
        Criterion::Fingerprints => format!(
            "fingerprint {} is not among {}",
            classification.fingerprint_hex(),
            list(&rule.fingerprints)
        ),
        Criterion::Tables if statement.tables.is_empty() => format!(
            "the statement touches no table (the rule wants one of {})",
            list(&rule.tables)
        ),
        Criterion::Tables => format!(
            "none of its tables ({}) matches {}",
            names(&statement.tables),
            list(&rule.tables)
        ),
        Criterion::Functions if statement.functions.is_empty() => format!(
            "the statement calls no function (the rule wants one of {})",
            list(&rule.functions)
        ),
        Criterion::Functions => format!(
            "none of its functions ({}) matches {}",
            names(&statement.functions),
            list(&rule.functions)
        ),
        Criterion::Patterns => format!(
            "the query text contains none of {}",
            rule.patterns
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl fmt::Display for StatementExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups = if self.groups.is_empty() {
            "no groups".to_owned()
        } else {
            format!("groups: {}", self.groups.join(", "))
        };
        let n = self.statements.len();
        writeln!(
            f,
            "statements for user {:?} ({groups}) on resource {:?}: {n} statement{}, fingerprint {}",
            self.user,
            self.resource,
            if n == 1 { "" } else { "s" },
            self.fingerprint
        )?;
        writeln!(f, "normalized: {}", self.normalized)?;
        for (i, s) in self.statements.iter().enumerate() {
            let flags: Vec<&str> = s.flags.iter().map(Flag::as_str).collect();
            let flags = if flags.is_empty() {
                "no flags".to_owned()
            } else {
                format!("flags: {}", flags.join(", "))
            };
            writeln!(
                f,
                "statement {} of {n}: {} (class {}; {flags})",
                i + 1,
                s.command,
                s.class
            )?;
            let none = |v: &[String]| {
                if v.is_empty() {
                    "(none)".to_owned()
                } else {
                    v.join(", ")
                }
            };
            writeln!(
                f,
                "  tables: {}; functions: {}",
                none(&s.tables),
                none(&s.functions)
            )?;
            if !s.dangerous_functions.is_empty() {
                writeln!(f, "  dangerous: {}", s.dangerous_functions.join(", "))?;
            }
            if let Some(r) = &s.reason {
                writeln!(f, "  not classified: {r}")?;
            }
            if let Some(name) = &s.prepares {
                writeln!(
                    f,
                    "  prepares {name:?}: what it prepares is judged again each time it is executed"
                )?;
            }
            if let Some(name) = &s.executes {
                writeln!(
                    f,
                    "  executes {name:?}: the gateway judges the statement the session prepared under that name, not this EXECUTE"
                )?;
            }
            writeln!(f, "  statement rules:")?;
            if s.rules.is_empty() {
                writeln!(
                    f,
                    "    (no statement rule covers {:?} or names this user or their groups)",
                    self.resource
                )?;
            }
            for r in &s.rules {
                write!(f, "    {:<7} {:?}: ", r.access.as_str(), r.rule)?;
                match &r.result {
                    StatementRuleMatch::Decides => writeln!(f, "matches, decides")?,
                    StatementRuleMatch::AlsoMatches => {
                        writeln!(f, "matches too, but an earlier rule decided")?
                    }
                    StatementRuleMatch::NoMatch { criterion, detail } => {
                        writeln!(f, "no match: {criterion}: {detail}")?
                    }
                    StatementRuleMatch::WrongSubject => writeln!(
                        f,
                        "no match: covers {:?} but names neither this user nor their groups",
                        self.resource
                    )?,
                    StatementRuleMatch::WrongResource => writeln!(
                        f,
                        "no match: names this user or a group of theirs but not resource {:?}",
                        self.resource
                    )?,
                }
            }
            write_verdict(f, "  ", &s.decision)?;
            writeln!(f)?;
        }
        let d = &self.decision;
        write!(f, "verdict for the query string: ")?;
        match d.access {
            StatementAccess::Allow if n == 0 => write!(f, "ALLOW (no statement)"),
            StatementAccess::Allow => write!(f, "ALLOW, every statement is allowed"),
            StatementAccess::Deny => write!(f, "DENY: {}", d.message),
            StatementAccess::Request => write!(f, "REQUEST: {}", d.message),
        }
    }
}

fn write_verdict(f: &mut fmt::Formatter<'_>, indent: &str, d: &StatementDecision) -> fmt::Result {
    if d.access != StatementAccess::Allow {
        writeln!(f, "{indent}message: {}", d.message)?;
        writeln!(f, "{indent}hint: {}", d.hint)?;
    }
    let rule = match &d.rule {
        Some(r) => format!("matched statement rule {:?}", &**r),
        None => "no statement rule matched".to_owned(),
    };
    match d.access {
        StatementAccess::Allow => write!(f, "{indent}verdict: ALLOW, {rule}"),
        StatementAccess::Deny => write!(f, "{indent}verdict: DENY, {rule}"),
        StatementAccess::Request => write!(
            f,
            "{indent}verdict: REQUEST, {rule} (approvers: {})",
            d.approvers.join(", ")
        ),
    }
}
