"""Writes the example models (real ONNX graphs, made with onnx's helper API, no training framework).

- ``mlp.onnx``: a small fixed-weight MLP, 4 inputs -> 8 hidden (ReLU) -> 3 scores (softmax): the
  example app's "risk classifier" and the end-to-end tests' model.
- ``matmul-4mb.onnx``: ``y = x @ W + b`` with W 1024x1024 float32 (4 MB): the benchmark's model.
- ``mlp-tfjs/model.json`` + ``weights.bin``: the same MLP as a TF.js GraphModel (a GraphDef written out
  directly, as tensorflowjs_converter would), so both runtimes can be checked against one answer.
- ``mlp.tflite``, ``matmul-4mb.tflite``: the same two models as TFLite flatbuffers (FULLY_CONNECTED
  with a fused ReLU, FULLY_CONNECTED, SOFTMAX; one FULLY_CONNECTED), written with the ``tflite``
  package's generated schema builders, no TensorFlow: for LiteRT.js.
- ``dtypes.onnx``, ``two-inputs.onnx``, ``classifier.onnx``, ``strings.onnx``, ``conv.onnx``: the tensor tests' models
  (every element type through, two named inputs one of them int64, an int64 ArgMax output, a string
  output the component does not return, a convolution for picked images); see ``tensor_models``.

Usage: python make_models.py OUTPUT_DIR
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import flatbuffers
import numpy as np
import onnx
import tflite
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


def matmul_add(name: str, weights: np.ndarray, bias: np.ndarray, rows: int, **model_fields: str) -> onnx.ModelProto:
    """``y = x @ W + b``, x of ``rows`` rows."""
    size = weights.shape[1]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, weights.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, size])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8, **model_fields)


def matmul_4mb() -> onnx.ModelProto:
    rng = np.random.default_rng(11)
    weights = rng.normal(size=(1024, 1024)).astype(np.float32)
    return matmul_add("matmul_4mb", weights, rng.normal(size=(1024,)).astype(np.float32), rows=1024)


def warmup_model() -> onnx.ModelProto:
    """An 8x8 ``y = x @ W + b``: ONNX Runtime Web's warm-up session, run while the real model is still
    on its way (frontend/src/sandbox.ts carries it as base64; a test keeps the two equal)."""
    weights = np.full((8, 8), 0.125, dtype=np.float32)
    return matmul_add("warmup", weights, np.zeros(8, dtype=np.float32), rows=8, producer_name="")


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


def _vector(builder: flatbuffers.Builder, start, values: list[int]) -> int:
    """A vector of int32, built back to front as flatbuffers needs."""
    start(builder, len(values))
    for value in reversed(values):
        builder.PrependInt32(value)
    return builder.EndVector()


def _offsets(builder: flatbuffers.Builder, start, offsets: list[int]) -> int:
    start(builder, len(offsets))
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def dense_tflite(
    inputs: tuple[str, list[int]], layers: list[tuple[np.ndarray, np.ndarray, int]], output: str, softmax: bool
) -> bytes:
    """A stack of dense layers as a TFLite model (schema version 3): one FULLY_CONNECTED per layer (weight
    [in, out], bias, fused activation), then SOFTMAX if asked, and a "serving_default" signature that
    names the input and the output (LiteRT.js names its tensors by it)."""
    b = flatbuffers.Builder(4096)
    # TFLite's FULLY_CONNECTED takes weights as [out, in].
    constants = {}
    for i, (weight, bias, _) in enumerate(layers):
        constants[f"w{i + 1}"] = np.ascontiguousarray(weight.T)
        constants[f"b{i + 1}"] = bias
    # Buffer 0 is the empty buffer by convention.
    buffers = []
    for data in [None, *constants.values()]:
        payload = None if data is None else b.CreateNumpyVector(np.frombuffer(data.tobytes(), dtype=np.uint8))
        tflite.BufferStart(b)
        if payload is not None:
            tflite.BufferAddData(b, payload)
        buffers.append(tflite.BufferEnd(b))

    # (name, shape, buffer): activations use buffer 0, constants their own.
    input_name, input_shape = inputs
    rows = input_shape[0]
    activations = [f"dense{i + 1}" for i in range(len(layers))]
    activations[-1] = "logits" if softmax else output
    specs = [
        (input_name, input_shape, 0),
        *((name, list(value.shape), i + 1) for i, (name, value) in enumerate(constants.items())),
        *((name, [rows, weight.shape[1]], 0) for name, (weight, _, _) in zip(activations, layers, strict=True)),
        *([(output, [rows, layers[-1][0].shape[1]], 0)] if softmax else []),
    ]
    index = {name: i for i, (name, _, _) in enumerate(specs)}
    tensors = []
    for name, shape, buffer in specs:
        name_offset = b.CreateString(name)
        shape_offset = _vector(b, tflite.TensorStartShapeVector, shape)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape_offset)
        tflite.TensorAddType(b, tflite.TensorType.FLOAT32)
        tflite.TensorAddBuffer(b, buffer)
        tflite.TensorAddName(b, name_offset)
        tensors.append(tflite.TensorEnd(b))

    codes = []
    for code in (tflite.BuiltinOperator.FULLY_CONNECTED, tflite.BuiltinOperator.SOFTMAX):
        tflite.OperatorCodeStart(b)
        # Both fields: readers before schema 2.4 read only the deprecated int8 one.
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, code)
        tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, 1)
        codes.append(tflite.OperatorCodeEnd(b))

    def fully_connected(activation: int) -> int:
        tflite.FullyConnectedOptionsStart(b)
        tflite.FullyConnectedOptionsAddFusedActivationFunction(b, activation)
        return tflite.FullyConnectedOptionsEnd(b)

    def softmax_options() -> int:
        tflite.SoftmaxOptionsStart(b)
        tflite.SoftmaxOptionsAddBeta(b, 1.0)
        return tflite.SoftmaxOptionsEnd(b)

    FC, SOFTMAX = 0, 1
    graph = []
    previous = input_name
    for i, (_, _, activation) in enumerate(layers):
        options = functools.partial(fully_connected, activation)
        graph.append(
            (
                FC,
                [previous, f"w{i + 1}", f"b{i + 1}"],
                activations[i],
                tflite.BuiltinOptions.FullyConnectedOptions,
                options,
            )
        )
        previous = activations[i]
    if softmax:
        graph.append((SOFTMAX, [previous], output, tflite.BuiltinOptions.SoftmaxOptions, softmax_options))
    operators = []
    for opcode, op_inputs, op_output, options_type, options in graph:
        options_offset = options()
        inputs_offset = _vector(b, tflite.OperatorStartInputsVector, [index[n] for n in op_inputs])
        outputs_offset = _vector(b, tflite.OperatorStartOutputsVector, [index[op_output]])
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, opcode)
        tflite.OperatorAddInputs(b, inputs_offset)
        tflite.OperatorAddOutputs(b, outputs_offset)
        tflite.OperatorAddBuiltinOptionsType(b, options_type)
        tflite.OperatorAddBuiltinOptions(b, options_offset)
        operators.append(tflite.OperatorEnd(b))

    tensors_offset = _offsets(b, tflite.SubGraphStartTensorsVector, tensors)
    sub_inputs = _vector(b, tflite.SubGraphStartInputsVector, [index[input_name]])
    sub_outputs = _vector(b, tflite.SubGraphStartOutputsVector, [index[output]])
    operators_offset = _offsets(b, tflite.SubGraphStartOperatorsVector, operators)
    graph_name = b.CreateString("dense")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensors_offset)
    tflite.SubGraphAddInputs(b, sub_inputs)
    tflite.SubGraphAddOutputs(b, sub_outputs)
    tflite.SubGraphAddOperators(b, operators_offset)
    tflite.SubGraphAddName(b, graph_name)
    subgraph = tflite.SubGraphEnd(b)

    def tensor_map(name: str) -> int:
        name_offset = b.CreateString(name)
        tflite.TensorMapStart(b)
        tflite.TensorMapAddName(b, name_offset)
        tflite.TensorMapAddTensorIndex(b, index[name])
        return tflite.TensorMapEnd(b)

    signature_inputs = _offsets(b, tflite.SignatureDefStartInputsVector, [tensor_map(input_name)])
    signature_outputs = _offsets(b, tflite.SignatureDefStartOutputsVector, [tensor_map(output)])
    signature_key = b.CreateString("serving_default")
    tflite.SignatureDefStart(b)
    tflite.SignatureDefAddInputs(b, signature_inputs)
    tflite.SignatureDefAddOutputs(b, signature_outputs)
    tflite.SignatureDefAddSignatureKey(b, signature_key)
    tflite.SignatureDefAddSubgraphIndex(b, 0)
    signature = tflite.SignatureDefEnd(b)

    codes_offset = _offsets(b, tflite.ModelStartOperatorCodesVector, codes)
    subgraphs_offset = _offsets(b, tflite.ModelStartSubgraphsVector, [subgraph])
    buffers_offset = _offsets(b, tflite.ModelStartBuffersVector, buffers)
    signatures_offset = _offsets(b, tflite.ModelStartSignatureDefsVector, [signature])
    description = b.CreateString("component/examples/make_models.py")
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, codes_offset)
    tflite.ModelAddSubgraphs(b, subgraphs_offset)
    tflite.ModelAddDescription(b, description)
    tflite.ModelAddBuffers(b, buffers_offset)
    tflite.ModelAddSignatureDefs(b, signatures_offset)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def mlp_tflite() -> bytes:
    """The MLP, batch 1: FULLY_CONNECTED with a fused ReLU, FULLY_CONNECTED, SOFTMAX."""
    w = mlp_weights()
    relu, none = tflite.ActivationFunctionType.RELU, tflite.ActivationFunctionType.NONE
    return dense_tflite(
        ("features", [1, 4]), [(w["w1"], w["b1"], relu), (w["w2"], w["b2"], none)], "probabilities", softmax=True
    )


def matmul_4mb_tflite() -> bytes:
    """The benchmark's model (the ONNX one's W and b) as one FULLY_CONNECTED: the LiteRT.js timing."""
    rng = np.random.default_rng(11)
    weights = rng.normal(size=(1024, 1024)).astype(np.float32)
    bias = rng.normal(size=(1024,)).astype(np.float32)
    return dense_tflite(("x", [1024, 1024]), [(weights, bias, tflite.ActivationFunctionType.NONE)], "y", softmax=False)


# The element types the component carries, as ONNX names them.
DTYPES = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "uint8": TensorProto.UINT8,
    "bool": TensorProto.BOOL,
}


def _model(nodes: list, name: str, inputs: list, outputs: list, initializers: list | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers or [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def tensor_models() -> dict[str, onnx.ModelProto]:
    """Small models for the tensor tests (component/tests/test_tensors.py).

    - ``dtypes.onnx``: ``x_<dtype>`` -> Identity -> ``y_<dtype>`` for each element type: what goes in
      comes back bit for bit (NaN, Infinity, int64 beyond 2**53).
    - ``two-inputs.onnx``: ``x`` float32 [1, 3] and ``n`` int64 [1]: ``scaled = x * n``, ``root =
      Sqrt(x)`` (NaN for a negative x), ``shifted = n + 2**60 + 1`` (an int64 that no float holds).
    - ``classifier.onnx``: the MLP's logits and ``label = ArgMax`` (int64), as sklearn-onnx classifiers.
    - ``strings.onnx``: ``y = x`` and a constant string output the component does not return.
    - ``conv.onnx``: a 3x3 convolution of a 1x3x16x16 image to 2 channels (picked images).
    - ``skin.onnx``: a 1x3x16x16 image -> 3x3 convolution to 4 channels -> Relu -> global average pool
      -> 5 logits: a small image classifier (postprocessing in the sandbox, picked images and DICOM).
    - ``pad.onnx``: a 1x3x256x256 input padded to 1x3x297x297 (264,627 floats): the transport benchmark.
    """
    dtypes = _model(
        [helper.make_node("Identity", [f"x_{t}"], [f"y_{t}"]) for t in DTYPES],
        "dtypes",
        [helper.make_tensor_value_info(f"x_{t}", code, ["n"]) for t, code in DTYPES.items()],
        [helper.make_tensor_value_info(f"y_{t}", code, ["n"]) for t, code in DTYPES.items()],
    )
    two_inputs = _model(
        [
            helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["x", "nf"], ["scaled"]),
            helper.make_node("Sqrt", ["x"], ["root"]),
            helper.make_node("Add", ["n", "big"], ["shifted"]),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("n", TensorProto.INT64, [1]),
        ],
        [
            helper.make_tensor_value_info("scaled", TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("root", TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("shifted", TensorProto.INT64, [1]),
        ],
        [numpy_helper.from_array(np.array([2**60 + 1], dtype=np.int64), "big")],
    )
    w1, b1, w2, b2 = (numpy_helper.from_array(value, name) for name, value in mlp_weights().items())
    classifier = _model(
        [
            helper.make_node("MatMul", ["features", "w1"], ["h"]),
            helper.make_node("Add", ["h", "b1"], ["hb"]),
            helper.make_node("Relu", ["hb"], ["hr"]),
            helper.make_node("MatMul", ["hr", "w2"], ["s"]),
            helper.make_node("Add", ["s", "b2"], ["logits"]),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        "classifier",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
        ],
        [w1, b1, w2, b2],
    )
    strings = _model(
        [
            helper.make_node("Identity", ["x"], ["y"]),
            helper.make_node(
                "Constant", [], ["names"], value=helper.make_tensor("names", TensorProto.STRING, [2], [b"a", b"b"])
            ),
        ],
        "strings",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("names", TensorProto.STRING, [2]),
        ],
    )
    rng = np.random.default_rng(5)
    conv = _model(
        [helper.make_node("Conv", ["image", "kernel"], ["features"], kernel_shape=[3, 3])],
        "conv",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 2, 14, 14])],
        [numpy_helper.from_array(rng.normal(size=(2, 3, 3, 3)).astype(np.float32), "kernel")],
    )
    skin = _model(
        [
            helper.make_node("Conv", ["image", "skin_kernel", "skin_bias"], ["c"], kernel_shape=[3, 3]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["g"]),
            helper.make_node("Flatten", ["g"], ["f"]),
            helper.make_node("Gemm", ["f", "skin_w", "skin_b"], ["logits"]),
        ],
        "skin",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])],
        [
            numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "skin_kernel"),
            numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "skin_bias"),
            numpy_helper.from_array((3 * rng.normal(size=(4, 5))).astype(np.float32), "skin_w"),
            numpy_helper.from_array(rng.normal(size=5).astype(np.float32), "skin_b"),
        ],
    )
    # The transport benchmark's model: a 1x3x256x256 image in, 3x297x297 (264,627 floats) out.
    pad = _model(
        [helper.make_node("Pad", ["x", "pads"], ["y"])],
        "pad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 256, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 297, 297])],
        [numpy_helper.from_array(np.array([0, 0, 20, 21, 0, 0, 21, 20], dtype=np.int64), "pads")],
    )
    return {
        "pad.onnx": pad,
        "conv.onnx": conv,
        "skin.onnx": skin,
        "dtypes.onnx": dtypes,
        "two-inputs.onnx": two_inputs,
        "classifier.onnx": classifier,
        "strings.onnx": strings,
    }


def main(output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    for name, model in (("mlp.onnx", mlp()), ("matmul-4mb.onnx", matmul_4mb()), *tensor_models().items()):
        onnx.checker.check_model(model)
        onnx.save(model, output / name)
        print(f"{output / name}: {(output / name).stat().st_size} bytes")
    mlp_tfjs(output / "mlp-tfjs")
    for name, data in (("mlp.tflite", mlp_tflite()), ("matmul-4mb.tflite", matmul_4mb_tflite())):
        (output / name).write_bytes(data)
        print(f"{output / name}: {len(data)} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "static")
