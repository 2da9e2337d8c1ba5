"""Encrypted backups of a host with restic, and their restore (docs/contingency.md).

One run (`BackupRun.run`, the root timer's `secure-streamlit-backup run`):
1. dumps every app database with `pg_dump --format=custom` (one transaction: a consistent snapshot of a
   live database) into a root-only staging directory on the encrypted data volume;
2. `restic backup` of the apps' data, the dumps and the platform's state, tagged `platform`;
3. `restic backup` of the audit logs, tagged `audit`;
4. `restic forget --prune`: `platform` snapshots by the daily/weekly/monthly policy, `audit` snapshots
   kept `--keep-within` six years (164.316(b)(2)(i));
5. removes the dumps and records the outcome in a state file (never a secret: restic's own messages,
   which carry no password, cut to a line).
`restic check` runs on its own timer (`BackupRun.check`) and records into the same state file.

`restore_plan` turns "these apps (and the platform) from that snapshot" into the restic and pg_restore
steps the restore command runs; the repository password only ever travels as `--password-file`.

Standard library only; the runner (processes), the clock and the path test are injected.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import IO, Any, Protocol

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._settings_file import (
    SettingsFileError,
    read_json_object,
)

SCHEMA = "secure-streamlit-backup/1"
TAG_PLATFORM = "platform"
TAG_AUDIT = "audit"
APP_RE = re.compile(r"[a-z][a-z0-9-]{0,39}")
DATABASE_RE = re.compile(r"app_[a-z][a-z0-9_]{0,39}")
HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")
SNAPSHOT_RE = re.compile(r"latest|[0-9a-f]{8}|[0-9a-f]{64}")
# restic's duration syntax for --keep-within: years, months, days, hours (e.g. 6y, 6y1m).
WITHIN_RE = re.compile(r"(?:[1-9][0-9]{0,3}[ymdh])+")
# sftp:user@host:/path, s3:https://host/bucket[/prefix], rest:https://..., or a local absolute path.
REPOSITORY_RE = re.compile(
    r"sftp:[a-z_][a-z0-9_-]{0,31}@[A-Za-z0-9.-]{1,253}:/[A-Za-z0-9._/-]{0,4095}"
    r"|s3:https://[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?/[A-Za-z0-9._/-]{1,1024}"
    r"|rest:https://[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?/[A-Za-z0-9._/-]{0,1024}"
    r"|/[A-Za-z0-9._/-]{1,4095}"
)
MESSAGE_LIMIT = 400


class BackupError(Exception):
    """A step failed: the message names the step and carries restic's or pg_dump's last line."""


@dataclass(frozen=True)
class BackupSettings:
    """What roles/backup writes to the command's configuration (no secret: the password is a file)."""

    repository: str = ""
    password_file: str = "/etc/secure-streamlit/backup/repository.password"  # noqa: S105 (a path)
    # sftp: the ssh command restic runs (key and known hosts of the role's own, batch mode).
    ssh_command: tuple[str, ...] = ()
    cache_dir: str = "/var/cache/secure-streamlit-backup"
    state_file: str = "/var/lib/secure-streamlit-backup/state.json"
    staging_dir: str = "/srv/streamlit/backup-staging"
    apps: tuple[str, ...] = ()
    apps_data_dir: str = "/srv/streamlit/apps"
    databases: tuple[str, ...] = ()
    platform_paths: tuple[str, ...] = ()
    audit_paths: tuple[str, ...] = ()
    keep_daily: int = 7
    keep_weekly: int = 5
    keep_monthly: int = 12
    audit_keep_within: str = "6y"
    hostname: str = ""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> BackupSettings:
        """Every key known and of its type. ValueError names the key as written."""
        if not isinstance(values, Mapping):
            raise ValueError("the backup settings must be a mapping")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(map(str, values)) - known)
        if unknown:
            raise ValueError(f"unknown backup settings: {', '.join(unknown)}")
        defaults = cls()
        converted: dict[str, Any] = {}
        for name, value in values.items():
            default = getattr(defaults, name)
            if isinstance(default, tuple):
                if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{name} must be a list of strings")
                converted[name] = tuple(value)
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{name} must be a whole number of at least 0")
                converted[name] = value
            else:
                if not isinstance(value, str):
                    raise ValueError(f"{name} must be a string")
                converted[name] = value
        settings = cls(**converted)
        settings.validate()
        return settings

    def validate(self) -> None:
        if not REPOSITORY_RE.fullmatch(self.repository) or "/../" in f"{self.repository}/":
            raise ValueError(
                f"repository {self.repository!r} is not sftp:user@host:/path, s3:https://host/bucket, "
                "rest:https://host/path or an absolute path"
            )
        for name in ("password_file", "cache_dir", "state_file", "staging_dir", "apps_data_dir"):
            _absolute(name, getattr(self, name))
        for name in ("platform_paths", "audit_paths"):
            for index, path in enumerate(getattr(self, name)):
                _absolute(f"{name}[{index}]", path)
        for index, app in enumerate(self.apps):
            if not APP_RE.fullmatch(app):
                raise ValueError(f"apps[{index}] ({app!r}) is not an app name")
        for index, database in enumerate(self.databases):
            if not DATABASE_RE.fullmatch(database):
                raise ValueError(f"databases[{index}] ({database!r}) is not an app database (app_<name>)")
        if not WITHIN_RE.fullmatch(self.audit_keep_within):
            raise ValueError(f"audit_keep_within {self.audit_keep_within!r} is not a restic duration such as 6y")
        if self.keep_daily + self.keep_weekly + self.keep_monthly == 0:
            raise ValueError("keep_daily, keep_weekly and keep_monthly are all 0: every snapshot would go")
        if self.repository.startswith("sftp:") and not self.ssh_command:
            raise ValueError("an sftp repository needs ssh_command (the key and known hosts restic uses)")
        if any(not part or "\n" in part for part in self.ssh_command):
            raise ValueError("ssh_command has an empty or multi-line part")

    @property
    def dump_dir(self) -> str:
        return f"{self.staging_dir}/db"

    def dump_path(self, database: str) -> str:
        return f"{self.dump_dir}/{database}.dump"

    def app_dir(self, app: str) -> str:
        return f"{self.apps_data_dir}/{app}"


def _absolute(name: str, path: str) -> None:
    if not path.startswith("/") or "\n" in path or "/../" in f"{path}/":
        raise ValueError(f"{name} ({path!r}) must be an absolute path")


# -- processes ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: bytes = b""
    stderr: bytes = b""


class Runner(Protocol):
    def __call__(
        self, argv: Sequence[str], *, stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None
    ) -> Result:
        """Run argv (no shell); stdout goes to the file when given, else is returned."""


def restic(settings: BackupSettings, *args: str) -> list[str]:
    """restic's command line: the password by file, never in argv or the environment."""
    argv = ["restic", "--repo", settings.repository, "--password-file", settings.password_file]
    argv += ["--cache-dir", settings.cache_dir, "--quiet"]
    if settings.ssh_command:
        argv += ["--option", "sftp.command=" + " ".join(settings.ssh_command)]
    return [*argv, *args]


def last_line(data: bytes) -> str:
    """The last non-empty line of a tool's error output, cut short (restic prints no secret)."""
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    text = lines[-1] if lines else "(no message)"
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def existing(paths: Sequence[str], exists: Callable[[str], bool]) -> list[str]:
    """The paths that exist, in order, once each (restic marks a snapshot incomplete for a missing one)."""
    seen: list[str] = []
    for path in paths:
        if path not in seen and exists(path):
            seen.append(path)
    return seen


def forget_args(settings: BackupSettings, tag: str) -> list[str]:
    """restic forget's policy for one tag, snapshots grouped by host and tag (each its own series)."""
    args = ["forget", "--prune", "--group-by", "host,tags", "--tag", tag]
    if tag == TAG_AUDIT:
        return [*args, "--keep-within", settings.audit_keep_within]
    for option, count in (
        ("--keep-daily", settings.keep_daily),
        ("--keep-weekly", settings.keep_weekly),
        ("--keep-monthly", settings.keep_monthly),
    ):
        if count:
            args += [option, str(count)]
    return args


def host_args(settings: BackupSettings) -> list[str]:
    return ["--host", settings.hostname] if settings.hostname else []


# -- the state file ----------------------------------------------------------------------------------------
def write_private(path: str, data: bytes) -> None:
    """Write a root-only file atomically in a directory only root may change, following no link."""
    directory, name = os.path.split(path)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(dir_fd)
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or (os.geteuid() == 0 and info.st_uid != 0):
            raise PermissionError(f"{directory} may be changed by others than root: refusing to write there")
        temp = f".{name}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=dir_fd)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def read_state(path: str) -> dict[str, Any]:
    """The state file, or an empty state when there is none yet; a damaged one, or one the safe reader
    refuses (not root's, a link, in a directory others may change), counts as a failure."""
    try:
        state = read_json_object(path)
    except FileNotFoundError:
        return {"schema": SCHEMA}
    except SettingsFileError as exc:
        return {"schema": SCHEMA, "backup": {"ok": False, "error": str(exc)}}
    if state.get("schema") != SCHEMA:
        return {"schema": SCHEMA, "backup": {"ok": False, "error": f"{path} is not a {SCHEMA} document"}}
    return state


def summary(state: Mapping[str, Any], now: float, max_age: float) -> dict[str, Any]:
    """What the status command shows: the last backup and check, and whether a person should look."""
    problems = []
    for kind in ("backup", "check"):
        entry = state.get(kind)
        if not isinstance(entry, Mapping):
            problems.append(f"no {kind} has run yet")
            continue
        if not entry.get("ok"):
            problems.append(f"the last {kind} failed: {entry.get('error', 'no reason recorded')}")
        last_ok = entry.get("last_success")
        if not isinstance(last_ok, int | float) or now - last_ok > max_age:
            problems.append(f"no successful {kind} for more than {int(max_age // 3600)} h")
    return {
        "backup": state.get("backup"),
        "check": state.get("check"),
        "attention": problems,
    }


# -- a run ---------------------------------------------------------------------------------------------------
@dataclass
class BackupRun:
    settings: BackupSettings
    runner: Runner
    clock: Callable[[], float]
    exists: Callable[[str], bool] = os.path.lexists
    log: list[str] = field(default_factory=list)

    def _run(self, step: str, argv: Sequence[str], **kwargs: Any) -> Result:
        result = self.runner(argv, **kwargs)
        if result.returncode != 0:
            raise BackupError(f"{step}: exit code {result.returncode}: {last_line(result.stderr)}")
        return result

    def dump_databases(self) -> list[str]:
        """One consistent custom-format dump per database, root-only, written by root from pg_dump's stdout."""
        os.makedirs(self.settings.dump_dir, mode=0o700, exist_ok=True)
        os.chmod(self.settings.dump_dir, 0o700)
        dumps = []
        for database in self.settings.databases:
            path = self.settings.dump_path(database)
            temp = path + ".partial"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                argv = ["runuser", "-u", "postgres", "--", "pg_dump", "--format=custom", f"--dbname={database}"]
                self._run(f"pg_dump {database}", argv, stdout=out)
            os.rename(temp, path)
            dumps.append(path)
        return dumps

    def remove_dumps(self) -> None:
        for database in self.settings.databases:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.settings.dump_path(database))

    def platform_paths(self) -> list[str]:
        s = self.settings
        wanted = [s.app_dir(app) for app in s.apps] + [s.dump_dir] + list(s.platform_paths)
        return existing(wanted, self.exists)

    def run(self) -> dict[str, Any]:
        """Dump, back up, prune; the outcome recorded in the state file whatever happens."""
        started = self.clock()
        entry: dict[str, Any] = {"started": started}
        try:
            self.dump_databases()
            entry["databases"] = list(self.settings.databases)
            paths = self.platform_paths()
            entry["platform_paths"] = paths
            argv = restic(self.settings, "backup", "--tag", TAG_PLATFORM, *host_args(self.settings), *paths)
            self._run("restic backup (platform)", argv)
            audit = existing(self.settings.audit_paths, self.exists)
            entry["audit_paths"] = audit
            if audit:
                argv = restic(self.settings, "backup", "--tag", TAG_AUDIT, *host_args(self.settings), *audit)
                self._run("restic backup (audit)", argv)
            self._run("restic forget (platform)", restic(self.settings, *forget_args(self.settings, TAG_PLATFORM)))
            self._run("restic forget (audit)", restic(self.settings, *forget_args(self.settings, TAG_AUDIT)))
        except (BackupError, OSError) as exc:
            entry.update(ok=False, error=str(exc))
        else:
            entry.update(ok=True, error="")
        finally:
            self.remove_dumps()
        return self._record("backup", entry)

    def check(self, read_data_subset: str = "") -> dict[str, Any]:
        """`restic check` (with a share of the data read back when asked), recorded like a backup."""
        entry: dict[str, Any] = {"started": self.clock()}
        args = ["check"] + ([f"--read-data-subset={read_data_subset}"] if read_data_subset else [])
        try:
            self._run("restic check", restic(self.settings, *args))
        except (BackupError, OSError) as exc:
            entry.update(ok=False, error=str(exc))
        else:
            entry.update(ok=True, error="")
        return self._record("check", entry)

    def _record(self, kind: str, entry: dict[str, Any]) -> dict[str, Any]:
        state = read_state(self.settings.state_file)
        previous = state.get(kind) if isinstance(state.get(kind), dict) else {}
        entry["finished"] = self.clock()
        entry["last_success"] = entry["finished"] if entry["ok"] else previous.get("last_success")
        entry["failures_in_a_row"] = 0 if entry["ok"] else int(previous.get("failures_in_a_row", 0)) + 1
        state[kind] = entry
        state["schema"] = SCHEMA
        write_private(self.settings.state_file, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())
        return entry


# -- restore -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RestoreStep:
    """One process of a restore: argv, and the file its stdin comes from or its stdout goes to."""

    description: str
    argv: tuple[str, ...]
    stdin_file: str = ""
    stdout_file: str = ""


def restore_plan(
    settings: BackupSettings,
    snapshot: str,
    apps: Sequence[str],
    *,
    platform: bool,
    work_dir: str,
    source_host: str = "",
) -> list[RestoreStep]:
    """The steps that put the chosen apps' data and databases (and the platform's state) back.

    Files go back to where they were (`restic restore --target /` with one --include per path); each
    database's dump is fetched to a root-only work directory and loaded by pg_restore as postgres, which
    drops and recreates its objects in one transaction (the database and its role exist: the postgresql
    role made them on the fresh host). `latest` is the newest platform snapshot of `source_host` (default:
    this host; a fresh host names the host it replaces).
    """
    if not SNAPSHOT_RE.fullmatch(snapshot):
        raise ValueError(f"snapshot {snapshot!r} is not 'latest' or a snapshot ID (8 or 64 hex digits)")
    for index, app in enumerate(apps):
        if not APP_RE.fullmatch(app):
            raise ValueError(f"apps[{index}] ({app!r}) is not an app name")
        if app not in settings.apps:
            raise ValueError(f"apps[{index}] ({app!r}) is not an app this host backs up")
    if not apps and not platform:
        raise ValueError("nothing to restore: name apps or ask for the platform")
    _absolute("work_dir", work_dir)
    includes = [settings.app_dir(app) for app in apps]
    if platform:
        includes += list(settings.platform_paths)
    if source_host and not HOST_RE.fullmatch(source_host):
        raise ValueError(f"source host {source_host!r} is not a host name")
    source = source_host or settings.hostname
    host = ["--host", source] if source and snapshot == "latest" else []
    tagged = ["--tag", TAG_PLATFORM] if snapshot == "latest" else []
    steps = []
    if includes:
        argv = restic(settings, "restore", snapshot, *host, *tagged, "--target", "/")
        for path in includes:
            argv += ["--include", path]
        steps.append(RestoreStep("restore files", tuple(argv)))
    for app in apps:
        database = "app_" + app.replace("-", "_")
        if database not in settings.databases:
            continue
        dump = f"{work_dir}/{database}.dump"
        fetch = restic(settings, "dump", *host, *tagged, snapshot, settings.dump_path(database))
        steps.append(RestoreStep(f"fetch the dump of {database}", tuple(fetch), stdout_file=dump))
        load = (
            "runuser", "-u", "postgres", "--", "pg_restore", "--clean", "--if-exists", "--single-transaction",
            "--exit-on-error", "--no-owner", f"--role={database}", f"--dbname={database}",
        )  # fmt: skip
        steps.append(RestoreStep(f"load {database}", load, stdin_file=dump))
    return steps


def now_utc(clock: Callable[[], float]) -> str:
    return datetime.fromtimestamp(clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
