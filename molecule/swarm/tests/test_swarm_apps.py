"""An app entry with `replicas: 3`, deployed by the apps role (site.yml's path) as a swarm service: the first
manager builds the image, runs the readiness gate once in a throwaway container, pushes to the swarm's
registry and rolls the service out; its edge balances to the 3 tasks over HTTPS. A push (a deploy request
as the monitor writes it) is a rolling update with no failed request through the edge; a commit whose
script fails at import is refused at the gate and the old tasks keep serving.

Figures are printed (the verify log); only generous bounds are asserted: the machine's 2 cores are shared.
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import host_of

APP = "replicas"
SERVICE = f"app-{APP}"
CURL = "curl -s --cacert /etc/streamlit-edge/ca.crt --resolve edge.swarm.test:443:127.0.0.1"
HEALTH = f"https://edge.swarm.test/{APP}/_stcore/health"
UPSTREAM = f"/etc/nginx/streamlit-upstreams/{APP}.conf"
AUDIT_LOG = "/var/log/streamlit/deploys.log"
SPOOL = "/var/spool/github-repo-monitor"
PASSWORD_FILE = "/etc/docker/registry/swarm/password"
REPOSITORY = "/srv/git/acme/replicas.git"
# Bounds, not expectations: a build is cached, but a rolling update waits for each task's health check
# and the swarm's 20 s monitor window, and the workers pull on a loaded machine.
SETTLE_BOUND = 600
DEPLOY_BOUND = 1200


def wait_until(condition, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"not within {timeout} s: {what}"
        time.sleep(2)
    return time.monotonic() - start


def sha(host, name: str) -> str:
    return host.check_output(f"cat /srv/git/shas/{name}").strip()


def service(host) -> dict:
    return json.loads(host.check_output(f"docker service inspect {SERVICE}"))[0]


def running_tasks(host) -> list[dict]:
    ids = host.check_output(f"docker service ps -q --filter desired-state=running {SERVICE}").split()
    tasks = json.loads(host.check_output(f"docker inspect --type task {' '.join(ids)}")) if ids else []
    return [t for t in tasks if t["Status"]["State"] == "running"]


def endpoints(host) -> set[str]:
    """The tasks' (node address:published port), as the edge must list them."""
    found = set()
    for task in running_tasks(host):
        node = json.loads(host.check_output("docker node inspect %s", task["NodeID"]))[0]
        for port in task["Status"].get("PortStatus", {}).get("Ports", []):
            found.add(f"{node['Status']['Addr']}:{port['PublishedPort']}")
    return found


def upstream_servers(host) -> set[str]:
    text = host.file(UPSTREAM).content_string if host.file(UPSTREAM).exists else ""
    return {line.split()[1].rstrip(";") for line in text.splitlines() if line.strip().startswith("server ")}


def audit_records(host, commit: str) -> list[dict]:
    lines = host.file(AUDIT_LOG).content_string.splitlines()
    return [r for r in map(json.loads, lines) if r.get("sha") == commit and r.get("app") == APP]


def settled(host, commit: str) -> bool:
    labels = service(host)["Spec"]["Labels"]
    tasks = running_tasks(host)
    return (
        labels.get("secure_streamlit.sha") == commit
        and len(tasks) == 3
        and all(t["Spec"]["ContainerSpec"]["Labels"]["secure_streamlit.sha"] == commit for t in tasks)
        and upstream_servers(host) == endpoints(host)
    )


class Load:
    """A steady request every 0.2 s through the edge inside the manager while a deploy runs (no cookie:
    each request may land on any task); the HTTP codes are counted."""

    def __init__(self, host) -> None:
        self.host = host

    def __enter__(self) -> Load:
        self.host.run("rm -f /tmp/swarm-load.codes /tmp/swarm-load.stop")
        self.host.run(
            "nohup sh -c 'while [ ! -e /tmp/swarm-load.stop ]; do "
            f'{CURL} -m 10 -o /dev/null -w "%{{http_code}}\\n" {HEALTH} >>/tmp/swarm-load.codes; sleep 0.2; done\''
            " >/dev/null 2>&1 &"
        )
        return self

    def __exit__(self, *exc) -> None:
        self.host.run("touch /tmp/swarm-load.stop")
        wait_until(lambda: self.host.run("pgrep -f '[s]warm-load.stop'").rc == 1, 60, "the load loop to stop")
        self.codes = self.host.check_output("cat /tmp/swarm-load.codes").split()


def request_deploy(host, commit: str) -> float:
    """A push to main, and what the monitor does then: a request file in its spool; the deployer answers
    in results/."""
    host.check_output(f"git -C {REPOSITORY} update-ref refs/heads/main {commit}")
    host.check_output(f"rm -f {SPOOL}/results/{APP}.json; install -d -m 0750 {SPOOL}/requests")
    body = json.dumps({"app": APP, "sha": commit})
    temp, final = f"{SPOOL}/requests/.{APP}.tmp", f"{SPOOL}/requests/{APP}.json"
    host.check_output(f"echo '{body}' >{temp} && mv {temp} {final}")
    return time.monotonic()


def answer(host) -> dict:
    result = host.run(f"cat {SPOOL}/results/{APP}.json")
    return json.loads(result.stdout) if result.rc == 0 else {}


@pytest.fixture(scope="module")
def first(manager) -> dict:
    """site.yml's deploy of v1 (converge); the tasks running and the edge following them."""
    v1 = sha(manager, "v1")
    wait_until(lambda: settled(manager, v1), SETTLE_BOUND, "3 tasks at v1 in the edge's upstream")
    (record,) = [r for r in audit_records(manager, v1) if r["status"] == "deployed" and r["outcome"] == "deployed"]
    print(f"\nfirst deploy of 3 replicas by site.yml (fetch, build, gate, push, roll out): {record['seconds']} s")
    return record


def test_the_replicated_app_is_one_service_of_three_tasks_over_the_nodes(manager, first):
    assert first["requested_by"] == "site.yml"
    assert first["container"] == SERVICE
    spec = service(manager)["Spec"]
    assert spec["Mode"]["Replicated"]["Replicas"] == 3
    assert spec["EndpointSpec"]["Mode"] == "dnsrr"
    # Pushed to the swarm's registry (host:port/streamlit-apps/<app>:<build fingerprint>).
    assert f"/streamlit-apps/{APP}:" in spec["TaskTemplate"]["ContainerSpec"]["Image"]
    assert len({t["NodeID"] for t in running_tasks(manager)}) >= 2
    # The gate's throwaway container is gone; only the swarm's task containers carry the app's label.
    for name in ("manager-swarm", "worker1-swarm", "worker2-swarm"):
        ids = host_of(name).check_output(f"docker ps -aq --filter label=secure_streamlit.app={APP}").split()
        for attrs in json.loads(host_of(name).check_output(f"docker inspect {' '.join(ids)}")) if ids else []:
            assert "com.docker.swarm.task.id" in attrs["Config"]["Labels"], attrs["Name"]


def test_the_edge_serves_the_tasks_over_https(manager, first):
    assert upstream_servers(manager) == endpoints(manager)
    assert len(upstream_servers(manager)) == 3
    assert manager.check_output(f"{CURL} {HEALTH}") == "ok"
    page = manager.check_output(f"{CURL} -D - https://edge.swarm.test/{APP}/")
    assert page.startswith("HTTP/1.1 200") or page.startswith("HTTP/2 200"), page[:200]
    assert "streamlit_edge_replica=" in page  # the edge's sticky cookie


def test_a_push_rolls_out_without_a_failed_request(manager, first):
    v2 = sha(manager, "v2")
    with Load(manager) as load:
        start = request_deploy(manager, v2)
        wait_until(lambda: answer(manager).get("sha") == v2, DEPLOY_BOUND, "the deployer's answer for v2")
        seconds = time.monotonic() - start
        wait_until(lambda: settled(manager, v2), SETTLE_BOUND, "3 tasks at v2 in the edge's upstream")
    failed = [code for code in load.codes if code != "200"]
    print(
        f"\npush -> rolling update of 3 replicas answered: {seconds:.0f} s; "
        f"{len(load.codes)} requests through the edge, {len(failed)} failed"
    )
    assert answer(manager)["status"] == "deployed", answer(manager)
    (record,) = audit_records(manager, v2)
    assert record["requested_by"] == "monitor"
    assert record["previous"] == [sha(manager, "v1")]
    assert len(load.codes) > 20
    assert failed == [], load.codes


def test_a_commit_that_raises_at_import_is_refused_at_the_gate(manager, first):
    v2, raises = sha(manager, "v2"), sha(manager, "raises")
    image = service(manager)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    with Load(manager) as load:
        start = request_deploy(manager, raises)
        wait_until(lambda: answer(manager).get("sha") == raises, DEPLOY_BOUND, "the deployer's answer")
        seconds = time.monotonic() - start
    failed = [code for code in load.codes if code != "200"]
    print(f"\nbroken commit refused at the gate: {seconds:.0f} s; {len(load.codes)} requests, {len(failed)} failed")
    assert answer(manager)["status"] == "failed"
    (record,) = audit_records(manager, raises)
    assert record["step"] == "gate", record
    assert "ModuleNotFoundError: No module named 'clinic_risk_scores'" in record["reason"]
    # Nothing reached the swarm: the same image, the same tasks at v2, no gate container left.
    assert service(manager)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == image
    assert settled(manager, v2)
    assert manager.check_output(f"docker ps -aq --filter name={raises[:12]}") == ""
    assert failed == [], load.codes


def test_the_registry_password_is_in_no_log_and_no_configuration(manager, first):
    password = manager.check_output("cat %s", PASSWORD_FILE)
    for path in (AUDIT_LOG, "/opt/secure-streamlit-deployer/deployer.json"):
        assert password not in manager.file(path).content_string, path
    journal = manager.check_output("journalctl --no-pager -o cat 2>/dev/null || true")
    assert password not in journal
    # The deployer's configuration names the file, not the value.
    config = json.loads(manager.file("/opt/secure-streamlit-deployer/deployer.json").content_string)
    assert config["swarm"]["registry_password_file"] == PASSWORD_FILE
