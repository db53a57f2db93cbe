//! Values the server sends outside rows: error and notice fields, notification payloads,
//! function-call results.
//!
//! Error and notice fields that can quote data (`M` message, `D` detail, `H` hint, `W`
//! context, `q` internal query) go through the detectors. A detail that quotes key values
//! (`Key (card_number)=(…) already exists.`) has its values masked whole when a column it
//! names could be one a rule names, and a `Failing row contains (…)` detail (which quotes a
//! whole row, columns unnamed) has its values masked whole under any profile with column
//! rules. Severity, SQLSTATE, position and the schema/table/column/type/constraint name
//! fields are left alone.
//!
//! A frame that does not read as its type is masked in place (detectors, same length), so
//! its length stays right and nothing it quotes goes through unscanned.

use memchr::memmem;

use crate::Masker;

use super::frames::{self, Reader};
use super::rows::Sink;

/// Masks an ErrorResponse or NoticeResponse (`tag`). `false`: forward the original.
pub(crate) fn report(
    masker: &Masker,
    sink: &mut Sink<'_>,
    tag: u8,
    body: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    // First pass: check the shape and find the table the error is about.
    let mut r = Reader::new(body);
    let (mut schema, mut table) = (None, None);
    loop {
        match r.u8() {
            Some(0) if r.is_empty() => break,
            Some(0) | None => return in_place(masker, sink, tag, body, out),
            Some(code) => {
                let Some(value) = r.cstr() else {
                    return in_place(masker, sink, tag, body, out);
                };
                match code {
                    b's' => schema = Some(value),
                    b't' => table = Some(value),
                    _ => {}
                }
            }
        }
    }
    let qualified = match (schema, table) {
        (Some(s), Some(t)) => Some(format!(
            "{}.{}",
            String::from_utf8_lossy(s),
            String::from_utf8_lossy(t)
        )),
        _ => None,
    };
    let start = out.len();
    let at = frames::begin(out, tag);
    let mut changed = false;
    let mut keyed = Vec::new();
    let mut r = Reader::new(body);
    while let Some(code) = r.u8() {
        if code == 0 {
            break;
        }
        let value = r.cstr().unwrap_or_default();
        out.push(code);
        if !matches!(code, b'M' | b'D' | b'H' | b'W' | b'q') {
            frames::cstr(out, value);
            continue;
        }
        let mut text = value;
        if code == b'D' && masker.has_column_rules() {
            keyed.clear();
            if key_values(masker, sink, value, qualified.as_deref(), &mut keyed) {
                changed = true;
                text = &keyed;
            }
        }
        if sink.detect_tmp(masker, text, false) {
            changed = true;
            frames::cstr(out, sink.tmp);
        } else {
            frames::cstr(out, text);
        }
    }
    out.push(0);
    frames::end(out, at);
    if !changed {
        out.truncate(start);
    }
    changed
}

/// Masks the values a detail quotes when a column it names may be one a rule names:
/// writes the new detail to `out` and returns `true`.
fn key_values(
    masker: &Masker,
    sink: &mut Sink<'_>,
    detail: &[u8],
    table: Option<&str>,
    out: &mut Vec<u8>,
) -> bool {
    // `Key (a, b)=(1, x) already exists.`, `… is not present in table "t".`,
    // `Key (c)=(v) conflicts with existing key (c)=(w).`: names before `)=(`, values from
    // there to the last `)`.
    if let Some(eq) = memmem::find(detail, b")=(") {
        let names = detail.get(..eq).unwrap_or_default();
        // The `(` that opens the names: parentheses nest in index expressions.
        let mut depth = 0usize;
        let mut open = None;
        for (i, &b) in names.iter().enumerate().rev() {
            match b {
                b')' => depth += 1,
                b'(' if depth == 0 => {
                    open = Some(i);
                    break;
                }
                b'(' => depth -= 1,
                _ => {}
            }
        }
        let names = open.and_then(|o| names.get(o + 1..)).unwrap_or(names);
        let values_start = eq + 3;
        let values_end = memchr::memrchr(b')', detail).filter(|&e| e >= values_start);
        let (Some(values_end), Some(rule)) = (values_end, named_rule(masker, names, table)) else {
            return false;
        };
        sink.count(rule);
        out.extend_from_slice(detail.get(..values_start).unwrap_or_default());
        out.extend_from_slice(b"****");
        out.extend_from_slice(detail.get(values_end..).unwrap_or_default());
        return true;
    }
    // `Failing row contains (…)`: a whole row, columns unnamed.
    const FAILING_ROW: &[u8] = b"Failing row contains (";
    if let Some(p) = memmem::find(detail, FAILING_ROW) {
        let values_start = p + FAILING_ROW.len();
        if let Some(values_end) = memchr::memrchr(b')', detail).filter(|&e| e >= values_start) {
            sink.count(masker.unknown_rule());
            out.extend_from_slice(detail.get(..values_start).unwrap_or_default());
            out.extend_from_slice(b"****");
            out.extend_from_slice(detail.get(values_end..).unwrap_or_default());
            return true;
        }
    }
    false
}

/// The first rule naming an identifier in a key's column list (plain or quoted names,
/// or the identifiers inside an index expression).
fn named_rule(masker: &Masker, names: &[u8], table: Option<&str>) -> Option<u16> {
    let mut i = 0;
    while i < names.len() {
        let b = names.get(i).copied().unwrap_or(0);
        if b == b'"' {
            // A quoted identifier, `""` for a quote inside.
            let mut ident = Vec::new();
            i += 1;
            while let Some(&c) = names.get(i) {
                i += 1;
                if c == b'"' {
                    if names.get(i) == Some(&b'"') {
                        ident.push(b'"');
                        i += 1;
                        continue;
                    }
                    break;
                }
                ident.push(c);
            }
            if let Some(rule) = masker.names_error_column(&String::from_utf8_lossy(&ident), table) {
                return Some(rule);
            }
        } else if is_ident(b) {
            let start = i;
            while names.get(i).is_some_and(|&c| is_ident(c)) {
                i += 1;
            }
            let ident = names.get(start..i).unwrap_or_default();
            if let Some(rule) = masker.names_error_column(&String::from_utf8_lossy(ident), table) {
                return Some(rule);
            }
        } else {
            i += 1;
        }
    }
    None
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Masks a NotificationResponse's payload. `false`: forward the original.
pub(crate) fn notification(
    masker: &Masker,
    sink: &mut Sink<'_>,
    body: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let mut r = Reader::new(body);
    let (Some(pid), Some(channel), Some(payload)) = (r.u32(), r.cstr(), r.cstr()) else {
        return in_place(masker, sink, b'A', body, out);
    };
    if !r.is_empty() {
        return in_place(masker, sink, b'A', body, out);
    }
    if !sink.detect_tmp(masker, payload, false) {
        return false;
    }
    let at = frames::begin(out, b'A');
    out.extend_from_slice(&pid.to_be_bytes());
    frames::cstr(out, channel);
    frames::cstr(out, sink.tmp);
    frames::end(out, at);
    true
}

/// Masks a FunctionCallResponse's value (`binary`: in binary format, masked in place).
/// `false`: forward the original.
pub(crate) fn function_result(
    masker: &Masker,
    sink: &mut Sink<'_>,
    binary: bool,
    body: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let mut r = Reader::new(body);
    let Some(value) = r.nullable() else {
        return in_place(masker, sink, b'V', body, out);
    };
    if !r.is_empty() {
        return in_place(masker, sink, b'V', body, out);
    }
    let Some(value) = value else {
        return false;
    };
    if !sink.detect_tmp(masker, value, binary) {
        return false;
    }
    let at = frames::begin(out, b'V');
    frames::value(out, sink.tmp);
    frames::end(out, at);
    true
}

/// A frame that does not read as its type: the detectors over its whole body, same
/// length, so its length stays right.
fn in_place(masker: &Masker, sink: &mut Sink<'_>, tag: u8, body: &[u8], out: &mut Vec<u8>) -> bool {
    if !sink.detect_tmp(masker, body, true) {
        return false;
    }
    frames::frame(out, tag, sink.tmp);
    true
}
