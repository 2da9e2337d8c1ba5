"""Failover of a swarm's leader: three managers on this machine, the leader killed, rounds side by side.

Three systemd instances of the project's base image (the molecule settings: SYS_ADMIN, NET_ADMIN,
cgroupns host, the inner engine's state on a tmpfs), each with Debian's docker.io, form a swarm of three
managers and run a 3-replica service (`python3 -m http.server` from the base image, dnsrr, no published
port). Each round kills the leader's instance (SIGKILL of the whole container: a host that dies, not one
that shuts down cleanly) and times, from a surviving manager:

- a new leader: `docker node ls` answers again and names a leader among the survivors;
- the dead node marked down;
- the service back at 3 running tasks, none on the dead node.

Then the dead node is removed from the swarm and a fresh instance joins in its place as a manager, so the
next round again kills the leader of three. Also one round kills a worker-like follower (a manager that is
not the leader) for comparison when `--follower` is given.

    PYTHONPATH=.:collections .venv/bin/python benchmarks/swarm_failover.py [--rounds 3] [--follower] [--heartbeat 5s]

Needs the outer engine (`make setup`) and .cache/images/base.tar. Removes what it made, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import docker
from docker.models.containers import Container

REPO = Path(__file__).resolve().parent.parent
IMAGE = "secure-streamlit/base:bookworm"
NETWORK = "bench-failover"
PREFIX = "bench-failover-"
SERVICE = "web"
LIMIT = 240.0  # seconds any one wait may take before the round is reported as failed


def run(node: Container, command: str, check: bool = True) -> str:
    code, output = node.exec_run(["sh", "-c", command], demux=False)
    text = (output or b"").decode(errors="replace")
    if check and code != 0:
        raise RuntimeError(f"{node.name}: {command!r} exited {code}: {text[-1500:]}")
    return text


def wait_for(what: str, probe: Callable[[], bool], limit: float = LIMIT, step: float = 0.5) -> float:
    start = time.monotonic()
    while True:
        if probe():
            return time.monotonic() - start
        if time.monotonic() - start > limit:
            raise TimeoutError(f"{what}: not within {limit:.0f} s")
        time.sleep(step)


def start_node(client: docker.DockerClient, name: str) -> Container:
    node = client.containers.run(
        IMAGE,
        command="/lib/systemd/systemd",
        name=name,
        hostname=name,
        detach=True,
        cap_add=["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        cgroupns="host",
        # The instance's own tmpfs mounts, as molecule's instances have them.
        tmpfs={"/run": "", "/run/lock": "", "/tmp": "", "/var/lib/docker": "rw,exec,size=1g"},  # noqa: S108
        volumes={
            "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
            str(REPO / ".cache/images"): {"bind": "/opt/images", "mode": "ro"},
        },
        network=NETWORK,
        stop_signal="SIGRTMIN+3",
        labels={"secure-streamlit.bench": "swarm-failover"},
    )
    wait_for(f"{name}: systemd", lambda: run(node, "systemctl is-system-running", check=False).strip()
             in ("running", "degraded"), limit=120)  # fmt: skip
    # The inner engine as the molecule instances have it: systemd cgroups, overlay2 on the tmpfs.
    run(node, "mkdir -p /etc/docker && printf '%s' '{\"exec-opts\": [\"native.cgroupdriver=systemd\"]}' "
              "> /etc/docker/daemon.json")  # fmt: skip
    run(node, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
              "--no-install-recommends docker.io >/dev/null")  # fmt: skip
    wait_for(f"{name}: docker", lambda: node.exec_run(["docker", "info"]).exit_code == 0, limit=120)
    run(node, "docker load -q -i /opt/images/base.tar >/dev/null")
    return node


def address(node: Container) -> str:
    node.reload()
    return node.attrs["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]


def leader(node: Container) -> str | None:
    """The leader's hostname as a manager sees it, or None while the swarm has no leader."""
    code, output = node.exec_run(["docker", "node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}"])
    if code != 0:
        return None
    for line in output.decode().splitlines():
        name, _, status = line.partition(" ")
        if status == "Leader":
            return name
    return None


def node_down(node: Container, dead: str) -> bool:
    code, output = node.exec_run(["docker", "node", "ls", "--format", "{{.Hostname}} {{.Status}}"])
    return code == 0 and f"{dead} Down" in output.decode().splitlines()


def tasks_back(node: Container, dead: str) -> bool:
    code, output = node.exec_run(
        [
            "docker",
            "service",
            "ps",
            SERVICE,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}}|{{.CurrentState}}",
        ]
    )
    if code != 0:
        return False
    rows = [line.split("|") for line in output.decode().splitlines() if line]
    running = [n for n, state in rows if state.startswith("Running") and n != dead]
    return len(running) == 3


def one_round(
    nodes: list[Container], kind: str, token: str, fresh: Callable[[], Container]
) -> tuple[tuple[str, float, float, float], list[Container]]:
    """Kill the leader (or a follower), time the swarm's recovery, put a fresh manager in its place."""
    current = next((name for name in map(leader, nodes) if name), None)
    by_name = {n.name: n for n in nodes}
    assert current in by_name, f"no leader among {list(by_name)}"
    victim = by_name[current] if kind == "leader" else next(n for n in nodes if n.name != current)
    survivors = [n for n in nodes if n is not victim]
    watcher = survivors[0]
    start = time.monotonic()
    victim.kill()
    # Each figure from the kill; the waits run one after the other.
    wait_for("a new leader", lambda: (leader(watcher) or victim.name) != victim.name)
    t_leader = time.monotonic() - start
    wait_for("node marked down", lambda: node_down(watcher, victim.name))
    t_down = time.monotonic() - start
    wait_for("3 tasks again", lambda: tasks_back(watcher, victim.name))
    t_tasks = time.monotonic() - start
    victim.remove(force=True)
    run(watcher, f"docker node demote {victim.name} >/dev/null 2>&1 || true")
    run(watcher, f"docker node rm --force {victim.name} >/dev/null")
    replacement = fresh()
    run(replacement, f"docker swarm join --token {token} {address(watcher)}:2377 >/dev/null")

    def managers_reachable() -> bool:
        statuses = run(watcher, "docker node ls --format '{{.ManagerStatus}}'").split()
        return statuses.count("Reachable") + statuses.count("Leader") == 3

    wait_for("3 managers reachable", managers_reachable)
    # Spread the tasks again before the next round: swarm does not rebalance by itself.
    run(watcher, f"docker service update -q --detach --force {SERVICE} >/dev/null")
    wait_for("3 tasks after the rejoin", lambda: tasks_back(watcher, ""))
    return (kind, t_leader, t_down, t_tasks), [*survivors, replacement]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--follower", action="store_true", help="also one round that kills a follower")
    parser.add_argument("--heartbeat", default="5s", help="the dispatcher's heartbeat period (swarm's default 5s)")
    args = parser.parse_args()
    client = docker.from_env()
    made: list[str] = []
    network = client.networks.create(NETWORK, labels={"secure-streamlit.bench": "swarm-failover"})
    try:
        serial = 0

        def fresh() -> Container:
            nonlocal serial
            serial += 1
            name = f"{PREFIX}{serial}"
            made.append(name)
            return start_node(client, name)

        t0 = time.monotonic()
        nodes = [fresh() for _ in range(3)]
        print(f"three instances with engines in {time.monotonic() - t0:.0f} s", flush=True)
        first = nodes[0]
        run(
            first,
            f"docker swarm init --dispatcher-heartbeat {args.heartbeat} --advertise-addr {address(first)} >/dev/null",
        )
        token = run(first, "docker swarm join-token -q manager").strip()
        join = f"docker swarm join --token {token} {address(first)}:2377 >/dev/null"
        for node in nodes[1:]:
            run(node, join)
        run(first, f"docker service create -q --detach --name {SERVICE} --replicas 3 --endpoint-mode dnsrr "
                   f"{IMAGE} python3 -m http.server 8000 >/dev/null")  # fmt: skip
        wait_for("3 tasks", lambda: tasks_back(first, ""))

        rows: list[tuple[str, float, float, float]] = []
        kinds = ["leader"] * args.rounds + (["follower"] if args.follower else [])
        for round_no, kind in enumerate(kinds, 1):
            row, nodes = one_round(nodes, kind, token, fresh)
            rows.append(row)
            print(
                f"round {round_no} ({kind} killed): leader after {row[1]:.1f} s, "
                f"marked down after {row[2]:.1f} s, 3 tasks running after {row[3]:.1f} s",
                flush=True,
            )

        leaders = [r for r in rows if r[0] == "leader"]
        if leaders:
            print(
                f"\nleader killed, {len(leaders)} rounds: new leader median "
                f"{statistics.median(r[1] for r in leaders):.1f} s, node down median "
                f"{statistics.median(r[2] for r in leaders):.1f} s, 3 tasks running again median "
                f"{statistics.median(r[3] for r in leaders):.1f} s"
            )
        return 0
    finally:
        for name in made:
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(name).remove(force=True)
        network.remove()


if __name__ == "__main__":
    sys.exit(main())
