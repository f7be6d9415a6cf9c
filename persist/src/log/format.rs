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
//! | 33     | flags, `u8`: bit 0 set = the entry is signed           |
//! | 34..36 | reserved, zero                                         |
//!
//! followed by the payload and, in a signed entry, its [`SIGNATURE_LEN`]-byte
//! Ed25519 signature (see [`sign`](crate::sign) for what it covers). The CRC
//! covers the signature too, so a torn signature is a torn entry. Segment
//! files are `<log>.<number>.seg` with the number zero-padded to ten digits;
//! the metadata file is `<log>.meta`.
//!
//! The metadata record is format 1 for a log that has never been written
//! with a signer, and format 2 once it has: format 2 adds the chain
//! anchor kept across trims, and makes builds that predate signatures refuse
//! the log instead of cutting its signed entries (whose flag byte they do not
//! know) as a torn tail.

use serde::{Deserialize, Serialize};

use crate::sign::{Signature, SIGNATURE_LEN};
use crate::version::{Hlc, Version, INVALID};

/// Bytes of an entry header.
pub const HEADER_LEN: usize = 36;

/// The format number of a metadata record of a log without signatures.
pub(crate) const FORMAT: u32 = 1;
/// The format number of a metadata record of a log that may hold signed entries.
pub(crate) const FORMAT_SIGNED: u32 = 2;

/// Flag bit of a signed entry.
const FLAG_SIGNED: u8 = 1;

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
    /// The signature of the newest trimmed entry, which the oldest retained
    /// entry's signature chains from ([`FORMAT_SIGNED`] only; `None` when no
    /// signed entry was trimmed).
    pub anchor: Option<Anchor>,
}

/// The newest trimmed entry's version and signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Anchor {
    /// The trimmed entry's version.
    pub version: Version,
    /// Its signature ([`SIGNATURE_LEN`] bytes).
    pub signature: Vec<u8>,
}

impl Anchor {
    /// The anchor of `signature`, the signature of the entry `version`.
    pub fn new(version: Version, signature: &Signature) -> Anchor {
        Anchor {
            version,
            signature: signature.as_bytes().to_vec(),
        }
    }

    /// The signature; `None` if the stored bytes have the wrong length.
    pub fn signature(&self) -> Option<Signature> {
        Signature::from_bytes(&self.signature)
    }
}

/// The metadata record as format 1 wrote it (no anchor).
#[derive(Serialize, Deserialize)]
struct MetaV1 {
    format: u32,
    trim_version: Version,
    known_version: Version,
    truncate_to: Option<Version>,
}

impl Meta {
    /// Encodes the record in its own format (1 without signatures, so that a
    /// log never signed stays readable by builds that predate signatures).
    pub fn encode(&self) -> Result<Vec<u8>, bincode::Error> {
        if self.format == FORMAT && self.anchor.is_none() {
            bincode::serialize(&MetaV1 {
                format: FORMAT,
                trim_version: self.trim_version,
                known_version: self.known_version,
                truncate_to: self.truncate_to,
            })
        } else {
            bincode::serialize(&Meta {
                format: FORMAT_SIGNED,
                ..self.clone()
            })
        }
    }

    /// Decodes a record of either format; `Ok(None)` for an unknown format
    /// number.
    pub fn decode(bytes: &[u8]) -> Result<Option<Meta>, bincode::Error> {
        let format: u32 = bincode::deserialize(bytes)?;
        match format {
            FORMAT => {
                let v1: MetaV1 = bincode::deserialize(bytes)?;
                Ok(Some(Meta {
                    format: FORMAT,
                    trim_version: v1.trim_version,
                    known_version: v1.known_version,
                    truncate_to: v1.truncate_to,
                    anchor: None,
                }))
            }
            FORMAT_SIGNED => bincode::deserialize(bytes).map(Some),
            _ => Ok(None),
        }
    }
}

impl Default for Meta {
    fn default() -> Meta {
        Meta {
            format: FORMAT,
            trim_version: INVALID,
            known_version: INVALID,
            truncate_to: None,
            anchor: None,
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
    /// Whether a signature follows the payload.
    pub signed: bool,
}

impl EntryHeader {
    /// Bytes of the whole record: header, payload and signature.
    pub fn record_len(&self) -> u64 {
        record_len(self.payload_len, self.signed)
    }
}

/// Bytes of a record with a payload of `payload_len` bytes.
pub(crate) fn record_len(payload_len: u32, signed: bool) -> u64 {
    let sig = if signed { SIGNATURE_LEN as u64 } else { 0 };
    HEADER_LEN as u64 + u64::from(payload_len) + sig
}

/// Encodes one entry (header, payload and signature, if any). The caller has
/// checked that the payload length fits in a `u32`.
pub(crate) fn encode(
    version: Version,
    hlc: Hlc,
    kind: u8,
    payload: &[u8],
    signature: Option<&Signature>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + SIGNATURE_LEN);
    encode_into(&mut out, version, hlc, kind, payload, signature);
    out
}

/// Appends the encoding of an entry to `out` (see [`encode`]).
pub(crate) fn encode_into(
    out: &mut Vec<u8>,
    version: Version,
    hlc: Hlc,
    kind: u8,
    payload: &[u8],
    signature: Option<&Signature>,
) {
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&hlc.rtc_us.to_le_bytes());
    out.extend_from_slice(&hlc.logic.to_le_bytes());
    out.push(kind);
    out.push(if signature.is_some() { FLAG_SIGNED } else { 0 });
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(payload);
    if let Some(sig) = signature {
        out.extend_from_slice(sig.as_bytes());
    }
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
    if bytes[33] & !FLAG_SIGNED != 0 || bytes[34..36] != [0, 0] {
        return Err("reserved header bytes are not zero");
    }
    Ok(EntryHeader {
        version: le_u64(&bytes[8..]) as i64,
        hlc: Hlc::new(le_u64(&bytes[16..]), le_u64(&bytes[24..])),
        kind: bytes[32],
        payload_len: le_u32(bytes),
        signed: bytes[33] & FLAG_SIGNED != 0,
    })
}

/// Decodes and verifies the entry at the start of `bytes`.
pub(crate) fn decode(bytes: &[u8]) -> Result<EntryHeader, &'static str> {
    let header = decode_header(bytes)?;
    let total = usize::try_from(header.record_len()).map_err(|_| "incomplete payload")?;
    if bytes.len() < total {
        return Err("incomplete payload");
    }
    if crc32fast::hash(&bytes[8..total]) != le_u32(&bytes[4..]) {
        return Err("checksum mismatch");
    }
    Ok(header)
}

/// The payload and signature of a record that [`decode`] accepted as `header`.
pub(crate) fn body<'a>(bytes: &'a [u8], header: &EntryHeader) -> (&'a [u8], Option<Signature>) {
    let end = HEADER_LEN + header.payload_len as usize;
    let payload = &bytes[HEADER_LEN..end];
    let signature = if header.signed {
        bytes
            .get(end..end + SIGNATURE_LEN)
            .and_then(Signature::from_bytes)
    } else {
        None
    };
    (payload, signature)
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
                // `decode` checked that the record lies within `bytes`.
                pos += header.record_len() as usize;
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
        let bytes = encode(42, Hlc::new(7, 8), 3, b"payload", None);
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
        let mut seg = encode(1, Hlc::ZERO, 0, b"a", None);
        seg.extend(encode(2, Hlc::ZERO, 0, b"bb", None));
        let good = seg.len() as u64;
        seg.extend(&encode(3, Hlc::ZERO, 0, b"ccc", None)[..20]);
        let (entries, bad) = scan(&seg);
        assert_eq!(entries.len(), 2);
        assert_eq!(bad.unwrap().offset, good);
    }

    #[test]
    fn signed_entries_carry_their_signature_under_the_checksum() {
        let sig = Signature::from_bytes(&[9u8; SIGNATURE_LEN]).unwrap();
        let bytes = encode(5, Hlc::new(1, 2), 4, b"xyz", Some(&sig));
        assert_eq!(bytes.len(), HEADER_LEN + 3 + SIGNATURE_LEN);
        let h = decode(&bytes).unwrap();
        assert!(h.signed);
        assert_eq!(h.record_len(), bytes.len() as u64);
        let (payload, got) = body(&bytes, &h);
        assert_eq!((payload, got), (&b"xyz"[..], Some(sig)));
        // A torn signature is a torn entry; a flipped signature byte fails the checksum.
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(decode(&bad).is_err());
        // Unknown flag bits are refused.
        let mut bad = bytes;
        bad[33] |= 2;
        assert!(decode_header(&bad).is_err());
    }

    #[test]
    fn meta_keeps_format_1_until_signed() {
        let plain = Meta {
            trim_version: 3,
            known_version: 9,
            ..Meta::default()
        };
        let bytes = plain.encode().unwrap();
        let old: MetaV1 = bincode::deserialize(&bytes).unwrap();
        assert_eq!((old.format, old.trim_version), (FORMAT, 3));
        assert_eq!(Meta::decode(&bytes).unwrap(), Some(plain.clone()));
        let sig = Signature::from_bytes(&[7u8; SIGNATURE_LEN]).unwrap();
        let signed = Meta {
            format: FORMAT_SIGNED,
            anchor: Some(Anchor::new(2, &sig)),
            ..plain
        };
        let back = Meta::decode(&signed.encode().unwrap()).unwrap().unwrap();
        assert_eq!(back, signed);
        assert_eq!(back.anchor.unwrap().signature(), Some(sig));
        let unknown = bincode::serialize(&7u32).unwrap();
        assert_eq!(Meta::decode(&unknown).unwrap(), None);
    }
}
