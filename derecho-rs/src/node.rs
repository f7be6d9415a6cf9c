//! A group member process: configuration in, a running member out.
//!
//! [`GroupNode::start`] starts the fabric on `local_ip:sst_port`, listens on `gms_port`, forms
//! or joins the first view (the node whose `local_ip:gms_port` is the contact starts the
//! group), builds the view's multicast, and from then on delivers every message of its shards
//! to the delivery callback. Applications send raw messages with [`GroupNode::send`].

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use derecho_fabric::tcp::{TcpConfig, TcpFabric};
use derecho_fabric::{Fabric, FabricError};
use derecho_sst::SstConfig;

use crate::config::{Config, FabricBackend};
use crate::gms::first_view::{self, GmsTimeouts, LayoutFn};
use crate::gms::{GmsError, GmsService, MemberInfo, View};
use crate::layout::{allocate, Assignment, LayoutError, LayoutPolicy};
use crate::multicast::{
    DeliveryHandler, MulticastConfig, MulticastError, MulticastGroup, ShardSpec, Sizes,
    SubgroupSpec,
};
use crate::NodeId;

/// Errors of starting or running a member.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The configuration asks for something this build cannot do.
    #[error("configuration: {0}")]
    Config(String),
    /// The fabric could not start.
    #[error("fabric: {0}")]
    Fabric(#[from] FabricError),
    /// Membership failed.
    #[error("membership: {0}")]
    Gms(#[from] GmsError),
    /// Multicast failed.
    #[error("multicast: {0}")]
    Multicast(#[from] MulticastError),
}

/// A running member of a group.
pub struct GroupNode {
    fabric: Arc<dyn Fabric>,
    view: View,
    multicast: MulticastGroup,
    gms: GmsService,
}

impl std::fmt::Debug for GroupNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupNode")
            .field("id", &self.fabric.local_id())
            .field("vid", &self.view.vid)
            .finish_non_exhaustive()
    }
}

impl GroupNode {
    /// Starts a member from `config`; `layout` divides a member list into subgroups (or says
    /// why it does not suffice yet), `deliver` receives every delivered message.
    pub fn start(
        config: &Config,
        layout: LayoutFn,
        deliver: DeliveryHandler,
    ) -> Result<Self, GroupError> {
        let d = &config.derecho;
        if config.rdma.backend != FabricBackend::Tcp {
            return Err(GroupError::Config(format!(
                "[RDMA] backend = {} is not available in this build; use backend = tcp",
                config.rdma.backend
            )));
        }
        let me = MemberInfo {
            id: d.local_id,
            ip: d.local_ip,
            gms_port: d.gms_port,
            fabric_port: d.sst_port,
            state_transfer_port: d.state_transfer_port,
            external_port: d.external_port,
        };
        let fabric: Arc<dyn Fabric> = Arc::new(TcpFabric::start(TcpConfig::new(
            d.local_id,
            SocketAddr::new(d.local_ip, d.sst_port),
        ))?);
        let listener = TcpListener::bind(SocketAddr::new(d.local_ip, d.gms_port)).map_err(|e| {
            GmsError::io(
                format!("binding the GMS port {}:{}", d.local_ip, d.gms_port),
                e,
            )
        })?;
        let timeouts = GmsTimeouts::default();
        let stop = AtomicBool::new(false);
        let leads = d.local_ip == d.contact_ip && d.gms_port == d.contact_port;
        let view = if leads {
            tracing::info!(id = d.local_id, "starting a new group as its first leader");
            first_view::lead(&listener, me.clone(), &layout, &timeouts, &stop)?.view
        } else {
            let contact = SocketAddr::new(d.contact_ip, d.contact_port);
            tracing::info!(id = d.local_id, %contact, "joining a group");
            first_view::join(contact, &me, &timeouts, &stop)?
        };
        tracing::info!(vid = view.vid, members = ?view.ids(), "view installed");
        let gms = GmsService::start(listener, d.local_id, view.clone(), timeouts.handshake)?;
        let spec = view.multicast_spec(d.local_id).ok_or_else(|| {
            GroupError::Config("the committed view does not contain this node".into())
        })?;
        let mc_config = MulticastConfig {
            setup_timeout: Duration::from_secs(30),
            sst: SstConfig::default()
                .with_heartbeat_ms(u64::from(d.heartbeat_ms))
                .with_poll_cq_timeout_ms(u64::from(d.sst_poll_cq_timeout_ms)),
        };
        let multicast = MulticastGroup::new(Arc::clone(&fabric), spec, mc_config, deliver)?;
        Ok(Self {
            fabric,
            view,
            multicast,
            gms,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.fabric.local_id()
    }

    /// The installed view.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// This node's multicast in the installed view.
    pub fn multicast(&self) -> &MulticastGroup {
        &self.multicast
    }

    /// Sends `payload` in `subgroup` (this node must be one of its senders), waiting up to
    /// `timeout` for window space. Returns the message's index.
    pub fn send(
        &self,
        subgroup: usize,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<i64, GroupError> {
        Ok(self.multicast.send(subgroup, payload, timeout)?)
    }

    /// Stops this member: its threads end and its links close (the others see it leave as a
    /// failure until graceful leave exists).
    pub fn shutdown(mut self) {
        self.multicast.stop();
        self.gms.stop();
        self.fabric.shutdown();
    }
}

/// A [`LayoutFn`] that allocates `policy` over a member list and takes each shard's message
/// sizes from the configuration profile the shard names.
pub fn layout_from_policy(policy: LayoutPolicy, config: &Config) -> Result<LayoutFn, LayoutError> {
    policy.check_profiles(config)?;
    let profiles: std::collections::BTreeMap<String, Sizes> = config
        .subgroups
        .iter()
        .map(|(name, p)| (name.clone(), Sizes::from_profile(p)))
        .collect();
    Ok(Arc::new(move |ids: &[NodeId]| {
        let assignment = allocate(&policy, ids, None).map_err(|e| e.to_string())?;
        specs_of(&assignment, &profiles)
    }))
}

/// The multicast description of an assignment.
pub fn specs_of(
    assignment: &Assignment,
    profiles: &std::collections::BTreeMap<String, Sizes>,
) -> Result<Vec<SubgroupSpec>, String> {
    assignment
        .subgroups()
        .map(|(_, shards)| {
            let shards = shards
                .iter()
                .map(|s| {
                    let sizes = profiles
                        .get(s.profile())
                        .or_else(|| profiles.get("DEFAULT"))
                        .cloned()
                        .ok_or_else(|| format!("no profile {} and no DEFAULT", s.profile()))?;
                    Ok(ShardSpec {
                        members: s.members().to_vec(),
                        senders: s.senders().collect(),
                        mode: s.mode(),
                        sizes,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(SubgroupSpec { shards })
        })
        .collect()
}
