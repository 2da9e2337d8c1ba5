"""Replicated apps (`replicas` above 1) as the swarm sees them: where a service's tasks may run (placement
constraints from the entry's `hosts:`) and what the edge balances to (`tls_swarm_edge_apps` entries).

Both read app specs (AppSpec.to_dict) and the inventory (_placement.Inventory); nothing here talks to an
engine. Node names: a constraint names `node.hostname`, the name the swarm knows a node by, which is taken
to be the inventory name (as when inventory names are the hosts' hostnames).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._deploy import PORT
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._placement import (
    SWARM_GROUPS,
    Inventory,
    resolve,
    swarm_members,
)
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_backend import SERVICE_PREFIX


class SwarmAppsError(ValueError):
    """Bad input: nothing was changed."""


def _replicated(spec: Mapping[str, Any]) -> bool:
    return int(spec.get("replicas", 1)) > 1


def swarm_placement(
    spec: Mapping[str, Any], inventory: Inventory, swarm_groups: Sequence[str] = SWARM_GROUPS
) -> list[str]:
    """The service's placement constraints for the entry's `hosts:`: none when it may run on every member
    of the swarm, `node.hostname==H` when on one member, else `node.hostname!=M` for each member it may not
    run on (sorted: the same inputs give the same service spec, so no needless update)."""
    members = swarm_members(inventory, swarm_groups)
    label = f"{spec.get('name')!r}"
    if not members:
        raise SwarmAppsError(f"app {label}: the inventory's {swarm_groups[0]} group has no host: no swarm")
    names = spec.get("hosts") or []
    if names:
        hosts, unknown = resolve(names, inventory)
        if unknown:
            raise SwarmAppsError(f"app {label}: hosts {', '.join(map(repr, unknown))}: not in the inventory")
    else:
        hosts = sorted(members)
    outside = [h for h in hosts if h not in members]
    if outside:
        raise SwarmAppsError(f"app {label}: {', '.join(outside)} not in the swarm ({' or '.join(swarm_groups)})")
    if not hosts:
        raise SwarmAppsError(f"app {label}: hosts name no host")
    if set(hosts) == members:
        return []
    if len(hosts) == 1:
        return [f"node.hostname=={hosts[0]}"]
    return [f"node.hostname!={h}" for h in sorted(members - set(hosts))]


def swarm_edge_apps(specs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`tls_swarm_edge_apps` for the replicated entries, in their order: the edge reaches each task on the
    host-mode port its node published for the app's port (no `network`: the edge is on no overlay)."""
    return [
        {"name": spec["name"], "service": SERVICE_PREFIX + spec["name"], "port": PORT}
        for spec in specs
        if _replicated(spec)
    ]
