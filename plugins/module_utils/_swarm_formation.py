"""Which manager a swarm is formed through: the one that initialises it, or the one the others join by.

The inventory's first manager initialised the swarm and gave the join tokens. When that host dies and a
fresh one takes its name, the fresh host is not in any swarm: initialising there would start a second swarm
beside the running one (two leaders, each with some of the apps' tasks). So the anchor is the first
manager of the inventory, in the play, that already manages an active swarm; only when none does, the
first manager initialises one. The answer is read from each manager's `docker info` (the `host_info` of
community.docker.docker_host_info); a manager outside the play (`--limit`, unreachable) is not asked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Anchor:
    """`host` forms the swarm: it manages one already (`in_swarm`) or initialises it."""

    host: str
    in_swarm: bool


def manages_a_swarm(host_info: object) -> bool:
    """Whether `docker info` shows a manager of an active swarm."""
    if not isinstance(host_info, Mapping):
        return False
    swarm = host_info.get("Swarm")
    return (
        isinstance(swarm, Mapping) and swarm.get("LocalNodeState") == "active" and swarm.get("ControlAvailable") is True
    )


def swarm_anchor(managers: Sequence[str], play_hosts: Sequence[str], host_infos: Mapping[str, object]) -> Anchor:
    """The manager to form the swarm through; `host_infos` maps the hosts asked to their `docker info`."""
    for manager in managers:
        if manager in play_hosts and manages_a_swarm(host_infos.get(manager)):
            return Anchor(manager, True)
    # No manager in the play manages a swarm: the first initialises one (outside the play, it is only asked
    # for tokens, as before).
    return Anchor(managers[0] if managers else "", False)
