"""The swarm backend (plugins/module_utils/_swarm_backend.py) against a stand-in for a swarm manager's API:
the service's shape (hardening, dnsrr, host-mode ports, start-first with rollback), secrets by content,
what a rolled-back update reports, and the endpoints the edge gets. The real swarm runs in molecule/swarm."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import Defaults, parse_apps
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._deploy import LABEL_APP, DeployFailed
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_backend import (
    SwarmBackend,
    SwarmSettings,
    image_ref,
    read_password,
    secret_name,
    service_fingerprint,
    service_spec,
)

SHA_OLD = "a" * 40
SHA_NEW = "b" * 40
SHA_BROKEN = "c" * 40
FP = "0123456789abcdef" * 4
NODES = {"n1": "10.0.0.1", "n2": "10.0.0.2", "n3": "10.0.0.3"}


def app(**changes: Any):
    return parse_apps([{"name": "triage", "repo": "acme/triage", "replicas": 3, **changes}], Defaults())[0]


class FakeSwarm:
    """The parts of docker-py a manager's backend calls. An update to a SHA in `broken` never gets healthy:
    the swarm rolls the service back and the old tasks stay (as `failure_action: rollback` does)."""

    def __init__(self, broken: frozenset[str] = frozenset()) -> None:
        self.broken = broken
        self.pushed: list[tuple[str, str]] = []
        self.tagged: list[tuple[str, str, str]] = []
        self.push_error = ""
        self.registry_password = "pw-NeverShown-0123456789"
        self.logins: list[tuple[str, str]] = []
        self.service_list: list[dict[str, Any]] = []
        self.task_list: list[dict[str, Any]] = []
        self.secret_objs: list[SimpleNamespace] = []
        self.ids = itertools.count(1)
        self.ports = itertools.count(30001)
        self.images = SimpleNamespace(get=self._image)
        self.secrets = SimpleNamespace(list=self._secrets_list, create=self._secret_create)
        self.api = SimpleNamespace(
            push=self._push,
            services=self._services,
            create_service=self._create,
            update_service=self._update,
            remove_service=lambda sid: self.service_list.remove(next(s for s in self.service_list if s["ID"] == sid)),
            tasks=lambda filters: [t for t in self.task_list if t["ServiceName"] == filters["service"]],
            inspect_node=lambda node: {"Status": {"Addr": NODES[node]}},
        )

    def _services(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        if "name" in filters:
            return [s for s in self.service_list if s["Spec"]["Name"] == filters["name"]]
        return [s for s in self.service_list if filters["label"] in s["Spec"]["Labels"]]

    def login(self, username: str, password: str, registry: str, reauth: bool) -> dict[str, str]:
        assert reauth
        if password != self.registry_password:
            raise type("APIError", (Exception,), {})(f"login attempt to https://{registry}/v2/ failed")
        self.logins.append((username, registry))
        return {"Status": "Login Succeeded"}

    def _image(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(tag=lambda repo, tag: self.tagged.append((name, repo, tag)))

    def _push(self, repo: str, tag: str, stream: bool, decode: bool):
        assert stream
        assert decode
        self.pushed.append((repo, tag))
        yield {"status": "Pushing"}
        if self.push_error:
            yield {"error": self.push_error}

    def _secrets_list(self, filters: dict[str, str]) -> list[SimpleNamespace]:
        if "name" in filters:
            return [s for s in self.secret_objs if s.name.startswith(filters["name"])]
        key, value = filters["label"].split("=")
        return [s for s in self.secret_objs if s.labels.get(key) == value]

    def _secret_create(self, name: str, data: bytes, labels: dict[str, str]) -> SimpleNamespace:
        secret = SimpleNamespace(id=f"s{next(self.ids)}", name=name, data=data, labels=labels)
        secret.remove = lambda: self.secret_objs.remove(secret)
        self.secret_objs.append(secret)
        return secret

    def _tasks_for(self, spec: dict[str, Any]) -> list[dict[str, Any]]:
        container = spec["TaskTemplate"]["ContainerSpec"]
        return [
            {
                "ID": f"t{next(self.ids)}",
                "ServiceName": spec["Name"],
                "NodeID": node,
                "DesiredState": "running",
                "Status": {
                    "State": "running",
                    "PortStatus": {
                        "Ports": [{"TargetPort": 8501, "PublishedPort": next(self.ports), "PublishMode": "host"}]
                    },
                },
                "Spec": {"ContainerSpec": container},
            }
            for node, _ in zip(itertools.cycle(NODES), range(spec["Mode"]["Replicated"]["Replicas"]), strict=False)
        ]

    @staticmethod
    def _spec(kwargs: dict[str, Any]) -> dict[str, Any]:
        return {
            "Name": kwargs["name"],
            "Labels": kwargs["labels"],
            "TaskTemplate": kwargs["task_template"],
            "Mode": kwargs["mode"],
            "UpdateConfig": kwargs["update_config"],
            "RollbackConfig": kwargs["rollback_config"],
            "EndpointSpec": kwargs["endpoint_spec"],
        }

    def _create(self, **kwargs: Any) -> dict[str, str]:
        spec = self._spec(kwargs)
        service = {"ID": f"svc{next(self.ids)}", "Version": {"Index": 1}, "Spec": spec}
        self.service_list.append(service)
        self.task_list += self._tasks_for(spec)
        return {"ID": service["ID"]}

    def _update(self, sid: str, version: int, **kwargs: Any) -> None:
        service = next(s for s in self.service_list if s["ID"] == sid)
        assert version == service["Version"]["Index"], "updated from a stale version"
        spec = self._spec(kwargs)
        service["Version"]["Index"] += 1
        sha = spec["Labels"]["secure_streamlit.sha"]
        if sha in self.broken:
            # The new task failed its health check within the monitor window: rolled back, old tasks kept.
            failed = self._tasks_for({**spec, "Mode": {"Replicated": {"Replicas": 1}}})[0]
            failed.update(DesiredState="shutdown", Status={"State": "failed", "Err": "task: non-zero exit (1)"})
            self.task_list.append(failed)
            service["UpdateStatus"] = {"State": "rollback_completed", "Message": "rollback completed"}
            return
        for task in self.task_list:
            if task["ServiceName"] == spec["Name"]:
                task.update(DesiredState="shutdown", Status={"State": "shutdown"})
        self.task_list += self._tasks_for(spec)
        service["Spec"] = spec
        service["UpdateStatus"] = {"State": "completed", "Message": "update completed", "n": service["Version"]}


def backend(swarm: FakeSwarm, **settings: Any) -> SwarmBackend:
    clock = itertools.count()
    return SwarmBackend(
        SwarmSettings(registry="manager-swarm:5000", **settings),
        swarm,
        monotonic=lambda: float(next(clock)),
        sleep=lambda _s: None,
    )


def test_the_service_is_hardened_like_a_single_container():
    spec = service_spec(SwarmSettings(registry="m:5000"), app(env={"MODE": "x"}), SHA_NEW, "m:5000/i:t", FP)
    container = spec["task_template"]["ContainerSpec"]
    assert container["User"] == "10001:10001"
    assert container["ReadOnly"] is True
    assert container["CapabilityDrop"] == ["ALL"]
    assert container["Env"] == ["MODE=x"]
    assert container["Mounts"] == [
        {"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": 256 * 1024 * 1024, "Mode": 0o1777}}
    ]
    assert container["Healthcheck"]["Test"][:2] == ["CMD", "/bin/bash"]
    limits = spec["task_template"]["Resources"]["Limits"]
    assert limits == {"NanoCPUs": 1_000_000_000, "MemoryBytes": 1024**3, "Pids": 256}
    assert spec["mode"] == {"Replicated": {"Replicas": 3}}


def test_the_service_has_no_virtual_ip_and_publishes_a_port_per_task_in_host_mode():
    spec = service_spec(SwarmSettings(registry="m:5000"), app(), SHA_NEW, "m:5000/i:t", FP)
    assert spec["endpoint_spec"] == {
        "Mode": "dnsrr",
        "Ports": [{"Protocol": "tcp", "TargetPort": 8501, "PublishMode": "host"}],  # no PublishedPort
    }


def test_updates_start_the_new_task_first_and_roll_back_on_failure():
    spec = service_spec(SwarmSettings(registry="m:5000"), app(), SHA_NEW, "m:5000/i:t", FP)
    assert spec["update_config"]["Order"] == "start-first"
    assert spec["update_config"]["FailureAction"] == "rollback"
    assert spec["update_config"]["Monitor"] == 20 * 10**9
    assert spec["update_config"]["Parallelism"] == 1
    assert spec["rollback_config"]["Order"] == "start-first"


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"replicas": 1, "data": True}, "per-host state"), ({"replicas": 1, "database": "postgresql"}, "per-host")],
)
def test_an_app_with_per_host_state_is_not_a_service(changes, message):
    with pytest.raises(ValueError, match=message):
        service_spec(SwarmSettings(registry="m:5000"), app(**changes), SHA_NEW, "m:5000/i:t", FP)


def test_bad_settings_and_names_are_refused():
    with pytest.raises(ValueError, match="host:port"):
        SwarmSettings(registry="m:5000\n")
    with pytest.raises(ValueError, match="host:port"):
        SwarmSettings(registry="https://m:5000")
    with pytest.raises(ValueError, match="commit SHA"):
        service_spec(SwarmSettings(registry="m:5000"), app(), "main", "i", FP)
    with pytest.raises(ValueError, match="build fingerprint"):
        image_ref(SwarmSettings(registry="m:5000"), app(), "../x")
    with pytest.raises(ValueError, match="secret file name"):
        secret_name(app(), "../passwd", b"x")


def test_a_first_deploy_pushes_once_creates_the_service_and_returns_the_tasks_endpoints():
    swarm = FakeSwarm()
    engine = backend(swarm)
    engine.deploy(app(), SHA_OLD, "streamlit-apps/triage:local", FP, "run", {"api-key": b"s3cret"})
    assert swarm.tagged == [("streamlit-apps/triage:local", "manager-swarm:5000/streamlit-apps/triage", FP[:16])]
    assert swarm.pushed == [("manager-swarm:5000/streamlit-apps/triage", FP[:16])]
    [service] = swarm.service_list
    assert (
        service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        == f"manager-swarm:5000/streamlit-apps/triage:{FP[:16]}"
    )
    [ref] = service["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
    assert ref["File"] == {"Name": "api-key", "UID": "10001", "GID": "10001", "Mode": 0o400}
    assert ref["SecretName"].startswith("triage.api-key.")
    assert engine.task_endpoints(app()) == [("10.0.0.1", 30001), ("10.0.0.2", 30002), ("10.0.0.3", 30003)]


def test_a_new_commit_is_a_rolling_update_and_unchanged_secrets_are_reused():
    swarm = FakeSwarm()
    engine = backend(swarm)
    engine.deploy(app(), SHA_OLD, "img", FP, "run", {"api-key": b"s3cret"})
    engine.deploy(app(), SHA_NEW, "img", FP, "run", {"api-key": b"s3cret"})
    assert len(swarm.service_list) == 1
    assert len(swarm.secret_objs) == 1
    assert {t["Spec"]["ContainerSpec"]["Labels"]["secure_streamlit.sha"] for t in engine.running(app(), SHA_NEW)} == {
        SHA_NEW
    }
    assert len(engine.task_endpoints(app())) == 3


def test_a_changed_secret_is_a_new_secret_and_the_old_one_goes():
    swarm = FakeSwarm()
    engine = backend(swarm)
    engine.deploy(app(), SHA_OLD, "img", FP, "run", {"api-key": b"one"})
    engine.deploy(app(), SHA_OLD, "img", FP, "run", {"api-key": b"two"})
    assert [s.data for s in swarm.secret_objs] == [b"two"]
    assert all(s.labels == {LABEL_APP: "triage"} for s in swarm.secret_objs)


def test_a_broken_commit_is_rolled_back_and_the_old_tasks_keep_serving():
    swarm = FakeSwarm(broken=frozenset({SHA_BROKEN}))
    engine = backend(swarm)
    engine.deploy(app(), SHA_OLD, "img", FP, "run", {})
    before = engine.task_endpoints(app())
    with pytest.raises(DeployFailed) as caught:
        engine.deploy(app(), SHA_BROKEN, "img", FP, "run", {})
    assert caught.value.step == "update"
    assert "rolled app-triage back (rollback_completed" in str(caught.value)
    assert any("non-zero exit" in line for line in caught.value.tail)
    assert engine.task_endpoints(app()) == before
    assert len(engine.running(app(), SHA_OLD)) == 3
    # A later good commit is not mistaken for the earlier rollback.
    engine.deploy(app(), SHA_NEW, "img", FP, "run", {})
    assert len(engine.running(app(), SHA_NEW)) == 3


def test_a_registry_refusal_fails_the_push_before_the_service_changes():
    swarm = FakeSwarm()
    swarm.push_error = "unauthorized: authentication required"
    with pytest.raises(DeployFailed, match="unauthorized") as caught:
        backend(swarm).deploy(app(), SHA_OLD, "img", FP, "run", {})
    assert caught.value.step == "push"
    assert swarm.service_list == []


def test_tasks_that_never_run_fail_the_deploy_at_the_deadline():
    swarm = FakeSwarm()
    engine = backend(swarm, converge_timeout=5.0)
    swarm._tasks_for = lambda spec: []  # no node can run it (e.g. the image cannot be pulled)
    with pytest.raises(DeployFailed, match="0 of 3 tasks at bbbbbbbbbbbb running after 5 s"):
        engine.deploy(app(), SHA_NEW, "img", FP, "run", {})


def test_remove_takes_the_service_and_its_secrets():
    swarm = FakeSwarm()
    engine = backend(swarm)
    engine.deploy(app(), SHA_OLD, "img", FP, "run", {"api-key": b"s3cret"})
    assert engine.remove(app()) is True
    assert swarm.service_list == []
    assert swarm.secret_objs == []
    assert engine.remove(app()) is False


def test_an_earlier_rollback_is_not_taken_for_this_deploys_until_the_status_changes():
    swarm = FakeSwarm(broken=frozenset({SHA_BROKEN}))
    engine = backend(swarm)
    engine.deploy(app(), SHA_OLD, "img", FP, "run", {})
    with pytest.raises(DeployFailed):
        engine.deploy(app(), SHA_BROKEN, "img", FP, "run", {})
    # The manager takes a moment to start the next update: its status still says the rollback.
    real_update = swarm.api.update_service
    polls = iter([True, True, False])

    def late_update(sid, version, **kwargs):
        real_update(sid, version, **kwargs)
        service = swarm.service_list[0]
        done = service["UpdateStatus"]
        service["UpdateStatus"] = {"State": "rollback_completed", "Message": "rollback completed"}
        original_service = engine.service

        def service_view(a):
            if next(polls, False):
                return original_service(a)
            service["UpdateStatus"] = done
            return original_service(a)

        engine.service = service_view

    swarm.api.update_service = late_update
    engine.deploy(app(), SHA_NEW, "img", FP, "run", {})
    assert len(engine.running(app(), SHA_NEW)) == 3


def test_a_service_that_does_not_exist_yet_has_no_tasks():
    swarm = FakeSwarm()

    def not_found(filters):
        raise type("NotFound", (Exception,), {"status_code": 404})("service app-triage not found")

    swarm.api.tasks = not_found
    assert backend(swarm).tasks(app()) == []


def password_file(tmp_path: Path, text: str = "pw-NeverShown-0123456789\n", mode: int = 0o600) -> str:
    path = tmp_path / "password"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_the_settings_come_from_the_roles_mapping_and_refuse_what_they_do_not_know():
    settings = SwarmSettings.from_mapping(
        {
            "registry": "10.0.0.1:5000",
            "registry_user": "swarm",
            "registry_password_file": "/etc/docker/registry/swarm/password",
            "constraints": {"triage": ["node.hostname==w1"], "intake": []},
            "uid": "10001",
            "converge_timeout": 300,
            "update_monitor": "10s",
        }
    )
    assert settings.uid == 10001
    assert settings.converge_timeout == 300.0
    assert settings.constraints_of("triage") == ["node.hostname==w1"]
    assert settings.constraints_of("other") == []
    for values, message in (
        ({"registry": "m:5000", "registy_user": "x"}, "unknown swarm settings: registy_user"),
        ({"registry_user": "x"}, "need registry"),
        ({"registry": "m:5000", "uid": True}, "uid must be a number"),
        ({"registry": "m:5000", "uid": "ten"}, "uid must be a number"),
        ({"registry": "m:5000", "update_delay": 2}, "update_delay must be text"),
        ({"registry": "m:5000", "constraints": ["node.hostname==w1"]}, "constraints must map"),
        ({"registry": "m:5000", "constraints": {"a": ["node.role==manager"]}}, "constraints of 'a'"),
        ({"registry": "m:5000", "constraints": {"a": ["node.hostname==w1 || x"]}}, "constraints of 'a'"),
        ({"registry": "m:5000", "registry_user": "swarm"}, "go together"),
        ({"registry": "m:5000", "registry_user": "swarm", "registry_password_file": "pw"}, "absolute path"),
        ({"registry": "m:5000", "registry_user": "a b", "registry_password_file": "/pw"}, "not a user name"),
    ):
        with pytest.raises(ValueError, match=message):
            SwarmSettings.from_mapping(values)


def test_the_password_is_read_from_a_root_only_regular_file_and_never_shown(tmp_path):
    assert read_password(password_file(tmp_path)) == "pw-NeverShown-0123456789"
    for text, mode, message in (
        ("pw-NeverShown\n", 0o640, "mode 0600"),
        ("", 0o600, "one line"),
        ("pw-NeverShown\nsecond\n", 0o600, "one line"),
    ):
        with pytest.raises(DeployFailed, match=message) as caught:
            read_password(password_file(tmp_path, text, mode))
        assert "NeverShown" not in str(caught.value)
    link = tmp_path / "link"
    os.symlink(password_file(tmp_path), link)
    with pytest.raises(DeployFailed, match="cannot open") as caught:
        read_password(str(link))
    with pytest.raises(DeployFailed, match="cannot open"):
        read_password(str(tmp_path / "missing"))


def test_a_deploy_logs_in_with_the_password_from_the_file_before_the_push(tmp_path):
    swarm = FakeSwarm()
    engine = backend(swarm, registry_user="swarm", registry_password_file=password_file(tmp_path))
    engine.deploy(app(), SHA_OLD, "img", FP, "run", {})
    assert swarm.logins == [("swarm", "manager-swarm:5000")]
    assert len(swarm.pushed) == 1
    # No user: the engine's own login (config.json) is used, nothing is read.
    swarm = FakeSwarm()
    backend(swarm).deploy(app(), SHA_OLD, "img", FP, "run", {})
    assert swarm.logins == []


def test_a_refused_login_fails_the_push_step_without_the_password(tmp_path):
    swarm = FakeSwarm()
    swarm.registry_password = "another"
    engine = backend(swarm, registry_user="swarm", registry_password_file=password_file(tmp_path))
    with pytest.raises(DeployFailed, match="refused the login") as caught:
        engine.deploy(app(), SHA_OLD, "img", FP, "run", {})
    assert caught.value.step == "push"
    assert "NeverShown" not in str(caught.value) + " ".join(caught.value.tail)
    assert swarm.pushed == []
    assert swarm.service_list == []


def test_the_placement_constraints_go_into_the_service():
    swarm = FakeSwarm()
    engine = backend(swarm, constraints={"triage": ("node.hostname!=w2", "node.hostname!=m1")})
    engine.deploy(app(), SHA_OLD, "img", FP, "run", {})
    placement = swarm.service_list[0]["Spec"]["TaskTemplate"]["Placement"]
    assert placement == {"Constraints": ["node.hostname!=m1", "node.hostname!=w2"]}
    spec = service_spec(SwarmSettings(registry="m:5000"), app(), SHA_NEW, "m:5000/i:t", FP)
    assert spec["task_template"]["Placement"] == {"Constraints": []}


def test_the_service_is_up_to_date_only_at_this_commit_fingerprint_and_every_task_running():
    swarm = FakeSwarm()
    engine = backend(swarm)
    assert engine.up_to_date(app(), SHA_OLD, "fp") is False
    assert engine.serving(app()) == ("", "")
    fingerprint = engine.fingerprint(app(), "run")
    engine.deploy(app(), SHA_OLD, "img", FP, fingerprint, {})
    assert engine.serving(app()) == (SHA_OLD, fingerprint)
    assert engine.up_to_date(app(), SHA_OLD, fingerprint) is True
    assert engine.up_to_date(app(), SHA_NEW, fingerprint) is False
    assert engine.up_to_date(app(), SHA_OLD, engine.fingerprint(app(), "other run")) is False
    # The number of tasks and the placement are part of it: a change is an update.
    assert engine.fingerprint(app(replicas=4), "run") != fingerprint
    assert service_fingerprint("run", app(), ["node.hostname==w1"]) != fingerprint
    swarm.task_list[0]["Status"]["State"] = "starting"  # one task down: not up to date
    assert engine.up_to_date(app(), SHA_OLD, fingerprint) is False


def test_services_of_apps_that_left_the_inventory_are_removed():
    swarm = FakeSwarm()
    engine = backend(swarm)
    engine.deploy(app(), SHA_OLD, "img", FP, "run", {"api-key": b"s3cret"})
    engine.deploy(app(name="intake"), SHA_OLD, "img", FP, "run", {})
    assert engine.apps() == {"triage", "intake"}
    assert engine.remove_absent({"intake"}, check_mode=True) == ["triage"]
    assert len(swarm.service_list) == 2
    assert engine.remove_absent({"intake"}) == ["triage"]
    assert [s["Spec"]["Name"] for s in swarm.service_list] == ["app-intake"]
    assert swarm.secret_objs == []


def test_an_engine_that_is_no_manager_has_no_services():
    swarm = FakeSwarm()

    def not_a_manager(filters):
        raise type("APIError", (Exception,), {"status_code": 503})("This node is not a swarm manager")

    swarm.api.services = not_a_manager
    assert backend(swarm).apps() == set()
    assert backend(swarm).remove_absent(set()) == []
