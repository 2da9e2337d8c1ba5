"""The README's main command end to end: `scripts/lab.sh up` makes a lab host, runs the lab git server's
play and site.yml on it with the shipped inventory, and the example app serves over HTTPS through the edge;
a second run changes nothing; the status app serves at /status/ behind the edge's password (seen in
Chromium); a push to the lab git server goes live (seen in Chromium) and a broken push does not, and the
status app's deploy timeline shows both (Chromium again); `down` removes it all.

Uses its own container name and ports so a developer's running lab is left alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator

import pytest
import requests

from tests.helpers import REPO

LAB = "streamlit-lab-under-test"
# What scripts/lab.sh keeps of this lab on the controller (its CA, the status app's lab admin password).
LAB_DIR = REPO / ".cache/lab" / LAB
STATUS_DRIVER = REPO / "tests/status_app_browser.py"
COMPONENT_PYTHON = REPO / ".cache/venv-component/bin/python"


def lab(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        SSH_LAB_CONTAINER=LAB,
        SSH_LAB_HTTP_PORT="18080",
        SSH_LAB_HTTPS_PORT="18443",
        SSH_LAB_SANDBOX_PORT="19443",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    return subprocess.run(
        ["bash", str(REPO / "scripts/lab.sh"), *args], env=env, capture_output=True, text=True, check=False
    )


def recap(output: str) -> dict[str, int]:
    """The recaps of the lab's plays (the lab git server's, then site.yml's), summed."""
    lines = re.findall(r"^lab\s+:\s+(.*)$", output, re.MULTILINE)
    assert len(lines) == 2, output
    total: dict[str, int] = {}
    for line in lines:
        for key, value in re.findall(r"(\w+)=(\d+)", line):
            total[key] = total.get(key, 0) + int(value)
    return total


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def first_run() -> Iterator[subprocess.CompletedProcess[str]]:
    lab("down")
    result = lab("up")
    yield result
    lab("down")


def test_lab_up_provisions_the_lab_host(first_run):
    assert first_run.returncode == 0, first_run.stdout[-3000:] + first_run.stderr[-2000:]
    assert recap(first_run.stdout)["failed"] == 0
    assert "What is where" in first_run.stdout
    assert "https://localhost:18443/hello/" in first_run.stdout
    assert "make lab-push" in first_run.stdout


def test_lab_serves_the_example_app_from_its_git_server(first_run, tmp_path):
    ca = tmp_path / "lab-ca.crt"
    ca.write_text(docker("exec", LAB, "cat", "/etc/streamlit-edge/ca.crt") + "\n")
    # Streamlit's page and its health, through the edge, with the lab CA.
    page = requests.get("https://localhost:18443/hello/", verify=str(ca), timeout=30)
    assert page.status_code == 200
    assert "<title>Streamlit</title>" in page.text
    assert requests.get("https://localhost:18443/hello/_stcore/health", verify=str(ca), timeout=30).text == "ok"
    # The commit serving is the head of the lab git server's main.
    head = docker("exec", LAB, "git", "ls-remote", "http://127.0.0.1:3000/lab/hello.git", "refs/heads/main")
    labels = docker(
        "exec",
        LAB,
        "docker",
        "ps",
        "--filter",
        "label=org.opencontainers.image.revision",
        "--format",
        '{{.Label "org.opencontainers.image.revision"}}',
    )
    assert head.split()[0] in labels.split()


def test_lab_host_runs_the_hardened_engine(first_run):
    info = docker("exec", LAB, "docker", "info", "--format", "{{.LiveRestoreEnabled}} {{.LoggingDriver}}")
    assert info == "true json-file"
    assert docker("port", LAB, "443/tcp") == "127.0.0.1:18443"


def test_lab_edge_serves_https_with_the_lab_ca_and_redirects_http(first_run, tmp_path):
    ca = tmp_path / "lab-ca.crt"
    ca.write_text(docker("exec", LAB, "cat", "/etc/streamlit-edge/ca.crt") + "\n")
    # No app yet: the edge's landing page, with its headers, over a certificate for localhost.
    response = requests.get("https://localhost:18443/", verify=str(ca), timeout=10)
    assert response.status_code == 200
    assert response.headers["Strict-Transport-Security"] == "max-age=63072000"
    # The sandbox origin serves the component's isolated page and the self-hosted runtime.
    sandbox = requests.get("https://localhost:19443/sandbox.html", verify=str(ca), timeout=10)
    assert sandbox.status_code == 200
    assert "secure-context sandbox" in sandbox.text
    assert sandbox.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    wasm = requests.head("https://localhost:19443/runtimes/ort/ort-wasm-simd-threaded.wasm", verify=str(ca), timeout=10)
    assert wasm.headers["Content-Type"] == "application/wasm"
    redirect = requests.get("http://localhost:18080/x", allow_redirects=False, timeout=10)
    assert redirect.status_code == 301
    # To the port the lab publishes 443 on (SSH_LAB_HTTPS_PORT), whatever Host the client sent.
    assert redirect.headers["Location"] == "https://localhost:18443/x"


def test_lab_status_app_opens_through_the_edge_with_the_lab_admin_password(first_run, tmp_path):
    """Issue 18's status app, on in the lab: the edge refuses it without the password (or with a wrong one);
    Chromium, logged in as the lab admin whose password `up` generated (0600, named by path, never printed),
    sees its apps page naming the example app. Screenshot: tmp_path/status."""
    password_file = LAB_DIR / "status-admin.password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    assert len(password) >= 24
    assert str(password_file) in first_run.stdout
    assert password not in first_run.stdout + first_run.stderr
    ca = tmp_path / "lab-ca.crt"
    ca.write_text(docker("exec", LAB, "cat", "/etc/streamlit-edge/ca.crt") + "\n")
    url = "https://localhost:18443/status/"
    assert requests.get(url, verify=str(ca), timeout=30).status_code == 401
    assert requests.get(url, verify=str(ca), auth=("lab-admin", "not-" + password), timeout=30).status_code == 401
    assert requests.get(url, verify=str(ca), auth=("lab-admin", password), timeout=30).status_code == 200
    shown = subprocess.run(
        [str(COMPONENT_PYTHON), str(STATUS_DRIVER), url, str(tmp_path / "status"), "lab"],
        env=dict(
            os.environ,
            STATUS_BROWSER_CA=str(ca),
            STATUS_BROWSER_USER="lab-admin",
            STATUS_BROWSER_PASSWORD_FILE=str(password_file),
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    seen = json.loads(shown.stdout or "{}")
    assert shown.returncode == 0, shown.stdout[-3000:] + shown.stderr[-3000:]
    # The apps page's links, one per app of the snapshot: the example app and the status app itself.
    assert "hello" in seen["apps"], seen["apps"]
    assert "platform-status" in seen["apps"], seen["apps"]
    assert (tmp_path / "status/status-apps.png").stat().st_size > 0


def test_second_lab_run_changes_nothing(first_run):
    again = lab("up")
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap(again.stdout)["changed"] == 0


def test_push_goes_live_and_a_broken_push_does_not(first_run, tmp_path):
    """make lab-push: a new version pushed to the lab git server, found by the monitor (plain-git provider),
    deployed by the host's deployer, seen in Chromium through the edge. make lab-push-broken: the deploy is
    refused, the previous version still serves, and the deploy record says why. Screenshots: tmp_path."""
    good = lab("push", "--screenshots", str(tmp_path / "push"))
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    seen = re.search(r"^version (\d+) serving ([0-9.]+) s after the push$", good.stdout, re.MULTILINE)
    assert seen, good.stdout
    version = int(seen.group(1))
    assert (tmp_path / "push/after.png").stat().st_size > 0

    broken = lab("push", "--broken", "--screenshots", str(tmp_path / "broken"))
    assert broken.returncode == 0, broken.stdout[-3000:] + broken.stderr[-3000:]
    assert f"pushed broken version {version + 1}: " in broken.stdout
    assert f"still serving: version {version}" in broken.stdout
    sha = re.search(r"^pushed broken version \d+: ([0-9a-f]{40})$", broken.stdout, re.MULTILINE).group(1)
    # The audit trail, read here and not from the script: the failed deploy of that commit, and why.
    records = [json.loads(line) for line in docker("exec", LAB, "cat", "/var/log/streamlit/deploys.log").splitlines()]
    failed = [r for r in records if r.get("sha") == sha]
    assert [r["status"] for r in failed] == ["failed"], failed
    assert "clinic_risk_scores" in json.dumps(failed[0]), failed[0]
    assert (tmp_path / "broken/after-broken.png").stat().st_size > 0


def test_lab_status_timeline_shows_the_pushes_deploy_and_failure(first_run, tmp_path):
    """Issue 18 in the lab: after the push and the broken push above, the status app's deploy timeline
    (Chromium, through the edge, as the lab admin), filtered to the example app, lists its last successful
    deploy and its failed one, by commit. The root timer exports the snapshot the app reads once a
    minute: wait for it (bounded) before opening the page. Screenshot: tmp_path/timeline."""
    records = [json.loads(line) for line in docker("exec", LAB, "cat", "/var/log/streamlit/deploys.log").splitlines()]
    hello = [r for r in records if r.get("app") == "hello" and r.get("status") in ("deployed", "failed")]
    deployed = [r["sha"] for r in hello if r["status"] == "deployed"][-1]
    failed = [r["sha"] for r in hello if r["status"] == "failed"][-1]
    wanted = {(deployed, "deployed"), (failed, "failed")}
    deadline = time.monotonic() + 600
    while True:
        snapshot = json.loads(docker("exec", LAB, "cat", "/var/lib/secure-streamlit-status/app/status.json"))
        shown = {
            (deploy["sha"], deploy["outcome"])
            for app in snapshot.get("apps", [])
            if app.get("name") == "hello"
            for deploy in app.get("deploys", [])
        }
        if wanted <= shown or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert wanted <= shown, (wanted, shown)

    ca = tmp_path / "lab-ca.crt"
    ca.write_text(docker("exec", LAB, "cat", "/etc/streamlit-edge/ca.crt") + "\n")
    result = subprocess.run(
        [
            str(COMPONENT_PYTHON),
            str(STATUS_DRIVER),
            "https://localhost:18443/status/",
            str(tmp_path / "timeline"),
            "lab-timeline",
        ],
        env=dict(
            os.environ,
            STATUS_BROWSER_CA=str(ca),
            STATUS_BROWSER_USER="lab-admin",
            STATUS_BROWSER_PASSWORD_FILE=str(LAB_DIR / "status-admin.password"),
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    seen = json.loads(result.stdout or "{}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert seen["timeline_charts"] == 2  # outcome over time, duration over time
    # The table's columns: app, time, commit (12 hex digits), outcome, requested_by, ...
    rows = {(row[2], row[3]) for row in seen["timeline_rows"]}
    assert (deployed[:12], "deployed") in rows, seen["timeline_rows"]
    assert (failed[:12], "failed") in rows, seen["timeline_rows"]
    assert (tmp_path / "timeline/status-timeline-hello.png").stat().st_size > 0


def test_lab_down_removes_host_and_data(first_run):
    assert lab("down").returncode == 0
    assert LAB not in docker("ps", "-a", "--format", "{{.Names}}").split()
    assert f"{LAB}-docker" not in docker("volume", "ls", "--format", "{{.Name}}").split()
