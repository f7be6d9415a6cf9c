//! Atomic multicast within each shard of a view.
//!
//! Follow a message: [`MulticastGroup::send`] gives it the sender's next index and either
//! writes it into the sender's next SMC slot of the view's SST (payloads up to
//! `max_smc_payload_size`) or hands it to the RDMC group of (subgroup, sender) (larger ones).
//! The core loop (the `engine` module) publishes filled slots to the shard, reads the other senders'
//! slots, collects finished RDMC messages, and publishes what it has received; a message is
//! delivered once every shard member has received everything before it in the round-robin
//! order ([`order`]) — or, in raw shards, as soon as it arrives in sender order.
//!
//! This module owns one view's multicast. It must not decide membership: the view manager
//! creates a [`MulticastGroup`] per view and drops it at the view change.

pub(crate) mod engine;
pub mod order;
pub mod spec;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) use derecho_fabric::sync::lock;
use derecho_fabric::{Fabric, NodeId, RegionId};
use derecho_rdmc::{GroupKey, GroupPlan, GroupSet, GroupSpec, Handler, PreparedSet, RdmcError};
use derecho_sst::{
    CoreLoop, CoreLoopConfig, FailureDetector, Member, SchemaBuilder, Sst, SstConfig, SstError,
};

pub use engine::Resend;

/// A view's ragged trim: per subgroup of this member (flat id), the index of the last message
/// delivered from each sender (in sender order; −1 for none).
pub type RaggedTrim = BTreeMap<usize, Vec<i64>>;

/// Records a view's ragged trim before the trim is acted on.
pub type TrimLog = Arc<dyn Fn(&RaggedTrim) + Send + Sync>;
use engine::{Engine, Inbox, SenderState, ShardInfo, ShardRun};
use order::RoundRobin;
use spec::{Columns, Header};
pub use spec::{Mode, MulticastSpec, ShardSpec, Sizes, SpecError, SubgroupSpec, HEADER_LEN};

/// A delivered message, as the delivery callback sees it.
#[derive(Debug)]
pub struct Delivery<'a> {
    /// Flat subgroup id.
    pub subgroup: usize,
    /// Shard index within the subgroup.
    pub shard: usize,
    /// The sending node.
    pub sender: NodeId,
    /// The sender's message index.
    pub index: i64,
    /// Global sequence number in this view (`index × senders + sender rank`).
    pub seq: i64,
    /// The shard-wide received prefix at delivery (−1 in raw shards).
    pub stable: i64,
    /// Header flags of the message.
    pub flags: u64,
    /// The payload.
    pub payload: &'a [u8],
}

/// Called on the core loop's thread for every delivered message, in delivery order.
pub type DeliveryHandler = Box<dyn FnMut(Delivery<'_>) + Send>;

/// Errors of the multicast API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MulticastError {
    /// The spec is inconsistent.
    #[error("invalid multicast spec: {0}")]
    Spec(#[from] SpecError),
    /// The view has a sender column too large to number its RDMC group.
    #[error("invalid multicast spec: sender column {column} leaves no room for an RDMC group id")]
    SenderColumn {
        /// The sender's per-sender SST column.
        column: usize,
    },
    /// The set-up was abandoned because the member is shutting down.
    #[error("set-up abandoned: the member is shutting down")]
    Cancelled,
    /// This node sends in the subgroup but has no RDMC group for it (a bug).
    #[error("no RDMC group for subgroup {subgroup}")]
    NoRdmcGroup {
        /// The subgroup.
        subgroup: usize,
    },
    /// This node is not a member of the subgroup.
    #[error("node {node} is not a member of subgroup {subgroup}")]
    NotMember {
        /// This node.
        node: NodeId,
        /// The subgroup.
        subgroup: usize,
    },
    /// This node is a member but not a sender of the subgroup's shard.
    #[error("node {node} is not a sender in subgroup {subgroup}")]
    NotSender {
        /// This node.
        node: NodeId,
        /// The subgroup.
        subgroup: usize,
    },
    /// The payload exceeds the shard's `max_payload_size`.
    #[error("payload of {len} bytes exceeds subgroup {subgroup}'s max_payload_size of {max}")]
    TooLarge {
        /// The subgroup.
        subgroup: usize,
        /// The payload's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No window space or buffer became free in time.
    #[error("no room to send in subgroup {subgroup} within {after:?} (window full)")]
    WindowFull {
        /// The subgroup.
        subgroup: usize,
        /// How long was waited.
        after: Duration,
    },
    /// The view is ending (wedged): send again in the next view.
    #[error("the view is changing; no new messages in subgroup {subgroup} of this view")]
    Wedged {
        /// The subgroup.
        subgroup: usize,
    },
    /// The shared state table failed.
    #[error(transparent)]
    Sst(#[from] SstError),
    /// An RDMC group failed.
    #[error(transparent)]
    Rdmc(#[from] RdmcError),
}

/// What an application thread needs to send in one subgroup.
struct SendSide {
    info: Arc<ShardInfo>,
    state: Arc<Mutex<SenderState>>,
}

/// Settings of a multicast group beyond its spec.
#[derive(Clone, Debug)]
pub struct MulticastConfig {
    /// Bound on set-up steps (connecting, looking up regions, the start barrier).
    pub setup_timeout: Duration,
    /// The SST's heartbeat and failure-detection settings.
    pub sst: SstConfig,
    /// Set by the owner to abandon a set-up in progress (the member is shutting down).
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Members known to have failed since the view was decided: the view starts with their
    /// rows frozen, without waiting for them up to `setup_timeout` (its change protocol then
    /// removes them).
    pub failed_before_start: Vec<NodeId>,
}

impl Default for MulticastConfig {
    fn default() -> Self {
        Self {
            setup_timeout: Duration::from_secs(30),
            sst: SstConfig::default(),
            cancel: None,
            failed_before_start: Vec::new(),
        }
    }
}

/// Hands completed RDMC messages to the core loop.
struct RdmcHandler {
    subgroup: usize,
    sender_rank: usize,
    inbox: Inbox,
    sst: Arc<Sst>,
}

impl Handler for RdmcHandler {
    fn on_message(&self, message: derecho_rdmc::Message) {
        lock(&self.inbox).push_back((self.subgroup, self.sender_rank, message));
        self.sst.notify();
    }

    fn on_failure(&self, error: &RdmcError) {
        tracing::warn!(subgroup = self.subgroup, %error, "RDMC group of this view failed");
        self.sst.notify();
    }
}

fn sst_region(vid: u64) -> RegionId {
    RegionId(0x5353_5400_0000_0000 | (vid & 0xffff_ffff))
}

/// Bits of an RDMC group id that tell the groups of one view apart.
const RDMC_COLUMN_BITS: u32 = 24;

/// The RDMC group id of the sender whose per-sender SST column is `column` in view `vid`.
/// Columns are unique among the subgroups a node belongs to (see [`spec`]), so ids are unique
/// within a view; the view's low 32 bits sit above them (as in the SST's region id), so no two
/// views closer than 2^32 apart share an id. The result fits [`derecho_rdmc::MAX_GROUP_ID`].
fn rdmc_group_id(vid: u64, column: usize) -> Result<u64, MulticastError> {
    let column = u64::try_from(column)
        .ok()
        .filter(|c| *c < 1 << RDMC_COLUMN_BITS)
        .ok_or(MulticastError::SenderColumn { column })?;
    Ok(((vid & 0xffff_ffff) << RDMC_COLUMN_BITS) | column)
}

/// A view's multicast after [`MulticastGroup::prepare`]: regions registered, nobody contacted.
pub struct Prepared {
    spec: MulticastSpec,
    config: MulticastConfig,
    sst: Arc<Sst>,
    cols: Columns,
    rdmc: PreparedSet,
    engine: Engine,
    senders: BTreeMap<usize, SendSide>,
}

/// A view's multicast after [`Prepared::connect`]: linked, row pushed, waiting at the start
/// barrier for the other members.
pub struct Connecting {
    spec: MulticastSpec,
    sst: Arc<Sst>,
    cols: Columns,
    rdmc: GroupSet,
    engine: Engine,
    senders: BTreeMap<usize, SendSide>,
    ticket: derecho_sst::BarrierTicket,
}

/// One view's multicast on this node.
pub struct MulticastGroup {
    spec: MulticastSpec,
    sst: Arc<Sst>,
    cols: Columns,
    rdmc: Arc<GroupSet>,
    engine: Arc<Mutex<Engine>>,
    senders: BTreeMap<usize, SendSide>,
    core: Mutex<Option<CoreLoop>>,
    detector: Mutex<Option<FailureDetector>>,
}

impl std::fmt::Debug for MulticastGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MulticastGroup")
            .field("vid", &self.spec.vid)
            .field("my_rank", &self.spec.my_rank)
            .finish_non_exhaustive()
    }
}

impl MulticastGroup {
    /// Builds the view's multicast with every other member and starts it on threads: prepare,
    /// connect, wait (bounded) at the start barrier, then run the core loop, heartbeats and
    /// RDMC engines.
    pub fn new(
        fabric: Arc<dyn Fabric>,
        spec: MulticastSpec,
        config: MulticastConfig,
        deliver: DeliveryHandler,
    ) -> Result<Self, MulticastError> {
        Self::new_with(fabric, spec, config, deliver, |_| Ok(()))
    }

    /// Like [`MulticastGroup::new`], running `before_start` once every member has reached the
    /// start barrier and this member's heartbeats run, but before its core loop delivers
    /// anything: the view manager transfers replica state there. However long that takes, the
    /// others see this member alive and at the barrier, and only its shards wait for it.
    pub fn new_with<E: From<MulticastError>>(
        fabric: Arc<dyn Fabric>,
        spec: MulticastSpec,
        config: MulticastConfig,
        deliver: DeliveryHandler,
        before_start: impl FnOnce(&Arc<Sst>) -> Result<(), E>,
    ) -> Result<Self, E> {
        let timeout = config.setup_timeout;
        let cancel = config.cancel.clone();
        let connecting = Self::prepare(fabric, spec, config, deliver)?.connect(true)?;
        let deadline = Instant::now() + timeout;
        loop {
            let seen = connecting.sst.doorbell().epoch();
            if connecting.ready() {
                break;
            }
            if cancel
                .as_ref()
                .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
            {
                return Err(MulticastError::Cancelled.into());
            }
            // A member that fails before reaching the barrier is frozen and no longer waited
            // for (`ready`); the view starts without it and changes at once.
            let now = Instant::now();
            if now >= deadline {
                connecting.give_up_on_missing(timeout);
                break;
            }
            connecting
                .sst
                .doorbell()
                .wait(seen, (deadline - now).min(Duration::from_millis(50)));
        }
        connecting.start_with(true, before_start)
    }

    /// Phase one: registers the view's SST and RDMC regions and initialises this node's row.
    /// Talks to nobody.
    pub fn prepare(
        fabric: Arc<dyn Fabric>,
        spec: MulticastSpec,
        config: MulticastConfig,
        deliver: DeliveryHandler,
    ) -> Result<Prepared, MulticastError> {
        spec.validate()?;
        let mut b = SchemaBuilder::new();
        let cols = Columns::declare(&spec, &mut b)?;
        let schema = b.build()?;
        let members: Vec<Member> = spec
            .members
            .iter()
            .map(|(id, a)| Member::new(*id, *a))
            .collect();
        let sst = Sst::prepare(
            Arc::clone(&fabric),
            &members,
            spec.my_rank,
            schema,
            sst_region(spec.vid),
            config.sst.clone(),
        )?;
        for sg in 0..cols.seq_num.len() {
            sst.set_elem(cols.seq_num, sg, -1);
            sst.set_elem(cols.delivered_num, sg, -1);
            sst.set_elem(cols.index, sg, -1);
            sst.set_elem(cols.persisted_num, sg, -1);
        }
        for r in 0..cols.num_received.len() {
            sst.set_elem(cols.num_received, r, -1);
            sst.set_elem(cols.num_received_sst, r, -1);
        }
        let inbox: Inbox = Arc::new(Mutex::new(VecDeque::new()));
        let me = spec.my_id();
        let mut runs = Vec::new();
        let mut senders = BTreeMap::new();
        let mut plans = Vec::new();
        let mut handlers: BTreeMap<GroupKey, Arc<dyn Handler>> = BTreeMap::new();
        for sg in 0..spec.subgroups.len() {
            let Some((shard, shard_spec)) = spec.my_shard(sg) else {
                continue;
            };
            let rank_of = |id: &NodeId| spec.members.iter().position(|m| m.0 == *id);
            let member_ranks: Vec<usize> = shard_spec.members.iter().filter_map(rank_of).collect();
            let sender_ranks: Vec<usize> = shard_spec.senders.iter().filter_map(rank_of).collect();
            let info = Arc::new(ShardInfo {
                subgroup: sg,
                shard,
                spec: shard_spec.clone(),
                rr: RoundRobin::new(shard_spec.senders.len()),
                member_ranks,
                sender_ranks,
                recv_off: cols.received_offset[sg],
                ring: cols.ring[sg],
            });
            let sender = shard_spec
                .senders
                .iter()
                .position(|x| *x == me)
                .map(|sender_rank| {
                    Arc::new(Mutex::new(SenderState {
                        sender_rank,
                        next_index: 0,
                        filled: -1,
                        published: -1,
                        null_target: 0,
                        rdmc_sent: VecDeque::new(),
                        wedged: false,
                    }))
                });
            if let Some(state) = &sender {
                senders.insert(
                    sg,
                    SendSide {
                        info: Arc::clone(&info),
                        state: Arc::clone(state),
                    },
                );
            }
            if shard_spec.sizes.uses_rdmc() {
                let sizes = &shard_spec.sizes;
                let mut template = GroupSpec::new(
                    0,
                    Vec::new(),
                    0,
                    sizes.block_size,
                    sizes.max_payload + HEADER_LEN,
                    sizes.window,
                );
                template.algorithm = sizes.algorithm;
                template.timeout = config.setup_timeout;
                // Credits and blocks wake the same doorbell that blocked senders and the core
                // loop park on.
                template.doorbell = Some(Arc::clone(sst.doorbell()));
                let shard_members: Vec<(NodeId, std::net::SocketAddr)> = shard_spec
                    .members
                    .iter()
                    .filter_map(|id| spec.members.iter().find(|m| m.0 == *id).copied())
                    .collect();
                for (sender_rank, sender_id) in shard_spec.senders.iter().enumerate() {
                    let key = GroupKey {
                        subgroup: sg as u32,
                        sender: *sender_id,
                    };
                    let id = rdmc_group_id(spec.vid, cols.received_offset[sg] + sender_rank)?;
                    plans.push(GroupPlan::for_sender(
                        key,
                        id,
                        &shard_members,
                        me,
                        &template,
                    )?);
                    handlers.insert(
                        key,
                        Arc::new(RdmcHandler {
                            subgroup: sg,
                            sender_rank,
                            inbox: Arc::clone(&inbox),
                            sst: Arc::clone(&sst),
                        }),
                    );
                }
            }
            runs.push(ShardRun::new(info, sender));
        }
        let rdmc = GroupSet::prepare(&fabric, plans, |k| {
            handlers
                .get(&k)
                .cloned()
                .unwrap_or_else(|| Arc::new(Discard) as Arc<dyn Handler>)
        })?;
        let engine = Engine {
            cols: cols.clone(),
            shards: runs,
            inbox,
            deliver,
            my_id: me,
            broken: None,
            wedged: false,
            frozen: false,
        };
        Ok(Prepared {
            spec,
            config,
            sst,
            cols,
            rdmc,
            engine,
            senders,
        })
    }
}

/// Handler for groups the plan did not expect (never used: every planned key has one).
struct Discard;

impl Handler for Discard {
    fn on_message(&self, _message: derecho_rdmc::Message) {}
    fn on_failure(&self, _error: &RdmcError) {}
}

impl Prepared {
    /// Phase two: links to every member, looks up their regions, pushes this node's row and
    /// enters the start barrier. With `threads` the RDMC engines get their own threads.
    pub fn connect(self, threads: bool) -> Result<Connecting, MulticastError> {
        let Prepared {
            spec,
            config,
            sst,
            cols,
            rdmc,
            engine,
            senders,
        } = self;
        // A member that cannot be reached is frozen instead of failing the set-up: the view
        // starts without it and its change protocol removes it, with the agreement of the
        // others (the same way as a failure after the start).
        let unreachable =
            match sst.connect_or_freeze(config.setup_timeout, &config.failed_before_start) {
                Ok(failed) => failed,
                Err(e) => {
                    rdmc.cancel();
                    return Err(e.into());
                }
            };
        let rdmc = if unreachable.is_empty() {
            match rdmc.connect(threads) {
                Ok(set) => Some(set),
                Err(RdmcError::Setup { node, reason }) if node != spec.my_id() => {
                    if let Some(rank) = sst.rank_of(node) {
                        sst.freeze(rank, &format!("RDMC set-up failed: {reason}"));
                    }
                    None
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            rdmc.cancel();
            None
        };
        // Without RDMC groups (a member is frozen) the view can only end; `start` stops its
        // senders.
        let rdmc = rdmc.unwrap_or_default();
        sst.push_row()?;
        let ticket = sst.barrier_enter()?;
        Ok(Connecting {
            spec,
            sst,
            cols,
            rdmc,
            engine,
            senders,
            ticket,
        })
    }
}

impl Connecting {
    /// Whether every live member has reached the start barrier (so every live row is
    /// initialised). Frozen members are not waited for: the view's change protocol removes
    /// them.
    pub fn ready(&self) -> bool {
        self.sst.barrier_waiting(&self.ticket).is_empty()
    }

    /// Stops waiting at the start barrier for the live members that have not reached it after
    /// `waited`: they are alive but not taking part (stopped, stuck, or cut off), so their rows
    /// are frozen as failed, and the view starts and its change protocol removes them with the
    /// others' agreement. Returns them.
    pub fn give_up_on_missing(&self, waited: Duration) -> Vec<NodeId> {
        let missing = self.sst.barrier_waiting(&self.ticket);
        for id in &missing {
            if let Some(rank) = self.sst.rank_of(*id) {
                self.sst.freeze(
                    rank,
                    &format!("did not reach the start barrier within {waited:?}"),
                );
            }
        }
        missing
    }

    /// The view's SST (a simulation steps it while waiting for [`Connecting::ready`]).
    pub fn sst(&self) -> &Arc<Sst> {
        &self.sst
    }

    /// Phase three: installs the engine in the core loop. With `threads` the core loop and the
    /// heartbeats run on their own threads; otherwise the caller polls
    /// ([`MulticastGroup::poll`]).
    pub fn start(self, threads: bool) -> Result<MulticastGroup, MulticastError> {
        self.start_with(threads, |_| Ok(()))
    }

    /// Like [`Connecting::start`], running `before` after the heartbeats start and before the
    /// core loop does (see [`MulticastGroup::new_with`]). If `before` fails, the group is
    /// stopped and its error returned.
    pub fn start_with<E: From<MulticastError>>(
        self,
        threads: bool,
        before: impl FnOnce(&Arc<Sst>) -> Result<(), E>,
    ) -> Result<MulticastGroup, E> {
        let Connecting {
            spec,
            sst,
            cols,
            rdmc,
            engine,
            senders,
            ticket,
        } = self;
        // Members that did not reach the start barrier are frozen; their rows may never have
        // been pushed (zeros would read as "received message 0"), so they read as members that
        // did nothing. A view that starts with a frozen member (absent, or its RDMC set-up
        // failed) can only end: nobody sends in it.
        for id in sst.barrier_missing(&ticket) {
            if let Some(rank) = sst.rank_of(id) {
                debug_assert!(sst.is_frozen(rank), "started without a live member");
                sst.reset_row_to_mine(rank).map_err(MulticastError::from)?;
            }
        }
        let frozen = sst.frozen_ranks();
        if !frozen.is_empty() {
            tracing::warn!(vid = spec.vid, ?frozen, "the view starts without members that failed during its set-up; it will change at once");
            for side in senders.values() {
                lock(&side.state).wedged = true;
            }
        }
        let engine = Arc::new(Mutex::new(engine));
        let (condition, runner) = (Arc::clone(&engine), Arc::clone(&engine));
        sst.predicates()
            .recurrent(
                move |t| lock(&condition).has_work(t),
                move |t| lock(&runner).run(t),
            )
            .map_err(MulticastError::from)?;
        let group = MulticastGroup {
            spec,
            sst: Arc::clone(&sst),
            cols,
            rdmc: Arc::new(rdmc),
            engine,
            senders,
            core: Mutex::new(None),
            detector: Mutex::new(None),
        };
        if threads {
            *lock(&group.detector) =
                Some(FailureDetector::start(Arc::clone(&sst)).map_err(MulticastError::from)?);
        }
        // On failure the group is dropped here, which stops the heartbeats.
        before(&sst)?;
        if threads {
            *lock(&group.core) = Some(
                CoreLoop::start(Arc::clone(&sst), CoreLoopConfig::default())
                    .map_err(MulticastError::from)?,
            );
        }
        sst.notify();
        Ok(group)
    }
}

impl MulticastGroup {
    /// The view's SST.
    pub fn sst(&self) -> &Arc<Sst> {
        &self.sst
    }

    /// The spec this group was built from.
    pub fn spec(&self) -> &MulticastSpec {
        &self.spec
    }

    fn side(&self, subgroup: usize) -> Result<&SendSide, MulticastError> {
        let node = self.spec.my_id();
        match self.senders.get(&subgroup) {
            Some(s) => Ok(s),
            None if self.spec.my_shard(subgroup).is_some() => {
                Err(MulticastError::NotSender { node, subgroup })
            }
            None => Err(MulticastError::NotMember { node, subgroup }),
        }
    }

    /// Queues `payload` as my next message in `subgroup` if the window and a buffer allow it
    /// now; `Ok(None)` if not. Returns the message's index.
    pub fn try_send(&self, subgroup: usize, payload: &[u8]) -> Result<Option<i64>, MulticastError> {
        self.try_send_flags(subgroup, payload, 0)
    }

    /// Like [`MulticastGroup::try_send`] with header flags (bit 0 marks an RPC invocation).
    pub fn try_send_flags(
        &self,
        subgroup: usize,
        payload: &[u8],
        flags: u64,
    ) -> Result<Option<i64>, MulticastError> {
        let side = self.side(subgroup)?;
        let info = &side.info;
        let sizes = &info.spec.sizes;
        if payload.len() > sizes.max_payload {
            return Err(MulticastError::TooLarge {
                subgroup,
                len: payload.len(),
                max: sizes.max_payload,
            });
        }
        let mut st = lock(&side.state);
        if st.wedged {
            return Err(MulticastError::Wedged { subgroup });
        }
        let index = st.next_index;
        if !info.window_allows(&self.sst, &self.cols, index, st.sender_rank) {
            return Ok(None);
        }
        let header = Header {
            index,
            len: payload.len(),
            nulls: 0,
            flags,
        }
        .encode();
        if payload.len() <= sizes.max_smc_payload {
            let k = st.filled + 1;
            if !info.slot_free(&self.sst, &self.cols, k, st.sender_rank) {
                return Ok(None);
            }
            let at = info.slot_at(k);
            self.sst.write_bytes(self.cols.slots, at, &header)?;
            self.sst
                .write_bytes(self.cols.slots, at + HEADER_LEN, payload)?;
            st.filled = k;
            st.next_index += 1;
            drop(st);
            self.sst.notify();
            return Ok(Some(index));
        }
        let key = GroupKey {
            subgroup: subgroup as u32,
            sender: self.spec.my_id(),
        };
        let group = self
            .rdmc
            .get(key)
            .ok_or(MulticastError::NoRdmcGroup { subgroup })?;
        let sent = match group.try_send_with(HEADER_LEN + payload.len(), |region, off| {
            region.write(off, &header)?;
            region.write(off + HEADER_LEN, payload)
        }) {
            Ok(s) => s,
            // A member of the shard failed: this view is about to end; the message goes in the
            // next one.
            Err(RdmcError::PeerFailed { .. } | RdmcError::Aborted(_)) => {
                return Err(MulticastError::Wedged { subgroup });
            }
            Err(e) => return Err(e.into()),
        };
        let Some(rdmc_seq) = sent else {
            return Ok(None);
        };
        st.rdmc_sent
            .push_back((index, rdmc_seq, payload.len(), flags));
        st.next_index += 1;
        Ok(Some(index))
    }

    /// Sends `payload` in `subgroup`, waiting up to `timeout` for window space.
    pub fn send(
        &self,
        subgroup: usize,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<i64, MulticastError> {
        self.send_flags(subgroup, payload, 0, timeout)
    }

    /// Like [`MulticastGroup::send`] with header flags.
    pub fn send_flags(
        &self,
        subgroup: usize,
        payload: &[u8],
        flags: u64,
        timeout: Duration,
    ) -> Result<i64, MulticastError> {
        // Remote progress rings the SST doorbell; RDMC credits do not, hence the short naps.
        self.sst
            .doorbell()
            .retry(timeout, Duration::from_millis(2), || {
                self.try_send_flags(subgroup, payload, flags)
            })?
            .ok_or(MulticastError::WindowFull {
                subgroup,
                after: timeout,
            })
    }

    /// The doorbell this view's core loop parks on: ringing it makes the loop look at its
    /// predicates (and the change protocol at its join queue) at once.
    pub(crate) fn doorbell(&self) -> Arc<derecho_fabric::Doorbell> {
        Arc::clone(self.sst.doorbell())
    }

    /// Starts the view-change protocol of this view on its core loop: suspicions, proposals,
    /// wedging and the ragged trim (see [`crate::gms::change`]); on the leader, `joins` holds
    /// the nodes waiting to join, proposed with the next change. `on_outcome` is called once,
    /// on the core loop's thread, when the view has ended on this member; it must not block.
    pub(crate) fn install_change_protocol(
        &self,
        partition_safety: bool,
        joins: Option<crate::gms::change::JoinQueue>,
        mut on_outcome: Box<dyn FnMut(crate::gms::change::Outcome) + Send>,
        on_trim: Option<TrimLog>,
    ) -> Result<(), MulticastError> {
        let shards = lock(&self.engine)
            .shards
            .iter()
            .map(|s| crate::gms::change::TrimShard {
                subgroup: s.info.subgroup,
                member_ranks: s.info.member_ranks.clone(),
                senders: s.info.sender_ranks.len(),
                recv_off: s.info.recv_off,
            })
            .collect();
        let senders = self
            .senders
            .values()
            .map(|s| Arc::clone(&s.state))
            .collect();
        let rdmc = Arc::clone(&self.rdmc);
        let me = self.spec.my_id();
        let read_rdmc = Arc::new(move |subgroup: usize, seq: u64, len: usize| {
            let key = GroupKey {
                subgroup: subgroup as u32,
                sender: me,
            };
            let mut v = vec![0u8; len];
            rdmc.get(key)?.read_sent(seq, HEADER_LEN, &mut v).ok()?;
            Some(v)
        });
        let ids = self.spec.members.iter().map(|m| m.0).collect();
        let protocol = crate::gms::change::ChangeProtocol::new(
            self.cols.clone(),
            ids,
            shards,
            partition_safety,
            joins,
        );
        let mut end = crate::gms::change::EngineEnd {
            engine: Arc::clone(&self.engine),
            senders,
            read_rdmc,
            on_trim,
        };
        let protocol = Arc::new(Mutex::new(protocol));
        let (cond, trig) = (Arc::clone(&protocol), protocol);
        self.sst.predicates().recurrent(
            move |t| lock(&cond).active(t),
            move |t| {
                if let Some(outcome) = lock(&trig).step(t, &mut end) {
                    on_outcome(outcome);
                }
            },
        )?;
        self.sst.notify();
        Ok(())
    }

    /// Announces a graceful departure: sets `rip` and suspects itself, and pushes both to every
    /// member, waiting up to `timeout` for the writes to land. The others then remove this
    /// member as they would a failed one, without counting it against the majority.
    pub fn announce_leave(&self, timeout: Duration) -> Result<(), MulticastError> {
        let g = &self.cols.gms;
        self.mark_leaving();
        // rip first: a member that sees the self-suspicion must already see the departure.
        self.sst
            .push_with_completion(g.rip, derecho_sst::Targets::All, timeout)?;
        self.sst
            .push_with_completion(g.suspected.range(), derecho_sst::Targets::All, timeout)?;
        Ok(())
    }

    /// Like [`Self::announce_leave`], but does not wait for the writes to land: for callers
    /// that drive the network themselves (the sim backend), which must keep this member polling
    /// until the others have seen the departure.
    pub fn begin_leave(&self) -> Result<(), MulticastError> {
        let g = &self.cols.gms;
        self.mark_leaving();
        self.sst.push(g.rip)?;
        self.sst.push(g.suspected.range())?;
        Ok(())
    }

    fn mark_leaving(&self) {
        let g = &self.cols.gms;
        self.sst.set(g.rip, true);
        self.sst.set_elem(g.suspected, self.sst.my_rank(), true);
    }

    /// How many messages of `sender` (a node id) in `subgroup` have arrived here without a
    /// gap in this view, as this member publishes it (`num_received` + 1); `None` if this
    /// member is not in that subgroup or `sender` does not send in its shard. A monitoring
    /// and testing aid: a message is delivered only once this count covers it on every live
    /// member of the shard.
    pub fn received_from(&self, subgroup: usize, sender: NodeId) -> Option<i64> {
        let (_, shard) = self.spec.my_shard(subgroup)?;
        let rank = shard.senders.iter().position(|s| *s == sender)?;
        let col = self.cols.received_offset.get(subgroup)? + rank;
        Some(
            self.sst
                .get_elem(self.cols.num_received, self.sst.my_rank(), col)
                + 1,
        )
    }

    /// Publishes to the members of my shard of `subgroup` that my replica is on disk up to
    /// `version` (`vid << 32 | seq`). Versions only move forward: an older one is ignored.
    pub fn publish_persisted(&self, subgroup: usize, version: i64) -> Result<(), MulticastError> {
        let not_member = || MulticastError::NotMember {
            node: self.spec.my_id(),
            subgroup,
        };
        let mut ranks = self.shard_ranks(subgroup).ok_or_else(not_member)?;
        let field = self
            .cols
            .persisted_num
            .elem(subgroup)
            .ok_or_else(not_member)?;
        let me = self.sst.my_rank();
        if version <= self.sst.get_elem(self.cols.persisted_num, me, subgroup) {
            return Ok(());
        }
        self.sst
            .set_elem(self.cols.persisted_num, subgroup, version);
        ranks.retain(|r| *r != me);
        self.sst.push_to(field.range(), &ranks)?;
        self.sst.notify();
        Ok(())
    }

    /// The persistence frontier of my shard of `subgroup` in this view: the newest version
    /// every member of the shard has published as on disk (the minimum over the shard), or
    /// `None` if this member is not in the subgroup.
    pub fn persisted_frontier(&self, subgroup: usize) -> Option<i64> {
        self.shard_ranks(subgroup)?
            .into_iter()
            .map(|r| self.sst.get_elem(self.cols.persisted_num, r, subgroup))
            .min()
    }

    /// The table ranks of the members of my shard of `subgroup` (`None` if I am not in it).
    fn shard_ranks(&self, subgroup: usize) -> Option<Vec<usize>> {
        let (_, shard) = self.spec.my_shard(subgroup)?;
        Some(
            shard
                .members
                .iter()
                .filter_map(|id| self.spec.members.iter().position(|m| m.0 == *id))
                .collect(),
        )
    }

    /// Whether this member has wedged the view (a view change is under way here: it sends and
    /// delivers nothing more in this view until the ragged trim).
    pub fn wedged(&self) -> bool {
        lock(&self.engine).wedged
    }

    /// Runs the core loop's predicates and the RDMC engines once (for callers that drive the
    /// group themselves). Returns whether anything happened.
    pub fn poll(&self) -> bool {
        let fired = self.sst.step() > 0;
        self.rdmc.poll_all() || fired
    }

    /// Stops the threads (core loop, heartbeats); the view's regions go with the group.
    /// Senders blocked in this view return [`MulticastError::Wedged`].
    pub fn stop(&self) {
        for side in self.senders.values() {
            lock(&side.state).wedged = true;
        }
        self.sst.notify();
        if let Some(core) = lock(&self.core).take() {
            core.stop();
        }
        if let Some(d) = lock(&self.detector).take() {
            d.stop();
        }
    }
}

impl Drop for MulticastGroup {
    fn drop(&mut self) {
        self.stop();
        self.sst.predicates().clear();
    }
}
