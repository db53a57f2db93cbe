//! Fuzz body for the session masker, kept in the library so `masker/fuzz` is a one-line
//! wrapper and the same checks run from ordinary tests.
//!
//! [`wire_stream`] reads its input as a profile choice and then a sequence of frames,
//! client or backend, each either built well formed from a few parameter bytes
//! (descriptions, rows, `Bind`s with result formats, errors with key details, COPY data…)
//! so the fuzzer reaches deep protocol states quickly, or taken raw (any tag, any body).
//! Every frame goes to two sessions, the second receiving each CopyData split at a point
//! the input chooses. It asserts:
//!
//! * nothing panics;
//! * `backend_frame` returning `false` appended nothing, and what it appended when
//!   returning `true` is whole frames whose lengths add up, every `DataRow` among them
//!   with column lengths that add up to its body;
//! * under a profile whose rule names every column (`column = "*"`), no `DataRow` the
//!   client receives, rewritten or forwarded, carries a value other than NULL or a mask;
//! * splitting CopyData frames changes neither the COPY bytes the client receives, nor
//!   any other frame, nor the counts.

use std::sync::Arc;

use crate::{CatalogColumn, Masker, SessionMasker};

/// Number of profiles the fuzzer chooses from (see [`profile`]).
const PROFILES: usize = 4;

/// The profile whose rule names every column.
const EVERYTHING: usize = 2;

const NAMES: [&[u8]; 6] = [b"", b"a", b"b", b"s1", b"email", b"doc"];
const COLUMNS: [&str; 6] = ["email", "id", "note", "ssn", "doc", "x"];
const TYPES: [u32; 10] = [23, 25, 20, 3802, 114, 17, 1009, 1043, 16, 99_999];
const TABLES: [u32; 3] = [0, 16_385, 999];
const VALUES: [&[u8]; 8] = [
    b"ann@example.com",
    b"4111 1111 1111 1111",
    b"078-05-1120",
    b"plain text",
    b"",
    b"{\"email\":\"bob@example.org\"}",
    b"Key (email)=(x)",
    b"TK-1234 for Ann Smith",
];
const QUERIES: [&[u8]; 5] = [
    b"SELECT 1",
    b"PREPARE s1 AS SELECT email FROM c",
    b"DEALLOCATE ALL",
    b"DECLARE a CURSOR FOR SELECT 1",
    b"COPY t TO STDOUT",
];

/// Reads fuzz input, yielding zeros once it runs out.
struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    fn u8(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.rest.len());
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        head
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> Option<T> {
        let i = usize::from(self.u8()) % from.len().max(1);
        from.get(i).copied()
    }

    /// A value: from the list, from the input, or NULL.
    fn value(&mut self) -> Option<Vec<u8>> {
        match self.u8() % 4 {
            0 => None,
            1 => {
                let n = usize::from(self.u8() % 32);
                Some(self.take(n).to_vec())
            }
            _ => self.pick(&VALUES).map(<[u8]>::to_vec),
        }
    }
}

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend(s.iter().copied().filter(|&b| b != 0));
    out.push(0);
}

fn nullable(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(v) => {
            out.extend_from_slice(&i32::try_from(v.len()).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(v);
        }
    }
}

/// One frame from the input: `(backend, tag, body, split point)`.
fn frame(input: &mut Input<'_>) -> (bool, u8, Vec<u8>, usize) {
    let kind = input.u8();
    let split = usize::from(input.u8());
    let mut b = Vec::new();
    let (backend, tag) = match kind % 24 {
        0 => {
            let sql = input.pick(&QUERIES).unwrap_or_default();
            cstr(&mut b, sql);
            (false, b'Q')
        }
        1 => {
            cstr(&mut b, input.pick(&NAMES).unwrap_or_default());
            cstr(&mut b, input.pick(&QUERIES).unwrap_or_default());
            b.extend_from_slice(&0u16.to_be_bytes());
            (false, b'P')
        }
        2 => {
            cstr(&mut b, input.pick(&NAMES).unwrap_or_default());
            cstr(&mut b, input.pick(&NAMES).unwrap_or_default());
            b.extend_from_slice(&0u16.to_be_bytes());
            b.extend_from_slice(&0u16.to_be_bytes());
            let n = input.u8() % 4;
            b.extend_from_slice(&u16::from(n).to_be_bytes());
            for _ in 0..n {
                b.extend_from_slice(&i16::from(input.u8() % 2).to_be_bytes());
            }
            (false, b'B')
        }
        3 => {
            b.push(if input.u8() % 2 == 0 { b'S' } else { b'P' });
            cstr(&mut b, input.pick(&NAMES).unwrap_or_default());
            (false, b'D')
        }
        4 => {
            cstr(&mut b, input.pick(&NAMES).unwrap_or_default());
            b.extend_from_slice(&0i32.to_be_bytes());
            (false, b'E')
        }
        5 => {
            b.push(if input.u8() % 2 == 0 { b'S' } else { b'P' });
            cstr(&mut b, input.pick(&NAMES).unwrap_or_default());
            (false, b'C')
        }
        6 => (false, b'S'),
        7 => {
            b.extend_from_slice(&[0, 0, 4, 210, 0, 0, 0, 0, 0]);
            b.push(input.u8() % 2);
            (false, b'F')
        }
        8 => {
            let n = input.u8() % 4;
            b.extend_from_slice(&u16::from(n).to_be_bytes());
            for _ in 0..n {
                cstr(&mut b, input.pick(&COLUMNS).unwrap_or_default().as_bytes());
                b.extend_from_slice(&input.pick(&TABLES).unwrap_or(0).to_be_bytes());
                b.extend_from_slice(&i16::from(input.u8() % 4).to_be_bytes());
                b.extend_from_slice(&input.pick(&TYPES).unwrap_or(25).to_be_bytes());
                b.extend_from_slice(&(-1i16).to_be_bytes());
                b.extend_from_slice(&(-1i32).to_be_bytes());
                b.extend_from_slice(&i16::from(input.u8() % 2).to_be_bytes());
            }
            (true, b'T')
        }
        9 | 10 => {
            let n = input.u8() % 4;
            b.extend_from_slice(&u16::from(n).to_be_bytes());
            for _ in 0..n {
                nullable(&mut b, input.value().as_deref());
            }
            (true, b'D')
        }
        11 => {
            for _ in 0..input.u8() % 4 {
                let code = input.pick(b"SCMDHWqstn").unwrap_or(b'M');
                b.push(code);
                let v = input.value().unwrap_or_default();
                if code == b'D' && v.is_empty() {
                    cstr(
                        &mut b,
                        b"Key (email, id)=(ann@example.com, 1) already exists.",
                    );
                } else {
                    cstr(&mut b, &v);
                }
            }
            b.push(0);
            (true, if input.u8() % 2 == 0 { b'E' } else { b'N' })
        }
        12 => {
            b.push(input.u8() % 2);
            b.extend_from_slice(&1u16.to_be_bytes());
            b.extend_from_slice(&0i16.to_be_bytes());
            (true, if input.u8() % 8 == 0 { b'W' } else { b'H' })
        }
        13 | 14 => {
            for _ in 0..input.u8() % 3 {
                b.extend_from_slice(&input.value().unwrap_or_default());
                b.push(if input.u8() % 2 == 0 { b'\n' } else { b'\t' });
            }
            (true, b'd')
        }
        15 => {
            // Binary COPY pieces.
            match input.u8() % 3 {
                0 => b.extend_from_slice(b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0"),
                1 => {
                    b.extend_from_slice(&1i16.to_be_bytes());
                    nullable(&mut b, input.value().as_deref());
                }
                _ => b.extend_from_slice(&(-1i16).to_be_bytes()),
            }
            (true, b'd')
        }
        16 => {
            let tag = input.pick(b"cCZ123tnsIG").unwrap_or(b'Z');
            match tag {
                b'C' => cstr(&mut b, b"SELECT 1"),
                b'Z' => b.push(b'I'),
                b't' => b.extend_from_slice(&0u16.to_be_bytes()),
                b'G' => b.extend_from_slice(&[0, 0, 0]),
                _ => {}
            }
            (true, tag)
        }
        17 => {
            nullable(&mut b, input.value().as_deref());
            (true, b'V')
        }
        18 => {
            b.extend_from_slice(&7u32.to_be_bytes());
            cstr(&mut b, b"chan");
            cstr(&mut b, &input.value().unwrap_or_default());
            (true, b'A')
        }
        19 => (true, b'Z'),
        _ => {
            // Raw: any tag, any body.
            let backend = input.u8() % 2 == 0;
            let tag = input.u8();
            let n = usize::from(input.u8());
            b.extend_from_slice(input.take(n));
            (backend, tag)
        }
    };
    if tag == b'Z' && b.is_empty() {
        b.push(b'I');
    }
    (backend, tag, b, split)
}

/// What the client received from one session.
#[derive(Default)]
struct Received {
    /// COPY bytes, concatenated.
    copy: Vec<u8>,
    /// Every other frame.
    frames: Vec<(u8, Vec<u8>)>,
}

/// Feeds one backend frame, checks what came out, and records it.
fn backend(sm: &mut SessionMasker, tag: u8, body: &[u8], everything: bool, got: &mut Received) {
    if !SessionMasker::inspects_backend(tag) {
        return;
    }
    let mut out = Vec::new();
    let rewritten = sm.backend_frame(tag, body, &mut out);
    let frames = if rewritten {
        split_frames(&out)
    } else {
        assert!(out.is_empty(), "backend_frame returned false after writing");
        vec![(tag, body.to_vec())]
    };
    for (tag, body) in frames {
        if tag == b'D' {
            match row_values(&body) {
                Some(values) => {
                    if everything {
                        for v in values.into_iter().flatten() {
                            assert!(is_mask(v), "a value of a named column went through: {v:?}");
                        }
                    }
                }
                None => {
                    assert!(!rewritten, "a rewritten DataRow's lengths do not add up");
                    if everything {
                        assert!(
                            body.get(..2) == Some(&[0, 0]),
                            "an unreadable row with columns was forwarded"
                        );
                    }
                }
            }
        }
        if tag == b'd' {
            got.copy.extend_from_slice(&body);
        } else {
            got.frames.push((tag, body));
        }
    }
}

fn is_mask(v: &[u8]) -> bool {
    matches!(v, b"****" | b"\"****\"" | b"\x01\"****\"")
}

/// Splits output into frames, asserting every length is consistent.
fn split_frames(mut out: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while let Some((&tag, rest)) = out.split_first() {
        let len = rest
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .expect("output ends inside a frame header");
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        assert!(len >= 4, "frame length below 4");
        let body = rest.get(4..len).expect("output frame overruns the output");
        frames.push((tag, body.to_vec()));
        out = rest.get(len..).unwrap_or_default();
    }
    frames
}

/// A DataRow's values, if its lengths add up.
fn row_values(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let (count, mut rest) = body.split_at_checked(2)?;
    let count = u16::from_be_bytes(count.try_into().ok()?);
    let mut values = Vec::new();
    for _ in 0..count {
        let (len, tail) = rest.split_at_checked(4)?;
        let len = i32::from_be_bytes(len.try_into().ok()?);
        if len == -1 {
            values.push(None);
            rest = tail;
            continue;
        }
        let (v, tail) = tail.split_at_checked(usize::try_from(len).ok()?)?;
        values.push(Some(v));
        rest = tail;
    }
    rest.is_empty().then_some(values)
}

/// The fuzz profiles, compiled (compiling detectors takes far longer than a run, so a
/// fuzz target compiles them once and passes them to [`wire_stream_with`]).
pub fn maskers() -> Vec<Arc<Masker>> {
    (0..PROFILES)
        .map(
            |i| match Masker::compile("fuzz", &profiles::profile(i), b"fuzz key") {
                Ok(m) => Arc::new(m),
                Err(e) => panic!("fuzz profile {i} does not compile: {e}"),
            },
        )
        .collect()
}

fn session(masker: &Arc<Masker>) -> SessionMasker {
    let mut sm = SessionMasker::new(masker.clone());
    let column = |attnum, column: &str| CatalogColumn {
        table_oid: 16_385,
        attnum,
        schema: "public".into(),
        table: "customers".into(),
        column: column.into(),
    };
    sm.set_catalog(vec![column(1, "ssn"), column(2, "email")]);
    sm
}

/// Fuzz body: `data` as a profile choice and a stream of client and backend frames.
pub fn wire_stream(data: &[u8]) {
    wire_stream_with(&maskers(), data);
}

/// [`wire_stream`] with the profiles compiled once by the caller ([`maskers`]).
pub fn wire_stream_with(maskers: &[Arc<Masker>], data: &[u8]) {
    let mut input = Input { rest: data };
    let profile = usize::from(input.u8()) % PROFILES;
    let everything = profile == EVERYTHING;
    let Some(masker) = maskers.get(profile) else {
        return;
    };
    let (mut whole, mut split) = (session(masker), session(masker));
    let (mut got_whole, mut got_split) = (Received::default(), Received::default());
    let mut frames = 0;
    while !input.rest.is_empty() && frames < 512 {
        frames += 1;
        let (to_backend, tag, body, at) = frame(&mut input);
        if !to_backend {
            if SessionMasker::inspects_client(tag) {
                whole.client_frame(tag, &body);
                split.client_frame(tag, &body);
            }
            continue;
        }
        backend(&mut whole, tag, &body, everything, &mut got_whole);
        if tag == b'd' {
            let (a, b) = body.split_at(at.min(body.len()));
            backend(&mut split, tag, a, everything, &mut got_split);
            backend(&mut split, tag, b, everything, &mut got_split);
        } else {
            backend(&mut split, tag, &body, everything, &mut got_split);
        }
    }
    // The end of the stream ends any COPY.
    backend(&mut whole, b'Z', b"I", everything, &mut got_whole);
    backend(&mut split, b'Z', b"I", everything, &mut got_split);
    assert!(
        got_whole.copy == got_split.copy,
        "splitting CopyData changed the COPY bytes"
    );
    assert!(
        got_whole.frames == got_split.frames,
        "splitting CopyData changed other frames"
    );
    let counts = |sm: &SessionMasker| -> Vec<(String, u64)> {
        sm.counts().map(|(n, c)| (n.to_owned(), c)).collect()
    };
    assert_eq!(
        counts(&whole),
        counts(&split),
        "splitting CopyData changed the counts"
    );
}

mod profiles {
    //! The fuzz profiles (built as values: the library does not depend on a TOML parser).

    use crate::{ColumnRule, LiteralRule, PatternRule, ProfileConfig, Style};

    fn rule(
        column: Option<&str>,
        table: Option<&str>,
        types: &[&str],
        style: Option<Style>,
    ) -> ColumnRule {
        ColumnRule {
            name: None,
            column: column.map(Into::into),
            table: table.map(Into::into),
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            style,
        }
    }

    /// 0: column rules only (name, table, type, styles); 1: every detector; 2: one rule
    /// naming every column; 3: detectors, a column rule, literals and a pattern.
    pub(super) fn profile(i: usize) -> ProfileConfig {
        let mut p = ProfileConfig {
            detectors: Some(Vec::new()),
            style: None,
            detector_styles: Default::default(),
            phone_regions: None,
            columns: Vec::new(),
            literals: Vec::new(),
            patterns: Vec::new(),
        };
        match i {
            0 => {
                p.columns = vec![
                    rule(Some("email"), None, &[], None),
                    rule(Some("ssn"), Some("public.cust*"), &[], Some(Style::Partial)),
                    rule(None, None, &["bytea", "int8"], Some(Style::Null)),
                    rule(Some("doc"), None, &[], Some(Style::Hash)),
                ];
            }
            1 => p.detectors = None,
            2 => {
                let mut r = rule(Some("*"), None, &[], None);
                r.name = Some("everything".into());
                p.columns.push(r);
            }
            _ => {
                p.detectors = None;
                p.columns = vec![rule(
                    Some("email"),
                    None,
                    &[],
                    Some(Style::FormatPreserving),
                )];
                p.literals = vec![LiteralRule {
                    name: "names".into(),
                    values: vec!["Ann Smith".into(), "secret".into()],
                    case_insensitive: false,
                    style: None,
                }];
                p.patterns = vec![PatternRule {
                    name: "ticket".into(),
                    regex: "TK-[0-9]{4}".into(),
                    style: None,
                }];
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_inputs() {
        let maskers = maskers();
        for data in [
            &b""[..],
            &[0, 8, 0, 1, 2, 3, 9, 0, 1, 1, 1, 1][..],
            &[2, 0, 0, 0, 1, 8, 0, 3, 0, 1, 1, 0, 9, 0, 2, 2, 2, 2][..],
            &[3, 12, 0, 0, 13, 5, 2, 2, 1, 1, 16, 0, 0][..],
            &[0xff; 64][..],
        ] {
            wire_stream_with(&maskers, data);
        }
    }
}
