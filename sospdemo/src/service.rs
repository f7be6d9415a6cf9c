//! The function tier's gRPC front end: the `FunctionTierService` over a categorizer tier.
//!
//! **Owns**: reassembling the `Whatsthis` and `InstallModel` streams (with size bounds),
//! turning categorizer answers into replies and statuses, fanning a multi-tag question out to
//! several models, and the tokio runtime and tonic server that carry all of it ([`serve`],
//! [`ServerHandle`]).
//! **Does not touch**: the group. Everything it needs from the categorizer tier goes through the
//! blocking [`Categorizers`] trait, whose calls run on tokio's blocking pool; routing a tag to a
//! shard, replication and retries are the trait implementation's business.
//!
//! Answers, by call:
//! * `InstallModel` / `RemoveModel`: a [`ModelReply`] with `error_code` 0 and
//!   [`INSTALL_OK`] / [`REMOVE_OK`] on success; on a categorizer failure `error_code` is
//!   [`CategorizerError::error_code`] (negative) and `error_desc` the error's text.
//! * `Whatsthis` with one tag: `desc` is the label alone (`rose`); a failure is a gRPC status
//!   ([`CategorizerError::status_code`]) whose message is the error's text.
//! * `Whatsthis` with several tags: the models are asked concurrently and `desc` lists one part
//!   per distinct tag, in the client's order, joined by `"; "`: `rose (tag 1)` for an answer,
//!   `error (tag 3): no model installed for tag 3` for a failure. If every tag failed, the call
//!   fails with the first tag's status instead.
//! * A malformed stream (no metadata first, data longer or shorter than declared, over the size
//!   bound) is an `INVALID_ARGUMENT` status naming the violation. Nothing a client sends can
//!   stop the server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sospdemo_proto::function_tier_service_server::{
    FunctionTierService, FunctionTierServiceServer,
};
use sospdemo_proto::{
    InstallModelRequest, ModelAssembler, ModelReply, PhotoAssembler, PhotoReply, PhotoRequest,
    RemoveModelRequest, StreamError,
};
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use crate::model::{ModelError, ModelFiles};

/// What a categorizer sees in a photo: the label and its probability.
pub use crate::model::Guess;

/// `error_desc` of a successful `InstallModel`.
pub const INSTALL_OK: &str = "install model successfully.";
/// `error_desc` of a successful `RemoveModel`.
pub const REMOVE_OK: &str = "remove model successfully.";

/// Why the categorizer tier could not do what the function tier asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum CategorizerError {
    /// No model is installed under the tag.
    #[error("no model installed for tag {tag}")]
    NoModel {
        /// The tag asked for.
        tag: u32,
    },
    /// A model is already installed under the tag; it has to be removed first.
    #[error("tag {tag} is already in use by another model; remove it first")]
    TagInUse {
        /// The tag asked for.
        tag: u32,
    },
    /// The model cannot be loaded (corrupt or inconsistent files) or the photo cannot be
    /// classified (not a JPEG or PNG, unusable dimensions); the text says which.
    #[error("{0}")]
    Model(String),
    /// The categorizer tier could not be reached or did not answer (no member in the tag's
    /// shard, the group is changing views, a member failed and no other answered).
    #[error("the categorizer tier is unavailable: {0}")]
    Unavailable(String),
}

impl CategorizerError {
    /// The `error_code` of a [`ModelReply`] carrying this error: −1 for the tag's state
    /// ([`NoModel`](Self::NoModel), [`TagInUse`](Self::TagInUse), as the 2019 demo's
    /// categorizer answered), −2 for [`Model`](Self::Model), −3 for
    /// [`Unavailable`](Self::Unavailable).
    pub fn error_code(&self) -> i32 {
        match self {
            Self::NoModel { .. } | Self::TagInUse { .. } => -1,
            Self::Model(_) => -2,
            Self::Unavailable(_) => -3,
        }
    }

    /// The gRPC status code of a failed `Whatsthis`: `NOT_FOUND`, `ALREADY_EXISTS`,
    /// `INVALID_ARGUMENT` (the photo or the model is unusable) or `UNAVAILABLE`.
    pub fn status_code(&self) -> tonic::Code {
        match self {
            Self::NoModel { .. } => tonic::Code::NotFound,
            Self::TagInUse { .. } => tonic::Code::AlreadyExists,
            Self::Model(_) => tonic::Code::InvalidArgument,
            Self::Unavailable(_) => tonic::Code::Unavailable,
        }
    }
}

impl From<ModelError> for CategorizerError {
    fn from(e: ModelError) -> Self {
        Self::Model(e.to_string())
    }
}

impl From<CategorizerError> for Status {
    fn from(e: CategorizerError) -> Self {
        Status::new(e.status_code(), e.to_string())
    }
}

/// What the function tier needs from the categorizer tier. Blocking calls; implementations route
/// tag t to shard t % shards and retry another shard member on failure.
pub trait Categorizers: Send + Sync + 'static {
    /// Installs a model under `tag` on every replica of the tag's shard (ordered).
    fn install_model(&self, tag: u32, model: ModelFiles) -> Result<(), CategorizerError>;
    /// Removes the model of `tag` from every replica of its shard (ordered).
    fn remove_model(&self, tag: u32) -> Result<(), CategorizerError>;
    /// Classifies `photo` with the model of `tag` on one member of its shard.
    fn classify(&self, tag: u32, photo: Vec<u8>) -> Result<Guess, CategorizerError>;
}

/// Bounds on what one request may carry and how long it may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceLimits {
    /// Largest photo accepted by `Whatsthis`, in bytes.
    pub max_photo_bytes: u64,
    /// Largest model (synset + architecture + weights) accepted by `InstallModel`, in bytes.
    pub max_model_bytes: u64,
    /// Most distinct tags one `Whatsthis` may name.
    pub max_tags: usize,
    /// Longest a call may take, from its first byte to its reply; longer calls fail with
    /// `CANCELLED`.
    pub request_timeout: Duration,
}

/// Default of [`ServiceLimits::max_tags`].
pub const DEFAULT_MAX_TAGS: usize = 16;
/// Default of [`ServiceLimits::request_timeout`] (generous: a 100 MiB model over a slow link).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

impl ServiceLimits {
    /// Limits for a node configured by `config`: photos and models are at most
    /// `DERECHO/max_p2p_request_payload_size` bytes, since that is what carries them on to the
    /// categorizer tier. [`max_tags`](Self::max_tags) and
    /// [`request_timeout`](Self::request_timeout) take their defaults.
    pub fn from_config(config: &derecho::config::Config) -> Self {
        let bytes = config.derecho.max_p2p_request_payload_size;
        Self {
            max_photo_bytes: bytes,
            max_model_bytes: bytes,
            ..Self::default()
        }
    }

    /// The largest gRPC message the server has to decode: one chunk can at most hold a whole
    /// photo or model (clients normally send 32 KiB chunks), plus framing.
    fn max_message_bytes(&self) -> usize {
        let payload = self.max_photo_bytes.max(self.max_model_bytes);
        usize::try_from(payload.saturating_add(4096)).unwrap_or(usize::MAX)
    }
}

impl Default for ServiceLimits {
    /// 100 MiB photos and models (the test configurations' P2P payload size),
    /// [`DEFAULT_MAX_TAGS`] and [`DEFAULT_REQUEST_TIMEOUT`].
    fn default() -> Self {
        Self {
            max_photo_bytes: 100 << 20,
            max_model_bytes: 100 << 20,
            max_tags: DEFAULT_MAX_TAGS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// The `FunctionTierService` implementation: reassembles requests and hands them to a
/// [`Categorizers`].
#[derive(Clone)]
pub struct FunctionTier {
    categorizers: Arc<dyn Categorizers>,
    limits: ServiceLimits,
    in_flight: Arc<AtomicUsize>,
}

/// Counts a call as running until dropped.
struct CallGuard(Arc<AtomicUsize>);

impl CallGuard {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(counter))
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for FunctionTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionTier")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl FunctionTier {
    /// A front end over `categorizers` that enforces `limits`.
    pub fn new(categorizers: Arc<dyn Categorizers>, limits: ServiceLimits) -> Self {
        Self {
            categorizers,
            limits,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Calls being served right now (from the first message to the reply).
    pub fn calls_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The tonic service, with message size limits raised to fit [`ServiceLimits`].
    pub fn into_server(self) -> FunctionTierServiceServer<FunctionTier> {
        let max = self.limits.max_message_bytes();
        FunctionTierServiceServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    /// Runs a blocking categorizer call on tokio's blocking pool.
    async fn blocking<T, F>(&self, call: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Categorizers) -> T + Send + 'static,
    {
        let categorizers = Arc::clone(&self.categorizers);
        tokio::task::spawn_blocking(move || call(categorizers.as_ref()))
            .await
            .map_err(|e| Status::internal(format!("the categorizer call failed: {e}")))
    }

    /// Answers a photo with several tags: one concurrent classification per distinct tag.
    async fn classify_many(&self, tags: Vec<u32>, photo: Vec<u8>) -> Result<String, Status> {
        let photo = Arc::new(photo);
        let mut calls = Vec::with_capacity(tags.len());
        for &tag in &tags {
            let photo = Arc::clone(&photo);
            let categorizers = Arc::clone(&self.categorizers);
            calls.push(tokio::task::spawn_blocking(move || {
                categorizers.classify(tag, photo.as_ref().clone())
            }));
        }
        let mut parts = Vec::with_capacity(tags.len());
        let mut first_error = None;
        let mut answered = 0;
        for (tag, call) in tags.into_iter().zip(calls) {
            let result = call
                .await
                .map_err(|e| CategorizerError::Unavailable(format!("the call failed: {e}")))
                .and_then(|r| r);
            match result {
                Ok(guess) => {
                    answered += 1;
                    parts.push(format!("{} (tag {tag})", guess.label));
                }
                Err(e) => {
                    parts.push(format!("error (tag {tag}): {e}"));
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if answered == 0 => Err(e.into()),
            _ => Ok(parts.join("; ")),
        }
    }
}

/// A model stream's error as a status; a model over the size bound gets advice on the
/// configuration that sets the bound.
fn model_too_large(e: StreamError) -> Status {
    match e {
        StreamError::TooLarge { declared, limit } => Status::invalid_argument(format!(
            "the model is {declared} bytes, which exceeds the limit of {limit} bytes that this \
             group accepts (DERECHO/max_p2p_request_payload_size); to install it, raise \
             max_p2p_request_payload_size in the [DERECHO] section and max_payload_size in the \
             [SUBGROUP/CATEGORIZER_TIER] section of every node's derecho.cfg to at least \
             {declared} bytes and restart the group"
        )),
        other => other.into(),
    }
}

/// `tags` without repeats, in first-seen order.
fn distinct(tags: Vec<u32>) -> Vec<u32> {
    let mut seen = std::collections::HashSet::with_capacity(tags.len());
    tags.into_iter().filter(|t| seen.insert(*t)).collect()
}

fn model_reply(result: Result<(), CategorizerError>, ok: &str) -> ModelReply {
    match result {
        Ok(()) => ModelReply {
            error_code: 0,
            error_desc: ok.to_owned(),
        },
        Err(e) => ModelReply {
            error_code: e.error_code(),
            error_desc: e.to_string(),
        },
    }
}

#[tonic::async_trait]
impl FunctionTierService for FunctionTier {
    async fn whatsthis(
        &self,
        request: Request<Streaming<PhotoRequest>>,
    ) -> Result<Response<PhotoReply>, Status> {
        let _call = CallGuard::enter(&self.in_flight);
        let mut stream = request.into_inner();
        let mut assembler = PhotoAssembler::new(self.limits.max_photo_bytes);
        while let Some(msg) = stream.message().await? {
            assembler.push(msg)?;
        }
        let photo = assembler.finish()?;
        let tags = distinct(photo.tags);
        if tags.len() > self.limits.max_tags {
            return Err(Status::invalid_argument(format!(
                "the photo names {} tags; at most {} are allowed",
                tags.len(),
                self.limits.max_tags
            )));
        }
        tracing::debug!(?tags, bytes = photo.data.len(), "whatsthis");
        let desc = match tags.as_slice() {
            [tag] => {
                let tag = *tag;
                let data = photo.data;
                self.blocking(move |c| c.classify(tag, data)).await??.label
            }
            _ => self.classify_many(tags, photo.data).await?,
        };
        Ok(Response::new(PhotoReply { desc }))
    }

    async fn install_model(
        &self,
        request: Request<Streaming<InstallModelRequest>>,
    ) -> Result<Response<ModelReply>, Status> {
        let _call = CallGuard::enter(&self.in_flight);
        let mut stream = request.into_inner();
        let mut assembler = ModelAssembler::new(self.limits.max_model_bytes);
        while let Some(msg) = stream.message().await? {
            assembler.push(msg).map_err(model_too_large)?;
        }
        let model = assembler.finish()?;
        let tag = model.tag;
        let files = ModelFiles {
            synset: model.synset,
            architecture: model.architecture,
            weights: model.weights,
        };
        tracing::debug!(tag, bytes = files.len(), "install model");
        let result = self.blocking(move |c| c.install_model(tag, files)).await?;
        Ok(Response::new(model_reply(result, INSTALL_OK)))
    }

    async fn remove_model(
        &self,
        request: Request<RemoveModelRequest>,
    ) -> Result<Response<ModelReply>, Status> {
        let _call = CallGuard::enter(&self.in_flight);
        let tag = request.into_inner().tag;
        tracing::debug!(tag, "remove model");
        let result = self.blocking(move |c| c.remove_model(tag)).await?;
        Ok(Response::new(model_reply(result, REMOVE_OK)))
    }
}

/// Why the gRPC server could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The server's tokio runtime could not be created.
    #[error("cannot start the gRPC server's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with a transport error.
    #[error("the gRPC server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
    /// The server task ended abnormally (it panicked or was cancelled).
    #[error("the gRPC server task ended abnormally: {0}")]
    Task(String),
    /// Calls still running when the grace period of [`ServerHandle::shutdown`] ended were
    /// dropped.
    #[error("the gRPC server did not drain within {0:?}; remaining calls were dropped")]
    ShutdownTimeout(Duration),
}

/// Worker threads of the server's runtime: the front end only moves bytes; the categorizer
/// calls run on the blocking pool.
const SERVER_WORKER_THREADS: usize = 2;
/// Bound on concurrently running categorizer calls (the blocking pool's size).
const MAX_BLOCKING_CALLS: usize = 64;
/// Bound on concurrent calls per client connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// How long [`ServerHandle::shutdown`] lets running calls finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How often [`ServerHandle::shutdown`] checks whether the server has drained.
const SHUTDOWN_POLL: Duration = Duration::from_millis(20);

/// Starts the function tier's gRPC server on `addr` (port 0 picks a free port; see
/// [`ServerHandle::local_addr`]) on a tokio runtime of its own, and returns once it listens.
///
/// Accepted connections have `TCP_NODELAY` set (without it, small replies wait for delayed
/// ACKs). The server prints nothing; it logs through `tracing`.
pub fn serve(
    addr: SocketAddr,
    categorizers: Arc<dyn Categorizers>,
    limits: ServiceLimits,
) -> Result<ServerHandle, ServiceError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(SERVER_WORKER_THREADS)
        .max_blocking_threads(MAX_BLOCKING_CALLS)
        .thread_name("function-tier-grpc")
        .enable_all()
        .build()
        .map_err(ServiceError::Runtime)?;
    let incoming = {
        // Registering the listener with the reactor needs the runtime's context.
        let _context = runtime.enter();
        TcpIncoming::bind(addr)
            .map_err(|source| ServiceError::Bind { addr, source })?
            .with_nodelay(Some(true))
    };
    let local_addr = incoming
        .local_addr()
        .map_err(|source| ServiceError::Bind { addr, source })?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let front_end = FunctionTier::new(categorizers, limits);
    let in_flight = Arc::clone(&front_end.in_flight);
    let serving = tonic::transport::Server::builder()
        .timeout(limits.request_timeout)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .add_service(front_end.into_server())
        .serve_with_incoming_shutdown(incoming, async {
            // A dropped sender (the handle went away) also stops the server.
            let _ = stop_rx.await;
        });
    let task = runtime.spawn(serving);
    Ok(ServerHandle {
        local_addr,
        in_flight,
        stop: Some(stop_tx),
        task: Some(task),
        runtime: Some(runtime),
    })
}

/// A running gRPC server. [`shutdown`](Self::shutdown) stops it gracefully; dropping the
/// handle stops it abruptly.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    in_flight: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether the server is still serving (it only stops by itself on a transport failure).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops accepting connections, lets running calls finish for up to [`SHUTDOWN_GRACE`],
    /// closes the connections and stops the runtime. Connections that are merely open (a
    /// client keeping its channel between calls) do not delay the shutdown. Blocks; must not be
    /// called from inside an async context.
    pub fn shutdown(mut self) -> Result<(), ServiceError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let (Some(mut task), Some(runtime)) = (self.task.take(), self.runtime.take()) else {
            return Ok(());
        };
        let in_flight = Arc::clone(&self.in_flight);
        let outcome = runtime.block_on(async move {
            let deadline = Instant::now() + SHUTDOWN_GRACE;
            loop {
                if let Ok(ended) = tokio::time::timeout(SHUTDOWN_POLL, &mut task).await {
                    return match ended {
                        Err(join) => Err(ServiceError::Task(join.to_string())),
                        Ok(Err(e)) => Err(ServiceError::Serve(e)),
                        Ok(Ok(())) => Ok(()),
                    };
                }
                // The server waits for every connection to close; idle ones are cut here.
                if in_flight.load(Ordering::SeqCst) == 0 {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(ServiceError::ShutdownTimeout(SHUTDOWN_GRACE));
                }
            }
        });
        // Categorizer calls still blocked are abandoned: their threads finish on their own.
        runtime.shutdown_timeout(Duration::from_secs(1));
        outcome
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            // Never blocks, so dropping a handle inside an async context is safe.
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_keeps_first_seen_order() {
        assert_eq!(distinct(vec![3, 1, 3, 2, 1]), vec![3, 1, 2]);
    }

    #[test]
    fn error_texts_and_codes() {
        let e = CategorizerError::NoModel { tag: 7 };
        assert_eq!(e.to_string(), "no model installed for tag 7");
        assert_eq!(e.error_code(), -1);
        let status: Status = e.into();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "no model installed for tag 7");
        let reply = model_reply(Err(CategorizerError::Model("bad".into())), INSTALL_OK);
        assert_eq!((reply.error_code, reply.error_desc.as_str()), (-2, "bad"));
        let reply = model_reply(Ok(()), REMOVE_OK);
        assert_eq!(
            (reply.error_code, reply.error_desc.as_str()),
            (0, "remove model successfully.")
        );
    }
}
