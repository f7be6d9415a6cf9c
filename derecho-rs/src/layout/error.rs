//! What can go wrong while declaring, parsing or allocating a layout.

use std::fmt;

use super::{NodeId, SubgroupId};

/// A place in a layout policy: a type, and optionally one of its subgroups and one of its shards.
///
/// Displayed as ``type 1 `Categorizer`, subgroup 0, shard 2``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLocation {
    /// Position of the type in the policy (and in the JSON array).
    pub type_index: usize,
    /// The type's name (empty while a JSON entry's name is still unknown).
    pub type_name: String,
    /// Index of the subgroup within its type, if the place is inside one.
    pub subgroup: Option<usize>,
    /// Index of the shard within its subgroup, if the place is inside one.
    pub shard: Option<usize>,
}

impl PolicyLocation {
    /// The place of a whole type.
    pub fn of_type(type_index: usize, type_name: &str) -> Self {
        PolicyLocation {
            type_index,
            type_name: type_name.to_string(),
            subgroup: None,
            shard: None,
        }
    }

    /// This place narrowed to subgroup `index` of the type.
    pub fn subgroup(&self, index: usize) -> Self {
        PolicyLocation {
            subgroup: Some(index),
            shard: None,
            ..self.clone()
        }
    }

    /// This place narrowed to shard `index` of the subgroup.
    pub fn shard(&self, index: usize) -> Self {
        PolicyLocation {
            shard: Some(index),
            ..self.clone()
        }
    }
}

impl fmt::Display for PolicyLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "type {}", self.type_index)?;
        if !self.type_name.is_empty() {
            write!(f, " `{}`", self.type_name)?;
        }
        if let Some(subgroup) = self.subgroup {
            write!(f, ", subgroup {subgroup}")?;
        }
        if let Some(shard) = self.shard {
            write!(f, ", shard {shard}")?;
        }
        Ok(())
    }
}

/// Errors of [`derecho::layout`](super).
///
/// Only [`Inadequate`](Self::Inadequate) is expected at run time: the view is too small and the
/// caller waits for more members. Every other variant is a mistake in the policy, the config or
/// the caller's bookkeeping, and retrying cannot fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The view has too few members to give some shard its minimum. Recoverable: keep the
    /// previous assignment and allocate again when more members have joined.
    #[error(
        "inadequate view: shard {shard} of subgroup {subgroup} can have {have} of the {need} \
         members it needs"
    )]
    Inadequate {
        /// The first subgroup (flat id) with a shard that cannot be filled.
        subgroup: SubgroupId,
        /// That shard's index within the subgroup.
        shard: usize,
        /// How many members the shard could get: its survivors and reserved members, plus every
        /// free node still left when its turn came.
        have: usize,
        /// Its minimum size.
        need: usize,
    },
    /// A policy breaks a rule: `min_nodes > max_nodes`, no shard, shards of one subgroup sharing
    /// a reserved id, duplicate type names, ...
    #[error("invalid layout policy at {at}: {problem}")]
    InvalidPolicy {
        /// Where.
        at: PolicyLocation,
        /// What is wrong.
        problem: String,
    },
    /// The JSON layout is malformed.
    #[error("JSON layout{}: {problem}", json_place(.at, .field))]
    Json {
        /// The type/subgroup/shard the problem is in; `None` for the document itself.
        at: Option<PolicyLocation>,
        /// The field, when the problem is in one (e.g. `min_nodes_by_shard`).
        field: Option<String>,
        /// What is wrong.
        problem: String,
    },
    /// A `[SUBGROUP/<profile>]` section is missing, or lacks what a profile-driven policy needs.
    #[error("profile `[SUBGROUP/{profile}]`{}: {problem}", policy_place(.at))]
    Profile {
        /// The profile name.
        profile: String,
        /// The shard that names it, when known.
        at: Option<PolicyLocation>,
        /// What is wrong.
        problem: String,
    },
    /// [`LayoutPolicy::from_config`](super::LayoutPolicy::from_config) found no `[LAYOUT]`
    /// layout.
    #[error("no JSON layout is configured: set `[LAYOUT] json_layout` or `json_layout_file`")]
    NoJsonLayout,
    /// The JSON layout describes a different number of types than the group declares.
    #[error("the JSON layout describes {found} subgroup types but the group declares {expected}")]
    TypeCount {
        /// Types declared by the group.
        expected: usize,
        /// Entries in the JSON array.
        found: usize,
    },
    /// The member list given to [`allocate`](super::allocate) names a node twice.
    #[error("node {node} appears twice in the member list")]
    DuplicateMember {
        /// The node.
        node: NodeId,
    },
    /// The previous assignment given to [`allocate`](super::allocate) does not fit the policy
    /// or the previous member list.
    #[error("the previous assignment does not fit: {problem}")]
    PreviousMismatch {
        /// What does not fit.
        problem: String,
    },
    /// An [`Assignment`](super::Assignment) or [`Shard`](super::Shard) built by hand or
    /// deserialized breaks a rule (a node twice in one subgroup, flag count != member count, ...).
    #[error("invalid assignment: {problem}")]
    InvalidAssignment {
        /// What is wrong.
        problem: String,
    },
}

impl LayoutError {
    /// True for [`Inadequate`](Self::Inadequate), the one error that more members can cure.
    pub fn is_inadequate(&self) -> bool {
        matches!(self, LayoutError::Inadequate { .. })
    }
}

fn json_place(at: &Option<PolicyLocation>, field: &Option<String>) -> String {
    match (at, field) {
        (None, None) => String::new(),
        (Some(at), None) => format!(" at {at}"),
        (None, Some(field)) => format!(", field `{field}`"),
        (Some(at), Some(field)) => format!(" at {at}, field `{field}`"),
    }
}

fn policy_place(at: &Option<PolicyLocation>) -> String {
    at.as_ref()
        .map(|at| format!(" (at {at})"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_place() {
        let at = PolicyLocation::of_type(1, "Categorizer")
            .subgroup(0)
            .shard(2);
        assert_eq!(at.to_string(), "type 1 `Categorizer`, subgroup 0, shard 2");
        let e = LayoutError::Json {
            at: Some(at),
            field: Some("max_nodes_by_shard".into()),
            problem: "expected 3 entries, found 2".into(),
        };
        assert_eq!(
            e.to_string(),
            "JSON layout at type 1 `Categorizer`, subgroup 0, shard 2, field `max_nodes_by_shard`: \
             expected 3 entries, found 2"
        );
        let e = LayoutError::Inadequate {
            subgroup: SubgroupId(1),
            shard: 0,
            have: 1,
            need: 2,
        };
        assert!(e.is_inadequate());
        assert_eq!(
            e.to_string(),
            "inadequate view: shard 0 of subgroup 1 can have 1 of the 2 members it needs"
        );
    }
}
