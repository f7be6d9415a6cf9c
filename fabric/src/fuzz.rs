//! Bounded, seeded mutation of valid inputs, for decoders that take bytes from outside the
//! process (a testing utility for every crate of the workspace, like [`crate::conformance`]). Each target runs a fixed number of mutated inputs in the normal test suite (stable
//! Rust, deterministic for a seed); a panic is a failure that names the seed, the iteration
//! and the input in hex, so it can be kept as a regression case.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::sim::SimRng;

/// Interesting values written over a field: zero, ones, signed edges, just-too-large lengths.
const EDGES: [u64; 8] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff_ffff,
    0xffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
];

/// One mutation of `input`, drawn from `rng`.
fn mutate_once(rng: &mut SimRng, input: &mut Vec<u8>) {
    let len = input.len() as u64;
    match rng.below(8) {
        // Flip a bit.
        0 if len > 0 => {
            let i = rng.below(len) as usize;
            input[i] ^= 1 << rng.below(8);
        }
        // A random byte.
        1 if len > 0 => {
            let i = rng.below(len) as usize;
            input[i] = rng.below(256) as u8;
        }
        // An edge value over 1, 2, 4 or 8 bytes (a length or count field, little-endian).
        2 if len > 0 => {
            let width = 1usize << rng.below(4);
            let at = rng.below(len) as usize;
            let v = EDGES[rng.below(EDGES.len() as u64) as usize].to_le_bytes();
            for (k, b) in v.iter().take(width).enumerate() {
                if let Some(x) = input.get_mut(at + k) {
                    *x = *b;
                }
            }
        }
        // Cut the tail.
        3 => {
            let keep = rng.below(len + 1) as usize;
            input.truncate(keep);
        }
        // Cut a piece out of the middle.
        4 if len > 1 => {
            let a = rng.below(len) as usize;
            let b = a + rng.below(len - a as u64) as usize;
            input.drain(a..b);
        }
        // Repeat a piece.
        5 if len > 0 => {
            let a = rng.below(len) as usize;
            let n = (rng.below(64) as usize).min(input.len() - a);
            let piece: Vec<u8> = input[a..a + n].to_vec();
            let at = rng.below(len + 1) as usize;
            input.splice(at..at, piece);
        }
        // Random bytes inserted.
        6 => {
            let at = rng.below(len + 1) as usize;
            let n = 1 + rng.below(16) as usize;
            let bytes: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
            input.splice(at..at, bytes);
        }
        // Random bytes only.
        _ => {
            let n = rng.below(64) as usize;
            *input = (0..n).map(|_| rng.below(256) as u8).collect();
        }
    }
}

/// An input on which a fuzz target panicked: what [`run`] reports, with everything needed to
/// keep it as a regression case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[error(
    "{target}: seed {seed}, input {iteration} panicked ({message}); input ({} bytes): {}",
    .input.len(),
    self.input_hex()
)]
pub struct FuzzFailure {
    /// The target's name, as given to [`run`].
    pub target: String,
    /// The generator's seed.
    pub seed: u64,
    /// Which input panicked: its index in the corpus, or the corpus length plus the mutation
    /// round.
    pub iteration: usize,
    /// The input that panicked.
    pub input: Vec<u8>,
    /// The panic's message (`"<non-string panic payload>"` when it is not a string).
    pub message: String,
}

impl FuzzFailure {
    /// The input in lower-case hex, two digits a byte.
    pub fn input_hex(&self) -> String {
        self.input.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<non-string panic payload>".to_string())
}

/// Runs `target` on `iterations` inputs, each a valid input of `corpus` (chosen by the seeded
/// generator) with one to four mutations; the corpus itself runs first. Returns how many
/// inputs ran, or the first one that panicked.
pub fn run<F: Fn(&[u8])>(
    name: &str,
    seed: u64,
    corpus: &[Vec<u8>],
    iterations: usize,
    target: F,
) -> Result<usize, FuzzFailure> {
    let mut rng = SimRng::new(seed);
    let mut ran = 0;
    let mut attempt = |input: &[u8], i: usize| -> Result<(), FuzzFailure> {
        ran += 1;
        catch_unwind(AssertUnwindSafe(|| target(input))).map_err(|payload| FuzzFailure {
            target: name.to_string(),
            seed,
            iteration: i,
            input: input.to_vec(),
            message: panic_message(payload.as_ref()),
        })
    };
    for (i, c) in corpus.iter().enumerate() {
        attempt(c, i)?;
    }
    if corpus.is_empty() {
        return Ok(ran);
    }
    for i in 0..iterations {
        let mut input = corpus[rng.below(corpus.len() as u64) as usize].clone();
        for _ in 0..1 + rng.below(4) {
            mutate_once(&mut rng, &mut input);
        }
        attempt(&input, corpus.len() + i)?;
    }
    Ok(ran)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_panicking_target_is_reported_with_its_input() {
        let e = run("planted", 3, &[b"abcd".to_vec()], 1000, |b| {
            assert!(!b.is_empty(), "planted");
        })
        .unwrap_err();
        assert_eq!((e.target.as_str(), e.seed), ("planted", 3));
        assert_eq!(e.message, "planted");
        assert_eq!(e.input_hex().len(), 2 * e.input.len());
        let text = e.to_string();
        assert!(text.contains("planted: seed 3"), "{text}");
        assert!(text.contains(&e.input_hex()), "{text}");
    }

    #[test]
    fn a_run_is_the_same_for_a_seed() {
        let seen = |seed| {
            let inputs = std::cell::RefCell::new(Vec::new());
            run("same", seed, &[b"hello, world".to_vec()], 200, |b| {
                inputs.borrow_mut().push(b.to_vec());
            })
            .unwrap();
            inputs.into_inner()
        };
        assert_eq!(seen(9), seen(9));
        assert_ne!(seen(9), seen(10));
    }
}
