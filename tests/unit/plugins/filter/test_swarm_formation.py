"""The swarm_anchor filter (plugins/filter/swarm_formation.py) over hostvars as Ansible hands them: the
registered docker_host_info results of the hosts that ran it."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.secure_streamlit.hosting.plugins.filter.swarm_formation import FilterModule

swarm_anchor = FilterModule().filters()["swarm_anchor"]
ACTIVE = {"host_info": {"Swarm": {"LocalNodeState": "active", "ControlAvailable": True}}}
FRESH = {"host_info": {"Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False}}}


def test_reads_the_registered_results_of_the_managers_in_the_play() -> None:
    hostvars = {"m1": {"_swarm_host": FRESH}, "m2": {"_swarm_host": ACTIVE}, "m3": {}, "w1": {"_swarm_host": ACTIVE}}
    assert swarm_anchor(["m1", "m2", "m3"], hostvars, ["m1", "m2", "m3", "w1"]) == {"host": "m2", "in_swarm": True}
    # A skipped registration (no host_info) and a host missing from hostvars count as not in a swarm.
    hostvars = {"m1": {"_swarm_host": {"skipped": True}}}
    assert swarm_anchor(["m1", "m2"], hostvars, ["m1", "m2"]) == {"host": "m1", "in_swarm": False}


def test_another_register_name() -> None:
    hostvars = {"m1": {"info": ACTIVE}}
    assert swarm_anchor(["m1"], hostvars, ["m1"], register="info") == {"host": "m1", "in_swarm": True}


@pytest.mark.parametrize(
    ("managers", "hostvars", "play_hosts"),
    [("m1", {}, ["m1"]), (["m1"], {}, "m1"), ([1], {}, ["m1"]), (["m1"], [], ["m1"])],
)
def test_wrong_arguments_are_refused(managers: object, hostvars: object, play_hosts: object) -> None:
    with pytest.raises(AnsibleFilterError, match="swarm_anchor"):
        swarm_anchor(managers, hostvars, play_hosts)
