//! Raw bindings to the system libfabric, generated at build time by bindgen from an allowlist
//! (see `build.rs`). The `static inline` functions of the headers (most of the data path:
//! `fi_write*`, `fi_cq_*`, `fi_mr_reg`, `fi_connect`, ...) are reached through C wrappers that
//! bindgen writes and `cc` compiles. Nothing here is safe to call without reading libfabric's
//! documentation; the backend module wraps every call.
#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unsafe_op_in_unsafe_fn,
    missing_docs,
    unreachable_pub,
    rust_2018_idioms,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]

include!(concat!(env!("OUT_DIR"), "/libfabric_sys.rs"));

/// `FI_VERSION(major, minor)` (a macro in `fabric.h`).
pub const fn fi_version_of(major: u32, minor: u32) -> u32 {
    (major << 16) | minor
}

/// `FI_ADDR_UNSPEC` (a macro with a cast, which bindgen does not translate).
pub const FI_ADDR_UNSPEC_: u64 = u64::MAX;
