//! Choosing a backend at run time, from the `[RDMA]` section of a configuration.
//!
//! [`BackendConfig`] names a backend and carries its settings; [`start`] builds the fabric. The
//! backends that need system libraries (`libfabric`, `verbs`) exist only when the crate is built
//! with the cargo feature of the same name; asking for one that is not compiled in is an error
//! that says which feature to enable or which configuration key to change, so callers never need
//! `cfg` attributes of their own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::secure::Credentials;
use crate::shm::{ShmConfig, ShmFabric};
use crate::tcp::{TcpConfig, TcpFabric};
use crate::{Fabric, FabricError, NodeId};

/// Settings of the libfabric backend (`[RDMA] backend = libfabric`).
#[derive(Clone, Debug)]
pub struct LibfabricConfig {
    /// This node's id.
    pub local_id: NodeId,
    /// Address of the TCP side channel (names, keys and addresses are exchanged over it); port
    /// 0 picks a free port.
    pub listen: SocketAddr,
    /// The libfabric provider (`[RDMA] provider`): `tcp` on Ethernet, `verbs` on RDMA NICs.
    pub provider: String,
    /// The domain (`[RDMA] domain`): the interface for tcp-like providers (`lo` on loopback),
    /// the device for verbs (for example `mlx5_0`).
    pub domain: String,
    /// Send queue depth (`[RDMA] tx_depth`).
    pub tx_depth: u32,
    /// Receive queue depth (`[RDMA] rx_depth`).
    pub rx_depth: u32,
    /// How long a side-channel handshake may take (default 5 s).
    pub handshake_timeout: std::time::Duration,
    /// How long a write may wait for room in the send queue before the link is declared failed
    /// (default 10 s).
    pub send_timeout: std::time::Duration,
    /// What every side-channel connection must prove before its hello is read
    /// ([`Credentials::Open`] by default; see [`crate::secure`]).
    pub credentials: Credentials,
}

impl LibfabricConfig {
    /// Defaults (`tcp` provider on `lo`, queue depths 256) for node `local_id` with its side
    /// channel on `listen`.
    pub fn new(local_id: NodeId, listen: SocketAddr) -> Self {
        Self {
            local_id,
            listen,
            provider: "tcp".to_string(),
            domain: "lo".to_string(),
            tx_depth: 256,
            rx_depth: 256,
            handshake_timeout: std::time::Duration::from_secs(5),
            send_timeout: std::time::Duration::from_secs(10),
            credentials: Credentials::Open,
        }
    }
}

/// Settings of the raw ibverbs backend (`[RDMA] backend = verbs`).
#[derive(Clone, Debug)]
pub struct VerbsConfig {
    /// This node's id.
    pub local_id: NodeId,
    /// Address of the TCP side channel (queue pair numbers, keys and addresses are exchanged
    /// over it); port 0 picks a free port.
    pub listen: SocketAddr,
    /// The RDMA device (`[RDMA] domain`, for example `mlx5_0`); empty or a non-device name such
    /// as `lo` takes the first device.
    pub device: String,
    /// Port of the device (default 1).
    pub port: u8,
    /// GID index for RoCE (default 0).
    pub gid_index: u8,
    /// Send queue depth (`[RDMA] tx_depth`).
    pub tx_depth: u32,
    /// Receive queue depth (`[RDMA] rx_depth`).
    pub rx_depth: u32,
    /// How long a side-channel handshake may take (default 5 s).
    pub handshake_timeout: std::time::Duration,
    /// How long a write may wait for room in the send queue (default 10 s).
    pub send_timeout: std::time::Duration,
    /// What every side-channel connection must prove before its hello is read
    /// ([`Credentials::Open`] by default; see [`crate::secure`]).
    pub credentials: Credentials,
}

impl VerbsConfig {
    /// Defaults (first device, port 1, GID 0, depths 256) for node `local_id`.
    pub fn new(local_id: NodeId, listen: SocketAddr) -> Self {
        Self {
            local_id,
            listen,
            device: String::new(),
            port: 1,
            gid_index: 0,
            tx_depth: 256,
            rx_depth: 256,
            handshake_timeout: std::time::Duration::from_secs(5),
            send_timeout: std::time::Duration::from_secs(10),
            credentials: Credentials::Open,
        }
    }
}

/// Which backend to start, with its settings.
#[derive(Clone, Debug)]
pub enum BackendConfig {
    /// One TCP stream per pair of nodes ([`crate::tcp`]).
    Tcp(TcpConfig),
    /// Shared memory between processes on one host ([`crate::shm`]).
    Shm(ShmConfig),
    /// libfabric (cargo feature `libfabric`).
    Libfabric(LibfabricConfig),
    /// Raw ibverbs (cargo feature `verbs`).
    Verbs(VerbsConfig),
}

/// The `[RDMA]` settings a backend is chosen from, in the configuration's own terms.
#[derive(Clone, Debug)]
pub struct RdmaSettings {
    /// `backend`: `tcp`, `shm`, `libfabric` or `verbs`.
    pub backend: String,
    /// `provider` (libfabric).
    pub provider: String,
    /// `domain` (libfabric: interface or device; verbs: device).
    pub domain: String,
    /// `tx_depth`.
    pub tx_depth: u32,
    /// `rx_depth`.
    pub rx_depth: u32,
    /// Where shm keeps its files (`/dev/shm` unless set).
    pub shm_dir: Option<PathBuf>,
}

impl BackendConfig {
    /// Builds the configuration of the backend named in `rdma` for node `local_id` listening on
    /// `listen`, with every other setting at its default.
    pub fn from_rdma(
        rdma: &RdmaSettings,
        local_id: NodeId,
        listen: SocketAddr,
    ) -> Result<Self, FabricError> {
        Ok(match rdma.backend.to_ascii_lowercase().as_str() {
            "tcp" => BackendConfig::Tcp(TcpConfig::new(local_id, listen)),
            "shm" => {
                let mut c = ShmConfig::new(local_id, listen);
                if let Some(dir) = &rdma.shm_dir {
                    c.dir = dir.clone();
                }
                BackendConfig::Shm(c)
            }
            "libfabric" => {
                let mut c = LibfabricConfig::new(local_id, listen);
                c.provider = rdma.provider.clone();
                c.domain = rdma.domain.clone();
                c.tx_depth = rdma.tx_depth;
                c.rx_depth = rdma.rx_depth;
                BackendConfig::Libfabric(c)
            }
            "verbs" => {
                let mut c = VerbsConfig::new(local_id, listen);
                c.device = rdma.domain.clone();
                c.tx_depth = rdma.tx_depth;
                c.rx_depth = rdma.rx_depth;
                BackendConfig::Verbs(c)
            }
            other => {
                return Err(unsupported(format!(
                    "unknown fabric backend {other:?}: set [RDMA] backend to one of {}",
                    compiled().join(", ")
                )))
            }
        })
    }

    /// Sets the credentials every side-channel connection must prove (see [`crate::secure`]).
    pub fn set_credentials(&mut self, credentials: Credentials) {
        match self {
            BackendConfig::Tcp(c) => c.credentials = credentials,
            BackendConfig::Shm(c) => c.credentials = credentials,
            BackendConfig::Libfabric(c) => c.credentials = credentials,
            BackendConfig::Verbs(c) => c.credentials = credentials,
        }
    }

    /// The backend's name.
    pub fn name(&self) -> &'static str {
        match self {
            BackendConfig::Tcp(_) => "tcp",
            BackendConfig::Shm(_) => "shm",
            BackendConfig::Libfabric(_) => "libfabric",
            BackendConfig::Verbs(_) => "verbs",
        }
    }
}

/// The backends compiled into this build, by name.
pub fn compiled() -> Vec<&'static str> {
    let mut v = vec!["tcp", "shm"];
    if cfg!(feature = "libfabric") {
        v.push("libfabric");
    }
    if cfg!(feature = "verbs") {
        v.push("verbs");
    }
    v
}

fn unsupported(msg: String) -> FabricError {
    FabricError::io(msg, std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Starts the fabric described by `config`.
pub fn start(config: BackendConfig) -> Result<Arc<dyn Fabric>, FabricError> {
    match config {
        BackendConfig::Tcp(c) => Ok(Arc::new(TcpFabric::start(c)?)),
        BackendConfig::Shm(c) => Ok(Arc::new(ShmFabric::start(c)?)),
        BackendConfig::Libfabric(c) => start_libfabric(c),
        BackendConfig::Verbs(c) => start_verbs(c),
    }
}

#[cfg(feature = "libfabric")]
fn start_libfabric(c: LibfabricConfig) -> Result<Arc<dyn Fabric>, FabricError> {
    Ok(Arc::new(crate::libfabric::LibfabricFabric::start(c)?))
}

#[cfg(not(feature = "libfabric"))]
fn start_libfabric(_c: LibfabricConfig) -> Result<Arc<dyn Fabric>, FabricError> {
    Err(unsupported(
        "[RDMA] backend = libfabric is not compiled into this build (cargo feature `libfabric` \
         of derecho-fabric); rebuild with it or change [RDMA] backend"
            .to_string(),
    ))
}

#[cfg(feature = "verbs")]
fn start_verbs(c: VerbsConfig) -> Result<Arc<dyn Fabric>, FabricError> {
    Ok(Arc::new(crate::verbs::VerbsFabric::start(c)?))
}

#[cfg(not(feature = "verbs"))]
fn start_verbs(_c: VerbsConfig) -> Result<Arc<dyn Fabric>, FabricError> {
    Err(unsupported(
        "[RDMA] backend = verbs is not compiled into this build (cargo feature `verbs` of \
         derecho-fabric); rebuild with it or change [RDMA] backend"
            .to_string(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(backend: &str) -> RdmaSettings {
        RdmaSettings {
            backend: backend.into(),
            provider: "tcp".into(),
            domain: "lo".into(),
            tx_depth: 64,
            rx_depth: 32,
            shm_dir: None,
        }
    }

    #[test]
    fn names_map_to_backends() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        for name in ["tcp", "shm", "libfabric", "verbs"] {
            let c = BackendConfig::from_rdma(&settings(name), 3, any).unwrap();
            assert_eq!(c.name(), name);
        }
        match BackendConfig::from_rdma(&settings("libfabric"), 3, any).unwrap() {
            BackendConfig::Libfabric(c) => assert_eq!((c.tx_depth, c.rx_depth), (64, 32)),
            other => panic!("{other:?}"),
        }
        let err = BackendConfig::from_rdma(&settings("carrier-pigeon"), 3, any).unwrap_err();
        assert!(err.to_string().contains("[RDMA] backend"), "{err}");
    }

    #[test]
    fn starts_the_pure_rust_backends() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        for name in ["tcp", "shm"] {
            let f = start(BackendConfig::from_rdma(&settings(name), 1, any).unwrap()).unwrap();
            assert_eq!(f.backend(), name);
            f.shutdown();
        }
    }

    /// Without an RDMA device (this development machine, CI), starting verbs must fail with a
    /// message that names the key to change; on a host with a device it starts.
    #[cfg(feature = "verbs")]
    #[test]
    fn verbs_without_a_device_names_the_key() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        match start(BackendConfig::from_rdma(&settings("verbs"), 1, any).unwrap()) {
            Ok(f) => f.shutdown(),
            Err(e) => assert!(e.to_string().contains("[RDMA] backend"), "{e}"),
        }
    }

    #[cfg(not(feature = "libfabric"))]
    #[test]
    fn a_missing_backend_names_the_key() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let err =
            start(BackendConfig::from_rdma(&settings("libfabric"), 1, any).unwrap()).unwrap_err();
        assert!(err.to_string().contains("[RDMA] backend"), "{err}");
    }
}
