//! Rewriting one `DataRow` with a plan: only the columns that change are rebuilt, the
//! rest is copied in runs, and a row in which nothing changes is not written at all (the
//! caller forwards the original).
//!
//! A row whose column count differs from its plan's, or whose lengths do not add up, is
//! one the gateway cannot place: it is rebuilt fail-closed, as well formed as the input
//! allows (every readable value masked, every unreadable one NULL, the declared column
//! count kept).

use crate::detect::Span;
use crate::plan::{Formats, Json, Op, Plan};
use crate::style;
use crate::{Masker, Style};

use super::frames::{self, Reader, MAX_FRAME};

/// The mutable state masking writes to: counters and reused buffers.
pub(crate) struct Sink<'a> {
    /// Masked values per rule (see `SessionMasker::counts`).
    pub(crate) counts: &'a mut [u64],
    pub(crate) spans: &'a mut Vec<Span>,
    pub(crate) tmp: &'a mut Vec<u8>,
}

impl Sink<'_> {
    pub(crate) fn count(&mut self, rule: u16) {
        if let Some(c) = self.counts.get_mut(usize::from(rule)) {
            *c += 1;
        }
    }

    /// Runs the detectors over `text`, appending the masked text to `out` if they found
    /// anything (see [`crate::detect::Detectors::mask_into`]).
    pub(crate) fn detect(
        &mut self,
        masker: &Masker,
        text: &[u8],
        same_length: bool,
        out: &mut Vec<u8>,
    ) -> bool {
        if !self.find(masker, text) {
            return false;
        }
        self.rewrite(masker, text, same_length, out);
        true
    }

    /// Runs the detectors over `text` into the reused buffer; `true` if they changed it
    /// (the result is then in `self.tmp`). The common case, nothing found, touches
    /// neither buffer beyond clearing the spans.
    pub(crate) fn detect_tmp(&mut self, masker: &Masker, text: &[u8], same_length: bool) -> bool {
        if !self.find(masker, text) {
            return false;
        }
        let mut tmp = std::mem::take(self.tmp);
        tmp.clear();
        self.rewrite(masker, text, same_length, &mut tmp);
        *self.tmp = tmp;
        true
    }

    /// The detectors' spans of `text` into `self.spans`; whether there are any.
    fn find(&mut self, masker: &Masker, text: &[u8]) -> bool {
        if !masker.detect || text.is_empty() {
            return false;
        }
        self.spans.clear();
        masker.detectors.find(text, self.spans);
        !self.spans.is_empty()
    }

    /// Appends `text` with `self.spans` masked, counting each per rule.
    fn rewrite(&mut self, masker: &Masker, text: &[u8], same_length: bool, out: &mut Vec<u8>) {
        let counts = self
            .counts
            .get_mut(..masker.first_column_rule)
            .unwrap_or_default();
        masker
            .detectors
            .rewrite(text, self.spans, &masker.key, same_length, out, counts);
    }
}

/// What a row is masked with.
pub(crate) enum RowPlan<'a> {
    /// The plan of its description.
    Known(&'a Plan),
    /// Its columns are unknown: every value is masked (or scanned, without column rules).
    Unknown(&'a Formats),
}

/// A NoticeResponse to send before the row.
pub(crate) enum Notice<'a> {
    /// A prepared frame (the plan's).
    Frame(&'a [u8]),
    /// "Columns unknown, everything masked".
    UnknownColumns,
}

/// The operation for column `i` of a row with unknown columns.
fn unknown_op(masker: &Masker, formats: &Formats, i: usize) -> Op {
    let binary = formats.binary(i);
    if masker.has_column_rules() {
        let rule = masker.unknown_rule();
        if binary {
            Op::Null { rule }
        } else {
            Op::Style {
                rule,
                style: Style::Redact,
                json: Json::No,
            }
        }
    } else if binary {
        Op::DetectSameLength
    } else {
        Op::Detect { skip: 0 }
    }
}

/// Masks one `DataRow` body. Returns `false` (nothing appended) when the original can be
/// forwarded, `true` when `out` got the notice (if any) and the rewritten row.
pub(crate) fn mask_row(
    masker: &Masker,
    sink: &mut Sink<'_>,
    plan: RowPlan<'_>,
    notice: Option<Notice<'_>>,
    body: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let start = out.len();
    match notice {
        Some(Notice::Frame(f)) => out.extend_from_slice(f),
        Some(Notice::UnknownColumns) => unknown_notice(out),
        None => {}
    }
    let Some(count) = well_formed(body) else {
        malformed(masker, sink, body, out);
        return true;
    };
    let all_binary = Formats::All(true);
    let op = |i: usize| -> Op {
        match &plan {
            RowPlan::Known(p) if p.ops.len() == usize::from(count) => {
                p.ops.get(i).copied().unwrap_or(Op::Pass)
            }
            // A row that does not fit its description: fail closed.
            RowPlan::Known(_) => unknown_op(masker, &all_binary, i),
            RowPlan::Unknown(f) => unknown_op(masker, f, i),
        }
    };
    let frame_start = out.len();
    let mut at: Option<usize> = None;
    let mut copied = 0usize;
    let mut r = Reader::new(body);
    let _ = r.u16();
    for i in 0..usize::from(count) {
        let col_start = body.len() - r.rest().len();
        let Some(value) = r.nullable() else {
            break;
        };
        let col_end = body.len() - r.rest().len();
        let Some(value) = value else {
            continue;
        };
        let op = op(i);
        // Starts the rewritten frame if needed and copies the unchanged run before this
        // column.
        let mut open = |out: &mut Vec<u8>, copied: &mut usize| {
            if at.is_none() {
                at = Some(frames::begin(out, b'D'));
            }
            out.extend_from_slice(body.get(*copied..col_start).unwrap_or_default());
            *copied = col_end;
        };
        match op {
            Op::Pass => {}
            Op::Null { rule } => {
                open(out, &mut copied);
                frames::null(out);
                sink.count(rule);
            }
            Op::Style { rule, style, json } => {
                open(out, &mut copied);
                let v = frames::begin_value(out);
                styled(masker, sink, style, json, value, out);
                frames::end_value(out, v);
                sink.count(rule);
            }
            Op::Detect { skip } => {
                let (head, text) = value
                    .split_at_checked(usize::from(skip))
                    .unwrap_or((&[], value));
                if sink.detect_tmp(masker, text, false) {
                    open(out, &mut copied);
                    let v = frames::begin_value(out);
                    out.extend_from_slice(head);
                    out.extend_from_slice(sink.tmp);
                    frames::end_value(out, v);
                }
            }
            Op::DetectSameLength => {
                if sink.detect_tmp(masker, value, true) {
                    open(out, &mut copied);
                    frames::value(out, sink.tmp);
                }
            }
        }
    }
    let Some(at) = at else {
        if out.len() == start {
            return false;
        }
        // A notice was written: the original row must follow it.
        frames::frame(out, b'D', body);
        return true;
    };
    out.extend_from_slice(body.get(copied..).unwrap_or_default());
    frames::end(out, at);
    if out.len() - frame_start > MAX_FRAME {
        // Masking made the row too large to send: send it with every value NULL.
        out.truncate(frame_start);
        let at = frames::begin(out, b'D');
        out.extend_from_slice(&count.to_be_bytes());
        for _ in 0..count {
            frames::null(out);
        }
        frames::end(out, at);
    }
    true
}

/// The column count, if the body's lengths add up exactly.
fn well_formed(body: &[u8]) -> Option<u16> {
    let mut r = Reader::new(body);
    let count = r.u16()?;
    for _ in 0..count {
        r.nullable()?;
    }
    r.is_empty().then_some(count)
}

/// Rebuilds a row whose lengths do not add up: the declared number of columns, each value
/// that can be read masked fail-closed (as binary: NULL with column rules), the rest NULL.
fn malformed(masker: &Masker, sink: &mut Sink<'_>, body: &[u8], out: &mut Vec<u8>) {
    let mut r = Reader::new(body);
    let count = r.u16().unwrap_or(0);
    let at = frames::begin(out, b'D');
    out.extend_from_slice(&count.to_be_bytes());
    let binary = Formats::All(true);
    let mut readable = true;
    for i in 0..usize::from(count) {
        let value = if readable { r.nullable() } else { None };
        match value {
            Some(Some(v)) => match unknown_op(masker, &binary, i) {
                Op::Null { rule } => {
                    frames::null(out);
                    sink.count(rule);
                }
                _ => {
                    if sink.detect_tmp(masker, v, true) {
                        frames::value(out, sink.tmp);
                    } else {
                        frames::value(out, v);
                    }
                }
            },
            Some(None) => frames::null(out),
            None => {
                readable = false;
                frames::null(out);
            }
        }
    }
    frames::end(out, at);
}

/// Appends `value` masked whole in `style`, kept a JSON document for `json` columns.
fn styled(
    masker: &Masker,
    sink: &mut Sink<'_>,
    style: Style,
    json: Json,
    value: &[u8],
    out: &mut Vec<u8>,
) {
    match json {
        Json::No => style::mask_value(style, None, value, &masker.key, out),
        Json::Text | Json::Binary => {
            let text = if json == Json::Binary {
                out.push(1);
                value.get(1..).unwrap_or_default()
            } else {
                value
            };
            sink.tmp.clear();
            style::mask_value(style, None, text, &masker.key, sink.tmp);
            json_string(sink.tmp, out);
        }
    }
}

/// Appends `s` as a JSON string literal.
fn json_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
                out.push(HEX.get(usize::from(b & 15)).copied().unwrap_or(b'0'));
            }
            b => out.push(b),
        }
    }
    out.push(b'"');
}

/// The notice sent before the first row of a result whose columns the gateway never saw.
pub(crate) fn unknown_notice(out: &mut Vec<u8>) {
    frames::notice(
        out,
        "sluice: the gateway could not see the columns of this result, so every value in it \
         is masked",
        Some(
            "Describe the statement (or the portal) before executing it, so the gateway \
             knows its columns and can apply the masking rules column by column.",
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings() {
        let mut out = Vec::new();
        json_string(b"a\"b\\c\n", &mut out);
        assert_eq!(out, b"\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn well_formed_rows() {
        assert_eq!(well_formed(b"\0\0"), Some(0));
        assert_eq!(well_formed(b"\0\x01\xff\xff\xff\xff"), Some(1));
        assert_eq!(well_formed(b"\0\x01\0\0\0\x01x"), Some(1));
        assert_eq!(well_formed(b"\0\x01\0\0\0\x02x"), None);
        assert_eq!(well_formed(b"\0\x01\0\0\0\x01xy"), None);
        assert_eq!(well_formed(b"\0"), None);
        assert_eq!(well_formed(b"\0\x01\xff\xff\xff\xfe"), None);
    }
}
