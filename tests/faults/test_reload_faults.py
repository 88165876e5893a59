"""Fault rows on the config file: an empty file, a file without rules and a half-written file,
each reloaded by SIGHUP, `POST /-/reload` and `run --watch` while a P1 incident is open.

Every one is refused (the rule-less file by the mass-removal guard): the daemon keeps the
running config and its reload timestamp, `portal_monitor_config_last_reload_successful` goes
to 0, the open incidents stay as they were, and the receivers get nothing but the
`ConfigReloadFailed` page (plus the re-notifications the open incident gets anyway). The good
file reloaded afterwards applies and clears it.

Time is the derived config's (`tests/faults/derive.py`, SCALE 600).
"""

from __future__ import annotations

import signal
from typing import Any

import aiohttp
import pytest
import yaml

from tests.faults.harness import API_TOKEN, HTTP_TIMEOUT, L3_AFTER, PAGE_TIMEOUT, Rig

METHODS = ("SIGHUP", "/-/reload", "--watch")


CUT_RULE = "DatabaseDown"  # the half-written file ends in the middle of this rule's name


def bad_files(good: str) -> list[tuple[str, str]]:
    """(what, text): the three files an interrupted or careless save leaves."""
    zero_rules = yaml.safe_load(good)
    zero_rules["rules"] = []
    cut = good.index(f"- alert: {CUT_RULE}") + len("- alert: Data")  # mid-rule, mid-name
    return [("empty", ""), ("zero-rule", yaml.safe_dump(zero_rules, sort_keys=False)), ("half-written", good[:cut])]


def cut_rule_index(good: str) -> int:
    """The index of `CUT_RULE` in the good file's rules (the recording rules come first)."""
    rules = yaml.safe_load(good)["rules"]
    return next(i for i, r in enumerate(rules) if r.get("alert") == CUT_RULE)


async def reload(rig: Rig, method: str) -> tuple[int, Any] | None:
    """Ask for a reload the way `method` does (`--watch` needs nothing: the write was enough)."""
    if method == "SIGHUP":
        rig.daemon.proc.send_signal(signal.SIGHUP)
    elif method == "/-/reload":
        async with aiohttp.ClientSession() as s, s.post(
                rig.daemon.base + "/-/reload", headers={"Authorization": f"Bearer {API_TOKEN}"},
                timeout=HTTP_TIMEOUT) as r:
            return r.status, await r.json()
    return None


async def open_incidents(rig: Rig) -> list[tuple[int, str, str, str | None, str]]:
    async with aiohttp.ClientSession() as s, s.get(
            rig.daemon.base + "/api/v1/incidents", timeout=HTTP_TIMEOUT) as r:
        doc = await r.json()
    return sorted((i["id"], i["alertname"], i["state"], i["level"], i["held"]) for i in doc["incidents"])


def events(rig: Rig, name: str) -> list[dict[str, Any]]:
    return [e for e in rig.daemon.events if e.get("event") == name]


@pytest.mark.parametrize("method", METHODS)
async def test_bad_files_reloaded_are_refused_and_change_nothing(make_rig: Any, method: str) -> None:
    rig: Rig = make_rig(daemon_args=("--watch",) if method == "--watch" else ())
    await rig.start()
    good = rig.config_path.read_text()
    rig.redis.stop()
    l1 = await rig.trigger("RedisDown", "oncall")
    await rig.trigger("RedisDown", "management", timeout=L3_AFTER + PAGE_TIMEOUT)  # its last step
    incidents = await open_incidents(rig)
    assert any(i[1] == "RedisDown" for i in incidents), incidents
    loaded_at = await rig.metric("portal_monitor_config_last_reload_timestamp_seconds")
    paged = len(rig.pages())

    for what, text in bad_files(good):
        failed = len(events(rig, "reload_failed"))
        rig.config_path.write_text(text)
        reply = await reload(rig, method)
        await rig.wait(lambda failed=failed: len(events(rig, "reload_failed")) > failed,
                       f"the {what} file to be refused ({method})")
        errors = [e["error"] for e in events(rig, "config_error")]
        if what == "empty":
            assert errors[-1].endswith(":1:1: the file is empty (no checks, rules or receivers): a half-written "
                                       "save? it needs at least `checks:`"), errors
        elif what == "zero-rule":
            refused = events(rig, "reload_refused")[-1]
            assert refused["would_remove_checks"] == [] and "RedisDown" in refused["would_remove_rules"]
            assert "reload refused: it would remove 0 of" in errors[-1] and "--confirm" in errors[-1]
        else:
            missing = f"rules[{cut_rule_index(good)}].expr: required key is missing"
            assert any(missing in e for e in errors), errors
        if reply is not None:
            status, body = reply
            assert status == 400 and body["ok"] is False and body["errors"] == errors[-len(body["errors"]):]
            assert ("would_remove" in body) == (what == "zero-rule"), body
        assert await rig.metric("portal_monitor_config_last_reload_successful") == 0
        assert await rig.metric("portal_monitor_config_last_reload_timestamp_seconds") == loaded_at
        assert await rig.metric("portal_redis_up", check="cache") == 0  # the running config runs on

    await rig.trigger("ConfigReloadFailed", "oncall")
    assert [i for i in await open_incidents(rig) if i[1] != "ConfigReloadFailed"] == incidents, rig.story()
    new = [(p.receiver, p.action, p.alertname) for p in rig.pages()[paged:]]
    assert set(new) <= {("oncall", "trigger", "ConfigReloadFailed"), ("management", "renotify", "RedisDown")}, new
    assert new.count(("oncall", "trigger", "ConfigReloadFailed")) == 1, new
    assert not [p for p in rig.pages() if p.action == "resolve"], rig.story()
    assert not events(rig, "reloaded")

    rig.config_path.write_text(good)  # the file fixed: applies, and the refusal is over
    reply = await reload(rig, method)
    await rig.wait(lambda: events(rig, "reloaded"), f"the good file to be reloaded ({method})")
    assert reply is None or reply[0] == 200
    await rig.wait_metric("portal_monitor_config_last_reload_successful", 1)
    cfr = [p for p in rig.pages() if p.alertname == "ConfigReloadFailed"][0]
    await rig.resolved(cfr.dedup_key)
    assert [p.action for p in rig.pages() if p.dedup_key == l1.dedup_key and p.receiver == "oncall"] == ["trigger"]
