//! Reading and writing the few protocol shapes the masker touches, over plain byte
//! slices: every read is bounds-checked and returns `None` rather than panicking, and every
//! frame written gets its length patched in after its body, so a length can never disagree
//! with what was written.

/// Largest frame the masker writes (PostgreSQL's own ceiling for a message). A rewrite
/// that would grow past it is replaced by something smaller (see the callers).
pub(crate) const MAX_FRAME: usize = 1 << 30;

/// A cursor over a message body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Reader<'a> {
        Reader { rest: body }
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.rest.split_at_checked(n)?;
        self.rest = tail;
        Some(head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&b, tail) = self.rest.split_first()?;
        self.rest = tail;
        Some(b)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes(b.try_into().ok()?))
    }

    pub(crate) fn i16(&mut self) -> Option<i16> {
        let b = self.take(2)?;
        Some(i16::from_be_bytes(b.try_into().ok()?))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes(b.try_into().ok()?))
    }

    pub(crate) fn i32(&mut self) -> Option<i32> {
        let b = self.take(4)?;
        Some(i32::from_be_bytes(b.try_into().ok()?))
    }

    /// A NUL-terminated string, without its NUL.
    pub(crate) fn cstr(&mut self) -> Option<&'a [u8]> {
        let end = memchr::memchr(0, self.rest)?;
        let s = self.take(end)?;
        self.take(1)?;
        Some(s)
    }

    /// An Int32-length-prefixed value: `Some(None)` for NULL (-1), `None` if malformed.
    pub(crate) fn nullable(&mut self) -> Option<Option<&'a [u8]>> {
        match self.i32()? {
            -1 => Some(None),
            n => Some(Some(self.take(usize::try_from(n).ok()?)?)),
        }
    }
}

/// Starts a frame: writes the tag and a length placeholder; returns where the length is.
pub(crate) fn begin(out: &mut Vec<u8>, tag: u8) -> usize {
    out.push(tag);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

/// Finishes the frame begun at `at`: its length counts from `at` to the end of `out`.
pub(crate) fn end(out: &mut [u8], at: usize) {
    let len = u32::try_from(out.len().saturating_sub(at)).unwrap_or(u32::MAX);
    if let Some(slot) = out.get_mut(at..at + 4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

/// Writes a value's Int32 length placeholder; returns where it is.
pub(crate) fn begin_value(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

/// Patches the length of the value begun at `at` (its bytes follow the length).
pub(crate) fn end_value(out: &mut [u8], at: usize) {
    let len = out.len().saturating_sub(at + 4);
    let len = i32::try_from(len).unwrap_or(i32::MAX);
    if let Some(slot) = out.get_mut(at..at + 4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

/// Writes a NULL value.
pub(crate) fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i32).to_be_bytes());
}

/// Writes a whole value with its length.
pub(crate) fn value(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&i32::try_from(v.len()).unwrap_or(i32::MAX).to_be_bytes());
    out.extend_from_slice(v);
}

/// Writes a whole frame.
pub(crate) fn frame(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    let at = begin(out, tag);
    out.extend_from_slice(body);
    end(out, at);
}

/// Writes a NoticeResponse of severity NOTICE, SQLSTATE 01000 (warning), from the gateway.
pub(crate) fn notice(out: &mut Vec<u8>, message: &str, hint: Option<&str>) {
    let at = begin(out, b'N');
    for (code, text) in [
        (b'S', "NOTICE"),
        (b'V', "NOTICE"),
        (b'C', "01000"),
        (b'M', message),
    ] {
        field(out, code, text.as_bytes());
    }
    if let Some(h) = hint {
        field(out, b'H', h.as_bytes());
    }
    out.push(0);
    end(out, at);
}

/// Writes one error/notice field; a NUL inside the text is dropped (it would end the
/// field early).
pub(crate) fn field(out: &mut Vec<u8>, code: u8, text: &[u8]) {
    out.push(code);
    cstr(out, text);
}

/// Writes a protocol string, dropping any NUL inside it.
pub(crate) fn cstr(out: &mut Vec<u8>, text: &[u8]) {
    if memchr::memchr(0, text).is_none() {
        out.extend_from_slice(text);
    } else {
        out.extend(text.iter().copied().filter(|&b| b != 0));
    }
    out.push(0);
}
