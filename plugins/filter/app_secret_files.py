"""Filter: the secret files of the apps, one item per (app, file) pair."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: app_secret_files
short_description: One item per secret file of the apps
version_added: "1.1.0"
description:
  - >-
    Takes the apps as the C(secure_streamlit.hosting.app_specs) filter returns them and gives one item per
    secret file, C([app, {key: file name, value: variable name}]), for a loop that writes the files.
  - Only names travel through the loop; the task looks the value up itself (and runs with C(no_log)).
positional: _input
options:
  _input:
    description: The apps (dicts with C(name) and C(secrets), a mapping of file name to variable name).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Write each app's secret files
  ansible.builtin.copy:
    content: "{{ lookup('ansible.builtin.vars', item.1.value) }}"
    dest: "/etc/streamlit-apps/secrets/{{ item.0.name }}/{{ item.1.key }}"
    mode: "0400"
  loop: "{{ _apps_managed | secure_streamlit.hosting.app_secret_files }}"
  no_log: true
"""

RETURN = r"""
_value:
  description: "[app, {key, value}] pairs, sorted by app and file name."
  type: list
  elements: list
"""


def app_secret_files(apps: list[dict[str, Any]]) -> list[list[Any]]:
    pairs = []
    for app in apps:
        secrets = app.get("secrets") or {}
        if not isinstance(secrets, dict):
            raise AnsibleFilterError(f"app {app.get('name')!r}: secrets must be a mapping")
        pairs.extend([app, {"key": key, "value": secrets[key]}] for key in sorted(secrets))
    return pairs


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"app_secret_files": app_secret_files}
