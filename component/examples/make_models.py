"""Writes the example models (real ONNX graphs, made with onnx's helper API, no training framework).

- ``mlp.onnx``: a small fixed-weight MLP, 4 inputs -> 8 hidden (ReLU) -> 3 scores (softmax): the
  example app's "risk classifier" and the end-to-end tests' model.
- ``matmul-4mb.onnx``: ``y = x @ W + b`` with W 1024x1024 float32 (4 MB): the benchmark's model.

Usage: python make_models.py OUTPUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    w1 = numpy_helper.from_array(rng.normal(size=(4, 8)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.normal(size=(8,)).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(size=(8, 3)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "b2")
    nodes = [
        helper.make_node("MatMul", ["features", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["hr"]),
        helper.make_node("MatMul", ["hr", "w2"], ["s"]),
        helper.make_node("Add", ["s", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "risk_mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        [w1, b1, w2, b2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def matmul_4mb() -> onnx.ModelProto:
    rng = np.random.default_rng(11)
    weights = numpy_helper.from_array(rng.normal(size=(1024, 1024)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(size=(1024,)).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "matmul_4mb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1024, 1024])],
        [weights, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def main(output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    for name, model in (("mlp.onnx", mlp()), ("matmul-4mb.onnx", matmul_4mb())):
        onnx.checker.check_model(model)
        onnx.save(model, output / name)
        print(f"{output / name}: {(output / name).stat().st_size} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "static")
