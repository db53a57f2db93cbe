//! What the subcommands print: aligned tables for people, JSON for programs, times in UTC.
//!
//! Everything printed in a table passes through [`clean`]: reasons and names come from
//! other people (a requester writes the reason an approver reads), so control characters
//! (terminal escapes, newlines) and bidirectional overrides are neutralised.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

/// Writes `text` to stdout, adding a final newline if missing. A closed pipe
/// (`sluice audit | head`) is not an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let result = out
        .write_all(text.as_bytes())
        .and_then(|()| {
            if text.ends_with('\n') {
                Ok(())
            } else {
                out.write_all(b"\n")
            }
        })
        .and_then(|()| out.flush());
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    print(&serde_json::to_string_pretty(value)?)
}

/// `text` made safe to show in one table cell or log line: line breaks and tabs become
/// spaces, other control characters and bidirectional-override characters become `?`.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => '?',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

/// A table with a header row; columns are left-aligned and separated by two spaces.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; cells are [`clean`]ed. Missing cells are left blank.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert!(cells.len() <= self.headers.len());
        self.rows.push(cells.iter().map(|c| clean(c)).collect());
    }

    /// The rendered table: header and rows, one line each, no trailing spaces.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - width(cell)));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `ms` since the epoch as RFC 3339 UTC to the second, e.g. `2026-03-01T09:30:00Z`.
pub fn utc(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A duration to the second (`1h 30m`), or in milliseconds below one second.
pub fn span(d: Duration) -> String {
    let d = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(d).to_string()
}

/// How far `ms` is from `now_ms`: `in 29m 10s`, `3m ago`, or `now`.
pub fn relative(ms: u64, now_ms: u64) -> String {
    let secs = Duration::from_secs(ms.abs_diff(now_ms) / 1000);
    if secs.is_zero() {
        "now".to_owned()
    } else if ms > now_ms {
        format!("in {}", humantime::format_duration(secs))
    } else {
        format!("{} ago", humantime::format_duration(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let mut t = Table::new(&["ID", "USER", "REASON"]);
        t.row(vec!["1".into(), "alice".into(), "incident 42".into()]);
        t.row(vec!["1234".into(), "bo".into(), String::new()]);
        assert_eq!(
            t.render(),
            "ID    USER   REASON\n\
             1     alice  incident 42\n\
             1234  bo\n"
        );
    }

    #[test]
    fn table_cells_cannot_smuggle_terminal_control() {
        let mut t = Table::new(&["REASON", "BY"]);
        t.row(vec![
            "ok\n\u{1b}[2Japproved\u{202e}".into(),
            "mallory\t".into(),
        ]);
        let text = t.render();
        assert_eq!(text.lines().count(), 2, "{text:?}");
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "{text:?}"
        );
        assert!(text.contains("ok ?[2Japproved?"), "{text:?}");
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["zoë".into(), "x".into()]);
        t.row(vec!["abcd".into(), "y".into()]);
        assert_eq!(t.render(), "A     B\nzoë   x\nabcd  y\n");
    }

    #[test]
    fn times_are_utc_and_relative_to_the_second() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_772_357_400_999), "2026-03-01T09:30:00Z");
        let now = 1_000_000_000;
        assert_eq!(relative(now + 90_500, now), "in 1m 30s");
        assert_eq!(relative(now - 180_000, now), "3m ago");
        assert_eq!(relative(now + 200, now), "now");
        assert_eq!(span(Duration::from_millis(5_400_250)), "1h 30m");
        assert_eq!(span(Duration::from_millis(250)), "250ms");
    }
}
