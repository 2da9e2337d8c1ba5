"""Private repository credentials: files kept root-only, git's environment, GitHub App tokens against the
fake GitHub API over real HTTP (the JWT's signature checked with the App's public key)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._repo_auth import (
    REFRESH_MARGIN,
    GitHubAppTokens,
    RepoAuthError,
    RepoCredentials,
    app_jwt,
    basic_header,
    read_secret_file,
    ssh_command,
)
from tests.fake_github.server import FakeGitHub, Fault

APP_ID, INSTALLATION = 4242, 777


def rsa_pem() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture(scope="module")
def app_key() -> tuple[bytes, bytes]:
    return rsa_pem()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def github(app_key):
    clock = Clock(1_800_000_000.0)
    with FakeGitHub(clock=clock) as gh:
        gh.add_app(APP_ID, app_key[1], INSTALLATION)
        gh.test_clock = clock  # type: ignore[attr-defined]
        yield gh


def tokens(gh: FakeGitHub, private: bytes, installation: int = INSTALLATION) -> GitHubAppTokens:
    return GitHubAppTokens(APP_ID, installation, private, api_url=gh.url, clock=gh.test_clock)  # type: ignore[attr-defined]


def test_the_jwt_is_rs256_backdated_and_short_lived(app_key):
    jwt = app_jwt(APP_ID, app_key[0], 1_000_000.0)
    header, claims = (json.loads(base64.urlsafe_b64decode(part + "==")) for part in jwt.split(".")[:2])
    assert header == {"alg": "RS256", "typ": "JWT"}
    assert claims == {"iat": 1_000_000 - 60, "exp": 1_000_000 - 60 + 540, "iss": str(APP_ID)}


def test_an_installation_token_is_bought_with_a_signed_jwt_and_kept_until_near_expiry(github, app_key):
    source = tokens(github, app_key[0])
    first = source.token()
    assert first.startswith("ghs_")
    assert first in github.installation_tokens
    assert source.token() == first  # cached: no second exchange
    assert source.exchanges == 1
    github.test_clock.now += 3600 - REFRESH_MARGIN - 1  # still more than the margin left
    assert source.token() == first
    github.test_clock.now += 2  # now less: a new one before the old expires
    second = source.token()
    assert second != first
    assert source.exchanges == 2
    (exchange, *_rest) = [r for r in github.requests if r.path.endswith("/access_tokens")]
    assert exchange.method == "POST"
    assert exchange.path == f"/app/installations/{INSTALLATION}/access_tokens"
    assert "authorization" not in {k.lower() for k in exchange.headers}  # the fake never logs it either


def test_a_jwt_signed_by_another_key_or_for_another_installation_is_refused(github, app_key):
    stranger, _public = rsa_pem()
    with pytest.raises(RepoAuthError, match=r"GitHub refused the App's JWT .* \(HTTP 401\)"):
        tokens(github, stranger).token()
    with pytest.raises(RepoAuthError, match=r"GitHub knows no installation 9 of App 4242 \(HTTP 404\)"):
        tokens(github, app_key[0], installation=9).token()
    assert not github.installation_tokens


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault(status=500), "answered HTTP 500"),
        (Fault(status=201, body="not json"), "not JSON"),
        (Fault(status=201, body='{"token": "ghs_x"}'), "without a usable token and expiry"),
        (Fault(status=201, body='{"token": "a b", "expires_at": "2030-01-01T00:00:00Z"}'), "without a usable"),
        (Fault(status=201, body='{"token": "ghs_x", "expires_at": "2001-01-01T00:00:00Z"}'), "already expired"),
    ],
)
def test_a_bad_exchange_answer_is_a_clear_error(github, app_key, fault, message):
    github.faults.append(fault)
    with pytest.raises(RepoAuthError, match=message):
        tokens(github, app_key[0]).token()


def test_an_unreachable_api_names_the_exception_class_only(app_key):
    source = GitHubAppTokens(APP_ID, INSTALLATION, app_key[0], api_url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(RepoAuthError, match=r"did not answer the token exchange \(ConnectionError\)"):
        source.token()


def test_a_key_that_is_not_an_rsa_pem_is_refused(app_key):
    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(RepoAuthError, match="not an RSA key"):
        app_jwt(1, ed, 0)
    with pytest.raises(RepoAuthError, match="not an unencrypted PEM private key"):
        app_jwt(1, b"-----BEGIN nothing", 0)


# -- files and git's environment ------------------------------------------------------------------------------
def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_credential_file_must_be_a_private_regular_file(tmp_path):
    me = os.getuid()
    good = write(tmp_path / "a/token", "s3cret\n")
    assert read_secret_file(good, owner=me) == "s3cret"
    with pytest.raises(RepoAuthError, match=r"readable by others .mode 0644"):
        read_secret_file(write(tmp_path / "b/token", "x", 0o644), owner=me)
    (tmp_path / "c").mkdir()
    (tmp_path / "c/token").symlink_to(good)
    with pytest.raises(RepoAuthError, match="cannot be opened"):
        read_secret_file(tmp_path / "c/token", owner=me)
    with pytest.raises(RepoAuthError, match=r"is missing .re-run site.yml"):
        read_secret_file(tmp_path / "d/token", owner=me)
    with pytest.raises(RepoAuthError, match="is empty"):
        read_secret_file(write(tmp_path / "e/token", "\n"), owner=me)
    with pytest.raises(RepoAuthError, match="not owned by uid"):
        read_secret_file(good, owner=me + 1)


def test_ssh_checks_host_keys_strictly_against_the_pinned_file_only():
    command = ssh_command("/etc/k/id_ed25519", "/etc/known_hosts")
    assert "-o StrictHostKeyChecking=yes" in command
    assert "-o UserKnownHostsFile=/etc/known_hosts" in command
    assert "-o GlobalKnownHostsFile=/dev/null" in command
    assert "BatchMode=yes" in command
    assert "IdentitiesOnly=yes" in command
    assert "=no" not in command
    assert "accept-new" not in command
    with pytest.raises(RepoAuthError):
        ssh_command("/etc/k/id; rm -rf /", "/etc/known_hosts")


def test_a_token_goes_into_a_header_set_through_the_environment_only(tmp_path):
    me = os.getuid()
    write(tmp_path / "auth/priv/token", "tok-123\n")
    creds = RepoCredentials(str(tmp_path / "auth"), "/etc/known_hosts", owner=me)
    env = creds.git_env("priv", {"kind": "token", "username": "oauth2", "token_var": "vault_x"})
    assert env["GIT_CONFIG_KEY_1"] == "http.extraHeader"
    assert env["GIT_CONFIG_VALUE_1"] == basic_header("oauth2", "tok-123")
    assert base64.b64decode(env["GIT_CONFIG_VALUE_1"].split()[-1]) == b"oauth2:tok-123"
    assert env["GIT_CONFIG_KEY_0"] == "credential.helper"
    assert env["GIT_CONFIG_VALUE_0"] == ""
    assert creds.git_env("public", {}) == {}
    with pytest.raises(RepoAuthError, match="is missing"):
        creds.git_env("other", {"kind": "token", "username": "oauth2", "token_var": "vault_x"})
    with pytest.raises(RepoAuthError, match="line break"):
        basic_header("u", "a\nb")


def test_a_deploy_key_goes_to_ssh_by_path(tmp_path):
    me = os.getuid()
    write(tmp_path / "auth/priv/id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\n...\n")
    creds = RepoCredentials(str(tmp_path / "auth"), "/etc/ssh_known_hosts", owner=me)
    env = creds.git_env("priv", {"kind": "deploy_key"})
    assert f"-i {tmp_path}/auth/priv/id_ed25519" in env["GIT_SSH_COMMAND"]
    assert env["GIT_ALLOW_PROTOCOL"] == "ssh"
    (tmp_path / "auth/priv/id_ed25519").chmod(0o640)
    with pytest.raises(RepoAuthError, match="readable by others"):
        creds.git_env("priv", {"kind": "deploy_key"})


def test_a_github_app_token_is_bought_once_per_app_and_sent_as_x_access_token(tmp_path, github, app_key):
    me = os.getuid()
    write(tmp_path / "auth/g/github-app.pem", app_key[0].decode())
    creds = RepoCredentials(str(tmp_path / "auth"), "/k", github_api_url=github.url, clock=github.test_clock, owner=me)
    auth = {"kind": "github_app", "app_id": APP_ID, "installation_id": INSTALLATION, "private_key_var": "vault_k"}
    first = creds.git_env("g", auth)
    assert creds.git_env("g", auth) == first
    user, _, token = base64.b64decode(first["GIT_CONFIG_VALUE_1"].split()[-1]).decode().partition(":")
    assert user == "x-access-token"
    assert token in github.installation_tokens
    assert len(github.installation_tokens) == 1
