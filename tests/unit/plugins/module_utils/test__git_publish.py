"""Publishing the status app's source into a local bare repository (plugins/module_utils/_git_publish.py),
with the real git: what git stores, a second run that changes nothing, a change on top of the head, check
mode writing nothing, refused sources, and a clone through the file:// URL the app entry names."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._git_publish import (
    PublishError,
    blob_id,
    publish,
    tree_id,
)
from tests.helpers import REPO

APP = REPO / "roles/status/files/status_app"


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    directory = tmp_path / "src"
    directory.mkdir()
    for name in ("streamlit_app.py", "requirements.txt"):
        (directory / name).write_bytes((APP / name).read_bytes())
    return directory


def test_the_files_become_the_branch_head_and_a_second_run_changes_nothing(source, tmp_path):
    repo = tmp_path / "app.git"
    first = publish(source, repo)
    assert first.changed
    assert first.previous == ""
    assert stat.S_IMODE(repo.stat().st_mode) == 0o700
    assert git(f"--git-dir={repo}", "rev-parse", "refs/heads/main") == first.sha
    assert git(f"--git-dir={repo}", "rev-parse", f"{first.sha}^{{tree}}") == first.tree
    listing = git(f"--git-dir={repo}", "ls-tree", first.sha)
    assert f"100644 blob {blob_id((source / 'streamlit_app.py').read_bytes())}\tstreamlit_app.py" in listing
    assert git(f"--git-dir={repo}", "log", "-1", "--format=%an <%ae>", first.sha) == (
        "secure_streamlit.hosting <root@localhost>"
    )
    again = publish(source, repo)
    assert (again.changed, again.sha) == (False, first.sha)


def test_changed_files_are_a_new_commit_on_top_of_the_head_and_check_mode_writes_nothing(source, tmp_path):
    repo = tmp_path / "app.git"
    first = publish(source, repo)
    (source / "streamlit_app.py").write_text("import streamlit as st\nst.title('v2')\n")
    objects = sorted(p.name for p in (repo / "objects").rglob("*"))
    planned = publish(source, repo, check_mode=True)
    assert (planned.changed, planned.sha, planned.previous) == (True, "", first.sha)
    assert sorted(p.name for p in (repo / "objects").rglob("*")) == objects
    second = publish(source, repo, message="status app 2")
    assert second.changed
    assert second.tree == planned.tree
    assert git(f"--git-dir={repo}", "rev-parse", f"{second.sha}^") == first.sha
    assert git(f"--git-dir={repo}", "log", "-1", "--format=%s", second.sha) == "status app 2"


def test_the_tree_id_is_gits(source, tmp_path):
    blobs = {p.name: blob_id(p.read_bytes()) for p in source.iterdir()}
    listing = "".join(f"100644 blob {blobs[n]}\t{n}\n" for n in sorted(blobs))
    repo = tmp_path / "scratch.git"
    git("init", "-q", "--bare", str(repo))
    for path in source.iterdir():
        git(f"--git-dir={repo}", "hash-object", "-w", str(path))
    made = subprocess.run(
        ["git", f"--git-dir={repo}", "mktree"], input=listing, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert tree_id(blobs) == made


def test_the_deploy_engine_can_clone_it_by_its_file_url(source, tmp_path):
    repo = tmp_path / "app.git"
    published = publish(source, repo)
    clone = tmp_path / "clone"
    git("clone", "-q", f"file://{repo}", str(clone))
    assert git("rev-parse", "HEAD", cwd=clone) == published.sha
    assert (clone / "streamlit_app.py").read_bytes() == (source / "streamlit_app.py").read_bytes()


@pytest.mark.parametrize("bad", ["subdir", "link", ".hidden", "empty"])
def test_a_source_with_anything_but_plain_files_is_refused_and_nothing_is_written(source, tmp_path, bad):
    if bad == "subdir":
        (source / "pages").mkdir()
    elif bad == "link":
        (source / "secrets.txt").symlink_to("/etc/shadow")
    elif bad == ".hidden":
        (source / ".env").write_text("X=1\n")
    else:
        for path in source.iterdir():
            path.unlink()
    repo = tmp_path / "app.git"
    with pytest.raises(PublishError):
        publish(source, repo)
    assert not repo.exists()


def test_a_bad_branch_or_a_relative_repository_is_refused(source, tmp_path):
    with pytest.raises(PublishError, match="branch"):
        publish(source, tmp_path / "a.git", branch="main\n")
    with pytest.raises(PublishError, match="absolute"):
        publish(source, Path("relative.git"))
    assert os.listdir(tmp_path) == ["src"]
