//! The typed `[DERECHO]` section: identity, addresses, ports, timing and P2P limits.
//!
//! Each field's doc states its key and default. Where our default differs from the original
//! Derecho's, the doc says so and why.

use std::net::{IpAddr, Ipv4Addr};

use super::sections::{nonzero_u32, unknown, Section, MIN_REPLY_PAYLOAD_SIZE};
use super::value::{
    join_list, parse_bool, parse_enum, parse_ip, parse_list, parse_port, parse_u32, parse_u64,
    Launcher, Problem,
};

/// `[DERECHO]`: identity, addresses, ports, timing and P2P limits of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerechoSection {
    /// `contact_ip` (2019 name `leader_ip`): the node to send the join request to. Default
    /// `127.0.0.1`. A node whose `local_ip`/`gms_port` equal the contact starts the group.
    pub contact_ip: IpAddr,
    /// `contact_port` (2019 name `leader_gms_port`): the contact node's GMS port. Default 23580.
    pub contact_port: u16,
    /// `restart_leaders`: comma-separated IPs of the total-restart leaders, in priority order.
    /// Default `127.0.0.1`. The contact node uses this list at start: it asks every other node
    /// listed whether a group already runs (waiting at most a second) and joins it if one
    /// does, so that a contact node that crashed and restarted rejoins its group instead of
    /// founding a second one. Left at its default together with `restart_leader_ports`, the
    /// list means the contact alone, wherever the contact is.
    pub restart_leaders: Vec<IpAddr>,
    /// `restart_leader_ports`: their GMS ports, same length as `restart_leaders`. Default 23580.
    pub restart_leader_ports: Vec<u16>,
    /// `local_id`: this node's id; must be below `max_node_id`. Default 0.
    pub local_id: u32,
    /// `local_ip`: this node's IP address. Default `127.0.0.1`.
    pub local_ip: IpAddr,
    /// `gms_port`: where this node listens for joins and membership traffic. Default 23580.
    pub gms_port: u16,
    /// `state_transfer_port` (2019 name `rpc_port`): state transfer to joining members.
    /// Default 28366.
    pub state_transfer_port: u16,
    /// `sst_port`: SST and P2P side channel. Default 37683.
    pub sst_port: u16,
    /// `rdmc_port`: RDMC side channel. Default 31675.
    pub rdmc_port: u16,
    /// `external_port`: where external (non-member) clients connect. Default 32645.
    pub external_port: u16,
    /// `heartbeat_ms`: period of the failure detector. Default **100** (the original uses 1 ms,
    /// which busy-loops a core per process; on a loaded 2-core laptop 100 ms avoids false
    /// suspicions while still detecting failures well within a second).
    pub heartbeat_ms: u32,
    /// `sst_poll_cq_timeout_ms`: how long a write may wait for its completion before the peer is
    /// suspected. Default **2000** (the original's code default; its sample file uses 100, too
    /// short for a loaded laptop).
    pub sst_poll_cq_timeout_ms: u32,
    /// `p2p_loop_busy_wait_before_sleep_ms`: how long the P2P listener polls before it parks.
    /// Default 250.
    pub p2p_loop_busy_wait_before_sleep_ms: u32,
    /// `restart_timeout_ms`: how long the restart leader (the contact node), once a quorum of
    /// the last view is back, waits for the rest of it before it restarts without them.
    /// Default 2000.
    pub restart_timeout_ms: u32,
    /// `enable_backup_restart_leaders`: a node restarting from its logs looks for a restart
    /// leader among `restart_leaders` in order and joins the first that leads a running or
    /// forming group; if none does, the leader at rank `k` of the list takes over after `k`
    /// periods of `restart_timeout_ms`. Off (the default), the contact node leads a total
    /// restart and the restart waits for it. Needs a `restart_leaders` list (a warning says so
    /// otherwise).
    pub enable_backup_restart_leaders: bool,
    /// `disable_partitioning_safety`: let a minority partition continue. Default **false**
    /// (partition safety on; the original's code default is true, i.e. unsafe).
    pub disable_partitioning_safety: bool,
    /// `max_node_id`: node ids are below this; sizes the P2P connection table. Default 1024.
    pub max_node_id: u32,
    /// `max_p2p_request_payload_size`: largest `p2p_send` argument, bytes. Default 10240.
    pub max_p2p_request_payload_size: u64,
    /// `max_p2p_reply_payload_size`: largest P2P reply, bytes; at least 128. Default 10240.
    pub max_p2p_reply_payload_size: u64,
    /// `p2p_window_size`: outstanding P2P requests per peer; at least 1. Default 16.
    pub p2p_window_size: u32,
    /// `launcher` (ours, not in the original): `none|mpi|slurm`. With `mpi` or `slurm` the
    /// node id, the ports and (for Slurm) the contact come from the launcher's environment
    /// when the configuration is loaded: `local_id` becomes the rank, every port of this node
    /// (`gms_port`, `sst_port`, `rdmc_port`, `state_transfer_port`, `external_port`) is
    /// offset by the rank on this host, so that several ranks can share one host, and Slurm's
    /// first host becomes `contact_ip`. Default `none`.
    pub launcher: Launcher,
    /// `join_timeout_ms` (ours, not in the original): how long a joining node waits for a view that admits it (the first view forms only once enough nodes have joined). Default 600000.
    pub join_timeout_ms: u32,
    /// `join_ack_timeout_ms` (ours, not in the original): how long a leader waits for each joiner to acknowledge a prepared view before leaving it out. Default 10000.
    pub join_ack_timeout_ms: u32,
    /// `gms_handshake_timeout_ms` (ours, not in the original): bound on reading the first message of a connection to the GMS port. Default 5000.
    pub gms_handshake_timeout_ms: u32,
    /// `first_view_setup_timeout_ms` (ours, not in the original): how long setting up the first view may wait for its members to connect (processes start at once, some slowly). Default 30000.
    pub first_view_setup_timeout_ms: u32,
    /// `view_change_setup_timeout_ms` (ours, not in the original): how long setting up a later view waits for a member that has not connected before starting with its row frozen (the view's change protocol then removes it). Default 10000.
    pub view_change_setup_timeout_ms: u32,
    /// `state_transfer_timeout_ms` (ours, not in the original): how long a view change waits for the replica state it transfers to newcomers. Default 120000.
    pub state_transfer_timeout_ms: u32,
    /// `resend_timeout_ms` (ours, not in the original): how long a message trimmed from an ended view may wait for window space in the next view before it waits for the view after. Default 30000.
    pub resend_timeout_ms: u32,
    /// `report_failure_timeout_ms` (ours, not in the original): how long `report_failure` waits for a view to report in. Default 30000.
    pub report_failure_timeout_ms: u32,
    /// `leave_timeout_ms` (ours, not in the original): how long shutting a member down (or dropping it) waits for its graceful leave to reach the others. Default 2000.
    pub leave_timeout_ms: u32,
}

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

impl Default for DerechoSection {
    fn default() -> Self {
        DerechoSection {
            contact_ip: LOCALHOST,
            contact_port: 23580,
            restart_leaders: vec![LOCALHOST],
            restart_leader_ports: vec![23580],
            local_id: 0,
            local_ip: LOCALHOST,
            gms_port: 23580,
            state_transfer_port: 28366,
            sst_port: 37683,
            rdmc_port: 31675,
            external_port: 32645,
            heartbeat_ms: 100,
            sst_poll_cq_timeout_ms: 2000,
            p2p_loop_busy_wait_before_sleep_ms: 250,
            restart_timeout_ms: 2000,
            enable_backup_restart_leaders: false,
            disable_partitioning_safety: false,
            max_node_id: 1024,
            max_p2p_request_payload_size: 10240,
            max_p2p_reply_payload_size: 10240,
            p2p_window_size: 16,
            launcher: Launcher::None,
            join_timeout_ms: 600000,
            join_ack_timeout_ms: 10000,
            gms_handshake_timeout_ms: 5000,
            first_view_setup_timeout_ms: 30000,
            view_change_setup_timeout_ms: 10000,
            state_transfer_timeout_ms: 120000,
            resend_timeout_ms: 30000,
            report_failure_timeout_ms: 30000,
            leave_timeout_ms: 2000,
        }
    }
}

impl DerechoSection {
    /// `join_timeout_ms`, `join_ack_timeout_ms` and `gms_handshake_timeout_ms` as the GMS
    /// bounds.
    pub fn gms_timeouts(&self) -> crate::gms::GmsTimeouts {
        crate::gms::GmsTimeouts {
            join: ms(self.join_timeout_ms),
            ack: ms(self.join_ack_timeout_ms),
            handshake: ms(self.gms_handshake_timeout_ms),
            restart_grace: ms(self.restart_timeout_ms),
        }
    }
}

/// A duration of `n` milliseconds.
pub(crate) fn ms(n: u32) -> std::time::Duration {
    std::time::Duration::from_millis(u64::from(n))
}

impl Section for DerechoSection {
    const NAME: &'static str = "DERECHO";
    const KEYS: &'static [&'static str] = &[
        "contact_ip",
        "contact_port",
        "restart_leaders",
        "restart_leader_ports",
        "local_id",
        "local_ip",
        "gms_port",
        "state_transfer_port",
        "sst_port",
        "rdmc_port",
        "external_port",
        "heartbeat_ms",
        "sst_poll_cq_timeout_ms",
        "p2p_loop_busy_wait_before_sleep_ms",
        "restart_timeout_ms",
        "enable_backup_restart_leaders",
        "disable_partitioning_safety",
        "max_node_id",
        "max_p2p_request_payload_size",
        "max_p2p_reply_payload_size",
        "p2p_window_size",
        "launcher",
        "join_timeout_ms",
        "join_ack_timeout_ms",
        "gms_handshake_timeout_ms",
        "first_view_setup_timeout_ms",
        "view_change_setup_timeout_ms",
        "state_transfer_timeout_ms",
        "resend_timeout_ms",
        "report_failure_timeout_ms",
        "leave_timeout_ms",
    ];

    fn set(&mut self, name: &str, v: &str) -> Result<(), Problem> {
        match name {
            "contact_ip" => self.contact_ip = parse_ip(v)?,
            "contact_port" => self.contact_port = parse_port(v)?,
            "restart_leaders" => self.restart_leaders = parse_list(v, parse_ip)?,
            "restart_leader_ports" => self.restart_leader_ports = parse_list(v, parse_port)?,
            "local_id" => self.local_id = parse_u32(v)?,
            "local_ip" => self.local_ip = parse_ip(v)?,
            "gms_port" => self.gms_port = parse_port(v)?,
            "state_transfer_port" => self.state_transfer_port = parse_port(v)?,
            "sst_port" => self.sst_port = parse_port(v)?,
            "rdmc_port" => self.rdmc_port = parse_port(v)?,
            "external_port" => self.external_port = parse_port(v)?,
            "heartbeat_ms" => self.heartbeat_ms = parse_u32(v)?,
            "sst_poll_cq_timeout_ms" => self.sst_poll_cq_timeout_ms = parse_u32(v)?,
            "p2p_loop_busy_wait_before_sleep_ms" => {
                self.p2p_loop_busy_wait_before_sleep_ms = parse_u32(v)?;
            }
            "restart_timeout_ms" => self.restart_timeout_ms = parse_u32(v)?,
            "enable_backup_restart_leaders" => {
                self.enable_backup_restart_leaders = parse_bool(v)?;
            }
            "disable_partitioning_safety" => self.disable_partitioning_safety = parse_bool(v)?,
            "max_node_id" => self.max_node_id = parse_u32(v)?,
            "max_p2p_request_payload_size" => self.max_p2p_request_payload_size = parse_u64(v)?,
            "max_p2p_reply_payload_size" => {
                let n = parse_u64(v)?;
                if n < MIN_REPLY_PAYLOAD_SIZE {
                    return Err(Problem::OutOfRange(format!(
                        "P2P replies need at least {MIN_REPLY_PAYLOAD_SIZE} bytes"
                    )));
                }
                self.max_p2p_reply_payload_size = n;
            }
            "p2p_window_size" => self.p2p_window_size = nonzero_u32(v, "the P2P window")?,
            "launcher" => self.launcher = parse_enum(v)?,
            "join_timeout_ms" => self.join_timeout_ms = nonzero_u32(v, "join_timeout_ms")?,
            "join_ack_timeout_ms" => {
                self.join_ack_timeout_ms = nonzero_u32(v, "join_ack_timeout_ms")?
            }
            "gms_handshake_timeout_ms" => {
                self.gms_handshake_timeout_ms = nonzero_u32(v, "gms_handshake_timeout_ms")?
            }
            "first_view_setup_timeout_ms" => {
                self.first_view_setup_timeout_ms = nonzero_u32(v, "first_view_setup_timeout_ms")?
            }
            "view_change_setup_timeout_ms" => {
                self.view_change_setup_timeout_ms = nonzero_u32(v, "view_change_setup_timeout_ms")?
            }
            "state_transfer_timeout_ms" => {
                self.state_transfer_timeout_ms = nonzero_u32(v, "state_transfer_timeout_ms")?
            }
            "resend_timeout_ms" => self.resend_timeout_ms = nonzero_u32(v, "resend_timeout_ms")?,
            "report_failure_timeout_ms" => {
                self.report_failure_timeout_ms = nonzero_u32(v, "report_failure_timeout_ms")?
            }
            "leave_timeout_ms" => self.leave_timeout_ms = nonzero_u32(v, "leave_timeout_ms")?,

            other => return Err(unknown(other)),
        }
        Ok(())
    }

    fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("contact_ip", self.contact_ip.to_string()),
            ("contact_port", self.contact_port.to_string()),
            ("restart_leaders", join_list(&self.restart_leaders)),
            (
                "restart_leader_ports",
                join_list(&self.restart_leader_ports),
            ),
            ("local_id", self.local_id.to_string()),
            ("local_ip", self.local_ip.to_string()),
            ("gms_port", self.gms_port.to_string()),
            ("state_transfer_port", self.state_transfer_port.to_string()),
            ("sst_port", self.sst_port.to_string()),
            ("rdmc_port", self.rdmc_port.to_string()),
            ("external_port", self.external_port.to_string()),
            ("heartbeat_ms", self.heartbeat_ms.to_string()),
            (
                "sst_poll_cq_timeout_ms",
                self.sst_poll_cq_timeout_ms.to_string(),
            ),
            (
                "p2p_loop_busy_wait_before_sleep_ms",
                self.p2p_loop_busy_wait_before_sleep_ms.to_string(),
            ),
            ("restart_timeout_ms", self.restart_timeout_ms.to_string()),
            (
                "enable_backup_restart_leaders",
                self.enable_backup_restart_leaders.to_string(),
            ),
            (
                "disable_partitioning_safety",
                self.disable_partitioning_safety.to_string(),
            ),
            ("max_node_id", self.max_node_id.to_string()),
            (
                "max_p2p_request_payload_size",
                self.max_p2p_request_payload_size.to_string(),
            ),
            (
                "max_p2p_reply_payload_size",
                self.max_p2p_reply_payload_size.to_string(),
            ),
            ("p2p_window_size", self.p2p_window_size.to_string()),
            ("launcher", self.launcher.to_string()),
            ("join_timeout_ms", self.join_timeout_ms.to_string()),
            ("join_ack_timeout_ms", self.join_ack_timeout_ms.to_string()),
            (
                "gms_handshake_timeout_ms",
                self.gms_handshake_timeout_ms.to_string(),
            ),
            (
                "first_view_setup_timeout_ms",
                self.first_view_setup_timeout_ms.to_string(),
            ),
            (
                "view_change_setup_timeout_ms",
                self.view_change_setup_timeout_ms.to_string(),
            ),
            (
                "state_transfer_timeout_ms",
                self.state_transfer_timeout_ms.to_string(),
            ),
            ("resend_timeout_ms", self.resend_timeout_ms.to_string()),
            (
                "report_failure_timeout_ms",
                self.report_failure_timeout_ms.to_string(),
            ),
            ("leave_timeout_ms", self.leave_timeout_ms.to_string()),
        ]
    }
}
