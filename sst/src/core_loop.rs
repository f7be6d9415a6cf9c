//! The core loop: [`Sst::step`] on a thread that spins while work arrives and parks when idle.
//!
//! One step evaluates every predicate (see [`crate::predicates`]). The thread runs steps
//! back to back while triggers fire and for a short spin window after the last one
//! ([`CoreLoopConfig::spin`]), which keeps latency low when messages follow each other closely.
//! While spinning it yields the CPU between steps instead of burning it: on a 2-core machine
//! with three busy processes a pure spin starves the fabric's receiver threads (measured: 8 ms
//! instead of 40 µs per round trip), while a yield costs well under a microsecond when the core
//! is otherwise free.
//! Between idle steps it also drives the fabric's progress on the peers' links
//! ([`Sst::poll_links`]), so that on backends whose writes land only while this process makes
//! progress (libfabric's `tcp` provider) the next push lands without waiting for the backend's
//! thread; it still yields every idle step there (measured: yielding every 16th step instead
//! was no faster with 2 or 3 processes on 2 cores).
//! When the window has passed with nothing firing, it parks on the table's doorbell, which is
//! rung by every write the fabric applies to the table (or the barrier region), by every push of
//! this node and by [`Sst::notify`]. The park is bounded ([`CoreLoopConfig::park_timeout`]) so
//! conditions that depend on time are still re-evaluated. A write that lands between a step and
//! the park is never missed: the doorbell epoch is read before the step and the park returns at
//! once if it moved.
//!
//! An idle table therefore costs one step per doorbell ring (heartbeats: one per peer per
//! `heartbeat_ms`) and one per park timeout: well under 1% of a core.
//!
//! The loop owns no protocol logic; it must not be used for blocking work, since every trigger
//! of the table runs on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{ConfigError, SstError};
use crate::table::Sst;

/// How the core loop spins and parks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreLoopConfig {
    /// How long to keep stepping after the last trigger fired before parking (default 200 µs;
    /// at most 10 s). Zero parks as soon as a step fires nothing.
    pub spin: Duration,
    /// Longest park before an unconditional step (default 50 ms; 1 ms to 10 s).
    pub park_timeout: Duration,
}

impl Default for CoreLoopConfig {
    fn default() -> Self {
        Self {
            spin: Duration::from_micros(200),
            park_timeout: Duration::from_millis(50),
        }
    }
}

impl CoreLoopConfig {
    /// Sets the spin window.
    pub fn with_spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Sets the park timeout.
    pub fn with_park_timeout(mut self, timeout: Duration) -> Self {
        self.park_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<(), SstError> {
        if self.spin > Duration::from_secs(10) {
            return Err(SstError::Config(ConfigError::Spin(self.spin)));
        }
        if self.park_timeout < Duration::from_millis(1)
            || self.park_timeout > Duration::from_secs(10)
        {
            return Err(SstError::Config(ConfigError::ParkTimeout(
                self.park_timeout,
            )));
        }
        Ok(())
    }
}

/// Counters of a core loop run, returned by [`CoreLoop::stop`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Steps run.
    pub steps: u64,
    /// Triggers run.
    pub fired: u64,
    /// Times the thread parked.
    pub parks: u64,
    /// Parks that ended because the doorbell rang (the rest timed out).
    pub wakeups: u64,
}

/// A running core loop for one table. Stopped by [`CoreLoop::stop`] or on drop.
#[derive(Debug)]
pub struct CoreLoop {
    sst: Arc<Sst>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<LoopStats>>,
}

impl CoreLoop {
    /// Starts the loop on a new thread.
    pub fn start(sst: Arc<Sst>, config: CoreLoopConfig) -> Result<Self, SstError> {
        config.validate()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&sst), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name(format!("sst-core-{}", sst.my_id()))
            .spawn(move || run(&s, &config, &st))
            .map_err(|source| SstError::Spawn {
                what: "core loop",
                source,
            })?;
        Ok(Self {
            sst,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the loop (after the step in progress, if any) and joins the thread.
    pub fn stop(mut self) -> LoopStats {
        self.halt()
    }

    fn halt(&mut self) -> LoopStats {
        self.stop.store(true, Ordering::SeqCst);
        self.sst.notify();
        self.thread
            .take()
            .map_or_else(LoopStats::default, |t| t.join().unwrap_or_default())
    }
}

impl Drop for CoreLoop {
    fn drop(&mut self) {
        self.halt();
    }
}

/// While spinning over a fabric whose writes land without this process running (shm, RDMA),
/// the core loop yields its CPU once per this many steps that fired nothing; over the others it
/// yields after every such step, so their receiver threads get to run.
const YIELD_EVERY_PASSIVE: u32 = 16;
/// Consecutive steps that fired after which the core loop gives its CPU up once.
const BREATHE_AFTER: u32 = 64;
/// How long the core loop gives its CPU up at most (a doorbell ring ends it sooner).
const BREATHER: Duration = Duration::from_micros(20);

fn run(sst: &Sst, config: &CoreLoopConfig, stop: &AtomicBool) -> LoopStats {
    let doorbell = Arc::clone(sst.doorbell());
    let mut stats = LoopStats::default();
    let mut last_fire = Instant::now();
    let mut hot = false;
    let mut idle_steps = 0u32;
    let mut busy_steps = 0u32;
    let yield_every = if sst.fabric.writes_land_passively() {
        YIELD_EVERY_PASSIVE
    } else {
        1
    };
    loop {
        let seen = doorbell.epoch();
        if stop.load(Ordering::SeqCst) {
            return stats;
        }
        let fired = sst.step();
        stats.steps += 1;
        if fired > 0 {
            stats.fired += fired as u64;
            last_fire = Instant::now();
            hot = true;
            // A predicate that stays true while it waits for others (the view-change protocol
            // does) would keep this thread on its CPU for a whole scheduler tick; let others
            // run now and then. A ring since the step ends the breather at once, so a loop
            // with real work pays nothing.
            busy_steps += 1;
            if busy_steps >= BREATHE_AFTER {
                busy_steps = 0;
                doorbell.wait(seen, BREATHER);
            }
            continue;
        }
        busy_steps = 0;
        if hot && last_fire.elapsed() < config.spin {
            // Spin, yielding the CPU between steps (see `YIELD_EVERY_PASSIVE`): on a machine
            // with fewer cores than busy threads, the fabric's receiver threads must still get
            // to run, while a write that lands in memory by itself is seen within a step.
            idle_steps += 1;
            if sst.poll_links() {
                // Something landed (the fabric's progress ran on this thread): look again.
                continue;
            }
            if idle_steps.is_multiple_of(yield_every) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
            continue;
        }
        hot = false;
        stats.parks += 1;
        if doorbell.wait(seen, config.park_timeout) {
            stats.wakeups += 1;
        }
    }
}
