//! [`ReplyMap`]: the replies of one ordered update, one per member of the shard.

use super::*;

/// The replies of an ordered request, one per member of the shard.
pub struct ReplyMap<R> {
    pub(super) inner: Arc<Inner>,
    pub(super) id: u64,
    pub(super) _r: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for ReplyMap<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyMap").field("id", &self.id).finish()
    }
}

impl<R: DeserializeOwned> ReplyMap<R> {
    /// Waits (up to the group's timeout) for every member's reply: node → its result, with
    /// [`RpcError::Removed`] for members a view change removed before they replied.
    pub fn wait(self) -> Result<BTreeMap<NodeId, Result<R, RpcError>>, RpcError> {
        let t = self.inner.timeout;
        self.wait_for(t)
    }

    /// Like [`ReplyMap::wait`] with an explicit bound.
    pub fn wait_for(
        self,
        timeout: Duration,
    ) -> Result<BTreeMap<NodeId, Result<R, RpcError>>, RpcError> {
        let replies = self.inner.wait_replies(self.id, timeout)?;
        Ok(decode_replies(replies))
    }
}

impl<R> Drop for ReplyMap<R> {
    fn drop(&mut self) {
        lock(&self.inner.pending).remove(&self.id);
    }
}
