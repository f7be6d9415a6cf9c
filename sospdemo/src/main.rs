//! sospdemo: the image-classification service built on derecho-rs.
//!
//! The finished program has a gRPC function tier that accepts photos and models from clients and
//! forwards them to a sharded categorizer tier running CNN inference on the CPU; its modes are
//! `server`, `client` and `demo` (a local cluster that installs the bundled models and classifies
//! the bundled photos). Until those land it only says so.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("sospdemo: the service is not built yet; see README.md for what works today");
    std::process::exit(2);
}
