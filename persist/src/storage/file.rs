//! [`FileStorage`]: the [`Storage`] contract on one directory of a real file
//! system.
//!
//! Appends go through a small cache of open file handles; `sync` is
//! `fdatasync` of the file plus, the first time, an `fsync` of the directory so
//! the new file's name is durable too. `replace` writes `<name>.tmp`, syncs it,
//! renames it over `<name>` and syncs the directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{validate_name, Storage, StorageResult, TMP_SUFFIX};
use crate::error::StorageError;

/// How many append handles stay open at once; the least recently opened one
/// is closed beyond that. Closing a handle loses nothing: `sync` reopens the
/// file, and `fdatasync` on any descriptor flushes the file's dirty pages.
const MAX_OPEN_HANDLES: usize = 64;

/// A [`Storage`] backed by one directory.
///
/// Thread safety: a mutex guards the handle cache. Appends and truncations
/// write while holding it; `sync` and `read` only clone the handle under it and
/// do their I/O unlocked, so a slow `fdatasync` does not stall appends.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
    cache: Mutex<HandleCache>,
}

#[derive(Debug, Default)]
struct HandleCache {
    /// Open handles (read + append) by file name.
    handles: BTreeMap<String, Arc<File>>,
    /// Names in the order their handles were opened, for eviction.
    opened: Vec<String>,
    /// Files created by `append` whose directory entry is not yet synced.
    unsynced_names: BTreeSet<String>,
}

impl FileStorage {
    /// Opens (creating if needed) the directory `dir` as a storage. Leftover
    /// `*.tmp` files of an interrupted `replace` are deleted.
    pub fn open(dir: impl AsRef<Path>) -> StorageResult<FileStorage> {
        let dir = dir.as_ref().to_path_buf();
        let dir_name = dir.display().to_string();
        fs::create_dir_all(&dir).map_err(|e| StorageError::from_io(&dir_name, e))?;
        let mut removed_any = false;
        for entry in fs::read_dir(&dir).map_err(|e| StorageError::from_io(&dir_name, e))? {
            let entry = entry.map_err(|e| StorageError::from_io(&dir_name, e))?;
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(TMP_SUFFIX) {
                tracing::warn!(file = %name.to_string_lossy(), "removing leftover temporary file");
                fs::remove_file(entry.path())
                    .map_err(|e| StorageError::from_io(&name.to_string_lossy(), e))?;
                removed_any = true;
            }
        }
        let storage = FileStorage {
            dir,
            cache: Mutex::new(HandleCache::default()),
        };
        if removed_any {
            storage.sync_dir()?;
        }
        Ok(storage)
    }

    /// The directory this storage lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn lock(&self) -> MutexGuard<'_, HandleCache> {
        // A panic while holding the lock cannot leave the cache inconsistent in
        // a way that matters (it only caches handles), so poisoning is ignored.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sync_dir(&self) -> StorageResult<()> {
        let name = self.dir.display().to_string();
        let dir = File::open(&self.dir).map_err(|e| StorageError::from_io(&name, e))?;
        dir.sync_all().map_err(|e| StorageError::from_io(&name, e))
    }

    /// The cached handle for `name`, opening it if needed. With `create`, a
    /// missing file is created and remembered as needing a directory sync.
    fn handle(
        &self,
        cache: &mut HandleCache,
        name: &str,
        create: bool,
    ) -> StorageResult<Arc<File>> {
        if let Some(h) = cache.handles.get(name) {
            return Ok(h.clone());
        }
        let path = self.path(name);
        let existed = match fs::metadata(&path) {
            Ok(m) if m.is_file() => true,
            Ok(_) => {
                return Err(StorageError::Corrupt {
                    name: name.to_string(),
                    reason: "not a regular file".into(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(StorageError::from_io(name, e)),
        };
        if !existed && !create {
            return Err(StorageError::NotFound(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(create)
            .open(&path)
            .map_err(|e| StorageError::from_io(name, e))?;
        if !existed {
            cache.unsynced_names.insert(name.to_string());
        }
        if cache.opened.len() >= MAX_OPEN_HANDLES {
            let victim = cache.opened.remove(0);
            cache.handles.remove(&victim);
        }
        let file = Arc::new(file);
        cache.handles.insert(name.to_string(), file.clone());
        cache.opened.push(name.to_string());
        Ok(file)
    }

    fn forget(cache: &mut HandleCache, name: &str) {
        cache.handles.remove(name);
        cache.opened.retain(|n| n != name);
        cache.unsynced_names.remove(name);
    }
}

impl Storage for FileStorage {
    fn append(&self, name: &str, bytes: &[u8]) -> StorageResult<u64> {
        validate_name(name)?;
        let mut cache = self.lock();
        let file = self.handle(&mut cache, name, true)?;
        let before = file
            .metadata()
            .map_err(|e| StorageError::from_io(name, e))?
            .len();
        if let Err(e) = (&*file).write_all(bytes) {
            // Undo a partial write so the file keeps its old content.
            if let Err(undo) = file.set_len(before) {
                tracing::warn!(file = name, error = %undo, "could not undo a partial append");
            }
            return Err(StorageError::from_io(name, e));
        }
        Ok(before + bytes.len() as u64)
    }

    fn sync(&self, name: &str) -> StorageResult<()> {
        validate_name(name)?;
        let (file, new_name) = {
            let mut cache = self.lock();
            let file = self.handle(&mut cache, name, false)?;
            (file, cache.unsynced_names.contains(name))
        };
        file.sync_data()
            .map_err(|e| StorageError::from_io(name, e))?;
        if new_name {
            self.sync_dir()?;
            self.lock().unsynced_names.remove(name);
        }
        Ok(())
    }

    fn read(&self, name: &str, offset: u64, len: usize) -> StorageResult<Vec<u8>> {
        validate_name(name)?;
        let file = {
            let mut cache = self.lock();
            self.handle(&mut cache, name, false)?
        };
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StorageError::from_io(name, e)),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    fn len(&self, name: &str) -> StorageResult<u64> {
        validate_name(name)?;
        let meta = fs::metadata(self.path(name)).map_err(|e| StorageError::from_io(name, e))?;
        if !meta.is_file() {
            return Err(StorageError::NotFound(name.to_string()));
        }
        Ok(meta.len())
    }

    fn truncate(&self, name: &str, len: u64) -> StorageResult<()> {
        validate_name(name)?;
        let mut cache = self.lock();
        let file = self.handle(&mut cache, name, false)?;
        let current = file
            .metadata()
            .map_err(|e| StorageError::from_io(name, e))?
            .len();
        if len > current {
            return Err(StorageError::OutOfRange {
                name: name.to_string(),
                requested: len,
                len: current,
            });
        }
        file.set_len(len)
            .map_err(|e| StorageError::from_io(name, e))
    }

    fn replace(&self, name: &str, bytes: &[u8]) -> StorageResult<()> {
        validate_name(name)?;
        let tmp_name = format!("{name}{TMP_SUFFIX}");
        let tmp = self.path(&tmp_name);
        let write_tmp = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        };
        // On failure the temporary goes, if it can; the error to return is the first one, and a
        // temporary left behind is deleted by the next `open`.
        if let Err(e) = write_tmp() {
            let _ = fs::remove_file(&tmp);
            return Err(StorageError::from_io(name, e));
        }
        let mut cache = self.lock();
        if let Err(e) = fs::rename(&tmp, self.path(name)) {
            // As above.
            let _ = fs::remove_file(&tmp);
            return Err(StorageError::from_io(name, e));
        }
        // The cached handle (if any) points at the replaced inode.
        Self::forget(&mut cache, name);
        drop(cache);
        self.sync_dir()
    }

    fn remove(&self, name: &str) -> StorageResult<()> {
        validate_name(name)?;
        let mut cache = self.lock();
        Self::forget(&mut cache, name);
        fs::remove_file(self.path(name)).map_err(|e| StorageError::from_io(name, e))?;
        drop(cache);
        self.sync_dir()
    }

    fn list(&self) -> StorageResult<Vec<String>> {
        let dir_name = self.dir.display().to_string();
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| StorageError::from_io(&dir_name, e))? {
            let entry = entry.map_err(|e| StorageError::from_io(&dir_name, e))?;
            let is_file = entry
                .file_type()
                .map_err(|e| StorageError::from_io(&dir_name, e))?
                .is_file();
            if let (true, Some(name)) = (is_file, entry.file_name().to_str()) {
                if validate_name(name).is_ok() {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, name: &str) -> StorageResult<bool> {
        validate_name(name)?;
        match fs::metadata(self.path(name)) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StorageError::from_io(name, e)),
        }
    }
}
