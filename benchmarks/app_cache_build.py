"""An app's first build on a fresh engine, without and with the app cache image, side by side.

Runs inside a container with its own Docker engine and Debian's Docker SDK (python3-docker), the host's
.cache/images mounted at /opt/images and a build context at /root/benchctx-src (a Dockerfile written by
the deploy engine's dockerfile(), the component's wheel under component/, the launcher, the gate, an empty
requirements.txt, app.tar). The context is made as Engine.fetch makes it (directories 0700, files 0644,
the container's own /usr/local/share/ca-certificates/*.crt), sent through the SDK as the engine sends it.

    python3 app_cache_build.py ROUNDS

A: every step built (nocache). B: the cache image loaded from its tar, then the build with cache_from.
Between runs every image but the base image is removed.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import docker

SOURCE = Path("/root/benchctx-src")
CONTEXT = Path("/root/ctx")
CACHE_IMAGE = "secure-streamlit/app-cache:bookworm"
client = docker.from_env(timeout=900)


def context() -> Path:
    shutil.rmtree(CONTEXT, ignore_errors=True)
    for directory in (CONTEXT, CONTEXT / "component", CONTEXT / "extra-ca"):
        directory.mkdir(mode=0o700)
    for name in ("Dockerfile", "app.tar", "requirements.txt", "streamlit_launch.py", "streamlit_gate.py"):
        shutil.copyfile(SOURCE / name, CONTEXT / name)
    for wheel in (SOURCE / "component").iterdir():
        shutil.copyfile(wheel, CONTEXT / "component" / wheel.name)
    for ca in sorted(Path("/usr/local/share/ca-certificates").glob("*.crt")):
        shutil.copyfile(ca, CONTEXT / "extra-ca" / ca.name)
    for path in CONTEXT.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
    return CONTEXT


def clean() -> None:
    for tag in ("bench:a", "bench:b", CACHE_IMAGE):
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(tag, force=True)
    client.images.prune()


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def main(rounds: int) -> None:
    for number in range(1, rounds + 1):
        clean()
        start = time.monotonic()
        client.images.build(path=str(context()), tag="bench:a", rm=True, forcerm=True, pull=False, nocache=True)
        uncached = time.monotonic() - start
        print(f"round {number} A (no cache image): build {uncached:.1f} s; load {load_average()}", flush=True)
        clean()
        build_context = context()
        start = time.monotonic()
        subprocess.run(["docker", "load", "-qi", "/opt/images/app-cache.tar"], check=True, capture_output=True)
        loaded = time.monotonic()
        _, logs = client.images.build(
            path=str(build_context), tag="bench:b", rm=True, forcerm=True, pull=False, cache_from=[CACHE_IMAGE]
        )
        end = time.monotonic()
        hits = sum(1 for chunk in logs if "Using cache" in str(chunk.get("stream", "")))
        print(
            f"round {number} B (cache image): load {loaded - start:.1f} s + build {end - loaded:.1f} s"
            f" = {end - start:.1f} s; {hits} steps from the cache; B/A {(end - start) / uncached:.2f};"
            f" load {load_average()}",
            flush=True,
        )
    clean()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
