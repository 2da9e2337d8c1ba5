"""Figures for `secure-streamlit status` (docs/status.md): a host with many apps and a long deploy log.

The host's files are written by the real code (tests/status_host.py: the deploy engine's state and audit
log, the monitor's state and log, certificates); the Docker engine is the stand-in probe unless --docker
is given (then the real engine on this machine is asked: one filtered list per app).

Measured, best and median of --repeat runs:
- collect: the root timer's collection of the whole report (what `export` and a root `status` do), and
  its parts: the last deploys, each chain check, the certificates;
- export: collect, write the snapshot (the program's `export` in-process);
- status: the installed program as a process reading the snapshot (what an admin waits for).

    .venv/bin/python benchmarks/status_bench.py [--apps 20] [--records 10000] [--monitor-records 10000]
        [--repeat 5] [--dir /dev/shm] [--docker]

--dir: where the synthetic host is written (10,000 appends each fsync'd take minutes on a disk; the
reads measured are from the page cache either way, as on a host where the timer runs every minute).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "collections")]

from ansible_collections.secure_streamlit.hosting.plugins.module_utils import _status  # noqa: E402
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._audit_log import verify_log  # noqa: E402
from tests.status_host import NOW, Host, sha  # noqa: E402

_spec = importlib.util.spec_from_file_location("secure_streamlit", REPO / "roles/status/files/secure_streamlit.py")
command = importlib.util.module_from_spec(_spec)
sys.modules["secure_streamlit"] = command
_spec.loader.exec_module(command)


def timed(function: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def build(root: Path, apps: int, records: int, monitor_records: int) -> Host:
    names = [f"app{n:02d}" for n in range(apps)]
    host = Host(root, names)
    start = time.perf_counter()
    for n in range(records):
        app = names[n % apps]
        host.clock.now = NOW - (records - n) * 60
        if n % 10 == 9:
            host.fail(app, sha(n), f"gate failed: the script raised ValueError: case {n}")
        else:
            host.deploy(app, sha(n), requested_by="monitor" if n % 3 else "site.yml", seconds=30 + n % 50)
    for app in names:  # every app ends serving (a failed last deploy would only change the verdict)
        host.deploy(app, sha(records + names.index(app)))
    host.clock.now = NOW
    for n in range(monitor_records):
        host.monitor.audit.write("change_detected", app=names[n % apps], sha=sha(n), previous_sha=sha(n + 1))
    host.monitor_polled()
    host.certificates()
    host.write_findings()
    print(
        f"host written in {time.perf_counter() - start:.1f} s: {apps} apps, {records + apps} deploy records "
        f"({(root / 'log/deploys.log').stat().st_size / 1e6:.1f} MB), {monitor_records} monitor records "
        f"({(root / 'monitor/log/audit.jsonl').stat().st_size / 1e6:.1f} MB)"
    )
    return host


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=20)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--monitor-records", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    shm = "/dev/shm"  # noqa: S108 (a private directory is made inside it)
    parser.add_argument("--dir", default=shm if os.path.isdir(shm) else None)
    parser.add_argument("--docker", action="store_true", help="ask the real Docker engine for each app")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="status-bench-", dir=args.dir))
    try:
        host = build(root, args.apps, args.records, args.monitor_records)
        probe: _status.ContainerProbe = host.probe
        if args.docker:
            import docker

            probe = _status.DockerProbe(docker.from_env(timeout=30))
        collector = _status.Collector(host.settings, clock=host.clock, probe=probe)
        report = collector.collect()
        print(
            f"verdict {report['verdict']}, {len(report['attention'])} problem(s), "
            f"{len(json.dumps(report)) / 1e3:.0f} kB of JSON"
        )
        rows = [
            ("collect (the whole report)", lambda: collector.collect()),
            (
                "  last deploys per app",
                lambda: _status.deploy_history(Path(host.settings.audit_log), host.settings.apps, 5),
            ),
            ("  deploy chain check", lambda: verify_log(Path(host.settings.audit_log))),
            ("  monitor chain check", lambda: verify_log(Path(host.settings.monitor_audit_log))),
            ("  certificates", lambda: collector.certificates(NOW)),
            ("  container probe, every app", lambda: [probe.containers(a) for a in host.settings.apps]),
        ]
        config_path = root / "status.json"
        (root / "status").mkdir(mode=0o750)
        config_path.write_text(json.dumps(host.status_config()))
        config_path.chmod(0o640)

        def export() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                command.main(["--config", str(config_path), "export"], probe_factory=lambda: probe, clock=host.clock)

        rows.append(("export (collect + write the snapshot)", export))
        snapshot = root / "status/status.json"

        def status_process() -> None:
            subprocess.run(
                [
                    sys.executable,
                    "-I",
                    str(REPO / "roles/status/files/secure_streamlit.py"),
                    "--config",
                    str(config_path),
                    "status",
                    "--snapshot",
                    str(snapshot),
                ],
                check=False,
                capture_output=True,
            )

        rows.append(("status from the snapshot (a process)", status_process))
        print(f"{'':40} {'best':>9} {'median':>9}")
        for label, function in rows:
            best, median = timed(function, args.repeat)
            print(f"{label:40} {best * 1000:8.1f}ms {median * 1000:8.1f}ms")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
