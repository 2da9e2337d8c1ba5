"""The shared audit-log writer and verifier: real files, an injected clock, no state file of the writer's own
(as the deploy engine uses it); the monitor's use of it is tested in test_github_repo_monitor.py."""

from __future__ import annotations

import gzip
import hashlib
import json
import stat
import sys
from pathlib import Path

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils import _audit_log
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._audit_log import (
    GENESIS,
    AuditLog,
    head_path,
    log_files,
    read_head,
    verify,
    verify_log,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "streamlit" / "deploys.log"


def write(log: Path, n: int, start: int = 0) -> AuditLog:
    writer = AuditLog(log, Clock())
    for i in range(start, start + n):
        writer.write("deploy_succeeded", app="demo", number=i)
    return writer


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines()


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in lines(log)]


def rewrite(log: Path, new_lines: list[str]) -> None:
    log.write_text("".join(line + "\n" for line in new_lines))


def test_records_chain_count_and_the_head_names_the_last(log):
    writer = write(log, 3)
    got = records(log)
    assert [r["seq"] for r in got] == [1, 2, 3]
    assert got[0]["prev"] == GENESIS
    assert got[0]["file_start"] is True
    assert "file_start" not in got[1]
    assert got[1]["prev"] == hashlib.sha256(lines(log)[0].encode()).hexdigest()
    assert got[0]["ts"] == "2027-01-15T08:00:01+00:00"  # the injected clock
    head = json.loads(head_path(log).read_text())
    assert head == {"count": 3, "last_hash": writer.prev, "segment": 1, "file": "deploys.log"}
    assert writer.prev == hashlib.sha256(lines(log)[-1].encode()).hexdigest()
    verdict = verify_log(log)
    assert verdict.ok, verdict.message
    assert verdict.message == (
        "audit log OK: 3 records in 1 files, chained from the first record ever; ends at record 3, as its head says"
    )


def test_files_are_0640_and_never_followed_through_a_link(log, tmp_path):
    write(log, 1)
    assert stat.S_IMODE(log.stat().st_mode) == 0o640
    assert stat.S_IMODE(head_path(log).stat().st_mode) == 0o640
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("")
    other = tmp_path / "streamlit" / "linked.log"
    other.symlink_to(elsewhere)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        AuditLog(other, Clock()).write("x")
    assert elsewhere.read_text() == ""


def test_reserved_field_names_are_refused(log):
    with pytest.raises(ValueError, match="reserved field names: prev, seq"):
        AuditLog(log, Clock()).write("x", prev="0", seq=1)
    assert not log.exists()


@pytest.mark.parametrize(
    ("cut", "problem"),
    [
        (lambda ls: ls[:-1], "the log ends at record 4 ("),
        (lambda ls: ls[:-3], "the log ends at record 2 ("),
        (lambda ls: ls[1:], "line 1: the file begins in the middle of the chain (record 2, not a file's first)"),
        (lambda ls: ls[3:], "line 1: the file begins in the middle of the chain (record 4"),
        (lambda ls: [*ls[:-1], ls[-1].replace('"number": 4', '"number": 5')], "its head says record 5"),
        (lambda ls: [ls[0], *ls[2:]], "line 2: chain broken"),
        (lambda ls: [], "no records, but its head says 5"),
    ],
    ids=["last", "last-three", "first", "first-three", "last-edited", "middle", "all"],
)
def test_a_cut_or_edit_at_either_end_fails_verification(log, cut, problem):
    write(log, 5)
    rewrite(log, cut(lines(log)))
    verdict = verify_log(log)
    assert not verdict.ok
    assert verdict.message.startswith("audit log NOT OK: ")
    assert problem in verdict.message


def test_a_writer_that_finds_the_end_cut_records_a_break_and_goes_on(log):
    write(log, 5)
    rewrite(log, lines(log)[:-2])
    write(log, 1, start=10)  # a new process, no state of its own: the head tells
    got = records(log)
    assert [r["event"] for r in got] == ["deploy_succeeded"] * 3 + ["chain_break", "deploy_succeeded"]
    brk = got[3]
    assert brk["reason"] == "the log ends at record 3, its head says 5"
    assert (brk["seq"], brk["segment"], brk["expected_seq"], brk["found_seq"]) == (4, 2, 5, 3)
    assert brk["prev"] == brk["found_hash"] == hashlib.sha256(lines(log)[2].encode()).hexdigest()
    assert read_head(log).segment == 2
    verdict = verify_log(log)
    assert not verdict.ok
    assert verdict.breaks == ["deploys.log line 4: the log ends at record 3, its head says 5"]
    assert "5 records in 1 files, chained from the first record ever, with 1 recorded break(s)" in verdict.message


def test_an_edited_last_line_is_a_break_for_the_next_writer(log):
    write(log, 3)
    rewrite(log, [*lines(log)[:-1], lines(log)[-1].replace("demo", "omed")])
    write(log, 1)
    assert records(log)[3]["reason"] == "the log's last record is not the one its head names (record 3)"


def test_a_removed_head_is_a_break_and_fails_verification(log):
    write(log, 3)
    head_path(log).unlink()
    assert "its head is missing" in verify_log(log).message
    write(log, 1)
    assert records(log)[3]["reason"] == "its head is missing"


def test_a_head_that_is_not_a_head_is_a_break(log):
    write(log, 2)
    head_path(log).write_text("{}")
    assert "its head is not a head" in verify_log(log).message
    write(log, 1)
    assert records(log)[2]["event"] == "chain_break"


def test_a_crash_between_the_append_and_the_head_loses_nothing(log):
    write(log, 2)
    old_head = head_path(log).read_bytes()
    write(log, 1)
    head_path(log).write_bytes(old_head)  # as if the writer died before replacing the head
    verdict = verify_log(log)
    assert verdict.ok, verdict.message
    assert "one record past its head (record 2)" in verdict.message
    write(log, 1)
    assert [r["event"] for r in records(log)] == ["deploy_succeeded"] * 4  # no break
    assert verify_log(log).ok


def test_the_chain_goes_on_across_rotations_and_compressed_files(log):
    writer = write(log, 2)
    log.rename(log.with_name("deploys.log-20261101"))  # logrotate, dateext, no copytruncate
    writer.write("deploy_failed", app="demo")
    rotated = log.with_name("deploys.log-20261201")
    log.rename(rotated)
    with open(rotated, "rb") as plain, gzip.open(str(rotated) + ".gz", "wb") as packed:
        packed.write(plain.read())
    rotated.unlink()
    write(log, 2)  # a new writer: the empty file chains to the head
    assert [p.name for p in log_files(log)] == ["deploys.log-20261101", "deploys.log-20261201.gz", "deploys.log"]
    assert records(log)[0]["seq"] == 4
    assert records(log)[0]["file_start"] is True
    verdict = verify_log(log)
    assert verdict.ok, verdict.message
    assert "5 records in 3 files, chained from the first record ever; ends at record 5" in verdict.message
    # The oldest file deleted (retention): said, not refused.
    log.with_name("deploys.log-20261101").unlink()
    verdict = verify_log(log)
    assert verdict.ok, verdict.message
    assert "chained from record 3 (older files not given)" in verdict.message


def test_a_rotated_file_that_lost_lines_breaks_the_chain_at_the_next_file(log):
    write(log, 3)
    rotated = log.with_name("deploys.log-20261101")
    log.rename(rotated)
    write(log, 1)
    rewrite(rotated, lines(rotated)[:-1])
    verdict = verify_log(log)
    assert not verdict.ok
    assert "deploys.log line 1: chain broken" in verdict.message


def test_two_writers_keep_one_chain(log):
    first, second = AuditLog(log, Clock()), AuditLog(log, Clock())
    for _ in range(3):
        first.write("a")
        second.write("b")
    assert [r["seq"] for r in records(log)] == [1, 2, 3, 4, 5, 6]
    assert verify_log(log).ok


def test_a_log_from_before_heads_goes_on_and_what_its_writer_remembers_is_checked(log):
    log.parent.mkdir(parents=True)
    prev, old = GENESIS, []
    for i in range(3):  # the monitor's records before this library: no seq, no head
        line = json.dumps({"event": "old", "i": i, "prev": prev, "ts": "2026-11-01T00:00:00+00:00"}, sort_keys=True)
        old.append(line)
        prev = hashlib.sha256(line.encode()).hexdigest()
    rewrite(log, old)
    verdict = verify_log(log)
    assert verdict.ok, verdict.message
    assert verdict.message.endswith("; no head yet")
    AuditLog(log, Clock(), last_hash=prev).write("new")
    assert verify_log(log).ok
    assert verify_log(log, known_hash=prev).ok
    assert not verify_log(log, known_hash="f" * 64).ok
    # A writer that remembers a hash the file no longer holds (its end was cut before any head existed):
    log2 = log.with_name("other.log")
    rewrite(log2, old[:2])
    AuditLog(log2, Clock(), last_hash=prev).write("new")
    assert json.loads(lines(log2)[2])["event"] == "chain_break"
    assert "does not hold the last record its writer remembers" in json.loads(lines(log2)[2])["reason"]


def test_verify_over_an_explicit_list_of_files(log):
    write(log, 2)
    assert verify([log]).ok  # without a head: the chain alone
    assert verify([log], head=head_path(log)).ok
    assert not verify([log], head=head_path(log), known_hash="a" * 64).ok
    broken = log.with_name("garbage.log")
    broken.write_text("not json\n")
    verdict = verify([broken])
    assert (verdict.ok, verdict.message) == (False, "audit log NOT OK: garbage.log line 1: not a JSON object")


def test_the_module_imports_nothing_outside_the_standard_library():
    source = Path(_audit_log.__file__).read_text()
    imported = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imported <= set(sys.stdlib_module_names)
