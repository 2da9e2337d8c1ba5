"""Single sign-on at the edge, end to end on this machine, nothing mocked:

- a real OpenID provider (oidc-provider from npm, tests/sso_idp/idp.mjs: alice in "nurses", bob in
  "billing"), PKCE required;
- the relying-party service (roles/sso/files/streamlit_sso.py on Debian's python3-authlib, as on a host)
  on a unix socket;
- Debian's nginx with the tls role's own SSO snippet and app locations (rendered from its templates);
- an upstream that echoes the request headers it got (what an app sees in st.context.headers);
- Debian's Chromium, driven by Playwright.

Needs: nginx, chromium, python3-authlib (apt), node + `npm install` in tests/sso_idp, playwright (pip).
"""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator

import pytest
import requests
import yaml

from scripts import headless_chromium
from tests.sso_stack import IDP_DIR, REPO, free_port, sso_stack, wait_for, websocket_handshake

IDLE = 20  # seconds: short, so the test sees the automatic logoff

pytestmark = pytest.mark.skipif(
    not (
        shutil.which("nginx")
        and headless_chromium.available()
        and (IDP_DIR / "node_modules" / "oidc-provider").exists()
    ),
    reason="needs nginx, chromium and `npm install` in tests/sso_idp",
)


@pytest.fixture(scope="module")
def edge(tmp_path_factory) -> Iterator[dict]:
    with sso_stack(tmp_path_factory.mktemp("sso"), idle=IDLE) as stack:
        yield stack


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with headless_chromium.browser() as browser:
        yield browser


def sign_in(page, user: str) -> None:
    """oidc-provider's development login form (any password)."""
    page.wait_for_selector("input[name=login]", timeout=60000)
    page.fill("input[name=login]", user)
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")


def echoed(page) -> dict:
    return json.loads(page.locator("body").inner_text())


def access_log(edge: dict) -> list[dict]:
    return [json.loads(line) for line in (edge["tmp"] / "logs" / "access.json").read_text().splitlines()]


def test_sign_in_groups_identity_idle_logout(edge, browser) -> None:
    origin = edge["origin"]
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(60000)

    # Not signed in: the app sends the browser to the provider, and back to the page asked for.
    page.goto(f"{origin}/triage/page?x=1&y=2")
    assert page.url.startswith(edge["issuer"])
    sign_in(page, "alice")
    page.wait_for_url(f"{origin}/triage/page?x=1&y=2")
    seen = echoed(page)
    assert seen["x-auth-user"] == "alice@clinic.example"
    assert seen["x-auth-groups"] == "nurses"
    assert "authorization" not in seen

    # The session cookie: host-only, Secure, HttpOnly, SameSite=Lax.
    cookies = {c["name"]: c for c in context.cookies(origin)}
    session = cookies["__Host-streamlit-sso"]
    assert (session["secure"], session["httpOnly"], session["sameSite"]) == (True, True, "Lax")

    # A client's own identity headers never reach the app, signed in or not.
    forged = {"X-Auth-User": "mallory", "X-Auth-Groups": "nurses,billing", "X-Auth-Email": "m@evil.example"}
    response = context.request.get(f"{origin}/triage/", headers=forged)
    assert response.json()["x-auth-user"] == "alice@clinic.example"
    assert response.json()["x-auth-groups"] == "nurses"
    response = context.request.get(f"{origin}/public/", headers=forged)
    assert not {"x-auth-user", "x-auth-groups", "x-auth-email"} & set(response.json())

    # Another group's app: 403 with a page naming the user, and the denial in both logs.
    response = page.goto(f"{origin}/billing/")
    assert response.status == 403
    assert "alice@clinic.example may not open this app" in page.content()
    # ($uri is the 403 page's after error_page's internal redirect; the service's record names the app.)
    denied = [r for r in access_log(edge) if r["uri"] == "/_sso/forbidden" and r["status"] == 403]
    assert denied
    assert denied[-1]["user"] == "alice@clinic.example"
    allowed = [r for r in access_log(edge) if r["uri"] == "/triage/page" and r["status"] == 200]
    assert allowed
    assert allowed[-1]["user"] == "alice@clinic.example"
    records = [json.loads(line) for line in (edge["tmp"] / "sso.log").read_text().splitlines() if line.startswith("{")]
    assert {
        "event": "sso_denied",
        "app": "billing",
        "user": "alice@clinic.example",
        "groups": ["nurses"],
        "uri": "/billing/",
    } in records

    # Idle past the timeout: the next request signs in again (the provider still knows alice: no form).
    time.sleep(IDLE + 3)
    response = context.request.get(f"{origin}/triage/", max_redirects=0)
    assert response.status == 302
    assert response.headers["location"].startswith(f"{edge['issuer']}/")
    page.goto(f"{origin}/triage/")
    page.wait_for_url(f"{origin}/triage/")
    assert echoed(page)["x-auth-user"] == "alice@clinic.example"

    # Sign-out ends the edge's session and the provider's (RP-initiated logout, confirmed there).
    page.goto(f"{origin}/_sso/logout")
    assert page.url.startswith(f"{edge['issuer']}/session/end")
    page.click("button[autofocus], button[type=submit]")
    page.wait_for_url(f"{origin}/_sso/signed-out")
    assert "__Host-streamlit-sso" not in {c["name"] for c in context.cookies(origin) if c["value"]}
    page.goto(f"{origin}/triage/")
    page.wait_for_selector("input[name=login]")  # the provider asks again
    context.close()


def test_other_group_user_gets_only_their_app(edge, browser) -> None:
    origin = edge["origin"]
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(60000)
    page.goto(f"{origin}/billing/")
    sign_in(page, "bob")
    page.wait_for_url(f"{origin}/billing/")
    assert echoed(page)["x-auth-user"] == "bob@clinic.example"
    assert page.goto(f"{origin}/triage/").status == 403
    context.close()


def test_a_stolen_state_or_forged_cookie_gets_nothing(edge) -> None:
    origin = edge["origin"]
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would win over verify=False
    s.verify = False
    # A made-up session cookie is no session.
    r = s.get(f"{origin}/triage/", cookies={"__Host-streamlit-sso": "A" * 43}, allow_redirects=False)
    assert r.status_code == 302
    # A callback with a state this browser did not start is refused.
    r = s.get(f"{origin}/_sso/callback", params={"state": "x" * 43, "code": "y"}, allow_redirects=False)
    assert r.status_code == 400
    # The login redirect goes back to a path on the edge only, never to another site.
    r = s.get(f"{origin}/_sso/login", params={"rd": "//evil.example/"}, allow_redirects=False)
    assert r.status_code == 302
    state = re.search(r"state=([^&]+)", r.headers["location"])
    assert state
    assert "code_challenge_method=S256" in r.headers["location"]
    assert "nonce=" in r.headers["location"]


# -- Automatic logoff of open pages: the edge's activity script (nginx adds it to every app page) ------


def signed_in_app(edge, context, user: str = "alice"):
    """An app page (its own script opens the app's websocket, under a CSP like the edge's), signed in."""
    origin = edge["origin"]
    page = context.new_page()
    page.set_default_timeout(60000)
    sockets: list = []
    page.on("websocket", lambda ws: sockets.append(ws))
    page.goto(f"{origin}/triage/app")
    sign_in(page, user)
    page.wait_for_url(f"{origin}/triage/app")
    page.wait_for_selector("#state >> text=open")
    # The edge's script is in the page, from the edge (not the app), and runs under the app's CSP.
    assert page.locator('script[src="/_sso/activity.js"]').count() == 1
    assert sockets
    assert not sockets[-1].is_closed()
    return page, sockets


def wait_until(page, check, what: str, timeout: float = 90) -> None:
    """Polls with the page's own timer: Playwright's sync API takes in browser events only while it waits."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        page.wait_for_timeout(500)


def session_is_gone(edge, context) -> bool:
    response = context.request.get(f"{edge['origin']}/triage/", max_redirects=0)
    return response.status == 302 and response.headers["location"].startswith(f"{edge['issuer']}/")


def test_an_unattended_page_is_signed_out_and_its_websocket_closed(edge, browser) -> None:
    context = browser.new_context(ignore_https_errors=True)
    errors: list[str] = []
    page, _sockets = signed_in_app(edge, context)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    # No user activity: the upstream's frames keep the websocket busy and the page polls the app every
    # 2 s (each request checked by auth_request), but only the user counts.
    page.wait_for_url("**/_sso/signed-out?**", timeout=(IDLE + 90) * 1000)
    assert "Your session ended" in page.content()
    assert page.get_by_role("link", name="Sign in again").get_attribute("href") == "/_sso/login?rd=%2Ftriage%2Fapp"
    # (Playwright reports no close for a websocket its page navigated away from: ask the app's side.)
    wait_until(page, lambda: edge["upstream"].open_websockets == 0, "the app saw its websocket closed")
    assert session_is_gone(edge, context)
    # (The app's own polling may hit the CSP once the edge sends it to the provider; the script never.)
    assert not [e for e in errors if "Content Security Policy" in e and "_sso/activity" in e]
    context.close()


def test_a_page_in_use_stays_signed_in_past_the_idle_limit(edge, browser) -> None:
    context = browser.new_context(ignore_https_errors=True)
    page, sockets = signed_in_app(edge, context)
    # Typing, and nothing else: no page load, no request of the page's own, for twice the idle limit.
    end = time.monotonic() + 2 * IDLE + 5
    while time.monotonic() < end:
        page.keyboard.press("Shift")
        page.wait_for_timeout(1000)
    assert page.url == f"{edge['origin']}/triage/app"
    assert page.locator("#state").text_content() == "open"
    assert not sockets[-1].is_closed()
    assert not session_is_gone(edge, context)
    context.close()


def test_signing_out_in_one_tab_ends_the_other(edge, browser) -> None:
    origin = edge["origin"]
    context = browser.new_context(ignore_https_errors=True)
    page, _sockets = signed_in_app(edge, context)
    other = context.new_page()
    other.set_default_timeout(60000)
    other.goto(f"{origin}/_sso/logout")
    page.wait_for_url("**/_sso/signed-out?**", timeout=60000)
    # (Playwright reports no close for a websocket its page navigated away from: ask the app's side.)
    wait_until(page, lambda: edge["upstream"].open_websockets == 0, "the app saw its websocket closed")
    context.close()


def test_activity_reports_come_from_the_edge_s_script_only(edge) -> None:
    origin = edge["origin"]
    s = requests.Session()
    s.trust_env = False
    s.verify = False
    cookie = {"__Host-streamlit-sso": "A" * 43}
    # No session: 401 (the script leaves the page). Without the script's header, or from another site: 400.
    assert s.post(f"{origin}/_sso/activity", headers={"X-SSO-Activity": "active"}, cookies=cookie).status_code == 401
    assert s.post(f"{origin}/_sso/activity", cookies=cookie).status_code == 400
    cross = {"X-SSO-Activity": "active", "Sec-Fetch-Site": "cross-site"}
    assert s.post(f"{origin}/_sso/activity", headers=cross, cookies=cookie).status_code == 400
    assert s.get(f"{origin}/_sso/activity", headers={"X-SSO-Activity": "active"}).status_code == 403
    script = s.get(f"{origin}/_sso/activity.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")


def raw_websocket(origin: str, sid: str) -> tuple[ssl.SSLSocket, bytes]:
    """A websocket client that runs no script (what the activity script cannot reach)."""
    return websocket_handshake(origin, "/triage/_stcore/stream", sid)


def test_a_websocket_without_the_script_is_closed_when_the_session_ends(edge, browser) -> None:
    origin = edge["origin"]
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(60000)
    page.goto(f"{origin}/triage/")
    sign_in(page, "alice")
    page.wait_for_url(f"{origin}/triage/")
    sid = {c["name"]: c["value"] for c in context.cookies(origin)}["__Host-streamlit-sso"]
    sock, head = raw_websocket(origin, sid)
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.settimeout(30)
    assert b"ping" in sock.recv(4096)  # the app's frames come through

    # Signed out elsewhere: the edge ends this websocket too (the relay looks every 5 s; generous bound).
    page.goto(f"{origin}/_sso/logout")
    sock.settimeout(2)
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the edge kept the websocket open after sign-out"
        try:
            if not sock.recv(4096):
                break
        except TimeoutError:
            continue
        except (ssl.SSLError, ConnectionError):
            break
    sock.close()
    # And a new one with the same cookie does not open.
    sock, head = raw_websocket(origin, sid)
    assert not head.startswith(b"HTTP/1.1 101"), head
    sock.close()
    context.close()


# -- The activity script in Streamlit's own index.html, under the tls role's CSP ------------------------

STREAMLIT = REPO / ".cache" / "venv-component" / "bin" / "streamlit"
STREAMLIT_APP = 'import streamlit as st\n\nst.title("Triage board")\nst.button("Refresh")\n'


def role_csp() -> str:
    """The tls role's default app policy (its defaults' directives and script hashes)."""
    defaults = yaml.safe_load((REPO / "roles" / "tls" / "defaults" / "main.yml").read_text())
    hashes = " ".join(f"'{h}'" for h in defaults["tls_app_script_hashes"])
    policy = dict(defaults["tls_app_content_security_policy"])
    policy["script-src"] = f"{policy['script-src']} {hashes}"
    return "; ".join(f"{name} {value}" for name, value in policy.items())


@pytest.fixture(scope="module")
def streamlit_edge(tmp_path_factory) -> Iterator[dict]:
    if not STREAMLIT.exists():
        pytest.skip(f"needs Streamlit in {STREAMLIT.parent.parent} (make setup)")
    tmp = tmp_path_factory.mktemp("streamlit")
    (tmp / "app.py").write_text(STREAMLIT_APP)
    (tmp / "pages").mkdir()
    (tmp / "pages" / "second.py").write_text('import streamlit as st\n\nst.title("Second page")\n')
    port = free_port()
    app = subprocess.Popen(
        [
            str(STREAMLIT),
            "run",
            str(tmp / "app.py"),
            "--server.headless=true",
            "--server.address=127.0.0.1",
            f"--server.port={port}",
            "--server.baseUrlPath=triage",
            "--browser.gatherUsageStats=false",
        ],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "streamlit.log", "w"),  # noqa: SIM115
    )
    try:
        upstream = f"127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"http://{upstream}/triage/_stcore/health", timeout=5).ok, "Streamlit")
        headers = f'add_header Content-Security-Policy "{role_csp()}" always;\n'
        (tmp / "edge").mkdir()
        with sso_stack(tmp / "edge", idle=900, upstream=upstream, app_headers=headers) as stack:
            yield {**stack, "app": upstream}
    finally:
        app.terminate()
        app.wait(timeout=30)


def test_streamlit_s_own_pages_get_the_script_once_and_still_render(streamlit_edge, browser) -> None:
    origin, app = streamlit_edge["origin"], streamlit_edge["app"]
    # Streamlit sends its index.html gzipped to a client that accepts it, at every page's path but the
    # root: there the edge must ask for it plain, or sub_filter finds no </head> to add the script to.
    direct = requests.get(f"http://{app}/triage/second", headers={"Accept-Encoding": "gzip"}, timeout=30)
    assert direct.headers.get("Content-Encoding") == "gzip"
    assert "</head>" in direct.text
    assert "/_sso/activity.js" not in direct.text

    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(60000)
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    page.goto(f"{origin}/triage/second")
    sign_in(page, "alice")
    page.wait_for_url(f"{origin}/triage/second")
    for path, heading in (("second", "Second page"), ("", "Triage board")):
        if path != "second":
            page.goto(f"{origin}/triage/{path}")
        # Rendered: Streamlit's scripts ran and its websocket (through the SSO relay) brought the page.
        page.get_by_role("heading", name=heading).wait_for()
        assert page.locator("head > script[src='/_sso/activity.js']").count() == 1
        assert page.locator("script[src='/_sso/activity.js']").count() == 1
        # As the browser got it (it asks for gzip): the tag once, under the tls role's policy.
        response = context.request.get(f"{origin}/triage/{path}", headers={"Accept-Encoding": "gzip, br"})
        assert response.text().count('<script src="/_sso/activity.js" defer></script>') == 1
        assert response.headers["content-security-policy"] == role_csp()
    assert not [m for m in console if "Content Security Policy" in m], console
    context.close()
