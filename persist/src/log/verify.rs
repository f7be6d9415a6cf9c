//! Checking a signed log against a public key ([`Log::verify`]), reading one
//! entry's signature ([`Log::signature`]), and finding the signature the next
//! append chains from. The chain rule itself is in [`sign`](crate::sign); this
//! file only walks it.

use super::{lock, Log, State};
use crate::error::Error;
use crate::sign::{chain_message, PublicKey, Signature};
use crate::version::{Version, INVALID};

/// Why a log did not verify. Every variant names the log and the first version
/// that failed; versions before it verified.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The entry carries no signature (written without a signer).
    #[error("{log}: version {version} is not signed")]
    Unsigned {
        /// The log.
        log: String,
        /// The unsigned entry.
        version: Version,
    },
    /// The entry's signature is not the key's signature of the entry chained
    /// to the signature before it: the entry, its signature or the chain
    /// before it changed, or another key signed it.
    #[error("{log}: the signature of version {version} does not verify")]
    BadSignature {
        /// The log.
        log: String,
        /// The first entry whose signature failed.
        version: Version,
    },
    /// The entry could not be read back (a storage error, or a checksum that
    /// no longer matches).
    #[error("{log}: version {version} cannot be read: {source}")]
    Unreadable {
        /// The log.
        log: String,
        /// The entry.
        version: Version,
        /// The read error.
        #[source]
        source: Error,
    },
    /// The anchor recorded by a trim is not a signature.
    #[error("{log}: the chain anchor recorded at version {version} is malformed")]
    BadAnchor {
        /// The log.
        log: String,
        /// The anchor's version (the newest trimmed entry).
        version: Version,
    },
}

impl VerifyError {
    /// The version that failed.
    pub fn version(&self) -> Version {
        match self {
            VerifyError::Unsigned { version, .. }
            | VerifyError::BadSignature { version, .. }
            | VerifyError::Unreadable { version, .. }
            | VerifyError::BadAnchor { version, .. } => *version,
        }
    }
}

impl Log {
    /// Checks every retained entry's signature against `key`, oldest first,
    /// starting from the chain's anchor (the newest trimmed entry's signature)
    /// or from the genesis signature. Returns the newest version checked
    /// ([`INVALID`] for a log without entries), or the first failure.
    ///
    /// Every payload is read (and its checksum checked again). Entries
    /// appended during the walk are not checked. [`Log::persist`],
    /// [`Log::truncate`] and [`Log::trim`] wait until the walk ends; appends
    /// and reads do not.
    pub fn verify(&self, key: &PublicKey) -> Result<Version, VerifyError> {
        let _serial = lock(&self.inner.persist_lock);
        let name = || self.inner.name.clone();
        let (anchor, end) = {
            let st = self.state();
            (st.meta.anchor.clone(), st.last_entry_version())
        };
        let mut previous = match anchor {
            Some(a) => a.signature().ok_or(VerifyError::BadAnchor {
                log: name(),
                version: a.version,
            })?,
            None => Signature::GENESIS,
        };
        let mut checked = INVALID;
        while checked < end {
            let next = {
                let st = self.state();
                let i = st.index.partition_point(|e| e.info.version <= checked);
                st.index.get(i).copied()
            };
            // Only truncate and trim remove entries, and they wait for the persist lock.
            let Some(e) = next else { break };
            let version = e.info.version;
            let (entry, signature) =
                self.read_record(&e)
                    .map_err(|source| VerifyError::Unreadable {
                        log: name(),
                        version,
                        source,
                    })?;
            let signature = signature.ok_or(VerifyError::Unsigned {
                log: name(),
                version,
            })?;
            let message = chain_message(&previous, version, entry.hlc, entry.kind, &entry.payload);
            if !key.verify(&message, &signature) {
                return Err(VerifyError::BadSignature {
                    log: name(),
                    version,
                });
            }
            previous = signature;
            checked = version;
        }
        Ok(checked)
    }

    /// The signature stored with the entry `version`: `None` if the entry is
    /// not retained or unsigned. The newest trimmed entry's signature (the
    /// chain's anchor) is still returned after the trim.
    pub fn signature(&self, version: Version) -> crate::Result<Option<Signature>> {
        let st = self.state();
        if let Some(a) = st.meta.anchor.as_ref().filter(|a| a.version == version) {
            return Ok(a.signature());
        }
        match st.index.binary_search_by_key(&version, |e| e.info.version) {
            Ok(i) if st.index[i].signed => self.read_record(&st.index[i]).map(|(_, s)| s),
            _ => Ok(None),
        }
    }

    /// The signature the next appended entry chains from: the newest entry's,
    /// the genesis signature after an unsigned entry, or, in a log without
    /// entries, the anchor (genesis without one).
    pub(super) fn chain_tip(&self, st: &State) -> crate::Result<Signature> {
        Ok(match st.index.last() {
            // `read_record` fails for a signed entry without a well-formed signature.
            Some(e) if e.signed => self.read_record(e)?.1.unwrap_or(Signature::GENESIS),
            Some(_) => Signature::GENESIS,
            None => st
                .meta
                .anchor
                .as_ref()
                .and_then(|a| a.signature())
                .unwrap_or(Signature::GENESIS),
        })
    }
}
