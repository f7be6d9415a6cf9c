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
//! * [`gms`] — views, the GMS port, and forming the first view;
//! * [`node`] — a member process: configuration in, a running member out;
//! * [`rpc`] — replicated objects: ordered updates with replies, point-to-point queries,
//!   state transfer, external clients.
//!
//! Follow a message from [`node::GroupNode::send`] through [`multicast`]'s module docs to the
//! delivery callback.
#![forbid(unsafe_code)]

pub mod config;
pub mod gms;
pub mod layout;
pub mod multicast;
pub mod node;
pub mod rpc;

/// Identifies a process in a group (the configuration's `local_id`).
pub type NodeId = derecho_fabric::NodeId;
