"""streamlit-secure-context on model shapes that clinics run: browser against native onnxruntime.

Two models are built here with onnx's helper API (random weights, fixed seed; nothing downloaded):
- ``bench-convnet.onnx``: a 1x3x224x224 image through a stem and three stages of 3x3 convolutions
  (32 -> 256 channels, stride 2 each stage, ReLU), global average pooling and a 1000-class Gemm:
  5.7 MB, a small ResNet-like classifier;
- ``bench-encoder.onnx``: two transformer encoder layers (sequence 128, width 256, 4 heads, feed-forward
  1024, LayerNormalization, Softmax attention, GELU): 6.3 MB, a small BERT-like encoder on embeddings.

One run prints, side by side, the median ms per inference of each in Python onnxruntime with 1 and 2
threads, in ORT-web (wasm, SIMD) in the opaque sandbox's worker (1 thread) and on a cross-origin
isolated sandbox origin with 1 and 2 threads, with the ratios browser/native (1 thread each) and
2 threads vs 1; then the cold start (navigation start -> first result shown by Python, fresh browser
context) with the convnet (5.7 MB) in the opaque frame.

Run after `make setup`:
    .cache/venv-component/bin/python benchmarks/component_models_bench.py [--runs 20] [--cold-starts 5]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: scripts/
sys.path.insert(0, str(Path(__file__).resolve().parent))
from component_bench import EXAMPLES, browser_result, cold_start_ms, start_servers

from scripts import headless_chromium

STATIC = EXAMPLES / "static"


def convnet() -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    nodes, weights = [], []
    x = "image"
    # (in, out, stride): a stem, then three stages that halve the size and widen.
    layers = [(3, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2)]
    layers += [(256, 256, 1)]
    for i, (cin, cout, stride) in enumerate(layers):
        w = (rng.normal(size=(cout, cin, 3, 3)) * math.sqrt(2 / (9 * cin))).astype(np.float32)
        b = np.zeros(cout, np.float32)
        weights += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(
            helper.make_node(
                "Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3], pads=[1] * 4, strides=[stride] * 2
            )
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x = f"r{i}"
    weights += [
        numpy_helper.from_array((rng.normal(size=(256, 1000)) * 0.05).astype(np.float32), "fc"),
        numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fc_b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def encoder(layers: int = 2, seq: int = 128, width: int = 256, heads: int = 4, ff: int = 1024) -> onnx.ModelProto:
    rng = np.random.default_rng(11)
    nodes, weights = [], []

    def const(name: str, value: np.ndarray) -> str:
        weights.append(numpy_helper.from_array(value, name))
        return name

    def dense(x: str, name: str, cin: int, cout: int) -> str:
        w = const(f"{name}_w", (rng.normal(size=(cin, cout)) / math.sqrt(cin)).astype(np.float32))
        b = const(f"{name}_b", np.zeros(cout, np.float32))
        nodes.append(helper.make_node("MatMul", [x, w], [f"{name}_m"]))
        nodes.append(helper.make_node("Add", [f"{name}_m", b], [name]))
        return name

    def norm(x: str, name: str) -> str:
        scale = const(f"{name}_g", np.ones(width, np.float32))
        bias = const(f"{name}_beta", np.zeros(width, np.float32))
        nodes.append(helper.make_node("LayerNormalization", [x, scale, bias], [name], axis=-1, epsilon=1e-5))
        return name

    split = const("split_shape", np.array([1, seq, heads, width // heads], np.int64))
    merge = const("merge_shape", np.array([1, seq, width], np.int64))
    scale = const("attn_scale", np.array(1 / math.sqrt(width // heads), np.float32))
    half, one, root2 = (const(n, np.array(v, np.float32)) for n, v in (("half", 0.5), ("one", 1.0), ("root2", 2**0.5)))
    x = "embeddings"
    for i in range(layers):
        heads_of = {}
        for part in "qkv":
            projected = dense(x, f"l{i}_{part}", width, width)
            nodes.append(helper.make_node("Reshape", [projected, split], [f"l{i}_{part}_s"]))
            perm = [0, 2, 3, 1] if part == "k" else [0, 2, 1, 3]
            nodes.append(helper.make_node("Transpose", [f"l{i}_{part}_s"], [f"l{i}_{part}_t"], perm=perm))
            heads_of[part] = f"l{i}_{part}_t"
        nodes += [
            helper.make_node("MatMul", [heads_of["q"], heads_of["k"]], [f"l{i}_qk"]),
            helper.make_node("Mul", [f"l{i}_qk", scale], [f"l{i}_qks"]),
            helper.make_node("Softmax", [f"l{i}_qks"], [f"l{i}_p"], axis=-1),
            helper.make_node("MatMul", [f"l{i}_p", heads_of["v"]], [f"l{i}_a"]),
            helper.make_node("Transpose", [f"l{i}_a"], [f"l{i}_at"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [f"l{i}_at", merge], [f"l{i}_am"]),
        ]
        attended = dense(f"l{i}_am", f"l{i}_o", width, width)
        nodes.append(helper.make_node("Add", [x, attended], [f"l{i}_res1"]))
        h = norm(f"l{i}_res1", f"l{i}_n1")
        up = dense(h, f"l{i}_up", width, ff)
        # GELU, exact: 0.5 x (1 + erf(x / sqrt 2)).
        nodes += [
            helper.make_node("Div", [up, root2], [f"l{i}_g1"]),
            helper.make_node("Erf", [f"l{i}_g1"], [f"l{i}_g2"]),
            helper.make_node("Add", [f"l{i}_g2", one], [f"l{i}_g3"]),
            helper.make_node("Mul", [up, f"l{i}_g3"], [f"l{i}_g4"]),
            helper.make_node("Mul", [f"l{i}_g4", half], [f"l{i}_gelu"]),
        ]
        down = dense(f"l{i}_gelu", f"l{i}_down", ff, width)
        nodes.append(helper.make_node("Add", [h, down], [f"l{i}_res2"]))
        x = norm(f"l{i}_res2", f"l{i}_n2")
    nodes.append(helper.make_node("Identity", [x], ["hidden"]))
    graph = helper.make_graph(
        nodes,
        "encoder",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, [1, seq, width])],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, seq, width])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


MODELS = {"convnet": (convnet, [1, 3, 224, 224]), "encoder": (encoder, [1, 128, 256])}


def native_ms(path: Path, dims: list[int], threads: int, runs: int) -> list[float]:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options)
    # The worker's synthetic input: (i % 7) / 7.
    x = (np.arange(math.prod(dims), dtype=np.float32) % 7 / 7).reshape(dims)
    name = session.get_inputs()[0].name
    for _ in range(3):
        session.run(None, {name: x})
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cold-starts", type=int, default=5)
    args = parser.parse_args()
    paths = {}
    for name, (build, _) in MODELS.items():
        model = build()
        onnx.checker.check_model(model)
        paths[name] = STATIC / f"bench-{name}.onnx"
        onnx.save(model, paths[name])
    native = {
        (name, t): native_ms(paths[name], dims, t, args.runs) for name, (_, dims) in MODELS.items() for t in (1, 2)
    }
    web: dict[tuple[str, str, int], list[float]] = {}
    cold: list[float] = []
    with headless_chromium.browser() as browser:
        for mode, thread_counts in (("opaque", (1,)), ("isolated", (1, 2))):
            processes, url = start_servers(isolated=mode == "isolated")
            try:
                browser_result(browser, f"{url}/?runs=1")  # Streamlit's first page build
                for name, (_, dims) in MODELS.items():
                    for threads in thread_counts:
                        query = f"runs={args.runs + 1}&threads={threads}&model=app/static/{paths[name].name}"
                        result, _ = browser_result(browser, f"{url}/?{query}&dims={','.join(map(str, dims))}")
                        assert result["isolated"] == (mode == "isolated"), result
                        assert result["threads"] == threads, result
                        web[name, mode, threads] = result["inferenceMs"][1:]
                if mode == "opaque":
                    dims = ",".join(map(str, MODELS["convnet"][1]))
                    page = f"{url}/?runs=1&model=app/static/{paths['convnet'].name}&dims={dims}"
                    cold = [cold_start_ms(browser, page) / 1000 for _ in range(args.cold_starts)]
            finally:
                for process in processes:
                    process.terminate()

    load = os.getloadavg()[0]
    print(f"{args.runs} runs each; load average at the end {load:.1f} (2 cores)")
    # The median is what a user sees on this machine as it is; the best of the runs is the closest to
    # a quiet machine that a loaded one gives (other work only ever adds time).
    for label, pick in (("median", statistics.median), ("best of the runs", min)):
        print(f"ms per inference, {label}:")
        print(
            "| model | native 1 thread | native 2 | ORT-web opaque, 1 | isolated, 1 | isolated, 2 "
            "| browser/native, 1 thread | 2 threads vs 1, browser | vs 1, native |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for name in MODELS:
            size = paths[name].stat().st_size / 1e6
            n1, n2 = pick(native[name, 1]), pick(native[name, 2])
            o1, i1, i2 = (pick(web[name, *key]) for key in (("opaque", 1), ("isolated", 1), ("isolated", 2)))
            print(
                f"| {name} ({size:.1f} MB) | {n1:.1f} | {n2:.1f} | {o1:.1f} | {i1:.1f} | {i2:.1f} | "
                f"{o1 / n1:.2f}x | {i1 / i2:.2f}x faster | {n1 / n2:.2f}x faster |"
            )
    print(
        f"cold start, convnet ({paths['convnet'].stat().st_size / 1e6:.1f} MB), opaque frame, navigation start -> "
        f"result shown by Python ({len(cold)} fresh contexts): median {statistics.median(cold):.2f} s, "
        f"min {min(cold):.2f} s, max {max(cold):.2f} s"
    )


if __name__ == "__main__":
    main()
