"""The on-call subcommands: `incidents`, `silence`, `notify-test`.

They work on the state database in `state_dir` (the same file the daemon uses; SQLite with
WAL lets both write). Notifications they queue (an ack's PagerDuty `acknowledge`, a manual
resolve) are delivered by the running daemon within a few seconds, or at its next start.

With `--url http://host:9820` `incidents` and `silence` go through a running daemon's API
instead (no local config or state file needed; `$MONITOR_API_TOKEN` for ack, resolve and
silences) and print the same output.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import sys
from datetime import datetime
from typing import Any

import orjson

from monitor.cli import client
from monitor.clock import utc_now
from monitor.config.fields import parse_duration
from monitor.config.loader import Config, api_token
from monitor.incidents.lifecycle import Incidents
from monitor.incidents.messages import review_due, review_template
from monitor.incidents.records import parse_iso
from monitor.incidents.silences import parse_matchers, parse_time
from monitor.model import Alert, DeliveryError, Notification
from monitor.statedb import open_db


def _incidents(cfg: Config) -> Incidents:
    return Incidents(open_db(cfg.root.state_dir), cfg)


def _who(args: argparse.Namespace) -> str:
    return args.who or f"{getpass.getuser()}@{socket.gethostname()}"


def _age(t: datetime, now: datetime) -> str:
    s = int((now - t).total_seconds())
    return (
        f"{s // 86400}d{s % 86400 // 3600}h"
        if s >= 86400
        else f"{s // 3600}h{s % 3600 // 60:02d}m"
        if s >= 3600
        else f"{s // 60}m{s % 60:02d}s"
    )


def _dump(doc: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")


def _queued(n: int) -> str:
    return f"; {n} notification{'s' if n != 1 else ''} queued (the running daemon delivers within seconds)" if n else ""


# ------------------------------------------------------------------ incidents


def _print_incidents(rows: list[dict[str, Any]], show_all: bool, now: datetime) -> None:
    if not rows:
        print("no open incidents" if not show_all else "no incidents")
    for r in rows:
        ack = f"acked by {r['acked_by']}" if r["acked_at"] else ("resolved" if r["resolved_at"] else "not acked")
        held = f"  (held: {r['held']})" if r["held"] else ""
        print(
            f"#{r['id']:<5} {r['severity']}  {r['state']:<8} {r['level'] or '--'}  "
            f"{_age(parse_iso(r['fired_at']), now):>7}  {ack:<22} {r['alertname']}: {r['summary']}{held}"
        )


def _print_incident(d: dict[str, Any]) -> None:
    print(f"#{d['id']} {d['severity']} {d['alertname']} [{d['state']}] level {d['level'] or '--'}")
    print(f"summary: {d['summary']}")
    print("labels:  " + ", ".join(f"{k}={v}" for k, v in sorted(d["labels"].items())))
    print(f"runbook: {d['runbook']}")
    print("timeline (UTC):")
    for e in d["timeline"]:
        print(f"  {parse_iso(e['at']):%Y-%m-%d %H:%M:%S}  {e['kind']:<12} {e['detail']}")


def cmd_incidents(args: argparse.Namespace, cfg: Config | None = None) -> int:
    if args.url:
        return _remote(_incidents_remote, args)
    assert cfg is not None
    inc = _incidents(cfg)
    now = utc_now()
    if args.action == "list":
        rows = [r.to_dict() for r in inc.list_incidents(open_only=not args.all)]
        if args.json:
            _dump(rows)
        else:
            _print_incidents(rows, args.all, now)
        return 0
    if args.id is None:
        print(f"portal-monitor incidents {args.action}: an incident ID is required", file=sys.stderr)
        return 2
    view = inc.get(args.id)
    if view is None:
        print(f"incident {args.id} not found in {cfg.root.state_dir}", file=sys.stderr)
        return 1
    if args.action == "show":
        if args.json:
            _dump(view.to_dict())
        else:
            _print_incident(view.to_dict())
        return 0
    if args.action == "review":
        due = review_due(view.resolved_at, view.severity) if view.resolved_at else None
        print(review_template(view, view.timeline, due))
        return 0
    try:
        if args.action == "ack":
            n = inc.ack(args.id, _who(args), now)
            print(f"incident {args.id} acknowledged by {_who(args)}{_queued(n)}")
        else:
            n = inc.resolve(args.id, _who(args), now)
            print(f"incident {args.id} resolved by {_who(args)}{_queued(n)}")
    except (LookupError, ValueError) as e:
        print(f"incident {args.id}: {e}", file=sys.stderr)
        return 1
    return 0


def _incidents_remote(args: argparse.Namespace, url: str) -> int:
    if args.action == "list":
        rows = client.call(url, "GET", "/api/v1/incidents", params={"state": "all" if args.all else "open"})
        if args.json:
            _dump(rows["incidents"])
        else:
            _print_incidents(rows["incidents"], args.all, utc_now())
        return 0
    if args.id is None:
        print(f"portal-monitor incidents {args.action}: an incident ID is required", file=sys.stderr)
        return 2
    if args.action == "review":
        print(
            "portal-monitor incidents review: run it where the daemon's state_dir is (without --url)", file=sys.stderr
        )
        return 2
    if args.action == "show":
        doc = client.call(url, "GET", f"/api/v1/incidents/{args.id}")
        if args.json:
            _dump(doc)
        else:
            _print_incident(doc)
        return 0
    who = _who(args)
    reply = client.call(url, "POST", f"/api/v1/incidents/{args.id}/{args.action}", token=api_token(), body={"who": who})
    done = "acknowledged" if args.action == "ack" else "resolved"
    print(f"incident {args.id} {done} by {who}{_queued(reply['notifications_queued'])}")
    return 0


def _remote(run: Any, args: argparse.Namespace) -> int:
    """Run a remote subcommand; an API failure is one line on stderr and exit 1."""
    try:
        return int(run(args, args.url))
    except client.ApiError as e:
        print(f"portal-monitor {args.command} {args.action}: {e}", file=sys.stderr)
        return 1


# ------------------------------------------------------------------ silences


def _describe(s: dict[str, Any]) -> str:
    """`SilenceEntry.describe()` for the API's silence object."""
    ms = ", ".join(f"{k}={'|'.join(v)}" for k, v in s["matchers"].items())
    return f"silence {s['id']} ({ms}; {s['author']}: {s['comment']})"


def _print_silences(entries: list[dict[str, Any]]) -> None:
    if not entries:
        print("no active silences")
    for e in entries:
        print(_describe(e))


def cmd_silence(args: argparse.Namespace, cfg: Config | None = None) -> int:
    if args.action == "expire" and (not args.args or not args.args[0].isdigit()):
        print("portal-monitor silence expire ID", file=sys.stderr)
        return 2
    if args.url:
        return _remote(_silence_remote, args)
    assert cfg is not None
    inc = _incidents(cfg)
    now = utc_now()
    if args.action == "list":
        entries = [e.to_dict() for e in inc.list_silences(active_only=not args.all, now=now)]
        if args.json:
            _dump(entries)
        else:
            _print_silences(entries)
        return 0
    if args.action == "expire":
        if inc.expire_silence(int(args.args[0]), now):
            print(f"silence {args.args[0]} expired")
            return 0
        print(f"silence {args.args[0]}: not found or already expired", file=sys.stderr)
        return 1
    matchers = _add_matchers(args)
    if matchers is None:
        return 2
    try:
        starts = parse_time(args.start, now) if args.start else None
        ends = parse_time(args.duration, starts or now)  # a duration counts from the start, as --url does
    except ValueError as e:
        print(f"portal-monitor silence add: {e}", file=sys.stderr)
        return 2
    sid = inc.add_silence(matchers, ends_at=ends, author=_who(args), comment=args.comment, now=now, starts_at=starts)
    print(f"silence {sid} added until {ends:%Y-%m-%d %H:%M:%S} UTC")
    return 0


def _add_matchers(args: argparse.Namespace) -> dict[str, str | list[str]] | None:
    """`silence add`'s matchers, or None after saying what is wrong (also a missing --comment)."""
    try:
        matchers = parse_matchers(args.args)
        if not matchers:
            raise ValueError("give at least one matcher, e.g. alertname=RedisDown")
    except ValueError as e:
        print(f"portal-monitor silence add: {e}", file=sys.stderr)
        return None
    if not args.comment:
        print("portal-monitor silence add: --comment is required (why, and for how long)", file=sys.stderr)
        return None
    return matchers


def _silence_remote(args: argparse.Namespace, url: str) -> int:
    if args.action == "list":
        doc = client.call(url, "GET", "/api/v1/silences", params={"state": "all" if args.all else "active"})
        entries = [{k: v for k, v in e.items() if k != "state"} for e in doc["silences"]]
        if args.json:
            _dump(entries)
        else:
            _print_silences(entries)
        return 0
    if args.action == "expire":
        sid = args.args[0]
        reply = client.call(url, "DELETE", f"/api/v1/silences/{sid}", token=api_token())
        if reply["expired"]:
            print(f"silence {sid} expired")
            return 0
        print(f"silence {sid}: already expired", file=sys.stderr)
        return 1
    matchers = _add_matchers(args)
    if matchers is None:
        return 2
    # A duration is sent as such, so the daemon's clock (not this host's) decides the end.
    try:
        parse_duration(args.duration.strip().removeprefix("+"))
        until = {"duration": args.duration.strip().removeprefix("+")}
    except ValueError:
        until = {"ends_at": args.duration}
    body: dict[str, Any] = {"matchers": matchers, **until, "author": _who(args), "comment": args.comment}
    if args.start:
        body["starts_at"] = args.start
    reply = client.call(url, "POST", "/api/v1/silences", token=api_token(), body=body)
    silence = reply["silence"]
    print(f"silence {silence['id']} added until {parse_iso(silence['ends_at']):%Y-%m-%d %H:%M:%S} UTC")
    return 0


# ------------------------------------------------------------------ notify-test


async def _notify_test(cfg: Config, name: str) -> int:
    from monitor.delivery import build_receiver

    rcfg = cfg.root.receivers.get(name)
    if rcfg is None:
        why = cfg.disabled.get(name)
        known = ", ".join(sorted({*cfg.root.receivers, *(n for n, _, _ in cfg.disabled_receivers())})) or "none"
        print(f"receiver {name!r}: {why or 'not in the config'} (receivers: {known})", file=sys.stderr)
        return 1
    receiver = build_receiver(name, rcfg, host=socket.gethostname(), external_url=None, stream=sys.stdout)
    now = utc_now()
    alert = Alert(
        name="PortalMonitorTest",
        labels={"alertname": "PortalMonitorTest", "severity": "P4"},
        annotations={
            "summary": f"Test notification from portal-monitor on {socket.gethostname()}",
            "description": "1. Nothing to do: this checks the receiver works.",
        },
        severity="P4",
        value=1.0,
        vendor=None,
        fingerprint="portal-monitor-test",
    )
    n = Notification(
        id=0,
        receiver=name,
        kind="test",
        incident_id=0,
        dedup_key="portal-monitor-test",
        level="L1",
        status="firing",
        alert=alert,
        started_at=now,
        updated_at=now,
    )
    try:
        await receiver.send(n)
    except DeliveryError as e:
        kind = (
            "permanent"
            if e.permanent
            else f"retryable, retry after {e.retry_after:g}s"
            if e.retry_after is not None
            else "retryable"
        )
        print(f"{name} ({rcfg.type}): FAILED ({kind}): {e}", file=sys.stderr)
        return 1
    finally:
        await receiver.aclose()
    print(f"{name} ({rcfg.type}): delivered")
    return 0


def cmd_notify_test(args: argparse.Namespace, cfg: Config) -> int:
    return asyncio.run(_notify_test(cfg, args.receiver))


# ------------------------------------------------------------------ parser


class _RemoteUrl(argparse.Action):
    """`--url URL`: work through a running daemon's API, so no local config is loaded."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        namespace.url = values
        namespace.needs_config = False


def _add_url(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        action=_RemoteUrl,
        metavar="URL",
        help="a running daemon (http://host:9820): go through its API; ack, resolve and silences "
        "send $MONITOR_API_TOKEN",
    )


def add_parsers(sub: Any, add_config: Any) -> None:
    p = sub.add_parser("incidents", help="list, show, acknowledge, resolve or review incidents")
    add_config(p)
    p.add_argument("action", choices=("list", "show", "ack", "resolve", "review"))
    p.add_argument("id", nargs="?", type=int, help="incident ID (show, ack, resolve, review)")
    p.add_argument("--all", action="store_true", help="list: include resolved incidents")
    p.add_argument("--json", action="store_true", help="list, show: print JSON")
    p.add_argument("--who", help="ack, resolve: who did it (default user@host)")
    _add_url(p)
    p.set_defaults(func=cmd_incidents, needs_config=True)

    p = sub.add_parser("silence", help="add, list or expire silences")
    add_config(p)
    p.add_argument("action", choices=("add", "list", "expire"))
    p.add_argument("args", nargs="*", help="add: matchers label=value (value a|b for any of); expire: ID")
    p.add_argument("--duration", "--until", default="2h", help="add: end, as a duration (2h) or a time")
    p.add_argument("--start", help="add: start (default now)")
    p.add_argument("--comment", help="add: why (required)")
    p.add_argument("--who", help="add: author (default user@host)")
    p.add_argument("--all", action="store_true", help="list: include expired silences")
    p.add_argument("--json", action="store_true", help="list: print JSON")
    _add_url(p)
    p.set_defaults(func=cmd_silence, needs_config=True)

    p = sub.add_parser("notify-test", help="send a test notification to one receiver and report the reply")
    add_config(p)
    p.add_argument("receiver")
    p.set_defaults(func=cmd_notify_test, needs_config=True)
