"""Bad settings stop site.yml at validation, naming the variable, before any task changes the host.

The play runs against this machine over a local connection, in --check mode as a safety net: the
assertions look at which tasks ran, so the test fails if validation ever moves behind a changing task.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_playbook_json

# Tasks allowed to run before the failure: they read, never write.
READ_ONLY_TASKS = {"Gathering Facts"}


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(
        "all:\n  children:\n    streamlit_hosts:\n      hosts:\n"
        "        validation-probe:\n          ansible_connection: local\n"
        "          ansible_python_interpreter: '{{ ansible_playbook_python }}'\n"
    )
    return path


@pytest.mark.parametrize(
    ("extra_vars", "failed_task", "message_parts"),
    [
        (
            '{"docker_daemon_options": "x"}',
            "Validating arguments against arg spec 'main'",
            ["docker_daemon_options", "dict"],
        ),
        (
            '{"docker_engine_source": "snap"}',
            "Validating arguments against arg spec 'main'",
            ["docker_engine_source", "distribution", "upstream"],
        ),
        (
            '{"docker_daemon_nofile_soft": "many"}',
            "Validating arguments against arg spec 'main'",
            ["docker_daemon_nofile_soft", "int"],
        ),
        (
            '{"docker_daemon_log_max_size": "lots"}',
            "Fail on a log size the engine cannot parse",
            ["docker_daemon_log_max_size", "lots"],
        ),
        (
            '{"docker_daemon_nofile_soft": 9000, "docker_daemon_nofile_hard": 10}',
            "Fail when the hard open-files limit is below the soft one",
            ["docker_daemon_nofile_soft", "docker_daemon_nofile_hard"],
        ),
    ],
)
def test_bad_docker_setting_stops_before_any_change(inventory, extra_vars, failed_task, message_parts):
    rc, report = run_playbook_json("site.yml", "-i", str(inventory), "--check", "-e", extra_vars)

    assert rc != 0
    tasks = report["plays"][0]["tasks"]
    ran = [t for t in tasks if "validation-probe" in t["hosts"] and not t["hosts"]["validation-probe"].get("skipped")]
    failed = [t for t in ran if t["hosts"]["validation-probe"].get("failed")]
    assert len(failed) == 1
    assert failed[0]["task"]["name"].split(" : ")[-1].startswith(failed_task)
    message = failed[0]["hosts"]["validation-probe"]["msg"]
    for part in message_parts:
        assert part in message

    before = ran[: ran.index(failed[0])]
    for task in before:
        name = task["task"]["name"].split(" : ")[-1]
        result = task["hosts"]["validation-probe"]
        assert not result.get("changed"), f"{name} changed the host before the failure"
        assert name in READ_ONLY_TASKS or name.startswith(("Fail ", "Validating arguments")), name
    assert report["stats"]["validation-probe"]["changed"] == 0
