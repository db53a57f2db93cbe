//! What one recorded event is, and its binary encoding inside a block.
//!
//! Encoding of one record (all integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 16 | session id (UUID, big-endian as in its text form) |
//! | 8 | `mono_us`: monotonic microseconds (ordering within a worker) |
//! | 8 | `wall_us`: wall-clock microseconds since the Unix epoch |
//! | 1 | kind (see [`RecordKind::code`]) |
//! | 4 | payload length |
//! | n | payload: raw frame bytes for `Client`/`Server`, JSON for the others |

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Fixed part of an encoded record, before its payload.
pub const RECORD_HEADER_LEN: usize = 16 + 8 + 8 + 1 + 4;

/// One recorded event of one session.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub session: Uuid,
    /// Monotonic clock, microseconds: orders records of one worker even if the wall clock
    /// steps.
    pub mono_us: u64,
    /// Wall clock, microseconds since the Unix epoch: what audit searches filter on.
    pub wall_us: u64,
    pub kind: RecordKind,
}

/// What happened. Wire kinds carry the frame bytes untouched; metadata kinds are small
/// structs stored as JSON so that a future field does not need a format version.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordKind {
    SessionStart(SessionStart),
    /// One or more whole PostgreSQL frontend messages as the client sent them (type byte,
    /// length, body each), values the session's masking detects overwritten.
    Client(Bytes),
    /// One or more whole backend messages exactly as sent to the client (already masked).
    Server(Bytes),
    Decision(Decision),
    Approval(Approval),
    SessionEnd(SessionEnd),
}

/// Who connected to what, from where, how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStart {
    pub principal: String,
    pub groups: Vec<String>,
    pub resource: String,
    pub client_addr: String,
    /// `None` for a plaintext connection.
    pub tls: Option<TlsInfo>,
    /// The masking profile applied to this session's results, if any.
    pub masking_profile: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

/// The policy's judgement of one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Statement text, already masked by the caller.
    pub statement: String,
    /// Statement class as the classifier named it (e.g. `read`, `write`, `ddl`).
    pub class: String,
    pub verdict: Verdict,
    pub rule: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny,
    /// Waiting for a human approval.
    Held,
}

/// The outcome of an approval request for a held statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub request_id: String,
    pub approver: Option<String>,
    pub outcome: ApprovalOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalOutcome {
    Approved,
    Rejected,
    TimedOut,
}

/// How a session ended and what it moved.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SessionEnd {
    pub reason: String,
    pub statements: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Values masked, per masking rule name.
    pub masked: BTreeMap<String, u64>,
}

/// Why a block's bytes did not decode into records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordDecodeError {
    #[error("record at byte {at} of the block is truncated")]
    Truncated { at: usize },
    #[error("record at byte {at} of the block has unknown kind {kind}")]
    UnknownKind { at: usize, kind: u8 },
    #[error("record at byte {at} of the block has an invalid JSON payload: {message}")]
    BadPayload { at: usize, message: String },
}

impl RecordKind {
    /// The kind byte stored in the encoding. Never renumber: recordings outlive releases.
    pub fn code(&self) -> u8 {
        match self {
            RecordKind::SessionStart(_) => 1,
            RecordKind::Client(_) => 2,
            RecordKind::Server(_) => 3,
            RecordKind::Decision(_) => 4,
            RecordKind::Approval(_) => 5,
            RecordKind::SessionEnd(_) => 6,
        }
    }

    /// Bytes the payload will take, close enough for queue accounting (metadata is
    /// estimated before its JSON exists).
    pub(crate) fn approx_payload_len(&self) -> usize {
        match self {
            RecordKind::Client(b) | RecordKind::Server(b) => b.len(),
            RecordKind::Decision(d) => 96 + d.statement.len(),
            _ => 256,
        }
    }
}

impl Record {
    /// Approximate encoded size, for the recorder's byte-bounded queue.
    pub fn approx_len(&self) -> usize {
        RECORD_HEADER_LEN + self.kind.approx_payload_len()
    }

    /// Appends this record's encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.session.as_bytes());
        out.extend_from_slice(&self.mono_us.to_le_bytes());
        out.extend_from_slice(&self.wall_us.to_le_bytes());
        out.push(self.kind.code());
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let payload_start = out.len();
        match &self.kind {
            RecordKind::Client(b) | RecordKind::Server(b) => out.extend_from_slice(b),
            // Serializing these plain structs of strings and integers into a Vec cannot
            // fail; the fallback keeps the record (empty object) rather than panic.
            RecordKind::SessionStart(m) => json_into(out, m),
            RecordKind::Decision(m) => json_into(out, m),
            RecordKind::Approval(m) => json_into(out, m),
            RecordKind::SessionEnd(m) => json_into(out, m),
        }
        let payload_len = (out.len() - payload_start) as u32;
        out[len_at..len_at + 4].copy_from_slice(&payload_len.to_le_bytes());
    }

    /// Decodes every record of a block's uncompressed bytes.
    pub fn decode_all(mut bytes: &[u8]) -> Result<Vec<Record>, RecordDecodeError> {
        let total = bytes.len();
        let mut records = Vec::new();
        while !bytes.is_empty() {
            let at = total - bytes.len();
            let (record, used) = Record::decode_one(bytes, at)?;
            records.push(record);
            bytes = &bytes[used..];
        }
        Ok(records)
    }

    /// Decodes the record at the start of `bytes`; returns it and the bytes it used.
    /// `at` is only for error messages.
    pub fn decode_one(bytes: &[u8], at: usize) -> Result<(Record, usize), RecordDecodeError> {
        let truncated = RecordDecodeError::Truncated { at };
        let header = bytes.get(..RECORD_HEADER_LEN).ok_or(truncated.clone())?;
        let mut session = [0u8; 16];
        session.copy_from_slice(&header[..16]);
        let mono_us = le_u64(&header[16..24]);
        let wall_us = le_u64(&header[24..32]);
        let kind = header[32];
        let payload_len = le_u32(&header[33..37]) as usize;
        let end = RECORD_HEADER_LEN
            .checked_add(payload_len)
            .ok_or(truncated.clone())?;
        let payload = bytes.get(RECORD_HEADER_LEN..end).ok_or(truncated)?;
        let bad = |e: serde_json::Error| RecordDecodeError::BadPayload {
            at,
            message: e.to_string(),
        };
        let kind = match kind {
            1 => RecordKind::SessionStart(serde_json::from_slice(payload).map_err(bad)?),
            2 => RecordKind::Client(Bytes::copy_from_slice(payload)),
            3 => RecordKind::Server(Bytes::copy_from_slice(payload)),
            4 => RecordKind::Decision(serde_json::from_slice(payload).map_err(bad)?),
            5 => RecordKind::Approval(serde_json::from_slice(payload).map_err(bad)?),
            6 => RecordKind::SessionEnd(serde_json::from_slice(payload).map_err(bad)?),
            kind => return Err(RecordDecodeError::UnknownKind { at, kind }),
        };
        let record = Record {
            session: Uuid::from_bytes(session),
            mono_us,
            wall_us,
            kind,
        };
        Ok((record, end))
    }
}

fn json_into<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    let start = out.len();
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"{}");
    }
}

/// Reads a little-endian u64 from exactly 8 bytes (callers slice them out first).
pub(crate) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

pub(crate) fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

pub(crate) fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}
