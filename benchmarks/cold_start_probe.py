"""streamlit-secure-context: where the cold start goes, phase by phase, in both modes.

Cold start = page load -> first inference result of the 4 MB MatMul model (component/examples/bench.py,
one inference, 1 thread), on localhost, each run in a fresh browser context. Each traced run records a
Chromium trace (categories blink.user_timing and v8.wasm only, to keep its overhead small): the
navigation starts of the page and of the component frame, the `secure-context:*` performance marks the
component frame, the sandbox frame and the worker set (frontend/src/main.ts, sandbox.ts), V8's wasm
instantiation in the worker, and two marks this probe sets in Streamlit's page (the component iframe
attached, the result shown by Python). Every time is in ms from the page's navigation start, one clock
for all processes and threads. Untraced runs, alternating with the traced ones, give the plain total
(navigation start -> shown).

Run after `make setup`:
  .cache/venv-component/bin/python benchmarks/cold_start_probe.py [--runs 7] [--untraced 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: scripts/
sys.path.insert(0, str(Path(__file__).resolve().parent))
from component_bench import PAGE_MARKS, cold_start_ms, start_servers

from scripts import headless_chromium

# (label, how to find it in the trace), in the order of the critical path.
PHASES = [
    ("component iframe attached (Streamlit)", "probe:iframe-attached"),
    ("component page navigation start", "nav:component"),
    ("sandbox started from the frame's URL (before the render args)", "secure-context:prestart"),
    ("sandbox frame bootstrap running", "secure-context:sandbox-bootstrap"),
    ("sandbox frame loaded (component sees load)", "secure-context:frame-loaded"),
    ("render args received", "secure-context:render"),
    ("runtime bytes received (opaque: component)", "secure-context:runtime-fetched"),
    ("RUNTIME received in the sandbox frame", "secure-context:sandbox-runtime"),
    ("worker created", "secure-context:worker-created"),
    ("worker: runtime script evaluated", "secure-context:worker-runtime-evaluated"),
    ("model bytes received (component)", "secure-context:model-fetched"),
    ("INIT sent to the sandbox", "secure-context:init-sent"),
    ("INIT received in the sandbox frame", "secure-context:sandbox-init"),
    ("worker: INIT received", "secure-context:worker-init"),
    ("worker: wasm instantiated", "wasm:instantiated"),
    ("worker: runtime ready (ONNX: warm-up session run)", "secure-context:worker-runtime-ready"),
    ("worker: model session created", "secure-context:session-created"),
    ("component: INIT_DONE", "secure-context:init-done"),
    ("worker: first inference done", "secure-context:worker-inferred"),
    ("component: RESULT", "secure-context:result"),
    ("shown by Python (rerun)", "probe:shown"),
]


def phases_from_trace(trace: bytes) -> dict[str, float]:
    events = json.loads(trace)
    events = events["traceEvents"] if isinstance(events, dict) else events
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    navigations = [e for e in events if e.get("name") == "navigationStart" and "blink.user_timing" in e["cat"]]
    top = [e for e in navigations if e["args"].get("data", {}).get("isOutermostMainFrame")]
    starts = [e["ts"] for e in top if e["args"]["data"].get("documentLoaderURL")]
    if not starts:
        return {}  # the trace lost the page's navigation start (seen under load): the run is retried
    t0 = min(starts)
    found: dict[str, float] = {}
    for event in sorted(events, key=lambda e: e["ts"]):
        name = event.get("name", "")
        if event in navigations and "/component/" in event["args"].get("data", {}).get("documentLoaderURL", ""):
            found.setdefault("nav:component", event["ts"])
        elif (name.startswith(("secure-context:", "probe:"))) and "blink.user_timing" in event.get("cat", ""):
            found.setdefault(name, event["ts"])
        elif name == "wasm.SyncInstantiate" and threads.get((event["pid"], event["tid"]), "").startswith(
            "DedicatedWorker"
        ):
            found.setdefault("wasm:instantiated", event["ts"] + event.get("dur", 0))
    return {key: (ts - t0) / 1000 for key, ts in found.items()}


def traced_run(browser, url: str) -> dict[str, float]:
    for _ in range(3):
        phases = traced_run_once(browser, url)
        if phases:
            return phases
    raise RuntimeError("three traces without the page's navigation start")


def traced_run_once(browser, url: str) -> dict[str, float]:
    context = browser.new_context()
    context.add_init_script(PAGE_MARKS)
    page = context.new_page()
    browser.start_tracing(page=page, categories=["blink.user_timing", "v8.wasm"])
    page.goto(url)
    page.locator("text=BENCH").wait_for(timeout=120_000)
    page.wait_for_timeout(100)  # the shown mark is set by a MutationObserver callback
    trace = browser.stop_tracing()
    context.close()
    return phases_from_trace(trace)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="traced cold starts per mode")
    parser.add_argument("--untraced", type=int, default=7, help="plain cold starts per mode (total only)")
    parser.add_argument("--modes", default="opaque,isolated")
    parser.add_argument("--model", default="app/static/matmul-4mb.onnx")
    parser.add_argument("--threads", type=int, help="ORT threads (default: 1 opaque, 2 isolated)")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument(
        "--launcher",
        action="store_true",
        help="run Streamlit as the app images do (roles/apps/files/streamlit_launch.py)",
    )
    args = parser.parse_args()

    traced: dict[str, list[dict[str, float]]] = {}
    totals: dict[str, list[float]] = {}
    with headless_chromium.browser() as browser:
        for mode in args.modes.split(","):
            processes, url = start_servers(isolated=mode == "isolated", launcher=args.launcher)
            try:
                page_url = f"{url}/?runs=1&model={args.model}" + (f"&threads={args.threads}" if args.threads else "")
                cold_start_ms(browser, page_url)  # Streamlit's first page build is not the component's cost
                # Alternate traced and untraced runs so that both see the same machine load.
                traced[mode], totals[mode] = [], []
                for i in range(max(args.runs, args.untraced)):
                    if i < args.runs:
                        traced[mode].append(traced_run(browser, page_url))
                    if i < args.untraced:
                        totals[mode].append(cold_start_ms(browser, page_url))
            finally:
                for process in processes:
                    process.terminate()

    modes = list(traced)
    print(f"cold start phases, ms from navigation start (median of {args.runs} traced fresh contexts, min-max)")
    print("| phase | " + " | ".join(modes) + " |")
    print("|---|" + "---|" * len(modes))
    for label, key in PHASES:
        cells = []
        for mode in modes:
            values = [run[key] for run in traced[mode] if key in run]
            cells.append(f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})" if values else "-")
        if any(cell != "-" for cell in cells):
            print(f"| {label} | " + " | ".join(cells) + " |")
    for mode in modes:
        shown = [run["probe:shown"] for run in traced[mode] if "probe:shown" in run]
        attached = [run["probe:shown"] - run["probe:iframe-attached"] for run in traced[mode] if "probe:shown" in run]
        print(
            f"{mode}: traced total median {statistics.median(shown):.0f} ms, of which after the iframe is attached "
            f"{statistics.median(attached):.0f} ms; untraced total ({len(totals[mode])} runs) median "
            f"{statistics.median(totals[mode]):.0f} ms (min {min(totals[mode]):.0f}, max {max(totals[mode]):.0f})"
        )
    if args.json:
        args.json.write_text(json.dumps({"traced": traced, "untraced_ms": totals}, indent=1))


if __name__ == "__main__":
    main()
