//! Errors of the replicated-object API, one type per operation.
//!
//! Each operation returns the error type that lists what can go wrong there and nothing else:
//!
//! | operation | error |
//! |---|---|
//! | [`GroupBuilder::start`] | [`StartError`] |
//! | [`Group::subgroup`], [`GroupInfo::subgroup_id`] | [`LookupError`] |
//! | [`Subgroup::ordered_send`] | [`SendError`] |
//! | [`ReplyMap::wait`] | [`WaitError`], and a [`ReplyError`] per member |
//! | [`Subgroup::p2p_send`], [`Subgroup::ordered_send_via`], [`external::ExternalClient`] | [`CallError`] |
//! | persistence queries and waits | [`PersistenceError`] |
//! | [`Group::leave`] | [`GroupError`] |
//!
//! Every one converts into [`RpcError`], so code that mixes operations can use `?` into one
//! type. All of them are `Clone` (OS and group errors are shared behind an `Arc`), so one
//! failure can be handed to every caller waiting on it, and each says with `is_transient`
//! whether the same call may succeed if made again.

use super::*;

/// Shared, cloneable serialization error.
type Bincode = Arc<bincode::Error>;

/// A payload over its configured bound (checked before anything is sent).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} of {len} bytes exceeds {limit} = {max} bytes")]
#[non_exhaustive]
pub struct TooLarge {
    /// What was too large.
    pub what: &'static str,
    /// Its size.
    pub len: usize,
    /// The configuration key that bounds it.
    pub limit: &'static str,
    /// The bound.
    pub max: usize,
}

impl TooLarge {
    /// `what` of `len` bytes over the bound `max` set by the key `limit`.
    pub(crate) fn new(what: &'static str, len: usize, limit: &'static str, max: usize) -> Self {
        TooLarge {
            what,
            len,
            limit,
            max,
        }
    }
}

/// Why a member answered a request or an ordered update with an error. It travels back to
/// the caller on the P2P port (bincode after status byte 1), so its details are plain data
/// and its variants are wire format: new ones go at the end, and any change moves the P2P
/// hello's version ([`wire::HELLO`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The member holds no replica of the subgroup (it is not, or no longer, a member).
    #[error("node {node} holds no replica of subgroup {subgroup}")]
    NoReplica {
        /// The member.
        node: NodeId,
        /// Flat subgroup id.
        subgroup: usize,
    },
    /// The request or update did not decode as the type's `Query` or `Update`.
    #[error("malformed payload: {reason}")]
    Malformed {
        /// The decoder's message.
        reason: String,
    },
    /// The reply exceeds the shard's `max_reply_payload_size`.
    #[error("the reply of {len} bytes exceeds max_reply_payload_size = {max} bytes")]
    ReplyTooLarge {
        /// Its size.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The reply or the group's description could not be encoded.
    #[error("the answer could not be encoded: {reason}")]
    Encode {
        /// The encoder's message.
        reason: String,
    },
    /// The member is shutting down.
    #[error("the member is shutting down")]
    ShuttingDown,
    /// A member of the shard was removed before it replied to a relayed update.
    #[error("node {node} was removed from the group before it replied")]
    Removed {
        /// The member removed.
        node: NodeId,
    },
    /// The member could not relay the update into its shard (its send or wait failed).
    #[error("relaying the update failed: {reason}")]
    Relay {
        /// What failed there.
        reason: String,
        /// Whether that failure may pass (a view change, a full window), as the relaying
        /// member judged it.
        transient: bool,
    },
}

/// Errors of [`GroupBuilder::start`]: the group could not be joined or formed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The types registered with the builder do not match the layout's.
    #[error("the layout declares types {declared:?} but the group registers {registered:?}")]
    TypesMismatch {
        /// The layout's types, in order.
        declared: Vec<String>,
        /// The registered types, in order.
        registered: Vec<String>,
    },
    /// One Rust type was registered under two names.
    #[error("type `{name}` is registered twice; give each replicated type its own Rust type")]
    DuplicateType {
        /// The second name.
        name: String,
    },
    /// The layout policy does not fit the registered types or the configuration.
    #[error("layout: {0}")]
    Layout(#[from] LayoutError),
    /// The persistent logs could not be opened or read.
    #[error("persistence: {0}")]
    Persistence(#[source] Arc<derecho_persist::Error>),
    /// A setting read at start cannot be used (the signing key of `[PERS] signed_logs`).
    #[error("config: {0}")]
    Config(#[source] Arc<crate::config::ConfigError>),
    /// A port or a thread of this member could not be set up.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The member could not join or form the group.
    #[error("group: {0}")]
    Group(#[source] Arc<GroupError>),
}

impl StartError {
    /// An OS error while doing `context`.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        StartError::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// Whether starting again may succeed: a port still in use, or a group that could not be
    /// reached or formed in time. A configuration that does not fit never will.
    pub fn is_transient(&self) -> bool {
        match self {
            StartError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::AddrInUse
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::Interrupted
                    | io::ErrorKind::WouldBlock
            ),
            StartError::Group(e) => {
                group_is_transient(e)
                    || matches!(**e, GroupError::Gms(crate::gms::GmsError::Timeout(_)))
            }
            _ => false,
        }
    }
}

impl From<GroupError> for StartError {
    fn from(e: GroupError) -> Self {
        StartError::Group(Arc::new(e))
    }
}

impl From<derecho_persist::Error> for StartError {
    fn from(e: derecho_persist::Error) -> Self {
        StartError::Persistence(Arc::new(e))
    }
}

/// Errors of finding a subgroup by type and index ([`Group::subgroup`],
/// [`GroupInfo::subgroup_id`]). They depend only on the group's registered types, so they are
/// never transient.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// No type of this group is registered under the name or Rust type.
    #[error("the group has no replicated type {name}")]
    UnknownType {
        /// The name (or Rust type) asked for.
        name: String,
    },
    /// The type has fewer subgroups.
    #[error("type {type_name} has {count} subgroups; there is no subgroup {index}")]
    NoSuchSubgroup {
        /// The type.
        type_name: String,
        /// The index asked for.
        index: usize,
        /// How many there are.
        count: usize,
    },
}

/// Errors of sending an ordered update ([`Subgroup::ordered_send`]). When one is returned,
/// nothing was sent.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The update could not be serialized.
    #[error("cannot serialize the update: {0}")]
    Encode(#[source] Bincode),
    /// The update exceeds its shard's `max_payload_size`.
    #[error(transparent)]
    TooLarge(TooLarge),
    /// This node is not a member of the subgroup in the current view (non-members update a
    /// subgroup through [`Subgroup::ordered_send_via`]).
    #[error("node {node} is not a member of subgroup {subgroup} in the current view")]
    NotMember {
        /// This node.
        node: NodeId,
        /// Flat subgroup id.
        subgroup: usize,
    },
    /// Too many updates of this member wait for their replies.
    #[error("{max} ordered requests already wait for replies")]
    Busy {
        /// The bound ([`MAX_PENDING`]).
        max: usize,
    },
    /// The group layer refused the send (no view in time, an inadequate view, this member
    /// stopped).
    #[error("group: {0}")]
    Group(#[source] Arc<GroupError>),
    /// This member has shut down.
    #[error("this member has shut down")]
    ShutDown,
}

impl SendError {
    /// Whether sending again may succeed: the view was changing, or too many updates were
    /// in flight. A too-large update, a non-member or a stopped member never will.
    pub fn is_transient(&self) -> bool {
        match self {
            SendError::Busy { .. } => true,
            SendError::Group(e) => group_is_transient(e),
            _ => false,
        }
    }
}

impl From<GroupError> for SendError {
    fn from(e: GroupError) -> Self {
        SendError::Group(Arc::new(e))
    }
}

/// Errors of waiting for an ordered update's replies ([`ReplyMap::wait`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// Not every member replied within the bound.
    #[error("not every reply came within {0:?}")]
    Timeout(Duration),
    /// This member shut down while waiting.
    #[error("this member has shut down")]
    ShutDown,
}

impl WaitError {
    /// Whether the wait itself may be worth repeating with a longer bound (a timeout).
    pub fn is_transient(&self) -> bool {
        matches!(self, WaitError::Timeout(_))
    }
}

/// Why one member of a shard gave no usable reply to an ordered update (the entries of a
/// reply map).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// A view change removed the member before it replied.
    #[error("node {node} was removed from the group before it replied")]
    Removed {
        /// The member.
        node: NodeId,
    },
    /// The member answered with an error (it holds no replica, the update did not decode,
    /// or its reply exceeded `max_reply_payload_size`).
    #[error("node {node} answered with an error: {error}")]
    Remote {
        /// The member.
        node: NodeId,
        /// Its error.
        #[source]
        error: RemoteError,
    },
    /// The reply could not be deserialized as the type's `Reply`.
    #[error("the reply of node {node} is malformed: {source}")]
    Malformed {
        /// The member.
        node: NodeId,
        /// The decoding error.
        #[source]
        source: Bincode,
    },
}

impl ReplyError {
    /// The same failure as a relaying member reports it to its caller.
    pub(crate) fn into_remote(self) -> RemoteError {
        match self {
            ReplyError::Removed { node } => RemoteError::Removed { node },
            ReplyError::Remote { error, .. } => error,
            ReplyError::Malformed { source, .. } => RemoteError::Malformed {
                reason: source.to_string(),
            },
        }
    }

    /// A relayed member's failure as the caller sees it.
    pub(crate) fn from_remote(node: NodeId, error: RemoteError) -> Self {
        match error {
            RemoteError::Removed { node } => ReplyError::Removed { node },
            error => ReplyError::Remote { node, error },
        }
    }

    /// Whether the member's failure was the view changing under it (the update itself was
    /// delivered to the members that remained).
    pub fn is_transient(&self) -> bool {
        matches!(self, ReplyError::Removed { .. })
    }
}

/// Errors of a call to one member over its P2P port: queries ([`Subgroup::p2p_send`]),
/// relayed updates ([`Subgroup::ordered_send_via`]) and everything an
/// [`external::ExternalClient`] does.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The request could not be serialized.
    #[error("cannot serialize the request: {0}")]
    Encode(#[source] Bincode),
    /// The request exceeds its configured bound; nothing was sent.
    #[error(transparent)]
    TooLarge(TooLarge),
    /// The node is not in the current view.
    #[error("node {node} is not in the current view")]
    NotInView {
        /// The node.
        node: NodeId,
    },
    /// The node is not a member of the subgroup in the current view.
    #[error("node {node} is not a member of subgroup {subgroup} in the current view")]
    NotMember {
        /// The node.
        node: NodeId,
        /// Flat subgroup id.
        subgroup: usize,
    },
    /// The view has fewer subgroups than the flat id asked for.
    #[error("the view has {count} subgroups; there is no subgroup {subgroup}")]
    NoSuchSubgroup {
        /// The flat id asked for.
        subgroup: usize,
        /// How many there are.
        count: usize,
    },
    /// The connection to the member failed (it could not be made, or broke).
    #[error("node {node} failed: {source}")]
    PeerFailed {
        /// The member.
        node: NodeId,
        /// What happened to the connection.
        #[source]
        source: Arc<io::Error>,
    },
    /// A view change removed the member while the call was pending.
    #[error("node {node} was removed from the group before it replied")]
    Removed {
        /// The member.
        node: NodeId,
    },
    /// The member answered with an error (a malformed request, an oversized reply, no
    /// replica, a relay that failed there).
    #[error("node {node} answered with an error: {error}")]
    Remote {
        /// The member.
        node: NodeId,
        /// Its error.
        #[source]
        error: RemoteError,
    },
    /// The answer could not be deserialized as the expected type.
    #[error("the answer of node {node} is malformed: {source}")]
    Malformed {
        /// The member.
        node: NodeId,
        /// The decoding error.
        #[source]
        source: Bincode,
    },
    /// The member broke the P2P protocol.
    #[error("node {node} broke the protocol: {source}")]
    Protocol {
        /// The member.
        node: NodeId,
        /// What it sent.
        #[source]
        source: wire::WireError,
    },
    /// A member's description of the group could not be read.
    #[error("malformed view from {addr}: {source}")]
    MalformedView {
        /// The member's P2P address.
        addr: SocketAddr,
        /// The parsing error.
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// No answer within the bound.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A local socket or thread operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// A relayed update could not be sent in the shard (see [`SendError`]).
    #[error("relaying the update: {0}")]
    Send(#[source] SendError),
    /// Waiting for a relayed update's replies failed (see [`WaitError`]).
    #[error("waiting for the relayed update: {0}")]
    Wait(#[source] WaitError),
    /// This member (or this client) has shut down, or closed the connection the call used.
    #[error("shut down")]
    ShutDown,
    /// No member could be asked (an external client with no address that answers).
    #[error("no member answered")]
    NoMember,
}

impl CallError {
    /// Whether the call may succeed if made again, possibly to another member: the member it
    /// went to failed, was removed or is not (or no longer) where the caller thought, or no
    /// answer came in time. Errors of the request itself (too large, malformed), a remote
    /// error and this member having stopped are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::PeerFailed { .. }
            | CallError::Removed { .. }
            | CallError::NotInView { .. }
            | CallError::NotMember { .. }
            | CallError::NoMember
            | CallError::Timeout(_) => true,
            // The member was not (or no longer) where the caller thought, or was going away:
            // another member, or the same after the view changes, may answer.
            CallError::Remote { error, .. } => matches!(
                error,
                RemoteError::NoReplica { .. }
                    | RemoteError::ShuttingDown
                    | RemoteError::Removed { .. }
                    | RemoteError::Relay {
                        transient: true,
                        ..
                    }
            ),
            CallError::Send(e) => e.is_transient(),
            CallError::Wait(e) => e.is_transient(),
            _ => false,
        }
    }

    /// A local OS error while doing `context`.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        CallError::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// The connection to `node` failed with `source`.
    pub(crate) fn peer_failed(node: NodeId, source: io::Error) -> Self {
        CallError::PeerFailed {
            node,
            source: Arc::new(source),
        }
    }
}

impl From<SendError> for CallError {
    fn from(e: SendError) -> Self {
        CallError::Send(e)
    }
}

impl From<WaitError> for CallError {
    fn from(e: WaitError) -> Self {
        CallError::Wait(e)
    }
}

/// Errors of persistence queries and waits ([`ReplyMap::await_global_persistence`],
/// [`Subgroup::global_persistence_frontier`], ...).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PersistenceError {
    /// The subgroup's type is not persistent.
    #[error("subgroup {subgroup} is not persistent (register its type with `persistent`)")]
    NotPersistent {
        /// Flat subgroup id.
        subgroup: usize,
    },
    /// The version did not reach the disk (or every disk of the shard) within the bound.
    #[error("not persisted within {0:?}")]
    Timeout(Duration),
    /// This member has shut down.
    #[error("this member has shut down")]
    ShutDown,
}

impl PersistenceError {
    /// Whether waiting again may succeed (a timeout: a disk may be slow or full for a while).
    pub fn is_transient(&self) -> bool {
        matches!(self, PersistenceError::Timeout(_))
    }
}

/// Any error of the replicated-object API: each operation's own error converts into it, for
/// code that mixes operations and propagates with `?`.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// Starting the group failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A subgroup lookup failed.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// An ordered send failed.
    #[error(transparent)]
    Send(#[from] SendError),
    /// Waiting for replies failed.
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// One member's reply failed.
    #[error(transparent)]
    Reply(#[from] ReplyError),
    /// A P2P call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// A persistence query or wait failed.
    #[error(transparent)]
    Persistence(#[from] PersistenceError),
    /// The group layer failed (leaving, the member stopped).
    #[error(transparent)]
    Group(Arc<GroupError>),
}

impl From<GroupError> for RpcError {
    fn from(e: GroupError) -> Self {
        RpcError::Group(Arc::new(e))
    }
}

impl RpcError {
    /// Whether the operation may succeed if made again (see each operation's error).
    pub fn is_transient(&self) -> bool {
        match self {
            RpcError::Start(e) => e.is_transient(),
            RpcError::Lookup(_) => false,
            RpcError::Send(e) => e.is_transient(),
            RpcError::Wait(e) => e.is_transient(),
            RpcError::Reply(e) => e.is_transient(),
            RpcError::Call(e) => e.is_transient(),
            RpcError::Persistence(e) => e.is_transient(),
            RpcError::Group(e) => group_is_transient(e),
        }
    }
}

/// Group errors that pass with the next view: no view in time, an inadequate view, a
/// multicast broken by a view change.
fn group_is_transient(e: &GroupError) -> bool {
    matches!(
        e,
        GroupError::Timeout(_) | GroupError::Inadequate(_) | GroupError::Multicast(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn errors_clone_with_their_cause_and_say_whether_to_retry() {
        let io = CallError::io(
            "connecting",
            io::Error::new(io::ErrorKind::ConnectionRefused, "refused"),
        );
        let copy = io.clone();
        assert_eq!(copy.to_string(), io.to_string());
        assert!(std::error::Error::source(&copy).is_some());
        assert!(CallError::Removed { node: 3 }.is_transient());
        assert!(ReplyError::Removed { node: 3 }.is_transient());
        assert!(SendError::from(GroupError::Timeout(Duration::from_secs(1))).is_transient());
        assert!(
            !SendError::from(GroupError::Stopped(crate::node::StopReason::Removed)).is_transient()
        );
        let too_large = SendError::TooLarge(TooLarge::new("update", 2, "max_payload_size", 1));
        assert!(!too_large.is_transient());
        // Relayed sends keep their cause and its verdict.
        assert!(!CallError::from(too_large.clone()).is_transient());
        assert!(CallError::from(SendError::Busy { max: 1 }).is_transient());
        // The umbrella type keeps the operation's verdict and message.
        let any = RpcError::from(too_large.clone());
        assert!(!any.is_transient());
        assert_eq!(any.to_string(), too_large.to_string());
        assert!(!RpcError::from(LookupError::UnknownType { name: "X".into() }).is_transient());
        assert!(RpcError::from(PersistenceError::Timeout(Duration::ZERO)).is_transient());
    }
}
