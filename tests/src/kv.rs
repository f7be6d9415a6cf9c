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

/// Helpers for tests of a small group of [`Kv`] replicas: one subgroup over every member
/// (1 shard, 1 to 4 members).
pub mod group {
    use std::time::Duration;

    use derecho::layout::{LayoutPolicy, SubgroupPolicy, TypePolicy};
    use derecho::rpc::p2p::Limits;
    use derecho::rpc::{Group, GroupBuilder, StartError};

    use super::{Kv, KvUpdate};

    /// Starts a member with `cfg`, bounded at 20 s.
    pub fn start(cfg: &derecho::Config) -> Result<Group, StartError> {
        GroupBuilder::new(cfg)
            .replicated::<Kv>("Kv", |_| Kv::default())
            .layout(LayoutPolicy {
                types: vec![TypePolicy::new(
                    "Kv",
                    vec![SubgroupPolicy::flexible_even(1, 1, 4)],
                )],
            })
            .timeout(Duration::from_secs(20))
            .start()
    }

    /// P2P limits for clients of the group.
    pub fn limits() -> Limits {
        Limits {
            request: 64 << 10,
            reply: 64 << 10,
            window: 16,
        }
    }

    /// An ordered put of `key = value` through `g`; returns how many members answered Ok.
    /// Panics if the send or its wait fails (for tests).
    pub fn put(g: &Group, key: &str, value: u8) -> usize {
        #[allow(clippy::expect_used)]
        g.subgroup::<Kv>(0)
            .expect("the Kv subgroup")
            .ordered_send(&KvUpdate::Put(key.into(), vec![value]))
            .expect("the put is sent")
            .wait()
            .expect("the put is answered")
            .values()
            .filter(|r| r.is_ok())
            .count()
    }

    /// Connects an external client to `addr` with `credentials` and reads `key` from the
    /// first member of the subgroup's shard. Panics if that fails (for tests).
    pub fn get_as_client(
        addr: std::net::SocketAddr,
        credentials: derecho::secure::Credentials,
        key: &str,
    ) -> Option<Vec<u8>> {
        #[allow(clippy::expect_used)]
        let client = derecho::rpc::external::ExternalClient::connect_with(
            addr,
            limits(),
            Duration::from_secs(10),
            credentials,
        )
        .expect("the client connects");
        let who = client.shard_members(0)[0][0];
        #[allow(clippy::expect_used)]
        match client
            .p2p_send::<Kv>(0, who, &super::KvQuery::Get(key.into()))
            .expect("the member answers")
        {
            super::KvReply::Value(v) => v,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    /// Checks, after `joiner` joined `old` (whose first view was `first_vid`, and which held
    /// `key = value`): the joiner received that state, an update reaches all `members`, only
    /// the joiner's view was installed and the view holds exactly `members`. Panics otherwise.
    pub fn assert_joined(
        old: &Group,
        joiner: &Group,
        first_vid: u64,
        (key, value): (&str, u8),
        members: &[u32],
    ) {
        #[allow(clippy::expect_used)]
        let got = joiner
            .subgroup::<Kv>(0)
            .expect("the Kv subgroup")
            .with_local(|kv| kv.map.get(key).cloned());
        assert_eq!(
            got,
            Some(Some(vec![value])),
            "the joiner received the replica state"
        );
        assert_eq!(put(old, "after-join", value), members.len());
        let view = old.view();
        assert_eq!(
            view.vid,
            first_vid + 1,
            "only the joiner's view was installed"
        );
        let mut ids: Vec<u32> = view.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        assert_eq!(
            ids, members,
            "no intruder is a member and nobody was evicted"
        );
    }
}
