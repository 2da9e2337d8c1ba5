"""Added latency of the SSO service's websocket relay: round trips of small frames over an app's
websocket through it (/triage/, access.oidc) against the same upstream's websocket straight from nginx
(/public/), on the stack of tests/integration/test_sso_edge.py.

    PYTHONPATH=.:collections .venv/bin/python benchmarks/sso_websocket_latency.py [--frames 600]

Needs what tests/integration/test_sso_edge.py needs (nginx, python3-authlib, `npm install` in
tests/sso_idp).
"""

from __future__ import annotations

import argparse
import os
import ssl
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.sso_latency import signed_in_session
from tests.sso_stack import sso_stack, websocket_handshake


def open_websocket(origin: str, path: str, sid: str) -> ssl.SSLSocket:
    sock, head = websocket_handshake(origin, path, sid)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def read_exact(sock: ssl.SSLSocket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "the websocket closed"
        data += chunk
    return data


def round_trip(sock: ssl.SSLSocket, payload: bytes) -> float:
    mask = os.urandom(4)
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    start = time.perf_counter()
    sock.sendall(frame)
    while True:
        header = read_exact(sock, 2)
        body = read_exact(sock, header[1] & 0x7F)
        if body == payload:
            return (time.perf_counter() - start) * 1000
        # else: one of the upstream's idle frames


def summary(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return f"median {statistics.median(values):.2f} ms, p95 {q[94]:.2f} ms, max {max(values):.2f} ms (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, sso_stack(Path(tmp)) as stack:
        origin = stack["origin"]
        sid = signed_in_session(origin).cookies["__Host-streamlit-sso"]
        relayed = open_websocket(origin, "/triage/_stcore/stream", sid)
        direct = open_websocket(origin, "/public/_stcore/stream", sid)
        plain: list[float] = []
        sso: list[float] = []
        # Alternate in slices of 20 so both see the same machine load.
        for i in range(args.frames // 20):
            for j in range(20):
                payload = f"frame-{i}-{j}".encode()
                plain.append(round_trip(direct, payload))
                sso.append(round_trip(relayed, payload))
        print(f"direct  (/public/): {summary(plain)}")
        print(f"relayed (/triage/): {summary(sso)}")
        print(f"added: median {statistics.median(sso) - statistics.median(plain):.2f} ms")


if __name__ == "__main__":
    main()
