//! Masking profiles as the policy file states them (`[policy.masking.NAME]`), before
//! compilation. Plain serde data: control validates it by compiling it
//! ([`crate::Masker::compile`]) and carries it to the proxy inside the snapshot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One masking profile: which columns are masked by rule, which content detectors scan
/// every other text value, and in which style each is masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// Built-in content detectors that scan every text value of a result (and COPY data,
    /// error and notice text, notification payloads). `None` (the field left out) means
    /// all of them; `[]` turns content detection off (column rules still apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detectors: Option<Vec<DetectorKind>>,
    /// Style of a value found by a detector when `detector_styles` does not name it.
    /// Default: `partial`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<Style>,
    /// Style per detector, overriding `style`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub detector_styles: BTreeMap<DetectorKind, Style>,
    /// National phone formats the `phone` detector knows besides E.164 (`+` and 8–15
    /// digits): ISO 3166 country codes among `US`, `GB`, `DE`, `FR`, `IN`. Default `["US"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_regions: Option<Vec<String>>,
    /// Column rules, first match wins for a column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<ColumnRule>,
    /// User-defined literal lists (matched with Aho-Corasick).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub literals: Vec<LiteralRule>,
    /// User-defined regular expressions (compiled to a bounded DFA; no backtracking).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<PatternRule>,
}

/// A rule naming columns of a result. At least one of `column`, `table`, `type` is set;
/// all that are set must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnRule {
    /// Name for counters and explanations; default `column:<column glob>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Glob (`*`, `?`, case-insensitive) on a column name. Without `table`: the result
    /// column's name as the RowDescription gives it (`SELECT email AS e` is column `e`).
    /// With `table`: the source column's own name in that table, so an alias does not
    /// hide it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Glob on `schema.table` of the column's source table, for result columns that come
    /// straight from a table column (the RowDescription carries its table OID; the proxy
    /// resolves names through the catalog once per session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Type names (`bytea`, `inet`, `jsonb`, …) or numeric type OIDs.
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "type")]
    pub types: Vec<String>,
    /// How the column's values are masked. Default `redact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<Style>,
}

/// A list of literal strings to mask wherever they appear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiteralRule {
    /// Name for counters and explanations.
    pub name: String,
    /// The literals (non-empty strings).
    pub values: Vec<String>,
    /// ASCII case-insensitive matching. Default `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub case_insensitive: bool,
    /// Default `redact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<Style>,
}

/// A user-defined regular expression to mask wherever it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternRule {
    /// Name for counters and explanations.
    pub name: String,
    /// The expression (Rust `regex` syntax, no look-around or back-references). Its
    /// matches may be at most 256 bytes long: longer matches are not masked past that.
    pub regex: String,
    /// Default `redact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<Style>,
}

/// The built-in content detectors. Each pairs a cheap prefilter with a validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// Payment card numbers: 13–19 digits, optionally grouped by spaces or dashes,
    /// Luhn-valid, with a known issuer prefix.
    Card,
    /// Email addresses.
    Email,
    /// US social security numbers `AAA-GG-SSSS` (or 9 digits with separators) with the
    /// valid area/group/serial rules.
    Ssn,
    /// IBANs, mod-97 checked, with or without spaces.
    Iban,
    /// Phone numbers: E.164 and the configured national forms.
    Phone,
    /// IPv4 addresses.
    Ipv4,
    /// IPv6 addresses.
    Ipv6,
    /// JSON web tokens (three base64url parts, the first decoding to a JSON header).
    Jwt,
    /// Secrets with a recognisable shape: AWS access key IDs, PEM private key blocks,
    /// `sk_live_…`/`rk_live_…` keys, GitHub tokens, Slack tokens.
    Secret,
}

impl DetectorKind {
    /// Every built-in detector.
    pub const ALL: [DetectorKind; 9] = [
        DetectorKind::Card,
        DetectorKind::Email,
        DetectorKind::Ssn,
        DetectorKind::Iban,
        DetectorKind::Phone,
        DetectorKind::Ipv4,
        DetectorKind::Ipv6,
        DetectorKind::Jwt,
        DetectorKind::Secret,
    ];

    /// The name used in the policy file and in counters.
    pub fn name(self) -> &'static str {
        match self {
            DetectorKind::Card => "card",
            DetectorKind::Email => "email",
            DetectorKind::Ssn => "ssn",
            DetectorKind::Iban => "iban",
            DetectorKind::Phone => "phone",
            DetectorKind::Ipv4 => "ipv4",
            DetectorKind::Ipv6 => "ipv6",
            DetectorKind::Jwt => "jwt",
            DetectorKind::Secret => "secret",
        }
    }
}

/// How a masked value is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Style {
    /// A fixed `****`, whatever the value.
    Redact,
    /// Keep the part that identifies nothing on its own (a card's or SSN's last 4 digits,
    /// an email's first letter and top-level domain), mask the rest, keep separators.
    Partial,
    /// A keyed HMAC-SHA-256 of the value, truncated (stable for one key, so joins and
    /// group-bys on masked output still line up).
    Hash,
    /// SQL NULL (for a whole column); a found value inside a longer text becomes `****`.
    Null,
    /// Same length and shape: digits stay digits, letters stay letters (derived from the
    /// keyed hash), punctuation is kept.
    FormatPreserving,
}
