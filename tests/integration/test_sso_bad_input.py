"""Bad single sign-on settings stop site.yml in its up-front checks, before any task changes the host
(run over a local connection in --check mode, as tests/integration/test_bad_input.py)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_playbook_json

SSO_RULE = "Fail on a bad provider, a secret outside the vault or an app rule without a provider"
OIDC_APP = {"name": "triage", "repo": "acme/triage", "access": {"oidc": {"groups": ["nurses"]}}}
PROVIDER = {"sso_issuer": "https://login.clinic.example/realms/staff", "sso_client_id": "edge"}


@pytest.mark.parametrize(
    ("extra_vars", "message_parts"),
    [
        ({"apps": [OIDC_APP]}, ["apps[0] (name 'triage'): access.oidc needs a provider"]),
        (
            {"apps": [OIDC_APP], **PROVIDER, "sso_client_secret": "TopS3cretValue"},
            ["sso_client_secret must come from an Ansible vault"],
        ),
        (
            {
                "apps": [OIDC_APP],
                **PROVIDER,
                "sso_issuer": "http://login.clinic.example",
                "sso_client_secret": "TopS3cretValue",
            },
            ["sso_issuer 'http://login.clinic.example' must use https://", "sso_client_secret must come from"],
        ),
        (
            {"apps": [{**OIDC_APP, "access": {"oidc": {"groups": ["nurses"], "roles": ["x"]}}}], **PROVIDER},
            ["apps[0] (name 'triage'): access.oidc: unknown key 'roles'"],
        ),
    ],
    ids=["rule-without-provider", "secret-outside-vault", "http-issuer", "unknown-key"],
)
def test_bad_sso_setting_stops_before_any_change(inventory, extra_vars, message_parts) -> None:
    rc, report = run_playbook_json("site.yml", "-i", str(inventory), "--check", "-e", json.dumps(extra_vars))
    assert rc != 0
    tasks = report["plays"][0]["tasks"]
    ran = [t for t in tasks if "validation-probe" in t["hosts"] and not t["hosts"]["validation-probe"].get("skipped")]
    failed = [t for t in ran if t["hosts"]["validation-probe"].get("failed")]
    assert len(failed) == 1
    result = failed[0]["hosts"]["validation-probe"]
    message = " ".join(
        [result.get("msg", "")] + [r.get("msg", "") for r in result.get("results", []) if r.get("failed")]
    )
    for part in message_parts:
        assert part in message, message
    assert report["stats"]["validation-probe"]["changed"] == 0
    assert "TopS3cretValue" not in json.dumps(report)


def test_a_lab_provider_and_an_app_rule_pass_the_checks(inventory) -> None:
    extra = {"apps": [OIDC_APP], "sso_issuer": "http://127.0.0.1:9", "sso_client_id": "edge"}
    extra |= {"sso_client_secret": "TopS3cretValue", "sso_lab": True}
    rc, report = run_playbook_json(
        "site.yml", "-i", str(inventory), "--check", "--tags", "always", "-e", json.dumps(extra)
    )
    assert rc == 0, json.dumps(report["stats"])
    names = [t["task"]["name"].split(" : ")[-1] for t in report["plays"][0]["tasks"]]
    assert SSO_RULE in names
    assert "TopS3cretValue" not in json.dumps(report)
