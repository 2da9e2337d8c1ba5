"""Fixtures of the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    """This machine as the one host of streamlit_hosts, over a local connection (the validation plays)."""
    path = tmp_path / "hosts.yml"
    path.write_text(
        "all:\n  children:\n    streamlit_hosts:\n      hosts:\n"
        "        validation-probe:\n          ansible_connection: local\n"
        "          ansible_python_interpreter: '{{ ansible_playbook_python }}'\n"
    )
    return path
