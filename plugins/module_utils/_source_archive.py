"""A deterministic tar of source files, installed on a host by one `unarchive` task instead of a `copy` per file.

The same files give the same bytes (names sorted, owner root, mtime 0, one mode), so `unarchive`'s
comparison finds nothing to change on a re-run.
"""

from __future__ import annotations

import io
import re
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path

_MEMBER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class SourceArchiveError(ValueError):
    pass


def source_archive(files: Sequence[str | Path], mode: int = 0o644) -> bytes:
    """An uncompressed tar of `files`, each at the top level under its own name.

    Refuses a name that is not a plain file name, two files of one name, and anything that is not a
    regular file (a symlink could pull in a file from elsewhere on the controller)."""
    if not 0 <= mode <= 0o777:
        raise SourceArchiveError(f"mode {mode:#o} is not a file mode (0 to 0o777)")
    members: dict[str, Path] = {}
    for entry in files:
        path = Path(entry)
        name = path.name
        if not _MEMBER.fullmatch(name):
            raise SourceArchiveError(f"{str(entry)!r}: not a plain file name")
        if name in members:
            raise SourceArchiveError(f"{str(entry)!r}: {name!r} is already in the archive ({members[name]})")
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            raise SourceArchiveError(f"{str(entry)!r}: not a regular file")
        members[name] = path
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name in sorted(members):
            data = members[name].read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.type = tarfile.REGTYPE
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()
