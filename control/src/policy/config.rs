//! The `[policy]` section of `sluice.toml`, as written by operators.
//!
//! These types are plain data: [`Policy::compile`](super::Policy::compile) checks them and
//! builds the indexed form that decisions run on. The whole [`PolicyConfig`] also travels
//! to the proxy inside the snapshot (as JSON), so every type here serializes back to the
//! form it was read from.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use sluice_masker::ProfileConfig;

/// The `[policy]` section: rules saying who may open sessions on which resources, and
/// which statements they may run there.
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
    /// Globs (`*`, `?`) naming the functions whose call sets a statement's
    /// `dangerous_function` flag, matched like [`StatementRuleConfig::functions`]. When
    /// absent, [`DEFAULT_DANGEROUS_FUNCTIONS`](super::DEFAULT_DANGEROUS_FUNCTIONS); when
    /// present, it replaces that list entirely (`[]` means no function is dangerous).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dangerous_functions: Option<Vec<String>>,
    /// Whether audit events keep the statement text with its literal values. Default
    /// `false`: they keep the normalized text, with every literal replaced by a placeholder.
    #[serde(default, skip_serializing_if = "is_false")]
    pub audit_literals: bool,
    /// The statement rules (`[[policy.statements]]`), in file order: the first that matches
    /// a statement decides it; a statement no rule matches is denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statements: Vec<StatementRuleConfig>,
    /// Masking profiles by name (`[policy.masking.NAME]`), which access rules select with
    /// `masking = "NAME"`: the column rules, content detectors and styles applied to what
    /// the database returns to those sessions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub masking: BTreeMap<String, ProfileConfig>,
}

fn is_false(b: &bool) -> bool {
    !*b
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

/// One `[[policy.statements]]` entry: who (groups or users), where (resources), which
/// statements (every criterion present must match; each is "any of") and what happens to
/// them (allow / deny / request).
///
/// Absent criteria match every statement, except that `classes` absent means `["*"]`:
/// every class but `unknown` and `copy_program`, which only a rule naming them matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementRuleConfig {
    /// Unique (among statement rules), non-empty name; it appears in denial messages,
    /// approval requests, audit records and `sluice policy explain`.
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
    /// Statement classes (`read`, `write`, `ddl`, `dcl`, `admin`, `transaction`,
    /// `session`, `copy_in`, `copy_out`, `copy_program`, `procedural`, `unknown`) the rule
    /// matches; `"*"` stands for every class except `unknown` and `copy_program`. Absent
    /// means `["*"]`. Only `deny` rules may name `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// The statement has any of these flags (`no_where`, `row_lock`, `server_file`,
    /// `dangerous_function`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<String>>,
    /// Globs (`*` any run of characters, `?` one character; ASCII case-insensitive) of
    /// which any must match a table the statement touches. A glob without a dot matches
    /// the table's name (`orders` matches `orders` and `public.orders`); a glob with
    /// dots matches as many trailing parts of the name (`public.orders` matches
    /// `public.orders` but not an unqualified `orders`, whose schema depends on the
    /// session's `search_path`: write deny rules without the schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
    /// Globs, matched like `tables`, of which any must match a function the statement
    /// calls (`pg_sleep` matches `pg_sleep` and `pg_catalog.pg_sleep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<String>>,
    /// Query-string fingerprints (16 hex digits, as `sluice policy explain --query`
    /// prints them) of which any must be the statement's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprints: Option<Vec<String>>,
    /// Literal substrings of which any must occur in the raw query text, ASCII
    /// case-insensitively. A last resort for deny lists: comments, quoting and escapes
    /// change the raw text without changing the statement, so prefer the other criteria.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patterns: Option<Vec<String>>,
    /// What happens to matching statements: `allow` runs them, `deny` refuses them,
    /// `request` holds each until one of `approvers` approves it.
    pub access: Access,
    /// For `access = "request"` (required, non-empty there; not allowed elsewhere): the
    /// groups whose members may approve a held statement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
}

/// What a rule does for the principals and resources (and, for statement rules, the
/// statements) it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Sessions are allowed (within `hours`, if set); a statement runs.
    Allow,
    /// Sessions are refused, whatever other rules or grants say; a statement is refused.
    Deny,
    /// Sessions are allowed only with a just-in-time grant made by one of the rule's
    /// `approvers`; a statement is held until one of them approves it.
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
