//! gRPC definitions of the sospdemo service.
//!
//! The `FunctionTierService` protocol (`proto/function_tier.proto`) is compiled at build time
//! by `protox` and `tonic-prost-build`, so no system `protoc` is needed. Its messages, the
//! generated client ([`function_tier_service_client`]) and server
//! ([`function_tier_service_server`]) are re-exported at the crate root.
//!
//! Photos and models travel as a stream: one metadata message, then slices of the payload
//! ([`CHUNK_SIZE`] bytes each when sent by [`photo_requests`] or [`install_model_requests`]).
//! [`PhotoAssembler`] and [`ModelAssembler`] check such a stream on the receiving side: the
//! metadata comes first and only once, and the slices add up to exactly the declared sizes.
//!
//! This crate owns the wire format only; routing, replication and inference live in `sospdemo`.
#![forbid(unsafe_code)]

mod stream;

pub use stream::{
    install_model_requests, photo_requests, ModelAssembler, PhotoAssembler, StreamError,
    UploadedModel, UploadedPhoto, CHUNK_SIZE, DEFAULT_MAX_MODEL_SIZE, DEFAULT_MAX_PHOTO_SIZE,
};

/// Code generated from `proto/function_tier.proto` (package `sospdemo`).
#[allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
mod generated {
    tonic::include_proto!("sospdemo");
}

pub use generated::*;

/// The function tier's gRPC port of node `id` is `FUNCTION_TIER_GRPC_PORT_BASE + id`.
pub const FUNCTION_TIER_GRPC_PORT_BASE: u16 = 28000;
