//! Doorbells: how a parked poller learns that a write landed.
//!
//! Readers of a region poll memory, but polling forever burns a core. A [`Doorbell`] lets a
//! poller park instead: it notes the current [`Doorbell::epoch`], checks memory, and if there was
//! no work calls [`Doorbell::wait`] with that epoch. Backends call [`Doorbell::ring`] after every
//! write they apply. Ringing costs one atomic increment when nobody sleeps; the mutex and condvar
//! are only touched when a poller is parked.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::region::lock;

/// A wake-up signal shared between the backend that applies writes and the threads that poll.
#[derive(Debug, Default)]
pub struct Doorbell {
    epoch: AtomicU64,
    sleepers: AtomicUsize,
    mutex: Mutex<()>,
    cond: Condvar,
}

impl Doorbell {
    /// A new doorbell at epoch 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of rings so far. Read it *before* checking for work and pass it to
    /// [`Doorbell::wait`], so a ring between the check and the wait is never lost.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Signals that something happened; wakes every parked waiter.
    pub fn ring(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            // Taking the mutex orders this notify after a waiter's epoch check.
            let _guard = lock(&self.mutex);
            self.cond.notify_all();
        }
    }

    /// Parks until the epoch moves past `seen` or `timeout` passes. Returns true if it moved.
    pub fn wait(&self, seen: u64, timeout: Duration) -> bool {
        if self.epoch() != seen {
            return true;
        }
        let deadline = Instant::now() + timeout;
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let mut guard = lock(&self.mutex);
        let moved = loop {
            if self.epoch.load(Ordering::SeqCst) != seen {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            guard = match self.cond.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        };
        drop(guard);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn ring_before_wait_is_not_lost() {
        let d = Doorbell::new();
        let seen = d.epoch();
        d.ring();
        assert!(d.wait(seen, Duration::from_secs(5)));
    }

    #[test]
    fn wait_times_out_without_ring() {
        let d = Doorbell::new();
        assert!(!d.wait(d.epoch(), Duration::from_millis(20)));
    }

    #[test]
    fn ring_wakes_a_parked_thread() {
        let d = Arc::new(Doorbell::new());
        let seen = d.epoch();
        let d2 = Arc::clone(&d);
        let t = std::thread::spawn(move || d2.wait(seen, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(30));
        d.ring();
        assert!(t.join().unwrap_or(false));
    }
}
