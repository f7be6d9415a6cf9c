//! Raw bindings to the system libibverbs, generated at build time by bindgen from an allowlist
//! (see `build.rs`). The `static inline` functions of `verbs.h` (`ibv_post_send`,
//! `ibv_poll_cq`, `ibv_req_notify_cq`, ...) are reached through C wrappers that bindgen writes
//! and `cc` compiles. The backend module wraps every call.
#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    missing_docs,
    unsafe_op_in_unsafe_fn,
    unreachable_pub,
    rust_2018_idioms,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]

include!(concat!(env!("OUT_DIR"), "/verbs_sys.rs"));
