//! Turns the merged settings of all layers into a typed, validated [`Config`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::error::{ConfigError, Origin};
use super::layer::{Setting, Settings, Warnings};
use super::profile::{SubgroupProfile, DEFAULT_PROFILE, SUBGROUP_SECTION};
use super::sections::{
    DerechoSection, LayoutSection, LoggerSection, PersSection, RdmaSection, Section,
    SecuritySection, MIN_REPLY_PAYLOAD_SIZE,
};
use super::value::{Problem, SecurityMode};
use super::Config;

/// Which keys belong to the fixed sections, as opposed to an application's extra sections.
fn is_fixed_key(key: &str) -> bool {
    [
        DerechoSection::NAME,
        RdmaSection::NAME,
        PersSection::NAME,
        SecuritySection::NAME,
        LoggerSection::NAME,
        LayoutSection::NAME,
        SUBGROUP_SECTION,
    ]
    .iter()
    .any(|s| {
        key.strip_prefix(s)
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

fn to_error(problem: Problem, key: &str, setting: &Setting) -> ConfigError {
    match problem {
        Problem::Invalid(expected) => ConfigError::InvalidValue {
            at: setting.origin.clone(),
            key: key.to_string(),
            value: setting.value.clone(),
            expected,
        },
        Problem::OutOfRange(reason) => ConfigError::OutOfRange {
            at: setting.origin.clone(),
            key: key.to_string(),
            value: setting.value.clone(),
            reason,
        },
    }
}

/// The settings directly under `[prefix]`, as (key name, full key, setting).
fn under<'a>(
    settings: &'a Settings,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a str, &'a String, &'a Setting)> + 'a {
    settings.iter().filter_map(move |(key, setting)| {
        let name = key.strip_prefix(prefix)?.strip_prefix('/')?;
        (!name.contains('/')).then_some((name, key, setting))
    })
}

fn apply<S: Section + Default>(settings: &Settings) -> Result<S, ConfigError> {
    let mut section = S::default();
    for (name, key, setting) in under(settings, S::NAME) {
        section
            .set(name, &setting.value)
            .map_err(|p| to_error(p, key, setting))?;
    }
    Ok(section)
}

fn origin_of(settings: &Settings, key: &str) -> Origin {
    settings
        .get(key)
        .map_or(Origin::Defaults, |s| s.origin.clone())
}

/// Builds the typed config. `cwd` resolves relative paths set on the command line.
pub(crate) fn build(
    settings: Settings,
    mut warnings: Warnings,
    cwd: &Path,
    app_args: Vec<String>,
) -> Result<Config, ConfigError> {
    let derecho: DerechoSection = apply(&settings)?;
    check_derecho(&derecho, &settings)?;
    let rdma: RdmaSection = apply(&settings)?;
    if rdma.provider.eq_ignore_ascii_case("sockets") {
        warnings.push(format!(
            "{}: `RDMA/provider = sockets` is deprecated in libfabric and slow; prefer `tcp`",
            origin_of(&settings, "RDMA/provider")
        ));
    }
    let pers: PersSection = apply(&settings)?;
    let plain = DerechoSection::default();
    if derecho.enable_backup_restart_leaders
        && derecho.restart_leaders == plain.restart_leaders
        && derecho.restart_leader_ports == plain.restart_leader_ports
    {
        warnings.push(format!(
            "{}: `DERECHO/enable_backup_restart_leaders` has no effect without a \
             `restart_leaders` list (the contact node leads a total restart)",
            origin_of(&settings, "DERECHO/enable_backup_restart_leaders")
        ));
    }
    // The original's sample files set these to their defaults; only another value is a
    // request this build cannot honour.
    let plain = PersSection::default();
    for (key, set, what) in [
        (
            "ramdisk_path",
            pers.ramdisk_path != plain.ramdisk_path,
            "volatile logs are not kept",
        ),
        (
            "private_key_file",
            !pers.signed_logs && pers.private_key_file != plain.private_key_file,
            "logs are not signed without `PERS/signed_logs = true`",
        ),
    ] {
        let full = format!("{}/{key}", PersSection::NAME);
        if set {
            warnings.push(format!(
                "{}: `{full}` is not supported and is ignored ({what})",
                origin_of(&settings, &full)
            ));
        }
    }
    check_pers(&pers, &settings)?;
    let security: SecuritySection = apply(&settings)?;
    check_security(&security, &settings)?;
    let mut logger: LoggerSection = apply(&settings)?;
    let unset: Vec<&str> = LoggerSection::MODULE_LEVEL_KEYS
        .iter()
        .copied()
        .filter(|k| !settings.contains_key(&format!("{}/{k}", LoggerSection::NAME)))
        .collect();
    logger.inherit_levels(&unset);
    let layout = build_layout(&settings, cwd)?;
    let subgroups = build_profiles(&settings, &mut warnings)?;

    let (extra, known): (Settings, Settings) =
        settings.into_iter().partition(|(k, _)| !is_fixed_key(k));
    let mut config = Config {
        derecho,
        rdma,
        pers,
        security,
        logger,
        layout,
        subgroups,
        launched: None,
        raw: known,
        extra,
        warnings: warnings.0,
        app_args,
    };
    // Fill in the canonical text of every key that no layer set, so `raw` answers for all keys.
    for (key, value) in super::write::canonical_entries(&config) {
        config.raw.entry(key).or_insert(Setting {
            value,
            origin: Origin::Defaults,
        });
    }
    Ok(config)
}

/// Signed logs need a key file. The key itself is read when a member starts (see
/// [`Config::signer`]), so that clients sharing the group's file need not hold it.
fn check_pers(p: &PersSection, settings: &Settings) -> Result<(), ConfigError> {
    if p.signed_logs && p.private_key_file.as_os_str().is_empty() {
        let key = format!("{}/private_key_file", PersSection::NAME);
        return Err(ConfigError::Inconsistent {
            at: origin_of(settings, &key),
            key,
            reason: "`signed_logs = true` needs a signing key file (Ed25519 PKCS#8 PEM)"
                .to_string(),
        });
    }
    Ok(())
}

/// Security must be configured completely or not at all: a member that half-configured it
/// would either refuse its group or run open while its operator believes it secure.
fn check_security(s: &SecuritySection, settings: &Settings) -> Result<(), ConfigError> {
    let key = |k: &str| format!("{}/{k}", SecuritySection::NAME);
    let set = |p: &Path| !p.as_os_str().is_empty();
    let inconsistent = |k: &str, reason: &str| ConfigError::Inconsistent {
        at: origin_of(settings, &key(k)),
        key: key(k),
        reason: reason.to_string(),
    };
    let secrets = [
        ("group_secret_file", &s.group_secret_file),
        ("client_secret_file", &s.client_secret_file),
    ];
    let certs = [
        ("ca_file", &s.ca_file),
        ("cert_file", &s.cert_file),
        ("key_file", &s.key_file),
    ];
    // Files of a mode that is not the one chosen: the operator meant something else.
    let stray = |files: &[(&str, &PathBuf)], belongs: &str| {
        files.iter().find(|(_, p)| set(p)).map(|(k, _)| {
            inconsistent(
                k,
                &format!(
                    "`{k}` belongs to `mode = {belongs}` but `mode` is `{}`: set the mode \
                     or remove the key",
                    s.mode
                ),
            )
        })
    };
    match s.mode {
        SecurityMode::Secret if !set(&s.group_secret_file) && !set(&s.client_secret_file) => {
            Err(inconsistent(
                "mode",
                "`mode = secret` needs `group_secret_file` (members) or `client_secret_file` \
                 (external clients): files with 64 hexadecimal digits, which \
                 `derecho-secret new FILE` makes",
            ))
        }
        SecurityMode::Certificate => match certs.iter().find(|(_, p)| !set(p)) {
            Some((k, _)) => Err(inconsistent(
                k,
                "`mode = certificate` needs `ca_file`, `cert_file` and `key_file`: the group \
                 CA's certificate, this process's certificate and its key, which \
                 `derecho-secret ca` and `derecho-secret issue` make",
            )),
            None => stray(&secrets, "secret").map_or(Ok(()), Err),
        },
        SecurityMode::Secret => stray(&certs, "certificate").map_or(Ok(()), Err),
        SecurityMode::Open => stray(&secrets, "secret")
            .or_else(|| stray(&certs, "certificate"))
            .map_or(Ok(()), Err),
    }
}

fn check_derecho(d: &DerechoSection, settings: &Settings) -> Result<(), ConfigError> {
    if d.local_id >= d.max_node_id {
        let key = if settings.contains_key("DERECHO/local_id") {
            "DERECHO/local_id"
        } else {
            "DERECHO/max_node_id"
        };
        return Err(ConfigError::Inconsistent {
            at: origin_of(settings, key),
            key: key.to_string(),
            reason: format!(
                "local_id ({}) must be less than max_node_id ({})",
                d.local_id, d.max_node_id
            ),
        });
    }
    if d.restart_leaders.len() != d.restart_leader_ports.len() {
        let key = if settings.contains_key("DERECHO/restart_leader_ports") {
            "DERECHO/restart_leader_ports"
        } else {
            "DERECHO/restart_leaders"
        };
        return Err(ConfigError::Inconsistent {
            at: origin_of(settings, key),
            key: key.to_string(),
            reason: format!(
                "restart_leaders has {} entries but restart_leader_ports has {}",
                d.restart_leaders.len(),
                d.restart_leader_ports.len()
            ),
        });
    }
    Ok(())
}

fn build_profiles(
    settings: &Settings,
    warnings: &mut Warnings,
) -> Result<BTreeMap<String, SubgroupProfile>, ConfigError> {
    let names: BTreeSet<String> = settings
        .keys()
        .filter_map(|k| {
            let rest = k.strip_prefix(SUBGROUP_SECTION)?.strip_prefix('/')?;
            let (name, _) = rest.split_once('/')?;
            Some(name.to_string())
        })
        .collect();
    let default_prefix = format!("{SUBGROUP_SECTION}/{DEFAULT_PROFILE}");
    let default = fill_profile(SubgroupProfile::default(), settings, &default_prefix)?;
    let key = format!("{default_prefix}/max_reply_payload_size");
    if default.max_reply_payload_size < MIN_REPLY_PAYLOAD_SIZE {
        let at = origin_of(settings, &key);
        return Err(ConfigError::OutOfRange {
            at,
            key,
            value: default.max_reply_payload_size.to_string(),
            reason: format!("RPC replies need at least {MIN_REPLY_PAYLOAD_SIZE} bytes"),
        });
    }
    let mut profiles = BTreeMap::new();
    for name in names.into_iter().filter(|n| n != DEFAULT_PROFILE) {
        let prefix = format!("{SUBGROUP_SECTION}/{name}");
        let profile = fill_profile(default.clone(), settings, &prefix)?;
        if profile.max_reply_payload_size < MIN_REPLY_PAYLOAD_SIZE {
            warnings.push(format!(
                "{}: `{prefix}/max_reply_payload_size` is {} bytes, below the {} an RPC reply \
                 needs; subgroups using this profile cannot answer ordered RPCs",
                origin_of(settings, &format!("{prefix}/max_reply_payload_size")),
                profile.max_reply_payload_size,
                MIN_REPLY_PAYLOAD_SIZE
            ));
        }
        profiles.insert(name, profile);
    }
    profiles.insert(DEFAULT_PROFILE.to_string(), default);
    Ok(profiles)
}

fn fill_profile(
    mut profile: SubgroupProfile,
    settings: &Settings,
    prefix: &str,
) -> Result<SubgroupProfile, ConfigError> {
    for (name, key, setting) in under(settings, prefix) {
        profile
            .set(name, &setting.value)
            .map_err(|p| to_error(p, key, setting))?;
    }
    Ok(profile)
}

fn build_layout(settings: &Settings, cwd: &Path) -> Result<LayoutSection, ConfigError> {
    const INLINE: &str = "LAYOUT/json_layout";
    const FILE: &str = "LAYOUT/json_layout_file";
    match (settings.get(INLINE), settings.get(FILE)) {
        (None, None) => Ok(LayoutSection::default()),
        (Some(inline), Some(file)) => Err(ConfigError::Inconsistent {
            at: file.origin.clone(),
            key: FILE.to_string(),
            reason: format!(
                "`{INLINE}` is also set (at {}); the two are mutually exclusive",
                inline.origin
            ),
        }),
        (Some(inline), None) => Ok(LayoutSection {
            json_layout: Some(parse_json(&inline.value, INLINE, &inline.origin)?),
            json_layout_file: None,
        }),
        (None, Some(file)) => {
            if file.value.is_empty() {
                return Err(ConfigError::InvalidValue {
                    at: file.origin.clone(),
                    key: FILE.to_string(),
                    value: String::new(),
                    expected: "a file path".to_string(),
                });
            }
            let written = PathBuf::from(&file.value);
            let path = resolve(&written, &file.origin, cwd);
            let text = std::fs::read_to_string(&path).map_err(|source| {
                ConfigError::LayoutFileUnreadable {
                    at: file.origin.clone(),
                    key: FILE.to_string(),
                    path: path.clone(),
                    source,
                }
            })?;
            Ok(LayoutSection {
                json_layout: Some(parse_json(&text, FILE, &file.origin)?),
                json_layout_file: Some(written),
            })
        }
    }
}

/// Resolves a path written in a config file against that file's folder, and a path given on
/// the command line (or a default) against `cwd`.
fn resolve(path: &Path, origin: &Origin, cwd: &Path) -> PathBuf {
    match origin {
        Origin::File { path: file, .. } => match file.parent() {
            Some(folder) => folder.join(path),
            None => path.to_path_buf(),
        },
        _ => cwd.join(path),
    }
}

fn parse_json(text: &str, key: &str, at: &Origin) -> Result<serde_json::Value, ConfigError> {
    serde_json::from_str(text).map_err(|e| ConfigError::InvalidJson {
        at: at.clone(),
        key: key.to_string(),
        message: e.to_string(),
    })
}
