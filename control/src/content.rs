//! What a snapshot *says*: the payload control compiles from its config and live state, and
//! the [`View`] the proxy builds from it once per generation.
//!
//! The payload is JSON inside the checksummed envelope of [`crate::snapshot`]: it is read
//! once per generation (not per statement), so readability with `jq` and forward-compatible
//! decoding matter more than decode speed. [`CONTENT_FORMAT`] is bumped on any change that an
//! older proxy would misread; a proxy refuses a format it does not know and keeps its
//! previous view. Fields added later carry `#[serde(default)]`, so a payload without them
//! still decodes (and an older proxy ignores fields it does not know): that is not a format
//! change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sluice_masker::Masker;

use crate::identity::{Identity, IdentityContent};
use crate::policy::{Decision, Policy, PolicyConfig, Subject};
pub use crate::state::{ApprovalDecision, ApprovalScope};
use crate::state::{Grant, Revocation};

/// The payload format this build writes and reads.
pub const CONTENT_FORMAT: u32 = 1;

/// Control's compiled state, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotContent {
    /// Payload format ([`CONTENT_FORMAT`]).
    pub format: u32,
    /// When control compiled it (ms since the epoch).
    pub built_at_ms: u64,
    /// Token verification material (public only).
    pub identity: IdentityContent,
    /// `identity.require_user_match`.
    pub require_user_match: bool,
    /// Configured resource names (the policy is checked against them).
    pub resources: Vec<String>,
    /// The policy section as configured.
    pub policy: PolicyConfig,
    /// Grants in force (or not yet pruned).
    pub grants: Vec<Grant>,
    /// Revocations that can still matter.
    pub revocations: Vec<Revocation>,
    /// Decisions on held statements that a session may still be waiting for (decided
    /// within the last `approval_timeout_ms` + 1 minute), and approvals with
    /// [`ApprovalScope::Fingerprint`] while their session lasts (at most a day).
    #[serde(default)]
    pub approvals: Vec<ApprovalDecision>,
    /// `approvals.timeout`: how long the proxy holds a statement waiting for a decision
    /// before it refuses it (0 in a payload from before approvals: use the default).
    #[serde(default)]
    pub approval_timeout_ms: u64,
    /// The key of the masking styles that derive from the value (`hash`,
    /// `format-preserving`), hex: control makes it once and keeps it in its key
    /// directory, so masked values stay stable across restarts. Empty in a payload from
    /// before masking (every profile then uses an all-zero key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub masking_key: String,
}

impl SnapshotContent {
    /// Serializes for publishing.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data structures to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a payload, refusing another format.
    pub fn decode(payload: &[u8]) -> Result<SnapshotContent, String> {
        #[derive(Deserialize)]
        struct FormatOnly {
            format: u32,
        }
        let probe: FormatOnly = serde_json::from_slice(payload)
            .map_err(|e| format!("snapshot payload is not valid JSON: {e}"))?;
        if probe.format != CONTENT_FORMAT {
            return Err(format!(
                "snapshot content format {} is not the {CONTENT_FORMAT} this proxy reads; upgrade the proxy and control together",
                probe.format
            ));
        }
        serde_json::from_slice(payload).map_err(|e| format!("snapshot payload: {e}"))
    }
}

/// The proxy's compiled form of one snapshot: verifiers and the indexed policy.
#[derive(Debug)]
pub struct View {
    /// Token verification.
    pub identity: Identity,
    /// `identity.require_user_match`.
    pub require_user_match: bool,
    /// The compiled policy.
    pub policy: Policy,
    /// Grants.
    pub grants: Vec<Grant>,
    /// Revocations.
    pub revocations: Vec<Revocation>,
    /// Decisions on held statements ([`SnapshotContent::approvals`]).
    pub approvals: Vec<ApprovalDecision>,
    /// How long the proxy holds a statement waiting for a decision, milliseconds.
    pub approval_timeout_ms: u64,
    /// When control built it.
    pub built_at_ms: u64,
    /// Request ID → index into `approvals`.
    approval_by_id: HashMap<String, usize>,
    /// (session, fingerprint) → index into `approvals` of an approval with fingerprint scope.
    approved_fingerprints: HashMap<(String, String), usize>,
    /// The masking profiles, compiled with the snapshot's key.
    maskers: HashMap<String, Arc<Masker>>,
    masking_key: Vec<u8>,
}

/// `approvals.timeout` assumed for a payload that does not carry one (10 minutes).
pub const DEFAULT_APPROVAL_TIMEOUT_MS: u64 = 600_000;

impl View {
    /// Compiles decoded content. Anything that does not compile refuses the whole
    /// snapshot: the proxy keeps the previous view.
    pub fn compile(content: SnapshotContent) -> Result<View, String> {
        View::compile_after(content, None)
    }

    /// [`compile`](Self::compile), reusing the compiled masking profiles of `previous`
    /// whose configuration and key did not change (building detectors is the costly part,
    /// and most generations only change grants or approvals).
    pub fn compile_after(
        content: SnapshotContent,
        previous: Option<&View>,
    ) -> Result<View, String> {
        let identity = Identity::from_content(&content.identity)?;
        let names: Vec<&str> = content.resources.iter().map(String::as_str).collect();
        let policy = Policy::compile(&content.policy, &names).map_err(|e| e.to_string())?;
        let masking_key = if content.masking_key.is_empty() {
            vec![0; 32]
        } else {
            decode_hex(&content.masking_key).ok_or("snapshot masking_key is not hexadecimal")?
        };
        let mut maskers = HashMap::with_capacity(content.policy.masking.len());
        for (name, profile) in &content.policy.masking {
            let reused = previous.and_then(|p| {
                let same = p.masking_key == masking_key
                    && p.policy.config().masking.get(name) == Some(profile);
                same.then(|| p.maskers.get(name).cloned()).flatten()
            });
            let masker = match reused {
                Some(masker) => masker,
                None => Arc::new(
                    Masker::compile(name, profile, &masking_key)
                        .map_err(|e| format!("policy.masking.{name}: {e}"))?,
                ),
            };
            maskers.insert(name.clone(), masker);
        }
        let mut approval_by_id = HashMap::with_capacity(content.approvals.len());
        let mut approved_fingerprints = HashMap::new();
        for (i, d) in content.approvals.iter().enumerate() {
            approval_by_id.entry(d.id.clone()).or_insert(i);
            if d.approved && d.scope == ApprovalScope::Fingerprint {
                approved_fingerprints
                    .entry((d.session.clone(), d.fingerprint.clone()))
                    .or_insert(i);
            }
        }
        Ok(View {
            identity,
            require_user_match: content.require_user_match,
            policy,
            grants: content.grants,
            revocations: content.revocations,
            approvals: content.approvals,
            approval_timeout_ms: match content.approval_timeout_ms {
                0 => DEFAULT_APPROVAL_TIMEOUT_MS,
                ms => ms,
            },
            built_at_ms: content.built_at_ms,
            approval_by_id,
            approved_fingerprints,
            maskers,
            masking_key,
        })
    }

    /// The compiled masking profile `name` (every profile a rule names exists: the policy
    /// does not compile otherwise).
    pub fn masker(&self, name: &str) -> Option<&Arc<Masker>> {
        self.maskers.get(name)
    }

    /// The decision on the held statement with request ID `id`, once an approver made one
    /// (`None`: still pending, or unknown).
    pub fn approval(&self, id: &str) -> Option<&ApprovalDecision> {
        self.approval_by_id.get(id).map(|&i| &self.approvals[i])
    }

    /// An approval with [`ApprovalScope::Fingerprint`] for statements with `fingerprint` in
    /// `session`: when there is one, such a statement runs without being held again.
    pub fn fingerprint_approved(
        &self,
        session: &str,
        fingerprint: &str,
    ) -> Option<&ApprovalDecision> {
        self.approved_fingerprints
            .get(&(session.to_owned(), fingerprint.to_owned()))
            .map(|&i| &self.approvals[i])
    }

    /// Decodes and compiles a payload.
    pub fn from_payload(payload: &[u8]) -> Result<View, String> {
        View::compile(SnapshotContent::decode(payload)?)
    }

    /// Decodes and compiles a payload, reusing what it can of `previous`
    /// ([`compile_after`](Self::compile_after)).
    pub fn from_payload_after(payload: &[u8], previous: Option<&View>) -> Result<View, String> {
        View::compile_after(SnapshotContent::decode(payload)?, previous)
    }

    /// The policy decision for `subject` on `resource` at `now_ms`, for a credential (token
    /// or live session) that dates from `credential_ms`.
    pub fn decide<'a>(
        &'a self,
        subject: &Subject,
        resource: &str,
        now_ms: u64,
        credential_ms: u64,
    ) -> Decision<'a> {
        self.policy.decide(
            subject,
            resource,
            now_ms,
            credential_ms,
            &self.grants,
            &self.revocations,
        )
    }
}

/// Lowercase or uppercase hex to bytes; `None` when it is not hex.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Milliseconds since the epoch of `t`.
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Access, RuleConfig};

    fn content() -> SnapshotContent {
        SnapshotContent {
            format: CONTENT_FORMAT,
            built_at_ms: 1,
            identity: IdentityContent::default(),
            require_user_match: true,
            resources: vec!["app".into()],
            policy: PolicyConfig {
                default_max_grant: None,
                rules: vec![RuleConfig {
                    name: "eng".into(),
                    groups: vec!["engineering".into()],
                    users: vec![],
                    resources: vec!["app".into()],
                    access: Access::Allow,
                    approvers: vec![],
                    max_session: None,
                    max_grant: None,
                    masking: None,
                    hours: None,
                }],
                ..PolicyConfig::default()
            },
            grants: vec![],
            revocations: vec![],
            approvals: vec![],
            approval_timeout_ms: 60_000,
            masking_key: String::new(),
        }
    }

    fn decision(id: &str, session: &str, approved: bool, scope: ApprovalScope) -> ApprovalDecision {
        ApprovalDecision {
            id: id.into(),
            session: session.into(),
            fingerprint: "00112233aabbccdd".into(),
            approved,
            scope,
            approvers: vec!["carol".into()],
            reason: None,
            decided_at_ms: 5,
        }
    }

    #[test]
    fn approval_decisions_are_found_by_id_and_by_session_and_fingerprint() {
        let mut c = content();
        c.approvals = vec![
            decision("once", "s1", true, ApprovalScope::Statement),
            decision("every", "s1", true, ApprovalScope::Fingerprint),
            decision("no", "s2", false, ApprovalScope::Statement),
        ];
        let view = View::from_payload(&c.encode()).expect("compiles");
        assert_eq!(view.approval_timeout_ms, 60_000);
        assert!(view.approval("once").expect("decided").approved);
        assert!(!view.approval("no").expect("decided").approved);
        assert!(view.approval("pending").is_none());
        let fp = "00112233aabbccdd";
        assert_eq!(
            view.fingerprint_approved("s1", fp).map(|d| d.id.as_str()),
            Some("every")
        );
        assert!(view.fingerprint_approved("s2", fp).is_none(), "a denial");
        assert!(view
            .fingerprint_approved("s1", "ffffffffffffffff")
            .is_none());
        assert!(view.fingerprint_approved("s3", fp).is_none());
    }

    #[test]
    fn a_payload_without_approvals_still_decodes() {
        let mut json: serde_json::Value = serde_json::from_slice(&content().encode()).unwrap();
        let map = json.as_object_mut().expect("object");
        map.remove("approvals");
        map.remove("approval_timeout_ms");
        let view = View::from_payload(&serde_json::to_vec(&json).unwrap()).expect("compiles");
        assert!(view.approvals.is_empty());
        assert_eq!(view.approval_timeout_ms, DEFAULT_APPROVAL_TIMEOUT_MS);
    }

    #[test]
    fn a_payload_round_trips_into_a_view_that_decides() {
        let payload = content().encode();
        assert_eq!(
            SnapshotContent::decode(&payload).expect("decode"),
            content()
        );
        let view = View::from_payload(&payload).expect("compiles");
        let groups = vec!["engineering".to_owned()];
        let subject = Subject {
            user: "alice",
            groups: &groups,
        };
        assert!(matches!(
            view.decide(&subject, "app", 10, 5),
            Decision::Allow(_)
        ));
    }

    #[test]
    fn another_format_or_a_policy_that_does_not_compile_is_refused() {
        let mut newer = content();
        newer.format = CONTENT_FORMAT + 1;
        let err = View::from_payload(&newer.encode()).expect_err("newer format");
        assert!(
            err.contains("upgrade the proxy and control together"),
            "{err}"
        );
        let mut broken = content();
        broken.policy.rules[0].resources = vec!["elsewhere".into()];
        let err = View::from_payload(&broken.encode()).expect_err("unknown resource");
        assert!(err.contains("elsewhere"), "{err}");
        assert!(View::from_payload(b"not json").is_err());
    }
}
