"""The app_spec filters: the model's errors and specs as Ansible sees them."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.secure_streamlit.hosting.plugins.filter.app_spec import (
    FilterModule,
    app_purge_errors,
    app_spec_errors,
    app_specs,
)


def test_every_filter_is_offered():
    assert set(FilterModule().filters()) == {
        "app_spec_errors",
        "app_specs",
        "app_purge_errors",
        "egress_host_local_errors",
    }


def test_an_egress_to_the_host_s_own_address_is_named_by_entry():
    specs = [
        {"index": 0, "name": "a", "egress": [{"allow_any": False, "cidr": "10.0.0.5/32", "port": 5432}]},
        {"index": 1, "name": "b", "egress": [{"allow_any": False, "cidr": "10.0.0.0/24", "port": 5432}]},
        {"index": 2, "name": "c", "egress": []},
    ]
    errors = FilterModule().filters()["egress_host_local_errors"](specs, ["10.0.0.5", "fe80::1"], label="apps_list")
    assert len(errors) == 1
    assert errors[0].startswith("apps_list[0] (name 'a'): egress[0].cidr '10.0.0.5/32' is this host itself")


def test_a_purge_of_a_deployed_app_is_an_error_and_names_that_are_not_text_are_ignored():
    assert app_purge_errors(["a", "gone"], ["a", 5]) == [
        "apps_purge_data[0] 'a' is still an app: its data is deleted only after its entry has left apps"
    ]
    assert app_purge_errors([], None) == []


def test_errors_use_the_label_and_the_defaults():
    errors = app_spec_errors(
        [{"name": "a", "repo": "acme/a", "resources": {"cpus": 3}}], {"max_cpus": 2}, label="tls_apps"
    )
    assert errors == ["tls_apps[0] (name 'a'): resources.cpus 3 is more than the host has (2): Docker would refuse it"]


def test_bad_defaults_are_errors_naming_the_variable():
    errors = app_spec_errors([], {"memory": "lots"}, defaults_from={"memory": "apps_default_memory"})
    assert errors == [
        "defaults: memory (apps_default_memory) 'lots' must be a size like 512m or 2g (a number and b, k, m or g), "
        "at least 64m"
    ]


def test_specs_are_dicts_without_passwords():
    apps = [
        {"name": "a", "upstream": "127.0.0.1:8501", "access": {"htpasswd_users": [{"name": "bob", "password": "pw"}]}}
    ]
    (spec,) = app_specs(apps, {"edge_host": "edge.example.org"})
    assert spec["access"] == {"htpasswd_users": ["bob"], "client_cert_cns": []}
    assert spec["managed"] is False


def test_specs_fail_with_every_error():
    with pytest.raises(AnsibleFilterError) as caught:
        app_specs([{"name": "a"}, {"name": "b", "repo": "acme/b", "branch": "a..b"}], None)
    assert "apps[0] (name 'a'): repo is missing" in str(caught.value)
    assert "apps[1] (name 'b'): branch 'a..b'" in str(caught.value)


def test_secrets_must_name_defined_variables():
    apps = [{"name": "a", "repo": "acme/a", "secrets": {"t": "vault_t"}}]
    assert app_spec_errors(apps, {}, defined_variables=["vault_t"]) == []
    assert app_spec_errors(apps, {}, defined_variables=[]) == [
        "apps[0] (name 'a'): secrets t: variable 'vault_t' is not defined (put it in a vault)"
    ]
