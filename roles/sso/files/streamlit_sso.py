#!/usr/bin/python3
"""The edge's single sign-on service: answers nginx's auth_request and serves /_sso/ (sign-in, the
provider's callback, sign-out, the 403 and signed-out pages, the activity script nginx adds to app
pages and its endpoint) on a unix socket only nginx can reach.

Usage: streamlit_sso.py --config FILE --secret FILE --socket PATH [--relay-dir DIR] [check-config]
The protocol and the sessions live in _oidc_rp.py (installed beside this file).
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import selectors
import socket
import socketserver
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _oidc_rp import (
    ACTIVITY_KINDS,
    APP_RE,
    LOGIN_COOKIE,
    LOGIN_TTL,
    RETURN_PATH_RE,
    SESSION_COOKIE,
    RelyingParty,
    RPConfig,
    SignInError,
    cookie,
    denial_record,
    parse_cookies,
)
from _settings_file import read_json_object

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><main><h1>{title}</h1><p>{text}</p>{more}</main></body></html>
"""


def page(title: str, text: str, more: str = "") -> bytes:
    return PAGE.format(title=html.escape(title), text=html.escape(text), more=more).encode()


# Added to every app page with access.oidc by nginx (sub_filter), served from here: the app's own code
# is not trusted to do it. It reports real use of the page (keys, pointer, coming back to the tab) at
# most once a period, asks otherwise without restarting the idle clock, and leaves the page (which
# closes Streamlit's websocket) once the session has ended: idle, too old, or signed out elsewhere.
# Same-origin, no inline code, no eval: the app pages' CSP (script-src 'self') allows it as it is.
ACTIVITY_JS = """(() => {
  "use strict";
  const period = PERIOD_MS;
  let active = false;
  let sent = 0;
  let busy = false;
  const mark = () => { active = true; };
  for (const type of ["keydown", "pointerdown", "pointermove", "wheel", "touchstart"]) {
    addEventListener(type, mark, { capture: true, passive: true });
  }
  const leave = () => {
    location.replace("/_sso/signed-out?ended=1&rd=" + encodeURIComponent(location.pathname + location.search));
  };
  const report = async () => {
    if (busy) return;
    busy = true;
    const kind = active && Date.now() - sent >= period ? "active" : "check";
    try {
      const response = await fetch("/_sso/activity", {
        method: "POST", credentials: "same-origin", cache: "no-store", headers: { "X-SSO-Activity": kind },
      });
      if (kind === "active") { active = false; sent = Date.now(); }
      if (response.status === 401) leave();
    } catch (error) {
      // The edge is unreachable: Streamlit shows its own connection error; try again next period.
    } finally {
      busy = false;
    }
  };
  document.addEventListener("visibilitychange", () => { if (!document.hidden) { mark(); report(); } });
  setInterval(report, period);
})();
"""


# How often a relayed websocket's session is looked at: it outlives sign-out or expiry by at most this.
RELAY_CHECK = 5.0
RELAY_CHUNK = 65536
RELAY_STALL = 60.0


class Handler(BaseHTTPRequestHandler):
    rp: RelyingParty
    relay_dir: Path | None = None
    server_version = "streamlit-sso"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:
        # nginx logs every request; the service logs denials and failures only (below).
        return

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-store")
        if body and "Content-Type" not in (headers or {}):
            self.send_header("Content-Type", "text/html; charset=utf-8")
        if status != 204:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _host(self) -> str:
        return self.headers.get("X-Forwarded-Host") or self.headers.get("Host") or ""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        cookies = parse_cookies(self.headers.get("Cookie"))
        try:
            # Only the app's websocket location sets it (every other location nginx sends here clears it).
            relay_app = self.headers.get("X-SSO-Relay-App")
            if relay_app and url.path.endswith("/_stcore/stream"):
                self._relay(relay_app, url.path, cookies.get(SESSION_COOKIE))
            elif url.path == "/auth":
                self._auth(params.get("app", ""), cookies.get(SESSION_COOKIE))
            elif url.path in ("/_sso/login", "/_sso/start"):
                # /_sso/start is nginx's internal redirect of a request without a session.
                back = self.headers.get("X-Original-URI", "") if url.path == "/_sso/start" else params.get("rd", "/")
                target, binding = self.rp.begin(self._host(), back or "/")
                self._send(302, headers={"Location": target, "Set-Cookie": cookie(LOGIN_COOKIE, binding, LOGIN_TTL)})
            elif url.path == "/_sso/callback":
                sid, back = self.rp.finish(self._host(), params, cookies.get(LOGIN_COOKIE))
                self.send_response(302)
                self.send_header("Location", self.rp.origin_for(self._host()) + back)
                self.send_header("Set-Cookie", cookie(SESSION_COOKIE, sid, self.rp.config.provider.absolute_lifetime))
                self.send_header("Set-Cookie", cookie(LOGIN_COOKIE, "", 0))
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif url.path == "/_sso/logout":
                target = self.rp.logout(cookies.get(SESSION_COOKIE), self._host())
                self._send(302, headers={"Location": target, "Set-Cookie": cookie(SESSION_COOKIE, "", 0)})
            elif url.path == "/_sso/signed-out":
                back = params.get("rd", "/")
                back = back if RETURN_PATH_RE.fullmatch(back) else "/"
                again = html.escape(f"/_sso/login?rd={quote(back, safe='')}")
                if params.get("ended"):
                    self._send(
                        200,
                        page(
                            "Session ended",
                            "Your session ended (no activity, its time limit, or you signed out elsewhere).",
                            f'<p><a href="{again}">Sign in again</a></p>',
                        ),
                    )
                else:
                    self._send(200, page("Signed out", "You are signed out.", '<p><a href="/">Home</a></p>'))
            elif url.path == "/_sso/activity.js":
                body = ACTIVITY_JS.replace("PERIOD_MS", str(self.rp.activity_period() * 1000)).encode()
                self._send(200, body, {"Content-Type": "text/javascript; charset=utf-8"})
            elif url.path == "/_sso/forbidden":
                user = self.headers.get("X-Auth-User", "")
                text = f"{user or 'You'} may not open this app. Ask its owner to add you or your group."
                self._send(403, page("Access denied", text, '<p><a href="/_sso/logout">Sign out</a></p>'))
            else:
                self._send(404, page("Not found", "Nothing here."))
        except SignInError as exc:
            print(json.dumps({"event": "sso_sign_in_failed", "reason": str(exc)}), file=sys.stderr, flush=True)
            self._send(400, page("Sign-in failed", str(exc), '<p><a href="/">Start again</a></p>'))
        except (requests.RequestException, ValueError) as exc:
            # The provider is unreachable or answered nonsense: nobody passes.
            print(
                json.dumps({"event": "sso_provider_error", "reason": type(exc).__name__}), file=sys.stderr, flush=True
            )
            self._send(502, page("Sign-in unavailable", "The identity provider did not answer; try again later."))

    do_HEAD = do_GET

    def _relay(self, app: str, path: str, sid: str | None) -> None:
        """An app's websocket (nginx sends it here after auth_request): passed on to nginx's relay socket
        for the app, byte for byte, and closed both ways once the session has ended or no longer
        allows the app (signed out, idle, too old). Its traffic does not restart the idle clock."""
        if (
            self.relay_dir is None
            or not APP_RE.fullmatch(app)
            or not path.endswith("/_stcore/stream")
            or self.headers.get("Upgrade", "").lower() != "websocket"
        ):
            self._send(400, page("Bad request", "Not an app's websocket."))
            return
        if not self.rp.still_allowed(app, sid):
            self._send(403, page("Access denied", "The session has ended."))
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(str(self.relay_dir / f"{app}.sock"))
        except OSError:
            upstream.close()
            self._send(502, page("Unavailable", "The app did not answer."))
            return
        self.close_connection = True
        head = [f"GET {self.path} HTTP/1.1"]
        head += [f"{k}: {v}" for k, v in self.headers.items() if k.lower() != "x-sso-relay-app"]
        client = self.connection
        # A side that stops reading blocks sendall, and with it the session checks: cut off after a minute.
        client.settimeout(RELAY_STALL)
        upstream.settimeout(RELAY_STALL)
        with upstream, selectors.DefaultSelector() as selector, contextlib.suppress(OSError):
            # (OSError: either side went away; both are closed on the way out.)
            upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            # Nothing follows the headers in rfile's buffer: a websocket client waits for the 101.
            selector.register(client, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, client)
            checked = time.monotonic()
            while True:
                for key, _events in selector.select(timeout=RELAY_CHECK):
                    data = key.fileobj.recv(RELAY_CHUNK)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
                if time.monotonic() - checked >= RELAY_CHECK:
                    checked = time.monotonic()
                    if not self.rp.still_allowed(app, sid):
                        print(
                            json.dumps({"event": "sso_websocket_closed", "app": app, "reason": "session ended"}),
                            file=sys.stderr,
                            flush=True,
                        )
                        return

    def do_POST(self) -> None:
        """The activity script's reports: 204 with the session's time left in headers, 401 when ended."""
        cookies = parse_cookies(self.headers.get("Cookie"))
        kind = self.headers.get("X-SSO-Activity", "")
        site = self.headers.get("Sec-Fetch-Site", "same-origin")
        if urlsplit(self.path).path != "/_sso/activity":
            self._send(404, page("Not found", "Nothing here."))
        elif kind not in ACTIVITY_KINDS or site != "same-origin":
            self._send(400, page("Bad request", "Not a report from the edge's activity script."))
        else:
            left = self.rp.activity(cookies.get(SESSION_COOKIE), kind)
            if left is None:
                self._send(401)
            else:
                headers = {"X-SSO-Idle-Left": str(int(left.idle)), "X-SSO-Lifetime-Left": str(int(left.lifetime))}
                self._send(204, headers=headers)

    def _auth(self, app: str, sid: str | None) -> None:
        # Only a page the user opens counts as activity; what a page fetches by itself (scripts, images,
        # a fragment's polling, the websocket) does not, or an open page would never be idle. Clients
        # that send no Sec-Fetch-Mode (not a browser, or an old one) count every request.
        user_opened = self.headers.get("Sec-Fetch-Mode", "navigate") == "navigate"
        decision = self.rp.check(app, sid, touch=user_opened)
        if decision.status == 403:
            uri = self.headers.get("X-Original-URI", "")
            print(denial_record(app, decision, uri), file=sys.stderr, flush=True)
        self._send(decision.status, headers=decision.headers())


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # nginx opens one connection per check; socketserver's default backlog of 5 overflows under a burst.
    request_queue_size = 128

    def get_request(self):  # type: ignore[no-untyped-def]
        request, _address = super().get_request()
        # BaseHTTPRequestHandler expects an address pair.
        return request, ("unix", 0)


def load(config_path: str, secret_path: str) -> RPConfig:
    # Root's file, readable by the service's group: refused if anyone else could have written it.
    data = read_json_object(config_path)
    with open(secret_path, encoding="utf-8") as handle:
        secret = handle.read().strip()
    return RPConfig.from_mapping(data, secret)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--secret", required=True, help="file holding the client secret (a systemd credential)")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--relay-dir", help="nginx's sockets to the apps' websockets (<app>.sock)")
    parser.add_argument("command", nargs="?", default="run", choices=["run", "check-config"])
    args = parser.parse_args(argv)
    try:
        config = load(args.config, os.path.expandvars(args.secret))
    except (OSError, ValueError) as exc:
        print(f"streamlit-sso: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        return 0
    Handler.rp = RelyingParty(config, http=requests.Session())
    Handler.relay_dir = Path(args.relay_dir) if args.relay_dir else None
    path = Path(args.socket)
    if path.is_socket():
        path.unlink()
    server = Server(str(path), Handler)
    # nginx (group www-data through the socket directory) connects; nobody else.
    os.chmod(path, 0o660)
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
