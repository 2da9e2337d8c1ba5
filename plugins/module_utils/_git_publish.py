"""Publish a directory of files as the head of a branch in a local bare git repository.

The status app's source (roles/status/files/status_app/) reaches the deploy engine this way: the engine
only deploys commits it fetches from a git URL, and a host has no forge of its own. The status role keeps a
bare repository on the host (root's, 0700) and commits the collection's files into it; the app entry
points at it with provider git and a file:// URL. A commit is made only when the files differ from the
branch head's tree, so a second run changes nothing and the deploy engine sees the same SHA.

The tree is hashed here first (git's object format), so check mode can tell whether a commit would be made
without writing any object.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

FILE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
BRANCH_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_FILE_BYTES = 4 << 20
# Fixed identity: the commit says the platform made it; the time is the real one (the audit trail's).
IDENTITY = {"name": "secure_streamlit.hosting", "email": "root@localhost"}
GIT_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}


class PublishError(Exception):
    """The source or the repository is not what publishing needs; the message says why."""


@dataclass(frozen=True)
class Published:
    sha: str  # the branch head after publishing (would-be head in check mode: "" when a commit would be made)
    tree: str
    changed: bool
    previous: str  # the head before ("" for a new repository or branch)


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 (git's object id)


def tree_id(blobs: Mapping[str, str]) -> str:
    """The id of a flat tree of regular files (mode 100644), as `git mktree` computes it."""
    body = b"".join(
        b"100644 " + name.encode() + b"\0" + bytes.fromhex(blobs[name]) for name in sorted(blobs, key=str.encode)
    )
    return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()  # noqa: S324 (git's object id)


def read_source(directory: Path) -> dict[str, bytes]:
    """The directory's regular files (flat; no link, no subdirectory, no dot file), by name."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        raise PublishError(f"{directory}: cannot be read ({exc.strerror})") from exc
    files: dict[str, bytes] = {}
    for entry in entries:
        if entry.name == "__pycache__" and entry.is_dir(follow_symlinks=False):
            continue
        if not FILE_NAME_RE.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
            raise PublishError(f"{directory}/{entry.name}: only plain files with plain names are published")
        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise PublishError(f"{entry.path}: not a regular file")
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise PublishError(f"{entry.path}: larger than {MAX_FILE_BYTES >> 20} MiB")
        files[entry.name] = data
    if not files:
        raise PublishError(f"{directory}: no file to publish")
    return files


def _git(repo: Path, args: Sequence[str], stdin: bytes = b"") -> str:
    done = subprocess.run(  # git with a fixed argv, never a shell
        ["git", f"--git-dir={repo}", *args],
        input=stdin,
        capture_output=True,
        env=GIT_ENV,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise PublishError(f"git {args[0]} failed: {done.stderr.decode(errors='replace').strip()[-500:]}")
    return done.stdout.decode().strip()


def head(repo: Path, branch: str) -> tuple[str, str]:
    """(commit, tree) of the branch head, or ("", "") when the repository or the branch is not there."""
    if not (repo / "HEAD").is_file():
        return "", ""
    done = subprocess.run(  # a missing branch is an answer here, not an error
        ["git", f"--git-dir={repo}", "rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}"],
        capture_output=True,
        env=GIT_ENV,
        timeout=60,
        check=False,
    )
    commit = done.stdout.decode().strip()
    if done.returncode != 0 or not commit:
        return "", ""
    return commit, _git(repo, ["rev-parse", f"{commit}^{{tree}}"])


def publish(
    source: Path, repo: Path, *, branch: str = "main", message: str = "", check_mode: bool = False
) -> Published:
    """Make the files of `source` the head of `branch` in the bare repository `repo` (created, 0700, when
    missing): a new commit on top of the head only when the tree differs."""
    if not BRANCH_RE.fullmatch(branch):
        raise PublishError(f"branch {branch!r} must match {BRANCH_RE.pattern}")
    if not repo.is_absolute():
        raise PublishError(f"repository {repo} must be an absolute path")
    files = read_source(source)
    blobs = {name: blob_id(data) for name, data in files.items()}
    tree = tree_id(blobs)
    previous, previous_tree = head(repo, branch)
    if previous_tree == tree:
        return Published(previous, tree, False, previous)
    if check_mode:
        return Published("", tree, True, previous)
    if not (repo / "HEAD").is_file():
        if repo.is_symlink():
            raise PublishError(f"{repo} is a link: refusing to create the repository there")
        repo.mkdir(mode=0o700, parents=False, exist_ok=True)
        _git(repo, ["init", "-q", "--bare", f"--initial-branch={branch}"])
    for name, data in files.items():
        written = _git(repo, ["hash-object", "-w", "--stdin"], data)
        if written != blobs[name]:
            raise PublishError(f"git stored {name} as {written}, expected {blobs[name]}")
    listing = "".join(f"100644 blob {blobs[name]}\t{name}\n" for name in sorted(blobs, key=str.encode))
    made = _git(repo, ["mktree"], listing.encode())
    if made != tree:
        raise PublishError(f"git made tree {made}, expected {tree}")
    identity = {
        "GIT_AUTHOR_NAME": IDENTITY["name"],
        "GIT_AUTHOR_EMAIL": IDENTITY["email"],
        "GIT_COMMITTER_NAME": IDENTITY["name"],
        "GIT_COMMITTER_EMAIL": IDENTITY["email"],
    }
    parents = ["-p", previous] if previous else []
    done = subprocess.run(  # fixed argv; the identity through the environment
        ["git", f"--git-dir={repo}", "commit-tree", tree, *parents, "-F", "-"],
        input=(message or f"Publish {len(files)} file(s)").encode() + b"\n",
        capture_output=True,
        env={**GIT_ENV, **identity},
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise PublishError(f"git commit-tree failed: {done.stderr.decode(errors='replace').strip()[-500:]}")
    commit = done.stdout.decode().strip()
    # Compare-and-swap: a head moved meanwhile by someone else is not overwritten.
    _git(repo, ["update-ref", f"refs/heads/{branch}", commit, previous or "0" * 40])
    return Published(commit, tree, True, previous)
