//! Sender-rooted RDMC groups: creation, sending, received messages and failure.
//!
//! A group has a fixed member list in rank order; rank 0 is the only sender. Every member
//! registers one region (see [`crate::layout`]) and links to every other member, so each one
//! learns directly of any member's failure. Messages are numbered 0, 1, 2, … and use the
//! group's `window` slots in turn; the sender reuses a slot only after every member (itself
//! included) has released the message that held it, which each member signals by writing its
//! released count into the sender's region.
//!
//! The transfer itself is a state machine ([`RdmcGroup::poll`]) that does every step it can
//! without waiting and returns. [`RdmcGroup::start`] runs it on a thread that parks on the
//! region's doorbell between bursts; tests under the sim backend call `poll` themselves.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use derecho_fabric::sync::lock;
use derecho_fabric::{
    Completion, Doorbell, Fabric, FabricError, Link, NodeId, Region, RegionSpec, RemoteRegion,
    SubscriptionId, WriteRequest,
};

use crate::layout::{self, Layout, MAX_BLOCKS_PER_MESSAGE, MAX_WINDOW};
use crate::schedule::{Algorithm, Schedule, ScheduleError};

/// Errors of RDMC groups.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RdmcError {
    /// The group description is unusable.
    #[error("invalid RDMC group: {0}")]
    InvalidSpec(GroupSpecError),
    /// The group's algorithm has no schedule for a message of this many blocks among these
    /// members.
    #[error("invalid RDMC group: cannot schedule message {seq}: {source}")]
    Schedule {
        /// The message.
        seq: u64,
        /// Why the schedule cannot be built.
        #[source]
        source: ScheduleError,
    },
    /// The engine has no link to a member it must send to.
    #[error("invalid RDMC group: no link to rank {rank}")]
    NoLink {
        /// The member's rank.
        rank: usize,
    },
    /// The engine thread could not be started.
    #[error("cannot start the engine thread: {source}")]
    Spawn {
        /// The OS error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Writing a message into the sender's buffer, or reading it back, failed.
    #[error("accessing the group's buffer: {source}")]
    Buffer {
        /// The fabric's error.
        #[source]
        source: Arc<FabricError>,
    },
    /// [`RdmcGroup::read_sent`] asked for a message whose slot holds another message by now.
    #[error("message {seq} is no longer in its slot")]
    NotInSlot {
        /// The message asked for.
        seq: u64,
    },
    /// [`RdmcGroup::read_sent`] asked for bytes beyond the end of the message.
    #[error("{len} bytes at offset {offset} are outside message {seq} of {size} bytes")]
    OutsideMessage {
        /// The message.
        seq: u64,
        /// Start of the bytes asked for.
        offset: usize,
        /// How many.
        len: usize,
        /// Size of the message.
        size: usize,
    },
    /// A message larger than the group's buffers.
    #[error("message of {len} bytes exceeds the group's {max}-byte limit")]
    TooLarge {
        /// Size of the message.
        len: usize,
        /// The group's `max_message_size`.
        max: usize,
    },
    /// Only rank 0 sends in a group.
    #[error("only the group's sender (rank 0) can send")]
    NotSender,
    /// No slot became free in time.
    #[error("no free message slot within {0:?}: receivers have not released earlier messages")]
    WindowFull(Duration),
    /// A member failed; the transfer is aborted on every surviving member.
    #[error("transfer aborted: node {node} failed ({reason})")]
    PeerFailed {
        /// The failed member.
        node: NodeId,
        /// What the fabric or the engine observed.
        reason: String,
    },
    /// The group was aborted by its owner.
    #[error("group aborted: {0}")]
    Aborted(String),
    /// Setting up the group with a member failed.
    #[error("setting up the group with node {node}: {reason}")]
    Setup {
        /// The member.
        node: NodeId,
        /// The fabric's error.
        reason: String,
    },
    /// A member broke the protocol (wrong block, wrong header).
    #[error("protocol violation seen from the group's traffic: {0}")]
    Protocol(ProtocolError),
}

/// How a [`GroupSpec`] is unusable (see [`RdmcError::InvalidSpec`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupSpecError {
    /// No members, or this member's rank is not a rank of the group.
    #[error("rank {rank} in a group of {members}")]
    RankOutOfRange {
        /// The spec's `my_rank`.
        rank: usize,
        /// Number of members.
        members: usize,
    },
    /// A node appears twice in the member list.
    #[error("node {node} appears twice in the member list")]
    DuplicateMember {
        /// The node.
        node: NodeId,
    },
    /// The group id is above [`MAX_GROUP_ID`](crate::layout::MAX_GROUP_ID).
    #[error("group id {group_id} is above {}", layout::MAX_GROUP_ID)]
    GroupIdTooLarge {
        /// The spec's group id.
        group_id: u64,
    },
    /// The block size is zero.
    #[error("block_size is 0")]
    ZeroBlockSize,
    /// The window is zero or above [`MAX_WINDOW`].
    #[error("window {window} is not in 1..={MAX_WINDOW}")]
    Window {
        /// The spec's window.
        window: usize,
    },
    /// The largest message needs more than [`MAX_BLOCKS_PER_MESSAGE`] blocks.
    #[error(
        "{max_message_size} bytes in blocks of {block_size} is more than \
         {MAX_BLOCKS_PER_MESSAGE} blocks"
    )]
    TooManyBlocks {
        /// The spec's largest message.
        max_message_size: usize,
        /// The spec's block size.
        block_size: usize,
    },
    /// The group's buffers (`window` slots of `max_message_size` bytes) are too large to
    /// address.
    #[error("buffers too large to address ({window} slots of {max_message_size} bytes)")]
    BuffersTooLarge {
        /// The spec's window.
        window: usize,
        /// The spec's largest message.
        max_message_size: usize,
    },
    /// A group planned for a sender that is not in the shard.
    #[error("sender {sender} is not in the shard")]
    SenderNotInShard {
        /// The sender.
        sender: NodeId,
    },
    /// A group planned on a node that is not in the shard.
    #[error("node {node} is not in the shard")]
    NotInShard {
        /// This node.
        node: NodeId,
    },
}

/// What broke the protocol (see [`RdmcError::Protocol`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A received message's schedule ended before all of its blocks arrived.
    #[error("message {seq} finished its schedule with {received} of {blocks} blocks")]
    IncompleteMessage {
        /// The message.
        seq: u64,
        /// Blocks received.
        received: usize,
        /// Blocks of the message.
        blocks: usize,
    },
    /// A block notification for a slot the group does not have, or one reaching the sender.
    #[error("block notification for slot {slot} from node {from}")]
    StrayNotification {
        /// The slot it names.
        slot: usize,
        /// Who wrote it.
        from: NodeId,
    },
    /// A block of another message than the slot's next one, or a block received twice.
    #[error(
        "unexpected block {block} of message {seq_lo} (mod 16) in slot {slot} from node {from}"
    )]
    UnexpectedBlock {
        /// The block.
        block: usize,
        /// The low four bits of its message number.
        seq_lo: u64,
        /// The slot.
        slot: usize,
        /// Who wrote it.
        from: NodeId,
    },
    /// A slot's header names another message than the one expected there, or a message larger
    /// than the group's limit.
    #[error(
        "slot {slot} header says message {found} of {size} bytes, expected message {expected}"
    )]
    BadHeader {
        /// The slot.
        slot: usize,
        /// The message number in the header.
        found: u64,
        /// The size in the header.
        size: usize,
        /// The message expected.
        expected: u64,
    },
    /// The engine stepped a transfer it no longer holds.
    #[error("no message transfer in progress")]
    NoRun,
}

/// What a member of a group is told.
pub trait Handler: Send + Sync {
    /// A message is complete on this member (the sender is told too, for its own message).
    /// Dropping the [`Message`] releases its slot.
    fn on_message(&self, message: Message);
    /// The group is aborted; called once. No more messages follow.
    fn on_failure(&self, error: &RdmcError);
}

/// Describes a group from one member's point of view.
#[derive(Clone, Debug)]
pub struct GroupSpec {
    /// Identifies the group among the groups of these members (names its regions); at most
    /// [`MAX_GROUP_ID`](crate::layout::MAX_GROUP_ID).
    pub group_id: u64,
    /// The members in rank order with their fabric addresses; rank 0 is the sender.
    pub members: Vec<(NodeId, SocketAddr)>,
    /// This member's rank.
    pub my_rank: usize,
    /// How blocks are spread.
    pub algorithm: Algorithm,
    /// Bytes per block.
    pub block_size: usize,
    /// Largest message.
    pub max_message_size: usize,
    /// Messages in flight (slots per member), 1..=256.
    pub window: usize,
    /// Most unacknowledged block writes to one peer (default 32).
    pub max_blocks_in_flight: usize,
    /// Bound on connecting, looking up regions and waiting for write completions.
    pub timeout: Duration,
    /// Doorbell rung when writes land in the group's region (blocks, credits). `None` gives the
    /// group its own; a layer above passes its own doorbell so that one thread can park on both.
    pub doorbell: Option<Arc<Doorbell>>,
}

impl GroupSpec {
    /// A spec with the defaults for the optional fields.
    pub fn new(
        group_id: u64,
        members: Vec<(NodeId, SocketAddr)>,
        my_rank: usize,
        block_size: usize,
        max_message_size: usize,
        window: usize,
    ) -> Self {
        Self {
            group_id,
            members,
            my_rank,
            algorithm: Algorithm::Binomial,
            block_size,
            max_message_size,
            window,
            max_blocks_in_flight: 32,
            timeout: Duration::from_secs(30),
            doorbell: None,
        }
    }

    fn validate(&self) -> Result<Layout, GroupSpecError> {
        let n = self.members.len();
        if n == 0 || self.my_rank >= n {
            return Err(GroupSpecError::RankOutOfRange {
                rank: self.my_rank,
                members: n,
            });
        }
        let mut ids: Vec<NodeId> = self.members.iter().map(|m| m.0).collect();
        ids.sort_unstable();
        if let Some(twice) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(GroupSpecError::DuplicateMember { node: twice[0] });
        }
        if self.group_id > layout::MAX_GROUP_ID {
            return Err(GroupSpecError::GroupIdTooLarge {
                group_id: self.group_id,
            });
        }
        if self.block_size == 0 {
            return Err(GroupSpecError::ZeroBlockSize);
        }
        if self.window == 0 || self.window > MAX_WINDOW {
            return Err(GroupSpecError::Window {
                window: self.window,
            });
        }
        if self.max_message_size.div_ceil(self.block_size) > MAX_BLOCKS_PER_MESSAGE {
            return Err(GroupSpecError::TooManyBlocks {
                max_message_size: self.max_message_size,
                block_size: self.block_size,
            });
        }
        Layout::new(n, self.window, self.max_message_size).ok_or(GroupSpecError::BuffersTooLarge {
            window: self.window,
            max_message_size: self.max_message_size,
        })
    }
}

/// A complete message in this member's buffer. Dropping it releases the slot, which lets the
/// sender reuse it.
pub struct Message {
    shared: Arc<Shared>,
    seq: u64,
    offset: usize,
    len: usize,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("group", &self.shared.spec.group_id)
            .field("seq", &self.seq)
            .field("len", &self.len)
            .finish()
    }
}

impl Message {
    /// The message's number in its group (0, 1, 2, …).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The node that sent it.
    pub fn sender(&self) -> NodeId {
        self.shared.spec.members[0].0
    }

    /// Copies `buf.len()` bytes starting at `offset` of the message.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), FabricError> {
        match offset.checked_add(buf.len()) {
            Some(end) if end <= self.len => self.shared.region.read(self.offset + offset, buf),
            _ => Err(FabricError::OutOfBounds {
                region: self.shared.region.id(),
                offset,
                len: buf.len(),
                region_len: self.len,
            }),
        }
    }

    /// The whole message as a vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len];
        // In range by construction: the engine checked `len` against the slot size.
        let _ = self.shared.region.read(self.offset, &mut v);
        v
    }

    /// The region holding the message and the offset of its first byte, for readers that want
    /// to avoid a copy.
    pub fn location(&self) -> (&Arc<Region>, usize) {
        (&self.shared.region, self.offset)
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        self.shared.release(self.seq);
    }
}

struct SendQueue {
    next_seq: u64,
    ready: VecDeque<u64>,
}

struct Released {
    upto: u64,
    done: BTreeSet<u64>,
}

/// State shared by the group handle, its thread, its messages and its failure subscription.
struct Shared {
    spec: GroupSpec,
    layout: Layout,
    fabric: Arc<dyn Fabric>,
    region: Arc<Region>,
    links: Vec<Option<Arc<dyn Link>>>,
    remotes: Vec<Option<RemoteRegion>>,
    handler: Arc<dyn Handler>,
    aborted: OnceLock<RdmcError>,
    queue: Mutex<SendQueue>,
    released: Mutex<Released>,
    engine: Mutex<Engine>,
    subscription: Mutex<Option<SubscriptionId>>,
}

impl Shared {
    fn me(&self) -> usize {
        self.spec.my_rank
    }

    fn abort(&self, error: RdmcError) {
        if self.aborted.set(error.clone()).is_ok() {
            tracing::warn!(group = self.spec.group_id, %error, "RDMC group aborted");
            self.region.doorbell().ring();
            self.handler.on_failure(&error);
        }
    }

    fn check(&self) -> Result<(), RdmcError> {
        match self.aborted.get() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn release(&self, seq: u64) {
        let count = {
            let mut r = lock(&self.released);
            let fresh = seq >= r.upto && r.done.insert(seq);
            // Rule: each message is released once (one `Message` per completed message).
            debug_assert!(fresh, "message {seq} released twice");
            let before = r.upto;
            let r = &mut *r;
            while r.done.remove(&r.upto) {
                r.upto += 1;
            }
            if r.upto == before {
                return;
            }
            r.upto
        };
        let off = self.layout.released(self.me());
        // Counts only grow; a racing older count never overwrites a newer one.
        self.region
            .atomic_u64(off)
            .fetch_max(count, Ordering::AcqRel);
        if self.me() == 0 {
            self.region.doorbell().ring();
            return;
        }
        if let (Some(link), Some(remote)) = (&self.links[0], &self.remotes[0]) {
            // A failed link surfaces through the failure subscription; nothing to do here.
            let _ = link.write(&WriteRequest::mirrored(&self.region, remote, off, 8));
        }
    }

    /// Whether every member has released message `seq - window` (so slot `seq % window` is
    /// free everywhere).
    fn slot_free(&self, seq: u64) -> bool {
        let w = self.spec.window as u64;
        if seq < w {
            return true;
        }
        let need = seq + 1 - w;
        (0..self.spec.members.len()).all(|r| self.region.load_u64(self.layout.released(r)) >= need)
    }
}

/// Per-slot record of which blocks have arrived.
#[derive(Default)]
struct SlotRx {
    bits: Vec<u64>,
    count: usize,
}

impl SlotRx {
    fn has(&self, block: usize) -> bool {
        self.bits
            .get(block / 64)
            .is_some_and(|w| w & (1 << (block % 64)) != 0)
    }

    /// Marks a block; false if it was already there.
    fn mark(&mut self, block: usize) -> bool {
        let word = block / 64;
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        let bit = 1u64 << (block % 64);
        if self.bits[word] & bit != 0 {
            return false;
        }
        self.bits[word] |= bit;
        self.count += 1;
        true
    }

    fn clear(&mut self) {
        self.bits.clear();
        self.count = 0;
    }
}

/// Outstanding signaled writes to one peer.
#[derive(Default)]
struct PeerWindow {
    since_signal: usize,
    pending: VecDeque<Completion>,
}

/// One message being moved by this member.
struct Run {
    seq: u64,
    slot: usize,
    size: usize,
    blocks: usize,
    schedule: Schedule,
    step: usize,
    sent: bool,
    header_to: Vec<bool>,
}

struct Engine {
    next_seq: u64,
    current: Option<Run>,
    slots: Vec<SlotRx>,
    peers: Vec<PeerWindow>,
}

impl Shared {
    /// Does all the work possible now; returns completed messages and whether anything moved.
    fn poll(
        self: &Arc<Self>,
        e: &mut Engine,
        blocking: bool,
    ) -> Result<(bool, Vec<Message>), RdmcError> {
        self.check()?;
        let mut progress = self.drain(e)?;
        let mut done = Vec::new();
        loop {
            if e.current.is_none() {
                match self.next_run(e)? {
                    Some(run) => {
                        e.current = Some(run);
                        progress = true;
                    }
                    None => break,
                }
            }
            let Some(run) = e.current.as_mut() else { break };
            if run.step >= run.schedule.num_steps() {
                let run = e
                    .current
                    .take()
                    .ok_or(RdmcError::Protocol(ProtocolError::NoRun))?;
                if self.me() != 0 && e.slots[run.slot].count != run.blocks {
                    return Err(self.protocol(ProtocolError::IncompleteMessage {
                        seq: run.seq,
                        received: e.slots[run.slot].count,
                        blocks: run.blocks,
                    }));
                }
                // Rule: messages complete one by one, in number order.
                assert_eq!(run.seq, e.next_seq, "a message completed out of order");
                e.slots[run.slot].clear();
                e.next_seq += 1;
                done.push(Message {
                    shared: Arc::clone(self),
                    seq: run.seq,
                    offset: self.layout.slot_data(run.slot),
                    len: run.size,
                });
                progress = true;
                continue;
            }
            let step = run.schedule.step(run.step);
            if let (Some(send), false) = (step.send, run.sent) {
                if !self.make_room(&mut e.peers[send.peer], send.peer, blocking)? {
                    break;
                }
                self.send_block(run, &mut e.peers[send.peer], send.peer, send.block)?;
                let run = e
                    .current
                    .as_mut()
                    .ok_or(RdmcError::Protocol(ProtocolError::NoRun))?;
                run.sent = true;
                progress = true;
            }
            let run = e
                .current
                .as_mut()
                .ok_or(RdmcError::Protocol(ProtocolError::NoRun))?;
            if let Some(recv) = step.recv {
                if !e.slots[run.slot].has(recv.block) {
                    break;
                }
            }
            run.step += 1;
            run.sent = false;
            progress = true;
        }
        Ok((progress, done))
    }

    fn protocol(&self, reason: ProtocolError) -> RdmcError {
        let err = RdmcError::Protocol(reason);
        self.abort(err.clone());
        err
    }

    /// Moves queued block notifications into the slots' bitmaps.
    fn drain(&self, e: &mut Engine) -> Result<bool, RdmcError> {
        let w = self.spec.window as u64;
        let mut any = false;
        while let Some(n) = self.region.next_notification() {
            any = true;
            let (slot, seq_lo, block) = layout::decode_imm(n.imm);
            if slot >= self.spec.window || self.me() == 0 {
                return Err(self.protocol(ProtocolError::StrayNotification { slot, from: n.from }));
            }
            let expected = e.next_seq + (slot as u64 + w - e.next_seq % w) % w;
            if expected & 0xf != seq_lo || !e.slots[slot].mark(block) {
                return Err(self.protocol(ProtocolError::UnexpectedBlock {
                    block,
                    seq_lo,
                    slot,
                    from: n.from,
                }));
            }
        }
        Ok(any)
    }

    /// Starts the next message if it can: the sender's next queued one, or the one whose first
    /// block has arrived.
    fn next_run(&self, e: &mut Engine) -> Result<Option<Run>, RdmcError> {
        let seq = e.next_seq;
        let slot = (seq % self.spec.window as u64) as usize;
        if self.me() == 0 {
            let mut q = lock(&self.queue);
            if q.ready.front() != Some(&seq) {
                return Ok(None);
            }
            q.ready.pop_front();
        } else if e.slots[slot].count == 0 {
            return Ok(None);
        }
        let h = self.layout.header(slot);
        let (tag, size) = (
            self.region.load_u64(h),
            self.region.load_u64(h + 8) as usize,
        );
        if tag != seq + 1 || size > self.spec.max_message_size {
            return Err(self.protocol(ProtocolError::BadHeader {
                slot,
                found: tag.wrapping_sub(1),
                size,
                expected: seq,
            }));
        }
        let blocks = size.div_ceil(self.spec.block_size).max(1);
        let schedule = Schedule::new(
            self.spec.algorithm,
            self.spec.members.len(),
            self.me(),
            blocks,
        )
        .map_err(|source| RdmcError::Schedule { seq, source })?;
        Ok(Some(Run {
            seq,
            slot,
            size,
            blocks,
            schedule,
            step: 0,
            sent: false,
            header_to: vec![false; self.spec.members.len()],
        }))
    }

    /// Keeps at most `max_blocks_in_flight` unacknowledged writes to a peer. Returns false if
    /// the window is full and `blocking` is off.
    fn make_room(
        &self,
        w: &mut PeerWindow,
        peer: usize,
        blocking: bool,
    ) -> Result<bool, RdmcError> {
        let limit = (self.spec.max_blocks_in_flight / 16).max(1);
        while w.pending.len() > limit {
            let Some(front) = w.pending.front() else {
                break;
            };
            let outcome = match front.poll() {
                Some(r) => r,
                None if blocking => front.wait(self.spec.timeout),
                None => return Ok(false),
            };
            w.pending.pop_front();
            if let Err(err) = outcome {
                let node = self.spec.members[peer].0;
                let e = RdmcError::PeerFailed {
                    node,
                    reason: err.to_string(),
                };
                self.abort(e.clone());
                return Err(e);
            }
        }
        Ok(true)
    }

    fn send_block(
        &self,
        run: &mut Run,
        w: &mut PeerWindow,
        peer: usize,
        block: usize,
    ) -> Result<(), RdmcError> {
        let (Some(link), Some(remote)) = (&self.links[peer], &self.remotes[peer]) else {
            return Err(RdmcError::NoLink { rank: peer });
        };
        let fail = |err: FabricError| {
            let e = RdmcError::PeerFailed {
                node: self.spec.members[peer].0,
                reason: err.to_string(),
            };
            self.abort(e.clone());
            e
        };
        if !run.header_to[peer] {
            let h = self.layout.header(run.slot);
            link.write(&WriteRequest::mirrored(&self.region, remote, h, 16))
                .map_err(fail)?;
            run.header_to[peer] = true;
        }
        // Rule: the schedule only names blocks of the message it moves.
        debug_assert!(block < run.blocks, "block {block} of {}", run.blocks);
        let bs = self.spec.block_size;
        let start = block * bs;
        let len = run.size.saturating_sub(start).min(bs);
        let off = self.layout.slot_data(run.slot) + start;
        let req = WriteRequest::mirrored(&self.region, remote, off, len)
            .with_imm(layout::encode_imm(run.slot, run.seq, block));
        w.since_signal += 1;
        if w.since_signal >= 16 {
            w.since_signal = 0;
            let c = link.write_signaled(&req).map_err(fail)?;
            w.pending.push_back(c);
        } else {
            link.write(&req).map_err(fail)?;
        }
        Ok(())
    }
}

/// A group registered on this member but not yet linked to the others (see
/// [`RdmcGroup::prepare`]).
pub struct Prepared {
    fabric: Arc<dyn Fabric>,
    spec: GroupSpec,
    layout: Layout,
    region: Arc<Region>,
    handler: Arc<dyn Handler>,
}

/// One member's handle on an RDMC group.
pub struct RdmcGroup {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RdmcGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmcGroup")
            .field("group", &self.shared.spec.group_id)
            .field("rank", &self.shared.spec.my_rank)
            .finish_non_exhaustive()
    }
}

impl RdmcGroup {
    /// Registers this member's region. Every member must prepare before any connects (on real
    /// backends `connect` waits for the others, bounded by the spec's timeout).
    pub fn prepare(
        fabric: Arc<dyn Fabric>,
        spec: GroupSpec,
        handler: Arc<dyn Handler>,
    ) -> Result<Prepared, RdmcError> {
        let layout = spec.validate().map_err(RdmcError::InvalidSpec)?;
        let blocks = spec.max_message_size.div_ceil(spec.block_size).max(1);
        let capacity = (spec.window * blocks + 16).min(1 << 20);
        let region = fabric
            .register(
                RegionSpec::new(layout::region_id(spec.group_id), layout.total)
                    .with_notify_capacity(capacity),
            )
            .map_err(|e| RdmcError::Setup {
                node: fabric.local_id(),
                reason: e.to_string(),
            })?;
        Ok(Prepared {
            fabric,
            spec,
            layout,
            region,
            handler,
        })
    }

    /// Prepares and connects in one call.
    pub fn create(
        fabric: Arc<dyn Fabric>,
        spec: GroupSpec,
        handler: Arc<dyn Handler>,
    ) -> Result<Self, RdmcError> {
        Self::prepare(fabric, spec, handler)?.connect()
    }

    /// This member's rank.
    pub fn rank(&self) -> usize {
        self.shared.spec.my_rank
    }

    /// Runs the transfer engine on its own thread, which parks on the region's doorbell when
    /// there is nothing to do.
    pub fn start(&mut self) -> Result<(), RdmcError> {
        if self.thread.is_some() {
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        let stop = Arc::clone(&self.stop);
        let name = format!("rdmc-{}-{}", shared.spec.group_id, shared.spec.my_rank);
        let t = std::thread::Builder::new()
            .name(name)
            .spawn(move || run_thread(&shared, &stop))
            .map_err(|e| RdmcError::Spawn {
                source: Arc::new(e),
            })?;
        self.thread = Some(t);
        Ok(())
    }

    /// Does every step possible now without waiting, and hands completed messages to the
    /// handler. Returns whether anything happened. For callers that drive the engine themselves
    /// (simulation); do not mix with [`RdmcGroup::start`].
    pub fn poll(&self) -> Result<bool, RdmcError> {
        let (progress, done) = {
            let mut e = lock(&self.shared.engine);
            self.shared.poll(&mut e, false)?
        };
        for m in done {
            self.shared.handler.on_message(m);
        }
        Ok(progress)
    }

    /// Queues `data` as the next message if a slot is free; `Ok(None)` if the window is full.
    pub fn try_send(&self, data: &[u8]) -> Result<Option<u64>, RdmcError> {
        self.try_send_with(data.len(), |region, off| region.write(off, data))
    }

    /// Like [`RdmcGroup::try_send`], but `fill(region, offset)` writes the `len` bytes of the
    /// message into the sender's buffer itself (no intermediate copy).
    pub fn try_send_with(
        &self,
        len: usize,
        fill: impl FnOnce(&Region, usize) -> Result<(), FabricError>,
    ) -> Result<Option<u64>, RdmcError> {
        let s = &self.shared;
        s.check()?;
        if s.me() != 0 {
            return Err(RdmcError::NotSender);
        }
        if len > s.spec.max_message_size {
            return Err(RdmcError::TooLarge {
                len,
                max: s.spec.max_message_size,
            });
        }
        let mut q = lock(&s.queue);
        let seq = q.next_seq;
        if !s.slot_free(seq) {
            return Ok(None);
        }
        let slot = (seq % s.spec.window as u64) as usize;
        // Rule: a slot is free everywhere before it is written (checked just above), so the
        // slot's previous message was released and no engine still reads its header.
        debug_assert!(
            q.ready.len() < s.spec.window,
            "more queued messages than slots"
        );
        fill(&s.region, s.layout.slot_data(slot)).map_err(|e| RdmcError::Buffer {
            source: Arc::new(e),
        })?;
        let h = s.layout.header(slot);
        s.region.store_u64(h + 8, len as u64);
        s.region.store_u64(h, seq + 1);
        q.next_seq += 1;
        q.ready.push_back(seq);
        drop(q);
        s.region.doorbell().ring();
        Ok(Some(seq))
    }

    /// Queues `data`, waiting up to `timeout` for a free slot. Needs a running engine thread
    /// (or another thread calling [`RdmcGroup::poll`]) to make progress.
    pub fn send(&self, data: &[u8], timeout: Duration) -> Result<u64, RdmcError> {
        self.shared
            .region
            .doorbell()
            .retry(timeout, Duration::from_millis(50), || self.try_send(data))?
            .ok_or(RdmcError::WindowFull(timeout))
    }

    /// On the sender: copies bytes of its own message `seq` out of its buffer. Valid while the
    /// message is not released everywhere (its slot is not reused before); used to re-send a
    /// message whose transfer was aborted.
    pub fn read_sent(&self, seq: u64, offset: usize, buf: &mut [u8]) -> Result<(), RdmcError> {
        let s = &self.shared;
        if s.me() != 0 {
            return Err(RdmcError::NotSender);
        }
        let slot = (seq % s.spec.window as u64) as usize;
        let h = s.layout.header(slot);
        let (tag, size) = (s.region.load_u64(h), s.region.load_u64(h + 8) as usize);
        if tag != seq + 1 {
            return Err(RdmcError::NotInSlot { seq });
        }
        if offset.checked_add(buf.len()).is_none_or(|end| end > size) {
            return Err(RdmcError::OutsideMessage {
                seq,
                offset,
                len: buf.len(),
                size,
            });
        }
        s.region
            .read(s.layout.slot_data(slot) + offset, buf)
            .map_err(|e| RdmcError::Buffer {
                source: Arc::new(e),
            })
    }

    /// On the sender: waits until every member has released the first `count` messages (so all
    /// of them were received everywhere), the group aborts, or `timeout` passes. Returns whether
    /// they were. (Only the sender sees every member's released count.)
    pub fn wait_released(&self, count: u64, timeout: Duration) -> Result<bool, RdmcError> {
        let s = &self.shared;
        if s.me() != 0 {
            return Err(RdmcError::NotSender);
        }
        let released = s
            .region
            .doorbell()
            .retry(timeout, Duration::from_millis(50), || {
                s.check()?;
                let all = (0..s.spec.members.len())
                    .all(|r| s.region.load_u64(s.layout.released(r)) >= count);
                Ok::<_, RdmcError>(all.then_some(()))
            })?;
        Ok(released.is_some())
    }

    /// Aborts the group on this member (for example when the layer above sees a member fail).
    pub fn abort(&self, reason: &str) {
        self.shared.abort(RdmcError::Aborted(reason.to_string()));
    }

    /// The error that aborted the group, if any.
    pub fn failure(&self) -> Option<RdmcError> {
        self.shared.aborted.get().cloned()
    }
}

impl Prepared {
    /// Gives up on the group: deregisters its region.
    pub fn cancel(self) {
        let _ = self.fabric.deregister(self.region.id());
    }

    /// Links to every other member and looks up their regions, each bounded by the spec's
    /// timeout; a member that is dead or never prepares yields an error naming it.
    pub fn connect(self) -> Result<RdmcGroup, RdmcError> {
        let n = self.spec.members.len();
        let mut links = Vec::with_capacity(n);
        let mut remotes = Vec::with_capacity(n);
        let id = layout::region_id(self.spec.group_id);
        // On a failed setup: the setup error is the one to return, so a failure to deregister
        // is only logged.
        let cleanup = |fabric: &Arc<dyn Fabric>| {
            if let Err(e) = fabric.deregister(id) {
                tracing::debug!(region = %id, error = %e, "cannot deregister");
            }
        };
        for (rank, (node, addr)) in self.spec.members.iter().enumerate() {
            if rank == self.spec.my_rank {
                links.push(None);
                remotes.push(None);
                continue;
            }
            let setup = |e: FabricError| RdmcError::Setup {
                node: *node,
                reason: e.to_string(),
            };
            let link = match self.fabric.connect(*node, *addr, self.spec.timeout) {
                Ok(l) => l,
                Err(e) => {
                    cleanup(&self.fabric);
                    return Err(setup(e));
                }
            };
            let remote = match link.remote_region(id, self.spec.timeout) {
                Ok(r) => r,
                Err(e) => {
                    cleanup(&self.fabric);
                    return Err(setup(e));
                }
            };
            if remote.len != self.layout.total {
                cleanup(&self.fabric);
                return Err(RdmcError::Setup {
                    node: *node,
                    reason: format!(
                        "its buffers are {} bytes, this member's are {}: the members disagree on the group's sizes",
                        remote.len, self.layout.total
                    ),
                });
            }
            links.push(Some(link));
            remotes.push(Some(remote));
        }
        let members: Vec<NodeId> = self.spec.members.iter().map(|m| m.0).collect();
        let shared = Arc::new(Shared {
            engine: Mutex::new(Engine {
                next_seq: 0,
                current: None,
                slots: (0..self.spec.window).map(|_| SlotRx::default()).collect(),
                peers: (0..n).map(|_| PeerWindow::default()).collect(),
            }),
            spec: self.spec,
            layout: self.layout,
            fabric: Arc::clone(&self.fabric),
            region: self.region,
            links,
            remotes,
            handler: self.handler,
            aborted: OnceLock::new(),
            queue: Mutex::new(SendQueue {
                next_seq: 0,
                ready: VecDeque::new(),
            }),
            released: Mutex::new(Released {
                upto: 0,
                done: BTreeSet::new(),
            }),
            subscription: Mutex::new(None),
        });
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        let me = shared.fabric.local_id();
        let sub = shared
            .fabric
            .subscribe_failures(Arc::new(move |peer, reason: &str| {
                if peer != me && members.contains(&peer) {
                    if let Some(s) = weak.upgrade() {
                        s.abort(RdmcError::PeerFailed {
                            node: peer,
                            reason: reason.to_string(),
                        });
                    }
                }
            }));
        *lock(&shared.subscription) = Some(sub);
        // A member may have failed between our lookup and the subscription.
        for (rank, l) in shared.links.iter().enumerate() {
            if let Some(reason) = l.as_ref().and_then(|l| l.failure()) {
                shared.abort(RdmcError::PeerFailed {
                    node: shared.spec.members[rank].0,
                    reason,
                });
            }
        }
        Ok(RdmcGroup {
            shared,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        })
    }
}

fn run_thread(shared: &Arc<Shared>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let seen = shared.region.doorbell().epoch();
        let outcome = {
            let mut e = lock(&shared.engine);
            shared.poll(&mut e, true)
        };
        match outcome {
            Ok((progress, done)) => {
                for m in done {
                    shared.handler.on_message(m);
                }
                if !progress {
                    shared
                        .region
                        .doorbell()
                        .wait(seen, Duration::from_millis(100));
                }
            }
            Err(_) => {
                // Aborted: the handler has been told; idle until the group is dropped.
                shared
                    .region
                    .doorbell()
                    .wait(seen, Duration::from_millis(100));
            }
        }
    }
}

impl Drop for RdmcGroup {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.shared.region.doorbell().ring();
        if let Some(t) = self.thread.take() {
            // A panic on that thread was printed by the panic hook when it happened; the group
            // is going away either way.
            let _ = t.join();
        }
        if let Some(sub) = lock(&self.shared.subscription).take() {
            self.shared.fabric.unsubscribe_failures(sub);
        }
        let id = self.shared.region.id();
        if let Err(e) = self.shared.fabric.deregister(id) {
            // Nothing to do about it here (the fabric may be shutting down).
            tracing::debug!(region = %id, error = %e, "cannot deregister");
        }
    }
}
