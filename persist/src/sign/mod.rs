//! Ed25519 signatures over logs: signing keys, public keys, signatures, and
//! the chain rule a signed [`Log`](crate::Log) follows.
//!
//! This module owns the key file format (its PEM armour in the private `pem`
//! file), the signed message and the errors of both; the log's use of them
//! (storing signatures, anchors across trims, [`Log::verify`](crate::Log::verify))
//! lives in [`log`](crate::log).
//!
//! # Key file
//! A signing key file holds an Ed25519 private key as PKCS#8 in PEM
//! (`-----BEGIN PRIVATE KEY-----`, base64, `-----END PRIVATE KEY-----`), the
//! form `openssl genpkey -algorithm ed25519` writes and
//! [`generate_signing_key`] writes (PKCS#8 v2, public key included). Raw DER
//! PKCS#8 is accepted too. No password. On Unix the file must not be readable
//! or writable by group or others (mode `0600` or stricter): a key anyone on
//! the machine can read proves nothing.
//!
//! One key is shared by every replica of a shard (as in the original), so
//! that replicas write byte-identical logs and a client can check any of them
//! against one public key. Ed25519 is deterministic: the same key and message
//! always give the same signature.
//!
//! # Chain
//! Entry `i` of a signed log carries
//!
//! ```text
//! sig_i = Sign(key, TAG ‖ sig_{i-1} ‖ version ‖ hlc.rtc_us ‖ hlc.logic ‖ kind ‖ SHA-256(payload))
//! ```
//!
//! with `TAG` = [`DOMAIN_TAG`], integers little endian (`version` as `i64`,
//! the timestamp as two `u64`, `kind` one byte), and `sig_{i-1}` the signature
//! of the entry before it: the chain's anchor after a trim (the newest trimmed
//! entry's signature, kept in the log's metadata), or [`Signature::GENESIS`]
//! (64 zero bytes) for the first entry of a log, or after an unsigned entry.
//! Because each signature covers the one before, a verified newest signature
//! vouches for the whole retained history.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use derecho_persist::{generate_signing_key, pack, Hlc, Log, LogOptions, SimStorage, Signer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let key_file = dir.path().join("private_key.pem");
//! let public = generate_signing_key(&key_file)?;
//! let options = LogOptions {
//!     signer: Some(Arc::new(Signer::from_key_file(&key_file)?)),
//!     ..LogOptions::default()
//! };
//! let log = Log::open(Arc::new(SimStorage::new()), "updates", options)?;
//! log.append(pack(0, 0), Hlc::new(1, 0), 0, b"first")?;
//! log.append(pack(0, 1), Hlc::new(2, 0), 0, b"second")?;
//! assert_eq!(log.verify(&public)?, pack(0, 1));
//! assert!(log.signature(pack(0, 1))?.is_some());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::digest;
use ring::rand::SystemRandom;
use ring::signature::{self as ring_sig, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::version::{Hlc, Version};

mod pem;
use pem::{pem_decode, pem_encode};

/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// The domain-separation tag that starts every signed message, so that a log
/// signature can never be taken for a signature of anything else made with the
/// same key.
pub const DOMAIN_TAG: &[u8] = b"derecho-rs/persist/log-entry/v1\0";

/// An Ed25519 signature of a log entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; SIGNATURE_LEN]);

impl Signature {
    /// The "previous signature" of the first entry of a chain: all zeros.
    pub const GENESIS: Signature = Signature([0; SIGNATURE_LEN]);

    /// A signature from its bytes; `None` unless there are exactly
    /// [`SIGNATURE_LEN`] of them.
    pub fn from_bytes(bytes: &[u8]) -> Option<Signature> {
        <[u8; SIGNATURE_LEN]>::try_from(bytes).ok().map(Signature)
    }

    /// The signature's bytes.
    pub fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0
    }

    /// The signature in lowercase hexadecimal.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

/// An Ed25519 public key: what a reader needs to check a signed log.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    /// A public key from its bytes; `None` unless there are exactly
    /// [`PUBLIC_KEY_LEN`] of them.
    pub fn from_bytes(bytes: &[u8]) -> Option<PublicKey> {
        <[u8; PUBLIC_KEY_LEN]>::try_from(bytes).ok().map(PublicKey)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// The key in lowercase hexadecimal (its [`Display`](fmt::Display) form).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses the hexadecimal form written by [`PublicKey::to_hex`]
    /// (64 digits, either case, surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<PublicKey, KeyError> {
        let text = text.trim();
        let bad = || KeyError::BadPublicKey(format!("expected {} hex digits", 2 * PUBLIC_KEY_LEN));
        if text.len() != 2 * PUBLIC_KEY_LEN || !text.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; PUBLIC_KEY_LEN];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(PublicKey(out))
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        UnparsedPublicKey::new(&ring_sig::ED25519, &self.0)
            .verify(message, &signature.0)
            .is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<PublicKey, KeyError> {
        PublicKey::from_hex(s)
    }
}

/// A loaded signing key. Shared between logs through an `Arc` (see
/// [`LogOptions::signer`](crate::LogOptions::signer)).
pub struct Signer {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key.
        f.debug_struct("Signer")
            .field("public_key", &self.public)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from PKCS#8 DER bytes (v1, as OpenSSL writes it, or v2).
    pub fn from_pkcs8(der: &[u8]) -> Result<Signer, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| KeyError::Malformed(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let public = PublicKey::from_bytes(pair.public_key().as_ref())
            .ok_or_else(|| KeyError::Malformed("public key of the wrong length".into()))?;
        Ok(Signer { pair, public })
    }

    /// Loads the key file at `path` (see the [module docs](self) for its
    /// format and permissions).
    pub fn from_key_file(path: &Path) -> Result<Signer, KeyError> {
        let at = |e: KeyError| e.at(path);
        let bytes = std::fs::read(path).map_err(|e| at(KeyError::Io(Arc::new(e))))?;
        check_private(path).map_err(at)?;
        let der = if bytes.starts_with(b"-----BEGIN") {
            pem_decode(&bytes).map_err(at)?
        } else {
            bytes
        };
        Signer::from_pkcs8(&der).map_err(at)
    }

    /// The public key matching this signing key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        let sig = self.pair.sign(message);
        let mut out = [0u8; SIGNATURE_LEN];
        // An Ed25519 signature is always SIGNATURE_LEN bytes.
        out.copy_from_slice(&sig.as_ref()[..SIGNATURE_LEN]);
        Signature(out)
    }
}

/// Writes a new random signing key to `path` as PEM PKCS#8, readable and
/// writable by its owner only (mode `0600` on Unix), and returns its public
/// key. Refuses to replace an existing file.
pub fn generate_signing_key(path: &Path) -> Result<PublicKey, KeyError> {
    let at = |e: KeyError| e.at(path);
    let rng = SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| at(KeyError::Random))?;
    let signer = Signer::from_pkcs8(doc.as_ref()).map_err(at)?;
    let pem = pem_encode(doc.as_ref());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let io = |e: io::Error| at(KeyError::Io(Arc::new(e)));
    let mut file = options.open(path).map_err(io)?;
    file.write_all(pem.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(signer.public_key())
}

/// The public key of the signing key file at `path` (what clients need to
/// verify the logs it signs).
pub fn public_key_of(path: &Path) -> Result<PublicKey, KeyError> {
    Signer::from_key_file(path).map(|s| s.public_key())
}

/// The message signed for an entry (see the [module docs](self#chain)).
pub fn chain_message(
    previous: &Signature,
    version: Version,
    hlc: Hlc,
    kind: u8,
    payload: &[u8],
) -> Vec<u8> {
    let hash = digest::digest(&digest::SHA256, payload);
    let mut m = Vec::with_capacity(DOMAIN_TAG.len() + SIGNATURE_LEN + 25 + hash.as_ref().len());
    m.extend_from_slice(DOMAIN_TAG);
    m.extend_from_slice(&previous.0);
    m.extend_from_slice(&version.to_le_bytes());
    m.extend_from_slice(&hlc.rtc_us.to_le_bytes());
    m.extend_from_slice(&hlc.logic.to_le_bytes());
    m.push(kind);
    m.extend_from_slice(hash.as_ref());
    m
}

/// A signing key or public key that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("{0}")]
    Io(Arc<io::Error>),
    /// The key file is readable or writable by group or others.
    #[error("the key file has mode {0:04o}; it must be readable by its owner only (chmod 600)")]
    Permissions(u32),
    /// The key file is not a PEM or DER Ed25519 PKCS#8 key.
    #[error("{0}")]
    Malformed(String),
    /// The system random generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A public key given as text is not 64 hexadecimal digits.
    #[error("bad public key: {0}")]
    BadPublicKey(String),
    /// Any of the above, for the key file `path`.
    #[error("signing key `{}`: {source}", .path.display())]
    File {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<KeyError>,
    },
}

impl KeyError {
    fn at(self, path: &Path) -> KeyError {
        KeyError::File {
            path: path.to_path_buf(),
            source: Box::new(self),
        }
    }

    /// True when the key file does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            KeyError::Io(e) => e.kind() == io::ErrorKind::NotFound,
            KeyError::File { source, .. } => source.is_not_found(),
            _ => false,
        }
    }
}

/// Refuses a key file that group or others may read or write.
fn check_private(path: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| KeyError::Io(Arc::new(e)))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions(mode & 0o7777));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn public_keys_print_and_parse() {
        let k = PublicKey::from_bytes(&[0xab; PUBLIC_KEY_LEN]).unwrap();
        assert_eq!(k.to_string().len(), 64);
        assert_eq!(k.to_string().parse::<PublicKey>().unwrap(), k);
        assert_eq!(PublicKey::from_hex(&k.to_hex().to_uppercase()).unwrap(), k);
        assert!(PublicKey::from_hex("abcd").is_err());
        assert!(PublicKey::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn messages_cover_every_input() {
        let base = chain_message(&Signature::GENESIS, 1, Hlc::new(2, 3), 4, b"p");
        assert!(base.starts_with(DOMAIN_TAG));
        let other_prev = Signature::from_bytes(&[1; SIGNATURE_LEN]).unwrap();
        for changed in [
            chain_message(&other_prev, 1, Hlc::new(2, 3), 4, b"p"),
            chain_message(&Signature::GENESIS, 9, Hlc::new(2, 3), 4, b"p"),
            chain_message(&Signature::GENESIS, 1, Hlc::new(9, 3), 4, b"p"),
            chain_message(&Signature::GENESIS, 1, Hlc::new(2, 9), 4, b"p"),
            chain_message(&Signature::GENESIS, 1, Hlc::new(2, 3), 9, b"p"),
            chain_message(&Signature::GENESIS, 1, Hlc::new(2, 3), 4, b"q"),
        ] {
            assert_ne!(changed, base);
        }
    }
}
