//! Cross-crate integration tests for derecho-rs.
//!
//! The test files under `tests/` start real processes on 127.0.0.1 (each bounded in time and
//! cleaned up on every exit path) and run deterministic simulations. [`checker`] holds the
//! checks of the correctness properties (views, virtual synchrony, total order, integrity,
//! stability) that every cluster test runs on its members' records.
#![forbid(unsafe_code)]

pub mod checker;
pub mod cluster;
pub use derecho_fabric::fuzz;
pub mod fuzz_targets;
pub mod kv;
pub mod ports;
pub mod sim;
pub mod simulate;
