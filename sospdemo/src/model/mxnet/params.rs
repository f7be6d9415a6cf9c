//! The `.params` file: MXNet's NDArray-list binary format, as written by `mx.nd.save` and by
//! Gluon's `export()`.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! u64 magic = 0x112        u64 reserved
//! u64 n                    n × array
//! u64 m (0 or n)           m × (u64 len, len bytes of UTF-8 name)
//! array (current writers):
//!   u32 array magic (0xF993FAC9, or 0xF993FACA with NumPy shape semantics)
//!   i32 storage type (0 = dense; 1 = row-sparse and 2 = CSR are refused)
//!   i32 ndim, ndim × i64 dims   (ndim 0 — or -1 in the NumPy variant — is an empty array)
//!   i32 device type, i32 device id
//!   i32 dtype (0 = float32; everything else is refused)
//!   product(dims) × 4 bytes of data
//! array (1.0-era writers): u32 magic 0xF993FAC8, no storage type, same shape and rest
//! array (oldest writers): no magic; the first u32 is ndim, followed by ndim × u32 dims
//! ```
//!
//! Gluon names parameters `arg:<name>` (weights) and `aux:<name>` (batch-normalisation running
//! statistics). Every length read from the file is checked against the bytes that remain
//! before anything is allocated, so a truncated or corrupt file is a [`ParamsError`], never a
//! panic or a huge allocation.

use std::collections::HashMap;

/// Magic number at the start of an NDArray-list file.
pub const LIST_MAGIC: u64 = 0x112;
/// Per-array magic of 1.0-era writers (no storage type field).
const ARRAY_V1_MAGIC: u32 = 0xF993_FAC8;
/// Per-array magic of current writers (with storage type).
const ARRAY_V2_MAGIC: u32 = 0xF993_FAC9;
/// Per-array magic of writers in NumPy-shape mode (ndim −1 means "unknown").
const ARRAY_V3_MAGIC: u32 = 0xF993_FACA;
/// Most dimensions an MXNet array can have.
const MAX_NDIM: usize = 32;

/// Everything that can be wrong with a `.params` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// The file does not start with the NDArray-list magic number.
    #[error(
        "not an MXNet .params file (it does not start with the NDArray-list magic number 0x112)"
    )]
    NotParams,
    /// The file ends in the middle of a field.
    #[error("the .params file is truncated: it ends inside {what} at byte {offset}")]
    Truncated {
        /// The field being read.
        what: String,
        /// Byte offset where it starts.
        offset: usize,
    },
    /// A field holds a value no writer produces.
    #[error("the .params file is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// Byte offset of the field.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// An array is stored sparse.
    #[error(
        "array {index} is stored as {storage} (storage type {code}); only dense arrays are \
         supported: convert it with `.tostype('default')` before saving"
    )]
    SparseStorage {
        /// Position of the array in the file.
        index: usize,
        /// Storage type code.
        code: i32,
        /// Its name (`row_sparse`, `csr` or `unknown`).
        storage: &'static str,
    },
    /// An array's element type is not float32.
    #[error(
        "array {index} has element type {dtype} (type code {code}); only float32 is supported: \
         cast the network with `net.cast('float32')` before exporting"
    )]
    UnsupportedDtype {
        /// Position of the array in the file.
        index: usize,
        /// Type code.
        code: i32,
        /// Its name (`float64`, `float16`, `uint8`, …).
        dtype: &'static str,
    },
    /// The file has arrays but no names, or a different number of names.
    #[error("the .params file has {arrays} arrays but {names} names; every array needs a name")]
    NameCount {
        /// Arrays in the file.
        arrays: usize,
        /// Names in the file.
        names: usize,
    },
    /// A name lacks the `arg:` or `aux:` prefix Gluon and `save_checkpoint` give.
    #[error("parameter name {0:?} has no `arg:` or `aux:` prefix (export with Gluon's `export()` or `mx.model.save_checkpoint`)")]
    BadName(String),
    /// Two arrays have the same name.
    #[error("parameter {0:?} appears twice")]
    DuplicateName(String),
}

/// One dense float32 array of a `.params` file.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Elements in row-major order (`shape.iter().product()` of them).
    pub data: Vec<f32>,
}

/// Whether a parameter is learnt (`arg:`) or an auxiliary state such as a running mean
/// (`aux:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// `arg:` — weights, biases, γ and β.
    Arg,
    /// `aux:` — moving mean and variance of batch normalisation.
    Aux,
}

/// The contents of a `.params` file: arrays by name (without the prefix).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    /// Learnt parameters (`arg:` prefix).
    pub args: HashMap<String, NdArray>,
    /// Auxiliary states (`aux:` prefix).
    pub aux: HashMap<String, NdArray>,
}

impl Params {
    /// Looks a variable up among both kinds.
    pub fn get(&self, name: &str) -> Option<&NdArray> {
        self.args.get(name).or_else(|| self.aux.get(name))
    }

    /// Number of arrays.
    pub fn len(&self) -> usize {
        self.args.len() + self.aux.len()
    }

    /// Whether there are no arrays.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `bytes` start like an NDArray-list file.
pub fn looks_like_params(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..8] == LIST_MAGIC.to_le_bytes()
}

/// Parses a `.params` file.
pub fn parse_params(bytes: &[u8]) -> Result<Params, ParamsError> {
    let mut r = Reader { bytes, pos: 0 };
    if !looks_like_params(bytes) {
        return Err(ParamsError::NotParams);
    }
    r.u64("the header")?;
    r.u64("the header")?;
    let count_at = r.pos;
    let count = r.u64("the array count")?;
    // Every array takes at least 4 bytes, so a larger count cannot be honest.
    let count = usize::try_from(count)
        .ok()
        .filter(|&n| n <= r.remaining() / 4)
        .ok_or_else(|| ParamsError::Corrupt {
            offset: count_at,
            reason: format!(
                "it claims {count} arrays in {} remaining bytes",
                r.remaining()
            ),
        })?;
    let mut arrays = Vec::with_capacity(count);
    for index in 0..count {
        arrays.push(r.array(index)?);
    }
    let names_at = r.pos;
    let names = r.u64("the name count")?;
    let names = usize::try_from(names)
        .ok()
        .filter(|&n| n <= r.remaining() / 8)
        .ok_or_else(|| ParamsError::Corrupt {
            offset: names_at,
            reason: format!(
                "it claims {names} names in {} remaining bytes",
                r.remaining()
            ),
        })?;
    if names != arrays.len() {
        return Err(ParamsError::NameCount {
            arrays: arrays.len(),
            names,
        });
    }
    let mut out = Params::default();
    for array in arrays {
        let at = r.pos;
        let len = r.u64("a name's length")?;
        let len = r.checked_len(len, at, "a name")?;
        let raw = r.take(len, "a name")?;
        let name = std::str::from_utf8(raw).map_err(|_| ParamsError::Corrupt {
            offset: at,
            reason: "a parameter name is not UTF-8".into(),
        })?;
        let (kind, short) = if let Some(s) = name.strip_prefix("arg:") {
            (ParamKind::Arg, s)
        } else if let Some(s) = name.strip_prefix("aux:") {
            (ParamKind::Aux, s)
        } else {
            return Err(ParamsError::BadName(name.to_owned()));
        };
        let Some(array) = array else {
            // An empty array (ndim 0) carries no value; the graph will report it as missing.
            tracing::warn!(name, "the .params file holds an empty array; ignored");
            continue;
        };
        let map = match kind {
            ParamKind::Arg => &mut out.args,
            ParamKind::Aux => &mut out.aux,
        };
        if map.insert(short.to_owned(), array).is_some() {
            return Err(ParamsError::DuplicateName(name.to_owned()));
        }
    }
    if r.remaining() != 0 {
        tracing::warn!(
            bytes = r.remaining(),
            "the .params file has trailing bytes after its names; ignored"
        );
    }
    Ok(out)
}

fn dtype_name(code: i32) -> &'static str {
    match code {
        0 => "float32",
        1 => "float64",
        2 => "float16",
        3 => "uint8",
        4 => "int32",
        5 => "int8",
        6 => "int64",
        7 => "bool",
        8 => "int16",
        9 => "uint16",
        10 => "uint32",
        11 => "uint64",
        12 => "bfloat16",
        _ => "unknown",
    }
}

/// A cursor over the file that never reads past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ParamsError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| ParamsError::Truncated {
                what: what.to_owned(),
                offset: self.pos,
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array4(&mut self, what: &str) -> Result<[u8; 4], ParamsError> {
        let s = self.take(4, what)?;
        Ok([s[0], s[1], s[2], s[3]])
    }

    fn u32(&mut self, what: &str) -> Result<u32, ParamsError> {
        Ok(u32::from_le_bytes(self.array4(what)?))
    }

    fn i32(&mut self, what: &str) -> Result<i32, ParamsError> {
        Ok(i32::from_le_bytes(self.array4(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, ParamsError> {
        let s = self.take(8, what)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(s);
        Ok(u64::from_le_bytes(b))
    }

    fn i64(&mut self, what: &str) -> Result<i64, ParamsError> {
        Ok(self.u64(what)? as i64)
    }

    /// A length that must fit in the rest of the file.
    fn checked_len(&self, len: u64, at: usize, what: &str) -> Result<usize, ParamsError> {
        usize::try_from(len)
            .ok()
            .filter(|&n| n <= self.remaining())
            .ok_or_else(|| ParamsError::Truncated {
                what: format!("{what} of {len} bytes"),
                offset: at,
            })
    }

    /// One array; `None` for an empty one.
    fn array(&mut self, index: usize) -> Result<Option<NdArray>, ParamsError> {
        let at = self.pos;
        let what = format!("array {index}");
        let first = self.u32(&what)?;
        let (ndim, wide_dims) = match first {
            ARRAY_V2_MAGIC | ARRAY_V3_MAGIC => {
                let stype = self.i32(&what)?;
                if stype != 0 {
                    return Err(ParamsError::SparseStorage {
                        index,
                        code: stype,
                        storage: match stype {
                            1 => "row_sparse",
                            2 => "csr",
                            _ => "unknown",
                        },
                    });
                }
                (i64::from(self.i32(&what)?), true)
            }
            ARRAY_V1_MAGIC => (i64::from(self.i32(&what)?), true),
            // The oldest format has no magic: the word is the dimension count.
            legacy if (legacy as usize) <= MAX_NDIM => (i64::from(legacy), false),
            other => {
                return Err(ParamsError::Corrupt {
                    offset: at,
                    reason: format!("array {index} starts with unknown magic {other:#010x}"),
                })
            }
        };
        if ndim <= 0 {
            if ndim < -1 || (ndim == -1 && first != ARRAY_V3_MAGIC) {
                return Err(ParamsError::Corrupt {
                    offset: at,
                    reason: format!("array {index} has {ndim} dimensions"),
                });
            }
            return Ok(None);
        }
        let ndim = usize::try_from(ndim)
            .ok()
            .filter(|&n| n <= MAX_NDIM)
            .ok_or_else(|| ParamsError::Corrupt {
                offset: at,
                reason: format!("array {index} has {ndim} dimensions (at most {MAX_NDIM})"),
            })?;
        let mut shape = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            let d = if wide_dims {
                self.i64(&what)?
            } else {
                i64::from(self.u32(&what)?)
            };
            let d = usize::try_from(d).map_err(|_| ParamsError::Corrupt {
                offset: at,
                reason: format!("array {index} has a negative dimension {d}"),
            })?;
            shape.push(d);
        }
        let _device_type = self.i32(&what)?;
        let _device_id = self.i32(&what)?;
        let dtype = self.i32(&what)?;
        if dtype != 0 {
            return Err(ParamsError::UnsupportedDtype {
                index,
                code: dtype,
                dtype: dtype_name(dtype),
            });
        }
        let data_at = self.pos;
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| ParamsError::Corrupt {
                offset: at,
                reason: format!("array {index} has shape {shape:?}, too large to exist"),
            })?;
        let len = numel
            .checked_mul(4)
            .filter(|&n| n <= self.remaining())
            .ok_or_else(|| ParamsError::Truncated {
                what: format!("the data of array {index} (shape {shape:?})"),
                offset: data_at,
            })?;
        let raw = self.take(len, &what)?;
        let data = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Some(NdArray { shape, data }))
    }
}
