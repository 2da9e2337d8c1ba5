#!/usr/bin/python3
"""streamlit-deployer: runs the monitor's deploy requests through playbooks/deploy.yml, one at a time.

systemd starts it (streamlit-deployer.path, DirectoryNotEmpty on the monitor's spool `requests/`) as
root: a deploy builds images, starts containers and reloads nginx. What it reads there was written by
an unprivileged process that parses what the internet sends, so a request is only ever an app name from
this host's configuration and a 40-hex SHA; anything else is removed and logged, never passed on.

For each request: take it (remove the file, so a crash cannot loop on it), wait while a deploy of the
same app holds its lock, run `ansible-playbook deploy.yml -e app=... -e sha=...` on this host, and make
sure the monitor gets an answer: deploy.yml writes one itself; when the run ended without one (it was
killed, timed out, or stopped before its deploy block) this program writes `failed` with the reason,
to the results directory and the deploy audit log, so the monitor does not wait forever.

    streamlit_deployer.py --config /opt/secure-streamlit-deployer/deployer.json [run|check-config]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
MAX_REQUEST_BYTES = 4096
# A dot-file is the monitor's write in progress (it renames it into place); older than this it was
# abandoned and is removed, or the path unit would start this program again and again.
TEMP_FILE_GRACE_SECONDS = 30
CONFIG_KEYS = {
    "apps": list,
    "spool_dir": str,
    "ansible_playbook": str,
    "playbook": str,
    "inventory": str,
    "ansible_config": str,
    "audit_log": str,
    "lock_dir": str,
    "lock_wait_seconds": int,
    "deploy_timeout_seconds": int,
}


class RequestRejected(ValueError):
    """A request file that is not an app of this host and a full SHA."""


@dataclass(frozen=True)
class DeployRequest:
    app: str
    sha: str


def log(message: str) -> None:
    print(message, flush=True)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_config(path: Path) -> dict[str, Any]:
    """The configuration the apps role writes (root-owned); every key present and of its type."""
    config = json.loads(path.read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a JSON object")
    errors = [
        f"{key} must be a {kind.__name__}" for key, kind in CONFIG_KEYS.items() if not isinstance(config.get(key), kind)
    ]
    apps = config.get("apps") or []
    errors += [f"apps: {name!r} is not an app name" for name in apps if not NAME_RE.match(str(name))]
    if errors:
        raise ValueError(f"{path}: " + "; ".join(errors))
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
    if not isinstance(sha, str) or not SHA_RE.match(sha):
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


def write_atomically(path: Path, data: str, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Deployer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.apps = set(config["apps"])
        self.requests_dir = Path(config["spool_dir"]) / "requests"
        self.results_dir = Path(config["spool_dir"]) / "results"
        self.audit_log = Path(config["audit_log"])
        self.lock_dir = Path(config["lock_dir"])

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
        for _, name, path in sorted(entries):
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
        log(f"removing {name!r} from the requests: {reason}")
        self.audit("deploy_request_rejected", file=name[:100], reason=reason)
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            log(f"cannot remove {name!r}: {exc}")

    # the deploy
    def wait_for_lock(self, app: str) -> None:
        """A deploy of this app by site.yml or by hand holds its lock: wait for it (deploy.yml breaks a
        stale one itself)."""
        deadline = time.monotonic() + self.config["lock_wait_seconds"]
        while (self.lock_dir / app).exists() and time.monotonic() < deadline:
            time.sleep(2)

    def run_playbook(self, request: DeployRequest) -> int:
        command = [
            self.config["ansible_playbook"],
            "-i",
            self.config["inventory"],
            self.config["playbook"],
            "-e",
            f"app={request.app}",
            "-e",
            f"sha={request.sha}",
            "-e",
            "apps_deploy_requested_by=monitor",
        ]
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ANSIBLE_CONFIG": self.config["ansible_config"],
            "ANSIBLE_FORCE_COLOR": "0",
            "LANG": "C.UTF-8",
            "HOME": str(Path(self.config["ansible_config"]).parent),
        }
        process = subprocess.Popen(command, env=env, start_new_session=True)
        try:
            return process.wait(timeout=self.config["deploy_timeout_seconds"])
        except subprocess.TimeoutExpired:
            limit = self.config["deploy_timeout_seconds"]
            log(f"{request.app}: the deploy of {request.sha} ran past {limit} s; stopping it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            # It was ours and it is gone: its lock would otherwise stop every deploy of the app until stale.
            self.remove_lock(request.app)
            return -1

    def reported(self, request: DeployRequest, since: int) -> bool:
        """Whether deploy.yml wrote its record of this request (the audit log grew with it since `since`)."""
        try:
            with open(self.audit_log, "rb") as handle:
                handle.seek(since)
                lines = handle.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return False
        for line in lines:
            with contextlib.suppress(ValueError, AttributeError):
                record = json.loads(line)
                if record.get("app") == request.app and record.get("sha") == request.sha:
                    return True
        return False

    def audit_size(self) -> int:
        try:
            return self.audit_log.stat().st_size
        except OSError:
            return 0

    def audit(self, event: str, **fields: Any) -> None:
        record = {"time": now_iso(), "event": event, "requested_by": "monitor", **fields}
        try:
            self.audit_log.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            fd = os.open(self.audit_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            with os.fdopen(fd, "a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError as exc:
            log(f"cannot write the audit log {self.audit_log}: {exc}")

    def answer_failed(self, request: DeployRequest, reason: str) -> None:
        self.audit("deploy_failed", app=request.app, sha=request.sha, status="failed", reason=reason)
        if self.results_dir.is_dir():
            result = {"app": request.app, "sha": request.sha, "status": "failed", "reason": reason}
            write_atomically(self.results_dir / f"{request.app}.json", json.dumps(result) + "\n")

    def deploy(self, request: DeployRequest) -> None:
        log(f"{request.app}: deploying {request.sha}")
        self.wait_for_lock(request.app)
        since = self.audit_size()
        code = self.run_playbook(request)
        if self.reported(request, since):
            log(f"{request.app}: {request.sha} done (ansible-playbook exit {code})")
            return
        reason = (
            "the deploy ran past its time limit and was stopped"
            if code == -1
            else f"ansible-playbook exited {code} before the deploy recorded an outcome"
        )
        log(f"{request.app}: {request.sha} failed: {reason}")
        self.answer_failed(request, reason)

    def remove_lock(self, app: str) -> bool:
        """Remove the app's deploy lock if this deployer (owner "monitor") holds it."""
        lock = self.lock_dir / app
        with contextlib.suppress(OSError):
            if (lock / "owner").read_text().strip() == "monitor":
                (lock / "owner").unlink()
                lock.rmdir()
                return True
        return False

    def remove_own_stale_locks(self) -> None:
        """systemd runs one deployer at a time: a lock that says the monitor's deployer holds it is left
        over from a run that was killed (the unit stopped, the process killed) and would block the app."""
        for owner in sorted(self.lock_dir.glob("*/owner")):
            app = owner.parent.name
            if self.remove_lock(app):
                log(f"{app}: removed the lock a killed deploy left")
                self.audit("deploy_lock_removed", app=app, reason="left by a killed deployer run")

    def run(self) -> int:
        """Deploy until the requests directory is empty (the path unit starts this again for new ones)."""
        self.remove_own_stale_locks()
        while True:
            requests, pending_write = self.take_requests()
            for request in requests:
                self.deploy(request)
            if not requests:
                if not pending_write:
                    return 0
                time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Runs the monitor's deploy requests through deploy.yml.")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("command", nargs="?", default="run", choices=["run", "check-config"])
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except (OSError, ValueError) as exc:
        print(f"streamlit-deployer: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        return 0
    os.umask(0o027)
    return Deployer(config).run()


if __name__ == "__main__":
    sys.exit(main())
