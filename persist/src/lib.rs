//! Persistent, versioned state for replicated objects.
//!
//! * [`version`] — [`Version`] packing of `(view id, sequence number)` and the
//!   [`Hlc`] timestamp stored with every version.
//! * [`storage`] — the [`Storage`] contract (a flat namespace of named files
//!   with explicit durability) and its backends: [`FileStorage`] on a
//!   directory, [`SimStorage`] in memory with crash simulation.
//! * [`conformance`] — checks any [`Storage`] implementation against the contract.
//! * [`object`] — single checksummed saved objects ([`save_object`],
//!   [`load_object`]).
#![forbid(unsafe_code)]

pub mod conformance;
mod error;
pub mod object;
pub mod storage;
pub mod version;

pub use error::{Error, Result, StorageError};
pub use object::{load_object, save_object};
pub use storage::{FileStorage, SimStorage, Storage, StorageResult};
pub use version::{pack, unpack, Hlc, Version, INVALID};
