"""The host's deployer (roles/apps/files/streamlit_deployer.py): what it accepts from the monitor's spool,
that every request gets an answer, and that a deploy past its time limit is stopped.

The program is loaded as the host loads it (the library under its lib/ is this checkout's module_utils).
The engine is a stand-in here (a fake that answers, crashes or hangs): the real engine behind the real
deployer runs in molecule/apps (a push through the fake GitHub, real Docker, real nginx).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import Defaults, parse_apps
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._deploy import Engine, Outcome, Settings
from tests.helpers import REPO

PROGRAM = REPO / "roles/apps/files/streamlit_deployer.py"
_spec = importlib.util.spec_from_file_location("streamlit_deployer", PROGRAM)
deployer = importlib.util.module_from_spec(_spec)
sys.modules["streamlit_deployer"] = deployer  # dataclasses look their module up there
_spec.loader.exec_module(deployer)

SHA = "a" * 40
APPS = {"hello", "extra"}


def spec(name: str) -> dict:
    """An app as the apps role hands it to the deployer (the app_specs filter's output)."""
    (app,) = parse_apps([{"name": name, "repo": f"acme/{name}"}], Defaults(git_base_url="file:///srv/git"))
    return app.to_dict()


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
        ("hello.json", json.dumps({"app": "hello", "sha": SHA + "\n"}).encode(), "40 lower-case hex"),
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


class FakeEngine(Engine):
    """The real engine's records and answers, with a deploy that does what the test says."""

    mode = "deploy"

    def __init__(self, settings: Settings, calls: Path) -> None:
        super().__init__(settings, docker_client=None)
        self.calls = calls

    def deploy(self, app, sha=None, *, requested_by="", check_mode=False):  # type: ignore[override]
        with open(self.calls, "a") as handle:
            handle.write(json.dumps([app.name, sha, requested_by]) + "\n")
        if self.mode == "hang":
            time.sleep(60)
        if self.mode == "crash":
            raise RuntimeError("the engine crashed")
        outcome = Outcome(app.name, sha or "", "deployed", requested_by=requested_by)
        self.finish(app, outcome, record_failure=True)
        return outcome


@pytest.fixture
def spool(tmp_path: Path) -> dict:
    (tmp_path / "spool/requests").mkdir(parents=True)
    (tmp_path / "spool/results").mkdir(mode=0o750)
    settings = {
        "state_dir": str(tmp_path / "state"),
        "audit_log": str(tmp_path / "deploys.log"),
        "lock_dir": str(tmp_path / "locks"),
        "results_dir": str(tmp_path / "spool/results"),
    }
    config = {
        "apps": [spec(name) for name in sorted(APPS)],
        "settings": settings,
        "spool_dir": str(tmp_path / "spool"),
        "deploy_timeout_seconds": 3,
    }
    (tmp_path / "deployer.json").write_text(json.dumps(config))
    return {"dir": tmp_path, "requests": tmp_path / "spool/requests", "results": tmp_path / "spool/results"}


def run_deployer(spool: dict, mode: str) -> int:
    FakeEngine.mode = mode
    config = deployer.load_config(spool["dir"] / "deployer.json")
    return deployer.Deployer(config, lambda s: FakeEngine(s, spool["dir"] / "calls.jsonl")).run()


def calls(spool: dict) -> list[list[str]]:
    path = spool["dir"] / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def audit(spool: dict) -> list[dict]:
    path = spool["dir"] / "deploys.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def request(spool: dict, app: str, sha: str = SHA, name: str | None = None) -> None:
    (spool["requests"] / (name or f"{app}.json")).write_text(json.dumps({"app": app, "sha": sha}))


def answer(spool: dict, app: str) -> dict:
    return json.loads((spool["results"] / f"{app}.json").read_text())


def test_each_request_is_deployed_once_answered_and_the_spool_emptied(spool):
    request(spool, "hello")
    request(spool, "extra", "b" * 40)
    assert run_deployer(spool, "deploy") == 0
    assert sorted(calls(spool)) == [["extra", "b" * 40, "monitor"], ["hello", SHA, "monitor"]]
    assert os.listdir(spool["requests"]) == []
    assert answer(spool, "hello")["status"] == "deployed"
    assert answer(spool, "extra")["sha"] == "b" * 40
    assert oct(os.stat(spool["results"] / "hello.json").st_mode & 0o777) == "0o640"
    assert [r["event"] for r in audit(spool)] == ["deploy_deployed", "deploy_deployed"]


def test_an_answer_does_not_depend_on_the_audit_log_surviving_the_deploy(spool, monkeypatch):
    """A deploy that spans the daily log rotation is answered deployed: the outcome travels directly."""
    original = FakeEngine.finish

    def rotate_then_finish(self, app, outcome, *, record_failure):
        log = Path(self.settings.audit_log)
        if log.exists():
            log.rename(log.with_name(log.name + "-20261203"))
        original(self, app, outcome, record_failure=record_failure)

    monkeypatch.setattr(FakeEngine, "finish", rotate_then_finish)
    request(spool, "hello")
    (spool["dir"] / "deploys.log").write_text("")
    assert run_deployer(spool, "deploy") == 0
    assert answer(spool, "hello")["status"] == "deployed"


def test_bad_requests_are_removed_and_recorded_without_deploying(spool):
    request(spool, "evil", name="evil.json")
    (spool["requests"] / "hello.json").symlink_to("/etc/shadow")
    (spool["requests"] / "extra.json").mkdir()
    (spool["requests"] / "extra.json" / "inside").write_text("x")  # a non-empty directory
    assert run_deployer(spool, "deploy") == 0
    assert calls(spool) == []
    assert os.listdir(spool["requests"]) == []
    reasons = sorted(r["reason"] for r in audit(spool))
    assert reasons == ["a symbolic link", "not a regular file", "not an app of this host"]


def test_a_deploy_that_crashes_is_answered_as_failed(spool):
    request(spool, "hello")
    assert run_deployer(spool, "crash") == 0
    result = answer(spool, "hello")
    assert result["status"] == "failed"
    assert "stopped before it recorded an outcome" in result["reason"]


def test_a_deploy_past_its_time_limit_is_stopped_and_answered(spool):
    request(spool, "hello")
    started = time.monotonic()
    assert run_deployer(spool, "hang") == 0
    assert time.monotonic() - started < 50
    result = answer(spool, "hello")
    assert result["status"] == "failed"
    assert "time limit" in result["reason"]


def test_a_fresh_temporary_file_is_waited_for_and_an_abandoned_one_removed(spool):
    import subprocess

    fresh = spool["requests"] / ".hello.json.tmp1"
    old = spool["requests"] / ".extra.json.tmp2"
    old.write_text("{")
    os.utime(old, (1, 1))
    fresh.write_text(json.dumps({"app": "hello", "sha": SHA}))
    renamer = subprocess.Popen(["sh", "-c", f"sleep 2; mv '{fresh}' '{spool['requests']}/hello.json'"])
    assert run_deployer(spool, "deploy") == 0
    renamer.wait()
    assert [c[1] for c in calls(spool)] == [SHA]
    assert os.listdir(spool["requests"]) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"apps": [{**spec("hello"), "name": "Bad Name"}]}, "name 'Bad Name'"),
        ({"deploy_timeout_seconds": "10"}, "deploy_timeout_seconds must be an integer (is str)"),
        ({"spool_dir": None}, "spool_dir must be a string (is NoneType)"),
        ({"settings": {"health_timout": 5}}, "unknown deploy settings: health_timout"),
        ({"ansible_playbook": "/x"}, "unknown key 'ansible_playbook'"),
        ({"deploy_timeout_seconds": True}, "deploy_timeout_seconds must be an integer (is bool)"),
        ({"swarm": {"registry": "m:5000", "registy_user": "x"}}, "unknown swarm settings: registy_user"),
        ({"swarm": {"registry": "https://m:5000"}}, "registry must be host:port"),
        ({"swarm": ["m:5000"]}, "swarm must be"),
    ],
)
def test_check_config_refuses_a_bad_configuration(spool, change, message, capsys):
    config = json.loads((spool["dir"] / "deployer.json").read_text())
    (spool["dir"] / "bad.json").write_text(json.dumps({**config, **change}))
    assert deployer.main(["--config", str(spool["dir"] / "bad.json"), "check-config"]) == 2
    assert message in capsys.readouterr().err


def test_a_configuration_others_could_write_or_a_link_to_one_is_refused(spool, capsys):
    """Root deploys what the configuration says: a file the group could write, or a symlink, is refused."""
    config = spool["dir"] / "deployer.json"
    config.chmod(0o660)
    assert deployer.main(["--config", str(config), "check-config"]) == 2
    assert "mode 0660 lets the group or others write it" in capsys.readouterr().err
    config.chmod(0o600)
    (spool["dir"] / "link.json").symlink_to(config)
    assert deployer.main(["--config", str(spool["dir"] / "link.json"), "check-config"]) == 2
    assert "a symbolic link" in capsys.readouterr().err
    assert deployer.main(["--config", str(config), "check-config"]) == 0


def test_a_newer_request_renamed_into_place_while_one_is_taken_is_not_lost(spool, monkeypatch):
    """The monitor replaces a waiting request by renaming a new file over it; the deployer claims a
    request by renaming it away first, so the newer one is a new file that the next round picks up."""
    request(spool, "hello", "b" * 40)
    taker = deployer.Deployer(deployer.load_config(spool["dir"] / "deployer.json"))
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


def test_restore_brings_back_every_app_at_what_served(spool):
    FakeEngine.mode = "deploy"
    config = deployer.load_config(spool["dir"] / "deployer.json")
    code = deployer.Deployer(config, lambda s: FakeEngine(s, spool["dir"] / "calls.jsonl")).restore()
    assert code == 0
    assert sorted(calls(spool)) == [["extra", None, "restore"], ["hello", None, "restore"]]


def test_the_swarm_key_gives_the_engine_a_swarm_backend(spool, monkeypatch):
    """On the swarm's first manager a request for a service deploys it like any app: the deployer's engine
    gets the backend, built from the configuration's swarm settings (no password in it: a file's path)."""
    swarm = {
        "registry": "10.0.0.1:5000",
        "registry_user": "swarm",
        "registry_password_file": "/etc/docker/registry/swarm/password",
        "constraints": {"hello": ["node.hostname!=w2"]},
    }
    config = json.loads((spool["dir"] / "deployer.json").read_text())
    (spool["dir"] / "deployer.json").write_text(json.dumps({**config, "swarm": swarm}))
    assert deployer.main(["--config", str(spool["dir"] / "deployer.json"), "check-config"]) == 0
    loaded = deployer.load_config(spool["dir"] / "deployer.json")
    assert loaded["swarm_settings"].constraints_of("hello") == ["node.hostname!=w2"]
    made = spool["dir"] / "made.jsonl"  # the deploy runs in a child process: what it saw, in a file

    def fake_default_engine(settings, swarm_settings=None):
        with open(made, "a") as handle:
            handle.write(json.dumps(swarm_settings.registry_password_file if swarm_settings else None) + "\n")
        return FakeEngine(settings, spool["dir"] / "calls.jsonl")

    monkeypatch.setattr(deployer, "default_engine", fake_default_engine)
    FakeEngine.mode = "deploy"
    request(spool, "hello")
    assert deployer.Deployer(loaded).run() == 0
    # Without the key (every other host) the engine has no backend.
    request(spool, "hello")
    assert deployer.Deployer(loaded | {"swarm_settings": None}).run() == 0
    seen = [json.loads(line) for line in made.read_text().splitlines()]
    assert seen == ["/etc/docker/registry/swarm/password", None]
