"""Which manager forms the swarm (plugins/module_utils/_swarm_formation.py), from `docker info` answers as
community.docker.docker_host_info returns them. The real formation is molecule/swarm and
benchmarks/swarm_failover.py (which replaces the inventory's first manager)."""

from __future__ import annotations

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_formation import (
    Anchor,
    manages_a_swarm,
    swarm_anchor,
)

MANAGER = {"Swarm": {"LocalNodeState": "active", "ControlAvailable": True}}
WORKER = {"Swarm": {"LocalNodeState": "active", "ControlAvailable": False}}
FRESH = {"Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False}}
MANAGERS = ["m1", "m2", "m3"]


def test_a_fresh_inventory_is_initialised_on_its_first_manager() -> None:
    assert swarm_anchor(MANAGERS, MANAGERS, dict.fromkeys(MANAGERS, FRESH)) == Anchor("m1", False)


def test_a_running_swarm_is_formed_through_its_first_manager() -> None:
    assert swarm_anchor(MANAGERS, MANAGERS, dict.fromkeys(MANAGERS, MANAGER)) == Anchor("m1", True)


def test_a_fresh_host_in_the_first_managers_place_joins_the_running_swarm() -> None:
    infos = {"m1": FRESH, "m2": MANAGER, "m3": MANAGER}
    assert swarm_anchor(MANAGERS, MANAGERS, infos) == Anchor("m2", True)


def test_a_manager_outside_the_play_or_a_worker_is_no_anchor() -> None:
    infos = {"m1": FRESH, "m2": MANAGER, "m3": MANAGER}
    # m2 left out of the play (--limit, unreachable): m3 is asked; then no one, and m1 initialises.
    assert swarm_anchor(MANAGERS, ["m1", "m3"], infos) == Anchor("m3", True)
    assert swarm_anchor(MANAGERS, ["m1"], infos) == Anchor("m1", False)
    assert swarm_anchor(MANAGERS, MANAGERS, {"m1": WORKER, "m2": FRESH}) == Anchor("m1", False)


def test_a_play_of_workers_asks_the_first_manager_as_before() -> None:
    assert swarm_anchor(MANAGERS, ["w1"], {}) == Anchor("m1", False)
    assert swarm_anchor([], ["w1"], {}) == Anchor("", False)


def test_only_an_active_swarm_with_control_counts() -> None:
    assert manages_a_swarm(MANAGER)
    pending = {"Swarm": {"LocalNodeState": "pending", "ControlAvailable": True}}
    text = {"Swarm": {"LocalNodeState": "active", "ControlAvailable": "true"}}
    for info in (WORKER, FRESH, None, {}, {"Swarm": None}, pending, text):
        assert not manages_a_swarm(info), info
