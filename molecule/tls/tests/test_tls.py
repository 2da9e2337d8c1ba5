"""The TLS edge in a systemd host, in front of two stand-in Streamlit servers (prepare.yml).

Requests go through real nginx with curl inside the instance (names resolved to 127.0.0.1, the lab
CA as trust root); sslyze runs from the controller against the instance's address.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
CONVERGE = PROJECT / "molecule/tls/converge.yml"
PASSWORD = "molecule-Alice-pw-NeverLogged"
PKI = "/etc/streamlit-edge"
UPSTREAMS = "/etc/nginx/streamlit-upstreams"
ACCESS_LOG = "/var/log/nginx/streamlit-access.json"
CURL = (
    f"curl -s --cacert {PKI}/ca.crt --resolve edge.lab.test:443:127.0.0.1 --resolve edge.lab.test:80:127.0.0.1"
    " --resolve edge.lab.test:9443:127.0.0.1 --resolve imaging.lab.test:443:127.0.0.1"
)


class Response:
    def __init__(self, raw: str) -> None:
        head, _, self.body = raw.replace("\r\n", "\n").partition("\n\n")
        status_line, *header_lines = head.split("\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}


def request(host, url: str, options: str = "") -> Response:
    result = host.run(f"{CURL} -i {options} '{url}'")
    assert result.rc == 0, result.stderr
    return Response(result.stdout)


def status_of(host, url: str, options: str = "") -> int:
    return int(host.run(f"{CURL} -o /dev/null -w '%{{http_code}}' {options} '{url}'").stdout)


def last_log_entry(host) -> dict:
    return json.loads(host.run(f"tail -n 1 {ACCESS_LOG}").stdout)


def run_playbook(playbook: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(PROJECT / "collections"), "ANSIBLE_FORCE_COLOR": "0"},
    )


def switch(tmp_path: Path, app: str, upstream: str) -> subprocess.CompletedProcess:
    """The deploy path's swap, as issue 7's deploy playbook calls it."""
    playbook = tmp_path / "switch.yml"
    converge_vars = CONVERGE.read_text().split("  vars:\n", 1)[1].split("  roles:\n", 1)[0]
    playbook.write_text(
        "- hosts: all\n  become: true\n  gather_facts: false\n  vars:\n"
        + converge_vars
        + "  tasks:\n    - ansible.builtin.include_role:\n        name: secure_streamlit.hosting.tls\n"
        + "        tasks_from: switch_upstream\n"
        + f"      vars:\n        tls_switch_app: {app}\n        tls_switch_upstream: '{upstream}'\n"
    )
    return run_playbook(playbook)


def test_nginx_runs_with_a_valid_configuration(host):
    assert host.service("nginx").is_running
    assert host.service("nginx").is_enabled
    assert host.run("nginx -t").rc == 0


@pytest.mark.parametrize(
    ("path", "owner", "group", "mode"),
    [
        (PKI, "root", "root", 0o711),
        (f"{PKI}/ca/ca.key", "root", "root", 0o600),
        (f"{PKI}/tls/server.key", "root", "root", 0o600),
        (f"{PKI}/clients/dr-bob.key", "root", "root", 0o600),
        (f"{PKI}/htpasswd/private", "root", "www-data", 0o640),
        (f"{PKI}/ca.crt", "root", "root", 0o644),
        (f"{UPSTREAMS}/open-app.conf", "root", "root", 0o644),
    ],
)
def test_file_modes_are_deliberate(host, path, owner, group, mode):
    f = host.file(path)
    assert (f.user, f.group, f.mode) == (owner, group, mode)


def test_password_file_holds_a_sha512_crypt_hash_not_the_password(host):
    content = host.file(f"{PKI}/htpasswd/private").content_string
    assert content.startswith("alice:$6$")
    assert PASSWORD not in content


def test_the_leaf_certificate_lives_at_most_90_days_and_names_every_host(host):
    out = host.run(f"openssl x509 -in {PKI}/tls/server.crt -noout -text -dates").stdout
    assert "DNS:edge.lab.test" in out
    assert "DNS:imaging.lab.test" in out
    days = host.run(
        f"python3 -c \"import datetime,ssl;print(int((ssl.cert_time_to_seconds('$(openssl x509 -in {PKI}/tls/server.crt"
        " -noout -enddate | cut -d= -f2)')-datetime.datetime.now().timestamp())/86400))\""
    ).stdout
    assert 85 <= int(days) <= 90


def test_http_redirects_to_https(host):
    response = request(host, "http://edge.lab.test/open-app/?q=1")
    assert response.status == 301
    assert response.headers["location"] == "https://edge.lab.test/open-app/?q=1"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("strict-transport-security", "max-age=63072000"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("content-security-policy", "frame-ancestors 'self'"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-embedder-policy", "require-corp"),
        ("permissions-policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()"),
    ],
)
def test_app_pages_carry_the_security_headers(host, header, value):
    response = request(host, "https://edge.lab.test/open-app/")
    assert response.status == 200
    assert response.headers[header] == value
    assert "nginx/" not in response.headers["server"]


def test_the_app_gets_the_full_path_and_forwarded_headers(host):
    upstream_saw = json.loads(request(host, "https://edge.lab.test/open-app/page?x=1").body)
    assert upstream_saw["path"] == "/open-app/page?x=1"
    assert upstream_saw["headers"]["X-Forwarded-Proto"] == "https"


def test_protected_app_needs_its_password_and_the_log_names_the_user(host):
    assert status_of(host, "https://edge.lab.test/private/") == 401
    assert status_of(host, "https://edge.lab.test/private/", "-u alice:wrong") == 401
    response = request(host, "https://edge.lab.test/private/", f"-u alice:{PASSWORD}")
    assert response.status == 200
    # The credentials end at the edge.
    assert "Authorization" not in json.loads(response.body)["headers"]
    entry = last_log_entry(host)
    assert (entry["user"], entry["status"], entry["uri"]) == ("alice", 200, "/private/")


def test_mtls_app_needs_an_allowed_client_certificate_and_the_log_names_it(host):
    url = "https://imaging.lab.test/"
    assert status_of(host, url) == 403
    bob = f"--cert {PKI}/clients/dr-bob.crt --key {PKI}/clients/dr-bob.key"
    assert status_of(host, url, bob) == 200
    entry = last_log_entry(host)
    assert (entry["user"], entry["client_cert_verify"], entry["host"]) == ("dr-bob", "SUCCESS", "imaging.lab.test")


def test_mtls_refuses_a_certificate_of_the_ca_with_another_name_and_one_of_another_ca(host):
    made = host.run(
        "set -e; cd $(mktemp -d); openssl ecparam -genkey -name prime256v1 -out k.pem 2>/dev/null;"
        " openssl req -new -key k.pem -subj /CN=mallory -out r.csr;"
        f" openssl x509 -req -in r.csr -CA {PKI}/ca/ca.crt -CAkey {PKI}/ca/ca.key -days 1 -out mallory.pem 2>/dev/null;"
        " openssl req -x509 -key k.pem -subj /CN=dr-bob -days 1 -out selfsigned.pem; pwd"
    )
    assert made.rc == 0, made.stderr
    scratch = made.stdout.strip()
    assert status_of(host, "https://imaging.lab.test/", f"--cert {scratch}/mallory.pem --key {scratch}/k.pem") == 403
    assert status_of(host, "https://imaging.lab.test/", f"--cert {scratch}/selfsigned.pem --key {scratch}/k.pem") == 400


def test_streamlit_websocket_is_upgraded_through_the_edge(host):
    upgrade = (
        "--http1.1 -m 5 -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13'"
        " -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='"
    )
    assert status_of(host, "https://edge.lab.test/open-app/_stcore/stream", upgrade) == 101
    site = host.file("/etc/nginx/sites-enabled/streamlit-edge.conf").content_string
    assert "proxy_read_timeout 3600s;" in site


def test_upload_limit_is_per_app(host):
    host.run("head -c 2000000 /dev/zero > /tmp/2mb && head -c 500000 /dev/zero > /tmp/500kb")
    assert status_of(host, "https://edge.lab.test/open-app/", "--data-binary @/tmp/2mb") == 413
    assert status_of(host, "https://edge.lab.test/open-app/", "--data-binary @/tmp/500kb") == 200
    # private keeps the 200 MB default
    assert status_of(host, "https://edge.lab.test/private/", f"-u alice:{PASSWORD} --data-binary @/tmp/2mb") == 200


# tls_rate_limit_rate in molecule.yml, tls_rate_limit_burst in converge.yml (test-only values).
RATE_PER_SECOND = 1
BURST = 40


def test_rate_limit_is_applied(host):
    """One client gets the burst at once, then no more than the rate allows; the rest is refused with 429.

    The bound is computed from the time the requests took, so it holds however slowly a loaded machine
    sends them: one curl sends them one after another over one connection, from an address of its own
    (a fresh bucket in nginx's per-address zone, not the one the other tests use).
    """
    count = 150
    client = "127." + ".".join(str(1 + secrets.randbelow(254)) for _ in range(3))
    out = host.check_output(
        "d=$(mktemp -d); date +%s.%N;"
        f" {CURL} --interface {client} -o \"$d/#1\" -w '%{{http_code}}\\n' 'https://edge.lab.test/open-app/?n=[1-{count}]';"
        ' date +%s.%N; rm -rf "$d"'
    ).split()
    start, *statuses, end = out
    elapsed = float(end) - float(start)
    allowed = BURST + 1 + RATE_PER_SECOND * elapsed
    assert len(statuses) == count
    assert set(statuses) <= {"200", "429"}, statuses
    # The burst: the first BURST + 1 requests of a fresh client pass at once.
    assert statuses[: BURST + 1] == ["200"] * (BURST + 1), statuses
    # The rate: never more than the bucket refilled meanwhile (+1 for nginx's millisecond rounding).
    assert statuses.count("200") <= allowed + 1, (statuses.count("200"), elapsed)
    assert count > allowed + 1, f"{count} requests took {elapsed:.1f} s: too few to cross the rate"
    assert "429" in statuses


def test_an_app_not_deployed_yet_answers_502(host):
    assert status_of(host, "https://edge.lab.test/pending/") == 502


def test_unknown_paths_are_404(host):
    assert status_of(host, "https://edge.lab.test/nothing-here/") == 404


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("cross-origin-embedder-policy", "require-corp"),
        ("cross-origin-resource-policy", "cross-origin"),
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; connect-src 'self';"
            " img-src 'self' data: blob:; style-src 'self' 'unsafe-inline';"
            " frame-ancestors https://edge.lab.test:* https://imaging.lab.test:*; base-uri 'none'; form-action 'none'",
        ),
    ],
)
def test_sandbox_origin_sends_isolation_headers_and_a_strict_csp(host, header, value):
    response = request(host, "https://edge.lab.test:9443/")
    assert response.status == 200
    assert response.headers[header] == value


def test_sandbox_origin_serves_wasm_with_its_type_and_only_reads(host):
    host.run("printf '\\0asm' > /srv/secure-context/probe.wasm")
    assert request(host, "https://edge.lab.test:9443/probe.wasm").headers["content-type"] == "application/wasm"
    assert status_of(host, "https://edge.lab.test:9443/probe.wasm", "-X POST") == 403


def test_switch_upstream_moves_an_app_to_a_new_server(host, tmp_path):
    result = switch(tmp_path, "open-app", "127.0.0.1:8502")
    assert result.returncode == 0, result.stdout[-3000:]
    assert json.loads(request(host, "https://edge.lab.test/open-app/").body)["port"] == 8502
    result = switch(tmp_path, "open-app", "127.0.0.1:8501")
    assert result.returncode == 0, result.stdout[-3000:]
    assert json.loads(request(host, "https://edge.lab.test/open-app/").body)["port"] == 8501


def test_switch_to_an_upstream_nginx_refuses_leaves_the_old_one_serving(host, tmp_path):
    before = host.file(f"{UPSTREAMS}/open-app.conf").content_string
    result = switch(tmp_path, "open-app", "no-such-host.invalid:8501")
    assert result.returncode != 0
    assert host.file(f"{UPSTREAMS}/open-app.conf").content_string == before
    assert json.loads(request(host, "https://edge.lab.test/open-app/").body)["port"] == 8501


def test_a_broken_include_never_reaches_a_reload_and_the_running_config_keeps_serving(host, tmp_path):
    pending = f"{UPSTREAMS}/pending.conf"
    saved = host.file(pending).content_string
    host.run(f"echo 'upstream streamlit_app_pending {{ server' > {pending}")
    try:
        result = switch(tmp_path, "open-app", "127.0.0.1:8502")
        assert result.returncode != 0
        assert "the previous upstream include is back" in result.stdout + result.stderr
        # The swap's candidate was refused: open-app still points at 8501, and nginx serves it.
        assert "127.0.0.1:8501" in host.file(f"{UPSTREAMS}/open-app.conf").content_string
        assert json.loads(request(host, "https://edge.lab.test/open-app/").body)["port"] == 8501
        # A role run that changes the config stops at the check, before any reload.
        result = run_playbook(CONVERGE, "--tags", "tls_config", "-e", "tls_rate_limit_burst=41")
        assert result.returncode != 0
        assert status_of(host, "https://edge.lab.test/open-app/") == 200
        # The candidate site was refused: the live file still holds the old burst.
        assert "burst=40 " in host.file("/etc/nginx/sites-enabled/streamlit-edge.conf").content_string
    finally:
        host.run(f"printf '%s' '{saved}' > {pending}")
    assert host.run("nginx -t").rc == 0


def sslyze(host, profile: str, tmp_path: Path) -> subprocess.CompletedProcess:
    ca = tmp_path / "lab-ca.crt"
    ca.write_text(host.file(f"{PKI}/ca.crt").content_string)
    address = subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "instance-tls"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return subprocess.run(
        [
            str(PROJECT / ".cache/venv-sslyze/bin/sslyze"),
            f"--mozilla_config={profile}",
            f"--certinfo_ca_file={ca}",
            f"edge.lab.test:443{{{address}}}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_sslyze_intermediate_profile_is_compliant(host, tmp_path):
    result = sslyze(host, "intermediate", tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "OK - Compliant" in result.stdout


def test_modern_profile_is_compliant_a_near_expiry_leaf_is_renewed_and_no_password_shows(host, tmp_path):
    # A leaf 5 days from expiry, as if the last run was long ago.
    near = host.run(
        f"set -e; cd {PKI}/tls; openssl req -new -key server.key -subj /CN=edge.lab.test -out /tmp/near.csr;"
        f" openssl x509 -req -in /tmp/near.csr -CA {PKI}/ca/ca.crt -CAkey {PKI}/ca/ca.key -days 5"
        " -out server.crt 2>/dev/null; openssl x509 -in server.crt -noout -serial"
    )
    assert near.rc == 0, near.stderr
    result = run_playbook(CONVERGE, "-vvv", "--diff", "-e", "tls_profile=modern")
    assert result.returncode == 0, result.stdout[-3000:]
    assert PASSWORD not in result.stdout + result.stderr
    assert host.run(f"openssl x509 -in {PKI}/tls/server.crt -noout -serial").stdout != near.stdout
    assert host.run(f"openssl x509 -in {PKI}/tls/server.crt -noout -checkend {80 * 86400}").rc == 0
    result = sslyze(host, "modern", tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "OK - Compliant" in result.stdout
