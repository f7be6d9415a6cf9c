//! Replicated objects and RPC: the API applications program against.
//!
//! A type that implements [`Replicated`] has one replica on every member of each shard of its
//! subgroups. **Updates** ([`Subgroup::ordered_send`]) are multicast in the shard's total order;
//! every member applies them in delivery order and replies, and the caller gets a
//! [`ReplyMap`] that resolves to one result per member. **Queries** ([`Subgroup::p2p_send`]) go
//! to one member of any subgroup, whether or not the caller belongs to it, and run on that
//! member's P2P worker, never on the core loop. A node that joins a shard receives the replica's
//! state from a member that held it ([`Replicated::save`], [`Replicated::load`]) before it
//! delivers anything in the new view. Processes outside the group use
//! [`external::ExternalClient`].
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use std::io::{Read, Write};
//! use derecho::config::ConfigLoader;
//! use derecho::layout::{LayoutPolicy, SubgroupPolicy, TypePolicy};
//! use derecho::rpc::{GroupBuilder, Replicated};
//!
//! #[derive(Default)]
//! struct Counter(i64);
//!
//! impl Replicated for Counter {
//!     type Update = i64;
//!     type Query = ();
//!     type Reply = i64;
//!     fn apply(&mut self, add: i64) -> i64 {
//!         self.0 += add;
//!         self.0
//!     }
//!     fn query(&self, _: ()) -> i64 {
//!         self.0
//!     }
//!     fn save(&self, out: &mut dyn Write) -> std::io::Result<()> {
//!         out.write_all(&self.0.to_le_bytes())
//!     }
//!     fn load(&mut self, input: &mut dyn Read) -> std::io::Result<()> {
//!         let mut b = [0u8; 8];
//!         input.read_exact(&mut b)?;
//!         self.0 = i64::from_le_bytes(b);
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ConfigLoader::new().load()?;
//! let policy = LayoutPolicy {
//!     types: vec![TypePolicy::new("Counter", vec![SubgroupPolicy::flexible_even(1, 2, 3)])],
//! };
//! let group = GroupBuilder::new(&config)
//!     .replicated::<Counter>("Counter", |_| Counter::default())
//!     .layout(policy)
//!     .start()?;
//! let counter = group.subgroup::<Counter>(0)?;
//! let replies: BTreeMap<_, _> = counter.ordered_send(&5)?.wait()?;
//! let now = counter.p2p_send(group.view().members[0].id, &())?;
//! # Ok(()) }
//! ```

pub mod external;
pub mod p2p;
pub mod wire;

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

pub(crate) use derecho_fabric::sync::lock;
use derecho_fabric::sync::{read_lock, wait_timeout, write_lock};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::gms::View;
use crate::layout::{LayoutError, LayoutPolicy};
use crate::multicast::{Delivery, HEADER_LEN};
use crate::node::{layout_from_policy, GroupError, GroupNode, Hooks, StateHooks, ViewHandler};
use crate::NodeId;
use p2p::{Handler, Limits, P2pServer, Peers};
use wire::Kind;

/// A replicated object: its state is the same on every member of a shard, because every
/// member applies the same updates in the same order.
///
/// Updates run on the core loop's thread in delivery order (keep them short); queries run on a
/// P2P worker while no update runs on the same replica (or, with [`Replicated::query_task`],
/// only their quick part does).
pub trait Replicated: Send + Sync + 'static {
    /// An ordered update (applied with `&mut self` on every member of the shard).
    type Update: Serialize + DeserializeOwned + Send + 'static;
    /// A point-to-point query (answered with `&self` by one member).
    type Query: Serialize + DeserializeOwned + Send + 'static;
    /// The reply to both.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// Applies an update; every member of the shard returns its own reply.
    fn apply(&mut self, update: Self::Update) -> Self::Reply;
    /// Answers a query.
    fn query(&self, query: Self::Query) -> Self::Reply;
    /// Splits a query into a quick part that reads the replica and a task that finishes the
    /// answer after the replica is released, so that a long computation (an inference, a
    /// scan) does not hold up updates. The default answers the whole query at once.
    fn query_task(&self, query: Self::Query) -> QueryTask<Self::Reply> {
        let reply = self.query(query);
        Box::new(move || reply)
    }
    /// Writes the whole state (state transfer to a member new to the shard).
    fn save(&self, out: &mut dyn Write) -> io::Result<()>;
    /// Replaces the state with one written by [`Replicated::save`].
    fn load(&mut self, input: &mut dyn Read) -> io::Result<()>;
}

/// The part of a query that runs after the replica is released (see
/// [`Replicated::query_task`]).
pub type QueryTask<R> = Box<dyn FnOnce() -> R + Send>;

/// Errors of the replicated-object API.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No type of this group is registered under the name or Rust type.
    #[error("the group has no replicated type {0}")]
    UnknownType(String),
    /// The type has fewer subgroups.
    #[error("type {type_name} has {count} subgroups; there is no subgroup {index}")]
    NoSuchSubgroup {
        /// The type.
        type_name: String,
        /// The index asked for.
        index: usize,
        /// How many there are.
        count: usize,
    },
    /// The node is not a member of the subgroup in the current view.
    #[error("node {node} is not a member of subgroup {subgroup} in the current view")]
    NotMember {
        /// The node.
        node: NodeId,
        /// Flat subgroup id.
        subgroup: usize,
    },
    /// The node is not in the current view.
    #[error("node {node} is not in the current view")]
    NotInView {
        /// The node.
        node: NodeId,
    },
    /// A view change removed the member before it replied.
    #[error("node {node} was removed from the group before it replied")]
    Removed {
        /// The member.
        node: NodeId,
    },
    /// The connection to a member failed.
    #[error("node {node} failed: {reason}")]
    PeerFailed {
        /// The member.
        node: NodeId,
        /// What happened.
        reason: String,
    },
    /// A payload exceeds its configured limit; nothing was sent.
    #[error("{what} of {len} bytes exceeds {limit} = {max} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The configuration key that bounds it.
        limit: &'static str,
        /// The bound.
        max: usize,
    },
    /// The member answered with an error (a malformed request, an oversized reply, no replica).
    #[error("node {node} answered with an error: {message}")]
    Remote {
        /// The member.
        node: NodeId,
        /// Its error.
        message: String,
    },
    /// No answer within the bound.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Too many calls in flight.
    #[error("too many calls in flight: {0}")]
    Busy(String),
    /// A value could not be serialized.
    #[error("cannot serialize: {0}")]
    Encode(String),
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The group layer failed (start-up, membership, this member stopped).
    #[error("group: {0}")]
    Group(String),
    /// The layout policy does not fit the registered types.
    #[error("layout: {0}")]
    Layout(#[from] LayoutError),
}

impl From<GroupError> for RpcError {
    fn from(e: GroupError) -> Self {
        RpcError::Group(e.to_string())
    }
}

impl RpcError {
    /// An equal error (errors carrying an OS error keep its kind and text).
    pub fn same(&self) -> RpcError {
        match self {
            RpcError::UnknownType(s) => RpcError::UnknownType(s.clone()),
            RpcError::NoSuchSubgroup {
                type_name,
                index,
                count,
            } => RpcError::NoSuchSubgroup {
                type_name: type_name.clone(),
                index: *index,
                count: *count,
            },
            RpcError::NotMember { node, subgroup } => RpcError::NotMember {
                node: *node,
                subgroup: *subgroup,
            },
            RpcError::NotInView { node } => RpcError::NotInView { node: *node },
            RpcError::Removed { node } => RpcError::Removed { node: *node },
            RpcError::PeerFailed { node, reason } => RpcError::PeerFailed {
                node: *node,
                reason: reason.clone(),
            },
            RpcError::TooLarge {
                what,
                len,
                limit,
                max,
            } => RpcError::TooLarge {
                what,
                len: *len,
                limit,
                max: *max,
            },
            RpcError::Remote { node, message } => RpcError::Remote {
                node: *node,
                message: message.clone(),
            },
            RpcError::Timeout(d) => RpcError::Timeout(*d),
            RpcError::Busy(s) => RpcError::Busy(s.clone()),
            RpcError::Encode(s) => RpcError::Encode(s.clone()),
            RpcError::Protocol(s) => RpcError::Protocol(s.clone()),
            RpcError::Io { context, source } => RpcError::Io {
                context: context.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            RpcError::Group(s) => RpcError::Group(s.clone()),
            RpcError::Layout(e) => RpcError::Group(e.to_string()),
        }
    }
}

/// A replica behind its type.
trait Erased: Send + Sync {
    fn apply(&self, update: &[u8]) -> Result<Vec<u8>, String>;
    fn query(&self, query: &[u8]) -> Result<Vec<u8>, String>;
    fn save(&self, out: &mut dyn Write) -> io::Result<()>;
    fn load(&self, input: &mut dyn Read) -> io::Result<()>;
    fn as_any(&self) -> &dyn Any;
}

struct Holder<T: Replicated>(RwLock<T>);

impl<T: Replicated> Erased for Holder<T> {
    fn apply(&self, update: &[u8]) -> Result<Vec<u8>, String> {
        let u: T::Update = wire::decode(update)?;
        let r = write_lock(&self.0).apply(u);
        wire::encode(&r).map_err(|e| e.to_string())
    }
    fn query(&self, query: &[u8]) -> Result<Vec<u8>, String> {
        let q: T::Query = wire::decode(query)?;
        let task = read_lock(&self.0).query_task(q);
        wire::encode(&task()).map_err(|e| e.to_string())
    }
    fn save(&self, out: &mut dyn Write) -> io::Result<()> {
        read_lock(&self.0).save(out)
    }
    fn load(&self, input: &mut dyn Read) -> io::Result<()> {
        write_lock(&self.0).load(input)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

type Factory = Box<dyn Fn(usize) -> Arc<dyn Erased> + Send + Sync>;

struct TypeEntry {
    name: String,
    type_id: TypeId,
    factory: Factory,
    first: usize,
    count: usize,
}

struct Replica {
    obj: Arc<dyn Erased>,
    shard: Option<usize>,
    loaded: bool,
}

/// One member's replies to an ordered request, as they arrive.
struct Pending {
    expected: Option<Vec<NodeId>>,
    replies: BTreeMap<NodeId, Result<Vec<u8>, RpcError>>,
}

/// A reply this member owes a caller.
struct OutReply {
    caller: NodeId,
    id: u64,
    result: Result<Vec<u8>, String>,
}

/// Most ordered requests of one member waiting for replies.
pub const MAX_PENDING: usize = 1 << 16;
/// Most replies queued for sending.
const REPLY_QUEUE: usize = 4096;

/// The view and the group's types, as the P2P port describes them to clients.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The current view.
    pub view: View,
    /// The replicated types in declaration order.
    pub types: Vec<TypeInfo>,
}

/// A replicated type of the group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TypeInfo {
    /// Its name.
    pub name: String,
    /// Flat id of its first subgroup.
    pub first_subgroup: usize,
    /// Number of its subgroups.
    pub subgroups: usize,
}

impl GroupInfo {
    /// The flat id of subgroup `index` of type `name`.
    pub fn subgroup_id(&self, name: &str, index: usize) -> Result<usize, RpcError> {
        let t = self
            .types
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| RpcError::UnknownType(name.to_string()))?;
        if index >= t.subgroups {
            return Err(RpcError::NoSuchSubgroup {
                type_name: name.to_string(),
                index,
                count: t.subgroups,
            });
        }
        Ok(t.first_subgroup + index)
    }
}

struct Inner {
    me: NodeId,
    types: Vec<TypeEntry>,
    replicas: RwLock<HashMap<usize, Replica>>,
    view: RwLock<View>,
    pending: Mutex<HashMap<u64, Pending>>,
    replied: Condvar,
    next_id: AtomicU64,
    peers: Peers,
    replies_out: SyncSender<OutReply>,
    max_reply: Vec<usize>,
    timeout: Duration,
    node: OnceLock<Weak<GroupNode>>,
    on_view: Mutex<Option<ViewHandler>>,
}

impl Inner {
    fn node(&self) -> Result<Arc<GroupNode>, RpcError> {
        self.node
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| RpcError::Group("this member has shut down".into()))
    }

    fn type_of_subgroup(&self, subgroup: usize) -> Option<&TypeEntry> {
        self.types
            .iter()
            .find(|t| (t.first..t.first + t.count).contains(&subgroup))
    }

    fn create(&self, subgroup: usize) -> Option<Arc<dyn Erased>> {
        let t = self.type_of_subgroup(subgroup)?;
        Some((t.factory)(subgroup - t.first))
    }

    fn info(&self) -> GroupInfo {
        GroupInfo {
            view: read_lock(&self.view).clone(),
            types: self
                .types
                .iter()
                .map(|t| TypeInfo {
                    name: t.name.clone(),
                    first_subgroup: t.first,
                    subgroups: t.count,
                })
                .collect(),
        }
    }

    /// Called for every installed view before anything of it is delivered.
    fn view_installed(&self, v: &View) {
        *write_lock(&self.view) = v.clone();
        {
            let mut replicas = write_lock(&self.replicas);
            for t in &self.types {
                for sg in t.first..t.first + t.count {
                    match v.shard_of(sg, self.me) {
                        Some((shard, _)) => {
                            let keep = replicas
                                .get(&sg)
                                .is_some_and(|r| r.loaded || r.shard.is_none_or(|s| s == shard));
                            if !keep {
                                if let Some(obj) = self.create(sg) {
                                    replicas.insert(
                                        sg,
                                        Replica {
                                            obj,
                                            shard: None,
                                            loaded: false,
                                        },
                                    );
                                }
                            }
                            if let Some(r) = replicas.get_mut(&sg) {
                                r.shard = Some(shard);
                                r.loaded = false;
                            }
                        }
                        None => {
                            replicas.remove(&sg);
                        }
                    }
                }
            }
        }
        {
            let mut pending = lock(&self.pending);
            for p in pending.values_mut() {
                if let Some(expected) = &p.expected {
                    for &m in expected {
                        if v.rank_of(m).is_none() && !p.replies.contains_key(&m) {
                            p.replies.insert(m, Err(RpcError::Removed { node: m }));
                        }
                    }
                }
            }
        }
        self.replied.notify_all();
        self.peers.retain(
            |n| v.rank_of(n).is_some(),
            |n| RpcError::Removed { node: n },
        );
        if let Some(h) = lock(&self.on_view).as_mut() {
            h(v);
        }
    }

    /// Called on the core loop for every delivered message.
    fn delivered(&self, d: &Delivery<'_>) {
        if d.flags & wire::RPC_FLAG == 0 {
            return;
        }
        let Some((id, caller, body)) = wire::parse_ordered(d.payload) else {
            tracing::warn!(
                subgroup = d.subgroup,
                sender = d.sender,
                "ignored a malformed ordered RPC"
            );
            return;
        };
        let replica = read_lock(&self.replicas)
            .get(&d.subgroup)
            .map(|r| Arc::clone(&r.obj));
        let mut result = match replica {
            Some(obj) => obj.apply(body),
            None => Err(format!(
                "node {} holds no replica of subgroup {}",
                self.me, d.subgroup
            )),
        };
        let max = self
            .max_reply
            .get(d.subgroup)
            .copied()
            .unwrap_or(usize::MAX);
        if let Ok(r) = &result {
            if r.len() > max {
                result = Err(format!(
                    "the reply of {} bytes exceeds max_reply_payload_size = {max} bytes",
                    r.len()
                ));
            }
        }
        if caller == self.me {
            let members = read_lock(&self.view)
                .subgroups
                .get(d.subgroup)
                .and_then(|s| s.shards.get(d.shard))
                .map(|s| s.members.clone())
                .unwrap_or_default();
            let mut pending = lock(&self.pending);
            if let Some(p) = pending.get_mut(&id) {
                p.expected = Some(members);
                p.replies.insert(
                    self.me,
                    result.map_err(|message| RpcError::Remote {
                        node: self.me,
                        message,
                    }),
                );
            }
            drop(pending);
            self.replied.notify_all();
        } else {
            match self.replies_out.try_send(OutReply { caller, id, result }) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(caller, "dropped an RPC reply: {REPLY_QUEUE} are queued")
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    fn record_reply(&self, id: u64, from: NodeId, result: Result<Vec<u8>, String>) {
        let mut pending = lock(&self.pending);
        if let Some(p) = pending.get_mut(&id) {
            p.replies.insert(
                from,
                result.map_err(|message| RpcError::Remote {
                    node: from,
                    message,
                }),
            );
        }
        drop(pending);
        self.replied.notify_all();
    }

    /// Multicasts an encoded update in `subgroup`; returns the request id to wait on.
    fn ordered_send_raw(&self, subgroup: usize, body: &[u8]) -> Result<u64, RpcError> {
        let max_payload = {
            let v = read_lock(&self.view);
            let (shard, _) = v.shard_of(subgroup, self.me).ok_or(RpcError::NotMember {
                node: self.me,
                subgroup,
            })?;
            v.subgroups[subgroup].shards[shard].sizes.max_payload
        };
        let len = wire::ORDERED_HEADER + body.len();
        if len > max_payload {
            return Err(RpcError::TooLarge {
                what: "an ordered update",
                len,
                limit: "max_payload_size",
                max: max_payload,
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut pending = lock(&self.pending);
            if pending.len() >= MAX_PENDING {
                return Err(RpcError::Busy(format!(
                    "{MAX_PENDING} ordered requests wait for replies"
                )));
            }
            pending.insert(
                id,
                Pending {
                    expected: None,
                    replies: BTreeMap::new(),
                },
            );
        }
        let mut payload = Vec::with_capacity(len);
        payload.extend_from_slice(&wire::ordered_header(id, self.me));
        payload.extend_from_slice(body);
        let sent = self
            .node()
            .and_then(|n| Ok(n.send_flags(subgroup, &payload, wire::RPC_FLAG, self.timeout)?));
        if let Err(e) = sent {
            lock(&self.pending).remove(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// Waits until every member the request went to has replied or was removed.
    fn wait_replies(
        &self,
        id: u64,
        timeout: Duration,
    ) -> Result<BTreeMap<NodeId, Result<Vec<u8>, RpcError>>, RpcError> {
        let deadline = Instant::now() + timeout;
        let mut pending = lock(&self.pending);
        loop {
            let done = match pending.get(&id) {
                None => return Err(RpcError::Protocol("unknown request".into())),
                Some(p) => p
                    .expected
                    .as_ref()
                    .is_some_and(|e| e.iter().all(|m| p.replies.contains_key(m))),
            };
            if done {
                let p = pending.remove(&id).map(|p| p.replies).unwrap_or_default();
                return Ok(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                pending.remove(&id);
                return Err(RpcError::Timeout(timeout));
            }
            pending = wait_timeout(&self.replied, pending, left.min(Duration::from_millis(500)));
            if self.node().is_err() {
                pending.remove(&id);
                return Err(RpcError::Group("this member has shut down".into()));
            }
        }
    }

    fn query_local(&self, subgroup: usize, body: &[u8]) -> Result<Vec<u8>, String> {
        let replica = read_lock(&self.replicas)
            .get(&subgroup)
            .map(|r| Arc::clone(&r.obj));
        match replica {
            Some(obj) => obj.query(body),
            None => Err(format!(
                "node {} holds no replica of subgroup {subgroup}",
                self.me
            )),
        }
    }
}

struct Served(Weak<Inner>);

impl Served {
    fn inner(&self) -> Result<Arc<Inner>, String> {
        self.0
            .upgrade()
            .ok_or_else(|| "the member is shutting down".to_string())
    }
}

impl Handler for Served {
    fn query(&self, subgroup: usize, body: &[u8]) -> Result<Vec<u8>, String> {
        self.inner()?.query_local(subgroup, body)
    }

    fn relay(&self, subgroup: usize, body: &[u8]) -> Result<Vec<u8>, String> {
        let inner = self.inner()?;
        let id = inner
            .ordered_send_raw(subgroup, body)
            .map_err(|e| e.to_string())?;
        let replies = inner
            .wait_replies(id, inner.timeout)
            .map_err(|e| e.to_string())?;
        let flat: Vec<(NodeId, Result<Vec<u8>, String>)> = replies
            .into_iter()
            .map(|(n, r)| (n, r.map_err(|e| e.to_string())))
            .collect();
        wire::encode(&flat).map_err(|e| e.to_string())
    }

    fn get_view(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec(&self.inner()?.info()).map_err(|e| e.to_string())
    }

    fn ordered_reply(&self, id: u64, from: NodeId, result: Result<Vec<u8>, String>) {
        if let Ok(i) = self.inner() {
            i.record_reply(id, from, result);
        }
    }
}

struct States(Weak<Inner>);

impl StateHooks for States {
    fn save_state(&self, subgroup: usize, out: &mut dyn Write) -> io::Result<()> {
        let inner = self.0.upgrade().ok_or(io::ErrorKind::BrokenPipe)?;
        let replica = read_lock(&inner.replicas)
            .get(&subgroup)
            .map(|r| Arc::clone(&r.obj));
        match replica {
            Some(obj) => obj.save(out),
            None => Err(io::Error::other(format!(
                "no replica of subgroup {subgroup} to send"
            ))),
        }
    }

    fn load_state(&self, subgroup: usize, input: &mut dyn Read) -> io::Result<()> {
        let inner = self.0.upgrade().ok_or(io::ErrorKind::BrokenPipe)?;
        let obj = inner
            .create(subgroup)
            .ok_or_else(|| io::Error::other(format!("subgroup {subgroup} has no type")))?;
        obj.load(input)?;
        write_lock(&inner.replicas).insert(
            subgroup,
            Replica {
                obj,
                shard: None,
                loaded: true,
            },
        );
        Ok(())
    }
}

fn reply_sender(inner: &Weak<Inner>, rx: &Receiver<OutReply>) {
    while let Ok(r) = rx.recv() {
        let Some(i) = inner.upgrade() else { return };
        let addr = read_lock(&i.view)
            .members
            .iter()
            .find(|m| m.id == r.caller)
            .map(|m| SocketAddr::new(m.ip, m.external_port));
        let Some(addr) = addr else { continue };
        let (status, body) = wire::status_parts(&r.result);
        let me = i.me.to_le_bytes();
        let sent = i
            .peers
            .get(r.caller, addr)
            .and_then(|c| c.send_oneway(Kind::OrderedReply, r.id, &[&me, &status, body]));
        if let Err(e) = sent {
            tracing::warn!(caller = r.caller, error = %e, "an RPC reply could not be sent");
        }
    }
}

/// Builds a [`Group`]: the replicated types, the layout, the callbacks.
pub struct GroupBuilder {
    config: Config,
    types: Vec<(String, TypeId, Factory)>,
    policy: Option<LayoutPolicy>,
    on_view: Option<ViewHandler>,
    timeout: Duration,
}

impl std::fmt::Debug for GroupBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupBuilder")
            .field(
                "types",
                &self.types.iter().map(|t| &t.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl GroupBuilder {
    /// A group of this node, configured by `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            config: config.clone(),
            types: Vec::new(),
            policy: None,
            on_view: None,
            timeout: Duration::from_secs(60),
        }
    }

    /// Registers replicated type `T` under `name` (the layout's type name); `factory` makes a
    /// fresh replica for subgroup `index` of the type.
    pub fn replicated<T: Replicated>(
        mut self,
        name: &str,
        factory: impl Fn(usize) -> T + Send + Sync + 'static,
    ) -> Self {
        let f: Factory = Box::new(move |i| Arc::new(Holder(RwLock::new(factory(i)))));
        self.types.push((name.to_string(), TypeId::of::<T>(), f));
        self
    }

    /// The layout (default: the configuration's `[LAYOUT]` JSON layout applied to the types
    /// in registration order). Its types must be the registered ones, in the same order.
    pub fn layout(mut self, policy: LayoutPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// A callback for every installed view.
    pub fn on_view(mut self, h: impl FnMut(&View) + Send + 'static) -> Self {
        self.on_view = Some(Box::new(h));
        self
    }

    /// How long calls wait for answers (default 60 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Joins or starts the group and returns once this node is in an installed view.
    pub fn start(self) -> Result<Group, RpcError> {
        let names: Vec<&str> = self.types.iter().map(|t| t.0.as_str()).collect();
        let policy = match self.policy {
            Some(p) => p,
            None => LayoutPolicy::from_config(&self.config, &names)?,
        };
        let declared: Vec<&str> = policy.types.iter().map(|t| t.name.as_str()).collect();
        if declared != names {
            return Err(RpcError::Group(format!(
                "the layout declares types {declared:?} but the group registers {names:?}"
            )));
        }
        for (i, t) in self.types.iter().enumerate() {
            if self.types[..i].iter().any(|u| u.1 == t.1) {
                return Err(RpcError::Group(format!(
                    "type `{}` is registered twice; give each replicated type its own Rust type",
                    t.0
                )));
            }
        }
        let mut first = 0;
        let mut max_reply = Vec::new();
        let mut types = Vec::with_capacity(self.types.len());
        for ((name, type_id, factory), ty) in self.types.into_iter().zip(&policy.types) {
            let count = ty.subgroups.len();
            for sg in &ty.subgroups {
                let m = sg
                    .shards
                    .iter()
                    .filter_map(|s| self.config.profile(&s.profile))
                    .map(|p| usize::try_from(p.max_reply_payload_size).unwrap_or(usize::MAX))
                    .max()
                    .unwrap_or(usize::MAX);
                max_reply.push(m);
            }
            types.push(TypeEntry {
                name,
                type_id,
                factory,
                first,
                count,
            });
            first += count;
        }
        let d = &self.config.derecho;
        let limits = Limits {
            request: usize::try_from(d.max_p2p_request_payload_size).unwrap_or(usize::MAX),
            reply: usize::try_from(d.max_p2p_reply_payload_size).unwrap_or(usize::MAX),
            window: d.p2p_window_size.max(1) as usize,
        };
        let listener =
            TcpListener::bind(SocketAddr::new(d.local_ip, d.external_port)).map_err(|e| {
                RpcError::Io {
                    context: format!(
                        "binding the P2P port {}:{} ([DERECHO] external_port)",
                        d.local_ip, d.external_port
                    ),
                    source: e,
                }
            })?;
        let (tx, rx) = mpsc::sync_channel(REPLY_QUEUE);
        let inner = Arc::new(Inner {
            me: d.local_id,
            types,
            replicas: RwLock::new(HashMap::new()),
            view: RwLock::new(View {
                vid: 0,
                members: Vec::new(),
                subgroups: Vec::new(),
                joined: Vec::new(),
                transfers: Vec::new(),
            }),
            pending: Mutex::new(HashMap::new()),
            replied: Condvar::new(),
            next_id: AtomicU64::new(1),
            peers: Peers::new(limits),
            replies_out: tx,
            max_reply,
            timeout: self.timeout,
            node: OnceLock::new(),
            on_view: Mutex::new(self.on_view),
        });
        let server = P2pServer::start(
            listener,
            d.local_id,
            Arc::new(Served(Arc::downgrade(&inner))),
            limits,
        )?;
        let w = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name(format!("rpc-replies-{}", d.local_id))
            .spawn(move || reply_sender(&w, &rx))
            .map_err(|e| RpcError::Io {
                context: "starting the reply sender".into(),
                source: e,
            })?;
        let layout = layout_from_policy(policy, &self.config)?;
        let (on_deliver, on_view) = (Arc::downgrade(&inner), Arc::downgrade(&inner));
        let node = GroupNode::start_hooks(
            &self.config,
            layout,
            Box::new(move |d| {
                if let Some(i) = on_deliver.upgrade() {
                    i.delivered(&d);
                }
            }),
            Hooks {
                on_view: Some(Box::new(move |v| {
                    if let Some(i) = on_view.upgrade() {
                        i.view_installed(v);
                    }
                })),
                state: Some(Arc::new(States(Arc::downgrade(&inner)))),
            },
        )?;
        let node = Arc::new(node);
        let _ = inner.node.set(Arc::downgrade(&node));
        Ok(Group {
            inner,
            node,
            server: Mutex::new(server),
        })
    }
}

/// A running member of a group of replicated objects.
pub struct Group {
    inner: Arc<Inner>,
    node: Arc<GroupNode>,
    server: Mutex<P2pServer>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("me", &self.inner.me)
            .finish_non_exhaustive()
    }
}

impl Group {
    /// This node's id.
    pub fn my_id(&self) -> NodeId {
        self.inner.me
    }

    /// The installed view.
    pub fn view(&self) -> View {
        read_lock(&self.inner.view).clone()
    }

    /// This node's rank in the installed view.
    pub fn my_rank(&self) -> Option<usize> {
        self.view().rank_of(self.inner.me)
    }

    /// The members of the installed view, in rank order.
    pub fn members(&self) -> Vec<NodeId> {
        self.view().ids()
    }

    /// The view and the types, as external clients see them.
    pub fn info(&self) -> GroupInfo {
        self.inner.info()
    }

    /// The underlying member (raw multicast, failure reports, view waits).
    pub fn node(&self) -> &GroupNode {
        &self.node
    }

    /// A handle on subgroup `index` of type `T`, for members and non-members alike.
    pub fn subgroup<T: Replicated>(&self, index: usize) -> Result<Subgroup<T>, RpcError> {
        let t = self
            .inner
            .types
            .iter()
            .find(|t| t.type_id == TypeId::of::<T>())
            .ok_or_else(|| RpcError::UnknownType(std::any::type_name::<T>().to_string()))?;
        if index >= t.count {
            return Err(RpcError::NoSuchSubgroup {
                type_name: t.name.clone(),
                index,
                count: t.count,
            });
        }
        Ok(Subgroup {
            inner: Arc::clone(&self.inner),
            id: t.first + index,
            _t: PhantomData,
        })
    }

    /// Leaves the group gracefully (see [`GroupNode::leave`]).
    pub fn leave(&self, timeout: Duration) -> Result<(), RpcError> {
        let r = self.node.leave(timeout);
        lock(&self.server).stop();
        Ok(r?)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        lock(&self.server).stop();
    }
}

/// A handle on one subgroup of type `T`.
pub struct Subgroup<T: Replicated> {
    inner: Arc<Inner>,
    id: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T: Replicated> Clone for Subgroup<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            id: self.id,
            _t: PhantomData,
        }
    }
}

impl<T: Replicated> std::fmt::Debug for Subgroup<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subgroup").field("id", &self.id).finish()
    }
}

impl<T: Replicated> Subgroup<T> {
    /// The flat subgroup id.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The members of each shard in the installed view.
    pub fn shard_members(&self) -> Vec<Vec<NodeId>> {
        read_lock(&self.inner.view)
            .subgroups
            .get(self.id)
            .map(|s| s.shards.iter().map(|x| x.members.clone()).collect())
            .unwrap_or_default()
    }

    /// All members of the subgroup in the installed view.
    pub fn members(&self) -> Vec<NodeId> {
        self.shard_members().concat()
    }

    /// This node's shard, if it is a member.
    pub fn my_shard(&self) -> Option<usize> {
        read_lock(&self.inner.view)
            .shard_of(self.id, self.inner.me)
            .map(|(s, _)| s)
    }

    /// Runs `f` on this node's replica (if it holds one).
    pub fn with_local<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        let obj = read_lock(&self.inner.replicas)
            .get(&self.id)
            .map(|r| Arc::clone(&r.obj))?;
        let h = obj.as_any().downcast_ref::<Holder<T>>()?;
        let state = read_lock(&h.0);
        let r = f(&state);
        drop(state);
        Some(r)
    }

    /// Multicasts `update` in this node's shard; every member applies it in the shard's total
    /// order. The update must fit the shard profile's `max_payload_size` (checked before
    /// anything is sent).
    pub fn ordered_send(&self, update: &T::Update) -> Result<ReplyMap<T::Reply>, RpcError> {
        let body = wire::encode(update)?;
        let id = self.inner.ordered_send_raw(self.id, &body)?;
        Ok(ReplyMap {
            inner: Arc::clone(&self.inner),
            id,
            _r: PhantomData,
        })
    }

    /// Asks `node`, a member of this subgroup, to run `query` on its replica.
    pub fn p2p_send(&self, node: NodeId, query: &T::Query) -> Result<T::Reply, RpcError> {
        let body = wire::encode(query)?;
        let v = read_lock(&self.inner.view).clone();
        let addr = target(&v, self.id, node)?;
        if node == self.inner.me {
            let r = self
                .inner
                .query_local(self.id, &body)
                .map_err(|message| RpcError::Remote { node, message })?;
            return wire::decode(&r).map_err(|message| RpcError::Remote { node, message });
        }
        let r = call(
            &self.inner.peers,
            node,
            addr,
            Kind::Query,
            self.id,
            &body,
            self.inner.timeout,
        )?;
        wire::decode(&r).map_err(|message| RpcError::Remote { node, message })
    }

    /// Asks `node`, a member of this subgroup, to send `update` in its shard and return every
    /// member's reply (how non-members and external clients update a subgroup).
    pub fn ordered_send_via(
        &self,
        node: NodeId,
        update: &T::Update,
    ) -> Result<BTreeMap<NodeId, Result<T::Reply, RpcError>>, RpcError> {
        let body = wire::encode(update)?;
        if node == self.inner.me {
            let id = self.inner.ordered_send_raw(self.id, &body)?;
            let replies = self.inner.wait_replies(id, self.inner.timeout)?;
            return Ok(decode_replies::<T::Reply>(replies));
        }
        let v = read_lock(&self.inner.view).clone();
        let addr = target(&v, self.id, node)?;
        let r = call(
            &self.inner.peers,
            node,
            addr,
            Kind::Relay,
            self.id,
            &body,
            self.inner.timeout,
        )?;
        relayed::<T::Reply>(node, &r)
    }
}

fn decode_replies<R: DeserializeOwned>(
    replies: BTreeMap<NodeId, Result<Vec<u8>, RpcError>>,
) -> BTreeMap<NodeId, Result<R, RpcError>> {
    replies
        .into_iter()
        .map(|(n, r)| {
            let r = r.and_then(|b| {
                wire::decode(&b).map_err(|message| RpcError::Remote { node: n, message })
            });
            (n, r)
        })
        .collect()
}

/// Decodes a relayed reply map.
fn relayed<R: DeserializeOwned>(
    node: NodeId,
    bytes: &[u8],
) -> Result<BTreeMap<NodeId, Result<R, RpcError>>, RpcError> {
    let flat: Vec<(NodeId, Result<Vec<u8>, String>)> =
        wire::decode(bytes).map_err(|message| RpcError::Remote { node, message })?;
    Ok(flat
        .into_iter()
        .map(|(n, r)| {
            let r = r
                .and_then(|b| wire::decode::<R>(&b))
                .map_err(|message| RpcError::Remote { node: n, message });
            (n, r)
        })
        .collect())
}

/// The P2P address of `node`, checking it is a member of `subgroup` in `v`.
fn target(v: &View, subgroup: usize, node: NodeId) -> Result<SocketAddr, RpcError> {
    let m = v
        .members
        .iter()
        .find(|m| m.id == node)
        .ok_or(RpcError::NotInView { node })?;
    if subgroup >= v.subgroups.len() {
        return Err(RpcError::NoSuchSubgroup {
            type_name: "?".into(),
            index: subgroup,
            count: v.subgroups.len(),
        });
    }
    v.shard_of(subgroup, node)
        .ok_or(RpcError::NotMember { node, subgroup })?;
    Ok(SocketAddr::new(m.ip, m.external_port))
}

/// One request over the P2P port, with the size check done before anything is sent.
fn call(
    peers: &Peers,
    node: NodeId,
    addr: SocketAddr,
    kind: Kind,
    subgroup: usize,
    body: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, RpcError> {
    let max = peers.limits().request;
    if body.len() > max {
        return Err(RpcError::TooLarge {
            what: "a P2P request",
            len: body.len(),
            limit: "max_p2p_request_payload_size",
            max,
        });
    }
    let conn = peers.get(node, addr)?;
    let sg = u32::try_from(subgroup)
        .map_err(|_| RpcError::Protocol(format!("subgroup id {subgroup} too large")))?
        .to_le_bytes();
    conn.call(kind, &[&sg, body], timeout)?
        .map_err(|message| RpcError::Remote { node, message })
}

/// The replies of an ordered request, one per member of the shard.
pub struct ReplyMap<R> {
    inner: Arc<Inner>,
    id: u64,
    _r: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for ReplyMap<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyMap").field("id", &self.id).finish()
    }
}

impl<R: DeserializeOwned> ReplyMap<R> {
    /// Waits (up to the group's timeout) for every member's reply: node → its result, with
    /// [`RpcError::Removed`] for members a view change removed before they replied.
    pub fn wait(self) -> Result<BTreeMap<NodeId, Result<R, RpcError>>, RpcError> {
        let t = self.inner.timeout;
        self.wait_for(t)
    }

    /// Like [`ReplyMap::wait`] with an explicit bound.
    pub fn wait_for(
        self,
        timeout: Duration,
    ) -> Result<BTreeMap<NodeId, Result<R, RpcError>>, RpcError> {
        let replies = self.inner.wait_replies(self.id, timeout)?;
        Ok(decode_replies(replies))
    }
}

impl<R> Drop for ReplyMap<R> {
    fn drop(&mut self) {
        lock(&self.inner.pending).remove(&self.id);
    }
}

/// Bytes of the multicast header an ordered update travels behind (for sizing profiles).
pub const ORDERED_OVERHEAD: usize = HEADER_LEN + wire::ORDERED_HEADER;
