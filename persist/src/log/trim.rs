//! Dropping entries from either end of a [`Log`]: `truncate` (newer
//! entries, used by restart) and `trim` (older entries, to bound space), and
//! the [`TrimPolicy`] that chooses a trim point.
//!
//! Both operations first record their decision in the metadata file
//! (replaced atomically), then change segments. A crash in between is
//! finished at the next open: an unfinished truncate is redone from the
//! recorded `truncate_to`, and entries older than the recorded trim point are
//! ignored (and wholly trimmed segments deleted).
//!
//! In a signed log a trim records, in the same metadata write, the signature of
//! the newest entry it drops: the anchor the oldest retained entry's signature
//! chains from (see [`sign`](crate::sign)). A truncate keeps the anchor (it
//! drops only newer entries) unless it goes below the trim point, which
//! empties the log and restarts the chain.

use std::sync::atomic::Ordering;

use super::format::{self, Anchor, Meta};
use super::recover::save_meta;
use super::{lock, Log, State};
use crate::error::Result;
use crate::version::{Version, INVALID};

/// How much of a log to keep; see [`TrimPolicy::apply`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrimPolicy {
    /// Keep at most this many newest entries.
    pub keep_versions: Option<u64>,
    /// Keep at most this many bytes (header, payload and signature) of newest entries.
    pub keep_bytes: Option<u64>,
}

impl TrimPolicy {
    /// The version `log` would be trimmed to under this policy, or `None` when
    /// nothing needs to go. The newest entry is always kept.
    pub fn trim_point(&self, log: &Log) -> Option<Version> {
        let st = log.state();
        let n = st.index.len();
        if n <= 1 {
            return None;
        }
        // Index of the oldest entry to keep under each limit.
        let mut first_keep = 0usize;
        if let Some(k) = self.keep_versions {
            let k = usize::try_from(k).unwrap_or(usize::MAX).max(1);
            first_keep = first_keep.max(n.saturating_sub(k));
        }
        if let Some(budget) = self.keep_bytes {
            let mut used = 0u64;
            let mut keep_from = n - 1;
            for i in (0..n).rev() {
                used += st.index[i].record_len();
                if used > budget && i < n - 1 {
                    break;
                }
                keep_from = i;
            }
            first_keep = first_keep.max(keep_from);
        }
        (first_keep > 0).then(|| st.index[first_keep].info.version)
    }

    /// Trims `log` according to this policy; returns the trim point used, if
    /// any. Only whole segments free space on storage.
    pub fn apply(&self, log: &Log) -> Result<Option<Version>> {
        match self.trim_point(log) {
            Some(v) => log.trim(v).map(|()| Some(v)),
            None => Ok(None),
        }
    }
}

impl Log {
    /// Drops every entry newer than `version`, durably: when this returns, a
    /// crash cannot bring them back.
    ///
    /// If the log had anything newer than `version`, `version` itself becomes
    /// the latest version (the log now describes the state as of `version`,
    /// whether or not an entry carries it), and appends continue above it.
    /// Everything kept is made durable first, as by [`Log::persist`].
    pub fn truncate(&self, version: Version) -> Result<()> {
        self.check_writable()?;
        let _serial = lock(&self.inner.persist_lock);
        let mut st = self.state();
        self.sync_all_locked(&mut st)?;
        if st.latest() <= version && st.meta.truncate_to.is_none() {
            return Ok(());
        }
        let marked = Meta {
            truncate_to: Some(version),
            known_version: version,
            ..st.meta.clone()
        };
        save_meta(self.inner.storage.as_ref(), &self.inner.name, &marked)?;
        st.meta = marked;
        let result = self.finish_truncate(&mut st, version).and_then(|()| {
            if self.inner.options.signer.is_some() {
                st.tip = self.chain_tip(&st)?;
            }
            Ok(())
        });
        if result.is_err() {
            self.inner.needs_reopen.store(true, Ordering::Release);
        }
        result
    }

    /// Syncs every segment with unsynced appends while holding the state
    /// lock (truncate and trim are rare; appends wait for them).
    fn sync_all_locked(&self, st: &mut State) -> Result<()> {
        while let Some(&n) = st.dirty.iter().next() {
            self.sync_segment(n)?;
            st.dirty.remove(&n);
        }
        st.persisted = st.persisted.max(st.last_entry_version());
        Ok(())
    }

    /// Applies the truncate recorded in `st.meta` (also used at open), then
    /// clears the record.
    pub(super) fn finish_truncate(&self, st: &mut State, version: Version) -> Result<()> {
        let write = !self.inner.options.read_only;
        let storage = self.inner.storage.as_ref();
        let name = &self.inner.name;
        let below_trim = version < st.meta.trim_version;
        let cut = st.index.partition_point(|e| e.info.version <= version);
        // (segment, offset) of the first byte to drop; segments above go whole.
        let cut_at = if below_trim {
            // Unindexed (trimmed) entries may still lie between `version` and
            // the first retained entry: drop every segment.
            st.segments.keys().next().map(|&first| (first, 0))
        } else {
            st.index.get(cut).map(|e| (e.segment, e.offset))
        };
        if let Some((segment, offset)) = cut_at {
            let doomed: Vec<u64> = st.segments.range(segment + 1..).map(|(&n, _)| n).collect();
            for n in doomed.into_iter().rev() {
                if write {
                    storage.remove(&format::segment_name(name, n))?;
                }
                st.segments.remove(&n);
                st.dirty.remove(&n);
            }
            let seg = format::segment_name(name, segment);
            if write {
                storage.truncate(&seg, offset)?;
                storage.sync(&seg)?;
            }
            st.segments.insert(segment, offset);
            st.dirty.remove(&segment);
            st.active = segment;
        }
        st.index.truncate(cut);
        st.recompute_hlc_monotone();
        st.advanced = INVALID;
        let done = Meta {
            truncate_to: None,
            trim_version: if below_trim {
                INVALID
            } else {
                st.meta.trim_version
            },
            known_version: version,
            anchor: if below_trim {
                None
            } else {
                st.meta.anchor.clone()
            },
            ..st.meta.clone()
        };
        if write {
            save_meta(storage, name, &done)?;
        }
        st.meta = done;
        st.persisted = st.persisted.min(st.latest());
        Ok(())
    }

    /// Makes every appended entry durable (as [`Log::persist`] does), then
    /// drops every entry older than `version`, durably. Segments holding only
    /// dropped entries are deleted; older entries sharing a segment with kept
    /// ones stay on storage but are never returned again. Trimming past the
    /// latest version empties the log but keeps its latest version.
    pub fn trim(&self, version: Version) -> Result<()> {
        self.check_writable()?;
        let _serial = lock(&self.inner.persist_lock);
        let mut st = self.state();
        // Everything appended so far becomes durable first, so the known
        // version recorded below never claims more than survives a crash.
        self.sync_all_locked(&mut st)?;
        let latest = st.latest();
        let version = version
            .min(latest.saturating_add(1))
            .max(st.meta.trim_version);
        let first_keep = st.index.partition_point(|e| e.info.version < version);
        // The newest dropped entry's signature anchors the retained chain.
        let anchor = match first_keep.checked_sub(1).map(|i| st.index[i]) {
            Some(last) if last.signed => {
                let (_, signature) = self.read_record(&last)?;
                signature.map(|s| Anchor::new(last.info.version, &s))
            }
            Some(_) => None,
            None => st.meta.anchor.clone(),
        };
        let meta = Meta {
            trim_version: version,
            known_version: st.meta.known_version.max(latest),
            anchor,
            ..st.meta.clone()
        };
        if meta != st.meta {
            save_meta(self.inner.storage.as_ref(), &self.inner.name, &meta)?;
            st.meta = meta;
        }
        // Entries are synced and the meta records `latest`.
        st.persisted = latest;
        let keep_segment = st
            .index
            .get(first_keep)
            .map_or(st.active + 1, |e| e.segment);
        // The decision is durable; the index follows it now, the files next
        // (leftovers of a failure here are removed at the next open).
        st.index.drain(..first_keep);
        st.recompute_hlc_monotone();
        st.active = st.active.max(keep_segment);
        let doomed: Vec<u64> = st.segments.range(..keep_segment).map(|(&n, _)| n).collect();
        for n in doomed {
            let removed = self
                .inner
                .storage
                .remove(&format::segment_name(&self.inner.name, n));
            if let Err(e) = removed {
                self.inner.needs_reopen.store(true, Ordering::Release);
                return Err(e.into());
            }
            st.segments.remove(&n);
            st.dirty.remove(&n);
        }
        Ok(())
    }
}
