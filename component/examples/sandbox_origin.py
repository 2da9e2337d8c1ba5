"""A local stand-in for the edge's sandbox origin: serves the installed component's frontend files
with the headers roles/tls sends there (COEP require-corp, CORP cross-origin, the strict CSP).

Usage: python sandbox_origin.py PORT   (tests and benchmark; on a host the edge serves these files)
"""

from __future__ import annotations

import functools
import http.server
import sys
from pathlib import Path
from typing import ClassVar

import streamlit_secure_context

ROOT = Path(streamlit_secure_context.__file__).parent / "frontend"
HEADERS = {
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; connect-src 'self';"
        " img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; frame-ancestors http://127.0.0.1:*;"
        " base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
    }

    def end_headers(self) -> None:
        for name, value in HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    handler = functools.partial(Handler, directory=str(ROOT))
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
