"""Writes the example models (real ONNX graphs, made with onnx's helper API, no training framework).

- ``mlp.onnx``: a small fixed-weight MLP, 4 inputs -> 8 hidden (ReLU) -> 3 scores (softmax): the
  example app's "risk classifier" and the end-to-end tests' model.
- ``matmul-4mb.onnx``: ``y = x @ W + b`` with W 1024x1024 float32 (4 MB): the benchmark's model.
- ``mlp-tfjs/model.json`` + ``weights.bin``: the same MLP as a TF.js GraphModel (a GraphDef written out
  directly, as tensorflowjs_converter would), so both runtimes can be checked against one answer.

Usage: python make_models.py OUTPUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def mlp_weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "w1": rng.normal(size=(4, 8)).astype(np.float32),
        "b1": rng.normal(size=(8,)).astype(np.float32),
        "w2": rng.normal(size=(8, 3)).astype(np.float32),
        "b2": rng.normal(size=(3,)).astype(np.float32),
    }


def mlp() -> onnx.ModelProto:
    w1, b1, w2, b2 = (numpy_helper.from_array(value, name) for name, value in mlp_weights().items())
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


def mlp_tfjs(directory: Path) -> None:
    """The MLP as a TF.js GraphModel: MatMul, BiasAdd, Relu, MatMul, BiasAdd, Softmax."""
    weights = mlp_weights()
    floats = {"T": {"type": "DT_FLOAT"}}

    def const(name: str) -> dict:
        dims = [{"size": str(d)} for d in weights[name].shape]
        tensor = {"dtype": "DT_FLOAT", "tensorShape": {"dim": dims}}
        return {"name": name, "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}, "value": {"tensor": tensor}}}

    def op(name: str, kind: str, *inputs: str, **attr: dict) -> dict:
        return {"name": name, "op": kind, "input": list(inputs), "attr": {**floats, **attr}}

    matmul = {"transpose_a": {"b": False}, "transpose_b": {"b": False}}
    nodes = [
        {
            "name": "features",
            "op": "Placeholder",
            "attr": {"dtype": {"type": "DT_FLOAT"}, "shape": {"shape": {"dim": [{"size": "-1"}, {"size": "4"}]}}},
        },
        *(const(name) for name in weights),
        op("h", "MatMul", "features", "w1", **matmul),
        op("hb", "BiasAdd", "h", "b1"),
        op("hr", "Relu", "hb"),
        op("s", "MatMul", "hr", "w2", **matmul),
        op("logits", "BiasAdd", "s", "b2"),
        op("probabilities", "Softmax", "logits"),
    ]
    manifest = [
        {
            "paths": ["weights.bin"],
            "weights": [{"name": n, "shape": list(v.shape), "dtype": "float32"} for n, v in weights.items()],
        }
    ]
    model = {
        "format": "graph-model",
        "generatedBy": "component/examples/make_models.py",
        "convertedBy": "make_models.py (GraphDef written directly)",
        "modelTopology": {"node": nodes, "library": {}, "versions": {"producer": 1286}},
        "weightsManifest": manifest,
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.json").write_text(json.dumps(model, indent=1))
    (directory / "weights.bin").write_bytes(b"".join(v.tobytes() for v in weights.values()))
    print(f"{directory / 'model.json'}: {sum(v.nbytes for v in weights.values())} bytes of weights")


def main(output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    for name, model in (("mlp.onnx", mlp()), ("matmul-4mb.onnx", matmul_4mb())):
        onnx.checker.check_model(model)
        onnx.save(model, output / name)
        print(f"{output / name}: {(output / name).stat().st_size} bytes")
    mlp_tfjs(output / "mlp-tfjs")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "static")
