//! The statement guard: what a session knows about the statements its client sends, and
//! the policy verdict for each frame that runs (or prepares) one. Sans-I/O: frame bodies,
//! a classifier and the session's statement rules in, a verdict out; the relay in
//! `session.rs` does the waiting and the byte surgery.
//!
//! It keeps the session's prepared statements and portals, because PostgreSQL lets a
//! statement be prepared once and run many times: `Parse` (or SQL `PREPARE`) is classified
//! once per name, and every `Bind`/`Execute` (or SQL `EXECUTE`) of it is checked against
//! that class with the policy in force *now*. A name the guard has never seen prepared is
//! refused: the gateway saw every frame of the session, so the backend does not have it
//! either (or it was refused when it was prepared).
//!
//! `standard_conforming_strings` decides how a backslash in `'…'` is read. The value the
//! backend reported is tracked, but a pipelined `SET` can change it before the backend's
//! report arrives; so a query with a backslash in it is classified both ways and the
//! stricter verdict is taken. A statement is never judged by a reading the backend might
//! not share.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sluice_classify::{Class, Classification, Classifier, Statement};
use sluice_control::policy::{SessionStatementRules, StatementAccess, StatementDecision};

use crate::handshake::Refusal;

/// SQLSTATE of a statement refused by policy (insufficient_privilege).
pub const REFUSED: &str = "42501";
/// SQLSTATE of a statement refused because it does not parse (syntax_error).
pub const SYNTAX_ERROR: &str = "42601";

/// A statement prepared in this session (by `Parse` or SQL `PREPARE`), as classified.
#[derive(Debug)]
pub struct Prepared {
    /// The query string's classification (its fingerprint and text).
    pub classification: Arc<Classification>,
    /// The prepared statement itself.
    pub statement: Arc<Statement>,
}

/// What the relay must do with one frame.
#[derive(Debug)]
pub enum Action {
    /// Send it on.
    Forward,
    /// Do not send it; answer with this error (the session goes on).
    Refuse(Refusal),
    /// Do not send it yet: a human must approve it first.
    Hold(StatementDecision),
}

/// One statement the audit trail must account for.
#[derive(Debug, Clone)]
pub struct Audited {
    /// The query string's classification.
    pub classification: Arc<Classification>,
    /// Which statement of it.
    pub index: usize,
    /// For a prepared statement run by name: what it runs.
    pub prepared: Option<Arc<Statement>>,
    /// The policy decision.
    pub decision: StatementDecision,
}

impl Audited {
    /// The statement that was judged.
    pub fn statement(&self) -> Option<&Statement> {
        match &self.prepared {
            Some(p) => Some(p),
            None => self.classification.statements.get(self.index),
        }
    }
}

/// The guard's verdict on a frame.
#[derive(Debug)]
pub struct Checked {
    /// What to do with the frame.
    pub action: Action,
    /// The statements it runs, for the audit trail (empty for frames that only prepare or
    /// bind, which are audited when they run).
    pub audit: Vec<Audited>,
    /// Bookkeeping applied once the frame is really forwarded ([`Guard::forwarded`]).
    effects: Vec<Effect>,
}

impl Checked {
    /// A refusal decided before the statement rules were asked (the session-level
    /// verdict): nothing to audit or record.
    pub fn refuse(refusal: Refusal) -> Checked {
        Checked {
            action: Action::Refuse(refusal),
            audit: Vec::new(),
            effects: Vec::new(),
        }
    }

    /// Settles a held frame: sent as it is (`None`) or refused with the error.
    pub fn settle(mut self, refusal: Option<Refusal>) -> Checked {
        match refusal {
            None => self.action = Action::Forward,
            Some(refusal) => {
                self.action = Action::Refuse(refusal);
                // Nothing it would have prepared exists; the sentinel that replaces it
                // drops the backend's unnamed statement.
                self.effects.clear();
                self.effects.push(Effect::Deallocate(Some(Vec::new())));
            }
        }
        self
    }

    /// A frame sent on without judging it (benchmark builds without statement policy).
    pub fn unjudged() -> Checked {
        Checked::forward()
    }

    fn forward() -> Checked {
        Checked {
            action: Action::Forward,
            audit: Vec::new(),
            effects: Vec::new(),
        }
    }

    /// The fingerprint of what is held, if anything is.
    pub fn held_fingerprint(&self) -> Option<u64> {
        match self.action {
            Action::Hold(_) => self.audit.first().map(|a| a.classification.fingerprint),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Effect {
    Prepare(Vec<u8>, Arc<Prepared>),
    Bind(Vec<u8>, Arc<Prepared>),
    Deallocate(Option<Vec<u8>>),
    ClosePortal(Vec<u8>),
}

/// A session's statement bookkeeping.
#[derive(Debug)]
pub struct Guard {
    statements: HashMap<Vec<u8>, Arc<Prepared>>,
    portals: HashMap<Vec<u8>, Arc<Prepared>>,
    /// Fingerprints an approver let run for the rest of the session.
    approved_fingerprints: HashSet<u64>,
    /// `standard_conforming_strings` as the backend last reported it.
    standard_conforming_strings: bool,
}

impl Default for Guard {
    fn default() -> Self {
        Guard::new()
    }
}

impl Guard {
    /// A guard for a new session (`standard_conforming_strings` on, PostgreSQL's default
    /// since 9.1, until the backend says otherwise).
    pub fn new() -> Guard {
        Guard {
            statements: HashMap::new(),
            portals: HashMap::new(),
            approved_fingerprints: HashSet::new(),
            standard_conforming_strings: true,
        }
    }

    /// Records a `ParameterStatus` from the backend.
    pub fn parameter_status(&mut self, name: &[u8], value: &[u8]) {
        if name == b"standard_conforming_strings" {
            self.standard_conforming_strings = value == b"on";
        }
    }

    /// Lets statements with this fingerprint run for the rest of the session.
    pub fn approve_fingerprint(&mut self, fingerprint: u64) {
        self.approved_fingerprints.insert(fingerprint);
    }

    /// The verdict on a client frame. Only `Q`, `P`, `B`, `E`, `F` and `C` frames are
    /// judged; every other frame is forwarded. `rules` is `None` when the session may not
    /// run statements at all (the caller refuses before asking).
    pub fn check(
        &mut self,
        tag: u8,
        body: &[u8],
        classifier: &mut Classifier,
        rules: &SessionStatementRules,
    ) -> Checked {
        let mut checked = self.judge_frame(tag, body, classifier, rules);
        if matches!(checked.action, Action::Refuse(_)) && matches!(tag, b'P' | b'B' | b'E') {
            // The relay sends the backend a failing unnamed Parse instead, and PostgreSQL
            // drops its unnamed statement before parsing a new one.
            checked.effects.push(Effect::Deallocate(Some(Vec::new())));
        }
        checked
    }

    fn judge_frame(
        &mut self,
        tag: u8,
        body: &[u8],
        classifier: &mut Classifier,
        rules: &SessionStatementRules,
    ) -> Checked {
        match tag {
            b'Q' => {
                let sql = cstr(body).map_or(body, |(s, _)| s);
                self.check_query(sql, classifier, rules)
            }
            b'P' => match cstr(body).and_then(|(name, rest)| Some((name, cstr(rest)?.0))) {
                Some((name, sql)) => self.check_parse(name, sql, classifier, rules),
                None => malformed("Parse"),
            },
            b'B' => match cstr(body).and_then(|(portal, rest)| Some((portal, cstr(rest)?.0))) {
                Some((portal, statement)) => {
                    let Some(prepared) = self.statements.get(statement).cloned() else {
                        return not_prepared(statement);
                    };
                    let decision = self.decide_prepared(&prepared, rules);
                    let mut checked = verdict(decision, &prepared, false);
                    if matches!(checked.action, Action::Forward) {
                        checked
                            .effects
                            .push(Effect::Bind(portal.to_vec(), Arc::clone(&prepared)));
                    }
                    checked
                }
                None => malformed("Bind"),
            },
            b'E' => match cstr(body) {
                Some((portal, _)) => {
                    let Some(prepared) = self.portals.get(portal).cloned() else {
                        // Binding it failed on the backend (or was refused): the backend
                        // reports the missing portal itself.
                        return Checked::forward();
                    };
                    let decision = self.decide_prepared(&prepared, rules);
                    verdict(decision, &prepared, true)
                }
                None => malformed("Execute"),
            },
            b'C' => {
                // Close: forget the name once it is forwarded (never refused).
                let mut checked = Checked::forward();
                if let Some((&target, rest)) = body.split_first() {
                    if let Some((name, _)) = cstr(rest) {
                        checked.effects.push(match target {
                            b'S' => Effect::Deallocate(Some(name.to_vec())),
                            _ => Effect::ClosePortal(name.to_vec()),
                        });
                    }
                }
                checked
            }
            b'F' => {
                // The fast-path interface calls a function by OID: nothing to classify, and
                // it reaches functions like lo_export. Policy must name `procedural` for it.
                let mut statement = Statement::unknown("fast-path function call");
                statement.class = Class::Procedural;
                statement.command = "FUNCTION CALL".to_owned();
                statement.reason = None;
                let classification = Arc::new(Classification {
                    fingerprint: 0,
                    normalized: "<fast-path function call>".to_owned(),
                    statements: vec![statement.clone()],
                });
                let decision = rules.decide(&statement, 0, b"");
                let prepared = Prepared {
                    classification,
                    statement: Arc::new(statement),
                };
                verdict(decision, &prepared, true)
            }
            _ => Checked::forward(),
        }
    }

    fn classify(&self, sql: &[u8], classifier: &mut Classifier) -> Arc<Classification> {
        classifier.classify(sql, self.standard_conforming_strings)
    }

    /// The other reading of `sql`, when a backslash makes the two differ.
    fn other_reading(
        &self,
        sql: &[u8],
        classifier: &mut Classifier,
    ) -> Option<Arc<Classification>> {
        if !sql.contains(&b'\\') {
            return None;
        }
        let other = classifier.classify(sql, !self.standard_conforming_strings);
        Some(other)
    }

    fn check_query(
        &mut self,
        sql: &[u8],
        classifier: &mut Classifier,
        rules: &SessionStatementRules,
    ) -> Checked {
        let classification = self.classify(sql, classifier);
        let mut checked = self.judge_query(&classification, sql, rules);
        if let Some(other) = self.other_reading(sql, classifier) {
            if other.normalized != classification.normalized {
                let second = self.judge_query(&other, sql, rules);
                if stricter(&second.action, &checked.action) {
                    checked = second;
                }
            }
        }
        checked
    }

    /// Decides every statement of a query string (EXECUTE by what it runs); the whole
    /// string takes the strictest verdict.
    fn judge_query(
        &self,
        classification: &Arc<Classification>,
        sql: &[u8],
        rules: &SessionStatementRules,
    ) -> Checked {
        let mut checked = Checked::forward();
        let mut worst: Option<StatementDecision> = None;
        // Whether the strictest verdict is on text that does not parse.
        let mut unparsed = false;
        for (index, statement) in classification.statements.iter().enumerate() {
            let prepared: Option<Arc<Statement>> =
                statement.executes.as_ref().map(|name| {
                    match self.statements.get(name.as_bytes()) {
                        Some(prepared) => Arc::clone(&prepared.statement),
                        None => {
                            let mut unknown = Statement::unknown(format!(
                                "EXECUTE of \"{name}\", which this session never prepared"
                            ));
                            unknown.command = "EXECUTE".to_owned();
                            Arc::new(unknown)
                        }
                    }
                });
            let judged = prepared.as_deref().unwrap_or(statement);
            let fingerprint = classification.fingerprint;
            let mut decision = rules.decide(judged, fingerprint, sql);
            if matches!(decision.access, StatementAccess::Request)
                && self.approved_fingerprints.contains(&fingerprint)
            {
                decision.access = StatementAccess::Allow;
            }
            if let Some((name, inner)) = &statement.prepares {
                let prepared = Arc::new(Prepared {
                    classification: Arc::clone(classification),
                    statement: Arc::new((**inner).clone()),
                });
                checked
                    .effects
                    .push(Effect::Prepare(name.as_bytes().to_vec(), prepared));
            }
            if let Some(which) = &statement.deallocates {
                checked.effects.push(Effect::Deallocate(
                    which.as_ref().map(|n| n.as_bytes().to_vec()),
                ));
            }
            if worst
                .as_ref()
                .is_none_or(|w| severity(&decision.access) > severity(&w.access))
            {
                unparsed = judged.class == Class::Unknown
                    && judged.reason.as_deref().is_some_and(|r| {
                        r.starts_with("does not parse") || r.starts_with("does not lex")
                    });
                worst = Some(decision.clone());
            }
            checked.audit.push(Audited {
                classification: Arc::clone(classification),
                index,
                prepared,
                decision,
            });
        }
        if let Some(worst) = worst {
            checked.action = action_for(worst);
            if let (Action::Refuse(refusal), true) = (&mut checked.action, unparsed) {
                // Text PostgreSQL's own parser rejects is never sent; the client gets the
                // syntax error it would have got from the server (syntax_error).
                refusal.sqlstate = SYNTAX_ERROR.into();
            }
        }
        if let Action::Refuse(_) = checked.action {
            checked.effects.clear();
        }
        checked
    }

    fn check_parse(
        &mut self,
        name: &[u8],
        sql: &[u8],
        classifier: &mut Classifier,
        rules: &SessionStatementRules,
    ) -> Checked {
        let mut classification = self.classify(sql, classifier);
        let mut checked = self.judge_parse(&classification, sql, rules);
        if let Some(other) = self.other_reading(sql, classifier) {
            if other.normalized != classification.normalized {
                let second = self.judge_parse(&other, sql, rules);
                if stricter(&second.action, &checked.action) {
                    checked = second;
                    classification = other;
                }
            }
        }
        match checked.action {
            Action::Refuse(_) => {}
            _ => {
                let statement = classification
                    .statements
                    .first()
                    .cloned()
                    .unwrap_or_else(empty_statement);
                checked.effects.push(Effect::Prepare(
                    name.to_vec(),
                    Arc::new(Prepared {
                        classification,
                        statement: Arc::new(statement),
                    }),
                ));
            }
        }
        checked
    }

    fn judge_parse(
        &self,
        classification: &Arc<Classification>,
        sql: &[u8],
        rules: &SessionStatementRules,
    ) -> Checked {
        // The extended protocol takes one statement; PostgreSQL refuses more itself.
        let mut checked = self.judge_query(classification, sql, rules);
        // Parse only prepares: it is audited when it runs, unless it is refused now.
        if !matches!(checked.action, Action::Refuse(_)) {
            checked.audit.clear();
        }
        // A hold at Parse would hold the whole pipeline for a statement that may never
        // run; the approval is asked for when it is executed.
        if matches!(checked.action, Action::Hold(_)) {
            checked.action = Action::Forward;
        }
        checked
    }

    fn decide_prepared(
        &self,
        prepared: &Prepared,
        rules: &SessionStatementRules,
    ) -> StatementDecision {
        let fingerprint = prepared.classification.fingerprint;
        let mut decision = rules.decide(&prepared.statement, fingerprint, b"");
        if matches!(decision.access, StatementAccess::Request)
            && self.approved_fingerprints.contains(&fingerprint)
        {
            decision.access = StatementAccess::Allow;
        }
        decision
    }

    /// Applies what a frame changes (prepared names, portals) once it, or the sentinel
    /// that replaces a refused one, is forwarded.
    pub fn forwarded(&mut self, checked: Checked) {
        for effect in checked.effects {
            match effect {
                Effect::Prepare(name, prepared) => {
                    self.statements.insert(name, prepared);
                }
                Effect::Bind(portal, prepared) => {
                    self.portals.insert(portal, prepared);
                }
                Effect::Deallocate(Some(name)) => {
                    self.statements.remove(&name);
                }
                Effect::Deallocate(None) => {
                    self.statements.clear();
                    self.portals.clear();
                }
                Effect::ClosePortal(name) => {
                    self.portals.remove(&name);
                }
            }
        }
    }
}

fn empty_statement() -> Statement {
    let mut s = Statement::unknown("empty statement");
    s.class = Class::Read;
    s.command = "EMPTY".to_owned();
    s.reason = None;
    s
}

fn severity(access: &StatementAccess) -> u8 {
    match access {
        StatementAccess::Allow => 0,
        StatementAccess::Request => 1,
        StatementAccess::Deny => 2,
    }
}

fn stricter(a: &Action, b: &Action) -> bool {
    let rank = |x: &Action| match x {
        Action::Forward => 0,
        Action::Hold(_) => 1,
        Action::Refuse(_) => 2,
    };
    rank(a) > rank(b)
}

fn action_for(decision: StatementDecision) -> Action {
    match decision.access {
        StatementAccess::Allow => Action::Forward,
        StatementAccess::Deny => Action::Refuse(
            Refusal::new(REFUSED, decision.message.clone()).hint(decision.hint.clone()),
        ),
        StatementAccess::Request => Action::Hold(decision),
    }
}

/// The verdict on running (`runs`: Execute, FunctionCall) or binding a prepared
/// statement. Binding is never held: the approval is asked for when it runs.
fn verdict(decision: StatementDecision, prepared: &Prepared, runs: bool) -> Checked {
    let mut action = action_for(decision.clone());
    if !runs && matches!(action, Action::Hold(_)) {
        action = Action::Forward;
    }
    let refused = matches!(action, Action::Refuse(_));
    let audit = if runs || refused {
        vec![Audited {
            classification: Arc::clone(&prepared.classification),
            index: 0,
            prepared: Some(Arc::clone(&prepared.statement)),
            decision,
        }]
    } else {
        Vec::new()
    };
    Checked {
        action,
        audit,
        effects: Vec::new(),
    }
}

fn malformed(what: &str) -> Checked {
    Checked {
        action: Action::Refuse(Refusal::new(
            "08P01",
            format!("invalid {what} message: missing a NUL-terminated field"),
        )),
        audit: Vec::new(),
        effects: Vec::new(),
    }
}

fn not_prepared(name: &[u8]) -> Checked {
    // The backend does not have it either: it was never prepared, or preparing it was
    // refused. Say so in PostgreSQL's words (invalid_sql_statement_name).
    Checked {
        action: Action::Refuse(Refusal::new(
            "26000",
            format!(
                "prepared statement \"{}\" does not exist",
                String::from_utf8_lossy(name)
            ),
        )),
        audit: Vec::new(),
        effects: Vec::new(),
    }
}

/// Splits a NUL-terminated string off the front of `body`.
fn cstr(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = body.iter().position(|&b| b == 0)?;
    Some((&body[..end], &body[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_control::policy::{Policy, PolicyConfig, Subject};

    /// `reader` may read and manage its session; everything else is refused.
    fn reader_rules() -> SessionStatementRules {
        let config: PolicyConfig = toml::from_str(
            r#"
            [[rules]]
            name = "in"
            groups = ["support"]
            resources = ["shop"]
            access = "allow"

            [[statements]]
            name = "reads"
            groups = ["support"]
            resources = ["*"]
            classes = ["read", "transaction", "session"]
            access = "allow"
            "#,
        )
        .expect("policy");
        let policy = Policy::compile(&config, &["shop"]).expect("compiles");
        let groups = vec!["support".to_owned()];
        policy.statement_rules(
            &Subject {
                user: "bob",
                groups: &groups,
            },
            "shop",
        )
    }

    fn cstrs(parts: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::new();
        for part in parts {
            body.extend_from_slice(part);
            body.push(0);
        }
        body
    }

    fn refusal(checked: &Checked) -> Option<&str> {
        match &checked.action {
            Action::Refuse(r) => Some(&r.sqlstate),
            _ => None,
        }
    }

    #[test]
    fn a_backslash_is_judged_under_both_readings_of_standard_conforming_strings() {
        let rules = reader_rules();
        let mut classifier = Classifier::new(64);
        let mut guard = Guard::new();
        // With standard_conforming_strings on (the backend's report) this is a read, a
        // DROP and a comment; off, it is one read of a string. A pipelined SET could make
        // the backend read it either way, so the DROP reading decides.
        let trick = cstrs(&[br"SELECT '\'; DROP TABLE t; --'"]);
        assert_eq!(
            refusal(&guard.check(b'Q', &trick, &mut classifier, &rules)),
            Some(REFUSED)
        );
        guard.parameter_status(b"standard_conforming_strings", b"off");
        assert_eq!(
            refusal(&guard.check(b'Q', &trick, &mut classifier, &rules)),
            Some(REFUSED),
            "the other reading still refuses"
        );
        // A backslash that reads the same both ways is no reason to refuse.
        let plain = cstrs(&[br"SELECT E'a\nb'"]);
        assert!(matches!(
            guard.check(b'Q', &plain, &mut classifier, &rules).action,
            Action::Forward
        ));
    }

    #[test]
    fn prepared_statements_are_judged_by_what_they_run_and_unknown_names_are_refused() {
        let rules = reader_rules();
        let mut classifier = Classifier::new(64);
        let mut guard = Guard::new();
        let prepare = cstrs(&[b"PREPARE w AS DELETE FROM t"]);
        let checked = guard.check(b'Q', &prepare, &mut classifier, &rules);
        assert!(matches!(checked.action, Action::Forward), "{checked:?}");
        guard.forwarded(checked);
        let execute = cstrs(&[b"EXECUTE w"]);
        let checked = guard.check(b'Q', &execute, &mut classifier, &rules);
        assert_eq!(refusal(&checked), Some(REFUSED));
        assert_eq!(
            checked.audit[0].statement().map(|s| s.command.as_str()),
            Some("DELETE")
        );
        let never = cstrs(&[b"EXECUTE nope"]);
        assert_eq!(
            refusal(&guard.check(b'Q', &never, &mut classifier, &rules)),
            Some(REFUSED)
        );

        // Extended protocol: a named read is bound and executed; a Bind of a name never
        // parsed is PostgreSQL's 26000; DEALLOCATE ALL forgets everything.
        let parse = cstrs(&[b"s1", b"SELECT 1"]);
        let checked = guard.check(b'P', &[parse, vec![0, 0]].concat(), &mut classifier, &rules);
        assert!(matches!(checked.action, Action::Forward));
        guard.forwarded(checked);
        let bind = [cstrs(&[b"", b"s1"]), vec![0, 0, 0, 0, 0, 0]].concat();
        let checked = guard.check(b'B', &bind, &mut classifier, &rules);
        assert!(matches!(checked.action, Action::Forward));
        guard.forwarded(checked);
        let run = [cstrs(&[b""]), vec![0, 0, 0, 0]].concat();
        let checked = guard.check(b'E', &run, &mut classifier, &rules);
        assert!(matches!(checked.action, Action::Forward));
        assert_eq!(checked.audit.len(), 1, "Execute is what gets audited");
        let stranger = [cstrs(&[b"", b"s2"]), vec![0, 0, 0, 0, 0, 0]].concat();
        assert_eq!(
            refusal(&guard.check(b'B', &stranger, &mut classifier, &rules)),
            Some("26000")
        );
        let forget = cstrs(&[b"DEALLOCATE ALL"]);
        let checked = guard.check(b'Q', &forget, &mut classifier, &rules);
        guard.forwarded(checked);
        assert_eq!(
            refusal(&guard.check(b'B', &bind, &mut classifier, &rules)),
            Some("26000")
        );
    }

    #[test]
    fn malformed_and_unparsable_frames_are_refused_and_never_panic() {
        let rules = reader_rules();
        let mut classifier = Classifier::new(64);
        let mut guard = Guard::new();
        for (tag, body) in [
            (b'P', &b"no-terminator"[..]),
            (b'B', &b"portal\0"[..]),
            (b'E', &b""[..]),
        ] {
            assert_eq!(
                refusal(&guard.check(tag, body, &mut classifier, &rules)),
                Some("08P01"),
                "{}",
                tag as char
            );
        }
        let garbage = cstrs(&[b"SELEKT 1"]);
        assert_eq!(
            refusal(&guard.check(b'Q', &garbage, &mut classifier, &rules)),
            Some(SYNTAX_ERROR)
        );
        let unterminated = cstrs(&[b"SELECT 'open"]);
        assert_eq!(
            refusal(&guard.check(b'Q', &unterminated, &mut classifier, &rules)),
            Some(SYNTAX_ERROR)
        );
        let not_utf8 = [&b"SELECT '\xff'"[..], b"\0"].concat();
        assert!(refusal(&guard.check(b'Q', &not_utf8, &mut classifier, &rules)).is_some());
    }
}
