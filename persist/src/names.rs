//! Stable, file-system-safe names for persistent fields, and the restart-time
//! scan over a shard's logs.
//!
//! A field's log name is `<type hash>-<subgroup index>-<shard>-<field>`: the
//! hash is 64-bit FNV-1a of the subgroup type name (stable across builds and
//! platforms, unlike `std`'s hasher) in 16 hex digits, and the field name is
//! escaped so the result contains only `[0-9A-Za-z_-]`. Because the prefix up
//! to the shard number does not depend on the field, restart can find every
//! log of a shard with [`shard_prefix`] before any object is constructed.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::error::Result;
use crate::log::{format, Log, LogOptions};
use crate::storage::Storage;
use crate::version::{Version, INVALID};

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Escapes a field name injectively: ASCII letters and digits pass through,
/// every other byte becomes `_` and two lowercase hex digits.
fn escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for b in field.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The name prefix shared by every field log of one shard of one subgroup.
pub fn shard_prefix(subgroup_type: &str, subgroup_index: u32, shard: u32) -> String {
    format!(
        "{:016x}-{subgroup_index}-{shard}-",
        fnv1a64(subgroup_type.as_bytes())
    )
}

/// The log name of field `field` of the given shard's replicated object.
pub fn field_name(subgroup_type: &str, subgroup_index: u32, shard: u32, field: &str) -> String {
    let mut name = shard_prefix(subgroup_type, subgroup_index, shard);
    name.push_str(&escape(field));
    name
}

/// The names of the logs on `storage` whose names start with `prefix`, sorted.
pub fn logs_with_prefix(storage: &dyn Storage, prefix: &str) -> Result<Vec<String>> {
    let names: BTreeSet<String> = storage
        .list()?
        .iter()
        .filter_map(|f| format::log_name_of(f))
        .filter(|log| log.starts_with(prefix))
        .map(str::to_string)
        .collect();
    Ok(names.into_iter().collect())
}

/// Opens every log under `prefix` read-only and returns the minimum of their
/// latest versions: the newest version every field of the shard has. Returns
/// [`INVALID`] when there is no log under the prefix.
pub fn min_latest_persisted(storage: Arc<dyn Storage>, prefix: &str) -> Result<Version> {
    let options = LogOptions {
        read_only: true,
        ..LogOptions::default()
    };
    let mut min: Option<Version> = None;
    for name in logs_with_prefix(storage.as_ref(), prefix)? {
        let log = Log::open(storage.clone(), &name, options.clone())?;
        let latest = log.latest_version();
        min = Some(min.map_or(latest, |m| m.min(latest)));
    }
    Ok(min.unwrap_or(INVALID))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn names_are_stable_safe_and_distinct() {
        let n = field_name("my::Kv<String>", 2, 1, "table.v1/x");
        assert!(n.starts_with(&shard_prefix("my::Kv<String>", 2, 1)));
        assert!(n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        // A fixed expectation guards against accidental changes of the scheme.
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            field_name("T", 0, 0, "f"),
            format!("{:016x}-0-0-f", fnv1a64(b"T"))
        );
        assert_ne!(field_name("T", 0, 0, "a.b"), field_name("T", 0, 0, "a_b"));
        assert_ne!(field_name("T", 1, 0, "f"), field_name("T", 0, 1, "f"));
        assert_ne!(field_name("T", 1, 2, "f"), field_name("U", 1, 2, "f"));
        // Shard 1 is not a prefix match for shard 10.
        assert!(!field_name("T", 0, 10, "f").starts_with(&shard_prefix("T", 0, 1)));
    }
}
