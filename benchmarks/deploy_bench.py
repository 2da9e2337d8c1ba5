"""Deploy figures (issues #7, #14): today's path and the deploy engine side by side, under load.

Runs against hosts made by copies of the `apps` molecule scenario, one per path, with a third app (see
--make-scenario). Each --container NAME=LABEL is one converged instance; which deploy path it runs is read
from the instance itself: the engine's deployer (`deployer.json` with `settings`, no Ansible on the host)
or the Ansible one (a second, pinned Ansible running playbooks/deploy.yml with `inventory.yml`).

Every case runs on each instance in turn (first, second, first, second, ...) so both see the same machine
load, while a load generator sends --rate requests per second through the instance's edge (HTTPS, nginx
-> container; the app's page and its health endpoint alternately) and counts every answer but 200 and
every connection error as a failed request. A deploy is a commit pushed to main of the instance's bare
repository and published to the fake GitHub the monitor polls (every 2 s in the scenario); the monitor,
the host's deployer and its deploy path do the rest, as on a real host.

Cases:
  code          a code-only change, dependencies cached: push -> the edge serves the new container
  requirements  a changed requirements.txt (the app's dependency layer rebuilt)
  requirements-nocache  the same with every layer rebuilt (the path's own no-cache switch, this once)
  broken        a commit whose app never becomes healthy (bad TLS settings): the old version keeps serving
  raises        a commit whose script raises at import (`import clinic_risk_scores`): health answers
                before any script runs, so only a readiness gate can refuse it
  stress        a code-only deploy with both cores saturated (`stress-ng --cpu 2` on this machine)
  engine-restart  `systemctl restart docker` in the instance: seconds until every app answers 200
                through the edge again, and whether each serves the commit it served before
  host-restart  an approximated reboot (see below): every app container stopped, engine and nginx
                restarted; seconds until every app serves again at the commit it served before

Why host-restart only approximates a reboot: the instances keep /var/lib/docker on a tmpfs (the inner
engine needs overlay2 on a tmpfs), so restarting the instance container loses every image and container,
which a real host's disk keeps. What a reboot does to the apps is approximated instead: their containers
stop, the engine and nginx start again, and nothing is running until something starts it.

After a broken or raises case main is set back to the commit that served before, and the case waits
until that commit serves again (the Ansible path deploys a raising commit and must redeploy).

    .venv/bin/python benchmarks/deploy_bench.py --make-scenario WORKTREE:NAME
    .venv/bin/python benchmarks/deploy_bench.py --container instance-bench-old=old \\
        --container instance-bench-new=new [--cases code,broken,raises,stress,engine-restart,host-restart]
        [--repeat code=5] [--rate 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml
from requests.adapters import HTTPAdapter

EDGE = "edge.lab.test"
BARE = "/srv/git/acme/hello.git"
FAKE_STATE = "/var/lib/fake-github/state.json"
MONITOR_STATE = "/var/lib/github-repo-monitor/state.json"
DEPLOYER_DIR = "/opt/secure-streamlit-deployer"
DEPLOYER_INVENTORY = f"{DEPLOYER_DIR}/inventory.yml"  # the Ansible path's settings
DEPLOYER_CONFIG = f"{DEPLOYER_DIR}/deployer.json"  # the engine's settings
AUDIT_LOG = "/var/log/streamlit/deploys.log"
UPSTREAMS = "/etc/nginx/streamlit-upstreams"
# The app the deploy cases push to, and every app of the bench scenario with its route on the edge.
APP = "hello"
ROUTES = {"hello": "/hello/", "extra": "/second/", "third": "/third/"}
THIRD_APP = {"name": "third", "repo": "acme/hello", "branch": "stable"}
CASES = ("code", "requirements", "requirements-nocache", "broken", "raises", "stress", "engine-restart", "host-restart")


def sh(container: str, script: str, check: bool = True) -> str:
    return subprocess.run(
        ["docker", "exec", container, "sh", "-c", script], capture_output=True, text=True, check=check
    ).stdout.strip()


class EdgeAdapter(HTTPAdapter):
    """TLS to the instance's address, verified as the edge's name against the lab CA."""

    def init_poolmanager(self, *args, **kwargs):
        kwargs["server_hostname"] = EDGE
        kwargs["assert_hostname"] = EDGE
        super().init_poolmanager(*args, **kwargs)


@dataclass
class Target:
    """One converged instance and the deploy path it runs."""

    container: str
    label: str
    path: str = ""  # "engine" or "ansible"
    address: str = ""
    ca: str = ""
    session: requests.Session = field(default_factory=requests.Session)

    def open(self, directory: Path) -> None:
        self.address = subprocess.run(
            ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", self.container],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        ca = directory / f"{self.container}-ca.crt"
        ca.write_text(sh(self.container, "cat /etc/streamlit-edge/ca.crt") + "\n")
        self.ca = str(ca)
        config = json.loads(sh(self.container, f"cat {DEPLOYER_CONFIG} 2>/dev/null || echo '{{}}'") or "{}")
        if "build_nocache" in config.get("settings", {}):
            self.path = "engine"
        elif sh(self.container, f"test -f {DEPLOYER_INVENTORY} && echo yes", check=False) == "yes":
            self.path = "ansible"
        else:
            raise SystemExit(f"{self.container}: neither the engine's {DEPLOYER_CONFIG} nor {DEPLOYER_INVENTORY}")
        # No proxy and no REQUESTS_CA_BUNDLE from the environment: straight to the edge, the lab CA.
        self.session.trust_env = False
        self.session.mount("https://", EdgeAdapter(pool_maxsize=64))
        self.session.verify = self.ca

    def status(self, path: str) -> int | str:
        try:
            return self.session.get(f"https://{self.address}{path}", headers={"Host": EDGE}, timeout=5).status_code
        except requests.RequestException as exc:
            return type(exc).__name__


class Load:
    """Open-loop load: one request every 1/rate s, each on its own thread (a slow answer does not
    lower the rate)."""

    def __init__(self, target: Target, rate: float, app: str = APP) -> None:
        self.target = target
        route = ROUTES[app]
        self.paths = [route, f"{route}_stcore/health"]
        self.rate = rate
        self.sent = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _one(self, path: str) -> None:
        try:
            response = self.target.session.get(
                f"https://{self.target.address}{path}", headers={"Host": EDGE}, timeout=10
            )
            ok, what = response.status_code == 200, str(response.status_code)
        except requests.RequestException as exc:
            ok, what = False, type(exc).__name__
        if not ok:
            with self._lock:
                self.failures.append(what)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            threading.Thread(target=self._one, args=(self.paths[self.sent % 2],), daemon=True).start()
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


def push(container: str, case: str) -> str:
    """A new commit on main: code only, a changed requirements.txt, an unhealthy app or a raising script."""
    stamp = time.time_ns()
    code = f"printf '\\nst.caption(\"build {stamp}\")\\n' >>streamlit_app.py"
    change = {
        "code": code,
        "stress": code,
        "requirements": f"{code} && printf 'tomli-w==1.2.0  # {stamp}\\n' >>requirements.txt",
        "broken": 'mkdir -p .streamlit && printf \'[server]\\nsslCertFile = "/x.pem"\\nsslKeyFile = "/x.key"\\n\''
        " >.streamlit/config.toml",
        "raises": f"{code} && sed -i '1i import clinic_risk_scores' streamlit_app.py",
    }[case.split("-")[0]]
    return sh(
        container,
        f"set -e; w=$(mktemp -d); git clone -q {BARE} $w; cd $w; git config user.name bench;"
        f" git config user.email bench@lab.test; {change}; git add -A; git commit -qm '{case} {stamp}';"
        f" git push -q origin HEAD:main; git rev-parse HEAD; rm -rf $w",
    )


def publish_head(container: str, sha: str) -> None:
    state = json.loads(sh(container, f"cat {FAKE_STATE}"))
    state["repos"]["acme/hello"]["main"] = sha
    sh(container, f"echo '{json.dumps(state)}' >{FAKE_STATE}.new && mv {FAKE_STATE}.new {FAKE_STATE}")


def monitor_outcome(container: str, app: str, sha: str) -> str | None:
    """ok or failed once the monitor has the deployer's answer for sha."""
    state = json.loads(sh(container, f"cat {MONITOR_STATE}")).get("apps", {}).get(app, {})
    if state.get("last_deployed_sha") == sha:
        return "ok"
    return "failed" if sha in state.get("failed_shas", {}) else None


def serving_sha(container: str, app: str) -> str:
    """The SHA of the running container the edge's upstream include points at ("" if none)."""
    include = sh(container, f"cat {UPSTREAMS}/{app}.conf", check=False)
    if "server " not in include:
        return ""
    address = include.split("server ")[1].split(":")[0]
    for line in sh(
        container,
        f"docker ps -q --filter label=secure_streamlit.app={app} | xargs -r docker inspect -f "
        "'{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}} {{index .Config.Labels \"secure_streamlit.sha\"}}'",
        check=False,
    ).splitlines():
        fields = line.split()  # a container being created or removed may have no address yet
        if len(fields) == 2 and fields[0] == address:
            return fields[1]
    return ""


def audit_record(container: str, sha: str) -> dict:
    """The last deploy record for sha (step and reason of a failure), {} if none."""
    for line in reversed(sh(container, f"tail -n 50 {AUDIT_LOG}", check=False).splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("sha") == sha:
            return {k: record.get(k) for k in ("status", "outcome", "step", "reason", "seconds")}
    return {}


def set_nocache(target: Target, on: bool) -> None:
    """Each path's own switch for rebuilding every layer (its deployer reads it at each deploy)."""
    if target.path == "ansible":
        if on:
            sh(
                target.container,
                f"sed -i.bench 's/apps_build_nocache: false/apps_build_nocache: true/' {DEPLOYER_INVENTORY}",
            )
        else:
            sh(target.container, f"mv {DEPLOYER_INVENTORY}.bench {DEPLOYER_INVENTORY}")
    elif on:
        sh(
            target.container,
            f"cp -p {DEPLOYER_CONFIG} {DEPLOYER_CONFIG}.bench && python3 -c 'import json,sys; p=sys.argv[1];"
            ' c=json.load(open(p)); c["settings"]["build_nocache"]=True; open(p,"w").write(json.dumps(c))\''
            f" {DEPLOYER_CONFIG}",
        )
    else:
        sh(target.container, f"mv {DEPLOYER_CONFIG}.bench {DEPLOYER_CONFIG}")


def wait_deploy(target: Target, sha: str, pushed: float, timeout: float) -> tuple[str, float | None, float | None]:
    """Publish the push; wait for the monitor to hear the outcome. Returns the outcome, seconds from push
    to the edge serving sha (None if it never did) and seconds from push to the outcome."""
    publish_head(target.container, sha)
    serving_at = None
    while time.monotonic() - pushed < timeout:
        if serving_at is None and serving_sha(target.container, APP) == sha:
            serving_at = time.monotonic()
        outcome = monitor_outcome(target.container, APP, sha)
        if outcome:
            if outcome == "ok" and serving_at is None and serving_sha(target.container, APP) == sha:
                serving_at = time.monotonic()
            return outcome, serving_at and serving_at - pushed, time.monotonic() - pushed
        time.sleep(0.5)
    return "timeout", serving_at and serving_at - pushed, None


def restore_main(target: Target, before: str, timeout: float) -> float | None:
    """main back at the commit that served before; seconds until it serves again (None: it did not)."""
    sh(target.container, f"git -C {BARE} update-ref refs/heads/main {before}")
    publish_head(target.container, before)
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if serving_sha(target.container, APP) == before:
            return time.monotonic() - start
        time.sleep(1)
    return None


def deploy_case(args, target: Target, case: str) -> dict:
    before = serving_sha(target.container, APP)
    nocache = case.endswith("nocache")
    stress = None
    if case == "stress":
        # Both cores of this machine busy for the whole deploy (our own process, ended by its pid).
        stress = subprocess.Popen(
            ["stress-ng", "--cpu", "2", "--timeout", str(int(args.timeout))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(2)
    if nocache:
        set_nocache(target, True)
    try:
        with Load(target, args.rate) as load:
            sha = push(target.container, case)
            pushed = time.monotonic()
            outcome, to_serving, to_outcome = wait_deploy(target, sha, pushed, args.timeout)
    finally:
        if stress:
            stress.send_signal(signal.SIGINT)
            stress.wait(timeout=30)
        if nocache:
            set_nocache(target, False)
    serving_new = serving_sha(target.container, APP) == sha
    result = {
        "sha": sha[:12],
        "deploy": outcome,
        "serving_new": serving_new,
        "kept_old": serving_sha(target.container, APP) == before,
        # Seconds to the new version serving; for a commit that must be refused, to the monitor's answer.
        "seconds": (lambda s: s and round(s, 1))(to_outcome if case in ("broken", "raises") else to_serving),
        "push_to_outcome_s": to_outcome and round(to_outcome, 1),
        "requests": load.sent,
        "rate_rps": round(load.sent / load.seconds, 1),
        "failed_requests": len(load.failures),
        "failures": sorted(set(load.failures)),
        "record": audit_record(target.container, sha),
    }
    if case in ("broken", "raises"):
        restored = restore_main(target, before, args.timeout)
        result["back_to_previous_s"] = restored and round(restored, 1)
    return result


def all_serving(target: Target) -> bool:
    return all(target.status(f"{route}_stcore/health") == 200 for route in ROUTES.values())


def restart_case(args, target: Target, case: str) -> dict:
    """engine-restart or host-restart: seconds until every app answers 200 through the edge and serves
    the commit it served before."""
    before = {app: serving_sha(target.container, app) for app in ROUTES}
    if case == "host-restart":
        stopped = sh(target.container, "docker ps -q --filter label=secure_streamlit.app").split()
    with Load(target, args.rate) as load:
        start = time.monotonic()
        if case == "host-restart":
            sh(target.container, f"docker stop {' '.join(stopped)} >/dev/null")
            sh(target.container, "systemctl restart docker nginx")
        else:
            sh(target.container, "systemctl restart docker")
        answering_at = seconds = None
        while time.monotonic() - start < args.restart_timeout:
            if all_serving(target):
                answering_at = answering_at or time.monotonic() - start
                if {app: serving_sha(target.container, app) for app in ROUTES} == before:
                    seconds = time.monotonic() - start
                    break
            time.sleep(0.5)
    after = {app: serving_sha(target.container, app) for app in ROUTES}
    result = {
        "deploy": "ok" if seconds is not None else "not serving",
        "seconds": seconds and round(seconds, 1),
        "all_answer_200_s": answering_at and round(answering_at, 1),
        "same_shas": after == before,
        "before": {app: sha[:12] for app, sha in before.items()},
        "after": {app: sha[:12] for app, sha in after.items()},
        "requests": load.sent,
        "rate_rps": round(load.sent / load.seconds, 1),
        "failed_requests": len(load.failures),
        "failures": sorted(set(load.failures)),
    }
    if case == "host-restart" and seconds is None:
        # Leave the instance usable for the next run: start what this case stopped.
        sh(
            target.container,
            "docker ps -aq --filter label=secure_streamlit.app | xargs -r docker start >/dev/null",
            check=False,
        )
        result["started_by_the_bench_after_timeout"] = True
    return result


def diagnose(target: Target, case: str, result: dict, directory: Path) -> str:
    """The engine's deploys misbehaved: keep its journal, its audit log and its view of the apps."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{target.label}-{case}-{int(time.time())}.txt"
    parts = [
        json.dumps(result, indent=2),
        sh(
            target.container,
            "journalctl --no-pager -n 400 -u streamlit-deployer -u streamlit-apps-restore",
            check=False,
        ),
        sh(target.container, f"tail -n 20 {AUDIT_LOG}", check=False),
        sh(
            target.container,
            "head -c 4000 /var/lib/streamlit-apps/*/state.json; cat /etc/nginx/streamlit-upstreams/*.conf",
            check=False,
        ),
        sh(target.container, "docker ps -a --format '{{.Names}} {{.Status}} {{.Labels}}'", check=False),
    ]
    path.write_text("\n\n==========\n".join(parts))
    return str(path)


def misbehaved(case: str, result: dict) -> bool:
    if result["failed_requests"] and case not in ("engine-restart", "host-restart"):
        return True
    if case in ("broken", "raises"):
        return result["deploy"] != "failed" or not result["kept_old"]
    if case in ("engine-restart", "host-restart"):
        return result["deploy"] != "ok" or not result["same_shas"]
    return result["deploy"] != "ok" or not result["serving_new"]


def make_scenario(spec: str) -> None:
    """WORKTREE:NAME: molecule/NAME, a copy of molecule/apps (without its tests) with a third app."""
    worktree, name = spec.rsplit(":", 1)
    source, copy = Path(worktree) / "molecule/apps", Path(worktree) / "molecule" / name
    if name == "apps" or copy.exists():
        raise SystemExit(f"{copy}: refusing to overwrite (the scenario apps is someone else's instance)")
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    molecule = yaml.safe_load((copy / "molecule.yml").read_text())
    molecule["provisioner"]["inventory"]["group_vars"]["all"]["apps"].append(THIRD_APP)
    (copy / "molecule.yml").write_text("---\n" + yaml.safe_dump(molecule, sort_keys=False))
    print(f"{copy}: molecule converge -s {name} (instance-{name})")


def fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def summary(cases: list[str], targets: list[Target], results: dict) -> None:
    old, new = targets[0], targets[-1]
    print(f"\nratio = {old.label}/{new.label} seconds; failed = failed requests through the edge (all runs)")
    for case in cases:
        print(f"\n{case}")
        print(f"  {'':<28} {old.label:>14} {new.label:>14} {'ratio':>7}")
        rows = {t.label: results[(t.label, case)] for t in targets}
        seconds = {}
        for t in targets:
            values = [r["seconds"] for r in rows[t.label] if r["seconds"] is not None]
            # The median of the runs that got there ("each run" shows the ones that did not).
            seconds[t.label] = statistics.median(values) if values else None
        name = {"broken": "push -> answer s", "raises": "push -> answer s"}.get(case, "push -> serving s")
        if case.endswith("-restart"):
            name = "restart -> same SHAs serve s"
        name = f"median {name}" if max(len(v) for v in rows.values()) > 1 else name
        # Times of different outcomes (one path deployed what the other refused) are not compared.
        same_outcome = len({tuple(sorted({r["deploy"] for r in v})) for v in rows.values()}) == 1
        both = seconds[old.label] and seconds[new.label] and same_outcome
        ratio = seconds[old.label] / seconds[new.label] if both else None
        print(f"  {name:<28} {fmt(seconds[old.label]):>14} {fmt(seconds[new.label]):>14} {fmt(ratio):>7}")
        if max(len(v) for v in rows.values()) > 1:
            each = {lb: " ".join(fmt(r["seconds"]) for r in v) for lb, v in rows.items()}
            print(f"  {'each run':<28} {each[old.label]:>14} {each[new.label]:>14}")
        for key, title in (("deploy", "outcome"), ("failed_requests", "failed requests")):
            vals = {
                lb: ",".join(sorted({str(r[key]) for r in v})) if key == "deploy" else sum(r[key] for r in v)
                for lb, v in rows.items()
            }
            print(f"  {title:<28} {vals[old.label]!s:>14} {vals[new.label]!s:>14}")
        sent = {lb: sum(r["requests"] for r in v) for lb, v in rows.items()}
        print(f"  {'requests sent':<28} {sent[old.label]:>14} {sent[new.label]:>14}")
        if case in ("broken", "raises"):
            kept = {lb: all(r["kept_old"] for r in v) for lb, v in rows.items()}
            print(f"  {'old version kept serving':<28} {kept[old.label]!s:>14} {kept[new.label]!s:>14}")
        if case in ("engine-restart", "host-restart"):
            same = {lb: all(r["same_shas"] for r in v) for lb, v in rows.items()}
            first = {lb: fmt(v[0]["all_answer_200_s"]) for lb, v in rows.items()}
            print(f"  {'all 3 answer 200 after s':<28} {first[old.label]:>14} {first[new.label]:>14}")
            print(f"  {'same SHAs as before':<28} {same[old.label]!s:>14} {same[new.label]!s:>14}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--make-scenario", metavar="WORKTREE:NAME", help="copy molecule/apps with a third app, then exit"
    )
    parser.add_argument(
        "--container", action="append", metavar="NAME=LABEL", help="an instance and its label; repeat (old path first)"
    )
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second through the edge")
    parser.add_argument("--cases", default="code,broken,raises,stress,engine-restart,host-restart")
    parser.add_argument("--repeat", action="append", default=[], metavar="CASE=N", help="runs per path (code=5)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a deploy case may take")
    parser.add_argument("--restart-timeout", type=float, default=300.0, help="seconds a restart case may take")
    parser.add_argument("--warmup", type=int, default=1, help="code deploys per path before the cases (not counted)")
    parser.add_argument("--diagnostics", type=Path, help="where the engine's logs go when it misbehaves")
    parser.add_argument("--json", type=Path, help="write every run's result here")
    args = parser.parse_args()
    if args.make_scenario:
        make_scenario(args.make_scenario)
        return
    cases = args.cases.split(",")
    args.diagnostics = args.diagnostics or Path(tempfile.mkdtemp(prefix="deploy-bench-"))
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    repeats = {"code": 5} | {k: int(v) for k, v in (r.split("=", 1) for r in args.repeat)}
    targets = [Target(*c.split("=", 1)) for c in args.container or ["instance-apps=apps"]]

    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as directory:
        for target in targets:
            target.open(Path(directory))
            print(f"{target.label}: {target.container} ({target.path} deploy path)", flush=True)
        # Not counted: the first deploy after site.yml shows whether the deployer's builds hit the layer
        # cache that site.yml's builds left (a miss rebuilds apt, pip and Streamlit).
        for run in range(args.warmup):
            for target in targets:
                result = {"case": "warm-up", "run": run + 1, "path": target.label, **deploy_case(args, target, "code")}
                print(json.dumps(result), flush=True)
        for case in cases:
            for run in range(repeats.get(case, 1)):
                for target in targets:
                    run_case = restart_case if case.endswith("-restart") else deploy_case
                    result = {"case": case, "run": run + 1, "path": target.label, **run_case(args, target, case)}
                    if target.path == "engine" and misbehaved(case, result):
                        result["diagnostics"] = diagnose(target, case, result, args.diagnostics)
                    results.setdefault((target.label, case), []).append(result)
                    print(json.dumps(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps([r for v in results.values() for r in v], indent=1) + "\n")
    summary(cases, targets, results)


if __name__ == "__main__":
    main()
