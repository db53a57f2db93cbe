//! Fuzz bodies, kept in the library so the fuzz targets under `fuzz/` stay
//! one-line wrappers and the same checks can run from ordinary tests.
//!
//! Each body decodes its input as a stream until an error or `NeedMore`, and
//! for every decoded message asserts that re-encoding gives back exactly the
//! bytes it came from and that those bytes decode to the same message. The
//! parsers are strict, so the encoding is canonical; a failed assertion is a
//! real bug. Each body also re-feeds the input in small chunks (size taken
//! from the first byte) and asserts the same frames come out, which exercises
//! every `NeedMore` path.

use bytes::BytesMut;

use crate::{backend, frontend, startup, Decode, DecodeError, Limits};

/// Decodes everything `decode` yields from `data`, fed `chunk` bytes at a time
/// (all at once when `chunk` is 0). Returns the frames with the exact bytes
/// each one consumed, and how the stream ended.
fn run<T>(
    data: &[u8],
    chunk: usize,
    decode: impl Fn(&mut BytesMut, &Limits) -> Result<Decode<T>, DecodeError>,
) -> (Vec<(T, Vec<u8>)>, Option<DecodeError>) {
    let limits = Limits::default();
    let chunk = if chunk == 0 { data.len().max(1) } else { chunk };
    let mut buf = BytesMut::new();
    // `buf` always holds exactly `data[consumed..fed]`; checking against that
    // instead of a snapshot keeps each step O(frame), not O(buffer).
    let (mut consumed, mut fed) = (0, 0);
    let mut frames = Vec::new();
    loop {
        let held = buf.len();
        match decode(&mut buf, &limits) {
            Ok(Decode::Frame(m)) => {
                let used = held - buf.len();
                let raw = data.get(consumed..consumed + used).unwrap_or_default();
                frames.push((m, raw.to_vec()));
                consumed += used;
            }
            Ok(Decode::NeedMore(n)) => {
                assert!(n > 0, "NeedMore(0) would spin the caller");
                assert_eq!(
                    &buf[..],
                    data.get(consumed..fed).unwrap_or_default(),
                    "NeedMore must leave the buffer untouched"
                );
                if fed >= data.len() {
                    return (frames, None);
                }
                let end = (fed + chunk).min(data.len());
                buf.extend_from_slice(data.get(fed..end).unwrap_or_default());
                fed = end;
            }
            Err(e) => return (frames, Some(e)),
        }
    }
}

fn check<T: PartialEq + core::fmt::Debug>(
    data: &[u8],
    decode: impl Fn(&mut BytesMut, &Limits) -> Result<Decode<T>, DecodeError> + Copy,
    encode: impl Fn(&T, &mut BytesMut),
) {
    let (frames, end) = run(data, 0, decode);
    for (m, raw) in &frames {
        let mut out = BytesMut::new();
        encode(m, &mut out);
        assert_eq!(&out[..], &raw[..], "re-encoding {m:?} changed its bytes");
        match decode(&mut out, &Limits::default()) {
            Ok(Decode::Frame(back)) => assert_eq!(&back, m, "decode(encode(m)) != m"),
            other => panic!("re-encoded {m:?} did not decode: {other:?}"),
        }
        assert!(out.is_empty(), "re-encoded {m:?} left bytes behind");
    }
    let chunk = data.first().map_or(1, |&b| usize::from(b % 16) + 1);
    let (chunked, chunked_end) = run(data, chunk, decode);
    assert_eq!(chunked, frames, "chunked feeding changed the frames");
    assert_eq!(chunked_end, end, "chunked feeding changed the outcome");
}

/// Fuzz body: `data` as a client's post-startup message stream.
pub fn frontend_stream(data: &[u8]) {
    check(data, frontend::decode, frontend::FrontendMessage::encode);
    // The 'p' body helpers see attacker bytes before authentication.
    if let Some(body) = data.get(1..) {
        let body = bytes::Bytes::copy_from_slice(body);
        let _ = frontend::password(&body);
        let _ = frontend::sasl_initial_response(&body);
    }
}

/// Fuzz body: `data` as a server's message stream.
pub fn backend_stream(data: &[u8]) {
    check(data, backend::decode, |m: &backend::BackendMessage, out| {
        if let backend::BackendMessage::DataRow(row) = m {
            // A validated row must yield exactly its column count, and its
            // columns must rebuild the same row.
            let cols: Vec<_> = row.raw_columns().collect();
            assert_eq!(cols.len(), row.len());
            assert_eq!(&backend::DataRow::from_columns(&cols), row);
        }
        m.encode(out)
    });
}

/// Fuzz body: `data` as startup-phase packets (a client may send SSLRequest
/// and then a StartupMessage on the same connection).
pub fn startup(data: &[u8]) {
    check(data, startup::decode, startup::StartupPacket::encode);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_accept_garbage_and_valid_streams() {
        for data in [
            &b""[..],
            b"Q\0\0\0\x09SELECT\0",
            b"\0\0\0\x08\x04\xd2\x16\x2f",
            b"Z\0\0\0\x05I",
            b"D\0\0\0\x0a\0\x01\xff\xff\xff\xff",
        ] {
            frontend_stream(data);
            backend_stream(data);
            startup(data);
        }
    }
}
