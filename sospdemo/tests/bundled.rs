//! The bundled models and sample photos: every sample photo is classified as the label its
//! file name starts with, and the photo generator is deterministic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sospdemo::model::{Classifier, ModelFiles};
use sospdemo::train::{bundled_architecture, generate_photo, Split, Task};

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
