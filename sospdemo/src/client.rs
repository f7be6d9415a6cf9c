//! A blocking client of the function tier's gRPC service, for the CLI and the demo runner.
//!
//! **Owns**: naming a function-tier node ([`NodeAddr`]), connecting with a bounded retry,
//! cutting photos and models into request streams, and an upload progress bar on a terminal.
//! **Does not touch**: anything on the server side; every call runs on a small tokio runtime
//! owned by the [`Client`], so callers stay synchronous.
//!
//! The free functions [`inference`], [`install_model`], [`install_model_files`] and
//! [`remove_model`] connect, make one call and disconnect; a [`Client`] keeps its connection for
//! several calls.

use std::fmt;
use std::io::IsTerminal;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use sospdemo_proto::function_tier_service_client::FunctionTierServiceClient;
use sospdemo_proto::{
    install_model_requests, photo_requests, RemoveModelRequest, StreamError,
    FUNCTION_TIER_GRPC_PORT_BASE,
};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

use crate::model::{ModelError, ModelFiles};

/// The address of a function-tier node's gRPC service.
///
/// Parsed from `host:port` (`127.0.0.1:28000`, `node3.local:28000`, `[::1]:28000`) or from a
/// bare node id `N`, which means the local node `127.0.0.1:28000+N`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    host: String,
    port: u16,
}

impl NodeAddr {
    /// The address `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// The gRPC address of function-tier node `id` on this host: `127.0.0.1:28000+id`.
    pub fn local_node(id: u16) -> Result<Self, ClientError> {
        let port = FUNCTION_TIER_GRPC_PORT_BASE
            .checked_add(id)
            .ok_or_else(|| ClientError::BadAddress {
                addr: id.to_string(),
                reason: format!(
                    "node id {id} puts the port past 65535 (the port is {FUNCTION_TIER_GRPC_PORT_BASE} + id)"
                ),
            })?;
        Ok(Self::new("127.0.0.1", port))
    }

    /// The host part (an IPv6 literal keeps its brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn uri(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl FromStr for NodeAddr {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| ClientError::BadAddress {
            addr: s.to_owned(),
            reason: reason.to_owned(),
        };
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let id: u16 = s
                .parse()
                .map_err(|_| bad("a node id must be at most 65535"))?;
            return Self::local_node(id);
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| bad("expected host:port or a function-tier node id"))?;
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(bad("write an IPv6 address in brackets: [::1]:28000"));
        }
        if host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(bad("the host contains a space or a slash"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| bad("the port must be a number from 1 to 65535"))?;
        if port == 0 {
            return Err(bad("the port must be a number from 1 to 65535"));
        }
        Ok(Self::new(host, port))
    }
}

/// Why a call to the function tier failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node address cannot be used.
    #[error("bad function-tier node {addr:?}: {reason}")]
    BadAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection could be made within the retry window.
    #[error("cannot connect to the function tier at {addr} (tried for {window:?}): {reason}")]
    Connect {
        /// The node.
        addr: NodeAddr,
        /// How long connecting was retried.
        window: Duration,
        /// The last attempt's failure, with its causes.
        reason: String,
    },
    /// The server refused or failed the call.
    #[error("the function tier at {addr} answered {code:?}: {message}")]
    Rpc {
        /// The node.
        addr: NodeAddr,
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's explanation.
        message: String,
    },
    /// The photo or model cannot be put into a request stream (larger than 4 GiB).
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A photo could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A model file could not be read.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The client's tokio runtime could not be created.
    #[error("cannot start the client's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl ClientError {
    /// The gRPC status code, if the server answered with an error status.
    pub fn rpc_code(&self) -> Option<tonic::Code> {
        match self {
            Self::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Default of [`ClientOptions::connect_window`].
pub const DEFAULT_CONNECT_WINDOW: Duration = Duration::from_secs(5);
/// Pause between two connection attempts.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Time allowed to one connection attempt.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest reply the client accepts (replies are one line of text).
const MAX_REPLY_BYTES: usize = 4 << 20;

/// How a [`Client`] connects and reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long to keep retrying the connection (a node that is still starting refuses it).
    pub connect_window: Duration,
    /// Whether to draw an upload progress bar on standard error; it is drawn only when
    /// standard error is a terminal.
    pub progress: bool,
}

impl Default for ClientOptions {
    /// [`DEFAULT_CONNECT_WINDOW`], progress bar on (when standard error is a terminal).
    fn default() -> Self {
        Self {
            connect_window: DEFAULT_CONNECT_WINDOW,
            progress: true,
        }
    }
}

/// A connection to one function-tier node.
#[derive(Debug)]
pub struct Client {
    addr: NodeAddr,
    progress: bool,
    runtime: tokio::runtime::Runtime,
    grpc: FunctionTierServiceClient<Channel>,
}

impl Client {
    /// Connects to `addr` with the default options.
    pub fn connect(addr: &NodeAddr) -> Result<Self, ClientError> {
        Self::connect_with(addr, ClientOptions::default())
    }

    /// Connects to `addr`, retrying for up to `options.connect_window`.
    pub fn connect_with(addr: &NodeAddr, options: ClientOptions) -> Result<Self, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        let endpoint = Endpoint::from_shared(addr.uri())
            .map_err(|e| ClientError::BadAddress {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_ATTEMPT_TIMEOUT);
        let channel = runtime.block_on(async {
            let deadline = Instant::now() + options.connect_window;
            loop {
                match endpoint.connect().await {
                    Ok(channel) => return Ok(channel),
                    Err(e) if Instant::now() + CONNECT_RETRY_PAUSE >= deadline => {
                        return Err(ClientError::Connect {
                            addr: addr.clone(),
                            window: options.connect_window,
                            reason: error_chain(&e),
                        })
                    }
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "connection refused; retrying");
                        tokio::time::sleep(CONNECT_RETRY_PAUSE).await;
                    }
                }
            }
        })?;
        let grpc =
            FunctionTierServiceClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES);
        Ok(Self {
            addr: addr.clone(),
            progress: options.progress && std::io::stderr().is_terminal(),
            runtime,
            grpc,
        })
    }

    /// The node this client talks to.
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    fn rpc_error(&self, status: tonic::Status) -> ClientError {
        ClientError::Rpc {
            addr: self.addr.clone(),
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    /// A progress bar over `bytes` bytes, or a hidden one when progress is off.
    fn progress_bar(&self, bytes: usize, what: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(bytes as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        bar
    }

    /// Asks the models of `tags` what `photo` (a JPEG or PNG file's bytes) shows; the answer
    /// is the reply's `desc` (the label for one tag; one part per tag for several).
    pub fn inference(&mut self, tags: &[u32], photo: &[u8]) -> Result<String, ClientError> {
        let requests = photo_requests(tags.to_vec(), photo)?;
        let bar = self.progress_bar(photo.len(), "uploading photo");
        let stream = tokio_stream::iter(requests).map(move |r| {
            if let Some(sospdemo_proto::photo_request::PhotoChunk::FileData(d)) = &r.photo_chunk {
                bar.inc(d.len() as u64);
            }
            r
        });
        let grpc = &mut self.grpc;
        let reply = self.runtime.block_on(grpc.whatsthis(stream));
        match reply {
            Ok(r) => Ok(r.into_inner().desc),
            Err(status) => Err(self.rpc_error(status)),
        }
    }

    /// Installs `model` under `tag`; the answer is the reply's `(error_code, error_desc)`
    /// (0 and `install model successfully.` on success).
    pub fn install_model(
        &mut self,
        tag: u32,
        model: &ModelFiles,
    ) -> Result<(i32, String), ClientError> {
        let requests =
            install_model_requests(tag, &model.synset, &model.architecture, &model.weights)?;
        let bar = self.progress_bar(model.len(), "uploading model");
        let stream = tokio_stream::iter(requests).map(move |r| {
            if let Some(sospdemo_proto::install_model_request::ModelChunk::FileData(d)) =
                &r.model_chunk
            {
                bar.inc(d.len() as u64);
            }
            r
        });
        let grpc = &mut self.grpc;
        let reply = self.runtime.block_on(grpc.install_model(stream));
        match reply {
            Ok(r) => {
                let r = r.into_inner();
                Ok((r.error_code, r.error_desc))
            }
            Err(status) => Err(self.rpc_error(status)),
        }
    }

    /// Removes the model of `tag`; the answer is the reply's `(error_code, error_desc)`
    /// (0 and `remove model successfully.` on success).
    pub fn remove_model(&mut self, tag: u32) -> Result<(i32, String), ClientError> {
        let grpc = &mut self.grpc;
        let reply = self
            .runtime
            .block_on(grpc.remove_model(RemoveModelRequest { tag }));
        match reply {
            Ok(r) => {
                let r = r.into_inner();
                Ok((r.error_code, r.error_desc))
            }
            Err(status) => Err(self.rpc_error(status)),
        }
    }
}

/// An error and its causes, as one line: tonic's transport errors say little on their own.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

/// Connects to `addr` and asks the models of `tags` what `photo` shows (see
/// [`Client::inference`]).
pub fn inference(addr: &NodeAddr, tags: &[u32], photo: &[u8]) -> Result<String, ClientError> {
    Client::connect(addr)?.inference(tags, photo)
}

/// Connects to `addr` and installs `model` under `tag` (see [`Client::install_model`]).
pub fn install_model(
    addr: &NodeAddr,
    tag: u32,
    model: &ModelFiles,
) -> Result<(i32, String), ClientError> {
    Client::connect(addr)?.install_model(tag, model)
}

/// Reads a model's synset, architecture and weights files and installs it under `tag` at
/// `addr`.
pub fn install_model_files(
    addr: &NodeAddr,
    tag: u32,
    synset: &Path,
    architecture: &Path,
    weights: &Path,
) -> Result<(i32, String), ClientError> {
    let model = ModelFiles::read(synset, architecture, weights)?;
    install_model(addr, tag, &model)
}

/// Connects to `addr` and removes the model of `tag` (see [`Client::remove_model`]).
pub fn remove_model(addr: &NodeAddr, tag: u32) -> Result<(i32, String), ClientError> {
    Client::connect(addr)?.remove_model(tag)
}

/// Reads a photo file, with the path in the error.
pub fn read_photo(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Parses a tag list as the CLI takes it: one tag or several separated by commas (`1,2,3`).
pub fn parse_tags(s: &str) -> Result<Vec<u32>, String> {
    let tags = s
        .split(',')
        .map(|t| {
            let t = t.trim();
            t.parse::<u32>()
                .map_err(|_| format!("{t:?} is not a tag (tags are numbers from 0 to 4294967295)"))
        })
        .collect::<Result<Vec<u32>, String>>()?;
    if tags.is_empty() {
        return Err("no tag given".to_owned());
    }
    Ok(tags)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_and_host_ports() {
        assert_eq!(
            "0".parse::<NodeAddr>().unwrap(),
            NodeAddr::new("127.0.0.1", 28000)
        );
        assert_eq!(
            "5".parse::<NodeAddr>().unwrap().to_string(),
            "127.0.0.1:28005"
        );
        assert_eq!(
            "127.0.0.1:28001".parse::<NodeAddr>().unwrap(),
            NodeAddr::new("127.0.0.1", 28001)
        );
        assert_eq!(
            "node3.example:9000".parse::<NodeAddr>().unwrap(),
            NodeAddr::new("node3.example", 9000)
        );
        let v6: NodeAddr = "[::1]:28000".parse().unwrap();
        assert_eq!((v6.host(), v6.port()), ("[::1]", 28000));
        assert_eq!(v6.uri(), "http://[::1]:28000");
    }

    #[test]
    fn bad_nodes_are_refused() {
        for bad in [
            "",
            "localhost",
            ":28000",
            "127.0.0.1:",
            "127.0.0.1:port",
            "127.0.0.1:0",
            "127.0.0.1:70000",
            "::1:28000",
            "37536",
            "99999999",
            "a b:1",
        ] {
            let e = bad.parse::<NodeAddr>().unwrap_err();
            assert!(matches!(e, ClientError::BadAddress { .. }), "{bad:?}: {e}");
        }
        assert!("37535".parse::<NodeAddr>().is_ok());
    }

    #[test]
    fn tag_lists() {
        assert_eq!(parse_tags("1").unwrap(), vec![1]);
        assert_eq!(parse_tags("1,2, 3").unwrap(), vec![1, 2, 3]);
        assert!(parse_tags("").is_err());
        assert!(parse_tags("1,,2").is_err());
        assert!(parse_tags("-1").is_err());
        assert!(parse_tags("x").is_err());
    }
}
