"""The edge in front of a swarm: one app's upstream over its tasks, sticky by a cookie the edge sets, kept in
step with the tasks by a watcher.

Why the edge balances itself: the hosts' kernel has no IPVS, so the swarm's routing mesh and virtual IPs do
not work; services run with `--endpoint-mode dnsrr` and nginx balances to the tasks' own addresses.

Why sticky: Streamlit keeps a session's state (and its media) in one process, so every request and the
websocket of one browser must reach one replica. The key is a cookie that **nginx** sets (the app's code
is untrusted and never chooses it): when a request has no valid cookie, nginx sets one to its
`$request_id` (32 random hex digits) and hashes that same `$request_id` for this first request, so the
first request and the rest land on one replica. `hash` (not `hash ... consistent`): the plain variant kept
each cookie on one replica in the probe of issue 23, the consistent one did not.

Why a watcher and not nginx's resolver: Debian 12's nginx (1.22) re-resolves names only in `proxy_pass`
with a variable, which bypasses the `upstream` block and its `hash`; `server ... resolve` in an upstream is
in nginx Plus and in open-source nginx only from 1.27.3. So a program follows the swarm (the manager's
events plus a periodic full resync) and re-renders the upstreams; unchanged task sets render identical
bytes, which `_nginx_upstream.Edge.install` leaves alone (no reload).

Standard library only: it runs on hosts with plain python3 (the Docker client is the entry point's).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import NAME_RE
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._nginx_upstream import (
    HEADER,
    UpstreamError,
    upstream_name,
)

COOKIE = "streamlit_edge_replica"
KEY_VARIABLE = "$streamlit_edge_replica_key"
SET_COOKIE_VARIABLE = "$streamlit_edge_replica_set_cookie"
# What nginx's $request_id looks like; any other cookie value is replaced, so a client cannot pin itself
# with an odd value (it can only pick a replica, which any valid value also does).
COOKIE_VALUE_RE = "^[0-9a-f]{32}$"
SERVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
NETWORK_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
RESYNC_MIN, RESYNC_MAX = 2.0, 3600.0
BACKOFF_MIN, BACKOFF_MAX = 1.0, 60.0


class SwarmEdgeError(ValueError):
    """Bad input: nothing was changed."""


@dataclass(frozen=True, order=True)
class Endpoint:
    """One task as the edge reaches it: an IP address (v4 or v6, canonical form) and a port."""

    address: str
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not isinstance(self.port, int) or isinstance(self.port, bool):
            raise SwarmEdgeError(f"not an address and a port: {self.address!r}, {self.port!r}")
        try:
            parsed = ipaddress.ip_address(self.address)
        except ValueError:
            raise SwarmEdgeError(f"not an IP address: {self.address[:60]!r}") from None
        # Whole string, canonical: no zone ids, no leading zeros, nothing nginx could read differently.
        if str(parsed) != self.address or getattr(parsed, "scope_id", None):
            raise SwarmEdgeError(f"not an IP address in canonical form: {self.address[:60]!r}")
        if not 1 <= self.port <= 65535:
            raise SwarmEdgeError(f"not a port: {self.port!r}")

    def sort_key(self) -> tuple[int, int, int]:
        parsed = ipaddress.ip_address(self.address)
        return (parsed.version, int(parsed), self.port)

    def server(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


def endpoints(pairs: Iterable[tuple[str, int] | Endpoint]) -> list[Endpoint]:
    """Validated, deduplicated and sorted: the same set always gives the same list (and the same bytes)."""
    found = {pair if isinstance(pair, Endpoint) else Endpoint(*pair) for pair in pairs}
    return sorted(found, key=Endpoint.sort_key)


def render_upstream(app: str, tasks: Iterable[tuple[str, int] | Endpoint]) -> str:
    """The include `<upstream_dir>/<app>.conf` for an app served by these tasks; refuses an empty set."""
    if not isinstance(app, str) or not NAME_RE.fullmatch(app):
        raise SwarmEdgeError(f"not an app name: {str(app)[:60]!r}")
    servers = endpoints(tasks)
    if not servers:
        raise SwarmEdgeError(f"{app}: no task to balance to")
    lines = "".join(f"    server {endpoint.server()};\n" for endpoint in servers)
    return (
        f"{HEADER}# Tasks of a swarm service, sticky by the edge's cookie {COOKIE} (streamlit-swarm-edge).\n"
        f"upstream {upstream_name(app)} {{\n    hash {KEY_VARIABLE};\n{lines}}}\n"
    )


def http_conf() -> str:
    """The http-level part (the tls role's conf.d): the hash key and the Set-Cookie value.

    A valid cookie is the key. Without one, the key is this request's $request_id, and the same value is
    set as the cookie, so the browser's next requests hash the same way."""
    return (
        f"{HEADER}"
        f"map $cookie_{COOKIE} {KEY_VARIABLE} {{\n"
        f'    "~{COOKIE_VALUE_RE}" $cookie_{COOKIE};\n'
        "    default $request_id;\n"
        "}\n"
        f"map $cookie_{COOKIE} {SET_COOKIE_VARIABLE} {{\n"
        f'    "~{COOKIE_VALUE_RE}" "";\n'
        f'    default "{COOKIE}=$request_id; Path=/; Secure; HttpOnly; SameSite=Lax";\n'
        "}\n"
    )


def location_conf() -> str:
    """The location-level part, included in each swarm app's locations beside the other add_header lines
    (an add_header in a location replaces the inherited ones, so it must sit with them). An empty value
    adds no header: the cookie is set only when the request had none."""
    return f"{HEADER}add_header Set-Cookie {SET_COOKIE_VARIABLE} always;\n"


# The swarm as the Docker API shows it (GET /tasks, GET /nodes); parsed here so the fake client of the tests
# and the Docker SDK of the entry point give the same dicts.


@dataclass(frozen=True)
class AppTarget:
    """How one app's tasks are reached: on an attachable overlay `network` at the container's `port`, or
    (network None) on the host-mode port the engine published for the container's `port`."""

    name: str
    service: str
    port: int
    network: str | None = None


def _running(task: Mapping[str, Any]) -> bool:
    status = task.get("Status")
    return task.get("DesiredState") == "running" and isinstance(status, Mapping) and status.get("State") == "running"


def endpoints_from_tasks(
    target: AppTarget, tasks: Sequence[Mapping[str, Any]], nodes: Sequence[Mapping[str, Any]]
) -> list[Endpoint]:
    """The running tasks' endpoints. Tasks without a usable address are left out (they are starting or
    leaving); anything malformed in the engine's answer raises SwarmEdgeError."""
    node_addr: dict[str, str] = {}
    for node in nodes:
        status = node.get("Status")
        if isinstance(node.get("ID"), str) and isinstance(status, Mapping) and isinstance(status.get("Addr"), str):
            node_addr[node["ID"]] = status["Addr"]
    found: list[Endpoint] = []
    for task in tasks:
        if not _running(task):
            continue
        if target.network is not None:
            for attachment in task.get("NetworksAttachments") or []:
                spec = (attachment.get("Network") or {}).get("Spec") or {}
                if spec.get("Name") != target.network:
                    continue
                for cidr in attachment.get("Addresses") or []:
                    address = str(cidr).split("/", 1)[0]
                    found.append(Endpoint(address, target.port))
            continue
        ports = ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or []
        address = node_addr.get(str(task.get("NodeID")))
        if address is None:
            continue
        for port in ports:
            if port.get("PublishMode") == "host" and port.get("TargetPort") == target.port:
                found.append(Endpoint(address, port.get("PublishedPort")))
    return endpoints(found)


_CONFIG_KEYS = {"apps", "resync_seconds", "upstream_dir"}
_APP_KEYS = {"name", "service", "port", "network"}


@dataclass(frozen=True)
class WatchConfig:
    apps: tuple[AppTarget, ...]
    resync_seconds: float = 30.0
    upstream_dir: str = "/etc/nginx/streamlit-upstreams"


def parse_config(data: object) -> WatchConfig:
    """The watcher's JSON configuration (written by the tls role); unknown keys are refused."""
    if not isinstance(data, Mapping):
        raise SwarmEdgeError("the configuration must be a mapping")
    unknown = set(data) - _CONFIG_KEYS
    if unknown:
        raise SwarmEdgeError(f"unknown keys: {', '.join(sorted(map(str, unknown)))}")
    raw_apps = data.get("apps")
    if not isinstance(raw_apps, list):
        raise SwarmEdgeError("apps: must be a list")
    apps: list[AppTarget] = []
    for index, raw in enumerate(raw_apps):
        label = f"apps[{index}]"
        if not isinstance(raw, Mapping):
            raise SwarmEdgeError(f"{label}: must be a mapping")
        label = f"apps[{index}] (name {raw.get('name')!r})"
        unknown = set(raw) - _APP_KEYS
        if unknown:
            raise SwarmEdgeError(f"{label}: unknown keys: {', '.join(sorted(map(str, unknown)))}")
        name, service, port, network = raw.get("name"), raw.get("service"), raw.get("port"), raw.get("network")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise SwarmEdgeError(f"{label}: name: not an app name")
        if not isinstance(service, str) or not SERVICE_RE.fullmatch(service):
            raise SwarmEdgeError(f"{label}: service: not a service name")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise SwarmEdgeError(f"{label}: port: not a port")
        if network is not None and (not isinstance(network, str) or not NETWORK_RE.fullmatch(network)):
            raise SwarmEdgeError(f"{label}: network: not a network name")
        if name in {app.name for app in apps}:
            raise SwarmEdgeError(f"{label}: name: listed twice")
        apps.append(AppTarget(name, service, port, network))
    resync = data.get("resync_seconds", 30)
    if not isinstance(resync, (int, float)) or isinstance(resync, bool) or not RESYNC_MIN <= resync <= RESYNC_MAX:
        raise SwarmEdgeError(f"resync_seconds: a number from {RESYNC_MIN:g} to {RESYNC_MAX:g}")
    upstream_dir = data.get("upstream_dir", WatchConfig.upstream_dir)
    if not isinstance(upstream_dir, str) or not re.fullmatch(r"/[A-Za-z0-9_./-]{1,200}", upstream_dir):
        raise SwarmEdgeError("upstream_dir: an absolute path")
    return WatchConfig(tuple(apps), float(resync), upstream_dir)


def load_config(text: str) -> WatchConfig:
    try:
        return parse_config(json.loads(text))
    except json.JSONDecodeError as error:
        raise SwarmEdgeError(f"not JSON: {error}") from None


class SwarmClient(Protocol):
    """What the watcher needs of a swarm manager's engine (the Docker SDK in the entry point)."""

    def tasks(self, service: str) -> list[Mapping[str, Any]]: ...

    def nodes(self) -> list[Mapping[str, Any]]: ...

    def wait_for_change(self, timeout: float) -> None:
        """Return at the first event that may move a task (service, node, container), or after `timeout`."""


class EdgeSwitch(Protocol):
    def install(self, app: str, text: str, *, reload: bool = True) -> bool: ...


class Clock(Protocol):
    def sleep(self, seconds: float) -> None: ...


@dataclass
class Watcher:
    """Keeps each app's upstream equal to its running tasks: a full sync after every event and at least
    every `resync_seconds`; engine errors back off (1 s doubling to 60 s) and never touch the upstreams."""

    config: WatchConfig
    client: SwarmClient
    edge: EdgeSwitch
    clock: Clock
    log: Callable[[dict[str, Any]], None]
    backoff: float = field(default=BACKOFF_MIN)

    def sync(self) -> list[str]:
        """One full pass; returns the apps whose upstream changed (each one reloaded nginx)."""
        nodes = self.client.nodes()
        changed: list[str] = []
        for app in self.config.apps:
            try:
                found = endpoints_from_tasks(app, self.client.tasks(app.service), nodes)
            except SwarmEdgeError as error:
                self.log({"event": "swarm_edge_bad_task", "app": app.name, "error": str(error)})
                continue
            if not found:
                # An empty upstream fails nginx -t; the old addresses are the best guess until tasks return.
                self.log({"event": "swarm_edge_no_task", "app": app.name, "service": app.service})
                continue
            try:
                if self.edge.install(app.name, render_upstream(app.name, found)):
                    changed.append(app.name)
                    self.log({"event": "swarm_edge_switched", "app": app.name, "servers": [e.server() for e in found]})
            except UpstreamError as error:
                self.log({"event": "swarm_edge_switch_failed", "app": app.name, "error": str(error)})
        return changed

    def step(self) -> None:
        """A sync, then a wait for an event or the resync period; on an engine error, the backoff instead."""
        try:
            self.sync()
            self.backoff = BACKOFF_MIN
            self.client.wait_for_change(self.config.resync_seconds)
        except (OSError, RuntimeError) as error:  # the client raises these (the entry point wraps the SDK's)
            self.log({"event": "swarm_edge_engine_error", "error": str(error)[-300:], "retry_in": self.backoff})
            self.clock.sleep(self.backoff)
            self.backoff = min(BACKOFF_MAX, self.backoff * 2)

    def run(self, stop: Callable[[], bool]) -> None:
        while not stop():
            self.step()
