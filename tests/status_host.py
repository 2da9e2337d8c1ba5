"""A host's files for the status tests and benchmark, written by the real code that writes them on a host.

The deploy state and the deploy audit log by the deploy engine (`_deploy.Engine`: `remember_serving`,
`finish`), the monitor's state and audit log by the monitor daemon itself (`Monitor._save_state`,
`AuditLog`), certificates by `cryptography` as the tls role issues them (a CA, an edge leaf, client
leaves), the findings file in the hardening role's format. Only the Docker engine is a stand-in
(`FakeProbe`): what it reports is what `docker inspect` gives, reduced by `_status.container_info`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import Defaults, parse_apps
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._deploy import Engine, Outcome, Settings
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._nginx_upstream import Edge
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._status import StatusSettings, container_info
from tests.helpers import REPO

NOW = 1_800_000_000.0  # 2027-01-15
DAY = 86400.0

_spec = importlib.util.spec_from_file_location(
    "github_repo_monitor", REPO / "roles/monitor/files/github_repo_monitor.py"
)
grm = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("github_repo_monitor", grm)
_spec.loader.exec_module(grm)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sha(n: int) -> str:
    return hashlib.sha1(str(n).encode()).hexdigest()  # noqa: S324 (a commit id, not a secret)


class FakeProbe:
    """The Docker engine as `docker inspect` shows each app's containers (set per test)."""

    def __init__(self) -> None:
        self.by_app: dict[str, list[dict[str, Any]]] = {}
        self.error: Exception | None = None
        self.calls = 0

    def set(self, app: str, name: str, sha_: str, *, status: str = "running", health: str = "healthy", **extra) -> None:
        attrs = {
            "Name": f"/{name}",
            "State": {
                "Status": status,
                "ExitCode": 0 if status == "running" else 1,
                "StartedAt": "2027-01-15T07:00:00Z",
            }
            | ({"Health": {"Status": health}} if health else {}),
            "RestartCount": extra.get("restarts", 0),
            "Config": {"Labels": {"secure_streamlit.app": app, "secure_streamlit.sha": sha_}, "Env": ["SECRET=x"]},
            "HostConfig": {"NanoCpus": 1_000_000_000, "Memory": 512 << 20, "PidsLimit": 128},
        }
        self.by_app[app] = [attrs]

    def containers(self, app: str) -> list[dict[str, Any]]:
        self.calls += 1
        if self.error:
            raise self.error
        return [container_info(a) for a in self.by_app.get(app, [])]


def make_cert(
    path: Path,
    common_name: str,
    *,
    not_after: float,
    issuer: tuple[x509.Name, Any] | None = None,
    ca: bool = False,
    usage=ExtendedKeyUsageOID.SERVER_AUTH,
) -> tuple[x509.Name, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.fromtimestamp(min(NOW, not_after) - 30 * DAY, datetime.UTC))
        .not_valid_after(datetime.datetime.fromtimestamp(not_after, datetime.UTC))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return subject, key


class Host:
    """The files of one host under `root`, and the stand-in engine."""

    def __init__(self, root: Path, apps: list[str], clock: Clock | None = None) -> None:
        self.root = root
        self.clock = clock or Clock()
        self.apps = apps
        self.probe = FakeProbe()
        for directory in ("state", "log", "spool/requests", "spool/results", "monitor/state", "monitor/log", "pki"):
            (root / directory).mkdir(parents=True, exist_ok=True)
        self.deploy_settings = Settings(
            state_dir=str(root / "state"),
            audit_log=str(root / "log/deploys.log"),
            lock_dir=str(root / "locks"),
            results_dir="",
            upstream_dir=str(root / "upstreams"),
        )
        self.engine = Engine(
            self.deploy_settings,
            None,
            edge=Edge(upstream_dir=root / "upstreams", check_candidate=None, pid_file=None),
            clock=self.clock,
        )
        self.specs = {
            app.name: app for app in parse_apps([{"name": name, "repo": f"acme/{name}"} for name in apps], Defaults())
        }
        self.monitor_config = root / "monitor/config.json"
        self.monitor_config.write_text(
            json.dumps(
                {
                    "api_url": "https://api.github.com",
                    "interval": 30,
                    "jitter": 0.1,
                    "state_dir": str(root / "monitor/state"),
                    "spool_dir": str(root / "spool"),
                    "audit_log": str(root / "monitor/log/audit.jsonl"),
                    "apps": [{"name": name, "repo": f"acme/{name}", "branch": "main"} for name in apps],
                }
            )
        )
        self.monitor = grm.Monitor(
            grm.load_config(self.monitor_config), SimpleNamespace(poll_interval_hint=None), clock=self.clock
        )
        self.findings = root / "findings.json"
        self.settings = StatusSettings(
            apps=tuple(apps),
            state_dir=str(root / "state"),
            audit_log=str(root / "log/deploys.log"),
            spool_dir=str(root / "spool"),
            monitor_config=str(self.monitor_config),
            monitor_state=str(root / "monitor/state/state.json"),
            monitor_audit_log=str(root / "monitor/log/audit.jsonl"),
            monitor_token_file=str(root / "monitor/github-token"),
            edge_certificate=str(root / "pki/tls/server.crt"),
            internal_ca_certificate=str(root / "pki/ca/ca.crt"),
            client_ca_certificate=str(root / "pki/tls/client-ca.crt"),
            client_certificate_dir=str(root / "pki/clients"),
            renew_before_days=30,
            findings_file=str(self.findings),
        )

    # -- what the deploy engine writes
    def deploy(self, app: str, sha_: str, *, requested_by: str = "monitor", seconds: float = 42.0) -> None:
        container = f"{app}-{sha_[:12]}-abcdef"
        self.engine.remember_serving(app, sha_, container)
        outcome = Outcome(app, sha_, "deployed", container=container, seconds=seconds, requested_by=requested_by)
        self.engine.finish(self.specs[app], outcome, record_failure=True)
        self.probe.set(app, container, sha_)

    def fail(self, app: str, sha_: str, reason: str, *, step: str = "gate", requested_by: str = "monitor") -> None:
        outcome = Outcome(
            app, sha_, "failed", f"{step} failed: {reason}", step, seconds=12.5, requested_by=requested_by
        )
        self.engine.finish(self.specs[app], outcome, record_failure=True)

    # -- what the monitor writes
    def monitor_polled(self, at: float | None = None, requests: int = 3) -> None:
        at = self.clock() if at is None else at
        self.monitor.last_poll = at
        self.monitor.spent = [at - 10 * i for i in range(requests)]
        for app in self.apps:
            self.monitor.state[app]["last_checked"] = grm.now_iso(lambda: at)
        self.monitor.audit.write("poll", apps=len(self.apps))
        self.monitor._save_state()

    def monitor_requested(self, app: str, sha_: str) -> None:
        self.monitor.state[app]["last_requested_sha"] = sha_
        self.monitor._save_state()
        (self.root / "spool/requests" / f"{app}.json").write_text(json.dumps({"app": app, "sha": sha_}))

    # -- the edge's certificates
    def certificates(self, *, edge_days: float = 80, ca_days: float = 3600, client_days: float = 80) -> None:
        ca = make_cert(
            self.root / "pki/ca/ca.crt", "secure-streamlit internal CA lab", not_after=NOW + ca_days * DAY, ca=True
        )
        (self.root / "pki/tls").mkdir(parents=True, exist_ok=True)
        (self.root / "pki/tls/client-ca.crt").write_bytes((self.root / "pki/ca/ca.crt").read_bytes())
        make_cert(self.root / "pki/tls/server.crt", "edge.lab.test", not_after=NOW + edge_days * DAY, issuer=ca)
        make_cert(
            self.root / "pki/clients/alice@lab.test.crt",
            "alice@lab.test",
            not_after=NOW + client_days * DAY,
            issuer=ca,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )

    def write_findings(self, findings: list[dict] | None = None) -> None:
        self.findings.write_text(
            json.dumps(
                {
                    "generated_by": "secure_streamlit.hosting.hardening",
                    "checked_paths": [str(self.root / "state"), str(self.root / "log")],
                    "findings": findings or [],
                }
            )
        )

    def healthy(self) -> Host:
        """Every app serving (site.yml's first deploy, then a push through the monitor), polled just now."""
        for index, app in enumerate(self.apps):
            self.clock.now = NOW - 3600
            self.deploy(app, sha(2 * index + 1), requested_by="site.yml", seconds=95.0)
            self.clock.now = NOW - 600
            self.deploy(app, sha(2 * index + 2), requested_by="monitor", seconds=41.5)
        self.clock.now = NOW
        self.monitor_polled()
        self.certificates()
        self.write_findings()
        return self

    def status_config(self, **extra: Any) -> dict[str, Any]:
        """What roles/status writes for the host command."""
        return {
            "settings": {
                k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.settings).items()
            },
            "snapshot": str(self.root / "status/status.json"),
            "snapshot_max_age": 300,
            "alert_command": [],
        } | extra


def tamper(path: Path, line_number: int, old: str, new: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    assert old in lines[line_number - 1], lines[line_number - 1]
    lines[line_number - 1] = lines[line_number - 1].replace(old, new, 1)
    path.write_text("".join(lines))
    os.utime(path)
