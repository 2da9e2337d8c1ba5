"""What a small Ansible task costs over the community.docker.docker connection (docs/testing.md, item 4).

Runs 30 small tasks (15 `stat`, 15 `command: true`) against a running container in four set-ups, with
and without `ansible_user: root` and with and without pipelining, interleaved over --rounds so that the
machine's load hits every set-up alike. Per set-up: the median task time (the JSON callback's task
start and end) and the docker CLI calls per task (counted by a `docker` wrapper first in PATH). Prints
the ratios: no user / user (inventory/hosts.yml) and pipelining / none (molecule's own ansible.cfg).

    .venv/bin/python benchmarks/connection_overhead.py CONTAINER [--rounds 3]

CONTAINER: a running container with python3, e.g. a molecule instance (`molecule create -s docker`,
then instance-docker).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import datetime
from pathlib import Path

SETUPS: dict[str, tuple[bool, bool]] = {
    "user, no pipelining": (True, False),
    "user, pipelining": (True, True),
    "no user, no pipelining": (False, False),
    "no user, pipelining": (False, True),
}
TASKS = 30

CONFIG = """[defaults]
interpreter_python = /usr/bin/python3
stdout_callback = ansible.builtin.json
retry_files_enabled = false
"""

WRAPPER = """#!/bin/sh
echo "$1" >> "$BENCH_DOCKER_LOG"
exec {docker} "$@"
"""


def playbook(count: int = TASKS) -> str:
    """`count` small tasks, half `stat`, half `command: true` (benchmarks/connection_cpu.py uses it too)."""
    tasks = []
    for i in range(count // 2):
        tasks.append(f"    - name: Stat a file ({i})\n      ansible.builtin.stat:\n        path: /etc/hostname\n")
        tasks.append(f"    - name: Run true ({i})\n      ansible.builtin.command: 'true'\n      changed_when: false\n")
    return "---\n- name: Time small tasks\n  hosts: bench\n  gather_facts: false\n  tasks:\n" + "".join(tasks)


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def run(work: Path, container: str, user: bool, pipelining: bool) -> tuple[list[float], Counter[str]]:
    host: dict[str, str] = {"ansible_connection": "community.docker.docker", "ansible_host": container}
    if user:
        host["ansible_user"] = "root"
    inventory = work / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"bench": host}}}), encoding="utf-8")
    log = work / "docker-calls.log"
    log.write_text("", encoding="utf-8")
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(work / "ansible.cfg"),
        ANSIBLE_PIPELINING=str(pipelining),
        BENCH_DOCKER_LOG=str(log),
        PATH=f"{work / 'bin'}:{os.environ['PATH']}",
    )
    out = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(work / "bench.yml")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    times = [
        seconds(t["task"]["duration"]["end"]) - seconds(t["task"]["duration"]["start"])
        for t in json.loads(out)["plays"][0]["tasks"]
    ]
    return times, Counter(log.read_text(encoding="utf-8").split())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("container")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    docker = shutil.which("docker")
    if docker is None:
        sys.exit("docker is not in PATH")
    times: dict[str, list[float]] = {name: [] for name in SETUPS}
    calls: dict[str, Counter[str]] = {name: Counter() for name in SETUPS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "ansible.cfg").write_text(CONFIG, encoding="utf-8")
        (work / "bench.yml").write_text(playbook(), encoding="utf-8")
        (work / "bin").mkdir()
        wrapper = work / "bin" / "docker"
        wrapper.write_text(WRAPPER.format(docker=docker), encoding="utf-8")
        wrapper.chmod(0o755)
        for _ in range(args.rounds):
            for name, (user, pipelining) in SETUPS.items():
                run_times, run_calls = run(work, args.container, user, pipelining)
                times[name] += run_times
                calls[name] += run_calls
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"{'set-up':24} {'median ms/task':>14} {'docker calls/task':>18}")
    for name in SETUPS:
        per_task = {sub: round(n / (TASKS * args.rounds), 1) for sub, n in sorted(calls[name].items())}
        print(f"{name:24} {median[name] * 1000:14.0f}   {per_task}")
    print(f"no user / user (pipelining):            {median['no user, pipelining'] / median['user, pipelining']:.2f}")
    print(
        "no user / user (no pipelining):         "
        f"{median['no user, no pipelining'] / median['user, no pipelining']:.2f}"
    )
    print(
        "pipelining / none (no user, molecule):  "
        f"{median['no user, pipelining'] / median['no user, no pipelining']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
