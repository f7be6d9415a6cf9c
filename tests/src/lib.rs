//! Cross-crate integration tests for derecho-rs.
//!
//! The test files under `tests/` start real processes on 127.0.0.1 (each bounded in time and
//! cleaned up on every exit path) and run deterministic simulations. This library will hold the
//! shared pieces: process guards, cluster launchers, and the checkers of the correctness
//! properties (views, virtual synchrony, total order, integrity, stability).
#![forbid(unsafe_code)]
