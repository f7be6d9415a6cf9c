//! A fabric's registered regions, by the key peers address them with and by name, with a count
//! of changes that lets a receiving thread cache the region it wrote last.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::sync::{read_lock, write_lock};
use crate::{FabricError, RegionId};

/// Regions by key and by name; `V` is what a backend keeps per region.
pub(crate) struct RegionTable<V> {
    by_key: HashMap<u64, V>,
    by_id: HashMap<RegionId, u64>,
    next_key: u64,
}

impl<V> RegionTable<V> {
    /// No regions; the first key is `first_key | 1`.
    pub(crate) fn new(first_key: u64) -> Self {
        Self {
            by_key: HashMap::new(),
            by_id: HashMap::new(),
            next_key: first_key | 1,
        }
    }

    /// The key of the next region registered (keys are odd and grow by two; a fabric starts
    /// them from its random incarnation, so keys of another incarnation do not match).
    pub(crate) fn reserve(&mut self, id: RegionId) -> Result<u64, FabricError> {
        if self.by_id.contains_key(&id) {
            return Err(FabricError::DuplicateRegion(id));
        }
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(2);
        Ok(key)
    }

    /// Adds region `id` under `key` (from [`RegionTable::reserve`]).
    pub(crate) fn insert(&mut self, id: RegionId, key: u64, value: V) {
        self.by_key.insert(key, value);
        self.by_id.insert(id, key);
    }

    /// Removes region `id`; returns its key and value.
    pub(crate) fn remove(&mut self, id: RegionId) -> Option<(u64, V)> {
        let key = self.by_id.remove(&id)?;
        self.by_key.remove(&key).map(|v| (key, v))
    }

    /// The region with `key`.
    pub(crate) fn get(&self, key: u64) -> Option<&V> {
        self.by_key.get(&key)
    }

    /// The region named `id`, with its key.
    pub(crate) fn find(&self, id: RegionId) -> Option<(u64, &V)> {
        let key = *self.by_id.get(&id)?;
        self.by_key.get(&key).map(|v| (key, v))
    }

    /// Removes every region.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = V> + '_ {
        self.by_id.clear();
        self.by_key.drain().map(|(_, v)| v)
    }
}

/// A [`RegionTable`] behind a lock, with its count of changes readable without the lock.
pub(crate) struct Registry<V> {
    table: RwLock<RegionTable<V>>,
    generation: AtomicU64,
}

impl<V> Registry<V> {
    /// No regions; the first key is `first_key | 1`.
    pub(crate) fn new(first_key: u64) -> Self {
        Self {
            table: RwLock::new(RegionTable::new(first_key)),
            generation: AtomicU64::new(0),
        }
    }

    /// The table, for lookups.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, RegionTable<V>> {
        read_lock(&self.table)
    }

    /// The table, for changes; call [`Registry::changed`] after each.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, RegionTable<V>> {
        write_lock(&self.table)
    }

    /// Counts a change (a region added or removed).
    pub(crate) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes so far.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}
