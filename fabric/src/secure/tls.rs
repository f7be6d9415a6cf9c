//! The certificate mode's handshake: mutual TLS 1.3 (rustls, ring) under the group CA, then
//! the same sealed frames as the secret mode, keyed from the TLS session's exporter.
//!
//! The preamble (`DRTLS1`, the role, 0) goes first, in clear, so that a listener can tell the
//! modes apart and refuse a mismatch with a clear answer. The TLS records of the handshake are
//! read one at a time, by their own length, so that no byte after the handshake is taken by
//! TLS. When the listener's checks pass it sends a confirmation frame, the first sealed frame;
//! the dialer returns only once it has opened it, so a refused dialer learns why (the
//! listener's TLS alert) instead of finding its first protocol message unanswered.
//!
//! Keys: 64 bytes from the TLS 1.3 exporter (RFC 8446 §7.5) with a label of ours and the role
//! as context; the first 32 key the dialer's frames, the last 32 the listener's.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::pki::{Identity, TlsCredentials};
use super::{
    confirmation, open_confirmation, read_by, seal_confirmation, AuthError, Cipher, Peer, Role,
    Stream, Timeouts, CONFIRM_LEN, HEAD, REFUSED, UNKNOWN_PEER,
};
use crate::NodeId;

/// The certificate mode's preamble.
pub(super) const MAGIC: &[u8; 6] = b"DRTLS1";
/// The exporter label the frame keys are drawn with.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-derecho-rs-frames-v1";
/// The name a dialer asks for; never checked (members are named by their certificates'
/// URIs) and never sent (no SNI).
const SERVER_NAME: &str = "derecho-rs.invalid";
/// The largest TLS 1.3 record body (2^14 plaintext + 256).
const MAX_RECORD: usize = (1 << 14) + 256;

/// The crypto provider: ring, so that the build needs no system library or CMake. rustls
/// marks it deprecated because its key exchange is not post-quantum:
/// a recorded session could be decrypted by a future quantum computer. Authentication, which
/// is what keeps strangers out of the group, does not depend on it.
///
/// The key exchange is X25519 only: this provider lists P-384 first, whose arithmetic in ring
/// made a handshake cost 2.4 ms against 0.9 ms with X25519 on the same machine.
#[allow(deprecated)]
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        kx_groups: vec![rustls::crypto::ring::kx_group::X25519],
        ..rustls::crypto::ring::default_provider()
    })
}

fn rejected(what: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(Refusal(what)),
    )))
}

/// Why a certificate that chains to the CA is still refused (the wrong kind of holder).
#[derive(Debug)]
struct Refusal(String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// The dialer's check of the listener: a member certificate under the group CA. Which member
/// is checked after the handshake, where the error can name it.
#[derive(Debug)]
struct MemberListener {
    roots: Arc<rustls::RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for MemberListener {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        match Identity::of_certificate(end_entity.as_ref()) {
            Ok(Identity::Member(_)) => Ok(ServerCertVerified::assertion()),
            Ok(other) => Err(rejected(format!(
                "the listener presents the certificate of {other}, not a member's"
            ))),
            Err(e) => Err(rejected(e.to_string())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The listener's check of the dialer: the CA's verdict, then whether this kind of holder may
/// open this port (members everywhere, clients on the external port only) and is not this
/// node itself. Refusing here sends the dialer a TLS alert.
#[derive(Debug)]
struct DialerCheck {
    inner: Arc<dyn ClientCertVerifier>,
    role: Role,
    local: NodeId,
}

impl ClientCertVerifier for DialerCheck {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let who =
            Identity::of_certificate(end_entity.as_ref()).map_err(|e| rejected(e.to_string()))?;
        match (&who, self.role) {
            (Identity::Member(id), _) if *id == self.local => Err(rejected(format!(
                "the dialer presents this node's own certificate ({who})"
            ))),
            (Identity::Member(_), _) | (Identity::Client(_), Role::External) => {
                Ok(ClientCertVerified::assertion())
            }
            (Identity::Client(_), role) => Err(rejected(format!(
                "{who} holds a client certificate, which does not open the {role} port"
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn tls_error(e: rustls::Error) -> AuthError {
    match e {
        rustls::Error::AlertReceived(alert) => AuthError::Rejected(format!(
            "the peer ended the TLS handshake with the alert {alert:?}: it does not accept \
             this process's certificate for this port, or holds another group's CA"
        )),
        rustls::Error::InvalidCertificate(c) => AuthError::Certificate(c.to_string()),
        other => AuthError::Failed(other.to_string()),
    }
}

/// The TLS configurations a process builds from its credentials, kept for every later
/// connection: building one parses the key and the CA, which costs more than a handshake.
#[derive(Default)]
pub(super) struct Configs {
    client: std::sync::Mutex<Option<Arc<rustls::ClientConfig>>>,
    servers: std::sync::Mutex<std::collections::HashMap<(u8, NodeId), Arc<rustls::ServerConfig>>>,
}

fn client_config(creds: &TlsCredentials) -> Result<Arc<rustls::ClientConfig>, AuthError> {
    let mut kept = crate::sync::lock(&creds.configs.client);
    if let Some(c) = kept.as_ref() {
        return Ok(Arc::clone(c));
    }
    let made = build_client_config(creds)?;
    *kept = Some(Arc::clone(&made));
    Ok(made)
}

fn server_config(
    creds: &TlsCredentials,
    role: Role,
    local: NodeId,
) -> Result<Arc<rustls::ServerConfig>, AuthError> {
    let mut kept = crate::sync::lock(&creds.configs.servers);
    if let Some(c) = kept.get(&(role as u8, local)) {
        return Ok(Arc::clone(c));
    }
    let made = build_server_config(creds, role, local)?;
    kept.insert((role as u8, local), Arc::clone(&made));
    Ok(made)
}

fn build_client_config(creds: &TlsCredentials) -> Result<Arc<rustls::ClientConfig>, AuthError> {
    let provider = provider();
    let algs = provider.signature_verification_algorithms;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MemberListener {
            roots: Arc::clone(&creds.roots),
            algs,
        }))
        .with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())
        .map_err(tls_error)?;
    config.enable_sni = false;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

fn build_server_config(
    creds: &TlsCredentials,
    role: Role,
    local: NodeId,
) -> Result<Arc<rustls::ServerConfig>, AuthError> {
    let provider = provider();
    let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::clone(&creds.roots),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|e| AuthError::Certificate(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(Arc::new(DialerCheck { inner, role, local }))
        .with_single_cert(creds.chain.clone(), creds.key.clone_key())
        .map_err(tls_error)?;
    // No session tickets: nothing may follow the handshake on the TLS side.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// Reads the first two bytes of what the peer sends next, by `by`: a TLS record's start, the
/// first frame's, or the clear refusal a listener sends in place of its answer
/// ([`AuthError::Refused`]).
fn next_two(tcp: &mut TcpStream, by: Instant) -> Result<[u8; 2], AuthError> {
    let mut first = [0u8; 2];
    read_by(tcp, &mut first, by).map_err(closed)?;
    if first == REFUSED {
        return Err(AuthError::Refused);
    }
    Ok(first)
}

/// Whether `first` (from [`next_two`]) starts a TLS record: content types 20..=23
/// (change_cipher_spec, alert, handshake, application data), version 3.x.
fn starts_record(first: [u8; 2]) -> bool {
    (20..=23).contains(&first[0]) && first[1] == 3
}

/// Reads the rest of the TLS record that starts with `first`, by `by`, never a byte more.
fn read_record(tcp: &mut TcpStream, first: [u8; 2], by: Instant) -> Result<Vec<u8>, AuthError> {
    let mut head = [0u8; 5];
    head[..2].copy_from_slice(&first);
    read_by(tcp, &mut head[2..], by).map_err(closed)?;
    let len = usize::from(u16::from_be_bytes([head[3], head[4]]));
    if !starts_record(first) || len > MAX_RECORD {
        return Err(AuthError::NotSecure);
    }
    let mut record = vec![0u8; 5 + len];
    record[..5].copy_from_slice(&head);
    read_by(tcp, &mut record[5..], by).map_err(closed)?;
    Ok(record)
}

fn closed(e: io::Error) -> AuthError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => AuthError::Closed,
        _ => AuthError::Io(e),
    }
}

/// Hands a record to the TLS state and processes it.
fn feed(conn: &mut rustls::Connection, record: &[u8]) -> Result<(), rustls::Error> {
    let mut rest = record;
    while !rest.is_empty() {
        conn.read_tls(&mut rest)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
    }
    conn.process_new_packets().map(|_| ())
}

/// Sends whatever the TLS state has to send.
fn flush(conn: &mut rustls::Connection, tcp: &mut TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(tcp)?;
    }
    Ok(())
}

/// Runs the handshake to its end, a record at a time, by `by`. On a TLS error the alert the
/// state prepared goes to the peer, best effort.
fn drive(conn: &mut rustls::Connection, tcp: &mut TcpStream, by: Instant) -> Result<(), AuthError> {
    loop {
        flush(conn, tcp)?;
        if !conn.is_handshaking() {
            return Ok(());
        }
        let first = next_two(tcp, by)?;
        let record = read_record(tcp, first, by)?;
        if let Err(e) = feed(conn, &record) {
            // The peer learns why from the alert; it may be gone already.
            let _ = flush(conn, tcp);
            return Err(tls_error(e));
        }
    }
}

/// The frame ciphers of both directions, from the session's exporter.
fn frame_keys(conn: &rustls::Connection, role: Role) -> Result<(Cipher, Cipher), AuthError> {
    let keys = conn
        .export_keying_material(
            zeroize::Zeroizing::new([0u8; 64]),
            EXPORTER_LABEL,
            Some(&[role as u8]),
        )
        .map_err(tls_error)?;
    Ok((Cipher::new(&keys[..32])?, Cipher::new(&keys[32..])?))
}

/// The peer's identity from the certificate it presented.
fn peer_identity(conn: &rustls::Connection) -> Result<Identity, AuthError> {
    let certs = conn
        .peer_certificates()
        .ok_or_else(|| AuthError::Certificate("the peer presented no certificate".into()))?;
    let leaf = certs
        .first()
        .ok_or_else(|| AuthError::Certificate("the peer presented no certificate".into()))?;
    Identity::of_certificate(leaf.as_ref()).map_err(|e| AuthError::Certificate(e.to_string()))
}

/// [`super::connect`] in the certificate mode.
pub(super) fn connect(
    tcp: TcpStream,
    creds: &TlsCredentials,
    role: Role,
    local: NodeId,
    expect: Option<NodeId>,
    deadline: Duration,
) -> Result<(Stream, Option<Peer>), AuthError> {
    // This side is whom its certificate names, whatever id the caller passed: the listener
    // checks the certificate, and the confirmation names it.
    let local = match &creds.identity {
        Identity::Member(id) => {
            if *id != local {
                tracing::debug!(id, local, "dialing as the certificate's member id");
            }
            *id
        }
        Identity::Client(_) if role != Role::External => {
            return Err(AuthError::ClientOnly { role });
        }
        Identity::Client(_) => UNKNOWN_PEER,
    };
    let saved = Timeouts::set(&tcp)?;
    let by = Instant::now() + deadline;
    let mut tcp = tcp;
    let name = ServerName::try_from(SERVER_NAME).map_err(|e| AuthError::Failed(e.to_string()))?;
    let client = rustls::ClientConnection::new(client_config(creds)?, name).map_err(tls_error)?;
    let mut conn = rustls::Connection::Client(client);
    // The preamble and the client hello leave in one segment.
    let mut first = Vec::with_capacity(512);
    first.extend_from_slice(MAGIC);
    first.push(role as u8);
    first.push(0);
    while conn.wants_write() {
        conn.write_tls(&mut first)?;
    }
    tcp.write_all(&first)?;
    drive(&mut conn, &mut tcp, by)?;
    let peer = match peer_identity(&conn)? {
        Identity::Member(id) => id,
        other => {
            return Err(AuthError::Certificate(format!(
                "the listener presents the certificate of {other}"
            )))
        }
    };
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
    let (mine, theirs) = frame_keys(&conn, role)?;
    // The listener's confirmation (its first frame), or the alert that refuses this side.
    let head = next_two(&mut tcp, by)?;
    if starts_record(head) {
        let record = read_record(&mut tcp, head, by)?;
        return Err(match feed(&mut conn, &record) {
            Err(e) => tls_error(e),
            Ok(()) => AuthError::Failed("the listener sent TLS data after the handshake".into()),
        });
    }
    let mut frame = [0u8; HEAD + CONFIRM_LEN];
    frame[..2].copy_from_slice(&head);
    read_by(&mut tcp, &mut frame[2..], by).map_err(closed)?;
    if open_confirmation(&theirs, &mut frame) != Some(confirmation(peer, local)) {
        return Err(AuthError::Failed(
            "the listener's confirmation did not authenticate".into(),
        ));
    }
    let stream = Stream::sealed(tcp, (mine, 0), (theirs, 1));
    saved.restore(stream.tcp())?;
    Ok((stream, Some(Peer { id: peer, role })))
}

/// [`super::accept_any`] in the certificate mode, after the preamble asked for `role`.
pub(super) fn accept(
    tcp: TcpStream,
    saved: Timeouts,
    creds: &TlsCredentials,
    role: Role,
    local: NodeId,
    by: Instant,
) -> Result<(Stream, Option<Peer>), AuthError> {
    let mut tcp = tcp;
    let server =
        rustls::ServerConnection::new(server_config(creds, role, local)?).map_err(tls_error)?;
    let mut conn = rustls::Connection::Server(server);
    drive(&mut conn, &mut tcp, by)?;
    // The verifier admitted the holder; name it for the protocol's own checks.
    let peer = match peer_identity(&conn)? {
        Identity::Member(id) => id,
        Identity::Client(_) => UNKNOWN_PEER,
    };
    let (theirs, mine) = frame_keys(&conn, role)?;
    tcp.write_all(&seal_confirmation(&mine, local, peer)?)?;
    let stream = Stream::sealed(tcp, (mine, 1), (theirs, 0));
    saved.restore(stream.tcp())?;
    Ok((stream, Some(Peer { id: peer, role })))
}

/// Whether `head` (the first bytes a dialer sent) is the certificate mode's preamble.
pub(super) fn is_preamble(head: &[u8]) -> bool {
    head.get(..6) == Some(MAGIC.as_slice())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::io::Read;
    use std::net::{Ipv4Addr, TcpListener};

    use super::super::tests::{pair, talk};
    use super::super::{accept, accept_any, connect, Credentials, Secret, SECRET_LEN};
    use super::*;
    use crate::secure::GroupCa;
    use rustls::pki_types::pem::PemObject;

    const T: Duration = Duration::from_secs(5);

    fn creds(ca: &GroupCa, who: Identity) -> Credentials {
        let issued = ca.issue(&who, 30).unwrap();
        Credentials::Certificate(Arc::new(
            TlsCredentials::from_pem(&ca.cert_pem(), &issued.cert_pem, &issued.key_pem).unwrap(),
        ))
    }

    fn group() -> GroupCa {
        GroupCa::new("test", 30).unwrap()
    }

    #[test]
    fn members_with_certificates_talk_and_learn_each_others_ids() {
        let ca = group();
        talk(
            creds(&ca, Identity::Member(2)),
            creds(&ca, Identity::Member(7)),
        );
    }

    #[test]
    fn a_dialer_with_a_certificate_of_another_ca_is_refused_on_both_sides() {
        let (ours, theirs) = (group(), GroupCa::new("other", 30).unwrap());
        let a = creds(&ours, Identity::Member(2));
        // The intruder trusts our CA (it has our public CA certificate) but its own
        // certificate comes from another CA.
        let Credentials::Certificate(trusting) = creds(&ours, Identity::Member(9)) else {
            unreachable!()
        };
        let forged = theirs.issue(&Identity::Member(7), 30).unwrap();
        let b = TlsCredentials {
            identity: Identity::Member(7),
            roots: Arc::clone(&trusting.roots),
            chain: vec![CertificateDer::from_pem_slice(forged.cert_pem.as_bytes()).unwrap()],
            key: rustls::pki_types::PrivateKeyDer::from_pem_slice(forged.key_pem.as_bytes())
                .unwrap(),
            ca: trusting.ca.clone(),
            configs: Configs::default(),
        };
        let (srv, cli) = pair(
            move |s| accept(s, &a, Role::Gms, 2, T).map(|_| ()),
            |s| super::connect(s, &b, Role::Gms, 7, None, T).map(|_| ()),
        );
        let srv = srv.unwrap_err();
        assert!(matches!(srv, AuthError::Certificate(_)), "{srv}");
        assert!(srv.to_string().contains("UnknownIssuer"), "{srv}");
        let cli = cli.unwrap_err();
        assert!(
            matches!(cli, AuthError::Rejected(_) | AuthError::Certificate(_)),
            "{cli}"
        );
    }

    #[test]
    fn a_listener_with_a_certificate_of_another_ca_is_refused_by_the_dialer() {
        let (ours, theirs) = (group(), group());
        let a = creds(&theirs, Identity::Member(2));
        let b = creds(&ours, Identity::Member(7));
        let (srv, cli) = pair(
            move |s| accept(s, &a, Role::Gms, 2, T).map(|_| ()),
            |s| connect(s, &b, Role::Gms, 7, None, T).map(|_| ()),
        );
        let cli = cli.unwrap_err();
        assert!(matches!(cli, AuthError::Certificate(_)), "{cli}");
        assert!(srv.is_err(), "the listener saw the dialer's alert");
    }

    #[test]
    fn a_valid_certificate_for_another_node_is_not_the_node_dialed() {
        let ca = group();
        let a = creds(&ca, Identity::Member(3));
        let b = creds(&ca, Identity::Member(7));
        let (_, cli) = pair(
            move |s| accept(s, &a, Role::StateTransfer, 3, T).map(|_| ()),
            |s| connect(s, &b, Role::StateTransfer, 7, Some(2), T).map(|_| ()),
        );
        assert!(
            matches!(
                cli,
                Err(AuthError::WrongPeer {
                    expected: 2,
                    got: 3
                })
            ),
            "{cli:?}"
        );
    }

    #[test]
    fn a_client_certificate_opens_the_external_port_only() {
        let ca = group();
        let m = creds(&ca, Identity::Member(1));
        let c = creds(&ca, Identity::client("viewer").unwrap());
        // Dialing a member port is refused on the client's own side, before any byte.
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let tcp = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let e = connect(tcp, &c, Role::Gms, u32::MAX, None, T).unwrap_err();
        assert!(
            matches!(e, AuthError::ClientOnly { role: Role::Gms }),
            "{e}"
        );
        // A member port that is asked for P2P by a client certificate refuses it.
        let m2 = m.clone();
        let forged = c.clone();
        let (srv, cli) = pair(
            move |s| accept_any(s, &m2, &[Role::P2p, Role::External], 1, T).map(|_| ()),
            move |s| {
                let Credentials::Certificate(tls) = &forged else {
                    unreachable!()
                };
                // Skip the client-side check to see the listener's.
                let tls = TlsCredentials {
                    identity: Identity::Member(9),
                    roots: Arc::clone(&tls.roots),
                    chain: tls.chain.clone(),
                    key: tls.key.clone_key(),
                    ca: tls.ca.clone(),
                    configs: Configs::default(),
                };
                super::connect(s, &tls, Role::P2p, 9, None, T).map(|_| ())
            },
        );
        let srv = srv.unwrap_err();
        assert!(srv.to_string().contains("client certificate"), "{srv}");
        assert!(matches!(cli, Err(AuthError::Rejected(_))), "{cli:?}");
        // The external port takes it.
        let (srv, cli) = pair(
            move |s| {
                let (mut st, peer) = accept_any(s, &m, &[Role::P2p, Role::External], 1, T).unwrap();
                let mut b = [0u8; 2];
                st.read_exact(&mut b).unwrap();
                (peer, b)
            },
            |s| {
                let (mut st, peer) = connect(s, &c, Role::External, u32::MAX, None, T).unwrap();
                st.write_all(b"hi").unwrap();
                peer
            },
        );
        assert_eq!(
            srv,
            (
                Some(Peer {
                    id: UNKNOWN_PEER,
                    role: Role::External
                }),
                *b"hi"
            )
        );
        assert_eq!(
            cli,
            Some(Peer {
                id: 1,
                role: Role::External
            })
        );
    }

    #[test]
    fn a_node_that_reaches_its_own_id_stops() {
        let ca = group();
        let a = creds(&ca, Identity::Member(4));
        let b = a.clone();
        let (srv, cli) = pair(
            move |s| accept(s, &a, Role::Fabric, 4, T).map(|_| ()),
            move |s| connect(s, &b, Role::Fabric, 4, None, T).map(|_| ()),
        );
        assert!(srv.unwrap_err().to_string().contains("own certificate"));
        assert!(cli.is_err());
    }

    #[test]
    fn the_secret_and_certificate_modes_refuse_each_other_clearly() {
        let ca = group();
        let cert = creds(&ca, Identity::Member(1));
        let secret = Credentials::Member {
            group: Secret::from_bytes([5; SECRET_LEN]),
            clients: None,
        };
        let (c2, s2) = (cert.clone(), secret.clone());
        let (srv, cli) = pair(
            move |s| accept(s, &cert, Role::Gms, 1, T).map(|_| ()),
            move |s| connect(s, &s2, Role::Gms, 2, None, T).map(|_| ()),
        );
        assert!(
            matches!(
                srv,
                Err(AuthError::OtherMode {
                    ours: "certificate",
                    theirs: "secret"
                })
            ),
            "{srv:?}"
        );
        assert!(matches!(cli, Err(AuthError::Refused)), "{cli:?}");
        let (srv, cli) = pair(
            move |s| accept(s, &secret, Role::Gms, 1, T).map(|_| ()),
            move |s| connect(s, &c2, Role::Gms, 2, None, T).map(|_| ()),
        );
        assert!(
            matches!(
                srv,
                Err(AuthError::OtherMode {
                    ours: "secret",
                    theirs: "certificate"
                })
            ),
            "{srv:?}"
        );
        assert!(matches!(cli, Err(AuthError::Refused)), "{cli:?}");
    }

    #[test]
    fn a_recorded_handshake_replayed_to_a_listener_is_refused() {
        let ca = group();
        let a = creds(&ca, Identity::Member(1));
        let b = creds(&ca, Identity::Member(2));
        // A recording relay between a real dialer and listener.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let target = listener.local_addr().unwrap();
        let relay = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let relay_addr = relay.local_addr().unwrap();
        let a2 = a.clone();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let (mut st, _) = accept(s, &a2, Role::Gms, 1, T).unwrap();
            let mut b = [0u8; 5];
            st.read_exact(&mut b).unwrap();
        });
        let recorder = std::thread::spawn(move || {
            let (mut from_dialer, _) = relay.accept().unwrap();
            let mut to_listener = TcpStream::connect(target).unwrap();
            let mut back = to_listener.try_clone().unwrap();
            let mut dialer_back = from_dialer.try_clone().unwrap();
            let pump = std::thread::spawn(move || {
                let _ = std::io::copy(&mut back, &mut dialer_back);
            });
            let mut recorded = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match from_dialer.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        recorded.extend_from_slice(&buf[..n]);
                        to_listener.write_all(&buf[..n]).unwrap();
                    }
                }
            }
            let _ = to_listener.shutdown(std::net::Shutdown::Both);
            pump.join().unwrap();
            recorded
        });
        let tcp = TcpStream::connect(relay_addr).unwrap();
        let (mut st, _) = connect(tcp, &b, Role::Gms, 2, Some(1), T).unwrap();
        st.write_all(b"hello").unwrap();
        server.join().unwrap();
        drop(st);
        let recorded = recorder.join().unwrap();
        assert!(recorded.len() > 100);
        // The same bytes, sent again to the same listener's credentials, open nothing.
        let (srv, ()) = pair(
            move |s| accept(s, &a, Role::Gms, 1, Duration::from_secs(2)).map(|_| ()),
            move |mut s| {
                let _ = s.write_all(&recorded);
                std::thread::sleep(Duration::from_millis(300));
            },
        );
        assert!(srv.is_err(), "a replayed handshake was accepted");
    }

    #[test]
    fn a_silent_dialer_is_dropped_at_the_deadline() {
        let ca = group();
        let a = creds(&ca, Identity::Member(1));
        let (srv, ()) = pair(
            move |s| {
                let t0 = Instant::now();
                let r = accept(s, &a, Role::Gms, 1, Duration::from_millis(300)).map(|_| ());
                (r, t0.elapsed())
            },
            |mut s| {
                let mut pre = MAGIC.to_vec();
                pre.extend_from_slice(&[Role::Gms as u8, 0, 22, 3]);
                s.write_all(&pre).unwrap();
                std::thread::sleep(Duration::from_millis(800));
            },
        );
        let e = srv.0.unwrap_err();
        assert!(
            matches!(&e, AuthError::Io(io) if io.kind() == io::ErrorKind::TimedOut),
            "{e}"
        );
        assert!(srv.1 < Duration::from_millis(700), "{:?}", srv.1);
    }
}
