//! The `derecho.cfg` configuration: parsed once, validated, typed. No global state.
//!
//! **Owns**: the INI dialect (`[SECTION]`, `[SUBGROUP/NAME]`, `key = value`,
//! `#` comments, single-quoted multi-line values), the table of known keys with their defaults,
//! legacy key names, the load order and every check that can be made without starting a group.
//! **Does not touch**: sockets, threads, the fabric, or what the values mean at run time; the
//! layers that use a value read it from [`Config`].
//!
//! Load order, lowest first: built-in defaults, group file, node file, command-line overrides
//! `--SECTION/key=value`; see [`ConfigLoader`]. Every value keeps its [`Origin`] so that errors
//! (and [`Config::origin`]) point at a file and line.
//!
//! Differences from the original Derecho, all deliberate:
//! * defaults: `DERECHO/disable_partitioning_safety = false`, `DERECHO/heartbeat_ms = 100`,
//!   `RDMA/provider = tcp`, `RDMA/domain = lo`, plus our own `RDMA/backend = tcp`;
//! * a named `[SUBGROUP/NAME]` profile inherits every key it does not set from `DEFAULT`;
//! * unknown sections and keys, and malformed values, are errors instead of being ignored or
//!   read as zero/false;
//! * the 2019 names (`leader_ip`, `leader_gms_port`, `rpc_port`, `timeout_ms`, and the v0.9
//!   profile keys under `[DERECHO]`) are accepted with a warning;
//! * the original checks `max_reply_payload_size >= 128` only for `DEFAULT`; we check it there
//!   too and warn for a named profile below it (the 2019 demo's function tier uses 100);
//! * inside a single-quoted value, `''` stands for one `'`, so any string can be written back.

mod build;
mod derecho_section;
mod launcher;
pub(crate) use derecho_section::ms;
mod error;
mod ini;
mod layer;
mod loader;
mod profile;
mod sections;
mod value;
mod write;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use error::{ConfigError, Origin};
pub use launcher::Launched;
pub use loader::{
    ConfigLoader, DEFAULT_GROUP_FILE, DEFAULT_NODE_FILE, GROUP_FILE_ENV, NODE_FILE_ENV,
};
pub use profile::{SubgroupProfile, DEFAULT_PROFILE};
pub use sections::{
    DerechoSection, LayoutSection, LoggerSection, PersSection, RdmaSection, SecuritySection,
    MIN_REPLY_PAYLOAD_SIZE,
};
pub use value::{
    Durability, FabricBackend, Launcher, LogLevel, ParseEnumError, RdmcSendAlgorithm, SecurityMode,
};

use derecho_fabric::secure::{Credentials, Identity, Secret, SecretError, TlsCredentials};
use layer::{Settings, Warnings};

/// A complete, validated configuration.
///
/// The typed sections are public and authoritative; a launcher may change them and write the
/// result with [`to_ini_string`](Self::to_ini_string). [`raw`](Self::raw) and
/// [`origin`](Self::origin) describe what was *loaded* and do not follow later edits.
///
/// Equality compares the typed sections and the application sections' values; it ignores
/// origins, warnings and application arguments, so a config equals its written-out copy.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[DERECHO]`.
    pub derecho: DerechoSection,
    /// `[RDMA]`.
    pub rdma: RdmaSection,
    /// `[PERS]`.
    pub pers: PersSection,
    /// `[SECURITY]`.
    pub security: SecuritySection,
    /// `[LOGGER]`.
    pub logger: LoggerSection,
    /// `[LAYOUT]`.
    pub layout: LayoutSection,
    /// `[SUBGROUP/<NAME>]` profiles by name; `DEFAULT` is always present.
    pub subgroups: BTreeMap<String, SubgroupProfile>,
    /// This process's place among the processes a cluster launcher started, when
    /// `DERECHO/launcher` names one.
    pub launched: Option<Launched>,
    /// Loaded (or canonical default) text of every known key.
    raw: Settings,
    /// Settings of the application's extra sections.
    extra: Settings,
    warnings: Vec<String>,
    app_args: Vec<String>,
}

impl PartialEq for Config {
    fn eq(&self, other: &Self) -> bool {
        let extra_values = |c: &Config| -> Vec<(String, String)> {
            c.extra
                .iter()
                .map(|(k, s)| (k.clone(), s.value.clone()))
                .collect()
        };
        self.derecho == other.derecho
            && self.rdma == other.rdma
            && self.pers == other.pers
            && self.security == other.security
            && self.logger == other.logger
            && self.layout == other.layout
            && self.subgroups == other.subgroups
            && extra_values(self) == extra_values(other)
    }
}

impl Default for Config {
    /// The built-in defaults, with no warnings.
    fn default() -> Self {
        let derecho = DerechoSection::default();
        let mut config = Config {
            derecho,
            rdma: RdmaSection::default(),
            pers: PersSection::default(),
            security: SecuritySection::default(),
            logger: LoggerSection::default(),
            layout: LayoutSection::default(),
            subgroups: BTreeMap::from([(DEFAULT_PROFILE.to_string(), SubgroupProfile::default())]),
            launched: None,
            raw: Settings::new(),
            extra: Settings::new(),
            warnings: Vec::new(),
            app_args: Vec::new(),
        };
        for (key, value) in write::canonical_entries(&config) {
            config.raw.insert(
                key,
                layer::Setting {
                    value,
                    origin: Origin::Defaults,
                },
            );
        }
        config
    }
}

/// Loads the secret file `key` names, or says that it is not set.
fn load_secret(path: &Path, key: &'static str) -> Result<Secret, SecretError> {
    if path.as_os_str().is_empty() {
        return Err(SecretError::NotConfigured { key });
    }
    Secret::load(path)
}

impl Config {
    /// Loads the member credentials `[SECURITY]` names: [`Credentials::Open`] in the open
    /// mode; the group secret (and the client secret, if configured) in the secret mode; the
    /// CA certificate, this member's certificate and key in the certificate mode, where the
    /// certificate must name this member's `local_id`. Secret and key files must be readable
    /// by their owner only.
    pub fn credentials(&self) -> Result<Credentials, SecretError> {
        let s = &self.security;
        match s.mode {
            SecurityMode::Open => Ok(Credentials::Open),
            SecurityMode::Certificate => {
                let tls = self.load_certificates()?;
                let me = Identity::Member(self.derecho.local_id);
                if tls.identity() != &me {
                    return Err(SecretError::NotMine {
                        holder: tls.identity().clone(),
                        expected: me.to_string(),
                    });
                }
                Ok(Credentials::Certificate(Arc::new(tls)))
            }
            SecurityMode::Secret => {
                let group = load_secret(&s.group_secret_file, "group_secret_file")?;
                let clients = if s.client_secret_file.as_os_str().is_empty() {
                    None
                } else {
                    Some(Secret::load(&s.client_secret_file)?)
                };
                // With one secret for both, every client could open the member ports.
                if clients.as_ref() == Some(&group) {
                    return Err(SecretError::Reused);
                }
                Ok(Credentials::Member { group, clients })
            }
        }
    }

    /// Loads the credentials of an external client: the client secret in the secret mode
    /// (its `[SECURITY]` names `mode = secret` and `client_secret_file`; a group secret is
    /// not needed and not read), or in the certificate mode the CA certificate and a client
    /// certificate with its key (a member's certificate is refused: clients get their own,
    /// which open the external port only).
    pub fn client_credentials(&self) -> Result<Credentials, SecretError> {
        let s = &self.security;
        match s.mode {
            SecurityMode::Open => Ok(Credentials::Open),
            SecurityMode::Certificate => {
                let tls = self.load_certificates()?;
                if let Identity::Member(_) = tls.identity() {
                    return Err(SecretError::NotMine {
                        holder: tls.identity().clone(),
                        expected: "an external client".into(),
                    });
                }
                Ok(Credentials::Certificate(Arc::new(tls)))
            }
            SecurityMode::Secret => Ok(Credentials::Client {
                clients: load_secret(&s.client_secret_file, "client_secret_file")?,
            }),
        }
    }

    /// The certificate mode's three files, loaded and checked against each other.
    fn load_certificates(&self) -> Result<TlsCredentials, SecretError> {
        let s = &self.security;
        for (key, path) in [
            ("ca_file", &s.ca_file),
            ("cert_file", &s.cert_file),
            ("key_file", &s.key_file),
        ] {
            if path.as_os_str().is_empty() {
                return Err(SecretError::NotConfigured { key });
            }
        }
        Ok(TlsCredentials::load(&s.ca_file, &s.cert_file, &s.key_file)?)
    }

    /// Parses one INI text over the built-in defaults, with no environment, no other file and
    /// no application sections. `origin_name` labels errors (use the file name). A relative
    /// `json_layout_file` is resolved against the folder part of `origin_name`.
    pub fn from_ini_str(text: &str, origin_name: &str) -> Result<Config, ConfigError> {
        let mut warnings = Warnings::default();
        let settings = loader::file_layer(text, Path::new(origin_name), &[], &mut warnings)?;
        build::build(settings, warnings, Path::new(""), Vec::new())
    }

    /// Writes every key (profiles fully expanded, application sections as loaded) as INI text
    /// that parses back to an equal `Config`. Comments are not preserved.
    pub fn to_ini_string(&self) -> String {
        write::to_ini(self)
    }

    /// The text of a key as loaded, e.g. `raw("DERECHO/local_id")` or
    /// `raw("SOSPDEMO/function_tier")`. Known keys that no layer set answer with their canonical
    /// default (a named profile's unset keys with the inherited value); legacy names are
    /// translated to the modern key. `None` for a key that does not exist.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.setting(key).map(|s| s.value.as_str())
    }

    /// Where a key's value came from ([`Origin::Defaults`] when no layer set it).
    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.setting(key).map(|s| &s.origin)
    }

    fn setting(&self, key: &str) -> Option<&layer::Setting> {
        let modern = match key {
            "DERECHO/leader_ip" => "DERECHO/contact_ip",
            "DERECHO/leader_gms_port" => "DERECHO/contact_port",
            "DERECHO/rpc_port" => "DERECHO/state_transfer_port",
            other => other,
        };
        self.raw.get(modern).or_else(|| self.extra.get(modern))
    }

    /// The profile named `name`, if it exists (`DEFAULT` always does).
    pub fn profile(&self, name: &str) -> Option<&SubgroupProfile> {
        self.subgroups.get(name)
    }

    /// The warnings raised while loading (legacy names, ignored keys, deprecated values, missing
    /// files), in order. Each was also logged with `tracing::warn!`.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The command-line arguments left for the application by [`ConfigLoader::args`].
    pub fn app_args(&self) -> &[String] {
        &self.app_args
    }

    /// Loads the signing key of signed logs: `None` unless `[PERS] signed_logs = true`, else
    /// the key `[PERS] private_key_file` names, or a [`ConfigError::SigningKey`] that says
    /// what is wrong with it.
    pub fn signer(&self) -> Result<Option<Arc<derecho_persist::Signer>>, ConfigError> {
        if !self.pers.signed_logs {
            return Ok(None);
        }
        let key = "PERS/private_key_file";
        derecho_persist::Signer::from_key_file(&self.pers.private_key_file)
            .map(|s| Some(Arc::new(s)))
            .map_err(|source| ConfigError::SigningKey {
                at: self.origin(key).cloned().unwrap_or(Origin::Defaults),
                key: key.to_string(),
                source,
            })
    }
}
