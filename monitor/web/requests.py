"""Reading a request: path ids, query choices, durations and JSON bodies, refused with `ApiError`.

Every refusal names what was wrong and what is allowed, as a 400 the API turns into
`{"error": "..."}`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from aiohttp import web

from monitor.config.fields import parse_duration


class ApiError(Exception):
    """A request the API answers with `{"error": message}` and `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def path_id(request: web.Request, what: str) -> int:
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 18:
        raise ApiError(400, f"{what} id {text!r} is not a number")
    return int(text)


def choice(request: web.Request, key: str, allowed: tuple[str, ...]) -> str:
    value = request.query.get(key, allowed[0])
    if value not in allowed:
        raise ApiError(400, f"{key}={value!r}: expected one of " + ", ".join(allowed))
    return value


def bounded_int(request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
    """The query parameter `key` as an integer in [lo, hi] (`default` when absent)."""
    text = request.query.get(key)
    if text is None:
        return default
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise ApiError(400, f"{key}={text!r}: expected a whole number from {lo} to {hi}")
    return int(text)


def positive_duration(text: str) -> timedelta:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be more than 0s")
    return timedelta(seconds=seconds)


async def body_of(request: web.Request, *, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object in the body ({} when there is none); unknown keys are an error."""
    raw = await request.read() if request.body_exists else b""
    if not raw.strip():
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, f"the request body is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        raise ApiError(
            400,
            f"unknown key{'s' if len(unknown) > 1 else ''} "
            + ", ".join(map(repr, unknown))
            + " (allowed: "
            + ", ".join(allowed)
            + ")",
        )
    return doc
