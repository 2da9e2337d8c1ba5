"""The TLS edge in a systemd host, in front of two stand-in Streamlit servers (prepare.yml).

Requests go through real nginx with curl inside the instance (names resolved to 127.0.0.1, the lab
CA as trust root); sslyze runs from the controller against the instance's address.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
CONVERGE = PROJECT / "molecule/tls/converge.yml"
PASSWORD = "molecule-Alice-pw-NeverLogged"
PKI = "/etc/streamlit-edge"
UPSTREAMS = "/etc/nginx/streamlit-upstreams"
ACCESS_LOG = "/var/log/nginx/streamlit-access.json"
# The tests that converge again with other settings change only the edge: the tls role's tasks, not sso's.
EDGE_TAGS = ("--tags", "tls")
CURL = (
    f"curl -s --cacert {PKI}/ca.crt --resolve edge.lab.test:443:127.0.0.1 --resolve edge.lab.test:80:127.0.0.1"
    " --resolve edge.lab.test:9443:127.0.0.1 --resolve imaging.lab.test:443:127.0.0.1"
)

# The app pages' policy: only this host, Streamlit's bootstrap script by hash, the sandbox origin as
# the only other frame source (no outside host: the Material Symbols fetch to Google is refused).
APP_CSP = (
    "default-src 'self'; script-src 'self' 'sha256-THxz9J9+wf7rhwR2YkXJoSZ13UCmYyC+3lNDv2+8ugA=';"
    " style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self';"
    " object-src 'none'; base-uri 'self'; form-action 'self'; frame-src 'self' https://edge.lab.test:9443;"
    " frame-ancestors 'self'"
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
        ("content-security-policy", APP_CSP),
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


def test_rate_limit_is_applied(host):
    # One curl process, 15 requests in flight (below tls_conn_per_client): 150 requests arrive far
    # faster than 20/s even on a saturated machine, where 150 curl processes did not (measured 6/s).
    statuses = host.run(
        f"{CURL} --parallel --parallel-max 15 -o /dev/null -w '%{{http_code}}\\n'"
        " 'https://edge.lab.test/open-app/?n=[1-150]'"
    ).stdout.split()
    assert len(statuses) == 150
    assert "200" in statuses
    assert "429" in statuses
    assert set(statuses) == {"200", "429"}
    assert "limiting requests" in host.run("tail -n 200 /var/log/nginx/error.log").stdout


def test_streamlits_static_files_have_a_limit_of_their_own(host):
    # One Streamlit 1.67 page asks for ~130 static files at once: well above the app's burst (40 here),
    # within the static files' own limit, so a page is never left without a script.
    statuses = host.run(
        f"{CURL} --parallel --parallel-max 15 -o /dev/null -w '%{{http_code}}\\n'"
        " 'https://edge.lab.test/open-app/static/js/index.js?n=[1-150]'"
    ).stdout.split()
    assert len(statuses) == 150
    assert set(statuses) == {"200"}


def test_an_app_not_deployed_yet_answers_502(host):
    assert status_of(host, "https://edge.lab.test/pending/") == 502


def test_unknown_paths_are_404(host):
    assert status_of(host, "https://edge.lab.test/nothing-here/") == 404


def test_the_root_serves_a_landing_page_with_the_app_headers_that_names_no_app(host):
    response = request(host, "https://edge.lab.test/")
    assert response.status == 200
    assert response.headers["content-type"] == "text/html"
    assert response.headers["content-security-policy"] == APP_CSP
    for app in ("open-app", "private", "imaging", "pending"):
        assert app not in response.body
    assert status_of(host, "https://edge.lab.test/", "-X POST") == 403


def instance_address() -> str:
    return subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "instance-tls"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def observatory(host, tmp_path: Path, https_port: int, path: str) -> dict:
    """The MDN HTTP Observatory's own scanner and grader (scripts/observatory) from the controller."""
    ca = tmp_path / "lab-ca.crt"
    ca.write_text(host.file(f"{PKI}/ca.crt").content_string)
    scan = str(PROJECT / "scripts/observatory/scan.mjs")
    result = subprocess.run(
        ["node", scan, "edge.lab.test", instance_address(), str(https_port), path],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "NODE_EXTRA_CA_CERTS": str(ca)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(("https_port", "path"), [(443, "/open-app/"), (443, "/"), (9443, "/")])
def test_the_observatory_grades_app_pages_the_root_and_the_sandbox_a_plus(host, tmp_path, https_port, path):
    scan = observatory(host, tmp_path, https_port, path)
    assert (scan["grade"], scan["score"]) == ("A+", 110), json.dumps(scan["tests"], indent=1)
    assert all(test["scoreModifier"] >= 0 for test in scan["tests"].values())


@pytest.mark.parametrize(
    ("host_header", "location"),
    [
        ("evil.example", "https://edge.lab.test/x?y=1"),
        ("imaging.lab.test", "https://imaging.lab.test/x?y=1"),
        ("edge.lab.test", "https://edge.lab.test/x?y=1"),
        ("127.0.0.1", "https://edge.lab.test/x?y=1"),
    ],
)
def test_http_redirects_only_to_configured_names_never_to_the_clients_host_header(host, host_header, location):
    result = host.run(f"curl -s -o /dev/null -w '%{{redirect_url}}' -H 'Host: {host_header}' 'http://127.0.0.1/x?y=1'")
    assert result.stdout == location


def test_no_server_of_this_nginx_can_speak_tls_1_0_or_1_1(host):
    dump = host.run("nginx -T 2>/dev/null").stdout
    effective = [line.split("#", 1)[0] for line in dump.splitlines() if line.split("#", 1)[0].strip()]
    protocols = [line.split()[1:] for line in effective if line.split()[0] == "ssl_protocols"]
    assert protocols, "no ssl_protocols at all: nginx 1.22 would default to TLSv1 TLSv1.1 TLSv1.2 TLSv1.3"
    assert {token.rstrip(";") for line in protocols for token in line} <= {"TLSv1.2", "TLSv1.3"}
    # The http-level one (in conf.d, before any server block) covers servers added later.
    conf_d = host.file("/etc/nginx/conf.d/streamlit-edge.conf").content_string
    assert "\nssl_protocols TLSv1.2 TLSv1.3;\n" in conf_d


SLOW_CLIENTS = r"""
import json, socket, ssl, sys, time
mode, count = sys.argv[1], int(sys.argv[2])
context = ssl.create_default_context(cafile="/etc/streamlit-edge/ca.crt")
socks = []
for _ in range(count):
    if mode == "header":
        s = socket.create_connection(("127.0.0.1", 80))
        s.sendall(b"GET / HTTP/1.1\r\nHost: edge.lab.test\r\n")
    else:
        s = context.wrap_socket(socket.create_connection(("127.0.0.1", 443)), server_hostname="edge.lab.test")
        s.sendall(b"POST /open-app/ HTTP/1.1\r\nHost: edge.lab.test\r\nContent-Length: 1000\r\n\r\nx")
    s.settimeout(0.2)
    socks.append(s)
start = time.monotonic()
answers = [None] * count
closed_after = [None] * count
while time.monotonic() - start < float(sys.argv[3]) and None in closed_after:
    for i, s in enumerate(socks):
        if closed_after[i] is not None:
            continue
        try:
            data = s.recv(4096)
        except (socket.timeout, TimeoutError, ssl.SSLWantReadError):
            continue
        except OSError:
            data = b""
        if data and answers[i] is None:
            answers[i] = data.split(b"\r\n", 1)[0].decode()
        if not data:
            closed_after[i] = round(time.monotonic() - start, 1)
print(json.dumps({"answers": answers, "closed_after": closed_after}))
"""


def slow_clients(host, mode: str, count: int, seconds: int) -> dict:
    host.run(f"cat > /tmp/slow_clients.py <<'EOF'\n{SLOW_CLIENTS}\nEOF")
    result = host.run(f"python3 /tmp/slow_clients.py {mode} {count} {seconds}")
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def test_a_slow_header_client_is_cut_off_after_the_header_timeout(host):
    # nginx's default waits 60 s for headers; the edge waits tls_client_header_timeout (10 s).
    seen = slow_clients(host, "header", 5, 40)
    assert all(after is not None and after <= 30 for after in seen["closed_after"]), seen


def test_one_client_address_holds_at_most_its_connection_limit(host):
    # converge.yml: tls_conn_per_client 20. 25 uploads that never finish: 20 are waited for, 5 refused.
    seen = slow_clients(host, "body", 25, 5)
    refused = [a for a in seen["answers"] if a is not None]
    assert refused == ["HTTP/1.1 429 Too Many Requests"] * 5, seen
    assert (
        'limiting connections by zone "streamlit_edge_per_client"'
        in host.run("tail -n 50 /var/log/nginx/error.log").stdout
    )


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("cross-origin-embedder-policy", "require-corp"),
        ("cross-origin-resource-policy", "cross-origin"),
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; connect-src 'self';"
            " img-src 'self' data: blob:; style-src 'self' 'unsafe-inline';"
            " frame-ancestors https://edge.lab.test https://imaging.lab.test; base-uri 'none'; form-action 'none'",
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


def exposure(host, unit: str) -> float:
    out = host.run(f"systemd-analyze security {unit}").stdout
    return float(out.rsplit(f"Overall exposure level for {unit}: ", 1)[1].split()[0])


def test_nginx_runs_sandboxed_keeps_few_capabilities_and_still_reloads(host):
    assert exposure(host, "nginx.service") <= 4.0
    pid = host.run("systemctl show -p MainPID --value nginx").stdout.strip()
    bounding = int(host.run(f"awk '/^CapBnd/ {{print $2}}' /proc/{pid}/status").stdout, 16)
    # CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_SETGID, CAP_SETUID, CAP_NET_BIND_SERVICE: nothing else.
    assert bounding == (1 << 0) | (1 << 1) | (1 << 6) | (1 << 7) | (1 << 10)
    assert host.run("systemctl reload nginx").rc == 0
    assert host.run("systemctl is-active nginx").stdout.strip() == "active"
    assert json.loads(request(host, "https://edge.lab.test/open-app/page-after-reload").body)["port"] in (8501, 8502)
    # Workers still run as www-data and write the access log.
    assert host.run(f"ps -o user= --ppid {pid} | sort -u").stdout.split() == ["www-data"]
    assert last_log_entry(host)["uri"] == "/open-app/page-after-reload"
    assert request(host, "https://edge.lab.test:9443/").status == 200


def test_the_firewall_unit_runs_sandboxed_and_still_loads_and_removes_its_table(host):
    """The hardening role's unit and drop-in (templates copied as they are), with a minimal rule file."""
    templates = PROJECT / "roles/hardening/templates"
    unit = templates.joinpath("secure-streamlit-firewall.service.j2").read_text().replace("{{ ansible_managed }}", "")
    dropin = templates.joinpath("secure-streamlit-firewall-hardening.conf.j2").read_text()
    dropin = dropin.replace("{{ ansible_managed }}", "")
    rules = "table inet secure_streamlit\ndelete table inet secure_streamlit\ntable inet secure_streamlit {\n}\n"
    for path, content in [
        ("/etc/systemd/system/secure-streamlit-firewall.service", unit),
        ("/etc/systemd/system/secure-streamlit-firewall.service.d/hardening.conf", dropin),
        ("/etc/secure-streamlit/firewall.nft", rules),
    ]:
        host.run(f"mkdir -p $(dirname {path}) && cat > {path} <<'EOF'\n{content}\nEOF")
    try:
        assert host.run("apt-get install -y -q nftables >/dev/null 2>&1; systemctl daemon-reload").rc == 0
        assert exposure(host, "secure-streamlit-firewall.service") <= 4.0
        started = host.run("systemctl start secure-streamlit-firewall")
        assert started.rc == 0, host.run("journalctl -u secure-streamlit-firewall -n 20 --no-pager").stdout
        assert host.run("nft list table inet secure_streamlit").rc == 0
        assert host.run("systemctl reload secure-streamlit-firewall").rc == 0
        assert host.run("systemctl stop secure-streamlit-firewall").rc == 0
        assert host.run("nft list table inet secure_streamlit").rc != 0
    finally:
        host.run(
            "systemctl stop secure-streamlit-firewall; rm -rf /etc/systemd/system/secure-streamlit-firewall.service*"
            " /etc/secure-streamlit; systemctl daemon-reload"
        )


def test_a_lab_publishing_443_on_8443_gets_redirects_and_frame_ancestors_with_that_port(host):
    result = run_playbook(CONVERGE, *EDGE_TAGS, "-e", "tls_public_https_port=8443", "-e", "tls_landing_list_apps=true")
    try:
        assert result.returncode == 0, result.stdout[-3000:]
        redirect = host.run("curl -s -o /dev/null -w '%{redirect_url}' -H 'Host: evil.example' http://127.0.0.1/x")
        assert redirect.stdout == "https://edge.lab.test:8443/x"
        # nginx's own slash redirect names no port of its own (443): the browser keeps the published one.
        assert request(host, "https://edge.lab.test/open-app?q=1").headers["location"] == "/open-app/?q=1"
        sandbox_csp = request(host, "https://edge.lab.test:9443/").headers["content-security-policy"]
        assert "frame-ancestors https://edge.lab.test:8443 https://imaging.lab.test:8443;" in sandbox_csp
        landing = request(host, "https://edge.lab.test/").body
        assert '<a href="https://edge.lab.test:8443/open-app/">open-app</a>' in landing
        assert '<a href="https://imaging.lab.test:8443/">imaging</a>' in landing
    finally:
        assert run_playbook(CONVERGE, *EDGE_TAGS).returncode == 0
    assert "open-app" not in request(host, "https://edge.lab.test/").body


def sslyze(host, profile: str, tmp_path: Path) -> subprocess.CompletedProcess:
    ca = tmp_path / "lab-ca.crt"
    ca.write_text(host.file(f"{PKI}/ca.crt").content_string)
    address = instance_address()
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
    result = run_playbook(CONVERGE, *EDGE_TAGS, "-vvv", "--diff", "-e", "tls_profile=modern")
    assert result.returncode == 0, result.stdout[-3000:]
    assert PASSWORD not in result.stdout + result.stderr
    assert host.run(f"openssl x509 -in {PKI}/tls/server.crt -noout -serial").stdout != near.stdout
    assert host.run(f"openssl x509 -in {PKI}/tls/server.crt -noout -checkend {80 * 86400}").rc == 0
    result = sslyze(host, "modern", tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "OK - Compliant" in result.stdout
