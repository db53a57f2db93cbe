//! The self-describing payload envelope: every payload memfd holds one of these, so a snapshot
//! can be validated with no out-of-band data. Pure functions, no I/O.
//!
//! Layout (48-byte header, little-endian, then the payload):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"SLUICESN"` |
//! | 8 | 4 | format version (`ENVELOPE_VERSION`) |
//! | 12 | 4 | header length (48) |
//! | 16 | 8 | generation |
//! | 24 | 8 | published at, ms since the Unix epoch |
//! | 32 | 8 | payload length |
//! | 40 | 4 | CRC32C (Castagnoli) over bytes 0..40 followed by the payload |
//! | 44 | 4 | reserved, must be 0 |

use super::SnapshotError;

/// Magic bytes at the start of every snapshot envelope.
pub const ENVELOPE_MAGIC: [u8; 8] = *b"SLUICESN";
/// The envelope format version this build writes and the only one it reads.
pub const ENVELOPE_VERSION: u32 = 1;
/// Size of the envelope header that precedes the payload.
pub const ENVELOPE_HEADER_LEN: usize = 48;
/// Largest payload a reader accepts (a sanity bound before mapping anything).
pub const MAX_PAYLOAD_LEN: u64 = 1 << 30;

/// The validated fields of an envelope header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// Snapshot generation, assigned by the publisher, strictly increasing.
    pub generation: u64,
    /// Publish time in milliseconds since the Unix epoch.
    pub published_at_ms: u64,
    /// Length of the payload that follows the header.
    pub payload_len: u64,
    /// CRC32C over header bytes 0..40 and the payload.
    pub checksum: u32,
}

fn checksum_of(prefix: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(prefix), payload)
}

/// Builds the 48-byte envelope header for `payload`.
pub fn encode_header(
    generation: u64,
    published_at_ms: u64,
    payload: &[u8],
) -> [u8; ENVELOPE_HEADER_LEN] {
    let mut h = [0u8; ENVELOPE_HEADER_LEN];
    h[0..8].copy_from_slice(&ENVELOPE_MAGIC);
    h[8..12].copy_from_slice(&ENVELOPE_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(ENVELOPE_HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&generation.to_le_bytes());
    h[24..32].copy_from_slice(&published_at_ms.to_le_bytes());
    h[32..40].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let crc = checksum_of(&h[0..40], payload);
    h[40..44].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Builds a whole envelope (header + payload) in memory. The publisher writes the two parts
/// straight into the memfd instead; this is for tests and tools.
pub fn encode_envelope(generation: u64, published_at_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ENVELOPE_HEADER_LEN + payload.len());
    v.extend_from_slice(&encode_header(generation, published_at_ms, payload));
    v.extend_from_slice(payload);
    v
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the fields an envelope *claims* without validating them (used only to fill the
/// shared header for deliberately broken envelopes in tests). Missing bytes read as zero.
pub(crate) fn claimed_fields(bytes: &[u8]) -> EnvelopeHeader {
    let mut h = [0u8; ENVELOPE_HEADER_LEN];
    let n = bytes.len().min(ENVELOPE_HEADER_LEN);
    h[..n].copy_from_slice(&bytes[..n]);
    EnvelopeHeader {
        generation: u64_at(&h, 16),
        published_at_ms: u64_at(&h, 24),
        payload_len: u64_at(&h, 32),
        checksum: u32_at(&h, 40),
    }
}

/// Validates a whole envelope: magic, version (anything but `ENVELOPE_VERSION` is refused),
/// header length, reserved bits, payload length against the actual size, and the CRC32C.
/// Returns the header fields; the payload is `&bytes[ENVELOPE_HEADER_LEN..]`.
pub fn decode_envelope(bytes: &[u8]) -> Result<EnvelopeHeader, SnapshotError> {
    if bytes.len() < 12 {
        return Err(SnapshotError::Truncated { len: bytes.len() });
    }
    if bytes[0..8] != ENVELOPE_MAGIC {
        let mut found = [0u8; 8];
        found.copy_from_slice(&bytes[0..8]);
        return Err(SnapshotError::BadMagic { found });
    }
    let version = u32_at(bytes, 8);
    if version != ENVELOPE_VERSION {
        return Err(SnapshotError::WrongVersion {
            found: version,
            supported: ENVELOPE_VERSION,
        });
    }
    if bytes.len() < ENVELOPE_HEADER_LEN {
        return Err(SnapshotError::Truncated { len: bytes.len() });
    }
    let header_len = u32_at(bytes, 12);
    if header_len as usize != ENVELOPE_HEADER_LEN || u32_at(bytes, 44) != 0 {
        return Err(SnapshotError::Invalid(format!(
            "envelope header length {header_len} or reserved field is not what version {ENVELOPE_VERSION} defines"
        )));
    }
    let claimed = claimed_fields(bytes);
    let actual = (bytes.len() - ENVELOPE_HEADER_LEN) as u64;
    if claimed.payload_len != actual {
        return Err(SnapshotError::LengthMismatch {
            declared: claimed.payload_len,
            actual,
        });
    }
    let computed = checksum_of(&bytes[0..40], &bytes[ENVELOPE_HEADER_LEN..]);
    if computed != claimed.checksum {
        return Err(SnapshotError::ChecksumMismatch {
            declared: claimed.checksum,
            computed,
        });
    }
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let env = encode_envelope(7, 1234, b"hello");
        let h = decode_envelope(&env).unwrap();
        assert_eq!(h.generation, 7);
        assert_eq!(h.published_at_ms, 1234);
        assert_eq!(h.payload_len, 5);
        assert_eq!(&env[ENVELOPE_HEADER_LEN..], b"hello");
    }

    #[test]
    fn empty_payload_round_trips() {
        let env = encode_envelope(1, 1, b"");
        assert_eq!(env.len(), ENVELOPE_HEADER_LEN);
        assert_eq!(decode_envelope(&env).unwrap().payload_len, 0);
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let env = encode_envelope(3, 99, b"some policy bytes");
        for byte in 0..env.len() {
            for bit in 0..8 {
                let mut bad = env.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode_envelope(&bad).is_err(),
                    "flip of byte {byte} bit {bit} accepted"
                );
            }
        }
    }

    #[test]
    fn wrong_version_names_both_versions() {
        let mut env = encode_envelope(1, 1, b"x");
        env[8..12].copy_from_slice(&2u32.to_le_bytes());
        let err = decode_envelope(&env).unwrap_err();
        assert!(matches!(
            err,
            SnapshotError::WrongVersion {
                found: 2,
                supported: 1
            }
        ));
        let msg = err.to_string();
        assert!(
            msg.contains("version 2") && msg.contains("version 1"),
            "{msg}"
        );
    }

    #[test]
    fn truncation_and_extension_are_refused() {
        let env = encode_envelope(1, 1, b"abcdef");
        for cut in 0..env.len() {
            assert!(
                decode_envelope(&env[..cut]).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
        let mut longer = env.clone();
        longer.push(0);
        assert!(matches!(
            decode_envelope(&longer),
            Err(SnapshotError::LengthMismatch { .. })
        ));
    }
}
