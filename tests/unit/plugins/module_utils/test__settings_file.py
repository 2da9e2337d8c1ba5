"""The settings-file reader (plugins/module_utils/_settings_file.py) against real files: what it refuses
before a privileged program acts on a file someone else could have written."""

from __future__ import annotations

import json
import os
import pwd
import time
from pathlib import Path

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._settings_file import (
    SettingsFileError,
    key_errors,
    parse_json_object,
    read_json_object,
    read_settings,
    read_state_object,
)


def settings(tmp_path: Path, content: str | bytes = '{"a": 1}', mode: int = 0o600) -> Path:
    path = tmp_path / "settings.json"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return path


def test_a_root_owned_private_object_is_read(tmp_path):
    assert read_json_object(settings(tmp_path, '{"a": [1, true], "b": {"c": null}}', 0o640)) == {
        "a": [1, True],
        "b": {"c": None},
    }


def test_a_symlink_is_refused_even_to_a_good_file(tmp_path):
    good = settings(tmp_path)
    link = tmp_path / "link.json"
    link.symlink_to(good)
    with pytest.raises(SettingsFileError, match=r"link\.json: a symbolic link"):
        read_json_object(link)


@pytest.mark.parametrize("mode", [0o660, 0o620, 0o602, 0o666])
def test_a_group_or_other_writable_file_is_refused(tmp_path, mode):
    path = settings(tmp_path, mode=mode)
    with pytest.raises(SettingsFileError, match=f"mode {mode:04o} lets the group or others write it"):
        read_json_object(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_file_of_another_user_is_refused(tmp_path):
    path = settings(tmp_path)
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(path, nobody, -1)
    with pytest.raises(SettingsFileError, match=f"owned by uid {nobody}, must be owned by uid 0$"):
        read_json_object(path)
    assert read_json_object(path, allowed_owners={0, nobody}) == {"a": 1}


def test_only_the_allowed_owners_are_accepted(tmp_path):
    path = settings(tmp_path)
    with pytest.raises(SettingsFileError, match="must be owned by uid 4242"):
        read_json_object(path, allowed_owners={4242})


def test_a_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "fifo.json"
    os.mkfifo(path, 0o600)
    start = time.monotonic()
    with pytest.raises(SettingsFileError, match="not a regular file"):
        read_json_object(path)
    assert time.monotonic() - start < 2


def test_a_directory_is_refused(tmp_path):
    (tmp_path / "dir.json").mkdir(mode=0o700)
    with pytest.raises(SettingsFileError, match="not a regular file"):
        read_json_object(tmp_path / "dir.json")


def test_a_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_json_object(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"a": 1, "a": 2}', "duplicate key 'a'"),
        ('{"a": {"b": 1, "b": 1}}', "duplicate key 'b'"),
        ('{"a": NaN}', "NaN is not JSON"),
        ('{"a": Infinity}', "Infinity is not JSON"),
        ('{"a": -Infinity}', "-Infinity is not JSON"),
        ('["a"]', "the top level must be a JSON object, not list"),
        ("null", "the top level must be a JSON object, not NoneType"),
        ('"a"', "the top level must be a JSON object, not str"),
        ("{not json", "not a valid JSON object"),
        ("", "not a valid JSON object"),
        (b'{"a": "\xff"}', "not UTF-8"),
    ],
)
def test_what_is_not_one_plain_json_object_is_refused(tmp_path, content, message):
    path = settings(tmp_path, content)
    with pytest.raises(SettingsFileError, match=message) as caught:
        read_json_object(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_a_file_over_the_limit_is_refused(tmp_path):
    path = settings(tmp_path, json.dumps({"a": "x" * 100}))
    size = path.stat().st_size
    assert read_json_object(path, max_bytes=size) == {"a": "x" * 100}
    with pytest.raises(SettingsFileError, match=f"{size} bytes, larger than the limit of {size - 1}"):
        read_json_object(path, max_bytes=size - 1)


def test_the_default_limit_is_16_mib(tmp_path):
    path = settings(tmp_path, b"{" + b" " * (16 << 20) + b"}")
    with pytest.raises(SettingsFileError, match=f"larger than the limit of {16 << 20}"):
        read_json_object(path)


def test_parse_json_object_alone():
    assert parse_json_object(b'{"x": 1.5}') == {"x": 1.5}
    with pytest.raises(ValueError, match="duplicate key 'x'"):
        parse_json_object('{"x": 1, "x": 1}')


def test_key_errors_exact():
    errors = key_errors(
        {"apps": "hello", "lab": "false", "count": True, "ratio": 1, "other": 0},
        required={"apps": list, "lab": bool, "count": int, "ratio": float, "name": str},
        optional={"note": str},
    )
    assert errors == [
        "name is missing",
        "apps must be a list (is str)",
        "lab must be true or false (is str)",
        "count must be an integer (is bool)",
        "unknown key 'other'",
    ]
    assert key_errors({"flag": False, "n": 0.5, "s": {}}, required={"flag": bool, "n": float, "s": dict}) == []
    assert key_errors({"n": 1}, required={"n": (int, str)}) == []
    assert key_errors({"n": []}, required={"n": (int, str)}) == ["n must be an integer or a string (is list)"]


def test_read_settings_reports_every_key_problem_at_once(tmp_path):
    path = settings(tmp_path, '{"a": "1", "z": 0}')
    with pytest.raises(SettingsFileError) as caught:
        read_settings(path, required={"a": int, "b": str})
    assert str(caught.value) == f"{path}: b is missing; a must be an integer (is str); unknown key 'z'"
    assert read_settings(settings(tmp_path, '{"a": 1}'), required={"a": int}) == {"a": 1}


# -- the directories on the way and hard links ----------------------------------------------------------------
def test_a_hard_link_is_refused(tmp_path):
    path = settings(tmp_path)
    os.link(path, tmp_path / "elsewhere.json")
    with pytest.raises(SettingsFileError, match=r"settings\.json: 2 hard links \(must be 1"):
        read_json_object(path)
    with pytest.raises(SettingsFileError, match="2 hard links"):
        read_state_object(path)


def test_a_symlinked_directory_on_the_way_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    settings(real)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(SettingsFileError) as caught:
        read_json_object(tmp_path / "link" / "settings.json")
    assert str(caught.value) == (
        f"{tmp_path}/link/settings.json: {tmp_path}/link is a symbolic link (refused: name the real path)"
    )
    assert read_json_object(real / "settings.json") == {"a": 1}


def test_a_file_on_the_way_is_not_a_directory(tmp_path):
    path = settings(tmp_path)
    with pytest.raises(SettingsFileError, match=f"{path} is not a directory"):
        read_json_object(path / "settings.json")


@pytest.mark.parametrize("mode", [0o770, 0o730, 0o757, 0o777, 0o2775])
def test_a_directory_the_group_or_others_may_change_is_refused(tmp_path, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    path = settings(shared)
    shared.chmod(mode)
    message = f"directory {shared} has mode {mode:04o}: the group or others may swap what is in it"
    for read in (read_json_object, read_state_object):
        with pytest.raises(SettingsFileError, match=message):
            read(path)


def test_a_directory_higher_up_is_checked_too(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    path = settings(tmp_path / "a" / "b")
    (tmp_path / "a").chmod(0o777)
    with pytest.raises(SettingsFileError, match=f"directory {tmp_path}/a has mode 0777"):
        read_json_object(path)


def test_a_sticky_directory_like_tmp_is_accepted_for_a_file_of_an_allowed_owner(tmp_path):
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    assert read_json_object(settings(sticky)) == {"a": 1}


def test_a_missing_directory_is_an_os_error_and_a_relative_path_is_walked_from_slash(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError):
        read_json_object(tmp_path / "missing" / "settings.json")
    settings(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert read_json_object("settings.json") == {"a": 1}
    (tmp_path / "sub").mkdir(mode=0o700)
    assert read_json_object(f"/{tmp_path}/./sub/../settings.json") == {"a": 1}
    with pytest.raises(SettingsFileError, match="not a regular file"):
        read_json_object("/")
    tmp_path.chmod(0o777)
    with pytest.raises(SettingsFileError, match=f"directory {tmp_path} has mode 0777"):
        read_json_object("settings.json")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_directory_of_another_user_is_refused_a_state_file_in_its_own_directory_is_not(tmp_path):
    nobody = pwd.getpwnam("nobody").pw_uid
    own = tmp_path / "own"
    own.mkdir(mode=0o750)
    path = settings(own, mode=0o640)
    os.chown(own, nobody, -1)
    with pytest.raises(SettingsFileError, match=f"directory {own} is owned by uid {nobody}, must be owned by uid 0$"):
        read_json_object(path)
    assert read_state_object(path) == {"a": 1}
    os.chown(path, nobody, -1)  # the program's own file in the program's own directory
    assert read_state_object(path) == {"a": 1}
    # Only the file's own directory: one of that user's higher up may swap the whole tree.
    (own / "sub").mkdir(mode=0o750)
    deeper = settings(own / "sub")
    with pytest.raises(SettingsFileError, match=f"directory {own} is owned by uid {nobody}"):
        read_state_object(deeper)
    # Another user's file in root's directory is still refused.
    (tmp_path / "root").mkdir(mode=0o755)
    other = settings(tmp_path / "root")
    os.chown(other, nobody, -1)
    with pytest.raises(SettingsFileError, match=f"owned by uid {nobody}, must be owned by uid 0$"):
        read_state_object(other)
