"""Incidents: open/close, the escalation matrix at exact times, re-notify cadence, ack and
resolve by hand, orphans, restarts, and the one-transaction guarantee.

Every decision takes `now`; the tests pass explicit datetimes (T0 + n minutes).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.incidents.lifecycle import Incidents
from monitor.delivery.outbox import list_rows
from monitor.statedb import SchemaError, open_db
from tests.incident_helpers import T0, alert, at, config, fingerprint, fired, last_id, queued, resolved

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_db(tmp_path)
    yield c
    c.close()


@pytest.fixture
def inc(conn: sqlite3.Connection) -> Incidents:
    return Incidents(conn, config())


def only_incident(inc: Incidents) -> int:
    (view,) = inc.list_incidents(open_only=False)
    return view.id


# ---------------------------------------------------------------- open, dedup, close


def test_firing_opens_an_incident_and_pages_l1_at_once(inc: Incidents, conn: sqlite3.Connection) -> None:
    a = alert("RedisDown", "P1", check="cache")
    assert inc.update([a], [fired(a, T0, since=at(-1))], T0) == 2
    assert queued(conn) == [("oncall", "trigger", "L1"), ("chat", "trigger", "L1")]
    (view,) = inc.list_incidents()
    assert (view.alertname, view.severity, view.state, view.dedup_key) == ("RedisDown", "P1", "open",
                                                                           a.fingerprint)
    assert view.receivers == {"oncall": "L1", "chat": "L1"} and view.level == "L1"
    full = inc.get(view.id)
    assert full is not None
    assert [(e.kind, e.at) for e in full.timeline] == [("detected", at(-1)), ("fired", T0)]
    n = list_rows(conn)[0].notification
    assert (n.dedup_key, n.status, n.started_at, n.updated_at, n.next_update_at) == (a.fingerprint, "firing",
                                                                                     T0, T0, None)
    chat = list_rows(conn)[1].notification
    assert chat.next_update_at == at(30)  # P1 cadence: the chat post says when the next update comes


def test_a_second_firing_of_an_open_key_pages_nobody(inc: Incidents, conn: sqlite3.Connection) -> None:
    a = alert(check="cache")
    inc.update([a], [fired(a)], T0)
    assert inc.update([a], [fired(a, at(0, 5))], at(0, 5)) == 0
    assert inc.update([a], [], at(0, 6)) == 0
    assert len(inc.list_incidents(open_only=False)) == 1 and len(list_rows(conn)) == 2


def test_dedup_key_is_the_alert_fingerprint_and_stable(inc: Incidents, conn: sqlite3.Connection) -> None:
    a = alert(check="cache", instance="redis:6379")
    same = alert(instance="redis:6379", check="cache")  # label order does not matter
    assert a.fingerprint == same.fingerprint == fingerprint("RedisDown", dict(sorted(a.labels.items())))
    inc.update([a], [fired(a)], T0)
    assert {r.dedup_key for r in list_rows(conn)} == {a.fingerprint}
    assert {r.notification.dedup_key for r in list_rows(conn)} == {a.fingerprint}


def test_resolve_sends_resolve_to_every_receiver_that_got_a_trigger(
    inc: Incidents, conn: sqlite3.Connection
) -> None:
    a = alert("RedisDown", "P1", check="cache")
    inc.update([a], [fired(a)], T0)
    inc.update([a], [], at(30))  # L2
    mark = last_id(conn)
    assert inc.update([], [resolved(a, at(40))], at(40)) == 3
    assert queued(conn, mark) == [
        ("chat", "resolve", "L1"),
        ("oncall", "resolve", "L1"),
        ("lead", "resolve", "L2"),
    ]
    n = list_rows(conn)[-1].notification
    assert (n.status, n.resolved_at, n.next_update_at) == ("resolved", at(40), None)
    view = inc.get(only_incident(inc))
    assert view is not None and view.state == "resolved" and view.resolved_at == at(40)
    assert view.timeline[-1].kind == "resolved"
    assert inc.update([], [], at(90)) == 0  # nothing open: no escalation, no re-notify


def test_a_firing_alert_without_its_transition_still_opens_an_incident(
    inc: Incidents, conn: sqlite3.Connection
) -> None:
    """E.g. the engine restored its state as firing but the incident was never written."""
    a = alert(check="cache")
    assert inc.update([a], [], at(2)) == 2
    view = inc.list_incidents()[0]
    assert view.fired_at == at(2)


# ---------------------------------------------------------------- escalation matrix


def test_p1_escalates_l2_at_30m_and_l3_at_1h(inc: Incidents, conn: sqlite3.Connection) -> None:
    a = alert("DatabaseDown", "P1", check="db")
    inc.update([a], [fired(a)], T0)
    steps: list[tuple[float, list[tuple[str, str, str]]]] = [
        (29 + 59 / 60, []),
        (30, [("lead", "trigger", "L2"), ("chat", "renotify", "L1")]),
        (59 + 59 / 60, []),
        (60, [("management", "trigger", "L3"), ("chat", "renotify", "L1")]),
        (89, []),
        (90, [("chat", "renotify", "L1"), ("management", "renotify", "L3")]),
        (180, [("chat", "renotify", "L1"), ("management", "renotify", "L3")]),
    ]
    for minute, expected in steps:
        mark = last_id(conn)
        inc.update([a], [], T0 + timedelta(minutes=minute))
        assert queued(conn, mark) == expected, minute
    kinds = [(r.receiver, r.kind) for r in list_rows(conn)]
    assert ("oncall", "renotify") not in kinds and ("lead", "renotify") not in kinds  # PagerDuty: never
    timeline = inc.get(only_incident(inc)).timeline  # type: ignore[union-attr]
    escalated = [(e.at, e.level) for e in timeline if e.kind == "escalated"]
    assert escalated == [(at(30), "L2"), (at(60), "L3")]


def test_p2_reaches_l2_but_never_l3(inc: Incidents, conn: sqlite3.Connection) -> None:
    a = alert("PlatformEventsStalled", "P2", check="cache", channel="/event/Order__e")
    inc.update([a], [fired(a)], T0)
    for minute in (30, 60, 120, 240):
        inc.update([a], [], at(minute))
    triggers = [(r, lv) for r, kind, lv in queued(conn) if kind == "trigger"]
    assert triggers == [("oncall", "L1"), ("chat", "L1"), ("lead", "L2")]


def test_p3_stays_at_l1(inc: Incidents, conn: sqlite3.Connection) -> None:
    a = alert("HighErrorRate", "P3", check="bff_logs")
    inc.update([a], [fired(a)], T0)
    inc.update([a], [], at(24 * 60))
    assert {lv for _, kind, lv in queued(conn) if kind == "trigger"} == {"L1"}


def test_vendor_alert_reaches_l4_at_once(inc: Incidents, conn: sqlite3.Connection) -> None:
    a = alert("WhmcsUnavailable", "P2", vendor="WHMCS", check="whmcs")
    assert inc.update([a], [fired(a)], T0) == 3
    assert queued(conn) == [
        ("oncall", "trigger", "L1"),
        ("chat", "trigger", "L1"),
        ("vendors", "trigger", "L4"),
    ]


def test_escalation_is_measured_from_fired_at_not_from_the_call(
    inc: Incidents, conn: sqlite3.Connection
) -> None:
    """A daemon that was down at +30m escalates on its first evaluation after."""
    a = alert("DatabaseDown", "P1", check="db")
    inc.update([a], [fired(a)], T0)
    mark = last_id(conn)
    inc.update([a], [], at(75))  # L2 and L3 both overdue: both sent now, once
    assert sorted(queued(conn, mark)) == [
        ("chat", "renotify", "L1"),
        ("lead", "trigger", "L2"),
        ("management", "trigger", "L3"),
    ]


@pytest.mark.parametrize(("severity", "cadence"), [("P1", 30), ("P2", 60), ("P3", 240), ("P4", 1440)])
def test_renotify_at_the_severity_cadence(
    inc: Incidents, conn: sqlite3.Connection, severity: str, cadence: int
) -> None:
    a = alert("SomeAlert", severity, check="x")
    inc.update([a], [fired(a)], T0)
    mark = last_id(conn)
    inc.update([a], [], at(cadence, -1))
    assert [q for q in queued(conn, mark) if q[0] == "chat"] == []
    inc.update([a], [], at(cadence))
    chat = [r for r in list_rows(conn) if r.id > mark and r.receiver == "chat"]
    assert [r.kind for r in chat] == ["renotify"]
    assert chat[0].notification.next_update_at == at(2 * cadence)
    inc.update([a], [], at(2 * cadence))
    assert [r.kind for r in list_rows(conn, receiver="chat")] == ["trigger", "renotify", "renotify"]
    assert [r.kind for r in list_rows(conn, receiver="oncall")] == ["trigger"]


def test_renotify_cadence_is_configurable(conn: sqlite3.Connection) -> None:
    from tests.incident_helpers import CONFIG

    inc = Incidents(conn, config(CONFIG + "renotify: {P3: 10m}\n"))
    a = alert("SlowResponses", "P3", check="bff_logs")
    inc.update([a], [fired(a)], T0)
    mark = last_id(conn)
    inc.update([a], [], at(10))
    assert queued(conn, mark) == [("chat", "renotify", "L1")]


FALLBACK = """
receivers:
  oncall: {type: pagerduty, enabled: auto, routing_key: "${PAGERDUTY_ROUTING_KEY}"}
  local: {type: log}
escalation:
  - {level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall], fallback: [local]}
  - {level: L2, after: 30m, severities: [P1], receivers: [nobody], fallback: []}
"""


def test_fallback_receivers_take_over_while_the_step_has_none_enabled(conn: sqlite3.Connection) -> None:
    text = FALLBACK.replace("receivers: [nobody], fallback: []", "receivers: [oncall]")
    inc = Incidents(conn, config(text))
    a = alert(check="cache")
    inc.update([a], [fired(a)], T0)
    assert queued(conn) == [("local", "trigger", "L1")]
    with_key = Incidents(conn, config(text, env={"PAGERDUTY_ROUTING_KEY": "k" * 32}))
    b = alert("DatabaseDown", check="db")
    mark = last_id(conn)
    with_key.update([a, b], [fired(b)], T0)
    assert ("oncall", "trigger", "L1") in queued(conn, mark)
    assert ("local", "trigger", "L1") not in queued(conn, mark)


def test_a_step_without_any_receiver_is_logged_once(conn: sqlite3.Connection) -> None:
    text = FALLBACK.replace("receivers: [nobody], fallback: []", "receivers: [oncall]")
    inc = Incidents(conn, config(text.replace("fallback: [local]", "fallback: []")))
    a = alert(check="cache")
    with capture_logs() as logs:
        inc.update([a], [fired(a)], T0)
        inc.update([a], [], at(1))
    assert [e["escalation_level"] for e in logs if e["event"] == "escalation_step_has_no_receiver"] == ["L1"]
    assert inc.list_incidents()[0].state == "open"  # the incident exists and counts anyway


# ---------------------------------------------------------------- by hand


def test_ack_sends_acknowledge_and_does_not_stop_escalation(inc: Incidents, conn: sqlite3.Connection) -> None:
    a = alert("DatabaseDown", "P1", check="db")
    inc.update([a], [fired(a)], T0)
    iid = only_incident(inc)
    mark = last_id(conn)
    assert inc.ack(iid, "alice", at(5)) == 2
    assert queued(conn, mark) == [("chat", "acknowledge", "L1"), ("oncall", "acknowledge", "L1")]
    assert {r.notification.status for r in list_rows(conn) if r.id > mark} == {"acknowledged"}
    assert inc.ack(iid, "bob", at(6)) == 0  # once is enough
    mark = last_id(conn)
    inc.update([a], [], at(30))
    assert queued(conn, mark) == [("lead", "trigger", "L2"), ("chat", "renotify", "L1")]
    assert list_rows(conn)[-1].notification.status == "acknowledged"
    view = inc.get(iid)
    assert view is not None and (view.acked_at, view.acked_by) == (at(5), "alice")
    assert ("acknowledged", "acknowledged by alice") in [(e.kind, e.detail) for e in view.timeline]


def test_ack_and_resolve_refuse_unknown_and_closed_incidents(inc: Incidents) -> None:
    a = alert(check="cache")
    inc.update([a], [fired(a)], T0)
    iid = only_incident(inc)
    with pytest.raises(LookupError, match="incident 999 does not exist"):
        inc.ack(999, "alice", at(1))
    inc.update([], [resolved(a, at(2))], at(2))
    with pytest.raises(ValueError, match=f"incident {iid} is already resolved"):
        inc.ack(iid, "alice", at(3))
    with pytest.raises(ValueError, match="already resolved"):
        inc.resolve(iid, "alice", at(3))


def test_manual_resolve_holds_until_the_alert_clears_then_a_new_firing_pages(
    inc: Incidents, conn: sqlite3.Connection
) -> None:
    a = alert("RedisDown", "P1", check="cache")
    inc.update([a], [fired(a)], T0)
    iid = only_incident(inc)
    mark = last_id(conn)
    assert inc.resolve(iid, "alice", at(5)) == 2
    assert queued(conn, mark) == [("chat", "resolve", "L1"), ("oncall", "resolve", "L1")]
    view = inc.get(iid)
    assert view is not None and (view.state, view.resolved_by) == ("resolved", "alice")
    mark = last_id(conn)
    assert inc.update([a], [], at(6)) == 0  # still firing: not re-opened, nobody re-paged
    assert inc.update([a], [fired(a, at(7))], at(7)) == 0
    assert inc.list_incidents() == []
    inc.update([], [resolved(a, at(8))], at(8))  # the alert clears once
    assert inc.update([a], [fired(a, at(9))], at(9)) == 2  # a new firing is a new incident
    assert queued(conn, mark) == [("oncall", "trigger", "L1"), ("chat", "trigger", "L1")]
    assert [v.id for v in inc.list_incidents()] == [iid + 1]


def test_manual_resolve_of_a_cleared_alert_does_not_block_the_next_firing(inc: Incidents) -> None:
    a = alert(check="cache")
    inc.update([a], [fired(a)], T0)
    inc.resolve(only_incident(inc), "alice", at(1))
    inc.update([], [], at(2))  # not firing at the next evaluation: the hold goes
    assert inc.update([a], [fired(a, at(3))], at(3)) == 2


def test_orphans_resolve_with_a_note(inc: Incidents, conn: sqlite3.Connection) -> None:
    keep, gone = alert("RedisDown", check="cache"), alert("OldRule", "P3", check="x")
    inc.update([keep, gone], [fired(keep), fired(gone)], T0)
    mark = last_id(conn)
    assert inc.resolve_orphans({"RedisDown"}, at(3)) == 2
    assert queued(conn, mark) == [("chat", "resolve", "L1"), ("oncall", "resolve", "L1")]
    assert all(r.dedup_key == gone.fingerprint for r in list_rows(conn) if r.id > mark)
    (still_open,) = inc.list_incidents()
    assert still_open.alertname == "RedisDown"
    old = inc.list_incidents(open_only=False)[0]
    timeline = inc.get(old.id).timeline  # type: ignore[union-attr]
    assert any(e.kind == "note" and "rule 'OldRule' no longer exists" in e.detail for e in timeline)


def test_orphans_by_live_keys_resolve_alerts_an_edited_rule_no_longer_makes(inc: Incidents) -> None:
    old = alert("RedisDown", check="cache", team="a")
    inc.update([old], [fired(old)], T0)
    assert inc.resolve_orphans({"RedisDown"}, at(1), live_keys={"some-other-key"}) == 2
    assert inc.list_incidents() == []


# ---------------------------------------------------------------- restarts and crashes


def test_restart_does_not_page_twice_and_still_resolves(tmp_path: Path) -> None:
    a = alert("RedisDown", "P1", check="cache")
    c1 = open_db(tmp_path)
    Incidents(c1, config()).update([a], [fired(a)], T0)
    c1.close()  # the daemon stops (or is killed) while the incident is open

    c2 = open_db(tmp_path)
    inc2 = Incidents(c2, config())
    assert inc2.update([a], [fired(a, at(0, 3))], at(0, 3)) == 0  # the engine forgot and fires again
    assert inc2.update([a], [], at(30)) == 2  # escalation kept its timer across the restart
    assert queued(c2)[-2:] == [("lead", "trigger", "L2"), ("chat", "renotify", "L1")]
    c2.close()

    c3 = open_db(tmp_path)
    inc3 = Incidents(c3, config())
    mark = last_id(c3)
    assert inc3.update([], [resolved(a, at(40))], at(40)) == 3
    assert {r.dedup_key for r in list_rows(c3) if r.id > mark} == {a.fingerprint}
    assert [q[1] for q in queued(c3)].count("trigger") == 3  # oncall, chat, lead: once each
    c3.close()


CRASH = """
import os, signal, sys
from datetime import timedelta
import monitor.incidents.lifecycle as incidents
from monitor.statedb import open_db
from tests.incident_helpers import T0, alert, config, fired

inc = incidents.Incidents(open_db(sys.argv[1]), config())
a, b = alert("RedisDown", check="cache"), alert("DatabaseDown", check="db")
inc.update([a], [fired(a)], T0)               # committed
real = incidents.enqueue
def enqueue_then_die(*args, **kwargs):
    real(*args, **kwargs)                     # the first outbox row of b is written...
    os.kill(os.getpid(), signal.SIGKILL)      # ...and the process dies mid-transaction
incidents.enqueue = enqueue_then_die
inc.update([a, b], [fired(b, T0 + timedelta(seconds=1))], T0 + timedelta(seconds=1))
"""


def test_kill_9_mid_transaction_leaves_a_consistent_file(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent(CRASH))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "state")], cwd=ROOT,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    conn = open_db(tmp_path / "state")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert [r[0] for r in conn.execute("SELECT alertname FROM incidents")] == ["RedisDown"]
    assert {r.dedup_key for r in list_rows(conn)} == {alert("RedisDown", check="cache").fingerprint}
    inc = Incidents(conn, config())
    a, b = alert("RedisDown", check="cache"), alert("DatabaseDown", check="db")
    assert inc.update([a, b], [fired(b, at(0, 2))], at(0, 2)) == 2  # b pages now, a not again
    assert [r.dedup_key for r in list_rows(conn)].count(a.fingerprint) == 2
    conn.close()


def test_an_incident_change_and_its_outbox_rows_commit_together(
    inc: Incidents, conn: sqlite3.Connection
) -> None:
    conn.execute(
        "CREATE TRIGGER outbox_full BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    a = alert(check="cache")
    with pytest.raises(sqlite3.IntegrityError, match="disk full"):
        inc.update([a], [fired(a)], T0, alert_states='{"x": 1}')
    assert conn.execute("SELECT count(*) FROM incidents").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM timeline").fetchone() == (0,)
    assert inc.load_alert_states() is None
    conn.execute("DROP TRIGGER outbox_full")
    assert inc.update([a], [fired(a)], T0) == 2  # the next evaluation does it all


def test_a_failed_ack_changes_nothing(inc: Incidents, conn: sqlite3.Connection) -> None:
    a = alert(check="cache")
    inc.update([a], [fired(a)], T0)
    iid = only_incident(inc)
    conn.execute(
        "CREATE TRIGGER outbox_full BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        inc.ack(iid, "alice", at(1))
    view = inc.get(iid)
    assert view is not None and view.acked_at is None
    assert "acknowledged" not in [e.kind for e in view.timeline]


def test_alert_states_are_kept_with_the_incidents(tmp_path: Path) -> None:
    c1 = open_db(tmp_path)
    inc = Incidents(c1, config())
    assert inc.load_alert_states() is None
    inc.save_alert_states('{"v": 1}', T0)
    a = alert(check="cache")
    inc.update([a], [fired(a)], T0, alert_states='{"v": 2}')
    c1.close()
    assert Incidents(open_db(tmp_path), config()).load_alert_states() == '{"v": 2}'


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    c = open_db(tmp_path)
    Incidents(c, config())
    c.execute("INSERT INTO schema_version (version, description, applied_at) VALUES (99, 'future', '')")
    c.close()
    with pytest.raises(SchemaError, match="schema version 99"):
        open_db(tmp_path)


# ---------------------------------------------------------------- queries and metrics


def test_open_counts_cover_all_four_severities(inc: Incidents) -> None:
    assert inc.open_counts_by_severity() == {"P1": 0, "P2": 0, "P3": 0, "P4": 0}
    a, b, c = alert("A", "P1", check="x"), alert("B", "P3", check="x"), alert("C", "P3", check="y")
    inc.update([a, b, c], [fired(a), fired(b), fired(c)], T0)
    samples = {s.labels["severity"]: s.value for s in inc.samples() if s.name == "portal_incidents_open"}
    assert samples == {"P1": 1.0, "P2": 0.0, "P3": 2.0, "P4": 0.0}
    inc.update([a, c], [resolved(b, at(1))], at(1))
    assert inc.open_counts_by_severity()["P3"] == 1


def test_get_returns_the_timeline_and_deliveries_as_json(inc: Incidents, conn: sqlite3.Connection) -> None:
    a = alert("DatabaseDown", "P1", check="db", value=3.0)
    inc.update([a], [fired(a, T0, since=at(-1))], T0)
    iid = only_incident(inc)
    inc.ack(iid, "alice", at(2))
    inc.update([a], [], at(30))
    inc.update([], [resolved(a, at(31))], at(31))
    view = inc.get(iid)
    assert view is not None
    assert [e.kind for e in view.timeline] == ["detected", "fired", "acknowledged", "escalated", "resolved"]
    assert [d.kind for d in view.deliveries][:2] == ["trigger", "trigger"]
    doc = json.loads(json.dumps(view.to_dict()))
    assert (
        doc["level"] == "L2"
        and doc["labels"]["check"] == "db"
        and doc["timeline"][0]["at"].endswith("+00:00")
    )
    assert inc.get(12345) is None
    assert [v.id for v in inc.list_incidents(open_only=False)] == [iid]


def test_the_engine_state_round_trips_through_update(tmp_path: Path) -> None:
    from monitor.rules.engine import AlertStates

    c = open_db(tmp_path)
    inc = Incidents(c, config())
    states = AlertStates(evaluated_at=T0)
    inc.update([], [], T0, alert_states=states.to_json())
    text = inc.load_alert_states()
    assert text is not None and AlertStates.from_json(json.loads(text)) == states
    c.close()


def test_the_review_template_reads_an_incident_view(inc: Incidents) -> None:
    from monitor.incidents.messages import review_due, review_template

    a = alert("DatabaseDown", "P1", check="db")
    inc.update([a], [fired(a, T0, since=at(-1))], T0)
    iid = only_incident(inc)
    inc.ack(iid, "alice", at(4))
    inc.update([], [resolved(a, at(50))], at(50))
    view = inc.get(iid)
    assert view is not None and view.resolved_at is not None
    text = review_template(view, view.timeline, review_due(view.resolved_at, view.severity))
    assert f"incident {iid}, DatabaseDown (P1" in text
    assert "2025-12-10" in text  # resolved Friday 5 Dec → due 3 business days later, Wednesday
    assert "09:04" in text and "09:50" in text  # acknowledged and resolved times from the timeline
