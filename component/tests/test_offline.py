"""The installed wheel runs the example app with no network at all, with each of its runtimes.

The app, its Streamlit server and the browser run inside a network namespace that has only loopback
(`unshare -n`, root), so any download of a runtime or model from elsewhere would fail the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scripts import headless_chromium

from .conftest import EXAMPLES
from .test_e2e import COMPONENT_FRAME, SANDBOX_FRAME, scores_line

CHECK = textwrap.dedent(
    """
    import socket, subprocess, sys, time
    from playwright.sync_api import sync_playwright
    import streamlit_secure_context

    # The package under test is the installed wheel, not the source tree.
    print(streamlit_secure_context.__file__)

    # The namespace really is offline: no name resolution, no route.
    try:
        socket.create_connection(("1.1.1.1", 443), timeout=3)
        sys.exit("network reachable: the test would prove nothing")
    except OSError:
        pass
    app = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", "8799",
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()
            for _ in range(60):
                try:
                    page.goto("http://127.0.0.1:8799/")
                    break
                except Exception:
                    time.sleep(1)
            # Each runtime the wheel carries: ONNX Runtime Web, TF.js, LiteRT.js.
            for query in QUERIES:
                page.goto("http://127.0.0.1:8799/" + query)
                component = page.frame_locator(COMPONENT).first
                component.locator("text=Model loaded in the sandbox").wait_for(timeout=90_000)
                sandbox = component.frame_locator(SANDBOX)
                sandbox.locator("#secure-context-file").set_input_files("record.csv")
                print(query or "onnx", page.locator("text=Scores:").inner_text(timeout=30_000))
            browser.close()
    finally:
        app.terminate()
    """
)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_the_installed_wheel_runs_the_example_app_with_no_network(tmp_path: Path):
    for name in ("app.py", ".streamlit", "static"):
        source = EXAMPLES / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    (tmp_path / "record.csv").write_text("0.5,1.0,-0.3,2.0\n")
    script = tmp_path / "check.py"
    queries = ["", "?model=app/static/mlp-tfjs/model.json", "?model=app/static/mlp.tflite"]
    constants = {
        "CHROMIUM": headless_chromium.CHROMIUM,
        "ARGS": list(headless_chromium.ARGS),
        "COMPONENT": COMPONENT_FRAME,
        "SANDBOX": SANDBOX_FRAME,
        "QUERIES": queries,
    }
    script.write_text("".join(f"{name} = {value!r}\n" for name, value in constants.items()) + CHECK)
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", f'ip link set lo up && exec "{sys.executable}" check.py'],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "/site-packages/streamlit_secure_context/" in result.stdout.splitlines()[0]
    scored = result.stdout.strip().splitlines()[-len(queries) :]
    assert scored == [f"{query or 'onnx'} {scores_line()}" for query in queries]
