"""streamlit-secure-context: ONNX Runtime Web in the sandboxed worker against native onnxruntime.

One run prints:
- the 4 MB model (y = x @ W + b, W 1024x1024 float32) in Python onnxruntime with 1 and 2 threads,
  and in ORT-web (wasm, SIMD) in the opaque-origin sandbox's worker, 1 thread: median ms per inference;
- cold start: page load -> first result of that model (Streamlit page, component, runtime, model, one
  inference), on localhost, a fresh browser context each time.

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

EXAMPLES = Path(__file__).resolve().parents[1] / "component/examples"
MODEL = EXAMPLES / "static/matmul-4mb.onnx"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


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


def start_streamlit() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "bench.py", "--server.port", str(port)],
        cwd=EXAMPLES,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if requests.get(f"{url}/_stcore/health", timeout=1).ok:
                return process, url
        except requests.ConnectionError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("streamlit did not start")


def browser_result(browser, url: str) -> tuple[dict, float]:
    context = browser.new_context()
    page = context.new_page()
    started = time.perf_counter()
    page.goto(url)
    text = page.locator("text=BENCH").inner_text(timeout=300_000)
    elapsed = time.perf_counter() - started
    context.close()
    return json.loads(re.search(r"BENCH\s*(\{.*\})", text, re.DOTALL).group(1)), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cold-starts", type=int, default=5)
    args = parser.parse_args()

    native_1 = native_ms(1, args.runs)
    native_2 = native_ms(2, args.runs)
    process, url = start_streamlit()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=CHROMIUM_ARGS
            )
            browser_result(browser, f"{url}/?runs=1")  # Streamlit's first page build is not the component's cost
            warm, _ = browser_result(browser, f"{url}/?runs={args.runs + 1}")
            web_1 = statistics.median(warm["inferenceMs"][1:])
            cold = [browser_result(browser, f"{url}/?runs=1")[1] for _ in range(args.cold_starts)]
            browser.close()
    finally:
        process.terminate()

    print(f"model: {MODEL.name} ({MODEL.stat().st_size / 1e6:.1f} MB), input 1024x1024, {args.runs} runs, median")
    print("| runtime | threads | ms per inference | vs native 1 thread |")
    print("|---|---|---|---|")
    print(f"| onnxruntime {onnxruntime.__version__} (Python) | 1 | {native_1:.1f} | 1.00x |")
    print(f"| onnxruntime {onnxruntime.__version__} (Python) | 2 | {native_2:.1f} | {native_2 / native_1:.2f}x |")
    print(f"| ORT-web 1.30 wasm, opaque sandbox worker | {warm['threads']} | {web_1:.1f} | {web_1 / native_1:.2f}x |")
    print("| ORT-web 1.30 wasm, isolated sandbox origin | 2 | not built (see the note) | - |")
    print(
        f"cold start, page load -> first result ({args.cold_starts} fresh contexts): "
        f"median {statistics.median(cold):.2f} s, min {min(cold):.2f} s, max {max(cold):.2f} s"
    )


if __name__ == "__main__":
    main()
