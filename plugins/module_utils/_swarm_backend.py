"""The deploy engine's swarm backend: an app with `replicas: N` as a Docker swarm service.

On the (first) manager, after the engine has built the app's image as for a single container:

    push the image to the swarm's registry -> the app's secrets as Docker secrets -> create or update the
    service (hardened as a single container is) -> wait until every task runs the new commit and is healthy,
    or the swarm has rolled the update back -> the tasks' (node address, published port) for the edge

The service publishes the app's port in **host mode** with no fixed published port: the engine of each node
picks one per task, and `task_endpoints` reads them back. The edge balances to those pairs itself, because
the routing mesh and virtual IPs need IPVS, which the bench's kernel lacks; `endpoint_mode: dnsrr` keeps the
swarm from asking for a virtual IP (docs/multi-host.md).

Rolling updates start the new task before stopping the old one (`start-first`), wait `monitor` for it to
stay healthy, and roll the whole service back on a failure: the old tasks keep serving throughout.

The Docker client is injected (docker-py's `DockerClient`; tests pass a fake). The low-level API is used for
the service itself: the high-level model cannot express the pids limit or a port without a published number.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import SHA_RE, AppSpec
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._deploy import (
    IMAGE_REPO,
    LABEL_APP,
    LABEL_FINGERPRINT,
    LABEL_SHA,
    PORT,
    DeployFailed,
    describe,
    duration_ns,
    healthcheck_command,
)

SERVICE_PREFIX = "app-"
REGISTRY_RE = re.compile(r"[A-Za-z0-9.-]{1,253}:[0-9]{1,5}")
SECRET_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# node.hostname==H or node.hostname!=H (what _swarm_apps.swarm_placement makes), H a host name.
CONSTRAINT_RE = re.compile(r"node\.hostname(==|!=)[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")
MAX_PASSWORD_BYTES = 4096
# The swarm's update states after which nothing more happens without a new update.
ROLLED_BACK = frozenset({"rollback_completed", "rollback_paused", "paused"})


@dataclass(frozen=True)
class SwarmSettings:
    """What a swarm deploy reads beside the engine's Settings (the apps role's apps_swarm_* variables)."""

    registry: str  # host:port of the swarm's registry, e.g. manager.example:5000
    uid: int = 10001
    tmp_size_bytes: int = 256 * 1024 * 1024
    healthcheck_interval: str = "10s"
    healthcheck_timeout: str = "10s"
    healthcheck_retries: int = 3
    healthcheck_start_period: str = "60s"
    log_max_size: str = "10m"
    log_max_file: int = 5
    # Rolling updates: one task at a time, the new one started first and watched for `monitor` before the
    # next; any failure rolls the service back to the spec that served.
    update_parallelism: int = 1
    update_delay: str = "2s"
    update_monitor: str = "20s"
    stop_grace_period: str = "10s"
    converge_timeout: float = 600.0
    # The registry's user and the root-only file holding its password (roles/swarm): read in memory at each
    # deploy, never in argv, the environment or a message. "" = the engine's own login (config.json).
    registry_user: str = ""
    registry_password_file: str = ""
    # App name -> the service's placement constraints (the swarm_placement filter's output).
    constraints: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not REGISTRY_RE.fullmatch(self.registry):
            raise ValueError(f"registry must be host:port, not {self.registry!r}")
        if self.registry_user and not USER_RE.fullmatch(self.registry_user):
            raise ValueError(f"registry_user is not a user name: {self.registry_user!r}")
        if bool(self.registry_user) != bool(self.registry_password_file):
            raise ValueError("registry_user and registry_password_file go together")
        if self.registry_password_file and not self.registry_password_file.startswith("/"):
            raise ValueError("registry_password_file must be an absolute path")
        for app, constraints in self.constraints.items():
            bad = [c for c in constraints if not isinstance(c, str) or not CONSTRAINT_RE.fullmatch(c)]
            if bad:
                raise ValueError(f"constraints of {app!r}: not node.hostname==H or node.hostname!=H: {bad}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SwarmSettings:
        """The settings from the apps role's `swarm` mapping (the module's option, the deployer's config):
        unknown keys and wrong types are refused, naming the key."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown swarm settings: {', '.join(unknown)}")
        if "registry" not in values:
            raise ValueError("swarm settings need registry (host:port)")
        converted: dict[str, Any] = {}
        defaults = cls(registry="localhost:5000")
        for name, value in values.items():
            if name == "constraints":
                if not isinstance(value, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, list | tuple) for k, v in value.items()
                ):
                    raise ValueError("constraints must map app names to lists of constraints")
                converted[name] = {k: tuple(v) for k, v in value.items()}
                continue
            kind = type(getattr(defaults, name))
            if kind in (int, float):
                if isinstance(value, bool) or not isinstance(value, int | float | str):
                    raise ValueError(f"swarm setting {name} must be a number")
                try:
                    converted[name] = kind(value)
                except ValueError:
                    raise ValueError(f"swarm setting {name} must be a number") from None
            elif not isinstance(value, str):
                raise ValueError(f"swarm setting {name} must be text")
            else:
                converted[name] = value
        return cls(**converted)

    def constraints_of(self, app: str) -> list[str]:
        return sorted(self.constraints.get(app, ()))


def read_password(path: str) -> str:
    """The registry password from root's file: a regular file, not a link, not readable by group or others,
    one line. The value stays in memory; errors name the file, never its content."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise DeployFailed("push", f"cannot open the registry password file {path} ({type(exc).__name__})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DeployFailed("push", f"the registry password file {path} is not a regular file")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or (os.geteuid() == 0 and info.st_uid != 0):
            raise DeployFailed("push", f"the registry password file {path} must be root's, mode 0600 or stricter")
        data = os.read(fd, MAX_PASSWORD_BYTES + 1)
    finally:
        os.close(fd)
    text = data.decode("utf-8", "replace").strip()
    if not text or len(data) > MAX_PASSWORD_BYTES or "\n" in text:
        raise DeployFailed("push", f"the registry password file {path} does not hold one line of text")
    return text


def service_fingerprint(run_fp: str, app: AppSpec, constraints: Sequence[str]) -> str:
    """What the service label records: the engine's run fingerprint plus what only a service has (the
    number of tasks, the placement). A change in any of them is a rolling update."""
    payload = {"run": run_fp, "replicas": app.replicas, "constraints": sorted(constraints)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def service_name(app: AppSpec) -> str:
    return SERVICE_PREFIX + app.name


def image_ref(settings: SwarmSettings, app: AppSpec, build_fp: str) -> tuple[str, str]:
    """The repository in the swarm's registry and the tag (the build fingerprint's start) of an app image."""
    if not re.fullmatch(r"[0-9a-f]{16,64}", build_fp):
        raise ValueError(f"not a build fingerprint: {build_fp!r}")
    return f"{settings.registry}/{IMAGE_REPO}/{app.name}", build_fp[:16]


def secret_name(app: AppSpec, file: str, data: bytes) -> str:
    """Docker secrets cannot change: a new value is a new secret, named after its content, and the service
    update that switches to it is an ordinary rolling update."""
    if not SECRET_FILE_RE.fullmatch(file):
        raise ValueError(f"not a secret file name: {file!r}")
    return f"{app.name}.{file}.{hashlib.sha256(data).hexdigest()[:12]}"


def service_spec(
    settings: SwarmSettings,
    app: AppSpec,
    sha: str,
    image: str,
    run_fp: str,
    secrets: Sequence[Mapping[str, Any]] = (),
    constraints: Sequence[str] = (),
) -> dict[str, Any]:
    """The keyword arguments of docker-py's APIClient.create_service/update_service for the app at `sha`.

    The same hardening as a single container (_deploy.Engine.start): non-root, read-only root, no
    capabilities, CPU/memory/pids limits, a size-limited /tmp, the app's secrets under /run/secrets, the
    health check. no-new-privileges is the daemon's default (roles/docker): the swarm API of engine 20.10
    has no per-service field for it."""
    if not SHA_RE.fullmatch(sha):
        raise ValueError(f"not a commit SHA: {sha!r}")
    if app.data_mount or app.database:
        raise ValueError(f"{app.label}: an app with per-host state does not run as a swarm service")
    labels = {LABEL_APP: app.name, LABEL_SHA: sha, LABEL_FINGERPRINT: run_fp}
    container_spec: dict[str, Any] = {
        "Image": image,
        "Labels": labels,
        "Env": [f"{key}={value}" for key, value in sorted(app.env.items())],
        "User": f"{settings.uid}:{settings.uid}",
        "ReadOnly": True,
        "CapabilityDrop": ["ALL"],
        "Mounts": [
            {
                "Type": "tmpfs",
                "Target": "/tmp",  # noqa: S108  # the container's own, size-limited
                "TmpfsOptions": {"SizeBytes": settings.tmp_size_bytes, "Mode": 0o1777},
            }
        ],
        "Secrets": [dict(ref) for ref in secrets],
        "Healthcheck": {
            "Test": healthcheck_command(app),
            "Interval": duration_ns(settings.healthcheck_interval),
            "Timeout": duration_ns(settings.healthcheck_timeout),
            "Retries": settings.healthcheck_retries,
            "StartPeriod": duration_ns(settings.healthcheck_start_period),
        },
        "StopGracePeriod": duration_ns(settings.stop_grace_period),
    }
    update = {
        "Parallelism": settings.update_parallelism,
        "Delay": duration_ns(settings.update_delay),
        "FailureAction": "rollback",
        "Monitor": duration_ns(settings.update_monitor),
        "MaxFailureRatio": 0,
        "Order": "start-first",
    }
    rollback = {**update, "FailureAction": "pause"}
    return {
        "name": service_name(app),
        "labels": labels,
        "task_template": {
            "ContainerSpec": container_spec,
            "Resources": {
                "Limits": {
                    "NanoCPUs": int(app.cpus * 1e9),
                    "MemoryBytes": app.memory_bytes,
                    "Pids": app.pids,
                }
            },
            "RestartPolicy": {"Condition": "on-failure", "MaxAttempts": 5},
            "Placement": {"Constraints": sorted(constraints)},
            "LogDriver": {
                "Name": "json-file",
                "Options": {"max-size": settings.log_max_size, "max-file": str(settings.log_max_file)},
            },
        },
        "mode": {"Replicated": {"Replicas": app.replicas}},
        "update_config": update,
        "rollback_config": rollback,
        # dnsrr: no virtual IP (IPVS); host mode: each task's own port on its node, picked by the engine.
        "endpoint_spec": {
            "Mode": "dnsrr",
            "Ports": [{"Protocol": "tcp", "TargetPort": PORT, "PublishMode": "host"}],
        },
    }


def _task_sha(task: Mapping[str, Any]) -> str:
    labels = task.get("Spec", {}).get("ContainerSpec", {}).get("Labels") or {}
    return str(labels.get(LABEL_SHA, ""))


class SwarmBackend:
    """Deploys apps as swarm services from a manager. Every collaborator is injectable."""

    def __init__(
        self,
        settings: SwarmSettings,
        docker_client: Any,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = lambda _message: None,
    ) -> None:
        self.settings = settings
        self.docker = docker_client
        self.monotonic = monotonic
        self.sleep = sleep
        self.log = log

    # -- the registry
    def login(self) -> None:
        """Log the client in to the swarm's registry with the password read from root's file: docker-py keeps
        the credential in memory and sends it with the push and, as X-Registry-Auth, with the service's
        create and update, so that the workers can pull. Nothing is written to a config file."""
        settings = self.settings
        if not settings.registry_user:
            return
        password = read_password(settings.registry_password_file)
        try:
            self.docker.login(
                username=settings.registry_user, password=password, registry=settings.registry, reauth=True
            )
        except Exception as exc:  # docker.errors.APIError: the message is the registry's, never the password
            raise DeployFailed(
                "push", f"the registry {settings.registry} refused the login ({type(exc).__name__})"
            ) from None

    # -- the image
    def push(self, app: AppSpec, local_image: str, build_fp: str) -> str:
        """Tag the locally built image into the swarm's registry and push it; the reference the service runs."""
        repository, tag = image_ref(self.settings, app, build_fp)
        try:
            self.docker.images.get(local_image).tag(repository, tag)
            for line in self.docker.api.push(repository, tag=tag, stream=True, decode=True):
                if isinstance(line, Mapping) and line.get("error"):
                    raise DeployFailed("push", f"the registry refused {repository}:{tag}: {line['error']}")
        except DeployFailed:
            raise
        except Exception as exc:  # docker.errors.APIError, ImageNotFound
            raise DeployFailed("push", describe(exc)) from exc
        return f"{repository}:{tag}"

    # -- secrets
    def ensure_secrets(self, app: AppSpec, files: Mapping[str, bytes]) -> list[dict[str, Any]]:
        """The app's secret files as Docker secrets (kept encrypted in the managers' Raft store), each
        mounted at /run/secrets/<file>, readable by the app's user only. Values never reach a message."""
        refs: list[dict[str, Any]] = []
        for file in sorted(files):
            name = secret_name(app, file, files[file])
            found = self.docker.secrets.list(filters={"name": name})
            secret = next((s for s in found if getattr(s, "name", None) == name), None)
            if secret is None:
                try:
                    secret = self.docker.secrets.create(name=name, data=files[file], labels={LABEL_APP: app.name})
                except Exception as exc:
                    raise DeployFailed(
                        "secrets", f"creating the secret for {file} failed ({type(exc).__name__})"
                    ) from exc
            uid = str(self.settings.uid)
            refs.append(
                {
                    "SecretID": secret.id,
                    "SecretName": name,
                    "File": {"Name": file, "UID": uid, "GID": uid, "Mode": 0o400},
                }
            )
        return refs

    def prune_secrets(self, app: AppSpec, keep: Sequence[Mapping[str, Any]]) -> None:
        """Remove the app's secrets no service spec names any more (a secret in use cannot be removed:
        the engine refuses, and the old spec a rollback needs keeps its own)."""
        names = {ref["SecretName"] for ref in keep}
        for secret in self.docker.secrets.list(filters={"label": f"{LABEL_APP}={app.name}"}):
            if secret.name not in names:
                try:
                    secret.remove()
                except Exception as exc:  # in use by the previous spec: removed at a later deploy
                    self.log(f"{app.name}: kept secret {secret.name} ({type(exc).__name__})")

    # -- the service
    def service(self, app: AppSpec) -> dict[str, Any] | None:
        found = self.docker.api.services(filters={"name": service_name(app)})
        return next((s for s in found if s.get("Spec", {}).get("Name") == service_name(app)), None)

    def apply(self, app: AppSpec, spec: Mapping[str, Any]) -> str:
        """Create the service, or update it to `spec` (a rolling update); its ID."""
        current = self.service(app)
        try:
            if current is None:
                return str(self.docker.api.create_service(**spec)["ID"])
            self.docker.api.update_service(current["ID"], current["Version"]["Index"], **spec)
            return str(current["ID"])
        except Exception as exc:  # docker.errors.APIError
            raise DeployFailed("service", describe(exc)) from exc

    def tasks(self, app: AppSpec) -> list[dict[str, Any]]:
        """The service's tasks; none before it exists (the engine answers 404 for an unknown service)."""
        try:
            return list(self.docker.api.tasks(filters={"service": service_name(app)}))
        except Exception as exc:  # docker.errors.NotFound
            if getattr(exc, "status_code", None) == 404:
                return []
            raise

    def running(self, app: AppSpec, sha: str) -> list[dict[str, Any]]:
        """The tasks meant to run and running (healthy: a task with a health check is running only once it
        passes) at `sha`."""
        return [
            task
            for task in self.tasks(app)
            if task.get("DesiredState") == "running"
            and task.get("Status", {}).get("State") == "running"
            and _task_sha(task) == sha
        ]

    def wait_converged(self, app: AppSpec, sha: str, before: Mapping[str, Any] | None = None) -> float:
        """Wait until `replicas` tasks run `sha` and the update (if any) completed; the seconds it took.
        DeployFailed when the swarm rolled the update back (the old tasks serve) or the deadline passed.
        `before` is the service's update status before this deploy: until it changes, what it says is an
        earlier update's."""
        start = self.monotonic()
        deadline = start + self.settings.converge_timeout
        while True:
            service = self.service(app)
            if service is None:
                raise DeployFailed("service", f"{service_name(app)} vanished during the deploy")
            update = service.get("UpdateStatus") or {}
            state = str(update.get("State", "")) if update != (before or {}) else ""
            # A rollback in progress is waited for: the next deploy must find the service settled.
            if state in ROLLED_BACK:
                raise DeployFailed(
                    "update",
                    f"the swarm rolled {service_name(app)} back ({state}: {update.get('Message', '')})",
                    self.task_errors(app),
                )
            done = state in ("", "completed")  # "" = no update yet (created), or still the earlier one's
            if done and len(self.running(app, sha)) >= app.replicas:
                return self.monotonic() - start
            if self.monotonic() >= deadline:
                raise DeployFailed(
                    "update",
                    f"{len(self.running(app, sha))} of {app.replicas} tasks at {sha[:12]} running after "
                    f"{self.settings.converge_timeout:g} s",
                    self.task_errors(app),
                )
            self.sleep(1.0)

    def task_errors(self, app: AppSpec) -> list[str]:
        """The last tasks' errors, for the outcome's tail (no environment, no secrets: the swarm's own text)."""
        lines = []
        for task in self.tasks(app)[-10:]:
            status = task.get("Status", {})
            if status.get("Err"):
                lines.append(f"{task.get('ID', '')[:12]} {status.get('State', '')}: {status['Err']}")
        return lines

    def deploy(
        self, app: AppSpec, sha: str, local_image: str, build_fp: str, run_fp: str, secret_files: Mapping[str, bytes]
    ) -> float:
        """Log in, push, create or update, and wait; the seconds the swarm took to converge."""
        self.login()
        image = self.push(app, local_image, build_fp)
        refs = self.ensure_secrets(app, secret_files)
        before = (self.service(app) or {}).get("UpdateStatus")
        spec = service_spec(self.settings, app, sha, image, run_fp, refs, self.settings.constraints_of(app.name))
        self.apply(app, spec)
        seconds = self.wait_converged(app, sha, before)
        self.prune_secrets(app, refs)
        self.log(f"{app.name}: {app.replicas} tasks at {sha[:12]} in {seconds:.1f} s")
        return seconds

    def fingerprint(self, app: AppSpec, run_fp: str) -> str:
        return service_fingerprint(run_fp, app, self.settings.constraints_of(app.name))

    def serving(self, app: AppSpec) -> tuple[str, str]:
        """(sha, fingerprint) the service's spec runs, ("", "") without a service."""
        labels = ((self.service(app) or {}).get("Spec") or {}).get("Labels") or {}
        return str(labels.get(LABEL_SHA, "")), str(labels.get(LABEL_FINGERPRINT, ""))

    def up_to_date(self, app: AppSpec, sha: str, fingerprint: str) -> bool:
        """The service runs `sha` with these settings, its update (if any) is done and every task runs."""
        service = self.service(app)
        if service is None:
            return False
        labels = (service.get("Spec") or {}).get("Labels") or {}
        if labels.get(LABEL_SHA) != sha or labels.get(LABEL_FINGERPRINT) != fingerprint:
            return False
        state = str((service.get("UpdateStatus") or {}).get("State", ""))
        return state in ("", "completed") and len(self.running(app, sha)) >= app.replicas

    def apps(self) -> set[str]:
        """The apps that have a service of this backend; none where the engine is no swarm manager (yet)."""
        try:
            found = self.docker.api.services(filters={"label": LABEL_APP})
        except Exception as exc:  # docker.errors.APIError 503: "This node is not a swarm manager"
            if getattr(exc, "status_code", None) == 503:
                return set()
            raise
        return {str((s.get("Spec", {}).get("Labels") or {}).get(LABEL_APP, "")) for s in found} - {""}

    def task_endpoints(self, app: AppSpec) -> list[tuple[str, int]]:
        """(node address, published port) of each running task: what the edge balances to."""
        addresses: dict[str, str] = {}
        endpoints: list[tuple[str, int]] = []
        for task in self.tasks(app):
            status = task.get("Status", {})
            if task.get("DesiredState") != "running" or status.get("State") != "running":
                continue
            node = str(task.get("NodeID", ""))
            if node not in addresses:
                addresses[node] = str(self.docker.api.inspect_node(node).get("Status", {}).get("Addr", ""))
            for port in (status.get("PortStatus") or {}).get("Ports") or []:
                if port.get("TargetPort") == PORT and port.get("PublishedPort") and addresses[node]:
                    endpoints.append((addresses[node], int(port["PublishedPort"])))
        return sorted(endpoints)

    def remove_absent(self, keep: set[str], *, check_mode: bool = False) -> list[str]:
        """Remove the services (and their secrets) of apps not in `keep`; their names."""
        removed = sorted(self.apps() - keep)
        if check_mode:
            return removed
        for name in removed:
            for service in self.docker.api.services(filters={"name": SERVICE_PREFIX + name}):
                if service.get("Spec", {}).get("Name") == SERVICE_PREFIX + name:
                    self.docker.api.remove_service(service["ID"])
            for secret in self.docker.secrets.list(filters={"label": f"{LABEL_APP}={name}"}):
                with contextlib.suppress(Exception):  # in use until the tasks are gone: a later run removes it
                    secret.remove()
        return removed

    def remove(self, app: AppSpec) -> bool:
        """Remove the service and its secrets; whether there was one."""
        current = self.service(app)
        if current is not None:
            self.docker.api.remove_service(current["ID"])
        self.prune_secrets(app, ())
        return current is not None
