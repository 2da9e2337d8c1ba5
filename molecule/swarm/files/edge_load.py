"""Requests through the edge at a steady rate, each on a new TLS connection, until a stop file appears or a
time bound passes; then one JSON document with every answer's HTTP code (or the error's type) and the
seconds the requests were sent over. Runs on the first manager with its own python3 (stdlib only).

usage: edge_load.py RATE MAX_SECONDS STOP_FILE RESULT_FILE URL_HOST PATH CA_FILE
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor

TIMEOUT = 10.0


def one(context: ssl.SSLContext, host: str, path: str) -> str:
    """One GET to 127.0.0.1:443 with SNI and Host `host`; the status code, or the exception's type."""
    try:
        sock = socket.create_connection(("127.0.0.1", 443), timeout=TIMEOUT)
        conn = http.client.HTTPSConnection(host, 443, timeout=TIMEOUT, context=context)
        conn.sock = context.wrap_socket(sock, server_hostname=host)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return str(response.status)
        finally:
            conn.close()
    except Exception as exc:  # every failure is an answer to count
        return type(exc).__name__


def main() -> int:
    rate, bound, stop, result, host, path, ca = sys.argv[1:8]
    context = ssl.create_default_context(cafile=ca)
    interval = 1.0 / float(rate)
    futures = []
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=64) as pool:
        sent = 0
        while not os.path.exists(stop) and time.monotonic() - start < float(bound):
            # A fixed schedule: a late tick is caught up, so the rate holds on average.
            delay = start + sent * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(one, context, host, path))
            sent += 1
        seconds = time.monotonic() - start
        codes = [f.result() for f in futures]
    temp = f"{result}.tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump({"codes": codes, "seconds": round(seconds, 1), "rate": float(rate)}, handle)
    os.replace(temp, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
