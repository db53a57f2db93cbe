//! Subcommands that talk to a running control over its admin socket
//! (`state_dir/admin.sock`, found through the config file): tokens, SAML login, keys,
//! reload, status, access requests, grants, revocations and the audit trail.
//!
//! Output contract: what a script captures (a token, a request or grant ID) is printed
//! alone on stdout; explanations go to stderr. List commands print an aligned table, or
//! control's JSON array with `--json`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::Value;
use sluice_control::admin::{self, AdminRequest};
use sluice_control::config::ControlFile;
use sluice_control::identity::KeyInfo;
use sluice_control::state::{now_ms, AccessRequest, AuditEvent, Grant, RequestStatus};

use crate::args;
use crate::output::{clean, print, print_json, relative, span, utc, Table};

/// The admin socket of the control that serves the config at `config`.
pub fn socket(config: &Path) -> anyhow::Result<PathBuf> {
    let file = ControlFile::load(config).map_err(|e| anyhow!(e))?;
    Ok(sluice_control::service::paths::admin_socket(
        &file.state_dir(),
    ))
}

/// Sends one request to control.
pub fn call(socket: &Path, request: &AdminRequest) -> anyhow::Result<Value> {
    admin::call(socket, request).map_err(|e| anyhow!(e))
}

fn parse<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(value).with_context(|| {
        format!("control's answer is not a list of {what} (is it another version?)")
    })
}

/// `--json`.
#[derive(clap::Args)]
pub struct JsonFlag {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A token required by the operation (`--token` or `$SLUICE_TOKEN`).
#[derive(clap::Args)]
pub struct TokenArg {
    /// Your token (from `sluice token` or your identity provider); it says who you are and
    /// is recorded as the actor. Prefer $SLUICE_TOKEN: other local users can see command
    /// lines.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// `sluice token`.
#[derive(clap::Args)]
pub struct TokenArgs {
    /// The token's subject: the user name clients connect as.
    #[arg(long)]
    pub user: String,
    /// Groups the token carries, comma-separated (repeatable); policy rules name them.
    #[arg(long, value_delimiter = ',', value_parser = args::group)]
    pub groups: Vec<String>,
    /// Lifetime, e.g. 15m or 8h; at most identity.sluice_tokens.max_ttl.
    #[arg(long, default_value = "1h", value_parser = args::duration)]
    pub ttl: Duration,
}

/// Mints a token and prints it alone on stdout.
pub fn token(socket: &Path, a: TokenArgs) -> anyhow::Result<()> {
    let result = call(
        socket,
        &AdminRequest::Token {
            user: a.user,
            groups: a.groups,
            ttl_ms: args::millis(a.ttl),
        },
    )?;
    let token = result
        .get("token")
        .and_then(Value::as_str)
        .context("control's answer has no token")?;
    print(token)
}

/// `sluice keys`.
#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key (its ID is printed); tokens signed with the previous keys
    /// stay valid until they expire.
    Rotate,
    /// List the signing keys: the current one and retired ones.
    List(JsonFlag),
}

/// Runs a `sluice keys` subcommand.
pub fn keys(socket: &Path, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Rotate => {
            let result = call(socket, &AdminRequest::KeysRotate)?;
            let kid = result
                .get("kid")
                .and_then(Value::as_str)
                .context("control's answer has no key ID")?;
            eprintln!(
                "new signing key {kid} (generation {}); tokens signed with the previous key stay valid until they expire",
                result.get("generation").unwrap_or(&Value::Null)
            );
            print(kid)
        }
        KeysCommand::List(f) => {
            let result = call(socket, &AdminRequest::KeysList)?;
            if f.json {
                return print_json(&result);
            }
            let keys: Vec<KeyInfo> = parse(result, "keys")?;
            print(&keys_table(&keys).render())
        }
    }
}

fn keys_table(keys: &[KeyInfo]) -> Table {
    let mut t = Table::new(&["KID", "STATE", "CREATED", "RETIRED"]);
    for k in keys {
        let (state, retired) = match k.retired_at_ms {
            None => ("signing", String::new()),
            Some(at) => ("retired", utc(at)),
        };
        t.row(vec![
            k.kid.clone(),
            state.into(),
            utc(k.created_at_ms),
            retired,
        ]);
    }
    t
}

/// `sluice reload`.
pub fn reload(socket: &Path) -> anyhow::Result<()> {
    let result = call(socket, &AdminRequest::Reload)?;
    print(&format!(
        "reloaded: generation {}",
        result.get("generation").unwrap_or(&Value::Null)
    ))
}

/// `sluice status`.
///
/// With `[metrics] listen` configured it also asks the gateway whether it is ready (each
/// worker's snapshot and tick, each backend's reachability), and fails when either
/// process cannot be asked (a gateway that answers but is not ready is reported, with why). With `--json`, control's fields are at the
/// top level (`control_error` when it cannot be asked) and the gateway's under `gateway`.
pub fn status(config: &Path, f: JsonFlag) -> anyhow::Result<()> {
    let control = call(&socket(config)?, &AdminRequest::Status);
    let gateway = match crate::observe::endpoint(config) {
        Ok(Some(base)) => Some(crate::observe::gateway_status(&base, f.json)),
        Ok(None) => None,
        Err(e) => Some(Err(e)),
    };
    if f.json {
        let gateway_json = match &gateway {
            None => Value::Null,
            Some(Ok((text, _))) => serde_json::from_str(text).unwrap_or(Value::Null),
            Some(Err(e)) => serde_json::json!({ "error": format!("{e:#}") }),
        };
        // Control's own fields stay at the top level (what scripts already read), the
        // gateway's readiness beside them.
        let mut combined = match &control {
            Ok(Value::Object(map)) => map.clone(),
            Ok(other) => serde_json::Map::from_iter([("control".to_owned(), other.clone())]),
            Err(e) => serde_json::Map::from_iter([(
                "control_error".to_owned(),
                Value::String(format!("{e:#}")),
            )]),
        };
        combined.insert("gateway".to_owned(), gateway_json);
        print_json(&Value::Object(combined))?;
    } else {
        match &control {
            Ok(v) => print(&status_text(v))?,
            Err(e) => print(&format!("control:           UNREACHABLE: {e:#}\n"))?,
        }
        match &gateway {
            None => print("gateway:           no metrics endpoint ([metrics] listen) to ask\n")?,
            Some(Ok((text, _))) => print(text)?,
            Some(Err(e)) => print(&format!("gateway:           UNREACHABLE: {e:#}\n"))?,
        }
    }
    // Readiness is reported, not turned into an exit code: scripts poll this while a
    // gateway starts, and a probe has /readyz itself.
    match (control, gateway) {
        (Err(e), _) => Err(e),
        (Ok(_), Some(Err(e))) => Err(e.context("the gateway's metrics endpoint did not answer")),
        (Ok(_), _) => Ok(()),
    }
}

/// `key: value` lines, the known fields first in a sensible order, then any others.
fn status_text(status: &Value) -> String {
    const ORDER: &[(&str, &str)] = &[
        ("generation", "generation"),
        ("subscribers", "proxy subscribers"),
        ("grants", "grants"),
        ("pending_requests", "pending requests"),
        ("pending_approvals", "pending approvals"),
        ("revocations", "revocations"),
        ("issuers", "token issuers"),
        ("config", "config"),
        ("state_dir", "state dir"),
    ];
    let show = |v: &Value| match v {
        Value::String(s) => clean(s),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => clean(s),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    };
    let Some(map) = status.as_object() else {
        return show(status);
    };
    let mut lines: Vec<(String, String)> = ORDER
        .iter()
        .filter_map(|(key, label)| map.get(*key).map(|v| ((*label).to_owned(), show(v))))
        .collect();
    for (key, v) in map {
        if !ORDER.iter().any(|(k, _)| k == key) {
            lines.push((key.replace('_', " "), show(v)));
        }
    }
    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    lines
        .iter()
        .map(|(l, v)| format!("{:<width$} {v}\n", format!("{l}:")))
        .collect()
}

/// `sluice access`.
#[derive(clap::Subcommand)]
pub enum AccessCommand {
    /// Ask for access to a resource; prints the request ID (and on stderr who can approve).
    Request {
        /// The resource.
        #[arg(long)]
        resource: String,
        /// How long the access should last once approved, e.g. 1h.
        #[arg(long = "for", value_name = "DURATION", value_parser = args::duration)]
        duration: Duration,
        /// Why you need it; approvers decide on it and it is kept in the audit trail.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        token: TokenArg,
    },
    /// Approve a pending request (you must be an approver for its resource, and not the
    /// requester); prints the ID of the grant it creates.
    Approve {
        /// The request ID (from `sluice access list`).
        id: String,
        #[command(flatten)]
        token: TokenArg,
    },
    /// Refuse a pending request.
    Deny {
        /// The request ID.
        id: String,
        /// Why; the requester and the audit trail see it.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        token: TokenArg,
    },
    /// List access requests, pending first.
    List(JsonFlag),
}

/// Runs a `sluice access` subcommand.
pub fn access(socket: &Path, command: AccessCommand) -> anyhow::Result<()> {
    match command {
        AccessCommand::Request {
            resource,
            duration,
            reason,
            token,
        } => {
            let result = call(
                socket,
                &AdminRequest::AccessRequest {
                    token: token.token,
                    resource,
                    for_ms: args::millis(duration),
                    reason,
                },
            )?;
            let request: AccessRequest =
                serde_json::from_value(result.get("request").cloned().unwrap_or(Value::Null))
                    .context("control's answer has no access request")?;
            let approvers: Vec<String> = result
                .get("approvers")
                .and_then(|a| serde_json::from_value(a.clone()).ok())
                .unwrap_or_default();
            eprintln!(
                "access request by {} to {} for {} is pending; members of {} can approve it with: sluice access approve {}",
                clean(&request.user),
                clean(&request.resource),
                span(Duration::from_millis(request.duration_ms)),
                if approvers.is_empty() {
                    "(no group)".to_owned()
                } else {
                    clean(&approvers.join(", "))
                },
                request.id
            );
            print(&request.id)
        }
        AccessCommand::Approve { id, token } => {
            let result = call(
                socket,
                &AdminRequest::AccessApprove {
                    token: token.token,
                    id,
                },
            )?;
            let grant: Grant =
                serde_json::from_value(result).context("control's answer is not a grant")?;
            eprintln!("approved: {}", describe_grant(&grant, now_ms()));
            print(&grant.id)
        }
        AccessCommand::Deny { id, reason, token } => {
            call(
                socket,
                &AdminRequest::AccessDeny {
                    token: token.token,
                    id: id.clone(),
                    reason,
                },
            )?;
            print(&format!("denied: {id}"))
        }
        AccessCommand::List(f) => {
            let result = call(socket, &AdminRequest::AccessList)?;
            if f.json {
                return print_json(&result);
            }
            let requests: Vec<AccessRequest> = parse(result, "access requests")?;
            if requests.is_empty() {
                return print("no access requests");
            }
            print(&requests_table(&requests, now_ms()).render())
        }
    }
}

fn requests_table(requests: &[AccessRequest], now: u64) -> Table {
    let mut t = Table::new(&[
        "ID", "USER", "RESOURCE", "FOR", "STATUS", "CREATED", "REASON",
    ]);
    for r in requests {
        let status = match &r.status {
            RequestStatus::Pending => "pending".to_owned(),
            RequestStatus::Approved { by, .. } => format!("approved by {by}"),
            RequestStatus::Denied { by, reason, .. } => format!("denied by {by}: {reason}"),
            RequestStatus::Expired { .. } => "expired".to_owned(),
        };
        t.row(vec![
            r.id.clone(),
            r.user.clone(),
            r.resource.clone(),
            span(Duration::from_millis(r.duration_ms)),
            status,
            format!(
                "{} ({})",
                utc(r.created_at_ms),
                relative(r.created_at_ms, now)
            ),
            r.reason.clone(),
        ]);
    }
    t
}

fn describe_grant(g: &Grant, now: u64) -> String {
    format!(
        "grant {} gives {} access to {} until {} ({})",
        g.id,
        clean(&g.user),
        clean(&g.resource),
        utc(g.expires_at_ms),
        relative(g.expires_at_ms, now)
    )
}

/// `sluice grant`.
#[derive(clap::Args)]
pub struct GrantArgs {
    /// Who gets access (the token subject they connect as).
    #[arg(long)]
    pub user: String,
    /// On which resource.
    #[arg(long)]
    pub resource: String,
    /// For how long, e.g. 30m.
    #[arg(long = "for", value_name = "DURATION", value_parser = args::duration)]
    pub duration: Duration,
    /// Why; kept in the audit trail.
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub token: TokenArg,
}

/// Grants access directly and prints the grant ID.
pub fn grant(socket: &Path, a: GrantArgs) -> anyhow::Result<()> {
    let result = call(
        socket,
        &AdminRequest::Grant {
            token: a.token.token,
            user: a.user,
            resource: a.resource,
            for_ms: args::millis(a.duration),
            reason: a.reason,
        },
    )?;
    let grant: Grant = serde_json::from_value(result).context("control's answer is not a grant")?;
    eprintln!("{}", describe_grant(&grant, now_ms()));
    print(&grant.id)
}

/// `sluice grants`.
#[derive(clap::Subcommand)]
pub enum GrantsCommand {
    /// List the grants in force.
    List(JsonFlag),
}

/// Runs a `sluice grants` subcommand.
pub fn grants(socket: &Path, command: GrantsCommand) -> anyhow::Result<()> {
    match command {
        GrantsCommand::List(f) => {
            let result = call(socket, &AdminRequest::GrantsList)?;
            if f.json {
                return print_json(&result);
            }
            let grants: Vec<Grant> = parse(result, "grants")?;
            if grants.is_empty() {
                return print("no grants in force");
            }
            print(&grants_table(&grants, now_ms()).render())
        }
    }
}

fn grants_table(grants: &[Grant], now: u64) -> Table {
    let mut t = Table::new(&["ID", "USER", "RESOURCE", "EXPIRES", "GRANTED BY", "REASON"]);
    for g in grants {
        t.row(vec![
            g.id.clone(),
            g.user.clone(),
            g.resource.clone(),
            format!(
                "{} ({})",
                utc(g.expires_at_ms),
                relative(g.expires_at_ms, now)
            ),
            g.granted_by.clone(),
            g.reason.clone(),
        ]);
    }
    t
}

/// `sluice revoke`.
#[derive(clap::Args)]
pub struct RevokeArgs {
    /// Whose access ends.
    #[arg(long)]
    pub user: String,
    /// Only on this resource (default: every resource).
    #[arg(long)]
    pub resource: Option<String>,
    /// Why; kept in the audit trail.
    #[arg(long, default_value = "revoked by operator")]
    pub reason: String,
    /// Your token, to record you as the actor (default: the local operator's uid).
    /// Also $SLUICE_TOKEN.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Ends a principal's access now.
pub fn revoke(socket: &Path, a: RevokeArgs) -> anyhow::Result<()> {
    let result = call(
        socket,
        &AdminRequest::Revoke {
            token: a.token,
            user: a.user.clone(),
            resource: a.resource.clone(),
            reason: a.reason,
        },
    )?;
    let ended = result
        .get("grants_ended")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    print(&format!(
        "revoked: {} on {}; {ended} grant{} ended; live sessions end and tokens issued before now are refused (generation {})",
        clean(&a.user),
        a.resource
            .as_deref()
            .map_or_else(|| "every resource".to_owned(), clean),
        if ended == 1 { "" } else { "s" },
        result.get("generation").unwrap_or(&Value::Null)
    ))
}

/// `sluice audit`.
#[derive(clap::Args)]
pub struct AuditArgs {
    /// How many of the most recent events.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Show the gateway's statement events (one per statement: who, what, the decision,
    /// the rule, the outcome) instead of control's events. Read from the state directory;
    /// control need not run.
    #[arg(long)]
    pub statements: bool,
    /// Filters for --statements.
    #[command(flatten)]
    pub filter: crate::statement_audit::StatementFilter,
}

/// Prints the most recent audit events, oldest first.
pub fn audit(socket: &Path, a: AuditArgs) -> anyhow::Result<()> {
    let result = call(socket, &AdminRequest::Audit { limit: a.limit })?;
    if a.json {
        return print_json(&result);
    }
    let events: Vec<AuditEvent> = parse(result, "audit events")?;
    if events.is_empty() {
        return print("no audit events");
    }
    print(&audit_table(&events).render())
}

fn audit_table(events: &[AuditEvent]) -> Table {
    let mut t = Table::new(&["TIME", "ACTOR", "ACTION", "TARGET", "DETAIL"]);
    for e in events {
        t.row(vec![
            utc(e.at_ms),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
            e.detail.clone(),
        ]);
    }
    t
}

/// `sluice login`.
#[derive(clap::Args)]
pub struct LoginArgs {
    /// A file holding the base64 SAML Response your identity provider posted
    /// (`SAMLResponse`), or `-` for stdin. The IdP must be configured in [[identity.saml]].
    #[arg(long, value_name = "FILE")]
    pub saml: PathBuf,
}

/// Exchanges a SAML Response for a Sluice token and prints the token alone on stdout.
pub fn login(socket: &Path, a: LoginArgs) -> anyhow::Result<()> {
    use std::io::Read;
    let limit = sluice_control::saml::MAX_RESPONSE_BYTES;
    let mut response = String::new();
    let read = if a.saml.as_os_str() == "-" {
        std::io::stdin()
            .take(limit as u64 + 1)
            .read_to_string(&mut response)
    } else {
        std::fs::File::open(&a.saml)
            .and_then(|f| f.take(limit as u64 + 1).read_to_string(&mut response))
    };
    read.with_context(|| format!("reading the SAML Response from {}", a.saml.display()))?;
    if response.len() > limit {
        return Err(anyhow!(
            "{} is larger than {} KiB; is it a SAML Response?",
            a.saml.display(),
            limit / 1024
        ));
    }
    if response.trim().is_empty() {
        return Err(anyhow!("{} is empty", a.saml.display()));
    }
    let result = call(socket, &AdminRequest::SamlLogin { response })?;
    let token = result
        .get("token")
        .and_then(Value::as_str)
        .context("control's answer has no token")?;
    let text = |key: &str| result.get(key).and_then(Value::as_str).map(clean);
    let groups: Vec<String> = result
        .get("groups")
        .and_then(Value::as_array)
        .map(|g| g.iter().filter_map(Value::as_str).map(clean).collect())
        .unwrap_or_default();
    eprintln!(
        "logged in as {} (groups: {}) through {}; the token expires {}",
        text("user").unwrap_or_default(),
        if groups.is_empty() {
            "none".to_owned()
        } else {
            groups.join(", ")
        },
        text("idp").unwrap_or_default(),
        result
            .get("expires_at_ms")
            .and_then(Value::as_u64)
            .map(utc)
            .unwrap_or_default(),
    );
    print(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_772_357_400_000; // 2026-03-01T09:30:00Z

    #[test]
    fn grants_table_shows_expiry_in_utc_and_relative() {
        let grant = Grant {
            id: "0195-a".into(),
            user: "alice".into(),
            resource: "shop".into(),
            created_at_ms: T0,
            expires_at_ms: T0 + 30 * 60_000,
            granted_by: "carol".into(),
            reason: "incident 7".into(),
            request_id: None,
        };
        assert_eq!(
            grants_table(&[grant], T0 + 60_000).render(),
            "ID      USER   RESOURCE  EXPIRES                        GRANTED BY  REASON\n\
             0195-a  alice  shop      2026-03-01T10:00:00Z (in 29m)  carol       incident 7\n"
        );
    }

    #[test]
    fn request_status_names_who_decided() {
        let mut r = AccessRequest {
            id: "r1".into(),
            user: "bob".into(),
            groups: vec!["support".into()],
            resource: "shop".into(),
            duration_ms: 3_600_000,
            reason: "ticket 9".into(),
            created_at_ms: T0,
            status: RequestStatus::Pending,
        };
        let denied = {
            r.status = RequestStatus::Denied {
                by: "carol".into(),
                reason: "use staging".into(),
                at_ms: T0,
            };
            r.clone()
        };
        let text = requests_table(&[denied], T0 + 120_000).render();
        let row = text.lines().nth(1).expect("row");
        assert!(row.contains("denied by carol: use staging"), "{row}");
        assert!(row.contains(" 1h "), "{row}");
        assert!(row.contains("2026-03-01T09:30:00Z (2m ago)"), "{row}");
    }

    #[test]
    fn keys_table_marks_the_signing_key() {
        let keys = [
            KeyInfo {
                kid: "k1".into(),
                created_at_ms: T0,
                retired_at_ms: Some(T0 + 1000),
            },
            KeyInfo {
                kid: "k2".into(),
                created_at_ms: T0 + 1000,
                retired_at_ms: None,
            },
        ];
        let text = keys_table(&keys).render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("k1   retired") && lines[1].ends_with("09:30:01Z"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("k2   signing") && lines[2].ends_with("09:30:01Z"),
            "{text}"
        );
    }

    #[test]
    fn status_text_orders_known_fields_and_keeps_unknown_ones() {
        let status = serde_json::json!({
            "state_dir": "/var/lib/sluice",
            "generation": 7,
            "issuers": ["sluice", "https://idp"],
            "future_field": true,
        });
        assert_eq!(
            status_text(&status),
            "generation:    7\n\
             token issuers: sluice, https://idp\n\
             state dir:     /var/lib/sluice\n\
             future field:  true\n"
        );
    }

    #[test]
    fn token_and_groups_parse_from_the_command_line() {
        use clap::Parser;
        let cli = crate::Cli::try_parse_from([
            "sluice", "token", "--user", "alice", "--groups", "eng, dba", "--groups", "ops",
            "--ttl", "15m",
        ])
        .expect("parse");
        let crate::Command::Token(a) = cli.command else {
            panic!("not token")
        };
        assert_eq!(a.groups, ["eng", "dba", "ops"]);
        assert_eq!(a.ttl, Duration::from_secs(900));
        assert!(
            crate::Cli::try_parse_from(["sluice", "token", "--user", "a", "--ttl", "0s"]).is_err()
        );
    }
}
