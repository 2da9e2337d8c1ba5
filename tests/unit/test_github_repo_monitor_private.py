"""The monitor polls private repositories with their own credentials, read from systemd's credentials
directory (here repo_credentials_dir): a token over smart HTTP with Basic auth, a GitHub App's installation
token bought from the fake GitHub API, a deploy key against a real sshd with git-shell. A missing credential
stops the start naming the app; no credential appears in the monitor's state, spool or audit log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._git_source import GitSource
from ansible_collections.secure_streamlit.hosting.plugins.module_utils.github_client import GitHubClient
from tests import git_ssh
from tests.fake_github.server import FakeGitHub
from tests.git_server import GitServer
from tests.unit.plugins.module_utils.test__deploy_private import InstallationTokens
from tests.unit.plugins.module_utils.test__repo_auth import rsa_pem
from tests.unit.test_github_repo_monitor import FakeClock, audit_events, grm, request_of

TOKEN = "glpat-MonitorS3cretNeverShown00"


def credential(tmp_path: Path, name: str, data: bytes) -> Path:
    directory = tmp_path / "credentials"
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    path.chmod(0o400)
    return directory


def monitor_for(tmp_path: Path, app: dict, *, api_url: str = "http://127.0.0.1:9", known_hosts: str | None = None):
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "api_url": api_url,
                "state_dir": str(tmp_path / "state"),
                "spool_dir": str(tmp_path / "spool"),
                "audit_log": str(tmp_path / "log" / "audit.jsonl"),
                "repo_credentials_dir": str(tmp_path / "credentials"),
                "apps": [app],
            }
        )
    )
    config = grm.load_config(path)
    clock = FakeClock()
    client = GitHubClient(config["api_url"], None, sleep=lambda _: None, clock=clock, max_retries=1)
    source = GitSource(timeout=30, ssh_known_hosts=known_hosts)
    return grm.Monitor(config, client, clock=clock, sleep=clock.sleep, git_source=source)


def nothing_kept_holds(tmp_path: Path, secret: str) -> None:
    for place in ("state", "spool", "log"):
        for path in (tmp_path / place).rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


def github_app_monitor(tmp_path: Path, github: FakeGitHub, server: GitServer):
    """The monitor of a git app whose credential is a GitHub App installed on `github`; the repo's head."""
    private, public = rsa_pem()
    github.add_app(7, public, 70)
    server.users = InstallationTokens(github)
    server.create("acme/demo")
    sha = server.commit("acme/demo")
    credential(tmp_path, "repo-demo-app-key", private)
    app = {"name": "demo", "repo": server.url("acme/demo"), "provider": "git"}
    app["auth"] = {"kind": "github_app", "app_id": 7, "installation_id": 70}
    return monitor_for(tmp_path, app, api_url=github.url), sha


def test_a_private_repo_is_polled_with_its_token(tmp_path):
    with GitServer(tmp_path / "git", users={"oauth2": TOKEN}) as server:
        server.create("acme/demo")
        sha = server.commit("acme/demo")
        app = {"name": "demo", "repo": server.url("acme/demo"), "provider": "git"}
        app["auth"] = {"kind": "token", "username": "oauth2"}
        with pytest.raises(grm.ConfigError, match=r"apps\[0\] \(name 'demo'\): .*repo-demo-token is missing"):
            monitor_for(tmp_path, app)
        credential(tmp_path, "repo-demo-token", TOKEN.encode() + b"\n")
        monitor = monitor_for(tmp_path, app)
        assert monitor.cycle()
        assert request_of(tmp_path, "demo")["sha"] == sha
    nothing_kept_holds(tmp_path, TOKEN)


def test_a_private_repo_is_polled_with_a_github_app_installation_token(tmp_path):
    with FakeGitHub() as github, GitServer(tmp_path / "git") as server:
        monitor, sha = github_app_monitor(tmp_path, github, server)
        assert monitor.cycle()
        assert monitor.cycle()
        assert request_of(tmp_path, "demo")["sha"] == sha
        (token,) = github.installation_tokens  # one token for both polls: kept until near its expiry
    nothing_kept_holds(tmp_path, token)


def test_a_failing_installation_token_exchange_backs_off_as_a_failing_server_does(tmp_path, capsys):
    """No token is no answer from that remote: asked again after 2 x interval, then doubled, said once."""
    with FakeGitHub() as github, GitServer(tmp_path / "git") as server:
        monitor, sha = github_app_monitor(tmp_path, github, server)
        tokens, clock = monitor.git_apps["demo"]["app_tokens"], monitor.clock
        github.inject(status=500)
        github.inject(status=500)
        assert not monitor.cycle()
        assert tokens.exchanges == 1
        record = audit_events(tmp_path)[-1]
        assert (record["event"], record["app"], record["provider"]) == ("poll_error", "demo", "git")
        assert record["kind"] == "installation_token"
        assert "answered HTTP 500" in record["reason"]
        assert record["retry_at"] == round(clock.now + 60)  # 2 x the 30 s interval
        assert "asked again after" in capsys.readouterr().err
        clock.now += 59
        monitor.cycle()
        assert tokens.exchanges == 1  # not before its time
        clock.now += 2
        assert not monitor.cycle()
        assert tokens.exchanges == 2
        clock.now += 119
        monitor.cycle()
        assert tokens.exchanges == 2  # the second failure in a row waits twice as long
        clock.now += 2
        assert monitor.cycle()
        assert tokens.exchanges == 3
        assert request_of(tmp_path, "demo")["sha"] == sha
    assert [e["event"] for e in audit_events(tmp_path)].count("poll_error") == 1  # the same error, said once
    assert capsys.readouterr().err.count("no installation token") == 0


def test_a_private_repo_is_polled_over_ssh_with_its_deploy_key(tmp_path):
    why = git_ssh.available()
    if why:
        pytest.skip(why)
    repos = GitServer(tmp_path / "git")
    repos.create("acme/demo")
    sha = repos.commit("acme/demo")
    with git_ssh.GitSshServer(tmp_path / "ssh") as ssh:
        credential(tmp_path, "repo-demo-key", ssh.client_key.read_bytes())
        app = {"name": "demo", "repo": ssh.url(repos.root / "acme/demo.git"), "provider": "git"}
        app["auth"] = {"kind": "deploy_key"}
        monitor = monitor_for(tmp_path, app, known_hosts=str(ssh.known_hosts))
        assert monitor.cycle()
        assert request_of(tmp_path, "demo")["sha"] == sha
        # the same key with the server's host key not pinned: refused (never learned on first use)
        (tmp_path / "empty_known_hosts").write_text("")
        unpinned = monitor_for(tmp_path, app, known_hosts=str(tmp_path / "empty_known_hosts"))
        assert not unpinned.cycle()


@pytest.mark.parametrize(
    ("auth", "error"),
    [
        ({"kind": "password"}, "auth must be an object with kind deploy_key, token, github_app"),
        ({"kind": "token", "token_var": "vault_x"}, "auth: unknown key 'token_var'"),
        ({"kind": "github_app", "app_id": 0, "installation_id": 1}, "auth.app_id must be a positive whole number"),
    ],
)
def test_a_bad_auth_in_the_config_is_refused_naming_the_app(tmp_path, auth, error):
    credential(tmp_path, "repo-demo-app-key", b"x")
    app = {"name": "demo", "repo": "https://git.example.org/a/b.git", "provider": "git", "auth": auth}
    with pytest.raises(grm.ConfigError) as caught:
        monitor_for(tmp_path, app)
    assert any(e.startswith("apps[0] (name 'demo'): ") and error in e for e in caught.value.errors), caught.value.errors


def test_the_pinned_host_keys_come_from_systemd_s_credential_when_the_unit_has_it(tmp_path):
    config = {"repo_credentials_dir": str(tmp_path), "ssh_known_hosts": "/etc/streamlit-apps/ssh_known_hosts"}
    assert grm.known_hosts(config) == "/etc/streamlit-apps/ssh_known_hosts"
    (tmp_path / "ssh-known-hosts").write_text("127.0.0.1 ssh-ed25519 AAAA\n")
    assert grm.known_hosts(config) == str(tmp_path / "ssh-known-hosts")
