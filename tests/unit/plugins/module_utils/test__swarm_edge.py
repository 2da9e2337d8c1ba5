"""The swarm edge's library (plugins/module_utils/_swarm_edge.py): rendering, the engine's task JSON, the
configuration, and the watcher with a fake swarm client and clock (the real engine's events need a swarm:
molecule/swarm; the real nginx in front of real Streamlit processes is tests/integration/test_swarm_edge.py).
The edge switch is the real `_nginx_upstream.Edge` on real files, with nginx's answers scripted."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._nginx_upstream import Edge
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_edge import (
    COOKIE,
    AppTarget,
    Endpoint,
    SwarmEdgeError,
    WatchConfig,
    Watcher,
    endpoints_from_tasks,
    http_conf,
    load_config,
    location_conf,
    parse_config,
    render_upstream,
)


def test_render_is_sorted_deduplicated_and_sticky() -> None:
    a = render_upstream("triage", [("10.0.1.10", 8501), ("10.0.1.9", 8501), ("10.0.1.10", 8501), ("::1", 80)])
    b = render_upstream("triage", [Endpoint("::1", 80), ("10.0.1.9", 8501), ("10.0.1.10", 8501)])
    assert a == b  # same set, same bytes: the switch sees no change and does not reload
    body = a.split("upstream streamlit_app_triage {\n", 1)[1]
    assert body == (
        "    hash $streamlit_edge_replica_key;\n"
        "    server 10.0.1.9:8501;\n"
        "    server 10.0.1.10:8501;\n"
        "    server [::1]:80;\n"
        "}\n"
    )
    assert "consistent" not in a


@pytest.mark.parametrize(
    ("address", "port"),
    [
        ("10.0.1.9 ", 8501),
        ("10.0.1.9\n", 8501),
        ("10.0.1.9;server evil", 8501),
        ("010.0.1.9", 8501),
        ("10.0.1", 8501),
        ("web1", 8501),
        ("fe80::1%eth0", 8501),
        ("::FFFF:1", 8501),
        ("10.0.1.9", 0),
        ("10.0.1.9", 65536),
        ("10.0.1.9", "8501"),
        ("10.0.1.9", True),
        (None, 8501),
    ],
)
def test_bad_endpoints_are_refused(address, port) -> None:
    with pytest.raises(SwarmEdgeError):
        render_upstream("triage", [("10.0.1.1", 8501), (address, port)])


@pytest.mark.parametrize("app", ["Triage", "triage\n", "tri age", "", "a" * 50])
def test_bad_app_names_and_empty_sets_are_refused(app) -> None:
    with pytest.raises(SwarmEdgeError):
        render_upstream(app, [("10.0.1.1", 8501)])
    with pytest.raises(SwarmEdgeError, match="no task"):
        render_upstream("triage", [])


def test_the_cookie_is_the_edges_and_the_first_request_hashes_what_it_sets() -> None:
    http = http_conf()
    # A valid cookie is the key; otherwise $request_id is both the key and the value set.
    assert f'"~^[0-9a-f]{{32}}$" $cookie_{COOKIE};\n    default $request_id;' in http
    assert f'default "{COOKIE}=$request_id; Path=/; Secure; HttpOnly; SameSite=Lax";' in http
    assert location_conf().endswith("add_header Set-Cookie $streamlit_edge_replica_set_cookie always;\n")


TARGET = AppTarget("triage", "triage", 8501, "apps")


def task(state: str = "running", desired: str = "running", **extra) -> dict:
    return {"DesiredState": desired, "Status": {"State": state, **extra.pop("status", {})}, **extra}


def overlay_task(address: str, **kwargs) -> dict:
    return task(
        NetworksAttachments=[
            {"Network": {"Spec": {"Name": "ingress"}}, "Addresses": ["10.255.0.5/16"]},
            {"Network": {"Spec": {"Name": "apps"}}, "Addresses": [f"{address}/24"]},
        ],
        **kwargs,
    )


def test_overlay_tasks_give_their_address_on_the_named_network_only() -> None:
    tasks = [
        overlay_task("10.0.1.7"),
        overlay_task("10.0.1.5"),
        overlay_task("10.0.1.6", state="starting"),
        overlay_task("10.0.1.8", desired="shutdown"),
    ]
    assert endpoints_from_tasks(TARGET, tasks, []) == [Endpoint("10.0.1.5", 8501), Endpoint("10.0.1.7", 8501)]


def test_host_mode_tasks_give_their_nodes_address_and_published_port() -> None:
    target = AppTarget("triage", "triage", 8501)
    nodes = [{"ID": "n1", "Status": {"Addr": "172.20.0.2"}}, {"ID": "n2", "Status": {"Addr": "172.20.0.3"}}]
    ports = {"Ports": [{"PublishMode": "host", "TargetPort": 8501, "PublishedPort": 30001}]}
    tasks = [
        task(NodeID="n2", status={"PortStatus": ports}),
        task(NodeID="n1", status={"PortStatus": {"Ports": [{"PublishMode": "host", "TargetPort": 9000}]}}),
        task(NodeID="gone", status={"PortStatus": ports}),
        task(NodeID="n1", status={"PortStatus": ports}),
    ]
    assert endpoints_from_tasks(target, tasks, nodes) == [Endpoint("172.20.0.2", 30001), Endpoint("172.20.0.3", 30001)]


def test_a_malformed_address_from_the_engine_is_refused() -> None:
    with pytest.raises(SwarmEdgeError):
        endpoints_from_tasks(TARGET, [overlay_task("10.0.1.5;evil")], [])


def test_configuration_is_checked_whole() -> None:
    config = load_config(
        '{"apps": [{"name": "triage", "service": "triage", "port": 8501, "network": "apps"}], "resync_seconds": 10}'
    )
    assert config == WatchConfig((TARGET,), 10.0)
    for bad, message in [
        ({"apps": [], "extra": 1}, "unknown keys: extra"),
        ({"apps": [{"name": "x", "service": "x", "port": 1, "color": "red"}]}, r"apps\[0\] \(name 'x'\): unknown"),
        ({"apps": [{"name": "X", "service": "x", "port": 1}]}, r"apps\[0\] \(name 'X'\): name"),
        ({"apps": [{"name": "x", "service": "x y", "port": 1}]}, "service"),
        ({"apps": [{"name": "x", "service": "x", "port": 0}]}, "port"),
        ({"apps": [{"name": "x", "service": "x", "port": 1, "network": "a\n"}]}, "network"),
        ({"apps": [{"name": "x", "service": "x", "port": 1}] * 2}, r"apps\[1\].*listed twice"),
        ({"apps": [], "resync_seconds": 0.1}, "resync_seconds"),
        ({"apps": [], "upstream_dir": "relative"}, "upstream_dir"),
    ]:
        with pytest.raises(SwarmEdgeError, match=message):
            parse_config(bad)
    with pytest.raises(SwarmEdgeError, match="not JSON"):
        load_config("{")


class FakeSwarm:
    """Stands in for a manager's engine (no swarm in a unit test): tasks per service, scripted failures."""

    def __init__(self) -> None:
        self.tasks_of: dict[str, list[dict]] = {}
        self.failures = 0
        self.waits: list[float] = []

    def tasks(self, service: str) -> list[dict]:
        return self.tasks_of.get(service, [])

    def nodes(self) -> list[dict]:
        if self.failures:
            self.failures -= 1
            raise OSError("Cannot connect to the Docker daemon")
        return []

    def wait_for_change(self, timeout: float) -> None:
        self.waits.append(timeout)


class FakeClock:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture
def watcher(tmp_path: Path):
    calls: list = []

    def run(argv):
        calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, "", "")

    edge = Edge(upstream_dir=tmp_path, check_candidate=None, run=run, pid_file=None)
    swarm, clock, log = FakeSwarm(), FakeClock(), []
    config = WatchConfig((TARGET,), resync_seconds=15)
    return Watcher(config, swarm, edge, clock, log.append), swarm, clock, log, calls, tmp_path


def test_the_watcher_reloads_only_when_the_task_set_changes(watcher) -> None:
    w, swarm, _, log, calls, tmp = watcher
    swarm.tasks_of["triage"] = [overlay_task("10.0.1.6"), overlay_task("10.0.1.5")]
    assert w.sync() == ["triage"]
    first = (tmp / "triage.conf").read_text()
    assert "server 10.0.1.5:8501;\n    server 10.0.1.6:8501;" in first
    reloads = sum("reload" in c for c in calls)
    assert reloads == 1
    # The same set in another order (the engine's answer is unordered): same bytes, no reload.
    swarm.tasks_of["triage"].reverse()
    assert w.sync() == []
    assert sum("reload" in c for c in calls) == 1
    # A task moves: one reload, the new address in.
    swarm.tasks_of["triage"][0] = overlay_task("10.0.1.9")
    assert w.sync() == ["triage"]
    assert "10.0.1.9:8501" in (tmp / "triage.conf").read_text()
    assert sum("reload" in c for c in calls) == 2
    assert [e["event"] for e in log] == ["swarm_edge_switched", "swarm_edge_switched"]


def test_no_running_task_keeps_the_last_upstream(watcher) -> None:
    w, swarm, _, log, _, tmp = watcher
    swarm.tasks_of["triage"] = [overlay_task("10.0.1.5")]
    w.sync()
    before = (tmp / "triage.conf").read_text()
    swarm.tasks_of["triage"] = [overlay_task("10.0.1.5", state="shutdown")]
    assert w.sync() == []
    assert (tmp / "triage.conf").read_text() == before
    assert log[-1] == {"event": "swarm_edge_no_task", "app": "triage", "service": "triage"}


def test_engine_errors_back_off_bounded_and_reset_after_a_success(watcher) -> None:
    w, swarm, clock, log, _, _ = watcher
    swarm.failures = 9
    for _ in range(9):
        w.step()
    assert clock.slept == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert swarm.waits == []
    w.step()  # the engine answers again: a sync, then the wait for an event or the resync period
    assert swarm.waits == [15]
    assert w.backoff == 1
    assert log[0]["event"] == "swarm_edge_engine_error"


def test_run_stops_when_asked(watcher) -> None:
    w, swarm, _, _, _, _ = watcher
    stops = iter([False, False, True])
    w.run(lambda: next(stops))
    assert swarm.waits == [15, 15]
