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
    sydney = interval(weekdays=["saturday", "sunday"], location="Australia/Sydney")
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
    ({"weekdays": ["friday:monday"]}, "start day cannot be after end day"),
    ({"weekdays": ["saturday:sunday"]}, "weeks start on sunday"),
    ({"days_of_month": [32]}, "between 1 and 31"),
    ({"days_of_month": [0]}, "0 is not a valid day of the month"),
    ({"days_of_month": ["-1:5"]}, "the end day must be negative"),
    ({"days_of_month": ["25:-5"]}, "end day -5 is always before start day 25"),
    ({"days_of_month": ["5:1"]}, "end day 1 is always before start day 5"),
    ({"months": ["smarch"]}, "'smarch' is not a month"),
    ({"months": ["march:january"]}, "end month is before start month"),
    ({"years": ["2026:2025"]}, "end year 2025 is before start year 2026"),
    ({"location": "Mars/Olympus"}, "not a time zone of the IANA database"),
    ({"weekdays": ["monday:tuesday:friday"]}, "couldn't parse range"),
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


# ---------------------------------------------------------------- Alertmanager's ranges


def test_days_of_month_count_from_the_end_and_clamp_to_the_month() -> None:
    whole = interval(days_of_month=["1:-1"])
    assert all(whole.contains(utc(2026, 2, d)) for d in range(1, 29))
    assert whole.contains(utc(2026, 1, 31)) and whole.contains(utc(2028, 2, 29))
    late = interval(days_of_month=["20:-1"])
    assert late.contains(utc(2026, 2, 20)) and late.contains(utc(2026, 2, 28)) and late.contains(utc(2026, 1, 31))
    assert not late.contains(utc(2026, 2, 19))
    last_week = interval(days_of_month=["-7:-1"])
    assert last_week.contains(utc(2026, 2, 22)) and not last_week.contains(utc(2026, 2, 21))
    assert last_week.contains(utc(2026, 1, 25)) and not last_week.contains(utc(2026, 1, 24))
    assert interval(days_of_month=["-1"]).contains(utc(2028, 2, 29))
    assert not interval(days_of_month=["-1"]).contains(utc(2028, 2, 28))
    thirtieth = interval(days_of_month=["30"])  # never in February, not moved to its last day
    assert not any(thirtieth.contains(utc(2026, 2, d)) for d in range(1, 29))
    assert interval(days_of_month=["1:31"]).contains(utc(2026, 2, 28))  # the end is clamped
    assert interval(days_of_month=["-31:-1"]).contains(utc(2026, 2, 1))  # so is a negative start
    assert interval(days_of_month=["27:-1"]).contains(utc(2026, 2, 28))  # 27..28 in February


def test_weekday_names_and_ranges_start_on_sunday_case_insensitive() -> None:
    start = interval(weekdays=["Sunday:MONDAY"])  # 2026-11-29 is a Sunday
    assert start.contains(utc(2026, 11, 29)) and start.contains(utc(2026, 11, 30))
    assert not start.contains(utc(2026, 11, 28)) and not start.contains(utc(2026, 12, 1))
    assert interval(weekdays=["saturday"]).contains(utc(2026, 11, 28))
    assert interval(weekdays=["monday:friday"]).contains(utc(2026, 11, 27))  # a Friday


def test_months_by_name_or_number_and_years() -> None:
    assert interval(months=["FEBRUARY:april"]).contains(utc(2026, 4, 30))
    assert interval(months=[3, "11:12"]).contains(utc(2026, 12, 31))
    assert not interval(months=["13"]).contains(utc(2026, 12, 31))  # accepted (as Alertmanager does), never true
    assert interval(years=["2026:2026", 2030]).contains(utc(2030, 1, 1))
    assert not interval(years=["2026:2029"]).contains(utc(2030, 1, 1))


def test_location_local_is_the_machines_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.rules.timeintervals import zone

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    zone.cache_clear()
    try:
        night = interval(times=[{"start_time": "00:00", "end_time": "06:00"}], location="Local")
        assert night.contains(utc(2026, 1, 15, 16, 30))  # 01:30 in Tokyo
        assert not night.contains(utc(2026, 1, 15, 0, 30))  # 09:30 in Tokyo
    finally:
        zone.cache_clear()


# Every spec: Alertmanager accepts it exactly when we do (amtool check-config is the judge).
ALERTMANAGER_SPECS: list[str] = [
    "days_of_month: ['1:-1']",
    "days_of_month: ['20:-1']",
    "days_of_month: ['-7:-1', '1', 15, '-1']",
    "days_of_month: ['28:-1']",
    "days_of_month: ['1:31', '-31:-1']",
    "days_of_month: ['25:-5']",
    "days_of_month: ['-3:5']",
    "days_of_month: ['0']",
    "days_of_month: ['32']",
    "days_of_month: ['-32:-1']",
    "days_of_month: ['5:1']",
    "days_of_month: ['-1:-2']",
    "weekdays: ['monday:friday', 'Sunday', 'SATURDAY']",
    "weekdays: ['sunday:saturday']",
    "weekdays: ['saturday:sunday']",
    "weekdays: ['friday:monday']",
    "weekdays: ['1']",
    "weekdays: ['funday']",
    "weekdays: ['monday:tuesday:friday']",
    "months: ['january:march', 'December', '5', '7:8']",
    "months: ['13']",
    "months: ['march:january']",
    "months: ['smarch']",
    "years: ['2026', '2026:2030', 1999]",
    "years: ['2030:2026']",
    "years: ['twenty']",
    "times: [{start_time: '00:00', end_time: '24:00'}]",
    "times: [{start_time: '22:30', end_time: '23:59'}]",
    "times: [{start_time: '06:00', end_time: '06:00'}]",
    "times: [{start_time: '7:00', end_time: '08:00'}]",
    "times: [{start_time: '00:00', end_time: '24:01'}]",
    "times: [{start_time: '00:60', end_time: '01:00'}]",
    "location: Europe/London",
    "location: UTC",
    "location: Local",
    "location: Mars/Olympus",
]


def test_we_accept_exactly_what_alertmanager_accepts(tmp_path: Path) -> None:
    import re
    import subprocess

    import yaml

    from tests.conftest import require_tool

    amtool = require_tool("amtool", "amtool is not installed (Debian package: prometheus-alertmanager)")
    files = []
    for n, spec in enumerate(ALERTMANAGER_SPECS):
        path = tmp_path / f"am{n}.yml"
        path.write_text(
            "route: {receiver: x}\nreceivers: [{name: x}]\n"
            f"time_intervals:\n  - name: t\n    time_intervals:\n      - {spec}\n"
        )
        files.append(str(path))
    done = subprocess.run([amtool, "check-config", *files], capture_output=True, text=True, timeout=60)
    verdicts = dict(re.findall(r"Checking '([^']+)'\s+(SUCCESS|FAILED)", done.stdout + done.stderr))
    assert len(verdicts) == len(files), done.stdout + done.stderr
    disagree = []
    for spec, path in zip(ALERTMANAGER_SPECS, files, strict=True):
        try:
            interval(**yaml.safe_load(spec))
            ours = "SUCCESS"
        except ValidationError:
            ours = "FAILED"
        if ours != verdicts[path]:
            disagree.append(f"{spec}: Alertmanager {verdicts[path]}, we {ours}")
    assert disagree == []
    assert list(verdicts.values()).count("SUCCESS") >= 12  # the accepting half is really exercised
