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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// View id: 0 for the first view, then one more per change.
    pub vid: u64,
    /// Members in rank order.
    pub members: Vec<MemberInfo>,
    /// Every subgroup of the group, by flat id, with its shards.
    pub subgroups: Vec<SubgroupSpec>,
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
