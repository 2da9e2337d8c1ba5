#!/usr/bin/python
"""Ansible module: reload nginx gracefully and return once only workers of the new configuration accept."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nginx_reload
short_description: Reload nginx and wait until the workers of the old configuration stop accepting
description:
  - Reloads nginx (C(systemctl reload nginx) under systemd, C(nginx -s reload) otherwise) and returns once
    none of the master's workers of the old configuration accepts new connections, bounded by O(wait).
  - A reload only signals nginx's master, so for a moment after C(systemctl reload) returns the old workers
    still answer new requests with the old configuration. A play that ends with this module ends with the
    new configuration serving.
  - Old workers finish the requests and websockets they hold; only their accepting is waited for.
  - The same library (C(plugins/module_utils/_nginx_upstream.py)) reloads the edge during every deploy.
version_added: "1.1.0"
author:
  - secure_streamlit maintainers (@secure-streamlit)
options:
  wait:
    description: Seconds to wait for the new workers; past it the module warns and succeeds (nginx did reload).
    type: float
    default: 30
  pid_file:
    description: nginx's master pid file, from which its workers are found in C(/proc).
    type: path
    default: /run/nginx.pid
attributes:
  check_mode:
    support: full
    description: Reports a change and reloads nothing.
  diff_mode:
    support: none
    description: A reload has no content to compare.
"""

EXAMPLES = r"""
- name: Reload nginx with the checked configuration
  secure_streamlit.hosting.nginx_reload:
    wait: 30
"""

RETURN = r"""
replaced:
  description: >-
    Whether the old workers stopped accepting within O(wait); null when no worker could be read (no pid file,
    or nginx was not running).
  returned: success
  type: bool
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._nginx_upstream import Edge, UpstreamError


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "wait": {"type": "float", "default": 30.0},
            "pid_file": {"type": "path", "default": "/run/nginx.pid"},
        },
        supports_check_mode=True,
    )
    if module.check_mode:
        module.exit_json(changed=True, replaced=None)
    wait = module.params["wait"]
    if not 0 <= wait <= 3600:
        module.fail_json(msg=f"nginx_reload: wait must be between 0 and 3600 seconds, not {wait}")
    edge = Edge(pid_file=Path(module.params["pid_file"]), reload_wait=wait)
    try:
        replaced = edge.reload()
    except UpstreamError as exc:
        module.fail_json(msg=str(exc))
    if replaced is False:
        module.warn(f"nginx reloaded, but workers of the old configuration still accepted after {wait:g} s")
    module.exit_json(changed=True, replaced=replaced)


if __name__ == "__main__":
    main()
