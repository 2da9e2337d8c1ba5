"""Placement of apps on the inventory's hosts: selection per host and the refusals."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.filter.placement import (
    app_placement_errors,
    apps_on_host_filter,
)
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import Defaults, parse_apps
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._placement import (
    Inventory,
    apps_on_host,
    placement_errors,
    resolve,
)

# As Ansible's `groups` magic variable shows this inventory.
GROUPS = {
    "all": ["web1", "web2", "web3", "db1"],
    "ungrouped": [],
    "streamlit_hosts": ["web1", "web2", "web3"],
    "clinic_a": ["web2", "web3"],
    "empty_group": [],
}
PLAY = ["web1", "web2", "web3"]
INV = Inventory.from_ansible(GROUPS, PLAY)


def specs(*entries: dict[str, Any]) -> list[dict[str, Any]]:
    raw = [{"repo": f"acme/{e['name']}", **e} for e in entries]
    return [spec.to_dict() for spec in parse_apps(raw, Defaults())]


def placed(host: str, *entries: dict[str, Any]) -> list[str]:
    return [spec["name"] for spec in apps_on_host(specs(*entries), host, INV)]


def test_an_app_without_hosts_runs_on_every_host_of_the_play():
    assert resolve([], INV) == (["web1", "web2", "web3"], [])
    for host in PLAY:
        assert placed(host, {"name": "a"}) == ["a"]
    # The asking host is in the play by definition, also where a play renames it (the edge's render test
    # sets inventory_hostname to the edge's name): an app without hosts is placed on it.
    assert placed("edge.local.test", {"name": "a"}) == ["a"]
    assert placed("db1", {"name": "a", "hosts": ["web1"]}) == []


def test_each_host_gets_only_the_apps_placed_on_it_by_host_or_group():
    entries = (
        {"name": "a", "hosts": ["web1"]},
        {"name": "b", "hosts": ["clinic_a"]},
        {"name": "c", "hosts": ["web1", "clinic_a"]},
        {"name": "d"},
    )
    assert placed("web1", *entries) == ["a", "c", "d"]
    assert placed("web2", *entries) == ["b", "c", "d"]
    assert placed("web3", *entries) == ["b", "c", "d"]
    # A host named outside the play still gets its apps when a play runs on it.
    assert placed("db1", {"name": "x", "hosts": ["db1"]}) == ["x"]


def test_the_model_keeps_hosts_and_the_label_of_the_entry_as_written():
    out = specs({"name": "a"}, {"name": "b", "hosts": ["clinic_a"]})
    assert out[0]["hosts"] == []
    assert out[0]["per_host_state"] is False
    assert out[1]["hosts"] == ["clinic_a"]
    assert apps_on_host(out, "web1", INV) == [out[0]]
    # The selection keeps each spec's index: messages after it still name apps[1].
    assert apps_on_host(out, "web2", INV)[1]["index"] == 1


def test_unknown_host_or_group_is_refused_naming_the_entry():
    errors = placement_errors(specs({"name": "ok"}, {"name": "x", "hosts": ["web1", "web9", "clinic_b"]}), INV)
    assert errors == [
        "apps[1] (name 'x'): hosts 'web9', 'clinic_b': neither a host nor a group of the inventory",
    ]


def test_a_group_without_hosts_is_refused():
    errors = placement_errors(specs({"name": "x", "hosts": ["empty_group"]}), INV)
    assert errors == ["apps[0] (name 'x'): hosts 'empty_group' name only empty groups: no host runs it"]


@pytest.mark.parametrize(
    ("entry", "state"),
    [
        ({"name": "d", "data": True, "hosts": ["clinic_a"]}, "data on 2 hosts (hosts 'clinic_a': web2, web3)"),
        ({"name": "d", "database": "postgresql", "hosts": ["web1", "web2"]}, "database on 2 hosts"),
        ({"name": "d", "data": True, "database": "postgresql"}, "data and database on 3 hosts (every host of the play"),
    ],
)
def test_state_on_several_hosts_is_refused_unless_the_operator_accepts_separate_copies(entry, state):
    errors = placement_errors(specs(entry), INV, label="apps_list")
    assert len(errors) == 1
    assert errors[0].startswith("apps_list[0] (name 'd'): " + state), errors
    assert "per_host_state: true" in errors[0]
    assert placement_errors(specs({**entry, "per_host_state": True}), INV) == []


def test_state_on_one_host_is_accepted_however_it_is_named():
    inv = Inventory.from_ansible({"all": ["web1", "web2"], "solo": ["web2"]}, ["web1"])
    ok = specs(
        {"name": "a", "data": True, "hosts": ["solo"]},
        {"name": "b", "database": "postgresql", "hosts": ["web1"]},
        {"name": "c", "data": True},  # one host in the play
        {"name": "e", "hosts": ["web1", "web2"]},  # no state: replicas of a stateless app are fine
    )
    assert placement_errors(ok, inv) == []


def test_a_name_that_is_both_a_host_and_a_group_means_both():
    inv = Inventory.from_ansible({"all": ["web1", "web2"], "web1": ["web2"]}, ["web1", "web2"])
    assert resolve(["web1"], inv) == (["web1", "web2"], [])


def test_the_filters_refuse_what_is_not_specs_or_an_inventory():
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError):
        app_placement_errors([{"name": "a"}], "groups", PLAY)
    with pytest.raises(AnsibleFilterError):
        apps_on_host_filter("a", "web1", GROUPS, PLAY)
    with pytest.raises(AnsibleFilterError):
        apps_on_host_filter(specs({"name": "a"}), "web1", GROUPS, "web1")
    assert [s["name"] for s in apps_on_host_filter(specs({"name": "a"}), "web1", GROUPS, PLAY)] == ["a"]


SWARM = {
    **GROUPS,
    "all": [*GROUPS["all"], "m1", "w1", "w2"],
    "swarm_managers": ["m1"],
    "swarm_workers": ["w1", "w2"],
    "swarm": ["m1", "w1", "w2"],
}
SWARM_INV = Inventory.from_ansible(SWARM, ["web1", "m1", "w1", "w2"])


def test_replicas_need_a_swarm_and_the_apps_hosts_inside_it():
    entry = {"name": "a", "replicas": 3}
    # No swarm in the inventory: refused, naming the entry and the group.
    assert placement_errors(specs(entry), INV) == [
        "apps[0] (name 'a'): replicas 3 needs a swarm, and the inventory's swarm_managers group has no host "
        "(docs/multi-host.md); use replicas: 1 or add the swarm's managers"
    ]
    # The app's hosts are the swarm (by its groups, or a group naming the same hosts): accepted.
    assert placement_errors(specs({**entry, "hosts": ["swarm_managers", "swarm_workers"]}), SWARM_INV) == []
    assert placement_errors(specs({**entry, "hosts": ["swarm"]}), SWARM_INV) == []
    # A host outside the swarm (also through "every host of the play"): refused.
    errors = placement_errors(specs({**entry, "hosts": ["swarm", "web1"]}), SWARM_INV)
    assert errors == [
        "apps[0] (name 'a'): replicas 3 runs as a swarm service, but web1 is not in the swarm (swarm_managers or "
        "swarm_workers); place the app on the swarm's hosts (e.g. hosts: [swarm_managers, swarm_workers])"
    ]
    assert "web1 is not in the swarm" in placement_errors(specs(entry), SWARM_INV)[0]
    # One replica is the single-container app: no swarm needed.
    assert placement_errors(specs({"name": "a", "replicas": 1}), INV) == []


def test_replicas_follow_the_swarm_groups_the_operator_named():
    groups = {**SWARM, "mgr": SWARM["swarm_managers"], "wrk": SWARM["swarm_workers"], "swarm_managers": []}
    entry = {"name": "a", "replicas": 2, "hosts": ["mgr", "wrk"]}
    assert "needs a swarm" in app_placement_errors(specs(entry), groups, ["m1"])[0]
    assert app_placement_errors(specs(entry), groups, ["m1"], swarm_groups=["mgr", "wrk"]) == []
    from ansible.errors import AnsibleFilterError  # as the filter tests above

    with pytest.raises(AnsibleFilterError, match="swarm_groups"):
        app_placement_errors(specs(entry), groups, ["m1"], swarm_groups="mgr")


def test_a_service_with_egress_is_refused_naming_the_entry():
    entry = {"name": "a", "replicas": 3, "hosts": ["swarm"], "egress": [{"host": "api.example.org", "port": 443}]}
    assert placement_errors(specs(entry), SWARM_INV) == [
        "apps[0] (name 'a'): egress with replicas 3: per-app egress is a host's firewall table and the app's own "
        "bridge, which a swarm service's tasks on other nodes do not have; use replicas: 1 or leave egress out"
    ]
    assert placement_errors(specs({**entry, "replicas": 1}), SWARM_INV) == []


def test_a_service_is_placed_on_the_swarms_first_manager_only():
    entries = ({"name": "svc", "replicas": 3, "hosts": ["swarm"]}, {"name": "one", "hosts": ["swarm"]})
    on = {host: [s["name"] for s in apps_on_host(specs(*entries), host, SWARM_INV)] for host in ("m1", "w1", "w2")}
    assert on == {"m1": ["svc", "one"], "w1": ["one"], "w2": ["one"]}
    # The first manager as the inventory lists it, through the filter and the operator's group names.
    groups = {**SWARM, "mgr": ["m2", "m1"], "wrk": SWARM["swarm_workers"], "all": [*SWARM["all"], "m2"]}
    for host, expected in (("m2", ["svc"]), ("m1", [])):
        found = apps_on_host_filter(specs(entries[0]), host, groups, ["m1"], swarm_groups=["mgr", "wrk"])
        assert [s["name"] for s in found] == expected
    # Without a swarm nobody deploys it (the preflight has refused it already).
    assert apps_on_host(specs(entries[0]), "web1", INV) == []
