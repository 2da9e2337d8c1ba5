"""What a small Ansible task costs in CPU, by connection plugin: community.docker.docker (the docker CLI per
task, what molecule's docker driver sets), community.docker.docker_api (the Engine API from the controller's
Python) and, for scale, `local` (no container: Ansible's own cost per task).

Runs 40 small tasks (20 `stat`, 20 `command: true`, pipelining on) per set-up, interleaved over --rounds.
Per set-up: the median wall time per task, the CPU seconds per task of ansible-playbook and its children
(rusage) and of the whole machine (cgroup v1 cpuacct of the root, so the engine's dockerd, containerd and
runc are counted; run on an otherwise idle machine). Prints the ratios against community.docker.docker.

    .venv/bin/python benchmarks/connection_cpu.py [--rounds 3] [--image secure-streamlit/base:bookworm]

Starts a throwaway container of --image (removed at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The same small tasks as connection_overhead.py (this script's directory is on sys.path when it runs).
from connection_overhead import playbook, seconds

TASKS = 40
ROOT_USAGE = Path("/sys/fs/cgroup/cpuacct/cpuacct.usage")
SETUPS = {
    "docker (CLI)": "community.docker.docker",
    "docker_api": "community.docker.docker_api",
    "local": "local",
}
CONFIG = """[defaults]
interpreter_python = /usr/bin/python3
stdout_callback = ansible.builtin.json
retry_files_enabled = false
[connection]
pipelining = true
"""


def machine_cpu() -> float:
    return int(ROOT_USAGE.read_text()) / 1e9 if ROOT_USAGE.exists() else float("nan")


def run(work: Path, container: str, connection: str) -> tuple[float, float, float]:
    """Median wall per task, controller CPU per task, machine CPU per task."""
    host: dict[str, str] = {"ansible_connection": connection}
    if connection == "local":
        host["ansible_python_interpreter"] = "/usr/bin/python3"
    else:
        host["ansible_host"] = container
    inventory = work / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"bench": host}}}), encoding="utf-8")
    env = dict(os.environ, ANSIBLE_CONFIG=str(work / "ansible.cfg"))
    before_self = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_machine = machine_cpu()
    out = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(work / "bench.yml")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    machine = machine_cpu() - before_machine
    after_self = resource.getrusage(resource.RUSAGE_CHILDREN)
    controller = (after_self.ru_utime - before_self.ru_utime) + (after_self.ru_stime - before_self.ru_stime)
    walls = [
        seconds(t["task"]["duration"]["end"]) - seconds(t["task"]["duration"]["start"])
        for t in json.loads(out)["plays"][0]["tasks"]
    ]
    return statistics.median(walls), controller / TASKS, machine / TASKS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image", default="secure-streamlit/base:bookworm")
    args = parser.parse_args()
    container = f"connection-cpu-{os.getpid()}"
    subprocess.run(
        ["docker", "run", "-d", "--name", container, "--entrypoint", "sleep", args.image, "infinity"],
        check=True,
        capture_output=True,
    )
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in SETUPS}
    try:
        time.sleep(1)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "ansible.cfg").write_text(CONFIG, encoding="utf-8")
            (work / "bench.yml").write_text(playbook(TASKS), encoding="utf-8")
            for round_ in range(args.rounds):
                order = list(SETUPS) if round_ % 2 == 0 else list(reversed(SETUPS))
                for name in order:
                    results[name].append(run(work, container, SETUPS[name]))
    finally:
        subprocess.run(["docker", "rm", "-f", container], check=False, capture_output=True)
    print(f"{TASKS} tasks x {args.rounds} rounds; medians of the rounds")
    print(f"{'set-up':14} {'wall ms/task':>13} {'controller CPU ms/task':>23} {'machine CPU ms/task':>20}")
    medians = {}
    for name in SETUPS:
        wall, controller, machine = (statistics.median(r[i] for r in results[name]) for i in range(3))
        medians[name] = (wall, controller, machine)
        print(f"{name:14} {wall * 1000:13.0f} {controller * 1000:23.0f} {machine * 1000:20.0f}")
    base = medians["docker (CLI)"]
    for name in ("docker_api", "local"):
        labels = ("wall", "controller CPU", "machine CPU")
        ratios = ", ".join(f"{label} {medians[name][i] / base[i]:.2f}" for i, label in enumerate(labels))
        print(f"{name} / docker (CLI): {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
