//! Errors of the replicated-object API.

use super::*;

/// Errors of the replicated-object API. Cloning is cheap (OS and group errors are shared), so
/// one failure can be handed to every caller waiting on it.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// No type of this group is registered under the name or Rust type.
    #[error("the group has no replicated type {0}")]
    UnknownType(String),
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
    /// The node is not a member of the subgroup in the current view.
    #[error("node {node} is not a member of subgroup {subgroup} in the current view")]
    NotMember {
        /// The node.
        node: NodeId,
        /// Flat subgroup id.
        subgroup: usize,
    },
    /// The node is not in the current view.
    #[error("node {node} is not in the current view")]
    NotInView {
        /// The node.
        node: NodeId,
    },
    /// A view change removed the member before it replied.
    #[error("node {node} was removed from the group before it replied")]
    Removed {
        /// The member.
        node: NodeId,
    },
    /// The connection to a member failed.
    #[error("node {node} failed: {reason}")]
    PeerFailed {
        /// The member.
        node: NodeId,
        /// What happened.
        reason: String,
    },
    /// A payload exceeds its configured limit; nothing was sent.
    #[error("{what} of {len} bytes exceeds {limit} = {max} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The configuration key that bounds it.
        limit: &'static str,
        /// The bound.
        max: usize,
    },
    /// The member answered with an error (a malformed request, an oversized reply, no replica).
    #[error("node {node} answered with an error: {message}")]
    Remote {
        /// The member.
        node: NodeId,
        /// Its error.
        message: String,
    },
    /// No answer within the bound.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Too many calls in flight.
    #[error("too many calls in flight: {0}")]
    Busy(String),
    /// A value could not be serialized.
    #[error("cannot serialize: {0}")]
    Encode(String),
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The group layer failed (start-up, membership, this member stopped).
    #[error("group: {0}")]
    Group(#[source] Arc<GroupError>),
    /// This member (or this client) has shut down, or closed the connection the call used.
    #[error("shut down")]
    ShutDown,
    /// No member could be asked (an external client with no address that answers).
    #[error("no member answered")]
    NoMember,
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
    /// The layout policy does not fit the registered types.
    #[error("layout: {0}")]
    Layout(#[from] LayoutError),
    /// Persistence was asked of a subgroup whose type is not persistent.
    #[error("subgroup {subgroup} is not persistent (register its type with `persistent`)")]
    NotPersistent {
        /// Flat subgroup id.
        subgroup: usize,
    },
    /// The persistent logs could not be opened or read.
    #[error("persistence: {0}")]
    Persistence(Arc<derecho_persist::Error>),
}

impl From<derecho_persist::Error> for RpcError {
    fn from(e: derecho_persist::Error) -> Self {
        RpcError::Persistence(Arc::new(e))
    }
}

impl From<GroupError> for RpcError {
    fn from(e: GroupError) -> Self {
        RpcError::Group(Arc::new(e))
    }
}

impl RpcError {
    /// Whether the call may succeed if made again, possibly to another member: the member it
    /// went to failed, was removed or is not (or no longer) where the caller thought, no
    /// answer came in time, or the group was between views. Errors of the request itself
    /// (too large, unknown type, malformed), a remote error and this member having stopped
    /// are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            RpcError::PeerFailed { .. }
            | RpcError::Removed { .. }
            | RpcError::NotInView { .. }
            | RpcError::NotMember { .. }
            | RpcError::Timeout(_)
            | RpcError::Busy(_) => true,
            RpcError::Group(e) => matches!(
                **e,
                GroupError::Timeout(_) | GroupError::Inadequate(_) | GroupError::Multicast(_)
            ),
            _ => false,
        }
    }

    /// A socket error while doing `context`.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        RpcError::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn errors_clone_with_their_cause_and_say_whether_to_retry() {
        let io = RpcError::io(
            "connecting",
            io::Error::new(io::ErrorKind::ConnectionRefused, "refused"),
        );
        let copy = io.clone();
        assert_eq!(copy.to_string(), io.to_string());
        assert!(std::error::Error::source(&copy).is_some());
        assert!(RpcError::Removed { node: 3 }.is_transient());
        assert!(RpcError::from(GroupError::Timeout(Duration::from_secs(1))).is_transient());
        assert!(!RpcError::from(GroupError::Stopped("removed".into())).is_transient());
        assert!(!RpcError::TooLarge {
            what: "update",
            len: 2,
            limit: "max_payload_size",
            max: 1
        }
        .is_transient());
    }
}
