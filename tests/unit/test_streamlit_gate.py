"""The readiness gate (roles/apps/files/streamlit_gate.py), run as the image runs it: a real Streamlit
(the component's venv, Streamlit 1.67 as in every app image) executing real scripts once."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

GATE = REPO / "roles/apps/files/streamlit_gate.py"
PYTHON = REPO / ".cache/venv-component/bin/python"

pytestmark = pytest.mark.skipif(not PYTHON.exists(), reason="make setup builds the component's venv")


def gate(tmp_path: Path, script: str, *extra: str) -> tuple[int, dict, str]:
    app = tmp_path / "streamlit_app.py"
    app.write_text(script)
    result = subprocess.run(
        [str(PYTHON), str(GATE), *extra, str(app)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    return result.returncode, json.loads(result.stdout.strip().splitlines()[-1]), result.stdout + result.stderr


def test_a_script_that_runs_to_its_end_passes(tmp_path):
    (tmp_path / "helper_module.py").write_text("VALUE = 41\n")  # the script's own directory is importable
    script = "import streamlit as st\nimport helper_module\nst.write(helper_module.VALUE + 1)\n"
    code, verdict, _ = gate(tmp_path, script)
    assert code == 0
    assert verdict["ok"] is True
    assert verdict["exceptions"] == []


def test_a_script_that_fails_at_import_is_refused_with_the_exceptions_type_and_message(tmp_path):
    code, verdict, _ = gate(tmp_path, "import streamlit as st\nimport clinic_risk_scores\nst.title('x')\n")
    assert code == 1
    assert verdict["exceptions"] == [{"type": "ModuleNotFoundError", "message": "No module named 'clinic_risk_scores'"}]


def test_only_the_message_is_reported_never_local_variables(tmp_path):
    script = "patient = 'Doe^Jane^1961-02-03'\nraise ValueError('the lab file has no header')\n"
    code, verdict, out = gate(tmp_path, script)
    assert code == 1
    assert verdict["exceptions"][0] == {"type": "ValueError", "message": "the lab file has no header"}
    assert "Doe^Jane" not in json.dumps(verdict)
    del out


def test_a_script_that_does_not_finish_in_time_is_refused(tmp_path):
    code, verdict, _ = gate(tmp_path, "import time\ntime.sleep(600)\n", "--timeout", "2")
    assert code == 2
    assert "did not finish within 2 s" in verdict["error"]
