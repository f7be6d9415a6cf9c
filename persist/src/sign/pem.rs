//! The PEM armour of a PKCS#8 key file: a `PRIVATE KEY` block of base64 (RFC 7468), written
//! and read without a dependency. Only what key files need: the standard alphabet, padding,
//! any whitespace between characters.

use super::KeyError;

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `der` as a PEM `PRIVATE KEY` block, 64 base64 characters a line.
pub(super) fn pem_encode(der: &[u8]) -> String {
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(BASE64[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("{PEM_BEGIN}\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(PEM_END);
    out.push('\n');
    out
}

/// The DER bytes of the first PEM `PRIVATE KEY` block of `text`.
pub(super) fn pem_decode(text: &[u8]) -> Result<Vec<u8>, KeyError> {
    let bad = |why: &str| KeyError::Malformed(format!("bad PEM: {why}"));
    let text = std::str::from_utf8(text).map_err(|_| bad("not text"))?;
    let start = text
        .find(PEM_BEGIN)
        .ok_or_else(|| bad("expected a `-----BEGIN PRIVATE KEY-----` line (PKCS#8)"))?
        + PEM_BEGIN.len();
    let len = text[start..]
        .find(PEM_END)
        .ok_or_else(|| bad("no `-----END PRIVATE KEY-----` line"))?;
    let mut out = Vec::with_capacity(len * 3 / 4);
    let (mut acc, mut bits, mut padding) = (0u32, 0u32, 0usize);
    for c in text[start..start + len].bytes() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            padding += 1;
            continue;
        }
        if padding > 0 {
            return Err(bad("data after padding"));
        }
        let v = BASE64
            .iter()
            .position(|&b| b == c)
            .ok_or_else(|| bad("not base64"))?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if padding > 2 || bits >= 6 {
        return Err(bad("truncated base64"));
    }
    Ok(out)
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
