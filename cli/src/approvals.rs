//! `sluice approvals`: statements the gateway holds until approvers decide (a
//! `[[policy.statements]]` rule that says `request`). The client was told the request ID;
//! an approver lists the requests, then approves or denies one.
//!
//! Output contract (as for `sluice access`): what a script captures is printed alone on
//! stdout (the decision: `approved`, `pending` or `denied`); explanations go to stderr. The
//! list is an aligned table, or control's JSON array with `--json`.

use std::path::Path;

use anyhow::Context;
use serde_json::Value;
use sluice_control::admin::AdminRequest;
use sluice_control::state::{now_ms, ApprovalScope, ApprovalStatus, StatementApproval};

use crate::admin::{call, TokenArg};
use crate::output::{clean, print, print_json, relative, Table};

/// Longest statement shown in the table (the whole text is in `--json`).
const STATEMENT_WIDTH: usize = 60;

/// `--scope`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScopeArg {
    /// This one statement.
    Statement,
    /// This statement and every later one with the same fingerprint in the same session.
    Fingerprint,
}

impl From<ScopeArg> for ApprovalScope {
    fn from(s: ScopeArg) -> ApprovalScope {
        match s {
            ScopeArg::Statement => ApprovalScope::Statement,
            ScopeArg::Fingerprint => ApprovalScope::Fingerprint,
        }
    }
}

/// `sluice approvals`.
#[derive(clap::Subcommand)]
pub enum ApprovalsCommand {
    /// List statements held for approval: pending ones, oldest first (with --all also
    /// those recently decided, withdrawn or expired).
    List {
        /// Only those on this resource.
        #[arg(long)]
        resource: Option<String>,
        /// Include requests that are no longer pending.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Approve a held statement (you must be in one of the approver groups of the rule that
    /// held it, and not the requester); prints `approved`, or `pending` while it needs more
    /// approvers (approvals.min_approvals).
    Approve {
        /// The request ID (the client was told it; also in `sluice approvals list`).
        id: String,
        /// Why; kept in the audit trail.
        #[arg(long)]
        reason: Option<String>,
        /// `statement`: this statement only; `fingerprint`: also every later statement
        /// with the same fingerprint in the same session.
        #[arg(long, value_enum, default_value_t = ScopeArg::Statement)]
        scope: ScopeArg,
        #[command(flatten)]
        token: TokenArg,
    },
    /// Refuse a held statement (one denial decides); prints `denied`.
    Deny {
        /// The request ID.
        id: String,
        /// Why; the audit trail keeps it.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        token: TokenArg,
    },
}

/// Runs a `sluice approvals` subcommand.
pub fn run(socket: &Path, command: ApprovalsCommand) -> anyhow::Result<()> {
    match command {
        ApprovalsCommand::List {
            resource,
            all,
            json,
        } => {
            let result = call(socket, &AdminRequest::ApprovalsList { resource, all })?;
            if json {
                return print_json(&result);
            }
            let approvals: Vec<StatementApproval> = serde_json::from_value(result).context(
                "control's answer is not a list of approval requests (is it another version?)",
            )?;
            if approvals.is_empty() {
                return print(if all {
                    "no approval requests"
                } else {
                    "no statements waiting for approval"
                });
            }
            print(&approvals_table(&approvals, all, now_ms()).render())
        }
        ApprovalsCommand::Approve {
            id,
            reason,
            scope,
            token,
        } => {
            let result = call(
                socket,
                &AdminRequest::ApprovalsApprove {
                    token: token.token,
                    id: id.clone(),
                    reason,
                    scope: scope.into(),
                },
            )?;
            let status = field(&result, "status")?;
            let (have, need) = (
                result["approvals"].as_u64().unwrap_or(0),
                result["required"].as_u64().unwrap_or(1),
            );
            if status == "approved" {
                eprintln!(
                    "approved request {id} ({} scope; {have} of {need} approvals); the held statement runs",
                    result["scope"].as_str().unwrap_or("statement")
                );
            } else {
                eprintln!(
                    "your approval of request {id} is recorded: {have} of {need}; it needs {} more from other approvers",
                    need.saturating_sub(have)
                );
            }
            print(&status)
        }
        ApprovalsCommand::Deny { id, reason, token } => {
            let result = call(
                socket,
                &AdminRequest::ApprovalsDeny {
                    token: token.token,
                    id: id.clone(),
                    reason,
                },
            )?;
            eprintln!("denied request {id}; the gateway refuses the held statement");
            print(&field(&result, "status")?)
        }
    }
}

fn field(result: &Value, key: &str) -> anyhow::Result<String> {
    result
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("control's answer has no {key}"))
}

/// `text` shortened to `width` characters, marking the cut with `…`.
fn shorten(text: &str, width: usize) -> String {
    let text = clean(text);
    if text.chars().count() <= width {
        return text;
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn approvals_table(approvals: &[StatementApproval], all: bool, now: u64) -> Table {
    let mut headers = vec![
        "ID",
        "REQUESTER",
        "RESOURCE",
        "CLASS",
        "RULE",
        "STATEMENT",
        "FINGERPRINT",
        "AGE",
        "APPROVALS",
    ];
    if all {
        headers.push("STATUS");
    }
    let mut t = Table::new(&headers);
    for a in approvals {
        let mut approvals = format!("{}/{}", a.approvals.len(), a.required);
        if !a.approvals.is_empty() {
            approvals.push_str(&format!(" ({})", a.approvers().join(", ")));
        }
        let mut row = vec![
            a.id.clone(),
            a.user.clone(),
            a.resource.clone(),
            a.class.clone(),
            a.rule.clone(),
            shorten(&a.statement, STATEMENT_WIDTH),
            a.fingerprint.clone(),
            relative(a.requested_at_ms, now),
            approvals,
        ];
        if all {
            row.push(match &a.status {
                ApprovalStatus::Pending => "pending".to_owned(),
                ApprovalStatus::Approved { scope, .. } => {
                    format!("approved ({})", scope.as_str())
                }
                ApprovalStatus::Denied { by, reason, .. } => match reason {
                    Some(r) => format!("denied by {by}: {r}"),
                    None => format!("denied by {by}"),
                },
                ApprovalStatus::Withdrawn { reason, .. } => format!("withdrawn: {reason}"),
                ApprovalStatus::Expired { .. } => "expired".to_owned(),
            });
        }
        t.row(row);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_control::state::ApprovalVote;

    const T0: u64 = 1_772_357_400_000; // 2026-03-01T09:30:00Z

    fn approval(status: ApprovalStatus) -> StatementApproval {
        StatementApproval {
            id: "0195-h".into(),
            session: "s".into(),
            user: "erin".into(),
            groups: vec!["support".into()],
            resource: "shop".into(),
            rule: "support-writes".into(),
            statement: "DELETE FROM orders WHERE id = $1".into(),
            fingerprint: "5f3c2a1b0e9d8c7b".into(),
            class: "write".into(),
            requested_at_ms: T0,
            required: 2,
            approvals: vec![ApprovalVote {
                by: "dana".into(),
                at_ms: T0,
                scope: ApprovalScope::Statement,
                reason: None,
            }],
            status,
            session_ended_at_ms: None,
        }
    }

    #[test]
    fn the_table_shows_who_asked_what_and_how_many_approved() {
        let text =
            approvals_table(&[approval(ApprovalStatus::Pending)], false, T0 + 120_000).render();
        let mut lines = text.lines();
        let header = lines.next().expect("header");
        assert!(
            header.starts_with("ID      REQUESTER  RESOURCE  CLASS  RULE")
                && header.ends_with("AGE     APPROVALS"),
            "{header}"
        );
        let row = lines.next().expect("row");
        for want in [
            "erin",
            "support-writes",
            "DELETE FROM orders WHERE id = $1",
            "5f3c2a1b0e9d8c7b",
            "2m ago",
            "1/2 (dana)",
        ] {
            assert!(row.contains(want), "{want} in {row}");
        }
        assert!(!text.contains("STATUS"));
    }

    #[test]
    fn with_all_the_status_names_who_decided() {
        let denied = approval(ApprovalStatus::Denied {
            by: "olga".into(),
            reason: Some("use staging".into()),
            at_ms: T0,
        });
        let withdrawn = approval(ApprovalStatus::Withdrawn {
            reason: "session ended".into(),
            at_ms: T0,
        });
        let text = approvals_table(&[denied, withdrawn], true, T0).render();
        assert!(text.contains("denied by olga: use staging"), "{text}");
        assert!(text.contains("withdrawn: session ended"), "{text}");
    }

    #[test]
    fn long_statements_are_shortened_and_cleaned() {
        let long = format!("SELECT {} FROM t", "a, ".repeat(40));
        let short = shorten(&long, 20);
        assert_eq!(short.chars().count(), 20);
        assert!(short.ends_with('…'));
        assert_eq!(shorten("a\nb", 20), "a b");
    }
}
