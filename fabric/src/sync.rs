//! Poison-free locking, shared by every crate of the workspace.
//!
//! A thread that panics while holding a lock poisons it. The state guarded by the locks of
//! these crates is left consistent between operations (a panic mid-update is a bug that is
//! reported where it happens), so the other threads carry on with the data instead of
//! propagating the poison: every lock is taken through these functions.
//!
//! [`spawn_bounded`] is the one way listeners give each new connection a thread of its own
//! under a bound.

use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Locks `m`, recovering the guard if another thread panicked while holding it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes a read lock on `l`, recovering from poison.
pub fn read_lock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// Takes a write lock on `l`, recovering from poison.
pub fn write_lock<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Waits on `cond` for at most `timeout`, recovering from poison; returns the guard.
pub fn wait_timeout<'a, T>(
    cond: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    match cond.wait_timeout(guard, timeout) {
        Ok((g, _)) => g,
        Err(p) => p.into_inner().0,
    }
}

/// Runs `job` on a thread named `name` if fewer than `max` jobs counted by `count` run; says
/// whether it started. Listeners use it to handshake and read new connections in parallel, so
/// that a silent one never holds up another, with a bound on how many strangers can cost a
/// thread at once. The place is given back however the job ends, a panic included (or, if the
/// thread cannot start, when the unrun job is dropped).
pub fn spawn_bounded(
    count: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
    max: usize,
    name: &str,
    job: impl FnOnce() + Send + 'static,
) -> bool {
    use std::sync::atomic::{AtomicUsize, Ordering};
    struct Place(std::sync::Arc<AtomicUsize>);
    impl Drop for Place {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    if count.fetch_add(1, Ordering::SeqCst) >= max {
        count.fetch_sub(1, Ordering::SeqCst);
        return false;
    }
    let place = Place(std::sync::Arc::clone(count));
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _place = place;
            job();
        })
        .is_ok()
}
