"""Recurring mute intervals: Alertmanager's `time_intervals` syntax, whether a time is in one,
the loader's errors, and incidents held back inside one and paged when it ends."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from monitor.config.loader import ConfigError
from monitor.incidents.lifecycle import Incidents
from monitor.rules.export import export_prometheus
from monitor.statedb import open_db
from monitor.rules.timeintervals import NamedTimeInterval, TimeInterval
from tests.incident_helpers import CONFIG, alert, config, fired, last_id, queued, resolved


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def interval(**spec: object) -> TimeInterval:
    return TimeInterval.model_validate(spec)


# ---------------------------------------------------------------- matching


def test_times_include_the_start_and_exclude_the_end() -> None:
    night = interval(times=[{"start_time": "00:00", "end_time": "06:00"}])
    assert night.contains(utc(2026, 11, 27, 0, 0))
    assert night.contains(utc(2026, 11, 27, 5, 59, 59))
    assert not night.contains(utc(2026, 11, 27, 6, 0))
    assert not night.contains(utc(2026, 11, 26, 23, 59))
    assert interval(times=[{"start_time": "22:00", "end_time": "24:00"}]).contains(utc(2026, 11, 27, 23, 59, 59))


def test_location_shifts_the_clock_to_local_time_with_daylight_saving() -> None:
    london_night = interval(times=[{"start_time": "00:00", "end_time": "06:00"}], location="Europe/London")
    assert london_night.contains(utc(2026, 1, 15, 0, 30))  # GMT: 00:30 local
    assert not london_night.contains(utc(2026, 7, 15, 5, 30))  # BST: 06:30 local
    assert london_night.contains(utc(2026, 7, 14, 23, 30))  # BST: 00:30 local, the next day
    sydney = interval(weekdays=["saturday:sunday"], location="Australia/Sydney")
    assert sydney.contains(utc(2026, 11, 27, 14, 0))  # Friday 14:00 UTC is Saturday 01:00 in Sydney


def test_weekdays_days_of_month_months_and_years_combine() -> None:
    weekend = interval(weekdays=["saturday", "sunday"])
    assert weekend.contains(utc(2026, 11, 28, 12)) and not weekend.contains(utc(2026, 11, 27, 12))
    work = interval(weekdays=["monday:friday"], times=[{"start_time": "09:00", "end_time": "17:00"}])
    assert work.contains(utc(2026, 11, 27, 9)) and not work.contains(utc(2026, 11, 28, 9))
    last_days = interval(days_of_month=["-2:-1"])
    assert last_days.contains(utc(2026, 2, 27)) and last_days.contains(utc(2026, 2, 28))
    assert not last_days.contains(utc(2026, 2, 26)) and not last_days.contains(utc(2026, 3, 29))
    assert interval(days_of_month=[1, "15:16"]).contains(utc(2026, 3, 16))
    winter = interval(months=["december", "1:february"])
    assert winter.contains(utc(2026, 12, 1)) and winter.contains(utc(2026, 2, 1))
    assert not winter.contains(utc(2026, 3, 1))
    assert interval(years=["2026:2027"]).contains(utc(2027, 6, 1))
    assert not interval(years=[2026]).contains(utc(2027, 6, 1))
    assert interval().contains(utc(2026, 1, 1))  # no field: always


def test_a_named_set_matches_when_any_of_its_intervals_does() -> None:
    named = NamedTimeInterval.model_validate({"name": "quiet", "time_intervals": [
        {"times": [{"start_time": "22:00", "end_time": "24:00"}]},
        {"times": [{"start_time": "00:00", "end_time": "06:00"}]}]})
    assert named.contains(utc(2026, 1, 1, 23)) and named.contains(utc(2026, 1, 2, 1))
    assert not named.contains(utc(2026, 1, 2, 12))
    assert named.describe() == "quiet (22:00-24:00 UTC; 00:00-06:00 UTC)"


@pytest.mark.parametrize(("spec", "message"), [
    ({"times": [{"start_time": "06:00", "end_time": "00:00"}]}, "must be before end_time"),
    ({"times": [{"start_time": "7:00", "end_time": "08:00"}]}, "not a time of day HH:MM"),
    ({"times": [{"start_time": "00:00", "end_time": "24:01"}]}, "not a time of day HH:MM"),
    ({"weekdays": ["funday"]}, "'funday' is not a weekday"),
    ({"weekdays": ["1"]}, "weekdays are names"),
    ({"weekdays": ["friday:monday"]}, "start must not come after its end"),
    ({"days_of_month": [32]}, "between 1 and 31"),
    ({"days_of_month": ["-1:5"]}, "start must not come after its end"),
    ({"months": ["smarch"]}, "'smarch' is not a month"),
    ({"years": ["2026:2025"]}, "start must not come after its end"),
    ({"location": "Mars/Olympus"}, "not a time zone of the IANA database"),
    ({"weekdays": ["monday:tuesday:friday"]}, "range of them"),
])
def test_bad_intervals_are_refused_with_a_reason(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        interval(**spec)


# ---------------------------------------------------------------- the config file


MUTED = CONFIG + """
time_intervals:
  - name: nightly-lull
    time_intervals:
      - times: [{start_time: "00:00", end_time: "06:00"}]
rules:
  - {alert: PlatformEventsStalled, expr: "portal_sf_replay_stalled_seconds > 1800", severity: P2,
     mute_time_intervals: [nightly-lull]}
"""


def test_the_loader_names_an_unknown_or_duplicate_interval_by_line() -> None:
    text = MUTED.replace("mute_time_intervals: [nightly-lull]", "mute_time_intervals: [nightly]").replace(
        "rules:\n", "  - name: nightly-lull\n    time_intervals: [{weekdays: [sunday]}]\nrules:\n")
    with pytest.raises(ConfigError) as e:
        config(text)
    lines = str(e.value).splitlines()
    assert any("rules[0].mute_time_intervals[0]: unknown time interval 'nightly' (time_intervals: nightly-lull)"
               in line for line in lines), lines
    assert any("time_intervals[1].name: duplicate time interval name 'nightly-lull'" in line for line in lines), lines
    assert all(line.startswith("alert_rules.yaml:") for line in lines), lines


def test_export_names_the_alertmanager_route_that_mutes_the_same_alerts() -> None:
    text = export_prometheus(config(MUTED))
    assert "#   - matchers: ['alertname=~\"PlatformEventsStalled\"']\n" in text
    assert "#     mute_time_intervals: [nightly-lull]\n" in text
    assert "mute_time_intervals" not in text.split("groups:", 1)[1]  # not a Prometheus rule field


# ---------------------------------------------------------------- incidents


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_db(tmp_path)
    yield c
    c.close()


STALL = alert("PlatformEventsStalled", "P2", check="cache", channel="/event/OrderProvisionRequested__e")


def test_inside_the_interval_the_incident_opens_held_and_pages_when_it_ends(conn: sqlite3.Connection) -> None:
    inc = Incidents(conn, config(MUTED))
    night = utc(2026, 11, 27, 1, 35)
    assert inc.update([STALL], [fired(STALL, night)], night) == 0
    (view,) = inc.list_incidents()
    assert view.held == "muted by time interval nightly-lull (00:00-06:00 UTC)"
    assert inc.update([STALL], [], utc(2026, 11, 27, 5, 59)) == 0
    assert inc.update([STALL], [], utc(2026, 11, 27, 6, 0)) > 0  # still stalled at 06:00: paged now
    assert ("oncall", "trigger", "L1") in queued(conn)
    assert inc.list_incidents()[0].held == ""


def test_a_lull_that_ends_inside_the_interval_pages_nobody(conn: sqlite3.Connection) -> None:
    inc = Incidents(conn, config(MUTED))
    inc.update([STALL], [fired(STALL, utc(2026, 11, 27, 1, 35))], utc(2026, 11, 27, 1, 35))
    inc.update([], [resolved(STALL, utc(2026, 11, 27, 2, 0))], utc(2026, 11, 27, 2, 0))
    assert last_id(conn) == 0  # no trigger, so no resolve either
    assert inc.list_incidents(open_only=False)[0].state == "resolved"


def test_outside_the_interval_it_pages_at_once_and_other_rules_are_never_muted(conn: sqlite3.Connection) -> None:
    inc = Incidents(conn, config(MUTED))
    noon = utc(2026, 11, 27, 12, 0)
    assert inc.update([STALL], [fired(STALL, noon)], noon) > 0
    other = alert("RedisDown", "P1", check="cache")
    night = utc(2026, 11, 28, 1, 0)
    before = last_id(conn)
    assert inc.update([STALL, other], [fired(other, night)], night) > 0
    assert ("oncall", "trigger", "L1") in queued(conn, before)


def test_zones_resolve_without_a_system_time_zone_database() -> None:
    """A slim container may lack /usr/share/zoneinfo: UTC needs no database, others come from
    the `tzdata` package (a dependency)."""
    import zoneinfo

    from monitor.rules.timeintervals import zone

    zoneinfo.reset_tzpath(to=[])
    try:
        assert zone("UTC") is UTC and zone(None) is UTC
        london = zoneinfo.ZoneInfo.no_cache("Europe/London")
        assert utc(2026, 7, 15, 5, 30).astimezone(london).hour == 6
    finally:
        zoneinfo.reset_tzpath()
