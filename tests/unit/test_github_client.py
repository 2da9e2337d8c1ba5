"""The GitHub client against the fake GitHub API over real HTTP (no mocked transport)."""

from __future__ import annotations

import time

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils.github_client import (
    GitHubClient,
    GitHubError,
    MalformedResponseError,
    RateLimitedError,
    RepoRef,
    graphql_url_for,
)
from tests.fake_github import FakeGitHub, new_sha

TOKEN = "test-token"


@pytest.fixture
def gh():
    with FakeGitHub(token=TOKEN) as server:
        yield server


def client_for(gh: FakeGitHub, token: str | None = TOKEN, **kwargs) -> GitHubClient:
    delays: list[float] = []
    client = GitHubClient(gh.url, token, sleep=delays.append, backoff_base=0.5, backoff_max=4, **kwargs)
    client.recorded_delays = delays  # type: ignore[attr-defined]
    return client


@pytest.mark.parametrize(
    ("repo", "branch", "expected"),
    [
        ("acme/demo", "main", ("acme", "demo", "main")),
        ("https://github.com/acme/demo.git", "release/1.2", ("acme", "demo", "release/1.2")),
        ("https://ghe.example.org/data-team/app_1", "main", ("data-team", "app_1", "main")),
    ],
)
def test_repo_ref_parses_owner_name_and_urls(repo, branch, expected):
    ref = RepoRef.parse(repo, branch)
    assert (ref.owner, ref.name, ref.branch) == expected


@pytest.mark.parametrize(
    ("repo", "branch", "message"),
    [
        ("../x", "main", "owner"),
        ("a;b", "main", "owner/name"),
        ("acme/a;b", "main", "repository name"),
        ("acme/..", "main", "repository name"),
        ("owner/", "main", "repository name"),
        ("http://github.com/acme/demo", "main", "https"),
        ("acme/demo", "..", "branch"),
        ("acme/demo", "-x", "branch"),
        ("acme/demo", "a b", "branch"),
        ("acme/demo", "x.lock", "branch"),
    ],
)
def test_repo_ref_rejects_unsafe_input_clearly(repo, branch, message):
    with pytest.raises(ValueError, match=message):
        RepoRef.parse(repo, branch)


@pytest.mark.parametrize(
    ("api_url", "graphql"),
    [
        ("https://api.github.com", "https://api.github.com/graphql"),
        ("https://ghe.example.org/api/v3/", "https://ghe.example.org/api/graphql"),
    ],
)
def test_graphql_url_follows_the_api_url(api_url, graphql):
    assert graphql_url_for(api_url) == graphql


@pytest.mark.parametrize(("token", "counted_304"), [(TOKEN, 0), (None, 1)])
def test_unchanged_branch_is_answered_304_free_only_with_a_token(gh, token, counted_304):
    sha = gh.push("acme", "demo")
    client = client_for(gh, token)
    ref = RepoRef("acme", "demo")
    first = client.head_sha(ref)
    assert (first.sha, first.not_modified) == (sha, False)
    before = client.counted_requests
    second = client.head_sha(ref)
    assert (second.sha, second.not_modified) == (sha, True)
    assert client.counted_requests - before == counted_304
    assert gh.counted() == client.counted_requests


def test_push_and_force_push_return_exactly_the_branch_head(gh):
    gh.push("acme", "demo", sha="a" * 40)
    client = client_for(gh)
    ref = RepoRef("acme", "demo")
    assert client.head_sha(ref).sha == "a" * 40
    newer = gh.push("acme", "demo")
    assert client.head_sha(ref).sha == newer
    gh.force_push("acme", "demo", sha="a" * 40)
    assert client.head_sha(ref).sha == "a" * 40


def test_graphql_batches_150_repos_in_two_requests(gh):
    refs = [RepoRef("acme", f"app{i}") for i in range(150)]
    expected = {ref.key: gh.push(ref.owner, ref.name) for ref in refs}
    client = client_for(gh)
    heads = client.heads(refs)
    assert {key: result.sha for key, result in heads.items()} == expected
    assert [r.path for r in gh.requests] == ["/graphql", "/graphql"]


@pytest.mark.parametrize("token", [TOKEN, None])
def test_a_deleted_branch_is_an_error_for_that_repo_only(gh, token):
    gh.push("acme", "one")
    kept = gh.push("acme", "two")
    gh.delete_branch("acme", "one")
    heads = client_for(gh, token).heads([RepoRef("acme", "one"), RepoRef("acme", "two")])
    assert heads["acme/one@main"].sha is None
    assert "not found" in heads["acme/one@main"].error
    assert heads["acme/two@main"].sha == kept


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500},
        {"status": 502},
        {"status": 503},
        {"delay": 0.6},  # longer than the read timeout below
    ],
)
def test_transient_failures_are_retried_with_capped_jittered_backoff(gh, fault):
    sha = gh.push("acme", "demo")
    gh.inject(**fault)
    gh.inject(**fault)
    client = client_for(gh, read_timeout=0.3)
    assert client.head_sha(RepoRef("acme", "demo")).sha == sha
    delays = client.recorded_delays
    assert len(delays) == 2
    assert all(0 <= d <= 4 for d in delays)


def test_persistent_failure_gives_up_with_a_clear_error(gh):
    gh.push("acme", "demo")
    for _ in range(4):
        gh.inject(status=500)
    with pytest.raises(GitHubError, match="HTTP 500 after 4 attempts"):
        client_for(gh).head_sha(RepoRef("acme", "demo"))


@pytest.mark.parametrize(
    ("status", "headers", "expected_wait"),
    [
        (429, {"retry-after": "120"}, 120),
        (403, {"retry-after": "30"}, 30),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "+900"}, 900),
    ],
)
def test_rate_limits_raise_with_the_time_to_retry(gh, status, headers, expected_wait):
    # "+N" stands for "N seconds from now", computed when the test runs.
    headers = {k: str(int(time.time()) + int(v[1:])) if v.startswith("+") else v for k, v in headers.items()}
    gh.push("acme", "demo")
    gh.inject(status=status, headers=headers)
    with pytest.raises(RateLimitedError) as caught:
        client_for(gh).head_sha(RepoRef("acme", "demo"))
    assert caught.value.retry_at == pytest.approx(time.time() + expected_wait, abs=3)


@pytest.mark.parametrize("body", ["not a sha", "<html>", "z" * 40])
def test_a_malformed_answer_is_refused(gh, body):
    gh.push("acme", "demo")
    gh.inject(status=200, body=body)
    with pytest.raises(MalformedResponseError):
        client_for(gh).head_sha(RepoRef("acme", "demo"))


def test_malformed_graphql_is_refused(gh):
    gh.push("acme", "one")
    gh.push("acme", "two")
    gh.inject(status=200, body="{not json")
    with pytest.raises(MalformedResponseError):
        client_for(gh).heads([RepoRef("acme", "one"), RepoRef("acme", "two")])


def test_rate_limit_state_and_poll_interval_hint_are_tracked(gh):
    gh.push("acme", "demo")
    gh.set_poll_interval(60)
    client = client_for(gh, None)
    client.head_sha(RepoRef("acme", "demo"))
    assert client.rate.limit == 60
    assert client.budget_left() == 59
    assert 0 < client.seconds_until_reset() <= 3600
    assert client.poll_interval_hint == 60


def test_the_token_never_shows_in_repr_or_errors(gh):
    secret = "ghp_thisMustNeverBeShown0000000000000"
    client = GitHubClient(gh.url, secret, max_retries=0, sleep=lambda _: None)
    assert secret not in repr(client)
    with pytest.raises(GitHubError) as caught:  # the fake refuses this token: 401
        client.head_sha(RepoRef("acme", "demo", "main"))
    assert secret not in str(caught.value)
    assert all("Authorization" not in r.headers for r in gh.requests)


def test_a_new_sha_helper_makes_distinct_heads():
    assert new_sha() != new_sha()
