//! Writes a [`Config`] back as a complete `derecho.cfg` that parses to an equal `Config`.

use std::fmt::Write as _;

use super::ini::format_value;
use super::profile::{DEFAULT_PROFILE, SUBGROUP_SECTION};
use super::sections::{
    DerechoSection, LayoutSection, LoggerSection, PersSection, RdmaSection, Section,
    SecuritySection,
};
use super::Config;

/// One section to write: its header and its entries in order.
type Block = (String, Vec<(String, String)>);

fn owned(entries: Vec<(&'static str, String)>) -> Vec<(String, String)> {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// The known sections of `config`, every key written out (profiles fully expanded).
fn known_blocks(config: &Config) -> Vec<Block> {
    let mut blocks = vec![
        (
            DerechoSection::NAME.to_string(),
            owned(config.derecho.entries()),
        ),
        (RdmaSection::NAME.to_string(), owned(config.rdma.entries())),
        (PersSection::NAME.to_string(), owned(config.pers.entries())),
        (
            SecuritySection::NAME.to_string(),
            owned(config.security.entries()),
        ),
        (
            LoggerSection::NAME.to_string(),
            owned(config.logger.entries()),
        ),
    ];
    let layout = &config.layout;
    if let Some(file) = &layout.json_layout_file {
        blocks.push((
            LayoutSection::NAME.to_string(),
            vec![(
                "json_layout_file".to_string(),
                file.to_string_lossy().into_owned(),
            )],
        ));
    } else if let Some(json) = &layout.json_layout {
        let text = serde_json::to_string_pretty(json).unwrap_or_else(|_| json.to_string());
        blocks.push((
            LayoutSection::NAME.to_string(),
            vec![("json_layout".to_string(), text)],
        ));
    }
    // DEFAULT first, so that a reader sees what the other profiles inherit.
    let mut names: Vec<&String> = config.subgroups.keys().collect();
    names.sort_by_key(|n| (n.as_str() != DEFAULT_PROFILE, n.as_str()));
    for name in names {
        if let Some(profile) = config.subgroups.get(name) {
            blocks.push((
                format!("{SUBGROUP_SECTION}/{name}"),
                owned(profile.entries()),
            ));
        }
    }
    blocks
}

/// The application sections, as loaded.
fn extra_blocks(config: &Config) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    for (key, setting) in &config.extra {
        let Some((section, name)) = key.rsplit_once('/') else {
            continue;
        };
        match blocks.last_mut() {
            Some((header, entries)) if header == section => {
                entries.push((name.to_string(), setting.value.clone()));
            }
            _ => blocks.push((
                section.to_string(),
                vec![(name.to_string(), setting.value.clone())],
            )),
        }
    }
    blocks
}

/// Every known key as (flat key, canonical value).
pub(crate) fn canonical_entries(config: &Config) -> Vec<(String, String)> {
    known_blocks(config)
        .into_iter()
        .flat_map(|(section, entries)| {
            entries
                .into_iter()
                .map(move |(name, value)| (format!("{section}/{name}"), value))
        })
        .collect()
}

/// The whole config as INI text.
pub(crate) fn to_ini(config: &Config) -> String {
    let mut out = String::from(
        "# Complete derecho-rs configuration: every key is written out, so this file does not\n\
         # depend on built-in defaults. Named subgroup profiles are shown fully expanded.\n",
    );
    for (header, entries) in known_blocks(config).into_iter().chain(extra_blocks(config)) {
        // Writing to a String cannot fail.
        let _ = write!(out, "\n[{header}]\n");
        for (name, value) in entries {
            let _ = writeln!(out, "{name} = {}", format_value(&value));
        }
    }
    out
}
