"""The deploy engine: one app at one commit, from fetch to the edge switch, in one place.

Used by the `app_deploy` module (site.yml, playbooks/deploy.yml) and imported by the host's deployer
(`streamlit_deployer.py`, the monitor's requests) alike, so both take the same path:

    lock -> decide the commit -> fetch exactly it -> build -> start beside the old container -> wait for
    health over HTTP -> run the app's script once (readiness gate) -> switch the edge -> record what serves
    -> drain -> remove the old container -> prune images -> audit record -> answer the monitor

Any failure before the switch removes the new container; the old one keeps serving. The outcome is returned
to the caller and written to the monitor's results directory by the deploy itself (never learned from a log).

What serves is recorded per app (`<state_dir>/<app>/state.json`: the serving SHA and container, SHAs that
failed and why). A deploy without a SHA (site.yml, the restore unit after a reboot or an engine restart)
brings back exactly that SHA: its container is started again if it stopped and the edge re-pointed at its
current address; the branch head is used only for an app that never served, and never a SHA that failed.

Dependencies: the Docker SDK (`docker`, Debian's python3-docker on hosts), git, nginx (via `_nginx_upstream`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import http.client
import json
import os
import shutil
import socket
import stat
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import SHA_RE, AppSpec
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._audit_log import AuditLog
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._egress import TABLE as EGRESS_TABLE
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._egress import (
    Rule,
    app_ruleset,
    extra_hosts,
    interface_name,
    local_address,
    main_ruleset,
    network_name,
    resolve,
)
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._git_source import AuthRefusedError, classify
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._nginx_upstream import Edge, UpstreamError
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._repo_auth import RepoAuthError, RepoCredentials

LABEL_APP = "secure_streamlit.app"
LABEL_SHA = "secure_streamlit.sha"
LABEL_FINGERPRINT = "secure_streamlit.fingerprint"
LABEL_BUILD = "secure_streamlit.build"
PORT = 8501
SWARM_TASK_LABEL = "com.docker.swarm.task.id"  # on every container the swarm runs for a task
IMAGE_REPO = "streamlit-apps"
FAILED_KEPT = 20
OUTPUT_TAIL_LINES = 15
# Directories under state_dir that are the platform's, never an app's.
PLATFORM_DIRS = frozenset({"component", "platform"})
DATABASE_SOCKET = "/run/postgresql"  # where an app finds its database server's socket
STATUS_SNAPSHOT_MOUNT = "/run/secure-streamlit-status"  # where the status app finds the status snapshot


class DeployFailed(Exception):
    """A deploy step failed; `step` names it, `tail` holds the last lines of the failing command's output."""

    def __init__(self, step: str, message: str, tail: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.step = step
        self.message = message
        self.tail = list(tail)


class LockBusy(Exception):
    """Another deploy of the app holds its lock."""


@dataclass(frozen=True)
class Settings:
    """The host-wide settings a deploy reads (the apps role's apps_* variables)."""

    base_image: str = "secure-streamlit/base:bookworm"
    component_wheel: str = ""  # path of the secure component's wheel on the host
    launcher: str = ""  # streamlit_launch.py on the host
    gate: str = ""  # streamlit_gate.py on the host
    streamlit_version: str = "1.67.0"
    uid: int = 10001
    network: str = "streamlit-apps"
    sandbox_origin: str = ""
    state_dir: str = "/var/lib/streamlit-apps"
    secrets_dir: str = "/etc/streamlit-apps/secrets"
    data_dir: str = "/srv/streamlit/apps"  # the apps' persistent data, one directory each
    database_socket_dir: str = "/run/postgresql"  # the host's PostgreSQL listens here, on no TCP port
    egress_dir: str = "/etc/streamlit-apps/egress/apps"  # one nft part per app with egress (root only)
    egress_ruleset: str = "/etc/streamlit-apps/egress/table.nft"  # the table, including every part
    audit_log: str = "/var/log/streamlit/deploys.log"
    lock_dir: str = "/run/lock/streamlit-apps"
    results_dir: str = ""  # the monitor's spool results/ ("" = nobody to answer)
    extra_ca_dir: str = "/usr/local/share/ca-certificates"
    upstream_dir: str = "/etc/nginx/streamlit-upstreams"
    check_candidate: str = "/usr/local/sbin/streamlit-edge-check-candidate"
    health_timeout: float = 180.0
    gate_timeout: float = 120.0
    drain_seconds: float = 3.0
    keep_images: int = 3
    lock_wait_seconds: float = 1800.0
    build_nocache: bool = False
    # An image of cache_image_dockerfile()'s layers (loaded from a saved archive): the builds may reuse its
    # layers (the engine's --cache-from), so a new engine's first build skips the apt and Streamlit installs.
    # "" = none; an image the engine does not have is skipped.
    build_cache_image: str = ""
    log_max_size: str = "10m"
    log_max_file: int = 5
    tmp_size: str = "256m"
    healthcheck_interval: str = "10s"
    healthcheck_timeout: str = "10s"
    healthcheck_retries: int = 3
    healthcheck_start_period: str = "60s"
    show_error_details: str = "none"
    toolbar_mode: str = "viewer"
    # The status app (roles/status, status_app_enabled): the one app given the status snapshot's directory,
    # read-only. "" = none.
    status_app: str = ""
    status_snapshot_dir: str = ""
    # Private repositories: per-app credentials (root-only), the pinned SSH host keys, GitHub's API.
    repo_auth_dir: str = "/etc/streamlit-apps/repo-auth"
    ssh_known_hosts: str = "/etc/streamlit-apps/ssh_known_hosts"
    github_api_url: str = "https://api.github.com"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown deploy settings: {', '.join(unknown)}")
        converted: dict[str, Any] = {}
        for name, value in values.items():
            kind = type(getattr(cls(), name))
            if kind is bool:
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
                converted[name] = value
            elif kind in (int, float):
                if isinstance(value, bool) or not isinstance(value, int | float | str):
                    raise ValueError(f"{name} must be a number")
                converted[name] = kind(value)
            else:
                if not isinstance(value, str):
                    raise ValueError(f"{name} must be text")
                converted[name] = value
        return cls(**converted)


@dataclass
class Outcome:
    """What one deploy did: status deployed, unchanged, failed, or (check mode) would_deploy."""

    app: str
    sha: str
    status: str
    reason: str = ""
    step: str = ""
    previous: list[str] = field(default_factory=list)
    container: str = ""
    seconds: float = 0.0
    tail: list[str] = field(default_factory=list)
    requested_by: str = ""
    commit_at_fault: bool = True  # a failure marks the SHA failed (not for a restore of what served)

    @property
    def changed(self) -> bool:
        return self.status in ("deployed", "would_deploy")

    def as_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "sha": self.sha,
            "status": self.status,
            "reason": self.reason,
            "step": self.step,
            "previous": self.previous,
            "container": self.container,
            "seconds": self.seconds,
            "output_tail": self.tail,
            "requested_by": self.requested_by,
        }


# -- files root writes -------------------------------------------------------------------------------------
def write_file_at(directory: Path, name: str, data: bytes, mode: int, *, group: int | None = None) -> None:
    """Write `directory/name` atomically without following links, the mode set on the descriptor.

    The directory is opened once (O_NOFOLLOW | O_DIRECTORY) and must not be writable by anyone but root: a
    less trusted process can then neither swap it nor a file in it while root writes.
    """
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"not a file name: {name!r}")
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(dir_fd)
        if info.st_uid != 0 and os.geteuid() == 0:
            raise PermissionError(f"{directory} is not owned by root: refusing to write into it")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise PermissionError(f"{directory} is writable by others than its owner: refusing to write into it")
        temp = f".{name}.{uuid.uuid4().hex[:12]}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            if group is not None and os.geteuid() == 0:
                os.fchown(fd, 0, group)
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
            raise
        os.close(fd)
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def ensure_data_dir(root: Path, name: str, uid: int) -> Path:
    """`root/name`, created if missing, owned by `uid` with mode 0700 and never reached through a link.

    `root` is root's own (made 0711 if missing, refused if another user may write into it): the app's uid
    owns what is inside its directory and could otherwise swap the directory for a link to a file root
    then chowns.
    """
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"not a directory name: {name!r}")
    root.mkdir(mode=0o711, parents=True, exist_ok=True)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(root_fd)
        if os.geteuid() == 0 and info.st_uid != 0:
            raise PermissionError(f"{root} is not owned by root: refusing to create app data in it")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise PermissionError(f"{root} is writable by others than its owner: refusing to create app data in it")
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=root_fd)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
        try:
            mine = os.fstat(fd)
            if os.geteuid() == 0 and (mine.st_uid, mine.st_gid) != (uid, uid):
                os.fchown(fd, uid, uid)
            if stat.S_IMODE(mine.st_mode) != 0o700:
                os.fchmod(fd, 0o700)
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)
    return root / name


def read_bytes(path: Path) -> bytes | None:
    """A regular file's bytes, never through a link; None when it is missing or not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read()
    finally:
        os.close(fd)


def read_json(path: Path) -> dict[str, Any]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    with os.fdopen(fd, "rb") as handle:
        try:
            value = json.loads(handle.read(1 << 20))
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def tail_lines(text: str, count: int = OUTPUT_TAIL_LINES) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return [line[:400] for line in lines[-count:]]


# -- the image ---------------------------------------------------------------------------------------------
def cache_image_dockerfile(settings: Settings) -> str:
    """The first layers of every app image (the OS packages, the app user, the venv, Streamlit): nothing of an
    app or of the component. An image built from this text (scripts/app-cache-image.sh) lets an engine that
    never built an app image reuse these layers (Settings.build_cache_image)."""
    return f"""# Written by secure_streamlit.hosting: the layers every app image starts with.
FROM {settings.base_image}
USER root
ENV DEBIAN_FRONTEND=noninteractive \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1
COPY extra-ca/ /usr/local/share/ca-certificates/
RUN set -eu; \\
    apt-get update -qq; \\
    apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates >/dev/null; \\
    rm -rf /var/lib/apt/lists/*; \\
    update-ca-certificates >/dev/null; \\
    groupadd --system --gid {settings.uid} app; \\
    useradd --system --uid {settings.uid} --gid {settings.uid} --home-dir /nonexistent --no-create-home \\
      --shell /usr/sbin/nologin app; \\
    python3 -m venv /opt/venv
RUN /opt/venv/bin/pip install -q "streamlit=={settings.streamlit_version}" \\
    && echo "streamlit=={settings.streamlit_version}" > /opt/venv/constraints.txt
"""


def dockerfile(app: AppSpec, sha: str, settings: Settings, wheel_name: str) -> str:
    """The image of one app at one commit. Layers before the app's requirements are the same for every app
    and commit (the engine's build cache reuses them); Streamlit's settings are flags, so they win over any
    .streamlit/config.toml in the repository."""
    python_check = ""
    if app.python:
        python_check = (
            'RUN /opt/venv/bin/python -c \'import sys; v = "%d.%d" % sys.version_info[:2]; '
            f'sys.exit(0 if v == "{app.python}" else "app {app.name} asks for python {app.python}, '
            "the base image has \" + v)'\n"
        )
    flags = [
        f"--server.port={PORT}",
        "--server.address=0.0.0.0",
        "--server.headless=true",
        f"--server.baseUrlPath={app.base_url_path}",
        "--server.enableXsrfProtection=true",
        "--server.enableCORS=true",
        f"--server.maxUploadSize={app.upload_max_mb}",
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
        "--browser.gatherUsageStats=false",
        "--global.developmentMode=false",
        f"--client.showErrorDetails={settings.show_error_details}",
        f"--client.toolbarMode={settings.toolbar_mode}",
    ]
    entrypoint = json.dumps(["/opt/venv/bin/python", "/opt/streamlit_launch.py", "run", app.entrypoint, *flags])
    first_layers = cache_image_dockerfile(settings).split("\n", 1)[1]  # without its comment line
    return f"""# Written by secure_streamlit.hosting's deploy engine: {app.name} at {sha}.
{first_layers}COPY component/{wheel_name} /tmp/component/
RUN /opt/venv/bin/pip install -q -c /opt/venv/constraints.txt /tmp/component/{wheel_name} && rm -rf /tmp/component
COPY streamlit_launch.py streamlit_gate.py /opt/
{python_check}COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -q -c /opt/venv/constraints.txt -r /tmp/requirements.txt && rm /tmp/requirements.txt
ADD app.tar /app/
RUN test -f "/app/{app.entrypoint}" \\
    || {{ echo "entrypoint {app.entrypoint} is not in the repository at {sha}" >&2; exit 1; }}
LABEL {LABEL_APP}="{app.name}" \\
      {LABEL_SHA}="{sha}" \\
      org.opencontainers.image.revision="{sha}" \\
      org.opencontainers.image.source="{app.url}"
ENV HOME=/tmp \\
    SECURE_CONTEXT_SANDBOX_ORIGIN="{settings.sandbox_origin}"
WORKDIR /app
USER {settings.uid}:{settings.uid}
EXPOSE {PORT}
ENTRYPOINT {entrypoint}
"""


def health_path(app: AppSpec) -> str:
    return f"/{app.base_url_path}/_stcore/health" if app.base_url_path else "/_stcore/health"


def healthcheck_command(app: AppSpec) -> list[str]:
    """Docker's own runtime check, for `docker ps` and the engine: bash's /dev/tcp, no interpreter started
    per probe (the image has no curl). The deploy's gate does not rely on it."""
    request = f"GET {health_path(app)} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n"
    script = (
        f"exec 3<>/dev/tcp/127.0.0.1/{PORT} && printf '{request}' >&3 && read -r status <&3 "
        "&& [[ $status == *' 200 '* ]]"
    )
    return ["CMD", "/bin/bash", "-c", script]


def duration_ns(text: str) -> int:
    units = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * units[unit]
    raise ValueError(f"not a duration like 10s: {text!r}")


# -- git ---------------------------------------------------------------------------------------------------
GitRunner = Callable[..., "subprocess.CompletedProcess[str]"]  # (argv, cwd, env=None)


def run_git(
    argv: Sequence[str], cwd: Path | None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """git with a clean environment; `env` adds a private repository's credential settings (never argv)."""
    base = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/nonexistent",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
    }
    return subprocess.run(
        ["git", "-c", "core.hooksPath=/dev/null", *argv],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


NftRunner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_nft(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/usr/sbin/nft", *argv], capture_output=True, text=True, check=False, timeout=120, env={"LANG": "C"}
    )


def lookup_ipv4(host: str) -> list[str]:
    """The host's own resolver's IPv4 answers for a name (none when it does not resolve)."""
    try:
        answers = socket.getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sorted({str(answer[4][0]) for answer in answers})


# -- the engine --------------------------------------------------------------------------------------------
class Engine:
    """Deploys apps on this host. Every collaborator is injectable (tests use fakes for Docker and git)."""

    def __init__(
        self,
        settings: Settings,
        docker_client: Any,
        *,
        edge: Edge | None = None,
        git: GitRunner = run_git,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        probe: Callable[[str, float], int] | None = None,
        log: Callable[[str], None] = lambda _message: None,
        nft: NftRunner = run_nft,
        lookup: Callable[[str], Sequence[str]] = lookup_ipv4,
        credentials: RepoCredentials | None = None,
        is_local: Callable[[str], bool] = local_address,
        swarm: Any | None = None,
    ) -> None:
        self.settings = settings
        # The swarm backend (_swarm_backend.SwarmBackend) on the swarm's first manager, None elsewhere: an app
        # with replicas above 1 is a swarm service, deployed only where it is set.
        self.swarm = swarm
        self.credentials = credentials or RepoCredentials(
            settings.repo_auth_dir, settings.ssh_known_hosts, settings.github_api_url, clock=clock
        )
        self.docker = docker_client
        self.edge = edge or Edge(
            upstream_dir=Path(settings.upstream_dir),
            check_candidate=Path(settings.check_candidate) if settings.check_candidate else None,
        )
        self.git = git
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.probe = probe or http_status
        self.log = log
        self.nft = nft
        self.lookup = lookup
        self.is_local = is_local  # a destination on this host is refused (_egress.HOST_LOCAL_REASON)
        self.audit = AuditLog(Path(settings.audit_log), clock)

    # -- per-app state
    def app_dir(self, app: str) -> Path:
        return Path(self.settings.state_dir) / app

    def load_state(self, app: str) -> dict[str, Any]:
        state = read_json(self.app_dir(app) / "state.json")
        serving = state.get("serving") if isinstance(state.get("serving"), dict) else None
        failed = state.get("failed") if isinstance(state.get("failed"), dict) else {}
        return {
            "serving": serving if serving and SHA_RE.fullmatch(str(serving.get("sha", ""))) else None,
            "failed": {k: v for k, v in failed.items() if SHA_RE.fullmatch(str(k)) and isinstance(v, dict)},
        }

    def save_state(self, app: str, state: Mapping[str, Any]) -> None:
        directory = self.app_dir(app)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_file_at(directory, "state.json", (json.dumps(state, indent=2, sort_keys=True) + "\n").encode(), 0o600)

    # -- the lock
    @contextlib.contextmanager
    def lock(self, app: str) -> Any:
        """flock on <lock_dir>/<app>.lock: released by the kernel when the holder dies (no stale locks)."""
        directory = Path(self.settings.lock_dir)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(directory / f"{app}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            deadline = self.monotonic() + self.settings.lock_wait_seconds
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES) or self.monotonic() >= deadline:
                        raise LockBusy(f"another deploy of {app} holds {directory}/{app}.lock") from exc
                    self.sleep(1.0)
            yield
        finally:
            os.close(fd)

    # -- what runs
    def containers(self, app: str) -> list[Any]:
        return list(self.docker.containers.list(all=True, filters={"label": f"{LABEL_APP}={app}"}))

    def address(self, container: Any) -> str:
        container.reload()
        networks = container.attrs.get("NetworkSettings", {}).get("Networks", {}) or {}
        address = (networks.get(self.settings.network) or {}).get("IPAddress") or ""
        app = (container.labels or {}).get(LABEL_APP, "") if hasattr(container, "labels") else ""
        if not address and app:
            # An app with egress runs alone on a network of its own.
            with contextlib.suppress(ValueError):
                address = (networks.get(network_name(app)) or {}).get("IPAddress") or ""
        return address

    def remote_env(self, app: AppSpec) -> dict[str, str]:
        """git's environment additions for this app's repository ({} when it is public)."""
        try:
            return self.credentials.git_env(app.name, app.repo_auth)
        except RepoAuthError as exc:
            raise DeployFailed("fetch", f"no usable credential for the repository: {exc}") from None

    def remote_git(self, app: AppSpec, argv: Sequence[str], cwd: Path | None) -> subprocess.CompletedProcess[str]:
        env = self.remote_env(app)
        return self.git(argv, cwd, env) if env else self.git(argv, cwd)

    def refused(self, app: AppSpec, stderr: str) -> DeployFailed | None:
        """A clear failure when the server refused the fetch for want of (valid) credentials."""
        if classify(stderr, str(app.url)) is not AuthRefusedError:
            return None
        kind = app.repo_auth.get("kind")
        hint = (
            f"the server refused the credential of auth.{kind} (is it still valid and allowed to read the repo?)"
            if kind
            else "the server asks for credentials: a private repository needs auth (deploy_key, token, github_app)"
        )
        return DeployFailed("fetch", hint, tail_lines(stderr))

    def branch_head(self, app: AppSpec) -> str:
        result = self.remote_git(app, ["ls-remote", "--exit-code", str(app.url), f"refs/heads/{app.branch}"], None)
        if result.returncode != 0:
            raise self.refused(app, result.stderr or "") or DeployFailed(
                "fetch", f"cannot read the head of {app.branch}", tail_lines(result.stderr)
            )
        sha = result.stdout.split()[0] if result.stdout.split() else ""
        if not SHA_RE.fullmatch(sha):
            raise DeployFailed("fetch", f"the server gave no commit for {app.branch}")
        return sha

    def fingerprints(self, app: AppSpec, sha: str, rules: Sequence[Rule] | None = None) -> tuple[str, str, str]:
        """(Dockerfile text, build fingerprint, run fingerprint): a changed input or setting redeploys. The
        egress rules (names resolved) are part of the run: a name whose address moved redeploys."""
        if rules is None:
            rules = self.egress_rules(app)
        wheel = Path(self.settings.component_wheel)
        text = dockerfile(app, sha, self.settings, wheel.name)
        cas = sorted(sha256_file(p) for p in self.extra_cas())
        build = {
            "dockerfile": text,
            "wheel": sha256_file(wheel) if wheel.is_file() else wheel.name,
            "launcher": sha256_file(Path(self.settings.launcher)) if self.settings.launcher else "",
            "gate": sha256_file(Path(self.settings.gate)) if self.settings.gate else "",
            "cas": cas,
            "requirements": app.requirements,
        }
        build_fp = hashlib.sha256(json.dumps(build, sort_keys=True).encode()).hexdigest()
        run = {
            "build": build_fp,
            "cpus": app.cpus,
            "memory": app.memory,
            "pids": app.pids,
            "env": app.env,
            "secrets": sorted(app.secrets),
            "network": self.app_network(app),
            "egress": [[r.network, r.port, r.host] for r in rules],
            "uid": self.settings.uid,
            "health": [
                *healthcheck_command(app),
                self.settings.healthcheck_interval,
                self.settings.healthcheck_timeout,
                str(self.settings.healthcheck_retries),
                self.settings.healthcheck_start_period,
            ],
            "logs": [self.settings.log_max_size, self.settings.log_max_file],
            "tmp": self.settings.tmp_size,
            "data": [app.data_mount, self.settings.data_dir] if app.data_mount else [],
            "database": [app.database_name, self.settings.database_socket_dir] if app.database else [],
        }
        if self.status_snapshot_for(app):
            # Only for the status app: every other app's fingerprint stays what it was (no redeploy).
            run["status_snapshot"] = self.settings.status_snapshot_dir
        run_fp = hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()
        return text, build_fp, run_fp

    def status_snapshot_for(self, app: AppSpec) -> bool:
        """Whether `app` is the status app, which alone gets the status snapshot's directory."""
        return bool(self.settings.status_app) and app.name == self.settings.status_app

    def extra_cas(self) -> list[Path]:
        directory = Path(self.settings.extra_ca_dir)
        return sorted(p for p in directory.glob("*.crt") if p.is_file()) if directory.is_dir() else []

    def decide(self, app: AppSpec, sha: str | None) -> tuple[str, str]:
        """The commit to run and why: requested, else the one serving, else the branch head (never a failed one)."""
        state = self.load_state(app.name)
        if sha:
            if not SHA_RE.fullmatch(sha):
                raise DeployFailed("request", "the sha is not 40 lower-case hex digits")
            return sha, "requested"
        if state["serving"]:
            return state["serving"]["sha"], "serving before"
        for container in self.containers(app.name):  # a host deployed before the engine kept its state
            if container.status == "running" and SHA_RE.fullmatch(container.labels.get(LABEL_SHA, "")):
                return container.labels[LABEL_SHA], "running"
        head = self.branch_head(app)
        if head in state["failed"]:
            raise DeployFailed(
                "decide", f"the branch head {head} failed before ({state['failed'][head].get('reason', '')[:200]})"
            )
        return head, "branch head"

    # -- the deploy
    def deploy(
        self, app: AppSpec, sha: str | None = None, *, requested_by: str = "", check_mode: bool = False
    ) -> Outcome:
        """Deploy `app` at `sha` (None: what served before, else the branch head). Never raises for a failed
        deploy: the outcome says why, and is recorded and answered."""
        started = self.monotonic()
        try:
            target, _why = self.decide(app, sha)
        except DeployFailed as exc:
            outcome = Outcome(app.name, sha or "", "failed", f"{exc.step} failed: {exc.message}", exc.step)
            outcome.tail, outcome.requested_by = exc.tail, requested_by
            if not check_mode:
                self.finish(app, outcome, record_failure=bool(sha))
            return outcome
        if check_mode:
            return self.plan(app, target, requested_by)
        try:
            with self.lock(app.name):
                outcome = self._deploy_locked(app, target, requested_by)
        except LockBusy as exc:
            outcome = Outcome(app.name, target, "failed", f"lock failed: {exc}", "lock", requested_by=requested_by)
        outcome.seconds = round(self.monotonic() - started, 1)
        self.finish(app, outcome, record_failure=outcome.commit_at_fault and outcome.step not in ("lock",))
        return outcome

    def plan(self, app: AppSpec, sha: str, requested_by: str) -> Outcome:
        try:
            _text, _build_fp, run_fp = self.fingerprints(app, sha)
        except DeployFailed as exc:
            return Outcome(app.name, sha, "failed", f"{exc.step} failed: {exc.message}", exc.step)
        if is_service(app):
            if self.swarm is None:
                return self.no_swarm(app, sha, requested_by)
            serving_sha, _fp = self.swarm.serving(app)
            status = "unchanged" if self.swarm.up_to_date(app, sha, self.service_fp(app, run_fp)) else "would_deploy"
            return Outcome(
                app.name, sha, status, previous=[serving_sha] if serving_sha else [], requested_by=requested_by
            )
        serving = self.serving_container(app.name)
        previous = [serving.labels.get(LABEL_SHA, "")] if serving else []
        status = "unchanged" if self.up_to_date(app, serving, sha, run_fp) else "would_deploy"
        return Outcome(app.name, sha, status, previous=previous, requested_by=requested_by)

    def serving_container(self, app: str) -> Any | None:
        state = self.load_state(app)
        containers = self.containers(app)
        if state["serving"]:
            for container in containers:
                if container.name == state["serving"].get("container"):
                    return container
        running = [c for c in containers if c.status == "running"]
        return running[0] if len(running) == 1 else None

    def container_serves(self, app: AppSpec) -> bool:
        """Whether an app with one replica is served by its own running container (not a swarm task) through
        this host's edge."""
        if is_service(app):
            return False
        container = self.serving_container(app.name)
        if container is None or container.status != "running" or SWARM_TASK_LABEL in (container.labels or {}):
            return False
        address = self.address(container)
        return bool(address) and self.edge.current(app.name) == f"{address}:{PORT}"

    def up_to_date(self, app: AppSpec, container: Any | None, sha: str, run_fp: str) -> bool:
        if container is None or container.status != "running":
            return False
        if container.labels.get(LABEL_SHA) != sha or container.labels.get(LABEL_FINGERPRINT) != run_fp:
            return False
        address = self.address(container)
        return bool(address) and self.edge.current(app.name) == f"{address}:{PORT}"

    # -- swarm services (replicas above 1)
    def service_fp(self, app: AppSpec, run_fp: str) -> str:
        """The fingerprint a service records: the run fingerprint plus its replicas and placement."""
        return str(self.swarm.fingerprint(app, run_fp)) if self.swarm is not None else run_fp

    def no_swarm(self, app: AppSpec, sha: str, requested_by: str) -> Outcome:
        outcome = Outcome(
            app.name,
            sha,
            "failed",
            f"swarm failed: replicas {app.replicas} runs as a swarm service, deployed from the swarm's first "
            "manager only, and this engine has no swarm settings",
            "swarm",
            requested_by=requested_by,
        )
        outcome.commit_at_fault = False
        return outcome

    def secret_files(self, app: AppSpec) -> dict[str, bytes]:
        """The app's secret files as root wrote them (tasks/secrets.yml), for Docker secrets: regular files
        only, never through a link; the values stay in memory."""
        directory = Path(self.settings.secrets_dir) / app.name
        files: dict[str, bytes] = {}
        for name in sorted(app.secrets):
            data = read_bytes(directory / name)
            if data is None:
                raise DeployFailed("secrets", f"the secret file {name} of {app.name} is missing on this host")
            files[name] = data
        return files

    def _deploy_service(self, app: AppSpec, sha: str, requested_by: str) -> Outcome:
        """A swarm service: fetch and build here, start the image once in a throwaway container on this host
        for the health check and the readiness gate, and only then push it and roll the service (the swarm's
        start-first update; a failure rolls back and the old tasks keep serving)."""
        if self.swarm is None:
            return self.no_swarm(app, sha, requested_by)
        service = f"app-{app.name}"
        outcome = Outcome(app.name, sha, "deployed", container=service, requested_by=requested_by)
        step = "swarm"
        trial: Any | None = None
        try:
            serving_sha, _fp = self.swarm.serving(app)  # the engine must answer as a manager
            outcome.previous = [serving_sha] if serving_sha else []
            step = "egress"
            if app.egress:
                raise DeployFailed("egress", "per-app egress is not available to a swarm service")
            text, build_fp, run_fp = self.fingerprints(app, sha, [])
            fingerprint = self.service_fp(app, run_fp)
            step = "swarm"
            if self.swarm.up_to_date(app, sha, fingerprint):
                outcome.status, outcome.reason = "unchanged", "the service runs this commit with these settings"
                self.remember_serving(app.name, sha, service)
                return outcome
            image = f"{IMAGE_REPO}/{app.name}:{sha[:12]}-{build_fp[:8]}"
            step = "fetch"
            build_dir = self.fetch(app, sha, text)
            step = "build"
            self.build(image, build_fp, build_dir)
            step = "secrets"
            secrets = self.secret_files(app)
            # The gate runs once, here, on the image every task will run: a broken commit is refused before
            # the registry or the swarm sees it.
            step = "start"
            name = f"{app.name}-{sha[:12]}-gate"
            for stale in self.containers(app.name):
                if stale.name == name:
                    stale.remove(force=True)  # left by an interrupted deploy
            trial = self.start(app, sha, image, name, run_fp)
            step = "health"
            self.wait_healthy(app, trial)
            step = "gate"
            self.gate(app, trial)
            with contextlib.suppress(Exception):
                trial.remove(force=True)
            trial = None
            step = "service"
            self.swarm.deploy(app, sha, image, build_fp, fingerprint, secrets)
        except Exception as exc:
            failed = self._record_failure(outcome, exc, step, trial)
            # Only the commit's own steps mark it failed; a registry or swarm outage does not.
            outcome.commit_at_fault = failed.step in ("fetch", "build", "start", "health", "gate", "update")
            return outcome
        self.remember_serving(app.name, sha, service)
        # The app's single container from before it had replicas: the service serves now.
        for container in self.containers(app.name):
            if SWARM_TASK_LABEL not in (container.labels or {}):
                with contextlib.suppress(Exception):
                    container.remove(force=True)
        with contextlib.suppress(Exception):
            self.prune(app.name, keep_image=self.docker.images.get(image).id)
        return outcome

    def _record_failure(self, outcome: Outcome, exc: BaseException, step: str, container: Any | None) -> DeployFailed:
        """Mark `outcome` failed at `step`; a container this deploy started is removed, its log tail kept."""
        failed = exc if isinstance(exc, DeployFailed) else DeployFailed(step, describe(exc))
        if container is not None:
            with contextlib.suppress(Exception):
                failed.tail = failed.tail or self.container_tail(container)
                container.remove(force=True)
        outcome.status, outcome.step = "failed", failed.step
        outcome.reason = f"{failed.step} failed: {failed.message}"
        outcome.tail = failed.tail
        return failed

    def _deploy_locked(self, app: AppSpec, sha: str, requested_by: str) -> Outcome:
        if is_service(app):
            return self._deploy_service(app, sha, requested_by)
        try:
            rules = self.egress_rules(app)
        except DeployFailed as exc:
            outcome = Outcome(app.name, sha, "failed", f"{exc.step} failed: {exc.message}", exc.step)
            outcome.requested_by, outcome.commit_at_fault = requested_by, False
            return outcome
        text, build_fp, run_fp = self.fingerprints(app, sha, rules)
        name = f"{app.name}-{sha[:12]}-{run_fp[:6]}"
        image = f"{IMAGE_REPO}/{app.name}:{sha[:12]}-{build_fp[:8]}"
        old = self.containers(app.name)
        previous = sorted({c.labels.get(LABEL_SHA, "") for c in old if c.status == "running"} - {""})
        outcome = Outcome(app.name, sha, "deployed", previous=previous, container=name, requested_by=requested_by)
        existing = next((c for c in old if c.name == name), None)
        try:
            # Before anything starts on the app's network: its rules are in place (fail closed).
            self.apply_egress(app, rules)
        except DeployFailed as exc:
            outcome.status, outcome.step, outcome.reason = "failed", exc.step, f"{exc.step} failed: {exc.message}"
            outcome.tail, outcome.commit_at_fault = exc.tail, False
            return outcome
        # Already serving with these settings, or serving but the edge lost it (a restart moved its address).
        if existing is not None and existing.status == "running":
            address = self.address(existing)
            if address and self.edge.current(app.name) == f"{address}:{PORT}":
                outcome.status, outcome.reason = "unchanged", "already serving with these settings"
                self.remember_serving(app.name, sha, name)
                return outcome
        step = "start"
        new: Any | None = None
        fresh = True
        try:
            if app.data_mount:
                step = "data"
                ensure_data_dir(Path(self.settings.data_dir), app.name, self.settings.uid)
            if existing is not None and existing.name == self.recorded_container(app.name):
                # The container that served before (a reboot or an engine restart stopped it): start it again.
                step, fresh = "restart", False
                if existing.status != "running":
                    existing.start()
                new = existing
                outcome.reason = "restarted the container that served before"
            else:
                if existing is not None:
                    existing.remove(force=True)  # left by an interrupted deploy
                step = "fetch"
                build_dir = self.fetch(app, sha, text)
                step = "build"
                self.build(image, build_fp, build_dir)
                step = "start"
                new = self.start(app, sha, image, name, run_fp, rules)
            step = "health"
            address = self.wait_healthy(app, new)
            if fresh:
                step = "gate"
                self.gate(app, new)
            step = "switch"
            self.edge.switch(app.name, f"{address}:{PORT}")
        except (DeployFailed, UpstreamError, Exception) as exc:
            self._record_failure(outcome, exc, step, new if fresh else None)
            outcome.commit_at_fault = fresh  # a restore that fails says nothing about the commit
            return outcome
        self.remember_serving(app.name, sha, name)
        self.retire(app, keep=name, had_old=any(c.name != name and c.status == "running" for c in old))
        self.prune(app.name, keep_image=new.attrs.get("Image", "") if new is not None else "")
        return outcome

    def recorded_container(self, app: str) -> str:
        serving = self.load_state(app)["serving"]
        return str(serving.get("container", "")) if serving else ""

    def remember_serving(self, app: str, sha: str, container: str) -> None:
        state = self.load_state(app)
        if not state["serving"] or state["serving"].get("container") != container:
            state["serving"] = {"sha": sha, "container": container, "since": iso(self.clock())}
        state["failed"].pop(sha, None)
        self.save_state(app, state)

    # -- egress
    def app_network(self, app: AppSpec) -> str:
        """The shared internal network (no route out), or the app's own bridge when it has egress."""
        return network_name(app.name) if app.egress else self.settings.network

    def egress_rules(self, app: AppSpec) -> list[Rule]:
        try:
            return resolve(app.egress, self.lookup, self.is_local)
        except ValueError as exc:
            raise DeployFailed("egress", str(exc)) from exc

    def apply_egress(self, app: AppSpec, rules: Sequence[Rule]) -> None:
        """Write the app's part of the egress table (or remove it), reload the table, and make the app's
        own network. An app without egress that never had any touches nothing."""
        directory = Path(self.settings.egress_dir)
        part = directory / f"{app.name}.nft"
        if not app.egress:
            if part.is_file() or part.is_symlink():
                part.unlink()
                self.reload_egress()
            return
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = app_ruleset(app.name, rules).encode()
        changed = read_bytes(part) != text
        if changed:
            write_file_at(directory, part.name, text, 0o600)
        # Reloading resets every app's counters: only when the rules changed or the kernel lost them.
        chain = f"app_{interface_name(app.name)}"
        if changed or self.nft(["list", "chain", "inet", EGRESS_TABLE, chain]).returncode != 0:
            self.reload_egress()
        self.ensure_network(app)

    def reload_egress(self) -> None:
        """Rewrite the table file and load it: checked first (`nft -c`), then one atomic `nft -f`."""
        ruleset = Path(self.settings.egress_ruleset)
        ruleset.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_file_at(ruleset.parent, ruleset.name, main_ruleset(self.settings.egress_dir).encode(), 0o600)
        for argv, what in ((["-c", "-f", str(ruleset)], "check"), (["-f", str(ruleset)], "load")):
            result = self.nft(argv)
            if result.returncode != 0:
                raise DeployFailed("egress", f"nft could not {what} {ruleset}", tail_lines(result.stderr))

    def ensure_network(self, app: AppSpec) -> None:
        """The app's own bridge (not internal: it has a route out, filtered by the egress table), named so
        that the table can key on its interface."""
        name, interface = network_name(app.name), interface_name(app.name)
        found = [n for n in self.docker.networks.list(names=[name]) if n.name == name]
        if found:
            options = (found[0].attrs or {}).get("Options") or {}
            if options.get("com.docker.network.bridge.name") != interface:
                raise DeployFailed("egress", f"network {name} exists without the bridge interface {interface}")
            return
        self.docker.networks.create(
            name,
            driver="bridge",
            internal=False,
            options={
                "com.docker.network.bridge.name": interface,
                "com.docker.network.bridge.enable_icc": "false",
            },
            labels={LABEL_APP: app.name},
        )

    # -- steps
    def fetch(self, app: AppSpec, sha: str, dockerfile_text: str) -> Path:
        """Exactly that commit's tree into a fresh build context (no .git in the image)."""
        work = self.app_dir(app.name)
        work.mkdir(mode=0o700, parents=True, exist_ok=True)
        repo = work / "repo.git"
        if not (repo / "HEAD").is_file():
            shutil.rmtree(repo, ignore_errors=True)
            self._git_ok(["init", "--bare", "--quiet", str(repo)], None, "fetch", "cannot create the local mirror")
        refspec = f"+refs/heads/{app.branch}:refs/remotes/origin/{app.branch}"
        # By URL, never a configured remote: the mirror's config holds no URL and no credential.
        fetched = self.remote_git(app, ["fetch", "--quiet", "--no-tags", str(app.url), refspec], repo)
        denied = self.refused(app, fetched.stderr or "") if fetched.returncode != 0 else None
        if denied is not None:
            raise denied
        if not self._has_commit(repo, sha):
            # Not on the branch (a manual rollback to an older or another commit): ask for it by name.
            by_name = self.remote_git(app, ["fetch", "--quiet", "--no-tags", str(app.url), sha], repo)
            if not self._has_commit(repo, sha):
                tail = tail_lines((fetched.stderr or "") + "\n" + (by_name.stderr or ""))
                raise DeployFailed("fetch", f"commit {sha} is not on the server", tail)
        build = work / "build"
        shutil.rmtree(build, ignore_errors=True)
        for directory in (build, build / "component", build / "extra-ca"):
            directory.mkdir(mode=0o700)
        self._git_ok(["archive", "--format=tar", "-o", str(build / "app.tar"), sha], repo, "fetch", "git archive")
        requirements = self._file_in_tree(repo, sha, app.requirements)
        (build / "requirements.txt").write_bytes(requirements or b"")
        wheel = Path(self.settings.component_wheel)
        shutil.copyfile(wheel, build / "component" / wheel.name)
        for source, name in (
            (self.settings.launcher, "streamlit_launch.py"),
            (self.settings.gate, "streamlit_gate.py"),
        ):
            shutil.copyfile(source, build / name)
            (build / name).chmod(0o644)  # the app's user runs them; the deployer's umask is 0027
        for ca in self.extra_cas():
            shutil.copyfile(ca, build / "extra-ca" / ca.name)
        (build / "Dockerfile").write_text(dockerfile_text)
        # File modes are part of the engine's layer cache key (COPY): the same for every caller, whatever its
        # umask (the deployer's is 0027, site.yml's module's 0022), or a deploy after the other caller's
        # misses the cache from the first COPY on and rebuilds every layer (apt, pip, Streamlit).
        for path in build.rglob("*"):
            if path.is_file() and not path.is_symlink():
                path.chmod(0o644)
        return build

    def _git_ok(self, argv: Sequence[str], cwd: Path | None, step: str, what: str) -> str:
        result = self.git(argv, cwd)
        if result.returncode != 0:
            raise DeployFailed(step, what, tail_lines(result.stderr))
        return result.stdout

    def _has_commit(self, repo: Path, sha: str) -> bool:
        result = self.git(["cat-file", "-t", sha], repo)
        return result.returncode == 0 and result.stdout.strip() == "commit"

    def _file_in_tree(self, repo: Path, sha: str, path: str) -> bytes | None:
        """A regular file of the commit (a symlink or a directory there is treated as absent)."""
        listing = self.git(["ls-tree", sha, "--", path], repo)
        parts = listing.stdout.split()
        if listing.returncode != 0 or len(parts) < 3 or parts[0] not in ("100644", "100755") or parts[1] != "blob":
            return None
        result = subprocess.run(
            ["git", "cat-file", "blob", parts[2]], cwd=repo, capture_output=True, check=False, timeout=120
        )
        return result.stdout if result.returncode == 0 else None

    def build(self, image: str, build_fp: str, build_dir: Path) -> None:
        with contextlib.suppress(Exception):
            self.docker.images.get(image)
            return  # built before (a redeploy with other run settings, or a rollback)
        try:
            self.docker.images.build(
                path=str(build_dir),
                tag=image,
                rm=True,
                forcerm=True,
                pull=False,
                nocache=self.settings.build_nocache,
                cache_from=[self.settings.build_cache_image] if self.settings.build_cache_image else None,
                labels={LABEL_BUILD: build_fp},
            )
        except Exception as exc:  # docker.errors.BuildError, APIError
            log_lines = []
            for chunk in getattr(exc, "build_log", None) or []:
                if isinstance(chunk, dict):
                    log_lines.append(str(chunk.get("stream") or chunk.get("error") or ""))
            tail = tail_lines("".join(log_lines))
            raise DeployFailed("build", describe(exc), tail) from exc
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)

    def start(self, app: AppSpec, sha: str, image: str, name: str, run_fp: str, rules: Sequence[Rule] = ()) -> Any:
        from docker.types import LogConfig, Mount

        settings = self.settings
        mounts = [
            Mount(target="/run/secrets", source=str(Path(settings.secrets_dir) / app.name), type="bind", read_only=True)
        ]
        if app.data_mount:
            # Read-write, the one place an app keeps anything across deploys and rollbacks.
            mounts.append(
                Mount(
                    target=app.data_mount, source=str(Path(settings.data_dir) / app.name), type="bind", read_only=False
                )
            )
        if self.status_snapshot_for(app) and settings.status_snapshot_dir:
            # The directory (not the file: the timer replaces the file by a rename), read-only: the status
            # app reads what root's timer exported and can change nothing.
            mounts.append(
                Mount(target=STATUS_SNAPSHOT_MOUNT, source=settings.status_snapshot_dir, type="bind", read_only=True)
            )
        environment = {key: str(value) for key, value in app.env.items()}
        if app.database:
            # The server's socket directory, read-only: the only way to the database (no TCP listener), and
            # the password in a file libpq reads itself, never in the environment.
            mounts.append(
                Mount(target=DATABASE_SOCKET, source=settings.database_socket_dir, type="bind", read_only=True)
            )
            environment.update(
                PGHOST=DATABASE_SOCKET,
                PGDATABASE=app.database_name,
                PGUSER=app.database_name,
                PGPASSFILE="/run/secrets/pgpass",
                DATABASE_URL_FILE="/run/secrets/database-url",
            )
        return self.docker.containers.run(
            image,
            name=name,
            detach=True,
            labels={LABEL_APP: app.name, LABEL_SHA: sha, LABEL_FINGERPRINT: run_fp},
            user=f"{settings.uid}:{settings.uid}",
            read_only=True,
            tmpfs={"/tmp": f"rw,noexec,nosuid,nodev,size={settings.tmp_size}"},  # noqa: S108
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            nano_cpus=int(app.cpus * 1e9),
            cpu_shares=512,
            mem_limit=app.memory,
            memswap_limit=app.memory,
            pids_limit=app.pids,
            environment=environment,
            mounts=mounts,
            network=self.app_network(app),
            # Allowed names, resolved on the host at deploy time: the container has no resolver to ask.
            extra_hosts=extra_hosts(rules) or None,
            healthcheck={
                "test": healthcheck_command(app),
                "interval": duration_ns(settings.healthcheck_interval),
                "timeout": duration_ns(settings.healthcheck_timeout),
                "retries": settings.healthcheck_retries,
                "start_period": duration_ns(settings.healthcheck_start_period),
            },
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 5},
            log_config=LogConfig(
                type="json-file",
                config={"max-size": settings.log_max_size, "max-file": str(settings.log_max_file)},
            ),
        )

    def wait_healthy(self, app: AppSpec, container: Any) -> str:
        """Probe Streamlit's health endpoint over HTTP from here until it answers 200, the container stops, or
        the deadline for the whole wait passes (one slow answer on a busy host is not a failure)."""
        deadline = self.monotonic() + self.settings.health_timeout
        last = "no answer yet"
        container.reload()
        restarts = container.attrs.get("RestartCount", 0)  # a restored container may have restarted before
        while True:
            container.reload()
            state = container.attrs.get("State", {})
            if state.get("Status") in ("exited", "dead") or container.attrs.get("RestartCount", 0) > restarts:
                raise DeployFailed(
                    "health",
                    f"the container stopped (exit code {state.get('ExitCode')})",
                    self.container_tail(container),
                )
            address = self.address(container)
            if address:
                url = f"http://{address}:{PORT}{health_path(app)}"
                try:
                    status = self.probe(url, 10.0)
                    if status == 200:
                        return address
                    last = f"HTTP {status}"
                except OSError as exc:
                    last = describe(exc)
            if self.monotonic() >= deadline:
                raise DeployFailed(
                    "health",
                    f"no healthy answer within {self.settings.health_timeout:g} s ({last})",
                    self.container_tail(container),
                )
            self.sleep(1.0)

    def gate(self, app: AppSpec, container: Any) -> None:
        """Run the app's script once in the new container (Streamlit's AppTest): an exception at import or at
        the top of the script fails the deploy with its type and message (not its local variables)."""
        timeout = max(10, int(self.settings.gate_timeout))
        command = [
            "/usr/bin/timeout",
            "-k",
            "5",
            str(timeout + 5),
            "/opt/venv/bin/python",
            "/opt/streamlit_gate.py",
            "--timeout",
            str(timeout),
            f"/app/{app.entrypoint}",
        ]
        code, output = container.exec_run(command, user=f"{self.settings.uid}:{self.settings.uid}", workdir="/app")
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        verdict: dict[str, Any] = {}
        for line in reversed(text.splitlines()):
            with contextlib.suppress(ValueError):
                candidate = json.loads(line)
                if isinstance(candidate, dict) and "gate" in candidate:
                    verdict = candidate
                    break
        if code == 0 and verdict.get("ok") is True:
            return
        if verdict.get("exceptions"):
            first = verdict["exceptions"][0]
            message = f"the script raised {first.get('type', 'an exception')}: {first.get('message', '')}"[:600]
            raise DeployFailed(
                "gate", message, [f"{e.get('type')}: {e.get('message')}"[:400] for e in verdict["exceptions"]]
            )
        if code in (124, 137):
            raise DeployFailed("gate", f"the script did not finish within {timeout} s")
        raise DeployFailed("gate", verdict.get("error") or f"the gate exited {code}", tail_lines(text))

    def container_tail(self, container: Any) -> list[str]:
        with contextlib.suppress(Exception):
            raw = container.logs(tail=OUTPUT_TAIL_LINES)
            return tail_lines(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw))
        return []

    def retire(self, app: AppSpec, keep: str, *, had_old: bool) -> None:
        """Let requests in flight on the old container finish, then remove every other container of the app."""
        if had_old and self.settings.drain_seconds > 0:
            self.sleep(self.settings.drain_seconds)
        for container in self.containers(app.name):
            if container.name != keep:
                with contextlib.suppress(Exception):
                    container.remove(force=True)

    def prune(self, app: str, keep_image: str) -> None:
        """Keep the newest `keep_images` images of the app (the running one always)."""
        images = self.docker.images.list(filters={"label": f"{LABEL_APP}={app}"})
        images.sort(key=lambda image: image.attrs.get("Created", ""), reverse=True)
        for index, image in enumerate(images):
            if index >= self.settings.keep_images and image.id != keep_image:
                with contextlib.suppress(Exception):
                    self.docker.images.remove(image.id, force=True)

    # -- the record and the answer
    def finish(self, app: AppSpec, outcome: Outcome, *, record_failure: bool) -> None:
        if outcome.status == "failed" and record_failure and SHA_RE.fullmatch(outcome.sha):
            state = self.load_state(app.name)
            state["failed"][outcome.sha] = {"reason": outcome.reason[:1000], "at": iso(self.clock())}
            state["failed"] = dict(list(state["failed"].items())[-FAILED_KEPT:])
            with contextlib.suppress(OSError):
                self.save_state(app.name, state)
        status = "failed" if outcome.status == "failed" else "deployed"
        self.audit.write(
            f"deploy_{status}",
            app=app.name,
            sha=outcome.sha,
            repo=app.url,
            status=status,
            outcome=outcome.status,
            reason=outcome.reason,
            step=outcome.step,
            output_tail=outcome.tail,
            previous=outcome.previous,
            container=outcome.container,
            seconds=outcome.seconds,
            requested_by=outcome.requested_by,
        )
        self.answer(app.name, outcome)

    def answer(self, app: str, outcome: Outcome) -> None:
        """The monitor's answer: results/<app>.json, replaced atomically; the id tells a new answer apart."""
        if not self.settings.results_dir or not SHA_RE.fullmatch(outcome.sha):
            return
        if outcome.status == "failed" and not outcome.commit_at_fault:
            return  # a restore that failed: the commit is not to blame, the monitor need not hear of it
        directory = Path(self.settings.results_dir)
        if not directory.is_dir():
            return
        result = {
            "id": uuid.uuid4().hex,
            "app": app,
            "sha": outcome.sha,
            "status": "failed" if outcome.status == "failed" else "deployed",
            "reason": outcome.reason[:1000],
            "requested_by": outcome.requested_by,
            "time": iso(self.clock()),
        }
        group = os.stat(directory).st_gid
        write_file_at(
            directory, f"{app}.json", (json.dumps(result, sort_keys=True) + "\n").encode(), 0o640, group=group
        )

    # -- removal
    def remove_absent(self, keep: set[str], *, check_mode: bool = False, apps: Collection[AppSpec] = ()) -> list[str]:
        """Remove the containers, images and state of apps not in `keep`; return their names.

        On the swarm's first manager, an app of `apps` (the entries kept) with one replica loses the swarm
        service it had before its replicas were lowered, once its own container serves through the edge. In
        check mode the deploy before it did not run: the removal is reported as the real run would do it.
        """
        removed: set[str] = set()
        if self.swarm is not None:
            single = {
                app.name
                for app in apps
                if app.name in keep and app.replicas == 1 and (check_mode or self.container_serves(app))
            }
            removed.update(self.swarm.remove_absent(keep - single, check_mode=check_mode))
        for container in self.docker.containers.list(all=True, filters={"label": LABEL_APP}):
            name = container.labels.get(LABEL_APP, "")
            if SWARM_TASK_LABEL in (container.labels or {}):
                continue  # a swarm task: the swarm's to place and remove, not this host's
            if name not in keep:
                removed.add(name)
                if not check_mode:
                    container.remove(force=True)
        for image in self.docker.images.list(filters={"label": LABEL_APP}):
            name = (image.labels or {}).get(LABEL_APP, "")
            if any(not tag.startswith(f"{IMAGE_REPO}/") for tag in getattr(image, "tags", None) or []):
                continue  # pulled from the swarm's registry for a task: the swarm's
            if name not in keep:
                removed.add(name)
                if not check_mode:
                    with contextlib.suppress(Exception):
                        self.docker.images.remove(image.id, force=True)
        state_dir = Path(self.settings.state_dir)
        if state_dir.is_dir():
            for entry in state_dir.iterdir():
                if entry.is_dir() and not entry.is_symlink() and entry.name not in keep | PLATFORM_DIRS:
                    removed.add(entry.name)
                    if not check_mode:
                        shutil.rmtree(entry)
        egress_dir = Path(self.settings.egress_dir)
        parts = [p for p in egress_dir.glob("*.nft") if p.stem not in keep] if egress_dir.is_dir() else []
        removed.update(p.stem for p in parts)
        if parts and not check_mode:
            for part in parts:
                part.unlink()
            self.reload_egress()
        for network in self.docker.networks.list(filters={"label": LABEL_APP}):
            name = (network.attrs.get("Labels") or {}).get(LABEL_APP, "")
            if name not in keep:
                removed.add(name)
                if not check_mode:
                    with contextlib.suppress(Exception):
                        network.remove()
        lock_dir = Path(self.settings.lock_dir)
        if lock_dir.is_dir() and not check_mode:
            for entry in lock_dir.glob("*.lock"):
                if entry.stem not in keep:
                    entry.unlink(missing_ok=True)
        return sorted(removed - {""})

    def purge_data(self, purge: Collection[str], keep: Collection[str], *, check_mode: bool = False) -> list[str]:
        """Delete the data directories of the apps in `purge` that are not in `keep`; return their names.

        Data is never deleted with the app: an app that leaves the inventory keeps its directory until the
        operator names it here.
        """
        root = Path(self.settings.data_dir)
        purged: list[str] = []
        for name in sorted(set(purge) - set(keep)):
            path = root / name
            if "/" in name or name in ("", ".", "..") or not path.is_dir() or path.is_symlink():
                continue
            purged.append(name)
            if not check_mode:
                shutil.rmtree(path)  # fd-based on Linux: links inside are removed, never followed
        return purged


def is_service(app: AppSpec) -> bool:
    """Whether the app runs as a swarm service (replicas above 1) rather than one container per host."""
    return app.replicas > 1


def describe(exc: BaseException) -> str:
    """An exception as a short line: its type and message, never its arguments' repr beyond 500 characters."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def http_status(url: str, timeout: float) -> int:
    """The HTTP status of a GET (redirects not followed), or OSError when nothing answered.

    http.client rather than urllib's opener: ansible-test's sanity rules ask for Ansible's open_url
    instead, which the host's deployer (no Ansible there) does not have.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http:// URL: {url!r}")
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", target)
        return int(connection.getresponse().status)
    except http.client.HTTPException as exc:  # an answer that is not HTTP counts as none
        raise ConnectionError(describe(exc)) from exc
    finally:
        connection.close()
