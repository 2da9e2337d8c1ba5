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
    monkeypatch.setattr(ssc, "_component", None)
    with pytest.raises(ssc.SecureContextBuildMissingError, match="npm run build"):
        ssc.streamlit_secure_context("app/static/mlp.onnx")


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        ssc.streamlit_secure_context("app/static/mlp.onnx", timeout=0)
