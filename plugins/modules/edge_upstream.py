#!/usr/bin/python
"""Ansible module: point one app's nginx upstream at a server, checked, the old one kept on failure."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: edge_upstream
short_description: Switch one app's nginx upstream include, checked, with the old one put back on failure
description:
  - Writes C(<upstream_dir>/<app>.conf) (C(upstream streamlit_app_<app> { server HOST:PORT; })) as a
    candidate, checks it with the edge's candidate checker (a scratch copy of /etc/nginx with C(nginx -t)),
    swaps it in, checks the whole configuration and reloads nginx gracefully.
  - Any failure puts the previous include back; the running nginx keeps serving the old server.
  - The same library (C(plugins/module_utils/_nginx_upstream.py)) switches the edge during every deploy.
version_added: "1.1.0"
author:
  - secure_streamlit maintainers (@secure-streamlit)
options:
  app:
    description: The app's name.
    type: str
    required: true
  server:
    description: C(HOST:PORT) to serve the app from; required with O(state=present).
    type: str
  state:
    description: C(present) points the app at O(server); C(absent) removes its include.
    type: str
    choices: [present, absent]
    default: present
  upstream_dir:
    description: Directory of the per-app includes.
    type: path
    default: /etc/nginx/streamlit-upstreams
  check_candidate:
    description: The edge's candidate checker (roles/tls installs it); empty skips the candidate check.
    type: path
    default: /usr/local/sbin/streamlit-edge-check-candidate
  reload:
    description: Reload nginx after a change.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Reports whether the include would change; writes nothing and reloads nothing.
  diff_mode:
    support: full
    description: Shows the app's upstream include before and after.
"""

EXAMPLES = r"""
- name: Point triage at its new container
  secure_streamlit.hosting.edge_upstream:
    app: triage
    server: 172.18.0.5:8501
"""

RETURN = r"""
previous:
  description: The server the app pointed at before (null when there was no include).
  returned: always
  type: str
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._nginx_upstream import (
    Edge,
    UpstreamError,
    render,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "app": {"type": "str", "required": True},
            "server": {"type": "str"},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "upstream_dir": {"type": "path", "default": "/etc/nginx/streamlit-upstreams"},
            "check_candidate": {"type": "path", "default": "/usr/local/sbin/streamlit-edge-check-candidate"},
            "reload": {"type": "bool", "default": True},
        },
        required_if=[("state", "present", ["server"])],
        supports_check_mode=True,
    )
    params = module.params
    edge = Edge(
        upstream_dir=Path(params["upstream_dir"]),
        check_candidate=Path(params["check_candidate"]) if params["check_candidate"] else None,
    )
    app, server = params["app"], params["server"]
    try:
        wanted = render(app, server) if params["state"] == "present" else None
    except ValueError as exc:
        module.fail_json(msg=f"edge_upstream: {exc}")
    previous = edge.current(app)
    try:
        current_text = edge.path(app).read_text() if edge.path(app).exists() else None
    except OSError:
        current_text = None
    changed = current_text != wanted
    result = {
        "changed": changed,
        "previous": previous,
        "diff": {"before": current_text or "", "after": wanted or ""},
    }
    if module.check_mode or not changed:
        module.exit_json(**result)
    try:
        if wanted is None:
            edge.remove(app, reload=params["reload"])
        else:
            edge.switch(app, server, reload=params["reload"])
    except (UpstreamError, OSError) as exc:
        module.fail_json(
            msg=f"Switching {app} to {server} failed ({exc}); the previous upstream include is back and nginx "
            "keeps serving it.",
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
