//! The side-channel format of the RDMA-style backends (libfabric, verbs).
//!
//! One TCP connection per pair of nodes carries the handshake (node ids, version, and the
//! transport's connection data: a libfabric endpoint name, or a verbs queue pair's number, LID
//! and GID), region lookups (remote key, address, length, notification handle), region
//! revocations and a goodbye. Data never travels on it. Every message is a 40-byte header
//! (little endian) followed by `payload_len` opaque bytes:
//!
//! ```text
//! byte 0       kind (HELLO, WELCOME, QUERY, ANSWER, REVOKE, REVOKED, GOODBYE)
//! byte 1       flags (WELCOME: status; ANSWER: bit 0 found)
//! bytes 2..4   u16 payload_len (at most MAX_PAYLOAD)
//! bytes 4..8   u32: MAGIC (HELLO, WELCOME) or query id (QUERY, ANSWER)
//! bytes 8..40  four u64 fields, by kind:
//!   HELLO    from | to << 32, incarnation, version, -
//!   WELCOME  node, incarnation, version, -
//!   QUERY    region id, -, -, -
//!   ANSWER   region id, remote key, address, length
//!   REVOKE / REVOKED   local key of the region, -, -, -
//! ```
//!
//! ANSWER's payload is 8 bytes: the region's notification handle (u32) and 4 reserved bytes.

use crate::side_channel::frame::Message;

/// Identifies the side channel ("DRRD").
pub(crate) const MAGIC: u32 = 0x4452_5244;
/// Protocol version; peers with another version are refused.
pub(crate) const VERSION: u64 = 1;
/// Longest payload a message may carry.
pub(crate) const MAX_PAYLOAD: usize = 1024;

/// Message kinds.
pub(crate) mod kind {
    pub(crate) const HELLO: u8 = 1;
    pub(crate) const WELCOME: u8 = 2;
    pub(crate) const QUERY: u8 = 3;
    pub(crate) const ANSWER: u8 = 4;
    pub(crate) const REVOKE: u8 = 5;
    pub(crate) const REVOKED: u8 = 6;
    pub(crate) const GOODBYE: u8 = 7;
}

pub(crate) use crate::side_channel::frame::{ACCEPTED, FOUND, WRONG_NODE, WRONG_VERSION};
/// WELCOME status: the transport could not prepare an endpoint.
pub(crate) const TRANSPORT: u8 = 3;

/// One side-channel message (its body is the payload of the layout above).
pub(crate) type Msg = Message<4, MAX_PAYLOAD, { kind::GOODBYE }>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip() {
        let m = Msg::new(kind::ANSWER, 7, [1, 2, 3, 4])
            .with_flags(FOUND)
            .with_body(&[9, 8, 7]);
        let bytes = m.encode();
        assert_eq!(Msg::read_from(&mut bytes.as_slice()).unwrap(), m);
    }

    #[test]
    fn garbage_is_refused() {
        let mut bytes = Msg::new(kind::QUERY, 1, [0; 4]).encode();
        bytes[0] = 0;
        assert!(Msg::read_from(&mut bytes.as_slice()).is_err());
        let mut bytes = Msg::new(kind::QUERY, 1, [0; 4]).encode();
        bytes[3] = 0xff;
        assert!(Msg::read_from(&mut bytes.as_slice()).is_err());
    }
}
