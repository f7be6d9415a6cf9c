//! Batched inference gives the answers of one-at-a-time inference: on the bundled models and on
//! the MXNet fixture networks, photos classified together (in one `classify_many`, and from
//! concurrent callers) get the label, class and score they get alone; a bad photo in a batch
//! fails only its own request.
//!
//! The bundled models' scores come out bit for bit the same; the MXNet fixtures' can differ in
//! the seventh significant digit, which the comparison allows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sospdemo::batch::{BatchClassifyError, BatchConfig, BatchedClassifier};
use sospdemo::model::{Classifier, Guess, ModelError, ModelFiles};
use sospdemo::train::Task;

fn photos_in(dir: PathBuf) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// The bundled models with their photos, and every MXNet fixture network with the bundled
/// photos of both tasks.
fn models() -> Vec<(String, Classifier, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    for task in [Task::Flowers, Task::Pets] {
        out.push((
            task.name().to_owned(),
            Classifier::load_dir(&sospdemo::bundled_model_dir(task)).unwrap(),
            photos_in(sospdemo::bundled_photo_dir(task)),
        ));
    }
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/mxnet");
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("expected.json")).unwrap()).unwrap();
    let mut nets: Vec<(&String, &Value)> = expected["nets"].as_object().unwrap().iter().collect();
    nets.sort_by_key(|(name, _)| name.as_str());
    let mut photos = photos_in(sospdemo::bundled_photo_dir(Task::Flowers));
    photos.extend(photos_in(sospdemo::bundled_photo_dir(Task::Pets)));
    for (name, net) in nets {
        let files = ModelFiles::read(
            &fixtures.join("synset.txt"),
            &fixtures.join(net["symbol"].as_str().unwrap()),
            &fixtures.join(net["params"].as_str().unwrap()),
        )
        .unwrap();
        out.push((
            format!("mxnet {name}"),
            Classifier::from_files(&files).unwrap(),
            photos.clone(),
        ));
    }
    out
}

fn alone(classifier: &Classifier, photos: &[Vec<u8>]) -> Vec<Guess> {
    photos
        .iter()
        .map(|p| classifier.classify(p).unwrap())
        .collect()
}

/// Same label and class; the same score up to float rounding. (Our ResNets give bit-identical
/// scores; an MXNet graph's dense layer may sum in another order when its row count changes,
/// which moves the score in the seventh digit.)
fn assert_same(what: &str, batched: &Guess, single: &Guess) {
    assert_eq!(batched.label, single.label, "{what}");
    assert_eq!(batched.class, single.class, "{what}");
    assert!(
        (batched.score - single.score).abs() <= 1e-5,
        "{what}: score {} batched, {} alone",
        batched.score,
        single.score
    );
}

#[test]
fn photos_classified_together_get_their_answers_alone() {
    for (name, classifier, photos) in models() {
        let expected = alone(&classifier, &photos);
        let config = BatchConfig::default().with_max_batch(8);
        let batched = BatchedClassifier::new(&name, Arc::new(classifier), config).unwrap();
        let got = batched.classify_many(&photos);
        assert_eq!(got.len(), photos.len());
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            let g = g.as_ref().unwrap();
            assert_same(&format!("{name}, photo {i}"), g, e);
            if !name.starts_with("mxnet") {
                assert_eq!(g.score.to_bits(), e.score.to_bits(), "{name}, photo {i}");
            }
        }
    }
}

#[test]
fn concurrent_callers_get_their_own_answers() {
    for (name, classifier, photos) in models().into_iter().take(3) {
        let expected = alone(&classifier, &photos);
        // A long wait makes the callers share batches; the answers must not depend on it.
        let config = BatchConfig::default()
            .with_max_batch(4)
            .with_max_wait(Duration::from_millis(20));
        let batched =
            Arc::new(BatchedClassifier::new(&name, Arc::new(classifier), config).unwrap());
        let callers: Vec<_> = photos
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, p)| {
                let b = Arc::clone(&batched);
                std::thread::spawn(move || (i, b.classify(&p).unwrap()))
            })
            .collect();
        for c in callers {
            let (i, g) = c.join().unwrap();
            assert_same(&format!("{name}, photo {i}"), &g, &expected[i]);
        }
    }
}

#[test]
fn a_bad_photo_fails_alone() {
    let (name, classifier, mut photos) = models().swap_remove(0);
    let expected = alone(&classifier, &photos);
    photos.insert(1, b"not a photo at all".to_vec());
    let batched =
        BatchedClassifier::new(&name, Arc::new(classifier), BatchConfig::default()).unwrap();
    let got = batched.classify_many(&photos);
    assert!(
        matches!(
            &got[1],
            Err(BatchClassifyError::Model(ModelError::NotAPhoto(_)))
        ),
        "{:?}",
        got[1]
    );
    let good: Vec<&Guess> = got
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, g)| g.as_ref().unwrap())
        .collect();
    for (i, (g, e)) in good.iter().zip(&expected).enumerate() {
        assert_same(&format!("photo {i}"), g, e);
    }
}

#[test]
fn batching_off_still_answers() {
    let (name, classifier, photos) = models().swap_remove(1);
    let expected = alone(&classifier, &photos);
    let batched =
        BatchedClassifier::new(&name, Arc::new(classifier), BatchConfig::unbatched()).unwrap();
    for (p, e) in photos.iter().zip(&expected) {
        assert_same(&name, &batched.classify(p).unwrap(), e);
    }
}

/// The categorizer's replica answers a `ClassifyBatch` photo by photo (a bad photo fails
/// alone) and refuses a batch larger than `MAX_BATCH` as a whole.
#[test]
fn the_categorizer_answers_a_batch_photo_by_photo() {
    use derecho::rpc::Replicated;
    use sospdemo::batch::MAX_BATCH;
    use sospdemo::tiers::{CategorizerQuery, CategorizerReply, CategorizerTier, CategorizerUpdate};

    let mut tier = CategorizerTier::new(BatchConfig::default());
    let files = ModelFiles::read_dir(&sospdemo::bundled_model_dir(Task::Pets)).unwrap();
    let expected = alone(
        &Classifier::from_files(&files).unwrap(),
        &photos_in(sospdemo::bundled_photo_dir(Task::Pets)),
    );
    assert!(matches!(
        tier.apply(CategorizerUpdate::Install {
            tag: 2,
            model: files.into(),
        }),
        CategorizerReply::Done
    ));
    let mut photos: Vec<serde_bytes::ByteBuf> = photos_in(sospdemo::bundled_photo_dir(Task::Pets))
        .into_iter()
        .map(serde_bytes::ByteBuf::from)
        .collect();
    photos.insert(2, serde_bytes::ByteBuf::from(b"garbage".to_vec()));
    let CategorizerReply::Guesses(answers) =
        tier.query(CategorizerQuery::ClassifyBatch { tag: 2, photos })
    else {
        panic!("not a batch answer");
    };
    assert_eq!(answers.len(), expected.len() + 1);
    let mut expected = expected.iter();
    for (i, a) in answers.iter().enumerate() {
        match a {
            CategorizerReply::Error(e) if i == 2 => {
                assert!(e.to_string().contains("cannot be decoded"), "{e}")
            }
            CategorizerReply::Guess { label, class, .. } => {
                let e = expected.next().unwrap();
                assert_eq!((label, *class as usize), (&e.label, e.class), "photo {i}");
            }
            other => panic!("photo {i}: {other:?}"),
        }
    }

    let too_many = vec![serde_bytes::ByteBuf::from(b"x".to_vec()); MAX_BATCH + 1];
    assert!(matches!(
        tier.query(CategorizerQuery::ClassifyBatch {
            tag: 2,
            photos: too_many
        }),
        CategorizerReply::Error(_)
    ));
}
