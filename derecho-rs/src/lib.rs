//! derecho-rs: group communication with virtual synchrony over one-sided memory writes.
//!
//! A set of processes forms a **group** and moves through a sequence of **views** (membership
//! epochs). A layout assigns the members of each view to subgroups and shards; each shard gets
//! atomic multicast (every member delivers the same messages in the same order, once all members
//! have them) and replicated objects with RPC on top.
//!
//! Today this crate provides [`config`], the typed and validated `derecho.cfg` configuration,
//! and [`layout`], the pure allocation of a view's members to subgroups and shards.
//! Views, multicast, membership and RPC build on them.
#![forbid(unsafe_code)]

pub mod config;
pub mod layout;
