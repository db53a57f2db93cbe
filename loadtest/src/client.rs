//! The minimal PostgreSQL client: connect (TCP, optional TLS), authenticate, send encoded
//! frontend messages, and scan backend frames for the few that matter under load.
//!
//! Backend messages are scanned in place in one reusable read buffer; only ErrorResponse,
//! ReadyForQuery, the authentication requests and (for the chaos scenarios) DataRow are
//! looked at. Everything else — NoticeResponse, ParameterStatus, NotificationResponse,
//! RowDescription, DataRow, CommandComplete — is skipped by length, wherever it arrives.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use monoio::buf::{IoBufMut, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio_rustls::{ClientTlsStream, TlsConnector};
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;

use crate::url::{SslMode, Target};

/// A five-character SQLSTATE, kept as bytes so counting one costs no allocation.
pub type SqlState = [u8; 5];

/// Backend frames larger than this are refused rather than buffered: a load generator
/// that grows without bound under a misbehaving server would measure its own allocator.
const MAX_FRAME: usize = 64 << 20;
const READ_CHUNK: usize = 64 << 10;

/// Why a connection operation failed. `sqlstate` is set when the server said why (a FATAL
/// ErrorResponse before it closed, or an authentication refusal).
#[derive(Debug)]
pub struct ConnError {
    pub kind: ErrorKind,
    pub sqlstate: Option<SqlState>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// TCP connect, TLS handshake or startup failed.
    Connect,
    /// The socket failed or closed mid-operation.
    Io,
    /// The server sent something this client cannot follow.
    Protocol,
}

impl ConnError {
    fn new(kind: ErrorKind, detail: impl Into<String>) -> ConnError {
        ConnError {
            kind,
            sqlstate: None,
            detail: detail.into(),
        }
    }

    /// The label errors are counted under: the SQLSTATE when the server gave one.
    pub fn label(&self) -> String {
        match self.sqlstate {
            Some(s) => String::from_utf8_lossy(&s).into_owned(),
            None => match self.kind {
                ErrorKind::Connect => "connect".into(),
                ErrorKind::Io => "io".into(),
                ErrorKind::Protocol => "protocol".into(),
            },
        }
    }
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.label(), self.detail)
    }
}

fn io_err(kind: ErrorKind) -> impl Fn(io::Error) -> ConnError {
    move |e| ConnError::new(kind, e.to_string())
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>),
    /// Only while the TCP stream is handed to the TLS handshake.
    Detached,
}

fn detached() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "stream detached")
}

impl Stream {
    async fn read(&mut self, buf: SliceMut<Vec<u8>>) -> (io::Result<usize>, SliceMut<Vec<u8>>) {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Detached => (Err(detached()), buf),
        }
    }

    async fn write_all(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        match self {
            Stream::Plain(s) => s.write_all(buf).await,
            Stream::Tls(s) => {
                let r = s.write_all(buf).await;
                if r.0.is_err() {
                    return r;
                }
                // rustls buffers records; push them out now, not at the next write.
                match s.flush().await {
                    Ok(()) => r,
                    Err(e) => (Err(e), r.1),
                }
            }
            Stream::Detached => (Err(detached()), buf),
        }
    }
}

/// What one result (up to its ReadyForQuery) brought.
#[derive(Debug, Default, Clone, Copy)]
pub struct ResultSummary {
    /// SQLSTATE of the first ErrorResponse, if any.
    pub error: Option<SqlState>,
    pub data_rows: u64,
}

/// One authenticated session.
pub struct Conn {
    stream: Stream,
    rbuf: Vec<u8>,
    /// Start of the unparsed bytes in `rbuf`.
    rpos: usize,
    /// Messages encoded by the caller, sent by [`Conn::flush`].
    pub out: BytesMut,
    pub backend_pid: i32,
}

impl Conn {
    /// Connects, negotiates TLS per the target's sslmode, and authenticates (SCRAM-SHA-256,
    /// md5 or cleartext, whichever the server asks for), returning at the first
    /// ReadyForQuery.
    pub async fn connect(
        target: &Target,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Conn, ConnError> {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(io_err(ErrorKind::Connect))?;
        tcp.set_nodelay(true).map_err(io_err(ErrorKind::Connect))?;
        let mut conn = Conn {
            stream: Stream::Plain(tcp),
            rbuf: Vec::with_capacity(READ_CHUNK),
            rpos: 0,
            out: BytesMut::with_capacity(4096),
            backend_pid: 0,
        };
        if let (SslMode::Require | SslMode::VerifyFull, Some(config)) = (target.sslmode, tls) {
            conn.start_tls(target, config).await?;
        }
        conn.startup(target).await?;
        Ok(conn)
    }

    async fn start_tls(
        &mut self,
        target: &Target,
        config: &Arc<rustls::ClientConfig>,
    ) -> Result<(), ConnError> {
        frontend::ssl_request(&mut self.out);
        self.flush().await.map_err(|mut e| {
            e.kind = ErrorKind::Connect;
            e
        })?;
        let answer = self.read_exact_byte().await?;
        if answer != b'S' {
            return Err(ConnError::new(
                ErrorKind::Connect,
                "the server refused SSL (sslmode requires it)",
            ));
        }
        let name = crate::tls::server_name(target)
            .map_err(|e| ConnError::new(ErrorKind::Connect, format!("{e:#}")))?;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Detached) else {
            return Err(ConnError::new(ErrorKind::Protocol, "TLS started twice"));
        };
        let tls = TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| ConnError::new(ErrorKind::Connect, format!("TLS handshake: {e}")))?;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    async fn read_exact_byte(&mut self) -> Result<u8, ConnError> {
        while self.rbuf.len() <= self.rpos {
            self.fill().await?;
        }
        let b = self.rbuf[self.rpos];
        self.rpos += 1;
        Ok(b)
    }

    async fn startup(&mut self, target: &Target) -> Result<(), ConnError> {
        let params = [
            ("user", target.user.as_str()),
            ("database", target.database.as_str()),
            ("application_name", "sluice-loadtest"),
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(params.iter().copied(), &mut self.out)
            .map_err(io_err(ErrorKind::Connect))?;
        self.flush().await?;
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            let (tag, body) = self.next_frame().await?;
            let body = &self.rbuf[body];
            match tag {
                b'R' => {
                    let code = be_u32(body, 0)?;
                    match code {
                        0 => {}
                        3 => {
                            frontend::password_message(target.password.as_bytes(), &mut self.out)
                                .map_err(io_err(ErrorKind::Connect))?;
                            self.flush().await?;
                        }
                        5 => {
                            let salt: [u8; 4] =
                                body.get(4..8).and_then(|s| s.try_into().ok()).ok_or_else(
                                    || ConnError::new(ErrorKind::Protocol, "short md5 salt"),
                                )?;
                            let hash =
                                md5_hash(target.user.as_bytes(), target.password.as_bytes(), salt);
                            frontend::password_message(hash.as_bytes(), &mut self.out)
                                .map_err(io_err(ErrorKind::Connect))?;
                            self.flush().await?;
                        }
                        10 => {
                            let offers_scram = body[4..]
                                .split(|b| *b == 0)
                                .any(|m| m == sasl::SCRAM_SHA_256.as_bytes());
                            if !offers_scram {
                                return Err(ConnError::new(
                                    ErrorKind::Connect,
                                    "the server offers no SASL mechanism this client knows",
                                ));
                            }
                            // Channel binding is not attempted: "n" keeps servers that
                            // offer SCRAM-SHA-256-PLUS from suspecting a downgrade.
                            let s = sasl::ScramSha256::new(
                                target.password.as_bytes(),
                                sasl::ChannelBinding::unsupported(),
                            );
                            frontend::sasl_initial_response(
                                sasl::SCRAM_SHA_256,
                                s.message(),
                                &mut self.out,
                            )
                            .map_err(io_err(ErrorKind::Connect))?;
                            scram = Some(s);
                            self.flush().await?;
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                ConnError::new(ErrorKind::Protocol, "SASLContinue before SASL")
                            })?;
                            s.update(&body[4..]).map_err(io_err(ErrorKind::Connect))?;
                            frontend::sasl_response(s.message(), &mut self.out)
                                .map_err(io_err(ErrorKind::Connect))?;
                            self.flush().await?;
                        }
                        12 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                ConnError::new(ErrorKind::Protocol, "SASLFinal before SASL")
                            })?;
                            s.finish(&body[4..]).map_err(io_err(ErrorKind::Connect))?;
                        }
                        other => {
                            return Err(ConnError::new(
                                ErrorKind::Connect,
                                format!("authentication method {other} is not supported"),
                            ))
                        }
                    }
                }
                b'K' => self.backend_pid = be_u32(body, 0)? as i32,
                b'E' => {
                    let (state, message) = error_fields(body);
                    return Err(ConnError {
                        kind: ErrorKind::Connect,
                        sqlstate: state,
                        detail: message,
                    });
                }
                b'Z' => return Ok(()),
                _ => {}
            }
        }
    }

    /// Sends everything in `out`.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.out);
        let (res, mut buf) = self.stream.write_all(buf).await;
        buf.clear();
        self.out = buf;
        res.map(|_| ()).map_err(io_err(ErrorKind::Io))
    }

    /// Reads one more chunk from the socket into the read buffer.
    async fn fill(&mut self) -> Result<(), ConnError> {
        if self.rpos > 0 && self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        } else if self.rpos > self.rbuf.capacity() / 2 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        let mut buf = std::mem::take(&mut self.rbuf);
        let start = buf.len();
        let total = buf.bytes_total();
        let (res, slice) = self.stream.read(buf.slice_mut(start..total)).await;
        self.rbuf = slice.into_inner();
        match res {
            Ok(0) => Err(ConnError::new(
                ErrorKind::Io,
                "the server closed the connection",
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(ConnError::new(ErrorKind::Io, e.to_string())),
        }
    }

    /// The next complete backend frame: its tag and the range of its body in the buffer.
    async fn next_frame(&mut self) -> Result<(u8, std::ops::Range<usize>), ConnError> {
        loop {
            let avail = &self.rbuf[self.rpos..];
            if avail.len() >= 5 {
                let len = u32::from_be_bytes([avail[1], avail[2], avail[3], avail[4]]) as usize;
                if !(4..=MAX_FRAME).contains(&len) {
                    return Err(ConnError::new(
                        ErrorKind::Protocol,
                        format!("backend frame length {len} out of range"),
                    ));
                }
                if avail.len() > len {
                    let tag = avail[0];
                    let start = self.rpos + 5;
                    self.rpos += 1 + len;
                    return Ok((tag, start..self.rpos));
                }
                if self.rpos + 1 + len > self.rbuf.capacity() {
                    self.rbuf.drain(..self.rpos);
                    self.rpos = 0;
                    self.rbuf.reserve(1 + len);
                }
            }
            self.fill().await?;
        }
    }

    /// Whether a whole result (up to a ReadyForQuery) is already in the read buffer, so
    /// reading it needs no I/O. Pipelined connections use it to send a batch of new
    /// requests once per socket read instead of once per result.
    pub fn result_buffered(&self) -> bool {
        let mut at = self.rpos;
        while let Some(header) = self.rbuf.get(at..at + 5) {
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            if len < 4 || at + 1 + len > self.rbuf.len() {
                return false;
            }
            if header[0] == b'Z' {
                return true;
            }
            at += 1 + len;
        }
        false
    }

    /// Reads up to and including the next ReadyForQuery. A FATAL ErrorResponse followed by
    /// end of file is reported with its SQLSTATE.
    pub async fn read_result(&mut self) -> Result<ResultSummary, ConnError> {
        let mut summary = ResultSummary::default();
        loop {
            let frame = self.next_frame().await;
            let (tag, body) = match frame {
                Ok(f) => f,
                Err(mut e) => {
                    if e.sqlstate.is_none() {
                        e.sqlstate = summary.error;
                    }
                    return Err(e);
                }
            };
            match tag {
                b'Z' => return Ok(summary),
                b'D' => summary.data_rows += 1,
                b'E' if summary.error.is_none() => {
                    summary.error = error_fields(&self.rbuf[body]).0;
                }
                _ => {}
            }
        }
    }

    /// Reads until the first DataRow has arrived (for the disconnect-mid-result scenario).
    pub async fn read_first_data_row(&mut self) -> Result<(), ConnError> {
        loop {
            let (tag, body) = self.next_frame().await?;
            match tag {
                b'D' => return Ok(()),
                b'E' => {
                    let (state, detail) = error_fields(&self.rbuf[body]);
                    return Err(ConnError {
                        kind: ErrorKind::Protocol,
                        sqlstate: state,
                        detail,
                    });
                }
                b'Z' => {
                    return Err(ConnError::new(ErrorKind::Protocol, "result had no rows"));
                }
                _ => {}
            }
        }
    }

    /// Reads at most `max` more bytes of whatever the server sends; `Ok(0)` never happens
    /// (end of file is an error). For the slow-client scenario.
    pub async fn read_some(&mut self, max: usize) -> Result<usize, ConnError> {
        self.rbuf.clear();
        self.rpos = 0;
        let buf = std::mem::take(&mut self.rbuf);
        let (res, slice) = self
            .stream
            .read(buf.slice_mut(0..max.min(READ_CHUNK)))
            .await;
        self.rbuf = slice.into_inner();
        match res {
            Ok(0) => Err(ConnError::new(
                ErrorKind::Io,
                "the server closed the connection",
            )),
            Ok(n) => Ok(n),
            Err(e) => Err(ConnError::new(ErrorKind::Io, e.to_string())),
        }
    }

    /// Runs a simple query and returns the first column of every row as text (for the
    /// set-up and bookkeeping queries, never the load itself).
    pub async fn query_column(&mut self, sql: &str) -> Result<Vec<Option<String>>, ConnError> {
        frontend::query(sql, &mut self.out).map_err(io_err(ErrorKind::Io))?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error: Option<ConnError> = None;
        loop {
            let (tag, body) = self.next_frame().await?;
            let body = &self.rbuf[body];
            match tag {
                b'D' => rows.push(first_column(body)?),
                b'E' if error.is_none() => {
                    let (state, detail) = error_fields(body);
                    error = Some(ConnError {
                        kind: ErrorKind::Protocol,
                        sqlstate: state,
                        detail,
                    });
                }
                b'Z' => {
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    }
                }
                _ => {}
            }
        }
    }

    /// Says goodbye politely so the server does not log an unexpected EOF.
    pub async fn close(mut self) {
        frontend::terminate(&mut self.out);
        let _ = self.flush().await;
    }
}

fn be_u32(body: &[u8], at: usize) -> Result<u32, ConnError> {
    body.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| ConnError::new(ErrorKind::Protocol, "short backend message"))
}

/// SQLSTATE (`C`) and message (`M`) of an ErrorResponse or NoticeResponse body.
pub fn error_fields(body: &[u8]) -> (Option<SqlState>, String) {
    let mut state = None;
    let mut message = String::new();
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        let value = &tail[..end];
        match code {
            b'C' => state = value.try_into().ok(),
            b'M' => message = String::from_utf8_lossy(value).into_owned(),
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    (state, message)
}

fn first_column(body: &[u8]) -> Result<Option<String>, ConnError> {
    let short = || ConnError::new(ErrorKind::Protocol, "short DataRow");
    let count = body.get(0..2).ok_or_else(short)?;
    if u16::from_be_bytes([count[0], count[1]]) == 0 {
        return Ok(None);
    }
    let len = be_u32(body, 2)? as i32;
    if len < 0 {
        return Ok(None);
    }
    let value = body.get(6..6 + len as usize).ok_or_else(short)?;
    Ok(Some(String::from_utf8_lossy(value).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_fields_finds_sqlstate_and_message() {
        let body = b"SERROR\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0\0";
        let (state, message) = error_fields(body);
        assert_eq!(state, Some(*b"42P01"));
        assert_eq!(message, "relation \"x\" does not exist");
        assert_eq!(error_fields(b"C4\0\0").0, None);
        assert_eq!(error_fields(b"").0, None);
    }
}
