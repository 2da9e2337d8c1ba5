"""Filters placing the apps on hosts (plugins/module_utils/_placement.py).

Documented per filter beside this file (app_placement_errors.yml, apps_on_host.yml).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._placement import (
    SWARM_GROUPS,
    Inventory,
    apps_on_host,
    placement_errors,
)


def _inventory(groups: object, play_hosts: object) -> Inventory:
    if not isinstance(groups, Mapping) or not isinstance(play_hosts, Sequence) or isinstance(play_hosts, str):
        raise AnsibleFilterError("placement needs the groups mapping and the list of the play's hosts")
    return Inventory.from_ansible(groups, play_hosts)  # type: ignore[arg-type]


def _specs(specs: object) -> list[Mapping[str, Any]]:
    if not isinstance(specs, Sequence) or isinstance(specs, str) or not all(isinstance(s, Mapping) for s in specs):
        raise AnsibleFilterError("placement reads app specs (the app_specs filter's output)")
    return list(specs)  # type: ignore[arg-type]


def app_placement_errors(
    specs: object,
    groups: object,
    play_hosts: object,
    label: str = "apps",
    swarm_groups: object = SWARM_GROUPS,
) -> list[str]:
    """Every placement rule the specs break, one message each; [] when all is well."""
    return placement_errors(
        _specs(specs), _inventory(groups, play_hosts), label=label, swarm_groups=_swarm_groups(swarm_groups)
    )


def _swarm_groups(swarm_groups: object) -> tuple[str, str]:
    if (
        not isinstance(swarm_groups, Sequence)
        or isinstance(swarm_groups, str)
        or len(swarm_groups) != 2  # managers' and workers' group
        or not all(isinstance(g, str) and g for g in swarm_groups)
    ):
        raise AnsibleFilterError("swarm_groups must be [managers' group, workers' group]")
    return (str(swarm_groups[0]), str(swarm_groups[1]))


def apps_on_host_filter(
    specs: object, host: str, groups: object, play_hosts: object, swarm_groups: object = SWARM_GROUPS
) -> list[Mapping[str, Any]]:
    """The specs placed on the host (a swarm service's on the swarm's first manager only)."""
    return apps_on_host(_specs(specs), host, _inventory(groups, play_hosts), _swarm_groups(swarm_groups))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"app_placement_errors": app_placement_errors, "apps_on_host": apps_on_host_filter}
