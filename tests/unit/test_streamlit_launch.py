"""The app images' launcher (roles/apps/files/streamlit_launch.py): Streamlit's server connections get
TCP_NODELAY, so a keep-alive response no longer waits 40 ms for the client's delayed ACK.

The end-to-end tests run a real `streamlit run` in the component's venv (`.cache/venv-component`, with
the Streamlit the images pin; the controller's venv has none), hold a keep-alive connection open and
read TCP_NODELAY on the server's side of it: a duplicate of the server's socket, taken with
pidfd_getfd(2). Plain `streamlit run` is the control. It shows the bug the launcher works around, and
the day Streamlit fixes it, that test fails: the launcher can then go.
"""

from __future__ import annotations

import ctypes
import http.client
import importlib.util
import os
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO

LAUNCHER = REPO / "roles/apps/files/streamlit_launch.py"
COMPONENT_PYTHON = REPO / ".cache/venv-component/bin/python"
_spec = importlib.util.spec_from_file_location("streamlit_launch", LAUNCHER)
launch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launch)

SYS_PIDFD_GETFD = 438  # the same number on x86_64 and arm64


def nodelay(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


@pytest.fixture
def fake_streamlit_server(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Stands in for Streamlit's server module (the controller's venv has no Streamlit); its
    `_bind_socket` binds a real socket the way Streamlit 1.67's does, protocol number 0."""
    module = types.ModuleType(launch.SERVER_MODULE)

    def bind_socket(address: str, port: int, backlog: int) -> socket.socket:
        sock = socket.socket(family=socket.AF_INET)
        sock.bind((address, port))
        sock.listen(backlog)
        return sock

    module._bind_socket = bind_socket
    monkeypatch.setitem(sys.modules, launch.SERVER_MODULE, module)
    return module


def test_the_listener_and_what_it_accepts_get_tcp_nodelay(fake_streamlit_server):
    assert launch.disable_nagle() is True
    with fake_streamlit_server._bind_socket("127.0.0.1", 0, 8) as listener:
        assert nodelay(listener) == 1
        with socket.create_connection(listener.getsockname()[:2]):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.proto == 0  # what keeps asyncio from setting it
                assert nodelay(accepted) == 1


def test_streamlit_runs_unchanged_with_a_warning_when_its_server_differs(monkeypatch):
    monkeypatch.setitem(sys.modules, launch.SERVER_MODULE, types.ModuleType(launch.SERVER_MODULE))
    with pytest.warns(RuntimeWarning, match="Nagle's algorithm stays on"):
        assert launch.disable_nagle() is False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def streamlit_server(request, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    if not COMPONENT_PYTHON.exists():
        pytest.fail(f"{COMPONENT_PYTHON} is missing: run `make setup` first")
    app = tmp_path / "app.py"
    app.write_text("import streamlit as st\n\nst.write('hello')\n")
    port = free_port()
    start = [str(LAUNCHER)] if request.param == "launcher" else ["-m", "streamlit"]
    server = subprocess.Popen(
        [str(COMPONENT_PYTHON), *start, "run", str(app), f"--server.port={port}", "--server.headless=true"],
        cwd=tmp_path,
        env=dict(os.environ, HOME=str(tmp_path), STREAMLIT_BROWSER_GATHER_USAGE_STATS="false"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read().decode()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "Streamlit did not start listening within 60 s"
                time.sleep(0.2)
        yield server, port
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stderr.close()


def server_side_nodelay(pid: int, client: socket.socket) -> int:
    """TCP_NODELAY of the server process's socket whose peer is `client`."""
    libc = ctypes.CDLL(None, use_errno=True)
    client_port = client.getsockname()[1]
    pidfd = os.pidfd_open(pid)
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                continue
            copy = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(fd), 0)
            if copy < 0:
                raise OSError(ctypes.get_errno(), f"pidfd_getfd of fd {fd} of process {pid}")
            with socket.socket(fileno=copy) as sock:
                if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
                    continue
                try:
                    peer_port = sock.getpeername()[1]
                except OSError:
                    continue  # the listener: no peer
                if peer_port == client_port:
                    return nodelay(sock)
    finally:
        os.close(pidfd)
    raise AssertionError(f"process {pid} has no socket connected to port {client_port}")


@pytest.mark.parametrize(
    ("streamlit_server", "expected"),
    [("launcher", 1), ("plain streamlit run", 0)],
    indirect=["streamlit_server"],
)
def test_the_server_side_of_a_keep_alive_connection(streamlit_server, expected):
    server, port = streamlit_server
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(2):  # the same connection, kept alive
            connection.request("GET", "/_stcore/health")
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b"ok")
        assert server_side_nodelay(server.pid, connection.sock) == expected
    finally:
        connection.close()
