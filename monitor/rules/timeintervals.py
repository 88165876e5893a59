"""Recurring time intervals (Alertmanager's `time_intervals` syntax) and whether `now` is in one.

A rule lists `mute_time_intervals: [nightly-lull]`: while `now` is inside one of those
intervals its incidents are held back exactly as a silence holds them (opened, shown on the
status page as held, paged when the interval ends if the alert still fires, resolves sent).
That is how a known quiet period, the night's hour without Platform Events, stops paging
without a daily `silence add` timer and without losing the alert by day.

The syntax is Alertmanager's (prometheus/alertmanager `timeinterval/timeinterval.go`), so a
file can be lifted from one to the other:

    time_intervals:
      - name: nightly-lull
        time_intervals:
          - times: [{start_time: "00:00", end_time: "05:00"}]   # end excluded; "24:00" allowed
            weekdays: ["monday:friday", "sunday"]                # names, ranges inclusive
            days_of_month: ["1:5", "-1"]                         # -1: the last day of the month
            months: ["1:3", "december"]
            years: ["2026:2030"]
            location: Europe/London                              # IANA zone; UTC when absent

Every field is optional; an interval without any matches always; a time is in a named set
when it is in any of its intervals, and in an interval when every field given matches.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from datetime import datetime, timezone, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PrivateAttr, field_validator, model_validator

from monitor.config.fields import StrictModel

WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)}  # monday = 0
MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}  # january = 1
_CLOCK = re.compile(r"^(\d{2}):(\d{2})$")

Range = tuple[int, int]


def _clock_minutes(text: str) -> int:
    m = _CLOCK.match(text)
    if not m or int(m.group(2)) > 59 or int(m.group(1)) * 60 + int(m.group(2)) > 24 * 60:
        raise ValueError(f"{text!r} is not a time of day HH:MM between 00:00 and 24:00")
    return int(m.group(1)) * 60 + int(m.group(2))


def _ranges(
    items: list[str | int], what: str, names: dict[str, int], lo: int, hi: int, negative: bool = False
) -> list[Range]:
    """'monday:friday', 'june', '3', 7, '-3:-1' -> inclusive (first, last) pairs, checked."""
    out: list[Range] = []
    for item in items:
        parts = str(item).strip().lower().split(":")
        if len(parts) > 2 or not all(parts):
            raise ValueError(f"{item!r} is not a {what} or a range of them (first:last)")
        bounds = []
        for p in parts:
            if p in names:
                bounds.append(names[p])
                continue
            try:
                n = int(p)
            except ValueError:
                known = f" (one of {', '.join(names)})" if names else ""
                raise ValueError(f"{p!r} is not a {what}{known}") from None
            if not (lo <= n <= hi or (negative and -hi <= n <= -lo)):
                raise ValueError(
                    f"{n}: a {what} is between {lo} and {hi}"
                    + (f" (or -{hi} to -{lo} from the end)" if negative else "")
                )
            bounds.append(n)
        first, last = bounds[0], bounds[-1]
        if (first < 0) != (last < 0) or first > last:
            raise ValueError(f"{item!r}: the range's start must not come after its end")
        out.append((first, last))
    return out


class TimeRange(StrictModel):
    start_time: str
    end_time: str

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if _clock_minutes(self.start_time) >= _clock_minutes(self.end_time):
            raise ValueError(
                f"start_time {self.start_time} must be before end_time {self.end_time} "
                "(an interval across midnight is two: 22:00-24:00 and 00:00-06:00)"
            )
        return self

    def minutes(self) -> Range:
        return _clock_minutes(self.start_time), _clock_minutes(self.end_time)


class TimeInterval(StrictModel):
    """One recurring interval: every given field must match. The fields keep what the file
    says (for `describe()`); the ranges are parsed once, after validation, for `contains()`."""

    times: list[TimeRange] | None = None
    weekdays: list[str] | None = None
    days_of_month: list[str | int] | None = None
    months: list[str | int] | None = None
    years: list[str | int] | None = None
    location: str | None = None
    _parsed: dict[str, list[Range] | None] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        def parse(
            items: list[Any] | None, names: dict[str, int], lo: int, hi: int, negative: bool = False
        ) -> list[Range] | None:
            return None if items is None else _ranges(list(items), "", names, lo, hi, negative)

        self._parsed = {
            "times": None if self.times is None else [t.minutes() for t in self.times],
            "weekdays": parse(self.weekdays, WEEKDAYS, 0, 6),
            "days_of_month": parse(self.days_of_month, {}, 1, 31, negative=True),
            "months": parse(self.months, MONTHS, 1, 12),
            "years": parse(self.years, {}, 1, 9999),
        }

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            _ranges(list(v), "weekday", WEEKDAYS, 0, 6)
            for item in v:
                if any(p.strip().isdigit() for p in str(item).split(":")):
                    raise ValueError(f"{item!r}: weekdays are names (monday, tuesday, ...)")
        return v

    @field_validator("days_of_month")
    @classmethod
    def _days(cls, v: list[str | int] | None) -> list[str | int] | None:
        if v is not None:
            _ranges(list(v), "day of the month", {}, 1, 31, negative=True)
        return v

    @field_validator("months")
    @classmethod
    def _months(cls, v: list[str | int] | None) -> list[str | int] | None:
        if v is not None:
            _ranges(list(v), "month", MONTHS, 1, 12)
        return v

    @field_validator("years")
    @classmethod
    def _years(cls, v: list[str | int] | None) -> list[str | int] | None:
        if v is not None:
            _ranges(list(v), "year", {}, 1, 9999)
        return v

    @field_validator("location")
    @classmethod
    def _location(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                zone(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{v!r} is not a time zone of the IANA database (e.g. Europe/London, UTC)") from None
        return v

    def contains(self, now: datetime) -> bool:
        local = now.astimezone(zone(self.location))
        p = self._parsed
        if p["times"] is not None and not any(a <= local.hour * 60 + local.minute < b for a, b in p["times"]):
            return False
        if p["weekdays"] is not None and not _in(local.weekday(), p["weekdays"]):
            return False
        if p["days_of_month"] is not None:
            last_day = calendar.monthrange(local.year, local.month)[1]
            days = [(a + last_day + 1 if a < 0 else a, b + last_day + 1 if b < 0 else b) for a, b in p["days_of_month"]]
            if not _in(local.day, days):
                return False
        if p["months"] is not None and not _in(local.month, p["months"]):
            return False
        return p["years"] is None or _in(local.year, p["years"])

    def describe(self) -> str:
        parts = []
        if self.times is not None:
            parts.append(", ".join(f"{t.start_time}-{t.end_time}" for t in self.times))
        for key in ("weekdays", "days_of_month", "months", "years"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key} {', '.join(str(x) for x in value)}")
        parts.append(self.location or "UTC")
        return " ".join(parts)


@lru_cache(maxsize=64)
def zone(name: str | None) -> tzinfo:
    """UTC without a time zone database (a slim container may have none; the `tzdata` package
    is the fallback for every other name)."""
    if name in (None, "UTC", "Etc/UTC"):
        return timezone.utc
    return ZoneInfo(name)


def _in(value: int, ranges: list[Range]) -> bool:
    return any(a <= value <= b for a, b in ranges)


class NamedTimeInterval(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    time_intervals: list[TimeInterval] = Field(min_length=1)

    def contains(self, now: datetime) -> bool:
        return any(i.contains(now) for i in self.time_intervals)

    def describe(self) -> str:
        return f"{self.name} (" + "; ".join(i.describe() for i in self.time_intervals) + ")"


def active(intervals: dict[str, NamedTimeInterval], names: Iterable[str], now: datetime) -> list[NamedTimeInterval]:
    """The named intervals among `names` that contain `now` (unknown names are the loader's error)."""
    return [intervals[n] for n in names if n in intervals and intervals[n].contains(now)]
