//! The classification corpus: every case of `tests/corpus/statements.txt` (its header
//! describes the format) through [`Classifier::classify`], with a cache and without one.
//! Every mismatch is collected and reported at once.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use sluice_classify::{Class, Classification, Classifier, Flag, Statement};

const CORPUS: &str = include_str!("corpus/statements.txt");

/// The corpus must not shrink by accident (a parse slip that drops cases).
const MIN_CASES: usize = 220;

struct Case {
    name: String,
    /// Line of the `##` header, for messages.
    line: usize,
    sql: Vec<u8>,
    scs: bool,
    expect: Vec<Expect>,
}

#[derive(Default)]
struct Expect {
    class: Option<Class>,
    command: Option<String>,
    tables: Option<Vec<String>>,
    functions: Option<Vec<String>>,
    flags: Vec<Flag>,
    prepares: Option<(String, Class)>,
    executes: Option<String>,
    /// `Some(None)`: all.
    deallocates: Option<Option<String>>,
    reason: Option<String>,
}

fn parse_corpus(text: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    let mut sql_lines: Vec<&str> = Vec::new();
    let mut escapes = false;
    let mut in_sql = false;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if let Some(header) = line.strip_prefix("## ") {
            let mut parts = header.split(" | ");
            let name = parts.next().unwrap().trim().to_owned();
            let mut scs = true;
            escapes = false;
            for opt in parts {
                match opt.trim() {
                    "scs=off" => scs = false,
                    "escapes" => escapes = true,
                    other => panic!("line {line_no}: unknown case option {other:?}"),
                }
            }
            cases.push(Case {
                name,
                line: line_no,
                sql: Vec::new(),
                scs,
                expect: Vec::new(),
            });
            sql_lines.clear();
            in_sql = true;
        } else if let Some(expect) = line.strip_prefix("=> ") {
            let case = cases
                .last_mut()
                .unwrap_or_else(|| panic!("line {line_no}: expectation before any case"));
            if in_sql {
                let sql = sql_lines.join("\n");
                case.sql = if escapes {
                    unescape(&sql, line_no)
                } else {
                    sql.into_bytes()
                };
                in_sql = false;
            }
            if expect.trim() != "(none)" {
                case.expect.push(parse_expect(expect, line_no));
            }
        } else if in_sql {
            sql_lines.push(line);
        } else if !(line.is_empty() || line.starts_with('#')) {
            panic!("line {line_no}: text outside a case: {line:?}");
        }
    }
    assert!(!in_sql, "the last case has no expectation");
    cases
}

fn unescape(s: &str, line: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'0') => out.push(0),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let hex = std::str::from_utf8(&hex).unwrap();
                out.push(
                    u8::from_str_radix(hex, 16)
                        .unwrap_or_else(|_| panic!("line {line}: bad \\x escape")),
                );
            }
            other => panic!("line {line}: bad escape {other:?}"),
        }
    }
    out
}

/// Splits an expectation line on spaces outside double quotes, dropping the quotes.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn list(v: &str) -> Vec<String> {
    let mut items: Vec<String> = v
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    items.sort();
    items
}

fn parse_expect(s: &str, line: usize) -> Expect {
    let words = words(s);
    let mut e = Expect {
        class: Some(
            words[0]
                .parse()
                .unwrap_or_else(|err| panic!("line {line}: {err}")),
        ),
        ..Expect::default()
    };
    for w in &words[1..] {
        if let Some(r) = w.strip_prefix("reason~") {
            e.reason = Some(r.to_owned());
            continue;
        }
        let (k, v) = w
            .split_once('=')
            .unwrap_or_else(|| panic!("line {line}: bad expectation {w:?}"));
        match k {
            "command" => e.command = Some(v.to_owned()),
            "tables" => e.tables = Some(list(v)),
            "functions" => e.functions = Some(list(v)),
            "flags" => {
                e.flags = list(v)
                    .iter()
                    .map(|f| f.parse().unwrap_or_else(|err| panic!("line {line}: {err}")))
                    .collect()
            }
            "prepares" => {
                let (name, class) = v
                    .split_once(':')
                    .unwrap_or_else(|| panic!("line {line}: prepares=name:class"));
                let class = class
                    .parse()
                    .unwrap_or_else(|err| panic!("line {line}: {err}"));
                e.prepares = Some((name.to_owned(), class));
            }
            "executes" => e.executes = Some(v.to_owned()),
            "deallocates" => e.deallocates = Some(if v == "*" { None } else { Some(v.to_owned()) }),
            other => panic!("line {line}: unknown key {other:?}"),
        }
    }
    e
}

/// Differences between a statement and its expectation.
fn diff(got: &Statement, e: &Expect) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(class) = e.class {
        if got.class != class {
            out.push(format!("class {} (want {class})", got.class));
        }
    }
    if let Some(command) = &e.command {
        if &got.command != command {
            out.push(format!("command {:?} (want {command:?})", got.command));
        }
    }
    if let Some(tables) = &e.tables {
        if &got.tables != tables {
            out.push(format!("tables {:?} (want {tables:?})", got.tables));
        }
    }
    if let Some(functions) = &e.functions {
        if &got.functions != functions {
            out.push(format!(
                "functions {:?} (want {functions:?})",
                got.functions
            ));
        }
    }
    let flags: Vec<Flag> = got.flags.iter().collect();
    let mut want_flags = e.flags.clone();
    want_flags.sort();
    if flags != want_flags {
        out.push(format!("flags {flags:?} (want {want_flags:?})"));
    }
    let prepares = got.prepares.as_ref().map(|(n, s)| (n.clone(), s.class));
    if prepares != e.prepares {
        out.push(format!("prepares {prepares:?} (want {:?})", e.prepares));
    }
    if got.executes != e.executes {
        out.push(format!(
            "executes {:?} (want {:?})",
            got.executes, e.executes
        ));
    }
    if got.deallocates != e.deallocates {
        out.push(format!(
            "deallocates {:?} (want {:?})",
            got.deallocates, e.deallocates
        ));
    }
    if let Some(reason) = &e.reason {
        if !got
            .reason
            .as_deref()
            .unwrap_or("")
            .contains(reason.as_str())
        {
            out.push(format!("reason {:?} (want ~{reason:?})", got.reason));
        }
    }
    if got.class == Class::Unknown && got.reason.is_none() {
        out.push("unknown without a reason".to_owned());
    }
    out
}

fn check(case: &Case, got: &Classification) -> Vec<String> {
    let mut problems = Vec::new();
    if got.statements.len() != case.expect.len() {
        problems.push(format!(
            "{} statements (want {}): {:?}",
            got.statements.len(),
            case.expect.len(),
            got.statements
                .iter()
                .map(|s| format!("{} {}", s.class, s.command))
                .collect::<Vec<_>>()
        ));
    }
    for (i, (s, e)) in got.statements.iter().zip(&case.expect).enumerate() {
        for d in diff(s, e) {
            problems.push(format!("statement {}: {d}", i + 1));
        }
    }
    problems
}

#[test]
fn corpus() {
    let cases = parse_corpus(CORPUS);
    assert!(
        cases.len() >= MIN_CASES,
        "only {} cases in the corpus",
        cases.len()
    );
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(
            names.insert(c.name.as_str()),
            "duplicate case name {:?}",
            c.name
        );
    }

    let mut cached = Classifier::new(4096);
    let mut uncached = Classifier::new(0);
    let mut failures = Vec::new();
    for case in &cases {
        let first = cached.classify(&case.sql, case.scs);
        let mut problems = check(case, &first);

        // The same bytes again: a cache hit, the same Arc (when there is a key to cache).
        let hits = cached.cache_hits();
        let again = cached.classify(&case.sql, case.scs);
        if *again != *first {
            problems.push("second classification differs from the first".to_owned());
        }
        // A lexing error has no key: fingerprint 0, no normalized text, one unknown.
        let lex_error = first.fingerprint == 0 && first.normalized.is_empty();
        if lex_error && !matches!(&first.statements[..], [s] if s.class == Class::Unknown) {
            problems.push("fingerprint 0 without a lexing error".to_owned());
        }
        if !lex_error {
            if !Arc::ptr_eq(&first, &again) {
                problems.push("second classification was not the cached Arc".to_owned());
            }
            if cached.cache_hits() != hits + 1 {
                problems.push("second classification was not a cache hit".to_owned());
            }
        }
        // Without a cache: the same answer.
        let fresh = uncached.classify(&case.sql, case.scs);
        if *fresh != *first {
            problems.push("classification without the cache differs".to_owned());
        }

        if !problems.is_empty() {
            failures.push(format!(
                "line {} {:?} (scs={}) sql={:?}\n    normalized={:?}\n    {}",
                case.line,
                case.name,
                if case.scs { "on" } else { "off" },
                String::from_utf8_lossy(&case.sql),
                first.normalized,
                problems.join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(uncached.cache_len(), 0);
    assert_eq!(uncached.cache_hits(), 0);
}

#[test]
fn literals_do_not_change_the_key() {
    let mut c = Classifier::new(16);
    let a = c.classify(
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
        true,
    );
    let b = c.classify(b"select abalance from pgbench_accounts where aid = 7", true);
    assert_eq!(a.statements[0].class, Class::Read);
    assert_eq!(c.cache_len(), 1, "{:?} vs {:?}", a.normalized, b.normalized);
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!((c.cache_hits(), c.cache_misses()), (1, 1));
}

#[test]
fn trailing_nul_is_stripped_once() {
    let mut c = Classifier::new(16);
    let plain = c.classify(b"SELECT 1", true);
    let nul = c.classify(b"SELECT 1\0", true);
    assert!(Arc::ptr_eq(&plain, &nul));
    let empty = c.classify(b"\0", true);
    assert!(empty.statements.is_empty());
}

/// Counts allocations per thread, for [`a_hit_does_not_allocate`].
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_allocation() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

#[test]
fn a_hit_does_not_allocate() {
    let mut c = Classifier::new(16);
    let bodies: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("SELECT abalance FROM pgbench_accounts WHERE aid = {i};\0").into_bytes())
        .collect();
    let before = ALLOCATIONS.with(Cell::get);
    let first = c.classify(&bodies[0], true);
    assert_eq!(first.statements[0].class, Class::Read);
    // The miss parsed and allocated: the counter works.
    assert!(ALLOCATIONS.with(Cell::get) > before);
    let before = ALLOCATIONS.with(Cell::get);
    for body in &bodies {
        let hit = c.classify(body, true);
        assert!(Arc::ptr_eq(&hit, &first));
    }
    let allocations = ALLOCATIONS.with(Cell::get) - before;
    assert_eq!(
        allocations, 0,
        "100 cache hits allocated {allocations} times"
    );
    assert_eq!(c.cache_hits(), 100);
}
