"""Filter for the swarm role's formation (plugins/module_utils/_swarm_formation.py): the manager the swarm
is initialised on or joined through. Documented beside this file (swarm_anchor.yml)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_formation import (
    swarm_anchor as _swarm_anchor,
)


def _names(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str) and all(isinstance(v, str) for v in value)


def swarm_anchor(
    managers: object, hostvars: object, play_hosts: object, register: str = "_swarm_host"
) -> dict[str, Any]:
    """`{host, in_swarm}` from the managers' registered docker_host_info results in `hostvars`."""
    if not _names(managers) or not _names(play_hosts):
        raise AnsibleFilterError("swarm_anchor reads the managers' names and the play's hosts (lists of names)")
    if not isinstance(hostvars, Mapping):
        raise AnsibleFilterError("swarm_anchor reads hostvars")
    infos: dict[str, object] = {}
    for name in managers:  # type: ignore[union-attr]
        if name in play_hosts:  # type: ignore[operator]
            result = hostvars[name].get(register) if name in hostvars else None
            infos[name] = result.get("host_info") if isinstance(result, Mapping) else None
    anchor = _swarm_anchor(list(managers), list(play_hosts), infos)  # type: ignore[arg-type]
    return {"host": anchor.host, "in_swarm": anchor.in_swarm}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"swarm_anchor": swarm_anchor}
