"""The docker role's result, checked inside the molecule instance (a real engine in a systemd host)."""

from __future__ import annotations

import json

import pytest

BASE_IMAGE = "secure-streamlit/base:bookworm"


@pytest.fixture(scope="module")
def docker_info(host) -> dict:
    return json.loads(host.check_output("docker info --format '{{json .}}'"))


@pytest.fixture(scope="module")
def test_image(host) -> str:
    """The base image loaded into the inner engine (no registry: it comes as a tar)."""
    if host.run(f"docker image inspect {BASE_IMAGE}").rc != 0:
        host.check_output("docker load -q -i /opt/images/base.tar")
    return BASE_IMAGE


def test_dockerd_is_active_and_enabled(host):
    service = host.service("docker")
    assert service.is_running
    assert service.is_enabled


def test_daemon_json_is_root_owned_and_not_writable_by_others(host):
    config = host.file("/etc/docker/daemon.json")
    assert config.user == "root"
    assert config.group == "root"
    assert config.mode == 0o644


def test_docker_info_shows_the_hardened_settings(docker_info):
    assert docker_info["LiveRestoreEnabled"] is True
    assert docker_info["LoggingDriver"] == "json-file"


def test_default_bridge_has_inter_container_communication_off(host):
    options = json.loads(host.check_output("docker network inspect bridge --format '{{json .Options}}'"))
    assert options["com.docker.network.bridge.enable_icc"] == "false"


def test_no_docker_proxy_runs_for_a_published_port(host, test_image):
    name = "published-port-probe"
    host.run(f"docker rm -f {name}")
    host.check_output(f"docker run -d --name {name} -p 127.0.0.1:18080:8080 {test_image} sleep 60")
    try:
        assert host.run("pgrep -x docker-proxy").rc == 1
    finally:
        host.run(f"docker rm -f {name}")


def test_containers_get_no_new_privileges_and_ulimits_by_default(host, test_image):
    # Nothing asked for on the command line: these come from daemon.json.
    out = host.check_output(
        f"docker run --rm {test_image} sh -c 'grep NoNewPrivs /proc/self/status; ulimit -Sn; ulimit -Hn'"
    )
    assert out.split() == ["NoNewPrivs:", "1", "8192", "16384"]


def test_container_logs_are_size_limited(host, test_image):
    name = "log-limit-probe"
    host.run(f"docker rm -f {name}")
    host.check_output(f"docker create --name {name} {test_image} true")
    try:
        log_config = json.loads(host.check_output(f"docker inspect -f '{{{{json .HostConfig.LogConfig}}}}' {name}"))
    finally:
        host.run(f"docker rm -f {name}")
    assert log_config == {"Type": "json-file", "Config": {"max-file": "5", "max-size": "10m"}}


def test_a_fully_restricted_container_runs(host, test_image):
    out = host.check_output(
        f"docker run --rm --cap-drop ALL --read-only --security-opt no-new-privileges --user 65534:65534 "
        f"{test_image} sh -c 'id -u; grep CapEff /proc/self/status; touch /probe 2>&1 || echo read-only'"
    )
    lines = out.splitlines()
    assert lines[0] == "65534"
    assert lines[1].split()[1] == "0000000000000000"
    assert lines[-1] == "read-only"


def test_containers_survive_a_daemon_restart(host, test_image):
    """live-restore: a config change (which restarts dockerd) does not stop the apps."""
    name = "live-restore-probe"
    host.run(f"docker rm -f {name}")
    host.check_output(f"docker run -d --name {name} {test_image} sleep 300")
    try:
        pid_before = host.check_output(f"docker inspect -f '{{{{.State.Pid}}}}' {name}")
        host.check_output("systemctl restart docker")
        assert (
            host.check_output(f"docker inspect -f '{{{{.State.Running}}}} {{{{.State.Pid}}}}' {name}")
            == f"true {pid_before}"
        )
    finally:
        host.run(f"docker rm -f {name}")
