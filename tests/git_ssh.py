"""A real git server over SSH for the tests: Debian's sshd on a loopback port, one authorized key that may
run nothing but `git-shell` (as a forge's deploy key can only read and write repositories).

    with GitSshServer(tmp_path, repo_root) as ssh:
        ssh.url("/srv/acme/demo.git")   # ssh://USER@127.0.0.1:PORT/srv/acme/demo.git
        ssh.client_key, ssh.known_hosts  # the key it accepts, the pinned host key line

Needs root (sshd serves a login for the user running the tests) and openssh-server.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import subprocess
import time
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
GIT_SHELL = "/usr/bin/git-shell"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def available() -> str | None:
    """Why the server cannot run here, or None."""
    if not SSHD.exists():
        return "openssh-server is not installed (apt-get install openssh-server)"
    if not Path(GIT_SHELL).exists():
        return "git-shell is not installed (Debian's git package)"
    if os.geteuid() != 0:
        return "sshd needs root to serve a login"
    return None


class GitSshServer:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in ("host", "client", "stranger"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(self.dir / name)],
                check=True,
                timeout=60,
            )
        # restrict: no forwarding, no pty; command=: whatever the client asks, git-shell decides (it runs
        # git-upload-pack and git-receive-pack only).
        forced = f'restrict,command="{GIT_SHELL} -c \\"$SSH_ORIGINAL_COMMAND\\""'
        (self.dir / "authorized_keys").write_text(f"{forced} {(self.dir / 'client.pub').read_text()}")
        self.port = free_port()
        host_pub = (self.dir / "host.pub").read_text().split()
        (self.dir / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def client_key(self) -> Path:
        return self.dir / "client"

    @property
    def stranger_key(self) -> Path:
        return self.dir / "stranger"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def url(self, path: Path | str) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    def start(self) -> GitSshServer:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        options = {
            "ListenAddress": f"127.0.0.1:{self.port}",
            "HostKey": str(self.dir / "host"),
            "AuthorizedKeysFile": str(self.dir / "authorized_keys"),
            "StrictModes": "no",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "PermitRootLogin": "prohibit-password",
            "UsePAM": "no",
            "PidFile": str(self.dir / "sshd.pid"),
            "LogLevel": "VERBOSE",
        }
        argv = [str(SSHD), "-D", "-e", "-f", "/dev/null"]
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        log = (self.dir / "sshd.log").open("wb")
        self.process = subprocess.Popen(argv, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            time.sleep(0.1)
        raise RuntimeError("sshd did not listen within 60 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def __enter__(self) -> GitSshServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
