"""The github-repo-monitor daemon with the plain-git provider: its cycle against a REAL git server (Debian's
git http-backend behind tests/git_server.py), with a simulated clock where backoff time must pass; its
command line as a real subprocess. Mirrors tests/unit/test_github_repo_monitor.py for the GitHub path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._git_source import GitSource
from ansible_collections.secure_streamlit.hosting.plugins.module_utils.github_client import GitHubClient
from tests.fake_github import FakeGitHub
from tests.git_server import GitServer
from tests.helpers import REPO
from tests.unit.test_github_repo_monitor import (
    PROGRAM,
    TOKEN,
    FakeClock,
    audit_events,
    deployer_takes,
    grm,
    request_of,
)

PASSWORD = "gitea-token-neverToBeSeen0000"


@pytest.fixture
def server(tmp_path):
    with GitServer(tmp_path / "git") as git_server:
        git_server.create("acme/demo")
        yield git_server


def write_config(tmp_path: Path, apps: list[dict], api_url: str = "http://127.0.0.1:9", **extra) -> Path:
    config = {
        "api_url": api_url,
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


def make_monitor(tmp_path, apps, *, clock=None, gh=None, token=None, **extra):
    config = grm.load_config(write_config(tmp_path, apps, api_url=gh.url if gh else "http://127.0.0.1:9", **extra))
    clock = clock or FakeClock()
    client = GitHubClient(config["api_url"], token, sleep=lambda _: None, clock=clock, max_retries=1, read_timeout=0.5)
    source = GitSource(timeout=10)
    return grm.Monitor(
        config, client, clock=clock, sleep=clock.sleep, authenticated=token is not None, git_source=source
    )


def git_app(server: GitServer, name: str = "demo", repo: str = "acme/demo", **more) -> dict:
    return {"name": name, "repo": server.url(repo), "branch": "main", "provider": "git", **more}


def only_the_head_was_asked(server: GitServer) -> None:
    for request in server.requests():
        assert (request.method, request.command) in (("GET", ""), ("POST", "ls-refs")), request
        assert request.path.endswith(("/info/refs", "/git-upload-pack"))
        assert b"want " not in request.body


# -- configuration -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("app", "extra", "error"),
    [
        (
            {"name": "demo", "repo": "file:///srv/git/acme/demo.git", "provider": "git"},
            {},
            "apps[0] (name 'demo'): repo 'file:///srv/git/acme/demo.git': a git URL file:// is refused here",
        ),
        (
            {"name": "demo", "repo": f"https://x:{PASSWORD}@git.example.org/a/b.git", "provider": "git"},
            {},
            "apps[0] (name 'demo'): repo (value not shown: it may hold a credential): a git URL must not carry",
        ),
        (
            {"name": "demo", "repo": "ext::sh -c id", "provider": "git"},
            {},
            "apps[0] (name 'demo'): repo 'ext::sh -c id': a git URL must be printable ASCII",
        ),
        ({"name": "demo", "repo": "acme/demo", "provider": "svn"}, {}, "apps[0] (name 'demo'): provider 'svn'"),
        (
            {"name": "demo", "repo": "https://git.example.org/a/b.git", "provider": "git", "branch": "-x"},
            {},
            "apps[0] (name 'demo'): branch '-x'",
        ),
        (
            {"name": "demo", "repo": "https://git.example.org/a/b.git", "provider": "git"},
            {"git_timeout": 0},
            "git_timeout must be a number of seconds within 0..300 (is 0)",
        ),
        (
            {"name": "demo", "repo": "https://git.example.org/a/b.git", "provider": "git"},
            {"allow_file_urls": "yes"},
            "allow_file_urls must be true or false (is 'yes')",
        ),
    ],
)
def test_bad_git_apps_are_refused_naming_entry_and_rule(tmp_path, app, extra, error, capsys):
    path = write_config(tmp_path, [app], **extra)
    with pytest.raises(grm.ConfigError) as caught:
        grm.load_config(path)
    assert any(e.startswith(error) for e in caught.value.errors), caught.value.errors
    assert grm.main(["--config", str(path), "once"]) == 2
    assert PASSWORD not in capsys.readouterr().err
    assert not (tmp_path / "spool").exists()


def test_git_urls_of_every_kind_pass_check_config(tmp_path, capsys):
    apps = [
        {"name": "a", "repo": "https://gitlab.example/group/sub/a.git", "provider": "git"},
        {"name": "b", "repo": "git@gitea.example:team/b.git", "provider": "git"},
        {"name": "c", "repo": "ssh://git@gitea.example:2222/team/c.git", "provider": "git", "branch": "release/1"},
        {"name": "d", "repo": "file:///srv/git/acme/d.git", "provider": "git"},
        {"name": "e", "repo": "acme/e"},  # a config written before providers: GitHub
    ]
    path = write_config(tmp_path, apps, allow_file_urls=True)
    assert grm.main(["--config", str(path), "check-config"]) == 0
    assert "config OK: 5 apps" in capsys.readouterr().out
    config = grm.load_config(path)
    assert [app["provider"] for app in config["apps"]] == ["git", "git", "git", "git", "github"]


# -- hand-off ------------------------------------------------------------------------------------------------
def test_push_becomes_exactly_one_request_for_the_head(tmp_path, server):
    sha = server.commit("acme/demo")
    monitor = make_monitor(tmp_path, [git_app(server)])
    assert monitor.cycle()
    assert request_of(tmp_path, "demo")["sha"] == sha
    assert request_of(tmp_path, "demo")["repo"] == server.url("acme/demo")
    first = (tmp_path / "spool/requests/demo.json").stat().st_mtime_ns
    for _ in range(3):
        assert monitor.cycle()
    assert (tmp_path / "spool/requests/demo.json").stat().st_mtime_ns == first
    assert monitor.git_source.runs == 4  # one ls-remote per cycle
    only_the_head_was_asked(server)
    events = [e["event"] for e in audit_events(tmp_path)]
    assert events == ["change_detected", "deploy_requested"]


def test_deployed_then_failed_then_a_newer_push(tmp_path, server):
    server.commit("acme/demo")
    monitor = make_monitor(tmp_path, [git_app(server)])
    monitor.cycle()
    deployed = deployer_takes(tmp_path, "demo", "deployed")
    monitor.cycle()
    assert monitor.state["demo"]["last_deployed_sha"] == deployed
    assert request_of(tmp_path, "demo") is None
    server.commit("acme/demo")
    monitor.cycle()
    bad = deployer_takes(tmp_path, "demo", "failed", "the script raised at import")
    for _ in range(3):
        monitor.cycle()
    assert request_of(tmp_path, "demo") is None  # a failed SHA is never asked for again
    assert monitor.state["demo"]["failed_shas"][bad]["reason"] == "the script raised at import"
    newer = server.commit("acme/demo")
    monitor.cycle()
    assert request_of(tmp_path, "demo")["sha"] == newer


def test_force_push_to_an_older_commit_requests_exactly_that_head(tmp_path, server):
    old = server.commit("acme/demo")
    monitor = make_monitor(tmp_path, [git_app(server)])
    monitor.cycle()
    deployer_takes(tmp_path, "demo", "deployed")
    server.commit("acme/demo")
    monitor.cycle()
    deployer_takes(tmp_path, "demo", "deployed")
    server.force_push("acme/demo", "main", old)
    monitor.cycle()
    assert request_of(tmp_path, "demo")["sha"] == old


def test_a_force_push_back_withdraws_a_pending_request(tmp_path, server):
    deployed = server.commit("acme/demo")
    monitor = make_monitor(tmp_path, [git_app(server)])
    monitor.cycle()
    deployer_takes(tmp_path, "demo", "deployed")
    server.commit("acme/demo")
    monitor.cycle()
    assert request_of(tmp_path, "demo") is not None
    server.force_push("acme/demo", "main", deployed)
    monitor.cycle()
    assert request_of(tmp_path, "demo") is None
    assert audit_events(tmp_path)[-1]["event"] == "deploy_withdrawn"


# -- faults --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fault", "kind", "said"),
    [
        ("down", "unreachable", "server unreachable"),
        ("html", "malformed", "the answer is not a ref listing"),
        ("garbage", "malformed", "the answer is not a ref listing"),
        ("auth", "auth_refused", "authentication refused"),
    ],
)
def test_faults_are_survived_logged_backed_off_and_request_nothing_unread(tmp_path, server, fault, kind, said, capsys):
    server.commit("acme/demo")
    clock = FakeClock()
    monitor = make_monitor(tmp_path, [git_app(server)], clock=clock)
    assert monitor.cycle()
    deployer_takes(tmp_path, "demo", "deployed")
    newer = server.commit("acme/demo")
    if fault == "down":
        server.stop()
    elif fault == "auth":
        server.users = {"alice": PASSWORD}
    else:
        server.mode = fault
    runs = monitor.git_source.runs
    assert not monitor.cycle()  # survived: an answer, not an exception
    assert request_of(tmp_path, "demo") is None  # nothing requested but a head just read
    err = capsys.readouterr().err
    assert f"demo: {said}" in err
    assert "asked again after" in err
    record = audit_events(tmp_path)[-1]
    assert (record["event"], record["app"], record["kind"], record["provider"]) == ("poll_error", "demo", kind, "git")
    assert record["retry_at"] >= clock.now + 60
    # backoff: this server is not asked again before its time, and the same error is logged once
    for _ in range(2):
        clock.now += 25
        monitor.cycle()
    assert monitor.git_source.runs == runs + 1
    clock.now = record["retry_at"] + 1
    monitor.cycle()
    assert monitor.git_source.runs == runs + 2
    assert [e["event"] for e in audit_events(tmp_path)].count("poll_error") == 1
    assert capsys.readouterr().err.count(said) == 0
    # mended: the next poll after the (doubled) backoff reads the head and asks for exactly it
    if fault == "down":
        server.start()
    server.users = {}
    server.mode = "git"
    clock.now += 15 * 60 + 1
    assert monitor.cycle()
    assert request_of(tmp_path, "demo")["sha"] == newer
    only_the_head_was_asked(server)


def test_a_deleted_branch_withdraws_its_pending_request_and_others_go_on(tmp_path, server):
    server.create("acme/other")
    server.commit("acme/demo")
    other = server.commit("acme/other")
    monitor = make_monitor(tmp_path, [git_app(server), git_app(server, "other", "acme/other")])
    monitor.cycle()
    assert request_of(tmp_path, "demo") is not None
    deployer_takes(tmp_path, "other", "deployed")
    server.delete_branch("acme/demo", "main")
    newer = server.commit("acme/other")
    monitor.cycle()
    assert request_of(tmp_path, "demo") is None
    assert "branch main not found" in monitor.state["demo"]["last_error"]
    assert request_of(tmp_path, "other")["sha"] == newer != other
    assert "deploy_withdrawn" in [e["event"] for e in audit_events(tmp_path)]
    # a missing branch is an answer, not a fault: asked every cycle, no backoff
    runs = monitor.git_source.runs
    monitor.cycle()
    assert monitor.git_source.runs == runs + 2


def test_one_ls_remote_per_remote_per_cycle_even_for_two_apps_on_it(tmp_path, server):
    sha = server.commit("acme/demo")
    apps = [git_app(server), git_app(server, "twin")]
    monitor = make_monitor(tmp_path, apps)
    server.clear_log()
    monitor.cycle()
    assert monitor.git_source.runs == 1
    assert [r.command for r in server.requests() if r.method == "POST"] == ["ls-refs"]
    assert request_of(tmp_path, "demo")["sha"] == request_of(tmp_path, "twin")["sha"] == sha


def test_github_trouble_does_not_stop_the_git_apps(tmp_path, server):
    """A refused token or a rate limit waits GitHub out; the git apps are polled at the interval meanwhile."""
    with FakeGitHub(token=TOKEN) as gh:
        gh.push("acme", "hub")
        apps = [git_app(server), {"name": "hub", "repo": "acme/hub", "provider": "github"}]
        clock = FakeClock()
        monitor = make_monitor(tmp_path, apps, clock=clock, gh=gh, token="ghp_wrongTokenNotTheOneTheFakeWants")
        server.commit("acme/demo")
        assert not monitor.cycle()  # the token is refused ...
        assert request_of(tmp_path, "demo") is not None  # ... and the git app is served all the same
        assert request_of(tmp_path, "hub") is None
        assert monitor.next_delay() <= 30 * 1.1 + 0.001  # the loop keeps the git apps' pace
        deployer_takes(tmp_path, "demo", "deployed")
        newer = server.commit("acme/demo")
        github_requests = len(gh.requests)
        clock.now += 33
        monitor.cycle()
        assert request_of(tmp_path, "demo")["sha"] == newer
        assert len(gh.requests) == github_requests  # GitHub is not asked before its wait is over


def test_cli_once_with_a_file_url_in_a_real_process(tmp_path):
    git_server = GitServer(tmp_path / "git")  # not serving: file:// needs no server
    git_server.create("acme/demo")
    sha = git_server.commit("acme/demo")
    apps = [{"name": "demo", "repo": git_server.file_url("acme/demo"), "provider": "git"}]
    config = write_config(tmp_path, apps, allow_file_urls=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "collections")}
    once = subprocess.run(
        [sys.executable, str(PROGRAM), "--config", str(config), "once"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert once.returncode == 0, once.stderr
    assert request_of(tmp_path, "demo")["sha"] == sha
    assert "watching" not in once.stderr  # once: no run loop
    status = subprocess.run(
        [sys.executable, str(PROGRAM), "--config", str(config), "status"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert sha[:10] in status.stdout
