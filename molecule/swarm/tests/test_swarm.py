"""The swarm the role formed: three nodes Ready with one manager, its ports reachable from the members
and not from a host outside it on the same network, and its join tokens nowhere in the hosts' logs.

The hosts are the scenario's instances (molecule.yml), each with its own engine; every check is the
engine's own view (`docker node ls`, `docker info`) or a real TCP connection.
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import REGISTRY_PORT, host_of

REGISTRY_DIR = "/etc/docker/registry/swarm"
MEMBERS = ["manager-swarm", "worker1-swarm", "worker2-swarm"]
# A node reports Ready after its first heartbeat; generous for a loaded machine (only arrival is checked).
READY_TIMEOUT = 300
# What a connection gets to wait: a dropped SYN never answers, an accepted one answers at once.
CONNECT = (
    "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(8); "
    "sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 3)"
)


def nodes(manager) -> list[dict]:
    out = manager.check_output("docker node ls --format '{{json .}}'")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_three_nodes_are_ready_with_one_manager_the_leader(manager):
    deadline = time.monotonic() + READY_TIMEOUT
    listed = nodes(manager)
    while time.monotonic() < deadline and not (len(listed) == 3 and all(n["Status"] == "Ready" for n in listed)):
        time.sleep(3)
        listed = nodes(manager)
    assert sorted(n["Hostname"] for n in listed) == MEMBERS, listed
    assert all(n["Status"] == "Ready" for n in listed), listed
    assert [n["Hostname"] for n in listed if n["ManagerStatus"]] == ["manager-swarm"], listed
    assert [n["ManagerStatus"] for n in listed if n["ManagerStatus"]] == ["Leader"], listed


@pytest.mark.parametrize("name", MEMBERS)
def test_each_member_is_active_in_the_one_swarm(manager, name):
    cluster = json.loads(manager.check_output("docker info --format '{{json .Swarm.Cluster}}'"))
    info = json.loads(host_of(name).check_output("docker info --format '{{json .Swarm}}'"))
    assert info["LocalNodeState"] == "active"
    assert info["ControlAvailable"] is (name == "manager-swarm")
    # Workers see no cluster object; all of them list the manager they talk to.
    assert info["RemoteManagers"], info
    assert cluster["ID"]


@pytest.mark.parametrize("port", [2377, 7946, REGISTRY_PORT])
def test_a_worker_reaches_the_managers_swarm_ports(manager_addr, port):
    worker = host_of("worker1-swarm")
    result = worker.run("python3 -c %s %s %s", CONNECT, manager_addr, str(port))
    assert result.rc == 0, result.stderr


@pytest.mark.parametrize("port", [2377, 7946, REGISTRY_PORT])
def test_a_host_outside_the_swarm_on_the_same_network_cannot_reach_them(manager_addr, port):
    outsider = host_of("outsider-swarm")
    # On the same link as the manager (no router between them): only the manager's firewall decides.
    route = outsider.check_output("ip route get %s", manager_addr)
    assert " via " not in route, route
    result = outsider.run("python3 -c %s %s %s", CONNECT, manager_addr, str(port))
    assert result.rc == 3, (result.rc, result.stderr)


def test_the_firewall_lists_exactly_the_members_addresses(manager):
    addrs = sorted(
        json.loads(host_of(name).check_output("docker info --format '{{json .Swarm}}'"))["NodeAddr"] for name in MEMBERS
    )
    table = manager.check_output("nft -j list set inet secure_streamlit swarm_sources_v4")
    elements = json.loads(table)["nftables"][1]["set"].get("elem", [])
    assert sorted(elements) == addrs


def test_no_join_token_is_in_the_hosts_logs(manager):
    tokens = [manager.check_output(f"docker swarm join-token -q {role}") for role in ("worker", "manager")]
    for name in MEMBERS:
        host = host_of(name)
        logs = host.check_output("journalctl --no-pager -o cat 2>/dev/null || true")
        for token in tokens:
            assert token not in logs, f"a join token is in {name}'s journal"


# -- the swarm's registry (roles/swarm/tasks/registry.yml) ---------------------------------------------------
# An unauthenticated request with the registry's CA: TLS must verify (the certificate names the address)
# and the registry must answer 401.
ANONYMOUS = (
    "import ssl,sys,urllib.request,urllib.error; c=ssl.create_default_context(cafile=sys.argv[2]); "
    "u='https://'+sys.argv[1]+'/v2/'\n"
    "try: urllib.request.urlopen(u, context=c, timeout=20); print(200)\n"
    "except urllib.error.HTTPError as e: print(e.code)"
)


def test_an_image_pushed_on_the_manager_is_pulled_by_a_worker_over_tls_with_auth(manager, manager_addr):
    registry = f"{manager_addr}:{REGISTRY_PORT}"
    image = f"{registry}/probe/registry:{int(time.time())}"
    manager.check_output("tar -C /etc -c hostname | docker import - %s", image)
    push = manager.run("docker push %s", image)
    assert push.rc == 0, push.stderr
    pull = host_of("worker2-swarm").run("docker pull %s", image)
    assert pull.rc == 0, pull.stderr
    for name in MEMBERS:
        host = host_of(name)
        # Trusted for this registry only, never as an insecure registry.
        assert host.file(f"/etc/docker/certs.d/{registry}/ca.crt").exists
        info = json.loads(host.check_output("docker info --format '{{json .RegistryConfig.IndexConfigs}}'"))
        assert registry not in info or info[registry]["Secure"] is True, info
        auth = host.file("/root/.docker/config.json")
        assert auth.mode == 0o600
        assert registry in json.loads(host.check_output("cat /root/.docker/config.json"))["auths"]


def test_the_registry_refuses_anonymous_requests_and_verifies_with_its_ca(manager_addr):
    worker = host_of("worker1-swarm")
    registry = f"{manager_addr}:{REGISTRY_PORT}"
    status = worker.check_output("python3 -c %s %s %s", ANONYMOUS, registry, f"/etc/docker/certs.d/{registry}/ca.crt")
    assert status == "401"


def test_the_registry_password_is_root_only_bcrypt_hashed_and_in_no_log(manager):
    password_file = manager.file(f"{REGISTRY_DIR}/password")
    assert (password_file.user, password_file.mode) == ("root", 0o600)
    assert manager.file(f"{REGISTRY_DIR}/ca.key").mode == 0o600
    htpasswd = manager.file(f"{REGISTRY_DIR}/htpasswd")
    assert htpasswd.mode & 0o007 == 0
    assert htpasswd.content_string.startswith("swarm:$2y$12$"), "not a bcrypt hash of cost 12"
    password = manager.check_output("cat %s", f"{REGISTRY_DIR}/password")
    assert len(password) >= 32
    for name in MEMBERS:
        logs = host_of(name).check_output("journalctl --no-pager -o cat 2>/dev/null || true")
        assert password not in logs, f"the registry password is in {name}'s journal"
