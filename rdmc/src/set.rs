//! The RDMC groups of one view: one sender-rooted group per (subgroup, sender).
//!
//! A view with subgroups whose shards have several senders needs one group per sender, each
//! with that sender as rank 0 and the other shard members after it. [`GroupSet::create`]
//! registers the regions of **all** of them before connecting **any**, so a member that is
//! slow to create its groups never makes another wait on a region it has not registered yet,
//! whatever order the members list their groups in; and every wait is bounded, so a member
//! that died during creation produces an error naming it instead of a hang. Dropping the set
//! destroys the groups (their threads stop and their regions are deregistered), which is what
//! the view change does with the old view's set.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use derecho_fabric::{Fabric, NodeId};

use crate::group::{GroupSpec, GroupSpecError, Handler, Prepared, RdmcError, RdmcGroup};

/// Names one group of a view: the subgroup (shard) and the sender's node id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    /// The subgroup/shard index within the view.
    pub subgroup: u32,
    /// The sending node.
    pub sender: NodeId,
}

/// One group to create: its key, its members (sender first) and its settings.
#[derive(Clone, Debug)]
pub struct GroupPlan {
    /// Which group this is.
    pub key: GroupKey,
    /// The spec; its `members[0]` must be the key's sender.
    pub spec: GroupSpec,
}

impl GroupPlan {
    /// Plans the group of `sender` in a shard whose members are `shard` (in shard rank order):
    /// the sender becomes rank 0, the others follow in their shard order.
    pub fn for_sender(
        key: GroupKey,
        group_id: u64,
        shard: &[(NodeId, SocketAddr)],
        me: NodeId,
        template: &GroupSpec,
    ) -> Result<Self, RdmcError> {
        let sender =
            shard
                .iter()
                .find(|m| m.0 == key.sender)
                .copied()
                .ok_or(RdmcError::InvalidSpec(GroupSpecError::SenderNotInShard {
                    sender: key.sender,
                }))?;
        let mut members = vec![sender];
        members.extend(shard.iter().copied().filter(|m| m.0 != key.sender));
        let my_rank = members
            .iter()
            .position(|m| m.0 == me)
            .ok_or(RdmcError::InvalidSpec(GroupSpecError::NotInShard {
                node: me,
            }))?;
        let mut spec = template.clone();
        spec.group_id = group_id;
        spec.members = members;
        spec.my_rank = my_rank;
        Ok(Self { key, spec })
    }
}

/// A view's groups with their regions registered but not yet linked (see
/// [`GroupSet::prepare`]).
pub struct PreparedSet {
    prepared: Vec<(GroupKey, Prepared)>,
}

impl std::fmt::Debug for PreparedSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedSet")
            .field("groups", &self.prepared.len())
            .finish()
    }
}

impl PreparedSet {
    /// Links and looks up every group (bounded by each spec's timeout); with `threads` the
    /// engines run on their own threads, otherwise the caller polls them
    /// ([`GroupSet::poll_all`]). On error every group is destroyed.
    pub fn connect(self, threads: bool) -> Result<GroupSet, RdmcError> {
        let mut groups = BTreeMap::new();
        let mut rest = self.prepared.into_iter();
        for (key, p) in rest.by_ref() {
            let started = p.connect().and_then(|mut g| {
                if threads {
                    g.start()?;
                }
                Ok(g)
            });
            match started {
                Ok(g) => {
                    groups.insert(key, g);
                }
                Err(e) => {
                    rest.for_each(|(_, p)| p.cancel());
                    return Err(e);
                }
            }
        }
        Ok(GroupSet { groups })
    }

    /// Gives up: deregisters every group's region.
    pub fn cancel(self) {
        self.prepared.into_iter().for_each(|(_, p)| p.cancel());
    }
}

/// The groups of one view on this member.
#[derive(Debug, Default)]
pub struct GroupSet {
    groups: BTreeMap<GroupKey, RdmcGroup>,
}

impl GroupSet {
    /// Creates every planned group: all regions first, then all links and look-ups, each
    /// bounded by its spec's timeout. On error the groups already made are destroyed.
    /// `handler(key)` gives each group's handler. The groups' engine threads are started.
    pub fn create(
        fabric: &Arc<dyn Fabric>,
        plans: Vec<GroupPlan>,
        handler: impl Fn(GroupKey) -> Arc<dyn Handler>,
    ) -> Result<Self, RdmcError> {
        Self::prepare(fabric, plans, handler)?.connect(true)
    }

    /// The first half of [`GroupSet::create`]: registers every group's region and talks to
    /// nobody. Members that cannot block (a simulation) prepare everywhere before connecting.
    pub fn prepare(
        fabric: &Arc<dyn Fabric>,
        plans: Vec<GroupPlan>,
        handler: impl Fn(GroupKey) -> Arc<dyn Handler>,
    ) -> Result<PreparedSet, RdmcError> {
        let mut prepared = Vec::with_capacity(plans.len());
        for plan in plans {
            match RdmcGroup::prepare(Arc::clone(fabric), plan.spec, handler(plan.key)) {
                Ok(p) => prepared.push((plan.key, p)),
                Err(e) => {
                    prepared
                        .into_iter()
                        .for_each(|(_, p): (GroupKey, Prepared)| p.cancel());
                    return Err(e);
                }
            }
        }
        Ok(PreparedSet { prepared })
    }

    /// The group of `key`, if this member belongs to it.
    pub fn get(&self, key: GroupKey) -> Option<&RdmcGroup> {
        self.groups.get(&key)
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Polls every group once (for callers that drive the engines themselves). Returns whether
    /// any made progress; errors of aborted groups are left to their handlers.
    pub fn poll_all(&self) -> bool {
        let mut progress = false;
        for g in self.groups.values() {
            progress |= g.poll().unwrap_or(false);
        }
        progress
    }

    /// Aborts every group (the layer above saw a member fail and is changing the view).
    pub fn abort_all(&self, reason: &str) {
        for g in self.groups.values() {
            g.abort(reason);
        }
    }
}
