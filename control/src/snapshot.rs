//! The shared-memory snapshot channel between control and the proxy (design.md §3): the
//! *mechanism* only — bytes in on the control side, validated, zero-copy bytes out on the
//! proxy side. What the payload means is someone else's business.
//!
//! # How it works
//!
//! * **Header.** The [`Publisher`] owns one 4 KiB memfd, mapped shared, sealed against
//!   resizing (so no reader's mapping can ever fault), holding: magic, header format version,
//!   a seqlock counter, the identity of the current payload (generation, envelope length,
//!   CRC32C, publish time) and a heartbeat timestamp. The counter is `2 × generation` when
//!   stable and odd while control rewrites the identity fields, so
//!   [`Subscriber::current_generation`] is **one `Acquire` load of one `AtomicU64`** and a
//!   shift — the check the proxy makes per statement. The heartbeat is a separate atomic that
//!   control refreshes without starting a new generation ([`Publisher::heartbeat`]).
//! * **Payloads.** Each generation is written to a *new* memfd (`MFD_ALLOW_SEALING |
//!   MFD_CLOEXEC`) as a self-describing envelope ([`encode_envelope`]: magic, version, generation,
//!   length, CRC32C, payload), then sealed with `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE |
//!   F_SEAL_SEAL` before anyone else can see it. A payload is never modified after that; the
//!   kernel guarantees it.
//! * **Transport: push over a Unix socket (SCM_RIGHTS).** A subscriber connects to the
//!   [`SnapshotServer`]'s socket and receives, at once, a *read-only* descriptor of the header
//!   and (if one exists) the current payload fd. On every publish, control sends the new
//!   payload fd to every subscriber (non-blocking) **before** it bumps the header counter, so
//!   a reader that sees generation *g* in the header is guaranteed to find *g*'s fd already
//!   queued on its socket: [`Subscriber::refresh`] never waits and never talks back to control.
//!   A subscriber whose socket buffer is full (it has not drained for a long time) is
//!   disconnected rather than ever blocking control; its next `refresh` reports
//!   [`SnapshotError::Disconnected`] and the proxy reconnects, which hands it the current
//!   payload directly.
//! * **Validation before use.** `refresh` checks the fd's seals, its size, the envelope (magic,
//!   version — any other version is refused, naming both —, length, CRC32C via the `crc32c`
//!   crate, hardware-accelerated on x86-64/aarch64), that the envelope's generation is the one
//!   announced on the socket, and, when the header points at the same generation, that the
//!   header's length and checksum agree. Anything wrong: an error, and the previous
//!   [`LoadedSnapshot`] stays current.
//! * **Fail-static.** If control dies, the header mapping and the last payload mapping stay
//!   valid in the proxy (they hold their own file references). [`Subscriber::is_fresh`] turns
//!   false once the heartbeat is older than the configured max age; the proxy then refuses new
//!   sessions and statements.
//!
//! A [`LoadedSnapshot`] is handed out as an `Arc`: a worker that took one before a new
//! generation arrived keeps reading the old bytes until it drops it.

mod envelope;
mod sys;

pub use envelope::{
    decode_envelope, encode_envelope, encode_header, EnvelopeHeader, ENVELOPE_HEADER_LEN,
    ENVELOPE_MAGIC, ENVELOPE_VERSION, MAX_PAYLOAD_LEN,
};

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sys::Mapping;

/// Size of the shared header memfd.
pub const HEADER_SIZE: usize = 4096;
/// Magic at offset 0 of the header.
pub const HEADER_MAGIC: u64 = u64::from_le_bytes(*b"SLUICEHD");
/// The header layout version this build writes and reads.
pub const HEADER_VERSION: u64 = 1;

// Header field offsets (bytes). The seqlock word sits alone on its cache line: it is the one
// word every worker reads per statement.
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_SEQ: usize = 64;
const OFF_GENERATION: usize = 128;
const OFF_ENVELOPE_LEN: usize = 136;
const OFF_CHECKSUM: usize = 144;
const OFF_PUBLISHED_MS: usize = 152;
const OFF_HEARTBEAT_MS: usize = 192;

/// Wire messages on the subscriber socket: 32 bytes, each carrying exactly one fd.
const MSG_LEN: usize = 32;
const MSG_KIND_HEADER: u32 = 1;
const MSG_KIND_PAYLOAD: u32 = 2;
const WIRE_VERSION: u32 = 1;
/// How long `Subscriber::connect` waits for the server's greeting (connect time only).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounded retries for a consistent seqlock read of the identity fields; a writer holds the
/// odd state for a handful of stores, so this only runs out if control died mid-write.
const SEQLOCK_TRIES: usize = 1000;

/// Why a snapshot (or the channel) was refused. Every variant leaves the previous snapshot in
/// place.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A system call failed.
    #[error("snapshot channel: {context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The envelope does not start with the snapshot magic.
    #[error("snapshot refused: bad magic {found:02x?} (not a Sluice snapshot)")]
    BadMagic {
        /// The first eight bytes found.
        found: [u8; 8],
    },
    /// The envelope's format version is not the one this build reads.
    #[error("snapshot refused: format version {found} is not supported (this build reads version {supported})")]
    WrongVersion {
        /// Version in the envelope.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The shared header's layout version is not the one this build reads.
    #[error("snapshot header refused: header version {found} is not supported (this build reads version {supported})")]
    WrongHeaderVersion {
        /// Version in the header.
        found: u64,
        /// Version this build reads.
        supported: u64,
    },
    /// Fewer bytes than an envelope header.
    #[error("snapshot refused: truncated envelope ({len} bytes)")]
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// The declared payload length does not match the file.
    #[error("snapshot refused: envelope declares {declared} payload bytes but holds {actual}")]
    LengthMismatch {
        /// Length the envelope declares.
        declared: u64,
        /// Length actually present.
        actual: u64,
    },
    /// The CRC32C does not match the bytes.
    #[error("snapshot refused: checksum mismatch (envelope says {declared:#010x}, bytes give {computed:#010x})")]
    ChecksumMismatch {
        /// Checksum the envelope declares.
        declared: u32,
        /// Checksum of the bytes present.
        computed: u32,
    },
    /// The payload memfd is missing required seals, so it could change under the reader.
    #[error("snapshot refused: payload fd is not sealed (seals {seals:#x}, need {required:#x})")]
    NotSealed {
        /// Seals present.
        seals: i32,
        /// Seals required.
        required: i32,
    },
    /// The envelope, the socket message and the header disagree about what this payload is.
    #[error("snapshot refused: {0}")]
    Mismatch(String),
    /// Anything else structurally wrong (header, wire message, envelope fields).
    #[error("snapshot refused: {0}")]
    Invalid(String),
    /// The header announces a newer generation but the connection to control is gone (control
    /// died or dropped this lagging subscriber). Reconnect to get the current snapshot.
    #[error("snapshot channel disconnected from control at generation {announced} (loaded: {loaded}); reconnect")]
    Disconnected {
        /// Generation the header announces.
        announced: u64,
        /// Generation this subscriber has loaded (0: none).
        loaded: u64,
    },
}

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> SnapshotError {
    move |source| SnapshotError::Io { context, source }
}

fn millis(t: SystemTime) -> u64 {
    // 0 means "never" in the header, so clamp real times to at least 1 ms.
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
        .max(1)
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Typed access to the atomics inside a header mapping.
struct HeaderView {
    map: Mapping,
}

/// The identity of the current payload as read consistently from the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeaderIdentity {
    generation: u64,
    envelope_len: u64,
    checksum: u32,
    published_ms: u64,
}

impl HeaderView {
    fn word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off + 8 <= self.map.len());
        // SAFETY: the mapping is page-aligned and at least HEADER_SIZE bytes, `off` is a
        // multiple of 8 inside it, and every access to these words (in every process) is
        // atomic. The reference borrows `self`, which keeps the mapping alive.
        unsafe { &*(self.map.as_ptr().add(off) as *const AtomicU64) }
    }

    #[inline]
    fn generation(&self) -> u64 {
        self.word(OFF_SEQ).load(Ordering::Acquire) >> 1
    }

    fn read_identity(&self) -> Option<HeaderIdentity> {
        for _ in 0..SEQLOCK_TRIES {
            let s1 = self.word(OFF_SEQ).load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let id = HeaderIdentity {
                generation: self.word(OFF_GENERATION).load(Ordering::Relaxed),
                envelope_len: self.word(OFF_ENVELOPE_LEN).load(Ordering::Relaxed),
                checksum: self.word(OFF_CHECKSUM).load(Ordering::Relaxed) as u32,
                published_ms: self.word(OFF_PUBLISHED_MS).load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if self.word(OFF_SEQ).load(Ordering::Relaxed) == s1 {
                return Some(id);
            }
        }
        None
    }

    /// Seqlock write (single writer: the publisher, under its mutex).
    fn write_identity(&self, id: HeaderIdentity, heartbeat_ms: u64) {
        let seq = self.word(OFF_SEQ);
        let s = seq.load(Ordering::Relaxed);
        debug_assert_eq!(s & 1, 0);
        seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.word(OFF_GENERATION)
            .store(id.generation, Ordering::Relaxed);
        self.word(OFF_ENVELOPE_LEN)
            .store(id.envelope_len, Ordering::Relaxed);
        self.word(OFF_CHECKSUM)
            .store(u64::from(id.checksum), Ordering::Relaxed);
        self.word(OFF_PUBLISHED_MS)
            .store(id.published_ms, Ordering::Relaxed);
        self.word(OFF_HEARTBEAT_MS)
            .store(heartbeat_ms, Ordering::Relaxed);
        // Stable again, now announcing `id.generation` (counter = 2 × generation).
        seq.store(id.generation * 2, Ordering::Release);
    }
}

/// One payload generation as control holds it.
struct CurrentPayload {
    fd: OwnedFd,
    identity: HeaderIdentity,
}

struct Shared {
    header: HeaderView,
    /// Read-only descriptor of the header: what subscribers receive.
    header_ro: OwnedFd,
    /// Keeps the writable header file open for the publisher's lifetime.
    _header_fd: OwnedFd,
    generation: u64,
    current: Option<CurrentPayload>,
    subscribers: Vec<UnixStream>,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The new generation.
    pub generation: u64,
    /// Size of the envelope (header + payload) in the memfd.
    pub envelope_len: u64,
    /// CRC32C of the envelope.
    pub checksum: u32,
    /// Subscribers the payload fd was delivered to.
    pub delivered: usize,
    /// Subscribers disconnected because they could not take it (gone, or not draining).
    pub dropped: usize,
}

/// Control's side: owns the header and the current payload, and pushes payload fds to
/// subscribers. Cheap to share with a [`SnapshotServer`]; `publish` needs `&mut self` (there
/// is exactly one writer).
pub struct Publisher {
    shared: Arc<Mutex<Shared>>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock cannot leave the header half-written in a way readers
    // trust (the seqlock stays odd → readers keep their old view), so keep going.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

fn encode_msg(kind: u32, id: Option<&HeaderIdentity>) -> [u8; MSG_LEN] {
    let mut m = [0u8; MSG_LEN];
    m[0..4].copy_from_slice(&kind.to_le_bytes());
    m[4..8].copy_from_slice(&WIRE_VERSION.to_le_bytes());
    if let Some(id) = id {
        m[8..16].copy_from_slice(&id.generation.to_le_bytes());
        m[16..24].copy_from_slice(&id.envelope_len.to_le_bytes());
        m[24..28].copy_from_slice(&id.checksum.to_le_bytes());
    }
    m
}

struct WireMsg {
    kind: u32,
    generation: u64,
    envelope_len: u64,
    checksum: u32,
}

fn decode_msg(m: &[u8; MSG_LEN]) -> Result<WireMsg, SnapshotError> {
    let kind = u32::from_le_bytes(m[0..4].try_into().expect("4"));
    let version = u32::from_le_bytes(m[4..8].try_into().expect("4"));
    if version != WIRE_VERSION {
        return Err(SnapshotError::Invalid(format!(
            "snapshot socket protocol version {version} is not supported (this build speaks version {WIRE_VERSION})"
        )));
    }
    Ok(WireMsg {
        kind,
        generation: u64::from_le_bytes(m[8..16].try_into().expect("8")),
        envelope_len: u64::from_le_bytes(m[16..24].try_into().expect("8")),
        checksum: u32::from_le_bytes(m[24..28].try_into().expect("4")),
    })
}

impl Publisher {
    /// Creates the shared header (generation 0: nothing published yet).
    pub fn new() -> io::Result<Publisher> {
        let fd = sys::memfd_create(c"sluice-snapshot-header")?;
        let file = File::from(fd);
        file.set_len(HEADER_SIZE as u64)?;
        let fd = OwnedFd::from(file);
        sys::add_seals(fd.as_fd(), sys::HEADER_SEALS)?;
        let map = Mapping::map(fd.as_fd(), HEADER_SIZE, true)?;
        let header = HeaderView { map };
        header
            .word(OFF_MAGIC)
            .store(HEADER_MAGIC, Ordering::Relaxed);
        header
            .word(OFF_VERSION)
            .store(HEADER_VERSION, Ordering::Relaxed);
        header.word(OFF_SEQ).store(0, Ordering::Release);
        let header_ro = sys::reopen_read_only(fd.as_fd())?;
        Ok(Publisher {
            shared: Arc::new(Mutex::new(Shared {
                header,
                header_ro,
                _header_fd: fd,
                generation: 0,
                current: None,
                subscribers: Vec::new(),
            })),
        })
    }

    /// The generation the next `publish` will get.
    pub fn next_generation(&self) -> u64 {
        lock(&self.shared).generation + 1
    }

    /// The generation currently announced in the header (0: none yet).
    pub fn generation(&self) -> u64 {
        lock(&self.shared).generation
    }

    /// Number of connected subscribers.
    pub fn subscriber_count(&self) -> usize {
        lock(&self.shared).subscribers.len()
    }

    /// Writes `payload` as the next generation into a fresh sealed memfd, pushes it to every
    /// subscriber, then announces it in the header. Never blocks on a subscriber.
    pub fn publish(&mut self, payload: &[u8], now: SystemTime) -> io::Result<Published> {
        let generation = self.next_generation();
        let ms = millis(now);
        let head = encode_header(generation, ms, payload);
        let fd = write_sealed(&[&head, payload])?;
        let claimed = envelope::claimed_fields(&head);
        let identity = HeaderIdentity {
            generation,
            envelope_len: (ENVELOPE_HEADER_LEN + payload.len()) as u64,
            checksum: claimed.checksum,
            published_ms: ms,
        };
        Ok(self.commit(fd, identity, ms))
    }

    /// Test hook: publishes `envelope` byte for byte as the next generation, whatever it
    /// contains (the header's identity fields take the values the envelope claims). Used to
    /// prove that readers refuse corrupt or wrong-version snapshots; control never calls it.
    #[doc(hidden)]
    pub fn publish_raw_envelope(
        &mut self,
        envelope: &[u8],
        now: SystemTime,
    ) -> io::Result<Published> {
        let generation = self.next_generation();
        let ms = millis(now);
        let fd = write_sealed(&[envelope])?;
        let claimed = envelope::claimed_fields(envelope);
        let identity = HeaderIdentity {
            generation,
            envelope_len: envelope.len() as u64,
            checksum: claimed.checksum,
            published_ms: ms,
        };
        Ok(self.commit(fd, identity, ms))
    }

    fn commit(&mut self, fd: OwnedFd, identity: HeaderIdentity, ms: u64) -> Published {
        let mut sh = lock(&self.shared);
        let msg = encode_msg(MSG_KIND_PAYLOAD, Some(&identity));
        let before = sh.subscribers.len();
        // Deliver first, announce second: a reader that sees the new generation in the header
        // finds its fd already queued.
        // A subscriber that cannot take the fd is shut down (not just closed: a forked child
        // may briefly hold a copy of our end) so it sees EOF at once and reconnects.
        sh.subscribers.retain(|s| {
            let ok = sys::send_with_fd(s, &msg, fd.as_fd()).is_ok();
            if !ok {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            ok
        });
        let delivered = sh.subscribers.len();
        sh.header.write_identity(identity, ms);
        sh.generation = identity.generation;
        sh.current = Some(CurrentPayload { fd, identity });
        Published {
            generation: identity.generation,
            envelope_len: identity.envelope_len,
            checksum: identity.checksum,
            delivered,
            dropped: before - delivered,
        }
    }

    /// Refreshes the heartbeat (the proxy's fail-static clock) without a new generation.
    pub fn heartbeat(&self, now: SystemTime) {
        let sh = lock(&self.shared);
        sh.header
            .word(OFF_HEARTBEAT_MS)
            .store(millis(now), Ordering::Release);
    }

    /// Registers a connected subscriber stream: sends it the read-only header fd (with the
    /// current generation) and, if there is one, the current payload fd; afterwards every
    /// publish is pushed to it.
    pub fn serve(&self, stream: UnixStream) -> io::Result<()> {
        let mut sh = lock(&self.shared);
        let current_id = sh.current.as_ref().map(|c| c.identity);
        let greeting = encode_msg(MSG_KIND_HEADER, current_id.as_ref());
        sys::send_with_fd(&stream, &greeting, sh.header_ro.as_fd())?;
        if let Some(cur) = &sh.current {
            let msg = encode_msg(MSG_KIND_PAYLOAD, Some(&cur.identity));
            sys::send_with_fd(&stream, &msg, cur.fd.as_fd())?;
        }
        sh.subscribers.push(stream);
        Ok(())
    }
}

/// Creates a memfd, writes `parts` into it, and seals it for good.
fn write_sealed(parts: &[&[u8]]) -> io::Result<OwnedFd> {
    let fd = sys::memfd_create(c"sluice-snapshot")?;
    let mut file = File::from(fd);
    let total: usize = parts.iter().map(|p| p.len()).sum();
    file.set_len(total as u64)?;
    for p in parts {
        file.write_all(p)?;
    }
    let fd = OwnedFd::from(file);
    sys::add_seals(fd.as_fd(), sys::PAYLOAD_SEALS)?;
    Ok(fd)
}

/// A Unix-socket listener that hands every connecting subscriber to the [`Publisher`] it
/// owns. The socket file is created with mode 0600 and removed on drop; a stale socket left
/// by a killed control process is replaced.
pub struct SnapshotServer {
    publisher: Publisher,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SnapshotServer {
    /// Binds `path` and starts the accept thread.
    pub fn bind(path: impl AsRef<Path>, publisher: Publisher) -> io::Result<SnapshotServer> {
        let path = path.as_ref().to_path_buf();
        let listener = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                // Replace a stale socket only if nobody answers on it.
                if UnixStream::connect(&path).is_ok() {
                    return Err(e);
                }
                std::fs::remove_file(&path)?;
                UnixListener::bind(&path)?
            }
            Err(e) => return Err(e),
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::clone(&publisher.shared);
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sluice-snapshot-accept".into())
            .spawn(move || accept_loop(listener, shared, thread_stop))?;
        Ok(SnapshotServer {
            publisher,
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The publisher.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The publisher, mutably (to publish).
    pub fn publisher_mut(&mut self) -> &mut Publisher {
        &mut self.publisher
    }

    /// Shorthand for `publisher_mut().publish(..)`.
    pub fn publish(&mut self, payload: &[u8], now: SystemTime) -> io::Result<Published> {
        self.publisher.publish(payload, now)
    }

    /// Shorthand for `publisher().heartbeat(..)`.
    pub fn heartbeat(&self, now: SystemTime) {
        self.publisher.heartbeat(now)
    }
}

fn accept_loop(listener: UnixListener, shared: Arc<Mutex<Shared>>, stop: Arc<AtomicBool>) {
    let publisher = Publisher { shared };
    while !stop.load(Ordering::Acquire) {
        // Poll with a timeout so a stop request is noticed even if the wake-up connect fails.
        match sys::poll_readable(listener.as_fd(), 200) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
        if stop.load(Ordering::Acquire) {
            break;
        }
        if let Ok((stream, _)) = listener.accept() {
            // A subscriber that vanished before its greeting is simply not registered.
            let _ = publisher.serve(stream);
        }
    }
}

impl Drop for SnapshotServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = UnixStream::connect(&self.path); // wake the accept thread
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
        // Close every subscriber stream now (the accept thread's clone of the shared state is
        // gone), so subscribers see EOF promptly.
        for s in lock(&self.publisher.shared).subscribers.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// One validated, sealed, read-only payload generation. The mapping lives as long as the
/// value; hold the `Arc` for as long as you read.
pub struct LoadedSnapshot {
    map: Mapping,
    fd: OwnedFd,
    header: EnvelopeHeader,
}

impl LoadedSnapshot {
    /// The generation.
    pub fn generation(&self) -> u64 {
        self.header.generation
    }

    /// When control published it.
    pub fn published_at(&self) -> SystemTime {
        from_millis(self.header.published_at_ms)
    }

    /// CRC32C of the envelope (as validated).
    pub fn checksum(&self) -> u32 {
        self.header.checksum
    }

    /// The payload bytes: a slice of the sealed read-only mapping, no copy.
    pub fn payload(&self) -> &[u8] {
        &self.map.bytes()[ENVELOPE_HEADER_LEN..]
    }
}

impl AsFd for LoadedSnapshot {
    /// The sealed payload memfd (e.g. to hand on to a child process).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl std::fmt::Debug for LoadedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedSnapshot")
            .field("generation", &self.header.generation)
            .field("published_at_ms", &self.header.published_at_ms)
            .field("payload_len", &self.header.payload_len)
            .field("checksum", &format_args!("{:#010x}", self.header.checksum))
            .finish()
    }
}

/// A payload fd received but not yet validated.
struct Candidate {
    fd: OwnedFd,
    generation: u64,
    envelope_len: u64,
    checksum: u32,
}

/// The proxy's side: the mapped header plus the socket payload fds arrive on.
///
/// Per statement, call [`Subscriber::needs_refresh`] (one atomic load and a compare); when it
/// says so, call [`Subscriber::refresh`], which never blocks.
pub struct Subscriber {
    stream: UnixStream,
    header: HeaderView,
    pending: Option<Candidate>,
    current: Option<Arc<LoadedSnapshot>>,
    /// Highest generation processed (loaded or refused).
    seen: u64,
    connected: bool,
    last_error: Option<String>,
}

impl Subscriber {
    /// Connects to control's snapshot socket, maps the header read-only, and loads the current
    /// payload if control has one (validated like any other). Waits at most a few seconds for
    /// control's greeting; this is the only call that waits.
    pub fn connect(path: impl AsRef<Path>) -> Result<Subscriber, SnapshotError> {
        let stream =
            UnixStream::connect(path).map_err(io_err("connect to control's snapshot socket"))?;
        stream
            .set_read_timeout(Some(CONNECT_TIMEOUT))
            .map_err(io_err("set read timeout"))?;
        let (msg, fd) = recv_msg(&stream, false)?.ok_or_else(|| {
            SnapshotError::Invalid(
                "control closed the snapshot socket before sending the header".into(),
            )
        })?;
        if msg.kind != MSG_KIND_HEADER {
            return Err(SnapshotError::Invalid(format!(
                "expected a header message, got kind {}",
                msg.kind
            )));
        }
        let header = map_header(fd)?;
        let mut sub = Subscriber {
            stream,
            header,
            pending: None,
            current: None,
            seen: 0,
            connected: true,
            last_error: None,
        };
        if msg.generation > 0 {
            // The current payload follows the greeting immediately.
            let (pmsg, pfd) = recv_msg(&sub.stream, false)?.ok_or(SnapshotError::Disconnected {
                announced: msg.generation,
                loaded: 0,
            })?;
            sub.accept_message(pmsg, pfd)?;
            sub.load_pending()?;
        }
        Ok(sub)
    }

    /// **The hot path.** The generation control currently announces: one `Acquire` load of the
    /// shared seqlock word (plus a shift). While control is mid-write it still returns the
    /// previous generation.
    #[inline]
    pub fn current_generation(&self) -> u64 {
        self.header.generation()
    }

    /// Whether the header announces a generation this subscriber has not processed yet. One
    /// atomic load and a compare; call it per statement.
    #[inline]
    pub fn needs_refresh(&self) -> bool {
        self.current_generation() != self.seen
    }

    /// Picks up a newer generation if there is one, without blocking: drains queued payload
    /// fds, validates the newest, and swaps it in. `Ok(None)`: nothing new (or the new
    /// generation was already refused). `Err`: this generation is refused (or the channel is
    /// gone) and the previous snapshot stays current.
    pub fn refresh(&mut self) -> Result<Option<Arc<LoadedSnapshot>>, SnapshotError> {
        if !self.needs_refresh() && self.pending.is_none() {
            return Ok(None);
        }
        self.drain()?;
        match &self.pending {
            Some(c) if c.generation > self.seen => self.load_pending().map(Some),
            _ => {
                self.pending = None;
                let announced = self.current_generation();
                if announced > self.seen && !self.connected {
                    return Err(SnapshotError::Disconnected {
                        announced,
                        loaded: self.loaded_generation(),
                    });
                }
                Ok(None)
            }
        }
    }

    /// The current snapshot, if any was ever accepted.
    pub fn current(&self) -> Option<&Arc<LoadedSnapshot>> {
        self.current.as_ref()
    }

    /// Generation of the current snapshot (0: none).
    pub fn loaded_generation(&self) -> u64 {
        self.current.as_ref().map_or(0, |s| s.generation())
    }

    /// Whether the socket to control is still open (as of the last `refresh`).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The last refusal, for logs and status output.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Age of control's last heartbeat at `now` (`None`: control never published). A heartbeat
    /// in the future (clock step) counts as age zero.
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        let hb = self.header.word(OFF_HEARTBEAT_MS).load(Ordering::Acquire);
        if hb == 0 {
            return None;
        }
        Some(
            now.duration_since(from_millis(hb))
                .unwrap_or(Duration::ZERO),
        )
    }

    /// Fail-static check: a snapshot is loaded and control's heartbeat is at most `max_age`
    /// old at `now`. When this is false the proxy must refuse new sessions and statements.
    pub fn is_fresh(&self, now: SystemTime, max_age: Duration) -> bool {
        self.current.is_some() && self.age(now).is_some_and(|a| a <= max_age)
    }

    /// Reads everything queued on the socket without blocking, keeping only the newest
    /// payload candidate (older fds are closed).
    fn drain(&mut self) -> Result<(), SnapshotError> {
        if !self.connected {
            return Ok(());
        }
        loop {
            match recv_msg(&self.stream, true) {
                Ok(Some((msg, fd))) => self.accept_message(msg, fd)?,
                Ok(None) => {
                    self.connected = false;
                    return Ok(());
                }
                Err(SnapshotError::Io { source, .. })
                    if source.kind() == io::ErrorKind::WouldBlock =>
                {
                    return Ok(());
                }
                Err(SnapshotError::Io { source, .. })
                    if source.kind() == io::ErrorKind::ConnectionReset =>
                {
                    self.connected = false;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn accept_message(&mut self, msg: WireMsg, fd: OwnedFd) -> Result<(), SnapshotError> {
        if msg.kind != MSG_KIND_PAYLOAD {
            return Err(SnapshotError::Invalid(format!(
                "expected a payload message, got kind {}",
                msg.kind
            )));
        }
        if self
            .pending
            .as_ref()
            .is_none_or(|p| msg.generation > p.generation)
        {
            self.pending = Some(Candidate {
                fd,
                generation: msg.generation,
                envelope_len: msg.envelope_len,
                checksum: msg.checksum,
            });
        }
        Ok(())
    }

    fn load_pending(&mut self) -> Result<Arc<LoadedSnapshot>, SnapshotError> {
        let cand = self.pending.take().expect("caller checked");
        self.seen = self.seen.max(cand.generation);
        match self.validate(cand) {
            Ok(loaded) => {
                let loaded = Arc::new(loaded);
                self.current = Some(Arc::clone(&loaded));
                self.last_error = None;
                Ok(loaded)
            }
            Err(e) => {
                self.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn validate(&self, cand: Candidate) -> Result<LoadedSnapshot, SnapshotError> {
        let seals = sys::get_seals(cand.fd.as_fd()).map_err(io_err("read payload seals"))?;
        if seals & sys::PAYLOAD_SEALS != sys::PAYLOAD_SEALS {
            return Err(SnapshotError::NotSealed {
                seals,
                required: sys::PAYLOAD_SEALS,
            });
        }
        let size = sys::file_size(cand.fd.as_fd()).map_err(io_err("stat payload"))?;
        if size != cand.envelope_len {
            return Err(SnapshotError::Mismatch(format!(
                "generation {}: control announced {} bytes, the memfd holds {size}",
                cand.generation, cand.envelope_len
            )));
        }
        if size < ENVELOPE_HEADER_LEN as u64 {
            return Err(SnapshotError::Truncated { len: size as usize });
        }
        if size - ENVELOPE_HEADER_LEN as u64 > MAX_PAYLOAD_LEN {
            return Err(SnapshotError::Invalid(format!(
                "payload of {size} bytes exceeds the {MAX_PAYLOAD_LEN}-byte limit"
            )));
        }
        let map =
            Mapping::map(cand.fd.as_fd(), size as usize, false).map_err(io_err("map payload"))?;
        let header = decode_envelope(map.bytes())?;
        if header.generation != cand.generation || header.checksum != cand.checksum {
            return Err(SnapshotError::Mismatch(format!(
                "control announced generation {} (crc {:#010x}) but the envelope is generation {} (crc {:#010x})",
                cand.generation, cand.checksum, header.generation, header.checksum
            )));
        }
        if let Some(id) = self.header.read_identity() {
            if id.generation == header.generation
                && (id.envelope_len != size || id.checksum != header.checksum)
            {
                return Err(SnapshotError::Mismatch(format!(
                    "header says generation {} is {} bytes with crc {:#010x}; the payload is {size} bytes with crc {:#010x}",
                    id.generation, id.envelope_len, id.checksum, header.checksum
                )));
            }
        }
        Ok(LoadedSnapshot {
            map,
            fd: cand.fd,
            header,
        })
    }
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("announced", &self.current_generation())
            .field("loaded", &self.loaded_generation())
            .field("connected", &self.connected)
            .finish()
    }
}

/// Receives one 32-byte message with its fd. `Ok(None)`: EOF.
fn recv_msg(
    stream: &UnixStream,
    nonblocking: bool,
) -> Result<Option<(WireMsg, OwnedFd)>, SnapshotError> {
    let mut buf = [0u8; MSG_LEN];
    let (n, fd) =
        sys::recv_with_fd(stream, &mut buf, nonblocking).map_err(io_err("receive from control"))?;
    if n == 0 {
        return Ok(None);
    }
    if n != MSG_LEN {
        return Err(SnapshotError::Invalid(format!(
            "short snapshot message ({n} of {MSG_LEN} bytes)"
        )));
    }
    let msg = decode_msg(&buf)?;
    let fd =
        fd.ok_or_else(|| SnapshotError::Invalid("snapshot message arrived without its fd".into()))?;
    Ok(Some((msg, fd)))
}

fn map_header(fd: OwnedFd) -> Result<HeaderView, SnapshotError> {
    let seals = sys::get_seals(fd.as_fd()).map_err(io_err("read header seals"))?;
    if seals & libc::F_SEAL_SHRINK == 0 {
        return Err(SnapshotError::NotSealed {
            seals,
            required: libc::F_SEAL_SHRINK,
        });
    }
    let size = sys::file_size(fd.as_fd()).map_err(io_err("stat header"))?;
    if size < HEADER_SIZE as u64 {
        return Err(SnapshotError::Invalid(format!(
            "header memfd is {size} bytes, expected {HEADER_SIZE}"
        )));
    }
    let map = Mapping::map(fd.as_fd(), HEADER_SIZE, false).map_err(io_err("map header"))?;
    let header = HeaderView { map };
    let magic = header.word(OFF_MAGIC).load(Ordering::Acquire);
    if magic != HEADER_MAGIC {
        return Err(SnapshotError::Invalid(format!(
            "header magic {magic:#018x} is not Sluice's"
        )));
    }
    let version = header.word(OFF_VERSION).load(Ordering::Acquire);
    if version != HEADER_VERSION {
        return Err(SnapshotError::WrongHeaderVersion {
            found: version,
            supported: HEADER_VERSION,
        });
    }
    // The mapping keeps its own file reference; `fd` closes here.
    Ok(header)
}
