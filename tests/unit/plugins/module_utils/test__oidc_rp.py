"""The relying party's token validation (Authlib, real keys) and its session rules (injected clock)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import warnings

import authlib.deprecate  # noqa: F401  (its import puts an "always" filter for its warnings first)
import pytest

with warnings.catch_warnings():
    # The one known notice (Authlib 1.7+ points at joserfc), for this import only.
    warnings.filterwarnings(
        "ignore",
        message=r"authlib\.jose module is deprecated",
        category=DeprecationWarning,
        module=re.escape(__name__) + r"\Z",
    )
    from authlib.jose import JsonWebKey, JsonWebToken

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._oidc_rp import (
    IDTokenError,
    RelyingParty,
    RPConfig,
    Session,
    cookie,
    parse_cookies,
    verify_id_token,
)

ISSUER = "https://idp.clinic.example"
CLIENT = "streamlit-edge"
NONCE = "n-0S6_WzA2Mj"


def rsa_key(kid: str):
    return JsonWebKey.generate_key("RSA", 2048, is_private=True, options={"kid": kid})


KEY = rsa_key("k1")
OTHER = rsa_key("k1")  # same kid, other key: a forged signature
JWKS = {"keys": [KEY.as_dict(is_private=False)]}


def token(key=KEY, alg="RS256", **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "sub": "alice", "aud": CLIENT, "iat": now, "exp": now + 300, "nonce": NONCE}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return JsonWebToken([alg]).encode({"alg": alg, "kid": "k1"}, body, key).decode()


def verify(id_token: str, **kwargs):
    args = {"jwks": JWKS, "issuer": ISSUER, "client_id": CLIENT, "nonce": NONCE, "now": time.time()}
    args.update(kwargs)
    return verify_id_token(id_token, **args)


def test_a_good_token_passes() -> None:
    assert verify(token(email="alice@clinic.example"))["email"] == "alice@clinic.example"


# Tokens are made when the test runs, not at collection: a suite that runs longer than a
# token's lifetime must not turn every token into an expired one.
@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: token(key=OTHER), "bad_signature"),
        (lambda: token(aud="another-client"), "aud"),
        (lambda: token(iss="https://evil.example"), "iss"),
        (lambda: token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200), "expired"),
        (lambda: token(nonce="replayed"), "nonce"),
        (lambda: token(nonce=None), "nonce"),
    ],
    ids=["wrong-signature", "wrong-audience", "wrong-issuer", "expired", "wrong-nonce", "no-nonce"],
)
def test_a_bad_token_is_refused(make, why: str) -> None:
    with pytest.raises(IDTokenError, match=why):
        verify(make())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_hmac_with_the_public_key_and_alg_none_are_refused() -> None:
    # The classic confusion: "HS256" keyed with the provider's public key (made by hand: Authlib refuses).
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "a", "aud": CLIENT, "iat": now, "exp": now + 60, "nonce": NONCE}
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': 'k1'}).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(KEY.as_pem(is_private=False), signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(IDTokenError):
        verify(f"{signing_input}.{b64(mac)}")
    none = f"{b64(json.dumps({'alg': 'none'}).encode())}.{b64(json.dumps(claims).encode())}."
    with pytest.raises(IDTokenError):
        verify(none)


def test_no_token_text_in_the_error() -> None:
    bad = token(aud="x")
    with pytest.raises(IDTokenError) as info:
        verify(bad)
    assert bad.split(".")[1] not in str(info.value)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def rp(clock: Clock, idle: int = 900, absolute: int = 28800) -> RelyingParty:
    config = RPConfig.from_mapping(
        {
            "issuer": ISSUER,
            "client_id": CLIENT,
            "scopes": ["openid"],
            "groups_claim": "groups",
            "username_claim": "email",
            "idle_timeout": idle,
            "absolute_lifetime": absolute,
            "origins": {"edge.clinic.example": "https://edge.clinic.example"},
            "apps": {
                "triage": {"groups": ["nurses"], "users": []},
                "billing": {"groups": [], "users": ["Bob@Clinic.example"]},
            },
            "lab": False,
        },
        "secret",
    )
    return RelyingParty(config, http=None, clock=clock)  # type: ignore[arg-type]


def add_session(party: RelyingParty, user: str, groups: tuple[str, ...]) -> str:
    sid = "S" * 43
    now = party.clock()
    party._sessions[sid] = Session(user, user, groups, "sub", "id-token", now, now)
    return sid


def test_groups_and_users_decide_per_app() -> None:
    clock = Clock()
    party = rp(clock)
    sid = add_session(party, "alice@clinic.example", ("nurses",))
    assert party.check("triage", sid).status == 200
    assert party.check("billing", sid).status == 403
    assert party.check("unknown", sid).status == 403
    bob = rp(clock)
    sid = add_session(bob, "bob@clinic.example", ())
    assert bob.check("billing", sid).status == 200  # user names compare case-insensitively
    assert bob.check("triage", sid).status == 403


def test_idle_timeout_and_absolute_lifetime() -> None:
    clock = Clock()
    party = rp(clock, idle=900, absolute=3600)
    sid = add_session(party, "alice@clinic.example", ("nurses",))
    clock.now += 899
    assert party.check("triage", sid).status == 200  # activity restarts the idle clock
    clock.now += 899
    assert party.check("triage", sid).status == 200
    clock.now += 901
    assert party.check("triage", sid).status == 401
    sid = add_session(party, "alice@clinic.example", ("nurses",))
    for _ in range(8):  # busy all along, still signed out after the absolute lifetime
        clock.now += 500
    assert party.check("triage", sid).status == 401


def test_requests_a_page_makes_by_itself_do_not_restart_the_idle_clock() -> None:
    clock = Clock()
    party = rp(clock, idle=900)
    sid = add_session(party, "alice@clinic.example", ("nurses",))
    for _ in range(3):
        clock.now += 300
        assert party.check("triage", sid, touch=False).status == 200
    clock.now += 1
    assert party.check("triage", sid, touch=False).status == 401


def test_no_session_cookie_or_a_malformed_one_is_no_session() -> None:
    party = rp(Clock())
    assert party.check("triage", None).status == 401
    assert party.check("triage", "short").status == 401
    assert party.check("triage", "A" * 43).status == 401


def test_identity_headers_are_printable_ascii() -> None:
    clock = Clock()
    party = rp(clock)
    sid = add_session(party, "al\r\nice@clinic.example", ("nurses",))
    headers = party.check("triage", sid).headers()
    assert "\r" not in headers["X-Auth-User"]
    assert "\n" not in headers["X-Auth-User"]


def test_cookies() -> None:
    assert cookie("__Host-x", "v", 60) == "__Host-x=v; Path=/; Max-Age=60; Secure; HttpOnly; SameSite=Lax"
    assert parse_cookies("a=1; __Host-x=v; a=2") == {"a": "1", "__Host-x": "v"}


def test_unknown_configuration_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        RPConfig.from_mapping({"issuer": ISSUER, "extra": 1}, "s")


@pytest.mark.parametrize("lab", ["false", "true", 0, 1, None])
def test_lab_must_be_a_real_bool(lab: object) -> None:
    """Before: bool("false") is True, so lab: "false" in the file switched the lab mode on."""
    mapping = {
        "issuer": ISSUER,
        "client_id": CLIENT,
        "scopes": ["openid"],
        "groups_claim": "groups",
        "username_claim": "email",
        "idle_timeout": 900,
        "absolute_lifetime": 28800,
        "origins": {},
        "apps": {},
        "lab": lab,
    }
    with pytest.raises(ValueError, match="lab must be true or false"):
        RPConfig.from_mapping(mapping, "s")
    assert RPConfig.from_mapping({**mapping, "lab": False}, "s").lab is False
    assert RPConfig.from_mapping({**mapping, "lab": True}, "s").lab is True


def test_activity_restarts_the_idle_clock_a_check_does_not() -> None:
    clock = Clock()
    party = rp(clock, idle=900, absolute=3600)
    sid = add_session(party, "alice@clinic.example", ("nurses",))
    clock.now += 600
    left = party.activity(sid, "check")
    assert left is not None
    assert (left.idle, left.lifetime) == (300, 3000)
    clock.now += 200
    left = party.activity(sid, "active")
    assert left is not None
    assert (left.idle, left.lifetime) == (900, 2800)
    clock.now += 901  # an open page that only checks: the session ends at the idle limit
    assert party.activity(sid, "check") is None
    assert party.check("triage", sid).status == 401


def test_activity_cannot_outlive_the_absolute_lifetime_or_a_sign_out() -> None:
    clock = Clock()
    party = rp(clock, idle=900, absolute=3600)
    sid = add_session(party, "alice@clinic.example", ("nurses",))
    for _ in range(7):
        clock.now += 500
        assert party.activity(sid, "active") is not None
    clock.now += 101
    assert party.activity(sid, "active") is None
    sid = add_session(party, "alice@clinic.example", ("nurses",))
    party._metadata = {"issuer": ISSUER}  # no end_session_endpoint: no provider round trip
    party.logout(sid, "edge.clinic.example")
    assert party.activity(sid, "check") is None


def test_activity_refuses_unknown_kinds_and_bad_cookies() -> None:
    party = rp(Clock())
    sid = add_session(party, "alice@clinic.example", ("nurses",))
    with pytest.raises(ValueError, match="activity must be one of"):
        party.activity(sid, "active ")
    assert party.activity("short", "active") is None
    assert party.activity(None, "check") is None


@pytest.mark.parametrize(("idle", "period"), [(900, 60), (3600, 60), (120, 12), (20, 2), (5, 1)])
def test_the_activity_period_is_a_tenth_of_the_idle_limit_within_1_to_60_s(idle: int, period: int) -> None:
    assert rp(Clock(), idle=idle).activity_period() == period


def test_a_relayed_websocket_goes_on_only_while_the_session_allows_it_and_does_not_extend_it() -> None:
    clock = Clock()
    party = rp(clock, idle=900, absolute=3600)
    sid = add_session(party, "alice@clinic.example", ("nurses",))
    assert party.still_allowed("triage", sid)
    assert not party.still_allowed("billing", sid)
    assert not party.still_allowed("unknown", sid)
    for _ in range(3):  # a busy websocket, looked at every 5 minutes: the idle clock keeps running
        clock.now += 300
        assert party.still_allowed("triage", sid)
    clock.now += 1
    assert not party.still_allowed("triage", sid)
    assert not party.still_allowed("triage", None)
