"""A deterministic tar of source files (or of a directory tree), installed on a host by one `unarchive` task
instead of a `copy` per file.

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


def source_tree_archive(root: str | Path, file_mode: int = 0o644, dir_mode: int = 0o755) -> bytes:
    """An uncompressed tar of the tree under `root` (not `root` itself), names relative to it.

    Every directory gets `dir_mode`, every file `file_mode`; refuses anything but directories and regular
    files (a symlink could pull in a file from elsewhere on the controller) and names that are not plain."""
    for mode in (file_mode, dir_mode):
        if not 0 <= mode <= 0o777:
            raise SourceArchiveError(f"mode {mode:#o} is not a file mode (0 to 0o777)")
    base = Path(root)
    if not stat.S_ISDIR(base.lstat().st_mode):
        raise SourceArchiveError(f"{str(root)!r}: not a directory")
    entries: list[tuple[str, Path, bool]] = []
    for path in sorted(base.rglob("*")):
        relative = path.relative_to(base)
        if not all(_MEMBER.fullmatch(part) for part in relative.parts):
            raise SourceArchiveError(f"{str(path)!r}: not a plain file name")
        kind = path.lstat().st_mode
        if stat.S_ISDIR(kind):
            entries.append((relative.as_posix(), path, True))
        elif stat.S_ISREG(kind):
            entries.append((relative.as_posix(), path, False))
        else:
            raise SourceArchiveError(f"{str(path)!r}: not a regular file or a directory")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, path, is_dir in sorted(entries):
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if is_dir:
                info.type = tarfile.DIRTYPE
                info.mode = dir_mode
                archive.addfile(info)
            else:
                data = path.read_bytes()
                info.type = tarfile.REGTYPE
                info.mode = file_mode
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return out.getvalue()
