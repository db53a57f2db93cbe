//! Statement rules (`[[policy.statements]]`): whether one classified statement may run in a
//! session, be refused, or wait for a human approver.
//!
//! [`Policy::compile`](super::Policy::compile) turns each [`StatementRuleConfig`] into a
//! [`StatementRule`] (class and flag bit sets, compiled globs, parsed fingerprints, one
//! Aho-Corasick automaton for the patterns) and the `dangerous_functions` globs into a
//! [`DangerList`]. At session start the proxy asks
//! [`Policy::statement_rules`](super::Policy::statement_rules) for the rules naming the
//! principal and covering the resource ([`SessionStatementRules`]); deciding a statement
//! then only walks that short list, and an allowed statement costs no allocation.

use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::{Serialize, Serializer};
use sluice_classify::{Class, Classification, Flag, Flags, Statement};

use super::config::{Access, StatementRuleConfig};

/// The functions whose call sets the `dangerous_function` flag when the policy does not
/// set `dangerous_functions`: the ones that reach outside the database's data (server
/// files, other servers, other sessions, the server's configuration, replication streams)
/// or run SQL the classifier cannot see (it is passed as a string). Matched like
/// [`StatementRuleConfig::functions`] globs, so `pg_read_file` also matches
/// `pg_catalog.pg_read_file`.
pub const DEFAULT_DANGEROUS_FUNCTIONS: &[&str] = &[
    // Server files (core and adminpack).
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_ls_*",
    "pg_file_*",
    "pg_logdir_ls",
    "lo_import",
    "lo_export",
    // Other sessions and the server itself.
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_wal_replay_*",
    "pg_stat_reset*",
    "set_config",
    // Replication: slots and origins stream every change in the database.
    "pg_create_*_replication_slot",
    "pg_copy_*_replication_slot",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_logical_slot_*",
    "pg_replication_origin_*",
    // Other servers, and SQL passed as a string.
    "dblink*",
    "query_to_xml*",
    "pg_background_*",
];

/// Which criterion of a statement rule a statement failed, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// `classes`.
    Classes,
    /// `flags`.
    Flags,
    /// `fingerprints`.
    Fingerprints,
    /// `tables`.
    Tables,
    /// `functions`.
    Functions,
    /// `patterns`.
    Patterns,
}

impl Criterion {
    /// The field name in `[[policy.statements]]`.
    pub fn as_str(self) -> &'static str {
        match self {
            Criterion::Classes => "classes",
            Criterion::Flags => "flags",
            Criterion::Fingerprints => "fingerprints",
            Criterion::Tables => "tables",
            Criterion::Functions => "functions",
            Criterion::Patterns => "patterns",
        }
    }
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a statement rule does to a statement it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementAccess {
    /// Run it.
    Allow,
    /// Refuse it (the session goes on).
    Deny,
    /// Hold it until an approver approves it.
    Request,
}

impl StatementAccess {
    /// `allow`, `deny` or `request`.
    pub fn as_str(&self) -> &'static str {
        match self {
            StatementAccess::Allow => "allow",
            StatementAccess::Deny => "deny",
            StatementAccess::Request => "request",
        }
    }
}

impl From<Access> for StatementAccess {
    fn from(a: Access) -> StatementAccess {
        match a {
            Access::Allow => StatementAccess::Allow,
            Access::Deny => StatementAccess::Deny,
            Access::Request => StatementAccess::Request,
        }
    }
}

/// The verdict on one statement (or, from [`SessionStatementRules::decide_all`], on a
/// whole query string).
///
/// Building an `Allow` allocates nothing: `rule` and `approvers` are reference-counted
/// clones, and `command`, `message` and `hint` are empty (take the command from the
/// [`Statement`]). They are filled for `Deny` and `Request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementDecision {
    /// Run, refuse or hold.
    pub access: StatementAccess,
    /// The statement rule that decided; `None` for the default denial (no rule matched),
    /// and for the `Allow` of an empty query string.
    #[serde(serialize_with = "ser_opt_str")]
    pub rule: Option<Arc<str>>,
    /// For `Request`: the groups whose members may approve the statement. Empty otherwise.
    #[serde(serialize_with = "ser_strings")]
    pub approvers: Arc<[String]>,
    /// The statement's class (`read` for an empty query string).
    pub class: Class,
    /// The statement's flags, `dangerous_function` included (a list of names).
    #[serde(serialize_with = "ser_flags")]
    pub flags: Flags,
    /// The statement's command (`DROP TABLE`) for `Deny` and `Request`; empty for `Allow`.
    pub command: String,
    /// For `Deny` and `Request`: one sentence naming the user, the resource, the statement
    /// (class and command) and the rule, for the client's error or notice.
    pub message: String,
    /// For `Deny` and `Request`: what the user can do about it.
    pub hint: String,
}

impl StatementDecision {
    /// Whether the statement may run now.
    pub fn is_allow(&self) -> bool {
        self.access == StatementAccess::Allow
    }
}

impl fmt::Display for StatementDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.access {
            StatementAccess::Allow => match &self.rule {
                Some(r) => write!(f, "allowed by statement rule {:?}", &**r),
                None => f.write_str("allowed (no statement)"),
            },
            _ => write!(f, "{} (hint: {})", self.message, self.hint),
        }
    }
}

fn ser_opt_str<S: Serializer>(value: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_some(&**v),
        None => s.serialize_none(),
    }
}

fn ser_strings<S: Serializer>(value: &Arc<[String]>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(value.iter())
}

pub(super) fn ser_flags<S: Serializer>(value: &Flags, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(value.iter().map(Flag::as_str))
}

/// Classes `"*"` (and an absent `classes`) stands for: every class but `unknown` and
/// `copy_program`.
pub(super) fn wildcard_classes() -> u16 {
    Class::ALL
        .iter()
        .filter(|c| !matches!(c, Class::Unknown | Class::CopyProgram))
        .fold(0, |m, c| m | c.bit())
}

/// A `*` / `?` glob, compared ASCII case-insensitively. `*` matches any run of characters
/// (dots included), `?` exactly one character.
#[derive(Debug, Clone)]
struct Glob {
    /// The pattern, ASCII lower-cased.
    pattern: Box<[u8]>,
}

impl Glob {
    fn matches(&self, text: &[u8]) -> bool {
        let p = &self.pattern;
        let (mut pi, mut ti) = (0, 0);
        // Where the last `*` was, and where in the text its match currently ends.
        let mut star: Option<(usize, usize)> = None;
        while ti < text.len() {
            if let Some(&c) = p.get(pi) {
                if c == b'*' {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                if c == b'?' {
                    pi += 1;
                    ti += char_len(text[ti]);
                    continue;
                }
                if c == text[ti].to_ascii_lowercase() {
                    pi += 1;
                    ti += 1;
                    continue;
                }
            }
            match star {
                // Let the last `*` swallow one more character and retry after it.
                Some((sp, st)) => {
                    let st = st + char_len(text[st]);
                    star = Some((sp, st));
                    pi = sp + 1;
                    ti = st;
                }
                None => return false,
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

/// Length of the UTF-8 sequence starting with `lead` (1 for anything unexpected).
fn char_len(lead: u8) -> usize {
    match lead {
        0xf0..=0xf7 => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

/// A glob over dotted names (tables, functions): a glob with `n` dots is matched against
/// the last `n + 1` dot-separated parts of a name, and never matches a name with fewer.
#[derive(Debug, Clone)]
pub(super) struct NameGlob {
    glob: Glob,
    parts: usize,
    /// As written, for explanations.
    text: String,
}

impl NameGlob {
    /// Checks and compiles one glob; the error says what is wrong with it.
    pub(super) fn compile(text: &str) -> Result<NameGlob, String> {
        if text.is_empty() {
            return Err("is empty".to_owned());
        }
        if text.trim() != text {
            return Err("has leading or trailing whitespace".to_owned());
        }
        if let Some(c) = text
            .chars()
            .find(|c| matches!(c, '[' | ']' | '{' | '}' | '\\'))
        {
            return Err(format!(
                "uses {c:?}: only `*` (any run of characters) and `?` (one character) are wildcards; list several globs instead"
            ));
        }
        if text.split('.').any(str::is_empty) {
            return Err("has an empty part around a dot".to_owned());
        }
        Ok(NameGlob {
            glob: Glob {
                pattern: text.to_ascii_lowercase().into_bytes().into_boxed_slice(),
            },
            parts: text.matches('.').count() + 1,
            text: text.to_owned(),
        })
    }

    pub(super) fn matches(&self, name: &str) -> bool {
        tail_parts(name.as_bytes(), self.parts).is_some_and(|tail| self.glob.matches(tail))
    }

    /// The glob as written.
    pub(super) fn as_str(&self) -> &str {
        &self.text
    }
}

/// The last `parts` dot-separated parts of `name`, or `None` when it has fewer.
fn tail_parts(name: &[u8], parts: usize) -> Option<&[u8]> {
    let mut dots = 0;
    for (i, &b) in name.iter().enumerate().rev() {
        if b == b'.' {
            dots += 1;
            if dots == parts {
                return Some(&name[i + 1..]);
            }
        }
    }
    (dots + 1 == parts).then_some(name)
}

/// The compiled `dangerous_functions` list.
///
/// Most statements call no function or only everyday ones, so the check is arranged to
/// reject those fast: single-part globs that start with a literal character are bucketed
/// by it (ASCII lower-cased), and a function's name part is tried only against its bucket,
/// the globs starting with a wildcard, and the globs with a schema.
#[derive(Debug, Clone)]
pub(super) struct DangerList {
    /// Every glob, in the order written (for explanations).
    globs: Vec<NameGlob>,
    /// Indices into `globs` of the single-part globs with a literal first byte, sorted by
    /// that byte; `bucket[b]` is the range of those starting with `b`.
    by_first: Vec<usize>,
    bucket: Box<[(usize, usize); 256]>,
    /// Indices of the other globs (a wildcard first, or a schema part).
    others: Vec<usize>,
}

impl DangerList {
    /// Compiles `globs`, reporting each bad one into `errors`.
    pub(super) fn compile<S: AsRef<str>>(globs: &[S], errors: &mut Vec<String>) -> DangerList {
        let mut out = Vec::with_capacity(globs.len());
        for g in globs {
            let g = g.as_ref();
            match NameGlob::compile(g) {
                Ok(glob) => out.push(glob),
                Err(e) => errors.push(format!("policy: dangerous_functions: {g:?} {e}")),
            }
        }
        let first = |g: &NameGlob| match g.glob.pattern.first() {
            Some(b'*' | b'?') | None => None,
            Some(&b) if g.parts == 1 => Some(b),
            Some(_) => None,
        };
        let (mut by_first, others): (Vec<usize>, Vec<usize>) =
            (0..out.len()).partition(|&i| first(&out[i]).is_some());
        // Stable: each bucket keeps the order written.
        by_first.sort_by_key(|&i| first(&out[i]));
        let mut bucket = Box::new([(0, 0); 256]);
        for (pos, &i) in by_first.iter().enumerate() {
            let b = first(&out[i]).map_or(0, usize::from);
            if bucket[b].1 == 0 {
                bucket[b] = (pos, pos + 1);
            } else {
                bucket[b].1 = pos + 1;
            }
        }
        DangerList {
            globs: out,
            by_first,
            bucket,
            others,
        }
    }

    /// [`DEFAULT_DANGEROUS_FUNCTIONS`], compiled.
    pub(super) fn default_list() -> DangerList {
        let mut errors = Vec::new();
        let list = DangerList::compile(DEFAULT_DANGEROUS_FUNCTIONS, &mut errors);
        debug_assert!(errors.is_empty(), "{errors:?}");
        list
    }

    /// The first glob (in the order written) `function` matches, if any.
    pub(super) fn matching(&self, function: &str) -> Option<&str> {
        self.globs
            .iter()
            .find(|g| g.matches(function))
            .map(NameGlob::as_str)
    }

    /// Whether `function` matches any glob.
    fn hit(&self, function: &str) -> bool {
        let name = function.as_bytes();
        let part = name
            .iter()
            .rposition(|&b| b == b'.')
            .map_or(name, |dot| &name[dot + 1..]);
        if let Some(&b) = part.first() {
            let (start, end) = self.bucket[usize::from(b.to_ascii_lowercase())];
            if self.by_first[start..end]
                .iter()
                .any(|&i| self.globs[i].glob.matches(part))
            {
                return true;
            }
        }
        self.others.iter().any(|&i| self.globs[i].matches(function))
    }

    /// `statement`'s flags with `dangerous_function` added when it calls a listed function.
    pub(super) fn flags_of(&self, statement: &Statement) -> Flags {
        let mut flags = statement.flags;
        if statement.functions.iter().any(|f| self.hit(f)) {
            flags.insert(Flag::DangerousFunction);
        }
        flags
    }
}

/// One compiled `[[policy.statements]]` entry.
#[derive(Debug)]
pub(super) struct StatementRule {
    pub(super) name: Arc<str>,
    pub(super) access: Access,
    /// Empty unless `access` is `request`.
    pub(super) approvers: Arc<[String]>,
    /// Bit set of [`Class::bit`].
    pub(super) classes: u16,
    /// Bit set of [`Flag::bit`]; `None` when the rule has no `flags`.
    pub(super) flags: Option<u8>,
    pub(super) fingerprints: Option<Box<[u64]>>,
    pub(super) tables: Option<Box<[NameGlob]>>,
    pub(super) functions: Option<Box<[NameGlob]>>,
    pub(super) patterns: Option<AhoCorasick>,
    /// Index into `PolicyConfig::statements`.
    pub(super) index: usize,
}

impl StatementRule {
    /// Checks one rule (everything but who, where and the name) and compiles it, reporting
    /// every problem into `errors` under `who`.
    pub(super) fn compile(
        rule: &StatementRuleConfig,
        index: usize,
        who: &str,
        errors: &mut Vec<String>,
    ) -> Option<StatementRule> {
        let before = errors.len();
        let mut classes = 0u16;
        match &rule.classes {
            None => classes = wildcard_classes(),
            Some(list) => {
                if list.is_empty() {
                    errors.push(format!(
                        "{who}: classes: is empty; list classes, or omit it for every class but unknown and copy_program"
                    ));
                }
                for c in list {
                    if c == "*" {
                        classes |= wildcard_classes();
                        continue;
                    }
                    match c.parse::<Class>() {
                        Ok(Class::Unknown) if rule.access != Access::Deny => errors.push(format!(
                            "{who}: classes: \"unknown\" is only allowed in access = \"deny\" rules; statements Sluice cannot classify are never allowed or held"
                        )),
                        Ok(class) => classes |= class.bit(),
                        Err(e) => errors.push(format!("{who}: classes: {e}, or \"*\"")),
                    }
                }
            }
        }
        let flags = rule.flags.as_ref().map(|list| {
            if list.is_empty() {
                errors.push(format!(
                    "{who}: flags: is empty; list flags, or omit it to match statements with or without flags"
                ));
            }
            let mut mask = 0u8;
            for f in list {
                match f.parse::<Flag>() {
                    Ok(flag) => mask |= flag.bit(),
                    Err(e) => errors.push(format!("{who}: flags: {e}")),
                }
            }
            mask
        });
        let fingerprints = rule.fingerprints.as_ref().map(|list| {
            if list.is_empty() {
                errors.push(format!("{who}: fingerprints: is empty; list fingerprints or omit it"));
            }
            list.iter()
                .filter_map(|f| match parse_fingerprint(f) {
                    Some(v) => Some(v),
                    None => {
                        errors.push(format!(
                            "{who}: fingerprints: {f:?} is not a fingerprint; write the 16 hex digits `sluice policy explain --query` prints"
                        ));
                        None
                    }
                })
                .collect::<Box<[u64]>>()
        });
        let tables = compile_globs(rule.tables.as_deref(), who, "tables", errors);
        let functions = compile_globs(rule.functions.as_deref(), who, "functions", errors);
        let patterns = rule.patterns.as_ref().and_then(|list| {
            if list.is_empty() {
                errors.push(format!(
                    "{who}: patterns: is empty; list substrings or omit it"
                ));
            }
            if list.iter().any(String::is_empty) {
                errors.push(format!(
                    "{who}: patterns: contains an empty string, which would match every statement"
                ));
                return None;
            }
            match AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostFirst)
                .build(list)
            {
                Ok(ac) => Some(ac),
                Err(e) => {
                    errors.push(format!("{who}: patterns: {e}"));
                    None
                }
            }
        });
        if rule.access == Access::Request && rule.approvers.is_empty() {
            errors.push(format!(
                "{who}: approvers: is empty; a statement rule with access = \"request\" needs the groups who approve held statements"
            ));
        }
        if rule.access != Access::Request && !rule.approvers.is_empty() {
            errors.push(format!(
                "{who}: approvers: applies only to access = \"request\" statement rules; remove it"
            ));
        }
        if errors.len() != before {
            return None;
        }
        Some(StatementRule {
            name: Arc::from(rule.name.as_str()),
            access: rule.access,
            approvers: Arc::from(rule.approvers.as_slice()),
            classes,
            flags,
            fingerprints,
            tables,
            functions,
            patterns,
            index,
        })
    }

    /// Whether the statement meets every criterion of the rule; if not, the first it
    /// fails. `flags` are the statement's flags with `dangerous_function` computed.
    pub(super) fn check(
        &self,
        statement: &Statement,
        flags: Flags,
        fingerprint: u64,
        raw_sql: &[u8],
    ) -> Result<(), Criterion> {
        if self.classes & statement.class.bit() == 0 {
            return Err(Criterion::Classes);
        }
        if let Some(mask) = self.flags {
            if flags.0 & mask == 0 {
                return Err(Criterion::Flags);
            }
        }
        if let Some(fps) = &self.fingerprints {
            if !fps.contains(&fingerprint) {
                return Err(Criterion::Fingerprints);
            }
        }
        if let Some(globs) = &self.tables {
            if !any_name_matches(globs, &statement.tables) {
                return Err(Criterion::Tables);
            }
        }
        if let Some(globs) = &self.functions {
            if !any_name_matches(globs, &statement.functions) {
                return Err(Criterion::Functions);
            }
        }
        if let Some(ac) = &self.patterns {
            if !ac.is_match(raw_sql) {
                return Err(Criterion::Patterns);
            }
        }
        Ok(())
    }
}

fn any_name_matches(globs: &[NameGlob], names: &[String]) -> bool {
    names.iter().any(|n| globs.iter().any(|g| g.matches(n)))
}

fn compile_globs(
    list: Option<&[String]>,
    who: &str,
    field: &str,
    errors: &mut Vec<String>,
) -> Option<Box<[NameGlob]>> {
    let list = list?;
    if list.is_empty() {
        errors.push(format!("{who}: {field}: is empty; list globs or omit it"));
    }
    Some(
        list.iter()
            .filter_map(|g| match NameGlob::compile(g) {
                Ok(glob) => Some(glob),
                Err(e) => {
                    errors.push(format!("{who}: {field}: {g:?} {e}"));
                    None
                }
            })
            .collect(),
    )
}

/// A fingerprint as written in a policy: exactly 16 hex digits.
fn parse_fingerprint(text: &str) -> Option<u64> {
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// The statement rules that can apply to one principal on one resource, in file order,
/// picked out at session start by [`Policy::statement_rules`](super::Policy::statement_rules)
/// (and again whenever the snapshot changes), so that deciding a statement only looks at
/// these. Every field is reference-counted: cloning is cheap, and a session may keep it.
#[derive(Debug, Clone)]
pub struct SessionStatementRules {
    pub(super) rules: Arc<[Arc<StatementRule>]>,
    pub(super) danger: Arc<DangerList>,
    pub(super) user: Arc<str>,
    pub(super) groups: Arc<[String]>,
    pub(super) resource: Arc<str>,
    /// The empty approver list every non-request decision carries.
    pub(super) no_approvers: Arc<[String]>,
}

impl SessionStatementRules {
    /// The verdict on one statement: the first rule (in file order) that matches it
    /// decides; when none does, it is denied. `fingerprint` is its query string's
    /// ([`Classification::fingerprint`]), `raw_sql` the query string as the client sent it
    /// (what `patterns` look in; pass `b""` when there is none).
    ///
    /// This runs for every statement: for an allowed one it allocates nothing and walks
    /// each rule's criteria only until one fails.
    pub fn decide(
        &self,
        statement: &Statement,
        fingerprint: u64,
        raw_sql: &[u8],
    ) -> StatementDecision {
        let flags = self.danger.flags_of(statement);
        for rule in self.rules.iter() {
            if rule.check(statement, flags, fingerprint, raw_sql).is_ok() {
                return self.by_rule(rule, statement, flags);
            }
        }
        self.no_rule(statement, flags)
    }

    /// The verdict on a whole query string: the first statement denied refuses all of it
    /// (PostgreSQL runs a multi-statement string as one implicit transaction), else the
    /// first held one holds all of it, else it runs, with the first statement's decision.
    /// A string with no statement is allowed (`rule: None`, class `read`).
    pub fn decide_all(&self, classification: &Classification, raw_sql: &[u8]) -> StatementDecision {
        let total = classification.statements.len();
        let mut first: Option<StatementDecision> = None;
        let mut held: Option<(usize, StatementDecision)> = None;
        for (i, statement) in classification.statements.iter().enumerate() {
            let decision = self.decide(statement, classification.fingerprint, raw_sql);
            match decision.access {
                StatementAccess::Deny => return whole_string(decision, i, total, "refused"),
                StatementAccess::Request => {
                    held.get_or_insert((i, decision));
                }
                StatementAccess::Allow => {
                    first.get_or_insert(decision);
                }
            }
        }
        if let Some((i, decision)) = held {
            return whole_string(decision, i, total, "held");
        }
        first.unwrap_or_else(|| StatementDecision {
            access: StatementAccess::Allow,
            rule: None,
            approvers: Arc::clone(&self.no_approvers),
            class: Class::Read,
            flags: Flags::default(),
            command: String::new(),
            message: String::new(),
            hint: String::new(),
        })
    }

    /// The rules, in file order, by name.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| &*r.name)
    }

    /// Whether no statement rule applies (every statement will be denied).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn by_rule(
        &self,
        rule: &StatementRule,
        statement: &Statement,
        flags: Flags,
    ) -> StatementDecision {
        let access = StatementAccess::from(rule.access);
        let mut decision = StatementDecision {
            access,
            rule: Some(Arc::clone(&rule.name)),
            approvers: Arc::clone(&rule.approvers),
            class: statement.class,
            flags,
            command: String::new(),
            message: String::new(),
            hint: String::new(),
        };
        let (user, resource, name) = (&*self.user, &*self.resource, &*rule.name);
        match access {
            StatementAccess::Allow => {}
            StatementAccess::Deny => {
                decision.command = statement.command.clone();
                let reason = match (statement.class, statement.reason.as_deref()) {
                    (Class::Unknown, Some(reason)) => format!(" (not classified: {reason})"),
                    _ => String::new(),
                };
                decision.message = format!(
                    "{} denied for {user:?} on {resource:?}: statement rule {name:?} denies it{reason}",
                    describe(statement, flags)
                );
                decision.hint = format!(
                    "statement rule {name:?} of the gateway policy forbids this; ask an operator to change the policy if you need to run it"
                );
            }
            StatementAccess::Request => {
                let approvers = rule.approvers.join(", ");
                decision.command = statement.command.clone();
                decision.message = format!(
                    "{} by {user:?} on {resource:?} is held for approval: statement rule {name:?} lets it run only once an approver ({approvers}) approves it",
                    describe(statement, flags)
                );
                decision.hint = format!(
                    "it runs as soon as a member of {approvers} approves it; cancel the query to give up"
                );
            }
        }
        decision
    }

    fn no_rule(&self, statement: &Statement, flags: Flags) -> StatementDecision {
        let (user, resource) = (&*self.user, &*self.resource);
        let (message, hint) = if statement.class == Class::Unknown {
            let reason = statement
                .reason
                .as_deref()
                .unwrap_or("the statement was not recognized");
            (
                format!(
                    "statement denied for {user:?} on {resource:?}: the gateway could not classify it ({reason})"
                ),
                "statements the gateway cannot classify are never allowed; check the statement's syntax".to_owned(),
            )
        } else {
            let groups = if self.groups.is_empty() {
                "(your token carries no groups)".to_owned()
            } else {
                format!("({})", self.groups.join(", "))
            };
            let what = describe_plural(statement, flags);
            (
                format!("no statement rule lets {user:?} run {what} on {resource:?}"),
                format!(
                    "ask an operator to add a [[policy.statements]] rule allowing {} statements on {resource:?} for user {user:?} or groups {groups}; `sluice policy explain --query` shows the rules considered",
                    statement.class
                ),
            )
        };
        StatementDecision {
            access: StatementAccess::Deny,
            rule: None,
            approvers: Arc::clone(&self.no_approvers),
            class: statement.class,
            flags,
            command: statement.command.clone(),
            message,
            hint,
        }
    }
}

/// `ddl statement (DROP TABLE)`, `write statement (DELETE; no_where)`.
fn describe(statement: &Statement, flags: Flags) -> String {
    format!(
        "{} statement ({}{})",
        statement.class,
        statement.command,
        flag_suffix(flags)
    )
}

/// `ddl statements (DROP TABLE)`.
fn describe_plural(statement: &Statement, flags: Flags) -> String {
    format!(
        "{} statements ({}{})",
        statement.class,
        statement.command,
        flag_suffix(flags)
    )
}

fn flag_suffix(flags: Flags) -> String {
    flags.iter().fold(String::new(), |mut s, f| {
        s.push_str("; ");
        s.push_str(f.as_str());
        s
    })
}

/// A statement's decision as the decision on its whole query string.
fn whole_string(
    mut decision: StatementDecision,
    index: usize,
    total: usize,
    what: &str,
) -> StatementDecision {
    if total > 1 {
        decision.message = format!(
            "{} (statement {} of {total}: the whole query string is {what})",
            decision.message,
            index + 1
        );
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(text: &str) -> NameGlob {
        NameGlob::compile(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn globs_match_names_and_trailing_parts() {
        assert!(glob("orders").matches("orders"));
        assert!(glob("orders").matches("public.orders"));
        assert!(glob("orders").matches("shop.public.orders"));
        assert!(!glob("orders").matches("orders2"));
        assert!(glob("public.orders").matches("public.orders"));
        assert!(glob("public.orders").matches("shop.public.orders"));
        assert!(!glob("public.orders").matches("orders"));
        assert!(!glob("public.orders").matches("private.orders"));
        assert!(glob("secret_*").matches("secret_"));
        assert!(glob("secret_*").matches("hr.secret_salaries"));
        assert!(!glob("secret_*").matches("secrets"));
        assert!(glob("*.orders").matches("public.orders"));
        assert!(!glob("*.orders").matches("orders"));
        assert!(glob("pg_ls_*").matches("pg_catalog.pg_ls_dir"));
        assert!(glob("t?").matches("t1"));
        assert!(glob("t?").matches("tü"), "? is one character, not one byte");
        assert!(!glob("t?").matches("t"));
        assert!(!glob("t?").matches("t12"));
        assert!(glob("*a*b*c").matches("xxaxxbxxbxc"));
        assert!(!glob("*a*b*c").matches("xxaxxbxxbx"));
        assert!(glob("*").matches("anything"));
        assert!(
            glob("Secret_*").matches("SECRET_x"),
            "ASCII case-insensitive"
        );
        assert!(glob("pg_create_*_replication_slot").matches("pg_create_logical_replication_slot"));
    }

    #[test]
    fn bad_globs_say_why() {
        for (text, why) in [
            ("", "is empty"),
            (" orders", "whitespace"),
            ("orders[12]", "only `*`"),
            ("{a,b}", "only `*`"),
            ("public.", "empty part"),
            (".orders", "empty part"),
            ("a..b", "empty part"),
        ] {
            let e = NameGlob::compile(text).expect_err(text);
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn the_default_danger_list_compiles_and_covers_the_usual_suspects() {
        let mut errors = Vec::new();
        let list = DangerList::compile(DEFAULT_DANGEROUS_FUNCTIONS, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        for f in [
            "pg_read_file",
            "pg_catalog.pg_read_binary_file",
            "pg_ls_dir",
            "pg_ls_waldir",
            "pg_stat_file",
            "pg_terminate_backend",
            "pg_cancel_backend",
            "pg_reload_conf",
            "pg_rotate_logfile",
            "lo_import",
            "lo_export",
            "dblink",
            "dblink_exec",
            "set_config",
            "pg_file_write",
            "pg_logical_slot_get_changes",
            "pg_create_logical_replication_slot",
            "query_to_xml",
        ] {
            assert!(list.matching(f).is_some(), "{f}");
        }
        for f in [
            "count",
            "now",
            "pg_sleep",
            "lower",
            "pg_backend_pid",
            "current_setting",
            "lo_get",
        ] {
            assert_eq!(list.matching(f), None, "{f}");
        }
    }

    #[test]
    fn the_bucketed_danger_check_agrees_with_the_plain_one() {
        let mut errors = Vec::new();
        let list = DangerList::compile(
            &[
                "pg_read_file",
                "PG_LS_*",
                "*_exec",
                "?lo",
                "admin.reset",
                "x",
                "dblink*",
            ],
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        for f in [
            "pg_read_file",
            "PG_READ_FILE",
            "pg_catalog.pg_read_file",
            "pg_ls_dir",
            "dblink_exec",
            "my_exec",
            "s.my_exec",
            "flo",
            "lo",
            "admin.reset",
            "db.admin.reset",
            "reset",
            "x",
            "s.x",
            "xx",
            "dblink",
            "count",
            "",
            ".",
            "a.",
            "\u{e9}t\u{e9}",
        ] {
            assert_eq!(list.hit(f), list.matching(f).is_some(), "{f:?}");
        }
        let empty = DangerList::compile::<&str>(&[], &mut errors);
        assert!(!empty.hit("pg_read_file"));
    }

    #[test]
    fn fingerprints_are_sixteen_hex_digits() {
        assert_eq!(
            parse_fingerprint("9f2c0a1b3d4e5f60"),
            Some(0x9f2c_0a1b_3d4e_5f60)
        );
        assert_eq!(
            parse_fingerprint("9F2C0A1B3D4E5F60"),
            Some(0x9f2c_0a1b_3d4e_5f60)
        );
        for bad in [
            "",
            "9f2c",
            "9f2c0a1b3d4e5f6g",
            "+f2c0a1b3d4e5f60",
            "9f2c0a1b3d4e5f600",
        ] {
            assert_eq!(parse_fingerprint(bad), None, "{bad}");
        }
    }
}
