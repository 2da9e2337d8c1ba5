"""Filter: the password file and URL of each app with a database, one item per file."""

from __future__ import annotations

import base64
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import database_secret_files

DOCUMENTATION = r"""
name: app_database_secret_files
short_description: The secret files of the apps with a database, one item per file
version_added: "1.1.0"
description:
  - >-
    Takes the results of C(ansible.builtin.slurp) over the databases' password files, looped over the
    apps (each result's C(item) is the app as C(secure_streamlit.hosting.app_specs) returns it) and gives
    C([result, {name, content}]) for libpq's password file C(pgpass) and a C(database-url).
  - The items hold the password: loop over them with C(no_log).
positional: _input
options:
  _input:
    description: The slurp results, each with C(item) (the app) and C(content) (base64).
    type: list
    elements: dict
    required: true
  socket_dir:
    description: Where the app finds the server's socket in its container.
    type: str
    default: /run/postgresql
"""

EXAMPLES = r"""
- name: Give each app with a database its password file and URL
  ansible.builtin.copy:
    content: "{{ item.1.content }}"
    dest: "/etc/streamlit-apps/secrets/{{ item.0.item.name }}/{{ item.1.name }}"
    mode: "0400"
  loop: "{{ _passwords.results | secure_streamlit.hosting.app_database_secret_files }}"
  no_log: true
"""

RETURN = r"""
_value:
  description: "[result, {name, content}] pairs: pgpass and database-url for each app."
  type: list
  elements: list
"""


def app_database_secret_files(results: list[dict[str, Any]], socket_dir: str = "/run/postgresql") -> list[list[Any]]:
    pairs: list[list[Any]] = []
    for result in results:
        app = result.get("item") or {}
        try:
            password = base64.b64decode(result["content"]).decode("ascii").strip()
            files = database_secret_files(str(app.get("database_name", "")), password, socket_dir)
        except (KeyError, ValueError) as exc:
            raise AnsibleFilterError(f"app {str(app.get('name'))[:60]!r}: {exc}") from None
        pairs.extend([result, {"name": name, "content": content}] for name, content in sorted(files.items()))
    return pairs


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"app_database_secret_files": app_database_secret_files}
