"""Who may do what over HTTP: the API token for changes, the scrape credentials for `/metrics`.

Decided before any handler runs (the API's middleware calls these), so a refused request's body
is never read. Tokens and passwords are compared in constant time (`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable

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
