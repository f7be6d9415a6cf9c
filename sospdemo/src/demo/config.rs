//! The per-node configurations of a local cluster: the shapes of `test-configs/` and the
//! `derecho.cfg` text of each node, generated rather than copied so that the demo needs no
//! files beside the binary.

use std::net::{Ipv4Addr, TcpListener};

use sospdemo_proto::FUNCTION_TIER_GRPC_PORT_BASE;

use super::DemoError;
use crate::client::NodeAddr;

/// GMS port of node 0; node `i` uses this plus `i`, like every other port below.
const GMS_PORT_BASE: u16 = 23580;
const STATE_TRANSFER_PORT_BASE: u16 = 28366;
const SST_PORT_BASE: u16 = 37683;
const RDMC_PORT_BASE: u16 = 31675;
const EXTERNAL_PORT_BASE: u16 = 32645;

/// The cluster shapes of `test-configs/`: half the nodes (at most two) in the function tier,
/// the rest in the categorizer tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterSize {
    /// n0 function tier; one categorizer shard: n1.
    Two,
    /// n0, n1 function tier; one categorizer shard: n2, n3.
    Four,
    /// n0, n1 function tier; categorizer shard 0: n2, n3; shard 1: n4, n5.
    Six,
}

impl ClusterSize {
    /// The shape with `nodes` nodes, if there is one (2, 4 or 6).
    pub fn from_nodes(nodes: usize) -> Option<Self> {
        match nodes {
            2 => Some(Self::Two),
            4 => Some(Self::Four),
            6 => Some(Self::Six),
            _ => None,
        }
    }

    /// Number of nodes.
    pub fn nodes(self) -> u16 {
        match self {
            Self::Two => 2,
            Self::Four => 4,
            Self::Six => 6,
        }
    }

    /// Number of function-tier nodes (ids `0..function_tier_nodes()`).
    pub fn function_tier_nodes(self) -> u16 {
        match self {
            Self::Two => 1,
            Self::Four | Self::Six => 2,
        }
    }

    /// Number of categorizer shards.
    pub fn categorizer_shards(self) -> u16 {
        match self {
            Self::Two | Self::Four => 1,
            Self::Six => 2,
        }
    }

    /// Members per shard (the same in both tiers).
    fn shard_size(self) -> u16 {
        match self {
            Self::Two => 1,
            Self::Four | Self::Six => 2,
        }
    }

    /// The gRPC addresses of the function-tier nodes, node 0 first.
    pub fn function_tier_addrs(self) -> Vec<NodeAddr> {
        (0..self.function_tier_nodes())
            .map(|id| NodeAddr::new("127.0.0.1", FUNCTION_TIER_GRPC_PORT_BASE + id))
            .collect()
    }
}

/// The text of `n<id>/derecho.cfg` in a cluster of `size`: the settings of
/// `test-configs/test-<n>-nodes/n<id>/derecho.cfg`.
pub fn node_config(size: ClusterSize, id: u16) -> Result<String, DemoError> {
    let nodes = size.nodes();
    if id >= nodes {
        return Err(DemoError::NoSuchNode { id, nodes });
    }
    let ft = size.function_tier_nodes();
    let shard_size = size.shard_size();
    let role = if id < ft {
        format!(
            "function tier (gRPC on 127.0.0.1:{})",
            FUNCTION_TIER_GRPC_PORT_BASE + id
        )
    } else {
        format!(
            "categorizer tier, shard {} of {}",
            (id - ft) / shard_size,
            size.categorizer_shards()
        )
    };
    let mut s = String::with_capacity(2048);
    let mut line = |text: &str| {
        s.push_str(text);
        s.push('\n');
    };
    line(&format!(
        "# sospdemo on one host, {nodes} nodes: this is node {id}, expected role: {role}."
    ));
    line("# Roles follow join order, so start the nodes in id order; n0 is the contact node.");
    line("");
    line("[DERECHO]");
    line("contact_ip = 127.0.0.1");
    line(&format!("contact_port = {GMS_PORT_BASE}"));
    line(&format!("local_id = {id}"));
    line("local_ip = 127.0.0.1");
    line("# Every port is its base plus the node id, so that all nodes share one host.");
    for (key, port) in node_ports(id) {
        line(&format!("{key} = {port}"));
    }
    line("# Failure detection that a busy laptop does not trip by accident.");
    line("heartbeat_ms = 100");
    line("sst_poll_cq_timeout_ms = 2000");
    line("# Keep partition safety on: a minority stops rather than carrying on alone.");
    line("disable_partitioning_safety = false");
    line("# Photos and models reach the categorizers as P2P requests of up to 100 MiB.");
    line("max_p2p_request_payload_size = 104857600");
    line("max_p2p_reply_payload_size = 131072");
    line("p2p_window_size = 1");
    line("");
    line("[RDMA]");
    line("backend = tcp");
    line("provider = tcp");
    line("domain = lo");
    line("tx_depth = 256");
    line("rx_depth = 256");
    line("");
    line("[SUBGROUP/DEFAULT]");
    line("max_payload_size = 1048576");
    line("max_reply_payload_size = 10240");
    line("max_smc_payload_size = 10240");
    line("block_size = 1048576");
    line("window_size = 3");
    line("rdmc_send_algorithm = binomial_send");
    line("");
    line("[SUBGROUP/FUNCTION_TIER]");
    line("# The front end multicasts nothing, so its buffers stay tiny (128 is the smallest reply size).");
    line("max_payload_size = 100");
    line("max_reply_payload_size = 128");
    line("max_smc_payload_size = 100");
    line("block_size = 100");
    line("window_size = 3");
    line("rdmc_send_algorithm = binomial_send");
    line("num_shards = 1");
    line(&format!("min_nodes = {shard_size}"));
    line(&format!("max_nodes = {shard_size}"));
    line("");
    line("[SUBGROUP/CATEGORIZER_TIER]");
    line("# Installing a model is an ordered multicast of up to 100 MiB, carried by RDMC in 1 MiB blocks.");
    line("max_payload_size = 104857600");
    line("max_reply_payload_size = 131072");
    line("max_smc_payload_size = 10240");
    line("block_size = 1048576");
    line("window_size = 3");
    line("rdmc_send_algorithm = binomial_send");
    line(&format!("num_shards = {}", size.categorizer_shards()));
    line(&format!("min_nodes = {shard_size}"));
    line(&format!("max_nodes = {shard_size}"));
    line("");
    line("[PERS]");
    line("file_path = .plog");
    line("reset = false");
    line("");
    line("[LOGGER]");
    line("default_log_level = info");
    Ok(s)
}

/// The `[SECURITY]` section that puts a node in the secret mode with the group secret in
/// `secret_file` (append it to [`node_config`]'s text). Every node of the cluster must use the
/// same file.
pub fn secure_section(secret_file: &std::path::Path) -> String {
    format!(
        "\n[SECURITY]\n# Every connection between the nodes proves it holds this secret.\n\
         mode = secret\ngroup_secret_file = {}\n",
        secret_file.display()
    )
}

/// The `[SECURITY]` section that puts a node in the certificate mode: it trusts the group CA
/// in `ca_file` and holds the certificate `cert_file` (issued to its own id) with its key
/// `key_file` (append it to [`node_config`]'s text).
pub fn certificate_section(
    ca_file: &std::path::Path,
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
) -> String {
    format!(
        "\n[SECURITY]\n# Every connection is mutual TLS under the group CA; each node holds a \
         certificate naming its id.\nmode = certificate\nca_file = {}\ncert_file = {}\n\
         key_file = {}\n",
        ca_file.display(),
        cert_file.display(),
        key_file.display()
    )
}

/// The `[DERECHO]` ports of node `id`, in file order.
fn node_ports(id: u16) -> [(&'static str, u16); 5] {
    [
        ("gms_port", GMS_PORT_BASE + id),
        ("state_transfer_port", STATE_TRANSFER_PORT_BASE + id),
        ("sst_port", SST_PORT_BASE + id),
        ("rdmc_port", RDMC_PORT_BASE + id),
        ("external_port", EXTERNAL_PORT_BASE + id),
    ]
}

/// Fails if a port the cluster will listen on is taken (a clearer error than a node's).
pub(super) fn check_ports_free(size: ClusterSize) -> Result<(), DemoError> {
    let mut ports: Vec<(u16, String)> = Vec::new();
    for id in 0..size.nodes() {
        for (key, port) in node_ports(id) {
            ports.push((port, format!("{key} of node {id}")));
        }
    }
    for id in 0..size.function_tier_nodes() {
        ports.push((
            FUNCTION_TIER_GRPC_PORT_BASE + id,
            format!("gRPC of node {id}"),
        ));
    }
    for (port, purpose) in ports {
        if let Err(e) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                return Err(DemoError::PortInUse { port, purpose });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use derecho::config::Config;

    fn test_config_path(size: ClusterSize, id: u16) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("test-configs")
            .join(format!("test-{}-nodes", size.nodes()))
            .join(format!("n{id}"))
            .join("derecho.cfg")
    }

    #[test]
    fn generated_configs_match_test_configs() {
        for size in [ClusterSize::Two, ClusterSize::Four, ClusterSize::Six] {
            for id in 0..size.nodes() {
                let path = test_config_path(size, id);
                let on_disk = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let generated = node_config(size, id).unwrap();
                let a = Config::from_ini_str(&on_disk, "derecho.cfg")
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let b = Config::from_ini_str(&generated, "derecho.cfg")
                    .unwrap_or_else(|e| panic!("generated n{id} of {size:?}: {e}"));
                assert_eq!(a, b, "{}", path.display());
                assert_eq!(b.derecho.local_id, u32::from(id));
                // The role comment is part of the contract with a reader of the folder.
                assert_eq!(on_disk.lines().next(), generated.lines().next());
            }
            assert!(matches!(
                node_config(size, size.nodes()),
                Err(DemoError::NoSuchNode { .. })
            ));
        }
    }

    #[test]
    fn cluster_sizes() {
        assert_eq!(ClusterSize::from_nodes(4), Some(ClusterSize::Four));
        assert_eq!(ClusterSize::from_nodes(3), None);
        assert_eq!(
            ClusterSize::Six
                .function_tier_addrs()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["127.0.0.1:28000", "127.0.0.1:28001"]
        );
    }
}
