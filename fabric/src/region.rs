//! Registered memory regions and the rules for touching them.
//!
//! A [`Region`] is a fixed-size, 64-byte-aligned block of memory that peers may write into with
//! one-sided writes. Because a backend (a receiver thread, another process through shared memory,
//! or a NIC) may write into a region at any moment, **every access to region memory goes through
//! atomics**: single words through [`Region::load_u64`] and friends, byte ranges through
//! [`Region::read`] / [`Region::write`], which copy word by word with relaxed atomic operations
//! and bracket the copy with a fence. In Rust's memory model this makes concurrent access a
//! race-free sequence of atomic operations, and it gives the two guarantees the protocols rely on:
//!
//! * an aligned 8-byte word is always read and written whole (never torn);
//! * **payload first, guard last**: every applied write starts with a release fence, so a reader
//!   that observes a counter written by a later write (with an acquire load, or after
//!   [`Region::read`], which ends with an acquire fence) also observes every byte of every earlier
//!   write on the same link.
//!
//! Nothing is promised about the order of bytes *within* one write: a reader racing with a write
//! may see part of it. Protocols therefore publish payload and guard in separate writes.

use std::alloc::{self, Layout};
use std::collections::VecDeque;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::doorbell::Doorbell;
use crate::error::FabricError;
use crate::sync::{lock, wait_timeout};
use crate::NodeId;

/// Alignment of every region: one cache line.
pub const REGION_ALIGN: usize = 64;

/// Largest region a backend accepts (1 TiB); larger requests are a configuration error.
pub const MAX_REGION_LEN: usize = 1 << 40;

/// Default bound on queued write-with-immediate notifications per region.
pub const DEFAULT_NOTIFY_CAPACITY: usize = 4096;

/// Names a region among the regions one node has registered.
///
/// The registering application chooses the id (for example "the SST of view 7"), so that a peer
/// can look the region up by name through [`crate::Link::remote_region`] without a separate
/// exchange of keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(pub u64);

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "region {:#x}", self.0)
    }
}

/// What a node needs to know to register a region.
#[derive(Clone)]
pub struct RegionSpec {
    /// The name peers use to find the region.
    pub id: RegionId,
    /// Length in bytes (rounded up to a multiple of 8 internally; at most [`MAX_REGION_LEN`]).
    pub len: usize,
    /// Doorbell rung after every write that lands in this region. Several regions may share one
    /// doorbell so a single poller can park on all of them. `None` gives the region its own.
    pub doorbell: Option<Arc<Doorbell>>,
    /// Bound on queued immediate notifications (see [`Region::next_notification`]). When the
    /// queue is full, the backend stops applying writes from that link until the owner drains
    /// it (back-pressure, like a receiver-not-ready condition on an RDMA queue pair).
    pub notify_capacity: usize,
}

impl RegionSpec {
    /// A region of `len` bytes named `id`, with its own doorbell and the default notification
    /// capacity.
    pub fn new(id: RegionId, len: usize) -> Self {
        Self {
            id,
            len,
            doorbell: None,
            notify_capacity: DEFAULT_NOTIFY_CAPACITY,
        }
    }

    /// Rings `doorbell` (instead of a private one) when writes land in this region.
    pub fn with_doorbell(mut self, doorbell: Arc<Doorbell>) -> Self {
        self.doorbell = Some(doorbell);
        self
    }

    /// Sets the bound on queued immediate notifications.
    pub fn with_notify_capacity(mut self, capacity: usize) -> Self {
        self.notify_capacity = capacity.max(1);
        self
    }
}

/// A peer's region as seen by a writer: enough to address writes into it.
///
/// `key` and `addr` are backend-specific (an rkey and a virtual address for RDMA; an opaque token
/// for tcp). They are only meaningful on the link they were obtained from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteRegion {
    /// The node that owns the region.
    pub owner: NodeId,
    /// The region's name.
    pub id: RegionId,
    /// Its length in bytes.
    pub len: usize,
    /// The backend's access key.
    pub key: u64,
    /// The backend's base address (0 where the backend addresses by offset).
    pub addr: u64,
}

/// A write-with-immediate that landed in a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The node whose write it was.
    pub from: NodeId,
    /// The immediate value carried by the write.
    pub imm: u32,
    /// Number of bytes the write carried.
    pub len: usize,
}

/// The memory behind a region.
enum Backing {
    /// Allocated by this crate with `layout`.
    Heap(Layout),
    /// Owned by something else (a mapping, a registered buffer) that must outlive the region.
    External(#[allow(dead_code)] Box<dyn Send + Sync>),
}

/// A registered block of memory that peers can write into. See the module docs for the access
/// rules.
pub struct Region {
    owner: NodeId,
    id: RegionId,
    len: usize,
    key: u64,
    ptr: NonNull<u8>,
    backing: Backing,
    doorbell: Arc<Doorbell>,
    notifications: Mutex<VecDeque<Notification>>,
    notify_space: Condvar,
    notify_capacity: usize,
}

// SAFETY: all access to the memory behind `ptr` goes through atomic operations (see the module
// docs), and the memory lives as long as the `Region`, so sharing it between threads is sound.
unsafe impl Send for Region {}
// SAFETY: as above; `&Region` only exposes atomic access to the memory.
unsafe impl Sync for Region {}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("owner", &self.owner)
            .field("id", &self.id)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Region {
    /// Allocates a zeroed heap region. Used by backends whose memory is ordinary process memory.
    pub(crate) fn allocate(
        owner: NodeId,
        spec: &RegionSpec,
        key: u64,
    ) -> Result<Self, FabricError> {
        let len = checked_len(spec.len)?;
        // A zero-length region still gets one word so that the pointer is valid and aligned.
        let alloc_len = len.max(8);
        let layout = Layout::from_size_align(alloc_len, REGION_ALIGN)
            .map_err(|_| FabricError::InvalidRegion(format!("cannot lay out {len} bytes")))?;
        // SAFETY: `layout` has a non-zero size (at least 8 bytes).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            FabricError::InvalidRegion(format!("out of memory allocating {len} bytes"))
        })?;
        let backing = Backing::Heap(layout);
        Ok(Self::with_parts(owner, spec, key, ptr, len, backing))
    }

    /// Wraps memory owned by `owner_box` (for example a shared mapping).
    ///
    /// # Safety
    /// `ptr` must be valid for reads and writes of `len` bytes, aligned to [`REGION_ALIGN`], for
    /// as long as `backing` lives, and all other agents that touch it must use aligned atomic
    /// word accesses or byte accesses, never wider non-atomic stores.
    #[allow(dead_code)]
    pub(crate) unsafe fn from_external(
        owner: NodeId,
        spec: &RegionSpec,
        key: u64,
        ptr: NonNull<u8>,
        backing: Box<dyn Send + Sync>,
    ) -> Result<Self, FabricError> {
        let len = checked_len(spec.len)?;
        if !(ptr.as_ptr() as usize).is_multiple_of(REGION_ALIGN) {
            return Err(FabricError::InvalidRegion(
                "external memory is not aligned".into(),
            ));
        }
        let backing = Backing::External(backing);
        Ok(Self::with_parts(owner, spec, key, ptr, len, backing))
    }

    fn with_parts(
        owner: NodeId,
        spec: &RegionSpec,
        key: u64,
        ptr: NonNull<u8>,
        len: usize,
        backing: Backing,
    ) -> Self {
        Self {
            owner,
            id: spec.id,
            len,
            key,
            ptr,
            backing,
            doorbell: spec.doorbell.clone().unwrap_or_default(),
            notifications: Mutex::new(VecDeque::new()),
            notify_space: Condvar::new(),
            notify_capacity: spec.notify_capacity.max(1),
        }
    }

    /// The node that registered this region.
    pub fn owner(&self) -> NodeId {
        self.owner
    }

    /// The region's name.
    pub fn id(&self) -> RegionId {
        self.id
    }

    /// Length in bytes (a multiple of 8).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has zero length.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backend's access key for this region.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The doorbell rung when writes land here.
    pub fn doorbell(&self) -> &Arc<Doorbell> {
        &self.doorbell
    }

    /// Base address of the memory, for backends that hand it to hardware or map it.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Checks that `[off, off + len)` lies inside the region.
    pub fn check_range(&self, off: usize, len: usize) -> Result<(), FabricError> {
        match off.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(FabricError::OutOfBounds {
                region: self.id,
                offset: off,
                len,
                region_len: self.len,
            }),
        }
    }

    /// Panics unless `size` bytes at `off` lie inside the region, aligned to `size`.
    fn check_atomic(&self, off: usize, size: usize) {
        assert!(
            off.is_multiple_of(size) && off.checked_add(size).is_some_and(|end| end <= self.len),
            "{size}-byte access at offset {off} outside or misaligned in {} of {} bytes",
            self.id,
            self.len
        );
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        self.check_atomic(off, 8);
        // SAFETY: `off` is 8-aligned (and the base is 64-aligned) and `off + 8 <= len`, so the
        // word lies inside the live allocation; all access to it is atomic (module docs).
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(off).cast::<u64>()) }
    }

    fn word32(&self, off: usize) -> &AtomicU32 {
        self.check_atomic(off, 4);
        // SAFETY: aligned and in bounds as checked above; accessed only atomically.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(off).cast::<u32>()) }
    }

    fn byte(&self, off: usize) -> &AtomicU8 {
        assert!(
            off < self.len,
            "byte access at offset {off} outside {} of {} bytes",
            self.id,
            self.len
        );
        // SAFETY: in bounds as checked above; accessed only atomically.
        unsafe { AtomicU8::from_ptr(self.ptr.as_ptr().add(off)) }
    }

    /// The aligned 64-bit word at `off` as an atomic, for read-modify-write operations.
    ///
    /// # Panics
    /// If `off` is not a multiple of 8 or the word is outside the region.
    pub fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        self.word(off)
    }

    /// Loads the aligned 64-bit word at `off` with acquire ordering.
    ///
    /// # Panics
    /// If `off` is not a multiple of 8 or the word is outside the region.
    pub fn load_u64(&self, off: usize) -> u64 {
        self.word(off).load(Ordering::Acquire)
    }

    /// Stores the aligned 64-bit word at `off` with release ordering.
    ///
    /// # Panics
    /// If `off` is not a multiple of 8 or the word is outside the region.
    pub fn store_u64(&self, off: usize, value: u64) {
        self.word(off).store(value, Ordering::Release)
    }

    /// Loads the aligned 32-bit word at `off` with acquire ordering.
    ///
    /// # Panics
    /// If `off` is not a multiple of 4 or the word is outside the region.
    pub fn load_u32(&self, off: usize) -> u32 {
        self.word32(off).load(Ordering::Acquire)
    }

    /// Stores the aligned 32-bit word at `off` with release ordering.
    ///
    /// # Panics
    /// If `off` is not a multiple of 4 or the word is outside the region.
    pub fn store_u32(&self, off: usize, value: u32) {
        self.word32(off).store(value, Ordering::Release)
    }

    /// Loads the byte at `off` with acquire ordering.
    ///
    /// # Panics
    /// If `off` is outside the region.
    pub fn load_u8(&self, off: usize) -> u8 {
        self.byte(off).load(Ordering::Acquire)
    }

    /// Stores the byte at `off` with release ordering.
    ///
    /// # Panics
    /// If `off` is outside the region.
    pub fn store_u8(&self, off: usize, value: u8) {
        self.byte(off).store(value, Ordering::Release)
    }

    /// Copies `dst.len()` bytes starting at `off` out of the region, then issues an acquire
    /// fence (so anything published before a guard this read observed is visible afterwards).
    pub fn read(&self, off: usize, dst: &mut [u8]) -> Result<(), FabricError> {
        self.check_range(off, dst.len())?;
        // SAFETY: the range is inside the live allocation (checked above).
        unsafe { atomic_copy_out(self.ptr.as_ptr().add(off), dst) };
        fence(Ordering::Acquire);
        Ok(())
    }

    /// Copies `src` into the region at `off` after a release fence. This is how the owner fills
    /// its own memory, and how backends apply a peer's write.
    pub fn write(&self, off: usize, src: &[u8]) -> Result<(), FabricError> {
        self.check_range(off, src.len())?;
        fence(Ordering::Release);
        // SAFETY: the range is inside the live allocation (checked above).
        unsafe { atomic_copy_in(self.ptr.as_ptr().add(off), src) };
        Ok(())
    }

    /// Copies `len` bytes at `off` of this region into `dst` at `dst_off`, after a release
    /// fence, word by word through atomics (the discipline of [`Region::write`]). This is how a
    /// backend that maps a peer's memory (shm) applies a one-sided write without an intermediate
    /// copy when both addresses agree modulo 8; otherwise it copies through a small buffer.
    pub(crate) fn copy_to(
        &self,
        off: usize,
        dst: &Region,
        dst_off: usize,
        len: usize,
    ) -> Result<(), FabricError> {
        self.check_range(off, len)?;
        dst.check_range(dst_off, len)?;
        fence(Ordering::Release);
        // SAFETY: both ranges lie inside their live allocations (checked above), and all other
        // access to either region's memory is atomic (module docs).
        unsafe {
            let src = self.ptr.as_ptr().add(off);
            let to = dst.ptr.as_ptr().add(dst_off);
            if (src as usize) % 8 == (to as usize) % 8 {
                atomic_copy_aligned(src, to, len);
            } else {
                let mut buf = [0u8; 4096];
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(buf.len());
                    atomic_copy_out(src.add(done), &mut buf[..n]);
                    atomic_copy_in(to.add(done), &buf[..n]);
                    done += n;
                }
            }
        }
        Ok(())
    }

    /// Fills `len` bytes at `off` with `value`.
    pub fn fill(&self, off: usize, len: usize, value: u8) -> Result<(), FabricError> {
        self.check_range(off, len)?;
        let chunk = [value; 512];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len());
            self.write(off + done, &chunk[..n])?;
            done += n;
        }
        Ok(())
    }

    /// Takes the oldest queued immediate notification, if any.
    pub fn next_notification(&self) -> Option<Notification> {
        let mut queue = lock(&self.notifications);
        let n = queue.pop_front();
        if n.is_some() {
            self.notify_space.notify_one();
        }
        n
    }

    /// Queues a notification, waiting (bounded by `give_up`) while the queue is full. Returns
    /// false if `give_up` returned true before space appeared.
    pub(crate) fn push_notification(&self, n: Notification, give_up: &dyn Fn() -> bool) -> bool {
        let mut queue = lock(&self.notifications);
        while queue.len() >= self.notify_capacity {
            if give_up() {
                return false;
            }
            queue = wait_timeout(&self.notify_space, queue, Duration::from_millis(50));
        }
        queue.push_back(n);
        true
    }

    /// Rings the region's doorbell (used by backends after applying a write).
    pub(crate) fn ring(&self) {
        self.doorbell.ring();
    }

    /// Waits until a notification is queued or `timeout` passes.
    pub fn wait_notification(&self, timeout: Duration) -> Option<Notification> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.doorbell.epoch();
            if let Some(n) = self.next_notification() {
                return Some(n);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.doorbell.wait(seen, deadline - now);
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Backing::Heap(layout) = self.backing {
            // SAFETY: `ptr` was returned by `alloc_zeroed(layout)` in `allocate` and is freed
            // exactly once, here.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

fn checked_len(len: usize) -> Result<usize, FabricError> {
    if len > MAX_REGION_LEN {
        return Err(FabricError::RegionTooLarge {
            len,
            limit: MAX_REGION_LEN,
        });
    }
    Ok(len.div_ceil(8) * 8)
}

/// Copies out of shared memory with relaxed atomic loads: whole aligned words in the middle,
/// single bytes at the unaligned edges.
///
/// # Safety
/// `src` must be valid for `dst.len()` bytes and accessed by others only atomically.
unsafe fn atomic_copy_out(src: *const u8, dst: &mut [u8]) {
    let len = dst.len();
    let head = (src as usize).wrapping_neg() % 8;
    let head = head.min(len);
    let mut i = 0;
    while i < head {
        // SAFETY: `src + i` is inside the caller's range.
        dst[i] = unsafe { AtomicU8::from_ptr(src.add(i) as *mut u8) }.load(Ordering::Relaxed);
        i += 1;
    }
    while i + 8 <= len {
        // SAFETY: `src + i` is 8-aligned (after `head`) and the word is inside the range.
        let w = unsafe { AtomicU64::from_ptr(src.add(i) as *mut u64) }.load(Ordering::Relaxed);
        dst[i..i + 8].copy_from_slice(&w.to_ne_bytes());
        i += 8;
    }
    while i < len {
        // SAFETY: `src + i` is inside the caller's range.
        dst[i] = unsafe { AtomicU8::from_ptr(src.add(i) as *mut u8) }.load(Ordering::Relaxed);
        i += 1;
    }
}

/// Copies into shared memory with relaxed atomic stores (the caller issues the fence).
///
/// # Safety
/// `dst` must be valid for `src.len()` bytes and accessed by others only atomically.
unsafe fn atomic_copy_in(dst: *mut u8, src: &[u8]) {
    let len = src.len();
    let head = ((dst as usize).wrapping_neg() % 8).min(len);
    let mut i = 0;
    while i < head {
        // SAFETY: `dst + i` is inside the caller's range.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(src[i], Ordering::Relaxed);
        i += 1;
    }
    while i + 8 <= len {
        let mut w = [0u8; 8];
        w.copy_from_slice(&src[i..i + 8]);
        // SAFETY: `dst + i` is 8-aligned (after `head`) and the word is inside the range.
        unsafe { AtomicU64::from_ptr(dst.add(i).cast::<u64>()) }
            .store(u64::from_ne_bytes(w), Ordering::Relaxed);
        i += 8;
    }
    while i < len {
        // SAFETY: `dst + i` is inside the caller's range.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(src[i], Ordering::Relaxed);
        i += 1;
    }
}

/// Copies between two shared ranges that agree modulo 8: single bytes up to the first word
/// boundary, whole words as relaxed atomics, single bytes at the end.
///
/// # Safety
/// `src` and `dst` must be valid for `len` bytes, agree modulo 8, and be accessed by others
/// only atomically.
unsafe fn atomic_copy_aligned(src: *const u8, dst: *mut u8, len: usize) {
    let head = ((dst as usize).wrapping_neg() % 8).min(len);
    let mut i = 0;
    while i < head {
        // SAFETY: `src + i` and `dst + i` are inside the caller's ranges.
        unsafe {
            let b = AtomicU8::from_ptr(src.add(i) as *mut u8).load(Ordering::Relaxed);
            AtomicU8::from_ptr(dst.add(i)).store(b, Ordering::Relaxed);
        }
        i += 1;
    }
    while i + 8 <= len {
        // SAFETY: both addresses are 8-aligned here (they agree modulo 8 and `dst + i` is
        // aligned after `head`), and the words lie inside the caller's ranges.
        unsafe {
            let w = AtomicU64::from_ptr(src.add(i) as *mut u64).load(Ordering::Relaxed);
            AtomicU64::from_ptr(dst.add(i).cast::<u64>()).store(w, Ordering::Relaxed);
        }
        i += 8;
    }
    while i < len {
        // SAFETY: `src + i` and `dst + i` are inside the caller's ranges.
        unsafe {
            let b = AtomicU8::from_ptr(src.add(i) as *mut u8).load(Ordering::Relaxed);
            AtomicU8::from_ptr(dst.add(i)).store(b, Ordering::Relaxed);
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn regions_above_the_limit_are_refused() {
        let spec = RegionSpec::new(RegionId(1), MAX_REGION_LEN + 1);
        assert!(matches!(
            Region::allocate(0, &spec, 9),
            Err(FabricError::RegionTooLarge { len, limit: MAX_REGION_LEN })
                if len == MAX_REGION_LEN + 1
        ));
    }

    #[test]
    fn read_write_round_trip_at_every_alignment() {
        let r = Region::allocate(0, &RegionSpec::new(RegionId(1), 256), 9).unwrap();
        for off in 0..17 {
            for len in 0..40 {
                let src: Vec<u8> = (0..len).map(|i| (i * 7 + off) as u8).collect();
                r.write(off, &src).unwrap();
                let mut back = vec![0u8; len];
                r.read(off, &mut back).unwrap();
                assert_eq!(back, src, "off {off} len {len}");
            }
        }
    }

    #[test]
    fn copy_to_at_every_alignment() {
        let a = Region::allocate(0, &RegionSpec::new(RegionId(1), 256), 9).unwrap();
        let b = Region::allocate(0, &RegionSpec::new(RegionId(2), 256), 9).unwrap();
        let src: Vec<u8> = (0..256).map(|i| (i * 13 + 1) as u8).collect();
        a.write(0, &src).unwrap();
        for off in 0..9 {
            for dst_off in 0..9 {
                for len in [0, 1, 7, 8, 9, 31, 100] {
                    b.fill(0, 256, 0).unwrap();
                    a.copy_to(off, &b, dst_off, len).unwrap();
                    let mut back = vec![0u8; len];
                    b.read(dst_off, &mut back).unwrap();
                    assert_eq!(back, src[off..off + len], "{off} -> {dst_off}, {len}");
                }
            }
        }
        assert!(a.copy_to(200, &b, 0, 100).is_err());
        assert!(a.copy_to(0, &b, 200, 100).is_err());
    }

    #[test]
    fn out_of_range_is_an_error() {
        let r = Region::allocate(0, &RegionSpec::new(RegionId(1), 64), 9).unwrap();
        assert!(r.write(60, &[0; 8]).is_err());
        assert!(r.read(usize::MAX, &mut [0; 2]).is_err());
        assert!(r.check_range(64, 0).is_ok());
    }

    #[test]
    fn length_rounds_up_to_words() {
        let r = Region::allocate(0, &RegionSpec::new(RegionId(1), 13), 9).unwrap();
        assert_eq!(r.len(), 16);
        r.store_u64(8, 5);
        assert_eq!(r.load_u64(8), 5);
    }

    #[test]
    fn notifications_are_fifo_and_bounded() {
        let spec = RegionSpec::new(RegionId(1), 8).with_notify_capacity(2);
        let r = Region::allocate(0, &spec, 9).unwrap();
        let n = |imm| Notification {
            from: 3,
            imm,
            len: 0,
        };
        assert!(r.push_notification(n(1), &|| true));
        assert!(r.push_notification(n(2), &|| true));
        assert!(
            !r.push_notification(n(3), &|| true),
            "full queue must refuse"
        );
        assert_eq!(r.next_notification().map(|x| x.imm), Some(1));
        assert_eq!(r.next_notification().map(|x| x.imm), Some(2));
        assert_eq!(r.next_notification(), None);
    }
}
