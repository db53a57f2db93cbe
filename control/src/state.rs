//! Control's live state: just-in-time grants, access requests and revocations. These are
//! the records the store persists, the admin API changes and the snapshot carries to the
//! proxy. Times are milliseconds since the Unix epoch (UTC) so that every copy of a record
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
    /// `keys.rotate`, `session.start`, `session.end`.
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
