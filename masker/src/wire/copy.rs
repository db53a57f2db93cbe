//! `COPY … TO STDOUT` (and CopyBoth) data, masked as a stream.
//!
//! # Values straddle frames
//!
//! A CopyData frame may end anywhere in a value, so the masker keeps a carry between
//! frames, like a streaming matcher's roll buffer (aho-corasick's `util/buffer.rs`): the
//! stream is cut into **segments whose boundaries depend only on the bytes, never on
//! where frames end**, each segment is masked whole once complete, and the incomplete tail
//! is carried. Masking a stream split at any points therefore gives exactly the bytes
//! masking it in one frame gives.
//!
//! * Text and CSV: a segment is a line (PostgreSQL sends one CopyData per row, so the
//!   carry is usually empty and a frame in which nothing is found is forwarded as is). A
//!   line longer than [`CARRY`] + the longest span a detector reports is cut at
//!   [`CARRY`] bytes, moved back to the start of any span found across that point, so the
//!   carry stays bounded and no value the detectors find is split.
//! * Binary (and CopyBoth): values are raw bytes with length prefixes, so spans are
//!   overwritten in place (`same_length`) and segments are windows cut the same way as
//!   long lines; the stream is delayed by at most one window.
//!
//! # Under column rules
//!
//! COPY output carries no column names, so no column rule can be checked: under a profile
//! with column rules every value is masked (fail closed) and a notice says so. Text/CSV:
//! every line becomes `****` (delimiters are a COPY option the gateway does not see).
//! Binary: the tuple structure is followed and every field becomes NULL; a stream that
//! does not follow it is dropped.

use crate::Masker;

use super::frames;
use super::rows::Sink;

/// Longest text line (or binary window) masked as one segment, beyond the detectors'
/// longest span.
pub(crate) const CARRY: usize = 64 * 1024;

/// The binary COPY signature.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// One COPY out's masking state.
#[derive(Debug)]
pub(crate) struct CopyOut {
    mode: Mode,
    /// Bytes of an incomplete segment.
    pending: Vec<u8>,
    /// Longest segment: [`CARRY`] + the detectors' longest span.
    window: usize,
}

#[derive(Debug)]
enum Mode {
    /// Detectors over lines.
    Text,
    /// Detectors over windows, in place.
    Binary,
    /// Column rules, text: every line masked; whether a line has begun.
    MaskLines { mid_line: bool },
    /// Column rules, binary: every field NULL.
    NullFields(Tuples),
}

impl CopyOut {
    /// The state for a COPY in `binary` format, or `None` when the profile changes nothing
    /// in COPY data.
    pub(crate) fn new(masker: &Masker, binary: bool) -> Option<CopyOut> {
        let mode = if masker.has_column_rules() {
            if binary {
                Mode::NullFields(Tuples::Header([0; 19], 0))
            } else {
                Mode::MaskLines { mid_line: false }
            }
        } else if masker.detect {
            if binary {
                Mode::Binary
            } else {
                Mode::Text
            }
        } else {
            return None;
        };
        let span = masker.detectors_max_span();
        Some(CopyOut {
            mode,
            pending: Vec::new(),
            window: CARRY.saturating_add(span),
        })
    }

    /// One CopyData body. `false`: forward the original frame; `true`: send what was
    /// appended to `out` (possibly nothing, when everything is carried).
    pub(crate) fn data(
        &mut self,
        masker: &Masker,
        sink: &mut Sink<'_>,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let start = out.len();
        let at = frames::begin(out, b'd');
        match &mut self.mode {
            Mode::MaskLines { mid_line } => {
                let lines = memchr::memchr_iter(b'\n', body).count();
                for _ in 0..lines {
                    out.extend_from_slice(b"****\n");
                    sink.count(masker.unknown_rule());
                }
                let last = memchr::memrchr(b'\n', body).map_or(0, |i| i + 1);
                if last < body.len() {
                    *mid_line = true;
                } else if lines > 0 {
                    *mid_line = false;
                }
            }
            Mode::NullFields(t) => t.feed(masker, sink, body, out),
            Mode::Text | Mode::Binary => {
                if self.pending.is_empty() {
                    match self.direct(masker, sink, body, out) {
                        Direct::Unchanged => {
                            out.truncate(start);
                            return false;
                        }
                        Direct::Done => {}
                    }
                } else {
                    self.carried(masker, sink, body, out);
                }
            }
        }
        close(out, start, at);
        true
    }

    /// Ends the COPY: masks and appends what is carried. `true` if anything was appended.
    pub(crate) fn finish(
        &mut self,
        masker: &Masker,
        sink: &mut Sink<'_>,
        out: &mut Vec<u8>,
    ) -> bool {
        let start = out.len();
        let at = frames::begin(out, b'd');
        match &mut self.mode {
            Mode::MaskLines { mid_line } => {
                if *mid_line {
                    out.extend_from_slice(b"****");
                    sink.count(masker.unknown_rule());
                    *mid_line = false;
                }
            }
            Mode::NullFields(_) => {}
            Mode::Text | Mode::Binary => {
                let pending = std::mem::take(&mut self.pending);
                let same_length = matches!(self.mode, Mode::Binary);
                segment(masker, sink, &pending, same_length, out);
            }
        }
        close(out, start, at)
    }

    /// The next complete segment of `rest` (its length), or `None` if it needs more bytes.
    fn next_segment(&self, masker: &Masker, sink: &mut Sink<'_>, rest: &[u8]) -> Option<usize> {
        let window = rest.get(..self.window).unwrap_or(rest);
        if matches!(self.mode, Mode::Text) {
            if let Some(nl) = memchr::memchr(b'\n', window) {
                return Some(nl + 1);
            }
        }
        (rest.len() >= self.window).then(|| cut(masker, sink, window))
    }

    /// Masks the complete segments of `body` straight from it (nothing carried before).
    fn direct(
        &mut self,
        masker: &Masker,
        sink: &mut Sink<'_>,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Direct {
        let same_length = matches!(self.mode, Mode::Binary);
        let (mut pos, mut copied, mut changed) = (0usize, 0usize, false);
        while let Some(len) = body
            .get(pos..)
            .and_then(|rest| self.next_segment(masker, sink, rest))
        {
            let seg = body.get(pos..pos + len).unwrap_or_default();
            if sink.detect_tmp(masker, seg, same_length) {
                out.extend_from_slice(body.get(copied..pos).unwrap_or_default());
                out.extend_from_slice(sink.tmp);
                copied = pos + len;
                changed = true;
            }
            pos += len;
        }
        if !changed && pos == body.len() {
            return Direct::Unchanged;
        }
        out.extend_from_slice(body.get(copied..pos).unwrap_or_default());
        self.pending
            .extend_from_slice(body.get(pos..).unwrap_or_default());
        Direct::Done
    }

    /// Masks `body` after a carried tail: bytes move into the carry only up to the end of
    /// the segment it holds, so it never grows past one window.
    fn carried(&mut self, masker: &Masker, sink: &mut Sink<'_>, body: &[u8], out: &mut Vec<u8>) {
        let same_length = matches!(self.mode, Mode::Binary);
        let mut input = body;
        while !input.is_empty() {
            let room = self.window.saturating_sub(self.pending.len()).max(1);
            let room = input.get(..room).unwrap_or(input);
            let take = match self.mode {
                Mode::Text => memchr::memchr(b'\n', room).map_or(room.len(), |i| i + 1),
                _ => room.len(),
            };
            let (head, tail) = input.split_at(take.min(input.len()));
            self.pending.extend_from_slice(head);
            input = tail;
            let pending = std::mem::take(&mut self.pending);
            let pos = self.segments(masker, sink, &pending, same_length, out);
            self.pending = pending;
            self.pending.drain(..pos.min(self.pending.len()));
            if self.pending.is_empty() {
                // Back on a segment boundary: the rest needs no carry but its tail.
                let pos = self.segments(masker, sink, input, same_length, out);
                self.pending
                    .extend_from_slice(input.get(pos..).unwrap_or_default());
                return;
            }
        }
    }

    /// Appends every complete segment at the front of `data`, masked; returns how many
    /// bytes they cover (the rest is an unfinished segment).
    fn segments(
        &mut self,
        masker: &Masker,
        sink: &mut Sink<'_>,
        data: &[u8],
        same_length: bool,
        out: &mut Vec<u8>,
    ) -> usize {
        let mut pos = 0;
        while let Some(len) = data
            .get(pos..)
            .and_then(|rest| self.next_segment(masker, sink, rest))
        {
            segment(
                masker,
                sink,
                data.get(pos..pos + len).unwrap_or_default(),
                same_length,
                out,
            );
            pos += len;
        }
        pos
    }
}

enum Direct {
    /// Every segment complete and unchanged: forward the frame.
    Unchanged,
    /// `out` holds the frame's output so far; the tail is carried.
    Done,
}

/// Appends one segment, masked.
fn segment(masker: &Masker, sink: &mut Sink<'_>, seg: &[u8], same_length: bool, out: &mut Vec<u8>) {
    if !sink.detect(masker, seg, same_length, out) {
        out.extend_from_slice(seg);
    }
}

/// Where to cut a full window: one longest span before its end, moved back to the start
/// of a span the detectors find across that point.
fn cut(masker: &Masker, sink: &mut Sink<'_>, window: &[u8]) -> usize {
    let target = window
        .len()
        .saturating_sub(masker.detectors_max_span())
        .max(1);
    let mut at = target;
    if masker.detect {
        sink.spans.clear();
        masker.detectors.find(window, sink.spans);
        for s in sink.spans.iter() {
            if s.start < at && s.end > at {
                at = s.start;
            }
        }
    }
    if at == 0 {
        target
    } else {
        at
    }
}

/// Finishes the CopyData frame begun at `at`, or removes it if it is empty. `true` if a
/// frame was kept.
fn close(out: &mut Vec<u8>, start: usize, at: usize) -> bool {
    if out.len() == at + 4 {
        out.truncate(start);
        false
    } else {
        frames::end(out, at);
        true
    }
}

/// The notice sent after a CopyOutResponse under a profile with column rules.
pub(crate) fn notice(masker: &Masker, out: &mut Vec<u8>) {
    frames::notice(
        out,
        &format!(
            "sluice: COPY output carries no column names, so under masking profile \"{}\", \
             which has column rules, every value of it is masked",
            masker.name()
        ),
        Some("Use SELECT to read these rows: its columns can be masked one by one."),
    );
}

/// Following a binary COPY stream to NULL every field.
#[derive(Debug)]
enum Tuples {
    /// The 19-byte header (signature, flags, extension length): the bytes so far.
    Header([u8; 19], usize),
    /// Header extension bytes to copy.
    Extension { left: u32 },
    /// A tuple's field count (Int16; -1 ends the data).
    Count { buf: [u8; 2], got: usize },
    /// A field's length (Int32; -1 NULL).
    Length {
        buf: [u8; 4],
        got: usize,
        fields: u16,
    },
    /// A field's bytes to drop.
    Value { left: u32, fields: u16 },
    /// After the trailer.
    Done,
    /// Not a binary COPY stream: everything is dropped.
    Garbage,
}

impl Tuples {
    fn feed(&mut self, masker: &Masker, sink: &mut Sink<'_>, mut input: &[u8], out: &mut Vec<u8>) {
        while let Some((&b, rest)) = input.split_first() {
            input = rest;
            *self = match std::mem::replace(self, Tuples::Garbage) {
                Tuples::Header(mut buf, got) => {
                    if let Some(slot) = buf.get_mut(got) {
                        *slot = b;
                    }
                    header(buf, got + 1, out)
                }
                Tuples::Extension { left } => {
                    out.push(b);
                    match left.saturating_sub(1) {
                        0 => Tuples::Count {
                            buf: [0; 2],
                            got: 0,
                        },
                        left => Tuples::Extension { left },
                    }
                }
                Tuples::Count { mut buf, got } => {
                    if let Some(slot) = buf.get_mut(got) {
                        *slot = b;
                    }
                    if got + 1 < 2 {
                        Tuples::Count { buf, got: got + 1 }
                    } else {
                        match i16::from_be_bytes(buf) {
                            -1 => {
                                out.extend_from_slice(&buf);
                                Tuples::Done
                            }
                            0 => {
                                out.extend_from_slice(&buf);
                                Tuples::Count {
                                    buf: [0; 2],
                                    got: 0,
                                }
                            }
                            n if n > 0 => {
                                out.extend_from_slice(&buf);
                                Tuples::Length {
                                    buf: [0; 4],
                                    got: 0,
                                    fields: n.unsigned_abs(),
                                }
                            }
                            _ => Tuples::Garbage,
                        }
                    }
                }
                Tuples::Length {
                    mut buf,
                    got,
                    fields,
                } => {
                    if let Some(slot) = buf.get_mut(got) {
                        *slot = b;
                    }
                    if got + 1 < 4 {
                        Tuples::Length {
                            buf,
                            got: got + 1,
                            fields,
                        }
                    } else {
                        let len = i32::from_be_bytes(buf);
                        frames::null(out);
                        match len {
                            -1 => next_field(fields),
                            0 => {
                                sink.count(masker.unknown_rule());
                                next_field(fields)
                            }
                            n if n > 0 => {
                                sink.count(masker.unknown_rule());
                                Tuples::Value {
                                    left: n.unsigned_abs(),
                                    fields,
                                }
                            }
                            _ => Tuples::Garbage,
                        }
                    }
                }
                Tuples::Value { left, fields } => {
                    // This byte, and as much more of the value as this frame holds.
                    let more = left.saturating_sub(1);
                    let skip = usize::try_from(more).map_or(input.len(), |m| m.min(input.len()));
                    input = input.get(skip..).unwrap_or_default();
                    let left = more.saturating_sub(u32::try_from(skip).unwrap_or(u32::MAX));
                    if left == 0 {
                        next_field(fields)
                    } else {
                        Tuples::Value { left, fields }
                    }
                }
                Tuples::Done => Tuples::Done,
                Tuples::Garbage => {
                    input = &[];
                    Tuples::Garbage
                }
            };
        }
    }
}

/// After `got` header bytes: checked as they come, copied once complete.
fn header(buf: [u8; 19], got: usize, out: &mut Vec<u8>) -> Tuples {
    if got < buf.len() {
        let sig = buf.get(..got.min(SIGNATURE.len())).unwrap_or_default();
        if SIGNATURE.get(..sig.len()) != Some(sig) {
            return Tuples::Garbage;
        }
        return Tuples::Header(buf, got);
    }
    if buf.get(..SIGNATURE.len()) != Some(&SIGNATURE[..]) {
        return Tuples::Garbage;
    }
    out.extend_from_slice(&buf);
    let ext = buf
        .get(15..19)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes);
    if ext == 0 {
        Tuples::Count {
            buf: [0; 2],
            got: 0,
        }
    } else {
        Tuples::Extension { left: ext }
    }
}

fn next_field(fields: u16) -> Tuples {
    if fields <= 1 {
        Tuples::Count {
            buf: [0; 2],
            got: 0,
        }
    } else {
        Tuples::Length {
            buf: [0; 4],
            got: 0,
            fields: fields - 1,
        }
    }
}
