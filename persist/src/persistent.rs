//! Versioned values: [`Persistent<T>`] (every version stores the whole value)
//! and [`DeltaPersistent<T>`] (versions store deltas, with a full checkpoint at
//! a bounded distance), plus the object-safe [`PersistentField`] trait a
//! replicated object's registry uses to drive all its fields together.
//!
//! Both types keep the current value in memory and a [`Log`] of its versions.
//! Mutations change only the in-memory value; [`version`](Persistent::version)
//! records it as a new version, [`persist`](Persistent::persist) makes recorded
//! versions durable. Values are encoded with `bincode`.
//!
//! Entry kinds in the log: [`KIND_FULL`] holds a whole value (for delta types,
//! a checkpoint); [`KIND_DELTA`] holds one delta.
//!
//! A field opened with a [`LogOptions::signer`] signs every version it writes
//! (see [`sign`](crate::sign)); [`signature`](Persistent::signature) and
//! [`verify`](Persistent::verify) read and check the chain. A
//! [`DeltaPersistent`] version in which nothing changed writes no entry and so
//! has no signature of its own.

use std::ops::Deref;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::log::{Log, LogOptions, VerifyError};
use crate::sign::{PublicKey, Signature};
use crate::storage::Storage;
use crate::version::{Hlc, Version, INVALID};

/// Log entry kind of a whole serialized value.
pub const KIND_FULL: u8 = 0;
/// Log entry kind of a serialized delta.
pub const KIND_DELTA: u8 = 1;

/// Default number of deltas after which [`DeltaPersistent`] writes a checkpoint.
pub const DEFAULT_CHECKPOINT_INTERVAL: u32 = 64;

/// A type that can describe its changes as deltas.
pub trait Delta {
    /// One change set.
    type Delta: Serialize + DeserializeOwned;
    /// Returns (and forgets) the changes made since the last call, or `None`
    /// if nothing changed.
    fn take_delta(&mut self) -> Option<Self::Delta>;
    /// Applies a change set taken from an equal value. Should not itself
    /// record a pending delta (any that it records is discarded).
    fn apply_delta(&mut self, delta: Self::Delta);
}

/// The operations a registry needs from every persistent field of a
/// replicated object, independent of the value type.
pub trait PersistentField: Send {
    /// The field's log name.
    fn name(&self) -> &str;
    /// Records the current value as `version`, stamped `hlc`.
    fn version(&mut self, version: Version, hlc: Hlc) -> Result<()>;
    /// Makes every recorded version durable; returns the persisted version.
    fn persist(&self) -> Result<Version>;
    /// Drops the versions newer than `version` and reloads the value.
    fn truncate(&mut self, version: Version) -> Result<()>;
    /// Drops history older than `version` (the value as of `version` stays
    /// readable).
    fn trim(&mut self, version: Version) -> Result<()>;
    /// The latest recorded version.
    fn latest_version(&self) -> Version;
    /// The latest durable version.
    fn persisted_version(&self) -> Version;
    /// The signature stored with `version`, if the field's log signed it (see
    /// [`Log::signature`]).
    fn signature(&self, version: Version) -> Result<Option<Signature>>;
    /// Checks the field's signature chain against `key` (see [`Log::verify`]).
    fn verify(&self, key: &PublicKey) -> Result<Version, VerifyError>;
}

/// The minimum persisted version over `fields` ([`INVALID`] for none): the
/// version up to which the whole object is durable.
pub fn min_persisted_version<'a>(
    fields: impl IntoIterator<Item = &'a dyn PersistentField>,
) -> Version {
    fields
        .into_iter()
        .map(|f| f.persisted_version())
        .min()
        .unwrap_or(INVALID)
}

type Factory<T> = Box<dyn Fn() -> T + Send + Sync>;

fn encode<T: Serialize + ?Sized>(name: &str, value: &T) -> Result<Vec<u8>> {
    bincode::serialize(value).map_err(|e| Error::codec(name, e))
}

fn decode<T: DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<T> {
    bincode::deserialize(bytes).map_err(|e| Error::codec(name, e))
}

/// A value whose every version is stored whole.
pub struct Persistent<T> {
    log: Log,
    value: T,
    init: Factory<T>,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Persistent<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistent")
            .field("log", &self.log)
            .field("value", &self.value)
            .finish_non_exhaustive()
    }
}

impl<T: Serialize + DeserializeOwned> Persistent<T> {
    /// Opens the field `name`: the value is the latest logged one, or
    /// `initial()` when the log is empty. `initial` is kept (hence `Fn`, not
    /// `FnOnce`): a truncate that removes every version resets the value to it.
    pub fn open(
        storage: Arc<dyn Storage>,
        name: &str,
        initial: impl Fn() -> T + Send + Sync + 'static,
    ) -> Result<Self> {
        Self::open_with(storage, name, LogOptions::default(), initial)
    }

    /// [`open`](Persistent::open) with explicit log options.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        name: &str,
        options: LogOptions,
        initial: impl Fn() -> T + Send + Sync + 'static,
    ) -> Result<Self> {
        let log = Log::open(storage, name, options)?;
        let init: Factory<T> = Box::new(initial);
        let value = match Self::load(&log, Version::MAX)? {
            Some(v) => v,
            None => init(),
        };
        Ok(Persistent { log, value, init })
    }

    fn load(log: &Log, at: Version) -> Result<Option<T>> {
        match log.latest_at_or_before(at)? {
            Some(e) => decode(log.name(), &e.payload).map(Some),
            None => Ok(None),
        }
    }

    /// The current in-memory value.
    pub fn get(&self) -> &T {
        &self.value
    }

    /// Mutable access to the in-memory value; recorded at the next
    /// [`version`](Persistent::version).
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.value
    }

    /// Replaces the in-memory value.
    pub fn set(&mut self, value: T) {
        self.value = value;
    }

    /// Records the current value as `version` (which must be newer than the
    /// latest), stamped `hlc`.
    pub fn version(&mut self, version: Version, hlc: Hlc) -> Result<()> {
        let bytes = encode(self.log.name(), &self.value)?;
        self.log.append(version, hlc, KIND_FULL, &bytes)
    }

    /// The value as of the latest retained version `<= version`.
    pub fn get_version(&self, version: Version) -> Result<Option<T>> {
        Self::load(&self.log, version)
    }

    /// Drops versions newer than `version` and reloads the in-memory value
    /// from the log (or `initial()` if nothing is left).
    pub fn truncate(&mut self, version: Version) -> Result<()> {
        self.log.truncate(version)?;
        self.value = match Self::load(&self.log, Version::MAX)? {
            Some(v) => v,
            None => (self.init)(),
        };
        Ok(())
    }

    /// Drops versions older than the one current at `version`, which stays
    /// readable.
    pub fn trim(&mut self, version: Version) -> Result<()> {
        match self.log.find_back(version, |_| true) {
            Some(info) => self.log.trim(info.version),
            None => Ok(()),
        }
    }
}

/// A value whose versions are stored as deltas, with a full checkpoint
/// whenever [`checkpoint_interval`](DeltaPersistent::checkpoint_interval)
/// deltas follow the last one, so reading any version (and opening) replays at
/// most that many deltas. The first recorded version is always a checkpoint.
/// A version in which nothing changed writes nothing but still becomes the
/// latest version (and is recorded durably by the next persist).
pub struct DeltaPersistent<T> {
    log: Log,
    value: T,
    init: Factory<T>,
    interval: u32,
    /// Deltas written since the latest checkpoint; `None` before the first.
    since_checkpoint: Option<u32>,
}

impl<T: std::fmt::Debug> std::fmt::Debug for DeltaPersistent<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaPersistent")
            .field("log", &self.log)
            .field("value", &self.value)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl<T: Delta + Serialize + DeserializeOwned> DeltaPersistent<T> {
    /// Opens the field `name` with [`DEFAULT_CHECKPOINT_INTERVAL`].
    pub fn open(
        storage: Arc<dyn Storage>,
        name: &str,
        initial: impl Fn() -> T + Send + Sync + 'static,
    ) -> Result<Self> {
        Self::open_with(
            storage,
            name,
            LogOptions::default(),
            DEFAULT_CHECKPOINT_INTERVAL,
            initial,
        )
    }

    /// Opens the field `name`: the value is the latest checkpoint plus the
    /// deltas after it, or `initial()` when the log is empty.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        name: &str,
        options: LogOptions,
        checkpoint_interval: u32,
        initial: impl Fn() -> T + Send + Sync + 'static,
    ) -> Result<Self> {
        let log = Log::open(storage, name, options)?;
        let mut field = DeltaPersistent {
            value: initial(),
            init: Box::new(initial),
            log,
            interval: checkpoint_interval,
            since_checkpoint: None,
        };
        field.reload()?;
        Ok(field)
    }

    /// Rebuilds the in-memory value from the log.
    fn reload(&mut self) -> Result<()> {
        match self.rebuild(Version::MAX)? {
            Some((value, deltas)) => {
                self.value = value;
                self.since_checkpoint = Some(deltas);
            }
            None => {
                self.value = (self.init)();
                self.since_checkpoint = None;
            }
        }
        // The rebuilt value is what the log holds: any delta recorded while rebuilding it is
        // not a change to log.
        let _ = self.value.take_delta();
        Ok(())
    }

    /// The value as of `at` and the number of deltas replayed to get it.
    fn rebuild(&self, at: Version) -> Result<Option<(T, u32)>> {
        let name = self.log.name();
        let Some(cp) = self.log.find_back(at, |i| i.kind == KIND_FULL) else {
            return match self.log.find_back(at, |_| true) {
                Some(e) => Err(Error::Corrupt {
                    name: name.to_string(),
                    offset: 0,
                    reason: format!("delta at version {} has no checkpoint before it", e.version),
                }),
                None => Ok(None),
            };
        };
        let Some(entry) = self.log.get(cp.version)? else {
            return Ok(None);
        };
        let mut value: T = decode(name, &entry.payload)?;
        let mut deltas = 0u32;
        for entry in self.log.iter_from(cp.version) {
            let entry = entry?;
            if entry.version > at {
                break;
            }
            if entry.kind == KIND_DELTA {
                value.apply_delta(decode(name, &entry.payload)?);
                deltas += 1;
            }
        }
        Ok(Some((value, deltas)))
    }

    /// The configured checkpoint interval.
    pub fn checkpoint_interval(&self) -> u32 {
        self.interval
    }

    /// The current in-memory value.
    pub fn get(&self) -> &T {
        &self.value
    }

    /// Mutable access to the in-memory value; the type's own delta tracking
    /// records what changed.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.value
    }

    /// Records the changes since the last version as `version`: a delta, a
    /// checkpoint when one is due, or nothing when nothing changed.
    ///
    /// If the append fails (for example the storage is full) the taken delta
    /// is not lost: the next recorded version is a full checkpoint.
    pub fn version(&mut self, version: Version, hlc: Hlc) -> Result<()> {
        let result = self.record(version, hlc);
        if result.is_err() {
            self.since_checkpoint = None;
        }
        result
    }

    fn record(&mut self, version: Version, hlc: Hlc) -> Result<()> {
        let name = self.log.name().to_string();
        let delta = self.value.take_delta();
        let checkpoint_due = match self.since_checkpoint {
            None => true,
            Some(n) => delta.is_some() && n >= self.interval,
        };
        if checkpoint_due {
            let bytes = encode(&name, &self.value)?;
            self.log.append(version, hlc, KIND_FULL, &bytes)?;
            self.since_checkpoint = Some(0);
            return Ok(());
        }
        match delta {
            Some(d) => {
                let bytes = encode(&name, &d)?;
                self.log.append(version, hlc, KIND_DELTA, &bytes)?;
                self.since_checkpoint = self.since_checkpoint.map(|n| n + 1);
                Ok(())
            }
            None => self.log.advance_version(version),
        }
    }

    /// The value as of the latest retained version `<= version`.
    pub fn get_version(&self, version: Version) -> Result<Option<T>> {
        Ok(self.rebuild(version)?.map(|(v, _)| v))
    }

    /// Drops versions newer than `version` and rebuilds the in-memory value.
    pub fn truncate(&mut self, version: Version) -> Result<()> {
        self.log.truncate(version)?;
        self.reload()
    }

    /// Drops history older than the checkpoint the value at `version` is
    /// built from, so every version from `version` on stays readable.
    pub fn trim(&mut self, version: Version) -> Result<()> {
        match self.log.find_back(version, |i| i.kind == KIND_FULL) {
            Some(cp) => self.log.trim(cp.version),
            None => Ok(()),
        }
    }
}

/// Accessors and the [`PersistentField`] implementation shared by both kinds.
macro_rules! common_impls {
    ($ty:ident, $($bound:tt)+) => {
        impl<T> $ty<T> {
            /// The field's log (a shared handle: a persistence thread can call
            /// [`Log::persist`] on a clone while this field records versions).
            pub fn log(&self) -> &Log {
                &self.log
            }

            /// The field's name.
            pub fn name(&self) -> &str {
                self.log.name()
            }

            /// The latest recorded version.
            pub fn latest_version(&self) -> Version {
                self.log.latest_version()
            }

            /// The latest durable version.
            pub fn persisted_version(&self) -> Version {
                self.log.persisted_version()
            }

            /// Makes every recorded version durable; returns the persisted version.
            pub fn persist(&self) -> Result<Version> {
                self.log.persist()
            }

            /// Number of log entries retained.
            pub fn num_versions(&self) -> usize {
                self.log.len()
            }

            /// The signature stored with `version`, if it was signed (see
            /// [`Log::signature`]).
            pub fn signature(&self, version: Version) -> Result<Option<Signature>> {
                self.log.signature(version)
            }

            /// Checks every retained version's signature against `key`; returns
            /// the newest version checked (see [`Log::verify`]).
            pub fn verify(&self, key: &PublicKey) -> Result<Version, VerifyError> {
                self.log.verify(key)
            }
        }

        impl<T: $($bound)+> $ty<T> {
            /// The value as of the latest version whose timestamp is `<= hlc`.
            pub fn get_by_time(&self, hlc: Hlc) -> Result<Option<T>> {
                match self.log.version_at_time(hlc) {
                    Some(v) => self.get_version(v),
                    None => Ok(None),
                }
            }
        }

        impl<T> Deref for $ty<T> {
            type Target = T;
            fn deref(&self) -> &T {
                &self.value
            }
        }

        impl<T: $($bound)+ + Send> PersistentField for $ty<T> {
            fn name(&self) -> &str {
                self.log.name()
            }
            fn version(&mut self, version: Version, hlc: Hlc) -> Result<()> {
                $ty::version(self, version, hlc)
            }
            fn persist(&self) -> Result<Version> {
                self.log.persist()
            }
            fn truncate(&mut self, version: Version) -> Result<()> {
                $ty::truncate(self, version)
            }
            fn trim(&mut self, version: Version) -> Result<()> {
                $ty::trim(self, version)
            }
            fn latest_version(&self) -> Version {
                self.log.latest_version()
            }
            fn persisted_version(&self) -> Version {
                self.log.persisted_version()
            }
            fn signature(&self, version: Version) -> Result<Option<Signature>> {
                self.log.signature(version)
            }
            fn verify(&self, key: &PublicKey) -> Result<Version, VerifyError> {
                self.log.verify(key)
            }
        }
    };
}

common_impls!(Persistent, Serialize + DeserializeOwned);
common_impls!(DeltaPersistent, Delta + Serialize + DeserializeOwned);
