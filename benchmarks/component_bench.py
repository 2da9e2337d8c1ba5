"""streamlit-secure-context: ONNX Runtime Web and LiteRT.js in the sandboxed worker against native onnxruntime.

One run prints:
- the 4 MB model (y = x @ W + b, W 1024x1024 float32) in Python onnxruntime with 1 and 2 threads,
  in ORT-web (wasm, SIMD) in the opaque-origin sandbox's worker (1 thread), and on a cross-origin
  isolated sandbox origin with 1 and 2 threads, and the same model as .tflite on LiteRT.js (XNNPack;
  1 thread opaque, 1 and 2 threads isolated), and ORT-web's WebGPU build on the sandbox origin
  (SwiftShader: software, as there is no GPU here; it shows the path, not GPU speed): median ms per
  inference;
- cold start: page load -> first result of that model (Streamlit page, component, runtime, model, one
  inference, Python's rerun showing it): navigation start -> shown, on the page's own clock, on
  localhost, a fresh browser context each time (the component's default threads: 1 opaque, 2 isolated),
  and the same page without the component (Streamlit's own share). Each once under plain `streamlit run`
  and once under the launcher the app images run (roles/apps/files/streamlit_launch.py: Streamlit's
  server with Nagle's algorithm off), alternating run by run so that both see the same machine.

- with ``--transport``: only the round trip of a 1x3x256x256 float32 input and a 264,627-float output
  between Python and the sandboxed worker (component/examples/transport_app.py, pad.onnx), Python's
  clock from sending to the answer's rerun, minus the worker's inferenceMs; ``--before PYTHON`` runs the
  same app under another Python whose installed component is an older one (before: JSON lists), side
  by side in the same run, and the same input with the output reduced to its top 5 in the sandbox
  (Postprocess), so that only the answer returns.

Run after `make setup`:  .cache/venv-component/bin/python benchmarks/component_bench.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime
import requests
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scripts import headless_chromium  # noqa: E402

EXAMPLES = REPO / "component/examples"
MODEL = EXAMPLES / "static/matmul-4mb.onnx"
LAUNCHER = REPO / "roles/apps/files/streamlit_launch.py"


def native_ms(threads: int, runs: int) -> float:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(MODEL), options)
    x = (np.arange(1024 * 1024, dtype=np.float32) % 7 / 7).reshape(1024, 1024)
    for _ in range(3):
        session.run(None, {"x": x})
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {"x": x})
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen) -> None:
    for _ in range(150):
        try:
            if requests.get(url, timeout=1).ok:
                return
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or slow to answer under load
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"{url} did not answer")


def start_servers(isolated: bool, launcher: bool = False) -> tuple[list[subprocess.Popen], str]:
    """The bench page under `streamlit run` (launcher: under the app images' streamlit_launch.py);
    isolated: behind COOP/COEP with a local sandbox origin."""
    processes = []
    env = dict(os.environ, SECURE_CONTEXT_EXAMPLE="bench.py")
    if isolated:
        sandbox_port = free_port()
        sandbox = subprocess.Popen([sys.executable, "sandbox_origin.py", str(sandbox_port)], cwd=EXAMPLES)
        processes.append(sandbox)
        wait_for(f"http://127.0.0.1:{sandbox_port}/sandbox.html", sandbox)
        env["SECURE_CONTEXT_SANDBOX_ORIGIN"] = f"http://127.0.0.1:{sandbox_port}"
    port = free_port()
    script = "isolated_server.py" if isolated else "bench.py"
    start = [str(LAUNCHER)] if launcher else ["-m", "streamlit"]
    streamlit = subprocess.Popen(
        [sys.executable, *start, "run", script, "--server.port", str(port)],
        cwd=EXAMPLES,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    processes.append(streamlit)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/_stcore/health", streamlit)
    return processes, url


# Set in Streamlit's page only (not in the component's frames): when the component's iframe is
# attached, and when the script's rerun shows the result.
PAGE_MARKS = """
if (window === window.top) {
  new MutationObserver((_, observer) => {
    if (!performance.getEntriesByName("probe:iframe-attached").length
        && document.querySelector("iframe[title^='streamlit_secure_context']")) {
      performance.mark("probe:iframe-attached");
    }
    if ((document.body?.textContent ?? "").includes("BENCH {")) {
      performance.mark("probe:shown");
      observer.disconnect();
    }
  }).observe(document, { childList: true, subtree: true, characterData: true });
}
"""


def cold_start_ms(browser, url: str) -> float:
    """Page load -> first result, on the page's own clock: navigation start -> the result shown by
    Python's rerun, in a fresh browser context (nothing cached)."""
    context = browser.new_context()
    context.add_init_script(PAGE_MARKS)
    page = context.new_page()
    page.goto(url)
    page.locator("text=BENCH").wait_for(timeout=120_000)
    page.wait_for_function("performance.getEntriesByName('probe:shown').length > 0")
    shown = page.evaluate("performance.getEntriesByName('probe:shown')[0].startTime")
    context.close()
    return shown


def browser_result(browser, url: str) -> tuple[dict, float]:
    context = browser.new_context()
    page = context.new_page()
    started = time.perf_counter()
    page.goto(url)
    text = page.locator("text=BENCH").inner_text(timeout=300_000)
    elapsed = time.perf_counter() - started
    context.close()
    return json.loads(re.search(r"BENCH\s*(\{.*\})", text, re.DOTALL).group(1)), elapsed


def transport_ms(browser, python: str, runs: int, query: str = "") -> list[tuple[float, float]]:
    """(round trip ms, inference ms) of transport_app.py under `python`, one fresh page per run."""
    port = free_port()
    streamlit = subprocess.Popen(
        [python, "-m", "streamlit", "run", "transport_app.py", "--server.port", str(port)],
        cwd=EXAMPLES,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/_stcore/health", streamlit)
        times = []
        for _ in range(runs + 1):  # the first: Streamlit's first page build
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{url}/{query}")
            text = page.locator("text=TRANSPORT").inner_text(timeout=300_000)
            context.close()
            shown = json.loads(text.split("TRANSPORT", 1)[1])
            times.append((shown["roundTripMs"], shown["inferenceMs"]))
        return times[1:]
    finally:
        streamlit.terminate()
        streamlit.wait(timeout=10)


def transport(before: str | None, runs: int) -> None:
    with headless_chromium.browser() as browser:
        pythons = {"after (bytes, base64)": sys.executable}
        if before:
            pythons = {"before (JSON lists)": before, **pythons}
        results = {label: transport_ms(browser, python, runs) for label, python in pythons.items()}
        # The same input, the output reduced to its top 5 in the sandbox (Postprocess): the answer only.
        results["after, top 5 in the sandbox (Postprocess)"] = transport_ms(browser, sys.executable, runs, "?post=1")
    print(f"transport: 1x3x256x256 float32 in, 1x3x297x297 (264,627 floats) out, {runs} fresh pages, median")
    print("| component | round trip, Python's clock (ms) | worker inferenceMs | round trip - inference (ms) |")
    print("|---|---|---|---|")
    for label, times in results.items():
        trip = statistics.median(t for t, _ in times)
        inference = statistics.median(i for _, i in times)
        overhead = statistics.median(t - i for t, i in times)
        print(f"| {label} | {trip:.0f} | {inference:.1f} | {overhead:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--transport", action="store_true", help="only the tensor round trip")
    parser.add_argument("--before", help="a Python whose installed component is the one to compare with")
    args = parser.parse_args()
    if args.transport:
        transport(args.before, args.runs)
        return

    native_1 = native_ms(1, args.runs)
    native_2 = native_ms(2, args.runs)
    web: dict[tuple[str, int], tuple[float, int]] = {}
    litert: dict[tuple[str, int], float] = {}
    cold: dict[str, list[float]] = {}
    webgpu_ms: float | None = None
    with sync_playwright() as playwright:
        browser = headless_chromium.launch(playwright.chromium)
        # WebGPU on SwiftShader, a software Vulkan (no GPU here): it shows the path runs, not GPU speed.
        # That browser is closed before the cold starts (its GPU process would load the machine).
        for mode, thread_counts in (("opaque", (1,)), ("isolated", (1, 2))):
            processes, url = start_servers(isolated=mode == "isolated")
            launched, launched_url = start_servers(isolated=mode == "isolated", launcher=True)
            try:
                browser_result(browser, f"{url}/?runs=1")  # Streamlit's first page build is not the component's cost
                browser_result(browser, f"{launched_url}/?runs=1")
                for threads in thread_counts:
                    warm, _ = browser_result(browser, f"{url}/?runs={args.runs + 1}&threads={threads}")
                    web[mode, threads] = (statistics.median(warm["inferenceMs"][1:]), warm["threads"])
                    assert warm["isolated"] == (mode == "isolated"), warm
                if mode == "isolated":
                    webgpu_browser = headless_chromium.launch(playwright.chromium, webgpu=True)
                    gpu, _ = browser_result(webgpu_browser, f"{url}/?runs={min(args.runs, 5) + 1}&backend=webgpu")
                    webgpu_browser.close()
                    assert gpu["backend"] == "webgpu", gpu
                    webgpu_ms = statistics.median(gpu["inferenceMs"][1:])
                for threads in thread_counts:
                    query = f"runs={args.runs + 1}&threads={threads}&model=app/static/matmul-4mb.tflite"
                    tflite, _ = browser_result(browser, f"{url}/?{query}")
                    assert tflite["isolated"] == (mode == "isolated"), tflite
                    assert tflite["threads"] == threads, tflite
                    litert[mode, threads] = statistics.median(tflite["inferenceMs"][1:])
                # The component's default threads: 1 in the opaque frame, 2 on the sandbox origin.
                pages = {f"{mode}, streamlit run": f"{url}/?runs=1", f"{mode}, launcher": f"{launched_url}/?runs=1"}
                if mode == "opaque":
                    pages["Streamlit alone, streamlit run"] = f"{url}/?baseline=1"
                    pages["Streamlit alone, launcher"] = f"{launched_url}/?baseline=1"
                for _ in range(args.cold_starts):
                    for label, page in pages.items():
                        cold.setdefault(label, []).append(cold_start_ms(browser, page) / 1000)
            finally:
                for process in processes + launched:
                    process.terminate()
        browser.close()

    print(f"model: {MODEL.name} ({MODEL.stat().st_size / 1e6:.1f} MB), input 1024x1024, {args.runs} runs, median")
    print("| runtime | threads | ms per inference | vs native 1 thread |")
    print("|---|---|---|---|")
    print(f"| onnxruntime {onnxruntime.__version__} (Python) | 1 | {native_1:.1f} | 1.00x |")
    print(f"| onnxruntime {onnxruntime.__version__} (Python) | 2 | {native_2:.1f} | {native_2 / native_1:.2f}x |")
    for (mode, _), (ms, threads) in web.items():
        where = "opaque srcdoc sandbox" if mode == "opaque" else "isolated sandbox origin"
        print(f"| ORT-web 1.30 wasm, {where} | {threads} | {ms:.1f} | {ms / native_1:.2f}x |")
    for (mode, threads), ms in litert.items():
        where = "opaque srcdoc sandbox" if mode == "opaque" else "isolated sandbox origin"
        print(f"| LiteRT.js 2.5.3 wasm (XNNPack), {where} | {threads} | {ms:.1f} | {ms / native_1:.2f}x |")
    if webgpu_ms is not None:
        where = "isolated sandbox origin, SwiftShader (software)"
        print(f"| ORT-web 1.30 WebGPU, {where} | - | {webgpu_ms:.1f} | {webgpu_ms / native_1:.2f}x |")
    speedup = web["isolated", 1][0] / web["isolated", 2][0]
    print(f"ORT-web speed-up with 2 threads (isolated): {speedup:.2f}x")
    print(f"LiteRT.js speed-up with 2 threads (isolated): {litert['isolated', 1] / litert['isolated', 2]:.2f}x")
    for mode, times in cold.items():
        what = "a text shown (no component)" if mode.startswith("Streamlit alone") else "result shown by Python"
        print(
            f"cold start, {mode}, navigation start -> {what} ({len(times)} fresh contexts): "
            f"median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s"
        )


if __name__ == "__main__":
    main()
