"""Filters for the edge's single sign-on (roles/sso; plugins/module_utils/_oidc_config.py).

Documented per filter beside this file (sso_errors.yml, sso_service_config.yml).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._oidc_config import (
    OIDCConfigError,
    parse_provider,
    public_origins,
    rule_errors,
    service_config,
)


def _provider_given(provider: Mapping[str, Any]) -> bool:
    return any(provider.get(key) for key in ("issuer", "client_id", "client_secret"))


def sso_errors(
    provider: Mapping[str, Any], specs: list[Mapping[str, Any]], lab: bool = False, secret_vaulted: bool = True
) -> list[str]:
    """Every problem of the provider's settings and the apps' access.oidc rules; [] when all is well.
    Nothing to check (and no error) when no provider is set and no app asks for one."""
    errors = rule_errors(specs, provider_configured=_provider_given(provider))
    if _provider_given(provider):
        try:
            parse_provider(dict(provider), lab=lab, secret_vaulted=secret_vaulted)
        except OIDCConfigError as exc:
            errors += exc.errors
    return errors


def sso_service_config(
    provider: Mapping[str, Any],
    specs: list[Mapping[str, Any]],
    server_name: str,
    port_suffix: str = "",
    lab: bool = False,
) -> dict[str, Any]:
    """The service's configuration file (no secret) for the edge's names and the apps' rules."""
    try:
        hosts = sorted({str(s["route_host"]) for s in specs if s.get("route_host")})
        return service_config(
            parse_provider(dict(provider), lab=lab),
            specs,
            public_origins(server_name, hosts, port_suffix),
            lab=lab,
        )
    except OIDCConfigError as exc:
        raise AnsibleFilterError("\n".join(exc.errors)) from None


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"sso_errors": sso_errors, "sso_service_config": sso_service_config}
