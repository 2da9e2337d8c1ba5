"""The github_repo_poll module run for real by ansible-playbook on this machine against the fake GitHub."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.fake_github import FakeGitHub
from tests.git_server import GitServer
from tests.helpers import REPO, VENV_BIN, ansible_env

TOKEN = "ghp_moduleTestTokenThatMustNotLeak000000"


@pytest.fixture
def gh():
    with FakeGitHub(token=TOKEN) as server:
        yield server


def run_polls(
    tmp_path: Path, gh: FakeGitHub, polls: list[list[dict]], *extra: str, token: str | None = TOKEN, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    """One play polling each list of entries in turn (failures ignored); returns the run and every result."""
    tasks = []
    for index, repos in enumerate(polls):
        options = {"repos": repos, "api_url": gh.url, **({"token": token} if token else {})}
        tasks += [
            {
                "name": f"Poll {index}",
                "secure_streamlit.hosting.github_repo_poll": options,
                "register": "heads",
                "ignore_errors": True,
            },
            {
                "name": f"Print the heads of poll {index}",
                "ansible.builtin.debug": {
                    "msg": "HEADS {{ (heads.repos | default([])) | map(attribute='sha') | join(',') }}"
                },
            },
            {
                "name": f"Keep the result of poll {index}",
                "ansible.builtin.copy": {
                    "content": "{{ heads | to_json }}",
                    "dest": str(tmp_path / f"out{index}.json"),
                    "mode": "0600",
                },
                "check_mode": False,  # the test reads it, also under --check
            },
        ]
    play = {
        "name": "Poll",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": tasks,
    }
    playbook = tmp_path / "poll.yml"
    playbook.write_text(yaml.safe_dump([play], width=1000))
    run = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(playbook), *extra],
        cwd=REPO,
        env=ansible_env(**env),
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr  # the play itself ran (failures are ignored)
    results = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(len(polls))]
    return run, results


def test_reads_heads_and_compares_with_known_shas(tmp_path, gh):
    one = gh.push("acme", "one")
    two = gh.push("acme", "two", "release/1.2")
    entries = [
        {"repo": "acme/one", "known_sha": one.upper()},
        {"repo": "https://github.com/acme/two.git", "branch": "release/1.2", "known_sha": "0" * 40},
        {"repo": "acme/one"},
        {"repo": "acme/missing"},
    ]
    _, [out] = run_polls(tmp_path, gh, [entries])
    assert out["changed"] is False
    assert out["failed"] is False
    assert [(r["repo"], r["branch"], r["sha"], r["changed_since_known"]) for r in out["repos"]] == [
        ("acme/one", "main", one, False),
        ("acme/two", "release/1.2", two, True),
        ("acme/one", "main", one, True),
        ("acme/missing", "main", None, False),
    ]
    assert out["repos"][3]["error"] == "repository not found"
    assert out["rate_limit"]["counted_requests"] == 1  # several repos with a token: one GraphQL query
    assert out["rate_limit"]["resource"] == "graphql"
    assert [r.path for r in gh.requests] == ["/graphql"]


def test_runs_in_check_mode_with_the_token_from_the_environment(tmp_path, gh):
    sha = gh.push("acme", "one")
    run, [out] = run_polls(tmp_path, gh, [[{"repo": "acme/one"}]], "--check", token=None, GITHUB_TOKEN=TOKEN)
    assert f"HEADS {sha}" in run.stdout
    assert (out["changed"], out["repos"][0]["sha"]) == (False, sha)
    assert gh.requests[0].authenticated


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"repo": "a;b"}, "repos[0] ('a;b'): repo 'a;b' must be owner/name"),
        ({"repo": "../x"}, "repos[0] ('../x'): repository owner '..'"),
        ({"repo": "acme/one", "branch": "-x"}, "repos[0] ('acme/one'): branch '-x'"),
        ({"repo": "acme/one", "known_sha": "nope"}, "repos[0] ('acme/one'): known_sha must be a 40-hex"),
    ],
)
def test_bad_entries_fail_naming_the_entry_before_any_request(tmp_path, gh, entry, message):
    _, [out] = run_polls(tmp_path, gh, [[entry]])
    assert out["failed"] is True
    assert message in out["msg"]
    assert gh.requests == []


def test_failures_are_clear_and_the_token_never_appears_even_verbose(tmp_path, gh):
    gh.push("acme", "one")
    polls = [
        [{"repo": "acme/one"}, {"repo": "acme/missing"}],  # partly read: succeeds
        [{"repo": "acme/missing"}],  # nothing read: fails
        [{"repo": "acme/one"}],  # rate limited (injected below): fails with retry_at
    ]
    # Faults are served in order, one per request; polls 0 and 1 make one request each (a GraphQL batch,
    # then a REST request), so two no-op faults let the 429 answer poll 2.
    gh.inject()
    gh.inject()
    gh.inject(status=429, headers={"retry-after": "600"})
    run, (partly, missing, limited) = run_polls(tmp_path, gh, polls, "-vvv")
    assert TOKEN not in run.stdout + run.stderr
    assert [r["sha"] is not None for r in partly["repos"]] == [True, False]
    assert missing["failed"] is True
    assert "no branch head could be read: acme/missing@main: branch not found" in missing["msg"]
    assert limited["failed"] is True
    assert limited["retry_at"] == pytest.approx(time.time() + 600, abs=30)
    assert "rate limited" in limited["msg"]


def test_git_entries_are_read_with_ls_remote_beside_github_ones(tmp_path, gh):
    """provider git against a REAL git server (git http-backend), mixed with a GitHub entry."""
    hub = gh.push("acme", "one")
    with GitServer(tmp_path / "git") as server:
        server.create("team/plain")
        plain = server.commit("team/plain")
        url = f"http://localhost:{server.port}/team/plain.git"  # the fake GitHub is 127.0.0.1's
        entries = [
            {"repo": "acme/one"},
            {"repo": url, "known_sha": plain},  # inferred: another host than the API's
            {"repo": server.url("team/plain"), "branch": "gone", "provider": "git"},
            {"repo": server.file_url("team/plain"), "provider": "git"},  # file:// refused unless allowed
        ]
        _, [out, refused] = run_polls(tmp_path, gh, [entries[:3], entries[3:]])
        only_ls_refs = {(r.method, r.command) for r in server.requests()} <= {("GET", ""), ("POST", "ls-refs")}
    assert out["failed"] is False, out
    assert [(r["provider"], r["sha"], r["changed_since_known"], r["error"]) for r in out["repos"]] == [
        ("github", hub, True, None),
        ("git", plain, False, None),
        ("git", None, False, "branch gone not found"),
    ]
    assert out["repos"][1]["repo"] == url
    assert only_ls_refs
    assert refused["failed"] is True
    assert "repos[0] ('file://" in refused["msg"]
    assert "file:// is refused here" in refused["msg"]


def test_module_documentation_renders():
    out = subprocess.run(
        [str(VENV_BIN / "ansible-doc"), "-t", "module", "secure_streamlit.hosting.github_repo_poll"],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for text in ("repos", "known_sha", "api_url", "graphql_url", "token", "GITHUB_TOKEN", "changed_since_known"):
        assert text in out
