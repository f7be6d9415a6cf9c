//! Ending a view after failures: suspicion, proposal, acknowledgement, commit, wedge, and the
//! ragged trim, all through the view's SST.
//!
//! One `ChangeProtocol` state machine runs in a recurrent predicate on the view's core loop, next to the
//! multicast engine. Each step:
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
//! A leader that fails is handled by the same rules: the next lowest rank becomes leader and
//! proposes its own suspicions after the changes it already acknowledged (joins included:
//! their addresses were copied with the changes).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use derecho_sst::{Sst, Targets};

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
    /// While the members wait for joins, their leader says the next view is ready.
    Provisioned(crate::gms::View),
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
    engine: Arc<Mutex<Engine>>,
    senders: Vec<Arc<Mutex<SenderState>>>,
    read_rdmc: Arc<dyn Fn(usize, u64, usize) -> Option<Vec<u8>> + Send + Sync>,
    partition_safety: bool,
    joins: Option<JoinQueue>,
    wedged: bool,
    done: bool,
}

impl ChangeProtocol {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        mc: Columns,
        ids: Vec<NodeId>,
        shards: Vec<TrimShard>,
        engine: Arc<Mutex<Engine>>,
        senders: Vec<Arc<Mutex<SenderState>>>,
        read_rdmc: Arc<dyn Fn(usize, u64, usize) -> Option<Vec<u8>> + Send + Sync>,
        partition_safety: bool,
        joins: Option<JoinQueue>,
    ) -> Self {
        Self {
            cols: mc.gms.clone(),
            mc,
            ids,
            shards,
            engine,
            senders,
            read_rdmc,
            partition_safety,
            joins,
            wedged: false,
            done: false,
        }
    }

    /// Whether the protocol has anything to look at: a frozen row, a suspicion, or a change
    /// in progress. Cheap; false in a healthy, quiet view.
    pub(crate) fn active(&self, sst: &Sst) -> bool {
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

    fn suspects(&self, sst: &Sst, r: usize) -> bool {
        sst.get_elem(self.cols.suspected, sst.my_rank(), r)
    }

    /// One step; returns the outcome once the view has ended on this member.
    pub(crate) fn step(&mut self, sst: &Sst) -> Option<Outcome> {
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
            let _ = sst.push_range(c.suspected.range(), Targets::All);
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
                let _ = sst.push_range(c.joiner_info.range(), Targets::All);
                let _ = sst.push_range(c.changes.range(), Targets::All);
                let _ = sst.push(c.num_changes);
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
            let _ = sst.push(c.num_acked);
            self.wedge(sst);
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
                let _ = sst.push(c.num_committed);
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
            let _ = sst.push(c.trim_end);
            sst.set(c.trim_end_ready, true);
            let _ = sst.push(c.trim_end_ready);
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
                    let _ = sst.push_range(range, Targets::All);
                }
                sst.set_elem(c.global_min_ready, sh.subgroup, true);
                let _ = sst.push_elem(c.global_min_ready, sh.subgroup);
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
        let resend = lock(&self.engine).ragged_trim(&trims, &*self.read_rdmc);
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

    /// Stops new sends and deliveries, flushes what is already filled, and tells the others.
    fn wedge(&mut self, sst: &Sst) {
        if self.wedged {
            return;
        }
        for s in &self.senders {
            lock(s).wedged = true;
        }
        {
            let mut e = lock(&self.engine);
            e.wedged = true;
            // One more pass publishes filled slots and what has been received so far; after
            // it this member's counters stop moving, before `wedged` is pushed behind them.
            e.run(sst);
            e.frozen = true;
        }
        self.wedged = true;
        sst.set(self.cols.wedged, true);
        let _ = sst.push(self.cols.wedged);
    }
}

/// Takes over the first `count` changes of rank `from`'s list (with the joiners' addresses) as
/// this member's own, and publishes them: the list first, then its length.
fn copy_changes(sst: &Sst, c: &GmsColumns, from: usize, count: i64) {
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
    let _ = sst.push_range(c.joiner_info.range(), Targets::All);
    let _ = sst.push_range(c.changes.range(), Targets::All);
    let _ = sst.push(c.num_changes);
}
