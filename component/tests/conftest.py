"""Fixtures for the component's end-to-end tests: a real `streamlit run` of the example app and a
real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from scripts import headless_chromium

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_streamlit(script: str, env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", script, "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=EXAMPLES,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(f"{url}/_stcore/health", timeout=1).ok:
                    break
            # Not listening yet, or too slow to answer within a second on a loaded machine.
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"streamlit run {script} did not answer on {url}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def app_url() -> Iterator[str]:
    yield from start_streamlit("app.py")


@pytest.fixture(scope="session")
def probe_url() -> Iterator[str]:
    yield from start_streamlit("csp_probe.py")


@pytest.fixture(scope="session")
def sandbox_origin() -> Iterator[str]:
    """A stand-in for the edge's sandbox origin (same headers as roles/tls sends there)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "sandbox_origin.py", str(port)], cwd=EXAMPLES)
    origin = f"http://127.0.0.1:{port}"
    try:
        for _ in range(50):
            try:
                if requests.get(f"{origin}/sandbox.html", timeout=1).ok:
                    break
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.2)
        yield origin
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def isolated_app_url(sandbox_origin) -> Iterator[str]:
    """The example app behind COOP/COEP, told the sandbox origin as the platform tells app images."""
    yield from start_streamlit("isolated_server.py", {"SECURE_CONTEXT_SANDBOX_ORIGIN": sandbox_origin})


@pytest.fixture(scope="session")
def chromium():
    """One Playwright driver for the session (its sync API allows one at a time)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright.chromium


@pytest.fixture(scope="session")
def browser(chromium):
    browser = headless_chromium.launch(chromium)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def webgpu_browser(chromium):
    """Chromium with WebGPU on SwiftShader (a software Vulkan: no GPU here), so the WebGPU path runs."""
    browser = headless_chromium.launch(chromium, webgpu=True)
    yield browser
    browser.close()


# What each open page's frames and workers printed, for the report of a test that fails.
CONSOLE: dict[object, list[str]] = {}


def fresh_page(browser) -> Iterator:
    """A page in a browser context of its own: no cache, storage or cookies from another test."""
    context = browser.new_context()
    page = context.new_page()
    console = CONSOLE[page] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"page error: {e}"))
    page.on("worker", lambda w: w.on("console", lambda m: console.append(f"worker {m.type}: {m.text}")))
    yield page
    CONSOLE.pop(page, None)
    context.close()


def what_the_browser_shows(page) -> str:
    """Every frame's text and the console: what a failed browser test saw, for its report."""
    lines = []
    for frame in page.frames:
        try:
            text = frame.evaluate("document.body ? document.body.innerText : ''")
        except Exception as error:  # a frame that is gone is described, not raised
            text = f"(unreadable: {error})"
        lines.append(f"--- {frame.url[:120]}\n{text[:2000]}")
    lines.append("--- console")
    lines.extend(CONSOLE.get(page, [])[-100:])
    return "\n".join(lines)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        for name in ("page", "webgpu_page"):
            page = getattr(item, "funcargs", {}).get(name)
            if page is not None and not page.is_closed():
                report.sections.append((f"{name}: what the browser shows", what_the_browser_shows(page)))
    return report


@pytest.fixture
def page(browser):
    yield from fresh_page(browser)


@pytest.fixture
def webgpu_page(webgpu_browser):
    yield from fresh_page(webgpu_browser)
