"""The single sign-on service (roles/sso) in a systemd host, behind the edge's nginx.

The provider (https://idp.lab.test) does not exist here: these tests check the installation, the
sandbox and that nobody passes without it; the sign-in itself is tests/integration/test_sso_edge.py.
"""

from __future__ import annotations

CURL = "curl -s --cacert /etc/streamlit-edge/ca.crt --resolve edge.lab.test:443:127.0.0.1"
SECRET = "molecule-sso-secret-NeverLogged"


def test_the_service_runs_sandboxed_at_two_or_less(host) -> None:
    assert host.service("streamlit-sso").is_running
    assert host.run("systemd-analyze security --threshold=20 streamlit-sso.service").rc == 0


def test_the_secret_is_root_only_and_the_configuration_holds_none(host) -> None:
    secret = host.file("/etc/streamlit-sso/credentials/client-secret")
    assert (secret.user, secret.group, secret.mode) == ("root", "root", 0o600)
    config = host.file("/etc/streamlit-sso/config.json")
    assert (config.user, config.group, config.mode) == ("root", "streamlit-sso", 0o640)
    assert SECRET not in config.content_string
    assert host.file("/etc/streamlit-sso/credentials").mode == 0o700


def test_the_socket_is_nginx_s_only(host) -> None:
    sock = host.file("/run/streamlit-sso/sso.sock")
    assert sock.is_socket
    assert (sock.user, sock.group, sock.mode) == ("streamlit-sso", "streamlit-sso", 0o660)
    # No TCP port of its own.
    assert "streamlit_sso" not in host.run("ss -ltnp").stdout


def test_without_a_session_the_app_sends_to_sign_in_and_nothing_passes(host) -> None:
    # The provider is unreachable: the service answers 502 to the sign-in, the app is never reached.
    out = host.run(f"{CURL} -o /dev/null -w '%{{http_code}}' https://edge.lab.test/signed-in/").stdout
    assert out in ("502", "400"), out
    # A forged identity header does not open it either, nor reach another app.
    out = host.run(
        f"{CURL} -o /dev/null -w '%{{http_code}}' -H 'X-Auth-User: mallory' https://edge.lab.test/signed-in/"
    )
    assert out.stdout != "200"
    seen = host.run(
        f"{CURL} -H 'X-Auth-User: mallory' -H 'X-Auth-Groups: nurses' https://edge.lab.test/open-app/"
    ).stdout
    assert "mallory" not in seen
    assert "nurses" not in seen


def test_the_websocket_relay_sockets_are_the_service_s_only(host) -> None:
    # nginx makes its unix sockets 0666: the directory decides who reaches an app's websocket unchecked.
    relay = host.file("/run/streamlit-edge-relay")
    assert (relay.user, relay.group, relay.mode) == ("root", "streamlit-sso", 0o750)
    assert host.file("/run/streamlit-edge-relay/signed-in.sock").is_socket
    assert host.file("/etc/tmpfiles.d/streamlit-edge-relay.conf").contains("streamlit-sso")
