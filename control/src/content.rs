//! What a snapshot *says*: the payload control compiles from its config and live state, and
//! the [`View`] the proxy builds from it once per generation.
//!
//! The payload is JSON inside the checksummed envelope of [`crate::snapshot`]: it is read
//! once per generation (not per statement), so readability with `jq` and forward-compatible
//! decoding matter more than decode speed. [`CONTENT_FORMAT`] is bumped on any change that an
//! older proxy would misread; a proxy refuses a format it does not know and keeps its
//! previous view.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::identity::{Identity, IdentityContent};
use crate::policy::{Decision, Policy, PolicyConfig, Subject};
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
    /// When control built it.
    pub built_at_ms: u64,
}

impl View {
    /// Compiles decoded content. Anything that does not compile refuses the whole
    /// snapshot: the proxy keeps the previous view.
    pub fn compile(content: SnapshotContent) -> Result<View, String> {
        let identity = Identity::from_content(&content.identity)?;
        let names: Vec<&str> = content.resources.iter().map(String::as_str).collect();
        let policy = Policy::compile(&content.policy, &names).map_err(|e| e.to_string())?;
        Ok(View {
            identity,
            require_user_match: content.require_user_match,
            policy,
            grants: content.grants,
            revocations: content.revocations,
            built_at_ms: content.built_at_ms,
        })
    }

    /// Decodes and compiles a payload.
    pub fn from_payload(payload: &[u8]) -> Result<View, String> {
        View::compile(SnapshotContent::decode(payload)?)
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
            },
            grants: vec![],
            revocations: vec![],
        }
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
