//! The header every side-channel message starts with, in every backend's format (little
//! endian):
//!
//! ```text
//! byte 0         kind
//! byte 1         flags
//! bytes 2..4     u16: length of the body that follows the header
//! bytes 4..8     u32: a word (a magic number or a query id, say)
//! bytes 8..8+8N  N u64 fields
//! ```
//!
//! What the kinds, flags, word, fields and body mean is each backend's (see their `wire`
//! modules); this module only moves the bytes.

use std::io::Read;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::{HandshakeError, Welcome};
use crate::secure::Stream;
use crate::NodeId;

/// Longest header this module reads (seven fields).
const MAX_LEN: usize = 64;

/// Why bytes from a peer are not the hello, answer or frame header expected (the tcp wire
/// format and every side-channel dialect share it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// A hello or answer does not start with the fabric's magic bytes.
    #[error("not a derecho-rs fabric peer (first bytes {first:02x?})")]
    BadMagic {
        /// The first four bytes received.
        first: [u8; 4],
    },
    /// The reserved bytes of a frame header are not zero.
    #[error("reserved header bytes are {:#x} {:#x}", .bytes[0], .bytes[1])]
    Reserved {
        /// The reserved bytes.
        bytes: [u8; 2],
    },
    /// A frame header of an unknown kind.
    #[error("unknown frame kind {kind}")]
    UnknownKind {
        /// The kind received.
        kind: u8,
    },
    /// A valid message, but not of the kind and magic expected here (a hello, say).
    #[error("not a message of kind {kind} of this side channel")]
    Unexpected {
        /// The kind expected.
        kind: u8,
    },
}

/// A decoded header with `N` u64 fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header<const N: usize> {
    pub kind: u8,
    pub flags: u8,
    /// Length of the body.
    pub len: u16,
    pub word: u32,
    pub f: [u64; N],
}

impl<const N: usize> Header<N> {
    /// Bytes of the header.
    pub(crate) const LEN: usize = 8 + 8 * N;

    /// A header without flags or body.
    pub(crate) fn new(kind: u8, word: u32, f: [u64; N]) -> Self {
        Self {
            kind,
            flags: 0,
            len: 0,
            word,
            f,
        }
    }

    /// Writes the header into the first [`Self::LEN`] bytes of `out`.
    ///
    /// # Panics
    /// If `out` is shorter.
    pub(crate) fn write(&self, out: &mut [u8]) {
        out[0] = self.kind;
        out[1] = self.flags;
        out[2..4].copy_from_slice(&self.len.to_le_bytes());
        out[4..8].copy_from_slice(&self.word.to_le_bytes());
        for (i, v) in self.f.iter().enumerate() {
            out[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Reads a header from the first [`Self::LEN`] bytes of `h`.
    ///
    /// # Panics
    /// If `h` is shorter.
    pub(crate) fn read(h: &[u8]) -> Self {
        let mut f = [0u64; N];
        for (i, v) in f.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[8 + 8 * i..16 + 8 * i]);
            *v = u64::from_le_bytes(b);
        }
        Self {
            kind: h[0],
            flags: h[1],
            len: u16::from_le_bytes([h[2], h[3]]),
            word: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
            f,
        }
    }
}

/// Encodes a message: the header (its length field set to the body's) and the body, cut to
/// `max_body` bytes.
pub(crate) fn encode<const N: usize>(header: Header<N>, body: &[u8], max_body: usize) -> Vec<u8> {
    let body = &body[..body.len().min(max_body).min(usize::from(u16::MAX))];
    let mut out = vec![0u8; Header::<N>::LEN + body.len()];
    Header {
        len: body.len() as u16,
        ..header
    }
    .write(&mut out);
    out[Header::<N>::LEN..].copy_from_slice(body);
    out
}

/// Reads one message: its header and body. A kind outside `kinds` or a body longer than
/// `max_body` is an `InvalidData` error.
pub(crate) fn read<const N: usize>(
    r: &mut impl Read,
    kinds: RangeInclusive<u8>,
    max_body: usize,
) -> std::io::Result<(Header<N>, Vec<u8>)> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut buf = [0u8; MAX_LEN];
    let buf = buf
        .get_mut(..Header::<N>::LEN)
        .ok_or_else(|| bad(format!("a header of {N} fields")))?;
    r.read_exact(buf)?;
    let h = Header::<N>::read(buf);
    if !kinds.contains(&h.kind) {
        return Err(bad(format!("unknown message kind {}", h.kind)));
    }
    let len = usize::from(h.len);
    if len > max_body {
        return Err(bad(format!("a body of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((h, body))
}

/// Status of a WELCOME (the answer to a hello) that every dialect shares: accepted.
pub(crate) const ACCEPTED: u8 = 0;
/// WELCOME status: the hello named another node, or claimed the answering node's id.
pub(crate) const WRONG_NODE: u8 = 1;
/// WELCOME status: another protocol version.
pub(crate) const WRONG_VERSION: u8 = 2;
/// Flag of an ANSWER to a region lookup: the region exists.
pub(crate) const FOUND: u8 = 1;

/// One message of a side-channel dialect whose headers carry `N` fields, whose bodies are at
/// most `MAX` bytes, and whose kinds are `1..=LAST`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Message<const N: usize, const MAX: usize, const LAST: u8> {
    pub kind: u8,
    pub flags: u8,
    pub word: u32,
    pub f: [u64; N],
    pub body: Vec<u8>,
}

impl<const N: usize, const MAX: usize, const LAST: u8> Message<N, MAX, LAST> {
    /// A message without flags or body.
    pub(crate) fn new(kind: u8, word: u32, f: [u64; N]) -> Self {
        Self {
            kind,
            flags: 0,
            word,
            f,
            body: Vec::new(),
        }
    }

    /// Sets the flags.
    pub(crate) fn with_flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    /// Sets the body (cut to `MAX` bytes).
    pub(crate) fn with_body(mut self, body: &[u8]) -> Self {
        self.body = body[..body.len().min(MAX)].to_vec();
        self
    }

    /// The message's bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut h = Header::new(self.kind, self.word, self.f);
        h.flags = self.flags;
        encode(h, &self.body, MAX)
    }

    /// Writes the message.
    pub(crate) fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        w.write_all(&self.encode())
    }

    /// Reads one message; a malformed one is an `InvalidData` error.
    pub(crate) fn read_from(r: &mut impl Read) -> std::io::Result<Self> {
        let (h, body) = read::<N>(r, 1..=LAST, MAX)?;
        Ok(Self {
            kind: h.kind,
            flags: h.flags,
            word: h.word,
            f: h.f,
            body,
        })
    }

    /// Reads one message that must be of `kind` with `magic` as its word (a hello, say):
    /// `Ok(Err(_))` for any other.
    pub(crate) fn read_expecting(
        r: &mut impl Read,
        kind: u8,
        magic: u32,
    ) -> std::io::Result<Result<Self, DecodeError>> {
        let m = Self::read_from(r)?;
        Ok(if m.kind == kind && m.word == magic {
            Ok(m)
        } else {
            Err(DecodeError::Unexpected { kind })
        })
    }

    /// Receives a hello (of kind `hello` with `magic` as its word) on an incoming `stream`,
    /// as [`super::receive_hello`] does.
    pub(crate) fn receive_hello(
        stream: &mut Stream,
        timeout: Duration,
        hello: u8,
        magic: u32,
    ) -> Option<(Self, String)> {
        super::receive_hello(stream, timeout, |s| Self::read_expecting(s, hello, magic))
    }

    /// The (sender, addressee) node ids of a hello, packed as `from | to << 32` in field 0.
    pub(crate) fn hello_nodes(&self) -> (NodeId, NodeId) {
        let f0 = self.f.first().copied().unwrap_or(0);
        (f0 as u32, (f0 >> 32) as u32)
    }

    /// Sends this hello to `addr` over `stream`, both directions bounded by `timeout`, and
    /// reads the answer, which must be of kind `welcome` with `magic` as its word: the answer,
    /// or why there is none.
    pub(crate) fn exchange(
        &self,
        stream: &mut Stream,
        timeout: Duration,
        welcome: u8,
        magic: u32,
        addr: SocketAddr,
    ) -> Result<Self, HandshakeError> {
        super::bound_handshake(stream, timeout)
            .and_then(|()| self.write_to(stream))
            .map_err(|source| HandshakeError::Send { addr, source })?;
        match Self::read_expecting(stream, welcome, magic) {
            Ok(Ok(w)) => Ok(w),
            Ok(Err(_)) => Err(HandshakeError::Foreign { addr }),
            Err(source) => Err(HandshakeError::NoWelcome { addr, source }),
        }
    }

    /// How a welcome answers, as far as every dialect reads it alike (its status in the flags,
    /// the answering node in field 0).
    pub(crate) fn verdict(&self) -> Welcome {
        let node = self.f.first().copied().unwrap_or(0);
        match self.flags {
            ACCEPTED => Welcome::Accepted { node },
            WRONG_NODE => Welcome::WrongNode { node },
            _ => Welcome::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_message_round_trips() {
        let mut h = Header::new(4, 7, [1, 2, 3]);
        h.flags = 1;
        let bytes = encode(h, b"name", 255);
        assert_eq!(bytes.len(), 32 + 4);
        let (back, body) = read::<3>(&mut bytes.as_slice(), 1..=5, 255).unwrap();
        assert_eq!(back, Header { len: 4, ..h });
        assert_eq!(body, b"name");
    }

    #[test]
    fn messages_keep_their_dialect() {
        type Msg = Message<2, 8, 3>;
        let m = Msg::new(2, 5, [6, 7])
            .with_flags(FOUND)
            .with_body(b"0123456789");
        assert_eq!(m.body, b"01234567", "cut to the dialect's longest body");
        let back = Msg::read_from(&mut m.encode().as_slice()).unwrap();
        assert_eq!(back, m);
        let other = Msg::new(4, 0, [0, 0]).encode();
        assert!(
            Msg::read_from(&mut other.as_slice()).is_err(),
            "kind 4 of 1..=3"
        );
    }

    /// Side-channel frames come from any peer that can reach the port: mutated frames of
    /// every shape give an error or a message, never a panic.
    #[test]
    fn mutated_frames_never_panic() {
        type Msg = Message<3, 64, 6>;
        let corpus: Vec<Vec<u8>> = (1..=6)
            .map(|k| {
                Msg::new(k, 0xdead, [1, u64::MAX, 3])
                    .with_flags(k)
                    .with_body(&[k; 40][..usize::from(k) * 6])
                    .encode()
            })
            .collect();
        crate::fuzz::run(
            "side-channel frames",
            5,
            &corpus,
            100_000,
            crate::fuzz_targets::side_channel_frames,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn unknown_kinds_and_long_bodies_are_refused() {
        let bytes = encode(Header::new(9, 0, [0; 4]), &[], 16);
        assert!(read::<4>(&mut bytes.as_slice(), 1..=7, 16).is_err());
        let bytes = encode(Header::new(1, 0, [0; 4]), &[0; 20], 20);
        assert!(read::<4>(&mut bytes.as_slice(), 1..=7, 16).is_err());
    }
}
