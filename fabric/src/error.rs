//! Errors of the fabric API.

use std::time::Duration;

use crate::region::RegionId;
use crate::NodeId;

/// What can go wrong when using a fabric.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FabricError {
    /// A byte range does not fit inside a region.
    #[error("range of {len} bytes at offset {offset} is outside {region} ({region_len} bytes)")]
    OutOfBounds {
        /// The region addressed.
        region: RegionId,
        /// Start of the requested range.
        offset: usize,
        /// Length of the requested range.
        len: usize,
        /// Length of the region.
        region_len: usize,
    },
    /// A region could not be created (allocation failure, mapping failure).
    #[error("cannot register region: {0}")]
    InvalidRegion(String),
    /// A region larger than [`MAX_REGION_LEN`](crate::region::MAX_REGION_LEN) was asked for.
    #[error("cannot register region: {len} bytes exceeds the {limit}-byte limit")]
    RegionTooLarge {
        /// The length asked for.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A region with this id is already registered on this node.
    #[error("{0} is already registered on this node")]
    DuplicateRegion(RegionId),
    /// The peer has no region with this id (checked until the timeout).
    #[error("node {peer} has no {region}")]
    NoSuchRegion {
        /// The peer asked.
        peer: NodeId,
        /// The region looked for.
        region: RegionId,
    },
    /// The link to a peer has failed (connection lost, peer crashed, protocol violation, or a
    /// failure reported locally); it will not carry writes again.
    #[error("link to node {peer} failed: {reason}")]
    LinkFailed {
        /// The peer.
        peer: NodeId,
        /// Why the link failed.
        reason: String,
    },
    /// An operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long was waited.
        after: Duration,
    },
    /// Connection set-up with a peer failed or was refused.
    #[error("cannot connect to node {peer}: {reason}")]
    Connect {
        /// The peer.
        peer: NodeId,
        /// The reason, including what the other side said when it refused.
        reason: String,
    },
    /// The write was addressed with a region of another link or node, or a node tried to
    /// link to itself.
    #[error("{0}")]
    Misaddressed(Misaddress),
    /// The fabric has been shut down.
    #[error("the fabric is shut down")]
    Shutdown,
    /// An operating-system error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// How a link or a write was misaddressed (see [`FabricError::Misaddressed`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Misaddress {
    /// A node asked for a link to itself.
    #[error("a node cannot link to itself")]
    SelfLink,
    /// The destination region belongs to another node than the link's peer.
    #[error("{region} belongs to node {owner}, not to the link's peer {peer}")]
    WrongOwner {
        /// The destination region.
        region: RegionId,
        /// The node that owns it.
        owner: NodeId,
        /// The link's peer.
        peer: NodeId,
    },
    /// The destination region was not looked up on this link.
    #[error("{region} (key {key:#x}) was not looked up on the link to node {peer}")]
    NotLookedUp {
        /// The destination region.
        region: RegionId,
        /// Its key.
        key: u64,
        /// The link's peer.
        peer: NodeId,
    },
    /// The source region is not registered with the fabric that posts the write.
    #[error("source {region} is not registered with this {backend} fabric")]
    Unregistered {
        /// The source region.
        region: RegionId,
        /// The backend's name.
        backend: &'static str,
    },
}

impl FabricError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        FabricError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether this error means the peer is gone for good (as opposed to a usage error).
    pub fn is_link_failure(&self) -> bool {
        matches!(self, FabricError::LinkFailed { .. })
    }
}
