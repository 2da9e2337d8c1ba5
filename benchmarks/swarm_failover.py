"""Failover of a swarm's leader: three managers formed by the roles, the leader killed, rounds side by side.

Three systemd instances of the project's base image (the molecule settings: SYS_ADMIN, NET_ADMIN,
cgroupns host, the inner engine's state on a tmpfs) form a swarm of three managers **through the
collection's roles**: benchmarks/swarm_failover.yml (molecule/swarm/converge.yml's first play: the swarm
role's preflight, the docker role, the hardening role's firewall, the swarm role) run by ansible-playbook
on an inventory written here (the three hosts in swarm_managers, community.docker.docker connection,
live-restore off, the registry off: the service's image is loaded on each node). The formation is
checked: 3 managers (a leader, 2 reachable), every firewall lists the three addresses, the dispatcher's
heartbeat is `swarm_dispatcher_heartbeat_period`, and a second run of the play changes nothing.

The swarm runs a 3-replica service (`python3 -m http.server` from the base image, dnsrr, no published
port). Each round kills the leader's instance (SIGKILL of the whole container: a host that dies, not one
that shuts down cleanly) and times, from a surviving manager:

- a new leader: `docker node ls` answers again and names a leader among the survivors;
- the dead node marked down;
- the service back at 3 running tasks, none on the dead node.

Then the dead node is demoted and removed (`docker node rm`: the roles do not remove members) and a fresh
instance joins in its place as a manager by the same play over it and the survivors, listed first where
the dead one was (an operator replacing the inventory's first manager: the role must join it to the
running swarm, not initialise a second; every firewall then lists the new address), so the next round
again kills the leader of three. One round kills a follower (a manager that is not the
leader) for comparison when `--follower` is given. `--formation docker` forms and rejoins with Docker's
own commands (`docker swarm init/join`, Debian's engine with its defaults) instead, for comparison.

    PYTHONPATH=.:collections .venv/bin/python benchmarks/swarm_failover.py [--rounds 3] [--follower] \
        [--heartbeat 5s] [--formation role|docker]

Needs the outer engine (`make setup`) and .cache/images/base.tar. Removes what it made, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker
from docker.models.containers import Container

REPO = Path(__file__).resolve().parent.parent
PLAYBOOK = REPO / "benchmarks/swarm_failover.yml"
IMAGE = "secure-streamlit/base:bookworm"
NETWORK = "bench-failover"
PREFIX = "bench-failover-"
SERVICE = "web"
LIMIT = 240.0  # seconds any one wait may take before the round is reported as failed
HEARTBEAT = re.compile(r"([0-9]+)s?")


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


def start_instance(client: docker.DockerClient, name: str) -> Container:
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
    return node


def install_engine(node: Container) -> None:
    """Debian's engine with its defaults (`--formation docker`): systemd cgroups, overlay2 on the tmpfs."""
    run(node, "mkdir -p /etc/docker && printf '%s' '{\"exec-opts\": [\"native.cgroupdriver=systemd\"]}' "
              "> /etc/docker/daemon.json")  # fmt: skip
    run(node, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
              "--no-install-recommends docker.io >/dev/null")  # fmt: skip
    wait_for(f"{node.name}: docker", lambda: node.exec_run(["docker", "info"]).exit_code == 0, limit=120)


def load_image(node: Container) -> None:
    """The service's image, from the outer engine's saved base image (no registry here)."""
    run(node, "docker load -q -i /opt/images/base.tar >/dev/null")


def inventory(hosts: list[str], heartbeat: int) -> dict[str, object]:
    """The benchmark's inventory: `hosts` as swarm_managers in this order (the first one leads the play)."""
    return {
        "all": {
            "vars": {
                "ansible_connection": "community.docker.docker",
                "ansible_python_interpreter": "/usr/bin/python3",
                # The engine refuses swarm mode with live-restore (roles/swarm's preflight).
                "docker_daemon_live_restore": False,
                "swarm_dispatcher_heartbeat_period": heartbeat,
                # The service runs the base image each node has loaded: no registry to time or to lose.
                "swarm_registry_enabled": False,
            },
            "children": {"swarm_managers": {"hosts": {name: {} for name in hosts}}},
        }
    }


def failures(report: dict) -> list[str]:
    """`task: message` of each failed or unreachable host in the json callback's report."""
    found = []
    for play in report.get("plays", []):
        for task in play.get("tasks", []):
            for host, result in task.get("hosts", {}).items():
                if result.get("failed") or result.get("unreachable"):
                    message = str(result.get("msg", ""))[-400:]
                    found.append(f"{host}: {task.get('task', {}).get('name', '?')}: {message}")
    return found


def converge(hosts: list[str], heartbeat: int, workdir: Path) -> tuple[float, dict[str, int]]:
    """Run the play over `hosts`; its duration and the changed count per host. Raises on a failure."""
    path = workdir / "hosts.json"
    path.write_text(json.dumps(inventory(hosts, heartbeat), indent=2))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / "collections"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_NOCOLOR": "1",
    }
    playbook = Path(sys.executable).parent / "ansible-playbook"
    start = time.monotonic()
    done = subprocess.run(
        [str(playbook), "-i", str(path), str(PLAYBOOK)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.monotonic() - start
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"ansible-playbook exited {done.returncode}: {done.stderr[-2000:]}") from None
    stats = report.get("stats", {})
    if done.returncode != 0:
        raise RuntimeError(f"ansible-playbook exited {done.returncode}: " + "; ".join(failures(report)[:5]))
    return took, {host: int(stats[host]["changed"]) for host in hosts}


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


def managers(node: Container) -> dict[str, str]:
    """Each node's hostname and manager status (Leader, Reachable, Unreachable; "" for a worker)."""
    rows = run(node, "docker node ls --format '{{.Hostname}} {{.ManagerStatus}}'").splitlines()
    return {name: status for name, _, status in (row.partition(" ") for row in rows if row)}


def check_formation(nodes: list[Container], heartbeat: int) -> None:
    """3 managers (a leader, 2 reachable), every firewall lists all three, the heartbeat reached the swarm."""
    names = sorted(n.name for n in nodes)
    statuses = managers(nodes[0])
    assert sorted(statuses) == names, f"the swarm's nodes {sorted(statuses)}, not {names}"
    assert sorted(statuses.values()) == ["Leader", "Reachable", "Reachable"], f"manager statuses {statuses}"
    addresses = [address(n) for n in nodes]
    for node in nodes:
        listed = run(node, "nft list set inet secure_streamlit swarm_sources_v4")
        missing = [a for a in addresses if not re.search(rf"(?<![0-9.]){re.escape(a)}(?![0-9.])", listed)]
        assert not missing, f"{node.name}: the firewall's swarm sources lack {missing}: {listed}"
        period = run(node, "docker info --format '{{.Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}}'").strip()
        # Go prints the period as a duration: 5s, 1m0s.
        expected = f"{heartbeat // 60}m{heartbeat % 60}s" if heartbeat >= 60 else f"{heartbeat}s"
        assert period == expected, f"{node.name}: dispatcher heartbeat {period}, not {expected}"


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
    nodes: list[Container], kind: str, replace: Callable[[list[Container]], Container]
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
    replacement = replace(survivors)

    def managers_reachable() -> bool:
        statuses = list(managers(watcher).values())
        return statuses.count("Reachable") + statuses.count("Leader") == 3

    wait_for("3 managers reachable", managers_reachable)
    # Spread the tasks again before the next round: swarm does not rebalance by itself.
    run(watcher, f"docker service update -q --detach --force {SERVICE} >/dev/null")
    wait_for("3 tasks after the rejoin", lambda: tasks_back(watcher, ""))
    return (kind, t_leader, t_down, t_tasks), [*survivors, replacement]


def heartbeat_seconds(text: str) -> int:
    match = HEARTBEAT.fullmatch(text)
    if not match or not 1 <= int(match.group(1)) <= 60:
        raise argparse.ArgumentTypeError(f"--heartbeat {text!r}: whole seconds from 1 to 60, e.g. 5s")
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--follower", action="store_true", help="also one round that kills a follower")
    parser.add_argument(
        "--heartbeat", type=heartbeat_seconds, default=5, help="the dispatcher's heartbeat period (default 5s)"
    )
    parser.add_argument(
        "--formation",
        choices=["role", "docker"],
        default="role",
        help="form and rejoin with the roles (default) or with Docker's own commands (Debian's engine defaults)",
    )
    args = parser.parse_args()
    client = docker.from_env()
    made: list[str] = []
    network = client.networks.create(NETWORK, labels={"secure-streamlit.bench": "swarm-failover"})
    workdir = tempfile.TemporaryDirectory(prefix="bench-failover-")
    try:
        serial = 0

        def fresh() -> Container:
            nonlocal serial
            serial += 1
            name = f"{PREFIX}{serial}"
            made.append(name)
            node = start_instance(client, name)
            if args.formation == "docker":
                install_engine(node)
                load_image(node)
            return node

        t0 = time.monotonic()
        nodes = [fresh() for _ in range(3)]
        print(f"three instances in {time.monotonic() - t0:.0f} s", flush=True)
        first = nodes[0]
        if args.formation == "role":
            names = [n.name for n in nodes]
            took, changed = converge(names, args.heartbeat, Path(workdir.name))
            print(f"the play formed the swarm in {took:.0f} s (changed {changed})", flush=True)
            for node in nodes:
                load_image(node)
            check_formation(nodes, args.heartbeat)
            took, changed = converge(names, args.heartbeat, Path(workdir.name))
            print(f"the play's second run: {took:.0f} s, changed {changed}", flush=True)
            assert not any(changed.values()), f"the second run changed {changed}"
            print("checked: 3 managers (a leader, 2 reachable), every firewall lists the three addresses, "
                  f"dispatcher heartbeat {args.heartbeat} s, second run changed=0", flush=True)  # fmt: skip

            def replace(survivors: list[Container]) -> Container:
                node = fresh()
                hosts = [node.name, *(n.name for n in survivors)]
                took, changed = converge(hosts, args.heartbeat, Path(workdir.name))
                load_image(node)
                check_formation([*survivors, node], args.heartbeat)
                print(f"  the play joined {node.name} in {took:.0f} s (changed {changed})", flush=True)
                return node

        else:
            run(
                first,
                f"docker swarm init --dispatcher-heartbeat {args.heartbeat}s --advertise-addr {address(first)} "
                ">/dev/null",
            )
            token = run(first, "docker swarm join-token -q manager").strip()
            join = f"docker swarm join --token {token} {address(first)}:2377 >/dev/null"
            for node in nodes[1:]:
                run(node, join)

            def replace(survivors: list[Container]) -> Container:
                node = fresh()
                run(node, f"docker swarm join --token {token} {address(survivors[0])}:2377 >/dev/null")
                return node

        run(first, f"docker service create -q --detach --name {SERVICE} --replicas 3 --endpoint-mode dnsrr "
                   f"{IMAGE} python3 -m http.server 8000 >/dev/null")  # fmt: skip
        wait_for("3 tasks", lambda: tasks_back(first, ""))

        rows: list[tuple[str, float, float, float]] = []
        kinds = ["leader"] * args.rounds + (["follower"] if args.follower else [])
        for round_no, kind in enumerate(kinds, 1):
            row, nodes = one_round(nodes, kind, replace)
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
        workdir.cleanup()


if __name__ == "__main__":
    sys.exit(main())
