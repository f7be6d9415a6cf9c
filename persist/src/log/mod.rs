//! The versioned log: an append-only sequence of `(version, hlc, kind,
//! payload)` entries over any [`Storage`].
//!
//! This module owns opening and recovering a log, appending, group-commit
//! persistence; the private files `recover` (opening), `read` (queries) and
//! `trim` (dropping old and new entries, the trim policy) extend [`Log`]; [`format`](mod@format) owns the bytes on disk.
//!
//! # Recovery
//! [`Log::open`] reads the metadata record, then every segment in order,
//! verifying every entry's checksum (or, without [`LogOptions::verify_sealed`],
//! only those of the last segment and the framing of the others) and that
//! versions strictly increase. A bad
//! record in the **last** segment is a torn tail from a crash: the segment is
//! truncated at the last good entry (with a `tracing` warning) and the bad
//! bytes are never returned. A bad record in an earlier segment cannot come
//! from a crash (a segment is synced before the next one is started), so it is
//! an [`Error::Corrupt`].
//!
//! # Memory
//! The log keeps an in-memory index with one small record (about 48 bytes) per
//! retained entry: version, timestamp, kind, segment, offset and length.
//! Payloads stay on storage. Trimming bounds the index.
//!
//! # Locking
//! [`Log`] is a cheap `Clone` handle; all clones share one log. A `state`
//! mutex guards the index and is held for appends and reads (including the
//! storage reads of a query). A separate `persist` mutex serializes
//! [`Log::persist`], [`Log::truncate`] and [`Log::trim`]; `persist` records
//! its target under `state`, releases it, syncs, and relocks only to publish,
//! so appends continue while a sync is in flight. Lock order: `persist`, then
//! `state`.
//!
//! A log name must be open through at most one [`Log`] (and its clones) per
//! storage at a time; two independent opens of one name would both append.
//!
//! # Signatures
//! A log opened with a [`LogOptions::signer`] signs every entry it appends,
//! each signature chaining the previous one (the rule is in [`sign`](crate::sign)).
//! The signature is stored inside the entry, under its checksum, so a torn
//! signature is cut with a torn tail like any torn entry. A trim keeps the
//! newest trimmed entry's signature in the metadata as the chain's anchor, so
//! the retained entries still verify; a truncate continues the chain from the
//! newest entry kept. [`Log::verify`] walks the chain with a public key;
//! [`Log::signature`] returns one entry's signature. Logs written without a
//! signer open as before, and their entries are simply unsigned.

pub mod format;
mod read;
mod recover;
mod trim;
mod verify;

pub use format::HEADER_LEN as ENTRY_HEADER_LEN;
pub use read::LogIter;
pub use trim::TrimPolicy;
pub use verify::VerifyError;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::sign::{chain_message, Signature, Signer};
use crate::storage::Storage;
use crate::version::{Hlc, Version, INVALID};
use format::Meta;
use recover::save_meta;

/// Default size past which a new segment is started: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Options for [`Log::open`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A new segment is started when an append would make the current one
    /// larger than this (a single larger entry still gets a segment of its own).
    pub segment_bytes: u64,
    /// Open without writing anything: a torn tail is ignored rather than cut,
    /// an unfinished truncate is applied in memory only, and every mutating
    /// call fails with [`Error::ReadOnly`].
    pub read_only: bool,
    /// Verify every entry's checksum at open (the default). Otherwise only the last segment,
    /// where a crash can leave a torn tail, is read whole; earlier (sealed) segments are walked
    /// header by header. Framing damage (lengths that do not add up, nonzero reserved bytes,
    /// versions out of order) still fails the open; damage the checksum alone would show
    /// (a changed payload, or a changed version or timestamp that stays in order) is found
    /// when the entry is read. Opening then reads up to 64 KiB per entry header instead of
    /// every byte: for entries of several hundred KiB or more, a small fraction.
    pub verify_sealed: bool,
    /// Sign every appended entry with this key (default: none, entries are
    /// unsigned). Opening a log with a signer marks its metadata as signed
    /// (format 2), which builds that predate signatures refuse to open. Ignored
    /// by a read-only log. Reading and [`Log::verify`] need no signer.
    pub signer: Option<Arc<Signer>>,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            read_only: false,
            verify_sealed: true,
            signer: None,
        }
    }
}

/// One log entry, payload included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's version.
    pub version: Version,
    /// The timestamp recorded with it.
    pub hlc: Hlc,
    /// The caller-defined kind byte.
    pub kind: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

/// One entry of [`Log::append_batch`].
#[derive(Debug, Clone, Copy)]
pub struct BatchEntry<'a> {
    /// The entry's version.
    pub version: Version,
    /// Its timestamp.
    pub hlc: Hlc,
    /// The caller-defined kind byte.
    pub kind: u8,
    /// The payload.
    pub payload: &'a [u8],
}

/// An entry's description without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryInfo {
    /// The entry's version.
    pub version: Version,
    /// The timestamp recorded with it.
    pub hlc: Hlc,
    /// The caller-defined kind byte.
    pub kind: u8,
    /// Payload length in bytes.
    pub len: u32,
}

#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    info: EntryInfo,
    segment: u64,
    offset: u64,
    /// Whether the record carries a signature after its payload.
    signed: bool,
}

impl IndexEntry {
    /// Bytes of the record on storage.
    fn record_len(&self) -> u64 {
        format::record_len(self.info.len, self.signed)
    }
}

#[derive(Debug)]
struct State {
    /// Retained entries, versions strictly increasing.
    index: Vec<IndexEntry>,
    /// Existing segment files: number → length.
    segments: BTreeMap<u64, u64>,
    /// The segment appends go to (its file may not exist yet).
    active: u64,
    /// Segments with appends not yet synced.
    dirty: BTreeSet<u64>,
    /// Highest version announced by `advance_version` (no entry written).
    advanced: Version,
    /// Highest version known durable.
    persisted: Version,
    /// The metadata record as last written.
    meta: Meta,
    /// Whether timestamps never decrease along the index (enables binary search).
    hlc_monotone: bool,
    /// The signature the next appended entry chains from (kept up to date
    /// only when the log has a signer).
    tip: Signature,
}

impl State {
    fn last_entry_version(&self) -> Version {
        self.index.last().map_or(INVALID, |e| e.info.version)
    }

    fn latest(&self) -> Version {
        self.last_entry_version()
            .max(self.advanced)
            .max(self.meta.known_version)
    }

    /// Position of the last entry with version `<= v`.
    fn pos_at_or_before(&self, v: Version) -> Option<usize> {
        self.index
            .partition_point(|e| e.info.version <= v)
            .checked_sub(1)
    }

    fn recompute_hlc_monotone(&mut self) {
        self.hlc_monotone = self
            .index
            .windows(2)
            .all(|w| w[0].info.hlc <= w[1].info.hlc);
    }
}

struct Inner {
    storage: Arc<dyn Storage>,
    name: String,
    options: LogOptions,
    persist_lock: Mutex<()>,
    state: Mutex<State>,
    /// Set when a truncate or trim failed after recording its decision:
    /// the files no longer match the index until the log is reopened.
    needs_reopen: AtomicBool,
}

/// A versioned, segmented, checksummed log. See the [module docs](self) for
/// recovery, memory use and locking.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

/// Checks a log name: non-empty, no `.` (it separates the name from the file
/// suffixes) and valid as a storage name.
pub fn validate_log_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('.') || name.contains('/') || name.contains('\0') {
        return Err(Error::InvalidName(name.to_string()));
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // State changes are made only after the storage calls they describe have
    // succeeded, so a panic elsewhere never leaves a half-updated state behind.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Log {
    /// The log's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    fn check_writable(&self) -> Result<()> {
        if self.inner.options.read_only {
            Err(Error::ReadOnly(self.inner.name.clone()))
        } else if self.inner.needs_reopen.load(Ordering::Acquire) {
            Err(Error::NeedsReopen(self.inner.name.clone()))
        } else {
            Ok(())
        }
    }

    /// Syncs segment `n`. After a failed fsync the kernel may have dropped
    /// the dirty pages and a retry could report success for lost data, so a
    /// failure marks the log as needing a reopen (which rescans what is
    /// really on storage).
    fn sync_segment(&self, n: u64) -> Result<()> {
        let seg = format::segment_name(&self.inner.name, n);
        self.inner.storage.sync(&seg).map_err(|e| {
            self.inner.needs_reopen.store(true, Ordering::Release);
            e.into()
        })
    }

    fn check_increasing(&self, st: &State, version: Version) -> Result<()> {
        let latest = st.latest();
        if version <= latest {
            return Err(Error::VersionNotIncreasing {
                name: self.inner.name.clone(),
                version,
                latest,
            });
        }
        Ok(())
    }

    /// Appends an entry. `version` must be newer than [`latest_version`]
    /// (else [`Error::VersionNotIncreasing`]). The entry is readable at once
    /// and durable after the next [`persist`](Log::persist). On a storage
    /// failure (for example [`StorageError::Full`](crate::StorageError::Full)) nothing is appended.
    ///
    /// [`latest_version`]: Log::latest_version
    pub fn append(&self, version: Version, hlc: Hlc, kind: u8, payload: &[u8]) -> Result<()> {
        self.check_writable()?;
        let payload_len = u32::try_from(payload.len())
            .map_err(|_| Error::codec(&self.inner.name, "payload longer than 4 GiB"))?;
        let mut st = self.state();
        self.check_increasing(&st, version)?;
        let signature = self.sign(&st.tip, version, hlc, kind, payload);
        let bytes = format::encode(version, hlc, kind, payload, signature.as_ref());
        let mut seg_len = st.segments.get(&st.active).copied().unwrap_or(0);
        if seg_len > 0 && seg_len + bytes.len() as u64 > self.inner.options.segment_bytes {
            // Roll: the finished segment is made durable first, so a bad
            // record can only ever be in the last segment after a crash.
            let finished = st.active;
            if st.dirty.contains(&finished) {
                self.sync_segment(finished)?;
                st.dirty.remove(&finished);
            }
            st.active = finished + 1;
            seg_len = 0;
        }
        let active = self.write_active(&mut st, seg_len, &bytes)?;
        if st.index.last().is_some_and(|e| e.info.hlc > hlc) {
            st.hlc_monotone = false;
        }
        st.index.push(IndexEntry {
            info: EntryInfo {
                version,
                hlc,
                kind,
                len: payload_len,
            },
            segment: active,
            offset: seg_len,
            signed: signature.is_some(),
        });
        st.tip = signature.unwrap_or(Signature::GENESIS);
        Ok(())
    }

    /// The signature of an entry chained after `previous`, if this log signs.
    fn sign(
        &self,
        previous: &Signature,
        version: Version,
        hlc: Hlc,
        kind: u8,
        payload: &[u8],
    ) -> Option<Signature> {
        let signer = self.inner.options.signer.as_ref()?;
        Some(signer.sign(&chain_message(previous, version, hlc, kind, payload)))
    }

    /// Writes encoded entries at the end of the active segment (which holds `seg_len` bytes)
    /// and records the new length; returns the segment's number.
    fn write_active(&self, st: &mut State, seg_len: u64, bytes: &[u8]) -> Result<u64> {
        let seg = format::segment_name(&self.inner.name, st.active);
        let new_len = self.inner.storage.append(&seg, bytes)?;
        if new_len != seg_len + bytes.len() as u64 {
            return Err(Error::Corrupt {
                name: seg,
                offset: seg_len,
                reason: format!("segment length {new_len} after append does not match the index"),
            });
        }
        let active = st.active;
        st.segments.insert(active, new_len);
        st.dirty.insert(active);
        Ok(active)
    }

    /// Appends several entries with one storage write (when they fit the active segment;
    /// otherwise one by one, rolling segments as [`append`](Log::append) does). Versions must
    /// increase along the batch and exceed [`latest_version`](Log::latest_version); nothing is
    /// appended if one does not. Like `append`, nothing is durable before
    /// [`persist`](Log::persist).
    pub fn append_batch(&self, entries: &[BatchEntry<'_>]) -> Result<()> {
        self.check_writable()?;
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let mut st = self.state();
        let mut prev = st.latest();
        let sig_len = if self.inner.options.signer.is_some() {
            crate::sign::SIGNATURE_LEN
        } else {
            0
        };
        let total: usize = entries
            .iter()
            .map(|e| format::HEADER_LEN + e.payload.len() + sig_len)
            .sum();
        let mut bytes = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(entries.len());
        let mut tip = st.tip;
        let mut signed = false;
        for e in entries {
            if e.version <= prev {
                return Err(Error::VersionNotIncreasing {
                    name: self.inner.name.clone(),
                    version: e.version,
                    latest: prev,
                });
            }
            prev = e.version;
            u32::try_from(e.payload.len())
                .map_err(|_| Error::codec(&self.inner.name, "payload longer than 4 GiB"))?;
            offsets.push(bytes.len() as u64);
            let signature = self.sign(&tip, e.version, e.hlc, e.kind, e.payload);
            format::encode_into(
                &mut bytes,
                e.version,
                e.hlc,
                e.kind,
                e.payload,
                signature.as_ref(),
            );
            signed = signature.is_some();
            tip = signature.unwrap_or(Signature::GENESIS);
        }
        let seg_len = st.segments.get(&st.active).copied().unwrap_or(0);
        if seg_len > 0 && seg_len + bytes.len() as u64 > self.inner.options.segment_bytes {
            // The batch would cross a segment boundary: append one by one, which rolls.
            drop(st);
            for e in entries {
                self.append(e.version, e.hlc, e.kind, e.payload)?;
            }
            return Ok(());
        }
        let active = self.write_active(&mut st, seg_len, &bytes)?;
        for (e, at) in entries.iter().zip(offsets) {
            if st.index.last().is_some_and(|l| l.info.hlc > e.hlc) {
                st.hlc_monotone = false;
            }
            st.index.push(IndexEntry {
                info: EntryInfo {
                    version: e.version,
                    hlc: e.hlc,
                    kind: e.kind,
                    // Checked above.
                    len: e.payload.len() as u32,
                },
                segment: active,
                offset: seg_len + at,
                signed,
            });
        }
        st.tip = tip;
        debug_assert_eq!(
            st.latest(),
            last.version,
            "the batch's last entry is the latest"
        );
        Ok(())
    }

    /// Records that `version` exists without writing an entry (a version in
    /// which nothing changed). It becomes the latest version; the next
    /// [`persist`](Log::persist) records it in the metadata so it survives a
    /// restart.
    pub fn advance_version(&self, version: Version) -> Result<()> {
        self.check_writable()?;
        let mut st = self.state();
        self.check_increasing(&st, version)?;
        st.advanced = version;
        Ok(())
    }

    /// Makes every entry appended so far durable and returns the latest
    /// persisted version. One call covers every append made before it (group
    /// commit); appends made by other threads during the sync are covered by
    /// the next call. Safe to call from any thread.
    pub fn persist(&self) -> Result<Version> {
        self.check_writable()?;
        let _serial = lock(&self.inner.persist_lock);
        self.persist_serialized()
    }

    /// The body of [`Log::persist`]; the caller holds the `persist` lock.
    fn persist_serialized(&self) -> Result<Version> {
        let (target, dirty, meta) = {
            let mut st = self.state();
            let target = st.latest();
            if target <= st.persisted {
                return Ok(st.persisted);
            }
            let meta = (st.advanced > st.last_entry_version()
                && st.advanced > st.meta.known_version)
                .then(|| Meta {
                    known_version: st.advanced,
                    ..st.meta.clone()
                });
            (target, std::mem::take(&mut st.dirty), meta)
        };
        let synced = dirty.iter().try_for_each(|&n| self.sync_segment(n));
        let result = synced.and_then(|()| match &meta {
            Some(m) => save_meta(self.inner.storage.as_ref(), &self.inner.name, m),
            None => Ok(()),
        });
        let mut st = self.state();
        if let Err(e) = result {
            st.dirty.extend(dirty);
            return Err(e);
        }
        if let Some(m) = meta {
            st.meta = m;
        }
        st.persisted = st.persisted.max(target);
        Ok(st.persisted)
    }

    /// The latest version (of an entry, or announced by
    /// [`advance_version`](Log::advance_version)); [`INVALID`] if none.
    pub fn latest_version(&self) -> Version {
        self.state().latest()
    }

    /// The latest version known durable; [`INVALID`] if none.
    pub fn persisted_version(&self) -> Version {
        self.state().persisted
    }

    /// The oldest retained entry's version; [`INVALID`] if the log is empty.
    pub fn earliest_version(&self) -> Version {
        self.state()
            .index
            .first()
            .map_or(INVALID, |e| e.info.version)
    }

    /// Number of retained entries.
    pub fn len(&self) -> usize {
        self.state().index.len()
    }

    /// Whether no entry is retained.
    pub fn is_empty(&self) -> bool {
        self.state().index.is_empty()
    }

    /// Bytes of segment files on storage (trimmed entries sharing a segment
    /// with retained ones still count until the whole segment goes).
    pub fn bytes_used(&self) -> u64 {
        self.state().segments.values().sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.state().segments.len()
    }
}
