"""Replicated apps: service placement constraints and the edge's list."""

from __future__ import annotations

from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.secure_streamlit.hosting.plugins.filter.swarm_apps import (
    swarm_edge_apps as edge_filter,
)
from ansible_collections.secure_streamlit.hosting.plugins.filter.swarm_apps import (
    swarm_placement as placement_filter,
)
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import Defaults, parse_apps
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._placement import Inventory
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_apps import (
    SwarmAppsError,
    swarm_edge_apps,
    swarm_placement,
)

GROUPS = {
    "all": ["m1", "w1", "w2", "outsider"],
    "ungrouped": ["outsider"],
    "swarm_managers": ["m1"],
    "swarm_workers": ["w1", "w2"],
    "clinic": ["w1", "w2"],
}
PLAY = ["m1", "w1", "w2", "outsider"]
INV = Inventory.from_ansible(GROUPS, PLAY)


def spec(**entry: Any) -> dict[str, Any]:
    raw = {"name": "triage", "repo": "acme/triage", **entry}
    return parse_apps([raw], Defaults())[0].to_dict()


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        (["swarm_managers", "swarm_workers"], []),
        (["m1", "w1", "w2"], []),
        (["w1"], ["node.hostname==w1"]),
        (["clinic"], ["node.hostname!=m1"]),
        (["m1", "w2"], ["node.hostname!=w1"]),
    ],
)
def test_placement_follows_hosts(hosts: list[str], expected: list[str]) -> None:
    assert swarm_placement(spec(replicas=3, hosts=hosts), INV) == expected


def test_no_hosts_means_every_member_of_the_swarm() -> None:
    members_only = Inventory.from_ansible(GROUPS, ["m1", "w1", "w2"])
    assert swarm_placement(spec(replicas=2), members_only) == []


@pytest.mark.parametrize(
    ("hosts", "groups", "message"),
    [
        (["m1", "outsider"], GROUPS, "outsider not in the swarm"),
        (["nope"], GROUPS, "'nope': not in the inventory"),
        (["m1"], {**GROUPS, "swarm_managers": []}, "swarm_managers group has no host"),
    ],
)
def test_placement_refusals_name_the_app(hosts: list[str], groups: dict[str, list[str]], message: str) -> None:
    with pytest.raises(SwarmAppsError, match=message) as caught:
        swarm_placement(spec(replicas=3, hosts=hosts), Inventory.from_ansible(groups, PLAY))
    assert "'triage'" in str(caught.value)


def test_placement_filter() -> None:
    assert placement_filter(spec(replicas=3, hosts=["w2"]), GROUPS, PLAY) == ["node.hostname==w2"]
    assert placement_filter(
        spec(replicas=3, hosts=["w2"]), {**GROUPS, "mgr": ["m1"]}, PLAY, ["mgr", "swarm_workers"]
    ) == ["node.hostname==w2"]
    with pytest.raises(AnsibleFilterError, match="not in the swarm"):
        placement_filter(spec(replicas=3, hosts=["outsider"]), GROUPS, PLAY)
    with pytest.raises(AnsibleFilterError, match="one app spec"):
        placement_filter([spec()], GROUPS, PLAY)
    with pytest.raises(AnsibleFilterError, match="swarm_groups"):
        placement_filter(spec(), GROUPS, PLAY, "swarm_managers")


def test_edge_apps_lists_replicated_apps_only() -> None:
    specs = [
        spec(name="single"),
        spec(name="triage", replicas=3),
        spec(name="intake", replicas=2, hosts=["clinic"]),
    ]
    expected = [
        {"name": "triage", "service": "app-triage", "port": 8501},
        {"name": "intake", "service": "app-intake", "port": 8501},
    ]
    assert swarm_edge_apps(specs) == expected
    assert edge_filter(specs) == expected
    assert edge_filter([]) == []
    with pytest.raises(AnsibleFilterError, match="app specs"):
        edge_filter("triage")
