//! The profile's own rules: literal lists (one Aho-Corasick automaton per case mode over
//! every list) and regular expressions (a forward and a reverse dense DFA each, built
//! under a size limit; no backtracking, no lazy DFA whose cache could thrash).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex_automata::dfa::{dense, regex::Regex};
use regex_automata::util::prefilter::Prefilter;
use regex_automata::util::syntax;
use regex_automata::Input;

use super::{RuleId, Span};
use crate::{ConfigError, LiteralRule, PatternRule};

/// A pattern match is masked over at most this many bytes.
pub const MAX_PATTERN_MATCH: usize = 256;
/// The longest literal a list may hold.
pub const MAX_LITERAL_LEN: usize = 1024;
/// Size limit of each of a pattern's two DFAs (forward and reverse), in bytes.
pub const PATTERN_DFA_SIZE_LIMIT: usize = 1 << 20;
/// Size limit of the working memory used while determinizing a pattern, in bytes.
const PATTERN_DETERMINIZE_LIMIT: usize = 2 << 20;

/// Literal lists, by case mode.
#[derive(Debug)]
pub(crate) struct Literals {
    /// The automaton and the rule of each of its patterns.
    sets: Vec<(AhoCorasick, Vec<RuleId>)>,
    /// The longest literal.
    pub(crate) max_len: usize,
}

impl Literals {
    /// Compiles `rules`; the first has rule id `first`.
    pub(crate) fn compile(rules: &[LiteralRule], first: RuleId) -> Result<Literals, ConfigError> {
        let mut by_case: [(Vec<&[u8]>, Vec<RuleId>); 2] = Default::default();
        let mut max_len = 0;
        for (i, rule) in rules.iter().enumerate() {
            if rule.values.is_empty() {
                return Err(ConfigError(format!(
                    "literals[{i}] ({:?}): values is empty",
                    rule.name
                )));
            }
            let id = first + i as RuleId;
            let (pats, ids) = &mut by_case[usize::from(rule.case_insensitive)];
            for (j, v) in rule.values.iter().enumerate() {
                if v.is_empty() || v.len() > MAX_LITERAL_LEN {
                    return Err(ConfigError(format!(
                        "literals[{i}] ({:?}).values[{j}]: a literal is 1 to {MAX_LITERAL_LEN} bytes long",
                        rule.name
                    )));
                }
                max_len = max_len.max(v.len());
                pats.push(v.as_bytes());
                ids.push(id);
            }
        }
        let mut sets = Vec::new();
        for (case_insensitive, (pats, ids)) in by_case.into_iter().enumerate() {
            if pats.is_empty() {
                continue;
            }
            let ac = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .ascii_case_insensitive(case_insensitive == 1)
                .build(&pats)
                .map_err(|e| ConfigError(format!("literals: cannot build the matcher: {e}")))?;
            sets.push((ac, ids));
        }
        Ok(Literals { sets, max_len })
    }

    /// Whether there are no literals (nothing to search).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Appends every match (non-overlapping within one case mode).
    pub(crate) fn find(&self, text: &[u8], out: &mut Vec<Span>) {
        for (ac, ids) in &self.sets {
            for m in ac.find_iter(text) {
                if let Some(&rule) = ids.get(m.pattern().as_usize()) {
                    out.push(Span {
                        start: m.start(),
                        end: m.end(),
                        rule,
                    });
                }
            }
        }
    }
}

/// One compiled pattern rule.
#[derive(Debug)]
pub(crate) struct Pattern {
    rule: RuleId,
    re: Regex,
}

impl Pattern {
    /// Compiles `rule` (`patterns[index]`) as rule id `id`.
    pub(crate) fn compile(
        rule: &PatternRule,
        index: usize,
        id: RuleId,
    ) -> Result<Pattern, ConfigError> {
        let field = || format!("patterns[{index}] ({:?})", rule.name);
        let hir = syntax::parse(&rule.regex)
            .map_err(|e| ConfigError(format!("{}: invalid regex: {e}", field())))?;
        if hir.properties().minimum_len().is_none_or(|n| n == 0) {
            return Err(ConfigError(format!(
                "{}: the regex can match the empty string (or nothing at all)",
                field()
            )));
        }
        let pre = Prefilter::from_hir_prefix(regex_automata::MatchKind::LeftmostFirst, &hir);
        let re = Regex::builder()
            .dense(
                dense::Config::new()
                    .minimize(false)
                    .prefilter(pre)
                    .dfa_size_limit(Some(PATTERN_DFA_SIZE_LIMIT))
                    .determinize_size_limit(Some(PATTERN_DETERMINIZE_LIMIT)),
            )
            .build(&rule.regex)
            .map_err(|e| {
                ConfigError(format!(
                    "{}: cannot be compiled to a DFA within {} KiB (use fewer or narrower \
                     classes and repetitions, or (?-u) for ASCII-only classes and \\b): {e}",
                    field(),
                    PATTERN_DFA_SIZE_LIMIT / 1024
                ))
            })?;
        Ok(Pattern { rule: id, re })
    }

    /// Appends every leftmost-first match, each cut at [`MAX_PATTERN_MATCH`] bytes (on a
    /// character boundary when the text is UTF-8 there).
    pub(crate) fn find(&self, text: &[u8], out: &mut Vec<Span>) {
        let mut pos = 0;
        while pos < text.len() {
            let input = Input::new(text).range(pos..);
            let m = match self.re.try_search(&input) {
                Ok(Some(m)) => m,
                // No match, or a search that cannot complete (the default DFA
                // configuration has no quit bytes, so this does not happen).
                Ok(None) | Err(_) => break,
            };
            let (start, end) = (m.start(), m.end());
            if end <= start {
                // Empty matches are refused at compile time; never loop on one.
                pos = start + 1;
                continue;
            }
            let mut cut = end.min(start + MAX_PATTERN_MATCH);
            while cut > start + 1 && cut < end && is_continuation(text.get(cut)) {
                cut -= 1;
            }
            out.push(Span {
                start,
                end: cut,
                rule: self.rule,
            });
            pos = end;
        }
    }
}

fn is_continuation(b: Option<&u8>) -> bool {
    matches!(b, Some(&b) if b & 0xC0 == 0x80)
}

/// Whether a configured name is usable for a rule (counters and explanations print it).
pub(crate) fn check_name(name: &str, field: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(ConfigError(format!(
            "{field}: a rule name is 1 to 64 characters, none of them control characters"
        )));
    }
    Ok(())
}

/// Builds every pattern rule; the first has rule id `first`.
pub(crate) fn compile_patterns(
    rules: &[PatternRule],
    first: RuleId,
) -> Result<Vec<Pattern>, ConfigError> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| Pattern::compile(r, i, first + i as RuleId))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(re: &str) -> PatternRule {
        PatternRule {
            name: "t".into(),
            regex: re.into(),
            style: None,
        }
    }

    #[test]
    fn patterns() {
        let p = Pattern::compile(&rule("EMP-[0-9]{6}"), 0, 3).expect("compiles");
        let mut out = Vec::new();
        p.find(b"x EMP-123456 EMP-1 EMP-654321", &mut out);
        assert_eq!(
            out,
            vec![
                Span {
                    start: 2,
                    end: 12,
                    rule: 3
                },
                Span {
                    start: 19,
                    end: 29,
                    rule: 3
                }
            ]
        );
        assert!(Pattern::compile(&rule("a*"), 0, 0).is_err());
        assert!(Pattern::compile(&rule("\\b"), 0, 0).is_err());
        assert!(Pattern::compile(&rule("[^a]"), 0, 0).is_ok());
        let big = Pattern::compile(&rule("\\w{50}[0-9]\\w{50}"), 0, 0);
        assert!(big.is_err(), "{big:?}");
    }
}
