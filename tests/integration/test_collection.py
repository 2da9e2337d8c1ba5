"""The repository is a usable collection: it builds, and a plain checkout resolves its FQCNs."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

from tests.helpers import VENV_BIN, ansible_env

# What the collection is (galaxy.yml's manifest): of the repository's tracked files, these.
COLLECTION_FILES = ("README.md", "CHANGELOG.md", "LICENSE", "changelogs/changelog.yaml", "changelogs/config.yaml")
COLLECTION_DIRS = ("roles/", "plugins/", "playbooks/", "meta/")
# What a working checkout has lying around after `make setup` and a test run; none of it may ship.
LOCAL_STATE = (
    "frontend/node_modules/vite/package.json",
    "scripts/observatory/node_modules/x/index.js",
    ".cache/images/base.tar",
    ".cache/dist/streamlit_secure_context-0.1.0-py3-none-any.whl",
    ".venv/bin/python",
    "component/streamlit_secure_context/frontend/index.html",
    "component/build/lib/streamlit_secure_context/__init__.py",
    "collections/ansible_collections/community/docker/galaxy.yml",
    "roles/apps/files/__pycache__/streamlit_launch.cpython-311.pyc",
    "plugins/module_utils/__pycache__/_deploy.cpython-311.pyc",
    ".pytest_cache/v/cache/nodeids",
    ".ansible/tmp/x",
    "secure_streamlit-hosting-0.9.0.tar.gz",
    "inventory/host_vars/lab.yml",
)


def tracked_files(repo: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=repo, check=True, capture_output=True).stdout
    return [name for name in out.decode().split("\0") if name]


def expected_contents(tracked: list[str]) -> set[str]:
    return {
        name
        for name in tracked
        if name in COLLECTION_FILES
        or name.startswith(COLLECTION_DIRS)
        or (name.startswith("docs/") and name.endswith(".md"))
    }


def build(source: Path, output: Path) -> Path:
    output.mkdir()
    subprocess.run(
        [str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(output), str(source)],
        check=True,
        capture_output=True,
        env=ansible_env(),
    )
    (artifact,) = output.glob("secure_streamlit-hosting-*.tar.gz")
    return artifact


def files_in(artifact: Path) -> set[str]:
    with tarfile.open(artifact) as tar:
        return {member.name for member in tar.getmembers() if not member.isdir()}


def isolated_env(tmp_path: Path, collections: Path) -> dict[str, str]:
    """Only the given collections path: not the checkout's ansible.cfg, not ~/.ansible/collections."""
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\n")
    return ansible_env(
        ANSIBLE_CONFIG=str(config),
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
    )


def test_the_tarball_holds_the_collections_own_files_and_nothing_of_a_working_checkout(repo: Path, tmp_path: Path):
    """A copy of the tracked files with a working checkout's state beside them: node_modules, caches..."""
    tracked = tracked_files(repo)
    checkout = tmp_path / "checkout"
    for name in tracked:
        source, target = repo / name, checkout / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(source.readlink())
        elif source.is_file():
            shutil.copy2(source, target)
    for name in LOCAL_STATE:
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text("local state\n")

    artifact = build(checkout, tmp_path / "dist")
    names = files_in(artifact)
    assert names - {"MANIFEST.json", "FILES.json"} == expected_contents(tracked)
    assert {"roles/docker/meta/argument_specs.yml", "roles/docker/README.md", "meta/runtime.yml", "LICENSE"} <= names
    with tarfile.open(artifact) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    assert set(manifest["collection_info"]["dependencies"]) >= {"community.docker", "ansible.posix"}
    assert manifest["collection_info"]["license"] == ["Apache-2.0"]


def test_the_tarball_of_this_checkout_holds_only_tracked_files(repo: Path, tmp_path: Path):
    """This checkout as it is (after make setup: node_modules, .cache, built frontend, venvs)."""
    names = files_in(build(repo, tmp_path / "dist"))
    assert names - {"MANIFEST.json", "FILES.json"} == expected_contents(tracked_files(repo))


def test_the_installed_tarball_documents_every_role_and_plugin(repo: Path, tmp_path: Path):
    artifact = build(repo, tmp_path / "dist")
    collections = tmp_path / "collections"
    collections.mkdir()
    env = isolated_env(tmp_path, collections)
    subprocess.run(
        [str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(collections), str(artifact)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        env=env,
    )
    installed = collections / "ansible_collections" / "secure_streamlit" / "hosting"
    assert (installed / "MANIFEST.json").is_file()

    expected = {
        "role": {p.name for p in (repo / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file()},
        "module": {p.stem for p in (repo / "plugins" / "modules").glob("*.py")},
        "filter": {
            "app_database_secret_files",
            "app_placement_errors",
            "app_purge_errors",
            "app_secret_files",
            "app_spec_errors",
            "app_specs",
            "apps_on_host",
            "csp_inline_script_hashes",
            "egress_host_local_errors",
            "sso_errors",
            "sso_service_config",
            "status_app_repos",
            "swarm_anchor",
            "swarm_edge_apps",
            "swarm_edge_conf",
            "swarm_placement",
            "with_status_app",
        },
        "test": {"app_name"},
    }
    for kind, names in expected.items():
        listed = subprocess.run(
            [str(VENV_BIN / "ansible-doc"), "-t", kind, "--list", "--json", "secure_streamlit.hosting"],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        assert {name.rsplit(".", 1)[-1] for name in json.loads(listed.stdout)} == names, kind
        fqcns = [f"secure_streamlit.hosting.{name}" for name in sorted(names)]
        shown = subprocess.run(
            [str(VENV_BIN / "ansible-doc"), "-t", kind, "--json", *fqcns],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        docs = json.loads(shown.stdout)
        assert sorted(docs) == fqcns, kind
        assert "WARNING" not in shown.stderr, shown.stderr
        for fqcn, doc in docs.items():
            if kind == "role":
                assert doc["entry_points"]["main"]["options"], fqcn
            else:
                assert doc["doc"]["short_description"], fqcn


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
        ("module", "nginx_reload", "pid_file"),
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
