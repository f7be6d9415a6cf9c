//! `sospdemo server`: one member of the service's group.
//!
//! The member reads `derecho.cfg` (the usual load order: the current folder, the environment,
//! `--SECTION/key=value` arguments), joins the group of the two [`crate::tiers`] types, and,
//! while it is a member of the function tier, serves gRPC on `local_ip:28000+local_id`. It
//! prints what the original printed — `FunctionTier listening on <ip>:<port>` on function-tier
//! members, then `Finished constructing derecho group.` and `Press ENTER to stop.` — and
//! leaves the group cleanly on ENTER or Ctrl-C.
//!
//! The `[SOSPDEMO]` section (or `--SOSPDEMO/key=value`) sets the batching of concurrent photos
//! ([`BatchConfig::from_config`]): `batch_max_size` (default 8, 1 turns batching off),
//! `batch_max_wait_us` (default 2000) and `batch_max_queue` (default 64).

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use derecho::config::ConfigLoader;
use derecho::rpc::{GroupBuilder, RpcError};

use crate::batch::BatchConfig;
use crate::service::{serve, ServerHandle, ServiceError, ServiceLimits};
use crate::tiers::{
    layout, CategorizerTier, FunctionTier, GroupCategorizers, CATEGORIZER_TIER, FUNCTION_TIER,
};

/// First port of the function tier's gRPC servers; node `i` listens on `BASE + i`.
pub const FUNCTION_TIER_GRPC_PORT_BASE: u16 = 28000;
/// Printed once the member is in the group.
pub const READY: &str = "Finished constructing derecho group.";
/// Bytes kept free in a P2P request for the categorizer's envelope around a photo or model.
const ENVELOPE: u64 = 4096;

/// Errors of the server mode.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration could not be loaded.
    #[error("configuration: {0}")]
    Config(String),
    /// The group could not be joined or left.
    #[error("group: {0}")]
    Group(#[source] RpcError),
    /// The gRPC front end failed.
    #[error("gRPC front end: {0}")]
    Service(#[from] ServiceError),
    /// This node's id does not give it a gRPC port.
    #[error("local_id {0} is too large for a gRPC port of 28000 + local_id")]
    Port(u32),
}

impl<E: Into<RpcError>> From<E> for ServerError {
    fn from(e: E) -> Self {
        ServerError::Group(e.into())
    }
}

enum Event {
    Stop(&'static str),
    View,
}

/// Runs a member until ENTER or Ctrl-C; `args` are Derecho overrides (`--SECTION/key=value`).
pub fn run(args: Vec<String>) -> Result<(), ServerError> {
    let config = ConfigLoader::new()
        .extra_sections(["SOSPDEMO"])
        .args(args)
        .load()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let policy = layout(&config).map_err(|e| ServerError::Config(e.to_string()))?;
    let batching =
        BatchConfig::from_config(&config).map_err(|e| ServerError::Config(e.to_string()))?;
    tracing::info!(?batching, "categorizer batching");
    let (tx, rx) = mpsc::channel::<Event>();
    let on_view = tx.clone();
    let group = GroupBuilder::new(&config)
        .replicated::<FunctionTier>(FUNCTION_TIER, |_| FunctionTier)
        // The installed models are persistent: they survive a restart of every member
        // (in `[PERS] file_path`, relative to the node's folder).
        .persistent::<CategorizerTier>(CATEGORIZER_TIER, move |_| CategorizerTier::new(batching))
        .layout(policy)
        .timeout(Duration::from_secs(300))
        .on_view(move |_| {
            let _ = on_view.send(Event::View);
        })
        .start()?;
    let port = u16::try_from(config.derecho.local_id)
        .ok()
        .and_then(|id| FUNCTION_TIER_GRPC_PORT_BASE.checked_add(id))
        .ok_or(ServerError::Port(config.derecho.local_id))?;
    let grpc_addr = SocketAddr::new(config.derecho.local_ip, port);
    let mut limits = ServiceLimits::from_config(&config);
    limits.max_photo_bytes = limits.max_photo_bytes.saturating_sub(ENVELOPE);
    limits.max_model_bytes = limits.max_model_bytes.saturating_sub(ENVELOPE);
    let front = group.subgroup::<FunctionTier>(0)?;
    // A batch's envelope (a length per photo, at most `MAX_BATCH` of them) fits in ENVELOPE.
    let categorizers = Arc::new(
        GroupCategorizers::new(
            group.subgroup::<CategorizerTier>(0)?,
            batching,
            config
                .derecho
                .max_p2p_request_payload_size
                .saturating_sub(ENVELOPE),
        )
        .map_err(|e| ServerError::Config(format!("cannot start the batch workers: {e}")))?,
    );
    let mut server: Option<ServerHandle> = None;
    // Starts or stops the front end as this node enters or leaves the function tier. An
    // inadequate view (too few nodes for some shard) has no tiers at all: the front end stays
    // as it is, and its calls wait for the next adequate view or fail over.
    let follow_role = |server: &mut Option<ServerHandle>| -> Result<(), ServerError> {
        if !group.view().is_adequate() {
            return Ok(());
        }
        let member = front.my_shard().is_some();
        if member && server.is_none() {
            let handle = serve(grpc_addr, categorizers.clone(), limits)?;
            let rule = "/".repeat(42);
            println!(
                "{rule}\nFunctionTier listening on {}\n{rule}",
                handle.local_addr()
            );
            *server = Some(handle);
        } else if !member {
            if let Some(s) = server.take() {
                s.shutdown()?;
                println!("FunctionTier on {grpc_addr} stopped: this node left the function tier");
            }
        }
        Ok(())
    };
    follow_role(&mut server)?;
    println!("{READY}");
    println!("Press ENTER to stop.");
    let _ = std::io::stdout().flush();
    let enter = tx.clone();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut line = String::new();
            // Without a terminal or pipe (stdin at end of file), only Ctrl-C stops the server.
            if let Ok(n) = std::io::stdin().lock().read_line(&mut line) {
                if n > 0 {
                    let _ = enter.send(Event::Stop("ENTER"));
                }
            }
        })
        .map_err(|e| ServerError::Config(format!("cannot watch stdin: {e}")))?;
    let interrupt = tx;
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = interrupt.send(Event::Stop("Ctrl-C"));
    }) {
        tracing::warn!(error = %e, "Ctrl-C will not leave the group cleanly");
    }
    // A member that stops (removed, in a minority) has no view events left to send: look
    // every half second, so that its stale replicas stop answering and the process exits.
    let mut stopped = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(Event::View) => follow_role(&mut server)?,
            Ok(Event::Stop(what)) => {
                tracing::info!("{what}: leaving the group");
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some(why) = group.node().stopped() {
            println!("This node has left the group: {why}");
            stopped = Some(why);
            break;
        }
    }
    if let Some(s) = server.take() {
        if let Err(e) = s.shutdown() {
            tracing::warn!(error = %e, "the gRPC front end did not stop cleanly");
        }
    }
    if stopped.is_some() {
        return Ok(());
    }
    // The others may all have gone already (the last one to leave finds no view to leave):
    // that is not an error of this node.
    if let Err(e) = group.leave(Duration::from_secs(5)) {
        tracing::info!(error = %e, "left without announcing it");
    }
    Ok(())
}
