"""The host baseline (hardening, audit) refuses bad settings and unsafe hosts before any change.

Like test_bad_input.py: site.yml runs against this machine over a local connection in --check mode as a
safety net, and the assertions look at which tasks ran before the failure. The last test runs the real
disk check against this machine's own root file system (a plain block device, not encrypted) in the
default `fail` mode.
"""

from __future__ import annotations

import pytest

from tests.helpers import run_playbook_json

# Tasks allowed to run before the failure: they read, never write.
READ_ONLY_TASKS = {
    "Gathering Facts",
    "Check every role's settings before any role changes the host",
    "Read how many user namespaces the kernel allows",
    "Find out where the data and log directories are stored",
    "Start with no findings",
    "Collect the directories that are not encrypted at rest",
    "Collect the file systems with too little free space",
}


def assert_stopped_before_any_change(report: dict, failed_task: str, message_parts: list[str]) -> None:
    tasks = report["plays"][0]["tasks"]
    ran = [t for t in tasks if "validation-probe" in t["hosts"] and not t["hosts"]["validation-probe"].get("skipped")]
    failed = [t for t in ran if t["hosts"]["validation-probe"].get("failed")]
    assert len(failed) == 1, [t["task"]["name"] for t in failed]
    assert failed[0]["task"]["name"].split(" : ")[-1].startswith(failed_task), failed[0]["task"]["name"]
    result = failed[0]["hosts"]["validation-probe"]
    message = " ".join(
        [result.get("msg", "")] + [r.get("msg", "") for r in result.get("results", []) if r.get("failed")]
    )
    for part in message_parts:
        assert part in message, message

    for task in ran[: ran.index(failed[0])]:
        name = task["task"]["name"].split(" : ")[-1]
        assert not task["hosts"]["validation-probe"].get("changed"), f"{name} changed the host before the failure"
        assert name in READ_ONLY_TASKS or name.startswith(("Fail ", "Validating arguments")), name
    assert report["stats"]["validation-probe"]["changed"] == 0


@pytest.mark.parametrize(
    ("extra_vars", "failed_task", "message_parts"),
    [
        (
            '{"hardening_encryption_check": "maybe"}',
            "Validating arguments against arg spec",
            ["hardening_encryption_check", "fail", "warn"],
        ),
        (
            '{"hardening_data_dirs": ["srv/phi"]}',
            "Fail on a data, log or findings path that is not absolute",
            ["hardening_data_dirs", "srv/phi", "absolute"],
        ),
        (
            '{"hardening_findings_file": "findings.json"}',
            "Fail on a data, log or findings path that is not absolute",
            ["hardening_findings_file", "findings.json"],
        ),
        (
            '{"hardening_sysctl": {"net.ipv4.ip_forward": 0}}',
            "Fail when IP forwarding would be turned off under Docker",
            ["hardening_sysctl", "net.ipv4.ip_forward", "Docker"],
        ),
        (
            '{"hardening_firewall_extra_tcp_ports": [9443, 70000]}',
            "Fail on a port outside 1..65535",
            ["hardening_firewall_extra_tcp_ports", "70000"],
        ),
        (
            '{"hardening_ssh_extra_options": {"Match": "all"}}',
            "Fail on extra sshd options that are not single keyword lines",
            ["hardening_ssh_extra_options", "Match"],
        ),
        (
            '{"hardening_ssh_extra_options": {"Banner": "none\\nPermitRootLogin yes"}}',
            "Fail on extra sshd options that are not single keyword lines",
            ["hardening_ssh_extra_options", "Banner"],
        ),
        (
            '{"hardening_ssh_client_alive_interval": 0}',
            "Fail on an idle logoff that never comes",
            ["hardening_ssh_client_alive_interval", "164.312(a)(2)(iii)"],
        ),
        (
            '{"hardening_min_free_percent_logs": 100}',
            "Fail on a free-space threshold outside 0..99 percent",
            ["hardening_min_free_percent_logs"],
        ),
        (
            '{"hardening_password_min_length": 6}',
            "Fail on a password policy weaker than the baseline",
            ["hardening_password_min_length"],
        ),
        (
            '{"hardening_umask": "22x"}',
            "Fail on a umask, home mode or reboot time in the wrong format",
            ["hardening_umask", "22x"],
        ),
        (
            '{"audit_log_retention_days": 365}',
            "Fail on a log retention shorter than six years",
            ["audit_log_retention_days", "365", "2192"],
        ),
        (
            '{"audit_max_log_file_action": "rotate"}',
            "Fail on an auditd setting that deletes audit logs",
            ["audit_max_log_file_action", "keep_logs"],
        ),
        (
            '{"audit_max_log_file_action": "delete"}',
            "Validating arguments against arg spec",
            ["audit_max_log_file_action", "keep_logs"],
        ),
        (
            '{"audit_app_data_dirs": ["data/apps"]}',
            "Fail on a watched path that is not absolute",
            ["audit_app_data_dirs", "data/apps"],
        ),
        (
            '{"audit_logrotate_sets": [{"name": "apps", "paths": ["logs/*.log"]}]}',
            "Fail on a watched path that is not absolute",
            ["audit_logrotate_sets", "logs/*.log"],
        ),
        (
            '{"audit_extra_watches": [{"path": "/srv/x", "key": "a b"}]}',
            "Fail on an audit key or log set name",
            ["audit_extra_watches", "a b"],
        ),
        (
            '{"audit_extra_watches": [{"path": "/srv/x", "key": "ab\\n"}]}',
            "Fail on an audit key or log set name",
            ["audit_extra_watches"],
        ),
        (
            '{"audit_logrotate_sets": [{"name": "x", "paths": ["/a"]}, {"name": "x", "paths": ["/b"]}]}',
            "Fail on two log sets with the same name",
            ["audit_logrotate_sets", "unique"],
        ),
    ],
)
def test_bad_baseline_setting_stops_before_any_change(inventory, extra_vars, failed_task, message_parts):
    rc, report = run_playbook_json("site.yml", "-i", str(inventory), "--check", "-e", extra_vars)
    assert rc != 0
    assert_stopped_before_any_change(report, failed_task, message_parts)


def test_unencrypted_data_on_this_machine_stops_the_play_naming_the_mount(inventory):
    """The real check in the default fail mode, against this machine's unencrypted root file system."""
    rc, report = run_playbook_json("site.yml", "-i", str(inventory), "--check", "--tags", "hardening_disk")
    assert rc != 0
    assert_stopped_before_any_change(
        report,
        "Stop when data or logs are not encrypted at rest",
        ["The data directory /srv/streamlit is on the mount /", "not encrypted at rest", "hardening_encryption_check"],
    )
