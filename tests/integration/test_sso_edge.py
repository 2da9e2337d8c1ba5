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
import time
from collections.abc import Iterator

import pytest
import requests

from scripts import headless_chromium
from tests.sso_stack import IDP_DIR, sso_stack

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
