//! One stream type for every kind of connection the gateway holds (plain TCP, TLS toward a
//! client, TLS toward a backend), so the relay is written once and dispatches with a match
//! instead of being monomorphised four times.

use bytes::{Bytes, BytesMut};
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split};
use monoio::net::TcpStream;
use monoio::BufResult;
use monoio_rustls::{ClientTlsStream, ServerTlsStream};

/// A connection to a client or a backend.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS terminated by the gateway (client side).
    ServerTls(Box<ServerTlsStream<TcpStream>>),
    /// TLS originated by the gateway (backend side).
    ClientTls(Box<ClientTlsStream<TcpStream>>),
}

// SAFETY: every variant is itself `Split` (monoio's TcpStream, and monoio-rustls streams
// over a `Split` IO), so reads and writes on the halves touch independent state as the
// trait requires; the enum adds no shared state of its own.
unsafe impl Split for Conn {}

impl Conn {
    /// True when the bytes are encrypted on the wire.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Conn::Plain(_))
    }
}

impl AsyncReadRent for Conn {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::ServerTls(s) => s.read(buf).await,
            Conn::ClientTls(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.readv(buf).await,
            Conn::ServerTls(s) => s.readv(buf).await,
            Conn::ClientTls(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Conn {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.write(buf).await,
            Conn::ServerTls(s) => s.write(buf).await,
            Conn::ClientTls(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.writev(buf).await,
            Conn::ServerTls(s) => s.writev(buf).await,
            Conn::ClientTls(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush().await,
            Conn::ServerTls(s) => s.flush().await,
            Conn::ClientTls(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.shutdown().await,
            Conn::ServerTls(s) => s.shutdown().await,
            Conn::ClientTls(s) => s.shutdown().await,
        }
    }
}

/// Reads once into the spare capacity of `buf`, growing it to at least `min_spare` free
/// bytes first. Returns the byte count (0 = peer closed) and the buffer.
pub async fn read_into<R: AsyncReadRent>(
    reader: &mut R,
    mut buf: BytesMut,
    min_spare: usize,
) -> (std::io::Result<usize>, BytesMut) {
    if buf.capacity() - buf.len() < min_spare {
        buf.reserve(min_spare);
    }
    // monoio's `IoBufMut for BytesMut` writes from the start of the buffer; reading into
    // the spare-capacity slice appends after what is already buffered.
    let (len, cap) = (buf.len(), buf.capacity());
    let (result, slice) = reader.read(buf.slice_mut(len..cap)).await;
    (result, slice.into_inner())
}

/// Writes all of `bytes`.
pub async fn write_all<W: AsyncWriteRent>(writer: &mut W, bytes: Bytes) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let (result, _) = writer.write_all(bytes).await;
    result.map(|_| ())
}
