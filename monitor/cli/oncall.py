"""The on-call subcommands: `incidents`, `silence`, `notify-test`.

`incidents` and `silence` are written once against `backend.Backend`: the state database in
`state_dir` (the same file the daemon uses; SQLite with WAL lets both write), or with
`--url http://host:9820` a running daemon's API (no local config or state file needed;
`$MONITOR_API_TOKEN` for ack, resolve and silences), with the same output. Notifications they
queue (an ack's PagerDuty `acknowledge`, a manual resolve) are delivered by the running daemon
within a few seconds, or at its next start.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from monitor.cli.backend import ApiError, Backend, LocalBackend, Matchers, Refused, RemoteBackend
from monitor.clock import utc_now
from monitor.config.loader import api_token
from monitor.config.model import Config
from monitor.incidents.messages import review_due, review_template
from monitor.incidents.records import parse_iso
from monitor.incidents.silences import parse_matchers
from monitor.model import Alert, DeliveryError, Notification


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


def _run(args: argparse.Namespace, cfg: Config | None, command: Callable[[argparse.Namespace, Backend], int]) -> int:
    """Run `command` on the backend `--url` picks; a refusal or an API failure is one line on
    stderr and its exit status."""
    backend: Backend = RemoteBackend(args.url, token=api_token()) if args.url else LocalBackend(_config(cfg))
    try:
        return command(args, backend)
    except ApiError as e:
        print(f"portal-monitor {args.command} {args.action}: {e}", file=sys.stderr)
        return 1
    except Refused as e:
        print(e, file=sys.stderr)
        return e.code
    finally:
        backend.close()


def _config(cfg: Config | None) -> Config:
    assert cfg is not None, "without --url the command loads the config"
    return cfg


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
    return _run(args, cfg, _incidents)


def _incidents(args: argparse.Namespace, backend: Backend) -> int:
    if args.action == "list":
        rows = backend.incidents(include_resolved=args.all)
        if args.json:
            _dump(rows)
        else:
            _print_incidents(rows, args.all, utc_now())
        return 0
    if args.id is None:
        print(f"portal-monitor incidents {args.action}: an incident ID is required", file=sys.stderr)
        return 2
    if args.action == "show":
        doc = backend.incident(args.id)
        if args.json:
            _dump(doc)
        else:
            _print_incident(doc)
        return 0
    if args.action == "review":
        view = backend.review(args.id)
        due = review_due(view.resolved_at, view.severity) if view.resolved_at else None
        print(review_template(view, view.timeline, due))
        return 0
    who = _who(args)
    if args.action == "ack":
        n = backend.ack(args.id, who)
        print(f"incident {args.id} acknowledged by {who}{_queued(n)}")
    else:
        n = backend.resolve(args.id, who)
        print(f"incident {args.id} resolved by {who}{_queued(n)}")
    return 0


# ------------------------------------------------------------------ silences


def _describe(s: dict[str, Any]) -> str:
    """`SilenceEntry.describe()` for a silence as the backends return it."""
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
    return _run(args, cfg, _silence)


def _silence(args: argparse.Namespace, backend: Backend) -> int:
    if args.action == "list":
        entries = backend.silences(include_expired=args.all)
        if args.json:
            _dump(entries)
        else:
            _print_silences(entries)
        return 0
    if args.action == "expire":
        backend.expire_silence(int(args.args[0]))
        print(f"silence {args.args[0]} expired")
        return 0
    matchers = _add_matchers(args)
    if matchers is None:
        return 2
    silence = backend.add_silence(
        matchers, until=args.duration, start=args.start, author=_who(args), comment=args.comment
    )
    print(f"silence {silence['id']} added until {parse_iso(silence['ends_at']):%Y-%m-%d %H:%M:%S} UTC")
    return 0


def _add_matchers(args: argparse.Namespace) -> Matchers | None:
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
