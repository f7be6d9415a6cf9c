//! This member's credentials, applied to every TCP connection it opens or accepts (see
//! [`derecho_fabric::secure`]).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use derecho_fabric::secure::{self, AuthError, Credentials, Peer, Role, Stream};

use crate::NodeId;

/// Who this process is and what it holds, with the bound on each handshake.
#[derive(Clone, Debug)]
pub(crate) struct Auth {
    creds: Arc<Credentials>,
    me: NodeId,
    handshake: Duration,
}

impl Auth {
    /// `me` holding `creds`; each handshake may take up to `handshake`.
    pub(crate) fn new(creds: Credentials, me: NodeId, handshake: Duration) -> Self {
        Auth {
            creds: Arc::new(creds),
            me,
            handshake,
        }
    }

    /// No authentication, for the unit tests of the modules that take an [`Auth`].
    #[cfg(test)]
    pub(crate) fn open(me: NodeId) -> Self {
        Auth::new(Credentials::Open, me, Duration::from_secs(5))
    }

    /// The member credentials `config` names, for its `local_id`, with its GMS handshake
    /// bound.
    pub(crate) fn of_member(config: &crate::Config) -> Result<Self, secure::SecretError> {
        let d = &config.derecho;
        Ok(Auth::new(
            config.credentials()?,
            d.local_id,
            crate::config::ms(d.gms_handshake_timeout_ms),
        ))
    }

    /// The credentials.
    pub(crate) fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// This process's node id.
    pub(crate) fn me(&self) -> NodeId {
        self.me
    }

    /// Whether connections are authenticated.
    pub(crate) fn is_secure(&self) -> bool {
        self.creds.is_secure()
    }

    /// Connects to `addr` within `timeout` and authenticates the connection for `role`,
    /// expecting node `expect` if given. A refused handshake is an I/O error of kind
    /// `PermissionDenied` carrying the [`AuthError`].
    pub(crate) fn dial(
        &self,
        addr: &SocketAddr,
        timeout: Duration,
        role: Role,
        expect: Option<NodeId>,
    ) -> io::Result<Stream> {
        let tcp = TcpStream::connect_timeout(addr, timeout)?;
        secure::connect(
            tcp,
            &self.creds,
            role,
            self.me,
            expect,
            timeout.min(self.handshake),
        )
        .map(|(s, _)| s)
        .map_err(into_io)
    }

    /// Authenticates a connection this side dialed (see [`Auth::dial`]).
    pub(crate) fn wrap_dialed(
        &self,
        tcp: TcpStream,
        role: Role,
        expect: Option<NodeId>,
    ) -> io::Result<Stream> {
        secure::connect(tcp, &self.creds, role, self.me, expect, self.handshake)
            .map(|(s, _)| s)
            .map_err(into_io)
    }

    /// Authenticates a connection accepted on a port that serves several `roles`.
    pub(crate) fn accept_any(
        &self,
        tcp: TcpStream,
        roles: &[Role],
    ) -> Result<(Stream, Option<Peer>), AuthError> {
        secure::accept_any(tcp, &self.creds, roles, self.me, self.handshake)
    }

    /// Authenticates a connection accepted on this member's `role` port.
    pub(crate) fn accept(
        &self,
        tcp: TcpStream,
        role: Role,
    ) -> Result<(Stream, Option<Peer>), AuthError> {
        secure::accept(tcp, &self.creds, role, self.me, self.handshake)
    }
}

/// An [`AuthError`] as an I/O error, so that callers report it through their usual paths:
/// `PermissionDenied` for a refusal that asking again cannot change (another secret, another
/// protocol, another node: [`AuthError::Refused`] and the local checks), `ConnectionAborted`
/// for a peer that closed the connection during the handshake without a word (it may be busy:
/// worth asking again), the socket's own error otherwise.
pub(crate) fn into_io(e: AuthError) -> io::Error {
    match e {
        AuthError::Io(e) => e,
        AuthError::Closed => io::Error::new(io::ErrorKind::ConnectionAborted, AuthError::Closed),
        other => io::Error::new(io::ErrorKind::PermissionDenied, other),
    }
}

/// Checks that a peer claims, in its protocol messages, the id it authenticated with. In the
/// open mode (`peer` is `None`) there is nothing to check.
pub(crate) fn claims_match(peer: Option<Peer>, claimed: NodeId) -> Result<(), String> {
    match peer {
        Some(p) if p.id != claimed => Err(format!(
            "the peer authenticated as node {} but claims to be node {claimed}",
            p.id
        )),
        _ => Ok(()),
    }
}
