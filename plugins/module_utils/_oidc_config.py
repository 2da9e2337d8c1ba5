"""Single sign-on at the edge: the provider's settings, checked once per host, and the relying-party
service's configuration file made from them and the apps' `access.oidc` rules.

Pure Python (no Authlib): the controller checks everything here before any change; the service on the
host (roles/sso/files/streamlit_sso.py, _oidc_rp.py) reads the file this module writes, with this
module beside it for the Provider type (standard library only). The client secret is never part of
that file: it reaches the service as a systemd credential.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

CLAIM_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]{0,99}")
SCOPE_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,100}")  # RFC 6749 scope-token
CLIENT_ID_RE = re.compile(r"[\x21-\x7e]{1,255}")
HOST_RE = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
# Automatic logoff (45 CFR 164.312(a)(2)(iii)): 15 minutes idle by default, at most 12 hours in all.
MAX_IDLE_TIMEOUT = 3600
MAX_ABSOLUTE_LIFETIME = 86400


@dataclass(frozen=True)
class Provider:
    """The OpenID provider's settings: checked here on the controller (parse_provider), and read back
    from the service's configuration file on the host (_oidc_rp.RPConfig, which holds one)."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...]
    groups_claim: str
    username_claim: str
    idle_timeout: int
    absolute_lifetime: int

    @classmethod
    def public_keys(cls) -> tuple[str, ...]:
        """The settings the configuration file carries: all but the secret (a systemd credential)."""
        return tuple(f.name for f in fields(cls) if f.name != "client_secret")

    def public(self) -> dict[str, Any]:
        """The settings the configuration file carries, JSON-able."""
        settings = {key: getattr(self, key) for key in self.public_keys()}
        return {key: list(value) if isinstance(value, tuple) else value for key, value in settings.items()}


# Settings a role variable maps to (sso_<key>); unknown keys are refused.
PROVIDER_KEYS = tuple(f.name for f in fields(Provider))


class OIDCConfigError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def issuer_problem(issuer: object, *, lab: bool) -> str | None:
    """Why `issuer` cannot be an OpenID issuer here; None when it can."""
    if not isinstance(issuer, str) or not issuer:
        return "must be the provider's issuer URL (text)"
    if any(c.isspace() or ord(c) < 0x21 for c in issuer) or len(issuer) > 500:
        return "must be one URL without spaces or control characters (at most 500 characters)"
    parts = urlsplit(issuer)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an absolute https:// URL"
    if parts.query or parts.fragment or parts.username or parts.password:
        return "must not carry a query, a fragment or credentials (OpenID Connect Discovery 1.0, section 2)"
    if parts.scheme == "http" and not lab:
        # Tokens and the client secret would cross the network in the clear.
        return "must use https:// (plain http:// only in a lab: sso_lab: true)"
    return None


def parse_provider(raw: object, *, lab: bool = False, secret_vaulted: bool = True) -> Provider:
    """The provider's settings, or OIDCConfigError naming every problem (as the role variables)."""
    if not isinstance(raw, Mapping):
        raise OIDCConfigError([f"the provider settings must be a mapping, not {type(raw).__name__}"])
    errors = [
        f"sso: unknown setting {key!r}; known: {', '.join(PROVIDER_KEYS)}" for key in raw if key not in PROVIDER_KEYS
    ]
    problem = issuer_problem(raw.get("issuer"), lab=lab)
    if problem:
        errors.append(f"sso_issuer {str(raw.get('issuer'))[:200]!r} {problem}")
    client_id = raw.get("client_id")
    if not isinstance(client_id, str) or not CLIENT_ID_RE.fullmatch(client_id):
        errors.append("sso_client_id must be the client id the provider issued (printable text, no spaces)")
    secret = raw.get("client_secret")
    # The secret itself is never shown.
    if not isinstance(secret, str) or not secret or len(secret) > 4096 or any(ord(c) < 0x20 for c in secret):
        errors.append("sso_client_secret must be the client secret (one line of text, from a vault)")
    elif not secret_vaulted and not lab:
        errors.append("sso_client_secret must come from an Ansible vault (it is plain text in the inventory)")
    scopes = raw.get("scopes", ["openid", "email", "profile"])
    if not isinstance(scopes, list | tuple) or not all(isinstance(s, str) and SCOPE_RE.fullmatch(s) for s in scopes):
        errors.append("sso_scopes must be a list of scope names")
        scopes = []
    elif "openid" not in scopes:
        errors.append("sso_scopes must include openid")
    for key, default in (("groups_claim", "groups"), ("username_claim", "email")):
        value = raw.get(key, default)
        if not isinstance(value, str) or not CLAIM_RE.fullmatch(value):
            errors.append(f"sso_{key} {str(value)[:100]!r} must match {CLAIM_RE.pattern}")
    idle, absolute = raw.get("idle_timeout", 900), raw.get("absolute_lifetime", 28800)
    if not _is_int(idle) or not 60 <= idle <= MAX_IDLE_TIMEOUT:
        errors.append(f"sso_idle_timeout must be whole seconds within 60..{MAX_IDLE_TIMEOUT}, not {idle!r}")
    if not _is_int(absolute) or not 60 <= absolute <= MAX_ABSOLUTE_LIFETIME:
        errors.append(
            f"sso_absolute_lifetime must be whole seconds within 60..{MAX_ABSOLUTE_LIFETIME}, not {absolute!r}"
        )
    elif _is_int(idle) and absolute < idle:
        errors.append("sso_absolute_lifetime must not be shorter than sso_idle_timeout")
    if errors:
        raise OIDCConfigError(errors)
    return Provider(
        issuer=str(raw["issuer"]),
        client_id=str(client_id),
        client_secret=str(secret),
        scopes=tuple(str(s) for s in scopes),
        groups_claim=str(raw.get("groups_claim", "groups")),
        username_claim=str(raw.get("username_claim", "email")),
        idle_timeout=int(idle),
        absolute_lifetime=int(absolute),
    )


def app_rules(specs: Collection[Mapping[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """{app name: {groups, users}} for the apps (AppSpec.to_dict) that ask for single sign-on."""
    rules: dict[str, dict[str, list[str]]] = {}
    for spec in specs:
        oidc = spec.get("access", {}).get("oidc")
        if oidc:
            rules[str(spec["name"])] = {"groups": list(oidc["groups"]), "users": list(oidc["users"])}
    return rules


def rule_errors(specs: Collection[Mapping[str, Any]], *, provider_configured: bool) -> list[str]:
    """An app's access.oidc without a provider on the host, named as the operator wrote it."""
    if provider_configured:
        return []
    return [
        f"apps[{spec.get('index', '?')}] (name {spec['name']!r}): access.oidc needs a provider: set sso_issuer, "
        "sso_client_id and sso_client_secret (roles/sso)"
        for spec in specs
        if spec.get("access", {}).get("oidc")
    ]


def public_origins(server_name: str, app_hosts: Collection[str], port_suffix: str = "") -> dict[str, str]:
    """{Host header: https origin} the service may send a browser back to; any other Host is refused."""
    origins: dict[str, str] = {}
    for host in [server_name, *app_hosts]:
        if not isinstance(host, str) or not HOST_RE.fullmatch(host):
            raise OIDCConfigError([f"edge host name {str(host)[:100]!r} must be a DNS name"])
        if port_suffix and not re.fullmatch(r":[0-9]{1,5}", port_suffix):
            raise OIDCConfigError([f"edge port suffix {port_suffix!r} must be :<port>"])
        origins[host.lower()] = f"https://{host.lower()}{port_suffix}"
    return origins


def service_config(
    provider: Provider,
    specs: Collection[Mapping[str, Any]],
    origins: Mapping[str, str],
    *,
    lab: bool = False,
) -> dict[str, Any]:
    """The relying-party service's configuration (JSON-able, no secret)."""
    return {
        **provider.public(),
        "origins": dict(origins),
        "apps": app_rules(specs),
        "lab": bool(lab),
    }
