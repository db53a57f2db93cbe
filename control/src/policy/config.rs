//! The `[policy]` section of `sluice.toml`, as written by operators.
//!
//! These types are plain data: [`Policy::compile`](super::Policy::compile) checks them and
//! builds the indexed form that decisions run on. The whole [`PolicyConfig`] also travels
//! to the proxy inside the snapshot (as JSON), so every type here serializes back to the
//! form it was read from.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[policy]` section: rules saying who may open sessions on which resources.
///
/// The default (no rules) denies everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// How long a just-in-time grant may last when the request rule does not set
    /// `max_grant` (a humantime string such as `"8h"`; default 8 hours).
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_max_grant: Option<Duration>,
    /// The rules (`[[policy.rules]]`), in file order. Order matters where the module
    /// documentation says so.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// One `[[policy.rules]]` entry: who (groups or users), on what (resources), how
/// (allow / deny / request) and under which terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique, non-empty name; it appears in denial messages, audit records and
    /// `sluice policy explain`.
    #[serde(default)]
    pub name: String,
    /// The rule applies to members of any of these groups (from the token's groups claim).
    #[serde(default)]
    pub groups: Vec<String>,
    /// ... or to any of these users (token subjects). At least one of `groups` and
    /// `users` must be non-empty.
    #[serde(default)]
    pub users: Vec<String>,
    /// Resource names the rule covers, or `"*"` for every resource. Must not be empty.
    #[serde(default)]
    pub resources: Vec<String>,
    /// What the rule does.
    pub access: Access,
    /// Groups who may approve access requests for, and grant access directly to, the
    /// resources this rule covers. Required (non-empty) for `access = "request"`.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Sessions the rule lets in (or the grants it governs) end after this long
    /// (humantime string, e.g. `"8h"`). Not zero.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_session: Option<Duration>,
    /// For `access = "request"`: the longest just-in-time grant that may be approved
    /// (humantime string, e.g. `"2h"`); default [`PolicyConfig::default_max_grant`].
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_grant: Option<Duration>,
    /// Name of the masking profile applied to sessions the rule lets in (carried through;
    /// the masking itself lives elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masking: Option<String>,
    /// For `access = "allow"`: the rule applies only within these hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<HoursConfig>,
}

/// What a rule does for the principals and resources it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Sessions are allowed (within `hours`, if set).
    Allow,
    /// Sessions are refused, whatever other rules or grants say.
    Deny,
    /// Sessions are allowed only with a just-in-time grant made by one of the rule's
    /// `approvers`.
    Request,
}

impl Access {
    /// The TOML spelling: `allow`, `deny` or `request`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Allow => "allow",
            Access::Deny => "deny",
            Access::Request => "request",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A weekly time window, e.g.
/// `{ days = ["mon","tue","wed","thu","fri"], from = "08:00", to = "18:00", utc_offset = "+02:00" }`.
///
/// Windows do not cross midnight (`from` must be before `to`); write two rules for a night
/// shift. The offset is fixed: there is no daylight-saving-time handling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursConfig {
    /// Days the window is open, as `mon` .. `sun` (full names such as `monday` are also
    /// accepted); every day when absent. Must not be empty when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<String>>,
    /// Start of the window, `HH:MM` (`00:00` to `23:59`), inclusive.
    pub from: String,
    /// End of the window, `HH:MM` (`00:01` to `24:00`), exclusive.
    pub to: String,
    /// The fixed offset `from` and `to` are written in, `+HH:MM` or `-HH:MM` (`Z` and
    /// `UTC` also mean UTC); UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset: Option<String>,
}

/// Serde helper: `Option<Duration>` as a humantime string (`"8h"`, `"1h 30m"`).
pub(crate) mod opt_duration {
    use std::time::Duration;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.collect_str(&humantime::format_duration(*d)),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        humantime::parse_duration(&text).map(Some).map_err(|e| {
            D::Error::custom(format!(
                "invalid duration {text:?} ({e}); write e.g. \"30m\", \"8h\" or \"1h 30m\""
            ))
        })
    }
}
