"""streamlit-secure-context: ONNX, TF.js and TFLite inference in a sandboxed browser frame.

The component fetches the model and the self-hosted runtime files from the app's own server,
runs them in an opaque-origin ``sandbox="allow-scripts"`` frame with a strict CSP (no network at all
inside it) and a Web Worker, and returns only the model's outputs to Python. A file the user picks
inside the component is read there and never sent to the server.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit.components.v1 as components

__all__ = [
    "FilePicker",
    "ImagePreprocess",
    "Postprocess",
    "SecureContextBuildMissingError",
    "SecureContextConfigError",
    "SecureContextError",
    "SecureContextTimeoutError",
    "SecureContextWorkerError",
    "decode_result",
    "encode_inputs",
    "streamlit_secure_context",
]

FRONTEND_DIR = Path(__file__).parent / "frontend"
DEFAULT_TIMEOUT_S = 30.0
# Set by the platform in app images: the edge's sandbox origin (isolated, multi-threaded mode).
SANDBOX_ORIGIN_ENV = "SECURE_CONTEXT_SANDBOX_ORIGIN"
# Streamlit answers 404 for a static file larger than this (MAX_APP_STATIC_FILE_SIZE).
STATIC_LIMIT_BYTES = 200 * 1024 * 1024
# Tensor element types that travel between Python and the browser, as raw little-endian bytes (base64):
# int64 keeps every bit (no BigInt in JSON), NaN and Infinity survive (JSON has neither).
DTYPES = (
    "float32",
    "float16",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
)


class SecureContextError(RuntimeError):
    """An error reported by the component (kind: model, input, file, worker, runtime, timeout)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class SecureContextBuildMissingError(SecureContextError):
    """The package has no built frontend (a source checkout without `npm run build`)."""


class SecureContextConfigError(SecureContextError):
    """The app's set-up cannot serve the model: static serving off, or a model over its size limit."""


class SecureContextTimeoutError(SecureContextError):
    """The sandboxed worker did not answer within the timeout."""


class SecureContextWorkerError(SecureContextError):
    """The worker failed: a model that does not load, an input of the wrong shape, a refused file."""


@dataclass(frozen=True)
class ImagePreprocess:
    """How a picked PNG, JPEG or WebP image becomes the model's input, inside the sandbox's worker
    (the browser's own decoder: createImageBitmap, then an OffscreenCanvas).

    size: (height, width) the image is resized to (the browser's high-quality scaling; an image
        already of that size is taken pixel for pixel).
    layout: "NCHW" ([1, C, H, W]) or "NHWC" ([1, H, W, C]).
    channels: "RGB", "BGR" or "GRAY" (the mean of R, G and B, one channel).
    scale, mean, std: each value becomes (pixel * scale - mean[c]) / std[c] (pixel 0-255).
    dtype: "float32", "float16" or "uint8" (uint8 takes the pixels as they are: no scale/mean/std).
    crop: "none" (the whole image is resized to size) or "center" (the largest centred region of the
        model's aspect ratio is cut out, then resized: nothing is stretched).
    window: DICOM only. None: the pixel is the modality value (stored value * RescaleSlope +
        RescaleIntercept) as it is; "file": the file's first WindowCenter/WindowWidth; (center, width):
        that window. With a window the pixel becomes 0-255 (linear, clipped), as for a PNG.
    """

    size: tuple[int, int]
    layout: str = "NCHW"
    channels: str = "RGB"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    dtype: str = "float32"
    crop: str = "none"
    window: tuple[float, float] | str | None = None

    def to_args(self) -> dict[str, Any]:
        """The spec as the frontend receives it, checked."""
        if self.crop not in ("none", "center"):
            raise ValueError(f"ImagePreprocess.crop must be 'none' or 'center', got {self.crop!r}")
        window: Any = self.window
        if window is not None and window != "file":
            if (
                not isinstance(window, tuple | list)
                or len(window) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in window)
                or window[1] <= 0
            ):
                raise ValueError(
                    f"ImagePreprocess.window must be None, 'file' or (center, width) with width > 0, got {window!r}"
                )
            window = [float(window[0]), float(window[1])]
        if len(self.size) != 2 or not all(isinstance(d, int) and 1 <= d <= 8192 for d in self.size):
            raise ValueError(f"ImagePreprocess.size must be (height, width), 1 to 8192 each, got {self.size!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"ImagePreprocess.layout must be 'NCHW' or 'NHWC', got {self.layout!r}")
        if self.channels not in ("RGB", "BGR", "GRAY"):
            raise ValueError(f"ImagePreprocess.channels must be 'RGB', 'BGR' or 'GRAY', got {self.channels!r}")
        count = 1 if self.channels == "GRAY" else 3
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) not in (1, count) or not all(math.isfinite(v) for v in values):
                raise ValueError(f"ImagePreprocess.{name} must hold 1 or {count} finite numbers, got {values!r}")
        if any(v == 0 for v in self.std) or not math.isfinite(self.scale):
            raise ValueError("ImagePreprocess.std must not hold 0 and scale must be finite")
        if self.dtype not in ("float32", "float16", "uint8"):
            raise ValueError(f"ImagePreprocess.dtype must be 'float32', 'float16' or 'uint8', got {self.dtype!r}")

        def per_channel(values: tuple[float, ...]) -> list[float]:
            return [float(v) for v in values] * (count if len(values) == 1 else 1)

        return {
            "size": list(self.size),
            "layout": self.layout,
            "channels": self.channels,
            "scale": float(self.scale),
            "mean": per_channel(self.mean),
            "std": per_channel(self.std),
            "dtype": self.dtype,
            "crop": self.crop,
            "window": window,
        }


@dataclass(frozen=True)
class Postprocess:
    """What the sandbox's worker makes of an output, so that only the answer returns to Python.

    The output's values (all of them, in order: one image's class scores) become
    ``result["classes"]``: ``[{"index", "label", "score"}, ...]``, best first.

    output: the output's name (default: the model's first output).
    softmax: turn the values into probabilities first (for a model that returns logits).
    top_k: how many classes to return (1: the argmax).
    labels: a label per class index (as many as the output has values, or none).
    threshold: drop the classes whose score is below it.
    keep_outputs: also return the raw outputs (by default they stay in the browser).
    """

    output: str | None = None
    softmax: bool = False
    top_k: int = 1
    labels: tuple[str, ...] = ()
    threshold: float | None = None
    keep_outputs: bool = False

    @classmethod
    def from_value(cls, value: Postprocess | Mapping[str, Any]) -> Postprocess:
        """A Postprocess, or a dict of its fields (unknown keys refused)."""
        if isinstance(value, Postprocess):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"postprocess must be a Postprocess or a dict, got {type(value).__name__}")
        known = {"output", "softmax", "top_k", "labels", "threshold", "keep_outputs"}
        unknown = sorted(str(k) for k in set(value) - known)
        if unknown:
            raise ValueError(f"postprocess: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        fields = dict(value)
        if isinstance(fields.get("labels"), list):
            fields["labels"] = tuple(fields["labels"])
        return cls(**fields)

    def to_args(self) -> dict[str, Any]:
        """The spec as the frontend receives it, checked."""
        if self.output is not None and (not isinstance(self.output, str) or not self.output):
            raise ValueError(f"postprocess.output must be an output's name, got {self.output!r}")
        for name in ("softmax", "keep_outputs"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"postprocess.{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or not 1 <= self.top_k <= 1000:
            raise ValueError(f"postprocess.top_k must be an integer from 1 to 1000, got {self.top_k!r}")
        if not isinstance(self.labels, tuple) or not all(isinstance(label, str) for label in self.labels):
            raise ValueError("postprocess.labels must be a tuple (or list) of strings")
        threshold = self.threshold
        if threshold is not None and (
            not isinstance(threshold, int | float) or isinstance(threshold, bool) or not math.isfinite(threshold)
        ):
            raise ValueError(f"postprocess.threshold must be a finite number or None, got {threshold!r}")
        return {
            "output": self.output,
            "softmax": self.softmax,
            "topK": self.top_k,
            "labels": list(self.labels),
            "threshold": None if threshold is None else float(threshold),
            "keepOutputs": self.keep_outputs,
        }


# The image types the worker decodes (by the picked file's name): the browser's own decoders, and
# DICOM (dicom-parser; uncompressed little endian only).
IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".webp")
DICOM_TYPES = (".dcm", ".dicom")


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
    image: ImagePreprocess | None = None
    """With it, a picked .png/.jpg/.jpeg/.webp file is decoded and preprocessed as an image, and a
    .dcm/.dicom file as a DICOM image (uncompressed little endian, one sample per pixel)."""


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
    postprocess: Postprocess | Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Run an ONNX, TF.js GraphModel or TFLite model in the browser, in a sandboxed frame; return its outputs.

    Args:
        model_path: URL of the model on the app's own server (Streamlit's static serving), never a
            CDN: an ``.onnx`` file (ONNX Runtime Web), e.g. ``"app/static/model.onnx"``, or a TF.js
            GraphModel's ``model.json`` with its weight files beside it (TF.js, wasm backend), or a
            ``.tflite`` file (LiteRT.js, XNNPack on wasm; inputs and outputs named by its signature).
        inference_params: ``"inputs"`` to infer on values from Python: ``{name: value}`` for any number
            of named inputs, each value a numpy array (its dtype kept), a list (float32) or ``{"data",
            "dims", "dtype"}``; or ``{"data": [...], "dims": [...]}`` for the model's first input
            (float32). Element types: float32, float16, float64, int8, int16, int32, int64, uint8,
            uint16, uint32, uint64, bool (ONNX Runtime takes them all; TF.js float32, int32, bool;
            LiteRT.js float32, int32, uint8). Tensors travel as bytes: int64 exactly, NaN and
            Infinity kept. For picked files: ``"input_name"`` (default: the model's first input),
            ``"shape"`` (-1 for one free dimension; default ``[1, -1]``) and ``"dtype"`` (default
            ``"float32"``). ``"backend"``: ``"wasm"`` (default) or
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
        postprocess: a ``Postprocess`` (or a dict of its fields): softmax, top-k with labels and a
            threshold applied in the sandbox's worker; the result then holds ``classes`` (best first)
            and no raw outputs unless ``keep_outputs``.

    Returns:
        None until the browser answers; then ``{"status": "ready", "inputs": [...], "outputs": [...],
        "backend": "wasm" | "webgpu", "threads": n}`` once the model is loaded, or ``{"status": "ok",
        "outputs": {name: {"dims", "dtype", "data", "array"}}, "inferenceMs": ...}`` (with
        ``postprocess``: ``"classes": [{"index", "label", "score"}, ...]``) after an
        inference: ``data`` a flat list of Python numbers (ints for integer types, NaN kept),
        ``array`` a numpy array of the output's dtype and shape. A picked file's errors never quote its
        name or content: they are fixed text and numbers.

    Raises:
        SecureContextBuildMissingError: the package has no built frontend.
        SecureContextConfigError: a model under ``app/static/`` with static serving off, or over
            Streamlit's 200 MiB static limit.
        SecureContextTimeoutError: no answer within ``timeout``.
        SecureContextWorkerError: the worker's error (model, input, file, worker, runtime), with its message.
        ValueError: a timeout, sandbox origin, thread count, backend, dtype or input out of range, a
            bad image spec or postprocess (unknown keys included), or NaN/Infinity outside a tensor
            (nothing is rendered).
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
    dtype = params.setdefault("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"dtype (of a picked file's values) must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if "inputs" in params:
        params["inputs"] = encode_inputs(params["inputs"])
    post = None if postprocess is None else Postprocess.from_value(postprocess).to_args()
    args = {
        "model_url": model_path,
        "inference_params": params,
        "security_config": security,
        "timeout_ms": int(timeout * 1000),
        "file_picker": None
        if file_picker is None
        else {
            "accept": list(file_picker.accept),
            "max_bytes": file_picker.max_bytes,
            "label": file_picker.label,
            "image": None if file_picker.image is None else file_picker.image.to_args(),
        },
        "postprocess": post,
    }
    _check_json(args)
    _check_static(model_path)
    kind = runtime_kind(model_path, backend, origin or "")
    value = _declare(sandbox_profile(kind, origin or "", threads))(**args, key=key, default=None)
    return decode_result(value)


def check_static_model(model_path: str, static_dir: Path, static_serving: bool) -> None:
    """Refuses a model under ``app/static/`` that Streamlit will not serve: with static serving off it
    answers every such URL with its index page (the runtime then reports a parse error), and above
    200 MiB with a bare 404. Other URLs (served by the edge, say) are not checked."""
    path = re.split(r"[?#]", model_path, maxsplit=1)[0].lstrip("./")
    if not path.startswith("app/static/"):
        return
    if not static_serving:
        raise SecureContextConfigError(
            "config",
            f"the model {model_path} is under app/static/, but Streamlit's static serving is off: set "
            "server.enableStaticServing = true in .streamlit/config.toml",
        )
    file = static_dir / path.removeprefix("app/static/")
    if file.is_file() and file.stat().st_size > STATIC_LIMIT_BYTES:
        raise SecureContextConfigError(
            "config",
            f"the model {model_path} is {file.stat().st_size} bytes; Streamlit serves static files up to "
            f"{STATIC_LIMIT_BYTES} bytes (200 MiB) and answers 404 above: serve a larger model from the same "
            "origin another way (e.g. a location of the edge's nginx in front of the app) and pass its URL",
        )


def _check_static(model_path: str) -> None:
    from streamlit import config, file_util
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None:  # not in a running app (a bare import or a test): nothing to check against
        return
    static_dir = Path(file_util.get_app_static_dir(ctx.main_script_path))
    check_static_model(model_path, static_dir, bool(config.get_option("server.enableStaticServing")))


def _check_json(args: dict[str, Any]) -> None:
    """Refuses what the browser could not read: the frontend parses the arguments with JSON.parse,
    which has no NaN or Infinity, so such a value would leave the component waiting with no timer at
    all (tensors carry them as bytes instead)."""
    try:
        json.dumps(args, allow_nan=False)
    except ValueError as error:
        raise ValueError(
            "inference_params and security_config must hold finite numbers only (NaN and Infinity are "
            "allowed inside tensors: pass them in inputs)"
        ) from error
    except TypeError as error:
        raise ValueError(f"inference_params and security_config must be JSON values: {error}") from error


def _tensor(where: str, value: Any, dims: Any = None, dtype: Any = None) -> dict[str, Any]:
    """One input as the browser receives it: dims, dtype and its bytes (little-endian, base64)."""
    if isinstance(value, np.ndarray):
        array = value
        if dtype is not None:
            array = array.astype(str(dtype))
    else:
        try:
            array = np.asarray(value, dtype=str(dtype or "float32"))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: the data is not an array of {dtype or 'float32'} numbers") from error
    name = array.dtype.name
    if name not in DTYPES:
        raise ValueError(f"{where}: dtype {name} is not one of {', '.join(DTYPES)}")
    if dims is not None:
        if not isinstance(dims, list | tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims
        ):
            raise ValueError(f"{where}: dims must be a list of non-negative integers, got {dims!r}")
        if math.prod(dims) != array.size:
            raise ValueError(f"{where}: {array.size} values do not fit dims {list(dims)}")
        array = array.reshape(dims)
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return {"dims": list(array.shape), "dtype": name, "b64": base64.b64encode(raw).decode("ascii")}


def encode_inputs(inputs: Any) -> list[dict[str, Any]]:
    """The ``inputs`` of ``inference_params`` in the form the browser receives (see
    ``streamlit_secure_context``): a list of ``{"name", "dims", "dtype", "b64"}``."""
    if not isinstance(inputs, Mapping):
        raise ValueError(f"inputs must be a dict, got {type(inputs).__name__}")
    # One unnamed float32 input for the model's first input: {"data": [...], "dims": [...]}.
    if set(inputs) == {"data", "dims"} and not isinstance(inputs["data"], np.ndarray | Mapping):
        return [{"name": None, **_tensor("inputs", inputs["data"], inputs["dims"])}]
    encoded = []
    for name, value in inputs.items():
        where = f"inputs[{name!r}]"
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: an input's name must be a non-empty string")
        if isinstance(value, Mapping):
            unknown = set(value) - {"data", "dims", "dtype"}
            if unknown or "data" not in value:
                raise ValueError(
                    f"{where}: expected keys data, dims (optional) and dtype (optional), got {sorted(value)}"
                )
            encoded.append({"name": name, **_tensor(where, value["data"], value.get("dims"), value.get("dtype"))})
        else:
            encoded.append({"name": name, **_tensor(where, value)})
    return encoded


def _output(name: str, value: Any) -> dict[str, Any]:
    try:
        dtype = str(value["dtype"])
        if dtype not in DTYPES:
            raise ValueError(dtype)
        dims = [int(d) for d in value["dims"]]
        raw = base64.b64decode(value["b64"], validate=True)
        array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(dims)
    except (KeyError, TypeError, ValueError) as error:
        raise SecureContextWorkerError(
            "worker", "the browser's answer held an output that could not be decoded"
        ) from error
    array = array.astype(array.dtype.newbyteorder("="))
    return {"dims": dims, "dtype": dtype, "data": array.ravel().tolist(), "array": array}


def decode_result(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The component's value with its outputs decoded, or the matching exception when it reports an error.

    Each output becomes ``{"dims", "dtype", "data", "array"}``: ``data`` a flat list of Python numbers
    (ints for integer types, NaN and Infinity kept), ``array`` a numpy array of the output's shape.
    """
    value = raise_for_error(value)
    if isinstance(value, dict) and value.get("status") == "ok" and isinstance(value.get("outputs"), dict):
        value = {**value, "outputs": {name: _output(name, out) for name, out in value["outputs"].items()}}
    return value


def raise_for_error(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The component's value, or the matching exception when it reports an error."""
    if not isinstance(value, dict) or value.get("status") != "error":
        return value
    kind = str(value.get("kind", "worker"))
    message = str(value.get("message", "unknown error"))
    if kind == "timeout":
        raise SecureContextTimeoutError(kind, message)
    raise SecureContextWorkerError(kind, message)
