"""The JSON API for the people on call: checks, alerts, incidents, silences, reload.

(Past 400 lines because about 110 of them are the API's reference below, kept beside the
handlers it documents so that both change in one diff; who may call what is in `auth.py`, how a
request is read in `requests.py`.)

Reads (GET) are open and carry no secret: every reply is built from values that hold none
(check errors already name targets with `redact_url`) and then every configured secret is
replaced by `***` once more on the way out. Calls that change something (POST, DELETE) need
`Authorization: Bearer <token>`, the token being `api.token` in the config, which defaults
to `${MONITOR_API_TOKEN}`; it is compared in constant time. Without a configured token they
are refused (403), never open. A refusal is decided by a middleware before any handler
runs, so a refused request's body is never read. Errors are `{"error": "..."}` with a
4xx/5xx status. Times are ISO-8601 UTC; durations are seconds.

    GET  /api/v1/checks
         200 {"ok": false, "summary": {"up": 1, "down": 1, "pending": 0, "disabled": 1},
              "checks": [
                {"check": "cache", "type": "redis", "state": "up", "up": true, "reason": null,
                 "error": null, "detail": null, "duration_seconds": 0.0021,
                 "last_run": "2025-06-01T12:00:00.000000+00:00", "age_seconds": 2.4,
                 "interval_seconds": 10.0, "disabled": null,
                 "values": {"portal_redis_ping_seconds": 0.0003, "portal_redis_memory_used_ratio": 0.12},
                 "samples": [{"name": "portal_redis_ping_seconds", "labels": {}, "value": 0.0003}, ...]},
                {"check": "db", "type": "postgres", "state": "down", "up": false, "reason": "connect",
                 "error": "postgresql://postgres:***@db:5432/portal: connection refused", ...},
                {"check": "whmcs", "type": "whmcs", "state": "disabled", "up": null,
                 "disabled": "disabled until WHMCS_API_URL is set", "last_run": null, ...}]}
         `state` is up | down | pending (enabled, not run yet) | disabled. `ok` is false when
         any check is down. `values` are the type's key metrics (`checks.KEY_METRICS`); `detail`
         says what the run found where the check type can tell (the process check's PIDs).

    GET  /api/v1/alerts                              (Prometheus's shape)
         200 {"status": "success", "data": {"alerts": [
                {"labels": {"alertname": "RedisDown", "check": "cache", "severity": "P1"},
                 "annotations": {"summary": "Redis cache is down", "runbook_url": "https://..."},
                 "state": "firing", "activeAt": "2025-06-01T12:00:00Z", "value": "0e+00",
                 "name": "RedisDown", "severity": "P1", "fired_at": "2025-06-01T12:00:00Z",
                 "fingerprint": "4f0c...", "no_data": "", "no_data_since": null, "no_data_why": ""}]}}
         Pending and firing alerts, firing first, then by severity and name; `fired_at` is
         null while pending. An alert kept while its series is missing (the rule's `no_data`)
         has `no_data` "no data since T (why)", `no_data_since` and `no_data_why`. The PromQL
         query API (/api/v1/query, query_range, series, labels,
         label/<name>/values, rules) is described in `promapi.py`.

    GET  /api/v1/incidents[?state=open|all][&limit=N][&before=ID]
         (default open; newest first, `limit` of them (default 50, at most 1000); `before`: only
         incidents with a smaller id, so the last id of a page asks for the next one)
         200 {"incidents": [{"id": 12, "alertname": "RedisDown", "severity": "P1", "state": "open",
                             "summary": "...", "runbook": "...", "labels": {...}, "annotations": {...},
                             "value": 0.0, "dedup_key": "4f0c...", "vendor": null,
                             "detected_at": "...", "fired_at": "...", "acked_at": null, "acked_by": null,
                             "resolved_at": null, "resolved_by": null, "held": "",
                             "no_data": "", "no_data_since": null, "closed_reason": "",
                             "level": "L1", "receivers": {"oncall": "L1"}}],
              "undelivered": [{"incident_id": 12, "severity": "P1", "alertname": "RedisDown",
                               "receiver": "oncall", "level": "L1", "state": "pending", "attempts": 4,
                               "last_error": "pagerduty receiver 'oncall' (...): HTTP 503",
                               "since": "...", "next_attempt_at": "..."}]}
         `undelivered`: every page (trigger) of an open incident that has not reached its
         receiver: the receiver is failing (its oldest waiting notification was refused), or the
         page failed or expired. The status page shows them as a banner; empty when all is well.
         `no_data`: "no data since T (why)" while its alert is kept without data;
         `closed_reason`: how a resolved incident closed when not by its condition
         ("closed: no data for 1h", "closed: rule removed by reload", "resolved by alice").
    GET  /api/v1/incidents/{id}
         200 the same object plus "timeline": [{"at": "...", "kind": "fired", "detail": "...",
             "receiver": null, "level": null}, ...] and "deliveries": [{"id": 1, "receiver": "oncall",
             "kind": "trigger", "state": "delivered", "attempts": 1, "last_error": null,
             "created_at": "...", "finished_at": "..."}]           404 {"error": "incident 12 does not exist"}
    POST /api/v1/incidents/{id}/ack        body optional: {"who": "alice"}   (default "api@<client address>")
    POST /api/v1/incidents/{id}/resolve    body optional: {"who": "alice"}
         200 {"ok": true, "incident": {... as GET, with timeline}, "notifications_queued": 1}
         404 unknown id; 409 {"error": "incident 12 is already resolved; cannot acknowledge it"};
         acking twice queues nothing the second time (200, "notifications_queued": 0).

    GET  /api/v1/silences[?state=active|all]         (default active: in force now)
         200 {"silences": [{"id": 3, "state": "active", "matchers": {"alertname": ["RedisDown"]},
                            "starts_at": "...", "ends_at": "...", "author": "alice",
                            "comment": "Redis upgrade", "created_at": "..."}]}
         `state` is active | pending (starts later) | expired.
    POST /api/v1/silences
         body {"matchers": {"alertname": "RedisDown", "check": ["cache", "db"]},
               "duration": "2h"  or  "ends_at": "2025-06-01T18:00:00Z",
               "starts_at": "2025-06-01T16:00:00Z" (optional, default now),
               "author": "alice", "comment": "Redis upgrade"}
         201 {"ok": true, "silence": {... as GET}}
         400 {"error": "..."}: not JSON, an unknown key, no matcher, both or neither of
             duration/ends_at, an unreadable time, an end in the past, no author or comment.
    DELETE /api/v1/silences/{id}   (or POST /api/v1/silences/{id}/expire, for clients without DELETE)
         200 {"ok": true, "expired": true, "silence": {...}}; "expired": false when it had
         already ended (nothing changed); 404 unknown id.

    POST /-/reload[?confirm=1]
         200 {"ok": true, "added": ["db"], "changed": [], "removed": ["web"], "removed_rules": []}
         400 {"ok": false, "errors": ["alert_rules.yaml:4:38: checks[0].interval: '1 s' is not a duration ..."]}
             the file is invalid (or empty, without checks, or with a P1 rule no enabled
             receiver hears): nothing changed (portal_monitor_config_last_reload_successful 0,
             the reload timestamp stays)
         400 {"ok": false, "errors": ["alert_rules.yaml: reload refused: it would remove 0 of 6
             running checks and 9 of 9 rules (...), more than half; if that is intended, confirm ..."],
             "would_remove": {"checks": [], "rules": ["RedisDown", ...]}, "confirm": "POST /-/reload?confirm=1"}
             the mass-removal guard: nothing changed; `?confirm=1` applies it
         500 {"ok": false, "errors": ["RuntimeError: ..."]}: the reload itself failed
         Never 200 on failure (unlike Alertmanager issue #1152).

    Refusals: 401 {"error": "missing or malformed Authorization: Bearer header"} or
    {"error": "wrong API token"} (with `WWW-Authenticate: Bearer`); 403 {"error": "... set
    MONITOR_API_TOKEN ..."} when the daemon has no token. /metrics asks for credentials only
    when `api.metrics_auth` sets a bearer token and/or basic credentials (either one is accepted).

Example:
    curl -s -X POST -H "Authorization: Bearer $MONITOR_API_TOKEN" -H 'Content-Type: application/json' \\
         -d '{"matchers": {"alertname": "RedisDown"}, "duration": "2h", "author": "alice",
              "comment": "Redis upgrade"}' http://127.0.0.1:9820/api/v1/silences
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import structlog
from aiohttp import web

import checks
from monitor.alerting import Alerting
from monitor.clock import utc_now
from monitor.config.model import Config
from monitor.history import Matcher
from monitor.incidents.records import iso
from monitor.incidents.silences import SilenceEntry, parse_time
from monitor.model import CheckResult
from monitor.rules.engine import AlertStates
from monitor.scheduler import Scheduler
from monitor.secrets import Redactor
from monitor.store import Store
from monitor.web.auth import refuse_mutation, refuse_scrape
from monitor.web.incidentpage import sparkline_svg
from monitor.web.pages import Pages
from monitor.web.promapi import READ_ONLY_POSTS, PromApi, alerts_doc
from monitor.web.requests import ApiError, body_of, bounded_int, choice, path_id, positive_duration
from monitor.web.statuspage import render_page

LIST_LIMIT = 50  # incidents per page of /api/v1/incidents unless `limit` says
MAX_LIST_LIMIT = 1000

log = structlog.get_logger()

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SEVERITY_ORDER = {"P1": 0, "P2": 1, "P3": 2, "P4": 3}
MAX_WHO = 200
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Monitored(Protocol):
    """What the API reads and steers: `monitor.daemon.Daemon` is one."""

    config: Config
    store: Store
    scheduler: Scheduler | None
    alerting: Alerting | None
    reload_errors: Sequence[str]
    reload_detail: dict[str, list[str]]

    def ready(self) -> bool: ...

    async def reload(self, confirm: bool = False) -> bool: ...


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _age(t: datetime, now: datetime) -> float:
    return round(max(0.0, (now - t).total_seconds()), 3)


class Api:
    """Routes, auth middleware and the JSON documents of one daemon (see the module docstring)."""

    def __init__(self, daemon: Monitored, *, now: Callable[[], datetime] = utc_now, external_url: str = "") -> None:
        self._d = daemon
        self._now = now
        self.pages = Pages(self, external_url)
        self.prom = PromApi(
            lambda: self._d.store.history,
            lambda: self._d.alerting,
            lambda: str(self._d.config.path),
            lambda: self._now().timestamp(),
            self._json,
        )

    @property
    def daemon(self) -> Monitored:
        return self._d

    def now(self) -> datetime:
        return self._now()

    def install(self, app: web.Application) -> None:
        """Add the middleware and every route (`/`, `/api/v1/*`, `/-/reload`) to `app`."""
        app.middlewares.append(self.middleware)
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/", self.page),
            ("GET", "/api/v1/checks", self.get_checks),
            ("GET", "/api/v1/alerts", self.get_alerts),
            ("GET", "/api/v1/incidents", self.get_incidents),
            ("GET", "/api/v1/incidents/{id}", self.get_incident),
            ("POST", "/api/v1/incidents/{id}/ack", self.ack),
            ("POST", "/api/v1/incidents/{id}/resolve", self.resolve),
            ("GET", "/api/v1/silences", self.get_silences),
            ("POST", "/api/v1/silences", self.add_silence),
            ("DELETE", "/api/v1/silences/{id}", self.expire_silence),
            ("POST", "/api/v1/silences/{id}/expire", self.expire_silence),
            ("POST", "/-/reload", self.reload),
        ]
        routes += self.prom.routes()
        routes += self.pages.routes()
        for method, path, handler in routes:
            if method == "GET":
                app.router.add_get(path, handler)  # answers HEAD too
            else:
                app.router.add_route(method, path, handler)

    # ------------------------------------------------------------------ auth

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse before the handler runs (so before the body is read); turn ApiError into JSON."""
        api = self._d.config.root.api
        if (
            request.method not in SAFE_METHODS
            and not self.pages.handles(request.path)
            and request.path not in READ_ONLY_POSTS
        ):
            refused = refuse_mutation(request, api.token, self._json)
            if refused is not None:
                return refused
        elif request.path == "/metrics" and api.metrics_auth is not None:
            refused = refuse_scrape(request, api.metrics_auth)
            if refused is not None:
                return refused
        try:
            return await handler(request)
        except ApiError as e:
            return self._json({"error": str(e)}, e.status)

    # ------------------------------------------------------------------ replies

    def _json(self, doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        body = orjson.dumps(doc)
        if _mentions_a_secret(body, self._d.config.secrets):  # else redacting changes nothing
            body = orjson.dumps(Redactor(self._d.config.secrets).redact(doc))
        return web.Response(
            body=body,
            status=status,
            content_type="application/json",
            headers={"Cache-Control": "no-store", **(headers or {})},
        )

    def _alerting(self) -> Alerting:
        if self._d.alerting is None:
            raise ApiError(503, "portal-monitor is starting: alerting is not up yet")
        return self._d.alerting

    # ------------------------------------------------------------------ documents

    def checks_doc(self, now: datetime) -> dict[str, Any]:
        """Every configured check, enabled or not, in config order (disabled ones last)."""
        cfg = self._d.config
        out: list[dict[str, Any]] = []
        for c in cfg.checks:
            result = self._d.store.result(c.name)
            out.append(_check_entry(c.name, c.type, cfg.interval(c), result, now))
        for name, typ, why in cfg.disabled_checks():
            out.append(_not_run_entry(name, typ, "disabled", None, why))
        summary = {s: sum(1 for e in out if e["state"] == s) for s in ("up", "down", "pending", "disabled")}
        return {"ok": summary["down"] == 0, "summary": summary, "checks": out}

    def alerts_doc(self) -> dict[str, Any]:
        """`/api/v1/alerts` in Prometheus's shape (see `monitor.web.promapi`)."""
        if self._d.alerting is None:
            return alerts_doc(AlertStates())
        return alerts_doc(self._d.alerting.state, self._d.alerting.rules)

    def sparklines(self, now: datetime, window_s: float = 3600.0) -> dict[str, str]:
        """Per check, an inline SVG of its main series (its type's first key metric) over the last
        `window_s`, from the rules' history (empty when the history holds none of it yet)."""
        history = self._d.store.history
        hi = int(now.timestamp() * 1000)
        lo = hi - int(window_s * 1000)
        out: dict[str, str] = {}
        for c in self._d.config.checks:
            wanted = checks.KEY_METRICS.get(c.type, ())
            if not wanted:
                continue
            found = history.select([Matcher.of("__name__", "=", wanted[0]), Matcher.of("check", "=", c.name)])
            if not found:
                continue
            series = found[0]
            i, j = series.window(lo, hi)
            points = [(t / 1000.0, v) for t, v in zip(series.times(i, j), series.vs[i:j], strict=True)]
            if len(points) >= 2:
                out[c.name] = sparkline_svg(
                    points, width=240, height=28, label=wanted[0], start=lo / 1000.0, end=hi / 1000.0, compact=True
                )
        return out

    async def incidents_doc(
        self, open_only: bool, limit: int = LIST_LIMIT, before: int | None = None
    ) -> dict[str, Any]:
        if self._d.alerting is None:
            return {"incidents": [], "undelivered": []}
        pages, rows = await self._d.alerting.query(
            lambda inc: (inc.undelivered_pages(), inc.list_incidents(open_only=open_only, limit=limit, before=before))
        )
        undelivered = [p.to_dict() for p in pages]
        out = []
        for view in rows:
            d = view.to_dict()
            del d["timeline"], d["deliveries"]  # not loaded for lists: see /api/v1/incidents/{id}
            out.append(d)
        return {"incidents": out, "undelivered": undelivered}

    async def silences_doc(self, active_only: bool, now: datetime) -> dict[str, Any]:
        if self._d.alerting is None:
            return {"silences": []}
        entries = await self._d.alerting.query(lambda inc: inc.list_silences(active_only=active_only, now=now))
        return {"silences": [_silence_entry(s, now) for s in entries]}

    # ------------------------------------------------------------------ GET

    async def page(self, request: web.Request) -> web.Response:
        now = self._now()
        secrets = self._d.config.secrets
        redactor = Redactor(secrets)

        def redact(doc: Any) -> Any:
            return redactor.redact(doc) if _mentions_a_secret(orjson.dumps(doc), secrets) else doc

        html = render_page(
            checks=redact(self.checks_doc(now)),
            alerts=redact(self.alerts_doc()),
            incidents=redact(await self.incidents_doc(open_only=True)),
            silences=redact(await self.silences_doc(active_only=True, now=now)),
            now=now,
            ready=self._d.ready(),
            base=self.pages.base,
            sparklines=self.sparklines(now),
        )
        return web.Response(
            text=html,
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                "form-action 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    async def get_checks(self, request: web.Request) -> web.Response:
        return self._json(self.checks_doc(self._now()))

    async def get_alerts(self, request: web.Request) -> web.Response:
        return self._json(self.alerts_doc())

    async def get_incidents(self, request: web.Request) -> web.Response:
        state = choice(request, "state", ("open", "all"))
        limit = bounded_int(request, "limit", LIST_LIMIT, 1, MAX_LIST_LIMIT)
        before = bounded_int(request, "before", 0, 1, 2**62) if "before" in request.query else None
        return self._json(await self.incidents_doc(open_only=state == "open", limit=limit, before=before))

    async def get_incident(self, request: web.Request) -> web.Response:
        iid = path_id(request, "incident")
        view = await self._alerting().query(lambda inc: inc.get(iid))
        if view is None:
            raise ApiError(404, f"incident {iid} does not exist")
        return self._json(view.to_dict())

    async def get_silences(self, request: web.Request) -> web.Response:
        state = choice(request, "state", ("active", "all"))
        return self._json(await self.silences_doc(active_only=state == "active", now=self._now()))

    # ------------------------------------------------------------------ incidents

    async def ack(self, request: web.Request) -> web.Response:
        return await self._by_hand(request, "acknowledge")

    async def resolve(self, request: web.Request) -> web.Response:
        return await self._by_hand(request, "resolve")

    async def _by_hand(self, request: web.Request, action: str) -> web.Response:
        iid = path_id(request, "incident")
        body = await body_of(request, allowed=("who",))
        who = body.get("who", f"api@{request.remote or 'unknown'}")
        if not isinstance(who, str) or not who.strip() or len(who) > MAX_WHO:
            raise ApiError(400, f"who must be a non-empty string of at most {MAX_WHO} characters")
        alerting = self._alerting()
        incidents = alerting.incidents
        by, now = who.strip(), self._now()
        try:
            n = await alerting.db(
                lambda: incidents.ack(iid, by, now) if action == "acknowledge" else incidents.resolve(iid, by, now)
            )
        except LookupError as e:
            raise ApiError(404, str(e)) from e
        except ValueError as e:
            raise ApiError(409, str(e)) from e
        if n:
            alerting.outbox_wake.set()
        view = await alerting.db(lambda: incidents.get(iid))
        assert view is not None
        log.info(
            "api_incident_" + ("acknowledged" if action == "acknowledge" else "resolved"),
            incident_id=iid,
            by=who.strip(),
            notifications=n,
        )
        return self._json({"ok": True, "incident": view.to_dict(), "notifications_queued": n})

    # ------------------------------------------------------------------ silences

    async def add_silence(self, request: web.Request) -> web.Response:
        body = await body_of(request, allowed=("matchers", "duration", "ends_at", "starts_at", "author", "comment"))
        now = self._now()
        matchers = body.get("matchers")
        if not isinstance(matchers, dict) or not matchers:
            raise ApiError(400, 'matchers must be a non-empty object, e.g. {"alertname": "RedisDown"}')
        for key in ("duration", "ends_at", "starts_at", "author", "comment"):
            if key in body and not isinstance(body[key], str):
                raise ApiError(400, f"{key} must be a string")
        if ("duration" in body) == ("ends_at" in body):
            raise ApiError(
                400,
                'give either "duration" (e.g. "2h") or "ends_at" (e.g. "2025-06-01T18:00:00Z"), '
                "not both and not neither",
            )
        try:
            starts = parse_time(body["starts_at"], now) if "starts_at" in body else None
            if "duration" in body:
                ends = (starts or now) + positive_duration(body["duration"])
            else:
                ends = parse_time(body["ends_at"], now)
        except ValueError as e:
            raise ApiError(400, str(e)) from e
        alerting = self._alerting()
        silences = alerting.incidents.silences
        try:
            sid = await alerting.db(
                lambda: silences.add(
                    matchers,
                    ends_at=ends,
                    author=body.get("author", ""),
                    comment=body.get("comment", ""),
                    now=now,
                    starts_at=starts,
                )
            )
        except ValueError as e:
            raise ApiError(400, str(e)) from e
        alerting.kick()  # held-back notifications change at the next evaluation
        entry = await alerting.db(lambda: silences.get(sid))
        assert entry is not None
        log.info(
            "api_silence_added",
            silence_id=sid,
            author=entry.author,
            matchers=body["matchers"],
            ends_at=iso(entry.ends_at),
        )
        return self._json({"ok": True, "silence": _silence_entry(entry, now)}, 201)

    async def expire_silence(self, request: web.Request) -> web.Response:
        sid = path_id(request, "silence")
        alerting = self._alerting()
        incidents, now = alerting.incidents, self._now()
        try:
            expired = await alerting.db(lambda: incidents.expire_silence(sid, now))
        except LookupError as e:
            raise ApiError(404, str(e)) from e
        alerting.kick()  # what it held back goes out at the next evaluation if the alert still fires
        entry = await alerting.db(lambda: incidents.silences.get(sid))
        assert entry is not None
        log.info("api_silence_expired", silence_id=sid, changed=expired)
        return self._json({"ok": True, "expired": expired, "silence": _silence_entry(entry, self._now())})

    # ------------------------------------------------------------------ reload

    async def reload(self, request: web.Request) -> web.Response:
        confirm = choice(request, "confirm", ("0", "1", "false", "true")) in ("1", "true")
        log.info("api_reload", remote=request.remote, confirm=confirm)
        try:
            ok = await self._d.reload(confirm=confirm)
        except Exception as e:  # a bug in the reload path: say so, never 200
            log.exception("reload_crashed")
            return self._json({"ok": False, "errors": [f"{type(e).__name__}: {e}"]}, 500)
        if ok:
            return self._json({"ok": True, **self._d.reload_detail})
        errors = list(self._d.reload_errors) or ["the config could not be loaded (see the daemon's log)"]
        refusal: dict[str, Any] = {"ok": False, "errors": errors}
        if self._d.reload_detail:  # the mass-removal guard
            refusal |= {"would_remove": self._d.reload_detail, "confirm": "POST /-/reload?confirm=1"}
        return self._json(refusal, 400)


# ---------------------------------------------------------------------- helpers


def _not_run_entry(name: str, typ: str, state: str, interval: float | None, disabled: str | None) -> dict[str, Any]:
    """A check with no result to show: `pending` (enabled, not run yet) or `disabled` (and why)."""
    return {
        "check": name,
        "type": typ,
        "state": state,
        "up": None,
        "reason": None,
        "error": None,
        "detail": None,
        "duration_seconds": None,
        "last_run": None,
        "age_seconds": None,
        "interval_seconds": interval,
        "disabled": disabled,
        "values": {},
        "samples": [],
    }


def _check_entry(name: str, typ: str, interval: float, r: CheckResult | None, now: datetime) -> dict[str, Any]:
    if r is None:
        return _not_run_entry(name, typ, "pending", interval, None)
    ran = datetime.fromtimestamp(r.started_at, UTC)
    wanted = checks.KEY_METRICS.get(r.type, ())
    values: dict[str, float | None] = {}
    for s in r.samples:
        if s.name in wanted and s.name not in values:
            values[s.name] = _finite(s.value)
    return {
        "check": name,
        "type": typ,
        "state": "up" if r.up else "down",
        "up": r.up,
        "reason": r.reason or None,
        "error": r.error or None,
        "detail": r.detail or None,
        "duration_seconds": round(r.duration_s, 6),
        "last_run": iso(ran),
        "age_seconds": _age(ran, now),
        "interval_seconds": interval,
        "disabled": None,
        "values": values,
        "samples": [{"name": s.name, "labels": dict(s.labels), "value": _finite(s.value)} for s in r.samples],
    }


def _silence_entry(s: SilenceEntry, now: datetime) -> dict[str, Any]:
    state = "active" if s.active(now) else "pending" if now < s.starts_at else "expired"
    return {**s.to_dict(), "state": state}


def _mentions_a_secret(body: bytes, secrets: Iterable[str | None]) -> bool:
    """Whether a JSON text may hold a secret: each one looked up as JSON escapes it. JSON escapes
    character by character, so a string holding a secret holds its escaped form; when none is
    found, redacting the document would change nothing."""
    return any(orjson.dumps(s)[1:-1] in body for s in secrets if s)
