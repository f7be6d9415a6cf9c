//! Error types.
//!
//! This file owns [`StorageError`], returned by every [`Storage`](crate::Storage)
//! backend, and [`Error`], returned by the log, saved objects and persistent
//! fields built on top of a backend.

use std::io;
use std::sync::Arc;

use crate::version::Version;

/// A failure reported by a [`Storage`](crate::Storage) backend.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The device (or the simulated capacity) has no room for the write.
    /// Nothing of the failed call is visible afterwards.
    #[error("storage is full")]
    Full,
    /// The named file does not exist.
    #[error("no such file: {0}")]
    NotFound(String),
    /// The name is empty, contains a path separator, or is otherwise unusable.
    #[error("invalid file name: {0:?}")]
    InvalidName(String),
    /// A truncate asked to grow a file.
    #[error("{name}: cannot truncate to {requested} bytes, the file has {len}")]
    OutOfRange {
        /// The file.
        name: String,
        /// The length asked for.
        requested: u64,
        /// The file's current length.
        len: u64,
    },
    /// The backend found content it cannot use (for example, a directory where
    /// a file should be).
    #[error("{name}: corrupt: {reason}")]
    Corrupt {
        /// The file.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Any other I/O failure.
    #[error("i/o error: {0}")]
    Io(Arc<io::Error>),
}

impl StorageError {
    /// Classifies an I/O error for the file `name`: a missing file becomes
    /// [`StorageError::NotFound`], a full device [`StorageError::Full`].
    pub fn from_io(name: &str, err: io::Error) -> StorageError {
        /// `ENOSPC` on Linux and the BSDs.
        const ENOSPC: i32 = 28;
        if err.kind() == io::ErrorKind::NotFound {
            StorageError::NotFound(name.to_string())
        } else if err.kind() == io::ErrorKind::StorageFull || err.raw_os_error() == Some(ENOSPC) {
            StorageError::Full
        } else {
            StorageError::Io(Arc::new(err))
        }
    }
}

/// A failure of the log, a saved object or a persistent field.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage backend failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Stored bytes failed verification (bad checksum, bad framing, versions
    /// out of order) somewhere that cannot be explained by a crash while
    /// writing, so they are not silently dropped.
    #[error("{name}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The file holding the bad bytes.
        name: String,
        /// Byte offset of the bad record within the file.
        offset: u64,
        /// What failed.
        reason: String,
    },
    /// A version was appended that is not newer than the latest one.
    #[error("{name}: version {version} is not newer than the latest version {latest}")]
    VersionNotIncreasing {
        /// The log.
        name: String,
        /// The version offered.
        version: Version,
        /// The latest version already in the log.
        latest: Version,
    },
    /// A value could not be serialized or deserialized.
    #[error("{name}: encoding error: {reason}")]
    Codec {
        /// The log or object.
        name: String,
        /// The codec's message.
        reason: String,
    },
    /// A write was attempted on a log opened read-only.
    #[error("{0}: the log was opened read-only")]
    ReadOnly(String),
    /// An earlier sync failed, or a truncate or trim failed half-way; what
    /// is on storage is uncertain until the log is reopened (which rescans it
    /// and finishes an interrupted truncate or trim).
    #[error("{0}: an earlier sync, truncate or trim failed; reopen the log")]
    NeedsReopen(String),
    /// A log or field name is unusable (empty, or contains `.` or `/`).
    #[error("invalid log name: {0:?}")]
    InvalidName(String),
}

impl Error {
    /// True when the underlying storage reported [`StorageError::Full`].
    pub fn is_full(&self) -> bool {
        matches!(self, Error::Storage(StorageError::Full))
    }

    /// True for corruption detected either by the log or by the backend.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. } | Error::Storage(StorageError::Corrupt { .. })
        )
    }

    pub(crate) fn codec(name: &str, err: impl std::fmt::Display) -> Error {
        Error::Codec {
            name: name.to_string(),
            reason: err.to_string(),
        }
    }
}

/// Shorthand for results of this crate's log-level operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified() {
        let full = io::Error::from_raw_os_error(28);
        assert!(matches!(
            StorageError::from_io("f", full),
            StorageError::Full
        ));
        let full = io::Error::from(io::ErrorKind::StorageFull);
        assert!(matches!(
            StorageError::from_io("f", full),
            StorageError::Full
        ));
        let missing = io::Error::from(io::ErrorKind::NotFound);
        assert!(
            matches!(StorageError::from_io("f", missing), StorageError::NotFound(n) if n == "f")
        );
        let other = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(matches!(
            StorageError::from_io("f", other),
            StorageError::Io(_)
        ));
        assert!(Error::from(StorageError::Full).is_full());
    }
}
