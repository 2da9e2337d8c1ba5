"""Private repositories through the deploy engine, against real git servers that require authentication:
Debian's sshd with a git-shell-only deploy key, and git's smart HTTP (`git http-backend`) with Basic auth.
The fetch works with the credential, fails clearly without it or with a wrong one, and the credential never
shows in a process's argv, the mirror's .git/config, the audit log, the monitor's answer or the container."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import Defaults, parse_apps
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._deploy import run_git
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._repo_auth import RepoCredentials
from tests import git_ssh
from tests.fake_github.server import FakeGitHub
from tests.git_server import GitServer
from tests.unit.plugins.module_utils import test__deploy as base
from tests.unit.plugins.module_utils.test__repo_auth import rsa_pem

world = base.world  # the engine with a fake Docker, two commits in tmp/work
TOKEN = "glpat-Sup3rS3cretT0kenValue"


def push_to(server: GitServer, world) -> None:
    server.create("acme/hello")
    base.git("push", "-q", str(server.root / "acme/hello.git"), "HEAD:refs/heads/main", cwd=world.tmp / "work")


def credentials(world, **kwargs) -> RepoCredentials:
    """The engine's credentials under tmp (owned by the user running the tests)."""
    creds = RepoCredentials(str(world.tmp / "repo-auth"), str(world.tmp / "known_hosts"), owner=os.getuid(), **kwargs)
    world.engine.credentials = creds
    return creds


def keep(world, app: str, name: str, data: bytes) -> None:
    directory = world.tmp / "repo-auth" / app
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    path.chmod(0o600)


class Watcher:
    """Records every argv the engine's git runner starts and samples /proc/*/cmdline while it runs."""

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []
        self.cmdlines: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def runner(self, argv, cwd, env=None):
        self.argvs.append(list(argv))
        return run_git(argv, cwd, env)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit():
                    with contextlib.suppress(OSError):
                        self.cmdlines.add((proc / "cmdline").read_bytes())
            self._stop.wait(0.002)  # a sample every few ms, not a busy loop on a shared machine

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def everything_written(root: Path) -> bytes:
    """Every regular file under root (state, mirror, logs, answers), concatenated."""
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink())


def assert_nowhere(secret: str, world, watcher: Watcher) -> None:
    forms = [secret.encode(), base64.b64encode(f"oauth2:{secret}".encode()), base64.b64encode(secret.encode())]
    for form in forms:
        assert not any(form in " ".join(argv).encode() for argv in watcher.argvs)
        assert not any(form in cmdline for cmdline in watcher.cmdlines)
        for place in ("state", "results", "deploys.log"):
            path = world.tmp / place
            data = everything_written(path) if path.is_dir() else path.read_bytes()
            assert form not in data, place
    for container in world.docker.containers_by_name.values():
        assert secret not in repr(container.environment)
        assert all("repo-auth" not in str(getattr(m, "get", dict().get)("Source", "")) for m in container.mounts)


# -- HTTPS with a token --------------------------------------------------------------------------------------
def test_a_private_repo_over_https_deploys_with_its_token_and_never_shows_it(world):
    with GitServer(world.tmp / "server", users={"oauth2": TOKEN}) as server:
        push_to(server, world)
        entry = {"name": "hello", "repo": server.url("acme/hello"), "auth": {"token": "vault_t", "username": "oauth2"}}
        (app,) = parse_apps([entry], Defaults(), defined_variables={"vault_t"})
        credentials(world)
        keep(world, "hello", "token", (TOKEN + "\n").encode())
        watcher = Watcher()
        world.engine.git = watcher.runner
        with watcher:
            outcome = world.engine.deploy(app, requested_by="github-repo-monitor")
        assert outcome.status == "deployed", outcome
        assert outcome.sha == world.shas[1]
        assert any(r.method == "POST" and r.path.endswith("git-upload-pack") for r in server.requests())
    assert any(argv[:2] == ["ls-remote", "--exit-code"] for argv in watcher.argvs)
    assert any(argv[0] == "fetch" for argv in watcher.argvs)
    config = (world.tmp / "state/hello/repo.git/config").read_text()
    assert "url" not in config  # fetched by URL: no remote, no header, nothing to leak
    assert "extraheader" not in config.lower()
    assert_nowhere(TOKEN, world, watcher)


def test_https_without_a_token_or_with_a_wrong_one_fails_clearly(world):
    with GitServer(world.tmp / "server", users={"oauth2": TOKEN}) as server:
        push_to(server, world)
        url = server.url("acme/hello")
        credentials(world)
        (public,) = parse_apps([{"name": "hello", "repo": url}], Defaults())
        outcome = world.engine.deploy(public)
        assert outcome.status == "failed"
        assert outcome.reason.startswith("fetch failed: the server asks for credentials: a private repository")
        entry = {"name": "hello", "repo": url, "auth": {"token": "vault_t", "username": "oauth2"}}
        (app,) = parse_apps([entry], Defaults())
        outcome = world.engine.deploy(app)
        assert outcome.reason.startswith("fetch failed: no usable credential for the repository:")
        assert "repo-auth/hello/token is missing (re-run site.yml" in outcome.reason
        keep(world, "hello", "token", b"glpat-an-old-rotated-token\n")
        outcome = world.engine.deploy(app)
        assert outcome.reason.startswith("fetch failed: the server refused the credential of auth.token")
        assert "glpat-an-old-rotated-token" not in repr(outcome.as_dict())
        # rotation: the vault's new value lands in the file (site.yml), the next deploy uses it
        keep(world, "hello", "token", TOKEN.encode())
        assert world.engine.deploy(app).status == "deployed"
    assert not world.docker.created[:-1]  # nothing started before the credential worked


# -- GitHub App installation tokens --------------------------------------------------------------------------
class InstallationTokens(dict):
    """GitServer's user table, answering with what the fake GitHub issued (x-access-token:<token>)."""

    def __init__(self, github: FakeGitHub) -> None:
        super().__init__({"x-access-token": ""})
        self.github = github

    def get(self, user, default=None):
        if user != "x-access-token":
            return default
        live = [t for t, expiry in self.github.installation_tokens.items() if expiry > self.github.clock()]
        return live[-1] if live else default


def test_a_github_app_buys_an_installation_token_for_the_fetch(world):
    private, public = rsa_pem()
    with FakeGitHub() as github, GitServer(world.tmp / "server") as server:
        github.add_app(31, public, 4100)
        server.users = InstallationTokens(github)
        push_to(server, world)
        (token_app,) = parse_apps(
            [{"name": "hello", "repo": server.url("acme/hello"), "auth": {"token": "vault_t"}}], Defaults()
        )
        app = dataclasses.replace(
            token_app,
            repo_auth={"kind": "github_app", "app_id": 31, "installation_id": 4100, "private_key_var": "vault_k"},
        )
        credentials(world, github_api_url=github.url)
        keep(world, "hello", "github-app.pem", private)
        watcher = Watcher()
        world.engine.git = watcher.runner
        with watcher:
            outcome = world.engine.deploy(app)
        assert outcome.status == "deployed", outcome
        (token,) = github.installation_tokens
        assert_nowhere(token, world, watcher)
        # another App's key (not installed there): a clear error, nothing fetched
        stranger, _ = rsa_pem()
        keep(world, "other", "github-app.pem", stranger)
        failed = world.engine.deploy(dataclasses.replace(app, name="other"))
        assert failed.status == "failed"
        assert "GitHub refused the App's JWT for installation 4100 of App 31 (HTTP 401)" in failed.reason


# -- SSH with a deploy key -----------------------------------------------------------------------------------
@pytest.fixture
def ssh_server(tmp_path):
    why = git_ssh.available()
    if why:
        pytest.skip(why)
    with git_ssh.GitSshServer(tmp_path / "ssh") as server:
        yield server


def test_a_private_repo_over_ssh_deploys_with_its_deploy_key_and_the_pinned_host_key(world, ssh_server):
    repos = GitServer(world.tmp / "server")  # bare repositories only; sshd serves them
    push_to(repos, world)
    url = ssh_server.url(repos.root / "acme/hello.git")
    (app,) = parse_apps([{"name": "hello", "repo": url, "auth": {"deploy_key": True}}], Defaults())
    credentials(world)
    shutil.copyfile(ssh_server.known_hosts, world.tmp / "known_hosts")

    # no key on the host yet, a key the forge does not know, no pinned host key: each a clear failure
    outcome = world.engine.deploy(app)
    assert "repo-auth/hello/id_ed25519 is missing" in outcome.reason
    keep(world, "hello", "id_ed25519", ssh_server.stranger_key.read_bytes())
    outcome = world.engine.deploy(app)
    assert outcome.reason.startswith("fetch failed: the server refused the credential of auth.deploy_key"), outcome
    keep(world, "hello", "id_ed25519", ssh_server.client_key.read_bytes())
    (world.tmp / "known_hosts").write_text("")
    outcome = world.engine.deploy(app)
    assert outcome.status == "failed"
    assert "Host key verification failed" in "\n".join(outcome.tail), outcome.tail
    (public,) = parse_apps([{"name": "hello", "repo": url}], Defaults())
    assert "the server asks for credentials" in world.engine.deploy(public).reason
    assert not world.docker.created

    shutil.copyfile(ssh_server.known_hosts, world.tmp / "known_hosts")
    watcher = Watcher()
    world.engine.git = watcher.runner
    with watcher:
        outcome = world.engine.deploy(app)
    assert outcome.status == "deployed", outcome
    assert outcome.sha == world.shas[1]
    assert "url" not in (world.tmp / "state/hello/repo.git/config").read_text()
    key_text = ssh_server.client_key.read_text().splitlines()[1]
    assert_nowhere(key_text, world, watcher)


def test_the_deploy_key_may_run_git_shell_only(ssh_server):
    """The forge side of the lab: the key reads repositories and can open no shell."""
    result = subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={ssh_server.known_hosts}",
         "-i", str(ssh_server.client_key), "-p", str(ssh_server.port), f"{ssh_server.user}@127.0.0.1", "id"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "unrecognized command" in result.stderr
