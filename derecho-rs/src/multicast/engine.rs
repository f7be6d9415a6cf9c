//! The receive side of one view's multicast, run by the SST core loop.
//!
//! One [`Engine`] lives inside a recurrent SST predicate. Each time it runs it:
//!
//! 1. publishes the SMC slots my senders filled since last time (slot bytes first, then the
//!    `index` counter, to the shard members only), and writes owed null messages;
//! 2. reads new slots from every sender of my shards (including me), recording what arrived
//!    and keeping real messages until they may be delivered;
//! 3. takes completed RDMC messages from the inbox the RDMC engines fill;
//! 4. publishes `num_received_sst` (slot reuse), `num_received` and `seq_num` (the complete
//!    prefix of the round robin);
//! 5. delivers: ordered shards every pending message up to the minimum `seq_num` over the shard
//!    (then `delivered_num`), raw shards each sender's messages in index order on receipt.
//!
//! All of this runs on the core loop's thread, so the engine's state needs no lock; only the
//! per-subgroup [`SenderState`] is shared with application threads that send.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use derecho_fabric::NodeId;
use derecho_sst::Sst;

use super::order::{Received, RoundRobin};
use super::spec::{Columns, Header, Mode, ShardSpec, HEADER_LEN};
use super::{lock, Delivery, DeliveryHandler};

/// A sender's numbering and SMC ring position in one subgroup, shared between application
/// threads (which fill slots) and the core loop (which publishes them and writes nulls).
#[derive(Debug)]
pub(crate) struct SenderState {
    /// My rank among the shard's senders.
    pub sender_rank: usize,
    /// The next message index to assign.
    pub next_index: i64,
    /// SMC slots filled locally (count − 1).
    pub filled: i64,
    /// SMC slots published through `index` (count − 1).
    pub published: i64,
    /// Null messages must bring `next_index` up to this.
    pub null_target: i64,
    /// My RDMC messages not yet delivered here: (index, RDMC sequence number, length, flags),
    /// in index order. Delivering one of my messages drops every entry up to its index, so
    /// this holds at most a window of messages.
    pub rdmc_sent: VecDeque<(i64, u64, usize, u64)>,
    /// The view is wedged: no new messages.
    pub wedged: bool,
}

impl SenderState {
    /// Forgets my RDMC messages up to `index` once it is delivered here: the ragged trim covers
    /// every delivered message, so none of them can be owed to the next view.
    fn delivered_own(&mut self, index: i64) {
        while self.rdmc_sent.front().is_some_and(|e| e.0 <= index) {
            self.rdmc_sent.pop_front();
        }
    }
}

/// One of my messages that the ragged trim left undelivered, to send again in the next view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resend {
    /// The subgroup.
    pub subgroup: usize,
    /// Header flags.
    pub flags: u64,
    /// The payload.
    pub payload: Vec<u8>,
}

/// A message received but not yet delivered.
pub(crate) struct Pending {
    pub sender_rank: usize,
    pub index: i64,
    pub flags: u64,
    pub payload: Payload,
}

/// Where a pending message's bytes are.
pub(crate) enum Payload {
    /// Copied out of an SMC slot (so the slot can be reused at once).
    Bytes(Vec<u8>),
    /// Still in the RDMC buffer (released when delivered).
    Rdmc(derecho_rdmc::Message),
}

/// Completed RDMC messages waiting for the core loop: (subgroup, sender rank, message).
pub(crate) type Inbox = Arc<Mutex<VecDeque<(usize, usize, derecho_rdmc::Message)>>>;

/// Static facts of one shard I belong to, shared by the core loop and sending threads.
#[derive(Debug)]
pub(crate) struct ShardInfo {
    pub subgroup: usize,
    pub shard: usize,
    pub spec: ShardSpec,
    pub rr: RoundRobin,
    /// SST ranks of the shard's members.
    pub member_ranks: Vec<usize>,
    /// SST ranks of the senders, in sender rank order.
    pub sender_ranks: Vec<usize>,
    /// First per-sender column.
    pub recv_off: usize,
    /// Ring start, slot length, slot count.
    pub ring: (usize, usize, usize),
}

impl ShardInfo {
    pub(crate) fn slot_at(&self, k: i64) -> usize {
        // Rule: slot numbers count from 0.
        debug_assert!(k >= 0, "slot {k}");
        let (at, len, window) = self.ring;
        at + (k.rem_euclid(window as i64) as usize) * len
    }

    /// Whether every member has consumed slot `k − window`, so slot `k` may be written.
    pub(crate) fn slot_free(&self, sst: &Sst, cols: &Columns, k: i64, sender_rank: usize) -> bool {
        let older = k - self.ring.2 as i64;
        older < 0
            || self.member_ranks.iter().all(|&row| {
                sst.get_elem(cols.num_received_sst, row, self.recv_off + sender_rank) >= older
            })
    }

    /// Whether message `index` of sender rank `me` may be sent (window flow control).
    pub(crate) fn window_allows(&self, sst: &Sst, cols: &Columns, index: i64, me: usize) -> bool {
        let window = self.spec.sizes.window;
        match self.spec.mode {
            Mode::Ordered => {
                let min_delivered = self
                    .member_ranks
                    .iter()
                    .map(|&row| sst.get_elem(cols.delivered_num, row, self.subgroup))
                    .min()
                    .unwrap_or(i64::MAX);
                self.rr.window_allows(me, index, window, min_delivered)
            }
            Mode::Raw => {
                let older = index - window as i64;
                older < 0
                    || self.member_ranks.iter().all(|&row| {
                        sst.get_elem(cols.num_received, row, self.recv_off + me) >= older
                    })
            }
        }
    }
}

/// Receive state of one shard I belong to (owned by the core loop).
pub(crate) struct ShardRun {
    pub info: Arc<ShardInfo>,
    pub received: Vec<Received>,
    pub consumed: Vec<i64>,
    pub pending: BTreeMap<i64, Pending>,
    /// Ordered: highest seq delivered.
    pub delivered_seq: i64,
    /// Raw: next index to deliver per sender.
    pub raw_next: Vec<i64>,
    pub sender: Option<Arc<Mutex<SenderState>>>,
    /// My sender rank in this shard, if I send in it.
    pub my_sender_rank: Option<usize>,
    /// What was last published, to push only changes.
    pub shown_seq: i64,
    pub shown_received: Vec<i64>,
    pub shown_consumed: Vec<i64>,
}

impl ShardRun {
    /// Fresh receive state for a shard.
    pub(crate) fn new(info: Arc<ShardInfo>, sender: Option<Arc<Mutex<SenderState>>>) -> Self {
        let n = info.sender_ranks.len();
        let my_sender_rank = sender.as_ref().map(|s| lock(s).sender_rank);
        Self {
            info,
            received: (0..n).map(|_| Received::new()).collect(),
            consumed: vec![-1; n],
            pending: BTreeMap::new(),
            delivered_seq: -1,
            raw_next: vec![0; n],
            sender,
            my_sender_rank,
            shown_seq: -1,
            shown_received: vec![-1; n],
            shown_consumed: vec![-1; n],
        }
    }
}

/// Why a view's multicast stopped delivering: a sender broke the ring's rules, or the table
/// or an RDMC buffer could not be read or written. Fatal for the view (delivering past it
/// could break total order); the view change that follows starts clean.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Broken {
    /// A message index arrived twice.
    #[error("duplicate message {index} from sender rank {rank}")]
    DuplicateMessage { rank: usize, index: i64 },
    /// Nulls at an index that was already received.
    #[error("duplicate nulls from sender rank {rank} at index {index}")]
    DuplicateNulls { rank: usize, index: i64 },
    /// A sender committed more than a window of slots ahead of this member.
    #[error("sender rank {rank} committed slot {committed} with only {consumed} consumed here")]
    RingOverrun {
        rank: usize,
        committed: i64,
        consumed: i64,
    },
    /// A slot's header is cut short or claims more bytes than a slot holds.
    #[error("slot {slot} of sender rank {rank} has a bad header (length {len})")]
    BadSlot { rank: usize, slot: i64, len: usize },
    /// A slot claims a negative index or a null count that overflows.
    #[error("slot {slot} of sender rank {rank} claims index {index} and {nulls} nulls")]
    BadIndex {
        rank: usize,
        slot: i64,
        index: i64,
        nulls: u64,
    },
    /// An RDMC message's header does not match the message.
    #[error("RDMC message of sender rank {rank} has a bad header")]
    BadRdmcHeader { rank: usize },
    /// A column or slot range falls outside the table (a layout bug).
    #[error("{0} out of range")]
    OutOfRange(&'static str),
    /// The table refused a read or write.
    #[error(transparent)]
    Table(#[from] derecho_sst::SstError),
    /// An RDMC buffer could not be read.
    #[error("reading an RDMC message: {0}")]
    Rdmc(#[from] derecho_fabric::FabricError),
}

impl ShardRun {
    /// Records real message `h.index` of sender rank `r` as received and keeps it until it is
    /// delivered; a second copy is a protocol error.
    fn receive(&mut self, r: usize, h: &Header, payload: Payload) -> Result<(), Broken> {
        if !self.received[r].record(h.index, 1) {
            return Err(Broken::DuplicateMessage {
                rank: r,
                index: h.index,
            });
        }
        let seq = self.info.rr.seq(h.index, r);
        let pending = Pending {
            sender_rank: r,
            index: h.index,
            flags: h.flags,
            payload,
        };
        // Rule: a message is pending at most once (its index was recorded fresh just now).
        let fresh = self.pending.insert(seq, pending).is_none();
        debug_assert!(fresh, "message {seq} pending twice");
        Ok(())
    }
}

/// The core loop's multicast state for one view.
pub(crate) struct Engine {
    pub cols: Columns,
    pub shards: Vec<ShardRun>,
    pub inbox: Inbox,
    pub deliver: DeliveryHandler,
    pub my_id: NodeId,
    /// A broken invariant stops delivery (and is logged once) rather than corrupting order.
    pub broken: Option<Broken>,
    /// Wedged: deliver nothing more until the trim.
    pub wedged: bool,
    /// Set after the pass that follows the wedge: from then on this member's published
    /// counters (`num_received`, `seq_num`, `num_received_sst`) stay where they are, as in
    /// Derecho. A member that has not wedged yet may deliver on the counters it sees in this
    /// row while a shard leader computes the ragged trim from this row; the trim must cover
    /// every such delivery. The change protocol's extra round (every member echoes the fixed
    /// change count after the leader saw everyone wedged, and the trim waits for all echoes)
    /// already orders every counter push a delivery could have used before the trim's read;
    /// final counters make the rule hold without depending on that round.
    pub frozen: bool,
}

impl Engine {
    /// Whether [`Engine::run`] has anything to do (cheap: a few counter loads).
    pub(crate) fn has_work(&self, sst: &Sst) -> bool {
        if self.broken.is_some() {
            return false;
        }
        if !lock(&self.inbox).is_empty() {
            return true;
        }
        let me = sst.my_rank();
        for s in &self.shards {
            if let Some(snd) = &s.sender {
                let st = lock(snd);
                if st.filled > st.published || st.null_target > st.next_index {
                    return true;
                }
            }
            for (r, &row) in s.info.sender_ranks.iter().enumerate() {
                if sst.get_elem(self.cols.index, row, s.info.subgroup) > s.consumed[r] {
                    return true;
                }
            }
            if self.wedged {
                continue;
            }
            if s.info.spec.mode == Mode::Ordered && !s.pending.is_empty() {
                let min = min_seq(sst, &self.cols, s);
                if s.pending.keys().next().is_some_and(|&k| k <= min) {
                    return true;
                }
            }
            if s.info.spec.mode == Mode::Ordered {
                let min = min_seq(sst, &self.cols, s);
                if min > sst.get_elem(self.cols.delivered_num, me, s.info.subgroup) {
                    return true;
                }
            }
        }
        false
    }

    /// Does all pending multicast work (see the module docs).
    pub(crate) fn run(&mut self, sst: &Sst) {
        if self.broken.is_some() {
            return;
        }
        for i in 0..self.shards.len() {
            if let Err(e) = self.run_shard(sst, i) {
                tracing::error!(error = %e, "multicast stopped delivering in this view");
                self.broken = Some(e);
                return;
            }
        }
        let inbox: Vec<_> = lock(&self.inbox).drain(..).collect();
        for (sg, rank, msg) in inbox {
            let Some(i) = self.shards.iter().position(|s| s.info.subgroup == sg) else {
                continue;
            };
            if let Err(e) = self.accept_rdmc(sst, i, rank, msg) {
                self.broken = Some(e);
                return;
            }
        }
        for i in 0..self.shards.len() {
            if let Err(e) = self.publish_and_deliver(sst, i) {
                self.broken = Some(e);
                return;
            }
        }
        // Senders blocked on the window or on slot reuse park on this table's doorbell; a
        // remote push rings it, but my own counter changes must ring it too.
        sst.notify();
    }

    /// Ends the view: delivers, in order, every pending message of each listed subgroup whose
    /// index is at most its sender's entry in the trim, drops the rest, and returns my own
    /// messages beyond the trim (in index order) to be sent again in the next view.
    /// `read_rdmc(subgroup, rdmc_seq, len)` reads back one of my RDMC messages that never
    /// completed here.
    pub(crate) fn ragged_trim(
        &mut self,
        trims: &BTreeMap<usize, Vec<i64>>,
        read_rdmc: &dyn Fn(usize, u64, usize) -> Option<Vec<u8>>,
    ) -> Vec<Resend> {
        let my_id = self.my_id;
        let mut resend = Vec::new();
        for s in &mut self.shards {
            let Some(trim) = trims.get(&s.info.subgroup) else {
                continue;
            };
            let mine = s.my_sender_rank;
            // Rule: the trim covers every message any survivor delivered, this one included.
            for r in 0..s.info.sender_ranks.len() {
                let delivered = match s.info.spec.mode {
                    Mode::Ordered => s.info.rr.last_index_in_prefix(s.delivered_seq, r),
                    Mode::Raw => s.raw_next[r] - 1,
                };
                let limit = trim.get(r).copied().unwrap_or(-1);
                assert!(
                    delivered <= limit,
                    "subgroup {}: sender rank {r} delivered up to {delivered}, trimmed at {limit}",
                    s.info.subgroup
                );
            }
            let pending = std::mem::take(&mut s.pending);
            let mut own: BTreeMap<i64, Resend> = BTreeMap::new();
            for (seq, p) in pending {
                let limit = trim.get(p.sender_rank).copied().unwrap_or(-1);
                if p.index <= limit {
                    deliver(&mut self.deliver, s, my_id, seq, -1, p);
                } else if Some(p.sender_rank) == mine {
                    let payload = match &p.payload {
                        Payload::Bytes(b) => b.clone(),
                        Payload::Rdmc(m) => {
                            let mut v = vec![0u8; m.len().saturating_sub(HEADER_LEN)];
                            // In range: the header check made len = HEADER_LEN + payload.
                            let _ = m.read(HEADER_LEN, &mut v);
                            v
                        }
                    };
                    own.insert(
                        p.index,
                        Resend {
                            subgroup: s.info.subgroup,
                            flags: p.flags,
                            payload,
                        },
                    );
                }
            }
            if let (Some(snd), Some(me)) = (&s.sender, mine) {
                let limit = trim.get(me).copied().unwrap_or(-1);
                let st = lock(snd);
                for &(index, rdmc_seq, len, flags) in &st.rdmc_sent {
                    if index > limit && !own.contains_key(&index) {
                        if let Some(payload) = read_rdmc(s.info.subgroup, rdmc_seq, len) {
                            own.insert(
                                index,
                                Resend {
                                    subgroup: s.info.subgroup,
                                    flags,
                                    payload,
                                },
                            );
                        }
                    }
                }
            }
            resend.extend(own.into_values());
        }
        resend
    }

    fn run_shard(&mut self, sst: &Sst, i: usize) -> Result<(), Broken> {
        let cols = self.cols.clone();
        let s = &mut self.shards[i];
        // 1. Nulls owed and slots filled: write, then publish slots before the counter.
        if let Some(snd) = s.sender.clone() {
            let mut st = lock(&snd);
            let owed = if st.wedged {
                0
            } else {
                st.null_target - st.next_index
            };
            if owed > 0 && st.filled - st.published < s.info.ring.2 as i64 {
                let k = st.filled + 1;
                if s.info.slot_free(sst, &cols, k, st.sender_rank) {
                    let h = Header {
                        index: st.next_index,
                        len: 0,
                        nulls: owed as u64,
                        flags: 0,
                    };
                    sst.write_bytes(cols.slots, s.info.slot_at(k), &h.encode())?;
                    st.next_index += owed;
                    st.filled = k;
                }
            }
            if st.filled > st.published {
                publish_slots(sst, &cols, s, st.published + 1, st.filled)?;
                sst.set_elem(cols.index, s.info.subgroup, st.filled);
                push_elem(sst, &s.info.member_ranks, cols.index, s.info.subgroup)?;
                st.published = st.filled;
            }
        }
        // 2. New slots from every sender.
        let mut buf = Vec::new();
        for r in 0..s.info.sender_ranks.len() {
            let row = s.info.sender_ranks[r];
            let committed = sst.get_elem(cols.index, row, s.info.subgroup);
            // Rule: a sender fills slot k only once every member consumed slot k − window, so
            // at most a window of its slots is ever unconsumed here.
            if committed - s.consumed[r] > s.info.ring.2 as i64 {
                return Err(Broken::RingOverrun {
                    rank: r,
                    committed,
                    consumed: s.consumed[r],
                });
            }
            while s.consumed[r] < committed {
                let k = s.consumed[r] + 1;
                let at = s.info.slot_at(k);
                let mut hb = [0u8; HEADER_LEN];
                sst.read_bytes(cols.slots, row, at, &mut hb)?;
                let bad = |len| Broken::BadSlot {
                    rank: r,
                    slot: k,
                    len,
                };
                let h = Header::decode(&hb).ok_or(bad(0))?;
                if h.len > s.info.ring.1 - HEADER_LEN {
                    return Err(bad(h.len));
                }
                // Rule: a slot holds one message or a batch of nulls at non-negative indices.
                let count = i64::try_from(h.nulls.max(1))
                    .ok()
                    .filter(|n| h.index >= 0 && h.index.checked_add(*n).is_some())
                    .ok_or(Broken::BadIndex {
                        rank: r,
                        slot: k,
                        index: h.index,
                        nulls: h.nulls,
                    })?;
                if h.nulls > 0 {
                    if !s.received[r].record(h.index, count) {
                        return Err(Broken::DuplicateNulls {
                            rank: r,
                            index: h.index,
                        });
                    }
                } else {
                    buf.resize(h.len, 0);
                    sst.read_bytes(cols.slots, row, at + HEADER_LEN, &mut buf)?;
                    s.receive(r, &h, Payload::Bytes(std::mem::take(&mut buf)))?;
                }
                s.consumed[r] = k;
                owe_nulls(s, r, h.index + count - 1);
            }
        }
        Ok(())
    }

    fn accept_rdmc(
        &mut self,
        _sst: &Sst,
        i: usize,
        r: usize,
        msg: derecho_rdmc::Message,
    ) -> Result<(), Broken> {
        let s = &mut self.shards[i];
        let mut hb = [0u8; HEADER_LEN];
        msg.read(0, &mut hb)?;
        let bad = Broken::BadRdmcHeader { rank: r };
        let h = Header::decode(&hb).ok_or(bad)?;
        if h.len + HEADER_LEN != msg.len() || h.nulls != 0 || h.index < 0 {
            return Err(Broken::BadRdmcHeader { rank: r });
        }
        s.receive(r, &h, Payload::Rdmc(msg))?;
        owe_nulls(s, r, h.index);
        Ok(())
    }

    fn publish_and_deliver(&mut self, sst: &Sst, i: usize) -> Result<(), Broken> {
        let cols = self.cols.clone();
        let my_id = self.my_id;
        let s = &mut self.shards[i];
        // Wedged and announced: the counters are final for this view (see `frozen`), and
        // nothing is delivered outside the trim.
        if self.frozen {
            debug_assert!(self.wedged, "counters frozen in a view that is not wedged");
            return Ok(());
        }
        // 4. Counters, changed ones only.
        let mut changed = false;
        for r in 0..s.info.sender_ranks.len() {
            if s.consumed[r] != s.shown_consumed[r] {
                sst.set_elem(cols.num_received_sst, s.info.recv_off + r, s.consumed[r]);
                s.shown_consumed[r] = s.consumed[r];
                changed = true;
            }
            let c = s.received[r].contiguous();
            debug_assert!(
                c >= s.shown_received[r] && s.consumed[r] >= s.shown_consumed[r],
                "a received counter went back"
            );
            if c != s.shown_received[r] {
                sst.set_elem(cols.num_received, s.info.recv_off + r, c);
                s.shown_received[r] = c;
                changed = true;
            }
        }
        if changed {
            let n = s.info.sender_ranks.len();
            push_elems(
                sst,
                &s.info.member_ranks,
                cols.num_received_sst,
                s.info.recv_off,
                n,
            )?;
            push_elems(
                sst,
                &s.info.member_ranks,
                cols.num_received,
                s.info.recv_off,
                n,
            )?;
        }
        let contiguous: Vec<i64> = s.received.iter().map(Received::contiguous).collect();
        let prefix = s.info.rr.complete_prefix(&contiguous);
        debug_assert!(prefix >= s.shown_seq, "seq_num went back");
        if prefix != s.shown_seq {
            sst.set_elem(cols.seq_num, s.info.subgroup, prefix);
            push_elem(sst, &s.info.member_ranks, cols.seq_num, s.info.subgroup)?;
            s.shown_seq = prefix;
        }
        // 5. Delivery (none once wedged: the ragged trim decides what is delivered).
        if self.wedged {
            return Ok(());
        }
        match s.info.spec.mode {
            Mode::Ordered => {
                let stable = min_seq(sst, &cols, s);
                // Rule: every member's seq_num only grows, so the shard's stable prefix does.
                debug_assert!(stable >= s.delivered_seq, "the stable prefix went back");
                while let Some(entry) = s.pending.first_entry() {
                    if *entry.key() > stable {
                        break;
                    }
                    let (seq, p) = entry.remove_entry();
                    // Rule: delivery only moves forward; nothing at or below the delivered
                    // prefix can still be pending.
                    assert!(
                        seq > s.delivered_seq,
                        "message {seq} pending below the delivered prefix {}",
                        s.delivered_seq
                    );
                    deliver(&mut self.deliver, s, my_id, seq, stable, p);
                }
                if stable > s.delivered_seq {
                    s.delivered_seq = stable;
                    sst.set_elem(cols.delivered_num, s.info.subgroup, stable);
                    push_elem(
                        sst,
                        &s.info.member_ranks,
                        cols.delivered_num,
                        s.info.subgroup,
                    )?;
                }
            }
            Mode::Raw => loop {
                let mut progress = false;
                for r in 0..s.info.sender_ranks.len() {
                    let seq = s.info.rr.seq(s.raw_next[r], r);
                    if let Some(p) = s.pending.remove(&seq) {
                        s.raw_next[r] += 1;
                        deliver(&mut self.deliver, s, my_id, seq, -1, p);
                        progress = true;
                    }
                }
                if !progress {
                    break;
                }
            },
        }
        Ok(())
    }
}

fn deliver(
    handler: &mut DeliveryHandler,
    s: &ShardRun,
    _me: NodeId,
    seq: i64,
    stable: i64,
    p: Pending,
) {
    let sender = s.info.spec.senders[p.sender_rank];
    let bytes;
    let payload: &[u8] = match &p.payload {
        Payload::Bytes(b) => b,
        Payload::Rdmc(m) => {
            let mut v = vec![0u8; m.len().saturating_sub(HEADER_LEN)];
            // In range: the header check made len = HEADER_LEN + payload.
            let _ = m.read(HEADER_LEN, &mut v);
            bytes = v;
            &bytes
        }
    };
    handler(Delivery {
        subgroup: s.info.subgroup,
        shard: s.info.shard,
        sender,
        index: p.index,
        seq,
        stable,
        flags: p.flags,
        payload,
    });
    // After the handler, which may itself send and so take the sender lock.
    if let (Some(snd), Some(me)) = (&s.sender, s.my_sender_rank) {
        if p.sender_rank == me {
            lock(snd).delivered_own(p.index);
        }
    }
}

/// After receiving index `last` from sender rank `from`, raise my null target so the round
/// robin does not wait on me (ordered shards, when I send).
fn owe_nulls(s: &mut ShardRun, from: usize, last: i64) {
    if s.info.spec.mode != Mode::Ordered {
        return;
    }
    if let Some(snd) = &s.sender {
        let mut st = lock(snd);
        let need = s
            .info
            .rr
            .nulls_needed(st.sender_rank, st.next_index, from, last);
        if need > 0 {
            st.null_target = st.null_target.max(st.next_index + need);
        }
    }
}

fn min_seq(sst: &Sst, cols: &Columns, s: &ShardRun) -> i64 {
    s.info
        .member_ranks
        .iter()
        .map(|&row| sst.get_elem(cols.seq_num, row, s.info.subgroup))
        .min()
        .unwrap_or(-1)
}

fn others(sst: &Sst, ranks: &[usize]) -> Vec<usize> {
    ranks
        .iter()
        .copied()
        .filter(|&r| r != sst.my_rank())
        .collect()
}

fn push_elem(
    sst: &Sst,
    ranks: &[usize],
    a: derecho_sst::ArrayField<i64>,
    i: usize,
) -> Result<(), Broken> {
    push_elems(sst, ranks, a, i, 1)
}

fn push_elems(
    sst: &Sst,
    ranks: &[usize],
    a: derecho_sst::ArrayField<i64>,
    i: usize,
    n: usize,
) -> Result<(), Broken> {
    let targets = others(sst, ranks);
    if targets.is_empty() || n == 0 {
        return Ok(());
    }
    let range = a
        .elems_range(i, n)
        .ok_or(Broken::OutOfRange("a counter column"))?;
    // A failed member is frozen and reported by the SST; the view change takes it from there.
    let _ = sst.push_to(range, &targets);
    Ok(())
}

/// Pushes slots `from..=to` of my ring (at most two contiguous pieces) to the shard.
fn publish_slots(
    sst: &Sst,
    cols: &Columns,
    s: &ShardRun,
    from: i64,
    to: i64,
) -> Result<(), Broken> {
    let targets = others(sst, &s.info.member_ranks);
    if targets.is_empty() {
        return Ok(());
    }
    let (at, len, window) = s.info.ring;
    let w = window as i64;
    let count = to - from + 1;
    // Rule: a filled slot is published before it is filled again (`slot_free` holds a sender
    // back until every member, this one included, consumed the slot a window earlier).
    assert!(
        (1..=w).contains(&count),
        "publishing slots {from}..={to} of a ring of {window}"
    );
    let first = from.rem_euclid(w) as usize;
    let head = (count as usize).min(window - first);
    let mut pieces = vec![(at + first * len, head * len)];
    if (count as usize) > head {
        pieces.push((at, (count as usize - head) * len));
    }
    for (off, bytes) in pieces {
        let range = cols
            .slots
            .sub_range(off, bytes)
            .ok_or(Broken::OutOfRange("a slot range"))?;
        // As for counters: a failed member is frozen and reported by the SST.
        let _ = sst.push_to(range, &targets);
    }
    Ok(())
}
