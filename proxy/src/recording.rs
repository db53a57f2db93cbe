//! What a session hands its worker's recorder: the bytes each side sent, as forwarded (the
//! server's already masked; the client's with detected values overwritten when the session
//! has a masking profile), its statements' decisions, and its start and end.
//!
//! Records go to the worker's [`RecorderHandle`], whose own thread writes the segment
//! files; appending is a queue push. A record that cannot be appended (the writer failed,
//! or under `overflow = "fail_closed"` its queue is full) ends the session: the gateway
//! never lets a session go on unrecorded.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sluice_masker::SessionMasker;
use sluice_recorder::{Record, RecordError, RecordKind, RecorderHandle, Uuid};

use crate::handshake::Refusal;

/// Monotonic and wall-clock time, in microseconds (monotonic since the first call in
/// this process).
pub fn now_us() -> (u64, u64) {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let mono = EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64;
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    (mono, wall)
}

/// The error a session ends with when its recording fails.
pub fn refusal(e: &RecordError) -> Refusal {
    Refusal::new("53000", format!("this session can no longer be recorded ({e}), so the gateway ends it"))
        .hint("every session through the gateway is recorded; ask the gateway operator to check the recording directory's disk")
}

/// One session's recording.
pub struct SessionRecording {
    handle: RecorderHandle,
    session: Uuid,
    /// Reused for client bytes with values masked.
    masked: RefCell<Vec<u8>>,
}

impl SessionRecording {
    /// A recording for `session` through the worker's `handle`.
    pub fn new(handle: RecorderHandle, session: Uuid) -> SessionRecording {
        SessionRecording {
            handle,
            session,
            masked: RefCell::new(Vec::new()),
        }
    }

    /// Appends one record of this session, stamped now.
    pub fn append(&self, kind: RecordKind) -> Result<(), Refusal> {
        let (mono_us, wall_us) = now_us();
        self.handle
            .append(Record {
                session: self.session,
                mono_us,
                wall_us,
                kind,
            })
            .map_err(|e| {
                tracing::error!(session = %self.session, error = %e, "session recording failed: ending the session");
                refusal(&e)
            })
    }

    /// Whole frontend messages the client sent (before any refused one is replaced). With
    /// a masking profile, values its detectors find are overwritten first: the recording
    /// keeps no more than the session's own results may show.
    pub fn client(
        &self,
        frames: &Bytes,
        masking: Option<&RefCell<SessionMasker>>,
    ) -> Result<(), Refusal> {
        if let Some(masking) = masking {
            let mut masked = self.masked.borrow_mut();
            masked.clear();
            if masking
                .borrow()
                .masker()
                .mask_client_frames(frames, &mut masked)
            {
                return self.append(RecordKind::Client(Bytes::copy_from_slice(&masked)));
            }
        }
        self.append(RecordKind::Client(frames.clone()))
    }

    /// Whole backend messages exactly as they go to the client (already masked).
    pub fn server(&self, frames: &Bytes) -> Result<(), Refusal> {
        self.append(RecordKind::Server(frames.clone()))
    }
}
