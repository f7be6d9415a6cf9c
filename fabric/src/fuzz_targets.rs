//! The checks of one input for every frame decoder of this crate that reads bytes from a peer,
//! with the valid inputs their mutations start from.
//!
//! Each check decodes the input the way the backend does and returns; the decoder may refuse
//! it, but must not panic. The same functions run in two places: the seeded mutation tests of
//! the normal suite ([`crate::fuzz::run`], stable Rust) and the cargo-fuzz targets of the
//! repository's `fuzz/` directory (nightly, coverage-guided), so both hunt with one body.
//!
//! The decoders themselves stay private to the crate; these functions are the only way in
//! from outside it.

use std::path::{Component, Path};

use crate::shm::wire as shm;
use crate::side_channel::frame::{self, Message};
use crate::tcp::wire::{kind, Answer, Header, Hello, FLAG_IMM, HEADER_LEN};

/// The valid tcp frame header that [`tcp_headers`] inputs are mutated from: a WRITE with an
/// immediate.
pub fn tcp_corpus() -> Vec<Vec<u8>> {
    let h = Header {
        kind: kind::WRITE,
        flags: FLAG_IMM,
        word: 7,
        a: 1,
        b: 2,
        c: 3,
    };
    vec![h.encode().to_vec()]
}

/// Checks one input of the tcp backend's fixed 32-byte records: its first 32 bytes (zero
/// padded) are decoded as a frame header, a hello and an answer to a hello, as a connection
/// reads them from whichever process reached the port.
pub fn tcp_headers(data: &[u8]) {
    let mut buf = [0u8; HEADER_LEN];
    let n = data.len().min(HEADER_LEN);
    buf[..n].copy_from_slice(&data[..n]);
    let _ = Header::decode(&buf);
    let _ = Hello::decode(&buf);
    let _ = Answer::decode(&buf);
}

/// A valid stream of the sealed frames every authenticated connection carries after its
/// handshake (`[SECURITY] mode = secret` or `certificate`), under a fixed key.
pub fn sealed_corpus() -> Vec<Vec<u8>> {
    crate::secure::sealed_corpus()
}

/// Checks one input of the sealed-frame reader of authenticated connections (the bytes a
/// peer or anyone on the path sends after the handshake): it is read under the corpus's key
/// in reads of varying sizes; the reader may refuse it but must not panic, and must hand out
/// nothing but the sealed plaintext, in order.
pub fn sealed_frames(data: &[u8]) {
    crate::secure::check_sealed_stream(data);
}

/// The side-channel dialect [`side_channel_frames`] reads: three fields, bodies of at most 64
/// bytes, kinds 1 to 6.
type Dialect = Message<3, 64, 6>;

/// Valid messages of every kind of the dialect [`side_channel_frames`] reads, each with flags
/// and a body of its own length.
pub fn side_channel_corpus() -> Vec<Vec<u8>> {
    (1..=6)
        .map(|k| {
            Dialect::new(k, 0xdead, [1, u64::MAX, 3])
                .with_flags(k)
                .with_body(&[k; 40][..usize::from(k) * 6])
                .encode()
        })
        .collect()
}

/// Checks one input of the side channel's common framing (header, length, body) that every
/// backend's dialect shares: decoded as one message of a three-field dialect and as a
/// four-field header with a body of up to 1 KiB.
pub fn side_channel_frames(data: &[u8]) {
    let _ = Dialect::read_from(&mut &data[..]);
    let _ = frame::read::<4>(&mut &data[..], 1..=9, 1024);
}

/// A valid conversation of the shm backend's side channel, one stream per entry: a hello, a
/// welcome, a lookup with its answers (found and not found), and a goodbye.
pub fn shm_corpus() -> Vec<Vec<u8>> {
    let inbox = b"derecho-shm-4242-1-00000000000000aa-inbox";
    let hello = shm::Msg::new(
        shm::kind::HELLO,
        shm::MAGIC,
        [1 | 2 << 32, 9, 1 << 32 | 4242],
    )
    .with_body(inbox);
    let welcome = shm::Msg::new(shm::kind::WELCOME, shm::MAGIC, [2, 9, 1 << 32 | 4243])
        .with_flags(shm::ACCEPTED)
        .with_body(inbox);
    let query = shm::Msg::new(shm::kind::QUERY, 5, [3, 0, 0]);
    let found = shm::Msg::new(shm::kind::ANSWER, 5, [3, 77, 4096])
        .with_flags(shm::FOUND)
        .with_body(b"derecho-shm-4243-2-00000000000000bb-r3");
    let missing = shm::Msg::new(shm::kind::ANSWER, 6, [4, 0, 0]);
    let goodbye = shm::Msg::new(shm::kind::GOODBYE, 0, [0; 3]);
    vec![
        [hello.encode(), welcome.encode()].concat(),
        [
            query.encode(),
            found.encode(),
            missing.encode(),
            goodbye.encode(),
        ]
        .concat(),
        welcome.with_flags(shm::BUSY).encode(),
    ]
}

/// Checks one input of the shm backend's side channel, read as the stream a link receives:
/// messages one after the other until one is refused. Each message is also read the ways the
/// handshake reads it (a hello's node ids, a welcome's verdict), and a file name it carries
/// that passes the backend's check must name a file directly inside the shared directory.
pub fn shm_side_channel(data: &[u8]) {
    let _ = shm::Msg::read_expecting(&mut &data[..], shm::kind::HELLO, shm::MAGIC);
    let mut input = data;
    while let Ok(m) = shm::Msg::read_from(&mut input) {
        let _ = m.hello_nodes();
        let _ = m.verdict();
        let name = String::from_utf8_lossy(&m.body);
        if crate::shm::mapping::valid_name(&name) {
            let mut parts = Path::new(name.as_ref()).components();
            assert!(
                matches!(
                    (parts.next(), parts.next()),
                    (Some(Component::Normal(_)), None)
                ),
                "{name:?} passed the file name check but leaves the shared directory"
            );
        }
    }
}

/// The RDMA-style backends' side-channel dialect (libfabric and verbs share it): valid
/// messages it starts from, a hello with connection data and an answer with its payload.
#[cfg(any(feature = "libfabric", feature = "verbs"))]
pub fn rdma_corpus() -> Vec<Vec<u8>> {
    use crate::rdma::wire as rdma;
    let hello = rdma::Msg::new(
        rdma::kind::HELLO,
        rdma::MAGIC,
        [1 | 2 << 32, 9, rdma::VERSION, 0],
    )
    .with_body(&[0x5a; 56]);
    let answer = rdma::Msg::new(rdma::kind::ANSWER, 4, [3, 77, 0x1000, 4096])
        .with_flags(rdma::FOUND)
        .with_body(&[1, 0, 0, 0, 0, 0, 0, 0]);
    let revoke = rdma::Msg::new(rdma::kind::REVOKE, 0, [77, 0, 0, 0]);
    vec![hello.encode(), [answer.encode(), revoke.encode()].concat()]
}

/// Checks one input of the RDMA-style backends' side channel, read as a link's stream of
/// messages, each also read as a hello and a welcome are.
#[cfg(any(feature = "libfabric", feature = "verbs"))]
pub fn rdma_side_channel(data: &[u8]) {
    use crate::rdma::wire as rdma;
    let mut input = data;
    while let Ok(m) = rdma::Msg::read_from(&mut input) {
        let _ = m.hello_nodes();
        let _ = m.verdict();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_shm_corpus_is_read_whole() {
        for stream in shm_corpus() {
            let mut input = &stream[..];
            while !input.is_empty() {
                shm::Msg::read_from(&mut input).unwrap();
            }
        }
    }

    #[test]
    fn mutated_sealed_streams_hand_out_nothing_unsealed() {
        crate::fuzz::run("sealed frames", 9, &sealed_corpus(), 20_000, sealed_frames)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The shm side channel carries file names from any process that reaches its port:
    /// mutated conversations give messages or an error, never a panic, and no accepted name
    /// leaves the shared directory.
    #[test]
    fn mutated_shm_conversations_never_panic() {
        crate::fuzz::run(
            "shm side channel",
            7,
            &shm_corpus(),
            100_000,
            shm_side_channel,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    #[cfg(any(feature = "libfabric", feature = "verbs"))]
    #[test]
    fn mutated_rdma_conversations_never_panic() {
        crate::fuzz::run(
            "rdma side channel",
            8,
            &rdma_corpus(),
            100_000,
            rdma_side_channel,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}
