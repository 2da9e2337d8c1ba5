"""The deploy engine (plugins/module_utils/_deploy.py) with a real git repository, a real edge library on
files, and a stand-in for the Docker engine (the real engine runs in molecule/apps): the decisions and the
promises -- a broken commit never replaces the one serving, a restore brings back exactly what served."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils import _deploy
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import Defaults, parse_apps
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._deploy import (
    LABEL_APP,
    LABEL_SHA,
    Engine,
    Settings,
    cache_image_dockerfile,
    dockerfile,
    ensure_data_dir,
    write_file_at,
)
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._egress import interface_name
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._nginx_upstream import Edge
from tests.git_server import GitServer


class FakeContainer:
    def __init__(self, engine: FakeDocker, name: str, image: str, labels: dict, gate: tuple[int, bytes]) -> None:
        self.engine, self.name, self.labels = engine, name, labels
        self.status = "running"
        self.address = f"172.18.0.{len(engine.created) + 2}"
        self.attrs = {"Image": image, "State": {"Status": "running"}, "RestartCount": 0}
        self.gate_answer = gate
        self.removed = False
        self.network = "streamlit-apps"

    def reload(self) -> None:
        self.attrs["State"]["Status"] = self.status
        self.attrs["NetworkSettings"] = {"Networks": {self.network: {"IPAddress": self.address}}}

    def exec_run(self, command, **_kwargs):
        self.engine.execs.append(command)
        return self.gate_answer

    def logs(self, tail: int = 10) -> bytes:
        return b"Traceback (most recent call last):\nModuleNotFoundError: No module named 'clinic_risk_scores'\n"

    def start(self) -> None:
        self.status = "running"
        self.address = f"172.18.0.{100 + len(self.engine.created)}"  # a restart moves the address

    def remove(self, force: bool = False) -> None:
        self.removed = True
        self.engine.containers_by_name.pop(self.name, None)


class FakeDocker:
    """The part of the Docker SDK the engine uses."""

    def __init__(self) -> None:
        self.containers_by_name: dict[str, FakeContainer] = {}
        self.images_by_tag: dict[str, SimpleNamespace] = {}
        self.created: list[str] = []
        self.builds: list[str] = []
        self.build_kwargs: list[dict] = []
        self.execs: list = []
        self.gate = (0, b'{"gate": 1, "ok": true, "exceptions": []}\n')
        self.build_error: Exception | None = None
        self.containers = SimpleNamespace(list=self._list, run=self._run)
        self.images = SimpleNamespace(get=self._get, build=self._build, list=self._images, remove=self._remove)
        self.networks_by_name: dict[str, SimpleNamespace] = {}
        self.networks = SimpleNamespace(list=self._networks, create=self._create_network)

    def _networks(self, names=None, filters=None):
        found = [n for n in self.networks_by_name.values() if names is None or n.name in names]
        key = (filters or {}).get("label")
        return [n for n in found if key is None or key in n.attrs["Labels"]]

    def _create_network(self, name, *, driver, internal, options, labels):
        def remove():
            self.networks_by_name.pop(name, None)

        network = SimpleNamespace(
            name=name, internal=internal, attrs={"Options": options, "Labels": labels, "Driver": driver}, remove=remove
        )
        self.networks_by_name[name] = network
        return network

    def _list(self, all: bool = False, filters: dict | None = None):
        key, _, value = (filters or {}).get("label", "").partition("=")
        return [
            c for c in self.containers_by_name.values() if key in c.labels and (not value or c.labels[key] == value)
        ]

    def _run(self, image, *, name, labels, **kwargs):
        container = FakeContainer(self, name, image, labels, self.gate)
        container.mounts = kwargs.get("mounts", [])
        container.environment = kwargs.get("environment", {})
        container.run_kwargs = kwargs
        container.network = kwargs.get("network", "streamlit-apps")
        container.extra_hosts = kwargs.get("extra_hosts")
        self.containers_by_name[name] = container
        self.created.append(name)
        return container

    def _get(self, tag):
        if tag not in self.images_by_tag:
            raise LookupError(tag)
        return self.images_by_tag[tag]

    def _build(self, *, path, tag, **kwargs):
        self.builds.append(tag)
        self.build_kwargs.append(kwargs)
        assert (Path(path) / "Dockerfile").is_file()
        if self.build_error:
            raise self.build_error
        self.images_by_tag[tag] = SimpleNamespace(
            id=f"sha256:{len(self.builds)}",
            attrs={"Created": str(time.time())},
            labels={LABEL_APP: tag.split("/")[1].split(":")[0]},
        )

    def _images(self, filters=None):
        return list(self.images_by_tag.values())

    def _remove(self, image_id, force=False):
        self.images_by_tag = {k: v for k, v in self.images_by_tag.items() if v.id != image_id}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def world(tmp_path: Path):
    """A bare repository with two commits on main, the engine's files, an edge on files."""
    work, bare = tmp_path / "work", tmp_path / "hello.git"
    work.mkdir()
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("init", "-q", "-b", "main", cwd=work)
    git("config", "user.email", "t@lab.test", cwd=work)
    git("config", "user.name", "t", cwd=work)
    shas = []
    for version in ("v1", "v2"):
        (work / "streamlit_app.py").write_text(f"import streamlit as st\nst.title('{version}')\n")
        (work / "requirements.txt").write_text("# none\n")
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", version, cwd=work)
        shas.append(git("rev-parse", "HEAD", cwd=work))
    git("push", "-q", str(bare), "HEAD:refs/heads/main", cwd=work)
    platform = tmp_path / "platform"
    platform.mkdir()
    for name in ("streamlit_launch.py", "streamlit_gate.py", "streamlit_secure_context-0-py3-none-any.whl"):
        (platform / name).write_text(name)
    (tmp_path / "upstreams").mkdir()
    (tmp_path / "results").mkdir(mode=0o750)
    settings = Settings(
        component_wheel=str(platform / "streamlit_secure_context-0-py3-none-any.whl"),
        launcher=str(platform / "streamlit_launch.py"),
        gate=str(platform / "streamlit_gate.py"),
        state_dir=str(tmp_path / "state"),
        audit_log=str(tmp_path / "deploys.log"),
        lock_dir=str(tmp_path / "locks"),
        results_dir=str(tmp_path / "results"),
        extra_ca_dir=str(tmp_path / "no-cas"),
        upstream_dir=str(tmp_path / "upstreams"),
        data_dir=str(tmp_path / "data"),
        egress_dir=str(tmp_path / "egress"),
        egress_ruleset=str(tmp_path / "egress.nft"),
        drain_seconds=0,
        health_timeout=5,
    )
    nginx_calls: list = []

    def nginx(argv):
        nginx_calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, "", "")

    docker = FakeDocker()
    edge = Edge(upstream_dir=tmp_path / "upstreams", check_candidate=None, run=nginx, pid_file=None)
    nft_calls: list = []

    def nft(argv):
        nft_calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, "", "")

    names = {"target.lab.test": ["198.18.0.10"]}
    engine = Engine(
        settings,
        docker,
        edge=edge,
        sleep=lambda _s: None,
        probe=lambda _url, _t: 200,
        nft=nft,
        lookup=lambda host: names.get(host, []),
    )
    # A local remote, as the lab's and the tests' git URLs are allowed to be.
    (app,) = parse_apps([{"name": "hello", "repo": f"file://{bare}"}], Defaults(git_allow_file_urls=True))
    return SimpleNamespace(
        tmp=tmp_path,
        engine=engine,
        docker=docker,
        app=app,
        shas=shas,
        edge=edge,
        nginx=nginx_calls,
        nft=nft_calls,
        names=names,
    )


def records(world) -> list[dict]:
    return [json.loads(line) for line in (world.tmp / "deploys.log").read_text().splitlines()]


def serving_address(world) -> str:
    return world.edge.current("hello")


def test_a_first_deploy_runs_the_branch_head_and_switches_the_edge(world):
    outcome = world.engine.deploy(world.app, requested_by="site.yml")
    assert outcome.status == "deployed", outcome
    assert outcome.sha == world.shas[1]
    (container,) = world.docker.containers_by_name.values()
    assert serving_address(world) == f"{container.address}:8501"
    assert container.labels[LABEL_SHA] == world.shas[1]
    assert world.docker.execs[0][-1] == "/app/streamlit_app.py"  # the gate ran the script
    answer = json.loads((world.tmp / "results/hello.json").read_text())
    assert answer["status"] == "deployed"
    assert answer["requested_by"] == "site.yml"
    assert records(world)[-1]["status"] == "deployed"


def test_a_second_run_changes_nothing(world):
    world.engine.deploy(world.app)
    again = world.engine.deploy(world.app)
    assert again.status == "unchanged"
    assert again.reason == "already serving with these settings"
    assert len(world.docker.created) == 1
    assert world.engine.deploy(world.app, check_mode=True).status == "unchanged"


def test_a_script_that_raises_at_import_is_refused_and_the_old_version_keeps_serving(world):
    world.engine.deploy(world.app, world.shas[0])
    before = serving_address(world)
    world.docker.gate = (
        1,
        b"noise\n"
        b'{"gate": 1, "ok": false, "exceptions": [{"type": "ModuleNotFoundError", '
        b'"message": "No module named \'clinic_risk_scores\'"}]}\n',
    )
    outcome = world.engine.deploy(world.app, world.shas[1], requested_by="monitor")
    assert outcome.status == "failed"
    assert outcome.step == "gate"
    assert "ModuleNotFoundError: No module named 'clinic_risk_scores'" in outcome.reason
    assert serving_address(world) == before
    survivors = [c for c in world.docker.containers_by_name.values() if not c.removed]
    assert [c.labels[LABEL_SHA] for c in survivors] == [world.shas[0]]
    assert records(world)[-1]["reason"].startswith("gate failed")
    answer = json.loads((world.tmp / "results/hello.json").read_text())
    assert answer["status"] == "failed"
    # A later deploy without a SHA (site.yml, a reboot) keeps the one that served, never the failed head.
    assert world.engine.deploy(world.app).sha == world.shas[0]


def test_a_build_failure_records_the_failing_commands_last_lines(world):
    error = RuntimeError("The command '/bin/sh -c pip install' returned a non-zero code: 1")
    error.build_log = [  # type: ignore[attr-defined]
        {"stream": f"Step {n}/12\n"} for n in range(30)
    ] + [{"stream": "ERROR: No matching distribution found for clinic-risk-scores==9.9\n"}]
    world.docker.build_error = error
    outcome = world.engine.deploy(world.app)
    assert outcome.status == "failed"
    assert outcome.step == "build"
    assert outcome.tail[-1] == "ERROR: No matching distribution found for clinic-risk-scores==9.9"
    assert records(world)[-1]["output_tail"][-1].startswith("ERROR: No matching distribution")
    assert serving_address(world) is None


def test_a_branch_head_that_failed_before_is_not_deployed_by_a_later_run(world):
    world.docker.build_error = RuntimeError("boom")
    assert world.engine.deploy(world.app, world.shas[1]).status == "failed"
    world.docker.build_error = None
    outcome = world.engine.deploy(world.app)
    assert outcome.status == "failed"
    assert "failed before" in outcome.reason


def test_after_a_restart_the_same_commit_serves_again_at_its_new_address(world):
    world.engine.deploy(world.app, world.shas[0])
    (container,) = world.docker.containers_by_name.values()
    container.status = "exited"  # a host reboot stopped it
    outcome = world.engine.deploy(world.app, requested_by="restore")
    assert outcome.status == "deployed"
    assert outcome.sha == world.shas[0]  # not the branch head
    assert container.status == "running"
    assert serving_address(world) == f"{container.address}:8501"
    assert len(world.docker.builds) == 1  # nothing rebuilt


def test_an_address_that_moved_under_a_running_container_is_re_pointed(world):
    world.engine.deploy(world.app)
    (container,) = world.docker.containers_by_name.values()
    container.address = "172.18.0.77"  # the engine restarted and handed out another address
    outcome = world.engine.deploy(world.app, requested_by="restore")
    assert outcome.status == "deployed"
    assert serving_address(world) == "172.18.0.77:8501"


def test_changed_run_settings_redeploy_the_running_commit(world):
    world.engine.deploy(world.app)
    changed = dataclasses.replace(world.app, env={"GREETING": "x"})
    outcome = world.engine.deploy(changed)
    assert outcome.status == "deployed"
    assert len(world.docker.created) == 2
    assert len(world.docker.builds) == 1  # same image, other container settings


def test_the_lock_is_released_when_its_holder_dies(world):
    lock_dir = world.tmp / "locks"
    pid = os.fork()
    if pid == 0:
        with world.engine.lock("hello"):
            os._exit(0)  # dies holding it
    os.waitpid(pid, 0)
    with world.engine.lock("hello"):
        pass
    assert (lock_dir / "hello.lock").exists()


def test_removing_an_app_leaves_nothing_of_it(world):
    world.engine.deploy(world.app)
    removed = world.engine.remove_absent(set())
    assert removed == ["hello"]
    assert world.docker.containers_by_name == {}
    assert world.docker.images_by_tag == {}
    assert not (world.tmp / "state/hello").exists()
    assert not (world.tmp / "locks/hello.lock").exists()


def data_app(world):
    return dataclasses.replace(world.app, data_mount="/data")


def test_an_app_with_data_gets_its_own_directory_mounted_read_write(world):
    app = data_app(world)
    outcome = world.engine.deploy(app)
    assert outcome.status == "deployed", outcome.reason
    directory = world.tmp / "data/hello"
    info = directory.stat()
    assert oct(info.st_mode & 0o777) == "0o700"
    if os.geteuid() == 0:
        assert (info.st_uid, info.st_gid) == (world.engine.settings.uid, world.engine.settings.uid)
    (container,) = [c for c in world.docker.containers_by_name.values() if not c.removed]
    data_mounts = [m for m in container.mounts if m["Target"] == "/data"]
    assert data_mounts == [{"Target": "/data", "Source": str(directory), "Type": "bind", "ReadOnly": False}]


def test_data_outlives_deploys_rollbacks_and_the_apps_removal_until_purged(world):
    app = data_app(world)
    world.engine.deploy(app, world.shas[1])
    (world.tmp / "data/hello/notes.db").write_text("rows\n")
    world.engine.deploy(app, world.shas[0])  # a rollback
    assert (world.tmp / "data/hello/notes.db").read_text() == "rows\n"
    assert world.engine.remove_absent(set()) == ["hello"]
    assert (world.tmp / "data/hello/notes.db").read_text() == "rows\n"
    assert world.engine.purge_data(["hello"], keep=["other"], check_mode=True) == ["hello"]
    assert (world.tmp / "data/hello").is_dir()
    assert world.engine.purge_data(["hello"], keep=["hello"]) == []  # a deployed app's data is never purged
    assert world.engine.purge_data(["hello", "never-was"], keep=[]) == ["hello"]
    assert not (world.tmp / "data/hello").exists()


def test_changing_the_data_mount_redeploys(world):
    first = world.engine.deploy(data_app(world))
    moved = world.engine.deploy(dataclasses.replace(world.app, data_mount="/srv/notes"))
    assert moved.status == "deployed"
    assert moved.container != first.container


def test_an_app_with_a_database_reaches_the_servers_socket_read_only_with_no_password_in_env(world):
    app = dataclasses.replace(world.app, database="postgresql")
    assert world.engine.deploy(app).status == "deployed"
    (container,) = [c for c in world.docker.containers_by_name.values() if not c.removed]
    (socket,) = [m for m in container.mounts if m["Target"] == "/run/postgresql"]
    assert socket == {"Target": "/run/postgresql", "Source": "/run/postgresql", "Type": "bind", "ReadOnly": True}
    assert container.environment == {
        "PGHOST": "/run/postgresql",
        "PGDATABASE": "app_hello",
        "PGUSER": "app_hello",
        "PGPASSFILE": "/run/secrets/pgpass",
        "DATABASE_URL_FILE": "/run/secrets/database-url",
    }


def test_a_data_directory_swapped_for_a_link_is_refused(tmp_path):
    root = tmp_path / "data"
    root.mkdir(mode=0o711)
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    (root / "hello").symlink_to(victim)
    with pytest.raises(NotADirectoryError):  # O_NOFOLLOW | O_DIRECTORY on a link
        ensure_data_dir(root, "hello", 10001)
    assert oct(victim.stat().st_mode & 0o777) == "0o755"
    assert victim.stat().st_uid == os.geteuid()
    root.chmod(0o777)
    with pytest.raises(PermissionError, match="writable by others"):
        ensure_data_dir(root, "other", 10001)
    with pytest.raises(ValueError, match="not a directory name"):
        ensure_data_dir(root, "..", 10001)


# -- root's writes -------------------------------------------------------------------------------------------
def test_root_refuses_to_write_into_a_directory_another_user_controls(tmp_path):
    shared = tmp_path / "results"
    shared.mkdir()
    if os.geteuid() == 0:
        os.chown(shared, 65534, 65534)
        with pytest.raises(PermissionError, match="not owned by root"):
            write_file_at(shared, "hello.json", b"{}", 0o640)
        os.chown(shared, 0, 0)
    shared.chmod(0o770)
    with pytest.raises(PermissionError, match="writable by others"):
        write_file_at(shared, "hello.json", b"{}", 0o640)
    assert not (shared / "hello.json").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a racer as another user")
def test_an_unprivileged_racer_never_makes_root_write_or_chmod_elsewhere():
    """The old spool let the monitor swap results/<app>.json for a link while root wrote and chmod'ed it
    by path (won 4 of 4 tries): root could be made to chmod 0644 any file. Replayed against the new layout."""
    tmp_path = Path(tempfile.mkdtemp(prefix="deploy-race-"))  # pytest's own tmp is closed to other users
    tmp_path.chmod(0o755)
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o750)
    results = spool / "results"
    results.mkdir(mode=0o750)
    os.chown(spool, 0, 65534)
    os.chown(results, 0, 65534)
    target = tmp_path / "shadow"
    target.write_text("secret\n")
    target.chmod(0o600)
    stop = tmp_path / "stop"
    racer = os.fork()
    if racer == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            attempts = 0
            while not os.path.lexists(stop) and attempts < 200_000:
                attempts += 1
                for action in ("file", "dir"):
                    try:
                        if action == "dir":
                            os.rename(results, spool / "moved")
                            os.symlink(tmp_path, results)
                        else:
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(results / "hello.json")
                            os.symlink(target, results / "hello.json")
                    except OSError:
                        pass
        finally:
            os._exit(0)
    try:
        for number in range(300):
            write_file_at(results, "hello.json", json.dumps({"n": number}).encode(), 0o640, group=65534)
    finally:
        stop.touch()
        os.waitpid(racer, 0)
    assert target.read_text() == "secret\n"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert json.loads((results / "hello.json").read_text()) == {"n": 299}
    assert not (results / "hello.json").is_symlink()
    assert not (spool / "moved").exists()
    shutil.rmtree(tmp_path)


def test_settings_refuse_unknown_keys_and_wrong_types():
    with pytest.raises(ValueError, match="unknown deploy settings: health_timout"):
        Settings.from_mapping({"health_timout": 5})
    with pytest.raises(ValueError, match="build_nocache must be true or false"):
        Settings.from_mapping({"build_nocache": "yes"})
    assert Settings.from_mapping({"keep_images": "2", "health_timeout": 30}).keep_images == 2


def test_every_app_image_starts_with_the_cache_images_layers(world):
    """The cache image (scripts/app-cache-image.sh) is built from this text: an app's Dockerfile must repeat
    it instruction for instruction, or --cache-from finds nothing to reuse."""
    settings = Settings(streamlit_version="1.67.0", uid=10002, base_image="example/base:1")
    cache = cache_image_dockerfile(settings)
    app = dockerfile(world.app, world.shas[0], settings, "component.whl")
    layers = cache.split("\n", 1)[1]
    assert app.split("\n", 1)[1].startswith(layers)
    assert layers.startswith("FROM example/base:1\n")
    assert 'pip install -q "streamlit==1.67.0"' in layers
    assert "--uid 10002" in layers
    assert "component" not in cache  # nothing of the component or of an app
    assert world.app.name not in cache
    # The component's install comes after and cannot move the pinned Streamlit.
    assert "pip install -q -c /opt/venv/constraints.txt /tmp/component/component.whl" in app


def test_builds_reuse_the_cache_images_layers_only_when_one_is_set(world):
    world.engine.deploy(world.app, world.shas[0])
    assert world.docker.build_kwargs[-1]["cache_from"] is None
    world.engine.settings = dataclasses.replace(world.engine.settings, build_cache_image="secure-streamlit/app-cache:x")
    world.engine.deploy(world.app, world.shas[1])
    assert world.docker.build_kwargs[-1]["cache_from"] == ["secure-streamlit/app-cache:x"]
    assert Settings.from_mapping({"build_cache_image": "a/b:c"}).build_cache_image == "a/b:c"


def test_labels_are_the_ones_the_roles_and_tests_look_for():
    assert (LABEL_APP, LABEL_SHA) == ("secure_streamlit.app", "secure_streamlit.sha")
    assert _deploy.PORT == 8501


def test_a_restore_that_fails_does_not_mark_the_serving_commit_failed(world):
    world.engine.deploy(world.app, world.shas[0])
    (container,) = world.docker.containers_by_name.values()
    container.status = "exited"
    container.attrs["RestartCount"] = 2  # it had crashed and been restarted before the reboot
    world.engine.probe = lambda _url, _timeout: 503  # and now it does not come up in time
    outcome = world.engine.deploy(world.app, requested_by="restore")
    assert outcome.status == "failed"
    assert outcome.step == "health"
    assert world.shas[0] not in world.engine.load_state("hello")["failed"]
    assert world.engine.load_state("hello")["serving"]["sha"] == world.shas[0]
    assert not container.removed
    assert json.loads((world.tmp / "results/hello.json").read_text())["status"] == "deployed"  # the last answer


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], ids=["0022", "0027", "0077"])
def test_the_build_context_is_the_same_whatever_the_callers_umask(world, umask):
    """File modes are part of the engine's layer cache key: the deployer (UMask=0027) and site.yml's
    module (0022) must hand the engine the same context, or each switch of caller rebuilds every layer."""
    cas = world.tmp / "cas"
    cas.mkdir()
    (cas / "lab-ca.crt").write_text("a CA\n")
    world.engine.settings = dataclasses.replace(world.engine.settings, extra_ca_dir=str(cas))
    previous = os.umask(umask)
    try:
        build = world.engine.fetch(world.app, world.shas[1], "FROM scratch\n")
    finally:
        os.umask(previous)
    modes = {str(p.relative_to(build)): p.stat().st_mode & 0o777 for p in build.rglob("*") if p.is_file()}
    assert set(modes) >= {"Dockerfile", "app.tar", "requirements.txt", "extra-ca/lab-ca.crt", "streamlit_gate.py"}
    assert set(modes.values()) == {0o644}, modes


def test_an_app_on_a_plain_git_server_deploys_from_its_url(world):
    """provider git: the engine fetches exactly the head from the app's URL (real git over smart HTTP)."""
    with GitServer(world.tmp / "server") as server:
        server.create("acme/hello")
        git("push", "-q", str(server.root / "acme/hello.git"), "HEAD:refs/heads/main", cwd=world.tmp / "work")
        (app,) = parse_apps([{"name": "hello", "repo": server.url("acme/hello")}], Defaults())
        assert (app.provider, app.url) == ("git", server.url("acme/hello"))
        outcome = world.engine.deploy(app, requested_by="github-repo-monitor")
    assert outcome.status == "deployed", outcome
    assert outcome.sha == world.shas[1]


def test_the_status_app_gets_the_snapshot_read_only_and_the_same_hardening_as_any_app(world):
    """The status app (status_app_enabled) is deployed like any app: the same container settings, and one more
    mount, the status snapshot's directory, read-only. Other apps neither get it nor change fingerprint."""
    (world.tmp / "snapshot").mkdir()
    plain_fingerprint = world.engine.fingerprints(world.app, world.shas[0])[2]
    assert world.engine.deploy(world.app).status == "deployed"
    (plain,) = [c for c in world.docker.containers_by_name.values() if not c.removed]
    settings = dataclasses.replace(
        world.engine.settings, status_app="hello", status_snapshot_dir=str(world.tmp / "snapshot")
    )
    other = dataclasses.replace(world.app, name="other")
    world.engine.settings = dataclasses.replace(settings, status_app="other")
    assert world.engine.fingerprints(world.app, world.shas[0])[2] == plain_fingerprint
    world.engine.settings = settings
    assert world.engine.fingerprints(world.app, world.shas[0])[2] != plain_fingerprint  # it redeploys
    assert world.engine.fingerprints(other, world.shas[0])[2] != plain_fingerprint  # (another name)
    assert world.engine.deploy(world.app).status == "deployed"
    (status,) = [c for c in world.docker.containers_by_name.values() if not c.removed]
    snapshot_mount = {"Target": "/run/secure-streamlit-status", "Source": str(world.tmp / "snapshot"), "Type": "bind"}
    assert status.mounts == [*plain.mounts, {**snapshot_mount, "ReadOnly": True}]
    hardening = {k: v for k, v in plain.run_kwargs.items() if k not in ("mounts", "labels", "name")}
    assert {k: v for k, v in status.run_kwargs.items() if k not in ("mounts", "labels", "name")} == hardening
    assert hardening["read_only"] is True
    assert hardening["cap_drop"] == ["ALL"]
    assert hardening["security_opt"] == ["no-new-privileges:true"]
    assert hardening["user"] == "10001:10001"
    assert all("docker.sock" not in m["Source"] for m in status.mounts)


# -- controlled egress
EGRESS = [
    {"allow_any": False, "host": "target.lab.test", "port": 8080},
    {"allow_any": False, "cidr": "10.20.0.0/16", "port": 443},
]


def with_egress(world, egress=EGRESS):
    return dataclasses.replace(world.app, egress=[dict(e) for e in egress])


def test_an_app_without_egress_stays_on_the_internal_network_and_touches_no_rules(world):
    world.engine.deploy(world.app)
    (container,) = world.docker.containers_by_name.values()
    assert container.network == "streamlit-apps"
    assert container.extra_hosts is None
    assert world.nft == []
    assert world.docker.networks_by_name == {}


def test_an_app_with_egress_runs_alone_on_its_own_bridge_behind_its_rules(world):
    outcome = world.engine.deploy(with_egress(world))
    assert outcome.status == "deployed", outcome
    (container,) = world.docker.containers_by_name.values()
    assert container.network == "streamlit-egress-hello"
    # The name is resolved on the host at deploy time; the container gets it in /etc/hosts.
    assert container.extra_hosts == {"target.lab.test": "198.18.0.10"}
    network = world.docker.networks_by_name["streamlit-egress-hello"]
    assert network.internal is False
    assert network.attrs["Options"]["com.docker.network.bridge.name"] == interface_name("hello")
    part = (world.tmp / "egress/hello.nft").read_text()
    assert "ip daddr 198.18.0.10/32 tcp dport 8080 counter accept" in part
    assert "ip daddr 10.20.0.0/16 tcp dport 443 counter accept" in part
    assert oct((world.tmp / "egress/hello.nft").stat().st_mode & 0o777) == "0o600"
    ruleset = str(world.tmp / "egress.nft")
    assert world.nft == [["-c", "-f", ruleset], ["-f", ruleset]]  # checked, then loaded
    assert f'include "{world.tmp}/egress/*.nft"' in (world.tmp / "egress.nft").read_text()
    # The edge reaches it on its own network.
    assert serving_address(world) == f"{container.address}:8501"
    world.nft.clear()
    again = world.engine.deploy(with_egress(world))
    assert again.status == "unchanged"
    # Unchanged rules still in the kernel are not reloaded (a reload resets every app's counters).
    assert world.nft == [["list", "chain", "inet", "secure_streamlit_egress", f"app_{interface_name('hello')}"]]


def test_a_name_that_does_not_resolve_fails_before_anything_starts(world):
    outcome = world.engine.deploy(with_egress(world, [{"allow_any": False, "host": "gone.lab.test", "port": 1}]))
    assert outcome.status == "failed"
    assert outcome.step == "egress"
    assert "gone.lab.test" in outcome.reason
    assert world.docker.created == []
    assert world.nft == []
    assert records(world)[-1]["step"] == "egress"


def test_a_destination_on_the_host_itself_fails_before_anything_starts(world):
    world.engine.is_local = {"198.18.0.10"}.__contains__  # target.lab.test's address, as if it were the host's
    outcome = world.engine.deploy(with_egress(world))
    assert (outcome.status, outcome.step) == ("failed", "egress")
    assert "resolves to 198.18.0.10, which is this host itself" in outcome.reason
    assert world.docker.created == []
    assert world.nft == []


def test_a_ruleset_the_kernel_refuses_fails_the_deploy_before_the_container_starts(world):
    def refuse(argv):
        world.nft.append(list(argv))
        return subprocess.CompletedProcess(argv, 1, "", "Error: syntax error, unexpected junk\n")

    world.engine.nft = refuse
    outcome = world.engine.deploy(with_egress(world))
    assert (outcome.status, outcome.step) == ("failed", "egress")
    assert outcome.tail == ["Error: syntax error, unexpected junk"]
    assert world.docker.created == []


def test_a_name_whose_address_moved_redeploys_with_the_new_rule(world):
    world.engine.deploy(with_egress(world))
    world.names["target.lab.test"] = ["198.18.0.11"]
    assert world.engine.deploy(with_egress(world), check_mode=True).status == "would_deploy"
    moved = world.engine.deploy(with_egress(world))
    assert moved.status == "deployed", moved
    container = world.docker.containers_by_name[moved.container]
    assert container.extra_hosts == {"target.lab.test": "198.18.0.11"}
    assert "ip daddr 198.18.0.11/32 tcp dport 8080" in (world.tmp / "egress/hello.nft").read_text()


def test_dropping_egress_closes_the_route_and_moves_the_app_back(world):
    world.engine.deploy(with_egress(world))
    world.nft.clear()
    outcome = world.engine.deploy(world.app)
    assert outcome.status == "deployed", outcome
    assert world.docker.containers_by_name[outcome.container].network == "streamlit-apps"
    assert not (world.tmp / "egress/hello.nft").exists()
    assert world.nft[-1] == ["-f", str(world.tmp / "egress.nft")]


def test_an_app_that_leaves_loses_its_rules_and_its_network(world):
    world.engine.deploy(with_egress(world))
    world.nft.clear()
    assert world.engine.remove_absent(set(), check_mode=True) == ["hello"]
    assert (world.tmp / "egress/hello.nft").exists()
    assert world.engine.remove_absent(set()) == ["hello"]
    assert not (world.tmp / "egress/hello.nft").exists()
    assert world.docker.networks_by_name == {}
    assert world.nft[-1] == ["-f", str(world.tmp / "egress.nft")]


def test_rules_the_kernel_lost_are_loaded_again_on_the_next_deploy(world):
    world.engine.deploy(with_egress(world))
    world.nft.clear()

    def flushed(argv):
        world.nft.append(list(argv))
        return subprocess.CompletedProcess(argv, 1 if argv[0] == "list" else 0, "", "")

    world.engine.nft = flushed
    assert world.engine.deploy(with_egress(world)).status == "unchanged"
    assert world.nft[1:] == [["-c", "-f", str(world.tmp / "egress.nft")], ["-f", str(world.tmp / "egress.nft")]]


# -- apps with replicas above 1: swarm services deployed from the swarm's first manager
class FakeSwarmBackend:
    """What the engine asks of _swarm_backend.SwarmBackend (its own tests cover the swarm's side)."""

    def __init__(self) -> None:
        self.settings = SimpleNamespace(constraints_of=lambda _app: ["node.hostname!=w2"])
        self.deploys: list[tuple] = []
        self.labels: dict[str, str] = {}
        self.error: _deploy.DeployFailed | None = None
        self.removed: list[set] = []

    def fingerprint(self, app, run_fp: str) -> str:
        return f"svc-{app.replicas}-{run_fp[:8]}"

    def serving(self, app) -> tuple[str, str]:
        return self.labels.get("sha", ""), self.labels.get("fp", "")

    def up_to_date(self, app, sha: str, fingerprint: str) -> bool:
        return self.labels == {"sha": sha, "fp": fingerprint}

    def deploy(self, app, sha, local_image, build_fp, run_fp, secret_files) -> float:
        self.deploys.append((app.name, sha, local_image, build_fp, run_fp, dict(secret_files)))
        if self.error:
            raise self.error
        self.labels = {"sha": sha, "fp": run_fp}
        return 12.5

    def remove_absent(self, keep: set, *, check_mode: bool = False) -> list[str]:
        self.removed.append(set(keep))
        return ["gone"]


def service_world(world, **changes):
    swarm = FakeSwarmBackend()
    world.engine.swarm = swarm
    secrets = world.tmp / "secrets"
    (secrets / "hello").mkdir(parents=True)
    (secrets / "hello" / "api-key").write_bytes(b"s3cret-value")
    world.engine.settings = dataclasses.replace(world.engine.settings, secrets_dir=str(secrets))
    (app,) = parse_apps(
        [{"name": "hello", "repo": world.app.url, "replicas": 3, "secrets": {"api-key": "vault_key"}, **changes}],
        Defaults(git_allow_file_urls=True),
    )
    return swarm, app


def test_a_service_is_built_and_gated_once_here_then_handed_to_the_swarm(world):
    swarm, app = service_world(world)
    outcome = world.engine.deploy(app, requested_by="site.yml")
    assert outcome.status == "deployed", outcome
    assert outcome.container == "app-hello"
    [(name, sha, image, _build_fp, fingerprint, secrets)] = swarm.deploys
    assert (name, sha) == ("hello", world.shas[1])
    assert image in world.docker.builds
    assert image.startswith("streamlit-apps/hello:")
    assert fingerprint.startswith("svc-3-")
    assert secrets == {"api-key": b"s3cret-value"}
    # The gate ran the script once in a throwaway container on the built image, which is gone.
    [trial] = world.docker.created
    assert trial == f"hello-{world.shas[1][:12]}-gate"
    assert world.docker.execs[0][-1] == "/app/streamlit_app.py"
    assert world.docker.containers_by_name == {}
    # The edge's upstream is the swarm edge watcher's: the engine switches nothing.
    assert world.nginx == []
    assert world.engine.load_state("hello")["serving"]["container"] == "app-hello"
    assert records(world)[-1]["container"] == "app-hello"
    assert json.loads((world.tmp / "results/hello.json").read_text())["status"] == "deployed"


def test_a_service_at_its_commit_and_settings_is_left_alone(world):
    swarm, app = service_world(world)
    world.engine.deploy(app)
    builds = len(world.docker.builds)
    again = world.engine.deploy(app)
    assert again.status == "unchanged"
    assert len(swarm.deploys) == 1
    assert len(world.docker.builds) == builds
    assert world.engine.deploy(app, check_mode=True).status == "unchanged"
    assert world.engine.deploy(app, world.shas[0], check_mode=True).status == "would_deploy"
    assert len(swarm.deploys) == 1


def test_a_service_whose_script_raises_never_reaches_the_swarm(world):
    swarm, app = service_world(world)
    world.engine.deploy(app, world.shas[0])
    world.docker.gate = (
        1,
        b'{"gate": 1, "ok": false, "exceptions": [{"type": "ModuleNotFoundError", "message": "No module named x"}]}\n',
    )
    outcome = world.engine.deploy(app, world.shas[1], requested_by="monitor")
    assert (outcome.status, outcome.step) == ("failed", "gate")
    assert "ModuleNotFoundError" in outcome.reason
    assert outcome.previous == [world.shas[0]]
    assert len(swarm.deploys) == 1  # only the first
    assert world.docker.containers_by_name == {}  # the trial container is removed
    assert world.shas[1] in world.engine.load_state("hello")["failed"]


def test_a_rolled_back_update_marks_the_commit_a_registry_outage_does_not(world):
    swarm, app = service_world(world)
    swarm.error = _deploy.DeployFailed("update", "the swarm rolled app-hello back", ["t1 failed: exit 1"])
    outcome = world.engine.deploy(app, world.shas[0])
    assert (outcome.status, outcome.step, outcome.tail) == ("failed", "update", ["t1 failed: exit 1"])
    assert world.shas[0] in world.engine.load_state("hello")["failed"]
    swarm.error = _deploy.DeployFailed("push", "the registry 10.0.0.1:5000 refused the login (APIError)")
    outcome = world.engine.deploy(app, world.shas[1])
    assert (outcome.status, outcome.step) == ("failed", "push")
    assert world.shas[1] not in world.engine.load_state("hello")["failed"]


def test_a_service_needs_the_swarm_backend_and_no_egress(world):
    _swarm, app = service_world(world)
    world.engine.swarm = None
    outcome = world.engine.deploy(app, world.shas[0])
    assert (outcome.status, outcome.step) == ("failed", "swarm")
    assert "first manager" in outcome.reason
    assert world.engine.load_state("hello")["failed"] == {}
    assert world.engine.deploy(app, world.shas[0], check_mode=True).step == "swarm"
    swarm, app = (
        FakeSwarmBackend(),
        parse_apps(
            [
                {
                    "name": "hello",
                    "repo": world.app.url,
                    "replicas": 2,
                    "egress": [{"host": "target.lab.test", "port": 443}],
                }
            ],
            Defaults(git_allow_file_urls=True),
        )[0],
    )
    world.engine.swarm = swarm
    outcome = world.engine.deploy(app, world.shas[0])
    assert (outcome.status, outcome.step) == ("failed", "egress")
    assert swarm.deploys == []
    assert world.nft == []


def test_a_missing_secret_file_fails_before_anything_starts(world):
    swarm, app = service_world(world)
    (world.tmp / "secrets/hello/api-key").unlink()
    outcome = world.engine.deploy(app, world.shas[0])
    assert (outcome.status, outcome.step) == ("failed", "secrets")
    assert world.docker.created == []
    assert swarm.deploys == []


def test_removal_leaves_the_swarms_task_containers_and_pulled_images_alone(world):
    swarm = FakeSwarmBackend()
    world.engine.swarm = swarm
    task = world.docker._run(
        "10.0.0.1:5000/streamlit-apps/other:abc",
        name="app-other.1.xyz",
        labels={LABEL_APP: "other", "com.docker.swarm.task.id": "xyz"},
    )
    pulled = "10.0.0.1:5000/streamlit-apps/other:abc"
    world.docker.images_by_tag[pulled] = SimpleNamespace(
        id="sha256:pulled", attrs={"Created": "1"}, labels={LABEL_APP: "other"}, tags=[pulled]
    )
    removed = world.engine.remove_absent(set())
    assert removed == ["gone"]  # the backend's, not the task's app
    assert swarm.removed == [set()]
    assert not task.removed
    assert "10.0.0.1:5000/streamlit-apps/other:abc" in world.docker.images_by_tag


def test_replicas_lowered_to_one_remove_the_service_once_the_single_container_serves(world):
    swarm = FakeSwarmBackend()
    world.engine.swarm = swarm
    _swarm, service_app = service_world(world)
    other = dataclasses.replace(service_app, name="triage")
    world.engine.swarm = swarm
    # Only the service's tasks run here (one on the first manager): the service stays.
    world.docker._run("img", name="app-hello.1.x", labels={LABEL_APP: "hello", "com.docker.swarm.task.id": "x"})
    world.engine.remove_absent({"hello", "triage"}, apps=[world.app, other])
    assert swarm.removed[-1] == {"hello", "triage"}
    # Check mode did not deploy the container: it reports the removal the real run will make.
    world.engine.remove_absent({"hello", "triage"}, check_mode=True, apps=[world.app, other])
    assert swarm.removed[-1] == {"triage"}
    # The single container serves through the edge: the service of `hello` goes, `triage`'s (3 replicas) stays.
    assert world.engine.deploy(world.app, world.shas[0]).status == "deployed"
    world.engine.remove_absent({"hello", "triage"}, check_mode=True, apps=[world.app, other])
    assert swarm.removed[-1] == {"triage"}
    world.engine.remove_absent({"hello", "triage"}, apps=[world.app, other])
    assert swarm.removed[-1] == {"triage"}
    assert [c for c in world.docker.containers_by_name.values() if not c.removed and c.name.startswith("hello-")]
    # Without the entries (the old call), every kept app keeps its service.
    world.engine.remove_absent({"hello", "triage"})
    assert swarm.removed[-1] == {"hello", "triage"}


def test_a_single_container_that_does_not_serve_keeps_the_service(world):
    swarm = FakeSwarmBackend()
    world.engine.swarm = swarm
    assert world.engine.deploy(world.app, world.shas[0]).status == "deployed"
    world.engine.edge.switch("hello", "10.9.9.9:8501")  # the edge routes elsewhere (the service's upstream)
    world.engine.remove_absent({"hello"}, apps=[world.app])
    assert swarm.removed[-1] == {"hello"}


def test_the_first_deploy_of_a_service_retires_the_apps_single_container(world):
    world.engine.deploy(world.app, world.shas[0])
    [single] = world.docker.containers_by_name.values()
    _swarm, app = service_world(world)
    task = world.docker._run("img", name="app-hello.1.x", labels={LABEL_APP: "hello", "com.docker.swarm.task.id": "x"})
    assert world.engine.deploy(app, world.shas[1]).status == "deployed"
    assert single.removed
    assert not task.removed
