"""make lab-push / lab-push-broken: push a version of the lab's example app to the lab git server and
watch the edge in a real browser (Debian's Chromium driven by Playwright).

    lab_push.py --container streamlit-lab --ca .cache/lab/streamlit-lab/ca.crt --url https://localhost:8443/hello/
    lab_push.py ... --broken

A good push prints the seconds from the push to the new version on the page. A broken push waits for
the deploy record of its commit (the host's audit trail), prints it, and shows the old version still on
the page. Exit status 0 only when that is what happened. Run with .cache/venv-component's Python (it
has Playwright); scripts/lab.sh does.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import ssl
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts import headless_chromium

TITLE_RE = re.compile(r"Hello from the lab: version (\d+)")
DEPLOY_LOG = "/var/log/streamlit/deploys.log"


def lab_exec(container: str, *argv: str) -> str:
    return subprocess.run(
        ["docker", "exec", container, *argv], capture_output=True, text=True, check=True, timeout=120
    ).stdout


def check_certificate(url: str, ca: Path) -> None:
    """The edge's certificate chains to the lab CA and names the host: what a browser that trusts the CA
    checks. The browser below then skips its own check (its trust store is not the lab's)."""
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((parts.hostname, parts.port or 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=parts.hostname),
    ):
        pass


class Page:
    """One browser page on the app, reloaded to read the version it shows."""

    def __init__(self, url: str) -> None:
        from playwright.sync_api import Error

        self._error = Error
        self.url = url
        self._stack = ExitStack()
        browser = self._stack.enter_context(headless_chromium.browser())
        self._page = browser.new_context(ignore_https_errors=True).new_page()

    def version(self, timeout_s: float = 60) -> int | None:
        """The version the app's title shows after a fresh load, or None when none rendered in time."""
        try:
            self._page.goto(self.url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
            heading = self._page.get_by_role("heading", name=TITLE_RE)
            heading.first.wait_for(timeout=timeout_s * 1000)
            match = TITLE_RE.search(heading.first.inner_text())
        except self._error:  # not rendered (yet): not this version
            return None
        return int(match.group(1)) if match else None

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._page.screenshot(path=str(path), full_page=True)

    def close(self) -> None:
        self._stack.close()


def deploy_record(container: str, sha: str) -> dict | None:
    """The deploy engine's audit record of this commit, when there is one."""
    for line in reversed(lab_exec(container, "cat", DEPLOY_LOG).splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("sha") == sha and record.get("status") in ("deployed", "failed"):
            return record
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--container", required=True)
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--broken", action="store_true", help="push a commit whose script fails at import")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the deploy (600)")
    parser.add_argument("--screenshots", type=Path, help="a directory for before/after screenshots")
    args = parser.parse_args(argv)

    check_certificate(args.url, args.ca)
    page = Page(args.url)
    try:
        before = page.version()
        if before is None:
            print(f"the app does not show a version at {args.url}: is the lab up (make lab)?", file=sys.stderr)
            return 1
        print(f"serving now: version {before} at {args.url}")
        if args.screenshots:
            page.screenshot(args.screenshots / "before.png")

        action = "push-broken" if args.broken else "push"
        sha, version = lab_exec(args.container, "/usr/local/bin/lab-git-app", action).split()
        pushed = time.monotonic()
        print(f"pushed {'broken ' if args.broken else ''}version {version}: {sha}")
        deadline = pushed + args.timeout

        if not args.broken:
            while time.monotonic() < deadline:
                shown = page.version()
                if shown is not None and shown >= int(version):
                    seconds = time.monotonic() - pushed
                    if args.screenshots:
                        page.screenshot(args.screenshots / "after.png")
                    print(f"version {shown} serving {seconds:.1f} s after the push")
                    return 0
                record = deploy_record(args.container, sha)
                if record and record["status"] == "failed":
                    print(f"the deploy failed: {json.dumps(record)}", file=sys.stderr)
                    return 1
                time.sleep(1)
            print(f"version {version} not serving {args.timeout:.0f} s after the push", file=sys.stderr)
            return 1

        while time.monotonic() < deadline:
            record = deploy_record(args.container, sha)
            if record:
                break
            time.sleep(2)
        else:
            print(f"no deploy record for {sha} {args.timeout:.0f} s after the push", file=sys.stderr)
            return 1
        print(f"deploy record ({DEPLOY_LOG} in the lab host):")
        print(json.dumps(record))
        shown = page.version()
        if args.screenshots:
            page.screenshot(args.screenshots / "after-broken.png")
        if record["status"] != "failed" or shown != before:
            print(f"expected a failed deploy and version {before} still serving; page shows {shown}", file=sys.stderr)
            return 1
        print(f"still serving: version {shown}; the broken commit was refused: {record.get('reason', '')}")
        return 0
    finally:
        page.close()


if __name__ == "__main__":
    sys.exit(main())
