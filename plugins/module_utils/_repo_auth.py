"""Credentials for private repositories: SSH deploy keys, HTTPS tokens and GitHub App installation tokens.

Used by the deploy engine's fetch (root) and by the monitor's polling, so it imports nothing from Ansible:
standard library, plus `cryptography` (Debian's python3-cryptography) for a GitHub App's RS256 signature and
`requests` for its token exchange, both imported only when an App is used.

Where a credential lives: one root-only directory per app under `repo_auth_dir` (0700), written by the apps
role from the vault (`token`, `github-app.pem`) or generated there (`id_ed25519`, never leaving the host).

How it reaches git (never argv, never .git/config, never the app's container):
- SSH: `GIT_SSH_COMMAND` names the key file (`-i`, `IdentitiesOnly`) and the pinned known_hosts file
  (`StrictHostKeyChecking=yes`, `UserKnownHostsFile`); the key itself stays in its file.
- HTTPS: an `Authorization: Basic` header as `http.extraHeader`, set through `GIT_CONFIG_COUNT` /
  `GIT_CONFIG_KEY_n` / `GIT_CONFIG_VALUE_n` in git's environment, which only the same uid (and root) can
  read in /proc; a fetch by URL (never a configured remote) leaves nothing in the mirror's config.
- GitHub App: its private key signs a JWT (RS256, 9 minutes) that buys an installation token (an hour) from
  POST /app/installations/{id}/access_tokens; the token is cached in memory and bought again once less than
  `refresh_margin` of its life is left. It then goes to git as an HTTPS token (user x-access-token).
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

TOKEN_FILE = "token"  # noqa: S105 (a file name)
APP_KEY_FILE = "github-app.pem"
SSH_KEY_FILE = "id_ed25519"
API_VERSION = "2022-11-28"
JWT_LIFETIME = 540  # GitHub accepts at most 10 minutes
JWT_BACKDATE = 60  # GitHub's advice: against clock drift
REFRESH_MARGIN = 600.0  # buy a new installation token when less than this is left of it
MAX_CREDENTIAL_BYTES = 16384
MAX_ANSWER_BYTES = 65536
# What can stand in a header or a file path that goes into a shell line (GIT_SSH_COMMAND).
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,4096}")
_PATH_RE = re.compile(r"/[A-Za-z0-9._/-]{1,1023}")
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")


class RepoAuthError(Exception):
    """A credential is missing, unreadable, badly kept or refused. Its text never holds a credential."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def read_secret_file(path: Path, *, owner: int | None = 0, forbidden: int = 0o077) -> str:
    """A credential file's text, stripped. Refused (RepoAuthError) when it is a symlink, not a regular file,
    has a `forbidden` mode bit (group or others; a systemd credential's group bits are its ACL mask, so the
    monitor passes 0o007), is not owned by `owner` (root by default; None: any), is empty or too large."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RepoAuthError(f"{path} is missing (re-run site.yml to write it from the vault)") from None
    except OSError as exc:
        raise RepoAuthError(f"{path} cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RepoAuthError(f"{path} is not a regular file")
        if info.st_mode & forbidden:
            raise RepoAuthError(
                f"{path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); it must be 0600"
            )
        if owner is not None and info.st_uid != owner:
            raise RepoAuthError(f"{path} is not owned by uid {owner}")
        data = os.read(fd, MAX_CREDENTIAL_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_CREDENTIAL_BYTES:
        raise RepoAuthError(f"{path} is larger than {MAX_CREDENTIAL_BYTES} bytes")
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise RepoAuthError(f"{path} is not ASCII text") from None
    if not text:
        raise RepoAuthError(f"{path} is empty")
    return text


def basic_header(username: str, token: str) -> str:
    """The `Authorization: Basic` header line git sends (http.extraHeader)."""
    if not _USER_RE.fullmatch(username):
        raise RepoAuthError("the git user name must be letters, digits, '.', '_' or '-'")
    if not _TOKEN_RE.fullmatch(token):
        raise RepoAuthError("the token holds a space, a line break or another character it cannot have")
    return "Authorization: Basic " + base64.b64encode(f"{username}:{token}".encode()).decode("ascii")


def config_env(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """git config given through the environment (GIT_CONFIG_COUNT ...): never argv, never a file."""
    env = {"GIT_CONFIG_COUNT": str(len(pairs))}
    for index, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def ssh_command(key_file: str | None, known_hosts: str, *, connect_timeout: int = 30) -> str:
    """GIT_SSH_COMMAND: batch mode, strict host key checking against the pinned file only, one key."""
    for path in (key_file, known_hosts):
        if path is not None and not _PATH_RE.fullmatch(path):
            raise RepoAuthError("an SSH key or known_hosts path must be absolute, of plain characters")
    parts = [
        "ssh",
        "-F /dev/null",
        "-o BatchMode=yes",
        "-o StrictHostKeyChecking=yes",
        f"-o UserKnownHostsFile={known_hosts}",
        "-o GlobalKnownHostsFile=/dev/null",
        f"-o ConnectTimeout={max(1, int(connect_timeout))}",
    ]
    if key_file is not None:
        parts += [f"-i {key_file}", "-o IdentitiesOnly=yes"]
    return " ".join(parts)


# -- GitHub App installation tokens --------------------------------------------------------------------------
def app_jwt(app_id: int, private_key_pem: bytes, now: float) -> str:
    """A GitHub App's JWT: RS256 over {iat, exp, iss}, backdated a minute, valid nine."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError):
        raise RepoAuthError("the GitHub App's private key is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise RepoAuthError("the GitHub App's private key is not an RSA key (GitHub issues RSA keys)")
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}, separators=(",", ":")).encode())
    issued = int(now) - JWT_BACKDATE
    claims = {"iat": issued, "exp": issued + JWT_LIFETIME, "iss": str(app_id)}
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64url(signature)}"


def _parse_time(text: object) -> float | None:
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z", text):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class InstallationToken:
    token: str = field(repr=False)
    expires_at: float


class GitHubAppTokens:
    """Installation tokens of one GitHub App installation, bought with the App's JWT and kept until
    `refresh_margin` seconds before they expire. Clock and session are injected (tests use a fake clock)."""

    def __init__(
        self,
        app_id: int,
        installation_id: int,
        private_key_pem: bytes,
        *,
        api_url: str = "https://api.github.com",
        session: Any = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 20.0,
        refresh_margin: float = REFRESH_MARGIN,
        ca_file: str | None = None,
    ) -> None:
        for name, value in (("app_id", app_id), ("installation_id", installation_id)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RepoAuthError(f"{name} must be a positive whole number")
        if not re.fullmatch(r"https?://[A-Za-z0-9.:\[\]-]+(?:/[A-Za-z0-9._~/-]*)?", api_url):
            raise RepoAuthError("api_url must be an http(s) URL without credentials, query or fragment")
        self.app_id = app_id
        self.installation_id = installation_id
        self._private_key = private_key_pem
        self.api_url = api_url.rstrip("/")
        if session is None:
            import requests

            session = requests.Session()
            session.trust_env = False  # no proxy or netrc from the environment
        self.session = session
        self.clock = clock
        self.timeout = timeout
        self.refresh_margin = refresh_margin
        self.verify: str | bool = ca_file or True
        self._cached: InstallationToken | None = None
        self.exchanges = 0  # tokens bought (for tests and the monitor's figures)

    def __repr__(self) -> str:
        return f"GitHubAppTokens(app_id={self.app_id}, installation_id={self.installation_id})"

    def token(self) -> str:
        """A valid installation token: the cached one while it has more than `refresh_margin` left."""
        now = self.clock()
        if self._cached is not None and self._cached.expires_at - now > self.refresh_margin:
            return self._cached.token
        self._cached = self._exchange(now)
        return self._cached.token

    def _exchange(self, now: float) -> InstallationToken:
        jwt = app_jwt(self.app_id, self._private_key, now)
        url = f"{self.api_url}/app/installations/{self.installation_id}/access_tokens"
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {jwt}",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "secure-streamlit-hosting",
        }
        self.exchanges += 1
        try:
            response = self.session.post(
                url, headers=headers, timeout=self.timeout, allow_redirects=False, verify=self.verify, stream=True
            )
            body = response.raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
        except Exception as exc:  # requests' and urllib3's many classes; the text may quote a header
            raise RepoAuthError(f"GitHub's API did not answer the token exchange ({type(exc).__name__})") from None
        where = f"installation {self.installation_id} of App {self.app_id}"
        if response.status_code in (401, 403):
            raise RepoAuthError(f"GitHub refused the App's JWT for {where} (HTTP {response.status_code})")
        if response.status_code == 404:
            raise RepoAuthError(f"GitHub knows no {where} (HTTP 404): is the App installed on the repository?")
        if response.status_code != 201:
            raise RepoAuthError(f"the token exchange for {where} answered HTTP {response.status_code}")
        if len(body) > MAX_ANSWER_BYTES:
            raise RepoAuthError("the token exchange answered more than an access token")
        try:
            answer = json.loads(body)
        except ValueError:
            raise RepoAuthError("the token exchange answered something that is not JSON") from None
        token = answer.get("token") if isinstance(answer, Mapping) else None
        expires_at = _parse_time(answer.get("expires_at")) if isinstance(answer, Mapping) else None
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token) or expires_at is None:
            raise RepoAuthError("the token exchange answered without a usable token and expiry")
        if expires_at <= now:
            raise RepoAuthError("the token exchange answered a token that has already expired")
        return InstallationToken(token, expires_at)


# -- one app's credentials for git ---------------------------------------------------------------------------
@dataclass
class RepoCredentials:
    """Turns an app's `repo_auth` (the app model's) into git's environment, reading the files kept for it
    under `<auth_dir>/<app>/`. A GitHub App's token source is kept per app, so a long-lived caller (the
    monitor) reuses a token until it nears its expiry."""

    auth_dir: str
    known_hosts: str
    github_api_url: str = "https://api.github.com"
    clock: Callable[[], float] = time.time
    session: Any = None
    owner: int | None = 0  # the files' owner (root; the monitor's own uid for its copies)
    ca_file: str | None = None
    _apps: dict[str, GitHubAppTokens] = field(default_factory=dict, repr=False)

    def directory(self, app: str) -> Path:
        return Path(self.auth_dir) / app

    def http_token(self, app: str, repo_auth: Mapping[str, Any]) -> tuple[str, str] | None:
        """(user name, token) for HTTPS, or None for an app without an HTTPS credential."""
        kind = repo_auth.get("kind")
        if kind == "token":
            return str(repo_auth["username"]), read_secret_file(self.directory(app) / TOKEN_FILE, owner=self.owner)
        if kind == "github_app":
            tokens = self._apps.get(app)
            if tokens is None or (tokens.app_id, tokens.installation_id) != (
                repo_auth["app_id"],
                repo_auth["installation_id"],
            ):
                pem = read_secret_file(self.directory(app) / APP_KEY_FILE, owner=self.owner).encode() + b"\n"
                tokens = GitHubAppTokens(
                    int(repo_auth["app_id"]),
                    int(repo_auth["installation_id"]),
                    pem,
                    api_url=self.github_api_url,
                    session=self.session,
                    clock=self.clock,
                    ca_file=self.ca_file,
                )
                self._apps[app] = tokens
            return "x-access-token", tokens.token()
        return None

    def ssh_key(self, app: str, repo_auth: Mapping[str, Any]) -> str | None:
        """The deploy key's path (checked: root-only) for an app with one, else None."""
        if repo_auth.get("kind") != "deploy_key":
            return None
        path = self.directory(app) / SSH_KEY_FILE
        read_secret_file(path, owner=self.owner)  # refuses a missing or loosely kept key before ssh does
        return str(path)

    def git_env(self, app: str, repo_auth: Mapping[str, Any]) -> dict[str, str]:
        """What to add to git's environment for a fetch or ls-remote of this app's repository ({} for a
        public one). Raises RepoAuthError when a credential is missing or refused."""
        if not repo_auth:
            return {}
        env = {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false",
            "SSH_ASKPASS": "/bin/false",
        }
        key = self.ssh_key(app, repo_auth)
        if key is not None:
            env["GIT_SSH_COMMAND"] = ssh_command(key, self.known_hosts)
            env["GIT_SSH_VARIANT"] = "ssh"
            env["GIT_ALLOW_PROTOCOL"] = "ssh"
            return env
        user_token = self.http_token(app, repo_auth)
        if user_token is not None:
            env.update(config_env([("credential.helper", ""), ("http.extraHeader", basic_header(*user_token))]))
            env["GIT_ALLOW_PROTOCOL"] = "https:http"
        return env
