//! Shared-memory files of the shm backend: region files, link inboxes, futexes, stale cleanup.
//!
//! Every file lives in the configured directory (`/dev/shm`) and is named
//! `derecho-shm-<pid>-<node>-<nonce>-<what>`, so that a later process can tell whose it was and
//! remove it once that process is gone.
//!
//! **Region file**: a 64-byte header, then the region's bytes.
//!
//! ```text
//! 0   u64 magic REGION_MAGIC        8   u64 key          16  u64 data length
//! 24  u64 state (LIVE / REVOKED)    32  u64 writers in progress (peers' copies)
//! ```
//!
//! A writer announces itself in `writers`, then checks `state`; the owner revokes by setting
//! `state`, then waits for `writers` to drain. With sequentially consistent operations on both
//! sides, no copy starts into a region after its `deregister` returned.
//!
//! **Inbox file** (one per link and direction, owned by the receiving side): a single-producer,
//! single-consumer ring of entries, one per applied write, that tells the owner's bell thread
//! which region was written (to ring its doorbell) and carries the immediate value. A futex word
//! lets the bell thread sleep while the ring is empty.
//!
//! ```text
//! 0    u64 magic INBOX_MAGIC   8 u64 capacity (entries)
//! 64   u32 armed: 1 while the bell thread sleeps or is about to (futex word)
//! 72   u32 parked: nonzero while a poller of the owner may be parked; a writer wakes the bell
//!      thread after a write only then, or when the write carries an immediate
//! 128  u64 tail (producer: entries published)
//! 192  u64 head (consumer: entries taken)
//! 256  entries, 32 bytes each: u64 key, u64 len, u32 imm, u32 flags, u64 reserved
//! ```

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};

use crate::FabricError;

/// Size of a region file's header; the region's bytes start here (64-byte aligned).
pub(crate) const REGION_HEADER: usize = 64;
const REGION_MAGIC: u64 = 0x4452_5348_5245_4731; // "DRSHREG1"
const INBOX_MAGIC: u64 = 0x4452_5348_494e_4231; // "DRSHINB1"
/// Region state: accepting writes.
pub(crate) const LIVE: u64 = 1;
/// Region state: deregistered; writers skip it.
pub(crate) const REVOKED: u64 = 2;

const INBOX_HEADER: usize = 256;
const ENTRY: usize = 32;
/// Inbox entry flag: the write carried an immediate value.
pub(crate) const ENTRY_IMM: u32 = 1;

/// Prefix of every file this backend creates.
pub(crate) const PREFIX: &str = "derecho-shm-";

/// A shared mapping of a whole file.
pub(crate) struct Mapping {
    map: MmapRaw,
    path: PathBuf,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("path", &self.path)
            .field("len", &self.map.len())
            .finish()
    }
}

impl Mapping {
    /// Creates `path` (which must not exist) with `len` zero bytes and maps it.
    pub(crate) fn create(path: &Path, len: usize) -> Result<Self, FabricError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| FabricError::io(format!("creating {}", path.display()), e))?;
        file.set_len(len as u64)
            .map_err(|e| FabricError::io(format!("sizing {} to {len} bytes", path.display()), e))?;
        Self::map(file, path, len)
    }

    /// Maps an existing file, checking that it holds at least `min_len` bytes.
    pub(crate) fn open(path: &Path, min_len: usize) -> Result<Self, FabricError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| FabricError::io(format!("opening {}", path.display()), e))?;
        let meta = file
            .metadata()
            .map_err(|e| FabricError::io(format!("inspecting {}", path.display()), e))?;
        if !meta.is_file() || (meta.len() as usize) < min_len {
            return Err(FabricError::InvalidRegion(format!(
                "{} is not a file of at least {min_len} bytes",
                path.display()
            )));
        }
        Self::map(file, path, meta.len() as usize)
    }

    fn map(file: File, path: &Path, len: usize) -> Result<Self, FabricError> {
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(|e| FabricError::io(format!("mapping {}", path.display()), e))?;
        Ok(Self {
            map,
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn base(&self) -> NonNull<u8> {
        // A successful mapping is never at address 0.
        NonNull::new(self.map.as_mut_ptr()).unwrap_or(NonNull::dangling())
    }

    /// The aligned word at `off` (inside the mapping, 8-aligned), accessed only atomically.
    pub(crate) fn word(&self, off: usize) -> &AtomicU64 {
        assert!(
            off.is_multiple_of(8) && off.checked_add(8).is_some_and(|end| end <= self.len()),
            "word {off} outside mapping"
        );
        // SAFETY: the mapping is page-aligned, `off` is 8-aligned and in bounds (asserted
        // without overflow), the
        // mapping lives as long as `self`, and every agent touches this word atomically.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(off).cast::<u64>()) }
    }

    /// The aligned 32-bit word at `off`, accessed only atomically.
    pub(crate) fn word32(&self, off: usize) -> &AtomicU32 {
        assert!(
            off.is_multiple_of(4) && off.checked_add(4).is_some_and(|end| end <= self.len()),
            "word {off} outside mapping"
        );
        // SAFETY: as in `word`.
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(off).cast::<u32>()) }
    }
}

/// File name of a region or inbox: `derecho-shm-<pid>-<node>-<nonce>-<what>`.
pub(crate) fn file_name(pid: u32, node: u32, nonce: u64, what: &str) -> String {
    format!("{PREFIX}{pid}-{node}-{nonce:016x}-{what}")
}

/// Checks a file name received from a peer: ours, and without path separators.
pub(crate) fn valid_name(name: &str) -> bool {
    name.starts_with(PREFIX)
        && name.len() < 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Lays out a fresh region file.
pub(crate) fn init_region(m: &Mapping, key: u64, len: usize) {
    m.word(8).store(key, Ordering::Relaxed);
    m.word(16).store(len as u64, Ordering::Relaxed);
    m.word(24).store(LIVE, Ordering::Relaxed);
    m.word(32).store(0, Ordering::Relaxed);
    m.word(0).store(REGION_MAGIC, Ordering::Release);
}

/// Checks a peer's region file against what its owner announced.
pub(crate) fn check_region(m: &Mapping, key: u64, len: usize) -> Result<(), FabricError> {
    let ok = m.len() >= REGION_HEADER + len
        && m.word(0).load(Ordering::Acquire) == REGION_MAGIC
        && m.word(8).load(Ordering::Relaxed) == key
        && m.word(16).load(Ordering::Relaxed) == len as u64;
    if ok {
        Ok(())
    } else {
        Err(FabricError::InvalidRegion(format!(
            "{} does not hold the announced region",
            m.path().display()
        )))
    }
}

/// The state word of a region file.
pub(crate) fn region_state(m: &Mapping) -> &AtomicU64 {
    m.word(24)
}

/// The count of copies in progress into a region file.
pub(crate) fn region_writers(m: &Mapping) -> &AtomicU64 {
    m.word(32)
}

/// Revokes a region: writers that have not yet checked the state skip it, and this returns once
/// the copies already under way have finished (or `limit` passed: a writer that died mid-copy
/// must not block deregistration forever).
pub(crate) fn revoke_region(m: &Mapping, limit: Duration) {
    region_state(m).store(REVOKED, Ordering::SeqCst);
    let start = std::time::Instant::now();
    while region_writers(m).load(Ordering::SeqCst) != 0 {
        if start.elapsed() >= limit {
            tracing::warn!(
                file = %m.path().display(),
                "a peer's copy into a deregistered region did not finish"
            );
            return;
        }
        std::thread::yield_now();
    }
}

/// Size of an inbox file with `capacity` entries.
pub(crate) fn inbox_len(capacity: usize) -> usize {
    INBOX_HEADER + capacity * ENTRY
}

/// Lays out a fresh inbox.
pub(crate) fn init_inbox(m: &Mapping, capacity: usize) {
    m.word(8).store(capacity as u64, Ordering::Relaxed);
    m.word(0).store(INBOX_MAGIC, Ordering::Release);
}

/// Checks a peer's inbox and returns its capacity.
pub(crate) fn check_inbox(m: &Mapping) -> Result<usize, FabricError> {
    let bad = || FabricError::InvalidRegion(format!("{} is not a link inbox", m.path().display()));
    if m.len() < INBOX_HEADER || m.word(0).load(Ordering::Acquire) != INBOX_MAGIC {
        return Err(bad());
    }
    let cap = usize::try_from(m.word(8).load(Ordering::Relaxed)).map_err(|_| bad())?;
    if cap == 0 || inbox_len(cap) > m.len() {
        return Err(bad());
    }
    Ok(cap)
}

/// One inbox entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub key: u64,
    pub len: u64,
    pub imm: u32,
    pub flags: u32,
}

/// A mapped inbox: the ring of write records of one link direction.
#[derive(Debug)]
pub(crate) struct Inbox {
    map: Mapping,
    capacity: u64,
}

impl Inbox {
    pub(crate) fn new(map: Mapping, capacity: usize) -> Self {
        Self {
            map,
            capacity: capacity as u64,
        }
    }

    pub(crate) fn mapping(&self) -> &Mapping {
        &self.map
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    pub(crate) fn armed(&self) -> &AtomicU32 {
        self.map.word32(64)
    }

    pub(crate) fn parked(&self) -> &AtomicU32 {
        self.map.word32(72)
    }

    pub(crate) fn tail(&self) -> &AtomicU64 {
        self.map.word(128)
    }

    pub(crate) fn head(&self) -> &AtomicU64 {
        self.map.word(192)
    }

    fn slot(&self, index: u64) -> usize {
        INBOX_HEADER + (index % self.capacity) as usize * ENTRY
    }

    /// Stores entry `index` (the producer then publishes it by advancing `tail`).
    pub(crate) fn put(&self, index: u64, e: Entry) {
        let s = self.slot(index);
        self.map.word(s).store(e.key, Ordering::Relaxed);
        self.map.word(s + 8).store(e.len, Ordering::Relaxed);
        self.map.word(s + 16).store(
            u64::from(e.imm) | u64::from(e.flags) << 32,
            Ordering::Relaxed,
        );
    }

    /// Loads entry `index` (after an acquire load of `tail` that covers it).
    pub(crate) fn get(&self, index: u64) -> Entry {
        let s = self.slot(index);
        let w = self.map.word(s + 16).load(Ordering::Relaxed);
        Entry {
            key: self.map.word(s).load(Ordering::Relaxed),
            len: self.map.word(s + 8).load(Ordering::Relaxed),
            imm: w as u32,
            flags: (w >> 32) as u32,
        }
    }

    /// Wakes the consumer if it is armed; called by the producer after publishing.
    pub(crate) fn wake(&self) {
        if self.armed().load(Ordering::SeqCst) == 1 && self.armed().swap(0, Ordering::SeqCst) == 1 {
            futex_wake(self.armed());
        }
    }
}

/// Sleeps while `word` holds `expected`, at most `timeout` (shared, not process-private: the
/// waker is another process).
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `word` is a valid, aligned 32-bit word for the duration of the call, and `ts` is
    // a valid timespec; FUTEX_WAIT only reads them. Errors (EAGAIN, EINTR, ETIMEDOUT) all mean
    // "check again", which the caller does.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0,
        );
    }
}

/// Wakes every waiter on `word`.
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned 32-bit word; FUTEX_WAKE does not dereference it beyond
    // hashing its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0,
        );
    }
}

/// Whether process `pid` exists.
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for the process; it sends nothing.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Removes files of this backend in `dir` whose creating process no longer exists (left by a
/// crash). Returns how many were removed.
pub(crate) fn remove_stale(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !alive(pid) && std::fs::remove_file(entry.path()).is_ok() {
            tracing::info!(
                file = name,
                pid,
                "removed a stale shm file of a dead process"
            );
            removed += 1;
        }
    }
    removed
}

/// Removes a file this node made (an inbox or a region file) when it is done with it. One
/// already gone is fine; any other failure only leaves the file behind until a later start
/// removes it (`remove_stale`), so it is logged at debug level and not returned.
pub(crate) fn remove_file(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::debug!(file = %path.display(), error = %e, "cannot remove an shm file");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A word index near `usize::MAX` must be refused, not wrap around the bounds check
    /// (which would hand out a reference outside the mapping in a release build).
    #[test]
    fn words_near_the_end_of_the_address_space_are_refused() {
        let path = std::env::temp_dir().join(file_name(std::process::id(), 9, 2, "word-bounds"));
        let m = Mapping::create(&path, 4096).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(m.word(4088).load(std::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(m.word32(4092).load(std::sync::atomic::Ordering::Relaxed), 0);
        let refused =
            |f: &dyn Fn()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
        for off in [usize::MAX - 7, 4096] {
            assert!(
                refused(&|| {
                    let _ = m.word(off);
                }),
                "word {off} was handed out"
            );
        }
        for off in [usize::MAX - 3, 4096] {
            assert!(
                refused(&|| {
                    let _ = m.word32(off);
                }),
                "32-bit word {off} was handed out"
            );
        }
    }

    #[test]
    fn names_are_checked() {
        let n = file_name(12, 3, 0xabc, "r5");
        assert!(valid_name(&n));
        assert!(!valid_name("derecho-shm-../../etc/passwd"));
        assert!(!valid_name("other-file"));
    }

    #[test]
    fn stale_files_of_dead_processes_are_removed() {
        let dir = std::env::temp_dir().join(format!("shm-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Above the kernel's largest pid (2^22), so certainly not running.
        let dead = dir.join(file_name(4_194_400, 1, 7, "r1"));
        let mine = dir.join(file_name(std::process::id(), 1, 7, "r1"));
        std::fs::write(&dead, b"x").unwrap();
        std::fs::write(&mine, b"x").unwrap();
        assert_eq!(remove_stale(&dir), 1);
        assert!(!dead.exists());
        assert!(mine.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn inbox_entries_round_trip() {
        let dir = std::env::temp_dir();
        let path = dir.join(file_name(std::process::id(), 9, 1, "inbox-test"));
        let _ = std::fs::remove_file(&path);
        let m = Mapping::create(&path, inbox_len(4)).unwrap();
        init_inbox(&m, 4);
        let other = Mapping::open(&path, 0).unwrap();
        assert_eq!(check_inbox(&other).unwrap(), 4);
        let a = Inbox::new(m, 4);
        let b = Inbox::new(other, 4);
        let e = Entry {
            key: 77,
            len: 1 << 33,
            imm: 0xdead_beef,
            flags: ENTRY_IMM,
        };
        a.put(5, e);
        assert_eq!(b.get(5), e);
        std::fs::remove_file(&path).unwrap();
    }
}
