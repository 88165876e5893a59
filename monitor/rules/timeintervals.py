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
            days_of_month: ["1:5", "-1", "20:-1"]                # -1: the last day; 1:-1 every day
            months: ["1:3", "december"]
            years: ["2026:2030"]
            location: Europe/London                              # IANA zone or Local; UTC when absent

Every field is optional; an interval without any matches always; a time is in a named set
when it is in any of its intervals, and in an interval when every field given matches.
Validation and matching are Alertmanager's: weeks start on sunday ('saturday:sunday' is
refused there, so here too: list the two days); a day of the month counts from the end when
negative and is clamped to the month (`1:31` in February ends on the 28th; `30` never matches
it); a start day and an end day of the month must both be negative when the start is, and a
range that is empty in every month (`25:-5`, empty already in a 28-day month) is refused.
Months are names or numbers; years any whole numbers. Names are case-insensitive.
"""

from __future__ import annotations

import calendar
import os
import re
from collections.abc import Iterable
from datetime import datetime, timezone, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from monitor.config.fields import StrictModel

# Alertmanager's numbering: sunday = 0 (Go's time.Weekday), january = 1.
WEEKDAYS = {
    name: i for i, name in enumerate(("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"))
}
MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}  # january = 1
_CLOCK = re.compile(r"^(?:([01][0-9]|2[0-3]):([0-5][0-9])|(24):(00))$")  # Alertmanager's validTime
_INT = re.compile(r"^[+-]?[0-9]+$")  # Go's strconv.Atoi

Range = tuple[int, int]


def _clock_minutes(text: str) -> int:
    m = _CLOCK.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a time of day HH:MM between 00:00 and 24:00")
    hours, minutes = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return int(hours) * 60 + int(minutes)


def _split(item: str | int) -> list[str]:
    """Alertmanager's stringableRangeFromString: lower case, `first:last` or one member."""
    text = str(item).strip().lower()
    parts = [p.strip() for p in text.split(":")]
    if len(parts) > 2:
        raise ValueError(f"couldn't parse range {text!r}: one member or first:last")
    return parts


def _int(text: str, what: str) -> int:
    if not _INT.match(text):
        raise ValueError(f"{text!r} is not a {what}")
    return int(text)


def _range(parts: list[str], member: Any) -> Range:
    first = member(parts[0])
    return first, member(parts[-1])


def weekday_range(item: str | int) -> Range:
    """'monday:friday', 'sunday' (names only; sunday = 0, so 'saturday:sunday' is refused, as in
    Alertmanager: write the two days)."""

    def member(p: str) -> int:
        if p not in WEEKDAYS:
            hint = " (weekdays are names: monday, tuesday, ...)" if _INT.match(p) else ""
            raise ValueError(f"{p!r} is not a weekday{hint}")
        return WEEKDAYS[p]

    first, last = _range(_split(item), member)
    if first > last:
        raise ValueError(
            f"{item!r}: start day cannot be after end day (weeks start on sunday: write "
            "['saturday', 'sunday'] or 'sunday:monday')"
        )
    return first, last


def day_of_month_range(item: str | int) -> Range:
    """'1:5', '-1' (the last day), '1:-1' (the whole month), '20:-1', '-7:-1', as Alertmanager."""
    first, last = _range(_split(item), lambda p: _int(p, "day of the month"))
    for n in (first, last):
        if n == 0 or not -31 <= n <= 31:
            raise ValueError(f"{n} is not a valid day of the month: between 1 and 31, or -31 to -1 from the end")
    if first < 0 < last:
        raise ValueError(f"{item!r}: the end day must be negative if the start day is (-7:-1)")
    # Whether begin <= end depends on the month with negative days: refuse what is never true
    # (Alertmanager checks against a 28-day month).
    if (28 + first if first < 0 else first) > (28 + last if last < 0 else last):
        raise ValueError(f"{item!r}: end day {last} is always before start day {first}")
    return first, last


def month_range(item: str | int) -> Range:
    """'january:march', 'december', '1:3' (names or numbers)."""

    def member(p: str) -> int:
        if p in MONTHS:
            return MONTHS[p]
        if _INT.match(p):
            return int(p)
        raise ValueError(f"{p!r} is not a month (one of {', '.join(MONTHS)}, or 1 to 12)")

    first, last = _range(_split(item), member)
    if first > last:
        raise ValueError(f"{item!r}: end month is before start month")
    return first, last


def year_range(item: str | int) -> Range:
    """'2026', '2026:2030'."""
    first, last = _range(_split(item), lambda p: _int(p, "year"))
    if first > last:
        raise ValueError(f"{item!r}: end year {last} is before start year {first}")
    return first, last


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
    weekdays: list[str | int] | None = None
    days_of_month: list[str | int] | None = None
    months: list[str | int] | None = None
    years: list[str | int] | None = None
    location: str | None = None
    _parsed: dict[str, list[Range] | None] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        def parse(items: list[Any] | None, one: Any) -> list[Range] | None:
            return None if items is None else [one(item) for item in items]

        self._parsed = {
            "times": None if self.times is None else [t.minutes() for t in self.times],
            "weekdays": parse(self.weekdays, weekday_range),
            "days_of_month": parse(self.days_of_month, day_of_month_range),
            "months": parse(self.months, month_range),
            "years": parse(self.years, year_range),
        }

    @field_validator("weekdays", "days_of_month", "months", "years")
    @classmethod
    def _ranges(cls, v: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        if v is not None:
            one = {
                "weekdays": weekday_range,
                "days_of_month": day_of_month_range,
                "months": month_range,
                "years": year_range,
            }[str(info.field_name)]
            for item in v:
                one(item)
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
        if p["weekdays"] is not None and not _in((local.weekday() + 1) % 7, p["weekdays"]):
            return False
        if p["days_of_month"] is not None:
            # Negative days count from the month's end (-1 the last day), clamped to the month.
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
    if name in (None, "", "UTC", "Etc/UTC"):
        return timezone.utc
    if name == "Local":  # Go's time.LoadLocation("Local"): the machine's zone ($TZ, else /etc/localtime)
        tz = os.environ.get("TZ", "").lstrip(":")
        if tz:
            return ZoneInfo(tz)
        try:
            with open("/etc/localtime", "rb") as f:
                return ZoneInfo.from_file(f, key="Local")
        except OSError:
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
