"""The status app (roles/status/files/status_app/) in real Chromium, on snapshots of a host's real files.

The host's files are written by the real code (tests/status_host.py: the deploy engine's state and audit
log, the monitor's, certificates); the report is the real collection (`_status.Collector`), written where
the app reads it. Streamlit runs the app with the flags the platform's image gives every app (taken from
the deploy engine's Dockerfile, under a base path like /status/) in the component's venv, which has the
Streamlit the images pin; Chromium (Debian's, driven by Playwright: tests/status_app_browser.py) opens
each page. The screenshots are kept in the test's temporary directory; the path is printed.

First the host after its deploys succeeded, then the same Streamlit process after a failed deploy: the
app shows what the snapshot says now, without a restart.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import Defaults, parse_apps
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._deploy import Settings, dockerfile
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._status import Collector
from scripts import headless_chromium
from tests.helpers import REPO
from tests.status_host import Host, sha

APP_DIR = REPO / "roles/status/files/status_app"
LAUNCHER = REPO / "roles/apps/files/streamlit_launch.py"
DRIVER = REPO / "tests/status_app_browser.py"
COMPONENT_PYTHON = REPO / ".cache/venv-component/bin/python"
BASE_PATH = "status"

pytestmark = pytest.mark.skipif(
    not COMPONENT_PYTHON.exists() or not headless_chromium.available(),
    reason="needs the component's venv (make setup) and Debian's chromium",
)


def platform_flags() -> list[str]:
    """Streamlit's flags as the deploy engine bakes them into an app's image (its ENTRYPOINT)."""
    (spec,) = parse_apps(
        [{"name": "platform-status", "repo": "acme/status", "route": {"path": f"/{BASE_PATH}/"}}], Defaults()
    )
    text = dockerfile(spec, sha(1), Settings(), "component.whl")
    (entrypoint,) = [line for line in text.splitlines() if line.startswith("ENTRYPOINT ")]
    argv = json.loads(entrypoint.removeprefix("ENTRYPOINT "))
    return [flag for flag in argv[4:] if not flag.startswith(("--server.port=", "--server.address="))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_report(host: Host, snapshot: Path) -> dict:
    report = Collector(host.settings, clock=host.clock, probe=host.probe).collect()
    snapshot.write_text(json.dumps(report))
    return report


@pytest.fixture
def status_app(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    snapshot = tmp_path / "snapshot/status.json"
    snapshot.parent.mkdir()
    port = free_port()
    flags = platform_flags()
    assert f"--server.baseUrlPath={BASE_PATH}" in flags
    assert "--client.toolbarMode=viewer" in flags
    listen = [f"--server.port={port}", "--server.address=127.0.0.1"]
    process = subprocess.Popen(
        [str(COMPONENT_PYTHON), str(LAUNCHER), "run", "streamlit_app.py", *flags, *listen],
        cwd=APP_DIR,
        env={**os.environ, "SECURE_STREAMLIT_STATUS_SNAPSHOT": str(snapshot), "HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/{BASE_PATH}"
    try:
        deadline = time.monotonic() + 300  # a loaded machine: a deadline for the whole wait, not per probe
        while True:
            try:
                if requests.get(f"{base}/_stcore/health", timeout=5).ok:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            assert process.poll() is None, "streamlit exited"
            assert time.monotonic() < deadline, f"streamlit did not answer on {base}"
            time.sleep(0.5)
        yield base, snapshot
    finally:
        process.terminate()
        process.wait(timeout=30)


def browse(base: str, out: Path, stage: str) -> dict:
    result = subprocess.run(
        [str(COMPONENT_PYTHON), str(DRIVER), base, str(out), stage],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    print(f"screenshots ({stage}): {out}")
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    return json.loads(result.stdout)


def test_the_status_app_shows_the_apps_the_timeline_and_a_history_after_a_success_and_a_failure(status_app, tmp_path):
    base, snapshot = status_app
    host = Host(tmp_path / "host", ["hello", "triage"]).healthy()
    write_report(host, snapshot)

    seen = browse(base, tmp_path / "screenshots/1-deployed", "deployed")
    assert "nothing needs attention" in seen["apps"]
    assert "4 of 4 deploys" in seen["timeline"]
    assert seen["timeline_charts"] == 2  # outcome over time, duration over time: Vega-Lite (Altair)
    # (No check that "failed" is absent from the page: the charts' legend names every outcome.)

    # A push to hello fails its readiness gate: the old commit keeps serving, the snapshot says so.
    host.clock.now += 60
    host.fail("hello", sha(99), "the script raised KeyError: 'visit_date'")
    host.clock.now += 60
    report = write_report(host, snapshot)
    assert report["verdict"] == "attention"

    seen = browse(base, tmp_path / "screenshots/2-failed", "failed")
    assert "1 item(s) need attention" in seen["apps"]
    assert f"the last deploy ({sha(99)[:12]}" in seen["apps"]
    assert "5 of 5 deploys" in seen["timeline"]
    # The outcome filter leaves the one failed deploy.
    assert "1 of 5 deploys" in seen["timeline_failed"]
    # hello's history: the failure with its reason while the commit before kept serving, which had
    # replaced site.yml's first one; each commit links to its place in the history.
    history = seen["history"]
    assert f"serving {sha(2)[:12]}" in history
    assert f"{sha(99)[:12]} · failed · 12.5 s · by monitor · while serving {sha(2)[:12]}" in history
    assert "gate failed: the script raised KeyError: 'visit_date'" in history
    assert f"{sha(2)[:12]} · deployed · 41.5 s · by monitor · replaced {sha(1)[:12]}" in history
    assert f"history?app=hello&sha={sha(1)}" in seen["history_links"]
    assert "deploys: audit log OK: 5 records" in seen["audit"]
    assert "edge.lab.test" in seen["certificates"]
    assert "alice@lab.test" in seen["certificates"]
    assert "No finding recorded" in seen["disk"]
    assert all(Path(path).stat().st_size > 10_000 for path in seen["screenshots"])


def test_the_status_app_says_why_when_it_has_no_snapshot(status_app, tmp_path):
    base, snapshot = status_app
    assert not snapshot.exists()
    seen = browse(base, tmp_path / "screenshots", "missing")
    assert f"No status snapshot at {snapshot}" in seen["apps"]
    assert "status_app_enabled" in seen["apps"]
