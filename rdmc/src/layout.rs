//! Where things live in a group member's region.
//!
//! Every member of a group registers one region with the same layout:
//!
//! ```text
//! [ released counts: one u64 per rank ]      credits: messages each rank has released
//! [ slot headers: window × 64 bytes ]         per slot: message number + 1, message size
//! [ slot data: window × buffer bytes ]        the message bytes, block after block
//! ```
//!
//! Message `k` uses slot `k % window` on every member. The sender writes the header of a slot
//! before the first block it sends to a peer, on the same link, so a receiver that sees a block
//! notification can read the message size from its own copy of the header.

use derecho_fabric::RegionId;

/// Bits of the immediate value that carry the block index.
pub(crate) const BLOCK_BITS: u32 = 20;
/// Most blocks one message may have (2^20).
pub const MAX_BLOCKS_PER_MESSAGE: usize = 1 << BLOCK_BITS;
/// Most message slots per group (the slot index travels in 8 bits of the immediate).
pub const MAX_WINDOW: usize = 256;
/// Largest group id: ids take the low 56 bits of a region id, below the RDMC tag byte.
pub const MAX_GROUP_ID: u64 = (1 << 56) - 1;
/// The top byte of every RDMC region id ('R').
const REGION_TAG: u64 = 0x52 << 56;

const ALIGN: usize = 64;
const HEADER: usize = 64;

fn align(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

/// Offsets of a group's region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub members: usize,
    pub window: usize,
    pub buffer: usize,
    pub headers: usize,
    pub data: usize,
    pub total: usize,
}

impl Layout {
    pub(crate) fn new(members: usize, window: usize, max_message: usize) -> Option<Self> {
        let headers = align(members.checked_mul(8)?);
        let data = headers.checked_add(window.checked_mul(HEADER)?)?;
        let buffer = align(max_message.max(1));
        let total = data.checked_add(window.checked_mul(buffer)?)?;
        Some(Self {
            members,
            window,
            buffer,
            headers,
            data,
            total,
        })
    }

    /// Offset of rank `r`'s released count.
    pub(crate) fn released(&self, rank: usize) -> usize {
        rank * 8
    }

    /// Offset of slot `s`'s header (message number + 1 at +0, size at +8).
    pub(crate) fn header(&self, slot: usize) -> usize {
        self.headers + slot * HEADER
    }

    /// Offset of slot `s`'s first data byte.
    pub(crate) fn slot_data(&self, slot: usize) -> usize {
        self.data + slot * self.buffer
    }
}

/// The region name of group `group_id` (at most [`MAX_GROUP_ID`], which the spec checks, so
/// distinct groups get distinct regions).
pub(crate) fn region_id(group_id: u64) -> RegionId {
    debug_assert!(
        group_id <= MAX_GROUP_ID,
        "group id {group_id} overlaps the tag"
    );
    RegionId(REGION_TAG | (group_id & MAX_GROUP_ID))
}

/// Packs (slot, message number, block) into an immediate value.
pub(crate) fn encode_imm(slot: usize, seq: u64, block: usize) -> u32 {
    ((slot as u32 & 0xff) << 24)
        | (((seq & 0xf) as u32) << BLOCK_BITS)
        | (block as u32 & ((1 << BLOCK_BITS) - 1))
}

/// Unpacks an immediate value into (slot, low 4 bits of the message number, block).
pub(crate) fn decode_imm(imm: u32) -> (usize, u64, usize) {
    (
        (imm >> 24) as usize,
        u64::from((imm >> BLOCK_BITS) & 0xf),
        (imm & ((1 << BLOCK_BITS) - 1)) as usize,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn imm_round_trip() {
        for (slot, seq, block) in [(0, 0, 0), (255, 17, (1 << 20) - 1), (3, 5, 12345)] {
            let (s, q, b) = decode_imm(encode_imm(slot, seq, block));
            assert_eq!((s, q, b), (slot, seq & 0xf, block));
        }
    }

    #[test]
    fn layout_is_aligned_and_disjoint() {
        let l = Layout::new(3, 4, 1000).unwrap();
        assert_eq!(l.headers % 64, 0);
        assert_eq!(l.data % 64, 0);
        assert!(l.released(2) + 8 <= l.headers);
        assert!(l.header(3) + 64 <= l.data);
        assert_eq!(l.slot_data(3) + l.buffer, l.total);
        assert!(Layout::new(usize::MAX, 2, 10).is_none());
    }

    #[test]
    fn region_ids_keep_every_group_id_bit() {
        let ids = [0, 1, 1 << 31, 1 << 32, (4096 << 24) | 300, MAX_GROUP_ID];
        let regions: std::collections::BTreeSet<_> = ids.iter().map(|&g| region_id(g)).collect();
        assert_eq!(regions.len(), ids.len());
        for r in regions {
            assert_eq!(r.0 >> 56, 0x52, "the tag stays in the top byte");
        }
    }
}
