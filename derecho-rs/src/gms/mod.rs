//! Group membership: views, the GMS port, and forming the first view.
//!
//! Every node listens on its `gms_port`. Before the group exists, the contact node runs
//! [`first_view::lead`] there and the others [`first_view::join`] it. Afterwards each node keeps
//! answering on the port ([`GmsService`]): a member that is not the leader redirects joiners to
//! the leader. Changing the view once it is installed (failures, joins, leaves) builds on these
//! messages.

pub mod change;
pub mod first_view;
pub mod view;
pub mod wire;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use first_view::{GmsTimeouts, LayoutFn};
pub use view::{MemberInfo, View};
pub use wire::{GmsMessage, Refusal, WireError, PROTOCOL_VERSION};

/// Errors of the membership protocol.
#[derive(Debug, thiserror::Error)]
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

/// Answers the GMS port of an installed member: joiners are redirected to the leader; the
/// leader tells them the group does not admit members after it formed.
pub struct GmsService {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
    view: Arc<Mutex<View>>,
}

impl std::fmt::Debug for GmsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GmsService")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl GmsService {
    /// Starts answering on `listener` for member `me` of `view`.
    pub fn start(
        listener: TcpListener,
        me: crate::NodeId,
        view: View,
        handshake: Duration,
    ) -> Result<Self, GmsError> {
        let addr = listener
            .local_addr()
            .map_err(|e| GmsError::io("reading the GMS address", e))?;
        listener
            .set_nonblocking(false)
            .map_err(|e| GmsError::io("configuring the GMS listener", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let view = Arc::new(Mutex::new(view));
        let (s, v) = (Arc::clone(&stop), Arc::clone(&view));
        let thread = std::thread::Builder::new()
            .name(format!("gms-{me}"))
            .spawn(move || serve(&listener, me, &v, &s, handshake))
            .map_err(|e| GmsError::io("starting the GMS thread", e))?;
        Ok(Self {
            stop,
            addr,
            thread: Some(thread),
            view,
        })
    }

    /// Replaces the view the service answers from.
    pub fn set_view(&self, view: View) {
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = view;
    }

    /// Stops the service.
    pub fn stop(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for GmsService {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(
    listener: &TcpListener,
    me: crate::NodeId,
    view: &Mutex<View>,
    stop: &AtomicBool,
    handshake: Duration,
) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut stream) = conn else { continue };
        let _ = stream.set_read_timeout(Some(handshake));
        let _ = stream.set_write_timeout(Some(handshake));
        let msg = match wire::read_msg(&mut stream) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "ignored a GMS connection");
                continue;
            }
        };
        let GmsMessage::Join { member, .. } = msg else {
            tracing::warn!("ignored a GMS message that was not a join request");
            continue;
        };
        let v = view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let reply = match v.leader() {
            Some(l) if l.id != me => GmsMessage::Redirect {
                leader: l.id,
                addr: l.gms_addr(),
            },
            _ if v.rank_of(member.id).is_some() => GmsMessage::Refused(Refusal::IdInUse),
            _ => GmsMessage::Refused(Refusal::NotNow(
                "the group has formed; it does not admit new members into an installed view".into(),
            )),
        };
        let _ = wire::write_msg(&mut stream, &reply);
    }
}
