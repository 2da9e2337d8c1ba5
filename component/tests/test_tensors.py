"""Tensors from Python through a model in the browser and back, in headless Chromium: several named
inputs, every element type, int64 beyond 2**53, NaN and Infinity both ways, numpy arrays in and out.
Each answer is checked against native onnxruntime on the same model and inputs."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime
import pytest

from .conftest import EXAMPLES, start_streamlit

sys.path.insert(0, str(EXAMPLES))
import tensor_cases

COMPONENT_FRAME = "iframe[title^='streamlit_secure_context.sandbox_']"


@pytest.fixture(scope="module")
def tensors_url():
    yield from start_streamlit("tensors_app.py")


def shown(page, url: str, case: str) -> str:
    """The app's RESULT or ERROR line for one case (the model loads and runs once)."""
    page.goto(f"{url}/?case={case}")
    return page.locator("text=/^(RESULT|ERROR) /").inner_text(timeout=120_000)


def native(case: str) -> dict[str, np.ndarray]:
    """What onnxruntime in Python gives for the case's model and inputs."""
    model, inputs = tensor_cases.CASES[case]
    session = onnxruntime.InferenceSession(str(EXAMPLES / "static" / model.rsplit("/", 1)[1]))
    if set(inputs) == {"data", "dims"}:
        feeds = {session.get_inputs()[0].name: np.array(inputs["data"], dtype=np.float32).reshape(inputs["dims"])}
    else:
        feeds = {
            name: np.array(v["data"], dtype=v["dtype"]) if isinstance(v, dict) else v for name, v in inputs.items()
        }
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def check_outputs(line: str, expected: dict[str, np.ndarray], exact: bool = False) -> dict:
    """The app's RESULT against native onnxruntime: dtypes, shapes, values (floats that a kernel
    computed within 1e-5 relative, exactly when ``exact``; integers always exactly)."""
    assert line.startswith("RESULT "), line
    got = json.loads(line.removeprefix("RESULT "))
    assert sorted(got) == sorted(expected)
    for name, want in expected.items():
        out = got[name]
        dtype = "bool" if want.dtype == np.bool_ else str(want.dtype)
        assert out["dtype"] == dtype, name
        assert out["dims"] == list(want.shape), name
        # The numpy array Python got has the model's dtype and shape.
        assert out["array"] == [str(want.dtype), list(want.shape)], name
        data = np.array(out["data"], dtype=want.dtype)
        if want.dtype.kind == "f" and not exact:
            np.testing.assert_allclose(data, want.ravel(), rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(data, want.ravel(), err_msg=name)
        if want.dtype.kind == "f":
            # NaN stays NaN (never None); -0.0 keeps its sign (a NaN's sign bit is not compared: the
            # wasm and native kernels differ there).
            assert None not in out["data"], name
            numbers = ~np.isnan(want.ravel())
            np.testing.assert_array_equal(np.signbit(data[numbers]), np.signbit(want.ravel()[numbers]), err_msg=name)
        if want.dtype.kind in "iu":
            # Python ints, exact: an int64 past 2**53 is not rounded through a float.
            assert all(type(v) is int for v in out["data"]), name
            assert out["data"] == [int(v) for v in want.ravel()], name
    return got


def test_every_element_type_comes_back_bit_for_bit(page, tensors_url):
    line = shown(page, tensors_url, "dtypes")
    got = check_outputs(line, native("dtypes"), exact=True)
    # The Identity model: what went in came out, NaN and Infinity included.
    _, inputs = tensor_cases.CASES["dtypes"]
    assert got["y_int64"]["data"] == [*tensor_cases.INT64_EXTREMES, 0, 5]
    assert got["y_bool"]["data"] == [True, False, True, True, False, False]
    floats = got["y_float32"]["data"]
    assert np.isnan(floats[0])
    assert floats[1:3] == [float("inf"), float("-inf")]
    np.testing.assert_array_equal(np.array(got["y_float16"]["data"], np.float16), inputs["x_float16"])


def test_two_named_inputs_one_int64_and_int64_and_nan_outputs(page, tensors_url):
    got = check_outputs(shown(page, tensors_url, "two-inputs"), native("two-inputs"))
    assert got["shifted"]["data"] == [2**60 + 4]
    assert np.isnan(got["root"]["data"][1])


def test_an_int64_argmax_classifier_answers_instead_of_hanging(page, tensors_url):
    # Before: the BigInt output could not be serialised and Python waited forever.
    got = check_outputs(shown(page, tensors_url, "classifier"), native("classifier"))
    assert got["label"]["dtype"] == "int64"


def test_nan_and_infinity_in_a_plain_list_reach_the_model(page, tensors_url):
    # Before: Streamlit's JSON carried NaN, the browser refused to parse it, and Python waited forever.
    got = check_outputs(shown(page, tensors_url, "nan-list"), native("nan-list"))
    assert all(np.isnan(v) for v in got["probabilities"]["data"])


def test_an_output_the_component_cannot_return_is_an_error_within_the_deadline(page, tensors_url):
    assert shown(page, tensors_url, "strings") == (
        "ERROR output: output 2 has an element type the component does not return"
    )


def test_a_runtime_refuses_an_input_type_it_does_not_take_by_position(page, tensors_url):
    assert (
        shown(page, tensors_url, "tfjs-int64")
        == "ERROR input: TF.js takes float32, int32, bool inputs; input 1 is int64"
    )
