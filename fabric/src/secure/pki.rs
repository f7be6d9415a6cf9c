//! Certificates for `[SECURITY] mode = certificate`: a group CA, the member and client
//! certificates it issues, each naming its holder, and the credentials a process loads from
//! them.
//!
//! A certificate names its holder in one subject-alternative-name URI:
//! `urn:derecho-rs:member:<node id>` for a member, `urn:derecho-rs:client:<name>` for an
//! external client. Member certificates serve both ends of a connection (server and client
//! authentication); client certificates only dial. The group's CA key signs certificates and
//! stays off the members: they hold the CA certificate, their own certificate and its key.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::RootCertStore;

use crate::NodeId;

/// The URI prefix that names a member in its certificate.
const MEMBER_URI: &str = "urn:derecho-rs:member:";
/// The URI prefix that names an external client in its certificate.
const CLIENT_URI: &str = "urn:derecho-rs:client:";
/// The longest client name a certificate may carry.
const MAX_CLIENT_NAME: usize = 64;

/// Who a certificate was issued to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A member of the group, by node id.
    Member(NodeId),
    /// An external client, by a name of letters, digits, `-`, `_` and `.`.
    Client(String),
}

impl Identity {
    /// A client identity, if `name` is usable (1 to 64 letters, digits, `-`, `_`, `.`).
    pub fn client(name: &str) -> Result<Self, CertError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_CLIENT_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Identity::Client(name.to_owned()))
        } else {
            Err(CertError::Make(format!(
                "a client name has 1 to {MAX_CLIENT_NAME} letters, digits, '-', '_' or '.': \
                 {name:?}"
            )))
        }
    }

    fn uri(&self) -> String {
        match self {
            Identity::Member(id) => format!("{MEMBER_URI}{id}"),
            Identity::Client(name) => format!("{CLIENT_URI}{name}"),
        }
    }

    fn from_uri(uri: &str) -> Option<Self> {
        if let Some(id) = uri.strip_prefix(MEMBER_URI) {
            // Digits only: `+7` or ` 7` would name the same member two ways.
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            return id.parse().ok().map(Identity::Member);
        }
        uri.strip_prefix(CLIENT_URI)
            .and_then(|name| Identity::client(name).ok())
    }

    /// The identity a certificate (DER) names: exactly one `urn:derecho-rs:` URI among its
    /// subject alternative names.
    pub fn of_certificate(der: &[u8]) -> Result<Self, CertError> {
        use x509_parser::extensions::GeneralName;
        let invalid = |what: String| CertError::Invalid {
            path: PathBuf::from("<certificate>"),
            what,
        };
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| invalid(format!("not an X.509 certificate: {e}")))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| invalid(format!("unreadable subject alternative names: {e}")))?;
        let mut found = None;
        for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
            if let GeneralName::URI(uri) = name {
                if !uri.starts_with("urn:derecho-rs:") {
                    continue;
                }
                let who = Identity::from_uri(uri)
                    .ok_or_else(|| invalid(format!("malformed identity {uri:?}")))?;
                if found.replace(who).is_some() {
                    return Err(invalid("the certificate names more than one holder".into()));
                }
            }
        }
        found.ok_or_else(|| {
            invalid(
                "the certificate names no holder (no urn:derecho-rs: URI): it was not issued \
                 by derecho-secret"
                    .into(),
            )
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Member(id) => write!(f, "member {id}"),
            Identity::Client(name) => write!(f, "client {name:?}"),
        }
    }
}

/// Why certificates could not be made, read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A private key file can be read by other users.
    #[error("the key file {path} can be read by other users (mode {mode:o}); `chmod 600` it")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file does not hold what it should, or the certificates do not fit together.
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A certificate or key could not be made.
    #[error("cannot make the certificate: {0}")]
    Make(String),
}

fn make(e: rcgen::Error) -> CertError {
    CertError::Make(e.to_string())
}

fn read_text(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a private key file, which must be readable by its owner only.
fn read_key(path: &Path) -> Result<String, CertError> {
    let exposed = super::exposed_mode(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })?;
    if let Some(mode) = exposed {
        return Err(CertError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    read_text(path)
}

/// Writes `text` to a new file (never over an existing one), mode 0600 for keys.
fn write_new(path: &Path, text: &str, private: bool) -> Result<(), CertError> {
    let wrap = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(path).map_err(wrap)?;
    f.write_all(text.as_bytes()).map_err(wrap)?;
    f.sync_all().map_err(wrap)
}

/// The longest validity a certificate may be given, in days (100 years): beyond it the end
/// date leaves the range X.509 dates can hold.
pub const MAX_DAYS: u32 = 36_525;

/// Sets the validity to `days` from now (at least one, at most [`MAX_DAYS`]).
fn validity(params: &mut rcgen::CertificateParams, days: u32) -> Result<(), CertError> {
    if days > MAX_DAYS {
        return Err(CertError::Make(format!(
            "a validity of {days} days is longer than the {MAX_DAYS} days (100 years) allowed"
        )));
    }
    let now = std::time::SystemTime::now();
    // An hour of slack for clocks that disagree a little.
    let from = now
        .checked_sub(Duration::from_secs(3600))
        .unwrap_or(std::time::UNIX_EPOCH);
    let to = now + Duration::from_secs(86_400 * u64::from(days.max(1)));
    params.not_before = from.into();
    params.not_after = to.into();
    Ok(())
}

/// A group's certificate authority: the CA certificate every member trusts and the key that
/// signs members' and clients' certificates. Keep the key off the members.
pub struct GroupCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl fmt::Debug for GroupCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCa").finish_non_exhaustive()
    }
}

impl GroupCa {
    /// A new CA for the group `group` (a name for people; it appears in every certificate),
    /// valid for `days` (at most [`MAX_DAYS`]), with a new ECDSA P-256 key.
    pub fn new(group: &str, days: u32) -> Result<Self, CertError> {
        let key = rcgen::KeyPair::generate().map_err(make)?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("derecho-rs group CA {group}"),
        );
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, group.to_owned());
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, days)?;
        let cert = params.self_signed(&key).map_err(make)?;
        Ok(GroupCa { cert, key })
    }

    /// Loads a CA from its certificate and key files (PEM), as [`GroupCa::save`] wrote them.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, CertError> {
        let invalid = |path: &Path, what: String| CertError::Invalid {
            path: path.to_owned(),
            what,
        };
        let key = rcgen::KeyPair::from_pem(&read_key(key_file)?)
            .map_err(|e| invalid(key_file, format!("not a private key in PEM: {e}")))?;
        let params = rcgen::CertificateParams::from_ca_cert_pem(&read_text(cert_file)?)
            .map_err(|e| invalid(cert_file, format!("not a CA certificate in PEM: {e}")))?;
        // Signing again with the same name and key gives a certificate that issues exactly
        // what the saved one would: issuers are matched by name and key.
        let cert = params
            .self_signed(&key)
            .map_err(|e| invalid(key_file, format!("does not fit the CA certificate: {e}")))?;
        let loaded = std::fs::read(cert_file).map_err(|source| CertError::Read {
            path: cert_file.to_owned(),
            source,
        })?;
        let saved = CertificateDer::from_pem_slice(&loaded)
            .map_err(|e| invalid(cert_file, format!("not a certificate in PEM: {e}")))?;
        let saved_key = x509_parser::parse_x509_certificate(saved.as_ref())
            .map(|(_, c)| c.public_key().raw.to_vec())
            .map_err(|e| invalid(cert_file, format!("not an X.509 certificate: {e}")))?;
        if saved_key != key.public_key_der() {
            return Err(invalid(
                key_file,
                format!(
                    "is not the key of the CA certificate {}",
                    cert_file.display()
                ),
            ));
        }
        Ok(GroupCa { cert, key })
    }

    /// Writes the CA certificate (mode 0644) and key (mode 0600) to new files.
    pub fn save(&self, cert_file: &Path, key_file: &Path) -> Result<(), CertError> {
        write_new(key_file, &self.key.serialize_pem(), true)?;
        write_new(cert_file, &self.cert.pem(), false)
    }

    /// The CA certificate in PEM, as members and clients hold it.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a certificate to `who`, valid for `days` (at most [`MAX_DAYS`]), with a new key.
    pub fn issue(&self, who: &Identity, days: u32) -> Result<Issued, CertError> {
        let key = rcgen::KeyPair::generate().map_err(make)?;
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, who.to_string());
        let uri = rcgen::Ia5String::try_from(who.uri()).map_err(make)?;
        params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        // A member both listens and dials; a client only dials, so its certificate cannot
        // stand in for a listener.
        params.extended_key_usages = match who {
            Identity::Member(_) => vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Identity::Client(_) => vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, days)?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(make)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: zeroize::Zeroizing::new(key.serialize_pem()),
        })
    }
}

/// A certificate and its new key, as [`GroupCa::issue`] made them.
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (zeroed on drop).
    pub key_pem: zeroize::Zeroizing<String>,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

impl Issued {
    /// Writes the certificate (mode 0644) and key (mode 0600) to new files.
    pub fn save(&self, cert_file: &Path, key_file: &Path) -> Result<(), CertError> {
        write_new(key_file, &self.key_pem, true)?;
        write_new(cert_file, &self.cert_pem, false)
    }
}

/// What a process holds in the certificate mode: the group CA certificate, its own
/// certificate (naming its [`Identity`]) and that certificate's key, checked against each
/// other when loaded.
pub struct TlsCredentials {
    pub(super) identity: Identity,
    pub(super) roots: Arc<RootCertStore>,
    pub(super) chain: Vec<CertificateDer<'static>>,
    pub(super) key: PrivateKeyDer<'static>,
    pub(super) ca: CertificateDer<'static>,
    /// The TLS configurations built from these credentials, kept for later connections.
    pub(super) configs: super::tls::Configs,
}

impl fmt::Debug for TlsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCredentials")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TlsCredentials {
    fn eq(&self, other: &Self) -> bool {
        self.ca == other.ca && self.chain == other.chain && self.identity == other.identity
    }
}

impl Eq for TlsCredentials {}

impl TlsCredentials {
    /// Loads the CA certificate, this process's certificate and its key (all PEM; the key
    /// file readable by its owner only) and checks that they fit: the certificate is signed
    /// by the CA, valid now, names a holder, and the key is its key.
    pub fn load(ca_file: &Path, cert_file: &Path, key_file: &Path) -> Result<Self, CertError> {
        let ca = read_text(ca_file)?;
        let cert = read_text(cert_file)?;
        let key = zeroize::Zeroizing::new(read_key(key_file)?);
        Self::from_pem_files(&ca, ca_file, &cert, cert_file, &key, key_file)
    }

    /// [`TlsCredentials::load`] from PEM text in memory.
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let p = Path::new;
        Self::from_pem_files(
            ca_pem,
            p("<CA certificate>"),
            cert_pem,
            p("<certificate>"),
            key_pem,
            p("<key>"),
        )
    }

    fn from_pem_files(
        ca_pem: &str,
        ca_file: &Path,
        cert_pem: &str,
        cert_file: &Path,
        key_pem: &str,
        key_file: &Path,
    ) -> Result<Self, CertError> {
        let invalid = |path: &Path, what: String| CertError::Invalid {
            path: path.to_owned(),
            what,
        };
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| invalid(ca_file, format!("not a certificate in PEM: {e}")))?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone())
            .map_err(|e| invalid(ca_file, format!("not a usable CA certificate: {e}")))?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(cert_file, format!("not a certificate in PEM: {e}")))?;
        let Some(leaf) = chain.first() else {
            return Err(invalid(cert_file, "holds no certificate".into()));
        };
        let identity = Identity::of_certificate(leaf.as_ref())
            .map_err(|e| invalid(cert_file, e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| invalid(key_file, format!("not a private key in PEM: {e}")))?;
        let provider = super::tls::provider();
        let signer = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| invalid(key_file, format!("not a usable key: {e}")))?;
        rustls::sign::CertifiedKey::new(chain.clone(), signer)
            .keys_match()
            .map_err(|_| {
                invalid(
                    key_file,
                    format!("is not the key of the certificate {}", cert_file.display()),
                )
            })?;
        let roots = Arc::new(roots);
        let checked = match identity {
            Identity::Member(_) => {
                let parsed = rustls::server::ParsedCertificate::try_from(leaf)
                    .map_err(|e| invalid(cert_file, format!("not a usable certificate: {e}")))?;
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &parsed,
                    &roots,
                    &chain[1..],
                    UnixTime::now(),
                    provider.signature_verification_algorithms.all,
                )
            }
            // A client certificate only dials: check it as a listener will.
            Identity::Client(_) => rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::clone(&roots),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| invalid(ca_file, format!("not a usable CA certificate: {e}")))?
            .verify_client_cert(leaf, &chain[1..], UnixTime::now())
            .map(|_| ()),
        };
        checked.map_err(|e| {
            invalid(
                cert_file,
                format!("is not valid under the CA {}: {e}", ca_file.display()),
            )
        })?;
        Ok(TlsCredentials {
            identity,
            roots,
            chain,
            key,
            ca,
            configs: super::tls::Configs::default(),
        })
    }

    /// Who the certificate names.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "derecho-pki-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_saved_ca_issues_certificates_that_load_under_it() {
        let d = dir();
        let (ca_cert, ca_key) = (d.join("ca.pem"), d.join("ca.key"));
        GroupCa::new("g", 10)
            .unwrap()
            .save(&ca_cert, &ca_key)
            .unwrap();
        // Saving never overwrites.
        assert!(GroupCa::new("g", 10)
            .unwrap()
            .save(&ca_cert, &ca_key)
            .is_err());
        let ca = GroupCa::load(&ca_cert, &ca_key).unwrap();
        let issued = ca.issue(&Identity::Member(12), 10).unwrap();
        let (cert, key) = (d.join("m.pem"), d.join("m.key"));
        issued.save(&cert, &key).unwrap();
        let creds = TlsCredentials::load(&ca_cert, &cert, &key).unwrap();
        assert_eq!(creds.identity(), &Identity::Member(12));
        let client = ca.issue(&Identity::client("cam-1").unwrap(), 10).unwrap();
        let (ccert, ckey) = (d.join("c.pem"), d.join("c.key"));
        client.save(&ccert, &ckey).unwrap();
        let c = TlsCredentials::load(&ca_cert, &ccert, &ckey).unwrap();
        assert_eq!(c.identity(), &Identity::Client("cam-1".into()));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn credentials_that_do_not_fit_are_named_in_the_error() {
        let d = dir();
        let ca = GroupCa::new("g", 10).unwrap();
        let other = GroupCa::new("h", 10).unwrap();
        let ca_file = d.join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let mine = ca.issue(&Identity::Member(1), 10).unwrap();
        let theirs = other.issue(&Identity::Member(1), 10).unwrap();
        mine.save(&d.join("1.pem"), &d.join("1.key")).unwrap();
        theirs.save(&d.join("x.pem"), &d.join("x.key")).unwrap();
        // Another CA's certificate.
        let e = TlsCredentials::load(&ca_file, &d.join("x.pem"), &d.join("x.key")).unwrap_err();
        assert!(e.to_string().contains("is not valid under the CA"), "{e}");
        // A key of another certificate.
        let e = TlsCredentials::load(&ca_file, &d.join("1.pem"), &d.join("x.key")).unwrap_err();
        assert!(
            e.to_string().contains("is not the key of the certificate"),
            "{e}"
        );
        // A key others can read.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d.join("1.key"), std::fs::Permissions::from_mode(0o644))
                .unwrap();
            let e = TlsCredentials::load(&ca_file, &d.join("1.pem"), &d.join("1.key")).unwrap_err();
            assert!(matches!(e, CertError::Exposed { .. }), "{e}");
        }
        // Not PEM at all, and a missing file.
        std::fs::write(d.join("junk.pem"), "hello").unwrap();
        let e = TlsCredentials::load(&d.join("junk.pem"), &d.join("1.pem"), &d.join("x.key"))
            .unwrap_err();
        assert!(e.to_string().contains("not a certificate"), "{e}");
        let e = TlsCredentials::load(&d.join("none.pem"), &d.join("1.pem"), &d.join("x.key"))
            .unwrap_err();
        assert!(matches!(e, CertError::Read { .. }), "{e}");
        // A CA key that is not the CA's.
        std::fs::write(d.join("ca.key"), other.key.serialize_pem()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d.join("ca.key"), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        let e = GroupCa::load(&ca_file, &d.join("ca.key")).unwrap_err();
        assert!(e.to_string().contains("is not the key of the CA"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn too_long_a_validity_is_an_error_not_a_panic() {
        let e = GroupCa::new("g", u32::MAX).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
        let ca = GroupCa::new("g", MAX_DAYS).unwrap();
        assert!(ca.issue(&Identity::Member(1), MAX_DAYS + 1).is_err());
        ca.issue(&Identity::Member(1), MAX_DAYS).unwrap();
    }

    #[test]
    fn identities_are_read_strictly() {
        assert_eq!(
            Identity::from_uri("urn:derecho-rs:member:7"),
            Some(Identity::Member(7))
        );
        for bad in [
            "urn:derecho-rs:member:",
            "urn:derecho-rs:member:+7",
            "urn:derecho-rs:member:99999999999",
            "urn:derecho-rs:client:",
            "urn:derecho-rs:client:a b",
        ] {
            assert_eq!(Identity::from_uri(bad), None, "{bad}");
        }
        assert!(Identity::client(&"x".repeat(65)).is_err());
        assert!(Identity::of_certificate(b"not a certificate").is_err());
    }
}
