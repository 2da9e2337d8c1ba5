"""A stand-in for a Streamlit server behind the edge (molecule only).

Answers every GET/POST with JSON naming the port, path and the headers the edge passed on, answers
the websocket handshake on */_stcore/stream with 101, and /_stcore/health with "ok".
"""

import base64
import hashlib
import http.server
import json
import sys

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.endswith("/_stcore/stream") and self.headers.get("Upgrade", "").lower() == "websocket":
            key = self.headers.get("Sec-WebSocket-Key", "")
            accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()  # noqa: S324
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            self.close_connection = True
            return
        if self.path.endswith("/_stcore/health"):
            self._reply(200, b"ok", "text/plain")
            return
        body = {"port": self.server.server_port, "path": self.path, "headers": dict(self.headers)}
        self._reply(200, json.dumps(body).encode())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        self._reply(200, json.dumps({"port": self.server.server_port, "received": length}).encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
