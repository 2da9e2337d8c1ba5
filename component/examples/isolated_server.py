"""The example app served cross-origin isolated (COOP same-origin + COEP require-corp on every
response), as the TLS edge serves apps. Run: SECURE_CONTEXT_SANDBOX_ORIGIN=http://127.0.0.1:PORT
streamlit run isolated_server.py (with sandbox_origin.py serving that origin). Tests and benchmark."""

from __future__ import annotations

import os

import streamlit as st
from starlette.middleware import Middleware

ISOLATION_HEADERS = [
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-embedder-policy", b"require-corp"),
]


class CrossOriginIsolation:
    """ASGI middleware adding the isolation headers to every HTTP response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *ISOLATION_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


app = st.App(os.environ.get("SECURE_CONTEXT_EXAMPLE", "app.py"), middleware=[Middleware(CrossOriginIsolation)])
