"""The release notes: every fragment in changelogs/fragments/ is valid and makes a release."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.helpers import REPO, VENV_BIN

ANTSIBULL_CHANGELOG = str(VENV_BIN / "antsibull-changelog")


def copy_of_the_changelog(tmp_path: Path) -> Path:
    """galaxy.yml and changelogs/ only: what antsibull-changelog reads, without touching the checkout."""
    root = tmp_path / "collection"
    root.mkdir()
    shutil.copy2(REPO / "galaxy.yml", root / "galaxy.yml")
    shutil.copytree(REPO / "changelogs", root / "changelogs")
    return root


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ANTSIBULL_CHANGELOG, "lint"], cwd=root, capture_output=True, text=True, check=False)


def test_every_fragment_passes_antsibull_changelog_lint():
    result = lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_lint_refuses_a_fragment_of_an_unknown_section(tmp_path: Path):
    root = copy_of_the_changelog(tmp_path)
    (root / "changelogs" / "fragments" / "typo.yml").write_text("---\nbugfix:\n  - The section is bugfixes.\n")
    result = lint(root)
    assert result.returncode != 0
    assert "typo.yml" in result.stdout


def test_the_fragments_make_a_release(tmp_path: Path):
    root = copy_of_the_changelog(tmp_path)
    fragments = sorted((root / "changelogs" / "fragments").glob("*.yml"))
    assert fragments
    subprocess.run(
        [ANTSIBULL_CHANGELOG, "release", "--version", "1.0.0", "--date", "2026-12-03"],
        cwd=root,
        check=True,
        capture_output=True,
        # It lists the collection's plugins with ansible-doc (new plugins get a section of their own).
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    notes = (root / "CHANGELOG.md").read_text()
    assert "## v1\\.0\\.0" in notes
    assert "Release Summary" in notes
    assert not list((root / "changelogs" / "fragments").glob("*.yml")), "every fragment went into the release"
