"""Deploy time of one app with and without its database (issue 16's "Must show"), side by side in one run.

Runs inside a converged `molecule/apps` instance (`docker exec`), with the host deployer's own library and
configuration (`/opt/secure-streamlit-deployer`): the app `hello` (data directory, `database: postgresql`)
is redeployed at the commit it serves, alternately as written and with `database` removed, so every deploy
is a real one (the run settings differ, so the engine starts a new container, waits for health, runs the
readiness gate, switches the edge and drains the old one) and both variants see the same machine load.
The image is the same for both (the database changes only the run settings), so no build is timed.

What "with a database" adds at deploy time: the server's socket directory mounted read-only, the libpq
settings in the environment and the two secret files. The database and role themselves are made by the
apps role once (`roles/apps/tasks/databases.yml`), not at each deploy.

    .venv/bin/python benchmarks/database_deploy_bench.py [--container instance-apps] [--runs 5]

Prints each deploy's seconds, the medians and the ratio with/without; leaves `hello` as it was
(with its database).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

INSIDE = r"""
import dataclasses, json, sys, time
sys.path.insert(0, "/opt/secure-streamlit-deployer/lib")
import docker
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import AppSpec
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._deploy import Engine, Settings

runs, app = int(sys.argv[1]), sys.argv[2]
config = json.load(open("/opt/secure-streamlit-deployer/deployer.json"))
spec = next(AppSpec.from_dict(e) for e in config["apps"] if e["name"] == app)
if not spec.database:
    sys.exit(f"{app} has no database in the deployer's configuration")
engine = Engine(Settings.from_mapping(config["settings"]), docker.from_env(timeout=600))
sha = engine.load_state(app)["serving"]["sha"]
variants = {"with": spec, "without": dataclasses.replace(spec, database="")}
results = []
# Strictly alternating (a deploy of the same settings twice would be "unchanged"): an uncounted warm-up
# without, then with, without, ... `runs` of each, and an uncounted "with" last to leave the app as it was.
plan = [("without", False)] + [(v, True) for _ in range(runs) for v in ("with", "without")] + [("with", False)]
for variant, counted in plan:
    start = time.monotonic()
    outcome = engine.deploy(variants[variant], sha, requested_by="database_deploy_bench")
    took = time.monotonic() - start
    results.append({"variant": variant, "counted": counted, "seconds": round(took, 2),
                    "status": outcome.status, "reason": outcome.reason})
    print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    if outcome.status == "failed" or (counted and outcome.status != "deployed"):
        sys.exit(f"{variant}: {outcome.status} {outcome.reason}")
print(json.dumps(results))
"""


def loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as handle:
        return " ".join(handle.read().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--container", default="instance-apps")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--app", default="hello")
    args = parser.parse_args()
    load = loadavg()
    done = subprocess.run(
        ["docker", "exec", "-i", args.container, "python3", "-", str(args.runs), args.app],
        input=INSIDE,
        capture_output=True,
        text=True,
        check=False,
    )
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        return done.returncode
    results = json.loads(done.stdout.strip().splitlines()[-1])
    counted = {v: [r["seconds"] for r in results if r["counted"] and r["variant"] == v] for v in ("with", "without")}
    medians = {v: statistics.median(s) for v, s in counted.items()}
    print(f"load average before: {load}; after: {loadavg()}")
    for variant in ("without", "with"):
        print(f"{variant:>7} database: median {medians[variant]:.1f} s of {counted[variant]}")
    print(f"ratio with/without: {medians['with'] / medians['without']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
