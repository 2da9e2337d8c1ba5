"""The backup library (plugins/module_utils/_backup.py) against a real restic repository on local disk.

Only pg_dump/pg_restore (run through runuser as postgres on a host) are stand-ins here: they need a
PostgreSQL server; molecule/contingency runs the real ones against a real cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils import _backup
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._backup import (
    BackupRun,
    BackupSettings,
    Result,
    restore_plan,
)

PASSWORD = "unit-Restic-NeverLogged-91b2"
DUMP = b"PGDMP stand-in dump of app_hello\x00\x01\x02"
pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed (scripts/setup.sh)")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class Runner:
    """Real processes for restic; pg_dump and pg_restore answered here (no PostgreSQL server)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.restored: dict[str, bytes] = {}

    def __call__(
        self, argv: Sequence[str], *, stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None
    ) -> Result:
        argv = list(argv)
        self.calls.append(argv)
        if argv[:4] == ["runuser", "-u", "postgres", "--"]:
            database = next(a.split("=", 1)[1] for a in argv if a.startswith("--dbname="))
            if argv[4] == "pg_dump":
                assert stdout is not None
                stdout.write(DUMP + database.encode())
            else:
                assert argv[4] == "pg_restore"
                assert stdin is not None
                self.restored[database] = stdin.read()
            return Result(0)
        done = subprocess.run(
            argv,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")},
            check=False,
        )
        return Result(done.returncode, done.stdout or b"", done.stderr or b"")


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


@pytest.fixture
def host(tmp_path: Path) -> BackupSettings:
    etc = private_dir(tmp_path / "etc")
    (etc / "password").write_text(PASSWORD)
    (etc / "password").chmod(0o600)
    data = tmp_path / "srv" / "apps"
    (data / "hello" / "uploads").mkdir(parents=True)
    (data / "hello" / "uploads" / "scan.bin").write_bytes(os.urandom(200_000))
    (data / "hello" / "notes.txt").write_text("patient 1\n")
    (data / "other").mkdir()
    (data / "other" / "x").write_text("not restored\n")
    (tmp_path / "var" / "lib" / "deploy").mkdir(parents=True)
    (tmp_path / "var" / "lib" / "deploy" / "state.json").write_text('{"serving": "abc"}\n')
    (tmp_path / "var" / "log" / "audit").mkdir(parents=True)
    (tmp_path / "var" / "log" / "audit" / "audit.log").write_text("type=USER_LOGIN msg=audit(1.0:1)\n")
    settings = BackupSettings.from_mapping(
        {
            "repository": str(tmp_path / "repo"),
            "password_file": str(etc / "password"),
            "cache_dir": str(private_dir(tmp_path / "cache")),
            "state_file": str(private_dir(tmp_path / "state") / "state.json"),
            "staging_dir": str(private_dir(tmp_path / "staging")),
            "apps": ["hello", "other"],
            "apps_data_dir": str(data),
            "databases": ["app_hello"],
            "platform_paths": [str(tmp_path / "var" / "lib" / "deploy"), str(tmp_path / "absent")],
            "audit_paths": [str(tmp_path / "var" / "log" / "audit")],
            "hostname": "app.lab.test",
        }
    )
    init = Runner()(_backup.restic(settings, "init"))
    assert init.returncode == 0, init.stderr
    return settings


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def snapshots(settings: BackupSettings) -> list[dict]:
    result = Runner()(_backup.restic(settings, "snapshots", "--json"))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- a run ---------------------------------------------------------------------------------------------------
def test_a_run_backs_up_data_dumps_platform_and_audit_as_tagged_snapshots_and_records_success(host):
    runner = Runner()
    entry = BackupRun(host, runner, Clock()).run()
    assert entry["ok"], entry["error"]
    assert entry["error"] == ""
    assert entry["failures_in_a_row"] == 0
    assert entry["last_success"] == entry["finished"]
    # A missing path is skipped, not passed to restic (which would mark the snapshot incomplete).
    assert not any(p.endswith("/absent") for p in entry["platform_paths"])
    found = snapshots(host)
    assert sorted(tuple(s["tags"]) for s in found) == [("audit",), ("platform",)]
    assert {s["hostname"] for s in found} == {"app.lab.test"}
    platform = next(s for s in found if s["tags"] == ["platform"])
    assert f"{host.apps_data_dir}/hello" in platform["paths"]
    assert host.dump_dir in platform["paths"]
    # The dump went into the snapshot and then off the disk.
    assert not os.path.exists(host.dump_path("app_hello"))
    dumped = Runner()(_backup.restic(host, "dump", "latest", "--tag", "platform", host.dump_path("app_hello")))
    assert dumped.stdout == DUMP + b"app_hello"
    state = json.loads(Path(host.state_file).read_text())
    assert state["schema"] == _backup.SCHEMA
    assert stat.S_IMODE(os.stat(host.state_file).st_mode) == 0o600


def test_the_password_is_read_from_its_file_and_never_an_argument(host):
    runner = Runner()
    BackupRun(host, runner, Clock()).run()
    assert runner.calls
    for argv in runner.calls:
        assert PASSWORD not in " ".join(argv)
        if argv[0] == "restic":
            assert argv[argv.index("--password-file") + 1] == host.password_file
    assert PASSWORD not in Path(host.state_file).read_text()


def test_retention_keeps_audit_snapshots_six_years_and_platform_ones_by_the_policy(host):
    assert _backup.forget_args(host, "audit") == [
        "forget", "--prune", "--group-by", "host,tags", "--tag", "audit", "--keep-within", "6y",
    ]  # fmt: skip
    assert _backup.forget_args(host, "platform")[-6:] == [
        "--keep-daily", "7", "--keep-weekly", "5", "--keep-monthly", "12",
    ]  # fmt: skip
    # Three runs: the policy keeps one platform snapshot per day (all three runs fall on one day: one
    # kept), every audit snapshot within six years.
    for _ in range(3):
        assert BackupRun(host, Runner(), Clock()).run()["ok"]
    tags = sorted(s["tags"][0] for s in snapshots(host))
    assert tags == ["audit", "audit", "audit", "platform"]


def test_a_failed_run_is_recorded_with_restics_reason_and_keeps_the_last_success(host, tmp_path):
    clock = Clock()
    good = BackupRun(host, Runner(), clock).run()
    wrong = tmp_path / "etc" / "wrong"
    wrong.write_text("not-the-password-at-all")
    bad_settings = BackupSettings.from_mapping({**_as_mapping(host), "password_file": str(wrong)})
    bad = BackupRun(bad_settings, Runner(), clock).run()
    assert not bad["ok"]
    assert bad["error"].startswith("restic backup (platform): exit code 1: ")
    assert "wrong password" in bad["error"]
    assert "not-the-password-at-all" not in bad["error"]
    assert bad["last_success"] == good["finished"]
    again = BackupRun(bad_settings, Runner(), clock).run()
    assert again["failures_in_a_row"] == 2
    # The dumps never stay behind, whatever failed.
    assert not os.path.exists(host.dump_path("app_hello"))
    report = _backup.summary(_backup.read_state(host.state_file), clock.now, 36 * 3600)
    assert report["attention"] == [f"the last backup failed: {again['error']}", "no check has run yet"]


def test_check_reads_the_repository_back_and_records_the_outcome(host):
    clock = Clock()
    BackupRun(host, Runner(), clock).run()
    entry = BackupRun(host, Runner(), clock).check("100%")
    assert entry["ok"], entry["error"]
    # A damaged pack file is found.
    packs = sorted((Path(host.repository) / "data").rglob("*"))
    victim = next(p for p in packs if p.is_file())
    victim.chmod(0o600)
    victim.write_bytes(b"\x00" * victim.stat().st_size)
    damaged = BackupRun(host, Runner(), clock).check("100%")
    assert not damaged["ok"]
    assert damaged["error"].startswith("restic check: exit code 1")
    report = _backup.summary(_backup.read_state(host.state_file), clock.now, 36 * 3600)
    assert report["attention"][0].startswith("the last check failed")


def test_summary_asks_for_attention_when_backups_stopped(host):
    clock = Clock()
    BackupRun(host, Runner(), clock).run()
    BackupRun(host, Runner(), clock).check()
    state = _backup.read_state(host.state_file)
    assert _backup.summary(state, clock.now, 3600)["attention"] == []
    later = _backup.summary(state, clock.now + 2 * 86400, 36 * 3600)
    assert later["attention"] == ["no successful backup for more than 36 h", "no successful check for more than 36 h"]


# -- restore -------------------------------------------------------------------------------------------------
def run_plan(steps: list[_backup.RestoreStep], runner: Runner) -> None:
    for step in steps:
        if step.stdout_file:
            with open(step.stdout_file, "wb") as out:
                result = runner(step.argv, stdout=out)
        elif step.stdin_file:
            with open(step.stdin_file, "rb") as source:
                result = runner(step.argv, stdin=source)
        else:
            result = runner(step.argv)
        assert result.returncode == 0, (step.description, result.stderr)


def test_backup_wipe_restore_gives_back_identical_files_and_the_dump(host, tmp_path):
    data = Path(host.apps_data_dir)
    before = tree_hashes(data / "hello")
    platform_before = tree_hashes(tmp_path / "var" / "lib" / "deploy")
    assert BackupRun(host, Runner(), Clock()).run()["ok"]
    shutil.rmtree(data / "hello")
    shutil.rmtree(tmp_path / "var" / "lib" / "deploy")
    (data / "other" / "x").write_text("changed after the backup\n")
    work = private_dir(tmp_path / "work")
    runner = Runner()
    steps = restore_plan(host, "latest", ["hello"], platform=True, work_dir=str(work))
    run_plan(steps, runner)
    assert tree_hashes(data / "hello") == before
    assert tree_hashes(tmp_path / "var" / "lib" / "deploy") == platform_before
    # Only what was asked for: the other app's data is untouched.
    assert (data / "other" / "x").read_text() == "changed after the backup\n"
    assert runner.restored == {"app_hello": DUMP + b"app_hello"}
    load = next(call for call in runner.calls if "pg_restore" in call)
    assert {"--clean", "--if-exists", "--single-transaction", "--exit-on-error", "--role=app_hello"} <= set(load)


def test_a_fresh_host_restores_the_latest_snapshot_of_the_host_it_replaces(host, tmp_path):
    assert BackupRun(host, Runner(), Clock()).run()["ok"]
    fresh = BackupSettings.from_mapping({**_as_mapping(host), "hostname": "fresh.lab.test"})
    steps = restore_plan(fresh, "latest", ["hello"], platform=False, work_dir=str(tmp_path), source_host="app.lab.test")
    assert steps[0].argv[steps[0].argv.index("--host") + 1] == "app.lab.test"
    shutil.rmtree(Path(host.apps_data_dir) / "hello")
    run_plan(steps, Runner())
    assert (Path(host.apps_data_dir) / "hello" / "notes.txt").read_text() == "patient 1\n"
    # Without naming it, "latest" means the fresh host's own, of which there is none.
    own = restore_plan(fresh, "latest", ["hello"], platform=False, work_dir=str(tmp_path))
    assert Runner()(own[0].argv).returncode != 0


def test_a_snapshot_id_is_restored_as_named(host, tmp_path):
    assert BackupRun(host, Runner(), Clock()).run()["ok"]
    first = next(s for s in snapshots(host) if s["tags"] == ["platform"])["short_id"]
    assert _backup.SNAPSHOT_RE.fullmatch(first)
    notes = Path(host.apps_data_dir) / "hello" / "notes.txt"
    notes.write_text("patient 1, amended\n")
    run_plan(restore_plan(host, first, ["hello"], platform=False, work_dir=str(tmp_path)), Runner())
    assert notes.read_text() == "patient 1\n"


@pytest.mark.parametrize(
    ("snapshot", "apps", "platform", "message"),
    [
        ("latest\n", ["hello"], False, "snapshot 'latest\\n' is not 'latest' or a snapshot ID"),
        ("abc", ["hello"], False, "snapshot 'abc' is not"),
        ("latest", ["Hello"], False, "apps[0] ('Hello') is not an app name"),
        ("latest", ["hello", "ghost"], False, "apps[1] ('ghost') is not an app this host backs up"),
        ("latest", [], False, "nothing to restore"),
    ],
)
def test_a_bad_restore_request_is_refused_before_anything_runs(host, snapshot, apps, platform, message):
    with pytest.raises(ValueError, match="^" + _re_escape(message)):
        restore_plan(host, snapshot, apps, platform=platform, work_dir="/tmp")


def test_a_bad_source_host_is_refused(host):
    with pytest.raises(ValueError, match="source host 'a b' is not a host name"):
        restore_plan(host, "latest", ["hello"], platform=False, work_dir="/tmp", source_host="a b")


# -- settings -------------------------------------------------------------------------------------------------
GOOD = {
    "repository": "sftp:restic@backup.lab.test:/srv/restic/repo",
    "ssh_command": ["ssh", "-i", "/k", "h", "-s", "sftp"],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "unknown backup settings: colour"),
        ({"repository": "sftp:restic@backup:/srv/repo\n"}, "repository 'sftp:restic@backup:/srv/repo\\n' is not"),
        ({"repository": "s3:http://minio/bucket"}, "repository 's3:http://minio/bucket' is not"),
        ({"repository": "relative/repo"}, "repository 'relative/repo' is not"),
        ({"repository": "/srv/../etc"}, "repository '/srv/../etc' is not"),
        ({"databases": ["hello"]}, "databases[0] ('hello') is not an app database"),
        ({"apps": ["ok", "Bad"]}, "apps[1] ('Bad') is not an app name"),
        ({"keep_daily": True}, "keep_daily must be a whole number"),
        ({"keep_daily": -1}, "keep_daily must be a whole number"),
        ({"keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}, "keep_daily, keep_weekly and keep_monthly are all 0"),
        ({"audit_keep_within": "6 years"}, "audit_keep_within '6 years' is not a restic duration"),
        ({"ssh_command": []}, "an sftp repository needs ssh_command"),
        ({"platform_paths": ["etc/ssh"]}, "platform_paths[0] ('etc/ssh') must be an absolute path"),
        ({"state_file": 5}, "state_file must be a string"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(change, message):
    with pytest.raises(ValueError, match="^" + _re_escape(message)):
        BackupSettings.from_mapping({**GOOD, **change})


def test_good_settings_build_restics_command_line_with_the_ssh_command():
    settings = BackupSettings.from_mapping(GOOD)
    argv = _backup.restic(settings, "snapshots")
    assert argv[:3] == ["restic", "--repo", GOOD["repository"]]
    assert argv[argv.index("--option") + 1] == "sftp.command=ssh -i /k h -s sftp"
    assert argv[-1] == "snapshots"
    for repository in ("s3:https://s3.example.org/bucket/host1", "rest:https://rest.example.org:8000/", "/srv/repo"):
        BackupSettings.from_mapping({"repository": repository})


def test_the_state_file_is_not_written_where_others_could_swap_it(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="may be changed by others than root"):
        _backup.write_private(str(shared / "state.json"), b"{}")
    assert not (shared / "state.json").exists()


def test_a_damaged_state_file_counts_as_a_failure(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    state = _backup.read_state(str(path))
    assert _backup.summary(state, 0, 1)["attention"][0].startswith(
        f"the last backup failed: {path}: not a valid JSON object (Expecting"
    )


def test_a_state_file_the_safe_reader_refuses_counts_as_a_failure(tmp_path):
    """Root's record of the last backup is read like a settings file: a hard link or a file others
    could write is not believed."""
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"schema": _backup.SCHEMA, "backup": {"ok": True, "last_success": 0}}))
    path.chmod(0o600)
    assert _backup.read_state(str(path))["backup"]["ok"] is True
    os.link(path, tmp_path / "elsewhere")
    state = _backup.read_state(str(path))
    assert state["backup"] == {"ok": False, "error": f"{path}: 2 hard links (must be 1: another name could be written)"}
    (tmp_path / "elsewhere").unlink()
    path.chmod(0o666)
    assert "lets the group or others write it" in _backup.read_state(str(path))["backup"]["error"]
    assert _backup.read_state(str(tmp_path / "missing.json")) == {"schema": _backup.SCHEMA}


def _as_mapping(settings: BackupSettings) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.__dict__.items()}


def _re_escape(text: str) -> str:
    import re

    return re.escape(text)
