//! The bundled models and sample photos: the sample photos are the ones the fixed rule picks
//! (the first of each class in the sample stream, whatever the model answers), each model's
//! recorded held-out accuracy is what it really scores, the current models classify every
//! sample photo as the label its file name starts with, and the photo generator is
//! deterministic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sospdemo::model::{Classifier, ModelFiles};
use sospdemo::train::{
    bundled_architecture, evaluate_held_out, generate_photo, write_samples, HeldOutEvaluation,
    Split, Task, TrainConfig,
};

const MAX_MODEL_BYTES: usize = 5 * 1000 * 1000;

#[test]
fn bundled_photos_are_classified_correctly() {
    for task in Task::ALL {
        let dir = sospdemo::bundled_model_dir(task);
        let files = ModelFiles::read_dir(&dir).unwrap();
        assert!(
            files.len() <= MAX_MODEL_BYTES,
            "{}: {} bytes",
            task.name(),
            files.len()
        );
        let model = Classifier::from_files(&files).unwrap();
        assert_eq!(model.labels(), task.labels());
        assert_eq!(model.architecture(), Some(&bundled_architecture(task)));

        let mut photos: Vec<_> = std::fs::read_dir(sospdemo::bundled_photo_dir(task))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        photos.sort();
        assert!(
            photos.len() >= task.labels().len(),
            "{}: too few photos",
            task.name()
        );
        for photo in photos {
            let name = photo.file_name().unwrap().to_string_lossy().into_owned();
            let truth = name.split('-').next().unwrap();
            assert!(task.labels().contains(&truth), "{name}: unknown label");
            let guess = model.classify(&std::fs::read(&photo).unwrap()).unwrap();
            assert_eq!(
                guess.label,
                truth,
                "{}/{name} (score {})",
                task.name(),
                guess.score
            );
        }
    }
}

#[test]
fn generated_photos_are_deterministic_jpegs() {
    for task in Task::ALL {
        for i in 0..task.labels().len() {
            let (class, a) = generate_photo(task, Split::HeldOut, i, 11, 96).unwrap();
            let (_, b) = generate_photo(task, Split::HeldOut, i, 11, 96).unwrap();
            let (_, c) = generate_photo(task, Split::HeldOut, i, 12, 96).unwrap();
            assert_eq!(class, i);
            assert_eq!(a, b);
            assert_ne!(a, c);
            assert_eq!(&a[..2], &[0xff, 0xd8]);
            let img = image::load_from_memory(&a).unwrap();
            assert_eq!((img.width(), img.height()), (96, 96));
        }
    }
}

#[test]
fn bundled_photos_are_the_fixed_rule_s_choice() {
    let out = std::env::temp_dir().join(format!("sospdemo-samples-{}", std::process::id()));
    let cfg = TrainConfig {
        out_dir: out.clone(),
        ..TrainConfig::default()
    };
    for task in Task::ALL {
        let written = write_samples(task, &cfg).unwrap();
        assert_eq!(written.len(), cfg.samples_per_class * task.labels().len());
        let mut bundled: Vec<_> = std::fs::read_dir(sospdemo::bundled_photo_dir(task))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        bundled.sort();
        let mut names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        names.sort();
        assert_eq!(names, bundled, "{}", task.name());
        for (i, p) in written.iter().enumerate() {
            // Photo i of the sample stream, whatever the model makes of it.
            let (class, jpeg) =
                generate_photo(task, Split::Sample, i, cfg.seed, cfg.photo_size).unwrap();
            let bytes = std::fs::read(p).unwrap();
            assert_eq!(bytes, jpeg, "{}", p.display());
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name.starts_with(&format!("{}-", task.labels()[class])),
                "{name}"
            );
            let bundled = std::fs::read(sospdemo::bundled_photo_dir(task).join(&name)).unwrap();
            assert_eq!(bundled, bytes, "{}/{name}", task.name());
        }
    }
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn recorded_held_out_accuracy_is_what_the_model_scores() {
    let cfg = TrainConfig::default();
    for task in Task::ALL {
        let dir = sospdemo::bundled_model_dir(task);
        let recorded = HeldOutEvaluation::read(&dir).unwrap().unwrap();
        let model = Classifier::from_files(&ModelFiles::read_dir(&dir).unwrap()).unwrap();
        let measured = evaluate_held_out(task, &cfg, &model).unwrap();
        assert_eq!(measured, recorded, "{}", task.name());
        assert_eq!(recorded.held_out, cfg.test_per_class * task.labels().len());
    }
}
