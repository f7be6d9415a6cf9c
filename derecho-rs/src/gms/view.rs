//! Views: the membership of one epoch and how it is divided into subgroups and shards.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::multicast::{MulticastSpec, SubgroupSpec};
use crate::NodeId;

/// A member's identity and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Node id.
    pub id: NodeId,
    /// IP address.
    pub ip: IpAddr,
    /// GMS (membership) port.
    pub gms_port: u16,
    /// Fabric port (the configuration's `sst_port`; RDMC and P2P share this fabric).
    pub fabric_port: u16,
    /// State-transfer port.
    pub state_transfer_port: u16,
    /// Port for external clients.
    pub external_port: u16,
}

impl MemberInfo {
    /// Where the member's fabric listens.
    pub fn fabric_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.fabric_port)
    }

    /// Where the member's GMS listens.
    pub fn gms_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.gms_port)
    }
}

/// One membership epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// View id: 0 for the first view, then one more per change.
    pub vid: u64,
    /// Members in rank order.
    pub members: Vec<MemberInfo>,
    /// Every subgroup of the group, by flat id, with its shards.
    pub subgroups: Vec<SubgroupSpec>,
    /// Members that joined with this view (empty for the first view).
    #[serde(default)]
    pub joined: Vec<NodeId>,
    /// Replica state this view's new shard members receive before they deliver anything.
    #[serde(default)]
    pub transfers: Vec<Transfer>,
    /// Why the layout could not provision every shard with these members, or `None` for an
    /// adequate view. An inadequate view has no subgroups: its members run the membership
    /// protocol (failure detection, joins, leaves) and deliver nothing until a later view is
    /// adequate. Sends wait for that view.
    #[serde(default)]
    pub inadequate: Option<String>,
    /// In an inadequate view: the shards of the last adequate view, less every member removed
    /// since, that is, who still holds each shard's replica state (empty in an adequate view).
    /// The next adequate view's state transfers come from these members.
    #[serde(default)]
    pub held: Vec<SubgroupSpec>,
}

/// One state transfer of a view change: `from`, a member that held the shard in the previous
/// view, sends its replica of `subgroup` to every node in `to`, new to the shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Flat subgroup id.
    pub subgroup: usize,
    /// Shard index within the subgroup.
    pub shard: usize,
    /// The sending member.
    pub from: NodeId,
    /// The receiving members.
    pub to: Vec<NodeId>,
}

impl View {
    /// The rank of `id`, if it is a member.
    pub fn rank_of(&self, id: NodeId) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// Member ids in rank order.
    pub fn ids(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// Whether every shard is provisioned (see [`View::inadequate`]).
    pub fn is_adequate(&self) -> bool {
        self.inadequate.is_none()
    }

    /// Who holds each shard's replica state: this view's shards if it is adequate, otherwise
    /// those of the last adequate view less the members removed since.
    pub fn holders(&self) -> &[SubgroupSpec] {
        if self.is_adequate() {
            &self.subgroups
        } else {
            &self.held
        }
    }

    /// The leader: the member with the lowest rank.
    pub fn leader(&self) -> Option<&MemberInfo> {
        self.members.first()
    }

    /// The multicast layer's description of this view from `me`'s point of view.
    pub fn multicast_spec(&self, me: NodeId) -> Option<MulticastSpec> {
        Some(MulticastSpec {
            vid: self.vid,
            members: self
                .members
                .iter()
                .map(|m| (m.id, m.fabric_addr()))
                .collect(),
            my_rank: self.rank_of(me)?,
            subgroups: self.subgroups.clone(),
        })
    }

    /// The members, in rank order, once `removed` have left and `joined` have joined (in that
    /// order, joiners taking the highest ranks).
    pub fn members_after(&self, removed: &[NodeId], joined: &[MemberInfo]) -> Vec<MemberInfo> {
        let mut members: Vec<MemberInfo> = self
            .members
            .iter()
            .filter(|m| !removed.contains(&m.id))
            .cloned()
            .collect();
        for j in joined {
            if !members.iter().any(|m| m.id == j.id) {
                members.push(j.clone());
            }
        }
        members
    }

    /// The view that follows `self` when `removed` leave and `joined` join (in that order,
    /// joiners taking the highest ranks), with subgroups from `layout`, and the state transfers
    /// the change needs: for each shard that gains members, its lowest-ranked member that still
    /// holds the shard's state sends to the newcomers. If the layout cannot provision the
    /// members, the next view is inadequate (no subgroups) and carries the holders forward.
    /// Every member computes the same next view.
    pub fn next(
        &self,
        removed: &[NodeId],
        joined: &[MemberInfo],
        layout: &crate::gms::LayoutFn,
    ) -> View {
        let members = self.members_after(removed, joined);
        let ids: Vec<NodeId> = members.iter().map(|m| m.id).collect();
        // Who holds each shard's state: its holders of this view that stay. A removed member
        // that joins again (a restart with its old id) comes back empty.
        let held: Vec<SubgroupSpec> = self
            .holders()
            .iter()
            .map(|sg| SubgroupSpec {
                shards: sg
                    .shards
                    .iter()
                    .map(|shard| {
                        let mut shard = shard.clone();
                        shard.members.retain(|m| !removed.contains(m));
                        shard.senders.retain(|m| !removed.contains(m));
                        shard
                    })
                    .collect(),
            })
            .collect();
        // The layout keeps survivors in their shards; after an inadequate view it sees the
        // shards of the last adequate one.
        let previous = if self.is_adequate() {
            std::borrow::Cow::Borrowed(self)
        } else {
            std::borrow::Cow::Owned(View {
                subgroups: self.held.clone(),
                ..self.clone()
            })
        };
        let joined_ids: Vec<NodeId> = joined.iter().map(|m| m.id).collect();
        let subgroups = match layout(&ids, Some(&previous)) {
            Ok(s) => s,
            Err(why) => {
                return View {
                    vid: self.vid + 1,
                    members,
                    subgroups: Vec::new(),
                    joined: joined_ids,
                    transfers: Vec::new(),
                    inadequate: Some(why.to_string()),
                    held,
                }
            }
        };
        let mut transfers = Vec::new();
        for (sg, spec) in subgroups.iter().enumerate() {
            for (s, shard) in spec.shards.iter().enumerate() {
                let before: &[NodeId] = held
                    .get(sg)
                    .and_then(|x| x.shards.get(s))
                    .map_or(&[][..], |x| x.members.as_slice());
                let to: Vec<NodeId> = shard
                    .members
                    .iter()
                    .copied()
                    .filter(|m| !before.contains(m))
                    .collect();
                let from = shard.members.iter().copied().find(|m| before.contains(m));
                if let (Some(from), false) = (from, to.is_empty()) {
                    transfers.push(Transfer {
                        subgroup: sg,
                        shard: s,
                        from,
                        to,
                    });
                }
            }
        }
        View {
            vid: self.vid + 1,
            members,
            subgroups,
            joined: joined_ids,
            transfers,
            inadequate: None,
            held: Vec::new(),
        }
    }

    /// The shard of `subgroup` that `id` belongs to, with the shard's members.
    pub fn shard_of(&self, subgroup: usize, id: NodeId) -> Option<(usize, &[NodeId])> {
        self.subgroups
            .get(subgroup)?
            .shards
            .iter()
            .enumerate()
            .find(|(_, s)| s.members.contains(&id))
            .map(|(i, s)| (i, s.members.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;
    use crate::gms::testing::{member, one_shard, one_shard_of_at_least, view_of};

    /// One subgroup with one shard of the members after the first (the first one stays out).
    fn one_shard_after_the_first() -> crate::gms::LayoutFn {
        Arc::new(|ids: &[NodeId], _: Option<&View>| Ok(one_shard(ids.get(1..).unwrap_or_default())))
    }

    fn first_view(ids: &[NodeId], layout: &crate::gms::LayoutFn) -> View {
        view_of(0, ids, layout)
    }

    #[test]
    fn a_joiner_receives_its_shard_from_a_member_that_stays() {
        let layout = one_shard_after_the_first();
        let v0 = first_view(&[0, 1, 2], &layout);
        let v1 = v0.next(&[], &[member(3)], &layout);
        assert_eq!(v1.vid, 1);
        assert_eq!(v1.joined, vec![3]);
        assert_eq!(
            v1.transfers,
            vec![Transfer {
                subgroup: 0,
                shard: 0,
                from: 1,
                to: vec![3]
            }]
        );
    }

    #[test]
    fn a_removed_member_that_joins_again_comes_back_empty() {
        let layout = one_shard_after_the_first();
        let v0 = first_view(&[0, 1, 2], &layout);
        // Node 1 restarted with its old id: removed and joined in the same change. Its old
        // replica is gone, so it must receive the shard from node 2, not send it.
        let v1 = v0.next(&[1], &[member(1)], &layout);
        assert_eq!(
            v1.members.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![0, 2, 1]
        );
        assert_eq!(
            v1.transfers,
            vec![Transfer {
                subgroup: 0,
                shard: 0,
                from: 2,
                to: vec![1]
            }]
        );
    }

    #[test]
    fn inadequate_views_carry_the_state_holders_to_the_next_adequate_view() {
        let layout = one_shard_of_at_least(3);
        let v0 = first_view(&[0, 1, 2], &layout);
        let v1 = v0.next(&[2], &[], &layout);
        assert!(!v1.is_adequate());
        assert!(v1.subgroups.is_empty());
        assert_eq!(v1.held[0].shards[0].members, vec![0, 1]);
        // Another failure while inadequate: the holders shrink with the members.
        let v2 = v1.next(&[0], &[], &layout);
        assert!(!v2.is_adequate());
        assert_eq!(v2.vid, 2);
        assert_eq!(v2.held[0].shards[0].members, vec![1]);
        // Two joiners make it adequate: the last holder sends them the shard.
        let v3 = v2.next(&[], &[member(3), member(4)], &layout);
        assert!(v3.is_adequate());
        assert!(v3.held.is_empty());
        assert_eq!(v3.ids(), vec![1, 3, 4]);
        assert_eq!(
            v3.transfers,
            vec![Transfer {
                subgroup: 0,
                shard: 0,
                from: 1,
                to: vec![3, 4]
            }]
        );
    }

    #[test]
    fn a_member_removed_while_inadequate_comes_back_empty() {
        let layout = one_shard_of_at_least(3);
        let v0 = first_view(&[0, 1, 2], &layout);
        let v1 = v0.next(&[2], &[], &layout);
        // Node 2 restarts with its old id: it joins an inadequate view as a newcomer.
        let v2 = v1.next(&[], &[member(2)], &layout);
        assert!(v2.is_adequate());
        assert_eq!(
            v2.transfers,
            vec![Transfer {
                subgroup: 0,
                shard: 0,
                from: 0,
                to: vec![2]
            }]
        );
    }

    #[test]
    fn a_shard_that_only_loses_members_transfers_nothing() {
        let layout = one_shard_after_the_first();
        let v0 = first_view(&[0, 1, 2, 3], &layout);
        let v1 = v0.next(&[2], &[], &layout);
        assert!(v1.transfers.is_empty());
    }
}
