//! Hand-built protocol bytes over a raw socket, for inputs no well-behaved driver sends.

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::guard;

/// A startup packet for protocol 3.0 with `params`.
pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes()); // 3.0
    for (name, value) in params {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// A typed frame: tag, length (body + 4), body.
pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A PasswordMessage carrying `password`.
pub fn password_message(password: &str) -> Vec<u8> {
    let mut body = password.as_bytes().to_vec();
    body.push(0);
    frame(b'p', &body)
}

/// What a read from the gateway produced.
#[derive(Debug)]
pub enum Reply {
    /// A complete backend message.
    Message { tag: u8, body: Vec<u8> },
    /// The gateway closed the connection (EOF or reset) at a message boundary.
    Closed,
}

/// Reads one backend message, or reports a close.
pub async fn read_message(stream: &mut TcpStream) -> Reply {
    let mut header = [0u8; 5];
    match guard("read from gateway", stream.read_exact(&mut header)).await {
        Ok(_) => {}
        Err(_) => return Reply::Closed,
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    assert!(
        (4..1 << 20).contains(&len),
        "gateway sent a frame with an absurd length {len}"
    );
    let mut body = vec![0u8; len - 4];
    guard("read frame body", stream.read_exact(&mut body))
        .await
        .expect("gateway closed in the middle of a frame");
    Reply::Message {
        tag: header[0],
        body,
    }
}

/// Fields of an ErrorResponse/NoticeResponse body, keyed by field type.
pub fn error_fields(body: &[u8]) -> HashMap<u8, String> {
    let mut fields = HashMap::new();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        fields.insert(kind, String::from_utf8_lossy(&tail[..end]).into_owned());
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    fields
}

/// Outcome of a bad input: the error the gateway sent, if any, before closing.
#[derive(Debug)]
pub struct Verdict {
    /// (severity, SQLSTATE, message) of an ErrorResponse, when one was sent.
    pub error: Option<(String, String, String)>,
    /// True when the connection was closed afterwards.
    pub closed: bool,
}

/// Reads until the gateway closes the connection, collecting the ErrorResponse if one
/// arrives. Any other message at this point is a failure.
pub async fn read_until_close(stream: &mut TcpStream) -> Verdict {
    let mut error = None;
    loop {
        match read_message(stream).await {
            Reply::Closed => {
                return Verdict {
                    error,
                    closed: true,
                }
            }
            Reply::Message { tag: b'E', body } => {
                let fields = error_fields(&body);
                let get = |k: u8| fields.get(&k).cloned().unwrap_or_default();
                error = Some((get(b'S'), get(b'C'), get(b'M')));
            }
            // A notice before the error is harmless.
            Reply::Message { tag: b'N', .. } => {}
            Reply::Message { tag, body } => panic!(
                "unexpected message {:?} ({} bytes) instead of an error and a close",
                tag as char,
                body.len()
            ),
        }
    }
}

/// Opens a raw connection and authenticates with `token` as `user` on `dbname`, reading
/// up to the first ReadyForQuery. Returns the stream positioned after it.
pub async fn authenticated(addr: SocketAddr, user: &str, token: &str, dbname: &str) -> TcpStream {
    let mut stream = guard("raw connect", TcpStream::connect(addr))
        .await
        .expect("raw connect");
    stream
        .write_all(&startup_packet(&[("user", user), ("database", dbname)]))
        .await
        .expect("send startup");
    match read_message(&mut stream).await {
        Reply::Message { tag: b'R', body } => {
            assert_eq!(
                body,
                [0, 0, 0, 3],
                "gateway must ask for a cleartext password"
            )
        }
        other => panic!("expected AuthenticationCleartextPassword, got {other:?}"),
    }
    stream
        .write_all(&password_message(token))
        .await
        .expect("send token");
    loop {
        match read_message(&mut stream).await {
            Reply::Message { tag: b'Z', .. } => return stream,
            Reply::Message { tag: b'E', body } => {
                panic!("login refused: {:?}", error_fields(&body))
            }
            Reply::Message { .. } => {}
            Reply::Closed => panic!("gateway closed during login"),
        }
    }
}
