#!/usr/bin/python3
"""streamlit-swarm-edge: keeps the edge's upstreams of swarm apps equal to their running tasks.

The logic is `_swarm_edge.Watcher` (installed beside this file under lib/); this file only gives it the
Docker SDK (Debian's python3-docker) on the manager's socket, the checked nginx switch and a clock.

    streamlit_swarm_edge.py --config FILE check-config | once | run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))

from ansible_collections.secure_streamlit.hosting.plugins.module_utils import _settings_file
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._nginx_upstream import Edge
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_edge import (
    SwarmEdgeError,
    WatchConfig,
    Watcher,
    parse_config,
)

# Events that may move a task: a service changed, a node went down or up, a local container stopped.
EVENT_TYPES = ["service", "node", "container"]


class DockerSwarm:
    """The manager's engine through the Docker SDK; its errors become RuntimeError for the watcher's backoff."""

    def __init__(self, socket: str = "unix:///run/docker.sock") -> None:
        import docker

        self._errors = (docker.errors.DockerException,)
        self.api = docker.APIClient(base_url=socket, timeout=60)

    def _call(self, fn, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._errors as error:
            raise RuntimeError(str(error)) from error

    def tasks(self, service: str) -> list[Mapping[str, Any]]:
        return self._call(self.api.tasks, filters={"service": service, "desired-state": "running"})

    def nodes(self) -> list[Mapping[str, Any]]:
        return self._call(self.api.nodes)

    def wait_for_change(self, timeout: float) -> None:
        now = time.time()
        stream = self._call(
            self.api.events, since=int(now), until=int(now + timeout), filters={"type": EVENT_TYPES}, decode=True
        )
        try:
            for _event in stream:
                return
        finally:
            stream.close()


class Clock:
    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds)


def log(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("command", choices=["check-config", "once", "run"])
    args = parser.parse_args(argv)
    try:
        # Root rewrites nginx's upstreams from it: nobody else may have been able to write it.
        config: WatchConfig = parse_config(_settings_file.read_json_object(args.config))
    except _settings_file.SettingsFileError as error:
        print(f"streamlit-swarm-edge: {error}", file=sys.stderr)
        return 2
    except (OSError, SwarmEdgeError) as error:
        print(f"streamlit-swarm-edge: {args.config}: {error}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        return 0
    edge = Edge(upstream_dir=Path(config.upstream_dir))
    watcher = Watcher(config, DockerSwarm(), edge, Clock(), log)
    if args.command == "once":
        watcher.sync()
        return 0
    watcher.run(lambda: False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
