//! The writer thread that keeps disk I/O off a proxy worker's loop, fed by a queue bounded
//! in bytes.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::record::Record;
use crate::writer::{RecorderConfig, Recovery, SealedSegment, SegmentWriter, WriterStats};

/// What [`RecorderHandle::append`] does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Wait for room. The proxy worker — and so every session on that core — waits for
    /// the disk; nothing is lost.
    Block,
    /// Return [`RecordError::Full`] at once; the proxy refuses the statement with an error
    /// that says recording is saturated.
    FailClosed,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    #[error("the session recorder is saturated ({queued_bytes} bytes waiting for the disk); refused so nothing goes unrecorded")]
    Full { queued_bytes: usize },
    #[error("the session recorder cannot write its recording: {0}")]
    Io(Arc<io::Error>),
    #[error("the session recorder has shut down")]
    Closed,
}

/// A snapshot of one recorder's counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// The segment writer's own counters (records, bytes in and out, blocks, segments,
    /// fsyncs).
    pub writer: WriterStats,
    /// Writer operations that wrote at least one block, and their total and worst time.
    pub flushes: u64,
    pub flush_latency_sum_us: u64,
    pub flush_latency_max_us: u64,
    /// Appends that found the queue full (waited under `Block`, refused under
    /// `FailClosed`).
    pub queue_full: u64,
    pub queued_bytes: u64,
    /// Records accepted into the queue but not written because the writer failed. Never
    /// silent: the failure is also returned by every later append and flush.
    pub unwritten_after_error: u64,
}

enum Item {
    Record(Record, usize),
    Flush(u64),
}

struct State {
    queue: VecDeque<Item>,
    queued_bytes: usize,
    shutting_down: bool,
    writer_done: bool,
    writer_waiting: bool,
    error: Option<Arc<io::Error>>,
    next_flush_ticket: u64,
    flushed_ticket: u64,
    sealed: Option<SealedSegment>,
    stats: RecorderStats,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled to the writer: work queued or shutdown.
    work: Condvar,
    /// Signalled to producers: queue space freed, flush done, writer done or failed.
    progress: Condvar,
    queue_bytes: usize,
    overflow: Overflow,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue half-updated (every
        // update is a single push/take), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, cv: &Condvar, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        cv.wait(guard).unwrap_or_else(|p| p.into_inner())
    }
}

/// Entry point: [`Recorder::spawn`].
pub struct Recorder;

/// Cloneable handle a proxy worker appends through. When the last clone is dropped the
/// writer seals its segment and exits.
#[derive(Clone)]
pub struct RecorderHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    shared: Arc<Shared>,
    recovery: Option<Recovery>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.shutting_down = true;
        drop(state);
        self.shared.work.notify_all();
    }
}

impl Recorder {
    /// Opens (recovering if needed) the worker's segment on the calling thread, so a
    /// recording directory that cannot be written is an error at start, then starts the
    /// writer thread. `queue_bytes` bounds the records waiting for it.
    pub fn spawn(
        dir: impl AsRef<Path>,
        worker: u16,
        config: RecorderConfig,
        queue_bytes: usize,
        overflow: Overflow,
    ) -> io::Result<(RecorderHandle, JoinHandle<io::Result<WriterStats>>)> {
        let mut writer = SegmentWriter::create(dir, worker, config)?;
        let recovery = writer.recovery().cloned();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued_bytes: 0,
                shutting_down: false,
                writer_done: false,
                writer_waiting: false,
                error: None,
                next_flush_ticket: 0,
                flushed_ticket: 0,
                sealed: None,
                stats: RecorderStats::default(),
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            queue_bytes,
            overflow,
        });
        let thread_shared = shared.clone();
        let join = std::thread::Builder::new()
            .name(format!("sluice-rec-{worker:03}"))
            .spawn(move || {
                let result = writer_loop(&thread_shared, &mut writer);
                finish(&thread_shared, writer, result)
            })?;
        let handle = RecorderHandle {
            inner: Arc::new(HandleInner { shared, recovery }),
        };
        Ok((handle, join))
    }
}

impl RecorderHandle {
    /// Queues a record for the writer. See [`Overflow`] for what happens when the queue
    /// is full. After a write failure every call returns [`RecordError::Io`].
    pub fn append(&self, record: Record) -> Result<(), RecordError> {
        let shared = &self.inner.shared;
        let len = record.approx_len();
        let mut state = shared.lock();
        let mut counted_full = false;
        loop {
            if let Some(e) = &state.error {
                return Err(RecordError::Io(e.clone()));
            }
            if state.shutting_down || state.writer_done {
                return Err(RecordError::Closed);
            }
            // A record larger than the whole queue still goes through when the queue is
            // empty, or it could never be recorded.
            let fits = state.queued_bytes == 0 || state.queued_bytes + len <= shared.queue_bytes;
            if fits {
                break;
            }
            if !counted_full {
                state.stats.queue_full += 1;
                counted_full = true;
            }
            match shared.overflow {
                Overflow::FailClosed => {
                    return Err(RecordError::Full {
                        queued_bytes: state.queued_bytes,
                    })
                }
                Overflow::Block => state = shared.wait(&shared.progress, state),
            }
        }
        state.queued_bytes += len;
        state.queue.push_back(Item::Record(record, len));
        // The writer wakes on its own every half flush interval and takes the whole queue;
        // waking it per record would cost the worker a futex wake and the writer a context
        // switch for every few hundred bytes. Only a queue filling up calls it early.
        let wake = state.writer_waiting && state.queued_bytes >= shared.queue_bytes / 8;
        drop(state);
        if wake {
            shared.work.notify_one();
        }
        Ok(())
    }

    /// Returns once every record queued before this call is written to the segment file
    /// (and synced as the fsync policy says).
    pub fn flush(&self) -> Result<(), RecordError> {
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        if state.writer_done {
            return match &state.error {
                Some(e) => Err(RecordError::Io(e.clone())),
                None => Err(RecordError::Closed),
            };
        }
        state.next_flush_ticket += 1;
        let ticket = state.next_flush_ticket;
        state.queue.push_back(Item::Flush(ticket));
        shared.work.notify_one();
        loop {
            if let Some(e) = &state.error {
                return Err(RecordError::Io(e.clone()));
            }
            if state.flushed_ticket >= ticket {
                return Ok(());
            }
            if state.writer_done {
                return Err(RecordError::Closed);
            }
            state = shared.wait(&shared.progress, state);
        }
    }

    /// Writes everything queued, seals the segment and stops the writer. Later appends
    /// return [`RecordError::Closed`].
    pub fn shutdown(&self) -> Result<Option<SealedSegment>, RecordError> {
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        state.shutting_down = true;
        shared.work.notify_all();
        while !state.writer_done {
            state = shared.wait(&shared.progress, state);
        }
        match &state.error {
            Some(e) => Err(RecordError::Io(e.clone())),
            None => Ok(state.sealed.clone()),
        }
    }

    pub fn stats(&self) -> RecorderStats {
        let state = self.inner.shared.lock();
        RecorderStats {
            queued_bytes: state.queued_bytes as u64,
            ..state.stats
        }
    }

    /// What opening the worker's recording recovered after a crash, if anything.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.inner.recovery.as_ref()
    }
}

/// Takes batches off the queue and writes them until shutdown or an error.
fn writer_loop(shared: &Shared, writer: &mut SegmentWriter) -> io::Result<()> {
    let flush_interval = writer.config().flush_interval;
    let tick = (flush_interval / 2).max(Duration::from_millis(1));
    // When the oldest record not yet in a written block was appended.
    let mut pending_since: Option<Instant> = None;
    loop {
        let (batch, batch_bytes, shutting_down) = {
            let mut state = shared.lock();
            if state.queue.is_empty() && !state.shutting_down {
                state.writer_waiting = true;
                let (s, _) = shared
                    .work
                    .wait_timeout(state, tick)
                    .unwrap_or_else(|p| p.into_inner());
                state = s;
                state.writer_waiting = false;
            }
            let batch = std::mem::take(&mut state.queue);
            let bytes = batch
                .iter()
                .map(|i| match i {
                    Item::Record(_, len) => *len,
                    Item::Flush(_) => 0,
                })
                .sum::<usize>();
            (batch, bytes, state.shutting_down)
        };
        let mut flushed_ticket = None;
        let mut latency = Vec::new();
        let mut items = batch.into_iter();
        while let Some(item) = items.next() {
            let blocks_before = writer.stats().blocks;
            let started = Instant::now();
            let result = match item {
                Item::Record(record, _) => {
                    pending_since.get_or_insert_with(Instant::now);
                    writer.append(&record)
                }
                Item::Flush(ticket) => {
                    flushed_ticket = Some(ticket);
                    writer.flush_block()
                }
            };
            if let Err(e) = result {
                // Account for what this failure leaves unwritten: the rest of the batch
                // and the records of the block that was being built.
                let rest = items.filter(|i| matches!(i, Item::Record(..))).count() as u64;
                let mut state = shared.lock();
                state.stats.unwritten_after_error += rest + u64::from(writer.pending_records());
                state.queued_bytes -= batch_bytes;
                return Err(e);
            }
            if writer.stats().blocks != blocks_before {
                latency.push(started.elapsed());
                if writer.pending_records() == 0 {
                    pending_since = None;
                }
            }
        }
        if pending_since.is_some_and(|t| t.elapsed() >= flush_interval) {
            let started = Instant::now();
            writer.flush_block()?;
            latency.push(started.elapsed());
            pending_since = None;
        }
        writer.sync_if_due()?;
        if writer.rotate_if_due(SystemTime::now())? {
            pending_since = None;
        }
        publish(shared, writer, batch_bytes, flushed_ticket, &latency);
        if shutting_down && shared.lock().queue.is_empty() {
            return Ok(());
        }
    }
}

/// Releases queue space for a processed batch and publishes counters and flush progress.
fn publish(
    shared: &Shared,
    writer: &SegmentWriter,
    batch_bytes: usize,
    flushed_ticket: Option<u64>,
    latency: &[Duration],
) {
    let mut state = shared.lock();
    state.queued_bytes -= batch_bytes;
    if let Some(ticket) = flushed_ticket {
        state.flushed_ticket = state.flushed_ticket.max(ticket);
    }
    state.stats.writer = writer.stats();
    for l in latency {
        let us = l.as_micros() as u64;
        state.stats.flushes += 1;
        state.stats.flush_latency_sum_us += us;
        state.stats.flush_latency_max_us = state.stats.flush_latency_max_us.max(us);
    }
    drop(state);
    shared.progress.notify_all();
}

/// Seals on a clean stop; on an error, records it so every producer sees it.
fn finish(
    shared: &Shared,
    writer: SegmentWriter,
    result: io::Result<()>,
) -> io::Result<WriterStats> {
    let mut stats = writer.stats();
    let outcome = result.and_then(|()| {
        let sealed = writer.seal()?;
        stats.segments_sealed += 1;
        Ok(sealed)
    });
    let mut state = shared.lock();
    state.stats.writer = stats;
    let returned = match outcome {
        Ok(sealed) => {
            state.sealed = Some(sealed);
            Ok(stats)
        }
        Err(e) => {
            tracing::error!(error = %e, "session recorder failed; recording is now refused");
            let unwritten = state
                .queue
                .iter()
                .filter(|i| matches!(i, Item::Record(..)))
                .count() as u64;
            state.stats.unwritten_after_error += unwritten;
            let kind = e.kind();
            let message = e.to_string();
            state.error = Some(Arc::new(e));
            Err(io::Error::new(kind, message))
        }
    };
    state.writer_done = true;
    drop(state);
    shared.progress.notify_all();
    returned
}
