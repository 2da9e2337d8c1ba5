"""Requests per second through the swarm edge: one replica against three, side by side in one run.

The stack of tests/integration/test_swarm_edge.py (Debian's nginx with the sticky upstream, three Streamlit
processes on loopback). The same edge is switched between the upstream with one replica and the one with
three (the library's checked switch and a graceful reload) in alternating rounds, so both see the same
machine load. Clients: `--processes` processes, each with `--clients` keep-alive sessions (each its own edge
cookie, so the sessions spread over the replicas), fetching the app's page (Streamlit's index.html) in a
closed loop.

    PYTHONPATH=.:collections .venv/bin/python benchmarks/swarm_edge_bench.py [--seconds 10] [--rounds 2]

On the 2-core machine the clients, nginx and the replicas share both cores: the ratio says how much a
second and third Streamlit process buys when one process's event loop is the limit, not what three
machines would give.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path[:0] = [
    str(Path(__file__).resolve().parent.parent),
    str(Path(__file__).resolve().parent.parent / "collections"),
]

import requests  # noqa: E402

from tests.swarm_edge_stack import swarm_edge  # noqa: E402


def client(origin: str, sessions: int, seconds: float, out: multiprocessing.Queue) -> None:
    warnings.simplefilter("ignore")
    pool = []
    for _ in range(sessions):
        s = requests.Session()
        s.trust_env = False
        s.verify = False
        s.get(f"{origin}/", timeout=30)  # takes its cookie
        pool.append(s)
    done = errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for s in pool:
            try:
                if s.get(f"{origin}/", timeout=30).ok:
                    done += 1
                else:
                    errors += 1
            except requests.RequestException:
                errors += 1
    out.put((done, errors))


def measure(origin: str, processes: int, sessions: int, seconds: float) -> tuple[float, int]:
    out: multiprocessing.Queue = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=client, args=(origin, sessions, seconds, out)) for _ in range(processes)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    results = [out.get() for _ in workers]
    elapsed = time.monotonic() - started
    for worker in workers:
        worker.join()
    return sum(r[0] for r in results) / elapsed, sum(r[1] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, swarm_edge(Path(tmp), replicas=3) as stack:
        ports = sorted(stack.replicas)
        figures: dict[int, list[float]] = {1: [], 3: []}
        for _ in range(args.rounds):
            for count in (1, 3):
                stack.route(ports[:count])
                time.sleep(1)  # the old workers finish
                rate, errors = measure(stack.origin, args.processes, args.clients, args.seconds)
                figures[count].append(rate)
                print(f"{count} replica(s): {rate:7.1f} requests/s ({errors} errors)", flush=True)
        one, three = (sum(figures[n]) / len(figures[n]) for n in (1, 3))
        load = os.getloadavg()[0]
        print(
            f"mean over {args.rounds} rounds of {args.seconds:g} s, {args.processes}x{args.clients} clients, "
            f"{os.cpu_count()} cores, load {load:.1f}: 1 replica {one:.1f}/s, 3 replicas {three:.1f}/s, "
            f"ratio {three / one:.2f}"
        )


if __name__ == "__main__":
    main()
