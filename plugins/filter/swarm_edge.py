"""The swarm edge's nginx fragments (plugins/module_utils/_swarm_edge.py), for the tls role to write: one
definition of the sticky cookie, used by the role and by the tests alike.

Documented beside this file (swarm_edge_conf.yml).
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_edge import http_conf, location_conf


def swarm_edge_conf(part: object) -> str:
    if part == "http":
        return http_conf()
    if part == "location":
        return location_conf()
    raise AnsibleFilterError(f"swarm_edge_conf: 'http' or 'location', not {part!r}")


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"swarm_edge_conf": swarm_edge_conf}
