//! Persistent, versioned state for replicated objects.
//!
//! * [`version`] — [`Version`] packing of `(view id, sequence number)` and the
//!   [`Hlc`] timestamp stored with every version.
//! * [`storage`] — the [`Storage`] contract (a flat namespace of named files
//!   with explicit durability) and its backends: [`FileStorage`] on a
//!   directory, [`SimStorage`] in memory with crash simulation.
//! * [`conformance`] — checks any [`Storage`] implementation against the contract.
//! * [`log`] — [`Log`], a segmented, checksummed, versioned log that recovers
//!   from torn tails, with group-commit [`Log::persist`], truncation, trimming
//!   and a [`TrimPolicy`].
//! * [`object`] — single checksummed saved objects ([`save_object`],
//!   [`load_object`]).
//! * [`names`] — stable file names per (subgroup type, index, shard, field) and
//!   the restart scan [`min_latest_persisted`].
#![forbid(unsafe_code)]

pub mod conformance;
mod error;
pub mod log;
pub mod names;
pub mod object;
pub mod storage;
pub mod version;

pub use error::{Error, Result, StorageError};
pub use log::{Entry, EntryInfo, Log, LogIter, LogOptions, TrimPolicy};
pub use names::{field_name, min_latest_persisted, shard_prefix};
pub use object::{load_object, save_object};
pub use storage::{FileStorage, SimStorage, Storage, StorageResult};
pub use version::{pack, unpack, Hlc, Version, INVALID};
