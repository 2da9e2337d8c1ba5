"""The README's main command end to end: `scripts/lab.sh up` makes a lab host, runs site.yml on it
with the shipped inventory, and a second run changes nothing; `down` removes it all.

Uses its own container name and ports so a developer's running lab is left alone.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest
import requests

from tests.helpers import REPO

LAB = "streamlit-lab-under-test"


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
    match = re.search(r"^lab\s+:\s+(.*)$", output, re.MULTILINE)
    assert match, output
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


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
    assert "Where to look" in first_run.stdout


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


def test_second_lab_run_changes_nothing(first_run):
    again = lab("up")
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap(again.stdout)["changed"] == 0


def test_lab_down_removes_host_and_data(first_run):
    assert lab("down").returncode == 0
    assert LAB not in docker("ps", "-a", "--format", "{{.Names}}").split()
    assert f"{LAB}-docker" not in docker("volume", "ls", "--format", "{{.Name}}").split()
