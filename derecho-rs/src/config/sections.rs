//! The typed `[RDMA]`, `[PERS]`, `[SECURITY]`, `[LOGGER]` and `[LAYOUT]` sections, and the [`Section`] trait
//! that all fixed sections (also `[DERECHO]`, in its own file) implement.
//!
//! Each field's doc states its key and default. Where our default differs from the original
//! Derecho's, the doc says so and why.

use std::path::PathBuf;

pub use super::derecho_section::DerechoSection;
use super::value::{
    join_list, parse_bool, parse_enum, parse_list, parse_u32, parse_u64, Durability, FabricBackend,
    LogLevel, Problem, SecurityMode,
};

/// The smallest reply buffer an RPC can use: the reply header and an error report must fit.
pub const MIN_REPLY_PAYLOAD_SIZE: u64 = 128;

/// What the build step needs from each fixed section: its key names, how to set one key from a
/// string, and how to write every key back.
pub(crate) trait Section {
    /// The section name, as in `[NAME]`.
    const NAME: &'static str;
    /// Every key the section accepts.
    const KEYS: &'static [&'static str];
    /// Parses and stores one key; `name` is one of [`Self::KEYS`].
    fn set(&mut self, name: &str, value: &str) -> Result<(), Problem>;
    /// Every key with its current value in canonical form, in [`Self::KEYS`] order.
    fn entries(&self) -> Vec<(&'static str, String)>;
}

/// The problem reported for a key a section does not have.
pub(crate) fn unknown(name: &str) -> Problem {
    Problem::Invalid(format!("a key of this section (`{name}` is not one)"))
}

/// Parses a `u32` that must be at least 1; `what` names it in the message.
pub(crate) fn nonzero_u32(value: &str, what: &str) -> Result<u32, Problem> {
    let n = parse_u32(value)?;
    if n == 0 {
        return Err(Problem::OutOfRange(format!("{what} must be at least 1")));
    }
    Ok(n)
}

/// `[RDMA]`: which fabric backend carries one-sided writes, and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdmaSection {
    /// `backend` (ours, not in the original): `tcp|shm|libfabric|verbs`, selects the fabric
    /// implementation. Default `tcp`.
    pub backend: FabricBackend,
    /// `provider`: the libfabric provider, used when `backend = libfabric`. Default **`tcp`**
    /// (the original's default `sockets` is accepted but deprecated by libfabric and slow; a
    /// warning says so).
    pub provider: String,
    /// `domain`: NIC name for tcp-like providers, device name for verbs (e.g. `mlx5_0`).
    /// Default **`lo`** (the original's `eth0` rarely exists on a laptop).
    pub domain: String,
    /// `tx_depth`: send queue depth. Default 256.
    pub tx_depth: u32,
    /// `rx_depth`: receive queue depth. Default 256.
    pub rx_depth: u32,
}

impl Default for RdmaSection {
    fn default() -> Self {
        RdmaSection {
            backend: FabricBackend::Tcp,
            provider: "tcp".to_string(),
            domain: "lo".to_string(),
            tx_depth: 256,
            rx_depth: 256,
        }
    }
}

impl Section for RdmaSection {
    const NAME: &'static str = "RDMA";
    const KEYS: &'static [&'static str] =
        &["backend", "provider", "domain", "tx_depth", "rx_depth"];

    fn set(&mut self, name: &str, v: &str) -> Result<(), Problem> {
        match name {
            "backend" => self.backend = parse_enum(v)?,
            "provider" | "domain" if v.is_empty() => {
                return Err(Problem::Invalid("a non-empty name".to_string()))
            }
            "provider" => self.provider = v.to_string(),
            "domain" => self.domain = v.to_string(),
            "tx_depth" => self.tx_depth = nonzero_u32(v, "the queue depth")?,
            "rx_depth" => self.rx_depth = nonzero_u32(v, "the queue depth")?,
            other => return Err(unknown(other)),
        }
        Ok(())
    }

    fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("backend", self.backend.to_string()),
            ("provider", self.provider.clone()),
            ("domain", self.domain.clone()),
            ("tx_depth", self.tx_depth.to_string()),
            ("rx_depth", self.rx_depth.to_string()),
        ]
    }
}

/// `[PERS]`: where and how persistent logs are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersSection {
    /// `file_path`: directory of the persistent logs and of the logged view. Default `.plog`.
    pub file_path: PathBuf,
    /// `ramdisk_path`: the original's directory for volatile logs. Not used: a subgroup that
    /// is not persistent keeps no log at all (setting it logs a warning).
    pub ramdisk_path: PathBuf,
    /// `reset`: delete the logs found in `file_path` at start-up (the member starts fresh
    /// instead of restarting from them). Default false.
    pub reset: bool,
    /// `max_log_entry`: most updates a replica's log keeps after its newest checkpoint; past
    /// it a checkpoint is taken and older entries are trimmed (the original refuses new
    /// updates instead). Default 1048576.
    pub max_log_entry: u64,
    /// `max_data_size`: most bytes a replica's update log keeps, trimmed the same way.
    /// Default 549755813888 (512 GiB).
    pub max_data_size: u64,
    /// `private_key_file`: the signing key of signed logs (read only with `signed_logs =
    /// true`): an Ed25519 private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, as
    /// `openssl genpkey -algorithm ed25519` or
    /// [`generate_signing_key`](derecho_persist::generate_signing_key) write it; raw DER is
    /// accepted too), readable by its owner only. A relative path is taken from the working
    /// directory, like `file_path`. Every member of a shard must use the same key, so that
    /// replicas write identical logs. Default `private_key.pem`; setting it without
    /// `signed_logs = true` logs a warning.
    pub private_key_file: PathBuf,
    /// `signed_logs` (ours): sign the logs of every persistent replica with
    /// `private_key_file`: each logged update and checkpoint carries an Ed25519 signature
    /// chained to the one before it, which [`Log::verify`](derecho_persist::Log::verify)
    /// checks with the public key ([`derecho_persist::sign`] gives the rule). The key is
    /// loaded when a member with persistent subgroups starts; a missing, unreadable, malformed
    /// or group-readable key stops the start with a [`ConfigError::SigningKey`]. Logs written
    /// before signing was turned on keep their unsigned entries until a checkpoint trims them.
    /// The logged view and ragged trims are not signed. Default false (the original signs only
    /// the fields of types that ask for it; here it is one switch for all persistent types).
    ///
    /// [`ConfigError::SigningKey`]: super::ConfigError::SigningKey
    pub signed_logs: bool,
    /// `durability` (ours): `write_behind` (deliver, then persist; the original's) or
    /// `write_ahead` (persist, then deliver) for every persistent subgroup not listed in
    /// `write_ahead_types`. Default `write_behind`.
    pub durability: Durability,
    /// `write_ahead_types` (ours): comma-separated names of replicated types whose subgroups
    /// persist before they deliver, whatever `durability` says. Default empty.
    pub write_ahead_types: Vec<String>,
    /// `checkpoint_interval` (ours): updates between two checkpoints of a persistent replica
    /// (a restart replays at most this many). Default 10000.
    pub checkpoint_interval: u64,
    /// `checkpoint_bytes` (ours): update bytes logged since the last checkpoint of a
    /// persistent replica that also make one due, or the size of that checkpoint if it is
    /// larger (so a checkpoint never costs more to write than the updates it saves replaying).
    /// A restart replays at most about this much. Default 67108864 (64 MiB).
    pub checkpoint_bytes: u64,
}

impl PersSection {
    /// The durability of the subgroups of type `type_name`.
    pub fn durability_of(&self, type_name: &str) -> Durability {
        if self.write_ahead_types.iter().any(|t| t == type_name) {
            Durability::WriteAhead
        } else {
            self.durability
        }
    }
}

impl Default for PersSection {
    fn default() -> Self {
        PersSection {
            file_path: PathBuf::from(".plog"),
            ramdisk_path: PathBuf::from("/dev/shm/volatile_t"),
            reset: false,
            max_log_entry: 1 << 20,
            max_data_size: 512 << 30,
            private_key_file: PathBuf::from("private_key.pem"),
            signed_logs: false,
            durability: Durability::WriteBehind,
            write_ahead_types: Vec::new(),
            checkpoint_interval: 10_000,
            checkpoint_bytes: 64 << 20,
        }
    }
}

impl Section for PersSection {
    const NAME: &'static str = "PERS";
    const KEYS: &'static [&'static str] = &[
        "file_path",
        "ramdisk_path",
        "reset",
        "max_log_entry",
        "max_data_size",
        "private_key_file",
        "signed_logs",
        "durability",
        "write_ahead_types",
        "checkpoint_interval",
        "checkpoint_bytes",
    ];

    fn set(&mut self, name: &str, v: &str) -> Result<(), Problem> {
        match name {
            "file_path" => self.file_path = PathBuf::from(v),
            "ramdisk_path" => self.ramdisk_path = PathBuf::from(v),
            "reset" => self.reset = parse_bool(v)?,
            "max_log_entry" => self.max_log_entry = nonzero_u64(v, "max_log_entry")?,
            "max_data_size" => self.max_data_size = nonzero_u64(v, "max_data_size")?,
            "private_key_file" => self.private_key_file = PathBuf::from(v),
            "signed_logs" => self.signed_logs = parse_bool(v)?,
            "durability" => self.durability = parse_enum(v)?,
            "write_ahead_types" => {
                self.write_ahead_types = parse_list(v, |t| Ok(t.to_string()))?;
            }
            "checkpoint_interval" => {
                self.checkpoint_interval = nonzero_u64(v, "checkpoint_interval")?;
            }
            "checkpoint_bytes" => {
                self.checkpoint_bytes = nonzero_u64(v, "checkpoint_bytes")?;
            }
            other => return Err(unknown(other)),
        }
        Ok(())
    }

    fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("file_path", self.file_path.to_string_lossy().into_owned()),
            (
                "ramdisk_path",
                self.ramdisk_path.to_string_lossy().into_owned(),
            ),
            ("reset", self.reset.to_string()),
            ("max_log_entry", self.max_log_entry.to_string()),
            ("max_data_size", self.max_data_size.to_string()),
            (
                "private_key_file",
                self.private_key_file.to_string_lossy().into_owned(),
            ),
            ("signed_logs", self.signed_logs.to_string()),
            ("durability", self.durability.to_string()),
            ("write_ahead_types", join_list(&self.write_ahead_types)),
            ("checkpoint_interval", self.checkpoint_interval.to_string()),
            ("checkpoint_bytes", self.checkpoint_bytes.to_string()),
        ]
    }
}

/// Parses a `u64` that must be at least 1; `what` names it in the message.
fn nonzero_u64(value: &str, what: &str) -> Result<u64, Problem> {
    let n = parse_u64(value)?;
    if n == 0 {
        return Err(Problem::OutOfRange(format!("{what} must be at least 1")));
    }
    Ok(n)
}

/// `[SECURITY]` (ours): how members and external clients authenticate. See
/// [`derecho_fabric::secure`] for what each mode proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecuritySection {
    /// `mode`: `open` (no authentication, the default), `secret` or `certificate`.
    pub mode: SecurityMode,
    /// `group_secret_file`: a file readable by its owner only, holding 64 hexadecimal digits
    /// (32 random bytes) shared by every member. Required with `mode = secret`.
    pub group_secret_file: PathBuf,
    /// `client_secret_file`: the same for external clients, which hold this secret only. Without
    /// it, a secure member refuses every external client.
    pub client_secret_file: PathBuf,
    /// `ca_file`: the group CA's certificate (PEM), which every member and client trusts.
    /// Required with `mode = certificate`; `derecho-secret ca DIR` makes a CA.
    pub ca_file: PathBuf,
    /// `cert_file`: this process's certificate (PEM), issued by the group CA to this member's
    /// `local_id` (or to an external client) with `derecho-secret issue`. Required with
    /// `mode = certificate`.
    pub cert_file: PathBuf,
    /// `key_file`: the private key of `cert_file` (PEM), readable by its owner only. Required
    /// with `mode = certificate`.
    pub key_file: PathBuf,
}

impl Default for SecuritySection {
    fn default() -> Self {
        SecuritySection {
            mode: SecurityMode::Open,
            group_secret_file: PathBuf::new(),
            client_secret_file: PathBuf::new(),
            ca_file: PathBuf::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
        }
    }
}

impl Section for SecuritySection {
    const NAME: &'static str = "SECURITY";
    const KEYS: &'static [&'static str] = &[
        "mode",
        "group_secret_file",
        "client_secret_file",
        "ca_file",
        "cert_file",
        "key_file",
    ];

    fn set(&mut self, name: &str, v: &str) -> Result<(), Problem> {
        match name {
            "mode" => self.mode = parse_enum(v)?,
            "group_secret_file" => self.group_secret_file = PathBuf::from(v),
            "client_secret_file" => self.client_secret_file = PathBuf::from(v),
            "ca_file" => self.ca_file = PathBuf::from(v),
            "cert_file" => self.cert_file = PathBuf::from(v),
            "key_file" => self.key_file = PathBuf::from(v),
            other => return Err(unknown(other)),
        }
        Ok(())
    }

    fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("mode", self.mode.to_string()),
            (
                "group_secret_file",
                self.group_secret_file.to_string_lossy().into_owned(),
            ),
            (
                "client_secret_file",
                self.client_secret_file.to_string_lossy().into_owned(),
            ),
            ("ca_file", self.ca_file.to_string_lossy().into_owned()),
            ("cert_file", self.cert_file.to_string_lossy().into_owned()),
            ("key_file", self.key_file.to_string_lossy().into_owned()),
        ]
    }
}

/// `[LOGGER]`: log levels and log files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggerSection {
    /// `default_log_name`: base name of the log file. Default `derecho_debug`.
    pub default_log_name: String,
    /// `default_log_level`: level of every module without its own. Default `info` (the level of
    /// the original's sample file and of every sospdemo config).
    pub default_log_level: LogLevel,
    /// `sst_log_level`: SST module. Default: `default_log_level`.
    pub sst_log_level: LogLevel,
    /// `rpc_log_level`: RPC module. Default: `default_log_level`.
    pub rpc_log_level: LogLevel,
    /// `viewmanager_log_level`: membership module. Default: `default_log_level`.
    pub viewmanager_log_level: LogLevel,
    /// `persistence_log_level`: persistence module. Default: `default_log_level`.
    pub persistence_log_level: LogLevel,
    /// `log_to_terminal`: also log to stdout/stderr. Default true.
    pub log_to_terminal: bool,
    /// `log_file_depth`: how many rotated log files to keep. Default 3.
    pub log_file_depth: u32,
}

impl LoggerSection {
    /// The keys whose default is `default_log_level`.
    pub(crate) const MODULE_LEVEL_KEYS: &'static [&'static str] = &[
        "sst_log_level",
        "rpc_log_level",
        "viewmanager_log_level",
        "persistence_log_level",
    ];

    /// Sets every per-module level named in `unset` to the default level.
    pub(crate) fn inherit_levels(&mut self, unset: &[&str]) {
        let level = self.default_log_level;
        for key in unset {
            match *key {
                "sst_log_level" => self.sst_log_level = level,
                "rpc_log_level" => self.rpc_log_level = level,
                "viewmanager_log_level" => self.viewmanager_log_level = level,
                "persistence_log_level" => self.persistence_log_level = level,
                _ => {}
            }
        }
    }
}

impl Default for LoggerSection {
    fn default() -> Self {
        LoggerSection {
            default_log_name: "derecho_debug".to_string(),
            default_log_level: LogLevel::Info,
            sst_log_level: LogLevel::Info,
            rpc_log_level: LogLevel::Info,
            viewmanager_log_level: LogLevel::Info,
            persistence_log_level: LogLevel::Info,
            log_to_terminal: true,
            log_file_depth: 3,
        }
    }
}

impl Section for LoggerSection {
    const NAME: &'static str = "LOGGER";
    const KEYS: &'static [&'static str] = &[
        "default_log_name",
        "default_log_level",
        "sst_log_level",
        "rpc_log_level",
        "viewmanager_log_level",
        "persistence_log_level",
        "log_to_terminal",
        "log_file_depth",
    ];

    fn set(&mut self, name: &str, v: &str) -> Result<(), Problem> {
        match name {
            "default_log_name" => self.default_log_name = v.to_string(),
            "default_log_level" => self.default_log_level = parse_enum(v)?,
            "sst_log_level" => self.sst_log_level = parse_enum(v)?,
            "rpc_log_level" => self.rpc_log_level = parse_enum(v)?,
            "viewmanager_log_level" => self.viewmanager_log_level = parse_enum(v)?,
            "persistence_log_level" => self.persistence_log_level = parse_enum(v)?,
            "log_to_terminal" => self.log_to_terminal = parse_bool(v)?,
            "log_file_depth" => self.log_file_depth = parse_u32(v)?,
            other => return Err(unknown(other)),
        }
        Ok(())
    }

    fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("default_log_name", self.default_log_name.clone()),
            ("default_log_level", self.default_log_level.to_string()),
            ("sst_log_level", self.sst_log_level.to_string()),
            ("rpc_log_level", self.rpc_log_level.to_string()),
            (
                "viewmanager_log_level",
                self.viewmanager_log_level.to_string(),
            ),
            (
                "persistence_log_level",
                self.persistence_log_level.to_string(),
            ),
            ("log_to_terminal", self.log_to_terminal.to_string()),
            ("log_file_depth", self.log_file_depth.to_string()),
        ]
    }
}

/// `[LAYOUT]`: an optional JSON subgroup layout, given inline (`json_layout`) or as a file
/// (`json_layout_file`, read and parsed at load time). Setting both is an error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayoutSection {
    /// The parsed layout, from whichever of the two keys was set; `None` if neither was.
    pub json_layout: Option<serde_json::Value>,
    /// `json_layout_file` as written, when the layout came from a file. A relative path is
    /// resolved against the folder of the config file that set it (against the loader's working
    /// directory for a command-line override).
    pub json_layout_file: Option<PathBuf>,
}

impl LayoutSection {
    /// The section name.
    pub(crate) const NAME: &'static str = "LAYOUT";
    /// The two keys.
    pub(crate) const KEYS: &'static [&'static str] = &["json_layout", "json_layout_file"];
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::profile::SubgroupProfile;
    use super::*;

    /// `KEYS`, `set` and `entries` must describe the same keys, and writing then setting a
    /// value must be the identity.
    fn consistent<S: Section + Default + PartialEq + std::fmt::Debug>() {
        let section = S::default();
        let entries = section.entries();
        let names: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, S::KEYS, "section {}", S::NAME);
        let mut copy = S::default();
        for (key, value) in &entries {
            copy.set(key, value).unwrap();
        }
        assert_eq!(copy, section);
        assert!(copy.set("no_such_key", "1").is_err());
    }

    #[test]
    fn sections_are_self_consistent() {
        consistent::<DerechoSection>();
        consistent::<RdmaSection>();
        consistent::<PersSection>();
        consistent::<SecuritySection>();
        consistent::<LoggerSection>();
    }

    #[test]
    fn profile_is_self_consistent() {
        let full = SubgroupProfile {
            num_shards: Some(2),
            min_nodes: Some(1),
            max_nodes: Some(3),
            ..SubgroupProfile::default()
        };
        let entries = full.entries();
        let names: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, SubgroupProfile::KEYS);
        let mut copy = SubgroupProfile::default();
        for (key, value) in &entries {
            copy.set(key, value).unwrap();
        }
        assert_eq!(copy, full);
    }
}
