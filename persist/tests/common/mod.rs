//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use derecho_persist::{Storage, StorageError, StorageResult};

/// A deterministic generator for test workloads.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Wraps a storage and fails chosen operations, to cut an operation short
/// the way a crash would.
pub struct Faulty<S> {
    pub inner: S,
    pub failing: Mutex<BTreeSet<&'static str>>,
}

impl<S: Storage> Faulty<S> {
    pub fn new(inner: S) -> Arc<Self> {
        Arc::new(Faulty {
            inner,
            failing: Mutex::new(BTreeSet::new()),
        })
    }
    pub fn fail(&self, op: &'static str) {
        self.failing.lock().unwrap().insert(op);
    }
    pub fn heal(&self, op: &'static str) {
        self.failing.lock().unwrap().remove(op);
    }
    fn check(&self, op: &'static str) -> StorageResult<()> {
        if self.failing.lock().unwrap().contains(op) {
            Err(StorageError::Io(Arc::new(std::io::Error::other(format!(
                "injected {op} failure"
            )))))
        } else {
            Ok(())
        }
    }
}

impl<S: Storage> Storage for Faulty<S> {
    fn append(&self, name: &str, bytes: &[u8]) -> StorageResult<u64> {
        self.check("append")?;
        self.inner.append(name, bytes)
    }
    fn sync(&self, name: &str) -> StorageResult<()> {
        self.check("sync")?;
        self.inner.sync(name)
    }
    fn read(&self, name: &str, offset: u64, len: usize) -> StorageResult<Vec<u8>> {
        self.inner.read(name, offset, len)
    }
    fn len(&self, name: &str) -> StorageResult<u64> {
        self.inner.len(name)
    }
    fn truncate(&self, name: &str, len: u64) -> StorageResult<()> {
        self.check("truncate")?;
        self.inner.truncate(name, len)
    }
    fn replace(&self, name: &str, bytes: &[u8]) -> StorageResult<()> {
        self.check("replace")?;
        self.inner.replace(name, bytes)
    }
    fn remove(&self, name: &str) -> StorageResult<()> {
        self.check("remove")?;
        self.inner.remove(name)
    }
    fn list(&self) -> StorageResult<Vec<String>> {
        self.inner.list()
    }
    fn exists(&self, name: &str) -> StorageResult<bool> {
        self.inner.exists(name)
    }
}
