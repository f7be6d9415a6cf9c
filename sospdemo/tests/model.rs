//! The inference engine: model files round trip, the torchvision layout of ResNet50, and every
//! way a model file or a photo can be wrong (each a typed error, never a panic).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use image::{DynamicImage, ImageFormat};
use sospdemo::model::{
    random_weights, save_weights, Architecture, BlockKind, Classifier, ModelError, ModelFiles,
    ParamRole, Synset,
};

/// A ResNet small enough to build in milliseconds.
fn tiny_arch(classes: usize) -> Architecture {
    Architecture {
        family: "resnet".into(),
        block: BlockKind::Basic,
        layers: vec![1, 1],
        widths: vec![4, 8],
        stem_width: 4,
        stem_kernel: 3,
        stem_stride: 1,
        stem_pool: true,
        num_classes: classes,
        input_size: 16,
        resize_size: Some(18),
        mean: [0.5; 3],
        std: [0.25; 3],
    }
}

fn labels(n: usize) -> Synset {
    Synset::from_labels((0..n).map(|i| format!("label{i}")).collect())
}

fn tiny_files(seed: u64) -> ModelFiles {
    let arch = tiny_arch(3);
    let mut w = random_weights(&arch, seed, false).unwrap();
    // Non-trivial running statistics, so the round trip checks them too.
    for (name, t) in w.iter_mut() {
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            *t = (t.clone() + 0.25).unwrap();
        }
    }
    ModelFiles::from_parts(&labels(3), &arch, &w).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sospdemo-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn png(img: &DynamicImage) -> Vec<u8> {
    let mut buf = Vec::new();
    img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png)
        .unwrap();
    buf
}

fn jpeg(img: &DynamicImage) -> Vec<u8> {
    let mut buf = Vec::new();
    img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Jpeg)
        .unwrap();
    buf
}

fn test_photo(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
    }))
}

#[test]
fn save_load_round_trip() {
    let files = tiny_files(7);
    let dir = temp_dir("roundtrip");
    files.write_dir(&dir).unwrap();
    let back = ModelFiles::read_dir(&dir).unwrap();
    assert_eq!(back, files);

    let a = Classifier::from_files(&files).unwrap();
    let b = Classifier::load_dir(&dir).unwrap();
    assert_eq!(a.labels(), ["label0", "label1", "label2"]);
    assert_eq!(b.architecture(), Some(&tiny_arch(3)));

    let photo = png(&test_photo(40, 30));
    let (ga, gb) = (a.classify(&photo).unwrap(), b.classify(&photo).unwrap());
    assert_eq!(ga, gb);
    assert!((0.0..=1.0).contains(&ga.score));

    // The saved tensors are exactly the generated ones.
    let arch = tiny_arch(3);
    let original = {
        let mut w = random_weights(&arch, 7, false).unwrap();
        for (name, t) in w.iter_mut() {
            if name.contains("running") {
                *t = (t.clone() + 0.25).unwrap();
            }
        }
        w
    };
    let loaded = sospdemo::model::load_weights(&arch, &back.weights).unwrap();
    assert_eq!(loaded.len(), original.len());
    for (name, t) in &original {
        let diff = (t - &loaded[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0, "{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn half_precision_and_torch_extras_load() {
    let arch = tiny_arch(3);
    let w = random_weights(&arch, 3, false).unwrap();
    let mut half: HashMap<String, Tensor> = w
        .iter()
        .map(|(k, v)| (k.clone(), v.to_dtype(DType::F16).unwrap()))
        .collect();
    // torchvision state dicts carry an int64 counter per batch normalisation.
    half.insert(
        "bn1.num_batches_tracked".into(),
        Tensor::new(&[5i64], &Device::Cpu)
            .unwrap()
            .squeeze(0)
            .unwrap(),
    );
    let bytes =
        safetensors::serialize(half.iter().map(|(k, v)| (k.clone(), v.clone())), None).unwrap();
    let c = Classifier::from_bytes(&labels(3).to_bytes(), &arch.to_json(), &bytes).unwrap();
    c.classify(&png(&test_photo(20, 20))).unwrap();
}

/// Names of torchvision's resnet50 state dict (without `num_batches_tracked`), written out
/// independently of the crate's layout code.
fn torchvision_resnet50_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bn = |names: &mut BTreeSet<String>, p: &str| {
        for s in ["weight", "bias", "running_mean", "running_var"] {
            names.insert(format!("{p}.{s}"));
        }
    };
    names.insert("conv1.weight".into());
    bn(&mut names, "bn1");
    for (layer, blocks) in [(1, 3), (2, 4), (3, 6), (4, 3)] {
        for b in 0..blocks {
            for i in 1..=3 {
                names.insert(format!("layer{layer}.{b}.conv{i}.weight"));
                bn(&mut names, &format!("layer{layer}.{b}.bn{i}"));
            }
            if b == 0 {
                names.insert(format!("layer{layer}.0.downsample.0.weight"));
                bn(&mut names, &format!("layer{layer}.0.downsample.1"));
            }
        }
    }
    names.insert("fc.weight".into());
    names.insert("fc.bias".into());
    names
}

#[test]
fn resnet50_has_torchvision_names_and_shapes() {
    let arch = Architecture::resnet50(1000);
    let params = arch.parameters();
    let names: BTreeSet<String> = params.iter().map(|p| p.name.clone()).collect();
    assert_eq!(names.len(), params.len(), "duplicate names");
    assert_eq!(names, torchvision_resnet50_names());

    // 161 trained tensors (torch's `parameters()`), 106 running statistics: 267 in all.
    let trained: Vec<_> = params.iter().filter(|p| p.role.is_trainable()).collect();
    assert_eq!(trained.len(), 161);
    assert_eq!(params.len(), 267);
    assert_eq!(
        params
            .iter()
            .filter(|p| matches!(p.role, ParamRole::RunningMean | ParamRole::RunningVar))
            .count(),
        106
    );
    // torchvision's famous parameter count.
    assert_eq!(trained.iter().map(|p| p.numel()).sum::<usize>(), 25_557_032);

    let shapes: BTreeMap<&str, &[usize]> = params
        .iter()
        .map(|p| (p.name.as_str(), p.shape.as_slice()))
        .collect();
    for (name, shape) in [
        ("conv1.weight", &[64, 3, 7, 7][..]),
        ("bn1.weight", &[64]),
        ("bn1.running_var", &[64]),
        ("layer1.0.conv1.weight", &[64, 64, 1, 1]),
        ("layer1.0.conv2.weight", &[64, 64, 3, 3]),
        ("layer1.0.conv3.weight", &[256, 64, 1, 1]),
        ("layer1.0.bn3.running_mean", &[256]),
        ("layer1.0.downsample.0.weight", &[256, 64, 1, 1]),
        ("layer1.0.downsample.1.running_var", &[256]),
        ("layer1.2.conv1.weight", &[64, 256, 1, 1]),
        ("layer2.0.conv1.weight", &[128, 256, 1, 1]),
        ("layer2.0.conv2.weight", &[128, 128, 3, 3]),
        ("layer2.0.downsample.0.weight", &[512, 256, 1, 1]),
        ("layer2.3.conv3.weight", &[512, 128, 1, 1]),
        ("layer3.0.downsample.0.weight", &[1024, 512, 1, 1]),
        ("layer3.5.conv2.weight", &[256, 256, 3, 3]),
        ("layer3.5.bn3.bias", &[1024]),
        ("layer4.0.conv1.weight", &[512, 1024, 1, 1]),
        ("layer4.0.downsample.0.weight", &[2048, 1024, 1, 1]),
        ("layer4.2.conv3.weight", &[2048, 512, 1, 1]),
        ("layer4.2.bn3.running_mean", &[2048]),
        ("fc.weight", &[1000, 2048]),
        ("fc.bias", &[1000]),
    ] {
        assert_eq!(shapes.get(name).copied(), Some(shape), "{name}");
    }
    for absent in [
        "layer1.1.downsample.0.weight",
        "layer3.6.conv1.weight",
        "layer5.0.conv1.weight",
        "conv1.bias",
    ] {
        assert!(!shapes.contains_key(absent), "{absent}");
    }

    // The architecture file of an ImageNet ResNet50 is this small.
    let json = br#"{"block": "bottleneck", "layers": [3, 4, 6, 3], "widths": [64, 128, 256, 512], "num_classes": 1000}"#;
    let parsed = Architecture::from_json(json).unwrap();
    assert_eq!(parsed.parameters(), params);
    assert_eq!(parsed.resize_side(), 256);
}

#[test]
fn resnet18_parameter_count() {
    let arch = Architecture::resnet18(1000);
    let trained: Vec<_> = arch
        .parameters()
        .into_iter()
        .filter(|p| p.role.is_trainable())
        .collect();
    assert_eq!(trained.len(), 62);
    assert_eq!(trained.iter().map(|p| p.numel()).sum::<usize>(), 11_689_512);
}

#[test]
fn resnet50_builds_saves_loads_and_runs() {
    let arch = Architecture::resnet50(1000);
    let weights = random_weights(&arch, 50, false).unwrap();
    let bytes = save_weights(&weights).unwrap();
    // 25,557,032 parameters + 53,120 running statistics in f32, plus the header.
    assert!(bytes.len() > (25_557_032 + 53_120) * 4);
    let synset = labels(1000);
    let c = Classifier::from_bytes(&synset.to_bytes(), &arch.to_json(), &bytes).unwrap();
    let x = Tensor::zeros((1, 3, 224, 224), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(c.logits(&x).unwrap().dims(), &[1, 1000]);
    let g = c.classify(&jpeg(&test_photo(300, 250))).unwrap();
    assert!(g.class < 1000 && g.label == format!("label{}", g.class));
}

// ---- errors -------------------------------------------------------------------------------

fn load(files: &ModelFiles) -> ModelError {
    Classifier::from_files(files).expect_err("the model should be refused")
}

#[test]
fn corrupt_and_truncated_weights() {
    let good = tiny_files(1);
    for bad in [
        Vec::new(),
        vec![0u8; 3],
        b"this is not a safetensors file at all".to_vec(),
        good.weights[..good.weights.len() / 2].to_vec(),
        good.weights[..good.weights.len() - 1].to_vec(),
        good.weights[..8].to_vec(),
        {
            // A header length far beyond the file.
            let mut w = good.weights.clone();
            w[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            w
        },
        {
            // A header that is not JSON.
            let mut w = good.weights.clone();
            for b in &mut w[8..40] {
                *b = 0xff;
            }
            w
        },
    ] {
        let files = ModelFiles {
            weights: bad,
            ..good.clone()
        };
        match load(&files) {
            ModelError::CorruptWeights(msg) => assert!(!msg.is_empty()),
            other => panic!("expected CorruptWeights, got {other:?}"),
        }
    }
}

fn with_weights(edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> ModelFiles {
    let arch = tiny_arch(3);
    let mut w = random_weights(&arch, 2, false).unwrap();
    edit(&mut w);
    let bytes =
        safetensors::serialize(w.iter().map(|(k, v)| (k.clone(), v.clone())), None).unwrap();
    ModelFiles {
        synset: labels(3).to_bytes(),
        architecture: arch.to_json(),
        weights: bytes,
    }
}

#[test]
fn shape_mismatch_names_the_parameter() {
    let files = with_weights(|w| {
        w.insert(
            "layer2.0.conv1.weight".into(),
            Tensor::zeros((8, 4, 5, 5), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    match load(&files) {
        ModelError::ShapeMismatch {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "layer2.0.conv1.weight");
            assert_eq!(expected, vec![8, 4, 3, 3]);
            assert_eq!(found, vec![8, 4, 5, 5]);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    let msg = load(&files).to_string();
    assert!(msg.contains("layer2.0.conv1.weight"), "{msg}");

    // Weights of a model for another class count.
    let files = with_weights(|w| {
        w.insert(
            "fc.weight".into(),
            Tensor::zeros((10, 8), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert!(matches!(load(&files), ModelError::ShapeMismatch { name, .. } if name == "fc.weight"));
}

#[test]
fn missing_parameter_and_wrong_dtype() {
    let files = with_weights(|w| {
        w.remove("layer1.0.bn2.running_var");
    });
    match load(&files) {
        ModelError::MissingParameter { name } => assert_eq!(name, "layer1.0.bn2.running_var"),
        other => panic!("expected MissingParameter, got {other:?}"),
    }
    let files = with_weights(|w| {
        w.insert(
            "fc.bias".into(),
            Tensor::zeros(3, DType::U8, &Device::Cpu).unwrap(),
        );
    });
    assert!(matches!(load(&files), ModelError::UnsupportedDtype { name, .. } if name == "fc.bias"));
}

#[test]
fn class_count_must_match_synset() {
    let good = tiny_files(1);
    let files = ModelFiles {
        synset: labels(4).to_bytes(),
        ..good.clone()
    };
    match load(&files) {
        ModelError::ClassCountMismatch { classes, labels } => {
            assert_eq!((classes, labels), (3, 4))
        }
        other => panic!("expected ClassCountMismatch, got {other:?}"),
    }
    // Also when the synset is checked against in-memory weights.
    let arch = tiny_arch(3);
    let w = random_weights(&arch, 1, false).unwrap();
    assert!(matches!(
        Classifier::from_parts(arch, labels(2), &w),
        Err(ModelError::ClassCountMismatch { .. })
    ));
}

#[test]
fn synset_errors() {
    let good = tiny_files(1);
    for (synset, want_empty) in [
        (&b""[..], true),
        (b"\n\n  \n", true),
        (b"a\n\nb\nc\n", false),
        (b"a\n\xff\xfe\nc\n", false),
    ] {
        let files = ModelFiles {
            synset: synset.to_vec(),
            ..good.clone()
        };
        match (load(&files), want_empty) {
            (ModelError::EmptySynset, true) | (ModelError::BadSynset(_), false) => {}
            (other, _) => panic!("synset {synset:?}: unexpected {other:?}"),
        }
    }
    // Windows line ends, surrounding spaces and a trailing blank line are fine.
    let files = ModelFiles {
        synset: b" rose \r\ntulip\r\ndaisy\r\n\r\n".to_vec(),
        ..good
    };
    let c = Classifier::from_files(&files).unwrap();
    assert_eq!(c.labels(), ["rose", "tulip", "daisy"]);
}

#[test]
fn architecture_errors() {
    let good = tiny_files(1);
    let bad_json: [&[u8]; 4] = [
        b"",
        b"not json",
        br#"{"block": "basic", "layers": [1], "widths": [4]}"#,
        br#"{"block": "basic", "layers": [1], "widths": [4], "num_classes": 3, "colour": 1}"#,
    ];
    for arch in bad_json {
        let files = ModelFiles {
            architecture: arch.to_vec(),
            ..good.clone()
        };
        assert!(
            matches!(load(&files), ModelError::ArchitectureJson(_)),
            "{}",
            String::from_utf8_lossy(arch)
        );
    }
    let invalid: [&[u8]; 6] = [
        br#"{"block": "basic", "layers": [], "widths": [], "num_classes": 3}"#,
        br#"{"block": "basic", "layers": [1, 1], "widths": [4], "num_classes": 3}"#,
        br#"{"block": "basic", "layers": [0], "widths": [4], "num_classes": 3}"#,
        br#"{"block": "basic", "layers": [1], "widths": [4], "num_classes": 0}"#,
        br#"{"block": "basic", "layers": [1], "widths": [4], "num_classes": 3, "input_size": 16, "resize_size": 8}"#,
        br#"{"family": "vgg", "block": "basic", "layers": [1], "widths": [4], "num_classes": 3}"#,
    ];
    for arch in invalid {
        let files = ModelFiles {
            architecture: arch.to_vec(),
            ..good.clone()
        };
        assert!(
            matches!(load(&files), ModelError::InvalidArchitecture(_)),
            "{}",
            String::from_utf8_lossy(arch)
        );
    }
    // A valid architecture that does not match the weights.
    let files = ModelFiles {
        architecture: Architecture::resnet18(3).to_json(),
        ..good
    };
    assert!(matches!(
        load(&files),
        ModelError::ShapeMismatch { .. } | ModelError::MissingParameter { .. }
    ));
}

#[test]
fn unreadable_model_directory() {
    let err = Classifier::load_dir(&temp_dir("does-not-exist")).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }));
    assert!(err.to_string().contains("synset.txt"), "{err}");
}

#[test]
fn garbage_model_files_never_panic() {
    let good = tiny_files(9);
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..300 {
        let mut files = good.clone();
        let target = match round % 3 {
            0 => &mut files.synset,
            1 => &mut files.architecture,
            _ => &mut files.weights,
        };
        match next() % 3 {
            0 => {
                let n = (next() % (target.len() as u64 + 1)) as usize;
                target.truncate(n);
            }
            1 => {
                for _ in 0..1 + next() % 8 {
                    if target.is_empty() {
                        break;
                    }
                    let i = (next() % target.len() as u64) as usize;
                    target[i] = next() as u8;
                }
            }
            _ => {
                let n = (next() % 64) as usize;
                *target = (0..n).map(|_| next() as u8).collect();
            }
        }
        // Any outcome but a panic is fine; a loaded model must still classify or refuse.
        if let Ok(c) = Classifier::from_files(&files) {
            let _ = c.classify(&png(&test_photo(24, 24)));
        }
    }
}

// ---- photos -------------------------------------------------------------------------------

#[test]
fn bad_photos_are_errors() {
    let c = Classifier::from_files(&tiny_files(4)).unwrap();
    let good_png = png(&test_photo(32, 32));
    let good_jpeg = jpeg(&test_photo(32, 32));
    let mut bmp = Vec::new();
    test_photo(8, 8)
        .write_to(&mut Cursor::new(&mut bmp), ImageFormat::Bmp)
        .ok();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"hello, this is not a photo".to_vec()),
        ("zeros", vec![0; 1000]),
        ("png half", good_png[..good_png.len() / 2].to_vec()),
        ("png header only", good_png[..40].to_vec()),
        ("jpeg header only", good_jpeg[..20].to_vec()),
        ("jpeg magic", vec![0xff, 0xd8, 0xff]),
        ("gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec()),
        ("bmp", bmp),
    ];
    for (what, bytes) in cases {
        match c.classify(&bytes) {
            Err(ModelError::NotAPhoto(msg)) => assert!(!msg.is_empty(), "{what}"),
            other => panic!("{what}: expected NotAPhoto, got {other:?}"),
        }
    }
    // A truncated JPEG: an error, or (the decoder pads missing scan data) a guess; never a panic.
    for cut in [
        good_jpeg.len() / 3,
        good_jpeg.len() / 2,
        good_jpeg.len() - 2,
    ] {
        let _ = c.classify(&good_jpeg[..cut]);
    }
    // Random damage to JPEG and PNG files: errors or guesses, never a panic.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..200 {
        let mut bytes = if round % 2 == 0 {
            good_jpeg.clone()
        } else {
            good_png.clone()
        };
        for _ in 0..1 + next() % 6 {
            let i = (next() % bytes.len() as u64) as usize;
            bytes[i] = next() as u8;
        }
        if next() % 2 == 0 {
            bytes.truncate((next() % bytes.len() as u64) as usize);
        }
        let _ = c.classify(&bytes);
    }
    // Absurdly elongated.
    assert!(matches!(
        c.classify(&png(&test_photo(400, 2))),
        Err(ModelError::PhotoShape { .. })
    ));
}

#[test]
fn grey_alpha_and_sixteen_bit_photos_are_accepted() {
    let c = Classifier::from_files(&tiny_files(5)).unwrap();
    let rgb = test_photo(50, 40);
    let reference = c.classify(&png(&rgb)).unwrap();
    // Alpha is dropped and 16-bit is reduced to 8-bit, so these give the same answer.
    for img in [
        DynamicImage::ImageRgba8(rgb.to_rgba8()),
        DynamicImage::ImageRgb16(rgb.to_rgb16()),
        DynamicImage::ImageRgba16(rgb.to_rgba16()),
    ] {
        assert_eq!(c.classify(&png(&img)).unwrap(), reference);
    }
    // Grey images become three equal channels.
    for img in [
        DynamicImage::ImageLuma8(rgb.to_luma8()),
        DynamicImage::ImageLumaA8(rgb.to_luma_alpha8()),
        DynamicImage::ImageLuma16(rgb.to_luma16()),
    ] {
        c.classify(&png(&img)).unwrap();
    }
    c.classify(&jpeg(&DynamicImage::ImageLuma8(rgb.to_luma8())))
        .unwrap();
    // Tiny and portrait photos are resized like any other.
    c.classify(&png(&test_photo(1, 1))).unwrap();
    c.classify(&jpeg(&test_photo(30, 200))).unwrap();
}

#[test]
fn preprocessing_follows_torchvision() {
    let arch = tiny_arch(3);
    let pre = sospdemo::model::Preprocess::for_architecture(&arch);
    // 36×18 → shorter side 18 → 36×18 (no resize); centre crop 16 → offsets (10, 1).
    let img = test_photo(36, 18);
    let cropped = pre.resize_and_crop(&img.to_rgb8()).unwrap();
    assert_eq!(cropped.dimensions(), (16, 16));
    assert_eq!(cropped.get_pixel(0, 0), img.to_rgb8().get_pixel(10, 1));
    // Odd margins round half to even, as Python does: (19 - 16) / 2 = 1.5 → 2.
    let img = test_photo(18, 19);
    let cropped = pre.resize_and_crop(&img.to_rgb8()).unwrap();
    assert_eq!(cropped.get_pixel(0, 0), img.to_rgb8().get_pixel(1, 2));
    // Normalisation: (v / 255 - mean) / std per channel, channel-first.
    let t = pre
        .image_to_tensor(&DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            20,
            20,
            image::Rgb([255, 0, 51]),
        )))
        .unwrap();
    assert_eq!(t.dims(), &[3, 16, 16]);
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    let expect = [(1.0 - 0.5) / 0.25, (0.0 - 0.5) / 0.25, (0.2 - 0.5) / 0.25];
    for (ch, e) in expect.iter().enumerate() {
        assert!(
            (v[ch * 256] - e).abs() < 1e-5,
            "channel {ch}: {}",
            v[ch * 256]
        );
    }
}
