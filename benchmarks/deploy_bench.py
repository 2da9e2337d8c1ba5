"""Deploy figures (issue #7): failed requests through the edge during deploys, push -> serving time.

Runs against a host made by the `apps` molecule scenario (create, prepare and converge it first:
`molecule converge -s apps`; the instance is `instance-apps`). For each case a new commit is pushed
to main of the instance's bare repository while a load generator sends --rate requests per second
through the edge (HTTPS, nginx -> container), alternating the app's page and its health endpoint.

--via monitor (default): the push is also published to the fake GitHub the monitor polls (every
2 s in the scenario); the monitor's request, the host's deployer and deploy.yml do the rest, as on a
real host. --via deploy: the benchmark runs playbooks/deploy.yml itself from the controller (no poll).
Reported per case: requests sent, failed (any status but 200, or a connection error), deploy outcome,
push -> new version serving (the edge's upstream points at the new container) in seconds.

Cases: a code-only change (dependencies cached in the engine's layers); a change of requirements.txt
(the app's dependency layer rebuilt, Streamlit's cached); the same with every layer rebuilt
(apps_build_nocache: Streamlit and the component downloaded again); a commit whose app never becomes
healthy (the old version must keep serving; main is then set back to the serving commit).

    .venv/bin/python benchmarks/deploy_bench.py [--rate 20] [--via monitor|deploy] [--container instance-apps]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import requests
import yaml
from requests.adapters import HTTPAdapter

REPO = Path(__file__).resolve().parent.parent
EDGE = "edge.lab.test"
BARE = "/srv/git/acme/hello.git"
FAKE_STATE = "/var/lib/fake-github/state.json"
MONITOR_STATE = "/var/lib/github-repo-monitor/state.json"
DEPLOYER_INVENTORY = "/opt/secure-streamlit-deployer/inventory.yml"


def sh(container: str, script: str) -> str:
    return subprocess.run(
        ["docker", "exec", container, "sh", "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()


class EdgeAdapter(HTTPAdapter):
    """TLS to the instance's address, verified as the edge's name against the lab CA."""

    def init_poolmanager(self, *args, **kwargs):
        kwargs["server_hostname"] = EDGE
        kwargs["assert_hostname"] = EDGE
        super().init_poolmanager(*args, **kwargs)


class Load:
    """Open-loop load: one request every 1/rate s, each on its own thread (a slow answer does not
    lower the rate)."""

    def __init__(self, address: str, ca: str, rate: float, app: str) -> None:
        self.session = requests.Session()
        # No proxy and no REQUESTS_CA_BUNDLE from the environment: straight to the edge, the lab CA.
        self.session.trust_env = False
        self.session.mount("https://", EdgeAdapter(pool_maxsize=64))
        self.session.verify = ca
        self.urls = [f"https://{address}/{app}/", f"https://{address}/{app}/_stcore/health"]
        self.rate = rate
        self.sent = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _one(self, url: str) -> None:
        try:
            response = self.session.get(url, headers={"Host": EDGE}, timeout=10)
            ok, what = response.status_code == 200, str(response.status_code)
        except requests.RequestException as exc:
            ok, what = False, type(exc).__name__
        if not ok:
            with self._lock:
                self.failures.append(what)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            threading.Thread(target=self._one, args=(self.urls[self.sent % 2],), daemon=True).start()
            self.sent += 1
            delay = start + self.sent / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(2)  # a little load after the deploy too
        self._stop.set()
        self.seconds = time.monotonic() - self._started
        self._thread.join()
        time.sleep(1)  # the last answers


def inventory(container: str, directory: Path) -> Path:
    """The molecule scenario's settings, for the instance reached with docker exec."""
    molecule = yaml.safe_load((REPO / "molecule/apps/molecule.yml").read_text())
    group_vars = molecule["provisioner"]["inventory"]["group_vars"]["all"]
    hosts = {
        container: {
            "ansible_connection": "community.docker.docker",
            "ansible_host": container,
            "ansible_python_interpreter": "/usr/bin/python3",
        }
    }
    path = directory / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": hosts, "vars": group_vars}}))
    return path


def push(container: str, case: str) -> str:
    """A new commit on main: code only, or a changed requirements.txt, or a broken app."""
    stamp = time.time_ns()
    change = {
        "code": f"printf '\\nst.caption(\"build {stamp}\")\\n' >>streamlit_app.py",
        "requirements": f"printf '\\nst.caption(\"build {stamp}\")\\n' >>streamlit_app.py"
        f" && printf 'tomli-w==1.2.0  # {stamp}\\n' >>requirements.txt",
        "broken": 'mkdir -p .streamlit && printf \'[server]\\nsslCertFile = "/x.pem"\\nsslKeyFile = "/x.key"\\n\''
        " >.streamlit/config.toml",
    }[case.split("-")[0]]
    return sh(
        container,
        f"set -e; w=$(mktemp -d); git clone -q {BARE} $w; cd $w; git config user.name bench;"
        f" git config user.email bench@lab.test; {change}; git add -A; git commit -qm '{case} {stamp}';"
        f" git push -q origin HEAD:main; git rev-parse HEAD; rm -rf $w",
    )


def set_main(container: str, sha: str, publish: bool) -> None:
    """Point main at sha in the bare repository and, for the monitor, in what the fake GitHub answers."""
    sh(container, f"git -C {BARE} update-ref refs/heads/main {sha}")
    if publish:
        publish_head(container, sha)


def publish_head(container: str, sha: str) -> None:
    state = json.loads(sh(container, f"cat {FAKE_STATE}"))
    state["repos"]["acme/hello"]["main"] = sha
    sh(container, f"echo '{json.dumps(state)}' >{FAKE_STATE}.new && mv {FAKE_STATE}.new {FAKE_STATE}")


def monitor_outcome(container: str, app: str, sha: str) -> str | None:
    """deployed or failed once the monitor has the deployer's answer for sha."""
    state = json.loads(sh(container, f"cat {MONITOR_STATE}")).get("apps", {}).get(app, {})
    if state.get("last_deployed_sha") == sha:
        return "ok"
    return "failed" if sha in state.get("failed_shas", {}) else None


def serving_sha(container: str, app: str) -> str:
    """The SHA of the container the edge's upstream include points at."""
    include = sh(container, f"cat /etc/nginx/streamlit-upstreams/{app}.conf")
    address = include.split("server ")[1].split(":")[0]
    for line in sh(
        container,
        f"docker ps -q --filter label=secure_streamlit.app={app} | xargs -r docker inspect -f "
        "'{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}} {{index .Config.Labels \"secure_streamlit.sha\"}}'",
    ).splitlines():
        fields = line.split()  # a container being created or removed may have no address yet
        if len(fields) == 2 and fields[0] == address:
            return fields[1]
    return ""


def deploy_from_controller(args, hosts: Path, sha: str, nocache: bool) -> str:
    extra = ["-e", "apps_build_nocache=true"] if nocache else []
    result = subprocess.run(
        [
            str(REPO / ".venv/bin/ansible-playbook"),
            "-i",
            str(hosts),
            str(REPO / "playbooks/deploy.yml"),
            *["-e", "deploy_hosts=all", "-e", f"app={args.app}", "-e", f"sha={sha}", *extra],
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO / "collections"), "ANSIBLE_FORCE_COLOR": "0"},
    )
    return "ok" if result.returncode == 0 else "failed"


def deploy_through_monitor(args, sha: str, nocache: bool, pushed: float) -> tuple[str, float | None]:
    """Publish the push to the fake GitHub; wait for the edge to serve sha or the monitor to hear it failed."""
    if nocache:  # the host's deployer reads its settings from its inventory: rebuild every layer this once
        sh(args.container, f"sed -i.bench 's/apps_build_nocache: false/apps_build_nocache: true/' {DEPLOYER_INVENTORY}")
    try:
        publish_head(args.container, sha)
        serving_at = None
        while time.monotonic() - pushed < args.timeout:
            if serving_at is None and serving_sha(args.container, args.app) == sha:
                serving_at = time.monotonic()
            outcome = monitor_outcome(args.container, args.app, sha)
            if outcome:
                return outcome, serving_at
            time.sleep(0.5)
        return "timeout", serving_at
    finally:
        if nocache:
            sh(args.container, f"mv {DEPLOYER_INVENTORY}.bench {DEPLOYER_INVENTORY}")


def run_case(args, hosts: Path, address: str, ca: str, case: str) -> dict:
    before = serving_sha(args.container, args.app)
    nocache = case.endswith("nocache")
    with Load(address, ca, args.rate, args.app) as load:
        sha = push(args.container, case)
        pushed = time.monotonic()
        if args.via == "monitor":
            outcome, serving_at = deploy_through_monitor(args, sha, nocache, pushed)
        else:
            outcome = deploy_from_controller(args, hosts, sha, nocache)
            serving_at = time.monotonic() if serving_sha(args.container, args.app) == sha else None
    if case.startswith("broken"):  # main back at the serving commit: the next case builds on a good one
        set_main(args.container, before, publish=args.via == "monitor")
    return {
        "case": case,
        "via": args.via,
        "sha": sha[:12],
        "deploy": outcome,
        "serving_new": serving_sha(args.container, args.app) == sha,
        "push_to_serving_s": round(serving_at - pushed, 1) if serving_at else None,
        "requests": load.sent,
        "rate_rps": round(load.sent / load.seconds, 1),
        "failed_requests": len(load.failures),
        "failures": sorted(set(load.failures)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--container", default="instance-apps")
    parser.add_argument("--app", default="hello")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--cases", default="code,requirements,requirements-nocache,broken")
    parser.add_argument("--via", choices=["monitor", "deploy"], default="monitor")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a case may take")
    args = parser.parse_args()

    address = subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", args.container],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as directory:
        ca = Path(directory) / "ca.crt"
        ca.write_text(sh(args.container, "cat /etc/streamlit-edge/ca.crt") + "\n")
        hosts = inventory(args.container, Path(directory))
        results = []
        for case in args.cases.split(","):
            results.append(run_case(args, hosts, address, str(ca), case))
            print(json.dumps(results[-1]), flush=True)
    print(f"\n{'case':<22} {'deploy':<7} {'push->serving s':>15} {'requests':>9} {'req/s':>6} {'failed':>7}")
    for r in results:
        print(
            f"{r['case']:<22} {r['deploy']:<7} {r['push_to_serving_s'] or '-':>15} {r['requests']:>9}"
            f" {r['rate_rps']:>6} {r['failed_requests']:>7}"
        )


if __name__ == "__main__":
    main()
