"""The component's distributions carry complete metadata and pass `twine check --strict`."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from trove_classifiers import classifiers as KNOWN_CLASSIFIERS

from tests.helpers import REPO


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist and wheel built from a copy of component/ (the checkout gets no build/ or egg-info).

    The built frontend is left out: the metadata does not depend on it, and it is 90 MB to copy.
    """
    source = tmp_path_factory.mktemp("component") / "component"
    shutil.copytree(
        REPO / "component",
        source,
        symlinks=False,  # LICENSE is a link to the repository's
        ignore=shutil.ignore_patterns("frontend", "build", "*.egg-info", "__pycache__", "static"),
    )
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    return out


def wheel_metadata(dist: Path) -> email.message.Message:
    (wheel,) = dist.glob("streamlit_secure_context-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name))


def test_twine_check_passes_strict(dist: Path):
    files = sorted(str(p) for p in dist.iterdir())
    assert len(files) == 2
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_the_wheel_names_its_license_urls_and_classifiers(dist: Path):
    metadata = wheel_metadata(dist)
    assert metadata["License-Expression"] == "Apache-2.0 AND MIT"
    assert set(metadata.get_all("License-File")) == {"LICENSE", "THIRD-PARTY-NOTICES.md"}
    assert metadata["Description-Content-Type"] == "text/markdown"
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert set(urls) >= {"Homepage", "Documentation", "Source", "Issues"}
    classifiers = metadata.get_all("Classifier")
    assert classifiers
    assert not set(classifiers) - KNOWN_CLASSIFIERS, "PyPI refuses unknown classifiers"
    assert metadata["Requires-Python"] == ">=3.11"


def test_the_license_files_are_in_the_wheel(dist: Path):
    (wheel,) = dist.glob("streamlit_secure_context-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        licenses = {Path(n).name for n in archive.namelist() if "/licenses/" in n}
    assert licenses == {"LICENSE", "THIRD-PARTY-NOTICES.md"}
    assert "Apache License" in (REPO / "component" / "LICENSE").read_text()
