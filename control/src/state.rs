//! Control's live state: just-in-time grants, access requests, statements held for approval
//! and revocations. These are the records the store persists, the admin API changes and the
//! snapshot carries to the proxy. Times are milliseconds since the Unix epoch (UTC) so that every copy of a record
//! (log line, snapshot, CLI JSON) says the same thing without a time-zone.

use serde::{Deserialize, Serialize};

/// A time-limited permission for one principal on one resource, created by an approver
/// (directly with `sluice grant`, or by approving an access request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Unique, sortable ID (UUIDv7 text).
    pub id: String,
    /// Principal (token subject) the grant is for.
    pub user: String,
    /// Resource name.
    pub resource: String,
    /// When the grant was made.
    pub created_at_ms: u64,
    /// When it stops being valid; live sessions that rely on it end then.
    pub expires_at_ms: u64,
    /// Principal of the approver who made it.
    pub granted_by: String,
    /// Why, as written by the requester or the approver.
    pub reason: String,
    /// The access request it came from, if any.
    #[serde(default)]
    pub request_id: Option<String>,
}

impl Grant {
    /// Whether the grant is in force at `now_ms`.
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.created_at_ms <= now_ms && now_ms < self.expires_at_ms
    }
}

/// Where an access request stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RequestStatus {
    /// Waiting for an approver.
    Pending,
    /// Approved: the grant it produced.
    Approved {
        /// Approver's principal.
        by: String,
        /// ID of the grant created.
        grant_id: String,
        /// When.
        at_ms: u64,
    },
    /// Refused by an approver.
    Denied {
        /// Approver's principal.
        by: String,
        /// Why.
        reason: String,
        /// When.
        at_ms: u64,
    },
    /// Nobody decided before it lapsed.
    Expired {
        /// When it lapsed.
        at_ms: u64,
    },
}

/// A principal asking for session-level access to a resource for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    /// Unique, sortable ID (UUIDv7 text).
    pub id: String,
    /// Requesting principal.
    pub user: String,
    /// The requester's groups when asking (for the approver's information).
    pub groups: Vec<String>,
    /// Resource name.
    pub resource: String,
    /// How long the access should last once approved (milliseconds).
    pub duration_ms: u64,
    /// Why the requester needs it.
    pub reason: String,
    /// When it was made.
    pub created_at_ms: u64,
    /// Where it stands.
    pub status: RequestStatus,
}

/// How far an approval of a held statement reaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalScope {
    /// This one statement (the held one) runs; the next one like it is held again.
    #[default]
    Statement,
    /// This statement and every later statement with the same fingerprint in the same
    /// session run without asking again.
    Fingerprint,
}

impl ApprovalScope {
    /// The name used on the command line, in JSON and in the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalScope::Statement => "statement",
            ApprovalScope::Fingerprint => "fingerprint",
        }
    }

    /// The narrower of two scopes: a request approved by several people reaches only as far
    /// as every one of them agreed.
    pub fn narrowest(self, other: ApprovalScope) -> ApprovalScope {
        if self == ApprovalScope::Statement || other == ApprovalScope::Statement {
            ApprovalScope::Statement
        } else {
            ApprovalScope::Fingerprint
        }
    }
}

/// One approver's approval of a held statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalVote {
    /// Approver's principal.
    pub by: String,
    /// When.
    pub at_ms: u64,
    /// How far this approver's approval reaches.
    pub scope: ApprovalScope,
    /// Why, if the approver said.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Where a statement held for approval stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for approvers (it may already have some of the approvals it needs).
    Pending,
    /// Enough distinct approvers approved; the statement may run.
    Approved {
        /// When the last approval needed arrived.
        at_ms: u64,
        /// The narrowest scope among the approvals.
        scope: ApprovalScope,
    },
    /// An approver refused: the proxy refuses the statement.
    Denied {
        /// Approver's principal.
        by: String,
        /// Why, if the approver said.
        #[serde(default)]
        reason: Option<String>,
        /// When.
        at_ms: u64,
    },
    /// The proxy stopped waiting before anyone decided (the client cancelled, the session
    /// ended, or the proxy's own wait ran out).
    Withdrawn {
        /// Why, as the proxy said.
        reason: String,
        /// When control learned it.
        at_ms: u64,
    },
    /// Nobody decided within `approvals.timeout`.
    Expired {
        /// When it lapsed.
        at_ms: u64,
    },
}

impl ApprovalStatus {
    /// The status's name: `pending`, `approved`, `denied`, `withdrawn` or `expired`.
    pub fn name(&self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved { .. } => "approved",
            ApprovalStatus::Denied { .. } => "denied",
            ApprovalStatus::Withdrawn { .. } => "withdrawn",
            ApprovalStatus::Expired { .. } => "expired",
        }
    }

    /// When it stopped being pending; `None` while pending.
    pub fn ended_at_ms(&self) -> Option<u64> {
        match self {
            ApprovalStatus::Pending => None,
            ApprovalStatus::Approved { at_ms, .. }
            | ApprovalStatus::Denied { at_ms, .. }
            | ApprovalStatus::Withdrawn { at_ms, .. }
            | ApprovalStatus::Expired { at_ms } => Some(*at_ms),
        }
    }
}

/// A statement the proxy holds, not sent to the database, until approvers decide: the
/// statement-level analogue of an [`AccessRequest`]. The proxy makes it (and its ID) when a
/// `[[policy.statements]]` rule says `request`; control records it, approvers decide on it
/// with `sluice approvals approve|deny`, and the decision reaches the waiting session
/// through the snapshot ([`ApprovalDecision`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementApproval {
    /// Unique, sortable ID (UUIDv7 text, made by the proxy).
    pub id: String,
    /// The session holding the statement.
    pub session: String,
    /// The session's principal (the requester).
    pub user: String,
    /// The requester's groups.
    pub groups: Vec<String>,
    /// Resource name.
    pub resource: String,
    /// The statement rule that said `request`.
    pub rule: String,
    /// The statement, normalized (literals replaced by placeholders; at most 2 KiB).
    pub statement: String,
    /// The statement's normalized fingerprint (16 hex digits).
    pub fingerprint: String,
    /// The statement's class, as the proxy classified it.
    pub class: String,
    /// When the proxy held it (and started waiting).
    pub requested_at_ms: u64,
    /// How many distinct approvers must approve (`approvals.min_approvals` when it was made).
    pub required: u32,
    /// Approvals so far, at most one per approver, in the order they came.
    #[serde(default)]
    pub approvals: Vec<ApprovalVote>,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// When control learned that the session ended: its decision stops mattering then (a
    /// fingerprint-scoped approval included) and leaves the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_ended_at_ms: Option<u64>,
}

impl StatementApproval {
    /// Whether it still waits for approvers.
    pub fn is_pending(&self) -> bool {
        self.status == ApprovalStatus::Pending
    }

    /// The principals who approved so far.
    pub fn approvers(&self) -> Vec<String> {
        self.approvals.iter().map(|v| v.by.clone()).collect()
    }

    /// The decision the proxy acts on, once approved or denied (`None` while pending, and
    /// for a withdrawn or expired request: nobody waits for those).
    pub fn decision(&self) -> Option<ApprovalDecision> {
        let (approved, scope, approvers, reason, at_ms) = match &self.status {
            ApprovalStatus::Approved { at_ms, scope } => {
                let reasons: Vec<String> = self
                    .approvals
                    .iter()
                    .filter_map(|v| v.reason.as_ref().map(|r| format!("{}: {r}", v.by)))
                    .collect();
                (
                    true,
                    *scope,
                    self.approvers(),
                    (!reasons.is_empty()).then(|| reasons.join("; ")),
                    *at_ms,
                )
            }
            ApprovalStatus::Denied { by, reason, at_ms } => (
                false,
                ApprovalScope::Statement,
                vec![by.clone()],
                reason.clone(),
                *at_ms,
            ),
            _ => return None,
        };
        Some(ApprovalDecision {
            id: self.id.clone(),
            session: self.session.clone(),
            fingerprint: self.fingerprint.clone(),
            approved,
            scope,
            approvers,
            reason,
            decided_at_ms: at_ms,
        })
    }
}

/// An approver's decision on a held statement, as the snapshot carries it to the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    /// The request's ID (what the client was told).
    pub id: String,
    /// The session holding the statement.
    pub session: String,
    /// The statement's fingerprint.
    pub fingerprint: String,
    /// Approved (the statement runs) or denied (the proxy refuses it).
    pub approved: bool,
    /// How far an approval reaches (always [`ApprovalScope::Statement`] for a denial).
    pub scope: ApprovalScope,
    /// Who decided: the distinct approvers, or the one who denied.
    pub approvers: Vec<String>,
    /// Why, if they said (approvers' reasons as `who: reason`, joined with `; `).
    #[serde(default)]
    pub reason: Option<String>,
    /// When it was decided.
    pub decided_at_ms: u64,
}

/// An operator's order that a principal's access ends now: live sessions are terminated
/// and tokens issued before `at_ms` are refused (on `resource`, or everywhere when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Principal revoked.
    pub user: String,
    /// Resource, or every resource when `None`.
    pub resource: Option<String>,
    /// When it was ordered; tokens issued before this are refused.
    pub at_ms: u64,
    /// Who ordered it.
    pub by: String,
    /// Why.
    pub reason: String,
}

impl Revocation {
    /// Whether this revocation covers `user` on `resource`.
    pub fn covers(&self, user: &str, resource: &str) -> bool {
        self.user == user && self.resource.as_deref().is_none_or(|r| r == resource)
    }
}

/// One entry of the audit trail: who did what, when and why. Every admin action writes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When.
    pub at_ms: u64,
    /// Who (principal, or `operator` for the local admin socket without a token).
    pub actor: String,
    /// What, e.g. `grant`, `revoke`, `access.request`, `access.approve`, `reload`,
    /// `keys.rotate`, `approval.request`, `approval.approve`, `approval.deny`,
    /// `approval.withdraw`, `approval.expire`.
    pub action: String,
    /// On what (user, resource, request or grant ID), free-form key=value text.
    pub target: String,
    /// Why (the reason given), or the outcome.
    pub detail: String,
}

/// Current time in milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
