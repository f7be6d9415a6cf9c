//! `[SUBGROUP/<NAME>]` profiles: message sizes, window and RDMC algorithm of the shards that
//! name the profile, plus the optional shard counts read by profile-driven layouts.

use super::value::{parse_enum, parse_u32, parse_u64, Problem, RdmcSendAlgorithm};

/// The name of the profile that always exists and that other profiles inherit from.
pub const DEFAULT_PROFILE: &str = "DEFAULT";

/// The section prefix of profiles: `[SUBGROUP/<NAME>]`.
pub(crate) const SUBGROUP_SECTION: &str = "SUBGROUP";

/// One subgroup profile.
///
/// The `DEFAULT` profile starts from the defaults documented on each field. **A named profile
/// takes every key it does not set from the final `DEFAULT` profile** (after all layers are
/// merged). This is a deliberate difference from the original, which required all six size keys
/// in every named profile and failed at group start when one was missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubgroupProfile {
    /// `max_payload_size`: largest multicast payload, bytes. Default 10240.
    pub max_payload_size: u64,
    /// `max_reply_payload_size`: largest reply to an ordered send, bytes. Default 10240. Below
    /// 128 is an error for `DEFAULT` and a warning for a named profile (the 2019 demo's
    /// function tier uses 100 for a subgroup that never replies).
    pub max_reply_payload_size: u64,
    /// `max_smc_payload_size`: messages up to this size go through the SST ring, larger ones
    /// through RDMC. Default 10240.
    pub max_smc_payload_size: u64,
    /// `block_size`: RDMC block size, bytes; at least 1. Default 1048576.
    pub block_size: u64,
    /// `window_size`: outstanding messages per sender; at least 1. Default 16.
    pub window_size: u32,
    /// `rdmc_send_algorithm`: `binomial_send|chain_send|sequential_send|tree_send`.
    /// Default `binomial_send`.
    pub rdmc_send_algorithm: RdmcSendAlgorithm,
    /// `num_shards`: shard count for a profile-driven layout. No default.
    pub num_shards: Option<u32>,
    /// `min_nodes`: minimum members per shard for a profile-driven layout. No default.
    pub min_nodes: Option<u32>,
    /// `max_nodes`: maximum members per shard for a profile-driven layout. No default.
    pub max_nodes: Option<u32>,
}

impl Default for SubgroupProfile {
    fn default() -> Self {
        SubgroupProfile {
            max_payload_size: 10240,
            max_reply_payload_size: 10240,
            max_smc_payload_size: 10240,
            block_size: 1 << 20,
            window_size: 16,
            rdmc_send_algorithm: RdmcSendAlgorithm::Binomial,
            num_shards: None,
            min_nodes: None,
            max_nodes: None,
        }
    }
}

impl SubgroupProfile {
    /// Every key a profile accepts.
    pub(crate) const KEYS: &'static [&'static str] = &[
        "max_payload_size",
        "max_reply_payload_size",
        "max_smc_payload_size",
        "block_size",
        "window_size",
        "rdmc_send_algorithm",
        "num_shards",
        "min_nodes",
        "max_nodes",
    ];

    /// The profile keys that the v0.9 format placed under `[DERECHO]`.
    pub(crate) const V09_DERECHO_KEYS: &'static [&'static str] = &[
        "max_payload_size",
        "max_smc_payload_size",
        "block_size",
        "window_size",
        "rdmc_send_algorithm",
    ];

    /// Parses and stores one key.
    pub(crate) fn set(&mut self, name: &str, v: &str) -> Result<(), Problem> {
        match name {
            "max_payload_size" => self.max_payload_size = parse_u64(v)?,
            "max_reply_payload_size" => self.max_reply_payload_size = parse_u64(v)?,
            "max_smc_payload_size" => self.max_smc_payload_size = parse_u64(v)?,
            "block_size" => {
                let n = parse_u64(v)?;
                if n == 0 {
                    return Err(Problem::OutOfRange(
                        "the block size must be at least 1".to_string(),
                    ));
                }
                self.block_size = n;
            }
            "window_size" => {
                let n = parse_u32(v)?;
                if n == 0 {
                    return Err(Problem::OutOfRange(
                        "the window size must be at least 1".to_string(),
                    ));
                }
                self.window_size = n;
            }
            "rdmc_send_algorithm" => self.rdmc_send_algorithm = parse_enum(v)?,
            "num_shards" => self.num_shards = Some(parse_u32(v)?),
            "min_nodes" => self.min_nodes = Some(parse_u32(v)?),
            "max_nodes" => self.max_nodes = Some(parse_u32(v)?),
            other => {
                return Err(Problem::Invalid(format!(
                    "a subgroup profile key (`{other}` is not one)"
                )))
            }
        }
        Ok(())
    }

    /// Every set key with its value in canonical form (the optional ones only when present).
    pub(crate) fn entries(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("max_payload_size", self.max_payload_size.to_string()),
            (
                "max_reply_payload_size",
                self.max_reply_payload_size.to_string(),
            ),
            (
                "max_smc_payload_size",
                self.max_smc_payload_size.to_string(),
            ),
            ("block_size", self.block_size.to_string()),
            ("window_size", self.window_size.to_string()),
            ("rdmc_send_algorithm", self.rdmc_send_algorithm.to_string()),
        ];
        for (key, value) in [
            ("num_shards", self.num_shards),
            ("min_nodes", self.min_nodes),
            ("max_nodes", self.max_nodes),
        ] {
            if let Some(n) = value {
                out.push((key, n.to_string()));
            }
        }
        out
    }
}

/// Checks a profile name as it appears in `[SUBGROUP/<NAME>]`.
pub(crate) fn valid_profile_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}
