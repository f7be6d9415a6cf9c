//! The PEM armour of a PKCS#8 key file: one `PRIVATE KEY` block (RFC 7468), through the
//! `pem` crate.

use super::KeyError;

/// The PEM label of a PKCS#8 private key.
const LABEL: &str = "PRIVATE KEY";

/// `der` as a PEM `PRIVATE KEY` block.
pub(super) fn pem_encode(der: &[u8]) -> String {
    let unix = ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF);
    ::pem::encode_config(&::pem::Pem::new(LABEL, der.to_vec()), unix)
}

/// The DER bytes of the first PEM block of `text`, which must be a `PRIVATE KEY`.
pub(super) fn pem_decode(text: &[u8]) -> Result<Vec<u8>, KeyError> {
    let block = ::pem::parse(text).map_err(|e| KeyError::Malformed(format!("bad PEM: {e}")))?;
    if block.tag() != LABEL {
        return Err(KeyError::Malformed(format!(
            "bad PEM: a {} block, not a {LABEL}",
            block.tag()
        )));
    }
    Ok(block.into_contents())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::sign::Signer;

    #[test]
    fn pem_round_trips_every_length() {
        for n in 0..70u8 {
            let der: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            let pem = pem_encode(&der);
            assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
            assert_eq!(pem_decode(pem.as_bytes()).unwrap(), der, "length {n}");
        }
        assert!(
            pem_decode(b"-----BEGIN PRIVATE KEY-----\n%%%%\n-----END PRIVATE KEY-----\n").is_err()
        );
        assert!(pem_decode(b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n").is_err());
    }

    #[test]
    fn pem_decodes_openssl_output() {
        // The layout `openssl genpkey -algorithm ed25519` writes (PKCS#8 v1, no public key)
        // around the secret key of RFC 8032's first test vector.
        let pem = b"-----BEGIN PRIVATE KEY-----\n\
                    MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
                    -----END PRIVATE KEY-----\n";
        let signer = Signer::from_pkcs8(&pem_decode(pem).unwrap()).unwrap();

        assert_eq!(
            signer.public_key().to_hex(),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
    }
}
