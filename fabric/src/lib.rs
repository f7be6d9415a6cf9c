//! The transport contract of derecho-rs: registered memory, one-sided writes, ordered links.
//!
//! Everything above this crate (the shared state table, RDMC, the multicast and membership
//! protocols) needs exactly what this crate promises, and nothing more:
//!
//! * **Regions** ([`Region`]): a process registers fixed-size, aligned memory regions under names
//!   it chooses ([`RegionId`]). A peer looks a region up by name over its link and gets a
//!   [`RemoteRegion`] (key and address) to write into.
//! * **One-sided writes** ([`Link::write`]): copy `len` bytes from one of my regions into a
//!   peer's region. No code of the peer's application runs to receive them.
//! * **Ordering**: writes on one link are applied in issue order; a later write is never visible
//!   before an earlier one, and an aligned 8-byte word is never torn. This is what makes the
//!   "payload first, counter last" discipline of the upper layers correct. See [`region`] for
//!   how memory written by a peer is read without data races.
//! * **Completion** ([`Link::write_signaled`], [`Completion`]): a signaled write completes when
//!   its bytes (and every earlier write's) are applied remotely, or fails after a timeout.
//! * **Notification**: a write may carry a 32-bit immediate value; the owner of the target region
//!   finds it in [`Region::next_notification`] (like an RDMA write-with-immediate).
//! * **Failure**: a link that fails (connection lost, peer crashed, protocol violation, or
//!   [`Link::fail`]) is reported once, with the peer's id, to every subscriber
//!   ([`Fabric::subscribe_failures`]).
//! * **Wake-up** ([`Doorbell`]): every applied write rings the target region's doorbell, so a
//!   poller can park instead of spinning.
//!
//! The shape follows connection-oriented RDMA (libfabric `FI_EP_MSG` with `FI_RMA`, or verbs RC
//! queue pairs): memory registration yields keys, names and keys travel over a side channel,
//! completions are per write. Backends:
//!
//! * [`tcp`] (default): pure Rust, one TCP stream per pair of nodes, framed writes applied in
//!   order by a receiver thread; no system libraries.
//! * [`shm`]: processes on one host map each other's regions (files in `/dev/shm`) and write
//!   into them directly; a small side channel carries lookups, wake-ups and failures.
//! * [`sim`]: in-process and deterministic for a seed, with virtual time, per-link delays, cut
//!   links and crashed nodes; used by the tests of every layer.
//!
//! The [`conformance`] module is the test suite every backend must pass.

pub mod backends;
pub mod conformance;
mod doorbell;
mod error;
mod failure;
pub mod fuzz;
pub mod fuzz_targets;
#[cfg(feature = "libfabric")]
pub mod libfabric;
pub mod probe;
#[cfg(any(feature = "libfabric", feature = "verbs"))]
mod rdma;
pub mod region;
pub mod secure;
pub mod shm;
mod side_channel;
pub mod sim;
pub mod sync;
pub mod tcp;
#[cfg(feature = "verbs")]
pub mod verbs;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use doorbell::Doorbell;
pub use error::{FabricError, Misaddress};
pub use failure::{FailureHandler, SubscriptionId};
pub use region::{Notification, Region, RegionId, RegionSpec, RemoteRegion};

/// Identifies a process in a group (the `local_id` of its configuration).
pub type NodeId = u32;

/// A process's attachment to the network: its registered regions and its links to peers.
///
/// One fabric per process serves every view: regions come and go with views, links persist
/// while the peer lives.
pub trait Fabric: Send + Sync + fmt::Debug {
    /// This process's node id.
    fn local_id(&self) -> NodeId;

    /// The backend's name (`tcp`, `sim`, ...), for logs and benchmark output.
    fn backend(&self) -> &'static str;

    /// Where peers reach this fabric (the listening address), if it has one.
    fn local_addr(&self) -> Option<SocketAddr>;

    /// Whether a peer's write lands in this process's memory without any thread of this
    /// process running (shared memory, RDMA hardware). Where it does not (tcp, libfabric's
    /// `tcp` provider), a receiver or progress thread must get a CPU for writes to land, so a
    /// thread spinning on memory should give its CPU up often. The default is `false`.
    fn writes_land_passively(&self) -> bool {
        false
    }

    /// Registers a region that peers may write into.
    fn register(&self, spec: RegionSpec) -> Result<Arc<Region>, FabricError>;

    /// Removes a region from the table peers write into. Writes that arrive for it afterwards
    /// are discarded. The memory stays valid while `Arc<Region>` handles exist.
    fn deregister(&self, id: RegionId) -> Result<(), FabricError>;

    /// Returns the link to `peer`, establishing it if needed. `addr` is the peer's listening
    /// address. Exactly one side dials (the one with the higher node id); the other waits for the
    /// incoming connection, so both may call `connect` at once. Waits at most `timeout`.
    fn connect(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Arc<dyn Link>, FabricError>;

    /// The current link to `peer`, if one is established (it may have failed since).
    fn link(&self, peer: NodeId) -> Option<Arc<dyn Link>>;

    /// Calls `handler(peer, reason)` once for every link that fails from now on. Handlers run
    /// on the backend's threads and must not block.
    fn subscribe_failures(&self, handler: FailureHandler) -> SubscriptionId;

    /// Stops calling a handler.
    fn unsubscribe_failures(&self, id: SubscriptionId);

    /// Monotonic time of this fabric: real time since start for real backends, virtual time
    /// for [`sim`]. Protocol code takes its time from here.
    fn now(&self) -> Duration;

    /// Closes every link (peers see them fail) and stops the backend's threads. Idempotent.
    fn shutdown(&self);
}

/// One reliable, ordered connection to a peer.
pub trait Link: Send + Sync + fmt::Debug {
    /// The peer's node id.
    fn peer(&self) -> NodeId;

    /// Looks up the peer's region named `id`, waiting up to `timeout` for the peer to register
    /// it. Results are cached per link.
    fn remote_region(&self, id: RegionId, timeout: Duration) -> Result<RemoteRegion, FabricError>;

    /// Posts a one-sided write. Returns once the write is handed to the transport (it may block,
    /// bounded by the backend's send timeout, while the transport is full).
    fn write(&self, req: &WriteRequest<'_>) -> Result<(), FabricError>;

    /// Posts a write whose remote application can be awaited through the returned
    /// [`Completion`].
    fn write_signaled(&self, req: &WriteRequest<'_>) -> Result<Completion, FabricError>;

    /// Why the link failed, if it has.
    fn failure(&self) -> Option<String>;

    /// Declares the link failed (for example after a completion timed out). The failure is
    /// reported to subscribers once; later calls do nothing.
    fn fail(&self, reason: &str);

    /// Drives the backend's progress for this link on the calling thread, without blocking.
    ///
    /// On backends whose writes land only while this process makes progress (libfabric's
    /// `tcp` provider, see [`Fabric::writes_land_passively`]), a thread that spins on memory
    /// calls this between looks, so that the peer's writes land at once instead of when the
    /// backend's own thread next gets a CPU. Returns whether anything happened (a write landed
    /// or a completion arrived). Never call it in a loop without a bound or a park: it does not
    /// wait. The default does nothing and returns `false`.
    fn poll_progress(&self) -> bool {
        false
    }
}

/// A one-sided write: `len` bytes from `src` at `src_offset` into `dst` at `dst_offset`,
/// optionally carrying an immediate value.
#[derive(Clone, Copy, Debug)]
pub struct WriteRequest<'a> {
    /// My region holding the bytes.
    pub src: &'a Region,
    /// Offset of the bytes in `src`.
    pub src_offset: usize,
    /// The peer's region to write into (from [`Link::remote_region`] on the same link).
    pub dst: &'a RemoteRegion,
    /// Offset in `dst`.
    pub dst_offset: usize,
    /// Number of bytes.
    pub len: usize,
    /// Immediate value delivered to the owner of `dst` as a [`Notification`].
    pub imm: Option<u32>,
}

impl<'a> WriteRequest<'a> {
    /// A write of `len` bytes at the same offset in source and destination (the usual case for
    /// mirrored tables such as the SST).
    pub fn mirrored(src: &'a Region, dst: &'a RemoteRegion, offset: usize, len: usize) -> Self {
        Self {
            src,
            src_offset: offset,
            dst,
            dst_offset: offset,
            len,
            imm: None,
        }
    }

    /// A write between arbitrary offsets.
    pub fn new(
        src: &'a Region,
        src_offset: usize,
        dst: &'a RemoteRegion,
        dst_offset: usize,
        len: usize,
    ) -> Self {
        Self {
            src,
            src_offset,
            dst,
            dst_offset,
            len,
            imm: None,
        }
    }

    /// Attaches an immediate value.
    pub fn with_imm(mut self, imm: u32) -> Self {
        self.imm = Some(imm);
        self
    }

    /// Checks both ranges and that `dst` belongs to `peer`; backends call this before posting.
    pub fn validate(&self, peer: NodeId) -> Result<(), FabricError> {
        if self.dst.owner != peer {
            return Err(FabricError::Misaddressed(Misaddress::WrongOwner {
                region: self.dst.id,
                owner: self.dst.owner,
                peer,
            }));
        }
        self.src.check_range(self.src_offset, self.len)?;
        match self.dst_offset.checked_add(self.len) {
            Some(end) if end <= self.dst.len => Ok(()),
            _ => Err(FabricError::OutOfBounds {
                region: self.dst.id,
                offset: self.dst_offset,
                len: self.len,
                region_len: self.dst.len,
            }),
        }
    }
}

/// Something a [`Completion`] can wait on; implemented by each backend.
pub trait CompletionSource: Send + Sync {
    /// The outcome of write `ticket`, if known.
    fn poll_ticket(&self, ticket: u64) -> Option<Result<(), FabricError>>;
    /// Waits up to `timeout` for the outcome of write `ticket`.
    fn wait_ticket(&self, ticket: u64, timeout: Duration) -> Result<(), FabricError>;
}

/// The pending remote completion of a signaled write.
pub struct Completion {
    source: Arc<dyn CompletionSource>,
    ticket: u64,
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

impl Completion {
    /// Wraps a backend's completion source and the write's ticket.
    pub fn new(source: Arc<dyn CompletionSource>, ticket: u64) -> Self {
        Self { source, ticket }
    }

    /// The outcome, if already known.
    pub fn poll(&self) -> Option<Result<(), FabricError>> {
        self.source.poll_ticket(self.ticket)
    }

    /// Waits until the write is applied remotely, the link fails, or `timeout` passes
    /// ([`FabricError::Timeout`]; the caller decides whether that means the peer failed).
    pub fn wait(&self, timeout: Duration) -> Result<(), FabricError> {
        self.source.wait_ticket(self.ticket, timeout)
    }
}
