//! The table: one row per member in one fabric region, and local access to it.
//!
//! # Layout
//!
//! An [`Sst`] holds `members × row_len` bytes in one region registered under the [`RegionId`]
//! its owner chooses (one id per view, so every view's table has its own name). Row `r` belongs
//! to the member of view rank `r` and sits at `r × row_len` in every process. A second, small
//! region ([`Sst::barrier_region_id`]) holds one word per member for
//! [`Sst::sync_with_members`]. Both regions ring one [`Doorbell`], the table's, which the core
//! loop parks on.
//!
//! # Who writes what
//!
//! A process writes only its own row ([`Sst::set`], [`Sst::set_elem`], [`Sst::write_bytes`]):
//! scalars are stored with release ordering, one atomic word each. The fabric writes the other
//! rows when their owners push. Reads of any row are local ([`Sst::get`], [`Sst::get_elem`],
//! [`Sst::read_bytes`]) and use acquire ordering. There are no data races in Rust's sense: every
//! access to table memory is atomic (see [`derecho_fabric::region`]).
//!
//! # Reading a byte area written by a peer
//!
//! A byte area (an SMC slot, say) is larger than a word, so nothing makes one push of it appear
//! at once: a reader racing with the write may see part of it. The rule is the one the original
//! system adopted after its issue #47 — **payload first, guard last, in separate pushes**:
//!
//! 1. the owner fills the area ([`Sst::write_bytes`]) and pushes it;
//! 2. then it sets a counter field (the guard) and pushes that field in a *second* push;
//! 3. a reader loads the counter with [`Sst::get`] (acquire) and, only if it moved, reads the
//!    area with [`Sst::read_bytes`].
//!
//! The fabric applies writes of one link in issue order, each behind a release fence, so a
//! reader that sees the new counter sees every byte of the earlier push. What the guard does not
//! protect is *later* pushes into the same area: the owner must not reuse it until the reader has
//! said (in its own row) that it is done with it — the multicast window does exactly this. Never
//! push payload and guard in one range: within one write no byte order is promised.
//!
//! This module owns the memory and the setup handshake; pushes, predicates, failure handling and
//! the barrier are in their own modules and add methods to [`Sst`].

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use derecho_fabric::{
    Doorbell, Fabric, Link, NodeId, Region, RegionId, RegionSpec, RemoteRegion, SubscriptionId,
};

use crate::error::{ConfigError, MembersError, SchemaError, SstError};
use crate::failure::FailureLog;
use crate::predicates::Predicates;
use crate::schema::{ArrayField, BytesField, Field, Schema, Word, WORD};

/// Most members a table accepts (like the original's `max_node_id` bound on links).
pub const MAX_MEMBERS: usize = 1024;

/// One member of the view the table is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's node id.
    pub id: NodeId,
    /// Where its fabric listens (ignored by backends without addresses, such as sim).
    pub addr: SocketAddr,
}

impl Member {
    /// A member with id `id` reachable at `addr`.
    pub fn new(id: NodeId, addr: SocketAddr) -> Self {
        Self { id, addr }
    }
}

/// Settings of a table: failure detection and bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SstConfig {
    /// `heartbeat_ms`: period of the failure detector's heartbeats (default 100 ms).
    pub heartbeat: Duration,
    /// `sst_poll_cq_timeout_ms`: how long a write-with-completion may stay unacknowledged before
    /// its target is frozen and reported (default 2000 ms).
    pub completion_timeout: Duration,
    /// Bound on registered predicates (default 4096).
    pub max_predicates: usize,
}

impl Default for SstConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            completion_timeout: Duration::from_millis(2000),
            max_predicates: 4096,
        }
    }
}

impl SstConfig {
    /// Sets `heartbeat_ms`.
    pub fn with_heartbeat_ms(mut self, ms: u64) -> Self {
        self.heartbeat = Duration::from_millis(ms);
        self
    }

    /// Sets `sst_poll_cq_timeout_ms`.
    pub fn with_poll_cq_timeout_ms(mut self, ms: u64) -> Self {
        self.completion_timeout = Duration::from_millis(ms);
        self
    }

    /// Sets the bound on registered predicates.
    pub fn with_max_predicates(mut self, n: usize) -> Self {
        self.max_predicates = n;
        self
    }

    fn validate(&self) -> Result<(), SstError> {
        if self.heartbeat.is_zero() || self.heartbeat > Duration::from_secs(3600) {
            return Err(SstError::Config(ConfigError::Heartbeat(self.heartbeat)));
        }
        if self.completion_timeout.is_zero() || self.completion_timeout > Duration::from_secs(3600)
        {
            return Err(SstError::Config(ConfigError::CompletionTimeout(
                self.completion_timeout,
            )));
        }
        if self.max_predicates == 0 || self.max_predicates > 1 << 20 {
            return Err(SstError::Config(ConfigError::MaxPredicates(
                self.max_predicates,
            )));
        }
        Ok(())
    }
}

/// What this node needs to write into one peer's copy of the table.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) link: Arc<dyn Link>,
    pub(crate) table: RemoteRegion,
    pub(crate) barrier: RemoteRegion,
}

/// A shared state table: one row per member, see the module docs.
///
/// Created with [`Sst::new`] (or [`Sst::prepare`] then [`Sst::connect`]) and shared as
/// `Arc<Sst>` between the application, the [`crate::CoreLoop`] and the
/// [`crate::FailureDetector`].
pub struct Sst {
    pub(crate) fabric: Arc<dyn Fabric>,
    pub(crate) schema: Schema,
    pub(crate) row_len: usize,
    pub(crate) members: Vec<Member>,
    pub(crate) my_rank: usize,
    pub(crate) region_id: RegionId,
    pub(crate) table: Arc<Region>,
    pub(crate) barrier: Arc<Region>,
    pub(crate) doorbell: Arc<Doorbell>,
    /// Per rank; `None` at my rank. Set once by [`Sst::connect`].
    pub(crate) peers: OnceLock<Vec<Option<Peer>>>,
    pub(crate) frozen: Vec<AtomicBool>,
    pub(crate) failures: Mutex<FailureLog>,
    pub(crate) predicates: Predicates,
    pub(crate) barrier_epoch: Mutex<u64>,
    pub(crate) config: SstConfig,
    subscription: Mutex<Option<SubscriptionId>>,
}

impl std::fmt::Debug for Sst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sst")
            .field("region", &self.region_id)
            .field("my_rank", &self.my_rank)
            .field("members", &self.members.len())
            .field("row_len", &self.row_len)
            .finish_non_exhaustive()
    }
}

impl Sst {
    /// The id of the barrier region paired with table region `table`: the same id with the top
    /// bit flipped. Keep the top bit of table ids clear so the two never collide.
    pub const fn barrier_region_id(table: RegionId) -> RegionId {
        RegionId(table.0 ^ (1 << 63))
    }

    /// Builds the table and connects it to every other member: [`Sst::prepare`] followed by
    /// [`Sst::connect`], with the default [`SstConfig`]. Every member must call it (or the
    /// two-step form) with the same members, schema and region id.
    pub fn new(
        fabric: Arc<dyn Fabric>,
        members: &[Member],
        my_rank: usize,
        schema: Schema,
        region_id: RegionId,
        timeout: Duration,
    ) -> Result<Arc<Sst>, SstError> {
        let sst = Self::prepare(
            fabric,
            members,
            my_rank,
            schema,
            region_id,
            SstConfig::default(),
        )?;
        sst.connect(timeout)?;
        Ok(sst)
    }

    /// Registers the table and barrier regions and subscribes to the fabric's link failures,
    /// without talking to any peer. Rows start zeroed; set this node's initial values before the
    /// first push. Pushes and barriers fail with [`SstError::NotConnected`] until [`Sst::connect`]
    /// has succeeded.
    pub fn prepare(
        fabric: Arc<dyn Fabric>,
        members: &[Member],
        my_rank: usize,
        schema: Schema,
        region_id: RegionId,
        config: SstConfig,
    ) -> Result<Arc<Sst>, SstError> {
        config.validate()?;
        validate_members(members, fabric.local_id(), my_rank)?;
        let row_len = schema.row_len();
        let table_len = row_len.checked_mul(members.len()).ok_or(SstError::Schema(
            SchemaError::TableTooLarge {
                row_len,
                members: members.len(),
            },
        ))?;
        let doorbell = Arc::new(Doorbell::new());
        let table = fabric
            .register(RegionSpec::new(region_id, table_len).with_doorbell(Arc::clone(&doorbell)))?;
        let barrier_spec =
            RegionSpec::new(Self::barrier_region_id(region_id), members.len() * WORD)
                .with_doorbell(Arc::clone(&doorbell));
        let barrier = match fabric.register(barrier_spec) {
            Ok(b) => b,
            Err(e) => {
                // Undo the first registration; the error to return is the one above.
                if let Err(d) = fabric.deregister(region_id) {
                    tracing::debug!(region = %region_id, error = %d, "cannot deregister");
                }
                return Err(e.into());
            }
        };
        let sst = Arc::new_cyclic(|me: &Weak<Sst>| {
            let weak = me.clone();
            let subscription = fabric.subscribe_failures(Arc::new(move |peer, reason: &str| {
                if let Some(sst) = weak.upgrade() {
                    sst.link_failed(peer, reason);
                }
            }));
            Sst {
                fabric: Arc::clone(&fabric),
                row_len,
                members: members.to_vec(),
                my_rank,
                region_id,
                table,
                barrier,
                doorbell,
                peers: OnceLock::new(),
                frozen: members.iter().map(|_| AtomicBool::new(false)).collect(),
                failures: Mutex::new(FailureLog::default()),
                predicates: Predicates::new(config.max_predicates),
                barrier_epoch: Mutex::new(0),
                subscription: Mutex::new(Some(subscription)),
                schema,
                config,
            }
        });
        tracing::debug!(
            region = %region_id,
            my_rank,
            members = members.len(),
            row_len,
            "sst prepared"
        );
        Ok(sst)
    }

    /// Connects a link to every other member (the higher id dials; both sides may call at once)
    /// and looks up each peer's table and barrier regions, waiting up to `timeout` in all. The
    /// peers' regions must have the same size as this node's (same schema, same members).
    pub fn connect(&self, timeout: Duration) -> Result<(), SstError> {
        self.connect_inner(timeout, None).map(|_| ())
    }

    /// Like [`Sst::connect`], but a member that cannot be reached (its link fails, or its
    /// table does not appear within the bound) does not fail the call: its row is frozen and
    /// reported, as if it had failed right after connecting, and the members that failed are
    /// returned. This is how a view whose members died after it was decided still starts, so
    /// that its change protocol removes them with the agreement of the others, instead of each
    /// member guessing alone. Each member gets at least `min(timeout, 1 s)` even when an
    /// earlier one used up the bound; members in `known_failed` are not tried at all.
    /// Disagreeing schemas are still an error.
    pub fn connect_or_freeze(
        &self,
        timeout: Duration,
        known_failed: &[NodeId],
    ) -> Result<Vec<NodeId>, SstError> {
        self.connect_inner(timeout, Some(known_failed))
    }

    fn connect_inner(
        &self,
        timeout: Duration,
        known_failed: Option<&[NodeId]>,
    ) -> Result<Vec<NodeId>, SstError> {
        let tolerate = known_failed.is_some();
        if self.peers.get().is_some() {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + timeout;
        let floor = if tolerate {
            timeout.min(Duration::from_secs(1))
        } else {
            Duration::ZERO
        };
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(floor)
        };
        let mut peers = Vec::with_capacity(self.members.len());
        let mut unreachable = Vec::new();
        for (rank, m) in self.members.iter().enumerate() {
            if rank == self.my_rank {
                peers.push(None);
                continue;
            }
            let setup = |source| SstError::Setup { peer: m.id, source };
            if known_failed.is_some_and(|f| f.contains(&m.id)) {
                unreachable.push((rank, "it failed after the view was decided".to_string()));
                peers.push(None);
                continue;
            }
            let found = self.fabric.connect(m.id, m.addr, left()).and_then(|link| {
                let table = link.remote_region(self.region_id, left())?;
                let barrier =
                    link.remote_region(Self::barrier_region_id(self.region_id), left())?;
                Ok((link, table, barrier))
            });
            let (link, table, barrier) = match found {
                Ok(f) => f,
                Err(e) if tolerate => {
                    unreachable.push((rank, e.to_string()));
                    peers.push(None);
                    continue;
                }
                Err(e) => return Err(setup(e)),
            };
            if table.len != self.table.len() || barrier.len != self.barrier.len() {
                return Err(SstError::Members(MembersError::TableMismatch {
                    peer: m.id,
                    peer_len: table.len,
                    local_len: self.table.len(),
                }));
            }
            peers.push(Some(Peer {
                link,
                table,
                barrier,
            }));
        }
        // A concurrent `connect` may have won; either result describes the same peers.
        let _ = self.peers.set(peers);
        let mut failed = Vec::new();
        for (rank, why) in unreachable {
            self.freeze(rank, &format!("unreachable while the view started: {why}"));
            failed.push(self.members[rank].id);
        }
        // Links that failed before the subscription saw them.
        for (rank, p) in self.peer_slots().iter().enumerate() {
            if let Some(reason) = p.as_ref().and_then(|p| p.link.failure()) {
                if self.freeze(rank, &reason) {
                    failed.push(self.members[rank].id);
                }
            }
        }
        tracing::debug!(region = %self.region_id, my_rank = self.my_rank, ?failed, "sst connected");
        Ok(failed)
    }

    pub(crate) fn peer_slots(&self) -> &[Option<Peer>] {
        self.peers.get().map_or(&[], Vec::as_slice)
    }

    /// Drives the fabric's progress, without blocking, on the link to every peer whose row is
    /// not frozen ([`derecho_fabric::Link::poll_progress`]); returns whether any link did
    /// something. A thread that spins on the table calls it between looks, so that on backends
    /// whose writes land only while this process makes progress the peers' pushes land at
    /// once. It does nothing on the other backends, and a parked thread needs no call.
    pub fn poll_links(&self) -> bool {
        let mut any = false;
        for (rank, p) in self.peer_slots().iter().enumerate() {
            if let Some(p) = p {
                if !self.is_frozen(rank) {
                    any |= p.link.poll_progress();
                }
            }
        }
        any
    }

    pub(crate) fn peer(&self, rank: usize) -> Option<&Peer> {
        self.peer_slots().get(rank).and_then(Option::as_ref)
    }

    /// Whether [`Sst::connect`] has completed.
    pub fn is_connected(&self) -> bool {
        self.peers.get().is_some()
    }

    /// The row layout.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The members, in rank order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Number of rows.
    pub fn num_members(&self) -> usize {
        self.members.len()
    }

    /// This node's rank (its row).
    pub fn my_rank(&self) -> usize {
        self.my_rank
    }

    /// This node's id.
    pub fn my_id(&self) -> NodeId {
        self.members[self.my_rank].id
    }

    /// The rank of node `id`, if it is a member.
    pub fn rank_of(&self, id: NodeId) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// The table's region id.
    pub fn region_id(&self) -> RegionId {
        self.region_id
    }

    /// The region holding the table (for diagnostics and zero-copy users such as RDMC).
    pub fn region(&self) -> &Arc<Region> {
        &self.table
    }

    /// The doorbell rung by every write that lands in the table, by pushes of this node and by
    /// [`Sst::notify`].
    pub fn doorbell(&self) -> &Arc<Doorbell> {
        &self.doorbell
    }

    /// The configuration.
    pub fn config(&self) -> &SstConfig {
        &self.config
    }

    #[inline]
    fn at(&self, rank: usize, offset: usize) -> usize {
        assert!(
            rank < self.members.len(),
            "rank {rank} out of range: the table has {} rows",
            self.members.len()
        );
        rank * self.row_len + offset
    }

    /// Reads `field` of row `rank` (acquire).
    ///
    /// # Panics
    /// If `rank` is not a member rank, or the field does not belong to this table's schema.
    #[inline]
    pub fn get<T: Word>(&self, field: Field<T>, rank: usize) -> T {
        T::from_word(self.table.load_u64(self.at(rank, field.offset())))
    }

    /// Reads element `i` of `array` in row `rank` (acquire).
    ///
    /// # Panics
    /// If `rank` or `i` is out of range.
    #[inline]
    pub fn get_elem<T: Word>(&self, array: ArrayField<T>, rank: usize, i: usize) -> T {
        assert!(i < array.len(), "element {i} of {array:?} out of range");
        T::from_word(
            self.table
                .load_u64(self.at(rank, array.offset() + i * WORD)),
        )
    }

    /// Writes `field` of my row (release). Peers see it after a push.
    #[inline]
    pub fn set<T: Word>(&self, field: Field<T>, value: T) {
        self.table
            .store_u64(self.at(self.my_rank, field.offset()), value.to_word());
    }

    /// Writes element `i` of `array` in my row (release).
    ///
    /// # Panics
    /// If `i` is out of range.
    #[inline]
    pub fn set_elem<T: Word>(&self, array: ArrayField<T>, i: usize, value: T) {
        assert!(i < array.len(), "element {i} of {array:?} out of range");
        self.table.store_u64(
            self.at(self.my_rank, array.offset() + i * WORD),
            value.to_word(),
        );
    }

    /// Overwrites row `rank` of this node's copy of the table with this node's own row. For a
    /// member frozen before it ever pushed its row (it failed, hung or was cut off while the
    /// table was being set up): its row then reads like a member that has done nothing yet,
    /// instead of as zeros, which would be taken for real values. Call it before the table's
    /// predicates run. Does nothing for my own rank or a rank out of range.
    ///
    /// # Panics
    /// If row `rank` is not frozen.
    pub fn reset_row_to_mine(&self, rank: usize) -> Result<(), SstError> {
        if rank == self.my_rank || rank >= self.members.len() {
            return Ok(());
        }
        // Rule: a live member's row is written only by its own pushes.
        assert!(
            self.is_frozen(rank),
            "row {rank} is live; it cannot be reset"
        );
        let mut row = vec![0u8; self.row_len];
        self.table.read(self.at(self.my_rank, 0), &mut row)?;
        self.table.write(self.at(rank, 0), &row)?;
        Ok(())
    }

    /// Copies `src` into my row's byte area `area` at `at` (behind a release fence).
    pub fn write_bytes(&self, area: BytesField, at: usize, src: &[u8]) -> Result<(), SstError> {
        check_area(area, at, src.len())?;
        self.table
            .write(self.at(self.my_rank, area.offset() + at), src)?;
        Ok(())
    }

    /// Copies bytes `[at, at + dst.len())` of byte area `area` in row `rank` into `dst`, then
    /// issues an acquire fence. See the module docs for when the bytes are complete.
    pub fn read_bytes(
        &self,
        area: BytesField,
        rank: usize,
        at: usize,
        dst: &mut [u8],
    ) -> Result<(), SstError> {
        check_area(area, at, dst.len())?;
        if rank >= self.members.len() {
            return Err(SstError::BadRank {
                rank,
                members: self.members.len(),
            });
        }
        self.table.read(self.at(rank, area.offset() + at), dst)?;
        Ok(())
    }

    /// Wakes the core loop (for example after [`Sst::set`] of a value a local predicate reads,
    /// without a push).
    pub fn notify(&self) {
        self.doorbell.ring();
    }

    /// Evaluates every predicate once and runs the triggers of those that fire. Returns the
    /// number of triggers run. See [`crate::predicates`] for the rules; [`crate::CoreLoop`] calls
    /// this on a thread, tests and the sim backend call it directly.
    pub fn step(&self) -> usize {
        self.predicates.evaluate(self)
    }

    /// The predicate set of this table.
    pub fn predicates(&self) -> &Predicates {
        &self.predicates
    }
}

impl Drop for Sst {
    fn drop(&mut self) {
        let sub = match self.subscription.get_mut() {
            Ok(s) => s.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(id) = sub {
            self.fabric.unsubscribe_failures(id);
        }
        // Nothing to do about a failure here (the fabric may be shutting down): only log it.
        for id in [self.region_id, Self::barrier_region_id(self.region_id)] {
            if let Err(e) = self.fabric.deregister(id) {
                tracing::debug!(region = %id, error = %e, "cannot deregister");
            }
        }
    }
}

fn check_area(area: BytesField, at: usize, len: usize) -> Result<(), SstError> {
    match at.checked_add(len) {
        Some(end) if end <= area.len() => Ok(()),
        _ => Err(SstError::OutOfRange {
            offset: at,
            len,
            limit: area.len(),
        }),
    }
}

fn validate_members(members: &[Member], me: NodeId, my_rank: usize) -> Result<(), SstError> {
    if members.is_empty() || members.len() > MAX_MEMBERS {
        return Err(SstError::Members(MembersError::Count {
            count: members.len(),
        }));
    }
    let Some(mine) = members.get(my_rank) else {
        return Err(SstError::BadRank {
            rank: my_rank,
            members: members.len(),
        });
    };
    if mine.id != me {
        return Err(SstError::Members(MembersError::NotThisNode {
            rank: my_rank,
            listed: mine.id,
            local: me,
        }));
    }
    for (i, m) in members.iter().enumerate() {
        if members[..i].iter().any(|o| o.id == m.id) {
            return Err(SstError::Members(MembersError::Duplicate { node: m.id }));
        }
    }
    Ok(())
}
