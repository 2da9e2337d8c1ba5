"""The example models agree with each other before any browser is involved: the .tflite flatbuffer that
make_models.py writes by hand runs in Google's native LiteRT interpreter and gives the ONNX model's
scores (so a wrong weight layout or op option fails here, not only in Chromium)."""

from __future__ import annotations

import base64
import re
import sys

import numpy as np
import onnxruntime
from ai_edge_litert.interpreter import Interpreter

from .conftest import EXAMPLES

sys.path.insert(0, str(EXAMPLES))
import make_models

SANDBOX_SOURCE = EXAMPLES.parents[1] / "frontend/src/sandbox.ts"


def test_the_tflite_mlp_gives_the_onnx_mlps_scores_in_native_litert():
    onnx = onnxruntime.InferenceSession(str(EXAMPLES / "static/mlp.onnx"))
    interpreter = Interpreter(model_path=str(EXAMPLES / "static/mlp.tflite"))
    # The signature is what LiteRT.js names inputs and outputs by: the app reads "probabilities".
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["features"], "outputs": ["probabilities"]}
    }
    run = interpreter.get_signature_runner("serving_default")
    rng = np.random.default_rng(3)
    for features in [
        np.array([[0.5, 1.0, -0.3, 2.0]], dtype=np.float32),
        *rng.normal(size=(20, 1, 4)).astype(np.float32),
    ]:
        (expected,) = onnx.run(None, {"features": features})
        got = run(features=features)["probabilities"]
        assert got.shape == (1, 3)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_the_tflite_benchmark_model_gives_the_onnx_ones_output_in_native_litert():
    x = (np.arange(1024 * 1024, dtype=np.float32) % 7 / 7).reshape(1024, 1024)
    (expected,) = onnxruntime.InferenceSession(str(EXAMPLES / "static/matmul-4mb.onnx")).run(None, {"x": x})
    run = Interpreter(model_path=str(EXAMPLES / "static/matmul-4mb.tflite")).get_signature_runner("serving_default")
    np.testing.assert_allclose(run(x=x)["y"], expected, rtol=1e-4, atol=1e-3)


def test_the_worker_carries_the_warmup_model_make_models_writes_and_it_runs():
    embedded = re.search(r'ORT_WARMUP_MODEL =\s*"([A-Za-z0-9+/=]+)"', SANDBOX_SOURCE.read_text()).group(1)
    model = make_models.warmup_model().SerializeToString()
    assert base64.b64decode(embedded) == model
    session = onnxruntime.InferenceSession(model)
    (y,) = session.run(None, {"x": np.ones((8, 8), dtype=np.float32)})
    np.testing.assert_allclose(y, np.ones((8, 8)))
