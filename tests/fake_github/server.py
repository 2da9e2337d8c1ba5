"""A local fake of the GitHub API over real HTTP, for the tests and the benchmarks.

What it serves (the parts change detection uses):
- REST `GET /repos/{owner}/{name}/commits/{branch}` with `Accept: application/vnd.github.sha`: the head SHA
  as text, `ETag: "<sha>"`, 304 when `If-None-Match` matches;
- GraphQL `POST /graphql`: the aliased `repository(owner:, name:) { ref(qualifiedName:) { target { oid } } }`
  query shape, answered from its variables;
- rate-limit headers with GitHub's budgets per hour (60 without a token, 5,000 with; REST "core" and
  "graphql" separately); an authenticated 304 does not count, everything else does; past the budget the
  answer is 403 with `x-ratelimit-remaining: 0`, as GitHub does;
- GitHub App installation tokens: `POST /app/installations/{id}/access_tokens` with `Authorization: Bearer
  <JWT>`; the JWT's RS256 signature is checked with the public key of the App it names (`add_app`), its
  iat/exp against the fake's clock (at most 10 minutes, not expired); the answer is 201 with a new
  `ghs_` token and `expires_at` (`token_lifetime` seconds later), which the fake then accepts as a token;
- faults injected in order: a status with headers, a delay (for timeouts), a malformed body, a large body
  (`size` bytes, written in pieces; `no_length`: without Content-Length, ended by closing the connection).

In-process: `with FakeGitHub() as gh: gh.push("acme", "demo", "main")`.
From another process: `python -m tests.fake_github.server --port 9100 --state state.json --token-file F`
(`--port 0` picks a free port; the first line printed is the base URL). The state file
`{"repos": {"owner/name": {"branch": "sha"}}, "faults": [{"status": 500}], "poll_interval": null}` is
re-read when it changes, so a test "pushes" by rewriting it (write a temp file and rename it over); the
faults it lists are queued each time it is re-read.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

# The ref may be qualified (heads/main, refs/heads/main) or bare (main).
COMMITS_RE = re.compile(r"^/repos/([^/]+)/([^/]+)/commits/(?:refs/)?(?:heads/)?(.+)$")
ALIAS_RE = re.compile(
    r"(\w+)\s*:\s*repository\(\s*owner:\s*\$(\w+)\s*,\s*name:\s*\$(\w+)\s*\)\s*\{\s*ref\(qualifiedName:\s*\$(\w+)"
)
HOUR = 3600
ACCESS_TOKENS_RE = re.compile(r"/app/installations/([0-9]{1,20})/access_tokens")


def new_sha() -> str:
    return secrets.token_hex(20)


@dataclass
class Fault:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: str | None = None
    size: int = 0
    no_length: bool = False


@dataclass
class LoggedRequest:
    method: str
    path: str
    headers: dict[str, str]
    status: int
    counted: bool
    authenticated: bool
    resource: str = "core"


class FakeGitHub:
    """The fake API's state and its server thread."""

    def __init__(
        self,
        token: str = "test-token",
        port: int = 0,
        state_file: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # The rate-limit window follows `clock`: a benchmark that simulates hours passes its own.
        self.clock = clock
        self.token = token
        self.repos: dict[str, dict[str, str]] = {}
        self.faults: list[Fault] = []
        self.poll_interval: int | None = None
        self.requests: list[LoggedRequest] = []
        self.budget_used: dict[tuple[bool, str], int] = {}
        self.window_start = clock()
        self.lock = threading.Lock()
        self.state_file = state_file
        self.app_keys: dict[int, bytes] = {}  # GitHub App id -> its public key (PEM)
        self.installations: dict[int, int] = {}  # installation id -> App id
        self.token_lifetime = 3600.0
        self.installation_tokens: dict[str, float] = {}  # issued token -> its expiry
        self._state_signature: tuple[int, int, int] | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeGitHub:
        # A short poll interval makes shutdown (each test's teardown) quick.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests do -----------------------------------------------------------------------------------
    def push(self, owner: str, name: str, branch: str = "main", sha: str | None = None) -> str:
        sha = sha or new_sha()
        with self.lock:
            self.repos.setdefault(f"{owner}/{name}", {})[branch] = sha
        return sha

    force_push = push

    def add_app(self, app_id: int, public_key_pem: bytes, installation_id: int) -> None:
        """A GitHub App (its public key) installed once (installation_id)."""
        with self.lock:
            self.app_keys[app_id] = public_key_pem
            self.installations[installation_id] = app_id

    def check_jwt(self, jwt: str, installation_id: int) -> str | None:
        """Why GitHub would refuse this App JWT for this installation, or None."""
        import base64

        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        def decode(part: str) -> bytes:
            return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

        try:
            header_b64, payload_b64, signature_b64 = jwt.split(".")
            header, claims = json.loads(decode(header_b64)), json.loads(decode(payload_b64))
            signature = decode(signature_b64)
        except ValueError:
            return "A JSON web token could not be decoded"
        if header.get("alg") != "RS256":
            return "JWT algorithm must be RS256"
        app_id = int(claims.get("iss", "0")) if str(claims.get("iss", "")).isdigit() else 0
        with self.lock:
            public = self.app_keys.get(app_id)
            installed = self.installations.get(installation_id)
        if public is None:
            return "Integration not found"
        key = serialization.load_pem_public_key(public)
        try:
            key.verify(signature, f"{header_b64}.{payload_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr,call-arg]
        except InvalidSignature:
            return "A JSON web token could not be decoded"
        now = self.clock()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or exp - iat > 600 or iat > now + 60:
            return "'Issued at' claim ('iat') must be an Integer representing a time in the past"
        if exp <= now:
            return "'Expiration time' claim ('exp') is too far in the past"
        if installed != app_id:
            return "Not Found"
        return None

    def issue_installation_token(self) -> tuple[str, float]:
        token = "ghs_" + secrets.token_hex(18)
        expires = self.clock() + self.token_lifetime
        with self.lock:
            self.installation_tokens[token] = expires
        return token, expires

    def delete_branch(self, owner: str, name: str, branch: str = "main") -> None:
        with self.lock:
            self.repos.get(f"{owner}/{name}", {}).pop(branch, None)

    def inject(
        self,
        status: int = 200,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        body: str | None = None,
        size: int = 0,
        no_length: bool = False,
    ) -> None:
        with self.lock:
            self.faults.append(Fault(status, dict(headers or {}), delay, body, size, no_length))

    def set_poll_interval(self, seconds: int | None) -> None:
        self.poll_interval = seconds

    def counted(self) -> int:
        return sum(1 for r in self.requests if r.counted)

    # -- state file (other processes) ---------------------------------------------------------------------
    def reload_state(self) -> None:
        if not self.state_file:
            return
        try:
            stat = self.state_file.stat()
            # Inode too: a rename within the mtime granularity is still seen as a change.
            signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if signature == self._state_signature:
                return
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return  # absent or half-written: keep the last state
        with self.lock:
            self._state_signature = signature
            self.repos = {repo: dict(branches) for repo, branches in state.get("repos", {}).items()}
            self.faults.extend(Fault(**f) for f in state.get("faults", []))
            self.poll_interval = state.get("poll_interval")

    # -- answering ---------------------------------------------------------------------------------------
    def _window(self) -> None:
        now = self.clock()
        if now - self.window_start >= HOUR:
            self.window_start, self.budget_used = now, {}

    def over_budget(self, authenticated: bool, resource: str) -> bool:
        with self.lock:
            self._window()
            return self.budget_used.get((authenticated, resource), 0) >= (5000 if authenticated else 60)

    def rate_headers(self, authenticated: bool, counted: bool, resource: str) -> dict[str, str]:
        limit = 5000 if authenticated else 60
        with self.lock:
            self._window()
            key = (authenticated, resource)
            if counted:
                self.budget_used[key] = min(limit, self.budget_used.get(key, 0) + 1)
            used = self.budget_used.get(key, 0)
        headers = {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(0, limit - used)),
            "x-ratelimit-used": str(used),
            "x-ratelimit-reset": str(int(self.window_start + HOUR)),
            "x-ratelimit-resource": resource,
        }
        if self.poll_interval:
            headers["x-poll-interval"] = str(self.poll_interval)
        return headers


def _handler_for(gh: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without TCP_NODELAY each answer waits ~40 ms.
        disable_nagle_algorithm = True
        resource = "core"

        def log_message(self, *args: Any) -> None:  # quiet: the request log is gh.requests
            pass

        def _answer(self, status: int, body: str, headers: dict[str, str], authenticated: bool) -> None:
            counted = not (status == 304 and authenticated)
            headers = {**gh.rate_headers(authenticated, counted, self.resource), **headers}
            data = body.encode()
            # Logged before answering, so a client that got its answer always finds the request logged.
            logged = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
            gh.requests.append(
                LoggedRequest(self.command, self.path, logged, status, counted, authenticated, self.resource)
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if status != 304:
                self.wfile.write(data)

        def _answer_large(self, fault: Fault, authenticated: bool) -> None:
            """`fault.size` bytes written in pieces (the fake never holds them); a client may hang up early."""
            headers = {**gh.rate_headers(authenticated, True, self.resource), **fault.headers}
            gh.requests.append(LoggedRequest(self.command, self.path, {}, fault.status, True, authenticated))
            self.send_response(fault.status)
            for name, value in headers.items():
                self.send_header(name, value)
            if fault.no_length:
                self.send_header("Connection", "close")
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(fault.size))
            self.end_headers()
            piece = b"0" * 65536
            try:
                for start in range(0, fault.size, len(piece)):
                    self.wfile.write(piece[: fault.size - start])
            except OSError:
                self.close_connection = True

        def _auth(self) -> bool | None:
            """True: valid token; False: none sent; None: a wrong token (answered 401)."""
            value = self.headers.get("Authorization")
            if value is None:
                return False
            if value in (f"Bearer {gh.token}", f"token {gh.token}"):
                return True
            scheme, _, given = value.partition(" ")
            with gh.lock:
                expires = gh.installation_tokens.get(given)
            if scheme in ("Bearer", "token") and expires is not None and expires > gh.clock():
                return True
            self._answer(401, json.dumps({"message": "Bad credentials"}), {}, False)
            return None

        def _fault(self, authenticated: bool) -> bool:
            with gh.lock:
                fault = gh.faults.pop(0) if gh.faults else None
            if fault is None:
                return False
            if fault.delay:
                time.sleep(fault.delay)
            if fault.size:
                self._answer_large(fault, authenticated)
                return True
            if fault.status == 200 and fault.body is None:
                return False  # a pure delay: answer normally afterwards
            self._answer(fault.status, fault.body if fault.body is not None else "{}", fault.headers, authenticated)
            return True

        def _refused(self, authenticated: bool) -> bool:
            """Answer a request past the budget the way GitHub does (counted: the client should not send it)."""
            if not gh.over_budget(authenticated, self.resource):
                return False
            message = json.dumps({"message": "API rate limit exceeded"})
            self._answer(403, message, {"Content-Type": "application/json"}, authenticated)
            return True

        def _prologue(self) -> bool | None:
            """Authentication, injected faults, budget: None when the request was already answered."""
            gh.reload_state()
            authenticated = self._auth()
            if authenticated is None or self._fault(authenticated) or self._refused(authenticated):
                return None
            return authenticated

        def do_GET(self) -> None:
            self.resource = "core"  # per request: one handler serves every request of a kept-alive connection
            authenticated = self._prologue()
            if authenticated is None:
                return
            match = COMMITS_RE.match(self.path.split("?")[0])
            if not match:
                self._answer(404, json.dumps({"message": "Not Found"}), {}, authenticated)
                return
            owner, name, branch = (unquote(g) for g in match.groups())
            with gh.lock:
                branches = gh.repos.get(f"{owner}/{name}")
                sha = branches.get(branch) if branches is not None else None
            if sha is None:
                status = 404 if branches is None else 422  # GitHub: unknown repo 404, unknown ref 422
                self._answer(status, json.dumps({"message": "No commit found"}), {}, authenticated)
                return
            etag = f'"{sha}"'
            if self.headers.get("If-None-Match") == etag:
                self._answer(304, "", {"ETag": etag}, authenticated)
                return
            self._answer(200, sha, {"ETag": etag, "Content-Type": "application/vnd.github.sha"}, authenticated)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            self.resource = "graphql" if self.path == "/graphql" else "core"
            exchange = ACCESS_TOKENS_RE.fullmatch(self.path)
            if exchange:
                self._access_token(int(exchange[1]))
                return
            authenticated = self._prologue()
            if authenticated is None:
                return
            if self.path != "/graphql":
                self._answer(404, json.dumps({"message": "Not Found"}), {}, authenticated)
                return
            if not authenticated:
                self._answer(401, json.dumps({"message": "This endpoint requires you to be authenticated."}), {}, False)
                return
            try:
                request = json.loads(raw)
                query, variables = str(request["query"]), dict(request.get("variables") or {})
                aliases = [
                    (alias, str(variables[o]), str(variables[n]), str(variables[b]))
                    for alias, o, n, b in ALIAS_RE.findall(query)
                ]
            except (ValueError, KeyError, TypeError):
                self._answer(400, json.dumps({"message": "Problems parsing JSON"}), {}, authenticated)
                return
            data: dict[str, Any] = {}
            errors = []
            with gh.lock:
                for alias, owner, name, qualified in aliases:
                    repo = f"{owner}/{name}"
                    if repo not in gh.repos:
                        data[alias] = None
                        message = f"Could not resolve to a Repository with the name '{repo}'."
                        errors.append({"type": "NOT_FOUND", "path": [alias], "message": message})
                        continue
                    sha = gh.repos[repo].get(qualified.removeprefix("refs/heads/"))
                    data[alias] = {"ref": {"target": {"oid": sha}} if sha else None}
            body = {"data": data, **({"errors": errors} if errors else {})}
            self._answer(200, json.dumps(body), {"Content-Type": "application/json"}, authenticated)

        def _access_token(self, installation_id: int) -> None:
            """An installation token for an App's JWT (never an ordinary token), as GitHub answers it."""
            with gh.lock:
                fault = gh.faults.pop(0) if gh.faults else None
            if fault is not None and fault.status != 200:
                self._answer(fault.status, fault.body or "{}", fault.headers, False)
                return
            value = self.headers.get("Authorization", "")
            if not value.startswith("Bearer "):
                self._answer(401, json.dumps({"message": "A JSON web token could not be decoded"}), {}, False)
                return
            problem = gh.check_jwt(value.removeprefix("Bearer "), installation_id)
            if problem is not None:
                status = 404 if problem == "Not Found" else 401
                self._answer(status, json.dumps({"message": problem}), {}, False)
                return
            token, expires = gh.issue_installation_token()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
            body = {"token": token, "expires_at": stamp, "permissions": {"contents": "read"}}
            self._answer(201, json.dumps(body), {"Content-Type": "application/json"}, False)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9100, help="0: a free port (the URL is printed first)")
    parser.add_argument("--state", type=Path, required=True, help="JSON state file, re-read when it changes")
    parser.add_argument("--token-file", type=Path, help="file holding the accepted token (default: test-token)")
    args = parser.parse_args()
    token = args.token_file.read_text().strip() if args.token_file else "test-token"
    gh = FakeGitHub(token=token, port=args.port, state_file=args.state)
    gh.reload_state()
    print(gh.url, flush=True)
    try:
        gh.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        gh.server.server_close()


if __name__ == "__main__":
    main()
