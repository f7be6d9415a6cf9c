//! The JSON layout of `[LAYOUT] json_layout` / `json_layout_file`: parsed into a
//! [`LayoutPolicy`], strictly, with errors that name the type, subgroup, shard and field.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::{
    LayoutError, LayoutPolicy, Mode, NodeId, PolicyLocation, Senders, ShardPolicy, SubgroupPolicy,
    TypePolicy,
};
use crate::config::DEFAULT_PROFILE;

const TYPE_ALIAS: &str = "type_alias";
const LAYOUT: &str = "layout";
const MIN_NODES: &str = "min_nodes_by_shard";
const MAX_NODES: &str = "max_nodes_by_shard";
const RESERVED: &str = "reserved_node_ids_by_shard";
const RESERVED_ALIAS: &str = "reserved_nodes_by_shard";
const MODES: &str = "delivery_modes_by_shard";
const PROFILES: &str = "profiles_by_shard";
const SENDER_MARK: char = '*';

/// Builds a [`LayoutError::Json`].
fn error(at: Option<&PolicyLocation>, field: Option<&str>, problem: String) -> LayoutError {
    LayoutError::Json {
        at: at.cloned(),
        field: field.map(str::to_string),
        problem,
    }
}

/// A short description of a JSON value's kind, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl LayoutPolicy {
    /// Parses a JSON layout (the value of `[LAYOUT] json_layout`, already parsed by the config
    /// loader). Types are named by their `type_alias`. The result is validated.
    ///
    /// ```json
    /// [ { "type_alias": "Categorizer",
    ///     "layout": [ { "min_nodes_by_shard": [2, 2],
    ///                   "max_nodes_by_shard": ["3", "3"],
    ///                   "reserved_node_ids_by_shard": [["*4", "5"], []],
    ///                   "delivery_modes_by_shard": ["Ordered", "Raw"],
    ///                   "profiles_by_shard": ["CATEGORIZER_TIER", "DEFAULT"] } ] } ]
    /// ```
    /// One array entry per subgroup type in declaration order; `layout` holds one object per
    /// subgroup; every `*_by_shard` array has one entry per shard. Numbers may be written as
    /// strings. In `reserved_node_ids_by_shard` (alias `reserved_nodes_by_shard`, the original
    /// README's spelling), a string `"*4"` reserves node 4 *and* makes it a sender; a shard with at
    /// least one `*` has exactly those senders, other shards let every member send. Optional:
    /// `type_alias` (default name `type<i>`), `reserved_node_ids_by_shard` (an empty array means
    /// none), `delivery_modes_by_shard` (default all `Ordered`), `profiles_by_shard` (default all
    /// `DEFAULT`). Any other field is an error.
    pub fn from_json(doc: &Value) -> Result<LayoutPolicy, LayoutError> {
        parse(doc)
    }

    /// Parses a JSON layout from text; see [`from_json`](Self::from_json).
    pub fn from_json_str(text: &str) -> Result<LayoutPolicy, LayoutError> {
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| error(None, None, format!("not valid JSON: {e}")))?;
        parse(&doc)
    }
}

/// Parses a whole layout document. The result is validated.
fn parse(doc: &Value) -> Result<LayoutPolicy, LayoutError> {
    let Value::Array(entries) = doc else {
        return Err(error(
            None,
            None,
            format!(
                "expected an array with one entry per subgroup type, found {}",
                kind(doc)
            ),
        ));
    };
    let mut policy = LayoutPolicy::new();
    let mut names = BTreeSet::new();
    for (t, entry) in entries.iter().enumerate() {
        let ty = parse_type(t, entry)?;
        if !names.insert(ty.name.clone()) {
            let at = PolicyLocation::of_type(t, &ty.name);
            return Err(error(
                Some(&at),
                Some(TYPE_ALIAS),
                "another type has the same alias".into(),
            ));
        }
        policy.types.push(ty);
    }
    policy.validate()?;
    Ok(policy)
}

fn object<'v>(
    v: &'v Value,
    at: &PolicyLocation,
    allowed: &[&str],
) -> Result<&'v Map<String, Value>, LayoutError> {
    let Value::Object(map) = v else {
        return Err(error(
            Some(at),
            None,
            format!("expected an object, found {}", kind(v)),
        ));
    };
    if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(error(
            Some(at),
            Some(key),
            format!("unknown field (expected one of {})", allowed.join(", ")),
        ));
    }
    Ok(map)
}

fn parse_type(t: usize, entry: &Value) -> Result<TypePolicy, LayoutError> {
    let at = PolicyLocation::of_type(t, "");
    let map = object(entry, &at, &[TYPE_ALIAS, LAYOUT])?;
    let name = match map.get(TYPE_ALIAS) {
        None => format!("type{t}"),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => {
            return Err(error(
                Some(&at),
                Some(TYPE_ALIAS),
                format!("expected a non-empty string, found {}", kind(other)),
            ))
        }
    };
    let at = PolicyLocation::of_type(t, &name);
    let subgroups = match map.get(LAYOUT) {
        Some(Value::Array(subgroups)) => subgroups,
        Some(other) => {
            return Err(error(
                Some(&at),
                Some(LAYOUT),
                format!(
                    "expected an array with one object per subgroup, found {}",
                    kind(other)
                ),
            ))
        }
        None => return Err(error(Some(&at), Some(LAYOUT), "missing".into())),
    };
    let subgroups = subgroups
        .iter()
        .enumerate()
        .map(|(g, sg)| parse_subgroup(&at.subgroup(g), sg))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TypePolicy::new(name, subgroups))
}

/// The array in `field`, which must have `len` entries when `len` is given.
fn shard_array<'v>(
    map: &'v Map<String, Value>,
    at: &PolicyLocation,
    field: &str,
    len: Option<usize>,
) -> Result<Option<&'v [Value]>, LayoutError> {
    match map.get(field) {
        None => Ok(None),
        Some(Value::Array(items)) => match len {
            Some(n) if items.len() != n => Err(error(
                Some(at),
                Some(field),
                format!(
                    "expected {n} entries (one per shard, as in `{MIN_NODES}`), found {}",
                    items.len()
                ),
            )),
            _ => Ok(Some(items)),
        },
        Some(other) => Err(error(
            Some(at),
            Some(field),
            format!("expected an array, found {}", kind(other)),
        )),
    }
}

fn parse_subgroup(at: &PolicyLocation, sg: &Value) -> Result<SubgroupPolicy, LayoutError> {
    let map = object(
        sg,
        at,
        &[
            MIN_NODES,
            MAX_NODES,
            RESERVED,
            RESERVED_ALIAS,
            MODES,
            PROFILES,
        ],
    )?;
    let Some(mins) = shard_array(map, at, MIN_NODES, None)? else {
        return Err(error(Some(at), Some(MIN_NODES), "missing".into()));
    };
    if mins.is_empty() {
        return Err(error(
            Some(at),
            Some(MIN_NODES),
            "a subgroup needs at least one shard".into(),
        ));
    }
    let n = mins.len();
    let Some(maxs) = shard_array(map, at, MAX_NODES, Some(n))? else {
        return Err(error(Some(at), Some(MAX_NODES), "missing".into()));
    };
    let modes = shard_array(map, at, MODES, Some(n))?;
    let profiles = shard_array(map, at, PROFILES, Some(n))?;
    let reserved_field = match (map.contains_key(RESERVED), map.contains_key(RESERVED_ALIAS)) {
        (true, true) => {
            return Err(error(
                Some(at),
                Some(RESERVED_ALIAS),
                format!("`{RESERVED}` is also given; use only one of the two spellings"),
            ))
        }
        (false, true) => RESERVED_ALIAS,
        _ => RESERVED,
    };
    // An empty array means "no reservation", as in the original.
    let reserved = match shard_array(map, at, reserved_field, None)? {
        Some([]) | None => None,
        Some(_) => shard_array(map, at, reserved_field, Some(n))?,
    };

    let mut owner: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut shards = Vec::with_capacity(n);
    for s in 0..n {
        let at = at.shard(s);
        let field_error = |field: &str, problem: String| error(Some(&at), Some(field), problem);
        let min_nodes = count(&mins[s]).map_err(|p| field_error(MIN_NODES, p.to_string()))?;
        let max_nodes = count(&maxs[s]).map_err(|p| field_error(MAX_NODES, p.to_string()))?;
        if max_nodes == 0 {
            return Err(field_error(MAX_NODES, "must be at least 1".into()));
        }
        if min_nodes > max_nodes {
            return Err(field_error(
                MAX_NODES,
                format!("{max_nodes} is below the shard's min_nodes {min_nodes}"),
            ));
        }
        let mut shard = ShardPolicy::new(min_nodes, max_nodes);
        if let Some(modes) = modes {
            shard.mode = match &modes[s] {
                Value::String(name) => Mode::from_name(name).ok_or_else(|| {
                    field_error(
                        MODES,
                        format!(
                            "unknown delivery mode \"{name}\" (expected \"Ordered\" or \"Raw\")"
                        ),
                    )
                })?,
                other => {
                    return Err(field_error(
                        MODES,
                        format!("expected \"Ordered\" or \"Raw\", found {}", kind(other)),
                    ))
                }
            };
        }
        shard.profile = match profiles.map(|p| &p[s]) {
            None => DEFAULT_PROFILE.to_string(),
            Some(Value::String(name)) if !name.is_empty() => name.clone(),
            Some(other) => {
                return Err(field_error(
                    PROFILES,
                    format!("expected a non-empty profile name, found {}", kind(other)),
                ))
            }
        };
        if let Some(reserved) = reserved {
            let (ids, senders) = reserved_ids(&reserved[s])
                .map_err(|p| field_error(reserved_field, p.to_string()))?;
            for &id in &ids {
                if let Some(other) = owner.insert(id, s) {
                    return Err(field_error(
                        reserved_field,
                        format!(
                            "node {id} is also reserved by shard {other} of this subgroup \
                             (shards of one subgroup are disjoint)"
                        ),
                    ));
                }
            }
            shard.reserved = ids;
            if !senders.is_empty() {
                shard.senders = Senders::Listed(senders);
            }
        }
        shards.push(shard);
    }
    if reserved_field == RESERVED_ALIAS {
        tracing::warn!(
            "JSON layout at {at}: `{RESERVED_ALIAS}` is read as `{RESERVED}`, \
             the original's field name"
        );
    }
    Ok(SubgroupPolicy::by_shard(shards))
}

/// What is wrong with one value of a shard's field (the caller says where it is).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum ValueError {
    /// Not a size (a non-negative integer, as a number or a string).
    #[error("expected a non-negative integer, found {0}")]
    Count(Value),
    /// Not an array of node ids; carries what kind of value it is.
    #[error("expected an array of node ids for the shard, found {0}")]
    IdList(&'static str),
    /// Not a node id, optionally marked as a sender.
    #[error("expected a node id such as 3, \"3\" or \"*3\", found {0}")]
    NodeId(Value),
}

/// A size: a non-negative integer, as a number or a string.
fn count(v: &Value) -> Result<usize, ValueError> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| ValueError::Count(v.clone()))
}

/// One shard's reserved ids, and the subset marked as senders with `*`.
fn reserved_ids(v: &Value) -> Result<(BTreeSet<NodeId>, BTreeSet<NodeId>), ValueError> {
    let Value::Array(items) = v else {
        return Err(ValueError::IdList(kind(v)));
    };
    let mut ids = BTreeSet::new();
    let mut senders = BTreeSet::new();
    for item in items {
        let bad = || ValueError::NodeId(item.clone());
        let (id, sender) = match item {
            Value::Number(n) => (n.as_u64(), false),
            Value::String(s) => {
                let s = s.trim();
                match s.strip_prefix(SENDER_MARK) {
                    Some(rest) => (rest.trim().parse::<u64>().ok(), true),
                    None => (s.parse::<u64>().ok(), false),
                }
            }
            _ => (None, false),
        };
        let id = id.and_then(|n| NodeId::try_from(n).ok()).ok_or_else(bad)?;
        ids.insert(id);
        if sender {
            senders.insert(id);
        }
    }
    Ok((ids, senders))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn full_example() {
        let doc = json!([
            {"type_alias": "Foo", "layout": [{
                "min_nodes_by_shard": [2, "2"],
                "max_nodes_by_shard": ["3", 3],
                "reserved_node_ids_by_shard": [["*1", "2", 3], []],
                "delivery_modes_by_shard": ["Ordered", "raw"],
                "profiles_by_shard": ["VCS", "DEFAULT"]
            }]},
            {"layout": [
                {"min_nodes_by_shard": [1], "max_nodes_by_shard": [1]},
                {"min_nodes_by_shard": [0], "max_nodes_by_shard": [4],
                 "reserved_nodes_by_shard": []}
            ]}
        ]);
        let p = parse(&doc).unwrap();
        assert_eq!(p.types.len(), 2);
        assert_eq!(p.types[0].name, "Foo");
        assert_eq!(p.types[1].name, "type1");
        let foo = &p.types[0].subgroups[0].shards;
        assert_eq!((foo[0].min_nodes, foo[0].max_nodes), (2, 3));
        assert_eq!(foo[0].reserved, BTreeSet::from([1, 2, 3]));
        assert_eq!(foo[0].senders, Senders::Listed(BTreeSet::from([1])));
        assert_eq!(foo[0].profile, "VCS");
        assert_eq!(foo[1].mode, Mode::Raw);
        assert!(foo[1].reserved.is_empty());
        assert_eq!(foo[1].senders, Senders::All);
        let bar = &p.types[1].subgroups;
        assert_eq!(bar.len(), 2);
        assert_eq!(bar[0].shards[0].profile, "DEFAULT");
        assert_eq!(bar[0].shards[0].mode, Mode::Ordered);
        assert_eq!(bar[1].shards[0].min_nodes, 0);
    }
}
