"""Bad settings stop site.yml at validation, naming the variable, before any task changes the host.

The play runs against this machine over a local connection, in --check mode as a safety net: the
assertions look at which tasks ran, so the test fails if validation ever moves behind a changing task.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from tests.helpers import run_playbook_json

# Tasks allowed to run before the failure: they read, never write.
READ_ONLY_TASKS = {
    "Gathering Facts",
    "Check every role's settings before any role changes the host",
    "Read how many user namespaces the kernel allows",
}


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(
        "all:\n  children:\n    streamlit_hosts:\n      hosts:\n"
        "        validation-probe:\n          ansible_connection: local\n"
        "          ansible_python_interpreter: '{{ ansible_playbook_python }}'\n"
    )
    return path


@pytest.mark.parametrize(
    ("extra_vars", "failed_task", "message_parts"),
    [
        (
            '{"docker_daemon_options": "x"}',
            "Validating arguments against arg spec",
            ["docker_daemon_options", "dict"],
        ),
        (
            '{"docker_engine_source": "snap"}',
            "Validating arguments against arg spec",
            ["docker_engine_source", "distribution", "upstream"],
        ),
        (
            '{"docker_daemon_nofile_soft": "many"}',
            "Validating arguments against arg spec",
            ["docker_daemon_nofile_soft", "int"],
        ),
        (
            '{"docker_daemon_log_max_size": "lots"}',
            "Fail on a log size the engine cannot parse",
            ["docker_daemon_log_max_size", "lots"],
        ),
        (
            '{"docker_daemon_nofile_soft": 9000, "docker_daemon_nofile_hard": 10}',
            "Fail when the hard open-files limit is below the soft one",
            ["docker_daemon_nofile_soft", "docker_daemon_nofile_hard"],
        ),
        (
            '{"apps": [{"name": "a;rm -rf /", "repo": "acme/x"}]}',
            "Fail on an app name that is not a safe identifier",
            ["apps[0]", "a;rm -rf /", "name must match"],
        ),
        (
            '{"apps": [{"name": "x", "repo": "../../etc"}]}',
            "Fail on a repo that is neither owner/name nor a repository URL",
            ["apps[0]", "../../etc", "owner/name"],
        ),
        (
            '{"apps": [{"name": "x", "repo": "acme/x"}, {"name": "x", "repo": "acme/y"}]}',
            "Fail on two apps with the same name",
            ["apps", "unique", "x"],
        ),
        (
            '{"apps": [{"name": "x", "repo": "acme/x", "branch": "a..b"}]}',
            "Fail on a branch name git would refuse",
            ["apps[0]", "a..b"],
        ),
        (
            '{"apps": [{"name": "x", "repo": "acme/x", "branch": "x.lock"}]}',
            "Fail on a branch name git would refuse",
            ["apps[0]", "x.lock"],
        ),
        ('{"monitor_interval": 0}', "Fail on a polling interval or jitter out of range", ["monitor_interval"]),
        ('{"monitor_interval": "soon"}', "Validating arguments against arg spec", ["monitor_interval", "int"]),
        ('{"apps": "demo"}', "Validating arguments against arg spec", ["_apps", "str"]),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "route": {"path": "/x/"}},'
            ' {"name": "b", "repo": "acme/b", "route": {"path": "/x/"}}]}',
            "Fail on two apps on one route",
            ["/x/", "(a, b)"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "route": {"host": "bad_host.example.org"}}]}',
            "Fail on a route host that is not a valid DNS name",
            ["tls_apps[0]", "bad_host.example.org"],
        ),
        ('{"tls_server_name": "-edge"}', "Fail on an edge or sandbox host name", ["tls_server_name", "-edge"]),
        ('{"tls_profile": "old"}', "Validating arguments against arg spec", ["tls_profile", "intermediate"]),
        ('{"tls_leaf_days": 365}', "Fail on certificate lifetimes", ["tls_leaf_days", "1..90"]),
        (
            '{"tls_app_content_security_policy": {"script-src": "\'self\'; report-uri https://x"}}',
            "Fail on a policy directive nginx or the browser would misread",
            ['tls_app_content_security_policy["script-src"]', "report-uri"],
        ),
        (
            '{"tls_app_content_security_policy": {"frame-src": "*"}}',
            "Fail on a policy directive nginx or the browser would misread",
            ['tls_app_content_security_policy["frame-src"]', "tls_sandbox_port"],
        ),
        (
            '{"tls_app_script_hashes": ["\'sha256-THxz9J9+wf7rhwR2YkXJoSZ13UCmYyC+3lNDv2+8ugA=\'"]}',
            "Fail on an inline script hash that is not a CSP hash source",
            ["tls_app_script_hashes", "no quotes"],
        ),
        (
            '{"tls_client_header_timeout": "10 s"}',
            "Fail on a timeout nginx does not read as a time",
            ["tls_client_header_timeout", "10 s"],
        ),
        ('{"tls_public_https_port": 70000}', "Fail on a public port", ["tls_public_https_port", "70000"]),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "access": {"htpasswd_users": [{"name": "bob"}]}}]}',
            "Fail on htpasswd users without a safe name or a password",
            ["tls_apps[0]", "bob", "non-empty password"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "resources": {"memory": "lots"}}]}',
            "Fail on resource limits that do not parse",
            ["apps[0]", "(name a)", "memory", "lots"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "resources": {"cpus": "fast", "pids": 5}}]}',
            "Fail on resource limits that do not parse",
            ["apps[0]", "cpus", "fast"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "entrypoint": "../../etc/passwd.py"}]}',
            "Fail on an entrypoint or requirements file outside the repository",
            ["apps[0]", "../../etc/passwd.py", "inside the repository"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "requirements": "/etc/shadow"}]}',
            "Fail on an entrypoint or requirements file outside the repository",
            ["apps[0]", "/etc/shadow"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "python": "3"}]}',
            "Fail on a Python version that is not major.minor",
            ["apps[0]", "python", "major.minor"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "env": {"STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION": "false"}}]}',
            "Fail on environment variables that are not NAME=text",
            ["apps[0]", "STREAMLIT_", "STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION"],
        ),
        (
            '{"vault_a_token": "TopS3cretValue",'
            ' "apps": [{"name": "a", "repo": "acme/a", "secrets": {"../t": "vault_a_token"}}]}',
            "Fail on secrets that are not file names mapped to defined variables",
            ["apps[0]", "../t", "vault_a_token"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "secrets": {"api-token": "vault_missing_token"}}]}',
            "Fail on secrets that are not file names mapped to defined variables",
            ["apps[0]", "vault_missing_token", "defined"],
        ),
        (
            '{"apps_deployer_collections": ["community.docker", "../evil"]}',
            "Fail on host deployer settings out of range",
            ["apps_deployer_collections", "../evil"],
        ),
        (
            '{"apps_deployer_timeout": 5}',
            "Fail on host deployer settings out of range",
            ["apps_deployer_timeout >= 60", "(5)"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "upload_max_mb": "lots"}]}',
            "Fail on an upload limit out of range",
            ["tls_apps[0]", "lots"],
        ),
    ],
)
def test_bad_setting_stops_before_any_change(inventory, extra_vars, failed_task, message_parts):
    rc, report = run_playbook_json("site.yml", "-i", str(inventory), "--check", "-e", extra_vars)

    assert rc != 0
    tasks = report["plays"][0]["tasks"]
    ran = [t for t in tasks if "validation-probe" in t["hosts"] and not t["hosts"]["validation-probe"].get("skipped")]
    failed = [t for t in ran if t["hosts"]["validation-probe"].get("failed")]
    assert len(failed) == 1
    assert failed[0]["task"]["name"].split(" : ")[-1].startswith(failed_task)
    result = failed[0]["hosts"]["validation-probe"]
    # A looped check reports "One or more items failed"; the reason is in the failed item.
    message = " ".join(
        [result.get("msg", "")] + [r.get("msg", "") for r in result.get("results", []) if r.get("failed")]
    )
    for part in message_parts:
        assert part in message

    before = ran[: ran.index(failed[0])]
    for task in before:
        name = task["task"]["name"].split(" : ")[-1]
        result = task["hosts"]["validation-probe"]
        assert not result.get("changed"), f"{name} changed the host before the failure"
        assert name in READ_ONLY_TASKS or name.startswith(("Fail ", "Validating arguments")), name
    assert report["stats"]["validation-probe"]["changed"] == 0
    # A secret value never shows, even in the failure.
    assert "TopS3cretValue" not in json.dumps(report)


def test_good_settings_pass_every_check(inventory):
    apps = (
        '{"apps": [{"name": "triage", "repo": "acme/triage-app"},'
        ' {"name": "dash-2", "repo": "https://github.com/acme/dash.git", "branch": "release/1.2"}]}'
    )
    # Only the up-front checks run (tagged always): they must all pass on a valid inventory.
    rc, report = run_playbook_json("site.yml", "-i", str(inventory), "--check", "--tags", "always", "-e", apps)
    assert rc == 0, json.dumps(report["stats"])
    names = [t["task"]["name"] for t in report["plays"][0]["tasks"]]
    assert any("Fail on two apps with the same name" in n for n in names)


def make_certificate(days_valid: tuple[int, int]) -> tuple[str, str]:
    """A self-signed certificate (PEM) valid from now+days_valid[0] to now+days_valid[1], and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "validation-probe")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days_valid[0]))
        .not_valid_after(now + datetime.timedelta(days=days_valid[1]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem


@pytest.mark.parametrize(
    ("case", "failed_task", "message_parts"),
    [
        ("mismatched key", "Fail on an operator certificate that does not match", ["does not match"]),
        ("expired", "Fail on an expired operator certificate", ["expired", "commonName=validation-probe"]),
    ],
)
def test_bad_operator_certificate_stops_before_any_change(inventory, case, failed_task, message_parts):
    if case == "expired":
        certificate, key = make_certificate((-30, -1))
    else:
        certificate, _ = make_certificate((0, 30))
        _, key = make_certificate((0, 30))
    extra_vars = json.dumps(
        {"tls_certificate_source": "operator", "tls_operator_certificate": certificate, "tls_operator_private_key": key}
    )
    rc, report = run_playbook_json("site.yml", "-i", str(inventory), "--check", "-e", extra_vars)

    assert rc != 0
    tasks = report["plays"][0]["tasks"]
    failed = [t for t in tasks if t["hosts"].get("validation-probe", {}).get("failed")]
    assert len(failed) == 1
    assert failed[0]["task"]["name"].split(" : ")[-1].startswith(failed_task)
    for part in message_parts:
        assert part in failed[0]["hosts"]["validation-probe"]["msg"]
    assert report["stats"]["validation-probe"]["changed"] == 0
    # The key never shows in the report.
    assert key.splitlines()[1] not in json.dumps(report)
