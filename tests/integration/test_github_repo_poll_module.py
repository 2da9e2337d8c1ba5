"""The github_repo_poll module run for real by ansible-playbook on this machine against the fake GitHub."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fake_github import FakeGitHub
from tests.helpers import REPO, VENV_BIN, ansible_env

TOKEN = "ghp_moduleTestTokenThatMustNotLeak000000"


@pytest.fixture
def gh():
    with FakeGitHub(token=TOKEN) as server:
        yield server


def run_poll(tmp_path: Path, gh: FakeGitHub, repos: list[dict], *extra: str) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "poll.yml"
    task = {"secure_streamlit.hosting.github_repo_poll": {"repos": repos, "api_url": gh.url, "token": TOKEN}}
    play = {
        "name": "Poll",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [
            {"name": "Read heads", **task, "register": "heads"},
            {
                "name": "Print the heads",
                "ansible.builtin.debug": {"msg": "HEADS {{ heads.repos | map(attribute='sha') | join(',') }}"},
            },
            {
                "name": "Show the result",
                "ansible.builtin.copy": {
                    "content": "{{ heads | to_json }}",
                    "dest": str(tmp_path / "out.json"),
                    "mode": "0600",
                },
            },
        ],
    }
    playbook.write_text(yaml.safe_dump([play]))
    return subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(playbook), *extra],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        check=False,
    )


def test_reads_heads_and_compares_with_known_shas(tmp_path, gh):
    one = gh.push("acme", "one")
    two = gh.push("acme", "two", "release")
    result = run_poll(
        tmp_path,
        gh,
        [{"repo": "acme/one", "known_sha": one}, {"repo": "https://github.com/acme/two.git", "branch": "release"}],
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["changed"] is False
    assert [(r["repo"], r["sha"], r["changed_since_known"]) for r in out["repos"]] == [
        ("acme/one", one, False),
        ("acme/two", two, True),
    ]
    assert out["rate_limit"]["counted_requests"] == 1  # two repos with a token: one GraphQL query


def test_runs_in_check_mode(tmp_path, gh):
    sha = gh.push("acme", "one")
    result = run_poll(tmp_path, gh, [{"repo": "acme/one"}], "--check")
    assert result.returncode == 0, result.stdout
    assert f"HEADS {sha}" in result.stdout


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"repo": "a;b"}, "repos[0] ('a;b')"),
        ({"repo": "../x"}, "repos[0] ('../x')"),
        ({"repo": "acme/one", "known_sha": "nope"}, "known_sha must be a 40-hex"),
    ],
)
def test_bad_entries_fail_naming_the_entry(tmp_path, gh, entry, message):
    result = run_poll(tmp_path, gh, [entry])
    assert result.returncode != 0
    assert message in result.stdout


def test_the_token_never_appears_in_output_even_verbose(tmp_path, gh):
    gh.push("acme", "one")
    result = run_poll(tmp_path, gh, [{"repo": "acme/one"}, {"repo": "acme/missing"}], "-vvv")
    assert result.returncode == 0, result.stdout
    assert TOKEN not in result.stdout + result.stderr


def test_module_documentation_renders():
    out = subprocess.run(
        [str(VENV_BIN / "ansible-doc"), "-t", "module", "secure_streamlit.hosting.github_repo_poll"],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in ("repos", "known_sha", "api_url", "token", "changed_since_known"):
        assert option in out
