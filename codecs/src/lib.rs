//! PostgreSQL v3 wire protocol codecs: incremental decoders and exact encoders
//! for every startup, frontend and backend message.
//!
//! # What this crate owns
//!
//! The byte-level shape of the protocol and nothing else: where a frame starts
//! and ends ([`peek_header`]), what each message type contains
//! ([`startup::StartupPacket`], [`frontend::FrontendMessage`],
//! [`backend::BackendMessage`]), and how to write each of them back. Whether a
//! message is *allowed* (authentication state, policy, masking) is decided by
//! the callers; this crate only says whether it is well formed.
//!
//! # What it must never do
//!
//! - **No I/O, no clocks, no global state.** Bytes in, values (or bytes) out.
//!   The proxy owns sockets; this crate is driven by it and by the fuzzer alike
//!   (the sans-I/O split of design.md §2).
//! - **No allocation before the length check.** A peer controls the 4-byte
//!   length, so [`Limits`] is checked against it while only the header is
//!   buffered; a header claiming 2 GiB is [`DecodeError::TooLarge`] with five
//!   bytes in hand. Inside a frame, element counts are checked against the
//!   bytes actually present before a `Vec` is reserved for them.
//! - **No panics on any input.** Every input-driven path returns
//!   [`DecodeError`]; there is no `unwrap`, `expect` or slice indexing whose
//!   bounds come from the wire. The fuzz bodies in [`fuzzing`] hold us to it.
//!
//! # Why hand-written, with nom, over `Bytes`
//!
//! This is the hottest code in the gateway: every byte a client or server
//! sends goes through it. A generic serialization framework would copy each
//! string field into an owned buffer; here a frame is split off the receive
//! buffer once (`BytesMut::split_to` + `freeze`) and every string, value and
//! column is a `Bytes` slice of that frame, so a message that nobody rewrites
//! is forwarded without a copy (design.md §3, "zero copy when nothing
//! changes"). `nom` combinators over `&[u8]` keep each message's grammar short
//! and checkable against the protocol documentation, and are strict: a
//! fixed-format message with trailing bytes is rejected, while a message type
//! we do not know is kept as `Unknown` so the proxy can pass it through.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod frontend;
pub mod fuzzing;
mod parse;
pub mod startup;
mod wire;

use core::fmt;

/// Length limits enforced from the length field, before anything is buffered
/// or allocated for the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest startup-phase packet accepted, counting its 4-byte length
    /// field. PostgreSQL itself refuses startup packets over 10 000 bytes.
    pub max_startup_len: usize,
    /// Largest regular message accepted, counting the 4-byte length field but
    /// not the tag byte.
    pub max_message_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_startup_len: 10_000,
            // PostgreSQL's own ceiling for a single message (MaxAllocSize is
            // just under 1 GiB); anything larger cannot be a valid message.
            max_message_len: 1 << 30,
        }
    }
}

impl Limits {
    /// Limits for the authentication phase. Nothing an unauthenticated peer
    /// legitimately sends (a password, a JWT, a SCRAM message) comes close to
    /// 64 KiB, so a larger claim is refused before we buffer it.
    pub fn auth() -> Limits {
        Limits {
            max_message_len: 64 * 1024,
            ..Limits::default()
        }
    }
}

/// Result of an incremental decode step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decode<T> {
    /// A complete frame was decoded and removed from the buffer.
    Frame(T),
    /// At least this many more bytes are needed. The buffer is untouched and
    /// nothing was allocated.
    NeedMore(usize),
}

/// Tag value reported in errors about startup-phase packets, which have no tag
/// byte on the wire.
pub const STARTUP_TAG: u8 = 0;

/// Why a frame was rejected. Each variant carries the message tag
/// ([`STARTUP_TAG`] for startup packets) so the proxy can say which message
/// was bad without quoting its contents.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The length field claims more than the configured limit. Detected from
    /// the header alone, before anything is allocated.
    #[error("{} of {len} bytes exceeds the limit of {limit} bytes", TagName(*.tag))]
    TooLarge {
        /// Message tag.
        tag: u8,
        /// Length as claimed on the wire.
        len: usize,
        /// The limit it exceeded.
        limit: usize,
    },
    /// The length field is impossible for this message (shorter than the
    /// length field itself, or than a startup packet's code).
    #[error("{} has an invalid length of {len} bytes", TagName(*.tag))]
    BadLength {
        /// Message tag.
        tag: u8,
        /// Length as claimed on the wire.
        len: usize,
    },
    /// The body does not match the message format.
    #[error("malformed {}: {what}", TagName(*.tag))]
    Malformed {
        /// Message tag.
        tag: u8,
        /// What was wrong, in protocol terms (never the offending bytes).
        what: &'static str,
    },
    /// A startup packet asked for a protocol major version other than 3.
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.2")]
    UnsupportedProtocol {
        /// Requested major version.
        major: u16,
        /// Requested minor version.
        minor: u16,
    },
}

/// Displays a tag the way the protocol documentation names it, without ever
/// echoing a non-printable byte into a log line.
struct TagName(u8);

impl fmt::Display for TagName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            STARTUP_TAG => f.write_str("startup packet"),
            t if t.is_ascii_graphic() => write!(f, "message '{}'", t as char),
            t => write!(f, "message 0x{t:02x}"),
        }
    }
}

/// Header of a regular (typed) message: tag byte + 4-byte big-endian length
/// that includes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Message type byte.
    pub tag: u8,
    /// Length as on the wire: includes the 4 length bytes, not the tag.
    pub len: u32,
}

impl FrameHeader {
    /// Size of a header on the wire.
    pub const SIZE: usize = 5;

    /// Size of the whole frame: tag byte plus `len`.
    pub fn frame_len(&self) -> usize {
        1 + self.len as usize
    }

    /// Size of the body, after the length field.
    pub fn body_len(&self) -> usize {
        (self.len as usize).saturating_sub(4)
    }
}

/// Reads the 5-byte header of a regular message without consuming anything.
///
/// This is the relay's hot path: frames that need no inspection are split off
/// by length alone. Validates `len >= 4` and `len <= max_len` so a hostile
/// length is refused before the caller reserves buffer space for it.
pub fn peek_header(buf: &[u8], max_len: usize) -> Result<Decode<FrameHeader>, DecodeError> {
    let Some(&[tag, a, b, c, d]) = buf.first_chunk::<5>() else {
        return Ok(Decode::NeedMore(FrameHeader::SIZE - buf.len()));
    };
    let len = u32::from_be_bytes([a, b, c, d]);
    if len < 4 {
        return Err(DecodeError::BadLength {
            tag,
            len: len as usize,
        });
    }
    if len as usize > max_len {
        return Err(DecodeError::TooLarge {
            tag,
            len: len as usize,
            limit: max_len,
        });
    }
    Ok(Decode::Frame(FrameHeader { tag, len }))
}

/// Splits one complete typed frame off `buf`, or says how much is missing.
/// Shared by the frontend and backend decoders, which differ only in how they
/// read the body.
pub(crate) fn split_frame(
    buf: &mut bytes::BytesMut,
    limits: &Limits,
) -> Result<Decode<(u8, bytes::Bytes)>, DecodeError> {
    let header = match peek_header(buf, limits.max_message_len)? {
        Decode::Frame(h) => h,
        Decode::NeedMore(n) => return Ok(Decode::NeedMore(n)),
    };
    let frame_len = header.frame_len();
    if buf.len() < frame_len {
        return Ok(Decode::NeedMore(frame_len - buf.len()));
    }
    // Dropping the header from the BytesMut before freezing is free; slicing
    // the frozen Bytes would cost a reference-count round trip per frame.
    let mut frame = buf.split_to(frame_len);
    bytes::Buf::advance(&mut frame, FrameHeader::SIZE);
    Ok(Decode::Frame((header.tag, frame.freeze())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_header_partial_and_limits() {
        assert_eq!(peek_header(b"", 100), Ok(Decode::NeedMore(5)));
        assert_eq!(peek_header(b"Q\0\0", 100), Ok(Decode::NeedMore(2)));
        assert_eq!(
            peek_header(b"Q\0\0\0\x03", 100),
            Err(DecodeError::BadLength { tag: b'Q', len: 3 })
        );
        assert_eq!(
            peek_header(b"Q\x80\0\0\0", 1 << 30),
            Err(DecodeError::TooLarge {
                tag: b'Q',
                len: 1 << 31,
                limit: 1 << 30
            })
        );
        let h = match peek_header(b"Q\0\0\0\x09rest", 100) {
            Ok(Decode::Frame(h)) => h,
            other => panic!("{other:?}"),
        };
        assert_eq!(h, FrameHeader { tag: b'Q', len: 9 });
        assert_eq!(h.frame_len(), 10);
        assert_eq!(h.body_len(), 5);
    }

    #[test]
    fn error_messages_name_the_message_not_its_bytes() {
        let e = DecodeError::Malformed {
            tag: b'B',
            what: "trailing bytes",
        };
        assert_eq!(e.to_string(), "malformed message 'B': trailing bytes");
        let e = DecodeError::BadLength { tag: 0x01, len: 2 };
        assert_eq!(
            e.to_string(),
            "message 0x01 has an invalid length of 2 bytes"
        );
        let e = DecodeError::TooLarge {
            tag: STARTUP_TAG,
            len: 20_000,
            limit: 10_000,
        };
        assert_eq!(
            e.to_string(),
            "startup packet of 20000 bytes exceeds the limit of 10000 bytes"
        );
    }
}
