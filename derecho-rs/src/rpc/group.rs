//! [`Group`]: a running member's handle to its replicated objects.

use super::*;

/// A running member of a group of replicated objects.
pub struct Group {
    pub(super) inner: Arc<Inner>,
    pub(super) node: Arc<GroupNode>,
    pub(super) server: Mutex<P2pServer>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("me", &self.inner.me)
            .finish_non_exhaustive()
    }
}

impl Group {
    /// This node's id.
    pub fn my_id(&self) -> NodeId {
        self.inner.me
    }

    /// The installed view.
    pub fn view(&self) -> View {
        read_lock(&self.inner.view).clone()
    }

    /// This node's rank in the installed view.
    pub fn my_rank(&self) -> Option<usize> {
        self.view().rank_of(self.inner.me)
    }

    /// The members of the installed view, in rank order.
    pub fn members(&self) -> Vec<NodeId> {
        self.view().ids()
    }

    /// The view and the types, as external clients see them.
    pub fn info(&self) -> GroupInfo {
        self.inner.info()
    }

    /// The underlying member (raw multicast, failure reports, view waits).
    pub fn node(&self) -> &GroupNode {
        &self.node
    }

    /// A handle on subgroup `index` of type `T`, for members and non-members alike.
    pub fn subgroup<T: Replicated>(&self, index: usize) -> Result<Subgroup<T>, LookupError> {
        let t = self
            .inner
            .types
            .iter()
            .find(|t| t.type_id == TypeId::of::<T>())
            .ok_or_else(|| LookupError::UnknownType {
                name: std::any::type_name::<T>().to_string(),
            })?;
        if index >= t.count {
            return Err(LookupError::NoSuchSubgroup {
                type_name: t.name.clone(),
                index,
                count: t.count,
            });
        }
        Ok(Subgroup {
            inner: Arc::clone(&self.inner),
            id: t.first + index,
            _t: PhantomData,
        })
    }

    /// Leaves the group gracefully (see [`GroupNode::leave`]).
    pub fn leave(&self, timeout: Duration) -> Result<(), GroupError> {
        let r = self.node.leave(timeout);
        lock(&self.server).stop();
        r
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        lock(&self.server).stop();
    }
}
