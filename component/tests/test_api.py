"""The Python side: errors from the browser become the documented exceptions."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import streamlit_secure_context as ssc


@pytest.mark.parametrize(
    ("value", "error", "kind"),
    [
        ({"status": "error", "kind": "timeout", "message": "no answer"}, ssc.SecureContextTimeoutError, "timeout"),
        ({"status": "error", "kind": "model", "message": "HTTP 404"}, ssc.SecureContextWorkerError, "model"),
        ({"status": "error", "kind": "input", "message": "bad shape"}, ssc.SecureContextWorkerError, "input"),
        ({"status": "error", "kind": "file", "message": "too big"}, ssc.SecureContextWorkerError, "file"),
        ({"status": "error"}, ssc.SecureContextWorkerError, "worker"),
    ],
)
def test_errors_from_the_browser_raise_with_their_kind_and_message(value, error, kind):
    with pytest.raises(error) as raised:
        ssc.raise_for_error(value)
    assert raised.value.kind == kind
    assert value.get("message", "unknown error") in str(raised.value)


@pytest.mark.parametrize("value", [None, {"status": "ok", "outputs": {}}, {"status": "ready"}])
def test_other_values_pass_through(value):
    assert ssc.raise_for_error(value) == value


def test_a_missing_build_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(ssc, "FRONTEND_DIR", tmp_path)
    monkeypatch.setattr(ssc, "_components", {})
    with pytest.raises(ssc.SecureContextBuildMissingError, match="npm run build"):
        ssc.streamlit_secure_context("app/static/mlp.onnx")


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        ssc.streamlit_secure_context("app/static/mlp.onnx", timeout=0)


@pytest.mark.parametrize("threads", [0, -1, 65, 1.5, "2", True])
def test_threads_must_be_a_small_positive_integer(threads):
    with pytest.raises(ValueError, match="threads"):
        ssc.streamlit_secure_context("app/static/mlp.onnx", security_config={"threads": threads})


@pytest.mark.parametrize(
    ("model_path", "kind"),
    [
        ("app/static/mlp.onnx", "ort"),
        ("app/static/MLP.ONNX?v=2", "ort"),
        ("app/static/mlp-tfjs/model.json", "tfjs"),
        ("app/static/m.json#x", "tfjs"),
        ("app/static/mlp.tflite", "litert"),
        ("app/static/mlp.tflite?x.json", "litert"),
        ("app/static/model", "ort"),
    ],
)
def test_the_runtime_is_chosen_by_the_model_file_name(model_path, kind):
    assert ssc.runtime_kind(model_path) == kind


def test_the_sandbox_profile_names_runtime_threads_and_origin():
    # The frontend decodes this name from its frame's URL (main.ts, profileFromUrl).
    assert ssc.sandbox_profile("ort", "", 1) == "sandbox_ort_1_"
    name = ssc.sandbox_profile("litert", "https://edge:9443", 2)
    assert name.startswith("sandbox_litert_2_")
    assert bytes.fromhex(name.rsplit("_", 1)[1]).decode() == "https://edge:9443"


def test_the_backend_is_wasm_or_webgpu():
    with pytest.raises(ValueError, match="backend"):
        ssc.streamlit_secure_context("app/static/mlp.onnx", inference_params={"backend": "gpu"})


def test_nan_outside_a_tensor_is_refused_before_anything_is_sent():
    # The browser parses the arguments with JSON.parse: a bare NaN would leave the component unrendered
    # (no timer, no answer). Inside a tensor it travels as bytes.
    with pytest.raises(ValueError, match="finite numbers only"):
        ssc.streamlit_secure_context("app/static/mlp.onnx", inference_params={"shape": [1, float("nan")]})


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([1, 2], "inputs must be a dict"),
        ({"x": np.array(["a"])}, r"inputs\['x'\]: dtype str32 is not one of"),
        ({"x": np.zeros(2, np.complex64)}, r"inputs\['x'\]: dtype complex64"),
        ({"x": {"data": [1, 2, 3], "dims": [2, 2]}}, r"inputs\['x'\]: 3 values do not fit dims \[2, 2\]"),
        ({"x": {"data": [1], "shape": [1]}}, r"inputs\['x'\]: expected keys data, dims \(optional\)"),
        ({"x": {"data": ["Doe"]}}, r"inputs\['x'\]: the data is not an array of float32"),
        ({"": [1.0]}, "non-empty string"),
        ({"x": {"data": [1], "dims": [-1]}}, "dims must be a list of non-negative integers"),
    ],
)
def test_bad_inputs_are_clear_errors_in_python(inputs, message):
    with pytest.raises(ValueError, match=message):
        ssc.encode_inputs(inputs)


def test_inputs_travel_as_little_endian_bytes_with_dims_and_dtype():
    encoded = ssc.encode_inputs(
        {"x": np.array([[1.0, np.nan]], np.float32), "n": {"data": [2**62 + 1], "dtype": "int64"}, "b": [True]}
    )
    assert [(e["name"], e["dims"], e["dtype"]) for e in encoded] == [
        ("x", [1, 2], "float32"),
        ("n", [1], "int64"),
        ("b", [1], "float32"),
    ]
    assert base64.b64decode(encoded[1]["b64"]) == (2**62 + 1).to_bytes(8, "little")
    assert np.isnan(np.frombuffer(base64.b64decode(encoded[0]["b64"]), "<f4")[1])
    # The unnamed form: the model's first input, float32.
    (legacy,) = ssc.encode_inputs({"data": [0.5, 1.0], "dims": [1, 2]})
    assert (legacy["name"], legacy["dims"], legacy["dtype"]) == (None, [1, 2], "float32")
    # A big-endian array is sent little-endian.
    (swapped,) = ssc.encode_inputs({"x": np.array([1], ">i4")})
    assert base64.b64decode(swapped["b64"]) == b"\x01\x00\x00\x00"


def test_outputs_come_back_as_python_numbers_and_numpy_arrays():
    raw = np.array([[np.nan, -np.inf], [0.5, 2.0]], np.float32).tobytes()
    value = {
        "status": "ok",
        "outputs": {
            "y": {"dims": [2, 2], "dtype": "float32", "b64": base64.b64encode(raw).decode()},
            "label": {
                "dims": [1],
                "dtype": "int64",
                "b64": base64.b64encode((2**60 + 3).to_bytes(8, "little")).decode(),
            },
            "mask": {"dims": [2], "dtype": "bool", "b64": base64.b64encode(b"\x01\x00").decode()},
        },
        "inferenceMs": 1.5,
    }
    result = ssc.decode_result(value)
    y = result["outputs"]["y"]
    assert y["array"].shape == (2, 2)
    assert y["array"].dtype == np.float32
    assert np.isnan(y["data"][0])
    assert y["data"][1:] == [float("-inf"), 0.5, 2.0]
    assert result["outputs"]["label"]["data"] == [2**60 + 3]
    assert type(result["outputs"]["label"]["data"][0]) is int
    assert result["outputs"]["mask"]["data"] == [True, False]
    assert result["inferenceMs"] == 1.5


@pytest.mark.parametrize(
    "output",
    [
        {"dims": [2], "dtype": "float32", "b64": base64.b64encode(b"\x00" * 4).decode()},
        {"dims": [1], "dtype": "complex64", "b64": ""},
        {"dims": [1], "dtype": "float32", "b64": "not base64!"},
        {"dims": [1], "dtype": "float32"},
    ],
)
def test_an_output_that_does_not_decode_is_a_worker_error(output):
    with pytest.raises(ssc.SecureContextWorkerError, match="could not be decoded"):
        ssc.decode_result({"status": "ok", "outputs": {"y": output}})


def test_the_picked_files_dtype_is_checked():
    with pytest.raises(ValueError, match="dtype"):
        ssc.streamlit_secure_context("app/static/mlp.onnx", inference_params={"dtype": "complex64"})


def test_a_static_model_with_static_serving_off_is_a_config_error(tmp_path):
    with pytest.raises(ssc.SecureContextConfigError, match=r"static serving is off: set server\.enableStaticServing"):
        ssc.check_static_model("app/static/mlp.onnx", tmp_path, static_serving=False)
    # A model served elsewhere (the edge, say) is not Streamlit's concern.
    ssc.check_static_model("models/mlp.onnx", tmp_path, static_serving=False)


def test_a_model_over_streamlits_static_limit_is_a_config_error_that_says_what_to_do(tmp_path):
    big = tmp_path / "big.onnx"
    with big.open("wb") as f:  # sparse: no 200 MiB written
        f.truncate(ssc.STATIC_LIMIT_BYTES + 1)
    with pytest.raises(ssc.SecureContextConfigError, match=r"is 209715201 bytes; Streamlit serves static files up to"):
        ssc.check_static_model("./app/static/big.onnx?v=1", tmp_path, static_serving=True)
    with big.open("r+b") as f:
        f.truncate(ssc.STATIC_LIMIT_BYTES)
    ssc.check_static_model("app/static/big.onnx", tmp_path, static_serving=True)
    # A missing file is the browser's 404 to report (it may be added after the app starts).
    ssc.check_static_model("app/static/missing.onnx", tmp_path, static_serving=True)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ssc.ImagePreprocess(size=(0, 16)), r"size must be \(height, width\)"),
        (ssc.ImagePreprocess(size=(16, 16), layout="CHW"), "layout must be"),
        (ssc.ImagePreprocess(size=(16, 16), channels="RGBA"), "channels must be"),
        (ssc.ImagePreprocess(size=(16, 16), mean=(0.1, 0.2)), "mean must hold 1 or 3"),
        (ssc.ImagePreprocess(size=(16, 16), std=(0.0,)), "std must not hold 0"),
        (ssc.ImagePreprocess(size=(16, 16), mean=(float("nan"),)), "mean must hold"),
        (ssc.ImagePreprocess(size=(16, 16), dtype="int64"), "dtype must be"),
        (ssc.ImagePreprocess(size=(16, 16), crop="top"), "crop must be 'none' or 'center'"),
        (ssc.ImagePreprocess(size=(16, 16), window="auto"), r"window must be None, 'file' or \(center, width\)"),
        (ssc.ImagePreprocess(size=(16, 16), window=(40, 0)), "with width > 0"),
        (ssc.ImagePreprocess(size=(16, 16), window=(float("nan"), 400)), "window must be"),
    ],
)
def test_a_bad_image_spec_is_a_clear_error(spec, message):
    with pytest.raises(ValueError, match=message):
        spec.to_args()


def test_an_image_spec_goes_per_channel_to_the_browser():
    spec = ssc.ImagePreprocess(size=(224, 224), channels="BGR", mean=(0.5,), std=(0.25,))
    assert spec.to_args() == {
        "size": [224, 224],
        "layout": "NCHW",
        "channels": "BGR",
        "scale": 1 / 255,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "dtype": "float32",
        "crop": "none",
        "window": None,
    }
    assert ssc.ImagePreprocess(size=(8, 8), crop="center", window=(40, 400)).to_args()["window"] == [40.0, 400.0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"top_k": 3, "softmx": True}, r"postprocess: unknown keys softmx \(known: "),
        ({"top_k": 0}, "top_k must be an integer from 1 to 1000"),
        ({"top_k": True}, "top_k must be an integer"),
        ({"softmax": "yes"}, "softmax must be true or false"),
        ({"labels": ["a", 2]}, "labels must be a tuple"),
        ({"threshold": float("nan")}, "threshold must be a finite number"),
        ({"output": ""}, "output must be an output's name"),
        ("softmax", "postprocess must be a Postprocess or a dict, got str"),
    ],
)
def test_a_bad_postprocess_is_a_clear_error_before_anything_is_sent(value, message):
    with pytest.raises(ValueError, match=message):
        ssc.streamlit_secure_context("app/static/m.onnx", postprocess=value)


def test_a_postprocess_goes_to_the_browser_checked():
    post = ssc.Postprocess.from_value({"softmax": True, "top_k": 2, "labels": ["a", "b", "c"], "threshold": 0.5})
    assert post.to_args() == {
        "output": None,
        "softmax": True,
        "topK": 2,
        "labels": ["a", "b", "c"],
        "threshold": 0.5,
        "keepOutputs": False,
    }
