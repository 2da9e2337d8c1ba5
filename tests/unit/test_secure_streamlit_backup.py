"""The backup command's settings (roles/backup/files/secure_streamlit_backup.py, load_settings): root runs
restic with what they name, so the file is read by the safe reader (plugins/module_utils/_settings_file.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.helpers import REPO

_spec = importlib.util.spec_from_file_location(
    "secure_streamlit_backup", REPO / "roles/backup/files/secure_streamlit_backup.py"
)
program = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(program)


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        ('{"repository": "/srv/backup"}', 0o660, "mode 0660 lets the group or others write it"),
        ('{"repository": "/a", "repository": "/b"}', 0o600, "duplicate key 'repository'"),
        ('["/srv/backup"]', 0o600, "the top level must be a JSON object"),
    ],
)
def test_settings_others_could_write_or_not_one_plain_object_are_refused(tmp_path: Path, content, mode, message):
    path = tmp_path / "backup.json"
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(SystemExit, match=message):
        program.load_settings(path)


def test_a_symlink_to_the_settings_is_refused(tmp_path: Path):
    (tmp_path / "backup.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "backup.json")
    with pytest.raises(SystemExit, match="a symbolic link"):
        program.load_settings(tmp_path / "link.json")
