"""GitHub client for change detection: head SHAs of branches at near-zero rate-limit cost.

Shared by the github_repo_poll module and the github-repo-monitor daemon, so it imports nothing from
Ansible: standard library and requests only (the daemon imports it as a plain `github_client`).

Cost model (GitHub's documentation): a conditional REST request answered 304 does not count against the
primary rate limit when it is authenticated; one GraphQL query reads the heads of up to 100 repositories.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_OWNER_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
GRAPHQL_BATCH = 100


class GitHubError(Exception):
    """The API could not answer usefully (after retries)."""


class RateLimitedError(GitHubError):
    """The budget is used up; `retry_at` is when to ask again (epoch seconds)."""

    def __init__(self, message: str, retry_at: float) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class BranchNotFoundError(GitHubError):
    """The repository or branch does not exist (or is not visible to the token)."""


class MalformedResponseError(GitHubError):
    """The API answered something that is not what it documents."""


def _valid_branch(branch: str) -> bool:
    # git check-ref-format rules that matter for a branch name in a URL or a GraphQL variable.
    return (
        0 < len(branch) <= 255
        and not branch.startswith(("-", "/"))
        and not branch.endswith(("/", ".", ".lock"))
        and ".." not in branch
        and "//" not in branch
        and "@{" not in branch
        and not any(c in branch for c in " ~^:?*[\\")
        and all(32 < ord(c) < 127 for c in branch)
    )


@dataclass(frozen=True)
class RepoRef:
    """One branch of one repository."""

    owner: str
    name: str
    branch: str = "main"

    def __post_init__(self) -> None:
        if not _OWNER_RE.match(self.owner):
            raise ValueError(f"repository owner {self.owner!r} is not a valid GitHub account name")
        if not _NAME_RE.match(self.name) or self.name in {".", ".."}:
            raise ValueError(f"repository name {self.name!r} is not a valid GitHub repository name")
        if not _valid_branch(self.branch):
            raise ValueError(f"branch {self.branch!r} is not a valid branch name")

    @property
    def key(self) -> str:
        return f"{self.owner}/{self.name}@{self.branch}"

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @classmethod
    def parse(cls, repo: str, branch: str = "main") -> RepoRef:
        """Accept `owner/name`, `https://github.com/owner/name(.git)` or the same on another host."""
        path = repo
        if "://" in repo:
            parts = urlsplit(repo)
            if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
                raise ValueError(f"repo {repo!r}: a URL must be https://HOST/owner/name")
            path = parts.path.strip("/")
        path = path.removesuffix(".git")
        pieces = path.split("/")
        if len(pieces) != 2:
            raise ValueError(f"repo {repo!r} must be owner/name or https://HOST/owner/name")
        return cls(pieces[0], pieces[1], branch)


@dataclass
class RateLimit:
    """The primary rate limit as the last response reported it."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    used: int | None = None
    resource: str | None = None

    def update(self, headers: requests.structures.CaseInsensitiveDict[str]) -> None:
        def number(name: str) -> int | None:
            value = headers.get(name)
            return int(value) if value is not None and value.isdigit() else None

        if "x-ratelimit-remaining" in headers:
            self.limit = number("x-ratelimit-limit")
            self.remaining = number("x-ratelimit-remaining")
            reset = number("x-ratelimit-reset")
            self.reset = float(reset) if reset is not None else None
            self.used = number("x-ratelimit-used")
            self.resource = headers.get("x-ratelimit-resource")

    def as_dict(self) -> dict[str, int | float | str | None]:
        return {
            "limit": self.limit,
            "remaining": self.remaining,
            "reset": self.reset,
            "used": self.used,
            "resource": self.resource,
        }


@dataclass
class HeadResult:
    """The head of one branch: `sha` is the current head when known (also when answered 304)."""

    repo: RepoRef
    sha: str | None
    not_modified: bool = False
    error: str | None = None


@dataclass
class _Cached:
    etag: str
    sha: str


def graphql_url_for(api_url: str) -> str:
    """GitHub.com: api.github.com/graphql; Enterprise Server: https://HOST/api/v3 -> https://HOST/api/graphql."""
    base = api_url.rstrip("/")
    if base.endswith("/api/v3"):
        return base[: -len("/v3")] + "/graphql"
    return base + "/graphql"


@dataclass
class GitHubClient:
    """Reads branch heads with conditional REST requests or batched GraphQL, retrying with backoff."""

    api_url: str = "https://api.github.com"
    token: str | None = field(default=None, repr=False)
    graphql_url: str | None = None
    connect_timeout: float = 3.05
    read_timeout: float = 10.0
    max_retries: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.time, repr=False)
    session: requests.Session | None = field(default=None, repr=False)
    user_agent: str = "secure-streamlit-github-repo-monitor"
    rate: RateLimit = field(default_factory=RateLimit)
    counted_requests: int = 0
    poll_interval_hint: int | None = None
    _cache: dict[str, _Cached] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.api_url = self.api_url.rstrip("/")
        self.graphql_url = self.graphql_url or graphql_url_for(self.api_url)
        if self.session is None:
            self.session = requests.Session()
        self.session.headers.update(
            {"User-Agent": self.user_agent, "X-GitHub-Api-Version": "2022-11-28"},
        )
        if self.token:
            self.session.headers["Authorization"] = f"Bearer {self.token}"

    # -- budget ---------------------------------------------------------------------------------------
    def budget_left(self) -> int | None:
        return self.rate.remaining

    def seconds_until_reset(self) -> float | None:
        return None if self.rate.reset is None else max(0.0, self.rate.reset - self.clock())

    # -- requests -------------------------------------------------------------------------------------
    def _backoff(self, attempt: int) -> float:
        # Full jitter: spreads retries of many hosts instead of synchronising them.
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))  # noqa: S311

    def _request(self, method: str, url: str, **kwargs: object) -> requests.Response:
        assert self.session is not None
        last_problem = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.sleep(self._backoff(attempt - 1))
            try:
                response = self.session.request(
                    method, url, timeout=(self.connect_timeout, self.read_timeout), **kwargs
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                last_problem = type(exc).__name__
                continue
            self._account(response)
            if response.status_code in _RETRY_STATUSES:
                last_problem = f"HTTP {response.status_code}"
                continue
            self._raise_if_rate_limited(response)
            return response
        raise GitHubError(f"{method} {urlsplit(url).path}: {last_problem} after {self.max_retries + 1} attempts")

    def _account(self, response: requests.Response) -> None:
        self.rate.update(response.headers)
        if not (response.status_code == 304 and self.token):
            self.counted_requests += 1
        hint = response.headers.get("x-poll-interval")
        if hint and hint.isdigit():
            self.poll_interval_hint = int(hint)

    def _raise_if_rate_limited(self, response: requests.Response) -> None:
        if response.status_code not in (403, 429):
            return
        retry_after = response.headers.get("retry-after")
        if retry_after and retry_after.isdigit():
            retry_at = self.clock() + int(retry_after)
        elif response.headers.get("x-ratelimit-remaining") == "0" and self.rate.reset is not None:
            retry_at = self.rate.reset
        elif response.status_code == 429:
            retry_at = self.clock() + 60
        else:
            raise GitHubError(f"HTTP 403 from {urlsplit(response.url).path}: access denied")
        raise RateLimitedError(f"rate limited (HTTP {response.status_code}) until {retry_at:.0f}", retry_at)

    # -- REST -----------------------------------------------------------------------------------------
    def head_sha(self, repo: RepoRef) -> HeadResult:
        """The branch head with a conditional request: 304 (free when authenticated) if unchanged."""
        url = f"{self.api_url}/repos/{repo.owner}/{repo.name}/commits/{requests.utils.quote(repo.branch, safe='')}"
        headers = {"Accept": "application/vnd.github.sha"}
        cached = self._cache.get(repo.key)
        if cached:
            headers["If-None-Match"] = cached.etag
        response = self._request("GET", url, headers=headers)
        if response.status_code == 304 and cached:
            return HeadResult(repo, cached.sha, not_modified=True)
        if response.status_code in (404, 422):
            self._cache.pop(repo.key, None)
            raise BranchNotFoundError(f"{repo.key}: branch not found")
        if response.status_code != 200:
            raise GitHubError(f"{repo.key}: HTTP {response.status_code}")
        sha = response.text.strip()
        if not SHA_RE.match(sha):
            raise MalformedResponseError(f"{repo.key}: the answer is not a commit SHA")
        etag = response.headers.get("ETag")
        if etag:
            self._cache[repo.key] = _Cached(etag, sha)
        return HeadResult(repo, sha)

    # -- GraphQL --------------------------------------------------------------------------------------
    def _graphql_heads(self, repos: list[RepoRef]) -> dict[str, HeadResult]:
        declarations, selections, variables = [], [], {}
        for i, repo in enumerate(repos):
            declarations.append(f"$o{i}: String!, $n{i}: String!, $b{i}: String!")
            selections.append(
                f"r{i}: repository(owner: $o{i}, name: $n{i}) {{ ref(qualifiedName: $b{i}) {{ target {{ oid }} }} }}"
            )
            variables.update({f"o{i}": repo.owner, f"n{i}": repo.name, f"b{i}": f"refs/heads/{repo.branch}"})
        query = f"query({', '.join(declarations)}) {{ {' '.join(selections)} }}"
        assert self.graphql_url is not None
        response = self._request("POST", self.graphql_url, json={"query": query, "variables": variables})
        if response.status_code != 200:
            raise GitHubError(f"GraphQL: HTTP {response.status_code}")
        try:
            payload = response.json()
            data = payload.get("data") or {}
            errors = payload.get("errors") or []
        except (ValueError, AttributeError) as exc:
            raise MalformedResponseError("GraphQL: the answer is not JSON") from exc
        if not isinstance(data, dict) or not isinstance(errors, list):
            raise MalformedResponseError("GraphQL: unexpected answer shape")
        failed_aliases = {str(e.get("path", [""])[0]) for e in errors if isinstance(e, dict) and e.get("path")}
        results: dict[str, HeadResult] = {}
        for i, repo in enumerate(repos):
            alias = f"r{i}"
            node = data.get(alias)
            oid = None
            try:
                oid = node["ref"]["target"]["oid"] if node and node.get("ref") else None
            except (TypeError, KeyError):
                oid = None
            if oid is not None and not SHA_RE.match(str(oid)):
                results[repo.key] = HeadResult(repo, None, error="the answer is not a commit SHA")
            elif oid is None:
                reason = "repository not found" if alias in failed_aliases or node is None else "branch not found"
                results[repo.key] = HeadResult(repo, None, error=reason)
            else:
                results[repo.key] = HeadResult(repo, oid)
        return results

    def heads(self, repos: list[RepoRef]) -> dict[str, HeadResult]:
        """Heads of many branches: GraphQL batches with a token, else one conditional request each."""
        if self.token and len(repos) > 1:
            results: dict[str, HeadResult] = {}
            for start in range(0, len(repos), GRAPHQL_BATCH):
                results.update(self._graphql_heads(repos[start : start + GRAPHQL_BATCH]))
            return results
        results = {}
        for repo in repos:
            try:
                results[repo.key] = self.head_sha(repo)
            except RateLimitedError:
                raise
            except GitHubError as exc:
                results[repo.key] = HeadResult(repo, None, error=str(exc))
        return results
