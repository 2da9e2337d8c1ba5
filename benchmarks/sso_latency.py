"""Added latency of single sign-on per request for a signed-in user: the same upstream behind the same
nginx, /triage/ (auth_request to the SSO service) against /public/ (no sign-in), at a fixed rate.

    PYTHONPATH=. .venv/bin/python benchmarks/sso_latency.py [--rate 20] [--seconds 30]

Needs what tests/integration/test_sso_edge.py needs (nginx, python3-authlib, `npm install` in
tests/sso_idp); signs in with requests through the provider's development login form.
"""

from __future__ import annotations

import argparse
import html
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urljoin

import requests

from tests.sso_stack import sso_stack


def signed_in_session(origin: str) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.verify = False
    page = s.get(f"{origin}/triage/", timeout=30)
    action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
    assert action, "the provider's login form"
    form = {"prompt": "login", "login": "alice", "password": "x"}
    done = s.post(urljoin(page.url, html.unescape(action.group(1))), data=form, timeout=30)
    assert done.url == f"{origin}/triage/", (done.url, [r.url for r in done.history], done.text[:600])
    assert done.json()["x-auth-user"] == "alice@clinic.example"
    return s


def measure(s: requests.Session, url: str, rate: float, seconds: float) -> list[float]:
    """Open loop: one request every 1/rate s (each on its own thread so a slow one does not delay the
    next), keep-alive connections from the session's pool; latency in ms."""
    out: list[float] = []
    lock = threading.Lock()

    def one() -> None:
        start = time.perf_counter()
        r = s.get(url, timeout=30, allow_redirects=False)
        elapsed = (time.perf_counter() - start) * 1000
        assert r.status_code == 200, r.status_code
        with lock:
            out.append(elapsed)

    threads = []
    t0 = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        thread = threading.Thread(target=one)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return out


def summary(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return (
        f"median {statistics.median(values):.2f} ms, p90 {q[89]:.2f} ms, p95 {q[94]:.2f} ms, "
        f"max {max(values):.2f} ms (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, sso_stack(Path(tmp)) as stack:
        origin = stack["origin"]
        s = signed_in_session(origin)
        measure(s, f"{origin}/public/", args.rate, 2)  # warm the pools
        # Alternate the two routes in slices so both see the same machine load.
        plain: list[float] = []
        sso: list[float] = []
        for _ in range(3):
            plain += measure(s, f"{origin}/public/", args.rate, args.seconds / 3)
            sso += measure(s, f"{origin}/triage/", args.rate, args.seconds / 3)
        print(f"without SSO (/public/): {summary(plain)}")
        print(f"with SSO    (/triage/): {summary(sso)}")
        print(
            f"added: median {statistics.median(sso) - statistics.median(plain):.2f} ms, "
            f"p95 {statistics.quantiles(sso, n=100)[94] - statistics.quantiles(plain, n=100)[94]:.2f} ms"
        )


if __name__ == "__main__":
    import urllib3

    urllib3.disable_warnings()
    main()
