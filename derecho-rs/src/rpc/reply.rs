//! [`ReplyMap`]: the replies of one ordered update, one per member of the shard.

use super::*;

/// The replies of an ordered request, one per member of the shard.
pub struct ReplyMap<R> {
    pub(super) inner: Arc<Inner>,
    pub(super) id: u64,
    pub(super) subgroup: usize,
    pub(super) _r: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for ReplyMap<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyMap").field("id", &self.id).finish()
    }
}

impl<R: DeserializeOwned> ReplyMap<R> {
    /// Waits (up to the group's timeout) for every member's reply: node → its result, with
    /// [`ReplyError::Removed`] for members a view change removed before they replied.
    pub fn wait(self) -> Result<BTreeMap<NodeId, Result<R, ReplyError>>, WaitError> {
        let t = self.inner.timeout;
        self.wait_for(t)
    }

    /// Like [`ReplyMap::wait`] with an explicit bound.
    pub fn wait_for(
        self,
        timeout: Duration,
    ) -> Result<BTreeMap<NodeId, Result<R, ReplyError>>, WaitError> {
        let replies = self.inner.wait_replies(self.id, timeout)?;
        Ok(decode_replies(replies))
    }
}

impl<R> ReplyMap<R> {
    /// The update's version (`vid << 32 | seq`) once it has been delivered here.
    pub fn version(&self) -> Option<i64> {
        lock(&self.inner.pending)
            .get(&self.id)
            .and_then(|p| p.version)
    }

    /// Waits up to `timeout` for the update to be delivered here; returns its version.
    fn wait_version(&self, deadline: Instant, timeout: Duration) -> Result<i64, PersistenceError> {
        let mut pending = lock(&self.inner.pending);
        loop {
            match pending.get(&self.id) {
                // Only this handle removes its request (when dropped or consumed by `wait`);
                // a member that shut down may have forgotten it.
                None => return Err(PersistenceError::ShutDown),
                Some(p) => {
                    if let Some(v) = p.version {
                        return Ok(v);
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PersistenceError::Timeout(timeout));
            }
            pending = wait_timeout(
                &self.inner.replied,
                pending,
                left.min(Duration::from_millis(200)),
            );
        }
    }

    fn persistence(&self) -> Result<&Persistence, PersistenceError> {
        self.inner.persistence_of(self.subgroup)
    }

    /// Waits up to `timeout` until the update is on this member's disk; returns its version.
    /// Only for persistent subgroups ([`PersistenceError::NotPersistent`] otherwise).
    pub fn await_local_persistence(&self, timeout: Duration) -> Result<i64, PersistenceError> {
        let p = self.persistence()?;
        let deadline = Instant::now() + timeout;
        let v = self.wait_version(deadline, timeout)?;
        p.wait_local(
            self.subgroup,
            v,
            deadline.saturating_duration_since(Instant::now()),
        )
        .map_err(|_| PersistenceError::Timeout(timeout))?;
        Ok(v)
    }

    /// Waits up to `timeout` until the update is on the disk of every member of the shard
    /// (the shard's global persistence frontier has reached it); returns its version. A
    /// version at or below the frontier survives a total crash of the group. Only for
    /// persistent subgroups ([`PersistenceError::NotPersistent`] otherwise).
    pub fn await_global_persistence(&self, timeout: Duration) -> Result<i64, PersistenceError> {
        self.persistence()?;
        let deadline = Instant::now() + timeout;
        let v = self.wait_version(deadline, timeout)?;
        loop {
            let (frontier, bell) = self.inner.global_frontier(self.subgroup)?;
            if frontier >= v {
                return Ok(v);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PersistenceError::Timeout(timeout));
            }
            let nap = left.min(Duration::from_millis(20));
            match bell {
                // Rung by any publication since the frontier was read.
                Some((b, epoch)) => {
                    b.wait(epoch, nap);
                }
                // Between views there is no table to read: wait for the next one.
                None => std::thread::sleep(nap),
            }
        }
    }
}

impl<R> Drop for ReplyMap<R> {
    fn drop(&mut self) {
        lock(&self.inner.pending).remove(&self.id);
    }
}
