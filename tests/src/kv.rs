//! A replicated key-value map for the RPC tests: ordered puts, point-to-point gets, and an
//! order-sensitive digest of every update applied, so two replicas agree on the digest only if
//! they applied the same updates in the same order.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use derecho::rpc::Replicated;
use serde::{Deserialize, Serialize};

/// The map.
#[derive(Debug, Default)]
pub struct Kv {
    /// Current values.
    pub map: BTreeMap<String, Vec<u8>>,
    /// Fold of every applied update, in order.
    pub digest: u64,
    /// Number of applied updates.
    pub applied: u64,
    /// Whether [`KvUpdate::Stall`] sleeps on this replica.
    pub stalls: bool,
}

/// Updates.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum KvUpdate {
    /// Sets a key.
    Put(String, Vec<u8>),
    /// Answers with a reply of this many bytes (to test the reply limit).
    Echo(usize),
    /// Sleeps this many milliseconds before replying, on replicas with `stalls` set (to hold
    /// a reply back while a test removes that member).
    Stall(u64),
}

/// Queries.
#[derive(Debug, Serialize, Deserialize)]
pub enum KvQuery {
    /// A key's value.
    Get(String),
    /// The digest and the count of updates.
    Digest,
}

/// Replies.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvReply {
    /// A value (or none).
    Value(Option<Vec<u8>>),
    /// After an update or for [`KvQuery::Digest`]: digest, updates applied, keys.
    State {
        /// Digest.
        digest: u64,
        /// Updates applied.
        applied: u64,
        /// Keys.
        keys: usize,
    },
    /// Bytes asked for by [`KvUpdate::Echo`].
    Bytes(Vec<u8>),
}

fn fold(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl Kv {
    fn state(&self) -> KvReply {
        KvReply::State {
            digest: self.digest,
            applied: self.applied,
            keys: self.map.len(),
        }
    }
}

impl Replicated for Kv {
    type Update = KvUpdate;
    type Query = KvQuery;
    type Reply = KvReply;

    fn apply(&mut self, update: KvUpdate) -> KvReply {
        match update {
            KvUpdate::Put(k, v) => {
                self.digest = fold(fold(self.digest ^ 0xcbf2_9ce4_8422_2325, k.as_bytes()), &v);
                self.applied += 1;
                self.map.insert(k, v);
                self.state()
            }
            KvUpdate::Echo(n) => KvReply::Bytes(vec![7; n]),
            KvUpdate::Stall(ms) => {
                if self.stalls {
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                }
                self.state()
            }
        }
    }

    fn query(&self, query: KvQuery) -> KvReply {
        match query {
            KvQuery::Get(k) => KvReply::Value(self.map.get(&k).cloned()),
            KvQuery::Digest => self.state(),
        }
    }

    fn save(&self, out: &mut dyn Write) -> io::Result<()> {
        let bytes = serde_json::to_vec(&(&self.map, self.digest, self.applied))
            .map_err(io::Error::other)?;
        out.write_all(&bytes)
    }

    fn load(&mut self, input: &mut dyn Read) -> io::Result<()> {
        let (map, digest, applied) = serde_json::from_reader(input).map_err(io::Error::other)?;
        self.map = map;
        self.digest = digest;
        self.applied = applied;
        Ok(())
    }
}
