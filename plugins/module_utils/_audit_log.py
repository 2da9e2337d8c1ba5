"""Hash-chained, append-only JSON-lines audit logs whose both ends are anchored.

Shared by the github-repo-monitor daemon (installed beside it as a plain `_audit_log` module) and the
deploy engine (/var/log/streamlit/deploys.log): standard library only, no globals, the clock injected.

Records -- one JSON object per line, keys sorted:

    {"event": "...", "ts": "2026-12-03T11:42:39+00:00", <fields>, "seq": 7, "prev": "<64 hex>"}

- `prev` is the SHA-256 of the previous line's bytes (64 zeros before the first record ever), so an
  edited or removed line breaks the chain at the next one;
- `seq` numbers the records from 1 (the first record ever); it goes on across rotated files;
- `file_start: true` marks the first record written into a new (absent or empty) file: a file whose
  first line lacks it lost its first lines;
- the event `chain_break` starts a new segment (`segment` n+1): the writer found that the file does not
  end where its head says (lines removed or changed at the end). It chains onto what it found and names
  what it expected (`expected_seq`, `expected_hash`, `found_seq`, `found_hash`, `reason`); `verify`
  reports every such break as a failure, since records were lost.

The head -- `<log>.head` (e.g. deploys.log.head), JSON `{"count": seq of the last record, "last_hash":
hash of the last line, "segment": n, "file": name of the log}` -- is replaced atomically (temporary
file, fsync, rename) after each append, under the same exclusive lock as the append. It anchors the
end without any state of the writer's own: `verify` checks that the files end at the record the head
names, and `write` checks it before each append. A writer that dies between its append and the head
update leaves one record past the head: `write` and `verify` accept a record chained right after it.
The head sits in the log's directory and has the log's owner and mode; give the directory to the
writer alone (root for deploys.log).

Rotation: the writer opens the file per record and holds no descriptor, so logrotate may move it away
(no copytruncate); the next record starts the new file, chained to the head. Rotated files are
`<log>-<suffix>` (dateext), optionally `.gz`.

API:

    log = AuditLog(path, clock, last_hash=None, *, mode=0o640)
        # `last_hash`: the chain's last hash as the caller's own state remembers it; used only while
        # there is no head yet (e.g. a log written before heads existed): the file must then contain it.
    digest = log.write("deploy_succeeded", app="demo", sha="...")   # -> hash of the new line
    log.prev, log.count                                             # last hash and seq written
    files = log_files(path)                                         # rotated (oldest first), current
    verdict = verify(files, head=head_path(path), known_hash=None)  # -> Verdict(ok, message, ...)
    verdict = verify_log(path, known_hash=None)                     # the same for one log's files

`known_hash` is a hash the caller saved after a write (the monitor's state): it must be in the chain.
Limits: a hash chain without a secret proves nothing against someone who rewrites every line after an
edit and the head too; shipping the records off the host is what protects against that. A whole file
that is missing before the oldest one given (deleted by retention) is reported, not refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
HASH_RE = re.compile(r"[0-9a-f]{64}")
RESERVED_FIELDS = frozenset({"ts", "event", "seq", "prev", "file_start"})
_MAX_HEAD_BYTES = 4096
_TAIL_STEP = 8192


@dataclass(frozen=True)
class Head:
    """Where the chain ends: the seq and hash of its last record, and the current segment."""

    count: int
    last_hash: str
    segment: int = 1


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str
    records: int = 0
    files: int = 0
    breaks: list[str] = field(default_factory=list)


def head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def log_files(path: Path) -> list[Path]:
    """The rotated files (logrotate's dateext names, .gz too), oldest first, then the current one."""
    rotated = sorted(p for p in path.parent.glob(path.name + "-*") if p.is_file() and not p.is_symlink())
    return [*rotated, *([path] if path.exists() else [])]


def _hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _seq(record: dict[str, Any] | None) -> int | None:
    value = record.get("seq") if record else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _last_line(fd: int) -> bytes | None:
    """The file's last non-empty line, read backwards from its end (the log may be large)."""
    position = os.fstat(fd).st_size
    tail = b""
    while position > 0:
        step = min(_TAIL_STEP, position)
        position -= step
        tail = os.pread(fd, step, position) + tail
        lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
        if len(lines) == 2 or position == 0:
            return lines[-1] or None
    return None


def read_head(path: Path) -> Head | None:
    """The head of the log at `path`; None when there is none. ValueError when it exists but is not a head."""
    return _read_head_file(head_path(path))


def _read_head_file(path: Path) -> Head | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"its head cannot be opened ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("its head is not a regular file")
        raw = os.read(fd, _MAX_HEAD_BYTES + 1)
    finally:
        os.close(fd)
    data = _parse(raw) if len(raw) <= _MAX_HEAD_BYTES else None
    count = data.get("count") if data else None
    last_hash = data.get("last_hash") if data else None
    segment = data.get("segment", 1) if data else None
    if (
        not isinstance(count, int)
        or isinstance(count, bool)
        or count < 0
        or not isinstance(last_hash, str)
        or not HASH_RE.fullmatch(last_hash)
        or not isinstance(segment, int)
        or isinstance(segment, bool)
    ):
        raise ValueError("its head is not a head (count, last_hash)")
    return Head(count, last_hash, segment)


def _write_head(path: Path, head: Head, mode: int) -> None:
    target = head_path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        data = {"count": head.count, "last_hash": head.last_hash, "segment": head.segment, "file": path.name}
        os.fchmod(fd, mode)
        os.write(fd, json.dumps(data, sort_keys=True).encode() + b"\n")
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be synced
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class AuditLog:
    """Appends records to one hash-chained JSON-lines file and keeps its head (see the module docstring).

    Each append happens under an exclusive lock and chains to the file's last line as it is then, so two
    writers (a daemon and an operator's one-off run) keep one chain.
    """

    def __init__(
        self, path: Path, clock: Callable[[], float], last_hash: str | None = None, *, mode: int = 0o640
    ) -> None:
        self.path = path
        self.clock = clock
        self.mode = mode
        self.prev = GENESIS
        self.count = 0
        self._remembered = last_hash if isinstance(last_hash, str) and HASH_RE.fullmatch(last_hash) else None
        if self._remembered:
            self.prev = self._remembered
        with contextlib.suppress(ValueError):
            head = read_head(path)
            if head is not None:
                self.prev, self.count = head.last_hash, head.count

    def write(self, event: str, **fields: Any) -> str:
        """Append one record; return the hash of its line. Fields must not use the reserved names."""
        clash = RESERVED_FIELDS & set(fields)
        if clash:
            raise ValueError(f"reserved field names: {', '.join(sorted(clash))}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, self.mode)
        try:
            with contextlib.suppress(OSError):  # no lock where the file system has none: one writer is the norm
                fcntl.flock(fd, fcntl.LOCK_EX)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{self.path} is not a regular file")
            lines, head = self._records(fd, event, fields)
            os.write(fd, b"".join(line + b"\n" for line in lines))
            os.fsync(fd)
            _write_head(self.path, head, self.mode)
        finally:
            os.close(fd)  # releases the lock
        self.prev, self.count = head.last_hash, head.count
        return head.last_hash

    def _records(self, fd: int, event: str, fields: dict[str, Any]) -> tuple[list[bytes], Head]:
        """The line(s) to append: a chain_break first when the file does not end where it should."""
        problem = None
        try:
            expected = read_head(self.path)
        except ValueError as exc:
            expected, problem = None, str(exc)
        tail = _last_line(fd)
        if expected is None and problem is None:
            problem = self._without_head(fd, tail)
        segment = expected.segment if expected else 1
        found_seq = None
        if tail is None:  # a new file: rotated away, or the first ever
            prev, seq = (expected.last_hash, expected.count) if expected else (self.prev, self.count)
        else:
            record = _parse(tail)
            prev, found_seq = _hash(tail), _seq(record)
            seq = found_seq if found_seq is not None else (expected.count if expected else self.count)
            follows = expected is not None and record is not None and record.get("prev") == expected.last_hash
            if problem is None and expected is not None and prev != expected.last_hash and not follows:
                if found_seq is None or found_seq < expected.count:
                    problem = f"the log ends at record {found_seq or '?'}, its head says {expected.count}"
                else:
                    problem = f"the log's last record is not the one its head names (record {expected.count})"
        lines: list[bytes] = []
        start = tail is None
        if problem is not None:
            segment, seq = segment + 1, seq + 1
            details = {
                "reason": problem,
                "segment": segment,
                "expected_seq": expected.count if expected else None,
                "expected_hash": expected.last_hash if expected else self._remembered,
                "found_seq": found_seq,
                "found_hash": prev if tail is not None else None,
            }
            lines.append(self._line("chain_break", details, seq, prev, start=start))
            prev, start = _hash(lines[-1]), False
        lines.append(self._line(event, fields, seq + 1, prev, start=start))
        return lines, Head(seq + 1, _hash(lines[-1]), segment)

    def _without_head(self, fd: int, tail: bytes | None) -> str | None:
        """No head yet (a log from before heads, or a new one): the hash the caller remembers must be in it."""
        if tail is None:
            return None
        if _seq(_parse(tail)) not in (None, 1):  # written by a writer that keeps a head: it was removed
            return "its head is missing"
        if self._remembered is None or _hash(tail) == self._remembered:
            return None
        remembered = self._remembered
        with os.fdopen(os.dup(fd), "rb") as handle:
            for line in handle:
                if _hash(line.rstrip(b"\n")) == remembered:
                    return None
        return f"the log does not hold the last record its writer remembers ({remembered[:12]}…)"

    def _line(self, event: str, fields: dict[str, Any], seq: int, prev: str, *, start: bool) -> bytes:
        ts = datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="seconds")
        record: dict[str, Any] = {"ts": ts, "event": event, **fields, "seq": seq, "prev": prev}
        if start:
            record["file_start"] = True
        return json.dumps(record, sort_keys=True).encode()


def _open(path: Path) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    return os.fdopen(fd, "rb")


class _Chain:
    """What `verify` has seen so far."""

    def __init__(self, known_hash: str | None) -> None:
        self.prev: str | None = None
        self.last_seq: int | None = None
        self.count = 0
        self.start = "from the first record ever"
        self.breaks: list[str] = []
        self.known_hash = known_hash
        self.found_known = known_hash is None
        self.recent: list[tuple[str, int | None]] = []  # the last two (hash, seq): the head may lag by one

    def add(self, where: str, line: bytes) -> str | None:
        """Take one line; return what is wrong with it, or None."""
        record = _parse(line)
        if record is None:
            return f"{where}: not a JSON object"
        seq = _seq(record)
        if self.prev is None:
            anchor = record.get("prev")
            if anchor != GENESIS:
                if seq is not None and not record.get("file_start"):
                    return (
                        f"{where}: the file begins in the middle of the chain (record {seq}, not a file's first): "
                        "its first lines were removed"
                    )
                shown = f"record {seq}" if seq is not None else f"{str(anchor)[:12]}…"
                self.start = f"from {shown} (older files not given)"
        elif record.get("prev") != self.prev:
            return f"{where}: chain broken (the previous record was changed or removed)"
        elif seq is not None and self.last_seq is not None and seq != self.last_seq + 1:
            return f"{where}: record {seq} follows record {self.last_seq}"
        if record.get("event") == "chain_break":
            self.breaks.append(f"{where}: {str(record.get('reason'))[:200]}")
        self.prev = _hash(line)
        self.last_seq = seq
        self.count += 1
        self.found_known = self.found_known or self.prev == self.known_hash
        self.recent = [*self.recent[-1:], (self.prev, seq)]
        return None

    def end(self, head: Head | None) -> tuple[str | None, str]:
        """(what is wrong with the end, a note about it)."""
        if head is None:
            if self.last_seq is not None:
                return "its head is missing", ""
            return None, "; no head yet"
        if self.count == 0:
            return (f"no records, but its head says {head.count}", "") if head.count else (None, "")
        last_hash, last_seq = self.recent[-1]
        if last_hash == head.last_hash:
            return None, f"; ends at record {last_seq or head.count}, as its head says"
        if len(self.recent) == 2 and self.recent[0][0] == head.last_hash:
            return None, f"; one record past its head (record {head.count}): a writer stopped before updating it"
        return (
            f"the log ends at record {last_seq or '?'} ({last_hash[:12]}…) where its head says record {head.count} "
            f"({head.last_hash[:12]}…): records at the end were removed or changed",
            "",
        )


def verify(paths: Sequence[Path], *, head: Path | None = None, known_hash: str | None = None) -> Verdict:
    """Check the chain within and across the files (oldest first) and both of its ends.

    `head`: the log's head file (`head_path(log)`); when given, the chain must end at the record it names.
    `known_hash`: a hash the caller remembers writing (its state); it must be in the chain.
    """
    chain = _Chain(known_hash)

    def fail(problem: str) -> Verdict:
        return Verdict(False, f"audit log NOT OK: {problem}", chain.count, len(paths), chain.breaks)

    for path in paths:
        try:
            with _open(path) as handle:
                for number, raw in enumerate(handle, 1):
                    problem = chain.add(f"{path.name} line {number}", raw.rstrip(b"\n"))
                    if problem:
                        return fail(problem)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            return fail(f"{path.name} cannot be read ({type(exc).__name__})")
    summary = f"{chain.count} records in {len(paths)} files, chained {chain.start}"
    note = ""
    if head is not None:
        try:
            problem, note = chain.end(_read_head_file(head))
        except ValueError as exc:
            problem = str(exc)
        if problem:
            return fail(f"{summary}; {problem}")
    if not chain.found_known:
        return fail(f"{summary}; the last record its writer remembers ({str(known_hash)[:12]}…) is not in it")
    if chain.breaks:
        return fail(f"{summary}, with {len(chain.breaks)} recorded break(s): " + "; ".join(chain.breaks))
    return Verdict(True, f"audit log OK: {summary}{note}", chain.count, len(paths), chain.breaks)


def verify_log(path: Path, *, known_hash: str | None = None) -> Verdict:
    """`verify` over one log's rotated and current files, with its head."""
    return verify(log_files(path), head=head_path(path), known_hash=known_hash)
