"""The status command's replicas view (`_status.SwarmProbe`) against a real swarm.

One systemd instance of the project's base image (the molecule settings: SYS_ADMIN, NET_ADMIN, SYS_PTRACE,
cgroupns host, the inner engine's state on a tmpfs), with Debian's docker.io, python3-docker and
python3-cryptography as the docker and status roles install them, becomes a one-node swarm. It runs a
3-replica service as the deploy engine makes one (`app-<name>`, the app and commit labels, dnsrr, the app's
port published in host mode with no fixed number, a health check; the base image's `python3 -m http.server`
stands in for Streamlit). The status command, installed as roles/status installs it (the program and its
library files), runs inside through `docker exec` with a configuration like the role's, so the engine it
asks, Debian's Docker SDK it asks with, and the report it prints are the real ones.

Then the service is scaled past what its placement allows (`--replicas-max-per-node 3` on one node): the
fourth task stays pending, and the app's verdict must say so.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO
from tests.status_host import sha

IMAGE = "secure-streamlit/base:bookworm"
IMAGES = (REPO / ".cache/images").resolve()
PREFIX = "status-swarm-test-"
APP = "web"
FLAKY = "flaky"
PORT = 8501
WAIT = 300.0  # any one wait, on a machine two other helpers load
INSTALL = "/opt/secure-streamlit-status"
CONFIG = "/etc/secure-streamlit/status/status.json"
MODULES = yaml.safe_load((REPO / "roles/status/vars/main.yml").read_text())["_status_modules"]
LIB = f"{INSTALL}/lib/ansible_collections/secure_streamlit/hosting/plugins/module_utils"
COMMIT = sha(7)


def _docker():
    try:
        import docker

        client = docker.from_env()
        client.images.get(IMAGE)
        return client
    except Exception:  # no engine, no SDK or no base image: skipped below
        return None


DOCKER = _docker() if os.geteuid() == 0 else None
pytestmark = pytest.mark.skipif(
    DOCKER is None or not (IMAGES / "base.tar").exists(),
    reason="needs root, the Docker engine with the base image and .cache/images/base.tar (make setup)",
)


def run(node, argv: list[str] | str, check: bool = True) -> tuple[int, str]:
    command = ["sh", "-c", argv] if isinstance(argv, str) else argv
    code, output = node.exec_run(command, demux=False)
    text = (output or b"").decode(errors="replace")
    if check and code != 0:
        raise AssertionError(f"{node.name}: {command!r} exited {code}: {text[-2000:]}")
    return code, text


def wait_for(what: str, probe: Callable[[], object], limit: float = WAIT, step: float = 1.0):
    """The probe's first truthy answer, within `limit` seconds."""
    start = time.monotonic()
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() - start > limit:
            raise AssertionError(f"{what}: not within {limit:.0f} s")
        time.sleep(step)


def put_file(node, path: str, data: bytes, mode: int) -> None:
    """A root-owned file in the instance (docker cp's archive), its directory made first."""
    run(node, ["mkdir", "-p", str(Path(path).parent)])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(Path(path).name)
        info.size, info.mode, info.uid, info.gid = len(data), mode, 0, 0
        archive.addfile(info, io.BytesIO(data))
    assert node.put_archive(str(Path(path).parent), buffer.getvalue())


def install_status_command(node) -> None:
    """The program and its library as roles/status installs them; the configuration as the role writes it
    (one app, the deploy state saying its service serves, the other sources absent)."""
    put_file(
        node, f"{INSTALL}/secure_streamlit.py", (REPO / "roles/status/files/secure_streamlit.py").read_bytes(), 0o755
    )
    for name in MODULES:
        put_file(node, f"{LIB}/{name}", (REPO / "plugins/module_utils" / name).read_bytes(), 0o644)
    config = {
        "settings": {"apps": [APP, FLAKY]},
        "snapshot": "/var/lib/secure-streamlit-status/status.json",
        "snapshot_max_age": 300,
        "alert_command": [],
    }
    put_file(node, CONFIG, json.dumps(config).encode(), 0o640)
    # What the deploy engine records after a swarm deploy (_deploy.Engine._deploy_service).
    for app in (APP, FLAKY):
        state = {"serving": {"sha": COMMIT, "container": f"app-{app}", "since": "2026-12-04T18:00:00Z"}, "failed": {}}
        put_file(node, f"/var/lib/streamlit-apps/{app}/state.json", json.dumps(state).encode(), 0o600)


# The swarm's part of one collection, timed inside (the report's `collect_seconds` covers all of it): the
# replicated app's service, tasks and nodes, and an app without a service (one filtered list).
TIMING = f"""
import statistics, sys, time
sys.path.insert(0, "{INSTALL}/lib")
import docker
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._status import SwarmProbe
probe = SwarmProbe(docker.from_env(timeout=30))
for app in ("{APP}", "no-service"):
    took = []
    for _ in range(7):
        start = time.perf_counter()
        probe.service(app)
        took.append((time.perf_counter() - start) * 1000)
    print(f"{{app}}: best {{min(took):.1f}} ms, median {{statistics.median(took):.1f}} ms")
"""


def status(node, *args: str, app: str = APP) -> tuple[int, str]:
    return run(node, ["python3", f"{INSTALL}/secure_streamlit.py", "--config", CONFIG, "status", app, *args], False)


def report(node, app: str = APP) -> dict:
    code, text = status(node, "--json", "--live", app=app)
    assert code in (0, 1), text
    return json.loads(text)


@pytest.fixture(scope="module")
def manager() -> Iterator:
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    node = DOCKER.containers.run(
        IMAGE,
        command="/lib/systemd/systemd",
        name=name,
        hostname=name,
        detach=True,
        cap_add=["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        cgroupns="host",
        tmpfs={"/run": "", "/run/lock": "", "/tmp": "", "/var/lib/docker": "rw,exec,size=1g"},
        volumes={
            "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
            str(IMAGES): {"bind": "/opt/images", "mode": "ro"},
        },
        stop_signal="SIGRTMIN+3",
        labels={"secure-streamlit.test": "status-swarm"},
    )
    try:
        wait_for(
            "systemd", lambda: run(node, "systemctl is-system-running", False)[1].strip() in ("running", "degraded")
        )
        run(
            node,
            'mkdir -p /etc/docker && echo \'{"exec-opts": ["native.cgroupdriver=systemd"]}\' >/etc/docker/daemon.json',
        )
        run(
            node,
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
            "docker.io python3-docker python3-cryptography >/dev/null",
        )
        wait_for("the inner engine", lambda: run(node, ["docker", "info"], False)[0] == 0)
        run(node, "docker load -q -i /opt/images/base.tar >/dev/null")
        run(node, "docker swarm init >/dev/null")
        install_status_command(node)
        print(f"\none-node swarm with the status command in {time.monotonic() - started:.0f} s")
        yield node
    finally:
        node.remove(force=True)  # its engine, the swarm and the tasks go with it (all on its tmpfs)


def test_the_status_command_shows_each_replica_s_node_slot_and_port_then_a_replica_that_cannot_run(manager):
    health = "python3 -c \"import urllib.request as u; u.urlopen('http://127.0.0.1:8501/', timeout=3)\""
    created = time.monotonic()
    run(
        manager,
        [
            "docker", "service", "create", "--detach", "--quiet", "--name", f"app-{APP}", "--replicas", "3",
            "--replicas-max-per-node", "3", "--endpoint-mode", "dnsrr",
            "--publish", f"mode=host,target={PORT}",
            "--label", f"secure_streamlit.app={APP}", "--label", f"secure_streamlit.sha={COMMIT}",
            "--container-label", f"secure_streamlit.app={APP}", "--container-label", f"secure_streamlit.sha={COMMIT}",
            "--health-cmd", health, "--health-interval", "2s", "--health-timeout", "5s", "--health-retries", "3",
            "--env", "APP_TOKEN=do-not-report-me",
            IMAGE, "python3", "-m", "http.server", str(PORT),
        ],
    )  # fmt: skip

    def three_running():
        found = report(manager)["apps"][0].get("replicas") or {}
        return found if found.get("running_at_sha") == 3 else None

    replicas = wait_for("3 tasks running (healthy)", three_running)
    print(f"3 replicas healthy after {time.monotonic() - created:.1f} s")
    whole = report(manager)
    assert whole["verdict"] == "ok", whole["attention"]
    assert "do-not-report-me" not in json.dumps(whole)
    assert (replicas["service"], replicas["sha"], replicas["desired"], replicas["running"]) == (
        f"app-{APP}", COMMIT, 3, 3,
    )  # fmt: skip
    tasks = replicas["tasks"]
    assert [t["slot"] for t in tasks] == [1, 2, 3]
    assert {t["node"] for t in tasks} == {manager.name}  # the node's hostname, not its id
    assert all((t["node_state"], t["node_availability"]) == ("ready", "active") for t in tasks)
    assert all(t["state"] == "running" and t["healthy"] and t["sha"] == COMMIT for t in tasks)
    ports = [t["port"] for t in tasks]
    assert all(isinstance(p, int) and p > 0 for p in ports)
    assert len(set(ports)) == 3, ports  # each task its own host port on the one node
    assert all(t["since"] and t["since"].endswith("Z") for t in tasks)
    # What a task serves is reachable at its node's published port (what the edge balances to).
    for port in ports:
        run(manager, f"python3 -c \"import urllib.request as u; u.urlopen('http://127.0.0.1:{port}/', timeout=5)\"")
    code, text = status(manager, "--live")
    assert code == 0, text
    print("the swarm's part of a collection:", run(manager, ["python3", "-c", TIMING])[1].strip().replace("\n", "; "))
    assert f"  service app-{APP}: 3 of 3 replicas run {COMMIT[:12]} (3 running)" in text
    assert f"    1     {manager.name} ready/active     running    {COMMIT[:12]}" in text

    run(manager, ["docker", "service", "scale", "--detach", f"app-{APP}=4"])

    def one_pending():
        found = report(manager)["apps"][0].get("replicas") or {}
        pending = [t for t in found.get("tasks", []) if t["state"] == "pending" and "no suitable node" in t["error"]]
        return found if found.get("desired") == 4 and pending else None

    replicas = wait_for("the fourth task pending", one_pending, limit=120)
    assert (replicas["running_at_sha"], replicas["tasks"][3]["slot"], replicas["tasks"][3]["node"]) == (3, 4, "-")
    code, text = status(manager, "--live")
    print(text)  # the view an operator gets (docs/status.md shows one)
    assert code == 1, text
    (problem,) = [line for line in text.splitlines() if line.startswith("  ! ")]
    assert problem.startswith(f"  ! app {APP}: 3 of 4 replicas run {COMMIT[:12]}; slot 4 on no node: pending: "), text
    assert "no suitable node" in problem
    assert report(manager)["apps"][0]["health"]["state"] == "degraded"


def test_a_replica_whose_health_check_fails_is_replaced_and_counted(manager):
    """What "healthy" means for a replica (docs/status.md): the swarm kills a task whose health check keeps
    failing and starts another in its slot; the report counts the failure and keeps its error."""
    run(
        manager,
        [
            "docker", "service", "create", "--detach", "--quiet", "--name", f"app-{FLAKY}", "--replicas", "2",
            "--label", f"secure_streamlit.app={FLAKY}", "--label", f"secure_streamlit.sha={COMMIT}",
            "--container-label", f"secure_streamlit.app={FLAKY}", "--container-label", f"secure_streamlit.sha={COMMIT}",
            "--health-cmd", "test ! -e /tmp/broken", "--health-interval", "1s", "--health-timeout", "2s",
            "--health-retries", "2",
            IMAGE, "sleep", "infinity",
        ],
    )  # fmt: skip

    def replicas_at(count: int):
        found = report(manager, FLAKY)["apps"][0].get("replicas") or {}
        return found if found.get("running_at_sha") == count else None

    before = wait_for("2 tasks running (healthy)", lambda: replicas_at(2))
    assert [t["restarts"] for t in before["tasks"]] == [0, 0]
    listing = run(
        manager,
        ["docker", "ps", "--filter", f"label=com.docker.swarm.service.name=app-{FLAKY}",
         "--format", '{{.ID}} {{.Label "com.docker.swarm.task.name"}}'],
    )[1]  # fmt: skip
    container = next(line.split()[0] for line in listing.splitlines() if f" app-{FLAKY}.1." in f" {line.split()[1]}")
    broken = time.monotonic()
    run(manager, ["docker", "exec", container, "touch", "/tmp/broken"])

    seen: list[str] = []  # slot 1's states on the way (how often the timer would see it depends on timing)

    def replaced():
        found = report(manager, FLAKY)["apps"][0].get("replicas") or {}
        slot1 = found["tasks"][0]
        if not seen or seen[-1] != slot1["state"]:
            seen.append(slot1["state"])
        return found if found.get("running_at_sha") == 2 and slot1["restarts"] >= 1 else None

    after = wait_for("slot 1 replaced after its health check failed", replaced, limit=120, step=0.5)
    print(f"\nslot 1 failed its health check and ran again after {time.monotonic() - broken:.1f} s: "
          f"{after['tasks'][0]['last_error']!r}; states seen: {' -> '.join(seen)}")  # fmt: skip
    slot1, slot2 = after["tasks"]
    assert (slot1["slot"], slot1["state"], slot1["healthy"], slot1["restarts"]) == (1, "running", True, 1)
    assert slot1["last_error"]
    assert slot2["restarts"] == 0
    code, text = status(manager, "--live", app=FLAKY)
    assert code == 0, text
    assert "failed before" in text
