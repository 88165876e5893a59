"""Silences and inhibition hold back new notifications, never the incident or a resolve for
what was paged; what they held back is sent when they stop holding and the alert still fires."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.config.model import InhibitRule, Silence
from monitor.incidents.lifecycle import Incidents
from monitor.incidents.routing import inhibitors, step_applies
from monitor.incidents.silences import Silences, matches, parse_matchers, parse_time
from monitor.statedb import open_db
from tests.incident_helpers import CONFIG, T0, alert, at, config, fired, last_id, queued, resolved


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_db(tmp_path)
    yield c
    c.close()


@pytest.fixture
def inc(conn: sqlite3.Connection) -> Incidents:
    return Incidents(conn, config())


# ---------------------------------------------------------------- matchers


def test_matchers_compare_exactly_with_missing_labels_empty() -> None:
    labels = {"alertname": "RedisDown", "check": "cache"}
    assert matches({"alertname": "RedisDown"}, labels)
    assert matches({"alertname": ["DatabaseDown", "RedisDown"]}, labels)
    assert not matches({"alertname": "redisdown"}, labels)
    assert matches({"instance": ""}, labels)  # missing == empty, as in Alertmanager
    assert not matches({"instance": "x"}, labels)
    assert matches({}, labels)


def test_parse_matchers_and_times() -> None:
    assert parse_matchers(["alertname=RedisDown", "check=cache|db"]) == {
        "alertname": "RedisDown",
        "check": ["cache", "db"],
    }
    with pytest.raises(ValueError, match="expected label=value"):
        parse_matchers(["RedisDown"])
    assert parse_time("2h", T0) == T0 + timedelta(hours=2)
    assert parse_time("+30m", T0) == T0 + timedelta(minutes=30)
    assert parse_time("2025-12-05T18:00:00Z", T0) == datetime(2025, 12, 5, 18, tzinfo=UTC)
    assert parse_time("2025-12-05T18:00:00", T0) == datetime(2025, 12, 5, 18, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither a time"):
        parse_time("tomorrow", T0)


# ---------------------------------------------------------------- the silence store


def test_add_list_expire(conn: sqlite3.Connection) -> None:
    s = Silences(conn)
    sid = s.add({"alertname": "RedisDown"}, ends_at=at(60), author="alice", comment="redis upgrade", now=T0)
    later = s.add(
        {"check": ["db"]}, starts_at=at(120), ends_at=at(180), author="bob", comment="db window", now=T0
    )
    assert [x.id for x in s.find(now=at(1))] == [sid]  # the later one is not in force yet
    assert [x.id for x in s.find(now=at(1), active_only=False)] == [later, sid]
    assert [x.id for x in s.find(now=at(121))] == [later]
    entry = s.get(sid)
    assert entry is not None and entry.to_dict()["matchers"] == {"alertname": ["RedisDown"]}
    assert s.expire(sid, at(10)) is True
    assert s.find(now=at(10)) == []
    assert s.expire(sid, at(11)) is False
    assert s.expire(later, at(11)) is True  # expiring a future silence cancels it
    assert s.find(now=at(150)) == []
    with pytest.raises(LookupError, match="silence 999 does not exist"):
        s.expire(999, at(1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"matchers": {}}, "at least one matcher"),
        ({"author": " "}, "author and a comment"),
        ({"ends_at": T0}, "not after its start"),
        ({"matchers": {"bad-label": "x"}}, "not a label name"),
        ({"matchers": {"check": []}}, "non-empty list"),
    ],
)
def test_add_refuses_silences_that_make_no_sense(
    conn: sqlite3.Connection, kwargs: dict, message: str
) -> None:
    args = {
        "matchers": {"alertname": "RedisDown"},
        "ends_at": at(60),
        "author": "alice",
        "comment": "why",
        "now": T0,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        Silences(conn).add(**args)


def test_add_from_the_config_model(conn: sqlite3.Connection) -> None:
    s = Silences(conn)
    sid = s.add_spec(
        Silence(matchers={"alertname": "RedisDown"}, ends_at="2h", author="alice", comment="upgrade"), now=T0
    )
    entry = s.get(sid)
    assert entry is not None and (entry.starts_at, entry.ends_at) == (T0, T0 + timedelta(hours=2))


# ---------------------------------------------------------------- silences and incidents


def test_silence_holds_the_trigger_but_not_the_incident(inc: Incidents, conn: sqlite3.Connection) -> None:
    inc.silences.add({"alertname": "RedisDown"}, ends_at=at(60), author="alice", comment="upgrade", now=T0)
    a = alert(check="cache")
    assert inc.update([a], [fired(a)], at(1)) == 0
    (view,) = inc.list_incidents()
    assert view.state == "open" and view.held.startswith("silence 1 (alertname=RedisDown; alice: upgrade)")
    assert inc.open_counts_by_severity()["P1"] == 1  # the metrics still show it
    assert inc.update([a], [], at(45)) == 0  # no escalation, no re-notify either


def test_a_held_trigger_is_sent_when_the_silence_ends_if_still_firing(
    inc: Incidents, conn: sqlite3.Connection
) -> None:
    inc.silences.add(
        {"alertname": "DatabaseDown"}, ends_at=at(45), author="alice", comment="db restart", now=T0
    )
    a = alert("DatabaseDown", check="db")
    inc.update([a], [fired(a)], T0)
    assert inc.update([a], [], at(44, 59)) == 0
    assert inc.update([a], [], at(45)) == 3  # L1 now, and L2 (due at 30m) too
    assert queued(conn) == [("oncall", "trigger", "L1"), ("chat", "trigger", "L1"), ("lead", "trigger", "L2")]
    timeline = inc.get(inc.list_incidents()[0].id).timeline  # type: ignore[union-attr]
    assert [e.detail for e in timeline if e.kind == "note"] == [
        "notifications held: silence 1 (alertname=DatabaseDown; alice: db restart)",
        "notifications no longer held",
    ]


def test_expiring_a_silence_releases_at_the_next_evaluation(inc: Incidents, conn: sqlite3.Connection) -> None:
    sid = inc.silences.add({"check": "cache"}, ends_at=at(600), author="alice", comment="x", now=T0)
    a = alert(check="cache")
    inc.update([a], [fired(a)], T0)
    assert inc.expire_silence(sid, at(5)) is True
    assert inc.list_silences(now=at(5)) == []
    assert inc.update([a], [], at(5)) == 2


def test_nothing_is_sent_for_an_alert_that_cleared_while_silenced(
    inc: Incidents, conn: sqlite3.Connection
) -> None:
    inc.silences.add({"alertname": "RedisDown"}, ends_at=at(60), author="alice", comment="upgrade", now=T0)
    a = alert(check="cache")
    inc.update([a], [fired(a)], T0)
    assert inc.update([], [resolved(a, at(10))], at(10)) == 0  # never paged: no resolve either
    assert inc.update([], [], at(61)) == 0
    assert queued(conn) == []


def test_resolve_is_always_sent_for_what_was_paged_even_when_silenced(
    inc: Incidents, conn: sqlite3.Connection
) -> None:
    a = alert("DatabaseDown", check="db")
    inc.update([a], [fired(a)], T0)
    inc.update([a], [], at(30))
    inc.silences.add(
        {"alertname": "DatabaseDown"}, ends_at=at(120), author="alice", comment="maint", now=at(31)
    )
    mark = last_id(conn)
    assert inc.update([a], [], at(60)) == 0  # L3 and re-notify held
    assert inc.update([], [resolved(a, at(70))], at(70)) == 3
    assert queued(conn, mark) == [
        ("chat", "resolve", "L1"),
        ("oncall", "resolve", "L1"),
        ("lead", "resolve", "L2"),
    ]


def test_ack_is_sent_even_when_silenced(inc: Incidents, conn: sqlite3.Connection) -> None:
    a = alert(check="cache")
    inc.update([a], [fired(a)], T0)
    inc.silences.add({"alertname": "RedisDown"}, ends_at=at(120), author="alice", comment="maint", now=at(1))
    assert inc.ack(inc.list_incidents()[0].id, "alice", at(2)) == 2


def test_a_silence_that_matches_something_else_does_not_hold(inc: Incidents) -> None:
    inc.silences.add(
        {"alertname": "RedisDown", "check": "other"}, ends_at=at(60), author="a", comment="x", now=T0
    )
    a = alert(check="cache")
    assert inc.update([a], [fired(a)], T0) == 2


# ---------------------------------------------------------------- inhibition


def test_redis_down_inhibits_platform_events_stalled_until_it_resolves(
    inc: Incidents, conn: sqlite3.Connection
) -> None:
    src = alert("RedisDown", "P1", check="cache")
    target = alert(
        "PlatformEventsStalled", "P2", vendor="Salesforce", check="cache", channel="/event/Order__e"
    )
    assert inc.update([src, target], [fired(src), fired(target)], T0) == 2  # only RedisDown pages
    assert {r for r, _, _ in queued(conn)} == {"oncall", "chat"}
    views = {v.alertname: v for v in inc.list_incidents()}
    assert views["PlatformEventsStalled"].held == "inhibited by RedisDown"
    assert inc.open_counts_by_severity() == {"P1": 1, "P2": 1, "P3": 0, "P4": 0}
    mark = last_id(conn)
    assert inc.update([src, target], [], at(10)) == 0
    # Redis comes back, the replay keys are still stalled: now the target pages (as Alertmanager does).
    assert inc.update([target], [resolved(src, at(12))], at(12)) == 5
    assert queued(conn, mark) == [
        ("chat", "resolve", "L1"),
        ("oncall", "resolve", "L1"),
        ("oncall", "trigger", "L1"),
        ("chat", "trigger", "L1"),
        ("vendors", "trigger", "L4"),
    ]
    # ... and the P2 escalation timer still counts from when the target fired.
    mark = last_id(conn)
    inc.update([target], [], at(30))
    assert ("lead", "trigger", "L2") in queued(conn, mark)


def test_an_inhibited_target_that_clears_first_is_never_paged(
    inc: Incidents, conn: sqlite3.Connection
) -> None:
    src, target = alert("RedisDown", check="cache"), alert("PlatformEventsStalled", "P2", check="cache")
    inc.update([src, target], [fired(src), fired(target)], T0)
    inc.update([src], [resolved(target, at(5))], at(5))
    inc.update([], [resolved(src, at(6))], at(6))
    assert {q[0] for q in queued(conn) if q[1] == "trigger"} == {"oncall", "chat"}
    assert [q for q in queued(conn) if q[1] == "resolve"] == [
        ("chat", "resolve", "L1"),
        ("oncall", "resolve", "L1"),
    ]


def test_inhibition_needs_equal_labels_with_missing_as_empty() -> None:
    rule = InhibitRule(source={"alertname": "RedisDown"}, target={"severity": ["P2", "P3"]}, equal=["check"])
    src = alert("RedisDown", "P1", check="cache")
    assert inhibitors(alert("X", "P2", check="cache"), [src], [rule]) == ["RedisDown"]
    assert inhibitors(alert("X", "P2", check="db"), [src], [rule]) == []
    assert inhibitors(alert("X", "P4", check="cache"), [src], [rule]) == []  # not a target
    no_check = alert("RedisDown", "P1")
    assert inhibitors(alert("X", "P2"), [no_check], [rule]) == ["RedisDown"]  # both missing: equal
    assert inhibitors(alert("X", "P2", check="cache"), [no_check], [rule]) == []


def test_an_alert_cannot_inhibit_itself_or_a_twin_matching_both_sides() -> None:
    rule = InhibitRule(source={"severity": "P1"}, target={"severity": "P1"})
    a, b = alert("A", "P1", check="x"), alert("B", "P1", check="y")
    assert inhibitors(a, [a], [rule]) == []
    assert inhibitors(a, [a, b], [rule]) == []  # as Alertmanager: two-sided matches do not count
    classic = InhibitRule(source={"severity": "P1"}, target={"severity": "P3"}, equal=["check"])
    assert inhibitors(alert("C", "P3", check="x"), [a, b], [classic]) == ["A"]


def test_inhibit_rules_come_from_the_config_and_apply_after_a_reload(conn: sqlite3.Connection) -> None:
    inc = Incidents(conn, config(CONFIG.split("inhibit:")[0]))
    src, target = alert("RedisDown", check="cache"), alert("PlatformEventsStalled", "P2", check="cache")
    assert inc.update([src, target], [fired(src), fired(target)], T0) == 4  # no rule: both page
    inc.set_config(config(CONFIG))
    other = alert("PlatformEventsStalled", "P2", check="cache", channel="/event/Other__e")
    assert inc.update([src, target, other], [fired(other, at(1))], at(1)) == 0  # the rule holds the new one


def test_vendor_steps_need_a_vendor_and_listed_severities() -> None:
    cfg = config()
    l4 = cfg.root.escalation[3]
    assert step_applies(l4, alert("WhmcsUnavailable", "P2", vendor="WHMCS"))
    assert not step_applies(l4, alert("RedisDown", "P1"))
    picky = l4.model_copy(update={"severities": ["P1"]})
    assert not step_applies(picky, alert("WhmcsUnavailable", "P2", vendor="WHMCS"))


def test_a_held_target_only_kept_firing_is_not_paged_when_its_source_resolves(
    inc: Incidents, conn: sqlite3.Connection
) -> None:
    """The target's condition is already false (keep_firing_for keeps it firing) when the
    source resolves: paging it then would be a page for a fault that is over."""
    src = alert("RedisDown", "P1", check="cache")
    target = alert("PlatformEventsStalled", "P2", check="cache", channel="/event/Order__e")
    inc.update([src, target], [fired(src), fired(target)], T0)
    mark = last_id(conn)
    quiet = {target.fingerprint}
    assert inc.update([target], [resolved(src, at(12))], at(12), quiet=quiet) == 2  # RedisDown's resolves
    assert [q[1] for q in queued(conn, mark)] == ["resolve", "resolve"]
    assert inc.update([], [resolved(target, at(14))], at(14)) == 0  # never paged: nothing to resolve
    # Still firing for real (not quiet) when released: it is paged, as before.
    src2, target2 = alert("RedisDown", "P1", check="db2"), alert("PlatformEventsStalled", "P2", check="db2")
    inc.update([src2, target2], [fired(src2), fired(target2)], at(20))
    mark = last_id(conn)
    inc.update([target2], [resolved(src2, at(22))], at(22))
    assert ("oncall", "trigger", "L1") in queued(conn, mark)
