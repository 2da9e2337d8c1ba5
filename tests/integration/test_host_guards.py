"""Host settings that are well-formed but would break the host stop site.yml before any change.

Like test_baseline_input.py: site.yml runs against this machine over a local connection in --check mode
as a safety net, and the assertions look at which tasks ran before the failure (only reads) and that the
message names the variable as the operator wrote it.
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
    "Check that the SSH settings cannot lock every admin out",
    "Read how many user namespaces the kernel allows",
    "Read the accounts on the host",
    "Look for the admins' authorized keys",
    "Parse the operator's certificate",
    "Read the public half of the operator's private key",
}


def run_site(inventory: Path, tmp_path: Path, extra_vars: dict) -> tuple[int, dict]:
    # A file, not the command line: certificates and keys stay out of the process list.
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(extra_vars))
    vars_file.chmod(0o600)
    return run_playbook_json("site.yml", "-i", str(inventory), "--check", "-e", f"@{vars_file}")


def assert_stopped_before_any_change(report: dict, failed_task: str, message_parts: list[str]) -> str:
    """Exactly one task failed for good (a rescued parse may fail before it), nothing before it changed."""
    tasks = report["plays"][0]["tasks"]
    ran = [t for t in tasks if "validation-probe" in t["hosts"] and not t["hosts"]["validation-probe"].get("skipped")]
    failed = [t for t in ran if t["hosts"]["validation-probe"].get("failed")]
    rescued = report["stats"]["validation-probe"].get("rescued", 0)
    assert len(failed) == 1 + rescued, [t["task"]["name"] for t in failed]
    last = failed[-1]
    assert last["task"]["name"].split(" : ")[-1].startswith(failed_task), last["task"]["name"]
    result = last["hosts"]["validation-probe"]
    message = " ".join(
        [result.get("msg", "")] + [r.get("msg", "") for r in result.get("results", []) if r.get("failed")]
    )
    for part in message_parts:
        assert part in message, message

    for task in ran[: ran.index(last)]:
        name = task["task"]["name"].split(" : ")[-1]
        assert not task["hosts"]["validation-probe"].get("changed"), f"{name} changed the host before the failure"
        assert name in READ_ONLY_TASKS or name.startswith(("Fail ", "Validating arguments")), name
    assert report["stats"]["validation-probe"]["changed"] == 0
    return message


# --- Forwarding: every key that turns it off, however it is spelled ------------------------------------


@pytest.mark.parametrize(
    "sysctl",
    [
        {"net.ipv4.conf.all.forwarding": 0},
        {"net.ipv4.conf.default.forwarding": 0},
        {"net.ipv6.conf.all.forwarding": "0"},
        {"net.ipv6.conf.default.forwarding": 0},
        {"net.ipv4.conf.eth0.forwarding": 0},
        {"net/ipv4/ip_forward": 0},
        {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.forwarding": 0},
    ],
)
def test_any_forwarding_key_off_stops_before_any_change(inventory, tmp_path, sysctl):
    rc, report = run_site(inventory, tmp_path, {"hardening_sysctl": sysctl})
    assert rc != 0
    (off,) = [key for key, value in sysctl.items() if str(value) == "0"]
    message = assert_stopped_before_any_change(
        report, "Fail when IP forwarding would be turned off under Docker", ["hardening_sysctl", "Docker"]
    )
    assert f"{off}={sysctl[off]}" in message


def test_forwarding_keys_at_1_pass_the_checks(inventory, tmp_path):
    sysctl = {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.forwarding": "1", "net.ipv6.conf.all.forwarding": 1}
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps({"hardening_sysctl": sysctl}))
    rc, report = run_playbook_json(
        "site.yml", "-i", str(inventory), "--check", "--tags", "always", "-e", f"@{vars_file}"
    )
    assert rc == 0, json.dumps(report["stats"])


# --- SSH lockout: checked up front, before the package lists are refreshed -------------------------------


def test_ssh_lockout_guard_runs_with_the_up_front_checks(inventory, tmp_path):
    # 'nobody' has no authorized_keys on any machine. warn: this machine's unencrypted disk does not stop
    # the play first, so the guard's place in the run is what is tested.
    settings = {
        "hardening_ssh_admin_users": ["nobody"],
        "hardening_encryption_check": "warn",
        "hardening_free_space_check": "warn",
    }
    rc, report = run_site(inventory, tmp_path, settings)
    assert rc != 0
    assert_stopped_before_any_change(
        report,
        "Fail when turning passwords off would lock every admin out",
        ["hardening_ssh_password_authentication", "nobody", "hardening_ssh_admin_users"],
    )
    names = [t["task"]["name"].split(" : ")[-1] for t in report["plays"][0]["tasks"]]
    assert "Refresh the package lists when they are older than an hour" not in names


# --- The component's sandbox port: not one SSH or the edge listens on ----------------------------------------


@pytest.mark.parametrize(
    ("settings", "message_parts"),
    [
        ({"tls_sandbox_port": 22}, ["tls_sandbox_port is 22", "hardening_ssh_port"]),
        ({"hardening_ssh_port": 2222, "tls_sandbox_port": 2222}, ["tls_sandbox_port is 2222", "2222"]),
        (
            {"tls_sandbox_port": 80, "tls_sandbox_server_name": "sandbox.example.org"},
            ["tls_sandbox_port is 80", "HTTP on 80"],
        ),
    ],
)
def test_sandbox_port_in_use_stops_before_any_change(inventory, tmp_path, settings, message_parts):
    rc, report = run_site(inventory, tmp_path, settings)
    assert rc != 0
    assert_stopped_before_any_change(report, "Fail on a sandbox port that SSH or the edge", message_parts)


# --- The operator's certificate: readable, and for the edge's names -------------------------------------------


def make_certificate(dns_names: list[str]) -> tuple[str, str]:
    """A self-signed certificate (PEM) for dns_names, valid for 30 days, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def operator_settings(certificate: str, key: str, **more: object) -> dict:
    return {
        "tls_server_name": "edge.example.org",
        "tls_certificate_source": "operator",
        "tls_operator_certificate": certificate,
        "tls_operator_private_key": key,
        **more,
    }


@pytest.mark.parametrize(
    ("dns_names", "more", "missing"),
    [
        (["other.example.org"], {}, "edge.example.org"),
        # A wildcard covers one label only.
        (["*.example.org"], {"tls_server_name": "edge.clinic.example.org"}, "edge.clinic.example.org"),
        (
            ["edge.example.org"],
            {"apps": [{"name": "imaging", "repo": "acme/imaging", "route": {"host": "imaging.example.org"}}]},
            "imaging.example.org",
        ),
    ],
)
def test_operator_certificate_for_other_names_stops_before_any_change(inventory, tmp_path, dns_names, more, missing):
    certificate, key = make_certificate(dns_names)
    rc, report = run_site(inventory, tmp_path, operator_settings(certificate, key, **more))
    assert rc != 0
    message = assert_stopped_before_any_change(
        report,
        "Fail on an operator certificate that does not cover the edge's names",
        ["tls_operator_certificate", "tls_server_name", f"not for {missing}", dns_names[0]],
    )
    assert key.splitlines()[1] not in json.dumps(report)
    assert "BEGIN" not in message


@pytest.mark.parametrize(
    "dns_names", [["edge.example.org"], ["*.example.org"], ["www.example.org", "EDGE.example.org"]]
)
def test_operator_certificate_for_the_edge_passes_the_checks(inventory, tmp_path, dns_names):
    certificate, key = make_certificate(dns_names)
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(operator_settings(certificate, key)))
    rc, report = run_playbook_json(
        "site.yml", "-i", str(inventory), "--check", "--tags", "always", "-e", f"@{vars_file}"
    )
    assert rc == 0, json.dumps(report["stats"])
    names = [t["task"]["name"] for t in report["plays"][0]["tasks"]]
    assert any("Fail on an operator certificate that does not cover the edge's names" in n for n in names)


def test_garbage_certificate_is_refused_naming_the_setting(inventory, tmp_path):
    _, key = make_certificate(["edge.example.org"])
    garbage = "-----BEGIN CERTIFICATE-----\nTUlJQmtqQ0NBVGVnQXdJQkFnSVVhYmM=\n-----END CERTIFICATE-----\n"
    rc, report = run_site(inventory, tmp_path, operator_settings(garbage, key))
    assert rc != 0
    message = assert_stopped_before_any_change(
        report,
        "Fail on an operator certificate that is not an X.509 certificate",
        ["tls_operator_certificate is not a readable X.509 certificate"],
    )
    assert not message.startswith("Task failed"), message
    assert key.splitlines()[1] not in json.dumps(report)
