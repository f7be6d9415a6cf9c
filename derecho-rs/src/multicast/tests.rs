//! Tests of one view's multicast that look at state the public API does not show: the RDMC
//! group ids a view hands out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use derecho_rdmc::MAX_GROUP_ID;

use super::*;

#[test]
fn rdmc_group_ids_differ_across_views_and_many_senders() {
    // The ids once wrapped at view 4096 and at sender rank 256.
    let mut seen = BTreeSet::new();
    for vid in [0, 1, 4095, 4096, 8192, 1 << 20, u64::from(u32::MAX)] {
        for column in 0..300 {
            let id = rdmc_group_id(vid, column).unwrap();
            assert!(id <= MAX_GROUP_ID, "view {vid} column {column}: {id:#x}");
            assert!(seen.insert(id), "view {vid} column {column} reuses {id:#x}");
        }
    }
    assert!(rdmc_group_id(0, (1 << RDMC_COLUMN_BITS) - 1).is_ok());
    assert!(matches!(
        rdmc_group_id(0, 1 << RDMC_COLUMN_BITS),
        Err(MulticastError::Spec(_))
    ));
}
