//! Poison-free locking, shared by every crate of the workspace.
//!
//! A thread that panics while holding a lock poisons it. The state guarded by the locks of
//! these crates is left consistent between operations (a panic mid-update is a bug that is
//! reported where it happens), so the other threads carry on with the data instead of
//! propagating the poison: every lock is taken through these functions.
//!
//! [`Gate`] is the one way listeners give each new connection a thread of its own under a
//! bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
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

/// Bounds the connections a listener reads or serves at once: in all, and from any one
/// address, so that neither strangers in general nor one host can cost more than a share of
/// the threads. Listeners give each new connection a thread of its own through
/// [`Gate::spawn`], so that a silent one never holds up another.
#[derive(Debug)]
pub struct Gate {
    max: usize,
    per_addr: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why [`Gate::spawn`] did not run a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateFull {
    /// The listener's bound is reached.
    #[error("{0} connections are open already")]
    All(usize),
    /// The bound for one address is reached.
    #[error("{1} connections from {0} are open already")]
    Address(IpAddr, usize),
    /// No thread could be started.
    #[error("no thread could be started")]
    NoThread,
}

impl Gate {
    /// At most `max` jobs at once, and at most `per_addr` for connections from one address.
    pub fn new(max: usize, per_addr: usize) -> Arc<Self> {
        Arc::new(Gate {
            max,
            per_addr: per_addr.min(max),
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// How many jobs run now.
    pub fn open(&self) -> usize {
        lock(&self.open).0
    }

    /// Runs `job` (serving a connection from `from`, if known) on a thread named `name` if the
    /// bounds allow. The place is given back however the job ends, a panic included (or, if
    /// the thread cannot start, when the unrun job is dropped).
    pub fn spawn(
        self: &Arc<Self>,
        from: Option<IpAddr>,
        name: &str,
        job: impl FnOnce() + Send + 'static,
    ) -> Result<(), GateFull> {
        struct Place(Arc<Gate>, Option<IpAddr>);
        impl Drop for Place {
            fn drop(&mut self) {
                let mut open = lock(&self.0.open);
                open.0 = open.0.saturating_sub(1);
                if let Some(addr) = self.1 {
                    if let Some(n) = open.1.get_mut(&addr) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            open.1.remove(&addr);
                        }
                    }
                }
            }
        }
        {
            let mut open = lock(&self.open);
            if open.0 >= self.max {
                return Err(GateFull::All(self.max));
            }
            if let Some(addr) = from {
                let n = open.1.entry(addr).or_insert(0);
                if *n >= self.per_addr {
                    return Err(GateFull::Address(addr, self.per_addr));
                }
                *n += 1;
            }
            open.0 += 1;
        }
        let place = Place(Arc::clone(self), from);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _place = place;
                job();
            })
            .map(|_| ())
            .map_err(|_| GateFull::NoThread)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::mpsc;

    #[test]
    fn a_gate_bounds_all_connections_and_each_address_and_gives_places_back() {
        let gate = Gate::new(3, 2);
        let (a, b) = (
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
        );
        let (release, held) = mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        let hold = || {
            let held = Arc::clone(&held);
            move || {
                let _ = lock(&held).recv();
            }
        };
        gate.spawn(Some(a), "t", hold()).unwrap();
        gate.spawn(Some(a), "t", hold()).unwrap();
        assert_eq!(
            gate.spawn(Some(a), "t", hold()),
            Err(GateFull::Address(a, 2))
        );
        gate.spawn(Some(b), "t", hold()).unwrap();
        assert_eq!(gate.spawn(Some(b), "t", hold()), Err(GateFull::All(3)));
        assert_eq!(gate.open(), 3);
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        let t0 = std::time::Instant::now();
        while gate.open() > 0 {
            assert!(t0.elapsed() < std::time::Duration::from_secs(5));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // A job that panics gives its place back too.
        gate.spawn(Some(a), "t", || panic!("a job that fails"))
            .unwrap();
        while gate.open() > 0 {
            assert!(t0.elapsed() < std::time::Duration::from_secs(5));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        gate.spawn(Some(a), "t", || {}).unwrap();
    }
}
