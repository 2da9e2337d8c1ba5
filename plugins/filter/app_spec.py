"""Filters over the collection's one app model (plugins/module_utils/_app_spec.py).

Documented per filter beside this file (app_spec_errors.yml, app_specs.yml), as ansible-core documents
the filters of one file.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import (
    AppSpecError,
    Defaults,
    app_errors,
    parse_apps,
    purge_errors,
)
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._egress import host_local_errors


def _defaults(defaults: object, defaults_from: Mapping[str, str] | None) -> Defaults:
    if isinstance(defaults, Defaults):
        return defaults
    if defaults is None:
        return Defaults()
    return Defaults.from_mapping(defaults, names=defaults_from)  # type: ignore[arg-type]


def app_spec_errors(
    apps: object,
    defaults: object = None,
    label: str = "apps",
    defined_variables: Collection[str] | None = None,
    defaults_from: Mapping[str, str] | None = None,
) -> list[str]:
    """Every rule the entries break, one message each; [] when all is well."""
    try:
        return app_errors(apps, _defaults(defaults, defaults_from), label=label, defined_variables=defined_variables)
    except AppSpecError as exc:  # the defaults themselves are wrong
        return exc.errors


def app_specs(
    apps: object,
    defaults: object = None,
    label: str = "apps",
    defined_variables: Collection[str] | None = None,
    defaults_from: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The entries with their defaults filled in (AppSpec.to_dict: no passwords)."""
    try:
        specs = parse_apps(apps, _defaults(defaults, defaults_from), label=label, defined_variables=defined_variables)
    except AppSpecError as exc:
        raise AnsibleFilterError("\n".join(exc.errors)) from None
    return [spec.to_dict() for spec in specs]


def app_purge_errors(purge: object, names: object, label: str = "apps_purge_data") -> list[str]:
    """Why the list of removed apps whose data to delete is wrong; [] when all is well."""
    known = [name for name in names if isinstance(name, str)] if isinstance(names, list | tuple) else []
    return purge_errors(purge, known, label=label)


def egress_host_local_errors(specs: object, host_addresses: object, label: str = "apps") -> list[str]:
    """Entries of app_specs whose egress names one of this host's own addresses; [] when none does."""
    addresses = [str(a) for a in host_addresses] if isinstance(host_addresses, list | tuple) else []
    errors: list[str] = []
    for spec in specs if isinstance(specs, list | tuple) else []:
        if isinstance(spec, Mapping) and spec.get("egress"):
            where = f"{label}[{spec.get('index')}] (name {spec.get('name')!r})"
            errors += [f"{where}: {problem}" for problem in host_local_errors(spec["egress"], addresses)]
    return errors


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "app_spec_errors": app_spec_errors,
            "app_specs": app_specs,
            "app_purge_errors": app_purge_errors,
            "egress_host_local_errors": egress_host_local_errors,
        }
