//! The audit side over a recording directory: session listings, one session's records,
//! and decision search, using footer indexes to avoid decompressing what cannot match.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use uuid::Uuid;

use crate::format::{SegmentHeader, SegmentIndex};
use crate::reader::SegmentReader;
use crate::record::{Decision, Record, RecordKind, Verdict};
use crate::writer::list_segments;

/// Something wrong found while reading: which file, where, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub segment: PathBuf,
    pub offset: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(o) => write!(f, "{} at offset {o}: {}", self.segment.display(), self.what),
            None => write!(f, "{}: {}", self.segment.display(), self.what),
        }
    }
}

struct SegmentEntry {
    path: PathBuf,
    header: SegmentHeader,
    index: SegmentIndex,
}

/// Every worker's segments in one recording directory, indexed at open.
pub struct Archive {
    segments: Vec<SegmentEntry>,
    problems: Vec<Problem>,
}

/// One session as the archive knows it (merged over every segment holding its records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub session: Uuid,
    pub worker: u16,
    /// `None` when the segment holding its start is gone (retention) or unreadable.
    pub principal: Option<String>,
    pub resource: Option<String>,
    pub start_wall_us: u64,
    pub last_wall_us: u64,
    pub duration: Duration,
    /// Whether its `SessionEnd` was recorded.
    pub ended: bool,
    pub end_reason: Option<String>,
    /// From `SessionEnd` when ended, otherwise the decisions recorded so far.
    pub statements: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub records: u64,
}

/// Which sessions [`Archive::sessions`] lists. Empty fields match everything; the time
/// range matches sessions with any record in it.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub principal: Option<String>,
    pub resource: Option<String>,
    pub from_wall_us: Option<u64>,
    pub to_wall_us: Option<u64>,
}

/// A decision search; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub principal: Option<String>,
    pub resource: Option<String>,
    pub class: Option<String>,
    pub verdict: Option<Verdict>,
    pub from_wall_us: Option<u64>,
    pub to_wall_us: Option<u64>,
    /// Matched against the (already masked) statement text.
    pub statement: Option<Regex>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    pub session: Uuid,
    pub wall_us: u64,
    pub principal: Option<String>,
    pub resource: Option<String>,
    pub decision: Decision,
}

#[derive(Debug, Clone, Default)]
pub struct SearchResult {
    pub hits: Vec<SearchHit>,
    /// Blocks decompressed; the rest were ruled out from footer indexes.
    pub blocks_read: u64,
    pub segments_skipped: u64,
    pub problems: Vec<Problem>,
}

/// One session's records and anything that could not be read on the way.
#[derive(Debug, Clone, Default)]
pub struct SessionRecords {
    pub records: Vec<Record>,
    pub problems: Vec<Problem>,
}

fn overlaps(first: u64, last: u64, from: Option<u64>, to: Option<u64>) -> bool {
    from.is_none_or(|f| last >= f) && to.is_none_or(|t| first <= t)
}

impl Archive {
    /// Reads the header and footer of every segment in `dir` (scanning the blocks of
    /// unsealed ones). Damaged segments are listed in [`Archive::problems`], not fatal.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Archive> {
        let mut segments = Vec::new();
        let mut problems = Vec::new();
        for (_, _, path) in list_segments(dir.as_ref())? {
            let reader = match SegmentReader::open(&path) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(Problem {
                        segment: path,
                        offset: None,
                        what: e.to_string(),
                    });
                    continue;
                }
            };
            let index = match reader.read_footer() {
                Ok(Some(footer)) => footer.index,
                Ok(None) => reader.scan_index().0,
                Err(e) => {
                    problems.push(Problem {
                        segment: path.clone(),
                        offset: None,
                        what: format!("{e}; blocks scanned instead"),
                    });
                    reader.scan_index().0
                }
            };
            segments.push(SegmentEntry {
                header: reader.header().clone(),
                path,
                index,
            });
        }
        Ok(Archive { segments, problems })
    }

    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    fn summaries(&self) -> BTreeMap<Uuid, SessionSummary> {
        let mut out: BTreeMap<Uuid, SessionSummary> = BTreeMap::new();
        let mut decisions: HashMap<Uuid, u64> = HashMap::new();
        for seg in &self.segments {
            for s in &seg.index.sessions {
                let e = out.entry(s.session).or_insert_with(|| SessionSummary {
                    session: s.session,
                    worker: seg.header.worker,
                    principal: None,
                    resource: None,
                    start_wall_us: s.first_wall_us,
                    last_wall_us: s.last_wall_us,
                    duration: Duration::ZERO,
                    ended: false,
                    end_reason: None,
                    statements: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                    records: 0,
                });
                e.start_wall_us = e.start_wall_us.min(s.first_wall_us);
                e.last_wall_us = e.last_wall_us.max(s.last_wall_us);
                e.records += s.records;
                *decisions.entry(s.session).or_default() += s.decisions;
                if let Some(start) = &s.start {
                    e.principal = Some(start.principal.clone());
                    e.resource = Some(start.resource.clone());
                }
                if let Some(end) = &s.end {
                    e.ended = true;
                    e.end_reason = Some(end.reason.clone());
                    e.statements = end.statements;
                    e.bytes_in = end.bytes_in;
                    e.bytes_out = end.bytes_out;
                }
            }
        }
        for e in out.values_mut() {
            e.duration = Duration::from_micros(e.last_wall_us.saturating_sub(e.start_wall_us));
            if !e.ended {
                e.statements = decisions.get(&e.session).copied().unwrap_or(0);
            }
        }
        out
    }

    /// Sessions matching `filter`, by start time.
    pub fn sessions(&self, filter: &SessionFilter) -> Vec<SessionSummary> {
        let mut out: Vec<SessionSummary> = self
            .summaries()
            .into_values()
            .filter(|s| {
                filter
                    .principal
                    .as_ref()
                    .is_none_or(|p| s.principal.as_ref() == Some(p))
                    && filter
                        .resource
                        .as_ref()
                        .is_none_or(|r| s.resource.as_ref() == Some(r))
                    && overlaps(
                        s.start_wall_us,
                        s.last_wall_us,
                        filter.from_wall_us,
                        filter.to_wall_us,
                    )
            })
            .collect();
        out.sort_by_key(|s| (s.start_wall_us, s.session));
        out
    }

    /// Every record of `session`, reading only the blocks the indexes name. Records of one
    /// worker keep their append order; several workers' are merged by wall time.
    pub fn records(&self, session: Uuid) -> SessionRecords {
        let mut per_worker: BTreeMap<u16, Vec<Record>> = BTreeMap::new();
        let mut problems = Vec::new();
        let mut segments: Vec<&SegmentEntry> = self
            .segments
            .iter()
            .filter(|s| s.index.sessions.iter().any(|i| i.session == session))
            .collect();
        segments.sort_by_key(|s| (s.header.worker, s.header.seq));
        for seg in segments {
            let offsets: BTreeSet<u64> = seg
                .index
                .sessions
                .iter()
                .filter(|i| i.session == session)
                .flat_map(|i| i.blocks.iter().copied())
                .collect();
            let out = per_worker.entry(seg.header.worker).or_default();
            read_blocks(&seg.path, &offsets, &mut problems, |record| {
                if record.session == session {
                    out.push(record);
                }
            });
        }
        SessionRecords {
            records: merge_by_wall(per_worker.into_values().collect()),
            problems,
        }
    }

    /// Decision records matching `query`. Segments, sessions and blocks whose footer
    /// index rules them out (time range, principal/resource of the session, no
    /// decisions) are never decompressed.
    pub fn search(&self, query: &SearchQuery) -> SearchResult {
        let summaries = self.summaries();
        let mut result = SearchResult::default();
        let wanted_session = |id: &Uuid| {
            let s = summaries.get(id);
            query
                .principal
                .as_ref()
                .is_none_or(|p| s.and_then(|s| s.principal.as_ref()) == Some(p))
                && query
                    .resource
                    .as_ref()
                    .is_none_or(|r| s.and_then(|s| s.resource.as_ref()) == Some(r))
        };
        for seg in &self.segments {
            let in_range = match (seg.index.first_wall_us(), seg.index.last_wall_us()) {
                (Some(first), Some(last)) => {
                    overlaps(first, last, query.from_wall_us, query.to_wall_us)
                }
                _ => false,
            };
            let sessions: HashSet<Uuid> = seg
                .index
                .sessions
                .iter()
                .filter(|i| {
                    i.decisions > 0
                        && overlaps(
                            i.first_wall_us,
                            i.last_wall_us,
                            query.from_wall_us,
                            query.to_wall_us,
                        )
                        && wanted_session(&i.session)
                })
                .map(|i| i.session)
                .collect();
            if !in_range || sessions.is_empty() {
                result.segments_skipped += 1;
                continue;
            }
            let block_in_range: HashSet<u64> = seg
                .index
                .blocks
                .iter()
                .filter(|b| {
                    overlaps(
                        b.first_wall_us,
                        b.last_wall_us,
                        query.from_wall_us,
                        query.to_wall_us,
                    )
                })
                .map(|b| b.offset)
                .collect();
            let offsets: BTreeSet<u64> = seg
                .index
                .sessions
                .iter()
                .filter(|i| sessions.contains(&i.session))
                .flat_map(|i| i.decision_blocks.iter().copied())
                .filter(|o| block_in_range.contains(o))
                .collect();
            result.blocks_read += offsets.len() as u64;
            let hits = &mut result.hits;
            read_blocks(&seg.path, &offsets, &mut result.problems, |record| {
                let RecordKind::Decision(decision) = record.kind else {
                    return;
                };
                let matches = sessions.contains(&record.session)
                    && overlaps(
                        record.wall_us,
                        record.wall_us,
                        query.from_wall_us,
                        query.to_wall_us,
                    )
                    && query.class.as_ref().is_none_or(|c| &decision.class == c)
                    && query.verdict.is_none_or(|v| decision.verdict == v)
                    && query
                        .statement
                        .as_ref()
                        .is_none_or(|re| re.is_match(&decision.statement));
                if matches {
                    let summary = summaries.get(&record.session);
                    hits.push(SearchHit {
                        session: record.session,
                        wall_us: record.wall_us,
                        principal: summary.and_then(|s| s.principal.clone()),
                        resource: summary.and_then(|s| s.resource.clone()),
                        decision,
                    });
                }
            });
        }
        result.hits.sort_by_key(|h| (h.wall_us, h.session));
        result
    }
}

/// Reads the blocks at `offsets` of one segment, feeding each record to `each`; a segment
/// or block that cannot be read becomes a [`Problem`].
fn read_blocks(
    path: &Path,
    offsets: &BTreeSet<u64>,
    problems: &mut Vec<Problem>,
    mut each: impl FnMut(Record),
) {
    if offsets.is_empty() {
        return;
    }
    let reader = match SegmentReader::open(path) {
        Ok(r) => r,
        Err(e) => {
            problems.push(Problem {
                segment: path.to_path_buf(),
                offset: None,
                what: e.to_string(),
            });
            return;
        }
    };
    for &offset in offsets {
        match reader.read_block_at(offset) {
            Ok(block) => block.records.into_iter().for_each(&mut each),
            Err(bad) => problems.push(Problem {
                segment: path.to_path_buf(),
                offset: Some(bad.offset),
                what: bad.what,
            }),
        }
    }
}

/// Merges per-worker record lists (each already in append order) by wall time, keeping
/// each list's own order.
fn merge_by_wall(lists: Vec<Vec<Record>>) -> Vec<Record> {
    if lists.len() <= 1 {
        return lists.into_iter().next().unwrap_or_default();
    }
    let total = lists.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total);
    let mut iters: Vec<std::iter::Peekable<std::vec::IntoIter<Record>>> = lists
        .into_iter()
        .map(|l| l.into_iter().peekable())
        .collect();
    loop {
        let next = iters
            .iter_mut()
            .enumerate()
            .filter_map(|(i, it)| it.peek().map(|r| (r.wall_us, i)))
            .min();
        let Some((_, i)) = next else { break };
        if let Some(r) = iters[i].next() {
            out.push(r);
        }
    }
    out
}
