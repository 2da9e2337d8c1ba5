"""Figures for change detection (issue #4), against the fake GitHub API over real HTTP.

For N = 1, 10, 50, 200 repositories, with and without a token:
- counted requests per hour: one simulated hour of the monitor's own pacing (real requests, simulated
  clock), counted by the fake exactly as GitHub counts them (authenticated 304s are free);
- detection latency after a push at a random moment (median, p95), default interval 30 s, jitter 0.1;
- RSS and CPU per idle cycle of the real daemon process (with a token, 1 s interval for the measure).

    .venv/bin/python benchmarks/monitor_bench.py [--quick]
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "collections")]

from ansible_collections.secure_streamlit.hosting.plugins.module_utils.github_client import GitHubClient  # noqa: E402
from tests.fake_github import FakeGitHub  # noqa: E402

PROGRAM = REPO / "roles/monitor/files/github_repo_monitor.py"
_spec = importlib.util.spec_from_file_location("github_repo_monitor", PROGRAM)
grm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(grm)
grm.log = lambda message: None  # quiet: the figures are the output
TOKEN = "bench-token"  # noqa: S105 (accepted by the local fake only)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def config_for(tmp: Path, gh: FakeGitHub, n: int, interval: float = 30, jitter: float = 0.1) -> Path:
    apps = [{"name": f"app{i}", "repo": f"acme/app{i}", "branch": "main"} for i in range(n)]
    path = tmp / "config.json"
    path.write_text(
        json.dumps(
            {
                "api_url": gh.url,
                "interval": interval,
                "jitter": jitter,
                "state_dir": str(tmp / "state"),
                "spool_dir": str(tmp / "spool"),
                "audit_log": str(tmp / "audit.jsonl"),
                "apps": apps,
            }
        )
    )
    return path


def simulated_monitor(tmp: Path, gh: FakeGitHub, n: int, token: str | None) -> tuple:
    clock = gh.clock
    config = grm.load_config(config_for(tmp, gh, n))
    client = GitHubClient(gh.url, token, clock=clock, sleep=lambda _: None)
    return grm.Monitor(config, client, clock=clock, sleep=lambda _: None, authenticated=token is not None), clock


def counted_per_hour(n: int, token: str | None) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as tmp, FakeGitHub(token=TOKEN, clock=Clock()) as gh:
        for i in range(n):
            gh.push("acme", f"app{i}")
        monitor, clock = simulated_monitor(Path(tmp), gh, n, token)
        start, cycles = clock.now, 0
        while clock.now - start < 3600:
            monitor.cycle()
            cycles += 1
            clock.now += monitor.next_delay()
        return gh.counted(), monitor.effective_interval()


def detection_latencies(n: int, token: str | None, samples: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp, FakeGitHub(token=TOKEN, clock=Clock()) as gh:
        for i in range(n):
            gh.push("acme", f"app{i}")
        tmp_path = Path(tmp)
        monitor, clock = simulated_monitor(tmp_path, gh, n, token)
        monitor.cycle()
        latencies = []
        for _ in range(samples):
            target = random.randrange(n)  # noqa: S311
            push_at = clock.now + random.uniform(0, monitor.effective_interval())  # noqa: S311
            pushed_sha = None
            while True:
                clock.now += monitor.next_delay()
                if pushed_sha is None and clock.now >= push_at:
                    pushed_sha = gh.push("acme", f"app{target}")
                monitor.cycle()
                request = tmp_path / "spool/requests" / f"app{target}.json"
                if pushed_sha and request.exists() and json.loads(request.read_text())["sha"] == pushed_sha:
                    latencies.append(clock.now - push_at)
                    break
        return latencies


def daemon_footprint(n: int, cycles: int = 20) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp, FakeGitHub(token=TOKEN) as gh:
        for i in range(n):
            gh.push("acme", f"app{i}")
        tmp_path = Path(tmp)
        config = config_for(tmp_path, gh, n, interval=1, jitter=0)
        (tmp_path / "creds").mkdir()
        (tmp_path / "creds/github-token").write_text(TOKEN)
        env = {**os.environ, "CREDENTIALS_DIRECTORY": str(tmp_path / "creds"), "PYTHONPATH": str(REPO / "collections")}
        proc = subprocess.Popen(
            [sys.executable, str(PROGRAM), "--config", str(config), "run"], env=env, stderr=subprocess.DEVNULL
        )
        try:
            while len(gh.requests) < 3:  # started and past the first (changing) cycles
                time.sleep(0.2)
            ticks = os.sysconf("SC_CLK_TCK")

            def cpu() -> float:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / ticks

            start_requests, start_cpu = len(gh.requests), cpu()
            while len(gh.requests) - start_requests < cycles:
                time.sleep(0.2)
            per_cycle_ms = (cpu() - start_cpu) * 1000 / (len(gh.requests) - start_requests)
            rss_kb = next(
                int(line.split()[1])
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                if line.startswith("VmRSS")
            )
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        return rss_kb / 1024, per_cycle_ms


def main() -> None:
    quick = "--quick" in sys.argv
    sizes = [1, 10, 50, 200]
    print("counted requests per hour, effective interval, detection latency after a push (default 30 s interval)")
    print(f"{'repos':>5} {'token':>6} {'counted/h':>10} {'interval s':>11} {'median s':>9} {'p95 s':>8}")
    for n in sizes:
        for token in (TOKEN, None):
            counted, interval = counted_per_hour(n, token)
            samples = 10 if quick or (token is None and n >= 50) else 40
            lat = sorted(detection_latencies(n, token, samples))
            p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
            print(
                f"{n:>5} {'yes' if token else 'no':>6} {counted:>10} {interval:>11.0f} "
                f"{statistics.median(lat):>9.1f} {p95:>8.1f}"
            )
    print("\ndaemon process (with a token), idle cycles at a 1 s interval")
    print(f"{'repos':>5} {'RSS MB':>7} {'CPU ms/cycle':>13}")
    for n in sizes:
        rss, cpu_ms = daemon_footprint(n, cycles=10 if quick else 20)
        print(f"{n:>5} {rss:>7.1f} {cpu_ms:>13.2f}")


if __name__ == "__main__":
    main()
