"""One safe reader for the JSON settings files the host programs read (often as root).

A settings file steers a privileged program (the status command runs its `alert_command` as root), so
what it says must come from root (or the program's own user), and nobody else may have been able to
write it. `read_json_object` opens the path without following a symlink and without blocking (a FIFO
does not hang the reader), then checks the descriptor it really reads, not the name: a regular file,
owned by an allowed user (root and the reading process's own user by default), no group or other
write bit, one link only (a hard link elsewhere could be written under that other name's directory
rules), no larger than the limit. The JSON must be one object, with no duplicate key (the second
would silently win) and no NaN or Infinity (not JSON). `key_errors` names unknown keys, missing keys
and values of the wrong type (a bool must be a real true/false, not "false" or 0).

Whoever may change a directory on the way may swap what lies below it, so the path is walked from /
one directory at a time (O_PATH|O_DIRECTORY|O_NOFOLLOW, each opened relative to the one checked
before it: what is checked is what is read) and every directory must be a real directory (no symlink:
/var/run is refused, /run is not), owned by root or an allowed owner, and not writable by group or
others unless it has the sticky bit (like /tmp: others may add names there but not rename or remove
root's; what they add fails the owner check below). `read_state_object` is the sibling for a file a
program keeps for itself: it also accepts the owner of the file's own directory (the one root gave
that program, e.g. the monitor's state directory), so an admin or root may read it too.

Standard library only: the host programs have no Ansible. Imported as
`ansible_collections.secure_streamlit.hosting.plugins.module_utils._settings_file` or, where the
libraries sit beside the program, as `_settings_file`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

DEFAULT_MAX_BYTES = 16 << 20


class SettingsFileError(ValueError):
    """A settings file that is refused: the message names the path and the rule it breaks."""

    def __init__(self, path: str | os.PathLike[str], rule: str) -> None:
        super().__init__(f"{os.fspath(path)}: {rule}")
        self.path = os.fspath(path)
        self.rule = rule


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """The JSON object in `raw`; ValueError on duplicate keys, NaN/Infinity, or another top-level type."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    value = json.loads(text, object_pairs_hook=_pairs_without_duplicates, parse_constant=_refuse_constant)
    if not isinstance(value, dict):
        raise ValueError(f"the top level must be a JSON object, not {type(value).__name__}")
    return value


def check_descriptor(
    fd: int,
    path: str | os.PathLike[str],
    *,
    allowed_owners: Collection[int],
    max_bytes: int,
) -> os.stat_result:
    """The descriptor's status if it is a file nobody but `allowed_owners` could have written."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise SettingsFileError(path, "not a regular file")
    if info.st_uid not in allowed_owners:
        owners = ", ".join(str(uid) for uid in sorted(allowed_owners))
        raise SettingsFileError(path, f"owned by uid {info.st_uid}, must be owned by uid {owners}")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SettingsFileError(
            path, f"mode {stat.S_IMODE(info.st_mode):04o} lets the group or others write it (must not)"
        )
    if info.st_nlink != 1:
        raise SettingsFileError(path, f"{info.st_nlink} hard links (must be 1: another name could be written)")
    if info.st_size > max_bytes:
        raise SettingsFileError(path, f"{info.st_size} bytes, larger than the limit of {max_bytes}")
    return info


def _open_directory(name: str, dir_fd: int | None, path: str | os.PathLike[str], shown: str) -> int:
    """A path-only descriptor of a directory on the way to `path`, a symlink refused."""
    flags = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        with contextlib.suppress(OSError):
            if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                raise SettingsFileError(path, f"{shown} is a symbolic link (refused: name the real path)") from exc
        raise SettingsFileError(path, f"{shown} is not a directory") from exc


def _check_directory(fd: int, path: str | os.PathLike[str], shown: str, owners: Collection[int]) -> None:
    info = os.fstat(fd)
    if info.st_uid != 0 and info.st_uid not in owners:
        allowed = ", ".join(str(uid) for uid in sorted({0, *owners}))
        raise SettingsFileError(
            path, f"directory {shown} is owned by uid {info.st_uid}, must be owned by uid {allowed}"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise SettingsFileError(
            path,
            f"directory {shown} has mode {stat.S_IMODE(info.st_mode):04o}: the group or others may swap "
            "what is in it (no sticky bit)",
        )


def _open_checked(
    path: str | os.PathLike[str], owners: frozenset[int], *, own_directory: bool
) -> tuple[int, frozenset[int]]:
    """The file opened read-only through checked directories, no link followed, and the owners its
    descriptor may have: `owners`, and with `own_directory` the owner of the file's directory."""
    *directories, name = [part for part in os.path.abspath(os.fspath(path)).split("/") if part] or [""]
    if not name:
        raise SettingsFileError(path, "not a regular file")
    dir_fd = _open_directory("/", None, path, "/")
    try:
        _check_directory(dir_fd, path, "/", owners)
        shown = ""
        for index, part in enumerate(directories):
            shown += "/" + part
            next_fd = _open_directory(part, dir_fd, path, shown)
            os.close(dir_fd)
            dir_fd = next_fd
            if own_directory and index == len(directories) - 1:
                owners = owners | {os.fstat(dir_fd).st_uid}
            _check_directory(dir_fd, path, shown, owners)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # the last component is a symlink
                raise SettingsFileError(path, "a symbolic link (refused: the file itself must be named)") from exc
            raise
    finally:
        os.close(dir_fd)
    return fd, owners


def read_json_object(
    path: str | os.PathLike[str],
    *,
    allowed_owners: Collection[int] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict[str, Any]:
    """Read a settings file safely (see the module's docstring). `allowed_owners` defaults to root and
    the process's effective user (root may always own a directory on the way). OSError (missing,
    unreadable) passes through; every refusal of the file or a directory on its way is a
    SettingsFileError naming the path and the rule."""
    owners = frozenset(allowed_owners) if allowed_owners is not None else frozenset({0, os.geteuid()})
    return _read_object(path, owners, max_bytes=max_bytes, own_directory=False)


def read_state_object(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """read_json_object for a file a program writes for itself in its own directory: root, the process's
    effective user and the owner of that directory may own it (and that directory); the directories
    above it must still be root's (or the process's) and nobody else's to change."""
    return _read_object(path, frozenset({0, os.geteuid()}), max_bytes=max_bytes, own_directory=True)


def _read_object(
    path: str | os.PathLike[str], owners: frozenset[int], *, max_bytes: int, own_directory: bool
) -> dict[str, Any]:
    fd, owners = _open_checked(path, owners, own_directory=own_directory)
    try:
        check_descriptor(fd, path, allowed_owners=owners, max_bytes=max_bytes)
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > max_bytes:
        raise SettingsFileError(path, f"grew past the limit of {max_bytes} bytes while read")
    try:
        return parse_json_object(b"".join(chunks))
    except UnicodeDecodeError as exc:
        raise SettingsFileError(path, f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except ValueError as exc:
        raise SettingsFileError(path, f"not a valid JSON object ({exc})") from exc


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}
    return " or ".join(names.get(k, "an object" if k is dict else k.__name__) for k in kinds)


def is_kind(value: Any, kind: type | tuple[type, ...]) -> bool:
    """isinstance, except that a bool is only a bool (not an int or a float) and an int is a float."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if float in kinds and isinstance(value, int):
        return True
    return isinstance(value, kinds)


def key_errors(
    obj: Mapping[str, Any],
    *,
    required: Mapping[str, type | tuple[type, ...]],
    optional: Mapping[str, type | tuple[type, ...]] | None = None,
) -> list[str]:
    """One message per problem, each naming the key: a missing or unknown key, a value of another type."""
    optional = optional or {}
    errors = [f"{key} is missing" for key in required if key not in obj]
    errors += [
        f"{key} must be {_kind_name(kind)} (is {type(obj[key]).__name__})"
        for key, kind in {**required, **optional}.items()
        if key in obj and not is_kind(obj[key], kind)
    ]
    errors += [f"unknown key {key!r}" for key in sorted(set(obj) - set(required) - set(optional))]
    return errors


def read_settings(
    path: str | os.PathLike[str],
    *,
    required: Mapping[str, type | tuple[type, ...]],
    optional: Mapping[str, type | tuple[type, ...]] | None = None,
    allowed_owners: Collection[int] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict[str, Any]:
    """read_json_object and key_errors in one: every key problem in one SettingsFileError."""
    obj = read_json_object(Path(path), allowed_owners=allowed_owners, max_bytes=max_bytes)
    errors = key_errors(obj, required=required, optional=optional)
    if errors:
        raise SettingsFileError(path, "; ".join(errors))
    return obj
