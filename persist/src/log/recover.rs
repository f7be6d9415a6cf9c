//! Opening a log: reading the metadata record and every segment, verifying
//! entries, cutting a torn tail of the last segment and finishing an
//! interrupted truncate or trim. See the [`log`](super) module docs for the
//! rules.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::format::{self, BadTail, Meta, FORMAT_SIGNED};
use super::{lock, validate_log_name, EntryInfo, IndexEntry, Inner, Log, LogOptions, State};
use crate::error::{Error, Result, StorageError};
use crate::object;
use crate::sign::Signature;
use crate::storage::Storage;
use crate::version::INVALID;

impl Log {
    /// Opens (or creates) the log `name` on `storage`, recovering from a
    /// crash as described in the [`log` module docs](crate::log).
    pub fn open(storage: Arc<dyn Storage>, name: &str, options: LogOptions) -> Result<Log> {
        validate_log_name(name)?;
        let meta = load_meta(storage.as_ref(), name)?;
        let mut numbers: Vec<u64> = storage
            .list()?
            .iter()
            .filter_map(|f| format::parse_segment_name(name, f))
            .collect();
        numbers.sort_unstable();

        let mut state = State {
            index: Vec::new(),
            segments: BTreeMap::new(),
            active: numbers.last().copied().unwrap_or(0),
            dirty: BTreeSet::new(),
            advanced: INVALID,
            persisted: INVALID,
            meta,
            hlc_monotone: true,
            tip: Signature::GENESIS,
        };
        let mut previous = INVALID;
        let mut removable = Vec::new();
        for (i, &number) in numbers.iter().enumerate() {
            let is_last = i + 1 == numbers.len();
            let seg = format::segment_name(name, number);
            let (entries, bad, mut seg_len) = if is_last || options.verify_sealed {
                let bytes = storage.read_all(&seg)?;
                let (entries, bad) = format::scan(&bytes);
                (entries, bad, bytes.len() as u64)
            } else {
                walk(storage.as_ref(), &seg)?
            };
            if let Some(bad) = bad {
                if !is_last {
                    return Err(Error::Corrupt {
                        name: seg,
                        offset: bad.offset,
                        reason: bad.reason.to_string(),
                    });
                }
                tracing::warn!(
                    segment = %seg,
                    offset = bad.offset,
                    dropped_bytes = seg_len - bad.offset,
                    reason = bad.reason,
                    "cutting a torn or corrupt log tail"
                );
                if !options.read_only {
                    storage.truncate(&seg, bad.offset)?;
                    storage.sync(&seg)?;
                }
                seg_len = bad.offset;
            }
            let mut indexed_any = false;
            for e in entries {
                if e.header.version <= previous {
                    return Err(Error::Corrupt {
                        name: seg,
                        offset: e.offset,
                        reason: format!(
                            "version {} does not follow version {previous}",
                            e.header.version
                        ),
                    });
                }
                previous = e.header.version;
                if e.header.version < state.meta.trim_version {
                    continue;
                }
                indexed_any = true;
                state.index.push(IndexEntry {
                    info: EntryInfo {
                        version: e.header.version,
                        hlc: e.header.hlc,
                        kind: e.header.kind,
                        len: e.header.payload_len,
                    },
                    segment: number,
                    offset: e.offset,
                    signed: e.header.signed,
                });
            }
            if !indexed_any && !is_last && state.index.is_empty() {
                // Entirely trimmed; an interrupted trim left it behind.
                removable.push(number);
            }
            state.segments.insert(number, seg_len);
        }
        state.recompute_hlc_monotone();

        let log = Log {
            inner: Arc::new(Inner {
                storage,
                name: name.to_string(),
                options,
                persist_lock: Mutex::new(()),
                state: Mutex::new(state),
                needs_reopen: AtomicBool::new(false),
            }),
        };
        {
            let mut st = lock(&log.inner.state);
            if let Some(target) = st.meta.truncate_to {
                log.finish_truncate(&mut st, target)?;
            }
            if !log.inner.options.read_only {
                for n in removable {
                    if st.segments.remove(&n).is_some() {
                        log.inner.storage.remove(&format::segment_name(name, n))?;
                    }
                }
                // What was recovered becomes durable before it is reported
                // as persisted (earlier segments were synced when rolled).
                if let Some((&last, _)) = st.segments.iter().next_back() {
                    log.inner.storage.sync(&format::segment_name(name, last))?;
                }
            }
            st.persisted = st.latest();
            if log.inner.options.signer.is_some() && !log.inner.options.read_only {
                if st.meta.format != FORMAT_SIGNED {
                    // Before the first signed entry exists: see `format` for why.
                    let signed = Meta {
                        format: FORMAT_SIGNED,
                        ..st.meta.clone()
                    };
                    save_meta(log.inner.storage.as_ref(), name, &signed)?;
                    st.meta = signed;
                }
                st.tip = log.chain_tip(&st)?;
            }
        }
        Ok(log)
    }
}

/// Bytes read at a time by [`walk`]: a few small entries, or one large entry's header.
const WALK_CHUNK: usize = 64 << 10;

/// The entries of a sealed segment from their headers alone, the payloads skipped; with the
/// first record whose header is bad (or whose payload runs past the end), and the segment's
/// length.
fn walk(storage: &dyn Storage, seg: &str) -> Result<(Vec<format::Scanned>, Option<BadTail>, u64)> {
    let len = storage.len(seg)?;
    let mut entries = Vec::new();
    let (mut chunk, mut chunk_at) = (Vec::new(), 0u64);
    let mut pos = 0u64;
    while pos < len {
        let in_chunk =
            pos >= chunk_at && pos + format::HEADER_LEN as u64 <= chunk_at + chunk.len() as u64;
        if !in_chunk {
            // The segment's length bounds the read: `len - pos` fits in usize below WALK_CHUNK.
            let want = usize::try_from(len - pos)
                .unwrap_or(WALK_CHUNK)
                .min(WALK_CHUNK);
            chunk = storage.read(seg, pos, want)?;
            chunk_at = pos;
        }
        let at = usize::try_from(pos - chunk_at).unwrap_or(usize::MAX);
        let header = chunk
            .get(at..)
            .ok_or("incomplete header")
            .and_then(format::decode_header);
        let next = header.map(|h| (h, pos + h.record_len()));
        match next {
            Ok((header, end)) if end <= len => {
                entries.push(format::Scanned {
                    header,
                    offset: pos,
                });
                pos = end;
            }
            Ok(_) => {
                return Ok((
                    entries,
                    Some(BadTail {
                        offset: pos,
                        reason: "incomplete payload",
                    }),
                    len,
                ))
            }
            Err(reason) => {
                return Ok((
                    entries,
                    Some(BadTail {
                        offset: pos,
                        reason,
                    }),
                    len,
                ))
            }
        }
    }
    Ok((entries, None, len))
}

pub(super) fn load_meta(storage: &dyn Storage, name: &str) -> Result<Meta> {
    let meta_name = format::meta_name(name);
    let bytes = match storage.read_all(&meta_name) {
        Ok(b) => b,
        Err(StorageError::NotFound(_)) => return Ok(Meta::default()),
        Err(e) => return Err(e.into()),
    };
    let payload = object::unframe(&meta_name, &bytes)?;
    match Meta::decode(payload).map_err(|e| Error::codec(&meta_name, e))? {
        Some(meta) => Ok(meta),
        None => Err(Error::Corrupt {
            name: meta_name,
            offset: 0,
            reason: "unknown metadata format".to_string(),
        }),
    }
}

pub(super) fn save_meta(storage: &dyn Storage, name: &str, meta: &Meta) -> Result<()> {
    let meta_name = format::meta_name(name);
    let payload = meta.encode().map_err(|e| Error::codec(&meta_name, e))?;
    storage.replace(&meta_name, &object::frame(&payload))?;
    Ok(())
}
