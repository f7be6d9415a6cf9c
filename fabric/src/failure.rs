//! The registry of failure subscribers shared by the backends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use crate::NodeId;

/// Called with the failed peer's id and a human-readable reason.
pub type FailureHandler = Arc<dyn Fn(NodeId, &str) + Send + Sync>;

/// Identifies a subscription, for [`crate::Fabric::unsubscribe_failures`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionId(pub u64);

/// Subscribers to link failures of one fabric.
#[derive(Default)]
pub(crate) struct FailureHub {
    next: AtomicU64,
    handlers: Mutex<Vec<(SubscriptionId, FailureHandler)>>,
}

impl FailureHub {
    pub(crate) fn subscribe(&self, handler: FailureHandler) -> SubscriptionId {
        let id = SubscriptionId(self.next.fetch_add(1, Ordering::Relaxed));
        lock(&self.handlers).push((id, handler));
        id
    }

    pub(crate) fn unsubscribe(&self, id: SubscriptionId) {
        lock(&self.handlers).retain(|(h, _)| *h != id);
    }

    /// Calls every handler (outside the lock, so handlers may subscribe or unsubscribe).
    pub(crate) fn report(&self, peer: NodeId, reason: &str) {
        let handlers: Vec<FailureHandler> = lock(&self.handlers)
            .iter()
            .map(|(_, h)| Arc::clone(h))
            .collect();
        tracing::warn!(peer, reason, "fabric link failed");
        for h in handlers {
            h(peer, reason);
        }
    }
}

impl std::fmt::Debug for FailureHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureHub")
            .field("subscribers", &lock(&self.handlers).len())
            .finish()
    }
}
