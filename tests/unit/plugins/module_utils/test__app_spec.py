"""The one app model: every rule of an inventory app entry, exhaustively, in plain Python.

The integration tests (tests/integration/test_bad_input.py) prove the roles apply it before any change;
these prove each rule, the messages, and that hostile input costs nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from typing import Any

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import (
    APP_KEYS,
    NAME_RE,
    RESERVED_APP_NAMES,
    SHA_RE,
    AppSpec,
    AppSpecError,
    Defaults,
    app_errors,
    branch_problem,
    database_secret_files,
    parse_apps,
    purge_errors,
    show,
)

SECRET = "TopS3cretValue"
DEFAULTS = Defaults(max_cpus=4, edge_host="edge.example.org")
DEFINED = {"vault_ok", "vault_other"}


def errors_of(entry: Any, defaults: Defaults = DEFAULTS) -> list[str]:
    return app_errors([entry], defaults, defined_variables=DEFINED)


def app(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "a", "repo": "acme/a"}
    entry.update(changes)
    return {key: value for key, value in entry.items() if value is not DROP}


DROP = object()


def nested_bomb(levels: int = 9, width: int = 9) -> list[Any]:
    """What a YAML anchor bomb loads as: lists sharing one list `width` times per level (9**9 leaves)."""
    bomb: list[Any] = ["x"] * width
    for _ in range(levels - 1):
        bomb = [bomb] * width
    return bomb


# -- valid entries ---------------------------------------------------------------------------------------
def test_a_minimal_entry_takes_every_default():
    (spec,) = parse_apps([{"name": "triage", "repo": "acme/triage-app"}], DEFAULTS)
    assert spec == AppSpec(
        index=0,
        name="triage",
        repo="acme/triage-app",
        url="https://github.com/acme/triage-app.git",
        provider="github",
        branch="main",
        entrypoint="streamlit_app.py",
        requirements="requirements.txt",
        python="",
        cpus=1.0,
        memory="1g",
        memory_bytes=1024**3,
        pids=256,
        env={},
        secrets={},
        route_host="",
        route_path="/triage/",
        upload_max_mb=200,
        upstream=None,
        data_mount="",
        database="",
        access={"htpasswd_users": [], "client_cert_cns": []},
    )
    assert spec.managed
    assert spec.base_url_path == "triage"
    assert spec.route_key == "/triage/"
    assert spec.label == "apps[0] (name 'triage')"


def test_a_full_entry_keeps_what_it_sets():
    entry = {
        "name": "dash-2",
        "repo": "https://git.example.org:8443/acme/dash.git",
        "branch": "release/1.2",
        "entrypoint": "app/main.py",
        "requirements": "deps/prod.txt",
        "python": "3.11",
        "resources": {"cpus": 2, "memory": "512m", "pids": 64},
        "env": {"MODEL": "risk-v3", "THREADS": 2, "RATIO": 0.5, "PYTHONUNBUFFERED": "1"},
        "secrets": {"api-token": "vault_ok"},
        "route": {"host": "dash.example.org"},
        "access": {"htpasswd_users": [{"name": "bob", "password": SECRET}], "client_cert_cns": ["Dr Bob"]},
        "upload_max_mb": 5,
    }
    (spec,) = parse_apps([entry], DEFAULTS, defined_variables=DEFINED)
    assert spec.url == "https://git.example.org:8443/acme/dash.git"
    assert (spec.cpus, spec.memory, spec.memory_bytes, spec.pids) == (2.0, "512m", 512 * 1024**2, 64)
    assert spec.env == {"MODEL": "risk-v3", "THREADS": "2", "RATIO": "0.5", "PYTHONUNBUFFERED": "1"}
    assert (spec.route_host, spec.route_path, spec.base_url_path) == ("dash.example.org", "/", "")
    assert spec.access["htpasswd_users"] == [{"name": "bob", "password": SECRET}]
    assert SECRET not in repr(spec)
    as_dict = spec.to_dict()
    assert SECRET not in json.dumps(as_dict)
    assert as_dict["access"] == {"htpasswd_users": ["bob"], "client_cert_cns": ["Dr Bob"]}


def test_a_pinned_upstream_is_not_managed():
    (spec,) = parse_apps([{"name": "ext", "upstream": "10.0.0.5:8501", "route": {"path": "/ext/"}}], DEFAULTS)
    assert not spec.managed
    assert (spec.repo, spec.url, spec.upstream) == (None, None, "10.0.0.5:8501")


def test_the_clone_url_follows_git_base_url():
    defaults = Defaults(git_base_url="file:///srv/git/")
    (spec,) = parse_apps([{"name": "a", "repo": "acme/a"}], defaults)
    assert spec.url == "file:///srv/git/acme/a.git"


@pytest.mark.parametrize(
    ("entry", "defaults", "provider", "url"),
    [
        ({"repo": "acme/a"}, DEFAULTS, "github", "https://github.com/acme/a.git"),
        ({"repo": "https://github.com/acme/a"}, DEFAULTS, "github", "https://github.com/acme/a"),
        ({"repo": "https://GitHub.com/acme/a.git"}, DEFAULTS, "github", "https://GitHub.com/acme/a.git"),
        # GitHub Enterprise Server: its host is apps_git_base_url's, or the provider says so.
        ({"repo": "https://ghes.example/acme/a"}, Defaults(git_base_url="https://ghes.example"), "github", None),
        ({"repo": "https://ghes.example/acme/a", "provider": "github"}, DEFAULTS, "github", None),
        # any other git server: by URL
        ({"repo": "https://gitlab.example/group/sub/app.git"}, DEFAULTS, "git", None),
        ({"repo": "https://ghes.example/acme/a"}, DEFAULTS, "git", None),
        ({"repo": "git@gitea.example:team/app.git"}, DEFAULTS, "git", None),
        ({"repo": "ssh://git@gitea.example:2222/team/app.git"}, DEFAULTS, "git", None),
        ({"repo": "http://127.0.0.1:8080/team/app.git"}, DEFAULTS, "git", None),
        ({"repo": "https://github.com/acme/a", "provider": "git"}, DEFAULTS, "git", None),
        # owner/name on a plain server: the clone URL from apps_git_base_url, read with ls-remote
        (
            {"repo": "acme/a", "provider": "git"},
            Defaults(git_base_url="file:///srv/git"),
            "git",
            "file:///srv/git/acme/a.git",
        ),
        ({"repo": "file:///srv/git/acme/a.git"}, Defaults(git_allow_file_urls=True), "git", None),
    ],
)
def test_the_provider_is_chosen_explicitly_or_by_url(entry, defaults, provider, url):
    (spec,) = parse_apps([{"name": "a", **entry}], defaults)
    assert (spec.provider, spec.url) == (provider, url or entry["repo"])
    assert spec.repo == entry["repo"]
    assert AppSpec.from_dict(spec.to_dict()) == spec


def test_a_pinned_upstream_has_no_provider():
    (spec,) = parse_apps([{"name": "ext", "upstream": "10.0.0.5:8501"}], DEFAULTS)
    assert spec.provider is None


def test_a_bad_provider_is_one_error_not_two():
    assert errors_of(app(provider="svn", repo="svn://h/x")) == [
        "apps[0] (name 'a'): provider 'svn' must be github or git (or left out: owner/name and https URLs on "
        "GitHub or on apps_git_base_url's host mean github, other git URLs git)"
    ]


def test_null_apps_are_no_apps_and_a_non_list_is_one_error():
    assert app_errors(None, DEFAULTS) == []
    assert parse_apps(None, DEFAULTS) == []
    assert app_errors({"name": "a"}, DEFAULTS, label="tls_apps") == [
        "tls_apps must be a list of app entries, not a mapping"
    ]
    assert app_errors("demo", DEFAULTS) == ["apps must be a list of app entries, not text"]


def test_null_values_fall_back_to_the_defaults():
    (spec,) = parse_apps([app(branch=None, env=None, resources=None, route=None, upstream=None)], DEFAULTS)
    assert (spec.branch, spec.env, spec.cpus, spec.route_path, spec.managed) == ("main", {}, 1.0, "/a/", True)


def test_the_label_names_the_list_as_written():
    errors = app_errors([app(), app(name="b", branch="a..b")], DEFAULTS, label="monitor_apps")
    assert errors == [
        "monitor_apps[1] (name 'b'): branch 'a..b' is not a valid branch name: it must not contain '..'".replace(
            "'..'", '".."'
        )
    ]


# -- every rule: hostile entries, each with the words its message must hold --------------------------------
LONG = "y" * 5000
HOSTILE: list[tuple[str, dict[str, Any], list[str]]] = [
    # entry shape and names
    ("not a mapping", "demo", ["apps[0]: an app entry must be a mapping", "not text"]),  # type: ignore[list-item]
    ("list entry", ["a"], ["must be a mapping", "not a list"]),  # type: ignore[list-item]
    ("no name", app(name=DROP), ["name is missing"]),
    ("name not text", app(name=5), ["(name 5)", "name must be"]),
    ("name with newline", app(name="a\n"), ["(name 'a\\n')", "name must be"]),
    ("name upper", app(name="Ab"), ["name must be"]),
    ("name digit first", app(name="1a"), ["name must be"]),
    ("name underscore", app(name="a_b"), ["name must be"]),
    ("name dot", app(name="a.b"), ["name must be"]),
    ("name slash", app(name="../x"), ["name must be"]),
    ("name shell", app(name="a;rm -rf /"), ["'a;rm -rf /'", "name must be"]),
    ("name trailing hyphen", app(name="a-"), ["not ending with"]),
    ("name too long", app(name="a" * 42), ["at most 41"]),
    ("name empty", app(name=""), ["name must be"]),
    ("name reserved component", app(name="component"), ["'component' is reserved"]),
    ("name reserved results", app(name="results"), ["is reserved"]),
    ("name reserved lock", app(name="lock"), ["is reserved"]),
    ("name list", app(name=["a"]), ["name must be"]),
    # placement (plugins/module_utils/_placement.py checks the names against the inventory)
    ("hosts empty", app(hosts=[]), ["apps[0] (name 'a'): hosts is empty", "every host of the play"]),
    ("hosts text", app(hosts="web1"), ["hosts must be a list", "not text"]),
    ("hosts pattern", app(hosts=["web*"]), ["item 'web*' is not an inventory host or group name"]),
    ("hosts dash", app(hosts=["-e"]), ["item '-e' is not"]),
    ("hosts newline", app(hosts=["web1\n"]), ["item 'web1\\n' is not"]),
    ("hosts twice", app(hosts=["web1", "web1"]), ["names a host or group twice"]),
    ("hosts not text", app(hosts=[1]), ["item 1 is not"]),
    ("per_host_state text", app(per_host_state="yes"), ["per_host_state 'yes' must be true or false"]),
    # replicas (a swarm service; _placement.py checks that the app's hosts are a swarm)
    ("replicas zero", app(replicas=0), ["apps[0] (name 'a'): replicas 0 must be a whole number within 1..12"]),
    ("replicas too many", app(replicas=13), ["replicas 13 must be"]),
    ("replicas bool", app(replicas=True), ["replicas True must be"]),
    ("replicas float", app(replicas=2.0), ["replicas 2.0 must be"]),
    ("replicas text padded", app(replicas="3 "), ["replicas '3 ' must be"]),
    ("replicas text newline", app(replicas="3\n"), ["replicas '3\\n' must be"]),
    ("replicas text sign", app(replicas="+3"), ["replicas '+3' must be"]),
    ("replicas leading zero", app(replicas="03"), ["replicas '03' must be"]),
    ("replicas with data", app(replicas=3, data=True), ["replicas 3 with data:", "per_host_state does not lift"]),
    (
        "replicas with database and per_host_state",
        app(replicas=2, database="postgresql", per_host_state=True),
        ["replicas 2 with database:"],
    ),
    ("replicas pinned", {"name": "a", "upstream": "10.0.0.5:8501", "replicas": 2}, ["replicas does not apply"]),
    ("unknown key", app(reqirements="r.txt"), ["unknown key 'reqirements' (did you mean 'requirements'?)"]),
    ("unknown key far", app(colour="red"), ["unknown key 'colour'", "known keys: access"]),
    ("non-text key", app(**{"1": 1}), ["unknown key '1'"]),
    # repo
    ("no repo", app(repo=DROP), ["repo is missing"]),
    ("repo not text", app(repo=["acme/a"]), ["repo must be text", "not a list"]),
    ("repo traversal", app(repo="../../etc"), ["'../../etc'", "owner/name"]),
    ("repo dotdot name", app(repo="acme/.."), ["owner/name"]),
    ("repo dot name", app(repo="acme/."), ["owner/name"]),
    ("repo one part", app(repo="acme"), ["owner/name"]),
    ("repo three parts", app(repo="a/b/c"), ["owner/name"]),
    ("repo newline", app(repo="acme/a\n"), ["'acme/a\\n'", "owner/name"]),
    ("repo semicolon", app(repo="a;b/c"), ["owner/name"]),
    ("repo owner hyphen first", app(repo="-x/a"), ["owner/name"]),
    ("repo .git short", app(repo="acme/a.git"), ["without .git"]),
    ("repo http", app(repo="http://github.com/acme/a"), ["a git URL http:// is for this host's loopback only"]),
    ("repo ftp", app(repo="ftp://h.example/acme/a"), ["'ftp://h.example/acme/a'", "a git URL must be https://"]),
    ("repo ext transport", app(repo="ext::sh -c id"), ["a git URL must be printable ASCII without spaces"]),
    ("repo ext no space", app(repo="ext::sh"), ["a git URL must be https://"]),
    ("repo credentials", app(repo=f"https://x:{SECRET}@github.com/acme/a"), ["credential", "not shown"]),
    ("repo user in https", app(repo="https://x@git.example.org/acme/a"), ["must not carry a credential", "not shown"]),
    ("repo ssh password", app(repo=f"ssh://git:{SECRET}@h.example/acme/a"), ["credential", "not shown"]),
    ("repo scp password", app(repo=f"git:{SECRET}@h.example:acme/a"), ["not shown"]),
    ("repo scp option host", app(repo="git@-oProxyCommand=x:acme/a"), ["plain user name and host name"]),
    ("repo scp option path", app(repo="git@h.example:-u=x"), ["plain segments"]),
    ("repo ssh option host", app(repo="ssh://-oProxyCommand=x/acme/a"), ["needs a plain host name"]),
    ("repo file not enabled", app(repo="file:///srv/git/acme/a.git"), ["file:// is refused here"]),
    ("repo url port zero", app(repo="https://h.example:0/acme/a"), ["bad host or port"]),
    ("repo url port big", app(repo="https://h.example:70000/acme/a"), ["bad host or port"]),
    ("repo url bad host", app(repo="https://-h/acme/a"), ["plain host name"]),
    ("repo url query", app(repo="https://h.example/acme/a?x=1"), ["no query or fragment"]),
    ("repo url newline", app(repo="https://h.example/acme/a\n"), ["printable ASCII"]),
    ("repo url dotdot", app(repo="https://h.example/acme/.."), ["plain segments", "no '..'"]),
    ("repo github url extra path", app(repo="https://github.com/x/acme/a"), ["owner/name", "provider: git"]),
    ("repo github dotdot", app(repo="https://github.com/acme/.."), ["owner/name"]),
    # provider
    ("provider unknown", app(provider="gitlab"), ["provider 'gitlab' must be github or git"]),
    ("provider not text", app(provider=["git"]), ["provider a list must be github or git"]),
    ("provider github with a git url", app(provider="github", repo="git@h.example:a/b"), ["provider github needs"]),
    ("provider github ssh", app(provider="github", repo="ssh://h.example/a/b"), ["provider github needs"]),
    ("provider and upstream", app(repo=DROP, provider="git", upstream="127.0.0.1:8501"), ["provider does not apply"]),
    # branch (git check-ref-format)
    ("branch dotdot", app(branch="a..b"), ["'a..b'", '".."']),
    ("branch lock", app(branch="x.lock"), ['".lock"']),
    ("branch part lock", app(branch="x.lock/y"), ['".lock"']),
    ("branch trailing slash", app(branch="feature/"), ['"/"']),
    ("branch leading slash", app(branch="/x"), ['"/"']),
    ("branch double slash", app(branch="a//b"), ['"//"']),
    ("branch trailing dot", app(branch="x."), ['end with "."']),
    ("branch dot part", app(branch="a/.b"), ['starting with "."']),
    ("branch dot first", app(branch=".a"), ['starting with "."']),
    ("branch dash", app(branch="-x"), ['start with "-"']),
    ("branch at-brace", app(branch="a@{b"), ["only letters"]),
    ("branch at", app(branch="@"), ["only letters"]),
    ("branch space", app(branch="a b"), ["only letters"]),
    ("branch tilde", app(branch="a~1"), ["only letters"]),
    ("branch caret", app(branch="a^"), ["only letters"]),
    ("branch colon", app(branch="a:b"), ["only letters"]),
    ("branch question", app(branch="a?"), ["only letters"]),
    ("branch star", app(branch="a*"), ["only letters"]),
    ("branch bracket", app(branch="a[b"), ["only letters"]),
    ("branch backslash", app(branch="a\\b"), ["only letters"]),
    ("branch newline", app(branch="main\n"), ["only letters"]),
    ("branch control", app(branch="ma\x07in"), ["only letters"]),
    ("branch empty", app(branch=""), ["only letters"]),
    ("branch long", app(branch="b" * 256), ["1 to 255"]),
    ("branch HEAD", app(branch="HEAD"), ['"HEAD"']),
    ("branch number", app(branch=1.2), ["must be text, not a number"]),
    # entrypoint and requirements
    ("entrypoint traversal", app(entrypoint="../../etc/passwd.py"), ["'../../etc/passwd.py'", "inside the repo"]),
    ("entrypoint absolute", app(entrypoint="/app/x.py"), ["relative path"]),
    ("entrypoint not py", app(entrypoint="app.sh"), [".py file"]),
    ("entrypoint newline", app(entrypoint="app.py\n"), ["entrypoint 'app.py\\n'"]),
    ("entrypoint double slash", app(entrypoint="a//b.py"), ["relative path"]),
    ("entrypoint dot part", app(entrypoint="a/./b.py"), ["relative path"]),
    ("entrypoint dash first", app(entrypoint="-x.py"), ["must start with"]),
    ("entrypoint space", app(entrypoint="a b.py"), ["only letters"]),
    ("entrypoint number", app(entrypoint=3), ["must be text"]),
    ("requirements absolute", app(requirements="/etc/shadow"), ["requirements '/etc/shadow'"]),
    ("requirements traversal", app(requirements="a/../../r.txt"), ["relative path"]),
    ("requirements trailing slash", app(requirements="reqs/"), ["relative path"]),
    ("requirements newline", app(requirements="r.txt\n"), ["requirements 'r.txt\\n'"]),
    # python
    ("python float", app(python=3.1), ["python 3.1 is a number", 'quote it (python: "3.10")']),
    ("python int", app(python=3), ["python 3 must be text"]),
    ("python major only", app(python="3"), ["major.minor"]),
    ("python two", app(python="2.7"), ["major.minor"]),
    ("python patch", app(python="3.11.4"), ["major.minor"]),
    ("python newline", app(python="3.11\n"), ["major.minor"]),
    # resources
    ("resources list", app(resources=[1]), ["resources must be a mapping"]),
    ("resources unknown", app(resources={"cpu": 1}), ["resources: unknown key 'cpu' (did you mean 'cpus'?)"]),
    ("cpus text", app(resources={"cpus": "fast"}), ["resources.cpus 'fast'"]),
    ("cpus numeric text", app(resources={"cpus": "1.5"}), ["resources.cpus '1.5'"]),
    ("cpus bool", app(resources={"cpus": True}), ["resources.cpus True"]),
    ("cpus zero", app(resources={"cpus": 0}), [">= 0.01"]),
    ("cpus negative", app(resources={"cpus": -1}), [">= 0.01"]),
    ("cpus nan", app(resources={"cpus": float("nan")}), ["resources.cpus nan"]),
    ("cpus inf", app(resources={"cpus": float("inf")}), ["resources.cpus inf"]),
    ("cpus above host", app(resources={"cpus": 1000}), ["resources.cpus 1000", "more than the host has (4)"]),
    ("memory words", app(resources={"memory": "lots"}), ["resources.memory 'lots'"]),
    ("memory small", app(resources={"memory": "32m"}), ["at least 64m"]),
    ("memory upper unit", app(resources={"memory": "1G"}), ["resources.memory '1G'"]),
    ("memory newline", app(resources={"memory": "1g\n"}), ["resources.memory '1g\\n'"]),
    ("memory bool", app(resources={"memory": True}), ["resources.memory True"]),
    ("memory float", app(resources={"memory": 1.5}), ["resources.memory 1.5"]),
    ("pids small", app(resources={"pids": 5}), ["resources.pids 5", "16.."]),
    ("pids bool", app(resources={"pids": True}), ["resources.pids True"]),
    ("pids float", app(resources={"pids": 64.0}), ["resources.pids 64.0"]),
    ("pids text", app(resources={"pids": "64"}), ["resources.pids '64'"]),
    ("pids huge", app(resources={"pids": 10**12}), ["resources.pids"]),
    # env
    ("env list", app(env=["A=1"]), ["env must be a mapping"]),
    ("env bad name", app(env={"1A": "x"}), ["env name '1A'"]),
    ("env name newline", app(env={"A\n": "x"}), ["env name 'A\\n'"]),
    ("env name dash", app(env={"A-B": "x"}), ["env name 'A-B'"]),
    ("env name long", app(env={"A" * 129: "x"}), ["env name"]),
    ("env value newline", app(env={"KEY": f"-----BEGIN KEY-----\n{SECRET}"}), ["env KEY value (not shown)"]),
    ("env value cr", app(env={"KEY": f"a\r{SECRET}"}), ["line break"]),
    ("env value nul", app(env={"KEY": f"a\0{SECRET}"}), ["NUL"]),
    ("env value long", app(env={"KEY": SECRET * 4000}), ["longer than"]),
    ("env value bool", app(env={"DEBUG": True}), ["env DEBUG is a boolean", "quote it"]),
    ("env value null", app(env={"A": None}), ["env A must be text or a number, not null"]),
    ("env value list", app(env={"A": [1]}), ["not a list"]),
    ("env value dict", app(env={"A": {"b": 1}}), ["not a mapping"]),
    ("env value nan", app(env={"A": float("nan")}), ["env A must be text or a number"]),
    ("env streamlit", app(env={"STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION": "false"}), ["is reserved", "STREAMLIT_*"]),
    ("env streamlit lower", app(env={"streamlit_x": "1"}), ["env streamlit_x is reserved"]),
    ("env sandbox origin", app(env={"SECURE_CONTEXT_SANDBOX_ORIGIN": "https://evil"}), ["is reserved"]),
    ("env pythonpath", app(env={"PYTHONPATH": "/tmp"}), ["env PYTHONPATH is reserved"]),
    ("env pythonhome", app(env={"PYTHONHOME": "/tmp"}), ["is reserved"]),
    ("env pythonstartup", app(env={"PYTHONSTARTUP": "/tmp/x.py"}), ["is reserved"]),
    ("env ld preload", app(env={"LD_PRELOAD": "/tmp/x.so"}), ["env LD_PRELOAD is reserved"]),
    ("env ld library path", app(env={"LD_LIBRARY_PATH": "/tmp"}), ["is reserved"]),
    ("env path", app(env={"PATH": "/tmp"}), ["env PATH is reserved"]),
    ("env path lower", app(env={"path": "/tmp"}), ["env path is reserved"]),
    ("env home", app(env={"HOME": "/"}), ["is reserved"]),
    ("env pip index", app(env={"PIP_INDEX_URL": "https://evil"}), ["is reserved"]),
    ("env ssl cert", app(env={"SSL_CERT_FILE": "/tmp/ca"}), ["is reserved"]),
    ("env requests ca", app(env={"REQUESTS_CA_BUNDLE": "/tmp/ca"}), ["is reserved"]),
    ("env glibc tunables", app(env={"GLIBC_TUNABLES": "x"}), ["is reserved"]),
    # secrets
    ("secrets list", app(secrets=["vault_ok"]), ["secrets must be a mapping"]),
    ("secret traversal", app(secrets={"../t": "vault_ok"}), ["secrets file name '../t' (for vault_ok)"]),
    ("secret dotdot", app(secrets={"..": "vault_ok"}), ["secrets file name '..'"]),
    ("secret dot", app(secrets={".": "vault_ok"}), ["secrets file name '.'"]),
    ("secret hidden", app(secrets={".env": "vault_ok"}), ["secrets file name '.env'"]),
    ("secret newline", app(secrets={"t\n": "vault_ok"}), ["secrets file name 't\\n'"]),
    ("secret long", app(secrets={"t" * 65: "vault_ok"}), ["secrets file name"]),
    ("secret value not name", app(secrets={"t": SECRET + " !"}), ["must be the name of a variable"]),
    ("secret value newline", app(secrets={"t": "vault_ok\n"}), ["must be the name of a variable"]),
    ("secret value list", app(secrets={"t": ["vault_ok"]}), ["must be the name of a variable"]),
    ("secret undefined", app(secrets={"t": "vault_missing"}), ["variable 'vault_missing' is not defined"]),
    # route
    ("route list", app(route=["/x/"]), ["route must be a mapping"]),
    ("route both", app(route={"path": "/x/", "host": "x.example.org"}), ["not both"]),
    ("route unknown", app(route={"paht": "/x/"}), ["route: unknown key 'paht' (did you mean 'path'?)"]),
    ("route root", app(route={"path": "/"}), ["route path '/'", "swallow every other app"]),
    ("route no slash", app(route={"path": "/x"}), ["route path '/x'"]),
    ("route relative", app(route={"path": "x/"}), ["route path 'x/'"]),
    ("route dotdot", app(route={"path": "/../"}), ["route path '/../'"]),
    ("route double", app(route={"path": "//"}), ["route path '//'"]),
    ("route newline", app(route={"path": "/x/\n"}), ["route path '/x/\\n'"]),
    ("route nginx meta", app(route={"path": "/x/;return 200;/"}), ["route path"]),
    ("route regex", app(route={"path": "/x{1}/"}), ["route path"]),
    ("route number", app(route={"path": 5}), ["route path 5"]),
    ("route host upper", app(route={"host": "X.example.org"}), ["route host 'X.example.org'"]),
    ("route host underscore", app(route={"host": "bad_host.example.org"}), ["not a valid host name"]),
    ("route host newline", app(route={"host": "x.example.org\n"}), ["route host 'x.example.org\\n'"]),
    ("route host dash", app(route={"host": "-x.example.org"}), ["not a valid host name"]),
    ("route host long label", app(route={"host": "a" * 64 + ".org"}), ["not a valid host name"]),
    ("route host edge", app(route={"host": "edge.example.org"}), ["is the edge's own name"]),
    # upload limit
    ("upload text", app(upload_max_mb="lots"), ["upload_max_mb 'lots'"]),
    ("upload float", app(upload_max_mb=1.5), ["upload_max_mb 1.5"]),
    ("upload bool", app(upload_max_mb=True), ["upload_max_mb True"]),
    ("upload zero", app(upload_max_mb=0), ["within 1..102400"]),
    ("upload big", app(upload_max_mb=102401), ["within 1..102400"]),
    # access
    ("access list", app(access=["bob"]), ["access must be a mapping"]),
    ("access unknown", app(access={"htpasswd_user": []}), ["did you mean 'htpasswd_users'?"]),
    ("users not list", app(access={"htpasswd_users": {"bob": SECRET}}), ["must be a list"]),
    ("user not mapping", app(access={"htpasswd_users": [f"bob:{SECRET}"]}), ["htpasswd_users[0] must be a mapping"]),
    ("user no password", app(access={"htpasswd_users": [{"name": "bob"}]}), ["(user 'bob')", "non-empty password"]),
    ("user empty password", app(access={"htpasswd_users": [{"name": "bob", "password": ""}]}), ["non-empty"]),
    ("user number password", app(access={"htpasswd_users": [{"name": "bob", "password": 1234}]}), ["non-empty"]),
    ("user bad name", app(access={"htpasswd_users": [{"name": "bob:x", "password": SECRET}]}), [".name 'bob:x'"]),
    ("user newline", app(access={"htpasswd_users": [{"name": "bob\n", "password": SECRET}]}), ["'bob\\n'"]),
    (
        "user twice",
        app(access={"htpasswd_users": [{"name": "bob", "password": SECRET}, {"name": "bob", "password": "x"}]}),
        ["htpasswd_users[1]: user 'bob' appears twice"],
    ),
    (
        "user unknown key",
        app(access={"htpasswd_users": [{"name": "bob", "pasword": SECRET}]}),
        ["unknown key 'pasword' (did you mean 'password'?)"],
    ),
    ("cns not list", app(access={"client_cert_cns": "Dr Bob"}), ["client_cert_cns must be a list"]),
    ("cn regex", app(access={"client_cert_cns": ["Dr.*"]}), ["client_cert_cns[0] 'Dr.*'"]),
    ("cn newline", app(access={"client_cert_cns": ["Dr Bob\n"]}), ["client_cert_cns[0] 'Dr Bob\\n'"]),
    ("cn space first", app(access={"client_cert_cns": [" Bob"]}), ["client_cert_cns[0]"]),
    # upstream
    ("upstream and repo", app(upstream="127.0.0.1:8501"), ["repo does not apply to an app with a pinned upstream"]),
    (
        "upstream and env",
        app(repo=DROP, upstream="127.0.0.1:8501", env={"A": "1"}),
        ["env does not apply to an app with a pinned upstream"],
    ),
    ("upstream no port", app(repo=DROP, upstream="127.0.0.1"), ["upstream '127.0.0.1'", "host:port"]),
    ("upstream port zero", app(repo=DROP, upstream="h:0"), ["1..65535"]),
    ("upstream port big", app(repo=DROP, upstream="h:65536"), ["1..65535"]),
    ("upstream newline", app(repo=DROP, upstream="h:80\n"), ["upstream 'h:80\\n'"]),
    ("upstream url", app(repo=DROP, upstream="http://h:80"), ["host:port"]),
    ("upstream number", app(repo=DROP, upstream=8501), ["upstream 8501 must be text"]),
    # database
    ("database unknown kind", app(database="mysql"), ["database 'mysql' must be postgresql"]),
    ("database true", app(database=True), ["database True must be postgresql"]),
    ("database newline", app(database="postgresql\n"), ["database 'postgresql\\n'"]),
    (
        "database secret file taken",
        app(database="postgresql", secrets={"pgpass": "vault_ok"}),
        ["secrets pgpass: the platform writes these files"],
    ),
    (
        "database env taken",
        app(database="postgresql", env={"PGHOST": "db.example.org"}),
        ["env PGHOST: the platform sets these"],
    ),
    (
        "database and upstream",
        app(repo=DROP, upstream="127.0.0.1:8501", database="postgresql"),
        ["database does not apply to an app with a pinned upstream"],
    ),
    # data
    ("data text", app(data="/data"), ["data must be true or a mapping", "not text"]),
    ("data number", app(data=1), ["data must be true or a mapping"]),
    ("data unknown key", app(data={"mount": "/data", "szie": "1g"}), ["data: unknown key 'szie'"]),
    ("data over app", app(data={"mount": "/app"}), ["data.mount '/app'", "would cover /app"]),
    ("data under app", app(data={"mount": "/app/state"}), ["would cover /app"]),
    ("data over tmp", app(data={"mount": "/tmp"}), ["would cover /tmp"]),
    ("data over secrets", app(data={"mount": "/run/secrets"}), ["would cover /run"]),
    ("data over venv", app(data={"mount": "/opt/venv"}), ["would cover /opt"]),
    ("data root", app(data={"mount": "/"}), ["must be an absolute path"]),
    ("data relative", app(data={"mount": "data"}), ["must be an absolute path"]),
    ("data dotdot", app(data={"mount": "/data/../app"}), ["no '..'"]),
    ("data trailing slash", app(data={"mount": "/data/"}), ["no trailing slash"]),
    ("data newline", app(data={"mount": "/data\n"}), ["data.mount '/data\\n'"]),
    ("data not text", app(data={"mount": ["/data"]}), ["not a list"]),
    ("data size lower unit", app(data={"size": "10g"}), ["data.size '10g'", "such as 500M or 10G"]),
    ("data size no unit", app(data={"size": "10"}), ["data.size '10'"]),
    ("data size number", app(data={"size": 10}), ["data.size 10"]),
    ("data size zero", app(data={"size": "0G"}), ["data.size '0G'"]),
    ("data size below 1M", app(data={"size": "512K"}), ["at least 1M"]),
    ("data size newline", app(data={"size": "10G\n"}), ["data.size '10G\\n'"]),
    ("data size fraction", app(data={"size": "1.5G"}), ["data.size '1.5G'"]),
    ("data size prefix", app(data={"size": " 10G"}), ["data.size ' 10G'"]),
    (
        "data and upstream",
        app(repo=DROP, upstream="127.0.0.1:8501", data=True),
        ["data does not apply to an app with a pinned upstream"],
    ),
    # egress
    ("egress mapping", app(egress={"host": "api.example.org", "port": 443}), ["egress must be a list"]),
    ("egress any", app(egress=[{"cidr": "0.0.0.0/0", "port": 443}]), ["egress[0].cidr '0.0.0.0/0'", "allow_any"]),
    ("egress any v6", app(egress=[{"cidr": "::/0", "port": 443}]), ["egress[0].cidr '::/0'", "allow_any"]),
    ("egress half", app(egress=[{"cidr": "0.0.0.0/1", "port": 443}]), ["allow_any: true"]),
    ("egress unknown key", app(egress=[{"host": "a.example.org", "port": 443, "proto": "udp"}]), ["'proto'"]),
    ("egress port zero", app(egress=[{"host": "a.example.org", "port": 0}]), ["egress[0].port 0", "1..65535"]),
    ("egress port big", app(egress=[{"host": "a.example.org", "port": 65536}]), ["1..65535"]),
    ("egress port text", app(egress=[{"host": "a.example.org", "port": "443"}]), ["egress[0].port '443'"]),
    ("egress no port", app(egress=[{"host": "a.example.org"}]), ["egress[0].port is missing"]),
    ("egress host newline", app(egress=[{"host": "a.example.org\n", "port": 1}]), ["'a.example.org\\n'"]),
    ("egress host url", app(egress=[{"host": "https://a.example.org", "port": 1}]), ["is not a host name"]),
    ("egress host address", app(egress=[{"host": "10.1.2.3", "port": 1}]), ["write it as cidr"]),
    ("egress both", app(egress=[{"host": "a.example.org", "cidr": "10.0.0.0/8", "port": 1}]), ["exactly one"]),
    ("egress host bits", app(egress=[{"cidr": "10.0.0.5/8", "port": 1}]), ["is not a network"]),
    ("egress loopback", app(egress=[{"cidr": "127.0.0.1", "port": 1}]), ["the container itself"]),
    ("egress twice", app(egress=[{"cidr": "10.0.0.0/8", "port": 1}] * 2), ["egress[1] repeats egress[0]"]),
    (
        "egress and upstream",
        app(repo=DROP, upstream="127.0.0.1:8501", egress=[{"cidr": "10.0.0.0/8", "port": 1}]),
        ["egress does not apply to an app with a pinned upstream"],
    ),
    # auth (private repositories)
    ("auth text", app(auth="vault_ok"), ["auth must be a mapping"]),
    ("auth empty", app(auth={}), ["auth takes exactly one of deploy_key, token, github_app (found none)"]),
    ("auth two kinds", app(auth={"token": "vault_ok", "deploy_key": True}), ["found deploy_key, token"]),
    ("auth unknown key", app(auth={"token": "vault_ok", "passwd": "x"}), ["auth: unknown key 'passwd'"]),
    ("auth token literal", app(auth={"token": SECRET}), ["auth.token: the value (not shown) names no defined"]),
    ("auth token github form", app(auth={"token": "ghp_" + SECRET}), ["never the credential itself"]),
    ("auth token templated", app(auth={"token": "{{ " + SECRET + " }}"}), ["must be the name of a variable"]),
    ("auth token undefined", app(auth={"token": "vault_missing"}), ["names no defined variable"]),
    ("auth token number", app(auth={"token": 12345}), ["(not shown, a number)"]),
    ("auth token over ssh", app(repo="git@git.example.org:acme/x.git", auth={"token": "vault_ok"}), ["https://"]),
    ("auth username bad", app(auth={"token": "vault_ok", "username": "a b"}), ["auth.username 'a b'"]),
    ("auth username for key", app(auth={"deploy_key": True, "username": "git"}), ["goes with auth.token"]),
    ("auth deploy key path", app(auth={"deploy_key": "/root/.ssh/" + SECRET}), ["must be true", "path"]),
    ("auth deploy key pem", app(auth={"deploy_key": "-----BEGIN " + SECRET}), ["(not shown, text)"]),
    ("auth deploy key https", app(auth={"deploy_key": True}), ["needs an SSH repo URL"]),
    ("auth app not mapping", app(auth={"github_app": 12}), ["auth.github_app must be a mapping"]),
    ("auth app missing", app(auth={"github_app": {"app_id": 1}}), ["needs installation_id, private_key"]),
    (
        "auth app unknown key",
        app(auth={"github_app": {"app_id": 1, "installation_id": 2, "private_key": "vault_ok", "secret": 1}}),
        ["auth.github_app: unknown key 'secret'"],
    ),
    (
        "auth app bad id",
        app(auth={"github_app": {"app_id": -1, "installation_id": 2, "private_key": "vault_ok"}}),
        ["auth.github_app.app_id -1 must be a positive whole number"],
    ),
    (
        "auth app key literal",
        app(auth={"github_app": {"app_id": 1, "installation_id": 2, "private_key": "-----BEGIN " + SECRET}}),
        ["auth.github_app.private_key: the value (not shown"],
    ),
    (
        "auth app on plain git",
        app(
            repo="https://git.example.org/acme/x.git",
            auth={"github_app": {"app_id": 1, "installation_id": 2, "private_key": "vault_ok"}},
        ),
        ["needs a GitHub repo"],
    ),
    (
        "auth and upstream",
        app(repo=DROP, upstream="127.0.0.1:8501", auth={"token": "vault_ok"}),
        ["auth does not apply to an app with a pinned upstream"],
    ),
]


@pytest.mark.parametrize(("entry", "parts"), [(e, p) for _, e, p in HOSTILE], ids=[i for i, _, _ in HOSTILE])
def test_a_hostile_entry_is_refused_naming_the_entry_and_the_rule(entry, parts):
    errors = errors_of(entry)
    assert errors, "accepted"
    assert all(e.startswith("apps[0]") for e in errors), errors
    text = "\n".join(errors)
    for part in parts:
        assert part in text, text
    # Nothing secret and nothing large is ever echoed.
    assert SECRET not in text
    assert all(len(e) < 600 for e in errors), errors
    with pytest.raises(AppSpecError) as caught:
        parse_apps([entry], DEFAULTS, defined_variables=DEFINED)
    assert caught.value.errors == errors


def test_there_are_many_hostile_cases():
    assert len(HOSTILE) >= 120


def test_every_known_key_has_a_hostile_case():
    covered = {key for _, entry, _ in HOSTILE if isinstance(entry, dict) for key in entry}
    assert set(APP_KEYS) <= covered


def test_egress_is_normalised_and_survives_the_round_trip():
    entry = app(
        egress=[
            {"host": "API.Example.org", "port": 443},
            {"cidr": "10.20.0.0/16", "port": 5432},
            {"cidr": "::/0", "port": 443, "allow_any": True},
        ]
    )
    (spec,) = parse_apps([entry], DEFAULTS)
    assert spec.egress == [
        {"host": "api.example.org", "port": 443, "allow_any": False},
        {"cidr": "10.20.0.0/16", "port": 5432, "allow_any": False},
        {"cidr": "::/0", "port": 443, "allow_any": True},
    ]
    assert AppSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_no_egress_is_no_route_out():
    (spec,) = parse_apps([app()], DEFAULTS)
    assert spec.egress == []


def test_a_tampered_egress_is_refused_when_read_back():
    (spec,) = parse_apps([app()], DEFAULTS)
    data = spec.to_dict()
    data["egress"] = [{"cidr": "0.0.0.0/0", "port": 443, "allow_any": False}]
    with pytest.raises(AppSpecError, match="egress"):
        AppSpec.from_dict(data)


def test_a_database_is_named_after_the_app():
    (spec,) = parse_apps([app(name="risk-notes", database="postgresql")], DEFAULTS)
    assert (spec.database, spec.database_name) == ("postgresql", "app_risk_notes")
    assert spec.to_dict()["database_name"] == "app_risk_notes"
    assert AppSpec.from_dict(spec.to_dict()) == spec
    (plain,) = parse_apps([app()], DEFAULTS)
    assert plain.database_name == ""


def test_a_databases_secret_files_hold_the_password_in_libpqs_formats():
    files = database_secret_files("app_risk_notes", "a" * 40, "/run/postgresql")
    assert files == {
        "pgpass": f"*:*:app_risk_notes:app_risk_notes:{'a' * 40}\n",
        "database-url": f"postgresql://app_risk_notes:{'a' * 40}@/app_risk_notes?host=/run/postgresql\n",
    }
    with pytest.raises(ValueError, match="letters and digits") as caught:
        database_secret_files("app_x", "short:pw", "/run/postgresql")
    assert "short" not in str(caught.value)
    with pytest.raises(ValueError, match="not an app database name"):
        database_secret_files("postgres", "a" * 40, "/run/postgresql")


def test_data_takes_a_default_mount_or_the_one_written():
    plain, default, written = parse_apps(
        [app(name="a"), app(name="b", data=True), app(name="c", data={"mount": "/srv/notes"})], DEFAULTS
    )
    assert (plain.data_mount, default.data_mount, written.data_mount) == ("", "/data", "/srv/notes")
    assert parse_apps([app(data=False)], DEFAULTS)[0].data_mount == ""
    assert AppSpec.from_dict(written.to_dict()).data_mount == "/srv/notes"


def test_data_size_is_kept_and_read_back():
    sized, unsized = parse_apps([app(name="a", data={"size": "10G"}), app(name="b", data=True)], DEFAULTS)
    assert (sized.data_mount, sized.data_size, unsized.data_size) == ("/data", "10G", "")
    assert AppSpec.from_dict(sized.to_dict()).data_size == "10G"
    broken = {**sized.to_dict(), "data_size": "10G;rm"}
    with pytest.raises(AppSpecError, match="data_size"):
        AppSpec.from_dict(broken)


@pytest.mark.parametrize(
    ("purge", "part"),
    [
        ("old", "must be a list of app names, not text"),
        (["Old"], "apps_purge_data[0] 'Old' is not an app name"),
        (["old\n"], "is not an app name"),
        (["a"], "apps_purge_data[0] 'a' is still an app"),
        ([5], "apps_purge_data[0] 5 is not an app name"),
    ],
)
def test_a_data_purge_names_removed_apps_only(purge, part):
    errors = purge_errors(purge, ["a", "b"])
    assert errors
    assert part in "\n".join(errors)


def test_a_valid_data_purge_has_no_errors():
    assert purge_errors(["old", "gone"], ["a"]) == []
    assert purge_errors(None, ["a"]) == []


# -- what several entries do together ----------------------------------------------------------------------
def test_two_apps_with_one_name_are_refused_once():
    errors = app_errors([app(name="x"), app(name="x", repo="acme/y")], DEFAULTS)
    assert errors == ["apps[1] (name 'x'): name 'x' is already apps[0] (name 'x')'s; app names must be unique"]


@pytest.mark.parametrize(
    ("routes", "parts"),
    [
        ([{"path": "/x/"}, {"path": "/x/"}], ["apps[1] (name 'b'): route /x/", "also apps[0] (name 'a')'s"]),
        (
            [{"path": "/one/"}, {"path": "/one/_stcore/"}],
            ["apps[1] (name 'b'): route /one/_stcore/", "inside apps[0] (name 'a')'s route /one/", "overlap"],
        ),
        (
            [{"path": "/one/two/three/"}, {"path": "/one/"}],
            ["apps[0] (name 'a'): route /one/two/three/", "inside apps[1] (name 'b')'s route /one/"],
        ),
        ([{"host": "x.example.org"}, {"host": "x.example.org"}], ["route / on x.example.org is also apps[0]"]),
        (
            [{"host": "x.example.org"}, {"host": "x.example.org", "path": DROP}],
            ["route / on x.example.org is also apps[0]"],
        ),
    ],
)
def test_routes_on_one_host_must_not_overlap(routes, parts):
    entries = [app(name=n, repo=f"acme/{n}", route=r) for n, r in zip("ab", routes, strict=True)]
    for entry in entries:
        entry["route"] = {k: v for k, v in entry["route"].items() if v is not DROP}
    text = "\n".join(app_errors(entries, DEFAULTS))
    for part in parts:
        assert part in text, text


def test_a_host_route_at_the_root_covers_that_host_only():
    entries = [
        app(name="a", route={"host": "x.example.org"}),
        app(name="b", route={"host": "y.example.org"}),
        app(name="c", route={"path": "/c/"}),
        app(name="d", route={"path": "/cd/"}),
        app(name="e", route={"path": "/c/d/"}),
    ]
    errors = app_errors(entries, DEFAULTS)
    assert errors == [
        "apps[4] (name 'e'): route /c/d/ on the edge's own name lies inside apps[2] (name 'c')'s route /c/: "
        "routes on one host must not overlap"
    ]


def test_derived_names_of_valid_apps_never_collide():
    """What two valid entries share: nginx zones replace "-" with "_" (no valid name holds "_", so the
    mapping is one to one); containers are <name>-<12 hex>-<6 hex> (equal only for equal names: the
    suffix has a fixed length); images streamlit-apps/<name>; directories and include files <name>."""
    names = ["a", "a-b", "ab", "a-b-c", "ab-c", "a-bc", "a1", "a-1", "abc"]
    assert all(NAME_RE.fullmatch(n) for n in names)
    zones = {n.replace("-", "_") for n in names}
    assert len(zones) == len(names)
    containers = {f"{n}-{'0' * 12}-{'0' * 6}" for n in names}
    assert len(containers) == len(names)
    assert not any(NAME_RE.fullmatch(n) for n in ["a_b", "a-", "A"])
    assert not RESERVED_APP_NAMES & set(names)


# -- git agrees with the branch rule ---------------------------------------------------------------------
BRANCHES = [
    "main", "release/1.2", "feature/x-y_z", "a.b", "v1.0.0", "x" * 255, "a..b", "x.lock", "x.lock/y", "feature/",
    "/x", "a//b", "x.", "a/.b", ".a", "-x", "HEAD", "a/b.lock", "a.lock.b", "_x", "1",
]  # fmt: skip


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize("branch", BRANCHES)
def test_the_branch_rule_is_at_least_as_strict_as_git(branch):
    git_accepts = (
        subprocess.run(["git", "check-ref-format", "--branch", branch], capture_output=True, check=False).returncode
        == 0
    )
    if branch_problem(branch) is None:
        assert git_accepts, f"git refuses {branch!r}, the model accepts it"
    else:
        # Only "HEAD" and names with characters outside the safe set are refused here while git takes them.
        assert not git_accepts or branch == "HEAD", branch


# -- hostile structures cost nothing -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "where",
    ["name", "repo", "branch", "python", "env", "env_value", "secrets", "route", "path", "access", "users",
     "resources", "cpus", "upstream", "unknown", "entry"],
)  # fmt: skip
def test_an_anchor_bomb_is_refused_without_walking_it(where):
    bomb = nested_bomb()
    entry: Any = {
        "name": app(name=bomb),
        "repo": app(repo=bomb),
        "branch": app(branch=bomb),
        "python": app(python=bomb),
        "env": app(env=bomb),
        "env_value": app(env={"A": bomb}),
        "secrets": app(secrets={"t": bomb}),
        "route": app(route=bomb),
        "path": app(route={"path": bomb}),
        "access": app(access={"client_cert_cns": bomb}),
        "users": app(access={"htpasswd_users": bomb}),
        "resources": app(resources={"cpus": bomb}),
        "cpus": app(resources=bomb),
        "upstream": app(repo=DROP, upstream=bomb),
        "unknown": app(bomb=bomb),
        "entry": bomb,
    }[where]
    start = time.monotonic()
    errors = app_errors([entry] * 3, DEFAULTS)
    elapsed = time.monotonic() - start
    assert errors
    assert sum(len(e) for e in errors) < 20_000
    # Walking it would take hours; a few list-element checks take microseconds (the bound is generous
    # for a machine under load).
    assert elapsed < 5, elapsed


def test_long_values_are_cut_in_messages():
    errors = errors_of(app(name=LONG, repo=LONG, branch=LONG))
    assert errors
    for error in errors:
        assert len(error) < 400, error
    assert "(cut, 5000 characters)" in errors[0]
    assert show(10**400) == "a very large number"
    assert show({"a": 1}) == "a mapping"


def test_a_thousand_apps_validate_quickly():
    entries = [
        app(name=f"app-{i}", repo=f"acme/app-{i}", route={"path": f"/team-{i % 50}/app-{i}/"}) for i in range(1000)
    ]
    start = time.monotonic()
    specs = parse_apps(entries, DEFAULTS)
    elapsed = time.monotonic() - start
    assert len(specs) == 1000
    # Target well under a second; the bound leaves room for a saturated machine, not for quadratic work.
    assert elapsed < 10, elapsed


def test_errors_in_many_apps_are_all_reported():
    entries = [app(name=f"app-{i}", branch="a..b") for i in range(300)]
    assert len(app_errors(entries, DEFAULTS)) == 300


# -- defaults ----------------------------------------------------------------------------------------------
def test_defaults_from_a_mapping():
    defaults = Defaults.from_mapping(
        {"branch": "develop", "cpus": "1.5", "pids": "128", "memory": "2g", "max_cpus": 8, "edge_host": None}
    )
    assert (defaults.branch, defaults.cpus, defaults.pids, defaults.max_cpus) == ("develop", 1.5, 128, 8.0)
    assert defaults.edge_host == "localhost"
    assert Defaults.from_mapping({"git_allow_file_urls": "True"}).git_allow_file_urls is True
    assert Defaults.from_mapping({"git_allow_file_urls": None}).git_allow_file_urls is False


@pytest.mark.parametrize(
    ("mapping", "part"),
    [
        ({"memroy": "1g"}, "unknown key 'memroy' (did you mean 'memory'?)"),
        ({"memory": "lots"}, "defaults: memory (apps_default_memory) 'lots'"),
        ({"branch": "a..b"}, "defaults: branch 'a..b' is not a valid branch name"),
        ({"cpus": 0}, "defaults: cpus 0"),
        ({"pids": 1}, "defaults: pids 1"),
        ({"upload_max_mb": 0}, "defaults: upload_max_mb 0"),
        ({"entrypoint": "/x.py"}, "defaults: entrypoint '/x.py'"),
        ({"git_base_url": "a b"}, "defaults: git_base_url 'a b'"),
        ({"max_cpus": "many"}, "defaults: max_cpus 'many'"),
        ({"git_allow_file_urls": "yes"}, "defaults: git_allow_file_urls 'yes' must be true or false"),
    ],
)
def test_bad_defaults_are_refused(mapping, part):
    with pytest.raises(AppSpecError) as caught:
        Defaults.from_mapping(mapping, names={"memory": "apps_default_memory"})
    assert any(part in e for e in caught.value.errors), caught.value.errors


def test_a_defaulted_value_is_checked_like_a_written_one():
    errors = app_errors([app()], Defaults(cpus=8, max_cpus=2))
    assert errors == ["apps[0] (name 'a'): resources.cpus 8 is more than the host has (2): Docker would refuse it"]


# -- reading a spec back ---------------------------------------------------------------------------------
def full_spec() -> AppSpec:
    entry = app(
        env={"A": "1"},
        secrets={"t": "vault_ok"},
        access={"htpasswd_users": [{"name": "bob", "password": SECRET}], "client_cert_cns": ["Dr Bob"]},
    )
    return parse_apps([entry], DEFAULTS)[0]


def test_a_spec_reads_back_from_its_dict_without_passwords():
    spec = full_spec()
    data = json.loads(json.dumps(spec.to_dict()))
    back = AppSpec.from_dict(data)
    assert back.to_dict() == spec.to_dict()
    assert back.access == {"htpasswd_users": [{"name": "bob"}], "client_cert_cns": ["Dr Bob"]}


@pytest.mark.parametrize(
    ("change", "part"),
    [
        ({"name": "a;b"}, "name 'a;b' must match"),
        ({"branch": "a..b"}, "branch 'a..b'"),
        ({"cpus": True}, "cpus True"),
        ({"pids": "256"}, "pids '256'"),
        ({"env": {"LD_PRELOAD": "x"}}, "reserved name 'LD_PRELOAD'"),
        ({"env": {"A": "x\ny"}}, "bad value for A"),
        ({"secrets": {"../t": "v"}}, "bad file name '../t'"),
        ({"route_path": "/x"}, "route_path '/x'"),
        ({"route_host": "X"}, "route_host 'X'"),
        ({"upstream": "h"}, "upstream 'h'"),
        ({"provider": "svn"}, "provider 'svn' must be github, git or null"),
        ({"access": {"htpasswd_users": [{"name": "bob", "password": SECRET}], "client_cert_cns": []}}, "htpasswd"),
        ({"surprise": 1}, "unknown key 'surprise'"),
        ({"base_url_path": "other"}, "base_url_path 'other' does not match"),
    ],
)
def test_a_tampered_spec_dict_is_refused(change, part):
    data = full_spec().to_dict()
    data.update(change)
    with pytest.raises(AppSpecError) as caught:
        AppSpec.from_dict(data)
    text = "\n".join(caught.value.errors)
    assert part in text, text
    assert SECRET not in text


def test_a_spec_dict_with_a_key_missing_is_refused():
    data = full_spec().to_dict()
    del data["memory_bytes"]
    with pytest.raises(AppSpecError, match="memory_bytes is missing"):
        AppSpec.from_dict(data)


def test_sha_pattern_takes_full_lower_hex_only():
    assert SHA_RE.fullmatch("a" * 40)
    assert not SHA_RE.fullmatch("a" * 40 + "\n")
    assert not SHA_RE.fullmatch("A" * 40)


def test_private_repository_credentials_are_names_of_vault_variables():
    key, token, gh_app = parse_apps(
        [
            app(name="k", repo="git@github.com:acme/k.git", auth={"deploy_key": True}),
            app(name="t", repo="https://git.example.org/acme/t.git", auth={"token": "vault_ok", "username": "oauth2"}),
            app(name="g", auth={"github_app": {"app_id": "12", "installation_id": 34, "private_key": "vault_other"}}),
        ],
        DEFAULTS,
        defined_variables=DEFINED,
    )
    assert key.repo_auth == {"kind": "deploy_key"}
    assert token.repo_auth == {"kind": "token", "username": "oauth2", "token_var": "vault_ok"}
    assert gh_app.repo_auth == {
        "kind": "github_app",
        "app_id": 12,
        "installation_id": 34,
        "private_key_var": "vault_other",
    }
    (public,) = parse_apps([app()], DEFAULTS)
    assert public.repo_auth == {}
    for spec in (key, token, gh_app, public):
        assert AppSpec.from_dict(spec.to_dict()) == spec
    (default_user,) = parse_apps([app(auth={"token": "vault_ok"})], DEFAULTS)
    assert default_user.repo_auth["username"] == "x-access-token"


@pytest.mark.parametrize(
    "repo_auth",
    [{"kind": "token"}, {"kind": "ssh"}, {"kind": "deploy_key", "path": "/x"}, {"kind": "token", "username": "u",
     "token_var": "ghp x"}, []],
)  # fmt: skip
def test_a_spec_read_back_refuses_a_bad_repo_auth(repo_auth):
    (spec,) = parse_apps([app()], DEFAULTS)
    with pytest.raises(AppSpecError, match="repo_auth"):
        AppSpec.from_dict({**spec.to_dict(), "repo_auth": repo_auth})


def test_replicas_default_to_one_and_accept_a_whole_number_or_its_text():
    assert parse_apps([app()], Defaults())[0].replicas == 1
    assert parse_apps([app(replicas=3)], Defaults())[0].replicas == 3
    # Ansible templating hands numbers over as text.
    assert parse_apps([app(replicas="12")], Defaults())[0].replicas == 12
    # One replica keeps per-host state allowed: it is the single-container app it always was.
    spec = parse_apps([app(replicas=1, data=True)], Defaults())[0]
    assert (spec.replicas, spec.data_mount) == (1, "/data")
    spec = parse_apps([app(replicas=3)], Defaults())[0]
    assert spec.to_dict()["replicas"] == 3
    assert AppSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(AppSpecError, match=r"replicas 0 must be a whole number within 1\.\.12"):
        AppSpec.from_dict({**spec.to_dict(), "replicas": 0})
