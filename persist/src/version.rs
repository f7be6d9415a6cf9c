//! Version numbers and hybrid logical clock timestamps.
//!
//! This file owns the packing of a `(view id, sequence number)` pair into one
//! ordered 64-bit [`Version`], and the [`Hlc`] timestamp stored next to every
//! logged version.

use serde::{Deserialize, Serialize};

/// A log version: the view id in the high 32 bits, the per-shard sequence
/// number in the low 32 bits.
///
/// Because the view id occupies the high half, comparing two packed versions
/// as `i64` orders them lexicographically by `(vid, seq)` for every
/// non-negative view id. [`INVALID`] (`-1`) sorts below every valid version.
pub type Version = i64;

/// The version that names "no version at all" (an empty log, nothing persisted).
pub const INVALID: Version = -1;

/// Packs a view id and a sequence number into a [`Version`].
///
/// The sequence number is reinterpreted as its 32-bit unsigned pattern, so
/// `unpack(pack(vid, seq)) == (vid, seq)` for every pair.
pub fn pack(vid: i32, seq: i32) -> Version {
    (((vid as u32 as u64) << 32) | (seq as u32 as u64)) as i64
}

/// Splits a [`Version`] into its view id and sequence number.
pub fn unpack(version: Version) -> (i32, i32) {
    let bits = version as u64;
    ((bits >> 32) as u32 as i32, bits as u32 as i32)
}

/// A hybrid logical clock timestamp: wall-clock microseconds plus a logical
/// counter that orders events sharing the same microsecond.
///
/// Every replica records the message sender's timestamp for a version, so the
/// logs of one shard are byte-identical. Ordering is by `rtc_us`, then `logic`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc {
    /// Real-time clock reading in microseconds since the Unix epoch.
    pub rtc_us: u64,
    /// Logical counter, incremented when the clock did not advance.
    pub logic: u64,
}

impl Hlc {
    /// The smallest timestamp.
    pub const ZERO: Hlc = Hlc {
        rtc_us: 0,
        logic: 0,
    };

    /// The largest timestamp; useful as an "everything" bound in time queries.
    pub const MAX: Hlc = Hlc {
        rtc_us: u64::MAX,
        logic: u64::MAX,
    };

    /// A timestamp from a clock reading and a logical counter.
    pub fn new(rtc_us: u64, logic: u64) -> Hlc {
        Hlc { rtc_us, logic }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn pack_round_trips_and_orders_lexicographically() {
        let pairs = [
            (0, 0),
            (0, 1),
            (0, i32::MAX),
            (0, -1),
            (1, 0),
            (1, 5),
            (7, -2),
        ];
        for &(vid, seq) in &pairs {
            assert_eq!(unpack(pack(vid, seq)), (vid, seq));
        }
        // A larger view id dominates any sequence number of an older view.
        assert!(pack(1, 0) > pack(0, i32::MAX));
        assert!(pack(1, 0) > pack(0, -1));
        assert!(pack(0, 0) > INVALID);
        assert!(pack(2, 3) < pack(2, 4));
    }

    #[test]
    fn hlc_orders_by_clock_then_logic() {
        assert!(Hlc::new(1, 9) < Hlc::new(2, 0));
        assert!(Hlc::new(2, 0) < Hlc::new(2, 1));
        assert_eq!(Hlc::ZERO, Hlc::default());
        assert!(Hlc::MAX > Hlc::new(u64::MAX, 0));
    }
}
