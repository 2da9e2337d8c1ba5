"""An app with 3 replicas as a swarm service, deployed by the engine's swarm backend on the manager
(files/swarm_service_probe.py drives plugins/module_utils/_swarm_backend.py there): hardened tasks on the
nodes, a rolling update that keeps 3 tasks running, a broken commit rolled back while the old tasks keep
answering, and a stopped worker's tasks back on the others. Figures are printed (pytest -s or the verify
log), only generous bounds asserted: the machine's 2 cores are shared."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import host_of

ROOT = Path(__file__).resolve().parents[3]
PROBE_DIR = "/opt/swarm-probe"
SHA = {"v1": "1" * 40, "v2": "2" * 40, "broken": "3" * 40}
# Generous: the swarm notices a dead node after its heartbeats stop (the probe saw ~20 s), then
# reschedules; pulls on a loaded 2-core machine add to it.
FAILOVER_BOUND = 240
NODES = ["manager-swarm", "worker1-swarm", "worker2-swarm"]


@pytest.fixture(scope="module")
def probe(manager, registry):
    """Copy the collection's libraries and the probe to the manager, load the base image, build the apps."""
    manager.ansible(
        "copy",
        f"src={ROOT}/plugins/module_utils/ dest={PROBE_DIR}/ansible_collections/secure_streamlit/hosting/"
        "plugins/module_utils/ mode=preserve",
        check=False,
    )
    manager.ansible(
        "copy", f"src={ROOT}/molecule/swarm/files/swarm_service_probe.py dest={PROBE_DIR}/probe.py", check=False
    )
    manager.check_output(
        "docker image inspect secure-streamlit/base:bookworm >/dev/null || docker load -qi %s", "/opt/images/base.tar"
    )

    def run(*args: str) -> dict:
        argv = [*args, registry]
        out = manager.check_output(
            "cd %s && PYTHONPATH=%s python3 probe.py" + " %s" * len(argv), PROBE_DIR, PROBE_DIR, *argv
        )
        return json.loads(out.splitlines()[-1])

    for tag, mode in (("v1", "ok"), ("v2", "ok"), ("broken", "broken")):
        run("build", tag, mode)
    return run


@pytest.fixture(scope="module")
def first(probe) -> dict:
    result = probe("deploy", "v1", SHA["v1"])
    print(f"\nfirst deploy of 3 replicas: {result['seconds']} s")
    return result


def test_a_three_replica_app_runs_with_a_task_answering_on_each_endpoint(first):
    assert first["ok"], first
    assert len(first["after"]) == 3, first
    assert all(answer.startswith("v1 ") for answer in first["answers"]), first


@pytest.mark.parametrize("name", NODES)
def test_each_task_is_hardened_like_a_single_container(first, name):
    host = host_of(name)
    ids = host.check_output("docker ps -q --filter label=secure_streamlit.app=probe").split()
    for container in ids:
        attrs = json.loads(host.check_output("docker inspect %s", container))[0]
        assert attrs["HostConfig"]["ReadonlyRootfs"] is True
        assert attrs["HostConfig"]["CapDrop"] == ["ALL"]
        assert attrs["Config"]["User"] == "10001:10001"
        assert attrs["State"]["Health"]["Status"] == "healthy"
        # The daemon's no-new-privileges (engine 20.10's swarm API has no per-service field): from the
        # kernel's view of the task's process, not from SecurityOpt.
        status = host.check_output("docker exec %s cat /proc/1/status", container)
        assert "NoNewPrivs:\t1" in status
        assert host.check_output("docker exec %s cat /run/secrets/probe-token", container) == "t0k"


def test_the_tasks_are_spread_over_the_nodes(first):
    # Host-mode ports: one endpoint per task, on its node's address.
    assert len({address for address, _ in first["after"]}) >= 2, first


def test_a_code_only_deploy_is_a_rolling_update_keeping_three_tasks_running(probe, first):
    result = probe("deploy", "v2", SHA["v2"])
    print(f"\nrolling update of 3 replicas (start-first): {result['seconds']} s, min running {result['min_running']}")
    assert result["ok"], result
    assert result["min_running"] >= 3, result  # start-first: a new task runs before an old one stops
    assert all(answer.startswith("v2 ") for answer in result["answers"]), result


def test_a_broken_commit_rolls_back_and_the_old_tasks_keep_answering(probe, first):
    before = probe("endpoints")["endpoints"]
    result = probe("deploy", "broken", SHA["broken"])
    print(
        f"\nbroken commit rolled back in {result['seconds']} s; {result['probe_requests']} probe requests, "
        f"failures {result['probe_failures']}"
    )
    assert result["ok"] is False, result
    assert result["step"] == "update", result
    assert result["probe_requests"] > 0
    assert sum(result["probe_failures"].values()) == 0, result
    assert sorted(map(tuple, result["after"])) == sorted(map(tuple, before)), result
    assert all(answer.startswith("v2 ") for answer in result["answers"]), result


def test_a_stopped_workers_tasks_are_back_on_the_others(probe, first):
    # The worker running the most tasks (a rolling update may have left one with none).
    addresses = {
        json.loads(host_of(name).check_output("docker info --format '{{json .Swarm}}'"))["NodeAddr"]: name
        for name in ("worker1-swarm", "worker2-swarm")
    }
    endpoints = probe("endpoints")["endpoints"]
    counts = {name: sum(addr == a for a, _ in endpoints) for addr, name in addresses.items()}
    victim = max(counts, key=counts.get)
    assert counts[victim] > 0, f"no worker runs a task: {endpoints}"
    # Last of all (this file sorts after test_swarm.py): the stopped worker's engine state is on a tmpfs
    # and does not come back with it, so the worker is out of the swarm afterwards.
    subprocess.run(["docker", "stop", "-t", "5", victim], check=True, capture_output=True)
    try:
        result = probe("wait-moved", victim, str(FAILOVER_BOUND))
    finally:
        subprocess.run(["docker", "start", victim], check=False, capture_output=True)
    print(f"\nworker {victim} stopped with {counts[victim]} tasks: back on the others in {result['seconds']} s")
    assert result["seconds"] is not None, f"not back within {FAILOVER_BOUND} s"
