#!/usr/bin/env python3
"""Pack collections into one reproducible tar for the host's deployer (runs on the controller).

    pack_collections.py OUT.tar SEARCH_PATHS NAMESPACE.NAME[=DIR] ...

A collection given without its DIR is looked up the way Ansible does: in SEARCH_PATHS (colon-separated
directories that hold `ansible_collections/`; the first one that has it wins), then in this Python's
import path (where the `ansible` package keeps the collections it bundles). Each goes in as
`ansible_collections/NAMESPACE/NAME/`. Entries are sorted, owned by root, dated 0,
with normalised modes, so the same collections give the same bytes: the copy to the host then changes
only when a collection did. Only what Ansible loads is kept (no tests, docs, caches, VCS or build trees).
Prints the tar's SHA-256.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path

# What Ansible loads from a collection. Nothing else goes to the host: a checkout of this collection
# can hold an operator's inventory (vault files), caches and test trees.
KEEP_TOP = {"galaxy.yml", "MANIFEST.json", "FILES.json", "meta", "plugins", "roles", "playbooks", "README.md"}
SKIP_ANYWHERE = {"__pycache__", ".pytest_cache", ".ruff_cache", "node_modules", "group_vars", "host_vars"}


def members(root: Path) -> list[Path]:
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root):
        here = Path(directory)
        top = here == root
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP_ANYWHERE and (not top or d in KEEP_TOP))
        found.extend(here / d for d in subdirs)
        found.extend(here / f for f in sorted(files) if not f.endswith((".pyc", ".pyo")) and (not top or f in KEEP_TOP))
    return found


def add(archive: tarfile.TarFile, path: Path, arcname: str) -> None:
    info = tarfile.TarInfo(arcname)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if path.is_dir():
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        archive.addfile(info)
        return
    data = path.read_bytes()  # a symlink is stored as the file it points at
    info.size = len(data)
    info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
    archive.addfile(info, io.BytesIO(data))


def pack(out: Path, collections: dict[str, Path]) -> str:
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as archive:
        for fqcn in sorted(collections):
            namespace, name = fqcn.split(".")
            root = collections[fqcn].resolve()
            if not (root / "galaxy.yml").is_file() and not (root / "MANIFEST.json").is_file():
                raise SystemExit(f"{root} is not a collection (no galaxy.yml or MANIFEST.json)")
            prefix = f"ansible_collections/{namespace}/{name}"
            for part in (f"ansible_collections/{namespace}", prefix):
                if part not in archive.getnames():
                    add(archive, root, part)
            for path in members(root):
                add(archive, path, f"{prefix}/{path.relative_to(root).as_posix()}")
    return hashlib.sha256(out.read_bytes()).hexdigest()


def locate(fqcn: str, search_paths: list[str]) -> Path:
    namespace, name = fqcn.split(".")
    for base in search_paths:
        candidate = Path(base).expanduser() / "ansible_collections" / namespace / name
        if candidate.is_dir():
            return candidate
    raise SystemExit(f"collection {fqcn} not found in {':'.join(search_paths)}")


def main(argv: list[str]) -> int:
    if len(argv) < 3 or not all(arg.split("=", 1)[0].count(".") == 1 for arg in argv[2:]):
        print(__doc__, file=sys.stderr)
        return 2
    search_paths = [p for p in argv[1].split(":") if p] + [p for p in sys.path if p]
    collections = {
        arg.split("=", 1)[0]: Path(arg.split("=", 1)[1]) if "=" in arg else locate(arg, search_paths)
        for arg in argv[2:]
    }
    print(pack(Path(argv[0]), collections))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
