//! The byte format of the tcp backend.
//!
//! A connection starts with a 32-byte hello from the dialing node and a 32-byte answer from the
//! accepting one. After that, both directions carry frames that begin with a fixed 32-byte
//! header (little endian):
//!
//! ```text
//! byte 0      kind (WRITE, ACK, QUERY, ANSWER, GOODBYE)
//! byte 1      flags (WRITE: bit 0 signaled, bit 1 carries an immediate; ANSWER: bit 0 found)
//! bytes 2..4  reserved, zero
//! bytes 4..8  u32: immediate value (WRITE) or query id (QUERY, ANSWER)
//! bytes 8..16 u64: region key (WRITE, ANSWER) or region id (QUERY)
//! bytes 16..24 u64: offset (WRITE), applied-write count (ACK), region id (ANSWER)
//! bytes 24..32 u64: payload length (WRITE) or region length (ANSWER)
//! ```
//!
//! Only WRITE frames are followed by payload bytes. Writes are counted on both sides in order,
//! so an ACK carrying count `n` says "your first `n` writes are applied".

use crate::side_channel::frame::{self, DecodeError};

/// First bytes of every hello and answer.
pub(crate) const MAGIC: [u8; 4] = *b"DRFB";
/// Wire version; peers with another version are refused.
pub(crate) const VERSION: u16 = 1;
/// Size of the hello, the answer and every frame header.
pub(crate) const HEADER_LEN: usize = 32;

/// Frame kinds.
pub(crate) mod kind {
    pub(crate) const WRITE: u8 = 1;
    pub(crate) const ACK: u8 = 2;
    pub(crate) const QUERY: u8 = 3;
    pub(crate) const ANSWER: u8 = 4;
    pub(crate) const GOODBYE: u8 = 5;
}

/// WRITE flag: the sender wants an ACK once applied.
pub(crate) const FLAG_SIGNALED: u8 = 1;
/// WRITE flag: the immediate field is meaningful.
pub(crate) const FLAG_IMM: u8 = 2;
/// ANSWER flag: the region exists.
pub(crate) const FLAG_FOUND: u8 = 1;

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: u8,
    pub flags: u8,
    pub word: u32,
    pub a: u64,
    pub b: u64,
    pub c: u64,
}

impl Header {
    /// The frame header in the side channel's common layout, its length field (reserved here)
    /// zero.
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut h = frame::Header::new(self.kind, self.word, [self.a, self.b, self.c]);
        h.flags = self.flags;
        h.write(&mut out);
        out
    }

    pub(crate) fn decode(buf: &[u8; HEADER_LEN]) -> Result<Self, DecodeError> {
        let f = frame::Header::<3>::read(buf);
        let h = Header {
            kind: f.kind,
            flags: f.flags,
            word: f.word,
            a: f.f[0],
            b: f.f[1],
            c: f.f[2],
        };
        if f.len != 0 {
            return Err(DecodeError::Reserved {
                bytes: [buf[2], buf[3]],
            });
        }
        if !(kind::WRITE..=kind::GOODBYE).contains(&h.kind) {
            return Err(DecodeError::UnknownKind { kind: h.kind });
        }
        Ok(h)
    }
}

/// The dialing node's hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    pub version: u16,
    pub from: u32,
    pub to: u32,
    pub incarnation: u64,
}

/// The accepting node's answer to a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub version: u16,
    pub status: Status,
    pub node: u32,
    pub incarnation: u64,
}

/// Outcome of a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Accepted,
    WrongNode,
    VersionMismatch,
    Duplicate,
    Busy,
    Unknown(u16),
}

impl Status {
    fn code(self) -> u16 {
        match self {
            Status::Accepted => 0,
            Status::WrongNode => 1,
            Status::VersionMismatch => 2,
            Status::Duplicate => 3,
            Status::Busy => 4,
            Status::Unknown(c) => c,
        }
    }

    fn from_code(c: u16) -> Self {
        match c {
            0 => Status::Accepted,
            1 => Status::WrongNode,
            2 => Status::VersionMismatch,
            3 => Status::Duplicate,
            4 => Status::Busy,
            c => Status::Unknown(c),
        }
    }
}

impl Hello {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.version.to_le_bytes());
        out[8..12].copy_from_slice(&self.from.to_le_bytes());
        out[12..16].copy_from_slice(&self.to.to_le_bytes());
        out[16..24].copy_from_slice(&self.incarnation.to_le_bytes());
        out
    }

    pub(crate) fn decode(buf: &[u8; HEADER_LEN]) -> Result<Self, DecodeError> {
        check_magic(buf)?;
        Ok(Hello {
            version: u16::from_le_bytes([buf[4], buf[5]]),
            from: u32_at(buf, 8),
            to: u32_at(buf, 12),
            incarnation: u64_at(buf, 16),
        })
    }
}

impl Answer {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.version.to_le_bytes());
        out[6..8].copy_from_slice(&self.status.code().to_le_bytes());
        out[8..12].copy_from_slice(&self.node.to_le_bytes());
        out[16..24].copy_from_slice(&self.incarnation.to_le_bytes());
        out
    }

    pub(crate) fn decode(buf: &[u8; HEADER_LEN]) -> Result<Self, DecodeError> {
        check_magic(buf)?;
        Ok(Answer {
            version: u16::from_le_bytes([buf[4], buf[5]]),
            status: Status::from_code(u16::from_le_bytes([buf[6], buf[7]])),
            node: u32_at(buf, 8),
            incarnation: u64_at(buf, 16),
        })
    }
}

fn check_magic(buf: &[u8; HEADER_LEN]) -> Result<(), DecodeError> {
    if buf[0..4] != MAGIC {
        return Err(DecodeError::BadMagic {
            first: [buf[0], buf[1], buf[2], buf[3]],
        });
    }
    Ok(())
}

fn u32_at(buf: &[u8; HEADER_LEN], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(buf: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Headers, hellos and answers come from any process that can reach the port: mutated
    /// ones give an error or a value, never a panic.
    #[test]
    fn mutated_headers_never_panic() {
        let corpus = crate::fuzz_targets::tcp_corpus();
        crate::fuzz::run("tcp headers", 6, &corpus, 100_000, |b| {
            crate::fuzz_targets::tcp_headers(b)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn header_round_trip() {
        let h = Header {
            kind: kind::WRITE,
            flags: FLAG_IMM | FLAG_SIGNALED,
            word: 7,
            a: u64::MAX,
            b: 12,
            c: 1 << 40,
        };
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn garbage_headers_are_rejected() {
        let mut buf = [0u8; HEADER_LEN];
        assert!(Header::decode(&buf).is_err(), "kind 0");
        buf[0] = 99;
        assert!(Header::decode(&buf).is_err(), "unknown kind");
        buf[0] = kind::ACK;
        buf[2] = 1;
        assert!(Header::decode(&buf).is_err(), "reserved bytes");
        assert!(Hello::decode(&[0x47; HEADER_LEN]).is_err(), "bad magic");
    }

    #[test]
    fn hello_and_answer_round_trip() {
        let h = Hello {
            version: VERSION,
            from: 3,
            to: 1,
            incarnation: 99,
        };
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        let a = Answer {
            version: VERSION,
            status: Status::WrongNode,
            node: 4,
            incarnation: 5,
        };
        assert_eq!(Answer::decode(&a.encode()).unwrap(), a);
    }
}
