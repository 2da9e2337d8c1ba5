"""The github-repo-monitor daemon: its cycle against the fake GitHub over real HTTP, with a simulated
clock where hours must pass; its command line as a real subprocess."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils.github_client import GitHubClient
from tests.fake_github import FakeGitHub
from tests.helpers import REPO

PROGRAM = REPO / "roles/monitor/files/github_repo_monitor.py"
TOKEN = "ghp_monitorTestTokenNeverToBeSeen000000"
_spec = importlib.util.spec_from_file_location("github_repo_monitor", PROGRAM)
grm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(grm)


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def gh():
    with FakeGitHub(token=TOKEN) as server:
        yield server


def write_config(tmp_path: Path, gh: FakeGitHub, apps: list[dict], **extra) -> Path:
    config = {
        "api_url": gh.url,
        "interval": 30,
        "jitter": 0.1,
        "state_dir": str(tmp_path / "state"),
        "spool_dir": str(tmp_path / "spool"),
        "audit_log": str(tmp_path / "log" / "audit.jsonl"),
        "apps": apps,
        **extra,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def make_monitor(tmp_path, gh, apps, token=TOKEN, clock=None):
    config = grm.load_config(write_config(tmp_path, gh, apps))
    clock = clock or FakeClock()
    client = GitHubClient(gh.url, token, sleep=lambda _: None, clock=clock, max_retries=1, read_timeout=0.5)
    return grm.Monitor(config, client, clock=clock, sleep=clock.sleep, authenticated=token is not None)


def request_of(tmp_path: Path, app: str) -> dict | None:
    path = tmp_path / "spool" / "requests" / f"{app}.json"
    return json.loads(path.read_text()) if path.exists() else None


def deployer_takes(tmp_path: Path, app: str, status: str, reason: str = "") -> str:
    """What the deployer does: consume the request, write the outcome."""
    path = tmp_path / "spool" / "requests" / f"{app}.json"
    request = json.loads(path.read_text())
    path.unlink()
    results = tmp_path / "spool" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{app}.json").write_text(
        json.dumps({"app": app, "sha": request["sha"], "status": status, "reason": reason})
    )
    return request["sha"]


DEMO = [{"name": "demo", "repo": "acme/demo", "branch": "main"}]


# -- configuration -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("apps", "extra", "error"),
    [
        (DEMO, {"colour": "blue"}, "unknown key 'colour'"),
        ([{"name": "demo", "repo": "acme/demo", "extra": 1}], {}, "apps[0] (name 'demo'): unknown key 'extra'"),
        ([{"name": "a;b", "repo": "acme/demo"}], {}, "apps[0] (name 'a;b'): name must match"),
        ([{"name": "demo", "repo": "../x"}], {}, "apps[0] (name 'demo'): repository owner '..'"),
        ([{"name": "demo", "repo": "a;b"}], {}, "apps[0] (name 'demo'): repo 'a;b' must be owner/name"),
        (DEMO, {"interval": 0}, "interval must be a number of seconds > 0 (is 0)"),
        (DEMO, {"interval": -1}, "interval must be a number of seconds > 0 (is -1)"),
        (DEMO + DEMO, {}, "apps[1] (name 'demo'): duplicate app name"),
        (DEMO, {"api_url": "http://github.example.org"}, "api_url must be an https:// URL"),
    ],
)
def test_bad_config_is_refused_naming_entry_and_rule(tmp_path, gh, apps, extra, error, capsys):
    path = write_config(tmp_path, gh, apps, **extra)
    with pytest.raises(grm.ConfigError) as caught:
        grm.load_config(path)
    assert error in str(caught.value)
    for command in ("check-config", "once"):
        assert grm.main(["--config", str(path), command]) == 2
        assert error in capsys.readouterr().err
    assert not (tmp_path / "spool").exists()


def test_good_config_passes_check(tmp_path, gh, capsys):
    path = write_config(tmp_path, gh, [*DEMO, {"name": "other", "repo": "https://github.com/acme/other.git"}])
    assert grm.main(["--config", str(path), "check-config"]) == 0
    assert "config OK: 2 apps" in capsys.readouterr().out


# -- hand-off --------------------------------------------------------------------------------------------------
def test_push_becomes_exactly_one_request_for_the_head(tmp_path, gh):
    sha = gh.push("acme", "demo")
    monitor = make_monitor(tmp_path, gh, DEMO)
    assert monitor.cycle()
    assert request_of(tmp_path, "demo")["sha"] == sha
    first = (tmp_path / "spool/requests/demo.json").stat().st_mtime_ns
    for _ in range(3):
        monitor.cycle()
    assert (tmp_path / "spool/requests/demo.json").stat().st_mtime_ns == first


def test_deployed_result_is_recorded_and_nothing_is_requested_again(tmp_path, gh):
    gh.push("acme", "demo")
    monitor = make_monitor(tmp_path, gh, DEMO)
    monitor.cycle()
    sha = deployer_takes(tmp_path, "demo", "deployed")
    monitor.cycle()
    assert monitor.state["demo"]["last_deployed_sha"] == sha
    assert request_of(tmp_path, "demo") is None


def test_failed_sha_is_never_requested_again_until_a_newer_push(tmp_path, gh):
    gh.push("acme", "demo")
    monitor = make_monitor(tmp_path, gh, DEMO)
    monitor.cycle()
    bad = deployer_takes(tmp_path, "demo", "failed", "health check failed")
    for _ in range(5):
        monitor.cycle()
    assert request_of(tmp_path, "demo") is None
    assert monitor.state["demo"]["failed_shas"][bad]["reason"] == "health check failed"
    newer = gh.push("acme", "demo")
    monitor.cycle()
    assert request_of(tmp_path, "demo")["sha"] == newer


def test_force_push_to_an_older_sha_requests_exactly_that_head(tmp_path, gh):
    old = gh.push("acme", "demo")
    monitor = make_monitor(tmp_path, gh, DEMO)
    monitor.cycle()
    deployer_takes(tmp_path, "demo", "deployed")
    gh.push("acme", "demo")
    monitor.cycle()
    deployer_takes(tmp_path, "demo", "deployed")
    gh.force_push("acme", "demo", sha=old)
    monitor.cycle()
    assert request_of(tmp_path, "demo")["sha"] == old


def test_state_survives_a_restart(tmp_path, gh):
    gh.push("acme", "demo")
    monitor = make_monitor(tmp_path, gh, DEMO)
    monitor.cycle()
    sha = deployer_takes(tmp_path, "demo", "failed", "build failed")
    monitor.cycle()
    again = make_monitor(tmp_path, gh, DEMO)
    again.cycle()
    assert sha in again.state["demo"]["failed_shas"]
    assert request_of(tmp_path, "demo") is None
    assert oct((tmp_path / "state/state.json").stat().st_mode & 0o777) == "0o640"


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500},
        {"status": 502},
        {"status": 200, "body": "{not json"},
        {"status": 429, "headers": {"retry-after": "60"}},
        {"status": 403, "headers": {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"}},
        {"delay": 1.0},
    ],
)
@pytest.mark.parametrize("token", [TOKEN, None])
def test_faults_are_survived_logged_and_request_nothing_unread(tmp_path, gh, fault, token):
    gh.push("acme", "demo")
    gh.push("acme", "other")
    apps = [*DEMO, {"name": "other", "repo": "acme/other"}]
    monitor = make_monitor(tmp_path, gh, apps, token=token)
    for _ in range(2):  # more than max_retries: the first request fails for good
        gh.inject(**fault)
    monitor.cycle()
    gh.faults.clear()
    # demo is read first (alone without a token, in the batch with one): no head, no request.
    assert request_of(tmp_path, "demo") is None
    events = [json.loads(line)["event"] for line in (tmp_path / "log/audit.jsonl").read_text().splitlines()]
    assert {"poll_error", "rate_limited"} & set(events)
    monitor.clock.now = max(monitor.clock.now, monitor.not_before) + 1
    assert monitor.cycle()  # and it carries on
    assert request_of(tmp_path, "demo") is not None


def test_deleted_branch_is_logged_and_others_go_on(tmp_path, gh):
    gh.push("acme", "demo")
    sha = gh.push("acme", "other")
    gh.delete_branch("acme", "demo")
    monitor = make_monitor(tmp_path, gh, [*DEMO, {"name": "other", "repo": "acme/other"}])
    monitor.cycle()
    assert request_of(tmp_path, "demo") is None
    assert request_of(tmp_path, "other")["sha"] == sha
    assert "not found" in monitor.state["demo"]["last_error"]


# -- budget --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("repos", [1, 10, 50, 200])
def test_unauthenticated_polling_stays_within_60_counted_requests_per_hour(tmp_path, gh, repos):
    apps = [{"name": f"app{i}", "repo": f"acme/app{i}"} for i in range(repos)]
    for i in range(repos):
        gh.push("acme", f"app{i}")
    clock = FakeClock()
    monitor = make_monitor(tmp_path, gh, apps, token=None, clock=clock)
    start = clock.now
    while clock.now - start < 3600:
        monitor.cycle()
        clock.sleep(monitor.next_delay())
    assert gh.counted() <= 60
    assert gh.counted() >= min(repos, 54)  # it does poll, as often as the budget allows


def test_with_a_token_a_cycle_of_100_repos_costs_one_counted_request(tmp_path, gh):
    apps = [{"name": f"app{i}", "repo": f"acme/app{i}"} for i in range(100)]
    for i in range(100):
        gh.push("acme", f"app{i}")
    monitor = make_monitor(tmp_path, gh, apps)
    for _ in range(3):
        before = gh.counted()
        monitor.cycle()
        assert gh.counted() - before == 1
    assert monitor.effective_interval() == 30


# -- audit and secrecy ----------------------------------------------------------------------------------------
def test_audit_chain_verifies_and_an_edit_shows(tmp_path, gh, capsys):
    gh.push("acme", "demo")
    monitor = make_monitor(tmp_path, gh, DEMO)
    monitor.cycle()
    deployer_takes(tmp_path, "demo", "deployed")
    monitor.cycle()
    config = str(tmp_path / "config.json")
    assert grm.main(["--config", config, "verify-audit"]) == 0
    assert "audit log OK: 3 records in 1 files, chained from the first record ever" in capsys.readouterr().out
    log = tmp_path / "log/audit.jsonl"
    lines = log.read_text().splitlines()
    lines[1] = lines[1].replace("deploy_requested", "deploy_succeeded")
    log.write_text("\n".join(lines) + "\n")
    assert grm.main(["--config", config, "verify-audit"]) == 1
    assert "audit.jsonl line 3: chain broken" in capsys.readouterr().out


def test_audit_chain_continues_across_rotations_and_restarts(tmp_path, gh, capsys):
    log = tmp_path / "log/audit.jsonl"
    gh.push("acme", "demo")
    monitor = make_monitor(tmp_path, gh, DEMO)
    monitor.cycle()
    log.rename(tmp_path / "log/audit.jsonl-20261101")  # what logrotate (dateext, no copytruncate) does
    gh.push("acme", "demo")
    monitor.cycle()
    log.rename(tmp_path / "log/audit.jsonl-20261201")
    restarted = make_monitor(tmp_path, gh, DEMO)  # the current file is gone: the chain comes from the state
    gh.push("acme", "demo")
    restarted.cycle()
    config = str(tmp_path / "config.json")
    assert grm.main(["--config", config, "verify-audit"]) == 0
    assert "in 3 files, chained from the first record ever" in capsys.readouterr().out
    rotated = tmp_path / "log/audit.jsonl-20261201"
    rotated.write_text(rotated.read_text().replace("change_detected", "change_ignored"))
    assert grm.main(["--config", config, "verify-audit"]) == 1
    assert "audit.jsonl-20261201 line 2: chain broken" in capsys.readouterr().out


def test_cli_once_reads_the_systemd_credential_and_never_shows_the_token(tmp_path, gh):
    sha = gh.push("acme", "demo")
    gh.push("acme", "other")
    config = write_config(tmp_path, gh, [*DEMO, {"name": "other", "repo": "acme/other"}])
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "github-token").write_text(TOKEN + "\n")
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(credentials), "PYTHONPATH": str(REPO / "collections")}
    once = subprocess.run(
        [sys.executable, str(PROGRAM), "--config", str(config), "once"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert once.returncode == 0, once.stderr
    assert request_of(tmp_path, "demo")["sha"] == sha
    assert [r.path for r in gh.requests] == ["/graphql"]  # authenticated: one batched query
    status = subprocess.run(
        [sys.executable, str(PROGRAM), "--config", str(config), "status"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert sha[:10] in status.stdout
    everything = once.stdout + once.stderr + status.stdout
    for path in [*tmp_path.rglob("*")]:
        if path.is_file() and path.parent != credentials:
            everything += path.read_text()
    assert TOKEN not in everything
