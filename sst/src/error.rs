//! Errors of the SST API.

use derecho_fabric::{FabricError, NodeId};

/// What can go wrong when building or using a shared state table.
///
/// Failures of peers are not errors: they freeze the peer's row and go to the failure upcall
/// (see [`crate::Sst::on_failure`]). The variants here are set-up failures and usage errors.
#[derive(Debug, thiserror::Error)]
pub enum SstError {
    /// The schema cannot be laid out (a field is too large, or the row exceeds the size limit).
    #[error("invalid schema: {0}")]
    Schema(String),
    /// The member list is unusable (empty, a node listed twice, or too many members).
    #[error("invalid member list: {0}")]
    Members(String),
    /// A rank that is not a rank of this table.
    #[error("rank {rank} is not a member rank (the table has {members} rows)")]
    BadRank {
        /// The rank given.
        rank: usize,
        /// Number of rows.
        members: usize,
    },
    /// A node id that is not a member of this table.
    #[error("node {0} is not a member of this table")]
    UnknownNode(NodeId),
    /// A byte range that does not lie inside the row (or inside the named byte area).
    #[error("range of {len} bytes at row offset {offset} is outside the {limit}-byte area")]
    OutOfRange {
        /// Start of the range, relative to the row (or to the byte area).
        offset: usize,
        /// Its length.
        len: usize,
        /// Size of the row or byte area addressed.
        limit: usize,
    },
    /// The table is not connected yet ([`crate::Sst::connect`] has not completed).
    #[error("the table is not connected to its members yet")]
    NotConnected,
    /// Too many predicates are registered.
    #[error("too many predicates (limit {limit})")]
    TooManyPredicates {
        /// The configured bound.
        limit: usize,
    },
    /// Setting up the table with a peer failed (connect, or the peer's table never appeared).
    #[error("setting up the table with node {peer}: {source}")]
    Setup {
        /// The peer.
        peer: NodeId,
        /// What the fabric said.
        #[source]
        source: FabricError,
    },
    /// A fabric call failed for a reason other than a peer failure.
    #[error(transparent)]
    Fabric(#[from] FabricError),
    /// A configuration value is out of its allowed range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A thread could not be started.
    #[error("cannot start the {what} thread: {source}")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
