//! The admin API: requests the `sluice` subcommands send to control over its Unix socket
//! (`state_dir/admin.sock`, mode 0600), one JSON request and one JSON response per
//! connection, each a single line.
//!
//! Who may call: whoever can open the socket is the local *operator* (file permissions are
//! the authentication, the kernel tells control the caller's uid). Operations that need an
//! approver (`grant`, `access approve/deny`, `approvals approve/deny`) or a requester
//! (`access request`) also carry a token, verified by control with the same rules as the proxy, and the token's subject is
//! the actor recorded in the audit trail.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::ApprovalScope;

/// One admin operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    /// Control's status: generation, subscribers, keys, issuers.
    Status,
    /// Re-read the config file and publish (same as SIGHUP).
    Reload,
    /// Mint a Sluice token (operator only).
    Token {
        /// Subject.
        user: String,
        /// Groups.
        groups: Vec<String>,
        /// Lifetime in milliseconds.
        ttl_ms: u64,
    },
    /// Make a new signing key (operator only).
    KeysRotate,
    /// List signing keys.
    KeysList,
    /// Grant access directly (approver token required).
    Grant {
        /// The approver's token.
        token: String,
        /// Who gets access.
        user: String,
        /// On which resource.
        resource: String,
        /// For how long, milliseconds.
        for_ms: u64,
        /// Why.
        reason: String,
    },
    /// End a principal's access now: live sessions end, grants end, older tokens are
    /// refused.
    Revoke {
        /// Optional token of the person revoking (recorded as the actor).
        token: Option<String>,
        /// Whose access.
        user: String,
        /// One resource, or all.
        resource: Option<String>,
        /// Why.
        reason: String,
    },
    /// Grants in force.
    GrantsList,
    /// Ask for access (requester token required).
    AccessRequest {
        /// The requester's token.
        token: String,
        /// Resource.
        resource: String,
        /// For how long, milliseconds.
        for_ms: u64,
        /// Why.
        reason: String,
    },
    /// Approve a pending request (approver token; never the requester's own).
    AccessApprove {
        /// The approver's token.
        token: String,
        /// Request ID.
        id: String,
    },
    /// Refuse a pending request.
    AccessDeny {
        /// The approver's token.
        token: String,
        /// Request ID.
        id: String,
        /// Why.
        reason: String,
    },
    /// Access requests (pending first).
    AccessList,
    /// Statements held for approval: the pending ones (oldest first), and with `all` also
    /// those decided, withdrawn or expired recently (newest first, after the pending ones).
    ApprovalsList {
        /// Only those on this resource.
        #[serde(default)]
        resource: Option<String>,
        /// Include those no longer pending.
        #[serde(default)]
        all: bool,
    },
    /// Approve a held statement (approver token: a member of one of the statement rule's
    /// approver groups, never the requester). Decided once `approvals.min_approvals`
    /// distinct approvers approved.
    ApprovalsApprove {
        /// The approver's token.
        token: String,
        /// Request ID.
        id: String,
        /// Why (optional; kept in the audit trail).
        #[serde(default)]
        reason: Option<String>,
        /// This statement only, or every later statement with its fingerprint in the session.
        #[serde(default)]
        scope: ApprovalScope,
    },
    /// Refuse a held statement (approver token); one denial decides.
    ApprovalsDeny {
        /// The approver's token.
        token: String,
        /// Request ID.
        id: String,
        /// Why (optional; the requester sees it).
        #[serde(default)]
        reason: Option<String>,
    },
    /// The most recent audit events.
    Audit {
        /// How many.
        limit: usize,
    },
    /// Exchange a SAML Response from a configured `[[identity.saml]]` IdP for a Sluice
    /// token (`sluice login --saml FILE`). The Response is the credential: control checks
    /// its signature, issuer, audience and validity, and uses each assertion only once.
    SamlLogin {
        /// The base64 SAML Response, as the IdP posts it (`SAMLResponse`).
        response: String,
    },
}

/// Control's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminResponse {
    /// Whether the operation succeeded.
    pub ok: bool,
    /// What went wrong, said so that the user can act on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The operation's result.
    #[serde(default)]
    pub result: serde_json::Value,
}

/// Largest request or response line, bytes.
pub const MAX_LINE: usize = 1 << 20;

/// Sends `request` to the control at `socket` and returns its result, or its error text.
pub fn call(socket: &Path, request: &AdminRequest) -> Result<serde_json::Value, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach control at {}: {e}; is `sluice control` (or `sluice up`) running with this config?",
            socket.display()
        )
    })?;
    let timeout = Some(Duration::from_secs(30));
    stream
        .set_read_timeout(timeout)
        .and_then(|_| stream.set_write_timeout(timeout))
        .map_err(|e| format!("admin socket: {e}"))?;
    let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| format!("sending to control: {e}"))?;
    let mut reader = BufReader::new(stream.take_limit());
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .map_err(|e| format!("reading control's answer: {e}"))?;
    let response: AdminResponse = serde_json::from_str(&answer)
        .map_err(|e| format!("control sent an unreadable answer: {e}"))?;
    if response.ok {
        Ok(response.result)
    } else {
        Err(response
            .error
            .unwrap_or_else(|| "control refused without a reason".into()))
    }
}

trait TakeLimit {
    fn take_limit(self) -> std::io::Take<UnixStream>;
}

impl TakeLimit for UnixStream {
    fn take_limit(self) -> std::io::Take<UnixStream> {
        std::io::Read::take(self, MAX_LINE as u64)
    }
}
