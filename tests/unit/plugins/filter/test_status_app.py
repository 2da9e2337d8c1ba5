"""The status app's entry (plugins/filter/status_app.py): one definition, added to the apps only when
enabled, accepted by the app model with file:// URLs off (its repository alone), and naming what the
status role and the deploy engine's settings name."""

from __future__ import annotations

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.secure_streamlit.hosting.plugins.filter.status_app import (
    STATUS_APP_NAME,
    STATUS_APP_REPO,
    FilterModule,
)
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import (
    AppSpecError,
    Defaults,
    parse_apps,
)
from tests.helpers import REPO

FILTERS = FilterModule().filters()
with_status_app = FILTERS["with_status_app"]
status_app_repos = FILTERS["status_app_repos"]
APPS = [{"name": "hello", "repo": "acme/hello"}]
ACCESS = {"client_cert_cns": ["alice@lab.test"]}


def test_off_the_apps_are_the_inventorys():
    assert with_status_app(APPS) == APPS
    assert with_status_app(None, False) == []
    assert with_status_app(APPS, "false", ACCESS) == APPS
    assert status_app_repos(False) == []


def test_on_its_entry_is_added_and_the_app_model_takes_it_with_file_urls_off():
    apps = with_status_app(APPS, True, ACCESS)
    assert apps[:-1] == APPS
    defaults = Defaults.from_mapping({"git_allow_file_urls": False, "git_platform_repos": status_app_repos(True)})
    _hello, status = parse_apps(apps, defaults)
    assert (status.name, status.provider, status.url) == (STATUS_APP_NAME, "git", f"file://{STATUS_APP_REPO}")
    assert status.route_path == "/status/"
    assert status.access["client_cert_cns"] == ["alice@lab.test"]
    assert (status.cpus, status.memory, status.pids) == (0.5, "512m", 128)
    # Without the platform's repositories, the app model refuses the file:// URL as before.
    with pytest.raises(AppSpecError, match="file:// is refused here"):
        parse_apps(apps, Defaults())


def test_only_the_platforms_own_repository_gets_through():
    other = [{"name": "sneaky", "provider": "git", "repo": "file:///root/other.git"}]
    defaults = Defaults.from_mapping({"git_platform_repos": status_app_repos(True)})
    with pytest.raises(AppSpecError, match="file:// is refused here"):
        parse_apps(other, defaults)
    with pytest.raises(AppSpecError, match="git_platform_repos"):
        Defaults.from_mapping({"git_platform_repos": ["https://example.org/x.git"]})


def test_a_route_taken_by_an_app_is_reported_by_the_app_model():
    apps = with_status_app([{"name": "board", "repo": "acme/board", "route": {"path": "/status/"}}], True, ACCESS)
    with pytest.raises(AppSpecError, match="route /status/"):
        parse_apps(apps, Defaults.from_mapping({"git_platform_repos": status_app_repos(True)}))


def test_a_non_boolean_switch_is_refused():
    with pytest.raises(AnsibleFilterError, match="status_app_enabled"):
        with_status_app(APPS, "maybe")


def test_the_roles_name_the_same_repository_app_and_directory():
    status_vars = yaml.safe_load((REPO / "roles/status/vars/main.yml").read_text())
    assert status_vars["_status_app_repo"] == STATUS_APP_REPO
    apps_vars = (REPO / "roles/apps/vars/main.yml").read_text()
    assert f"'{STATUS_APP_NAME}' if status_app_enabled" in apps_vars
    assert "name: platform-status" in (REPO / "roles/apps/tasks/deploy_all.yml").read_text()
    assert "~ '/app'" in apps_vars
    assert status_vars["_status_app_snapshot_dir"] == "{{ status_snapshot_dir }}/app"
