//! Group membership: views, the GMS port, and forming the first view.
//!
//! Every node listens on its `gms_port`. Before the group exists, the contact node runs
//! `first_view::lead` there and the others `first_view::join` it. Afterwards each node keeps
//! answering on the port ([`GmsService`]): a member that is not the leader redirects joiners to
//! the leader, and the leader queues joiners for its next view change.

// The pure membership core (admission, the change protocol, the view manager's decisions) is
// internal; the `testing` feature re-exports what the simulator drives from
// `crate::testing::membership`, so without it their public items are unreachable on purpose.
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
pub(crate) mod admission;
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
pub(crate) mod change;
pub mod first_view;
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
pub(crate) mod manager;
pub mod restart;
#[cfg(test)]
mod testing;
pub mod transfer;
pub mod view;
pub mod wire;

use std::collections::HashMap;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use derecho_fabric::secure::{AuthError, Role, Stream};
use derecho_fabric::sync::lock;

use crate::auth::{claims_match, Auth};

pub use admission::Admission;
pub use first_view::{GmsTimeouts, LayoutFn};
pub use view::{MemberInfo, Transfer, View};
pub use wire::{GmsMessage, Refusal, WireError, PROTOCOL_VERSION};

/// Errors of the membership protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GmsError {
    /// A socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A GMS message could not be exchanged.
    #[error("{context}: {source}")]
    Wire {
        /// What was being done.
        context: String,
        /// What went wrong.
        #[source]
        source: WireError,
    },
    /// The group refused this node.
    #[error("the group refused this node: {}", describe(.0))]
    Refused(Refusal),
    /// A bound ran out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The peer broke the protocol.
    #[error("membership protocol violation: {0}")]
    Protocol(String),
    /// The node was asked to stop.
    #[error("stopped")]
    Stopped,
}

fn describe(r: &Refusal) -> String {
    match r {
        Refusal::IdInUse => "its node id is already in use by another member".into(),
        Refusal::VersionMismatch { expected } => {
            format!("it speaks another membership protocol version (the group speaks {expected})")
        }
        Refusal::NotNow(why) => why.clone(),
    }
}

impl GmsError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        GmsError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn wire(context: impl Into<String>, source: WireError) -> Self {
        GmsError::Wire {
            context: context.into(),
            source,
        }
    }
}

/// Most nodes that may wait to join at once; more are told to come back later.
pub const MAX_PENDING_JOINS: usize = 64;

/// Answers the GMS port of an installed member: joiners are redirected to the leader; the
/// leader queues them for its change protocol, which proposes them with the next view change,
/// and [`GmsService::welcome`] sends them that view once it is computed.
pub struct GmsService {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

struct Shared {
    me: crate::NodeId,
    view: Mutex<View>,
    joins: change::JoinQueue,
    waiting: Mutex<HashMap<crate::NodeId, Stream>>,
    auth: Auth,
    timeouts: GmsTimeouts,
    /// Connections whose first message is being read: in all, and per address.
    reading: Arc<derecho_fabric::sync::Gate>,
    /// Rung when a join is queued: the current view's core loop, which proposes it.
    join_bell: Mutex<Option<Arc<derecho_fabric::Doorbell>>>,
}

/// Most connections the GMS port reads at once (each for at most `gms_handshake_timeout_ms`);
/// more are closed at once, so that silent connections cannot hold the port.
pub const MAX_HANDSHAKES: usize = 32;

/// Most of those from one address.
pub const MAX_HANDSHAKES_PER_PEER: usize = 8;

impl std::fmt::Debug for GmsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GmsService")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl GmsService {
    /// Starts answering on `listener` for member `me` of `view`.
    pub(crate) fn start(
        listener: TcpListener,
        auth: Auth,
        me: crate::NodeId,
        view: View,
        timeouts: GmsTimeouts,
    ) -> Result<Self, GmsError> {
        let addr = listener
            .local_addr()
            .map_err(|e| GmsError::io("reading the GMS address", e))?;
        listener
            .set_nonblocking(false)
            .map_err(|e| GmsError::io("configuring the GMS listener", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            me,
            view: Mutex::new(view),
            joins: Arc::new(Mutex::new(Vec::new())),
            waiting: Mutex::new(HashMap::new()),
            auth,
            timeouts,
            reading: derecho_fabric::sync::Gate::new(MAX_HANDSHAKES, MAX_HANDSHAKES_PER_PEER),
            join_bell: Mutex::new(None),
        });
        let (s, sh) = (Arc::clone(&stop), Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name(format!("gms-{me}"))
            .spawn(move || serve(&listener, &sh, &s))
            .map_err(|e| GmsError::io("starting the GMS thread", e))?;
        Ok(Self {
            stop,
            addr,
            thread: Some(thread),
            shared,
        })
    }

    /// The queue of nodes waiting to join (filled only while this member leads).
    pub fn joins(&self) -> change::JoinQueue {
        Arc::clone(&self.shared.joins)
    }

    /// The doorbell of the core loop that proposes queued joins (the current view's), rung
    /// whenever a join is queued so that the leader proposes it at once instead of at its
    /// loop's next idle wake-up.
    pub(crate) fn set_join_bell(&self, bell: Option<Arc<derecho_fabric::Doorbell>>) {
        *lock(&self.shared.join_bell) = bell;
    }

    /// Replaces the view the service answers from; joiners that are now members leave the
    /// queue.
    pub fn set_view(&self, view: View) {
        lock(&self.shared.joins).retain(|m| view.rank_of(m.id).is_none());
        *lock(&self.shared.view) = view;
    }

    /// Sends `view` to the joiners it admits whose join requests this member holds (bounded by
    /// the acknowledgement timeout for each). A joiner that cannot be reached is logged; it
    /// may ask again and is then sent the view it belongs to.
    pub fn welcome(&self, view: &View) {
        let mut waiting = lock(&self.shared.waiting);
        for id in &view.joined {
            if let Some(mut stream) = waiting.remove(id) {
                if let Err(e) = send_view(&mut stream, view, &self.shared.timeouts) {
                    tracing::warn!(node = id, error = %e, "could not send the new view to a joiner");
                }
            }
        }
        // Requests of nodes that are gone from the queue (another leader admitted them) are
        // dropped.
        let pending = lock(&self.shared.joins);
        waiting.retain(|id, _| pending.iter().any(|m| m.id == *id));
    }

    /// Stops the service.
    pub fn stop(&mut self) {
        stop_accepting(&self.stop, self.addr, &mut self.thread);
    }
}

/// Stops a thread that serves a listener with blocking accepts: raises `stop`, wakes the
/// accept with a connection of its own, and joins the thread. Does nothing the second time.
pub(crate) fn stop_accepting(
    stop: &AtomicBool,
    addr: SocketAddr,
    thread: &mut Option<JoinHandle<()>>,
) {
    if stop.swap(true, Ordering::SeqCst) {
        return;
    }
    // Only wakes the blocking accept; if it fails the listener is already gone.
    let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
    if let Some(t) = thread.take() {
        // The serving thread catches nothing worth reporting; a panic there was logged.
        let _ = t.join();
    }
}

impl Drop for GmsService {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Prepare, acknowledgement, commit: the joiner's side is [`first_view::join`].
fn send_view(stream: &mut Stream, view: &View, timeouts: &GmsTimeouts) -> Result<(), GmsError> {
    let _ = stream.set_write_timeout(Some(timeouts.handshake));
    let _ = stream.set_read_timeout(Some(timeouts.ack));
    wire::write_msg(stream, &GmsMessage::Prepare(view.clone()))
        .map_err(|e| GmsError::wire("sending the view", e))?;
    match wire::read_msg(stream) {
        Ok(GmsMessage::Ack { vid }) if vid == view.vid => {}
        Ok(other) => {
            return Err(GmsError::Protocol(format!(
                "expected an acknowledgement of view {}, got {other:?}",
                view.vid
            )))
        }
        Err(e) => return Err(GmsError::wire("waiting for the acknowledgement", e)),
    }
    wire::write_msg(stream, &GmsMessage::Commit { vid: view.vid })
        .map_err(|e| GmsError::wire("committing the view", e))
}

/// Accepts connections and reads each on a thread of its own (bounded by [`MAX_HANDSHAKES`]
/// and [`MAX_HANDSHAKES_PER_PEER`]), so that a silent connection never delays another.
fn serve(listener: &TcpListener, shared: &Arc<Shared>, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else { continue };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let sh = Arc::clone(shared);
        if let Err(e) = shared
            .reading
            .spawn(Some(peer.ip()), "gms-conn", move || handle(stream, &sh))
        {
            tracing::warn!(%peer, "closed a GMS connection: {e}");
        }
    }
}

/// Authenticates a connection to the GMS port. A node that speaks the open protocol to a
/// secure group is told so in its own protocol (a clear refusal it can print), instead of
/// finding the connection closed until its join times out.
pub(crate) fn accept_gms(
    auth: &Auth,
    tcp: TcpStream,
) -> Result<(Stream, Option<derecho_fabric::secure::Peer>), AuthError> {
    let spare = tcp.try_clone().ok();
    let accepted = auth.accept(tcp, Role::Gms);
    if let (Err(AuthError::NotSecure), Some(mut spare)) = (&accepted, spare) {
        let refusal = GmsMessage::Refused(Refusal::NotNow(format!(
            "this group requires [SECURITY] mode = {} with the group's credentials",
            auth.credentials().mode()
        )));
        // Best effort, and bounded: the node is refused either way. Reading what it sent
        // before closing keeps the refusal from being lost to a reset.
        if wire::write_msg(&mut spare, &refusal).is_ok() {
            let _ = spare.shutdown(std::net::Shutdown::Write);
            let _ = spare.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = std::io::copy(&mut (&mut spare).take(64 << 10), &mut std::io::sink());
        }
    }
    accepted
}

/// Answers one connection to the GMS port: a probe, or a join request.
fn handle(tcp: TcpStream, shared: &Shared) {
    let from = tcp.peer_addr().ok();
    let (mut stream, peer) = match accept_gms(&shared.auth, tcp) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(?from, error = %e, "refused a GMS connection");
            return;
        }
    };
    let handshake = shared.timeouts.handshake;
    let _ = stream.set_read_timeout(Some(handshake));
    let _ = stream.set_write_timeout(Some(handshake));
    let _ = stream.set_nodelay(true);
    let msg = match wire::read_msg(&mut stream) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "ignored a GMS connection");
            return;
        }
    };
    let (version, member) = match msg {
        // A running group admits a node with logs like any joiner: its replicas are replaced
        // by the group's through state transfer.
        GmsMessage::Join { version, member }
        | GmsMessage::Rejoin {
            version, member, ..
        } => (version, member),
        GmsMessage::Probe => {
            let v = lock(&shared.view).clone();
            if let Some(l) = v.leader() {
                let running = GmsMessage::Running {
                    vid: v.vid,
                    leader: l.gms_addr(),
                };
                // Best effort: a prober that misses the answer founds or asks again.
                let _ = wire::write_msg(&mut stream, &running);
            }
            return;
        }
        _ => {
            tracing::warn!("ignored a GMS message that was not a join request");
            return;
        }
    };
    if let Err(why) = claims_match(peer, member.id) {
        tracing::warn!(?from, "refused a join: {why}");
        return;
    }
    let v = lock(&shared.view).clone();
    let decision = {
        let queued = lock(&shared.joins);
        admission::admit(&v, shared.me, version, &member, &queued, MAX_PENDING_JOINS)
    };
    match decision {
        Admission::Refuse(r) => {
            tracing::warn!(node = member.id, refusal = ?r, "refused a join");
            // Best effort: logged above; the connection closes either way.
            let _ = wire::write_msg(&mut stream, &GmsMessage::Refused(r));
            return;
        }
        Admission::Redirect { leader, members } => {
            // Best effort: a joiner that misses it asks again (it retries until its bound).
            let _ = wire::write_msg(
                &mut stream,
                &GmsMessage::Redirect {
                    leader: leader.id,
                    addr: leader.gms_addr(),
                    members,
                },
            );
            return;
        }
        Admission::SendView => {
            if let Err(e) = send_view(&mut stream, &v, &shared.timeouts) {
                tracing::warn!(node = member.id, error = %e, "could not resend the view");
            }
            return;
        }
        Admission::Queue => {}
    }
    tracing::info!(
        node = member.id,
        "a node asks to join; it goes in the next view"
    );
    // The joiner waits as long as the view change takes.
    let _ = stream.set_read_timeout(None);
    // Its connection is kept before the change protocol can see it in the queue, under
    // both locks in the order `welcome` takes them: otherwise a view change could admit
    // it and `welcome` find no connection to send the view on, and the joiner would
    // never learn it is a member.
    let mut waiting = lock(&shared.waiting);
    let mut joins = lock(&shared.joins);
    waiting.insert(member.id, stream);
    match joins.iter_mut().find(|m| m.id == member.id) {
        Some(m) => *m = member,
        None => joins.push(member),
    }
    drop((joins, waiting));
    if let Some(bell) = lock(&shared.join_bell).as_ref() {
        bell.ring();
    }
}
