"""The swarm edge's entry point (roles/tls/files/streamlit_swarm_edge.py) and the role's filter: the
configuration check and exit codes, the Docker SDK adapter (over a stand-in API object: a swarm's engine is
molecule/swarm's), and the fragments the role writes being the library's."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.secure_streamlit.hosting.plugins.filter.swarm_edge import swarm_edge_conf
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_edge import http_conf, location_conf
from tests.helpers import REPO

_spec = importlib.util.spec_from_file_location("streamlit_swarm_edge", REPO / "roles/tls/files/streamlit_swarm_edge.py")
program = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(program)


def test_check_config_exit_codes(tmp_path: Path, capsys) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"apps": [{"name": "triage", "service": "triage", "port": 8501}]}))
    assert program.main(["--config", str(good), "check-config"]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"apps": [{"name": "triage", "service": "triage", "port": 8501, "x": 1}]}))
    assert program.main(["--config", str(bad), "check-config"]) == 2
    assert "apps[0] (name 'triage'): unknown keys: x" in capsys.readouterr().err
    assert program.main(["--config", str(tmp_path / "missing.json"), "check-config"]) == 2
    good.chmod(0o664)  # root rewrites nginx's upstreams from it: a file others could write is refused
    assert program.main(["--config", str(good), "check-config"]) == 2
    assert "mode 0664 lets the group or others write it" in capsys.readouterr().err


class Stream:
    def __init__(self, events: list[dict]) -> None:
        self.events = events
        self.closed = False

    def __iter__(self):
        return iter(self.events)

    def close(self) -> None:
        self.closed = True


class StandInAPI:
    """Records the calls the adapter makes (the SDK's APIClient methods it uses)."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list = []
        self.stream = Stream([{"Type": "service"}, {"Type": "node"}])
        self.fail = fail

    def tasks(self, filters):
        if self.fail:
            raise self.fail
        self.calls.append(("tasks", filters))
        return []

    def nodes(self):
        return []

    def events(self, **kwargs):
        self.calls.append(("events", kwargs))
        return self.stream


def adapter(api: StandInAPI):
    swarm = program.DockerSwarm.__new__(program.DockerSwarm)
    swarm.api = api
    swarm._errors = (KeyError,)
    return swarm


def test_the_adapter_asks_for_running_tasks_and_waits_on_a_bounded_event_stream() -> None:
    api = StandInAPI()
    swarm = adapter(api)
    swarm.tasks("triage")
    swarm.wait_for_change(15)
    (_, filters), (_, events) = api.calls
    assert filters == {"service": "triage", "desired-state": "running"}
    assert events["filters"] == {"type": ["service", "node", "container"]}
    assert events["until"] - events["since"] == 15
    assert api.stream.closed  # returned at the first event, stream closed


def test_engine_errors_become_runtime_errors_for_the_backoff() -> None:
    with pytest.raises(RuntimeError):
        adapter(StandInAPI(fail=KeyError("engine down"))).tasks("triage")


def test_the_role_writes_the_librarys_fragments() -> None:
    assert swarm_edge_conf("http") == http_conf()
    assert swarm_edge_conf("location") == location_conf()
    with pytest.raises(AnsibleFilterError):
        swarm_edge_conf("server")
