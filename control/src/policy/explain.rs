//! `sluice policy explain`: a decision together with the reasoning behind it.

use std::fmt;

use serde::Serialize;

use super::hours::Window;
use super::{
    covers_resource, format_utc, subject_matches, Access, Decision, DenyKind, Policy, Subject, Via,
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
