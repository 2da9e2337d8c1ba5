"""Where each app runs: an app entry's `hosts:` resolved against the inventory.

The app model (_app_spec.py) checks the shape of `hosts:`; this module needs the inventory (Ansible's
`groups` mapping) to say which hosts a name means, to refuse names the inventory does not have, and to
refuse per-host state (`data:`, `database:`) on several hosts unless the entry says each host keeps its
own copy (`per_host_state: true`, docs/multi-host.md). Standard library only.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Inventory:
    """What placement reads from the inventory: every host, every group's hosts, the play's hosts."""

    hosts: frozenset[str]
    groups: Mapping[str, frozenset[str]]
    play_hosts: tuple[str, ...]

    @classmethod
    def from_ansible(cls, groups: Mapping[str, Sequence[str]], play_hosts: Sequence[str]) -> Inventory:
        """From Ansible's `groups` magic variable (which has `all`) and `ansible_play_hosts_all`."""
        every = frozenset(str(h) for h in groups.get("all", ()))
        return cls(
            hosts=every,
            groups={str(name): frozenset(str(h) for h in members) for name, members in groups.items()},
            play_hosts=tuple(str(h) for h in play_hosts),
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


def placement_errors(specs: Sequence[Mapping[str, Any]], inventory: Inventory, *, label: str = "apps") -> list[str]:
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
        state = [what for what, key in (("data", "data_mount"), ("database", "database")) if spec.get(key)]
        if state and len(hosts) > 1 and not spec.get("per_host_state"):
            placed = "hosts " + ", ".join(repr(n) for n in names) if names else "every host of the play (no hosts:)"
            errors.append(
                f"{where}: {' and '.join(state)} on {len(hosts)} hosts ({placed}: {', '.join(hosts)}): each host would "
                "keep a separate copy that nothing synchronises; place it on one host, or set per_host_state: true "
                "to accept separate copies"
            )
    return errors


def apps_on_host(specs: Sequence[Mapping[str, Any]], host: str, inventory: Inventory) -> list[Mapping[str, Any]]:
    """The specs placed on `host`, in their order. An app without `hosts` runs on every host of the play,
    which the asking host always is (also when a play names it otherwise, as the edge's render test does)."""
    return [spec for spec in specs if not spec.get("hosts") or host in resolve(spec["hosts"], inventory)[0]]
