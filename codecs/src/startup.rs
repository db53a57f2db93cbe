//! Startup-phase packets: the untyped packets a client sends before any tagged
//! message (SSLRequest, GSSENCRequest, CancelRequest, StartupMessage).
//!
//! They have no tag byte: a 4-byte length (including itself) and a 4-byte code
//! that is either a protocol version or one of the magic request codes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::parse::{cstr, fail, finish, share, u32_, PResult};
use crate::{Decode, DecodeError, Limits, STARTUP_TAG};

/// Request code of SSLRequest (1234.5679).
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// Request code of GSSENCRequest (1234.5680).
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// Request code of CancelRequest (1234.5678).
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// Shortest cancel key a CancelRequest or BackendKeyData may carry (protocol 3.0).
pub const MIN_CANCEL_KEY_LEN: usize = 4;
/// Longest cancel key protocol 3.2 allows.
pub const MAX_CANCEL_KEY_LEN: usize = 256;

/// A protocol version as requested in a StartupMessage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    /// Major version; only 3 is accepted.
    pub major: u16,
    /// Minor version; any is accepted, the server negotiates down.
    pub minor: u16,
}

impl ProtocolVersion {
    /// Protocol 3.0, spoken by every PostgreSQL since 7.4.
    pub const V3_0: ProtocolVersion = ProtocolVersion { major: 3, minor: 0 };
    /// Protocol 3.2 (PostgreSQL 18): longer cancel keys.
    pub const V3_2: ProtocolVersion = ProtocolVersion { major: 3, minor: 2 };

    /// The version as the 32-bit code on the wire (`major << 16 | minor`).
    pub fn code(self) -> u32 {
        (u32::from(self.major) << 16) | u32::from(self.minor)
    }

    /// Splits a wire code into major and minor.
    pub fn from_code(code: u32) -> Self {
        ProtocolVersion {
            major: (code >> 16) as u16,
            minor: (code & 0xffff) as u16,
        }
    }
}

/// A startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// Client asks for TLS; answered with a single `S` or `N` byte.
    SslRequest,
    /// Client asks for GSSAPI encryption; answered with a single `G` or `N` byte.
    GssEncRequest,
    /// Out-of-band request to cancel the query running on another connection.
    CancelRequest {
        /// Backend process ID from BackendKeyData.
        pid: u32,
        /// Secret key from BackendKeyData: 4 bytes in protocol 3.0, up to 256 in 3.2.
        secret: Bytes,
    },
    /// The StartupMessage proper.
    Startup {
        /// Requested protocol version (major is always 3 once decoded).
        version: ProtocolVersion,
        /// Parameters in wire order, including `_pq_.` protocol options.
        params: Vec<(Bytes, Bytes)>,
    },
}

impl StartupPacket {
    /// Value of a StartupMessage parameter (`user`, `database`, ...).
    ///
    /// If a name is repeated the **last** value wins, as in PostgreSQL's own
    /// `ProcessStartupPacket`: anything that checks a parameter must see the
    /// value the server would act on.
    pub fn param(&self, name: &str) -> Option<&Bytes> {
        match self {
            StartupPacket::Startup { params, .. } => params
                .iter()
                .rev()
                .find(|(n, _)| n.as_ref() == name.as_bytes())
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Appends the packet in wire format.
    pub fn encode(&self, out: &mut BytesMut) {
        let at = out.len();
        out.put_u32(0);
        match self {
            StartupPacket::SslRequest => out.put_u32(SSL_REQUEST_CODE),
            StartupPacket::GssEncRequest => out.put_u32(GSSENC_REQUEST_CODE),
            StartupPacket::CancelRequest { pid, secret } => {
                out.put_u32(CANCEL_REQUEST_CODE);
                out.put_u32(*pid);
                out.put_slice(secret);
            }
            StartupPacket::Startup { version, params } => {
                out.put_u32(version.code());
                for (name, value) in params {
                    crate::wire::put_cstr(out, name);
                    crate::wire::put_cstr(out, value);
                }
                out.put_u8(0);
            }
        }
        crate::wire::patch_len(out, at);
    }

    /// Parses a complete packet given everything after its length field.
    pub fn parse(body: Bytes) -> Result<Self, DecodeError> {
        let (rest, code) = u32_(&body).map_err(|_| DecodeError::BadLength {
            tag: STARTUP_TAG,
            len: body.len() + 4,
        })?;
        match code {
            SSL_REQUEST_CODE => finish(STARTUP_TAG, rest, |i| Ok((i, StartupPacket::SslRequest))),
            GSSENC_REQUEST_CODE => {
                finish(STARTUP_TAG, rest, |i| Ok((i, StartupPacket::GssEncRequest)))
            }
            CANCEL_REQUEST_CODE => finish(STARTUP_TAG, rest, |i| cancel(&body, i)),
            code => {
                let version = ProtocolVersion::from_code(code);
                if version.major != 3 {
                    return Err(DecodeError::UnsupportedProtocol {
                        major: version.major,
                        minor: version.minor,
                    });
                }
                let params = finish(STARTUP_TAG, rest, |i| params(&body, i))?;
                Ok(StartupPacket::Startup { version, params })
            }
        }
    }
}

fn cancel<'a>(frame: &Bytes, i: &'a [u8]) -> PResult<'a, StartupPacket> {
    let (secret, pid) = u32_(i)?;
    if !(MIN_CANCEL_KEY_LEN..=MAX_CANCEL_KEY_LEN).contains(&secret.len()) {
        return fail("cancel key must be 4 to 256 bytes");
    }
    Ok((
        &[],
        StartupPacket::CancelRequest {
            pid,
            secret: share(frame, secret),
        },
    ))
}

/// Name/value pairs ending with an empty name. PostgreSQL insists the
/// terminator is the packet's last byte, and so do we (via `finish`).
fn params<'a>(frame: &Bytes, mut i: &'a [u8]) -> PResult<'a, Vec<(Bytes, Bytes)>> {
    let mut out = Vec::new();
    loop {
        let (rest, name) = cstr(i)?;
        if name.is_empty() {
            return Ok((rest, out));
        }
        let (rest, value) = cstr(rest)?;
        out.push((share(frame, name), share(frame, value)));
        i = rest;
    }
}

/// Decodes one startup-phase packet from the front of `buf`.
///
/// The packet is split off (`split_to` + `freeze`, zero copy) only when it is
/// complete and well formed in length; on `NeedMore` the buffer is untouched.
/// On any other error the connection is unusable and the packet may have been
/// consumed.
pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Decode<StartupPacket>, DecodeError> {
    let Some(&len) = buf.first_chunk::<4>() else {
        return Ok(Decode::NeedMore(4 - buf.len()));
    };
    let len = u32::from_be_bytes(len) as usize;
    // Length field plus request code is the least any startup packet holds.
    if len < 8 {
        return Err(DecodeError::BadLength {
            tag: STARTUP_TAG,
            len,
        });
    }
    if len > limits.max_startup_len {
        return Err(DecodeError::TooLarge {
            tag: STARTUP_TAG,
            len,
            limit: limits.max_startup_len,
        });
    }
    if buf.len() < len {
        return Ok(Decode::NeedMore(len - buf.len()));
    }
    let mut packet = buf.split_to(len);
    bytes::Buf::advance(&mut packet, 4);
    StartupPacket::parse(packet.freeze()).map(Decode::Frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_last_value_wins() {
        let p = StartupPacket::Startup {
            version: ProtocolVersion::V3_0,
            params: vec![
                (Bytes::from_static(b"user"), Bytes::from_static(b"a")),
                (Bytes::from_static(b"user"), Bytes::from_static(b"b")),
            ],
        };
        assert_eq!(p.param("user").map(|b| &b[..]), Some(&b"b"[..]));
        assert_eq!(p.param("database"), None);
        assert_eq!(StartupPacket::SslRequest.param("user"), None);
    }

    #[test]
    fn version_code() {
        assert_eq!(ProtocolVersion::V3_0.code(), 196_608);
        assert_eq!(ProtocolVersion::from_code(196_610), ProtocolVersion::V3_2);
    }
}
