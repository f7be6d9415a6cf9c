//! gRPC definitions of the sospdemo service.
//!
//! This crate will hold the `FunctionTierService` protocol (`Whatsthis`, `InstallModel`,
//! `RemoveModel`: a metadata message followed by 32 KiB data chunks) and the tonic code generated
//! from it at build time without a system `protoc`.
#![forbid(unsafe_code)]
