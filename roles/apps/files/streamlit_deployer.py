#!/usr/bin/python3
"""streamlit-deployer: runs the monitor's deploy requests with the collection's deploy engine, one at a time.

systemd starts it as root (streamlit-deployer.path, DirectoryNotEmpty on the monitor's spool `requests/`):
a deploy builds images, starts containers and reloads nginx. What it reads there was written by an
unprivileged process that parses what the internet sends, so a request is only ever an app name from this
host's configuration and a 40-hex SHA; anything else is removed and recorded, never passed on.

The deploy itself is the same Python library `site.yml` and `playbooks/deploy.yml` use (the `app_deploy`
module): `_deploy.py` beside this program under lib/. It answers the monitor itself (results/, a directory
only root writes) and records every outcome in the hash-chained deploy audit log. A deploy runs in a child
process with a time limit: when the limit passes the child is killed (its lock is a flock the kernel
releases) and the request answered as failed.

    streamlit_deployer.py --config /opt/secure-streamlit-deployer/deployer.json \
        [run|restore|check-config|verify-audit]

`restore` brings every app back at the commit that served before (the boot and engine-restart unit).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import errno
import json
import os
import shutil
import signal
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))

from ansible_collections.secure_streamlit.hosting.plugins.module_utils import _audit_log, _settings_file
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import (
    NAME_RE,
    SHA_RE,
    AppSpec,
)
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._deploy import (
    Engine,
    Outcome,
    Settings,
)
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_backend import (
    SwarmBackend,
    SwarmSettings,
)

MAX_REQUEST_BYTES = 4096
# A dot-file is the monitor's write in progress (it renames it into place); older than this it was
# abandoned and is removed, or the path unit would start this program again and again.
TEMP_FILE_GRACE_SECONDS = 30
CONFIG_KEYS = {"apps": list, "settings": dict, "spool_dir": str, "deploy_timeout_seconds": int}
# swarm: the swarm backend's settings, on the swarm's first manager only (apps with replicas above 1).
OPTIONAL_KEYS = {"monitor_audit_log": str, "swarm": dict}
# Apps restored at once after a reboot: their waits overlap, their builds (rare: only a lost image) share
# the engine.
RESTORE_WORKERS = 4


class RequestRejected(ValueError):
    """A request file that is not an app of this host and a full SHA."""


@dataclass(frozen=True)
class DeployRequest:
    app: str
    sha: str


def log(message: str) -> None:
    print(message, flush=True)


def load_config(path: Path) -> dict[str, Any]:
    """The configuration the apps role writes, read safely (root's, nobody else may write it): every key
    present and of its type, every app valid by the one app model, the settings known to the engine."""
    config = _settings_file.read_settings(path, required=CONFIG_KEYS, optional=OPTIONAL_KEYS)
    try:
        config["specs"] = [AppSpec.from_dict(entry) for entry in config["apps"]]
        config["engine_settings"] = Settings.from_mapping(config["settings"])
        config["swarm_settings"] = SwarmSettings.from_mapping(config["swarm"]) if config.get("swarm") else None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    bad = [spec.name for spec in config["specs"] if not NAME_RE.fullmatch(spec.name)]
    if bad:
        raise ValueError(f"{path}: not app names: {bad}")
    return config


def parse_request(name: str, raw: bytes, apps: set[str]) -> DeployRequest:
    """The (app, sha) of one request file's name and content, or RequestRejected saying why."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestRejected(f"larger than {MAX_REQUEST_BYTES} bytes")
    try:
        request = json.loads(raw)
    except ValueError as exc:
        raise RequestRejected("not JSON") from exc
    if not isinstance(request, dict):
        raise RequestRejected("not a JSON object")
    app, sha = request.get("app"), request.get("sha")
    if not isinstance(app, str) or app not in apps:
        raise RequestRejected("not an app of this host")
    if name != f"{app}.json":
        raise RequestRejected(f"the file name is not {app}.json")
    if not isinstance(sha, str) or not SHA_RE.fullmatch(sha):
        raise RequestRejected("the sha is not 40 lower-case hex digits")
    return DeployRequest(app, sha)


def read_regular_file(path: Path, limit: int) -> bytes:
    """Read a plain file without following a symlink (the directory belongs to another user)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RequestRejected("not a regular file")
        return os.read(fd, limit + 1)
    finally:
        os.close(fd)


class Deployer:
    def __init__(self, config: dict[str, Any], engine_factory: Callable[[Settings], Engine] | None = None) -> None:
        self.config = config
        self.specs: dict[str, AppSpec] = {spec.name: spec for spec in config["specs"] if spec.managed}
        self.apps = set(self.specs)
        self.settings: Settings = config["engine_settings"]
        self.requests_dir = Path(config["spool_dir"]) / "requests"
        swarm_settings = config.get("swarm_settings")
        self.engine_factory = engine_factory or (lambda settings: default_engine(settings, swarm_settings))
        self.audit = _audit_log.AuditLog(Path(self.settings.audit_log), time.time)

    # the spool
    def take_requests(self) -> tuple[list[DeployRequest], bool]:
        """Remove and return the valid requests (oldest first); the flag says a write is still in progress."""
        entries: list[tuple[float, str, Path]] = []
        pending_write = False
        try:
            names = os.listdir(self.requests_dir)
        except FileNotFoundError:
            return [], False
        for name in names:
            path = self.requests_dir / name
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if name.startswith("."):
                if time.time() - info.st_mtime < TEMP_FILE_GRACE_SECONDS:
                    pending_write = True
                else:
                    self.discard(path, name, "an abandoned temporary file")
                continue
            entries.append((info.st_mtime, name, path))
        taken: list[DeployRequest] = []
        for _mtime, name, path in sorted(entries):
            # Claimed by a rename first: a newer request the monitor renames into place meanwhile is a
            # new file under the old name (picked up next round), never removed unread.
            claimed = self.requests_dir / f".taken.{os.getpid()}.{name}"
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                continue  # withdrawn by the monitor meanwhile
            try:
                taken.append(parse_request(name, read_regular_file(claimed, MAX_REQUEST_BYTES), self.apps))
            except RequestRejected as exc:
                self.discard(claimed, name, str(exc))
            except OSError as exc:
                reason = "a symbolic link" if exc.errno == errno.ELOOP else f"unreadable ({exc.strerror})"
                self.discard(claimed, name, reason)
            else:
                claimed.unlink(missing_ok=True)
        return taken, pending_write

    def discard(self, path: Path, name: str, reason: str) -> None:
        log(f"removing {name[:100]!r} from the requests: {reason}")
        self.audit.write("deploy_request_rejected", file=name[:100], reason=reason, requested_by="monitor")
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)  # fd-based on Linux: never follows a link placed inside
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            log(f"cannot remove {name[:100]!r}: {exc.strerror}")

    # the deploy
    def deploy(self, request: DeployRequest) -> None:
        """Deploy in a child process with a time limit; the child answers the monitor itself."""
        log(f"{request.app}: deploying {request.sha}")
        limit = self.config["deploy_timeout_seconds"]
        pid = os.fork()
        if pid == 0:  # the child: one deploy, then out without running the parent's cleanups
            code = 1
            try:
                os.setsid()
                outcome = self.engine_factory(self.settings).deploy(
                    self.specs[request.app], request.sha, requested_by="monitor"
                )
                log(
                    f"{request.app}: {request.sha} {outcome.status}"
                    + (f" ({outcome.reason})" if outcome.reason else "")
                )
                code = 0
            finally:
                sys.stdout.flush()
                os._exit(code)
        deadline = time.monotonic() + limit
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                if os.waitstatus_to_exitcode(status) != 0:
                    self.answer_failed(request, "the deploy stopped before it recorded an outcome")
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        log(f"{request.app}: the deploy of {request.sha} ran past {limit} s; stopping it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        self.answer_failed(request, f"the deploy ran past its time limit ({limit} s) and was stopped")

    def answer_failed(self, request: DeployRequest, reason: str) -> None:
        log(f"{request.app}: {request.sha} failed: {reason}")
        engine = self.engine_factory(self.settings)
        outcome = Outcome(request.app, request.sha, "failed", f"deployer failed: {reason}", "deployer")
        outcome.requested_by = "monitor"
        engine.finish(self.specs[request.app], outcome, record_failure=True)

    def run(self) -> int:
        """Deploy until the requests directory is empty (the path unit starts this again for new ones)."""
        while True:
            requests, pending_write = self.take_requests()
            for request in requests:
                self.deploy(request)
            if not requests:
                if not pending_write:
                    return 0
                time.sleep(1)

    def restore(self) -> int:
        """Every app at the commit that served before (after a reboot or an engine restart), side by side:
        each waits mostly on its own container's start, and one slow app must not hold the others back."""

        def restore_one(spec: AppSpec) -> Outcome:
            # An engine (a Docker client, an audit writer) per thread: nothing shared but the files' locks.
            return self.engine_factory(self.settings).deploy(spec, None, requested_by="restore")

        with concurrent.futures.ThreadPoolExecutor(max_workers=RESTORE_WORKERS) as pool:
            outcomes = list(pool.map(restore_one, self.specs.values()))
        for outcome in outcomes:
            log(f"{outcome.app}: {outcome.status} {outcome.sha} {outcome.reason}".rstrip())
        return 1 if any(outcome.status == "failed" for outcome in outcomes) else 0


def default_engine(settings: Settings, swarm_settings: SwarmSettings | None = None) -> Engine:
    import docker

    client = docker.from_env(timeout=600)
    swarm = SwarmBackend(swarm_settings, client, log=log) if swarm_settings is not None else None
    return Engine(settings, client, log=log, swarm=swarm)


def verify_audit(config: dict[str, Any]) -> int:
    """Both trails: the deploy records and the monitor's decisions (each anchored by its .head file)."""
    worst = 0
    logs = [Path(config["engine_settings"].audit_log)]
    if config.get("monitor_audit_log"):
        logs.append(Path(config["monitor_audit_log"]))
    for path in logs:
        verdict = _audit_log.verify_log(path)
        print(f"{path}: {verdict.message}")
        worst = worst or (0 if verdict.ok else 1)
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Runs the monitor's deploy requests with the deploy engine.")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("command", nargs="?", default="run", choices=["run", "restore", "check-config", "verify-audit"])
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except (OSError, ValueError) as exc:
        print(f"streamlit-deployer: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        return 0
    if args.command == "verify-audit":
        return verify_audit(config)
    os.umask(0o027)
    deployer = Deployer(config)
    return deployer.restore() if args.command == "restore" else deployer.run()


if __name__ == "__main__":
    sys.exit(main())
