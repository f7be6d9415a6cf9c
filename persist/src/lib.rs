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
//! * [`persistent`] — [`Persistent<T>`] and [`DeltaPersistent<T>`] fields and
//!   the object-safe [`PersistentField`] trait.
//! * [`names`] — stable file names per (subgroup type, index, shard, field) and
//!   the restart scan [`min_latest_persisted`].
//! * [`sign`] — optional Ed25519 signatures over logs: key files
//!   ([`generate_signing_key`], [`Signer`]), the chain rule, and
//!   [`Log::verify`] with a [`PublicKey`].
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use derecho_persist::{pack, FileStorage, Hlc, Persistent, Storage};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let storage: Arc<dyn Storage> = Arc::new(FileStorage::open(dir.path())?);
//!
//! let mut counter = Persistent::<u64>::open(storage.clone(), "counter", || 0)?;
//! *counter.get_mut() += 5;
//! counter.version(pack(0, 0), Hlc::new(1_000, 0))?;
//! *counter.get_mut() += 2;
//! counter.version(pack(0, 1), Hlc::new(2_000, 0))?;
//! assert_eq!(counter.persist()?, pack(0, 1));
//! drop(counter);
//!
//! // After a restart the latest value and every version are back.
//! let counter = Persistent::<u64>::open(storage, "counter", || 0)?;
//! assert_eq!(*counter, 7);
//! assert_eq!(counter.get_version(pack(0, 0))?, Some(5));
//! assert_eq!(counter.get_by_time(Hlc::new(1_500, 0))?, Some(5));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod conformance;
mod error;
pub mod log;
pub mod names;
pub mod object;
pub mod persistent;
pub mod rng;
pub mod sign;
pub mod storage;
pub mod version;

pub use error::{Error, Result, StorageError};
pub use log::{BatchEntry, Entry, EntryInfo, Log, LogIter, LogOptions, TrimPolicy, VerifyError};
pub use names::{field_name, min_latest_persisted, shard_prefix};
pub use object::{load_object, save_object};
pub use persistent::{min_persisted_version, Delta, DeltaPersistent, Persistent, PersistentField};
pub use rng::SplitMix;
pub use sign::{generate_signing_key, public_key_of, KeyError, PublicKey, Signature, Signer};
pub use storage::{FileStorage, SimOp, SimStorage, Storage, StorageResult};
pub use version::{pack, unpack, Hlc, Version, INVALID};
