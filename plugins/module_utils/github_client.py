"""GitHub client for change detection: head SHAs of branches at near-zero rate-limit cost.

Shared by the github_repo_poll module and the github-repo-monitor daemon, so it imports nothing from
Ansible: standard library and requests only (the daemon imports it as a plain `github_client`).

Cost model (GitHub's documentation): a conditional REST request answered 304 does not count against the
primary rate limit when it is authenticated; one GraphQL query reads the heads of up to 100 repositories.

What it never does: put the token anywhere but the Authorization header (an error names the exception type,
never its text, which may quote a header), read more than `max_body` bytes of an answer, or ask again
before a rate limit says it may (the caller waits out `RateLimitedError.retry_at`).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlsplit

try:
    import requests
except ImportError as exc:  # github_repo_poll then fails with missing_required_lib; the daemon's host has it
    requests = None  # type: ignore[assignment]
    REQUESTS_IMPORT_ERROR: ImportError | None = exc
else:
    REQUESTS_IMPORT_ERROR = None

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
# One rule for owners and repository names: starts alphanumeric, so "..", "../x" and "" never pass.
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,99})$")
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
_TRANSIENT_ERRORS = (
    (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) if requests else ()
)
GRAPHQL_BATCH = 100
API_VERSION = "2022-11-28"
# When GitHub says "rate limited" without saying until when, it asks to wait at least a minute.
_DEFAULT_RATE_LIMIT_WAIT = 60.0
# A head is 40 bytes, a GraphQL answer for 100 repos about 10 kB: anything near this is not GitHub's answer.
MAX_BODY = 1 << 20
_CHUNK = 65536
# What may stand in an Authorization header: visible ASCII, no space, no line break.
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")


def valid_token(token: str) -> bool:
    """Whether `token` can go into a header as it is (a line break in it would end up in an error text)."""
    return isinstance(token, str) and _TOKEN_RE.fullmatch(token) is not None


class GitHubError(Exception):
    """The API could not answer usefully (after retries)."""


class RateLimitedError(GitHubError):
    """The budget is used up; `retry_at` is when to ask again (epoch seconds). `secondary`: GitHub's secondary
    limit (403/429 without a reset time), after which GitHub asks for a minute's wait, then exponentially more."""

    def __init__(self, message: str, retry_at: float, *, secondary: bool = False) -> None:
        super().__init__(message)
        self.retry_at = retry_at
        self.secondary = secondary


class AuthenticationError(GitHubError):
    """HTTP 401: the token was refused (wrong, expired or revoked)."""


class BranchNotFoundError(GitHubError):
    """The repository or branch does not exist (or is not visible to the token)."""


class MalformedResponseError(GitHubError):
    """The API answered something that is not what it documents."""


def valid_branch(branch: str) -> bool:
    """git check-ref-format rules that matter for a branch name in a URL or a GraphQL variable."""
    return (
        isinstance(branch, str)
        and 0 < len(branch) <= 255
        and not branch.startswith(("-", "/", "."))
        and not branch.endswith(("/", ".", ".lock"))
        and ".." not in branch
        and "//" not in branch
        and "/." not in branch
        and "@{" not in branch
        and branch != "@"
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
        if not isinstance(self.owner, str) or not _NAME_RE.match(self.owner):
            raise ValueError(f"repository owner {self.owner!r} is not a valid GitHub account name")
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(f"repository name {self.name!r} is not a valid GitHub repository name")
        if not valid_branch(self.branch):
            raise ValueError(f"branch {self.branch!r} is not a valid branch name")

    @property
    def key(self) -> str:
        return f"{self.owner}/{self.name}@{self.branch}"

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @classmethod
    def parse(cls, repo: str, branch: str = "main") -> RepoRef:
        """Accept `owner/name`, `https://github.com/owner/name(.git)` or the same on a GHES host."""
        if not isinstance(repo, str):
            raise ValueError(f"repo must be a string, not {type(repo).__name__}")
        path = repo
        if "://" in repo:
            parts = urlsplit(repo)
            if parts.username or parts.password:
                # Never echo it: the URL carries a credential.
                raise ValueError("repo: a URL with credentials in it is refused; give the token separately")
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


RepoT = TypeVar("RepoT")


@dataclass
class HeadResult(Generic[RepoT]):
    """The head of one branch, from GitHub (repo: RepoRef) or from a plain git server (repo:
    _git_source.GitRemote): `sha` is the current head when known (also when answered 304)."""

    repo: RepoT
    sha: str | None
    not_modified: bool = False
    error: str | None = None
    missing: bool = False  # the repository or branch does not exist (or is not visible)
    kind: str | None = None  # git source: the error's class (GitSourceError.kind) when error is set
    elapsed: float = 0.0  # git source: seconds the ls-remote took


def graphql_url_for(api_url: str) -> str:
    """GitHub.com: api.github.com/graphql; GHES: https://HOST/api/v3 -> https://HOST/api/graphql."""
    base = api_url.rstrip("/")
    if base.endswith("/api/v3"):
        return base[: -len("/v3")] + "/graphql"
    return base + "/graphql"


class GitHubClient:
    """Reads branch heads with conditional REST requests or batched GraphQL, retrying with backoff."""

    def __init__(
        self,
        api_url: str = "https://api.github.com",
        token: str | None = None,
        *,
        graphql_url: str | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        max_retries: int = 3,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        session: requests.Session | None = None,
        user_agent: str = "secure-streamlit-github-repo-monitor",
        max_body: int = MAX_BODY,
        before_request: Callable[[], None] | None = None,
    ) -> None:
        """`before_request` is called before each request is sent; it may raise RateLimitedError (a budget the
        caller keeps). A token that could not go into a header is refused with ValueError (not quoted)."""
        if token and not valid_token(token):
            raise ValueError("the token holds a line break, a space or another character a token cannot have")
        self.api_url = api_url.rstrip("/")
        self.graphql_url = graphql_url or graphql_url_for(self.api_url)
        self._token = token or None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.sleep = sleep
        self.clock = clock
        self.session = session or requests.Session()
        self.user_agent = user_agent
        self.max_body = max_body
        self.before_request = before_request
        self.rate = RateLimit()
        self.counted_requests = 0
        self.poll_interval_hint: int | None = None
        self._cache: dict[str, tuple[str, str]] = {}  # repo.key -> (etag, sha) of the last 200

    def __repr__(self) -> str:
        auth = "token" if self._token else "anonymous"
        return f"GitHubClient(api_url={self.api_url!r}, graphql_url={self.graphql_url!r}, auth={auth})"

    @property
    def authenticated(self) -> bool:
        return self._token is not None

    # -- budget ---------------------------------------------------------------------------------------
    def budget_left(self) -> int | None:
        return self.rate.remaining

    def seconds_until_reset(self) -> float | None:
        return None if self.rate.reset is None else max(0.0, self.rate.reset - self.clock())

    # -- requests -------------------------------------------------------------------------------------
    def _backoff(self, attempt: int) -> float:
        # Full jitter spreads the retries of many hosts instead of synchronising them; not security related.
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))  # noqa: S311

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        # Per request, not on the session: a session handed in by the caller keeps no credential.
        # Identity encoding: a compressed answer could grow past max_body only once decompressed.
        headers = {
            "User-Agent": self.user_agent,
            "X-GitHub-Api-Version": API_VERSION,
            "Accept-Encoding": "identity",
            **extra,
        }
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _request(self, method: str, url: str, headers: dict[str, str], **kwargs: Any) -> requests.Response:
        last_problem = ""
        path = urlsplit(url).path
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.sleep(self._backoff(attempt - 1))
            if self.before_request is not None:
                self.before_request()
            try:
                response = self.session.request(
                    method,
                    url,
                    headers=self._headers(headers),
                    timeout=(self.connect_timeout, self.read_timeout),
                    stream=True,
                    **kwargs,
                )
                self._account(response)
                try:
                    self._read_body(response, path)
                finally:
                    response.close()
            except _TRANSIENT_ERRORS as exc:
                last_problem = type(exc).__name__  # the name only: the message may quote the request
                continue
            except requests.RequestException as exc:
                # Not retried, and never quoted: InvalidHeader, for one, repeats the header's value.
                raise GitHubError(f"{method} {path}: {type(exc).__name__}") from None
            if response.status_code in _RETRY_STATUSES:
                last_problem = f"HTTP {response.status_code}"
                continue
            if response.status_code == 401:
                what = "the token was refused" if self._token else "authentication required"
                raise AuthenticationError(f"HTTP 401 from {path}: {what}")
            self._raise_if_rate_limited(response, path)
            return response
        raise GitHubError(f"{method} {path}: {last_problem} after {self.max_retries + 1} attempts")

    def _read_body(self, response: requests.Response, path: str) -> None:
        """Read the body into the response, at most max_body bytes and within a few read timeouts in all."""
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise MalformedResponseError(f"{path}: a {encoding[:20]!r}-encoded answer although none was asked")
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.max_body:
            raise MalformedResponseError(f"{path}: an answer of {int(length)} bytes (more than {self.max_body})")
        deadline = time.monotonic() + 3 * self.read_timeout
        body = bytearray()
        for chunk in response.iter_content(_CHUNK):
            body += chunk
            if len(body) > self.max_body:
                raise MalformedResponseError(f"{path}: an answer of more than {self.max_body} bytes")
            if time.monotonic() > deadline:
                raise requests.Timeout("the answer took too long")
        response._content = bytes(body)

    def _account(self, response: requests.Response) -> None:
        self.rate.update(response.headers)
        # GitHub: a conditional request answered 304 is free only when it is authorized.
        if not (response.status_code == 304 and self._token):
            self.counted_requests += 1
        # The hint holds while GitHub sends it: an answer without it lifts it (a server error says nothing).
        if response.status_code < 500:
            hint = response.headers.get("x-poll-interval", "")
            self.poll_interval_hint = int(hint) if hint.isdigit() and int(hint) > 0 else None

    def _retry_after(self, value: str) -> float | None:
        if value.isdigit():
            return self.clock() + int(value)
        try:  # the HTTP-date form
            return parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None

    def _raise_if_rate_limited(self, response: requests.Response, path: str) -> None:
        status = response.status_code
        if status not in (403, 429):
            return
        retry_after = response.headers.get("retry-after")
        retry_at = self._retry_after(retry_after) if retry_after else None
        if retry_at is None and response.headers.get("x-ratelimit-remaining") == "0":
            retry_at = self.rate.reset if self.rate.reset is not None else self.clock() + _DEFAULT_RATE_LIMIT_WAIT
        if retry_at is None:
            # Neither a reset time nor a spent budget: GitHub's secondary limit (403 or 429). Its guidance:
            # wait at least a minute, then exponentially longer while it goes on (the caller counts).
            retry_at = self.clock() + _DEFAULT_RATE_LIMIT_WAIT
            raise RateLimitedError(f"rate limited (secondary, HTTP {status} from {path})", retry_at, secondary=True)
        raise RateLimitedError(f"rate limited (HTTP {status}) until {retry_at:.0f}", retry_at)

    # -- REST -----------------------------------------------------------------------------------------
    def head_sha(self, repo: RepoRef) -> HeadResult[RepoRef]:
        """The branch head with a conditional request: 304 (free when authenticated) if unchanged."""
        # heads/BRANCH, not BRANCH alone: a tag or a SHA-like name must not shadow the branch.
        url = f"{self.api_url}/repos/{repo.owner}/{repo.name}/commits/heads/{quote(repo.branch, safe='/')}"
        headers = {"Accept": "application/vnd.github.sha"}
        cached = self._cache.get(repo.key)
        if cached:
            headers["If-None-Match"] = cached[0]
        response = self._request("GET", url, headers)
        if response.status_code == 304 and cached:
            return HeadResult(repo, cached[1], not_modified=True)
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
            self._cache[repo.key] = (etag, sha)
        return HeadResult(repo, sha)

    # -- GraphQL --------------------------------------------------------------------------------------
    @staticmethod
    def _graphql_query(repos: list[RepoRef]) -> tuple[str, dict[str, str]]:
        # User input goes only into variables; the query text is made of aliases and variable names.
        declarations, selections, variables = [], [], {}
        for i, repo in enumerate(repos):
            declarations.append(f"$o{i}: String!, $n{i}: String!, $b{i}: String!")
            selections.append(
                f"r{i}: repository(owner: $o{i}, name: $n{i}) {{ ref(qualifiedName: $b{i}) {{ target {{ oid }} }} }}"
            )
            variables.update({f"o{i}": repo.owner, f"n{i}": repo.name, f"b{i}": f"refs/heads/{repo.branch}"})
        return f"query({', '.join(declarations)}) {{ {' '.join(selections)} }}", variables

    def _graphql_heads(self, repos: list[RepoRef]) -> dict[str, HeadResult[RepoRef]]:
        query, variables = self._graphql_query(repos)
        response = self._request(
            "POST", self.graphql_url, {"Accept": "application/json"}, json={"query": query, "variables": variables}
        )
        if response.status_code != 200:
            raise GitHubError(f"GraphQL: HTTP {response.status_code}")
        try:
            payload = response.json()
        except ValueError as exc:
            raise MalformedResponseError("GraphQL: the answer is not JSON") from exc
        if not isinstance(payload, dict):
            raise MalformedResponseError("GraphQL: the answer is not a JSON object")
        data = payload.get("data")
        errors = payload.get("errors") or []
        if not isinstance(data, dict | None) or not isinstance(errors, list):
            raise MalformedResponseError("GraphQL: unexpected answer shape")
        errors = [e for e in errors if isinstance(e, dict)]
        if any(e.get("type") == "RATE_LIMITED" for e in errors):
            retry_at = self.rate.reset if self.rate.reset is not None else self.clock() + _DEFAULT_RATE_LIMIT_WAIT
            raise RateLimitedError(f"rate limited (GraphQL) until {retry_at:.0f}", retry_at)
        if data is None and errors:
            raise GitHubError("GraphQL: the query failed: " + str(errors[0].get("message", ""))[:200])
        if data is None:
            # Not "every repository is missing": the answer says nothing about any of them.
            raise MalformedResponseError("GraphQL: the answer has no data")
        alias_errors = {str(e["path"][0]): e for e in errors if isinstance(e.get("path"), list) and e["path"]}

        results: dict[str, HeadResult[RepoRef]] = {}
        for i, repo in enumerate(repos):
            alias = f"r{i}"
            node = data.get(alias)
            error = alias_errors.get(alias)
            if not isinstance(node, dict):
                if error is not None and error.get("type") == "NOT_FOUND":
                    results[repo.key] = HeadResult(repo, None, error="repository not found", missing=True)
                elif error is not None:
                    reason = "GraphQL error: " + str(error.get("message", ""))[:200]
                    results[repo.key] = HeadResult(repo, None, error=reason)
                else:
                    results[repo.key] = HeadResult(repo, None, error="no answer for this repository")
                continue
            ref = node.get("ref")
            target = ref.get("target") if isinstance(ref, dict) else None
            oid = target.get("oid") if isinstance(target, dict) else None
            if ref is None:
                results[repo.key] = HeadResult(repo, None, error="branch not found", missing=True)
            elif not isinstance(oid, str) or not SHA_RE.match(oid):
                results[repo.key] = HeadResult(repo, None, error="the answer is not a commit SHA")
            else:
                results[repo.key] = HeadResult(repo, oid)
        return results

    def heads(self, repos: list[RepoRef]) -> dict[str, HeadResult[RepoRef]]:
        """Heads of many branches: GraphQL batches with a token, else one conditional request each."""
        results: dict[str, HeadResult[RepoRef]] = {}
        if self._token and len(repos) > 1:
            for start in range(0, len(repos), GRAPHQL_BATCH):
                results.update(self._graphql_heads(repos[start : start + GRAPHQL_BATCH]))
            return results
        for repo in repos:
            try:
                results[repo.key] = self.head_sha(repo)
            except (RateLimitedError, AuthenticationError):
                raise  # about every repository, not this one
            except GitHubError as exc:
                # The result names the repository already.
                missing = isinstance(exc, BranchNotFoundError)
                reason = str(exc).removeprefix(f"{repo.key}: ")
                results[repo.key] = HeadResult(repo, None, error=reason, missing=missing)
        return results
