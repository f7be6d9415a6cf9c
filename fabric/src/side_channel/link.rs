//! What every side-channel link keeps alike: its failure state, its outstanding region lookups,
//! the lookup retry loop, and the cache of the region its peer wrote last.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::connect::LookupBackoff;
use super::frame::DecodeError;
use super::Reporter;
use crate::sync::{lock, wait_timeout};
use crate::{
    CompletionSource, FabricError, Misaddress, NodeId, Region, RegionId, RemoteRegion, WriteRequest,
};

/// A link's peer and the peer's incarnation, whether and why the link failed, the side channel
/// to close when it does, the peer's regions looked up so far, and how many of the link's writes
/// are known to be applied at the peer (the completion source of its signaled writes, whose
/// tickets number the writes from 1).
pub(crate) struct LinkState {
    peer: NodeId,
    incarnation: u64,
    failed: OnceLock<String>,
    remote: Mutex<HashMap<RegionId, RemoteRegion>>,
    control: OnceLock<TcpStream>,
    reporter: Weak<Reporter>,
    applied: AtomicU64,
    applied_lock: Mutex<()>,
    applied_cond: Condvar,
}

impl LinkState {
    /// A live link to incarnation `incarnation` of `peer`, reporting to `reporter` (its
    /// fabric's, see [`super::Hub::reporter`]).
    pub(crate) fn new(peer: NodeId, incarnation: u64, reporter: Weak<Reporter>) -> Self {
        Self {
            peer,
            incarnation,
            failed: OnceLock::new(),
            remote: Mutex::new(HashMap::new()),
            control: OnceLock::new(),
            reporter,
            applied: AtomicU64::new(0),
            applied_lock: Mutex::new(()),
            applied_cond: Condvar::new(),
        }
    }

    /// The same, with `control` to shut down when the link fails.
    pub(crate) fn with_control(
        peer: NodeId,
        incarnation: u64,
        reporter: Weak<Reporter>,
        control: TcpStream,
    ) -> Self {
        let state = Self::new(peer, incarnation, reporter);
        state.set_control(control);
        state
    }

    /// Names the side channel to shut down when the link fails (once).
    pub(crate) fn set_control(&self, control: TcpStream) {
        let _ = self.control.set(control);
    }

    /// Writes a link's debug form: its type `name`, the peer, its incarnation and the failure.
    pub(crate) fn describe(&self, f: &mut std::fmt::Formatter<'_>, name: &str) -> std::fmt::Result {
        f.debug_struct(name)
            .field("peer", &self.peer)
            .field("incarnation", &self.incarnation)
            .field("failed", &self.failed.get())
            .finish_non_exhaustive()
    }

    /// The peer.
    pub(crate) fn peer(&self) -> NodeId {
        self.peer
    }

    /// The peer's incarnation.
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The peer's region `id`: from the lookups of this link while `still_valid` says so, else
    /// asked with `ask(deadline)` (again, with growing pauses, until `timeout`: a peer may
    /// register it a little later) and taken in with `accept`, which gives the region to keep.
    pub(crate) fn remote_region<A>(
        &self,
        id: RegionId,
        timeout: Duration,
        still_valid: impl Fn(&RemoteRegion) -> bool,
        mut ask: impl FnMut(Instant) -> Result<Option<A>, FabricError>,
        accept: impl FnOnce(A) -> Result<RemoteRegion, FabricError>,
    ) -> Result<RemoteRegion, FabricError> {
        let cached = lock(&self.remote).get(&id).copied();
        if let Some(r) = cached {
            if still_valid(&r) {
                return Ok(r);
            }
            lock(&self.remote).remove(&id);
        }
        let deadline = Instant::now() + timeout;
        let mut backoff = LookupBackoff::new();
        let answer = loop {
            let attempt_deadline = (Instant::now() + Duration::from_millis(200)).min(deadline);
            if let Some(found) = ask(attempt_deadline)? {
                break found;
            }
            if Instant::now() >= deadline {
                return Err(FabricError::NoSuchRegion {
                    peer: self.peer,
                    region: id,
                });
            }
            backoff.pause();
        };
        let found = accept(answer)?;
        lock(&self.remote).insert(id, found);
        Ok(found)
    }

    /// Forgets the lookups of the peer's region with key `key` (the peer revoked it).
    #[cfg(any(feature = "libfabric", feature = "verbs"))]
    pub(crate) fn forget_key(&self, key: u64) {
        lock(&self.remote).retain(|_, r| r.key != key);
    }

    /// Whether the link failed.
    pub(crate) fn is_failed(&self) -> bool {
        self.failed.get().is_some()
    }

    /// Why the link failed, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    /// The error callers get from a failed link.
    pub(crate) fn error(&self) -> FabricError {
        FabricError::LinkFailed {
            peer: self.peer,
            reason: self.failure().unwrap_or_else(|| "unknown".to_string()),
        }
    }

    /// Marks the link failed for `reason`, once: shuts its side channel down, wakes the
    /// writers waiting for completions, runs `wake` (the backend wakes its own waiters), and,
    /// if `report`, tells the fabric's failure subscribers (unless the fabric is gone or
    /// shutting down). Later calls do nothing.
    pub(crate) fn fail(&self, reason: &str, report: bool, wake: impl FnOnce()) {
        if self.failed.set(reason.to_string()).is_err() {
            return;
        }
        if let Some(c) = self.control.get() {
            // The link is failed either way; shutting the socket down only wakes its reader.
            let _ = c.shutdown(Shutdown::Both);
        }
        self.wake_applied();
        wake();
        if report {
            if let Some(r) = self.reporter.upgrade() {
                r.report(self.peer, reason);
            }
        }
    }

    /// Records that every write up to ticket `upto` is applied at the peer.
    pub(crate) fn applied(&self, upto: u64) {
        if self.applied.fetch_max(upto, Ordering::SeqCst) < upto {
            self.wake_applied();
        }
    }

    fn wake_applied(&self) {
        let _g = lock(&self.applied_lock);
        self.applied_cond.notify_all();
    }
}

impl CompletionSource for LinkState {
    fn poll_ticket(&self, ticket: u64) -> Option<Result<(), FabricError>> {
        if self.applied.load(Ordering::SeqCst) >= ticket {
            Some(Ok(()))
        } else if self.is_failed() {
            Some(Err(self.error()))
        } else {
            None
        }
    }

    fn wait_ticket(&self, ticket: u64, timeout: Duration) -> Result<(), FabricError> {
        let deadline = Instant::now() + timeout;
        let mut g = lock(&self.applied_lock);
        loop {
            if let Some(r) = self.poll_ticket(ticket) {
                return r;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(FabricError::Timeout {
                    what: format!("completion of a write to node {}", self.peer),
                    after: timeout,
                });
            }
            g = wait_timeout(&self.applied_cond, g, deadline - now);
        }
    }
}

/// The error of a write to a region of the peer that was not looked up on this link.
pub(crate) fn not_looked_up(req: &WriteRequest<'_>, peer: NodeId) -> FabricError {
    FabricError::Misaddressed(Misaddress::NotLookedUp {
        region: req.dst.id,
        key: req.dst.key,
        peer,
    })
}

/// Region lookups sent to the peer and not answered yet, by query id; an answer is `A`.
pub(crate) struct Queries<A> {
    pending: Mutex<HashMap<u32, Option<A>>>,
    answered: Condvar,
    next: AtomicU32,
}

impl<A: Clone> Queries<A> {
    /// No lookups yet.
    pub(crate) fn new() -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            answered: Condvar::new(),
            next: AtomicU32::new(1),
        }
    }

    /// Sends one lookup with `send(query id)` and waits for its answer until `deadline`
    /// (`Ok(None)` then) or the link fails.
    pub(crate) fn ask(
        &self,
        state: &LinkState,
        deadline: Instant,
        send: impl FnOnce(u32) -> Result<(), FabricError>,
    ) -> Result<Option<A>, FabricError> {
        let qid = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending).insert(qid, None);
        if let Err(e) = send(qid) {
            lock(&self.pending).remove(&qid);
            return Err(e);
        }
        let mut q = lock(&self.pending);
        loop {
            if state.is_failed() {
                q.remove(&qid);
                return Err(state.error());
            }
            if let Some(Some(answer)) = q.get(&qid) {
                let answer = answer.clone();
                q.remove(&qid);
                return Ok(Some(answer));
            }
            let now = Instant::now();
            if now >= deadline {
                q.remove(&qid);
                return Ok(None);
            }
            q = wait_timeout(
                &self.answered,
                q,
                (deadline - now).min(Duration::from_millis(20)),
            );
        }
    }

    /// Records the peer's answer to lookup `qid` (ignored if nobody waits for it any more).
    pub(crate) fn answer(&self, qid: u32, answer: A) {
        let mut q = lock(&self.pending);
        if let Some(slot) = q.get_mut(&qid) {
            *slot = Some(answer);
        }
        self.answered.notify_all();
    }

    /// Wakes every waiter (the link failed).
    pub(crate) fn wake(&self) {
        let _g = lock(&self.pending);
        self.answered.notify_all();
    }
}

/// The region a peer wrote last, kept while the fabric's regions do not change, so that a
/// stream of writes into one region does not take the regions lock for each.
#[derive(Default)]
pub(crate) struct RegionCache {
    last: Option<(u64, u64, Arc<Region>)>,
}

impl RegionCache {
    /// The region with `key`, from the cache if `generation` (the fabric's count of region
    /// changes) still matches, else from `find`.
    pub(crate) fn get(
        &mut self,
        key: u64,
        generation: u64,
        find: impl FnOnce(u64) -> Option<Arc<Region>>,
    ) -> Option<Arc<Region>> {
        if let Some((k, g, r)) = &self.last {
            if *k == key && *g == generation {
                return Some(Arc::clone(r));
            }
        }
        let found = find(key);
        if let Some(r) = &found {
            self.last = Some((key, generation, Arc::clone(r)));
        }
        found
    }
}

/// Why a link's receiving thread failed the link (its text is the link's failure reason). The
/// shm and rdma links read a side channel; the tcp link reads its frames from the connection that
/// also carries the writes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReceiveFailure {
    /// The peer closed the side channel.
    #[error("side channel closed by peer")]
    Closed,
    /// A malformed message arrived.
    #[error("protocol violation: {0}")]
    Malformed(#[source] std::io::Error),
    /// Reading failed.
    #[error("side channel receive failed: {0}")]
    Io(#[source] std::io::Error),
    /// The peer said goodbye: it shut its fabric down.
    #[error("peer shut down its fabric")]
    Goodbye,
    /// A well-formed message of a kind the link does not handle.
    #[error("protocol violation: message kind {0}")]
    UnknownKind(u8),
    /// The peer closed the tcp connection.
    #[error("connection closed by peer")]
    ConnectionClosed,
    /// Reading from the tcp connection failed.
    #[error("receive failed: {0}")]
    Receive(#[source] std::io::Error),
    /// A tcp frame header that does not decode.
    #[error("protocol violation: {0}")]
    BadFrame(#[source] DecodeError),
    /// A tcp write frame whose range does not lie inside the region it addresses.
    #[error(
        "protocol violation: write of {len} bytes at offset {offset} outside {region} \
         ({region_len} bytes)"
    )]
    WriteOutOfRange {
        /// Bytes written.
        len: u64,
        /// Offset in the region.
        offset: u64,
        /// The region.
        region: RegionId,
        /// Its size.
        region_len: usize,
    },
    /// A tcp write frame to an unregistered region, too large to be read and discarded.
    #[error("protocol violation: write of {len} bytes")]
    WriteTooLarge {
        /// Bytes written.
        len: u64,
    },
    /// A well-formed tcp frame of a kind the link does not handle.
    #[error("protocol violation: frame kind {0}")]
    UnknownFrameKind(u8),
}

impl ReceiveFailure {
    /// Classifies a failed read of a side-channel message.
    pub(crate) fn of_read(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ReceiveFailure::Closed,
            std::io::ErrorKind::InvalidData => ReceiveFailure::Malformed(e),
            _ => ReceiveFailure::Io(e),
        }
    }

    /// Classifies a failed read of a tcp frame header.
    pub(crate) fn of_connection_read(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ReceiveFailure::ConnectionClosed,
            _ => ReceiveFailure::Receive(e),
        }
    }
}
