"""Debian's Chromium, headless and driven by Playwright: how every browser test, benchmark and the lab start it.

Imported as `scripts.headless_chromium` with the repo root on sys.path, from every interpreter that drives a
browser: pytest in the collection's venv (tests/, whose pythonpath has the root) and in the component's
(.cache/venv-component, `python -m pytest component/tests` from the root), and the files run as scripts
(scripts/lab_push.py, tests/status_app_browser.py, benchmarks/*.py), which put the root first themselves.
Not under tests/: component/tests is a package named `tests` too, and would shadow it there.
Standard library only at import; Playwright is imported when a browser starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserType

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Headless in a container (no user namespaces for Chromium's own sandbox, no GPU), and nothing fetched
# in the background, so that a test's requests are all the page's own.
ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
# WebGPU on SwiftShader (a software Vulkan: no GPU here), so the component's WebGPU path runs.
WEBGPU_ARGS = (*(a for a in ARGS if a != "--disable-gpu"), "--enable-unsafe-webgpu", "--enable-unsafe-swiftshader")


def available() -> bool:
    return Path(CHROMIUM).exists()


def launch(browser_type: BrowserType, *extra_args: str, webgpu: bool = False) -> Browser:
    """Chromium started by an open Playwright driver (`playwright.chromium`), with the flags above."""
    return browser_type.launch(executable_path=CHROMIUM, args=[*(WEBGPU_ARGS if webgpu else ARGS), *extra_args])


@contextmanager
def browser(*extra_args: str, webgpu: bool = False) -> Iterator[Browser]:
    """A Playwright driver and one Chromium on it, both stopped on the way out.

    Playwright's sync API allows one driver at a time: to run two browsers side by side, open one
    driver and `launch` each on it.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        started = launch(playwright.chromium, *extra_args, webgpu=webgpu)
        try:
            yield started
        finally:
            started.close()
