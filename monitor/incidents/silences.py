"""Silences: matcher-based mutes for a time range, stored in SQLite; and label matchers.

A silence holds back *new* notifications (triggers, escalations, re-notifications) for the
alerts it matches while it is active. It never holds back a resolve for something already
paged (Alertmanager issue 226), and a trigger it held back is sent when it ends if the
alert still fires: `Incidents.update` decides that from the stored state at each evaluation.

Matchers are `{label: value}` or `{label: [alternatives]}`, exact and case-sensitive; a
missing label equals the empty string, as in Alertmanager.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from monitor.config.fields import parse_duration
from monitor.config.model import Silence
from monitor.incidents.records import iso, parse_iso, transaction

MatcherSpec = Mapping[str, "str | Sequence[str]"]


def normalise_matchers(matchers: MatcherSpec) -> dict[str, tuple[str, ...]]:
    """`{label: value | [values]}` → `{label: (values...)}`; refuse what cannot match sensibly."""
    out: dict[str, tuple[str, ...]] = {}
    for label, want in matchers.items():
        if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", label):
            raise ValueError(f"matcher label {label!r} is not a label name")
        values = (want,) if isinstance(want, str) else tuple(want)
        if not values or not all(isinstance(v, str) for v in values):
            raise ValueError(f"matcher {label}: {want!r} must be a string or a non-empty list of strings")
        out[label] = values
    return out


def matches(matchers: MatcherSpec, labels: Mapping[str, str]) -> bool:
    """True when every matcher's label has one of its values (missing label == "")."""
    for label, want in matchers.items():
        have = labels.get(label, "")
        if isinstance(want, str):
            if have != want:
                return False
        elif have not in want:
            return False
    return True


def parse_matchers(args: Iterable[str]) -> dict[str, str | list[str]]:
    """CLI form `alertname=RedisDown check=cache|db` → a matcher mapping (`|` = alternatives)."""
    out: dict[str, str | list[str]] = {}
    for arg in args:
        label, sep, value = arg.partition("=")
        if not sep or not label:
            raise ValueError(f"matcher {arg!r}: expected label=value (e.g. alertname=RedisDown)")
        out[label.strip()] = value.split("|") if "|" in value else value
    return out


def parse_time(text: str, now: datetime) -> datetime:
    """An ISO-8601 time (UTC when it has no offset) or a duration from `now` (`2h`, `+30m`)."""
    text = text.strip()
    if text.startswith("-") and text[1:2].isdigit():
        raise ValueError(f"{text!r} is a negative duration: a silence ends after it starts (e.g. 2h)")
    try:
        return now + timedelta(seconds=parse_duration(text.removeprefix("+")))
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a time (2025-12-01T18:00:00Z) nor a duration (2h)") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SilenceEntry:
    """One stored silence."""

    id: int
    matchers: Mapping[str, tuple[str, ...]]
    starts_at: datetime
    ends_at: datetime
    author: str
    comment: str
    created_at: datetime

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str]) -> bool:
        return matches(self.matchers, labels)

    def describe(self) -> str:
        ms = ", ".join(f"{k}={'|'.join(v)}" for k, v in self.matchers.items())
        return f"silence {self.id} ({ms}; {self.author}: {self.comment})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": {k: list(v) for k, v in self.matchers.items()},
            "starts_at": iso(self.starts_at),
            "ends_at": iso(self.ends_at),
            "author": self.author,
            "comment": self.comment,
            "created_at": iso(self.created_at),
        }


class Silences:
    """The `silences` table (created by `monitor.statedb`'s migrations)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def add(
        self,
        matchers: MatcherSpec,
        *,
        ends_at: datetime,
        author: str,
        comment: str,
        now: datetime,
        starts_at: datetime | None = None,
    ) -> int:
        """Store a silence; it needs at least one matcher, an author, a comment and an end in the future."""
        norm = normalise_matchers(matchers)
        if not norm:
            raise ValueError("a silence needs at least one matcher (it would silence every alert)")
        if not author.strip() or not comment.strip():
            raise ValueError("a silence needs an author and a comment (who silenced what, and why)")
        start = starts_at or now
        if ends_at <= start or ends_at <= now:
            raise ValueError(f"silence ends at {iso(ends_at)}, not after its start {iso(start)} and now {iso(now)}")
        with transaction(self._conn):
            cur = self._conn.execute(
                "INSERT INTO silences (matchers, starts_at, ends_at, author, comment, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (orjson.dumps(norm).decode(), iso(start), iso(ends_at), author, comment, iso(now)),
            )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def add_spec(self, spec: Silence, now: datetime) -> int:
        """Store a silence given as the config/API model (times as ISO-8601 or a duration from now)."""
        return self.add(
            spec.matchers,
            ends_at=parse_time(spec.ends_at, now),
            author=spec.author,
            comment=spec.comment,
            now=now,
            starts_at=parse_time(spec.starts_at, now) if spec.starts_at else None,
        )

    def find(self, *, now: datetime, active_only: bool = True) -> list[SilenceEntry]:
        """Silences, newest first; `active_only` keeps those in force at `now` (not pending, not ended)."""
        sql = "SELECT id, matchers, starts_at, ends_at, author, comment, created_at FROM silences"
        args: tuple[str, ...] = ()
        if active_only:
            sql, args = sql + " WHERE ends_at > ?", (iso(now),)
        rows = [self._entry(r) for r in self._conn.execute(sql + " ORDER BY id DESC", args)]
        return [s for s in rows if s.active(now)] if active_only else rows

    def get(self, silence_id: int) -> SilenceEntry | None:
        r = self._conn.execute(
            "SELECT id, matchers, starts_at, ends_at, author, comment, created_at FROM silences WHERE id = ?",
            (silence_id,),
        ).fetchone()
        return self._entry(r) if r else None

    def expire(self, silence_id: int, now: datetime) -> bool:
        """End a silence now; False when it had already ended. Unknown id → LookupError."""
        s = self.get(silence_id)
        if s is None:
            raise LookupError(f"silence {silence_id} does not exist")
        if s.ends_at <= now:
            return False
        with transaction(self._conn):
            self._conn.execute(
                "UPDATE silences SET ends_at = ?, starts_at = min(starts_at, ?) WHERE id = ?",
                (iso(now), iso(now), silence_id),
            )
        return True

    def matching(
        self, labels: Mapping[str, str], now: datetime, active: Sequence[SilenceEntry] | None = None
    ) -> list[SilenceEntry]:
        """The active silences that match `labels` (pass `active` to reuse one query)."""
        pool = self.find(now=now) if active is None else active
        return [s for s in pool if s.matches(labels)]

    @staticmethod
    def _entry(r: tuple[Any, ...]) -> SilenceEntry:
        return SilenceEntry(
            id=r[0],
            matchers={k: tuple(v) for k, v in orjson.loads(r[1]).items()},
            starts_at=parse_iso(r[2]),
            ends_at=parse_iso(r[3]),
            author=r[4],
            comment=r[5],
            created_at=parse_iso(r[6]),
        )
