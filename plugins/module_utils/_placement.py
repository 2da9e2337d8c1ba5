"""Where each app runs: an app entry's `hosts:` resolved against the inventory.

The app model (_app_spec.py) checks the shape of `hosts:`; this module needs the inventory (Ansible's
`groups` mapping) to say which hosts a name means, to refuse names the inventory does not have, and to
refuse per-host state (`data:`, `database:`) on several hosts unless the entry says each host keeps its
own copy (`per_host_state: true`, docs/multi-host.md). Standard library only.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Inventory:
    """What placement reads from the inventory: every host, every group's hosts, the play's hosts."""

    hosts: frozenset[str]
    groups: Mapping[str, frozenset[str]]
    play_hosts: tuple[str, ...]
    # The first host of each group as the inventory lists it (a set keeps no order): the swarm's first
    # manager deploys its services.
    first: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_ansible(cls, groups: Mapping[str, Sequence[str]], play_hosts: Sequence[str]) -> Inventory:
        """From Ansible's `groups` magic variable (which has `all`) and `ansible_play_hosts_all`."""
        every = frozenset(str(h) for h in groups.get("all", ()))
        return cls(
            hosts=every,
            groups={str(name): frozenset(str(h) for h in members) for name, members in groups.items()},
            play_hosts=tuple(str(h) for h in play_hosts),
            first={str(name): str(members[0]) for name, members in groups.items() if members},
        )


def _label(spec: Mapping[str, Any], label: str) -> str:
    return f"{label}[{spec['index']}] (name {spec['name']!r})"


def resolve(names: Collection[str], inventory: Inventory) -> tuple[list[str], list[str]]:
    """The hosts the names mean (sorted) and the names that are neither a host nor a group.
    No names means every host of the play."""
    if not names:
        return sorted(set(inventory.play_hosts)), []
    hosts: set[str] = set()
    unknown: list[str] = []
    for name in names:
        found = False
        if name in inventory.hosts:
            hosts.add(name)
            found = True
        if name in inventory.groups:
            hosts |= inventory.groups[name]
            found = True
        if not found:
            unknown.append(name)
    return sorted(hosts), unknown


# roles/swarm's default group names (swarm_managers_group, swarm_workers_group).
SWARM_GROUPS = ("swarm_managers", "swarm_workers")


def swarm_members(inventory: Inventory, swarm_groups: Sequence[str] = SWARM_GROUPS) -> set[str]:
    """The swarm's hosts, or none when its managers' group (the first of swarm_groups) has no host."""
    if not inventory.groups.get(swarm_groups[0]):
        return set()
    return set().union(*(inventory.groups.get(group, frozenset()) for group in swarm_groups))


def _replicas_error(spec: Mapping[str, Any], hosts: list[str], inventory: Inventory, groups: Sequence[str]) -> str:
    """Why an app with several replicas cannot be a swarm service here, or "": its hosts must all be the
    swarm's (the service runs on the swarm's nodes, not on hosts outside it)."""
    replicas = spec.get("replicas", 1)
    if replicas <= 1:
        return ""
    members = swarm_members(inventory, groups)
    if not members:
        return (
            f"replicas {replicas} needs a swarm, and the inventory's {groups[0]} group has no host "
            "(docs/multi-host.md); use replicas: 1 or add the swarm's managers"
        )
    outside = [host for host in hosts if host not in members]
    if outside:
        return (
            f"replicas {replicas} runs as a swarm service, but {', '.join(outside)} "
            f"{'is' if len(outside) == 1 else 'are'} not in the swarm ({' or '.join(groups)}); "
            "place the app on the swarm's hosts (e.g. hosts: [" + groups[0] + ", " + groups[-1] + "])"
        )
    return ""


def placement_errors(
    specs: Sequence[Mapping[str, Any]],
    inventory: Inventory,
    *,
    label: str = "apps",
    swarm_groups: Sequence[str] = SWARM_GROUPS,
) -> list[str]:
    """Every placement rule the specs (AppSpec.to_dict) break, one message each naming the entry; [] when
    all is well."""
    errors: list[str] = []
    for spec in specs:
        names = spec.get("hosts") or []
        hosts, unknown = resolve(names, inventory)
        where = _label(spec, label)
        if unknown:
            errors.append(
                f"{where}: hosts {', '.join(repr(n) for n in unknown)}: neither a host nor a group of the inventory"
            )
            continue
        if names and not hosts:
            errors.append(f"{where}: hosts {', '.join(repr(n) for n in names)} name only empty groups: no host runs it")
            continue
        problem = _replicas_error(spec, hosts, inventory, swarm_groups)
        if problem:
            errors.append(f"{where}: {problem}")
            continue
        if spec.get("replicas", 1) > 1 and spec.get("egress"):
            errors.append(
                f"{where}: egress with replicas {spec['replicas']}: per-app egress is a host's firewall table "
                "and the app's own bridge, which a swarm service's tasks on other nodes do not have; "
                "use replicas: 1 or leave egress out"
            )
            continue
        state = [what for what, key in (("data", "data_mount"), ("database", "database")) if spec.get(key)]
        if state and len(hosts) > 1 and not spec.get("per_host_state"):
            placed = "hosts " + ", ".join(repr(n) for n in names) if names else "every host of the play (no hosts:)"
            errors.append(
                f"{where}: {' and '.join(state)} on {len(hosts)} hosts ({placed}: {', '.join(hosts)}): each host would "
                "keep a separate copy that nothing synchronises; place it on one host, or set per_host_state: true "
                "to accept separate copies"
            )
    return errors


def swarm_deployer(inventory: Inventory, swarm_groups: Sequence[str] = SWARM_GROUPS) -> str:
    """The host that deploys the swarm's services: the first host of the managers' group, "" without one."""
    return inventory.first.get(swarm_groups[0], "")


def apps_on_host(
    specs: Sequence[Mapping[str, Any]], host: str, inventory: Inventory, swarm_groups: Sequence[str] = SWARM_GROUPS
) -> list[Mapping[str, Any]]:
    """The specs placed on `host`, in their order. An app without `hosts` runs on every host of the play,
    which the asking host always is (also when a play names it otherwise, as the edge's render test does).
    An app with replicas above 1 is a swarm service: the swarm's first manager alone deploys it, routes it
    and watches its repository (the swarm places its tasks by `hosts:`)."""
    return [
        spec
        for spec in specs
        if (
            host == swarm_deployer(inventory, swarm_groups)
            if spec.get("replicas", 1) > 1
            else not spec.get("hosts") or host in resolve(spec["hosts"], inventory)[0]
        )
    ]
