"""The deploy engine's health probe against a real local HTTP server."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._deploy import http_status


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/garbage":
            self.wfile.write(b"not http at all\r\n\r\n")
            return
        status = {"/app/_stcore/health": 200, "/moved": 301}.get(self.path, 503)
        self.send_response(status)
        if status == 301:
            self.send_header("Location", "/app/_stcore/health")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_healthy_app_answers_200(server: str):
    assert http_status(f"{server}/app/_stcore/health", 10.0) == 200


def test_an_error_status_is_returned_not_raised(server: str):
    assert http_status(f"{server}/app/other", 10.0) == 503


def test_a_redirect_is_not_followed(server: str):
    assert http_status(f"{server}/moved", 10.0) == 301


def test_an_answer_that_is_not_http_is_an_oserror(server: str):
    with pytest.raises(OSError, match="BadStatusLine"):
        http_status(f"{server}/garbage", 10.0)


def test_nothing_listening_is_an_oserror():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        http_status(f"http://127.0.0.1:{port}/app/_stcore/health", 10.0)


def test_only_plain_http_urls_are_probed():
    with pytest.raises(ValueError, match="not an http:// URL"):
        http_status("file:///etc/passwd", 1.0)
