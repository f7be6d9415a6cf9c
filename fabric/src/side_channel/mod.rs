//! The TCP side channel that the tcp, shm and RDMA-style (libfabric, verbs) backends share.
//!
//! Every one of these backends listens on one TCP port and keeps one connection per peer: the
//! node with the higher id dials, the other accepts, and a hello and its answer check the
//! protocol version, both node ids and the dialer's incarnation before a link is installed. What
//! travels afterwards differs (tcp carries the writes themselves; the others carry lookups and
//! control messages), and so do the hello's extra contents, but the machinery around it does
//! not. This module owns that machinery, once:
//!
//! * [`Hub`]: the listening socket's accept loop (bounded concurrent handshakes), the table of
//!   links with its install rule (a live link to the same incarnation wins; a new incarnation
//!   replaces the old link), dialing under the "higher id dials" rule, the failure subscribers
//!   and the shutdown sequence;
//! * the checks of a hello ([`check_hello`]) and of the answer to one ([`Welcome::check`]);
//! * [`link`]: per-link failure state, outstanding region lookups and the lookup retry loop;
//! * [`frame`]: the byte layout of a side-channel message header;
//! * [`regions`]: a fabric's registered regions by key and by name.
//!
//! It must not know a backend's message kinds or how writes move.

mod connect;
pub(crate) mod frame;
pub(crate) mod link;
pub(crate) mod regions;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::failure::FailureHub;
use crate::secure::{self, Credentials, ReadHalf, Role, Stream, WriteHalf};
use crate::sync::lock;
use crate::{
    Completion, CompletionSource, FabricError, Link, NodeId, RegionId, RemoteRegion, WriteRequest,
};
use frame::DecodeError;
use link::LinkState;

/// A backend's link, as the link table and the public [`Link`] handle see it.
pub(crate) trait SideLink: Send + Sync + 'static {
    /// The type's name, for debug output.
    const NAME: &'static str;
    /// The link's peer, failure state, lookups and completions.
    fn state(&self) -> &Arc<LinkState>;
    /// Marks the link failed for `reason`, telling the failure subscribers if `report`. Only the
    /// first call has an effect.
    fn fail_with(&self, reason: String, report: bool);
    /// Sends a goodbye, best effort, before a graceful local shutdown.
    fn say_goodbye(&self);
    /// [`Link::remote_region`].
    fn remote_region(&self, id: RegionId, timeout: Duration) -> Result<RemoteRegion, FabricError>;
    /// Posts one write (see [`Link::write`]); returns its ticket for [`SideLink::completions`].
    fn post_write(&self, req: &WriteRequest<'_>, signaled: bool) -> Result<u64, FabricError>;

    /// What tells when the link's writes are applied: its [`LinkState`] by default.
    fn completions(&self) -> Arc<dyn CompletionSource> {
        Arc::clone(self.state()) as Arc<dyn CompletionSource>
    }

    /// [`Link::poll_progress`]; nothing by default.
    fn poll_progress(&self) -> bool {
        false
    }

    /// Fails the link, reporting it, because a newer incarnation of the peer replaced it.
    fn replaced(&self) {
        self.fail_with("replaced by a new incarnation of the peer".into(), true);
    }

    /// Fails the link without reporting it: the local fabric is shutting down.
    fn close(&self) {
        self.fail_with("local fabric shut down".into(), false);
    }
}

/// The public face of a side-channel link: what [`crate::Fabric::connect`] hands out.
pub(crate) struct Handle<L>(Arc<L>);

impl<L: SideLink> std::fmt::Debug for Handle<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.state().describe(f, L::NAME)
    }
}

impl<L: SideLink> Link for Handle<L> {
    fn peer(&self) -> NodeId {
        self.0.state().peer()
    }

    fn remote_region(&self, id: RegionId, timeout: Duration) -> Result<RemoteRegion, FabricError> {
        self.0.remote_region(id, timeout)
    }

    fn write(&self, req: &WriteRequest<'_>) -> Result<(), FabricError> {
        self.0.post_write(req, false).map(|_| ())
    }

    fn write_signaled(&self, req: &WriteRequest<'_>) -> Result<Completion, FabricError> {
        let ticket = self.0.post_write(req, true)?;
        Ok(Completion::new(self.0.completions(), ticket))
    }

    fn failure(&self) -> Option<String> {
        self.0.state().failure()
    }

    fn fail(&self, reason: &str) {
        self.0.fail_with(reason.to_string(), true);
    }

    fn poll_progress(&self) -> bool {
        self.0.poll_progress()
    }
}

fn handle<L: SideLink>(link: Arc<L>) -> Arc<dyn Link> {
    Arc::new(Handle(link))
}

/// The settings a hub is built from (each backend's config has them).
#[derive(Clone, Debug)]
pub(crate) struct HubConfig {
    pub local_id: NodeId,
    pub listen: SocketAddr,
    pub max_handshakes: usize,
    pub max_links: usize,
    /// What every connection must prove before the backend's hello is read.
    pub credentials: Arc<Credentials>,
    /// Bound on that proof.
    pub handshake_timeout: Duration,
}

impl HubConfig {
    /// The hub settings of a backend's config.
    pub(crate) fn new(
        local_id: NodeId,
        listen: SocketAddr,
        max_handshakes: usize,
        max_links: usize,
        credentials: &Credentials,
        handshake_timeout: Duration,
    ) -> Self {
        Self {
            local_id,
            listen,
            max_handshakes,
            max_links,
            credentials: Arc::new(credentials.clone()),
            handshake_timeout,
        }
    }
}

/// Failure reporting, shared with the links (they hold it weakly, like their fabric).
#[derive(Default)]
pub(crate) struct Reporter {
    failures: FailureHub,
    shut_down: AtomicBool,
}

impl Reporter {
    /// Reports a failed link to the subscribers, unless the fabric is shutting down.
    pub(crate) fn report(&self, peer: NodeId, reason: &str) {
        if !self.shut_down.load(Ordering::SeqCst) {
            self.failures.report(peer, reason);
        }
    }
}

/// Why a link was not installed.
#[derive(Debug)]
pub(crate) enum Refused<E> {
    /// A live link to the same incarnation of the peer exists.
    Duplicate,
    /// The table is at `max_links`.
    Full,
    /// The backend could not start the link.
    Start(E),
}

impl<E: std::fmt::Display> std::fmt::Display for Refused<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Duplicate => f.write_str("a live link to this incarnation exists"),
            Refused::Full => f.write_str("too many links"),
            Refused::Start(e) => e.fmt(f),
        }
    }
}

/// A fabric's listening socket, its links and its failure subscribers (see the module docs).
pub(crate) struct Hub<L> {
    config: HubConfig,
    local_addr: SocketAddr,
    incarnation: u64,
    start: Instant,
    reporter: Arc<Reporter>,
    handshakes: Arc<crate::sync::Gate>,
    links: Mutex<HashMap<NodeId, Arc<L>>>,
    links_changed: Condvar,
}

impl<L: SideLink> Hub<L> {
    /// Binds the listening socket (`what` names it in errors) and draws this process's
    /// incarnation. The caller starts the accept loop with [`Hub::serve`].
    pub(crate) fn bind(config: HubConfig, what: &str) -> Result<(Self, TcpListener), FabricError> {
        let listener = TcpListener::bind(config.listen)
            .map_err(|e| FabricError::io(format!("binding the {what} {}", config.listen), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| FabricError::io(format!("reading the {what}'s bound address"), e))?;
        let incarnation = incarnation_nonce(config.local_id);
        // Half the handshakes at most from one address: one host cannot take them all.
        let handshakes =
            crate::sync::Gate::new(config.max_handshakes, config.max_handshakes.div_ceil(2));
        let hub = Self {
            config,
            local_addr,
            incarnation,
            start: Instant::now(),
            reporter: Arc::default(),
            handshakes,
            links: Mutex::new(HashMap::new()),
            links_changed: Condvar::new(),
        };
        Ok((hub, listener))
    }

    /// This node's id.
    pub(crate) fn local_id(&self) -> NodeId {
        self.config.local_id
    }

    /// Where peers reach this node's side channel.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This process's incarnation: random, so a restarted peer is told apart from the old one.
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Time since the fabric started.
    pub(crate) fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// The failure subscribers.
    pub(crate) fn failures(&self) -> &FailureHub {
        &self.reporter.failures
    }

    /// What links report their failures to.
    pub(crate) fn reporter(&self) -> std::sync::Weak<Reporter> {
        Arc::downgrade(&self.reporter)
    }

    /// Writes the fabric's debug form: its type `name`, node id and address.
    pub(crate) fn describe(&self, f: &mut std::fmt::Formatter<'_>, name: &str) -> std::fmt::Result {
        f.debug_struct(name)
            .field("local_id", &self.config.local_id)
            .field("addr", &self.local_addr)
            .finish_non_exhaustive()
    }

    /// [`FabricError::Shutdown`] once the fabric is shutting down.
    pub(crate) fn check_running(&self) -> Result<(), FabricError> {
        if self.is_shut_down() {
            return Err(FabricError::Shutdown);
        }
        Ok(())
    }

    /// Whether the fabric is shutting down.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.reporter.shut_down.load(Ordering::SeqCst)
    }

    /// Wakes everyone waiting for a link to appear or change.
    pub(crate) fn link_changed(&self) {
        let _g = lock(&self.links);
        self.links_changed.notify_all();
    }

    /// The link to `peer`, failed or not.
    pub(crate) fn link(&self, peer: NodeId) -> Option<Arc<dyn Link>> {
        lock(&self.links).get(&peer).cloned().map(handle)
    }

    /// The link table, locked (for backends that update every link together).
    pub(crate) fn links(&self) -> MutexGuard<'_, HashMap<NodeId, Arc<L>>> {
        lock(&self.links)
    }

    /// Installs a freshly handshaken link to `peer`, made by `start`, which runs under the
    /// table's lock (so an accepting side can send its answer before the link becomes visible).
    /// A live link to the same incarnation wins; one to another incarnation is replaced and
    /// failed (outside the lock: failure handlers may call back into the fabric).
    pub(crate) fn install<E>(
        &self,
        peer: NodeId,
        incarnation: u64,
        start: impl FnOnce() -> Result<Arc<L>, E>,
    ) -> Result<Arc<L>, Refused<E>> {
        let mut links = lock(&self.links);
        let mut replaced = None;
        if let Some(old) = links.get(&peer) {
            if !old.state().is_failed() {
                if old.state().incarnation() == incarnation {
                    return Err(Refused::Duplicate);
                }
                replaced = Some(Arc::clone(old));
            }
        } else if links.len() >= self.config.max_links {
            return Err(Refused::Full);
        }
        let link = start().map_err(Refused::Start)?;
        links.insert(peer, Arc::clone(&link));
        self.links_changed.notify_all();
        drop(links);
        if let Some(old) = replaced {
            old.replaced();
        }
        Ok(link)
    }

    /// The link to `peer` at `addr` under the "higher id dials" rule: a live link if there is
    /// one; else this node dials, proves its credentials (see [`crate::secure`]) and runs
    /// `handshake` on the connected stream if its id is the higher, or waits for the peer's
    /// connection to be installed. Bounded by `timeout`.
    pub(crate) fn connect(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        timeout: Duration,
        handshake: impl FnOnce(Stream) -> Result<Arc<L>, FabricError>,
    ) -> Result<Arc<dyn Link>, FabricError> {
        let is_shut_down = || self.is_shut_down();
        connect::connect_by_rule(
            self.config.local_id,
            peer,
            timeout,
            &self.links,
            &self.links_changed,
            is_shut_down,
            |l| l.state().is_failed(),
            |deadline| {
                let creds = Arc::clone(&self.config.credentials);
                let (me, bound) = (self.config.local_id, self.config.handshake_timeout);
                connect::dial_until(peer, addr, deadline, is_shut_down, move |tcp| {
                    let proven = secure::connect(tcp, &creds, Role::Fabric, me, Some(peer), bound)
                        .map_err(|e| FabricError::Connect {
                            peer,
                            reason: format!("authenticating with {addr}: {e}"),
                        })?;
                    handshake(proven.0)
                })
            },
        )
        .map(handle)
    }

    /// Starts the accept loop on a thread (`{backend}-accept-{id}`): each incoming connection
    /// proves its credentials and is then handed to `handshake` on a thread of its own
    /// (`{backend}-hello`), with the node id it authenticated as (`None` in the open mode), at
    /// most `max_handshakes` at once; more are closed at once.
    pub(crate) fn serve(
        &self,
        listener: TcpListener,
        backend: &'static str,
        handshake: impl Fn(Stream, Option<NodeId>) + Clone + Send + 'static,
    ) -> Result<(), FabricError> {
        let creds = Arc::clone(&self.config.credentials);
        let (me, bound) = (self.config.local_id, self.config.handshake_timeout);
        let handshake = move |tcp: TcpStream| {
            let from = peer_label(&tcp);
            match secure::accept(tcp, &creds, Role::Fabric, me, bound) {
                Ok((stream, peer)) => handshake(stream, peer.map(|p| p.id)),
                Err(e) => tracing::warn!(%from, error = %e, "refused a fabric connection"),
            }
        };
        let reporter = Arc::clone(&self.reporter);
        let handshakes = Arc::clone(&self.handshakes);
        let hello = format!("{backend}-hello");
        std::thread::Builder::new()
            .name(format!("{backend}-accept-{}", self.config.local_id))
            .spawn(move || accept_loop(&listener, &reporter, &handshakes, &hello, handshake))
            .map_err(|e| FabricError::io("spawning the accept thread", e))?;
        tracing::debug!(
            node = self.config.local_id,
            addr = %self.local_addr,
            backend,
            "fabric listening"
        );
        Ok(())
    }

    /// Shuts down, once: fails every link (after a goodbye if `graceful`), runs `then`, wakes
    /// whoever waits for a link, and wakes the accept loop so it sees the flag and exits.
    pub(crate) fn shut_down(&self, graceful: bool, then: impl FnOnce()) {
        if self.reporter.shut_down.swap(true, Ordering::SeqCst) {
            return;
        }
        let links: Vec<Arc<L>> = lock(&self.links).values().cloned().collect();
        for l in &links {
            if graceful {
                l.say_goodbye();
            }
            l.close();
        }
        then();
        self.link_changed();
        // Only wakes the blocking accept; if it fails the listener is already gone.
        let _ = TcpStream::connect_timeout(&self.local_addr, Duration::from_millis(200));
    }
}

fn accept_loop(
    listener: &TcpListener,
    reporter: &Reporter,
    handshakes: &Arc<crate::sync::Gate>,
    hello_thread: &str,
    handshake: impl Fn(TcpStream) + Clone + Send + 'static,
) {
    for conn in listener.incoming() {
        if reporter.shut_down.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "side-channel accept failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let handshake = handshake.clone();
        let from = stream.peer_addr().ok().map(|a| a.ip());
        if let Err(e) = handshakes.spawn(from, hello_thread, move || handshake(stream)) {
            tracing::warn!(?from, "closed a fabric connection: {e}");
        }
    }
}

/// A random-looking 64-bit value for this process and node: the time, the process id and the
/// node id, mixed by the splitmix64 finaliser.
fn incarnation_nonce(id: NodeId) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = t ^ (u64::from(std::process::id()) << 32) ^ u64::from(id).rotate_left(48);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Where an incoming connection comes from, for log lines.
fn peer_label(stream: &TcpStream) -> String {
    stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Starts an incoming handshake: bounds the stream by `timeout` and reads the hello with `read`,
/// which gives `Ok(Err(why))` for a message that is not a valid hello. Logs and returns `None`
/// if no hello came; else the hello and where it came from (for log lines).
pub(crate) fn receive_hello<H>(
    stream: &mut Stream,
    timeout: Duration,
    read: impl FnOnce(&mut Stream) -> std::io::Result<Result<H, DecodeError>>,
) -> Option<(H, String)> {
    let from = peer_label(stream.tcp());
    // Setting timeouts fails only on a closed socket, which the read below reports.
    let _ = bound_handshake(stream, timeout);
    match read(stream) {
        Ok(Ok(hello)) => Some((hello, from)),
        Ok(Err(reason)) => {
            tracing::warn!(%from, "refused a side-channel connection: {reason}");
            None
        }
        Err(e) => {
            tracing::warn!(%from, error = %e, "side-channel connection closed before its hello");
            None
        }
    }
}

/// Bounds both directions of a stream during its handshake.
pub(crate) fn bound_handshake(stream: &Stream, timeout: Duration) -> std::io::Result<()> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))
}

/// Readies a handshaken stream for a link: no Nagle delay, blocking reads, sends bounded by
/// `send_timeout`. Splits it into the receiving thread's half and the senders' half, and gives
/// one more handle on the socket to shut the connection down from anywhere.
pub(crate) fn link_stream(
    stream: Stream,
    send_timeout: Duration,
    peer: NodeId,
) -> Result<(ReadHalf, WriteHalf, TcpStream), FabricError> {
    let ctx = |what: &str| format!("{what} for the link to node {peer}");
    stream
        .set_nodelay(true)
        .and_then(|()| stream.set_read_timeout(None))
        .and_then(|()| stream.set_write_timeout(Some(send_timeout)))
        .map_err(|e| FabricError::io(ctx("configuring the connection"), e))?;
    let control = stream
        .tcp()
        .try_clone()
        .map_err(|e| FabricError::io(ctx("cloning the socket"), e))?;
    let (reader, writer) = stream
        .split()
        .map_err(|e| FabricError::io(ctx("cloning the socket"), e))?;
    Ok((reader, writer, control))
}

/// Why an incoming hello is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HelloRefusal {
    /// It speaks another protocol version.
    #[error("protocol version {version}, this node speaks {speaks}")]
    Version {
        /// The hello's version.
        version: u64,
        /// This node's version.
        speaks: u64,
    },
    /// It claims this node's id, or wants another node.
    #[error("it claims node {claims} and wants node {wants}, this is node {me}")]
    Node {
        /// The node the hello says it comes from.
        claims: NodeId,
        /// The node the hello is for.
        wants: NodeId,
        /// This node.
        me: NodeId,
    },
    /// Its hello claims another node than the one its connection authenticated as.
    #[error("it claims node {claims} but authenticated as node {authenticated}")]
    Impersonation {
        /// The node the hello says it comes from.
        claims: NodeId,
        /// The node the connection's handshake proved.
        authenticated: NodeId,
    },
}

/// Why this node's hello got no usable answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The hello could not be sent.
    #[error("sending hello to {addr}: {source}")]
    Send {
        /// Where it was sent.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The answer is not a welcome of this side channel.
    #[error("{addr} does not speak this side channel")]
    Foreign {
        /// Who answered.
        addr: SocketAddr,
    },
    /// No answer could be read.
    #[error("no welcome from {addr}: {source}")]
    NoWelcome {
        /// Where the hello went.
        addr: SocketAddr,
        /// The OS error (or the malformed answer).
        #[source]
        source: std::io::Error,
    },
    /// Another node answered.
    #[error("{addr} is node {node}, not node {peer}")]
    WrongNode {
        /// Where the hello went.
        addr: SocketAddr,
        /// The node that answered.
        node: u64,
        /// The node wanted.
        peer: NodeId,
    },
}

/// Checks an incoming hello: protocol `version` (this node speaks `speaks`), and that node
/// `claims` wants node `wants`, which must be `me` (and not be `claims`).
pub(crate) fn check_hello(
    me: NodeId,
    claims: NodeId,
    wants: NodeId,
    version: u64,
    speaks: u64,
    authenticated: Option<NodeId>,
) -> Result<(), HelloRefusal> {
    if let Some(a) = authenticated.filter(|a| *a != claims) {
        return Err(HelloRefusal::Impersonation {
            claims,
            authenticated: a,
        });
    }
    if version != speaks {
        return Err(HelloRefusal::Version { version, speaks });
    }
    if wants != me || claims == me {
        return Err(HelloRefusal::Node { claims, wants, me });
    }
    Ok(())
}

/// The answer to this node's hello, as far as every backend reads it alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Welcome {
    /// Accepted by node `node`.
    Accepted { node: u64 },
    /// Refused: this is node `node`, not the one the hello wanted.
    WrongNode { node: u64 },
    /// Refused for a reason the backend explains.
    Other,
}

impl Welcome {
    /// Whether the answer lets the link to `peer` at `addr` go ahead: `Ok(true)` if accepted
    /// by that node, `Ok(false)` for a refusal the caller explains, `Err` naming the node that
    /// answered instead.
    pub(crate) fn check(self, peer: NodeId, addr: SocketAddr) -> Result<bool, HandshakeError> {
        match self {
            Welcome::Accepted { node } if node == u64::from(peer) => Ok(true),
            Welcome::Accepted { node } | Welcome::WrongNode { node } => {
                Err(HandshakeError::WrongNode { addr, node, peer })
            }
            Welcome::Other => Ok(false),
        }
    }
}

/// The [`crate::Fabric`] methods a side-channel backend answers from its [`Hub`]: expands,
/// inside `impl Fabric for X`, to `local_addr`, `connect`, `link`, `subscribe_failures`,
/// `unsubscribe_failures` and `now`. `$inner` is the path from `self` to the backend's shared
/// state, which has a `hub` field and a `handshake_outgoing(peer, addr, stream)` method.
macro_rules! hub_fabric_methods {
    ($($inner:tt).+) => {
        fn local_addr(&self) -> Option<std::net::SocketAddr> {
            Some(self.$($inner).+.hub.local_addr())
        }

        fn connect(
            &self,
            peer: $crate::NodeId,
            addr: std::net::SocketAddr,
            timeout: std::time::Duration,
        ) -> Result<std::sync::Arc<dyn $crate::Link>, $crate::FabricError> {
            let inner = &self.$($inner).+;
            inner.hub.connect(peer, addr, timeout, |stream| {
                inner.handshake_outgoing(peer, addr, stream)
            })
        }

        fn link(&self, peer: $crate::NodeId) -> Option<std::sync::Arc<dyn $crate::Link>> {
            self.$($inner).+.hub.link(peer)
        }

        fn subscribe_failures(&self, handler: $crate::FailureHandler) -> $crate::SubscriptionId {
            self.$($inner).+.hub.failures().subscribe(handler)
        }

        fn unsubscribe_failures(&self, id: $crate::SubscriptionId) {
            self.$($inner).+.hub.failures().unsubscribe(id)
        }

        fn now(&self) -> std::time::Duration {
            self.$($inner).+.hub.now()
        }
    };
}
pub(crate) use hub_fabric_methods;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellos_are_checked_for_version_and_nodes() {
        assert_eq!(check_hello(1, 2, 1, 3, 3, None), Ok(()));
        assert!(matches!(
            check_hello(1, 2, 1, 4, 3, None),
            Err(HelloRefusal::Version { .. })
        ));
        assert!(matches!(
            check_hello(1, 2, 5, 3, 3, None),
            Err(HelloRefusal::Node { .. })
        ));
        assert!(matches!(
            check_hello(1, 1, 1, 3, 3, None),
            Err(HelloRefusal::Node { .. })
        ));
    }

    #[test]
    fn a_welcome_must_come_from_the_dialled_node() {
        let addr: SocketAddr = ([127, 0, 0, 1], 9).into();
        assert!(matches!(
            Welcome::Accepted { node: 4 }.check(4, addr),
            Ok(true)
        ));
        assert!(Welcome::Accepted { node: 5 }.check(4, addr).is_err());
        assert!(Welcome::WrongNode { node: 5 }.check(4, addr).is_err());
        assert!(matches!(Welcome::Other.check(4, addr), Ok(false)));
    }
}
