"""The Python side: errors from the browser become the documented exceptions."""

from __future__ import annotations

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
