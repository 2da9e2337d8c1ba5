"""The operator's view (plugins/module_utils/_status.py) over a host's files written by the real code that
writes them (tests/status_host.py: the deploy engine, the monitor, cryptography); only the Docker engine is
a stand-in (the installed command against a real engine runs in molecule/apps)."""

from __future__ import annotations

import dataclasses
import json
import os
from types import SimpleNamespace

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils import _status
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._status import (
    SCHEMA,
    Collector,
    DockerProbe,
    StatusSettings,
)
from tests.status_host import DAY, NOW, Host, sha, tamper


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path, ["hello", "extra"]).healthy()


def report_of(host: Host, **kwargs) -> dict:
    return Collector(host.settings, clock=host.clock, probe=host.probe, **kwargs).collect()


def test_a_healthy_host_needs_no_attention_and_says_what_serves_since_when(host):
    report = report_of(host)
    assert report["schema"] == SCHEMA
    assert report["verdict"] == "ok", report["attention"]
    assert _status.exit_code(report) == 0
    hello = report["apps"][0]
    assert hello["name"] == "hello"
    assert hello["serving"] == {
        "sha": sha(2),
        "container": f"hello-{sha(2)[:12]}-abcdef",
        "since": "2027-01-15T07:50:00Z",
    }
    assert hello["health"]["state"] == "healthy"
    assert hello["health"]["container"]["memory_bytes"] == 512 << 20
    assert "Env" not in json.dumps(report)  # nothing of the container's environment
    assert [d["sha"] for d in hello["deploys"]] == [sha(2), sha(1)]  # newest first
    assert hello["deploys"][0] | {"seq": None} == {
        "time": "2027-01-15T07:50:00+00:00",
        "sha": sha(2),
        "outcome": "deployed",
        "requested_by": "monitor",
        "seconds": 41.5,
        "step": "",
        "reason": "",
        "seq": None,
    }
    assert hello["deploys"][1]["requested_by"] == "site.yml"
    assert hello["pending"] is None
    assert hello["failed"] == []
    monitor = report["monitor"]
    assert monitor["installed"]
    assert monitor["last_poll"] == "2027-01-15T08:00:00Z"
    assert (monitor["mode"], monitor["budget_per_hour"], monitor["budget_left"]) == ("anonymous", 54, 51)
    assert monitor["interval"] == monitor["effective_interval"] == 30
    assert {c["kind"] for c in report["certificates"]} == {"edge", "internal_ca", "client_ca", "client"}
    edge = next(c for c in report["certificates"] if c["kind"] == "edge")
    assert (edge["subject"], edge["issuer"], edge["days_left"], edge["status"]) == (
        "edge.lab.test",
        "secure-streamlit internal CA lab",
        80.0,
        "ok",
    )
    assert report["audit"]["deploys"]["ok"]
    assert report["audit"]["deploys"]["records"] == 4
    assert report["audit"]["monitor"]["ok"]
    json.dumps(report)  # the whole report is JSON


def test_the_text_view_shows_each_part(host):
    text = _status.render_text(report_of(host))
    assert text.splitlines()[0].endswith(": OK")
    assert f"app hello: serving {sha(2)[:12]} since 2027-01-15T07:50:00Z, health healthy" in text
    assert "limits 1 cpus, 512 MiB, 128 pids" in text
    assert "by site.yml" in text
    assert "95 s" in text
    assert "API budget 51/54 left this hour (anonymous)" in text
    assert "edge.lab.test: until" in text
    assert "audit deploys: audit log OK: 4 records" in text


def test_an_unhealthy_container_needs_attention(host):
    host.probe.set("hello", f"hello-{sha(2)[:12]}-abcdef", sha(2), health="unhealthy")
    report = report_of(host)
    assert report["verdict"] == "attention"
    assert _status.exit_code(report) == 1
    assert report["attention"] == [
        f"app hello: its container hello-{sha(2)[:12]}-abcdef is unhealthy (Docker's health check fails)"
    ]
    assert report["apps"][0]["health"]["state"] == "unhealthy"


def test_a_stopped_or_missing_container_needs_attention(host):
    host.probe.set("hello", f"hello-{sha(2)[:12]}-abcdef", sha(2), status="exited")
    host.probe.by_app["extra"] = []
    attention = report_of(host)["attention"]
    assert attention[0] == f"app hello: its container hello-{sha(2)[:12]}-abcdef is exited (exit code 1)"
    assert attention[1] == f"app extra: its container extra-{sha(4)[:12]}-abcdef is missing"


def test_an_engine_that_does_not_answer_is_reported_once_not_fatal(host):
    host.probe.error = ConnectionError("Error while fetching server API version")
    report = report_of(host)
    assert [app["health"]["state"] for app in report["apps"]] == ["unknown", "unknown"]
    assert report["engine"] == {"asked": True, "error": "ConnectionError: Error while fetching server API version"}
    assert report["attention"] == [
        "engine: the container engine did not answer (ConnectionError: Error while fetching server API version): "
        "the apps' health is unknown"
    ]
    assert host.probe.calls == 1  # not asked again for every app
    assert _status.for_app(report, "extra")["verdict"] == "attention"  # one app's view says it too


def test_a_failed_last_deploy_needs_attention_and_the_failed_sha_says_why(host):
    host.clock.now = NOW + 60
    host.fail("hello", sha(9), "the script raised KeyError: 'visit_date'")
    report = report_of(host)
    hello = report["apps"][0]
    assert report["attention"] == [
        f"app hello: the last deploy ({sha(9)[:12]}, 2027-01-15T08:01:00+00:00) failed: "
        "gate failed: the script raised KeyError: 'visit_date'"
    ]
    assert hello["serving"]["sha"] == sha(2)  # the old one still serves
    assert hello["failed"] == [
        {"sha": sha(9), "reason": "gate failed: the script raised KeyError: 'visit_date'", "at": "2027-01-15T08:01:00Z"}
    ]
    assert hello["deploys"][0]["outcome"] == "failed"
    assert hello["deploys"][0]["step"] == "gate"
    # A later good deploy clears the verdict; the failed SHA stays listed.
    host.clock.now = NOW + 120
    host.deploy("hello", sha(10))
    report = report_of(host)
    assert report["verdict"] == "ok"
    assert [f["sha"] for f in report["apps"][0]["failed"]] == [sha(9)]


def test_an_app_that_never_served_needs_attention(tmp_path):
    host = Host(tmp_path, ["hello"])
    host.fail("hello", sha(1), "the commit does not build", step="build", requested_by="site.yml")
    attention = report_of(host)["attention"]
    assert "app hello: nothing serves: no deploy of it has succeeded" in attention


@pytest.mark.parametrize(
    ("days", "status", "problem"),
    [
        (29.5, "expiring", "expires on 2027-02-13T20:00:00Z (29.5 days left)"),
        (-1, "expired", "expired on 2027-01-14T08:00:00Z"),
    ],
)
def test_a_certificate_within_renew_before_days_needs_attention(host, days, status, problem):
    host.certificates(edge_days=days)
    report = report_of(host)
    edge = next(c for c in report["certificates"] if c["kind"] == "edge")
    assert edge["status"] == status
    assert report["attention"] == [f"certificate edge edge.lab.test: {problem}"]


def test_client_certificates_and_the_ca_are_checked_too(host):
    host.certificates(client_days=10, ca_days=20)
    attention = report_of(host)["attention"]
    assert any(a.startswith("certificate client alice@lab.test: expires") for a in attention)
    assert any(a.startswith("certificate internal_ca secure-streamlit internal CA lab: expires") for a in attention)


def test_an_unreadable_certificate_needs_attention(host):
    (host.root / "pki/tls/server.crt").write_text("not a certificate")
    report = report_of(host)
    assert report["attention"][0].startswith("certificate edge ")
    assert "cannot be read" in report["attention"][0]


def test_a_tampered_deploy_record_breaks_the_chain_and_names_the_line(host):
    tamper(host.root / "log/deploys.log", 2, '"requested_by": "monitor"', '"requested_by": "mallory"')
    report = report_of(host)
    assert not report["audit"]["deploys"]["ok"]
    assert report["attention"] == [
        "audit chain deploys: audit log NOT OK: deploys.log line 3: chain broken "
        "(the previous record was changed or removed)"
    ]


def test_a_tampered_monitor_record_breaks_its_chain(host):
    host.monitor_polled()
    tamper(host.root / "monitor/log/audit.jsonl", 1, '"apps": 2', '"apps": 3')
    attention = report_of(host)["attention"]
    assert attention == [
        "audit chain monitor: audit log NOT OK: audit.jsonl line 2: chain broken "
        "(the previous record was changed or removed)"
    ]


def test_a_pending_request_is_shown_from_the_spool(host):
    host.monitor_requested("hello", sha(7))
    pending = report_of(host)["apps"][0]["pending"]
    assert pending["sha"] == sha(7)
    assert pending["where"] == "requests"
    (host.root / "spool/requests/hello.json").unlink()  # the deployer took it and is deploying
    assert report_of(host)["apps"][0]["pending"] == {"sha": sha(7), "since": None, "where": "deploying"}


def test_a_monitor_that_stopped_polling_needs_attention(host):
    host.clock.now = NOW + 30 * 5 + 61
    report = report_of(host)
    assert report["attention"] == ["monitor: its last poll was 211 s ago (more than 210 s): is the service running?"]


def test_the_monitor_s_raised_interval_and_token_budget_are_reported(host):
    host.monitor.audit.write("interval_adjusted", interval=154, configured=30, repos=2, cost=2)
    (host.root / "monitor/github-token").write_text("x")
    host.monitor.spent = []
    host.monitor._save_state()
    host.monitor.budget_key = "token"
    host.monitor.spent = [NOW - 5, NOW - 4000]  # one in the last hour
    host.monitor._save_state()
    monitor = report_of(host)["monitor"]
    assert (monitor["effective_interval"], monitor["interval"]) == (154, 30)
    assert (monitor["mode"], monitor["budget_left"]) == ("token", 4499)
    assert "every 154 s (configured 30 s)" in _status.render_text(report_of(host))


def test_a_host_without_the_monitor_says_so(host):
    host.monitor_config.unlink()
    report = report_of(host)
    assert report["monitor"] == {"installed": False}
    assert report["verdict"] == "ok"


def test_disk_findings_are_shown_and_a_nearly_full_disk_needs_attention(host):
    host.write_findings([{"check": "encryption_at_rest", "path": "/srv", "message": "The data directory ..."}])

    def statvfs(path):
        full = path.endswith("log")
        return SimpleNamespace(f_blocks=1000, f_frsize=4096, f_bavail=50 if full else 500)

    report = report_of(host, statvfs=statvfs)
    assert report["disk"]["findings"] == [
        {"check": "encryption_at_rest", "path": "/srv", "message": "The data directory ..."}
    ]
    assert report["attention"] == [f"disk: {host.root / 'log'} has 5.0% free (below 10%)"]


def test_one_app_s_view_has_its_verdict_alone(host):
    host.certificates(edge_days=1)
    host.probe.set("extra", "x", sha(4), health="unhealthy")
    report = report_of(host)
    hello = _status.for_app(report, "hello")
    assert [a["name"] for a in hello["apps"]] == ["hello"]
    assert hello["verdict"] == "ok"
    assert _status.for_app(report, "extra")["verdict"] == "attention"
    with pytest.raises(KeyError):
        _status.for_app(report, "nope")


def test_only_the_last_deploys_are_kept_and_other_events_are_skipped(host):
    host.engine.audit.write("deploy_request_rejected", file="x.json", reason="not JSON", requested_by="monitor")
    for n in range(20):
        host.deploy("hello", sha(100 + n))
    deploys = report_of(host)["apps"][0]["deploys"]
    assert [d["sha"] for d in deploys] == [sha(119 - n) for n in range(5)]


@pytest.mark.parametrize("block", [64, 333, 65536])
def test_the_last_deploys_read_backwards_across_blocks_match_a_forward_read(host, monkeypatch, block):
    for n in range(30):
        host.deploy("hello" if n % 3 else "extra", sha(200 + n), seconds=n)
    path = host.root / "log/deploys.log"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    expected = {
        app: [_status._deploy_entry(r) for r in reversed(records) if r.get("app") == app][:4]
        for app in ("hello", "extra")
    }
    monkeypatch.setattr(_status, "TAIL_BLOCK", block)
    assert _status.deploy_history(path, ["hello", "extra"], 4) == expected
    assert _status.deploy_history(path, ["hello", "never"], 2)["never"] == []  # read to the start: none


def test_settings_refuse_unknown_keys_and_bad_values():
    assert StatusSettings.from_mapping({"apps": ["hello"], "renew_before_days": 14}).renew_before_days == 14
    with pytest.raises(ValueError, match="unknown status settings: renew_days"):
        StatusSettings.from_mapping({"renew_days": 14})
    with pytest.raises(ValueError, match=r"apps\[1\] \('Bad_Name'\) is not an app name"):
        StatusSettings.from_mapping({"apps": ["hello", "Bad_Name"]})
    with pytest.raises(ValueError, match="renew_before_days must be a whole number"):
        StatusSettings.from_mapping({"renew_before_days": 1.5})
    with pytest.raises(ValueError, match="deploys_shown must be a int"):
        StatusSettings.from_mapping({"deploys_shown": True})
    with pytest.raises(ValueError, match="state_dir must be an absolute path"):
        StatusSettings.from_mapping({"state_dir": "relative/dir"})


def test_the_docker_probe_keeps_no_environment_or_mounts():
    attrs = {
        "Name": "/hello-1",
        "State": {"Status": "running", "Health": {"Status": "healthy"}, "StartedAt": "t"},
        "Config": {"Labels": {"secure_streamlit.sha": sha(1)}, "Env": ["API_TOKEN=secret"]},
        "HostConfig": {"NanoCpus": 500_000_000, "Memory": 0, "Binds": ["/etc:/etc"]},
        "Mounts": [{"Source": "/etc/streamlit-apps/secrets/hello"}],
    }
    seen = {}

    def list_(all=False, filters=None):
        seen.update(all=all, filters=filters)
        return [SimpleNamespace(attrs=attrs)]

    probe = DockerProbe(SimpleNamespace(containers=SimpleNamespace(list=list_)))
    (info,) = probe.containers("hello")
    assert seen == {"all": True, "filters": {"label": "secure_streamlit.app=hello"}}
    assert info == {
        "name": "hello-1",
        "status": "running",
        "health": "healthy",
        "restarts": 0,
        "exit_code": None,
        "started_at": "t",
        "sha": sha(1),
        "cpus": 0.5,
        "memory_bytes": None,
        "pids_limit": None,
    }


def test_state_files_through_a_link_are_not_followed(host):
    state = host.root / "state/hello/state.json"
    target = host.root / "elsewhere.json"
    target.write_text(state.read_text())
    state.unlink()
    os.symlink(target, state)
    assert report_of(host)["apps"][0]["serving"] is None


def test_a_snapshot_is_checked_against_the_schema():
    _status.validate_report({"schema": SCHEMA, "generated_at": "t", "verdict": "ok", "apps": []})
    with pytest.raises(ValueError, match="schema 'secure-streamlit-status/0'"):
        _status.validate_report(
            {"schema": "secure-streamlit-status/0", "generated_at": "t", "verdict": "ok", "apps": []}
        )
    with pytest.raises(ValueError, match="missing verdict, apps"):
        _status.validate_report({"schema": SCHEMA, "generated_at": "t"})


def test_days_are_counted_from_the_injected_clock(host):
    host.clock.now = NOW + 60 * DAY
    host.monitor_polled()
    report = report_of(host)
    edge = next(c for c in report["certificates"] if c["kind"] == "edge")
    assert edge["days_left"] == 20.0
    assert edge["status"] == "expiring"


# -- backups (roles/backup's state file, written by the real backup library) ------------------------------
def _backup_state(host: Host, tmp_path, *, backup_ok: bool, check_ok: bool) -> str:
    import dataclasses

    from ansible_collections.secure_streamlit.hosting.plugins.module_utils import _backup

    state_dir = tmp_path / "backup-state"
    state_dir.mkdir(mode=0o700)
    settings = _backup.BackupSettings(repository="/srv/repo", state_file=str(state_dir / "state.json"))
    run = _backup.BackupRun(settings, runner=None, clock=lambda: host.clock() - 3600)  # type: ignore[arg-type]
    run._record("backup", {"ok": backup_ok, "error": "" if backup_ok else "restic backup (platform): exit code 1: x"})
    run._record("check", {"ok": check_ok, "error": ""})
    host.settings = dataclasses.replace(host.settings, backup_state=settings.state_file)
    return settings.state_file


def test_a_host_whose_backups_succeed_needs_no_attention_for_them(host, tmp_path):
    _backup_state(host, tmp_path, backup_ok=True, check_ok=True)
    report = report_of(host)
    assert report["verdict"] == "ok", report["attention"]
    assert report["backup"]["backup"]["ok"] is True
    assert "backup: ok, last success" in _status.render_text(report)


def test_a_failed_backup_needs_attention_and_says_why(host, tmp_path):
    _backup_state(host, tmp_path, backup_ok=False, check_ok=True)
    report = report_of(host)
    assert report["verdict"] == "attention"
    assert "backup: the last backup failed: restic backup (platform): exit code 1: x" in report["attention"]
    assert "backup: no successful backup for more than 36 h" in report["attention"]


def test_a_host_without_backups_configured_reports_none(host):
    assert report_of(host)["backup"] is None


def test_a_deploy_key_s_public_half_is_shown_and_nothing_else_of_it(host, tmp_path):
    keys = tmp_path / "repo-auth"
    (keys / "hello").mkdir(parents=True)
    public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExample0 secure-streamlit hello@lab"
    (keys / "hello/id_ed25519.pub").write_text(public + "\n")
    (keys / "hello/id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n")
    (keys / "extra").mkdir()
    (keys / "extra/id_ed25519.pub").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nplanted\n")
    host.settings = dataclasses.replace(host.settings, repo_auth_dir=str(keys))
    report = report_of(host)
    by_name = {app["name"]: app for app in report["apps"]}
    assert by_name["hello"]["deploy_key"] == public
    assert by_name["extra"]["deploy_key"] is None
    text = _status.render_text(report)
    assert f"deploy key (add it to the repository, read-only): {public}" in text
    assert "PRIVATE" not in text
    assert "secret" not in json.dumps(report)


def test_a_data_directory_over_its_unenforced_size_needs_attention(host, tmp_path):
    data = tmp_path / "data"
    (data / "hello").mkdir(parents=True)
    (data / "hello/rows.db").write_bytes(os.urandom(3 << 20))
    host.settings = dataclasses.replace(host.settings, apps_data_dir=str(data))
    reason = "/srv/streamlit/apps is on ext4 (/) mounted without project quotas: it needs the mount option prjquota"
    quota = {"size_bytes": 2 << 20, "enforced": False, "reason": reason, "project_id": 1}
    (tmp_path / "state/hello/quota.json").write_text(json.dumps(quota))
    (tmp_path / "state/extra/quota.json").write_text(json.dumps(quota | {"size_bytes": 1 << 30}))
    report = report_of(host)
    by_name = {app["name"]: app for app in report["apps"]}
    assert by_name["hello"]["data"]["usage_bytes"] >= 3 << 20
    assert by_name["extra"]["data"] == {"size_bytes": 1 << 30, "usage_bytes": 0, "enforced": False, "reason": reason}
    assert report["attention"] == [
        f"app hello: its data uses {by_name['hello']['data']['usage_bytes'] / (1 << 20):.1f} MiB, over its size "
        f"of 2.0 MiB (not enforced: {reason})"
    ]
    assert "  data: 0.0 MiB of 1024.0 MiB (not enforced)" in _status.render_text(report)


def test_without_a_recorded_size_there_is_no_data_entry(host):
    report = report_of(host)
    assert [app["data"] for app in report["apps"]] == [None, None]
    assert report["verdict"] == "ok"


# -- a replicated app (a swarm service) on the swarm's manager ----------------------------------------------
NODES = [
    {
        "ID": "n1",
        "Description": {"Hostname": "manager-1"},
        "Spec": {"Availability": "active"},
        "Status": {"State": "ready"},
    },
    {
        "ID": "n2",
        "Description": {"Hostname": "worker-1"},
        "Spec": {"Availability": "active"},
        "Status": {"State": "ready"},
    },
    {
        "ID": "n3",
        "Description": {"Hostname": "worker-2"},
        "Spec": {"Availability": "drain"},
        "Status": {"State": "down"},
    },
]


def swarm_task(
    slot, node, state, sha_, *, desired="running", port=30001, at="2027-01-15T07:55:00.123456789Z", **status
):
    return {
        "ID": f"task-{slot}-{node}-{state}-{at}",
        "Slot": slot,
        "NodeID": node,
        "DesiredState": desired,
        "Spec": {
            "ContainerSpec": {
                "Image": f"manager-1:5000/secure-streamlit/web:abc@sha256:{'0' * 64}",
                "Labels": {"secure_streamlit.app": "web", "secure_streamlit.sha": sha_},
                "Env": ["DB_PASSWORD=hunter2"],
                "Secrets": [{"SecretName": "web.token.0123456789ab", "File": {"Name": "token"}}],
            }
        },
        "Status": {
            "Timestamp": at,
            "State": state,
            "Message": status.get("message", "started" if state == "running" else ""),
            "Err": status.get("err", ""),
            "PortStatus": {"Ports": [{"TargetPort": 8501, "PublishedPort": port, "PublishMode": "host"}]}
            if port
            else {},
        },
    }


class FakeSwarmClient:
    """docker-py's APIClient calls SwarmProbe makes, over a service, its tasks and the node list."""

    def __init__(self, tasks, *, replicas=3, sha_=None, error=None, update=None):
        self.service = {
            "ID": "svc1",
            "Spec": {
                "Name": "app-web",
                "Labels": {"secure_streamlit.app": "web", "secure_streamlit.sha": sha_ or sha(2)},
                "Mode": {"Replicated": {"Replicas": replicas}},
            },
        } | ({"UpdateStatus": update} if update else {})
        self.task_list = tasks
        self.error = error
        self.api = self

    def services(self, filters):
        if self.error:
            raise self.error
        return [self.service] if filters["name"] == self.service["Spec"]["Name"] else []

    def tasks(self, filters):
        assert filters == {"service": "svc1"}
        return self.task_list

    def nodes(self):
        return NODES


def three_running():
    return [
        swarm_task(1, "n1", "running", sha(2), port=30001),
        swarm_task(2, "n2", "running", sha(2), port=30002),
        swarm_task(3, "n3", "running", sha(2), port=30003),
    ]


@pytest.fixture
def swarm_host(tmp_path):
    host = Host(tmp_path, ["web", "hello"]).healthy()
    host.engine.remember_serving("web", sha(2), "app-web")  # what _deploy_service records
    host.probe.by_app["web"] = []  # the manager's own task container is the swarm's, not looked at
    return host


def test_a_replicated_app_shows_each_task_s_node_slot_port_and_since(swarm_host):
    report = report_of(swarm_host, swarm=_status.SwarmProbe(FakeSwarmClient(three_running())))
    assert report["verdict"] == "ok", report["attention"]
    web = next(a for a in report["apps"] if a["name"] == "web")
    replicas = web["replicas"]
    assert (replicas["service"], replicas["desired"], replicas["running"], replicas["running_at_sha"]) == (
        "app-web",
        3,
        3,
        3,
    )
    assert [(t["slot"], t["node"], t["port"], t["state"], t["healthy"]) for t in replicas["tasks"]] == [
        (1, "manager-1", 30001, "running", True),
        (2, "worker-1", 30002, "running", True),
        (3, "worker-2", 30003, "running", True),
    ]
    first = replicas["tasks"][0]
    assert first["since"] == "2027-01-15T07:55:00Z"
    assert first["sha"] == sha(2)
    assert first["image"] == "manager-1:5000/secure-streamlit/web:abc"
    assert (replicas["tasks"][2]["node_state"], replicas["tasks"][2]["node_availability"]) == ("down", "drain")
    assert web["health"]["state"] == "healthy"
    hello = next(a for a in report["apps"] if a["name"] == "hello")
    assert "replicas" not in hello  # a single-host app is as before
    assert hello["health"]["state"] == "healthy"
    text = _status.render_text(report)
    assert f"  service app-web: 3 of 3 replicas run {sha(2)[:12]} (3 running)" in text
    assert "    3     worker-2  down/drain       running" in text
    dumped = json.dumps(report)
    assert "hunter2" not in dumped
    assert "DB_PASSWORD" not in dumped
    assert "web.token" not in dumped
    _status.validate_report(json.loads(dumped))


def test_a_replica_no_node_can_take_needs_attention_and_says_why(swarm_host):
    tasks = [
        *three_running()[:2],
        swarm_task(
            3,
            "",
            "pending",
            sha(2),
            port=None,
            message="pending task scheduling",
            err="no suitable node (scheduling constraints not satisfied on 3 nodes)",
        ),
    ]
    report = report_of(swarm_host, swarm=_status.SwarmProbe(FakeSwarmClient(tasks)))
    assert report["verdict"] == "attention"
    (problem,) = [p for p in report["attention"] if p.startswith("app web")]
    assert problem == (
        f"app web: 2 of 3 replicas run {sha(2)[:12]}; slot 3 on no node: pending: no suitable node "
        "(scheduling constraints not satisfied on 3 nodes)"
    )
    web = next(a for a in report["apps"] if a["name"] == "web")
    assert web["health"]["state"] == "degraded"
    assert web["replicas"]["tasks"][2]["node"] == "-"
    assert "no suitable node" in _status.render_text(report)


def test_a_slot_whose_tasks_keep_failing_counts_the_swarm_s_restarts(swarm_host):
    failing = [
        swarm_task(
            3, "n3", "failed", sha(2), desired="shutdown", at=f"2027-01-15T07:5{i}:00Z", err="task: non-zero exit (1)"
        )
        for i in range(3)
    ]
    tasks = [*three_running()[:2], *failing, swarm_task(3, "n3", "starting", sha(2), at="2027-01-15T07:59:00Z")]
    report = report_of(swarm_host, swarm=_status.SwarmProbe(FakeSwarmClient(tasks)))
    web = next(a for a in report["apps"] if a["name"] == "web")
    slot3 = web["replicas"]["tasks"][2]
    assert (slot3["state"], slot3["healthy"], slot3["restarts"], slot3["last_error"]) == (
        "starting",
        False,
        3,
        "task: non-zero exit (1)",
    )
    assert len(web["replicas"]["tasks"]) == 3  # one entry per slot, not per task of its history
    assert "app web: 2 of 3 replicas run" in report["attention"][0]


def test_replicas_of_an_old_commit_do_not_count_during_an_update(swarm_host):
    tasks = three_running()
    tasks[0] = swarm_task(1, "n1", "running", sha(1))
    client = FakeSwarmClient(tasks, update={"State": "updating", "Message": "update in progress"})
    report = report_of(swarm_host, swarm=_status.SwarmProbe(client))
    web = next(a for a in report["apps"] if a["name"] == "web")
    assert (web["replicas"]["running"], web["replicas"]["running_at_sha"]) == (3, 2)
    assert web["attention"] == [
        f"2 of 3 replicas run {sha(2)[:12]} (the swarm's update is updating); "
        f"slot 1 on manager-1: running {sha(1)[:12]}"
    ]


def test_an_engine_that_is_no_swarm_manager_changes_nothing(host):
    error = type("APIError", (Exception,), {"status_code": 503})("This node is not a swarm manager")
    plain = report_of(host)
    report = report_of(host, swarm=_status.SwarmProbe(FakeSwarmClient([], error=error)))
    assert report == plain


def test_a_service_the_deploy_state_names_but_the_swarm_lacks_needs_attention(swarm_host):
    report = report_of(swarm_host, swarm=_NoService())
    web = next(a for a in report["apps"] if a["name"] == "web")
    assert web["health"]["state"] == "missing"
    assert web["attention"] == [
        "the deploy state says its service app-web serves, but this engine lists no such service "
        "(removed, or the engine is no swarm manager any more)"
    ]
    assert _status.render_text(report)  # a missing service has no task table


class _NoService:
    def service(self, app):
        return None


def test_a_swarm_that_does_not_answer_is_the_engine_s_problem_once(swarm_host):
    client = FakeSwarmClient([], error=ConnectionError("socket refused"))
    report = report_of(swarm_host, swarm=_status.SwarmProbe(client))
    assert report["engine"]["error"] == "ConnectionError: socket refused"
    assert [p for p in report["attention"] if "engine" in p] == [
        "engine: the container engine did not answer (ConnectionError: socket refused): the apps' health is unknown"
    ]


def test_a_report_without_replicas_still_reads_and_a_bad_one_is_refused(host):
    report = json.loads(json.dumps(report_of(host)))
    _status.validate_report(report)  # a snapshot written before replicas existed
    assert "service app-" not in _status.render_text(report)
    report["apps"][0]["replicas"] = ["not", "an", "object"]
    with pytest.raises(ValueError, match="replicas is not an object"):
        _status.validate_report(report)
