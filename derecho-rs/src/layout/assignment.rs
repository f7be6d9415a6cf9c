//! The result of an allocation: type → subgroup → shard → members, senders, mode, profile.
//!
//! Stored flat: subgroups in [`SubgroupId`] order (types in declaration order, subgroups in
//! index order), so the id the multicast layer uses to index SST columns is a plain position.
//! Deserializing checks the same rules as [`Assignment::from_parts`], so an assignment that
//! arrives inside a view is as sound as one computed locally.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::{LayoutError, Mode, NodeId};

/// A subgroup's position among all subgroups of all types, in declaration order.
///
/// With types `A` (two subgroups) and `B` (one), `A[0]` is 0, `A[1]` is 1 and `B[0]` is 2. SST
/// columns that exist once per subgroup are indexed by it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct SubgroupId(pub u32);

impl SubgroupId {
    /// The id as a vector index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for SubgroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One shard of one view: its members in shard-rank order, who sends, mode and profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ShardRepr", into = "ShardRepr")]
pub struct Shard {
    members: Vec<NodeId>,
    is_sender: Vec<bool>,
    mode: Mode,
    profile: String,
}

/// The serialized form of a [`Shard`], checked on the way in.
#[derive(Clone, Serialize, Deserialize)]
struct ShardRepr {
    members: Vec<NodeId>,
    is_sender: Vec<bool>,
    mode: Mode,
    profile: String,
}

impl TryFrom<ShardRepr> for Shard {
    type Error = LayoutError;
    fn try_from(r: ShardRepr) -> Result<Self, LayoutError> {
        Shard::new(r.members, r.is_sender, r.mode, r.profile)
    }
}

impl From<Shard> for ShardRepr {
    fn from(s: Shard) -> Self {
        ShardRepr {
            members: s.members,
            is_sender: s.is_sender,
            mode: s.mode,
            profile: s.profile,
        }
    }
}

impl Shard {
    /// A shard; `is_sender[i]` says whether `members[i]` sends. Fails if the lengths differ or a
    /// node is listed twice.
    pub fn new(
        members: Vec<NodeId>,
        is_sender: Vec<bool>,
        mode: Mode,
        profile: impl Into<String>,
    ) -> Result<Shard, LayoutError> {
        if members.len() != is_sender.len() {
            return Err(LayoutError::InvalidAssignment {
                problem: format!(
                    "a shard has {} members but {} sender flags",
                    members.len(),
                    is_sender.len()
                ),
            });
        }
        let mut seen = BTreeSet::new();
        if let Some(node) = members.iter().find(|&&id| !seen.insert(id)) {
            return Err(LayoutError::InvalidAssignment {
                problem: format!("node {node} is listed twice in one shard"),
            });
        }
        Ok(Shard {
            members,
            is_sender,
            mode,
            profile: profile.into(),
        })
    }

    /// Members, in the order they hold shard ranks (rank 0 first).
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// The sender flag of each member, by shard rank.
    pub fn is_sender(&self) -> &[bool] {
        &self.is_sender
    }

    /// Delivery mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Profile name (`[SUBGROUP/<profile>]`).
    pub fn profile(&self) -> &str {
        &self.profile
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True if the shard has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// True if `node` is a member.
    pub fn contains(&self, node: NodeId) -> bool {
        self.members.contains(&node)
    }

    /// The shard rank of `node`.
    pub fn rank_of(&self, node: NodeId) -> Option<usize> {
        self.members.iter().position(|&m| m == node)
    }

    /// Number of senders.
    pub fn num_senders(&self) -> usize {
        self.is_sender.iter().filter(|&&s| s).count()
    }

    /// The senders, in shard-rank order.
    pub fn senders(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .zip(&self.is_sender)
            .filter(|(_, &s)| s)
            .map(|(&m, _)| m)
    }

    /// The sender rank of `node` (its position among the senders), if it is a sender. The
    /// total order interleaves senders by this rank and `num_received` columns follow it.
    pub fn sender_rank_of(&self, node: NodeId) -> Option<usize> {
        self.senders().position(|m| m == node)
    }
}

/// One type of an [`Assignment`]: its name and how many subgroups it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TypeEntry {
    name: String,
    num_subgroups: u32,
}

/// Who holds which shard in one view: the result of [`allocate`](super::allocate).
///
/// Serializable: it travels inside the view. Every accessor that takes a [`SubgroupId`] or shard
/// index answers `None` (or an empty result) for one out of range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AssignmentRepr", into = "AssignmentRepr")]
pub struct Assignment {
    types: Vec<TypeEntry>,
    /// Shards of each subgroup, indexed by [`SubgroupId`].
    subgroups: Vec<Vec<Shard>>,
}

/// The serialized form of an [`Assignment`], checked on the way in.
#[derive(Clone, Serialize, Deserialize)]
struct AssignmentRepr {
    types: Vec<TypeEntry>,
    subgroups: Vec<Vec<Shard>>,
}

impl TryFrom<AssignmentRepr> for Assignment {
    type Error = LayoutError;
    fn try_from(r: AssignmentRepr) -> Result<Self, LayoutError> {
        let declared: u64 = r.types.iter().map(|t| u64::from(t.num_subgroups)).sum();
        if declared != r.subgroups.len() as u64 {
            return Err(LayoutError::InvalidAssignment {
                problem: format!(
                    "the types declare {declared} subgroups but {} are present",
                    r.subgroups.len()
                ),
            });
        }
        let a = Assignment {
            types: r.types,
            subgroups: r.subgroups,
        };
        a.check()?;
        Ok(a)
    }
}

impl From<Assignment> for AssignmentRepr {
    fn from(a: Assignment) -> Self {
        AssignmentRepr {
            types: a.types,
            subgroups: a.subgroups,
        }
    }
}

impl Assignment {
    /// Builds an assignment by hand (a custom allocator, a test): for each type in declaration
    /// order, its name and, for each of its subgroups, the shards. Fails if a subgroup has no
    /// shard, a node is in two shards of one subgroup, or a type name repeats.
    pub fn from_parts(types: Vec<(String, Vec<Vec<Shard>>)>) -> Result<Assignment, LayoutError> {
        let mut entries = Vec::with_capacity(types.len());
        let mut subgroups = Vec::new();
        for (name, subs) in types {
            let num_subgroups =
                u32::try_from(subs.len()).map_err(|_| LayoutError::InvalidAssignment {
                    problem: format!("type `{name}` has too many subgroups"),
                })?;
            entries.push(TypeEntry {
                name,
                num_subgroups,
            });
            subgroups.extend(subs);
        }
        let a = Assignment {
            types: entries,
            subgroups,
        };
        a.check()?;
        Ok(a)
    }

    /// The rules shared by [`from_parts`](Self::from_parts) and deserialization.
    fn check(&self) -> Result<(), LayoutError> {
        let bad = |problem: String| Err(LayoutError::InvalidAssignment { problem });
        let mut names = BTreeSet::new();
        for t in &self.types {
            if !names.insert(t.name.as_str()) {
                return bad(format!("type `{}` appears twice", t.name));
            }
        }
        if u32::try_from(self.subgroups.len()).is_err() {
            return bad("too many subgroups".into());
        }
        for (id, shards) in self.subgroups.iter().enumerate() {
            if shards.is_empty() {
                return bad(format!("subgroup {id} has no shard"));
            }
            let mut seen = BTreeSet::new();
            for shard in shards {
                if let Some(node) = shard.members().iter().find(|&&n| !seen.insert(n)) {
                    return bad(format!("node {node} is in two shards of subgroup {id}"));
                }
            }
        }
        Ok(())
    }

    /// Number of types.
    pub fn num_types(&self) -> usize {
        self.types.len()
    }

    /// Name of type `type_index`.
    pub fn type_name(&self, type_index: usize) -> Option<&str> {
        self.types.get(type_index).map(|t| t.name.as_str())
    }

    /// Position of the type called `name`.
    pub fn type_index(&self, name: &str) -> Option<usize> {
        self.types.iter().position(|t| t.name == name)
    }

    /// Number of subgroups of all types (the number of flat ids).
    pub fn num_subgroups(&self) -> usize {
        self.subgroups.len()
    }

    /// The flat ids of type `type_index`'s subgroups (empty if there is no such type).
    pub fn subgroup_ids_of_type(&self, type_index: usize) -> Range<u32> {
        let Some(t) = self.types.get(type_index) else {
            return 0..0;
        };
        let first: u32 = self.types[..type_index]
            .iter()
            .map(|t| t.num_subgroups)
            .sum();
        first..first + t.num_subgroups
    }

    /// The flat id of subgroup `index` of type `type_index`.
    pub fn subgroup_id(&self, type_index: usize, index: usize) -> Option<SubgroupId> {
        let range = self.subgroup_ids_of_type(type_index);
        let id = range.start.checked_add(u32::try_from(index).ok()?)?;
        range.contains(&id).then_some(SubgroupId(id))
    }

    /// The flat id of subgroup `index` of the type called `type_name`.
    pub fn subgroup_id_by_name(&self, type_name: &str, index: usize) -> Option<SubgroupId> {
        self.subgroup_id(self.type_index(type_name)?, index)
    }

    /// The type index and index within the type of subgroup `id`.
    pub fn type_of(&self, id: SubgroupId) -> Option<(usize, usize)> {
        let mut first = 0u32;
        for (t, entry) in self.types.iter().enumerate() {
            if id.0 < first + entry.num_subgroups {
                return Some((t, (id.0 - first) as usize));
            }
            first += entry.num_subgroups;
        }
        None
    }

    /// Every subgroup with its shards, in flat order.
    pub fn subgroups(&self) -> impl Iterator<Item = (SubgroupId, &[Shard])> + '_ {
        // The length fits in u32 (checked at construction), so the cast is lossless.
        (0u32..)
            .zip(&self.subgroups)
            .map(|(id, s)| (SubgroupId(id), s.as_slice()))
    }

    /// The shards of subgroup `id`.
    pub fn shards(&self, id: SubgroupId) -> Option<&[Shard]> {
        self.subgroups.get(id.index()).map(Vec::as_slice)
    }

    /// Shard `shard` of subgroup `id`.
    pub fn shard(&self, id: SubgroupId, shard: usize) -> Option<&Shard> {
        self.shards(id)?.get(shard)
    }

    /// The shard of subgroup `id` that `node` belongs to.
    pub fn shard_of(&self, id: SubgroupId, node: NodeId) -> Option<usize> {
        self.shards(id)?.iter().position(|s| s.contains(node))
    }

    /// Every (subgroup, shard) `node` belongs to, in flat order. More than one entry only for a
    /// node in overlapping subgroups.
    pub fn shards_of(&self, node: NodeId) -> Vec<(SubgroupId, usize)> {
        self.subgroups()
            .filter_map(|(id, shards)| {
                shards
                    .iter()
                    .position(|s| s.contains(node))
                    .map(|shard| (id, shard))
            })
            .collect()
    }

    /// True if `node` holds any shard.
    pub fn is_assigned(&self, node: NodeId) -> bool {
        self.subgroups
            .iter()
            .flatten()
            .any(|shard| shard.contains(node))
    }

    /// Every node that holds a shard.
    pub fn assigned_nodes(&self) -> BTreeSet<NodeId> {
        self.subgroups
            .iter()
            .flatten()
            .flat_map(|shard| shard.members().iter().copied())
            .collect()
    }

    /// The nodes of `members` (in their order) that hold no shard.
    pub fn unassigned(&self, members: &[NodeId]) -> Vec<NodeId> {
        let assigned = self.assigned_nodes();
        members
            .iter()
            .copied()
            .filter(|m| !assigned.contains(m))
            .collect()
    }

    /// The most senders any shard of subgroup `id` has: the number of `num_received` columns
    /// the subgroup needs (0 for an unknown id).
    pub fn max_senders(&self, id: SubgroupId) -> usize {
        self.shards(id)
            .map(|shards| shards.iter().map(Shard::num_senders).max().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Where subgroup `id`'s `num_received` columns start: the sum of
    /// [`max_senders`](Self::max_senders) over the subgroups before it.
    pub fn num_received_offset(&self, id: SubgroupId) -> Option<usize> {
        if id.index() >= self.subgroups.len() {
            return None;
        }
        Some(
            (0..id.0)
                .map(|earlier| self.max_senders(SubgroupId(earlier)))
                .sum(),
        )
    }

    /// Total number of `num_received` columns (the original's `num_received_size`).
    pub fn num_received_size(&self) -> usize {
        self.subgroups().map(|(id, _)| self.max_senders(id)).sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn shard(members: &[NodeId], senders: &[bool]) -> Shard {
        Shard::new(members.to_vec(), senders.to_vec(), Mode::Ordered, "DEFAULT").unwrap()
    }

    fn sample() -> Assignment {
        Assignment::from_parts(vec![
            (
                "A".into(),
                vec![
                    vec![shard(&[0, 1], &[true, true]), shard(&[2], &[true])],
                    vec![shard(&[3, 4, 5], &[true, false, true])],
                ],
            ),
            ("B".into(), vec![vec![shard(&[6, 0], &[false, false])]]),
        ])
        .unwrap()
    }

    #[test]
    fn flat_ids_follow_declaration_order() {
        let a = sample();
        assert_eq!(a.num_subgroups(), 3);
        assert_eq!(a.subgroup_id(0, 0), Some(SubgroupId(0)));
        assert_eq!(a.subgroup_id(0, 1), Some(SubgroupId(1)));
        assert_eq!(a.subgroup_id(0, 2), None);
        assert_eq!(a.subgroup_id(1, 0), Some(SubgroupId(2)));
        assert_eq!(a.subgroup_id(2, 0), None);
        assert_eq!(a.subgroup_id_by_name("B", 0), Some(SubgroupId(2)));
        assert_eq!(a.type_of(SubgroupId(1)), Some((0, 1)));
        assert_eq!(a.type_of(SubgroupId(2)), Some((1, 0)));
        assert_eq!(a.type_of(SubgroupId(3)), None);
        assert_eq!(a.subgroup_ids_of_type(1), 2..3);
        assert_eq!(a.type_name(1), Some("B"));
    }

    #[test]
    fn membership_queries() {
        let a = sample();
        assert_eq!(a.shard_of(SubgroupId(0), 2), Some(1));
        assert_eq!(a.shard_of(SubgroupId(1), 2), None);
        assert_eq!(a.shards_of(0), vec![(SubgroupId(0), 0), (SubgroupId(2), 0)]);
        assert!(a.is_assigned(6));
        assert!(!a.is_assigned(7));
        assert_eq!(a.unassigned(&[7, 0, 8]), vec![7, 8]);
        let s = a.shard(SubgroupId(1), 0).unwrap();
        assert_eq!(s.num_senders(), 2);
        assert_eq!(s.senders().collect::<Vec<_>>(), vec![3, 5]);
        assert_eq!(s.sender_rank_of(5), Some(1));
        assert_eq!(s.sender_rank_of(4), None);
        assert_eq!(s.rank_of(4), Some(1));
    }

    #[test]
    fn num_received_offsets_count_senders() {
        let a = sample();
        assert_eq!(a.max_senders(SubgroupId(0)), 2);
        assert_eq!(a.max_senders(SubgroupId(1)), 2);
        assert_eq!(a.max_senders(SubgroupId(2)), 0);
        assert_eq!(a.num_received_offset(SubgroupId(0)), Some(0));
        assert_eq!(a.num_received_offset(SubgroupId(1)), Some(2));
        assert_eq!(a.num_received_offset(SubgroupId(2)), Some(4));
        assert_eq!(a.num_received_offset(SubgroupId(3)), None);
        assert_eq!(a.num_received_size(), 4);
    }

    #[test]
    fn serde_round_trip_and_checks() {
        let a = sample();
        let text = serde_json::to_string(&a).unwrap();
        let back: Assignment = serde_json::from_str(&text).unwrap();
        assert_eq!(back, a);
        // Tampering is caught on the way in.
        let twice = text.replace("\"members\":[2]", "\"members\":[1]");
        assert_ne!(twice, text);
        assert!(serde_json::from_str::<Assignment>(&twice).is_err());
        let flags = text.replace("[true,false,true]", "[true,false]");
        assert!(serde_json::from_str::<Assignment>(&flags).is_err());
        let count = text.replace("\"num_subgroups\":1", "\"num_subgroups\":2");
        assert!(serde_json::from_str::<Assignment>(&count).is_err());
    }

    #[test]
    fn from_parts_rejects_bad_shapes() {
        assert!(Shard::new(vec![1, 1], vec![true, true], Mode::Raw, "D").is_err());
        assert!(Assignment::from_parts(vec![("A".into(), vec![vec![]])]).is_err());
        assert!(Assignment::from_parts(vec![("A".into(), vec![]), ("A".into(), vec![]),]).is_err());
    }
}
