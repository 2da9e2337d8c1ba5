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
from pathlib import Path

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
ROOT = Path(__file__).resolve().parents[3]
LOAD_SCRIPT = "/usr/local/bin/swarm-edge-load"
# The figure: 0 failed requests at 20/s through the edge during a rolling update (also the edge's
# default rate limit per client, tls_rate_limit_rate, whose burst absorbs a late tick caught up).
RATE = 20
LOAD_BOUND = DEPLOY_BOUND + SETTLE_BOUND


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
    """Requests through the edge inside the manager at RATE per second while a deploy runs, each on a new TLS
    connection (no cookie: each may land on any task), by files/edge_load.py; the HTTP codes are counted.
    Bounded: it stops at the stop file or after LOAD_BOUND seconds."""

    def __init__(self, host) -> None:
        self.host = host

    def __enter__(self) -> Load:
        self.host.ansible(
            "copy", f"src={ROOT}/molecule/swarm/files/edge_load.py dest={LOAD_SCRIPT} mode=0644", check=False
        )
        self.host.run("rm -f /tmp/swarm-load.json /tmp/swarm-load.stop")
        self.host.run(
            f"nohup python3 {LOAD_SCRIPT} {RATE} {LOAD_BOUND} /tmp/swarm-load.stop /tmp/swarm-load.json "
            f"edge.swarm.test /{APP}/_stcore/health /etc/streamlit-edge/ca.crt >/dev/null 2>&1 &"
        )
        return self

    def __exit__(self, *exc) -> None:
        self.host.run("touch /tmp/swarm-load.stop")
        wait_until(lambda: self.host.file("/tmp/swarm-load.json").exists, 120, "the load's answers")
        result = json.loads(self.host.check_output("cat /tmp/swarm-load.json"))
        self.codes, self.seconds = result["codes"], result["seconds"]

    def summary(self) -> str:
        failed = [code for code in self.codes if code != "200"]
        return (
            f"{len(self.codes)} requests through the edge in {self.seconds:.0f} s "
            f"({len(self.codes) / max(self.seconds, 0.1):.1f}/s, asked {RATE}/s), {len(failed)} failed"
        )

    def check(self) -> None:
        # The schedule catches up a late tick: the rate holds unless the manager starves the sender.
        assert len(self.codes) >= 0.9 * RATE * self.seconds, self.summary()
        assert [code for code in self.codes if code != "200"] == [], self.summary()


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
    print(f"\npush -> rolling update of 3 replicas answered: {seconds:.0f} s; {load.summary()}")
    assert answer(manager)["status"] == "deployed", answer(manager)
    (record,) = audit_records(manager, v2)
    assert record["requested_by"] == "monitor"
    assert record["previous"] == [sha(manager, "v1")]
    assert len(load.codes) > 20 * RATE
    load.check()


def test_a_commit_that_raises_at_import_is_refused_at_the_gate(manager, first):
    v2, raises = sha(manager, "v2"), sha(manager, "raises")
    image = service(manager)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    with Load(manager) as load:
        start = request_deploy(manager, raises)
        wait_until(lambda: answer(manager).get("sha") == raises, DEPLOY_BOUND, "the deployer's answer")
        seconds = time.monotonic() - start
    print(f"\nbroken commit refused at the gate: {seconds:.0f} s; {load.summary()}")
    assert answer(manager)["status"] == "failed"
    (record,) = audit_records(manager, raises)
    assert record["step"] == "gate", record
    assert "ModuleNotFoundError: No module named 'clinic_risk_scores'" in record["reason"]
    # Nothing reached the swarm: the same image, the same tasks at v2, no gate container left.
    assert service(manager)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == image
    assert settled(manager, v2)
    assert manager.check_output(f"docker ps -aq --filter name={raises[:12]}") == ""
    load.check()


# -- a task's host-mode published port: the edge's only (roles/hardening's forward chain) ----------------------
# What a connection gets to wait: a dropped SYN never answers, an accepted one answers at once.
CONNECT = (
    "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(5); "
    "sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 3)"
)
WORKERS = ("worker1-swarm", "worker2-swarm")


def node_names() -> dict[str, str]:
    """Each member's swarm address and its name."""
    return {
        json.loads(host_of(name).check_output("docker info --format '{{json .Swarm}}'"))["NodeAddr"]: name
        for name in ("manager-swarm", *WORKERS)
    }


def check_only_the_edge_reaches_the_tasks(manager) -> dict[str, int]:
    """Every task answers the edge at (node address, published port); the outsider and the workers that are
    not the task's node get no connection. Returns the number of tasks per node."""
    names = node_names()
    per_node: dict[str, int] = {}
    for endpoint in sorted(endpoints(manager)):
        address, port = endpoint.rsplit(":", 1)
        node = names[address]
        per_node[node] = per_node.get(node, 0) + 1
        assert manager.check_output(f"curl -s -m 10 http://{endpoint}/{APP}/_stcore/health") == "ok", endpoint
        for other in ("outsider-swarm", *WORKERS):
            if other == node:
                continue  # a node's own processes reach its tasks anyway (locally generated, not forwarded)
            result = host_of(other).run("python3 -c %s %s %s", CONNECT, address, port)
            assert result.rc == 3, (other, endpoint, result.rc, result.stderr)
    return per_node


def test_a_tasks_published_port_is_reached_from_the_edge_only(manager, first):
    start = time.monotonic()
    per_node = check_only_the_edge_reaches_the_tasks(manager)
    print(f"\ntasks per node {per_node}: the edge reached each, nobody else ({time.monotonic() - start:.0f} s)")
    assert sum(per_node.values()) == 3
    assert len(per_node) >= 2  # at least one task on a node other than the edge's: a forwarded connection


def test_the_rule_holds_after_a_docker_restart(manager, first):
    worker = host_of("worker1-swarm")
    worker.check_output("systemctl restart docker")
    chain = worker.check_output("nft list chain inet secure_streamlit forward")
    assert "ct status dnat tcp dport 8501 ip saddr != @swarm_edge_sources_v4" in chain, chain
    # Docker re-created its own chains, which accept the published ports; the tasks are back and the
    # edge follows them.
    assert "DOCKER" in worker.check_output("iptables -S")
    seconds = wait_until(lambda: settled(manager, sha(manager, "v2")), SETTLE_BOUND, "3 tasks again, in the edge")
    per_node = check_only_the_edge_reaches_the_tasks(manager)
    print(f"\ndocker restarted on worker1-swarm: 3 tasks again in {seconds:.0f} s, tasks per node {per_node}")
    listing = json.loads(worker.check_output("nft -j list chain inet secure_streamlit forward"))["nftables"]
    rules = [item["rule"] for item in listing if "rule" in item]
    drops = [e["counter"]["packets"] for rule in rules for e in rule["expr"] if "counter" in e]
    print(f"worker1-swarm's forward chain: {drops} packets dropped (IPv4, IPv6) since the firewall was loaded")


def test_the_registry_password_is_in_no_log_and_no_configuration(manager, first):
    password = manager.check_output("cat %s", PASSWORD_FILE)
    for path in (AUDIT_LOG, "/opt/secure-streamlit-deployer/deployer.json"):
        assert password not in manager.file(path).content_string, path
    journal = manager.check_output("journalctl --no-pager -o cat 2>/dev/null || true")
    assert password not in journal
    # The deployer's configuration names the file, not the value.
    config = json.loads(manager.file("/opt/secure-streamlit-deployer/deployer.json").content_string)
    assert config["swarm"]["registry_password_file"] == PASSWORD_FILE
