//! Messages a client sends after the startup packet.

use bytes::{BufMut, Bytes, BytesMut};

use crate::parse::{
    counted, cstr, fail, finish, i16_, i16_list, i32_, nullable, share, u16_, u32_, PResult,
};
use crate::wire::{frame, put_count16, put_cstr, put_nullable};
use crate::{split_frame, Decode, DecodeError, Limits};

/// What a Describe or Close message refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A prepared statement (`'S'`).
    Statement,
    /// A portal (`'P'`).
    Portal,
}

impl Target {
    /// The byte that names the target on the wire.
    pub fn as_byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'S' => Some(Target::Statement),
            b'P' => Some(Target::Portal),
            _ => None,
        }
    }
}

/// Every message a client sends after startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage {
    /// `'Q'` simple query; `sql` excludes the trailing NUL.
    Query {
        /// Query string, possibly several statements.
        sql: Bytes,
    },
    /// `'P'` Parse.
    Parse {
        /// Prepared statement name, empty for the unnamed statement.
        name: Bytes,
        /// Query string.
        sql: Bytes,
        /// Parameter type OIDs the client pre-specifies (0 = unspecified).
        param_types: Vec<u32>,
    },
    /// `'B'` Bind.
    Bind {
        /// Destination portal, empty for the unnamed portal.
        portal: Bytes,
        /// Source prepared statement.
        statement: Bytes,
        /// Parameter format codes (none, one for all, or one each).
        param_formats: Vec<i16>,
        /// Parameter values, `None` for NULL.
        params: Vec<Option<Bytes>>,
        /// Result column format codes.
        result_formats: Vec<i16>,
    },
    /// `'D'` Describe.
    Describe {
        /// Statement or portal.
        target: Target,
        /// Its name.
        name: Bytes,
    },
    /// `'E'` Execute.
    Execute {
        /// Portal to run.
        portal: Bytes,
        /// Row limit, 0 for no limit.
        max_rows: i32,
    },
    /// `'C'` Close.
    Close {
        /// Statement or portal.
        target: Target,
        /// Its name.
        name: Bytes,
    },
    /// `'S'` Sync.
    Sync,
    /// `'H'` Flush.
    Flush,
    /// `'X'` Terminate.
    Terminate,
    /// `'d'` COPY data.
    CopyData(Bytes),
    /// `'c'` COPY done.
    CopyDone,
    /// `'f'` COPY failure.
    CopyFail {
        /// Error message to report.
        message: Bytes,
    },
    /// `'F'` FunctionCall (legacy fast-path interface).
    FunctionCall {
        /// OID of the function.
        oid: u32,
        /// Argument format codes.
        arg_formats: Vec<i16>,
        /// Arguments, `None` for NULL.
        args: Vec<Option<Bytes>>,
        /// Result format code.
        result_format: i16,
    },
    /// `'p'`: PasswordMessage, SASLInitialResponse, SASLResponse and
    /// GSSResponse share this tag; which one it is depends on the auth
    /// exchange, so it is kept raw and interpreted by [`password`] and
    /// [`sasl_initial_response`].
    AuthResponse(Bytes),
    /// A tag we do not know, kept rather than rejected: a proxy passes through
    /// what it does not understand (and policy decides whether it may).
    Unknown {
        /// Message tag.
        tag: u8,
        /// Body after the length field.
        body: Bytes,
    },
}

impl FrontendMessage {
    /// The message's tag byte.
    pub fn tag(&self) -> u8 {
        match self {
            FrontendMessage::Query { .. } => b'Q',
            FrontendMessage::Parse { .. } => b'P',
            FrontendMessage::Bind { .. } => b'B',
            FrontendMessage::Describe { .. } => b'D',
            FrontendMessage::Execute { .. } => b'E',
            FrontendMessage::Close { .. } => b'C',
            FrontendMessage::Sync => b'S',
            FrontendMessage::Flush => b'H',
            FrontendMessage::Terminate => b'X',
            FrontendMessage::CopyData(_) => b'd',
            FrontendMessage::CopyDone => b'c',
            FrontendMessage::CopyFail { .. } => b'f',
            FrontendMessage::FunctionCall { .. } => b'F',
            FrontendMessage::AuthResponse(_) => b'p',
            FrontendMessage::Unknown { tag, .. } => *tag,
        }
    }

    /// Appends the message in wire format: exactly the bytes [`decode`] reads
    /// back as this message.
    pub fn encode(&self, out: &mut BytesMut) {
        frame(out, self.tag(), |out| match self {
            FrontendMessage::Query { sql } => put_cstr(out, sql),
            FrontendMessage::Parse {
                name,
                sql,
                param_types,
            } => {
                put_cstr(out, name);
                put_cstr(out, sql);
                put_count16(out, param_types.len());
                for t in param_types {
                    out.put_u32(*t);
                }
            }
            FrontendMessage::Bind {
                portal,
                statement,
                param_formats,
                params,
                result_formats,
            } => {
                put_cstr(out, portal);
                put_cstr(out, statement);
                put_i16_list(out, param_formats);
                put_count16(out, params.len());
                for p in params {
                    put_nullable(out, p.as_deref());
                }
                put_i16_list(out, result_formats);
            }
            FrontendMessage::Describe { target, name }
            | FrontendMessage::Close { target, name } => {
                out.put_u8(target.as_byte());
                put_cstr(out, name);
            }
            FrontendMessage::Execute { portal, max_rows } => {
                put_cstr(out, portal);
                out.put_i32(*max_rows);
            }
            FrontendMessage::Sync
            | FrontendMessage::Flush
            | FrontendMessage::Terminate
            | FrontendMessage::CopyDone => {}
            FrontendMessage::CopyData(data) | FrontendMessage::AuthResponse(data) => {
                out.put_slice(data)
            }
            FrontendMessage::CopyFail { message } => put_cstr(out, message),
            FrontendMessage::FunctionCall {
                oid,
                arg_formats,
                args,
                result_format,
            } => {
                out.put_u32(*oid);
                put_i16_list(out, arg_formats);
                put_count16(out, args.len());
                for a in args {
                    put_nullable(out, a.as_deref());
                }
                out.put_i16(*result_format);
            }
            FrontendMessage::Unknown { body, .. } => out.put_slice(body),
        })
    }

    /// Parses a message body (everything after the length field). Every
    /// field of the result is a slice of `body`.
    pub fn parse(tag: u8, body: Bytes) -> Result<Self, DecodeError> {
        let b = &body;
        match tag {
            b'Q' => finish(tag, b, |i| {
                let (i, sql) = cstr(i)?;
                Ok((i, FrontendMessage::Query { sql: share(b, sql) }))
            }),
            b'P' => finish(tag, b, |i| parse_msg(b, i)),
            b'B' => finish(tag, b, |i| bind(b, i)),
            b'D' | b'C' => finish(tag, b, |i| {
                let (i, (target, name)) = target_name(i)?;
                let name = share(b, name);
                let m = if tag == b'D' {
                    FrontendMessage::Describe { target, name }
                } else {
                    FrontendMessage::Close { target, name }
                };
                Ok((i, m))
            }),
            b'E' => finish(tag, b, |i| {
                let (i, portal) = cstr(i)?;
                let (i, max_rows) = i32_(i)?;
                Ok((
                    i,
                    FrontendMessage::Execute {
                        portal: share(b, portal),
                        max_rows,
                    },
                ))
            }),
            b'S' => empty(tag, b, FrontendMessage::Sync),
            b'H' => empty(tag, b, FrontendMessage::Flush),
            b'X' => empty(tag, b, FrontendMessage::Terminate),
            b'c' => empty(tag, b, FrontendMessage::CopyDone),
            b'd' => Ok(FrontendMessage::CopyData(body)),
            b'f' => finish(tag, b, |i| {
                let (i, message) = cstr(i)?;
                Ok((
                    i,
                    FrontendMessage::CopyFail {
                        message: share(b, message),
                    },
                ))
            }),
            b'F' => finish(tag, b, |i| function_call(b, i)),
            b'p' => Ok(FrontendMessage::AuthResponse(body)),
            _ => Ok(FrontendMessage::Unknown { tag, body }),
        }
    }
}

fn put_i16_list(out: &mut BytesMut, v: &[i16]) {
    put_count16(out, v.len());
    for x in v {
        out.put_i16(*x);
    }
}

fn empty(tag: u8, body: &[u8], m: FrontendMessage) -> Result<FrontendMessage, DecodeError> {
    finish(tag, body, |i| Ok((i, m.clone())))
}

fn target_name(i: &[u8]) -> PResult<'_, (Target, &[u8])> {
    let (i, t) = nom::number::complete::u8(i)?;
    let Some(target) = Target::from_byte(t) else {
        return fail("target must be 'S' (statement) or 'P' (portal)");
    };
    let (i, name) = cstr(i)?;
    Ok((i, (target, name)))
}

fn parse_msg<'a>(b: &Bytes, i: &'a [u8]) -> PResult<'a, FrontendMessage> {
    let (i, name) = cstr(i)?;
    let (i, sql) = cstr(i)?;
    let (i, n) = u16_(i)?;
    let (i, param_types) = counted(i, n as usize, 4, u32_)?;
    Ok((
        i,
        FrontendMessage::Parse {
            name: share(b, name),
            sql: share(b, sql),
            param_types,
        },
    ))
}

fn values<'a>(b: &Bytes, i: &'a [u8]) -> PResult<'a, Vec<Option<Bytes>>> {
    let (i, n) = u16_(i)?;
    counted(i, n as usize, 4, |i| {
        let (i, v) = nullable(i)?;
        Ok((i, v.map(|v| share(b, v))))
    })
}

fn bind<'a>(b: &Bytes, i: &'a [u8]) -> PResult<'a, FrontendMessage> {
    let (i, portal) = cstr(i)?;
    let (i, statement) = cstr(i)?;
    let (i, param_formats) = i16_list(i)?;
    let (i, params) = values(b, i)?;
    let (i, result_formats) = i16_list(i)?;
    Ok((
        i,
        FrontendMessage::Bind {
            portal: share(b, portal),
            statement: share(b, statement),
            param_formats,
            params,
            result_formats,
        },
    ))
}

fn function_call<'a>(b: &Bytes, i: &'a [u8]) -> PResult<'a, FrontendMessage> {
    let (i, oid) = u32_(i)?;
    let (i, arg_formats) = i16_list(i)?;
    let (i, args) = values(b, i)?;
    let (i, result_format) = i16_(i)?;
    Ok((
        i,
        FrontendMessage::FunctionCall {
            oid,
            arg_formats,
            args,
            result_format,
        },
    ))
}

/// Decodes one message from the front of `buf`.
///
/// The limit is checked from the header before anything is allocated; on
/// `NeedMore` the buffer is untouched. A complete frame is split off with
/// `split_to` + `freeze` and every field is a slice of it. On `Err` the
/// stream cannot be resynchronised and the bad frame may have been consumed.
pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Decode<FrontendMessage>, DecodeError> {
    match split_frame(buf, limits)? {
        Decode::Frame((tag, body)) => FrontendMessage::parse(tag, body).map(Decode::Frame),
        Decode::NeedMore(n) => Ok(Decode::NeedMore(n)),
    }
}

/// Reads a PasswordMessage body (cleartext or md5): the password without its NUL.
pub fn password(body: &Bytes) -> Result<Bytes, DecodeError> {
    finish(b'p', body, |i| {
        let (i, pw) = cstr(i)?;
        Ok((i, share(body, pw)))
    })
}

/// SASLInitialResponse: the mechanism the client chose and its first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslInitialResponse {
    /// Mechanism name, e.g. `SCRAM-SHA-256`.
    pub mechanism: Bytes,
    /// Initial client response; `None` when the length is -1.
    pub data: Option<Bytes>,
}

/// Reads a SASLInitialResponse body.
pub fn sasl_initial_response(body: &Bytes) -> Result<SaslInitialResponse, DecodeError> {
    finish(b'p', body, |i| {
        let (i, mechanism) = cstr(i)?;
        let (i, data) = nullable(i)?;
        Ok((
            i,
            SaslInitialResponse {
                mechanism: share(body, mechanism),
                data: data.map(|d| share(body, d)),
            },
        ))
    })
}

/// Writes a PasswordMessage (the gateway answering a backend's
/// cleartext/md5 request with the resource's credentials).
pub fn encode_password(out: &mut BytesMut, password: &[u8]) {
    frame(out, b'p', |out| put_cstr(out, password));
}

/// Writes a SASLInitialResponse.
pub fn encode_sasl_initial_response(out: &mut BytesMut, mechanism: &str, data: &[u8]) {
    frame(out, b'p', |out| {
        put_cstr(out, mechanism.as_bytes());
        put_nullable(out, Some(data));
    });
}

/// Writes a SASLResponse (the data is the whole body).
pub fn encode_sasl_response(out: &mut BytesMut, data: &[u8]) {
    frame(out, b'p', |out| out.put_slice(data));
}
