//! Frame boundaries on a relayed byte stream, without copying and without buffering what
//! need not be buffered.
//!
//! The relay reads whatever the socket has, asks the walker how much of the buffer's front
//! can be forwarded, and forwards exactly that as one slice (`BytesMut::split_to`). Frames
//! the gateway inspects (the caller says which tags) are only released once complete, so
//! the inspector sees the whole body; every other frame streams through in pieces as it
//! arrives, so a 1 GiB DataRow or an endless COPY never needs more than one read buffer.

use sluice_codecs::{peek_header, Decode, DecodeError, FrameHeader};

/// Walks one direction of a relayed connection.
#[derive(Debug)]
pub struct FrameWalker {
    /// Bytes of a pass-through frame still to come from the peer.
    passthrough_left: usize,
    max_len: usize,
}

/// Result of a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    /// Bytes at the front of the buffer that may be forwarded now.
    pub forward: usize,
    /// When an inspected frame is incomplete: the buffer must be able to hold this many
    /// bytes from `forward` on before the next read.
    pub need_capacity: Option<usize>,
}

impl FrameWalker {
    /// A walker that refuses frames longer than `max_len` (length field included).
    pub fn new(max_len: usize) -> Self {
        FrameWalker {
            passthrough_left: 0,
            max_len,
        }
    }

    /// True when the stream is between frames (nothing partially forwarded).
    pub fn at_boundary(&self) -> bool {
        self.passthrough_left == 0
    }

    /// Walks `buf`. `inspect(tag)` says whether a frame must be complete before it is
    /// released; `on_frame` is called for every frame header seen, with the frame's offset
    /// in `buf` and the full body for inspected frames (an empty slice otherwise). Frames are
    /// reported in stream order.
    pub fn walk(
        &mut self,
        buf: &[u8],
        inspect: impl FnMut(u8) -> bool,
        mut on_frame: impl FnMut(FrameHeader, usize, &[u8]),
    ) -> Result<Walked, DecodeError> {
        self.walk_until(buf, inspect, |header, offset, body| {
            on_frame(header, offset, body);
            true
        })
    }

    /// [`walk`](Self::walk), except that `on_frame` may return `false` for an inspected
    /// frame to stop in front of it: the frame is not released (`forward` ends where it
    /// begins) and the next walk starts with it again. Returning `false` for a frame that
    /// is not inspected has no effect.
    pub fn walk_until(
        &mut self,
        buf: &[u8],
        mut inspect: impl FnMut(u8) -> bool,
        mut on_frame: impl FnMut(FrameHeader, usize, &[u8]) -> bool,
    ) -> Result<Walked, DecodeError> {
        let mut pos = self.passthrough_left.min(buf.len());
        self.passthrough_left -= pos;
        if self.passthrough_left > 0 {
            return Ok(Walked {
                forward: pos,
                need_capacity: None,
            });
        }
        loop {
            let rest = &buf[pos..];
            let header = match peek_header(rest, self.max_len)? {
                Decode::NeedMore(_) => {
                    return Ok(Walked {
                        forward: pos,
                        need_capacity: None,
                    })
                }
                Decode::Frame(header) => header,
            };
            let frame_len = header.frame_len();
            if inspect(header.tag) {
                match rest.get(5..frame_len) {
                    Some(body) => {
                        if !on_frame(header, pos, body) {
                            return Ok(Walked {
                                forward: pos,
                                need_capacity: None,
                            });
                        }
                        pos += frame_len;
                    }
                    None => {
                        return Ok(Walked {
                            forward: pos,
                            need_capacity: Some(frame_len),
                        })
                    }
                }
            } else {
                let _ = on_frame(header, pos, &[]);
                if rest.len() >= frame_len {
                    pos += frame_len;
                } else {
                    self.passthrough_left = frame_len - rest.len();
                    return Ok(Walked {
                        forward: buf.len(),
                        need_capacity: None,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// Feeds `stream` in chunks of `chunk` bytes through a walker the way the relay does
    /// (keeping what was not forwarded) and returns the forwarded bytes and inspected bodies.
    fn relay(stream: &[u8], chunk: usize, inspect_tags: &[u8]) -> (Vec<u8>, Vec<(u8, Vec<u8>)>) {
        let mut walker = FrameWalker::new(1 << 20);
        let mut pending = Vec::new();
        let mut forwarded = Vec::new();
        let mut seen = Vec::new();
        for piece in stream.chunks(chunk) {
            pending.extend_from_slice(piece);
            let walked = walker
                .walk(
                    &pending,
                    |t| inspect_tags.contains(&t),
                    |h, _, body| {
                        if inspect_tags.contains(&h.tag) {
                            seen.push((h.tag, body.to_vec()));
                        }
                    },
                )
                .expect("valid stream");
            forwarded.extend(pending.drain(..walked.forward));
        }
        assert!(pending.is_empty(), "everything forwarded at the end");
        (forwarded, seen)
    }

    #[test]
    fn every_chunking_forwards_the_stream_unchanged_and_sees_inspected_frames_whole() {
        let mut stream = frame(b'T', b"rowdesc");
        for i in 0..20u8 {
            stream.extend(frame(b'D', &vec![i; 50 + i as usize]));
        }
        stream.extend(frame(b'C', b"SELECT 20\0"));
        stream.extend(frame(b'Z', b"I"));
        for chunk in [1, 2, 3, 5, 7, 64, 1000, stream.len()] {
            let (forwarded, seen) = relay(&stream, chunk, b"ZC");
            assert_eq!(forwarded, stream, "chunk {chunk}");
            assert_eq!(
                seen,
                vec![(b'C', b"SELECT 20\0".to_vec()), (b'Z', b"I".to_vec())],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn large_passthrough_frames_are_released_before_they_are_complete() {
        let big = frame(b'D', &vec![7u8; 100_000]);
        let mut walker = FrameWalker::new(1 << 20);
        let walked = walker
            .walk(&big[..4096], |_| false, |_, _, _| {})
            .expect("ok");
        assert_eq!(walked.forward, 4096);
        assert!(!walker.at_boundary());
        let walked = walker
            .walk(&big[4096..8192], |_| false, |_, _, _| {})
            .expect("ok");
        assert_eq!(walked.forward, 4096);
    }

    #[test]
    fn incomplete_inspected_frame_asks_for_room() {
        let q = frame(b'Q', &vec![b'x'; 10_000]);
        let mut walker = FrameWalker::new(1 << 20);
        let walked = walker.walk(&q[..100], |_| true, |_, _, _| {}).expect("ok");
        assert_eq!(
            walked,
            Walked {
                forward: 0,
                need_capacity: Some(q.len())
            }
        );
    }

    #[test]
    fn a_walk_can_stop_in_front_of_an_inspected_frame_and_resume_with_it() {
        let mut stream = frame(b'P', b"a\0");
        stream.extend(frame(b'E', b"\0\0\0\0\0"));
        stream.extend(frame(b'S', b""));
        let mut walker = FrameWalker::new(1 << 20);
        let walked = walker
            .walk_until(&stream, |t| t == b'E', |h, _, _| h.tag != b'E')
            .expect("ok");
        assert_eq!(
            walked.forward, 7,
            "the Parse is released, the Execute is not"
        );
        assert!(walker.at_boundary());
        let mut seen = Vec::new();
        let walked = walker
            .walk_until(
                &stream[7..],
                |t| t == b'E',
                |h, _, _| {
                    seen.push(h.tag);
                    true
                },
            )
            .expect("ok");
        assert_eq!(walked.forward, stream.len() - 7);
        assert_eq!(seen, vec![b'E', b'S']);
    }

    #[test]
    fn oversized_and_bad_lengths_are_errors_before_buffering() {
        let mut walker = FrameWalker::new(1024);
        let mut huge = vec![b'Q'];
        huge.extend_from_slice(&(1u32 << 30).to_be_bytes());
        assert!(matches!(
            walker.walk(&huge, |_| true, |_, _, _| {}),
            Err(DecodeError::TooLarge { .. })
        ));
        let bad = [b'Q', 0, 0, 0, 2];
        assert!(walker.walk(&bad, |_| true, |_, _, _| {}).is_err());
    }
}
