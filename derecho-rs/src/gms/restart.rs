//! Total restart: the decisions a restart leader makes after every member of a persistent
//! group went down, as pure functions over what the restarting nodes report.
//!
//! A node whose storage holds a logged view starts in restart mode: it asks to join with a
//! [`RestartInfo`] (that view, and for each persistent shard it held, the newest version on
//! its disk). The node that forms the first view collects these and [`assess`]es them:
//!
//! - **Quorum** (rule R1): the newest logged view among the participants is the last view
//!   anyone can have installed (a later one would have needed a majority of it, and every
//!   member logs a view before it uses it). The restart waits for a strict majority of that
//!   view's members **and** at least one of its members from every shard, so that two disjoint
//!   restarts cannot both proceed and every shard's history is represented.
//! - **Longest log** (R2): per shard, the participant with the newest version holds every
//!   version any participant holds (logs of one shard are prefixes of one history), and every
//!   version that was globally persisted (on disk at every member of the shard, one of whom is
//!   here). It is the shard's source.
//! - **Restart view** (R3): view id one past the newest logged view; the shards' other
//!   members receive the source's replica by state transfer and replace their own (which
//!   truncates their logs to the source's history) before anything is delivered.
//!
//! The leader waits [`RestartPlan::everyone`] or a grace period after the quorum is first
//! met, then installs the view with the same prepare/ack/commit as any first view; a joiner
//! that fails meanwhile aborts it and the leader assesses again.

use serde::{Deserialize, Serialize};

use super::view::{Transfer, View};
use crate::NodeId;

/// The newest version of one persistent shard on a node's disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardVersion {
    /// Flat subgroup id.
    pub subgroup: usize,
    /// Shard index within the subgroup.
    pub shard: usize,
    /// Newest version persisted (`vid << 32 | seq`), −1 if none.
    pub version: i64,
}

/// What a restarting node reports to the restart leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartInfo {
    /// The last view this node logged.
    pub view: View,
    /// The persistent shards it held in that view, with their newest versions on disk.
    pub versions: Vec<ShardVersion>,
}

/// The source of one shard's state in a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// Flat subgroup id.
    pub subgroup: usize,
    /// Shard index.
    pub shard: usize,
    /// The participant with the newest version of the shard.
    pub node: NodeId,
    /// That version.
    pub version: i64,
}

/// A restart that may proceed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartPlan {
    /// The newest logged view among the participants.
    pub last: View,
    /// The restart view's id: one past `last`.
    pub vid: u64,
    /// Per persistent shard of `last` that some participant persisted: its source.
    pub sources: Vec<Source>,
    /// Every member of `last` is back: nobody else is worth waiting for.
    pub everyone: bool,
}

/// What the restart leader does with the participants it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Nobody reported a logged view: an ordinary first view.
    Fresh,
    /// A restart, but the quorum is not met yet (the reason says what is missing).
    Wait(WaitReason),
    /// A restart that may proceed.
    Ready(RestartPlan),
}

/// What a total restart still waits for (see [`Restart::Wait`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitReason {
    /// R1: no strict majority of the last logged view is back.
    #[error(
        "{present} of the {members} members of the last logged view {vid} are back; a restart \
         needs more than half"
    )]
    NoMajority {
        /// Members of the last view that are back.
        present: usize,
        /// Members of the last view.
        members: usize,
        /// The last logged view.
        vid: u64,
    },
    /// R1: no holder of some shard of the last logged view is back.
    #[error("no member of subgroup {subgroup} shard {shard} of view {vid} ({holders:?}) is back")]
    NoHolder {
        /// The subgroup.
        subgroup: usize,
        /// The shard.
        shard: usize,
        /// The last logged view.
        vid: u64,
        /// The members that held the shard in it.
        holders: Vec<NodeId>,
    },
}

/// Assesses the participants (node id, and what it reported if it restarts from logs).
pub fn assess(participants: &[(NodeId, Option<&RestartInfo>)]) -> Restart {
    let Some(last) = participants
        .iter()
        .filter_map(|(_, r)| *r)
        .max_by_key(|r| r.view.vid)
        .map(|r| &r.view)
    else {
        return Restart::Fresh;
    };
    let here = |id: NodeId| participants.iter().any(|(p, _)| *p == id);
    let ids = last.ids();
    let present = ids.iter().filter(|id| here(**id)).count();
    // R1: a strict majority of the last view ...
    if 2 * present <= ids.len() {
        return Restart::Wait(WaitReason::NoMajority {
            present,
            members: ids.len(),
            vid: last.vid,
        });
    }
    // ... and somebody from each of its shards (in an inadequate view: the shards whose state
    // its members still hold).
    for (sg, s) in last.holders().iter().enumerate() {
        for (k, shard) in s.shards.iter().enumerate() {
            if !shard.members.iter().any(|m| here(*m)) {
                return Restart::Wait(WaitReason::NoHolder {
                    subgroup: sg,
                    shard: k,
                    vid: last.vid,
                    holders: shard.members.clone(),
                });
            }
        }
    }
    // R2: the longest log of each shard; ties go to the lowest id, so every leader picks the
    // same source.
    let mut sources: Vec<Source> = Vec::new();
    for (node, info) in participants {
        let Some(info) = info else { continue };
        for v in &info.versions {
            if v.version < 0 {
                continue;
            }
            match sources
                .iter_mut()
                .find(|s| (s.subgroup, s.shard) == (v.subgroup, v.shard))
            {
                Some(s) => {
                    if (v.version, std::cmp::Reverse(*node))
                        > (s.version, std::cmp::Reverse(s.node))
                    {
                        s.node = *node;
                        s.version = v.version;
                    }
                }
                None => sources.push(Source {
                    subgroup: v.subgroup,
                    shard: v.shard,
                    node: *node,
                    version: v.version,
                }),
            }
        }
    }
    sources.sort_by_key(|s| (s.subgroup, s.shard));
    Restart::Ready(RestartPlan {
        last: last.clone(),
        vid: last.vid + 1,
        sources,
        everyone: present == ids.len(),
    })
}

/// The view a restart view is laid out from: the last logged view, with the shards its
/// members hold as its subgroups when it is inadequate (so survivors keep their shards).
pub fn layout_basis(last: &View) -> View {
    let mut v = last.clone();
    if !v.is_adequate() {
        v.subgroups = std::mem::take(&mut v.held);
        v.inadequate = None;
    }
    v
}

/// Why a restart view's layout does not fit its [`RestartPlan`] (see [`transfers`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanMismatch {
    /// The restart view lacks a shard the plan restores.
    #[error("the restart view has no subgroup {subgroup} shard {shard} to restore")]
    NoShard {
        /// The subgroup.
        subgroup: usize,
        /// The shard.
        shard: usize,
    },
    /// The node with a shard's newest log is placed outside that shard.
    #[error(
        "node {node}, which holds the newest log of subgroup {subgroup} shard {shard}, is not \
         placed in that shard"
    )]
    SourceMoved {
        /// The node.
        node: NodeId,
        /// The subgroup.
        subgroup: usize,
        /// The shard.
        shard: usize,
    },
}

/// R3: the transfers of the restart view `view` (its shards laid out from the plan's last
/// view): every member of a shard but its source receives the source's replica. An error says
/// why the layout does not fit the plan (a source placed outside its old shard).
pub fn transfers(plan: &RestartPlan, view: &View) -> Result<Vec<Transfer>, PlanMismatch> {
    let mut out = Vec::new();
    for s in &plan.sources {
        let Some(shard) = view
            .subgroups
            .get(s.subgroup)
            .and_then(|g| g.shards.get(s.shard))
        else {
            return Err(PlanMismatch::NoShard {
                subgroup: s.subgroup,
                shard: s.shard,
            });
        };
        if !shard.members.contains(&s.node) {
            return Err(PlanMismatch::SourceMoved {
                node: s.node,
                subgroup: s.subgroup,
                shard: s.shard,
            });
        }
        let to: Vec<NodeId> = shard
            .members
            .iter()
            .copied()
            .filter(|m| *m != s.node)
            .collect();
        if !to.is_empty() {
            out.push(Transfer {
                subgroup: s.subgroup,
                shard: s.shard,
                from: s.node,
                to,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::gms::testing::sharded_view as view_of;

    fn info(view: &View, versions: &[(usize, usize, i64)]) -> RestartInfo {
        RestartInfo {
            view: view.clone(),
            versions: versions
                .iter()
                .map(|&(subgroup, shard, version)| ShardVersion {
                    subgroup,
                    shard,
                    version,
                })
                .collect(),
        }
    }

    /// Nobody has logs: no restart.
    #[test]
    fn without_logged_views_the_first_view_is_fresh() {
        assert_eq!(assess(&[(0, None), (1, None)]), Restart::Fresh);
    }

    /// R1: half of the last view is not a quorum; more than half is.
    #[test]
    fn r1_a_restart_waits_for_a_strict_majority_of_the_last_view() {
        let last = view_of(7, &[0, 1, 2, 3], &[&[0, 1, 2, 3]]);
        let a = info(&last, &[(0, 0, 5)]);
        let b = info(&last, &[(0, 0, 9)]);
        assert!(matches!(
            assess(&[(0, Some(&a)), (1, Some(&b))]),
            Restart::Wait(_)
        ));
        // A fresh node does not count towards the quorum.
        assert!(matches!(
            assess(&[(0, Some(&a)), (1, Some(&b)), (9, None)]),
            Restart::Wait(_)
        ));
        let c = info(&last, &[(0, 0, 7)]);
        match assess(&[(0, Some(&a)), (1, Some(&b)), (2, Some(&c))]) {
            Restart::Ready(p) => {
                assert_eq!(p.vid, 8);
                assert!(!p.everyone);
            }
            other => panic!("{other:?}"),
        }
    }

    /// R1: every shard of the last view must be represented.
    #[test]
    fn r1_a_restart_waits_for_somebody_from_every_shard() {
        let last = view_of(3, &[0, 1, 2, 3, 4], &[&[0, 1, 2], &[3, 4]]);
        let i = info(&last, &[]);
        let got = assess(&[(0, Some(&i)), (1, Some(&i)), (2, Some(&i))]);
        assert!(
            matches!(&got, Restart::Wait(WaitReason::NoHolder { shard: 1, .. })),
            "{got:?}"
        );
        assert!(matches!(
            assess(&[(0, Some(&i)), (1, Some(&i)), (3, Some(&i))]),
            Restart::Ready(_)
        ));
    }

    /// R1: the newest logged view decides, whoever reports an older one.
    #[test]
    fn r1_the_newest_logged_view_is_the_last_view() {
        let old = view_of(4, &[0, 1, 2], &[&[0, 1, 2]]);
        let new = view_of(5, &[1, 2], &[&[1, 2]]);
        let o = info(&old, &[(0, 0, 40)]);
        let n = info(&new, &[(0, 0, 50)]);
        match assess(&[(0, Some(&o)), (1, Some(&n)), (2, Some(&n))]) {
            Restart::Ready(p) => {
                assert_eq!((p.last.vid, p.vid), (5, 6));
                assert!(p.everyone);
            }
            other => panic!("{other:?}"),
        }
        // Node 0 alone with the older view cannot make a quorum of view 5.
        assert!(matches!(
            assess(&[(0, Some(&o)), (1, Some(&n))]),
            Restart::Wait(_)
        ));
    }

    /// R2: per shard, the newest version is the source; ties go to the lowest id.
    #[test]
    fn r2_the_longest_log_of_each_shard_is_its_source() {
        let last = view_of(2, &[0, 1, 2, 3], &[&[0, 1], &[2, 3]]);
        let p = [
            (0, Some(info(&last, &[(0, 0, 10)]))),
            (1, Some(info(&last, &[(0, 0, 12)]))),
            (2, Some(info(&last, &[(0, 1, 8)]))),
            (3, Some(info(&last, &[(0, 1, 8)]))),
        ];
        let refs: Vec<(NodeId, Option<&RestartInfo>)> =
            p.iter().map(|(n, i)| (*n, i.as_ref())).collect();
        let Restart::Ready(plan) = assess(&refs) else {
            panic!("not ready")
        };
        let got: Vec<(usize, NodeId, i64)> = plan
            .sources
            .iter()
            .map(|s| (s.shard, s.node, s.version))
            .collect();
        assert_eq!(got, vec![(0, 1, 12), (1, 2, 8)]);
    }

    /// R1 with an inadequate last view: its shards are the ones its members still hold.
    #[test]
    fn r1_an_inadequate_last_view_counts_the_shards_its_members_hold() {
        let adequate = view_of(4, &[0, 1, 2, 3], &[&[0, 1], &[2, 3]]);
        let mut last = view_of(5, &[0, 1, 2], &[]);
        last.subgroups.clear();
        last.inadequate = Some("shard 1 needs two members".into());
        last.held = adequate.subgroups.clone();
        last.held[0].shards[1].members.retain(|m| *m != 3);
        let i = info(&last, &[]);
        assert!(matches!(
            assess(&[(0, Some(&i)), (1, Some(&i))]),
            Restart::Wait(WaitReason::NoHolder { shard: 1, .. })
        ));
        assert!(matches!(
            assess(&[(0, Some(&i)), (2, Some(&i))]),
            Restart::Ready(_)
        ));
        let basis = layout_basis(&last);
        assert!(basis.is_adequate());
        assert_eq!(basis.subgroups[0].shards[1].members, vec![2]);
    }

    /// R3: every other member of a shard receives its source's state; a source placed
    /// elsewhere is an error.
    #[test]
    fn r3_the_others_of_each_shard_receive_the_source_state() {
        let last = view_of(2, &[0, 1, 2], &[&[0, 1, 2]]);
        let plan = RestartPlan {
            last: last.clone(),
            vid: 3,
            sources: vec![Source {
                subgroup: 0,
                shard: 0,
                node: 1,
                version: 9,
            }],
            everyone: true,
        };
        let restart = view_of(3, &[0, 1, 2, 5], &[&[0, 1, 5]]);
        let t = transfers(&plan, &restart).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].from, t[0].to.clone()), (1, vec![0, 5]));
        let moved = view_of(3, &[0, 2, 5], &[&[0, 2, 5]]);
        assert_eq!(
            transfers(&plan, &moved),
            Err(PlanMismatch::SourceMoved {
                node: 1,
                subgroup: 0,
                shard: 0
            })
        );
    }
}
