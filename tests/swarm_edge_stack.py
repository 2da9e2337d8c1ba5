"""Debian's nginx as the swarm edge in front of N real Streamlit processes on loopback, for
tests/integration/test_swarm_edge.py and benchmarks/swarm_edge_bench.py.

The replicas stand in for a service's tasks (the swarm itself is molecule/swarm's): each is the same small
app that shows its process id and a click counter kept in its session state. The upstream is rendered and
switched by the real library (`_swarm_edge.render_upstream` through `_nginx_upstream.Edge.install`: nginx -t,
then a graceful reload), with the library's cookie maps and the tls role's proxy snippet. nginx runs under
its own prefix through a small wrapper that also records every reload, so a test can count them. Each
response carries the upstream's address (a test-only header) so a test sees which replica answered.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import requests

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._nginx_upstream import Edge
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_edge import (
    COOKIE as COOKIE_NAME,
)
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_edge import (
    Endpoint,
    http_conf,
    location_conf,
    render_upstream,
)
from tests.sso_stack import free_port, localhost_certificate, wait_for

REPO = Path(__file__).resolve().parent.parent
WAIT = 300  # seconds for a whole wait: Streamlit's first start on a loaded machine
COMPONENT_PYTHON = REPO / ".cache/venv-component/bin/python"
APP = "demo"
__all__ = ["APP", "COOKIE_NAME", "Stack", "available", "swarm_edge"]
APP_SOURCE = """\
import os

import streamlit as st

if "clicks" not in st.session_state:
    st.session_state.clicks = 0
if st.button("click"):
    st.session_state.clicks += 1
st.write(f"replica pid {os.getpid()} clicks {st.session_state.clicks}")
"""


def available() -> bool:
    return bool(shutil.which("nginx") and shutil.which("openssl") and COMPONENT_PYTHON.exists())


@dataclass
class Stack:
    tmp: Path
    origin: str
    edge: Edge
    replicas: dict[int, subprocess.Popen] = field(default_factory=dict)  # port -> process

    def pid_of(self, upstream: str) -> int:
        return self.replicas[int(upstream.rsplit(":", 1)[1])].pid

    def route(self, ports: list[int]) -> bool:
        """Point the app at these replicas by the library's checked switch; whether nginx reloaded."""
        return self.edge.install(APP, render_upstream(APP, [Endpoint("127.0.0.1", port) for port in ports]))

    def reloads(self) -> int:
        log = self.tmp / "reloads.log"
        return len(log.read_text().splitlines()) if log.exists() else 0

    def workers(self) -> set[int]:
        """The nginx workers that accept new connections (the library's own reading of /proc)."""
        return self.edge.accepting_workers()

    def wait_reloaded(self, workers_before: set[int]) -> None:
        """`nginx -s reload` only signals the master: wait (bounded) until no worker of the old
        configuration still accepts (an old worker closes its listening sockets when told to shut down)."""

        def only_new() -> bool:
            now = self.workers()
            return bool(now) and not now & workers_before

        wait_for(only_new, "nginx's workers of the new configuration", WAIT)

    def session(self) -> requests.Session:
        """A new client: its own connections (so the current nginx workers), no cookie yet."""
        s = requests.Session()
        s.trust_env = False  # REQUESTS_CA_BUNDLE would win over verify=False
        s.verify = False
        return s


def start_replica(tmp: Path, port: int) -> subprocess.Popen:
    home = tmp / f"home-{port}"
    (home / ".streamlit").mkdir(parents=True)
    (home / ".streamlit" / "config.toml").write_text("[browser]\ngatherUsageStats = false\n")
    flags = [
        f"--server.port={port}",
        "--server.address=127.0.0.1",
        "--server.headless=true",
        "--server.fileWatcherType=none",
        "--global.developmentMode=false",
    ]
    return subprocess.Popen(
        [str(COMPONENT_PYTHON), "-m", "streamlit", "run", str(tmp / "app.py"), *flags],
        cwd=tmp,
        env={**os.environ, "HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def write_nginx(tmp: Path, port: int) -> Path:
    conf = tmp / "conf"
    (conf / "snippets").mkdir(parents=True)
    (conf / "upstreams").mkdir()
    (tmp / "logs").mkdir()
    env = jinja2.Environment(  # noqa: S701 - nginx configuration, not HTML
        loader=jinja2.FileSystemLoader(REPO / "roles/tls/templates"), keep_trailing_newline=True
    )
    common = {"ansible_managed": "test"}
    (conf / "snippets" / "streamlit-edge-proxy.conf").write_text(
        env.get_template("snippets/streamlit-edge-proxy.conf.j2").render(common)
    )
    # The role's header snippet is replaced by a test-only header naming the replica that answered.
    (conf / "snippets" / "streamlit-edge-app-headers.conf").write_text(
        "add_header X-Test-Upstream $upstream_addr always;\n"
    )
    (conf / "streamlit-swarm-edge.conf").write_text(http_conf())
    (conf / "snippets" / "streamlit-swarm-edge-cookie.conf").write_text(location_conf())
    # The app's locations as the tls role writes them (the site template's macro), for a swarm app.
    site = env.get_template("streamlit-edge-site.conf.j2").make_module(
        {
            **common,
            "tls_rate_limit_burst": 1000,
            "tls_rate_limit_static_burst": 1000,
            "tls_websocket_timeout": "600s",
            "_tls_swarm_edge_names": [APP],
        }
    )
    app = {"name": APP, "path": "/", "oidc": False, "htpasswd_users": [], "client_cert_cns": [], "upload_max_mb": 1}
    locations = site.app_locations(app)
    assert "include snippets/streamlit-swarm-edge-cookie.conf;" in locations
    localhost_certificate(conf)
    (conf / "nginx.conf").write_text(f"""
# Workers as root here: pytest's directories are root-only.
user root;
worker_processes 2;
pid {tmp}/nginx.pid;
error_log {tmp}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    map $http_upgrade $streamlit_edge_connection_upgrade {{
        default upgrade;
        "" close;
    }}
    include {conf}/streamlit-swarm-edge.conf;
    limit_req_zone $binary_remote_addr zone=streamlit_app_{APP}:1m rate=1000r/s;
    limit_req_zone $binary_remote_addr zone=streamlit_static_{APP}:1m rate=1000r/s;
    include {conf}/upstreams/*.conf;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {conf}/cert.pem;
        ssl_certificate_key {conf}/key.pem;
{locations}
    }}
}}
""")
    # The switch calls `<nginx> -t -q` and `<nginx> -s reload`: this wrapper gives both the test's prefix and
    # configuration, and records each reload.
    wrapper = tmp / "nginx"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" reload "*) echo reload >> {tmp}/reloads.log ;; esac\n'
        f'exec /usr/sbin/nginx -p {tmp} -c {conf}/nginx.conf "$@"\n'
    )
    wrapper.chmod(0o700)
    return wrapper


@contextmanager
def swarm_edge(tmp: Path, replicas: int = 3) -> Iterator[Stack]:
    (tmp / "app.py").write_text(APP_SOURCE)
    edge_port = free_port()
    wrapper = write_nginx(tmp, edge_port)
    stack = Stack(
        tmp,
        f"https://localhost:{edge_port}",
        Edge(tmp / "conf/upstreams", None, str(wrapper), pid_file=tmp / "nginx.pid"),
    )
    nginx: subprocess.Popen | None = None
    try:
        for _ in range(replicas):
            port = free_port()
            stack.replicas[port] = start_replica(tmp, port)
        for port, process in stack.replicas.items():
            wait_for(
                lambda p=port, proc=process: (
                    proc.poll() is None and requests.get(f"http://127.0.0.1:{p}/_stcore/health", timeout=5).ok
                ),
                f"streamlit on {port}",
                WAIT,
            )
        # The first upstream exists before nginx starts (nginx refuses an unknown upstream name).
        (tmp / "conf/upstreams" / f"{APP}.conf").write_text(
            render_upstream(APP, [Endpoint("127.0.0.1", p) for p in stack.replicas])
        )
        check = subprocess.run([str(wrapper), "-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        nginx = subprocess.Popen([str(wrapper), "-g", "daemon off;"])
        wait_for(lambda: stack.session().get(f"{stack.origin}/_stcore/health", timeout=5).ok, "nginx", WAIT)
        yield stack
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=30)
        for process in stack.replicas.values():
            process.terminate()
        for process in stack.replicas.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":  # a manual look: python -m tests.swarm_edge_stack DIR
    with swarm_edge(Path(sys.argv[1])) as running:
        print(running.origin, flush=True)
        time.sleep(3600)
