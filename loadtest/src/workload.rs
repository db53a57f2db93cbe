//! Workloads as scripts: random variables drawn per transaction and the statements that
//! use them, encoded for the simple, extended or prepared protocol.
//!
//! The built-in workloads are written in the same script format `--script` reads (a
//! subset of pgbench's: `\set name random(lo, hi)`, `\set name N`, `:name` references, one
//! statement per `;`), so they and custom scripts go through one code path.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// One Query message per statement, values inlined as literals.
    Simple,
    /// Parse/Bind/Describe/Execute/Sync with an unnamed statement, every time (libpq's
    /// PQexecParams, pgbench -M extended).
    Extended,
    /// Parse once per connection, then Bind/Describe/Execute/Sync (pgbench -M prepared).
    Prepared,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Builtin {
    /// pgbench -S: one indexed SELECT on pgbench_accounts.
    SelectOnly,
    /// pgbench's default TPC-B-like transaction (7 statements).
    TpcbLike,
    /// One customer by primary key from the demo's shop database.
    PointSelect,
    /// 100 customers × 6 text columns of about 100 bytes each (exercises masking).
    WideRows,
    /// The script given with --script.
    Custom,
}

/// pgbench's accounts per unit of scale.
pub const ACCOUNTS_PER_SCALE: i64 = 100_000;

impl Builtin {
    /// The script text of a built-in workload at `scale`.
    pub fn script(self, scale: i64) -> String {
        let accounts = ACCOUNTS_PER_SCALE * scale;
        match self {
            Builtin::SelectOnly => format!(
                "\\set aid random(1, {accounts})\n\
                 SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n"
            ),
            Builtin::TpcbLike => format!(
                "\\set aid random(1, {accounts})\n\
                 \\set bid random(1, {scale})\n\
                 \\set tid random(1, {tellers})\n\
                 \\set delta random(-5000, 5000)\n\
                 BEGIN;\n\
                 UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;\n\
                 SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n\
                 UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;\n\
                 UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;\n\
                 INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);\n\
                 END;\n",
                tellers = 10 * scale
            ),
            Builtin::PointSelect => "\\set id random(1, 10000)\n\
                 SELECT id, full_name, email, phone, card_number, ssn, notes FROM customers WHERE id = :id;\n"
                .to_string(),
            Builtin::WideRows => "\\set first random(1, 9900)\n\
                 SELECT rpad(full_name, 100, '.') AS full_name, rpad(email, 100, '.') AS email, \
                 rpad(phone, 100, '.') AS phone, rpad(card_number, 100, '.') AS card_number, \
                 rpad(ssn, 100, '.') AS ssn, rpad(coalesce(notes, ''), 100, '.') AS notes \
                 FROM customers WHERE id >= :first ORDER BY id LIMIT 100;\n"
                .to_string(),
            Builtin::Custom => String::new(),
        }
    }

    pub fn uses_pgbench_tables(self) -> bool {
        matches!(self, Builtin::SelectOnly | Builtin::TpcbLike)
    }
}

#[derive(Clone, Debug)]
struct Var {
    name: String,
    lo: i64,
    hi: i64,
}

#[derive(Clone, Debug)]
enum Part {
    Text(String),
    Var(usize),
}

#[derive(Clone, Debug)]
pub struct Statement {
    /// For the simple protocol: text with variables spliced in as literals.
    parts: Vec<Part>,
    /// For the extended protocols: text with `$n` placeholders …
    parameterized: String,
    /// … and which variable each `$n` is.
    params: Vec<usize>,
    /// Prepared-statement name (per connection).
    name: String,
}

/// A parsed script: what one transaction does.
#[derive(Clone, Debug)]
pub struct Script {
    vars: Vec<Var>,
    pub statements: Vec<Statement>,
}

impl Script {
    pub fn parse(text: &str) -> Result<Script> {
        let mut vars: Vec<Var> = Vec::new();
        let mut raw_statements: Vec<String> = Vec::new();
        let mut pending = String::new();
        for (lineno, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with("--")) {
                continue;
            }
            if pending.is_empty() && trimmed.starts_with('\\') {
                let var = parse_meta(trimmed)
                    .with_context(|| format!("script line {}: {trimmed}", lineno + 1))?;
                match vars.iter_mut().find(|v| v.name == var.name) {
                    Some(existing) => *existing = var,
                    None => vars.push(var),
                }
                continue;
            }
            if !pending.is_empty() {
                pending.push('\n');
            }
            pending.push_str(line);
            if trimmed.ends_with(';') {
                raw_statements.push(std::mem::take(&mut pending));
            }
        }
        if !pending.trim().is_empty() {
            raw_statements.push(pending);
        }
        if raw_statements.is_empty() {
            bail!("the script has no SQL statement");
        }
        let statements = raw_statements
            .iter()
            .enumerate()
            .map(|(i, sql)| compile(i, sql.trim().trim_end_matches(';').trim_end(), &vars))
            .collect();
        Ok(Script { vars, statements })
    }

    /// Draws this transaction's variable values into `values`.
    pub fn draw(&self, rng: &mut Rng, values: &mut Vec<i64>) {
        values.clear();
        values.extend(self.vars.iter().map(|v| rng.between(v.lo, v.hi)));
    }

    /// Parse messages for every statement, sent once per connection with `prepared`.
    pub fn encode_prepare(&self, out: &mut BytesMut) -> Result<()> {
        for s in &self.statements {
            frontend::parse(&s.name, &s.parameterized, std::iter::empty(), out)?;
        }
        frontend::sync(out);
        Ok(())
    }
}

impl Statement {
    /// Appends this statement, with `values`, to `out` in `protocol`; `scratch` is reused
    /// text space so the simple protocol allocates nothing per transaction.
    pub fn encode(
        &self,
        protocol: Protocol,
        values: &[i64],
        scratch: &mut String,
        out: &mut BytesMut,
    ) -> Result<()> {
        match protocol {
            Protocol::Simple => {
                scratch.clear();
                for part in &self.parts {
                    match part {
                        Part::Text(t) => scratch.push_str(t),
                        Part::Var(i) => {
                            let _ = write!(scratch, "{}", values[*i]);
                        }
                    }
                }
                frontend::query(scratch, out)?;
            }
            Protocol::Extended | Protocol::Prepared => {
                let statement = if protocol == Protocol::Extended {
                    frontend::parse("", &self.parameterized, std::iter::empty(), out)?;
                    ""
                } else {
                    self.name.as_str()
                };
                let mut text = itoa_buffer();
                frontend::bind(
                    "",
                    statement,
                    std::iter::empty::<i16>(),
                    self.params.iter().map(|i| values[*i]),
                    |value, buf| {
                        let s = format_i64(value, &mut text);
                        buf.extend_from_slice(s);
                        Ok(IsNull::No)
                    },
                    std::iter::empty::<i16>(),
                    out,
                )
                .map_err(|e| match e {
                    frontend::BindError::Conversion(e) => anyhow::anyhow!("bind: {e}"),
                    frontend::BindError::Serialization(e) => anyhow::anyhow!("bind: {e}"),
                })?;
                frontend::describe(b'P', "", out)?;
                frontend::execute("", 0, out)?;
                frontend::sync(out);
            }
        }
        Ok(())
    }
}

fn itoa_buffer() -> [u8; 20] {
    [0; 20]
}

fn format_i64(value: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = value.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if value < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

/// `\set name random(lo, hi)` or `\set name N`.
fn parse_meta(line: &str) -> Result<Var> {
    let rest = line
        .strip_prefix("\\set")
        .filter(|r| r.starts_with(char::is_whitespace))
        .context("only \\set meta-commands are supported")?
        .trim();
    let (name, expr) = rest
        .split_once(char::is_whitespace)
        .context("\\set needs a name and a value")?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("bad variable name {name:?}");
    }
    let expr = expr.trim();
    let (lo, hi) = if let Some(args) = expr
        .strip_prefix("random(")
        .and_then(|a| a.strip_suffix(')'))
    {
        let (lo, hi) = args
            .split_once(',')
            .context("random() takes two arguments")?;
        (parse_int(lo)?, parse_int(hi)?)
    } else {
        let n = parse_int(expr).context("a \\set value is an integer or random(lo, hi)")?;
        (n, n)
    };
    if lo > hi {
        bail!("random({lo}, {hi}): the lower bound is above the upper");
    }
    Ok(Var {
        name: name.to_string(),
        lo,
        hi,
    })
}

fn parse_int(s: &str) -> Result<i64> {
    let s = s.trim();
    s.parse()
        .with_context(|| format!("{s:?} is not an integer"))
}

/// Splits `sql` at `:name` references to known variables, outside quotes and `::` casts.
fn compile(index: usize, sql: &str, vars: &[Var]) -> Statement {
    let mut parts = Vec::new();
    let mut parameterized = String::with_capacity(sql.len());
    let mut params: Vec<usize> = Vec::new();
    let mut text = String::new();
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let c = bytes[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
        } else if c == b'\'' || c == b'"' {
            quote = Some(c);
        } else if c == b':' && bytes.get(i + 1) != Some(&b':') && (i == 0 || bytes[i - 1] != b':') {
            let end = bytes[i + 1..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                .map_or(bytes.len(), |p| i + 1 + p);
            let name = &sql[i + 1..end];
            if let Some(var) = vars.iter().position(|v| v.name == name) {
                parts.push(Part::Text(std::mem::take(&mut text)));
                parts.push(Part::Var(var));
                let n = match params.iter().position(|p| *p == var) {
                    Some(n) => n + 1,
                    None => {
                        params.push(var);
                        params.len()
                    }
                };
                let _ = write!(parameterized, "${n}");
                i = end;
                continue;
            }
        }
        let ch_end = next_char_boundary(sql, i);
        text.push_str(&sql[i..ch_end]);
        parameterized.push_str(&sql[i..ch_end]);
        i = ch_end;
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Statement {
        parts,
        parameterized,
        params,
        name: format!("sluice_lt_{index}"),
    }
}

fn next_char_boundary(s: &str, i: usize) -> usize {
    let mut j = i + 1;
    while j < s.len() && !s.is_char_boundary(j) {
        j += 1;
    }
    j
}

/// xorshift64*: the per-connection random source. Not cryptographic; cheap and
/// reproducible from its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[lo, hi]`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi as i128 - lo as i128 + 1) as u128;
        (lo as i128 + (self.next_u64() as u128 % span) as i128) as i64
    }

    /// Uniform in `(0, 1]`.
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_style_scripts() {
        let script = Script::parse(
            "-- comment\n\\set aid random(1, 100)\n\\set k 7\nSELECT :aid::int, ':aid', :k\n  FROM t WHERE a = :aid;\nSELECT 1",
        )
        .expect("parse");
        assert_eq!(script.statements.len(), 2);
        let s = &script.statements[0];
        assert_eq!(
            s.parameterized,
            "SELECT $1::int, ':aid', $2\n  FROM t WHERE a = $1"
        );
        assert_eq!(s.params, vec![0, 1]);
        let mut out = BytesMut::new();
        let mut scratch = String::new();
        s.encode(Protocol::Simple, &[42, 7], &mut scratch, &mut out)
            .expect("encode");
        assert_eq!(scratch, "SELECT 42::int, ':aid', 7\n  FROM t WHERE a = 42");
        for p in [Protocol::Extended, Protocol::Prepared] {
            s.encode(p, &[-42, 7], &mut scratch, &mut out)
                .expect("encode");
        }
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        assert!(Script::parse("\\sleep 1\nSELECT 1;").is_err());
        assert!(Script::parse("\\set x random(5, 1)\nSELECT 1;").is_err());
        assert!(Script::parse("\\set x random(1)\nSELECT 1;").is_err());
        assert!(Script::parse("-- nothing\n").is_err());
    }

    #[test]
    fn builtins_parse_and_numbers_format() {
        for b in [
            Builtin::SelectOnly,
            Builtin::TpcbLike,
            Builtin::PointSelect,
            Builtin::WideRows,
        ] {
            Script::parse(&b.script(3)).expect("builtin parses");
        }
        let mut buf = itoa_buffer();
        assert_eq!(
            format_i64(i64::MIN, &mut buf),
            i64::MIN.to_string().as_bytes()
        );
        assert_eq!(format_i64(0, &mut buf), b"0");
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let v = rng.between(-2, 2);
            assert!((-2..=2).contains(&v));
        }
    }
}
