//! The mistakes a tutorial user makes with `installmodel` and `inference`, each answered by an
//! error that says what to do; and an MXNet model carried like any other through the
//! categorizer's replicated state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Cursor;
use std::path::PathBuf;

use derecho::rpc::Replicated;
use sospdemo::model::{Classifier, FileKind, ModelError, ModelFiles, ModelFormat};
use sospdemo::tiers::{CategorizerQuery, CategorizerReply, CategorizerTier, CategorizerUpdate};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Our bundled flowers model.
fn ours() -> ModelFiles {
    ModelFiles::read_dir(&crate_dir().join("models/flowers")).unwrap()
}

/// A fixture MXNet model (10 classes).
fn mxnet() -> ModelFiles {
    let dir = crate_dir().join("fixtures/mxnet");
    ModelFiles::read(
        &dir.join("synset.txt"),
        &dir.join("resnet18_v2-symbol.json"),
        &dir.join("resnet18_v2-0000.params"),
    )
    .unwrap()
}

fn load(synset: &[u8], arch: &[u8], weights: &[u8]) -> ModelError {
    Classifier::from_bytes(synset, arch, weights).unwrap_err()
}

#[test]
fn both_formats_are_recognised_by_content() {
    let (o, m) = (ours(), mxnet());
    assert_eq!(FileKind::sniff(&o.architecture), FileKind::Json);
    assert_eq!(FileKind::sniff(&o.weights), FileKind::Safetensors);
    assert_eq!(FileKind::sniff(&m.architecture), FileKind::MxNetSymbol);
    assert_eq!(FileKind::sniff(&m.weights), FileKind::MxNetParams);
    assert_eq!(FileKind::sniff(&m.synset), FileKind::Text);
    assert_eq!(
        ModelFormat::detect(&o.synset, &o.architecture, &o.weights).unwrap(),
        ModelFormat::ResNet
    );
    assert_eq!(
        ModelFormat::detect(&m.synset, &m.architecture, &m.weights).unwrap(),
        ModelFormat::MxNet
    );
    assert_eq!(
        Classifier::from_files(&o).unwrap().format(),
        ModelFormat::ResNet
    );
    assert_eq!(
        Classifier::from_files(&m).unwrap().format(),
        ModelFormat::MxNet
    );
}

#[test]
fn params_where_safetensors_belong_and_vice_versa() {
    let (o, m) = (ours(), mxnet());
    // arch.json with an MXNet .params file.
    let e = load(&o.synset, &o.architecture, &m.weights);
    assert!(
        matches!(
            &e,
            ModelError::WrongFile {
                role: "weights",
                found: FileKind::MxNetParams,
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("symbol.json") && text.contains("instead of arch.json"),
        "{text}"
    );
    // An MXNet symbol with safetensors weights.
    let e = load(&m.synset, &m.architecture, &o.weights);
    assert!(
        matches!(
            &e,
            ModelError::WrongFile {
                role: "weights",
                found: FileKind::Safetensors,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains(".params file exported with it"),
        "{e}"
    );
}

#[test]
fn files_given_in_the_wrong_order() {
    let (o, m) = (ours(), mxnet());
    // Weights where the architecture belongs (either format).
    for (arch, weights) in [(&m.weights, &m.architecture), (&o.weights, &o.architecture)] {
        let e = load(&m.synset, arch, weights);
        assert!(
            matches!(
                &e,
                ModelError::WrongFile {
                    role: "architecture",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("out of order"), "{e}");
        assert!(
            e.to_string().contains("installmodel takes <synset.txt>"),
            "{e}"
        );
    }
    // An architecture where the weights belong.
    let e = load(&o.synset, &m.architecture, &m.architecture);
    assert!(
        matches!(
            &e,
            ModelError::WrongFile {
                role: "weights",
                ..
            }
        ),
        "{e:?}"
    );
    // The symbol or the params given as the synset.
    for synset in [&m.architecture, &m.weights, &o.weights] {
        let e = load(synset, &m.architecture, &m.weights);
        assert!(
            matches!(&e, ModelError::WrongFile { role: "synset", .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("one label per line"), "{e}");
    }
}

#[test]
fn synset_with_the_wrong_number_of_lines() {
    let m = mxnet();
    let nine: String = (0..9).map(|i| format!("label{i}\n")).collect();
    let e = load(nine.as_bytes(), &m.architecture, &m.weights);
    match &e {
        ModelError::ClassCountMismatch { classes, labels } => {
            assert_eq!((*classes, *labels), (10, 9));
        }
        other => panic!("expected ClassCountMismatch, got {other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("10 classes") && text.contains("9 labels"),
        "{text}"
    );
    assert!(text.contains("one line per class"), "{text}");
    // The same for our format.
    let o = ours();
    let e = load(nine.as_bytes(), &o.architecture, &o.weights);
    assert!(
        matches!(e, ModelError::ClassCountMismatch { labels: 9, .. }),
        "{e:?}"
    );
}

#[test]
fn a_photo_that_is_not_an_image() {
    let c = Classifier::from_files(&mxnet()).unwrap();
    for bad in [
        &b"labels\nrose\n"[..],
        &mxnet().weights[..200],
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
        b"",
    ] {
        let e = c.classify(bad).unwrap_err();
        assert!(matches!(e, ModelError::NotAPhoto(_)), "{e:?}");
        assert!(
            e.to_string().contains("send a JPEG or PNG image file"),
            "{e}"
        );
    }
}

#[test]
fn mxnet_models_replicate_and_transfer_like_ours() {
    let photo = std::fs::read(crate_dir().join("photos/flowers/rose-1.jpg")).unwrap();
    let expected = Classifier::from_files(&mxnet())
        .unwrap()
        .classify(&photo)
        .unwrap();
    let mut tier = CategorizerTier::default();
    for (tag, model) in [(1, mxnet()), (2, ours())] {
        let reply = tier.apply(CategorizerUpdate::Install {
            tag,
            model: model.into(),
        });
        assert!(matches!(reply, CategorizerReply::Done), "{reply:?}");
    }
    // State transfer to a new replica.
    let mut state = Vec::new();
    tier.save(&mut state).unwrap();
    let mut joined = CategorizerTier::default();
    joined.load(&mut Cursor::new(state)).unwrap();
    assert_eq!(joined.tags(), vec![1, 2]);
    for replica in [&tier, &joined] {
        match replica.query(CategorizerQuery::Classify {
            tag: 1,
            photo: photo.clone(),
        }) {
            CategorizerReply::Guess { label, score, .. } => {
                assert_eq!(label, expected.label);
                assert!((score - expected.score).abs() < 1e-6);
            }
            other => panic!("expected a guess, got {other:?}"),
        }
        assert!(matches!(
            replica.query(CategorizerQuery::Classify {
                tag: 2,
                photo: photo.clone(),
            }),
            CategorizerReply::Guess { .. }
        ));
    }
}
