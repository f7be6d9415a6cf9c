//! sospdemo: the image-classification service built on derecho-rs.
//!
//! The program has a gRPC function tier that accepts photos and models from clients and
//! forwards them to a sharded categorizer tier running CNN inference on the CPU. This crate
//! holds:
//!
//! * [`model`]: the inference engine (run with candle on the CPU) and the three-file model
//!   format: our ResNets (torchvision parameter names) or MXNet exports loaded unchanged;
//! * [`batch`]: the categorizer's batching of concurrent photos for one model into one
//!   forward pass;
//! * [`service`]: the function tier's gRPC front end over any [`service::Categorizers`]
//!   implementation, and the server that runs it ([`service::serve`]);
//! * [`tiers`]: the two replicated types (the function tier and the categorizer tier, whose
//!   replicated state is the installed models) and the routing of requests between them;
//! * [`server`]: `sospdemo server`, one member of the group;
//! * [`client`]: the blocking client used by `sospdemo client` and the demo;
//! * [`demo`]: `sospdemo demo`, which starts a local cluster and runs the bundled photos
//!   through it;
//! * [`fuzz_targets`]: the check of one input for each decoder of client bytes (upload
//!   streams, photos, model files), shared by the seeded tests and the cargo-fuzz targets;
//! * [`train`]: the procedural photo generator and the training loop that produce the bundled
//!   models under `sospdemo/models/` and the sample photos under `sospdemo/photos/`.
#![forbid(unsafe_code)]

pub mod batch;
pub mod client;
pub mod demo;
pub mod fuzz_targets;
pub mod model;
pub mod server;
pub mod service;
pub mod tiers;
pub mod train;

use std::path::PathBuf;

/// The folder holding the bundled `models/` and `photos/` (this crate's source folder).
pub fn bundled_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled model of a task: `<crate>/models/<task>/`.
pub fn bundled_model_dir(task: train::Task) -> PathBuf {
    train::model_dir(&bundled_dir(), task)
}

/// The bundled sample photos of a task: `<crate>/photos/<task>/`.
pub fn bundled_photo_dir(task: train::Task) -> PathBuf {
    bundled_dir().join("photos").join(task.name())
}
