"""The TLS edge's headers in front of a real Streamlit 1.67 app with the secure component.

roles/tls's own templates (defaults and vars as the role has them) are rendered into a scratch
nginx that listens on 80, 443 and the sandbox port, in front of `streamlit run` of the example app,
with the component's files on the sandbox origin. Headless Chromium loads the app under the app
pages' Content-Security-Policy and COOP/COEP, the component runs its model on the sandbox origin,
and no page request leaves the edge. Needs root and free ports 80/443/9443 (scripts/test.sh runs
this suite in a network namespace of its own); the lab CA is made here and trusted by the browser
context only through ignore_https_errors (names are mapped to 127.0.0.1 by Chromium itself).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import streamlit_secure_context

from scripts import headless_chromium

from .conftest import EXAMPLES, free_port
from .test_e2e import COMPONENT_FRAME, SANDBOX_FRAME, pick, scores_line

REPO = Path(__file__).resolve().parents[2]
EDGE = "edge.local.test"
SANDBOX_PORT = 9443
APP = "demo"
ICONS = "icons"
FRONTEND = Path(streamlit_secure_context.__file__).parent / "frontend"


def _ports_free() -> bool:
    for port in (80, 443, SANDBOX_PORT):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nginx") is None or not _ports_free(),
    reason="needs root, Debian's nginx and free ports 80/443/9443 (scripts/test.sh component gives all three)",
)


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    assert result.returncode == 0, f"{args[0]}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


def _certificates(pki: Path) -> None:
    """A lab CA and a leaf for the edge's name, as the role's internal CA makes them."""
    tls = pki / "tls"
    tls.mkdir(parents=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca, ca_key, csr, ext = (str(pki / name) for name in ("ca.crt", "ca.key", "server.csr", "ext.cnf"))
    _run("openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=edge test CA")
    _run("openssl", "req", *ec, "-keyout", str(tls / "server.key"), "-out", csr, "-subj", f"/CN={EDGE}")
    (pki / "ext.cnf").write_text(f"subjectAltName=DNS:{EDGE}\n")
    _run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-days", "2", "-extfile", ext,
         "-out", str(tls / "server.crt"))  # fmt: skip


def _render(edge_dir: Path, apps: list[dict[str, str]]) -> None:
    extra = {
        "edge_dir": str(edge_dir),
        "inventory_hostname": EDGE,
        "tls_server_name": EDGE,
        "tls_pki_dir": str(edge_dir / "pki"),
        "tls_access_log": str(edge_dir / "access.json"),
        "tls_nginx_upstream_dir": str(edge_dir / "upstreams"),
        "tls_sandbox_root": str(FRONTEND),
        "tls_sandbox_source_dir": str(FRONTEND),
        "_tls_landing_root": str(edge_dir / "landing"),
        "apps": apps,
    }
    _run(
        str(REPO / ".venv/bin/ansible-playbook"),
        str(Path(__file__).parent / "edge/render.yml"),
        "-e",
        json.dumps(extra),
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO / "collections"), "ANSIBLE_NOCOLOR": "1"},
    )
    (edge_dir / "nginx.conf").write_text(
        f"""
# Workers as root: pytest's scratch directories are root-only (a host's nginx runs them as www-data).
user root;
pid {edge_dir}/nginx.pid;
error_log {edge_dir}/error.log;
events {{}}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    client_body_temp_path {edge_dir}/temp-client_body;
    proxy_temp_path {edge_dir}/temp-proxy;
    fastcgi_temp_path {edge_dir}/temp-fastcgi;
    uwsgi_temp_path {edge_dir}/temp-uwsgi;
    scgi_temp_path {edge_dir}/temp-scgi;
    include conf.d/*.conf;
    include sites-enabled/*.conf;
}}
"""
    )


def _streamlit(script: str, cwd: Path, path: str, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            script,
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.baseUrlPath",
            path,
        ],
        cwd=cwd,
        env={**os.environ, "SECURE_CONTEXT_SANDBOX_ORIGIN": f"https://{EDGE}:{SANDBOX_PORT}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def edge(tmp_path_factory) -> Iterator[str]:
    """The edge's origin; /demo/ is the component's example app, /icons/ a page with a Material favicon."""
    edge_dir = tmp_path_factory.mktemp("edge")
    edge_dir.chmod(0o755)
    ports = {APP: free_port(), ICONS: free_port()}
    apps = [
        _streamlit("app.py", EXAMPLES, APP, ports[APP]),
        # Streamlit's own config of the example app (no usage statistics sent out, headless).
        _streamlit(str(Path(__file__).parent / "edge/icons_app.py"), EXAMPLES, ICONS, ports[ICONS]),
    ]
    nginx = None
    try:
        _certificates(edge_dir / "pki")
        _render(edge_dir, [{"name": name, "upstream": f"127.0.0.1:{port}"} for name, port in ports.items()])
        conf = str(edge_dir / "nginx.conf")
        _run("nginx", "-t", "-q", "-p", str(edge_dir), "-c", conf)
        nginx = subprocess.Popen(["nginx", "-p", str(edge_dir), "-c", conf, "-g", "daemon off;"])
        for name, port in ports.items():
            for _ in range(300):
                try:
                    if requests.get(f"http://127.0.0.1:{port}/{name}/_stcore/health", timeout=1).ok:
                        break
                except requests.ConnectionError:
                    pass
                time.sleep(0.2)
        yield f"https://{EDGE}"
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=10)
        for app in apps:
            app.terminate()
            app.wait(timeout=10)


@pytest.fixture(scope="module")
def edge_browser(chromium):
    browser = headless_chromium.launch(chromium, f"--host-resolver-rules=MAP {EDGE} 127.0.0.1")
    yield browser
    browser.close()


def test_the_app_and_the_component_work_under_the_edge_csp_and_no_request_leaves_the_edge(edge, edge_browser, tmp_path):
    context = edge_browser.new_context(ignore_https_errors=True)
    requested: list[str] = []
    context.on("request", lambda r: requested.append(r.url))
    try:
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"page error: {e}"))
        response = page.goto(f"{edge}/{APP}/")
        assert response.status == 200
        assert "frame-src 'self' https://edge.local.test:9443;" in response.headers["content-security-policy"]
        page.get_by_text("Risk score, computed in your browser").wait_for(timeout=90_000)
        component = page.frame_locator(COMPONENT_FRAME).first
        try:
            component.locator("text=Model loaded in the sandbox").wait_for(timeout=90_000)
        except Exception:
            pytest.fail(
                "the model did not load; console:\n" + "\n".join(console) + "\nrequests:\n" + "\n".join(requested)
            )
        sandbox = component.frame_locator(SANDBOX_FRAME)
        pick(sandbox, tmp_path, "0.5,1.0,-0.3,2.0\n")
        assert page.locator("text=Scores:").inner_text(timeout=60_000) == scores_line()
        # Every frame on the way is cross-origin isolated, the inference frame on the sandbox origin.
        assert all(f.evaluate("self.crossOriginIsolated") for f in page.frames)
        assert any(f.url.startswith(f"https://{EDGE}:{SANDBOX_PORT}/") for f in page.frames)
        violations = [m for m in console if "Content Security Policy" in m or "Refused to" in m]
        assert violations == [], "\n".join(console)
        left = sorted(
            {u for u in requested if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).hostname != EDGE}
        )
        assert left == [], left
        assert {urlsplit(u).port for u in requested if urlsplit(u).hostname == EDGE} <= {None, SANDBOX_PORT}
        print(f"\n{len(requested)} requests, all to {EDGE} (443, {SANDBOX_PORT}) or data:/blob:")
    finally:
        context.close()


def test_the_landing_page_renders_under_the_same_policy(edge, edge_browser):
    context = edge_browser.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text))
        assert page.goto(f"https://{EDGE}/").status == 200
        assert page.locator("h1").inner_text() == EDGE
        assert APP not in page.content()
        assert ICONS not in page.content()
        assert console == []
    finally:
        context.close()


def test_streamlits_material_favicon_fetch_from_google_is_refused_and_the_page_still_renders(edge, edge_browser):
    context = edge_browser.new_context(ignore_https_errors=True)
    requested: list[str] = []
    # How each request ended: "finished", or Chromium's reason it failed ("csp" when the policy refused it).
    ended: dict[str, str] = {}
    context.on("request", lambda r: requested.append(r.url))
    context.on("requestfinished", lambda r: ended.setdefault(r.url, "finished"))
    context.on("requestfailed", lambda r: ended.setdefault(r.url, r.failure or "failed"))
    try:
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text))
        assert page.goto(f"{edge}/{ICONS}/").status == 200
        page.get_by_text("Material icons at the edge").wait_for(timeout=90_000)
        # Streamlit asked for the icon at Google's CDN; the policy kept the browser from fetching it.
        page.wait_for_function("document.querySelector('link[rel~=icon]')?.href.includes('fonts.gstatic.com')")
        page.wait_for_timeout(2000)
        off_edge = {u for u in requested if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).hostname != EDGE}
        # Chromium's favicon loader reports its attempt as a request, refused with "csp" before anything is
        # sent (a page's own blocked loads are not reported at all); wait, bounded, until each has ended.
        for _ in range(60):
            if off_edge <= ended.keys():
                break
            page.wait_for_timeout(500)
        outcomes = {u: ended.get(u, "never ended") for u in off_edge}
        assert all("gstatic" in u or "googleapis" in u for u in off_edge), outcomes
        assert all(outcome == "csp" for outcome in outcomes.values()), outcomes
        # Any violation reported is that refusal, nothing else.
        violations = [m for m in console if "Content Security Policy" in m or "Refused to" in m]
        assert all("fonts.gstatic.com" in m for m in violations), violations
    finally:
        context.close()
