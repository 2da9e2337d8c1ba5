"""A real git server for the tests: Debian's `git http-backend` (smart HTTP) behind a small Python HTTP server.

The git side is git's own CGI program, unchanged; the Python side only does what a web server does in
front of it (Basic auth, CGI environment, headers), plus what the fault tests need: stop answering,
answer something that is not git, and record every request (method, path, query, and the protocol v2
command of each POST) so a test can prove what a client asked for.

    with GitServer(tmp_path) as server:
        url = server.create("acme/demo")           # a bare repository; its http URL
        sha = server.commit("acme/demo", "main")   # a new commit on main; its SHA
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import ssl
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
GIT_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/nonexistent",
    "LANG": "C",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.org",
}


def git(*argv: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        ["git", *argv], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip()


@dataclass
class Logged:
    method: str
    path: str
    query: str
    command: str  # the protocol v2 command of a POST ("ls-refs", "fetch"), "" otherwise
    body: bytes


class GitServer:
    """Bare repositories under `root`, served over smart HTTP on 127.0.0.1 (HTTPS with `tls`)."""

    def __init__(
        self,
        root: Path,
        *,
        users: dict[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.root = root / "srv"
        self.work = root / "work"
        self.root.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.users = users or {}
        self.tls = tls
        self.mode = "git"  # "git", "html" (a web page, 200), "garbage" (a pkt-line stream that lies)
        self.log: list[Logged] = []
        self.sent = 0  # bytes of answer bodies sent (the cost figures of docs/monitor.md)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- repositories -----------------------------------------------------------------------------
    def create(self, name: str) -> str:
        bare = self.root / f"{name}.git"
        bare.parent.mkdir(parents=True, exist_ok=True)
        git("init", "--bare", "--quiet", "--initial-branch=main", str(bare))
        git("config", "http.receivepack", "false", cwd=bare)
        clone = self.work / name
        clone.parent.mkdir(parents=True, exist_ok=True)
        git("init", "--quiet", "--initial-branch=main", str(clone))
        git("remote", "add", "origin", str(bare), cwd=clone)
        return self.url(name)

    def url(self, name: str) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/{name}.git"

    def file_url(self, name: str) -> str:
        return f"file://{self.root}/{name}.git"

    def commit(self, name: str, branch: str = "main", text: str | None = None) -> str:
        clone = self.work / name
        git("checkout", "--quiet", "-B", branch, cwd=clone)
        count = len(list(clone.glob("change-*")))
        (clone / f"change-{count}").write_text(text or f"change {count}\n")
        git("add", "-A", cwd=clone)
        git("commit", "--quiet", "-m", f"change {count}", cwd=clone)
        git("push", "--quiet", "--force", "origin", f"{branch}:{branch}", cwd=clone)
        return git("rev-parse", "HEAD", cwd=clone)

    def force_push(self, name: str, branch: str, sha: str) -> None:
        """Move the branch back (or anywhere) on the server, as `git push --force` does."""
        git("update-ref", f"refs/heads/{branch}", sha, cwd=self.root / f"{name}.git")

    def delete_branch(self, name: str, branch: str) -> None:
        git("update-ref", "-d", f"refs/heads/{branch}", cwd=self.root / f"{name}.git")

    def remove(self, name: str) -> None:
        shutil.rmtree(self.root / f"{name}.git")

    # -- the server -------------------------------------------------------------------------------
    def start(self) -> GitServer:
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering: the port is closed (a connection is refused), the repositories stay."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> GitServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests(self) -> list[Logged]:
        with self._lock:
            return list(self.log)

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()


_COMMAND_RE = re.compile(rb"[0-9a-f]{4}command=([a-z-]+)\n")


def _handler_for(server: GitServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = self._read_chunked()
            command = _COMMAND_RE.match(body)
            with server._lock:
                server.log.append(
                    Logged(self.command, parts.path, parts.query, command[1].decode() if command else "", body)
                )
            if server.users:
                given = self.headers.get("Authorization", "")
                ok = False
                if given.startswith("Basic "):
                    try:
                        user, _, password = base64.b64decode(given[6:]).decode().partition(":")
                        ok = server.users.get(user) == password
                    except ValueError:
                        ok = False
                if not ok:
                    self._reply(401, b"auth required\n", {"WWW-Authenticate": 'Basic realm="git"'})
                    return
            if server.mode == "html":
                self._reply(200, b"<html><body>Welcome to our portal</body></html>\n", {"Content-Type": "text/html"})
                return
            if server.mode == "garbage" and self.command == "POST":
                # A well-framed pkt-line answer whose lines are not ref listings.
                lines = [b"hello there\n", b"0123 refs/heads/main\n"]
                payload = b"".join(f"{len(x) + 4:04x}".encode() + x for x in lines) + b"0000"
                self._reply(200, payload, {"Content-Type": "application/x-git-upload-pack-result"})
                return
            self._cgi(parts.path, parts.query, body)

        def _read_chunked(self) -> bytes:
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()

        def _cgi(self, path: str, query: str, body: bytes) -> None:
            env = {
                **GIT_ENV,
                "GIT_PROJECT_ROOT": str(server.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_ADDR": "127.0.0.1",
            }
            if self.headers.get("Git-Protocol"):
                env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
            result = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True, check=False, timeout=60)
            head, _, payload = result.stdout.partition(b"\r\n\r\n")
            if not _:
                head, _, payload = result.stdout.partition(b"\n\n")
            status, headers = 200, {}
            for line in head.decode("latin-1").splitlines():
                key, _, value = line.partition(":")
                if key.lower() == "status":
                    status = int(value.split()[0])
                elif key:
                    headers[key] = value.strip()
            self._reply(status, payload, headers)

        def _reply(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            with server._lock:
                server.sent += len(payload)

        do_GET = _serve
        do_POST = _serve

    return Handler


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a leaf for 127.0.0.1 (openssl from Debian): (ca.pem, leaf.pem, leaf.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, leaf = (directory / n for n in ("ca.key", "ca.pem", "leaf.key", "leaf.csr", "leaf.pem"))

    def openssl(*argv: str) -> None:
        subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(ca_key),
            "-out", str(ca), "-days", "2", "-subj", "/CN=test git CA")  # fmt: skip
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
            "-out", str(csr), "-subj", "/CN=127.0.0.1")  # fmt: skip
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(leaf), "-days", "2", "-extfile", str(ext))  # fmt: skip
    os.chmod(key, 0o600)
    return ca, leaf, key


def main(argv: list[str] | None = None) -> None:
    """Serve `--root` on 127.0.0.1:`--port` until killed; `--create NAME` makes a repository with one commit
    first (the molecule scenario's git server, a test-only systemd unit)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--create", action="append", default=[])
    parser.add_argument("--users-file", type=Path, help="lines of name:password: Basic auth required")
    args = parser.parse_args(argv)
    users = None
    if args.users_file:
        lines = args.users_file.read_text().splitlines()
        users = dict(line.split(":", 1) for line in lines if ":" in line)
    server = GitServer(args.root, users=users)
    server.port = args.port
    for name in args.create:
        if not (server.root / f"{name}.git").exists():
            server.create(name)
            server.commit(name)
    server.start()
    print(f"serving {server.root} at http://127.0.0.1:{server.port}/", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
