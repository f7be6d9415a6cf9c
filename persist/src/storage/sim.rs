//! [`SimStorage`]: an in-memory [`Storage`] that can simulate a crash.
//!
//! Every file has a *volatile* image (what reads see) and a *durable* image
//! (what survives a crash). [`SimStorage::crash`] rebuilds the volatile images
//! from the durable ones, keeping a seeded-random prefix of each file's
//! unsynced appended bytes and optionally tearing the last kept sector, so
//! recovery code meets the lost and torn tails a real disk can leave behind.
//! Failures of single operations can be injected with [`SimStorage::fail`].

use crate::rng::SplitMix;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};

use super::{validate_name, Storage, StorageResult};
use crate::error::StorageError;

/// The unit a simulated crash may tear: the last kept, partially written
/// sector of a file can come back with garbage in its unsynced part.
pub const SECTOR_SIZE: usize = 512;

/// An in-memory, deterministic [`Storage`] with crash simulation and an
/// optional capacity limit.
///
/// Thread safety: one mutex guards all files; every method holds it for its
/// whole (in-memory) duration.
#[derive(Debug, Default)]
pub struct SimStorage {
    state: Mutex<SimState>,
}

#[derive(Debug, Default)]
struct SimState {
    files: BTreeMap<String, SimFile>,
    capacity: Option<u64>,
    crashes: u64,
    failing: BTreeSet<SimOp>,
}

/// A mutating [`Storage`] operation whose failure [`SimStorage`] can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimOp {
    /// [`Storage::append`].
    Append,
    /// [`Storage::sync`].
    Sync,
    /// [`Storage::truncate`].
    Truncate,
    /// [`Storage::replace`].
    Replace,
    /// [`Storage::remove`].
    Remove,
}

#[derive(Debug, Default, Clone)]
struct SimFile {
    /// What reads see.
    volatile: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
    /// Whether the file's existence is durable (it was synced or replaced).
    durable_exists: bool,
    /// `volatile[..floor] == durable[..floor]`: the shortest the volatile
    /// image has been since the last sync. Below `durable.len()` only when
    /// an unsynced truncate is pending.
    floor: usize,
}

impl SimStorage {
    /// An empty storage without a capacity limit.
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    /// An empty storage holding at most `bytes` bytes in total (summed over
    /// every file's current content); writes beyond it fail with
    /// [`StorageError::Full`] and change nothing.
    pub fn with_capacity(bytes: u64) -> SimStorage {
        let sim = SimStorage::default();
        sim.lock().capacity = Some(bytes);
        sim
    }

    /// Total bytes currently stored (sum of every file's visible length).
    pub fn used_bytes(&self) -> u64 {
        self.lock().used()
    }

    /// Makes every later call of `op` fail with an I/O error (changing
    /// nothing) until [`heal`](SimStorage::heal) is called; a way to stop an
    /// operation half-way, as a crash would.
    pub fn fail(&self, op: SimOp) {
        self.lock().failing.insert(op);
    }

    /// Undoes [`fail`](SimStorage::fail) for `op`.
    pub fn heal(&self, op: SimOp) {
        self.lock().failing.remove(&op);
    }

    /// How many times [`crash`](SimStorage::crash) has been called.
    pub fn crash_count(&self) -> u64 {
        self.lock().crashes
    }

    /// Simulates a power failure followed by a reboot, deterministically for
    /// `seed`.
    ///
    /// For every file: synced content always survives. A file never synced
    /// may vanish. An unsynced truncate either took effect or did not. Of the
    /// bytes appended since the last sync none (probability 1/4), all (1/4)
    /// or a uniformly random prefix survive, and with probability one half the
    /// unsynced part of the last kept sector is overwritten with random bytes.
    pub fn crash(&self, seed: u64) {
        let mut state = self.lock();
        state.crashes += 1;
        let mut rng = SplitMix(seed ^ 0x5EED_0FC0_FFEE);
        let mut survivors = BTreeMap::new();
        for (name, file) in std::mem::take(&mut state.files) {
            if !file.durable_exists && rng.coin() {
                continue;
            }
            let image = Self::crash_image(&file, &mut rng);
            survivors.insert(
                name,
                SimFile {
                    floor: image.len(),
                    durable: image.clone(),
                    volatile: image,
                    durable_exists: true,
                },
            );
        }
        state.files = survivors;
    }

    fn crash_image(file: &SimFile, rng: &mut SplitMix) -> Vec<u8> {
        if file.floor < file.durable.len() && rng.coin() {
            // The pending truncate (and everything after it) never reached the disk.
            return file.durable.clone();
        }
        let base = file.floor;
        let unsynced = &file.volatile[base..];
        // Losing everything and keeping everything are common outcomes of a
        // real crash, so each gets a quarter of the probability mass.
        let keep = match rng.below(4) {
            0 => 0,
            1 => unsynced.len(),
            _ => rng.up_to(unsynced.len()),
        };
        let mut image = file.volatile[..base + keep].to_vec();
        if keep > 0 && rng.coin() {
            let end = image.len();
            let sector_start = (end - 1) / SECTOR_SIZE * SECTOR_SIZE;
            let tear_from = sector_start.max(base);
            for b in &mut image[tear_from..end] {
                *b = rng.next_u64() as u8;
            }
        }
        image
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // Every mutation below completes before the guard drops or fails
        // before changing anything, so a poisoned lock still guards a
        // consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SimState {
    fn check_op(&self, op: SimOp) -> StorageResult<()> {
        if self.failing.contains(&op) {
            let err = io::Error::other(format!("injected failure of {op:?}"));
            return Err(StorageError::Io(Arc::new(err)));
        }
        Ok(())
    }

    fn used(&self) -> u64 {
        self.files.values().map(|f| f.volatile.len() as u64).sum()
    }

    fn check_room(&self, extra: u64, freed: u64) -> StorageResult<()> {
        match self.capacity {
            Some(cap) if self.used() - freed + extra > cap => Err(StorageError::Full),
            _ => Ok(()),
        }
    }

    fn file(&self, name: &str) -> StorageResult<&SimFile> {
        self.files
            .get(name)
            .ok_or_else(|| StorageError::NotFound(name.to_string()))
    }

    fn file_mut(&mut self, name: &str) -> StorageResult<&mut SimFile> {
        self.files
            .get_mut(name)
            .ok_or_else(|| StorageError::NotFound(name.to_string()))
    }
}

impl Storage for SimStorage {
    fn append(&self, name: &str, bytes: &[u8]) -> StorageResult<u64> {
        validate_name(name)?;
        let mut state = self.lock();
        state.check_op(SimOp::Append)?;
        state.check_room(bytes.len() as u64, 0)?;
        let file = state.files.entry(name.to_string()).or_default();
        file.volatile.extend_from_slice(bytes);
        Ok(file.volatile.len() as u64)
    }

    fn sync(&self, name: &str) -> StorageResult<()> {
        validate_name(name)?;
        let mut state = self.lock();
        state.check_op(SimOp::Sync)?;
        let file = state.file_mut(name)?;
        file.durable = file.volatile.clone();
        file.floor = file.volatile.len();
        file.durable_exists = true;
        Ok(())
    }

    fn read(&self, name: &str, offset: u64, len: usize) -> StorageResult<Vec<u8>> {
        validate_name(name)?;
        let state = self.lock();
        let data = &state.file(name)?.volatile;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = start.saturating_add(len).min(data.len());
        Ok(data[start..end].to_vec())
    }

    fn len(&self, name: &str) -> StorageResult<u64> {
        validate_name(name)?;
        Ok(self.lock().file(name)?.volatile.len() as u64)
    }

    fn truncate(&self, name: &str, len: u64) -> StorageResult<()> {
        validate_name(name)?;
        let mut state = self.lock();
        state.check_op(SimOp::Truncate)?;
        let file = state.file_mut(name)?;
        let current = file.volatile.len() as u64;
        if len > current {
            return Err(StorageError::OutOfRange {
                name: name.to_string(),
                requested: len,
                len: current,
            });
        }
        // `len <= current`, which is a `usize`.
        let len = len as usize;
        file.volatile.truncate(len);
        file.floor = file.floor.min(len);
        Ok(())
    }

    fn replace(&self, name: &str, bytes: &[u8]) -> StorageResult<()> {
        validate_name(name)?;
        let mut state = self.lock();
        state.check_op(SimOp::Replace)?;
        let freed = state.files.get(name).map_or(0, |f| f.volatile.len() as u64);
        state.check_room(bytes.len() as u64, freed)?;
        state.files.insert(
            name.to_string(),
            SimFile {
                volatile: bytes.to_vec(),
                durable: bytes.to_vec(),
                durable_exists: true,
                floor: bytes.len(),
            },
        );
        Ok(())
    }

    fn remove(&self, name: &str) -> StorageResult<()> {
        validate_name(name)?;
        let mut state = self.lock();
        state.check_op(SimOp::Remove)?;
        state
            .files
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| StorageError::NotFound(name.to_string()))
    }

    fn list(&self) -> StorageResult<Vec<String>> {
        Ok(self.lock().files.keys().cloned().collect())
    }

    fn exists(&self, name: &str) -> StorageResult<bool> {
        validate_name(name)?;
        Ok(self.lock().files.contains_key(name))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn synced_bytes_survive_every_crash_and_unsynced_may_not() {
        let mut lost_some = false;
        let mut kept_some = false;
        for seed in 0..200 {
            let sim = SimStorage::new();
            sim.append("f", &[1u8; 1000]).unwrap();
            sim.sync("f").unwrap();
            sim.append("f", &[2u8; 1500]).unwrap();
            sim.crash(seed);
            let data = sim.read_all("f").unwrap();
            assert!(data.len() >= 1000 && data.len() <= 2500);
            assert_eq!(&data[..1000], &[1u8; 1000][..], "seed {seed}");
            lost_some |= data.len() < 2500;
            kept_some |= data.len() > 1000;
        }
        assert!(lost_some && kept_some);
    }

    #[test]
    fn tearing_only_touches_unsynced_bytes_of_the_last_sector() {
        let mut torn = false;
        for seed in 0..300 {
            let sim = SimStorage::new();
            sim.append("f", &[7u8; 700]).unwrap();
            sim.sync("f").unwrap();
            sim.append("f", &[9u8; 2000]).unwrap();
            sim.crash(seed);
            let data = sim.read_all("f").unwrap();
            let sector_start = if data.is_empty() {
                0
            } else {
                (data.len() - 1) / SECTOR_SIZE * SECTOR_SIZE
            };
            let clean_end = sector_start.max(700);
            assert!(data[..700].iter().all(|&b| b == 7));
            assert!(data[700..clean_end].iter().all(|&b| b == 9), "seed {seed}");
            torn |= data[clean_end..].iter().any(|&b| b != 9);
        }
        assert!(torn, "no seed tore a sector");
    }

    #[test]
    fn unsynced_truncate_may_or_may_not_survive() {
        let (mut undone, mut applied) = (false, false);
        for seed in 0..64 {
            let sim = SimStorage::new();
            sim.append("f", b"abcdef").unwrap();
            sim.sync("f").unwrap();
            sim.truncate("f", 2).unwrap();
            sim.crash(seed);
            match sim.read_all("f").unwrap().as_slice() {
                b"abcdef" => undone = true,
                b"ab" => applied = true,
                other => panic!("unexpected image {other:?}"),
            }
        }
        assert!(undone && applied);
    }

    #[test]
    fn never_synced_file_may_vanish_and_replace_is_durable() {
        let mut vanished = false;
        for seed in 0..32 {
            let sim = SimStorage::new();
            sim.append("new", b"x").unwrap();
            sim.replace("meta", b"m").unwrap();
            sim.crash(seed);
            vanished |= !sim.exists("new").unwrap();
            assert_eq!(sim.read_all("meta").unwrap(), b"m");
        }
        assert!(vanished);
    }

    #[test]
    fn injected_failures_change_nothing_until_healed() {
        let sim = SimStorage::new();
        sim.append("a", b"12").unwrap();
        for op in [
            SimOp::Append,
            SimOp::Sync,
            SimOp::Truncate,
            SimOp::Replace,
            SimOp::Remove,
        ] {
            sim.fail(op);
        }
        assert!(matches!(sim.append("a", b"3"), Err(StorageError::Io(_))));
        assert!(sim.sync("a").is_err());
        assert!(sim.truncate("a", 0).is_err());
        assert!(sim.replace("a", b"x").is_err());
        assert!(sim.remove("a").is_err());
        assert_eq!(sim.read_all("a").unwrap(), b"12");
        sim.heal(SimOp::Append);
        assert_eq!(sim.append("a", b"3").unwrap(), 3);
        assert!(sim.sync("a").is_err());
    }

    #[test]
    fn same_seed_same_outcome() {
        let run = |seed| {
            let sim = SimStorage::new();
            sim.append("a", &[3u8; 3000]).unwrap();
            sim.crash(seed);
            sim.read_all("a").ok()
        };
        for seed in 0..20 {
            assert_eq!(run(seed), run(seed));
        }
    }

    #[test]
    fn capacity_is_enforced_without_side_effects() {
        let sim = SimStorage::with_capacity(10);
        sim.append("a", b"12345678").unwrap();
        assert!(matches!(sim.append("a", b"abc"), Err(StorageError::Full)));
        assert_eq!(sim.len("a").unwrap(), 8);
        sim.truncate("a", 0).unwrap();
        sim.append("a", b"abc").unwrap();
        assert_eq!(sim.used_bytes(), 3);
        assert!(matches!(
            sim.replace("b", &[0u8; 8]),
            Err(StorageError::Full)
        ));
        sim.replace("a", &[0u8; 10]).unwrap();
    }
}
