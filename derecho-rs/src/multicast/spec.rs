//! What the multicast layer of one view is given, and how it lays out its SST columns.
//!
//! A [`MulticastSpec`] lists the view's members and, for every subgroup of the view, its shards
//! (members in shard rank order, senders in sender rank order, delivery mode and size profile).
//! Every row of the view's SST has columns for **every** subgroup — not only the ones its member
//! belongs to — so all members agree on one schema. Columns are indexed by the flat subgroup id;
//! per-sender columns of subgroup `s` start at `received_offset[s]`, the sum of the largest
//! sender count of any shard of each earlier subgroup.

use std::net::SocketAddr;

use derecho_fabric::NodeId;
use derecho_rdmc::schedule::Algorithm;
use derecho_sst::{ArrayField, BytesField, SchemaBuilder, SstError};

use crate::config::SubgroupProfile;

/// Bytes of the header in front of every message (SMC slot or RDMC buffer).
pub const HEADER_LEN: usize = 32;

pub use crate::layout::Mode;

/// The sizes a shard's messages use (from a `[SUBGROUP/<NAME>]` profile).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sizes {
    /// Largest payload of one message.
    pub max_payload: usize,
    /// Payloads up to this size travel in SST slots; larger ones through RDMC.
    pub max_smc_payload: usize,
    /// RDMC block size.
    pub block_size: usize,
    /// Messages in flight per sender.
    pub window: usize,
    /// RDMC schedule.
    #[serde(with = "algorithm_name")]
    pub algorithm: Algorithm,
}

/// Serializes an RDMC algorithm by its configuration name.
mod algorithm_name {
    use derecho_rdmc::schedule::Algorithm;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(a: &Algorithm, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(a.config_name())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Algorithm, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl Sizes {
    /// Takes the sizes of a configuration profile.
    pub fn from_profile(p: &SubgroupProfile) -> Self {
        Self {
            max_payload: usize::try_from(p.max_payload_size).unwrap_or(usize::MAX),
            max_smc_payload: usize::try_from(p.max_smc_payload_size).unwrap_or(usize::MAX),
            block_size: usize::try_from(p.block_size).unwrap_or(usize::MAX),
            window: p.window_size as usize,
            algorithm: p.rdmc_send_algorithm.as_str().parse().unwrap_or_default(),
        }
    }

    /// Whether any message may need RDMC.
    pub fn uses_rdmc(&self) -> bool {
        self.max_payload > self.max_smc_payload
    }

    /// Bytes of one SMC slot: header plus the largest SMC payload, rounded to words.
    pub fn slot_len(&self) -> usize {
        HEADER_LEN + self.max_smc_payload.min(self.max_payload).div_ceil(8) * 8
    }
}

/// One shard of a subgroup.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardSpec {
    /// Members in shard rank order.
    pub members: Vec<NodeId>,
    /// The members that send, in sender rank order.
    pub senders: Vec<NodeId>,
    /// Delivery mode.
    pub mode: Mode,
    /// Message sizes.
    pub sizes: Sizes,
}

/// One subgroup: its shards.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubgroupSpec {
    /// The shards (disjoint).
    pub shards: Vec<ShardSpec>,
}

/// Everything the multicast layer of one view needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MulticastSpec {
    /// The view id (names the view's SST and RDMC regions).
    pub vid: u64,
    /// The view's members in rank order, with their fabric addresses.
    pub members: Vec<(NodeId, SocketAddr)>,
    /// This node's rank in `members`.
    pub my_rank: usize,
    /// Every subgroup of the view, by flat id.
    pub subgroups: Vec<SubgroupSpec>,
}

impl MulticastSpec {
    /// This node's id.
    pub fn my_id(&self) -> NodeId {
        self.members[self.my_rank].0
    }

    /// The shard of `subgroup` this node belongs to, if any.
    pub fn my_shard(&self, subgroup: usize) -> Option<(usize, &ShardSpec)> {
        let me = self.my_id();
        self.subgroups
            .get(subgroup)?
            .shards
            .iter()
            .enumerate()
            .find(|(_, s)| s.members.contains(&me))
    }

    /// Checks the spec for internal consistency.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.my_rank >= self.members.len() {
            return Err(SpecError::RankOutOfRange {
                rank: self.my_rank,
                members: self.members.len(),
            });
        }
        for (sg, s) in self.subgroups.iter().enumerate() {
            let mut seen = std::collections::BTreeSet::new();
            for (i, shard) in s.shards.iter().enumerate() {
                for m in &shard.members {
                    if !self.members.iter().any(|v| v.0 == *m) {
                        return Err(SpecError::NotInView {
                            subgroup: sg,
                            shard: i,
                            node: *m,
                        });
                    }
                    if !seen.insert(*m) {
                        return Err(SpecError::InTwoShards {
                            subgroup: sg,
                            node: *m,
                        });
                    }
                }
                if let Some(x) = shard.senders.iter().find(|x| !shard.members.contains(x)) {
                    return Err(SpecError::SenderNotMember {
                        subgroup: sg,
                        shard: i,
                        node: *x,
                    });
                }
                let z = &shard.sizes;
                if z.window == 0 || z.block_size == 0 {
                    return Err(SpecError::ZeroSize {
                        subgroup: sg,
                        shard: i,
                    });
                }
            }
        }
        Ok(())
    }
}

/// How a [`MulticastSpec`] is inconsistent (see [`MulticastSpec::validate`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// This node's rank is not a rank of the view.
    #[error("rank {rank} of {members} members")]
    RankOutOfRange {
        /// This node's rank.
        rank: usize,
        /// The number of members.
        members: usize,
    },
    /// A shard names a node that is not a member of the view.
    #[error("subgroup {subgroup} shard {shard}: node {node} is not in the view")]
    NotInView {
        /// The subgroup.
        subgroup: usize,
        /// The shard.
        shard: usize,
        /// The node.
        node: NodeId,
    },
    /// A node is in two shards of one subgroup.
    #[error("subgroup {subgroup}: node {node} is in two shards")]
    InTwoShards {
        /// The subgroup.
        subgroup: usize,
        /// The node.
        node: NodeId,
    },
    /// A shard's sender is not one of its members.
    #[error("subgroup {subgroup} shard {shard}: sender {node} is not a member")]
    SenderNotMember {
        /// The subgroup.
        subgroup: usize,
        /// The shard.
        shard: usize,
        /// The sender.
        node: NodeId,
    },
    /// A shard's window or RDMC block size is zero.
    #[error("subgroup {subgroup} shard {shard}: window and block size must be positive")]
    ZeroSize {
        /// The subgroup.
        subgroup: usize,
        /// The shard.
        shard: usize,
    },
}

/// The multicast columns of the view's SST schema, and where each subgroup's part lies.
#[derive(Clone, Debug)]
pub(crate) struct Columns {
    /// Per subgroup: highest seq such that every message up to it was received here.
    pub seq_num: ArrayField<i64>,
    /// Per subgroup: highest seq delivered here.
    pub delivered_num: ArrayField<i64>,
    /// Per subgroup: my committed SMC slots (count − 1).
    pub index: ArrayField<i64>,
    /// Per subgroup: the newest version (`vid << 32 | seq`) of my replica that is on disk here
    /// (−1: none yet, or the subgroup is not persistent).
    pub persisted_num: ArrayField<i64>,
    /// Per sender column: highest index received contiguously from that sender.
    pub num_received: ArrayField<i64>,
    /// Per sender column: SMC slots of that sender consumed here (count − 1).
    pub num_received_sst: ArrayField<i64>,
    /// Everyone's SMC rings.
    pub slots: BytesField,
    /// First per-sender column of each subgroup.
    pub received_offset: Vec<usize>,
    /// Start of each subgroup's ring in `slots`, its slot length and slot count.
    pub ring: Vec<(usize, usize, usize)>,
    /// The membership protocol's columns.
    pub gms: GmsColumns,
}

/// The membership protocol's columns (see `crate::gms::change`).
#[derive(Clone, Debug)]
pub struct GmsColumns {
    /// `suspected[j]`: this member suspects the member of rank `j`.
    pub suspected: ArrayField<bool>,
    /// Proposed changes, oldest first: a node id in the low 32 bits, bit 63 = end of view.
    pub changes: ArrayField<u64>,
    /// Number of changes proposed (leader) or copied (others).
    pub num_changes: derecho_sst::Field<i64>,
    /// Number of changes the leader committed.
    pub num_committed: derecho_sst::Field<i64>,
    /// Number of changes this member acknowledged.
    pub num_acked: derecho_sst::Field<i64>,
    /// This member stopped sending and delivering in this view.
    pub wedged: derecho_sst::Field<bool>,
    /// Per sender column: the last index every survivor delivers (ragged trim).
    pub global_min: ArrayField<i64>,
    /// Per subgroup: `global_min` of my shard is final on this member.
    pub global_min_ready: ArrayField<bool>,
    /// This member leaves on purpose.
    pub rip: derecho_sst::Field<bool>,
    /// For each entry of `changes` that is a join, the joiner's address: three words (the IP
    /// as 16 bytes, IPv4 mapped into IPv6, then the four ports packed 16 bits each).
    pub joiner_info: ArrayField<u64>,
    /// The number of changes this view change installs, fixed by the leader and echoed.
    pub trim_end: derecho_sst::Field<i64>,
    /// `trim_end` is set on this member.
    pub trim_end_ready: derecho_sst::Field<bool>,
}

impl Columns {
    /// Declares the columns for `spec` in `b`.
    pub(crate) fn declare(spec: &MulticastSpec, b: &mut SchemaBuilder) -> Result<Self, SstError> {
        let s = spec.subgroups.len().max(1);
        let mut received_offset = Vec::with_capacity(spec.subgroups.len());
        let mut ring = Vec::with_capacity(spec.subgroups.len());
        let (mut r, mut at) = (0usize, 0usize);
        for sg in &spec.subgroups {
            received_offset.push(r);
            r += sg.shards.iter().map(|x| x.senders.len()).max().unwrap_or(0);
            let slot = sg
                .shards
                .iter()
                .map(|x| x.sizes.slot_len())
                .max()
                .unwrap_or(HEADER_LEN);
            let window = sg.shards.iter().map(|x| x.sizes.window).max().unwrap_or(1);
            ring.push((at, slot, window));
            at += slot * window;
        }
        let n = spec.members.len().max(1);
        let gms = GmsColumns {
            suspected: b.array("suspected", n),
            changes: b.array("changes", n + 8),
            num_changes: b.field("num_changes"),
            num_committed: b.field("num_committed"),
            num_acked: b.field("num_acked"),
            wedged: b.field("wedged"),
            global_min: b.array("global_min", r.max(1)),
            global_min_ready: b.array("global_min_ready", s),
            rip: b.field("rip"),
            joiner_info: b.array("joiner_info", (n + 8) * 3),
            trim_end: b.field("trim_end"),
            trim_end_ready: b.field("trim_end_ready"),
        };
        Ok(Self {
            seq_num: b.array("seq_num", s),
            delivered_num: b.array("delivered_num", s),
            index: b.array("index", s),
            persisted_num: b.array("persisted_num", s),
            num_received: b.array("num_received", r.max(1)),
            num_received_sst: b.array("num_received_sst", r.max(1)),
            slots: b.bytes("slots", at.max(8)),
            received_offset,
            ring,
            gms,
        })
    }
}

/// A decoded message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The sender's message index (the first one, for a batch of nulls).
    pub index: i64,
    /// Payload bytes after the header.
    pub len: usize,
    /// 0 for a real message; k > 0 for a slot that stands for k null messages.
    pub nulls: u64,
    /// Flag bits (bit 0: the payload is an RPC invocation).
    pub flags: u64,
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&self.index.to_le_bytes());
        out[8..16].copy_from_slice(&(self.len as u64).to_le_bytes());
        out[16..24].copy_from_slice(&self.nulls.to_le_bytes());
        out[24..32].copy_from_slice(&self.flags.to_le_bytes());
        out
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        let word = |i: usize| {
            b.get(i..i + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
        };
        Some(Self {
            index: word(0)? as i64,
            len: usize::try_from(word(8)?).ok()?,
            nulls: word(16)?,
            flags: word(24)?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            index: 41,
            len: 1000,
            nulls: 0,
            flags: 1,
        };
        assert_eq!(Header::decode(&h.encode()), Some(h));
        assert_eq!(Header::decode(&[0u8; 10]), None);
    }
}
