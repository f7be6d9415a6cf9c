//! The side-channel format of the shm backend.
//!
//! The side channel (one TCP connection per pair of nodes) carries only control traffic: the
//! handshake, region lookups and a goodbye. Data never travels on it. Every message is a 32-byte
//! header (little endian), followed by `name_len` bytes of a file name:
//!
//! ```text
//! byte 0       kind (HELLO, WELCOME, QUERY, ANSWER, GOODBYE)
//! byte 1       flags (WELCOME: status; ANSWER: bit 0 found)
//! bytes 2..4   u16 name_len (at most MAX_NAME)
//! bytes 4..8   u32: MAGIC (HELLO, WELCOME) or query id (QUERY, ANSWER)
//! bytes 8..16  u64: from | to << 32 (HELLO), node (WELCOME), region id (QUERY, ANSWER)
//! bytes 16..24 u64: incarnation (HELLO, WELCOME), region key (ANSWER)
//! bytes 24..32 u64: version << 32 | pid (HELLO, WELCOME), region length (ANSWER)
//! ```
//!
//! HELLO and WELCOME carry the name of the sender's inbox file for this link; ANSWER carries the
//! name of the region's file.

use crate::side_channel::frame::Message;

/// Identifies the shm side channel ("DRSH").
pub(crate) const MAGIC: u32 = 0x4853_5244;
/// Protocol version; peers with another version are refused.
pub(crate) const VERSION: u32 = 1;
/// Longest file name a message may carry.
pub(crate) const MAX_NAME: usize = 255;

/// Message kinds.
pub(crate) mod kind {
    pub(crate) const HELLO: u8 = 1;
    pub(crate) const WELCOME: u8 = 2;
    pub(crate) const QUERY: u8 = 3;
    pub(crate) const ANSWER: u8 = 4;
    pub(crate) const GOODBYE: u8 = 5;
}

pub(crate) use crate::side_channel::frame::{ACCEPTED, FOUND, WRONG_NODE, WRONG_VERSION};
/// WELCOME status: the sender's inbox cannot be mapped here (not on this host).
pub(crate) const NOT_LOCAL: u8 = 3;
/// WELCOME status: a live link to the same incarnation exists, or no room for another link.
pub(crate) const BUSY: u8 = 4;

/// One side-channel message: fields `a`, `b`, `c` of the layout above are `f[0..3]`, and the
/// body is the file name.
pub(crate) type Msg = Message<3, MAX_NAME, { kind::GOODBYE }>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip() {
        let m = Msg::new(kind::ANSWER, 7, [1, 2, 3])
            .with_flags(FOUND)
            .with_body(b"derecho-shm-1-2-3-r4");
        let bytes = m.encode();
        assert_eq!(Msg::read_from(&mut bytes.as_slice()).unwrap(), m);
    }

    #[test]
    fn garbage_is_refused() {
        let mut bytes = Msg::new(kind::QUERY, 1, [2, 3, 4]).encode();
        bytes[0] = 99;
        assert!(Msg::read_from(&mut bytes.as_slice()).is_err());
        let mut bytes = Msg::new(kind::QUERY, 1, [2, 3, 4]).encode();
        bytes[2] = 0xff;
        bytes[3] = 0xff;
        assert!(Msg::read_from(&mut bytes.as_slice()).is_err());
    }
}
