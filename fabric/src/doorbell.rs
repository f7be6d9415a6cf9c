//! Doorbells: how a parked poller learns that a write landed.
//!
//! Readers of a region poll memory, but polling forever burns a core. A [`Doorbell`] lets a
//! poller park instead: it notes the current [`Doorbell::epoch`], checks memory, and if there was
//! no work calls [`Doorbell::wait`] with that epoch. Backends call [`Doorbell::ring`] after every
//! write they apply. Ringing costs one atomic increment when nobody sleeps; the mutex and condvar
//! are only touched when a poller is parked.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::sync::lock;

/// Told when a poller parks on a doorbell and when it wakes: a backend whose rings need a
/// thread of its own (the shm bell thread) uses it to wake that thread only while someone
/// sleeps.
pub(crate) trait ParkListener: Send + Sync {
    /// A poller is about to sleep (`true`) or has woken (`false`).
    fn parking(&self, parked: bool);
}

/// A wake-up signal shared between the backend that applies writes and the threads that poll.
#[derive(Default)]
pub struct Doorbell {
    epoch: AtomicU64,
    sleepers: AtomicUsize,
    mutex: Mutex<()>,
    cond: Condvar,
    /// Listeners by an id of their owner (one per fabric), with a fast check for none.
    listeners: Mutex<Vec<(u64, Weak<dyn ParkListener>)>>,
    has_listeners: AtomicBool,
}

impl std::fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doorbell")
            .field("epoch", &self.epoch)
            .field("sleepers", &self.sleepers)
            .finish_non_exhaustive()
    }
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

    /// Adds `listener` (once per `owner` id) to be told when pollers park and wake.
    pub(crate) fn add_park_listener(&self, owner: u64, listener: Weak<dyn ParkListener>) {
        let mut l = lock(&self.listeners);
        l.retain(|(_, w)| w.strong_count() > 0);
        if !l.iter().any(|(id, _)| *id == owner) {
            l.push((owner, listener));
        }
        self.has_listeners.store(true, Ordering::SeqCst);
    }

    fn tell_listeners(&self, parked: bool) {
        if !self.has_listeners.load(Ordering::SeqCst) {
            return;
        }
        let listeners: Vec<_> = lock(&self.listeners)
            .iter()
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        for l in listeners {
            l.parking(parked);
        }
    }

    /// Calls `attempt` until it yields a value or `timeout` passes (then `Ok(None)`), parking
    /// on this doorbell between attempts, at most `nap` at a time for progress that does not
    /// ring it. An error from `attempt` ends the wait at once. The bounded retry loop of every
    /// sender that waits for window space.
    pub fn retry<T, E>(
        &self,
        timeout: Duration,
        nap: Duration,
        mut attempt: impl FnMut() -> Result<Option<T>, E>,
    ) -> Result<Option<T>, E> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.epoch();
            if let Some(value) = attempt()? {
                return Ok(Some(value));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.wait(seen, (deadline - now).min(nap));
        }
    }

    /// Parks until the epoch moves past `seen` or `timeout` passes. Returns true if it moved.
    pub fn wait(&self, seen: u64, timeout: Duration) -> bool {
        if self.epoch() != seen {
            return true;
        }
        let deadline = Instant::now() + timeout;
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // Before the epoch is checked under the lock: a listener that has a ring pending
        // delivers it now.
        self.tell_listeners(true);
        let mut guard = lock(&self.mutex);
        let moved = loop {
            if self.epoch.load(Ordering::SeqCst) != seen {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            guard = crate::sync::wait_timeout(&self.cond, guard, deadline - now);
        };
        drop(guard);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        self.tell_listeners(false);
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
