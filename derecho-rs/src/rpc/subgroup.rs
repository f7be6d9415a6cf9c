//! [`Subgroup`]: one subgroup of a replicated type, to update and query.

use super::*;

/// A handle on one subgroup of type `T`.
pub struct Subgroup<T: Replicated> {
    pub(super) inner: Arc<Inner>,
    pub(super) id: usize,
    pub(super) _t: PhantomData<fn() -> T>,
}

impl<T: Replicated> Clone for Subgroup<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            id: self.id,
            _t: PhantomData,
        }
    }
}

impl<T: Replicated> std::fmt::Debug for Subgroup<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subgroup").field("id", &self.id).finish()
    }
}

impl<T: Replicated> Subgroup<T> {
    /// The flat subgroup id.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The members of each shard in the installed view.
    pub fn shard_members(&self) -> Vec<Vec<NodeId>> {
        read_lock(&self.inner.view)
            .subgroups
            .get(self.id)
            .map(|s| s.shards.iter().map(|x| x.members.clone()).collect())
            .unwrap_or_default()
    }

    /// All members of the subgroup in the installed view.
    pub fn members(&self) -> Vec<NodeId> {
        self.shard_members().concat()
    }

    /// This node's shard, if it is a member.
    pub fn my_shard(&self) -> Option<usize> {
        read_lock(&self.inner.view)
            .shard_of(self.id, self.inner.me)
            .map(|(s, _)| s)
    }

    /// Runs `f` on this node's replica (if it holds one).
    pub fn with_local<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        let obj = read_lock(&self.inner.replicas)
            .get(&self.id)
            .map(|r| Arc::clone(&r.obj))?;
        let h = obj.as_any().downcast_ref::<Holder<T>>()?;
        let state = read_lock(&h.0);
        let r = f(&state);
        drop(state);
        Some(r)
    }

    /// The newest version of this node's replica that is on its disk (−1 if none yet). Only
    /// for persistent subgroups ([`PersistenceError::NotPersistent`] otherwise).
    pub fn local_persisted_version(&self) -> Result<i64, PersistenceError> {
        Ok(self.persistence()?.local(self.id))
    }

    /// The global persistence frontier of this node's shard: the newest version on the disk
    /// of every member of the shard in the current view (−1 if none yet). Versions at or below
    /// it survive a total crash. Only for persistent subgroups.
    pub fn global_persistence_frontier(&self) -> Result<i64, PersistenceError> {
        Ok(self.inner.global_frontier(self.id)?.0)
    }

    fn persistence(&self) -> Result<&Persistence, PersistenceError> {
        self.inner.persistence_of(self.id)
    }

    /// Multicasts `update` in this node's shard; every member applies it in the shard's total
    /// order. The update must fit the shard profile's `max_payload_size` (checked before
    /// anything is sent).
    pub fn ordered_send(&self, update: &T::Update) -> Result<ReplyMap<T::Reply>, SendError> {
        let body = wire::encode(update).map_err(SendError::Encode)?;
        let id = self.inner.ordered_send_raw(self.id, &body)?;
        Ok(ReplyMap {
            inner: Arc::clone(&self.inner),
            id,
            subgroup: self.id,
            _r: PhantomData,
        })
    }

    /// Asks `node`, a member of this subgroup, to run `query` on its replica.
    pub fn p2p_send(&self, node: NodeId, query: &T::Query) -> Result<T::Reply, CallError> {
        let body = wire::encode(query).map_err(CallError::Encode)?;
        let v = read_lock(&self.inner.view).clone();
        let addr = target(&v, self.id, node)?;
        if node == self.inner.me {
            let r = self
                .inner
                .query_local(self.id, &body)
                .map_err(|error| CallError::Remote { node, error })?;
            return answer(node, &r);
        }
        let r = call(
            &self.inner.peers,
            node,
            addr,
            Kind::Query,
            self.id,
            &body,
            self.inner.timeout,
        )?;
        answer(node, &r)
    }

    /// Asks `node`, a member of this subgroup, to send `update` in its shard and return every
    /// member's reply (how non-members and external clients update a subgroup).
    pub fn ordered_send_via(
        &self,
        node: NodeId,
        update: &T::Update,
    ) -> Result<BTreeMap<NodeId, Result<T::Reply, ReplyError>>, CallError> {
        let body = wire::encode(update).map_err(CallError::Encode)?;
        if node == self.inner.me {
            let id = self.inner.ordered_send_raw(self.id, &body)?;
            let replies = self.inner.wait_replies(id, self.inner.timeout)?;
            return Ok(decode_replies::<T::Reply>(replies));
        }
        let v = read_lock(&self.inner.view).clone();
        let addr = target(&v, self.id, node)?;
        let r = call(
            &self.inner.peers,
            node,
            addr,
            Kind::Relay,
            self.id,
            &body,
            self.inner.timeout,
        )?;
        relayed::<T::Reply>(node, &r)
    }
}

/// Decodes a member's answer to a call.
pub(super) fn answer<R: DeserializeOwned>(node: NodeId, bytes: &[u8]) -> Result<R, CallError> {
    wire::decode(bytes).map_err(|source| CallError::Malformed { node, source })
}

/// Decodes one member's reply to an ordered update.
fn reply<R: DeserializeOwned>(node: NodeId, bytes: &[u8]) -> Result<R, ReplyError> {
    wire::decode(bytes).map_err(|source| ReplyError::Malformed { node, source })
}

pub(super) fn decode_replies<R: DeserializeOwned>(
    replies: BTreeMap<NodeId, Result<Vec<u8>, ReplyError>>,
) -> BTreeMap<NodeId, Result<R, ReplyError>> {
    replies
        .into_iter()
        .map(|(n, r)| (n, r.and_then(|b| reply(n, &b))))
        .collect()
}

/// Decodes a relayed reply map.
pub(super) fn relayed<R: DeserializeOwned>(
    node: NodeId,
    bytes: &[u8],
) -> Result<BTreeMap<NodeId, Result<R, ReplyError>>, CallError> {
    let flat: Vec<(NodeId, wire::Answer)> = answer(node, bytes)?;
    Ok(flat
        .into_iter()
        .map(|(n, r)| {
            let r = r
                .map_err(|error| ReplyError::from_remote(n, error))
                .and_then(|b| reply(n, &b));
            (n, r)
        })
        .collect())
}

/// The P2P address of `node`, checking it is a member of `subgroup` in `v`.
pub(super) fn target(v: &View, subgroup: usize, node: NodeId) -> Result<SocketAddr, CallError> {
    let m = v
        .members
        .iter()
        .find(|m| m.id == node)
        .ok_or(CallError::NotInView { node })?;
    if subgroup >= v.subgroups.len() {
        return Err(CallError::NoSuchSubgroup {
            subgroup,
            count: v.subgroups.len(),
        });
    }
    v.shard_of(subgroup, node)
        .ok_or(CallError::NotMember { node, subgroup })?;
    Ok(SocketAddr::new(m.ip, m.external_port))
}

/// One request over the P2P port, with the size check done before anything is sent.
pub(super) fn call(
    peers: &Peers,
    node: NodeId,
    addr: SocketAddr,
    kind: Kind,
    subgroup: usize,
    body: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, CallError> {
    let max = peers.limits().request;
    if body.len() > max {
        return Err(CallError::TooLarge(TooLarge::new(
            "a P2P request",
            body.len(),
            "max_p2p_request_payload_size",
            max,
        )));
    }
    let conn = peers.get(node, addr)?;
    // Flat subgroup ids index the view's subgroups, which `target` checked.
    let sg = u32::try_from(subgroup).unwrap_or(u32::MAX).to_le_bytes();
    conn.call(kind, &[&sg, body], timeout)?
        .map_err(|error| CallError::Remote { node, error })
}
