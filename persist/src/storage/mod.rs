//! The storage contract and its two backends.
//!
//! This module owns the [`Storage`] trait: a flat namespace of named,
//! append-mostly files with explicit durability points. [`FileStorage`] maps it
//! onto one directory of a real file system; [`SimStorage`] keeps everything in
//! memory and can simulate a crash that loses or tears unsynced bytes. The log
//! and every other layer of this crate are written against the trait only, so
//! the simulated backend exercises the same recovery code as the real one.

mod file;
mod sim;

pub use file::FileStorage;
pub use sim::{SimOp, SimStorage, SECTOR_SIZE};

use std::sync::Arc;

use crate::error::StorageError;

/// Shorthand for results of [`Storage`] methods.
pub type StorageResult<T> = std::result::Result<T, StorageError>;

/// A disk-like, flat namespace of named files.
///
/// Names are non-empty strings without `/`, NUL or a `.tmp` suffix (reserved
/// for atomic replacement) and are not `.` or `..`.
///
/// All methods take `&self`; implementations lock internally, so one thread
/// may [`sync`](Storage::sync) a file while another appends to it.
///
/// Durability rules:
/// * [`append`](Storage::append) and [`truncate`](Storage::truncate) change
///   what later reads see at once, but survive a crash only after a
///   [`sync`](Storage::sync) of that file has returned. Bytes appended after the
///   last sync may be lost in a crash, in whole or in part, and the last
///   partially written sector may hold garbage.
/// * [`replace`](Storage::replace) and [`remove`](Storage::remove) are atomic
///   and durable when they return.
pub trait Storage: Send + Sync {
    /// Appends `bytes` to the file `name`, creating it if missing; returns the
    /// file's new length. A failed append leaves the file unchanged.
    fn append(&self, name: &str, bytes: &[u8]) -> StorageResult<u64>;

    /// Makes everything appended to (and every truncation of) `name` so far
    /// durable, including the file's existence.
    fn sync(&self, name: &str) -> StorageResult<()>;

    /// Reads up to `len` bytes of `name` starting at `offset`. The result is
    /// shorter than `len` only when the file ends first (and empty when
    /// `offset` is at or past the end).
    fn read(&self, name: &str, offset: u64, len: usize) -> StorageResult<Vec<u8>>;

    /// The current length of `name` in bytes.
    fn len(&self, name: &str) -> StorageResult<u64>;

    /// The whole content of `name`.
    fn read_all(&self, name: &str) -> StorageResult<Vec<u8>> {
        let len = self.len(name)?;
        let len = usize::try_from(len).map_err(|_| StorageError::OutOfRange {
            name: name.to_string(),
            requested: len,
            len,
        })?;
        self.read(name, 0, len)
    }

    /// Shortens `name` to `len` bytes; growing is an
    /// [`OutOfRange`](StorageError::OutOfRange) error. Durable after the next
    /// [`sync`](Storage::sync) of the file.
    fn truncate(&self, name: &str, len: u64) -> StorageResult<()>;

    /// Atomically replaces the content of `name` (creating it if missing) with
    /// `bytes`. When this returns the new content is durable; a crash during
    /// the call leaves either the old or the new content, never a mix.
    fn replace(&self, name: &str, bytes: &[u8]) -> StorageResult<()>;

    /// Deletes `name` durably; [`NotFound`](StorageError::NotFound) if missing.
    fn remove(&self, name: &str) -> StorageResult<()>;

    /// Every file name, sorted.
    fn list(&self) -> StorageResult<Vec<String>>;

    /// Whether `name` exists.
    fn exists(&self, name: &str) -> StorageResult<bool>;
}

impl<S: Storage + ?Sized> Storage for Arc<S> {
    fn append(&self, name: &str, bytes: &[u8]) -> StorageResult<u64> {
        (**self).append(name, bytes)
    }
    fn sync(&self, name: &str) -> StorageResult<()> {
        (**self).sync(name)
    }
    fn read(&self, name: &str, offset: u64, len: usize) -> StorageResult<Vec<u8>> {
        (**self).read(name, offset, len)
    }
    fn len(&self, name: &str) -> StorageResult<u64> {
        (**self).len(name)
    }
    fn read_all(&self, name: &str) -> StorageResult<Vec<u8>> {
        (**self).read_all(name)
    }
    fn truncate(&self, name: &str, len: u64) -> StorageResult<()> {
        (**self).truncate(name, len)
    }
    fn replace(&self, name: &str, bytes: &[u8]) -> StorageResult<()> {
        (**self).replace(name, bytes)
    }
    fn remove(&self, name: &str) -> StorageResult<()> {
        (**self).remove(name)
    }
    fn list(&self) -> StorageResult<Vec<String>> {
        (**self).list()
    }
    fn exists(&self, name: &str) -> StorageResult<bool> {
        (**self).exists(name)
    }
}

/// The suffix of temporary files used by atomic replacement.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Checks a file name against the rules documented on [`Storage`].
pub fn validate_name(name: &str) -> StorageResult<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || name.ends_with(TMP_SUFFIX);
    if bad {
        Err(StorageError::InvalidName(name.to_string()))
    } else {
        Ok(())
    }
}
