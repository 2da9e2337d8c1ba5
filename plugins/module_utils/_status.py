"""The operator's view of a host: what serves where, is it healthy, what happened, is the trail intact.

One report (a JSON document, schema `secure-streamlit-status/1`, docs/status.md) gathered from the files
the other parts already keep -- nothing is asked twice and nothing here writes to them:

| part | read from |
| --- | --- |
| per app: serving SHA and since when, SHAs marked failed and why | the deploy engine's `<state_dir>/<app>/state.json` |
| per app: the last deploys (who asked, duration, outcome) | the deploy audit log (`deploys.log`) |
| per app: container state and health, limits | the Docker engine (injectable: `ContainerProbe`) |
| per replicated app: desired and running tasks; each task's node, state, port | a swarm manager (`ServiceProbe`) |
| per app: the pending request | the monitor's spool `requests/<app>.json` and its state |
| the monitor: last poll, API budget left, interval | the monitor's state and configuration, its audit log |
| certificates and their expiry | the edge's PEM files (`cryptography`) |
| disk | the hardening role's findings file, free space now (statvfs) |
| both audit chains | `_audit_log.verify_log` |

`collect()` needs root (state.json, the logs, the Docker socket); the host's command runs it from a root
timer and writes the report where an admin group may read it (roles/status). The verdict is `attention`
when something needs a person: an app not serving or unhealthy, its last deploy failed, a certificate
within `renew_before_days` of expiry, a broken chain, a monitor that stopped polling, a disk nearly full.

Standard library and `cryptography` only; the clock, the container probe and the settings are injected.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import NAME_RE, SHA_RE
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._audit_log import HASH_RE, verify_log
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._quota import usage_bytes

SCHEMA = "secure-streamlit-status/1"
LABEL_APP = "secure_streamlit.app"  # the deploy engine's container label (_deploy.LABEL_APP)
LABEL_SHA = "secure_streamlit.sha"
SERVICE_PREFIX = "app-"  # a replicated app's swarm service (_swarm_backend.SERVICE_PREFIX)
# Task states after which a task never runs again (docker/swarmkit api.TaskState), and those of them that
# are a failure: the swarm's own restarts (an exit, a failed health check) leave them in the slot's history.
TASK_ENDED = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})
TASK_FAILED = frozenset({"failed", "rejected"})
MAX_TASK_TEXT = 300
MAX_STATE_BYTES = 1 << 20
WINDOW = 3600.0
# The monitor's budgets (github_repo_monitor.py): 90 % of GitHub's hourly limit, with and without a token.
MONITOR_BUDGET = {"token": 4500, "anonymous": 54}
DEPLOY_EVENTS = ("deploy_deployed", "deploy_failed")
TAIL_BLOCK = 65536
# Backups run daily and the check weekly (roles/backup): a success older than this needs a person.
BACKUP_MAX_AGE = {"backup": 36 * 3600, "check": 8 * 86400}


# -- settings ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StatusSettings:
    """Where the parts keep what the report reads (roles/status writes them from the roles' variables)."""

    apps: tuple[str, ...] = ()
    state_dir: str = "/var/lib/streamlit-apps"
    audit_log: str = "/var/log/streamlit/deploys.log"
    spool_dir: str = "/var/spool/github-repo-monitor"
    monitor_config: str = "/etc/github-repo-monitor/config.json"
    monitor_state: str = "/var/lib/github-repo-monitor/state.json"
    monitor_audit_log: str = "/var/log/github-repo-monitor/audit.jsonl"
    monitor_token_file: str = "/etc/github-repo-monitor/credentials/github-token"  # noqa: S105 (a path)
    edge_certificate: str = "/etc/streamlit-edge/tls/server.crt"
    internal_ca_certificate: str = "/etc/streamlit-edge/ca/ca.crt"
    client_ca_certificate: str = "/etc/streamlit-edge/tls/client-ca.crt"
    client_certificate_dir: str = "/etc/streamlit-edge/clients"
    renew_before_days: int = 30
    findings_file: str = "/var/log/secure-streamlit/findings.json"
    min_free_percent: float = 10.0
    deploys_shown: int = 5
    # The monitor counts as stopped when its last poll is older than this many effective intervals.
    monitor_stale_intervals: int = 5
    # roles/backup's state file (_backup.py); empty: this host has no backups configured.
    backup_state: str = ""
    # Private repositories: each deploy key's public half (the operator adds it to the repository).
    repo_auth_dir: str = "/etc/streamlit-apps/repo-auth"
    # The apps' data directories (<dir>/<app>): their usage against the size in <state_dir>/<app>/quota.json.
    apps_data_dir: str = "/srv/streamlit/apps"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> StatusSettings:
        """Every key known and of its type; app names by the app model's rule. ValueError names the key."""
        if not isinstance(values, Mapping):
            raise ValueError("the status settings must be a mapping")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown status settings: {', '.join(map(str, unknown))}")
        defaults = cls()
        converted: dict[str, Any] = {}
        for name, value in values.items():
            default = getattr(defaults, name)
            if name == "apps":
                if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                    raise ValueError("apps must be a list of app names")
                for index, app in enumerate(value):
                    if not NAME_RE.fullmatch(app):
                        raise ValueError(f"apps[{index}] ({app!r}) is not an app name")
                converted[name] = tuple(value)
            elif isinstance(default, bool) or isinstance(value, bool):
                raise ValueError(f"{name} must be a {type(default).__name__}")
            elif isinstance(default, int | float):
                if not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{name} must be a number of at least 0")
                if isinstance(default, int) and value != int(value):
                    raise ValueError(f"{name} must be a whole number")
                converted[name] = type(default)(value)
            else:
                if not isinstance(value, str) or (value and not value.startswith("/")):
                    raise ValueError(f"{name} must be an absolute path (or empty: not on this host)")
                converted[name] = value
        return cls(**converted)


# -- the container engine, injectable ----------------------------------------------------------------------
class ContainerProbe(Protocol):
    def containers(self, app: str) -> list[dict[str, Any]]:
        """The app's containers: name, status, health, restarts, sha, started_at, cpus, memory_bytes."""


class DockerProbe:
    """The containers of each app as the Docker engine sees them (the Docker SDK's low-level API: one
    inspect per container, no stats stream)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def containers(self, app: str) -> list[dict[str, Any]]:
        found = self.client.containers.list(all=True, filters={"label": f"{LABEL_APP}={app}"})
        return [container_info(c.attrs) for c in found]


class ServiceProbe(Protocol):
    def service(self, app: str) -> dict[str, Any] | None:
        """The app's swarm service as `service_info` shapes it; None when the app has no service here."""


class SwarmProbe:
    """A replicated app's swarm service as a manager of the swarm sees it (docker-py's low-level API: the
    service, its tasks, the node list for the names). On an engine that is no manager, every app has none."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def service(self, app: str) -> dict[str, Any] | None:
        name = SERVICE_PREFIX + app
        try:
            found = self.client.api.services(filters={"name": name})
        except Exception as exc:  # docker.errors.APIError 503: "This node is not a swarm manager"
            if getattr(exc, "status_code", None) == 503:
                return None
            raise
        service = next((s for s in found if (s.get("Spec") or {}).get("Name") == name), None)
        if service is None:
            return None
        tasks = self.client.api.tasks(filters={"service": service["ID"]})
        return service_info(service, tasks, self.client.api.nodes())


def _docker_time(text: Any) -> str | None:
    """An engine timestamp (RFC 3339 with nanoseconds) as the report's ISO seconds, None when it is none."""
    if not isinstance(text, str) or text.startswith("0001-"):
        return None
    moment = _parse_time(re.sub(r"\.[0-9]+", "", text))
    return _iso(moment) if moment is not None else None


def _task_text(value: Any) -> str:
    return " ".join(str(value or "").split())[:MAX_TASK_TEXT]


def service_info(
    service: Mapping[str, Any], tasks: Iterable[Mapping[str, Any]], nodes: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """What the report keeps of a service: its desired and running tasks, and per slot the task meant to
    run (else the newest): node by name, the node's availability and state, the task's state, message and
    error, its commit, its published host port, since when; how many of the slot's tasks the swarm kept in
    its history failed (its restarts: a task whose health check fails is killed and replaced). No
    environment, no secret, no command line."""
    spec = service.get("Spec") or {}
    labels = spec.get("Labels") or {}
    commit = str(labels.get(LABEL_SHA, ""))
    desired = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas")
    by_id = {
        str(node.get("ID", "")): {
            "hostname": str((node.get("Description") or {}).get("Hostname", "")),
            "availability": str((node.get("Spec") or {}).get("Availability", "")),
            "state": str((node.get("Status") or {}).get("State", "")),
        }
        for node in nodes
    }
    slots: dict[str, list[Mapping[str, Any]]] = {}
    for task in tasks:
        key = str(task.get("Slot") or task.get("NodeID") or task.get("ID", ""))  # global services: per node
        slots.setdefault(key, []).append(task)
    replicas = []
    for history in slots.values():
        history.sort(key=lambda t: str(t.get("Status", {}).get("Timestamp") or t.get("CreatedAt") or ""))
        current = [t for t in history if t.get("DesiredState") == "running"]
        if not current:
            continue  # a slot scaled away or a task being stopped: not one of the service's replicas now
        task = current[-1]
        replicas.append(_replica(task, history, by_id))
    replicas.sort(key=lambda r: (r["slot"] if isinstance(r["slot"], int) else 1 << 30, r["node"]))
    running = [r for r in replicas if r["state"] == "running"]
    update = service.get("UpdateStatus") or {}
    return {
        "service": str(spec.get("Name", "")),
        "sha": commit,
        "desired": int(desired) if _number(desired) else len(replicas),
        "running": len(running),
        "running_at_sha": sum(1 for r in running if r["sha"] == commit),
        "update": {"state": str(update.get("State", "")), "message": _task_text(update.get("Message"))}
        if update
        else None,
        "tasks": replicas,
    }


def _replica(
    task: Mapping[str, Any], history: Sequence[Mapping[str, Any]], nodes: Mapping[str, Mapping[str, str]]
) -> dict[str, Any]:
    status = task.get("Status") or {}
    container_spec = (task.get("Spec") or {}).get("ContainerSpec") or {}
    node_id = str(task.get("NodeID") or "")
    node = nodes.get(node_id) or {}
    ports = [
        int(port["PublishedPort"])
        for port in (status.get("PortStatus") or {}).get("Ports") or []
        if port.get("PublishMode") == "host" and _number(port.get("PublishedPort"))
    ]
    failures = [t for t in history if (t.get("Status") or {}).get("State") in TASK_FAILED]
    last_error = next((_task_text(t["Status"].get("Err")) for t in reversed(failures) if t["Status"].get("Err")), "")
    slot = task.get("Slot")
    state = str(status.get("State", "unknown"))
    return {
        "slot": int(slot) if _number(slot) else None,
        "node": node.get("hostname") or ("-" if not node_id else f"unknown node {node_id[:12]}"),
        "node_availability": node.get("availability", ""),
        "node_state": node.get("state", ""),
        "state": state,
        # The swarm starts a task with a health check as `starting` and makes it `running` only once the
        # check passes; a check that fails later gets the task killed and replaced (counted in restarts).
        "healthy": state == "running",
        "message": _task_text(status.get("Message")),
        "error": _task_text(status.get("Err")),
        "sha": str((container_spec.get("Labels") or {}).get(LABEL_SHA, "")),
        "image": str(container_spec.get("Image", "")).split("@", 1)[0][:200],
        "port": ports[0] if ports else None,
        "since": _docker_time(status.get("Timestamp")),
        "restarts": len(failures),
        "last_error": last_error,
    }


def replicas_problem(info: Mapping[str, Any]) -> str:
    """Why a service needs a person ("" when it does not): fewer tasks than desired run its commit."""
    desired, at_sha = info.get("desired", 0), info.get("running_at_sha", 0)
    if at_sha >= desired:
        return ""
    problem = f"{at_sha} of {desired} replicas run {_short(info.get('sha'))}"
    update = info.get("update") or {}
    if update.get("state") in ("updating", "rollback_started"):
        problem += f" (the swarm's update is {update['state']})"
    for task in info.get("tasks", []):
        if task["state"] == "running" and task["sha"] == info.get("sha"):
            continue
        why = task["error"] or task["message"] or task["last_error"]
        where = f"on {task['node']}" if task["node"] != "-" else "on no node"
        detail = f"{task['state']}{f': {why}' if why else ''}"
        if task["state"] == "running":
            detail = f"running {_short(task['sha'])}"
        problem += f"; slot {task['slot'] if task['slot'] is not None else '-'} {where}: {detail}"
    return problem[:1000]


def container_info(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """What the report keeps of `docker inspect`: no environment, no mounts, no command line."""
    state = attrs.get("State") or {}
    config = attrs.get("Config") or {}
    host = attrs.get("HostConfig") or {}
    health = (state.get("Health") or {}).get("Status") or "none"
    nano = host.get("NanoCpus") or 0
    return {
        "name": str(attrs.get("Name", "")).lstrip("/"),
        "status": state.get("Status") or "unknown",
        "health": health,
        "restarts": int(attrs.get("RestartCount") or 0),
        "exit_code": state.get("ExitCode"),
        "started_at": state.get("StartedAt") or "",
        "sha": (config.get("Labels") or {}).get(LABEL_SHA, ""),
        "cpus": round(nano / 1e9, 2) if nano else None,
        "memory_bytes": host.get("Memory") or None,
        "pids_limit": host.get("PidsLimit") or None,
    }


# -- reading what the other parts keep ---------------------------------------------------------------------
def read_json_file(path: Path, limit: int = MAX_STATE_BYTES) -> Any:
    """A JSON document from a regular file, never through a link; None when absent or not JSON."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        raw = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(raw) > limit:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def deploy_history(path: Path, apps: Iterable[str], keep: int) -> dict[str, list[dict[str, Any]]]:
    """The last `keep` deploy records per app from the current deploy log, newest first.

    Read backwards from the end until every app has its `keep` records (an app that has fewer reads the
    whole file); the rotated files are not needed for the last few deploys of an app that deployed this
    month."""
    found: dict[str, list[dict[str, Any]]] = {app: [] for app in apps}
    short = set(found) if keep > 0 else set()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return found
    try:
        position = os.fstat(fd).st_size
        partial = b""  # the start of a line whose beginning is in the next block back
        while position > 0 and short:
            step = min(TAIL_BLOCK, position)
            position -= step
            lines = (os.pread(fd, step, position) + partial).split(b"\n")
            partial = lines.pop(0) if position > 0 else b""
            for line in reversed(lines):
                _take(line, found, short, keep)
                if not short:
                    break
    finally:
        os.close(fd)
    return found


def _take(line: bytes, found: dict[str, list[dict[str, Any]]], short: set[str], keep: int) -> None:
    """One line read backwards: kept when it is a deploy of an app that still has fewer than `keep`."""
    if b'"deploy_' not in line:
        return
    try:
        record = json.loads(line)
    except ValueError:
        return
    if not isinstance(record, dict) or record.get("event") not in DEPLOY_EVENTS or record.get("app") not in short:
        return
    entries = found[record["app"]]
    entries.append(_deploy_entry(record))
    if len(entries) >= keep:
        short.discard(record["app"])


def _deploy_entry(record: Mapping[str, Any]) -> dict[str, Any]:
    """One deploy as the report shows it: no output tail (container output may hold patient data)."""
    seconds = record.get("seconds")
    return {
        "time": str(record.get("ts", "")),
        "sha": str(record.get("sha", "")),
        "outcome": str(record.get("outcome") or record.get("status") or ""),
        "requested_by": str(record.get("requested_by", "")),
        "seconds": seconds if isinstance(seconds, int | float) and not isinstance(seconds, bool) else None,
        "step": str(record.get("step", "")),
        "reason": str(record.get("reason", ""))[:500],
        "seq": record.get("seq"),
    }


def last_event(path: Path, event: str) -> dict[str, Any] | None:
    """The last record of one kind in a JSON-lines log (the monitor's `interval_adjusted`)."""
    needle = f'"event": "{event}"'.encode()
    found = None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        for line in handle:
            if needle in line:
                found = line
    if found is None:
        return None
    with contextlib.suppress(ValueError):
        record = json.loads(found)
        return record if isinstance(record, dict) else None
    return None


# -- certificates ------------------------------------------------------------------------------------------
def certificate_entry(kind: str, path: Path, now: float, renew_before_days: int) -> dict[str, Any] | None:
    """One PEM certificate (the first of the file): subject, issuer, expiry, days left; None when absent."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    data = None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"kind": kind, "path": str(path), "status": "unreadable", "error": exc.strerror or str(exc)}
    try:
        data = os.read(fd, 1 << 20)
    finally:
        os.close(fd)
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        return {"kind": kind, "path": str(path), "status": "unreadable", "error": str(exc)[:200]}

    def name(value: x509.Name) -> str:
        common = value.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(common[0].value) if common else value.rfc4514_string()

    not_after = _utc(cert, "not_valid_after")
    days_left = (not_after - now) / 86400
    if days_left <= 0:
        status = "expired"
    elif days_left < renew_before_days:
        status = "expiring"
    else:
        status = "ok"
    return {
        "kind": kind,
        "path": str(path),
        "subject": name(cert.subject),
        "issuer": name(cert.issuer),
        "serial": format(cert.serial_number, "x"),
        "not_before": _iso(_utc(cert, "not_valid_before")),
        "not_after": _iso(not_after),
        "days_left": round(days_left, 1),
        "status": status,
    }


def _utc(cert: Any, name: str) -> float:
    """A validity bound as a timestamp: `*_utc` since cryptography 42, naive UTC before (Debian 12 has 38)."""
    aware = getattr(cert, f"{name}_utc", None)
    if aware is not None:
        return float(aware.timestamp())
    return float(getattr(cert, name).replace(tzinfo=UTC).timestamp())


# -- the report --------------------------------------------------------------------------------------------
class Collector:
    """Gathers the report. Every collaborator is injected: the settings, the clock, the container probe
    (None: the engine is not asked), the swarm's service probe (None: no app is asked for its replicas),
    the host name and free-space reader."""

    def __init__(
        self,
        settings: StatusSettings,
        *,
        clock: Callable[[], float],
        probe: ContainerProbe | None,
        swarm: ServiceProbe | None = None,
        hostname: Callable[[], str] = socket.gethostname,
        statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.probe = probe
        self.swarm = swarm
        self.hostname = hostname
        self.statvfs = statvfs
        self._engine_error: str | None = None

    def collect(self) -> dict[str, Any]:
        now = self.clock()
        settings = self.settings
        self._engine_error = None
        monitor_config = _mapping(read_json_file(Path(settings.monitor_config)))
        monitor_state = _mapping(read_json_file(Path(settings.monitor_state)))
        history = deploy_history(Path(settings.audit_log), settings.apps, settings.deploys_shown)
        apps = [self.app(name, now, history.get(name, []), monitor_state) for name in settings.apps]
        monitor = self.monitor(now, monitor_config, monitor_state)
        certificates = self.certificates(now)
        disk = self.disk(now)
        audit = self.audit(monitor_state)
        backup = self.backup(now) if settings.backup_state else None
        engine = {"asked": self.probe is not None, "error": self._engine_error}
        attention = engine_attention(engine)
        for app in apps:
            attention += [f"app {app['name']}: {problem}" for problem in app["attention"]]
        attention += [f"monitor: {problem}" for problem in monitor.get("attention", [])]
        for cert in certificates:
            if cert["status"] != "ok":
                attention.append(
                    f"certificate {cert['kind']} {cert.get('subject', cert['path'])}: {cert_problem(cert)}"
                )
        attention += [f"disk: {problem}" for problem in disk["attention"]]
        for name, verdict in audit.items():
            if not verdict["ok"]:
                attention.append(f"audit chain {name}: {verdict['message']}")
        attention += [f"backup: {problem}" for problem in (backup or {}).get("attention", [])]
        return {
            "schema": SCHEMA,
            "generated_at": _iso(now),
            "host": self.hostname(),
            "verdict": "attention" if attention else "ok",
            "attention": attention,
            "engine": engine,
            "apps": apps,
            "monitor": monitor,
            "certificates": certificates,
            "disk": disk,
            "audit": audit,
            "backup": backup,
        }

    # -- backups (roles/backup)
    def backup(self, now: float) -> dict[str, Any]:
        """The last backup and check as the backup command recorded them; a failure or a stale success
        needs a person."""
        state = _mapping(read_json_file(Path(self.settings.backup_state)))
        found: dict[str, Any] = {"attention": []}
        for kind in ("backup", "check"):
            entry = _mapping(state.get(kind))
            last_success = entry.get("last_success")
            found[kind] = {
                "ok": entry.get("ok") is True,
                "finished": _iso(entry["finished"]) if _number(entry.get("finished")) else None,
                "last_success": _iso(last_success) if _number(last_success) else None,
                "error": str(entry.get("error") or "")[:400],
            }
            if not entry:
                found["attention"].append(f"no {kind} recorded in {self.settings.backup_state}")
                continue
            if entry.get("ok") is not True:
                found["attention"].append(f"the last {kind} failed: {found[kind]['error'] or 'no reason recorded'}")
            max_age = BACKUP_MAX_AGE[kind]
            if not _number(last_success) or now - last_success > max_age:
                found["attention"].append(f"no successful {kind} for more than {max_age // 3600:.0f} h")
        return found

    # -- one app
    def app(
        self, name: str, now: float, deploys: list[dict[str, Any]], monitor_state: Mapping[str, Any]
    ) -> dict[str, Any]:
        settings = self.settings
        state = _mapping(read_json_file(Path(settings.state_dir) / name / "state.json"))
        serving = _mapping(state.get("serving"))
        serving_entry = None
        if SHA_RE.fullmatch(str(serving.get("sha", ""))):
            serving_entry = {
                "sha": serving["sha"],
                "container": str(serving.get("container", "")),
                "since": str(serving.get("since", "")),
            }
        failed = [
            {
                "sha": sha,
                "reason": str(_mapping(entry).get("reason", ""))[:500],
                "at": str(_mapping(entry).get("at", "")),
            }
            for sha, entry in _mapping(state.get("failed")).items()
            if SHA_RE.fullmatch(str(sha))
        ]
        failed.sort(key=lambda entry: entry["at"], reverse=True)
        monitor_app = _mapping(_mapping(monitor_state.get("apps")).get(name))
        replicas = self.replicas(name)
        if replicas is None and serving_entry and serving_entry["container"] == SERVICE_PREFIX + name:
            replicas = self.missing_service(name)
        health = self.health(name, serving_entry) if replicas is None else self.service_health(name, replicas)
        pending = self.pending(name, monitor_app)
        attention: list[str] = []
        if serving_entry is None:
            attention.append("nothing serves: no deploy of it has succeeded")
        if health["problem"]:
            attention.append(health["problem"])
        if deploys and deploys[0]["outcome"] == "failed":
            last = deploys[0]
            attention.append(
                f"the last deploy ({last['sha'][:12] or 'no commit'}, {last['time']}) failed: {last['reason']}"
            )
        data = self.data(name)
        if data and data["usage_bytes"] > data["size_bytes"]:
            attention.append(
                f"its data uses {data['usage_bytes'] / (1 << 20):.1f} MiB, over its size of "
                f"{data['size_bytes'] / (1 << 20):.1f} MiB (not enforced: {data['reason'] or 'no reason recorded'})"
            )
        return {
            "name": name,
            "serving": serving_entry,
            "health": {k: v for k, v in health.items() if k != "problem"},
            "pending": pending,
            "failed": failed,
            "deploys": deploys,
            "monitor": {
                "last_checked": monitor_app.get("last_checked"),
                "last_seen_sha": monitor_app.get("last_seen_sha"),
                "last_error": monitor_app.get("last_error"),
            }
            if monitor_app
            else None,
            "attention": attention,
            "deploy_key": self.deploy_key(name),
            "data": data,
            # Only for an app that runs as a swarm service, on a manager: absent in reports before it.
            **({"replicas": replicas} if replicas is not None else {}),
        }

    # -- a replicated app (a swarm service)
    def replicas(self, name: str) -> dict[str, Any] | None:
        """The app's service as the swarm's manager sees it; None without a swarm probe or a service."""
        if self.swarm is None or self._engine_error is not None:
            return None
        try:
            return self.swarm.service(name)
        except Exception as exc:  # the engine down: said once for the host, as for the containers
            self._engine_error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            return None

    def missing_service(self, name: str) -> dict[str, Any] | None:
        """The deploy state names the app's service but the engine has none (or was not asked)."""
        if self.swarm is None or self._engine_error is not None:
            return None
        return {
            "service": SERVICE_PREFIX + name,
            "sha": "",
            "desired": 0,
            "running": 0,
            "running_at_sha": 0,
            "update": None,
            "tasks": [],
            "missing": True,
        }

    def service_health(self, name: str, replicas: Mapping[str, Any]) -> dict[str, Any]:
        """A service's health from its tasks: `healthy` when every desired task runs its commit."""
        if replicas.get("missing"):
            return {
                "state": "missing",
                "containers": [],
                "problem": f"the deploy state says its service {replicas['service']} serves, but this engine "
                "lists no such service (removed, or the engine is no swarm manager any more)",
            }
        problem = replicas_problem(replicas)
        state = "healthy" if not problem else "degraded" if replicas["running_at_sha"] else "down"
        return {"state": state, "containers": [], "problem": problem}

    def data(self, name: str) -> dict[str, Any] | None:
        """The app's data directory against its size (from what the play recorded), or None without a size."""
        quota = _mapping(read_json_file(Path(self.settings.state_dir) / name / "quota.json"))
        size = quota.get("size_bytes")
        if not self.settings.apps_data_dir or not _number(size) or isinstance(size, bool) or size <= 0:
            return None
        return {
            "size_bytes": int(size),
            "usage_bytes": usage_bytes(str(Path(self.settings.apps_data_dir) / name)),
            "enforced": quota.get("enforced") is True,
            "reason": str(quota.get("reason", ""))[:300],
        }

    def deploy_key(self, name: str) -> str | None:
        """The public half of the app's deploy key (one line of id_ed25519.pub), or None without one."""
        if not self.settings.repo_auth_dir:
            return None
        path = Path(self.settings.repo_auth_dir) / name / "id_ed25519.pub"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as handle:
            text = handle.read(1024).decode("ascii", "replace").strip()
        # A public key line only: never a private key, whatever lies there.
        return text if text.startswith("ssh-ed25519 ") and "PRIVATE" not in text and "\n" not in text else None

    def health(self, name: str, serving: Mapping[str, Any] | None) -> dict[str, Any]:
        if self.probe is None:
            return {"state": "not asked", "containers": [], "problem": ""}
        if self._engine_error is not None:  # said once for the host, not once per app
            return {"state": "unknown", "containers": [], "problem": ""}
        try:
            containers = self.probe.containers(name)
        except Exception as exc:  # the engine down, the socket refused: say so, never crash the report
            self._engine_error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            return {"state": "unknown", "containers": [], "problem": ""}
        wanted = serving.get("container") if serving else None
        chosen = next((c for c in containers if c["name"] == wanted), None)
        if chosen is None:
            running = [c for c in containers if c["status"] == "running"]
            chosen = running[0] if len(running) == 1 else None
        if chosen is None:
            problem = f"its container {wanted} is missing" if wanted else ""
            return {"state": "missing" if wanted else "none", "containers": containers, "problem": problem}
        problem = ""
        if chosen["status"] != "running":
            problem = f"its container {chosen['name']} is {chosen['status']} (exit code {chosen['exit_code']})"
        elif chosen["health"] == "unhealthy":
            problem = f"its container {chosen['name']} is unhealthy (Docker's health check fails)"
        state = chosen["status"] if chosen["status"] != "running" else chosen["health"]
        if state == "none":
            state = "running"
        return {"state": state, "container": chosen, "containers": containers, "problem": problem}

    def pending(self, name: str, monitor_app: Mapping[str, Any]) -> dict[str, Any] | None:
        """A request the deployer has not taken yet (the spool), else one the monitor waits an answer for."""
        path = Path(self.settings.spool_dir) / "requests" / f"{name}.json"
        request = _mapping(read_json_file(path, 4096))
        if SHA_RE.fullmatch(str(request.get("sha", ""))):
            with contextlib.suppress(OSError):
                return {"sha": request["sha"], "since": _iso(path.lstat().st_mtime), "where": "requests"}
        for key in ("handing_over", "last_requested_sha"):
            sha = monitor_app.get(key)
            if isinstance(sha, str) and SHA_RE.fullmatch(sha):
                return {"sha": sha, "since": None, "where": "deploying"}
        return None

    # -- the monitor
    def monitor(self, now: float, config: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
        if not config:
            return {"installed": False}
        pacing = _mapping(state.get("pacing"))
        token = bool(self.settings.monitor_token_file) and os.path.lexists(self.settings.monitor_token_file)
        mode = "token" if token else "anonymous"
        spent = _mapping(pacing.get("spent")).get(mode)
        recent = [t for t in (spent if isinstance(spent, list) else []) if _number(t) and now - WINDOW < t <= now + 60]
        budget = MONITOR_BUDGET[mode]
        interval = config.get("interval") if _number(config.get("interval")) else None
        adjusted = last_event(Path(self.settings.monitor_audit_log), "interval_adjusted") or {}
        effective = adjusted.get("interval") if _number(adjusted.get("interval")) else interval
        last_poll = pacing.get("last_poll") if _number(pacing.get("last_poll")) else None
        not_before = pacing.get("not_before") if _number(pacing.get("not_before")) else None
        attention: list[str] = []
        if last_poll is None:
            attention.append("it has not polled yet")
        elif effective:
            limit = max(float(effective), 1.0) * self.settings.monitor_stale_intervals + 60
            if now - last_poll > limit:
                attention.append(
                    f"its last poll was {int(now - last_poll)} s ago (more than {int(limit)} s): "
                    "is the service running?"
                )
        return {
            "installed": True,
            "last_poll": _iso(last_poll) if last_poll is not None else None,
            "seconds_since_poll": round(now - last_poll, 1) if last_poll is not None else None,
            "interval": interval,
            "effective_interval": effective,
            "mode": mode,
            "budget_per_hour": budget,
            "budget_left": max(budget - len(recent), 0),
            "waiting_until": _iso(not_before) if not_before and not_before > now else None,
            "attention": attention,
        }

    # -- certificates
    def certificates(self, now: float) -> list[dict[str, Any]]:
        settings = self.settings
        candidates: list[tuple[str, Path]] = [
            (kind, Path(path))
            for kind, path in (
                ("edge", settings.edge_certificate),
                ("internal_ca", settings.internal_ca_certificate),
                ("client_ca", settings.client_ca_certificate),
            )
            if path
        ]
        if settings.client_certificate_dir:
            with contextlib.suppress(OSError):
                directory = Path(settings.client_certificate_dir)
                candidates += [("client", p) for p in sorted(directory.glob("*.crt")) if not p.is_symlink()]
        found = [certificate_entry(kind, path, now, settings.renew_before_days) for kind, path in candidates]
        return [entry for entry in found if entry is not None]

    # -- disk
    def disk(self, now: float) -> dict[str, Any]:
        document = _mapping(read_json_file(Path(self.settings.findings_file))) if self.settings.findings_file else {}
        findings = document.get("findings")
        checked = document.get("checked_paths")
        recorded = [f for f in findings if isinstance(f, dict)] if isinstance(findings, list) else []
        paths = [p for p in checked if isinstance(p, str) and p.startswith("/")] if isinstance(checked, list) else []
        free: list[dict[str, Any]] = []
        attention: list[str] = []
        for path in paths:
            looked_at = path
            while not os.path.exists(looked_at) and looked_at != "/":
                looked_at = os.path.dirname(looked_at)
            try:
                info = self.statvfs(looked_at)
            except OSError:
                continue
            size = info.f_blocks * info.f_frsize
            percent = round(100.0 * info.f_bavail * info.f_frsize / size, 1) if size else 0.0
            free.append({"path": path, "free_percent": percent})
            if percent < self.settings.min_free_percent:
                attention.append(f"{path} has {percent}% free (below {self.settings.min_free_percent:g}%)")
        return {
            "findings": [
                {
                    "check": str(f.get("check", "")),
                    "path": str(f.get("path", "")),
                    "message": str(f.get("message", ""))[:600],
                }
                for f in recorded
            ],
            "findings_file": self.settings.findings_file if document else None,
            "free": free,
            "attention": attention,
        }

    # -- the audit chains
    def audit(self, monitor_state: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        known = monitor_state.get("audit_last_hash")
        known = known if isinstance(known, str) and HASH_RE.fullmatch(known) else None
        chains: dict[str, dict[str, Any]] = {}
        for name, path, remembered in (
            ("deploys", self.settings.audit_log, None),
            ("monitor", self.settings.monitor_audit_log, known),
        ):
            if not path:
                continue
            verdict = verify_log(Path(path), known_hash=remembered)
            chains[name] = {"path": path, "ok": verdict.ok, "message": verdict.message, "records": verdict.records}
        return chains


def engine_attention(engine: Mapping[str, Any]) -> list[str]:
    """The container engine's problem (every app's health is unknown then), once for the host."""
    error = engine.get("error") if isinstance(engine, Mapping) else None
    return [f"engine: the container engine did not answer ({error}): the apps' health is unknown"] if error else []


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def cert_problem(cert: Mapping[str, Any]) -> str:
    if cert["status"] == "expired":
        return f"expired on {cert['not_after']}"
    if cert["status"] == "expiring":
        return f"expires on {cert['not_after']} ({cert['days_left']:g} days left)"
    return f"cannot be read ({cert.get('error', '')})"


# -- views of a report -------------------------------------------------------------------------------------
def for_app(report: Mapping[str, Any], app: str) -> dict[str, Any]:
    """The report narrowed to one app: its entry and its verdict alone. KeyError when it is not on the host."""
    entries = [entry for entry in report.get("apps", []) if entry.get("name") == app]
    if not entries:
        raise KeyError(app)
    narrowed = dict(report)
    narrowed["apps"] = entries
    narrowed["attention"] = [
        *engine_attention(report.get("engine") or {}),
        *[f"app {app}: {problem}" for problem in entries[0]["attention"]],
    ]
    narrowed["verdict"] = "attention" if narrowed["attention"] else "ok"
    return narrowed


def exit_code(report: Mapping[str, Any]) -> int:
    """0: nothing needs attention; 1: something does (the report's `attention` says what)."""
    return 0 if report.get("verdict") == "ok" else 1


def _short(sha: Any) -> str:
    return str(sha)[:12] if sha else "-"


def replicas_lines(replicas: Any) -> list[str]:
    """A replicated app's tasks for the terminal: one line per slot (none for a single-host app)."""
    if not isinstance(replicas, Mapping) or replicas.get("missing"):
        return []
    update = replicas.get("update") or {}
    lines = [
        f"  service {replicas.get('service', '?')}: {replicas.get('running_at_sha', 0)} of "
        f"{replicas.get('desired', 0)} replicas run {_short(replicas.get('sha'))}"
        f" ({replicas.get('running', 0)} running)" + (f", update {update['state']}" if update.get("state") else "")
    ]
    tasks = replicas.get("tasks", [])
    width = max([4, *(len(str(task.get("node", "-"))) for task in tasks)])
    lines.append(f"    {'slot':<5} {'node':<{width}} {'node state':<16} {'task':<10} {'commit':<12} {'port':>6}  since")
    for task in tasks:
        node_state = "/".join(part for part in (task.get("node_state"), task.get("node_availability")) if part)
        port = str(task["port"]) if task.get("port") else "-"
        slot = str(task["slot"]) if task.get("slot") is not None else "-"
        lines.append(
            f"    {slot:<5} {task.get('node', '-'):<{width}} {node_state or '-':<16} {task.get('state', '?'):<10} "
            f"{_short(task.get('sha')):<12} {port:>6}  {task.get('since') or '-'}"
            + (f", {task['restarts']} failed before" if task.get("restarts") else "")
        )
        why = task.get("error") or (task.get("message") if task.get("state") != "running" else "")
        if why:
            lines.append(f"          {why}")
        elif task.get("last_error") and task.get("restarts"):
            lines.append(f"          last failure: {task['last_error']}")
    return lines


def render_text(report: Mapping[str, Any], *, app: str | None = None) -> str:
    """The report for a terminal: one block per app, then the host-wide parts (all of them without APP)."""
    lines = [
        f"{report.get('host', '?')} at {report.get('generated_at', '?')}: {str(report.get('verdict', '?')).upper()}"
    ]
    if report.get("snapshot_age_seconds") is not None:
        lines[0] += f" (snapshot {report['snapshot_age_seconds']:.0f} s old)"
    lines += [f"  ! {problem}" for problem in report.get("attention", [])]
    for entry in report.get("apps", []):
        lines.append("")
        serving = entry.get("serving") or {}
        health = entry.get("health") or {}
        lines.append(
            f"app {entry['name']}: serving {_short(serving.get('sha'))} since {serving.get('since') or '-'}"
            f", health {health.get('state', '?')}"
        )
        container = health.get("container")
        if container:
            limits = ", ".join(
                part
                for part in (
                    f"{container['cpus']:g} cpus" if container.get("cpus") else "",
                    f"{container['memory_bytes'] // (1 << 20)} MiB" if container.get("memory_bytes") else "",
                    f"{container['pids_limit']} pids" if container.get("pids_limit") else "",
                )
                if part
            )
            lines.append(
                f"  container {container['name']} {container['status']}, {container['restarts']} restarts"
                + (f", limits {limits}" if limits else "")
            )
        lines += replicas_lines(entry.get("replicas"))
        pending = entry.get("pending")
        if pending:
            since = f", since {pending['since']}" if pending.get("since") else ""
            lines.append(f"  pending: {pending['sha']} ({pending['where']}{since})")
        for failed in entry.get("failed", []):
            lines.append(f"  failed: {failed['sha']} at {failed['at']}: {failed['reason']}")
        if entry.get("deploys"):
            lines.append("  last deploys:")
            for deploy in entry["deploys"]:
                seconds = f"{deploy['seconds']:g} s" if deploy.get("seconds") is not None else "-"
                reason = f"  {deploy['reason']}" if deploy.get("reason") and deploy["outcome"] == "failed" else ""
                lines.append(
                    f"    {deploy['time']}  {_short(deploy['sha']):<12}  {deploy['outcome']:<9} {seconds:>8}"
                    f"  by {deploy['requested_by'] or '-'}{reason}"
                )
        data = entry.get("data")
        if data:
            enforced = "enforced" if data.get("enforced") else "not enforced"
            lines.append(
                f"  data: {data['usage_bytes'] / (1 << 20):.1f} MiB of {data['size_bytes'] / (1 << 20):.1f} MiB"
                f" ({enforced})"
            )
        if entry.get("deploy_key"):
            lines.append(f"  deploy key (add it to the repository, read-only): {entry['deploy_key']}")
        monitor_app = entry.get("monitor") or {}
        if monitor_app.get("last_error"):
            lines.append(f"  monitor error: {monitor_app['last_error']}")
    if app is not None:
        return "\n".join(lines) + "\n"
    monitor = report.get("monitor") or {}
    lines.append("")
    if monitor.get("installed"):
        effective = monitor.get("effective_interval")
        interval = f"every {effective:g} s" if _number(effective) else "interval unknown"
        if _number(effective) and _number(monitor.get("interval")) and effective != monitor["interval"]:
            interval += f" (configured {monitor['interval']:g} s)"
        lines.append(
            f"monitor: last poll {monitor.get('last_poll') or 'never'}, {interval}, "
            f"API budget {monitor.get('budget_left')}/{monitor.get('budget_per_hour')} left this hour "
            f"({monitor.get('mode')})"
            + (f", waiting until {monitor['waiting_until']}" if monitor.get("waiting_until") else "")
        )
    else:
        lines.append("monitor: not installed")
    lines.append("certificates:" if report.get("certificates") else "certificates: none found")
    for cert in report.get("certificates", []):
        if cert["status"] == "unreadable":
            lines.append(f"  {cert['kind']:<12} {cert['path']}: unreadable ({cert.get('error', '')})")
        else:
            lines.append(
                f"  {cert['kind']:<12} {cert['subject']}: until {cert['not_after']} "
                f"({cert['days_left']:g} days) {cert['status']}"
            )
    disk = report.get("disk") or {}
    free = ", ".join(f"{f['path']} {f['free_percent']:g}% free" for f in disk.get("free", []))
    lines.append(f"disk: {free or 'no checked paths recorded'}")
    lines += [f"  finding ({f['check']}): {f['message']}" for f in disk.get("findings", [])]
    for name, chain in (report.get("audit") or {}).items():
        lines.append(f"audit {name}: {chain['message']}")
    backup = report.get("backup")
    if backup:
        for kind in ("backup", "check"):
            entry = backup.get(kind) or {}
            outcome = "ok" if entry.get("ok") else "FAILED" if entry.get("finished") else "never run"
            lines.append(f"{kind}: {outcome}, last success {entry.get('last_success') or 'never'}")
    return "\n".join(lines) + "\n"


def validate_report(report: Any, required: Sequence[str] = ("schema", "generated_at", "verdict", "apps")) -> None:
    """A report read back from a snapshot: the schema this code writes. ValueError says what is off."""
    if not isinstance(report, dict):
        raise ValueError("not a JSON object")
    missing = [key for key in required if key not in report]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    if report["schema"] != SCHEMA:
        raise ValueError(f"schema {report['schema']!r}, this command reads {SCHEMA!r}")
    # `replicas` came later in the same schema: absent in older reports, a mapping where it is present.
    for entry in report.get("apps") or []:
        if isinstance(entry, dict) and "replicas" in entry and not isinstance(entry["replicas"], dict):
            raise ValueError(f"app {entry.get('name', '?')}: replicas is not an object")
