//! The shm backend: real one-sided writes between processes on one host, through shared memory.
//!
//! Every registered region is a file in a shared-memory directory (`/dev/shm`), mapped by its
//! owner; a peer that looks the region up maps the same file and applies its writes **by copying
//! directly into it** with the atomic word discipline of [`crate::region`]. Nothing in the
//! owner's process runs to receive the bytes.
//!
//! What still needs the owner's process is done by a per-link **bell thread**: after each copy
//! the writer appends a record (region key, length, immediate) to a small ring in the owner's
//! *inbox* file for that link and, if the bell thread sleeps, wakes it through a futex word in
//! the same file. The bell thread rings the region's [`crate::Doorbell`] and queues immediate
//! values on [`Region::next_notification`], in write order and after the bytes are visible.
//! A reader that spins on memory sees a write as soon as the copy is done; one that parks is
//! woken by the bell thread. A full ring (the owner stopped draining its notification queue)
//! makes the writer wait, bounded by the send timeout, like a full socket on the tcp backend.
//!
//! Writes on one link are copied in issue order by the posting thread (under the link's lock),
//! each after a release fence, so "payload first, guard last" holds; a signaled write is complete
//! when `write_signaled` returns.
//!
//! A TCP **side channel** per pair of nodes (the higher id dials, like tcp) carries the
//! handshake (node ids, protocol version, the inbox file names), region lookups (the file name,
//! key and length) and a goodbye. When it closes, the peer is gone (a killed process has its
//! sockets closed by the kernel): the link fails and is reported once. Deregistering a region
//! revokes it through its file header (a writer checks before copying, and deregistration waits
//! for copies under way), then removes the file. Files are named with the creating process's id;
//! a fabric starting up removes the files of processes that no longer exist (left by a crash).

mod link;
pub(crate) mod mapping;
pub(crate) mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use link::ShmLink;
use mapping::{Inbox, Mapping, REGION_HEADER};
use wire::{kind, Msg, MAGIC, VERSION};

use crate::secure::{Credentials, Stream};
use crate::side_channel::regions::Registry;
use crate::side_channel::{self, HelloRefusal, Hub, HubConfig, Refused};
use crate::{Fabric, FabricError, NodeId, Region, RegionId, RegionSpec};

/// Settings of an shm fabric.
#[derive(Clone, Debug)]
pub struct ShmConfig {
    /// This node's id.
    pub local_id: NodeId,
    /// Address of the side channel's listening socket; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory of the shared-memory files (default `/dev/shm`).
    pub dir: PathBuf,
    /// How long an incoming side-channel connection may take to complete its hello (default
    /// 2 s).
    pub handshake_timeout: Duration,
    /// How long a write may wait for room in the peer's inbox, or a side-channel send may stay
    /// blocked, before the link is declared failed (default 10 s).
    pub send_timeout: Duration,
    /// Records per link inbox: writes that may be outstanding before the owner's bell thread
    /// has processed them (default 1024).
    pub inbox_capacity: usize,
    /// Bound on concurrent incoming handshakes (default 32).
    pub max_handshakes: usize,
    /// Bound on links (default 1024).
    pub max_links: usize,
    /// What every side-channel connection must prove before its hello is read
    /// ([`Credentials::Open`] by default; see [`crate::secure`]).
    pub credentials: Credentials,
}

impl ShmConfig {
    /// Defaults for node `local_id` with its side channel on `listen`.
    pub fn new(local_id: NodeId, listen: SocketAddr) -> Self {
        Self {
            local_id,
            listen,
            dir: PathBuf::from("/dev/shm"),
            handshake_timeout: Duration::from_secs(2),
            send_timeout: Duration::from_secs(10),
            inbox_capacity: 1024,
            max_handshakes: 32,
            max_links: 1024,
            credentials: Credentials::Open,
        }
    }

    /// Keeps the shared-memory files in `dir` instead of `/dev/shm`.
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = dir.into();
        self
    }
}

/// A region this node registered, with its file.
struct Owned {
    region: Arc<Region>,
    map: Arc<Mapping>,
    name: String,
}

/// State shared by the fabric handle, its links and its threads.
pub(crate) struct Inner {
    config: ShmConfig,
    hub: Hub<ShmLink>,
    pid: u32,
    regions: Registry<Owned>,
    next_inbox: AtomicU64,
    /// Pollers of this process parked on a doorbell of its regions (changed under `links`).
    parked: AtomicUsize,
}

impl crate::doorbell::ParkListener for Inner {
    /// Publishes in every inbox whether a poller here may be parked, so that writers wake the
    /// bell thread only then; on parking, also wakes it for records already pending, which a
    /// writer that did not see the flag yet left unannounced.
    fn parking(&self, parked: bool) {
        let links = self.hub.links();
        let before = self.parked.load(Ordering::SeqCst);
        let now = if parked {
            before + 1
        } else {
            before.saturating_sub(1)
        };
        self.parked.store(now, Ordering::SeqCst);
        for link in links.values() {
            let inbox = link.own_inbox();
            inbox.parked().store(u32::from(now > 0), Ordering::SeqCst);
            if parked && inbox.tail().load(Ordering::SeqCst) != inbox.head().load(Ordering::SeqCst)
            {
                inbox.wake();
            }
        }
    }
}

impl Inner {
    pub(crate) fn region_by_key(&self, key: u64) -> Option<Arc<Region>> {
        self.regions.read().get(key).map(|o| Arc::clone(&o.region))
    }

    /// Key, length and file name of the region named `id`.
    pub(crate) fn region_file(&self, id: RegionId) -> Option<(u64, usize, String)> {
        let regions = self.regions.read();
        let (key, o) = regions.find(id)?;
        Some((key, o.region.len(), o.name.clone()))
    }

    fn file_name(&self, what: &str) -> String {
        mapping::file_name(self.pid, self.config.local_id, self.hub.incarnation(), what)
    }

    /// Creates this side's inbox for a new link to `peer`.
    fn create_inbox(&self, peer: NodeId) -> Result<(Inbox, String), FabricError> {
        let n = self.next_inbox.fetch_add(1, Ordering::Relaxed);
        let name = self.file_name(&format!("in{peer}-{n}"));
        let cap = self.config.inbox_capacity.max(1);
        let map = Mapping::create(&self.config.dir.join(&name), mapping::inbox_len(cap))?;
        mapping::init_inbox(&map, cap);
        Ok((Inbox::new(map, cap), name))
    }

    /// Maps the peer's inbox named in its hello or welcome.
    fn open_inbox(&self, name: &str) -> Result<Inbox, FabricError> {
        if !mapping::valid_name(name) {
            return Err(FabricError::InvalidRegion(format!(
                "invalid inbox name {name:?}"
            )));
        }
        let map = Mapping::open(&self.config.dir.join(name), 0)?;
        let cap = mapping::check_inbox(&map)?;
        Ok(Inbox::new(map, cap))
    }

    /// Installs a freshly handshaken link, replacing a failed one or an older incarnation. On
    /// the accepting side `welcome` is written here, before the link becomes visible.
    fn install(
        self: &Arc<Self>,
        peer: NodeId,
        incarnation: u64,
        slot: &mut Option<Stream>,
        mine: Inbox,
        theirs: Inbox,
        welcome: Option<Vec<u8>>,
    ) -> Result<Arc<ShmLink>, Refused<String>> {
        self.hub.install(peer, incarnation, || {
            let mut stream = slot.take().ok_or("the connection was used already")?;
            if let Some(w) = welcome {
                use std::io::Write;
                stream
                    .write_all(&w)
                    .map_err(|e| format!("sending the welcome: {e}"))?;
            }
            let link = ShmLink::start(self, peer, incarnation, stream, mine, theirs)
                .map_err(|e| e.to_string())?;
            link.own_inbox().parked().store(
                u32::from(self.parked.load(Ordering::SeqCst) > 0),
                Ordering::SeqCst,
            );
            Ok(link)
        })
    }

    fn welcome(&self, status: u8, inbox: &str) -> Vec<u8> {
        Msg::new(
            kind::WELCOME,
            MAGIC,
            [
                u64::from(self.config.local_id),
                self.hub.incarnation(),
                u64::from(VERSION) << 32 | u64::from(self.pid),
            ],
        )
        .with_flags(status)
        .with_body(inbox.as_bytes())
        .encode()
    }

    fn handshake_incoming(self: &Arc<Self>, mut stream: Stream, authenticated: Option<NodeId>) {
        use std::io::Write;
        let timeout = self.config.handshake_timeout;
        let Some((hello, from)) = Msg::receive_hello(&mut stream, timeout, kind::HELLO, MAGIC)
        else {
            return;
        };
        let (peer, to) = hello.hello_nodes();
        let version = (hello.f[2] >> 32) as u32;
        let me = self.config.local_id;
        let refuse = |s: &mut Stream, status: u8, why: String| {
            tracing::warn!(%from, peer, "refused shm connection: {why}");
            // Best effort: the peer may have gone, and it is refused either way.
            let _ = s.write_all(&self.welcome(status, ""));
        };
        match side_channel::check_hello(me, peer, to, version.into(), VERSION.into(), authenticated)
        {
            Ok(()) => {}
            Err(why @ HelloRefusal::Version { .. }) => {
                return refuse(&mut stream, wire::WRONG_VERSION, why.to_string())
            }
            Err(why @ (HelloRefusal::Node { .. } | HelloRefusal::Impersonation { .. })) => {
                return refuse(&mut stream, wire::WRONG_NODE, why.to_string())
            }
        }
        let theirs = match self.open_inbox(&String::from_utf8_lossy(&hello.body)) {
            Ok(i) => i,
            Err(e) => {
                return refuse(
                    &mut stream,
                    wire::NOT_LOCAL,
                    format!("cannot map its inbox (is it on another host?): {e}"),
                )
            }
        };
        let (mine, name) = match self.create_inbox(peer) {
            Ok(x) => x,
            Err(e) => {
                return refuse(
                    &mut stream,
                    wire::BUSY,
                    format!("cannot create an inbox: {e}"),
                )
            }
        };
        let path = mine.mapping().path().to_path_buf();
        let welcome = self.welcome(wire::ACCEPTED, &name);
        let mut slot = Some(stream);
        match self.install(peer, hello.f[1], &mut slot, mine, theirs, Some(welcome)) {
            Ok(_) => tracing::debug!(peer, %from, "shm link accepted"),
            Err(why) => {
                mapping::remove_file(&path);
                tracing::warn!(%from, peer, "refused shm connection: {why}");
                if let Some(mut reply) = slot {
                    // As above: the peer may have gone, and it is refused either way.
                    let _ = reply.write_all(&self.welcome(wire::BUSY, ""));
                }
            }
        }
    }

    pub(crate) fn handshake_outgoing(
        self: &Arc<Self>,
        peer: NodeId,
        addr: SocketAddr,
        mut stream: Stream,
    ) -> Result<Arc<ShmLink>, FabricError> {
        let refuse = |reason: String| FabricError::Connect { peer, reason };
        let (mine, name) = self.create_inbox(peer)?;
        let path = mine.mapping().path().to_path_buf();
        let result = (|| {
            let hello = Msg::new(
                kind::HELLO,
                MAGIC,
                [
                    u64::from(self.config.local_id) | u64::from(peer) << 32,
                    self.hub.incarnation(),
                    u64::from(VERSION) << 32 | u64::from(self.pid),
                ],
            )
            .with_body(name.as_bytes());
            let timeout = self.config.handshake_timeout;
            let w = hello
                .exchange(&mut stream, timeout, kind::WELCOME, MAGIC, addr)
                .map_err(|e| refuse(e.to_string()))?;
            match w.flags {
                _ if w
                    .verdict()
                    .check(peer, addr)
                    .map_err(|e| refuse(e.to_string()))? => {}
                wire::WRONG_VERSION => {
                    return Err(refuse(format!(
                        "{addr} speaks shm protocol version {}, this node speaks {VERSION}",
                        w.f[2] >> 32
                    )))
                }
                wire::NOT_LOCAL => {
                    return Err(refuse(format!(
                        "{addr} cannot map this node's shared memory: the shm backend only \
                         links processes on one host ([RDMA] backend)"
                    )))
                }
                other => return Err(refuse(format!("{addr} refused the link (status {other})"))),
            }
            let theirs = self
                .open_inbox(&String::from_utf8_lossy(&w.body))
                .map_err(|e| {
                    refuse(format!(
                        "cannot map the inbox of {addr} (is it on another host?): {e}"
                    ))
                })?;
            Ok((w.f[1], theirs))
        })();
        let (incarnation, theirs) = match result {
            Ok(x) => x,
            Err(e) => {
                mapping::remove_file(&path);
                return Err(e);
            }
        };
        self.install(peer, incarnation, &mut Some(stream), mine, theirs, None)
            .map_err(|why| {
                mapping::remove_file(&path);
                refuse(format!("cannot install link: {why}"))
            })
    }

    /// Revokes and removes every region file (shutdown).
    fn remove_all_regions(&self) {
        for o in self.regions.write().drain() {
            mapping::revoke_region(&o.map, Duration::from_millis(100));
            mapping::remove_file(o.map.path());
        }
        self.regions.changed();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.remove_all_regions();
    }
}

/// A fabric whose regions are shared-memory files. Cheap to clone (a handle).
#[derive(Clone)]
pub struct ShmFabric {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ShmFabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.hub.describe(f, "ShmFabric")
    }
}

impl ShmFabric {
    /// Removes stale files of dead processes, binds the side channel and starts accepting
    /// peers.
    pub fn start(config: ShmConfig) -> Result<Self, FabricError> {
        if !config.dir.is_dir() {
            return Err(FabricError::io(
                format!(
                    "the shm backend needs the shared-memory directory {}",
                    config.dir.display()
                ),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let stale = mapping::remove_stale(&config.dir);
        if stale > 0 {
            tracing::info!(stale, dir = %config.dir.display(), "removed stale shm files");
        }
        let c = &config;
        let hub_config = HubConfig::new(
            c.local_id,
            c.listen,
            c.max_handshakes,
            c.max_links,
            &c.credentials,
            c.handshake_timeout,
        );
        let (hub, listener) = Hub::bind(hub_config, "shm side channel")?;
        let first_key = hub.incarnation().rotate_left(23);
        let inner = Arc::new(Inner {
            config,
            hub,
            pid: std::process::id(),
            regions: Registry::new(first_key),
            next_inbox: AtomicU64::new(0),
            parked: AtomicUsize::new(0),
        });
        let acceptor = Arc::clone(&inner);
        inner
            .hub
            .serve(listener, "shm", move |stream, authenticated| {
                acceptor.handshake_incoming(stream, authenticated)
            })?;
        Ok(Self { inner })
    }

    /// Closes every link without a goodbye, as a crash would (for tests of failure handling).
    /// The region files stay, as after a crash, until the fabric is dropped.
    pub fn abort(&self) {
        self.stop(false);
    }

    fn stop(&self, graceful: bool) {
        self.inner.hub.shut_down(graceful, || {
            if graceful {
                self.inner.remove_all_regions();
            }
        });
    }
}

impl Fabric for ShmFabric {
    fn local_id(&self) -> NodeId {
        self.inner.config.local_id
    }

    fn backend(&self) -> &'static str {
        "shm"
    }

    fn writes_land_passively(&self) -> bool {
        // The writer copies straight into the mapped region file.
        true
    }

    fn register(&self, spec: RegionSpec) -> Result<Arc<Region>, FabricError> {
        self.inner.hub.check_running()?;
        let mut regions = self.inner.regions.write();
        let key = regions.reserve(spec.id)?;
        if spec.len > crate::region::MAX_REGION_LEN {
            return Err(FabricError::RegionTooLarge {
                len: spec.len,
                limit: crate::region::MAX_REGION_LEN,
            });
        }
        let len = spec.len.div_ceil(8) * 8;
        let name = self.inner.file_name(&format!("r{key:x}"));
        let path = self.inner.config.dir.join(&name);
        let map = Arc::new(Mapping::create(&path, REGION_HEADER + len.max(8))?);
        mapping::init_region(&map, key, len);
        let made = std::ptr::NonNull::new(map.base().as_ptr().wrapping_add(REGION_HEADER))
            .ok_or_else(|| FabricError::InvalidRegion("null mapping".into()))
            .and_then(|ptr| {
                // SAFETY: `ptr` is 64 bytes into a fresh page-aligned shared mapping of
                // `REGION_HEADER + len` bytes or more, kept alive by the `Arc<Mapping>` given as
                // backing; every process that maps the file uses the atomic discipline of
                // `Region` (peers copy through `Region::copy_to`).
                unsafe {
                    Region::from_external(
                        self.inner.config.local_id,
                        &spec,
                        key,
                        ptr,
                        Box::new(Arc::clone(&map)),
                    )
                }
            });
        let region = match made {
            Ok(r) => Arc::new(r),
            Err(e) => {
                mapping::remove_file(&path);
                return Err(e);
            }
        };
        regions.insert(
            spec.id,
            key,
            Owned {
                region: Arc::clone(&region),
                map,
                name,
            },
        );
        self.inner.regions.changed();
        // Pollers parking on this region's doorbell must get the bell thread woken.
        let listener: std::sync::Weak<dyn crate::doorbell::ParkListener> =
            Arc::downgrade(&self.inner) as std::sync::Weak<Inner>;
        region
            .doorbell()
            .add_park_listener(self.inner.hub.incarnation(), listener);
        Ok(region)
    }

    fn deregister(&self, id: RegionId) -> Result<(), FabricError> {
        let owned = self.inner.regions.write().remove(id);
        if let Some((_, o)) = owned {
            self.inner.regions.changed();
            mapping::revoke_region(&o.map, Duration::from_millis(100));
            mapping::remove_file(o.map.path());
        }
        Ok(())
    }

    side_channel::hub_fabric_methods!(inner);

    fn shutdown(&self) {
        self.stop(true);
    }
}
