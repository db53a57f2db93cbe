//! PostgreSQL's lexical rules, for fingerprints and statement boundaries.
//!
//! This is a hand-written scanner that reproduces `src/backend/parser/scan.l` as compiled
//! into `pg_query` 18 (PostgreSQL 18 sources; the rules of 16 and later, without the
//! `{param_junk}` rule that some releases have), token for token: where the two would split text into different tokens, a statement
//! could hide from classification (a `;` inside what we took for a string, a keyword
//! inside what we took for a comment). The rules that matter, each one tested below:
//!
//! - whitespace is `[ \t\n\r\f\v]` and nothing else; `--` comments run to the next `\n` or
//!   `\r` (or the end of the text); `/* */` comments nest, and `/*` or `--` inside a run of
//!   operator characters starts a comment there;
//! - `'…'` with `''`; `E'…'` with backslash escapes, where `\'` does not close; a plain
//!   `'…'` behaves like `E'…'` when `standard_conforming_strings` is off; `N'…'`, `B'…'`,
//!   `X'…'` and `U&'…'` (an error when `standard_conforming_strings` is off); a string
//!   continues after whitespace that holds a newline (and `--` comments, never `/* */`);
//! - `$tag$…$tag$` where the tag looks like an identifier without `$` (`$1` is a
//!   parameter; `$` followed by anything else is a one-character token);
//! - `"…"` with `""`, and `U&"…"`; an empty quoted identifier is an error;
//! - numbers: decimal with `_` between digits, `.5`, `1.`, exponents, `0x`/`0o`/`0b`
//!   prefixes, `1..10` as `1`, `..`, `10`, and the "junk" rules (`123abc`, `1e`, `0x`,
//!   `1_000$` are errors, not two tokens; `$1a` is `$1` and `a`);
//! - operators: the longest run of `~!@#^&|`?+-*/%<>=`, cut before an embedded `/*` or
//!   `--`, and with trailing `+`/`-` removed unless the operator holds one of
//!   `~!@#^&|`?%` (`=-` is two tokens, `@-` one);
//! - the scanner's own errors (unterminated constructs, bad escapes in `E'…'`, escapes that
//!   produce invalid UTF-8, an operator of 64 bytes or more, a parameter number above
//!   2³¹−1) are [`LexError`]s too, so text PostgreSQL would refuse to scan is refused here.
//!
//! [`normalize`] turns a query string into its fingerprint text and [`split`] finds its
//! statements; both run one pass over the bytes and share one driver, so they always agree
//! on what a statement is. A `;` ends a statement only outside parentheses (PostgreSQL's
//! grammar allows `;` inside them in `CREATE RULE … DO (a; b)`).
//!
//! The agreement with PostgreSQL is checked by differential fuzzing against `pg_query`'s
//! own scanner (the bodies are in `lexer::fuzzing`, compiled for tests and with the
//! `fuzzing` feature; `classify/fuzz` runs them); every discrepancy the fuzzer found is a
//! regression case in the tests of this module.

use std::fmt;
use std::ops::Range;

/// Why text could not be lexed (it is then classified `unknown` and refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LexError {
    /// A string, quoted identifier, dollar-quoted string or block comment that does not
    /// end. `what` names it as PostgreSQL's message does; `at` is where it starts.
    Unterminated {
        /// What is unterminated, e.g. `"quoted string"`.
        what: &'static str,
        /// Byte offset of its start.
        at: usize,
    },
    /// The text is not valid UTF-8 (PostgreSQL rejects it before scanning).
    InvalidUtf8 {
        /// Byte offset of the first invalid byte.
        at: usize,
    },
    /// The text contains a NUL byte; a query string on the wire ends at the first NUL, so
    /// the bytes after it would be invisible to PostgreSQL (which rejects the message).
    NulByte {
        /// Byte offset of the NUL.
        at: usize,
    },
    /// Any other error PostgreSQL's scanner reports: trailing junk after a number, a bad
    /// escape in an `E'…'` string, a zero-length quoted identifier, ...
    Invalid {
        /// PostgreSQL's message, e.g. `"trailing junk after numeric literal"`.
        what: &'static str,
        /// Byte offset of the token (or escape) in error.
        at: usize,
    },
}

impl fmt::Display for LexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LexError::Unterminated { what, at } => write!(f, "unterminated {what} at byte {at}"),
            LexError::InvalidUtf8 { at } => write!(f, "invalid UTF-8 at byte {at}"),
            LexError::NulByte { at } => write!(f, "NUL byte in query text at byte {at}"),
            LexError::Invalid { what, at } => write!(f, "{what} at byte {at}"),
        }
    }
}

impl std::error::Error for LexError {}

/// Result of [`normalize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Normalized {
    /// xxh3-64 of exactly the normalized bytes.
    pub hash: u64,
    /// The number of non-empty statements (those with at least one token).
    pub statements: usize,
}

/// Writes the normalized text of `sql` into `out` and returns its hash and statement count.
///
/// `out` is cleared first; reuse it across calls and no allocation happens once it is large
/// enough. The hash is `xxh3_64` of exactly the bytes left in `out`. On an error `out` is
/// left empty.
///
/// The normalized text is the token sequence of `sql` with
///
/// - one space between two tokens when the original had whitespace or a comment between
///   them (a comment becomes a space, never nothing), nothing otherwise, and nothing at the
///   start or the end;
/// - unquoted identifiers and keywords ASCII-lowercased (other bytes unchanged);
/// - quoted identifiers (`"…"`, `U&"…"`) copied as written, and so is the string after
///   `U&"…" UESCAPE`, which decides what the identifier means;
/// - every string constant of every form (`'…'` with its continuations, `E'…'`, `N'…'`,
///   `B'…'`, `X'…'`, `U&'…'` with its `UESCAPE '…'` clause, `$tag$…$tag$`) replaced by
///   `'?'`, and every numeric constant by `0` (a leading `-` is a token of its own and
///   stays);
/// - parameters, operators and punctuation copied as written;
/// - `;` between statements (spaced like any token, the whitespace around dropped `;`s
///   counting as whitespace after it), but not before the first, after the last or for an
///   empty statement (`;;`); a `;` inside parentheses is part of its statement and is
///   copied.
///
/// One exception to "nothing otherwise": where replacing a literal would make two tokens
/// that touched in the original run together or lex differently, a space separates them
/// (`1.5.5` → `0 0`, not `00`; `a.5` → `a 0`; `$$x$$'y'` → `'?' '?'`; `u&$$x$$` →
/// `u& '?'`, not a `U&'` string). The normalized text therefore scans, with
/// `standard_conforming_strings` on, to exactly the tokens of `sql` with literals
/// replaced, which is what `pg_query` parses to classify it.
///
/// Statements that differ only in their literals, in the case of unquoted words or in
/// the amount of whitespace and comments get the same text and hash.
pub fn normalize(
    sql: &[u8],
    standard_conforming_strings: bool,
    out: &mut Vec<u8>,
) -> Result<Normalized, LexError> {
    out.clear();
    out.reserve(sql.len() + 8);
    let mut none = Vec::new();
    let statements = match drive::<true>(sql, standard_conforming_strings, out, &mut none) {
        Ok(n) => n,
        Err(e) => {
            out.clear();
            return Err(e);
        }
    };
    Ok(Normalized {
        hash: xxhash_rust::xxh3::xxh3_64(out),
        statements,
    })
}

/// The byte ranges in `sql` of its non-empty statements, in order.
///
/// A statement's range runs from just after the `;` that ended the previous statement (or
/// the start of `sql`) to just before the `;` that ends it (or the end of `sql`): leading
/// and trailing whitespace and comments are included, the terminating `;` is not. A `;`
/// inside parentheses does not end a statement, and a statement is non-empty when it has
/// at least one token (comments alone do not count). This is the convention of
/// `pg_query::split_with_scanner`, with two differences, both on the side of keeping text:
/// `pg_query` keeps only statements that contain a keyword (it drops `1;` or `foo;`) and
/// drops a last statement whose parentheses are unbalanced at the end of the text; here
/// every non-empty statement is kept. `split(sql)?.len()` always equals
/// `normalize(sql)?.statements`, and the errors are the same as [`normalize`]'s.
pub fn split(sql: &[u8], standard_conforming_strings: bool) -> Result<Vec<Range<usize>>, LexError> {
    let mut ranges = Vec::new();
    let mut none = Vec::new();
    drive::<false>(sql, standard_conforming_strings, &mut none, &mut ranges)?;
    Ok(ranges)
}

// ---------------------------------------------------------------------------------------
// Byte classes.

/// Not any class below: a one-byte token (`{other}` in scan.l) such as `\` or `{`.
const C_OTHER: u8 = 0;
/// `[ \t\n\r\f\v]`.
const C_SPACE: u8 = 1;
/// `[A-Za-z_\x80-\xff]`: starts an identifier (and a dollar-quote tag).
const C_IDENT: u8 = 2;
const C_DIGIT: u8 = 3;
const C_QUOTE: u8 = 4;
const C_DQUOTE: u8 = 5;
const C_DOLLAR: u8 = 6;
const C_DOT: u8 = 7;
const C_COLON: u8 = 8;
/// `op_chars` of scan.l: ``~ ! @ # ^ & | ` ? + - * / % < > =``.
const C_OP: u8 = 9;
const C_LPAREN: u8 = 10;
const C_RPAREN: u8 = 11;
const C_SEMI: u8 = 12;
/// `, [ ]`: one-character tokens of the `self` set that are not operator characters.
const C_SELF: u8 = 13;

const fn build_classes() -> [u8; 256] {
    let mut t = [C_OTHER; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => C_SPACE,
            b'A'..=b'Z' | b'a'..=b'z' | b'_' | 0x80..=0xff => C_IDENT,
            b'0'..=b'9' => C_DIGIT,
            b'\'' => C_QUOTE,
            b'"' => C_DQUOTE,
            b'$' => C_DOLLAR,
            b'.' => C_DOT,
            b':' => C_COLON,
            b'~' | b'!' | b'@' | b'#' | b'^' | b'&' | b'|' | b'`' | b'?' | b'+' | b'-' | b'*'
            | b'/' | b'%' | b'<' | b'>' | b'=' => C_OP,
            b'(' => C_LPAREN,
            b')' => C_RPAREN,
            b';' => C_SEMI,
            b',' | b'[' | b']' => C_SELF,
            _ => C_OTHER,
        };
        b += 1;
    }
    t
}

static CLASS: [u8; 256] = build_classes();

/// `ident_cont` of scan.l: `[A-Za-z_0-9$\x80-\xff]`.
const fn build_ident_cont() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        t[b] = matches!(c, b'A'..=b'Z' | b'a'..=b'z' | b'_' | b'0'..=b'9' | b'$' | 0x80..=0xff);
        b += 1;
    }
    t
}

static IDENT_CONT: [bool; 256] = build_ident_cont();

#[inline]
fn ident_start(c: u8) -> bool {
    CLASS[c as usize] == C_IDENT
}

#[inline]
fn ident_cont(c: u8) -> bool {
    IDENT_CONT[c as usize]
}

/// The end of the run of `ident_cont` bytes starting at `i`.
#[inline]
fn ident_end(s: &[u8], i: usize) -> usize {
    i + s[i..]
        .iter()
        .position(|&c| !ident_cont(c))
        .unwrap_or(s.len() - i)
}

/// ASCII-lowercases `b` eight bytes at a time (bytes >= 0x80 unchanged).
fn lowercase_ascii(b: &mut [u8]) {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let lower = |x: u64| {
        let low7 = x & !HIGH;
        // 0x80 set in a byte when its low 7 bits are >= 'A', resp. > 'Z'.
        let ge_a = low7 + 0x3f3f_3f3f_3f3f_3f3f;
        let gt_z = low7 + 0x2525_2525_2525_2525;
        let upper = ge_a & !gt_z & !x & HIGH;
        x | (upper >> 2)
    };
    let mut chunks = b.chunks_exact_mut(8);
    for c in &mut chunks {
        let x = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        c.copy_from_slice(&lower(x).to_le_bytes());
    }
    chunks.into_remainder().make_ascii_lowercase();
}

/// Whether `s` is all ASCII without NUL, eight bytes at a time: then it is valid UTF-8 and
/// needs no further check.
fn ascii_without_nul(s: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut chunks = s.chunks_exact(8);
    let mut bad = 0u64;
    for c in &mut chunks {
        let x = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // A high bit, or a zero byte (the classic "has zero byte" test).
        bad |= x | (x.wrapping_sub(ONES) & !x);
    }
    bad & HIGH == 0 && chunks.remainder().iter().all(|&c| c != 0 && c < 0x80)
}

/// `dolq_cont` of scan.l: like `ident_cont` without `$`.
#[inline]
fn dolq_cont(c: u8) -> bool {
    c != b'$' && IDENT_CONT[c as usize]
}

// ---------------------------------------------------------------------------------------
// Tokens.

/// What a string constant was written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrKind {
    /// `'…'` (backslash escapes when `standard_conforming_strings` is off).
    Plain,
    /// `E'…'`.
    Escape,
    /// `$tag$…$tag$`.
    Dollar,
    /// `N'…'` (scan.l returns the keyword `NCHAR` and then a plain string).
    National,
    /// `B'…'`.
    Bit,
    /// `X'…'`.
    Hex,
    /// `U&'…'`, with its `UESCAPE '…'` clause when it has one.
    Unicode,
}

impl StrKind {
    /// Whether scan.l returns it as `SCONST`, the only kind `UESCAPE` accepts.
    fn is_sconst(self) -> bool {
        matches!(self, StrKind::Plain | StrKind::Escape | StrKind::Dollar)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An unquoted identifier or keyword.
    Ident,
    /// `"…"`.
    QuotedIdent,
    /// `U&"…"`.
    UIdent,
    Str(StrKind),
    Number,
    /// `$1`.
    Param,
    LParen,
    RParen,
    Semi,
    /// Operators, `::`, `..`, `:=`, one-character tokens.
    Punct,
    Eof,
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    kind: Kind,
    start: usize,
    end: usize,
    /// Whether whitespace or a comment came between the previous token and this one.
    space: bool,
}

/// How the inside of a quoted string is scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// `xq`/`xus`: `''` is a quote, nothing else is special.
    Standard,
    /// `xe`: `''` and backslash escapes.
    Escapes,
    /// `xb`/`xh`: the first `'` ends the segment.
    BitHex,
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    scs: bool,
    /// The run of operator characters the last multi-character operator came from.
    op: OpRun,
}

fn invalid(what: &'static str, at: usize) -> LexError {
    LexError::Invalid { what, at }
}

impl<'a> Lexer<'a> {
    /// The next token, skipping whitespace and comments.
    #[inline]
    fn next(&mut self) -> Result<Tok, LexError> {
        let s = self.s;
        let n = s.len();
        let mut i = self.pos;
        let mut space = false;
        loop {
            let Some(&c) = s.get(i) else {
                self.pos = n;
                return Ok(Tok {
                    kind: Kind::Eof,
                    start: n,
                    end: n,
                    space,
                });
            };
            match CLASS[c as usize] {
                C_SPACE => i += 1,
                C_OP if c == b'-' && s.get(i + 1) == Some(&b'-') => {
                    i = memchr::memchr2(b'\n', b'\r', &s[i + 2..]).map_or(n, |k| i + 2 + k);
                }
                C_OP if c == b'/' && s.get(i + 1) == Some(&b'*') => i = self.block_comment(i)?,
                _ => break,
            }
            space = true;
        }
        let start = i;
        let c = s[i];
        let (kind, end) = match CLASS[c as usize] {
            C_IDENT => self.word(i)?,
            C_DIGIT => (Kind::Number, self.number(i)?),
            C_QUOTE => {
                let q = if self.scs {
                    Quoting::Standard
                } else {
                    Quoting::Escapes
                };
                (Kind::Str(StrKind::Plain), self.string(i, i + 1, q)?)
            }
            C_DQUOTE => (Kind::QuotedIdent, self.quoted_ident(i, i + 1)?),
            C_DOLLAR => self.dollar(i)?,
            C_DOT => match s.get(i + 1) {
                Some(b'.') => (Kind::Punct, i + 2),
                Some(b'0'..=b'9') => (Kind::Number, self.number(i)?),
                _ => (Kind::Punct, i + 1),
            },
            C_COLON => match s.get(i + 1) {
                Some(b':' | b'=') => (Kind::Punct, i + 2),
                _ => (Kind::Punct, i + 1),
            },
            C_OP => (Kind::Punct, self.operator(i)?),
            C_LPAREN => (Kind::LParen, i + 1),
            C_RPAREN => (Kind::RParen, i + 1),
            C_SEMI => (Kind::Semi, i + 1),
            _ => (Kind::Punct, i + 1),
        };
        self.pos = end;
        Ok(Tok {
            kind,
            start,
            end,
            space,
        })
    }

    /// A nested `/* */` comment starting at `i`; returns the offset after it.
    fn block_comment(&self, i: usize) -> Result<usize, LexError> {
        let s = self.s;
        let mut depth = 0usize;
        let mut j = i + 2;
        loop {
            let Some(k) = memchr::memchr2(b'*', b'/', &s[j..]) else {
                return Err(LexError::Unterminated {
                    what: "/* comment",
                    at: i,
                });
            };
            let k = j + k;
            let next = s.get(k + 1).copied();
            if s[k] == b'/' {
                if next == Some(b'*') {
                    depth += 1;
                    j = k + 2;
                } else {
                    j = k + 1;
                }
            } else if next == Some(b'/') {
                if depth == 0 {
                    return Ok(k + 2);
                }
                depth -= 1;
                j = k + 2;
            } else {
                j = k + 1;
            }
        }
    }

    /// A token starting with an identifier character: an identifier or keyword, or one of
    /// the prefixed strings and `U&"…"`.
    #[inline]
    fn word(&self, i: usize) -> Result<(Kind, usize), LexError> {
        let s = self.s;
        let c = s[i];
        let next = s.get(i + 1).copied();
        if next == Some(b'\'') {
            match c {
                b'b' | b'B' => {
                    let end = self.string(i, i + 2, Quoting::BitHex)?;
                    return Ok((Kind::Str(StrKind::Bit), end));
                }
                b'x' | b'X' => {
                    let end = self.string(i, i + 2, Quoting::BitHex)?;
                    return Ok((Kind::Str(StrKind::Hex), end));
                }
                b'e' | b'E' => {
                    let end = self.string(i, i + 2, Quoting::Escapes)?;
                    return Ok((Kind::Str(StrKind::Escape), end));
                }
                b'n' | b'N' => {
                    let q = if self.scs {
                        Quoting::Standard
                    } else {
                        Quoting::Escapes
                    };
                    let end = self.string(i, i + 2, q)?;
                    return Ok((Kind::Str(StrKind::National), end));
                }
                _ => {}
            }
        } else if next == Some(b'&') && (c == b'u' || c == b'U') {
            match s.get(i + 2) {
                Some(b'\'') => {
                    if !self.scs {
                        return Err(invalid(
                            "unsafe use of string constant with Unicode escapes",
                            i,
                        ));
                    }
                    let end = self.string(i, i + 3, Quoting::Standard)?;
                    return Ok((Kind::Str(StrKind::Unicode), end));
                }
                Some(b'"') => return Ok((Kind::UIdent, self.quoted_ident(i, i + 3)?)),
                // `{xufailed}`: the identifier `u`, then `&` as an operator.
                _ => return Ok((Kind::Ident, i + 1)),
            }
        }
        Ok((Kind::Ident, ident_end(s, i + 1)))
    }

    /// A quoted string whose first segment's contents start at `i` (after the opening
    /// quote); `start` is where the token starts. Returns the offset after the closing
    /// quote of the last segment.
    #[inline]
    fn string(&self, start: usize, i: usize, q: Quoting) -> Result<usize, LexError> {
        let (end, verify) = self.string_segments(start, i, q, None)?;
        if verify {
            // An escape produced a byte that may not be valid UTF-8 (or NUL): PostgreSQL
            // checks the decoded value (`saw_non_ascii` in scan.l). Rare; decode it again.
            let mut buf = Vec::new();
            self.string_segments(start, i, q, Some(&mut buf))?;
            if buf.contains(&0) || std::str::from_utf8(&buf).is_err() {
                return Err(invalid(
                    "invalid byte sequence for encoding \"UTF8\"",
                    start,
                ));
            }
        }
        Ok(end)
    }

    /// Scans a quoted string and its continuations, decoding into `buf` when given.
    /// Returns the end offset and whether an escape produced NUL or a non-ASCII byte.
    fn string_segments(
        &self,
        start: usize,
        mut i: usize,
        q: Quoting,
        mut buf: Option<&mut Vec<u8>>,
    ) -> Result<(usize, bool), LexError> {
        let s = self.s;
        let n = s.len();
        let unterminated = LexError::Unterminated {
            what: match q {
                Quoting::BitHex if matches!(s[start], b'b' | b'B') => "bit string literal",
                Quoting::BitHex => "hexadecimal string literal",
                _ => "quoted string",
            },
            at: start,
        };
        let mut verify = false;
        // A first UTF-16 surrogate from `\uD8xx`, which the next escape must complete.
        let mut high: Option<u32> = None;
        loop {
            // One segment; ends at `close`, the offset of its closing quote.
            let close = loop {
                if high.is_some() && !matches!(s.get(i..i + 2), Some([b'\\', b'u' | b'U'])) {
                    return Err(invalid("invalid Unicode surrogate pair", i));
                }
                let found = if q == Quoting::Escapes {
                    memchr::memchr2(b'\'', b'\\', &s[i..])
                } else {
                    memchr::memchr(b'\'', &s[i..])
                };
                let Some(k) = found else {
                    return Err(unterminated);
                };
                let k = i + k;
                if let Some(b) = buf.as_deref_mut() {
                    b.extend_from_slice(&s[i..k]);
                }
                if s[k] == b'\'' {
                    if q != Quoting::BitHex && s.get(k + 1) == Some(&b'\'') {
                        if let Some(b) = buf.as_deref_mut() {
                            b.push(b'\'');
                        }
                        i = k + 2;
                        continue;
                    }
                    break k;
                }
                // A backslash escape (`xe` only).
                i = self.escape(k, &mut high, &mut verify, buf.as_deref_mut())?;
            };
            // `xqs`: does the string continue after whitespace holding a newline?
            let mut j = close + 1;
            let mut newline = false;
            loop {
                match s.get(j) {
                    Some(b' ' | b'\t' | 0x0b | 0x0c) => j += 1,
                    Some(b'\n' | b'\r') => {
                        newline = true;
                        j += 1;
                    }
                    Some(b'-') if s.get(j + 1) == Some(&b'-') => {
                        j = memchr::memchr2(b'\n', b'\r', &s[j + 2..]).map_or(n, |k| j + 2 + k);
                    }
                    Some(b'\'') if newline => break,
                    _ => return Ok((close + 1, verify)),
                }
            }
            i = j + 1;
        }
    }

    /// The escape at `k` (a backslash) in an `E'…'` string; returns the offset after it.
    fn escape(
        &self,
        k: usize,
        high: &mut Option<u32>,
        verify: &mut bool,
        buf: Option<&mut Vec<u8>>,
    ) -> Result<usize, LexError> {
        let s = self.s;
        let Some(&c) = s.get(k + 1) else {
            // `\` just before the end: the string is unterminated; the caller reports it.
            return Ok(k + 1);
        };
        let (byte, end) = match c {
            b'u' | b'U' => {
                let len = if c == b'u' { 4 } else { 8 };
                let digits = s.get(k + 2..k + 2 + len);
                let Some(digits) = digits.filter(|d| d.iter().all(u8::is_ascii_hexdigit)) else {
                    return Err(invalid("invalid Unicode escape", k));
                };
                let v = digits.iter().fold(0u32, |v, &d| {
                    (v << 4) | (d as char).to_digit(16).unwrap_or(0)
                });
                let code = if let Some(first) = high.take() {
                    if !(0xDC00..=0xDFFF).contains(&v) {
                        return Err(invalid("invalid Unicode surrogate pair", k));
                    }
                    0x10000 + ((first & 0x3FF) << 10) + (v & 0x3FF)
                } else if (0xD800..=0xDBFF).contains(&v) {
                    *high = Some(v);
                    return Ok(k + 2 + len);
                } else if (0xDC00..=0xDFFF).contains(&v) {
                    return Err(invalid("invalid Unicode surrogate pair", k));
                } else {
                    v
                };
                let Some(ch) = char::from_u32(code).filter(|_| code != 0) else {
                    return Err(invalid("invalid Unicode escape value", k));
                };
                if let Some(b) = buf {
                    let mut tmp = [0u8; 4];
                    b.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                }
                return Ok(k + 2 + len);
            }
            b'0'..=b'7' => {
                let mut v = 0u32;
                let mut j = k + 1;
                while j < k + 4 && j < s.len() && (b'0'..=b'7').contains(&s[j]) {
                    v = v * 8 + u32::from(s[j] - b'0');
                    j += 1;
                }
                ((v & 0xFF) as u8, j)
            }
            b'x' if s.get(k + 2).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u32;
                let mut j = k + 2;
                while j < k + 4 && j < s.len() && s[j].is_ascii_hexdigit() {
                    v = v * 16 + (s[j] as char).to_digit(16).unwrap_or(0);
                    j += 1;
                }
                (v as u8, j)
            }
            b'b' => (0x08, k + 2),
            b'f' => (0x0c, k + 2),
            b'n' => (b'\n', k + 2),
            b'r' => (b'\r', k + 2),
            b't' => (b'\t', k + 2),
            b'v' => (0x0b, k + 2),
            other => (other, k + 2),
        };
        if byte == 0 || byte >= 0x80 {
            *verify = true;
        }
        if let Some(b) = buf {
            b.push(byte);
        }
        Ok(end)
    }

    /// `"…"` or `U&"…"` whose contents start at `i`; returns the offset after it.
    fn quoted_ident(&self, start: usize, mut i: usize) -> Result<usize, LexError> {
        let s = self.s;
        let first = i;
        loop {
            let Some(k) = memchr::memchr(b'"', &s[i..]) else {
                return Err(LexError::Unterminated {
                    what: "quoted identifier",
                    at: start,
                });
            };
            let k = i + k;
            if s.get(k + 1) == Some(&b'"') {
                i = k + 2;
                continue;
            }
            if k == first {
                return Err(invalid("zero-length delimited identifier", start));
            }
            return Ok(k + 1);
        }
    }

    /// A token starting with `$`: a parameter, a dollar-quoted string or `$` alone.
    fn dollar(&self, i: usize) -> Result<(Kind, usize), LexError> {
        let s = self.s;
        let n = s.len();
        let mut j = i + 1;
        if s.get(j).is_some_and(u8::is_ascii_digit) {
            let mut value = 0u64;
            while j < n && s[j].is_ascii_digit() {
                value = (value * 10 + u64::from(s[j] - b'0')).min(1 << 40);
                j += 1;
            }
            if value > i32::MAX as u64 {
                return Err(invalid("parameter number too large", i));
            }
            return Ok((Kind::Param, j));
        }
        if j < n && ident_start(s[j]) {
            j += 1;
            while j < n && dolq_cont(s[j]) {
                j += 1;
            }
        }
        if s.get(j) != Some(&b'$') {
            // `{dolqfailed}` or `{other}`: `$` is a token by itself.
            return Ok((Kind::Punct, i + 1));
        }
        let delim = &s[i..=j];
        match memchr::memmem::find(&s[j + 1..], delim) {
            Some(k) => Ok((Kind::Str(StrKind::Dollar), j + 1 + k + delim.len())),
            None => Err(LexError::Unterminated {
                what: "dollar-quoted string",
                at: i,
            }),
        }
    }

    /// A numeric constant starting at `i` (a digit, or `.` before a digit); returns the
    /// offset after it.
    ///
    /// scan.l picks the longest match among `{decinteger}`, `{hexinteger}` (and octal,
    /// binary), `{numeric}`, `{numericfail}`, `{real}`, and the error rules `{hexfail}`...,
    /// `{realfail}`, `{integer_junk}`, `{numeric_junk}` and `{real_junk}`, the earlier rule
    /// on a tie. The junk rules are a number *prefix* followed by an identifier, so an
    /// identifier may start at any `_` or letter after a digit: `1_000` is a number (a tie
    /// with the junk reading `1` `_000`), `1_000$` is junk (`1` then `_000$` is longer).
    fn number(&self, i: usize) -> Result<usize, LexError> {
        let s = self.s;
        let n = s.len();
        // Fast path: plain digits followed by something that cannot continue a number.
        let digits = s[i..]
            .iter()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(n - i);
        if digits > 0
            && s.get(i + digits)
                .is_none_or(|&c| c != b'.' && !ident_cont(c))
        {
            return Ok(i + digits);
        }
        const JUNK: &str = "trailing junk after numeric literal";
        // The longest `{decinteger}` from `j`: digits, a `_` only between two digits.
        let decimal = |mut j: usize| {
            while j < n {
                if s[j].is_ascii_digit() {
                    j += 1;
                } else if s[j] == b'_' && s.get(j + 1).is_some_and(u8::is_ascii_digit) {
                    j += 2;
                } else {
                    break;
                }
            }
            j
        };
        // End of the longest "number prefix, then identifier" whose prefix ends in the
        // digits `a..b` (after a digit, or at `a` itself when `at_a`); 0 if none.
        let junk = |a: usize, b: usize, at_a: bool| {
            (a..=b.min(n))
                .find(|&p| {
                    p < n
                        && ident_start(s[p])
                        && ((p == a && at_a) || (p > a && s[p - 1].is_ascii_digit()))
                })
                .map_or(0, |p| ident_end(s, p))
        };
        if s[i] == b'0' {
            let (radix, what): (u32, &'static str) = match s.get(i + 1) {
                Some(b'x' | b'X') => (16, "invalid hexadecimal integer"),
                Some(b'o' | b'O') => (8, "invalid octal integer"),
                Some(b'b' | b'B') => (2, "invalid binary integer"),
                _ => (0, ""),
            };
            if radix != 0 {
                let digit = |c: u8| (c as char).is_digit(radix);
                let mut j = i + 2;
                while j < n {
                    if digit(s[j]) {
                        j += 1;
                    } else if s[j] == b'_' && s.get(j + 1).is_some_and(|&c| digit(c)) {
                        j += 2;
                    } else {
                        break;
                    }
                }
                // `{integer_junk}` reads `0` and an identifier from the `x`.
                let junk_end = ident_end(s, i + 1);
                if j == i + 2 {
                    // `{hexfail}` (`0x`, `0x_`) unless the junk reading is longer.
                    let fail_end = i + 2 + usize::from(s.get(i + 2) == Some(&b'_'));
                    return Err(invalid(if junk_end > fail_end { JUNK } else { what }, i));
                }
                if junk_end > j {
                    return Err(invalid(JUNK, i));
                }
                return Ok(j);
            }
        }
        // (end of the match, rule number in scan.l, token end or error).
        let mut best: (usize, u8, Result<usize, &'static str>) = (i, u8::MAX, Ok(i));
        let mut consider = |end: usize, rule: u8, result: Result<usize, &'static str>| {
            if end > best.0 || (end == best.0 && rule < best.1) {
                best = (end, rule, result);
            }
        };
        let base = if s[i] == b'.' {
            // `{numeric}` as `.5`.
            let f = decimal(i + 1);
            consider(f, 64, Ok(f));
            consider(junk(i + 1, f, false), 69, Err(JUNK));
            f
        } else {
            let d = decimal(i);
            consider(d, 57, Ok(d));
            consider(junk(i, d, false), 68, Err(JUNK));
            match (s.get(d), s.get(d + 1)) {
                // `{numericfail}`: `1..` is the integer `1`, then `..`.
                (Some(b'.'), Some(b'.')) => {
                    consider(d + 2, 65, Ok(d));
                    d
                }
                (Some(b'.'), next) => {
                    let f = if next.is_some_and(u8::is_ascii_digit) {
                        decimal(d + 1)
                    } else {
                        d + 1
                    };
                    consider(f, 64, Ok(f));
                    consider(junk(d + 1, f, true), 69, Err(JUNK));
                    f
                }
                _ => d,
            }
        };
        if matches!(s.get(base), Some(b'e' | b'E')) {
            let mut k = base + 1;
            let signed = matches!(s.get(k), Some(b'+' | b'-'));
            if signed {
                k += 1;
            }
            if s.get(k).is_some_and(u8::is_ascii_digit) {
                let e = decimal(k);
                consider(e, 66, Ok(e));
                consider(junk(k, e, false), 70, Err(JUNK));
            } else if signed {
                consider(k, 67, Err(JUNK));
            }
        }
        best.2.map_err(|what| invalid(what, i))
    }

    /// An operator starting at `i` (an operator character that does not start a comment);
    /// returns the offset after it.
    ///
    /// scan.l matches the whole run of operator characters and gives back what follows
    /// the token, so a run like `=+-+-…` is rescanned for each of its one-character tokens.
    /// What a token needs from the run is remembered in [`OpRun`] instead, which keeps
    /// this linear.
    #[inline]
    fn operator(&mut self, i: usize) -> Result<usize, LexError> {
        let s = self.s;
        let n = s.len();
        if i + 1 >= n || CLASS[s[i + 1] as usize] != C_OP {
            return Ok(i + 1);
        }
        if !(self.op.start <= i && i < self.op.end) {
            self.op = OpRun::scan(s, i);
        }
        let OpRun {
            end,
            special,
            trail,
            ..
        } = self.op;
        // A trailing `+` or `-` is not part of the operator unless the operator holds a
        // character that is not in SQL operators (`=-` is `=` and `-`; `@-` stays).
        let end = if end - i > 1 && matches!(s[end - 1], b'+' | b'-') && special <= i {
            trail.max(i + 1)
        } else {
            end
        };
        if end - i >= 64 {
            return Err(invalid("operator too long", i));
        }
        Ok(end)
    }
}

/// A run of operator characters, as far as the operators starting in it can reach.
#[derive(Debug, Clone, Copy, Default)]
struct OpRun {
    /// Where the run starts.
    start: usize,
    /// Where it ends: at the first character that is not an operator character, or before
    /// an embedded `/*` or `--` (a comment starts there).
    end: usize,
    /// One past the last of `~!@#^&|`?%` in `start..end - 1`; 0 if there is none.
    special: usize,
    /// Where the `+` and `-` characters that end the run begin.
    trail: usize,
}

impl OpRun {
    fn scan(s: &[u8], start: usize) -> OpRun {
        let mut end = start + 1;
        while end < s.len() && CLASS[s[end] as usize] == C_OP {
            if matches!(&s[end - 1..=end], b"/*" | b"--") && end - 1 > start {
                end -= 1;
                break;
            }
            end += 1;
        }
        let special = s[start..end - 1]
            .iter()
            .rposition(|c| {
                matches!(
                    c,
                    b'~' | b'!' | b'@' | b'#' | b'^' | b'&' | b'|' | b'`' | b'?' | b'%'
                )
            })
            .map_or(0, |k| start + k + 1);
        let mut trail = end;
        while trail > start && matches!(s[trail - 1], b'+' | b'-') {
            trail -= 1;
        }
        OpRun {
            start,
            end,
            special,
            trail,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The driver shared by `normalize` and `split`.

/// What the last byte written by `normalize` belongs to, for the spacing exceptions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    Number,
    Other,
}

/// Progress through `U&"…" UESCAPE '…'`, whose string is copied rather than replaced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UEscape {
    None,
    AfterIdent,
    AfterKeyword,
}

fn is_uescape(word: &[u8]) -> bool {
    word.eq_ignore_ascii_case(b"uescape")
}

/// Lexes `sql`; when `NORMALIZE`, writes the normalized text to `out`, otherwise pushes
/// statement ranges to `ranges`. Returns the number of non-empty statements.
fn drive<const NORMALIZE: bool>(
    sql: &[u8],
    scs: bool,
    out: &mut Vec<u8>,
    ranges: &mut Vec<Range<usize>>,
) -> Result<usize, LexError> {
    if !ascii_without_nul(sql) {
        if let Err(e) = std::str::from_utf8(sql) {
            return Err(LexError::InvalidUtf8 {
                at: e.valid_up_to(),
            });
        }
        if let Some(at) = memchr::memchr(0, sql) {
            return Err(LexError::NulByte { at });
        }
    }
    let mut lx = Lexer {
        s: sql,
        pos: 0,
        scs,
        op: OpRun::default(),
    };
    let mut depth: i64 = 0;
    let mut statements = 0;
    let mut stmt_start = 0;
    let mut in_statement = false;
    // A `;` ended a statement and is written only if another statement follows.
    let mut separator = false;
    let mut space_before_separator = false;
    let mut space_after_separator = false;
    let mut last = Last::Other;
    let mut uescape = UEscape::None;
    loop {
        let mut tok = lx.next()?;
        match tok.kind {
            Kind::Eof => break,
            Kind::Semi if depth == 0 => {
                if in_statement {
                    statements += 1;
                    if !NORMALIZE {
                        ranges.push(stmt_start..tok.start);
                    }
                    in_statement = false;
                    separator = true;
                    space_before_separator = tok.space;
                    space_after_separator = false;
                } else {
                    space_after_separator |= tok.space;
                }
                stmt_start = tok.end;
                uescape = UEscape::None;
                continue;
            }
            Kind::LParen => depth += 1,
            Kind::RParen => depth -= 1,
            Kind::Str(StrKind::Unicode) => {
                // `U&'…' UESCAPE '…'` is one constant: the parser reads it as one.
                let saved = lx.pos;
                let kw = lx.next()?;
                let mut merged = false;
                if kw.kind == Kind::Ident && is_uescape(&sql[kw.start..kw.end]) {
                    let esc = lx.next()?;
                    if matches!(esc.kind, Kind::Str(k) if k.is_sconst()) {
                        tok.end = esc.end;
                        merged = true;
                    }
                }
                if !merged {
                    lx.pos = saved;
                }
            }
            _ => {}
        }
        in_statement = true;
        // `U&"…" UESCAPE '…'`: the string is kept as written.
        let raw = match (uescape, tok.kind) {
            (UEscape::AfterKeyword, Kind::Str(k)) if k.is_sconst() => {
                if k == StrKind::Plain && !scs && sql[tok.start..tok.end].contains(&b'\\') {
                    // Copied as written it would mean something else once scanned with
                    // standard_conforming_strings on; refuse rather than guess.
                    return Err(invalid(
                        "backslash in the UESCAPE string of a quoted identifier \
                         with standard_conforming_strings off",
                        tok.start,
                    ));
                }
                true
            }
            _ => false,
        };
        uescape = match tok.kind {
            Kind::UIdent => UEscape::AfterIdent,
            Kind::Ident
                if uescape == UEscape::AfterIdent && is_uescape(&sql[tok.start..tok.end]) =>
            {
                UEscape::AfterKeyword
            }
            _ => UEscape::None,
        };
        if !NORMALIZE {
            continue;
        }
        let mut space = tok.space;
        if separator {
            if space_before_separator {
                out.push(b' ');
            }
            out.push(b';');
            space = space_after_separator || tok.space;
            separator = false;
            last = Last::Other;
        }
        let text = &sql[tok.start..tok.end];
        if !space && !out.is_empty() {
            // The first byte written for the token (case does not matter below).
            let first = match tok.kind {
                Kind::Number => b'0',
                Kind::Str(_) if !raw => b'\'',
                _ => text[0],
            };
            space = if last == Last::Number {
                // `0` then `.`, a digit or a letter would make another number or junk.
                (first != b'$' && ident_cont(first)) || (first == b'.' && text.len() == 1)
            } else if tok.kind == Kind::Number {
                // A word, parameter or `$` before it would absorb the `0`.
                out.last().is_some_and(|&b| ident_cont(b))
            } else if first == b'\'' {
                // `'?''?'` is one string; `u&'?'` is a Unicode string.
                matches!(out[..], [.., b'\''] | [.., b'u' | b'U', b'&'])
            } else {
                false
            };
        }
        if space && !out.is_empty() {
            out.push(b' ');
        }
        match tok.kind {
            Kind::Number => out.push(b'0'),
            Kind::Str(_) if !raw => out.extend_from_slice(b"'?'"),
            Kind::Ident => {
                let at = out.len();
                out.extend_from_slice(text);
                lowercase_ascii(&mut out[at..]);
            }
            _ => out.extend_from_slice(text),
        }
        last = if tok.kind == Kind::Number {
            Last::Number
        } else {
            Last::Other
        };
    }
    if in_statement {
        statements += 1;
        if !NORMALIZE {
            ranges.push(stmt_start..sql.len());
        }
    }
    Ok(statements)
}

// ---------------------------------------------------------------------------------------
// Differential checks against pg_query's scanner.

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing {
    //! Fuzz bodies comparing this lexer with `pg_query`'s scanner (PostgreSQL's own
    //! `scan.l`), kept in the library so `classify/fuzz` is a one-line wrapper and the same
    //! checks run from ordinary unit tests.
    //!
    //! `pg_query` scans with `standard_conforming_strings` on, so the comparisons use that
    //! setting; the other setting is checked against it on text without backslashes, where
    //! the two must agree.
    //!
    //! Known, intended differences, which the checks allow for:
    //! - `pg_query` takes a C string: text with a NUL byte cannot be given to it. We refuse
    //!   such text ([`LexError::NulByte`]); PostgreSQL refuses the message.
    //! - [`split`] keeps every non-empty statement, `pg_query::split_with_scanner` only
    //!   those with a keyword token, and it drops a last statement whose parentheses are
    //!   unbalanced at the end of the text.

    use super::{normalize, split, LexError};
    use pg_query::protobuf::{KeywordKind, ScanToken, Token};

    /// Compares the lexer with `pg_query`'s scanner on `sql` (with
    /// `standard_conforming_strings` on): both must refuse it or both accept it; when they
    /// accept it, the statement boundaries must agree (see [`split`] for the convention),
    /// and the tokens `pg_query` reads from the normalized text must be the tokens it reads
    /// from `sql` with every constant replaced by its placeholder and unquoted words
    /// lower-cased. Also checks that normalizing is idempotent and does not depend on
    /// `standard_conforming_strings` for text without backslashes.
    pub fn differential_check(sql: &str) -> Result<(), String> {
        let bytes = sql.as_bytes();
        let mut out = Vec::new();
        let mine = normalize(bytes, true, &mut out);
        let mine_split = split(bytes, true);
        if let Some(at) = bytes.iter().position(|&b| b == 0) {
            return match (mine, mine_split) {
                (Err(LexError::NulByte { at: a }), Err(LexError::NulByte { at: b }))
                    if a == at && b == at =>
                {
                    Ok(())
                }
                (m, s) => Err(format!("NUL at {at}: normalize {m:?}, split {s:?}")),
            };
        }
        let theirs = scan(sql);
        let (norm, tokens) = match (mine, theirs) {
            (Err(m), Err(_)) => {
                if mine_split.is_ok() {
                    return Err(format!("normalize failed ({m}) but split did not"));
                }
                return check_scs_independent(sql);
            }
            (Ok(_), Err(t)) => {
                return Err(format!(
                    "pg_query refuses the text ({t}); the lexer accepts it"
                ))
            }
            (Err(m), Ok(_)) => {
                return Err(format!(
                    "the lexer refuses the text ({m}); pg_query accepts it"
                ))
            }
            (Ok(n), Ok(t)) => (n, t),
        };
        let normalized = std::str::from_utf8(&out)
            .map_err(|e| format!("normalized text is not UTF-8: {e}"))?
            .to_owned();

        // (b) Token streams.
        let norm_tokens = scan(&normalized)
            .map_err(|e| format!("pg_query refuses the normalized text {normalized:?}: {e}"))?;
        let want = canonical_tokens(sql, &tokens);
        let got = canonical_tokens(&normalized, &norm_tokens);
        if want != got {
            let at = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
            return Err(format!(
                "tokens differ at #{at}: original {:?}, normalized {:?} (normalized text {normalized:?})",
                want.get(at),
                got.get(at)
            ));
        }

        // (a) Statement boundaries.
        let ranges =
            split(bytes, true).map_err(|e| format!("split failed ({e}), normalize did not"))?;
        if ranges.len() != norm.statements {
            return Err(format!(
                "split found {} statements, normalize {}",
                ranges.len(),
                norm.statements
            ));
        }
        let theirs = pg_query::split_with_scanner(sql)
            .map_err(|e| format!("pg_query split refuses what its scanner accepts: {e}"))?;
        let theirs: Vec<_> = theirs
            .iter()
            .map(|s| {
                let start = s.as_ptr() as usize - sql.as_ptr() as usize;
                start..start + s.len()
            })
            .collect();
        // pg_query's paren depth at the end (a size_t that wraps; same as signed here).
        let depth: i64 = tokens
            .iter()
            .map(|t| match t.token {
                40 => 1,
                41 => -1,
                _ => 0,
            })
            .sum();
        let comparable: Vec<_> = ranges
            .iter()
            .filter(|r| !(depth != 0 && r.end == sql.len()))
            .filter(|r| {
                tokens.iter().any(|t| {
                    t.keyword_kind != KeywordKind::NoKeyword as i32
                        && r.contains(&(t.start as usize))
                })
            })
            .cloned()
            .collect();
        if comparable != theirs {
            return Err(format!(
                "statements differ: lexer {comparable:?} (all: {ranges:?}), pg_query {theirs:?}"
            ));
        }

        // Idempotence.
        let mut again = Vec::new();
        let n2 = normalize(&out, true, &mut again)
            .map_err(|e| format!("normalized text {normalized:?} does not lex: {e}"))?;
        if again != out || n2 != norm {
            return Err(format!(
                "not idempotent: {normalized:?} -> {:?}",
                String::from_utf8_lossy(&again)
            ));
        }
        check_scs_independent(sql)
    }

    /// `pg_query::scan`'s tokens. (Not `pg_query::scan_tokens`: on text without tokens it
    /// builds a slice from a null pointer, which debug builds abort on.)
    fn scan(sql: &str) -> Result<Vec<ScanToken>, pg_query::Error> {
        pg_query::scan(sql).map(|r| r.tokens)
    }

    /// Without backslashes, `standard_conforming_strings` changes nothing but `U&'…'`,
    /// which it makes an error.
    fn check_scs_independent(sql: &str) -> Result<(), String> {
        if sql.contains('\\') {
            return Ok(());
        }
        let (mut on, mut off) = (Vec::new(), Vec::new());
        let a = normalize(sql.as_bytes(), true, &mut on);
        let b = normalize(sql.as_bytes(), false, &mut off);
        match (&a, &b) {
            (Ok(x), Ok(y)) if x == y && on == off => Ok(()),
            (Err(_), Err(_)) => Ok(()),
            (Ok(_), Err(LexError::Invalid { what, .. })) if what.contains("Unicode escapes") => {
                Ok(())
            }
            _ => Err(format!(
                "standard_conforming_strings changes the result without backslashes: {a:?} {:?} vs {b:?} {:?}",
                String::from_utf8_lossy(&on),
                String::from_utf8_lossy(&off)
            )),
        }
    }

    /// `pg_query`'s tokens (comments left out) as (token, text) with constants replaced
    /// the way [`normalize`] replaces them, for comparing the original with its
    /// normalized text.
    fn canonical_tokens(sql: &str, tokens: &[ScanToken]) -> Vec<(i32, String)> {
        let comment = [Token::SqlComment as i32, Token::CComment as i32];
        let toks: Vec<&ScanToken> = tokens
            .iter()
            .filter(|t| !comment.contains(&t.token))
            .collect();
        let text = |t: &ScanToken| &sql[t.start as usize..t.end as usize];
        let is = |t: Option<&&ScanToken>, k: Token| t.is_some_and(|t| t.token == k as i32);
        let mut out: Vec<(i32, String)> = Vec::with_capacity(toks.len());
        let mut depth = 0i64;
        let mut separator = false;
        // The string is the second half of `N'…'`, never a `UESCAPE` string as written.
        let mut national = false;
        let mut i = 0;
        while i < toks.len() {
            let t = toks[i];
            let tok = t.token;
            let after_national = std::mem::take(&mut national);
            // A `;` outside parentheses is written only between two non-empty statements.
            if tok == 59 && depth == 0 {
                separator = !out.is_empty();
                i += 1;
                continue;
            }
            if separator {
                out.push((59, ";".into()));
                separator = false;
            }
            depth += match tok {
                40 => 1,
                41 => -1,
                _ => 0,
            };
            let number = [Token::Iconst as i32, Token::Fconst as i32];
            let strings = [
                Token::Sconst as i32,
                Token::Bconst as i32,
                Token::Xconst as i32,
                Token::Usconst as i32,
            ];
            if number.contains(&tok) {
                out.push((Token::Iconst as i32, "0".into()));
            } else if strings.contains(&tok) {
                let after_uident_uescape = out.len() >= 2
                    && out[out.len() - 2].0 == Token::Uident as i32
                    && out[out.len() - 1].0 == Token::Uescape as i32;
                if tok == Token::Sconst as i32 && after_uident_uescape && !after_national {
                    out.push((tok, text(t).into()));
                } else {
                    if tok == Token::Usconst as i32
                        && is(toks.get(i + 1), Token::Uescape)
                        && is(toks.get(i + 2), Token::Sconst)
                    {
                        i += 2;
                    }
                    out.push((Token::Sconst as i32, "'?'".into()));
                }
            } else if tok == Token::Nchar as i32
                && t.end - t.start == 1
                && toks
                    .get(i + 1)
                    .is_some_and(|n| n.token == Token::Sconst as i32 && n.start == t.end)
            {
                // `N'…'` is scanned as NCHAR and a string; it is one constant.
                national = true;
            } else if tok == Token::Ident as i32 && text(t).starts_with('"') {
                out.push((tok, text(t).into()));
            } else if tok == Token::Ident as i32 || t.keyword_kind != KeywordKind::NoKeyword as i32
            {
                out.push((tok, text(t).to_ascii_lowercase()));
            } else {
                out.push((tok, text(t).into()));
            }
            i += 1;
        }
        out
    }

    /// The body of the `lexer_vs_pg_query` fuzz target: [`differential_check`] on `data`
    /// when it is UTF-8 (panicking on a discrepancy), and for any bytes, that neither
    /// setting of `standard_conforming_strings` panics and invalid UTF-8 is refused.
    pub fn lexer_vs_pg_query(data: &[u8]) {
        let mut out = Vec::new();
        for scs in [true, false] {
            let n = normalize(data, scs, &mut out);
            let s = split(data, scs);
            match (&n, &s) {
                (Ok(n), Ok(s)) => assert_eq!(n.statements, s.len(), "statement counts"),
                (Err(a), Err(b)) => assert_eq!(a, b, "normalize and split errors"),
                _ => panic!("normalize {n:?} and split {s:?} disagree"),
            }
            if let Ok(s) = s {
                for r in s {
                    assert!(r.start <= r.end && r.end <= data.len());
                }
            }
        }
        match std::str::from_utf8(data) {
            Ok(sql) => {
                if let Err(e) = differential_check(sql) {
                    panic!("{e}\ninput: {sql:?}");
                }
            }
            Err(e) => assert_eq!(
                normalize(data, true, &mut out),
                Err(LexError::InvalidUtf8 {
                    at: e.valid_up_to()
                })
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (sql, standard_conforming_strings, normalized text, statements).
    type NormCase = (&'static str, bool, &'static str, usize);

    const ON: bool = true;
    const OFF: bool = false;

    /// Normalized text: whitespace, comments, case, literals.
    const NORMALIZE: &[NormCase] = &[
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
            ON,
            "select abalance from pgbench_accounts where aid = 0",
            1,
        ),
        ("", ON, "", 0),
        ("   \t\n  ", ON, "", 0),
        ("-- only a comment", ON, "", 0),
        ("/* only */ /* comments */", ON, "", 0),
        (";", ON, "", 0),
        (";;  ;", ON, "", 0),
        ("  SELECT  1  ", ON, "select 0", 1),
        ("SELECT\t\n\r\x0b\x0c1", ON, "select 0", 1),
        // Comments become a space, never nothing.
        ("a/**/-/**/-1", ON, "a - -0", 1),
        ("a/**/-/**/- 1", ON, "a - - 0", 1),
        ("select/**/1", ON, "select 0", 1),
        ("select--c\n1", ON, "select 0", 1),
        ("select 1 -- trailing, no newline", ON, "select 0", 1),
        ("select 1 --", ON, "select 0", 1),
        ("select 1 --\r2", ON, "select 0 0", 1),
        // Nested comments.
        ("select /* a /* b */ c */ 1", ON, "select 0", 1),
        ("select /* /* */ ; */ 1;select 2", ON, "select 0;select 0", 2),
        ("select /*/ x */ 1", ON, "select 0", 1),
        ("select /***/ 1", ON, "select 0", 1),
        ("select /* **/ 1", ON, "select 0", 1),
        ("select /* /**/ */ 1", ON, "select 0", 1),
        // Case.
        ("SeLeCt \"MiXeD\", MiXeD FROM T", ON, "select \"MiXeD\", mixed from t", 1),
        ("select ÉCOLE, École", ON, "select École, École", 1),
        ("select a$B, A$1", ON, "select a$b, a$1", 1),
        ("select _x1", ON, "select _x1", 1),
        // Strings.
        ("select 'abc'", ON, "select '?'", 1),
        ("select 'it''s'", ON, "select '?'", 1),
        ("select ''", ON, "select '?'", 1),
        ("select ''''", ON, "select '?'", 1),
        ("select 'a'\n'b'", ON, "select '?'", 1),
        ("select 'a' \t\n  'b'", ON, "select '?'", 1),
        ("select 'a' -- c\n'b'", ON, "select '?'", 1),
        ("select 'a'\n-- c\n'b'", ON, "select '?'", 1),
        ("select 'a'\r'b'", ON, "select '?'", 1),
        ("select 'a' 'b'", ON, "select '?' '?'", 1),
        ("select 'a'/**/'b'", ON, "select '?' '?'", 1),
        ("select 'a'\n/* c */'b'", ON, "select '?' '?'", 1),
        ("select 'a'\n-- c", ON, "select '?'", 1),
        ("select 'a'\n-", ON, "select '?' -", 1),
        ("select 'a';'b'", ON, "select '?';'?'", 2),
        ("select E'\\''", ON, "select '?'", 1),
        ("select E'\\\\'", ON, "select '?'", 1),
        ("select e'a\\nb'", ON, "select '?'", 1),
        ("select E'a'\n'\\''", ON, "select '?'", 1),
        ("select E'\\u00e9\\U0001F600\\x41\\101'", ON, "select '?'", 1),
        ("select E'\\uD83D\\uDE00'", ON, "select '?'", 1),
        ("select E'\\xc3\\xa9'", ON, "select '?'", 1),
        ("select E'\\é'", ON, "select '?'", 1),
        ("select E'\\x'", ON, "select '?'", 1),
        ("select 'a\\'", ON, "select '?'", 1),
        ("select '\\'';", OFF, "select '?'", 1),
        ("select N'x', n'y'", ON, "select '?', '?'", 1),
        ("select B'1010', b'1'\n'0', X'1F', x'ab'", ON, "select '?', '?', '?', '?'", 1),
        ("select B'1''0'", ON, "select '?' '?'", 1),
        ("select U&'d\\0061t\\+000061'", ON, "select '?'", 1),
        ("select U&'d!0061t!+000061' UESCAPE '!'", ON, "select '?'", 1),
        ("select u&'x' /* c */ uescape -- d\n '!', 1", ON, "select '?', 0", 1),
        ("select U&'x' UESCAPE", ON, "select '?' uescape", 1),
        ("select U&'x' UESCAPE 1", ON, "select '?' uescape 0", 1),
        ("select U&\"d!0061t\" UESCAPE '!'", ON, "select U&\"d!0061t\" uescape '!'", 1),
        ("select U&\"x\"", ON, "select U&\"x\"", 1),
        ("select u&x", ON, "select u&x", 1),
        ("select $$a$$, $tag$b$tag$", ON, "select '?', '?'", 1),
        ("select $a$ ; $a$", ON, "select '?'", 1),
        ("select $$$$", ON, "select '?'", 1),
        ("select $a$x$b$y$a$", ON, "select '?'", 1),
        ("select $a$$$a$", ON, "select '?'", 1),
        ("select $_1$x$_1$", ON, "select '?'", 1),
        ("select $é$x$é$", ON, "select '?'", 1),
        ("select $A$x$a$ $A$", ON, "select '?'", 1),
        ("select $$a$$\n'b'", ON, "select '?' '?'", 1),
        ("select $$a$$'b'", ON, "select '?' '?'", 1),
        ("select 'a'$$b$$", ON, "select '?' '?'", 1),
        ("select u&$$x$$", ON, "select u& '?'", 1),
        ("select a$$b$$", ON, "select a$$b$$", 1),
        ("select $", ON, "select $", 1),
        ("select $a", ON, "select $a", 1),
        ("select $ab + 1", ON, "select $ab + 0", 1),
        // Parameters.
        ("select $1, $23", ON, "select $1, $23", 1),
        ("select $1.5", ON, "select $1 0", 1),
        // No `{param_junk}` rule in the scanner pg_query 18 embeds: `$1a` is `$1`, `a`.
        ("select $1a, $1_0, $1e5", ON, "select $1a, $1_0, $1e5", 1),
        ("select $1$a$x$a$", ON, "select $1'?'", 1),
        ("select $2147483647", ON, "select $2147483647", 1),
        // Numbers.
        ("select 1, 1.5, .5, 1., 1e5, 1.e5, .5e-3, 1E+10", ON, "select 0, 0, 0, 0, 0, 0, 0, 0", 1),
        ("select 0x1F, 0X1f, 0o17, 0b101, 0x_1, 1_000, 1_000.000_1", ON, "select 0, 0, 0, 0, 0, 0, 0", 1),
        ("select 99999999999999999999999", ON, "select 0", 1),
        ("select 1..10", ON, "select 0..0", 1),
        ("select 1...10", ON, "select 0..0", 1),
        ("select 1.5.5", ON, "select 0 0", 1),
        ("select 1.5..5", ON, "select 0..0", 1),
        ("select 1.5.x", ON, "select 0 .x", 1),
        ("select 0x1F.5", ON, "select 0 0", 1),
        ("select a.5", ON, "select a 0", 1),
        ("select t.1e5", ON, "select t 0", 1),
        ("select 1$1", ON, "select 0$1", 1),
        ("select 1$, 1.5$, .5$, 1_000.5$", ON, "select 0$, 0$, 0$, 0$", 1),
        ("select 1'a'", ON, "select 0'?'", 1),
        ("select -1, - 1, 2-1", ON, "select -0, - 0, 0-0", 1),
        ("select x[1:2]", ON, "select x[0:0]", 1),
        // Operators.
        ("select a@-b, a!=b, a<>b, a<=b, a>=b, a=>b", ON, "select a@-b, a!=b, a<>b, a<=b, a>=b, a=>b", 1),
        ("select 1=-1", ON, "select 0=-0", 1),
        ("select a*/b", ON, "select a*/b", 1),
        ("select a+-/*c*/b", ON, "select a+- b", 1),
        ("select a*--c\n b", ON, "select a* b", 1),
        ("select x::int[], y := 1, z .. w", ON, "select x::int[], y := 0, z .. w", 1),
        ("select a ||/ b, a <-> b, ?- a, a #- b, @@ a, `", ON, "select a ||/ b, a <-> b, ?- a, a #- b, @@ a, `", 1),
        ("select \\ { }", ON, "select \\ { }", 1),
        // Statements.
        ("select 1; select 2", ON, "select 0; select 0", 2),
        ("select 1 ; select 2 ;", ON, "select 0 ; select 0", 2),
        ("select 1;;select 2;;", ON, "select 0;select 0", 2),
        ("select 1; ;select 2", ON, "select 0; select 0", 2),
        ("create rule r as on insert to t do (insert into a values (1); insert into b values (2))", ON,
         "create rule r as on insert to t do (insert into a values (0); insert into b values (0))", 1),
        ("select (1; select 2", ON, "select (0; select 0", 1),
        ("select 1); select 2", ON, "select 0); select 0", 1),
        ("1; foo; (", ON, "0; foo; (", 3),
        // standard_conforming_strings off: a plain string has escapes.
        ("select '\\'; DROP TABLE x; --'", OFF, "select '?'", 1),
        ("select '\\'; DROP TABLE x; --'", ON, "select '?'; drop table x", 2),
        ("select E'\\''", OFF, "select '?'", 1),
        ("select N'\\''", OFF, "select '?'", 1),
        ("select 'a'\n'\\''", OFF, "select '?'", 1),
        ("select U&\"x\" UESCAPE E'\\\\'", OFF, "select U&\"x\" uescape E'\\\\'", 1),
        ("select U&\"x\" UESCAPE '!'", OFF, "select U&\"x\" uescape '!'", 1),
    ];

    /// (sql, standard_conforming_strings, statement texts as `split` returns them).
    const SPLIT: &[(&str, bool, &[&str])] = &[
        ("", ON, &[]),
        ("select 1", ON, &["select 1"]),
        ("select 1;", ON, &["select 1"]),
        ("select 1; select 2", ON, &["select 1", " select 2"]),
        (
            " select 1 ; -- c\n select 2 -- d",
            ON,
            &[" select 1 ", " -- c\n select 2 -- d"],
        ),
        (";;select 1;;", ON, &["select 1"]),
        ("/* c */;select 1", ON, &["select 1"]),
        (
            "select ';'; select \";\"",
            ON,
            &["select ';'", " select \";\""],
        ),
        (
            "select $a$ ; $a$; select 2",
            ON,
            &["select $a$ ; $a$", " select 2"],
        ),
        (
            "select /* ; */ 1 -- ;\n; x",
            ON,
            &["select /* ; */ 1 -- ;\n", " x"],
        ),
        ("do (a; b); c", ON, &["do (a; b)", " c"]),
        ("a) ; b", ON, &["a) ; b"]),
        ("a) ; (b; c", ON, &["a) ; (b", " c"]),
        (
            "select '\\'; DROP TABLE x; --'",
            OFF,
            &["select '\\'; DROP TABLE x; --'"],
        ),
        (
            "select '\\'; DROP TABLE x; --'",
            ON,
            &["select '\\'", " DROP TABLE x"],
        ),
        ("select E'\\'; drop'; x", ON, &["select E'\\'; drop'", " x"]),
        ("select 'a'\n';'; x", ON, &["select 'a'\n';'", " x"]),
        ("select 1 -- ; x", ON, &["select 1 -- ; x"]),
    ];

    /// (sql, standard_conforming_strings, error).
    const ERRORS: &[(&str, bool, LexError)] = &[
        ("select 'abc", ON, LexError::Unterminated { what: "quoted string", at: 7 }),
        ("select 'it''", ON, LexError::Unterminated { what: "quoted string", at: 7 }),
        ("select E'\\'", ON, LexError::Unterminated { what: "quoted string", at: 7 }),
        ("select '\\'", OFF, LexError::Unterminated { what: "quoted string", at: 7 }),
        ("select E'\\", ON, LexError::Unterminated { what: "quoted string", at: 7 }),
        ("select 'a'\n'b", ON, LexError::Unterminated { what: "quoted string", at: 7 }),
        ("select N'", ON, LexError::Unterminated { what: "quoted string", at: 7 }),
        ("select U&'", ON, LexError::Unterminated { what: "quoted string", at: 7 }),
        ("select B'01", ON, LexError::Unterminated { what: "bit string literal", at: 7 }),
        ("select x'1f", ON, LexError::Unterminated { what: "hexadecimal string literal", at: 7 }),
        ("select $a$ x $b$", ON, LexError::Unterminated { what: "dollar-quoted string", at: 7 }),
        ("select $$", ON, LexError::Unterminated { what: "dollar-quoted string", at: 7 }),
        ("select \"abc", ON, LexError::Unterminated { what: "quoted identifier", at: 7 }),
        ("select U&\"abc", ON, LexError::Unterminated { what: "quoted identifier", at: 7 }),
        ("select /* a", ON, LexError::Unterminated { what: "/* comment", at: 7 }),
        ("select /* /* */", ON, LexError::Unterminated { what: "/* comment", at: 7 }),
        ("select /*/", ON, LexError::Unterminated { what: "/* comment", at: 7 }),
        ("select \"\"", ON, LexError::Invalid { what: "zero-length delimited identifier", at: 7 }),
        ("select U&\"\"", ON, LexError::Invalid { what: "zero-length delimited identifier", at: 7 }),
        ("select 123abc", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        ("select 1e", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        ("select 1e+", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        ("select 1.5x", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        ("select 1.e", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        ("select .5_", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        ("select 1e5e", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        ("select 1_", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        // Found by the fuzzer: a junk reading may start at a `_` or letter inside the number.
        ("select 1_000$", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        ("select 1e5$", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        ("select 1.5e5$", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        ("select 1.5_$", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        ("select 1__0", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        ("select 1é", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        ("select 0x", ON, LexError::Invalid { what: "invalid hexadecimal integer", at: 7 }),
        ("select 0o_", ON, LexError::Invalid { what: "invalid octal integer", at: 7 }),
        ("select 0b'1'", ON, LexError::Invalid { what: "invalid binary integer", at: 7 }),
        ("select 0x1g", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        ("select 0x1$", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        ("select 0b12", ON, LexError::Invalid { what: "trailing junk after numeric literal", at: 7 }),
        ("select $2147483648", ON, LexError::Invalid { what: "parameter number too large", at: 7 }),
        ("select E'\\u12'", ON, LexError::Invalid { what: "invalid Unicode escape", at: 9 }),
        ("select E'\\U0000123'", ON, LexError::Invalid { what: "invalid Unicode escape", at: 9 }),
        ("select E'\\u0000'", ON, LexError::Invalid { what: "invalid Unicode escape value", at: 9 }),
        ("select E'\\U00110000'", ON, LexError::Invalid { what: "invalid Unicode escape value", at: 9 }),
        ("select E'\\uDE00'", ON, LexError::Invalid { what: "invalid Unicode surrogate pair", at: 9 }),
        ("select E'\\uD83Dx'", ON, LexError::Invalid { what: "invalid Unicode surrogate pair", at: 15 }),
        ("select E'\\uD83D\\u0041'", ON, LexError::Invalid { what: "invalid Unicode surrogate pair", at: 15 }),
        ("select E'\\xff'", ON, LexError::Invalid { what: "invalid byte sequence for encoding \"UTF8\"", at: 7 }),
        ("select E'\\0'", ON, LexError::Invalid { what: "invalid byte sequence for encoding \"UTF8\"", at: 7 }),
        ("select E'\\400'", ON, LexError::Invalid { what: "invalid byte sequence for encoding \"UTF8\"", at: 7 }),
        ("select E'\\xc3'\n'x'", ON, LexError::Invalid { what: "invalid byte sequence for encoding \"UTF8\"", at: 7 }),
        ("select '\\xff'", OFF, LexError::Invalid { what: "invalid byte sequence for encoding \"UTF8\"", at: 7 }),
        ("select U&'x'", OFF, LexError::Invalid { what: "unsafe use of string constant with Unicode escapes", at: 7 }),
        ("select U&\"x\" UESCAPE '\\!'", OFF, LexError::Invalid {
            what: "backslash in the UESCAPE string of a quoted identifier with standard_conforming_strings off",
            at: 21,
        }),
        ("select 1 <<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<< 2", ON,
         LexError::Invalid { what: "operator too long", at: 9 }),
        ("select 1\0; drop table x", ON, LexError::NulByte { at: 8 }),
        ("select '\u{1}\0'", ON, LexError::NulByte { at: 9 }),
    ];

    fn norm(sql: &str, scs: bool) -> Result<(String, usize), LexError> {
        let mut out = Vec::new();
        let n = normalize(sql.as_bytes(), scs, &mut out)?;
        assert_eq!(n.hash, xxhash_rust::xxh3::xxh3_64(&out));
        Ok((
            String::from_utf8(out).expect("normalized text is UTF-8"),
            n.statements,
        ))
    }

    #[test]
    fn lexer_normalize_table() {
        let mut failures = Vec::new();
        for &(sql, scs, want, statements) in NORMALIZE {
            match norm(sql, scs) {
                Ok((got, n)) if got == want && n == statements => {}
                other => failures.push(format!(
                    "{sql:?} (scs {scs}): want {want:?}/{statements}, got {other:?}"
                )),
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn lexer_split_table() {
        let mut failures = Vec::new();
        for &(sql, scs, want) in SPLIT {
            let got: Result<Vec<&str>, _> =
                split(sql.as_bytes(), scs).map(|r| r.into_iter().map(|r| &sql[r]).collect());
            if got.as_deref() != Ok(want) {
                failures.push(format!("{sql:?} (scs {scs}): want {want:?}, got {got:?}"));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn lexer_error_table() {
        let mut failures = Vec::new();
        for (sql, scs, want) in ERRORS {
            let got = norm(sql, *scs).map(|(s, _)| s);
            let got_split = split(sql.as_bytes(), *scs);
            if got.as_ref().err() != Some(want) || got_split.as_ref().err() != Some(want) {
                failures.push(format!(
                    "{sql:?} (scs {scs}): want {want:?}, got {got:?} / split {got_split:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn lexer_split_agrees_with_normalize() {
        for &(sql, scs, _, statements) in NORMALIZE {
            assert_eq!(
                split(sql.as_bytes(), scs).map(|r| r.len()),
                Ok(statements),
                "{sql:?}"
            );
        }
    }

    #[test]
    fn lexer_invalid_utf8() {
        let mut out = vec![1, 2, 3];
        assert_eq!(
            normalize(b"select '\xff'", true, &mut out),
            Err(LexError::InvalidUtf8 { at: 8 })
        );
        assert!(out.is_empty());
        assert_eq!(
            split(b"select \xc3", true),
            Err(LexError::InvalidUtf8 { at: 7 })
        );
    }

    #[test]
    fn lexer_literals_do_not_change_the_fingerprint() {
        let pairs = [
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
                "select  abalance from PGBENCH_ACCOUNTS where aid/**/=\n98765 -- x",
            ),
            (
                "UPDATE t SET a = 'x', b = 1.5 WHERE c = E'\\n' AND d = $$q$$",
                "update t set a = $z$yy$z$, b = 7 where c = 'it''s' and d = N'q'",
            ),
            ("select 1; select 2", "select 3;;  select 4;"),
        ];
        for (a, b) in pairs {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            let na = normalize(a.as_bytes(), true, &mut x).unwrap();
            let nb = normalize(b.as_bytes(), true, &mut y).unwrap();
            assert_eq!(String::from_utf8_lossy(&x), String::from_utf8_lossy(&y));
            assert_eq!(na, nb);
        }
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let na = normalize(b"select 1 from a", true, &mut x).unwrap();
        let nb = normalize(b"select 1 from b", true, &mut y).unwrap();
        assert_ne!(na.hash, nb.hash);
    }

    #[test]
    fn lexer_reuses_the_buffer() {
        let mut out = Vec::with_capacity(256);
        let ptr = out.as_ptr();
        for _ in 0..3 {
            normalize(
                b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
                true,
                &mut out,
            )
            .unwrap();
        }
        assert_eq!(out.as_ptr(), ptr);
    }

    /// Regression inputs found by the differential fuzzer (each once a discrepancy).
    const FUZZ_REGRESSIONS: &[&str] = &[
        // `{integer_junk}` is `1` then the identifier `_000$`, longer than `1_000`.
        "sessssssslect 1, 1.5, .5, 1., 1e5, 1.e5, .5e-3........., 0xb101, 1_000$ 1..10, 1.5.5",
        // (A harness bug: `N'!'` after `U&"…" UESCAPE` is NCHAR and a string, and the
        // string is replaced, since the parser refuses anything but a plain string there.)
        "st.U&\"d,0060t\" UESCAPE N'!'\u{1a}:",
    ];

    /// Every input of the tables above, plus the fuzzer's regressions, checked against
    /// pg_query's scanner the way the fuzz target checks them.
    #[test]
    fn lexer_differential_on_table_inputs() {
        let inputs = NORMALIZE
            .iter()
            .map(|c| c.0)
            .chain(SPLIT.iter().map(|c| c.0))
            .chain(ERRORS.iter().map(|c| c.0))
            .chain(FUZZ_REGRESSIONS.iter().copied());
        let mut failures = Vec::new();
        for sql in inputs {
            if let Err(e) = fuzzing::differential_check(sql) {
                failures.push(format!("{sql:?}: {e}"));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    /// Inputs on which a scanner that rescans (as flex does for operator runs) or
    /// backtracks would take quadratic time.
    #[test]
    fn lexer_long_inputs_are_linear() {
        let n = 200_000;
        let cases = [
            format!("select a ={}", "+-".repeat(n)),
            format!("select a {}", "@+".repeat(n)),
            format!("select a {}", "*".repeat(n)),
            format!("select {}1", "(".repeat(n)),
            format!("select {}", "$a ".repeat(n)),
            format!("select {}", "$1".repeat(n)),
            format!("select {}", "1.".repeat(n)),
            format!("select /*{}{}", "/*".repeat(n), "*/".repeat(n + 1)),
            format!("select '{}'", "''".repeat(n)),
            format!("select E'{}'", "\\\\".repeat(n)),
            format!("select 'a'{}", "\n'a'".repeat(n)),
            format!("select {}", "a".repeat(n)),
            format!("select {}", "1".repeat(n)),
            format!("select \"{}\"", "\"\"".repeat(n)),
            format!("select {}", "$$ $$".repeat(n)),
            format!("select {}", "u&x".repeat(n)),
            format!("select {}", ";".repeat(n)),
        ];
        let mut out = Vec::new();
        for sql in &cases {
            // No time limit here (timing assertions are flaky); quadratic work on these
            // 400 kB inputs would take minutes and show as a hung test.
            let _ = normalize(sql.as_bytes(), true, &mut out);
            let _ = split(sql.as_bytes(), true);
        }
    }

    /// Random token soup from lexical fragments, checked like the fuzz target checks its
    /// inputs. Byte-level fuzzing rarely assembles `U&"x" UESCAPE '!'` or a continued
    /// `E'…'` string; this does, deterministically, on every test run (`LEXER_SOUP=n` runs
    /// `n` cases instead of 3000, `LEXER_SOUP_SEED=s` starts from another seed).
    #[test]
    fn lexer_differential_on_fragment_soup() {
        #[rustfmt::skip]
        const FRAGMENTS: &[&str] = &[
            "select", " ", "\n", "\r", "\t", "'", "''", "'a'", "E'", "e'x", "\\", "\\'", "\\\\",
            "\\u0041", "\\uD83D", "\\uDE00", "\\U0001F600", "\\x", "\\xc3", "\\xa9", "\\0",
            "\\101", "N'", "B'", "X'", "U&'", "U&\"", "u&", "UESCAPE", " '!'", "\"", "\"\"", "$$",
            "$a$", "$", "$1", "--", "/*", "*/", ";", "(", ")", "::", ":=", "..", ".", "1", "0x",
            "0b", "1_0", "e", "+", "5", "_", "a", "Z", "é", "-", "*", "/", "<", ">", "=", "!",
            "@", "#", "%", "^", "&", "|", "`", "?", "~", ",", "[", "]", "{",
        ];
        let cases: usize = std::env::var("LEXER_SOUP").map_or(3000, |v| v.parse().unwrap_or(3000));
        let seed = std::env::var("LEXER_SOUP_SEED")
            .ok()
            .and_then(|v| v.parse().ok());
        let mut state: u64 = seed.unwrap_or(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut failures, mut accepted) = (Vec::new(), 0);
        for _ in 0..cases {
            let len = 1 + next() % 16;
            let sql: String = (0..len)
                .map(|_| FRAGMENTS[(next() % FRAGMENTS.len() as u64) as usize])
                .collect();
            accepted += usize::from(normalize(sql.as_bytes(), true, &mut Vec::new()).is_ok());
            if let Err(e) = fuzzing::differential_check(&sql) {
                failures.push(format!("{sql:?}: {e}"));
            }
        }
        assert!(
            failures.is_empty(),
            "\n{}",
            failures[..failures.len().min(20)].join("\n")
        );
        // The soup must not be all errors, or it would check little.
        assert!(
            accepted * 5 > cases,
            "only {accepted} of {cases} inputs lex"
        );
    }

    /// `cargo test --release -p sluice-classify lexer_timing -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, run by hand in release mode"]
    fn lexer_timing() {
        let sql = b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;";
        let mut out = Vec::new();
        // The best of several batches: the machine may be busy with other work.
        let best = |f: &mut dyn FnMut()| {
            (0..30)
                .map(|_| {
                    let start = std::time::Instant::now();
                    for _ in 0..100_000 {
                        f();
                    }
                    start.elapsed() / 100_000
                })
                .min()
                .unwrap_or_default()
        };
        let per = best(&mut || {
            std::hint::black_box(normalize(std::hint::black_box(sql), true, &mut out).unwrap());
        });
        println!("normalize(pgbench select): {per:?} per call (best batch)");
        let per = best(&mut || {
            std::hint::black_box(split(std::hint::black_box(sql), true).unwrap());
        });
        println!("split(pgbench select): {per:?} per call (best batch)");
    }
}
