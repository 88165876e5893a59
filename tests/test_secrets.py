"""monitor.secrets: which config values are secret, their encoded forms, and the redactors."""

from __future__ import annotations

import io
import json
from typing import Annotated

import pytest
import structlog
from pydantic import BaseModel, Field

from monitor.secrets import (
    Redactor,
    Secret,
    SecretMarker,
    SecretURL,
    URLSecretMarker,
    all_forms,
    origin_only,
    redact_url,
    redaction_set,
    scrub,
    secret_forms,
    secret_values,
    url_password,
)

# ---------------------------------------------------------------- URLs


def test_redact_url_replaces_only_the_password() -> None:
    assert redact_url("redis://:hunter22@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact_url("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact_url("https://user@h/x?q=1") == "https://user@h/x?q=1"  # no password: as written
    assert redact_url("https://h/api.php") == "https://h/api.php"


def test_redact_url_never_raises() -> None:
    assert redact_url("redis://u:pw@h:abc/0") == "redis://u:***@h:abc/0"
    assert redact_url("http://u:pw@[::1]:8080/x?y=1") == "http://u:***@[::1]:8080/x?y=1"
    assert redact_url("http://[::1/x") == "<unparseable url>"


def test_url_password_is_none_without_one_or_for_an_unparseable_url() -> None:
    assert url_password("redis://:hunter22@h:6379/0") == "hunter22"
    assert url_password("postgresql://u:p%40ss@h/db") == "p%40ss"  # as written in the URL
    assert url_password("http://h/") is None
    assert url_password("http://[::1/x") is None


def test_origin_only_hides_the_path() -> None:
    """A Slack webhook URL is its own credential: only scheme, host and port are shown."""
    assert origin_only("https://hooks.slack.com/services/T0/B0/xyz") == "https://hooks.slack.com/***"
    assert origin_only("http://127.0.0.1:8080/hook/secret") == "http://127.0.0.1:8080/***"
    assert origin_only("http://[::1/x") == "<unparseable url>"


# ---------------------------------------------------------------- encoded forms


def test_secret_forms_cover_url_form_html_and_json_encodings() -> None:
    """A peer quoting a form-encoded request shows `s3cret%2Bv%2F1%3D`: the redactors know it."""
    assert secret_forms("s3cret+v/1=&x") >= {
        "s3cret+v/1=&x",
        "s3cret%2Bv%2F1%3D%26x",  # quote(safe="")
        "s3cret%2Bv/1%3D%26x",  # quote_plus (a form body)
        "s3cret+v/1=&amp;x",  # HTML
    }
    assert secret_forms("a b") >= {"a b", "a%20b", "a+b"}
    assert secret_forms("it's") >= {"it&#x27;s", "it's"}  # html.escape with and without quote=True
    assert json.dumps('pa"ss\\')[1:-1] in secret_forms('pa"ss\\')
    assert secret_forms("") == set()


def test_all_forms_skips_empty_and_missing_secrets() -> None:
    assert all_forms(["a b", None, ""]) == secret_forms("a b")


# ---------------------------------------------------------------- the redactor


def test_longer_secrets_are_replaced_first() -> None:
    """A secret containing another is replaced whole, not as `***` plus its tail."""
    assert scrub("x abcdef y abc", ["abc", "abcdef"]) == "x *** y ***"
    assert Redactor(["abc", "abcdef"]).scrub("abcdef") == "***"


def test_empty_and_missing_secrets_are_ignored() -> None:
    assert scrub("nothing to hide", ["", None]) == "nothing to hide"
    assert Redactor().scrub("nothing to hide") == "nothing to hide"


def test_bytes_are_scrubbed_as_utf8() -> None:
    """A reply body is scrubbed before it is cut or quoted."""
    assert Redactor(["pässwörd"]).scrub_bytes("<p>pässwörd</p>".encode()) == b"<p>***</p>"


def test_redact_walks_json_like_values_and_keeps_their_types() -> None:
    r = Redactor(["tok-12345"])
    doc = {"error": "Bearer tok-12345 refused", "n": 3, "ok": None, "items": ["tok-12345", ("a", "tok-12345")]}
    assert r.redact(doc) == {"error": "Bearer *** refused", "n": 3, "ok": None, "items": ["***", ("a", "***")]}
    assert doc["error"] == "Bearer tok-12345 refused"  # the input is not changed


def test_update_swaps_the_set_on_reload() -> None:
    r = Redactor(["old-secret"])
    r.update(["new-secret"])
    assert r.scrub("old-secret new-secret") == "old-secret ***"


def test_log_processor_blanks_secrets_in_every_key() -> None:
    out = io.StringIO()
    log = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[Redactor(["hunter22"]), structlog.processors.JSONRenderer()],
    )
    log.warning("redis_failed", error="AUTH hunter22 refused", context={"dsn": "redis://:hunter22@h/0"})
    event = json.loads(out.getvalue())
    assert event == {"event": "redis_failed", "error": "AUTH *** refused", "context": {"dsn": "redis://:***@h/0"}}


def test_log_processor_without_secrets_passes_the_event_through() -> None:
    event = {"event": "started", "n": 1}
    assert Redactor()(None, "info", event) is event


# ---------------------------------------------------------------- finding secrets in a model


class _Auth(BaseModel):
    user: str
    password: Secret


class _Peer(BaseModel):
    name: str = "peer"
    url: SecretURL = ""
    plain_url: str = ""
    token: Secret = ""
    maybe: Secret | None = None
    maybe_annotated: Annotated[str | None, SecretMarker()] = None
    headers: Annotated[dict[str, str], SecretMarker()] = Field(default_factory=dict)
    urls: Annotated[list[str], URLSecretMarker()] = Field(default_factory=list)
    auth: _Auth | None = None
    auths: list[_Auth] = Field(default_factory=list)
    by_name: dict[str, _Auth] = Field(default_factory=dict)


def test_secret_values_are_found_anywhere_in_the_model_tree() -> None:
    peer = _Peer(
        url="redis://:url-pass@h:6379/0",
        plain_url="http://u:not-marked@h/",
        token="tok-1",
        maybe="maybe-1",
        maybe_annotated="maybe-2",
        headers={"Authorization": "Bearer hdr-1"},
        urls=["http://a:am-pass@h/", "http://h/"],
        auth=_Auth(user="root", password="nested-1"),
        auths=[_Auth(user="a", password="listed-1")],
        by_name={"x": _Auth(user="b", password="mapped-1")},
    )
    assert secret_values(peer) == {
        "url-pass",
        "tok-1",
        "maybe-1",
        "maybe-2",
        "Bearer hdr-1",
        "am-pass",
        "nested-1",
        "listed-1",
        "mapped-1",
    }


def test_empty_secret_fields_contribute_nothing() -> None:
    assert secret_values(_Peer(url="http://h/")) == set()


@pytest.mark.parametrize(("secret", "kept"), [("abc", False), ("abcd", True)])
def test_redaction_set_has_every_form_of_secrets_of_four_characters_or_more(secret: str, kept: bool) -> None:
    """A 3-character secret would blank ordinary words in every log line."""
    peer = _Peer(token=secret + "+/", headers={"X": secret})
    assert redaction_set(peer) >= secret_forms(secret + "+/")
    assert (secret in redaction_set(peer)) is kept
