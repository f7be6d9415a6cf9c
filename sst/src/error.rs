//! Errors of the SST API.

use std::time::Duration;

use derecho_fabric::{FabricError, NodeId};

use crate::schema::{MAX_ROW_LEN, ROW_ALIGN};
use crate::table::MAX_MEMBERS;

/// What can go wrong when building or using a shared state table.
///
/// Failures of peers are not errors: they freeze the peer's row and go to the failure upcall
/// (see [`crate::Sst::on_failure`]). The variants here are set-up failures and usage errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SstError {
    /// The schema cannot be laid out (a field is too large, or the row exceeds the size limit).
    #[error("invalid schema: {0}")]
    Schema(SchemaError),
    /// The member list is unusable (empty, a node listed twice, or too many members).
    #[error("invalid member list: {0}")]
    Members(MembersError),
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
    Config(ConfigError),
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

/// Why a schema cannot be laid out (see [`SstError::Schema`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A field does not fit in the row: the row would exceed [`MAX_ROW_LEN`] bytes.
    #[error("field {name:?} of {len} bytes makes the row exceed {MAX_ROW_LEN} bytes")]
    FieldTooLarge {
        /// The field's name.
        name: String,
        /// The bytes it asked for.
        len: usize,
    },
    /// The fields fit, but the row padded to [`ROW_ALIGN`] bytes exceeds [`MAX_ROW_LEN`].
    #[error("row of {len} bytes exceeds {MAX_ROW_LEN} bytes once padded to {ROW_ALIGN}")]
    RowTooLarge {
        /// Bytes taken by the fields, before padding.
        len: usize,
    },
    /// A table of this many rows of this length does not fit in the address space.
    #[error("a table of {members} rows of {row_len} bytes overflows the address space")]
    TableTooLarge {
        /// Bytes per row.
        row_len: usize,
        /// Number of rows.
        members: usize,
    },
}

/// Why a member list is unusable (see [`SstError::Members`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembersError {
    /// No members, or more than [`MAX_MEMBERS`].
    #[error("{count} members (must be 1..={MAX_MEMBERS})")]
    Count {
        /// Number of members given.
        count: usize,
    },
    /// This node's rank names another node than the fabric's.
    #[error("rank {rank} is node {listed}, but this fabric is node {local}")]
    NotThisNode {
        /// This node's rank.
        rank: usize,
        /// The node listed at that rank.
        listed: NodeId,
        /// The fabric's node id.
        local: NodeId,
    },
    /// A node appears twice in the list.
    #[error("node {node} listed twice")]
    Duplicate {
        /// The node.
        node: NodeId,
    },
    /// A peer's table (or barrier area) has another size than this node's: it was built from a
    /// different schema or member list.
    #[error(
        "node {peer}'s table has {peer_len} bytes, this node's {local_len}: \
         different schema or members"
    )]
    TableMismatch {
        /// The peer.
        peer: NodeId,
        /// Size of the peer's table.
        peer_len: usize,
        /// Size of this node's table.
        local_len: usize,
    },
}

/// A configuration value out of its allowed range (see [`SstError::Config`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `heartbeat_ms` is zero or above an hour.
    #[error("heartbeat_ms must be in 1..=3600000, not {0:?}")]
    Heartbeat(Duration),
    /// `sst_poll_cq_timeout_ms` is zero or above an hour.
    #[error("sst_poll_cq_timeout_ms must be in 1..=3600000, not {0:?}")]
    CompletionTimeout(Duration),
    /// The bound on predicates is zero or above 2^20.
    #[error("max_predicates must be in 1..=1048576, not {0}")]
    MaxPredicates(usize),
    /// The core loop's spin window is above 10 s.
    #[error("core loop spin {0:?} exceeds 10 s")]
    Spin(Duration),
    /// The core loop's park timeout is below 1 ms or above 10 s.
    #[error("core loop park timeout {0:?} must be within 1 ms..=10 s")]
    ParkTimeout(Duration),
}
