"""The apps role on a real engine behind real nginx, with the monitor and the host's deployer.

The tests run in order: v1 serves after converge and the monitor settles on it; a push to main (the
bare repository and the fake GitHub move) goes live through monitor -> deployer -> deploy.yml under
load, and old images are pruned; a broken push is recorded as failed, not retried, and v2 keeps
serving; a commit without an entrypoint fails at the build step of a manual deploy.yml; redeploying
the running commit changes nothing; an edited inventory adds a third app and removes one.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import yaml

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
DEPLOY = PROJECT / "playbooks/deploy.yml"
CONVERGE = PROJECT / "molecule/apps/converge.yml"
CURL = "curl -s --cacert /etc/streamlit-edge/ca.crt --resolve edge.lab.test:443:127.0.0.1"
UPSTREAMS = "/etc/nginx/streamlit-upstreams"
AUDIT_LOG = "/var/log/streamlit/deploys.log"
SECRET = "molecule-S3cret-NeverLogged"
TOKEN = "ghp_molecule0nlyF4keT0kenNeverLogged00"
REPOSITORY = "/srv/git/acme/hello.git"
FAKE_STATE = "/var/lib/fake-github/state.json"
DATA = "/srv/streamlit/apps/hello"
MONITOR_STATE = "/var/lib/github-repo-monitor/state.json"
MONITOR_CONFIG = "/etc/github-repo-monitor/config.json"
# An inventory edit is converged with the tags of the tasks that read `apps` (and the preflights whose
# checks and variables they rely on): the apps role whole, the edge's access rules, certificates and
# routes, the monitor's configuration, the status command's access and timer. The engine, the packages
# and the programs are not walked again; `always` tasks and notified handlers still run.
INVENTORY_EDIT_TAGS = ",".join(
    (
        "apps",
        "tls_preflight",
        "tls_access",
        "tls_certificates",
        "tls_config",
        "monitor_preflight",
        "monitor_config",
        "status_preflight",
        "status_access",
        "status_timer",
    )
)


def sha(host, name: str) -> str:
    return host.check_output(f"cat /srv/git/shas/{name}").strip()


def containers(host, app: str) -> list[dict]:
    ids = host.check_output(f"docker ps -aq --filter label=secure_streamlit.app={app}").split()
    return json.loads(host.check_output(f"docker inspect {' '.join(ids)}")) if ids else []


def serving(host, app: str) -> dict:
    """The one container of the app, checked to be the one the edge's upstream include points at."""
    (container,) = containers(host, app)
    # The internal network, or the app's own bridge when it has egress.
    (network,) = container["NetworkSettings"]["Networks"].values()
    address = network["IPAddress"]
    include = host.file(f"{UPSTREAMS}/{app}.conf").content_string
    assert f"server {address}:8501;" in include
    return container


def status_of(host, path: str) -> int:
    return int(host.check_output(f"{CURL} -o /dev/null -w '%{{http_code}}' 'https://edge.lab.test{path}'"))


def run_playbook(playbook: Path, *args: str, inventory: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory or os.environ["MOLECULE_INVENTORY_FILE"]), str(playbook), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(PROJECT / "collections"), "ANSIBLE_FORCE_COLOR": "0"},
    )


def deploy(host, name: str) -> subprocess.CompletedProcess:
    return run_playbook(DEPLOY, "-e", "deploy_hosts=all", "-e", "app=hello", "-e", f"sha={sha(host, name)}")


def audit_records(host, commit: str | None = None) -> list[dict]:
    records = [json.loads(line) for line in host.file(AUDIT_LOG).content_string.splitlines()]
    return [r for r in records if commit is None or r.get("sha") == sha(host, commit)]


def push(host, branch: str, commit: str) -> None:
    """Move the branch in the bare repository and in what the fake GitHub answers (a push)."""
    host.check_output(f"git -C {REPOSITORY} update-ref refs/heads/{branch} {sha(host, commit)}")
    state = json.loads(host.file(FAKE_STATE).content_string)
    state["repos"]["acme/hello"][branch] = sha(host, commit)
    host.check_output(f"echo '{json.dumps(state)}' >{FAKE_STATE}.new && mv {FAKE_STATE}.new {FAKE_STATE}")


def monitor_state(host, app: str) -> dict:
    result = host.run(f"cat {MONITOR_STATE}")
    return json.loads(result.stdout).get("apps", {}).get(app, {}) if result.rc == 0 else {}


def wait_until(condition, timeout: float, what: str) -> float:
    """Seconds until condition() held; fails naming what was awaited."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"not within {timeout} s: {what}"
        time.sleep(1)
    return time.monotonic() - start


def monitor_polls(host, app: str, count: int, timeout: float) -> None:
    """Waits until the monitor has read the app's head `count` more times (each poll stamps last_checked)."""
    seen = {monitor_state(host, app).get("last_checked")}
    wait_until(lambda: seen.add(monitor_state(host, app).get("last_checked")) or len(seen) > count, timeout, "polls")


def edited_inventory(tmp_path: Path, **settings) -> Path:
    """A copy of the scenario's inventory with the scenario's settings overridden by `settings`."""
    inventory = yaml.safe_load(Path(os.environ["MOLECULE_INVENTORY_FILE"]).read_text())
    inventory["all"]["vars"] = {**inventory["all"]["vars"], **_inventory_settings(), **settings}
    edited = tmp_path / "inventory.yml"
    edited.write_text(yaml.safe_dump(inventory))
    return edited


def monitored(host) -> list[str]:
    return sorted(app["name"] for app in json.loads(host.check_output(f"cat {MONITOR_CONFIG}"))["apps"])


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
        # The loop checks the stop file between requests ([l] keeps pgrep from matching this shell).
        wait_until(lambda: self.host.run("pgrep -f '[l]oad.stop'").rc == 1, 30, "the load loop to stop")
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
    assert set(mounts) == {"/run/secrets", "/data", "/run/postgresql"}
    assert mounts["/run/postgresql"]["RW"] is False
    assert mounts["/run/secrets"]["RW"] is False
    assert mounts["/data"]["RW"] is True
    assert mounts["/data"]["Source"] == DATA
    assert not any("docker.sock" in m["Source"] for m in container["Mounts"])
    assert "GREETING=molecule" in config["Env"]
    assert not any(SECRET in e for e in config["Env"])
    assert config["Labels"]["secure_streamlit.sha"] == sha(host, "v1")


def test_the_apps_data_directory_is_its_own_and_writable_by_the_app_only(host):
    directory = host.file(DATA)
    assert directory.is_directory
    assert (directory.uid, directory.gid, directory.mode) == (10001, 10001, 0o700)
    parent = host.file(os.path.dirname(DATA))
    assert (parent.uid, parent.mode) == (0, 0o711)
    container = serving(host, "hello")["Id"]
    # The app (uid 10001, read-only root file system) writes there; the file stays on the host.
    host.check_output(f"docker exec {container} sh -c 'echo written-by-v1 >/data/marker'")
    assert host.file(f"{DATA}/marker").uid == 10001
    assert host.run(f"docker exec {container} sh -c 'echo x >/app/marker'").rc != 0


def test_the_apps_data_size_is_recorded_and_unenforced_here_says_why(host):
    """The instance's /srv is Docker's overlay: no project quotas, so the size is recorded for the status
    command with the reason, root's only (a host with ext4 prjquota enforces it: tests/unit test__quota)."""
    record = host.file("/var/lib/streamlit-apps/hello/quota.json")
    assert (record.uid, record.mode) == (0, 0o600)
    quota = json.loads(record.content_string)
    assert quota["size_bytes"] == 1 << 30
    assert quota["enforced"] is False
    assert "mounted without project quotas" in quota["reason"] or "has no project quotas" in quota["reason"]
    assert not host.file("/var/lib/streamlit-apps/extra/quota.json").exists


def sql(host, container: str, statement: str) -> str:
    """Run SQL as the app does: psycopg with libpq's settings from the platform (PGHOST, PGPASSFILE...)."""
    code = (
        "import psycopg, sys\n"
        "with psycopg.connect() as c:\n"
        "    rows = c.execute(sys.argv[1]).fetchall() if sys.argv[1].startswith('select') else c.execute(sys.argv[1])\n"
        "    print(rows[0][0] if isinstance(rows, list) else 'ok')\n"
    )
    return host.check_output(
        f"docker exec {container} /opt/venv/bin/python -c {shlex.quote(code)} {shlex.quote(statement)}"
    )


def test_the_app_keeps_rows_in_its_own_database(host):
    container = serving(host, "hello")
    assert "/run/postgresql" in {m["Destination"] for m in container["Mounts"]}
    env = container["Config"]["Env"]
    assert "PGDATABASE=app_hello" in env
    assert not any("PASSWORD" in e.upper() or e.startswith("DATABASE_URL=") for e in env)
    sql(host, container["Id"], "create table notes (id serial primary key, body text)")
    sql(host, container["Id"], "insert into notes (body) values ('kept across deploys')")
    assert sql(host, container["Id"], "select count(*) from notes") == "1"
    # Only its own database: the server's and another's refuse it.
    connect = "/opt/venv/bin/python -c 'import psycopg; psycopg.connect()'"
    other = host.run(f"docker exec -e PGDATABASE=postgres {container['Id']} {connect}")
    assert other.rc != 0
    assert "no pg_hba.conf entry" in other.stderr or "rejects connection" in other.stderr, other.stderr
    # No TCP listener at all; the password is root's on the host and the app's in /run/secrets only.
    assert not host.socket("tcp://0.0.0.0:5432").is_listening
    assert host.file("/etc/streamlit-apps/db/app_hello.password").mode == 0o600
    secrets = host.file("/etc/streamlit-apps/secrets/hello").listdir()
    assert {"pgpass", "database-url", "api-token"} == set(secrets)
    # The connection as the app makes it, timed inside the container (a figure for the notes).
    timing = host.check_output(
        f"docker exec {container['Id']} /opt/venv/bin/python -c "
        + shlex.quote(
            "import psycopg, statistics, time\n"
            "t = []\n"
            "for _ in range(20):\n"
            "    s = time.perf_counter(); psycopg.connect().close(); t.append(time.perf_counter() - s)\n"
            "print(round(statistics.median(t) * 1000, 1))"
        )
    )
    print(f"PostgreSQL connection from the app: median {timing} ms of 20")
    first = {r["app"]: r["seconds"] for r in reversed(audit_records(host)) if r.get("requested_by") == "site.yml"}
    print(f"first deploy by site.yml: hello (data, database) {first.get('hello')} s, extra {first.get('extra')} s")
    log = host.check_output("journalctl -u postgresql@15-main --no-pager; cat /var/log/postgresql/*.log")
    assert "connection authorized: user=app_hello database=app_hello" in log


def test_internal_network_has_no_way_out(host):
    network = json.loads(host.check_output("docker network inspect streamlit-apps"))[0]
    assert network["Internal"] is True
    assert network["Options"]["com.docker.network.bridge.enable_icc"] == "false"


EGRESS_TARGET = "198.18.0.10"
EGRESS_TABLE = "inet secure_streamlit_egress"
# What the app runs to try a destination: "open", or why not (the exception's type).
REACH = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()\n"
    "    print('open')\n"
    "except OSError as exc:\n"
    "    print(type(exc).__name__)\n"
)


def reach(host, container: str, target: str, port: int) -> str:
    command = ["docker", "exec", container, "/opt/venv/bin/python", "-c", REACH, target, str(port)]
    return host.check_output(shlex.join(command))


def dropped(host, chain: str) -> int:
    listing = host.check_output(f"nft list chain {EGRESS_TABLE} {chain}")
    return sum(int(line.split()[2]) for line in listing.splitlines() if line.strip().startswith("counter packets"))


def test_an_apps_allowed_egress_answers_and_every_other_destination_is_dropped(host):
    extra = serving(host, "extra")
    name = extra["Name"].lstrip("/")
    (network_name,) = extra["NetworkSettings"]["Networks"]
    assert network_name == "streamlit-egress-extra"
    network = json.loads(host.check_output("docker network inspect streamlit-egress-extra"))[0]
    assert network["Internal"] is False
    interface = network["Options"]["com.docker.network.bridge.name"]
    gateway = network["IPAM"]["Config"][0]["Gateway"]
    # The allowed name was resolved at deploy time into the container's /etc/hosts.
    assert f"{EGRESS_TARGET}\tegress-target.lab.test" in host.check_output(f"docker exec {name} cat /etc/hosts")
    url = "http://egress-target.lab.test:8080/answer.txt"
    fetched = host.check_output(
        f"docker exec {name} /opt/venv/bin/python -c "
        + shlex.quote(f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=30).read().decode())")
    )
    assert fetched == "egress-target-answer"
    chain = f"app_{interface}"
    before = dropped(host, chain)
    hello = serving(host, "hello")["NetworkSettings"]["Networks"]["streamlit-apps"]["IPAddress"]
    instance = host.check_output("hostname -I").split()[0]
    refused = {
        "the same host, another port": (EGRESS_TARGET, 8081),
        "another app": (hello, 8501),
        "the host's nginx on the app's bridge": (gateway, 443),
        "the host's nginx on its own address": (instance, 443),
        "the host's fake GitHub": (gateway, 9100),
        "the host's PostgreSQL port": (gateway, 5432),
        "somewhere else": ("192.0.2.1", 443),
    }
    answers = {what: reach(host, name, *target) for what, target in refused.items()}
    assert all(answer in ("TimeoutError", "timeout") for answer in answers.values()), answers
    # Every refused try reached the app's chain and was counted there (at least its first SYN).
    assert dropped(host, chain) - before >= len(refused)
    # No resolver answers the app: names outside its list do not resolve.
    lookup = "import socket; socket.getaddrinfo('deb.debian.org', 443)"
    assert host.run(f"docker exec {name} /opt/venv/bin/python -c {shlex.quote(lookup)}").rc != 0
    # The same target is refused to an app without egress (no route out at all).
    assert reach(host, hello_container(host), EGRESS_TARGET, 8080) != "open"


def hello_container(host) -> str:
    return serving(host, "hello")["Name"].lstrip("/")


def test_the_egress_table_is_the_platforms_and_is_loaded_at_boot(host):
    assert host.file("/etc/streamlit-apps/egress").mode == 0o700
    part = host.file("/etc/streamlit-apps/egress/apps/extra.nft")
    assert part.mode == 0o600
    assert f"ip daddr {EGRESS_TARGET}/32 tcp dport 8080 counter accept" in part.content_string
    assert not host.file("/etc/streamlit-apps/egress/apps/hello.nft").exists
    assert host.service("streamlit-egress.service").is_enabled
    assert host.run("nft -c -f /etc/streamlit-apps/egress/table.nft").rc == 0
    # The refusals are logged with the app's name where the kernel log reaches (the VM's journal); in this
    # instance (a network namespace of its own) the kernel does not log them, so the counters count.
    assert 'log prefix "streamlit-egress drop extra: "' in host.check_output(f"nft list table {EGRESS_TABLE}")


def test_streamlit_is_configured_in_the_image(host):
    container = serving(host, "hello")
    args = " ".join(container["Config"]["Entrypoint"] + (container["Config"]["Cmd"] or []))
    # Streamlit through the launcher that turns Nagle's algorithm off (tests/unit/test_streamlit_launch.py).
    assert args.startswith("/opt/venv/bin/python /opt/streamlit_launch.py run ")
    for flag in (
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        "--server.enableXsrfProtection=true",
        "--server.maxUploadSize=200",
        "--server.fileWatcherType=none",
        "--server.baseUrlPath=hello",
        # No traceback and no developer options for visitors (the traceback stays in the container log).
        "--client.showErrorDetails=none",
        "--client.toolbarMode=viewer",
    ):
        assert flag in args
    name = container["Name"].lstrip("/")
    assert host.check_output(f"docker exec {name} id -u") == "10001"
    assert host.check_output(f"docker exec {name} stat -c '%U %a' /opt/streamlit_launch.py") == "root 644"
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


def test_the_monitor_settles_on_the_commits_site_yml_deployed(host):
    """The monitor's first poll requests each branch head; the deployer finds it serving already."""
    assert host.service("streamlit-deployer.path").is_running
    for app in ("hello", "extra"):
        wait_until(lambda app=app: monitor_state(host, app).get("last_deployed_sha") == sha(host, "v1"), 180, app)
    assert host.run("systemctl is-failed streamlit-deployer.service").stdout.strip() != "failed"
    assert host.file("/var/spool/github-repo-monitor/requests").listdir() == []


def test_a_push_goes_live_through_the_monitor_without_failed_requests(host):
    before, extra = serving(host, "hello"), serving(host, "extra")
    with Load(host, "/hello/") as load:
        push(host, "main", "v2")
        seconds = wait_until(
            lambda: monitor_state(host, "hello").get("last_deployed_sha") == sha(host, "v2"), 300, "v2 deployed"
        )
    print(f"push -> serving and acknowledged: {seconds:.0f} s")
    after = serving(host, "hello")
    assert after["Config"]["Labels"]["secure_streamlit.sha"] == sha(host, "v2")
    assert before["Id"] != after["Id"]
    assert serving(host, "extra")["Id"] == extra["Id"]
    assert len(load.codes) > 20
    assert set(load.codes) == {"200"}, load.codes
    (record,) = audit_records(host, "v2")
    assert record["status"] == "deployed"
    assert record["requested_by"] == "monitor"
    assert record["previous"] == [sha(host, "v1")]
    # apps_keep_images: 1 -- only the running image is left.
    images = host.check_output("docker images -q --filter label=secure_streamlit.app=hello").split()
    assert len(images) == 1
    assert json.loads(host.check_output(f"docker inspect {images[0]}"))[0]["Id"] == after["Image"]
    journal = host.check_output("journalctl -u streamlit-deployer.service -u github-repo-monitor.service --no-pager")
    assert f"hello: deploying {sha(host, 'v2')}" in journal
    assert SECRET not in journal
    assert TOKEN not in journal


def test_the_apps_data_outlives_the_deploy(host):
    container = serving(host, "hello")
    assert container["Config"]["Labels"]["secure_streamlit.sha"] == sha(host, "v2")
    assert host.check_output(f"docker exec {container['Id']} cat /data/marker") == "written-by-v1"
    assert sql(host, container["Id"], "select body from notes") == "kept across deploys"


def test_a_broken_push_is_recorded_as_failed_not_retried_and_the_old_version_keeps_serving(host):
    before = serving(host, "hello")
    with Load(host, "/hello/") as load:
        push(host, "main", "broken")
        wait_until(lambda: sha(host, "broken") in monitor_state(host, "hello").get("failed_shas", {}), 300, "failed")
    assert serving(host, "hello")["Id"] == before["Id"]
    assert set(load.codes) == {"200"}, load.codes
    (record,) = audit_records(host, "broken")
    assert record["status"] == "failed"
    assert record["reason"].startswith("health failed")
    monitor_polls(host, "hello", 4, 120)  # four more polls of the same head
    assert len(audit_records(host, "broken")) == 1
    assert host.file("/var/spool/github-repo-monitor/requests").listdir() == []
    push(host, "main", "v2")  # back at the running commit: nothing to deploy


def test_a_commit_whose_script_raises_at_import_is_refused_at_the_gate(host):
    """Streamlit's health endpoint answers before any script runs: only running the script once can tell.
    The old version keeps serving through the edge, and the record holds the exception, not a traceback."""
    before = serving(host, "hello")
    with Load(host, "/hello/") as load:
        push(host, "main", "raises")
        wait_until(lambda: sha(host, "raises") in monitor_state(host, "hello").get("failed_shas", {}), 300, "failed")
    assert serving(host, "hello")["Id"] == before["Id"]
    assert set(load.codes) == {"200"}, load.codes
    (record,) = audit_records(host, "raises")
    assert record["status"] == "failed"
    assert record["step"] == "gate"
    assert "ModuleNotFoundError: No module named 'clinic_risk_scores'" in record["reason"]
    # The page through the edge is still the working version's.
    assert sha(host, "v2") == serving(host, "hello")["Config"]["Labels"]["secure_streamlit.sha"]
    push(host, "main", "v2")


def test_a_commit_that_does_not_build_leaves_the_old_version_serving(host):
    before = serving(host, "hello")
    with Load(host, "/hello/") as load:
        result = deploy(host, "nobuild")
    assert result.returncode != 0
    output = " ".join((result.stdout + result.stderr).split())
    assert "failed at the build step" in output
    # The failing command's own last lines, not a cut prefix.
    assert "entrypoint streamlit_app.py is not in the repository" in output
    assert serving(host, "hello")["Id"] == before["Id"]
    assert set(load.codes) == {"200"}, load.codes
    (record,) = audit_records(host, "nobuild")
    assert record["status"] == "failed"
    assert record["reason"].startswith("build failed")
    assert record["requested_by"].startswith("deploy.yml by ")


def test_redeploying_the_running_commit_changes_nothing(host):
    before = serving(host, "hello")
    result = deploy(host, "v2")
    assert result.returncode == 0, result.stdout[-3000:]
    assert serving(host, "hello")["Id"] == before["Id"]
    record = audit_records(host, "v2")[-1]
    assert record["status"] == "deployed"
    assert record["reason"] == "already serving with these settings"


def test_an_app_added_and_one_removed_by_editing_only_the_inventory(host, tmp_path):
    """The inventory's apps list loses `extra` and gains `third`; a converge of what reads `apps` does the rest."""
    apps = [
        *[a for a in copy.deepcopy(_inventory_settings()["apps"]) if a["name"] != "extra"],
        {"name": "third", "repo": "acme/hello", "branch": "stable"},
    ]
    edited = edited_inventory(tmp_path, apps=apps)
    result = run_playbook(CONVERGE, "--tags", INVENTORY_EDIT_TAGS, inventory=edited)
    assert result.returncode == 0, result.stdout[-3000:]
    # The third app: built, running hardened, routed, watched, accepted by the deployer.
    assert serving(host, "third")["Config"]["Labels"]["secure_streamlit.sha"] == sha(host, "v1")
    assert status_of(host, "/third/_stcore/health") == 200
    assert monitored(host) == ["hello", "third"]
    deployer_config = json.loads(host.check_output("cat /opt/secure-streamlit-deployer/deployer.json"))
    assert [app["name"] for app in deployer_config["apps"]] == ["hello", "third"]
    # The removed one: no container, image, route or upstream left.
    assert containers(host, "extra") == []
    assert not host.file(f"{UPSTREAMS}/extra.conf").exists
    # Its egress closes with it: no rules, no network.
    assert not host.file("/etc/streamlit-apps/egress/apps/extra.nft").exists
    assert host.run("docker network inspect streamlit-egress-extra").rc != 0
    assert "streamlit-egress drop extra" not in host.check_output(f"nft list table {EGRESS_TABLE}")
    assert status_of(host, "/second/") == 404
    assert host.run("docker images -q --filter label=secure_streamlit.app=extra").stdout.strip() == ""
    assert status_of(host, "/hello/_stcore/health") == 200
    wait_until(lambda: monitor_state(host, "third").get("last_deployed_sha") == sha(host, "v1"), 180, "third")


def test_after_an_engine_restart_every_app_serves_again_at_the_same_commit(host):
    before = {app: serving(host, app)["Config"]["Labels"]["secure_streamlit.sha"] for app in ("hello", "third")}
    host.check_output("systemctl restart docker")
    seconds = wait_until(
        lambda: all(status_of(host, f"/{app}/_stcore/health") == 200 for app in ("hello", "third")), 300, "serving"
    )
    print(f"engine restart -> all apps serving: {seconds:.0f} s")
    after = {app: serving(host, app)["Config"]["Labels"]["secure_streamlit.sha"] for app in ("hello", "third")}
    assert after == before
    assert host.service("streamlit-apps-restore.service").is_enabled


def test_the_deploy_audit_trail_is_one_intact_hash_chain(host):
    result = host.run(
        "/usr/bin/python3 /opt/secure-streamlit-deployer/streamlit_deployer.py "
        "--config /opt/secure-streamlit-deployer/deployer.json verify-audit"
    )
    assert result.rc == 0, result.stdout + result.stderr
    assert "deploys.log: audit log OK" in result.stdout


def test_the_status_command_shows_an_admin_the_deployed_apps_without_root(host):
    """`secure-streamlit status` as a member of the admin group (roles/status): the apps that serve, at the
    commits that serve, read from the snapshot root's timer writes; a non-member gets nothing."""
    host.check_output("id status-admin || useradd --no-create-home --groups streamlit-admin status-admin")
    host.check_output("systemctl start secure-streamlit-status.service")  # a fresh snapshot, as the timer writes
    result = host.run("runuser -u status-admin -- secure-streamlit status --json")
    assert result.rc in (0, 1), result.stdout + result.stderr  # 1: an earlier test left a failed last deploy
    report = json.loads(result.stdout)
    now = {app: serving(host, app)["Config"]["Labels"]["secure_streamlit.sha"] for app in ("hello", "third")}
    assert {app["name"]: (app["serving"] or {}).get("sha") for app in report["apps"]} == now
    # The engine answered for each app and found the serving container (its health check's verdict is
    # the engine's, and may lag on a loaded host).
    assert report["engine"]["error"] is None
    assert all(app["health"]["container"]["name"] == app["serving"]["container"] for app in report["apps"])
    assert report["audit"]["deploys"]["ok"], report["audit"]
    # hello's data against its size (1G, not enforced on the instance's overlay).
    hello = next(app for app in report["apps"] if app["name"] == "hello")
    assert (hello["data"]["size_bytes"], hello["data"]["enforced"]) == (1 << 30, False)
    assert 0 < hello["data"]["usage_bytes"] < 1 << 30
    assert host.run("runuser -u nobody -- secure-streamlit status").rc == 2


def test_removing_the_last_app_leaves_nothing_of_it_on_the_host(host, tmp_path):
    """Runs last: the inventory's apps list becomes empty."""
    edited = edited_inventory(tmp_path, apps=[])
    result = run_playbook(CONVERGE, "--tags", INVENTORY_EDIT_TAGS, inventory=edited)
    assert result.returncode == 0, result.stdout[-3000:]
    # Nothing routes to it or watches it any more.
    assert not host.file(f"{UPSTREAMS}/hello.conf").exists
    assert "location /hello/ " not in host.file("/etc/nginx/sites-enabled/streamlit-edge.conf").content_string
    assert status_of(host, "/hello/") == 404
    assert monitored(host) == []
    assert host.run("docker ps -aq --filter label=secure_streamlit.app").stdout.strip() == ""
    assert host.run("docker images -q --filter label=secure_streamlit.app").stdout.strip() == ""
    assert not host.file("/opt/secure-streamlit-deployer").exists
    for unit in ("streamlit-deployer.path", "streamlit-deployer.service", "streamlit-apps-restore.service"):
        assert not host.file(f"/etc/systemd/system/{unit}").exists
    assert host.file("/var/lib/streamlit-apps").listdir() == ["platform"]
    assert host.file("/etc/streamlit-apps/secrets").listdir() == []
    # Its data and database are kept until the operator names it in apps_purge_data.
    assert host.file(f"{DATA}/marker").content_string == "written-by-v1\n"
    databases = "runuser -u postgres -- psql -Atc 'select datname from pg_database'"
    assert "app_hello" in host.check_output(databases).split()
    # The purge is the apps role's alone.
    edited = edited_inventory(tmp_path, apps=[], apps_purge_data=["hello"])
    result = run_playbook(CONVERGE, "--tags", "apps", inventory=edited)
    assert result.returncode == 0, result.stdout[-3000:]
    assert not host.file(DATA).exists
    assert "app_hello" not in host.check_output(databases).split()
    assert not host.file("/etc/streamlit-apps/db/app_hello.password").exists


def _inventory_settings() -> dict:
    molecule = yaml.safe_load((PROJECT / "molecule/apps/molecule.yml").read_text())
    return molecule["provisioner"]["inventory"]["group_vars"]["all"]
