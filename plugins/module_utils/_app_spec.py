"""One definition of an inventory app entry: every rule, once.

The preflight of the tls, apps and monitor roles (through the app_spec filters), the deploy engine and
the host's deployer all read an `apps:` entry through this module, so they agree on what an app is.
Standard library only: it runs inside Ansible (filters, AnsiballZ modules) and on hosts with a plain
python3.

Rules of the house it follows:
- every pattern is applied with `fullmatch` (a value ending in a newline never passes);
- unknown keys are refused, with a "did you mean" hint;
- every error names the entry as the operator wrote it: `apps[3] (name 'x'): <key> ... <rule>`;
- nothing secret is ever echoed (access passwords, env values), and echoed values are capped in size;
- arbitrary nested values are never walked or serialised: a YAML anchor bomb costs nothing here.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

try:
    from ansible_collections.secure_streamlit.hosting.plugins.module_utils._egress import egress_problem, parse_egress
    from ansible_collections.secure_streamlit.hosting.plugins.module_utils._quota import size_problem
except ImportError:  # beside the monitor on a host: the libraries sit in one flat directory
    from _egress import egress_problem, parse_egress  # type: ignore[no-redef]
    from _quota import size_problem  # type: ignore[no-redef]

# -- patterns (always used with fullmatch) ---------------------------------------------------------------
# App names end up in directory names, nginx zone names ("-" becomes "_"), Docker image references
# (streamlit-apps/<name>: a trailing "-" is an "invalid reference format") and container names.
NAME_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,39}[a-z0-9])?")
NAME_RULE = 'lower-case letters, digits and "-", starting with a letter, not ending with "-", at most 41 characters'
SHA_RE = re.compile(r"[0-9a-f]{40}")
# GitHub's rules for owners and repository names (an owner starts alphanumeric).
OWNER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
REPO_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")
# RFC 1123 host names, lower case: labels of letters, digits and inner hyphens, 253 characters at most.
HOST_RE = re.compile(r"(?=.{1,253}\Z)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")
# Host names in repository URLs and upstreams may be written in upper case.
ANY_CASE_HOST_RE = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
REPO_URL_RE = re.compile(
    r"https://(?P<host>[A-Za-z0-9.-]{1,253})(?::(?P<port>[0-9]{1,5}))?/(?P<owner>[^/]+)/(?P<name>[^/]+)"
)
# The characters a branch may hold here: git allows more, these are safe in URLs, argv and file names.
BRANCH_RE = re.compile(r"[A-Za-z0-9._/-]{1,255}")
# One segment of a file path inside the repository.
REPO_FILE_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]{1,255}")
PYTHON_RE = re.compile(r"3\.[0-9]{1,2}")
# Docker's size format as the role writes it: a number and an optional unit (b, k, m, g).
MEMORY_RE = re.compile(r"(?P<number>[0-9]{1,15})(?P<unit>[bkmg]?)")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# Ansible variable names (where secret values live).
VARIABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
SECRET_FILE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
# A path prefix on the edge: starts and ends with "/", plain segments (no "..", no nginx metacharacters).
ROUTE_PATH_RE = re.compile(r"/(?:[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,127}/){0,16}")
UPSTREAM_RE = re.compile(r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})?):(?P<port>[0-9]{1,5})")
HTPASSWD_USER_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}")
# Client certificate common names end up in a regular expression in nginx's configuration.
CLIENT_CN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}")

# An app's persistent data directory inside its container: absolute, plain segments, and not over what the
# image or the platform needs (the app's code, the venv, /tmp, the secrets mount, the system).
DATA_MOUNT_RE = re.compile(r"(?:/[a-z0-9][a-z0-9._-]{0,63}){1,8}")
DATA_MOUNT_DEFAULT = "/data"
# An inventory host or group name an app is placed on (plugins/module_utils/_placement.py checks that it
# exists): no leading "-" (argv), no spaces or glob and pattern characters (":", "*", "!", "&", "~").
PLACEMENT_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}")
DATA_MOUNT_RESERVED_TOP: frozenset[str] = frozenset(
    {
        "app",
        "bin",
        "boot",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "nonexistent",
        "opt",
        "proc",
        "root",
        "run",
        "sbin",
        "sys",
        "tmp",
        "usr",
        "var",
    }
)
DATA_KEYS = ("mount", "size")
# A swarm on this bench has 3 nodes; a few tasks per node is the useful range for Streamlit (one
# process per replica, sessions pinned to one), and a typo like 300 must not start 300 processes.
MAX_REPLICAS = 12
REPLICAS_RE = re.compile(r"[1-9][0-9]{0,2}")
DATABASE_KINDS = ("postgresql",)
# What the platform gives an app with a database: files in /run/secrets and libpq's settings in env.
DATABASE_SECRET_FILES = ("pgpass", "database-url")
DATABASE_ENV = ("PGHOST", "PGDATABASE", "PGUSER", "PGPASSFILE", "DATABASE_URL_FILE")
MIN_MEMORY_BYTES = 64 * 1024**2
MIN_PIDS = 16
MAX_PIDS = 4_194_304  # the kernel's own pid_max ceiling
MIN_CPUS = 0.01  # Docker refuses less
UPLOAD_MAX_MB_RANGE = (1, 102_400)
MAX_ENV_VALUE_CHARS = 32_768
MAX_SHOWN_CHARS = 80
MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

# Names an app cannot take because the platform uses them beside the apps' own:
# - component: apps_state_dir/component holds the secure component's wheel beside the apps' work dirs;
# - results, requests, rejected: the monitor's spool directories (apps answer there as <name>.json);
# - deployer, lock, locks, state, tmp, cache: the deployer's and the deploy engine's own directories;
# - data, database, backup, backups, secrets, logs, egress: per-app directories and units that the data,
#   database, backup and egress parts put beside the apps' (one name space for apps and platform);
# - sandbox, default, status, health: the edge's sandbox origin, nginx's default server, the operator's
#   status app and the edge's health endpoint share the apps' name space (routes, include files).
RESERVED_APP_NAMES: frozenset[str] = frozenset(
    {
        "component",
        "results",
        "requests",
        "rejected",
        "deployer",
        "lock",
        "locks",
        "state",
        "tmp",
        "cache",
        "data",
        "database",
        "backup",
        "backups",
        "secrets",
        "logs",
        "egress",
        "sandbox",
        "default",
        "status",
        "health",
    }
)

# Environment variables an app's `env` cannot set. Not a sandbox (the app's own code runs as it likes
# inside its container): these are what the platform sets or relies on, so an inventory entry must not
# quietly change them. Compared in upper case: lower-case twins (e.g. `path`, `http_proxy`-style
# readers) are refused with them.
# - PATH, HOME, TMPDIR, USER, LOGNAME, SHELL, HOSTNAME, PWD: the image's and Docker's (HOME=/tmp and
#   TMPDIR point at the only writable place);
# - SSL_CERT_FILE, SSL_CERT_DIR, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE: the image's trust store (it holds
#   the host's extra CAs);
# - BASH_ENV, GCONV_PATH, GLIBC_TUNABLES and LD_*: code the shell, libc or the loader would run or load
#   into the health check and the launcher;
# - PYTHON*: PYTHONPATH, PYTHONHOME, PYTHONSTARTUP, PYTHONUSERBASE ... change which code the launcher
#   and the health check import; only the output, encoding and diagnostic settings below are allowed;
# - STREAMLIT_*: the platform's Streamlit settings (XSRF protection, base path, upload limit);
# - SECURE_CONTEXT_*: the secure component's settings (its sandbox origin);
# - PIP_*: how packages are installed (index, certificates) is the platform's.
# Proxy variables (HTTP_PROXY ...) stay allowed: an app on a network with a way out may need them.
RESERVED_ENV_NAMES: frozenset[str] = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "USER",
        "LOGNAME",
        "SHELL",
        "HOSTNAME",
        "PWD",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "BASH_ENV",
        "GCONV_PATH",
        "GLIBC_TUNABLES",
    }
)
RESERVED_ENV_PREFIXES: tuple[str, ...] = ("STREAMLIT_", "SECURE_CONTEXT_", "LD_", "PIP_", "PYTHON")
ALLOWED_PYTHON_ENV_NAMES: frozenset[str] = frozenset(
    {
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONHASHSEED",
        "PYTHONIOENCODING",
        "PYTHONUTF8",
        "PYTHONFAULTHANDLER",
        "PYTHONWARNINGS",
        "PYTHONDEVMODE",
        "PYTHONTRACEMALLOC",
    }
)


class AppSpecError(ValueError):
    """One or more entries break a rule; `errors` lists every problem, each naming its entry."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# -- small helpers -------------------------------------------------------------------------------------
def show(value: object) -> str:
    """A value for an error message: short, and never the contents of a container."""
    if isinstance(value, str):
        text = repr(str(value[:MAX_SHOWN_CHARS]))
        if len(text) > MAX_SHOWN_CHARS + 2:
            text = text[:MAX_SHOWN_CHARS] + "...'"
        if len(value) > MAX_SHOWN_CHARS:
            text += f" (cut, {len(value)} characters)"
        return text
    if value is None or isinstance(value, bool | float):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value)) if value.bit_length() <= 128 else "a very large number"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a value of type {type(value).__name__}"


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _is_list(value: object) -> bool:
    return isinstance(value, list | tuple)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _hint(key: object, known: Iterable[str]) -> str:
    if not isinstance(key, str):
        return ""
    close = difflib.get_close_matches(key[:MAX_SHOWN_CHARS], sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key_errors(where: str, mapping: Mapping[Any, Any], known: Collection[str]) -> list[str]:
    """`where: unknown key 'x' (did you mean 'y'?); known: a, b` for every key not in `known`."""
    return [
        f"{where}unknown key {show(key)}{_hint(key, known)}; known keys: {', '.join(sorted(known))}"
        for key in mapping
        if not isinstance(key, str) or key not in known
    ]


def branch_problem(branch: object) -> str | None:
    """Why git (check-ref-format --branch) or this platform would refuse the branch name, or None."""
    if not isinstance(branch, str):
        return f"must be text, not {_kind(branch)}"
    if not BRANCH_RE.fullmatch(branch):
        return "may hold only letters, digits and . _ / - (1 to 255 characters; no spaces or control characters)"
    if branch.startswith("-"):
        return 'must not start with "-"'
    if branch.startswith("/") or branch.endswith("/"):
        return 'must not start or end with "/"'
    if "//" in branch:
        return 'must not contain "//"'
    if ".." in branch:
        return 'must not contain ".."'
    if branch.endswith("."):
        return 'must not end with "."'
    if branch == "HEAD":
        return 'must not be "HEAD"'
    for component in branch.split("/"):
        if component.startswith("."):
            return 'must not have a part starting with "."'
        if component.endswith(".lock"):
            return 'must not have a part ending with ".lock"'
    return None


def repo_file_problem(path: object, *, python: bool) -> str | None:
    """Why `path` is not a plain relative file path inside the repository (a .py file when python)."""
    if not isinstance(path, str):
        return f"must be text, not {_kind(path)}"
    if not path or len(path) > 255:
        return "must be 1 to 255 characters"
    segments = path.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        return 'must be a relative path inside the repository (no leading "/", no "//", no "." or ".." parts)'
    if not all(REPO_FILE_SEGMENT_RE.fullmatch(segment) for segment in segments):
        return "may hold only letters, digits and . _ - / "
    if not re.fullmatch(r"[A-Za-z0-9_]", path[0]):
        return "must start with a letter, a digit or _"
    if python and not path.endswith(".py"):
        return "must be a .py file"
    return None


def memory_bytes(value: object) -> int | None:
    """Bytes of a Docker memory size ("512m", "2g", 1073741824), or None when it does not parse."""
    if _is_int(value):
        return int(value) if 0 <= value < 10**15 else None  # type: ignore[operator]
    if isinstance(value, str):
        match = MEMORY_RE.fullmatch(value)
        if match:
            return int(match["number"]) * MEMORY_UNITS[match["unit"]]
    return None


def env_name_reserved(name: str) -> bool:
    upper = name.upper()
    if upper in RESERVED_ENV_NAMES:
        return True
    if upper.startswith("PYTHON"):
        return upper not in ALLOWED_PYTHON_ENV_NAMES
    return upper.startswith(RESERVED_ENV_PREFIXES)


def upstream_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be text host:port, not {_kind(value)}"
    match = UPSTREAM_RE.fullmatch(value)
    if not match or not 1 <= int(match["port"]) <= 65535:
        return "must be host:port with a port within 1..65535 (e.g. 127.0.0.1:8501)"
    return None


# -- git URLs (the plain-git provider) -------------------------------------------------------------------
PROVIDERS = ("github", "git")
# A path segment: what repository paths on GitLab, Gitea and plain servers use; never "." or "..".
GIT_SEGMENT_RE = re.compile(r"[A-Za-z0-9_~+][A-Za-z0-9._~+-]{0,254}")
GIT_SSH_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
# scp-like SSH: user@host:path.
GIT_SCP_RE = re.compile(r"(?P<user>[^@/:]{1,64})@(?P<host>[^@/:]{1,253}):(?P<path>.{1,1024})")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
GIT_URL_RULE = "https://HOST/path, ssh://[user@]HOST[:port]/path, user@HOST:path or (when enabled) file:///path"


def git_url_problem(url: object, *, allow_file: bool = False) -> str | None:
    """Why `url` is not a git URL the plain-git provider reads, or None. The answer never quotes the URL.

    Accepted: https://HOST[:port]/path, http:// to this host's loopback only (tests, a local mirror),
    ssh://[user@]HOST[:port]/path, user@HOST:path, and file:///path when `allow_file`. No credential, query
    or fragment; plain path segments only (no "..", no leading "-": nothing git or ssh could read as an
    option)."""
    if not isinstance(url, str):
        return "must be text"
    if len(url) > 2048 or not re.fullmatch(r"[\x21-\x7e]+", url):
        return "must be printable ASCII without spaces, at most 2048 characters"
    scp = GIT_SCP_RE.fullmatch(url) if "://" not in url else None
    if scp:
        if not GIT_SSH_USER_RE.fullmatch(scp["user"]) or not ANY_CASE_HOST_RE.fullmatch(scp["host"]):
            return "user@HOST:path needs a plain user name and host name"
        return _git_path_problem(scp["path"].removeprefix("/"))
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in ("https", "http", "ssh", "file"):
        return "must be " + GIT_URL_RULE
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "has a bad host or port"
    if parts.password is not None or (parts.username is not None and scheme != "ssh"):
        return "must not carry a credential (give it separately)"
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return "must have no query or fragment"
    if scheme == "file":
        if not allow_file:
            return "file:// is refused here (the lab and tests enable it: apps_git_allow_file_urls)"
        if parts.netloc:
            return "file:// must be file:///absolute/path"
        return _git_path_problem(parts.path.removeprefix("/"))
    if port == 0:
        return "has a bad host or port"
    host = parts.hostname or ""
    if not (ANY_CASE_HOST_RE.fullmatch(host) or host in LOOPBACK_HOSTS):
        return "needs a plain host name"
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        return "http:// is for this host's loopback only; use https://"
    if parts.username is not None and not GIT_SSH_USER_RE.fullmatch(parts.username):
        return "has a bad ssh user name"
    return _git_path_problem(parts.path.removeprefix("/"))


def _git_path_problem(path: str) -> str | None:
    segments = path.removesuffix("/").split("/")
    if not path or not all(GIT_SEGMENT_RE.fullmatch(s) for s in segments):
        return "needs a repository path of plain segments (letters, digits, . _ ~ + -; no '..')"
    return None


def url_host(url: str) -> str:
    """The host of an https/ssh/file URL or of user@host:path, lower case ("" when there is none)."""
    scp = GIT_SCP_RE.fullmatch(url) if "://" not in url else None
    if scp:
        return scp["host"].lower()
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


# -- defaults --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Defaults:
    """What an entry falls back to: the roles' apps_default_*, apps_git_base_url, tls_server_name,
    tls_upload_max_mb_default and the host's CPU count (when facts were gathered)."""

    branch: str = "main"
    entrypoint: str = "streamlit_app.py"
    requirements: str = "requirements.txt"
    cpus: float = 1.0
    memory: str = "1g"
    pids: int = 256
    upload_max_mb: int = 200
    git_base_url: str = "https://github.com"
    git_allow_file_urls: bool = False  # file:// repos (the lab, tests): a path on this host
    # file:// URLs of the platform's own repositories on this host (the status app's source), allowed even
    # when git_allow_file_urls is off: their content is the collection's, not a path nobody reviews.
    git_platform_repos: tuple[str, ...] = ()
    edge_host: str = "localhost"  # tls_server_name
    max_cpus: float | None = None  # the host's CPU count when known: cpus above it are refused

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], *, names: Mapping[str, str] | None = None) -> Defaults:
        """Build from a mapping with the field names as keys; a key whose value is None keeps the field's
        default. Unknown keys and bad values raise AppSpecError. `names` maps a key to the variable it
        came from (e.g. memory -> apps_default_memory), for the messages."""
        if not isinstance(m, Mapping):
            raise AppSpecError([f"defaults must be a mapping, not {_kind(m)}"])
        known = {f.name for f in fields(cls)}
        errors = unknown_key_errors("defaults: ", m, known)
        if errors:
            raise AppSpecError(errors)
        names = names or {}

        def where(key: str) -> str:
            return f"defaults: {key}" + (f" ({names[key]})" if key in names else "")

        values: dict[str, Any] = {}
        for key, value in m.items():
            if value is None:
                continue
            problem, converted = _DEFAULT_CHECKS[key](value)
            if problem:
                errors.append(f"{where(key)} {show(value)} {problem}")
            else:
                values[key] = converted
        if errors:
            raise AppSpecError(errors)
        return cls(**values)


def _number_from(value: object, *, integer: bool) -> int | float | None:
    """A role variable may arrive as text (e.g. -e key=value): accept plain decimal text."""
    if _is_int(value) or (not integer and _is_number(value)):
        return value  # type: ignore[return-value]
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}" if integer else r"[0-9]{1,9}(?:\.[0-9]{1,9})?", value):
        return int(value) if integer else float(value)
    return None


def _default_branch(value: object) -> tuple[str | None, Any]:
    problem = branch_problem(value)
    return (f"is not a valid branch name: it {problem}", None) if problem else (None, str(value))


def _default_file(python: bool) -> Callable[[object], tuple[str | None, Any]]:
    def check(value: object) -> tuple[str | None, Any]:
        problem = repo_file_problem(value, python=python)
        return (problem, None) if problem else (None, str(value))

    return check


def _default_cpus(value: object) -> tuple[str | None, Any]:
    number = _number_from(value, integer=False)
    if number is None or not math.isfinite(number) or number < MIN_CPUS:
        return f"must be a number of CPUs >= {MIN_CPUS}", None
    return None, float(number)


def _default_max_cpus(value: object) -> tuple[str | None, Any]:
    number = _number_from(value, integer=False)
    if number is None or not math.isfinite(number) or number <= 0:
        return "must be the host's number of CPUs (> 0)", None
    return None, float(number)


def _default_memory(value: object) -> tuple[str | None, Any]:
    size = memory_bytes(value)
    if size is None or size < MIN_MEMORY_BYTES:
        return "must be a size like 512m or 2g (a number and b, k, m or g), at least 64m", None
    return None, str(value)


def _default_int(low: int, high: int, what: str) -> Callable[[object], tuple[str | None, Any]]:
    def check(value: object) -> tuple[str | None, Any]:
        number = _number_from(value, integer=True)
        if number is None or not low <= number <= high:
            return f"must be {what} within {low}..{high}", None
        return None, int(number)

    return check


def _default_bool(value: object) -> tuple[str | None, Any]:
    if isinstance(value, bool):
        return None, value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return None, value.lower() == "true"
    return "must be true or false", None


def _default_platform_repos(value: object) -> tuple[str | None, Any]:
    if not _is_list(value) or not all(
        isinstance(url, str) and url.startswith("file:///") and git_url_problem(url, allow_file=True) is None
        for url in value  # type: ignore[union-attr]
    ):
        return "must be a list of file:///absolute/path URLs", None
    return None, tuple(str(url) for url in value)  # type: ignore[union-attr]


def _default_text(value: object) -> tuple[str | None, Any]:
    if not isinstance(value, str) or not re.fullmatch(r"[^\s\x00-\x1f\x7f]{1,2048}", value):
        return "must be text without spaces or control characters", None
    return None, str(value)


_DEFAULT_CHECKS: dict[str, Callable[[object], tuple[str | None, Any]]] = {
    "branch": _default_branch,
    "entrypoint": _default_file(python=True),
    "requirements": _default_file(python=False),
    "cpus": _default_cpus,
    "memory": _default_memory,
    "pids": _default_int(MIN_PIDS, MAX_PIDS, "a whole number of processes"),
    "upload_max_mb": _default_int(*UPLOAD_MAX_MB_RANGE, "a whole number of megabytes"),
    "git_base_url": _default_text,
    "git_allow_file_urls": _default_bool,
    "git_platform_repos": _default_platform_repos,
    "edge_host": _default_text,
    "max_cpus": _default_max_cpus,
}


# -- the model -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AppSpec:
    """One app entry, validated, with its defaults filled in."""

    index: int
    name: str
    repo: str | None  # as written (owner/name or https URL); None when `upstream` is pinned
    url: str | None  # the clone URL
    provider: str | None  # "github" (the API) or "git" (git ls-remote of url); None when `upstream` is pinned
    branch: str
    entrypoint: str
    requirements: str
    python: str  # "" (the base image's) or "3.11"
    cpus: float
    memory: str  # Docker's form, e.g. "512m"
    memory_bytes: int
    pids: int
    env: dict[str, str]  # values as text
    secrets: dict[str, str]  # file name -> variable name (never values)
    route_host: str  # "" = the edge's own server name
    route_path: str  # "/triage/"
    upload_max_mb: int
    upstream: str | None  # pinned upstream host:port (served elsewhere; not managed)
    data_mount: str  # where the app's persistent data directory is mounted ("" = none)
    database: str  # "" or "postgresql": a database and role of its own on the host's server
    # The edge's access rules: {"htpasswd_users": [{"name", "password"}], "client_cert_cns": [...]}.
    # Passwords are kept as given (the tls role hashes them); never in repr, to_dict or messages.
    access: dict[str, Any] = field(repr=False)
    # Allowed destinations, normalised by _egress.parse_egress ([] = no route out, the default).
    egress: list[dict[str, Any]] = field(default_factory=list)
    # How the repository is read when it is private ({} = no credential): {"kind": "deploy_key"},
    # {"kind": "token", "username", "token_var"} or {"kind": "github_app", "app_id", "installation_id",
    # "private_key_var"}. Names of vault variables only, never a secret: the values reach the host as
    # root-only files (the apps role) and are read there by the engine and the monitor.
    repo_auth: dict[str, Any] = field(default_factory=dict)
    # The data directory's size limit ("10G"; "" = none): a project quota where the file system has them
    # (_quota.py), else only compared with the usage by the status command.
    data_size: str = ""
    # The inventory hosts and groups the app runs on ([] = every host of the play), and whether the
    # operator accepts that each of several hosts keeps its own copy of the app's data and database.
    hosts: list[str] = field(default_factory=list)
    per_host_state: bool = False
    # Tasks of a swarm service (docs/multi-host.md); 1 = a single container per host as before.
    replicas: int = 1

    @property
    def managed(self) -> bool:
        """Deployed and run by this platform (not a pinned upstream)."""
        return self.upstream is None

    @property
    def base_url_path(self) -> str:
        """Streamlit's server.baseUrlPath: the route path without its slashes ("" at the root)."""
        return self.route_path.strip("/")

    @property
    def route_key(self) -> str:
        """Host and path; the host is empty for the edge's own server name."""
        return self.route_host + self.route_path

    @property
    def label(self) -> str:
        return f"apps[{self.index}] (name {self.name!r})"

    @property
    def database_name(self) -> str:
        """The app's database and role on the host's server ("" without one): app_ and the name, "-" as "_"."""
        return database_name(self.name) if self.database else ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, without access passwords (access reduced to user names and CNs)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = dict(value) if isinstance(value, dict) else value
        out["egress"] = [dict(entry) for entry in self.egress]
        out["hosts"] = list(self.hosts)
        out["access"] = {
            "htpasswd_users": [user["name"] for user in self.access.get("htpasswd_users", [])],
            "client_cert_cns": list(self.access.get("client_cert_cns", [])),
        }
        # Only when set: entries without single sign-on keep the shape they had before it existed.
        if self.access.get("oidc") is not None:
            out["access"]["oidc"] = _copy_oidc(self.access["oidc"])
        out.update(
            managed=self.managed,
            base_url_path=self.base_url_path,
            route_key=self.route_key,
            database_name=self.database_name,
        )
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AppSpec:
        """Read back what to_dict wrote (the host's deployer does), checking every field's type and rule
        again. The access rules come back without passwords."""
        if not isinstance(d, Mapping):
            raise AppSpecError([f"an app spec must be a mapping, not {_kind(d)}"])
        where = f"app spec {show(d.get('name'))}: "
        known = {f.name for f in fields(cls)} | set(_DERIVED)
        errors = unknown_key_errors(where, d, known)
        errors += [f"{where}{key} is missing" for key in sorted(known) if key not in d]
        if errors:
            raise AppSpecError(errors)
        for key, check in _FIELD_CHECKS.items():
            problem = check(d[key])
            if problem:
                errors.append(f"{where}{key} {show(d[key])} {problem}")
        if errors:
            raise AppSpecError(errors)
        access = d["access"]
        spec = cls(
            **{key: d[key] for key in _FIELD_CHECKS if key != "access"},
            access={
                "htpasswd_users": [{"name": str(user)} for user in access["htpasswd_users"]],
                "client_cert_cns": [str(cn) for cn in access["client_cert_cns"]],
                **({"oidc": _copy_oidc(access["oidc"])} if access.get("oidc") is not None else {}),
            },
        )
        errors = [
            f"{where}{key} {show(d[key])} does not match the spec ({show(getattr(spec, key))})"
            for key in _DERIVED
            if d[key] != getattr(spec, key)
        ]
        if errors:
            raise AppSpecError(errors)
        return spec


_DERIVED = ("managed", "base_url_path", "route_key", "database_name")


def _check_str(pattern: re.Pattern[str] | None = None, *, optional: bool = False) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            return f"must be text, not {_kind(value)}"
        if pattern is not None and not pattern.fullmatch(value):
            return f"must match {pattern.pattern}"
        return None

    return check


def _check_env(value: object) -> str | None:
    if not isinstance(value, Mapping):
        return "must be a mapping"
    for key, text in value.items():
        if not isinstance(key, str) or not ENV_NAME_RE.fullmatch(key) or env_name_reserved(key):
            return f"has a bad or reserved name {show(key)}"
        if not isinstance(text, str) or _env_text_problem(text):
            return f"has a bad value for {key}"
    return None


def _check_secrets(value: object) -> str | None:
    if not isinstance(value, Mapping):
        return "must be a mapping"
    for key, variable in value.items():
        if not isinstance(key, str) or not SECRET_FILE_RE.fullmatch(key):
            return f"has a bad file name {show(key)}"
        if not isinstance(variable, str) or not VARIABLE_RE.fullmatch(variable):
            return f"has a bad variable name {show(variable)}"
    return None


def _check_access(value: object) -> str | None:
    if not isinstance(value, Mapping) or set(value) - {"oidc"} != {"htpasswd_users", "client_cert_cns"}:
        return "must be a mapping of htpasswd_users, client_cert_cns and oidc"
    oidc = value.get("oidc")
    if oidc is not None and (
        not isinstance(oidc, Mapping)
        or set(oidc) != set(OIDC_KEYS)
        or not _is_list(oidc["groups"])
        or not all(isinstance(g, str) and OIDC_GROUP_RE.fullmatch(g) for g in oidc["groups"])
        or not _is_list(oidc["users"])
        or not all(isinstance(u, str) and OIDC_USER_RE.fullmatch(u) for u in oidc["users"])
        or not (oidc["groups"] or oidc["users"])
    ):
        return "has a bad oidc rule"
    users, cns = value["htpasswd_users"], value["client_cert_cns"]
    if not _is_list(users) or not all(isinstance(u, str) and HTPASSWD_USER_RE.fullmatch(u) for u in users):
        return "has bad htpasswd user names"
    if not _is_list(cns) or not all(isinstance(c, str) and CLIENT_CN_RE.fullmatch(c) for c in cns):
        return "has bad client certificate names"
    return None


def _check_int(low: int, high: int) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        return None if _is_int(value) and low <= value <= high else f"must be a whole number within {low}..{high}"  # type: ignore[operator]

    return check


_FIELD_CHECKS: dict[str, Callable[[object], str | None]] = {
    "index": _check_int(0, 10**9),
    "name": _check_str(NAME_RE),
    "repo": _check_str(optional=True),
    "url": _check_str(optional=True),
    "provider": lambda v: None if v is None or v in PROVIDERS else "must be github, git or null",
    "branch": branch_problem,
    "entrypoint": lambda v: repo_file_problem(v, python=True),
    "requirements": lambda v: repo_file_problem(v, python=False),
    "python": lambda v: None if v == "" or (isinstance(v, str) and PYTHON_RE.fullmatch(v)) else 'must be "" or 3.x',
    "cpus": lambda v: None if _is_number(v) and math.isfinite(v) and v >= MIN_CPUS else "must be a number of CPUs",  # type: ignore[arg-type,operator]
    "memory": lambda v: None if isinstance(v, str) and memory_bytes(v) is not None else "must be a Docker size",
    "memory_bytes": _check_int(MIN_MEMORY_BYTES, 10**18),
    "pids": _check_int(MIN_PIDS, MAX_PIDS),
    "env": _check_env,
    "secrets": _check_secrets,
    "route_host": lambda v: None if v == "" or (isinstance(v, str) and HOST_RE.fullmatch(v)) else "must be a host name",
    "route_path": _check_str(ROUTE_PATH_RE),
    "upload_max_mb": _check_int(*UPLOAD_MAX_MB_RANGE),
    "upstream": lambda v: None if v is None else upstream_problem(v),
    "data_mount": lambda v: None if v == "" else data_mount_problem(v),
    "data_size": lambda v: None if v == "" else size_problem(v),
    "database": lambda v: None if v == "" or v in DATABASE_KINDS else f"must be {' or '.join(DATABASE_KINDS)} or empty",
    "access": _check_access,
    "egress": egress_problem,
    "repo_auth": lambda v: repo_auth_problem(v),  # pylint: disable=unnecessary-lambda  # defined below
    "hosts": lambda v: hosts_problem(v),  # pylint: disable=unnecessary-lambda  # defined below
    "per_host_state": lambda v: None if isinstance(v, bool) else "must be true or false",
    "replicas": _check_int(1, MAX_REPLICAS),
}


# -- parsing one entry -----------------------------------------------------------------------------------
class _Entry:
    """The state of one entry while its keys are parsed: errors and the fields found so far."""

    def __init__(self, prefix: str, raw: Mapping[Any, Any], defaults: Defaults, defined: set[str] | None) -> None:
        self.prefix = prefix
        self.raw = raw
        self.defaults = defaults
        self.defined = defined
        self.errors: list[str] = []
        self.values: dict[str, Any] = {}
        self.pinned = raw.get("upstream") is not None

    def error(self, message: str) -> None:
        self.errors.append(f"{self.prefix}: {message}")

    def unknown_keys(self, where: str, mapping: Mapping[Any, Any], known: Collection[str]) -> None:
        self.errors.extend(f"{self.prefix}: {e}" for e in unknown_key_errors(where, mapping, known))


def _parse_name(e: _Entry, value: object) -> None:
    if value is None:
        e.error(f"name is missing: every app needs a name ({NAME_RULE})")
    elif not isinstance(value, str) or not NAME_RE.fullmatch(value):
        e.error(f"name must be {NAME_RULE} (fullmatch {NAME_RE.pattern})")
    elif value in RESERVED_APP_NAMES:
        e.error(
            f"name {value!r} is reserved: the platform uses it beside the apps' names; "
            f"reserved: {', '.join(sorted(RESERVED_APP_NAMES))}"
        )
    else:
        e.values["name"] = str(value)


REPO_FORMS = "owner/name, https://HOST/owner/name or a git URL"


def _parse_provider(e: _Entry, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or value not in PROVIDERS:
        e.error(
            f"provider {show(value)} must be github or git (or left out: owner/name and https URLs on GitHub or "
            "on apps_git_base_url's host mean github, other git URLs git)"
        )
    else:
        e.values["provider"] = value


def shown_repo(value: str) -> str:
    """The repo for a message: not shown when it could carry a credential (user:password@)."""
    scp = GIT_SCP_RE.fullmatch(value) if "://" not in value else None
    if "@" in value and not (scp and GIT_SSH_USER_RE.fullmatch(scp["user"])):
        return "(value not shown: it may hold a credential)"
    return show(value)


def _parse_repo(e: _Entry, value: object) -> None:
    explicit = e.raw.get("provider")
    if explicit is not None and e.values.get("provider") is None:
        return  # a bad provider is reported once, by its own rule
    if value is None:
        if not e.pinned:
            e.error(f"repo is missing: every app needs a repo ({REPO_FORMS}) or an upstream")
        return
    if not isinstance(value, str):
        e.error(f"repo must be text ({REPO_FORMS}), not {_kind(value)}")
        return
    short = "://" not in value and "@" not in value and ":" not in value
    github_hosts = {"github.com", url_host(e.defaults.git_base_url)}
    match = REPO_URL_RE.fullmatch(value) if "@" not in value else None
    on_github = value.startswith("https://") and "@" not in value and url_host(value) in github_hosts
    if short or (explicit == "github" and match) or (explicit is None and on_github):
        _parse_github_repo(e, value, match, explicit or "github")
        return
    if explicit == "github":
        e.error(f"repo {shown_repo(value)}: provider github needs owner/name or https://HOST/owner/name")
        return
    allow_file = e.defaults.git_allow_file_urls or value in e.defaults.git_platform_repos
    problem = git_url_problem(value, allow_file=allow_file)
    if problem:
        e.error(f"repo {shown_repo(value)}: a git URL {problem} ({GIT_URL_RULE})")
        return
    e.values.update(repo=value, url=value, provider="git")


def _parse_github_repo(e: _Entry, value: str, match: re.Match[str] | None, provider: str) -> None:
    """owner/name (cloned from apps_git_base_url) or https://HOST/owner/name: GitHub's naming rules."""
    rule = f"repo {show(value)} must be owner/name or https://HOST[:port]/owner/name[.git] (no '..')"
    if "://" in value and not match:
        e.error(f"{rule}; another git server's URL takes provider: git")
        return
    if match:
        owner, name = match["owner"], match["name"].removesuffix(".git")
        port = match["port"]
        if not ANY_CASE_HOST_RE.fullmatch(match["host"]) or (port is not None and not 1 <= int(port) <= 65535):
            e.error(rule)
            return
        url = value
    else:
        owner, _slash, name = value.partition("/")
        if name.endswith(".git"):
            e.error(f"repo {show(value)}: write owner/name without .git (the clone URL adds it)")
            return
        url = f"{e.defaults.git_base_url.rstrip('/')}/{value}.git"
    if not OWNER_RE.fullmatch(owner) or not REPO_NAME_RE.fullmatch(name) or name in (".", ".."):
        e.error(rule)
        return
    if provider == "git":
        # The base is the operator's own setting (file:// in the lab): file URLs come through here.
        problem = git_url_problem(url, allow_file=True)
        if problem:
            e.error(f"repo {show(value)} with provider git: the clone URL from apps_git_base_url {problem}")
            return
    e.values.update(repo=str(value), url=url, provider=provider)


def _parse_branch(e: _Entry, value: object) -> None:
    branch = e.defaults.branch if value is None else value
    problem = branch_problem(branch)
    if problem:
        e.error(f"branch {show(branch)} is not a valid branch name: it {problem}")
    else:
        e.values["branch"] = str(branch)


def _repo_file_parser(key: str, *, python: bool) -> Callable[[_Entry, object], None]:
    def parse(e: _Entry, value: object) -> None:
        path = getattr(e.defaults, key) if value is None else value
        problem = repo_file_problem(path, python=python)
        if problem:
            e.error(f"{key} {show(path)} {problem} (a relative path inside the repository)")
        else:
            e.values[key] = str(path)

    return parse


def _parse_python(e: _Entry, value: object) -> None:
    if value is None:
        e.values["python"] = ""
    elif isinstance(value, float):
        e.error(
            f'python {value!r} is a number: YAML reads 3.10 as 3.1; quote it (python: "3.10"), '
            "a major.minor version like the base image's"
        )
    elif not isinstance(value, str) or not (value == "" or PYTHON_RE.fullmatch(value)):
        e.error(f'python {show(value)} must be text major.minor (e.g. "3.11"), the Python of apps_base_image')
    else:
        e.values["python"] = str(value)


RESOURCE_KEYS = ("cpus", "memory", "pids")


def _parse_resources(e: _Entry, value: object) -> None:
    d = e.defaults
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        e.error(f"resources must be a mapping {{cpus, memory, pids}}, not {_kind(value)}")
        value = {}
    e.unknown_keys("resources: ", value, RESOURCE_KEYS)
    cpus = value.get("cpus")
    cpus = d.cpus if cpus is None else cpus
    if not _is_number(cpus) or not math.isfinite(cpus) or cpus < MIN_CPUS:
        e.error(f"resources.cpus {show(cpus)} must be a number of CPUs >= {MIN_CPUS} (e.g. 0.5 or 2)")
    elif d.max_cpus is not None and cpus > d.max_cpus:
        e.error(f"resources.cpus {show(cpus)} is more than the host has ({d.max_cpus:g}): Docker would refuse it")
    else:
        e.values["cpus"] = float(cpus)
    memory = value.get("memory")
    memory = d.memory if memory is None else memory
    size = memory_bytes(memory)
    if size is None or size < MIN_MEMORY_BYTES:
        e.error(f"resources.memory {show(memory)} must be a size like 512m or 2g (b, k, m or g), at least 64m")
    else:
        e.values["memory"] = str(memory)
        e.values["memory_bytes"] = size
    pids = value.get("pids")
    pids = d.pids if pids is None else pids
    if not _is_int(pids) or not MIN_PIDS <= pids <= MAX_PIDS:
        e.error(f"resources.pids {show(pids)} must be a whole number of processes within {MIN_PIDS}..{MAX_PIDS}")
    else:
        e.values["pids"] = int(pids)


def _env_text_problem(text: str) -> str | None:
    if len(text) > MAX_ENV_VALUE_CHARS:
        return f"is longer than {MAX_ENV_VALUE_CHARS} characters"
    if "\n" in text or "\r" in text or "\0" in text:
        return "holds a line break or NUL (put multi-line or secret values in secrets)"
    return None


def _parse_env(e: _Entry, value: object) -> None:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        e.error(f"env must be a mapping of NAME: text, not {_kind(value)}")
        return
    env: dict[str, str] = {}
    for key, raw in value.items():
        if not isinstance(key, str) or not ENV_NAME_RE.fullmatch(key):
            e.error(f"env name {show(key)} must match {ENV_NAME_RE.pattern}")
            continue
        if env_name_reserved(key):
            e.error(
                f"env {key} is reserved: the platform sets or relies on it (PATH, HOME, TMPDIR, the trust store, "
                "LD_*, PYTHON* but output settings, STREAMLIT_*, SECURE_CONTEXT_*, PIP_*)"
            )
            continue
        # The value is never shown: a multi-line value is often a key pasted into the wrong place.
        if isinstance(raw, bool):
            e.error(f'env {key} is a boolean: quote it (e.g. "true"), Docker takes text')
        elif isinstance(raw, str):
            problem = _env_text_problem(raw)
            if problem:
                e.error(f"env {key} value (not shown) {problem}")
            else:
                env[key] = str(raw)
        elif _is_int(raw):
            env[key] = str(int(raw))
        elif isinstance(raw, float) and math.isfinite(raw):
            env[key] = repr(float(raw))
        else:
            e.error(f"env {key} must be text or a number, not {_kind(raw)}")
    e.values["env"] = env


def _parse_secrets(e: _Entry, value: object) -> None:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        e.error(
            f"secrets must be a mapping of file name: variable name (e.g. api-token: vault_triage_api_token), "
            f"not {_kind(value)}"
        )
        return
    secrets: dict[str, str] = {}
    for key, variable in value.items():
        if not isinstance(key, str) or not SECRET_FILE_RE.fullmatch(key):
            for_variable = f" (for {variable})" if isinstance(variable, str) and VARIABLE_RE.fullmatch(variable) else ""
            e.error(
                f"secrets file name {show(key)}{for_variable} must match {SECRET_FILE_RE.pattern} (a plain file name)"
            )
        elif not isinstance(variable, str) or not VARIABLE_RE.fullmatch(variable):
            # Not shown: what stands here instead of a variable name is often the secret itself.
            e.error(
                f"secrets {key}: the value (not shown, {_kind(variable)}) must be the name of a variable holding "
                "the secret (from a vault), never the secret itself"
            )
        elif e.defined is not None and variable not in e.defined:
            e.error(f"secrets {key}: variable {variable!r} is not defined (put it in a vault)")
        else:
            secrets[key] = str(variable)
    e.values["secrets"] = secrets


ROUTE_KEYS = ("path", "host")


def _parse_route(e: _Entry, value: object) -> None:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        e.error(f"route must be a mapping ({{path: /x/}} or {{host: x.example.org}}), not {_kind(value)}")
        return
    e.unknown_keys("route: ", value, ROUTE_KEYS)
    path, host = value.get("path"), value.get("host")
    if path is not None and host is not None:
        e.error("route takes either path (a prefix on the edge's own name) or host (a name of its own), not both")
        return
    if host is not None:
        if not isinstance(host, str) or not HOST_RE.fullmatch(host):
            e.error(
                f"route host {show(host)} is not a valid host name (lower-case letters, digits, hyphens inside "
                "labels, dots between labels, at most 253 characters)"
            )
            return
        if host == e.defaults.edge_host.lower():
            e.error(f"route host {host!r} is the edge's own name: use route.path for an app there")
            return
        e.values["route_host"], e.values["route_path"] = str(host), "/"
        return
    if path is None:
        name = e.values.get("name")
        if name is not None:
            e.values["route_host"], e.values["route_path"] = "", f"/{name}/"
        return
    if not isinstance(path, str) or not ROUTE_PATH_RE.fullmatch(path):
        e.error(
            f"route path {show(path)} must start and end with / and hold only letters, digits and . _ ~ - "
            "(e.g. /triage/)"
        )
    elif path == "/":
        e.error("route path '/' on the edge's own name would swallow every other app: give a prefix like /triage/")
    else:
        e.values["route_host"], e.values["route_path"] = "", str(path)


def _parse_upload_max_mb(e: _Entry, value: object) -> None:
    low, high = UPLOAD_MAX_MB_RANGE
    mb = e.defaults.upload_max_mb if value is None else value
    if not _is_int(mb) or not low <= mb <= high:
        e.error(f"upload_max_mb {show(mb)} must be a whole number of megabytes within {low}..{high}")
    else:
        e.values["upload_max_mb"] = int(mb)


def data_mount_problem(mount: object) -> str | None:
    """Why `mount` cannot be an app's data directory in its container, or None."""
    if not isinstance(mount, str):
        return f"must be an absolute path such as {DATA_MOUNT_DEFAULT}, not {_kind(mount)}"
    if not DATA_MOUNT_RE.fullmatch(mount) or any(part in (".", "..") for part in mount.split("/")):
        return (
            f"must be an absolute path such as {DATA_MOUNT_DEFAULT}: lower-case letters, digits, '.', '_' and '-' "
            "between single slashes, no trailing slash, no '..'"
        )
    top = mount.split("/")[1]
    if top in DATA_MOUNT_RESERVED_TOP:
        return (
            f"would cover /{top}, which the image or the platform needs (reserved: "
            f"{', '.join('/' + t for t in sorted(DATA_MOUNT_RESERVED_TOP))}); use e.g. {DATA_MOUNT_DEFAULT}"
        )
    return None


def _parse_data(e: _Entry, value: object) -> None:
    """`data: true` or `data: {mount: /data, size: 10G}`: a directory that outlives deploys, mounted
    read-write, limited in size where the file system has project quotas."""
    e.values["data_mount"] = ""
    e.values["data_size"] = ""
    if value is None or value is False:
        return
    if value is True:
        e.values["data_mount"] = DATA_MOUNT_DEFAULT
        return
    if not isinstance(value, Mapping):
        e.error(f"data must be true or a mapping {{mount, size}}, not {_kind(value)}")
        return
    e.unknown_keys("data: ", value, DATA_KEYS)
    if "size" in value:
        problem = size_problem(value["size"])
        if problem:
            e.error(f"data.size {show(value['size'])} {problem}")
        else:
            e.values["data_size"] = value["size"]
    mount = value.get("mount", DATA_MOUNT_DEFAULT)
    problem = data_mount_problem(mount)
    if problem:
        e.error(f"data.mount {show(mount)} {problem}")
    else:
        e.values["data_mount"] = mount


def database_name(app: str) -> str:
    """The database and role of an app: a PostgreSQL identifier that needs no quoting."""
    return "app_" + app.replace("-", "_")


def _parse_database(e: _Entry, value: object) -> None:
    """`database: postgresql`: a database and role of the app's own, reached over the server's socket."""
    e.values["database"] = ""
    if value is None or value is False:
        return
    if not isinstance(value, str) or value not in DATABASE_KINDS:
        e.error(f"database {show(value)} must be {' or '.join(DATABASE_KINDS)} (or left out)")
        return
    e.values["database"] = value
    taken = sorted(set(e.values.get("secrets", {})) & set(DATABASE_SECRET_FILES))
    if taken:
        e.error(f"secrets {', '.join(taken)}: the platform writes these files for an app with a database")
    set_env = sorted(set(e.values.get("env", {})) & set(DATABASE_ENV))
    if set_env:
        e.error(f"env {', '.join(set_env)}: the platform sets these for an app with a database")


def _parse_egress(e: _Entry, value: object) -> None:
    """`egress: [{host, port} or {cidr, port}]`: the destinations the app may reach (none when left out)."""
    entries, errors = parse_egress(value)
    for message in errors:
        e.error(message)
    e.values["egress"] = entries


ACCESS_KEYS = ("htpasswd_users", "client_cert_cns", "oidc")


AUTH_KINDS = ("deploy_key", "token", "github_app")
AUTH_TOKEN_KEYS = ("token", "username")
GITHUB_APP_KEYS = ("app_id", "installation_id", "private_key")
AUTH_USERNAME_DEFAULT = "x-access-token"  # what GitHub expects with a token; GitLab takes "oauth2"
AUTH_USERNAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
# Forms of a credential written in place of a variable name (GitHub's and GitLab's token prefixes, a PEM
# block): refused without being shown.
_SECRET_LOOKING_RE = re.compile(r"(?:gh[pousr]_|github_pat_|glpat-|-----BEGIN)", re.IGNORECASE)


def _ssh_url(url: str) -> bool:
    return url.startswith("ssh://") or ("://" not in url and GIT_SCP_RE.fullmatch(url) is not None)


def _vault_variable(e: _Entry, where: str, value: object, what: str) -> str | None:
    """The name of the vault variable that holds a credential, or None after an error that never shows
    what was written (it is often the credential itself)."""
    if not isinstance(value, str) or not VARIABLE_RE.fullmatch(value) or _SECRET_LOOKING_RE.match(value):
        e.error(
            f"{where}: the value (not shown, {_kind(value)}) must be the name of a variable holding {what} "
            "(e.g. vault_triage_repo_token, from a vault), never the credential itself nor a template of it"
        )
        return None
    if e.defined is not None and value not in e.defined:
        # Not shown either: a token without a telling prefix looks like a variable name.
        e.error(f"{where}: the value (not shown) names no defined variable: put {what} in a vault, give its name")
        return None
    return value


def _positive_id(e: _Entry, where: str, value: object) -> int | None:
    number = _number_from(value, integer=True)
    if number is None or isinstance(number, bool) or not 1 <= int(number) <= 2**53:
        e.error(f"{where} {show(value)} must be a positive whole number (GitHub shows it on the App's page)")
        return None
    return int(number)


def _parse_auth(e: _Entry, value: object) -> None:
    """`auth`: how a private repository is read. Exactly one of deploy_key (an SSH key generated on the
    host), token (HTTPS, the name of a vault variable) or github_app (an App's id, its installation's id
    and the name of the vault variable holding its private key)."""
    e.values["repo_auth"] = {}
    if value is None:
        return
    if not isinstance(value, Mapping):
        e.error(
            "auth must be a mapping: {deploy_key: true}, {token: VAULT_VARIABLE} or "
            f"{{github_app: {{app_id, installation_id, private_key}}}}, not {_kind(value)}"
        )
        return
    e.unknown_keys("auth: ", value, (*AUTH_KINDS, "username"))
    kinds = [k for k in AUTH_KINDS if k in value]
    if len(kinds) != 1:
        e.error(f"auth takes exactly one of {', '.join(AUTH_KINDS)} (found {', '.join(kinds) or 'none'})")
        return
    kind = kinds[0]
    if "username" in value and kind != "token":
        e.error("auth.username goes with auth.token only")
        return
    url = e.values.get("url")
    if kind == "deploy_key":
        key = value["deploy_key"]
        if key is not True:
            # Not shown: a path or the key itself. A key from elsewhere would have to pass through the
            # controller and Ansible's output; a key made on the host never leaves it.
            e.error(
                f"auth.deploy_key (not shown, {_kind(key)}) must be true: the key is generated on the host "
                "(ed25519, root-only) and its public half printed for the repository's deploy keys; a key "
                "path or key text is refused"
            )
            return
        if isinstance(url, str) and not _ssh_url(url):
            e.error(
                f"auth.deploy_key needs an SSH repo URL (ssh://git@HOST/owner/name.git or git@HOST:owner/name.git), "
                f"not {shown_repo(url)}"
            )
            return
        e.values["repo_auth"] = {"kind": "deploy_key"}
        return
    if isinstance(url, str) and not url.startswith(("https://", "http://")):
        e.error(f"auth.{kind} needs an https:// repo URL, not {shown_repo(url)} (SSH takes auth.deploy_key)")
        return
    if kind == "token":
        username = value.get("username", AUTH_USERNAME_DEFAULT)
        if not isinstance(username, str) or not AUTH_USERNAME_RE.fullmatch(username):
            e.error(f"auth.username {show(username)} must match {AUTH_USERNAME_RE.pattern}")
            return
        variable = _vault_variable(e, "auth.token", value["token"], "the token")
        if variable is not None:
            e.values["repo_auth"] = {"kind": "token", "username": username, "token_var": variable}
        return
    app = value["github_app"]
    if not isinstance(app, Mapping):
        e.error(f"auth.github_app must be a mapping {{app_id, installation_id, private_key}}, not {_kind(app)}")
        return
    e.unknown_keys("auth.github_app: ", app, GITHUB_APP_KEYS)
    missing = [k for k in GITHUB_APP_KEYS if app.get(k) is None]
    if missing:
        e.error(f"auth.github_app needs {', '.join(missing)}")
        return
    if e.values.get("provider") not in (None, "github"):
        e.error("auth.github_app needs a GitHub repo (provider github): its tokens come from GitHub's API")
        return
    app_id = _positive_id(e, "auth.github_app.app_id", app["app_id"])
    installation = _positive_id(e, "auth.github_app.installation_id", app["installation_id"])
    variable = _vault_variable(e, "auth.github_app.private_key", app["private_key"], "the App's private key")
    if app_id is not None and installation is not None and variable is not None:
        e.values["repo_auth"] = {
            "kind": "github_app",
            "app_id": app_id,
            "installation_id": installation,
            "private_key_var": variable,
        }


def repo_auth_problem(value: object) -> str | None:
    """Why `value` is not an AppSpec's repo_auth (as _parse_auth makes it), or None."""
    if not isinstance(value, Mapping):
        return "must be a mapping"
    if not value:
        return None
    shapes: dict[str, dict[str, Callable[[object], bool]]] = {
        "deploy_key": {},
        "token": {
            "username": lambda v: isinstance(v, str) and AUTH_USERNAME_RE.fullmatch(v) is not None,
            "token_var": lambda v: isinstance(v, str) and VARIABLE_RE.fullmatch(v) is not None,
        },
        "github_app": {
            "app_id": lambda v: _is_int(v) and 1 <= v <= 2**53,  # type: ignore[operator]
            "installation_id": lambda v: _is_int(v) and 1 <= v <= 2**53,  # type: ignore[operator]
            "private_key_var": lambda v: isinstance(v, str) and VARIABLE_RE.fullmatch(v) is not None,
        },
    }
    shape = shapes.get(value.get("kind"))  # type: ignore[arg-type]
    if shape is None or set(value) != {"kind", *shape}:
        return "must be {}, {kind: deploy_key}, {kind: token, ...} or {kind: github_app, ...}"
    if not all(check(value[key]) for key, check in shape.items()):
        return f"has a bad value for {value['kind']}"
    return None


HTPASSWD_USER_KEYS = ("name", "password")
# Single sign-on at the edge (roles/sso): who may pass, by the provider's groups claim or user name.
OIDC_KEYS = ("groups", "users")
# Group names as providers spell them: Entra object ids, Keycloak paths (/clinic/nurses), Google addresses.
OIDC_GROUP_RE = re.compile(r"[A-Za-z0-9/][A-Za-z0-9 ._@/:+=-]{0,254}")
OIDC_USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,254}")


def _copy_oidc(value: object) -> dict[str, list[str]] | None:
    if not isinstance(value, Mapping):
        return None
    return {key: [str(item) for item in value.get(key, [])] for key in OIDC_KEYS}


def _parse_oidc(e: _Entry, value: object) -> dict[str, list[str]] | None:
    if not isinstance(value, Mapping):
        e.error(f"access.oidc must be a mapping {{groups, users}}, not {_kind(value)}")
        return None
    e.unknown_keys("access.oidc: ", value, OIDC_KEYS)
    rule: dict[str, list[str]] = {"groups": [], "users": []}
    for key, pattern in (("groups", OIDC_GROUP_RE), ("users", OIDC_USER_RE)):
        items = value.get(key)
        if items is None:
            continue
        if not _is_list(items):
            e.error(f"access.oidc.{key} must be a list of names, not {_kind(items)}")
            continue
        for i, item in enumerate(items):
            if not isinstance(item, str) or not pattern.fullmatch(item):
                e.error(f"access.oidc.{key}[{i}] {show(item)} must match {pattern.pattern}")
            elif item in rule[key]:
                e.error(f"access.oidc.{key}[{i}] {item!r} appears twice")
            else:
                rule[key].append(item)
    if not rule["groups"] and not rule["users"] and not any(k not in OIDC_KEYS for k in value):
        e.error("access.oidc needs at least one of groups, users (who may sign in to this app)")
    return rule


def _parse_access(e: _Entry, value: object) -> None:
    access: dict[str, Any] = {"htpasswd_users": [], "client_cert_cns": []}
    e.values["access"] = access
    if value is None:
        return
    if not isinstance(value, Mapping):
        e.error(f"access must be a mapping {{htpasswd_users, client_cert_cns, oidc}}, not {_kind(value)}")
        return
    e.unknown_keys("access: ", value, ACCESS_KEYS)
    users = value.get("htpasswd_users")
    if users is not None and not _is_list(users):
        e.error(f"access.htpasswd_users must be a list of {{name, password}}, not {_kind(users)}")
    elif users is not None:
        seen: set[str] = set()
        for i, user in enumerate(users):
            where = f"access.htpasswd_users[{i}]"
            if not isinstance(user, Mapping):
                e.error(f"{where} must be a mapping {{name, password}}, not {_kind(user)}")
                continue
            e.unknown_keys(f"{where}: ", user, HTPASSWD_USER_KEYS)
            name, password = user.get("name"), user.get("password")
            if not isinstance(name, str) or not HTPASSWD_USER_RE.fullmatch(name):
                e.error(f"{where}.name {show(name)} must match {HTPASSWD_USER_RE.pattern}")
                continue
            if name in seen:
                e.error(f"{where}: user {name!r} appears twice; names must be unique")
                continue
            seen.add(name)
            # The password is never shown, only whether it is usable.
            if not isinstance(password, str) or not password:
                e.error(f"{where} (user {name!r}) needs a non-empty password (text, from a vault)")
                continue
            access["htpasswd_users"].append({"name": str(name), "password": password})
    cns = value.get("client_cert_cns")
    if cns is not None and not _is_list(cns):
        e.error(f"access.client_cert_cns must be a list of common names, not {_kind(cns)}")
    elif cns is not None:
        for i, cn in enumerate(cns):
            if not isinstance(cn, str) or not CLIENT_CN_RE.fullmatch(cn):
                e.error(f"access.client_cert_cns[{i}] {show(cn)} must match {CLIENT_CN_RE.pattern}")
            else:
                access["client_cert_cns"].append(str(cn))
    if value.get("oidc") is not None:
        access["oidc"] = _parse_oidc(e, value["oidc"])


def _parse_upstream(e: _Entry, value: object) -> None:
    if value is None:
        e.values["upstream"] = None
        return
    problem = upstream_problem(value)
    if problem:
        e.error(f"upstream {show(value)} {problem}")
    else:
        e.values["upstream"] = str(value)


def hosts_problem(value: object) -> str | None:
    """Why a placement list is wrong, or None: inventory host or group names, each once."""
    if not _is_list(value):
        return f"must be a list of inventory host or group names, not {_kind(value)}"
    for item in value:  # type: ignore[attr-defined]
        if not isinstance(item, str) or not PLACEMENT_NAME_RE.fullmatch(item):
            return f"item {show(item)} is not an inventory host or group name (fullmatch {PLACEMENT_NAME_RE.pattern})"
    if len(set(value)) != len(value):  # type: ignore[arg-type]
        return "names a host or group twice"
    return None


def _parse_hosts(e: _Entry, value: object) -> None:
    """`hosts: [web1, clinic_a]`: the inventory hosts and groups the app runs on (left out: every host)."""
    e.values["hosts"] = []
    if value is None:
        return
    if _is_list(value) and not value:
        e.error("hosts is empty: leave it out to run the app on every host of the play, or name where it runs")
        return
    problem = hosts_problem(value)
    if problem:
        e.error(f"hosts {problem}")
    else:
        e.values["hosts"] = [str(item) for item in value]  # type: ignore[attr-defined]


def _parse_per_host_state(e: _Entry, value: object) -> None:
    e.values["per_host_state"] = False
    if value is None:
        return
    if not isinstance(value, bool):
        e.error(f"per_host_state {show(value)} must be true or false")
    else:
        e.values["per_host_state"] = value


def _parse_replicas(e: _Entry, value: object) -> None:
    """`replicas: 3`: run the app as a swarm service with 3 tasks (Ansible may hand the number over as
    text: a whole-string decimal is accepted). Per-host state cannot follow a task that the swarm moves to
    another node, so data and database are refused with more than one replica, per_host_state or not."""
    e.values["replicas"] = 1
    if value is None:
        return
    number: int | None = None
    if _is_int(value):
        number = value  # type: ignore[assignment]
    elif isinstance(value, str) and REPLICAS_RE.fullmatch(value):
        number = int(value)
    if number is None or not 1 <= number <= MAX_REPLICAS:
        e.error(f"replicas {show(value)} must be a whole number within 1..{MAX_REPLICAS}")
        return
    e.values["replicas"] = number
    if number > 1:
        # data and database are read before replicas (APP_KEYS' order).
        state = [what for what, key in (("data", "data_mount"), ("database", "database")) if e.values.get(key)]
        if state:
            e.error(
                f"replicas {number} with {' and '.join(state)}: the swarm moves tasks between nodes and each node "
                "would keep a separate copy; run an app with per-host state as one replica (per_host_state does "
                "not lift this)"
            )


@dataclass(frozen=True)
class KeyRule:
    """How one key of an app entry is read: its parser, and whether it is only for managed apps (those
    the platform deploys), i.e. refused next to a pinned `upstream`."""

    parse: Callable[[_Entry, object], None]
    managed_only: bool
    summary: str


# The keys of an app entry, in the order they are read (name first: the route's default uses it).
# Adding a key: a row here, its parser above and, when it carries data, a field of AppSpec.
APP_KEYS: dict[str, KeyRule] = {
    "name": KeyRule(_parse_name, False, "the app's name"),
    "provider": KeyRule(_parse_provider, True, "github or git (inferred from repo when left out)"),
    "repo": KeyRule(_parse_repo, True, REPO_FORMS),
    "branch": KeyRule(_parse_branch, True, "the branch deployed"),
    "entrypoint": KeyRule(_repo_file_parser("entrypoint", python=True), True, "the Streamlit script"),
    "requirements": KeyRule(_repo_file_parser("requirements", python=False), True, "the requirements file"),
    "python": KeyRule(_parse_python, True, 'the base image\'s Python, "3.11"'),
    "resources": KeyRule(_parse_resources, True, "{cpus, memory, pids}"),
    "env": KeyRule(_parse_env, True, "NAME: text"),
    "secrets": KeyRule(_parse_secrets, True, "file name: variable name"),
    "route": KeyRule(_parse_route, False, "{path: /x/} or {host: x.example.org}"),
    "access": KeyRule(_parse_access, False, "{htpasswd_users, client_cert_cns, oidc}"),
    "upload_max_mb": KeyRule(_parse_upload_max_mb, False, "the upload limit in MB"),
    "upstream": KeyRule(_parse_upstream, False, "host:port of an app served elsewhere"),
    "data": KeyRule(_parse_data, True, "true or {mount: /data, size: 10G}: a directory kept across deploys"),
    "database": KeyRule(_parse_database, True, "postgresql: a database and role of the app's own"),
    "egress": KeyRule(_parse_egress, True, "[{host, port} or {cidr, port}]: the only destinations it may reach"),
    "auth": KeyRule(_parse_auth, True, "{deploy_key: true}, {token: VAULT_VARIABLE} or {github_app: {...}}"),
    "hosts": KeyRule(_parse_hosts, False, "[host or group, ...]: where the app runs (every host when left out)"),
    "per_host_state": KeyRule(
        _parse_per_host_state, True, "true: each of several hosts keeps its own copy of data and database"
    ),
    "replicas": KeyRule(_parse_replicas, True, f"1..{MAX_REPLICAS}: tasks of a swarm service (hosts must be a swarm)"),
}


def _entry_prefix(label: str, index: int, raw: object) -> str:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    return f"{label}[{index}]" + (f" (name {show(name)})" if name is not None else "")


def _parse_entry(
    index: int, raw: object, defaults: Defaults, label: str, defined: set[str] | None
) -> tuple[AppSpec | None, list[str]]:
    prefix = _entry_prefix(label, index, raw)
    if not isinstance(raw, Mapping):
        return None, [f"{prefix}: an app entry must be a mapping with a name and a repo, not {_kind(raw)}"]
    e = _Entry(prefix, raw, defaults, defined)
    e.unknown_keys("", raw, APP_KEYS)
    for key, rule in APP_KEYS.items():
        value = raw.get(key)
        if e.pinned and rule.managed_only:
            if value is not None:
                e.error(
                    f"{key} does not apply to an app with a pinned upstream (it is served elsewhere, not deployed "
                    "here): remove one of them"
                )
            continue
        rule.parse(e, value)
    if e.errors:
        return None, e.errors
    values = e.values
    if e.pinned:
        values.update(
            repo=None,
            url=None,
            provider=None,
            branch=defaults.branch,
            entrypoint=defaults.entrypoint,
            requirements=defaults.requirements,
            python="",
            cpus=defaults.cpus,
            memory=defaults.memory,
            memory_bytes=memory_bytes(defaults.memory),
            pids=defaults.pids,
            env={},
            secrets={},
            data_mount="",
            database="",
            egress=[],
            repo_auth={},
            data_size="",
            per_host_state=False,
            replicas=1,
        )
    return AppSpec(index=index, **values), []


def _cross_entry_errors(specs: list[AppSpec], prefixes: dict[int, str], edge_host: str) -> list[str]:
    """Rules between entries: unique names, and no two routes overlapping by prefix on one host."""
    errors: list[str] = []
    by_name: dict[str, AppSpec] = {}
    repeated: set[int] = set()
    for spec in specs:
        first = by_name.setdefault(spec.name, spec)
        if first is not spec:
            repeated.add(spec.index)
            errors.append(
                f"{prefixes[spec.index]}: name {spec.name!r} is already {prefixes[first.index]}'s; app names must "
                "be unique"
            )
    # A repeated name is reported once: its default route (/name/) would repeat too.
    specs = [spec for spec in specs if spec.index not in repeated]
    # Each path is checked against its own prefixes only (a path has at most 17 of them): linear, where
    # comparing every pair of apps would be quadratic.
    owners: dict[tuple[str, str], AppSpec] = {}
    for spec in specs:
        owners.setdefault((spec.route_host or edge_host, spec.route_path), spec)
    for spec in specs:
        host = spec.route_host or edge_host
        shown_host = spec.route_host or "the edge's own name"
        first = owners[(host, spec.route_path)]
        if first is not spec:
            errors.append(
                f"{prefixes[spec.index]}: route {spec.route_path} on {shown_host} is also {prefixes[first.index]}'s: "
                "every app needs a route of its own"
            )
        cut = spec.route_path.rfind("/", 0, len(spec.route_path) - 1)
        while cut >= 0:
            prefix = spec.route_path[: cut + 1]
            other = owners.get((host, prefix))
            if other is not None:
                errors.append(
                    f"{prefixes[spec.index]}: route {spec.route_path} on {shown_host} lies inside "
                    f"{prefixes[other.index]}'s route {prefix}: routes on one host must not overlap"
                )
            cut = spec.route_path.rfind("/", 0, cut)
    return errors


def _check_all(
    entries: object, defaults: Defaults, label: str, defined_variables: Collection[str] | None
) -> tuple[list[AppSpec], list[str]]:
    if entries is None:
        return [], []
    if not _is_list(entries):
        return [], [f"{label} must be a list of app entries, not {_kind(entries)}"]
    defined = None if defined_variables is None else set(defined_variables)
    specs: list[AppSpec] = []
    errors: list[str] = []
    prefixes: dict[int, str] = {}
    for index, raw in enumerate(entries):  # type: ignore[arg-type]
        spec, problems = _parse_entry(index, raw, defaults, label, defined)
        errors.extend(problems)
        if spec is not None:
            specs.append(spec)
            prefixes[index] = _entry_prefix(label, index, raw)
    errors.extend(_cross_entry_errors(specs, prefixes, defaults.edge_host.lower()))
    return specs, errors


def app_errors(
    entries: object,
    defaults: Defaults,
    *,
    label: str = "apps",
    defined_variables: Collection[str] | None = None,
) -> list[str]:
    """Every rule every entry breaks, each message naming the entry (`apps[3] (name 'x'): ...`); [] when
    all is well. `entries` None counts as no apps. With `defined_variables`, each secret must name one."""
    return _check_all(entries, defaults, label, defined_variables)[1]


def parse_apps(
    entries: object,
    defaults: Defaults,
    *,
    label: str = "apps",
    defined_variables: Collection[str] | None = None,
) -> list[AppSpec]:
    """The entries as AppSpecs; AppSpecError listing every problem when any entry breaks a rule."""
    specs, errors = _check_all(entries, defaults, label, defined_variables)
    if errors:
        raise AppSpecError(errors)
    return specs


def purge_errors(purge: object, names: Collection[str], label: str = "apps_purge_data") -> list[str]:
    """Why the list of apps whose kept data to delete is wrong, or []: each item a valid app name that is no
    longer among the apps (data of an app still deployed is never deleted this way)."""
    if purge is None:
        return []
    if not _is_list(purge):
        return [f"{label} must be a list of app names, not {_kind(purge)}"]
    errors: list[str] = []
    for index, name in enumerate(purge):  # type: ignore[arg-type]
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            errors.append(f"{label}[{index}] {show(name)} is not an app name ({NAME_RULE})")
        elif name in names:
            errors.append(
                f"{label}[{index}] {name!r} is still an app: its data is deleted only after its entry has left apps"
            )
    return errors


def database_secret_files(database: str, password: str, socket_dir: str) -> dict[str, str]:
    """The files an app with a database finds in /run/secrets: libpq's password file and a URL."""
    if not re.fullmatch(r"app_[a-z0-9_]{1,59}", database):
        raise ValueError(f"not an app database name: {show(database)}")
    if not re.fullmatch(r"[A-Za-z0-9]{16,128}", password):
        raise ValueError("a database password must be 16 to 128 letters and digits")  # never shown
    if not re.fullmatch(r"(/[A-Za-z0-9_.-]+)+", socket_dir):
        raise ValueError(f"not a socket directory: {show(socket_dir)}")
    return {
        "pgpass": f"*:*:{database}:{database}:{password}\n",
        "database-url": f"postgresql://{database}:{password}@/{database}?host={socket_dir}\n",
    }
