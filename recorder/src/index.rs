//! Builds a segment's footer index from the records as they are written (or, for an
//! unsealed segment, as they are scanned).

use std::collections::HashMap;

use uuid::Uuid;

use crate::format::{
    BlockHeader, BlockIndex, EndSummary, SegmentIndex, SessionIndex, StartSummary,
};
use crate::record::{Record, RecordKind};

#[derive(Debug, Default)]
pub(crate) struct IndexBuilder {
    blocks: Vec<BlockIndex>,
    /// Sessions in first-seen order, so the footer lists them as they appeared.
    order: Vec<Uuid>,
    sessions: HashMap<Uuid, SessionIndex>,
}

impl IndexBuilder {
    /// Notes one record that lives in the block at `block_offset`.
    pub(crate) fn add_record(&mut self, block_offset: u64, record: &Record) {
        let entry = self.sessions.entry(record.session).or_insert_with(|| {
            self.order.push(record.session);
            SessionIndex {
                session: record.session,
                blocks: Vec::new(),
                first_wall_us: record.wall_us,
                last_wall_us: record.wall_us,
                records: 0,
                decisions: 0,
                decision_blocks: Vec::new(),
                start: None,
                end: None,
            }
        });
        if entry.blocks.last() != Some(&block_offset) {
            entry.blocks.push(block_offset);
        }
        entry.first_wall_us = entry.first_wall_us.min(record.wall_us);
        entry.last_wall_us = entry.last_wall_us.max(record.wall_us);
        entry.records += 1;
        match &record.kind {
            RecordKind::SessionStart(s) => {
                entry.start = Some(StartSummary {
                    principal: s.principal.clone(),
                    resource: s.resource.clone(),
                })
            }
            RecordKind::SessionEnd(e) => {
                entry.end = Some(EndSummary {
                    reason: e.reason.clone(),
                    statements: e.statements,
                    bytes_in: e.bytes_in,
                    bytes_out: e.bytes_out,
                })
            }
            RecordKind::Decision(_) => {
                entry.decisions += 1;
                if entry.decision_blocks.last() != Some(&block_offset) {
                    entry.decision_blocks.push(block_offset);
                }
            }
            _ => {}
        }
    }

    pub(crate) fn add_block(&mut self, offset: u64, header: &BlockHeader) {
        self.blocks.push(BlockIndex {
            offset,
            records: header.records,
            first_wall_us: header.first_wall_us,
            last_wall_us: header.last_wall_us,
        });
    }

    pub(crate) fn block_count(&self) -> usize {
        self.blocks.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub(crate) fn build(&self) -> SegmentIndex {
        SegmentIndex {
            blocks: self.blocks.clone(),
            sessions: self
                .order
                .iter()
                .filter_map(|id| self.sessions.get(id).cloned())
                .collect(),
        }
    }
}
