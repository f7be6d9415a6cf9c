//! Frames of the P2P port and of ordered RPC messages.
//!
//! **P2P frames.** A connection starts with [`HELLO`] (magic `DRP2` and the version); then each
//! frame is a little-endian `u32` length, a kind byte, a `u64` request id and the body. The
//! length is checked against the receiver's limit before the body is read, so an oversized or
//! garbage frame costs a header read and closes the connection.
//!
//! **Ordered RPC messages** (multicast payloads with header flag [`RPC_FLAG`]): a version byte,
//! the caller's request id (`u64`), the caller's node id (`u32`), then the serialized update.

use std::io::{self, Read, Write};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::RemoteError;
use crate::NodeId;

/// Header flag of a multicast message that carries an ordered RPC.
pub const RPC_FLAG: u64 = 1;
/// Version byte of ordered RPC messages (2 added the caller's timestamp).
pub const ORDERED_VERSION: u8 = 2;
/// Bytes before the update in an ordered RPC message: version, request id, caller, timestamp.
pub const ORDERED_HEADER: usize = 21;
/// First bytes of every P2P connection.
pub const HELLO: [u8; 8] = *b"DRP2\x02\0\0\0";
/// Bytes of a frame header after the length: kind and request id.
pub const FRAME_HEADER: usize = 9;
/// Extra room a frame needs over its payload limit (ids, status, subgroup).
pub const FRAME_SLACK: usize = 64;

/// What a P2P frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A query on a replica: `u32` subgroup, then the query.
    Query = 1,
    /// The answer to a request: a status byte, then the reply (0) or a bincode
    /// [`RemoteError`] (1).
    Reply = 2,
    /// One member's reply to an ordered RPC: `u32` replier, status byte, body. One-way.
    OrderedReply = 3,
    /// Send an update in the receiver's shard and return every member's reply: `u32`
    /// subgroup, then the update.
    Relay = 4,
    /// Ask for the current view and the group's type names.
    GetView = 5,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Query,
            2 => Kind::Reply,
            3 => Kind::OrderedReply,
            4 => Kind::Relay,
            5 => Kind::GetView,
            _ => return None,
        })
    }
}

/// One frame.
#[derive(Debug)]
pub struct Frame {
    /// Kind.
    pub kind: Kind,
    /// Request id (the caller's).
    pub id: u64,
    /// Body.
    pub body: Vec<u8>,
}

/// Writes `HELLO`.
pub fn write_hello(out: &mut impl Write) -> io::Result<()> {
    out.write_all(&HELLO)
}

/// Reads and checks `HELLO`.
pub fn read_hello(input: &mut impl Read) -> io::Result<()> {
    let mut h = [0u8; 8];
    input.read_exact(&mut h)?;
    if h != HELLO {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a P2P connection of this version (first bytes {h:02x?})"),
        ));
    }
    Ok(())
}

/// Writes one frame whose body is the concatenation of `parts`.
pub fn write_frame(out: &mut impl Write, kind: Kind, id: u64, parts: &[&[u8]]) -> io::Result<()> {
    let body: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(FRAME_HEADER + body)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame larger than 4 GiB"))?;
    let mut head = [0u8; 4 + FRAME_HEADER];
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4] = kind as u8;
    head[5..].copy_from_slice(&id.to_le_bytes());
    out.write_all(&head)?;
    for p in parts {
        out.write_all(p)?;
    }
    out.flush()
}

/// Reads one frame whose body is at most `limit` bytes.
pub fn read_frame(input: &mut impl Read, limit: usize) -> io::Result<Frame> {
    let mut head = [0u8; 4 + FRAME_HEADER];
    input.read_exact(&mut head)?;
    let mut l = [0u8; 4];
    l.copy_from_slice(&head[..4]);
    let len = u32::from_le_bytes(l) as usize;
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    if len < FRAME_HEADER {
        return Err(bad(format!(
            "frame length {len} is shorter than its header"
        )));
    }
    let body_len = len - FRAME_HEADER;
    if body_len > limit {
        return Err(bad(format!(
            "frame of {body_len} bytes exceeds the {limit}-byte limit"
        )));
    }
    let kind =
        Kind::from_byte(head[4]).ok_or_else(|| bad(format!("unknown frame kind {}", head[4])))?;
    let mut i = [0u8; 8];
    i.copy_from_slice(&head[5..]);
    let mut body = vec![0u8; body_len];
    input.read_exact(&mut body)?;
    Ok(Frame {
        kind,
        id: u64::from_le_bytes(i),
        body,
    })
}

/// A frame body that does not follow the P2P protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The body is shorter than its fixed fields.
    #[error("frame body too short")]
    TooShort,
    /// A reply's status byte is neither success nor error.
    #[error("reply without a valid status")]
    BadStatus,
    /// A frame of a kind the other side never sends.
    #[error("unexpected {0:?} frame")]
    Unexpected(Kind),
}

/// Splits a `u32` off the front of a body.
pub fn take_u32(body: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if body.len() < 4 {
        return Err(WireError::TooShort);
    }
    let mut b = [0u8; 4];
    b.copy_from_slice(&body[..4]);
    Ok((u32::from_le_bytes(b), &body[4..]))
}

/// A member's answer to a request: the reply's bytes, or why it refused.
pub type Answer = Result<Vec<u8>, RemoteError>;

/// Encodes an answer as a status byte and a body: 0 and the reply, or 1 and the
/// [`RemoteError`] (bincode).
pub fn status_parts(result: &Answer) -> ([u8; 1], std::borrow::Cow<'_, [u8]>) {
    match result {
        Ok(v) => ([0], std::borrow::Cow::Borrowed(v.as_slice())),
        // Encoding a plain enum of strings and integers into memory cannot fail; an empty
        // body would be refused by the caller as a protocol violation.
        Err(e) => (
            [1],
            std::borrow::Cow::Owned(bincode::serialize(e).unwrap_or_default()),
        ),
    }
}

/// Decodes a status byte and body.
pub fn parse_status(body: &[u8]) -> Result<Answer, WireError> {
    match body.split_first() {
        Some((0, rest)) => Ok(Ok(rest.to_vec())),
        Some((1, rest)) => bincode::deserialize(rest)
            .map(Err)
            .map_err(|_| WireError::BadStatus),
        _ => Err(WireError::BadStatus),
    }
}

/// What precedes the update in an ordered RPC message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ordered {
    /// The caller's request id.
    pub id: u64,
    /// The calling node.
    pub caller: NodeId,
    /// The caller's clock when it sent the update, in microseconds since the Unix epoch: every
    /// replica records this one timestamp with the update's version.
    pub stamp_us: u64,
}

/// The header of an ordered RPC message.
pub fn ordered_header(o: Ordered) -> [u8; ORDERED_HEADER] {
    let mut h = [0u8; ORDERED_HEADER];
    h[0] = ORDERED_VERSION;
    h[1..9].copy_from_slice(&o.id.to_le_bytes());
    h[9..13].copy_from_slice(&o.caller.to_le_bytes());
    h[13..].copy_from_slice(&o.stamp_us.to_le_bytes());
    h
}

/// Splits an ordered RPC message into its header and the update bytes.
pub fn parse_ordered(payload: &[u8]) -> Option<(Ordered, &[u8])> {
    if payload.len() < ORDERED_HEADER || payload[0] != ORDERED_VERSION {
        return None;
    }
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&payload[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let mut c = [0u8; 4];
    c.copy_from_slice(&payload[9..13]);
    Some((
        Ordered {
            id: word(1),
            caller: u32::from_le_bytes(c),
            stamp_us: word(13),
        },
        &payload[ORDERED_HEADER..],
    ))
}

/// Serializes a value (bincode).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Arc<bincode::Error>> {
    bincode::serialize(value).map_err(Arc::new)
}

/// Deserializes a value (bincode).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Arc<bincode::Error>> {
    bincode::deserialize(bytes).map_err(Arc::new)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Query, 42, &[b"ab", b"cd"]).unwrap();
        let f = read_frame(&mut buf.as_slice(), 4).unwrap();
        assert_eq!(
            (f.kind, f.id, f.body.as_slice()),
            (Kind::Query, 42, &b"abcd"[..])
        );
        let err = read_frame(&mut buf.as_slice(), 3).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
        let mut garbage: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
        assert!(read_frame(&mut garbage, 1 << 20).is_err());
        assert!(read_hello(&mut &b"GET / HTTP/1.1"[..]).is_err());
    }

    #[test]
    fn answers_round_trip_and_a_bad_refusal_is_a_protocol_error() {
        let refused: Answer = Err(RemoteError::NoReplica {
            node: 3,
            subgroup: 1,
        });
        for answer in [Ok(b"reply".to_vec()), refused] {
            let (status, body) = status_parts(&answer);
            let mut frame = status.to_vec();
            frame.extend_from_slice(&body);
            assert_eq!(parse_status(&frame).unwrap(), answer);
        }
        assert_eq!(parse_status(&[1, 0xff, 0xff]), Err(WireError::BadStatus));
        assert_eq!(parse_status(&[7]), Err(WireError::BadStatus));
        assert_eq!(parse_status(&[]), Err(WireError::BadStatus));
    }

    #[test]
    fn ordered_headers_round_trip() {
        let o = Ordered {
            id: 7,
            caller: 3,
            stamp_us: 1_765_000_000_000_000,
        };
        let mut m = ordered_header(o).to_vec();
        m.extend_from_slice(b"x");
        assert_eq!(parse_ordered(&m), Some((o, &b"x"[..])));
        assert_eq!(parse_ordered(b"short"), None);
    }
}
