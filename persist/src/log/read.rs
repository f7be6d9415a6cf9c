//! Read queries over a log: by exact version, latest at or before a version,
//! by timestamp, descriptions of ranges, and the suffix iterator used to ship
//! a log tail in state transfer. All are answered from the in-memory index;
//! payloads are read (and their checksums verified again) from storage.

use super::format;
use super::{Entry, EntryInfo, IndexEntry, Log};
use crate::error::{Error, Result};
use crate::sign::Signature;
use crate::version::{Hlc, Version};

impl Log {
    fn read_entry(&self, e: &IndexEntry) -> Result<Entry> {
        self.read_record(e).map(|(entry, _)| entry)
    }

    /// Reads and verifies an indexed entry; returns it with its signature, if signed.
    pub(super) fn read_record(&self, e: &IndexEntry) -> Result<(Entry, Option<Signature>)> {
        let seg = format::segment_name(&self.inner.name, e.segment);
        let total = usize::try_from(e.record_len()).unwrap_or(usize::MAX);
        let bytes = self.inner.storage.read(&seg, e.offset, total)?;
        let corrupt = |reason: &str| Error::Corrupt {
            name: seg.clone(),
            offset: e.offset,
            reason: reason.to_string(),
        };
        let header = format::decode(&bytes).map_err(corrupt)?;
        if header.version != e.info.version
            || header.payload_len != e.info.len
            || header.signed != e.signed
        {
            return Err(corrupt("entry changed on storage since it was indexed"));
        }
        let (payload, signature) = format::body(&bytes, &header);
        if header.signed && signature.is_none() {
            return Err(corrupt("signature of the wrong length"));
        }
        let entry = Entry {
            version: header.version,
            hlc: header.hlc,
            kind: header.kind,
            payload: payload.to_vec(),
        };
        Ok((entry, signature))
    }

    /// The entry with exactly `version`, if retained.
    pub fn get(&self, version: Version) -> Result<Option<Entry>> {
        let st = self.state();
        match st.index.binary_search_by_key(&version, |e| e.info.version) {
            Ok(i) => self.read_entry(&st.index[i]).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The newest entry with a version `<= version`.
    pub fn latest_at_or_before(&self, version: Version) -> Result<Option<Entry>> {
        let st = self.state();
        st.pos_at_or_before(version)
            .map(|i| self.read_entry(&st.index[i]))
            .transpose()
    }

    /// Description of the newest entry with version `<= version` whose kind
    /// satisfies `pred`, searching backwards.
    pub fn find_back(
        &self,
        version: Version,
        pred: impl Fn(&EntryInfo) -> bool,
    ) -> Option<EntryInfo> {
        let st = self.state();
        let end = st.pos_at_or_before(version)?;
        st.index[..=end]
            .iter()
            .rev()
            .map(|e| e.info)
            .find(|i| pred(i))
    }

    /// The latest version whose timestamp is `<= hlc` (answered from memory).
    pub fn version_at_time(&self, hlc: Hlc) -> Option<Version> {
        let st = self.state();
        if st.hlc_monotone {
            let n = st.index.partition_point(|e| e.info.hlc <= hlc);
            n.checked_sub(1).map(|i| st.index[i].info.version)
        } else {
            st.index
                .iter()
                .filter(|e| e.info.hlc <= hlc)
                .map(|e| e.info.version)
                .max()
        }
    }

    /// The entry of [`version_at_time`](Log::version_at_time).
    pub fn at_time(&self, hlc: Hlc) -> Result<Option<Entry>> {
        match self.version_at_time(hlc) {
            Some(v) => self.get(v),
            None => Ok(None),
        }
    }

    /// Descriptions of the retained entries with versions in `(after, up_to]`.
    pub fn infos(&self, after: Version, up_to: Version) -> Vec<EntryInfo> {
        let st = self.state();
        let start = st.index.partition_point(|e| e.info.version <= after);
        let end = st.index.partition_point(|e| e.info.version <= up_to);
        st.index[start..end.max(start)]
            .iter()
            .map(|e| e.info)
            .collect()
    }

    /// Iterates over the entries newer than `after`, oldest first, reading
    /// each payload when reached. Entries appended during the iteration are
    /// included; the iteration ends at the newest entry present when `next`
    /// finds nothing newer.
    pub fn iter_from(&self, after: Version) -> LogIter {
        LogIter {
            log: self.clone(),
            cursor: after,
        }
    }
}

/// Iterator returned by [`Log::iter_from`].
#[derive(Debug)]
pub struct LogIter {
    log: Log,
    cursor: Version,
}

impl Iterator for LogIter {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        let st = self.log.state();
        let i = st.index.partition_point(|e| e.info.version <= self.cursor);
        let e = *st.index.get(i)?;
        self.cursor = e.info.version;
        Some(self.log.read_entry(&e))
    }
}
