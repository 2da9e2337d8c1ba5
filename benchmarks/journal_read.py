"""How rsyslog gets the journal: journald's forwarding socket (Debian's default, `ForwardToSyslog=yes`)
against the audit role's cursor (`imjournal`, roles/audit/templates/rsyslog-journal.conf.j2, with
`ForwardToSyslog=no`), side by side in one run on one systemd instance of the project's base image.

Each round, for each way in alternating order:
- a burst: `--records` records written by one `logger -f` as fast as it can; the records that reach
  /var/log/syslog, the seconds until the last one did, and the CPU rsyslogd and journald spent;
- a stall: rsyslogd stopped by SIGSTOP (a starved CPU, a slow disk) while `--stalled` records are written,
  then continued; the records that reach /var/log/syslog.

journald's own rate limit is off in the instance, so only the way to rsyslog is measured. Prints the
medians and the ratios cursor / forwarding.

    PYTHONPATH=. .venv/bin/python benchmarks/journal_read.py [--rounds 3] [--records 5000] [--stalled 1000]
        [--qlen 512]

`--qlen` sets the socket queue a host has (systemd's sysctl.d/50-default.conf); a container keeps the
kernel's 10.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from pathlib import Path

import docker
from docker.models.containers import Container

from benchmarks.swarm_failover import run, wait_for

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "roles/audit/templates/rsyslog-journal.conf.j2"
IMAGE = "secure-streamlit/base:bookworm"
NAME = "bench-journal-read"
DROP_IN = "/etc/rsyslog.d/10-secure-streamlit-journal.conf"
JOURNALD = "/etc/systemd/journald.conf.d/50-bench.conf"
QUIET = 5.0  # seconds without a new record after which a count is final
LIMIT = 300.0  # seconds any one wait may take


def cpu_ticks(node: Container, unit: str) -> int:
    """utime + stime of the unit's main process, in clock ticks (fields 14 and 15 of /proc/PID/stat)."""
    fields = run(node, f"cat /proc/$(systemctl show -p MainPID --value {unit})/stat").rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def arrived(node: Container, marker: str) -> int:
    return int(run(node, f"grep -c -- '{marker}-' /var/log/syslog || true").strip() or 0)


def settle(node: Container, marker: str, want: int, start: float) -> tuple[int, float]:
    """The records of `marker` in /var/log/syslog once all arrived or none came for QUIET seconds, and
    the seconds from `start` to the last one seen."""
    count, last, changed = 0, start, time.monotonic()
    while time.monotonic() - start < LIMIT:
        now = arrived(node, marker)
        if now != count:
            count, last, changed = now, time.monotonic(), time.monotonic()
        if count >= want or time.monotonic() - changed > QUIET:
            break
        time.sleep(0.2)
    return count, last - start


def use(node: Container, way: str) -> None:
    """Switch the instance to `way` ("forwarding" or "cursor") and restart journald and rsyslog."""
    if way == "cursor":
        conf = "".join(line for line in TEMPLATE.read_text().splitlines(keepends=True) if "{{" not in line)
        run(node, f"cat > {DROP_IN} <<'EOF'\n{conf}EOF")
        forward = "no"
    else:
        run(node, f"rm -f {DROP_IN}")
        forward = "yes"
    # A fresh cursor each time: the journal's end, so earlier rounds are not read again.
    run(node, "rm -f /var/spool/rsyslog/secure-streamlit-journal.state")
    run(node, f"printf '[Journal]\\nForwardToSyslog={forward}\\nRateLimitIntervalSec=0\\n' > {JOURNALD}")
    run(node, "systemctl restart rsyslog systemd-journald && sleep 2")


def burst(node: Container, records: int) -> tuple[int, float, float]:
    marker = uuid.uuid4().hex[:10]
    run(node, f"seq 1 {records} | sed 's/^/{marker}-/' > /tmp/records")
    before = cpu_ticks(node, "rsyslog") + cpu_ticks(node, "systemd-journald")
    start = time.monotonic()
    run(node, "logger -t bench -f /tmp/records")
    count, seconds = settle(node, marker, records, start)
    ticks = cpu_ticks(node, "rsyslog") + cpu_ticks(node, "systemd-journald") - before
    hertz = int(run(node, "getconf CLK_TCK").strip())
    return count, seconds, ticks / hertz


def stall(node: Container, records: int) -> int:
    marker = uuid.uuid4().hex[:10]
    run(node, f"seq 1 {records} | sed 's/^/{marker}-/' > /tmp/records")
    run(node, "systemctl kill --signal=SIGSTOP rsyslog")
    try:
        run(node, "logger -t bench -f /tmp/records")
    finally:
        run(node, "systemctl kill --signal=SIGCONT rsyslog")
    return settle(node, marker, records, time.monotonic())[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--stalled", type=int, default=1000)
    parser.add_argument("--qlen", type=int, help="net.unix.max_dgram_qlen in the instance (a host's systemd: 512)")
    args = parser.parse_args()
    client = docker.from_env()
    for old in client.containers.list(all=True, filters={"name": NAME}):
        old.remove(force=True)
    node = client.containers.run(
        IMAGE,
        command="/lib/systemd/systemd",
        name=NAME,
        hostname=NAME,
        detach=True,
        cap_add=["SYS_ADMIN"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        cgroupns="host",
        tmpfs={"/run": "", "/run/lock": "", "/tmp": ""},  # noqa: S108
        volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}},
        stop_signal="SIGRTMIN+3",
        sysctls={"net.unix.max_dgram_qlen": str(args.qlen)} if args.qlen else None,
    )
    try:
        wait_for("systemd", lambda: run(node, "systemctl is-system-running", check=False).strip()
                 in ("running", "degraded"), limit=120)  # fmt: skip
        run(node, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog >/dev/null")
        run(node, "mkdir -p /etc/systemd/journald.conf.d /var/log/journal && systemctl restart systemd-journald")
        qlen = run(node, "cat /proc/sys/net/unix/max_dgram_qlen").strip()
        print(f"records per burst: {args.records}; stalled: {args.stalled}; rounds: {args.rounds}; "
              f"net.unix.max_dgram_qlen here: {qlen}")  # fmt: skip
        ways = ["forwarding", "cursor"]
        results: dict[str, dict[str, list[float]]] = {w: {"got": [], "s": [], "cpu": [], "stalled": []} for w in ways}
        for round_ in range(args.rounds):
            for way in ways if round_ % 2 == 0 else reversed(ways):
                use(node, way)
                got, seconds, cpu = burst(node, args.records)
                stalled = stall(node, args.stalled)
                for key, value in (("got", got), ("s", seconds), ("cpu", cpu), ("stalled", stalled)):
                    results[way][key].append(value)
                print(f"round {round_ + 1} {way:>10}: burst {got}/{args.records} in {seconds:.2f} s, "
                      f"{cpu:.2f} CPU s; stalled {stalled}/{args.stalled}")  # fmt: skip
        median = {w: {k: statistics.median(v) for k, v in r.items()} for w, r in results.items()}
        print("\nmedians            forwarding     cursor   cursor/forwarding")
        for key, label in (("got", "burst arrived"), ("s", "burst seconds"), ("cpu", "CPU seconds"),
                           ("stalled", "stalled arrived")):  # fmt: skip
            a, b = median["forwarding"][key], median["cursor"][key]
            print(f"{label:<17} {a:>11.2f} {b:>10.2f} {b / a if a else float('nan'):>19.2f}")
    finally:
        node.remove(force=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
