"""Size limits of the apps' data directories: project quotas where the file system has them.

A data directory with `data: {size: 10G}` gets a project of its own (`project_id`, derived from the app's
name) on the file system that holds it: the directory and everything in it carry the project id with the
inherit flag (FS_IOC_FSSETXATTR, what `chattr +P -p` does), and the project's block hard limit is set with
quotactl_fd(2) (what `setquota -P` / `xfs_quota limit -p` do). That needs ext4 mounted with `prjquota` (and
the `project,quota` features) or XFS mounted with `prjquota`/`pquota`; `support()` reads the mount from
/proc/self/mountinfo and says why not otherwise. Without it nothing is enforced: the size is only compared
with the usage (`usage_bytes`) and shown by `secure-streamlit status`.

Standard library only (the host's deployer has no Ansible); the mount table is passed in, the kernel calls
are made on descriptors opened without following links.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import re
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SIZE_RE = re.compile(r"([1-9][0-9]{0,5})([KMGT])")
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MIN_SIZE = 1 << 20  # below 1 MiB a limit only stops the app from starting
# Project ids of the platform: a block of its own so ids chosen by hand elsewhere (small numbers) stay free.
PROJECT_BASE = 0x53530000
PROJECT_SPAN = 1 << 16

# linux/fs.h: struct fsxattr (u32 xflags, extsize, nextents, projid, cowextsize; 8 bytes pad).
FSXATTR = struct.Struct("=IIIII8s")
FS_IOC_FSGETXATTR = 0x801C581F  # _IOR('X', 31, struct fsxattr)
FS_IOC_FSSETXATTR = 0x401C5820  # _IOW('X', 32, struct fsxattr)
FS_XFLAG_PROJINHERIT = 0x00000200
# linux/quota.h: struct if_dqblk (limits in 1 KiB blocks), Q_GETQUOTA/Q_SETQUOTA, PRJQUOTA.
DQBLK = struct.Struct("=QQQQQQQQI")
QIF_BLIMITS = 1
Q_GETQUOTA = 0x800007
Q_SETQUOTA = 0x800008
PRJQUOTA = 2
SYS_QUOTACTL_FD = 443  # the same number on every architecture (added in Linux 5.14)
# Mount options that switch project quota accounting on, per file system.
PROJECT_OPTIONS = {"ext4": ("prjquota",), "xfs": ("prjquota", "pquota", "pqnoenforce")}
NEEDED = {
    "ext4": "the project and quota features (tune2fs -O project,quota) and the mount option prjquota",
    "xfs": "the mount option prjquota (or pquota)",
}


class QuotaError(Exception):
    """A quota could not be applied; the message names the directory and the kernel's reason."""


def parse_size(value: object) -> int | None:
    """Bytes of a data size such as "500M" or "10G" (K, M, G, T: powers of 1024), or None."""
    if not isinstance(value, str):
        return None
    match = SIZE_RE.fullmatch(value)
    if match is None:
        return None
    size = int(match.group(1)) * UNITS[match.group(2)]
    return size if size >= MIN_SIZE else None


def size_problem(value: object) -> str | None:
    """Why `value` is not a data size, or None."""
    if parse_size(value) is None:
        return "must be a size such as 500M or 10G (a whole number and K, M, G or T), at least 1M"
    return None


def project_id(app: str) -> int:
    """The app's project id: stable across runs and hosts, within the platform's block."""
    digest = hashlib.sha256(app.encode()).digest()
    return PROJECT_BASE + int.from_bytes(digest[:4], "big") % PROJECT_SPAN


def project_id_clashes(apps: list[str]) -> list[str]:
    """Pairs of apps whose project ids are equal (they would share one limit): 'a and b', or []."""
    seen: dict[int, str] = {}
    clashes = []
    for app in apps:
        pid = project_id(app)
        if pid in seen:
            clashes.append(f"{seen[pid]} and {app}")
        else:
            seen[pid] = app
    return clashes


# -- the mount ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str
    options: tuple[str, ...]  # the mount's and the super block's options


@dataclass(frozen=True)
class Support:
    enforced: bool
    mount: Mount | None
    reason: str  # why not ("" when enforced)


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """/proc/self/mountinfo as Mounts, in the kernel's order (later mounts hide earlier ones)."""
    mounts = []
    for line in text.splitlines():
        parts = line.split(" ")
        if "-" not in parts:
            continue
        dash = parts.index("-")
        if dash < 6 or len(parts) < dash + 4:
            continue
        options = tuple(parts[5].split(",")) + tuple(parts[dash + 3].split(","))
        mounts.append(Mount(_unescape(parts[4]), parts[dash + 1], _unescape(parts[dash + 2]), options))
    return mounts


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount that holds the absolute, resolved `path`: the longest mount point above it, the last one
    mounted when several share it."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.mount_point.rstrip("/") or "/"
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")):
            best = mount
    return best


def support(path: str, mounts: list[Mount]) -> Support:
    """Whether project quotas can limit directories under `path` (which must exist), and why not."""
    mount = mount_of(os.path.realpath(path), mounts)
    if mount is None:
        return Support(False, None, f"no mount holds {path}")
    options = PROJECT_OPTIONS.get(mount.fstype)
    if options is None:
        return Support(
            False,
            mount,
            f"{path} is on {mount.fstype} ({mount.mount_point}), which has no project quotas here: "
            "data sizes need ext4 or XFS",
        )
    if not any(option in mount.options for option in options):
        return Support(
            False,
            mount,
            f"{path} is on {mount.fstype} ({mount.mount_point}) mounted without project quotas: "
            f"it needs {NEEDED[mount.fstype]}",
        )
    return Support(True, mount, "")


def read_mounts(path: str = "/proc/self/mountinfo") -> list[Mount]:
    return parse_mountinfo(Path(path).read_text(encoding="utf-8", errors="replace"))


# -- the kernel calls --------------------------------------------------------------------------------------
def get_project(fd: int) -> tuple[int, int]:
    """The (xflags, project id) of an open file."""
    raw = fcntl.ioctl(fd, FS_IOC_FSGETXATTR, bytes(FSXATTR.size))
    xflags, _extsize, _nextents, projid, _cow, _pad = FSXATTR.unpack(raw)
    return xflags, projid


def set_project(fd: int, projid: int, *, inherit: bool) -> bool:
    """Give an open file (or directory, with the inherit flag) the project id; True when it changed."""
    raw = bytearray(fcntl.ioctl(fd, FS_IOC_FSGETXATTR, bytes(FSXATTR.size)))
    xflags, extsize, nextents, current, cow, pad = FSXATTR.unpack(raw)
    wanted = xflags | FS_XFLAG_PROJINHERIT if inherit else xflags
    if current == projid and wanted == xflags:
        return False
    fcntl.ioctl(fd, FS_IOC_FSSETXATTR, FSXATTR.pack(wanted, extsize, nextents, projid, cow, pad))
    return True


def _quotactl_fd(fd: int, cmd: int, qid: int, buffer: ctypes.Array[ctypes.c_char]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    result = libc.syscall(
        ctypes.c_long(SYS_QUOTACTL_FD), ctypes.c_uint(fd), ctypes.c_uint(cmd), ctypes.c_int(qid), buffer
    )
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))


def get_limit(mount_fd: int, projid: int) -> int:
    """The project's block hard limit in bytes (0: none)."""
    buffer = ctypes.create_string_buffer(DQBLK.size)
    _quotactl_fd(mount_fd, (Q_GETQUOTA << 8) | PRJQUOTA, projid, buffer)
    return int(DQBLK.unpack(buffer.raw)[0]) * 1024


def set_limit(mount_fd: int, projid: int, size: int) -> None:
    """Set the project's block hard and soft limit to `size` bytes (rounded up to KiB)."""
    blocks = -(-size // 1024)
    buffer = ctypes.create_string_buffer(DQBLK.pack(blocks, blocks, 0, 0, 0, 0, 0, 0, QIF_BLIMITS), DQBLK.size)
    _quotactl_fd(mount_fd, (Q_SETQUOTA << 8) | PRJQUOTA, projid, buffer)


def _open_nofollow(name: str, dir_fd: int) -> int | None:
    """A descriptor of a regular file or directory in dir_fd, or None for anything else (links, fifos)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.ENOENT):
            return None
        raise
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return fd
    os.close(fd)
    return None


def tag_tree(directory: str, projid: int) -> int:
    """Give `directory` and everything below it the project id (directories inheriting it); return how many
    entries changed. Links are never followed; other mounts below are left alone."""
    changed = 0
    top = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        device = os.fstat(top).st_dev
        changed += set_project(top, projid, inherit=True)
    finally:
        os.close(top)
    for _root, dirs, files, root_fd in os.fwalk(directory, follow_symlinks=False):
        for name in [*dirs, *files]:
            fd = _open_nofollow(name, root_fd)
            if fd is None:
                continue
            try:
                info = os.fstat(fd)
                if info.st_dev != device:
                    dirs[:] = [d for d in dirs if d != name]
                    continue
                changed += set_project(fd, projid, inherit=stat.S_ISDIR(info.st_mode))
            finally:
                os.close(fd)
    return changed


def usage_bytes(directory: str) -> int:
    """Bytes allocated under `directory` (what `du -s` counts), without following links; 0 if missing."""
    try:
        top = os.stat(directory, follow_symlinks=False)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(top.st_mode):
        return 0
    total = top.st_blocks * 512
    seen: set[tuple[int, int]] = set()
    for _root, _dirs, files, root_fd in os.fwalk(directory, follow_symlinks=False):
        for name in [*_dirs, *files]:
            with contextlib.suppress(FileNotFoundError):
                info = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
                if (info.st_dev, info.st_ino) not in seen:
                    seen.add((info.st_dev, info.st_ino))
                    total += info.st_blocks * 512
    return total


@dataclass(frozen=True)
class Applied:
    app: str
    size_bytes: int
    enforced: bool
    changed: bool
    reason: str  # why not enforced
    project_id: int

    def as_dict(self) -> dict[str, object]:
        return {
            "app": self.app,
            "size_bytes": self.size_bytes,
            "enforced": self.enforced,
            "changed": self.changed,
            "reason": self.reason,
            "project_id": self.project_id,
        }


def apply(
    directory: str,
    app: str,
    size: int,
    mounts: list[Mount],
    *,
    check_mode: bool = False,
    limit_ops: tuple[Callable[[int, int], int], Callable[[int, int, int], None]] = (get_limit, set_limit),
) -> Applied:
    """Limit the app's data `directory` to `size` bytes where the file system can; say why not otherwise."""
    projid = project_id(app)
    found = support(directory, mounts)
    if not found.enforced or found.mount is None:
        return Applied(app, size, False, False, found.reason, projid)
    read_limit, write_limit = limit_ops
    mount_fd = os.open(found.mount.mount_point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            changed = read_limit(mount_fd, projid) != -(-size // 1024) * 1024
            if changed and not check_mode:
                write_limit(mount_fd, projid, size)
            if not check_mode:
                changed = tag_tree(directory, projid) > 0 or changed
        except OSError as exc:
            raise QuotaError(
                f"limiting {directory} to {size} bytes (project {projid} on {found.mount.mount_point}) failed: "
                f"{exc.strerror or exc}"
            ) from exc
    finally:
        os.close(mount_fd)
    return Applied(app, size, True, changed, "", projid)


def apply_sizes(
    sized: list[tuple[str, int]],
    data_dir: str,
    mounts: list[Mount],
    *,
    check_mode: bool = False,
    limit_ops: tuple[Callable[[int, int], int], Callable[[int, int, int], None]] = (get_limit, set_limit),
) -> tuple[list[Applied], list[str]]:
    """Apply each (app, bytes) to `data_dir/<app>` (apps without a directory yet are skipped: the next run
    limits them); return what was done and one warning per reason a size is not enforced."""
    clashes = project_id_clashes([name for name, _size in sized])
    if clashes:
        raise QuotaError(f"apps {'; '.join(clashes)} would share one project id: rename one of them")
    # One verdict for the data location (every app's directory is on it), so one warning, not one per app.
    found = support(data_dir, mounts) if os.path.isdir(data_dir) else Support(False, None, f"{data_dir} is missing")
    done = []
    for name, size in sized:
        directory = os.path.join(data_dir, name)
        if not os.path.isdir(directory) or os.path.islink(directory):
            continue
        if found.enforced:
            done.append(apply(directory, name, size, mounts, check_mode=check_mode, limit_ops=limit_ops))
        else:
            done.append(Applied(name, size, False, False, found.reason, project_id(name)))
    by_reason: dict[str, list[str]] = {}
    for applied in done:
        if not applied.enforced:
            by_reason.setdefault(applied.reason, []).append(applied.app)
    warnings = [
        f"the data sizes of {', '.join(apps)} are not enforced: {reason}; `secure-streamlit status` shows "
        "their usage against the size"
        for reason, apps in by_reason.items()
    ]
    return done, warnings
