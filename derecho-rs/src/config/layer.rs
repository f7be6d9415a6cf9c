//! One layer of settings (a file or the command line) checked against the known sections and
//! keys, with legacy names mapped to modern ones, ready to be merged over the layers below it.

use std::collections::BTreeMap;

use super::error::{ConfigError, Origin};
use super::profile::{valid_profile_name, SubgroupProfile, DEFAULT_PROFILE, SUBGROUP_SECTION};
use super::sections::{
    DerechoSection, LayoutSection, LoggerSection, PersSection, RdmaSection, Section,
    SecuritySection,
};

/// A value as loaded, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Setting {
    /// The value as written (trimmed; verbatim for quoted values).
    pub value: String,
    /// Where it was set.
    pub origin: Origin,
}

/// Settings keyed by their flat modern key (`SECTION/key`, `SUBGROUP/NAME/key`).
pub(crate) type Settings = BTreeMap<String, Setting>;

/// A setting before normalisation: a section, a key and a value from one layer.
#[derive(Debug, Clone)]
pub(crate) struct RawSetting {
    /// The section as written (`DERECHO`, `SUBGROUP/NAME`, an application section).
    pub section: String,
    /// The key as written.
    pub name: String,
    /// The value.
    pub value: String,
    /// Where it was set.
    pub origin: Origin,
}

/// Collects warnings: each one goes out through `tracing::warn!` and is kept for
/// [`Config::warnings`](super::Config::warnings).
#[derive(Debug, Default)]
pub(crate) struct Warnings(pub(crate) Vec<String>);

impl Warnings {
    /// Records and logs one warning.
    pub(crate) fn push(&mut self, message: String) {
        tracing::warn!(target: "derecho::config", "{message}");
        self.0.push(message);
    }
}

/// 2019 names of `[DERECHO]` keys and the modern names they stand for.
const DERECHO_ALIASES: &[(&str, &str)] = &[
    ("leader_ip", "contact_ip"),
    ("leader_gms_port", "contact_port"),
    ("rpc_port", "state_transfer_port"),
];

/// `[DERECHO]` keys that are accepted and ignored.
const DERECHO_IGNORED: &[&str] = &["timeout_ms"];

/// The kind of a section header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SectionKind {
    /// One of `DERECHO`, `RDMA`, `PERS`, `SECURITY`, `LOGGER`, `LAYOUT`, with its keys.
    Fixed(&'static [&'static str]),
    /// `SUBGROUP/<NAME>`.
    Profile,
    /// An application section declared with `extra_sections`: any key, kept raw.
    Extra,
}

const FIXED_SECTIONS: &[(&str, &[&str])] = &[
    (DerechoSection::NAME, DerechoSection::KEYS),
    (RdmaSection::NAME, RdmaSection::KEYS),
    (PersSection::NAME, PersSection::KEYS),
    (SecuritySection::NAME, SecuritySection::KEYS),
    (LoggerSection::NAME, LoggerSection::KEYS),
    (LayoutSection::NAME, LayoutSection::KEYS),
];

/// Whether the first component of `section` names a section someone owns. Used to decide
/// which command-line arguments are ours.
pub(crate) fn is_known_section_root(section: &str, extra: &[String]) -> bool {
    let root = section.split('/').next().unwrap_or(section);
    root == SUBGROUP_SECTION
        || FIXED_SECTIONS.iter().any(|(name, _)| *name == root)
        || extra.iter().any(|e| e == root)
}

/// Checks that a section header names a section someone owns.
pub(crate) fn check_section(
    section: &str,
    extra: &[String],
    at: &Origin,
) -> Result<(), ConfigError> {
    classify(section, extra, at).map(|_| ())
}

fn classify(section: &str, extra: &[String], at: &Origin) -> Result<SectionKind, ConfigError> {
    if let Some((_, keys)) = FIXED_SECTIONS.iter().find(|(name, _)| *name == section) {
        return Ok(SectionKind::Fixed(keys));
    }
    let root = section.split('/').next().unwrap_or(section);
    if extra.iter().any(|e| e == root) {
        return Ok(SectionKind::Extra);
    }
    let unknown = |hint: String| ConfigError::UnknownSection {
        at: at.clone(),
        section: section.to_string(),
        hint,
    };
    if let Some(profile) = section.strip_prefix("SUBGROUP/") {
        if valid_profile_name(profile) {
            return Ok(SectionKind::Profile);
        }
        return Err(unknown(
            " (a profile name uses letters, digits, `_`, `-` and `.`)".to_string(),
        ));
    }
    let fixed = FIXED_SECTIONS.iter().map(|(name, _)| *name);
    let hint = if root == SUBGROUP_SECTION {
        " (a profile section is `[SUBGROUP/<NAME>]`)".to_string()
    } else if let Some(name) = fixed
        .chain([SUBGROUP_SECTION])
        .find(|name| name.eq_ignore_ascii_case(root))
    {
        format!(" (section names are case-sensitive: did you mean `{name}`?)")
    } else {
        " (an application's own section must be declared with `ConfigLoader::extra_sections`)"
            .to_string()
    };
    Err(unknown(hint))
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Suggests a key for an unknown `name` in `section`: the same key in another section if there
/// is one, else the closest key of this section.
fn suggest(section: &str, name: &str, own_keys: &[&str]) -> Option<String> {
    let elsewhere = FIXED_SECTIONS
        .iter()
        .filter(|(s, _)| *s != section)
        .find(|(_, keys)| keys.contains(&name))
        .map(|(s, _)| format!("{s}/{name}"));
    let profile = (!section.starts_with("SUBGROUP/") && SubgroupProfile::KEYS.contains(&name))
        .then(|| format!("SUBGROUP/{DEFAULT_PROFILE}/{name}"));
    elsewhere.or(profile).or_else(|| {
        let legacy = if section == DerechoSection::NAME {
            DERECHO_ALIASES.iter().map(|(old, _)| *old).collect()
        } else {
            Vec::new()
        };
        own_keys
            .iter()
            .chain(legacy.iter())
            .map(|k| {
                // A truncated key counts as close.
                let truncated = name.len() >= 4 && k.starts_with(name);
                let distance = if truncated { 0 } else { edit_distance(k, name) };
                (distance, *k)
            })
            .filter(|(d, k)| *d <= 2.max(k.len() / 4))
            .min()
            .map(|(_, k)| format!("{section}/{k}"))
    })
}

/// How a setting of this layer reached its modern key, for conflict detection.
struct Arrival {
    written_as: String,
    origin: Origin,
}

/// Checks and normalises one layer. Unknown sections and keys are errors; legacy names are
/// renamed (with a warning); a legacy name and its modern name in the same layer are an error;
/// a key set twice in the same layer keeps the later value (with a warning).
pub(crate) fn normalize(
    raw: Vec<RawSetting>,
    extra: &[String],
    warnings: &mut Warnings,
) -> Result<Settings, ConfigError> {
    let mut out = Settings::new();
    let mut arrivals: BTreeMap<String, Arrival> = BTreeMap::new();
    for setting in raw {
        let RawSetting {
            section,
            name,
            value,
            origin,
        } = setting;
        let written_as = format!("{section}/{name}");
        let modern = match classify(&section, extra, &origin)? {
            SectionKind::Extra => written_as.clone(),
            SectionKind::Fixed(keys) if keys.contains(&name.as_str()) => written_as.clone(),
            SectionKind::Profile if SubgroupProfile::KEYS.contains(&name.as_str()) => {
                written_as.clone()
            }
            kind if section == DerechoSection::NAME => {
                match legacy_derecho_key(&name, &origin, warnings) {
                    Some(Some(modern)) => modern,
                    Some(None) => continue,
                    None => {
                        return Err(unknown_key(&section, &name, kind, origin));
                    }
                }
            }
            kind => return Err(unknown_key(&section, &name, kind, origin)),
        };
        if let Some(previous) = arrivals.get(&modern) {
            if previous.written_as != written_as {
                let legacy = if written_as == modern {
                    previous.written_as.clone()
                } else {
                    written_as.clone()
                };
                return Err(ConfigError::AliasConflict {
                    at: origin,
                    key: legacy,
                    modern,
                });
            }
            warnings.push(format!(
                "{origin}: `{written_as}` is set again (first at {}); the later value wins",
                previous.origin
            ));
        }
        arrivals.insert(
            modern.clone(),
            Arrival {
                written_as,
                origin: origin.clone(),
            },
        );
        out.insert(modern, Setting { value, origin });
    }
    Ok(out)
}

fn unknown_key(section: &str, name: &str, kind: SectionKind, at: Origin) -> ConfigError {
    let own: &[&str] = match kind {
        SectionKind::Fixed(keys) => keys,
        SectionKind::Profile => SubgroupProfile::KEYS,
        SectionKind::Extra => &[],
    };
    ConfigError::UnknownKey {
        at,
        key: format!("{section}/{name}"),
        suggestion: suggest(section, name, own),
    }
}

/// Maps a legacy `[DERECHO]` key: `Some(Some(modern))` to rename it, `Some(None)` to drop it,
/// `None` if it is not a legacy key.
fn legacy_derecho_key(
    name: &str,
    origin: &Origin,
    warnings: &mut Warnings,
) -> Option<Option<String>> {
    if let Some((_, modern)) = DERECHO_ALIASES.iter().find(|(old, _)| *old == name) {
        warnings.push(format!(
            "{origin}: `DERECHO/{name}` is the 2019 name of `DERECHO/{modern}`; read as such"
        ));
        return Some(Some(format!("DERECHO/{modern}")));
    }
    if DERECHO_IGNORED.contains(&name) {
        warnings.push(format!(
            "{origin}: `DERECHO/{name}` is no longer used and is ignored \
             (the failure detector period is `DERECHO/heartbeat_ms`)"
        ));
        return Some(None);
    }
    if SubgroupProfile::V09_DERECHO_KEYS.contains(&name) {
        let modern = format!("{SUBGROUP_SECTION}/{DEFAULT_PROFILE}/{name}");
        warnings.push(format!(
            "{origin}: `DERECHO/{name}` is the v0.9 placement of `{modern}`; read as such"
        ));
        return Some(Some(modern));
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn distance() {
        assert_eq!(edit_distance("local_id", "lcal_id"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions() {
        let d = DerechoSection::KEYS;
        assert_eq!(
            suggest("DERECHO", "lcal_id", d).as_deref(),
            Some("DERECHO/local_id")
        );
        assert_eq!(
            suggest("DERECHO", "max_reply_payload_size", d).as_deref(),
            Some("SUBGROUP/DEFAULT/max_reply_payload_size")
        );
        assert_eq!(
            suggest("RDMA", "local_id", RdmaSection::KEYS).as_deref(),
            Some("DERECHO/local_id")
        );
        assert_eq!(suggest("DERECHO", "completely_else", d), None);
    }
}
