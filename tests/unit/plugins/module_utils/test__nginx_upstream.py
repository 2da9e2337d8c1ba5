"""The edge switch (plugins/module_utils/_nginx_upstream.py) on real files, with nginx's answers scripted
(the real nginx runs in molecule/tls and molecule/apps)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._nginx_upstream import (
    Edge,
    UpstreamError,
    render,
)


def scripted(answers: dict[str, int], calls: list) -> object:
    def run(argv):
        calls.append(list(argv))
        key = "reload" if "reload" in argv else ("check" if "-t" in argv else "candidate")
        code = answers.get(key, 0)
        return subprocess.CompletedProcess(argv, code, "", "nginx: [emerg] no such host" if code else "")

    return run


@pytest.fixture
def edge(tmp_path: Path):
    calls: list = []
    checker = tmp_path / "check-candidate"
    checker.write_text("#!/bin/sh\n")
    return Edge(upstream_dir=tmp_path, check_candidate=checker, run=scripted({}, calls), pid_file=None), calls


@pytest.mark.parametrize(
    ("app", "server"),
    [
        ("hello\n", "172.18.0.2:8501"),
        ("Hello", "172.18.0.2:8501"),
        ("hello", "172.18.0.2:8501\n"),
        ("hello", "172.18.0.2:8501; } server evil:1"),
        ("hello", "172.18.0.2:0"),
        ("hello", "172.18.0.2:65536"),
        ("hello", "172.18.0.2"),
    ],
)
def test_only_an_app_name_and_host_port_are_ever_written(app, server):
    with pytest.raises(ValueError, match="not"):
        render(app, server)


def test_a_switch_checks_the_candidate_then_the_whole_and_reloads(edge, tmp_path):
    edge, calls = edge
    assert edge.switch("hello", "172.18.0.2:8501")
    assert edge.current("hello") == "172.18.0.2:8501"
    assert len(calls) == 3
    assert calls[0][0].endswith("check-candidate")
    assert calls[1][1:] == ["-t", "-q"]
    assert "reload" in calls[2]
    assert not edge.switch("hello", "172.18.0.2:8501")  # the same: nothing to do
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("failing", ["candidate", "check", "reload"])
def test_a_failed_switch_puts_the_previous_include_back(tmp_path, failing):
    calls: list = []
    checker = tmp_path / "check-candidate"
    checker.write_text("#!/bin/sh\n")
    Edge(upstream_dir=tmp_path, check_candidate=checker, run=scripted({}, calls), pid_file=None).switch(
        "hello", "10.0.0.1:8501"
    )
    before = (tmp_path / "hello.conf").read_text()
    failing_edge = Edge(
        upstream_dir=tmp_path, check_candidate=checker, run=scripted({failing: 1}, calls), pid_file=None
    )
    with pytest.raises(UpstreamError, match="no such host"):
        failing_edge.switch("hello", "10.0.0.2:8501")
    assert (tmp_path / "hello.conf").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["check-candidate", "hello.conf"]


def test_the_include_is_read_without_following_a_link(tmp_path):
    (tmp_path / "elsewhere").write_text("upstream x { server 1.2.3.4:1; }\n")
    (tmp_path / "hello.conf").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        Edge(upstream_dir=tmp_path, check_candidate=None).current("hello")


# -- the wait for the new workers after a reload (a /proc of files, nginx's reload scripted) ---------------
def fake_process(proc: Path, pid: int, ppid: int, title: str) -> None:
    entry = proc / str(pid)
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "status").write_text(f"Name:\tnginx\nPid:\t{pid}\nPPid:\t{ppid}\nUid:\t33\n")
    (entry / "cmdline").write_bytes(title.encode().replace(b" ", b"\0") + b"\0")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0
        self.on_sleep: dict[int, object] = {}

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        action = self.on_sleep.get(self.sleeps)
        if action:
            action()  # type: ignore[operator]


def waiting_edge(tmp_path: Path, clock: Clock, calls: list) -> Edge:
    proc = tmp_path / "proc"
    (tmp_path / "nginx.pid").write_text("100\n")
    fake_process(proc, 100, 1, "nginx: master process /usr/sbin/nginx")
    fake_process(proc, 101, 100, "nginx: worker process")
    fake_process(proc, 102, 100, "nginx: worker process")
    fake_process(proc, 200, 1, "nginx: worker process")  # another nginx's worker: not ours
    (tmp_path / "up").mkdir()
    return Edge(
        upstream_dir=tmp_path / "up",
        check_candidate=None,
        run=scripted({}, calls),
        pid_file=tmp_path / "nginx.pid",
        proc=proc,
        reload_wait=5.0,
        clock=lambda: clock.now,
        sleep=clock.sleep,
    )


def test_a_reload_returns_once_no_worker_of_the_old_configuration_accepts(tmp_path: Path):
    clock, calls = Clock(), []
    edge = waiting_edge(tmp_path, clock, calls)
    proc = tmp_path / "proc"
    assert edge.accepting_workers() == {101, 102}

    def old_ones_told_to_stop() -> None:
        fake_process(proc, 101, 100, "nginx: worker process is shutting down")
        fake_process(proc, 102, 100, "nginx: worker process is shutting down")
        fake_process(proc, 103, 100, "nginx: worker process")

    clock.on_sleep[3] = old_ones_told_to_stop
    assert edge.switch("hello", "10.0.0.1:8501")
    assert clock.sleeps == 3
    assert edge.accepting_workers() == {103}


def test_the_wait_is_bounded_when_the_old_workers_never_stop(tmp_path: Path):
    clock, calls = Clock(), []
    edge = waiting_edge(tmp_path, clock, calls)
    assert edge.switch("hello", "10.0.0.1:8501")  # the switch itself succeeded: nginx -t passed, reloaded
    assert 5.0 <= clock.now < 5.2
    assert edge.wait_replaced({101, 102}) is False


@pytest.mark.parametrize("pid_text", [None, "", "100\n100", "-1", "abc", "0"])
def test_no_wait_without_a_readable_master(tmp_path: Path, pid_text: str | None):
    clock, calls = Clock(), []
    edge = waiting_edge(tmp_path, clock, calls)
    if pid_text is None:
        (tmp_path / "nginx.pid").unlink()
    else:
        (tmp_path / "nginx.pid").write_text(pid_text)
    assert edge.accepting_workers() == set()
    assert edge.switch("hello", "10.0.0.1:8501")
    assert clock.sleeps == 0


def test_a_reload_says_whether_the_new_workers_took_over(tmp_path: Path):
    clock, calls = Clock(), []
    edge = waiting_edge(tmp_path, clock, calls)
    proc = tmp_path / "proc"

    def replaced() -> None:
        fake_process(proc, 101, 100, "nginx: worker process is shutting down")
        fake_process(proc, 102, 100, "nginx: worker process is shutting down")
        fake_process(proc, 103, 100, "nginx: worker process")

    clock.on_sleep[2] = replaced
    assert edge.reload() is True
    assert clock.sleeps == 2


def test_a_reload_says_so_when_the_old_workers_still_accept_at_the_deadline(tmp_path: Path):
    clock, calls = Clock(), []
    assert waiting_edge(tmp_path, clock, calls).reload() is False
    assert 5.0 <= clock.now < 5.2


def test_a_reload_cannot_tell_without_a_master_pid(tmp_path: Path):
    clock, calls = Clock(), []
    edge = waiting_edge(tmp_path, clock, calls)
    (tmp_path / "nginx.pid").unlink()
    assert edge.reload() is None
    assert clock.sleeps == 0
