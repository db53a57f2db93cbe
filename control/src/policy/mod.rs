//! Access policy: the `[policy]` section of `sluice.toml` and the pure decisions "may this
//! principal open (or keep) a session on this resource now, and under what terms" and "may
//! this statement run in that session, be refused, or wait for an approver".
//!
//! Nothing here does I/O or reads the clock: the caller passes `now_ms` (milliseconds since
//! the Unix epoch, UTC) and the live grants and revocations, so control and the proxy reach
//! the same answer from the same snapshot.
//!
//! # The policy file
//!
//! ```toml
//! [policy]
//! default_max_grant = "8h"          # longest JIT grant when a request rule sets no max_grant
//!
//! [[policy.rules]]
//! name = "analysts-read-shop"       # required, unique
//! groups = ["analysts"]             # who: members of any of these groups ...
//! users = ["alice"]                 # ... or any of these users (at least one list non-empty)
//! resources = ["shop"]              # resource names, or "*" for every resource
//! access = "allow"                  # allow | deny | request
//! approvers = ["dba"]               # groups who may approve requests / grant directly
//! max_session = "8h"                # sessions let in by this rule end after this long
//! masking = "pii"                   # masking profile for those sessions
//! hours = { days = ["mon","tue","wed","thu","fri"], from = "08:00", to = "18:00", utc_offset = "+02:00" }
//!
//! # Functions whose call sets the `dangerous_function` flag (globs). Absent: the default
//! # list (DEFAULT_DANGEROUS_FUNCTIONS); present, it replaces that list.
//! dangerous_functions = ["pg_read_file", "pg_ls_*", "dblink*"]
//! audit_literals = false            # audit events keep normalized text (no literal values)
//!
//! [[policy.statements]]
//! name = "support-read-only"        # required, unique among statement rules
//! groups = ["support"]              # who, as for [[policy.rules]]
//! users = []
//! resources = ["*"]                 # where: resource names, or "*"
//! classes = ["read", "transaction", "session"]  # "*" = all but unknown and copy_program
//! flags = ["no_where"]              # any of: no_where, row_lock, server_file, dangerous_function
//! tables = ["public.orders", "secret_*"]        # globs; any table of the statement
//! functions = ["pg_sleep"]          # globs; any function it calls
//! fingerprints = ["9f2c0a1b3d4e5f60"]           # its query string's fingerprint
//! patterns = ["pg_sleep("]          # substrings of the raw text, ASCII case-insensitive
//! access = "allow"                  # allow | deny | request
//! approvers = ["dba"]               # request only (and required there): who approves
//! ```
//!
//! `access = "request"` rules need `approvers` and may set `max_grant`; `hours` applies to
//! `allow` rules only. [`Policy::compile`] checks a [`PolicyConfig`] against the configured
//! resources and reports every problem at once ([`PolicyErrors`]). An empty policy denies
//! everything.
//!
//! A rule **matches** a principal on a resource when the user is in its `users` or any of
//! the principal's groups is in its `groups`, *and* the resource is in its `resources` (or
//! it lists `"*"`). Names are compared exactly (case-sensitive).
//!
//! # Precedence
//!
//! [`Policy::decide`] applies these steps in order; the first that applies decides:
//!
//! 1. **Revocation.** A [`Revocation`] of the user on this resource (or on every resource)
//!    ordered *after* the credential was issued denies ([`DenyKind::Revoked`]). For a new
//!    session the caller passes the token's issue time; for a live session, the time the
//!    session started. A credential issued after the revocation is judged by the policy again.
//! 2. **Deny rules.** Any matching `deny` rule denies ([`DenyKind::DeniedByRule`]). Nothing,
//!    not even a grant, overrides it.
//! 3. **Allow rules.** The first matching `allow` rule (in file order) whose `hours`, if
//!    any, contain now allows ([`Via::Rule`]), with that rule's `max_session` and
//!    `masking`; the session is valid until its time window closes.
//! 4. **Grants.** An active just-in-time [`Grant`] for this user and resource allows
//!    ([`Via::Grant`]) until the grant expires. The session takes `max_session` and
//!    `masking` from the first matching `request` rule, or, if the grant was made to someone
//!    no request rule names, from the first `request` rule covering the resource; with no
//!    request rule, none.
//! 5. **Outside hours.** A matching `allow` rule whose window is closed denies
//!    ([`DenyKind::OutsideHours`]), saying when the next window opens.
//! 6. **Request rules.** A matching `request` rule denies until a grant is approved
//!    ([`DenyKind::NeedsApproval`]), telling the user how to ask.
//! 7. **No rule.** Otherwise access is denied ([`DenyKind::NoRule`]).
//!
//! Every denial carries a one-sentence message naming the user, the resource and the
//! reason, and a hint saying how to get access; the proxy sends them as the error's message
//! and `HINT`.
//!
//! # Statements
//!
//! Once a session is open, each statement the client sends is classified
//! (`sluice_classify`: a [`Class`](sluice_classify::Class) such as `read` or `ddl`, flags,
//! tables, functions, a fingerprint) and judged by the `[[policy.statements]]` rules. At
//! session start (and whenever the snapshot changes) [`Policy::statement_rules`] picks the
//! rules that name the principal (user, or one of their groups) and cover the resource;
//! [`SessionStatementRules::decide`] then judges each statement:
//!
//! 1. The **first matching rule**, in file order, decides: `allow` runs the statement,
//!    `deny` refuses it, `request` holds it until one of the rule's `approvers` approves it.
//!    A rule matches when every criterion it sets (`classes`, `flags`, `tables`,
//!    `functions`, `fingerprints`, `patterns`) matches, each being "any of". Put narrow
//!    `deny` rules before broad `allow` rules.
//! 2. **No rule**: the statement is denied, with a message naming the user, the class, the
//!    command and the resource, and a hint to ask for a rule.
//!
//! `classes = ["*"]`, like leaving `classes` out, means every class except `unknown` and
//! `copy_program`: a rule must name those. Only `deny` rules may name `unknown`, so a
//! statement Sluice cannot classify is never run or held; it is denied with the reason
//! (usually the parse error). The `dangerous_function` flag is set here, not by the
//! classifier, from the statement's functions and `dangerous_functions`
//! ([`DEFAULT_DANGEROUS_FUNCTIONS`] when absent). A query string holding several statements
//! is judged as a whole ([`SessionStatementRules::decide_all`]): one denied statement
//! refuses all of it, since PostgreSQL runs it as one implicit transaction; otherwise one
//! held statement holds all of it.
//!
//! Statement rules apply on top of the session decision above, never instead of it: a
//! grant or an allow rule lets a principal connect, and with no `[[policy.statements]]`
//! rule naming them every statement they send is denied.
//!
//! [`Policy::explain`] gives the same decision with a trace of every rule, grant and
//! revocation considered (`sluice policy explain`), and [`Policy::explain_statements`] does
//! the same for each statement of a query string (`sluice policy explain --query`).
//! [`Policy::summary`] lists what each group and user named in the policy may do, sessions
//! and statements (`sluice policy check`).

#![deny(missing_docs)]

mod config;
mod explain;
mod hours;
mod statements;
mod summary;
#[cfg(test)]
mod tests;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::state::{Grant, Revocation};
use config::opt_duration;
use hours::{Hours, Window};
use statements::{DangerList, StatementRule};

pub use config::{Access, HoursConfig, PolicyConfig, RuleConfig, StatementRuleConfig};
pub use explain::{
    Explanation, GrantState, GrantTrace, RevocationTrace, RuleMatch, RuleTrace,
    StatementExplanation, StatementRuleMatch, StatementRuleTrace, StatementTrace,
};
pub use hours::format_utc;
pub use statements::{
    Criterion, SessionStatementRules, StatementAccess, StatementDecision,
    DEFAULT_DANGEROUS_FUNCTIONS,
};
pub use summary::{
    render_summary, PrincipalKind, PrincipalSummary, StatementSummaryEntry, SummaryApproval,
    SummaryEntry,
};

/// Longest just-in-time grant when neither the request rule nor the policy says (8 hours).
pub const DEFAULT_MAX_GRANT: Duration = Duration::from_secs(8 * 3600);

/// Every problem found in a [`PolicyConfig`], each naming the rule and the field, e.g.
/// `rule "x": resources: "shopp" is not a configured resource (known: shop, billing)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors {
    /// The problems, in file order.
    pub errors: Vec<String>,
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "invalid [policy]: {n} problem{}",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// Who is asking: the token's subject and groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The principal (token subject).
    pub user: &'a str,
    /// The principal's groups (from the token's groups claim).
    pub groups: &'a [String],
}

/// The outcome of [`Policy::decide`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision<'a> {
    /// The session may open (or continue) on these terms.
    Allow(Allowed<'a>),
    /// It may not; the message and hint are for the user.
    Deny(Denied),
}

impl Decision<'_> {
    /// Whether access is allowed.
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// Terms of an allowed session. Strings borrow from the policy or the grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allowed<'a> {
    /// What allowed it.
    pub via: Via<'a>,
    /// The session must end at this time (end of the rule's time window, or the grant's
    /// expiry); `None` when nothing limits it in time.
    pub valid_until_ms: Option<u64>,
    /// The session must end this long after it started, if set.
    #[serde(serialize_with = "opt_duration::serialize")]
    pub max_session: Option<Duration>,
    /// Masking profile to apply, if any.
    pub masking: Option<&'a str>,
}

/// What allowed a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via<'a> {
    /// An `allow` rule, by name.
    Rule(&'a str),
    /// A just-in-time grant.
    Grant {
        /// The grant's ID.
        id: &'a str,
        /// Who made it.
        granted_by: &'a str,
    },
}

/// Why access was refused, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denied {
    /// The reason, for programs and audit records.
    pub kind: DenyKind,
    /// One sentence naming the user, the resource and the reason.
    pub message: String,
    /// How to get access (or why asking will not help).
    pub hint: String,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (hint: {})", self.message, self.hint)
    }
}

/// The reason for a [`Denied`]; see the module documentation for the precedence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyKind {
    /// A revocation ordered after the credential was issued.
    Revoked,
    /// A `deny` rule, by name.
    DeniedByRule(String),
    /// An `allow` rule (by name) whose time window is closed.
    OutsideHours(String),
    /// A `request` rule (by name): access needs an approved grant.
    NeedsApproval(String),
    /// No rule matches.
    NoRule,
}

/// A checked, indexed policy. Cheap to evaluate: rules are looked up by resource, and an
/// allowed decision allocates nothing.
#[derive(Debug, Clone)]
pub struct Policy {
    config: PolicyConfig,
    /// Compiled `hours` of each rule, index-aligned with `config.rules`.
    hours: Vec<Option<Hours>>,
    /// Resource name → indices of the rules covering it (naming it or `"*"`), file order.
    by_resource: HashMap<String, Vec<usize>>,
    /// Indices of the `"*"` rules, for resources no rule names.
    wildcard: Vec<usize>,
    /// Compiled statement rules, index-aligned with `config.statements`.
    statements: Vec<Arc<StatementRule>>,
    /// The compiled `dangerous_functions` (or the default list).
    danger: Arc<DangerList>,
    /// The empty approver list shared by every non-request statement decision.
    no_approvers: Arc<[String]>,
}

impl Default for Policy {
    /// The empty policy, which denies everything.
    fn default() -> Policy {
        Policy {
            config: PolicyConfig::default(),
            hours: Vec::new(),
            by_resource: HashMap::new(),
            wildcard: Vec::new(),
            statements: Vec::new(),
            danger: Arc::new(DangerList::default_list()),
            no_approvers: Arc::from(Vec::new()),
        }
    }
}

/// What one pass over the rules covering a resource found for a subject.
struct Scan {
    deny: Option<usize>,
    /// First allow rule open now, and when its window closes.
    allow: Option<(usize, Option<u64>)>,
    /// The closed allow rule whose window opens first, and when.
    outside: Option<(usize, Option<u64>)>,
    request: Option<usize>,
}

impl Policy {
    /// Checks `config` against the configured resource names and builds the indexed
    /// policy, or lists every problem found.
    pub fn compile(
        config: &PolicyConfig,
        known_resources: &[&str],
    ) -> Result<Policy, PolicyErrors> {
        let mut errors = Vec::new();
        if config.default_max_grant == Some(Duration::ZERO) {
            errors.push(
                "policy: default_max_grant: must be longer than zero (omit it for 8h)".to_owned(),
            );
        }
        let known = if known_resources.is_empty() {
            "none are configured".to_owned()
        } else {
            format!("known: {}", known_resources.join(", "))
        };
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut hours = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.iter().enumerate() {
            let who = if rule.name.is_empty() {
                format!("rule #{} (unnamed)", i + 1)
            } else {
                format!("rule {:?}", rule.name)
            };
            if rule.name.trim().is_empty() {
                errors.push(format!(
                    "{who}: name: is empty; every rule needs a unique name"
                ));
            } else {
                match names.entry(&rule.name) {
                    Entry::Occupied(first) => errors.push(format!(
                        "{who}: name: also used by rule #{}; names must be unique",
                        first.get() + 1
                    )),
                    Entry::Vacant(slot) => {
                        slot.insert(i);
                    }
                }
            }
            check_rule(rule, &who, known_resources, &known, &mut errors);
            hours.push(
                rule.hours
                    .as_ref()
                    .and_then(|h| Hours::compile(h, &who, &mut errors)),
            );
        }
        let danger = match &config.dangerous_functions {
            Some(list) => DangerList::compile(list, &mut errors),
            None => DangerList::default_list(),
        };
        let statements = compile_statements(config, known_resources, &known, &mut errors);
        check_masking(config, &mut errors);
        if !errors.is_empty() {
            return Err(PolicyErrors { errors });
        }

        let mut by_resource: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard = Vec::new();
        for (i, rule) in config.rules.iter().enumerate() {
            for r in &rule.resources {
                let list = if r == "*" {
                    &mut wildcard
                } else {
                    by_resource.entry(r.clone()).or_default()
                };
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        for list in by_resource.values_mut() {
            list.extend_from_slice(&wildcard);
            list.sort_unstable();
            list.dedup();
        }
        Ok(Policy {
            config: config.clone(),
            hours,
            by_resource,
            wildcard,
            statements,
            danger: Arc::new(danger),
            no_approvers: Arc::from(Vec::new()),
        })
    }

    /// The configuration the policy was compiled from.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Indices of the rules covering `resource`, in file order.
    fn rules_for(&self, resource: &str) -> &[usize] {
        self.by_resource
            .get(resource)
            .map_or(self.wildcard.as_slice(), Vec::as_slice)
    }

    fn scan(&self, subject: &Subject<'_>, resource: &str, now_ms: u64) -> Scan {
        let mut scan = Scan {
            deny: None,
            allow: None,
            outside: None,
            request: None,
        };
        for &i in self.rules_for(resource) {
            let rule = &self.config.rules[i];
            if !subject_matches(rule, subject) {
                continue;
            }
            match rule.access {
                Access::Deny => {
                    scan.deny = Some(i);
                    return scan;
                }
                Access::Request => {
                    scan.request.get_or_insert(i);
                }
                Access::Allow => match self.hours[i].as_ref().map(|h| h.check(now_ms)) {
                    None => {
                        scan.allow.get_or_insert((i, None));
                    }
                    Some(Window::Inside { until_ms }) => {
                        scan.allow.get_or_insert((i, until_ms));
                    }
                    Some(Window::Outside { next_ms }) => {
                        let sooner = match scan.outside {
                            None => true,
                            Some((_, best)) => {
                                next_ms.unwrap_or(u64::MAX) < best.unwrap_or(u64::MAX)
                            }
                        };
                        if sooner {
                            scan.outside = Some((i, next_ms));
                        }
                    }
                },
            }
        }
        scan
    }

    /// May `subject` open (or keep) a session on `resource` at `now_ms`, and on what terms?
    ///
    /// `credential_issued_at_ms` is the token's issue time for a new session, or the
    /// session's start for a live one; revocations ordered after it apply. `grants` and
    /// `revocations` may hold records for other users and resources; they are filtered here.
    /// See the module documentation for the precedence.
    pub fn decide<'a>(
        &'a self,
        subject: &Subject<'_>,
        resource: &str,
        now_ms: u64,
        credential_issued_at_ms: u64,
        grants: &'a [Grant],
        revocations: &'a [Revocation],
    ) -> Decision<'a> {
        let user = subject.user;
        if let Some(rev) = revocations
            .iter()
            .filter(|r| r.at_ms > credential_issued_at_ms && r.covers(user, resource))
            .max_by_key(|r| r.at_ms)
        {
            return Decision::Deny(revoked(user, resource, rev));
        }
        let scan = self.scan(subject, resource, now_ms);
        if let Some(i) = scan.deny {
            let name = &self.config.rules[i].name;
            return Decision::Deny(Denied {
                kind: DenyKind::DeniedByRule(name.clone()),
                message: format!(
                    "access to resource {resource:?} denied for {user:?}: rule {name:?} denies it"
                ),
                hint: format!(
                    "rule {name:?} of the gateway policy forbids this and grants cannot override it; ask an operator to change the policy if you need access"
                ),
            });
        }
        if let Some((i, until)) = scan.allow {
            let rule = &self.config.rules[i];
            return Decision::Allow(Allowed {
                via: Via::Rule(&rule.name),
                valid_until_ms: until,
                max_session: rule.max_session,
                masking: rule.masking.as_deref(),
            });
        }
        if let Some(grant) = active_grant(grants, user, resource, now_ms) {
            let terms = scan.request.or_else(|| {
                self.rules_for(resource)
                    .iter()
                    .copied()
                    .find(|&i| self.config.rules[i].access == Access::Request)
            });
            let terms = terms.map(|i| &self.config.rules[i]);
            return Decision::Allow(Allowed {
                via: Via::Grant {
                    id: &grant.id,
                    granted_by: &grant.granted_by,
                },
                valid_until_ms: Some(grant.expires_at_ms),
                max_session: terms.and_then(|r| r.max_session),
                masking: terms.and_then(|r| r.masking.as_deref()),
            });
        }
        if let Some((i, next)) = scan.outside {
            return Decision::Deny(self.outside_hours(subject, resource, i, next, scan.request));
        }
        if let Some(i) = scan.request {
            return Decision::Deny(self.needs_approval(subject, resource, i, now_ms, grants));
        }
        Decision::Deny(self.no_rule(subject, resource))
    }

    fn request_hint(&self, subject: &Subject<'_>, resource: &str, rule: &RuleConfig) -> String {
        let span = self
            .max_grant(subject, resource)
            .min(Duration::from_secs(3600));
        format!(
            "run: sluice access request --resource {resource} --for {} --reason \"...\" (approvers: {})",
            humantime::format_duration(span),
            rule.approvers.join(", ")
        )
    }

    fn outside_hours(
        &self,
        subject: &Subject<'_>,
        resource: &str,
        i: usize,
        next: Option<u64>,
        request: Option<usize>,
    ) -> Denied {
        let rule = &self.config.rules[i];
        let user = subject.user;
        let window = self.hours[i]
            .as_ref()
            .map_or_else(String::new, |h| format!(" during {h}"));
        let (opens, when) = match next {
            Some(ms) => {
                let t = format_utc(ms);
                (format!("; the next window opens {t}"), format!("from {t}"))
            }
            None => (String::new(), "later".to_owned()),
        };
        let hint = match request.map(|r| &self.config.rules[r]) {
            Some(req) => format!(
                "connect again {when}; for access now, {}",
                self.request_hint(subject, resource, req)
            ),
            None => format!("connect again {when}"),
        };
        Denied {
            kind: DenyKind::OutsideHours(rule.name.clone()),
            message: format!(
                "access to resource {resource:?} denied for {user:?}: rule {:?} allows it only{window}{opens}",
                rule.name
            ),
            hint,
        }
    }

    fn needs_approval(
        &self,
        subject: &Subject<'_>,
        resource: &str,
        i: usize,
        now_ms: u64,
        grants: &[Grant],
    ) -> Denied {
        let rule = &self.config.rules[i];
        let user = subject.user;
        let lapsed = grants
            .iter()
            .filter(|g| g.user == user && g.resource == resource && g.expires_at_ms <= now_ms)
            .max_by_key(|g| g.expires_at_ms)
            .map_or_else(String::new, |g| {
                format!(
                    " (grant {:?} expired at {})",
                    g.id,
                    format_utc(g.expires_at_ms)
                )
            });
        Denied {
            kind: DenyKind::NeedsApproval(rule.name.clone()),
            message: format!(
                "access to resource {resource:?} denied for {user:?}: rule {:?} allows it only with an approved access request{lapsed}",
                rule.name
            ),
            hint: self.request_hint(subject, resource, rule),
        }
    }

    fn no_rule(&self, subject: &Subject<'_>, resource: &str) -> Denied {
        let user = subject.user;
        let groups = if subject.groups.is_empty() {
            "(your token carries no groups)".to_owned()
        } else {
            format!("({})", subject.groups.join(", "))
        };
        let approvers = self.approvers_for(resource);
        let approver_hint = if approvers.is_empty() {
            String::new()
        } else {
            format!(
                ", or ask an approver ({}) for a just-in-time grant",
                approvers.join(", ")
            )
        };
        Denied {
            kind: DenyKind::NoRule,
            message: format!(
                "access to resource {resource:?} denied for {user:?}: no policy rule names this user or any of their groups for it"
            ),
            hint: format!(
                "no rule covers {resource:?} for user {user:?} or groups {groups}; ask an operator to add a [[policy.rules]] entry{approver_hint}"
            ),
        }
    }

    /// Whether `approver` (by group) may approve access requests for, or grant access
    /// directly to, `resource`: one of their groups is among the `approvers` of a rule
    /// covering the resource (of any access kind).
    pub fn may_approve(&self, approver: &Subject<'_>, resource: &str) -> bool {
        self.rules_for(resource).iter().any(|&i| {
            self.config.rules[i]
                .approvers
                .iter()
                .any(|a| approver.groups.iter().any(|g| g == a))
        })
    }

    /// The approver groups for `resource` (from every rule covering it), without
    /// duplicates, in file order.
    pub fn approvers_for(&self, resource: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for &i in self.rules_for(resource) {
            for a in &self.config.rules[i].approvers {
                if !out.contains(&a.as_str()) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// The statement rules that can apply to `subject` on `resource` (they name the user
    /// or a group of theirs, and cover the resource), in file order, ready for
    /// [`SessionStatementRules::decide`]. Taken at session start and again whenever the
    /// snapshot changes.
    pub fn statement_rules(&self, subject: &Subject<'_>, resource: &str) -> SessionStatementRules {
        let rules: Vec<Arc<StatementRule>> = self
            .statements
            .iter()
            .filter(|r| {
                let c = &self.config.statements[r.index];
                names_subject(&c.users, &c.groups, subject)
                    && names_resource(&c.resources, resource)
            })
            .cloned()
            .collect();
        SessionStatementRules {
            rules: rules.into(),
            danger: Arc::clone(&self.danger),
            user: Arc::from(subject.user),
            groups: Arc::from(subject.groups),
            resource: Arc::from(resource),
            no_approvers: Arc::clone(&self.no_approvers),
        }
    }

    /// The approver groups of the `access = "request"` statement rule named `rule`, or
    /// `None` when there is no such rule.
    pub fn statement_rule_approvers(&self, rule: &str) -> Option<&[String]> {
        self.statements
            .iter()
            .find(|r| &*r.name == rule && r.access == Access::Request)
            .map(|r| &*r.approvers)
    }

    /// Whether audit events keep statement literals (`audit_literals`); when not, they
    /// keep the normalized text.
    pub fn audit_literals(&self) -> bool {
        self.config.audit_literals
    }

    /// The functions (as globs) whose call sets the `dangerous_function` flag: the policy's
    /// `dangerous_functions`, or [`DEFAULT_DANGEROUS_FUNCTIONS`].
    pub fn dangerous_functions(&self) -> Vec<&str> {
        match &self.config.dangerous_functions {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => DEFAULT_DANGEROUS_FUNCTIONS.to_vec(),
        }
    }

    /// The longest just-in-time grant `subject` may get on `resource`: the first matching
    /// `request` rule's `max_grant`, else the policy's `default_max_grant`, else
    /// [`DEFAULT_MAX_GRANT`] (8 hours).
    pub fn max_grant(&self, subject: &Subject<'_>, resource: &str) -> Duration {
        self.rules_for(resource)
            .iter()
            .map(|&i| &self.config.rules[i])
            .find(|r| r.access == Access::Request && subject_matches(r, subject))
            .and_then(|r| r.max_grant)
            .or(self.config.default_max_grant)
            .unwrap_or(DEFAULT_MAX_GRANT)
    }
}

/// Field checks of one rule (everything but the name and the hours).
fn check_rule(
    rule: &RuleConfig,
    who: &str,
    known_resources: &[&str],
    known: &str,
    errors: &mut Vec<String>,
) {
    check_who_where(
        [&rule.groups, &rule.users, &rule.approvers, &rule.resources],
        who,
        known_resources,
        known,
        errors,
    );
    if rule.access == Access::Request && rule.approvers.is_empty() {
        errors.push(format!(
            "{who}: approvers: is empty; a rule with access = \"request\" needs the groups who approve requests"
        ));
    }
    if rule.max_session == Some(Duration::ZERO) {
        errors.push(format!(
            "{who}: max_session: must be longer than zero (omit it for no limit)"
        ));
    }
    if rule.max_grant == Some(Duration::ZERO) {
        errors.push(format!("{who}: max_grant: must be longer than zero"));
    }
    if rule.masking.as_deref().is_some_and(|m| m.trim().is_empty()) {
        errors.push(format!(
            "{who}: masking: is empty; name a masking profile or omit it"
        ));
    }
    if rule.access == Access::Deny {
        for (field, set) in [
            ("max_session", rule.max_session.is_some()),
            ("masking", rule.masking.is_some()),
        ] {
            if set {
                errors.push(format!(
                    "{who}: {field}: has no effect on an access = \"deny\" rule; remove it"
                ));
            }
        }
    }
    if rule.max_grant.is_some() && rule.access != Access::Request {
        errors.push(format!(
            "{who}: max_grant: applies only to access = \"request\" rules; remove it"
        ));
    }
    if rule.hours.is_some() && rule.access != Access::Allow {
        errors.push(format!(
            "{who}: hours: applies only to access = \"allow\" rules; remove it"
        ));
    }
}

/// Every masking profile compiles, and every rule's `masking` names one: a session must
/// never run unmasked because its profile's name was mistyped.
fn check_masking(config: &PolicyConfig, errors: &mut Vec<String>) {
    for (name, profile) in &config.masking {
        if let Err(e) = sluice_masker::Masker::compile(name, profile, &[0; 32]) {
            errors.push(format!("policy.masking.{name}: {e}"));
        }
    }
    for (i, rule) in config.rules.iter().enumerate() {
        let Some(profile) = rule.masking.as_deref() else {
            continue;
        };
        if profile.trim().is_empty() || config.masking.contains_key(profile) {
            continue;
        }
        let who = if rule.name.is_empty() {
            format!("rule #{} (unnamed)", i + 1)
        } else {
            format!("rule {:?}", rule.name)
        };
        let known = if config.masking.is_empty() {
            "no [policy.masking.NAME] profile is defined".to_owned()
        } else {
            let names: Vec<&str> = config.masking.keys().map(String::as_str).collect();
            format!("defined: {}", names.join(", "))
        };
        errors.push(format!(
            "{who}: masking: profile {profile:?} is not defined ({known})"
        ));
    }
}

/// The checks every kind of rule shares: someone named, no empty names, resources named
/// and configured. `lists` are the rule's groups, users, approvers and resources.
fn check_who_where(
    lists: [&Vec<String>; 4],
    who: &str,
    known_resources: &[&str],
    known: &str,
    errors: &mut Vec<String>,
) {
    let [groups, users, _, resources] = lists;
    if groups.is_empty() && users.is_empty() {
        errors.push(format!(
            "{who}: groups, users: both are empty; name at least one group or user the rule applies to"
        ));
    }
    for (field, list) in ["groups", "users", "approvers", "resources"]
        .into_iter()
        .zip(lists)
    {
        if list.iter().any(|s| s.trim().is_empty()) {
            errors.push(format!("{who}: {field}: contains an empty name"));
        }
    }
    if resources.is_empty() {
        errors.push(format!(
            "{who}: resources: is empty; list resource names, or \"*\" for every resource"
        ));
    }
    for r in resources {
        if r != "*" && !r.trim().is_empty() && !known_resources.contains(&r.as_str()) {
            errors.push(format!(
                "{who}: resources: {r:?} is not a configured resource ({known})"
            ));
        }
    }
}

/// Checks and compiles every `[[policy.statements]]` entry, in file order.
fn compile_statements(
    config: &PolicyConfig,
    known_resources: &[&str],
    known: &str,
    errors: &mut Vec<String>,
) -> Vec<Arc<StatementRule>> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(config.statements.len());
    for (i, rule) in config.statements.iter().enumerate() {
        let who = if rule.name.is_empty() {
            format!("statement rule #{} (unnamed)", i + 1)
        } else {
            format!("statement rule {:?}", rule.name)
        };
        if rule.name.trim().is_empty() {
            errors.push(format!(
                "{who}: name: is empty; every statement rule needs a unique name"
            ));
        } else {
            match names.entry(&rule.name) {
                Entry::Occupied(first) => errors.push(format!(
                    "{who}: name: also used by statement rule #{}; names must be unique",
                    first.get() + 1
                )),
                Entry::Vacant(slot) => {
                    slot.insert(i);
                }
            }
        }
        check_who_where(
            [&rule.groups, &rule.users, &rule.approvers, &rule.resources],
            &who,
            known_resources,
            known,
            errors,
        );
        if let Some(compiled) = StatementRule::compile(rule, i, &who, errors) {
            out.push(Arc::new(compiled));
        }
    }
    out
}

/// Whether `users` names the user or `groups` one of their groups.
fn names_subject(users: &[String], groups: &[String], subject: &Subject<'_>) -> bool {
    users.iter().any(|u| u == subject.user)
        || groups
            .iter()
            .any(|g| subject.groups.iter().any(|sg| sg == g))
}

/// Whether the rule names the user or one of their groups.
fn subject_matches(rule: &RuleConfig, subject: &Subject<'_>) -> bool {
    names_subject(&rule.users, &rule.groups, subject)
}

/// Whether `resources` covers the resource by name or with `"*"`.
fn names_resource(resources: &[String], resource: &str) -> bool {
    resources.iter().any(|r| r == "*" || r == resource)
}

/// Whether the rule covers the resource by name or with `"*"`.
fn covers_resource(rule: &RuleConfig, resource: &str) -> bool {
    names_resource(&rule.resources, resource)
}

/// The active grant for (user, resource) that lasts longest, if any.
fn active_grant<'a>(
    grants: &'a [Grant],
    user: &str,
    resource: &str,
    now_ms: u64,
) -> Option<&'a Grant> {
    grants
        .iter()
        .filter(|g| g.user == user && g.resource == resource && g.is_active(now_ms))
        .max_by_key(|g| g.expires_at_ms)
}

fn revoked(user: &str, resource: &str, rev: &Revocation) -> Denied {
    let scope = if rev.resource.is_some() {
        "access was revoked"
    } else {
        "all access was revoked"
    };
    let reason = if rev.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", rev.reason)
    };
    Denied {
        kind: DenyKind::Revoked,
        message: format!(
            "access to resource {resource:?} denied for {user:?}: {scope} by {:?} at {}{reason}, after this credential was issued",
            rev.by,
            format_utc(rev.at_ms)
        ),
        hint: format!(
            "sign in again for a new token; if access is still refused, ask {:?} or an operator about the revocation",
            rev.by
        ),
    }
}
