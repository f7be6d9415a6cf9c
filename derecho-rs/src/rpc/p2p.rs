//! Point-to-point requests between members, and from external clients, over TCP.
//!
//! Every member listens on its `external_port`. A caller keeps one connection per peer
//! ([`PeerConn`]) and may have at most `p2p_window_size` requests outstanding on it (the credit
//! window); the serving side runs each connection's requests in order on a worker thread of its
//! own, never on the core loop, so a handler may itself send an ordered update and wait for it.
//! Requests and replies are bounded by `max_p2p_request_payload_size` and
//! `max_p2p_reply_payload_size`; a frame over the limit, a window overrun or garbage closes that
//! connection and nothing else.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::wire::{self, Frame, Kind, WireError, FRAME_SLACK};
use super::{lock, CallError, StartError};
use crate::auth::Auth;
use crate::NodeId;
use derecho_fabric::secure::{AuthError, ReadHalf, Role, WriteHalf};

/// Most connections a member serves at once.
pub const MAX_CONNECTIONS: usize = 256;

/// Most of those from one address.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 128;

/// Size limits of the P2P port.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request payload.
    pub request: usize,
    /// Largest reply payload.
    pub reply: usize,
    /// Outstanding requests per connection.
    pub window: usize,
}

impl Limits {
    /// The limit of frames a caller reads: replies, and relayed replies of a whole shard or a
    /// view.
    fn caller_frames(&self) -> usize {
        self.reply.saturating_mul(64).saturating_add(16 << 20)
    }
}

/// What the serving side does with requests.
pub trait Handler: Send + Sync {
    /// Runs a query on this member's replica of `subgroup`.
    fn query(&self, subgroup: usize, body: &[u8]) -> wire::Answer;
    /// Sends an update in this member's shard of `subgroup` and collects every reply.
    fn relay(&self, subgroup: usize, body: &[u8]) -> wire::Answer;
    /// Describes the current view.
    fn get_view(&self) -> wire::Answer;
    /// Records a member's reply to an ordered request of this node.
    fn ordered_reply(&self, id: u64, from: NodeId, result: wire::Answer);
}

/// The serving side: a listener thread and a reader and a worker per connection.
pub struct P2pServer {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for P2pServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2pServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl P2pServer {
    /// Serves `listener` with `handler`, authenticating members and external clients with
    /// `auth`.
    pub(crate) fn start(
        listener: TcpListener,
        me: NodeId,
        handler: Arc<dyn Handler>,
        limits: Limits,
        auth: Auth,
    ) -> Result<Self, StartError> {
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::io("reading the P2P address", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("p2p-{me}"))
            .spawn(move || accept_loop(&listener, &handler, limits, &s, &auth))
            .map_err(|e| StartError::io("starting the P2P thread", e))?;
        Ok(Self {
            stop,
            addr,
            thread: Some(thread),
        })
    }

    /// Stops accepting (open connections end when their peers close them or the process
    /// exits).
    pub fn stop(&mut self) {
        crate::gms::stop_accepting(&self.stop, self.addr, &mut self.thread);
    }
}

impl Drop for P2pServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: &TcpListener,
    handler: &Arc<dyn Handler>,
    limits: Limits,
    stop: &Arc<AtomicBool>,
    auth: &Auth,
) {
    let open = derecho_fabric::sync::Gate::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS);
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else { continue };
        let (h, s, auth) = (Arc::clone(handler), Arc::clone(stop), auth.clone());
        let from = stream.peer_addr().ok().map(|a| a.ip());
        let started = open.spawn(from, "p2p-conn", move || {
            let from = stream.peer_addr().ok();
            match serve_conn(stream, &h, limits, &s, &auth) {
                Ok(()) => {}
                Err(e @ (ServeError::Auth(_) | ServeError::MemberOnly { .. })) => {
                    tracing::warn!(?from, error = %e, "refused a P2P connection");
                }
                Err(e) => tracing::debug!(error = %e, "a P2P connection closed"),
            }
        });
        if let Err(e) = started {
            tracing::warn!(?from, "refused a P2P connection: {e}");
        }
    }
}

/// Why the server side closed a P2P connection (logged, never returned to a caller).
#[derive(Debug, thiserror::Error)]
enum ServeError {
    /// A socket or thread operation failed.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The caller sent more requests than its window allows.
    #[error("the caller exceeded its window of {window} requests")]
    Window { window: usize },
    /// The caller broke the protocol.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The caller did not authenticate.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// An external client sent a frame only members may send.
    #[error("an external client sent a member-only {kind:?} frame")]
    MemberOnly {
        /// The frame's kind.
        kind: Kind,
    },
    /// A member sent an ordered reply in another member's name.
    #[error("node {peer} sent an ordered reply in the name of node {claimed}")]
    Impersonation {
        /// The authenticated sender.
        peer: NodeId,
        /// The node the reply claims to come from.
        claimed: NodeId,
    },
}

fn serve_conn(
    tcp: TcpStream,
    handler: &Arc<dyn Handler>,
    limits: Limits,
    stop: &AtomicBool,
    auth: &Auth,
) -> Result<(), ServeError> {
    let io = |context: &'static str| move |source| ServeError::Io { context, source };
    let (stream, peer) = auth.accept_any(tcp, &[Role::P2p, Role::External])?;
    // Fails only on a closed socket, which the next call reports.
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io("configuring"))?;
    let control = stream.tcp().try_clone().map_err(io("cloning"))?;
    let (reader, writer) = stream.split().map_err(io("cloning"))?;
    let mut reader = BufReader::new(reader);
    wire::read_hello(&mut reader).map_err(io("reading the hello"))?;
    control.set_read_timeout(None).map_err(io("configuring"))?;
    let client = peer.is_some_and(|p| p.role == Role::External);
    let (tx, rx) = mpsc::sync_channel::<Frame>(limits.window.max(1));
    let h = Arc::clone(handler);
    let worker = std::thread::Builder::new()
        .name("p2p-work".into())
        .spawn(move || work(&rx, &h, writer))
        .map_err(io("starting a worker"))?;
    let limit = limits.request.saturating_add(FRAME_SLACK);
    let result = loop {
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        let frame = match wire::read_frame(&mut reader, limit) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(io("reading a request")(e)),
        };
        match frame.kind {
            Kind::OrderedReply if client => {
                break Err(ServeError::MemberOnly {
                    kind: Kind::OrderedReply,
                })
            }
            Kind::OrderedReply => match wire::take_u32(&frame.body) {
                Ok((from, _)) if peer.is_some_and(|p| p.id != from) => {
                    break Err(ServeError::Impersonation {
                        peer: peer.map_or(from, |p| p.id),
                        claimed: from,
                    })
                }
                Ok((from, rest)) => {
                    // A reply whose status does not decode (a newer peer's refusal, or a
                    // damaged frame) fails that reply only, not the connection.
                    let result = wire::parse_status(rest).unwrap_or_else(|e| {
                        Err(super::RemoteError::Malformed {
                            reason: e.to_string(),
                        })
                    });
                    handler.ordered_reply(frame.id, from, result);
                }
                Err(e) => break Err(ServeError::Wire(e)),
            },
            Kind::Query | Kind::Relay | Kind::GetView => match tx.try_send(frame) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    break Err(ServeError::Window {
                        window: limits.window,
                    })
                }
                Err(TrySendError::Disconnected(_)) => break Ok(()),
            },
            Kind::Reply => break Err(ServeError::Wire(WireError::Unexpected(Kind::Reply))),
        }
    };
    // Closing a socket the peer may have closed already; the worker only ends.
    let _ = control.shutdown(Shutdown::Both);
    drop(tx);
    // A panic in a handler was printed by the panic hook when it happened; the connection is
    // closed either way.
    let _ = worker.join();
    result
}

fn work(rx: &Receiver<Frame>, handler: &Arc<dyn Handler>, writer: WriteHalf) {
    let mut out = BufWriter::new(writer);
    while let Ok(f) = rx.recv() {
        let result = match f.kind {
            Kind::GetView => handler.get_view(),
            Kind::Query | Kind::Relay => match wire::take_u32(&f.body) {
                Ok((subgroup, body)) if f.kind == Kind::Query => {
                    handler.query(subgroup as usize, body)
                }
                Ok((subgroup, body)) => handler.relay(subgroup as usize, body),
                Err(e) => Err(super::RemoteError::Malformed {
                    reason: e.to_string(),
                }),
            },
            Kind::Reply | Kind::OrderedReply => continue,
        };
        let (status, body) = wire::status_parts(&result);
        if wire::write_frame(&mut out, Kind::Reply, f.id, &[&status, &body]).is_err() {
            return;
        }
    }
}

type Waiter = SyncSender<Result<wire::Answer, CallError>>;

/// A caller's connection to one peer.
pub struct PeerConn {
    node: NodeId,
    sock: TcpStream,
    writer: Mutex<BufWriter<WriteHalf>>,
    waiting: Mutex<HashMap<u64, Waiter>>,
    credits: Mutex<usize>,
    credit_freed: Condvar,
    failed: Mutex<Option<CallError>>,
    next_id: AtomicU64,
    limits: Limits,
}

impl std::fmt::Debug for PeerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConn")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl PeerConn {
    /// Connects to `node` at `addr` (bounded by `timeout`), authenticating with `auth` for
    /// `role` ([`Role::P2p`] between members, [`Role::External`] from a client). `node` is
    /// checked against the peer's authenticated id unless it is `NodeId::MAX` (unknown).
    pub(crate) fn connect(
        node: NodeId,
        addr: SocketAddr,
        limits: Limits,
        timeout: Duration,
        auth: &Auth,
        role: Role,
    ) -> Result<Arc<Self>, CallError> {
        let expect = (node != NodeId::MAX).then_some(node);
        let stream = auth.dial(&addr, timeout, role, expect).map_err(|e| {
            let e = std::io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}"));
            CallError::peer_failed(node, e)
        })?;
        // Fails only on a closed socket, which the first write reports.
        let _ = stream.set_nodelay(true);
        let io = |context: &'static str| move |source| CallError::io(context, source);
        let sock = stream.tcp().try_clone().map_err(io("cloning"))?;
        let (reader, writer) = stream.split().map_err(io("cloning"))?;
        let mut w = BufWriter::new(writer);
        wire::write_hello(&mut w).map_err(io("sending the hello"))?;
        let conn = Arc::new(Self {
            node,
            sock,
            writer: Mutex::new(w),
            waiting: Mutex::new(HashMap::new()),
            credits: Mutex::new(limits.window.max(1)),
            credit_freed: Condvar::new(),
            failed: Mutex::new(None),
            next_id: AtomicU64::new(1),
            limits,
        });
        let c = Arc::clone(&conn);
        std::thread::Builder::new()
            .name(format!("p2p-to-{node}"))
            .spawn(move || c.read_replies(reader))
            .map_err(io("starting the reply reader"))?;
        Ok(conn)
    }

    /// The peer.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Whether the connection has failed.
    pub fn is_failed(&self) -> bool {
        lock(&self.failed).is_some()
    }

    fn read_replies(&self, stream: ReadHalf) {
        let mut reader = BufReader::new(stream);
        let limit = self.limits.caller_frames();
        let why = loop {
            match wire::read_frame(&mut reader, limit) {
                Ok(f) if f.kind == Kind::Reply => {
                    let result =
                        wire::parse_status(&f.body).map_err(|source| CallError::Protocol {
                            node: self.node,
                            source,
                        });
                    if let Some(w) = lock(&self.waiting).remove(&f.id) {
                        // A full or closed slot means the caller stopped waiting (timed out).
                        let _ = w.try_send(result);
                    }
                }
                Ok(f) => {
                    break CallError::Protocol {
                        node: self.node,
                        source: WireError::Unexpected(f.kind),
                    }
                }
                Err(e) => break CallError::peer_failed(self.node, e),
            }
        };
        self.fail(why);
    }

    /// Fails the connection: every pending call gets `err`, later calls too.
    pub fn fail(&self, err: CallError) {
        {
            let mut f = lock(&self.failed);
            if f.is_none() {
                *f = Some(err);
            }
        }
        // The connection is failed either way; shutting it down only wakes its reader.
        let _ = self.sock.shutdown(Shutdown::Both);
        let waiting: Vec<Waiter> = lock(&self.waiting).drain().map(|(_, w)| w).collect();
        for w in waiting {
            // As above: a caller that stopped waiting needs no answer.
            let _ = w.try_send(Err(self.failure()));
        }
        self.credit_freed.notify_all();
    }

    fn failure(&self) -> CallError {
        lock(&self.failed).as_ref().map_or_else(
            || {
                let closed =
                    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "connection closed");
                CallError::peer_failed(self.node, closed)
            },
            CallError::clone,
        )
    }

    fn check(&self) -> Result<(), CallError> {
        match lock(&self.failed).as_ref() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Sends a request and waits (up to `timeout`, window wait included) for its reply.
    pub fn call(
        &self,
        kind: Kind,
        parts: &[&[u8]],
        timeout: Duration,
    ) -> Result<wire::Answer, CallError> {
        let deadline = Instant::now() + timeout;
        {
            let mut credits = lock(&self.credits);
            loop {
                self.check()?;
                if *credits > 0 {
                    *credits -= 1;
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(CallError::Timeout(timeout));
                }
                credits = derecho_fabric::sync::wait_timeout(&self.credit_freed, credits, left);
            }
        }
        let result = self.call_with_credit(kind, parts, deadline, timeout);
        *lock(&self.credits) += 1;
        self.credit_freed.notify_one();
        result
    }

    fn call_with_credit(
        &self,
        kind: Kind,
        parts: &[&[u8]],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<wire::Answer, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(1);
        lock(&self.waiting).insert(id, tx);
        // A failure between the check and the insert would leave the waiter unanswered.
        if let Err(e) = self.check() {
            lock(&self.waiting).remove(&id);
            return Err(e);
        }
        let written = wire::write_frame(&mut *lock(&self.writer), kind, id, parts);
        if let Err(e) = written {
            lock(&self.waiting).remove(&id);
            self.fail(CallError::peer_failed(self.node, e));
            return Err(self.failure());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) => r,
            Err(_) => {
                lock(&self.waiting).remove(&id);
                Err(CallError::Timeout(timeout))
            }
        }
    }

    /// Sends a one-way frame.
    pub fn send_oneway(&self, kind: Kind, id: u64, parts: &[&[u8]]) -> Result<(), CallError> {
        self.check()?;
        let written = wire::write_frame(&mut *lock(&self.writer), kind, id, parts);
        written.map_err(|e| {
            let err = CallError::peer_failed(self.node, e);
            self.fail(err.clone());
            err
        })
    }
}

/// A caller's connections, one per peer, made on first use and replaced after a failure.
#[derive(Debug)]
pub struct Peers {
    conns: Mutex<HashMap<NodeId, Arc<PeerConn>>>,
    limits: Limits,
    auth: Auth,
    role: Role,
}

impl Peers {
    /// No connections yet; new ones authenticate with `auth` for `role`.
    pub(crate) fn new(limits: Limits, auth: Auth, role: Role) -> Self {
        Self {
            conns: Mutex::new(HashMap::new()),
            limits,
            auth,
            role,
        }
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The connection to `node` at `addr`, connecting if there is none or it failed.
    pub fn get(&self, node: NodeId, addr: SocketAddr) -> Result<Arc<PeerConn>, CallError> {
        if let Some(c) = lock(&self.conns).get(&node) {
            if !c.is_failed() {
                return Ok(Arc::clone(c));
            }
        }
        let c = PeerConn::connect(
            node,
            addr,
            self.limits,
            Duration::from_secs(2),
            &self.auth,
            self.role,
        )?;
        lock(&self.conns).insert(node, Arc::clone(&c));
        Ok(c)
    }

    /// Fails and forgets the connections to nodes `keep` rejects, with `err(node)`.
    pub fn retain(&self, keep: impl Fn(NodeId) -> bool, err: impl Fn(NodeId) -> CallError) {
        let gone: Vec<Arc<PeerConn>> = {
            let mut conns = lock(&self.conns);
            let gone = conns
                .iter()
                .filter(|(n, _)| !keep(**n))
                .map(|(_, c)| Arc::clone(c))
                .collect();
            conns.retain(|n, _| keep(*n));
            gone
        };
        for c in gone {
            c.fail(err(c.node()));
        }
    }
}
