//! The symbol file: MXNet's computation graph as JSON, and the typed reading of its string
//! attributes.
//!
//! ```json
//! {"nodes": [{"op": "null", "name": "data", "inputs": []},
//!            {"op": "Convolution", "name": "conv0", "attrs": {"kernel": "(3, 3)", ...},
//!             "inputs": [[0, 0, 0], [1, 0, 0]]}, ...],
//!  "arg_nodes": [0, 1, ...], "heads": [[42, 0, 0]], "attrs": {"mxnet_version": ["int", 10901]}}
//! ```
//!
//! Nodes are listed in topological order; an input `[node, output, version]` names an output
//! of an earlier node. Operator attributes are strings (`"(3, 3)"`, `"True"`, `"1e-05"`);
//! files written before MXNet 1.0 call the attribute map `attr` or `param` instead of `attrs`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::MxNetError;

/// Most nodes a symbol file may have (ResNet152 has a few thousand).
const MAX_NODES: usize = 100_000;

/// One node of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Operator name; `null` for a variable (the input or a parameter).
    pub op: String,
    /// Node name (parameters are looked up in the `.params` file under it).
    pub name: String,
    /// Operator attributes, as strings.
    pub attrs: BTreeMap<String, String>,
    /// Inputs: (node index, output index).
    pub inputs: Vec<(usize, usize)>,
}

impl Node {
    /// Whether the node is a variable.
    pub fn is_variable(&self) -> bool {
        self.op == "null"
    }

    /// An attribute's raw string.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }

    fn bad(&self, key: &str, value: &str, expected: &str) -> MxNetError {
        MxNetError::BadAttribute {
            node: self.name.clone(),
            attr: key.to_owned(),
            value: value.to_owned(),
            expected: expected.to_owned(),
        }
    }

    /// A boolean attribute (`True`/`False`/`1`/`0`, any case), or `default` if absent.
    pub fn bool_attr(&self, key: &str, default: bool) -> Result<bool, MxNetError> {
        match self.attr(key) {
            None => Ok(default),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(self.bad(key, v, "a boolean")),
            },
        }
    }

    /// A floating-point attribute, or `default` if absent.
    pub fn f64_attr(&self, key: &str, default: f64) -> Result<f64, MxNetError> {
        match self.attr(key) {
            None => Ok(default),
            Some(v) => match v.trim() {
                "None" => Ok(default),
                t => t.parse().map_err(|_| self.bad(key, v, "a number")),
            },
        }
    }

    /// An integer attribute, or `default` if absent.
    pub fn int_attr(&self, key: &str, default: i64) -> Result<i64, MxNetError> {
        match self.attr(key) {
            None => Ok(default),
            Some(v) => match v.trim() {
                "None" => Ok(default),
                t => t.parse().map_err(|_| self.bad(key, v, "an integer")),
            },
        }
    }

    /// A string attribute, or `default` if absent.
    pub fn str_attr<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.attr(key).map(str::trim).unwrap_or(default)
    }

    /// A tuple attribute such as `(3, 3)`, `[1, 2]`, `(2,)` or a bare `3`; `None` if absent or
    /// `None`/`()`.
    pub fn tuple_attr(&self, key: &str) -> Result<Option<Vec<i64>>, MxNetError> {
        let Some(v) = self.attr(key) else {
            return Ok(None);
        };
        let inner = v
            .trim()
            .trim_start_matches(['(', '['])
            .trim_end_matches([')', ']']);
        if inner.trim() == "None" {
            return Ok(None);
        }
        let items: Vec<&str> = inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            // Shapes written by Python 2 carry an `L` suffix.
            let t = item.trim_end_matches('L');
            out.push(
                t.parse::<i64>()
                    .map_err(|_| self.bad(key, v, "a tuple of integers"))?,
            );
        }
        Ok(Some(out))
    }

    /// A tuple of non-negative sizes with exactly `len` entries (a single value is repeated),
    /// or `default` if absent.
    pub fn sizes_attr(
        &self,
        key: &str,
        len: usize,
        default: usize,
    ) -> Result<Vec<usize>, MxNetError> {
        let Some(t) = self.tuple_attr(key)? else {
            return Ok(vec![default; len]);
        };
        let v = self.attr(key).unwrap_or_default();
        let t: Vec<usize> = t
            .into_iter()
            .map(|x| usize::try_from(x).map_err(|_| self.bad(key, v, "non-negative sizes")))
            .collect::<Result<_, _>>()?;
        match t.len() {
            1 => Ok(vec![t[0]; len]),
            n if n == len => Ok(t),
            _ => Err(self.bad(key, v, &format!("{len} sizes"))),
        }
    }
}

/// A parsed symbol file.
#[derive(Debug, Clone, PartialEq)]
pub struct Symbol {
    /// The nodes, in topological order.
    pub nodes: Vec<Node>,
    /// The graph's outputs: (node index, output index).
    pub heads: Vec<(usize, usize)>,
}

#[derive(Deserialize)]
struct RawSymbol {
    nodes: Vec<RawNode>,
    heads: Vec<Vec<Value>>,
}

#[derive(Deserialize)]
struct RawNode {
    op: String,
    name: String,
    #[serde(default)]
    attrs: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    attr: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    param: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    inputs: Vec<Vec<Value>>,
}

/// Whether `bytes` are a JSON object with `nodes` and `heads`, the shape of a symbol file.
pub fn looks_like_symbol(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => m.contains_key("nodes") && m.contains_key("heads"),
        _ => false,
    }
}

fn entry(raw: &[Value], what: &str) -> Result<(usize, usize), MxNetError> {
    let idx = |i: usize| raw.get(i).and_then(Value::as_u64);
    match (raw.len(), idx(0), idx(1)) {
        (2 | 3, Some(n), Some(o)) => Ok((
            usize::try_from(n).unwrap_or(usize::MAX),
            usize::try_from(o).unwrap_or(usize::MAX),
        )),
        _ => Err(MxNetError::Symbol(format!(
            "{what} is {raw:?}; expected [node, output, version]"
        ))),
    }
}

fn attr_string(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

impl Symbol {
    /// Parses and checks a symbol file: every input names an earlier node, every head an
    /// existing one.
    pub fn parse(bytes: &[u8]) -> Result<Self, MxNetError> {
        let raw: RawSymbol = serde_json::from_slice(bytes)
            .map_err(|e| MxNetError::Symbol(format!("not a valid symbol JSON: {e}")))?;
        if raw.nodes.is_empty() {
            return Err(MxNetError::Symbol("the graph has no nodes".into()));
        }
        if raw.nodes.len() > MAX_NODES {
            return Err(MxNetError::Symbol(format!(
                "the graph has {} nodes (at most {MAX_NODES})",
                raw.nodes.len()
            )));
        }
        let mut nodes = Vec::with_capacity(raw.nodes.len());
        for (i, n) in raw.nodes.into_iter().enumerate() {
            let attrs = n
                .attrs
                .or(n.attr)
                .or(n.param)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, attr_string(v)))
                .collect();
            let mut inputs = Vec::with_capacity(n.inputs.len());
            for raw_in in &n.inputs {
                let (src, out) = entry(raw_in, &format!("an input of node {:?}", n.name))?;
                if src >= i {
                    return Err(MxNetError::Symbol(format!(
                        "node {:?} (#{i}) takes its input from node #{src}, which does not come \
                         before it",
                        n.name
                    )));
                }
                inputs.push((src, out));
            }
            nodes.push(Node {
                op: n.op,
                name: n.name,
                attrs,
                inputs,
            });
        }
        let mut heads = Vec::with_capacity(raw.heads.len());
        for h in &raw.heads {
            let (n, o) = entry(h, "a head")?;
            if n >= nodes.len() {
                return Err(MxNetError::Symbol(format!(
                    "a head names node #{n}, but there are {} nodes",
                    nodes.len()
                )));
            }
            heads.push((n, o));
        }
        if heads.is_empty() {
            return Err(MxNetError::Symbol(
                "the graph has no output (`heads` is empty)".into(),
            ));
        }
        Ok(Self { nodes, heads })
    }
}
