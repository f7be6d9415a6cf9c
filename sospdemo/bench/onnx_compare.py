#!/usr/bin/env python3
"""Times onnxruntime on the same ResNet weights as `sospdemo bench-model`.

Reads one of our model directories (arch.json + weights.safetensors, torchvision names),
builds the equivalent ONNX graph with the `onnx` package (Conv, BatchNormalization, Relu,
MaxPool, Add, GlobalAveragePool, Gemm), checks it, and times inference of a batch (1 by
default) with onnxruntime on a fixed number of threads. Prints one line:

    onnxruntime: batch B, per image median M ms, min-max A-B ms over N runs (T threads)

Not run by CI. Set up once, outside the repository:

    python3 -m venv /var/tmp/ortvenv
    /var/tmp/ortvenv/bin/pip install onnxruntime onnx numpy

then `sospdemo bench-model <dir> --onnx-python /var/tmp/ortvenv/bin/python` runs this script
in the same run as our own timing, or run it by hand:

    /var/tmp/ortvenv/bin/python sospdemo/bench/onnx_compare.py <model dir> --iterations 20
"""

import argparse
import json
import struct
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
BN_EPS = 1e-5


def read_safetensors(path):
    """The tensors of a safetensors file as float32 numpy arrays, by name."""
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = data[8 + header_len :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = DTYPES.get(info["dtype"])
        if dtype is None:
            raise SystemExit(f"{name}: dtype {info['dtype']} not handled by this script")
        start, end = info["data_offsets"]
        array = np.frombuffer(body[start:end], dtype=dtype).reshape(info["shape"])
        out[name] = array.astype(np.float32)
    return out


class Builder:
    """Accumulates ONNX nodes and initializers."""

    def __init__(self, weights):
        self.weights = weights
        self.nodes = []
        self.inits = []
        self.count = 0

    def fresh(self, stem):
        self.count += 1
        return f"{stem}_{self.count}"

    def init(self, name):
        self.inits.append(numpy_helper.from_array(self.weights[name], name))
        return name

    def conv_bn(self, x, conv, bn, kernel, stride):
        pad = kernel // 2
        y = self.fresh(conv)
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.init(f"{conv}.weight")],
                [y],
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
            )
        )
        z = self.fresh(bn)
        self.nodes.append(
            helper.make_node(
                "BatchNormalization",
                [y]
                + [self.init(f"{bn}.{p}") for p in ("weight", "bias", "running_mean", "running_var")],
                [z],
                epsilon=BN_EPS,
            )
        )
        return z

    def op(self, kind, inputs, **attrs):
        y = self.fresh(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [y], **attrs))
        return y


def build(arch, weights, batch):
    """The ONNX model of `arch` (our arch.json) with `weights`; input `x` [batch, 3, side, side]."""
    b = Builder(weights)
    side = arch.get("input_size", 224)
    x = b.conv_bn("x", "conv1", "bn1", arch.get("stem_kernel", 7), arch.get("stem_stride", 2))
    x = b.op("Relu", [x])
    if arch.get("stem_pool", True):
        x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    bottleneck = arch["block"] == "bottleneck"
    expansion = 4 if bottleneck else 1
    c_in = arch.get("stem_width", 64)
    for stage, (n, width) in enumerate(zip(arch["layers"], arch["widths"])):
        for i in range(n):
            p = f"layer{stage + 1}.{i}"
            stride = 2 if stage > 0 and i == 0 else 1
            c_out = width * expansion
            if bottleneck:
                convs = [(1, 1, 1), (2, 3, stride), (3, 1, 1)]
            else:
                convs = [(1, 3, stride), (2, 3, 1)]
            y = x
            for k, (j, kernel, s) in enumerate(convs):
                y = b.conv_bn(y, f"{p}.conv{j}", f"{p}.bn{j}", kernel, s)
                if k != len(convs) - 1:
                    y = b.op("Relu", [y])
            if stride != 1 or c_in != c_out:
                shortcut = b.conv_bn(x, f"{p}.downsample.0", f"{p}.downsample.1", 1, stride)
            else:
                shortcut = x
            x = b.op("Relu", [b.op("Add", [y, shortcut])])
            c_in = c_out
    x = b.op("GlobalAveragePool", [x])
    x = b.op("Flatten", [x], axis=1)
    logits = b.op("Gemm", [x, b.init("fc.weight"), b.init("fc.bias")], transB=1)
    graph = helper.make_graph(
        b.nodes,
        "resnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, side, side])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, [batch, arch["num_classes"]])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, side


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    batch = max(args.batch, 1)
    with open(f"{args.model_dir}/arch.json") as f:
        arch = json.load(f)
    weights = read_safetensors(f"{args.model_dir}/weights.safetensors")
    model, side = build(arch, weights, batch)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    x = np.random.default_rng(1).standard_normal((batch, 3, side, side), dtype=np.float32)
    for _ in range(3):
        session.run(None, {"x": x})
    times = []
    for _ in range(max(args.iterations, 1)):
        t = time.perf_counter()
        session.run(None, {"x": x})
        times.append((time.perf_counter() - t) * 1e3 / batch)
    times.sort()
    median = times[len(times) // 2]
    print(
        f"onnxruntime: batch {batch}, per image median {median:.2f} ms, "
        f"min-max {times[0]:.2f}-{times[-1]:.2f} ms over {len(times)} runs "
        f"({args.threads} threads)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
