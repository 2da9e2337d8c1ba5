"""The status app's entry (roles/status, status_app_enabled): one definition the roles that read the app
list (apps, tls, status) add to the inventory's `apps`.

Documented per filter beside this file (with_status_app.yml, status_app_repos.yml).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

# The app's name (status is reserved for the platform) and its source: the bare repository the status role
# keeps on the host (roles/status/vars/main.yml, _status_app_repo), fetched by the deploy engine as any
# plain-git app.
STATUS_APP_NAME = "platform-status"
STATUS_APP_REPO = "/var/lib/secure-streamlit-status-app.git"
STATUS_APP_URL = f"file://{STATUS_APP_REPO}"
STATUS_APP_RESOURCES = {"cpus": 0.5, "memory": "512m", "pids": 128}


def _enabled(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
        return value.lower() in ("true", "yes")
    raise AnsibleFilterError(f"status_app_enabled must be true or false, not {value!r}")


def with_status_app(
    apps: object, enabled: object = False, access: Mapping[str, Any] | None = None, route: str = "/status/"
) -> object:
    """`apps` (None: []) with the status app's entry appended when `enabled`. Anything but a list is returned
    as it is: the app model reports it."""
    entries = [] if apps is None else apps
    if not _enabled(enabled) or not isinstance(entries, list):
        return entries
    entry: dict[str, Any] = {
        "name": STATUS_APP_NAME,
        "provider": "git",
        "repo": STATUS_APP_URL,
        "branch": "main",
        "route": {"path": route},
        "resources": dict(STATUS_APP_RESOURCES),
    }
    if access:
        entry["access"] = access
    return [*entries, entry]


def status_app_repos(enabled: object) -> list[str]:
    """The platform's own file:// repositories the app model allows (git_platform_repos)."""
    return [STATUS_APP_URL] if _enabled(enabled) else []


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"with_status_app": with_status_app, "status_app_repos": status_app_repos}
