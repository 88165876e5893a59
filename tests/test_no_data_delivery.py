"""What people read when an alert has no data or closes without a fix: the incident (timeline,
`closed_reason`, `no_data`), the outbox row, and every receiver's text (status update, Slack,
webhook, Alertmanager, PagerDuty, the status page). Explicit datetimes, real SQLite, fake
peers that speak the real protocols."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from monitor.delivery.alertmanager import alert_body
from monitor.delivery.outbox import list_rows
from monitor.delivery.pagerduty import Config as PdConfig
from monitor.delivery.pagerduty import PagerDutyReceiver
from monitor.delivery.slack import message
from monitor.delivery.webhook import webhook_body
from monitor.incidents.lifecycle import Incidents
from monitor.incidents.messages import customer_communication, status_update
from monitor.incidents.records import notification_from_json, notification_to_json
from monitor.model import Notification, ReceiverContext, Transition
from monitor.statedb import open_db
from monitor.web.statuspage import render_page
from tests.fake_receivers import T0 as N0
from tests.fake_receivers import FakePagerDuty, make_notification
from tests.incident_helpers import T0, alert, at, config, fired, last_id, queued

NO_DATA_1H = "closed: no data for 1h"
WHY = 'check cache answered without portal_sf_replay_stalled_seconds{channel="orders"}'


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_db(tmp_path)
    yield c
    c.close()


@pytest.fixture
def inc(conn: sqlite3.Connection) -> Incidents:
    return Incidents(conn, config())


def closed(kind: str = "resolve", reason: str = NO_DATA_1H, **kw: object) -> Notification:
    return replace(make_notification(kind, **kw), closed_reason=reason)  # type: ignore[arg-type]


def no_data(n: Notification) -> Notification:
    return replace(n, alert=replace(n.alert, no_data_since=N0 + timedelta(minutes=3), no_data_why=WHY))


# ---------------------------------------------------------------- incidents and the outbox


def test_a_no_data_close_reaches_the_timeline_the_view_and_every_paged_receivers_resolve(
        conn: sqlite3.Connection, inc: Incidents) -> None:
    a = alert("PlatformEventsStalled", "P2", check="cache", channel="orders")
    inc.update([a], [fired(a)], T0)
    mark = last_id(conn)
    t = Transition(alert=a, state="resolved", at=at(70), active_since=T0, reason=NO_DATA_1H)
    assert inc.update([], [t], at(70)) == 2
    assert queued(conn, mark) == [("chat", "resolve", "L1"), ("oncall", "resolve", "L1")]
    assert {r.notification.closed_reason for r in list_rows(conn) if r.id > mark} == {NO_DATA_1H}
    (view,) = inc.list_incidents(open_only=False)
    assert view.closed_reason == NO_DATA_1H and view.to_dict()["closed_reason"] == NO_DATA_1H
    full = inc.get(view.id)
    assert full is not None and [e.detail for e in full.timeline if e.kind == "resolved"] == [NO_DATA_1H]


def test_a_fix_has_no_closed_reason(conn: sqlite3.Connection, inc: Incidents) -> None:
    a = alert("RedisDown", check="cache")
    inc.update([a], [fired(a)], T0)
    inc.update([], [Transition(alert=a, state="resolved", at=at(5), active_since=T0)], at(5))
    assert {r.notification.closed_reason for r in list_rows(conn) if r.kind == "resolve"} == {""}
    assert inc.list_incidents(open_only=False)[0].closed_reason == ""


def test_rule_removed_by_reload_resolves_only_to_receivers_that_were_paged(
        conn: sqlite3.Connection, inc: Incidents) -> None:
    """RedisDown paged oncall and chat; the stall was held by the inhibit rule, paged nobody."""
    down = alert("RedisDown", check="cache")
    stall = alert("PlatformEventsStalled", "P2", check="cache", channel="orders")
    inc.update([down, stall], [fired(down), fired(stall)], T0)
    assert {r.dedup_key for r in list_rows(conn)} == {down.fingerprint}
    mark = last_id(conn)
    assert inc.resolve_orphans({"SomethingElse"}, at(3)) == 2
    rows = [r for r in list_rows(conn) if r.id > mark]
    assert [(r.receiver, r.kind, r.dedup_key) for r in rows] == [
        ("chat", "resolve", down.fingerprint), ("oncall", "resolve", down.fingerprint)]
    assert {r.notification.closed_reason for r in rows} == {"closed: rule removed by reload"}
    assert {v.closed_reason for v in inc.list_incidents(open_only=False)} == {"closed: rule removed by reload"}


def test_the_no_data_mark_is_stored_on_the_incident_as_it_comes_and_goes(inc: Incidents) -> None:
    a = alert("PlatformEventsStalled", "P2", check="cache", channel="orders")
    inc.update([a], [fired(a)], T0)
    marked = replace(a, no_data_since=at(3), no_data_why=WHY)
    inc.update([marked], [], at(3))
    (view,) = inc.list_incidents()
    assert view.alert.no_data == f"no data since 2025-12-05T09:03:00+00:00 ({WHY})"
    assert view.to_dict()["no_data"] == view.alert.no_data
    assert view.to_dict()["no_data_since"] == "2025-12-05T09:03:00.000000+00:00"
    inc.update([a], [], at(4))
    (view,) = inc.list_incidents()
    assert view.alert.no_data == ""
    full = inc.get(view.id)
    assert full is not None
    assert [e.detail for e in full.timeline if e.kind == "note"] == [view.alert.no_data or marked.no_data,
                                                                      "data is back"]


def test_the_outbox_json_keeps_the_reason_and_the_mark() -> None:
    n = no_data(closed())
    assert notification_from_json(notification_to_json(n), id=n.id) == n
    plain = make_notification("resolve")
    assert "closed_reason" not in notification_to_json(plain)  # older rows and plain resolves alike
    assert notification_from_json(notification_to_json(plain), id=plain.id) == plain


# ---------------------------------------------------------------- the texts


def test_status_update_of_a_no_data_close_says_closed_not_fault_cleared() -> None:
    n = closed(severity="P2")
    text = status_update(n)
    assert f"- {NO_DATA_1H} at 2024-05-03 14:50:09 UTC" in text
    assert "Status: Closed" in text
    assert "Fault cleared" not in text and "Resolved" not in text
    assert customer_communication(n) == ""  # nothing was fixed to announce
    assert "Fault cleared" in status_update(make_notification("resolve"))  # a fix still says so


def test_status_update_of_an_alert_without_data_says_since_and_why() -> None:
    text = status_update(no_data(make_notification("renotify")))
    assert f"- No data since 2024-05-03T14:08:09+00:00 ({WHY}): the alert stays open" in text


def test_slack_says_closed_and_why_in_text_and_blocks() -> None:
    body = message(closed(reason="closed: rule removed by reload"))
    assert "closed: rule removed by reload at" in body["text"] and "Fault cleared" not in body["text"]
    blocks = str(body["blocks"])
    assert "closed: rule removed by reload at" in blocks and "*Status:*\\nClosed" in blocks
    assert "No data since" in message(no_data(make_notification("renotify")))["text"]


def test_webhook_and_alertmanager_annotations_carry_the_reason_and_the_mark() -> None:
    body = webhook_body(closed(), "management", None)
    ann = body["commonAnnotations"]
    assert ann["closed_reason"] == NO_DATA_1H and NO_DATA_1H in ann["status_update"]
    assert body["status"] == "resolved"
    firing = webhook_body(no_data(make_notification("renotify")), "management", None)["commonAnnotations"]
    assert firing["no_data"].startswith("no data since 2024-05-03T14:08:09+00:00 (check cache")
    (am,) = alert_body(closed(), now=T0, resend_ttl=300, external_url=None)
    assert am["annotations"]["closed_reason"] == NO_DATA_1H


@pytest.fixture
async def pd() -> AsyncIterator[FakePagerDuty]:
    fake = FakePagerDuty()
    await fake.start()
    yield fake
    await fake.close()


async def test_pagerduty_resolve_without_a_fix_carries_the_reason_and_is_accepted(pd: FakePagerDuty) -> None:
    r = PagerDutyReceiver("oncall", PdConfig(type="pagerduty", routing_key="0123456789abcdef0123456789abcdef", url=pd.url),
                          ReceiverContext(host="mon1.example"))
    try:
        await r.send(no_data(make_notification("trigger")))
        await r.send(closed())
        await r.send(make_notification("trigger", dedup_key="other"))
        await r.send(make_notification("resolve", dedup_key="other"))
    finally:
        await r.aclose()
    assert [q.status for q in pd.requests] == [202, 202, 202, 202]
    trigger, resolve, _, plain = pd.events
    assert trigger["payload"]["custom_details"]["no_data"].startswith("no data since 2024-05-03T14:08:09+00:00")
    assert resolve["event_action"] == "resolve"
    assert resolve["payload"]["summary"] == f"{NO_DATA_1H}: Redis is down on cache"
    assert resolve["payload"]["custom_details"]["closed_reason"] == NO_DATA_1H
    assert pd.alerts["3f1c0a9e5b7d2c48"] == "resolved"
    assert "payload" not in plain  # a fix: the bare resolve, as before


def test_status_page_shows_no_data_since_and_why_on_alerts_and_incidents() -> None:
    text = f"no data since 2025-06-01T11:58:00+00:00 ({WHY})"
    a = {"name": "PlatformEventsStalled", "state": "firing", "severity": "P2", "value": "1.9e+03",
         "labels": {"alertname": "PlatformEventsStalled", "severity": "P2", "check": "cache"},
         "annotations": {"summary": "stall"}, "activeAt": "2025-06-01T11:50:00Z",
         "fired_at": "2025-06-01T11:50:00Z", "fingerprint": "f" * 32, "no_data": text}
    i = {"id": 7, "severity": "P2", "alertname": "PlatformEventsStalled", "summary": "stall", "held": "",
         "fired_at": "2025-06-01T11:50:00+00:00", "level": "L1", "acked_at": None, "no_data": text}
    html = render_page(checks={"ok": True, "summary": {"up": 1, "down": 0, "pending": 0, "disabled": 0},
                               "checks": []},
                       alerts={"status": "success", "data": {"alerts": [a]}}, incidents={"incidents": [i]}, silences={"silences": []},
                       now=T0.replace(year=2025, month=6, day=1, hour=12), ready=True)
    escaped = text.replace('"', "&quot;")
    assert html.count(f'<div class="no-data">{escaped}</div>') == 2


def test_incident_page_says_no_data_while_open_and_how_it_closed(inc: Incidents) -> None:
    from monitor.web.incidentpage import render_incident_page
    from monitor.web.pages import notification_of

    a = alert("PlatformEventsStalled", "P2", check="cache", channel="orders")
    inc.update([a], [fired(a)], T0)
    inc.update([replace(a, no_data_since=at(3), no_data_why=WHY)], [], at(3))

    def page() -> tuple[str, str]:
        view = inc.get(1)
        assert view is not None
        n = notification_of(view, at(80))
        html = render_incident_page(view.to_dict(), now=at(80), base="", check=None, chart="",
                                    status_update=status_update(n), customer_communication="", signed_in=None,
                                    csrf="", token_configured=False)
        return html, status_update(n)

    html, _ = page()
    assert f"no data since 2025-12-05T09:03:00+00:00 ({WHY})".replace('"', "&quot;") in html
    inc.update([], [Transition(alert=a, state="resolved", at=at(63), active_since=T0, reason=NO_DATA_1H)], at(63))
    html, text = page()
    assert f'<p class="why"><strong>{NO_DATA_1H}</strong></p>' in html
    assert f"{NO_DATA_1H} at 2025-12-05 10:03:00 UTC" in text and "Fault cleared" not in text
