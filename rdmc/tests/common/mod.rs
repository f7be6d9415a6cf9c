//! Pieces shared by the engine tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use derecho_rdmc::{Handler, Message, RdmcError};

/// Deterministic message contents for (message number, length).
pub fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ len as u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Records what a member receives; drops each message at once (releasing its slot).
#[derive(Default)]
pub struct Collect {
    /// (message number, bytes) of every message, in arrival order.
    pub got: Mutex<Vec<(u64, Vec<u8>)>>,
    /// Every failure the group reported.
    pub failures: Mutex<Vec<String>>,
}

impl Handler for Collect {
    fn on_message(&self, m: Message) {
        self.got.lock().unwrap().push((m.seq(), m.to_vec()));
    }
    fn on_failure(&self, e: &RdmcError) {
        self.failures.lock().unwrap().push(e.to_string());
    }
}

impl Collect {
    /// Messages received so far.
    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Asserts that exactly `sizes.len()` messages arrived, in order, with their exact bytes.
    pub fn verify(&self, who: usize, sizes: &[usize]) {
        let got = self.got.lock().unwrap();
        assert_eq!(
            got.len(),
            sizes.len(),
            "member {who} got {} of {} messages",
            got.len(),
            sizes.len()
        );
        for (i, ((seq, bytes), len)) in got.iter().zip(sizes).enumerate() {
            assert_eq!(*seq, i as u64, "member {who}: messages out of order");
            assert!(
                *bytes == payload(i as u64, *len),
                "member {who}: message {i} ({len} bytes) corrupted"
            );
        }
    }
}
