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
pub(crate) mod wire;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use link::TcpLink;
use wire::{Answer, Hello, Status, HEADER_LEN, VERSION};

use crate::secure::{Credentials, Stream};
use crate::side_channel::regions::Registry;
use crate::side_channel::{self, HelloRefusal, Hub, HubConfig, Refused, Welcome};
use crate::{Fabric, FabricError, NodeId, Region, RegionId, RegionSpec};

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
    /// What every side-channel connection must prove before its hello is read
    /// ([`Credentials::Open`] by default; see [`crate::secure`]).
    pub credentials: Credentials,
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
            credentials: Credentials::Open,
        }
    }
}

/// State shared by the fabric handle, its links and its threads.
pub(crate) struct Inner {
    config: TcpConfig,
    hub: Hub<TcpLink>,
    regions: Registry<Arc<Region>>,
}

impl Inner {
    pub(crate) fn region_by_key(&self, key: u64) -> Option<Arc<Region>> {
        self.regions.read().get(key).cloned()
    }

    pub(crate) fn region_by_id(&self, id: RegionId) -> Option<Arc<Region>> {
        self.regions.read().find(id).map(|(_, r)| Arc::clone(r))
    }

    /// Installs a freshly handshaken link, replacing a failed one or an older incarnation.
    ///
    /// On the accepting side `answer` is the handshake answer: it is written here, under the
    /// links lock and before the link becomes visible, so no frame of ours can reach the dialer
    /// ahead of it. The stream is taken from `slot` only if the link may be installed, so a
    /// refused caller can still answer on it.
    fn install(
        self: &Arc<Self>,
        peer: NodeId,
        incarnation: u64,
        slot: &mut Option<Stream>,
        answer: Option<[u8; HEADER_LEN]>,
    ) -> Result<Arc<TcpLink>, Status> {
        let started = self.hub.install(peer, incarnation, || {
            let Some(mut stream) = slot.take() else {
                return Err(Status::Busy);
            };
            if let Some(answer) = answer {
                if let Err(e) = stream.write_all(&answer) {
                    tracing::warn!(peer, error = %e, "handshake answer failed");
                    return Err(Status::Busy);
                }
            }
            TcpLink::start(self, peer, incarnation, stream).map_err(|e| {
                tracing::warn!(peer, error = %e, "cannot start link");
                Status::Busy
            })
        });
        started.map_err(|refused| match refused {
            Refused::Duplicate => Status::Duplicate,
            Refused::Full => Status::Busy,
            Refused::Start(status) => status,
        })
    }

    fn handshake_incoming(self: &Arc<Self>, mut stream: Stream, authenticated: Option<NodeId>) {
        let timeout = self.config.handshake_timeout;
        let Some((hello, from)) = side_channel::receive_hello(&mut stream, timeout, |s| {
            let mut buf = [0u8; HEADER_LEN];
            s.read_exact(&mut buf)?;
            Ok(Hello::decode(&buf))
        }) else {
            return;
        };
        let me = self.hub.local_id();
        let checked = side_channel::check_hello(
            me,
            hello.from,
            hello.to,
            u64::from(hello.version),
            u64::from(VERSION),
            authenticated,
        );
        let answer = |status| Answer {
            version: VERSION,
            status,
            node: me,
            incarnation: self.hub.incarnation(),
        };
        if let Err(refusal) = checked {
            let status = match refusal {
                HelloRefusal::Version { .. } => Status::VersionMismatch,
                HelloRefusal::Node { .. } | HelloRefusal::Impersonation { .. } => Status::WrongNode,
            };
            tracing::warn!(%from, peer = hello.from, "refused fabric connection: {refusal}");
            // Best effort: the peer may have gone, and it is refused either way.
            let _ = stream.write_all(&answer(status).encode());
            return;
        }
        let accepted = answer(Status::Accepted).encode();
        let mut slot = Some(stream);
        match self.install(hello.from, hello.incarnation, &mut slot, Some(accepted)) {
            Ok(_) => tracing::debug!(peer = hello.from, %from, "fabric link accepted"),
            Err(status) => {
                tracing::warn!(%from, peer = hello.from, ?status, "refused fabric connection");
                if let Some(mut reply_stream) = slot {
                    // As above: the peer may have gone, and it is refused either way.
                    let _ = reply_stream.write_all(&answer(status).encode());
                }
            }
        }
    }

    pub(crate) fn handshake_outgoing(
        self: &Arc<Self>,
        peer: NodeId,
        addr: SocketAddr,
        mut stream: Stream,
    ) -> Result<Arc<TcpLink>, FabricError> {
        let refuse = |reason: String| FabricError::Connect { peer, reason };
        let hello = Hello {
            version: VERSION,
            from: self.hub.local_id(),
            to: peer,
            incarnation: self.hub.incarnation(),
        };
        side_channel::bound_handshake(&stream, self.config.handshake_timeout)
            .and_then(|()| stream.write_all(&hello.encode()))
            .map_err(|e| refuse(format!("sending hello to {addr}: {e}")))?;
        let mut buf = [0u8; HEADER_LEN];
        stream
            .read_exact(&mut buf)
            .map_err(|e| refuse(format!("no answer from {addr}: {e}")))?;
        let answer = Answer::decode(&buf).map_err(|e| refuse(format!("{addr}: {e}")))?;
        let node = u64::from(answer.node);
        let welcome = match answer.status {
            Status::Accepted => Welcome::Accepted { node },
            Status::WrongNode => Welcome::WrongNode { node },
            _ => Welcome::Other,
        };
        if !welcome
            .check(peer, addr)
            .map_err(|e| refuse(e.to_string()))?
        {
            return Err(refuse(match answer.status {
                Status::VersionMismatch => format!(
                    "{addr} speaks wire version {}, this node speaks {VERSION}",
                    answer.version
                ),
                other => format!("{addr} refused the connection ({other:?})"),
            }));
        }
        self.install(peer, answer.incarnation, &mut Some(stream), None)
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
        self.inner.hub.describe(f, "TcpFabric")
    }
}

impl TcpFabric {
    /// Binds the listening socket and starts accepting peers.
    pub fn start(config: TcpConfig) -> Result<Self, FabricError> {
        let c = &config;
        let hub_config = HubConfig::new(
            c.local_id,
            c.listen,
            c.max_handshakes,
            c.max_links,
            &c.credentials,
            c.handshake_timeout,
        );
        let (hub, listener) = Hub::bind(hub_config, "fabric port")?;
        let first_key = hub.incarnation().rotate_left(17);
        let inner = Arc::new(Inner {
            config,
            hub,
            regions: Registry::new(first_key),
        });
        let acceptor = Arc::clone(&inner);
        inner
            .hub
            .serve(listener, "fabric", move |stream, authenticated| {
                acceptor.handshake_incoming(stream, authenticated)
            })?;
        Ok(Self { inner })
    }

    /// Closes every link without a goodbye, as a crash would (for tests of failure handling).
    pub fn abort(&self) {
        self.inner.hub.shut_down(false, || {});
    }
}

impl Fabric for TcpFabric {
    fn local_id(&self) -> NodeId {
        self.inner.config.local_id
    }

    fn backend(&self) -> &'static str {
        "tcp"
    }

    fn register(&self, spec: RegionSpec) -> Result<Arc<Region>, FabricError> {
        self.inner.hub.check_running()?;
        let mut regions = self.inner.regions.write();
        let key = regions.reserve(spec.id)?;
        let region = Arc::new(Region::allocate(self.inner.config.local_id, &spec, key)?);
        regions.insert(spec.id, key, Arc::clone(&region));
        self.inner.regions.changed();
        Ok(region)
    }

    fn deregister(&self, id: RegionId) -> Result<(), FabricError> {
        if self.inner.regions.write().remove(id).is_some() {
            self.inner.regions.changed();
        }
        Ok(())
    }

    side_channel::hub_fabric_methods!(inner);

    fn shutdown(&self) {
        self.inner.hub.shut_down(true, || {});
    }
}
