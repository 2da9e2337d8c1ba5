"""The repository is a usable collection: it builds, and a plain checkout resolves its FQCNs."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

from tests.helpers import VENV_BIN, ansible_env


def test_collection_builds_with_metadata_and_without_local_state(repo: Path, tmp_path: Path):
    subprocess.run(
        [str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), str(repo)],
        check=True,
        capture_output=True,
        env=ansible_env(),
    )
    (artifact,) = tmp_path.glob("secure_streamlit-hosting-*.tar.gz")
    with tarfile.open(artifact) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    assert "roles/docker/meta/argument_specs.yml" in names
    assert "meta/runtime.yml" in names
    assert not [n for n in names if n.startswith((".venv", ".cache", "collections/", "molecule/"))]
    assert set(manifest["collection_info"]["dependencies"]) >= {"community.docker", "ansible.posix"}


def test_role_documentation_renders_from_its_argument_specs(repo: Path):
    out = subprocess.run(
        [str(VENV_BIN / "ansible-doc"), "-t", "role", "secure_streamlit.hosting.docker"],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
        env=ansible_env(),
    ).stdout
    assert "docker_engine_source" in out
    assert "docker_daemon_options" in out


def test_site_playbook_resolves_collection_roles_in_a_plain_checkout(repo: Path):
    result = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "site.yml", "--syntax-check"],
        cwd=repo,
        capture_output=True,
        text=True,
        # Only ansible.cfg from the checkout: no ANSIBLE_COLLECTIONS_PATH from the environment.
        env={k: v for k, v in ansible_env().items() if k != "ANSIBLE_COLLECTIONS_PATH"},
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_deploy_modules_and_filters_are_documented(repo: Path):
    for kind, name, expected in (
        ("module", "app_deploy", "remove_absent"),
        ("module", "edge_upstream", "check_candidate"),
        ("filter", "app_secret_files", "no_log"),
    ):
        out = subprocess.run(
            [str(VENV_BIN / "ansible-doc"), "-t", kind, f"secure_streamlit.hosting.{name}"],
            cwd=repo,
            check=True,
            capture_output=True,
            text=True,
            env=ansible_env(),
        ).stdout
        assert expected in out, (name, out[:500])
