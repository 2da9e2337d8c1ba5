"""The status app deployed by the real deploy engine on this machine's real Docker engine, then opened in real
Chromium and checked with docker-bench-security's section 5 (container runtime).

What the status role and the apps role do on a host, with the same code: the app's files are committed to
a local bare repository (`_git_publish.publish`), the app entry is the collection's one definition
(`with_status_app`) pointing at it, accepted with file:// URLs off (`git_platform_repos`), and the engine
(`_deploy.Engine`: fetch, build, start, health, readiness gate, switch) deploys it with the status
snapshot's app directory mounted read-only. The snapshot is the real collection's report of
tests/status_host.py's world (a success and a failed deploy), written 0640 root:<apps uid>.

Only the edge is a stand-in (an upstream include on files, `nginx -t` answered 0): the browser talks to the
container's address on its own bridge network, as the edge would. Needs root, the Docker engine, the
locally built base image and the component's wheel (make setup); the build reuses the engine's cache of
the layers every app image shares. docker-bench-security runs when DOCKER_BENCH names a checkout of it
(v1.6.0; no GitHub here).

Other helpers' and the lab's containers share this engine: everything this test makes carries its own
network name and is removed by name, never by a broad filter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.filter.status_app import STATUS_APP_NAME, with_status_app
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import Defaults, parse_apps
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._deploy import (
    LABEL_APP,
    PORT,
    STATUS_SNAPSHOT_MOUNT,
    Engine,
    Settings,
)
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._git_publish import publish
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._nginx_upstream import Edge
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._status import Collector
from tests.helpers import REPO
from tests.integration.test_status_app import COMPONENT_PYTHON, browse
from tests.status_host import Host, sha

APP_DIR = REPO / "roles/status/files/status_app"
BASE_IMAGE = "secure-streamlit/base:bookworm"
WHEELS = sorted((REPO / ".cache/dist").glob("streamlit_secure_context-*.whl"))
APPS_UID = 10001
DOCKER_BENCH = os.environ.get("DOCKER_BENCH", "")


def _docker():
    try:
        import docker

        client = docker.from_env()
        client.images.get(BASE_IMAGE)
        return client
    except Exception:  # no engine, no SDK or no base image: the test says which below
        return None


DOCKER = _docker() if os.geteuid() == 0 else None
pytestmark = pytest.mark.skipif(
    DOCKER is None or not WHEELS or not COMPONENT_PYTHON.exists(),
    reason="needs root, the Docker engine with the base image, the component's wheel and venv (make setup)",
)


@pytest.fixture
def world() -> Iterator[dict]:
    root = Path(tempfile.mkdtemp(prefix="status-app-deploy-"))
    root.chmod(0o755)
    network = f"status-app-test-{uuid.uuid4().hex[:8]}"
    DOCKER.networks.create(network, driver="bridge", internal=True)
    try:
        yield {"root": root, "network": network}
    finally:
        for container in DOCKER.containers.list(all=True, filters={"label": f"{LABEL_APP}={STATUS_APP_NAME}"}):
            if network in container.attrs["NetworkSettings"]["Networks"]:
                container.remove(force=True)
        DOCKER.networks.get(network).remove()
        shutil.rmtree(root, ignore_errors=True)


def snapshot_dir(root: Path) -> Path:
    """<status_snapshot_dir>/app as the status role makes it and the timer fills it."""
    app_dir = root / "snapshot/app"
    app_dir.mkdir(parents=True, mode=0o750)
    os.chown(app_dir, 0, APPS_UID)
    host = Host(root / "host", ["hello", "triage"]).healthy()
    host.clock.now += 60
    host.fail("hello", sha(99), "the script raised KeyError: 'visit_date'")
    host.clock.now += 60
    report = Collector(host.settings, clock=host.clock, probe=host.probe).collect()
    fd = os.open(app_dir / "status.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    os.fchown(fd, 0, APPS_UID)
    os.write(fd, json.dumps(report).encode())
    os.close(fd)
    return app_dir


def test_the_engine_deploys_the_status_app_hardened_reading_its_snapshot_read_only(world, tmp_path):
    root, network = world["root"], world["network"]
    source = root / "source"
    shutil.copytree(APP_DIR, source, ignore=shutil.ignore_patterns("__pycache__"))
    repo = root / "status-app.git"
    published = publish(source, repo, message="The status app of secure_streamlit.hosting")
    (entry,) = with_status_app(None, True, {"client_cert_cns": ["alice@lab.test"]})
    entry["repo"] = f"file://{repo}"  # the host's path is /var/lib/...: here the test's own
    (app,) = parse_apps([entry], Defaults(git_platform_repos=(entry["repo"],)))
    secrets = root / "secrets" / app.name
    secrets.mkdir(parents=True, mode=0o750)
    os.chown(secrets, 0, APPS_UID)
    (root / "upstreams").mkdir()
    app_dir = snapshot_dir(root)
    settings = Settings(
        base_image=BASE_IMAGE,
        component_wheel=str(WHEELS[-1]),
        launcher=str(REPO / "roles/apps/files/streamlit_launch.py"),
        gate=str(REPO / "roles/apps/files/streamlit_gate.py"),
        network=network,
        state_dir=str(root / "state"),
        secrets_dir=str(root / "secrets"),
        data_dir=str(root / "data"),
        audit_log=str(root / "deploys.log"),
        lock_dir=str(root / "locks"),
        upstream_dir=str(root / "upstreams"),
        status_app=STATUS_APP_NAME,
        status_snapshot_dir=str(app_dir),
        drain_seconds=0,
        health_timeout=600,
        gate_timeout=600,
    )
    edge = Edge(
        upstream_dir=root / "upstreams",
        check_candidate=None,
        run=lambda argv: subprocess.CompletedProcess(argv, 0, "", ""),
        pid_file=None,
    )
    engine = Engine(settings, DOCKER, edge=edge)

    outcome = engine.deploy(app, published.sha, requested_by="site.yml")
    assert outcome.status == "deployed", f"{outcome.reason}\n" + "\n".join(outcome.tail)
    assert engine.deploy(app, published.sha, requested_by="site.yml").status == "unchanged"

    container = DOCKER.containers.get(outcome.container)
    host_config = container.attrs["HostConfig"]
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]
    assert host_config["SecurityOpt"] == ["no-new-privileges:true"]
    assert host_config["Privileged"] is False
    assert container.attrs["Config"]["User"] == f"{APPS_UID}:{APPS_UID}"
    assert host_config["NanoCpus"] == 500_000_000
    assert host_config["Memory"] == 512 << 20
    assert host_config["PidsLimit"] == 128
    assert not host_config.get("PortBindings")
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert set(mounts) == {"/run/secrets", STATUS_SNAPSHOT_MOUNT}
    assert mounts[STATUS_SNAPSHOT_MOUNT]["Source"] == str(app_dir)
    assert mounts[STATUS_SNAPSHOT_MOUNT]["RW"] is False
    assert all("docker.sock" not in m["Source"] for m in container.attrs["Mounts"])

    # Inside: the snapshot is readable, nothing is writable but /tmp (noexec).
    probe = (
        "import json, pathlib\n"
        f"print(json.loads(pathlib.Path('{STATUS_SNAPSHOT_MOUNT}/status.json').read_text())['schema'])\n"
        f"for path in ('{STATUS_SNAPSHOT_MOUNT}/x', '/app/x', '/run/secrets/x', '/x'):\n"
        "    try:\n"
        "        open(path, 'w')\n"
        "        print('WROTE', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', path, exc.errno)\n"
    )
    code, output = container.exec_run(["/opt/venv/bin/python", "-c", probe])
    lines = output.decode().splitlines()
    assert code == 0, lines
    assert lines[0] == "secure-streamlit-status/1"
    assert not [line for line in lines if line.startswith("WROTE")], lines

    # The browser, where the edge would send it: the container's address on the apps' network.
    address = engine.address(container)
    seen = browse(f"http://{address}:{PORT}/status", tmp_path / "screenshots", "failed")
    assert "1 item(s) need attention" in seen["apps"]
    assert "5 of 5 deploys" in seen["timeline"]
    assert "1 of 5 deploys" in seen["timeline_failed"]
    assert f"{sha(99)[:12]} · failed" in seen["history"]

    if DOCKER_BENCH:
        report = docker_bench(outcome.container)
        results = re.findall(r"^\[(PASS|WARN|INFO|NOTE)\] (5\.\d+) - (.*)$", report, re.MULTILINE)
        assert len(results) >= 30, report
        warned = [f"{number} {title}" for result, number, title in results if result == "WARN"]
        counts = {kind: sum(1 for result, _n, _t in results if result == kind) for kind in ("PASS", "WARN")}
        print(f"docker-bench-security section 5 for {outcome.container}: {counts}, warnings: {warned}")
        # Only AppArmor (this kernel has none: no profile can be applied); every automated check else passes.
        assert all("AppArmor" in line for line in warned), report


def docker_bench(container: str) -> str:
    done = subprocess.run(
        ["bash", "./docker-bench-security.sh", "-c", "container_runtime", "-i", container, "-l", "/dev/null"],
        cwd=DOCKER_BENCH,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
