"""The edge's OpenID Connect relying party: what nginx's `auth_request` asks, sign-in, sign-out.

Authlib does the protocol: the authorization URL with PKCE (S256), the code exchange and the ID token's
signature and claims (issuer, audience, expiry, nonce, at_hash, azp) against the issuer's JWKS. This
module keeps the state around it:
- pending sign-ins, keyed by `state` and bound to the browser that started them by a cookie, for ten
  minutes at most, used once;
- sessions on the server, named by a random cookie value: an idle timeout and an absolute lifetime
  (automatic logoff), deleted on sign-out, and all gone when the service restarts;
- per-app rules (groups claim, user names) and the identity the edge passes on.

The clock, the HTTP session and the random source are injected (tests drive time and the network).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

try:
    from ansible_collections.secure_streamlit.hosting.plugins.module_utils._oidc_config import Provider
except ImportError:  # installed on a host: the libraries sit side by side
    from _oidc_config import Provider  # type: ignore[no-redef]

try:
    # Imported first: its import puts an "always" filter for its warnings first.
    import authlib.deprecate  # noqa: F401  # pylint: disable=unused-import
    import requests

    with warnings.catch_warnings():
        # Authlib 1.7+ points at joserfc; Debian 12's python3-authlib (1.2) has only authlib.jose. Only
        # that notice, for this import, is hidden; it must go in after Authlib's own filter to count.
        warnings.filterwarnings(
            "ignore",
            message=r"authlib\.jose module is deprecated",
            category=DeprecationWarning,
            module=re.escape(__name__) + r"\Z",
        )
        from authlib.integrations.requests_client import OAuth2Session
        from authlib.jose import JsonWebKey, JsonWebToken
        from authlib.oidc.core import CodeIDToken
except ImportError as exc:  # the SSO service's host has Debian's python3-authlib; the controller needs neither
    IMPORT_ERROR: ImportError | None = exc
else:
    IMPORT_ERROR = None

SESSION_COOKIE = "__Host-streamlit-sso"
LOGIN_COOKIE = "__Host-streamlit-sso-login"
# Asymmetric signatures only: an HMAC "signed" with the public key, or alg=none, is refused.
ID_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LOGIN_TTL = 600
CLOCK_LEEWAY = 60
MAX_PENDING = 10000
MAX_SESSIONS = 100000
JWKS_MIN_REFRESH = 60
COOKIE_VALUE_RE = re.compile(r"[A-Za-z0-9_-]{32,128}")
APP_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
# Where a browser goes back to after signing in: a path on the same origin, nothing else.
RETURN_PATH_RE = re.compile(r"/(?![/\\])[\x21-\x7e]{0,2000}")
HEADER_VALUE_RE = re.compile(r"[\x20-\x7e]*")
# The activity script's two questions (the X-SSO-Activity header): a custom header also keeps other
# sites out (a cross-origin request with it needs a CORS preflight, which the edge never grants).
ACTIVITY_KINDS = ("active", "check")


class SignInError(Exception):
    """A sign-in that cannot complete; the message is safe to show and to log (no token)."""


class IDTokenError(SignInError):
    pass


@dataclass(frozen=True)
class AppRule:
    groups: frozenset[str]
    users: frozenset[str]  # casefolded


@dataclass(frozen=True)
class RPConfig:
    provider: Provider
    origins: Mapping[str, str]
    apps: Mapping[str, AppRule]
    lab: bool = False

    KEYS = (*Provider.public_keys(), "origins", "apps", "lab")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], client_secret: str) -> RPConfig:
        """The service's configuration file (written by _oidc_config.service_config) and its secret."""
        unknown = sorted(set(d) - set(cls.KEYS))
        missing = sorted(set(cls.KEYS) - set(d))
        if unknown or missing:
            raise ValueError(f"configuration: unknown keys {unknown}, missing keys {missing}")
        if not client_secret:
            raise ValueError("configuration: the client secret credential is empty")
        if not isinstance(d["lab"], bool):
            # A string such as "false" is truthy: only a real JSON true/false says what it means.
            raise ValueError(f"configuration: lab must be true or false (is {type(d['lab']).__name__})")
        apps = {}
        for name, rule in d["apps"].items():
            if not APP_RE.fullmatch(name) or set(rule) != {"groups", "users"}:
                raise ValueError(f"configuration: apps[{name!r}] must be {{groups, users}} for an app name")
            apps[name] = AppRule(frozenset(rule["groups"]), frozenset(u.casefold() for u in rule["users"]))
        provider = Provider(
            issuer=str(d["issuer"]),
            client_id=str(d["client_id"]),
            client_secret=client_secret,
            scopes=tuple(d["scopes"]),
            groups_claim=str(d["groups_claim"]),
            username_claim=str(d["username_claim"]),
            idle_timeout=int(d["idle_timeout"]),
            absolute_lifetime=int(d["absolute_lifetime"]),
        )
        return cls(
            provider=provider,
            origins={str(k).lower(): str(v) for k, v in d["origins"].items()},
            apps=apps,
            lab=d["lab"],
        )


@dataclass
class Session:
    user: str
    email: str
    groups: tuple[str, ...]
    subject: str
    id_token: str = field(repr=False)
    created: float
    last_seen: float


@dataclass(frozen=True)
class PendingLogin:
    binding: str = field(repr=False)  # the login cookie's value
    nonce: str = field(repr=False)
    code_verifier: str = field(repr=False)
    return_to: str
    origin: str
    created: float


@dataclass(frozen=True)
class TimeLeft:
    """Seconds until a session's idle timeout and its absolute lifetime end it."""

    idle: float
    lifetime: float


@dataclass(frozen=True)
class Decision:
    """What the edge does with a request: 200 pass (identity headers), 401 sign in, 403 deny."""

    status: int
    user: str = ""
    email: str = ""
    groups: tuple[str, ...] = ()
    reason: str = ""

    def headers(self) -> dict[str, str]:
        if not self.user:
            return {}
        return {
            "X-Auth-User": _header_safe(self.user),
            "X-Auth-Email": _header_safe(self.email),
            "X-Auth-Groups": _header_safe(",".join(g for g in self.groups if "," not in g)),
        }


def _header_safe(value: str) -> str:
    """Printable ASCII only (what an HTTP header carries without ambiguity), at most 1,000 characters."""
    return value[:1000] if HEADER_VALUE_RE.fullmatch(value) else re.sub(r"[^\x20-\x7e]", "?", value)[:1000]


def verify_id_token(
    id_token: str,
    *,
    jwks: Mapping[str, Any],
    issuer: str,
    client_id: str,
    nonce: str,
    now: float,
    access_token: str | None = None,
) -> dict[str, Any]:
    """The ID token's claims after Authlib has checked its signature against `jwks` and its claims
    (iss, aud, exp, iat, nonce, azp, at_hash); IDTokenError otherwise."""
    try:
        key_set = JsonWebKey.import_key_set(dict(jwks))
        claims = JsonWebToken(list(ID_TOKEN_ALGORITHMS)).decode(
            id_token,
            key_set,
            claims_cls=CodeIDToken,
            claims_options={
                "iss": {"essential": True, "value": issuer},
                "aud": {"essential": True, "value": client_id},
                "sub": {"essential": True},
                "exp": {"essential": True},
                "iat": {"essential": True},
            },
            claims_params={"nonce": nonce, "client_id": client_id, "access_token": access_token},
        )
        claims.validate(now=int(now), leeway=CLOCK_LEEWAY)
    except Exception as exc:
        # Authlib's errors name what failed (bad_signature, invalid_claim: aud, expired_token; from 1.7 on
        # they are joserfc's classes, not authlib.jose's JoseError); no token text.
        raise IDTokenError(f"the ID token was refused: {type(exc).__name__}: {str(exc)[:200]}") from None
    return dict(claims)


def _groups(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value if isinstance(v, str | int))
    return ()


class RelyingParty:
    def __init__(
        self,
        config: RPConfig,
        *,
        http: requests.Session,
        clock: Callable[[], float] = time.time,
        token: Callable[[int], str] = secrets.token_urlsafe,
        timeout: float = 10.0,
    ) -> None:
        self.config = config
        self.http = http
        self.clock = clock
        self.token = token
        self.timeout = timeout
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._pending: OrderedDict[str, PendingLogin] = OrderedDict()
        self._metadata: dict[str, Any] | None = None
        self._jwks: dict[str, Any] | None = None
        self._jwks_fetched = 0.0

    # -- the provider ---------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            url = self.config.provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
            response = self.http.get(url, timeout=self.timeout)
            response.raise_for_status()
            data = response.json()
            if data.get("issuer") != self.config.provider.issuer:
                raise SignInError(f"the provider's discovery document names issuer {str(data.get('issuer'))[:200]!r}")
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(data.get(key), str):
                    raise SignInError(f"the provider's discovery document has no {key}")
            self._metadata = data
        return self._metadata

    def jwks(self, *, refresh: bool = False) -> dict[str, Any]:
        now = self.clock()
        if self._jwks is None or (refresh and now - self._jwks_fetched >= JWKS_MIN_REFRESH):
            response = self.http.get(self.metadata()["jwks_uri"], timeout=self.timeout)
            response.raise_for_status()
            self._jwks, self._jwks_fetched = response.json(), now
        return self._jwks

    def _oauth(self, origin: str, **kwargs: Any) -> OAuth2Session:
        return OAuth2Session(
            client_id=self.config.provider.client_id,
            client_secret=self.config.provider.client_secret,
            scope=" ".join(self.config.provider.scopes),
            redirect_uri=f"{origin}/_sso/callback",
            code_challenge_method="S256",
            **kwargs,
        )

    # -- requests from the edge -----------------------------------------------------------------
    def origin_for(self, host: str) -> str:
        origin = self.config.origins.get(host.split(":")[0].lower())
        if origin is None:
            raise SignInError(f"host {host[:100]!r} is not one of the edge's names")
        return origin

    def session(self, sid: str | None, *, touch: bool = True) -> Session | None:
        """The live session behind a cookie value, its idle clock restarted unless `touch` is false;
        None when there is none."""
        if not sid or not COOKIE_VALUE_RE.fullmatch(sid):
            return None
        now = self.clock()
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                return None
            if (
                now - session.last_seen > self.config.provider.idle_timeout
                or now - session.created > self.config.provider.absolute_lifetime
            ):
                del self._sessions[sid]
                return None
            if touch:
                session.last_seen = now
            return session

    def activity(self, sid: str | None, kind: str) -> TimeLeft | None:
        """What the edge's activity script in an app page asks: `active` (the user pressed a key, used
        the pointer or came back to the tab) restarts the idle clock, `check` only looks, so that an
        open page does not keep its own session alive. None when the session has ended."""
        if kind not in ACTIVITY_KINDS:
            raise ValueError(f"activity must be one of {list(ACTIVITY_KINDS)}")
        session = self.session(sid, touch=kind == "active")
        if session is None:
            return None
        now = self.clock()
        return TimeLeft(
            idle=max(0.0, session.last_seen + self.config.provider.idle_timeout - now),
            lifetime=max(0.0, session.created + self.config.provider.absolute_lifetime - now),
        )

    def still_allowed(self, app: str, sid: str | None) -> bool:
        """Whether a websocket opened for `app` may go on: the session lives and the app allows its
        user. Looking does not restart the idle clock (a websocket's traffic is not the user's)."""
        rule = self.config.apps.get(app)
        session = self.session(sid, touch=False)
        if rule is None or session is None:
            return False
        return session.user.casefold() in rule.users or bool(rule.groups.intersection(session.groups))

    def activity_period(self) -> int:
        """Seconds between the activity script's reports: a tenth of the idle timeout, 1..60 s. An
        ended session sends its page away within this (and a throttled background tab's timer)."""
        return max(1, min(60, self.config.provider.idle_timeout // 10))

    def check(self, app: str, sid: str | None, *, touch: bool = True) -> Decision:
        """nginx's question about one request; `touch` (a page the user opened, not a request the page
        made by itself) restarts the idle clock."""
        rule = self.config.apps.get(app)
        if rule is None:
            return Decision(403, reason=f"app {app[:40]!r} has no single sign-on rule")
        session = self.session(sid, touch=touch)
        if session is None:
            return Decision(401, reason="no session")
        allowed = session.user.casefold() in rule.users or bool(rule.groups.intersection(session.groups))
        return Decision(
            200 if allowed else 403,
            user=session.user,
            email=session.email,
            groups=session.groups,
            reason="" if allowed else "neither the user nor a group of theirs is allowed",
        )

    def begin(self, host: str, return_to: str) -> tuple[str, str]:
        """(the provider's authorization URL, the login cookie's value) for a browser to sign in."""
        origin = self.origin_for(host)
        if not RETURN_PATH_RE.fullmatch(return_to):
            return_to = "/"
        state, nonce, verifier, binding = (self.token(32) for _i in range(4))
        verifier = verifier + self.token(32)  # RFC 7636: 43..128 characters
        url, _state = self._oauth(origin).create_authorization_url(
            self.metadata()["authorization_endpoint"], state=state, nonce=nonce, code_verifier=verifier
        )
        now = self.clock()
        with self._lock:
            self._expire_pending(now)
            while len(self._pending) >= MAX_PENDING:
                self._pending.popitem(last=False)
            self._pending[state] = PendingLogin(binding, nonce, verifier, return_to, origin, now)
        return url, binding

    def _expire_pending(self, now: float) -> None:
        for key in [k for k, p in self._pending.items() if now - p.created > LOGIN_TTL]:
            del self._pending[key]

    def finish(self, host: str, params: Mapping[str, str], binding: str | None) -> tuple[str, str]:
        """(new session id, path to return to) after the provider sent the browser back."""
        if "error" in params:
            raise SignInError(f"the provider refused the sign-in: {params['error'][:100]!r}")
        state, code = params.get("state", ""), params.get("code", "")
        now = self.clock()
        with self._lock:
            self._expire_pending(now)
            pending = self._pending.pop(state, None) if state else None
        if pending is None:
            raise SignInError("unknown or expired sign-in (state); start again")
        if not binding or not secrets.compare_digest(binding, pending.binding):
            raise SignInError("this sign-in was started in another browser (login cookie mismatch)")
        if pending.origin != self.origin_for(host):
            raise SignInError("the sign-in came back to another host name")
        if not code:
            raise SignInError("the provider sent no authorization code")
        token = self._oauth(pending.origin, state=state).fetch_token(
            self.metadata()["token_endpoint"],
            grant_type="authorization_code",
            code=code,
            code_verifier=pending.code_verifier,
            timeout=self.timeout,
        )
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise SignInError("the provider's token response carries no ID token")
        try:
            claims = self._verify(id_token, pending.nonce, token.get("access_token"))
        except IDTokenError:
            # The provider may have rotated its keys: fetch them again (rate-limited), then decide.
            self.jwks(refresh=True)
            claims = self._verify(id_token, pending.nonce, token.get("access_token"))
        claims = self._with_userinfo(claims, token)
        user = claims.get(self.config.provider.username_claim)
        if not isinstance(user, str) or not user:
            raise SignInError(f"the provider sent no {self.config.provider.username_claim!r} claim to name the user")
        session = Session(
            user=user,
            email=str(claims.get("email", "")),
            groups=_groups(claims.get(self.config.provider.groups_claim)),
            subject=str(claims["sub"]),
            id_token=id_token,
            created=now,
            last_seen=now,
        )
        sid = self.token(32)
        with self._lock:
            while len(self._sessions) >= MAX_SESSIONS:
                self._sessions.popitem(last=False)
            self._sessions[sid] = session
        return sid, pending.return_to

    def _verify(self, id_token: str, nonce: str, access_token: object) -> dict[str, Any]:
        return verify_id_token(
            id_token,
            jwks=self.jwks(),
            issuer=self.config.provider.issuer,
            client_id=self.config.provider.client_id,
            nonce=nonce,
            now=self.clock(),
            access_token=access_token if isinstance(access_token, str) else None,
        )

    def _with_userinfo(self, claims: dict[str, Any], token: Mapping[str, Any]) -> dict[str, Any]:
        """Claims the ID token lacks (groups, the user name) from the UserInfo endpoint, same subject only."""
        wanted = (self.config.provider.groups_claim, self.config.provider.username_claim, "email")
        endpoint = self.metadata().get("userinfo_endpoint")
        if all(k in claims for k in wanted) or not isinstance(endpoint, str) or "access_token" not in token:
            return claims
        response = self.http.get(
            endpoint, headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=self.timeout
        )
        response.raise_for_status()
        info = response.json()
        if info.get("sub") != claims["sub"]:
            raise SignInError("the UserInfo response names another subject")
        return {**{k: info[k] for k in wanted if k in info}, **claims}

    def logout(self, sid: str | None, host: str) -> str:
        """Ends the edge's session; where to send the browser (the provider's end_session_endpoint when
        it has one, with the ID token as hint, else the edge's signed-out page)."""
        origin = self.origin_for(host)
        session = None
        if sid and COOKIE_VALUE_RE.fullmatch(sid):
            with self._lock:
                session = self._sessions.pop(sid, None)
        signed_out = f"{origin}/_sso/signed-out"
        end = self.metadata().get("end_session_endpoint") if session else None
        if not isinstance(end, str):
            return signed_out
        query = {"client_id": self.config.provider.client_id, "post_logout_redirect_uri": signed_out}
        if session is not None:
            query["id_token_hint"] = session.id_token
        return f"{end}{'&' if urlsplit(end).query else '?'}{urlencode(query)}"

    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)


def cookie(name: str, value: str, max_age: int) -> str:
    """A Set-Cookie value: host-only (__Host-), Secure, HttpOnly, SameSite=Lax."""
    return f"{name}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Lax"


def parse_cookies(header: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (header or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name not in out:
            out[name] = value
    return out


def denial_record(app: str, decision: Decision, uri: str) -> str:
    """One JSON line for the journal: who was refused where (no cookie, no token)."""
    return json.dumps(
        {"event": "sso_denied", "app": app, "user": decision.user, "groups": list(decision.groups), "uri": uri[:500]}
    )
