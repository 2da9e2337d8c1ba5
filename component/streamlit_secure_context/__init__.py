"""streamlit-secure-context: ONNX, TF.js and TFLite inference in a sandboxed browser frame.

The component fetches the model and the self-hosted runtime files from the app's own server,
runs them in an opaque-origin ``sandbox="allow-scripts"`` frame with a strict CSP (no network at all
inside it) and a Web Worker, and returns only the model's outputs to Python. A file the user picks
inside the component is read there and never sent to the server.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit.components.v1 as components

__all__ = [
    "FilePicker",
    "SecureContextBuildMissingError",
    "SecureContextError",
    "SecureContextTimeoutError",
    "SecureContextWorkerError",
    "streamlit_secure_context",
]

FRONTEND_DIR = Path(__file__).parent / "frontend"
DEFAULT_TIMEOUT_S = 30.0
# Set by the platform in app images: the edge's sandbox origin (isolated, multi-threaded mode).
SANDBOX_ORIGIN_ENV = "SECURE_CONTEXT_SANDBOX_ORIGIN"


class SecureContextError(RuntimeError):
    """An error reported by the component (kind: model, input, file, worker, runtime, timeout)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class SecureContextBuildMissingError(SecureContextError):
    """The package has no built frontend (a source checkout without `npm run build`)."""


class SecureContextTimeoutError(SecureContextError):
    """The sandboxed worker did not answer within the timeout."""


class SecureContextWorkerError(SecureContextError):
    """The worker failed: a model that does not load, an input of the wrong shape, a refused file."""


@dataclass(frozen=True)
class FilePicker:
    """A file input inside the sandbox: the file is read and preprocessed there, never uploaded.

    accept: file name endings allowed, e.g. (".csv", ".txt").
    max_bytes: larger files are refused inside the browser.
    label: the text next to the input.
    """

    accept: tuple[str, ...] = (".csv", ".txt")
    max_bytes: int = 1_000_000
    label: str = "Choose a file (it stays in your browser)"


_components: dict[str, Any] = {}


def runtime_kind(model_path: str, backend: str = "wasm", sandbox_origin: str = "") -> str:
    """The runtime a model needs, by its file name (the frontend's runtimeKind applies the same rule).

    WebGPU runs ONNX models on a sandbox origin only: the opaque frame's worker is not a secure
    context, so the browser gives it no WebGPU; there the wasm build runs.
    """
    path = re.split(r"[?#]", model_path, maxsplit=1)[0].lower()
    if path.endswith(".json"):
        return "tfjs"
    if path.endswith(".tflite"):
        return "litert"
    return "ort-webgpu" if backend == "webgpu" and sandbox_origin else "ort"


def sandbox_profile(kind: str, sandbox_origin: str, threads: int) -> str:
    """The component's name for one sandbox set-up: runtime, thread count and sandbox origin (hex).

    Streamlit puts a component's name in its frame's URL and sends its arguments only later: a frame
    that can read from its URL which runtime, mode and thread count it will need starts the sandbox
    and the runtime at once, while Streamlit is still rendering (cold start).
    """
    return f"sandbox_{kind}_{threads}_{sandbox_origin.encode().hex()}"


def _declare(profile: str) -> Any:
    if profile not in _components:
        if not (FRONTEND_DIR / "index.html").is_file():
            raise SecureContextBuildMissingError(
                "build",
                f"no built frontend in {FRONTEND_DIR}: run `npm ci && npm run build` in frontend/ "
                "(the wheel carries it)",
            )
        _components[profile] = components.declare_component(profile, path=str(FRONTEND_DIR))
    return _components[profile]


def streamlit_secure_context(
    model_path: str,
    inference_params: dict[str, Any] | None = None,
    security_config: dict[str, Any] | None = None,
    key: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    file_picker: FilePicker | None = None,
) -> dict[str, Any] | None:
    """Run an ONNX, TF.js GraphModel or TFLite model in the browser, in a sandboxed frame; return its outputs.

    Args:
        model_path: URL of the model on the app's own server (Streamlit's static serving), never a
            CDN: an ``.onnx`` file (ONNX Runtime Web), e.g. ``"app/static/model.onnx"``, or a TF.js
            GraphModel's ``model.json`` with its weight files beside it (TF.js, wasm backend), or a
            ``.tflite`` file (LiteRT.js, XNNPack on wasm; inputs and outputs named by its signature).
        inference_params: ``{"inputs": {"data": [...], "dims": [...]}}`` to infer on values from Python,
            ``"input_name"`` (default: the model's first input) and ``"shape"`` (for picked files, -1
            for one free dimension; default ``[1, -1]``), ``"backend"``: ``"wasm"`` (default) or
            ``"webgpu"``: ONNX Runtime's WebGPU build, for an ``.onnx`` model on a sandbox origin, where
            the browser has WebGPU (else its wasm backend runs; the result's ``backend`` says which).
        security_config: ``{"sandbox_origin": "https://edge:9443", "threads": 2}``. Without a sandbox
            origin (also read from the ``SECURE_CONTEXT_SANDBOX_ORIGIN`` environment variable) the model
            runs in an opaque-origin srcdoc frame, single-threaded. With one, in a frame on that origin
            (served by the edge with COEP/CORP and a strict CSP), cross-origin isolated: multi-threaded
            (``threads``, 1 to 64, default 2; ONNX Runtime Web and LiteRT.js).
        key: Streamlit widget key.
        timeout: seconds the browser waits for the worker before reporting a timeout.
        file_picker: show a file input inside the sandbox; only the model's output returns.

    Returns:
        None until the browser answers; then ``{"status": "ready", "inputs": [...], "outputs": [...],
        "backend": "wasm" | "webgpu", "threads": n}`` once the model is loaded, or ``{"status": "ok",
        "outputs": {name: {"dims", "data"}}, "inferenceMs": ...}`` after an inference.

    Raises:
        SecureContextBuildMissingError: the package has no built frontend.
        SecureContextTimeoutError: no answer within ``timeout``.
        SecureContextWorkerError: the worker's error (model, input, file, worker, runtime), with its message.
        ValueError: a timeout, sandbox origin, thread count or backend out of range (nothing is rendered).
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    security = dict(security_config or {})
    if "sandbox_origin" not in security and os.environ.get(SANDBOX_ORIGIN_ENV):
        security["sandbox_origin"] = os.environ[SANDBOX_ORIGIN_ENV]
    origin = security.get("sandbox_origin")
    if origin is not None and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", str(origin)):
        raise ValueError(f"sandbox_origin must be scheme://host[:port], got {origin!r}")
    threads = security.setdefault("threads", 2 if origin else 1)
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= 64:
        raise ValueError(f"threads must be an integer from 1 to 64, got {threads!r}")
    params = dict(inference_params or {})
    backend = params.setdefault("backend", "wasm")
    if backend not in ("wasm", "webgpu"):
        raise ValueError(f"backend must be 'wasm' or 'webgpu', got {backend!r}")
    kind = runtime_kind(model_path, backend, origin or "")
    value = _declare(sandbox_profile(kind, origin or "", threads))(
        model_url=model_path,
        inference_params=params,
        security_config=security,
        timeout_ms=int(timeout * 1000),
        file_picker=None
        if file_picker is None
        else {"accept": list(file_picker.accept), "max_bytes": file_picker.max_bytes, "label": file_picker.label},
        key=key,
        default=None,
    )
    return raise_for_error(value)


def raise_for_error(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The component's value, or the matching exception when it reports an error."""
    if not isinstance(value, dict) or value.get("status") != "error":
        return value
    kind = str(value.get("kind", "worker"))
    message = str(value.get("message", "unknown error"))
    if kind == "timeout":
        raise SecureContextTimeoutError(kind, message)
    raise SecureContextWorkerError(kind, message)
