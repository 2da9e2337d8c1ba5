"""The programs the roles install on hosts import collection files from a library directory the role fills
from a list. A file missing from its list fails only on the host, at run time (an ImportError in a
systemd unit): check statically that each list holds every collection file its program imports, directly
or through another listed file."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MODULE_UTILS = REPO / "plugins" / "module_utils"
PACKAGE = "ansible_collections.secure_streamlit.hosting.plugins.module_utils"


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported(path: Path) -> set[str]:
    """The module_utils files (names with .py) a file imports at run time."""
    names: set[str] = set()
    skip: set[ast.AST] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if _is_type_checking(node):
            skip.update(ast.walk(node))
    for node in ast.walk(tree):
        if node in skip or not isinstance(node, ast.ImportFrom) or not node.module:
            continue
        module = node.module
        if module == PACKAGE:
            names.update(f"{alias.name}.py" for alias in node.names)
        elif module.startswith(PACKAGE + "."):
            names.add(module[len(PACKAGE) + 1 :].split(".")[0] + ".py")
        elif node.level == 0 and (MODULE_UTILS / f"{module}.py").is_file():
            names.add(f"{module}.py")  # a program that puts the files beside itself (sso)
    return names


def closure(program: Path) -> set[str]:
    needed: set[str] = set()
    todo = imported(program)
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        todo |= imported(MODULE_UTILS / name) - needed
    return needed


def _load(path: str) -> Any:
    return yaml.safe_load((REPO / path).read_text(encoding="utf-8"))


def _task(path: str, name: str) -> dict[str, Any]:
    return next(task for task in _load(path) if task.get("name") == name)


def _copied(task: dict[str, Any]) -> set[str]:
    """The module_utils files of a copy task's loop (items naming a module_utils src)."""
    out: set[str] = set()
    for item in task["loop"]:
        if isinstance(item, str):
            out.add(item)
        elif "module_utils/" in item["src"]:
            out.add(item["src"].rsplit("/", 1)[1])
    return out


def lists() -> dict[str, tuple[Path, set[str]]]:
    backup_task = _task(
        "roles/backup/tasks/install.yml", "Install the library the command imports (the collection's own file)"
    )
    return {
        "apps deployer": (
            REPO / "roles/apps/files/streamlit_deployer.py",
            set(_load("roles/apps/vars/main.yml")["_apps_deployer_modules"]),
        ),
        "status": (
            REPO / "roles/status/files/secure_streamlit.py",
            set(_load("roles/status/vars/main.yml")["_status_modules"]),
        ),
        "monitor": (
            REPO / "roles/monitor/files/github_repo_monitor.py",
            _copied(
                _task(
                    "roles/monitor/tasks/install.yml",
                    "Install the GitHub client, the audit-log library and the monitor program "
                    "(under --check, file by file)",
                )
            ),
        ),
        "tls swarm edge": (
            REPO / "roles/tls/files/streamlit_swarm_edge.py",
            _copied(_task("roles/tls/tasks/swarm_edge_watcher.yml", "Install the watcher's library")),
        ),
        "sso": (
            REPO / "roles/sso/files/streamlit_sso.py",
            _copied(_task("roles/sso/tasks/install.yml", "Install the relying-party library and the service")),
        ),
        "backup": (
            REPO / "roles/backup/files/secure_streamlit_backup.py",
            {backup_task["ansible.builtin.copy"]["src"].rsplit("/", 1)[1]},
        ),
    }


@pytest.mark.parametrize("which", sorted(lists()))
def test_each_host_program_gets_every_file_it_imports(which: str) -> None:
    program, listed = lists()[which]
    needed = closure(program)
    assert needed, f"{which}: {program.name} imports no collection file: the check reads the wrong program"
    assert not needed - listed, f"{which}: {program.name} needs {sorted(needed - listed)} in its list"


def test_the_import_reader_follows_imports() -> None:
    assert {"_app_spec.py", "_nginx_upstream.py", "_swarm_edge.py"} <= closure(
        REPO / "roles/tls/files/streamlit_swarm_edge.py"
    )
