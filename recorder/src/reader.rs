//! Reading one segment file: header, blocks (each CRC-checked, a bad one reported and
//! skipped), footer.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::format::{
    decode_footer, decompress, BlockHeader, Footer, SegmentHeader, SegmentIndex, Trailer,
    BLOCK_HEADER_LEN, BLOCK_MAGIC, MAX_FOOTER_LEN, SEGMENT_HEADER_LEN, TRAILER_LEN,
};
use crate::index::IndexBuilder;
use crate::record::Record;

/// A segment that cannot be read at all (its header or footer), with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} at offset {offset}: {what}", path.display())]
    Format {
        path: PathBuf,
        offset: u64,
        what: String,
    },
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> io::Error {
        match e {
            ReadError::Io { source, .. } => source,
            e @ ReadError::Format { .. } => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// A block that failed a check. Reading continues after it when a later valid block is
/// found (`resumed_at`); `None` means nothing valid follows it (a torn tail, if the segment
/// is unsealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBlock {
    pub offset: u64,
    pub what: String,
    pub resumed_at: Option<u64>,
}

/// One valid block and its decoded records.
#[derive(Debug, Clone)]
pub struct Block {
    pub offset: u64,
    pub header: BlockHeader,
    pub records: Vec<Record>,
}

impl Block {
    pub fn end(&self) -> u64 {
        self.offset + self.header.total_len()
    }
}

/// An open segment file.
pub struct SegmentReader {
    path: PathBuf,
    file: File,
    len: u64,
    header: SegmentHeader,
    /// Present when the file ends in a trailer whose footer position is consistent with
    /// the file's length: the segment was sealed.
    trailer: Option<Trailer>,
}

impl SegmentReader {
    pub fn open(path: impl AsRef<Path>) -> Result<SegmentReader, ReadError> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| ReadError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let mut head = vec![0u8; SEGMENT_HEADER_LEN.min(len as usize)];
        file.read_exact_at(&mut head, 0).map_err(io_err)?;
        let header = SegmentHeader::decode(&head).map_err(|what| ReadError::Format {
            path: path.clone(),
            offset: 0,
            what: what.into(),
        })?;
        let mut trailer = None;
        if len >= (SEGMENT_HEADER_LEN + TRAILER_LEN) as u64 {
            let mut tail = [0u8; TRAILER_LEN];
            file.read_exact_at(&mut tail, len - TRAILER_LEN as u64)
                .map_err(io_err)?;
            trailer = Trailer::decode(&tail);
        }
        Ok(SegmentReader {
            path,
            file,
            len,
            header,
            trailer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len <= SEGMENT_HEADER_LEN as u64
    }

    /// Whether the file ends in a trailer (the writer finished sealing it). The footer
    /// itself may still be damaged: [`SegmentReader::read_footer`] checks it.
    pub fn is_sealed(&self) -> bool {
        self.trailer.is_some()
    }

    /// Where blocks end: the footer for a sealed segment, the end of file otherwise. A
    /// trailer pointing outside the file is ignored here so blocks stay readable.
    pub fn blocks_end(&self) -> u64 {
        match self.trailer {
            Some(t) if self.footer_position_valid(&t) => t.footer_offset,
            _ => self.len,
        }
    }

    fn footer_position_valid(&self, t: &Trailer) -> bool {
        t.footer_offset >= SEGMENT_HEADER_LEN as u64
            && t.footer_len <= MAX_FOOTER_LEN
            && t.footer_offset
                .checked_add(u64::from(t.footer_len) + TRAILER_LEN as u64)
                == Some(self.len)
    }

    fn format_error(&self, offset: u64, what: impl Into<String>) -> ReadError {
        ReadError::Format {
            path: self.path.clone(),
            offset,
            what: what.into(),
        }
    }

    /// The footer of a sealed segment, `None` for an unsealed one; an error when the
    /// trailer or footer is damaged.
    pub fn read_footer(&self) -> Result<Option<Footer>, ReadError> {
        let Some(trailer) = self.trailer else {
            return Ok(None);
        };
        let trailer_at = self.len - TRAILER_LEN as u64;
        if !self.footer_position_valid(&trailer) {
            return Err(self.format_error(trailer_at, "trailer points outside the file"));
        }
        let mut bytes = vec![0u8; trailer.footer_len as usize];
        self.file
            .read_exact_at(&mut bytes, trailer.footer_offset)
            .map_err(|source| ReadError::Io {
                path: self.path.clone(),
                source,
            })?;
        if crc32c::crc32c(&bytes) != trailer.footer_crc {
            return Err(self.format_error(trailer.footer_offset, "footer checksum mismatch"));
        }
        decode_footer(&bytes)
            .map(Some)
            .map_err(|what| self.format_error(trailer.footer_offset, what))
    }

    /// Reads, checks and decodes the block at `offset`.
    pub fn read_block_at(&self, offset: u64) -> Result<Block, BadBlock> {
        let end = self.blocks_end();
        let bad = |what: String| BadBlock {
            offset,
            what,
            resumed_at: None,
        };
        if offset < SEGMENT_HEADER_LEN as u64 || offset >= end {
            return Err(bad("offset outside the segment's blocks".into()));
        }
        if end - offset < BLOCK_HEADER_LEN as u64 {
            return Err(bad(format!(
                "truncated block header ({} bytes)",
                end - offset
            )));
        }
        let mut head = [0u8; BLOCK_HEADER_LEN];
        self.file
            .read_exact_at(&mut head, offset)
            .map_err(|e| bad(format!("read: {e}")))?;
        let header = BlockHeader::decode(&head).map_err(|w| bad(w.into()))?;
        if offset + header.total_len() > end {
            return Err(bad(format!(
                "block of {} bytes runs past the end ({} bytes left)",
                header.total_len(),
                end - offset
            )));
        }
        let mut compressed = vec![0u8; header.compressed_len as usize];
        self.file
            .read_exact_at(&mut compressed, offset + BLOCK_HEADER_LEN as u64)
            .map_err(|e| bad(format!("read: {e}")))?;
        if header.compute_crc(&compressed) != header.crc {
            return Err(bad("block checksum mismatch".into()));
        }
        let raw = decompress(&header, &compressed).map_err(bad)?;
        let records = Record::decode_all(&raw).map_err(|e| bad(e.to_string()))?;
        if records.len() != header.records as usize {
            return Err(bad(format!(
                "block header says {} records, found {}",
                header.records,
                records.len()
            )));
        }
        Ok(Block {
            offset,
            header,
            records,
        })
    }

    /// Every block in file order. A bad block is yielded as `Err` and reading resumes at
    /// the next offset where a block passes its checks.
    pub fn blocks(&self) -> BlockIter<'_> {
        BlockIter {
            reader: self,
            pos: SEGMENT_HEADER_LEN as u64,
            end: self.blocks_end(),
        }
    }

    /// Finds the next offset after `from` where a whole, valid block starts. Only used
    /// after damage, so reading the rest of the file once is acceptable.
    fn resync(&self, from: u64, end: u64) -> Option<u64> {
        let mut rest = vec![0u8; end.checked_sub(from)? as usize];
        self.file.read_exact_at(&mut rest, from).ok()?;
        let mut i = 0;
        while i + BLOCK_MAGIC.len() <= rest.len() {
            let found = rest[i..]
                .windows(BLOCK_MAGIC.len())
                .position(|w| w == BLOCK_MAGIC)?;
            let candidate = from + (i + found) as u64;
            if self.read_block_at(candidate).is_ok() {
                return Some(candidate);
            }
            i += found + 1;
        }
        None
    }

    /// Builds the index of an unsealed segment by reading its valid blocks. Returns the
    /// index, the bad blocks met, and where the last valid block ends.
    pub fn scan_index(&self) -> (SegmentIndex, Vec<BadBlock>, u64) {
        let mut builder = IndexBuilder::default();
        let mut bad = Vec::new();
        let mut valid_end = SEGMENT_HEADER_LEN as u64;
        for block in self.blocks() {
            match block {
                Ok(block) => {
                    builder.add_block(block.offset, &block.header);
                    for record in &block.records {
                        builder.add_record(block.offset, record);
                    }
                    valid_end = block.end();
                }
                Err(b) => bad.push(b),
            }
        }
        (builder.build(), bad, valid_end)
    }
}

pub struct BlockIter<'a> {
    reader: &'a SegmentReader,
    pos: u64,
    end: u64,
}

impl Iterator for BlockIter<'_> {
    type Item = Result<Block, BadBlock>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        match self.reader.read_block_at(self.pos) {
            Ok(block) => {
                self.pos = block.end();
                Some(Ok(block))
            }
            Err(mut bad) => {
                bad.resumed_at = self.reader.resync(self.pos + 1, self.end);
                self.pos = bad.resumed_at.unwrap_or(self.end);
                Some(Err(bad))
            }
        }
    }
}
