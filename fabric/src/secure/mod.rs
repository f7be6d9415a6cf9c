//! Authenticated, encrypted TCP connections for a group that holds credentials.
//!
//! Every TCP connection a member opens or accepts (GMS and joins, state transfer, the fabric's
//! side channel, P2P, the restart leader, external clients) goes through [`connect`] or
//! [`accept`] before either side reads a protocol message. With [`Credentials::Open`] they
//! return the socket as it is. The two secure modes:
//!
//! * **Certificates** ([`Credentials::Certificate`], see [`pki`]): mutual TLS 1.3 (rustls with
//!   ring) under the group's CA. A member's certificate names its node id, a client's names the
//!   client; the listener admits only certificates the CA issued (and clients on the external
//!   port only), the dialer only members. A peer is exactly the node its certificate names.
//! * **A shared secret** ([`Credentials::Member`], [`Credentials::Client`]): a Noise handshake
//!   (`Noise_NNpsk0_25519_AESGCM_SHA256`, from the `snow` crate) keyed by the secret of the
//!   connection's [`Role`].
//!
//! What the handshakes prove:
//!
//! * **Possession**: the peer holds a key the group issued (a certificate's key, or the
//!   pre-shared secret). A stranger's connection is refused before its first protocol byte is
//!   read: the listener reads protocol bytes only after a frame that only a holder could seal.
//! * **Freshness**: each side contributes new ephemeral keys, so a recorded handshake cannot
//!   be replayed.
//! * **Role binding**: the role is part of the Noise prologue and of the TLS exporter context,
//!   so a handshake made for one port fails on another (no cross-port reuse).
//! * **Identities**: [`Peer::id`] is the peer's node id, authenticated; callers compare it with
//!   the ids their protocol messages claim. With certificates that id is the one the CA bound
//!   into the certificate. With a secret every holder can claim any member id: the secret
//!   admits *the group's machines*, not one node.
//! * **Client separation**: external clients hold their own credentials (a client certificate,
//!   or a second secret), accepted on the external port only.
//!
//! After the handshake, frames are a `u32` big-endian length + AES-256-GCM ciphertext and tag
//! (up to 256 KiB of plaintext) with a per-direction counter nonce, so injected, replayed,
//! reordered or altered bytes fail authentication and end the connection. The keys are the
//! handshake's own: the Noise split in the secret mode, 64 bytes of the TLS session's exporter
//! in the certificate mode (the TLS records themselves carry only the handshake).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::NodeId;

pub mod pki;
mod tls;

pub use pki::{CertError, GroupCa, Identity, Issued, TlsCredentials, MAX_DAYS};

/// Length of a group or client secret, in bytes.
pub const SECRET_LEN: usize = 32;

/// The Noise pattern: no static keys, a pre-shared key mixed in first, AES-GCM and SHA-256.
const PATTERN: &str = "Noise_NNpsk0_25519_AESGCM_SHA256";
/// Sent in clear before the first handshake message, so that a peer that speaks the open
/// protocol (or something else entirely) gets a clear refusal instead of a decryption failure.
const MAGIC: &[u8; 6] = b"DRSEC1";
/// AES-GCM tag length.
const TAG_LEN: usize = 16;
/// Bytes of a sealed frame's length prefix (`u32`, big-endian).
const HEAD: usize = 4;
/// Largest plaintext carried by one sealed frame: large writes cost few system calls.
const MAX_PLAIN: usize = 256 * 1024;
/// Largest body (ciphertext and tag) of a sealed frame.
const MAX_BODY: usize = MAX_PLAIN + TAG_LEN;
/// Writes at least this long are encrypted in place and sent by vectored writes; shorter ones
/// are copied and sent in one piece.
const IN_PLACE_MIN: usize = 16 * 1024;
/// The first handshake message: an ephemeral key, then 8 bytes of ids and their tag.
const MSG1_LEN: usize = 32 + 8 + TAG_LEN;
/// The second: an ephemeral key, then the responder's 4-byte id and its tag.
const MSG2_LEN: usize = 32 + 4 + TAG_LEN;
/// The dialer's confirmation frame: both ids and the tag.
const CONFIRM_LEN: usize = 8 + TAG_LEN;
/// Bound on one handshake write (a few dozen bytes into an empty socket buffer).
const HANDSHAKE_WRITE_BOUND: Duration = Duration::from_secs(5);
/// Room for any handshake message.
const HANDSHAKE_BUF: usize = 128;
/// Node id a dialer sends when it does not know whom it reaches.
const UNKNOWN_PEER: u32 = u32::MAX;

/// A 32-byte group or client secret. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_LEN]);

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read the secret file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Other users may read the file.
    #[error(
        "the secret file {path} can be read by other users (mode {mode:o}); \
         `chmod 600` it"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The contents are not 64 hexadecimal digits.
    #[error("the secret file {path} must hold 64 hexadecimal digits (32 random bytes): {why}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// The configuration names no file for a secret this process needs.
    #[error("[SECURITY] {key} is not set, and this process needs it")]
    NotConfigured {
        /// The key.
        key: &'static str,
    },
    /// The client secret is the group secret: clients would open every member port.
    #[error(
        "the client secret equals the group secret, which would let every client open the \
         member ports: make a separate client_secret_file"
    )]
    Reused,
    /// The system's random source failed.
    #[error("cannot draw a random secret: {0}")]
    Random(String),
    /// The certificate mode's files could not be used.
    #[error(transparent)]
    Certificate(#[from] CertError),
    /// The certificate names another holder than this process.
    #[error(
        "[SECURITY] cert_file is issued to {holder}, but this process is {expected}: \
         give it its own certificate (`derecho-secret issue`)"
    )]
    NotMine {
        /// Whom the certificate names.
        holder: Identity,
        /// Who this process is.
        expected: String,
    },
}

impl Secret {
    /// A secret from its 32 bytes.
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Secret(bytes)
    }

    /// A new secret from the system's random source.
    pub fn generate() -> Result<Self, SecretError> {
        let mut b = [0u8; SECRET_LEN];
        getrandom::fill(&mut b).map_err(|e| SecretError::Random(e.to_string()))?;
        Ok(Secret(b))
    }

    /// The secret as 64 lowercase hexadecimal digits (the file format of [`Secret::load`]).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hexadecimal digits (surrounding whitespace allowed).
    pub fn from_hex(text: &str) -> Result<Self, &'static str> {
        let t = text.trim();
        if t.len() != 2 * SECRET_LEN {
            return Err("wrong length");
        }
        let mut b = [0u8; SECRET_LEN];
        if !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("not hexadecimal");
        }
        for (i, pair) in t.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| "not text")?;
            b[i] = u8::from_str_radix(hex, 16).map_err(|_| "not hexadecimal")?;
        }
        Ok(Secret(b))
    }

    /// Reads a secret file: 64 hexadecimal digits, readable by its owner only.
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let read = |source| SecretError::Read {
            path: path.to_owned(),
            source,
        };
        if let Some(mode) = exposed_mode(path).map_err(read)? {
            return Err(SecretError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Secret::from_hex(&text).map_err(|why| SecretError::Malformed {
            path: path.to_owned(),
            why,
        })
    }

    /// Writes the secret to a new file readable by its owner only (mode 0600).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path)?;
        writeln!(f, "{}", self.to_hex())?;
        f.sync_all()
    }
}

/// The permission bits of `path` if users other than its owner may read or write it (a secret
/// or key file must be private); `None` if it is private (or the platform has no such bits).
fn exposed_mode(path: &Path) -> io::Result<Option<u32>> {
    let meta = std::fs::metadata(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        Ok((mode & 0o077 != 0).then_some(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Ok(None)
    }
}

/// What a process holds to take part in authenticated connections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No authentication: every connection is accepted, bytes travel in clear.
    #[default]
    Open,
    /// A member: the group secret opens every member port; the client secret, if any, is the
    /// one external clients must hold (without it the external port refuses everyone).
    Member {
        /// The group secret.
        group: Secret,
        /// The external clients' secret.
        clients: Option<Secret>,
    },
    /// An external client: opens the external port only.
    Client {
        /// The external clients' secret.
        clients: Secret,
    },
    /// A holder of a certificate issued by the group's CA (see [`pki`]): a member's
    /// certificate opens every port, a client's the external one. Connections run mutual
    /// TLS 1.3.
    Certificate(Arc<TlsCredentials>),
}

impl Credentials {
    /// Whether connections are authenticated.
    pub fn is_secure(&self) -> bool {
        !matches!(self, Credentials::Open)
    }

    /// The `[SECURITY] mode` these credentials belong to.
    pub fn mode(&self) -> &'static str {
        match self {
            Credentials::Open => "open",
            Credentials::Member { .. } | Credentials::Client { .. } => "secret",
            Credentials::Certificate(_) => "certificate",
        }
    }

    /// The key for a connection of `role`, or why there is none.
    fn key_for(&self, role: Role) -> Result<Option<&Secret>, AuthError> {
        match (self, role) {
            (Credentials::Open | Credentials::Certificate(_), _) => Ok(None),
            (Credentials::Member { clients, .. }, Role::External) => {
                clients.as_ref().map(Some).ok_or(AuthError::NoClientSecret)
            }
            (Credentials::Member { group, .. }, _) => Ok(Some(group)),
            (Credentials::Client { clients }, Role::External) => Ok(Some(clients)),
            (Credentials::Client { .. }, role) => Err(AuthError::ClientOnly { role }),
        }
    }
}

/// What a connection is for; bound into its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// The GMS port: joins, probes, view installation.
    Gms = 1,
    /// The state-transfer port.
    StateTransfer = 2,
    /// A fabric side channel (and, on tcp, the data it carries).
    Fabric = 3,
    /// The P2P port between members.
    P2p = 4,
    /// The external-client port.
    External = 5,
}

impl Role {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Role::Gms,
            2 => Role::StateTransfer,
            3 => Role::Fabric,
            4 => Role::P2p,
            5 => Role::External,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Gms => "GMS",
            Role::StateTransfer => "state transfer",
            Role::Fabric => "fabric",
            Role::P2p => "P2P",
            Role::External => "external client",
        })
    }
}

/// Why an authenticated connection could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The socket failed or timed out during the handshake.
    #[error("handshake I/O: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection instead of answering the handshake.
    #[error(
        "the peer closed the connection during the handshake: it is busy, holds another \
         secret, or runs without [SECURITY] mode = secret (see its log)"
    )]
    Closed,
    /// The peer refused the handshake: it holds another secret, or is not the node or port
    /// this side asked for.
    #[error(
        "the peer refused the handshake: it holds another secret, or is not the node or port \
         this side asked for (see its log)"
    )]
    Refused,
    /// The peer does not speak the secure protocol.
    #[error(
        "the peer does not speak the authenticated protocol (is it configured with the \
         group's [SECURITY] mode?)"
    )]
    NotSecure,
    /// The peer authenticates in the other secure mode.
    #[error("the peer uses [SECURITY] mode = {theirs}, this side mode = {ours}")]
    OtherMode {
        /// This side's mode.
        ours: &'static str,
        /// The peer's mode.
        theirs: &'static str,
    },
    /// The peer ended the handshake with a refusal of this side's certificate.
    #[error("the peer refused this side: {0} (see its log)")]
    Rejected(String),
    /// The peer's certificate is not acceptable here: not issued by the group's CA, expired,
    /// or naming a holder that may not open this port.
    #[error("the peer's certificate is not acceptable: {0}")]
    Certificate(String),
    /// The peer dialed a port of another role.
    #[error("the peer asked for a {got} connection on the {expected} port")]
    WrongRole {
        /// The role the peer asked for.
        got: String,
        /// This port's role.
        expected: Role,
    },
    /// The handshake failed cryptographically: the peer does not hold the same secret, or
    /// the bytes were altered or replayed.
    #[error("authentication failed: the peer does not hold this group's secret ({0})")]
    Failed(String),
    /// The peer is not the node this side wanted to reach.
    #[error("expected node {expected}, reached node {got}")]
    WrongPeer {
        /// The node dialed.
        expected: NodeId,
        /// The node that answered.
        got: NodeId,
    },
    /// A member without a client secret was asked to accept an external client.
    #[error("no client secret is configured ([SECURITY] client_secret_file): external clients are refused")]
    NoClientSecret,
    /// An external client's credentials cannot open a member port.
    #[error("an external client's credentials do not open a {role} connection")]
    ClientOnly {
        /// The role asked for.
        role: Role,
    },
}

impl AuthError {
    fn failed(e: snow::Error) -> Self {
        AuthError::Failed(e.to_string())
    }
}

/// An authenticated peer: who it said it is, through the handshake, and for what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The node id the peer sent inside the authenticated handshake.
    pub id: NodeId,
    /// The role it authenticated for (on a port that serves several, which one).
    pub role: Role,
}

/// Authenticates a connection this side dialed, as node `local`, for `role`. `expect` names
/// the node the dialer wants to reach, if it knows; a different answer fails. Returns the
/// stream to use from now on and, in a secure mode, the peer's authenticated id.
pub fn connect(
    tcp: TcpStream,
    creds: &Credentials,
    role: Role,
    local: NodeId,
    expect: Option<NodeId>,
    deadline: Duration,
) -> Result<(Stream, Option<Peer>), AuthError> {
    if let Credentials::Certificate(tls) = creds {
        return tls::connect(tcp, tls, role, local, expect, deadline);
    }
    let Some(key) = creds.key_for(role)? else {
        return Ok((Stream::open(tcp), None));
    };
    let saved = Timeouts::set(&tcp)?;
    let by = Instant::now() + deadline;
    let mut hs = builder(key, role)?
        .build_initiator()
        .map_err(AuthError::failed)?;
    let mut tcp = tcp;
    let mut buf = [0u8; HANDSHAKE_BUF];
    let mut ids = [0u8; 8];
    ids[..4].copy_from_slice(&local.to_le_bytes());
    ids[4..].copy_from_slice(&expect.unwrap_or(UNKNOWN_PEER).to_le_bytes());
    let n = hs
        .write_message(&ids, &mut buf)
        .map_err(AuthError::failed)?;
    // The preamble and the first message leave in one segment.
    let mut first = Vec::with_capacity(10 + n);
    first.extend_from_slice(MAGIC);
    first.push(role as u8);
    first.push(0);
    first.extend_from_slice(&frame_len(n)?);
    first.extend_from_slice(&buf[..n]);
    tcp.write_all(&first)?;
    let closed = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => AuthError::Closed,
        _ => AuthError::Io(e),
    };
    let mut reply = [0u8; 2 + MSG2_LEN];
    read_by(&mut tcp, &mut reply[..2], by).map_err(closed)?;
    if reply[..2] == REFUSED {
        return Err(AuthError::Refused);
    }
    if usize::from(u16::from_be_bytes([reply[0], reply[1]])) != MSG2_LEN {
        return Err(AuthError::Failed("the answer has the wrong length".into()));
    }
    read_by(&mut tcp, &mut reply[2..], by).map_err(closed)?;
    let n = hs
        .read_message(&reply[2..], &mut buf)
        .map_err(AuthError::failed)?;
    let peer = id_at(&buf[..n], 0)?;
    if let Some(e) = expect.filter(|e| *e != peer) {
        return Err(AuthError::WrongPeer {
            expected: e,
            got: peer,
        });
    }
    if peer == local {
        // A dialer that reaches a node with its own id was reflected to itself.
        return Err(AuthError::WrongPeer {
            expected: expect.unwrap_or(UNKNOWN_PEER),
            got: peer,
        });
    }
    let (mine, theirs) = split_keys(&mut hs, true)?;
    let mut stream = Stream::sealed(tcp, (mine, 0), (theirs, 0));
    // The confirmation (this direction's frame 0): proves to the responder that this side
    // holds the key now.
    stream.write_all(&confirmation(local, peer))?;
    saved.restore(stream.tcp())?;
    Ok((stream, Some(Peer { id: peer, role })))
}

/// Authenticates a connection this side accepted on its `role` port, as node `local`.
/// Returns the stream and, in a secure mode, the dialer's authenticated id. Nothing the peer
/// sends after the handshake is readable unless the handshake succeeded. The whole handshake
/// is bounded by `deadline`, however slowly the peer sends.
pub fn accept(
    tcp: TcpStream,
    creds: &Credentials,
    role: Role,
    local: NodeId,
    deadline: Duration,
) -> Result<(Stream, Option<Peer>), AuthError> {
    accept_any(tcp, creds, &[role], local, deadline)
}

/// [`accept`] on a port that serves several roles (the P2P port serves members and external
/// clients): the dialer names its role, and the key of that role must open the handshake.
/// [`Peer::role`] tells which it was.
pub fn accept_any(
    tcp: TcpStream,
    creds: &Credentials,
    roles: &[Role],
    local: NodeId,
    deadline: Duration,
) -> Result<(Stream, Option<Peer>), AuthError> {
    let Some(&first_role) = roles.first() else {
        return Err(AuthError::Failed("no role to accept".into()));
    };
    if !creds.is_secure() {
        return Ok((Stream::open(tcp), None));
    }
    let saved = Timeouts::set(&tcp)?;
    let by = Instant::now() + deadline;
    let mut tcp = tcp;
    // The preamble, then the first message, whose size the pattern fixes.
    let mut first = [0u8; 10 + MSG1_LEN];
    read_by(&mut tcp, &mut first[..8], by)?;
    let theirs = match &first[..6] {
        m if m == MAGIC => "secret",
        m if tls::is_preamble(m) => "certificate",
        _ => return Err(AuthError::NotSecure),
    };
    if first[7] != 0 {
        return Err(AuthError::NotSecure);
    }
    let ours = creds.mode();
    if ours != theirs {
        tell_refused(&mut tcp);
        return Err(AuthError::OtherMode { ours, theirs });
    }
    let Some(role) = Role::from_u8(first[6]).filter(|r| roles.contains(r)) else {
        tell_refused(&mut tcp);
        return Err(AuthError::WrongRole {
            got: Role::from_u8(first[6])
                .map_or_else(|| format!("unknown ({})", first[6]), |r| r.to_string()),
            expected: first_role,
        });
    };
    if let Credentials::Certificate(tls) = creds {
        return tls::accept(tcp, saved, tls, role, local, by);
    }
    let Some(key) = creds.key_for(role)? else {
        return Err(AuthError::NotSecure);
    };
    read_by(&mut tcp, &mut first[8..], by)?;
    if usize::from(u16::from_be_bytes([first[8], first[9]])) != MSG1_LEN {
        return Err(AuthError::Failed(
            "the first message has the wrong length".into(),
        ));
    }
    let mut hs = builder(key, role)?
        .build_responder()
        .map_err(AuthError::failed)?;
    let mut buf = [0u8; HANDSHAKE_BUF];
    let n = match hs.read_message(&first[10..], &mut buf) {
        Ok(n) => n,
        Err(e) => {
            tell_refused(&mut tcp);
            return Err(AuthError::failed(e));
        }
    };
    let peer = id_at(&buf[..n], 0)?;
    let wanted = id_at(&buf[..n], 4)?;
    if wanted != UNKNOWN_PEER && wanted != local {
        tell_refused(&mut tcp);
        return Err(AuthError::WrongPeer {
            expected: wanted,
            got: local,
        });
    }
    if peer == local {
        tell_refused(&mut tcp);
        return Err(AuthError::Failed(format!(
            "the dialer claims this node's own id {local}"
        )));
    }
    let n = hs
        .write_message(&local.to_le_bytes(), &mut buf)
        .map_err(AuthError::failed)?;
    write_frame(&mut tcp, &buf[..n])?;
    let (mine, theirs) = split_keys(&mut hs, false)?;
    // The confirmation frame, read by the deadline like the rest and opened by hand; the
    // stream's own reader starts after it.
    let mut frame = [0u8; HEAD + CONFIRM_LEN];
    read_by(&mut tcp, &mut frame, by)?;
    let confirm = open_confirmation(&theirs, &mut frame);
    if confirm != Some(confirmation(peer, local)) {
        return Err(AuthError::Failed(
            "the confirmation frame did not authenticate".into(),
        ));
    }
    let stream = Stream::sealed(tcp, (mine, 0), (theirs, 1));
    saved.restore(stream.tcp())?;
    Ok((stream, Some(Peer { id: peer, role })))
}

/// Sent in clear, in place of the second handshake message, by a listener that refuses the
/// dialer's first one (another secret, role or node): a length no message can have. A dialer
/// that gets it stops asking; one whose connection is just closed (a busy listener) may ask
/// again. Anyone on the path could forge it, as they could cut the connection.
const REFUSED: [u8; 2] = [0xff, 0xff];

/// Tells the dialer, best effort, that its handshake was refused.
fn tell_refused(tcp: &mut TcpStream) {
    // The dialer may be gone; it is refused either way.
    let _ = tcp.write_all(&REFUSED);
}

/// Reads exactly `buf.len()` bytes before `by`, whatever the pace of the peer: each read
/// waits at most for what is left of the time.
fn read_by(tcp: &mut TcpStream, buf: &mut [u8], by: Instant) -> io::Result<()> {
    let mut have = 0;
    while have < buf.len() {
        let left = by.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the handshake did not complete in time",
            ));
        }
        tcp.set_read_timeout(Some(left))?;
        match tcp.read(&mut buf[have..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => have += n,
            // A read that waited out the time left comes back here and ends as `TimedOut`.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn builder(key: &Secret, role: Role) -> Result<snow::Builder<'_>, AuthError> {
    let params: snow::params::NoiseParams = PATTERN
        .parse()
        .map_err(|e: snow::Error| AuthError::Failed(e.to_string()))?;
    // The prologue binds the protocol version and the port's role into the handshake hash.
    let prologue: &'static [u8] = match role {
        Role::Gms => b"derecho-rs secure v1 gms",
        Role::StateTransfer => b"derecho-rs secure v1 state-transfer",
        Role::Fabric => b"derecho-rs secure v1 fabric",
        Role::P2p => b"derecho-rs secure v1 p2p",
        Role::External => b"derecho-rs secure v1 external",
    };
    let b = snow::Builder::new(params)
        .prologue(prologue)
        .map_err(AuthError::failed)?
        .psk(0, &key.0)
        .map_err(AuthError::failed)?;
    Ok(b)
}

/// The frame ciphers of a finished Noise handshake: this side's sending key and its peer's.
/// These are the keys Noise's own transport would use; the frames are ours so that they can
/// be larger than a Noise message.
fn split_keys(
    hs: &mut snow::HandshakeState,
    initiator: bool,
) -> Result<(Cipher, Cipher), AuthError> {
    if !hs.is_handshake_finished() {
        return Err(AuthError::Failed("the handshake did not finish".into()));
    }
    let (to_responder, to_initiator) = hs.dangerously_get_raw_split();
    let (to_responder, to_initiator) = (
        zeroize::Zeroizing::new(to_responder),
        zeroize::Zeroizing::new(to_initiator),
    );
    let (send, recv) = if initiator {
        (to_responder, to_initiator)
    } else {
        (to_initiator, to_responder)
    };
    Ok((Cipher::new(&send[..])?, Cipher::new(&recv[..])?))
}

/// The 8 bytes a confirmation frame carries: the sender's id, then the receiver's.
fn confirmation(sender: NodeId, receiver: NodeId) -> [u8; 8] {
    let mut c = [0u8; 8];
    c[..4].copy_from_slice(&sender.to_le_bytes());
    c[4..].copy_from_slice(&receiver.to_le_bytes());
    c
}

/// A confirmation frame (frame number 0 of its direction), sealed and framed.
fn seal_confirmation(
    cipher: &Cipher,
    sender: NodeId,
    receiver: NodeId,
) -> io::Result<[u8; HEAD + CONFIRM_LEN]> {
    let mut frame = [0u8; HEAD + CONFIRM_LEN];
    let body = &mut frame[HEAD..];
    body[..8].copy_from_slice(&confirmation(sender, receiver));
    let n = cipher.seal_in_place(0, body, 8)?;
    frame[..HEAD].copy_from_slice(&frame_head(n)?);
    Ok(frame)
}

/// The contents of a confirmation frame read by hand (frame number 0 of its direction), if it
/// has the right length and authenticates.
fn open_confirmation(cipher: &Cipher, frame: &mut [u8; HEAD + CONFIRM_LEN]) -> Option<[u8; 8]> {
    let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
    if usize::try_from(len).ok() != Some(CONFIRM_LEN) {
        return None;
    }
    let n = cipher.open_in_place(0, &mut frame[HEAD..])?;
    frame[HEAD..HEAD + n].try_into().ok()
}

/// The length prefix of a sealed frame whose body has `n` bytes.
fn frame_head(n: usize) -> io::Result<[u8; HEAD]> {
    u32::try_from(n)
        .ok()
        .filter(|_| n <= MAX_BODY)
        .map(u32::to_be_bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))
}

fn id_at(b: &[u8], at: usize) -> Result<NodeId, AuthError> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| AuthError::Failed("a handshake message is too short".into()))
}

fn frame_len(n: usize) -> io::Result<[u8; 2]> {
    u16::try_from(n)
        .map(u16::to_be_bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))
}

fn write_frame(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&frame_len(body.len())?);
    out.extend_from_slice(body);
    w.write_all(&out)
}

#[cfg(test)]
fn read_frame(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len)?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// The socket's timeouts before the handshake, put back after it.
struct Timeouts {
    read: Option<Duration>,
    write: Option<Duration>,
}

impl Timeouts {
    fn set(tcp: &TcpStream) -> io::Result<Self> {
        // The handshake and the first protocol messages are small writes in a row: with
        // Nagle's algorithm each would wait for the previous one's (delayed) acknowledgement.
        tcp.set_nodelay(true)?;
        let saved = Timeouts {
            read: tcp.read_timeout()?,
            write: tcp.write_timeout()?,
        };
        // Writes are small and bounded by the socket's send buffer; reads by `read_by`.
        tcp.set_write_timeout(Some(HANDSHAKE_WRITE_BOUND))?;
        Ok(saved)
    }

    fn restore(self, tcp: &TcpStream) -> io::Result<()> {
        tcp.set_read_timeout(self.read)?;
        tcp.set_write_timeout(self.write)
    }
}

/// The cipher of one direction of a sealed connection: AES-256-GCM under that direction's key
/// (from the Noise handshake's split, or a TLS 1.3 exporter); the nonce is the frame number,
/// big-endian, in the last 8 of its 12 bytes. Boxed: the expanded key schedule is large.
struct Cipher(Box<ring::aead::LessSafeKey>);

impl Cipher {
    fn new(key: &[u8]) -> Result<Self, AuthError> {
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key)
            .map(|k| Cipher(Box::new(ring::aead::LessSafeKey::new(k))))
            .map_err(|_| AuthError::Failed("cannot key the frame cipher".into()))
    }

    fn nonce(n: u64) -> ring::aead::Nonce {
        let mut b = [0u8; 12];
        b[4..].copy_from_slice(&n.to_be_bytes());
        ring::aead::Nonce::assume_unique_for_key(b)
    }

    /// Encrypts the first `len` bytes of `buf` in place as frame number `n` and puts the tag
    /// after them; returns the body's length (`len` + the tag).
    fn seal_in_place(&self, n: u64, buf: &mut [u8], len: usize) -> io::Result<usize> {
        let failed = || io::Error::other("a frame could not be sealed");
        let body = buf.get_mut(..len + TAG_LEN).ok_or_else(failed)?;
        let (plain, tag_room) = body.split_at_mut(len);
        let tag = self
            .0
            .seal_in_place_separate_tag(Self::nonce(n), ring::aead::Aad::empty(), plain)
            .map_err(|_| failed())?;
        tag_room.copy_from_slice(tag.as_ref());
        Ok(len + TAG_LEN)
    }

    /// Encrypts `plain` in place as frame number `n`; returns the tag that follows it.
    fn seal_detached(&self, n: u64, plain: &mut [u8]) -> io::Result<[u8; TAG_LEN]> {
        let tag = self
            .0
            .seal_in_place_separate_tag(Self::nonce(n), ring::aead::Aad::empty(), plain)
            .map_err(|_| io::Error::other("a frame could not be sealed"))?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts the body of frame number `n` (ciphertext and tag) in place; returns the
    /// plaintext's length (at the start of `body`), or `None` if the frame does not
    /// authenticate (then `body` holds nothing usable).
    fn open_in_place(&self, n: u64, body: &mut [u8]) -> Option<usize> {
        self.0
            .open_in_place(Self::nonce(n), ring::aead::Aad::empty(), body)
            .ok()
            .map(|plain| plain.len())
    }
}

/// The sending half of a sealed connection: its cipher and frame counter.
struct Sealer {
    cipher: Cipher,
    nonce: u64,
    broken: bool,
    buf: Vec<u8>,
}

impl Sealer {
    /// Encrypts and sends up to one frame of `data`; returns how much it took.
    fn write(&mut self, tcp: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
        if self.broken {
            return Err(broken());
        }
        if data.is_empty() {
            return Ok(0);
        }
        let take = data.len().min(MAX_PLAIN);
        let size = HEAD + take + TAG_LEN;
        // The buffer only grows (to the largest frame sent), so no frame costs a clearing.
        if self.buf.len() < size {
            self.buf.resize(size, 0);
        }
        self.buf[HEAD..HEAD + take].copy_from_slice(&data[..take]);
        let n = self
            .cipher
            .seal_in_place(self.nonce, &mut self.buf[HEAD..], take)?;
        self.nonce += 1;
        self.buf[..HEAD].copy_from_slice(&frame_head(n)?);
        // A frame sent in part cannot be resumed (the peer would see a torn frame): the
        // connection is unusable after any failure here.
        if let Err(e) = tcp.write_all(&self.buf[..HEAD + n]) {
            self.broken = true;
            return Err(e);
        }
        Ok(take)
    }
}

impl Sealer {
    /// Sends all of `data`, encrypting it in place (it holds ciphertext afterwards): the
    /// frames leave by vectored writes without a copy.
    fn write_all_in_place(&mut self, tcp: &mut TcpStream, data: &mut [u8]) -> io::Result<()> {
        if self.broken {
            return Err(broken());
        }
        // A small frame leaves faster as one contiguous write (a three-part vectored write
        // added about 15 µs to a 100-byte round on loopback); the copy is what makes it so.
        if data.len() < IN_PLACE_MIN {
            let mut rest = &data[..];
            while !rest.is_empty() {
                let n = self.write(tcp, rest)?;
                rest = &rest[n..];
            }
            return Ok(());
        }
        for plain in data.chunks_mut(MAX_PLAIN) {
            let tag = self.cipher.seal_detached(self.nonce, plain)?;
            self.nonce += 1;
            let head = frame_head(plain.len() + TAG_LEN)?;
            let mut parts = [
                io::IoSlice::new(&head),
                io::IoSlice::new(plain),
                io::IoSlice::new(&tag),
            ];
            if let Err(e) = write_all_vectored(tcp, &mut parts) {
                self.broken = true;
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Writes every byte of `parts`, in order.
fn write_all_vectored(tcp: &mut TcpStream, mut parts: &mut [io::IoSlice<'_>]) -> io::Result<()> {
    while !parts.is_empty() {
        match tcp.write_vectored(parts) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The receiving half: its cipher, frame counter, and the bytes read ahead from the socket.
///
/// Reads take whatever the socket has (up to the buffer's size), so that a small frame costs
/// one system call and several queued frames one between them. A frame is opened in place in
/// the buffer and its plaintext handed out from there, except that a reader asking for at
/// least a whole large frame, when none of its body has arrived yet, gets the body straight
/// from the socket into its own buffer, decrypted there (no copy).
struct Opener {
    cipher: Cipher,
    nonce: u64,
    /// Raw bytes from the socket are `buf[start..filled]`; once a frame is opened, its
    /// plaintext `buf[pos..end]` waits to be handed out. Grows to the largest frame received.
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    pos: usize,
    end: usize,
    broken: bool,
}

/// The read-ahead buffer's first size; it grows for larger frames.
const READ_AHEAD: usize = 16 * 1024;

/// Frames at least this long may be read straight into the reader's buffer.
const DIRECT_MIN: usize = 4 * 1024;

impl Opener {
    fn new(cipher: Cipher, nonce: u64) -> Self {
        Opener {
            cipher,
            nonce,
            buf: vec![0; READ_AHEAD],
            start: 0,
            filled: 0,
            pos: 0,
            end: 0,
            broken: false,
        }
    }

    fn read(&mut self, tcp: &mut impl Read, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        // A frame may carry nothing (no sender of ours makes one, but it is well formed): read
        // on until one carries bytes, so that 0 keeps meaning the end of the stream.
        while self.pos == self.end {
            if self.broken {
                return Err(broken());
            }
            if !self.fill(tcp, HEAD, true)? {
                return Ok(0);
            }
            let at = self.start;
            let head = [
                self.buf[at],
                self.buf[at + 1],
                self.buf[at + 2],
                self.buf[at + 3],
            ];
            let len = match usize::try_from(u32::from_be_bytes(head)) {
                Ok(len) if (TAG_LEN..=MAX_BODY).contains(&len) => len,
                _ => {
                    self.broken = true;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a frame of impossible length {}", u32::from_be_bytes(head)),
                    ));
                }
            };
            if self.filled - self.start == HEAD && len >= DIRECT_MIN && out.len() >= len {
                let n = self.read_into(tcp, &mut out[..len])?;
                if n > 0 {
                    return Ok(n);
                }
                continue;
            }
            self.fill(tcp, HEAD + len, false)?;
            let body = self.start + HEAD;
            self.start = body + len;
            let opened = self
                .cipher
                .open_in_place(self.nonce, &mut self.buf[body..body + len]);
            let n = self.opened(opened)?;
            self.pos = body;
            self.end = body + n;
        }
        let n = out.len().min(self.end - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }

    /// Counts an opened frame, or fails the connection on one that did not authenticate.
    fn opened(&mut self, opened: Option<usize>) -> io::Result<usize> {
        match opened {
            Some(n) => {
                self.nonce += 1;
                Ok(n)
            }
            None => {
                self.broken = true;
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a frame failed authentication: the connection was tampered with",
                ))
            }
        }
    }

    /// Reads the body of the frame whose head is the only thing buffered (`body.len()`
    /// bytes) straight into `body` and opens it there. A timeout keeps what was read (moved
    /// into the buffer), so the next call goes on where this one stopped.
    fn read_into(&mut self, tcp: &mut impl Read, body: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < body.len() {
            match tcp.read(&mut body[got..]) {
                Ok(0) => {
                    self.broken = true;
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection ended inside a frame",
                    ));
                }
                Ok(n) => got += n,
                Err(e) => {
                    self.reserve(HEAD + body.len());
                    let at = self.filled;
                    self.buf[at..at + got].copy_from_slice(&body[..got]);
                    self.filled += got;
                    return Err(e);
                }
            }
        }
        // The head was consumed with the body.
        self.start = 0;
        self.filled = 0;
        let opened = self.cipher.open_in_place(self.nonce, body);
        if opened.is_none() {
            // Nothing of a frame that failed reaches the reader.
            body.fill(0);
        }
        self.opened(opened)
    }

    /// Makes room for `need` bytes from `start` on: moves what is buffered to the front and
    /// grows the buffer if it is too small.
    fn reserve(&mut self, need: usize) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
    }

    /// Reads until `need` bytes are buffered from `start` on, taking whatever more the socket
    /// has. With `may_end`, a stream that ends before any byte of a frame returns `false`; an
    /// end anywhere else fails the connection. A timeout keeps what was read.
    fn fill(&mut self, tcp: &mut impl Read, need: usize, may_end: bool) -> io::Result<bool> {
        if self.filled - self.start >= need {
            return Ok(true);
        }
        if self.start == self.filled {
            // Nothing pending: start over at the front (no plaintext is waiting either).
            self.start = 0;
            self.filled = 0;
        }
        if self.start + need > self.buf.len() {
            self.reserve(need);
        }
        while self.filled - self.start < need {
            let at = self.filled;
            match tcp.read(&mut self.buf[at..]) {
                Ok(0) if may_end && self.filled == self.start => return Ok(false),
                Ok(0) => {
                    self.broken = true;
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection ended inside a frame",
                    ));
                }
                Ok(n) => self.filled += n,
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// The key of the sealed streams [`sealed_corpus`] makes and [`check_sealed_stream`] reads.
const FUZZ_KEY: [u8; 32] = [0x42; 32];

/// The plaintext of the frames of [`sealed_corpus`], in order.
fn fuzz_plaintext() -> Vec<Vec<u8>> {
    vec![
        b"hello".to_vec(),
        Vec::new(),
        (0..3000u32).map(|i| (i % 251) as u8).collect(),
        vec![7; 40],
    ]
}

/// A valid stream of sealed frames (frame numbers 0, 1, ...) under a fixed key, for the
/// mutation tests of [`check_sealed_stream`].
pub(crate) fn sealed_corpus() -> Vec<Vec<u8>> {
    let Ok(cipher) = Cipher::new(&FUZZ_KEY) else {
        return Vec::new();
    };
    let mut stream = Vec::new();
    for (n, plain) in fuzz_plaintext().into_iter().enumerate() {
        let mut body = plain;
        let Ok(tag) = cipher.seal_detached(n as u64, &mut body) else {
            return Vec::new();
        };
        body.extend_from_slice(&tag);
        let Ok(head) = frame_head(body.len()) else {
            return Vec::new();
        };
        stream.extend_from_slice(&head);
        stream.extend_from_slice(&body);
    }
    vec![stream]
}

/// Reads `data` as a sealed stream under the key of [`sealed_corpus`], in reads of varying
/// sizes, until it ends or fails. The reader may refuse the bytes, but must not panic, and
/// every byte it hands out must be plaintext the key's holder sealed, in its order: a prefix
/// of the corpus's plaintext (nothing forged, replayed or reordered gets through).
pub(crate) fn check_sealed_stream(data: &[u8]) {
    let Ok(cipher) = Cipher::new(&FUZZ_KEY) else {
        return;
    };
    let mut opener = Opener::new(cipher, 0);
    let mut input = data;
    let expected: Vec<u8> = fuzz_plaintext().concat();
    let mut got = Vec::new();
    let sizes = [1usize, 7, 4096, 3, 300_000];
    let mut buf = vec![0u8; 300_000];
    for size in sizes.iter().cycle().take(10_000) {
        match opener.read(&mut input, &mut buf[..*size]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        expected.starts_with(&got),
        "the reader handed out {} bytes that were not sealed in this order",
        got.len()
    );
}

fn broken() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the authenticated connection failed earlier",
    )
}

/// A connection after [`connect`] or [`accept`]: the plain socket in the open mode, sealed
/// frames in a secure one. Use it wherever the socket was used before; [`Stream::tcp`] gives
/// the socket for timeouts and shutdown.
pub struct Stream {
    tcp: TcpStream,
    seal: Option<(Sealer, Opener)>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("peer", &self.tcp.peer_addr().ok())
            .field("sealed", &self.seal.is_some())
            .finish()
    }
}

impl Stream {
    /// A connection without authentication.
    pub fn open(tcp: TcpStream) -> Self {
        Stream { tcp, seal: None }
    }

    /// A sealed stream whose writer sends frame number `send_nonce` next and whose reader
    /// expects the peer's frame number `recv_nonce` next.
    fn sealed(tcp: TcpStream, send: (Cipher, u64), recv: (Cipher, u64)) -> Self {
        let sealer = Sealer {
            cipher: send.0,
            nonce: send.1,
            broken: false,
            buf: Vec::new(),
        };
        let opener = Opener::new(recv.0, recv.1);
        Stream {
            tcp,
            seal: Some((sealer, opener)),
        }
    }

    /// Whether bytes travel in authenticated frames.
    pub fn is_sealed(&self) -> bool {
        self.seal.is_some()
    }

    /// The socket underneath, for timeouts, `nodelay`, addresses and shutdown. Reading or
    /// writing it directly would bypass the frames of a sealed connection.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// [`TcpStream::set_read_timeout`] of the socket underneath.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp.set_read_timeout(t)
    }

    /// [`TcpStream::set_write_timeout`] of the socket underneath.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp.set_write_timeout(t)
    }

    /// [`TcpStream::set_nodelay`] of the socket underneath.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.tcp.set_nodelay(on)
    }

    /// [`TcpStream::peer_addr`] of the socket underneath.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp.peer_addr()
    }

    /// [`TcpStream::shutdown`] of the socket underneath.
    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        self.tcp.shutdown(how)
    }

    /// Splits the connection into a reading and a writing half for two threads.
    pub fn split(self) -> io::Result<(ReadHalf, WriteHalf)> {
        let other = self.tcp.try_clone()?;
        Ok(match self.seal {
            None => (
                ReadHalf {
                    tcp: self.tcp,
                    opener: None,
                },
                WriteHalf {
                    tcp: other,
                    sealer: None,
                },
            ),
            Some((sealer, opener)) => (
                ReadHalf {
                    tcp: self.tcp,
                    opener: Some(opener),
                },
                WriteHalf {
                    tcp: other,
                    sealer: Some(sealer),
                },
            ),
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.seal {
            None => self.tcp.read(buf),
            Some((_, o)) => o.read(&mut self.tcp, buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.seal {
            None => self.tcp.write(buf),
            Some((s, _)) => s.write(&mut self.tcp, buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// The reading half of a [`Stream`].
pub struct ReadHalf {
    tcp: TcpStream,
    opener: Option<Opener>,
}

impl ReadHalf {
    /// The socket underneath (see [`Stream::tcp`]).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }
}

impl std::fmt::Debug for ReadHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHalf")
            .field("sealed", &self.opener.is_some())
            .finish()
    }
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.opener {
            None => self.tcp.read(buf),
            Some(o) => o.read(&mut self.tcp, buf),
        }
    }
}

/// The writing half of a [`Stream`].
pub struct WriteHalf {
    tcp: TcpStream,
    sealer: Option<Sealer>,
}

impl WriteHalf {
    /// The socket underneath (see [`Stream::tcp`]).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }
}

impl std::fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHalf")
            .field("sealed", &self.sealer.is_some())
            .finish()
    }
}

impl WriteHalf {
    /// Sends all of `data`, which this call may overwrite: on a sealed connection it is
    /// encrypted in place, which saves the copy [`Write::write_all`] makes. For a sender that
    /// refills its buffer for every message anyway.
    pub fn write_all_in_place(&mut self, data: &mut [u8]) -> io::Result<()> {
        match &mut self.sealer {
            None => self.tcp.write_all(data),
            Some(s) => s.write_all_in_place(&mut self.tcp, data),
        }
    }
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.sealer {
            None => self.tcp.write(buf),
            Some(s) => s.write(&mut self.tcp, buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    const T: Duration = Duration::from_secs(5);

    fn member(seed: u8) -> Credentials {
        Credentials::Member {
            group: Secret::from_bytes([seed; SECRET_LEN]),
            clients: Some(Secret::from_bytes([seed ^ 0xff; SECRET_LEN])),
        }
    }

    /// Runs `server` on an accepted connection and `client` on a dialed one.
    pub(super) fn pair<A: Send + 'static, B>(
        server: impl FnOnce(TcpStream) -> A + Send + 'static,
        client: impl FnOnce(TcpStream) -> B,
    ) -> (A, B) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || server(l.accept().unwrap().0));
        let b = client(TcpStream::connect(addr).unwrap());
        (t.join().unwrap(), b)
    }

    #[test]
    fn members_with_the_same_secret_talk_and_learn_each_others_ids() {
        talk(member(1), member(1));
    }

    /// Node 7 (holding `dialer`) dials node 2 (holding `listener`) on the GMS port and sends
    /// more than two frames' worth, read in pieces of every size; checks that each learned the
    /// other's id and that the bytes arrived unchanged.
    pub(super) fn talk(listener: Credentials, dialer: Credentials) {
        let (srv, cli) = pair(
            move |s| {
                let (mut st, peer) = accept(s, &listener, Role::Gms, 2, T).unwrap();
                let mut got = vec![0u8; 600_000];
                let mut at = 0;
                let mut piece = 1;
                while at < got.len() {
                    let end = (at + piece).min(got.len());
                    st.read_exact(&mut got[at..end]).unwrap();
                    at = end;
                    piece = piece * 7 % 300_007 + 1;
                }
                st.write_all(b"done").unwrap();
                (peer, got)
            },
            |s| {
                let (mut st, peer) = connect(s, &dialer, Role::Gms, 7, Some(2), T).unwrap();
                assert!(st.is_sealed());
                let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
                st.write_all(&data).unwrap();
                let mut ok = [0u8; 4];
                st.read_exact(&mut ok).unwrap();
                (peer, data, ok)
            },
        );
        assert_eq!(
            srv.0,
            Some(Peer {
                id: 7,
                role: Role::Gms
            })
        );
        assert_eq!(
            cli.0,
            Some(Peer {
                id: 2,
                role: Role::Gms
            })
        );
        assert_eq!(srv.1, cli.1, "bytes arrive unchanged across many frames");
        assert_eq!(&cli.2, b"done");
    }

    #[test]
    fn a_handshake_sent_byte_by_byte_is_cut_off_at_its_deadline() {
        let started = std::time::Instant::now();
        let (srv, ()) = pair(
            |s| accept(s, &member(1), Role::Gms, 2, Duration::from_millis(600)).map(|_| ()),
            |mut s| {
                // A valid-looking preamble, one byte at a time, each well within the bound.
                let mut bytes = MAGIC.to_vec();
                bytes.extend_from_slice(&[Role::Gms as u8, 0, 0, MSG1_LEN as u8]);
                bytes.extend_from_slice(&[0x11; 64]);
                for b in bytes {
                    if s.write_all(&[b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(150));
                }
            },
        );
        match srv {
            Err(AuthError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_node_that_reaches_its_own_id_was_reflected_and_stops() {
        let (srv, cli) = pair(
            |s| accept(s, &member(1), Role::P2p, 2, T).map(|_| ()),
            |s| connect(s, &member(1), Role::P2p, 2, None, T).map(|_| ()),
        );
        assert!(matches!(srv, Err(AuthError::Failed(_))), "{srv:?}");
        assert!(cli.is_err());
    }

    /// Mutations of a real first flight (preamble and first message) and of a real
    /// confirmation, sent to a listener: each is refused with an error, none panics, and no
    /// handshake outlives its deadline.
    #[test]
    fn mutated_handshakes_are_refused_without_panics() {
        // Record an honest dialer's bytes: the first flight, then (after a real answer) the
        // confirmation.
        let (flight, ()) = pair(
            |mut s| {
                let mut b = vec![0u8; 10 + MSG1_LEN];
                s.read_exact(&mut b).unwrap();
                b
            },
            |s| {
                let _ = connect(
                    s,
                    &member(1),
                    Role::Gms,
                    7,
                    None,
                    Duration::from_millis(200),
                );
            },
        );
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let ran = crate::fuzz::run("secure handshake", 11, &[flight], 2000, |bytes| {
            let mut dialer = TcpStream::connect(addr).unwrap();
            let (tcp, _) = listener.accept().unwrap();
            let _ = dialer.write_all(bytes);
            drop(dialer);
            let r = accept(tcp, &member(1), Role::Gms, 2, Duration::from_millis(500));
            assert!(r.is_err(), "a mutated first flight was accepted");
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(ran >= 2000);
    }

    #[test]
    fn a_wrong_secret_is_refused_before_any_protocol_byte() {
        let (srv, cli) = pair(
            |s| accept(s, &member(1), Role::Gms, 2, T).map(|_| ()),
            |s| connect(s, &member(9), Role::Gms, 7, None, T).map(|_| ()),
        );
        assert!(matches!(srv, Err(AuthError::Failed(_))), "{srv:?}");
        assert!(matches!(cli, Err(AuthError::Refused)), "{cli:?}");
    }

    #[test]
    fn an_open_dialer_is_told_the_port_is_secure() {
        let (srv, ()) = pair(
            |s| accept(s, &member(1), Role::P2p, 2, T).map(|_| ()),
            |mut s| {
                s.write_all(b"hello, anyone there?").unwrap();
            },
        );
        assert!(matches!(srv, Err(AuthError::NotSecure)), "{srv:?}");
    }

    #[test]
    fn a_handshake_for_one_port_fails_on_another() {
        let (srv, cli) = pair(
            |s| accept(s, &member(1), Role::StateTransfer, 2, T).map(|_| ()),
            |s| connect(s, &member(1), Role::Gms, 7, None, T).map(|_| ()),
        );
        assert!(
            matches!(
                srv,
                Err(AuthError::WrongRole {
                    expected: Role::StateTransfer,
                    ..
                })
            ),
            "{srv:?}"
        );
        assert!(cli.is_err());
    }

    #[test]
    fn dialing_the_wrong_node_fails_on_both_sides() {
        let (srv, cli) = pair(
            |s| accept(s, &member(1), Role::Fabric, 3, T).map(|_| ()),
            |s| connect(s, &member(1), Role::Fabric, 7, Some(2), T).map(|_| ()),
        );
        assert!(matches!(srv, Err(AuthError::WrongPeer { .. })), "{srv:?}");
        assert!(cli.is_err());
    }

    #[test]
    fn a_recorded_handshake_cannot_be_replayed() {
        // Record what an honest dialer sends.
        let (recorded, _) = pair(
            |mut s| {
                // Play the responder by hand to capture the dialer's first bytes, then let
                // the honest handshake run on a second connection.
                let mut first = vec![0u8; 8];
                s.read_exact(&mut first).unwrap();
                let f = read_frame(&mut s).unwrap();
                first.extend_from_slice(&(f.len() as u16).to_be_bytes());
                first.extend_from_slice(&f);
                first
            },
            |s| {
                let _ = connect(
                    s,
                    &member(1),
                    Role::Gms,
                    7,
                    None,
                    Duration::from_millis(300),
                );
            },
        );
        // Replay it to a real responder: it answers, then waits for a confirmation the
        // replayer cannot produce.
        let (srv, ()) = pair(
            |s| accept(s, &member(1), Role::Gms, 2, Duration::from_millis(500)).map(|_| ()),
            |mut s| {
                s.write_all(&recorded).unwrap();
                let _ = read_frame(&mut s);
                // Replaying an old confirmation frame fails too: the keys are new.
                s.write_all(&(CONFIRM_LEN as u32).to_be_bytes()).unwrap();
                s.write_all(&[0x5a; CONFIRM_LEN]).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            },
        );
        assert!(matches!(srv, Err(AuthError::Failed(_))), "{srv:?}");
    }

    #[test]
    fn the_sealed_corpus_reads_back_whole() {
        let stream = &sealed_corpus()[0];
        let mut input = &stream[..];
        let mut opener = Opener::new(Cipher::new(&FUZZ_KEY).unwrap(), 0);
        let mut got = Vec::new();
        opener.read_to_end_for_test(&mut input, &mut got);
        assert_eq!(got, fuzz_plaintext().concat());
    }

    impl Opener {
        fn read_to_end_for_test(&mut self, input: &mut &[u8], got: &mut Vec<u8>) {
            let mut buf = [0u8; 100];
            loop {
                match self.read(input, &mut buf).unwrap() {
                    0 => break,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        }
    }

    /// The sealer's next frame carrying `plain`, length prefix included, without sending it.
    fn sealed_by_hand(sealer: &Sealer, plain: &[u8]) -> Vec<u8> {
        let mut frame = vec![0u8; HEAD + plain.len() + TAG_LEN];
        frame[HEAD..HEAD + plain.len()].copy_from_slice(plain);
        let n = sealer
            .cipher
            .seal_in_place(sealer.nonce, &mut frame[HEAD..], plain.len())
            .unwrap();
        frame[..HEAD].copy_from_slice(&frame_head(n).unwrap());
        frame
    }

    #[test]
    fn writes_in_place_arrive_whole_small_and_large() {
        let sizes = [20usize, IN_PLACE_MIN - 1, IN_PLACE_MIN, 3 * MAX_PLAIN + 5];
        let total: usize = sizes.iter().sum();
        let (got, sent) = pair(
            move |s| {
                let (mut st, _) = accept(s, &member(1), Role::Fabric, 2, T).unwrap();
                let mut got = vec![0u8; total];
                st.read_exact(&mut got).unwrap();
                got
            },
            |s| {
                let (st, _) = connect(s, &member(1), Role::Fabric, 7, None, T).unwrap();
                let (_r, mut w) = st.split().unwrap();
                let mut sent = Vec::new();
                for (k, n) in sizes.iter().enumerate() {
                    let data: Vec<u8> = (0..*n).map(|i| (i * 31 + k) as u8).collect();
                    sent.extend_from_slice(&data);
                    let mut scratch = data.clone();
                    w.write_all_in_place(&mut scratch).unwrap();
                }
                sent
            },
        );
        assert_eq!(got, sent);
    }

    #[test]
    fn a_frame_of_impossible_length_ends_the_connection() {
        for len in [0u32, TAG_LEN as u32 - 1, MAX_BODY as u32 + 1, u32::MAX] {
            let (srv, ()) = pair(
                |s| {
                    let (mut st, _) = accept(s, &member(1), Role::P2p, 2, T).unwrap();
                    let mut b = [0u8; 5];
                    st.read_exact(&mut b)
                },
                move |s| {
                    let (st, _) = connect(s, &member(1), Role::P2p, 7, None, T).unwrap();
                    let Stream { mut tcp, .. } = st;
                    tcp.write_all(&len.to_be_bytes()).unwrap();
                    tcp.write_all(&[0u8; 64]).unwrap();
                    std::thread::sleep(Duration::from_millis(100));
                },
            );
            let e = srv.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{len}: {e}");
        }
    }

    #[test]
    fn a_flipped_bit_in_a_frame_ends_the_connection() {
        let (srv, ()) = pair(
            |s| {
                let (mut st, _) = accept(s, &member(1), Role::P2p, 2, T).unwrap();
                let mut b = [0u8; 5];
                st.read_exact(&mut b)
            },
            |s| {
                let (st, _) = connect(s, &member(1), Role::P2p, 7, None, T).unwrap();
                // Write a frame by hand, sealed correctly, then corrupt one byte.
                let Stream { mut tcp, seal } = st;
                let (sealer, _) = seal.unwrap();
                let mut frame = sealed_by_hand(&sealer, b"hello");
                frame[HEAD + 3] ^= 1;
                tcp.write_all(&frame).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            },
        );
        let e = srv.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[test]
    fn a_read_timeout_inside_a_frame_resumes_where_it_stopped() {
        let (srv, ()) = pair(
            |s| {
                let (mut st, _) = accept(s, &member(1), Role::P2p, 2, T).unwrap();
                st.tcp()
                    .set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                let mut got = Vec::new();
                let mut b = [0u8; 64];
                let mut timeouts = 0;
                while got.len() < 10 {
                    match st.read(&mut b) {
                        Ok(n) => got.extend_from_slice(&b[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => timeouts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                (got, timeouts)
            },
            |s| {
                let (st, _) = connect(s, &member(1), Role::P2p, 7, None, T).unwrap();
                let Stream { mut tcp, seal } = st;
                let (mut sealer, _) = seal.unwrap();
                // Seal into a buffer, then dribble it out in two parts with a pause.
                let frame = sealed_by_hand(&sealer, b"0123456789");
                sealer.nonce += 1;
                tcp.write_all(&frame[..7]).unwrap();
                std::thread::sleep(Duration::from_millis(120));
                tcp.write_all(&frame[7..]).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            },
        );
        assert_eq!(srv.0, b"0123456789");
        assert!(srv.1 > 0, "the reader saw at least one timeout mid-frame");
    }

    #[test]
    fn client_credentials_open_the_external_port_only() {
        let clients = Secret::from_bytes([0xfe; SECRET_LEN]);
        let client = Credentials::Client {
            clients: clients.clone(),
        };
        assert!(matches!(
            client.key_for(Role::Gms),
            Err(AuthError::ClientOnly { role: Role::Gms })
        ));
        let roles = [Role::P2p, Role::External];
        let (srv, cli) = pair(
            move |s| accept_any(s, &member(1), &roles, 2, T).map(|(_, p)| p),
            move |s| connect(s, &client, Role::External, 900, None, T).map(|(_, p)| p),
        );
        let external = |id| {
            Some(Peer {
                id,
                role: Role::External,
            })
        };
        assert_eq!(
            srv.unwrap(),
            external(900),
            "the server learns it is a client"
        );
        assert_eq!(cli.unwrap(), external(2));
        // A member on the same port is told apart.
        let (srv, _) = pair(
            move |s| accept_any(s, &member(1), &roles, 2, T).map(|(_, p)| p),
            |s| connect(s, &member(1), Role::P2p, 5, None, T).map(|_| ()),
        );
        assert_eq!(
            srv.unwrap(),
            Some(Peer {
                id: 5,
                role: Role::P2p
            })
        );
        // A member secret does not open the external port.
        let (srv, _) = pair(
            |s| accept(s, &member(1), Role::External, 2, T).map(|_| ()),
            |s| {
                let fake = Credentials::Client {
                    clients: Secret::from_bytes([1; SECRET_LEN]),
                };
                connect(s, &fake, Role::External, 900, None, T).map(|_| ())
            },
        );
        assert!(srv.is_err());
    }

    #[test]
    fn secret_files_must_be_private_and_well_formed() {
        let dir = std::env::temp_dir().join(format!("secure-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("group.key");
        let _ = std::fs::remove_file(&p);
        let s = Secret::generate().unwrap();
        s.save(&p).unwrap();
        assert_eq!(Secret::load(&p).unwrap(), s);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(Secret::load(&p), Err(SecretError::Exposed { .. })));
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&p, "not hex at all").unwrap();
        assert!(matches!(
            Secret::load(&p),
            Err(SecretError::Malformed { .. })
        ));
        assert!(format!("{s:?}").contains(".."), "Debug hides the bytes");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
