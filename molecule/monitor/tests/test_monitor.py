"""The monitor role in a systemd host, against the fake GitHub API running beside it (prepare.yml), and
a plain git server (git http-backend) for the app on provider git.

A test "pushes" to GitHub by rewriting the fake's state file, to the git server with git itself; the
monitor polls every 2 s (GitHub with a token, the git server with ls-remote).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest

STATE = "/var/lib/fake-github/state.json"
SPOOL = "/var/spool/github-repo-monitor"
TOKEN = "ghp_molecule0nlyF4keT0kenNeverLogged00"
GIT_WORK = "/var/lib/git-server/work/acme/plain"
PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))


def write_fake_state(host, repos: dict, faults: list | None = None) -> None:
    state = json.dumps({"repos": repos, "faults": faults or []})
    host.run(f"printf '%s' '{state}' > {STATE}.tmp && mv {STATE}.tmp {STATE}")


def wait_for(host, command: str, timeout: float = 30) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = host.run(command)
        if result.rc == 0 and result.stdout.strip():
            return result.stdout.strip()
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for: {command}")


def requested_sha(host, app: str, timeout: float = 30) -> str:
    return json.loads(wait_for(host, f"cat {SPOOL}/requests/{app}.json", timeout))["sha"]


def wait_for_request_of(host, app: str, sha: str, timeout: float = 30) -> None:
    """The deploy request for `app` names `sha` within the timeout (a stale request does not count)."""
    wait_for(host, f'grep -l \'"sha": "{sha}"\' {SPOOL}/requests/{app}.json', timeout)


def deployer_reports(host, app: str, sha: str, status: str, reason: str = "") -> None:
    result = json.dumps({"id": secrets.token_hex(8), "app": app, "sha": sha, "status": status, "reason": reason})
    host.run(f"rm -f {SPOOL}/requests/{app}.json")
    tmp = f"{SPOOL}/results/.{app}.tmp"
    host.run(f"printf '%s' '{result}' > {tmp} && mv {tmp} {SPOOL}/results/{app}.json")


@pytest.fixture(scope="module")
def heads(host) -> dict:
    repos = {"acme/demo": {"main": secrets.token_hex(20)}, "acme/other": {"release": secrets.token_hex(20)}}
    write_fake_state(host, repos)
    return repos


def test_service_runs_as_its_own_unprivileged_user(host):
    service = host.service("github-repo-monitor")
    assert service.is_running
    assert service.is_enabled
    user = host.user("github-monitor")
    assert user.shell == "/usr/sbin/nologin"
    assert "docker" not in user.groups
    main_pid = host.check_output("systemctl show -p MainPID --value github-repo-monitor")
    assert host.check_output(f"ps -o user= -p {main_pid}") == "github-monitor"


def test_sandbox_exposure_is_at_most_2(host):
    # --threshold is the exposure x10: the command fails above 2.0.
    result = host.run("systemd-analyze security --threshold=20 --no-pager github-repo-monitor.service")
    score = re.search(r"Overall exposure level for github-repo-monitor.service: ([0-9.]+)", result.stdout)
    assert score, result.stdout[-500:]
    assert float(score.group(1)) <= 2.0
    assert result.rc == 0


@pytest.mark.parametrize(
    ("path", "owner", "group", "mode"),
    [
        ("/etc/github-repo-monitor", "root", "github-monitor", 0o750),
        ("/etc/github-repo-monitor/config.json", "root", "github-monitor", 0o640),
        ("/etc/github-repo-monitor/credentials", "root", "root", 0o700),
        ("/etc/github-repo-monitor/credentials/github-token", "root", "root", 0o600),
        ("/usr/local/lib/github-repo-monitor/github_repo_monitor.py", "root", "root", 0o644),
        ("/usr/local/lib/github-repo-monitor/_audit_log.py", "root", "root", 0o644),
        ("/usr/local/lib/github-repo-monitor/_git_source.py", "root", "root", 0o644),
        ("/var/log/github-repo-monitor/audit.jsonl.head", "github-monitor", "github-monitor", 0o640),
        # The spool and the answers are root's (the root deployer never writes where the monitor can);
        # requests/ and the outbox are the monitor's.
        (SPOOL, "root", "github-monitor", 0o750),
        (f"{SPOOL}/results", "root", "github-monitor", 0o750),
        (f"{SPOOL}/requests", "github-monitor", "github-monitor", 0o750),
        (f"{SPOOL}/outbox", "github-monitor", "github-monitor", 0o700),
    ],
)
def test_file_modes_are_deliberate(host, path, owner, group, mode):
    f = host.file(path)
    assert (f.user, f.group, f.mode) == (owner, group, mode)


def test_a_push_becomes_a_deploy_request_of_exactly_the_head(host, heads):
    assert requested_sha(host, "demo") == heads["acme/demo"]["main"]
    assert requested_sha(host, "other") == heads["acme/other"]["release"]


def test_a_failed_sha_is_not_requested_again_but_a_newer_one_is(host, heads):
    bad = requested_sha(host, "demo")
    deployer_reports(host, "demo", bad, "failed", "health check failed")
    time.sleep(6)  # three polls
    assert host.run(f"test -e {SPOOL}/requests/demo.json").rc == 1
    newer = secrets.token_hex(20)
    write_fake_state(host, {**heads, "acme/demo": {"main": newer}})
    wait_for_request_of(host, "demo", newer)


def test_faults_are_survived(host, heads):
    restarts = host.check_output("systemctl show -p NRestarts --value github-repo-monitor")
    faults = [{"status": 500}] * 4 + [
        {"status": 200, "body": "{not json"},
        {"status": 429, "headers": {"retry-after": "2"}},
    ]
    after_faults = secrets.token_hex(20)
    write_fake_state(host, {**heads, "acme/other": {"release": after_faults}}, faults)
    wait_for_request_of(host, "other", after_faults, timeout=60)
    assert host.service("github-repo-monitor").is_running
    assert host.check_output("systemctl show -p NRestarts --value github-repo-monitor") == restarts
    journal = host.check_output("journalctl -u github-repo-monitor --no-pager -o cat")
    assert "poll failed" in journal
    assert "rate limited" in journal


def push_plain(host) -> str:
    """A commit pushed to the plain git server's acme/plain (git over the local bare repository)."""
    return host.check_output(
        f"cd {GIT_WORK} && git -c user.name=t -c user.email=t@lab.test commit -q --allow-empty -m change "
        "&& git push -q --force origin HEAD:main && git rev-parse HEAD"
    )


def test_the_plain_git_app_is_watched_with_ls_remote(host):
    config = json.loads(host.file("/etc/github-repo-monitor/config.json").content_string)
    plain = next(app for app in config["apps"] if app["name"] == "plain")
    url = "http://127.0.0.1:9200/acme/plain.git"
    assert plain == {"name": "plain", "provider": "git", "repo": url, "branch": "main"}
    first = host.check_output(f"git -C {GIT_WORK} rev-parse HEAD")
    assert requested_sha(host, "plain") == first
    deployer_reports(host, "plain", first, "deployed")
    newer = push_plain(host)
    wait_for_request_of(host, "plain", newer)


def test_the_plain_git_server_down_is_survived_audited_and_caught_up(host):
    restarts = host.check_output("systemctl show -p NRestarts --value github-repo-monitor")
    deployer_reports(host, "plain", requested_sha(host, "plain"), "deployed")
    host.check_output("systemctl stop git-server")
    try:
        wait_for(host, "journalctl -u github-repo-monitor --no-pager -o cat | grep 'plain: server unreachable'")
        wait_for(host, 'grep \'"kind": "unreachable"\' /var/log/github-repo-monitor/audit.jsonl')
        newer = push_plain(host)  # pushed while the server is down: seen once it is back
    finally:
        host.check_output("systemctl start git-server")
    wait_for_request_of(host, "plain", newer, timeout=120)  # after the backoff (4 s, doubling)
    assert host.service("github-repo-monitor").is_running
    assert host.check_output("systemctl show -p NRestarts --value github-repo-monitor") == restarts


VERIFY_AUDIT = (
    "runuser -u github-monitor -- python3 /usr/local/lib/github-repo-monitor/github_repo_monitor.py "
    "--config /etc/github-repo-monitor/config.json verify-audit"
)


def test_audit_log_chain_verifies(host):
    assert host.check_output(VERIFY_AUDIT).startswith("audit log OK")


def test_audit_log_rotates_monthly_kept_six_years_with_the_chain_intact(host, heads):
    config = host.file("/etc/logrotate.d/github-repo-monitor")
    assert "rotate 72" in config.content_string
    assert "monthly" in config.content_string
    host.check_output("logrotate -f /etc/logrotate.d/github-repo-monitor")
    rotated = "audit.jsonl-" + host.check_output("date +%Y%m%d")
    listed = sorted(host.check_output("ls /var/log/github-repo-monitor/").split())
    assert listed == ["audit.jsonl", rotated, "audit.jsonl.head"]
    newer = secrets.token_hex(20)
    write_fake_state(host, {**heads, "acme/demo": {"main": newer}})
    wait_for_request_of(host, "demo", newer)
    out = host.check_output(VERIFY_AUDIT)
    assert "in 2 files, chained from the first record ever; ends at record" in out
    assert host.file("/var/log/github-repo-monitor/audit.jsonl").mode == 0o640


@pytest.mark.parametrize(
    "where",
    [
        "journalctl --no-pager -o cat",
        "cat /var/log/github-repo-monitor/audit.jsonl /var/lib/github-repo-monitor/state.json",
        "ps auxwwe",
        "cat /proc/$(systemctl show -p MainPID --value github-repo-monitor)/environ | tr '\\0' '\\n'",
        # every file others may read, outside the fake GitHub's own directory
        "find /etc /var /run /usr/local /opt /tmp /root -xdev -type f -perm -o=r ! -path '/var/lib/fake-github/*' "
        "-exec grep -l ghp_molecule {} + 2>/dev/null || true",
    ],
)
def test_the_token_appears_nowhere(host, where):
    out = host.run(where).stdout
    assert TOKEN not in out
    assert "ghp_molecule" not in out


def test_ansible_output_never_shows_the_token():
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    result = subprocess.run(
        ["ansible-playbook", "-i", inventory, "-vvv", "--diff", str(PROJECT / "molecule/monitor/converge.yml")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(PROJECT / "collections")},
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert TOKEN not in result.stdout + result.stderr
    assert "glpat-molecule0nlyRepoT0kenNeverLogged" not in result.stdout + result.stderr
    assert "PRIVATE KEY" not in result.stdout + result.stderr


# -- private repositories (prepare.yml's forges, docs/private-repositories.md) --------------------------------
REPO_TOKEN = "glpat-molecule0nlyRepoT0kenNeverLogged"
REPO_AUTH = "/etc/streamlit-apps/repo-auth"


def push_private(host, work: str, remote: str) -> str:
    return host.check_output(
        f"cd {work} && git -c user.name=t -c user.email=t@lab.test commit -q --allow-empty -m change "
        f"&& git push -q --force {remote} HEAD:main && git rev-parse HEAD"
    )


@pytest.mark.parametrize(
    ("path", "owner", "mode"),
    [
        (REPO_AUTH, "root", 0o700),
        (f"{REPO_AUTH}/secret-ssh", "root", 0o700),
        (f"{REPO_AUTH}/secret-ssh/id_ed25519", "root", 0o600),
        (f"{REPO_AUTH}/secret-http/token", "root", 0o600),
        ("/etc/streamlit-apps/ssh_known_hosts", "root", 0o644),
    ],
)
def test_repository_credentials_are_root_s_only(host, path, owner, mode):
    assert host.file(path).user == owner
    assert host.file(path).mode == mode


def test_the_deploy_key_is_ed25519_and_the_forge_s_host_key_is_pinned_strictly(host):
    assert host.file(f"{REPO_AUTH}/secret-ssh/id_ed25519.pub").content_string.startswith("ssh-ed25519 ")
    config = json.loads(host.file("/etc/github-repo-monitor/config.json").content_string)
    private = {app["name"]: app for app in config["apps"] if "auth" in app}
    assert private["secret-ssh"]["auth"] == {"kind": "deploy_key"}
    assert private["secret-http"]["auth"] == {"kind": "token", "username": "oauth2"}  # the variable's name: not here
    unit = host.file("/etc/systemd/system/github-repo-monitor.service").content_string
    assert f"LoadCredential=repo-secret-ssh-key:{REPO_AUTH}/secret-ssh/id_ed25519" in unit
    assert f"LoadCredential=repo-secret-http-token:{REPO_AUTH}/secret-http/token" in unit
    assert "LoadCredential=ssh-known-hosts:/etc/streamlit-apps/ssh_known_hosts" in unit


def test_a_private_repo_over_ssh_is_polled_with_its_deploy_key(host):
    host.run("systemctl restart github-repo-monitor")  # no backoff left from before the key was added
    first = requested_sha(host, "secret-ssh", timeout=60)
    deployer_reports(host, "secret-ssh", first, "deployed")
    # as the forge's user: git refuses to push into a repository another user owns
    newer = host.check_output(
        "runuser -u git -- sh -c 'cd /srv/git-ssh-work && git -c user.name=t -c user.email=t@lab.test commit -q "
        "--allow-empty -m change && git push -q --force /srv/git-ssh/acme/secret-ssh.git HEAD:main "
        "&& git rev-parse HEAD'"
    )
    wait_for_request_of(host, "secret-ssh", newer, timeout=60)


def test_a_private_repo_over_http_is_polled_with_its_token(host):
    first = requested_sha(host, "secret-http", timeout=60)
    deployer_reports(host, "secret-http", first, "deployed")
    work = "/var/lib/git-server-private/work/acme/secret-http"
    newer = push_private(host, work, "origin")
    wait_for_request_of(host, "secret-http", newer, timeout=60)


def test_without_the_token_the_forge_refuses_and_the_monitor_says_so(host):
    result = host.run("git ls-remote http://127.0.0.1:9201/acme/secret-http.git 2>&1")
    assert result.rc != 0
    # a git without the credential is refused; the forge's git-shell user opens no shell either
    shell = host.run(
        f"ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/etc/streamlit-apps/ssh_known_hosts "
        f"-i {REPO_AUTH}/secret-ssh/id_ed25519 git@127.0.0.1 id"
    )
    assert shell.rc != 0


@pytest.mark.parametrize(
    "where",
    [
        "journalctl --no-pager -o cat",
        "cat /var/log/github-repo-monitor/audit.jsonl /var/lib/github-repo-monitor/state.json",
        "cat /etc/github-repo-monitor/config.json /etc/systemd/system/github-repo-monitor.service",
        "ps auxwwe",
        "cat /proc/$(systemctl show -p MainPID --value github-repo-monitor)/environ | tr '\\0' '\\n'",
        "find /etc /var /run /usr/local /opt /tmp /root -xdev -type f -perm -o=r "
        "-exec grep -l glpat-molecule {} + 2>/dev/null || true",
    ],
)
def test_the_repository_token_appears_nowhere(host, where):
    out = host.run(where).stdout
    assert REPO_TOKEN not in out
    assert "glpat-molecule" not in out
