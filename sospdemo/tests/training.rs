//! The training loop on a tiny budget: it writes a loadable model and sample photos, and the
//! same seed gives the same weights.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sospdemo::model::{Classifier, ModelFiles};
use sospdemo::train::{train_task, Task, TrainConfig};

fn tiny(out: &str, seed: u64) -> TrainConfig {
    TrainConfig {
        out_dir: std::env::temp_dir().join(format!("sospdemo-train-{}-{out}", std::process::id())),
        seed,
        tasks: vec![Task::Pets],
        train_per_class: 6,
        test_per_class: 2,
        epochs: 2,
        batch_size: 10,
        photo_size: 64,
        samples_per_class: 1,
        ..TrainConfig::default()
    }
}

#[test]
fn tiny_training_run_is_reproducible() {
    let (a, b) = (tiny("a", 5), tiny("b", 5));
    let ra = train_task(Task::Pets, &a).unwrap();
    let rb = train_task(Task::Pets, &b).unwrap();
    assert_eq!(ra.held_out, 10);
    assert_eq!(ra.correct, rb.correct);

    let fa = ModelFiles::read_dir(&ra.model_dir).unwrap();
    let fb = ModelFiles::read_dir(&rb.model_dir).unwrap();
    assert_eq!(fa, fb, "same seed, same model files");
    let model = Classifier::from_files(&fa).unwrap();
    assert_eq!(model.labels(), Task::Pets.labels());
    // Every written sample is named after a label and classified as that label.
    for p in &ra.samples {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let guess = model.classify(&std::fs::read(p).unwrap()).unwrap();
        assert!(name.starts_with(&format!("{}-", guess.label)), "{name}");
    }
    for cfg in [a, b] {
        std::fs::remove_dir_all(cfg.out_dir).unwrap();
    }
}
