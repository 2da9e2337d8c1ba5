"""The host command `secure-streamlit` (roles/status/files/secure_streamlit.py): its output and exit codes
for a healthy host, an unhealthy app, a failed deploy, an expiring certificate and a tampered audit line,
over files written by the real code (tests/status_host.py); the snapshot an admin group reads without
root; the alert hook.

The root timer's `export` runs in this process (so the Docker engine can be the stand-in probe); every
`status` is the installed program run as a real process: the program and the library files the role
installs (roles/status/vars/main.yml), copied into the layout the role makes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO
from tests.status_host import DAY, NOW, Host, sha, tamper

PROGRAM = REPO / "roles/status/files/secure_streamlit.py"
_spec = importlib.util.spec_from_file_location("secure_streamlit", PROGRAM)
command = importlib.util.module_from_spec(_spec)
sys.modules["secure_streamlit"] = command
_spec.loader.exec_module(command)

MODULES = yaml.safe_load((REPO / "roles/status/vars/main.yml").read_text())["_status_modules"]
# The host's interpreter (Debian's python3) for the runs as another user: the test's venv may sit where
# only root may look.
HOST_PYTHON = "/usr/bin/python3"
ADMIN_GID = 64123  # a group no account has: only the processes given it read the snapshot
NOBODY = 65534


@pytest.fixture
def root_dir():
    """A directory every user may traverse (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="status-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def installed(root_dir) -> Path:
    """The program and its library as roles/status installs them (nothing else of the collection)."""
    base = root_dir / "opt"
    lib = base / "lib/ansible_collections/secure_streamlit/hosting/plugins/module_utils"
    lib.mkdir(parents=True)
    for name in MODULES:
        shutil.copyfile(REPO / "plugins/module_utils" / name, lib / name)
    shutil.copyfile(PROGRAM, base / "secure_streamlit.py")
    for path in [base, *base.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return base / "secure_streamlit.py"


@pytest.fixture
def host(root_dir):
    host = Host(root_dir / "host", ["hello", "extra"]).healthy()
    status_dir = host.root / "status"
    status_dir.mkdir(mode=0o750)
    os.chown(status_dir, 0, ADMIN_GID) if os.geteuid() == 0 else None
    host.config_path = host.root / "status.json"
    write_config(host)
    return host


def write_config(host: Host, **extra) -> None:
    host.config_path.write_text(json.dumps(host.status_config(**extra)))
    if os.geteuid() == 0:
        os.chown(host.config_path, 0, ADMIN_GID)
    host.config_path.chmod(0o640)


def export(host: Host) -> int:
    """The root timer's run: collect with the stand-in engine, write the snapshot, alert."""
    return command.main(
        ["--config", str(host.config_path), "export"], probe_factory=lambda: host.probe, clock=host.clock
    )


def status(installed: Path, host: Host, *args: str, as_admin: bool = False, member: bool = True):
    """`secure-streamlit status ...` as a process: root reads the snapshot it names; an admin the configured one."""
    python = HOST_PYTHON if as_admin else sys.executable
    argv = [python, "-I", str(installed), "--config", str(host.config_path), "status", *args]
    kwargs = {}
    if as_admin:
        kwargs = {"user": NOBODY, "group": NOBODY, "extra_groups": [ADMIN_GID] if member else []}
    else:
        argv += ["--snapshot", str(host.root / "status/status.json")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def test_a_healthy_host_exits_0(installed, host):
    assert export(host) == 0
    result = status(installed, host)
    assert result.returncode == 0, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"{os.uname().nodename} at 2027-01-15T08:00:00Z: OK")
    assert f"app hello: serving {sha(2)[:12]}" in result.stdout
    assert f"app extra: serving {sha(4)[:12]}" in result.stdout
    report = json.loads(status(installed, host, "--json").stdout)
    assert report["schema"] == "secure-streamlit-status/1"
    assert report["verdict"] == "ok"
    assert report["collect_seconds"] >= 0


def test_an_unhealthy_app_exits_1_and_names_it(installed, host):
    host.probe.set("hello", f"hello-{sha(2)[:12]}-abcdef", sha(2), health="unhealthy")
    export(host)
    result = status(installed, host)
    assert result.returncode == 1
    assert f"  ! app hello: its container hello-{sha(2)[:12]}-abcdef is unhealthy" in result.stdout
    assert status(installed, host, "extra").returncode == 0  # one app's view: its verdict alone


def test_a_failed_deploy_exits_1_with_the_sha_and_the_reason(installed, host):
    host.clock.now = NOW + 60
    host.fail("hello", sha(9), "the script raised KeyError: 'visit_date'")
    export(host)
    result = status(installed, host, "hello")
    assert result.returncode == 1
    assert f"failed: {sha(9)} at 2027-01-15T08:01:00Z: gate failed: the script raised KeyError" in result.stdout
    assert f"{sha(9)[:12]}  failed      12.5 s  by monitor  gate failed: the script raised" in result.stdout
    assert "certificates" not in result.stdout  # the app's view only
    report = json.loads(status(installed, host, "hello", "--json").stdout)
    assert report["apps"][0]["deploys"][0]["outcome"] == "failed"


def test_an_expiring_certificate_exits_1(installed, host):
    host.certificates(edge_days=29)
    export(host)
    result = status(installed, host)
    assert result.returncode == 1
    assert "  ! certificate edge edge.lab.test: expires on 2027-02-13T08:00:00Z (29 days left)" in result.stdout


def test_a_tampered_audit_line_exits_1_naming_the_first_broken_line(installed, host):
    tamper(host.root / "log/deploys.log", 2, '"seconds": 41.5', '"seconds": 4.5')
    export(host)
    result = status(installed, host)
    assert result.returncode == 1
    assert "audit deploys: audit log NOT OK: deploys.log line 3: chain broken" in result.stdout


def test_an_unknown_app_or_a_bad_configuration_exits_2(installed, host):
    export(host)
    result = status(installed, host, "nope")
    assert result.returncode == 2
    assert result.stderr == "secure-streamlit: no app 'nope' on this host (apps: hello, extra)\n"
    write_config(host, extra_key=1)
    result = subprocess.run(
        [sys.executable, "-I", str(installed), "--config", str(host.config_path), "export"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown key 'extra_key'" in result.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.access(HOST_PYTHON, os.X_OK), reason="switching users needs root and python3"
)
def test_an_admin_group_member_reads_the_snapshot_without_root_and_others_cannot(installed, host):
    export(host)
    snapshot = host.root / "status/status.json"
    info = snapshot.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, ADMIN_GID, 0o640)
    result = status(installed, host, as_admin=True)
    assert result.returncode == 0, result.stderr
    assert "(snapshot " in result.stdout.splitlines()[0]
    assert "app hello: serving" in result.stdout
    # The sources stay root's: the same user cannot read the deploy state or the log itself.
    denied = subprocess.run(
        ["cat", str(host.root / "state/hello/state.json")], user=NOBODY, extra_groups=[ADMIN_GID], check=False
    )
    assert denied.returncode != 0
    outsider = status(installed, host, as_admin=True, member=False)
    assert outsider.returncode == 2
    assert "cannot be read (Permission denied); are you in the status admin group?" in outsider.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.access(HOST_PYTHON, os.X_OK), reason="switching users needs root and python3"
)
def test_an_old_snapshot_needs_attention(installed, host):
    export(host)
    old = time.time() - 3600
    os.utime(host.root / "status/status.json", (old, old))
    result = status(installed, host, as_admin=True)
    assert result.returncode == 1
    assert "is secure-streamlit-status.timer running?" in result.stdout


def test_the_alert_hook_runs_once_per_new_problem(installed, host, root_dir):
    hook = root_dir / "hook.sh"
    calls = root_dir / "calls"
    hook.write_text(f'#!/bin/sh\n{{ echo "$SECURE_STREAMLIT_NEW_PROBLEMS"; cat; echo; }} >> {calls}\n')
    hook.chmod(0o755)
    write_config(host, alert_command=[str(hook)])
    export(host)
    assert not calls.exists()  # all well: no alert
    host.probe.set("hello", f"hello-{sha(2)[:12]}-abcdef", sha(2), health="unhealthy")
    export(host)
    export(host)  # the same problem again: no second alert
    lines = calls.read_text().splitlines()
    assert lines[0] == f"app hello: its container hello-{sha(2)[:12]}-abcdef is unhealthy (Docker's health check fails)"
    assert json.loads(lines[1])["verdict"] == "attention"
    assert len(lines) == 2
    host.certificates(edge_days=3)
    export(host)
    assert calls.read_text().splitlines()[2].startswith("certificate edge edge.lab.test: expires")


@pytest.mark.parametrize("owner", [0, NOBODY])
def test_a_configuration_the_admin_group_could_write_never_runs_its_alert_command(host, root_dir, capsys, owner):
    """Root runs alert_command: a group-writable status.json (or one an admin owns) would let an admin
    member make root run any program. The timer's run refuses the file before it runs anything."""
    if owner != 0 and os.geteuid() != 0:
        pytest.skip("chown needs root")
    ran = root_dir / "ran"
    hook = root_dir / "hook.sh"
    hook.write_text(f"#!/bin/sh\ntouch {ran}\n")
    hook.chmod(0o755)
    write_config(host, alert_command=[str(hook)])
    host.probe.set("hello", f"hello-{sha(2)[:12]}-abcdef", sha(2), health="unhealthy")
    if owner == 0:
        host.config_path.chmod(0o660)
        rule = "mode 0660 lets the group or others write it"
    else:
        os.chown(host.config_path, owner, ADMIN_GID)
        rule = f"owned by uid {owner}, must be owned by uid 0"
    assert export(host) == 2
    assert rule in capsys.readouterr().err
    assert not ran.exists()
    assert not (host.root / "status/status.json").exists()


def test_an_engine_that_cannot_be_reached_still_gives_a_report(installed, host):
    def no_engine():
        raise ConnectionError("Error while fetching server API version")

    command.main(["--config", str(host.config_path), "export"], probe_factory=no_engine, clock=host.clock)
    result = status(installed, host)
    assert result.returncode == 1
    assert "  ! engine: the container engine did not answer (ConnectionError: Error while fetching" in result.stdout
    assert "health unknown" in result.stdout


def test_check_config_accepts_the_role_s_file_and_names_a_bad_app(installed, host):
    run = [sys.executable, "-I", str(installed), "--config", str(host.config_path), "check-config"]
    result = subprocess.run(run, capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout) == (0, "config OK: 2 apps\n")
    config = host.status_config()
    config["settings"]["apps"] = ["hello", "Hello World"]
    host.config_path.write_text(json.dumps(config))
    result = subprocess.run(run, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "settings: apps[1] ('Hello World') is not an app name" in result.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.access(HOST_PYTHON, os.X_OK), reason="switching users needs root and python3"
)
def test_live_is_refused_without_root(installed, host):
    export(host)
    result = status(installed, host, "--live", as_admin=True)
    assert result.returncode == 2
    assert "--live needs root" in result.stderr


@pytest.mark.skipif(not os.access(HOST_PYTHON, os.X_OK), reason="needs the host's python3")
def test_the_timer_s_run_with_the_host_s_python_reads_the_certificates(installed, host):
    """`export` as the unit runs it: Debian's python3 and its cryptography (38 on bookworm, before the
    *_utc properties), the real clock, and whatever Docker SDK the interpreter has (none here: the
    report then says the engine did not answer)."""
    host.certificates(edge_days=(time.time() + 10 * DAY - NOW) / DAY)
    result = subprocess.run(
        [HOST_PYTHON, "-I", str(installed), "--config", str(host.config_path), "export"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((host.root / "status/status.json").read_text())
    edge = next(c for c in report["certificates"] if c["kind"] == "edge")
    assert edge["status"] == "expiring"
    assert 9.9 <= edge["days_left"] <= 10.0
    assert next(c for c in report["certificates"] if c["kind"] == "internal_ca")["status"] == "ok"


APPS_UID = 10001  # the apps' uid and group (roles/apps apps_uid), the status app's included


def test_the_status_app_gets_its_own_copy_readable_by_the_apps_uid_alone(installed, host):
    """status_app_enabled: the timer also writes the report where only the status app's container reads it
    (its directory mounted read-only): 0640, group the apps' uid, in a root-owned 0750 directory. On the host
    that directory sits inside the admins' 0750 one, which the container's mount does not need to traverse;
    here it is beside it, so a process of the apps' uid can try."""
    app_dir = host.root / "status-app"
    app_dir.mkdir(mode=0o750)
    if os.geteuid() == 0:
        os.chown(app_dir, 0, APPS_UID)
    write_config(host, app_snapshot=str(app_dir / "status.json"))
    assert export(host) == 0
    copy = app_dir / "status.json"
    assert copy.read_bytes() == (host.root / "status/status.json").read_bytes()
    info = copy.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640
    if os.geteuid() != 0:
        return
    assert (info.st_uid, info.st_gid) == (0, APPS_UID)
    reader = {"user": APPS_UID, "group": APPS_UID, "extra_groups": []}
    read = subprocess.run(["cat", str(copy)], capture_output=True, check=False, **reader)
    assert read.returncode == 0
    assert json.loads(read.stdout)["schema"] == "secure-streamlit-status/1"
    # Not the admin's snapshot, not the host's state, and nobody else reads the copy.
    assert subprocess.run(["cat", str(host.root / "status/status.json")], check=False, **reader).returncode != 0
    others = subprocess.run(["cat", str(copy)], check=False, user=NOBODY, group=NOBODY, extra_groups=[])
    assert others.returncode != 0


def test_a_relative_or_mistyped_app_snapshot_is_refused(installed, host):
    for bad in ("status.json", 7):
        write_config(host, app_snapshot=bad)
        result = subprocess.run(
            [sys.executable, "-I", str(installed), "--config", str(host.config_path), "check-config"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 2, result.stdout
        assert "app_snapshot must be" in result.stderr + result.stdout


def test_every_key_problem_is_named_at_once_and_the_alert_command_checked_after(host):
    """read_settings checks the keys and their types (as the deployer's configuration); what the types do
    not say (an absolute alert command) is checked once they hold."""
    write_config(host, snapshot_max_age="60", colour="blue")
    with pytest.raises(command.UsageError) as caught:
        command.load_config(host.config_path)
    assert str(caught.value) == (
        f"{host.config_path}: snapshot_max_age must be an integer (is str); unknown key 'colour'"
    )
    write_config(host, alert_command=["notify-send", "x"])
    with pytest.raises(command.UsageError) as caught:
        command.load_config(host.config_path)
    assert str(caught.value) == (
        f"{host.config_path}: alert_command must be a list of strings starting with an absolute path"
    )


def test_a_replicated_app_s_tasks_reach_the_snapshot_and_the_text(installed, host):
    """On a swarm manager the timer's run asks the swarm too (a stand-in here: tests/integration/
    test_status_swarm.py asks a real one); the installed program shows the tasks from the snapshot."""

    class OneSlotDown:
        def service(self, app):
            if app != "hello":
                return None
            task = {"slot": 1, "node": "worker-1", "node_state": "ready", "node_availability": "active"}
            task |= {"state": "running", "healthy": True, "message": "started", "error": "", "sha": sha(2)}
            task |= {"image": "r:5000/x", "port": 30001, "since": "2027-01-15T07:55:00Z", "restarts": 0}
            down = task | {"slot": 2, "node": "-", "state": "pending", "healthy": False, "port": None}
            down |= {"error": "no suitable node", "last_error": ""}
            return {"service": "app-hello", "sha": sha(2), "desired": 2, "running": 1, "running_at_sha": 1} | {
                "update": None,
                "tasks": [task | {"last_error": ""}, down],
            }

    assert command.default_swarm(host.probe) is None  # only the Docker engine's client can be asked
    command.main(
        ["--config", str(host.config_path), "export"],
        probe_factory=lambda: host.probe,
        clock=host.clock,
        swarm_factory=lambda _probe: OneSlotDown(),
    )
    result = status(installed, host, "hello")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"  ! app hello: 1 of 2 replicas run {sha(2)[:12]}; slot 2 on no node: pending: no suitable node" in (
        result.stdout
    )
    assert "  service app-hello: 1 of 2 replicas run" in result.stdout
    assert "    1     worker-1 ready/active     running" in result.stdout
