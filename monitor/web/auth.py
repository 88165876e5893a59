"""Who may do what over HTTP: the API token for changes, the scrape credentials for `/metrics`,
and the browser sessions of the incident pages (the token typed once into a sign-in form).

Decided before any handler runs (the API's middleware calls these), so a refused request's body
is never read. Tokens and passwords are compared in constant time (`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from monitor.config.model import API_TOKEN_VAR, MetricsAuth

log = structlog.get_logger()

Reply = Callable[..., web.Response]  # (doc, status, headers=...) -> the JSON response


def refuse_mutation(request: web.Request, token: str, reply: Reply) -> web.Response | None:
    """None when `request` (POST, DELETE) carries the API token; else the 403/401 to send.

    Without a configured token every mutation is refused (403), never open. `reply` builds the
    JSON error (the API's own, which scrubs secrets on the way out).
    """
    if not token:
        log.warning(
            "api_refused",
            method=request.method,
            path=request.path,
            remote=request.remote,
            reason="no_token_configured",
        )
        return reply(
            {
                "error": f"{request.method} {request.path} is refused: the daemon has no API token; "
                f"set {API_TOKEN_VAR} in its environment (or api.token in the config) and "
                "restart or reload it"
            },
            403,
        )
    given = bearer(request.headers.get("Authorization", ""))
    if given is not None and hmac.compare_digest(given.encode(), token.encode()):
        return None
    reason = "missing_token" if given is None else "wrong_token"
    log.warning("api_refused", method=request.method, path=request.path, remote=request.remote, reason=reason)
    message = "missing or malformed `Authorization: Bearer <token>` header" if given is None else "wrong API token"
    return reply(
        {"error": f"{request.method} {request.path}: {message} (the token is the daemon's {API_TOKEN_VAR})"},
        401,
        headers={"WWW-Authenticate": 'Bearer realm="portal-monitor"'},
    )


def refuse_scrape(request: web.Request, auth: MetricsAuth) -> web.Response | None:
    """None when a `/metrics` scrape carries the bearer token or basic credentials of
    `api.metrics_auth`; else the 401 with the challenges to send."""
    header = request.headers.get("Authorization", "")
    given = bearer(header)
    if auth.bearer and given is not None and hmac.compare_digest(given.encode(), auth.bearer.encode()):
        return None
    if auth.basic is not None:
        pair = basic(header)
        want = f"{auth.basic.username}:{auth.basic.password}".encode()
        if pair is not None and hmac.compare_digest(pair, want):
            return None
    challenges = [
        c
        for c, on in (
            ('Bearer realm="portal-monitor metrics"', bool(auth.bearer)),
            ('Basic realm="portal-monitor metrics"', auth.basic is not None),
        )
        if on
    ]
    if not challenges:  # metrics_auth: {} asks for nothing
        return None
    log.warning("metrics_refused", remote=request.remote)
    return web.Response(
        status=401,
        text="/metrics: credentials required (api.metrics_auth)\n",
        headers={"WWW-Authenticate": ", ".join(challenges)},
    )


def bearer(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def basic(header: str) -> bytes | None:
    """The decoded `user:password` of an `Authorization: Basic ...` header, or None."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


# ---------------------------------------------------------------------- browser sessions

SESSION_COOKIE = "portal_monitor_session"
SESSION_TTL_S = 12 * 3600.0
MAX_NAME = 80


def _session_key(token: str) -> bytes:
    """The key that signs sessions, derived from the API token: changing the token ends every
    session, and the token itself never leaves the server in any form."""
    return hmac.new(token.encode(), b"portal-monitor session v1", hashlib.sha256).digest()


def _sign(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: who (as typed at sign-in, for the timeline), until when, and the
    nonce the page's CSRF token is derived from."""

    who: str
    expires: float
    nonce: str

    def csrf(self, token: str) -> str:
        """The hidden form field every POST from the pages must carry (double-submit, bound to
        this session: a page of another origin can neither read the cookie nor compute it)."""
        return _sign(_session_key(token), f"csrf.{self.nonce}")[:32]


def new_session(token: str, who: str, now: float) -> tuple[Session, str]:
    """A session for `who` and its cookie value: `expires.nonce.name.signature`, the name
    base64url-encoded; nothing in it is secret, all of it is signed."""
    name = " ".join(who.split())[:MAX_NAME] or "web"
    session = Session(name, now + SESSION_TTL_S, secrets.token_hex(16))
    encoded = base64.urlsafe_b64encode(session.who.encode()).decode().rstrip("=")
    payload = f"{int(session.expires)}.{session.nonce}.{encoded}"
    return session, f"{payload}.{_sign(_session_key(token), payload)}"


def read_session(cookie: str | None, token: str, now: float) -> Session | None:
    """The session a cookie carries, or None: no token configured, malformed, forged, or expired."""
    if not token or not cookie or cookie.count(".") != 3:
        return None
    expires, nonce, encoded, signature = cookie.split(".")
    payload = f"{expires}.{nonce}.{encoded}"
    if not hmac.compare_digest(signature.encode(), _sign(_session_key(token), payload).encode()):
        return None
    try:
        until = float(int(expires))
        who = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return Session(who, until, nonce) if until > now else None


def token_matches(given: str, token: str) -> bool:
    """The sign-in form's check: constant time, and never true without a configured token."""
    return bool(token) and hmac.compare_digest(given.strip().encode(), token.encode())
