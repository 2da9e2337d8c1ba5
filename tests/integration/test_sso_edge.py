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
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jinja2
import pytest
import requests

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._oidc_config import (
    parse_provider,
    service_config,
)

REPO = Path(__file__).resolve().parents[2]
IDP_DIR = REPO / "tests" / "sso_idp"
TLS_TEMPLATES = REPO / "roles" / "tls" / "templates"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CLIENT_ID = "streamlit-edge"
CLIENT_SECRET = "test-only-client-secret-7f3a9c"  # noqa: S105
IDLE = 20  # seconds: short, so the test sees the automatic logoff

pytestmark = pytest.mark.skipif(
    not (shutil.which("nginx") and Path(CHROMIUM).exists() and (IDP_DIR / "node_modules" / "oidc-provider").exists()),
    reason="needs nginx, chromium and `npm install` in tests/sso_idp",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, requests.RequestException):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout} s")


class Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


def render_edge(tmp: Path, port: int, upstream: str, sock: Path) -> Path:
    """nginx's configuration: the role's SSO snippet, proxy snippet, identity map and log format, and
    its app locations (the site template's macros), around a minimal server on `port`."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TLS_TEMPLATES), keep_trailing_newline=True)
    env.tests["secure_streamlit.hosting.app_name"] = lambda name: True
    common = {"ansible_managed": "test", "tls_sso_socket": str(sock), "_tls_sso_used": True}
    conf = tmp / "conf"
    (conf / "snippets").mkdir(parents=True)
    for name in ("streamlit-edge-sso.conf", "streamlit-edge-proxy.conf"):
        (conf / "snippets" / name).write_text(env.get_template(f"snippets/{name}.j2").render(common))
    (conf / "snippets" / "streamlit-edge-app-headers.conf").write_text("")
    http = env.get_template("streamlit-edge-http.conf.j2").render(
        common, _tls_profiles={"intermediate": {"protocols": "TLSv1.2 TLSv1.3"}}, tls_profile="intermediate",
        _tls_routes=[], _tls_redirect_names=[], tls_server_name="localhost",
    )
    identity = re.search(r"# JSON lines.*?\"request_id\":\"\$request_id\"\}';\n", http, re.S)
    assert identity, "the http template's identity maps and log format"
    upgrade = re.search(r"map \$http_upgrade.*?\n}\n", http, re.S)
    site = env.get_template("streamlit-edge-site.conf.j2").make_module(
        {**common, "tls_rate_limit_burst": 100, "tls_websocket_timeout": "3600s"}
    )
    apps = [
        {"name": "triage", "path": "/triage/", "oidc": True, "htpasswd_users": [], "client_cert_cns": [],
         "upload_max_mb": 1},
        {"name": "billing", "path": "/billing/", "oidc": True, "htpasswd_users": [], "client_cert_cns": [],
         "upload_max_mb": 1},
        {"name": "public", "path": "/public/", "oidc": False, "htpasswd_users": [], "client_cert_cns": [],
         "upload_max_mb": 1},
    ]
    zones = "".join(
        f"limit_req_zone $binary_remote_addr zone=streamlit_app_{a['name']}:1m rate=100r/s;\n"
        f"upstream streamlit_app_{a['name']} {{ server {upstream}; }}\n"
        for a in apps
    )
    locations = "".join(site.app_locations(a) for a in apps)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(conf / "key.pem"), "-out", str(conf / "cert.pem")],
        check=True, capture_output=True,
    )
    (tmp / "logs").mkdir()
    (conf / "nginx.conf").write_text(f"""
# Workers as root here: pytest's directories are root-only (on a host the socket's group is nginx's).
user root root;
pid {tmp}/nginx.pid;
error_log {tmp}/logs/error.log warn;
daemon off;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
    uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    {identity.group(0)}
    {upgrade.group(0) if upgrade else ''}
    {zones}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {conf}/cert.pem;
        ssl_certificate_key {conf}/key.pem;
        access_log {tmp}/logs/access.json streamlit_edge_json;
        include snippets/streamlit-edge-sso.conf;
{locations}
    }}
}}
""")
    return conf / "nginx.conf"


@pytest.fixture(scope="module")
def edge(tmp_path_factory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("sso")
    edge_port, idp_port = free_port(), free_port()
    origin = f"https://localhost:{edge_port}"
    processes: list[subprocess.Popen] = []
    echo = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    try:
        idp = subprocess.Popen(
            ["node", "idp.mjs", str(idp_port), CLIENT_ID, CLIENT_SECRET, origin],
            cwd=IDP_DIR, stdout=subprocess.DEVNULL, stderr=open(tmp / "idp.log", "w"),  # noqa: SIM115
        )
        processes.append(idp)
        issuer = f"http://127.0.0.1:{idp_port}"
        wait_for(lambda: requests.get(f"{issuer}/.well-known/openid-configuration", timeout=5).ok, "the IdP")

        # The service as the role installs it: the program and _oidc_rp.py side by side.
        program = tmp / "program"
        program.mkdir()
        shutil.copy(REPO / "roles" / "sso" / "files" / "streamlit_sso.py", program)
        shutil.copy(REPO / "plugins" / "module_utils" / "_oidc_rp.py", program)
        provider = parse_provider(
            {"issuer": issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
             "scopes": ["openid", "email", "groups"]},
            lab=True,
        )
        specs = [
            {"name": "triage", "access": {"oidc": {"groups": ["nurses"], "users": []}}},
            {"name": "billing", "access": {"oidc": {"groups": ["billing"], "users": []}}},
        ]
        config = service_config(provider, specs, {"localhost": origin}, lab=True)
        config["idle_timeout"] = IDLE  # below the role's minimum, so the test need not wait 60 s
        (tmp / "config.json").write_text(json.dumps(config))
        secret = tmp / "client-secret"
        secret.write_text(CLIENT_SECRET)
        secret.chmod(0o600)
        sock = tmp / "sso.sock"
        rp = subprocess.Popen(
            ["/usr/bin/python3", str(program / "streamlit_sso.py"), "--config", str(tmp / "config.json"),
             "--secret", str(secret), "--socket", str(sock)],
            stderr=open(tmp / "sso.log", "w"),  # noqa: SIM115
        )
        processes.append(rp)
        wait_for(lambda: rp.poll() is None and sock.is_socket() or rp.poll() is not None, "the SSO service")
        assert rp.poll() is None, (tmp / "sso.log").read_text()

        nginx_conf = render_edge(tmp, edge_port, f"127.0.0.1:{echo.server_address[1]}", sock)
        check = subprocess.run(["nginx", "-t", "-p", str(tmp), "-c", str(nginx_conf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        nginx = subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(nginx_conf)])
        processes.append(nginx)
        wait_for(lambda: requests.get(f"{origin}/public/", verify=False, timeout=5).ok, "nginx")  # noqa: S501
        yield {"origin": origin, "tmp": tmp, "issuer": issuer}
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=20)
        echo.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


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
    assert denied and denied[-1]["user"] == "alice@clinic.example"
    allowed = [r for r in access_log(edge) if r["uri"] == "/triage/page" and r["status"] == 200]
    assert allowed and allowed[-1]["user"] == "alice@clinic.example"
    records = [json.loads(line) for line in (edge["tmp"] / "sso.log").read_text().splitlines() if line.startswith("{")]
    assert {"event": "sso_denied", "app": "billing", "user": "alice@clinic.example", "groups": ["nurses"],
            "uri": "/billing/"} in records

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
    assert state and "code_challenge_method=S256" in r.headers["location"]
    assert "nonce=" in r.headers["location"]


os.environ.setdefault("PYTHONWARNINGS", "ignore:Unverified HTTPS request")
