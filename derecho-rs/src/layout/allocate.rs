//! The allocation: members of a view (and the previous assignment) in, an [`Assignment`] out.
//!
//! See the [module docs](super) for the algorithm and its differences from the original.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{Assignment, LayoutError, LayoutPolicy, NodeId, Shard, ShardPolicy, SubgroupId};

/// Assigns the members of a view to shards.
///
/// `members` is the view's member list in rank order (rank order is join order, leader first).
/// `previous` is the last *adequate* assignment and the member list of the view it was made
/// for; without it this is a first view. Survivors (members of a previous shard that are still
/// in `members`) keep their shard and their relative order; departed nodes drop out; reserved
/// ids that are present join their shards; free members fill shards below their minimum first,
/// then are spread up to the maxima; the rest stay unassigned.
///
/// Errors: [`LayoutError::Inadequate`] when some shard cannot reach its minimum (keep
/// `previous` and retry when more members have joined); otherwise a policy, member-list or
/// previous-assignment mistake.
pub fn allocate(
    policy: &LayoutPolicy,
    members: &[NodeId],
    previous: Option<(&Assignment, &[NodeId])>,
) -> Result<Assignment, LayoutError> {
    policy.validate()?;
    let mut rank: HashMap<NodeId, usize> = HashMap::with_capacity(members.len());
    for (r, &node) in members.iter().enumerate() {
        if rank.insert(node, r).is_some() {
            return Err(LayoutError::DuplicateMember { node });
        }
    }
    let previous = match previous {
        Some((assignment, previous_members)) => {
            check_previous(policy, assignment, previous_members)?;
            Some(assignment)
        }
        None => None,
    };

    // One entry per shard in flat order, with its inherent members.
    let mut slots: Vec<Slot<'_>> = Vec::new();
    let mut subgroup_id = 0u32;
    for ty in &policy.types {
        for sg in &ty.subgroups {
            let mut placed: HashSet<NodeId> = HashSet::new();
            let first_slot = slots.len();
            for (s, shard_policy) in sg.shards.iter().enumerate() {
                let survivors: Vec<NodeId> = previous
                    .and_then(|p| p.shard(SubgroupId(subgroup_id), s))
                    .map(|shard| {
                        shard
                            .members()
                            .iter()
                            .copied()
                            .filter(|m| rank.contains_key(m))
                            .collect()
                    })
                    .unwrap_or_default();
                placed.extend(&survivors);
                slots.push(Slot {
                    subgroup: SubgroupId(subgroup_id),
                    shard: s,
                    policy: shard_policy,
                    members: survivors,
                    size: 0,
                });
            }
            // Reserved ids present in the view, after every survivor of the subgroup is known,
            // so a survivor is never added a second time to another shard of its subgroup.
            for slot in &mut slots[first_slot..] {
                let mut reserved: Vec<NodeId> = slot
                    .policy
                    .reserved
                    .iter()
                    .copied()
                    .filter(|id| rank.contains_key(id) && !placed.contains(id))
                    .collect();
                reserved.sort_by_key(|id| rank.get(id).copied().unwrap_or(usize::MAX));
                placed.extend(&reserved);
                slot.members.extend(reserved);
            }
            subgroup_id += 1;
        }
    }

    // Free nodes: present, holding no inherent place anywhere, reserved by nobody; rank order.
    // (A present reserved id is always inherent to its shard, so the last test only restates
    // that reserved ids never fill a shard that did not reserve them.)
    let inherent: HashSet<NodeId> = slots
        .iter()
        .flat_map(|slot| slot.members.iter().copied())
        .collect();
    let all_reserved: BTreeSet<NodeId> = policy.all_reserved();
    let free: Vec<NodeId> = members
        .iter()
        .copied()
        .filter(|m| !inherent.contains(m) && !all_reserved.contains(m))
        .collect();

    // Minimums first, in shard order; the first shard that cannot be filled is reported.
    let mut free_left = free.len();
    for slot in &mut slots {
        let have = slot.members.len();
        slot.size = have.max(slot.policy.min_nodes);
        let deficit = slot.size - have;
        if deficit > free_left {
            return Err(LayoutError::Inadequate {
                subgroup: slot.subgroup,
                shard: slot.shard,
                have: have + free_left,
                need: slot.policy.min_nodes,
            });
        }
        free_left -= deficit;
    }

    // Then one more node per shard per round, in shard order, up to each maximum.
    while free_left > 0 {
        let mut grew = false;
        for slot in &mut slots {
            if free_left > 0 && slot.size < slot.policy.max_nodes {
                slot.size += 1;
                free_left -= 1;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }

    // Each shard takes its share of free nodes as one run of ranks.
    let mut next_free = free.iter().copied();
    for slot in &mut slots {
        let wanted = slot.size - slot.members.len();
        slot.members.extend(next_free.by_ref().take(wanted));
    }

    // Build the result, type by type.
    let mut slots = slots.into_iter();
    let mut types = Vec::with_capacity(policy.types.len());
    for ty in &policy.types {
        let mut subgroups = Vec::with_capacity(ty.subgroups.len());
        for sg in &ty.subgroups {
            let mut shards = Vec::with_capacity(sg.shards.len());
            for slot in slots.by_ref().take(sg.shards.len()) {
                let flags = slot.policy.senders.flags(&slot.members);
                shards.push(Shard::new(
                    slot.members,
                    flags,
                    slot.policy.mode,
                    slot.policy.profile.clone(),
                )?);
            }
            subgroups.push(shards);
        }
        types.push((ty.name.clone(), subgroups));
    }
    Assignment::from_parts(types)
}

/// One shard being allocated.
struct Slot<'p> {
    subgroup: SubgroupId,
    shard: usize,
    policy: &'p ShardPolicy,
    /// Survivors (previous order), then present reserved ids (rank order), then free nodes.
    members: Vec<NodeId>,
    /// The size it will have.
    size: usize,
}

/// The previous assignment must have the policy's shape and name only previous members.
fn check_previous(
    policy: &LayoutPolicy,
    previous: &Assignment,
    previous_members: &[NodeId],
) -> Result<(), LayoutError> {
    let mismatch = |problem: String| Err(LayoutError::PreviousMismatch { problem });
    if previous.num_types() != policy.types.len() {
        return mismatch(format!(
            "it has {} types, the policy {}",
            previous.num_types(),
            policy.types.len()
        ));
    }
    for (t, ty) in policy.types.iter().enumerate() {
        let ids = previous.subgroup_ids_of_type(t);
        if ids.len() != ty.subgroups.len() {
            return mismatch(format!(
                "type {t} has {} subgroups in it, {} in the policy",
                ids.len(),
                ty.subgroups.len()
            ));
        }
        for (id, sg) in ids.zip(&ty.subgroups) {
            let had = previous.shards(SubgroupId(id)).map_or(0, <[Shard]>::len);
            if had != sg.shards.len() {
                return mismatch(format!(
                    "subgroup {id} has {had} shards in it, {} in the policy",
                    sg.shards.len()
                ));
            }
        }
    }
    let known: HashSet<NodeId> = previous_members.iter().copied().collect();
    if let Some(node) = previous
        .assigned_nodes()
        .into_iter()
        .find(|n| !known.contains(n))
    {
        return mismatch(format!(
            "node {node} holds a shard but is not a previous member"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::layout::{Mode, Senders, SubgroupPolicy, TypePolicy};

    fn members_of(a: &Assignment, id: u32) -> Vec<Vec<NodeId>> {
        a.shards(SubgroupId(id))
            .unwrap()
            .iter()
            .map(|s| s.members().to_vec())
            .collect()
    }

    fn two_tiers(front: SubgroupPolicy, back: SubgroupPolicy) -> LayoutPolicy {
        LayoutPolicy::new()
            .with_type(TypePolicy::one("Front", front))
            .with_type(TypePolicy::one("Back", back))
    }

    #[test]
    fn first_view_fills_in_rank_order() {
        let p = two_tiers(
            SubgroupPolicy::fixed_even(1, 2),
            SubgroupPolicy::fixed_even(2, 2),
        );
        let a = allocate(&p, &[10, 11, 12, 13, 14, 15, 16], None).unwrap();
        assert_eq!(members_of(&a, 0), vec![vec![10, 11]]);
        assert_eq!(members_of(&a, 1), vec![vec![12, 13], vec![14, 15]]);
        assert_eq!(a.unassigned(&[10, 11, 12, 13, 14, 15, 16]), vec![16]);
    }

    #[test]
    fn extras_spread_one_per_shard_per_round() {
        // Two shards of 1..=3 and one of 1..=2: minimums take 3 nodes, then rounds add
        // shard 0, shard 1, shard 2, then shard 0, shard 1 (shard 2 is full).
        let p = LayoutPolicy::new()
            .with_type(TypePolicy::one("A", SubgroupPolicy::flexible_even(2, 1, 3)))
            .with_type(TypePolicy::one("B", SubgroupPolicy::flexible_even(1, 1, 2)));
        let a = allocate(&p, &[0, 1, 2, 3, 4, 5, 6, 7], None).unwrap();
        assert_eq!(members_of(&a, 0), vec![vec![0, 1, 2], vec![3, 4, 5]]);
        assert_eq!(members_of(&a, 1), vec![vec![6, 7]]);
        let a = allocate(&p, &[0, 1, 2, 3, 4], None).unwrap();
        assert_eq!(members_of(&a, 0), vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(members_of(&a, 1), vec![vec![4]]);
    }

    #[test]
    fn inadequate_names_the_first_shard_that_cannot_be_filled() {
        let p = two_tiers(
            SubgroupPolicy::fixed_even(1, 2),
            SubgroupPolicy::fixed_even(2, 2),
        );
        assert!(allocate(&p, &[0, 1, 2, 3, 4, 5], None).is_ok());
        assert_eq!(
            allocate(&p, &[0, 1, 2, 3, 4], None).unwrap_err(),
            LayoutError::Inadequate {
                subgroup: SubgroupId(1),
                shard: 1,
                have: 1,
                need: 2
            }
        );
        assert_eq!(
            allocate(&p, &[0], None).unwrap_err(),
            LayoutError::Inadequate {
                subgroup: SubgroupId(0),
                shard: 0,
                have: 1,
                need: 2
            }
        );
    }

    #[test]
    fn survivors_stay_and_joiners_fill_the_hole() {
        let p = two_tiers(
            SubgroupPolicy::flexible_even(1, 1, 2),
            SubgroupPolicy::flexible_even(2, 2, 3),
        );
        let v0 = [0, 1, 2, 3, 4, 5];
        let a0 = allocate(&p, &v0, None).unwrap();
        assert_eq!(members_of(&a0, 1), vec![vec![2, 3], vec![4, 5]]);
        // Node 2 fails: its shard drops below its minimum and nobody is free.
        let v1 = [0, 1, 3, 4, 5];
        let e = allocate(&p, &v1, Some((&a0, &v0))).unwrap_err();
        assert_eq!(
            e,
            LayoutError::Inadequate {
                subgroup: SubgroupId(1),
                shard: 0,
                have: 1,
                need: 2
            }
        );
        // Node 9 joins: it fills the hole, nobody moves.
        let v2 = [0, 1, 3, 4, 5, 9];
        let a2 = allocate(&p, &v2, Some((&a0, &v0))).unwrap();
        assert_eq!(members_of(&a2, 0), vec![vec![0, 1]]);
        assert_eq!(members_of(&a2, 1), vec![vec![3, 9], vec![4, 5]]);
        // Node 0 fails: the front tier keeps 1 (its minimum) and nobody is moved to it.
        let v3 = [1, 3, 4, 5, 9];
        let a3 = allocate(&p, &v3, Some((&a2, &v2))).unwrap();
        assert_eq!(members_of(&a3, 0), vec![vec![1]]);
        assert_eq!(members_of(&a3, 1), vec![vec![3, 9], vec![4, 5]]);
    }

    #[test]
    fn reserved_ids_go_first_and_overlap_across_subgroups() {
        let shard = crate::layout::ShardPolicy::new(2, 3).with_reserved([7, 8]);
        let p = LayoutPolicy::new()
            .with_type(TypePolicy::one(
                "A",
                SubgroupPolicy::by_shard(vec![shard.clone()]),
            ))
            .with_type(TypePolicy::one("B", SubgroupPolicy::by_shard(vec![shard])));
        // 8 is absent; 7 joins both subgroups; free nodes fill the rest.
        let a = allocate(&p, &[0, 1, 7, 2], None).unwrap();
        assert_eq!(members_of(&a, 0), vec![vec![7, 0, 1]]);
        assert_eq!(members_of(&a, 1), vec![vec![7, 2]]);
        assert_eq!(a.shards_of(7), vec![(SubgroupId(0), 0), (SubgroupId(1), 0)]);
    }

    #[test]
    fn senders_and_modes_reach_the_shards() {
        let p = two_tiers(
            SubgroupPolicy::fixed_even(1, 3).with_senders(Senders::First(1)),
            SubgroupPolicy::fixed_even(1, 2)
                .with_mode(Mode::Raw)
                .with_profile("BULK"),
        );
        let a = allocate(&p, &[4, 5, 6, 7, 8], None).unwrap();
        let front = a.shard(SubgroupId(0), 0).unwrap();
        assert_eq!(front.is_sender(), [true, false, false]);
        assert_eq!(front.mode(), Mode::Ordered);
        let back = a.shard(SubgroupId(1), 0).unwrap();
        assert_eq!(back.mode(), Mode::Raw);
        assert_eq!(back.profile(), "BULK");
        assert_eq!(a.num_received_offset(SubgroupId(1)), Some(1));
        assert_eq!(a.num_received_size(), 3);
    }

    #[test]
    fn bad_inputs_are_reported() {
        let p = two_tiers(
            SubgroupPolicy::fixed_even(1, 1),
            SubgroupPolicy::fixed_even(1, 1),
        );
        assert_eq!(
            allocate(&p, &[1, 2, 1], None).unwrap_err(),
            LayoutError::DuplicateMember { node: 1 }
        );
        let a = allocate(&p, &[1, 2], None).unwrap();
        let other = LayoutPolicy::new()
            .with_type(TypePolicy::one("Front", SubgroupPolicy::fixed_even(1, 1)));
        assert!(matches!(
            allocate(&other, &[1, 2], Some((&a, &[1, 2]))),
            Err(LayoutError::PreviousMismatch { .. })
        ));
        assert!(matches!(
            allocate(&p, &[1, 2], Some((&a, &[1]))),
            Err(LayoutError::PreviousMismatch { .. })
        ));
        let shards = two_tiers(
            SubgroupPolicy::fixed_even(1, 1),
            SubgroupPolicy::fixed_even(2, 1),
        );
        assert!(matches!(
            allocate(&shards, &[1, 2, 3], Some((&a, &[1, 2]))),
            Err(LayoutError::PreviousMismatch { .. })
        ));
    }

    #[test]
    fn empty_policy_and_single_node() {
        assert_eq!(
            allocate(&LayoutPolicy::new(), &[3], None)
                .unwrap()
                .num_subgroups(),
            0
        );
        let p = LayoutPolicy::new().with_type(TypePolicy::one(
            "Solo",
            SubgroupPolicy::flexible_even(1, 1, 8),
        ));
        let a = allocate(&p, &[42], None).unwrap();
        assert_eq!(members_of(&a, 0), vec![vec![42]]);
    }
}
