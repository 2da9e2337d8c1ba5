"""The swarm edge end to end on this machine, nothing mocked: Debian's nginx with the library's sticky
upstream and cookie maps (tests/swarm_edge_stack.py) in front of three real Streamlit processes standing in
for a service's tasks, and Debian's Chromium driven by Playwright.

What holds, and is asserted: one browser stays on one replica for its page, its websocket and 30 further
requests; the cookie is the edge's (Secure, HttpOnly, SameSite=Lax, 32 hex digits); other browsers spread
over the replicas; a re-render without one replica reloads nginx gracefully and the open websockets keep
working (old workers keep their connections); an unchanged task set does not reload.

What is not asserted, because it does not hold: plain `hash` is not consistent, so after a replica leaves,
*new* requests of other cookies may map to another replica; a session whose websocket stays open is not
affected, one that reconnects may be (docs/multi-host.md).

Needs: nginx, openssl, chromium (apt), the component's venv (Streamlit; make setup), playwright (pip).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from scripts import headless_chromium
from tests import swarm_edge_stack
from tests.swarm_edge_stack import COOKIE_NAME, Stack, swarm_edge

pytestmark = pytest.mark.skipif(
    not (swarm_edge_stack.available() and headless_chromium.available()),
    reason="needs nginx, openssl, chromium and the component's venv (make setup)",
)
PID = re.compile(r"replica pid (\d+) clicks (\d+)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with swarm_edge(tmp_path_factory.mktemp("swarm-edge"), replicas=3) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with headless_chromium.browser() as browser:
        yield browser


class Tab:
    """One browser context with the app open: its page, its websockets and what the page shows."""

    def __init__(self, browser, origin: str) -> None:
        self.context = browser.new_context(ignore_https_errors=True)
        self.page = self.context.new_page()
        self.page.set_default_timeout(300000)  # a saturated machine: generous, not a figure
        self.sockets: list = []
        self.closed: list[str] = []
        self.page.on("websocket", self._socket)
        response = self.page.goto(f"{origin}/")
        self.first_upstream = response.headers["x-test-upstream"]
        self.origin = origin

    def _socket(self, ws) -> None:
        self.sockets.append(ws)
        ws.on("close", lambda _ws: self.closed.append(ws.url))

    def shown(self, clicks: int) -> int:
        """The pid the app shows once it shows `clicks` clicks (rendered through the websocket)."""
        self.page.get_by_text(re.compile(rf"replica pid \d+ clicks {clicks}$")).wait_for()
        match = PID.search(self.page.get_by_text(PID).inner_text())
        assert match
        return int(match.group(1))

    def click(self) -> None:
        self.page.get_by_role("button", name="click").click()

    def upstream(self) -> str:
        return self.context.request.get(f"{self.origin}/").headers["x-test-upstream"]


def test_a_browser_stays_on_one_replica_for_its_page_websocket_and_30_requests(stack, browser) -> None:
    tab = Tab(browser, stack.origin)
    pid = tab.shown(0)
    assert pid == stack.pid_of(tab.first_upstream)  # the page's websocket reached the replica of its page
    cookie = {c["name"]: c for c in tab.context.cookies(stack.origin)}[COOKIE_NAME]
    assert (cookie["secure"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, True, "Lax", "/")
    assert re.fullmatch(r"[0-9a-f]{32}", cookie["value"])
    assert {tab.upstream() for _ in range(30)} == {tab.first_upstream}
    tab.click()
    tab.click()
    assert tab.shown(2) == pid  # session state kept: the same process served every rerun
    assert [ws.url for ws in tab.sockets if ws.url.endswith("/_stcore/stream")]
    assert tab.closed == []
    tab.context.close()


def test_a_valid_cookie_is_kept_and_a_forged_one_replaced(stack) -> None:
    s = stack.session()
    first = s.get(f"{stack.origin}/")
    value = s.cookies[COOKIE_NAME]
    again = s.get(f"{stack.origin}/")
    assert "set-cookie" not in again.headers  # a valid cookie is not set again
    assert again.headers["x-test-upstream"] == first.headers["x-test-upstream"]
    odd = stack.session().get(f"{stack.origin}/", cookies={COOKIE_NAME: "../../etc"})
    assert re.search(
        rf"{COOKIE_NAME}=[0-9a-f]{{32}}; Path=/; Secure; HttpOnly; SameSite=Lax", odd.headers["set-cookie"]
    )
    assert value != odd.cookies.get(COOKIE_NAME)


def test_other_browsers_spread_over_the_replicas_each_sticky(stack) -> None:
    seen = set()
    for _ in range(12):  # all 12 on one of 3 replicas by chance: 3 * 3**-12, about 6 in a million
        s = stack.session()
        upstreams = {s.get(f"{stack.origin}/").headers["x-test-upstream"] for _ in range(5)}
        assert len(upstreams) == 1
        seen |= upstreams
    assert len(seen) > 1
    assert seen <= {f"127.0.0.1:{port}" for port in stack.replicas}


def test_a_replica_leaving_keeps_the_other_sessions_websockets_and_unchanged_sets_do_not_reload(stack, browser) -> None:
    ports = sorted(stack.replicas)
    assert not stack.route(ports)  # the same set in the same bytes: nothing written, no reload
    tabs: list[Tab] = []
    for _ in range(12):  # until two replicas hold a session each
        tabs.append(Tab(browser, stack.origin))
        if len({t.first_upstream for t in tabs}) >= 2:
            break
    pids = [tab.shown(0) for tab in tabs]
    leaving = tabs[-1].first_upstream
    staying = [t for t in tabs if t.first_upstream != leaving]
    assert staying

    before = stack.reloads()
    old_workers = stack.workers()
    assert stack.route([p for p in ports if f"127.0.0.1:{p}" != leaving])
    assert stack.reloads() == before + 1
    stack.wait_reloaded(old_workers)
    assert f"server {leaving};" not in (stack.tmp / "conf/upstreams/demo.conf").read_text()

    # New connections never reach the replica that left, whatever their cookie. (A keep-alive connection
    # already open on an old worker is served by the old configuration until that worker closes it.)
    for tab in tabs:
        cookie = {c["name"]: c["value"] for c in tab.context.cookies(stack.origin)}[COOKIE_NAME]
        for _ in range(3):
            fresh = stack.session()
            answered = fresh.get(f"{stack.origin}/", cookies={COOKIE_NAME: cookie}).headers["x-test-upstream"]
            assert answered != leaving
    # The sessions on the other replicas: their websockets stay open and their state answers.
    for tab, pid in zip(tabs, pids, strict=True):
        if tab in staying:
            tab.click()
            assert tab.shown(1) == pid
            assert tab.closed == []
    assert not stack.route([p for p in ports if f"127.0.0.1:{p}" != leaving])
    assert stack.reloads() == before + 1
    for tab in tabs:
        tab.context.close()
