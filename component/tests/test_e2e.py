"""End to end: `streamlit run` of the example app in headless Chromium.

The result reaches Python and is shown; the picked file never reaches the server; the worker cannot
reach any other origin; bad input gives a clear Python error and the app keeps running.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from .conftest import EXAMPLES, start_streamlit

# Python names the component by its sandbox profile (sandbox_<runtime>_<threads>_<origin as hex>).
COMPONENT_FRAME = "iframe[title^='streamlit_secure_context.sandbox_']"
SANDBOX_FRAME = "iframe[title='secure inference sandbox']"
# Values that appear nowhere else: if they show up in any request, the file left the browser.
PRIVATE_VALUES = [0.7310585, 1.2345678, -0.9876543, 3.1415926]
DEMO_VALUES = [0.5, 1.0, -0.3, 2.0]


def expected_scores(values: list[float]) -> list[float]:
    session = onnxruntime.InferenceSession(str(EXAMPLES / "static/mlp.onnx"))
    (scores,) = session.run(None, {"features": np.array([values], dtype=np.float32)})
    return [round(float(s), 4) for s in scores[0]]


def scores_line(values: list[float] = DEMO_VALUES) -> str:
    """The app's "Scores:" line for these values, as native onnxruntime computes them."""
    return "Scores: " + ", ".join(f"{s:.4f}" for s in expected_scores(values))


def open_app(page, url: str, query: str = ""):
    page.goto(f"{url}/{query}")
    component = page.frame_locator(COMPONENT_FRAME).first
    return component, component.frame_locator(SANDBOX_FRAME)


def pick(sandbox, tmp_path: Path, content: str, name: str = "record.csv") -> None:
    path = tmp_path / name
    path.write_text(content)
    sandbox.locator("#secure-context-file").set_input_files(str(path))


def open_loaded(page, url: str, query: str = ""):
    """Opens the app and waits until the component says its model is loaded in the sandbox."""
    component, sandbox = open_app(page, url, query)
    component.locator("text=Model loaded in the sandbox").wait_for(timeout=90_000)
    return component, sandbox


def load_and_score(page, url: str, query: str, tmp_path: Path) -> str:
    """Opens the app, waits for the model, scores the demo values picked as a file, checks the scores
    against native onnxruntime, and returns the app's "Model loaded" line (backend, threads)."""
    _, sandbox = open_loaded(page, url, query)
    # Python's line (it gives way to the scores once a file is scored).
    loaded = page.locator("text=Model loaded in the sandbox").inner_text(timeout=30_000)
    pick(sandbox, tmp_path, "0.5,1.0,-0.3,2.0\n")
    assert page.locator("text=Scores:").inner_text(timeout=60_000) == scores_line()
    return loaded


def test_picked_file_is_scored_in_the_browser_and_the_result_reaches_python(page, app_url, tmp_path):
    load_and_score(page, app_url, "", tmp_path)


def test_values_from_python_are_scored_too(page, app_url):
    open_app(page, app_url)
    page.get_by_text("Score the demo values from Python").click(timeout=60_000)
    shown = page.locator("text=Demo scores:").inner_text(timeout=60_000)
    assert shown.endswith(", ".join(f"{s:.4f}" for s in expected_scores(DEMO_VALUES)))


def test_a_tfjs_graph_model_gives_the_same_scores_as_the_onnx_model(page, app_url, tmp_path):
    # The same MLP as a TF.js GraphModel (model.json + weights.bin) on TF.js's wasm backend.
    load_and_score(page, app_url, "?model=app/static/mlp-tfjs/model.json", tmp_path)


def test_a_tflite_model_gives_the_same_scores_as_the_onnx_model(page, app_url, tmp_path):
    # The same MLP as a .tflite flatbuffer on LiteRT.js (XNNPack, wasm) under the frame's CSP, which
    # allows 'wasm-unsafe-eval' but not 'unsafe-eval'.
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    load_and_score(page, app_url, "?model=app/static/mlp.tflite", tmp_path)
    # Chromium has relaxed SIMD: only that build was fetched, from the app's own server.
    litert = sorted(url.rsplit("/", 1)[1] for url in fetched if "/runtimes/litert/" in url)
    assert litert == ["litert.iife.js", "litert_wasm_internal.js", "litert_wasm_internal.wasm"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm.gz", "ort.wasm.min.js"]),
        (
            "?model=app/static/mlp-tfjs/model.json",
            [
                "tf-backend-wasm.min.js",
                "tf-converter.min.js",
                "tf-core.min.js",
                "tfjs-backend-wasm-simd.wasm",
                "tfjs-backend-wasm.wasm",
            ],
        ),
        ("?model=app/static/mlp.tflite", ["litert.iife.js", "litert_wasm_internal.js", "litert_wasm_internal.wasm"]),
    ],
)
def test_only_the_models_runtime_is_fetched_once(page, app_url, query, expected):
    # Cold start: a model's page fetches its own runtime's files, each once, and no other runtime's;
    # ORT's 14 MB binary comes compressed at build time (the server would gzip it on every load).
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    open_loaded(page, app_url, query)
    runtimes = sorted(url.split("/runtimes/", 1)[1] for url in fetched if "/runtimes/" in url)
    kind = {"": "ort", "?model=app/static/mlp-tfjs/model.json": "tfjs"}.get(query, "litert")
    assert runtimes == [f"{kind}/{name}" for name in expected]


def test_a_corrupt_tflite_model_is_a_clear_python_error_and_the_app_keeps_running(page, app_url, tmp_path):
    (EXAMPLES / "static/corrupt.tflite").write_bytes(b"this is not a tflite model" * 40)
    open_app(page, app_url, "?model=app/static/corrupt.tflite")
    shown = page.locator("text=Inference failed").inner_text(timeout=60_000)
    assert "Inference failed (model)" in shown
    assert "could not be loaded" in shown
    # The script went on past the error, and the same server then scores with the good model.
    page.get_by_text("Score the demo values from Python").wait_for(timeout=10_000)
    load_and_score(page, app_url, "?model=app/static/mlp.tflite", tmp_path)


def test_a_file_picked_before_the_model_has_loaded_waits_for_it(page, app_url, tmp_path):
    # The model's download is held: the picker is there, disabled, and says the model is loading.
    held: list = []
    page.route("**/app/static/mlp.onnx", lambda route: held.append(route))
    _, sandbox = open_app(page, app_url)
    picker = sandbox.locator("#secure-context-file")
    picker.wait_for(state="attached", timeout=90_000)
    assert held, "the model's request was not held: the test would prove nothing"
    assert picker.is_disabled()
    assert "Loading the model" in sandbox.locator("body").inner_text()
    # A file that gets in anyway (a script, a browser that ignores disabled) waits for the model.
    picker.evaluate("input => { input.disabled = false; }")
    pick(sandbox, tmp_path, "0.5,1.0,-0.3,2.0\n")
    page.wait_for_timeout(500)
    assert page.locator("text=Inference failed").count() == 0
    held[0].continue_()
    assert page.locator("text=Scores:").inner_text(timeout=60_000) == scores_line()
    assert not picker.is_disabled()


def test_the_picked_file_never_reaches_the_server(page, app_url, tmp_path):
    sent: list[str] = []
    page.on("request", lambda request: sent.append(f"{request.url} {request.post_data or ''}"))
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(repr(payload))))
    _, sandbox = open_loaded(page, app_url)
    pick(sandbox, tmp_path, ",".join(str(v) for v in PRIVATE_VALUES))
    page.locator("text=Scores:").wait_for(timeout=30_000)
    assert len(sent) > 10, "the request log is empty: the test would prove nothing"
    # Only the scores went back (over the websocket); none of the file's values did.
    for value in PRIVATE_VALUES:
        assert not [s for s in sent if str(value) in s]
    # And every request stayed on the app's own server (no CDN, no telemetry).
    hosts = {s.split("/")[2] for s in sent if s.startswith("http")}
    assert hosts == {app_url.split("/")[2]}


def test_the_inference_frame_is_an_opaque_origin_sandbox(page, app_url):
    component, _ = open_loaded(page, app_url)
    frame = component.locator(SANDBOX_FRAME)
    assert frame.get_attribute("sandbox") == "allow-scripts"
    inner = next(f for f in page.frames if f.url == "about:srcdoc")
    assert inner.evaluate("self.origin") == "null"
    csp = inner.evaluate("document.querySelector('meta[http-equiv=Content-Security-Policy]').content")
    assert "default-src 'none'" in csp
    assert "connect-src blob:;" in csp


def test_a_fetch_to_another_origin_from_the_worker_is_blocked_by_csp(page, probe_url):
    page.goto(probe_url)
    shown = page.locator("text=Probe:").inner_text(timeout=60_000)
    assert shown.startswith("Probe: blocked")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "?model=app/static/missing.onnx",
            ["Inference failed (model)", "HTTP 404 (missing, or over Streamlit's 200 MiB"],
        ),
        ("?model=app/static/corrupt.onnx", ["Inference failed (model)", "could not be loaded"]),
        ("?model=app/static/empty.onnx", ["Inference failed (model)", "empty.onnx is empty"]),
        ("?timeout=0.001", ["Inference failed (timeout)", "within 1 ms"]),
        # Not a static URL: Streamlit answers with its index page, which is no model.
        ("?model=app/models/mlp.onnx", ["Inference failed (model)", "answered with an HTML page, not a model"]),
    ],
)
def test_a_bad_model_or_a_timeout_is_a_clear_python_error(page, app_url, query, expected):
    (EXAMPLES / "static/corrupt.onnx").write_bytes(b"this is not an onnx model" * 40)
    (EXAMPLES / "static/empty.onnx").write_bytes(b"")
    open_app(page, app_url, query)
    shown = page.locator("text=Inference failed").inner_text(timeout=60_000)
    for part in expected:
        assert part in shown


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("1,2,3,4,5", ["Inference failed (input)", "5 values do not fit shape [1, 4]"]),
        ("1,2,x,4", ["Inference failed (input)", "value 3 is not a number"]),
        ("1," * 600, ["Inference failed (file)", "the limit is 1000 bytes"]),
    ],
)
def test_a_bad_file_is_a_clear_python_error_and_the_app_keeps_running(page, app_url, tmp_path, content, expected):
    _, sandbox = open_loaded(page, app_url)
    pick(sandbox, tmp_path, content)
    shown = page.locator("text=Inference failed").inner_text(timeout=30_000)
    for part in expected:
        assert part in shown
    # The app is still alive: a good file is scored.
    pick(sandbox, tmp_path, "0.5,1.0,-0.3,2.0", name="good.csv")
    assert page.locator("text=Scores:").inner_text(timeout=30_000).startswith("Scores: ")


def test_the_wheel_carries_the_frontend_and_the_runtimes():
    import streamlit_secure_context

    frontend = Path(streamlit_secure_context.__file__).parent / "frontend"
    assert (frontend / "index.html").is_file()
    assert (frontend / "runtimes/ort/ort-wasm-simd-threaded.wasm").stat().st_size > 1_000_000
    # The opaque frame's copy, compressed at build time (a gzip stream of the same binary).
    assert (
        gzip.decompress((frontend / "runtimes/ort/ort-wasm-simd-threaded.wasm.gz").read_bytes())
        == (frontend / "runtimes/ort/ort-wasm-simd-threaded.wasm").read_bytes()
    )
    assert (frontend / "runtimes/ort/ort.wasm.min.js").is_file()
    assert (frontend / "runtimes/tfjs/tfjs-backend-wasm-simd.wasm").is_file()
    assert (frontend / "runtimes/tfjs/tf-converter.min.js").is_file()
    for build in ("litert_wasm_internal", "litert_wasm_compat_internal"):
        assert (frontend / f"runtimes/litert/{build}.wasm").stat().st_size > 1_000_000
        assert (frontend / f"runtimes/litert/{build}.js").is_file()
    assert (frontend / "runtimes/litert/litert.iife.js").is_file()
    assert "onnxruntime-web" not in json.dumps(sorted(p.name for p in frontend.rglob("*")))


def test_isolated_mode_runs_on_the_sandbox_origin_cross_origin_isolated(
    page, isolated_app_url, sandbox_origin, tmp_path
):
    component, sandbox = open_loaded(page, isolated_app_url)
    frame = component.locator(SANDBOX_FRAME)
    assert frame.get_attribute("allow") == "cross-origin-isolated"
    assert frame.get_attribute("src").startswith(f"{sandbox_origin}/sandbox.html#")
    inner = next(f for f in page.frames if f.url.startswith(sandbox_origin))
    assert inner.evaluate("self.origin") == sandbox_origin
    # Every frame on the way is isolated: that is what lets ORT-web run threads.
    assert all(f.evaluate("self.crossOriginIsolated") for f in page.frames)
    pick(sandbox, tmp_path, "0.5,1.0,-0.3,2.0")
    shown = page.locator("text=Scores:").inner_text(timeout=30_000)
    assert shown == scores_line()


def test_webgpu_runs_the_onnx_model_on_the_sandbox_origin_with_the_same_scores(
    webgpu_page, isolated_app_url, sandbox_origin, tmp_path
):
    # Headless Chromium here has no GPU: WebGPU runs on SwiftShader (software), which is enough to
    # show that the WebGPU build, its adapter and its kernels give the wasm build's answer.
    fetched: list[str] = []
    webgpu_page.on("request", lambda request: fetched.append(request.url))
    assert "backend: webgpu" in load_and_score(webgpu_page, isolated_app_url, "?backend=webgpu", tmp_path)
    assert f"{sandbox_origin}/runtimes/ort/ort-wasm-simd-threaded.asyncify.wasm" in fetched
    assert not any(url.endswith("/ort-wasm-simd-threaded.wasm") for url in fetched)


@pytest.mark.parametrize("where", ["opaque frame", "browser without WebGPU"])
def test_webgpu_falls_back_to_wasm_where_there_is_none(page, webgpu_page, app_url, isolated_app_url, where, tmp_path):
    # The opaque frame's blob worker is not a secure context (no navigator.gpu, even in a browser with
    # WebGPU); the default test browser has no adapter at all (--disable-gpu).
    page, url = (webgpu_page, app_url) if where == "opaque frame" else (page, isolated_app_url)
    assert "backend: wasm" in load_and_score(page, url, "?backend=webgpu", tmp_path)


def test_a_tfjs_graph_model_runs_in_isolated_mode_too(page, isolated_app_url, tmp_path):
    load_and_score(page, isolated_app_url, "?model=app/static/mlp-tfjs/model.json", tmp_path)


def test_a_tflite_model_runs_in_isolated_mode_too(page, isolated_app_url, sandbox_origin, tmp_path):
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    # Cross-origin isolated: LiteRT.js's threaded build, with the component's default of 2 threads.
    assert "threads: 2" in load_and_score(page, isolated_app_url, "?model=app/static/mlp.tflite", tmp_path)
    # The runtime came from the sandbox origin, its pthreads' script too; the model from the app.
    assert f"{sandbox_origin}/runtimes/litert/litert_wasm_threaded_internal.wasm" in fetched
    assert fetched.count(f"{sandbox_origin}/runtimes/litert/litert_wasm_threaded_internal.js") >= 2
    assert any(url.endswith("/app/static/mlp.tflite") for url in fetched)


def frame_sandbox_and_send_init(page, top_url: str, sandbox_origin: str, declared_parent: str) -> list:
    """Frames the sandbox page from `top_url`, declaring `declared_parent` as the component's origin,
    starts its runtime and sends INIT with a broken model, and returns what comes back (up to 20 s)."""
    page.goto(top_url)
    return page.evaluate(
        """([origin, parent]) => new Promise((resolve) => {
            const got = [];
            window.addEventListener('message', (e) => {
                if (e.data && e.data.channel === 'streamlit-secure-context') { got.push(e.data.type); resolve(got); }
            });
            const frame = document.createElement('iframe');
            frame.src = origin + '/sandbox.html#' + encodeURIComponent(JSON.stringify({parentOrigin: parent}));
            const send = (type, requestId, payload) => frame.contentWindow.postMessage(
                {channel: 'streamlit-secure-context', type, requestId, payload}, '*');
            frame.onload = () => {
                send('RUNTIME', 1, {kind: 'ort', threads: 1});
                send('INIT', 2, {model: new ArrayBuffer(64), settings: {}});
            };
            document.body.appendChild(frame);
            setTimeout(() => resolve(got), 20000);
        })""",
        [sandbox_origin, declared_parent],
    )


def test_isolated_sandbox_answers_only_the_declared_component_origin(page, app_url, sandbox_origin):
    # The harness works: the declared parent gets the worker's error about the broken model.
    assert frame_sandbox_and_send_init(page, app_url, sandbox_origin, app_url) == ["ERROR"]
    # Another page gets nothing: its INIT is ignored and nothing is ever posted to "*".
    assert frame_sandbox_and_send_init(page, app_url, sandbox_origin, "http://127.0.0.2:1") == []


def test_static_serving_off_is_a_clear_python_error(page):
    # Streamlit would answer app/static/mlp.onnx with its index page: Python says why before rendering.
    for url in start_streamlit("app.py", {"STREAMLIT_SERVER_ENABLE_STATIC_SERVING": "false"}):
        page.goto(url)
        shown = page.locator("text=Inference failed").inner_text(timeout=60_000)
        assert shown.startswith("Inference failed (config): config: the model app/static/mlp.onnx is under app/static/")
        assert "server.enableStaticServing = true" in shown
