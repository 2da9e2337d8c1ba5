"""The failover benchmark forms its swarm with molecule/swarm/converge.yml's first play, not a variant."""

from __future__ import annotations

import yaml

from tests.helpers import REPO


def test_the_benchmark_play_runs_the_converge_plays_roles_in_its_order() -> None:
    bench = yaml.safe_load((REPO / "benchmarks/swarm_failover.yml").read_text())
    converge = yaml.safe_load((REPO / "molecule/swarm/converge.yml").read_text())
    assert len(bench) == 1
    assert bench[0]["become"] is True
    assert bench[0]["tasks"] == converge[0]["tasks"]
