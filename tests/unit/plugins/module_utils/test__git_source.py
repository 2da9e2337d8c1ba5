"""The plain-git source: its rules with an injected runner, and its promises against a real git server
(Debian's `git http-backend` behind tests/git_server.py, plain HTTP on loopback or HTTPS with a test CA)."""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._git_source import (
    AuthRefusedError,
    BranchMissingError,
    GitRemote,
    GitSource,
    HttpAuth,
    MalformedAnswerError,
    RunResult,
    UnreachableError,
    classify,
    parse_listing,
    run_bounded,
    url_problem,
)
from tests.git_server import GitServer, make_tls
from tests.helpers import REPO

PASSWORD = "glpat-neverToBeSeenInArgvOrLogs0000"
SHA_A = "a" * 40
SHA_B = "b" * 40


# -- URL rules ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "https://git.example.org/acme/demo.git",
        "https://git.example.org:8443/group/sub/demo",
        "http://127.0.0.1:8080/acme/demo.git",
        "http://localhost:3000/acme/demo.git",
        "ssh://git@git.example.org/acme/demo.git",
        "ssh://git@git.example.org:2222/acme/demo.git",
        "git@git.example.org:acme/demo.git",
        "deploy@gitea.clinic.internal:team/app",
    ],
)
def test_git_urls_that_are_read(url):
    assert url_problem(url) is None
    assert GitRemote(url).key == f"{url}@main"


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("ftp://git.example.org/acme/demo.git", "must be https://"),
        ("ext::sh -c touch% /tmp/pwned", "must be printable ASCII without spaces"),
        ("ext::sh", "must be https://"),
        ("http://git.example.org/acme/demo.git", "http:// is for this host's loopback only"),
        ("https://git.example.org/acme/../etc.git", "plain segments"),
        ("https://git.example.org/", "plain segments"),
        ("https://git.example.org/acme/demo.git?x=1", "no query or fragment"),
        ("https://git.example.org/acme/demo.git#main", "no query or fragment"),
        ("https://-oProxyCommand=x/acme/demo", "plain host name"),
        ("ssh://-oProxyCommand=touch/acme/demo", "plain host name"),
        ("-oProxyCommand=x@host:acme/demo", "plain user name and host name"),
        ("git@-oProxyCommand=x:acme/demo", "plain user name and host name"),
        ("git@host:-upload-pack=x", "plain segments"),
        ("file:///srv/git/acme/demo.git", "file:// is refused here"),
        ("https://git.example.org/acme/demo.git\n", "printable ASCII"),
        ("https://git.example.org:0/acme/demo.git", "bad host or port"),
        ("https://git.example.org:99999/acme/demo.git", "bad host or port"),
        (None, "must be text"),
    ],
)
def test_git_urls_that_are_refused(url, part):
    problem = url_problem(url)
    assert problem is not None
    assert part in problem
    with pytest.raises(ValueError, match="the git URL"):
        GitRemote(url)


@pytest.mark.parametrize(
    "url", [f"https://oauth2:{PASSWORD}@git.example.org/a/b.git", f"ssh://git:{PASSWORD}@git.example.org/a/b.git"]
)
def test_a_credential_in_a_url_is_refused_and_never_quoted(url):
    with pytest.raises(ValueError, match="must not carry a credential") as caught:
        GitRemote(url)
    assert PASSWORD not in str(caught.value)


def test_file_urls_only_when_enabled():
    assert url_problem("file:///srv/git/acme/demo.git", allow_file=True) is None
    assert "file:///absolute" in url_problem("file://host/srv/git/demo.git", allow_file=True)


def test_a_credential_is_never_in_repr():
    remote = GitRemote("https://git.example.org/a/b.git", auth=HttpAuth("oauth2", PASSWORD))
    assert PASSWORD not in repr(remote)
    assert PASSWORD not in repr(remote.auth)


@pytest.mark.parametrize("branch", ["-upload-pack=x", "../main", "a b", "main\n", "x.lock", "", "a//b"])
def test_bad_branches_are_refused(branch):
    with pytest.raises(ValueError, match="not a valid branch name"):
        GitRemote("https://git.example.org/a/b.git", branch)


# -- parsing ------------------------------------------------------------------------------------------------
def test_a_listing_gives_exactly_the_branch_asked_for():
    listing = f"{SHA_A}\trefs/heads/main\n{SHA_B}\trefs/heads/main-old\n".encode()
    assert parse_listing(listing, "main") == SHA_A
    assert parse_listing(listing, "main-old") == SHA_B
    assert parse_listing(listing, "mai") is None
    assert parse_listing(b"", "main") is None


@pytest.mark.parametrize(
    "stdout",
    [
        b"<html>Welcome</html>\n",
        f"{SHA_A}\trefs/heads/main\nhello\n".encode(),
        f"{SHA_A}\trefs/tags/v1\n".encode(),
        f"{SHA_A} refs/heads/main\n".encode(),
        f"{SHA_A.upper()}\trefs/heads/main\n".encode(),
        f"{'a' * 64}\trefs/heads/main\n".encode(),
        f"{SHA_A}\trefs/heads/main".encode(),  # cut short
        f"{SHA_A}\trefs/heads/main\n{SHA_B}\trefs/heads/main\n".encode(),
        f"{SHA_A}\trefs/heads/mäin\n".encode(),
        f"{SHA_A}\trefs/heads/main\r\n".encode(),
    ],
)
def test_anything_but_a_ref_listing_is_refused_whole(stdout):
    with pytest.raises(MalformedAnswerError):
        parse_listing(stdout, "main")


@pytest.mark.parametrize(
    ("stderr", "cls"),
    [
        ("fatal: could not read Username for 'https://h': terminal prompts disabled", AuthRefusedError),
        ("fatal: Authentication failed for 'https://h/a.git/'", AuthRefusedError),
        ("git@h: Permission denied (publickey).\nfatal: Could not read from remote repository.", AuthRefusedError),
        ("Host key verification failed.\nfatal: Could not read from remote repository.", AuthRefusedError),
        ("fatal: repository 'https://h/a.git/' not found", BranchMissingError),
        ("fatal: '/srv/a.git' does not appear to be a git repository", BranchMissingError),
        ("fatal: unable to access 'https://h/': Could not resolve host: h", UnreachableError),
        ("ssh: connect to host h port 22: Connection refused\nfatal: Could not read", UnreachableError),
        ("fatal: https://h/a.git/info/refs not valid: is this a git repository?", MalformedAnswerError),
        ("fatal: invalid ls-refs response: hello", MalformedAnswerError),
    ],
)
def test_gits_complaints_map_to_the_error_classes(stderr, cls):
    assert classify(stderr) is cls


def test_a_url_never_decides_the_class():
    url = "https://not-found.invalid/authentication-failed.git"
    assert classify(f"fatal: unable to access '{url}/': Could not resolve host: not-found.invalid", url) is (
        UnreachableError
    )


# -- the process: injected runner ---------------------------------------------------------------------------
class Recorder:
    def __init__(self, result: RunResult) -> None:
        self.result = result
        self.calls: list[tuple[list[str], dict[str, str], float, int]] = []

    def __call__(self, argv, env, timeout, max_output):
        self.calls.append((list(argv), dict(env), timeout, max_output))
        return self.result


def test_argv_holds_no_credential_and_the_environment_is_clean(monkeypatch):
    monkeypatch.setenv("GIT_DIR", "/tmp/elsewhere")
    monkeypatch.setenv("GIT_SSH_COMMAND", "touch /tmp/pwned")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    runner = Recorder(RunResult(0, f"{SHA_A}\trefs/heads/main\n".encode(), b""))
    source = GitSource(timeout=7, runner=runner)
    remote = GitRemote("https://git.example.org/a/b.git", auth=HttpAuth("oauth2", PASSWORD))
    assert source.head(remote).sha == SHA_A
    argv, env, timeout, max_output = runner.calls[0]
    assert argv == ["/usr/bin/git", "ls-remote", "--heads", "--exit-code", "--", remote.url, "refs/heads/main"]
    assert not any(PASSWORD in a for a in argv)
    assert (timeout, max_output) == (7, 1 << 20)
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_ALLOW_PROTOCOL"] == "https"
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["GIT_CONFIG_GLOBAL"] == "/dev/null"
    assert env["HOME"] == "/nonexistent"
    for inherited in ("GIT_DIR", "GIT_SSH_COMMAND", "HTTPS_PROXY"):
        assert inherited not in env
    config = {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))}
    assert config["http.followRedirects"] == "false"
    assert config["http.extraHeader"].startswith("Authorization: Basic ")


def test_ssh_is_strict_about_host_keys_and_never_prompts():
    runner = Recorder(RunResult(0, f"{SHA_A}\trefs/heads/main\n".encode(), b""))
    source = GitSource(runner=runner, ssh_known_hosts="/etc/monitor/known_hosts", ssh_key_file="/etc/monitor/key")
    source.head(GitRemote("git@git.example.org:a/b.git"))
    env = runner.calls[0][1]
    assert env["GIT_ALLOW_PROTOCOL"] == "ssh"
    for option in ("BatchMode=yes", "StrictHostKeyChecking=yes", "UserKnownHostsFile=/etc/monitor/known_hosts"):
        assert option in env["GIT_SSH_COMMAND"]
    with pytest.raises(ValueError, match="plain characters"):
        GitSource(ssh_known_hosts="/tmp/x; touch /tmp/pwned")
    # a per-app deploy key wins over the source's
    source.head(GitRemote("git@git.example.org:a/c.git", ssh_key_file="/etc/monitor/keys/c"))
    assert "-i /etc/monitor/keys/c -o IdentitiesOnly=yes" in runner.calls[1][1]["GIT_SSH_COMMAND"]
    with pytest.raises(ValueError, match="plain characters"):
        GitRemote("git@git.example.org:a/c.git", ssh_key_file="/k $(id)")


@pytest.mark.parametrize(
    ("result", "cls"),
    [
        (RunResult(-9, b"", b"", timed_out=True), UnreachableError),
        (RunResult(-9, b"x" * 100, b"", overflowed=True), MalformedAnswerError),
        (RunResult(2, b"", b""), BranchMissingError),
        (RunResult(0, b"", b""), MalformedAnswerError),
        (RunResult(0, b"<html>\n", b""), MalformedAnswerError),
        (RunResult(0, f"{SHA_A}\trefs/heads/other\n".encode(), b""), MalformedAnswerError),
        (RunResult(128, b"", b"fatal: Authentication failed for 'https://h/'"), AuthRefusedError),
    ],
)
def test_each_failure_is_its_class_and_a_result_not_an_exception_for_heads(result, cls):
    source = GitSource(runner=Recorder(result))
    remote = GitRemote("https://git.example.org/a/b.git")
    with pytest.raises(cls):
        source.head(remote)
    head = source.heads([remote])[remote.key]
    assert head.sha is None
    assert head.kind == cls.kind
    assert head.missing == (cls is BranchMissingError)


def test_a_remote_listed_twice_is_read_once():
    runner = Recorder(RunResult(0, f"{SHA_A}\trefs/heads/main\n".encode(), b""))
    source = GitSource(runner=runner)
    remote = GitRemote("https://git.example.org/a/b.git")
    assert set(source.heads([remote, GitRemote(remote.url)])) == {remote.key}
    assert source.runs == len(runner.calls) == 1


def test_run_bounded_kills_at_the_timeout_and_at_the_output_limit():
    slow = run_bounded(["/bin/sleep", "60"], {"PATH": "/bin"}, 0.5, 1000)
    assert slow.timed_out
    assert slow.returncode != 0
    loud = run_bounded(["/usr/bin/yes"], {"PATH": "/bin"}, 60, 1000)
    assert loud.overflowed
    assert len(loud.stdout) < 1_000_000


# -- against a real git server --------------------------------------------------------------------------------
@pytest.fixture
def server(tmp_path):
    with GitServer(tmp_path, users={"alice": PASSWORD}) as git_server:
        yield git_server


def authed(server: GitServer, name: str = "acme/demo", branch: str = "main") -> GitRemote:
    return GitRemote(server.url(name), branch, auth=HttpAuth("alice", PASSWORD))


def only_the_head_was_asked(server: GitServer) -> None:
    """Every request was the ref advertisement or an ls-refs of the branches: nothing fetched."""
    for request in server.requests():
        if request.method == "GET":
            assert request.path.endswith("/info/refs")
            assert request.query == "service=git-upload-pack"
        else:
            assert request.method == "POST"
            assert request.path.endswith("/git-upload-pack")
            assert request.command == "ls-refs"
            assert b"ref-prefix refs/heads/\n" in request.body
            assert b"want " not in request.body


def test_the_head_is_read_with_one_ls_refs_and_nothing_else(server):
    server.create("acme/demo")
    sha = server.commit("acme/demo")
    source = GitSource(timeout=30)
    head = source.head(authed(server))
    assert (head.sha, head.not_modified) == (sha, False)
    assert [(r.method, r.command) for r in server.requests() if r.method == "POST"] == [("POST", "ls-refs")]
    only_the_head_was_asked(server)
    assert source.head(authed(server)).not_modified
    newer = server.commit("acme/demo")
    assert source.head(authed(server)).sha == newer


def test_fault_cases_against_the_real_server(server):
    server.create("acme/demo")
    first = server.commit("acme/demo")
    second = server.commit("acme/demo")
    source = GitSource(timeout=30)
    # auth refused: no credential, then a wrong one; the password is never in the message
    for remote in (GitRemote(server.url("acme/demo")), GitRemote(server.url("acme/demo"), auth=HttpAuth("alice", "x"))):
        with pytest.raises(AuthRefusedError) as caught:
            source.head(remote)
        assert PASSWORD not in str(caught.value)
    # force-push to an older commit: exactly that older head
    server.force_push("acme/demo", "main", first)
    assert source.head(authed(server)).sha == first
    server.force_push("acme/demo", "main", second)
    # branch deleted; repository gone
    server.delete_branch("acme/demo", "main")
    with pytest.raises(BranchMissingError, match="branch main not found"):
        source.head(authed(server))
    with pytest.raises(BranchMissingError, match="repository not found"):
        source.head(authed(server, "acme/gone"))
    # answers that are not ref listings: a web page, and a well-framed stream of nonsense
    server.force_push("acme/demo", "main", second)
    for mode in ("html", "garbage"):
        server.mode = mode
        with pytest.raises(MalformedAnswerError):
            source.head(authed(server))
    server.mode = "git"
    only_the_head_was_asked(server)
    assert source.head(authed(server)).sha == second
    # server down
    server.stop()
    with pytest.raises(UnreachableError):
        source.head(authed(server))


def test_a_server_that_accepts_and_never_answers_is_unreachable_after_the_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        source = GitSource(timeout=2)
        remote = GitRemote(f"http://127.0.0.1:{listener.getsockname()[1]}/a/b.git")
        head = source.heads([remote])[remote.key]
        assert head.kind == "unreachable"
    finally:
        stop.set()
        thread.join()
        listener.close()
        for conn in accepted:
            conn.close()


def test_https_with_the_servers_own_ca_only(tmp_path):
    ca, leaf, key = make_tls(tmp_path / "tls")
    with GitServer(tmp_path / "git", tls=(leaf, key)) as server:
        server.create("acme/demo")
        sha = server.commit("acme/demo")
        remote = GitRemote(server.url("acme/demo"))
        with pytest.raises(UnreachableError, match="certificate"):
            GitSource(timeout=30).head(remote)
        assert GitSource(timeout=30, ca_file=str(ca)).head(remote).sha == sha


def test_file_urls_read_a_bare_repository(tmp_path):
    server = GitServer(tmp_path)
    server.create("acme/demo")
    sha = server.commit("acme/demo")
    remote = GitRemote(server.file_url("acme/demo"), allow_file=True)
    assert GitSource(timeout=30).head(remote).sha == sha
    with pytest.raises(BranchMissingError):
        GitSource(timeout=30).head(GitRemote(server.file_url("acme/none"), allow_file=True))


def test_the_runner_leaves_no_process_behind(server):
    server.create("acme/demo")
    server.commit("acme/demo")
    before = set(os.listdir("/proc"))
    GitSource(timeout=30).heads([authed(server)] * 3)
    mine = [p for p in set(os.listdir("/proc")) - before if p.isdigit() and _child_of_this_process(p)]
    assert mine == []


def _child_of_this_process(pid: str) -> bool:
    """Whether the process is a child of this one and not the test git server's own http-backend (it runs
    in this process's threads). A process of the busy machine may end between the listing and the read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The command name is in parentheses and may hold spaces: the parent's pid is the 2nd field after it.
    return stat.rpartition(")")[2].split()[1] == str(os.getpid()) and comm != "git-http-backend"


# -- over SSH, against a real sshd (Debian's openssh-server) --------------------------------------------------
SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    """sshd on a loopback port, one authorized key, for the user running the tests (git-upload-pack runs
    as that user). Yields (port, client key, known_hosts, a key it does not know)."""
    if not SSHD.exists():
        pytest.skip("openssh-server is not installed (apt-get install openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("sshd needs root to serve a login")
    keys = tmp_path / "ssh"
    keys.mkdir(mode=0o700)
    for name in ("host", "client", "stranger"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True, timeout=60)
    (keys / "authorized_keys").write_text((keys / "client.pub").read_text())
    port = free_port()
    host_pub = (keys / "host.pub").read_text().split()
    (keys / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    options = {
        "ListenAddress": f"127.0.0.1:{port}",
        "HostKey": str(keys / "host"),
        "AuthorizedKeysFile": str(keys / "authorized_keys"),
        "StrictModes": "no",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "PermitRootLogin": "prohibit-password",
        "UsePAM": "no",
        "PidFile": str(keys / "sshd.pid"),
    }
    argv = [str(SSHD), "-D", "-e", "-f", "/dev/null"]
    for key, value in options.items():
        argv += ["-o", f"{key}={value}"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            break
        time.sleep(0.1)
    try:
        yield port, str(keys / "client"), str(keys / "known_hosts"), str(keys / "stranger")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_ssh_reads_the_head_with_the_deploy_key_and_a_known_host_only(tmp_path, sshd):
    port, key, known_hosts, stranger = sshd
    server = GitServer(tmp_path / "git")  # its bare repositories; sshd serves them
    server.create("acme/demo")
    sha = server.commit("acme/demo")
    user = pwd.getpwuid(os.getuid()).pw_name
    url = f"ssh://{user}@127.0.0.1:{port}{server.root}/acme/demo.git"
    remote = GitRemote(url, ssh_key_file=key)
    assert GitSource(timeout=30, ssh_known_hosts=known_hosts).head(remote).sha == sha
    # a key the server does not know, no known host, no key at all: refused, never a prompt
    for source, remote in (
        (GitSource(timeout=30, ssh_known_hosts=known_hosts), GitRemote(url, ssh_key_file=stranger)),
        (GitSource(timeout=30), GitRemote(url, ssh_key_file=key)),
        (GitSource(timeout=30, ssh_known_hosts=known_hosts), GitRemote(url)),
    ):
        with pytest.raises(AuthRefusedError):
            source.head(remote)


def test_on_the_host_the_git_source_answers_with_the_github_clients_result_type(tmp_path: Path) -> None:
    """The monitor's directory holds the libraries side by side (roles/monitor/tasks/install.yml copies
    roles/monitor/vars/main.yml's _monitor_modules): there `_git_source` imports github_client's
    HeadResult as a plain module, and both sources answer with it."""
    libraries = yaml.safe_load((REPO / "roles/monitor/vars/main.yml").read_text())["_monitor_modules"]
    assert {"_git_source.py", "github_client.py"} <= set(libraries)
    for name in libraries:
        (tmp_path / name).write_bytes((REPO / "plugins/module_utils" / name).read_bytes())
    (tmp_path / "check.py").write_text(
        "import sys, _git_source, github_client\n"
        "assert 'ansible_collections.secure_streamlit' not in sys.modules\n"
        "assert _git_source.HeadResult is github_client.HeadResult\n"
        "print(_git_source.HeadResult('remote', None, error='x', kind='timeout'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-E", "-s", "check.py"], cwd=tmp_path, capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "kind='timeout'" in result.stdout
