"""A single sign-on edge on this machine, for tests and benchmarks: a real OpenID provider
(oidc-provider, tests/sso_idp/idp.mjs: alice in "nurses", bob in "billing"; PKCE required), the
relying-party service (roles/sso/files/streamlit_sso.py on Debian's python3-authlib, as on a host) on a
unix socket, Debian's nginx with the tls role's own SSO snippet and app locations (rendered from its
templates), and an upstream that echoes the request headers it got (what an app sees in
st.context.headers). Apps: triage (group nurses), billing (group billing), public (no sign-in).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jinja2
import requests

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._oidc_config import (
    parse_provider,
    service_config,
)

REPO = Path(__file__).resolve().parents[1]
IDP_DIR = REPO / "tests" / "sso_idp"
TLS_TEMPLATES = REPO / "roles" / "tls" / "templates"
CLIENT_ID = "streamlit-edge"
CLIENT_SECRET = "test-only-client-secret-7f3a9c"


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


# An app page like Streamlit's: a <head> for the edge's script, its own same-origin script that opens
# the app's websocket, and a CSP as strict as the edge's (no inline script).
APP_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>app</title><script src="app.js"></script></head>
<body><p id="state">loading</p></body></html>
"""
APP_JS = b"""const ws = new WebSocket(location.href.replace(/^http/, "ws").replace(/app([?#].*)?$/, "_stcore/stream"));
ws.onopen = () => { document.getElementById("state").textContent = "open"; };
ws.onclose = () => { document.getElementById("state").textContent = "closed"; };
// Like a fragment that refreshes itself: requests the page makes with nobody at the keyboard.
setInterval(() => fetch("poll", { cache: "no-store" }), 2000);
"""
APP_CSP = "default-src 'self'; script-src 'self'; connect-src 'self'; style-src 'self'"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Websockets the upstream holds open right now (an app's view: did the edge close them?).
    open_websockets = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        if self.path.endswith("/_stcore/stream") and self.headers.get("Upgrade", "").lower() == "websocket":
            self._websocket()
            return
        if self.path.split("?")[0].endswith("/app"):
            body, kind = APP_PAGE, "text/html; charset=utf-8"
        elif self.path.endswith("/app.js"):
            body, kind = APP_JS, "text/javascript"
        else:
            body, kind = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode(), "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Security-Policy", APP_CSP)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _websocket(self) -> None:
        """RFC 6455's handshake, then a text frame every second (as Streamlit's pings and updates keep
        its websocket busy) until the other side closes."""
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()  # noqa: S324
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        with Echo.lock:
            Echo.open_websockets += 1
        conn = self.connection
        conn.settimeout(1.0)
        try:
            while True:
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    conn.sendall(b"\x81\x04ping")
                    continue
                if not data or data[0] & 0x0F == 0x8:  # closed, or a close frame
                    break
                if data[0] & 0x0F == 0x1 and len(data) >= 6 and (data[1] & 0x7F) < 126:
                    # A short text frame from the client (masked): sent back, for round-trip timing.
                    mask, payload = data[2:6], data[6 : 6 + (data[1] & 0x7F)]
                    echoed = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                    conn.sendall(bytes([0x81, len(echoed)]) + echoed)
        except OSError:
            pass
        finally:
            with Echo.lock:
                Echo.open_websockets -= 1

    def log_message(self, *args: object) -> None:
        return


def localhost_certificate(conf: Path) -> None:
    """A self-signed P-256 certificate for localhost: conf/cert.pem and conf/key.pem."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(conf / "key.pem"),
            "-out",
            str(conf / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )


def websocket_handshake(origin: str, path: str, sid: str) -> tuple[ssl.SSLSocket, bytes]:
    """A websocket client that runs no script: the handshake by hand over TLS, with the browser's session
    cookie. Returns the socket and the answer's head (up to the blank line, or what came before EOF)."""
    port = int(origin.rsplit(":", 1)[1])
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sock = context.wrap_socket(socket.create_connection(("localhost", port), timeout=30), server_hostname="localhost")
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n"
            f"Cookie: __Host-streamlit-sso={sid}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)
        if not byte:
            break
        head += byte
    return sock, head


def render_edge(tmp: Path, port: int, upstream: str, sock: Path, app_headers: str = "") -> Path:
    """nginx's configuration: the role's SSO snippet, proxy snippet, identity map and log format, and
    its app locations (the site template's macros), around a minimal server on `port`; `app_headers`
    is the app-headers snippet (none unless given)."""
    env = jinja2.Environment(  # noqa: S701 - nginx configuration, not HTML
        loader=jinja2.FileSystemLoader(TLS_TEMPLATES), keep_trailing_newline=True
    )
    env.tests["secure_streamlit.hosting.app_name"] = lambda name: True
    relay_dir = tmp / "relay"
    relay_dir.mkdir()
    common = {
        "ansible_managed": "test",
        "tls_sso_socket": str(sock),
        "tls_sso_relay_dir": str(relay_dir),
        "_tls_sso_used": True,
    }
    conf = tmp / "conf"
    (conf / "snippets").mkdir(parents=True)
    for name in ("streamlit-edge-sso.conf", "streamlit-edge-proxy.conf"):
        (conf / "snippets" / name).write_text(env.get_template(f"snippets/{name}.j2").render(common))
    (conf / "snippets" / "streamlit-edge-app-headers.conf").write_text(app_headers)
    http = env.get_template("streamlit-edge-http.conf.j2").render(
        common,
        _tls_profiles={"intermediate": {"protocols": "TLSv1.2 TLSv1.3"}},
        tls_profile="intermediate",
        _tls_routes=[],
        _tls_redirect_names=[],
        tls_server_name="localhost",
    )
    identity = re.search(r"# JSON lines.*?\"request_id\":\"\$request_id\"\}';\n", http, re.S)
    assert identity, "the http template's identity maps and log format"
    upgrade = re.search(r"map \$http_upgrade.*?\n}\n", http, re.S)
    site = env.get_template("streamlit-edge-site.conf.j2").make_module(
        {**common, "tls_rate_limit_burst": 100, "tls_rate_limit_static_burst": 400, "tls_websocket_timeout": "3600s"}
    )
    apps = [
        {
            "name": "triage",
            "path": "/triage/",
            "oidc": True,
            "htpasswd_users": [],
            "client_cert_cns": [],
            "upload_max_mb": 1,
        },
        {
            "name": "billing",
            "path": "/billing/",
            "oidc": True,
            "htpasswd_users": [],
            "client_cert_cns": [],
            "upload_max_mb": 1,
        },
        {
            "name": "public",
            "path": "/public/",
            "oidc": False,
            "htpasswd_users": [],
            "client_cert_cns": [],
            "upload_max_mb": 1,
        },
    ]
    zones = "".join(
        f"limit_req_zone $binary_remote_addr zone=streamlit_app_{a['name']}:1m rate=100r/s;\n"
        f"limit_req_zone $binary_remote_addr zone=streamlit_static_{a['name']}:1m rate=100r/s;\n"
        f"upstream streamlit_app_{a['name']} {{ server {upstream}; }}\n"
        for a in apps
    )
    locations = "".join(site.app_locations(a) for a in apps)
    relays = "".join(site.sso_relay_server(a) for a in apps if a["oidc"])
    localhost_certificate(conf)
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
    {upgrade.group(0) if upgrade else ""}
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
{relays}
}}
""")
    return conf / "nginx.conf"


@contextlib.contextmanager
def sso_stack(tmp: Path, idle: int = 900, upstream: str | None = None, app_headers: str = "") -> Iterator[dict]:
    """The running stack: {origin, tmp, issuer}; everything stops on exit. `upstream` (host:port)
    replaces the echoing upstream for every app (a real Streamlit, say)."""
    edge_port, idp_port = free_port(), free_port()
    origin = f"https://localhost:{edge_port}"
    processes: list[subprocess.Popen] = []
    echo = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    try:
        idp = subprocess.Popen(
            ["node", "idp.mjs", str(idp_port), CLIENT_ID, CLIENT_SECRET, origin],
            cwd=IDP_DIR,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "idp.log", "w"),  # noqa: SIM115
        )
        processes.append(idp)
        issuer = f"http://127.0.0.1:{idp_port}"
        wait_for(lambda: requests.get(f"{issuer}/.well-known/openid-configuration", timeout=5).ok, "the IdP")

        # The service as the role installs it (roles/sso/tasks/install.yml): the program and its
        # libraries side by side.
        program = tmp / "program"
        program.mkdir()
        shutil.copy(REPO / "roles" / "sso" / "files" / "streamlit_sso.py", program)
        for library in ("_oidc_rp.py", "_oidc_config.py", "_settings_file.py"):
            shutil.copy(REPO / "plugins" / "module_utils" / library, program)
        provider = parse_provider(
            {
                "issuer": issuer,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "scopes": ["openid", "email", "groups"],
            },
            lab=True,
        )
        specs = [
            {"name": "triage", "access": {"oidc": {"groups": ["nurses"], "users": []}}},
            {"name": "billing", "access": {"oidc": {"groups": ["billing"], "users": []}}},
        ]
        config = service_config(provider, specs, {"localhost": origin}, lab=True)
        config["idle_timeout"] = idle  # may be below the role's minimum: a test need not wait 60 s
        (tmp / "config.json").write_text(json.dumps(config))
        (tmp / "config.json").chmod(0o600)  # the service refuses a settings file others could write
        secret = tmp / "client-secret"
        secret.write_text(CLIENT_SECRET)
        secret.chmod(0o600)
        sock = tmp / "sso.sock"
        rp = subprocess.Popen(
            [
                "/usr/bin/python3",
                str(program / "streamlit_sso.py"),
                "--config",
                str(tmp / "config.json"),
                "--secret",
                str(secret),
                "--socket",
                str(sock),
                "--relay-dir",
                str(tmp / "relay"),
            ],
            stderr=open(tmp / "sso.log", "w"),  # noqa: SIM115
        )
        processes.append(rp)
        wait_for(lambda: (rp.poll() is None and sock.is_socket()) or rp.poll() is not None, "the SSO service")
        assert rp.poll() is None, (tmp / "sso.log").read_text()

        nginx_conf = render_edge(tmp, edge_port, upstream or f"127.0.0.1:{echo.server_address[1]}", sock, app_headers)
        check = subprocess.run(["nginx", "-t", "-p", str(tmp), "-c", str(nginx_conf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        nginx = subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(nginx_conf)])
        processes.append(nginx)
        # Any answer: nginx is up (a given upstream need not serve /public/).
        wait_for(lambda: requests.get(f"{origin}/public/", verify=False, timeout=5).status_code > 0, "nginx")  # noqa: S501
        yield {"origin": origin, "tmp": tmp, "issuer": issuer, "upstream": Echo}
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=20)
        echo.shutdown()
