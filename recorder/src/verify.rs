//! Tamper evidence over a recording directory, and retention that `verify` can tell
//! apart from tampering.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::Digest;

use crate::archive::Problem;
use crate::format::{hex, parse_hex32, segment_file_name, ChainHash};
use crate::reader::SegmentReader;
use crate::writer::{hash_file_prefix, list_segments, wall_us};

/// The file in a recording directory that names every segment retention removed.
pub const RETENTION_LOG: &str = "retention.log";

/// What [`verify`] checked and found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub segments: u64,
    pub sealed: u64,
    pub blocks: u64,
    pub records: u64,
    /// Each worker's last segment when it is unsealed: being written (or awaiting
    /// recovery), checked block by block but without a footer yet.
    pub live: Vec<PathBuf>,
    /// Segments missing from the chain that `retention.log` accounts for.
    pub removed_by_retention: Vec<String>,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Parses `retention.log`: file name → chain hash of each removed segment.
fn read_retention_log(dir: &Path) -> io::Result<HashMap<String, ChainHash>> {
    let text = match fs::read_to_string(dir.join(RETENTION_LOG)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    let mut out = HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [_, "removed", name, hash, ..] = fields.as_slice() {
            if let Some(hash) = parse_hex32(hash) {
                out.insert((*name).to_string(), hash);
            }
        }
    }
    Ok(out)
}

/// Walks each worker's segments in seq order and checks every block's CRC, every
/// footer's chain hash (recomputed from the bytes), each segment's link to its
/// predecessor, gaps in the sequence (unless `retention.log` names the missing segment),
/// and, with `public_key`, every signature.
///
/// Not detectable from the directory alone: removal of a worker's *newest* segments.
/// Shipping sealed segments elsewhere (`on_seal`) gives an outside copy to compare with.
pub fn verify(
    dir: impl AsRef<Path>,
    public_key: Option<&VerifyingKey>,
) -> io::Result<VerifyReport> {
    let dir = dir.as_ref();
    let retained = read_retention_log(dir)?;
    let mut report = VerifyReport::default();
    let mut by_worker: BTreeMap<u16, Vec<(u64, PathBuf)>> = BTreeMap::new();
    for (worker, seq, path) in list_segments(dir)? {
        by_worker.entry(worker).or_default().push((seq, path));
    }
    for (worker, segments) in by_worker {
        // The hash the next segment must carry as `prev`, when known.
        let mut expected_prev: Option<ChainHash> = None;
        let mut next_seq = 0u64;
        let count = segments.len();
        for (i, (seq, path)) in segments.into_iter().enumerate() {
            let problem = |offset: Option<u64>, what: String| Problem {
                segment: path.clone(),
                offset,
                what,
            };
            // Account for every seq skipped before this one.
            for missing in next_seq..seq {
                let name = segment_file_name(worker, missing);
                match retained.get(&name) {
                    Some(hash) => {
                        report.removed_by_retention.push(name);
                        expected_prev = Some(*hash);
                    }
                    None => {
                        report.problems.push(Problem {
                            segment: dir.join(&name),
                            offset: None,
                            what: format!(
                                "segment missing: worker {worker} seq {missing} is absent and not in {RETENTION_LOG}"
                            ),
                        });
                        expected_prev = None;
                    }
                }
            }
            if seq == 0 {
                expected_prev = Some([0; 32]);
            }
            next_seq = seq + 1;
            report.segments += 1;
            let reader = match SegmentReader::open(&path) {
                Ok(r) => r,
                Err(e) => {
                    report.problems.push(problem(Some(0), e.to_string()));
                    expected_prev = None;
                    continue;
                }
            };
            let header = reader.header().clone();
            if header.worker != worker || header.seq != seq {
                report.problems.push(problem(
                    Some(0),
                    format!(
                        "header says worker {} seq {}, file name says worker {worker} seq {seq}",
                        header.worker, header.seq
                    ),
                ));
            }
            if let Some(expected) = expected_prev {
                if header.prev_hash != expected {
                    report.problems.push(problem(
                        Some(0),
                        format!(
                            "chain broken: prev hash {} but the previous segment's hash is {}",
                            hex(&header.prev_hash),
                            hex(&expected)
                        ),
                    ));
                }
            }
            let is_last = i + 1 == count;
            let (rebuilt, bad_blocks, valid_end) = reader.scan_index();
            report.blocks += rebuilt.blocks.len() as u64;
            report.records += rebuilt
                .blocks
                .iter()
                .map(|b| u64::from(b.records))
                .sum::<u64>();
            let footer = reader.read_footer();
            let live = matches!(footer, Ok(None)) && is_last;
            for bad in bad_blocks {
                // A live segment's last block may be mid-write while we read.
                if live && bad.resumed_at.is_none() && bad.offset >= valid_end {
                    continue;
                }
                report.problems.push(problem(
                    Some(bad.offset),
                    format!("bad block: {}", bad.what),
                ));
            }
            match footer {
                Ok(Some(footer)) => {
                    report.sealed += 1;
                    let mut file = File::open(&path)?;
                    let mut hasher =
                        hash_file_prefix(&mut file, &header.prev_hash, reader.blocks_end())?;
                    hasher.update(&footer.index_bytes);
                    let computed: ChainHash = hasher.finalize().into();
                    if computed != footer.chain_hash {
                        report.problems.push(problem(
                            Some(reader.blocks_end()),
                            format!(
                                "hash mismatch: footer says {}, contents hash to {}",
                                hex(&footer.chain_hash),
                                hex(&computed)
                            ),
                        ));
                    }
                    if footer.index != rebuilt {
                        report.problems.push(problem(
                            Some(reader.blocks_end()),
                            "footer index does not match the segment's blocks".into(),
                        ));
                    }
                    if let Some(key) = public_key {
                        match footer.signature {
                            None => report
                                .problems
                                .push(problem(None, "segment is not signed".into())),
                            Some(sig) => {
                                let sig = Signature::from_bytes(&sig);
                                if key.verify_strict(&footer.chain_hash, &sig).is_err() {
                                    report.problems.push(problem(
                                        Some(reader.blocks_end()),
                                        "signature does not verify with the given key".into(),
                                    ));
                                }
                            }
                        }
                    }
                    // Link the next segment to the hash its writer carried (the stored
                    // one); a mismatch here was reported above.
                    expected_prev = Some(footer.chain_hash);
                }
                Ok(None) => {
                    if is_last {
                        report.live.push(path.clone());
                    } else {
                        report.problems.push(problem(
                            None,
                            "unsealed segment followed by later segments".into(),
                        ));
                    }
                    expected_prev = None;
                }
                Err(e) => {
                    report
                        .problems
                        .push(problem(None, format!("damaged footer: {e}")));
                    expected_prev = None;
                }
            }
        }
    }
    Ok(report)
}

/// A segment [`apply_retention`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedSegment {
    pub path: PathBuf,
    pub worker: u16,
    pub seq: u64,
    pub bytes: u64,
    pub chain_hash: ChainHash,
    pub reason: &'static str,
}

struct Candidate {
    path: PathBuf,
    worker: u16,
    seq: u64,
    bytes: u64,
    created_wall_us: u64,
    last_wall_us: u64,
    chain_hash: ChainHash,
}

/// Deletes the oldest sealed segments until none is older than `max_age` (by its last
/// record) and the directory holds at most `max_bytes` of segments. Only a prefix of each
/// worker's chain is removed, never a worker's newest segment (the next one links to it),
/// and each removal is first appended (and synced) to `retention.log` with the segment's
/// hash, so `verify` can tell retention from tampering.
pub fn apply_retention(
    dir: impl AsRef<Path>,
    max_age: Option<Duration>,
    max_bytes: Option<u64>,
    now: SystemTime,
) -> io::Result<Vec<RemovedSegment>> {
    let dir = dir.as_ref();
    let mut per_worker: BTreeMap<u16, Vec<(u64, PathBuf)>> = BTreeMap::new();
    let mut total_bytes = 0u64;
    for (worker, seq, path) in list_segments(dir)? {
        total_bytes += fs::metadata(&path)?.len();
        per_worker.entry(worker).or_default().push((seq, path));
    }
    // Each worker's removable prefix, oldest first.
    let mut queues: Vec<std::collections::VecDeque<Candidate>> = Vec::new();
    for (worker, mut segments) in per_worker {
        segments.pop(); // the newest stays
        let mut queue = std::collections::VecDeque::new();
        for (seq, path) in segments {
            let reader = match SegmentReader::open(&path) {
                Ok(r) => r,
                Err(_) => break,
            };
            let Ok(Some(footer)) = reader.read_footer() else {
                break;
            };
            queue.push_back(Candidate {
                bytes: reader.len(),
                created_wall_us: reader.header().created_wall_us,
                last_wall_us: footer
                    .index
                    .last_wall_us()
                    .unwrap_or(reader.header().created_wall_us),
                chain_hash: footer.chain_hash,
                path,
                worker,
                seq,
            });
        }
        queues.push(queue);
    }
    let cutoff = max_age.map(|age| wall_us(now).saturating_sub(age.as_micros() as u64));
    let mut removed = Vec::new();
    loop {
        // Past the age limit first (oldest of those), then the oldest while over size.
        let heads = || {
            queues
                .iter()
                .enumerate()
                .filter_map(|(i, q)| q.front().map(|c| (i, c)))
        };
        let aged = heads()
            .filter(|(_, c)| cutoff.is_some_and(|cut| c.last_wall_us < cut))
            .min_by_key(|(_, c)| c.created_wall_us);
        let oldest = heads().min_by_key(|(_, c)| c.created_wall_us);
        let (queue, reason) = match (aged, oldest) {
            (Some((i, _)), _) => (i, "age"),
            (None, Some((i, _))) if max_bytes.is_some_and(|m| total_bytes > m) => (i, "bytes"),
            _ => break,
        };
        let q = &mut queues[queue];
        let Some(c) = q.pop_front() else { break };
        let name = segment_file_name(c.worker, c.seq);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(RETENTION_LOG))?;
        writeln!(
            log,
            "{} removed {name} {} {reason}",
            wall_us(now) / 1_000_000,
            hex(&c.chain_hash)
        )?;
        log.sync_all()?;
        fs::remove_file(&c.path)?;
        total_bytes = total_bytes.saturating_sub(c.bytes);
        removed.push(RemovedSegment {
            path: c.path,
            worker: c.worker,
            seq: c.seq,
            bytes: c.bytes,
            chain_hash: c.chain_hash,
            reason,
        });
    }
    if !removed.is_empty() {
        File::open(dir)?.sync_all()?;
    }
    Ok(removed)
}
