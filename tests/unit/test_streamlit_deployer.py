"""The host's deployer (roles/apps/files/streamlit_deployer.py): what it accepts from the monitor's spool,
and that the monitor always gets an answer.

The program runs as a real subprocess against a real spool directory. `ansible-playbook` is a stand-in
script here (it records its arguments and plays deploy.yml's part: an audit line, or none, or hanging);
the real deploy.yml behind the real deployer runs in molecule/apps (a push through the fake GitHub).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import REPO

PROGRAM = REPO / "roles/apps/files/streamlit_deployer.py"
_spec = importlib.util.spec_from_file_location("streamlit_deployer", PROGRAM)
deployer = importlib.util.module_from_spec(_spec)
sys.modules["streamlit_deployer"] = deployer  # dataclasses look their module up there
_spec.loader.exec_module(deployer)

SHA = "a" * 40
APPS = {"hello", "extra"}


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("hello.json", b"x" * 5000, "larger than"),
        ("hello.json", b"{not json", "not JSON"),
        ("hello.json", b'["hello"]', "not a JSON object"),
        ("evil.json", json.dumps({"app": "evil", "sha": SHA}).encode(), "not an app of this host"),
        ("hello.json", json.dumps({"app": "a;rm -rf /", "sha": SHA}).encode(), "not an app of this host"),
        ("hello.json", json.dumps({"app": ["hello"], "sha": SHA}).encode(), "not an app of this host"),
        ("extra.json", json.dumps({"app": "hello", "sha": SHA}).encode(), "file name is not hello.json"),
        ("hello.json", json.dumps({"app": "hello", "sha": "main"}).encode(), "40 lower-case hex"),
        ("hello.json", json.dumps({"app": "hello", "sha": "A" * 40}).encode(), "40 lower-case hex"),
        ("hello.json", json.dumps({"app": "hello", "sha": SHA + "\n-e x=1"}).encode(), "40 lower-case hex"),
        ("hello.json", json.dumps({"app": "hello"}).encode(), "40 lower-case hex"),
    ],
)
def test_a_request_that_is_not_a_configured_app_and_a_full_sha_is_rejected(name, content, reason):
    with pytest.raises(deployer.RequestRejected, match=reason):
        deployer.parse_request(name, content, APPS)


def test_a_well_formed_request_is_accepted():
    request = {"app": "hello", "sha": SHA, "repo": "acme/hello", "branch": "main", "requested_at": "now"}
    assert deployer.parse_request("hello.json", json.dumps(request).encode(), APPS) == deployer.DeployRequest(
        "hello", SHA
    )


@pytest.fixture
def spool(tmp_path: Path) -> dict:
    """A spool, an audit log, and an ansible-playbook stand-in whose behaviour a test picks."""
    (tmp_path / "spool/requests").mkdir(parents=True)
    (tmp_path / "spool/results").mkdir()
    stand_in = tmp_path / "ansible-playbook"
    stand_in.write_text(
        textwrap.dedent(f"""\
            #!{sys.executable}
            import json, os, sys, time
            args = sys.argv[1:]
            with open({str(tmp_path / "calls.jsonl")!r}, "a") as calls:
                calls.write(json.dumps(args) + "\\n")
            app = args[args.index("-e") + 1].split("=", 1)[1]
            sha = args[args.index("-e", args.index("-e") + 1) + 1].split("=", 1)[1]
            mode = open({str(tmp_path / "mode")!r}).read().strip()
            if mode == "hang":  # as deploy.yml takes its lock: a directory naming its owner
                os.mkdir({str(tmp_path / "locks")!r} + "/" + app)
                with open({str(tmp_path / "locks")!r} + "/" + app + "/owner", "w") as owner:
                    owner.write("monitor\\n")
                time.sleep(60)
            if mode == "report":
                with open({str(tmp_path / "deploys.log")!r}, "a") as log:
                    log.write(json.dumps({{"app": app, "sha": sha, "status": "deployed"}}) + "\\n")
            sys.exit(0 if mode == "report" else 2)
        """)
    )
    stand_in.chmod(0o755)
    (tmp_path / "locks").mkdir()
    config = {
        "apps": sorted(APPS),
        "spool_dir": str(tmp_path / "spool"),
        "ansible_playbook": str(stand_in),
        "playbook": "/deploy.yml",
        "inventory": "/inventory.yml",
        "ansible_config": str(tmp_path / "ansible.cfg"),
        "audit_log": str(tmp_path / "deploys.log"),
        "lock_dir": str(tmp_path / "locks"),
        "lock_wait_seconds": 5,
        "deploy_timeout_seconds": 3,
    }
    (tmp_path / "deployer.json").write_text(json.dumps(config))
    return {"dir": tmp_path, "requests": tmp_path / "spool/requests", "results": tmp_path / "spool/results"}


def run_deployer(spool: dict, mode: str) -> subprocess.CompletedProcess:
    (spool["dir"] / "mode").write_text(mode)
    return subprocess.run(
        [sys.executable, str(PROGRAM), "--config", str(spool["dir"] / "deployer.json"), "run"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def calls(spool: dict) -> list[list[str]]:
    path = spool["dir"] / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def audit(spool: dict) -> list[dict]:
    path = spool["dir"] / "deploys.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def request(spool: dict, app: str, sha: str = SHA, name: str | None = None) -> None:
    (spool["requests"] / (name or f"{app}.json")).write_text(json.dumps({"app": app, "sha": sha}))


def test_each_request_runs_deploy_yml_once_and_the_spool_is_emptied(spool):
    request(spool, "hello")
    request(spool, "extra", "b" * 40)
    result = run_deployer(spool, "report")
    assert result.returncode == 0, result.stderr
    assert sorted((c[c.index("-e") + 1], c[c.index("-e") + 3]) for c in calls(spool)) == [
        ("app=extra", "sha=" + "b" * 40),
        ("app=hello", "sha=" + SHA),
    ]
    assert calls(spool)[0][:4] == ["-i", "/inventory.yml", "/deploy.yml", "-e"]
    assert calls(spool)[0][-2:] == ["-e", "apps_deploy_requested_by=monitor"]
    assert os.listdir(spool["requests"]) == []
    # deploy.yml answered itself: the deployer adds nothing.
    assert [r["status"] for r in audit(spool)] == ["deployed", "deployed"]
    assert os.listdir(spool["results"]) == []


def test_bad_requests_are_removed_and_recorded_without_running_anything(spool):
    request(spool, "evil")
    (spool["requests"] / "hello.json").symlink_to("/etc/shadow")
    (spool["requests"] / "extra.json").write_text(json.dumps({"app": "extra", "sha": "$(reboot)"}))
    result = run_deployer(spool, "report")
    assert result.returncode == 0, result.stderr
    assert calls(spool) == []
    assert os.listdir(spool["requests"]) == []
    assert Path("/etc/shadow").exists()
    rejected = {r["file"]: r["reason"] for r in audit(spool)}
    assert rejected["evil.json"] == "not an app of this host"
    assert rejected["hello.json"] == "a symbolic link"
    assert "40 lower-case hex" in rejected["extra.json"]
    assert {r["event"] for r in audit(spool)} == {"deploy_request_rejected"}


def test_a_run_that_ends_without_an_outcome_is_answered_as_failed(spool):
    request(spool, "hello")
    result = run_deployer(spool, "crash")
    assert result.returncode == 0, result.stderr
    answer = json.loads((spool["results"] / "hello.json").read_text())
    assert answer == {
        "app": "hello",
        "sha": SHA,
        "status": "failed",
        "reason": "ansible-playbook exited 2 before the deploy recorded an outcome",
    }
    (record,) = audit(spool)
    assert record["event"] == "deploy_failed"
    assert record["requested_by"] == "monitor"


def test_a_deploy_past_its_time_limit_is_stopped_its_lock_released_and_answered(spool):
    request(spool, "hello")
    result = run_deployer(spool, "hang")
    assert result.returncode == 0, result.stderr
    assert not (spool["dir"] / "locks/hello").exists()
    answer = json.loads((spool["results"] / "hello.json").read_text())
    assert answer["status"] == "failed"
    assert "time limit" in answer["reason"]


def test_a_fresh_temporary_file_is_waited_for_and_an_abandoned_one_removed(spool):
    fresh = spool["requests"] / ".hello.json.tmp1"
    old = spool["requests"] / ".extra.json.tmp2"
    old.write_text("{")
    os.utime(old, (1, 1))
    fresh.write_text(json.dumps({"app": "hello", "sha": SHA}))
    # The monitor renames its file into place a moment later.
    renamer = subprocess.Popen(["sh", "-c", f"sleep 2; mv '{fresh}' '{spool['requests']}/hello.json'"])
    result = run_deployer(spool, "report")
    renamer.wait()
    assert result.returncode == 0, result.stderr
    assert [c[c.index("-e") + 3] for c in calls(spool)] == ["sha=" + SHA]
    assert os.listdir(spool["requests"]) == []


def test_a_deploy_waits_for_the_lock_of_a_running_one(spool):
    (spool["dir"] / "locks/hello").mkdir()
    subprocess.Popen(["sh", "-c", f"sleep 2; rmdir '{spool['dir']}/locks/hello'"])
    request(spool, "hello")
    result = run_deployer(spool, "report")
    assert result.returncode == 0, result.stderr
    assert len(calls(spool)) == 1
    assert not (spool["dir"] / "locks/hello").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"apps": ["Bad Name"]}, "is not an app name"),
        ({"lock_wait_seconds": "10"}, "lock_wait_seconds must be a int"),
        ({"spool_dir": None}, "spool_dir must be a str"),
    ],
)
def test_check_config_refuses_a_bad_configuration(spool, change, message):
    config = json.loads((spool["dir"] / "deployer.json").read_text())
    (spool["dir"] / "bad.json").write_text(json.dumps({**config, **change}))
    result = subprocess.run(
        [sys.executable, str(PROGRAM), "--config", str(spool["dir"] / "bad.json"), "check-config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_the_hosts_ansible_is_the_controllers_version():
    """The deployer runs the same deploy.yml the controller runs: the same ansible-core and requests pins."""
    import yaml

    defaults = yaml.safe_load((REPO / "roles/apps/defaults/main.yml").read_text())
    pins = dict(
        line.split("==", 1) for line in (REPO / "requirements-dev.txt").read_text().splitlines() if "==" in line
    )
    assert defaults["apps_deployer_ansible_core_version"] == pins["ansible-core"]
    assert defaults["apps_deployer_requests_version"] == pins["requests"]


def test_a_lock_left_by_a_killed_deployer_run_is_removed_and_others_are_kept(spool):
    for app, owner in (("hello", "monitor"), ("extra", "deploy.yml by alice")):
        (spool["dir"] / "locks" / app).mkdir()
        (spool["dir"] / "locks" / app / "owner").write_text(owner + "\n")
    result = run_deployer(spool, "report")
    assert result.returncode == 0, result.stderr
    assert not (spool["dir"] / "locks/hello").exists()
    assert (spool["dir"] / "locks/extra/owner").exists()
    (record,) = audit(spool)
    assert record["event"] == "deploy_lock_removed"
    assert record["app"] == "hello"


def test_a_newer_request_renamed_into_place_while_one_is_taken_is_not_lost(spool, monkeypatch):
    """The monitor replaces a waiting request by renaming a new file over it; the deployer claims a
    request by renaming it away first, so the newer one is a new file that the next round picks up."""
    request(spool, "hello", "b" * 40)
    deployer_config = deployer.load_config(spool["dir"] / "deployer.json")
    taker = deployer.Deployer(deployer_config)
    original_rename = os.rename

    def rename_then_replace(src, dst):  # the monitor's rename lands right after the claim
        original_rename(src, dst)
        if Path(dst).name.startswith(".taken."):
            request(spool, "hello", "c" * 40)

    monkeypatch.setattr(deployer.os, "rename", rename_then_replace)
    first, _ = taker.take_requests()
    monkeypatch.undo()
    second, _ = taker.take_requests()
    assert [r.sha for r in first + second] == ["b" * 40, "c" * 40]
    assert os.listdir(spool["requests"]) == []
