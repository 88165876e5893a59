"""The `portal-monitor` command: one small function per subcommand."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import yaml

import checks
from monitor import __version__
from monitor.cli import oncall
from monitor.clock import utc_now
from monitor.config.fields import format_duration
from monitor.config.loader import (
    ConfigError,
    config_path,
    config_warnings,
    load_config,
    load_config_text,
    require_runnable,
)
from monitor.config.model import API_TOKEN_VAR, MIN_TOKEN_LENGTH, Config
from monitor.logs import configure_logging
from monitor.model import CheckResult, MemoryState
from monitor.secrets import redact_url, scrub
from monitor.web.server import split_listen
from monitor.web.statuspage import format_value


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c", "--config", metavar="FILE", help="config file (default: $PORTAL_MONITOR_CONFIG, else ./alert_rules.yaml)"
    )


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    """`listen` and `state_dir` from the command line win over the file."""
    overrides = {}
    if getattr(args, "listen", None):
        overrides["listen"] = args.listen
    if getattr(args, "state_dir", None):
        overrides["state_dir"] = args.state_dir
    return overrides


def _load(args: argparse.Namespace) -> Config:
    from monitor.daemon import config_loader
    from monitor.rules.engine import compile_rules

    cfg = config_loader(config_path(args.config), _overrides(args))()
    compile_rules(cfg)  # every bad expression is a config error too, with its position
    return cfg


# What `incidents`, `silence` and `notify-test` need from the file: where the state is, the
# receivers and how they are routed. Not the checks or the rules.
ONCALL_KEYS = ("listen", "state_dir", "external_url", "receivers", "escalation", "renotify", "api")


def _load_for_oncall(args: argparse.Namespace) -> Config:
    """The config for the on-call commands: the whole file when it is valid; when it is not (a bad
    rule in the middle of an incident), only the parts they need, with one line on stderr naming
    the file; when even those are broken, the state directory alone."""
    try:
        return _load(args)
    except ConfigError as e:
        path = config_path(args.config)
        cfg, kept = _partial_config(path)
        n = len(e.errors)
        print(
            f"portal-monitor: {path} has {n} error{'s' if n != 1 else ''} (`portal-monitor check-config {path}` "
            f"lists them); {args.command} goes on with {kept} (state directory {cfg.root.state_dir})",
            file=sys.stderr,
        )
        return cfg


def _partial_config(path: Path) -> tuple[Config, str]:
    """A config made of the on-call keys of `path` that still load, and which ones they are."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None
    data = data if isinstance(data, dict) else {}
    attempts: tuple[tuple[list[str], str], ...] = (
        ([k for k in ONCALL_KEYS if k in data], "the receivers and state directory from it"),
        (
            [k for k in ("listen", "state_dir") if k in data],
            "the state directory from it (its receivers are broken too)",
        ),
        ([], "the default state directory (nothing in it could be read)"),
    )
    for keys, kept in attempts:
        if not keys and kept != attempts[-1][1]:
            continue
        try:
            text = yaml.safe_dump({k: data[k] for k in keys}, sort_keys=False)
            return load_config_text(text, name=path.name, path=path), kept
        except ConfigError:
            continue
    return load_config_text("{}", name=path.name, path=path), attempts[-1][1]


def _print_errors(e: ConfigError) -> None:
    for line in e.errors:
        print(line, file=sys.stderr)
    n = len(e.errors)
    print(f"{n} error{'s' if n != 1 else ''}", file=sys.stderr)


# ------------------------------------------------------------------ run


def _token_from_file(path: str) -> None:
    """`run --api-token-file FILE`: unless $MONITOR_API_TOKEN is set, use the token in FILE,
    creating FILE (mode 0600, a random 64-hex-digit token) when it does not exist yet, and say
    where it is: `make run` passes `state/api-token`, so the incident pages' buttons work on a
    fresh checkout."""
    if os.environ.get(API_TOKEN_VAR, "").strip():
        return
    where = Path(path)
    try:
        token = where.read_text(encoding="utf-8").strip()
        made = False
    except FileNotFoundError:
        where.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(32)
        fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
        made = True
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError([f"{where}: the API token in it is shorter than {MIN_TOKEN_LENGTH} characters"])
    os.environ[API_TOKEN_VAR] = token
    print(
        f"portal-monitor: API token {'written to' if made else 'read from'} {where} "
        f"(sign in to the incident pages with it; export {API_TOKEN_VAR}=$(cat {where}) for the CLI)",
        file=sys.stderr,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.daemon import Daemon, config_loader

    if args.api_token_file:
        try:
            _token_from_file(args.api_token_file)
        except OSError as e:
            print(f"portal-monitor: --api-token-file {args.api_token_file}: {e.strerror or e}", file=sys.stderr)
            return 1
    cfg = require_runnable(_load(args))
    configure_logging(
        json=args.log_format == "json" if args.log_format else None, level=args.log_level, secrets=cfg.secrets
    )
    daemon = Daemon(cfg, loader=config_loader(cfg.path, _overrides(args)), watch_file=args.watch)
    try:
        asyncio.run(daemon.serve())
    except OSError as e:
        print(f"portal-monitor: {e}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------ check-config


def _target(c: Any) -> str:
    for attr in ("url", "dsn"):
        if hasattr(c, attr):
            return redact_url(getattr(c, attr))
    if hasattr(c, "paths"):
        return ", ".join(c.paths)
    if hasattr(c, "cmdline"):
        return f"cmdline ~ {c.cmdline}"
    return ""


def _link_warnings(cfg: Config) -> list[str]:
    """Receivers are on, but the links they will carry point at an address only this host can open."""
    from monitor.daemon import external_url

    # the console (log) receiver is read on this host, where loopback works
    enabled = [n for n, r in cfg.root.receivers.items() if n not in cfg.disabled and r.type != "log"]
    if not enabled:
        return []
    _, port = split_listen(cfg.root.listen)
    url = external_url(cfg.root, port)
    host = (urlsplit(url).hostname or "").lower()
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost" or host.endswith(".localhost")
    if not loopback:
        return []
    return [
        f"pages to {', '.join(enabled)} will link to {url}/incidents/N, a loopback address no phone can open: "
        "set external_url (${PORTAL_MONITOR_EXTERNAL_URL}) to the URL people reach this daemon at"
    ]


def rule_problems(cfg: Config) -> list[str]:
    """Rules naming a metric no configured check exports, or a label the metric never carries."""
    from monitor import alerting, daemon, heartbeat, scheduler, store
    from monitor.delivery import outbox
    from monitor.incidents import lifecycle
    from monitor.rules.lint import catalogue, lint

    own = [(m.METRICS, m.LABELS) for m in (scheduler, alerting, lifecycle, outbox, heartbeat, daemon)]
    cat = catalogue(cfg, checks.EXPORTS, (store.METRICS, store.LABELS), own)
    return [str(p) for p in lint(cfg, cat)]


def cmd_check_config(args: argparse.Namespace) -> int:
    from monitor.rules.engine import require_runnable_rules

    if args.file and args.config and args.file != args.config:
        print(
            f"portal-monitor check-config: two files given ({args.config} and {args.file}): give one",
            file=sys.stderr,
        )
        return 2
    path = config_path(args.config or args.file)
    cfg = load_config(path)
    require_runnable_rules(cfg)
    problems = rule_problems(cfg)
    if problems and args.strict:
        raise ConfigError(problems)
    for line in problems:
        print(f"warning: {line}", file=sys.stderr)
    for warning in config_warnings(cfg):
        print(f"warning: {warning}", file=sys.stderr)
    root = cfg.root
    print(f"{path}: OK" + (f" ({len(problems)} warning{'s' if len(problems) != 1 else ''})" if problems else ""))
    print(f"listen {root.listen}   state_dir {root.state_dir}")
    for warning in _link_warnings(cfg):
        print(f"warning: {warning}", file=sys.stderr)
    off_checks = cfg.disabled_checks()
    print(f"\nchecks ({len(cfg.checks)} enabled, {len(off_checks)} disabled):")
    rows = [
        (c.name, c.type, format_duration(cfg.interval(c)), format_duration(cfg.timeout(c)), _target(c), "enabled")
        for c in cfg.checks
    ]
    rows += [(name, typ, "-", "-", "", why) for name, typ, why in off_checks]
    _table(("name", "type", "every", "timeout", "target", "state"), rows)
    print(f"\nrules ({len(root.rules)}):")
    by_sev: dict[str, list[str]] = {}
    for r in root.rules:
        by_sev.setdefault(r.severity or "recording", []).append(r.name)
    for sev in sorted(by_sev):
        print(f"  {sev}: {', '.join(by_sev[sev])}")
    off_receivers = cfg.disabled_receivers()
    rrows: list[tuple[str, str, str]] = [
        (n, r.type, "enabled") for n, r in root.receivers.items() if n not in cfg.disabled
    ]
    rrows += list(off_receivers)
    print(f"\nreceivers ({len(rrows)}):")
    _table(("name", "type", "state"), rrows)
    print(
        "\nescalation: "
        + "; ".join(
            f"{s.level} after {format_duration(s.after)} "
            f"{'vendor' if s.vendor else '/'.join(s.severities or [])} -> {', '.join(s.receivers)}"
            for s in root.escalation
        )
    )
    if root.inhibit:
        print(f"inhibit rules: {len(root.inhibit)}")
    for ti in root.time_intervals:
        muted = [r.alert for r in root.rules if ti.name in r.mute_time_intervals]
        print(f"time interval {ti.describe()}: mutes " + (", ".join(dict.fromkeys(muted)) or "nothing"))
    return 0


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = (
        [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
        if rows
        else [len(h) for h in header]
    )
    fmt = "  " + "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*header).rstrip())
    for row in rows:
        print(fmt.format(*[str(x) for x in row]).rstrip())


# ------------------------------------------------------------------ once


def _key_values(result: CheckResult) -> dict[str, float]:
    wanted = checks.KEY_METRICS.get(result.type, ())
    out: dict[str, float] = {}
    for s in result.samples:
        if s.name in wanted and s.name not in out:
            out[s.name] = s.value
    return out


async def _run_once(cfg: Config) -> list[CheckResult]:
    from monitor.daemon import build_checks
    from monitor.scheduler import run_check

    built = build_checks(cfg, MemoryState(), one_shot=True)
    try:
        return list(await asyncio.gather(*(run_check(c) for c, _ in built)))
    finally:
        for c, _ in built:
            try:
                await c.aclose()
            except Exception:
                pass


def _once_remote(args: argparse.Namespace) -> int:
    """`once --url`: the running daemon's latest results, printed as the local `once` does."""
    from monitor.cli import backend

    try:
        doc = backend.call(args.url, "GET", "/api/v1/checks")
    except backend.ApiError as e:
        print(f"portal-monitor once: {e}", file=sys.stderr)
        return 2
    entries = doc["checks"]
    ran = [c for c in entries if c["state"] in ("up", "down")]
    if args.json:
        out = []
        for c in entries:
            if c["state"] in ("up", "down"):
                out.append(
                    {
                        k: c.get(k)
                        for k in (
                            "check",
                            "type",
                            "up",
                            "reason",
                            "error",
                            "detail",
                            "duration_seconds",
                            "values",
                            "samples",
                        )
                    }
                )
            elif c["state"] == "disabled":
                out.append({"check": c["check"], "type": c["type"], "up": None, "disabled": c["disabled"]})
            else:
                out.append({"check": c["check"], "type": c["type"], "up": None, "pending": "not run yet"})
        sys.stdout.buffer.write(orjson.dumps({"ok": doc["ok"], "checks": out}, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        rows = []
        for c in entries:
            kv = "  ".join(
                f"{k.removeprefix('portal_')}={format_value(k, v)}" for k, v in c["values"].items() if v is not None
            )
            state = {"up": "UP", "down": "DOWN"}.get(c["state"], c["state"])
            why = (
                c["disabled"]
                if c["state"] == "disabled"
                else "not run yet"
                if c["state"] == "pending"
                else (c.get("detail") or "")[:120]
                if c["up"]
                else f"{c['reason']}: {c['error']}"[:120]
            )
            rows.append((c["check"], c["type"], state, kv, why))
        _table(("check", "type", "state", "values", "detail"), rows)
        s = doc["summary"]
        pending = f", {s['pending']} not run yet" if s["pending"] else ""
        age = max((c["age_seconds"] for c in ran), default=0.0)
        print(
            f"\n{s['up']} up, {s['down']} down, {s['disabled']} disabled{pending} "
            f"(from {backend.base_url(args.url)}, results up to {age:.0f}s old)"
        )
    return 0 if doc["ok"] else 1


def cmd_once(args: argparse.Namespace) -> int:
    if args.url:
        return _once_remote(args)
    cfg = _load(args)
    configure_logging(json=True, level="error", stream=sys.stderr, secrets=cfg.secrets)
    t0 = time.perf_counter()
    results = asyncio.run(_run_once(cfg))
    elapsed = time.perf_counter() - t0
    disabled = cfg.disabled_checks()
    down = [r for r in results if not r.up]
    alerts = _alerts_now(cfg, results)
    if args.json:
        doc = {
            "ok": not down,
            "alerts": alerts,
            "checks": [
                {
                    "check": r.check,
                    "type": r.type,
                    "up": r.up,
                    "reason": r.reason or None,
                    "error": _redact(cfg, r.error) or None,
                    "detail": _redact(cfg, r.detail) or None,
                    "duration_seconds": round(r.duration_s, 6),
                    "values": _key_values(r),
                    "samples": [{"name": s.name, "labels": dict(s.labels), "value": s.value} for s in r.samples],
                }
                for r in results
            ]
            + [{"check": n, "type": t, "up": None, "disabled": why} for n, t, why in disabled],
        }
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        rows = []
        for r in results:
            kv = "  ".join(f"{k.removeprefix('portal_')}={format_value(k, v)}" for k, v in _key_values(r).items())
            rows.append(
                (
                    r.check,
                    r.type,
                    "UP" if r.up else "DOWN",
                    kv,
                    _redact(cfg, r.detail)[:120] if r.up else f"{r.reason}: {_redact(cfg, r.error)}"[:120],
                )
            )
        rows += [(n, t, "disabled", "", why) for n, t, why in disabled]
        _table(("check", "type", "state", "values", "detail"), rows)
        print(f"\n{len(results) - len(down)} up, {len(down)} down, {len(disabled)} disabled ({elapsed:.2f}s)")
        if alerts:
            print("\nrules whose condition holds now (pending: paged if it still holds after `for`):")
            _table(
                ("severity", "alert", "state", "summary"),
                [(a["severity"], a["alertname"], a["state"], _redact(cfg, a["summary"])[:100]) for a in alerts],
            )
    return 1 if down else 0


def _alerts_now(cfg: Config, results: list[CheckResult]) -> list[dict[str, Any]]:
    """The rules evaluated once over these results, from a clean state: `firing` for rules
    without `for`, `pending` for the others. Nothing is paged."""

    from monitor.rules.engine import AlertStates, compile_rules, evaluate
    from monitor.store import Store

    store = Store()
    for r in results:
        store.put(r)
    state, _ = evaluate(compile_rules(cfg), store.samples(), AlertStates(), utc_now())
    order = {"P1": 0, "P2": 1, "P3": 2, "P4": 3}
    found = [
        {
            "alertname": st.alert.name,
            "severity": st.alert.severity,
            "state": st.state,
            "summary": st.alert.annotations.get("summary", ""),
            "labels": dict(st.alert.labels),
            "runbook": st.alert.runbook,
        }
        for st in state.alerts.values()
    ]
    return sorted(found, key=lambda a: (order.get(a["severity"], 9), a["alertname"]))


def _redact(cfg: Config, text: str) -> str:
    return scrub(text, cfg.secrets)


# ------------------------------------------------------------------ rules


def cmd_test_rules(args: argparse.Namespace) -> int:
    from monitor.rules.ruletest import BadTestFile, run_rule_tests

    ok = True
    for path in args.files:
        try:
            report = run_rule_tests(path)
        except BadTestFile as e:
            print(f"{path}: {e}", file=sys.stderr)
            return 1
        print(f"{path}:")
        print(report.format())
        ok = ok and report.ok
    return 0 if ok else 1


def cmd_export_rules(args: argparse.Namespace) -> int:
    from monitor.rules.export import export_prometheus

    sys.stdout.write(export_prometheus(_load(args)))
    return 0


# ------------------------------------------------------------------ reload

RELOAD_TIMEOUT_S = 120.0  # the daemon answers after replaced receivers finished their sends


def _daemon_url(listen: str) -> str:
    """The URL a local client reaches a daemon listening on `listen` at."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask the running daemon to re-read its config file (POST /-/reload, $MONITOR_API_TOKEN)."""
    from monitor.cli import backend
    from monitor.config.loader import api_token

    url = args.url or _daemon_url(_load(args).root.listen)
    try:
        reply = backend.call(
            url,
            "POST",
            "/-/reload",
            token=api_token(),
            params={"confirm": "1"} if args.confirm else None,
            timeout_s=RELOAD_TIMEOUT_S,
        )
    except backend.ApiError as e:
        doc = e.doc if isinstance(e.doc, dict) else {}
        if e.status == 400 and isinstance(doc.get("errors"), list):
            print("portal-monitor reload: refused; the daemon keeps its running configuration:", file=sys.stderr)
            for line in doc["errors"]:
                print(f"  {line}", file=sys.stderr)
            if doc.get("would_remove"):
                print("  to apply it anyway: portal-monitor reload --confirm", file=sys.stderr)
        else:
            print(f"portal-monitor reload: {e}", file=sys.stderr)
        return 1
    parts = [f"{k} {', '.join(reply[k])}" for k in ("added", "changed", "removed", "removed_rules") if reply.get(k)]
    print("reloaded" + (": " + "; ".join(parts) if parts else " (no check or rule added, changed or removed)"))
    return 0


# ------------------------------------------------------------------ query


def _query_time(text: str | None, now: float) -> float:
    """--at: Unix seconds, RFC 3339, or a negative duration from now (`-10m`)."""
    from datetime import UTC, datetime

    from monitor.config.fields import parse_duration

    if not text:
        return now
    if text.startswith("-"):
        try:
            return now - parse_duration(text[1:])
        except ValueError:
            pass
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--at {text!r}: expected Unix seconds, an RFC 3339 time (2025-06-01T12:00:00Z) or -DURATION (-10m)"
        ) from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def _print_query_result(doc: dict[str, Any]) -> None:
    """As `promtool query instant` prints: `{labels} => value @[time]` per element."""

    def labels(metric: dict[str, str]) -> str:
        name = metric.get("__name__", "")
        rest = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
        return f"{name}{{{rest}}}" if rest or not name else name

    kind, result = doc["resultType"], doc["result"]
    if kind in ("scalar", "string"):
        print(f"{result[1]} @[{result[0]}]")
    elif kind == "vector":
        for item in result:
            print(f"{labels(item['metric'])} => {item['value'][1]} @[{item['value'][0]}]")
    else:
        for item in result:
            print(f"{labels(item['metric'])} =>")
            for t, v in item["values"]:
                print(f"{v} @[{t}]")


def cmd_query(args: argparse.Namespace) -> int:
    """What a rule would see: the expression's value over the history (locally: the state
    directory's history plus one run of the checks; with --url: the daemon's /api/v1/query)."""
    from monitor.web.promapi import value_doc

    now = time.time()
    try:
        at = _query_time(args.at, now)
    except ValueError as e:
        print(f"portal-monitor query: {e}", file=sys.stderr)
        return 2
    if args.url:
        from monitor.cli import backend

        try:
            doc = backend.call(args.url, "GET", "/api/v1/query", params={"query": args.expr, "time": repr(at)})
        except backend.ApiError as e:
            print(f"portal-monitor query: {e}", file=sys.stderr)
            return 1
        _print_query_result(doc["data"])
        return 0
    from datetime import UTC, datetime

    from monitor.daemon import HISTORY_FILE
    from monitor.history import History
    from monitor.rules.engine import LOOKBACK_S, AlertStates, compile_rules, evaluate
    from monitor.rules.promql import Engine, EvalError, ExprError, parse
    from monitor.store import Store

    try:
        expr = parse(args.expr)
    except ExprError as e:
        print(f"portal-monitor query: {args.expr}: {e}", file=sys.stderr)
        return 1
    cfg = _load(args)
    configure_logging(json=True, level="error", stream=sys.stderr, secrets=cfg.secrets)
    history = History(max_samples=cfg.root.history.max_samples)
    path = Path(cfg.root.state_dir) / HISTORY_FILE
    if path.exists():
        try:
            history.load(path)
        except (OSError, ValueError) as e:
            print(f"portal-monitor query: {e}; using this run of the checks only", file=sys.stderr)
            history.clear()
    store = Store(history)
    if now - at < LOOKBACK_S:  # the checks' results now are within the lookback of `at`
        for result in asyncio.run(_run_once(cfg)):
            store.put(result)
        if not args.at:
            at = time.time()  # after the run, so that its results are in the past
    # the recording rules too, at `at`, as the daemon's evaluation writes them
    evaluate(compile_rules(cfg), history, AlertStates(), datetime.fromtimestamp(at, UTC))
    try:
        value = Engine(history, lookback_s=LOOKBACK_S).instant(expr, at)
    except EvalError as e:
        print(f"portal-monitor query: {args.expr}: {e}", file=sys.stderr)
        return 1
    _print_query_result(value_doc(value))
    return 0


# ------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portal-monitor",
        description="Health monitoring and alerting for the Customer Portal (Redis, PostgreSQL, WHMCS, the BFF).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"portal-monitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon: checks, /metrics, alerting")
    _add_config(p)
    p.add_argument("--listen", metavar="HOST:PORT", help="override `listen` from the config")
    p.add_argument("--state-dir", metavar="DIR", help="override `state_dir` from the config")
    p.add_argument("--log-format", choices=("json", "console"), help="default: json without a TTY")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--watch", action="store_true", help="reload the config file when it changes")
    p.add_argument(
        "--api-token-file",
        metavar="FILE",
        help="unless $MONITOR_API_TOKEN is set, take the API token from FILE, creating it (random, mode 0600) "
        "when missing",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "check-config",
        help="validate the config; print a summary or every error (exit 0 valid, 1 invalid, 2 usage)",
        description="Validate the config and print a summary (exit 0), or every error (exit 1). A rule naming "
        "a metric that no configured check exports, or a label that metric does not carry, is a warning "
        "(stderr, exit 0); with --strict it is an error (exit 1).",
    )
    _add_config(p)
    p.add_argument("file", nargs="?", metavar="FILE", help="the config file, as -c FILE (promtool's habit)")
    p.add_argument("--strict", action="store_true", help="unknown metrics and labels in rules are errors (exit 1)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("once", help="run every check once and print a table (exit 1 if any is down)")
    _add_config(p)
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    p.add_argument(
        "--url",
        metavar="URL",
        help="ask a running daemon (http://host:9820) for its latest results instead of running the checks here",
    )
    p.set_defaults(func=cmd_once)

    p = sub.add_parser("test-rules", help="run rule unit tests (promtool's test-file format)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_test_rules)

    p = sub.add_parser("export-rules", help="print the rules as a Prometheus rule file")
    _add_config(p)
    p.add_argument("--format", choices=("prometheus",), default="prometheus")
    p.set_defaults(func=cmd_export_rules)

    p = sub.add_parser("reload", help="make the running daemon re-read its config file (POST /-/reload)")
    _add_config(p)
    p.add_argument("--url", metavar="URL", help="the daemon (http://host:9820); default: the config file's `listen`")
    p.add_argument(
        "--confirm",
        action="store_true",
        help="apply a file that removes more than half of the running checks or rules",
    )
    p.set_defaults(func=cmd_reload)

    p = sub.add_parser(
        "query",
        help="evaluate a PromQL expression as a rule would see it now",
        description="Evaluate EXPR over the history in the state directory plus one run of the checks (or, with "
        "--url, ask the running daemon's /api/v1/query); print `{labels} => value @[time]` as promtool does.",
    )
    _add_config(p)
    p.add_argument("expr", metavar="EXPR", help="a PromQL expression, e.g. 'rate(portal_check_runs_total[5m])'")
    p.add_argument("--at", metavar="TIME", help="evaluate at TIME: Unix seconds, RFC 3339 or -10m (default: now)")
    p.add_argument("--url", metavar="URL", help="ask a running daemon (http://host:9820) instead")
    p.set_defaults(func=cmd_query)

    oncall.add_parsers(sub, _add_config)
    return parser


# Options whose value may look like an option itself (`--duration -1h`): argparse would take
# `-1h` for a flag and say "expected one argument"; joined as `--duration=-1h`, the command
# itself says what is wrong with the value.
_VALUE_OPTIONS = frozenset({"--duration", "--until", "--start", "--at"})

EXIT_CODES = """exit status:
  0    done (check-config: the file is valid; once: every check is up)
  1    failed: an invalid config, a check down, a refused or failed call (the reason is on stderr)
  2    the command line is wrong (usage on stderr)
  130  interrupted (Ctrl-C)
  141  the reader of the output went away (`portal-monitor check-config | head`); nothing is lost"""


def _join_values(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] in _VALUE_OPTIONS and i + 1 < len(args) and args[i + 1].startswith("-") and len(args[i + 1]) > 1:
            out.append(f"{args[i]}={args[i + 1]}")
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """argparse, except that `silence add -c FILE alertname=X`, with an option between the
    action and its matchers, keeps the matchers (argparse leaves them over as "unrecognized")."""
    parser = build_parser()
    args, rest = parser.parse_known_args(_join_values(argv))
    if rest and isinstance(getattr(args, "args", None), list) and not any(r.startswith("-") for r in rest):
        args.args += rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        if getattr(args, "needs_config", False):
            cfg = _load_for_oncall(args)
            configure_logging(stream=sys.stderr, level="warning", secrets=cfg.secrets)
            return int(args.func(args, cfg) or 0)
        return int(args.func(args) or 0)
    except ConfigError as e:
        _print_errors(e)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `| head` closed the pipe: stop quietly, and keep Python's exit-time flush from
        # writing the same traceback again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141
