//! Ending a view after failures: suspicion, proposal, acknowledgement, commit, wedge, and the
//! ragged trim, all through the view's SST.
//!
//! One `ChangeProtocol` state machine runs in a recurrent predicate on the view's core loop,
//! next to the multicast engine. Each step:
//!
//! 1. **Suspicion.** A row the failure detector froze, or a member another live member
//!    suspects, becomes suspected here too (suspicions spread through the `suspected` columns),
//!    and its row is frozen. A member that learns it is itself suspected stops
//!    ([`Outcome::Evicted`]). With partition safety on, a member that suspects half of the view
//!    or more stops instead of continuing as a minority ([`Outcome::Partitioned`]).
//! 2. **Proposal.** The leader — the lowest-ranked member not suspected — appends a removal
//!    for every suspect it has not proposed yet to its `changes`, marks the last one as the end
//!    of the view, and publishes `changes` before `num_changes`.
//! 3. **Acknowledgement.** Every member copies the leader's changes and acknowledges them
//!    (`num_acked`), and **wedges** its multicast: no new sends or deliveries in this view.
//! 4. **Commit.** The leader commits what every live member acknowledged (`num_committed`).
//! 5. **Ragged trim.** Once the end of the view is committed and every live member has wedged,
//!    the leader of each shard (its lowest-ranked live member) takes, for every sender, the
//!    smallest `num_received` over the shard's live members and publishes it (`global_min`,
//!    then `global_min_ready`); the other members echo it. When every live member of each of
//!    my shards has it, I deliver exactly up to it, in order, drop the rest, and collect my own
//!    undelivered messages to send again in the next view ([`Outcome::Trimmed`]).
//!
//! Joins ride on the same list: nodes waiting at the leader's GMS port ([`JoinQueue`]) are
//! proposed after the removals, flagged as joins, with their addresses in `joiner_info`, so
//! every member computes the same next view (survivors in rank order, then joiners).
//!
//! A leader that fails is handled by the same rules: the next lowest rank becomes leader, but
//! acts (proposes, commits, fixes the change count) only once every live member suspects the
//! ranks below it. Members stop copying a leader's list when they suspect it, so from then on
//! every live member's list is a prefix of what the old leaders proposed: the new leader takes
//! over the longest (joins included: their addresses travel with the changes) and appends its
//! own suspicions, and no member ever holds a list that disagrees with the leader's.
//!
//! The protocol sees the table only through `ChangeTable` and acts on the multicast only
//! through `ViewEnd`, so its unit tests run it on a table in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use derecho_sst::{ArrayField, Field, RowRange, Sst, Targets, Word};

use crate::gms::MemberInfo;
use crate::multicast::engine::{Engine, Resend, SenderState};
use crate::multicast::lock;
use crate::multicast::spec::{Columns, GmsColumns};
use crate::NodeId;

const END_OF_VIEW: u64 = 1 << 63;
const JOIN: u64 = 1 << 62;

/// Nodes waiting to join, filled by the leader's GMS service and read by its change protocol.
pub type JoinQueue = Arc<Mutex<Vec<MemberInfo>>>;

/// Packs a joiner's address into the three `joiner_info` words.
pub(crate) fn encode_member(m: &MemberInfo) -> [u64; 3] {
    let v6 = match m.ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    };
    let o = v6.octets();
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&o[..8]);
    lo.copy_from_slice(&o[8..]);
    let ports = u64::from(m.gms_port)
        | u64::from(m.fabric_port) << 16
        | u64::from(m.state_transfer_port) << 32
        | u64::from(m.external_port) << 48;
    [u64::from_le_bytes(hi), u64::from_le_bytes(lo), ports]
}

/// The inverse of [`encode_member`].
pub(crate) fn decode_member(id: NodeId, w: [u64; 3]) -> MemberInfo {
    let mut o = [0u8; 16];
    o[..8].copy_from_slice(&w[0].to_le_bytes());
    o[8..].copy_from_slice(&w[1].to_le_bytes());
    let v6 = Ipv6Addr::from(o);
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    };
    let port = |k: u32| (w[2] >> (16 * k)) as u16;
    MemberInfo {
        id,
        ip,
        gms_port: port(0),
        fabric_port: port(1),
        state_transfer_port: port(2),
        external_port: port(3),
    }
}

/// How a view ended on this member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The view is trimmed: these members leave, and these of my messages go again.
    Trimmed {
        /// Node ids removed by the committed changes, in proposal order.
        removed: Vec<NodeId>,
        /// Nodes added by the committed changes, in proposal order.
        joined: Vec<MemberInfo>,
        /// My messages that were not delivered in the ended view.
        resend: Vec<Resend>,
    },
    /// Another live member suspects this one: it must stop.
    Evicted,
    /// This member would be in a minority: it stops (partition safety).
    Partitioned {
        /// Members it suspects.
        suspected: usize,
        /// Members of the view.
        members: usize,
    },
}

/// A shard I belong to, as the trim needs it.
#[derive(Clone, Debug)]
pub(crate) struct TrimShard {
    pub subgroup: usize,
    pub member_ranks: Vec<usize>,
    pub senders: usize,
    pub recv_off: usize,
}

/// The state machine of one view's end (see the module docs).
pub(crate) struct ChangeProtocol {
    cols: GmsColumns,
    mc: Columns,
    ids: Vec<NodeId>,
    shards: Vec<TrimShard>,
    partition_safety: bool,
    joins: Option<JoinQueue>,
    wedged: bool,
    done: bool,
}

impl ChangeProtocol {
    pub(crate) fn new(
        mc: Columns,
        ids: Vec<NodeId>,
        shards: Vec<TrimShard>,
        partition_safety: bool,
        joins: Option<JoinQueue>,
    ) -> Self {
        Self {
            cols: mc.gms.clone(),
            mc,
            ids,
            shards,
            partition_safety,
            joins,
            wedged: false,
            done: false,
        }
    }

    /// Whether the protocol has anything to look at: a frozen row, a suspicion, or a change
    /// in progress. Cheap; false in a healthy, quiet view.
    pub(crate) fn active<T: ChangeTable>(&self, sst: &T) -> bool {
        if self.done {
            return false;
        }
        let n = self.ids.len();
        self.wedged
            || self.joins.as_ref().is_some_and(|q| !lock(q).is_empty())
            || (0..n).any(|r| sst.is_frozen(r))
            || (0..n).any(|r| {
                !sst.is_frozen(r) && (0..n).any(|j| sst.get_elem(self.cols.suspected, r, j))
            })
            || (0..n).any(|r| sst.get(self.cols.num_changes, r) > 0)
    }

    fn suspects<T: ChangeTable>(&self, sst: &T, r: usize) -> bool {
        sst.get_elem(self.cols.suspected, sst.my_rank(), r)
    }

    /// One step over the table `sst`, acting on the view's multicast through `end`; returns
    /// the outcome once the view has ended on this member.
    pub(crate) fn step<T: ChangeTable, E: ViewEnd<T>>(
        &mut self,
        sst: &T,
        end: &mut E,
    ) -> Option<Outcome> {
        if self.done {
            return None;
        }
        let me = sst.my_rank();
        let n = self.ids.len();
        let c = self.cols.clone();
        // 1. Suspicion.
        let mut changed = false;
        for r in (0..n).filter(|&r| r != me) {
            if sst.is_frozen(r) && !self.suspects(sst, r) {
                sst.set_elem(c.suspected, r, true);
                changed = true;
            }
        }
        for r in (0..n).filter(|&r| r != me && !sst.is_frozen(r) && !self.suspects(sst, r)) {
            for j in 0..n {
                if sst.get_elem(c.suspected, r, j) && !self.suspects(sst, j) {
                    if j == me {
                        self.done = true;
                        return Some(Outcome::Evicted);
                    }
                    sst.set_elem(c.suspected, j, true);
                    sst.freeze(j, &format!("suspected by node {}", self.ids[r]));
                    changed = true;
                }
            }
        }
        if changed {
            sst.publish(c.suspected.range());
        }
        let suspected: Vec<usize> = (0..n).filter(|&r| self.suspects(sst, r)).collect();
        // Members that left on purpose (rip) are departures, not failures: they count for
        // neither side of the majority.
        let departed = suspected.iter().filter(|&&r| sst.get(c.rip, r)).count();
        let failed = suspected.len() - departed;
        if self.partition_safety && failed > 0 && failed * 2 >= n - departed {
            self.done = true;
            return Some(Outcome::Partitioned {
                suspected: failed,
                members: n - departed,
            });
        }
        let leader = (0..n).find(|&r| !self.suspects(sst, r))?;
        let live: Vec<usize> = (0..n).filter(|&r| !self.suspects(sst, r)).collect();
        // A member that becomes leader because the ranks below it are suspected acts only once
        // every live member suspects them too. A member stops copying an old leader's list the
        // moment it suspects it, and its copies were pushed before that suspicion, so from
        // then on the lists this leader sees are final: each a prefix of what the old leaders
        // proposed. Proposing earlier could put a different list of the same length beside one
        // a member already acknowledged, and the two would install different next views.
        let established =
            leader == me && (0..me).all(|j| live.iter().all(|&r| sst.get_elem(c.suspected, r, j)));
        // 2. Proposal (leader). A new leader first takes over the longest change list a live
        // member holds (its predecessors' proposals, which some may have acknowledged), so
        // nothing a member acted on is proposed differently.
        if established {
            let longest = live
                .iter()
                .copied()
                .filter(|&r| r != me)
                .max_by_key(|&r| sst.get(c.num_changes, r));
            if let Some(r) = longest {
                let theirs = sst.get(c.num_changes, r);
                if theirs > sst.get(c.num_changes, me) {
                    copy_changes(sst, &c, r, theirs);
                }
            }
            let count = sst.get(c.num_changes, me).max(0) as usize;
            let proposed: BTreeSet<NodeId> = (0..count)
                .map(|i| (sst.get_elem(c.changes, me, i) & u64::from(u32::MAX)) as NodeId)
                .collect();
            let mut fresh: Vec<(u64, Option<[u64; 3]>)> = suspected
                .iter()
                .map(|&r| self.ids[r])
                .filter(|id| !proposed.contains(id))
                .map(|id| (u64::from(id), None))
                .collect();
            if let Some(q) = &self.joins {
                // Joins never take the places a removal may still need in this view: every
                // member not yet proposed for removal could fail before the view ends.
                let removals = (0..count)
                    .filter(|&i| sst.get_elem(c.changes, me, i) & JOIN == 0)
                    .count();
                let reserve = n.saturating_sub(removals + fresh.len());
                let room = c
                    .changes
                    .len()
                    .saturating_sub(count + fresh.len() + reserve);
                let pending = lock(q);
                fresh.extend(
                    pending
                        .iter()
                        .filter(|m| !self.ids.contains(&m.id) && !proposed.contains(&m.id))
                        .take(room)
                        .map(|m| (u64::from(m.id) | JOIN, Some(encode_member(m)))),
                );
            }
            if !fresh.is_empty() && count + fresh.len() <= c.changes.len() {
                for (k, (word, info)) in fresh.iter().enumerate() {
                    let last = k + 1 == fresh.len();
                    let word = *word | if last { END_OF_VIEW } else { 0 };
                    sst.set_elem(c.changes, count + k, word);
                    if let Some(w) = info {
                        for (j, x) in w.iter().enumerate() {
                            sst.set_elem(c.joiner_info, (count + k) * 3 + j, *x);
                        }
                    }
                }
                sst.set(c.num_changes, (count + fresh.len()) as i64);
                sst.publish(c.joiner_info.range());
                sst.publish(c.changes.range());
                sst.publish(c.num_changes.range());
                tracing::debug!(
                    node = self.ids[me],
                    changes = count + fresh.len(),
                    "leader proposed changes"
                );
            }
        }
        // 3. Acknowledgement, and wedging.
        let leader_changes = sst.get(c.num_changes, leader);
        if leader_changes > sst.get(c.num_acked, me) {
            if leader != me {
                copy_changes(sst, &c, leader, leader_changes);
            }
            sst.set(c.num_acked, leader_changes);
            sst.publish(c.num_acked.range());
            self.wedge(sst, end);
            tracing::debug!(
                node = self.ids[me],
                changes = leader_changes,
                "acknowledged changes and wedged"
            );
        }
        // 4. Commit (leader, once established).
        if established {
            let min_acked = live
                .iter()
                .map(|&r| sst.get(c.num_acked, r))
                .min()
                .unwrap_or(0);
            if min_acked > sst.get(c.num_committed, me) {
                sst.set(c.num_committed, min_acked);
                sst.publish(c.num_committed.range());
                tracing::debug!(
                    node = self.ids[me],
                    changes = min_acked,
                    "leader committed changes"
                );
            }
        }
        // 5. Ragged trim, once the end of the view is committed and every live member wedged.
        let committed = sst.get(c.num_committed, leader).max(0) as usize;
        let end_committed =
            (0..committed).any(|i| sst.get_elem(c.changes, leader, i) & END_OF_VIEW != 0);
        if !end_committed || !self.wedged {
            return None;
        }
        if !live.iter().all(|&r| sst.get(c.wedged, r)) {
            return None;
        }
        // The changes this view change installs are fixed once, by the leader, and echoed by
        // every member, so that all install the same next view even when more failures are
        // committed meanwhile (those go into the view after). A new leader adopts a fixed
        // count that any live member already echoes; it fixes its own only when nobody has.
        let fixed = |r: usize| sst.get(c.trim_end_ready, r);
        if !fixed(me) {
            let value = if established {
                match live.iter().copied().find(|&r| r != me && fixed(r)) {
                    Some(r) => sst.get(c.trim_end, r),
                    // Everything proposed is committed first, so that a failure detected in
                    // the meantime is not carried into the next view.
                    None if sst.get(c.num_changes, me) > committed as i64 => return None,
                    None => committed as i64,
                }
            } else if leader != me && fixed(leader) {
                sst.get(c.trim_end, leader)
            } else {
                return None;
            };
            sst.set(c.trim_end, value);
            sst.publish(c.trim_end.range());
            sst.set(c.trim_end_ready, true);
            sst.publish(c.trim_end_ready.range());
            tracing::debug!(
                node = self.ids[me],
                changes = value,
                "fixed the changes of this view change"
            );
        }
        if !live.iter().all(|&r| fixed(r)) {
            return None;
        }
        let trim_end = (sst.get(c.trim_end, me).max(0) as usize).min(c.changes.len());
        let mut all_ready = true;
        for sh in self.shards.clone() {
            let live_members: Vec<usize> = sh
                .member_ranks
                .iter()
                .copied()
                .filter(|r| live.contains(r))
                .collect();
            let Some(&shard_leader) = live_members.first() else {
                continue;
            };
            let ready = |r: usize| sst.get_elem(c.global_min_ready, r, sh.subgroup);
            if !ready(me) {
                if shard_leader == me {
                    // Adopt a trim an earlier shard leader already published, if any.
                    let source = live_members.iter().copied().find(|&r| r != me && ready(r));
                    for s in 0..sh.senders {
                        let col = sh.recv_off + s;
                        let value = match source {
                            Some(r) => sst.get_elem(c.global_min, r, col),
                            None => live_members
                                .iter()
                                .map(|&r| sst.get_elem(self.mc.num_received, r, col))
                                .min()
                                .unwrap_or(-1),
                        };
                        sst.set_elem(c.global_min, col, value);
                    }
                } else if ready(shard_leader) {
                    for s in 0..sh.senders {
                        let col = sh.recv_off + s;
                        sst.set_elem(
                            c.global_min,
                            col,
                            sst.get_elem(c.global_min, shard_leader, col),
                        );
                    }
                } else {
                    all_ready = false;
                    continue;
                }
                if let Some(range) = c.global_min.elems_range(sh.recv_off, sh.senders) {
                    sst.publish(range);
                }
                sst.set_elem(c.global_min_ready, sh.subgroup, true);
                if let Some(range) = c.global_min_ready.elems_range(sh.subgroup, 1) {
                    sst.publish(range);
                }
                tracing::debug!(
                    node = self.ids[me],
                    subgroup = sh.subgroup,
                    "published the ragged trim"
                );
            }
            if !live_members.iter().all(|&r| ready(r)) {
                all_ready = false;
            }
        }
        if !all_ready {
            return None;
        }
        let trims: BTreeMap<usize, Vec<i64>> = self
            .shards
            .iter()
            .map(|sh| {
                let v = (0..sh.senders)
                    .map(|s| sst.get_elem(c.global_min, me, sh.recv_off + s))
                    .collect();
                (sh.subgroup, v)
            })
            .collect();
        let resend = end.trim(&trims);
        let mut removed = Vec::new();
        let mut joined = Vec::new();
        for i in 0..trim_end {
            let word = sst.get_elem(c.changes, me, i);
            let id = (word & u64::from(u32::MAX)) as NodeId;
            if word & JOIN != 0 {
                let w = [0, 1, 2].map(|j| sst.get_elem(c.joiner_info, me, i * 3 + j));
                joined.push(decode_member(id, w));
            } else {
                removed.push(id);
            }
        }
        self.done = true;
        Some(Outcome::Trimmed {
            removed,
            joined,
            resend,
        })
    }

    /// Stops new sends and deliveries, flushes what is already filled (after which this
    /// member's counters stop moving), and tells the others, behind those counters.
    fn wedge<T: ChangeTable, E: ViewEnd<T>>(&mut self, sst: &T, end: &mut E) {
        if self.wedged {
            return;
        }
        end.wedge(sst);
        self.wedged = true;
        sst.set(self.cols.wedged, true);
        sst.publish(self.cols.wedged.range());
    }
}

/// What the change protocol reads and writes of its view's table: every row, its own row's
/// fields, pushes of parts of its own row to the other members, and the frozen (failed)
/// flags. The SST is the real one; the protocol does nothing else that a test cannot see.
pub(crate) trait ChangeTable {
    /// This member's rank.
    fn my_rank(&self) -> usize;
    /// Reads `field` of row `rank`.
    fn get<W: Word>(&self, field: Field<W>, rank: usize) -> W;
    /// Reads element `i` of `array` in row `rank`.
    fn get_elem<W: Word>(&self, array: ArrayField<W>, rank: usize, i: usize) -> W;
    /// Writes `field` of my row.
    fn set<W: Word>(&self, field: Field<W>, value: W);
    /// Writes element `i` of `array` in my row.
    fn set_elem<W: Word>(&self, array: ArrayField<W>, i: usize, value: W);
    /// Pushes `range` of my row to every member whose row is not frozen, in order after
    /// everything pushed before on each link.
    fn publish(&self, range: RowRange);
    /// Whether row `rank` is frozen.
    fn is_frozen(&self, rank: usize) -> bool;
    /// Freezes row `rank` (its member is suspected).
    fn freeze(&self, rank: usize, reason: &str);
}

impl ChangeTable for Sst {
    fn my_rank(&self) -> usize {
        Sst::my_rank(self)
    }
    fn get<W: Word>(&self, field: Field<W>, rank: usize) -> W {
        Sst::get(self, field, rank)
    }
    fn get_elem<W: Word>(&self, array: ArrayField<W>, rank: usize, i: usize) -> W {
        Sst::get_elem(self, array, rank, i)
    }
    fn set<W: Word>(&self, field: Field<W>, value: W) {
        Sst::set(self, field, value);
    }
    fn set_elem<W: Word>(&self, array: ArrayField<W>, i: usize, value: W) {
        Sst::set_elem(self, array, i, value);
    }
    fn publish(&self, range: RowRange) {
        // A push that fails on some link freezes that member's row and reports it; the
        // protocol then sees it as suspected. Nothing else can fail here.
        if let Err(e) = self.push_range(range, Targets::All) {
            tracing::debug!(error = %e, "a push of the change protocol failed on some link");
        }
    }
    fn is_frozen(&self, rank: usize) -> bool {
        Sst::is_frozen(self, rank)
    }
    fn freeze(&self, rank: usize, reason: &str) {
        Sst::freeze(self, rank, reason);
    }
}

/// What the change protocol does to its view's multicast.
pub(crate) trait ViewEnd<T> {
    /// Stops new sends and deliveries and publishes, one last time, what was received.
    fn wedge(&mut self, table: &T);
    /// Delivers, in order, exactly the messages each trim (subgroup → last index per sender)
    /// covers, drops the rest, and returns this member's own messages beyond the trims.
    fn trim(&mut self, trims: &BTreeMap<usize, Vec<i64>>) -> Vec<Resend>;
}

/// The multicast engine of a view, as the change protocol ends it.
pub(crate) struct EngineEnd {
    pub engine: Arc<Mutex<Engine>>,
    pub senders: Vec<Arc<Mutex<SenderState>>>,
    /// Reads back one of my RDMC messages that never completed here.
    pub read_rdmc: Arc<dyn Fn(usize, u64, usize) -> Option<Vec<u8>> + Send + Sync>,
    /// Records the trim before anything it covers is delivered.
    pub on_trim: Option<crate::multicast::TrimLog>,
}

impl ViewEnd<Sst> for EngineEnd {
    fn wedge(&mut self, table: &Sst) {
        for s in &self.senders {
            lock(s).wedged = true;
        }
        let mut e = lock(&self.engine);
        e.wedged = true;
        // One more pass publishes filled slots and what has been received so far; after it
        // this member's counters stop moving, before `wedged` is pushed behind them.
        e.run(table);
        e.frozen = true;
    }

    fn trim(&mut self, trims: &BTreeMap<usize, Vec<i64>>) -> Vec<Resend> {
        if let Some(record) = &self.on_trim {
            record(trims);
        }
        lock(&self.engine).ragged_trim(trims, &*self.read_rdmc)
    }
}

/// Takes over the first `count` changes of rank `from`'s list (with the joiners' addresses) as
/// this member's own, and publishes them: the list first, then its length.
fn copy_changes<T: ChangeTable>(sst: &T, c: &GmsColumns, from: usize, count: i64) {
    let mine = (sst.get(c.num_changes, sst.my_rank()).max(0) as usize).min(c.changes.len());
    debug_assert!(
        (0..mine.min(count.max(0) as usize))
            .all(|i| sst.get_elem(c.changes, from, i) == sst.get_elem(c.changes, sst.my_rank(), i)),
        "a change list taken over disagrees with the one this member holds"
    );
    debug_assert!(count as usize >= mine, "a change list went back");
    for i in 0..(count.max(0) as usize).min(c.changes.len()) {
        sst.set_elem(c.changes, i, sst.get_elem(c.changes, from, i));
        for j in 0..3 {
            let at = i * 3 + j;
            sst.set_elem(c.joiner_info, at, sst.get_elem(c.joiner_info, from, at));
        }
    }
    sst.set(c.num_changes, count);
    sst.publish(c.joiner_info.range());
    sst.publish(c.changes.range());
    sst.publish(c.num_changes.range());
}

#[cfg(test)]
mod tests {
    //! The change protocol as a state machine: each test sets up what one member sees of the
    //! table, runs one step, and checks what it wrote, pushed and did to its multicast. Each
    //! is named after the protocol rule it checks.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::cell::RefCell;
    use std::net::SocketAddr;

    use derecho_sst::SchemaBuilder;

    use super::*;
    use crate::config::SubgroupProfile;
    use crate::multicast::spec::{Mode, MulticastSpec, ShardSpec, Sizes, SubgroupSpec};

    /// One member's copy of the table, in memory.
    struct MemTable {
        me: usize,
        rows: RefCell<Vec<Vec<u64>>>,
        frozen: RefCell<Vec<bool>>,
        published: RefCell<Vec<RowRange>>,
    }

    impl MemTable {
        /// Another member's value, as if it had pushed it.
        fn put<W: Word>(&self, field: Field<W>, rank: usize, v: W) {
            self.rows.borrow_mut()[rank][field.offset() / 8] = v.to_word();
        }
        fn put_elem<W: Word>(&self, a: ArrayField<W>, rank: usize, i: usize, v: W) {
            self.rows.borrow_mut()[rank][a.offset() / 8 + i] = v.to_word();
        }
        fn pushed(&self, range: RowRange) -> bool {
            self.published.borrow().contains(&range)
        }
    }

    impl ChangeTable for MemTable {
        fn my_rank(&self) -> usize {
            self.me
        }
        fn get<W: Word>(&self, field: Field<W>, rank: usize) -> W {
            W::from_word(self.rows.borrow()[rank][field.offset() / 8])
        }
        fn get_elem<W: Word>(&self, array: ArrayField<W>, rank: usize, i: usize) -> W {
            assert!(i < array.len());
            W::from_word(self.rows.borrow()[rank][array.offset() / 8 + i])
        }
        fn set<W: Word>(&self, field: Field<W>, value: W) {
            self.put(field, self.me, value);
        }
        fn set_elem<W: Word>(&self, array: ArrayField<W>, i: usize, value: W) {
            assert!(i < array.len());
            self.put_elem(array, self.me, i, value);
        }
        fn publish(&self, range: RowRange) {
            self.published.borrow_mut().push(range);
        }
        fn is_frozen(&self, rank: usize) -> bool {
            self.frozen.borrow()[rank]
        }
        fn freeze(&self, rank: usize, _reason: &str) {
            self.frozen.borrow_mut()[rank] = true;
        }
    }

    /// Records what the protocol did to the multicast.
    #[derive(Default)]
    struct Recorder {
        wedges: usize,
        trims: Vec<BTreeMap<usize, Vec<i64>>>,
    }

    impl ViewEnd<MemTable> for Recorder {
        fn wedge(&mut self, _table: &MemTable) {
            self.wedges += 1;
        }
        fn trim(&mut self, trims: &BTreeMap<usize, Vec<i64>>) -> Vec<Resend> {
            self.trims.push(trims.clone());
            Vec::new()
        }
    }

    /// Member `me` of an `n`-member view with one shard in which everyone sends; node ids are
    /// the ranks.
    fn setup(n: usize, me: usize, joins: Option<JoinQueue>) -> (ChangeProtocol, MemTable) {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let ids: Vec<NodeId> = (0..n as NodeId).collect();
        let sizes = Sizes::from_profile(&SubgroupProfile::default());
        let spec = MulticastSpec {
            vid: 0,
            members: ids.iter().map(|&i| (i, addr)).collect(),
            my_rank: me,
            subgroups: vec![SubgroupSpec {
                shards: vec![ShardSpec {
                    members: ids.clone(),
                    senders: ids.clone(),
                    mode: Mode::Ordered,
                    sizes,
                }],
            }],
        };
        let mut b = SchemaBuilder::new();
        let cols = Columns::declare(&spec, &mut b).unwrap();
        let words = b.build().unwrap().row_len() / 8;
        let shards = vec![TrimShard {
            subgroup: 0,
            member_ranks: (0..n).collect(),
            senders: n,
            recv_off: cols.received_offset[0],
        }];
        let table = MemTable {
            me,
            rows: RefCell::new(vec![vec![0; words]; n]),
            frozen: RefCell::new(vec![false; n]),
            published: RefCell::new(Vec::new()),
        };
        for r in 0..n {
            for s in 0..n {
                table.put_elem(cols.num_received, r, cols.received_offset[0] + s, -1);
            }
        }
        (ChangeProtocol::new(cols, ids, shards, true, joins), table)
    }

    fn changes(p: &ChangeProtocol, t: &MemTable, rank: usize) -> Vec<u64> {
        let c = &p.cols;
        (0..t.get(c.num_changes, rank) as usize)
            .map(|i| t.get_elem(c.changes, rank, i))
            .collect()
    }

    #[test]
    fn the_leader_proposes_a_failed_member_and_marks_the_end_of_the_view() {
        let (mut p, t) = setup(3, 0, None);
        let mut end = Recorder::default();
        t.freeze(2, "crashed");
        assert!(p.active(&t));
        assert_eq!(p.step(&t, &mut end), None);
        let c = p.cols.clone();
        assert!(t.get_elem(c.suspected, 0, 2));
        assert_eq!(changes(&p, &t, 0), vec![2 | END_OF_VIEW]);
        // The leader acknowledges its own proposal and wedges, and publishes the list before
        // its length.
        assert_eq!((t.get(c.num_acked, 0), end.wedges), (1, 1));
        let pushed = t.published.borrow().clone();
        let at = |r: RowRange| pushed.iter().position(|x| *x == r).unwrap();
        assert!(at(c.changes.range()) < at(c.num_changes.range()));
        assert!(t.get(c.wedged, 0));
    }

    #[test]
    fn a_member_acknowledges_the_leaders_longer_list_and_wedges_once() {
        let (mut p, t) = setup(3, 1, None);
        let mut end = Recorder::default();
        let c = p.cols.clone();
        t.put_elem(c.changes, 0, 0, 2 | END_OF_VIEW);
        t.put(c.num_changes, 0, 1);
        p.step(&t, &mut end);
        assert_eq!(changes(&p, &t, 1), vec![2 | END_OF_VIEW]);
        assert_eq!(t.get(c.num_acked, 1), 1);
        p.step(&t, &mut end);
        assert_eq!(end.wedges, 1);
        assert!(t.pushed(c.num_acked.range()) && t.pushed(c.wedged.range()));
    }

    /// Derecho §4.7: a new leader acts only once the ranks below it are suspected by every
    /// live member; then it takes over the longest list before adding its own changes.
    #[test]
    fn a_new_leader_waits_for_every_live_member_to_suspect_the_old_one_then_takes_over() {
        let (mut p, t) = setup(3, 1, None);
        let mut end = Recorder::default();
        let c = p.cols.clone();
        t.freeze(0, "crashed");
        // Rank 2 took the old leader's [join 9] and does not suspect it yet.
        t.put_elem(c.changes, 2, 0, 9 | JOIN | END_OF_VIEW);
        t.put(c.num_changes, 2, 1);
        t.put(c.num_acked, 2, 1);
        p.step(&t, &mut end);
        assert_eq!(
            t.get(c.num_changes, 1),
            0,
            "proposed before rank 2 suspected rank 0"
        );
        assert_eq!(t.get(c.num_committed, 1), 0);
        t.put_elem(c.suspected, 2, 0, true);
        p.step(&t, &mut end);
        assert_eq!(
            changes(&p, &t, 1),
            vec![9 | JOIN | END_OF_VIEW, END_OF_VIEW],
            "the old leader's join, then its removal"
        );
    }

    #[test]
    fn the_leader_commits_what_every_live_member_acknowledged() {
        let (mut p, t) = setup(3, 0, None);
        let mut end = Recorder::default();
        let c = p.cols.clone();
        t.freeze(2, "crashed");
        p.step(&t, &mut end);
        assert_eq!(t.get(c.num_committed, 0), 0, "rank 1 has not acknowledged");
        t.put(c.num_acked, 1, 1);
        p.step(&t, &mut end);
        assert_eq!(t.get(c.num_committed, 0), 1);
    }

    #[test]
    fn a_member_another_live_member_suspects_is_evicted() {
        let (mut p, t) = setup(3, 2, None);
        t.put_elem(p.cols.suspected, 0, 2, true);
        assert_eq!(p.step(&t, &mut Recorder::default()), Some(Outcome::Evicted));
        assert!(!p.active(&t), "the protocol is done");
    }

    #[test]
    fn a_member_that_suspects_half_the_view_stops_as_a_minority() {
        let (mut p, t) = setup(4, 0, None);
        t.freeze(2, "cut off");
        t.freeze(3, "cut off");
        assert_eq!(
            p.step(&t, &mut Recorder::default()),
            Some(Outcome::Partitioned {
                suspected: 2,
                members: 4
            })
        );
    }

    #[test]
    fn a_departure_does_not_count_against_the_majority() {
        let (mut p, t) = setup(2, 0, None);
        t.put(p.cols.rip, 1, true);
        t.put_elem(p.cols.suspected, 1, 1, true);
        t.freeze(1, "left");
        // Alone and live, it proposes, commits and trims in one step.
        let out = p.step(&t, &mut Recorder::default());
        assert_eq!(changes(&p, &t, 0), vec![1 | END_OF_VIEW]);
        assert!(
            matches!(out, Some(Outcome::Trimmed { ref removed, .. }) if *removed == vec![1]),
            "{out:?}"
        );
    }

    #[test]
    fn queued_joins_leave_room_for_every_removal_the_view_may_still_need() {
        let queue: JoinQueue = Arc::new(Mutex::new(
            (100..120)
                .map(|id| crate::gms::MemberInfo {
                    id,
                    ip: [127, 0, 0, 1].into(),
                    gms_port: 1,
                    fabric_port: 2,
                    state_transfer_port: 3,
                    external_port: 4,
                })
                .collect(),
        ));
        let (mut p, t) = setup(3, 0, Some(queue));
        let mut end = Recorder::default();
        let c = p.cols.clone();
        p.step(&t, &mut end);
        let room = c.changes.len();
        assert_eq!(
            changes(&p, &t, 0).len(),
            room - 3,
            "three places kept for removals"
        );
        t.freeze(1, "crashed");
        t.freeze(2, "crashed");
        t.put(c.rip, 1, true);
        t.put(c.rip, 2, true);
        p.step(&t, &mut end);
        let list = changes(&p, &t, 0);
        assert_eq!(list.len(), room - 1);
        assert_eq!(list[room - 3] & u64::from(u32::MAX), 1);
        assert_eq!(list[room - 2] & u64::from(u32::MAX), 2);
    }

    /// The ragged trim: once every live member wedged and echoed the fixed change count, the
    /// shard leader publishes, per sender, the smallest received count over the live members,
    /// and each member delivers exactly up to it.
    #[test]
    fn the_shard_leader_trims_at_the_smallest_count_received_by_the_live_members() {
        let (mut p, t) = setup(3, 0, None);
        let mut end = Recorder::default();
        let c = p.cols.clone();
        let mc = p.mc.clone();
        let off = mc.received_offset[0];
        t.freeze(2, "crashed");
        for (r, got) in [(0, [5, 7, 3]), (1, [4, 9, 3]), (2, [1, 1, 1])] {
            for (s, v) in got.into_iter().enumerate() {
                t.put_elem(mc.num_received, r, off + s, v);
            }
        }
        p.step(&t, &mut end);
        // Rank 1 acknowledges, wedges and echoes the fixed count.
        t.put(c.num_acked, 1, 1);
        t.put(c.wedged, 1, true);
        p.step(&t, &mut end);
        p.step(&t, &mut end);
        assert!(t.get(c.trim_end_ready, 0));
        assert!(
            end.trims.is_empty(),
            "rank 1 has not echoed the fixed count"
        );
        t.put(c.trim_end, 1, 1);
        t.put(c.trim_end_ready, 1, true);
        p.step(&t, &mut end);
        // The crashed rank 2 is not counted.
        assert_eq!(
            (0..3)
                .map(|s| t.get_elem(c.global_min, 0, off + s))
                .collect::<Vec<_>>(),
            vec![4, 7, 3]
        );
        t.put_elem(c.global_min_ready, 1, 0, true);
        let out = p.step(&t, &mut end);
        assert_eq!(end.trims, vec![BTreeMap::from([(0, vec![4, 7, 3])])]);
        assert_eq!(
            out,
            Some(Outcome::Trimmed {
                removed: vec![2],
                joined: vec![],
                resend: vec![]
            })
        );
    }
}
