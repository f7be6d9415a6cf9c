//! What a member's replicated-object layer shares between its threads: the replicas, the
//! calls waiting for replies, the view upcall, delivery, P2P serving and state transfer.

use super::*;

pub(super) struct TypeEntry {
    pub(super) name: String,
    pub(super) type_id: TypeId,
    pub(super) factory: Factory,
    pub(super) first: usize,
    pub(super) count: usize,
    /// `Some` for a persistent type: when its updates reach the disk.
    pub(super) durability: Option<crate::config::Durability>,
}

pub(super) struct Replica {
    pub(super) obj: Arc<dyn Erased>,
    pub(super) shard: Option<usize>,
    pub(super) loaded: bool,
    /// The replica's logs, if its type is persistent.
    pub(super) log: Option<Arc<ReplicaLog>>,
}

/// A table's doorbell and the epoch seen before a read of the table.
pub(super) type Bell = (Arc<derecho_fabric::Doorbell>, u64);

/// One member's replies to an ordered request, as they arrive.
pub(super) struct Pending {
    pub(super) expected: Option<Vec<NodeId>>,
    pub(super) replies: BTreeMap<NodeId, Result<Vec<u8>, ReplyError>>,
    /// The update's version, once it is delivered here.
    pub(super) version: Option<i64>,
}

/// A reply this member owes a caller.
pub(super) struct OutReply {
    pub(super) caller: NodeId,
    pub(super) id: u64,
    pub(super) result: wire::Answer,
}

/// Most ordered requests of one member waiting for replies.
pub const MAX_PENDING: usize = 1 << 16;
/// Most replies queued for sending.
pub(super) const REPLY_QUEUE: usize = 4096;

pub(super) struct Inner {
    pub(super) me: NodeId,
    pub(super) types: Vec<TypeEntry>,
    pub(super) replicas: RwLock<HashMap<usize, Replica>>,
    pub(super) view: RwLock<View>,
    pub(super) pending: Mutex<HashMap<u64, Pending>>,
    pub(super) replied: Condvar,
    pub(super) next_id: AtomicU64,
    pub(super) peers: Peers,
    pub(super) replies_out: SyncSender<OutReply>,
    pub(super) max_reply: Vec<usize>,
    pub(super) timeout: Duration,
    pub(super) node: OnceLock<Weak<GroupNode>>,
    pub(super) on_view: Mutex<Option<ViewHandler>>,
    /// Storage and the persist worker's state, if any type is persistent.
    pub(super) persistence: Option<Persistence>,
}

impl Inner {
    /// The member, unless it has shut down.
    pub(super) fn node(&self) -> Option<Arc<GroupNode>> {
        self.node.get().and_then(Weak::upgrade)
    }

    /// This member's persistence, if `subgroup`'s type is persistent.
    pub(super) fn persistence_of(&self, subgroup: usize) -> Result<&Persistence, PersistenceError> {
        let persistent = self
            .type_of_subgroup(subgroup)
            .is_some_and(|t| t.durability.is_some());
        match &self.persistence {
            Some(p) if persistent => Ok(p),
            _ => Err(PersistenceError::NotPersistent { subgroup }),
        }
    }

    /// The global persistence frontier of `subgroup` (never lower than one reported before),
    /// with the doorbell of the view's table and its epoch taken before the frontier was
    /// read, so that waiting on it cannot miss a later publication. Between views, or in an
    /// inadequate one, there is no table: the last frontier holds.
    pub(super) fn global_frontier(
        &self,
        subgroup: usize,
    ) -> Result<(i64, Option<Bell>), PersistenceError> {
        let p = self.persistence_of(subgroup)?;
        let group = self
            .node()
            .ok_or(PersistenceError::ShutDown)?
            .multicast()
            .ok();
        let bell = group.as_ref().map(|g| {
            let b = Arc::clone(g.sst().doorbell());
            let epoch = b.epoch();
            (b, epoch)
        });
        let seen = group.and_then(|g| g.persisted_frontier(subgroup));
        Ok((p.global(subgroup, seen), bell))
    }

    pub(super) fn type_of_subgroup(&self, subgroup: usize) -> Option<&TypeEntry> {
        self.types
            .iter()
            .find(|t| (t.first..t.first + t.count).contains(&subgroup))
    }

    pub(super) fn create(&self, subgroup: usize) -> Option<Arc<dyn Erased>> {
        let t = self.type_of_subgroup(subgroup)?;
        Some((t.factory)(subgroup - t.first))
    }

    /// A fresh replica of `subgroup` for `shard`; a persistent one opens its logs and is
    /// restored from them. A log that cannot be read leaves the replica without persistence
    /// (the error is logged and its persistence frontier does not move).
    fn new_replica(&self, subgroup: usize, shard: usize) -> Option<Replica> {
        let t = self.type_of_subgroup(subgroup)?;
        let obj = (t.factory)(subgroup - t.first);
        let log = match (&self.persistence, t.durability) {
            (Some(p), Some(durability)) => {
                let opened = ReplicaLog::open(
                    &p.storage,
                    &t.name,
                    subgroup - t.first,
                    shard,
                    p.policy.clone(),
                    durability,
                )
                .map_err(persist::RestoreError::from)
                .and_then(|log| log.restore(obj.as_ref()).map(|v| (log, v)));
                match opened {
                    Ok((log, v)) => {
                        if v >= 0 {
                            tracing::info!(
                                subgroup,
                                shard,
                                version = v,
                                "restored a persistent replica from its log"
                            );
                        }
                        Some(Arc::new(log))
                    }
                    Err(e) => {
                        tracing::error!(subgroup, shard, error = %e,
                            "the replica's log cannot be used; it runs without persistence");
                        None
                    }
                }
            }
            _ => None,
        };
        Some(Replica {
            obj,
            shard: Some(shard),
            loaded: false,
            log,
        })
    }

    pub(super) fn info(&self) -> GroupInfo {
        GroupInfo {
            view: read_lock(&self.view).clone(),
            types: self
                .types
                .iter()
                .map(|t| TypeInfo {
                    name: t.name.clone(),
                    first_subgroup: t.first,
                    subgroups: t.count,
                })
                .collect(),
        }
    }

    /// Called for every installed view before anything of it is delivered.
    pub(super) fn view_installed(&self, v: &View) {
        if let Some(p) = &self.persistence {
            persist::log_view(p, v);
        }
        *write_lock(&self.view) = v.clone();
        // An inadequate view has no shards: the replicas stay as they are (their state is what
        // the next adequate view transfers to newcomers).
        if v.is_adequate() {
            let mut replicas = write_lock(&self.replicas);
            for t in &self.types {
                for sg in t.first..t.first + t.count {
                    match v.shard_of(sg, self.me) {
                        Some((shard, _)) => {
                            let keep = replicas
                                .get(&sg)
                                .is_some_and(|r| r.loaded || r.shard.is_none_or(|s| s == shard));
                            if !keep {
                                if let Some(r) = self.new_replica(sg, shard) {
                                    replicas.insert(sg, r);
                                }
                            }
                            if let Some(r) = replicas.get_mut(&sg) {
                                r.shard = Some(shard);
                                r.loaded = false;
                            }
                        }
                        None => {
                            replicas.remove(&sg);
                        }
                    }
                }
            }
        }
        {
            let mut pending = lock(&self.pending);
            for p in pending.values_mut() {
                if let Some(expected) = &p.expected {
                    for &m in expected {
                        if v.rank_of(m).is_none() && !p.replies.contains_key(&m) {
                            p.replies.insert(m, Err(ReplyError::Removed { node: m }));
                        }
                    }
                }
            }
        }
        self.replied.notify_all();
        self.peers.retain(
            |n| v.rank_of(n).is_some(),
            |n| CallError::Removed { node: n },
        );
        if let Some(h) = lock(&self.on_view).as_mut() {
            h(v);
        }
        // The new view's table starts empty: publish what is on disk in it.
        if let Some(p) = &self.persistence {
            p.wake();
        }
    }

    /// Called on the core loop for every delivered message.
    pub(super) fn delivered(&self, d: &Delivery<'_>) {
        if d.flags & wire::RPC_FLAG == 0 {
            return;
        }
        let Some((ordered, body)) = wire::parse_ordered(d.payload) else {
            tracing::warn!(
                subgroup = d.subgroup,
                sender = d.sender,
                "ignored a malformed ordered RPC"
            );
            return;
        };
        let (id, caller) = (ordered.id, ordered.caller);
        let replica = read_lock(&self.replicas)
            .get(&d.subgroup)
            .map(|r| (Arc::clone(&r.obj), r.log.clone()));
        // Only persistent replicas and this update's caller need its version.
        let version = if caller == self.me || replica.as_ref().is_some_and(|r| r.1.is_some()) {
            persist::version_of(read_lock(&self.view).vid, d.seq)
        } else {
            -1
        };
        let mut result = match replica {
            Some((obj, None)) => obj.apply(body),
            Some((obj, Some(log))) => {
                self.apply_persistent(d.subgroup, &obj, &log, version, ordered.stamp_us, body)
            }
            None => Err(RemoteError::NoReplica {
                node: self.me,
                subgroup: d.subgroup,
            }),
        };
        let max = self
            .max_reply
            .get(d.subgroup)
            .copied()
            .unwrap_or(usize::MAX);
        if let Ok(r) = &result {
            if r.len() > max {
                result = Err(RemoteError::ReplyTooLarge { len: r.len(), max });
            }
        }
        if caller == self.me {
            let members = read_lock(&self.view)
                .subgroups
                .get(d.subgroup)
                .and_then(|s| s.shards.get(d.shard))
                .map(|s| s.members.clone())
                .unwrap_or_default();
            let mut pending = lock(&self.pending);
            if let Some(p) = pending.get_mut(&id) {
                p.expected = Some(members);
                p.version = Some(version);
                p.replies.insert(
                    self.me,
                    result.map_err(|error| ReplyError::Remote {
                        node: self.me,
                        error,
                    }),
                );
            }
            drop(pending);
            self.replied.notify_all();
        } else {
            match self.replies_out.try_send(OutReply { caller, id, result }) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(caller, "dropped an RPC reply: {REPLY_QUEUE} are queued")
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Applies an update to a persistent replica: logs it after applying (write-behind) or
    /// logs and syncs it before (write-ahead), takes a checkpoint when one is due, and wakes
    /// the persist worker. A log that fails is reported; the update is applied regardless
    /// (every replica must apply the same updates), and the frontier stops moving.
    fn apply_persistent(
        &self,
        subgroup: usize,
        obj: &Arc<dyn Erased>,
        log: &ReplicaLog,
        version: i64,
        stamp_us: u64,
        body: &[u8],
    ) -> wire::Answer {
        let Some(p) = &self.persistence else {
            return obj.apply(body);
        };
        let hlc = derecho_persist::Hlc::new(stamp_us, 0);
        let result = match log.durability {
            crate::config::Durability::WriteBehind => {
                let r = obj.apply(body);
                if let Err(e) = log.record(version, hlc, body) {
                    p.report_error(&format!("logging subgroup {subgroup}"), &e);
                }
                r
            }
            crate::config::Durability::WriteAhead => {
                if let Err(e) = log.record(version, hlc, body).and_then(|()| log.persist()) {
                    p.report_error(&format!("logging subgroup {subgroup}"), &e);
                }
                obj.apply(body)
            }
        };
        if log.checkpoint_due() {
            let mut state = Vec::new();
            let saved = obj
                .save(&mut state)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    log.checkpoint(version, hlc, &state)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = saved {
                p.report_error(&format!("checkpointing subgroup {subgroup}"), &e);
            }
        }
        p.wake();
        result
    }

    pub(super) fn record_reply(&self, id: u64, from: NodeId, result: wire::Answer) {
        let mut pending = lock(&self.pending);
        if let Some(p) = pending.get_mut(&id) {
            p.replies.insert(
                from,
                result.map_err(|error| ReplyError::Remote { node: from, error }),
            );
        }
        drop(pending);
        self.replied.notify_all();
    }

    /// Multicasts an encoded update in `subgroup`; returns the request id to wait on.
    pub(super) fn ordered_send_raw(&self, subgroup: usize, body: &[u8]) -> Result<u64, SendError> {
        let max_payload = {
            let v = read_lock(&self.view);
            let (shard, _) = v.shard_of(subgroup, self.me).ok_or(SendError::NotMember {
                node: self.me,
                subgroup,
            })?;
            v.subgroups[subgroup].shards[shard].sizes.max_payload
        };
        let len = wire::ORDERED_HEADER + body.len();
        if len > max_payload {
            return Err(SendError::TooLarge(TooLarge::new(
                "an ordered update",
                len,
                "max_payload_size",
                max_payload,
            )));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut pending = lock(&self.pending);
            if pending.len() >= MAX_PENDING {
                return Err(SendError::Busy { max: MAX_PENDING });
            }
            pending.insert(
                id,
                Pending {
                    expected: None,
                    replies: BTreeMap::new(),
                    version: None,
                },
            );
        }
        let mut payload = Vec::with_capacity(len);
        payload.extend_from_slice(&wire::ordered_header(wire::Ordered {
            id,
            caller: self.me,
            stamp_us: now_us(),
        }));
        payload.extend_from_slice(body);
        let sent = match self.node() {
            Some(n) => n
                .send_flags(subgroup, &payload, wire::RPC_FLAG, self.timeout)
                .map_err(SendError::from),
            None => Err(SendError::ShutDown),
        };
        if let Err(e) = sent {
            lock(&self.pending).remove(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// Waits until every member the request went to has replied or was removed.
    pub(super) fn wait_replies(
        &self,
        id: u64,
        timeout: Duration,
    ) -> Result<BTreeMap<NodeId, Result<Vec<u8>, ReplyError>>, WaitError> {
        let deadline = Instant::now() + timeout;
        let mut pending = lock(&self.pending);
        loop {
            let done = match pending.get(&id) {
                // Only the caller that sent the request removes it; a member that shut down
                // may have forgotten it.
                None => return Err(WaitError::ShutDown),
                Some(p) => p
                    .expected
                    .as_ref()
                    .is_some_and(|e| e.iter().all(|m| p.replies.contains_key(m))),
            };
            if done {
                let p = pending.remove(&id).map(|p| p.replies).unwrap_or_default();
                return Ok(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                pending.remove(&id);
                return Err(WaitError::Timeout(timeout));
            }
            pending = wait_timeout(&self.replied, pending, left.min(Duration::from_millis(500)));
            if self.node().is_none() {
                pending.remove(&id);
                return Err(WaitError::ShutDown);
            }
        }
    }

    pub(super) fn query_local(&self, subgroup: usize, body: &[u8]) -> wire::Answer {
        let replica = read_lock(&self.replicas)
            .get(&subgroup)
            .map(|r| Arc::clone(&r.obj));
        match replica {
            Some(obj) => obj.query(body),
            None => Err(RemoteError::NoReplica {
                node: self.me,
                subgroup,
            }),
        }
    }
}

/// This node's clock in microseconds since the Unix epoch (0 if it reads before the epoch).
pub(super) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

pub(super) struct Served(pub(super) Weak<Inner>);

impl Served {
    pub(super) fn inner(&self) -> Result<Arc<Inner>, RemoteError> {
        self.0.upgrade().ok_or(RemoteError::ShuttingDown)
    }
}

impl Handler for Served {
    fn query(&self, subgroup: usize, body: &[u8]) -> wire::Answer {
        self.inner()?.query_local(subgroup, body)
    }

    fn relay(&self, subgroup: usize, body: &[u8]) -> wire::Answer {
        let inner = self.inner()?;
        let relay = |e: &dyn std::fmt::Display, transient: bool| RemoteError::Relay {
            reason: e.to_string(),
            transient,
        };
        let id = inner
            .ordered_send_raw(subgroup, body)
            .map_err(|e| relay(&e, e.is_transient()))?;
        let replies = inner
            .wait_replies(id, inner.timeout)
            .map_err(|e| relay(&e, e.is_transient()))?;
        let flat: Vec<(NodeId, wire::Answer)> = replies
            .into_iter()
            .map(|(n, r)| (n, r.map_err(ReplyError::into_remote)))
            .collect();
        wire::encode(&flat).map_err(|e| RemoteError::Encode {
            reason: e.to_string(),
        })
    }

    fn get_view(&self) -> wire::Answer {
        serde_json::to_vec(&self.inner()?.info()).map_err(|e| RemoteError::Encode {
            reason: e.to_string(),
        })
    }

    fn ordered_reply(&self, id: u64, from: NodeId, result: wire::Answer) {
        if let Ok(i) = self.inner() {
            i.record_reply(id, from, result);
        }
    }
}

pub(super) struct States(pub(super) Weak<Inner>);

impl StateHooks for States {
    fn save_state(&self, subgroup: usize, out: &mut dyn Write) -> io::Result<()> {
        let inner = self.0.upgrade().ok_or(io::ErrorKind::BrokenPipe)?;
        let replica = read_lock(&inner.replicas)
            .get(&subgroup)
            .map(|r| (Arc::clone(&r.obj), persist::applied_version(r)));
        match replica {
            // The version first: a persistent receiver records the state as a checkpoint of it.
            Some((obj, version)) => {
                out.write_all(&version.to_le_bytes())?;
                obj.save(out)
            }
            None => Err(io::Error::other(format!(
                "no replica of subgroup {subgroup} to send"
            ))),
        }
    }

    fn load_state(&self, subgroup: usize, input: &mut dyn Read) -> io::Result<()> {
        let inner = self.0.upgrade().ok_or(io::ErrorKind::BrokenPipe)?;
        let obj = inner
            .create(subgroup)
            .ok_or_else(|| io::Error::other(format!("subgroup {subgroup} has no type")))?;
        let mut v = [0u8; 8];
        input.read_exact(&mut v)?;
        let version = i64::from_le_bytes(v);
        // The view that makes this member a holder is installed first: its replica (and the
        // logs of a persistent one) exist already.
        let log = read_lock(&inner.replicas)
            .get(&subgroup)
            .and_then(|r| r.log.clone());
        match &log {
            // A persistent replica keeps the state it received as its only checkpoint, so it
            // must hold the bytes once; a volatile one loads straight from the stream.
            Some(l) => {
                let mut state = Vec::new();
                input.read_to_end(&mut state)?;
                obj.load(&mut state.as_slice())?;
                l.reset_to(version, &state).map_err(io::Error::other)?;
                if let Some(p) = &inner.persistence {
                    p.wake();
                }
            }
            None => obj.load(input)?,
        }
        let mut replicas = write_lock(&inner.replicas);
        let shard = replicas.get(&subgroup).and_then(|r| r.shard);
        replicas.insert(
            subgroup,
            Replica {
                obj,
                shard,
                loaded: shard.is_none(),
                log,
            },
        );
        Ok(())
    }
}

pub(super) fn reply_sender(inner: &Weak<Inner>, rx: &Receiver<OutReply>) {
    while let Ok(r) = rx.recv() {
        let Some(i) = inner.upgrade() else { return };
        let addr = read_lock(&i.view)
            .members
            .iter()
            .find(|m| m.id == r.caller)
            .map(|m| SocketAddr::new(m.ip, m.external_port));
        let Some(addr) = addr else { continue };
        let (status, body) = wire::status_parts(&r.result);
        let me = i.me.to_le_bytes();
        let sent = i
            .peers
            .get(r.caller, addr)
            .and_then(|c| c.send_oneway(Kind::OrderedReply, r.id, &[&me, &status, &body]));
        if let Err(e) = sent {
            tracing::warn!(caller = r.caller, error = %e, "an RPC reply could not be sent");
        }
    }
}
