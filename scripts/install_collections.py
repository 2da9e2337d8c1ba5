#!/usr/bin/env python3
"""Install the collections galaxy.yml depends on, with their own dependencies.

Galaxy first; where it does not answer (machines without it), the collections are taken out of the
`ansible` wheel from PyPI, which bundles them. Quick when everything is already installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml  # comes with ansible-core

REPO = Path(__file__).resolve().parent.parent
DEST = REPO / "collections" / "ansible_collections"
# The `ansible` release whose bundled collections satisfy galaxy.yml.
ANSIBLE_WHEEL = "ansible==12.3.0"
WHEEL_CACHE = REPO / ".cache" / "wheels"


def wanted() -> dict[str, str]:
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    return dict(galaxy.get("dependencies") or {})


def installed_version(fqcn: str) -> str | None:
    manifest = DEST.joinpath(*fqcn.split("."), "MANIFEST.json")
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text())["collection_info"]["version"]


def from_galaxy(deps: dict[str, str]) -> bool:
    specs = [f"{name}:{spec}" for name, spec in deps.items()]
    galaxy_cli = Path(sys.executable).parent / "ansible-galaxy"
    cmd = [str(galaxy_cli), "collection", "install", "--timeout", "15", "-p", str(DEST.parent), *specs]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def wheel_path() -> Path:
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    name, version = ANSIBLE_WHEEL.split("==")
    found = sorted(WHEEL_CACHE.glob(f"{name}-{version}-*.whl"))
    if not found:
        print(f"    downloading {ANSIBLE_WHEEL} from PyPI (about 54 MB, once)", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(WHEEL_CACHE), ANSIBLE_WHEEL],
            check=True,
        )
        found = sorted(WHEEL_CACHE.glob(f"{name}-{version}-*.whl"))
    return found[0]


def from_wheel(deps: dict[str, str]) -> list[str]:
    done: list[str] = []
    with zipfile.ZipFile(wheel_path()) as wheel:
        names = wheel.namelist()
        queue = list(deps)
        while queue:
            fqcn = queue.pop()
            if fqcn in done:
                continue
            prefix = "ansible_collections/" + fqcn.replace(".", "/") + "/"
            members = [n for n in names if n.startswith(prefix)]
            if not members:
                raise SystemExit(f"ERROR: {fqcn} is not in {ANSIBLE_WHEEL}; install it from Galaxy")
            for member in members:
                wheel.extract(member, DEST.parent)
            manifest = json.loads(wheel.read(prefix + "MANIFEST.json"))
            queue.extend((manifest["collection_info"].get("dependencies") or {}).keys())
            done.append(f"{fqcn} {manifest['collection_info']['version']}")
    return done


def main() -> int:
    deps = wanted()
    missing = [name for name in deps if installed_version(name) is None]
    if not missing:
        print("    up to date: " + ", ".join(f"{n} {installed_version(n)}" for n in deps))
        return 0
    if from_galaxy(deps):
        print("    installed from Galaxy: " + ", ".join(deps))
        return 0
    print("    Galaxy does not answer: taking the collections out of the ansible wheel")
    for line in from_wheel(deps):
        print(f"    installed {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
