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
    return Edge(upstream_dir=tmp_path, check_candidate=checker, run=scripted({}, calls)), calls


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
    Edge(upstream_dir=tmp_path, check_candidate=checker, run=scripted({}, calls)).switch("hello", "10.0.0.1:8501")
    before = (tmp_path / "hello.conf").read_text()
    failing_edge = Edge(upstream_dir=tmp_path, check_candidate=checker, run=scripted({failing: 1}, calls))
    with pytest.raises(UpstreamError, match="no such host"):
        failing_edge.switch("hello", "10.0.0.2:8501")
    assert (tmp_path / "hello.conf").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["check-candidate", "hello.conf"]


def test_the_include_is_read_without_following_a_link(tmp_path):
    (tmp_path / "elsewhere").write_text("upstream x { server 1.2.3.4:1; }\n")
    (tmp_path / "hello.conf").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        Edge(upstream_dir=tmp_path, check_candidate=None).current("hello")
