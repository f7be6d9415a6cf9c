//! The on-disk format of a versioned log: entry framing, segment file names
//! and the metadata record.
//!
//! Entry layout (little endian), [`HEADER_LEN`] = 36 bytes of header:
//!
//! | bytes  | field                                                  |
//! |--------|--------------------------------------------------------|
//! | 0..4   | payload length, `u32`                                  |
//! | 4..8   | CRC32 of bytes 8..36 of the header followed by payload |
//! | 8..16  | version, `i64`                                         |
//! | 16..24 | HLC `rtc_us`, `u64`                                    |
//! | 24..32 | HLC `logic`, `u64`                                     |
//! | 32     | kind, `u8` (chosen by the caller)                      |
//! | 33..36 | reserved, zero                                         |
//!
//! followed by the payload. Segment files are `<log>.<number>.seg` with the
//! number zero-padded to ten digits; the metadata file is `<log>.meta`.

use serde::{Deserialize, Serialize};

use crate::version::{Hlc, Version, INVALID};

/// Bytes of an entry header.
pub const HEADER_LEN: usize = 36;

/// The format number stored in the metadata record.
pub(crate) const FORMAT: u32 = 1;

/// The name of segment `number` of log `log`.
pub(crate) fn segment_name(log: &str, number: u64) -> String {
    format!("{log}.{number:010}.seg")
}

/// The segment number if `file` is a segment of log `log`.
pub(crate) fn parse_segment_name(log: &str, file: &str) -> Option<u64> {
    let digits = file
        .strip_prefix(log)?
        .strip_prefix('.')?
        .strip_suffix(".seg")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The name of the metadata file of log `log`.
pub(crate) fn meta_name(log: &str) -> String {
    format!("{log}.meta")
}

/// The log name a file belongs to, if it is a segment or metadata file.
pub(crate) fn log_name_of(file: &str) -> Option<&str> {
    if let Some(log) = file.strip_suffix(".meta") {
        return Some(log);
    }
    let stem = file.strip_suffix(".seg")?;
    let (log, digits) = stem.rsplit_once('.')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(log)
}

/// The metadata record, replaced atomically whenever it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// [`FORMAT`].
    pub format: u32,
    /// Entries older than this were trimmed and are ignored when found.
    pub trim_version: Version,
    /// The latest version the log is known to have reached even where no
    /// entry carries it (versions without a change, or a log trimmed empty).
    pub known_version: Version,
    /// A truncate that was decided but may not have finished: entries newer
    /// than this are dropped at open.
    pub truncate_to: Option<Version>,
}

impl Default for Meta {
    fn default() -> Meta {
        Meta {
            format: FORMAT,
            trim_version: INVALID,
            known_version: INVALID,
            truncate_to: None,
        }
    }
}

/// The fixed part of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryHeader {
    pub version: Version,
    pub hlc: Hlc,
    pub kind: u8,
    pub payload_len: u32,
}

/// Encodes one entry (header and payload). The caller has checked that the
/// payload length fits in a `u32`.
pub(crate) fn encode(version: Version, hlc: Hlc, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_into(&mut out, version, hlc, kind, payload);
    out
}

/// Appends the encoding of an entry to `out` (see [`encode`]).
pub(crate) fn encode_into(out: &mut Vec<u8>, version: Version, hlc: Hlc, kind: u8, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&hlc.rtc_us.to_le_bytes());
    out.extend_from_slice(&hlc.logic.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decodes the header at the start of `bytes`, checking what the header alone can show; the
/// payload is neither needed nor verified.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<EntryHeader, &'static str> {
    if bytes.len() < HEADER_LEN {
        return Err("incomplete header");
    }
    if bytes[33..36] != [0, 0, 0] {
        return Err("reserved header bytes are not zero");
    }
    Ok(EntryHeader {
        version: le_u64(&bytes[8..]) as i64,
        hlc: Hlc::new(le_u64(&bytes[16..]), le_u64(&bytes[24..])),
        kind: bytes[32],
        payload_len: le_u32(bytes),
    })
}

/// Decodes and verifies the entry at the start of `bytes`.
pub(crate) fn decode(bytes: &[u8]) -> Result<EntryHeader, &'static str> {
    let header = decode_header(bytes)?;
    let total = HEADER_LEN + header.payload_len as usize;
    if bytes.len() < total {
        return Err("incomplete payload");
    }
    if crc32fast::hash(&bytes[8..total]) != le_u32(&bytes[4..]) {
        return Err("checksum mismatch");
    }
    Ok(header)
}

/// One entry found by [`scan`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scanned {
    pub header: EntryHeader,
    /// Offset of the entry's header within the segment.
    pub offset: u64,
}

/// The first bad record found by [`scan`].
#[derive(Debug, Clone)]
pub(crate) struct BadTail {
    pub offset: u64,
    pub reason: &'static str,
}

/// Decodes every entry of a segment's bytes, stopping at the first record
/// that does not verify.
pub(crate) fn scan(bytes: &[u8]) -> (Vec<Scanned>, Option<BadTail>) {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        match decode(&bytes[pos..]) {
            Ok(header) => {
                entries.push(Scanned {
                    header,
                    offset: pos as u64,
                });
                pos += HEADER_LEN + header.payload_len as usize;
            }
            Err(reason) => {
                return (
                    entries,
                    Some(BadTail {
                        offset: pos as u64,
                        reason,
                    }),
                )
            }
        }
    }
    (entries, None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn encode_decode_round_trip_and_detect_flips() {
        let bytes = encode(42, Hlc::new(7, 8), 3, b"payload");
        assert_eq!(bytes.len(), HEADER_LEN + 7);
        let h = decode(&bytes).unwrap();
        assert_eq!(
            (h.version, h.hlc, h.kind, h.payload_len),
            (42, Hlc::new(7, 8), 3, 7)
        );
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err() || i < 4, "flip at {i} undetected");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn names_parse_back() {
        assert_eq!(segment_name("abc-1-2-f", 3), "abc-1-2-f.0000000003.seg");
        assert_eq!(parse_segment_name("abc", "abc.0000000003.seg"), Some(3));
        assert_eq!(parse_segment_name("ab", "abc.0000000003.seg"), None);
        assert_eq!(parse_segment_name("abc", "abc.meta"), None);
        assert_eq!(log_name_of("abc.0000000003.seg"), Some("abc"));
        assert_eq!(log_name_of("abc.meta"), Some("abc"));
        assert_eq!(log_name_of("abc.x.seg"), None);
        assert_eq!(log_name_of("other"), None);
    }

    #[test]
    fn scan_stops_at_the_first_bad_record() {
        let mut seg = encode(1, Hlc::ZERO, 0, b"a");
        seg.extend(encode(2, Hlc::ZERO, 0, b"bb"));
        let good = seg.len() as u64;
        seg.extend(&encode(3, Hlc::ZERO, 0, b"ccc")[..20]);
        let (entries, bad) = scan(&seg);
        assert_eq!(entries.len(), 2);
        assert_eq!(bad.unwrap().offset, good);
    }
}
