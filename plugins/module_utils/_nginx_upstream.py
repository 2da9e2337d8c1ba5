"""The edge switch: point one app's nginx upstream at a new address, checked, with the old one put back on failure.

Used by the deploy engine (`_deploy.py`, from the `app_deploy` module and the host's deployer alike) and by
the `edge_upstream` module the tls role calls. Standard library only: it runs on hosts with plain python3.

Each app has one include, `<upstream_dir>/<app>.conf`, holding `upstream streamlit_app_<app> { server ...; }`.
A switch writes the candidate beside it (a dot-file nginx does not include), checks it with the edge's
candidate checker (a scratch copy of /etc/nginx with the candidate in place, `nginx -t` on the copy), renames
it over the live file, checks the whole live configuration once more and reloads nginx gracefully (old
workers finish their requests). Any failure after the rename puts the previous file back, so the running
nginx keeps serving the old address.

A reload only signals nginx's master: for a moment the workers of the old configuration still accept new
connections. `reload` returns once none of them does (bounded, `reload_wait`), so a caller that stops the
old upstream next (the engine, after its drain) never has a new connection sent there.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import NAME_RE

# host:port, where host is an IPv4 address or a DNS name (no nginx metacharacters can pass).
SERVER_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}):[0-9]{1,5}")
HEADER = "# Managed by secure_streamlit.hosting (the deploy engine switches it: candidate check, nginx -t, reload).\n"

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


class UpstreamError(RuntimeError):
    """The switch failed; the previous include is back in place."""


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=120)


def upstream_name(app: str) -> str:
    return "streamlit_app_" + app.replace("-", "_")


def render(app: str, server: str) -> str:
    """The include's text for `app` served at `server` (host:port); refuses anything else."""
    if not NAME_RE.fullmatch(app):
        raise ValueError(f"not an app name: {app[:60]!r}")
    if not SERVER_RE.fullmatch(server) or not 1 <= int(server.rsplit(":", 1)[1]) <= 65535:
        raise ValueError(f"not host:port: {server[:60]!r}")
    return f"{HEADER}upstream {upstream_name(app)} {{\n    server {server};\n}}\n"


def parse_server(text: str) -> str | None:
    """The `server host:port;` of an include, or None."""
    match = re.search(r"^\s*server\s+(\S+);", text, re.MULTILINE)
    return match.group(1) if match else None


@dataclass
class Edge:
    """The host's nginx as the deploy engine sees it. Commands are injectable for tests."""

    upstream_dir: Path = Path("/etc/nginx/streamlit-upstreams")
    check_candidate: Path | None = Path("/usr/local/sbin/streamlit-edge-check-candidate")
    nginx: str = "/usr/sbin/nginx"
    run: Runner = _run
    # Where the master's pid and the processes are read (None: do not wait for the new workers).
    pid_file: Path | None = Path("/run/nginx.pid")
    proc: Path = Path("/proc")
    reload_wait: float = 30.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def path(self, app: str) -> Path:
        return self.upstream_dir / f"{app}.conf"

    def current(self, app: str) -> str | None:
        """The server the app's include points at now (None when there is no include)."""
        try:
            return parse_server(self._read(self.path(app)))
        except FileNotFoundError:
            return None

    def switch(self, app: str, server: str, *, reload: bool = True) -> bool:
        """Point `app` at `server`; return whether anything changed. Raises UpstreamError (old one kept)."""
        return self.install(app, render(app, server), reload=reload)

    def install(self, app: str, text: str, *, reload: bool = True) -> bool:
        """Put an already rendered include for `app` in place by the same checked switch (the swarm edge's
        upstreams have many servers). Unchanged bytes change nothing and do not reload."""
        if not NAME_RE.fullmatch(app):
            raise ValueError(f"not an app name: {app[:60]!r}")
        target = self.path(app)
        try:
            previous: str | None = self._read(target)
        except FileNotFoundError:
            previous = None
        if previous == text:
            return False
        candidate = self._write_dotfile(target, text)
        try:
            if self.check_candidate is not None and self.check_candidate.exists():
                self._must(
                    [str(self.check_candidate), str(candidate), str(target)], f"the candidate for {app} fails nginx -t"
                )
            os.replace(candidate, target)
        except BaseException:
            with contextlib.suppress(OSError):
                candidate.unlink()
            raise
        self._apply(target, previous, "the live configuration fails nginx -t", reload=reload)
        return True

    def remove(self, app: str, *, reload: bool = True) -> bool:
        """Remove an app's include (the tls role does this for apps taken out of the inventory)."""
        target = self.path(app)
        try:
            previous = self._read(target)
        except FileNotFoundError:
            return False
        target.unlink()
        self._apply(target, previous, "the configuration without the include fails nginx -t", reload=reload)
        return True

    def _apply(self, target: Path, previous: str | None, what: str, *, reload: bool) -> None:
        """Check the whole live configuration and reload; on failure put `target` back as it was."""
        try:
            self._must([self.nginx, "-t", "-q"], what)
            if reload:
                self.reload()
        except UpstreamError:
            self._restore(target, previous)
            raise

    def reload(self) -> bool | None:
        """Reload gracefully and wait (bounded) until no worker of the old configuration accepts. Returns
        whether they were replaced within reload_wait; None when the workers cannot be read."""
        before = self.accepting_workers()
        if Path("/run/systemd/system").is_dir():
            self._must(["systemctl", "reload", "nginx"], "nginx did not reload")
        else:
            self._must([self.nginx, "-s", "reload"], "nginx did not reload")
        return self.wait_replaced(before) if before else None

    def accepting_workers(self) -> set[int]:
        """The pids of the master's workers that accept new connections (a worker told to stop retitles
        itself "is shutting down" and closes its listening sockets). Empty when nothing can be read: no pid
        file, or processes of other users hidden."""
        master = self._master()
        if master is None:
            return set()
        found = set()
        try:
            entries = list(self.proc.iterdir())
        except OSError:
            return set()
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            if f"\nPPid:\t{master}\n" in status and title == "nginx: worker process":
                found.add(int(entry.name))
        return found

    def wait_replaced(self, before: set[int]) -> bool:
        """Whether, within reload_wait, the accepting workers became new ones only."""
        deadline = self.clock() + self.reload_wait
        while True:
            now = self.accepting_workers()
            if now and not now & before:
                return True
            if self.clock() >= deadline:
                return False
            self.sleep(0.05)

    def _master(self) -> int | None:
        if self.pid_file is None:
            return None
        try:
            text = self.pid_file.read_text().strip()
        except OSError:
            return None
        return int(text) if re.fullmatch(r"[1-9][0-9]{0,9}", text) else None

    # helpers
    def _must(self, argv: Sequence[str], what: str) -> None:
        result = self.run(argv)
        if result.returncode != 0:
            detail = " ".join((result.stderr or result.stdout or "").split())[-400:]
            raise UpstreamError(f"{what}: {detail}" if detail else what)

    @staticmethod
    def _read(path: Path) -> str:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, encoding="utf-8") as handle:
            return handle.read()

    @staticmethod
    def _write_dotfile(target: Path, text: str) -> Path:
        candidate = target.with_name(f".{target.name}.{os.getpid()}.new")
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return candidate

    def _restore(self, target: Path, previous: str | None) -> None:
        if previous is None:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            return
        os.replace(self._write_dotfile(target, previous), target)
