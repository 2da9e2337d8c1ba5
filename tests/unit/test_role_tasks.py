"""Rules every role's tasks keep, read from the task files themselves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

APT = {"ansible.builtin.apt", "apt"}
PACKAGE_KEYS = {"name", "pkg", "package", "deb", "upgrade"}


def tasks_in(items: list | None) -> Iterator[dict]:
    for item in items or []:
        if not isinstance(item, dict):
            continue
        yield item
        for section in ("block", "rescue", "always"):
            yield from tasks_in(item.get(section))


def task_files() -> list[Path]:
    return sorted(
        [*REPO.glob("roles/*/tasks/*.yml"), *REPO.glob("roles/*/handlers/*.yml"), *REPO.glob("playbooks/*.yml")]
    )


def apt_refreshes() -> list[tuple[str, dict]]:
    """Every apt task that only refreshes the package lists (no package named)."""
    found = []
    for path in task_files():
        document = yaml.safe_load(path.read_text())
        plays = document if path.parent.name == "playbooks" else [{"tasks": document}]
        for play in plays or []:
            for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                for task in tasks_in(play.get(section)):
                    module = next((key for key in task if key in APT), None)
                    if module is None or not isinstance(task[module], dict):
                        continue
                    if task[module].get("update_cache") and not PACKAGE_KEYS & set(task[module]):
                        found.append((f"{path.relative_to(REPO)}: {task.get('name')}", task))
    return found


def test_there_are_package_list_refreshes_to_check():
    assert len(apt_refreshes()) >= 3


@pytest.mark.parametrize(("where", "task"), [pytest.param(where, task, id=where) for where, task in apt_refreshes()])
def test_a_package_list_refresh_is_never_reported_as_a_change(where, task):
    # A refresh older than cache_valid_time runs again on every re-run that comes over an hour after the
    # last (a first converge under load takes longer): it changes no package, and a converged host must
    # report changed=0.
    assert task.get("changed_when") is False, f"{where}: add changed_when: false"
