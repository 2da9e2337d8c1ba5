"""The status role's list of apps on each host of a multi-host inventory: the apps placed there, by the apps
role's rule (docs/multi-host.md), so that no host's report names an app it does not serve.

The role's own variables are rendered by Ansible itself: a play against this machine (local connections,
--check) includes the role's preflight (read-only checks) with its variables made public, then shows the
command's configuration as the role would write it (_status_configuration, its `settings.apps` are the
report's rows: _status.Collector reports exactly those apps).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_playbook_json

LOCAL = "{ansible_connection: local, ansible_python_interpreter: '{{ ansible_playbook_python }}'}"

# A swarm's first manager and a worker, and a host outside the swarm.
INVENTORY = f"""\
all:
  children:
    streamlit_hosts:
      hosts:
        manager-1: {LOCAL}
        worker-1: {LOCAL}
        outside-1: {LOCAL}
    swarm_managers:
      hosts:
        manager-1:
    swarm_workers:
      hosts:
        worker-1:
"""

APPS = [
    {"name": "everywhere", "repo": "acme/everywhere"},
    # A swarm service: the first manager deploys it, whichever nodes its tasks run on.
    {"name": "replicated", "repo": "acme/replicated", "replicas": 2, "hosts": ["swarm_managers", "swarm_workers"]},
    {"name": "on-worker", "repo": "acme/on-worker", "hosts": ["worker-1"]},
    {"name": "on-outside", "repo": "acme/on-outside", "hosts": ["streamlit_hosts"], "route": {"path": "/o/"}},
    {"name": "elsewhere", "repo": "acme/elsewhere", "hosts": ["manager-1", "outside-1"]},
    # Served by something else: no host reports it.
    {"name": "pinned", "upstream": "10.0.0.5:8501"},
]

STATUS_APP = {"status_app_enabled": True, "status_app_access": {"client_cert_cns": ["alice"]}}

PLAY = """\
- name: Render the status role's variables on every host
  hosts: streamlit_hosts
  gather_facts: false
  tasks:
    - name: Include the status role's checks with its variables
      ansible.builtin.include_role:
        name: secure_streamlit.hosting.status
        tasks_from: preflight
        public: true
    - name: Show the command's configuration
      ansible.builtin.debug:
        var: _status_configuration
"""


def rendered(tmp_path: Path, extra_vars: dict, host_vars: dict[str, dict] | None = None) -> dict[str, list[str]]:
    """Each host's settings.apps in the configuration the role writes."""
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    for host, values in (host_vars or {}).items():
        (tmp_path / "host_vars").mkdir(exist_ok=True)
        (tmp_path / "host_vars" / f"{host}.yml").write_text(json.dumps(values))
    (tmp_path / "play.yml").write_text(PLAY)
    rc, report = run_playbook_json(
        str(tmp_path / "play.yml"), "-i", str(tmp_path / "hosts.yml"), "--check", "-e", json.dumps(extra_vars)
    )
    assert rc == 0, json.dumps(report["stats"])
    shown = report["plays"][0]["tasks"][-1]["hosts"]
    return {host: result["_status_configuration"]["settings"]["apps"] for host, result in shown.items()}


@pytest.mark.parametrize("status_app", [False, True], ids=["without-status-app", "with-status-app"])
def test_each_host_reports_only_the_apps_placed_on_it(tmp_path, status_app):
    apps = rendered(tmp_path, {"apps": APPS, **(STATUS_APP if status_app else {})})

    extra = ["platform-status"] if status_app else []
    assert apps == {
        "manager-1": ["everywhere", "replicated", "on-outside", "elsewhere", *extra],
        # The worker runs the service's tasks, but its report has no replicas: the manager's does.
        "worker-1": ["everywhere", "on-worker", "on-outside", *extra],
        "outside-1": ["everywhere", "on-outside", "elsewhere", *extra],
    }
    # No host names an app placed elsewhere, nor one served by something else.
    assert "replicated" not in apps["worker-1"] + apps["outside-1"]
    assert "on-worker" not in apps["manager-1"] + apps["outside-1"]
    assert "elsewhere" not in apps["worker-1"]
    assert all("pinned" not in names for names in apps.values())


def test_an_operator_s_list_is_taken_as_written(tmp_path):
    """status_apps set for one host replaces the default there, unfiltered; the others keep theirs."""
    apps = rendered(tmp_path, {"apps": APPS}, host_vars={"outside-1": {"status_apps": ["on-worker", "everywhere"]}})

    assert apps["outside-1"] == ["on-worker", "everywhere"]
    assert apps["worker-1"] == ["everywhere", "on-worker", "on-outside"]


def test_no_apps_means_an_empty_report(tmp_path):
    assert rendered(tmp_path, {"apps": None}) == {"manager-1": [], "worker-1": [], "outside-1": []}
