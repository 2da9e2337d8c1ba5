"""Plain-git source: the head of one branch with `git ls-remote`, for git servers that are not GitHub.

On-premises GitLab, Gitea/Forgejo, a plain `git http-backend` or an SSH server: anything that speaks git.
The monitor daemon uses it beside the GitHub client, with the same result type (github_client.HeadResult)
and the same error classes, so its backoff, audit and request rules are the same for both.

Cost: one `git ls-remote --heads URL refs/heads/BRANCH` per repository and cycle. With protocol v2 (git >=
2.18 on both ends) the server lists its branches only (about 60 bytes each; no tags, no merge requests),
and over smart HTTP that is one GET of /info/refs and one POST of /git-upload-pack; no objects move.

What it never does: put a credential in argv (an HTTP credential goes in through the environment, which
only the monitor's own user can read), read the operator's or the system's git config, prompt, follow an
HTTP redirect to another place, speak a transport other than the URL's own, wait longer than `timeout`, keep
more than `max_output` bytes of what the server sends, or take anything but a ref listing for an answer.

Standard library, the app model and github_client's result type only: the daemon imports them as plain
modules from its directory.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

try:
    from ansible_collections.secure_streamlit.hosting.plugins.module_utils import _app_spec
    from ansible_collections.secure_streamlit.hosting.plugins.module_utils.github_client import HeadResult
except ImportError:  # installed on a host: the libraries sit side by side
    import _app_spec  # type: ignore[no-redef]
    from github_client import HeadResult  # type: ignore[no-redef]

SHA_RE = re.compile(r"[0-9a-f]{40}")
# One line of `git ls-remote` output for a branch: 40 hex, a tab, the full ref name.
LISTING_LINE_RE = re.compile(r"(?P<sha>[0-9a-f]{40})\t(?P<ref>refs/heads/[\x21-\x7e]{1,255})")
SCP_RE = _app_spec.GIT_SCP_RE
# Paths handed to ssh through GIT_SSH_COMMAND (a shell line): plain characters only.
SSH_FILE_RE = re.compile(r"/[A-Za-z0-9._/-]{1,1023}")
MAX_OUTPUT = 1 << 20
DEFAULT_TIMEOUT = 20.0
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class GitSourceError(Exception):
    """The server could not answer usefully. `kind` names the class for logs and audit records."""

    kind = "error"


class UnreachableError(GitSourceError):
    """No answer: the host is down, unknown, refused the connection, broke TLS, or took too long."""

    kind = "unreachable"


class AuthRefusedError(GitSourceError):
    """The server asked for credentials, or refused the ones given."""

    kind = "auth_refused"


class BranchMissingError(GitSourceError):
    """The repository or the branch does not exist (or is not visible with these credentials)."""

    kind = "missing"


class MalformedAnswerError(GitSourceError):
    """The server answered something that is not a ref listing."""

    kind = "malformed"


def url_problem(url: object, *, allow_file: bool = False) -> str | None:
    """Why `url` is not a git URL this source reads (the app model's rule, in one place), or None."""
    return _app_spec.git_url_problem(url, allow_file=allow_file)


@dataclass(frozen=True)
class HttpAuth:
    """Basic credentials for an HTTPS server (a GitLab/Gitea token is the password). Never in repr."""

    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[\x21-\x7e]{1,256}", self.username) or ":" in self.username:
            raise ValueError("the git user name must be visible ASCII without ':'")
        if not re.fullmatch(r"[\x21-\x7e]{1,4096}", self.password):
            raise ValueError("the git password holds a space, a line break or another character it cannot have")


@dataclass(frozen=True)
class GitRemote:
    """One branch of one repository on a git server."""

    url: str
    branch: str = "main"
    allow_file: bool = False
    auth: HttpAuth | None = field(default=None, repr=False, compare=False)
    ssh_key_file: str | None = None  # a per-app deploy key (else the source's)

    def __post_init__(self) -> None:
        problem = url_problem(self.url, allow_file=self.allow_file)
        if problem:
            raise ValueError(f"the git URL {problem}")
        problem = _app_spec.branch_problem(self.branch)
        if problem:
            raise ValueError(f"branch {_app_spec.show(self.branch)} is not a valid branch name: it {problem}")
        if self.auth is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError("HTTP credentials go with an https:// URL only")
        if self.ssh_key_file is not None and not SSH_FILE_RE.fullmatch(self.ssh_key_file):
            raise ValueError("ssh_key_file must be an absolute path of plain characters")

    @property
    def key(self) -> str:
        return f"{self.url}@{self.branch}"

    @property
    def scheme(self) -> str:
        return "ssh" if "://" not in self.url else self.url.split("://", 1)[0]


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    overflowed: bool = False


Runner = Callable[[Sequence[str], Mapping[str, str], float, int], RunResult]


def run_bounded(argv: Sequence[str], env: Mapping[str, str], timeout: float, max_output: int) -> RunResult:
    """Run `argv` in its own process group; kill the group past `timeout` or when either stream passes
    `max_output` bytes. Nothing is written to disk."""
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd="/",
        start_new_session=True,
        close_fds=True,
    )
    stdout, stderr = process.stdout, process.stderr
    if stdout is None or stderr is None:  # not with PIPE; for the type checker
        raise OSError("no pipes")
    out_fd, err_fd = stdout.fileno(), stderr.fileno()
    buffers = {out_fd: bytearray(), err_fd: bytearray()}
    deadline = time.monotonic() + timeout
    timed_out = overflowed = False
    with selectors.DefaultSelector() as selector:
        selector.register(out_fd, selectors.EVENT_READ)
        selector.register(err_fd, selectors.EVENT_READ)
        while selector.get_map() and not overflowed:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _events in selector.select(min(left, 1.0)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                buffers[key.fd] += chunk
                overflowed = overflowed or len(buffers[key.fd]) > max_output
    if timed_out or overflowed:
        _kill_group(process.pid)
    try:
        returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        returncode = process.wait()
        timed_out = True
    stdout.close()
    stderr.close()
    return RunResult(returncode, bytes(buffers[out_fd]), bytes(buffers[err_fd]), timed_out, overflowed)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


# stderr of git (LANG=C) -> the error class. Checked in this order; the first match wins.
_AUTH_MARKERS = (
    "authentication failed",
    "could not read username",
    "could not read password",
    "terminal prompts disabled",
    "returned error: 401",
    "returned error: 403",
    "permission denied (publickey",
    "permission denied, please try again",
    "access denied",
    "host key verification failed",
)
_MISSING_MARKERS = (
    "returned error: 404",
    "repository not found",
    "does not appear to be a git repository",
    "not found",
    "no such file or directory",
    "does not exist",
)
_UNREACHABLE_MARKERS = (
    "could not resolve host",
    "failed to connect",
    "connection refused",
    "connection timed out",
    "operation timed out",
    "timed out",
    "no route to host",
    "network is unreachable",
    "connection reset",
    "ssl",
    "certificate",
    "gnutls",
    "empty reply from server",
    "returned error: 5",
    "could not read from remote repository",
    "unable to access",
    "connection closed",
    "broken pipe",
)
_MALFORMED_MARKERS = (
    "not valid: is this a git repository",
    "protocol error",
    "bad line length",
    "invalid packet",
    "invalid ls-refs response",
    "invalid server response",
    "expected flush",
    "expected response end",
    "unknown protocol version",
    "bad pack",
)


def _telling_line(stderr: str) -> str:
    """The line of git's stderr that says most (ssh's own, else git's fatal one), as plain printable text of
    at most 200 characters, for the log."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    chosen = next((x for x in lines if x.startswith("ssh:")), None) or next(
        (x for x in lines if x.startswith("fatal:")), lines[0] if lines else ""
    )
    # curl's "after 3 ms" would make every repeat of one fault a new reason (logged and audited again).
    chosen = re.sub(r" after [0-9]+ ms", "", chosen)
    return "".join(c if c.isprintable() else "?" for c in chosen)[:200]


def classify(stderr: str, url: str = "") -> type[GitSourceError]:
    """The error class of a failed ls-remote, from git's stderr (LANG=C). The URL is taken out first: a
    repository called "not-found" or a host called "x.invalid" must not decide the class."""
    text = stderr.replace(url, "URL").lower() if url else stderr.lower()
    scp = SCP_RE.fullmatch(url) if "://" not in url else None
    host = scp["host"] if scp else urlsplit(url).hostname
    if host:
        text = text.replace(host.lower(), "HOST")
    for markers, cls in (
        (_AUTH_MARKERS, AuthRefusedError),
        (_MALFORMED_MARKERS, MalformedAnswerError),
        (_MISSING_MARKERS, BranchMissingError),
        (_UNREACHABLE_MARKERS, UnreachableError),
    ):
        if any(marker in text for marker in markers):
            return cls
    return GitSourceError


def parse_listing(stdout: bytes, branch: str) -> str | None:
    """The SHA of refs/heads/BRANCH in `git ls-remote` output; None when the listing lacks it.

    Every line must be a ref listing line (fullmatch): anything else is refused whole, not skipped."""
    try:
        text = stdout.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedAnswerError("the answer is not a ref listing (not ASCII)") from None
    if text and not text.endswith("\n"):
        raise MalformedAnswerError("the answer is not a ref listing (cut short)")
    wanted = f"refs/heads/{branch}"
    sha = None
    for line in text.split("\n")[:-1]:
        match = LISTING_LINE_RE.fullmatch(line)
        if not match:
            raise MalformedAnswerError("the answer is not a ref listing")
        if match["ref"] == wanted:
            if sha is not None and sha != match["sha"]:
                raise MalformedAnswerError("the answer lists the branch twice")
            sha = match["sha"]
    return sha


class GitSource:
    """Reads branch heads with `git ls-remote`, one process per remote, each bounded in time and output."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_output: int = MAX_OUTPUT,
        runner: Runner = run_bounded,
        clock: Callable[[], float] = time.monotonic,
        git: str = "/usr/bin/git",
        ssh_known_hosts: str | None = None,
        ssh_key_file: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        """`ssh_known_hosts` is the only place an SSH host key is checked against (strict checking always);
        `ca_file` adds a CA bundle for HTTPS (an on-premises server's internal CA)."""
        if math.isnan(timeout) or timeout <= 0:
            raise ValueError("timeout must be > 0")
        for name, path in (("ssh_known_hosts", ssh_known_hosts), ("ssh_key_file", ssh_key_file), ("ca_file", ca_file)):
            if path is not None and not SSH_FILE_RE.fullmatch(path):
                raise ValueError(f"{name} must be an absolute path of plain characters")
        self.timeout = timeout
        self.max_output = max_output
        self.runner = runner
        self.clock = clock
        self.git = git
        self.ssh_known_hosts = ssh_known_hosts
        self.ssh_key_file = ssh_key_file
        self.ca_file = ca_file
        self.runs = 0  # ls-remote processes started (one per remote per cycle)
        self._last: dict[str, str] = {}  # remote.key -> the last head read

    def __repr__(self) -> str:
        return f"GitSource(timeout={self.timeout}, git={self.git!r})"

    def environment(self, remote: GitRemote) -> dict[str, str]:
        """A clean environment: no HOME, no user or system config, no prompt, one transport, no redirects."""
        config = [
            ("protocol.version", "2"),
            ("http.followRedirects", "false"),
            ("credential.helper", ""),
            ("core.askPass", ""),
            ("http.lowSpeedLimit", "1"),
            ("http.lowSpeedTime", str(max(1, int(self.timeout)))),
        ]
        if remote.scheme == "file":
            # A bare repository owned by another user (the lab's server) is read, never written.
            config.append(("safe.directory", "*"))
        if self.ca_file and remote.scheme == "https":
            config.append(("http.sslCAInfo", self.ca_file))
        if remote.auth is not None:
            token = base64.b64encode(f"{remote.auth.username}:{remote.auth.password}".encode()).decode()
            config.append(("http.extraHeader", f"Authorization: Basic {token}"))
        env = {
            "PATH": CLEAN_PATH,
            "LANG": "C",
            "LC_ALL": "C",
            "HOME": "/nonexistent",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_ASKPASS": "/bin/false",
            "SSH_ASKPASS": "/bin/false",
            "GIT_ALLOW_PROTOCOL": remote.scheme,
            "GIT_CONFIG_COUNT": str(len(config)),
        }
        for index, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{index}"] = key
            env[f"GIT_CONFIG_VALUE_{index}"] = value
        if remote.scheme == "ssh":
            ssh = [
                "ssh",
                "-o BatchMode=yes",
                "-o StrictHostKeyChecking=yes",
                f"-o ConnectTimeout={max(1, int(self.timeout))}",
                f"-o UserKnownHostsFile={self.ssh_known_hosts or '/dev/null'}",
                "-o GlobalKnownHostsFile=/dev/null",
                "-F /dev/null",
            ]
            key = remote.ssh_key_file or self.ssh_key_file
            if key:
                ssh += [f"-i {key}", "-o IdentitiesOnly=yes"]
            env["GIT_SSH_COMMAND"] = " ".join(ssh)
            env["GIT_SSH_VARIANT"] = "ssh"
        return env

    def argv(self, remote: GitRemote) -> list[str]:
        # "--" ends the options: the URL can never be read as one. --heads makes protocol v2 ask the server
        # for branches only (git sends no ref prefix for a pattern, which it matches by its tail itself).
        return [self.git, "ls-remote", "--heads", "--exit-code", "--", remote.url, f"refs/heads/{remote.branch}"]

    def head(self, remote: GitRemote) -> HeadResult[GitRemote]:
        """The branch head; raises a GitSourceError subclass (never with a credential in its text)."""
        start = self.clock()
        self.runs += 1
        try:
            result = self.runner(self.argv(remote), self.environment(remote), self.timeout, self.max_output)
        except OSError as exc:
            raise GitSourceError(f"cannot run git ({exc.strerror})") from None
        elapsed = self.clock() - start
        if result.timed_out:
            raise UnreachableError(f"no answer within {self.timeout:g} s")
        if result.overflowed:
            raise MalformedAnswerError(f"an answer of more than {self.max_output} bytes is not a ref listing")
        if result.returncode == 2 and not result.stdout:
            # --exit-code: the server answered, and has no such branch.
            self._last.pop(remote.key, None)
            raise BranchMissingError(f"branch {remote.branch} not found")
        if result.returncode != 0:
            stderr = result.stderr.decode("utf-8", "replace")
            cls = classify(stderr, remote.url)
            if cls is BranchMissingError:
                self._last.pop(remote.key, None)
            what = {
                AuthRefusedError: "authentication refused",
                BranchMissingError: "repository not found",
                UnreachableError: "server unreachable",
                MalformedAnswerError: "the answer is not a ref listing",
            }.get(cls, f"git ls-remote failed (exit {result.returncode})")
            line = _telling_line(stderr)
            raise cls(f"{what}: {line}" if line else what)
        sha = parse_listing(result.stdout, remote.branch)
        if sha is None:
            raise MalformedAnswerError(f"the answer does not list refs/heads/{remote.branch}")
        unchanged = self._last.get(remote.key) == sha
        self._last[remote.key] = sha
        return HeadResult(remote, sha, not_modified=unchanged, elapsed=elapsed)

    def heads(self, remotes: Sequence[GitRemote]) -> dict[str, HeadResult[GitRemote]]:
        """Heads of many branches, one ls-remote each (a remote listed twice is read once); a failure is
        that remote's result, never an exception for the others."""
        results: dict[str, HeadResult[GitRemote]] = {}
        for remote in remotes:
            if remote.key in results:
                continue
            start = self.clock()
            try:
                results[remote.key] = self.head(remote)
            except GitSourceError as exc:
                results[remote.key] = HeadResult(
                    remote,
                    None,
                    error=str(exc),
                    missing=isinstance(exc, BranchMissingError),
                    kind=exc.kind,
                    elapsed=self.clock() - start,
                )
        return results
