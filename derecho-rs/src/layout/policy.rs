//! What a group declares: types, their subgroups, and each shard's size, mode, profile,
//! reserved ids and senders.
//!
//! The types are plain data with public fields and chainable `with_*` builders;
//! [`LayoutPolicy::validate`] checks the rules, and [`allocate`](super::allocate) runs it first,
//! so a hand-edited policy cannot slip through.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{LayoutError, NodeId, PolicyLocation};
use crate::config::DEFAULT_PROFILE;

/// How a shard delivers multicasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Mode {
    /// Total order across the shard, delivered once every member has the message (the default).
    #[default]
    Ordered,
    /// Per-sender FIFO, delivered on receipt, no null messages (the original's `UNORDERED`).
    Raw,
}

impl Mode {
    /// The JSON name: `"Ordered"` or `"Raw"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ordered => "Ordered",
            Mode::Raw => "Raw",
        }
    }

    /// Parses a JSON name, ignoring ASCII case.
    pub fn from_name(name: &str) -> Option<Mode> {
        [Mode::Ordered, Mode::Raw]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which members of a shard may multicast. Evaluated on the shard's members of each view.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Senders {
    /// Every member sends (the default).
    #[default]
    All,
    /// The first `k` members in shard-rank order send (all of them if the shard is smaller).
    /// When one of them leaves, the next member in rank order takes its place in the next view.
    First(usize),
    /// The listed nodes send when they are members; nobody else does.
    Listed(BTreeSet<NodeId>),
}

impl Senders {
    /// The sender flag of every member of a shard whose members are `members`, in rank order.
    pub fn flags(&self, members: &[NodeId]) -> Vec<bool> {
        match self {
            Senders::All => vec![true; members.len()],
            Senders::First(k) => (0..members.len()).map(|rank| rank < *k).collect(),
            Senders::Listed(ids) => members.iter().map(|id| ids.contains(id)).collect(),
        }
    }
}

/// The policy of one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPolicy {
    /// Fewest members; a view that cannot give the shard this many is inadequate.
    pub min_nodes: usize,
    /// Most members handed out by the allocator. Survivors and reserved members are never
    /// dropped, so a shard can exceed it when those alone do.
    pub max_nodes: usize,
    /// Delivery mode.
    pub mode: Mode,
    /// `[SUBGROUP/<profile>]` that sizes the shard's buffers. Default `DEFAULT`.
    pub profile: String,
    /// Node ids that always join this shard when they are members of the view. An id reserved
    /// by shards of several subgroups makes those subgroups overlap.
    pub reserved: BTreeSet<NodeId>,
    /// Who may send.
    pub senders: Senders,
}

impl ShardPolicy {
    /// A shard of `min_nodes..=max_nodes` members, ordered, profile `DEFAULT`, nothing reserved,
    /// every member a sender.
    pub fn new(min_nodes: usize, max_nodes: usize) -> Self {
        ShardPolicy {
            min_nodes,
            max_nodes,
            mode: Mode::Ordered,
            profile: DEFAULT_PROFILE.to_string(),
            reserved: BTreeSet::new(),
            senders: Senders::All,
        }
    }

    /// Sets the delivery mode.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the profile name.
    pub fn with_profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = profile.into();
        self
    }

    /// Adds reserved node ids.
    pub fn with_reserved(mut self, ids: impl IntoIterator<Item = NodeId>) -> Self {
        self.reserved.extend(ids);
        self
    }

    /// Sets the sender policy.
    pub fn with_senders(mut self, senders: Senders) -> Self {
        self.senders = senders;
        self
    }
}

/// The shards of one subgroup. Shards are disjoint; see [`ShardPolicy`] for each one's rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubgroupPolicy {
    /// The shards, in index order (at least one).
    pub shards: Vec<ShardPolicy>,
}

impl SubgroupPolicy {
    /// `num_shards` shards of exactly `nodes_per_shard` members each.
    pub fn fixed_even(num_shards: usize, nodes_per_shard: usize) -> Self {
        Self::flexible_even(num_shards, nodes_per_shard, nodes_per_shard)
    }

    /// `num_shards` shards of `min_nodes..=max_nodes` members each.
    pub fn flexible_even(num_shards: usize, min_nodes: usize, max_nodes: usize) -> Self {
        SubgroupPolicy {
            shards: vec![ShardPolicy::new(min_nodes, max_nodes); num_shards],
        }
    }

    /// Explicit shards, each with its own sizes, mode, profile, reserved ids and senders.
    pub fn by_shard(shards: Vec<ShardPolicy>) -> Self {
        SubgroupPolicy { shards }
    }

    /// Sets the delivery mode of every shard.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.shards.iter_mut().for_each(|s| s.mode = mode);
        self
    }

    /// Sets the profile of every shard.
    pub fn with_profile(mut self, profile: impl Into<String>) -> Self {
        let profile = profile.into();
        self.shards
            .iter_mut()
            .for_each(|s| s.profile.clone_from(&profile));
        self
    }

    /// Sets the sender policy of every shard.
    pub fn with_senders(mut self, senders: Senders) -> Self {
        self.shards
            .iter_mut()
            .for_each(|s| s.senders = senders.clone());
        self
    }
}

/// One subgroup type (one replicated-object type): its name and its subgroups in index order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypePolicy {
    /// The type's name (unique in the policy), e.g. `Categorizer`.
    pub name: String,
    /// Its subgroups; may be empty (a type with no subgroup in this deployment).
    pub subgroups: Vec<SubgroupPolicy>,
}

impl TypePolicy {
    /// A type with the given subgroups.
    pub fn new(name: impl Into<String>, subgroups: Vec<SubgroupPolicy>) -> Self {
        TypePolicy {
            name: name.into(),
            subgroups,
        }
    }

    /// A type with a single subgroup.
    pub fn one(name: impl Into<String>, subgroup: SubgroupPolicy) -> Self {
        Self::new(name, vec![subgroup])
    }

    /// A type with `count` subgroups that all follow `subgroup`.
    pub fn identical(name: impl Into<String>, count: usize, subgroup: SubgroupPolicy) -> Self {
        Self::new(name, vec![subgroup; count])
    }
}

/// The whole layout policy of a group: its subgroup types in declaration order.
///
/// The order matters twice: types are filled first-declared first, and the flat
/// [`SubgroupId`](super::SubgroupId)s number subgroups type by type in this order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LayoutPolicy {
    /// The types, in declaration order.
    pub types: Vec<TypePolicy>,
}

impl LayoutPolicy {
    /// A policy with no type; add them with [`with_type`](Self::with_type).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a type.
    pub fn with_type(mut self, ty: TypePolicy) -> Self {
        self.types.push(ty);
        self
    }

    /// Position of the type called `name`.
    pub fn type_index(&self, name: &str) -> Option<usize> {
        self.types.iter().position(|t| t.name == name)
    }

    /// Number of subgroups of all types.
    pub fn num_subgroups(&self) -> usize {
        self.types.iter().map(|t| t.subgroups.len()).sum()
    }

    /// Every node id reserved by any shard.
    pub fn all_reserved(&self) -> BTreeSet<NodeId> {
        self.shards()
            .flat_map(|(_, shard)| shard.reserved.iter().copied())
            .collect()
    }

    /// Every shard with its place, in the flat order (type, subgroup, shard).
    pub(crate) fn shards(&self) -> impl Iterator<Item = (PolicyLocation, &ShardPolicy)> + '_ {
        self.types.iter().enumerate().flat_map(|(t, ty)| {
            ty.subgroups.iter().enumerate().flat_map(move |(g, sg)| {
                sg.shards.iter().enumerate().map(move |(s, shard)| {
                    (
                        PolicyLocation::of_type(t, &ty.name).subgroup(g).shard(s),
                        shard,
                    )
                })
            })
        })
    }

    /// Checks every rule: type names non-empty and unique; every subgroup has a shard; every
    /// shard has `1 <= max_nodes` and `min_nodes <= max_nodes` and a non-empty profile name;
    /// no two shards of one subgroup reserve the same id.
    pub fn validate(&self) -> Result<(), LayoutError> {
        let mut names = BTreeSet::new();
        for (t, ty) in self.types.iter().enumerate() {
            let at = PolicyLocation::of_type(t, &ty.name);
            let invalid =
                |at: PolicyLocation, problem: String| LayoutError::InvalidPolicy { at, problem };
            if ty.name.is_empty() {
                return Err(invalid(at, "the type has no name".into()));
            }
            if !names.insert(ty.name.as_str()) {
                return Err(invalid(at, "another type has the same name".into()));
            }
            for (g, sg) in ty.subgroups.iter().enumerate() {
                let at = at.subgroup(g);
                if sg.shards.is_empty() {
                    return Err(invalid(at, "a subgroup needs at least one shard".into()));
                }
                let mut owner: BTreeMap<NodeId, usize> = BTreeMap::new();
                for (s, shard) in sg.shards.iter().enumerate() {
                    let at = at.shard(s);
                    if shard.max_nodes == 0 {
                        return Err(invalid(at, "max_nodes must be at least 1".into()));
                    }
                    if shard.min_nodes > shard.max_nodes {
                        return Err(invalid(
                            at,
                            format!(
                                "min_nodes {} is above max_nodes {}",
                                shard.min_nodes, shard.max_nodes
                            ),
                        ));
                    }
                    if shard.profile.is_empty() {
                        return Err(invalid(at, "the profile name is empty".into()));
                    }
                    for &id in &shard.reserved {
                        if let Some(other) = owner.insert(id, s) {
                            return Err(invalid(
                                at,
                                format!(
                                    "node {id} is also reserved by shard {other} of this \
                                     subgroup (shards of one subgroup are disjoint)"
                                ),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn one_type(sg: SubgroupPolicy) -> LayoutPolicy {
        LayoutPolicy::new().with_type(TypePolicy::one("T", sg))
    }

    #[test]
    fn constructors_and_builders() {
        let sg = SubgroupPolicy::flexible_even(2, 1, 3)
            .with_mode(Mode::Raw)
            .with_profile("P")
            .with_senders(Senders::First(1));
        assert_eq!(sg.shards.len(), 2);
        for shard in &sg.shards {
            assert_eq!((shard.min_nodes, shard.max_nodes), (1, 3));
            assert_eq!(shard.mode, Mode::Raw);
            assert_eq!(shard.profile, "P");
            assert_eq!(shard.senders, Senders::First(1));
        }
        let fixed = SubgroupPolicy::fixed_even(1, 4);
        assert_eq!(
            (fixed.shards[0].min_nodes, fixed.shards[0].max_nodes),
            (4, 4)
        );
        assert_eq!(fixed.shards[0].profile, "DEFAULT");
        let ty = TypePolicy::identical("A", 3, fixed);
        assert_eq!(ty.subgroups.len(), 3);
        let p = LayoutPolicy::new().with_type(ty).with_type(TypePolicy::one(
            "B",
            SubgroupPolicy::by_shard(vec![ShardPolicy::new(1, 1).with_reserved([7, 8])]),
        ));
        assert_eq!(p.num_subgroups(), 4);
        assert_eq!(p.type_index("B"), Some(1));
        assert_eq!(p.all_reserved(), BTreeSet::from([7, 8]));
        p.validate().unwrap();
    }

    #[test]
    fn sender_flags() {
        let m = [5, 6, 7];
        assert_eq!(Senders::All.flags(&m), [true, true, true]);
        assert_eq!(Senders::First(2).flags(&m), [true, true, false]);
        assert_eq!(Senders::First(9).flags(&m), [true, true, true]);
        assert_eq!(
            Senders::Listed(BTreeSet::from([7, 9])).flags(&m),
            [false, false, true]
        );
    }

    #[test]
    fn modes_by_name() {
        assert_eq!(Mode::from_name("Raw"), Some(Mode::Raw));
        assert_eq!(Mode::from_name("ordered"), Some(Mode::Ordered));
        assert_eq!(Mode::from_name("unordered"), None);
        assert_eq!(Mode::Raw.to_string(), "Raw");
    }

    #[test]
    fn each_rule_is_checked() {
        let err = |p: LayoutPolicy| match p.validate().unwrap_err() {
            LayoutError::InvalidPolicy { at, problem } => (at.to_string(), problem),
            other => panic!("unexpected {other}"),
        };
        let (at, problem) = err(one_type(SubgroupPolicy::flexible_even(1, 3, 2)));
        assert_eq!(at, "type 0 `T`, subgroup 0, shard 0");
        assert!(problem.contains("min_nodes 3 is above max_nodes 2"));
        assert!(err(one_type(SubgroupPolicy::fixed_even(1, 0)))
            .1
            .contains("max_nodes"));
        assert!(err(one_type(SubgroupPolicy::flexible_even(0, 1, 1)))
            .1
            .contains("at least one shard"));
        assert!(
            err(one_type(SubgroupPolicy::fixed_even(1, 1).with_profile("")))
                .1
                .contains("profile")
        );
        let overlap = SubgroupPolicy::by_shard(vec![
            ShardPolicy::new(1, 2).with_reserved([1, 2]),
            ShardPolicy::new(1, 2).with_reserved([3]),
            ShardPolicy::new(1, 2).with_reserved([2]),
        ]);
        let (at, problem) = err(one_type(overlap));
        assert!(at.ends_with("shard 2"), "{at}");
        assert!(problem.contains("node 2 is also reserved by shard 0"));
        let twice = LayoutPolicy::new()
            .with_type(TypePolicy::one("A", SubgroupPolicy::fixed_even(1, 1)))
            .with_type(TypePolicy::one("A", SubgroupPolicy::fixed_even(1, 1)));
        assert!(err(twice).1.contains("same name"));
        let unnamed = LayoutPolicy::new().with_type(TypePolicy::new("", vec![]));
        assert!(err(unnamed).1.contains("no name"));
    }

    #[test]
    fn reserved_ids_may_repeat_across_subgroups() {
        let sg = SubgroupPolicy::by_shard(vec![ShardPolicy::new(1, 2).with_reserved([1, 2])]);
        let p = LayoutPolicy::new()
            .with_type(TypePolicy::identical("A", 2, sg.clone()))
            .with_type(TypePolicy::one("B", sg));
        p.validate().unwrap();
    }
}
