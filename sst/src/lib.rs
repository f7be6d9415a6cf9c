//! The shared state table (SST).
//!
//! One row per member of the current view, laid out identically in every process. A node writes
//! only its own row, locally, and pushes byte ranges of it to its peers with one-sided writes
//! through [`derecho_fabric`]; reading any row is a local memory read. Rows hold plain data
//! declared in a schema with fixed offsets (counters, flags, fixed arrays, byte areas for the
//! small-message ring). Predicates over the local copy of the table are evaluated by a core loop
//! that parks when idle and is woken by the fabric. A failed member's row is frozen.
//!
//! Where things are:
//!
//! * [`schema`] — [`SchemaBuilder`] and the typed field handles;
//! * [`table`] — [`Sst`]: setup, the memory rules, local reads and writes (read its docs for how
//!   byte areas written by a peer are read safely);
//! * [`push`] — pushes to all or chosen members, with or without completion;
//! * [`predicates`] — one-time, recurrent and transition predicates, and [`Sst::step`];
//! * [`core_loop`] — [`CoreLoop`], the thread that steps, spins and parks;
//! * [`failure`] — heartbeats ([`FailureDetector`]), freezing, the failure upcall, and why the
//!   defaults are what they are;
//! * [`barrier`] — [`Sst::sync_with_members`].
//!
//! A typical member:
//!
//! ```no_run
//! # use std::{sync::Arc, time::Duration};
//! # use derecho_fabric::{Fabric, RegionId};
//! # use derecho_sst::*;
//! # fn demo(fabric: Arc<dyn Fabric>, members: Vec<Member>, my_rank: usize) -> Result<(), SstError> {
//! let mut b = SchemaBuilder::new();
//! let counter = b.field::<u64>("counter");
//! let sst = Sst::new(fabric, &members, my_rank, b.build()?, RegionId(7), Duration::from_secs(10))?;
//! sst.on_failure(|node, reason| eprintln!("node {node} failed: {reason}"));
//! let n = sst.num_members();
//! sst.predicates().one_time(
//!     move |t| (0..n).all(|r| t.get(counter, r) >= 10),
//!     |_| println!("everyone counted to 10"),
//! )?;
//! let core = CoreLoop::start(Arc::clone(&sst), CoreLoopConfig::default())?;
//! let heartbeats = FailureDetector::start(Arc::clone(&sst))?;
//! for i in 1..=10 {
//!     sst.set(counter, i);
//!     sst.push(counter)?;
//! }
//! sst.sync_with_members(Duration::from_secs(5))?;
//! heartbeats.stop();
//! core.stop();
//! # Ok(()) }
//! ```
//!
//! This crate must not know about views, subgroups or messages: those live in `derecho`.
#![forbid(unsafe_code)]

pub mod barrier;
pub mod core_loop;
mod error;
pub mod failure;
pub mod predicates;
pub mod push;
pub mod schema;
pub mod table;

pub use barrier::BarrierTicket;
pub use core_loop::{CoreLoop, CoreLoopConfig, LoopStats};
pub use error::{ConfigError, MembersError, SchemaError, SstError};
pub use failure::{FailureDetector, FailureUpcall};
pub use predicates::{Condition, PredicateHandle, PredicateKind, Predicates, Trigger};
pub use push::Targets;
pub use schema::{
    ArrayField, BytesField, Field, FieldInfo, FieldKind, RowRange, Schema, SchemaBuilder, Word,
};
pub use table::{Member, Sst, SstConfig, MAX_MEMBERS};
