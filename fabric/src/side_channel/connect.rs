//! How links between two nodes come to exist, shared by every backend with a TCP side channel.
//!
//! Exactly one side dials: the node with the higher id. [`connect_by_rule`] returns a live
//! link if there is one, dials when this node has the higher id, and otherwise waits (bounded)
//! for the peer's incoming connection to be installed. [`dial_until`] retries the TCP connect
//! until the peer listens or the deadline passes, then hands the stream to the backend's
//! handshake.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::sync::lock;
use crate::{FabricError, Misaddress, NodeId};

/// Returns the link to `peer` under the "higher id dials" rule (see the module docs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn connect_by_rule<L>(
    local_id: NodeId,
    peer: NodeId,
    timeout: Duration,
    links: &Mutex<HashMap<NodeId, Arc<L>>>,
    changed: &Condvar,
    is_shut_down: impl Fn() -> bool,
    is_failed: impl Fn(&L) -> bool,
    dial: impl FnOnce(Instant) -> Result<Arc<L>, FabricError>,
) -> Result<Arc<L>, FabricError> {
    if peer == local_id {
        return Err(FabricError::Misaddressed(Misaddress::SelfLink));
    }
    let deadline = Instant::now() + timeout;
    let mut guard = lock(links);
    loop {
        if is_shut_down() {
            return Err(FabricError::Shutdown);
        }
        if let Some(l) = guard.get(&peer) {
            if !is_failed(l) {
                return Ok(Arc::clone(l));
            }
        }
        if local_id > peer {
            drop(guard);
            return dial(deadline);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(FabricError::Timeout {
                what: format!("waiting for node {peer} to connect"),
                after: timeout,
            });
        }
        guard = crate::sync::wait_timeout(changed, guard, deadline - now);
    }
}

/// Connects to `addr`, retrying until it answers or `deadline` passes, and runs `handshake`
/// on the first stream that connects.
pub(crate) fn dial_until<L>(
    peer: NodeId,
    addr: SocketAddr,
    deadline: Instant,
    is_shut_down: impl Fn() -> bool,
    handshake: impl FnOnce(TcpStream) -> Result<L, FabricError>,
) -> Result<L, FabricError> {
    let mut last_error = String::from("no attempt made");
    loop {
        if is_shut_down() {
            return Err(FabricError::Shutdown);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(FabricError::Connect {
                peer,
                reason: format!("gave up dialing {addr}: {last_error}"),
            });
        }
        let attempt = (deadline - now).min(Duration::from_secs(1));
        match TcpStream::connect_timeout(&addr, attempt) {
            Ok(stream) => return handshake(stream),
            Err(e) => {
                last_error = e.to_string();
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Pauses between repeated region lookups: a peer that has not registered the region yet
/// (members of a new view build their tables at slightly different moments) is asked again
/// soon, then less and less often: 100 µs, doubling up to 10 ms.
pub(crate) struct LookupBackoff {
    next: Duration,
}

impl LookupBackoff {
    /// The first pause is the shortest.
    pub(crate) fn new() -> Self {
        Self {
            next: Duration::from_micros(100),
        }
    }

    /// Sleeps for the current pause and lengthens the next one.
    pub(crate) fn pause(&mut self) {
        std::thread::sleep(self.next);
        self.next = (self.next * 2).min(Duration::from_millis(10));
    }
}
