//! Messages a server sends.

use bytes::{BufMut, Bytes, BytesMut};
use nom::number::complete::{i8 as be_i8, u8 as be_u8};

use crate::parse::{
    counted, cstr, fail, finish, i16_, i16_list, i32_, nullable, share, u16_, u32_, PResult,
};
use crate::startup::{MAX_CANCEL_KEY_LEN, MIN_CANCEL_KEY_LEN};
use crate::wire::{frame, put_count16, put_cstr, put_nullable};
use crate::{split_frame, Decode, DecodeError, Limits};

/// An authentication request (`'R'`), by its Int32 code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// 0: authentication succeeded.
    Ok,
    /// 2: Kerberos V5 (unsupported by modern servers).
    KerberosV5,
    /// 3: cleartext password.
    CleartextPassword,
    /// 5: MD5 password with this salt.
    Md5Password {
        /// Salt to hash the password with.
        salt: [u8; 4],
    },
    /// 7: GSSAPI.
    Gss,
    /// 8: GSSAPI or SSPI continuation data.
    GssContinue(Bytes),
    /// 9: SSPI.
    Sspi,
    /// 10: SASL, with the mechanisms the server offers in its order of
    /// preference (`SCRAM-SHA-256`, and `SCRAM-SHA-256-PLUS` when channel
    /// binding is possible).
    Sasl {
        /// Mechanism names.
        mechanisms: Vec<Bytes>,
    },
    /// 11: SASL challenge.
    SaslContinue(Bytes),
    /// 12: SASL outcome (server signature).
    SaslFinal(Bytes),
}

impl Authentication {
    /// The Int32 request code on the wire.
    pub fn code(&self) -> u32 {
        match self {
            Authentication::Ok => 0,
            Authentication::KerberosV5 => 2,
            Authentication::CleartextPassword => 3,
            Authentication::Md5Password { .. } => 5,
            Authentication::Gss => 7,
            Authentication::GssContinue(_) => 8,
            Authentication::Sspi => 9,
            Authentication::Sasl { .. } => 10,
            Authentication::SaslContinue(_) => 11,
            Authentication::SaslFinal(_) => 12,
        }
    }
}

/// Transaction status reported by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionStatus {
    /// `'I'`: not in a transaction block.
    Idle,
    /// `'T'`: in a transaction block.
    InTransaction,
    /// `'E'`: in a failed transaction block.
    Failed,
}

impl TransactionStatus {
    /// The status byte on the wire.
    pub fn as_byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }

    /// Parses a status byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'I' => Some(TransactionStatus::Idle),
            b'T' => Some(TransactionStatus::InTransaction),
            b'E' => Some(TransactionStatus::Failed),
            _ => None,
        }
    }
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    /// Column name.
    pub name: Bytes,
    /// OID of the source table, 0 if not a table column.
    pub table_oid: u32,
    /// Attribute number in that table, 0 if not a table column.
    pub column_id: i16,
    /// Data type OID.
    pub type_oid: u32,
    /// Data type size (`pg_type.typlen`), negative for variable width.
    pub type_size: i16,
    /// Type modifier (`pg_attribute.atttypmod`).
    pub type_modifier: i32,
    /// Format code: 0 text, 1 binary.
    pub format: i16,
}

/// Fields of an ErrorResponse or NoticeResponse, in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fields(pub Vec<(u8, Bytes)>);

impl Fields {
    /// Value of the field with this code (`b'C'`, `b'M'`, ...), the first if repeated.
    pub fn get(&self, code: u8) -> Option<&Bytes> {
        self.0.iter().find(|(c, _)| *c == code).map(|(_, v)| v)
    }

    /// SQLSTATE code (`'C'`).
    pub fn sqlstate(&self) -> Option<&Bytes> {
        self.get(b'C')
    }

    /// Primary message (`'M'`).
    pub fn message(&self) -> Option<&Bytes> {
        self.get(b'M')
    }

    /// Non-localized severity (`'V'`), falling back to the localized one (`'S'`).
    pub fn severity(&self) -> Option<&Bytes> {
        self.get(b'V').or_else(|| self.get(b'S'))
    }
}

/// Format description of a CopyIn/CopyOut/CopyBoth response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyResponse {
    /// Overall format: 0 textual, 1 binary.
    pub format: i8,
    /// Per-column format codes.
    pub column_formats: Vec<i16>,
}

/// A DataRow, kept as its validated body so that rows nobody rewrites are
/// forwarded without being taken apart: no per-column allocation, columns are
/// sliced from the body on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRow {
    /// The whole body, including the leading column count.
    body: Bytes,
    columns: u16,
}

impl DataRow {
    /// Number of columns.
    pub fn len(&self) -> usize {
        self.columns as usize
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.columns == 0
    }

    /// The message body (column count then the columns), as on the wire.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Columns as slices of the body, `None` for NULL.
    pub fn columns(&self) -> impl Iterator<Item = Option<Bytes>> + '_ {
        self.raw_columns().map(|c| c.map(|c| share(&self.body, c)))
    }

    /// Columns as borrowed slices, `None` for NULL; cheaper than
    /// [`columns`](Self::columns) when the caller only looks.
    pub fn raw_columns(&self) -> RawColumns<'_> {
        RawColumns {
            rest: self.body.get(2..).unwrap_or_default(),
            left: self.columns,
        }
    }

    /// Builds a row from column values (`None` for NULL).
    pub fn from_columns(cols: &[Option<&[u8]>]) -> DataRow {
        let size = 2 + cols
            .iter()
            .map(|c| 4 + c.map_or(0, <[u8]>::len))
            .sum::<usize>();
        let mut body = BytesMut::with_capacity(size);
        put_count16(&mut body, cols.len());
        for c in cols {
            put_nullable(&mut body, *c);
        }
        DataRow {
            body: body.freeze(),
            columns: u16::try_from(cols.len()).unwrap_or(u16::MAX),
        }
    }

    /// Validates a DataRow body: the column lengths must add up exactly to
    /// the body, `-1` is NULL and any other negative length is rejected. The
    /// check is a scan without allocation.
    pub fn parse(body: Bytes) -> Result<DataRow, DecodeError> {
        let columns = finish(b'D', &body, |i| {
            let (mut i, n) = u16_(i)?;
            for _ in 0..n {
                (i, _) = nullable(i)?;
            }
            Ok((i, n))
        })?;
        Ok(DataRow { body, columns })
    }
}

/// Iterator over a [`DataRow`]'s columns as borrowed slices.
#[derive(Debug, Clone)]
pub struct RawColumns<'a> {
    rest: &'a [u8],
    left: u16,
}

impl<'a> Iterator for RawColumns<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        // The body was validated at parse time; a failure here cannot happen,
        // but ending the iteration is the answer that cannot panic.
        match nullable(self.rest) {
            Ok((rest, col)) => {
                self.rest = rest;
                self.left -= 1;
                Some(col)
            }
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }
}

/// Every message a server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage {
    /// `'R'` authentication request or outcome.
    Authentication(Authentication),
    /// `'K'` cancellation key.
    BackendKeyData {
        /// Backend process ID.
        pid: u32,
        /// Secret key: 4 bytes in protocol 3.0, up to 256 in 3.2.
        secret: Bytes,
    },
    /// `'S'` run-time parameter report.
    ParameterStatus {
        /// Parameter name.
        name: Bytes,
        /// Current value.
        value: Bytes,
    },
    /// `'Z'` ready for a new query.
    ReadyForQuery {
        /// Transaction status.
        status: TransactionStatus,
    },
    /// `'T'` row description.
    RowDescription {
        /// One entry per column.
        fields: Vec<FieldDescription>,
    },
    /// `'D'` one row.
    DataRow(DataRow),
    /// `'C'` command completed.
    CommandComplete {
        /// Command tag, e.g. `SELECT 1`.
        tag: Bytes,
    },
    /// `'I'` response to an empty query string.
    EmptyQueryResponse,
    /// `'E'` error.
    ErrorResponse(Fields),
    /// `'N'` notice.
    NoticeResponse(Fields),
    /// `'1'`.
    ParseComplete,
    /// `'2'`.
    BindComplete,
    /// `'3'`.
    CloseComplete,
    /// `'n'`.
    NoData,
    /// `'s'` Execute's row limit was reached.
    PortalSuspended,
    /// `'t'` parameter types of a prepared statement.
    ParameterDescription {
        /// Parameter type OIDs.
        types: Vec<u32>,
    },
    /// `'G'` server is ready to receive COPY data.
    CopyInResponse(CopyResponse),
    /// `'H'` server is about to send COPY data.
    CopyOutResponse(CopyResponse),
    /// `'W'` COPY both ways (replication).
    CopyBothResponse(CopyResponse),
    /// `'d'` COPY data.
    CopyData(Bytes),
    /// `'c'` COPY done.
    CopyDone,
    /// `'V'` result of a FunctionCall, `None` for NULL.
    FunctionCallResponse(Option<Bytes>),
    /// `'A'` LISTEN/NOTIFY notification.
    NotificationResponse {
        /// Notifying backend's process ID.
        pid: u32,
        /// Channel name.
        channel: Bytes,
        /// Payload string.
        payload: Bytes,
    },
    /// `'v'` the server does not support the requested minor version or
    /// some `_pq_.` options.
    NegotiateProtocolVersion {
        /// Newest minor version the server supports.
        newest_minor: u32,
        /// Protocol options the server did not recognize.
        unrecognized: Vec<Bytes>,
    },
    /// A tag we do not know, kept rather than rejected so it can be passed through.
    Unknown {
        /// Message tag.
        tag: u8,
        /// Body after the length field.
        body: Bytes,
    },
}

impl BackendMessage {
    /// The message's tag byte.
    pub fn tag(&self) -> u8 {
        match self {
            BackendMessage::Authentication(_) => b'R',
            BackendMessage::BackendKeyData { .. } => b'K',
            BackendMessage::ParameterStatus { .. } => b'S',
            BackendMessage::ReadyForQuery { .. } => b'Z',
            BackendMessage::RowDescription { .. } => b'T',
            BackendMessage::DataRow(_) => b'D',
            BackendMessage::CommandComplete { .. } => b'C',
            BackendMessage::EmptyQueryResponse => b'I',
            BackendMessage::ErrorResponse(_) => b'E',
            BackendMessage::NoticeResponse(_) => b'N',
            BackendMessage::ParseComplete => b'1',
            BackendMessage::BindComplete => b'2',
            BackendMessage::CloseComplete => b'3',
            BackendMessage::NoData => b'n',
            BackendMessage::PortalSuspended => b's',
            BackendMessage::ParameterDescription { .. } => b't',
            BackendMessage::CopyInResponse(_) => b'G',
            BackendMessage::CopyOutResponse(_) => b'H',
            BackendMessage::CopyBothResponse(_) => b'W',
            BackendMessage::CopyData(_) => b'd',
            BackendMessage::CopyDone => b'c',
            BackendMessage::FunctionCallResponse(_) => b'V',
            BackendMessage::NotificationResponse { .. } => b'A',
            BackendMessage::NegotiateProtocolVersion { .. } => b'v',
            BackendMessage::Unknown { tag, .. } => *tag,
        }
    }

    /// Appends the message in wire format: exactly the bytes [`decode`] reads
    /// back as this message.
    pub fn encode(&self, out: &mut BytesMut) {
        frame(out, self.tag(), |out| match self {
            BackendMessage::Authentication(a) => {
                out.put_u32(a.code());
                match a {
                    Authentication::Md5Password { salt } => out.put_slice(salt),
                    Authentication::GssContinue(d)
                    | Authentication::SaslContinue(d)
                    | Authentication::SaslFinal(d) => out.put_slice(d),
                    Authentication::Sasl { mechanisms } => {
                        for m in mechanisms {
                            put_cstr(out, m);
                        }
                        out.put_u8(0);
                    }
                    Authentication::Ok
                    | Authentication::KerberosV5
                    | Authentication::CleartextPassword
                    | Authentication::Gss
                    | Authentication::Sspi => {}
                }
            }
            BackendMessage::BackendKeyData { pid, secret } => {
                out.put_u32(*pid);
                out.put_slice(secret);
            }
            BackendMessage::ParameterStatus { name, value } => {
                put_cstr(out, name);
                put_cstr(out, value);
            }
            BackendMessage::ReadyForQuery { status } => out.put_u8(status.as_byte()),
            BackendMessage::RowDescription { fields } => {
                put_count16(out, fields.len());
                for f in fields {
                    put_cstr(out, &f.name);
                    out.put_u32(f.table_oid);
                    out.put_i16(f.column_id);
                    out.put_u32(f.type_oid);
                    out.put_i16(f.type_size);
                    out.put_i32(f.type_modifier);
                    out.put_i16(f.format);
                }
            }
            BackendMessage::DataRow(row) => out.put_slice(&row.body),
            BackendMessage::CommandComplete { tag } => put_cstr(out, tag),
            BackendMessage::ErrorResponse(fields) | BackendMessage::NoticeResponse(fields) => {
                for (code, value) in &fields.0 {
                    out.put_u8(*code);
                    put_cstr(out, value);
                }
                out.put_u8(0);
            }
            BackendMessage::ParameterDescription { types } => {
                put_count16(out, types.len());
                for t in types {
                    out.put_u32(*t);
                }
            }
            BackendMessage::CopyInResponse(c)
            | BackendMessage::CopyOutResponse(c)
            | BackendMessage::CopyBothResponse(c) => {
                out.put_i8(c.format);
                put_count16(out, c.column_formats.len());
                for f in &c.column_formats {
                    out.put_i16(*f);
                }
            }
            BackendMessage::CopyData(d) => out.put_slice(d),
            BackendMessage::FunctionCallResponse(v) => put_nullable(out, v.as_deref()),
            BackendMessage::NotificationResponse {
                pid,
                channel,
                payload,
            } => {
                out.put_u32(*pid);
                put_cstr(out, channel);
                put_cstr(out, payload);
            }
            BackendMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognized,
            } => {
                out.put_u32(*newest_minor);
                out.put_u32(u32::try_from(unrecognized.len()).unwrap_or(u32::MAX));
                for o in unrecognized {
                    put_cstr(out, o);
                }
            }
            BackendMessage::Unknown { body, .. } => out.put_slice(body),
            BackendMessage::EmptyQueryResponse
            | BackendMessage::ParseComplete
            | BackendMessage::BindComplete
            | BackendMessage::CloseComplete
            | BackendMessage::NoData
            | BackendMessage::PortalSuspended
            | BackendMessage::CopyDone => {}
        })
    }

    /// Parses a message body (everything after the length field). Every
    /// field of the result is a slice of `body`.
    pub fn parse(tag: u8, body: Bytes) -> Result<Self, DecodeError> {
        let b = &body;
        match tag {
            b'R' => finish(tag, b, |i| authentication(b, i)).map(BackendMessage::Authentication),
            b'K' => finish(tag, b, |i| {
                let (secret, pid) = u32_(i)?;
                if !(MIN_CANCEL_KEY_LEN..=MAX_CANCEL_KEY_LEN).contains(&secret.len()) {
                    return fail("cancel key must be 4 to 256 bytes");
                }
                let secret = share(b, secret);
                Ok((&[][..], BackendMessage::BackendKeyData { pid, secret }))
            }),
            b'S' => finish(tag, b, |i| {
                let (i, name) = cstr(i)?;
                let (i, value) = cstr(i)?;
                let (name, value) = (share(b, name), share(b, value));
                Ok((i, BackendMessage::ParameterStatus { name, value }))
            }),
            b'Z' => finish(tag, b, |i| {
                let (i, s) = be_u8(i)?;
                match TransactionStatus::from_byte(s) {
                    Some(status) => Ok((i, BackendMessage::ReadyForQuery { status })),
                    None => fail("transaction status must be 'I', 'T' or 'E'"),
                }
            }),
            b'T' => finish(tag, b, |i| row_description(b, i)),
            b'D' => DataRow::parse(body).map(BackendMessage::DataRow),
            b'C' => finish(tag, b, |i| {
                let (i, t) = cstr(i)?;
                Ok((i, BackendMessage::CommandComplete { tag: share(b, t) }))
            }),
            b'I' => empty(tag, b, BackendMessage::EmptyQueryResponse),
            b'E' => finish(tag, b, |i| fields(b, i)).map(BackendMessage::ErrorResponse),
            b'N' => finish(tag, b, |i| fields(b, i)).map(BackendMessage::NoticeResponse),
            b'1' => empty(tag, b, BackendMessage::ParseComplete),
            b'2' => empty(tag, b, BackendMessage::BindComplete),
            b'3' => empty(tag, b, BackendMessage::CloseComplete),
            b'n' => empty(tag, b, BackendMessage::NoData),
            b's' => empty(tag, b, BackendMessage::PortalSuspended),
            b't' => finish(tag, b, |i| {
                let (i, n) = u16_(i)?;
                let (i, types) = counted(i, n as usize, 4, u32_)?;
                Ok((i, BackendMessage::ParameterDescription { types }))
            }),
            b'G' => finish(tag, b, copy_response).map(BackendMessage::CopyInResponse),
            b'H' => finish(tag, b, copy_response).map(BackendMessage::CopyOutResponse),
            b'W' => finish(tag, b, copy_response).map(BackendMessage::CopyBothResponse),
            b'd' => Ok(BackendMessage::CopyData(body)),
            b'c' => empty(tag, b, BackendMessage::CopyDone),
            b'V' => finish(tag, b, |i| {
                let (i, v) = nullable(i)?;
                Ok((
                    i,
                    BackendMessage::FunctionCallResponse(v.map(|v| share(b, v))),
                ))
            }),
            b'A' => finish(tag, b, |i| {
                let (i, pid) = u32_(i)?;
                let (i, channel) = cstr(i)?;
                let (i, payload) = cstr(i)?;
                let (channel, payload) = (share(b, channel), share(b, payload));
                Ok((
                    i,
                    BackendMessage::NotificationResponse {
                        pid,
                        channel,
                        payload,
                    },
                ))
            }),
            b'v' => finish(tag, b, |i| {
                let (i, newest_minor) = u32_(i)?;
                let (i, n) = u32_(i)?;
                let (i, unrecognized) = counted(i, n as usize, 1, |i| {
                    let (i, o) = cstr(i)?;
                    Ok((i, share(b, o)))
                })?;
                Ok((
                    i,
                    BackendMessage::NegotiateProtocolVersion {
                        newest_minor,
                        unrecognized,
                    },
                ))
            }),
            _ => Ok(BackendMessage::Unknown { tag, body }),
        }
    }
}

fn empty(tag: u8, body: &[u8], m: BackendMessage) -> Result<BackendMessage, DecodeError> {
    finish(tag, body, |i| Ok((i, m.clone())))
}

fn authentication<'a>(b: &Bytes, i: &'a [u8]) -> PResult<'a, Authentication> {
    let (i, code) = u32_(i)?;
    // Codes whose data is "the rest of the message" consume it all; the
    // others leave it for `finish` to reject as trailing bytes.
    let rest = |i: &'a [u8]| share(b, i);
    match code {
        0 => Ok((i, Authentication::Ok)),
        2 => Ok((i, Authentication::KerberosV5)),
        3 => Ok((i, Authentication::CleartextPassword)),
        5 => {
            let (i, salt) = nom::bytes::complete::take(4usize)(i)?;
            match <[u8; 4]>::try_from(salt) {
                Ok(salt) => Ok((i, Authentication::Md5Password { salt })),
                Err(_) => fail("MD5 salt must be 4 bytes"),
            }
        }
        7 => Ok((i, Authentication::Gss)),
        8 => Ok((&[], Authentication::GssContinue(rest(i)))),
        9 => Ok((i, Authentication::Sspi)),
        10 => {
            let mut mechanisms = Vec::new();
            let mut i = i;
            loop {
                let (r, m) = cstr(i)?;
                i = r;
                if m.is_empty() {
                    return Ok((i, Authentication::Sasl { mechanisms }));
                }
                mechanisms.push(share(b, m));
            }
        }
        11 => Ok((&[], Authentication::SaslContinue(rest(i)))),
        12 => Ok((&[], Authentication::SaslFinal(rest(i)))),
        _ => fail("unknown authentication request code"),
    }
}

fn row_description<'a>(b: &Bytes, i: &'a [u8]) -> PResult<'a, BackendMessage> {
    let (i, n) = u16_(i)?;
    // Name NUL plus 18 bytes of fixed fields per column.
    let (i, fields) = counted(i, n as usize, 19, |i| {
        let (i, name) = cstr(i)?;
        let (i, table_oid) = u32_(i)?;
        let (i, column_id) = i16_(i)?;
        let (i, type_oid) = u32_(i)?;
        let (i, type_size) = i16_(i)?;
        let (i, type_modifier) = i32_(i)?;
        let (i, format) = i16_(i)?;
        Ok((
            i,
            FieldDescription {
                name: share(b, name),
                table_oid,
                column_id,
                type_oid,
                type_size,
                type_modifier,
                format,
            },
        ))
    })?;
    Ok((i, BackendMessage::RowDescription { fields }))
}

fn fields<'a>(b: &Bytes, mut i: &'a [u8]) -> PResult<'a, Fields> {
    let mut out = Vec::new();
    loop {
        let (r, code) = be_u8(i)?;
        if code == 0 {
            return Ok((r, Fields(out)));
        }
        let (r, value) = cstr(r)?;
        out.push((code, share(b, value)));
        i = r;
    }
}

fn copy_response(i: &[u8]) -> PResult<'_, CopyResponse> {
    let (i, format) = be_i8(i)?;
    let (i, column_formats) = i16_list(i)?;
    Ok((
        i,
        CopyResponse {
            format,
            column_formats,
        },
    ))
}

/// Decodes one message from the front of `buf`.
///
/// The limit is checked from the header before anything is allocated; on
/// `NeedMore` the buffer is untouched. A complete frame is split off with
/// `split_to` + `freeze` and every field is a slice of it. On `Err` the
/// stream cannot be resynchronised and the bad frame may have been consumed.
pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Decode<BackendMessage>, DecodeError> {
    match split_frame(buf, limits)? {
        Decode::Frame((tag, body)) => BackendMessage::parse(tag, body).map(Decode::Frame),
        Decode::NeedMore(n) => Ok(Decode::NeedMore(n)),
    }
}

fn put_field(out: &mut BytesMut, code: u8, value: &str) {
    out.put_u8(code);
    put_cstr(out, value.as_bytes());
}

/// Writes an ErrorResponse with severity (localized `S` and non-localized
/// `V`), SQLSTATE, message and the optional detail and hint: what the gateway
/// sends a client it denies.
pub fn encode_error(
    out: &mut BytesMut,
    severity: &str,
    sqlstate: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    encode_report(out, b'E', severity, sqlstate, message, detail, hint);
}

/// Writes a NoticeResponse (S, V, C, M and optional D fields).
pub fn encode_notice(
    out: &mut BytesMut,
    severity: &str,
    sqlstate: &str,
    message: &str,
    detail: Option<&str>,
) {
    encode_report(out, b'N', severity, sqlstate, message, detail, None);
}

fn encode_report(
    out: &mut BytesMut,
    tag: u8,
    severity: &str,
    sqlstate: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    frame(out, tag, |out| {
        put_field(out, b'S', severity);
        put_field(out, b'V', severity);
        put_field(out, b'C', sqlstate);
        put_field(out, b'M', message);
        if let Some(d) = detail {
            put_field(out, b'D', d);
        }
        if let Some(h) = hint {
            put_field(out, b'H', h);
        }
        out.put_u8(0);
    });
}
