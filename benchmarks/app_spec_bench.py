"""Figures for app validation: the one app model directly, and the real preflight of site.yml.

- the library (plugins/module_utils/_app_spec.py): parse 100 and 1,000 apps (best of 5), and an anchor
  bomb (nested lists sharing one list 9 times per level, 9**9 leaves, < 1 KB of YAML) as an app's env;
- the preflight: `ansible-playbook site.yml --check --tags always` on this machine over a local
  connection (as tests/integration/test_bad_input.py runs it), with 100 and 1,000 apps in the
  inventory's group vars; and the anchor bomb in the inventory (stopped after --bomb-timeout seconds).

    .venv/bin/python benchmarks/app_spec_bench.py [--checkout DIR] [--sizes 100,1000] [--no-library]

--checkout runs the preflight of another checkout of the collection (e.g. a worktree of an older
commit, with its collections/ set up as the README says) with this venv, for comparisons.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "collections")]

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import (  # noqa: E402
    Defaults,
    app_errors,
    parse_apps,
)

VENV_BIN = Path(sys.executable).parent
BOMB_LEVELS = 9


def entries(count: int) -> list[dict]:
    """Apps as an inventory holds them: half with defaults only, half with most keys set."""
    out = []
    for i in range(count):
        entry: dict = {"name": f"app-{i}", "repo": f"acme/app-{i}"}
        if i % 2:
            entry.update(
                branch="release/1.2",
                entrypoint="app/main.py",
                resources={"cpus": 1, "memory": "512m", "pids": 128},
                env={"MODEL": f"m-{i}", "THREADS": 2},
                route={"path": f"/team-{i % 20}/app-{i}/"},
                upload_max_mb=50,
            )
        out.append(entry)
    return out


def bomb_yaml(levels: int) -> str:
    lines = ["              - &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"              - &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines)


def bomb(levels: int) -> list:
    value: list = ["x"] * 9
    for _ in range(levels - 1):
        value = [value] * 9
    return value


def best_of(runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def library(sizes: list[int]) -> None:
    defaults = Defaults(max_cpus=os.cpu_count(), edge_host="edge.example.org")
    for size in sizes:
        apps = entries(size)
        seconds = best_of(5, lambda apps=apps: parse_apps(apps, defaults))
        print(f"library: {size:>5} apps parsed in {seconds * 1000:8.1f} ms (best of 5)")
    apps = [{"name": "bomb", "repo": "acme/bomb", "env": bomb(BOMB_LEVELS)}]
    seconds = best_of(5, lambda: app_errors(apps, defaults))
    errors = app_errors(apps, defaults)
    print(f"library: anchor bomb (9**{BOMB_LEVELS} leaves) refused in {seconds * 1000:8.3f} ms: {errors}")


def inventory(directory: Path, body: str) -> Path:
    path = directory / "hosts.yml"
    path.write_text(
        "all:\n  children:\n    streamlit_hosts:\n      hosts:\n"
        "        validation-probe:\n          ansible_connection: local\n"
        "          ansible_python_interpreter: '{{ ansible_playbook_python }}'\n"
        "      vars:\n" + body + "\n"
    )
    return path


def apps_yaml(count: int) -> str:
    lines = ["        apps:"]
    for entry in entries(count):
        lines.append(f"          - name: {entry['name']}")
        lines.extend(f"            {key}: {value!r}" for key, value in entry.items() if key != "name")
    return "\n".join(lines).replace("'", '"')


def preflight(checkout: Path, hosts: Path, timeout: float) -> tuple[float, str]:
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(checkout / "collections"),
        ANSIBLE_CONFIG=str(checkout / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    command = [str(VENV_BIN / "ansible-playbook"), "site.yml", "-i", str(hosts), "--check", "--tags", "always"]
    start = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, "stopped (timeout)"
    seconds = time.perf_counter() - start
    failed = [line for line in result.stdout.splitlines() if "FAILED" in line or "msg:" in line]
    return seconds, "passed" if result.returncode == 0 else f"rc {result.returncode}: {' '.join(failed)[:300]}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkout", type=Path, default=REPO)
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--bomb-timeout", type=float, default=120.0)
    parser.add_argument("--bomb-levels", default="5,6,9")
    parser.add_argument("--no-library", action="store_true")
    parser.add_argument("--no-bomb", action="store_true")
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    print(f"load average before: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    if not args.no_library:
        library(sizes)
    with tempfile.TemporaryDirectory(prefix="app-spec-bench-") as tmp:
        directory = Path(tmp)
        seconds, outcome = preflight(args.checkout, inventory(directory, "        apps: []"), args.timeout)
        print(f"preflight ({args.checkout}): {0:>5} apps {seconds:8.1f} s ({outcome})")
        for size in sizes:
            seconds, outcome = preflight(args.checkout, inventory(directory, apps_yaml(size)), args.timeout)
            print(f"preflight ({args.checkout}): {size:>5} apps {seconds:8.1f} s ({outcome})")
        if not args.no_bomb:
            for levels in [int(n) for n in args.bomb_levels.split(",") if n]:
                body = "        apps:\n          - name: bomb\n            repo: acme/bomb\n            env:\n"
                hosts = inventory(directory, body + bomb_yaml(levels))
                seconds, outcome = preflight(args.checkout, hosts, args.bomb_timeout)
                size = hosts.stat().st_size
                print(
                    f"preflight ({args.checkout}): anchor bomb 9**{levels} leaves ({size} bytes of inventory) "
                    f"{seconds:8.1f} s ({outcome})"
                )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
