//! The on-disk layout of a segment: header, blocks, footer, trailer (see the crate docs
//! for the tables). Pure encode/decode; no file handling here.

use std::path::Path;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::record::{le_u16, le_u32, le_u64};

pub const SEGMENT_MAGIC: &[u8; 8] = b"SLCREC\0\x01";
pub const FORMAT_VERSION: u16 = 1;
pub const SEGMENT_HEADER_LEN: usize = 8 + 2 + 2 + 4 + 8 + 8 + 32 + 4;

pub const BLOCK_MAGIC: &[u8; 4] = b"SLBK";
pub const BLOCK_HEADER_LEN: usize = 4 + 1 + 3 + 4 + 4 + 4 + 8 + 8 + 4;
/// No legitimate block is this large (blocks are sized in tens of KiB); a header that
/// claims more is corrupt, and refusing it keeps a bad length from becoming a huge
/// allocation.
pub const MAX_BLOCK_LEN: u32 = 64 << 20;

pub const TRAILER_MAGIC: &[u8; 8] = b"SLCEND\0\x01";
pub const TRAILER_LEN: usize = 8 + 4 + 4 + 8;
/// Footers hold one index entry per session; this bound only guards allocation.
pub const MAX_FOOTER_LEN: u32 = 256 << 20;
pub const SIGNATURE_LEN: usize = 64;

pub type ChainHash = [u8; 32];

/// How a block's payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Zstd { level: i32 },
    Lz4,
}

impl Codec {
    pub fn code(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Zstd { .. } => 1,
            Codec::Lz4 => 2,
        }
    }
}

/// The fixed header at offset 0 of every segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u16,
    pub worker: u16,
    pub seq: u64,
    pub created_wall_us: u64,
    /// The previous segment's chain hash; zeros for a worker's first segment.
    pub prev_hash: ChainHash,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[..8].copy_from_slice(SEGMENT_MAGIC);
        out[8..10].copy_from_slice(&self.version.to_le_bytes());
        out[10..12].copy_from_slice(&self.worker.to_le_bytes());
        // 12..16 reserved, zero.
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.created_wall_us.to_le_bytes());
        out[32..64].copy_from_slice(&self.prev_hash);
        let crc = crc32c::crc32c(&out[..64]);
        out[64..68].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, &'static str> {
        let b = bytes
            .get(..SEGMENT_HEADER_LEN)
            .ok_or("shorter than a segment header")?;
        if &b[..8] != SEGMENT_MAGIC {
            return Err("not a Sluice recording segment (bad magic)");
        }
        if crc32c::crc32c(&b[..64]) != le_u32(&b[64..68]) {
            return Err("segment header checksum mismatch");
        }
        let version = le_u16(&b[8..10]);
        if version != FORMAT_VERSION {
            return Err("unsupported segment format version");
        }
        let mut prev_hash = [0u8; 32];
        prev_hash.copy_from_slice(&b[32..64]);
        Ok(SegmentHeader {
            version,
            worker: le_u16(&b[10..12]),
            seq: le_u64(&b[16..24]),
            created_wall_us: le_u64(&b[24..32]),
            prev_hash,
        })
    }
}

/// The fixed header in front of each block's (compressed) bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub codec: u8,
    pub uncompressed_len: u32,
    pub compressed_len: u32,
    pub records: u32,
    pub first_wall_us: u64,
    pub last_wall_us: u64,
    /// CRC32C over the header bytes before this field and the compressed bytes.
    pub crc: u32,
}

impl BlockHeader {
    fn fields(&self) -> [u8; BLOCK_HEADER_LEN - 4] {
        let mut out = [0u8; BLOCK_HEADER_LEN - 4];
        out[..4].copy_from_slice(BLOCK_MAGIC);
        out[4] = self.codec;
        // 5..8 reserved, zero.
        out[8..12].copy_from_slice(&self.uncompressed_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.compressed_len.to_le_bytes());
        out[16..20].copy_from_slice(&self.records.to_le_bytes());
        out[20..28].copy_from_slice(&self.first_wall_us.to_le_bytes());
        out[28..36].copy_from_slice(&self.last_wall_us.to_le_bytes());
        out
    }

    pub fn compute_crc(&self, compressed: &[u8]) -> u32 {
        crc32c::crc32c_append(crc32c::crc32c(&self.fields()), compressed)
    }

    pub fn encode(&self) -> [u8; BLOCK_HEADER_LEN] {
        let mut out = [0u8; BLOCK_HEADER_LEN];
        out[..BLOCK_HEADER_LEN - 4].copy_from_slice(&self.fields());
        out[BLOCK_HEADER_LEN - 4..].copy_from_slice(&self.crc.to_le_bytes());
        out
    }

    /// Parses a header and checks what can be checked without the payload: magic, a
    /// known codec, sane lengths. The CRC is checked by the caller once it has the bytes.
    pub fn decode(bytes: &[u8]) -> Result<BlockHeader, &'static str> {
        let b = bytes
            .get(..BLOCK_HEADER_LEN)
            .ok_or("truncated block header")?;
        if &b[..4] != BLOCK_MAGIC {
            return Err("bad block magic");
        }
        let header = BlockHeader {
            codec: b[4],
            uncompressed_len: le_u32(&b[8..12]),
            compressed_len: le_u32(&b[12..16]),
            records: le_u32(&b[16..20]),
            first_wall_us: le_u64(&b[20..28]),
            last_wall_us: le_u64(&b[28..36]),
            crc: le_u32(&b[36..40]),
        };
        if header.codec > 2 {
            return Err("unknown block codec");
        }
        if header.uncompressed_len > MAX_BLOCK_LEN || header.compressed_len > MAX_BLOCK_LEN {
            return Err("block length out of range");
        }
        Ok(header)
    }

    pub fn total_len(&self) -> u64 {
        BLOCK_HEADER_LEN as u64 + u64::from(self.compressed_len)
    }
}

/// Compresses a block's records with `codec` (borrowing them unchanged for `None`).
pub fn compress(codec: Codec, raw: &[u8]) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
    use std::borrow::Cow;
    match codec {
        Codec::None => Ok(Cow::Borrowed(raw)),
        Codec::Zstd { level } => zstd::bulk::compress(raw, level).map(Cow::Owned),
        Codec::Lz4 => Ok(Cow::Owned(lz4_flex::block::compress(raw))),
    }
}

/// Decompresses a block payload, refusing anything whose size differs from the header's.
pub fn decompress(header: &BlockHeader, compressed: &[u8]) -> Result<Vec<u8>, String> {
    let expected = header.uncompressed_len as usize;
    let raw = match header.codec {
        0 => compressed.to_vec(),
        1 => zstd::bulk::decompress(compressed, expected).map_err(|e| format!("zstd: {e}"))?,
        2 => lz4_flex::block::decompress(compressed, expected).map_err(|e| format!("lz4: {e}"))?,
        other => return Err(format!("unknown codec {other}")),
    };
    if raw.len() != expected {
        return Err(format!(
            "decompressed to {} bytes, header says {expected}",
            raw.len()
        ));
    }
    Ok(raw)
}

/// What a sealed segment's footer says about one session's records in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionIndex {
    pub session: Uuid,
    /// Offsets of the blocks holding at least one of its records, ascending.
    pub blocks: Vec<u64>,
    pub first_wall_us: u64,
    pub last_wall_us: u64,
    pub records: u64,
    /// Decision records in this segment: lets a search skip sessions with none.
    pub decisions: u64,
    /// Offsets of the blocks holding its decision records: a search reads only these.
    pub decision_blocks: Vec<u64>,
    /// Present when this segment holds the session's `SessionStart`.
    pub start: Option<StartSummary>,
    /// Present when this segment holds the session's `SessionEnd`.
    pub end: Option<EndSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartSummary {
    pub principal: String,
    pub resource: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndSummary {
    pub reason: String,
    pub statements: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One block as listed in the footer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockIndex {
    pub offset: u64,
    pub records: u32,
    pub first_wall_us: u64,
    pub last_wall_us: u64,
}

/// The index part of a footer (stored as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SegmentIndex {
    pub blocks: Vec<BlockIndex>,
    pub sessions: Vec<SessionIndex>,
}

impl SegmentIndex {
    pub fn first_wall_us(&self) -> Option<u64> {
        self.blocks.iter().map(|b| b.first_wall_us).min()
    }

    pub fn last_wall_us(&self) -> Option<u64> {
        self.blocks.iter().map(|b| b.last_wall_us).max()
    }
}

/// A decoded footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    pub index: SegmentIndex,
    /// The raw index bytes, as hashed.
    pub index_bytes: Vec<u8>,
    pub chain_hash: ChainHash,
    pub signature: Option<[u8; SIGNATURE_LEN]>,
}

/// Footer layout: index length u32, index JSON, chain hash, signature length u16, signature.
pub fn encode_footer(
    index_bytes: &[u8],
    chain_hash: &ChainHash,
    signature: Option<&[u8; 64]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(index_bytes.len() + 4 + 32 + 2 + SIGNATURE_LEN);
    out.extend_from_slice(&(index_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(index_bytes);
    out.extend_from_slice(chain_hash);
    match signature {
        Some(sig) => {
            out.extend_from_slice(&(SIGNATURE_LEN as u16).to_le_bytes());
            out.extend_from_slice(sig);
        }
        None => out.extend_from_slice(&0u16.to_le_bytes()),
    }
    out
}

pub fn decode_footer(bytes: &[u8]) -> Result<Footer, String> {
    let index_len = le_u32(bytes.get(..4).ok_or("footer truncated")?) as usize;
    let index_end = 4usize
        .checked_add(index_len)
        .ok_or("footer index length overflows")?;
    let index_bytes = bytes.get(4..index_end).ok_or("footer index truncated")?;
    let index: SegmentIndex =
        serde_json::from_slice(index_bytes).map_err(|e| format!("footer index: {e}"))?;
    let hash_bytes = bytes
        .get(index_end..index_end + 32)
        .ok_or("footer chain hash truncated")?;
    let mut chain_hash = [0u8; 32];
    chain_hash.copy_from_slice(hash_bytes);
    let sig_len_bytes = bytes
        .get(index_end + 32..index_end + 34)
        .ok_or("footer signature length truncated")?;
    let sig_len = le_u16(sig_len_bytes) as usize;
    let signature = match sig_len {
        0 => None,
        SIGNATURE_LEN => {
            let s = bytes
                .get(index_end + 34..index_end + 34 + SIGNATURE_LEN)
                .ok_or("footer signature truncated")?;
            let mut sig = [0u8; SIGNATURE_LEN];
            sig.copy_from_slice(s);
            Some(sig)
        }
        _ => return Err("footer signature length is neither 0 nor 64".into()),
    };
    if bytes.len() != index_end + 34 + sig_len {
        return Err("footer has trailing bytes".into());
    }
    Ok(Footer {
        index,
        index_bytes: index_bytes.to_vec(),
        chain_hash,
        signature,
    })
}

/// The fixed trailer at the very end of a sealed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub footer_offset: u64,
    pub footer_len: u32,
    pub footer_crc: u32,
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut out = [0u8; TRAILER_LEN];
        out[..8].copy_from_slice(&self.footer_offset.to_le_bytes());
        out[8..12].copy_from_slice(&self.footer_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.footer_crc.to_le_bytes());
        out[16..24].copy_from_slice(TRAILER_MAGIC);
        out
    }

    /// `None` when the bytes do not end in the trailer magic (an unsealed segment).
    pub fn decode(bytes: &[u8; TRAILER_LEN]) -> Option<Trailer> {
        if &bytes[16..24] != TRAILER_MAGIC {
            return None;
        }
        Some(Trailer {
            footer_offset: le_u64(&bytes[..8]),
            footer_len: le_u32(&bytes[8..12]),
            footer_crc: le_u32(&bytes[12..16]),
        })
    }
}

/// `w{worker:03}-{seq:010}.seg`
pub fn segment_file_name(worker: u16, seq: u64) -> String {
    format!("w{worker:03}-{seq:010}.seg")
}

/// The (worker, seq) a segment file name encodes, or `None` for any other file.
pub fn parse_segment_file_name(path: &Path) -> Option<(u16, u64)> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".seg")?.strip_prefix('w')?;
    let (worker, seq) = stem.split_once('-')?;
    if worker.len() < 3 || seq.len() < 10 {
        return None;
    }
    Some((worker.parse().ok()?, seq.parse().ok()?))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn parse_hex32(s: &str) -> Option<ChainHash> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
