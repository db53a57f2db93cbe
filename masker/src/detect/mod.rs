//! Content detectors: find the sensitive values inside a text value, wherever they sit
//! (a plain column, `upper(email)`, `card || ''`, `row_to_json(c)` and `array_agg`
//! output, JSON documents, free text, COPY rows, error messages).
//!
//! This runs on every byte of every text value of a result, so it is built around one
//! rule: a value with nothing in it costs a few SIMD/SWAR scans and nothing else. Each
//! detector is a cheap prefilter that finds *anchors*, and a validator that decides at
//! each anchor, reading only a few bytes around it:
//!
//! | anchor | prefilter | validators |
//! |---|---|---|
//! | digit runs of the right shapes (`dddd?dddd?dddd`, `ddd?dd?dddd`, 13+ digits, …), two capitals and two digits | bitmaps of the text (SSE2 compares and `movemask`, 16 bytes per step, for values up to 128 bytes; SWAR, 8 bytes per step, for longer ones) combined with shifts and ANDs | `card`, `ssn`, national `phone` forms, IPv4 (`ip`), `iban` |
//! | `@`, `:`, `+` | the same 16-byte steps (values up to 128 bytes), `memchr3` | `email`, IPv6 (`ip`), E.164 `phone` numbers |
//! | fixed prefixes (`eyJ`, `AKIA`, `-----BEGIN `, `sk_live_`, `ghp_`, `xoxb-`, …) | values up to 128 bytes: the same 16-byte steps test byte pairs every prefix holds (`yJ`, `AK`, `--`, a letter and `-`, `_`), and only a value holding one is searched; then, and for longer values, Aho-Corasick's packed (Teddy) SIMD searcher | JWT and secrets (`token`) |
//! | the profile's literals and regexes | Aho-Corasick; a dense DFA with its literal prefilter | `custom` |
//!
//! Validators are deliberately strict at the boundaries (a card is never the middle of a
//! longer number, an IPv4 address never the head of a version `1.2.3.4.5`, an SSN needs
//! its separators and valid area/group/serial) because a false positive rewrites data a
//! client needed; the false-positive test (`tests/false_positives.rs`) holds them to that
//! on business-like values.
//!
//! Every validator bounds what it reports (`*::MAX_LEN`), so [`Detectors::max_span_len`]
//! is a true bound a streaming caller can size its carried-over context by. Spans from
//! different detectors may overlap; [`Detectors::find`] sorts and resolves them in place
//! in the caller's vector (earlier start wins, then the longer), so nothing is allocated
//! when nothing is found (and nothing beyond the caller's vector otherwise).

mod card;
mod custom;
mod email;
mod iban;
mod ip;
mod phone;
mod scan;
mod short;
mod ssn;
mod token;

use aho_corasick::{AhoCorasick, MatchKind};

pub use custom::{MAX_LITERAL_LEN, MAX_PATTERN_MATCH, PATTERN_DFA_SIZE_LIMIT};

use crate::style::{mask_same_length, mask_value, MaskKey};
use crate::{ConfigError, DetectorKind, ProfileConfig, Style};
use custom::{Literals, Pattern};
use phone::Regions;
use token::Prefix;

/// Which rule found a span: an index into [`Detectors::rule_names`].
pub type RuleId = u16;

/// A sensitive value found in a text: `text[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
    /// The rule that found it.
    pub rule: RuleId,
}

/// Style and detector of one rule.
#[derive(Debug, Clone, Copy)]
struct RuleInfo {
    style: Style,
    kind: Option<DetectorKind>,
}

/// The detectors anchored on digit runs.
#[derive(Debug, Default)]
struct Numeric {
    card: Option<RuleId>,
    ssn: Option<RuleId>,
    phone: Option<RuleId>,
    ipv4: Option<RuleId>,
    iban: Option<RuleId>,
    regions: Regions,
}

impl Numeric {
    fn any(&self) -> bool {
        self.card.is_some()
            || self.ssn.is_some()
            || self.phone.is_some()
            || self.ipv4.is_some()
            || self.iban.is_some()
    }
}

/// The detectors anchored on fixed prefixes.
#[derive(Debug)]
struct Prefixes {
    /// The SIMD "packed" searcher (Teddy) where the CPU has one: on short values it costs
    /// a third less than going through the automaton's prefilter.
    packed: Option<aho_corasick::packed::Searcher>,
    ac: AhoCorasick,
    /// By pattern id: what the prefix announces, its length, the rule.
    kinds: Vec<(Prefix, usize, RuleId)>,
}

/// A profile's compiled content detectors: built-ins, literal lists and patterns.
#[derive(Debug)]
pub struct Detectors {
    names: Vec<String>,
    rules: Vec<RuleInfo>,
    numeric: Numeric,
    any_numeric: bool,
    email: Option<RuleId>,
    ipv6: Option<RuleId>,
    prefixes: Option<Prefixes>,
    /// The bytes `find_at_signs` looks for (an anchor whose detector is off replaced by
    /// one that is on), `None` when none of their detectors is on.
    anchors: Option<[u8; 3]>,
    literals: Literals,
    patterns: Vec<Pattern>,
    max_span_len: usize,
    /// The vector instructions the short-value pass uses on this CPU.
    simd: short::Simd,
}

/// The longest span a built-in detector reports.
fn builtin_max_len(kind: DetectorKind) -> usize {
    match kind {
        DetectorKind::Card => card::MAX_LEN,
        DetectorKind::Email => email::MAX_LEN,
        DetectorKind::Ssn => ssn::MAX_LEN,
        DetectorKind::Iban => iban::MAX_LEN,
        DetectorKind::Phone => phone::MAX_LEN,
        DetectorKind::Ipv4 => ip::V4_MAX_LEN,
        DetectorKind::Ipv6 => ip::V6_MAX_LEN,
        DetectorKind::Jwt | DetectorKind::Secret => token::LONG_MAX_LEN,
    }
}

impl Detectors {
    /// Compiles the detectors a profile turns on.
    ///
    /// Fails, naming the field, on an unknown phone region, an empty or duplicate rule
    /// name, an empty literal list or literal (or one over [`MAX_LITERAL_LEN`]), a regex
    /// that does not parse, can match the empty string, or does not compile to a DFA
    /// within [`PATTERN_DFA_SIZE_LIMIT`].
    pub fn compile(profile: &ProfileConfig) -> Result<Detectors, ConfigError> {
        let regions = Regions::parse(profile.phone_regions.as_deref())?;
        let total = DetectorKind::ALL.len() + profile.literals.len() + profile.patterns.len();
        if total > usize::from(RuleId::MAX) {
            return Err(ConfigError(format!(
                "literals, patterns: at most {} rules in a profile",
                usize::from(RuleId::MAX) - DetectorKind::ALL.len()
            )));
        }
        let default_style = profile.style.unwrap_or(Style::Partial);
        let mut names = Vec::new();
        let mut rules = Vec::new();
        let mut numeric = Numeric {
            regions,
            ..Numeric::default()
        };
        let (mut email, mut ipv6, mut jwt, mut secret) = (None, None, None, None);
        let mut max_span_len = 0;
        for kind in DetectorKind::ALL {
            if let Some(on) = &profile.detectors {
                if !on.contains(&kind) {
                    continue;
                }
            }
            let id = names.len() as RuleId;
            names.push(kind.name().to_string());
            rules.push(RuleInfo {
                style: profile
                    .detector_styles
                    .get(&kind)
                    .copied()
                    .unwrap_or(default_style),
                kind: Some(kind),
            });
            max_span_len = max_span_len.max(builtin_max_len(kind));
            let slot = match kind {
                DetectorKind::Card => &mut numeric.card,
                DetectorKind::Email => &mut email,
                DetectorKind::Ssn => &mut numeric.ssn,
                DetectorKind::Iban => &mut numeric.iban,
                DetectorKind::Phone => &mut numeric.phone,
                DetectorKind::Ipv4 => &mut numeric.ipv4,
                DetectorKind::Ipv6 => &mut ipv6,
                DetectorKind::Jwt => &mut jwt,
                DetectorKind::Secret => &mut secret,
            };
            *slot = Some(id);
        }

        let mut add_name = |name: &str, field: String| -> Result<(), ConfigError> {
            custom::check_name(name, &field)?;
            let taken = DetectorKind::ALL.iter().any(|k| k.name() == name)
                || names.iter().any(|n| n == name);
            if taken {
                return Err(ConfigError(format!(
                    "{field}: the rule name {name:?} is already used (by a detector or another rule)"
                )));
            }
            names.push(name.to_string());
            Ok(())
        };
        for (i, r) in profile.literals.iter().enumerate() {
            add_name(&r.name, format!("literals[{i}].name"))?;
        }
        for (i, r) in profile.patterns.iter().enumerate() {
            add_name(&r.name, format!("patterns[{i}].name"))?;
        }
        let first_literal = rules.len() as RuleId;
        let literals = Literals::compile(&profile.literals, first_literal)?;
        for r in &profile.literals {
            rules.push(RuleInfo {
                style: r.style.unwrap_or(Style::Redact),
                kind: None,
            });
        }
        max_span_len = max_span_len.max(literals.max_len);
        let patterns = custom::compile_patterns(&profile.patterns, rules.len() as RuleId)?;
        for r in &profile.patterns {
            rules.push(RuleInfo {
                style: r.style.unwrap_or(Style::Redact),
                kind: None,
            });
        }
        if !patterns.is_empty() {
            max_span_len = max_span_len.max(MAX_PATTERN_MATCH);
        }

        let mut pats: Vec<&str> = Vec::new();
        let mut kinds = Vec::new();
        if let Some(rule) = jwt {
            pats.push(token::JWT_PREFIX);
            kinds.push((Prefix::Jwt, token::JWT_PREFIX.len(), rule));
        }
        if let Some(rule) = secret {
            for &(p, kind) in token::SECRET_PREFIXES {
                pats.push(p);
                kinds.push((kind, p.len(), rule));
            }
        }
        let prefixes = if pats.is_empty() {
            None
        } else {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(&pats)
                .map_err(|e| ConfigError(format!("detectors: cannot build the matcher: {e}")))?;
            let packed = aho_corasick::packed::Config::new()
                .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
                .builder()
                .extend(&pats)
                .build();
            Some(Prefixes { packed, ac, kinds })
        };

        let any_numeric = numeric.any();
        let mut on = [
            (email.is_some(), b'@'),
            (ipv6.is_some(), b':'),
            (numeric.phone.is_some(), b'+'),
        ]
        .into_iter()
        .filter(|&(on, _)| on)
        .map(|(_, b)| b);
        let anchors = on.next().map(|a1| {
            let a2 = on.next().unwrap_or(a1);
            let a3 = on.next().unwrap_or(a2);
            [a1, a2, a3]
        });
        Ok(Detectors {
            names,
            rules,
            numeric,
            any_numeric,
            email,
            ipv6,
            prefixes,
            anchors,
            literals,
            patterns,
            max_span_len,
            simd: short::Simd::detect(),
        })
    }

    /// Whether no detector is on (values need not be scanned).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Appends the sensitive spans of `text` to `out`: in order, non-overlapping.
    pub fn find(&self, text: &[u8], out: &mut Vec<Span>) {
        let base = out.len();
        let prefix_possible = if text.len() <= short::SHORT {
            self.find_short(text, out)
        } else {
            if let Some(anchors) = self.anchors {
                self.find_at_signs(text, anchors, out);
            }
            if self.any_numeric {
                self.find_numeric(text, out);
            }
            true
        };
        if let (Some(p), true) = (&self.prefixes, prefix_possible) {
            p.find(text, out);
        }
        if !self.literals.is_empty() {
            self.literals.find(text, out);
        }
        for p in &self.patterns {
            p.find(text, out);
        }
        resolve(out, base);
    }

    /// What `find_at_signs` and `find_numeric` do, for a text of at most
    /// [`short::SHORT`] bytes, from one classification pass that also tells whether a
    /// token prefix may be in the text (the answer; `false` spares the prefix search).
    fn find_short(&self, text: &[u8], out: &mut Vec<Span>) -> bool {
        let prefixes = self.prefixes.is_some();
        let iban = self.numeric.iban.is_some();
        let anchors = self.anchors.unwrap_or([1; 3]);
        if self.anchors.is_none() && !self.any_numeric && !prefixes {
            return false;
        }
        let simd = self.simd;
        let w = match (self.anchors.is_some(), prefixes, iban) {
            (true, true, true) => short::classify::<true, true, true>(text, anchors, simd),
            (true, true, false) => short::classify::<true, true, false>(text, anchors, simd),
            (true, false, true) => short::classify::<true, false, true>(text, anchors, simd),
            (true, false, false) => short::classify::<true, false, false>(text, anchors, simd),
            (false, true, true) => short::classify::<false, true, true>(text, anchors, simd),
            (false, true, false) => short::classify::<false, true, false>(text, anchors, simd),
            (false, false, true) => short::classify::<false, false, true>(text, anchors, simd),
            (false, false, false) => short::classify::<false, false, false>(text, anchors, simd),
        };
        let mut anchor = w.anchor;
        let mut pos = 0;
        while anchor != 0 {
            let c = anchor.trailing_zeros() as usize;
            anchor &= anchor - 1;
            if c < pos {
                continue;
            }
            pos = self.at_sign(text, c, out);
        }
        if self.any_numeric && w.digit != 0 {
            let mut resume = 0;
            let after_capitals = w.digit & (w.upper << 1) & (w.upper << 2);
            let cand = self.numeric_shapes(w.digit, false, after_capitals);
            self.validate_candidates(text, 0, cand, &mut resume, out);
        }
        w.prefix
    }

    /// Emails from their `@`, IPv6 addresses from their first `:`, E.164 phone numbers
    /// from their `+`: one `memchr3` pass (a byte no detector wants stands in for an
    /// anchor whose detector is off).
    fn find_at_signs(&self, text: &[u8], anchors: [u8; 3], out: &mut Vec<Span>) {
        let [a1, a2, a3] = anchors;
        let mut pos = 0;
        while let Some(rest) = text.get(pos..) {
            let Some(off) = memchr::memchr3(a1, a2, a3, rest) else {
                break;
            };
            pos = self.at_sign(text, pos + off, out);
        }
    }

    /// Runs the validator of the anchor at `c`; returns where the search resumes.
    #[inline]
    fn at_sign(&self, text: &[u8], c: usize, out: &mut Vec<Span>) -> usize {
        let (span, resume, rule) = match text.get(c) {
            Some(b'@') => {
                let (span, resume) = email::around(text, c);
                (span, resume, self.email)
            }
            Some(b':') => {
                let (span, resume) = ip::v6_around(text, c);
                (span, resume, self.ipv6)
            }
            _ => {
                let end = phone::e164(text, c);
                let span = end.map(|e| (c, e));
                (span, end.unwrap_or(c + 1), self.numeric.phone)
            }
        };
        if let (Some((start, end)), Some(rule)) = (span, rule) {
            out.push(Span { start, end, rule });
        }
        resume.max(c + 1)
    }

    /// Cards, SSNs, phones, IPv4 addresses and IBANs, from bitmaps.
    ///
    /// The text is classified once (digits, and capitals when IBANs are looked for; SWAR,
    /// no branch per byte), and the shapes the validators need are computed for every
    /// position at once with shifts and ANDs over a 128-bit window: a run start followed
    /// by 13+ digits, `dddd?dddd?dddd`, `ddd?dd?dddd`, `ddd?ddd?dddd`, three short runs
    /// joined by single bytes (a dotted quad's shape), two digits after two capitals (an
    /// IBAN's check digits)... Validators run only at those positions; in business data
    /// (dates, amounts, order ids) there are next to none, so a value costs its
    /// classification and a few dozen word operations. A text of up to 128 bytes is one
    /// window (`find_short`); a longer one is walked here 64 bytes at a time, each window
    /// reaching into the next block so that a shape crossing the boundary is complete
    /// (shapes look at most 16 bytes ahead and 2 behind).
    fn find_numeric(&self, text: &[u8], out: &mut Vec<Span>) {
        let upper = self.numeric.iban.is_some();
        let mut resume = 0;
        let classify = if upper {
            scan::classify::<true>
        } else {
            scan::classify::<false>
        };
        let mut base = 0;
        let mut cur = classify(text, 0);
        let mut before = scan::Block::default();
        while base < text.len() {
            let next = if base + 64 < text.len() {
                classify(text, base + 64)
            } else {
                scan::Block::default()
            };
            let wide = |a: u64, b: u64| u128::from(a) | (u128::from(b) << 64);
            let d = wide(cur.digit, next.digit);
            let u = wide(cur.upper, next.upper);
            // Digits right after two capitals (which may end the block before).
            let u1 = (u << 1) | u128::from(before.upper >> 63);
            let u2 = (u << 2) | u128::from(before.upper >> 62);
            let cand = self.numeric_shapes(d, before.digit >> 63 == 1, d & u1 & u2);
            // The second block's positions are reported from the next window (where
            // their look-ahead is complete), unless the text ends within it.
            let last = base + 128 >= text.len();
            let cand = if last { cand } else { u128::from(cand as u64) };
            self.validate_candidates(text, base, cand, &mut resume, out);
            if last {
                break;
            }
            before = cur;
            cur = next;
            base += 64;
        }
    }

    /// The positions of a 128-byte window (digit bitmap `d`; whether the byte before the
    /// window is a digit; `after_capitals`, the digits right after two capitals) where a
    /// digit-anchored validator may match.
    #[inline(always)]
    fn numeric_shapes(&self, d: u128, digit_before: bool, after_capitals: u128) -> u128 {
        let n = &self.numeric;
        let nd = !d;
        // Run starts; runs of at least k digits (`ak`) and of exactly k (`xk`) from
        // each position.
        let r = d & !((d << 1) | u128::from(digit_before));
        let a2 = d & (d >> 1);
        let a3 = a2 & (d >> 2);
        let a4 = a2 & (a2 >> 2);
        let x3 = a3 & (nd >> 3);
        let x4 = a4 & (nd >> 4);
        let mut cand: u128 = 0;
        // Cards, SSNs and US phone numbers all end in a group of four digits or more.
        let has_four = a4 != 0;
        if n.card.is_some() && has_four {
            let a13 = a4 & (a4 >> 4) & (a4 >> 8) & (d >> 12);
            // 4-4-4-x (13 to 19 digits) or 4-6-4, 4-6-5 (Diners, Amex).
            let grouped = x4
                & (a4 >> 5)
                & ((x4 >> 5) & (a4 >> 10) & (nd >> 14) & (d >> 15)
                    | (a2 >> 9) & (nd >> 11) & (a4 >> 12));
            cand |= r & (a13 | grouped);
        }
        let mut after_x3 = 0;
        if n.ssn.is_some() && has_four {
            after_x3 |= (a2 >> 4) & (nd >> 6) & (x4 >> 7);
        }
        if n.phone.is_some() && n.regions.us && has_four {
            // The area code of 415-555-0142, 415)555-0142, (415) 555-0142; the validator
            // looks back for a leading `1-`, `1 (`.
            after_x3 |= (x3 >> 4) & (x4 >> 8) | (nd >> 4) & (x3 >> 5) & (x4 >> 9);
        }
        cand |= r & x3 & after_x3;
        if n.phone.is_some() && n.regions.non_us() {
            cand |= r & a2;
        }
        if n.ipv4.is_some() {
            // Three runs of 1-3 digits, each followed by a single byte (the validator
            // wants dots) and a digit: three such junctions at least.
            let junction = nd & (d << 1) & (d >> 1);
            // (Clearing the lowest bit twice: no `popcnt` in the x86_64 baseline.)
            let two_cleared = |j: u128| {
                let j = j & j.wrapping_sub(1);
                j & j.wrapping_sub(1)
            };
            if two_cleared(junction) != 0 {
                let short = d & ((nd >> 1) | (nd >> 2) & (d >> 1) | (nd >> 3) & a3);
                let then = junction & ((junction >> 2) | (junction >> 3) | (junction >> 4));
                cand |= r & short & ((then >> 1) | (then >> 2) | (then >> 3));
            }
        }
        if n.iban.is_some() {
            // Two check digits after two capitals (a run start, then).
            cand |= after_capitals & a2;
        }
        cand
    }

    /// Runs the validators at each position of `cand` (bit `j`: byte `base + j`), in
    /// order, skipping those inside a span found before.
    #[inline(always)]
    fn validate_candidates(
        &self,
        text: &[u8],
        base: usize,
        mut cand: u128,
        resume: &mut usize,
        out: &mut Vec<Span>,
    ) {
        while cand != 0 {
            let s = base + cand.trailing_zeros() as usize;
            cand &= cand - 1;
            if s < *resume {
                continue;
            }
            let run = scan::digits_from(text, s);
            if let Some(b) = self.at_run(&self.numeric, text, s, run) {
                *resume = b.end;
                out.push(b);
            }
        }
    }

    /// The longest span a card, SSN, IPv4, national phone or IBAN validator finds at the
    /// run of `run` digits at `s` (a candidate position; the validators decide).
    #[inline]
    fn at_run(&self, n: &Numeric, text: &[u8], s: usize, run: usize) -> Option<Span> {
        let prev = if s > 0 { scan::at(text, s - 1) } else { 0 };
        let next = scan::at(text, s + run);
        let fresh = scan::fresh(text, s);
        let mut best: Option<Span> = None;
        let mut offer = |found: Option<(usize, usize)>, rule: RuleId| {
            if let Some((start, end)) = found {
                let better = match best {
                    None => true,
                    Some(b) => start < b.start || (start == b.start && end > b.end),
                };
                if better {
                    best = Some(Span { start, end, rule });
                }
            }
        };
        if fresh {
            if let Some(r) = n.card {
                let grouped =
                    run == 4 && matches!(next, b' ' | b'-') && scan::digits_from(text, s + 5) >= 4;
                if grouped || (13..=19).contains(&run) {
                    offer(card::at_run(text, s, run).map(|e| (s, e)), r);
                }
            }
            if let Some(r) = n.ssn {
                if run == 3 && matches!(next, b'-' | b' ') {
                    offer(ssn::at_run(text, s, run).map(|e| (s, e)), r);
                }
            }
            if let Some(r) = n.ipv4 {
                if run <= 3 && next == b'.' {
                    offer(ip::v4_at_run(text, s, run).map(|e| (s, e)), r);
                }
            }
        }
        if let Some(r) = n.iban {
            if prev.is_ascii_uppercase() && s >= 2 && scan::at(text, s - 2).is_ascii_uppercase() {
                offer(iban::at_run(text, s), r);
            }
        }
        if let Some(r) = n.phone {
            if phone::may_start(text, s, run, prev, next, fresh, n.regions) {
                offer(phone::at_run(text, s, run, fresh, n.regions), r);
            }
        }
        best
    }

    /// The longest span any detector can report, in bytes: a streaming caller must keep
    /// this much context around a cut to never split a value it would have found.
    pub fn max_span_len(&self) -> usize {
        self.max_span_len
    }

    /// Rule names by [`RuleId`]: built-in detectors by their `DetectorKind::name`, then
    /// literal rules, then pattern rules, by their configured names.
    pub fn rule_names(&self) -> &[String] {
        &self.names
    }

    /// The style of values the rule finds (`redact` for an id that names no rule).
    pub fn style(&self, rule: RuleId) -> Style {
        self.rules
            .get(usize::from(rule))
            .map_or(Style::Redact, |r| r.style)
    }

    /// The built-in detector behind a rule (`None` for literal and pattern rules).
    pub fn kind(&self, rule: RuleId) -> Option<DetectorKind> {
        self.rules.get(usize::from(rule)).and_then(|r| r.kind)
    }

    /// Masks every sensitive span of `text`. When nothing is found, returns `false` and
    /// leaves `out` as it was (the caller forwards the original bytes). Otherwise appends
    /// the whole text with each span rewritten in its rule's style (or, with
    /// `same_length`, overwritten by a fill of the same byte length, for places whose
    /// length prefix cannot change), adds 1 per masked value to `counts[rule]`, and returns
    /// `true`. `scratch` is reused between calls to avoid allocating.
    pub fn mask_into(
        &self,
        text: &[u8],
        key: &MaskKey,
        same_length: bool,
        out: &mut Vec<u8>,
        counts: &mut [u64],
        scratch: &mut Vec<Span>,
    ) -> bool {
        scratch.clear();
        self.find(text, scratch);
        if scratch.is_empty() {
            return false;
        }
        self.rewrite(text, scratch, key, same_length, out, counts);
        true
    }

    /// Appends `text` with each of `spans` (as [`Detectors::find`] gives them: in order,
    /// non-overlapping) masked; see [`Detectors::mask_into`].
    pub fn rewrite(
        &self,
        text: &[u8],
        spans: &[Span],
        key: &MaskKey,
        same_length: bool,
        out: &mut Vec<u8>,
        counts: &mut [u64],
    ) {
        out.reserve(text.len());
        let mut pos = 0;
        for span in spans {
            let (Some(before), Some(value)) =
                (text.get(pos..span.start), text.get(span.start..span.end))
            else {
                continue;
            };
            out.extend_from_slice(before);
            if same_length {
                mask_same_length(value, out);
            } else {
                mask_value(self.style(span.rule), self.kind(span.rule), value, key, out);
            }
            if let Some(c) = counts.get_mut(usize::from(span.rule)) {
                *c += 1;
            }
            pos = span.end;
        }
        out.extend_from_slice(text.get(pos..).unwrap_or_default());
    }
}

impl Prefixes {
    /// JWTs and secrets from their prefixes.
    fn find(&self, text: &[u8], out: &mut Vec<Span>) {
        let mut pos = 0;
        while pos < text.len() {
            let found = match &self.packed {
                Some(p) => p.find_in(text, aho_corasick::Span::from(pos..text.len())),
                None => self.ac.find(aho_corasick::Input::new(text).range(pos..)),
            };
            let Some(m) = found else { break };
            let s = m.start();
            pos = s + 1;
            let Some(&(prefix, len, rule)) = self.kinds.get(m.pattern().as_usize()) else {
                continue;
            };
            if let Some(end) = token::at_prefix(text, s, prefix, len) {
                out.push(Span {
                    start: s,
                    end,
                    rule,
                });
                pos = end;
            }
        }
    }
}

/// Sorts the spans appended from `base` and drops those overlapping a kept one: at the
/// same start the longer wins, then the lower rule id (built-ins first).
fn resolve(out: &mut Vec<Span>, base: usize) {
    let Some(found) = out.get_mut(base..) else {
        return;
    };
    if found.len() < 2 {
        return;
    }
    found.sort_unstable_by_key(|s| (s.start, std::cmp::Reverse(s.end), s.rule));
    let mut kept = base;
    for r in base..out.len() {
        let s = out[r];
        if r == base || s.start >= out[kept - 1].end {
            out[kept] = s;
            kept += 1;
        }
    }
    out.truncate(kept);
}
