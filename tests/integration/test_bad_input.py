"""Bad settings stop site.yml at validation, naming the variable, before any task changes the host.

The play runs against this machine over a local connection, in --check mode as a safety net: the
assertions look at which tasks ran, so the test fails if validation ever moves behind a changing task.
"""

from __future__ import annotations

import datetime
import json
import subprocess

import pytest

from tests.helpers import run_playbook_json

# Every rule of an app entry is one task (the same name in the tls, monitor and apps roles: the first
# role to check reports it).
APP_RULE = "Fail on an app entry that breaks a rule"

PROBE = "validation-probe"

# Tasks allowed to run before the failure: they read, never write.
READ_ONLY_TASKS = {
    "Gathering Facts",
    "Check every role's settings before any role changes the host",
    "Read how many user namespaces the kernel allows",
}


def the_failed_check(report: dict, host: str = PROBE) -> tuple[str, str, list[dict]]:
    """The one check that failed on `host`: its task name (without the role), its message and the tasks that
    ran on the host before it. A looped check reports "One or more items failed": the reason is in the
    failed items, so their messages are added."""
    tasks = report["plays"][0]["tasks"]
    ran = [t for t in tasks if host in t["hosts"] and not t["hosts"][host].get("skipped")]
    failed = [t for t in ran if t["hosts"][host].get("failed")]
    assert len(failed) == 1, [t["task"]["name"] for t in failed]
    result = failed[0]["hosts"][host]
    message = " ".join(
        [result.get("msg", "")] + [r.get("msg", "") for r in result.get("results", []) if r.get("failed")]
    )
    return failed[0]["task"]["name"].split(" : ")[-1], message, ran[: ran.index(failed[0])]


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
            APP_RULE,
            ["apps[0]", "a;rm -rf /", "name must be"],
        ),
        pytest.param(
            '{"apps": [{"name": "plain", "repo": "https://oauth2:TopS3cretValue@git.example.org/a/b.git"}]}',
            APP_RULE,
            ["apps[0] (name 'plain')", "value not shown", "must not carry a credential"],
            id="git-url-with-a-credential",
        ),
        pytest.param(
            '{"apps": [{"name": "priv", "repo": "acme/priv", "auth": {"token": "ghp_TopS3cretValue"}}]}',
            APP_RULE,
            ["apps[0] (name 'priv')", "auth.token: the value (not shown", "never the credential itself"],
            id="repo-token-as-a-literal",
        ),
        pytest.param(
            '{"apps": [{"name": "priv", "repo": "git@github.com:acme/priv.git", '
            '"auth": {"deploy_key": "/root/.ssh/id_ed25519"}}]}',
            APP_RULE,
            ["apps[0] (name 'priv')", "auth.deploy_key (not shown, text) must be true", "key path"],
            id="deploy-key-path-outside-the-vault",
        ),
        (
            '{"apps": [{"name": "plain", "repo": "file:///srv/git/acme/plain.git"}]}',
            APP_RULE,
            ["apps[0] (name 'plain')", "file:// is refused here", "apps_git_allow_file_urls"],
        ),
        (
            '{"apps": [{"name": "plain", "repo": "acme/plain", "provider": "gitlab"}]}',
            APP_RULE,
            ["apps[0] (name 'plain')", "provider 'gitlab' must be github or git"],
        ),
        (
            '{"apps": [{"name": "x", "repo": "../../etc"}]}',
            APP_RULE,
            ["apps[0]", "../../etc", "owner/name"],
        ),
        (
            '{"apps": [{"name": "x", "repo": "acme/x"}, {"name": "x", "repo": "acme/y"}]}',
            APP_RULE,
            ["apps[1] (name 'x')", "apps[0] (name 'x')", "unique"],
        ),
        (
            '{"apps": [{"name": "x", "repo": "acme/x", "branch": "a..b"}]}',
            APP_RULE,
            ["apps[0]", "a..b", "not a valid branch name"],
        ),
        (
            '{"apps": [{"name": "x", "repo": "acme/x", "branch": "x.lock"}]}',
            APP_RULE,
            ["apps[0]", "x.lock", ".lock"],
        ),
        ('{"monitor_interval": 0}', "Fail on a polling interval or jitter out of range", ["monitor_interval"]),
        ('{"monitor_interval": "soon"}', "Validating arguments against arg spec", ["monitor_interval", "int"]),
        ('{"status_interval": 5}', "Fail on settings out of range", ["status_interval", "at least 10 s (is 5)"]),
        (
            '{"status_alert_command": ["curl", "https://hooks.example/x"]}',
            "Fail on an alert command that is not a program path and its arguments",
            ["status_alert_command", "absolute program path"],
        ),
        pytest.param(
            '{"status_app_enabled": true}',
            "Fail on a status app without access rules",
            ["status_app_access must name who may open it", "htpasswd_users or client_cert_cns"],
            id="status-app-without-access",
        ),
        pytest.param(
            '{"status_app_enabled": true, "status_app_access": {"client_cert_cns": ["alice"]},'
            ' "apps": [{"name": "board", "repo": "acme/board", "route": {"path": "/status/"}}]}',
            APP_RULE,
            ["apps[1] (name 'platform-status')", "route /status/", "apps[0] (name 'board')"],
            id="status-app-route-taken",
        ),
        (
            '{"status_admin_users": "alice"}',
            "Fail on an admin user list that is not a list of account names",
            ["status_admin_users", "list of existing account names"],
        ),
        ('{"apps": "demo"}', "Validating arguments against arg spec", ["_apps", "str"]),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "route": {"path": "/x/"}},'
            ' {"name": "b", "repo": "acme/b", "route": {"path": "/x/"}}]}',
            APP_RULE,
            ["apps[1] (name 'b')", "/x/", "apps[0] (name 'a')", "route of its own"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "route": {"host": "bad_host.example.org"}}]}',
            APP_RULE,
            ["apps[0] (name 'a')", "bad_host.example.org", "not a valid host name"],
        ),
        ('{"tls_server_name": "-edge"}', "Fail on an edge or sandbox host name", ["tls_server_name", "-edge"]),
        (
            '{"tls_server_name": "edge.lab.test\\n"}',
            "Fail on an edge or sandbox host name",
            ["tls_server_name", "edge.lab.test"],
        ),
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
            '{"tls_rate_limit_static_rate": "100/s"}',
            "Fail on a request rate or burst nginx does not read",
            ["tls_rate_limit_static_rate must be a rate like 20r/s", '"100/s"'],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "access": {"htpasswd_users": [{"name": "bob"}]}}]}',
            APP_RULE,
            ["apps[0]", "bob", "non-empty password"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "resources": {"memory": "lots"}}]}',
            APP_RULE,
            ["apps[0]", "(name 'a')", "resources.memory", "lots"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "resources": {"cpus": "fast", "pids": 5}}]}',
            APP_RULE,
            ["apps[0]", "resources.cpus 'fast'", "resources.pids 5"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "entrypoint": "../../etc/passwd.py"}]}',
            APP_RULE,
            ["apps[0]", "../../etc/passwd.py", "inside the repository"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "requirements": "/etc/shadow"}]}',
            APP_RULE,
            ["apps[0]", "requirements '/etc/shadow'", "relative path"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "python": "3"}]}',
            APP_RULE,
            ["apps[0]", "python '3'", "major.minor"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "env": {"STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION": "false"}}]}',
            APP_RULE,
            ["apps[0]", "STREAMLIT_*", "STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION is reserved"],
        ),
        pytest.param(
            '{"vault_a_token": "TopS3cretValue",'
            ' "apps": [{"name": "a", "repo": "acme/a", "secrets": {"../t": "vault_a_token"}}]}',
            APP_RULE,
            ["apps[0]", "../t", "vault_a_token", "plain file name"],
            id="secret-file-name-outside-the-directory",
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "secrets": {"api-token": "vault_missing_token"}}]}',
            APP_RULE,
            ["apps[0]", "vault_missing_token", "not defined"],
        ),
        (
            '{"apps_deployer_dir": "/opt/../etc"}',
            "Fail on host deployer settings out of range",
            ["apps_deployer_dir", "/opt/../etc"],
        ),
        (
            # The audit role, which watches the deployer's directory, checks it first.
            '{"apps_deployer_dir": "/opt/deployer\\n"}',
            "Fail on a watched path that is not absolute",
            ["/opt/deployer", "must be an absolute path without spaces"],
        ),
        (
            '{"apps_gate_timeout": 1}',
            "Fail on deployer settings out of range",
            ["apps_gate_timeout >= 10", "(1)"],
        ),
        (
            '{"apps_deployer_timeout": 5}',
            "Fail on host deployer settings out of range",
            ["apps_deployer_timeout >= 60", "(5)"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "upload_max_mb": "lots"}]}',
            APP_RULE,
            ["apps[0]", "upload_max_mb 'lots'", "whole number"],
        ),
        # The rules the one app model added (plugins/module_utils/_app_spec.py); the exhaustive cases are
        # its unit tests, these prove the roles apply it before any change. A case holding the made-up
        # secret has an id of its own: the default id (the extra vars) reaches the facts through the
        # PYTEST_CURRENT_TEST variable.
        (
            '{"apps": [{"name": "x\\n", "repo": "acme/x"}, {"name": "y", "repo": "acme/y\\n"}]}',
            APP_RULE,
            ["apps[0] (name 'x\\n')", "name must be", "apps[1] (name 'y')", "repo 'acme/y\\n'"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "reqirements": "r.txt", "resources": {"cpu": 1}}]}',
            APP_RULE,
            ["unknown key 'reqirements' (did you mean 'requirements'?)", "resources: unknown key 'cpu'"],
        ),
        (
            '{"apps": [{"name": "one", "repo": "acme/one", "route": {"path": "/one/"}},'
            ' {"name": "two", "repo": "acme/two", "route": {"path": "/one/_stcore/"}}]}',
            APP_RULE,
            ["apps[1] (name 'two')", "/one/_stcore/", "apps[0] (name 'one')", "must not overlap"],
        ),
        (
            '{"apps": [{"name": "component", "repo": "acme/c"},'
            ' {"name": "b", "repo": "acme/b", "route": {"path": "/"}}]}',
            APP_RULE,
            ["apps[0] (name 'component')", "reserved", "apps[1] (name 'b')", "route path '/'", "swallow"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "env": {"LD_PRELOAD": "/tmp/x.so", "PYTHONPATH": "/tmp"}}]}',
            APP_RULE,
            ["env LD_PRELOAD is reserved", "env PYTHONPATH is reserved"],
        ),
        pytest.param(
            '{"apps": [{"name": "a", "repo": "acme/a", "env": {"KEY": "-----BEGIN KEY-----\\nTopS3cretValue"}}]}',
            APP_RULE,
            ["apps[0]", "env KEY value (not shown)", "line break"],
            id="env-value-with-a-line-break",
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "upload_max_mb": 1.5},'
            ' {"name": "b", "repo": "acme/b", "upload_max_mb": true}]}',
            APP_RULE,
            ["apps[0] (name 'a'): upload_max_mb 1.5", "apps[1] (name 'b'): upload_max_mb True", "whole number"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "resources": {"cpus": 1000}}]}',
            APP_RULE,
            ["apps[0]", "resources.cpus 1000", "more than the host has"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "python": 3.1}]}',
            APP_RULE,
            ["apps[0]", "python 3.1 is a number", "quote it"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "branch": "feature/"},'
            ' {"name": "b", "repo": "acme/b", "branch": "a//b"}]}',
            APP_RULE,
            ["apps[0] (name 'a'): branch 'feature/'", "apps[1] (name 'b'): branch 'a//b'", "//"],
        ),
        pytest.param(
            '{"apps": [{"name": "a", "repo": "acme/a",'
            ' "access": {"htpasswd_users": [{"name": "bob smith", "password": "TopS3cretValue"}]}}]}',
            APP_RULE,
            ["apps[0]", "access.htpasswd_users[0].name 'bob smith'"],
            id="htpasswd-user-name-with-a-space",
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "upstream": "127.0.0.1:8501"}]}',
            APP_RULE,
            ["apps[0]", "repo does not apply to an app with a pinned upstream"],
        ),
        (
            '{"tls_apps": [{"name": "a", "upstream": "127.0.0.1:99999"}]}',
            APP_RULE,
            ["tls_apps[0] (name 'a')", "upstream '127.0.0.1:99999'", "1..65535"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "data": {"mount": "/app/state"}}]}',
            APP_RULE,
            ["apps[0] (name 'a')", "data.mount '/app/state'", "would cover /app"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "data": {"size": "10GB"}}]}',
            APP_RULE,
            ["apps[0] (name 'a')", "data.size '10GB'", "such as 500M or 10G"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a", "egress": [{"cidr": "0.0.0.0/0", "port": 443}]}]}',
            APP_RULE,
            ["apps[0] (name 'a')", "egress[0].cidr '0.0.0.0/0'", "allow_any: true"],
        ),
        (
            '{"apps": [{"name": "a", "repo": "acme/a"}], "apps_purge_data": ["gone", "a"]}',
            "Fail on a data purge that names a deployed app",
            ["apps_purge_data[1] 'a' is still an app"],
        ),
        (
            '{"apps_data_dir": "/srv/../etc"}',
            "Fail on an app data directory that is not an absolute path",
            ["apps_data_dir must be an absolute path", "/srv/../etc"],
        ),
        pytest.param(
            '{"apps": [{"name": "a", "repo": "acme/a"}, {"name": "x", "repo": "acme/x", "hosts": ["web9"]}]}',
            "Fail on an app placed where the inventory has no host",
            ["apps[1] (name 'x'): hosts 'web9': neither a host nor a group of the inventory"],
            id="app-placed-on-unknown-host",
        ),
        pytest.param(
            '{"vault_a_token": ["TopS3cretValue"],'
            ' "apps": [{"name": "a", "repo": "acme/a", "secrets": {"api-token": "vault_a_token"}}]}',
            "Fail on a secret variable that does not hold text",
            ["must hold text", "vault_a_token"],
            id="secret-variable-not-text",
        ),
        pytest.param(
            '{"vault_p_token": "TopS3cret Value", "apps": [{"name": "p", "repo": "acme/p", '
            '"auth": {"token": "vault_p_token"}}]}',
            "Fail on a repository credential variable that does not hold one line of text",
            ["Not usable: vault_p_token"],
            id="repo-token-variable-not-a-token",
        ),
        pytest.param(
            '{"hardening_aide_enabled": true, "hardening_aide_exclude": ["/var/lib/docker", "/srv/../etc"]}',
            "Fail on an AIDE exclusion that is not a plain absolute path",
            ["hardening_aide_exclude: /srv/../etc: each entry must be an absolute path"],
            id="aide-exclude-with-dot-dot",
        ),
        pytest.param(
            '{"apps_base_image_pull": true, "apps_base_image": "debian@sha256:' + "0" * 64 + '\\n"}',
            "Fail on deployer settings out of range",
            ["must be pinned by digest"],
            id="pulled-base-image-digest-with-trailing-newline",
        ),
    ],
)
def test_bad_setting_stops_before_any_change(inventory, extra_vars, failed_task, message_parts):
    rc, report = run_playbook_json("site.yml", "-i", str(inventory), "--check", "-e", extra_vars)

    assert rc != 0
    name, message, before = the_failed_check(report)
    assert name.startswith(failed_task), name
    for part in message_parts:
        assert part in message, message
    # The inventory's `apps` is named as the operator wrote it, whichever role reports it.
    if '"apps"' in extra_vars:
        assert "tls_apps[" not in message, message
        assert "monitor_apps[" not in message, message

    for task in before:
        earlier = task["task"]["name"].split(" : ")[-1]
        assert not task["hosts"][PROBE].get("changed"), f"{earlier} changed the host before the failure"
        assert earlier in READ_ONLY_TASKS or earlier.startswith(("Fail ", "Validating arguments")), earlier
    assert report["stats"][PROBE]["changed"] == 0
    # A secret value never shows, even in the failure.
    assert "TopS3cretValue" not in json.dumps(report)


def test_good_settings_pass_every_check(inventory):
    apps = (
        '{"apps": [{"name": "triage", "repo": "acme/triage-app"},'
        ' {"name": "dash-2", "repo": "https://github.com/acme/dash.git", "branch": "release/1.2"},'
        ' {"name": "plain", "repo": "git@gitea.clinic.example:team/plain.git"},'
        ' {"name": "lab", "repo": "acme/lab", "provider": "git"}]}'
    )
    # Only the up-front checks run (tagged always): they must all pass on a valid inventory.
    rc, report = run_playbook_json("site.yml", "-i", str(inventory), "--check", "--tags", "always", "-e", apps)
    assert rc == 0, json.dumps(report["stats"])
    names = [t["task"]["name"].split(" : ")[-1] for t in report["plays"][0]["tasks"]]
    # The one app check runs in each of the three roles.
    assert names.count(APP_RULE) == 3, names


def test_null_apps_count_as_none(inventory):
    # `apps:` left empty in YAML is null: no apps, not a template error.
    rc, report = run_playbook_json(
        "site.yml", "-i", str(inventory), "--check", "--tags", "always", "-e", '{"apps": null}'
    )
    assert rc == 0, json.dumps(report["stats"])
    names = [t["task"]["name"].split(" : ")[-1] for t in report["plays"][0]["tasks"]]
    assert names.count(APP_RULE) == 3, names


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
    name, message, _ = the_failed_check(report)
    assert name.startswith(failed_task), name
    for part in message_parts:
        assert part in message, message
    assert report["stats"][PROBE]["changed"] == 0
    # The key never shows in the report.
    assert key.splitlines()[1] not in json.dumps(report)


def test_an_egress_to_the_host_s_own_address_stops_before_any_change(inventory):
    # A real address of this machine, as Ansible's facts list it: the apps role refuses it, the reason named.
    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, check=False
    )
    addresses = [line.split()[3].split("/")[0] for line in shown.stdout.splitlines() if len(line.split()) > 3]
    if not addresses:
        pytest.skip("this machine has no global IPv4 address")
    apps = json.dumps({"apps": [{"name": "a", "repo": "acme/a", "egress": [{"cidr": addresses[0], "port": 5432}]}]})
    rc, report = run_playbook_json("site.yml", "-i", str(inventory), "--check", "--tags", "always", "-e", apps)
    assert rc != 0
    name, message, _ = the_failed_check(report)
    assert name == "Fail on an egress destination that is this host's own address", name
    assert message.startswith(f"apps[0] (name 'a'): egress[0].cidr '{addresses[0]}/32' is this host itself")
    assert report["stats"][PROBE]["changed"] == 0


def two_host_inventory(tmp_path, groups: str) -> str:
    """Two hosts of streamlit_hosts on this machine (local connections), and the groups given."""
    local = "ansible_connection: local, ansible_python_interpreter: '{{ ansible_playbook_python }}'"
    path = tmp_path / "two-hosts.yml"
    path.write_text(
        "all:\n  children:\n    streamlit_hosts:\n      hosts:\n"
        f"        validation-probe: {{{local}}}\n        probe-2: {{{local}}}\n" + groups
    )
    return str(path)


@pytest.mark.parametrize(
    ("groups", "extra_vars", "failed_task", "message_parts"),
    [
        pytest.param(
            "    swarm_managers:\n      hosts:\n        validation-probe:\n        probe-2:\n",
            "{}",
            "Fail on a number of managers other than 1 or 3",
            ["swarm_managers has 2 hosts (validation-probe, probe-2)", "quorum", "3 survive the loss of one"],
            id="two-swarm-managers",
        ),
        pytest.param(
            "    swarm_managers:\n      hosts:\n        validation-probe:\n",
            "{}",
            "Fail on a swarm member whose engine keeps containers across restarts",
            ["docker_daemon_live_restore is true", "refuses swarm mode"],
            id="swarm-with-live-restore",
        ),
        pytest.param(
            "    swarm_managers:\n      hosts:\n        validation-probe:\n",
            '{"swarm_dispatcher_heartbeat_period": 0}',
            "Fail on a heartbeat period outside 1 to 60 seconds",
            ["swarm_dispatcher_heartbeat_period must be a whole number of seconds from 1 to 60 (0;"],
            id="swarm-heartbeat-zero",
        ),
        pytest.param(
            "    swarm_managers:\n      hosts:\n        validation-probe:\n",
            '{"docker_daemon_live_restore": false, "hardening_firewall_swarm_edge_sources": ["10.0.0.1/33"]}',
            "Fail on a swarm member without a known address of the edge for the firewall",
            ["hardening_firewall_swarm_edge_sources must list the edge's addresses", "not usable: 10.0.0.1/33."],
            id="swarm-edge-source-bad",
        ),
        pytest.param(
            "",
            '{"apps": [{"name": "a", "repo": "acme/a", "data": true}]}',
            "Fail on an app placed where the inventory has no host, or with its state on several hosts",
            ["apps[0] (name 'a'): data on 2 hosts (every host of the play", "per_host_state: true"],
            id="data-on-two-hosts",
        ),
    ],
)
def test_bad_multi_host_setting_stops_before_any_change(tmp_path, groups, extra_vars, failed_task, message_parts):
    rc, report = run_playbook_json("site.yml", "-i", two_host_inventory(tmp_path, groups), "--check", "-e", extra_vars)

    assert rc != 0
    name, message, _ = the_failed_check(report)
    assert name.startswith(failed_task), name
    for part in message_parts:
        assert part in message, message
    assert report["stats"][PROBE]["changed"] == 0
    assert report["stats"]["probe-2"]["changed"] == 0
