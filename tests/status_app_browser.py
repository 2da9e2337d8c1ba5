"""Opens the status app's pages in real Chromium (Debian's, driven by Playwright) and reports what it shows.

Run by tests/integration/test_status_app.py with the component's venv (it has Playwright and Streamlit;
the controller's venv has neither):

    python tests/status_app_browser.py BASE_URL SCREENSHOT_DIR deployed|failed|missing|lab|lab-timeline

Through an edge (tests/integration/test_lab.py, stage `lab`: the apps page only; `lab-timeline`: the deploy
timeline filtered to the example app `hello`, with its table's rows): STATUS_BROWSER_CA names the
CA the edge's certificate must chain to (checked here before the browser, which is then told to accept it),
STATUS_BROWSER_USER and STATUS_BROWSER_PASSWORD_FILE the htpasswd login (the password stays out of argv).

Prints one JSON object: each page's visible text, the charts drawn, the history's links and the
screenshots' paths. The test asserts on it; a page that never renders fails with what the browser showed.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Page

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts import headless_chromium

# A loaded 2-core machine needed 15-45 s for Streamlit's first page: wait on what is shown, generously.
TIMEOUT_MS = 240_000
MAIN = "[data-testid='stMain']"
CHARTS = ".vega-embed canvas, .vega-embed svg.marks"
# The table's rows as text: st.dataframe draws on a canvas, and keeps an accessible table of the rows shown.
GRID_ROWS = """() => Array.from(
    document.querySelectorAll("[data-testid='stDataFrame'] table[role='grid'] tbody tr"),
    (tr) => Array.from(tr.querySelectorAll("td"), (td) => td.textContent.trim()),
)"""


def open_page(page: Page, url: str, expect: str, *, complete: bool = True) -> str:
    """The page's main text once `expect` shows and (`complete`) Streamlit's script has finished."""
    page.goto(url, wait_until="domcontentloaded", timeout=TIMEOUT_MS)
    page.get_by_text(expect, exact=False).first.wait_for(timeout=TIMEOUT_MS)
    if complete:
        # The footer is the script's last output: every element above it is drawn.
        page.get_by_text("Rendered ", exact=False).first.wait_for(timeout=TIMEOUT_MS)
    return page.inner_text(MAIN)


def check_certificate(base: str, ca: str) -> None:
    """The edge's certificate chains to `ca` and names the host: what a browser trusting that CA checks."""
    url = urlsplit(base)
    context = ssl.create_default_context(cafile=ca)
    with (
        socket.create_connection((url.hostname, url.port or 443), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname=url.hostname),
    ):
        pass


def context_options(base: str) -> dict:
    """The browser context's options: the edge's login and its lab CA when the environment names them."""
    options: dict = {"viewport": {"width": 1400, "height": 1000}}
    ca = os.environ.get("STATUS_BROWSER_CA")
    if ca:
        check_certificate(base, ca)
        options["ignore_https_errors"] = True
    user = os.environ.get("STATUS_BROWSER_USER")
    if user:
        password = Path(os.environ["STATUS_BROWSER_PASSWORD_FILE"]).read_text().strip()
        options["http_credentials"] = {"username": user, "password": password}
    return options


def run(page: Page, base: str, stage: str, seen: dict, shot) -> None:
    if stage == "lab":
        seen["apps"] = open_page(page, f"{base}/", "attention")
        shot("status-apps")
        return
    if stage == "lab-timeline":
        lab_timeline(page, base, seen, shot)
        return
    if stage == "missing":
        seen["apps"] = open_page(page, f"{base}/", "No status snapshot", complete=False)
        shot("apps-missing")
        return
    seen["apps"] = open_page(page, f"{base}/", "attention")
    shot("1-apps")
    seen["timeline"] = open_page(page, f"{base}/timeline", "deploys (the last")
    page.wait_for_function(f"() => document.querySelectorAll({CHARTS!r}).length >= 2", timeout=TIMEOUT_MS)
    seen["timeline_charts"] = page.locator(CHARTS).count()
    shot("2-timeline")
    if stage == "deployed":
        return
    # The outcome filter: only the failed deploys remain.
    page.locator("[data-testid='stMultiSelect']").nth(1).click()
    page.keyboard.type("failed")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    page.get_by_text("1 of ", exact=False).first.wait_for(timeout=TIMEOUT_MS)
    # The caption is drawn first: the charts and the table below it are redrawn until the rerun ends.
    page.locator("[data-testid='stStatusWidget']").wait_for(state="detached", timeout=TIMEOUT_MS)
    seen["timeline_failed"] = page.inner_text(MAIN)
    shot("3-timeline-failed")
    seen["history"] = open_page(page, f"{base}/history?app=hello", "App hello")
    links = page.locator(f"{MAIN} a[href*='sha=']")
    seen["history_links"] = [links.nth(i).get_attribute("href") for i in range(links.count())]
    shot("4-history-hello")
    for name, expect in (("audit", "Audit chains"), ("certificates", "edge.lab.test"), ("disk", "Free space")):
        seen[name] = open_page(page, f"{base}/{name}", expect)
        shot(f"5-{name}")


def lab_timeline(page: Page, base: str, seen: dict, shot) -> None:
    """The timeline with the apps filter set to `hello`: its caption, its charts and its table's rows."""
    open_page(page, f"{base}/timeline", "deploys (the last")
    page.wait_for_function(f"() => document.querySelectorAll({CHARTS!r}).length >= 2", timeout=TIMEOUT_MS)
    page.locator("[data-testid='stMultiSelect']").nth(0).click()
    page.keyboard.type("hello")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    # Filtered: the status app's own deploys are gone, every row left is hello's.
    page.wait_for_function(
        f"""() => {{
            const rows = ({GRID_ROWS})();
            return rows.length > 0 && rows.every((row) => row[0] === "hello");
        }}""",
        timeout=TIMEOUT_MS,
    )
    page.locator("[data-testid='stStatusWidget']").wait_for(state="detached", timeout=TIMEOUT_MS)
    seen["timeline"] = page.inner_text(MAIN)
    seen["timeline_charts"] = page.locator(CHARTS).count()
    seen["timeline_rows"] = page.evaluate(GRID_ROWS)
    shot("status-timeline-hello")


def main(base: str, out: Path, stage: str) -> int:
    out.mkdir(parents=True, exist_ok=True)
    seen: dict[str, object] = {"screenshots": []}
    with headless_chromium.browser() as browser:
        page = browser.new_context(**context_options(base)).new_page()
        # Every answer of 400 or above, and every request that failed: what a page left without its
        # scripts has to say (a 429 from the edge's rate limit once left the timeline without a table).
        refused: list[str] = []
        page.on("response", lambda r: r.status >= 400 and refused.append(f"{r.status} {r.url}"))
        page.on("requestfailed", lambda r: refused.append(f"{r.failure} {r.url}"))

        def shot(name: str) -> None:
            path = out / f"{name}.png"
            page.screenshot(path=str(path), full_page=True)
            seen["screenshots"].append(str(path))  # type: ignore[union-attr]

        try:
            run(page, base, stage, seen, shot)
        except Exception as exc:
            shot("failed")
            seen.update(error=str(exc), failed_at=page.url, shown=page.inner_text("body"), refused=refused[-40:])
            print(json.dumps(seen))
            return 1
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1].rstrip("/"), Path(sys.argv[2]), sys.argv[3]))
