//! What the RDMA-style backends (libfabric, verbs) share: a TCP side channel per pair of nodes,
//! registered regions with keys, lookups, revocation, completions and notifications. A backend
//! supplies a [`Transport`]: memory registration, connection set-up from the side channel's
//! handshake data, posting a write, and a progress thread that reports completions and remote
//! writes through [`Events`].
//!
//! * **Handshake**: the node with the higher id dials the side channel and sends a hello (node
//!   ids, version, incarnation, and its transport's connection data, e.g. a queue pair number);
//!   the other answers with a welcome carrying its own data (e.g. a libfabric endpoint name).
//!   Both then complete the transport connection ([`Transport::establish`]).
//! * **Lookup**: QUERY(region id) is answered with the region's remote key, address, length and
//!   notification handle.
//! * **Writes**: every write carries 64 bits of remote completion data: the target region's
//!   handle (31 bits), a flag saying whether an immediate is present, and the 32-bit immediate.
//!   The target's progress thread turns it into a doorbell ring and, with the flag, a
//!   [`crate::Notification`] — so writes land and wake pollers without the target application
//!   doing anything. A signaled write asks the transport for delivery completion. Where the
//!   transport does not report the length of a remote write (libfabric's `tcp` provider), a
//!   write with an immediate is preceded by a zero-length write whose completion data carries
//!   the length (writes complete in order on a connection).
//! * **Completions**: a transport reports the completion of every signaled write, and a
//!   completion covers every write posted before it on the same endpoint (writes are applied in
//!   order, so a write known to be applied remotely implies all earlier ones were). A transport
//!   may leave unsignaled writes without completions; where a completion of them is needed
//!   (a revocation, a signaled write that is discarded) the link posts a *fence*: a zero-length
//!   signaled write with no region handle, which the target ignores.
//! * **Deregistration**: the owner sends REVOKE(key) to every peer and waits (bounded) for
//!   REVOKED: a peer marks the key revoked under its send lock (later writes to it are
//!   discarded locally, as the contract asks) and answers once its earlier writes have
//!   completed. Then the registration is closed.
//! * **Failure**: the side channel closing, a transport error, or a completion error fails the
//!   link, reported once.
//!
//! Like on RDMA hardware, the source bytes of a write are read by the transport until the write
//! completes, except for writes up to the transport's inject size, which are copied when posted.

pub(crate) mod wire;

use std::collections::{BTreeSet, HashMap};
use std::io::BufReader;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use wire::{kind, Msg, MAGIC, VERSION};

use crate::secure::{Credentials, ReadHalf, Stream, WriteHalf};
use crate::side_channel::link::{not_looked_up, LinkState, Queries, ReceiveFailure};
use crate::side_channel::regions::RegionTable;
use crate::side_channel::{self, HelloRefusal, Hub, HubConfig, Refused, SideLink};
use crate::sync::{lock, read_lock, wait_timeout, write_lock};
use crate::{
    CompletionSource, FabricError, Misaddress, NodeId, Notification, Region, RegionId, RegionSpec,
    RemoteRegion, WriteRequest,
};

/// Flag bit of the completion data: the write carries an immediate value.
const DATA_IMM: u64 = 1 << 63;
/// Flag bit of the completion data: a zero-length write announcing the length of the next
/// write with an immediate (bits 0..62), for transports that do not report lengths.
const DATA_LEN: u64 = 1 << 62;
/// Largest notification handle (30 bits).
const MAX_HANDLE: u32 = 0x3fff_ffff;
/// Completion data of a fence: handle 0, which no region has.
const DATA_FENCE: u64 = 0;
/// Yields before a poster waiting for room in a full send queue starts sleeping.
const FULL_YIELDS: u32 = 8;
/// Longest sleep between two attempts to post into a full send queue.
const FULL_MAX_NAP: Duration = Duration::from_micros(500);

/// A memory registration: what the transport needs locally, and what a peer needs to write.
pub(crate) struct Registered<M> {
    pub mr: M,
    /// Remote key peers address the region with.
    pub rkey: u64,
    /// Base address peers add offsets to (0 when the transport addresses by offset).
    pub addr: u64,
}

/// One write handed to a transport.
pub(crate) struct Post<'a, M> {
    /// Registration of the source bytes (`None` for a zero-length fence, which has none).
    pub mr: Option<&'a M>,
    pub local: *const u8,
    pub len: usize,
    pub remote_addr: u64,
    pub rkey: u64,
    /// 64 bits of remote completion data.
    pub data: u64,
    pub ticket: u64,
    /// Whether the transport must report the write's completion (through [`Events::sent`])
    /// once its bytes are applied remotely. Other writes may complete silently.
    pub signaled: bool,
}

/// Why a transport refused a write.
pub(crate) enum PostError {
    /// The send queue is full: retry once completions have been reaped.
    Full,
    /// The endpoint is broken.
    Failed(String),
}

/// What a transport's progress thread reports to its link.
pub(crate) trait Events: Send + Sync {
    /// A peer's write landed; `data` is its completion data, `len` its length if the transport
    /// knows it.
    fn remote_write(&self, data: u64, len: Option<usize>);
    /// As [`Events::remote_write`], but without waiting: if the write carries an immediate
    /// and the target region's notification queue is full, does nothing and returns false
    /// (the caller hands the write to a thread that may wait).
    fn try_remote_write(&self, data: u64, len: Option<usize>) -> bool;
    /// The local write `ticket` completed, and with it every write posted before it on the
    /// endpoint.
    fn sent(&self, ticket: u64);
    /// The endpoint failed.
    fn failed(&self, reason: String);
    /// Whether the link is finished (the progress thread exits).
    fn stopped(&self) -> bool;
}

/// A one-sided-write transport.
pub(crate) trait Transport: Send + Sync + Sized + 'static {
    /// A memory registration; dropping it deregisters.
    type Mr: Send + Sync + 'static;
    /// A connected endpoint with its progress thread; dropping it disconnects.
    type Endpoint: Send + Sync + 'static;
    /// A connection being set up.
    type Pending: Send + 'static;

    /// The backend's name.
    fn name(&self) -> &'static str;
    /// Whether remote-write completions report the write's length.
    fn reports_len(&self) -> bool;
    /// Whether a peer's write lands in registered memory without any thread of this process
    /// running (an RDMA NIC writes it by itself), see [`crate::Fabric::writes_land_passively`].
    fn writes_land_passively(&self) -> bool;
    /// Drives the endpoint's progress on the calling thread without blocking (see
    /// [`crate::Link::poll_progress`]); returns whether anything happened. The default, for
    /// transports whose writes land by themselves, does nothing.
    fn poll_progress(_ep: &Self::Endpoint) -> bool {
        false
    }
    /// Registers `region` for local use and remote writes.
    fn register(&self, region: &Region) -> Result<Registered<Self::Mr>, FabricError>;
    /// Dialing side: prepares an endpoint; returns the data for the hello.
    fn dial_prepare(&self, peer: NodeId) -> Result<(Self::Pending, Vec<u8>), FabricError>;
    /// Accepting side: prepares an endpoint from the hello's data; returns the welcome's data.
    fn accept_prepare(
        &self,
        peer: NodeId,
        hello: &[u8],
    ) -> Result<(Self::Pending, Vec<u8>), FabricError>;
    /// Completes the connection (`welcome` is the accepting side's data, given to the dialing
    /// side) and starts the endpoint's progress thread.
    fn establish(
        &self,
        pending: Self::Pending,
        welcome: Option<&[u8]>,
        timeout: Duration,
        events: Arc<dyn Events>,
    ) -> Result<Self::Endpoint, FabricError>;
    /// Posts one write.
    fn post(&self, ep: &Self::Endpoint, w: &Post<'_, Self::Mr>) -> Result<(), PostError>;
    /// Stops the endpoint's progress thread and disconnects (also done on drop).
    fn close(&self, ep: &Self::Endpoint);
}

/// Settings shared by the RDMA-style backends.
#[derive(Clone, Debug)]
pub(crate) struct Common {
    pub local_id: NodeId,
    pub listen: SocketAddr,
    pub handshake_timeout: Duration,
    pub send_timeout: Duration,
    pub max_links: usize,
    pub max_handshakes: usize,
    pub credentials: Credentials,
}

impl Common {
    /// Settings with the default bounds (1024 links, 32 concurrent handshakes).
    pub(crate) fn new(
        local_id: NodeId,
        listen: SocketAddr,
        handshake_timeout: Duration,
        send_timeout: Duration,
        credentials: Credentials,
    ) -> Self {
        Self {
            local_id,
            listen,
            handshake_timeout,
            send_timeout,
            max_links: 1024,
            max_handshakes: 32,
            credentials,
        }
    }
}

/// Joins an endpoint's progress thread, taken from `slot`, unless this is that thread (an
/// endpoint may be closed from its own progress thread when the link fails there).
pub(crate) fn join_progress_thread(slot: &Mutex<Option<std::thread::JoinHandle<()>>>) {
    let handle = lock(slot).take();
    if let Some(h) = handle {
        if h.thread().id() != std::thread::current().id() {
            // A panic on that thread was printed by the panic hook when it happened; the
            // endpoint is closing either way.
            let _ = h.join();
        }
    }
}

struct Owned<M> {
    region: Arc<Region>,
    reg: Registered<M>,
    handle: u32,
}

struct Regions<M> {
    table: RegionTable<Arc<Owned<M>>>,
    by_handle: HashMap<u32, u64>,
}

/// State shared by a fabric, its links and its threads.
pub(crate) struct Inner<T: Transport> {
    pub(crate) transport: T,
    common: Common,
    pub(crate) hub: Hub<RdmaLink<T>>,
    regions: RwLock<Regions<T::Mr>>,
    next_handle: AtomicU32,
}

/// An RDMA-style fabric over transport `T`. Cheap to clone.
pub(crate) struct RdmaFabric<T: Transport> {
    pub(crate) inner: Arc<Inner<T>>,
}

impl<T: Transport> Clone for RdmaFabric<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: Transport> std::fmt::Debug for RdmaFabric<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaFabric")
            .field("backend", &self.inner.transport.name())
            .field("local_id", &self.inner.common.local_id)
            .field("addr", &self.inner.hub.local_addr())
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Inner<T> {
    fn is_shut_down(&self) -> bool {
        self.hub.is_shut_down()
    }

    fn local_region(&self, key: u64) -> Option<Arc<Owned<T::Mr>>> {
        read_lock(&self.regions).table.get(key).cloned()
    }

    fn region_by_handle(&self, handle: u32) -> Option<Arc<Region>> {
        let r = read_lock(&self.regions);
        let key = r.by_handle.get(&handle)?;
        r.table.get(*key).map(|o| Arc::clone(&o.region))
    }

    fn region_by_id(&self, id: RegionId) -> Option<Arc<Owned<T::Mr>>> {
        read_lock(&self.regions)
            .table
            .find(id)
            .map(|(_, o)| Arc::clone(o))
    }

    /// Installs a freshly connected link, replacing a failed one or an older incarnation; a
    /// refused endpoint is closed.
    fn install(
        self: &Arc<Self>,
        peer: NodeId,
        incarnation: u64,
        stream: Stream,
        core: Arc<Core>,
        ep: T::Endpoint,
    ) -> Result<Arc<RdmaLink<T>>, Refused<FabricError>> {
        let mut ep = Some(ep);
        let installed = self.hub.install(peer, incarnation, || {
            let Some(ep) = ep.take() else {
                return Err(FabricError::Connect {
                    peer,
                    reason: "no endpoint".into(),
                });
            };
            RdmaLink::start(self, peer, stream, core, ep)
        });
        if let Some(ep) = ep {
            self.transport.close(&ep);
        }
        installed
    }

    fn welcome(&self, status: u8, payload: &[u8]) -> Msg {
        Msg::new(
            kind::WELCOME,
            MAGIC,
            [
                u64::from(self.common.local_id),
                self.hub.incarnation(),
                VERSION,
                0,
            ],
        )
        .with_flags(status)
        .with_body(payload)
    }

    fn handshake_incoming(self: &Arc<Self>, mut stream: Stream, authenticated: Option<NodeId>) {
        let timeout = self.common.handshake_timeout;
        let Some((hello, from)) = Msg::receive_hello(&mut stream, timeout, kind::HELLO, MAGIC)
        else {
            return;
        };
        let (peer, to) = hello.hello_nodes();
        let me = self.common.local_id;
        let refuse = |stream: &mut Stream, status: u8, why: String| {
            tracing::warn!(%from, peer, "refused {} connection: {why}", self.transport.name());
            // Best effort: the peer may have gone, and it is refused either way.
            let _ = self.welcome(status, why.as_bytes()).write_to(stream);
        };
        match side_channel::check_hello(me, peer, to, hello.f[2], VERSION, authenticated) {
            Ok(()) => {}
            Err(why @ HelloRefusal::Version { .. }) => {
                return refuse(&mut stream, wire::WRONG_VERSION, why.to_string())
            }
            Err(why @ (HelloRefusal::Node { .. } | HelloRefusal::Impersonation { .. })) => {
                return refuse(&mut stream, wire::WRONG_NODE, why.to_string())
            }
        }
        let (pending, payload) = match self.transport.accept_prepare(peer, &hello.body) {
            Ok(x) => x,
            Err(e) => return refuse(&mut stream, wire::TRANSPORT, e.to_string()),
        };
        if let Err(e) = self.welcome(wire::ACCEPTED, &payload).write_to(&mut stream) {
            tracing::warn!(%from, peer, error = %e, "sending the welcome failed");
            return;
        }
        let core = Core::new(self, peer, hello.f[1]);
        let events: Arc<dyn Events> = Arc::clone(&core) as Arc<dyn Events>;
        let ep =
            match self
                .transport
                .establish(pending, None, self.common.handshake_timeout, events)
            {
                Ok(ep) => ep,
                Err(e) => {
                    tracing::warn!(%from, peer, error = %e, "connection set-up failed");
                    core.fail_with(format!("connection set-up failed: {e}"), false);
                    return;
                }
            };
        match self.install(peer, hello.f[1], stream, Arc::clone(&core), ep) {
            Ok(_) => tracing::debug!(peer, %from, "{} link accepted", self.transport.name()),
            Err(why) => {
                core.fail_with(why.to_string(), false);
                tracing::warn!(%from, peer, "refused link: {why}");
            }
        }
    }

    pub(crate) fn handshake_outgoing(
        self: &Arc<Self>,
        peer: NodeId,
        addr: SocketAddr,
        mut stream: Stream,
    ) -> Result<Arc<RdmaLink<T>>, FabricError> {
        let refuse = |reason: String| FabricError::Connect { peer, reason };
        let (pending, payload) = self.transport.dial_prepare(peer)?;
        let hello = Msg::new(
            kind::HELLO,
            MAGIC,
            [
                u64::from(self.common.local_id) | u64::from(peer) << 32,
                self.hub.incarnation(),
                VERSION,
                0,
            ],
        )
        .with_body(&payload);
        let timeout = self.common.handshake_timeout;
        let w = hello
            .exchange(&mut stream, timeout, kind::WELCOME, MAGIC, addr)
            .map_err(|e| refuse(e.to_string()))?;
        let said = String::from_utf8_lossy(&w.body).into_owned();
        match w.flags {
            _ if w
                .verdict()
                .check(peer, addr)
                .map_err(|e| refuse(e.to_string()))? => {}
            wire::WRONG_VERSION => return Err(refuse(format!("{addr}: {said}"))),
            wire::TRANSPORT => {
                return Err(refuse(format!(
                    "{addr} cannot set up a {} endpoint: {said}",
                    self.transport.name()
                )))
            }
            other => return Err(refuse(format!("{addr} refused the link (status {other})"))),
        }
        let core = Core::new(self, peer, w.f[1]);
        let events: Arc<dyn Events> = Arc::clone(&core) as Arc<dyn Events>;
        let ep = self
            .transport
            .establish(
                pending,
                Some(&w.body),
                self.common.handshake_timeout,
                events,
            )
            .inspect_err(|_| core.fail_with("connection set-up failed".into(), false))?;
        self.install(peer, w.f[1], stream, Arc::clone(&core), ep)
            .map_err(|why| {
                core.fail_with(why.to_string(), false);
                refuse(format!("cannot install link: {why}"))
            })
    }
}

impl<T: Transport> RdmaFabric<T> {
    /// Binds the side channel and starts accepting peers.
    pub(crate) fn start(transport: T, common: Common) -> Result<Self, FabricError> {
        let hub_config = HubConfig::new(
            common.local_id,
            common.listen,
            common.max_handshakes,
            common.max_links,
            &common.credentials,
            common.handshake_timeout,
        );
        let (hub, listener) = Hub::bind(hub_config, "side channel")?;
        let first_key = hub.incarnation().rotate_left(11);
        let inner = Arc::new(Inner {
            transport,
            common,
            hub,
            regions: RwLock::new(Regions {
                table: RegionTable::new(first_key),
                by_handle: HashMap::new(),
            }),
            next_handle: AtomicU32::new(1),
        });
        let acceptor = Arc::clone(&inner);
        let backend = inner.transport.name();
        inner
            .hub
            .serve(listener, backend, move |stream, authenticated| {
                acceptor.handshake_incoming(stream, authenticated)
            })?;
        Ok(Self { inner })
    }

    pub(crate) fn transport(&self) -> &T {
        &self.inner.transport
    }

    /// Closes every link without a goodbye, as a crash would.
    pub(crate) fn abort(&self) {
        self.stop(false);
    }

    fn stop(&self, graceful: bool) {
        self.inner.hub.shut_down(graceful, || {});
    }

    pub(crate) fn local_id(&self) -> NodeId {
        self.inner.common.local_id
    }

    pub(crate) fn register(&self, spec: RegionSpec) -> Result<Arc<Region>, FabricError> {
        self.inner.hub.check_running()?;
        let mut regions = write_lock(&self.inner.regions);
        let key = regions.table.reserve(spec.id)?;
        let region = Arc::new(Region::allocate(self.inner.common.local_id, &spec, key)?);
        let reg = self.inner.transport.register(&region)?;
        let handle = loop {
            let h = self.inner.next_handle.fetch_add(1, Ordering::Relaxed) & MAX_HANDLE;
            if h != 0 && !regions.by_handle.contains_key(&h) {
                break h;
            }
        };
        regions.table.insert(
            spec.id,
            key,
            Arc::new(Owned {
                region: Arc::clone(&region),
                reg,
                handle,
            }),
        );
        regions.by_handle.insert(handle, key);
        Ok(region)
    }

    pub(crate) fn deregister(&self, id: RegionId) -> Result<(), FabricError> {
        let owned = {
            let mut regions = write_lock(&self.inner.regions);
            let owned = regions.table.remove(id).map(|(_, o)| o);
            if let Some(o) = &owned {
                regions.by_handle.remove(&o.handle);
            }
            owned
        };
        let Some(owned) = owned else { return Ok(()) };
        // Tell every peer to stop writing into it, and wait (bounded) until they have.
        let links: Vec<Arc<RdmaLink<T>>> = self.inner.hub.links().values().cloned().collect();
        let deadline = Instant::now() + Duration::from_secs(2);
        for l in &links {
            l.send_revoke(owned.reg.rkey);
        }
        for l in &links {
            l.wait_revoked(owned.reg.rkey, deadline);
        }
        // Dropping the last handle closes the registration.
        drop(owned);
        Ok(())
    }

    pub(crate) fn shutdown(&self) {
        self.stop(true);
    }
}

/// Delegates the [`crate::Fabric`] trait of a public backend type (a newtype around
/// `RdmaFabric<T>` in field `.0`), and gives it `abort`.
macro_rules! delegate_fabric {
    ($ty:ty) => {
        impl $ty {
            /// Closes every link without a goodbye, as a crash would (for tests of failure
            /// handling).
            pub fn abort(&self) {
                self.0.abort();
            }
        }

        impl $crate::Fabric for $ty {
            fn local_id(&self) -> $crate::NodeId {
                self.0.local_id()
            }
            fn backend(&self) -> &'static str {
                $crate::rdma::Transport::name(self.0.transport())
            }
            fn writes_land_passively(&self) -> bool {
                $crate::rdma::Transport::writes_land_passively(self.0.transport())
            }
            fn register(
                &self,
                spec: $crate::RegionSpec,
            ) -> Result<std::sync::Arc<$crate::Region>, $crate::FabricError> {
                self.0.register(spec)
            }
            fn deregister(&self, id: $crate::RegionId) -> Result<(), $crate::FabricError> {
                self.0.deregister(id)
            }
            $crate::side_channel::hub_fabric_methods!(0.inner);
            fn shutdown(&self) {
                self.0.shutdown()
            }
        }
    };
}
pub(crate) use delegate_fabric;

/// The part of a link the transport's progress thread reports to (it holds no endpoint, so the
/// progress thread and the link do not keep each other alive).
pub(crate) struct Core {
    state: Arc<LinkState>,
    fabric: Weak<dyn CoreFabric>,
    stopped: AtomicBool,
    /// Length announced for the next write with an immediate.
    next_len: AtomicU64,
}

/// What a link core needs from its fabric (object-safe, so `Core` is not generic).
trait CoreFabric: Send + Sync {
    fn region_by_handle(&self, handle: u32) -> Option<Arc<Region>>;
    fn is_shut_down(&self) -> bool;
}

impl<T: Transport> CoreFabric for Inner<T> {
    fn region_by_handle(&self, handle: u32) -> Option<Arc<Region>> {
        Inner::region_by_handle(self, handle)
    }
    fn is_shut_down(&self) -> bool {
        Inner::is_shut_down(self)
    }
}

impl Core {
    fn new<T: Transport>(fabric: &Arc<Inner<T>>, peer: NodeId, incarnation: u64) -> Arc<Self> {
        let weak: Weak<Inner<T>> = Arc::downgrade(fabric);
        Arc::new(Self {
            state: Arc::new(LinkState::new(peer, incarnation, fabric.hub.reporter())),
            fabric: weak,
            stopped: AtomicBool::new(false),
            next_len: AtomicU64::new(0),
        })
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.state.is_failed()
    }

    fn fail_with(&self, reason: String, report: bool) {
        self.state.fail(&reason, report, || {
            self.stopped.store(true, Ordering::SeqCst);
        });
    }

    fn error(&self) -> FabricError {
        self.state.error()
    }
}

impl Core {
    /// Applies the effects of a peer's write: queues its notification (waiting for room if
    /// `wait`, else giving up and returning false when the queue is full) and rings the
    /// region's doorbell.
    fn landed(&self, data: u64, len: Option<usize>, wait: bool) -> bool {
        if data == DATA_FENCE {
            return true;
        }
        if data & DATA_LEN != 0 {
            self.next_len
                .store(data & (DATA_LEN - 1), Ordering::Relaxed);
            return true;
        }
        let Some(f) = self.fabric.upgrade() else {
            return true;
        };
        let handle = ((data >> 32) as u32) & MAX_HANDLE;
        let Some(region) = f.region_by_handle(handle) else {
            tracing::debug!(
                peer = self.state.peer(),
                handle,
                "discarded a write to an unregistered region"
            );
            return true;
        };
        if data & DATA_IMM != 0 {
            let n = Notification {
                from: self.state.peer(),
                imm: data as u32,
                len: len.unwrap_or_else(|| self.next_len.swap(0, Ordering::Relaxed) as usize),
            };
            let announced = n.len;
            let queued = if wait {
                region.push_notification(n, &|| self.is_failed() || f.is_shut_down())
            } else {
                region.push_notification(n, &|| true)
            };
            if !queued {
                if wait {
                    // Gave up: the link failed or the fabric is shutting down.
                    return true;
                }
                // Full: leave the write as it was, length included, for a thread that waits.
                if len.is_none() {
                    self.next_len.store(announced as u64, Ordering::Relaxed);
                }
                return false;
            }
        }
        region.ring();
        true
    }
}

impl Events for Core {
    fn remote_write(&self, data: u64, len: Option<usize>) {
        self.landed(data, len, true);
    }

    fn try_remote_write(&self, data: u64, len: Option<usize>) -> bool {
        self.landed(data, len, false)
    }

    fn sent(&self, ticket: u64) {
        // A completion covers every write posted before it on the endpoint.
        self.state.applied(ticket);
    }

    fn failed(&self, reason: String) {
        self.fail_with(reason, true);
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// A peer's region as known to a link.
#[derive(Clone, Copy)]
struct PeerRegion {
    handle: u32,
    revoked: bool,
}

type Answer = Option<(RemoteRegion, u32)>;

/// A link's send state, held while posting so writes are posted in issue order.
#[derive(Default)]
struct Tx {
    /// Tickets issued.
    issued: u64,
    /// Remote key of the latest write posted without asking for its completion, if no
    /// signaled write or fence was posted after it (never a revoked key: a revocation fences
    /// first).
    unfenced: Option<u64>,
}

/// A link of an RDMA-style fabric.
pub(crate) struct RdmaLink<T: Transport> {
    core: Arc<Core>,
    fabric: Weak<Inner<T>>,
    ep: T::Endpoint,
    /// Held while posting so writes are posted in issue order.
    tx: Mutex<Tx>,
    sock: Mutex<WriteHalf>,
    queries: Queries<Answer>,
    peer_regions: Mutex<HashMap<u64, PeerRegion>>,
    revoked_acks: Mutex<BTreeSet<u64>>,
    revoked_cond: Condvar,
    send_timeout: Duration,
}

impl<T: Transport> Drop for RdmaLink<T> {
    fn drop(&mut self) {
        self.core.stopped.store(true, Ordering::SeqCst);
        if let Some(f) = self.fabric.upgrade() {
            f.transport.close(&self.ep);
        }
    }
}

impl<T: Transport> RdmaLink<T> {
    fn start(
        fabric: &Arc<Inner<T>>,
        peer: NodeId,
        stream: Stream,
        core: Arc<Core>,
        ep: T::Endpoint,
    ) -> Result<Arc<Self>, FabricError> {
        let ctx = |what: &str| format!("{what} for link to node {peer}");
        let (reader, writer, control) =
            side_channel::link_stream(stream, fabric.common.send_timeout, peer)?;
        core.state.set_control(control);
        let link = Arc::new(Self {
            core,
            fabric: Arc::downgrade(fabric),
            ep,
            tx: Mutex::new(Tx::default()),
            sock: Mutex::new(writer),
            queries: Queries::new(),
            peer_regions: Mutex::new(HashMap::new()),
            revoked_acks: Mutex::new(BTreeSet::new()),
            revoked_cond: Condvar::new(),
            send_timeout: fabric.common.send_timeout,
        });
        let rx = Arc::clone(&link);
        std::thread::Builder::new()
            .name(format!("{}-rx-{peer}", fabric.transport.name()))
            .spawn(move || rx.receive_loop(reader))
            .map_err(|e| FabricError::io(ctx("spawning the side-channel thread"), e))?;
        Ok(link)
    }

    fn send(&self, msg: &Msg) -> Result<(), FabricError> {
        let sent = msg.write_to(&mut *lock(&self.sock));
        if let Err(e) = sent {
            self.core
                .fail_with(format!("side channel send failed: {e}"), true);
            return Err(self.core.error());
        }
        Ok(())
    }

    fn send_revoke(&self, rkey: u64) {
        if !self.core.is_failed() {
            // A failed send has failed the link (see `send`), which ends the wait for the answer.
            let _ = self.send(&Msg::new(kind::REVOKE, 0, [rkey, 0, 0, 0]));
        }
    }

    fn wait_revoked(&self, rkey: u64, deadline: Instant) {
        let mut acks = lock(&self.revoked_acks);
        loop {
            if acks.remove(&rkey) || self.core.is_failed() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    peer = self.core.state.peer(),
                    "peer did not confirm a region revocation"
                );
                return;
            }
            acks = wait_timeout(&self.revoked_cond, acks, deadline - now);
        }
    }

    /// A peer revoked one of its regions: discard later writes to it, let earlier ones
    /// complete, then confirm.
    fn on_revoke(&self, rkey: u64) {
        let last = {
            let mut tx = lock(&self.tx);
            if let Some(p) = lock(&self.peer_regions).get_mut(&rkey) {
                p.revoked = true;
            }
            self.core.state.forget_key(rkey);
            // The owner keeps the region registered until it hears back, so a fence into it
            // (or into any other region written since the last completion) is still valid.
            match self.fabric.upgrade() {
                Some(fabric) => self.fence(&fabric, &mut tx),
                None => Ok(tx.issued),
            }
        };
        if let Ok(last) = last {
            if last > 0 {
                if let Err(e) = self.core.state.wait_ticket(last, Duration::from_secs(1)) {
                    tracing::debug!(
                        peer = self.core.state.peer(),
                        error = %e,
                        "confirming a revocation before earlier writes completed"
                    );
                }
            }
        }
        // A failed send has failed the link (see `send`); the owner stops waiting then.
        let _ = self.send(&Msg::new(kind::REVOKED, 0, [rkey, 0, 0, 0]));
    }

    /// Makes sure a completion will cover every write posted so far: posts a fence into the
    /// region of the latest write that asked for none, if any. Returns the ticket to wait for.
    fn fence(&self, fabric: &Inner<T>, tx: &mut Tx) -> Result<u64, FabricError> {
        let Some(rkey) = tx.unfenced else {
            return Ok(tx.issued);
        };
        let fence = Post {
            mr: None,
            local: std::ptr::null(),
            len: 0,
            remote_addr: 0,
            rkey,
            data: DATA_FENCE,
            ticket: tx.issued + 1,
            signaled: true,
        };
        self.post_retrying(fabric, &fence)?;
        tx.issued = fence.ticket;
        tx.unfenced = None;
        Ok(fence.ticket)
    }

    fn post(&self, req: &WriteRequest<'_>, signaled: bool) -> Result<u64, FabricError> {
        if self.core.is_failed() {
            return Err(self.core.error());
        }
        req.validate(self.core.state.peer())?;
        let fabric = self.fabric.upgrade().ok_or(FabricError::Shutdown)?;
        let src = fabric
            .local_region(req.src.key())
            .filter(|o| std::ptr::eq(o.region.as_ptr(), req.src.as_ptr()))
            .ok_or_else(|| {
                FabricError::Misaddressed(Misaddress::Unregistered {
                    region: req.src.id(),
                    backend: fabric.transport.name(),
                })
            })?;
        let mut tx = lock(&self.tx);
        if self.core.is_failed() {
            return Err(self.core.error());
        }
        let target = lock(&self.peer_regions).get(&req.dst.key).copied();
        let Some(target) = target else {
            return Err(not_looked_up(req, self.core.state.peer()));
        };
        if target.revoked {
            // Deregistered by its owner: discarded, as on every backend. A signaled write
            // completes with the writes before it.
            return if signaled {
                self.fence(&fabric, &mut tx)
            } else {
                Ok(tx.issued)
            };
        }
        let ticket = tx.issued + 1;
        let mut data = u64::from(target.handle) << 32;
        if let Some(imm) = req.imm {
            data |= DATA_IMM | u64::from(imm);
        }
        if req.imm.is_some() && !fabric.transport.reports_len() {
            let announce = Post {
                mr: Some(&src.reg.mr),
                local: req.src.as_ptr(),
                len: 0,
                remote_addr: req.dst.addr,
                rkey: req.dst.key,
                data: DATA_LEN | req.len as u64,
                ticket: 0,
                signaled: false,
            };
            self.post_retrying(&fabric, &announce)?;
        }
        let post = Post {
            mr: Some(&src.reg.mr),
            local: req.src.as_ptr().wrapping_add(req.src_offset),
            len: req.len,
            remote_addr: req.dst.addr + req.dst_offset as u64,
            rkey: req.dst.key,
            data,
            ticket,
            signaled,
        };
        self.post_retrying(&fabric, &post)?;
        tx.issued = ticket;
        tx.unfenced = (!signaled).then_some(req.dst.key);
        Ok(ticket)
    }

    /// Posts one write, waiting (bounded by the send timeout) while the send queue is full:
    /// a few yields, then naps that double up to [`FULL_MAX_NAP`], so a poster waiting for a
    /// stream of large writes to drain leaves the cores to the threads that move the bytes.
    fn post_retrying(&self, fabric: &Inner<T>, post: &Post<'_, T::Mr>) -> Result<(), FabricError> {
        let mut waited: Option<Instant> = None;
        let mut attempts = 0u32;
        let mut nap = Duration::from_micros(10);
        loop {
            match fabric.transport.post(&self.ep, post) {
                Ok(()) => return Ok(()),
                Err(PostError::Full) => {
                    if self.core.is_failed() {
                        return Err(self.core.error());
                    }
                    let since = *waited.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.send_timeout {
                        self.core.fail_with(
                            format!("send queue full for {:?}", self.send_timeout),
                            true,
                        );
                        return Err(self.core.error());
                    }
                    attempts += 1;
                    if attempts <= FULL_YIELDS {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(nap);
                        nap = (nap * 2).min(FULL_MAX_NAP);
                    }
                }
                Err(PostError::Failed(reason)) => {
                    self.core.fail_with(reason, true);
                    return Err(self.core.error());
                }
            }
        }
    }

    fn receive_loop(self: Arc<Self>, stream: ReadHalf) {
        let mut reader = BufReader::new(stream);
        let outcome: Result<(), ReceiveFailure> = loop {
            let msg = match Msg::read_from(&mut reader) {
                Ok(m) => m,
                Err(e) => break Err(ReceiveFailure::of_read(e)),
            };
            let Some(fabric) = self.fabric.upgrade() else {
                break Ok(());
            };
            match msg.kind {
                kind::QUERY => {
                    let answer = match fabric.region_by_id(RegionId(msg.f[0])) {
                        Some(o) => Msg::new(
                            kind::ANSWER,
                            msg.word,
                            [msg.f[0], o.reg.rkey, o.reg.addr, o.region.len() as u64],
                        )
                        .with_flags(wire::FOUND)
                        .with_body(&o.handle.to_le_bytes()),
                        None => Msg::new(kind::ANSWER, msg.word, [msg.f[0], 0, 0, 0]),
                    };
                    if self.send(&answer).is_err() {
                        break Ok(());
                    }
                }
                kind::ANSWER => {
                    let found = msg.flags & wire::FOUND != 0 && msg.body.len() >= 4;
                    let answer = found.then(|| {
                        let handle = u32::from_le_bytes([
                            msg.body[0],
                            msg.body[1],
                            msg.body[2],
                            msg.body[3],
                        ]);
                        (
                            RemoteRegion {
                                owner: self.core.state.peer(),
                                id: RegionId(msg.f[0]),
                                len: msg.f[3] as usize,
                                key: msg.f[1],
                                addr: msg.f[2],
                            },
                            handle,
                        )
                    });
                    self.queries.answer(msg.word, answer);
                }
                kind::REVOKE => {
                    // Off this thread: waiting for completions must not stall lookups.
                    let me = Arc::clone(&self);
                    let rkey = msg.f[0];
                    let spawned = std::thread::Builder::new()
                        .name("rdma-revoke".into())
                        .spawn(move || me.on_revoke(rkey));
                    if spawned.is_err() {
                        self.on_revoke(msg.f[0]);
                    }
                }
                kind::REVOKED => {
                    lock(&self.revoked_acks).insert(msg.f[0]);
                    self.revoked_cond.notify_all();
                }
                kind::GOODBYE => break Err(ReceiveFailure::Goodbye),
                other => break Err(ReceiveFailure::UnknownKind(other)),
            }
        };
        if let Err(reason) = outcome {
            self.core.fail_with(reason.to_string(), true);
        }
        self.queries.wake();
    }

    fn query_once(&self, id: RegionId, deadline: Instant) -> Result<Answer, FabricError> {
        let answer = self.queries.ask(&self.core.state, deadline, |qid| {
            self.send(&Msg::new(kind::QUERY, qid, [id.0, 0, 0, 0]))
        })?;
        Ok(answer.flatten())
    }
}

impl<T: Transport> SideLink for RdmaLink<T> {
    const NAME: &'static str = "RdmaLink";

    fn state(&self) -> &Arc<LinkState> {
        &self.core.state
    }

    fn fail_with(&self, reason: String, report: bool) {
        self.core.fail_with(reason, report);
    }

    fn say_goodbye(&self) {
        if self.core.is_failed() {
            return;
        }
        if let Ok(mut s) = self.sock.try_lock() {
            // The peer may have gone already; it sees the link close either way.
            let _ = Msg::new(kind::GOODBYE, 0, [0; 4]).write_to(&mut *s);
        }
    }

    fn remote_region(&self, id: RegionId, timeout: Duration) -> Result<RemoteRegion, FabricError> {
        let ask = |deadline| self.query_once(id, deadline);
        self.core.state.remote_region(
            id,
            timeout,
            |_| true,
            ask,
            |(found, handle)| {
                let known = PeerRegion {
                    handle,
                    revoked: false,
                };
                lock(&self.peer_regions).insert(found.key, known);
                Ok(found)
            },
        )
    }

    fn post_write(&self, req: &WriteRequest<'_>, signaled: bool) -> Result<u64, FabricError> {
        self.post(req, signaled)
    }

    fn poll_progress(&self) -> bool {
        if self.core.stopped.load(Ordering::Relaxed) {
            return false;
        }
        T::poll_progress(&self.ep)
    }

    fn close(&self) {
        self.core.fail_with("local fabric shut down".into(), false);
        if let Some(fabric) = self.fabric.upgrade() {
            fabric.transport.close(&self.ep);
        }
    }
}
