//! Statement classification: what kind of statement a client sent, decided before the
//! database sees it.
//!
//! This crate owns the sans-I/O path from SQL text to a [`Classification`]: a lexer that
//! follows PostgreSQL's lexical rules exactly ([`lexer`]) and produces a normalized
//! fingerprint, a bounded per-worker cache keyed by it ([`cache`]), and, on a miss,
//! `pg_query` (PostgreSQL's own parser, as libpg_query) as the authority ([`analyze`]).
//! It never does I/O, reads a clock or holds global state, and it never decides policy:
//! it says *what* a statement is; `sluice_control::policy` says whether it may run.
//!
//! Why a hand-written lexer in front of a real parser: parsing costs tens of
//! microseconds per statement, lexing a pgbench-sized statement well under one, and
//! literals cannot change a statement's class, so statements that differ only in their
//! literals share one cached classification. The fingerprint text that keys the cache is
//! itself what `pg_query` classifies (literals replaced by canonical placeholders that
//! parse), so a cache hit can never disagree with a parse of the same key.

#![deny(missing_docs)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod analyze;
pub mod cache;
pub mod lexer;

/// The kind of a statement, the unit policy rules are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// SELECT, SHOW, VALUES, TABLE, EXPLAIN (without ANALYZE of a write), FETCH, ...
    Read,
    /// INSERT, UPDATE, DELETE, MERGE, SELECT INTO-less data-modifying CTEs, SELECT ... FOR
    /// UPDATE is a read with the `row_lock` flag.
    Write,
    /// CREATE / ALTER / DROP / TRUNCATE / COMMENT / SECURITY LABEL / REFRESH ...
    Ddl,
    /// GRANT, REVOKE, CREATE/ALTER/DROP ROLE or USER, ALTER DEFAULT PRIVILEGES, ...
    Dcl,
    /// VACUUM, ANALYZE, CLUSTER, REINDEX, CHECKPOINT, LOAD, ALTER SYSTEM, SET of a
    /// dangerous setting (e.g. `session_replication_role`), ...
    Admin,
    /// BEGIN, START TRANSACTION, COMMIT, ROLLBACK, SAVEPOINT, ...
    Transaction,
    /// SET, RESET, PREPARE, DEALLOCATE, DISCARD, LISTEN, UNLISTEN, DECLARE/CLOSE cursor, ...
    Session,
    /// COPY ... FROM STDIN.
    CopyIn,
    /// COPY ... TO STDOUT.
    CopyOut,
    /// COPY ... PROGRAM: runs a shell command on the database host; always privileged.
    CopyProgram,
    /// DO, CALL, CREATE FUNCTION/PROCEDURE in a language that is not trusted.
    Procedural,
    /// Anything not recognized or that does not parse. Never allowed by a wildcard.
    Unknown,
}

impl Class {
    /// Every class, in declaration order.
    pub const ALL: [Class; 12] = [
        Class::Read,
        Class::Write,
        Class::Ddl,
        Class::Dcl,
        Class::Admin,
        Class::Transaction,
        Class::Session,
        Class::CopyIn,
        Class::CopyOut,
        Class::CopyProgram,
        Class::Procedural,
        Class::Unknown,
    ];

    /// The spelling used in policy files and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Ddl => "ddl",
            Class::Dcl => "dcl",
            Class::Admin => "admin",
            Class::Transaction => "transaction",
            Class::Session => "session",
            Class::CopyIn => "copy_in",
            Class::CopyOut => "copy_out",
            Class::CopyProgram => "copy_program",
            Class::Procedural => "procedural",
            Class::Unknown => "unknown",
        }
    }

    /// A bit unique to this class, for class sets.
    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Class {
    type Err = String;

    fn from_str(s: &str) -> Result<Class, String> {
        Class::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Class::ALL.iter().map(|c| c.as_str()).collect();
                format!(
                    "unknown statement class {s:?} (known: {})",
                    known.join(", ")
                )
            })
    }
}

/// Facts about a statement beyond its class that rules can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// An UPDATE or DELETE (anywhere in the statement, CTEs included) without WHERE.
    NoWhere,
    /// SELECT ... FOR UPDATE / FOR SHARE / FOR NO KEY UPDATE / FOR KEY SHARE.
    RowLock,
    /// COPY to or from a file on the database server (not STDIN/STDOUT).
    ServerFile,
    /// Calls a function on the policy's danger list. The classifier reports every function
    /// called ([`Statement::functions`]); policy sets this flag, because the list is policy.
    DangerousFunction,
}

impl Flag {
    /// Every flag.
    pub const ALL: [Flag; 4] = [
        Flag::NoWhere,
        Flag::RowLock,
        Flag::ServerFile,
        Flag::DangerousFunction,
    ];

    /// The spelling used in policy files and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::NoWhere => "no_where",
            Flag::RowLock => "row_lock",
            Flag::ServerFile => "server_file",
            Flag::DangerousFunction => "dangerous_function",
        }
    }

    /// A bit unique to this flag, for [`Flags`].
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Flag {
    type Err = String;

    fn from_str(s: &str) -> Result<Flag, String> {
        Flag::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Flag::ALL.iter().map(|c| c.as_str()).collect();
                format!("unknown statement flag {s:?} (known: {})", known.join(", "))
            })
    }
}

/// A set of [`Flag`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u8);

impl Flags {
    /// Whether `flag` is set.
    pub fn contains(self, flag: Flag) -> bool {
        self.0 & flag.bit() != 0
    }

    /// Sets `flag`.
    pub fn insert(&mut self, flag: Flag) {
        self.0 |= flag.bit();
    }

    /// The flags set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Flag> {
        Flag::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

/// One statement of a (possibly multi-statement) query string, as classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Its class.
    pub class: Class,
    /// Facts rules can name (never [`Flag::DangerousFunction`]: policy adds that).
    pub flags: Flags,
    /// The command, upper case, for messages: `SELECT`, `DELETE`, `DROP TABLE`, ...
    pub command: String,
    /// Relations it touches (read or written), lower-cased unless quoted, as written:
    /// `schema.table` when qualified, `table` otherwise. Sorted, deduplicated.
    pub tables: Vec<String>,
    /// Functions it calls, lower-cased unless quoted, as written (`schema.fn` when
    /// qualified). Sorted, deduplicated.
    pub functions: Vec<String>,
    /// For `PREPARE name AS ...`: the name and the prepared statement's classification, so
    /// a later `EXECUTE name` is judged by what it runs.
    pub prepares: Option<(String, Box<Statement>)>,
    /// For `EXECUTE name`: the name (its class comes from the session's PREPARE).
    pub executes: Option<String>,
    /// For `DEALLOCATE name` (`Some(name)`) or `DEALLOCATE ALL` / `DISCARD ALL` (`Some("")`
    /// is never used: `None` inside means all).
    pub deallocates: Option<Option<String>>,
    /// Why the class is [`Class::Unknown`] (parse error, unsupported node), for messages.
    pub reason: Option<String>,
}

impl Statement {
    /// An unknown statement, with the reason.
    pub fn unknown(reason: impl Into<String>) -> Statement {
        Statement {
            class: Class::Unknown,
            flags: Flags::default(),
            command: "UNKNOWN".to_owned(),
            tables: Vec::new(),
            functions: Vec::new(),
            prepares: None,
            executes: None,
            deallocates: None,
            reason: Some(reason.into()),
        }
    }
}

/// What a whole query string is: its fingerprint and every statement in it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// 64-bit hash of [`Classification::normalized`] (xxh3, stable across processes and
    /// versions of this crate unless the normalization changes); rules may name it.
    pub fingerprint: u64,
    /// The normalized text: comments and whitespace folded, unquoted words lower-cased,
    /// literals replaced by placeholders. Safe to log and audit (no literal values).
    pub normalized: String,
    /// The statements, in order. Empty for an empty query string.
    pub statements: Vec<Statement>,
}

impl Classification {
    /// The fingerprint as users see it: 16 lower-case hex digits.
    pub fn fingerprint_hex(&self) -> String {
        format!("{:016x}", self.fingerprint)
    }
}

pub use cache::ClassCache;

/// Per-worker classifier: lexer → cache → pg_query. Not thread-safe by design (one per worker).
///
/// A cache hit costs one lexer pass and one lookup and does not allocate: the normalized
/// text is built in a scratch buffer the classifier keeps.
pub struct Classifier {
    cache: ClassCache,
    scratch: Vec<u8>,
}

impl Classifier {
    /// A classifier whose cache holds at most `cache_capacity` classifications (0: no
    /// cache, every statement is parsed).
    pub fn new(cache_capacity: usize) -> Classifier {
        Classifier {
            cache: ClassCache::new(cache_capacity),
            scratch: Vec::with_capacity(1024),
        }
    }

    /// Classifies a query string (the body of a `Query` message, or a `Parse` message's
    /// query; one trailing NUL byte, the C string terminator, is ignored).
    ///
    /// `standard_conforming_strings` is the session's current setting, as the server last
    /// reported it in a ParameterStatus: it decides how the lexer reads `'…\'…'`.
    ///
    /// Never fails: lexing errors and parse failures yield a Classification whose one
    /// statement is Unknown with the reason. For a lexing error (an unterminated quote or
    /// comment, text that is not UTF-8, ...) there is no normalized text: `normalized` is
    /// empty and `fingerprint` is 0, and nothing is cached. An empty query string (or only
    /// comments and whitespace) has no statements.
    pub fn classify(
        &mut self,
        sql: &[u8],
        standard_conforming_strings: bool,
    ) -> std::sync::Arc<Classification> {
        let sql = sql.strip_suffix(&[0]).unwrap_or(sql);
        let scs = standard_conforming_strings;
        let normalized = match lexer::normalize(sql, scs, &mut self.scratch) {
            Ok(n) => n,
            Err(e) => {
                return std::sync::Arc::new(Classification {
                    fingerprint: 0,
                    normalized: String::new(),
                    statements: vec![Statement::unknown(format!("does not lex: {e}"))],
                })
            }
        };
        if let Some(hit) = self.cache.get(normalized.hash, &self.scratch) {
            return hit;
        }
        let text = match std::str::from_utf8(&self.scratch) {
            Ok(text) => text.to_owned(),
            Err(_) => {
                return std::sync::Arc::new(Classification {
                    fingerprint: 0,
                    normalized: String::new(),
                    statements: vec![Statement::unknown("query text is not valid UTF-8")],
                })
            }
        };
        // The parser is the authority on how many statements there are: the lexer's count
        // is not used to skip it.
        let statements = if text.is_empty() {
            Vec::new()
        } else {
            analyze::analyze(&text)
        };
        let classification = std::sync::Arc::new(Classification {
            fingerprint: normalized.hash,
            normalized: text,
            statements,
        });
        self.cache.insert(std::sync::Arc::clone(&classification));
        classification
    }

    /// Lookups that found their normalized text in the cache.
    pub fn cache_hits(&self) -> u64 {
        self.cache.hits()
    }

    /// Lookups that did not (each one parsed the statement).
    pub fn cache_misses(&self) -> u64 {
        self.cache.misses()
    }

    /// How many classifications are cached.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }
}
