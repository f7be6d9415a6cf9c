//! derecho-rs: group communication with virtual synchrony over one-sided memory writes.
//!
//! A set of processes forms a **group** and moves through a sequence of **views** (membership
//! epochs). A layout assigns the members of each view to subgroups and shards; each shard gets
//! atomic multicast (every member delivers the same messages in the same order, once all members
//! have them) and replicated objects with RPC on top.
//!
//! The modules, bottom up:
//!
//! * [`config`] — the typed and validated `derecho.cfg` configuration;
//! * [`layout`] — the pure allocation of a view's members to subgroups and shards;
//! * [`multicast`] — one view's atomic multicast per shard: small messages in SST slots, large
//!   ones through RDMC, round-robin total order, delivery on stability;
//! * [`gms`] — views, the GMS port, forming the first view, and the total-restart decisions
//!   ([`gms::restart`]);
//! * [`node`] — a member process: configuration in, a running member out;
//! * [`rpc`] — replicated objects: ordered updates with replies, point-to-point queries,
//!   state transfer, external clients, and persistent subgroups
//!   ([`GroupBuilder::persistent`]) on the logs of [`persist`].
//!
//! * [`testing`] — a check for a user's replicated type, and configurations for local tests.
//!
//! Follow a message from [`node::GroupNode::send`] through [`multicast`]'s module docs to the
//! delivery callback.
//!
//! # A replicated object
//!
//! A counter replicated on every member of one shard; this group has a single member, which
//! starts it (real groups name a contact in `derecho.cfg`, see [`config`]):
//!
//! ```
//! use derecho::{GroupBuilder, LayoutPolicy, Replicated, SubgroupPolicy, TypePolicy};
//! use std::io::{Read, Write};
//!
//! #[derive(Default)]
//! struct Counter(i64);
//! impl Replicated for Counter {
//!     type Update = i64; // add this much
//!     type Query = (); // read the count
//!     type Reply = i64;
//!     fn apply(&mut self, add: i64) -> i64 {
//!         self.0 += add;
//!         self.0
//!     }
//!     fn query(&self, (): ()) -> i64 {
//!         self.0
//!     }
//!     fn save(&self, out: &mut dyn Write) -> std::io::Result<()> {
//!         out.write_all(&self.0.to_le_bytes())
//!     }
//!     fn load(&mut self, input: &mut dyn Read) -> std::io::Result<()> {
//!         let mut b = [0; 8];
//!         input.read_exact(&mut b)?;
//!         self.0 = i64::from_le_bytes(b);
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! derecho::testing::check_replicated(Counter::default, &[5, -2], &[()])?;
//! let config = derecho::testing::local_config(0, None)?;
//! let policy = LayoutPolicy {
//!     types: vec![TypePolicy::new("Counter", vec![SubgroupPolicy::flexible_even(1, 1, 3)])],
//! };
//! let group = GroupBuilder::new(&config)
//!     .replicated::<Counter>("Counter", |_| Counter::default())
//!     .layout(policy)
//!     .start()?;
//! let counter = group.subgroup::<Counter>(0)?;
//! let replies = counter.ordered_send(&5)?.wait()?; // one reply per member of the shard
//! assert_eq!(replies[&0].as_ref().ok(), Some(&5));
//! assert_eq!(counter.p2p_send(0, &())?, 5);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_docs)]

mod auth;
pub mod config;
pub mod gms;
pub mod layout;
pub mod multicast;
pub mod node;
pub mod rpc;
pub mod testing;

pub use config::{Config, ConfigError, ConfigLoader};
/// The storage contract and versioned logs persistent subgroups are built on.
pub use derecho_fabric::secure;
pub use derecho_persist as persist;
pub use gms::View;
pub use layout::{LayoutError, LayoutPolicy, SubgroupPolicy, TypePolicy};
pub use node::{GroupError, GroupNode};
pub use rpc::{
    CallError, Group, GroupBuilder, LookupError, PersistenceError, RemoteError, Replicated,
    ReplyError, ReplyMap, RpcError, SendError, StartError, Subgroup, TooLarge, WaitError,
};

/// Identifies a process in a group (the configuration's `local_id`).
pub type NodeId = derecho_fabric::NodeId;
