"""Helpers shared by the repository's pytest suites (unit and integration)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def ansible_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"),
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra)
    return env


def run_playbook_json(*args: str, cwd: Path = REPO) -> tuple[int, dict]:
    """Run ansible-playbook with the JSON callback; return its exit code and parsed report."""
    result = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), *args],
        cwd=cwd,
        env=ansible_env(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json"),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"no JSON report:\n{result.stdout}\n{result.stderr}") from exc
    return result.returncode, report
