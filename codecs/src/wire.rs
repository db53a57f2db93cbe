//! Encoding helpers shared by the three message families.

use bytes::{BufMut, BytesMut};

/// Writes a typed frame: tag, a length placeholder, the body, then the real
/// length. Writing the body first and patching the length keeps every encoder
/// to a single pass with no size pre-computation to get wrong.
pub(crate) fn frame(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_u32(0);
    body(out);
    patch_len(out, at);
}

/// Fills in the 4-byte length at `at`, counting from `at` to the end.
pub(crate) fn patch_len(out: &mut BytesMut, at: usize) {
    // A body over 4 GiB cannot be represented; saturating makes the decoder
    // reject it (TooLarge) instead of reading a wrapped, plausible length.
    let len = u32::try_from(out.len() - at).unwrap_or(u32::MAX);
    if let Some(slot) = out.get_mut(at..at + 4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

/// Writes a protocol `String`. A NUL inside the value cannot be carried by
/// the wire format, and writing it would end the string early and shift every
/// later field, so it is dropped. Values produced by our decoders never
/// contain one; this only matters for text the gateway composes itself.
pub(crate) fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    for part in s.split(|&b| b == 0) {
        out.put_slice(part);
    }
    out.put_u8(0);
}

/// Writes a 16-bit element count. Counts above 65 535 cannot be expressed;
/// callers only build such lists from decoded messages, where they fit.
pub(crate) fn put_count16(out: &mut BytesMut, n: usize) {
    out.put_u16(u16::try_from(n).unwrap_or(u16::MAX));
}

/// Writes an Int32-length-prefixed value, `-1` for NULL.
pub(crate) fn put_nullable(out: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => out.put_i32(-1),
        Some(v) => {
            out.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
            out.put_slice(v);
        }
    }
}
