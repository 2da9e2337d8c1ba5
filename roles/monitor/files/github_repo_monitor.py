#!/usr/bin/python3
"""github-repo-monitor: turns pushes to the apps' branches into deploy requests.

Polls the branch heads with the collection's GitHub client (provider github) or with one `git ls-remote`
per repository (provider git: any other git server, `_git_source`), keeps per-app state, and hands
`(app, sha)` to the deployer through a spool directory (one JSON file per app, written atomically).
It never requests a SHA other than the branch head it just read, and never requests a SHA again after
its deploy failed, until the branch moves on. Every decision goes to a hash-chained JSON-lines audit log
(the collection's `_audit_log`, shared with the deploy engine).

Hand-over, so that a crash at any point neither loses nor doubles a request: the request is written to
`outbox/` (the journal), the state records the intent, the file is renamed into `requests/` (the one step
the deployer sees), then the state records the request. On the next cycle an outbox file still there was
never handed over (it is now); an intent without its outbox file was handed over (it is recorded).

Budget: every request is counted in the state before it is sent; no 3600 s window ever holds more than
90 % of GitHub's hourly limit, across restarts and `once` runs alike. A start waits out the gap since the
last poll and any rate-limit wait the state remembers. A plain git server has no such budget: its apps cost
one ls-remote each per cycle, and a server that fails is asked again only after a backoff of its own
(doubling from two intervals up to 15 minutes), so one server down slows nobody else.

    github_repo_monitor.py --config FILE [run|once|status|check-config|verify-audit]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
    from ansible_collections.secure_streamlit.hosting.plugins.module_utils import (
        _app_spec,
        _audit_log,
        _git_source,
        _repo_auth,
        _settings_file,
        github_client,
    )
except ImportError:  # installed on a host: the libraries sit beside this file
    import _app_spec  # type: ignore[no-redef]
    import _audit_log  # type: ignore[no-redef]
    import _git_source  # type: ignore[no-redef]
    import _repo_auth  # type: ignore[no-redef]
    import _settings_file  # type: ignore[no-redef]
    import github_client  # type: ignore[no-redef]

# The app rules live in one place (the app model); the monitor's config is written from it.
NAME_RE = _app_spec.NAME_RE
SHA_RE = github_client.SHA_RE
UNAUTHENTICATED_BUDGET = 60  # requests per hour (GitHub's primary limit without a token)
BUDGET_SHARE = 0.9  # leave room for the operator's own requests
MAX_ERROR_BACKOFF = 900.0
# GitHub's secondary limit and a refused token: a minute at least, doubling while it lasts, up to an hour.
PENALTY_WAIT = 60.0
MAX_PENALTY_WAIT = 3600.0
WINDOW = 3600.0
MAX_TOKEN_BYTES = 1024
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
    "allow_file_urls",
    "git_timeout",
    "ssh_known_hosts",
    "repo_credentials_dir",
}
APP_KEYS = {"name", "repo", "branch", "provider", "auth"}
# A private repository's credential reaches the service as a systemd credential (LoadCredential= of the
# root-only file the apps role keeps): repo-<app>-<what> in $CREDENTIALS_DIRECTORY, or repo_credentials_dir.
AUTH_CREDENTIALS = {"deploy_key": "key", "token": "token", "github_app": "app-key"}
AUDIT_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_RESULT_BYTES = 65536
REQUEST_HISTORY = 20  # SHAs per app whose results are still understood
LOCAL_OR_HTTPS = ("https://", "http://127.0.0.1:", "http://localhost:")


class ConfigError(Exception):
    def __init__(self, errors: list[str], audit_log: object = None) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
        # The audit log the file named, when it was read (a refused file names none: nothing in it counts).
        self.audit_log = audit_log


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def now_iso(clock: Callable[[], float]) -> str:
    return datetime.fromtimestamp(clock(), UTC).isoformat(timespec="seconds")


# -- configuration ------------------------------------------------------------------------------------------
def load_config(path: Path, *, credentials: bool = True) -> dict[str, Any]:
    """Read and validate; every problem is reported, each naming the entry and the rule. Without
    `credentials` (check-config of a new file, before systemd hands the service its credentials) the
    private repositories' credentials are checked for shape only, not read."""
    try:
        raw = _settings_file.read_json_object(path)
    except _settings_file.SettingsFileError as exc:
        raise ConfigError([str(exc)]) from exc
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read JSON: {exc}"]) from exc
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
        "allow_file_urls": raw.get("allow_file_urls", False),
        "git_timeout": raw.get("git_timeout", _git_source.DEFAULT_TIMEOUT),
        "ssh_known_hosts": raw.get("ssh_known_hosts"),
        "repo_credentials_dir": raw.get("repo_credentials_dir") or os.environ.get("CREDENTIALS_DIRECTORY"),
        "apps": [],
        "read_credentials": credentials,
    }
    if not isinstance(config["allow_file_urls"], bool):
        errors.append(f"allow_file_urls must be true or false (is {config['allow_file_urls']!r})")
        config["allow_file_urls"] = False
    git_timeout = config["git_timeout"]
    if not is_number(git_timeout) or not math.isfinite(git_timeout) or not 0 < git_timeout <= 300:
        errors.append(f"git_timeout must be a number of seconds within 0..300 (is {git_timeout!r})")
    errors.extend(url_errors("api_url", config["api_url"], required=True))
    errors.extend(url_errors("graphql_url", config["graphql_url"], required=False))
    interval = config["interval"]
    if not is_number(interval) or not math.isfinite(interval) or interval <= 0:
        errors.append(f"interval must be a number of seconds > 0 (is {interval!r})")
    jitter = config["jitter"]
    if not is_number(jitter) or not 0 <= jitter <= 0.5:
        errors.append(f"jitter must be a fraction within 0..0.5 (is {jitter!r})")
    for key in ("state_dir", "spool_dir", "audit_log", "token_file", "ssh_known_hosts", "repo_credentials_dir"):
        value = config[key]
        if value is None and key in ("token_file", "ssh_known_hosts", "repo_credentials_dir"):
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
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            errors.append(f"{label}: name must be {_app_spec.NAME_RULE}")
        elif name in seen:
            errors.append(f"{label}: duplicate app name")
        else:
            seen.add(name)
        provider = app.get("provider", "github")  # a config written before providers: GitHub
        if provider not in _app_spec.PROVIDERS:
            errors.append(f"{label}: provider {_app_spec.show(provider)} must be github or git")
            continue
        if not isinstance(app.get("repo"), str):
            what = "a git URL" if provider == "git" else "owner/name or https://HOST/owner/name"
            errors.append(f"{label}: repo must be a string {what}")
            continue
        branch_problem = _app_spec.branch_problem(app.get("branch", "main"))
        if branch_problem:
            errors.append(f"{label}: branch {_app_spec.show(app.get('branch', 'main'))} {branch_problem}")
            continue
        if provider == "git":
            problem = _app_spec.git_url_problem(app["repo"], allow_file=config["allow_file_urls"])
            if problem:
                shown = _app_spec.shown_repo(app["repo"])
                errors.append(f"{label}: repo {shown}: a git URL {problem} ({_app_spec.GIT_URL_RULE})")
                continue
            try:
                remote, app_tokens = repo_remote(config, name, app)
            except (ValueError, _repo_auth.RepoAuthError) as exc:
                errors.append(f"{label}: {exc}")
                continue
            config["apps"].append(
                {"name": name, "repo": remote.url, "branch": remote.branch, "provider": "git", "ref": remote}
                | ({"app_tokens": app_tokens} if app_tokens is not None else {})
            )
            continue
        try:
            ref = github_client.RepoRef.parse(app["repo"], app.get("branch", "main"))
        except ValueError as exc:
            errors.append(f"{label}: {exc}")
            continue
        config["apps"].append(
            {"name": name, "repo": ref.full_name, "branch": ref.branch, "provider": "github", "ref": ref}
        )
    if errors:
        raise ConfigError(errors, raw.get("audit_log"))
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


def repo_remote(
    config: dict[str, Any], name: str, app: dict[str, Any]
) -> tuple[_git_source.GitRemote, _repo_auth.GitHubAppTokens | None]:
    """The git remote of an app, with its private repository's credential (read once here; a GitHub App's
    installation token is bought at poll time and again before it expires)."""
    url, branch, auth = app["repo"], app.get("branch", "main"), app.get("auth")
    allow_file = config["allow_file_urls"]
    if auth is None:
        return _git_source.GitRemote(url, branch, allow_file=allow_file), None
    if not isinstance(auth, dict) or auth.get("kind") not in AUTH_CREDENTIALS:
        raise ValueError(f"auth must be an object with kind {', '.join(AUTH_CREDENTIALS)}")
    kind = auth["kind"]
    known = {"deploy_key": {"kind"}, "token": {"kind", "username"}, "github_app": {"kind", "app_id", "installation_id"}}
    unknown = sorted(set(auth) - known[kind])
    if unknown:
        raise ValueError(f"auth: unknown key {unknown[0]!r}")
    directory = config["repo_credentials_dir"]
    if not config.get("read_credentials", True) and not directory:
        return _git_source.GitRemote(url, branch, allow_file=allow_file), None
    if not directory:
        raise ValueError("a private repository needs its credential (systemd's LoadCredential or repo_credentials_dir)")
    path = Path(directory) / f"repo-{name}-{AUTH_CREDENTIALS[kind]}"
    # Group bits on a systemd credential are its ACL mask (its directory is the service's alone).
    secret = _repo_auth.read_secret_file(path, owner=None, forbidden=0o007)
    if kind == "deploy_key":
        return _git_source.GitRemote(url, branch, allow_file=allow_file, ssh_key_file=str(path)), None
    if kind == "token":
        auth_pair = _git_source.HttpAuth(str(auth.get("username", "x-access-token")), secret)
        return _git_source.GitRemote(url, branch, allow_file=allow_file, auth=auth_pair), None
    for key in ("app_id", "installation_id"):
        if isinstance(auth.get(key), bool) or not isinstance(auth.get(key), int) or auth[key] < 1:
            raise ValueError(f"auth.{key} must be a positive whole number")
    tokens = _repo_auth.GitHubAppTokens(
        auth["app_id"], auth["installation_id"], secret.encode() + b"\n", api_url=config["api_url"]
    )
    return _git_source.GitRemote(url, branch, allow_file=allow_file), tokens


def known_hosts(config: dict[str, Any]) -> str | None:
    """The pinned SSH host keys: systemd's credential ssh-known-hosts when the unit has it (the file itself
    may sit in a directory the service cannot enter), else the configured path."""
    directory = config.get("repo_credentials_dir")
    if directory and (Path(directory) / "ssh-known-hosts").is_file():
        return str(Path(directory) / "ssh-known-hosts")
    return config.get("ssh_known_hosts")


def read_token(config: dict[str, Any]) -> str | None:
    """From the config's token_file, else systemd's credential `github-token`; None when neither is set.

    A token that is there but unusable stops the start (ConfigError): a missing or mistyped file must not
    turn into quiet unauthenticated polling, and a token with a line break must never reach a header (its
    error text would quote it). The token itself is never part of a message."""
    path = config.get("token_file")
    label = f"token_file {path}"
    # Group bits on a systemd credential can be its ACL mask (its directory is the service's alone): only
    # "others" is refused there.
    forbidden = 0o077
    if not path and os.environ.get("CREDENTIALS_DIRECTORY"):
        path = str(Path(os.environ["CREDENTIALS_DIRECTORY"]) / "github-token")
        label = f"the credential github-token ({path})"
        forbidden = 0o007
    if not path:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        why = f"cannot be read ({exc.strerror}); fix it, or remove token_file to poll without a token"
        raise ConfigError([f"{label}: {why}"]) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError([f"{label}: not a regular file"])
        if info.st_mode & forbidden:
            who = "group or others" if forbidden == 0o077 else "others"
            raise ConfigError(
                [
                    f"{label}: readable or writable by {who} (mode {stat.S_IMODE(info.st_mode):04o}); "
                    "it must be 0600 or 0400, owned by the monitor's user"
                ]
            )
        raw = os.read(fd, MAX_TOKEN_BYTES + 1)
    finally:
        os.close(fd)
    # One line break at the end (an editor's) is fine; any other whitespace or control character is not.
    token = raw.removesuffix(b"\n").removesuffix(b"\r")
    if not token:
        raise ConfigError([f"{label}: empty; remove it (or token_file) to poll without a token"])
    if len(raw) > MAX_TOKEN_BYTES:
        raise ConfigError([f"{label}: larger than {MAX_TOKEN_BYTES} bytes, not a token"])
    try:
        text = token.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    if not github_client.valid_token(text):
        raise ConfigError([f"{label}: the token holds a line break, a space or another character a token cannot have"])
    return text


# -- files -------------------------------------------------------------------------------------------------
def write_atomically(path: Path, data: str, mode: int = 0o640) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def publish(source: Path, target: Path) -> None:
    """Move a file into another directory of the same file system: one atomic step, then made durable."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    fsync_dir(target.parent)
    fsync_dir(source.parent)


def fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def describe(exc: BaseException) -> str:
    """An error for the log: our own messages whole, an OS error's reason, else the type alone (the text of a
    library's exception may quote a request header, and so the token)."""
    if isinstance(exc, github_client.GitHubError | _git_source.GitSourceError):
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if isinstance(exc.filename, str) else ""
        return f"{type(exc).__name__}: {exc.strerror or 'error'}{where}"
    return type(exc).__name__


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
        git_source: _git_source.GitSource | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.git_source = git_source or _git_source.GitSource(timeout=float(config.get("git_timeout", 20.0)))
        self.clock = clock
        self.sleep = sleep
        self.authenticated = authenticated
        self.apps = {app["name"]: app for app in config["apps"]}
        # GitHub's budget and pacing count the GitHub apps only; the git apps have a backoff per remote.
        self.github_apps = {n: a for n, a in self.apps.items() if a.get("provider", "github") == "github"}
        self.git_apps = {n: a for n, a in self.apps.items() if a.get("provider") == "git"}
        self.git_backoff: dict[str, tuple[int, float]] = {}  # remote key -> (failures in a row, next try)
        self.state_path = Path(config["state_dir"]) / "state.json"
        self.requests_dir = Path(config["spool_dir"]) / "requests"
        self.outbox_dir = Path(config["spool_dir"]) / "outbox"
        self.results_dir = Path(config["spool_dir"]) / "results"
        self.budget_key = "token" if authenticated else "anonymous"
        self.hourly_budget = int((5000 if authenticated else UNAUTHENTICATED_BUDGET) * BUDGET_SHARE)
        self.spent: list[float] = []  # when each request of the last hour was sent (this mode)
        self.not_before = 0.0  # a rate limit, a reset or a penalty: no request before this time
        # A refused token's wait is not kept across a restart: the restart is how a new token arrives.
        self.refused_until = 0.0
        self.last_poll: float | None = None
        self.state = self._load_state()
        self.audit = _audit_log.AuditLog(Path(config["audit_log"]), clock, self._audit_last_hash)
        self.error_streak = 0
        self.github_retry_at = 0.0  # with git apps beside: GitHub's error backoff, kept apart from the loop's
        self.penalty_streak = 0  # secondary rate limits and refused tokens in a row
        self.stopping = False
        self._announced_interval: float | None = None
        self._announced_wait: float | None = None
        self._rotation = 0
        client.before_request = self._count_request

    # state
    def _load_state(self) -> dict[str, dict[str, Any]]:
        state: Any = {}
        try:
            state = _settings_file.read_state_object(self.state_path)
        except FileNotFoundError:
            pass
        except _settings_file.SettingsFileError as exc:
            log(f"state file refused ({exc}): starting from an empty state")
        except OSError as exc:
            log(f"state file {self.state_path} unreadable ({type(exc).__name__}): starting from an empty state")
        if not isinstance(state, dict):
            state = {}
        last_hash = state.get("audit_last_hash")
        self._audit_last_hash = last_hash if isinstance(last_hash, str) and AUDIT_HASH_RE.match(last_hash) else None
        self._load_pacing(state.get("pacing"))
        apps = state.get("apps") if isinstance(state.get("apps"), dict) else {}
        return {name: self._clean_app_state(apps.get(name)) for name in self.apps}

    def _load_pacing(self, saved: object) -> None:
        """The requests of the last hour and the waits still running, as the last process left them. Times
        in the future beyond what a wait can be (a clock set back) are not believed."""
        saved = saved if isinstance(saved, dict) else {}
        now = self.clock()

        def time_value(value: object, latest: float) -> float | None:
            return float(value) if is_number(value) and math.isfinite(value) and value <= latest else None

        spent = saved.get("spent")
        spent = spent.get(self.budget_key) if isinstance(spent, dict) else None
        self._other_spent: dict[str, Any] = {}
        times = [time_value(t, now + 60) for t in (spent if isinstance(spent, list) else [])]
        self.spent = sorted(t for t in times if t is not None and t > now - WINDOW)
        # The other mode's record is kept as it is: a token removed and put back finds its hour again.
        other = saved.get("spent") if isinstance(saved.get("spent"), dict) else {}
        self._other_spent = {k: v for k, v in other.items() if k in ("token", "anonymous") and k != self.budget_key}
        self.not_before = time_value(saved.get("not_before"), now + MAX_PENALTY_WAIT + WINDOW) or 0.0
        self.last_poll = time_value(saved.get("last_poll"), now + 60)

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
            "handing_over": sha("handing_over"),
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
        pacing = {
            "spent": {**self._other_spent, self.budget_key: [round(t, 3) for t in self.spent]},
            "not_before": self.not_before,
            "last_poll": self.last_poll,
        }
        state = {"apps": self.state, "audit_last_hash": self.audit.prev, "pacing": pacing}
        write_atomically(self.state_path, json.dumps(state, indent=2, sort_keys=True))

    # pacing
    def batch_size(self) -> int:
        """Repos polled per cycle: all of them, except unauthenticated beyond the hourly budget (then the
        repos take turns, 54 per cycle: one cycle must never cost more than the hour allows)."""
        if self.authenticated:
            return len(self.github_apps)
        return min(len(self.github_apps), int(UNAUTHENTICATED_BUDGET * BUDGET_SHARE))

    def cycle_cost(self) -> int:
        """Counted requests one cycle may cost: REST one per repo, GraphQL one per 100 repos."""
        repos = len(self.github_apps)
        if self.authenticated:
            return -(-repos // github_client.GRAPHQL_BATCH) if repos > 1 else repos
        return self.batch_size()

    def effective_interval(self) -> float:
        """The configured interval, raised until no 3600 s window can hold more counted requests than
        90 % of the budget, however the window falls and whatever the jitter does."""
        interval = float(self.config["interval"])
        jitter = float(self.config["jitter"])
        repos = len(self.github_apps)
        cost = self.cycle_cost()
        budget = self.hourly_budget
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
        hint = float(self.client.poll_interval_hint or 0)
        if delay < hint:  # X-Poll-Interval is a minimum: the spread goes above it only
            delay = hint * random.uniform(1, 1 + jitter)  # noqa: S311
        if self.git_apps:
            # The git apps go on at the interval: GitHub's waits and backoff are poll_github's own.
            return delay
        if self.error_streak:
            delay = max(delay, min(MAX_ERROR_BACKOFF, base * 2**self.error_streak))
        return max(delay, max(self.not_before, self.refused_until) - self.clock())

    def first_delay(self) -> float:
        """How long a start waits: out any wait the state remembers, and the shortest gap since the last poll
        (a restart loop must not poll faster than the interval)."""
        now = self.clock()
        gap = self.effective_interval() * (1 - float(self.config["jitter"]))
        since = now - self.last_poll if self.last_poll is not None else gap
        if self.git_apps:
            return max(0.0, gap - since)
        return max(0.0, gap - since, self.not_before - now)

    def budget_wait(self, cost: int) -> float:
        """Seconds until `cost` more requests fit in the last hour's budget (0: now)."""
        now = self.clock()
        self.spent = [t for t in self.spent if t > now - WINDOW]
        excess = len(self.spent) + cost - self.hourly_budget
        if excess <= 0:
            return 0.0
        if excess > len(self.spent):  # more than a whole hour's budget: wait for the whole hour
            return WINDOW
        return self.spent[excess - 1] + WINDOW - now

    def _count_request(self) -> None:
        """Called by the client before each request: counted and saved before it is sent, so neither a
        restart nor a crash forgets it; refused when it would pass the hour's budget."""
        wait = self.budget_wait(1)
        if wait > 0:
            raise github_client.RateLimitedError("this host's hourly budget is spent", self.clock() + wait)
        self.spent.append(self.clock())
        self._save_state()

    def repos_this_cycle(self) -> list[github_client.RepoRef]:
        refs = [app["ref"] for app in self.github_apps.values()]
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
        self.recover_hand_overs()  # before the results: a result may answer a request handed over by a crash
        self.read_results()
        git_ok = self.poll_git() if self.git_apps else True
        github_ok = self.poll_github() if self.github_apps or not self.git_apps else True
        self._save_state()
        return git_ok and github_ok

    def poll_git(self) -> bool:
        """One ls-remote per git remote not backing off; each answer considered as GitHub's are. Returns
        False when a remote failed (not when a branch is missing: that is an answer)."""
        now = self.clock()
        due: dict[str, Any] = {}
        ok = True
        for name, app in self.git_apps.items():
            remote = app["ref"]
            if self.git_backoff.get(remote.key, (0, 0.0))[1] > now:
                continue
            if app.get("app_tokens") is not None:
                # A GitHub App's installation token: the cached one, or a new one before it expires.
                try:
                    token = app["app_tokens"].token()
                except _repo_auth.RepoAuthError as exc:
                    # A failure of this remote like any other: asked again after the backoff, said once.
                    ok = False
                    retry_at = self._git_failed(remote.key)
                    failed = github_client.HeadResult(
                        remote, None, error=f"no installation token ({exc})", kind="installation_token"
                    )
                    self._consider(name, failed, provider="git", kind=failed.kind, retry_at=round(retry_at))
                    continue
                remote = app["ref"] = dataclasses.replace(remote, auth=_git_source.HttpAuth("x-access-token", token))
            due.setdefault(remote.key, remote)
        if not due:
            return ok
        self.last_poll = now
        try:
            heads = self.git_source.heads(list(due.values()))
        except Exception as exc:  # the source gives each remote its answer; this is a local failure (no git)
            self.audit.write("poll_error", provider="git", reason=describe(exc))
            log(f"git poll failed ({describe(exc)})")
            return False
        for key, head in heads.items():
            if head.error and not head.missing:
                ok = False
                self._git_failed(key)
            else:
                self.git_backoff.pop(key, None)
        for name, app in self.git_apps.items():
            head = heads.get(app["ref"].key)
            if head is None:
                continue  # backing off: not asked this cycle
            extra: dict[str, Any] = {"provider": "git"}
            if head.error:
                extra["kind"] = head.kind
                if app["ref"].key in self.git_backoff:
                    extra["retry_at"] = round(self.git_backoff[app["ref"].key][1])
            self._consider(name, head, **extra)
        return ok

    def _git_failed(self, key: str) -> float:
        """Back a failing remote off: 2 x interval, doubling up to MAX_ERROR_BACKOFF. Returns when it is due."""
        streak = self.git_backoff.get(key, (0, 0.0))[0] + 1
        retry_at = self.clock() + min(MAX_ERROR_BACKOFF, float(self.config["interval"]) * 2**streak)
        self.git_backoff[key] = (streak, retry_at)
        return retry_at

    def poll_github(self) -> bool:
        """One poll of GitHub's API for the GitHub apps, within the hour's budget."""
        now = self.clock()
        if now < self.refused_until or now < self.github_retry_at:
            return True
        if now < self.not_before:
            self._hold(self.not_before, "waiting (a rate limit or a reset)")
            self._save_state()
            return True
        refs = self.repos_this_cycle()
        wait = self.budget_wait(len(refs) if not self.authenticated else self.cycle_cost())
        if wait > 0:
            self._hold(now + wait, f"this host's hourly budget is spent ({len(self.spent)} requests in the hour)")
            self._save_state()
            return True
        self.last_poll = now
        try:
            heads = self.client.heads(refs) if refs else {}
        except github_client.RateLimitedError as exc:
            self._rate_limited(exc)
            self._save_state()
            return False
        except github_client.AuthenticationError as exc:
            self.penalty_streak += 1
            retry_at = self.clock() + self._penalty()
            self.refused_until = retry_at
            self.audit.write("poll_error", reason="token refused (HTTP 401)", retry_at=round(retry_at))
            log(f"token refused ({exc}): replace the token; next poll after {now_iso(lambda: retry_at)}")
            self._save_state()
            return False
        except Exception as exc:  # keep running whatever the network or the API does
            self.error_streak += 1
            if self.git_apps:  # the loop keeps the git apps' pace: GitHub backs off here
                backoff = min(MAX_ERROR_BACKOFF, self.effective_interval() * 2**self.error_streak)
                self.github_retry_at = self.clock() + backoff
            self.audit.write("poll_error", reason=describe(exc))
            log(f"poll failed ({describe(exc)}); backing off")
            self._save_state()
            return False
        self.error_streak = 0
        self.penalty_streak = 0
        self.github_retry_at = 0.0
        left, reset_in = self.client.budget_left(), self.client.seconds_until_reset()
        cost = self.cycle_cost()
        if left is not None and reset_in is not None and left <= cost:
            self.not_before = self.clock() + reset_in
            log(f"rate-limit budget nearly spent ({left} left): waiting {reset_in:.0f} s for the reset")
        polled = {ref.key for ref in refs}
        for name, app in self.github_apps.items():
            if app["ref"].key in polled:
                self._consider(name, heads.get(app["ref"].key) if isinstance(heads, dict) else None)
        self._save_state()
        return True

    def _penalty(self) -> float:
        """GitHub's guidance for its secondary limit: a minute at least, then exponentially longer."""
        return min(MAX_PENALTY_WAIT, PENALTY_WAIT * 2 ** (self.penalty_streak - 1))

    def _rate_limited(self, exc: github_client.RateLimitedError) -> None:
        retry_at = exc.retry_at
        if exc.secondary:
            self.penalty_streak += 1
            retry_at = max(retry_at, self.clock() + self._penalty())
            kind = "secondary"
        else:
            kind = "budget" if "hourly budget" in str(exc) else "primary"
        self.not_before = max(self.not_before, retry_at)
        self.audit.write("rate_limited", retry_at=round(retry_at), kind=kind)
        label = " (secondary)" if exc.secondary else ""
        log(f"rate limited{label}: next poll after {now_iso(lambda: retry_at)}")

    def _hold(self, until: float, why: str) -> None:
        """No poll before `until`; said once per wait, not every cycle."""
        self.not_before = max(self.not_before, until)
        if self._announced_wait != self.not_before:
            self._announced_wait = self.not_before
            log(f"{why}: next poll after {now_iso(lambda: until)}")
            self.audit.write("poll_deferred", until=round(until), spent=len(self.spent), budget=self.hourly_budget)

    def _consider(self, name: str, head: github_client.HeadResult[Any] | None, **audit_extra: Any) -> None:
        """Act on the head just read (from GitHub or from the git source)."""
        app_state = self.state[name]
        app_state["last_checked"] = now_iso(self.clock)
        sha = getattr(head, "sha", None)
        if head is None or head.error or not isinstance(sha, str) or not SHA_RE.fullmatch(sha):
            reason = (head.error if head else None) or "no commit SHA in the answer"
            if app_state["last_error"] != reason:
                self.audit.write("poll_error", app=name, reason=reason, **audit_extra)
                retry = audit_extra.get("retry_at")
                later = f"; this server is asked again after {now_iso(lambda: retry)}" if retry else ""
                log(f"{name}: {reason}{later}")
            app_state["last_error"] = reason
            if head is not None and head.missing:
                self._withdraw(name, None, why=reason)
            return
        app_state["last_error"] = None
        if sha != app_state["last_seen_sha"]:
            self.audit.write("change_detected", app=name, sha=sha, previous_sha=app_state["last_seen_sha"])
            log(f"{name}: {self.apps[name]['branch']} is now at {sha}")
            app_state["last_seen_sha"] = sha
        if sha == app_state["last_deployed_sha"] or sha in app_state["failed_shas"]:
            self._withdraw(name, sha, why=f"the branch is back at {sha}")
            return
        if sha == app_state["last_requested_sha"]:
            return  # handed over already; the deployer's result clears it
        self._hand_over(name, sha)

    # hand-over: outbox (journal) -> state (intent) -> requests/ (the deployer sees it) -> state (done)
    def _hand_over(self, name: str, sha: str) -> None:
        app = self.apps[name]
        request = {
            "app": name,
            "sha": sha,
            "repo": app["repo"],
            "branch": app["branch"],
            "requested_at": now_iso(self.clock),
        }
        self.outbox_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the deployer never looks there
        write_atomically(self.outbox_dir / f"{name}.json", json.dumps(request, sort_keys=True))
        app_state = self.state[name]
        app_state["handing_over"] = sha
        # Known before it can be answered: a result for it is understood whatever happens next.
        app_state["requested_shas"] = [*[s for s in app_state["requested_shas"] if s != sha], sha][-REQUEST_HISTORY:]
        self._save_state()
        publish(self.outbox_dir / f"{name}.json", self.requests_dir / f"{name}.json")
        self._handed_over(name, sha, recovered=False)

    def _handed_over(self, name: str, sha: str, *, recovered: bool) -> None:
        app_state = self.state[name]
        app_state["last_requested_sha"] = sha
        app_state["handing_over"] = None
        app_state["requested_shas"] = [*[s for s in app_state["requested_shas"] if s != sha], sha][-REQUEST_HISTORY:]
        if not (recovered and self._audited_request(name, sha)):
            extra = {"recovered": True} if recovered else {}
            previous = app_state["last_deployed_sha"]
            self.audit.write("deploy_requested", app=name, sha=sha, previous_sha=previous, **extra)
        self._save_state()
        note = " (completing a hand-over a crash interrupted)" if recovered else ""
        log(f"{name}: deploy of {sha} requested{note}")

    def _audited_request(self, name: str, sha: str) -> bool:
        """Whether the app's last deploy record is the request of `sha` (a crash came after it was written)."""
        last = None
        with contextlib.suppress(OSError), open(self.audit.path, "rb") as handle:
            for line in handle:
                with contextlib.suppress(ValueError, AttributeError):
                    record = json.loads(line)
                    if record.get("app") == name and str(record.get("event")).startswith("deploy_"):
                        last = record
        return last is not None and last.get("event") == "deploy_requested" and last.get("sha") == sha

    def recover_hand_overs(self) -> None:
        """Finish what a crash interrupted: an outbox file was never seen by the deployer (hand it over now);
        an intent without its outbox file was handed over (record it). Neither is ever handed over twice."""
        if not self.outbox_dir.is_dir():
            return
        for entry in os.listdir(self.outbox_dir):
            path = self.outbox_dir / entry
            name = entry.removesuffix(".json")
            if entry.startswith(".") or name not in self.apps or not entry.endswith(".json"):
                with contextlib.suppress(OSError):  # a write cut short, or an app no longer configured
                    path.unlink()
                continue
            try:
                request = json.loads(path.read_text())
                sha = request["sha"] if request.get("app") == name else None
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                sha = None
            if not isinstance(sha, str) or not SHA_RE.match(sha):
                path.unlink(missing_ok=True)
                continue
            app_state = self.state[name]
            app_state["handing_over"] = sha
            app_state["requested_shas"] = [*[s for s in app_state["requested_shas"] if s != sha], sha][
                -REQUEST_HISTORY:
            ]
            self._save_state()
            publish(path, self.requests_dir / f"{name}.json")
            self._handed_over(name, sha, recovered=True)
        for name, app_state in self.state.items():
            sha = app_state["handing_over"]
            if sha is not None and not (self.outbox_dir / f"{name}.json").exists():
                self._handed_over(name, sha, recovered=True)

    def _withdraw(self, name: str, head: str | None, *, why: str) -> None:
        """A pending request that is no longer the branch head (the branch went back to a deployed or failed
        SHA, or it is gone) is taken back unless the deployer has picked it up already."""
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
            fsync_dir(path.parent)
            self.audit.write("deploy_withdrawn", app=name, sha=stale, head=head, reason=why)
            log(f"{name}: request for {stale} withdrawn: {why}")

    def run(self) -> None:
        self.audit.write("started", apps=sorted(self.apps), authenticated=self.authenticated)
        log(f"watching {len(self.apps)} apps ({'with' if self.authenticated else 'without'} a token)")
        deadline = self.clock() + self.first_delay()
        if deadline > self.clock():
            log(f"first poll after {now_iso(lambda: deadline)} (the last one was recent, or a wait is running)")
        while not self.stopping:
            while not self.stopping and self.clock() < deadline:
                self.sleep(min(1.0, deadline - self.clock()))
            if self.stopping:
                break
            try:
                self.cycle()
            except Exception as exc:  # a local failure (disk full, permissions): say so, back off, go on
                self.error_streak += 1
                log(f"cycle failed ({describe(exc)}); backing off")
            deadline = self.clock() + self.next_delay()
        self.audit.write("stopped")
        self._save_state()
        log("stopped")


# -- command line ------------------------------------------------------------------------------------------
def print_status(config: dict[str, Any]) -> None:
    try:
        state = _settings_file.read_state_object(Path(config["state_dir"]) / "state.json").get("apps", {})
    except (OSError, ValueError):
        state = {}
    if not isinstance(state, dict):  # a state file someone edited: show the apps, not a traceback
        state = {}
    print(f"{'app':<20} {'branch':<16} {'last seen':<12} {'deployed':<12} {'failed':>6}  last error")
    for app in config["apps"]:
        s = state.get(app["name"], {})
        if not isinstance(s, dict):
            s = {}
        failed = s.get("failed_shas")
        print(
            f"{app['name']:<20} {app['branch']:<16} {str(s.get('last_seen_sha') or '-')[:10]:<12} "
            f"{str(s.get('last_deployed_sha') or '-')[:10]:<12} {len(failed) if isinstance(failed, dict) else 0:>6}  "
            f"{s.get('last_error') or '-'}"
        )


def saved_audit_hash(config: dict[str, Any]) -> str | None:
    """The last audit hash the daemon saved: the chain must still hold it."""
    try:
        value = _settings_file.read_state_object(Path(config["state_dir"]) / "state.json").get("audit_last_hash")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, str) and AUDIT_HASH_RE.match(value) else None


def audit_config_error(target: object, errors: list[str]) -> None:
    """A refused start goes on the audit trail too, when the configuration as read (once, by
    load_config) names a usable audit log; a file the safe reader refused names none."""
    if target is None:
        log("config error not audited (no audit log named by a readable configuration)")
        return
    try:
        if isinstance(target, str) and target.startswith("/"):
            _audit_log.AuditLog(Path(target), time.time).write("config_error", errors=errors[:50])
    except (OSError, ValueError) as exc:
        log(f"config error not audited ({type(exc).__name__})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Turns pushes to the apps' branches into deploy requests.")
    parser.add_argument("--config", type=Path, default=Path("/etc/github-repo-monitor/config.json"))
    parser.add_argument(
        "command", nargs="?", default="run", choices=["run", "once", "status", "check-config", "verify-audit"]
    )
    args = parser.parse_args(argv)
    token = None
    config: dict[str, Any] | None = None
    try:
        # Only polling needs the repositories' credentials (systemd hands them to the unit, not to an
        # admin's verify-audit or status).
        reads = args.command in ("run", "once") or bool(os.environ.get("CREDENTIALS_DIRECTORY"))
        config = load_config(args.config, credentials=reads)
        if args.command in ("check-config", "run", "once"):
            token = read_token(config)
    except ConfigError as exc:
        for error in exc.errors:
            print(f"config error: {error}", file=sys.stderr)
        if args.command in ("run", "once"):
            audit_config_error(exc.audit_log if config is None else config["audit_log"], exc.errors)
        return 2
    if args.command == "check-config":
        print(f"config OK: {len(config['apps'])} apps, {'with' if token else 'without'} a token")
        return 0
    if args.command == "status":
        print_status(config)
        return 0
    if args.command == "verify-audit":
        verdict = _audit_log.verify_log(Path(config["audit_log"]), known_hash=saved_audit_hash(config))
        print(verdict.message)
        return 0 if verdict.ok else 1
    client = github_client.GitHubClient(config["api_url"], token, graphql_url=config["graphql_url"])
    git_source = _git_source.GitSource(timeout=float(config["git_timeout"]), ssh_known_hosts=known_hosts(config))
    monitor = Monitor(config, client, authenticated=token is not None, git_source=git_source)
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
