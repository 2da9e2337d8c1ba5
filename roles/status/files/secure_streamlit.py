#!/usr/bin/python3
"""secure-streamlit: the operator's view of this host (docs/status.md).

    secure-streamlit status [APP] [--json] [--live | --snapshot FILE]
    secure-streamlit export                 # root: the timer's run; writes the snapshot, alerts
    secure-streamlit check-config           # the role's check of a new configuration

`status` shows, per app, the commit that serves and since when, its container's health (for an app with
replicas, on the swarm's manager: each task's slot, node, state, commit and port), a pending request,
the commits marked failed and why, the last deploys; the monitor's last poll, API budget and interval; the
certificates and their expiry; the disk; both audit chains. Exit code 0 when nothing needs attention, 1
when something does (the report says what), 2 when no report could be made (bad config, unknown app, no
snapshot).

Reading the sources needs root (the deploy state, the logs, the Docker socket, which is root's in all but
name). So root's `secure-streamlit-status.timer` runs `export`, which writes the report to a snapshot the
admin group may read; `status` run by anyone else reads that snapshot and says how old it is (too old
counts as attention: the timer stopped). Run by root it collects live.

The library is `_status.py` beside this program under lib/ (the same file the collection carries).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))

from ansible_collections.secure_streamlit.hosting.plugins.module_utils import _settings_file, _status
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._deploy import write_file_at

DEFAULT_CONFIG = Path("/etc/secure-streamlit/status/status.json")
CONFIG_KEYS = {"settings": dict, "snapshot": str, "snapshot_max_age": int, "alert_command": list}
# The status app's copy of the snapshot ("" or absent: no status app), readable by the apps' uid alone.
OPTIONAL_KEYS = {"app_snapshot": str}
ALERT_TIMEOUT = 60
EXIT_ERROR = 2


class UsageError(Exception):
    """Nothing to report: the message says why (exit code 2)."""


def load_config(path: Path) -> dict[str, Any]:
    """The configuration roles/status writes, read safely: root runs its alert_command, so a file that
    is not root's (or the caller's own), or that the admin group or others could write, is refused;
    every key present and of its type, no other key."""
    try:
        config = _settings_file.read_settings(path, required=CONFIG_KEYS, optional=OPTIONAL_KEYS)
    except _settings_file.SettingsFileError as exc:
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror}); are you in the status admin group?") from exc
    # Every key is there and of its type (read_settings); what the types do not say:
    errors: list[str] = []
    app_snapshot = config.get("app_snapshot", "")
    if app_snapshot and not app_snapshot.startswith("/"):
        errors.append("app_snapshot must be an absolute path")
    command = config["alert_command"]
    if command and (not all(isinstance(part, str) for part in command) or not command[0].startswith("/")):
        errors.append("alert_command must be a list of strings starting with an absolute path")
    if errors:
        raise UsageError(f"{path}: " + "; ".join(errors))
    try:
        config["status_settings"] = _status.StatusSettings.from_mapping(config["settings"])
    except ValueError as exc:
        raise UsageError(f"{path}: settings: {exc}") from exc
    return config


def default_probe() -> _status.ContainerProbe:
    import docker

    return _status.DockerProbe(docker.from_env(timeout=30))


def default_swarm(probe: _status.ContainerProbe) -> _status.ServiceProbe | None:
    """The swarm's view through the same engine client: on a manager, the replicated apps' tasks; on any
    other engine it answers that it is no manager and every app is reported as before."""
    return _status.SwarmProbe(probe.client) if isinstance(probe, _status.DockerProbe) else None


class Unreachable:
    """The engine as a probe that could not be made: the report says why, once."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def containers(self, _app: str) -> list[dict[str, Any]]:
        raise self.error


SwarmFactory = Callable[[_status.ContainerProbe], _status.ServiceProbe | None]


def collect(
    config: dict[str, Any],
    probe_factory: Callable[[], _status.ContainerProbe],
    clock: Callable[[], float],
    swarm_factory: SwarmFactory = default_swarm,
) -> dict[str, Any]:
    try:
        probe: _status.ContainerProbe = probe_factory()
    except Exception as exc:  # no SDK, no socket: the report says the engine did not answer
        probe = Unreachable(exc)
    swarm = None if isinstance(probe, Unreachable) else swarm_factory(probe)
    return _status.Collector(config["status_settings"], clock=clock, probe=probe, swarm=swarm).collect()


def read_snapshot(path: Path, max_age: int, clock: Callable[[], float]) -> dict[str, Any]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: no snapshot yet (secure-streamlit-status.timer writes it)") from exc
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror}); are you in the status admin group?") from exc
    with os.fdopen(fd, "rb") as handle:
        modified = os.fstat(handle.fileno()).st_mtime
        try:
            report = json.loads(handle.read(16 << 20))
            _status.validate_report(report)
        except ValueError as exc:
            raise UsageError(f"{path}: not a status report ({exc})") from exc
    age = max(0.0, clock() - modified)
    report["snapshot_age_seconds"] = round(age, 1)
    if max_age and age > max_age:
        report["attention"] = [
            *report.get("attention", []),
            f"status: the snapshot is {age:.0f} s old (more than {max_age} s): "
            "is secure-streamlit-status.timer running?",
        ]
        report["verdict"] = "attention"
    return report


def write_snapshot(path: Path, report: dict[str, Any]) -> None:
    """Replace the snapshot atomically, group-readable by the directory's group (the admin group; for the
    status app's copy, the apps' group)."""
    group = os.stat(path.parent).st_gid
    data = (json.dumps(report, indent=1, sort_keys=True) + "\n").encode()
    write_file_at(path.parent, path.name, data, 0o640, group=group)


def new_problems(previous: dict[str, Any] | None, report: dict[str, Any]) -> list[str]:
    """What needs attention now and did not at the previous run: the alert is sent once per new problem."""
    before = set(previous.get("attention", [])) if previous else set()
    return [problem for problem in report.get("attention", []) if problem not in before]


def alert(command: list[str], report: dict[str, Any], problems: list[str]) -> int:
    """Run the operator's hook with the report on stdin and the new problems in its environment."""
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "SECURE_STREAMLIT_VERDICT": str(report.get("verdict", "")),
        "SECURE_STREAMLIT_NEW_PROBLEMS": "\n".join(problems)[:8000],
    }
    try:
        done = subprocess.run(  # the operator's own command, from root's configuration
            command,
            input=json.dumps(report).encode(),
            env=env,
            capture_output=True,
            timeout=ALERT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"alert hook {command[0]} failed: {type(exc).__name__}", flush=True)
        return -1
    print(f"alert hook {command[0]} exited {done.returncode} ({len(problems)} new problem(s))", flush=True)
    return done.returncode


def export(
    config: dict[str, Any],
    probe_factory: Callable[[], _status.ContainerProbe],
    clock: Callable[[], float],
    swarm_factory: SwarmFactory = default_swarm,
) -> int:
    path = Path(config["snapshot"])
    previous = None
    try:
        previous = json.loads(path.read_bytes())
        if not isinstance(previous, dict):
            previous = None
    except (OSError, ValueError):
        previous = None
    started = time.monotonic()
    report = collect(config, probe_factory, clock, swarm_factory)
    report["collect_seconds"] = round(time.monotonic() - started, 3)
    write_snapshot(path, report)
    if config.get("app_snapshot"):
        # The status app's copy: the same report, in a directory whose group is the apps' uid (only the
        # status app's container has it mounted, read-only).
        write_snapshot(Path(config["app_snapshot"]), report)
    problems = new_problems(previous, report)
    print(f"{report['verdict']}: {len(report['attention'])} problem(s), collected in {report['collect_seconds']} s")
    if problems and config["alert_command"]:
        alert(config["alert_command"], report, problems)
    return 0


def main(
    argv: list[str] | None = None,
    *,
    probe_factory: Callable[[], _status.ContainerProbe] = default_probe,
    clock: Callable[[], float] = time.time,
    swarm_factory: SwarmFactory = default_swarm,
) -> int:
    parser = argparse.ArgumentParser(prog="secure-streamlit", description="The operator's view of this host.")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="what serves, health, deploys, certificates, disk, audit chains")
    status.add_argument("app", nargs="?", help="one app only (its verdict alone)")
    status.add_argument("--json", action="store_true", help=f"the report as JSON ({_status.SCHEMA})")
    source = status.add_mutually_exclusive_group()
    source.add_argument("--live", action="store_true", help="collect now (root)")
    source.add_argument("--snapshot", type=Path, help="read this snapshot instead of the configured one")
    commands.add_parser("export", help="collect, write the snapshot, alert on new problems (root's timer)")
    commands.add_parser("check-config", help="check the configuration file")
    args = parser.parse_args(argv)
    try:
        if args.command == "status" and args.snapshot is not None:
            report = read_snapshot(args.snapshot, 0, clock)
        else:
            config = load_config(args.config)
            if args.command == "check-config":
                print(f"config OK: {len(config['status_settings'].apps)} apps")
                return 0
            if args.command == "export":
                return export(config, probe_factory, clock, swarm_factory)
            if args.live and os.geteuid() != 0:
                raise UsageError("--live needs root (the sources are root's); without it the snapshot is read")
            live = args.live or os.geteuid() == 0
            if live:
                report = collect(config, probe_factory, clock, swarm_factory)
            else:
                report = read_snapshot(Path(config["snapshot"]), config["snapshot_max_age"], clock)
        if args.app is not None:
            try:
                report = _status.for_app(report, args.app)
            except KeyError:
                names = ", ".join(entry.get("name", "?") for entry in report.get("apps", [])) or "none"
                raise UsageError(f"no app {args.app!r} on this host (apps: {names})") from None
    except UsageError as exc:
        print(f"secure-streamlit: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(_status.render_text(report, app=args.app))
    return _status.exit_code(report)


if __name__ == "__main__":
    sys.exit(main())
