#!/usr/bin/python3
"""secure-streamlit-backup: encrypted backups of this host and their restore (docs/contingency.md).

    secure-streamlit-backup run                        # the timer's run: dump, back up, prune, record
    secure-streamlit-backup check [--read-data-subset 5%]
    secure-streamlit-backup status [--json]            # the last backup and check; exit 1 if attention
    secure-streamlit-backup snapshots                  # restic's list of this repository's snapshots
    secure-streamlit-restore [--snapshot ID | --from-host HOST] [--app NAME ...] [--platform]

Root only: the repository password is a root-only file restic reads itself (--password-file), never an
argument or an environment variable. The library is _backup.py under lib/ (the collection's file).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))

from ansible_collections.secure_streamlit.hosting.plugins.module_utils import _backup, _settings_file

DEFAULT_CONFIG = Path("/etc/secure-streamlit/backup/backup.json")
MAX_AGE = 36 * 3600
EXIT_ERROR = 2


def runner(argv: Sequence[str], *, stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None) -> _backup.Result:
    """A process without a shell; HOME set for ssh (restic's sftp backend), nothing secret in the env."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8"}
    done = subprocess.run(
        list(argv),
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        check=False,
    )
    return _backup.Result(done.returncode, done.stdout or b"", done.stderr or b"")


def load_settings(path: Path) -> _backup.BackupSettings:
    try:
        values = _settings_file.read_json_object(path)
    except _settings_file.SettingsFileError as exc:
        raise SystemExit(str(exc)) from exc
    except OSError as exc:
        raise SystemExit(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        return _backup.BackupSettings.from_mapping(values)
    except ValueError as exc:
        raise SystemExit(f"{path}: {exc}") from exc


def restore(settings: _backup.BackupSettings, args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="restore-", dir=settings.staging_dir) as work:
        os.chmod(work, 0o700)
        try:
            steps = _backup.restore_plan(
                settings, args.snapshot, args.app, platform=args.platform, work_dir=work, source_host=args.from_host
            )
        except ValueError as exc:
            print(f"secure-streamlit-restore: {exc}", file=sys.stderr)
            return EXIT_ERROR
        for step in steps:
            start = time.monotonic()
            if step.stdout_file:
                fd = os.open(step.stdout_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    result = runner(step.argv, stdout=out)
            elif step.stdin_file:
                with open(step.stdin_file, "rb") as source:
                    result = runner(step.argv, stdin=source)
            else:
                result = runner(step.argv)
            if result.returncode != 0:
                print(
                    f"secure-streamlit-restore: {step.description} failed (exit code {result.returncode}): "
                    f"{_backup.last_line(result.stderr)}",
                    file=sys.stderr,
                )
                return 1
            print(f"{step.description}: done in {time.monotonic() - start:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    program = Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(prog=program, description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    commands = parser.add_subparsers(dest="command", required=program != "secure-streamlit-restore")
    commands.add_parser("run", help="dump the databases, back up, prune, record the outcome")
    check = commands.add_parser("check", help="restic check, outcome recorded")
    check.add_argument("--read-data-subset", default="", help="also read back this share of the data, e.g. 5%%")
    status = commands.add_parser("status", help="the last backup and check")
    status.add_argument("--json", action="store_true")
    snapshots = commands.add_parser("snapshots", help="the repository's snapshots (restic snapshots)")
    snapshots.add_argument("--json", action="store_true")
    restore_parser = commands.add_parser("restore", help="restore apps and the platform from a snapshot")
    for target in (restore_parser, parser if program == "secure-streamlit-restore" else None):
        if target is None:
            continue
        target.add_argument("--snapshot", default="latest", help="a snapshot ID or 'latest' (this host's)")
        target.add_argument("--app", action="append", default=[], help="an app whose data and database to restore")
        target.add_argument("--platform", action="store_true", help="also the platform's state and config")
        target.add_argument("--from-host", default="", help="'latest' of this host (default: this one)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print(f"{program}: run as root (the repository password is root's)", file=sys.stderr)
        return EXIT_ERROR
    settings = load_settings(args.config)
    command = args.command or "restore"
    run = _backup.BackupRun(settings, runner, time.time)
    if command == "run":
        entry = run.run()
        print(json.dumps(entry, sort_keys=True))
        return 0 if entry["ok"] else 1
    if command == "check":
        entry = run.check(args.read_data_subset)
        print(json.dumps(entry, sort_keys=True))
        return 0 if entry["ok"] else 1
    if command == "status":
        report = _backup.summary(_backup.read_state(settings.state_file), time.time(), MAX_AGE)
        if args.json:
            print(json.dumps(report, indent=2, sort_keys=True))
        else:
            for kind in ("backup", "check"):
                entry = report[kind] or {}
                when = entry.get("finished")
                stamp = _backup.now_utc(lambda when=when: float(when)) if isinstance(when, int | float) else "never"
                print(f"{kind}: {'ok' if entry.get('ok') else 'FAILED' if entry else 'never run'} ({stamp})")
            for problem in report["attention"]:
                print(f"attention: {problem}")
        return 1 if report["attention"] else 0
    if command == "snapshots":
        json_args = ["--json"] if args.json else []
        result = runner(_backup.restic(settings, "snapshots", *json_args), stdout=sys.stdout.buffer)
        return result.returncode
    return restore(settings, args)


if __name__ == "__main__":
    sys.exit(main())
