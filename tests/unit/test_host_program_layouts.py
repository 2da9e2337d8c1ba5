"""Every host program finds its libraries on the host: each plugins/module_utils file a program imports,
directly or through another library, is in the list of files its role copies there.

A library missing from a copy list passes every unit test (they import from the checkout) and fails only
on a host, at the first run. The imports are read statically (ast), in both layouts the programs use:
`ansible_collections.secure_streamlit.hosting.plugins.module_utils[._name]` and, where the libraries sit
beside the program, a plain `import _name` / `from _name import ...`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO

MODULE_UTILS = REPO / "plugins/module_utils"
PACKAGE = "ansible_collections.secure_streamlit.hosting.plugins.module_utils"

# Host program -> the role that installs it.
PROGRAMS = {
    "roles/apps/files/streamlit_deployer.py": "apps",
    "roles/backup/files/secure_streamlit_backup.py": "backup",
    "roles/monitor/files/github_repo_monitor.py": "monitor",
    "roles/sso/files/streamlit_sso.py": "sso",
    "roles/status/files/secure_streamlit.py": "status",
    "roles/tls/files/streamlit_swarm_edge.py": "tls",
}


def library(name: str) -> str | None:
    """The module_utils file a module name means, if it is one."""
    return f"{name}.py" if (MODULE_UTILS / f"{name}.py").is_file() else None


def direct_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == PACKAGE:
                names = [alias.name for alias in node.names]
            elif node.module.startswith(PACKAGE + "."):
                names = [node.module.removeprefix(PACKAGE + ".")]
            else:
                names = [node.module]
        else:
            continue
        found.update(lib for name in names if "." not in name and (lib := library(name)))
    return found


def all_imports(path: Path) -> set[str]:
    """The module_utils files `path` imports, transitively."""
    seen: set[str] = set()
    todo = sorted(direct_imports(path))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(direct_imports(MODULE_UTILS / name) - seen)
    return seen


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def tasks(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        for item in value:
            yield from tasks(item)
    elif isinstance(value, dict):
        yield value
        for key in ("block", "rescue", "always"):
            yield from tasks(value.get(key))


def shipped(role: str) -> set[str]:
    """The module_utils files the role's tasks copy or pack for the host: a literal
    plugins/module_utils/<file> source, or a loop (a literal list or a *_modules list of vars/main.yml)
    over plugins/module_utils/{{ item }}, or such a list handed to the source_archive lookup."""
    role_dir = REPO / "roles" / role
    role_vars = yaml.safe_load((role_dir / "vars/main.yml").read_text()) or {}
    lists = {key: value for key, value in role_vars.items() if key.endswith("_modules") and isinstance(value, list)}
    names: set[str] = set()
    for tasks_file in sorted((role_dir / "tasks").glob("*.yml")):
        for task in tasks(yaml.safe_load(tasks_file.read_text())):
            text = "\n".join(strings([value for key, value in task.items() if key not in ("name", "when")]))
            if "plugins/module_utils/" not in text:
                continue
            names.update(re.findall(r"plugins/module_utils/(\w+\.py)", text))
            loop = task.get("loop")
            if isinstance(loop, list):
                names.update(item for item in loop if isinstance(item, str))
            names.update(name for var, value in lists.items() if re.search(rf"\b{var}\b", text) for name in value)
    return {name for name in names if (MODULE_UTILS / name).is_file()}


@pytest.mark.parametrize(("program", "role"), sorted(PROGRAMS.items()))
def test_every_library_a_host_program_imports_is_shipped_with_it(program: str, role: str) -> None:
    needed = all_imports(REPO / program)
    assert needed, f"{program} imports no library: is the import reader broken?"
    missing = sorted(needed - shipped(role))
    assert not missing, f"roles/{role} does not copy {missing} to the host, but {program} imports them"


@pytest.mark.parametrize(("program", "role"), sorted(PROGRAMS.items()))
def test_every_settings_reading_program_uses_the_safe_reader(program: str, role: str) -> None:
    assert "_settings_file.py" in all_imports(REPO / program)


def test_every_host_program_that_imports_a_library_is_listed() -> None:
    programs = {str(path.relative_to(REPO)) for path in REPO.glob("roles/*/files/**/*.py") if direct_imports(path)}
    assert programs == set(PROGRAMS)


def test_the_import_reader_follows_both_layouts(tmp_path: Path) -> None:
    program = tmp_path / "program.py"
    program.write_text(
        f"from {PACKAGE} import _status\n"
        f"from {PACKAGE}._deploy import Engine\n"
        "try:\n    import _oidc_rp\nexcept ImportError:\n    pass\n"
        "import json\n"
    )
    assert {"_status.py", "_deploy.py", "_oidc_rp.py"} <= all_imports(program)
    assert "_oidc_config.py" in all_imports(program)  # through _oidc_rp
    assert "_app_spec.py" in all_imports(program)  # through _deploy
