//! Messages on the GMS port and how they are framed.
//!
//! Every message is `b"DRGM"`, a little-endian `u32` length, and that many bytes of JSON. The
//! length is bounded ([`MAX_FRAME`]), so garbage on the port — a wrong magic, an absurd length,
//! malformed JSON — is rejected with an error that names what was wrong, after reading at most
//! the header. Membership traffic is small and rare; readable frames are worth more here than
//! a few microseconds.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::view::{MemberInfo, View};
use crate::NodeId;

/// First bytes of every GMS frame.
pub const MAGIC: [u8; 4] = *b"DRGM";
/// Version of the GMS protocol; a joiner with another version is refused.
pub const PROTOCOL_VERSION: u32 = 2;
/// Largest accepted frame body (a view of a thousand members fits easily).
pub const MAX_FRAME: usize = 4 << 20;

/// Why a join was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// Another member already uses this node id.
    IdInUse,
    /// The joiner speaks another protocol version.
    VersionMismatch {
        /// The version this group speaks.
        expected: u32,
    },
    /// The group cannot take this join now (with the reason).
    NotNow(String),
}

/// A message on the GMS port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum GmsMessage {
    /// A node asks to join.
    Join {
        /// Its protocol version.
        version: u32,
        /// Its id, address and ports.
        member: MemberInfo,
    },
    /// Ask the leader instead.
    Redirect {
        /// The leader's id.
        leader: NodeId,
        /// The leader's GMS address.
        addr: SocketAddr,
        /// The GMS addresses of the view's members: where a joiner asks again if the leader
        /// fails before it admits the joiner.
        #[serde(default)]
        members: Vec<SocketAddr>,
    },
    /// The join is refused.
    Refused(Refusal),
    /// Phase one of installing a view: here it is.
    Prepare(View),
    /// The member has the view and is ready to install it.
    Ack {
        /// The view acknowledged.
        vid: u64,
    },
    /// Phase two: install it.
    Commit {
        /// The view to install.
        vid: u64,
    },
    /// Is a group running here? (Asked by a contact node at start, before it founds one.)
    Probe,
    /// The answer of a running member to [`GmsMessage::Probe`].
    Running {
        /// Its view id.
        vid: u64,
        /// Where its leader's GMS port is.
        leader: SocketAddr,
    },
    /// The answer of a node that leads a forming group to [`GmsMessage::Probe`]: join it there.
    Forming {
        /// Where its GMS port is.
        leader: SocketAddr,
    },
    /// Forget the prepared view; a new one follows (a joiner failed meanwhile).
    Abort {
        /// The abandoned view.
        vid: u64,
    },
    /// A node with logs asks to join: a running group treats it as [`GmsMessage::Join`]; a
    /// forming one uses `restart` to decide a total restart (see [`super::restart`]).
    Rejoin {
        /// Its protocol version.
        version: u32,
        /// Its id, address and ports.
        member: MemberInfo,
        /// Its last logged view and the versions on its disk.
        restart: Box<super::restart::RestartInfo>,
    },
}

impl GmsMessage {
    /// The version and member of a join request ([`GmsMessage::Join`] or
    /// [`GmsMessage::Rejoin`]), with the restart report of the latter.
    pub fn as_join(self) -> Option<(u32, MemberInfo, Option<super::restart::RestartInfo>)> {
        match self {
            GmsMessage::Join { version, member } => Some((version, member, None)),
            GmsMessage::Rejoin {
                version,
                member,
                restart,
            } => Some((version, member, Some(*restart))),
            _ => None,
        }
    }
}

/// Errors of GMS framing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The connection failed or closed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer is not speaking the GMS protocol.
    #[error("not a GMS frame (first bytes {0:02x?})")]
    BadMagic([u8; 4]),
    /// The frame is larger than allowed.
    #[error("GMS frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The body is not a valid message.
    #[error("malformed GMS message: {0}")]
    Malformed(#[source] serde_json::Error),
}

/// Writes one message.
pub fn write_msg(out: &mut impl Write, msg: &GmsMessage) -> Result<(), WireError> {
    let body = serde_json::to_vec(msg).map_err(WireError::Malformed)?;
    if body.len() > MAX_FRAME {
        return Err(WireError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(8 + body.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    out.write_all(&frame)?;
    out.flush()?;
    Ok(())
}

/// Reads one message.
pub fn read_msg(input: &mut impl Read) -> Result<GmsMessage, WireError> {
    let mut head = [0u8; 8];
    input.read_exact(&mut head)?;
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&head[..4]);
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(WireError::Malformed)
}

/// The GMS address of a member.
pub fn gms_addr(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_round_trip() {
        let msg = GmsMessage::Ack { vid: 3 };
        let mut buf = Vec::new();
        write_msg(&mut buf, &msg).unwrap();
        assert_eq!(read_msg(&mut &buf[..]).unwrap(), msg);
    }

    #[test]
    fn garbage_is_named() {
        assert!(matches!(
            read_msg(&mut &b"GET / HTTP/1.1\r\n"[..]),
            Err(WireError::BadMagic(_))
        ));
        let mut big = Vec::from(MAGIC);
        big.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_msg(&mut &big[..]),
            Err(WireError::TooLarge(_))
        ));
        let mut bad = Vec::from(MAGIC);
        bad.extend_from_slice(&3u32.to_le_bytes());
        bad.extend_from_slice(b"{x]");
        assert!(matches!(
            read_msg(&mut &bad[..]),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(read_msg(&mut &MAGIC[..]), Err(WireError::Io(_))));
    }
}
