"""What both test files of the swarm scenario need: the instances as testinfra hosts, and the manager."""

from __future__ import annotations

import json
import os

import pytest
import testinfra

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
REGISTRY_PORT = 5000


def host_of(name: str):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=INVENTORY)


@pytest.fixture(scope="module")
def manager():
    return host_of("manager-swarm")


@pytest.fixture(scope="module")
def manager_addr(manager) -> str:
    info = json.loads(manager.check_output("docker info --format '{{json .Swarm}}'"))
    return info["NodeAddr"]


@pytest.fixture(scope="module")
def registry(manager_addr) -> str:
    return f"{manager_addr}:{REGISTRY_PORT}"
