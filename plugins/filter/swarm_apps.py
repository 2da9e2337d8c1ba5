"""Filters for replicated apps (plugins/module_utils/_swarm_apps.py): a service's placement constraints and
the edge's list of swarm apps.

Documented per filter beside this file (swarm_placement.yml, swarm_edge_apps.yml).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._placement import SWARM_GROUPS, Inventory
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_apps import (
    SwarmAppsError,
)
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_apps import (
    swarm_edge_apps as _swarm_edge_apps,
)
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_apps import (
    swarm_placement as _swarm_placement,
)


def _is_list(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def swarm_placement(spec: object, groups: object, play_hosts: object, swarm_groups: object = SWARM_GROUPS) -> list[str]:
    """The placement constraints of one app spec's service."""
    if not isinstance(spec, Mapping):
        raise AnsibleFilterError("swarm_placement reads one app spec (an app_specs filter's item)")
    if not isinstance(groups, Mapping) or not _is_list(play_hosts):
        raise AnsibleFilterError("swarm_placement needs the groups mapping and the list of the play's hosts")
    if not _is_list(swarm_groups) or len(swarm_groups) != 2 or not all(isinstance(g, str) and g for g in swarm_groups):  # type: ignore[arg-type]
        raise AnsibleFilterError("swarm_groups must be [managers' group, workers' group]")
    try:
        return _swarm_placement(
            spec,
            Inventory.from_ansible(groups, play_hosts),  # type: ignore[arg-type]
            tuple(swarm_groups),  # type: ignore[arg-type]
        )
    except SwarmAppsError as error:
        raise AnsibleFilterError(f"swarm_placement: {error}") from None


def swarm_edge_apps(specs: object) -> list[dict[str, Any]]:
    """tls_swarm_edge_apps from the app specs."""
    if not _is_list(specs) or not all(isinstance(s, Mapping) and "name" in s for s in specs):  # type: ignore[union-attr]
        raise AnsibleFilterError("swarm_edge_apps reads app specs (the app_specs filter's output)")
    return _swarm_edge_apps(list(specs))  # type: ignore[arg-type]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"swarm_placement": swarm_placement, "swarm_edge_apps": swarm_edge_apps}
