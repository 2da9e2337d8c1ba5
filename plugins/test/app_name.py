"""Test: whether a value is a valid app name, by the collection's one app model."""

from __future__ import annotations

from typing import Any

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import NAME_RE

DOCUMENTATION = r"""
name: app_name
short_description: Whether a value is a valid app name
version_added: "1.1.0"
description:
  - True when the value is text that the app model (plugins/module_utils/_app_spec.py) accepts as an app
    name, matched as a whole string.
positional: _input
options:
  _input:
    description: The value to test.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Keep only names that can be apps
  ansible.builtin.debug:
    msg: "{{ ['triage', 'a;b', 'x\n'] | select('secure_streamlit.hosting.app_name') | list }}"
"""

RETURN = r"""
_value:
  description: Whether the value is a valid app name.
  type: bool
"""


def app_name(value: Any) -> bool:
    return isinstance(value, str) and NAME_RE.fullmatch(value) is not None


class TestModule:
    def tests(self) -> dict[str, Any]:
        return {"app_name": app_name}
