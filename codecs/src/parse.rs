//! nom building blocks shared by the message grammars.
//!
//! Parsers run over the body `&[u8]` of a frame that is already complete, so
//! they use nom's `complete` variants: running out of bytes is a malformed
//! message, never "need more". Sub-slices are turned into `Bytes` by slicing
//! the frame they came from (`Bytes::slice_ref`), which is why every grammar
//! takes the frame alongside its input.

use bytes::Bytes;
use nom::bytes::complete::{tag, take, take_till};
use nom::error::{context, ContextError, ErrorKind, ParseError};
use nom::number::complete::{be_i16, be_i32, be_u16, be_u32};
use nom::sequence::terminated;
use nom::{IResult, Parser};

use crate::DecodeError;

/// Parse error that remembers the most specific explanation given for it.
///
/// nom's stock errors carry an `ErrorKind` and the input; the proxy needs a
/// short protocol-level reason it can put in an `ErrorResponse` and a log
/// line, and must never echo the input (it may hold a password).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Why {
    what: &'static str,
    /// Set once a `context` has named the problem; outer contexts then keep
    /// the inner, more precise reason.
    pinned: bool,
}

impl Why {
    pub(crate) fn new(what: &'static str) -> Self {
        Why { what, pinned: true }
    }

    pub(crate) fn into_error(self, tag: u8) -> DecodeError {
        DecodeError::Malformed {
            tag,
            what: self.what,
        }
    }
}

impl<'a> ParseError<&'a [u8]> for Why {
    fn from_error_kind(_input: &'a [u8], kind: ErrorKind) -> Self {
        let what = match kind {
            ErrorKind::Eof => "message body ends early",
            _ => "body does not match the message format",
        };
        Why {
            what,
            pinned: false,
        }
    }

    fn append(_input: &'a [u8], _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

impl<'a> ContextError<&'a [u8]> for Why {
    fn add_context(_input: &'a [u8], ctx: &'static str, other: Self) -> Self {
        if other.pinned {
            other
        } else {
            Why::new(ctx)
        }
    }
}

pub(crate) type PResult<'a, O> = IResult<&'a [u8], O, Why>;

/// Fails the current parser with a specific reason.
pub(crate) fn fail<'a, O>(what: &'static str) -> PResult<'a, O> {
    Err(nom::Err::Error(Why::new(what)))
}

/// Runs a whole-body grammar and insists it consumes every byte, like rustls's
/// codec: trailing bytes in a fixed-format message mean the peer and we
/// disagree about the format, and guessing is how smuggling starts.
pub(crate) fn finish<'a, O>(
    tag: u8,
    input: &'a [u8],
    mut grammar: impl Parser<&'a [u8], Output = O, Error = Why>,
) -> Result<O, DecodeError> {
    match grammar.parse(input) {
        Ok(([], out)) => Ok(out),
        Ok((_, _)) => Err(Why::new("trailing bytes after the message").into_error(tag)),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(e.into_error(tag)),
        Err(nom::Err::Incomplete(_)) => Err(Why::new("message body ends early").into_error(tag)),
    }
}

/// A protocol `String`: bytes up to a NUL, which is consumed but not returned.
pub(crate) fn cstr(i: &[u8]) -> PResult<'_, &[u8]> {
    context(
        "string without NUL terminator",
        terminated(take_till(|b| b == 0), tag(&b"\0"[..])),
    )
    .parse(i)
}

pub(crate) fn i16_(i: &[u8]) -> PResult<'_, i16> {
    be_i16(i)
}

pub(crate) fn u16_(i: &[u8]) -> PResult<'_, u16> {
    be_u16(i)
}

pub(crate) fn i32_(i: &[u8]) -> PResult<'_, i32> {
    be_i32(i)
}

pub(crate) fn u32_(i: &[u8]) -> PResult<'_, u32> {
    be_u32(i)
}

/// A count-prefixed list. PostgreSQL reads the 16-bit counts as unsigned
/// (`pq_getmsgint(msg, 2)`), so up to 65 535 elements are legal. The count is
/// checked against the bytes present (`min_item` bytes each at least) before
/// nom reserves a `Vec` for it, so a lying count cannot make us allocate.
pub(crate) fn counted<'a, O>(
    i: &'a [u8],
    n: usize,
    min_item: usize,
    mut item: impl Parser<&'a [u8], Output = O, Error = Why>,
) -> PResult<'a, Vec<O>> {
    if n.saturating_mul(min_item) > i.len() {
        return fail("element count exceeds the message body");
    }
    let mut out = Vec::with_capacity(n);
    let mut rest = i;
    for _ in 0..n {
        let (r, o) = item.parse(rest)?;
        out.push(o);
        rest = r;
    }
    Ok((rest, out))
}

/// A 16-bit count followed by that many 16-bit values (format codes).
pub(crate) fn i16_list(i: &[u8]) -> PResult<'_, Vec<i16>> {
    let (i, n) = u16_(i)?;
    counted(i, n as usize, 2, i16_)
}

/// Int32 length then that many bytes, `-1` meaning NULL (Bind parameters,
/// FunctionCall arguments, DataRow columns, FunctionCallResponse).
pub(crate) fn nullable(i: &[u8]) -> PResult<'_, Option<&[u8]>> {
    let (i, len) = i32_(i)?;
    match len {
        -1 => Ok((i, None)),
        n if n < 0 => fail("negative value length other than -1"),
        n => {
            let (i, v) =
                context("value length exceeds the message body", take(n as usize)).parse(i)?;
            Ok((i, Some(v)))
        }
    }
}

/// Slices `sub` (which was parsed out of `frame`) as a `Bytes` sharing the
/// frame's allocation.
#[inline]
pub(crate) fn share(frame: &Bytes, sub: &[u8]) -> Bytes {
    frame.slice_ref(sub)
}
