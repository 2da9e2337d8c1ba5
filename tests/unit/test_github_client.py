"""The GitHub client against the fake GitHub API over real HTTP (no mocked transport)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from email.utils import formatdate

import pytest
import requests

from ansible_collections.secure_streamlit.hosting.plugins.module_utils.github_client import (
    AuthenticationError,
    BranchNotFoundError,
    GitHubClient,
    GitHubError,
    MalformedResponseError,
    RateLimitedError,
    RepoRef,
    graphql_url_for,
)
from tests.fake_github import FakeGitHub, new_sha
from tests.helpers import REPO

TOKEN = "test-token"


@pytest.fixture
def gh():
    with FakeGitHub(token=TOKEN) as server:
        yield server


def client_for(gh: FakeGitHub, token: str | None = TOKEN, **kwargs) -> GitHubClient:
    """A client whose backoff sleeps are recorded instead of slept."""
    delays: list[float] = []
    options = {"sleep": delays.append, "backoff_base": 0.5, "backoff_max": 4, **kwargs}
    client = GitHubClient(gh.url, token, **options)
    client.recorded_delays = delays  # type: ignore[attr-defined]
    return client


# -- input ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("repo", "branch", "expected"),
    [
        ("acme/demo", "main", ("acme", "demo", "main")),
        ("https://github.com/acme/demo", "main", ("acme", "demo", "main")),
        ("https://github.com/acme/demo.git", "release/1.2", ("acme", "demo", "release/1.2")),
        ("https://ghe.example.org/data-team/app_1/", "feature/x-1", ("data-team", "app_1", "feature/x-1")),
        ("acme/my.app", "v1.0", ("acme", "my.app", "v1.0")),
    ],
)
def test_repo_ref_parses_owner_name_and_urls(repo, branch, expected):
    ref = RepoRef.parse(repo, branch)
    assert (ref.owner, ref.name, ref.branch) == expected
    assert ref.key == f"{expected[0]}/{expected[1]}@{expected[2]}"


@pytest.mark.parametrize(
    ("repo", "branch", "message"),
    [
        ("../x", "main", "owner"),
        ("a;b", "main", "owner/name"),
        ("acme/a;b", "main", "repository name"),
        ("acme/..", "main", "repository name"),
        ("owner/", "main", "repository name"),
        ("/demo", "main", "owner"),
        ("", "main", "owner/name"),
        ("acme/demo/extra", "main", "owner/name"),
        ("http://github.com/acme/demo", "main", "https"),
        ("https://github.com/acme/demo?x=1", "main", "https"),
        ("acme/demo", "..", "branch"),
        ("acme/demo", "a..b", "branch"),
        ("acme/demo", "-x", "branch"),
        ("acme/demo", "", "branch"),
        ("acme/demo", "a b", "branch"),
        ("acme/demo", "x.lock", "branch"),
        ("acme/demo", "x\n", "branch"),
        ("acme/demo", "a" * 256, "branch"),
    ],
)
def test_repo_ref_rejects_unsafe_input_clearly(repo, branch, message):
    with pytest.raises(ValueError, match=message):
        RepoRef.parse(repo, branch)


def test_a_url_with_credentials_is_refused_without_echoing_them():
    with pytest.raises(ValueError, match="credentials") as caught:
        RepoRef.parse("https://x-access-token:ghp_secret123@github.com/acme/demo")
    assert "ghp_secret123" not in str(caught.value)


@pytest.mark.parametrize(
    ("api_url", "graphql"),
    [
        ("https://api.github.com", "https://api.github.com/graphql"),
        ("https://ghe.example.org/api/v3/", "https://ghe.example.org/api/graphql"),
        ("http://127.0.0.1:9100", "http://127.0.0.1:9100/graphql"),
    ],
)
def test_graphql_url_follows_the_api_url(api_url, graphql):
    assert graphql_url_for(api_url) == graphql
    assert GitHubClient(api_url).graphql_url == graphql


def test_an_explicit_graphql_url_wins():
    client = GitHubClient("https://ghe.example.org/api/v3", graphql_url="https://gql.example.org/graphql")
    assert client.graphql_url == "https://gql.example.org/graphql"


def test_graphql_query_carries_user_input_only_in_variables():
    query, variables = GitHubClient._graphql_query([RepoRef("acme", "demo", "release/1.2")])
    assert "acme" not in query
    assert "release" not in query
    assert variables == {"o0": "acme", "n0": "demo", "b0": "refs/heads/release/1.2"}


# -- conditional REST requests --------------------------------------------------------------------------------
@pytest.mark.parametrize(("token", "counted_304"), [(TOKEN, 0), (None, 1)])
def test_unchanged_branch_is_answered_304_free_only_with_a_token(gh, token, counted_304):
    sha = gh.push("acme", "demo")
    client = client_for(gh, token)
    ref = RepoRef("acme", "demo")
    first = client.head_sha(ref)
    assert (first.sha, first.not_modified, first.error) == (sha, False, None)
    before = client.counted_requests
    second = client.head_sha(ref)
    assert (second.sha, second.not_modified) == (sha, True)
    assert client.counted_requests - before == counted_304
    assert gh.counted() == client.counted_requests
    assert [r.status for r in gh.requests] == [200, 304]
    assert gh.requests[1].headers["If-None-Match"] == f'"{sha}"'
    assert gh.requests[0].headers["Accept"] == "application/vnd.github.sha"
    assert gh.requests[0].headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert gh.requests[0].authenticated is (token is not None)


def test_a_push_is_detected_and_a_force_push_returns_exactly_the_branch_head(gh):
    older = gh.push("acme", "demo", "release/1.2")
    client = client_for(gh)
    ref = RepoRef("acme", "demo", "release/1.2")
    assert client.head_sha(ref).sha == older
    newer = gh.push("acme", "demo", "release/1.2")
    after_push = client.head_sha(ref)
    assert (after_push.sha, after_push.not_modified) == (newer, False)
    gh.force_push("acme", "demo", "release/1.2", sha=older)
    after_force = client.head_sha(ref)
    assert (after_force.sha, after_force.not_modified) == (older, False)
    assert client.head_sha(ref).not_modified


@pytest.mark.parametrize(("repo", "status"), [("acme/demo", 422), ("acme/missing", 404)])
def test_a_missing_branch_or_repository_raises_branch_not_found(gh, repo, status):
    gh.push("acme", "demo", "other")
    with pytest.raises(BranchNotFoundError, match="branch not found"):
        client_for(gh).head_sha(RepoRef.parse(repo))
    assert gh.requests[-1].status == status


# -- GraphQL --------------------------------------------------------------------------------------------------
def test_graphql_batches_150_repos_in_two_requests(gh):
    refs = [RepoRef("acme", f"app{i}") for i in range(150)]
    expected = {ref.key: gh.push(ref.owner, ref.name) for ref in refs}
    client = client_for(gh)
    heads = client.heads(refs)
    assert {key: result.sha for key, result in heads.items()} == expected
    assert [(r.method, r.path) for r in gh.requests] == [("POST", "/graphql"), ("POST", "/graphql")]
    assert client.counted_requests == gh.counted() == 2
    assert client.rate.resource == "graphql"


@pytest.mark.parametrize("token", [TOKEN, None])
def test_a_deleted_branch_is_an_error_for_that_repo_only(gh, token):
    gh.push("acme", "one")
    kept = gh.push("acme", "two")
    gh.delete_branch("acme", "one")
    heads = client_for(gh, token).heads([RepoRef("acme", "one"), RepoRef("acme", "two")])
    assert heads["acme/one@main"].sha is None
    assert "branch not found" in heads["acme/one@main"].error
    assert (heads["acme/two@main"].sha, heads["acme/two@main"].error) == (kept, None)


def test_graphql_tells_a_missing_repository_from_a_missing_branch(gh):
    gh.push("acme", "one", "dev")
    kept = gh.push("acme", "two")
    refs = [RepoRef("acme", "one"), RepoRef("acme", "nowhere"), RepoRef("acme", "two")]
    heads = client_for(gh).heads(refs)
    assert [(h.sha, h.error) for h in heads.values()] == [
        (None, "branch not found"),
        (None, "repository not found"),
        (kept, None),
    ]


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", json.dumps({"data": [1]})])
def test_malformed_graphql_is_refused(gh, body):
    gh.push("acme", "one")
    gh.push("acme", "two")
    gh.inject(status=200, body=body)
    with pytest.raises(MalformedResponseError):
        client_for(gh).heads([RepoRef("acme", "one"), RepoRef("acme", "two")])


def test_a_graphql_rate_limit_error_raises_rate_limited(gh):
    gh.push("acme", "one")
    gh.push("acme", "two")
    gh.inject(status=200, body=json.dumps({"errors": [{"type": "RATE_LIMITED", "message": "API rate limit"}]}))
    with pytest.raises(RateLimitedError):
        client_for(gh).heads([RepoRef("acme", "one"), RepoRef("acme", "two")])


# -- faults ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500},
        {"status": 502},
        {"status": 503},
        {"status": 504},
        {"delay": 0.8},  # longer than the read timeout below
    ],
)
def test_transient_failures_are_retried_with_exponential_jittered_backoff(gh, fault):
    sha = gh.push("acme", "demo")
    gh.inject(**fault)
    gh.inject(**fault)
    client = client_for(gh, read_timeout=0.5)
    assert client.head_sha(RepoRef("acme", "demo")).sha == sha
    delays = client.recorded_delays
    assert len(delays) == 2
    assert 0 <= delays[0] <= 0.5  # backoff_base * 2**0
    assert 0 <= delays[1] <= 1.0  # backoff_base * 2**1


def test_backoff_is_capped_and_jittered(gh):
    sha = gh.push("acme", "demo")
    for _ in range(6):
        gh.inject(status=503)
    client = client_for(gh, max_retries=6, backoff_base=10, backoff_max=4)
    assert client.head_sha(RepoRef("acme", "demo")).sha == sha
    delays = client.recorded_delays
    assert len(delays) == 6
    assert all(0 <= d <= 4 for d in delays)  # 10 * 2**n is capped at backoff_max
    assert len(set(delays)) > 1  # full jitter: not one fixed delay


def test_persistent_failure_gives_up_with_a_clear_error(gh):
    gh.push("acme", "demo")
    for _ in range(4):
        gh.inject(status=500)
    with pytest.raises(GitHubError, match=r"GET /repos/acme/demo/commits/heads/main: HTTP 500 after 4 attempts"):
        client_for(gh).head_sha(RepoRef("acme", "demo"))


def test_an_unreachable_api_is_retried_then_reported():
    client = GitHubClient("http://127.0.0.1:9", TOKEN, max_retries=2, sleep=lambda _: None, connect_timeout=0.5)
    with pytest.raises(GitHubError, match="ConnectionError after 3 attempts"):
        client.head_sha(RepoRef("acme", "demo"))


@pytest.mark.parametrize(
    ("status", "headers", "expected_wait"),
    [
        (429, {"retry-after": "2"}, 2),
        (429, {"retry-after": "120"}, 120),
        (403, {"retry-after": "30"}, 30),
        (429, {"retry-after": "+300 as an HTTP date"}, 300),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "+900"}, 900),
        (429, {}, 60),  # GitHub: without a hint, wait at least a minute
    ],
)
def test_rate_limits_raise_with_the_time_to_retry_without_sleeping(gh, status, headers, expected_wait):
    # "+N" stands for "N seconds from now", computed when the test runs.
    def resolve(value: str) -> str:
        if value.endswith("as an HTTP date"):
            return formatdate(time.time() + int(value.split()[0][1:]), usegmt=True)
        return str(int(time.time()) + int(value[1:])) if value.startswith("+") else value

    gh.push("acme", "demo")
    gh.inject(status=status, headers={k: resolve(v) for k, v in headers.items()})
    client = client_for(gh)
    with pytest.raises(RateLimitedError) as caught:
        client.head_sha(RepoRef("acme", "demo"))
    assert caught.value.retry_at == pytest.approx(time.time() + expected_wait, abs=3)
    assert client.recorded_delays == []  # the caller decides when to come back


@pytest.mark.parametrize("status", [403, 429])
def test_a_refusal_without_a_reset_time_is_the_secondary_limit_a_minute_at_least(gh, status):
    """GitHub: a 403 or 429 without retry-after and with budget left is its secondary limit; wait >= 60 s."""
    gh.push("acme", "demo")
    gh.inject(status=status, body='{"message": "You have exceeded a secondary rate limit."}')
    client = client_for(gh, None)
    with pytest.raises(RateLimitedError) as caught:
        client.heads([RepoRef("acme", "demo")])
    assert caught.value.secondary
    assert "rate limited (secondary" in str(caught.value)
    assert caught.value.retry_at >= time.time() + 59
    assert client.recorded_delays == []  # not retried at once: the caller waits


def test_a_refused_token_stops_the_whole_rest_cycle(gh):
    """A 401 is about every repository: heads() raises instead of reporting it per repo (and going on)."""
    for name in ("one", "two"):
        gh.push("acme", name)
    client = client_for(gh, "ghp_wrongTokenForTheFake000000000000000")
    with pytest.raises(AuthenticationError, match="the token was refused"):
        client.heads([RepoRef("acme", "one")])
    assert [r.status for r in gh.requests] == [401]


def test_heads_lets_a_rate_limit_through(gh):
    gh.push("acme", "demo")
    gh.inject(status=429, headers={"retry-after": "5"})
    with pytest.raises(RateLimitedError):
        client_for(gh, None).heads([RepoRef("acme", "demo")])


def test_the_unauthenticated_budget_runs_out_after_60_requests(gh):
    gh.push("acme", "demo")
    client = client_for(gh, None)
    ref = RepoRef("acme", "demo")
    for _ in range(60):
        client.head_sha(ref)
    assert client.budget_left() == 0
    with pytest.raises(RateLimitedError) as caught:
        client.head_sha(ref)
    assert caught.value.retry_at == client.rate.reset
    assert 0 < client.seconds_until_reset() <= 3600


@pytest.mark.parametrize("body", ["not a sha", "<html>", "z" * 40, "A" * 40, ""])
def test_a_malformed_answer_is_refused(gh, body):
    gh.push("acme", "demo")
    gh.inject(status=200, body=body)
    with pytest.raises(MalformedResponseError):
        client_for(gh).head_sha(RepoRef("acme", "demo"))


def test_rate_limit_state_and_poll_interval_hint_are_tracked(gh):
    gh.push("acme", "demo")
    gh.set_poll_interval(60)
    client = client_for(gh, None)
    client.head_sha(RepoRef("acme", "demo"))
    assert (client.rate.limit, client.rate.used, client.rate.resource) == (60, 1, "core")
    assert client.budget_left() == 59
    assert 0 < client.seconds_until_reset() <= 3600
    assert client.poll_interval_hint == 60


def test_the_poll_interval_hint_expires_when_github_stops_sending_it(gh):
    gh.push("acme", "demo")
    gh.set_poll_interval(300)
    client = client_for(gh)
    client.head_sha(RepoRef("acme", "demo"))
    assert client.poll_interval_hint == 300
    gh.set_poll_interval(None)
    client.head_sha(RepoRef("acme", "demo"))
    assert client.poll_interval_hint is None


@pytest.mark.parametrize("no_length", [False, True])
def test_a_huge_answer_is_refused_after_a_megabyte_without_reading_it_all(gh, no_length):
    """50 MB (with or without Content-Length): refused, and the client never holds more than about 1 MB."""
    gh.push("acme", "demo")
    gh.inject(status=200, size=50 * 2**20, no_length=no_length)
    client = client_for(gh, max_retries=0)
    tracemalloc.start()
    try:
        with pytest.raises(MalformedResponseError, match="an answer of"):
            client.head_sha(RepoRef("acme", "demo"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak
    gh.faults.clear()
    assert client.head_sha(RepoRef("acme", "demo")).sha  # and the next request is answered normally


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("{}", MalformedResponseError),
        ('{"data": null}', MalformedResponseError),
        ('{"errors": [{"message": "Something went wrong"}]}', GitHubError),
    ],
)
def test_a_graphql_answer_without_data_is_an_error_not_missing_repositories(gh, body, error):
    for name in ("one", "two"):
        gh.push("acme", name)
    gh.inject(status=200, body=body)
    with pytest.raises(error):
        client_for(gh, max_retries=0).heads([RepoRef("acme", "one"), RepoRef("acme", "two")])


@pytest.mark.parametrize("token", [TOKEN, None])
def test_a_deleted_branch_or_repository_is_marked_missing(gh, token):
    gh.push("acme", "gone")
    gh.delete_branch("acme", "gone")
    gh.push("acme", "here")
    repos = [RepoRef("acme", "gone"), RepoRef("acme", "nowhere"), RepoRef("acme", "here")]
    heads = client_for(gh, token).heads(repos)
    assert [heads[r.key].missing for r in repos] == [True, True, False]


# -- secrecy --------------------------------------------------------------------------------------------------
def test_the_token_never_shows_in_repr_errors_or_a_given_session(gh):
    secret = "ghp_thisMustNeverBeShown0000000000000"
    session = requests.Session()
    client = GitHubClient(gh.url, secret, max_retries=0, sleep=lambda _: None, session=session)
    assert secret not in repr(client)
    assert "auth=token" in repr(client)
    with pytest.raises(GitHubError) as caught:  # the fake refuses this token: 401
        client.head_sha(RepoRef("acme", "demo", "main"))
    assert secret not in str(caught.value)
    assert "Authorization" not in session.headers
    unreachable = GitHubClient("http://127.0.0.1:9", secret, max_retries=0, connect_timeout=0.5)
    with pytest.raises(GitHubError) as caught:
        unreachable.heads([RepoRef("acme", "one"), RepoRef("acme", "two")])
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value)


@pytest.mark.parametrize("token", ["ghp_secretPart\nmore", "ghp_secretPart\rmore", "ghp_secret Part", "ghp_secr\x00"])
def test_a_token_that_cannot_be_a_header_is_refused_without_quoting_it(token):
    with pytest.raises(ValueError, match="a line break") as caught:
        GitHubClient("https://api.github.com", token)
    assert "secret" not in str(caught.value)


def test_an_exception_whose_text_quotes_a_header_is_reported_by_its_type_alone(gh):
    """requests' InvalidHeader repeats the header's value (with a token: the token)."""
    gh.push("acme", "demo")
    client = client_for(gh, user_agent="agent\nghp_secretInAHeader")
    with pytest.raises(GitHubError) as caught:
        client.head_sha(RepoRef("acme", "demo"))
    assert "InvalidHeader" in str(caught.value)
    assert "ghp_secret" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


# -- the fake itself, from another process ---------------------------------------------------------------------
def test_the_fake_runs_as_a_process_and_rereads_its_state_file(tmp_path):
    state = tmp_path / "state.json"

    def write_state(repos: dict) -> None:
        staged = tmp_path / "state.json.tmp"
        staged.write_text(json.dumps({"repos": repos}))
        os.replace(staged, state)  # what another process does: write, then rename over

    first = new_sha()
    write_state({"acme/demo": {"main": first}})
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_github.server", "--port", "0", "--state", str(state)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()
        client = GitHubClient(url, "test-token", sleep=lambda _: None)
        ref = RepoRef("acme", "demo")
        assert client.head_sha(ref).sha == first
        second = new_sha()
        write_state({"acme/demo": {"main": second}})
        assert client.head_sha(ref).sha == second
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stdout.close()
