"""The tensor tests' cases: a model and the inputs Python sends it (tensors_app.py runs one, and
component/tests/test_tensors.py checks its answer against native onnxruntime on the same inputs)."""

from __future__ import annotations

import numpy as np

INT64_EXTREMES = [-(2**63), 2**63 - 1, 2**53 + 1, -1]
FLOATS = [np.nan, np.inf, -np.inf, -0.0, 1.5, 3.0e38]

CASES = {
    # Every element type through an Identity, bit for bit.
    "dtypes": (
        "app/static/dtypes.onnx",
        {
            "x_float32": np.array(FLOATS, dtype=np.float32),
            "x_float16": np.array([np.nan, np.inf, -np.inf, -0.0, 1.5, 65504], dtype=np.float16),
            "x_int32": np.array([-(2**31), 2**31 - 1, 0, 7, -7, 1], dtype=np.int32),
            "x_int64": np.array([*INT64_EXTREMES, 0, 5], dtype=np.int64),
            "x_uint8": np.array([0, 255, 1, 2, 3, 4], dtype=np.uint8),
            "x_bool": np.array([True, False, True, True, False, False]),
        },
    ),
    # Two named inputs, one int64; the outputs: float32, float32 with NaN from the model, int64 > 2**53.
    "two-inputs": (
        "app/static/two-inputs.onnx",
        {"x": np.array([[1.5, -4.0, 2.0]], dtype=np.float32), "n": {"data": [3], "dtype": "int64"}},
    ),
    # An int64 ArgMax output (BigInt in the browser), the model's first input fed a plain list.
    "classifier": ("app/static/classifier.onnx", {"data": [0.5, 1.0, -0.3, 2.0], "dims": [1, 4]}),
    # NaN and Infinity in a plain list (Streamlit's JSON would carry them as NaN, which the browser
    # cannot parse): they travel as float32 bytes.
    "nan-list": ("app/static/mlp.onnx", {"data": [float("nan"), 1.0, float("inf"), 2.0], "dims": [1, 4]}),
    # A string output: refused with a clear error, within the deadline.
    "strings": ("app/static/strings.onnx", {"x": np.array([1.0], dtype=np.float32)}),
    # Two named inputs for a TF.js and a TFLite model that take float32 only: an int64 input is refused.
    "tfjs-int64": ("app/static/mlp-tfjs/model.json", {"features": np.ones((1, 4), dtype=np.int64)}),
}
