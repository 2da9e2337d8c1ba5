from __future__ import annotations

import io
import tarfile

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._source_archive import (
    SourceArchiveError,
    source_archive,
    source_tree_archive,
)


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return archive.getmembers()


def test_the_same_files_give_the_same_bytes_sorted_root_owned_at_mtime_zero(tmp_path):
    (tmp_path / "b.py").write_text("b = 2\n")
    (tmp_path / "a.py").write_text("a = 1\n")
    first = source_archive([tmp_path / "b.py", tmp_path / "a.py"])
    (tmp_path / "a.py").touch()  # a new mtime on the controller (a fresh checkout) changes nothing
    assert source_archive([tmp_path / "a.py", tmp_path / "b.py"]) == first
    got = members(first)
    assert [m.name for m in got] == ["a.py", "b.py"]
    assert {(m.mode, m.mtime, m.uid, m.gid, m.uname, m.type) for m in got} == {(0o644, 0, 0, 0, "root", b"0")}
    with tarfile.open(fileobj=io.BytesIO(first)) as archive:
        assert archive.extractfile("a.py").read() == b"a = 1\n"


def test_a_content_change_changes_the_archive_and_the_mode_is_applied(tmp_path):
    (tmp_path / "prog.py").write_text("v = 1\n")
    before = source_archive([tmp_path / "prog.py"], 0o755)
    assert members(before)[0].mode == 0o755
    (tmp_path / "prog.py").write_text("v = 2\n")
    assert source_archive([tmp_path / "prog.py"], 0o755) != before


def test_two_files_of_one_name_are_refused(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "a.py").write_text("")
    (tmp_path / "x/a.py").write_text("")
    with pytest.raises(SourceArchiveError, match=r"'a\.py' is already in the archive"):
        source_archive([tmp_path / "a.py", tmp_path / "x/a.py"])


def test_a_symlink_a_directory_or_a_missing_file_is_refused(tmp_path):
    (tmp_path / "real.py").write_text("")
    (tmp_path / "link.py").symlink_to(tmp_path / "real.py")
    (tmp_path / "dir").mkdir()
    with pytest.raises(SourceArchiveError, match="not a regular file"):
        source_archive([tmp_path / "link.py"])
    with pytest.raises(SourceArchiveError, match="not a regular file"):
        source_archive([tmp_path / "dir"])
    with pytest.raises(FileNotFoundError):
        source_archive([tmp_path / "missing.py"])


@pytest.mark.parametrize("name", [".hidden", "-rf", "a b.py"])
def test_a_name_that_is_not_a_plain_file_name_is_refused(tmp_path, name):
    (tmp_path / name).write_text("")
    with pytest.raises(SourceArchiveError, match="not a plain file name"):
        source_archive([tmp_path / name])


def test_a_mode_out_of_range_is_refused(tmp_path):
    (tmp_path / "a.py").write_text("")
    with pytest.raises(SourceArchiveError, match="is not a file mode"):
        source_archive([tmp_path / "a.py"], 0o4755)


def test_a_tree_is_archived_relative_to_its_root_with_one_mode_per_kind(tmp_path):
    (tmp_path / "site/runtimes/ort").mkdir(parents=True)
    (tmp_path / "site/index.html").write_text("<p>hi</p>")
    (tmp_path / "site/runtimes/ort/a.wasm").write_bytes(b"\0asm")
    (tmp_path / "site/runtimes/ort/a.wasm").chmod(0o755)  # an executable bit on the controller is not kept
    data = source_tree_archive(tmp_path / "site")
    got = {m.name: (m.type, m.mode, m.mtime, m.uid) for m in members(data)}
    assert got == {
        "index.html": (tarfile.REGTYPE, 0o644, 0, 0),
        "runtimes": (tarfile.DIRTYPE, 0o755, 0, 0),
        "runtimes/ort": (tarfile.DIRTYPE, 0o755, 0, 0),
        "runtimes/ort/a.wasm": (tarfile.REGTYPE, 0o644, 0, 0),
    }
    (tmp_path / "site/index.html").touch()
    assert source_tree_archive(tmp_path / "site") == data


def test_a_tree_with_a_symlink_or_an_odd_name_is_refused(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site/link").symlink_to("/etc/passwd")
    with pytest.raises(SourceArchiveError, match="not a regular file or a directory"):
        source_tree_archive(tmp_path / "site")
    (tmp_path / "site/link").unlink()
    (tmp_path / "site/.git").mkdir()
    with pytest.raises(SourceArchiveError, match="not a plain file name"):
        source_tree_archive(tmp_path / "site")


def test_a_tree_root_that_is_not_a_directory_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SourceArchiveError, match="not a directory"):
        source_tree_archive(tmp_path / "file")
