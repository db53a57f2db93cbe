//! `sluice audit --statements`: the gateway's per-statement audit events, read offline
//! from the workers' files under `state_dir/audit/` (one JSON object per line, written by
//! the proxy; see README "Statement audit events"). A torn last line (the gateway was
//! killed mid-write) is skipped, not an error.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use crate::output::{print, print_json, utc, Table};

/// Filters for statement events.
#[derive(clap::Args, Debug, Default)]
pub struct StatementFilter {
    /// Only this user's statements.
    #[arg(long, requires = "statements")]
    pub user: Option<String>,
    /// Only statements on this resource.
    #[arg(long, requires = "statements")]
    pub resource: Option<String>,
    /// Only this class (read, write, ddl, ...).
    #[arg(long, requires = "statements")]
    pub class: Option<String>,
    /// Only this decision: allow, deny, approved, refused.
    #[arg(long, requires = "statements")]
    pub decision: Option<String>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
struct Event {
    time_ms: u64,
    session: String,
    user: String,
    resource: String,
    class: String,
    command: String,
    decision: String,
    rule: Option<String>,
    #[serde(default)]
    approval: Option<String>,
    #[serde(default)]
    approvers: Vec<String>,
    #[serde(default)]
    fingerprint: String,
    outcome: String,
    sqlstate: Option<String>,
    rows: Option<u64>,
    duration_us: u64,
    statement: String,
}

/// Prints the most recent `limit` statement events that pass `filter`, oldest first.
pub fn statements(
    state_dir: &Path,
    filter: &StatementFilter,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    let dir = state_dir.join("audit");
    let mut events: Vec<Event> = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return print("no statement audit events (the gateway has not run statements yet)")
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        let is_events = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("statements-") && n.ends_with(".jsonl"));
        if !is_events {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        events.extend(
            text.lines()
                .filter_map(|line| serde_json::from_str::<Event>(line).ok())
                .filter(|e| keep(e, filter)),
        );
    }
    events.sort_by_key(|e| e.time_ms);
    let skip = events.len().saturating_sub(limit);
    let events = &events[skip..];
    if json {
        return print_json(&serde_json::to_value(events)?);
    }
    if events.is_empty() {
        return print("no statement audit events match");
    }
    let mut table = Table::new(&[
        "TIME",
        "USER",
        "RESOURCE",
        "CLASS",
        "DECISION",
        "RULE",
        "OUTCOME",
        "STATEMENT",
    ]);
    for e in events {
        let outcome = match (&e.sqlstate, e.rows) {
            (Some(code), _) => format!("{} {code}", e.outcome),
            (None, Some(rows)) => format!("{} ({rows} rows, {} µs)", e.outcome, e.duration_us),
            (None, None) => format!("{} ({} µs)", e.outcome, e.duration_us),
        };
        let decision = match &e.approval {
            Some(id) => format!("{} ({id})", e.decision),
            None => e.decision.clone(),
        };
        let mut statement = e.statement.clone();
        if statement.chars().count() > 60 {
            statement = statement.chars().take(59).collect::<String>() + "…";
        }
        table.row(vec![
            utc(e.time_ms),
            e.user.clone(),
            e.resource.clone(),
            e.class.clone(),
            decision,
            e.rule.clone().unwrap_or_else(|| "(no rule)".to_owned()),
            outcome,
            statement,
        ]);
    }
    print(&table.render())
}

fn keep(e: &Event, f: &StatementFilter) -> bool {
    let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    is(&f.user, &e.user)
        && is(&f.resource, &e.resource)
        && is(&f.class, &e.class)
        && is(&f.decision, &e.decision)
}
