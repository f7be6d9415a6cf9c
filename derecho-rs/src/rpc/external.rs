//! A process outside the group that calls its members.
//!
//! [`ExternalClient::connect`] asks any member's P2P port (`external_port`) for the current
//! view and the group's types, and then sends queries ([`ExternalClient::p2p_send`]) and
//! relayed updates ([`ExternalClient::ordered_send_via`]) to members. When a member it talks to
//! fails or leaves, pending calls to it fail; [`ExternalClient::refresh`] (called
//! automatically after such a failure) asks the remaining members for the new view, so the
//! next call goes to a member that exists.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use super::p2p::{Limits, PeerConn, Peers};
use super::wire::Kind;
use super::{
    answer, call, lock, relayed, target, CallError, GroupInfo, LookupError, RemoteError,
    Replicated, ReplyError,
};
use crate::auth::Auth;
use crate::NodeId;
use derecho_fabric::secure::{Credentials, Role};

/// A client of a group it is not a member of.
#[derive(Debug)]
pub struct ExternalClient {
    info: Mutex<GroupInfo>,
    contact: SocketAddr,
    peers: Peers,
    auth: Auth,
    timeout: Duration,
}

/// Stands for "an unknown member" on the first connection.
const CONTACT: NodeId = NodeId::MAX;

impl ExternalClient {
    /// Connects through the member whose P2P port is `contact`; `limits` bound what this client
    /// sends and waits for (use the group's `max_p2p_*` settings). For a group in the open
    /// security mode; see [`ExternalClient::connect_with`] for a secure one.
    pub fn connect(
        contact: SocketAddr,
        limits: Limits,
        timeout: Duration,
    ) -> Result<Self, CallError> {
        Self::connect_with(contact, limits, timeout, Credentials::Open)
    }

    /// [`ExternalClient::connect`] with `credentials` (from
    /// [`crate::Config::client_credentials`]): a client certificate for a group in
    /// `[SECURITY] mode = certificate`, the client secret in `mode = secret`. A client's
    /// credentials open the external port only, never a member port.
    pub fn connect_with(
        contact: SocketAddr,
        limits: Limits,
        timeout: Duration,
        credentials: Credentials,
    ) -> Result<Self, CallError> {
        let auth = Auth::new(credentials, CONTACT, timeout);
        let info = fetch_info(contact, limits, timeout, &auth)?;
        Ok(Self {
            info: Mutex::new(info),
            contact,
            peers: Peers::new(limits, auth.clone(), Role::External),
            auth,
            timeout,
        })
    }

    /// The view and types as last fetched.
    pub fn info(&self) -> GroupInfo {
        lock(&self.info).clone()
    }

    /// The flat id of subgroup `index` of type `name`.
    pub fn subgroup_id(&self, name: &str, index: usize) -> Result<usize, LookupError> {
        lock(&self.info).subgroup_id(name, index)
    }

    /// The members of each shard of `subgroup`, as last fetched.
    pub fn shard_members(&self, subgroup: usize) -> Vec<Vec<NodeId>> {
        lock(&self.info)
            .view
            .subgroups
            .get(subgroup)
            .map(|s| s.shards.iter().map(|x| x.members.clone()).collect())
            .unwrap_or_default()
    }

    /// Fetches the current view from any member of the last known view (or the contact).
    pub fn refresh(&self) -> Result<(), CallError> {
        let mut candidates: Vec<SocketAddr> = lock(&self.info)
            .view
            .members
            .iter()
            .map(|m| SocketAddr::new(m.ip, m.external_port))
            .collect();
        candidates.push(self.contact);
        let mut last = None;
        for addr in candidates {
            match fetch_info(addr, self.peers.limits(), self.timeout, &self.auth) {
                Ok(info) => {
                    let v = info.view.clone();
                    *lock(&self.info) = info;
                    self.peers.retain(
                        |n| v.rank_of(n).is_some(),
                        |n| CallError::Removed { node: n },
                    );
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(CallError::NoMember))
    }

    fn request(
        &self,
        node: NodeId,
        kind: Kind,
        subgroup: usize,
        body: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        let addr = {
            let info = lock(&self.info);
            target(&info.view, subgroup, node)?
        };
        let r = call(&self.peers, node, addr, kind, subgroup, body, self.timeout);
        let moved = matches!(
            &r,
            Err(CallError::PeerFailed { .. }
                | CallError::Removed { .. }
                | CallError::Remote {
                    error: RemoteError::NoReplica { .. } | RemoteError::ShuttingDown,
                    ..
                })
        );
        if moved {
            // The member is gone or going: learn the new view for the next call.
            if let Err(e) = self.refresh() {
                tracing::warn!(error = %e, "could not refresh the view");
            }
        }
        r
    }

    /// Asks `node`, a member of `subgroup` (of type `T`), to run `query`.
    pub fn p2p_send<T: Replicated>(
        &self,
        subgroup: usize,
        node: NodeId,
        query: &T::Query,
    ) -> Result<T::Reply, CallError> {
        let body = super::wire::encode(query).map_err(CallError::Encode)?;
        let r = self.request(node, Kind::Query, subgroup, &body)?;
        answer(node, &r)
    }

    /// Asks `node`, a member of `subgroup` (of type `T`), to send `update` in its shard, and
    /// returns every member's reply.
    pub fn ordered_send_via<T: Replicated>(
        &self,
        subgroup: usize,
        node: NodeId,
        update: &T::Update,
    ) -> Result<BTreeMap<NodeId, Result<T::Reply, ReplyError>>, CallError> {
        let body = super::wire::encode(update).map_err(CallError::Encode)?;
        let r = self.request(node, Kind::Relay, subgroup, &body)?;
        relayed::<T::Reply>(node, &r)
    }
}

fn fetch_info(
    addr: SocketAddr,
    limits: Limits,
    timeout: Duration,
    auth: &Auth,
) -> Result<GroupInfo, CallError> {
    let conn = PeerConn::connect(CONTACT, addr, limits, timeout, auth, Role::External)?;
    let r = conn.call(Kind::GetView, &[], timeout)?;
    conn.fail(CallError::ShutDown);
    let bytes = r.map_err(|error| CallError::Remote {
        node: CONTACT,
        error,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| CallError::MalformedView {
        addr,
        source: std::sync::Arc::new(e),
    })
}
