//! Writing one worker's segments: blocks, rotation, sealing, and crash recovery on start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::format::{
    compress, encode_footer, parse_segment_file_name, segment_file_name, BlockHeader, ChainHash,
    Codec, SegmentHeader, SegmentIndex, Trailer, FORMAT_VERSION, SEGMENT_HEADER_LEN,
};
use crate::index::IndexBuilder;
use crate::reader::{BadBlock, SegmentReader};
use crate::record::Record;

/// When segment data is forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` after every block: a flushed block survives power loss.
    EveryBlock,
    /// At most one `fdatasync` per interval (checked on each block and on the recorder's
    /// periodic tick): a power loss loses at most about this much.
    Interval(Duration),
    /// Never; the kernel writes back when it likes. A process crash loses nothing that was
    /// flushed, a power loss may.
    Off,
}

/// How a worker's recorder writes.
#[derive(Clone)]
pub struct RecorderConfig {
    pub codec: Codec,
    /// A block is sealed once its uncompressed records reach this size.
    pub block_bytes: usize,
    /// A segment is rotated once its file reaches this size.
    pub segment_bytes: u64,
    /// A segment holding records is rotated once it is this old.
    pub segment_age: Duration,
    pub fsync: FsyncPolicy,
    /// The threaded recorder's writer takes its queue every half of this (producers do not
    /// wake it per record) and seals a partial block after this long without one, so a
    /// quiet session's records reach the file within about 1.5 times this.
    pub flush_interval: Duration,
    /// Signs each sealed segment's chain hash.
    pub signing_key: Option<SigningKey>,
    /// Shell command run (via `sh -c`, not waited for on the writer) with the sealed
    /// segment's path appended as its last argument, e.g. to ship it to object storage.
    pub on_seal: Option<String>,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            codec: Codec::Zstd { level: 1 },
            block_bytes: 64 << 10,
            segment_bytes: 256 << 20,
            segment_age: Duration::from_secs(3600),
            fsync: FsyncPolicy::Interval(Duration::from_millis(200)),
            flush_interval: Duration::from_millis(200),
            signing_key: None,
            on_seal: None,
        }
    }
}

impl std::fmt::Debug for RecorderConfig {
    // Hand-written so the signing key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecorderConfig")
            .field("codec", &self.codec)
            .field("block_bytes", &self.block_bytes)
            .field("segment_bytes", &self.segment_bytes)
            .field("segment_age", &self.segment_age)
            .field("fsync", &self.fsync)
            .field("flush_interval", &self.flush_interval)
            .field("signing_key", &self.signing_key.as_ref().map(|_| "<set>"))
            .field("on_seal", &self.on_seal)
            .finish()
    }
}

/// What recovery did to a segment left unsealed by a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub segment: PathBuf,
    /// Valid blocks kept (and indexed) in the recovered segment.
    pub kept_blocks: u64,
    pub kept_records: u64,
    /// Bytes of torn tail cut from the end of the file.
    pub cut_bytes: u64,
    /// Damaged blocks found *before* the last valid one: kept in the file (so `verify`
    /// still reports them) but not indexed.
    pub bad_blocks: Vec<BadBlock>,
    /// The file was shorter than a segment header (crash while creating it) and was
    /// removed; it held no records.
    pub removed_empty: bool,
}

/// A segment that was sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    pub path: PathBuf,
    pub seq: u64,
    pub chain_hash: ChainHash,
    pub bytes: u64,
}

/// Counters of one writer since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub records: u64,
    /// Encoded record bytes before compression.
    pub bytes_in: u64,
    /// Bytes written to segment files (block headers, compressed blocks, headers, footers).
    pub bytes_out: u64,
    pub blocks: u64,
    pub segments_sealed: u64,
    pub fsyncs: u64,
}

/// Appends records to a worker's current segment. Not thread-safe by design: one writer
/// per worker, driven by [`crate::Recorder`]'s thread or used directly.
pub struct SegmentWriter {
    dir: PathBuf,
    worker: u16,
    config: RecorderConfig,
    file: File,
    path: PathBuf,
    seq: u64,
    created_wall_us: u64,
    file_len: u64,
    /// SHA-256 over the previous chain hash and every byte written so far.
    hasher: Sha256,
    block: Vec<u8>,
    block_records: u32,
    block_first_wall_us: u64,
    block_last_wall_us: u64,
    index: IndexBuilder,
    last_fsync: Instant,
    unsynced: bool,
    stats: WriterStats,
    recovery: Option<Recovery>,
    /// Set after a failed write: the file's tail is unknown, so nothing more is written.
    failed: bool,
    /// Reused for each block's header and payload, so a block costs no allocation.
    write_buf: Vec<u8>,
    /// `w{worker}.lock` in the directory, `flock`ed for as long as this writer lives: a
    /// second process recording as the same worker into the same directory would
    /// interleave writes into one segment.
    lock: Option<Arc<File>>,
}

pub(crate) fn wall_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

/// The segment files of `worker` in `dir`, by ascending seq.
pub(crate) fn worker_segments(dir: &Path, worker: u16) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out: Vec<(u64, PathBuf)> = list_segments(dir)?
        .into_iter()
        .filter(|(w, _, _)| *w == worker)
        .map(|(_, seq, p)| (seq, p))
        .collect();
    out.sort();
    Ok(out)
}

/// Every segment file in `dir` as (worker, seq, path), sorted.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<(u16, u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some((worker, seq)) = parse_segment_file_name(&path) {
            out.push((worker, seq, path));
        }
    }
    out.sort();
    Ok(out)
}

/// SHA-256(prev || file[0..end]).
pub(crate) fn hash_file_prefix(file: &mut File, prev: &ChainHash, end: u64) -> io::Result<Sha256> {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    file.seek(SeekFrom::Start(0))?;
    let mut limited = file.take(end);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = limited.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher)
}

/// Writes the footer and trailer at `file_len` and returns the chain hash. The hash also
/// covers the index bytes, so an edited index is caught like an edited block.
fn write_footer(
    file: &mut File,
    file_len: u64,
    mut hasher: Sha256,
    index: &SegmentIndex,
    signing_key: Option<&SigningKey>,
) -> io::Result<(ChainHash, u64)> {
    let index_bytes = serde_json::to_vec(index).map_err(io::Error::other)?;
    hasher.update(&index_bytes);
    let chain_hash: ChainHash = hasher.finalize().into();
    let signature = signing_key.map(|key| key.sign(&chain_hash).to_bytes());
    let footer = encode_footer(&index_bytes, &chain_hash, signature.as_ref());
    let trailer = Trailer {
        footer_offset: file_len,
        footer_len: footer.len() as u32,
        footer_crc: crc32c::crc32c(&footer),
    };
    let mut tail = footer;
    tail.extend_from_slice(&trailer.encode());
    // One write so that a crash leaves either no trailer or a whole one.
    file.seek(SeekFrom::Start(file_len))?;
    file.write_all(&tail)?;
    Ok((chain_hash, tail.len() as u64))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl SegmentWriter {
    /// Opens a new segment for `worker` in `dir`, first recovering and sealing the
    /// worker's last segment if a crash left it unsealed (see [`SegmentWriter::recovery`]).
    pub fn create(
        dir: impl AsRef<Path>,
        worker: u16,
        config: RecorderConfig,
    ) -> io::Result<SegmentWriter> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let lock = lock_worker(&dir, worker)?;
        let (recovery, next_seq, prev_hash) = Self::continue_chain(&dir, worker, &config)?;
        let mut writer = Self::open_segment(&dir, worker, config, next_seq, prev_hash)?;
        writer.lock = Some(Arc::new(lock));
        if let Some(r) = &recovery {
            tracing::warn!(
                segment = %r.segment.display(),
                kept_blocks = r.kept_blocks,
                cut_bytes = r.cut_bytes,
                bad_blocks = r.bad_blocks.len(),
                "recovered a recording segment left unsealed by a crash"
            );
        }
        writer.recovery = recovery;
        Ok(writer)
    }

    /// Finds where this worker's chain stands: recovers the last segment if needed and
    /// returns the seq and previous hash for the next one.
    fn continue_chain(
        dir: &Path,
        worker: u16,
        config: &RecorderConfig,
    ) -> io::Result<(Option<Recovery>, u64, ChainHash)> {
        let mut segments = worker_segments(dir, worker)?;
        let Some((last_seq, last_path)) = segments.pop() else {
            return Ok((None, 0, [0; 32]));
        };
        let len = fs::metadata(&last_path)?.len();
        if len < SEGMENT_HEADER_LEN as u64 {
            // A crash between creating the file and writing its header: nothing in it.
            fs::remove_file(&last_path)?;
            sync_dir(dir)?;
            let recovered = Recovery {
                segment: last_path,
                kept_blocks: 0,
                kept_records: 0,
                cut_bytes: len,
                bad_blocks: Vec::new(),
                removed_empty: true,
            };
            let prev = match segments.last() {
                Some((_, p)) => Self::sealed_hash(p)?,
                None => [0; 32],
            };
            return Ok((Some(recovered), last_seq, prev));
        }
        let reader = SegmentReader::open(&last_path)?;
        if reader.is_sealed() {
            let prev = match reader.read_footer() {
                Ok(Some(footer)) => footer.chain_hash,
                // A sealed segment with a damaged footer is evidence: leave it untouched.
                // The next segment cannot link to a hash we cannot read; `verify`
                // reports both the footer and the broken link.
                _ => {
                    tracing::error!(segment = %last_path.display(),
                        "last recording segment has a damaged footer; starting a new chain link");
                    [0; 32]
                }
            };
            return Ok((None, last_seq + 1, prev));
        }
        let (index, bad_blocks, valid_end) = reader.scan_index();
        let header_prev = reader.header().prev_hash;
        drop(reader);
        // Bad blocks after the last valid one are the torn tail that is cut.
        let bad_blocks: Vec<BadBlock> = bad_blocks
            .into_iter()
            .filter(|b| b.offset < valid_end)
            .collect();
        let mut file = OpenOptions::new().read(true).write(true).open(&last_path)?;
        file.set_len(valid_end)?;
        file.sync_all()?;
        let hasher = hash_file_prefix(&mut file, &header_prev, valid_end)?;
        let (chain_hash, _) = write_footer(
            &mut file,
            valid_end,
            hasher,
            &index,
            config.signing_key.as_ref(),
        )?;
        file.sync_all()?;
        let recovery = Some(Recovery {
            segment: last_path.clone(),
            kept_blocks: index.blocks.len() as u64,
            kept_records: index.blocks.iter().map(|b| u64::from(b.records)).sum(),
            cut_bytes: len - valid_end,
            bad_blocks,
            removed_empty: false,
        });
        run_on_seal(config, &last_path);
        Ok((recovery, last_seq + 1, chain_hash))
    }

    fn sealed_hash(path: &Path) -> io::Result<ChainHash> {
        match SegmentReader::open(path)?.read_footer()? {
            Some(footer) => Ok(footer.chain_hash),
            None => Err(invalid(path, "expected a sealed segment")),
        }
    }

    fn open_segment(
        dir: &Path,
        worker: u16,
        config: RecorderConfig,
        seq: u64,
        prev_hash: ChainHash,
    ) -> io::Result<SegmentWriter> {
        let path = dir.join(segment_file_name(worker, seq));
        let created_wall_us = wall_us(SystemTime::now());
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            worker,
            seq,
            created_wall_us,
            prev_hash,
        }
        .encode();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.write_all(&header)?;
        if config.fsync != FsyncPolicy::Off {
            file.sync_all()?;
            sync_dir(dir)?;
        }
        let mut hasher = Sha256::new();
        hasher.update(prev_hash);
        hasher.update(header);
        let block_capacity = config.block_bytes + (config.block_bytes >> 2);
        Ok(SegmentWriter {
            dir: dir.to_path_buf(),
            worker,
            config,
            file,
            path,
            seq,
            created_wall_us,
            file_len: header.len() as u64,
            hasher,
            block: Vec::with_capacity(block_capacity),
            block_records: 0,
            block_first_wall_us: 0,
            block_last_wall_us: 0,
            index: IndexBuilder::default(),
            last_fsync: Instant::now(),
            unsynced: false,
            stats: WriterStats {
                bytes_out: header.len() as u64,
                ..WriterStats::default()
            },
            recovery: None,
            failed: false,
            write_buf: Vec::with_capacity(block_capacity),
            lock: None,
        })
    }

    /// What `create` recovered, if the previous run crashed.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn worker(&self) -> u16 {
        self.worker
    }

    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    pub fn config(&self) -> &RecorderConfig {
        &self.config
    }

    fn check_usable(&self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other(format!(
                "{}: an earlier write failed; the recorder must be restarted",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Marks the writer failed when `result` is an error, so a torn write is never
    /// followed by more blocks.
    fn guard<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// Adds a record to the current block; seals the block when it is full and rotates
    /// the segment when it is full.
    pub fn append(&mut self, record: &Record) -> io::Result<()> {
        self.check_usable()?;
        let before = self.block.len();
        record.encode_into(&mut self.block);
        if self.block_records == 0 {
            self.block_first_wall_us = record.wall_us;
            self.block_last_wall_us = record.wall_us;
        }
        self.block_first_wall_us = self.block_first_wall_us.min(record.wall_us);
        self.block_last_wall_us = self.block_last_wall_us.max(record.wall_us);
        self.block_records += 1;
        // The current block will be written at the current end of the file.
        self.index.add_record(self.file_len, record);
        self.stats.records += 1;
        self.stats.bytes_in += (self.block.len() - before) as u64;
        if self.block.len() >= self.config.block_bytes {
            self.flush_block()?;
            if self.file_len >= self.config.segment_bytes {
                self.rotate()?;
            }
        }
        Ok(())
    }

    /// Seals the current partial block (if any) and writes it, then syncs per policy.
    pub fn flush_block(&mut self) -> io::Result<()> {
        self.check_usable()?;
        if self.block_records > 0 {
            let result = self.write_block();
            self.guard(result)?;
        }
        if let FsyncPolicy::Interval(every) = self.config.fsync {
            if self.unsynced && self.last_fsync.elapsed() >= every {
                self.sync()?;
            }
        }
        Ok(())
    }

    fn write_block(&mut self) -> io::Result<()> {
        let compressed = compress(self.config.codec, &self.block)?;
        let mut header = BlockHeader {
            codec: self.config.codec.code(),
            uncompressed_len: self.block.len() as u32,
            compressed_len: compressed.len() as u32,
            records: self.block_records,
            first_wall_us: self.block_first_wall_us,
            last_wall_us: self.block_last_wall_us,
            crc: 0,
        };
        header.crc = header.compute_crc(&compressed);
        let mut out = std::mem::take(&mut self.write_buf);
        out.clear();
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&compressed);
        drop(compressed);
        // One write per block: a crash tears at most this block, which recovery cuts.
        let written = self.file.write_all(&out);
        self.hasher.update(&out);
        let len = out.len() as u64;
        self.write_buf = out;
        written?;
        self.index.add_block(self.file_len, &header);
        self.file_len += len;
        self.stats.bytes_out += len;
        self.stats.blocks += 1;
        self.block.clear();
        self.block_records = 0;
        self.unsynced = true;
        if self.config.fsync == FsyncPolicy::EveryBlock {
            self.sync()?;
        }
        Ok(())
    }

    /// Forces written blocks to stable storage now (whatever the policy).
    pub fn sync(&mut self) -> io::Result<()> {
        self.check_usable()?;
        if self.unsynced {
            let result = self.file.sync_data();
            self.guard(result)?;
            self.stats.fsyncs += 1;
            self.unsynced = false;
        }
        self.last_fsync = Instant::now();
        Ok(())
    }

    /// Periodic housekeeping: an `Interval` fsync that is due.
    pub fn sync_if_due(&mut self) -> io::Result<()> {
        if let FsyncPolicy::Interval(every) = self.config.fsync {
            if self.unsynced && self.last_fsync.elapsed() >= every {
                self.sync()?;
            }
        }
        Ok(())
    }

    /// Rotates when the segment is full, or holds records and is older than
    /// `segment_age` at `now`. Returns whether it rotated.
    pub fn rotate_if_due(&mut self, now: SystemTime) -> io::Result<bool> {
        let has_records = !self.index.is_empty() || self.block_records > 0;
        let age = Duration::from_micros(wall_us(now).saturating_sub(self.created_wall_us));
        let full = self.file_len + self.block.len() as u64 >= self.config.segment_bytes;
        if has_records && (full || age >= self.config.segment_age) {
            self.rotate()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Seals the current segment and continues in a new one (seq + 1, hash carried).
    pub fn rotate(&mut self) -> io::Result<SealedSegment> {
        let sealed = self.seal_current()?;
        let next = Self::open_segment(
            &self.dir,
            self.worker,
            self.config.clone(),
            self.seq + 1,
            sealed.chain_hash,
        );
        let next = self.guard(next)?;
        let stats = self.stats;
        let recovery = self.recovery.take();
        let lock = self.lock.take();
        *self = SegmentWriter {
            stats,
            recovery,
            lock,
            ..next
        };
        // Count the new header once (open_segment counted it in its fresh stats).
        self.stats.bytes_out += SEGMENT_HEADER_LEN as u64;
        Ok(sealed)
    }

    fn seal_current(&mut self) -> io::Result<SealedSegment> {
        self.flush_block()?;
        let index = self.index.build();
        let hasher = self.hasher.clone();
        let result = write_footer(
            &mut self.file,
            self.file_len,
            hasher,
            &index,
            self.config.signing_key.as_ref(),
        );
        let (chain_hash, footer_len) = self.guard(result)?;
        self.file_len += footer_len;
        self.stats.bytes_out += footer_len;
        if self.config.fsync != FsyncPolicy::Off {
            let result = self.file.sync_all();
            self.guard(result)?;
            self.stats.fsyncs += 1;
        }
        self.stats.segments_sealed += 1;
        run_on_seal(&self.config, &self.path);
        Ok(SealedSegment {
            path: self.path.clone(),
            seq: self.seq,
            chain_hash,
            bytes: self.file_len,
        })
    }

    /// Seals the current segment (footer, chain hash, signature) and ends this writer.
    pub fn seal(mut self) -> io::Result<SealedSegment> {
        self.check_usable()?;
        self.seal_current()
    }

    /// Records appended to the block being built, not yet written.
    pub fn pending_records(&self) -> u32 {
        self.block_records
    }

    /// Number of blocks written to the current segment.
    pub fn blocks_in_segment(&self) -> usize {
        self.index.block_count()
    }
}

/// Starts the configured `on_seal` command for `path` on a helper thread that waits for
/// it, so a slow upload never stalls the writer and the child is always reaped.
fn run_on_seal(config: &RecorderConfig, path: &Path) {
    let Some(command) = config.on_seal.clone() else {
        return;
    };
    let path = path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("sluice-on-seal".into())
        .spawn(move || {
            let status = Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("{command} \"$1\""))
                .arg("sluice-on-seal")
                .arg(&path)
                .status();
            match status {
                Ok(s) if s.success() => {}
                Ok(s) => tracing::error!(segment = %path.display(), status = %s, "on_seal command failed"),
                Err(e) => tracing::error!(segment = %path.display(), error = %e, "on_seal command did not start"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the on_seal thread");
    }
}

/// Takes the exclusive `flock` on worker `worker`'s lock file in `dir` (released when the
/// returned file is closed, including by the kernel when the process dies).
fn lock_worker(dir: &Path, worker: u16) -> io::Result<File> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join(format!("w{worker:03}.lock"));
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)?;
    // SAFETY: `flock` takes a file descriptor we own (open for the call's duration) and
    // an operation flag; it touches no memory of ours.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            // Kept `WouldBlock` so a caller can try another worker number.
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "another process is recording as worker {worker} into {} (it holds {})",
                    dir.display(),
                    path.display()
                ),
            ));
        }
        return Err(e);
    }
    Ok(file)
}
