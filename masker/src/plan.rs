//! A compiled masking profile ([`Masker`]) and the masking plan of a result.
//!
//! # What this module owns
//!
//! Which column of a result is masked and how, decided once per `RowDescription`:
//!
//! * [`Masker::compile`] checks a [`ProfileConfig`] completely (globs, type names, rule
//!   names, and the detector configuration through [`Detectors::compile`]) so that a
//!   profile that compiles cannot fail on the data path;
//! * a column is **masked by a rule** (the first [`ColumnRule`] that matches it), **scanned
//!   by the detectors** (when the profile has any and the column's type can hold text), or
//!   **passed through**; [`Masker::describe_plan`] states that verdict for `sluice policy
//!   explain`, and the wire side builds the same verdicts into per-column operations
//!   ([`Plan`]) once the result formats are known;
//! * [`Masker::catalog_query`] is the one catalog lookup a session needs when rules name
//!   tables: a `RowDescription` carries table OIDs and attribute numbers, not names.
//!
//! # Why it is shaped this way
//!
//! Rows are the hot path and descriptions are not: everything that needs a string
//! comparison (globs, type names, catalog names) happens here, per description, and a row
//! only walks a slice of small [`Op`]s. A description whose columns all pass through gets a
//! plan that says so in one flag, so its rows are forwarded without being looked at.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::detect::Detectors;
use crate::style::MaskKey;
use crate::{ColumnRule, ConfigError, ProfileConfig, Style};

/// Name under which values masked because their columns were unknown (fail-closed
/// masking) are counted by [`crate::SessionMasker::counts`].
pub const UNKNOWN_COLUMNS_RULE: &str = "unknown-columns";

/// A compiled masking profile: its column rules, its content detectors and its key.
/// Immutable once compiled; shared by every session of a worker through an `Arc`.
#[derive(Debug)]
pub struct Masker {
    name: String,
    pub(crate) detectors: Detectors,
    /// Whether any detector is on.
    pub(crate) detect: bool,
    pub(crate) key: MaskKey,
    rules: Vec<Rule>,
    /// Detector rule names, then column rule names.
    rule_names: Vec<String>,
    /// Index in `rule_names` of the first column rule.
    pub(crate) first_column_rule: usize,
    catalog_query: Option<String>,
    /// Finds the SQL words that create or drop prepared statements and portals behind the
    /// protocol's back (`PREPARE`, `DEALLOCATE`, `DISCARD`, `DECLARE`, `CLOSE`).
    pub(crate) session_words: aho_corasick::AhoCorasick,
}

// The proxy shares one `Masker` between the sessions of a worker.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Masker>();
};

/// A column rule, compiled.
#[derive(Debug)]
struct Rule {
    column: Option<Glob>,
    table: Option<Glob>,
    types: Vec<u32>,
    style: Style,
}

/// One column of a result, as `sluice policy explain` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// The result column's name (an alias if the query gave one).
    pub name: String,
    /// `schema.table` of the column's source table, when it comes straight from one.
    pub table: Option<String>,
    /// The source column's own name in that table.
    pub source_column: Option<String>,
    /// The column's type OID.
    pub type_oid: u32,
}

/// One row of the answer to [`Masker::catalog_query`]: a column of a table some rule names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    /// `pg_class.oid` of the table.
    pub table_oid: u32,
    /// `pg_attribute.attnum` of the column.
    pub attnum: i16,
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// Column name.
    pub column: String,
}

impl CatalogColumn {
    /// Reads one row of the catalog query's result as the proxy receives it (text format,
    /// five columns). `None` if the row does not have that shape.
    pub fn from_text_row(columns: &[Option<&[u8]>]) -> Option<CatalogColumn> {
        let text = |i: usize| -> Option<&str> {
            columns
                .get(i)
                .copied()
                .flatten()
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        if columns.len() != 5 {
            return None;
        }
        Some(CatalogColumn {
            table_oid: text(0)?.parse().ok()?,
            attnum: text(1)?.parse().ok()?,
            schema: text(2)?.to_owned(),
            table: text(3)?.to_owned(),
            column: text(4)?.to_owned(),
        })
    }
}

/// What happens to a column's values, as `sluice policy explain` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnVerdict {
    /// A column rule masks every value.
    Masked {
        /// The rule's name.
        rule: String,
        /// Its style.
        style: Style,
    },
    /// The content detectors scan every value.
    Scanned {
        /// Names of the detector, literal and pattern rules.
        detectors: Vec<String>,
    },
    /// Values go through unchanged.
    PassedThrough,
}

impl fmt::Display for ColumnVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnVerdict::Masked { rule, style } => {
                write!(f, "masked by rule \"{rule}\" ({})", style_name(*style))
            }
            ColumnVerdict::Scanned { detectors } => {
                f.write_str("scanned by detectors ")?;
                for (i, d) in detectors.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(d)?;
                }
                Ok(())
            }
            ColumnVerdict::PassedThrough => f.write_str("passed through"),
        }
    }
}

/// The policy-file name of a style.
pub fn style_name(style: Style) -> &'static str {
    match style {
        Style::Redact => "redact",
        Style::Partial => "partial",
        Style::Hash => "hash",
        Style::Null => "null",
        Style::FormatPreserving => "format-preserving",
    }
}

impl Masker {
    /// Compiles profile `name`. Everything is checked here, so a profile that compiles
    /// cannot fail later: globs, type names, rule names, and the detector configuration.
    /// Errors name the profile and the field.
    pub fn compile(name: &str, profile: &ProfileConfig, key: &[u8]) -> Result<Masker, ConfigError> {
        let err = |field: &str, what: &str| {
            ConfigError(format!("masking profile \"{name}\": {field}: {what}"))
        };
        let detectors = Detectors::compile(profile)
            .map_err(|e| ConfigError(format!("masking profile \"{name}\": {}", e.0)))?;
        let mut rule_names: Vec<String> = detectors.rule_names().to_vec();
        let first_column_rule = rule_names.len();
        let mut rules = Vec::with_capacity(profile.columns.len());
        for (i, c) in profile.columns.iter().enumerate() {
            let field = |f: &str| format!("columns[{i}].{f}");
            let (rule, rule_name) = compile_rule(c).map_err(|(f, what)| err(&field(f), &what))?;
            if rule_names.contains(&rule_name) {
                let what = if c.name.is_some() {
                    format!("\"{rule_name}\" is already the name of another rule")
                } else {
                    format!(
                        "the default name \"{rule_name}\" is already the name of another rule; \
                         give this rule its own `name`"
                    )
                };
                return Err(err(&field("name"), &what));
            }
            rule_names.push(rule_name);
            rules.push(rule);
        }
        if let Some(i) = rule_names.iter().position(|n| n == UNKNOWN_COLUMNS_RULE) {
            let field = match i.checked_sub(first_column_rule) {
                Some(c) => format!("columns[{c}].name"),
                None => "literals, patterns".to_owned(),
            };
            return Err(err(
                &field,
                &format!(
                    "\"{UNKNOWN_COLUMNS_RULE}\" is reserved (it counts values of unknown columns)"
                ),
            ));
        }
        // Rule indexes, and the unknown-columns pseudo-rule after them, are u16.
        if rule_names.len() >= usize::from(u16::MAX) {
            return Err(err("columns", "too many rules (at most 65534 in all)"));
        }
        let catalog_query = catalog_query(&rules);
        let session_words = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(SESSION_WORDS)
            .map_err(|_| {
                err(
                    "columns",
                    "internal error building the session-word matcher",
                )
            })?;
        Ok(Masker {
            name: name.to_owned(),
            detect: !detectors.is_empty(),
            detectors,
            key: MaskKey::new(key),
            rules,
            rule_names,
            first_column_rule,
            catalog_query,
            session_words,
        })
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every rule's name: detector, literal and pattern rules (in
    /// [`Detectors::rule_names`] order), then column rules. Counters use these names.
    pub fn rule_names(&self) -> &[String] {
        &self.rule_names
    }

    /// Whether the profile has column rules. Without names for its columns (COPY output),
    /// a session under such a profile masks every value.
    pub fn has_column_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Whether the profile masks nothing at all (no column rules, no detectors): sessions
    /// under it forward every frame unchanged.
    pub fn is_inert(&self) -> bool {
        self.rules.is_empty() && !self.detect
    }

    /// The SQL a session runs once, before relaying, when some rule names tables: it
    /// returns `(table_oid, attnum, schema, table, column)`, all as text, for the columns
    /// of the tables that match a rule's `table` glob. Feed the rows to
    /// [`crate::SessionMasker::set_catalog`] (see [`CatalogColumn::from_text_row`]).
    /// The globs are turned into `ILIKE` patterns with every `%`, `_` and escape character
    /// of the glob escaped, in `E''` literals, so the query reads the same whatever
    /// `standard_conforming_strings` is.
    pub fn catalog_query(&self) -> Option<String> {
        self.catalog_query.clone()
    }

    /// What happens to each column of a result with these columns (for `sluice policy
    /// explain`). Result formats are not known here: a binary column of a non-text type
    /// that a rule masks is sent as NULL on the wire.
    pub fn describe_plan(&self, columns: &[ColumnInfo]) -> Vec<ColumnVerdict> {
        columns
            .iter()
            .map(|c| {
                let source = match &c.table {
                    Some(t) => Source::Table {
                        qualified: t,
                        column: c.source_column.as_deref(),
                    },
                    None => Source::None,
                };
                match self.column_action(&c.name, source, c.type_oid) {
                    Action::Rule { rule, style } => ColumnVerdict::Masked {
                        rule: self.rule_name(rule).to_owned(),
                        style,
                    },
                    Action::Detect if TypeKind::of(c.type_oid) != TypeKind::NoScan => {
                        ColumnVerdict::Scanned {
                            detectors: self
                                .rule_names
                                .get(..self.first_column_rule)
                                .unwrap_or_default()
                                .to_vec(),
                        }
                    }
                    Action::Detect | Action::Pass => ColumnVerdict::PassedThrough,
                }
            })
            .collect()
    }

    /// The longest span the detectors report (0 without detectors).
    /// The text with every value the detectors find masked, or `None` when they find
    /// nothing (or none is on). For text the gateway itself writes down, such as a
    /// statement's literals in an audit event: what the session may not see, its audit
    /// trail does not keep either.
    pub fn mask_text(&self, text: &str) -> Option<String> {
        if !self.detect {
            return None;
        }
        let mut out = Vec::with_capacity(text.len());
        let mut counts = vec![0; self.detectors.rule_names().len()];
        let mut spans = Vec::new();
        let found = self.detectors.mask_into(
            text.as_bytes(),
            &self.key,
            false,
            &mut out,
            &mut counts,
            &mut spans,
        );
        found.then(|| String::from_utf8_lossy(&out).into_owned())
    }

    /// What a client sent, for the session's recording: every frame of `frames` (whole
    /// PostgreSQL frontend messages, each a tag, a length and a body) with each value the
    /// detectors find in its body overwritten by a fill of the same length, so the frames
    /// stay well formed. Appends the result to `out` and returns `true`, or returns
    /// `false` (nothing appended) when nothing is found or no detector is on. Bytes after
    /// the last whole frame are masked as one body.
    pub fn mask_client_frames(&self, frames: &[u8], out: &mut Vec<u8>) -> bool {
        if !self.detect {
            return false;
        }
        let mut counts = vec![0; self.detectors.rule_names().len()];
        let mut spans = Vec::new();
        let mut body = Vec::new();
        let mut found = false;
        let start = out.len();
        let mut rest = frames;
        while !rest.is_empty() {
            // Header: tag and a length that counts itself; a frame that does not fit is
            // treated as a body to the end.
            let len = rest
                .get(1..5)
                .and_then(|l| <[u8; 4]>::try_from(l).ok())
                .map(|l| u32::from_be_bytes(l) as usize)
                .filter(|&l| l >= 4 && l < rest.len());
            let (header, frame_body, next) = match len {
                Some(l) => (&rest[..5], &rest[5..1 + l], &rest[1 + l..]),
                None => (&rest[..0], rest, &rest[rest.len()..]),
            };
            out.extend_from_slice(header);
            body.clear();
            if self.detectors.mask_into(
                frame_body,
                &self.key,
                true,
                &mut body,
                &mut counts,
                &mut spans,
            ) {
                found = true;
                out.extend_from_slice(&body);
            } else {
                out.extend_from_slice(frame_body);
            }
            rest = next;
        }
        if !found {
            out.truncate(start);
        }
        found
    }

    pub(crate) fn detectors_max_span(&self) -> usize {
        if self.detect {
            self.detectors.max_span_len()
        } else {
            0
        }
    }

    /// The name of rule `index` (an index into [`Masker::rule_names`]), or
    /// [`UNKNOWN_COLUMNS_RULE`] past the end.
    pub(crate) fn rule_name(&self, index: u16) -> &str {
        self.rule_names
            .get(usize::from(index))
            .map_or(UNKNOWN_COLUMNS_RULE, String::as_str)
    }

    /// Index of the pseudo-rule counting fail-closed masking.
    pub(crate) fn unknown_rule(&self) -> u16 {
        u16::try_from(self.rule_names.len()).unwrap_or(u16::MAX)
    }

    /// The first rule matching a column, or whether the detectors scan it.
    pub(crate) fn column_action(&self, name: &str, source: Source<'_>, type_oid: u32) -> Action {
        let mut lower_name: Option<String> = None;
        let mut lower_table: Option<String> = None;
        let mut lower_source: Option<Option<String>> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.types.is_empty() && !rule.types.contains(&type_oid) {
                continue;
            }
            let column_matches = match (&rule.table, &rule.column) {
                (None, None) => true,
                (None, Some(glob)) => {
                    glob.matches(lower_name.get_or_insert_with(|| name.to_lowercase()))
                }
                (Some(table), column) => {
                    let Source::Table {
                        qualified,
                        column: src,
                    } = source
                    else {
                        continue;
                    };
                    if !table.matches(lower_table.get_or_insert_with(|| qualified.to_lowercase())) {
                        continue;
                    }
                    match (
                        column,
                        lower_source.get_or_insert_with(|| src.map(str::to_lowercase)),
                    ) {
                        (None, _) => true,
                        (Some(glob), Some(src)) => glob.matches(src),
                        // The table is known but the column is not (added since the
                        // catalog was read): fail closed.
                        (Some(_), None) => true,
                    }
                }
            };
            if column_matches {
                let index = self.first_column_rule + i;
                return Action::Rule {
                    rule: u16::try_from(index).unwrap_or(u16::MAX),
                    style: rule.style,
                };
            }
        }
        if self.detect {
            Action::Detect
        } else {
            Action::Pass
        }
    }

    /// Whether a column named in an error's `Key (…)=(…)` detail may be one a rule names.
    /// Only names are known there: a rule's `type` cannot be checked and counts as a match,
    /// and its `table` is checked against `table` when the error names one.
    pub(crate) fn names_error_column(&self, column: &str, table: Option<&str>) -> Option<u16> {
        let column = column.to_lowercase();
        let table = table.map(str::to_lowercase);
        for (i, rule) in self.rules.iter().enumerate() {
            let table_ok = match (&rule.table, &table) {
                (Some(glob), Some(t)) => glob.matches(t),
                _ => true,
            };
            let column_ok = rule.column.as_ref().is_none_or(|g| g.matches(&column));
            if table_ok && column_ok {
                return u16::try_from(self.first_column_rule + i).ok();
            }
        }
        None
    }

    /// Whether some rule has a `table` glob matching `qualified` (`schema.table`).
    fn any_table_rule_matches(&self, qualified: &str) -> bool {
        let lower = qualified.to_lowercase();
        self.rules
            .iter()
            .any(|r| r.table.as_ref().is_some_and(|g| g.matches(&lower)))
    }

    /// Builds the description of a result from its `RowDescription` fields.
    pub(crate) fn describe(&self, fields: &[Field<'_>], catalog: &Catalog) -> Desc {
        let mut all_pass = true;
        let columns: Box<[ColumnPlan]> = fields
            .iter()
            .map(|f| {
                let name = String::from_utf8_lossy(f.name);
                let table = catalog.tables.get(&f.table_oid);
                let source = match table {
                    Some(t) => Source::Table {
                        qualified: &t.qualified,
                        column: t.columns.get(&f.attnum).map(String::as_str),
                    },
                    None => Source::None,
                };
                let action = self.column_action(&name, source, f.type_oid);
                let kind = TypeKind::of(f.type_oid);
                let passes = match action {
                    Action::Pass => true,
                    Action::Detect => kind == TypeKind::NoScan,
                    Action::Rule { .. } => false,
                };
                if !passes {
                    all_pass = false;
                }
                ColumnPlan {
                    action,
                    kind,
                    binary: f.format != 0,
                    name: name.into(),
                }
            })
            .collect();
        Desc {
            columns,
            all_pass,
            own: std::sync::OnceLock::new(),
        }
    }

    /// The per-column operations for a result with description `desc`, its formats taken
    /// from `formats` when given (a `Bind` for a described statement) or from the
    /// description itself (a `RowDescription` of a query or portal).
    pub(crate) fn plan(&self, desc: &Desc, formats: Option<&Formats>) -> Plan {
        let mut nulled: Vec<(&str, u16)> = Vec::new();
        let ops: Box<[Op]> = desc
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let binary = formats.map_or(c.binary, |f| f.binary(i));
                let op = c.op(binary);
                if let (Op::Null { rule }, Action::Rule { style, .. }) = (op, c.action) {
                    if style != Style::Null {
                        nulled.push((&c.name, rule));
                    }
                }
                op
            })
            .collect();
        let all_pass = ops.iter().all(|o| matches!(o, Op::Pass));
        let notice = (!nulled.is_empty()).then(|| binary_notice(self, &nulled));
        Plan {
            ops,
            all_pass,
            notice,
        }
    }
}

/// The words that change prepared statements or portals from SQL.
const SESSION_WORDS: [&str; 5] = ["prepare", "deallocate", "discard", "declare", "close"];

/// Which SQL words appear (as whole words, anywhere, strings included) in a query text:
/// `(statements, portals)`: whether named prepared statements, resp. named portals, may
/// have been created or dropped behind the protocol's back.
pub(crate) fn session_words(masker: &Masker, sql: &[u8]) -> (bool, bool) {
    let (mut statements, mut portals) = (false, false);
    for m in masker.session_words.find_iter(sql) {
        let before = m.start().checked_sub(1).and_then(|i| sql.get(i));
        let after = sql.get(m.end());
        let word_char = |b: Option<&u8>| {
            b.is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80)
        };
        if word_char(before) || word_char(after) {
            continue;
        }
        // 0 prepare, 1 deallocate, 2 discard drop or make statements (and DISCARD ALL
        // portals); 3 declare, 4 close make or drop cursors (portals).
        if m.pattern().as_usize() <= 2 {
            statements = true;
        }
        portals = true;
    }
    (statements, portals)
}

fn binary_notice(masker: &Masker, nulled: &[(&str, u16)]) -> Box<[u8]> {
    let mut message = String::from("sluice: ");
    message.push_str(if nulled.len() == 1 {
        "column "
    } else {
        "columns "
    });
    for (i, (name, _)) in nulled.iter().enumerate() {
        if i > 0 {
            message.push_str(", ");
        }
        message.push('"');
        message.push_str(name);
        message.push('"');
    }
    message.push_str(if nulled.len() == 1 { " is" } else { " are" });
    message.push_str(" masked (rule");
    let mut rules: Vec<&str> = nulled.iter().map(|(_, r)| masker.rule_name(*r)).collect();
    rules.dedup();
    if rules.len() > 1 {
        message.push('s');
    }
    for (i, r) in rules.iter().enumerate() {
        message.push_str(if i == 0 { " \"" } else { ", \"" });
        message.push_str(r);
        message.push('"');
    }
    message.push_str(
        ") but sent in binary format, which the gateway cannot rewrite for this type, \
         so its values are sent as NULL",
    );
    let mut out = Vec::new();
    crate::wire::frames::notice(
        &mut out,
        &message,
        Some("Request text format for masked columns to see them in their masking style."),
    );
    out.into_boxed_slice()
}

/// Where a result column comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source<'a> {
    /// Not a table column, or a table the catalog does not know.
    None,
    /// A column of a known table.
    Table {
        /// `schema.table`.
        qualified: &'a str,
        /// The column's name in the table, if the catalog has it.
        column: Option<&'a str>,
    },
}

/// What a column of a result is subject to, before formats are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Values go through.
    Pass,
    /// A column rule masks every value (`rule`: index into the rule names).
    Rule { rule: u16, style: Style },
    /// The detectors scan every value.
    Detect,
}

/// How a type's values look, for deciding what can be rewritten or scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypeKind {
    /// Text in both formats (`text`, `varchar`, `bpchar`, `name`, `xml`, `unknown`).
    Text,
    /// `json`: text in both formats.
    Json,
    /// `jsonb`: text, after a version byte in binary format.
    Jsonb,
    /// Values that cannot hold anything a detector looks for (booleans, small integers,
    /// floats, dates and times, UUIDs, OIDs): never scanned.
    NoScan,
    /// Binary format is fixed-layout numbers or addresses (`int8`, `numeric`, `inet`, …):
    /// scanned as text, passed through as binary.
    Fixed,
    /// Anything else (arrays, records, `bytea`, extension types): scanned as text, scanned
    /// in place (same length) as binary.
    Other,
}

impl TypeKind {
    pub(crate) fn of(oid: u32) -> TypeKind {
        match oid {
            25 | 1043 | 1042 | 19 | 142 | 705 | 1790 => TypeKind::Text,
            114 => TypeKind::Json,
            3802 => TypeKind::Jsonb,
            16
            | 18
            | 21
            | 23
            | 24
            | 26
            | 27
            | 28
            | 29
            | 700
            | 701
            | 790
            | 1082
            | 1083
            | 1114
            | 1184
            | 1186
            | 1266
            | 1560
            | 1562
            | 2202..=2206
            | 2950
            | 3220
            | 3734
            | 3769
            | 4089
            | 4096
            | 5069 => TypeKind::NoScan,
            20 | 1700 | 869 | 650 | 829 | 774 | 600..=604 | 628 | 718 => TypeKind::Fixed,
            _ => TypeKind::Other,
        }
    }
}

/// One field of a `RowDescription`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) table_oid: u32,
    pub(crate) attnum: i16,
    pub(crate) type_oid: u32,
    pub(crate) format: i16,
}

/// A result's columns: what each is subject to, independent of the result formats.
#[derive(Debug)]
pub(crate) struct Desc {
    columns: Box<[ColumnPlan]>,
    /// No column needs any work in any format.
    pub(crate) all_pass: bool,
    /// The plan with the description's own formats, built on first use.
    own: std::sync::OnceLock<Arc<Plan>>,
}

impl Desc {
    /// Number of columns (saturating: a RowDescription cannot describe more).
    pub(crate) fn columns(&self) -> u16 {
        u16::try_from(self.columns.len()).unwrap_or(u16::MAX)
    }

    /// The plan for this description with `formats` (a `Bind`'s), or with its own formats
    /// (shared, built once) when `formats` is `None`.
    pub(crate) fn plan(
        &self,
        masker: &Masker,
        formats: Option<&Formats>,
        pass: &Arc<Plan>,
    ) -> Arc<Plan> {
        if self.all_pass {
            return pass.clone();
        }
        match formats {
            Some(f) => Arc::new(masker.plan(self, Some(f))),
            None => self
                .own
                .get_or_init(|| Arc::new(masker.plan(self, None)))
                .clone(),
        }
    }
}

#[derive(Debug)]
struct ColumnPlan {
    action: Action,
    kind: TypeKind,
    /// The format in the `RowDescription` itself.
    binary: bool,
    name: Box<str>,
}

impl ColumnPlan {
    fn op(&self, binary: bool) -> Op {
        match self.action {
            Action::Pass => Op::Pass,
            Action::Rule { rule, style } => {
                if style == Style::Null {
                    return Op::Null { rule };
                }
                let json = match (self.kind, binary) {
                    (TypeKind::Json, _) | (TypeKind::Jsonb, false) => Json::Text,
                    (TypeKind::Jsonb, true) => Json::Binary,
                    (TypeKind::Text, _) | (_, false) => Json::No,
                    (_, true) => return Op::Null { rule },
                };
                Op::Style { rule, style, json }
            }
            Action::Detect => match (self.kind, binary) {
                (TypeKind::NoScan, _) | (TypeKind::Fixed, true) => Op::Pass,
                (TypeKind::Jsonb, true) => Op::Detect { skip: 1 },
                (TypeKind::Other, true) => Op::DetectSameLength,
                _ => Op::Detect { skip: 0 },
            },
        }
    }
}

/// How a value of a column is rewritten, formats known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Unchanged.
    Pass,
    /// SQL NULL (style `null`, or a binary value of a type that cannot be rewritten).
    Null { rule: u16 },
    /// The whole value in `style`.
    Style { rule: u16, style: Style, json: Json },
    /// The detectors, spans rewritten in their style; `skip` leading bytes kept (the
    /// `jsonb` version byte).
    Detect { skip: u8 },
    /// The detectors over raw binary bytes, spans overwritten in place.
    DetectSameLength,
}

/// Whether a masked value must stay a JSON document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Json {
    No,
    /// Written as a JSON string.
    Text,
    /// A `jsonb` binary value: the version byte, then a JSON string.
    Binary,
}

/// A result's per-column operations.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) ops: Box<[Op]>,
    /// Every op is `Pass`: rows are forwarded unread.
    pub(crate) all_pass: bool,
    /// A NoticeResponse frame to send before the first row (binary columns a rule names
    /// that are sent as NULL).
    pub(crate) notice: Option<Box<[u8]>>,
}

impl Plan {
    /// The plan of a result nothing is done to.
    pub(crate) fn pass() -> Plan {
        Plan {
            ops: Box::new([]),
            all_pass: true,
            notice: None,
        }
    }
}

/// Result format codes a `Bind` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Formats {
    /// No codes: every column in text.
    Text,
    /// One code for every column.
    All(bool),
    /// One code per column.
    Each(Box<[i16]>),
}

impl Formats {
    /// Whether column `i` is in binary format. A code other than 0, or a column past the
    /// codes given, counts as binary: binary values are the ones rewritten most carefully.
    pub(crate) fn binary(&self, i: usize) -> bool {
        match self {
            Formats::Text => false,
            Formats::All(b) => *b,
            Formats::Each(codes) => codes.get(i).is_none_or(|&c| c != 0),
        }
    }
}

/// The columns of the tables some rule names, from [`Masker::catalog_query`].
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    tables: HashMap<u32, CatalogTable>,
}

#[derive(Debug)]
struct CatalogTable {
    qualified: String,
    columns: HashMap<i16, String>,
}

impl Catalog {
    /// Keeps the columns of the tables some rule's `table` glob matches (the others can
    /// match no table rule anyway).
    pub(crate) fn new(masker: &Masker, columns: Vec<CatalogColumn>) -> Catalog {
        let mut tables: HashMap<u32, CatalogTable> = HashMap::new();
        let mut rejected: HashMap<u32, ()> = HashMap::new();
        for c in columns {
            if rejected.contains_key(&c.table_oid) {
                continue;
            }
            let table = match tables.entry(c.table_oid) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let qualified = format!("{}.{}", c.schema, c.table);
                    if !masker.any_table_rule_matches(&qualified) {
                        rejected.insert(c.table_oid, ());
                        continue;
                    }
                    e.insert(CatalogTable {
                        qualified,
                        columns: HashMap::new(),
                    })
                }
            };
            table.columns.insert(c.attnum, c.column);
        }
        Catalog { tables }
    }
}

/// A glob: `*` any run, `?` one character, everything else itself, case-insensitively
/// (the pattern is lower-cased at compile time, names when matched).
#[derive(Debug, Clone)]
struct Glob {
    source: String,
    pattern: Vec<char>,
}

impl Glob {
    fn new(source: &str) -> Result<Glob, String> {
        if source.is_empty() {
            return Err("empty glob".into());
        }
        if source.contains('\0') {
            return Err("a glob cannot contain a NUL character".into());
        }
        if source.chars().count() > 1024 {
            return Err("glob longer than 1024 characters".into());
        }
        Ok(Glob {
            source: source.to_owned(),
            pattern: source.to_lowercase().chars().collect(),
        })
    }

    /// Matches an already lower-cased name.
    fn matches(&self, lower: &str) -> bool {
        let name: Vec<char> = lower.chars().collect();
        let p = &self.pattern;
        let (mut pi, mut ni) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while let Some(&c) = name.get(ni) {
            match p.get(pi) {
                Some('*') => {
                    star = Some((pi, ni));
                    pi += 1;
                }
                Some(&q) if q == '?' || q == c => {
                    pi += 1;
                    ni += 1;
                }
                _ => match star {
                    Some((sp, sn)) => {
                        pi = sp + 1;
                        ni = sn + 1;
                        star = Some((sp, sn + 1));
                    }
                    None => return false,
                },
            }
        }
        p.get(pi..).unwrap_or_default().iter().all(|&c| c == '*')
    }

    /// The glob as a SQL `ILIKE` pattern literal with `!` as its escape character.
    fn to_like_literal(&self) -> String {
        let mut s = String::from("E'");
        for c in self.source.chars() {
            match c {
                '*' => s.push('%'),
                '?' => s.push('_'),
                '%' | '_' | '!' => {
                    s.push('!');
                    s.push(c);
                }
                '\'' => s.push_str("''"),
                '\\' => s.push_str("\\\\"),
                c => s.push(c),
            }
        }
        s.push('\'');
        s
    }
}

fn compile_rule(c: &ColumnRule) -> Result<(Rule, String), (&'static str, String)> {
    if c.column.is_none() && c.table.is_none() && c.types.is_empty() {
        return Err((
            "column",
            "a column rule needs at least one of `column`, `table`, `type`".into(),
        ));
    }
    let column = c
        .column
        .as_deref()
        .map(Glob::new)
        .transpose()
        .map_err(|e| ("column", e))?;
    let table = c
        .table
        .as_deref()
        .map(Glob::new)
        .transpose()
        .map_err(|e| ("table", e))?;
    if let Some(t) = &table {
        if !t.source.contains('.') && !t.source.contains('*') {
            return Err((
                "table",
                format!(
                    "\"{}\" cannot match a `schema.table` name; write \"public.{}\" or \"*.{}\"",
                    t.source, t.source, t.source
                ),
            ));
        }
    }
    let mut types = Vec::with_capacity(c.types.len());
    for t in &c.types {
        types.push(type_oid(t).ok_or_else(|| {
            (
                "type",
                format!("unknown type \"{t}\" (name a built-in type, or give its numeric OID)"),
            )
        })?);
    }
    let name = match (&c.name, &c.column, &c.table) {
        (Some(n), _, _) => {
            if n.is_empty() {
                return Err(("name", "empty rule name".into()));
            }
            n.clone()
        }
        (None, Some(col), _) => format!("column:{col}"),
        (None, None, Some(t)) => format!("table:{t}"),
        (None, None, None) => format!("type:{}", c.types.join(",")),
    };
    Ok((
        Rule {
            column,
            table,
            types,
            style: c.style.unwrap_or(Style::Redact),
        },
        name,
    ))
}

/// Built-in type names (and their usual aliases) and their OIDs.
const TYPE_NAMES: &[(&str, u32)] = &[
    ("bool", 16),
    ("boolean", 16),
    ("bytea", 17),
    ("\"char\"", 18),
    ("name", 19),
    ("int8", 20),
    ("bigint", 20),
    ("int2", 21),
    ("smallint", 21),
    ("int4", 23),
    ("int", 23),
    ("integer", 23),
    ("regproc", 24),
    ("text", 25),
    ("oid", 26),
    ("tid", 27),
    ("xid", 28),
    ("cid", 29),
    ("json", 114),
    ("xml", 142),
    ("xml[]", 143),
    ("json[]", 199),
    ("point", 600),
    ("lseg", 601),
    ("path", 602),
    ("box", 603),
    ("polygon", 604),
    ("line", 628),
    ("cidr", 650),
    ("cidr[]", 651),
    ("float4", 700),
    ("real", 700),
    ("float8", 701),
    ("float", 701),
    ("double precision", 701),
    ("unknown", 705),
    ("circle", 718),
    ("macaddr8", 774),
    ("money", 790),
    ("money[]", 791),
    ("macaddr", 829),
    ("inet", 869),
    ("bool[]", 1000),
    ("boolean[]", 1000),
    ("bytea[]", 1001),
    ("name[]", 1003),
    ("int2[]", 1005),
    ("smallint[]", 1005),
    ("int4[]", 1007),
    ("int[]", 1007),
    ("integer[]", 1007),
    ("text[]", 1009),
    ("bpchar[]", 1014),
    ("character[]", 1014),
    ("varchar[]", 1015),
    ("character varying[]", 1015),
    ("int8[]", 1016),
    ("bigint[]", 1016),
    ("float4[]", 1021),
    ("real[]", 1021),
    ("float8[]", 1022),
    ("double precision[]", 1022),
    ("oid[]", 1028),
    ("macaddr[]", 1040),
    ("inet[]", 1041),
    ("bpchar", 1042),
    ("char", 1042),
    ("character", 1042),
    ("varchar", 1043),
    ("character varying", 1043),
    ("date", 1082),
    ("time", 1083),
    ("time without time zone", 1083),
    ("timestamp", 1114),
    ("timestamp without time zone", 1114),
    ("timestamp[]", 1115),
    ("date[]", 1182),
    ("time[]", 1183),
    ("timestamptz", 1184),
    ("timestamp with time zone", 1184),
    ("timestamptz[]", 1185),
    ("interval", 1186),
    ("interval[]", 1187),
    ("numeric[]", 1231),
    ("decimal[]", 1231),
    ("timetz", 1266),
    ("time with time zone", 1266),
    ("timetz[]", 1270),
    ("bit", 1560),
    ("varbit", 1562),
    ("bit varying", 1562),
    ("numeric", 1700),
    ("decimal", 1700),
    ("refcursor", 1790),
    ("record", 2249),
    ("uuid", 2950),
    ("uuid[]", 2951),
    ("tsvector", 3614),
    ("tsquery", 3615),
    ("jsonb", 3802),
    ("jsonb[]", 3807),
    ("int4range", 3904),
    ("numrange", 3906),
    ("tsrange", 3908),
    ("tstzrange", 3910),
    ("daterange", 3912),
    ("int8range", 3926),
    ("jsonpath", 4072),
    ("xid8", 5069),
];

/// A type name (case-insensitive, spaces collapsed, `_text` for `text[]`) or numeric OID.
fn type_oid(name: &str) -> Option<u32> {
    let trimmed = name.trim();
    if let Ok(oid) = trimmed.parse::<u32>() {
        return (oid != 0).then_some(oid);
    }
    let mut norm = trimmed
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    if let Some(element) = norm.strip_prefix('_') {
        norm = format!("{element}[]");
    }
    let norm = norm.replace(" []", "[]");
    TYPE_NAMES
        .iter()
        .find(|(n, _)| *n == norm)
        .map(|&(_, oid)| oid)
}

/// The catalog lookup for the rules with a `table` glob.
fn catalog_query(rules: &[Rule]) -> Option<String> {
    let mut conditions: Vec<String> = rules
        .iter()
        .filter_map(|r| r.table.as_ref())
        .map(|g| {
            format!(
                "(n.nspname::pg_catalog.text OPERATOR(pg_catalog.||) '.' \
                 OPERATOR(pg_catalog.||) c.relname::pg_catalog.text) \
                 OPERATOR(pg_catalog.~~*) pg_catalog.like_escape({}, '!')",
                g.to_like_literal()
            )
        })
        .collect();
    if conditions.is_empty() {
        return None;
    }
    conditions.dedup();
    Some(format!(
        "SELECT c.oid::pg_catalog.text, a.attnum::pg_catalog.text, n.nspname::pg_catalog.text, \
         c.relname::pg_catalog.text, a.attname::pg_catalog.text \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
         JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid \
         WHERE a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped \
         AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p', 'v', 'm', 'f']::pg_catalog.\"char\"[]) \
         AND ({}) ORDER BY 1, 2",
        conditions.join(" OR ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str, s: &str) -> bool {
        Glob::new(p)
            .map(|g| g.matches(&s.to_lowercase()))
            .unwrap_or(false)
    }

    #[test]
    fn globs() {
        for (p, s, want) in [
            ("email", "email", true),
            ("email", "EMAIL", true),
            ("EM*", "email", true),
            ("*mail", "email", true),
            ("*", "", true),
            ("?", "", false),
            ("e?ail", "email", true),
            ("e?ail", "eail", false),
            ("*_ssn", "customer_ssn", true),
            ("*_ssn", "customer_ssn_x", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("public.*", "public.users", true),
            ("public.*", "private.users", false),
            ("*.users", "sales.users", true),
            ("ÉTÉ", "été", true),
            ("**x", "abx", true),
        ] {
            assert_eq!(glob(p, s), want, "{p} ~ {s}");
        }
    }

    #[test]
    fn like_literals_escape_everything() {
        let g = Glob::new("pub_lic.o'k%!\\*?").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.to_like_literal(), "E'pub!_lic.o''k!%!!\\\\%_'");
    }

    #[test]
    fn type_names() {
        assert_eq!(type_oid("TEXT"), Some(25));
        assert_eq!(type_oid(" character  varying "), Some(1043));
        assert_eq!(type_oid("_text"), Some(1009));
        assert_eq!(type_oid("text []"), Some(1009));
        assert_eq!(type_oid("12345"), Some(12345));
        assert_eq!(type_oid("0"), None);
        assert_eq!(type_oid("citext"), None);
        assert_eq!(type_oid("jsonb"), Some(3802));
    }

    #[test]
    fn formats() {
        assert!(!Formats::Text.binary(3));
        assert!(Formats::All(true).binary(3));
        let each = Formats::Each(vec![0, 1].into());
        assert!(!each.binary(0));
        assert!(each.binary(1));
        assert!(each.binary(2));
    }
}
