//! Subgroups and shards: which member of a view holds which role.
//!
//! **Owns**: the policy a group declares ([`LayoutPolicy`]: an ordered list of subgroup types,
//! each with one or several subgroups, each cut into shards with min/max sizes, a delivery
//! [`Mode`], a profile name, reserved node ids and a [`Senders`] policy), the JSON layout of
//! `[LAYOUT] json_layout` ([`LayoutPolicy::from_json`]), the result ([`Assignment`]: type →
//! subgroup → shard → members in shard-rank order, with senders, mode and profile, plus the flat
//! [`SubgroupId`] numbering and the `num_received` column offsets), and the allocation itself
//! ([`allocate`]).
//! **Does not touch**: views, sockets, threads, clocks. Everything here is a pure function of
//! its arguments, so the membership layer can call it with a member list and get a decision back;
//! an inadequate view is an error value ([`LayoutError::Inadequate`]), never a wait.
//!
//! # The algorithm, in one paragraph
//! Shards are visited in a fixed order: types in declaration order, subgroups in index order,
//! shards in index order (the flat order of [`SubgroupId`]s). Each shard starts with its
//! *inherent* members: the survivors of its previous incarnation (in their previous order) and
//! the present members reserved for it. Every other present member that is not reserved by any
//! shard is *free*; free nodes are handed out in rank order (rank order is join order). First
//! each shard is brought up to its minimum, in shard order; if the free nodes run out, the view
//! is inadequate and the error names the first shard that cannot be filled. Then the remaining
//! free nodes are spread one per shard per round, in shard order, until every shard is at its
//! maximum or no free node is left; nodes still free stay unassigned. Finally each shard takes
//! its share of free nodes as one contiguous run of ranks. So the first joiners fill the first
//! declared types, and survivors never move.
//!
//! # Overlap
//! A node that is not reserved by any shard holds at most one shard in the whole layout: the
//! default policies partition the members. A node id reserved by shards of *different*
//! subgroups (of the same type or not) joins all of them when present: that is how subgroups
//! overlap (colocate), exactly as in the original. Shards of one subgroup may not share a
//! reserved id (checked by [`LayoutPolicy::validate`]). Reserved ids never fill a shard that
//! did not reserve them.
//!
//! # Senders
//! Each shard has a [`Senders`] policy, evaluated on the shard's final member list of each view:
//! everyone (the default), the first `k` members in shard-rank order, or an explicit set of node
//! ids (the JSON layout's `"*3"` marks). A shard may end up with no sender (it can still be
//! queried point to point). The multicast layer gives each shard `max senders` `num_received`
//! columns per subgroup ([`Assignment::num_received_offset`]).
//!
//! # Differences from the original Derecho, all deliberate
//! * Free nodes are always taken in rank order; with reserved ids in play the original sorted
//!   them by node id in the first view and read a mismatched index in later views.
//! * Reserved members of a shard take rank order too (the original: ascending node id).
//! * The inadequate-view error names a shard; a shard kept above its maximum by survivors or
//!   reserved ids does not stall the spreading loop (it looped forever in the original).
//! * `num_received` offsets count senders; the original's `compute_num_received_size` counted
//!   shard members in one of its two copies of the computation.
//! * "Survivors keep their shard" is computed from the previous [`Assignment`] itself, not from
//!   the view's `next_unassigned_rank` bookkeeping (whose off-by-one on departures is avoided).
//! * [`Senders::First`] is ours (the original's benchmarks built such shards by hand); it is
//!   re-evaluated each view, so when a sender leaves, the next member in rank order sends.
//! * The JSON parser is strict: unknown fields, bad numbers and unknown modes are errors (the
//!   original ignored them or read any non-`"Raw"` mode as ordered); `delivery_modes_by_shard`
//!   and `profiles_by_shard` may be omitted (all `Ordered`, all `DEFAULT`); the README's spelling
//!   `reserved_nodes_by_shard` is accepted as an alias of `reserved_node_ids_by_shard`.
//! * Profile names are kept as written (the original upper-cased them);
//!   [`LayoutPolicy::check_profiles`] reports a name missing from the config.
//! * Not ported: the cross-product policy.

mod allocate;
mod assignment;
mod error;
mod json;
mod policy;
mod profiles;

pub use allocate::allocate;
pub use assignment::{Assignment, Shard, SubgroupId};
pub use error::{LayoutError, PolicyLocation};
pub use policy::{LayoutPolicy, Mode, Senders, ShardPolicy, SubgroupPolicy, TypePolicy};

/// A node's id: the same number as `DERECHO/local_id` and `derecho_fabric::NodeId`.
pub type NodeId = u32;
