"""The provider's settings and the apps' access.oidc rules: refused before any change, named as written."""

from __future__ import annotations

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import Defaults, app_errors, parse_apps
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._oidc_config import (
    OIDCConfigError,
    parse_provider,
    public_origins,
    rule_errors,
    service_config,
)
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._oidc_rp import RPConfig

GOOD = {"issuer": "https://login.clinic.example/realms/staff", "client_id": "edge", "client_secret": "s3cret"}


def errors(raw: dict, **kwargs) -> list[str]:
    with pytest.raises(OIDCConfigError) as info:
        parse_provider(raw, **kwargs)
    return info.value.errors


def test_defaults_are_fifteen_minutes_idle_and_eight_hours() -> None:
    provider = parse_provider(GOOD)
    assert (provider.idle_timeout, provider.absolute_lifetime) == (900, 28800)
    assert provider.scopes == ("openid", "email", "profile")
    assert "s3cret" not in repr(provider)


def test_a_plain_http_issuer_only_in_the_lab() -> None:
    raw = {**GOOD, "issuer": "http://login.clinic.example"}
    assert any("must use https://" in e for e in errors(raw))
    assert parse_provider(raw, lab=True).issuer == "http://login.clinic.example"


@pytest.mark.parametrize(
    "issuer", ["", "login.clinic.example", "https://x.example/?a=1", "https://u:p@x.example", "https://x.example/\n"]
)
def test_bad_issuers(issuer: str) -> None:
    assert any(e.startswith("sso_issuer") for e in errors({**GOOD, "issuer": issuer}))


def test_a_secret_outside_the_vault_is_refused_and_never_shown() -> None:
    found = errors({**GOOD, "client_secret": "plain-text-secret"}, secret_vaulted=False)
    assert found == ["sso_client_secret must come from an Ansible vault (it is plain text in the inventory)"]
    assert "plain-text-secret" not in "".join(errors({**GOOD, "client_secret": "x\n"}))


def test_unknown_settings_and_bad_timeouts() -> None:
    found = errors({**GOOD, "scope": ["openid"], "idle_timeout": 5, "scopes": ["email"]})
    assert any("unknown setting 'scope'" in e for e in found)
    assert any("sso_idle_timeout" in e for e in found)
    assert any("must include openid" in e for e in found)
    assert any("shorter" in e for e in errors({**GOOD, "idle_timeout": 1800, "absolute_lifetime": 900}))


def specs(apps: list) -> list[dict]:
    return [s.to_dict() for s in parse_apps(apps, Defaults())]


APP = {"name": "triage", "repo": "clinic/triage", "access": {"oidc": {"groups": ["nurses"], "users": ["dr.bob"]}}}


def test_an_app_rule_round_trips_and_reaches_the_service() -> None:
    [spec] = specs([APP])
    assert spec["access"]["oidc"] == {"groups": ["nurses"], "users": ["dr.bob"]}
    config = service_config(parse_provider(GOOD), [spec], public_origins("edge.clinic.example", []))
    assert config["apps"] == {"triage": {"groups": ["nurses"], "users": ["dr.bob"]}}
    assert "s3cret" not in str(config)
    assert config["origins"] == {"edge.clinic.example": "https://edge.clinic.example"}


def test_the_service_reads_back_the_provider_the_controller_checked() -> None:
    """One Provider on both sides: the file carries every setting but the secret, which comes apart."""
    provider = parse_provider({**GOOD, "scopes": ["openid", "email"], "idle_timeout": 600})
    config = service_config(provider, specs([APP]), public_origins("edge.clinic.example", []), lab=True)
    assert "client_secret" not in config
    assert "s3cret" not in str(config)
    read = RPConfig.from_mapping(config, "s3cret")
    assert read.provider == provider
    assert read.lab is True
    assert set(read.apps) == {"triage"}


def test_a_group_rule_without_a_provider_names_the_app() -> None:
    assert rule_errors(specs([{"name": "plain", "repo": "c/p"}, APP]), provider_configured=False) == [
        "apps[1] (name 'triage'): access.oidc needs a provider: set sso_issuer, sso_client_id and "
        "sso_client_secret (roles/sso)"
    ]
    assert rule_errors(specs([APP]), provider_configured=True) == []


@pytest.mark.parametrize(
    ("oidc", "message"),
    [
        ({"groups": ["nurses"], "roles": ["x"]}, "apps[0] (name 'triage'): access.oidc: unknown key 'roles'"),
        ({}, "access.oidc needs at least one of groups, users"),
        ({"groups": "nurses"}, "access.oidc.groups must be a list of names, not text"),
        ({"users": ["bob smith"]}, "access.oidc.users[0] 'bob smith' must match"),
        ({"groups": ["a", "a"]}, "access.oidc.groups[1] 'a' appears twice"),
        (["nurses"], "access.oidc must be a mapping {groups, users}, not a list"),
    ],
)
def test_bad_app_rules(oidc: object, message: str) -> None:
    found = app_errors([{**APP, "access": {"oidc": oidc}}], Defaults())
    assert any(message in e for e in found), found
