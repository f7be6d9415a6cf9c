//! Replicated objects and RPC: the API applications program against.
//!
//! A type that implements [`Replicated`] has one replica on every member of each shard of its
//! subgroups. **Updates** ([`Subgroup::ordered_send`]) are multicast in the shard's total order;
//! every member applies them in delivery order and replies, and the caller gets a
//! [`ReplyMap`] that resolves to one result per member. **Queries** ([`Subgroup::p2p_send`]) go
//! to one member of any subgroup, whether or not the caller belongs to it, and run on that
//! member's P2P worker, never on the core loop. A node that joins a shard receives the replica's
//! state from a member that held it ([`Replicated::save`], [`Replicated::load`]) before it
//! delivers anything in the new view. Processes outside the group use
//! [`external::ExternalClient`].
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use std::io::{Read, Write};
//! use derecho::config::ConfigLoader;
//! use derecho::layout::{LayoutPolicy, SubgroupPolicy, TypePolicy};
//! use derecho::rpc::{GroupBuilder, Replicated};
//!
//! #[derive(Default)]
//! struct Counter(i64);
//!
//! impl Replicated for Counter {
//!     type Update = i64;
//!     type Query = ();
//!     type Reply = i64;
//!     fn apply(&mut self, add: i64) -> i64 {
//!         self.0 += add;
//!         self.0
//!     }
//!     fn query(&self, _: ()) -> i64 {
//!         self.0
//!     }
//!     fn save(&self, out: &mut dyn Write) -> std::io::Result<()> {
//!         out.write_all(&self.0.to_le_bytes())
//!     }
//!     fn load(&mut self, input: &mut dyn Read) -> std::io::Result<()> {
//!         let mut b = [0u8; 8];
//!         input.read_exact(&mut b)?;
//!         self.0 = i64::from_le_bytes(b);
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ConfigLoader::new().load()?;
//! let policy = LayoutPolicy {
//!     types: vec![TypePolicy::new("Counter", vec![SubgroupPolicy::flexible_even(1, 2, 3)])],
//! };
//! let group = GroupBuilder::new(&config)
//!     .replicated::<Counter>("Counter", |_| Counter::default())
//!     .layout(policy)
//!     .start()?;
//! let counter = group.subgroup::<Counter>(0)?;
//! let replies: BTreeMap<_, _> = counter.ordered_send(&5)?.wait()?;
//! let now = counter.p2p_send(group.view().members[0].id, &())?;
//! # Ok(()) }
//! ```

pub mod external;
pub mod p2p;
pub mod wire;

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

pub(crate) use derecho_fabric::sync::lock;
use derecho_fabric::sync::{read_lock, wait_timeout, write_lock};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth::Auth;
use crate::config::Config;
use crate::gms::View;
use crate::layout::{LayoutError, LayoutPolicy};
use crate::multicast::{Delivery, HEADER_LEN};
use crate::node::{layout_from_policy, GroupError, GroupNode, Hooks, StateHooks, ViewHandler};
use crate::NodeId;
use derecho_fabric::secure::Role;
use p2p::{Handler, Limits, P2pServer, Peers};
use wire::Kind;

mod builder;
mod error;
mod group;
mod info;
mod persist;
mod replicated;
mod reply;
mod state;
mod subgroup;

pub use builder::GroupBuilder;
pub use error::{
    CallError, LookupError, PersistenceError, RemoteError, ReplyError, RpcError, SendError,
    StartError, TooLarge, WaitError,
};
pub use group::Group;
pub use info::{GroupInfo, TypeInfo};
pub use persist::{logged_trims, TRIM_LOG};
use persist::{Persistence, ReplicaLog};
pub use replicated::{QueryTask, Replicated};
pub use reply::ReplyMap;
pub use state::MAX_PENDING;
pub use subgroup::Subgroup;
use {replicated::*, state::*, subgroup::*};

/// Bytes of the multicast header an ordered update travels behind (for sizing profiles).
pub const ORDERED_OVERHEAD: usize = HEADER_LEN + wire::ORDERED_HEADER;
