"""The github-repo-monitor daemon: its cycle against the fake GitHub over real HTTP, with a simulated
clock where hours must pass; its command line as a real subprocess."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import NAME_RULE
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
        json.dumps({"id": uuid.uuid4().hex, "app": app, "sha": request["sha"], "status": status, "reason": reason})
    )
    return request["sha"]


DEMO = [{"name": "demo", "repo": "acme/demo", "branch": "main"}]


# -- configuration -------------------------------------------------------------------------------------------
APP_NAME_RULE = f"name must be {NAME_RULE}"
REPO_RULE = "must be owner/name or https://HOST/owner/name"


@pytest.mark.parametrize(
    ("apps", "extra", "errors"),
    [
        (DEMO, {"colour": "blue"}, ["unknown key 'colour'"]),
        ([{"name": "demo", "repo": "acme/demo", "extra": 1}], {}, ["apps[0] (name 'demo'): unknown key 'extra'"]),
        ([{"name": "a;b", "repo": "acme/demo"}], {}, [f"apps[0] (name 'a;b'): {APP_NAME_RULE}"]),
        ([*DEMO, {"name": "../x", "repo": "acme/x"}], {}, [f"apps[1] (name '../x'): {APP_NAME_RULE}"]),
        (
            [{"name": "demo", "repo": "../x"}],
            {},
            ["apps[0] (name 'demo'): repository owner '..' is not a valid GitHub account name"],
        ),
        ([{"name": "demo", "repo": "a;b"}], {}, [f"apps[0] (name 'demo'): repo 'a;b' {REPO_RULE}"]),
        ([{"name": "demo", "repo": "acme/demo", "branch": "../main"}], {}, None),
        (
            [{"name": "demo"}],
            {},
            ["apps[0] (name 'demo'): repo must be a string owner/name or https://HOST/owner/name"],
        ),
        (DEMO, {"interval": 0}, ["interval must be a number of seconds > 0 (is 0)"]),
        (DEMO, {"interval": -1}, ["interval must be a number of seconds > 0 (is -1)"]),
        (DEMO, {"interval": "30"}, ["interval must be a number of seconds > 0 (is '30')"]),
        (DEMO, {"jitter": 0.6}, ["jitter must be a fraction within 0..0.5 (is 0.6)"]),
        (DEMO + DEMO, {}, ["apps[1] (name 'demo'): duplicate app name"]),
        (
            DEMO,
            {"api_url": "http://github.example.org"},
            ["api_url must be an https:// URL (is 'http://github.example.org')"],
        ),
        (DEMO, {"state_dir": "state"}, ["state_dir must be an absolute path (is 'state')"]),
        ({"demo": "acme/demo"}, {}, ["apps must be a list"]),
    ],
)
def test_bad_config_is_refused_naming_entry_and_rule(tmp_path, gh, apps, extra, errors, capsys):
    path = write_config(tmp_path, gh, apps, **extra)
    with pytest.raises(grm.ConfigError) as caught:
        grm.load_config(path)
    if errors is None:  # the client's own wording; the entry is named
        assert caught.value.errors[0].startswith("apps[0] (name 'demo'): branch '../main'")
        errors = caught.value.errors
    assert caught.value.errors == errors
    for command in ("check-config", "once", "run"):
        assert grm.main(["--config", str(path), command]) == 2
        assert capsys.readouterr().err.splitlines() == [f"config error: {e}" for e in errors]
    assert not (tmp_path / "spool").exists()
    assert not (tmp_path / "state").exists()


def test_a_refused_start_is_audited_and_a_credential_in_a_url_is_not_echoed(tmp_path, gh, capsys):
    secret_url = f"https://x-access-token:{TOKEN}@api.github.com"
    path = write_config(tmp_path, gh, DEMO, api_url=secret_url, interval=0)
    assert grm.main(["--config", str(path), "once"]) == 2
    err = capsys.readouterr().err
    assert "api_url: a URL with credentials in it is refused" in err
    assert "interval must be a number of seconds > 0 (is 0)" in err
    records = [json.loads(line) for line in (tmp_path / "log/audit.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["config_error"]
    assert len(records[0]["errors"]) == 2
    assert TOKEN not in err + (tmp_path / "log/audit.jsonl").read_text()


def test_a_refused_start_reads_the_configuration_once(tmp_path, gh, capsys, monkeypatch):
    """The audit log of a refused start is the one the single read found; a file the safe reader refused
    names none (it is not read a second time to look for one)."""
    reads = []
    real_read = grm._settings_file.read_json_object

    def counting_read(path, **kwargs):
        reads.append(path)
        return real_read(path, **kwargs)

    monkeypatch.setattr(grm._settings_file, "read_json_object", counting_read)
    path = write_config(tmp_path, gh, DEMO, interval=0)
    assert grm.main(["--config", str(path), "once"]) == 2
    assert reads == [path]
    log = tmp_path / "log/audit.jsonl"
    assert [json.loads(line)["event"] for line in log.read_text().splitlines()] == ["config_error"]
    path.chmod(0o660)
    reads.clear()
    assert grm.main(["--config", str(path), "once"]) == 2
    assert reads == [path]
    assert capsys.readouterr().err.splitlines()[-2:] == [
        f"config error: {path}: mode 0660 lets the group or others write it (must not)",
        "config error not audited (no audit log named by a readable configuration)",
    ]
    assert len(log.read_text().splitlines()) == 1


def test_good_config_passes_check(tmp_path, gh, capsys):
    path = write_config(tmp_path, gh, [*DEMO, {"name": "other", "repo": "https://github.com/acme/other.git"}])
    assert grm.main(["--config", str(path), "check-config"]) == 0
    assert "config OK: 2 apps, without a token" in capsys.readouterr().out


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


def test_a_pending_request_is_withdrawn_when_the_branch_goes_back_to_the_deployed_sha(tmp_path, gh):
    deployed = gh.push("acme", "demo")
    monitor = make_monitor(tmp_path, gh, DEMO)
    monitor.cycle()
    deployer_takes(tmp_path, "demo", "deployed")
    gh.push("acme", "demo")
    monitor.cycle()
    assert request_of(tmp_path, "demo") is not None  # not yet picked up by the deployer
    gh.force_push("acme", "demo", sha=deployed)
    monitor.cycle()
    assert request_of(tmp_path, "demo") is None  # the deployer never gets a SHA that is not the head
    assert monitor.state["demo"]["last_requested_sha"] is None
    events = [json.loads(line)["event"] for line in (tmp_path / "log/audit.jsonl").read_text().splitlines()]
    assert events[-1] == "deploy_withdrawn"


def test_a_newer_push_replaces_the_pending_request(tmp_path, gh):
    gh.push("acme", "demo")
    monitor = make_monitor(tmp_path, gh, DEMO)
    monitor.cycle()
    newer = gh.push("acme", "demo")
    monitor.cycle()
    assert request_of(tmp_path, "demo")["sha"] == newer
    assert sorted(p.name for p in (tmp_path / "spool/requests").iterdir()) == ["demo.json"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "malformed"),
        ('["app", "demo"]', "malformed"),
        ('{"app": "demo", "sha": "SHA", "status": "deployed"}', "malformed"),
        ('{"id": "1", "app": "ghost", "sha": "SHA", "status": "deployed"}', "names another app"),
        ('{"id": "1", "app": "demo", "sha": "../../etc", "status": "deployed"}', "not 40 hex"),
        ('{"id": "1", "app": "demo", "sha": "SHA\\n", "status": "deployed"}', "not 40 hex"),
        ('{"id": "1", "app": "demo", "sha": "SHA", "status": "maybe"}', "unknown status"),
    ],
)
def test_answers_not_understood_change_nothing_and_are_reported_once(tmp_path, gh, content, problem, capsys):
    sha = gh.push("acme", "demo")
    monitor = make_monitor(tmp_path, gh, DEMO)
    monitor.cycle()
    results = tmp_path / "spool/results"
    results.mkdir(parents=True)
    (results / "demo.json").write_text(content.replace("SHA", sha))
    (results / ".demo.json").write_text("{half")  # the deployer's temporary file: not read
    before = json.loads(json.dumps(monitor.state))
    monitor.cycle()
    monitor.cycle()
    err = capsys.readouterr().err
    assert err.count("ignoring the deploy answer for demo: ") == 1
    assert problem in err
    assert monitor.state["demo"]["last_deployed_sha"] == before["demo"]["last_deployed_sha"] is None
    assert monitor.state["demo"]["failed_shas"] == {}
    # results/ is root's: the monitor never changes it.
    assert sorted(p.name for p in results.iterdir()) == [".demo.json", "demo.json"]
    assert request_of(tmp_path, "demo")["sha"] == sha  # the pending request stands


def test_a_deploy_the_monitor_did_not_ask_for_is_known_and_never_requested(tmp_path, gh):
    """site.yml's first deploy answers too: the monitor's first poll then asks for nothing."""
    sha = gh.push("acme", "demo")
    results = tmp_path / "spool/results"
    results.mkdir(parents=True)
    answer = {"id": "first", "app": "demo", "sha": sha, "status": "deployed", "requested_by": "site.yml"}
    (results / "demo.json").write_text(json.dumps(answer))
    monitor = make_monitor(tmp_path, gh, DEMO)
    monitor.cycle()
    assert monitor.state["demo"]["last_deployed_sha"] == sha
    assert request_of(tmp_path, "demo") is None


def test_an_answer_is_applied_once_across_restarts(tmp_path, gh):
    gh.push("acme", "demo")
    monitor = make_monitor(tmp_path, gh, DEMO)
    monitor.cycle()
    bad = deployer_takes(tmp_path, "demo", "failed", "gate failed")
    monitor.cycle()
    again = make_monitor(tmp_path, gh, DEMO)
    again.cycle()
    again.cycle()
    assert again.state["demo"]["failed_shas"][bad]["count"] == 1


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


def test_a_state_file_the_safe_reader_refuses_is_not_believed(tmp_path, gh, capsys):
    """The state decides what is requested and which audit hash verify-audit expects: it is read like a
    settings file (a hard link or a file others could write is refused), and the monitor then starts
    from an empty state as it does with a damaged one."""
    gh.push("acme", "demo")
    monitor = make_monitor(tmp_path, gh, DEMO)
    monitor.cycle()
    state_file = tmp_path / "state/state.json"
    assert grm.saved_audit_hash(grm.load_config(tmp_path / "config.json")) is not None
    os.link(state_file, tmp_path / "elsewhere.json")
    capsys.readouterr()
    again = make_monitor(tmp_path, gh, DEMO)
    assert again.state["demo"]["last_seen_sha"] is None
    assert f"state file refused ({state_file}: 2 hard links" in capsys.readouterr().err
    config = grm.load_config(tmp_path / "config.json")
    assert grm.saved_audit_hash(config) is None
    grm.print_status(config)
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["demo", "main", "-"]
    (tmp_path / "elsewhere.json").unlink()
    state_file.chmod(0o660)
    assert grm.saved_audit_hash(config) is None
    state_file.chmod(0o640)
    assert grm.saved_audit_hash(config) is not None


@pytest.mark.parametrize(
    "apps", [[], "demo", {"demo": []}, {"demo": {"last_seen_sha": 7, "failed_shas": ["x"], "last_error": None}}]
)
def test_the_status_shows_the_apps_whatever_shape_the_state_file_has(tmp_path, gh, capsys, apps):
    gh.push("acme", "demo")
    make_monitor(tmp_path, gh, DEMO).cycle()
    state_file = tmp_path / "state/state.json"
    state_file.write_text(json.dumps({"apps": apps}))
    capsys.readouterr()
    grm.print_status(grm.load_config(tmp_path / "config.json"))
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:2] == ["demo", "main"]
    assert row[4] == "0"


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
def test_faults_are_survived_logged_and_request_nothing_unread(tmp_path, gh, fault, token, capsys):
    gh.push("acme", "demo")
    gh.push("acme", "other")
    apps = [*DEMO, {"name": "other", "repo": "acme/other"}]
    monitor = make_monitor(tmp_path, gh, apps, token=token)
    for _ in range(2):  # more than max_retries: the first request fails for good
        gh.inject(**fault)
    monitor.cycle()
    gh.faults.clear()
    err = capsys.readouterr().err
    assert "rate limited" in err or "poll failed" in err or "demo: " in err
    assert TOKEN not in err
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
def test_unauthenticated_polling_stays_within_60_counted_requests_in_every_hour(tmp_path, gh, repos, capsys):
    apps = [{"name": f"app{i}", "repo": f"acme/app{i}"} for i in range(repos)]
    for i in range(repos):
        gh.push("acme", f"app{i}")
    clock = FakeClock()
    monitor = make_monitor(tmp_path, gh, apps, token=None, clock=clock)
    start, spent = clock.now, []  # (when, counted requests) per cycle
    while clock.now - start < 3 * 3600 or len(spent) < -(-repos // 54):  # 54 repos a cycle take turns
        hour = int((clock.now - start) // 3600)
        before = gh.counted()
        monitor.cycle()
        spent.append((clock.now, gh.counted() - before))
        clock.sleep(monitor.next_delay())
        if int((clock.now - start) // 3600) != hour:
            gh.budget_used.clear()  # the fake keeps real-time hours; a simulated one has passed
    windows = [sum(n for t, n in spent if t0 <= t <= t0 + 3600) for t0, _ in spent]
    assert max(windows) <= 54  # 90 % of the 60 per hour, however the hour falls
    assert sum(n for t, n in spent if t < start + 3600) >= min(repos, 54)  # and it does poll
    assert all(r.status in (200, 304) for r in gh.requests)  # never refused by the API
    polled = {r.path.split("/")[3] for r in gh.requests}
    assert len(polled) == repos  # beyond 54 repos they take turns; every one is read
    if repos > 1:
        assert "interval raised from 30 s to" in capsys.readouterr().err


def test_a_spent_budget_means_waiting_for_the_reset(tmp_path, gh, capsys):
    gh.push("acme", "demo")
    clock = FakeClock(start=time.time())  # the fake's reset header is in real time
    monitor = make_monitor(tmp_path, gh, DEMO, token=None, clock=clock)
    gh.budget_used[(False, "core")] = 58  # someone else used this host's hourly budget
    assert monitor.cycle()
    assert "rate-limit budget nearly spent (1 left)" in capsys.readouterr().err
    assert monitor.not_before == pytest.approx(gh.window_start + 3600, abs=2)
    sent = len(gh.requests)
    for _ in range(5):
        clock.sleep(monitor.next_delay())
        if clock.now < monitor.not_before:
            monitor.cycle()
    assert len(gh.requests) == sent  # nothing until the reset
    assert clock.now >= monitor.not_before


def test_the_apis_poll_interval_is_honoured(tmp_path, gh, capsys):
    gh.push("acme", "demo")
    gh.set_poll_interval(300)
    monitor = make_monitor(tmp_path, gh, DEMO)
    monitor.cycle()
    assert monitor.effective_interval() == 300
    assert all(270 <= monitor.next_delay() <= 330 for _ in range(20))
    assert "interval raised from 30 s to 300 s: the API asks for it" in capsys.readouterr().err


def test_errors_back_off_exponentially_up_to_15_minutes(tmp_path, gh):
    monitor = make_monitor(tmp_path, gh, [*DEMO, {"name": "other", "repo": "acme/other"}])
    delays = []
    for _ in range(8):
        for _ in range(2):
            gh.inject(status=503)
        assert not monitor.cycle()
        delays.append(monitor.next_delay())
    assert delays[0] >= 60
    assert delays[1] >= 120
    assert delays[2] >= 240
    assert max(delays) <= 900 * 1.1
    assert delays[-1] >= 900
    gh.faults.clear()
    gh.push("acme", "demo")
    assert monitor.cycle()
    assert monitor.next_delay() <= 33


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


def test_two_writers_keep_one_chain(tmp_path, gh, capsys):
    """`once` run by an operator beside the daemon: both chain to the file's last line."""
    gh.push("acme", "demo")
    daemon = make_monitor(tmp_path, gh, DEMO)
    daemon.cycle()
    operator = make_monitor(tmp_path, gh, DEMO)
    gh.push("acme", "demo")
    operator.cycle()
    gh.push("acme", "demo")
    daemon.cycle()
    assert grm.main(["--config", str(tmp_path / "config.json"), "verify-audit"]) == 0
    assert "audit log OK: 6 records" in capsys.readouterr().out


def test_run_loop_stops_cleanly_between_cycles(tmp_path, gh):
    gh.push("acme", "demo")
    monitor = make_monitor(tmp_path, gh, DEMO)
    cycles = []
    real_cycle = monitor.cycle

    def counting_cycle():
        cycles.append(monitor.clock())
        if len(cycles) == 3:
            monitor.stopping = True  # what the SIGTERM handler does, mid-cycle
        return real_cycle()

    monitor.cycle = counting_cycle
    monitor.run()
    assert len(cycles) == 3
    assert all(27 <= b - a <= 33 for a, b in itertools.pairwise(cycles))
    events = [json.loads(line)["event"] for line in (tmp_path / "log/audit.jsonl").read_text().splitlines()]
    assert events[0] == "started"
    assert events[-1] == "stopped"
    assert request_of(tmp_path, "demo") is not None
    state = json.loads((tmp_path / "state/state.json").read_text())
    assert state["apps"]["demo"]["last_seen_sha"] == request_of(tmp_path, "demo")["sha"]


def test_cli_run_ends_on_sigterm(tmp_path, gh):
    sha = gh.push("acme", "demo")
    config = write_config(tmp_path, gh, DEMO)
    env = {**os.environ, "PYTHONPATH": str(REPO / "collections")}
    env.pop("CREDENTIALS_DIRECTORY", None)
    process = subprocess.Popen(
        [sys.executable, str(PROGRAM), "--config", str(config)],  # the default command is run
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while request_of(tmp_path, "demo") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert request_of(tmp_path, "demo")["sha"] == sha
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert err.splitlines()[-1] == "stopped"
    events = [json.loads(line)["event"] for line in (tmp_path / "log/audit.jsonl").read_text().splitlines()]
    assert events[0] == "started"
    assert events[-1] == "stopped"


def test_cli_once_reads_the_systemd_credential_and_never_shows_the_token(tmp_path, gh):
    sha = gh.push("acme", "demo")
    gh.push("acme", "other")
    config = write_config(tmp_path, gh, [*DEMO, {"name": "other", "repo": "acme/other"}])
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "github-token").write_text(TOKEN + "\n")
    (credentials / "github-token").chmod(0o400)  # what systemd's LoadCredential= gives the service
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


# -- the token (review items 1 and 8) --------------------------------------------------------------------------
def token_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (b"ghp_secretPart\nmore", 0o600, "the token holds a line break"),
        (b"ghp_secretPart\rmore\n", 0o600, "the token holds a line break"),
        (b"ghp_secret Part", 0o600, "the token holds a line break"),
        (b"\n", 0o600, "empty; remove it"),
        (TOKEN.encode(), 0o644, "(mode 0644); it must be 0600 or 0400"),
        (TOKEN.encode(), 0o604, "readable or writable by "),
        (None, 0o600, "cannot be read (No such file or directory)"),
    ],
)
@pytest.mark.parametrize("source", ["token_file", "credential"])
def test_an_unusable_token_stops_check_config_and_the_start_and_is_never_shown(
    tmp_path, gh, capsys, monkeypatch, content, mode, message, source
):
    """Before: a missing token_file passed check-config and the daemon polled unauthenticated; a token with a
    line break passed too and its InvalidHeader error put the token into stderr and the audit log."""
    gh.push("acme", "demo")
    path = token_file(tmp_path, content, mode) if content is not None else tmp_path / "tokne"
    if source == "token_file":
        config = write_config(tmp_path, gh, DEMO, token_file=str(path))
    else:
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        if content is not None:
            path.rename(credentials / "github-token")
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
        config = write_config(tmp_path, gh, DEMO)
    for command in ("check-config", "once", "run"):
        assert grm.main(["--config", str(config), command]) == 2
        err = capsys.readouterr().err
        assert message in err
        assert err.startswith("config error: ")
        assert "secret" not in err
    assert gh.requests == []
    log = (tmp_path / "log/audit.jsonl").read_text()
    assert "secret" not in log
    assert [json.loads(line)["event"] for line in log.splitlines()] == ["config_error", "config_error"]


def test_a_good_token_file_passes_check_config(tmp_path, gh, capsys):
    config = write_config(tmp_path, gh, DEMO, token_file=str(token_file(tmp_path, TOKEN.encode() + b"\r\n", 0o400)))
    assert grm.main(["--config", str(config), "check-config"]) == 0
    assert capsys.readouterr().out == "config OK: 1 apps, with a token\n"


def test_a_group_readable_token_file_is_refused_a_credential_may_show_its_acl_mask(tmp_path, gh, capsys, monkeypatch):
    path = token_file(tmp_path, TOKEN.encode(), 0o640)
    config = write_config(tmp_path, gh, DEMO, token_file=str(path))
    assert grm.main(["--config", str(config), "check-config"]) == 2
    assert "readable or writable by group or others (mode 0640)" in capsys.readouterr().err
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    path.rename(credentials / "github-token")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    config = write_config(tmp_path, gh, DEMO)
    assert grm.main(["--config", str(config), "check-config"]) == 0


def test_a_poll_error_never_logs_an_exception_text(tmp_path, gh, capsys):
    """A library's exception text may quote a header (InvalidHeader quoted 'Bearer <token>'): only its type."""
    gh.push("acme", "demo")
    monitor = make_monitor(tmp_path, gh, DEMO)
    monitor.client.user_agent = f"agent\n{TOKEN}"  # a header requests refuses, quoting its value
    monitor.cycle()
    err = capsys.readouterr().err
    assert "InvalidHeader" in err
    assert TOKEN not in err
    assert TOKEN not in (tmp_path / "log/audit.jsonl").read_text()


# -- budget across restarts (review item 2) ---------------------------------------------------------------------
def run_until(monitor, clock: FakeClock, until: float) -> None:
    """monitor.run() until the simulated clock reaches `until`, then as if SIGTERM arrived."""

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now >= until:
            monitor.stopping = True

    monitor.sleep = sleep
    monitor.run()


@pytest.mark.parametrize(
    ("repos", "starts"),
    [
        (1, [0, 600, 1200, 1800]),  # three restarts in the first hour
        (60, [0, 600, 1200, 1800]),  # beyond 54 repos a cycle costs 54 requests
        (1, list(range(0, 3600, 10))),  # Restart=on-failure, RestartSec=10: a start every 10 s
    ],
)
def test_restarts_never_push_an_hour_past_the_unauthenticated_budget(tmp_path, repos, starts):
    """Before: every start polled at once and nothing remembered what the hour had spent (60 repos and three
    restarts: 63 requests in the first hour, 3 refused; 1 repo restarting every 10 s: 360, 300 refused)."""
    clock = FakeClock()
    with FakeGitHub(token=TOKEN, clock=clock) as gh:
        apps = [{"name": f"app{i}", "repo": f"acme/app{i}"} for i in range(repos)]
        for i in range(repos):
            gh.push("acme", f"app{i}")
        begin = clock.now
        for number, start in enumerate(starts):
            clock.now = max(clock.now, begin + start)
            end = begin + (starts[number + 1] if number + 1 < len(starts) else 3600)
            monitor = make_monitor(tmp_path, gh, apps, token=None, clock=clock)  # a new process each time
            run_until(monitor, clock, end)
        sent = len(gh.requests)
        refused = sum(1 for r in gh.requests if r.status == 403)
    assert sent <= 54, f"{sent} requests in the first hour, {refused} refused"
    assert refused == 0
    assert sent >= min(repos, 54)  # and it does poll


def test_once_and_check_config_never_spend_a_spent_hour(tmp_path, gh, capsys):
    apps = [{"name": f"app{i}", "repo": f"acme/app{i}"} for i in range(60)]
    for i in range(60):
        gh.push("acme", f"app{i}")
    clock = FakeClock(start=time.time())
    monitor = make_monitor(tmp_path, gh, apps, token=None, clock=clock)
    assert monitor.cycle()
    assert len(gh.requests) == 54
    config = str(tmp_path / "config.json")
    monitor.not_before = 0  # the fake's reset is not what is tested here: only the host's own record
    monitor._save_state()
    capsys.readouterr()
    assert grm.main(["--config", config, "check-config"]) == 0
    assert grm.main(["--config", config, "once"]) == 0
    assert "this host's hourly budget is spent (54 requests in the hour): next poll after" in capsys.readouterr().err
    assert len(gh.requests) == 54


def test_a_request_is_counted_before_it_is_sent(tmp_path, gh):
    """A crash mid-cycle (kill -9) cannot forget what was sent: the state holds every request first."""
    gh.push("acme", "demo")
    monitor = make_monitor(tmp_path, gh, DEMO, token=None)
    seen = []
    real = monitor._count_request

    def counting() -> None:
        real()
        seen.append(json.loads((tmp_path / "state/state.json").read_text())["pacing"]["spent"]["anonymous"])

    monitor.client.before_request = counting
    monitor.cycle()
    assert [len(s) for s in seen] == [1]
    assert len(gh.requests) == 1


# -- audit log anchored at both ends (review item 4) --------------------------------------------------------------
def audit_events(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "log/audit.jsonl").read_text().splitlines()]


def some_history(tmp_path: Path, gh: FakeGitHub):
    monitor = make_monitor(tmp_path, gh, DEMO)
    for _ in range(3):
        gh.push("acme", "demo")
        monitor.cycle()
    return monitor


@pytest.mark.parametrize(
    ("cut", "problem"),
    [
        (lambda lines: lines[:-2], "its head says record 6"),
        (lambda lines: lines[2:], "the file begins in the middle of the chain (record 3"),
        (lambda lines: [*lines[:-1], lines[-1].replace('"app": "demo"', '"app": "demi"')], "its head says"),
    ],
    ids=["last-lines-removed", "first-lines-removed", "last-line-edited"],
)
def test_verify_audit_sees_a_truncated_or_edited_end(tmp_path, gh, capsys, cut, problem):
    """Before: each of these reported 'audit log OK'."""
    some_history(tmp_path, gh)
    config = str(tmp_path / "config.json")
    assert grm.main(["--config", config, "verify-audit"]) == 0
    assert "audit log OK: 6 records in 1 files" in capsys.readouterr().out
    log = tmp_path / "log/audit.jsonl"
    log.write_text("\n".join(cut(log.read_text().splitlines())) + "\n")
    assert grm.main(["--config", config, "verify-audit"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("audit log NOT OK")
    assert problem in out


def test_after_a_truncation_the_daemon_records_the_break_and_starts_a_new_segment(tmp_path, gh, capsys):
    """Before: the daemon chained new records onto the cut although its state held the removed line's hash."""
    some_history(tmp_path, gh)
    log = tmp_path / "log/audit.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-2]) + "\n")
    restarted = make_monitor(tmp_path, gh, DEMO)
    gh.push("acme", "demo")
    restarted.cycle()
    records = audit_events(tmp_path)
    brk = records[4]
    assert brk["event"] == "chain_break"
    assert (brk["expected_seq"], brk["found_seq"], brk["segment"], brk["seq"]) == (6, 4, 2, 5)
    assert brk["reason"] == "the log ends at record 4, its head says 6"
    assert records[5]["event"] == "change_detected"
    assert grm.main(["--config", str(tmp_path / "config.json"), "verify-audit"]) == 1
    assert "1 recorded break(s): audit.jsonl line 5: the log ends at record 4" in capsys.readouterr().out


def test_verify_audit_checks_the_hash_the_state_remembers(tmp_path, gh, capsys):
    some_history(tmp_path, gh)
    log = tmp_path / "log/audit.jsonl"
    head = log.with_name("audit.jsonl.head")
    # Both the log's end and its head cut back consistently: only the state still knows the last record.
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-2]) + "\n")
    record = json.loads(lines[-3])
    head.write_text(json.dumps({"count": record["seq"], "last_hash": grm._audit_log._hash(lines[-3].encode())}))
    assert grm.main(["--config", str(tmp_path / "config.json"), "verify-audit"]) == 1
    assert "the last record its writer remembers" in capsys.readouterr().out


# -- what GitHub answers (review items 5, 6 and 7) ---------------------------------------------------------------
def test_a_graphql_answer_without_data_is_a_poll_error_not_every_app_missing(tmp_path, gh, capsys):
    apps = [*DEMO, {"name": "other", "repo": "acme/other"}]
    for name in ("demo", "other"):
        gh.push("acme", name)
    monitor = make_monitor(tmp_path, gh, apps)
    gh.inject(status=200, body="{}")
    assert not monitor.cycle()
    assert "poll failed (MalformedResponseError: GraphQL: the answer has no data)" in capsys.readouterr().err
    assert [monitor.state[a]["last_error"] for a in ("demo", "other")] == [None, None]


def test_a_huge_answer_is_a_poll_error(tmp_path, gh, capsys):
    gh.push("acme", "demo")
    monitor = make_monitor(tmp_path, gh, DEMO, token=None)
    gh.inject(status=200, size=50 * 2**20)
    monitor.cycle()
    assert "an answer of 52428800 bytes (more than 1048576)" in capsys.readouterr().err
    assert request_of(tmp_path, "demo") is None


@pytest.mark.parametrize(
    ("token", "fault", "said"),
    [
        (None, {"status": 403}, "rate limited (secondary): next poll after"),
        (None, {"status": 429}, "rate limited (secondary): next poll after"),
        ("ghp_refusedByTheFake0000000000000000000", {}, "token refused (HTTP 401 from /repos/acme/demo"),
    ],
    ids=["403", "429", "401"],
)
def test_a_secondary_limit_or_a_refused_token_waits_a_minute_then_exponentially(tmp_path, token, fault, said, capsys):
    """Before: 25 requests in 20 s (no backoff on a 403 without retry-after, none on a 401 in REST mode)."""
    clock = FakeClock()
    with FakeGitHub(token=TOKEN, clock=clock) as gh:
        gh.push("acme", "demo")
        for _ in range(100):
            if fault:
                gh.inject(**fault)
        write_config(tmp_path, gh, DEMO, interval=2)
        config = grm.load_config(tmp_path / "config.json")
        sent: list[float] = []
        client = GitHubClient(gh.url, token, sleep=lambda _: None, clock=clock, max_retries=1)
        monitor = grm.Monitor(config, client, clock=clock, sleep=clock.sleep, authenticated=token is not None)
        counting = monitor._count_request

        def count() -> None:
            sent.append(clock.now)
            counting()

        client.before_request = count
        begin = clock.now
        run_until(monitor, clock, begin + 20)
        assert len(sent) == 1
        monitor.stopping = False
        run_until(monitor, clock, begin + 1000)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert len(gaps) >= 4, gaps
    for gap, least in zip(gaps, [60, 120, 240, 480], strict=False):
        assert least <= gap <= least * 1.2, gaps
    assert said in capsys.readouterr().err


def test_the_apis_poll_interval_is_a_minimum_and_lapses(tmp_path, gh, capsys):
    """Before: jitter took a 6 s hint down to 5.43 s, and the hint stayed after GitHub stopped sending it."""
    gh.push("acme", "demo")
    gh.set_poll_interval(6)
    write_config(tmp_path, gh, DEMO, interval=2, jitter=0.1)
    config = grm.load_config(tmp_path / "config.json")
    client = GitHubClient(gh.url, TOKEN, sleep=lambda _: None)
    monitor = grm.Monitor(config, client, authenticated=True)
    monitor.cycle()
    delays = [monitor.next_delay() for _ in range(500)]
    assert min(delays) >= 6
    assert max(delays) <= 6.6
    gh.set_poll_interval(None)
    monitor.cycle()
    assert monitor.effective_interval() == 2
    assert "interval back to the configured 2 s" in capsys.readouterr().err


# -- requests/ belongs to the monitor (review item 8) ------------------------------------------------------------
@pytest.mark.parametrize("token", [TOKEN, None])
def test_a_deleted_branch_withdraws_its_pending_request(tmp_path, gh, token):
    gh.push("acme", "demo")
    gh.push("acme", "other")
    monitor = make_monitor(tmp_path, gh, [*DEMO, {"name": "other", "repo": "acme/other"}], token=token)
    monitor.cycle()
    sha = request_of(tmp_path, "demo")["sha"]
    gh.delete_branch("acme", "demo")
    monitor.cycle()
    assert request_of(tmp_path, "demo") is None
    assert request_of(tmp_path, "other") is not None
    withdrawn = [r for r in audit_events(tmp_path) if r["event"] == "deploy_withdrawn"]
    assert [(r["app"], r["sha"], r["reason"]) for r in withdrawn] == [("demo", sha, "branch not found")]


# -- a crash at any step of the hand-over (review item 3) ----------------------------------------------------------
class Crash(BaseException):
    """kill -9: nothing after it runs, nothing catches it."""


def durable_steps(monkeypatch, fail_at: int | None) -> list[str]:
    """Count the monitor's durable writes (state, outbox, hand-over, audit); raise Crash at number `fail_at`."""
    steps: list[str] = []

    def wrap(owner, name: str, label: str) -> None:
        real = getattr(owner, name)

        def step(*args, **kwargs):
            steps.append(label)
            if len(steps) == fail_at:
                raise Crash(label)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, step)

    wrap(grm, "write_atomically", "write")
    wrap(grm, "publish", "publish")
    wrap(grm._audit_log.AuditLog, "write", "audit")
    return steps


def test_a_crash_at_any_step_of_the_hand_over_neither_loses_nor_doubles_a_request(tmp_path_factory, monkeypatch):
    with FakeGitHub(token=TOKEN) as gh:
        sha = gh.push("acme", "demo")
        with monkeypatch.context() as counting:
            steps = durable_steps(counting, None)
            make_monitor(tmp_path_factory.mktemp("clean"), gh, DEMO).cycle()
        total = len(steps)
        assert steps.count("publish") == 1
        for fail_at in range(1, total + 1):
            for deployer_first in (False, True):
                tmp_path = tmp_path_factory.mktemp(f"crash{fail_at}")
                taken: list[str] = []
                with monkeypatch.context() as crashing:
                    durable_steps(crashing, fail_at)
                    with pytest.raises(Crash):
                        make_monitor(tmp_path, gh, DEMO).cycle()
                if deployer_first and request_of(tmp_path, "demo"):  # it took the request before the restart
                    taken.append(deployer_takes(tmp_path, "demo", "deployed"))
                restarted = make_monitor(tmp_path, gh, DEMO)
                for _ in range(3):
                    restarted.cycle()
                    if request_of(tmp_path, "demo"):
                        taken.append(deployer_takes(tmp_path, "demo", "deployed"))
                restarted.cycle()
                label = f"crash at step {fail_at} of {total} ({steps[fail_at - 1]}), deployer first: {deployer_first}"
                assert taken == [sha], label
                assert restarted.state["demo"]["last_deployed_sha"] == sha, label
                assert list((tmp_path / "spool/outbox").iterdir()) == [], label
                events = [r["event"] for r in audit_events(tmp_path)]
                assert events.count("deploy_requested") == 1, (label, events)
                assert events.count("deploy_succeeded") == 1, (label, events)


def test_a_restart_after_a_refused_token_polls_at_once(tmp_path, gh, capsys):
    """The restart is how a replaced token arrives: the refusal's wait is not carried over (a rate limit is)."""
    gh.push("acme", "demo")
    clock = FakeClock()
    refused = make_monitor(tmp_path, gh, DEMO, token="ghp_refusedByTheFake0000000000000000000", clock=clock)
    assert not refused.cycle()
    assert refused.next_delay() >= 60
    assert "token refused (HTTP 401 from /repos/acme/demo/commits/heads/main: the token was refused)" in (
        capsys.readouterr().err
    )
    restarted = make_monitor(tmp_path, gh, DEMO, clock=clock)
    assert restarted.first_delay() < 30
    assert restarted.cycle()
    assert request_of(tmp_path, "demo") is not None


@pytest.mark.parametrize(
    ("mode", "content", "message"),
    [
        (0o660, None, "mode 0660 lets the group or others write it"),
        (0o640, '{"interval": NaN}', "NaN is not JSON"),
        (0o640, '{"interval": 30, "interval": 5}', "duplicate key 'interval'"),
    ],
)
def test_a_configuration_others_could_write_or_not_plain_json_is_refused(tmp_path, gh, capsys, mode, content, message):
    path = write_config(tmp_path, gh, DEMO)
    if content is not None:
        path.write_text(content)
    path.chmod(mode)
    assert grm.main(["--config", str(path), "check-config"]) == 2
    assert message in capsys.readouterr().err
