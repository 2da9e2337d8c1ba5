"""Drive the deploy engine's swarm backend on the scenario's manager (run there by tests/test_service.py).

Commands (each prints one JSON object):
  build TAG ok|broken   build image probe-app:TAG from the base image: a tiny HTTP app, or one that exits
  deploy TAG SHA        SwarmBackend.deploy of app 'probe' (3 replicas) at SHA from probe-app:TAG, with a
                        sampler of the running tasks and a prober of the task endpoints that served before
  endpoints             the running tasks' (node address, published port)
  wait-moved HOST SECS  seconds until 3 tasks run and none on HOST (a stopped node)

The app stands in for a Streamlit app: it answers 200 on every path (the health check's too) with its
version, as user 10001 on a read-only root. The backend and the app model are the collection's own
(copied to the manager beside this file), with the manager's Debian docker SDK.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import docker

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import Defaults, parse_apps
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._deploy import DeployFailed
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_backend import (
    SwarmBackend,
    SwarmSettings,
)

BASE = "secure-streamlit/base:bookworm"
APP = """\
import http.server, os, socket
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (os.environ["PROBE_VERSION"] + " " + socket.gethostname()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8501), Handler).serve_forever()
"""
BROKEN = "import sys; sys.exit(1)\n"


def spec():
    entry = {"name": "probe", "repo": "acme/probe", "replicas": 3, "resources": {"cpus": 0.25, "memory": "128m"}}
    return parse_apps([entry], Defaults())[0]


def backend(client) -> SwarmBackend:
    registry = sys.argv[-1]  # host:port, always the last argument
    return SwarmBackend(SwarmSettings(registry=registry), client, log=lambda m: print(m, file=sys.stderr))


def build(client, tag: str, mode: str) -> dict:
    with tempfile.TemporaryDirectory() as context:
        Path(context, "app.py").write_text(APP if mode == "ok" else BROKEN)
        Path(context, "Dockerfile").write_text(
            f'FROM {BASE}\nENV PROBE_VERSION={tag}\nCOPY app.py /srv/app.py\nCMD ["python3", "/srv/app.py"]\n'
        )
        client.images.build(path=context, tag=f"probe-app:{tag}", rm=True, pull=False)
    return {"image": f"probe-app:{tag}"}


def get(address: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{address}:{port}/", timeout=5) as answer:  # http only
        return answer.read().decode()


def deploy(client, tag: str, sha: str) -> dict:
    swarm = backend(client)
    app = spec()
    before = swarm.task_endpoints(app) if swarm.service(app) else []
    stop = threading.Event()
    samples: list[int] = []
    failures: dict[str, int] = {f"{a}:{p}": 0 for a, p in before}
    requests = [0]

    def sample() -> None:
        while not stop.is_set():
            tasks = swarm.tasks(app)
            samples.append(
                sum(t.get("DesiredState") == "running" and t["Status"].get("State") == "running" for t in tasks)
            )
            time.sleep(0.5)

    def probe() -> None:
        while not stop.is_set():
            for address, port in before:
                requests[0] += 1
                try:
                    get(address, port)
                except OSError:
                    failures[f"{address}:{port}"] += 1
            time.sleep(0.5)

    threads = [threading.Thread(target=sample), threading.Thread(target=probe)]
    for thread in threads:
        thread.start()
    result: dict = {"before": before}
    start = time.monotonic()
    try:
        fp = hashlib.sha256(tag.encode()).hexdigest()
        result["converged_seconds"] = swarm.deploy(app, sha, f"probe-app:{tag}", fp, "run", {"probe-token": b"t0k"})
        result["ok"] = True
    except DeployFailed as exc:
        result.update(ok=False, step=exc.step, message=str(exc), tail=list(exc.tail))
    result["seconds"] = round(time.monotonic() - start, 1)
    stop.set()
    for thread in threads:
        thread.join()
    result.update(
        min_running=min(samples) if samples else 0,
        probe_requests=requests[0],
        probe_failures=failures,
        after=swarm.task_endpoints(app),
        answers=[get(a, p) for a, p in swarm.task_endpoints(app)],
    )
    return result


def wait_moved(client, host: str, limit: float) -> dict:
    swarm = backend(client)
    app = spec()
    node = next(n for n in client.nodes.list() if n.attrs["Description"]["Hostname"] == host)
    start = time.monotonic()
    while time.monotonic() - start < limit:
        running = [
            t for t in swarm.tasks(app) if t.get("DesiredState") == "running" and t["Status"].get("State") == "running"
        ]
        if len(running) >= 3 and all(t.get("NodeID") != node.id for t in running):
            return {"seconds": round(time.monotonic() - start, 1), "nodes": sorted(t["NodeID"] for t in running)}
        time.sleep(1)
    return {"seconds": None}


def main() -> None:
    client = docker.from_env(timeout=120)
    command = sys.argv[1]
    if command == "build":
        out = build(client, sys.argv[2], sys.argv[3])
    elif command == "deploy":
        out = deploy(client, sys.argv[2], sys.argv[3])
    elif command == "endpoints":
        out = {"endpoints": backend(client).task_endpoints(spec())}
    elif command == "wait-moved":
        out = wait_moved(client, sys.argv[2], float(sys.argv[3]))
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
