//! The shared state table (SST).
//!
//! One row per member of the current view, laid out identically in every process. A node writes
//! only its own row, locally, and pushes byte ranges of it to its peers with one-sided writes
//! through [`derecho_fabric`]; reading any row is a local memory read. Rows hold plain data
//! declared in a schema with fixed offsets (counters, flags, fixed arrays, byte areas for the
//! small-message ring). Predicates over the local copy of the table are evaluated by a core loop
//! that parks when idle and is woken by the fabric. A failed member's row is frozen.
//!
//! This crate will hold: the schema builder, the table and its push operations, the predicate
//! engine and its core loop, heartbeat-based failure detection, and the TCP barrier used at view
//! boundaries. It must not know about views, subgroups or messages: those live in `derecho`.
#![forbid(unsafe_code)]
