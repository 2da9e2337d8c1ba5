#!/usr/bin/python3
"""github-repo-monitor: turns pushes to the apps' branches into deploy requests.

Polls the branch heads with the collection's GitHub client, keeps per-app state, and hands
`(app, sha)` to the deployer through a spool directory (one JSON file per app, written atomically).
It never requests a SHA other than the branch head it just read, and never requests a SHA again after
its deploy failed, until the branch moves on. Every decision goes to a hash-chained JSON-lines audit log.

    github_repo_monitor.py --config FILE [run|once|status|check-config|verify-audit]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import json
import math
import os
import random
import re
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    from ansible_collections.secure_streamlit.hosting.plugins.module_utils import github_client
except ImportError:  # installed on a host: github_client.py sits beside this file
    import github_client  # type: ignore[no-redef]

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
SHA_RE = github_client.SHA_RE
UNAUTHENTICATED_BUDGET = 60  # requests per hour (GitHub's primary limit without a token)
BUDGET_SHARE = 0.9  # leave room for the operator's own requests
MAX_ERROR_BACKOFF = 900.0
CONFIG_KEYS = {
    "api_url",
    "graphql_url",
    "interval",
    "jitter",
    "state_dir",
    "spool_dir",
    "audit_log",
    "apps",
    "token_file",
}
APP_KEYS = {"name", "repo", "branch"}
GENESIS = "0" * 64
AUDIT_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_RESULT_BYTES = 65536
REQUEST_HISTORY = 20  # SHAs per app whose results are still understood
LOCAL_OR_HTTPS = ("https://", "http://127.0.0.1:", "http://localhost:")


class ConfigError(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def now_iso(clock: Callable[[], float]) -> str:
    return datetime.fromtimestamp(clock(), UTC).isoformat(timespec="seconds")


# -- configuration ------------------------------------------------------------------------------------------
def load_config(path: Path) -> dict[str, Any]:
    """Read and validate; every problem is reported, each naming the entry and the rule."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{path}: cannot read JSON: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the configuration must be a JSON object"])
    errors = [f"unknown key {key!r}" for key in sorted(set(raw) - CONFIG_KEYS)]
    config = {
        "api_url": raw.get("api_url", "https://api.github.com"),
        "graphql_url": raw.get("graphql_url"),
        "interval": raw.get("interval", 30),
        "jitter": raw.get("jitter", 0.1),
        "state_dir": raw.get("state_dir", "/var/lib/github-repo-monitor"),
        "spool_dir": raw.get("spool_dir", "/var/spool/github-repo-monitor"),
        "audit_log": raw.get("audit_log", "/var/log/github-repo-monitor/audit.jsonl"),
        "token_file": raw.get("token_file"),
        "apps": [],
    }
    errors.extend(url_errors("api_url", config["api_url"], required=True))
    errors.extend(url_errors("graphql_url", config["graphql_url"], required=False))
    interval = config["interval"]
    if not is_number(interval) or not math.isfinite(interval) or interval <= 0:
        errors.append(f"interval must be a number of seconds > 0 (is {interval!r})")
    jitter = config["jitter"]
    if not is_number(jitter) or not 0 <= jitter <= 0.5:
        errors.append(f"jitter must be a fraction within 0..0.5 (is {jitter!r})")
    for key in ("state_dir", "spool_dir", "audit_log", "token_file"):
        value = config[key]
        if value is None and key == "token_file":
            continue
        if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
            errors.append(f"{key} must be an absolute path (is {value!r})")
    apps = raw.get("apps", [])
    if not isinstance(apps, list):
        errors.append("apps must be a list")
        apps = []
    seen: set[str] = set()
    for index, app in enumerate(apps):
        if not isinstance(app, dict):
            errors.append(f"apps[{index}]: must be an object with name, repo and branch")
            continue
        label = f"apps[{index}] (name {app.get('name')!r})"
        errors.extend(f"{label}: unknown key {key!r}" for key in sorted(set(app) - APP_KEYS))
        name = app.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            errors.append(f"{label}: name must match {NAME_RE.pattern}")
        elif name in seen:
            errors.append(f"{label}: duplicate app name")
        else:
            seen.add(name)
        if not isinstance(app.get("repo"), str):
            errors.append(f"{label}: repo must be a string owner/name or https://HOST/owner/name")
            continue
        if not isinstance(app.get("branch", "main"), str):
            errors.append(f"{label}: branch must be a string")
            continue
        try:
            ref = github_client.RepoRef.parse(app["repo"], app.get("branch", "main"))
        except ValueError as exc:
            errors.append(f"{label}: {exc}")
            continue
        config["apps"].append({"name": name, "repo": ref.full_name, "branch": ref.branch, "ref": ref})
    if errors:
        raise ConfigError(errors)
    return config


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def url_errors(key: str, value: object, *, required: bool) -> list[str]:
    """https:// only, or plain HTTP to this host's loopback (tests, a local proxy): the token never crosses a
    network in clear. No credentials, query or fragment; a URL carrying a credential is not echoed."""
    if value is None and not required:
        return []
    if not isinstance(value, str):
        return [f"{key} must be an https:// URL (is {value!r})"]
    parts = urlsplit(value)
    if parts.username or parts.password:
        return [f"{key}: a URL with credentials in it is refused; give the token as token_file"]
    if not value.startswith(LOCAL_OR_HTTPS) or not parts.hostname or parts.query or parts.fragment:
        return [f"{key} must be an https:// URL (is {value!r})"]
    return []


def read_token(config: dict[str, Any]) -> str | None:
    """From the config's token_file, else systemd's credential `github-token`; never logged."""
    path = config.get("token_file")
    if not path and os.environ.get("CREDENTIALS_DIRECTORY"):
        path = str(Path(os.environ["CREDENTIALS_DIRECTORY"]) / "github-token")
    if not path:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        log(f"token file {path} unreadable ({exc.strerror}): polling unauthenticated")
        return None
    return token or None


# -- files -------------------------------------------------------------------------------------------------
def write_atomically(path: Path, data: str, mode: int = 0o640) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class AuditLog:
    """Append-only JSON lines; each record carries the SHA-256 of the previous line, so edits show.

    The file is opened per record (no descriptor held), so logrotate can move it away. Each record chains
    to the file's last line as it is when the record is written (under an exclusive lock, so a `once` run
    beside the daemon cannot fork the chain); in a new, empty file the chain goes on from the hash kept in
    memory, or after a restart from the one kept in the state.
    """

    def __init__(self, path: Path, clock: Callable[[], float], last_hash: str | None = None) -> None:
        self.path = path
        self.clock = clock
        self.prev = last_hash or GENESIS
        if path.exists():
            with open(path, "rb") as handle:
                last = _last_line(handle.fileno())
            if last is not None:
                self.prev = hashlib.sha256(last).hexdigest()

    def write(self, event: str, **fields: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o640)
        try:
            with contextlib.suppress(OSError):  # no lock where the file system has none: one writer is the norm
                fcntl.flock(fd, fcntl.LOCK_EX)
            last = _last_line(fd)
            if last is not None:
                self.prev = hashlib.sha256(last).hexdigest()
            record = {"ts": now_iso(self.clock), "event": event, **fields, "prev": self.prev}
            line = json.dumps(record, sort_keys=True).encode()
            os.write(fd, line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock
        self.prev = hashlib.sha256(line).hexdigest()


def _last_line(fd: int) -> bytes | None:
    """The file's last non-empty line, read backwards from its end (the log may be large)."""
    size = os.fstat(fd).st_size
    tail = b""
    position = size
    while position > 0:
        step = min(8192, position)
        position -= step
        tail = os.pread(fd, step, position) + tail
        lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
        if len(lines) == 2 or position == 0:
            return lines[-1] or None
    return None


def audit_files(path: Path) -> list[Path]:
    """The current log and its rotations (logrotate's dateext names), oldest first."""
    rotated = sorted(p for p in path.parent.glob(path.name + "-*") if p.is_file())
    return [*rotated, *([path] if path.exists() else [])]


def verify_audit(paths: list[Path]) -> tuple[bool, str]:
    """Check the chain within and across the files, oldest first."""
    prev: str | None = None
    anchor = None
    count = 0
    for path in paths:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            lines = handle.read().splitlines()
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except ValueError:
                return False, f"{path.name} line {number}: not JSON"
            if prev is None:
                anchor = record.get("prev")
            elif record.get("prev") != prev:
                return False, f"{path.name} line {number}: chain broken (the previous record was changed or removed)"
            prev = hashlib.sha256(line).hexdigest()
            count += 1
    start = (
        "from the first record ever" if anchor in (None, GENESIS) else f"from {anchor[:12]}… (older files not given)"
    )
    return True, f"audit log OK: {count} records in {len(paths)} files, chained {start}"


# -- the monitor -------------------------------------------------------------------------------------------
class Monitor:
    def __init__(
        self,
        config: dict[str, Any],
        client: github_client.GitHubClient,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        authenticated: bool = False,
    ) -> None:
        self.config = config
        self.client = client
        self.clock = clock
        self.sleep = sleep
        self.authenticated = authenticated
        self.apps = {app["name"]: app for app in config["apps"]}
        self.state_path = Path(config["state_dir"]) / "state.json"
        self.requests_dir = Path(config["spool_dir"]) / "requests"
        self.results_dir = Path(config["spool_dir"]) / "results"
        self.state = self._load_state()
        self.audit = AuditLog(Path(config["audit_log"]), clock, self._audit_last_hash)
        self.error_streak = 0
        self.not_before = 0.0  # a rate limit or reset: no request before this time
        self.stopping = False
        self._announced_interval: float | None = None
        self._rotation = 0

    # state
    def _load_state(self) -> dict[str, dict[str, Any]]:
        state: Any = {}
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log(f"state file {self.state_path} unreadable ({type(exc).__name__}): starting from an empty state")
        if not isinstance(state, dict):
            state = {}
        last_hash = state.get("audit_last_hash")
        self._audit_last_hash = last_hash if isinstance(last_hash, str) and AUDIT_HASH_RE.match(last_hash) else None
        apps = state.get("apps") if isinstance(state.get("apps"), dict) else {}
        return {name: self._clean_app_state(apps.get(name)) for name in self.apps}

    @staticmethod
    def _clean_app_state(saved: object) -> dict[str, Any]:
        """The saved state of one app, keeping only well-formed values (it decides what is requested)."""
        saved = saved if isinstance(saved, dict) else {}

        def sha(key: str) -> str | None:
            value = saved.get(key)
            return value if isinstance(value, str) and SHA_RE.match(value) else None

        failed = saved.get("failed_shas")
        history = saved.get("requested_shas")
        return {
            "last_seen_sha": sha("last_seen_sha"),
            "last_requested_sha": sha("last_requested_sha"),
            "last_deployed_sha": sha("last_deployed_sha"),
            "failed_shas": {
                k: v for k, v in (failed.items() if isinstance(failed, dict) else []) if SHA_RE.match(str(k))
            },
            "requested_shas": [s for s in (history if isinstance(history, list) else []) if SHA_RE.match(str(s))],
            "last_checked": saved.get("last_checked"),
            "last_error": saved.get("last_error"),
            "last_result_id": saved.get("last_result_id") if isinstance(saved.get("last_result_id"), str) else None,
            "last_result_problem": saved.get("last_result_problem"),
        }

    def _save_state(self) -> None:
        state = {"apps": self.state, "audit_last_hash": self.audit.prev}
        write_atomically(self.state_path, json.dumps(state, indent=2, sort_keys=True))

    # pacing
    def batch_size(self) -> int:
        """Repos polled per cycle: all of them, except unauthenticated beyond the hourly budget (then the
        repos take turns, 54 per cycle: one cycle must never cost more than the hour allows)."""
        if self.authenticated:
            return len(self.apps)
        return min(len(self.apps), int(UNAUTHENTICATED_BUDGET * BUDGET_SHARE))

    def cycle_cost(self) -> int:
        """Counted requests one cycle may cost: REST one per repo, GraphQL one per 100 repos."""
        repos = len(self.apps)
        if self.authenticated:
            return -(-repos // github_client.GRAPHQL_BATCH) if repos > 1 else repos
        return self.batch_size()

    def effective_interval(self) -> float:
        """The configured interval, raised until no 3600 s window can hold more counted requests than
        90 % of the budget, however the window falls and whatever the jitter does."""
        interval = float(self.config["interval"])
        jitter = float(self.config["jitter"])
        repos = len(self.apps)
        cost = self.cycle_cost()
        budget = int((5000 if self.authenticated else UNAUTHENTICATED_BUDGET) * BUDGET_SHARE)
        needed = 0.0
        if cost:
            cycles = budget // cost  # cycles one window may hold
            # n cycles spaced by at least I_min fit in a window when (n - 1) * I_min <= 3600.
            shortest = 3600.0 / (cycles - 1) if cycles > 1 else 3600.0 * 1.02
            needed = shortest / (1 - jitter)
        hint = float(self.client.poll_interval_hint or 0)
        effective = max(interval, needed, hint)
        if effective != self._announced_interval:
            previous = self._announced_interval
            self._announced_interval = effective
            if effective > interval:
                if hint >= needed:
                    why = "the API asks for it (X-Poll-Interval)"
                else:
                    mode = "with a token" if self.authenticated else "unauthenticated"
                    rotation = f", {cost} of them per cycle" if cost < repos and not self.authenticated else ""
                    why = (
                        f"{repos} repos {mode}{rotation} stay under {budget} of "
                        f"{budget / BUDGET_SHARE:.0f} requests/hour"
                    )
                log(f"interval raised from {interval:g} s to {effective:.0f} s: {why}")
                self.audit.write(
                    "interval_adjusted", interval=round(effective), configured=interval, repos=repos, cost=cost
                )
            elif previous is not None:
                log(f"interval back to the configured {interval:g} s")
                self.audit.write("interval_adjusted", interval=round(effective), configured=interval, repos=repos)
        return effective

    def next_delay(self) -> float:
        base = self.effective_interval()
        jitter = float(self.config["jitter"])
        delay = base * random.uniform(1 - jitter, 1 + jitter)  # noqa: S311 (spreading, not security)
        if self.error_streak:
            delay = max(delay, min(MAX_ERROR_BACKOFF, base * 2**self.error_streak))
        return max(delay, self.not_before - self.clock())

    def repos_this_cycle(self) -> list[github_client.RepoRef]:
        refs = [app["ref"] for app in self.apps.values()]
        size = self.batch_size()
        if size >= len(refs):
            return refs
        start = self._rotation % len(refs)
        self._rotation = start + size
        return (refs + refs)[start : start + size]

    # deployer results
    def read_results(self) -> None:
        """Apply the deploys' answers: results/<app>.json, written by root (the monitor can only read them).

        Each answer carries an id; the state keeps the last id applied per app, so an answer is applied once
        whatever the order of crashes and restarts. Deploys the monitor did not ask for (site.yml's first
        deploy, a rollback by hand) are applied too: the monitor then knows what serves and asks nothing."""
        if not self.results_dir.is_dir():
            return
        for name in sorted(self.apps):
            path = self.results_dir / f"{name}.json"
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self._result_problem(name, "-", f"unreadable ({exc.strerror})")
                continue
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    self._result_problem(name, "-", "not a regular file")
                    continue
                raw = handle.read(MAX_RESULT_BYTES + 1)
            try:
                result = json.loads(raw[:MAX_RESULT_BYTES])
                result_id = str(result["id"])[:64]
            except (ValueError, KeyError, TypeError):
                self._result_problem(name, "-", "malformed (not a JSON object with an id)")
                continue
            if result_id == self.state[name].get("last_result_id"):
                continue
            problem = self._apply_result(name, result)
            self.state[name]["last_result_id"] = result_id
            if problem is not None:
                self._result_problem(name, result_id, problem)

    def _result_problem(self, app: str, result_id: str, problem: str) -> None:
        key = f"{result_id}: {problem}"
        if self.state[app].get("last_result_problem") != key:
            self.state[app]["last_result_problem"] = key
            log(f"ignoring the deploy answer for {app}: {problem}")
            self.audit.write("deploy_result_ignored", app=app, reason=problem)

    def _apply_result(self, app: str, result: object) -> str | None:
        """Apply one answer; return why it was not understood, or None."""
        if not isinstance(result, dict):
            return "malformed (not a JSON object)"
        sha, status = result.get("sha"), result.get("status")
        reason = str(result.get("reason") or "")[:500]
        if result.get("app") != app:
            return "the answer names another app"
        if not isinstance(sha, str) or not SHA_RE.fullmatch(sha):
            return "the sha is not 40 hex digits"
        if status not in ("deployed", "failed"):
            return f"unknown status {str(status)[:40]!r}"
        app_state = self.state[app]
        requested = sha == app_state["last_requested_sha"] or sha in app_state["requested_shas"]
        by = str(result.get("requested_by") or "")[:80]
        if app_state["last_requested_sha"] == sha:
            app_state["last_requested_sha"] = None
        if status == "deployed":
            app_state["last_deployed_sha"] = sha
            app_state["failed_shas"].pop(sha, None)
            self.audit.write("deploy_succeeded", app=app, sha=sha, requested=requested, requested_by=by)
            log(f"{app}: {sha} deployed" + ("" if requested else f" (by {by or 'another deploy'})"))
        else:
            failed = app_state["failed_shas"].setdefault(sha, {"count": 0})
            failed.update(count=int(failed.get("count") or 0) + 1, reason=reason, at=now_iso(self.clock))
            self.audit.write("deploy_failed", app=app, sha=sha, reason=reason, requested_by=by)
            log(f"{app}: deploy of {sha} failed ({reason}); it will not be requested again")
        return None

    # one poll
    def cycle(self) -> bool:
        """Poll once; return whether the poll worked. Never raises for what the network does."""
        self.read_results()
        if self.clock() < self.not_before:
            self._save_state()
            return True
        refs = self.repos_this_cycle()
        try:
            heads = self.client.heads(refs) if refs else {}
        except github_client.RateLimitedError as exc:
            self.not_before = exc.retry_at
            self.audit.write("rate_limited", retry_at=exc.retry_at)
            retry_at = exc.retry_at
            log(f"rate limited: next poll after {now_iso(lambda: retry_at)}")
            self._save_state()
            return False
        except Exception as exc:  # keep running whatever the network or the API does
            self.error_streak += 1
            self.audit.write("poll_error", reason=f"{type(exc).__name__}: {str(exc)[:300]}")
            log(f"poll failed ({type(exc).__name__}: {str(exc)[:200]}); backing off")
            self._save_state()
            return False
        self.error_streak = 0
        left, reset_in = self.client.budget_left(), self.client.seconds_until_reset()
        cost = self.cycle_cost()
        if left is not None and reset_in is not None and left <= cost:
            self.not_before = self.clock() + reset_in
            log(f"rate-limit budget nearly spent ({left} left): waiting {reset_in:.0f} s for the reset")
        polled = {ref.key for ref in refs}
        for name, app in self.apps.items():
            if app["ref"].key in polled:
                self._consider(name, heads.get(app["ref"].key) if isinstance(heads, dict) else None)
        self._save_state()
        return True

    def _consider(self, name: str, head: github_client.HeadResult | None) -> None:
        app_state = self.state[name]
        app_state["last_checked"] = now_iso(self.clock)
        sha = getattr(head, "sha", None)
        if head is None or head.error or not isinstance(sha, str) or not SHA_RE.match(sha):
            reason = (head.error if head else None) or "no commit SHA in the answer"
            if app_state["last_error"] != reason:
                self.audit.write("poll_error", app=name, reason=reason)
                log(f"{name}: {reason}")
            app_state["last_error"] = reason
            return
        app_state["last_error"] = None
        if sha != app_state["last_seen_sha"]:
            self.audit.write("change_detected", app=name, sha=sha, previous_sha=app_state["last_seen_sha"])
            log(f"{name}: {self.apps[name]['branch']} is now at {sha}")
            app_state["last_seen_sha"] = sha
        if sha == app_state["last_deployed_sha"] or sha in app_state["failed_shas"]:
            self._withdraw_stale(name, sha)
            return
        if sha == app_state["last_requested_sha"]:
            return  # handed over already; the deployer's result clears it
        app = self.apps[name]
        request = {
            "app": name,
            "sha": sha,
            "repo": app["repo"],
            "branch": app["branch"],
            "requested_at": now_iso(self.clock),
        }
        write_atomically(self.requests_dir / f"{name}.json", json.dumps(request, sort_keys=True))
        app_state["last_requested_sha"] = sha
        app_state["requested_shas"] = [*[s for s in app_state["requested_shas"] if s != sha], sha][-REQUEST_HISTORY:]
        self.audit.write("deploy_requested", app=name, sha=sha, previous_sha=app_state["last_deployed_sha"])
        log(f"{name}: deploy of {sha} requested")

    def _withdraw_stale(self, name: str, head: str) -> None:
        """The branch went back to a deployed (or failed) SHA: a pending request for another SHA is no longer
        the head, so it is taken back unless the deployer has picked it up already."""
        app_state = self.state[name]
        stale = app_state["last_requested_sha"]
        if stale is None or stale == head:
            return
        app_state["last_requested_sha"] = None
        path = self.requests_dir / f"{name}.json"
        try:
            pending = json.loads(path.read_text()).get("sha")
        except (OSError, ValueError, AttributeError):
            pending = None
        if pending == stale:
            path.unlink(missing_ok=True)
            self.audit.write("deploy_withdrawn", app=name, sha=stale, head=head)
            log(f"{name}: request for {stale} withdrawn, the branch is back at {head}")

    def run(self) -> None:
        self.audit.write("started", apps=sorted(self.apps), authenticated=self.authenticated)
        log(f"watching {len(self.apps)} apps ({'with' if self.authenticated else 'without'} a token)")
        while not self.stopping:
            try:
                self.cycle()
            except Exception as exc:  # a local failure (disk full, permissions): say so, back off, go on
                self.error_streak += 1
                log(f"cycle failed ({type(exc).__name__}: {str(exc)[:200]}); backing off")
            deadline = self.clock() + self.next_delay()
            while not self.stopping and self.clock() < deadline:
                self.sleep(min(1.0, deadline - self.clock()))
        self.audit.write("stopped")
        self._save_state()
        log("stopped")


# -- command line ------------------------------------------------------------------------------------------
def print_status(config: dict[str, Any]) -> None:
    try:
        state = json.loads((Path(config["state_dir"]) / "state.json").read_text()).get("apps", {})
    except (OSError, ValueError):
        state = {}
    print(f"{'app':<20} {'branch':<16} {'last seen':<12} {'deployed':<12} {'failed':>6}  last error")
    for app in config["apps"]:
        s = state.get(app["name"], {})
        print(
            f"{app['name']:<20} {app['branch']:<16} {(s.get('last_seen_sha') or '-')[:10]:<12} "
            f"{(s.get('last_deployed_sha') or '-')[:10]:<12} {len(s.get('failed_shas', {})):>6}  "
            f"{s.get('last_error') or '-'}"
        )


def audit_config_error(path: Path, errors: list[str]) -> None:
    """A refused start goes on the audit trail too, when the file names a usable audit log."""
    try:
        target = json.loads(path.read_text()).get("audit_log")
        if isinstance(target, str) and target.startswith("/"):
            AuditLog(Path(target), time.time).write("config_error", errors=errors[:50])
    except (OSError, ValueError, AttributeError) as exc:
        log(f"config error not audited ({type(exc).__name__})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Turns pushes to the apps' branches into deploy requests.")
    parser.add_argument("--config", type=Path, default=Path("/etc/github-repo-monitor/config.json"))
    parser.add_argument(
        "command", nargs="?", default="run", choices=["run", "once", "status", "check-config", "verify-audit"]
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for error in exc.errors:
            print(f"config error: {error}", file=sys.stderr)
        if args.command in ("run", "once"):
            audit_config_error(args.config, exc.errors)
        return 2
    if args.command == "check-config":
        print(f"config OK: {len(config['apps'])} apps")
        return 0
    if args.command == "status":
        print_status(config)
        return 0
    if args.command == "verify-audit":
        ok, message = verify_audit(audit_files(Path(config["audit_log"])))
        print(message)
        return 0 if ok else 1
    token = read_token(config)
    client = github_client.GitHubClient(config["api_url"], token, graphql_url=config["graphql_url"])
    monitor = Monitor(config, client, authenticated=token is not None)
    if args.command == "once":
        return 0 if monitor.cycle() else 1

    def stop(signum: int, _frame: object) -> None:
        monitor.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    monitor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
