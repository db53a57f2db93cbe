//! `sluice policy check`: what each group and user named in the policy may do.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::config::opt_duration;
use super::{Access, Policy};

/// Whether a summary is about a group or a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A group (from tokens' groups claim).
    Group,
    /// A user (token subject).
    User,
}

/// What one group or user may do, according to the rules that name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrincipalSummary {
    /// Group or user.
    pub kind: PrincipalKind,
    /// Its name.
    pub name: String,
    /// One entry per (rule naming it, resource of that rule), in file order.
    pub entries: Vec<SummaryEntry>,
    /// Resources it may approve requests for and grant access to (it is among the rule's
    /// `approvers`), in file order.
    pub approves: Vec<SummaryApproval>,
    /// One entry per (statement rule naming it, resource of that rule), in file order.
    pub statements: Vec<StatementSummaryEntry>,
    /// Resources on which it may approve held statements (it is among a `request`
    /// statement rule's `approvers`), in file order.
    pub approves_statements: Vec<SummaryApproval>,
}

/// What one statement rule says about a principal's statements on a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementSummaryEntry {
    /// Resource name, or `*` for every resource.
    pub resource: String,
    /// What the rule does.
    pub access: Access,
    /// The rule's name.
    pub rule: String,
    /// The rule's classes as written; `["*"]` when it sets none.
    pub classes: Vec<String>,
    /// The rule's other criteria as written (`flags no_where`, `tables secret_*`, ...).
    pub criteria: Vec<String>,
    /// For `request` rules: who approves.
    pub approvers: Vec<String>,
}

impl StatementSummaryEntry {
    /// `request ddl (rule "eng-hold", approvers dba)`.
    fn describe(&self) -> String {
        let mut s = format!("{} {}", self.access, self.classes.join(", "));
        for c in &self.criteria {
            s.push_str(" with ");
            s.push_str(c);
        }
        s.push_str(&format!(" (rule {:?}", self.rule));
        if !self.approvers.is_empty() {
            s.push_str(&format!(", approvers {}", self.approvers.join(", ")));
        }
        s.push(')');
        s
    }
}

/// One resource a rule gives (or refuses) a principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SummaryEntry {
    /// Resource name, or `*` for every resource.
    pub resource: String,
    /// What the rule does.
    pub access: Access,
    /// The rule's name.
    pub rule: String,
    /// The rule's session limit.
    #[serde(serialize_with = "opt_duration::serialize")]
    pub max_session: Option<Duration>,
    /// The rule's time window, e.g. `mon-fri 08:00-18:00 UTC+02:00`.
    pub hours: Option<String>,
    /// The rule's masking profile.
    pub masking: Option<String>,
}

/// A resource a group may approve access to, and the rule that says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SummaryApproval {
    /// Resource name, or `*` for every resource.
    pub resource: String,
    /// The rule's name.
    pub rule: String,
}

impl Policy {
    /// What each group and user named in any rule (including as an approver) may do:
    /// groups first, then users, each sorted by name.
    pub fn summary(&self) -> Vec<PrincipalSummary> {
        let mut out: BTreeMap<(PrincipalKind, &str), PrincipalSummary> = BTreeMap::new();
        for (i, rule) in self.config.rules.iter().enumerate() {
            let hours = self.hours[i].as_ref().map(ToString::to_string);
            let who = rule
                .groups
                .iter()
                .map(|g| (PrincipalKind::Group, g.as_str()))
                .chain(rule.users.iter().map(|u| (PrincipalKind::User, u.as_str())));
            for (kind, name) in who {
                let summary = out
                    .entry((kind, name))
                    .or_insert_with(|| PrincipalSummary::new(kind, name));
                for resource in &rule.resources {
                    summary.entries.push(SummaryEntry {
                        resource: resource.clone(),
                        access: rule.access,
                        rule: rule.name.clone(),
                        max_session: rule.max_session,
                        hours: hours.clone(),
                        masking: rule.masking.clone(),
                    });
                }
            }
            for group in &rule.approvers {
                let summary = out
                    .entry((PrincipalKind::Group, group))
                    .or_insert_with(|| PrincipalSummary::new(PrincipalKind::Group, group));
                add_approvals(&mut summary.approves, &rule.resources, &rule.name);
            }
        }
        for rule in &self.config.statements {
            let classes = rule.classes.clone().unwrap_or_else(|| vec!["*".to_owned()]);
            let mut criteria = Vec::new();
            for (field, list) in [
                ("flags", &rule.flags),
                ("tables", &rule.tables),
                ("functions", &rule.functions),
                ("fingerprints", &rule.fingerprints),
            ] {
                if let Some(list) = list {
                    criteria.push(format!("{field} {}", list.join(", ")));
                }
            }
            if let Some(list) = &rule.patterns {
                let quoted: Vec<String> = list.iter().map(|p| format!("{p:?}")).collect();
                criteria.push(format!("patterns {}", quoted.join(", ")));
            }
            let who = rule
                .groups
                .iter()
                .map(|g| (PrincipalKind::Group, g.as_str()))
                .chain(rule.users.iter().map(|u| (PrincipalKind::User, u.as_str())));
            for (kind, name) in who {
                let summary = out
                    .entry((kind, name))
                    .or_insert_with(|| PrincipalSummary::new(kind, name));
                for resource in &rule.resources {
                    summary.statements.push(StatementSummaryEntry {
                        resource: resource.clone(),
                        access: rule.access,
                        rule: rule.name.clone(),
                        classes: classes.clone(),
                        criteria: criteria.clone(),
                        approvers: rule.approvers.clone(),
                    });
                }
            }
            if rule.access == Access::Request {
                for group in &rule.approvers {
                    let summary = out
                        .entry((PrincipalKind::Group, group))
                        .or_insert_with(|| PrincipalSummary::new(PrincipalKind::Group, group));
                    add_approvals(
                        &mut summary.approves_statements,
                        &rule.resources,
                        &rule.name,
                    );
                }
            }
        }
        out.into_values().collect()
    }
}

impl PrincipalSummary {
    fn new(kind: PrincipalKind, name: &str) -> PrincipalSummary {
        PrincipalSummary {
            kind,
            name: name.to_owned(),
            entries: Vec::new(),
            approves: Vec::new(),
            statements: Vec::new(),
            approves_statements: Vec::new(),
        }
    }
}

/// Adds one approval per resource not yet listed.
fn add_approvals(list: &mut Vec<SummaryApproval>, resources: &[String], rule: &str) {
    for resource in resources {
        if !list.iter().any(|a| &a.resource == resource) {
            list.push(SummaryApproval {
                resource: resource.clone(),
                rule: rule.to_owned(),
            });
        }
    }
}

fn resource_label(resource: &str) -> &str {
    if resource == "*" {
        "* (every resource)"
    } else {
        resource
    }
}

fn approvals(list: &[SummaryApproval]) -> String {
    list.iter()
        .map(|a| format!("{} (rule {:?})", a.resource, a.rule))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for PrincipalSummary {
    /// E.g.
    ///
    /// ```text
    /// group analysts
    ///   allow   shop (rule "analysts-read-shop"; sessions end after 8h; hours mon-fri 08:00-18:00 UTC+02:00; masking "pii")
    ///   approves access to: billing (rule "billing-jit")
    ///   statements on shop: allow read, transaction, session (rule "support-read-only"); request ddl (rule "eng-hold", approvers dba)
    ///   approves statements on: shop (rule "eng-hold")
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            PrincipalKind::Group => "group",
            PrincipalKind::User => "user",
        };
        writeln!(f, "{kind} {}", self.name)?;
        for e in &self.entries {
            let resource = resource_label(&e.resource);
            write!(
                f,
                "  {:<7} {resource} (rule {:?}",
                e.access.as_str(),
                e.rule
            )?;
            if let Some(d) = e.max_session {
                write!(f, "; sessions end after {}", humantime::format_duration(d))?;
            }
            if let Some(h) = &e.hours {
                write!(f, "; hours {h}")?;
            }
            if let Some(m) = &e.masking {
                write!(f, "; masking {m:?}")?;
            }
            writeln!(f, ")")?;
        }
        if !self.approves.is_empty() {
            writeln!(f, "  approves access to: {}", approvals(&self.approves))?;
        }
        // Statement rules, one line per resource, in the order resources first appear.
        let mut resources: Vec<&str> = Vec::new();
        for e in &self.statements {
            if !resources.contains(&e.resource.as_str()) {
                resources.push(&e.resource);
            }
        }
        for resource in resources {
            let said: Vec<String> = self
                .statements
                .iter()
                .filter(|e| e.resource == resource)
                .map(StatementSummaryEntry::describe)
                .collect();
            writeln!(
                f,
                "  statements on {}: {}",
                resource_label(resource),
                said.join("; ")
            )?;
        }
        let may_connect = self.entries.iter().any(|e| e.access != Access::Deny);
        if self.statements.is_empty() && may_connect {
            writeln!(
                f,
                "  statements: no statement rule names it (its statements are denied unless another statement rule that applies allows them)"
            )?;
        }
        if !self.approves_statements.is_empty() {
            writeln!(
                f,
                "  approves statements on: {}",
                approvals(&self.approves_statements)
            )?;
        }
        Ok(())
    }
}

/// The text `sluice policy check` prints: every [`PrincipalSummary`], separated by blank
/// lines, or a note that an empty policy denies everything.
pub fn render_summary(summaries: &[PrincipalSummary]) -> String {
    if summaries.is_empty() {
        return "the policy has no rules: every connection is denied\n".to_owned();
    }
    summaries
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
