"""The apps role on a real engine behind real nginx: hardening, serving, deploys, rollback, pruning.

The tests run in order: v1 serves after converge; deploy.yml moves it to v2 under load; the broken
commits (never healthy; no entrypoint) leave v2 serving and are recorded as failed; images are
pruned; removing an app from the inventory removes its container and route.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
DEPLOY = PROJECT / "playbooks/deploy.yml"
CONVERGE = PROJECT / "molecule/apps/converge.yml"
CURL = "curl -s --cacert /etc/streamlit-edge/ca.crt --resolve edge.lab.test:443:127.0.0.1"
UPSTREAMS = "/etc/nginx/streamlit-upstreams"
AUDIT_LOG = "/var/log/streamlit/deploys.log"
RESULTS = "/var/spool/github-repo-monitor/results"
SECRET = "molecule-S3cret-NeverLogged"


def sha(host, name: str) -> str:
    return host.check_output(f"cat /srv/git/shas/{name}").strip()


def containers(host, app: str) -> list[dict]:
    ids = host.check_output(f"docker ps -aq --filter label=secure_streamlit.app={app}").split()
    return json.loads(host.check_output(f"docker inspect {' '.join(ids)}")) if ids else []


def serving(host, app: str) -> dict:
    """The one container of the app, checked to be the one the edge's upstream include points at."""
    (container,) = containers(host, app)
    address = container["NetworkSettings"]["Networks"]["streamlit-apps"]["IPAddress"]
    include = host.file(f"{UPSTREAMS}/{app}.conf").content_string
    assert f"server {address}:8501;" in include
    return container


def status_of(host, path: str) -> int:
    return int(host.check_output(f"{CURL} -o /dev/null -w '%{{http_code}}' 'https://edge.lab.test{path}'"))


def run_playbook(playbook: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(PROJECT / "collections"), "ANSIBLE_FORCE_COLOR": "0"},
    )


def deploy(host, name: str) -> subprocess.CompletedProcess:
    return run_playbook(DEPLOY, "-e", "deploy_hosts=all", "-e", "app=hello", "-e", f"sha={sha(host, name)}")


def audit_records(host) -> list[dict]:
    return [json.loads(line) for line in host.file(AUDIT_LOG).content_string.splitlines()]


class Load:
    """curl through the edge every 50 ms inside the instance while a deploy runs; counts non-200s."""

    def __init__(self, host, path: str) -> None:
        self.host = host
        self.path = path

    def __enter__(self) -> Load:
        self.host.run("rm -f /tmp/load.codes /tmp/load.stop")
        self.host.run(
            "nohup sh -c 'while [ ! -e /tmp/load.stop ]; do "
            f'{CURL} -o /dev/null -w "%{{http_code}}\\n" https://edge.lab.test{self.path}_stcore/health'
            " >>/tmp/load.codes; sleep 0.05; done' >/dev/null 2>&1 &"
        )
        return self

    def __exit__(self, *exc) -> None:
        self.host.run("touch /tmp/load.stop")
        time.sleep(1)
        self.codes = self.host.check_output("cat /tmp/load.codes").split()


def test_container_is_hardened(host):
    container = serving(host, "hello")
    config, host_config = container["Config"], container["HostConfig"]
    assert config["User"] == "10001:10001"
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]
    assert not host_config["CapAdd"]
    assert "no-new-privileges:true" in host_config["SecurityOpt"]
    assert host_config["Privileged"] is False
    tmp = host_config["Tmpfs"]["/tmp"]
    assert "noexec" in tmp
    assert "nosuid" in tmp
    assert host_config["NanoCpus"] == 1_000_000_000
    assert host_config["Memory"] == 512 * 1024**2
    assert host_config["MemorySwap"] == host_config["Memory"]
    assert host_config["PidsLimit"] == 128
    assert host_config["CpuShares"] == 512
    assert host_config["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 5}
    assert host_config["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "5", "max-size": "10m"}}
    assert not host_config["PortBindings"]
    assert not container["NetworkSettings"]["Ports"]
    assert host_config["NetworkMode"] == "streamlit-apps"
    assert "_stcore/health" in " ".join(config["Healthcheck"]["Test"])
    assert container["State"]["Health"]["Status"] == "healthy"
    mounts = {m["Destination"]: m for m in container["Mounts"]}
    assert set(mounts) == {"/run/secrets"}
    assert mounts["/run/secrets"]["RW"] is False
    assert not any("docker.sock" in m["Source"] for m in container["Mounts"])
    assert "GREETING=molecule" in config["Env"]
    assert not any(SECRET in e for e in config["Env"])
    assert config["Labels"]["secure_streamlit.sha"] == sha(host, "v1")


def test_internal_network_has_no_way_out(host):
    network = json.loads(host.check_output("docker network inspect streamlit-apps"))[0]
    assert network["Internal"] is True
    assert network["Options"]["com.docker.network.bridge.enable_icc"] == "false"


def test_streamlit_is_configured_in_the_image(host):
    container = serving(host, "hello")
    args = " ".join(container["Config"]["Entrypoint"] + (container["Config"]["Cmd"] or []))
    for flag in (
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        "--server.enableXsrfProtection=true",
        "--server.maxUploadSize=200",
        "--server.fileWatcherType=none",
        "--server.baseUrlPath=hello",
    ):
        assert flag in args
    name = container["Name"].lstrip("/")
    assert host.check_output(f"docker exec {name} id -u") == "10001"
    # The secure component is installed in the image; the app reads its secret file, no one else can.
    assert host.run(f"docker exec {name} /opt/venv/bin/python -c 'import streamlit_secure_context'").rc == 0
    assert host.check_output(f"docker exec {name} cat /run/secrets/api-token") == SECRET
    assert host.run(f"docker exec {name} touch /app/x").rc != 0
    assert host.run(f"docker exec {name} sh -c 'cp /bin/true /tmp/t && /tmp/t'").rc != 0


def test_apps_answer_through_the_edge(host):
    assert status_of(host, "/hello/") == 200
    assert status_of(host, "/hello/_stcore/health") == 200
    assert status_of(host, "/second/_stcore/health") == 200
    assert host.check_output("stat -c %a /etc/streamlit-apps/secrets/hello/api-token") == "400"


def test_deploy_switches_to_the_new_commit_without_failed_requests(host):
    before = serving(host, "hello")
    with Load(host, "/hello/") as load:
        result = deploy(host, "v2")
    assert result.returncode == 0, result.stdout[-3000:]
    after = serving(host, "hello")
    assert after["Config"]["Labels"]["secure_streamlit.sha"] == sha(host, "v2")
    assert sha(host, "v2")[:12] in after["Name"]
    assert before["Id"] != after["Id"]
    assert len(load.codes) > 20
    assert set(load.codes) == {"200"}, load.codes
    record = audit_records(host)[-1]
    assert record["status"] == "deployed"
    assert record["sha"] == sha(host, "v2")
    assert record["previous"] == [sha(host, "v1")]
    answer = json.loads(host.file(f"{RESULTS}/hello.json").content_string)
    assert answer == {"app": "hello", "sha": sha(host, "v2"), "status": "deployed", "reason": ""}
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(("commit", "step"), [("broken", "health"), ("nobuild", "build")])
def test_a_broken_commit_leaves_the_old_version_serving(host, commit, step):
    before = serving(host, "hello")
    with Load(host, "/hello/") as load:
        result = deploy(host, commit)
    assert result.returncode != 0
    assert f"failed at the {step} step" in " ".join((result.stdout + result.stderr).split())
    after = serving(host, "hello")
    assert after["Id"] == before["Id"]
    assert set(load.codes) == {"200"}, load.codes
    record = audit_records(host)[-1]
    assert record["status"] == "failed"
    assert record["sha"] == sha(host, commit)
    assert record["reason"].startswith(f"{step} failed")
    answer = json.loads(host.file(f"{RESULTS}/hello.json").content_string)
    assert answer["status"] == "failed"
    assert answer["sha"] == sha(host, commit)
    assert answer["reason"]


def test_redeploying_the_running_commit_changes_nothing(host):
    before = serving(host, "hello")
    result = deploy(host, "v2")
    assert result.returncode == 0, result.stdout[-3000:]
    assert serving(host, "hello")["Id"] == before["Id"]
    answer = json.loads(host.file(f"{RESULTS}/hello.json").content_string)
    assert answer["status"] == "deployed"
    assert answer["reason"] == "already serving with these settings"


def test_old_images_are_pruned(host):
    # Back to v1 (its image is still there), then v2 again: three deploys, at most two images kept.
    assert deploy(host, "v1").returncode == 0
    assert deploy(host, "v2").returncode == 0
    images = host.check_output("docker images -q --filter label=secure_streamlit.app=hello").split()
    assert len(images) <= 2
    running = serving(host, "hello")["Image"]
    assert running.split(":")[-1][:12] in images


def test_removing_an_app_removes_its_container_and_route(host):
    only_hello = json.dumps({"apps": [a for a in _inventory_apps() if a["name"] == "hello"]})
    result = run_playbook(CONVERGE, "-e", only_hello)
    assert result.returncode == 0, result.stdout[-3000:]
    assert containers(host, "extra") == []
    assert not host.file(f"{UPSTREAMS}/extra.conf").exists
    assert status_of(host, "/second/") == 404
    assert host.run("docker images -q --filter label=secure_streamlit.app=extra").stdout.strip() == ""
    assert status_of(host, "/hello/_stcore/health") == 200


def _inventory_apps() -> list[dict]:
    import yaml

    molecule = yaml.safe_load((PROJECT / "molecule/apps/molecule.yml").read_text())
    return molecule["provisioner"]["inventory"]["group_vars"]["all"]["apps"]
