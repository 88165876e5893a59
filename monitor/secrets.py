"""Which configured values are secret, and how they are kept out of everything we write.

The one owner of that knowledge. A config model marks its secret fields with `Secret`
(the whole value: a password, a routing key, a webhook URL that is its own credential) or
`SecretURL` (only the password in `user:PASSWORD@host`); `secret_values` walks a loaded model
and collects them, and `redaction_set` adds the forms a peer may quote them back in
(`secret_forms`: URL-, form-, HTML- and JSON-encoded). A `Redactor` then replaces each by
`***`: in a check's or receiver's error text, in a reply body, in every structlog event (it
is a processor), in the API's replies and the status page built from them, and in what the
CLI prints. `redact_url` and `origin_only` show a URL without its secret part, for messages
and labels that name a target.

Imports only the standard library and pydantic: checks, config, delivery, web and cli all
use it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

from pydantic import BaseModel

MASK = "***"
_MASK_BYTES = MASK.encode()
# A configured secret shorter than this is not redacted everywhere: a 3-character password
# would blank ordinary words in every log line and reply. Checks and receivers still scrub
# their own credentials from their own messages, whatever their length.
MIN_REDACTED_LENGTH = 4

# ---------------------------------------------------------------- markers


class SecretMarker:
    """Marks a field whose whole value is a secret: never logged, shown or exported."""


class URLSecretMarker:
    """Marks a URL field whose password (user:PASSWORD@host) is a secret."""


Secret = Annotated[str, SecretMarker()]
SecretURL = Annotated[str, URLSecretMarker()]


def _markers(annotation: Any) -> list[Any]:
    """Secret markers on a type, also inside `X | None` and other unions."""
    found: list[Any] = []
    if get_origin(annotation) is Annotated:
        found += [m for m in get_args(annotation)[1:] if isinstance(m, (SecretMarker, URLSecretMarker))]
        annotation = get_args(annotation)[0]
    for arg in get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ():
        found += _markers(arg)
    return found


def _marked_values(value: Any, markers: list[Any]) -> set[str]:
    """The secrets in one field's value (a string, or the values of a list or dict of them)."""
    found: set[str] = set()
    values = (
        list(value.values())
        if isinstance(value, dict)
        else list(value)
        if isinstance(value, (list, tuple))
        else [value]
    )
    for v in values:
        if not isinstance(v, str) or not v:
            continue
        if any(isinstance(m, SecretMarker) for m in markers):
            found.add(v)
        if any(isinstance(m, URLSecretMarker) for m in markers):
            pw = url_password(v)
            if pw:
                found.add(pw)
    return found


def secret_values(model: BaseModel) -> set[str]:
    """Every value of a field marked Secret/SecretURL, anywhere in the model tree (nested
    models, and models in lists and dicts), as written."""
    found: set[str] = set()
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        markers = list(info.metadata) + _markers(info.annotation)
        found |= _marked_values(value, markers)
        children = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        for child in children:
            if isinstance(child, BaseModel):
                found |= secret_values(child)
    return found


# ---------------------------------------------------------------- encoded forms


def secret_forms(secret: str) -> set[str]:
    """The secret and the encodings it takes when a peer quotes it back: in a URL or a form
    body (`quote`, `quote_plus`), in HTML and in a JSON string. A WHMCS or proxy error page
    that echoes the form-encoded request body shows `whmcsSecret%2BV9xR%2Fcd%3D`, not the
    secret as written, so every redactor must know these forms too."""
    if not secret:
        return set()
    return {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        html.escape(secret),
        html.escape(secret, quote=False),
        json.dumps(secret)[1:-1],
    }


def all_forms(secrets: Iterable[str | None]) -> set[str]:
    """Every form (`secret_forms`) of every non-empty secret."""
    return {form for s in secrets if s for form in secret_forms(s)}


def redaction_set(model: BaseModel) -> frozenset[str]:
    """What the log, API and CLI redactors blank for a loaded configuration: each secret of
    `model` at least MIN_REDACTED_LENGTH long, in every form a peer may quote it back in."""
    return frozenset(all_forms(s for s in secret_values(model) if len(s) >= MIN_REDACTED_LENGTH))


# ---------------------------------------------------------------- URLs


def url_password(url: str) -> str | None:
    """The password of `user:PASSWORD@host`, or None (also for a URL that does not parse)."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, for messages and labels.

    Total: never raises. The host and port are kept as written (a port that is not a number
    stays visible, since that is usually the mistake being reported)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        return urlunsplit((parts.scheme, f"{user}:{MASK}@{hostport}", parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<unparseable url>"


def origin_only(url: str) -> str:
    """`https://hooks.slack.com/***`: the scheme and host of a URL whose path is the secret."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    host = parts.hostname or "?"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme or '?'}://{host}/{MASK}"


# ---------------------------------------------------------------- scrubbing


class Redactor:
    """Replaces every one of a set of secrets by `***`, wherever it appears.

    Used for a check's or receiver's error texts and reply bodies, the API's replies (and the
    status page built from them), what the CLI prints, and, as a structlog processor, every
    log event; `update()` swaps the set on reload. Secrets are replaced longest first, so one
    that contains another is replaced whole; empty ones (and None) are ignored.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.update(secrets)

    def update(self, secrets: Iterable[str | None]) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._bytes = [s.encode() for s in self._secrets]

    def scrub(self, text: str) -> str:
        """`text` with every secret replaced by `***`."""
        for s in self._secrets:
            if s in text:
                text = text.replace(s, MASK)
        return text

    def scrub_bytes(self, data: bytes) -> bytes:
        """`data` with every secret (UTF-8) replaced by `***`: a reply body, before it is cut
        or quoted, so that neither can leave part of a secret behind."""
        for s in self._bytes:
            data = data.replace(s, _MASK_BYTES)
        return data

    def redact(self, value: Any) -> Any:
        """A JSON-like value with every string in it scrubbed (dicts, lists and tuples are
        copied; other values are returned as they are)."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self.redact(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.redact(v) for v in value)
        return value

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        """The structlog processor: every value of the event redacted, whatever its key."""
        if not self._secrets:
            return event_dict
        return {k: self.redact(v) for k, v in event_dict.items()}


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every secret (longest first) replaced by `***`."""
    return Redactor(secrets).scrub(text)
