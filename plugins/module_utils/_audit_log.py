"""Temporary: the hash-chained JSON-lines audit writer (moved from the monitor)."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def now_iso(clock: Callable[[], float]) -> str:
    return datetime.fromtimestamp(clock(), UTC).isoformat(timespec="seconds")


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
