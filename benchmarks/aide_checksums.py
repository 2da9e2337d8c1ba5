"""AIDE's database build: Debian's default hashes (every one AIDE knows, `Checksums = H`) against the
hardening role's default (`hardening_aide_checksums: [sha512]`), side by side in one run.

Each round builds a database of the same trees with both settings, in alternating order; the figures are
the medians of wall and CPU seconds and their ratio. Needs `aide` (Debian's package) on this machine.

    python3 benchmarks/aide_checksums.py [--rounds 3] [--tree /usr/bin --tree /usr/lib/python3]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Debian's `Full` (aide-common 0.18, /etc/aide/aide.conf) with the checksums left open.
FULL = "p+u+g+ftype+n+i+s+b+l+X+m+c"


def config(directory: Path, name: str, checksums: str, trees: list[str]) -> Path:
    path = directory / f"{name}.conf"
    rules = "".join(f"{tree} Full\n" for tree in trees)
    path.write_text(f"database_out=file:{directory}/{name}.db\ngzip_dbout=yes\nFull = {FULL}+{checksums}\n{rules}")
    return path


def build(conf: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one `aide --init`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run(["aide", "--config", str(conf), "--init"], check=True, capture_output=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", action="append", dest="trees")
    args = parser.parse_args()
    trees = args.trees or ["/usr/bin", "/usr/lib/python3"]
    if shutil.which("aide") is None:
        print("aide is not installed (apt-get install aide)", file=sys.stderr)
        return 2
    size = subprocess.run(["du", "-sch", *trees], capture_output=True, text=True, check=False).stdout.split()
    print(f"trees: {', '.join(trees)} ({size[-2] if len(size) >= 2 else '?'}); rounds: {args.rounds}")
    settings = {"debian (H: 11 hashes)": "H", "role (sha512)": "sha512"}
    walls: dict[str, list[float]] = {name: [] for name in settings}
    cpus: dict[str, list[float]] = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        confs = {name: config(directory, f"c{i}", sums, trees) for i, (name, sums) in enumerate(settings.items())}
        for round_ in range(args.rounds):
            order = list(settings) if round_ % 2 == 0 else list(reversed(settings))
            for name in order:
                wall, cpu = build(confs[name])
                walls[name].append(wall)
                cpus[name].append(cpu)
    for name in settings:
        print(f"{name:24} wall {statistics.median(walls[name]):7.2f} s   cpu {statistics.median(cpus[name]):7.2f} s")
    old, new = (statistics.median(cpus[name]) for name in settings)
    old_wall, new_wall = (statistics.median(walls[name]) for name in settings)
    print(f"ratio role/debian: wall {new_wall / old_wall:.3f}, cpu {new / old:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
