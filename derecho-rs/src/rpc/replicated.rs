//! The [`Replicated`] trait, and the type-erased replica the group holds for it.

use super::*;

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

/// A replica behind its type.
pub(super) trait Erased: Send + Sync {
    fn apply(&self, update: &[u8]) -> wire::Answer;
    fn query(&self, query: &[u8]) -> wire::Answer;
    fn save(&self, out: &mut dyn Write) -> io::Result<()>;
    fn load(&self, input: &mut dyn Read) -> io::Result<()>;
    fn as_any(&self) -> &dyn Any;
}

pub(super) struct Holder<T: Replicated>(pub(super) RwLock<T>);

impl<T: Replicated> Erased for Holder<T> {
    fn apply(&self, update: &[u8]) -> wire::Answer {
        let u: T::Update = wire::decode(update).map_err(malformed)?;
        let r = write_lock(&self.0).apply(u);
        wire::encode(&r).map_err(unencodable)
    }
    fn query(&self, query: &[u8]) -> wire::Answer {
        let q: T::Query = wire::decode(query).map_err(malformed)?;
        let task = read_lock(&self.0).query_task(q);
        wire::encode(&task()).map_err(unencodable)
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

/// What a replica answers for a request it cannot decode.
fn malformed(e: Arc<bincode::Error>) -> RemoteError {
    RemoteError::Malformed {
        reason: e.to_string(),
    }
}

/// What a replica answers when its reply cannot be encoded.
fn unencodable(e: Arc<bincode::Error>) -> RemoteError {
    RemoteError::Encode {
        reason: e.to_string(),
    }
}

pub(super) type Factory = Box<dyn Fn(usize) -> Arc<dyn Erased> + Send + Sync>;
