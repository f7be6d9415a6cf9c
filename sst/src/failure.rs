//! Failure detection: heartbeats, frozen rows and the failure upcall.
//!
//! A member is suspected, and its row **frozen** (never pushed to again), when
//!
//! * a heartbeat — a write-with-completion of my row's heartbeat counter, sent every
//!   `heartbeat_ms` by the [`FailureDetector`] thread — fails or is not acknowledged within
//!   `sst_poll_cq_timeout_ms` (any [`Sst::push_with_completion`] counts the same way);
//! * the fabric reports its link failed ([`derecho_fabric::Fabric::subscribe_failures`]);
//! * a plain push finds its link failed;
//! * the application says so with [`Sst::report_failure`].
//!
//! Whichever comes first freezes the row and calls the failure upcall ([`Sst::on_failure`]) once
//! for that member, with the member's node id and the reason; later signals for the same member
//! are ignored. Freezing is local to the table: it does not close the fabric link (links outlive
//! views and are shared with other users; the membership protocol decides what a suspicion
//! means). The upcall runs on whichever thread noticed the failure (a fabric receiver thread,
//! the heartbeat thread, the core loop or the application), so it must be quick and must not
//! block; it is a good place to set a suspicion flag in my row and push it.
//!
//! # The defaults and their trade-off
//!
//! `heartbeat_ms = 100` and `sst_poll_cq_timeout_ms = 2000`. A process that is killed is found at
//! once over tcp anyway: the kernel closes its sockets and the fabric reports the link failed.
//! The timeout only matters for a peer that is alive but silent (hung, stopped, partitioned), and
//! then the detection time is the timeout (plus at most one heartbeat period). The original
//! system's sample configuration used a 1 ms heartbeat and a 100 ms timeout; on a loaded 2-core
//! laptop (or a container, upstream issue #81) a receiver thread can easily be descheduled for
//! more than 100 ms, and every such hiccup became a false suspicion that the partition logic
//! turned into a shutdown. Two seconds is far above any scheduling delay we measured here, while a
//! heartbeat every 100 ms costs a few microseconds of CPU per peer per period and keeps an idle
//! process well under 1% CPU. Lower the timeout only on dedicated machines.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use derecho_fabric::sync::{lock, wait_timeout};
use derecho_fabric::NodeId;

use crate::error::SstError;
use crate::push::Targets;
use crate::table::Sst;

/// Called once per failed member with its node id and the reason.
pub type FailureUpcall = Arc<dyn Fn(NodeId, &str) + Send + Sync>;

/// The members reported so far and the upcall to report to.
#[derive(Default)]
pub(crate) struct FailureLog {
    upcall: Option<FailureUpcall>,
    reported: Vec<(NodeId, String)>,
}

impl Sst {
    /// Registers the failure upcall (replacing an earlier one). Failures recorded before it was
    /// registered are reported to it at once, on this thread; each later failure is reported
    /// exactly once.
    pub fn on_failure(&self, upcall: impl Fn(NodeId, &str) + Send + Sync + 'static) {
        let upcall: FailureUpcall = Arc::new(upcall);
        let replay = {
            let mut log = lock(&self.failures);
            log.upcall = Some(Arc::clone(&upcall));
            log.reported.clone()
        };
        for (node, reason) in replay {
            upcall(node, &reason);
        }
    }

    /// Freezes row `rank` and reports its member, unless it is already frozen. Returns whether
    /// this call froze it.
    pub fn freeze(&self, rank: usize, reason: &str) -> bool {
        let Some(flag) = self.frozen.get(rank) else {
            return false;
        };
        if flag.swap(true, Ordering::SeqCst) {
            return false;
        }
        let node = self.members[rank].id;
        tracing::warn!(
            region = %self.region_id,
            node,
            rank,
            reason,
            "sst row frozen: member suspected"
        );
        let upcall = {
            let mut log = lock(&self.failures);
            log.reported.push((node, reason.to_string()));
            log.upcall.clone()
        };
        // Wake the core loop: predicates may read the frozen flags.
        self.doorbell.ring();
        if let Some(up) = upcall {
            up(node, reason);
        }
        true
    }

    /// The application's suspicion of `node`: freezes its row and reports it (once).
    pub fn report_failure(&self, node: NodeId) -> Result<(), SstError> {
        let rank = self.rank_of(node).ok_or(SstError::UnknownNode(node))?;
        self.freeze(rank, "reported by the application");
        Ok(())
    }

    /// Whether row `rank` is frozen (false for ranks out of range).
    pub fn is_frozen(&self, rank: usize) -> bool {
        self.frozen
            .get(rank)
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// The frozen ranks, in order.
    pub fn frozen_ranks(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|r| self.is_frozen(*r))
            .collect()
    }

    /// Every failure reported so far, in order: (node id, reason).
    pub fn failures(&self) -> Vec<(NodeId, String)> {
        lock(&self.failures).reported.clone()
    }

    /// A link failure from the fabric (any link; ignored if the peer is not a member).
    pub(crate) fn link_failed(&self, peer: NodeId, reason: &str) {
        if let Some(rank) = self.rank_of(peer) {
            if rank != self.my_rank {
                self.freeze(rank, &format!("link failed: {reason}"));
            }
        }
    }

    /// One heartbeat round: increments my heartbeat counter and pushes it with completion to
    /// every live member, waiting up to `sst_poll_cq_timeout_ms`. Returns the ranks that failed
    /// (frozen and reported). Does nothing before [`Sst::connect`].
    pub fn heartbeat_once(&self) -> Vec<usize> {
        if !self.is_connected() {
            return Vec::new();
        }
        let hb = self.schema.heartbeat();
        self.set(hb, self.get(hb, self.my_rank).wrapping_add(1));
        match self.push_with_completion(hb, Targets::All, self.config.completion_timeout) {
            Ok(failed) => failed,
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat push failed");
                Vec::new()
            }
        }
    }
}

struct Stop {
    stopped: Mutex<bool>,
    cond: Condvar,
}

/// The heartbeat thread of one table: runs [`Sst::heartbeat_once`] every `heartbeat_ms` and
/// sleeps in between (no busy waiting). Stopped by [`FailureDetector::stop`] or on drop.
#[derive(Debug)]
pub struct FailureDetector {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<u64>>,
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop").finish_non_exhaustive()
    }
}

impl FailureDetector {
    /// Starts the heartbeat thread for `sst`.
    pub fn start(sst: Arc<Sst>) -> Result<Self, SstError> {
        let stop = Arc::new(Stop {
            stopped: Mutex::new(false),
            cond: Condvar::new(),
        });
        let for_thread = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("sst-heartbeat-{}", sst.my_id()))
            .spawn(move || heartbeat_loop(&sst, &for_thread))
            .map_err(|source| SstError::Spawn {
                what: "heartbeat",
                source,
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (at most one completion timeout, if a round is under
    /// way). Returns the number of heartbeat rounds run.
    pub fn stop(mut self) -> u64 {
        self.halt()
    }

    fn halt(&mut self) -> u64 {
        *lock(&self.stop.stopped) = true;
        self.stop.cond.notify_all();
        self.thread
            .take()
            .map_or(0, |t| t.join().unwrap_or_default())
    }
}

impl Drop for FailureDetector {
    fn drop(&mut self) {
        self.halt();
    }
}

fn heartbeat_loop(sst: &Sst, stop: &Stop) -> u64 {
    let period = sst.config.heartbeat;
    let mut rounds = 0u64;
    let mut next = Instant::now();
    loop {
        {
            let mut stopped = lock(&stop.stopped);
            loop {
                if *stopped {
                    return rounds;
                }
                let now = Instant::now();
                if now >= next {
                    break;
                }
                stopped = wait_timeout(&stop.cond, stopped, next - now);
            }
        }
        sst.heartbeat_once();
        rounds += 1;
        // The next round starts one period after this one was due, or now if the round ran
        // long (a slow peer), never earlier than a millisecond from now.
        next = (next + period).max(Instant::now() + Duration::from_millis(1));
    }
}
