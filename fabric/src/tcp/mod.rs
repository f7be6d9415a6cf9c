//! The tcp backend: one-sided writes emulated over one TCP stream per pair of nodes.
//!
//! Each fabric listens on one port. Between two nodes exactly one connection exists: the node
//! with the higher id dials, the lower one accepts, and a 32-byte hello/answer handshake checks
//! the magic, the wire version and that each side is the node the other expects (see the `wire` module
//! for the byte format). Anything else on the port (garbage, a wrong node id, another version,
//! silence past the handshake timeout) is refused with a log line and has no other effect.
//!
//! After the handshake a receiver thread per link applies the peer's writes in order, each one
//! completely, through the atomic copy of [`crate::region`], rings the target region's doorbell,
//! queues immediate notifications, and acknowledges signaled writes. A connection that ends or
//! carries a malformed frame fails the link, which is reported once to failure subscribers.
//! A process killed with `kill -9` has its sockets closed by the kernel, so its peers learn of
//! it at once; a peer that hangs is caught by completion timeouts in the layers above.

mod link;
mod wire;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use link::{LinkHandle, TcpLink};
use wire::{Answer, Hello, Status, HEADER_LEN, VERSION};

use crate::failure::FailureHub;
use crate::sync::{lock, read_lock, write_lock};
use crate::{
    Fabric, FabricError, FailureHandler, Link, NodeId, Region, RegionId, RegionSpec, SubscriptionId,
};

/// Settings of a tcp fabric.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// This node's id.
    pub local_id: NodeId,
    /// Address to listen on; port 0 picks a free port (see [`Fabric::local_addr`]).
    pub listen: SocketAddr,
    /// How long an incoming connection may take to complete its hello (default 2 s).
    pub handshake_timeout: Duration,
    /// How long a send may stay blocked on a full socket before the link is declared failed
    /// (default 10 s).
    pub send_timeout: Duration,
    /// Bound on concurrent incoming handshakes; more are closed at once (default 32).
    pub max_handshakes: usize,
    /// Bound on links (default 1024, like `max_node_id`).
    pub max_links: usize,
}

impl TcpConfig {
    /// Defaults for node `local_id` listening on `listen`.
    pub fn new(local_id: NodeId, listen: SocketAddr) -> Self {
        Self {
            local_id,
            listen,
            handshake_timeout: Duration::from_secs(2),
            send_timeout: Duration::from_secs(10),
            max_handshakes: 32,
            max_links: 1024,
        }
    }
}

#[derive(Default)]
struct Regions {
    by_key: HashMap<u64, Arc<Region>>,
    by_id: HashMap<RegionId, u64>,
}

/// State shared by the fabric handle, its links and its threads.
pub(crate) struct Inner {
    config: TcpConfig,
    local_addr: SocketAddr,
    incarnation: u64,
    start: Instant,
    regions: RwLock<Regions>,
    generation: AtomicU64,
    next_key: AtomicU64,
    links: Mutex<HashMap<NodeId, Arc<TcpLink>>>,
    links_changed: Condvar,
    failures: FailureHub,
    shut_down: AtomicBool,
    handshakes: AtomicUsize,
}

impl Inner {
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::SeqCst)
    }

    pub(crate) fn region_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn region_by_key(&self, key: u64) -> Option<Arc<Region>> {
        read_lock(&self.regions).by_key.get(&key).cloned()
    }

    pub(crate) fn region_by_id(&self, id: RegionId) -> Option<Arc<Region>> {
        let regions = read_lock(&self.regions);
        regions
            .by_id
            .get(&id)
            .and_then(|k| regions.by_key.get(k))
            .cloned()
    }

    pub(crate) fn link_changed(&self) {
        let _g = lock(&self.links);
        self.links_changed.notify_all();
    }

    /// Installs a freshly handshaken link, replacing a failed one or an older incarnation.
    ///
    /// On the accepting side `answer` is the handshake answer: it is written here, under the
    /// links lock and before the link becomes visible, so no frame of ours can reach the dialer
    /// ahead of it.
    fn install(
        self: &Arc<Self>,
        peer: NodeId,
        incarnation: u64,
        mut stream: TcpStream,
        answer: Option<[u8; HEADER_LEN]>,
    ) -> Result<Arc<TcpLink>, Status> {
        let mut links = lock(&self.links);
        let mut replaced = None;
        if let Some(old) = links.get(&peer) {
            if !old.is_failed() {
                if old.incarnation == incarnation {
                    return Err(Status::Duplicate);
                }
                replaced = Some(Arc::clone(old));
            }
        } else if links.len() >= self.config.max_links {
            return Err(Status::Busy);
        }
        if let Some(answer) = answer {
            if let Err(e) = stream.write_all(&answer) {
                tracing::warn!(peer, error = %e, "handshake answer failed");
                return Err(Status::Busy);
            }
        }
        let link = TcpLink::start(self, peer, incarnation, stream).map_err(|e| {
            tracing::warn!(peer, error = %e, "cannot start link");
            Status::Busy
        })?;
        links.insert(peer, Arc::clone(&link));
        self.links_changed.notify_all();
        drop(links);
        // Outside the lock: failure handlers may call back into the fabric.
        if let Some(old) = replaced {
            old.fail_with("replaced by a new incarnation of the peer".into(), true);
        }
        Ok(link)
    }

    fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        for conn in listener.incoming() {
            if self.is_shut_down() {
                break;
            }
            let stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "fabric accept failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            if self.handshakes.fetch_add(1, Ordering::SeqCst) >= self.config.max_handshakes {
                self.handshakes.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!("too many concurrent fabric handshakes; closing a connection");
                continue;
            }
            let me = Arc::clone(&self);
            let spawned = std::thread::Builder::new()
                .name("fabric-hello".into())
                .spawn(move || {
                    me.handshake_incoming(stream);
                    me.handshakes.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                self.handshakes.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    fn handshake_incoming(self: &Arc<Self>, mut stream: TcpStream) {
        let from = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let _ = stream.set_read_timeout(Some(self.config.handshake_timeout));
        let _ = stream.set_write_timeout(Some(self.config.handshake_timeout));
        let mut buf = [0u8; HEADER_LEN];
        if let Err(e) = stream.read_exact(&mut buf) {
            tracing::warn!(%from, error = %e, "fabric connection closed before its hello");
            return;
        }
        let hello = match Hello::decode(&buf) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%from, "refused fabric connection: {e}");
                return;
            }
        };
        let status = if hello.version != VERSION {
            tracing::warn!(
                %from,
                peer = hello.from,
                "refused fabric connection: wire version {} (this node speaks {VERSION})",
                hello.version
            );
            Err(Status::VersionMismatch)
        } else if hello.to != self.config.local_id || hello.from == self.config.local_id {
            tracing::warn!(
                %from,
                "refused fabric connection: it claims node {} and wants node {}, this is node {}",
                hello.from,
                hello.to,
                self.config.local_id
            );
            Err(Status::WrongNode)
        } else {
            Ok(())
        };
        let answer = |status| Answer {
            version: VERSION,
            status,
            node: self.config.local_id,
            incarnation: self.incarnation,
        };
        if let Err(status) = status {
            let _ = stream.write_all(&answer(status).encode());
            return;
        }
        let reply_stream = match stream.try_clone() {
            Ok(s) => s,
            Err(_) => return,
        };
        let accepted = answer(Status::Accepted).encode();
        match self.install(hello.from, hello.incarnation, stream, Some(accepted)) {
            Ok(_) => tracing::debug!(peer = hello.from, %from, "fabric link accepted"),
            Err(status) => {
                tracing::warn!(%from, peer = hello.from, ?status, "refused fabric connection");
                let mut reply_stream = reply_stream;
                let _ = reply_stream.write_all(&answer(status).encode());
            }
        }
    }

    fn dial(
        self: &Arc<Self>,
        peer: NodeId,
        addr: SocketAddr,
        deadline: Instant,
    ) -> Result<Arc<TcpLink>, FabricError> {
        crate::dialing::dial_until(
            peer,
            addr,
            deadline,
            || self.is_shut_down(),
            |stream| self.handshake_outgoing(peer, addr, stream),
        )
    }

    fn handshake_outgoing(
        self: &Arc<Self>,
        peer: NodeId,
        addr: SocketAddr,
        mut stream: TcpStream,
    ) -> Result<Arc<TcpLink>, FabricError> {
        let refuse = |reason: String| FabricError::Connect { peer, reason };
        let hello = Hello {
            version: VERSION,
            from: self.config.local_id,
            to: peer,
            incarnation: self.incarnation,
        };
        stream
            .set_read_timeout(Some(self.config.handshake_timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.config.handshake_timeout)))
            .and_then(|()| stream.write_all(&hello.encode()))
            .map_err(|e| refuse(format!("sending hello to {addr}: {e}")))?;
        let mut buf = [0u8; HEADER_LEN];
        stream
            .read_exact(&mut buf)
            .map_err(|e| refuse(format!("no answer from {addr}: {e}")))?;
        let answer = Answer::decode(&buf).map_err(|e| refuse(format!("{addr}: {e}")))?;
        match answer.status {
            Status::Accepted if answer.node == peer => {}
            Status::Accepted | Status::WrongNode => {
                return Err(refuse(format!(
                    "{addr} is node {}, not node {peer}",
                    answer.node
                )))
            }
            Status::VersionMismatch => {
                return Err(refuse(format!(
                    "{addr} speaks wire version {}, this node speaks {VERSION}",
                    answer.version
                )))
            }
            other => return Err(refuse(format!("{addr} refused the connection ({other:?})"))),
        }
        self.install(peer, answer.incarnation, stream, None)
            .map_err(|s| refuse(format!("cannot install link ({s:?})")))
    }
}

/// A fabric whose links are TCP streams. Cheap to clone (a handle).
#[derive(Clone)]
pub struct TcpFabric {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TcpFabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpFabric")
            .field("local_id", &self.inner.config.local_id)
            .field("addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl TcpFabric {
    /// Binds the listening socket and starts accepting peers.
    pub fn start(config: TcpConfig) -> Result<Self, FabricError> {
        let listener = TcpListener::bind(config.listen)
            .map_err(|e| FabricError::io(format!("binding fabric port {}", config.listen), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| FabricError::io("reading the fabric's bound address", e))?;
        let incarnation = incarnation_nonce(config.local_id);
        let inner = Arc::new(Inner {
            config,
            local_addr,
            incarnation,
            start: Instant::now(),
            regions: RwLock::new(Regions::default()),
            generation: AtomicU64::new(0),
            next_key: AtomicU64::new(incarnation.rotate_left(17) | 1),
            links: Mutex::new(HashMap::new()),
            links_changed: Condvar::new(),
            failures: FailureHub::default(),
            shut_down: AtomicBool::new(false),
            handshakes: AtomicUsize::new(0),
        });
        let acceptor = Arc::clone(&inner);
        std::thread::Builder::new()
            .name(format!("fabric-accept-{}", inner.config.local_id))
            .spawn(move || acceptor.accept_loop(listener))
            .map_err(|e| FabricError::io("spawning the accept thread", e))?;
        tracing::debug!(node = inner.config.local_id, %local_addr, "tcp fabric listening");
        Ok(Self { inner })
    }

    /// Closes every link without a goodbye, as a crash would (for tests of failure handling).
    pub fn abort(&self) {
        self.stop(false);
    }

    fn stop(&self, graceful: bool) {
        if self.inner.shut_down.swap(true, Ordering::SeqCst) {
            return;
        }
        let links: Vec<Arc<TcpLink>> = lock(&self.inner.links).values().cloned().collect();
        for l in links {
            if graceful {
                l.say_goodbye();
            }
            l.fail_with("local fabric shut down".into(), false);
        }
        self.inner.link_changed();
        // Wake the accept loop so it sees the flag and exits.
        let _ = TcpStream::connect_timeout(&self.inner.local_addr, Duration::from_millis(200));
    }
}

fn incarnation_nonce(id: NodeId) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = t ^ (u64::from(std::process::id()) << 32) ^ u64::from(id);
    // splitmix64 finaliser: spreads the bits so keys and incarnations look unrelated.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Fabric for TcpFabric {
    fn local_id(&self) -> NodeId {
        self.inner.config.local_id
    }

    fn backend(&self) -> &'static str {
        "tcp"
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        Some(self.inner.local_addr)
    }

    fn register(&self, spec: RegionSpec) -> Result<Arc<Region>, FabricError> {
        if self.inner.is_shut_down() {
            return Err(FabricError::Shutdown);
        }
        let mut regions = write_lock(&self.inner.regions);
        if regions.by_id.contains_key(&spec.id) {
            return Err(FabricError::DuplicateRegion(spec.id));
        }
        let key = self.inner.next_key.fetch_add(2, Ordering::Relaxed);
        let region = Arc::new(Region::allocate(self.inner.config.local_id, &spec, key)?);
        regions.by_key.insert(key, Arc::clone(&region));
        regions.by_id.insert(spec.id, key);
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        Ok(region)
    }

    fn deregister(&self, id: RegionId) -> Result<(), FabricError> {
        let mut regions = write_lock(&self.inner.regions);
        if let Some(key) = regions.by_id.remove(&id) {
            regions.by_key.remove(&key);
            self.inner.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    fn connect(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Arc<dyn Link>, FabricError> {
        let link = crate::dialing::connect_by_rule(
            self.inner.config.local_id,
            peer,
            timeout,
            &self.inner.links,
            &self.inner.links_changed,
            || self.inner.is_shut_down(),
            |l| l.is_failed(),
            |deadline| self.inner.dial(peer, addr, deadline),
        )?;
        Ok(Arc::new(LinkHandle(link)))
    }

    fn link(&self, peer: NodeId) -> Option<Arc<dyn Link>> {
        lock(&self.inner.links)
            .get(&peer)
            .map(|l| Arc::new(LinkHandle(Arc::clone(l))) as Arc<dyn Link>)
    }

    fn subscribe_failures(&self, handler: FailureHandler) -> SubscriptionId {
        self.inner.failures.subscribe(handler)
    }

    fn unsubscribe_failures(&self, id: SubscriptionId) {
        self.inner.failures.unsubscribe(id)
    }

    fn now(&self) -> Duration {
        self.inner.start.elapsed()
    }

    fn shutdown(&self) {
        self.stop(true);
    }
}
