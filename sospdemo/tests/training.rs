//! The training loop on a tiny budget: it writes a loadable model, its held-out evaluation and
//! sample photos chosen by the fixed rule, and the same seed gives the same weights.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sospdemo::model::{Classifier, ModelFiles};
use sospdemo::train::{generate_photo, train_task, HeldOutEvaluation, Split, Task, TrainConfig};

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
    // The samples are the first photo of each class in the sample stream, chosen without
    // asking the model; how many it gets right is counted, not arranged.
    let mut correct = 0;
    for (i, p) in ra.samples.iter().enumerate() {
        let (class, jpeg) = generate_photo(Task::Pets, Split::Sample, i, 5, 64).unwrap();
        let bytes = std::fs::read(p).unwrap();
        assert_eq!(bytes, jpeg);
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name, format!("{}-1.jpg", Task::Pets.labels()[class]));
        if model.classify(&bytes).unwrap().label == Task::Pets.labels()[class] {
            correct += 1;
        }
    }
    assert_eq!(ra.samples.len(), Task::Pets.labels().len());
    assert_eq!(ra.samples_correct, correct);
    // The held-out evaluation is recorded next to the model.
    let recorded = HeldOutEvaluation::read(&ra.model_dir).unwrap().unwrap();
    assert_eq!(
        (recorded.correct, recorded.held_out),
        (ra.correct, ra.held_out)
    );
    assert_eq!(recorded.seed, 5);
    for cfg in [a, b] {
        std::fs::remove_dir_all(cfg.out_dir).unwrap();
    }
}
