//! Helpers shared by the membership unit tests.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::first_view::LayoutFn;
use super::view::{MemberInfo, View};
use crate::config::SubgroupProfile;
use crate::layout::{LayoutError, SubgroupId};
use crate::multicast::{Mode, ShardSpec, Sizes, SubgroupSpec};
use crate::NodeId;

/// A member on localhost whose GMS port is derived from its id (so members differ).
pub(crate) fn member(id: NodeId) -> MemberInfo {
    MemberInfo {
        id,
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        gms_port: 1000 + (id % 60_000) as u16,
        fabric_port: 2,
        state_transfer_port: 3,
        external_port: 4,
    }
}

/// One subgroup of one ordered shard of `members`, all of them senders.
pub(crate) fn one_shard(members: &[NodeId]) -> Vec<SubgroupSpec> {
    vec![SubgroupSpec {
        shards: vec![ShardSpec {
            members: members.to_vec(),
            senders: members.to_vec(),
            mode: Mode::Ordered,
            sizes: Sizes::from_profile(&SubgroupProfile::default()),
        }],
    }]
}

/// One subgroup whose shards have the given members, all of them senders.
pub(crate) fn sharded(shards: &[&[NodeId]]) -> Vec<SubgroupSpec> {
    vec![SubgroupSpec {
        shards: shards
            .iter()
            .map(|m| one_shard(m).remove(0).shards.remove(0))
            .collect(),
    }]
}

/// View `vid` of `ids` with one subgroup sharded as `shards`.
pub(crate) fn sharded_view(vid: u64, ids: &[NodeId], shards: &[&[NodeId]]) -> View {
    View {
        vid,
        members: ids.iter().copied().map(member).collect(),
        subgroups: sharded(shards),
        ..View::default()
    }
}

/// One shard of every member; fewer than `n` members do not suffice.
pub(crate) fn one_shard_of_at_least(n: usize) -> LayoutFn {
    Arc::new(move |ids: &[NodeId], _: Option<&View>| {
        if ids.len() < n {
            return Err(LayoutError::Inadequate {
                subgroup: SubgroupId(0),
                shard: 0,
                have: ids.len(),
                need: n,
            });
        }
        Ok(one_shard(ids))
    })
}

/// View `vid` of `ids` laid out by `layout` as a first view.
pub(crate) fn view_of(vid: u64, ids: &[NodeId], layout: &LayoutFn) -> View {
    View {
        vid,
        members: ids.iter().copied().map(member).collect(),
        subgroups: layout(ids, None).unwrap(),
        ..View::default()
    }
}
