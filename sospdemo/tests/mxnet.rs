//! MXNet models loaded unchanged: the fixture networks of `fixtures/mxnet/` (thumbnail Gluon
//! model-zoo ResNets v1/v2 and a MobileNet, exported by Gluon, with MXNet's own outputs
//! recorded by `generate.py`) must give MXNet's probabilities; batch-normalisation folding must
//! not change the answer; operator semantics that the fixtures do not reach are checked on
//! hand-made graphs; and every malformed `.params` file is a typed error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use serde_json::{json, Value};
use sospdemo::model::mxnet::{
    parse_params, BuildOptions, Graph, MxNetModel, Params, ParamsError, Symbol,
};
use sospdemo::model::{Classifier, ModelError, ModelFiles, ModelFormat, MxNetError};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/mxnet")
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("expected.json")).unwrap()).unwrap()
}

fn nets() -> Vec<String> {
    let e = expected();
    let mut names: Vec<String> = e["nets"].as_object().unwrap().keys().cloned().collect();
    names.sort();
    names
}

fn files(net: &str) -> ModelFiles {
    let e = expected();
    let dir = fixtures();
    ModelFiles::read(
        &dir.join("synset.txt"),
        &dir.join(e["nets"][net]["symbol"].as_str().unwrap()),
        &dir.join(e["nets"][net]["params"].as_str().unwrap()),
    )
    .unwrap()
}

/// The input tensor `[1, 3, side, side]` the generator fed MXNet for `photo`.
fn dumped_input(photo: &str, side: usize) -> Tensor {
    let raw = std::fs::read(fixtures().join("inputs").join(format!("{photo}.f32"))).unwrap();
    let v: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Tensor::from_vec(v, (1, 3, side, side), &Device::Cpu).unwrap()
}

fn mxnet_probs(net: &str, photo: &str) -> Vec<f32> {
    expected()["nets"][net]["probs"][photo]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn photos() -> Vec<(String, PathBuf)> {
    let e = expected();
    let mut v: Vec<(String, PathBuf)> = e["photos"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, p)| {
            (
                k.clone(),
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("photos")
                    .join(p.as_str().unwrap()),
            )
        })
        .collect();
    v.sort();
    v
}

/// Classes by decreasing probability.
fn ranking(p: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    idx
}

/// Our probabilities are MXNet's within 1e-3 and our top 5 is MXNet's top 5 (two classes may
/// only trade places if MXNet's probabilities for them are within 1e-4).
fn assert_matches_mxnet(what: &str, ours: &[f32], theirs: &[f32]) {
    assert_eq!(ours.len(), theirs.len(), "{what}: class count");
    for (c, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!(
            (a - b).abs() <= 1e-3,
            "{what}: class {c}: ours {a}, MXNet {b}"
        );
    }
    let (ro, rt) = (ranking(ours), ranking(theirs));
    for k in 0..5 {
        if ro[k] != rt[k] {
            assert!(
                (theirs[ro[k]] - theirs[rt[k]]).abs() < 1e-4,
                "{what}: rank {k}: ours class {} MXNet class {} ({:?} vs {:?})",
                ro[k],
                rt[k],
                &ro[..5],
                &rt[..5]
            );
        }
    }
}

#[test]
fn fixture_networks_give_mxnets_probabilities() {
    let side = expected()["side"].as_u64().unwrap() as usize;
    assert_eq!(nets().len(), 5, "{:?}", nets());
    for net in nets() {
        let c = Classifier::from_files(&files(&net)).unwrap();
        assert_eq!(c.format(), ModelFormat::MxNet, "{net}");
        assert!(c.architecture().is_none());
        assert_eq!(c.preprocess().crop as usize, side, "{net}: input side");
        assert_eq!(c.labels().len(), 10);
        for (photo, _) in photos() {
            let probs = c.probabilities(&dumped_input(&photo, side)).unwrap();
            let ours = probs.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
            let theirs = mxnet_probs(&net, &photo);
            let worst = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            eprintln!("{net} on {photo}: probabilities differ from MXNet's by at most {worst:e}");
            assert_matches_mxnet(&format!("{net} on {photo}"), &ours, &theirs);
            let sum: f32 = ours.iter().sum();
            assert!(
                (sum - 1.0).abs() < 1e-4,
                "{net}: probabilities sum to {sum}"
            );
        }
    }
}

#[test]
fn photos_are_preprocessed_as_the_generator_did() {
    // The generator decodes with PIL and we decode with the `image` crate; everything after
    // decoding is the same computation, so the tensors may differ only by the decoders'
    // rounding.
    let side = expected()["side"].as_u64().unwrap() as usize;
    let pre = sospdemo::model::Preprocess::mxnet(side);
    assert_eq!((pre.resize, pre.crop, pre.divisor), (36, 32, 256.0));
    for (photo, path) in photos() {
        let ours = pre.photo_to_tensor(&std::fs::read(&path).unwrap()).unwrap();
        let theirs = dumped_input(&photo, side).squeeze(0).unwrap();
        let diff = (ours - theirs).unwrap().abs().unwrap();
        let max = diff.max_all().unwrap().to_scalar::<f32>().unwrap();
        let mean = diff.mean_all().unwrap().to_scalar::<f32>().unwrap();
        eprintln!(
            "{photo}: preprocessing differs from the generator's by max {max:.5}, mean {mean:.6}"
        );
        assert!(max <= 4.0 / 256.0, "{photo}: max difference {max}");
        assert!(mean <= 0.5 / 256.0, "{photo}: mean difference {mean}");
    }
    // The original demo's geometry for real models: 256×256, centre 224.
    let full = sospdemo::model::Preprocess::mxnet(224);
    assert_eq!((full.resize, full.crop), (256, 224));
}

#[test]
fn photos_classify_end_to_end_like_mxnet() {
    for net in nets() {
        let c = Classifier::from_files(&files(&net)).unwrap();
        for (photo, path) in photos() {
            let guess = c.classify(&std::fs::read(&path).unwrap()).unwrap();
            let theirs = mxnet_probs(&net, &photo);
            eprintln!(
                "{net} on {photo}: ours class {} p {:.4}, MXNet p {:.4} for it, MXNet best {} p {:.4}",
                guess.class,
                guess.score,
                theirs[guess.class],
                ranking(&theirs)[0],
                theirs[ranking(&theirs)[0]]
            );
            let best = ranking(&theirs)[0];
            // Decoder rounding may only swap classes MXNet itself finds nearly tied.
            if guess.class != best {
                assert!(
                    (theirs[guess.class] - theirs[best]).abs() < 0.01,
                    "{net} on {photo}: ours {} MXNet {best}",
                    guess.class
                );
            }
            assert!(
                (guess.score - theirs[guess.class]).abs() < 0.1,
                "{net} on {photo}"
            );
            assert_eq!(guess.label, format!("class{}", guess.class));
        }
    }
}

fn count_ops(symbol: &[u8], op: &str) -> usize {
    Symbol::parse(symbol)
        .unwrap()
        .nodes
        .iter()
        .filter(|n| n.op == op)
        .count()
}

/// Two builds of fixture network `net` give the same probabilities on every fixture photo,
/// up to rounding (5e-4).
fn assert_same_probabilities(net: &str, what: &str, a: &MxNetModel, b: &MxNetModel) {
    let side = expected()["side"].as_u64().unwrap() as usize;
    for (photo, _) in photos() {
        let x = dumped_input(&photo, side);
        let d = (a.probabilities(&x).unwrap() - b.probabilities(&x).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        eprintln!("{net} on {photo}: {what} probabilities differ by {d:e}");
        assert!(d < 5e-4, "{net} on {photo}: {what} differ by {d}");
    }
}

#[test]
fn folded_and_unfolded_batch_norm_agree() {
    for net in nets() {
        let f = files(&net);
        let folded = MxNetModel::from_bytes(&f.architecture, &f.weights).unwrap();
        let plain = MxNetModel::from_bytes_with(
            &f.architecture,
            &f.weights,
            BuildOptions {
                fold_batch_norm: false,
                fuse: false,
            },
        )
        .unwrap();
        assert_eq!(plain.folded_batch_norms(), 0);
        let convs = count_ops(&f.architecture, "Convolution");
        let bns = count_ops(&f.architecture, "BatchNorm");
        if net.contains("_v1") || net.starts_with("mobilenet") {
            // Every convolution is followed by its own normalisation.
            assert_eq!(folded.folded_batch_norms(), convs, "{net}");
        } else {
            // Pre-activation: the input and block-entry normalisations follow no convolution.
            assert!(folded.folded_batch_norms() > 0, "{net}");
            assert!(folded.folded_batch_norms() < bns, "{net}");
        }
        // Folding only changes rounding (measured: at most 8e-5 on these networks).
        assert_same_probabilities(&net, "folded and unfolded", &folded, &plain);
    }
}

#[test]
fn packed_and_fused_graph_agrees_with_the_plain_one() {
    for net in nets() {
        let f = files(&net);
        let fast = MxNetModel::from_bytes(&f.architecture, &f.weights).unwrap();
        let plain = MxNetModel::from_bytes_with(
            &f.architecture,
            &f.weights,
            BuildOptions {
                fuse: false,
                ..BuildOptions::default()
            },
        )
        .unwrap();
        assert_eq!(plain.fused_operators(), 0);
        // Every ResNet block ends in a sum, which is fused into a convolution or takes a ReLU.
        if net.starts_with("resnet") {
            assert!(fast.fused_operators() > 0, "{net}: nothing fused");
        }
        assert_same_probabilities(&net, "packed and plain", &fast, &plain);
    }
}

/// The tutorial's full-size ResNet50 V2 (95 MB, not shipped), in the folder named by
/// `SOSPDEMO_FLOWER_MODEL` with `expected.json` (MXNet's probabilities) and the dumped
/// inputs `<photo>.f32`: the packed path gives MXNet's probabilities. Skipped without it.
#[test]
fn full_size_resnet50_v2_gives_mxnets_probabilities_when_present() {
    let Some(dir) = std::env::var_os("SOSPDEMO_FLOWER_MODEL").map(PathBuf::from) else {
        eprintln!("SOSPDEMO_FLOWER_MODEL not set: skipped");
        return;
    };
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let model = MxNetModel::from_bytes(
        &read("flower-recognition-symbol.json"),
        &read("flower-recognition-0040.params"),
    )
    .unwrap();
    assert!(model.fused_operators() > 0);
    let expected: Value = serde_json::from_slice(&read("expected.json")).unwrap();
    for (photo, probs) in expected.as_object().unwrap() {
        let raw = read(&format!("{photo}.f32"));
        let v: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let x = Tensor::from_vec(v, (1, 3, 224, 224), &Device::Cpu).unwrap();
        let ours = model.probabilities(&x).unwrap().flatten_all().unwrap();
        let theirs: Vec<f32> = probs
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap() as f32)
            .collect();
        assert_matches_mxnet(photo, &ours.to_vec1::<f32>().unwrap(), &theirs);
    }
}

#[test]
fn full_size_input_defaults_to_224() {
    // Without a `__shape__` on `data`, the input is 224×224 (the real model zoo's).
    let f = files("resnet18_v1");
    let mut sym: Value = serde_json::from_slice(&f.architecture).unwrap();
    sym["nodes"][0]["attrs"] = json!({});
    let bytes = serde_json::to_vec(&sym).unwrap();
    let m = MxNetModel::from_bytes(&bytes, &f.weights).unwrap();
    assert_eq!(m.input_side(), 224);
    assert_eq!(m.num_classes(), 10);
}

#[test]
fn unknown_operator_is_named() {
    let f = files("resnet18_v2");
    let mut sym: Value = serde_json::from_slice(&f.architecture).unwrap();
    let node = sym["nodes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|n| n["op"] == "Activation")
        .unwrap();
    node["op"] = json!("GroupNormFancy");
    let name = node["name"].as_str().unwrap().to_owned();
    let bytes = serde_json::to_vec(&sym).unwrap();
    let err = Classifier::from_bytes(&f.synset, &bytes, &f.weights).unwrap_err();
    match &err {
        ModelError::MxNet(e) => match e.as_ref() {
            MxNetError::UnknownOp { op, node } => {
                assert_eq!(op, "GroupNormFancy");
                assert_eq!(node, &name);
            }
            other => panic!("expected UnknownOp, got {other:?}"),
        },
        other => panic!("expected an MXNet error, got {other:?}"),
    }
    assert!(err.to_string().contains("GroupNormFancy"), "{err}");
}

#[test]
fn params_missing_from_the_file_are_named() {
    let f = files("resnet18_v1");
    let mut params = parse_params(&f.weights).unwrap();
    let victim = params
        .args
        .keys()
        .find(|k| k.ends_with("conv0_weight"))
        .unwrap()
        .clone();
    params.args.remove(&victim);
    let symbol = Symbol::parse(&f.architecture).unwrap();
    let err = MxNetModel::build(&symbol, &params, BuildOptions::default()).unwrap_err();
    assert!(
        matches!(&err, MxNetError::MissingParameter { .. }),
        "{err:?}"
    );
}

// ---- hand-made graphs and .params files ----

/// One array of a hand-made `.params` file: name, storage type, shape, dtype code, raw data.
type RawArray<'a> = (&'a str, i32, &'a [usize], i32, Vec<u8>);

/// Writes a `.params` file.
fn params_file(arrays: &[RawArray<'_>]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(0x112u64.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend((arrays.len() as u64).to_le_bytes());
    for (_, stype, shape, dtype, data) in arrays {
        b.extend(0xF993_FAC9u32.to_le_bytes());
        b.extend(stype.to_le_bytes());
        b.extend((shape.len() as i32).to_le_bytes());
        for &d in *shape {
            b.extend((d as i64).to_le_bytes());
        }
        b.extend(1i32.to_le_bytes()); // CPU
        b.extend(0i32.to_le_bytes());
        b.extend(dtype.to_le_bytes());
        b.extend(data);
    }
    b.extend((arrays.len() as u64).to_le_bytes());
    for (name, ..) in arrays {
        b.extend((name.len() as u64).to_le_bytes());
        b.extend(name.as_bytes());
    }
    b
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn dense(name: &str, shape: &'static [usize], v: &[f32]) -> (String, Vec<usize>, Vec<f32>) {
    (name.to_owned(), shape.to_vec(), v.to_vec())
}

fn params_of(arrays: &[(String, Vec<usize>, Vec<f32>)]) -> Params {
    let owned: Vec<RawArray<'_>> = arrays
        .iter()
        .map(|(n, s, v)| (n.as_str(), 0, s.as_slice(), 0, f32_bytes(v)))
        .collect();
    parse_params(&params_file(&owned)).unwrap()
}

fn var(name: &str) -> Value {
    json!({"op": "null", "name": name, "inputs": []})
}

fn graph(nodes: Vec<Value>) -> Symbol {
    let head = nodes.len() - 1;
    let doc = json!({"nodes": nodes, "arg_nodes": [], "heads": [[head, 0, 0]]});
    Symbol::parse(&serde_json::to_vec(&doc).unwrap()).unwrap()
}

fn run(symbol: &Symbol, params: &Params, x: Tensor) -> Vec<f32> {
    Graph::build(symbol, params, BuildOptions::default())
        .unwrap()
        .forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn ramp(n: usize, side: usize) -> Tensor {
    let v: Vec<f32> = (1..=n * side * side).map(|i| i as f32).collect();
    Tensor::from_vec(v, (1, n, side, side), &Device::Cpu).unwrap()
}

#[test]
fn pooling_follows_mxnet_conventions() {
    // A 4×4 plane holding 1..16, 3×3 windows, stride 2, padding 1.
    let pool = |attrs: Value| {
        let mut a = json!({"kernel": "(3, 3)", "stride": "(2, 2)", "pad": "(1, 1)"});
        for (k, v) in attrs.as_object().unwrap() {
            a[k] = v.clone();
        }
        let s = graph(vec![
            var("data"),
            json!({"op": "Pooling", "name": "p", "attrs": a, "inputs": [[0, 0, 0]]}),
        ]);
        run(&s, &Params::default(), ramp(1, 4))
    };
    // valid: 2×2 outputs. The first window covers 1, 2, 5, 6 plus five padding cells.
    let v = pool(json!({"pool_type": "avg"}));
    assert_eq!(v.len(), 4);
    assert!((v[0] - 14.0 / 9.0).abs() < 1e-6, "{v:?}");
    let v = pool(json!({"pool_type": "avg", "count_include_pad": "False"}));
    assert!((v[0] - 3.5).abs() < 1e-6, "{v:?}");
    let v = pool(json!({"pool_type": "max"}));
    assert_eq!(v, vec![6.0, 8.0, 14.0, 16.0]);
    // full: 3×3 outputs; the last window starts at row/column 3 and its padded extent is
    // clipped to the padded input (2×2 cells, one of them real).
    let v = pool(json!({"pool_type": "avg", "pooling_convention": "full"}));
    assert_eq!(v.len(), 9);
    assert!((v[8] - 16.0 / 4.0).abs() < 1e-6, "{v:?}");
    let v =
        pool(json!({"pool_type": "avg", "pooling_convention": "full", "count_include_pad": "0"}));
    assert!((v[8] - 16.0).abs() < 1e-6, "{v:?}");
    let v = pool(json!({"pool_type": "max", "pooling_convention": "full"}));
    assert_eq!(v[8], 16.0);
    // Max pooling ignores padding even when every real value is negative.
    let s = graph(vec![
        var("data"),
        json!({"op": "Pooling", "name": "p", "attrs": {"kernel": "(3, 3)", "stride": "(2, 2)", "pad": "(1, 1)", "pool_type": "max"}, "inputs": [[0, 0, 0]]}),
    ]);
    let neg = run(&s, &Params::default(), ramp(1, 4).neg().unwrap());
    assert_eq!(neg[0], -1.0);
    // Global pooling ignores kernel and padding.
    let v = pool(json!({"pool_type": "avg", "global_pool": "True"}));
    assert_eq!(v, vec![8.5]);
}

#[test]
fn hostile_attributes_are_refused_without_huge_allocations() {
    // A stride larger than the kernel with the `full` convention leaves a window outside the
    // input: an empty window, not a panic.
    let s = graph(vec![
        var("data"),
        json!({"op": "Pooling", "name": "p", "attrs": {"kernel": "(1, 1)", "stride": "(3, 3)",
               "pool_type": "max", "pooling_convention": "full"}, "inputs": [[0, 0, 0]]}),
    ]);
    let v = run(&s, &Params::default(), ramp(1, 5));
    assert_eq!(v, vec![1.0, 4.0, 0.0, 16.0, 19.0, 0.0, 0.0, 0.0, 0.0]);
    // Absurd windows are refused when the graph is bound.
    let s = graph(vec![
        var("data"),
        json!({"op": "Pooling", "name": "p", "attrs": {"kernel": "(3, 3)", "pad": "(100000, 1)"},
               "inputs": [[0, 0, 0]]}),
    ]);
    let err = Graph::build(&s, &Params::default(), BuildOptions::default()).unwrap_err();
    assert!(matches!(err, MxNetError::Unsupported { .. }), "{err:?}");
    // Padding within bounds that would still blow a tensor up is refused when it runs:
    // (4 + 2·4096)² cells.
    let s = graph(vec![
        var("data"),
        var("w"),
        json!({"op": "Convolution", "name": "c", "attrs": {"kernel": "(1, 1)", "num_filter": "1",
               "no_bias": "True", "pad": "(4096, 4096)"}, "inputs": [[0, 0, 0], [1, 0, 0]]}),
    ]);
    let p = params_of(&[dense("arg:w", &[1, 1, 1, 1], &[1.0])]);
    let g = Graph::build(&s, &p, BuildOptions::default()).unwrap();
    let err = g.forward(&ramp(1, 4)).unwrap_err();
    assert!(err.to_string().contains("elements"), "{err}");
    // A broadcast of a [n, 1] parameter against a [1, n] input.
    let s = graph(vec![
        var("data"),
        var("col"),
        json!({"op": "broadcast_add", "name": "b", "inputs": [[0, 0, 0], [1, 0, 0]]}),
    ]);
    let p = params_of(&[("arg:col".into(), vec![1 << 15, 1], vec![0.0; 1 << 15])]);
    let g = Graph::build(&s, &p, BuildOptions::default()).unwrap();
    let x = Tensor::zeros((1, 1 << 15), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = g.forward(&x).unwrap_err();
    assert!(err.to_string().contains("elements"), "{err}");
}

#[test]
fn batch_norm_honours_fix_gamma_and_eps() {
    let bn = |fix_gamma: Option<&str>| {
        let mut attrs = json!({"eps": "0.5"});
        if let Some(f) = fix_gamma {
            attrs["fix_gamma"] = json!(f);
        }
        let s = graph(vec![
            var("data"),
            var("g"),
            var("b"),
            var("m"),
            var("v"),
            json!({"op": "BatchNorm", "name": "bn",
                   "attrs": attrs,
                   "inputs": [[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 1], [4, 0, 1]]}),
        ]);
        let p = params_of(&[
            dense("arg:g", &[2], &[3.0, 3.0]),
            dense("arg:b", &[2], &[1.0, -1.0]),
            dense("aux:m", &[2], &[2.0, 0.0]),
            dense("aux:v", &[2], &[3.5, 1.5]),
        ]);
        let x = Tensor::from_vec(vec![4.0f32, 2.0], (1, 2, 1, 1), &Device::Cpu).unwrap();
        run(&s, &p, x)
    };
    let close = |a: Vec<f32>, b: [f32; 2]| {
        assert!(
            a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5),
            "{a:?} vs {b:?}"
        );
    };
    // (x − mean) / √(var + eps) · γ + β
    close(bn(Some("False")), [4.0, 2.0 / 2.0_f32.sqrt() * 3.0 - 1.0]);
    // fix_gamma: γ is 1 whatever the file says; it is also MXNet's default.
    close(bn(Some("True")), [2.0, 2.0 / 2.0_f32.sqrt() - 1.0]);
    close(bn(None), [2.0, 2.0 / 2.0_f32.sqrt() - 1.0]);
}

#[test]
fn elementwise_and_shape_operators() {
    let s = graph(vec![
        var("data"),
        json!({"op": "_mul_scalar", "name": "a", "attrs": {"scalar": "2"}, "inputs": [[0, 0, 0]]}),
        json!({"op": "_plus_scalar", "name": "b", "attrs": {"scalar": "-1"}, "inputs": [[1, 0, 0]]}),
        json!({"op": "clip", "name": "c", "attrs": {"a_min": "0", "a_max": "5"}, "inputs": [[2, 0, 0]]}),
        json!({"op": "Concat", "name": "d", "attrs": {"dim": "1", "num_args": "2"}, "inputs": [[3, 0, 0], [0, 0, 0]]}),
        json!({"op": "Reshape", "name": "e", "attrs": {"shape": "(0, -1)"}, "inputs": [[4, 0, 0]]}),
        json!({"op": "mean", "name": "f", "attrs": {"axis": "1", "keepdims": "True"}, "inputs": [[5, 0, 0]]}),
    ]);
    // data = 1..4 as [1, 1, 2, 2]: 2x − 1 = 1, 3, 5, 7; clipped to 1, 3, 5, 5; with data: mean
    // over 8 values (14 + 10) / 8 = 3.
    let v = run(&s, &Params::default(), ramp(1, 2));
    assert_eq!(v, vec![3.0]);
}

#[test]
fn softmax_output_graph_is_not_softmaxed_twice() {
    let nodes = |data: Value| {
        vec![
            data,
            json!({"op": "Flatten", "name": "f", "inputs": [[0, 0, 0]]}),
            var("fc_weight"),
            var("fc_bias"),
            json!({"op": "FullyConnected", "name": "fc", "attrs": {"num_hidden": "2"},
                   "inputs": [[1, 0, 0], [2, 0, 0], [3, 0, 0]]}),
            var("softmax_label"),
            json!({"op": "SoftmaxOutput", "name": "softmax", "inputs": [[4, 0, 0], [5, 0, 0]]}),
        ]
    };
    let p = params_of(&[
        ("arg:fc_weight".into(), vec![2, 12], vec![0.0; 24]),
        ("arg:fc_bias".into(), vec![2], vec![0.0, 0.5]),
    ]);
    // Without a `__shape__` the graph is built for 224×224, which its fully connected layer
    // cannot take: a clear error naming the node, not a panic.
    let err =
        MxNetModel::build(&graph(nodes(var("data"))), &p, BuildOptions::default()).unwrap_err();
    assert!(
        matches!(&err, MxNetError::Run { node, .. } if node == "fc"),
        "{err:?}"
    );
    // With a 2×2 input declared it builds, and its output already is a distribution.
    let data = json!({"op": "null", "name": "data", "inputs": [],
                      "attrs": {"__shape__": "(1, 3, 2, 2)"}});
    let m = MxNetModel::build(&graph(nodes(data)), &p, BuildOptions::default()).unwrap();
    assert!(m.output_is_probability());
    assert_eq!((m.input_side(), m.num_classes()), (2, 2));
    let x = Tensor::zeros((1, 3, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    let probs = m
        .probabilities(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let e = 0.5f32.exp();
    assert!((probs[1] - e / (1.0 + e)).abs() < 1e-6, "{probs:?}");
}

// ---- the .params parser ----

#[test]
fn params_round_trip_and_prefixes() {
    let p = params_of(&[
        dense("arg:w", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        dense("aux:m", &[1], &[7.0]),
    ]);
    assert_eq!(p.args["w"].shape, vec![2, 3]);
    assert_eq!(p.args["w"].data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(p.aux["m"].data, vec![7.0]);
    assert_eq!(p.len(), 2);
}

#[test]
fn truncated_params_are_errors_at_every_length() {
    let f = files("resnet18_v1");
    let whole = &f.weights;
    assert!(parse_params(whole).is_ok());
    // Every cut inside the header and the first arrays, then a sample of the rest.
    let cuts = (0..2048).chain((2048..whole.len()).step_by(997));
    for n in cuts {
        match parse_params(&whole[..n]) {
            Err(
                ParamsError::Truncated { .. }
                | ParamsError::NotParams
                | ParamsError::NameCount { .. }
                | ParamsError::Corrupt { .. },
            ) => {}
            other => panic!(
                "cut at {n}: expected an error, got {:?}",
                other.map(|p| p.len())
            ),
        }
    }
}

#[test]
fn corrupt_params_never_allocate_what_they_claim() {
    // An array count far beyond the file.
    let mut b = params_file(&[("arg:w", 0, &[2], 0, f32_bytes(&[1.0, 2.0]))]);
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(
        matches!(parse_params(&b), Err(ParamsError::Corrupt { .. })),
        "{:?}",
        parse_params(&b)
    );
    // A shape whose product overflows, and one that merely exceeds the file.
    for shape in [&[usize::MAX / 2, 4][..], &[1 << 40][..]] {
        let b = params_file(&[("arg:w", 0, shape, 0, f32_bytes(&[1.0]))]);
        assert!(
            matches!(
                parse_params(&b),
                Err(ParamsError::Corrupt { .. } | ParamsError::Truncated { .. })
            ),
            "{shape:?}: {:?}",
            parse_params(&b)
        );
    }
    // A name length beyond the file.
    let mut b = params_file(&[("arg:w", 0, &[1], 0, f32_bytes(&[1.0]))]);
    let at = b.len() - "arg:w".len() - 8;
    b[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(matches!(
        parse_params(&b),
        Err(ParamsError::Truncated { .. })
    ));
    // Too many dimensions, an unknown array magic, no names, a name without prefix.
    let mut b = params_file(&[("arg:w", 0, &[1], 0, f32_bytes(&[1.0]))]);
    b[32..36].copy_from_slice(&40i32.to_le_bytes());
    assert!(matches!(parse_params(&b), Err(ParamsError::Corrupt { .. })));
    let mut b = params_file(&[("arg:w", 0, &[1], 0, f32_bytes(&[1.0]))]);
    b[24..28].copy_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
    assert!(matches!(parse_params(&b), Err(ParamsError::Corrupt { .. })));
    let b = params_file(&[("w", 0, &[1], 0, f32_bytes(&[1.0]))]);
    assert!(matches!(parse_params(&b), Err(ParamsError::BadName(n)) if n == "w"));
    let mut b = params_file(&[("arg:w", 0, &[1], 0, f32_bytes(&[1.0]))]);
    let names_at = b.len() - "arg:w".len() - 16;
    b.truncate(names_at);
    b.extend(0u64.to_le_bytes());
    assert!(matches!(
        parse_params(&b),
        Err(ParamsError::NameCount {
            arrays: 1,
            names: 0
        })
    ));
    assert!(matches!(
        parse_params(b"PK\x03\x04 a zip file"),
        Err(ParamsError::NotParams)
    ));
}

#[test]
fn non_float32_and_sparse_params_are_refused() {
    let b = params_file(&[("arg:w", 0, &[2], 1, vec![0u8; 16])]);
    match parse_params(&b) {
        Err(
            e @ ParamsError::UnsupportedDtype {
                code: 1,
                dtype: "float64",
                ..
            },
        ) => {
            assert!(e.to_string().contains("float32"), "{e}");
        }
        other => panic!("expected UnsupportedDtype, got {other:?}"),
    }
    let b = params_file(&[("arg:w", 0, &[2], 2, vec![0u8; 4])]);
    assert!(matches!(
        parse_params(&b),
        Err(ParamsError::UnsupportedDtype {
            dtype: "float16",
            ..
        })
    ));
    for (code, storage) in [(1, "row_sparse"), (2, "csr")] {
        let b = params_file(&[("arg:w", code, &[2], 0, f32_bytes(&[1.0, 2.0]))]);
        match parse_params(&b) {
            Err(e @ ParamsError::SparseStorage { .. }) => {
                assert!(e.to_string().contains(storage), "{e}");
                assert!(e.to_string().contains("dense"), "{e}");
            }
            other => panic!("expected SparseStorage, got {other:?}"),
        }
    }
}

#[test]
fn garbage_symbols_are_errors() {
    let f = files("resnet18_v1");
    for bad in [
        &b"{\"nodes\": [], \"heads\": []}"[..],
        b"{\"nodes\": [{\"op\": \"null\", \"name\": \"data\", \"inputs\": [[5, 0, 0]]}], \"heads\": [[0, 0, 0]]}",
        b"{\"nodes\": [{\"op\": \"null\", \"name\": \"data\", \"inputs\": []}], \"heads\": [[9, 0, 0]]}",
        b"{\"nodes\": [{\"op\": \"null\", \"name\": \"data\"}], \"heads\": [[0]]}",
    ] {
        let err = Classifier::from_bytes(&f.synset, bad, &f.weights).unwrap_err();
        assert!(
            matches!(&err, ModelError::MxNet(e) if matches!(**e, MxNetError::Symbol(_))),
            "{err:?}"
        );
    }
    // Attributes that are not what they claim.
    let mut sym: Value = serde_json::from_slice(&f.architecture).unwrap();
    let conv = sym["nodes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|n| n["op"] == "Convolution")
        .unwrap();
    conv["attrs"]["stride"] = json!("(two, 2)");
    let err = Classifier::from_bytes(&f.synset, &serde_json::to_vec(&sym).unwrap(), &f.weights)
        .unwrap_err();
    assert!(
        matches!(&err, ModelError::MxNet(e) if matches!(**e, MxNetError::BadAttribute { .. })),
        "{err:?}"
    );
}
