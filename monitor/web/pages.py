"""The HTML pages people act from: `/incidents/N` with its buttons, and sign-in.

    GET  /incidents/{id}                 the incident page (`incidentpage.render_incident_page`)
    POST /incidents/{id}/ack             form posts from that page: need a signed-in session
    POST /incidents/{id}/resolve         (cookie) and the page's CSRF field; each answers
    POST /incidents/{id}/silence         303 back to the page with what happened
    POST /incidents/{id}/note
    GET  /sign-in?next=/incidents/12     the form: API token + a name for the timeline
    POST /sign-in                        right token → HttpOnly, SameSite=Strict session cookie
    POST /sign-out

Every path also answers under the external URL's path (`external_url:
https://ops.example.com/monitor` → `/monitor/incidents/12`), so a reverse proxy may pass the
prefix through or strip it. The JSON API keeps its bearer token for scripts; these routes take
the cookie instead, so the API middleware lets them through to the checks here.

Why a cookie and what keeps it safe: the token is typed once; the cookie carries a signed
`expires.nonce.name` (HMAC keyed by the token, so a new token ends every session), is HttpOnly
(no script reads it), SameSite=Strict (no other site's form sends it) and Secure when the
external URL is https; each form also carries a CSRF value derived from the session's nonce,
and a POST whose `Origin` names another host is refused.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import structlog
from aiohttp import web

from monitor.incidents.messages import customer_communication, status_update
from monitor.model import Notification
from monitor.secrets import Redactor
from monitor.web.auth import SESSION_COOKIE, SESSION_TTL_S, Session, new_session, read_session, token_matches
from monitor.web.incidentpage import (
    MAX_NOTE,
    SILENCE_CHOICES,
    render_incident_page,
    render_not_found,
    render_sign_in,
    sparkline_svg,
)

if TYPE_CHECKING:
    from monitor.incidents.views import IncidentView
    from monitor.web.api import Api

log = structlog.get_logger()

NOTICES = {
    "acknowledged": "Acknowledged: PagerDuty and the other receivers that were paged are told.",
    "resolved": "Resolved by hand: the receivers that were paged get a resolve.",
    "silenced": "Silenced: notifications for this alert are held back until the silence ends.",
    "noted": "Note added to the timeline.",
    "signed-in": "Signed in.",
}
CHART_WINDOW_S = 3600.0


def base_path(external_url: str) -> str:
    """`https://ops.example.com/monitor/` → `/monitor`; '' for none."""
    return urlsplit(external_url).path.rstrip("/") if external_url else ""


def page_headers() -> dict[str, str]:
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        # same-origin, not no-referrer: under no-referrer a browser sends `Origin: null` with
        # the page's own forms, and the origin check could not tell them from a sandboxed attack
        "Referrer-Policy": "same-origin",
    }


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=page_headers())


def _see_other(location: str) -> web.Response:
    """303 to `location` (a Response, not the HTTPSeeOther exception, so it can carry a cookie)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def notification_of(view: IncidentView, now: datetime) -> Notification:
    """The incident as a notification, so the page shows the very texts the receivers get."""
    status = "resolved" if view.state != "open" else ("acknowledged" if view.acked_at else "firing")
    return Notification(
        id=0,
        receiver="page",
        kind="page",
        incident_id=view.id,
        dedup_key=view.dedup_key,
        level=view.level or "L1",
        status=status,
        alert=view.alert,
        started_at=view.fired_at,
        updated_at=now,
        resolved_at=view.resolved_at,
        closed_reason=view.closed_reason if view.closed_reason.startswith("closed:") else "",
    )


class Pages:
    """The handlers; `api` supplies the daemon, the clock and the check documents."""

    def __init__(self, api: Api, external_url: str = "") -> None:
        self._api = api
        self.base = base_path(external_url)
        self._secure = external_url.startswith("https://")
        self._netloc = urlsplit(external_url).netloc

    # ------------------------------------------------------------------ routes

    def routes(self) -> list[tuple[str, str, Any]]:
        out = []
        for prefix in dict.fromkeys(("", self.base)):
            out += [
                ("GET", f"{prefix}/incidents/{{id}}", self.incident),
                ("POST", f"{prefix}/incidents/{{id}}/{{action}}", self.act),
                ("GET", f"{prefix}/sign-in", self.sign_in_form),
                ("POST", f"{prefix}/sign-in", self.sign_in),
                ("POST", f"{prefix}/sign-out", self.sign_out),
            ]
        return out

    def handles(self, path: str) -> bool:
        """Whether a POST to `path` is one of these forms (the API middleware leaves it to us)."""
        for prefix in dict.fromkeys(("", self.base)):
            rest = path[len(prefix) :] if path.startswith(prefix) else None
            if rest is None:
                continue
            if rest in ("/sign-in", "/sign-out") or (rest.startswith("/incidents/") and rest.count("/") == 3):
                return True
        return False

    # ------------------------------------------------------------------ helpers

    @property
    def _token(self) -> str:
        return str(self._api.daemon.config.root.api.token)

    def _session(self, request: web.Request) -> Session | None:
        return read_session(request.cookies.get(SESSION_COOKIE), self._token, self._api.now().timestamp())

    def _redact(self, doc: Any) -> Any:
        return Redactor(self._api.daemon.config.secrets).redact(doc)

    def _chart(self, view: IncidentView, now: datetime) -> str:
        window = getattr(self._api.daemon, "series_window", None)  # the rule engine's history, where kept
        start = now.timestamp() - CHART_WINDOW_S
        points = window(view.alert.labels, start, now.timestamp()) if window is not None else []
        label = view.alert.labels.get("__name__", "")
        return sparkline_svg(points, label=label, start=start, end=now.timestamp())

    # ------------------------------------------------------------------ GET

    async def incident(self, request: web.Request) -> web.Response:
        try:
            iid = int(request.match_info["id"])
        except ValueError:
            return _html(render_not_found(0, self.base), 404)
        alerting = self._api.daemon.alerting
        view = await alerting.query(lambda inc: inc.get(iid)) if alerting is not None else None
        if view is None:
            return _html(render_not_found(iid, self.base), 404)
        now = self._api.now()
        session = self._session(request)
        check_name = view.alert.labels.get("check")
        check = None
        if check_name:
            docs = self._api.checks_doc(now)["checks"]
            check = next((c for c in docs if c["check"] == check_name), None)
        n = notification_of(view, now)
        done = request.query.get("done", "")
        error = request.query.get("error", "")
        html = render_incident_page(
            self._redact(view.to_dict()),
            now=now,
            base=self.base,
            check=self._redact(check) if check is not None else None,
            chart=self._chart(view, now),
            status_update=self._redact(status_update(n)),
            customer_communication=self._redact(customer_communication(n)),
            signed_in=session.who if session else None,
            csrf=session.csrf(self._token) if session else "",
            token_configured=bool(self._token),
            notice=NOTICES.get(done, "") or error[:300],
            notice_bad=bool(error) and not done,
        )
        return _html(html)

    async def sign_in_form(self, request: web.Request) -> web.Response:
        return _html(
            render_sign_in(
                base=self.base, next_url=self._safe_next(request.query.get("next")), token_configured=bool(self._token)
            )
        )

    # ------------------------------------------------------------------ POST

    def _same_origin(self, request: web.Request) -> bool:
        """No `Origin` (an old browser, curl) passes: the CSRF field still has to match."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        return origin != "null" and urlsplit(origin).netloc in (request.host, self._netloc)

    def _safe_next(self, value: str | None) -> str:
        """A local path to go back to (never another site: `//evil`, `https://...`)."""
        if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
            return value
        return f"{self.base}/"

    async def sign_in(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        next_url = self._safe_next(str(form.get("next", "")))
        if not self._same_origin(request):
            return _html(render_sign_in(base=self.base, next_url=next_url, error="refused: cross-site request"), 403)
        if not self._token:
            return _html(render_sign_in(base=self.base, next_url=next_url, token_configured=False), 403)
        if not token_matches(str(form.get("token", "")), self._token):
            log.warning("page_sign_in_refused", remote=request.remote, reason="wrong_token")
            return _html(render_sign_in(base=self.base, next_url=next_url, error="wrong token"), 401)
        who = str(form.get("who", "")).strip() or f"web@{request.remote or 'unknown'}"
        session, cookie = new_session(self._token, who, self._api.now().timestamp())
        log.info("page_signed_in", who=session.who, remote=request.remote)
        sep = "&" if "?" in next_url else "?"
        response = _see_other(f"{next_url}{sep}done=signed-in" if "/incidents/" in next_url else next_url)
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=int(SESSION_TTL_S),
            path=f"{self.base}/" if self.base else "/",
            httponly=True,
            samesite="Strict",
            secure=self._secure,
        )
        return response

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        session = self._session(request)
        if session is None or not self._same_origin(request) or form.get("csrf") != session.csrf(self._token):
            return _html(render_sign_in(base=self.base, next_url=f"{self.base}/", error="not signed in"), 403)
        response = _see_other(f"{self.base}/")
        response.del_cookie(SESSION_COOKIE, path=f"{self.base}/" if self.base else "/")
        return response

    async def act(self, request: web.Request) -> web.StreamResponse:
        action = request.match_info["action"]
        try:
            iid = int(request.match_info["id"])
        except ValueError:
            return _html(render_not_found(0, self.base), 404)
        page = f"{self.base}/incidents/{iid}"
        if action not in ("ack", "resolve", "silence", "note"):
            raise web.HTTPNotFound()
        form = await request.post()
        session = self._session(request)
        if session is None:
            log.warning("page_action_refused", action=action, incident_id=iid, reason="no_session")
            raise web.HTTPSeeOther(f"{self.base}/sign-in?next={quote(page)}")
        if not self._same_origin(request) or form.get("csrf") != session.csrf(self._token):
            log.warning("page_action_refused", action=action, incident_id=iid, reason="csrf", remote=request.remote)
            return _html(render_sign_in(base=self.base, next_url=page, error="refused: stale or cross-site form"), 403)
        alerting = self._api.daemon.alerting
        if alerting is None:
            raise web.HTTPSeeOther(f"{page}?error={quote('portal-monitor is starting: try again in a moment')}")
        now = self._api.now()
        incidents = alerting.incidents
        duration = str(form.get("duration", ""))
        text = str(form.get("note", ""))[:MAX_NOTE]
        signed: Session = session

        def apply() -> tuple[int, str]:  # on the state file's writer thread
            if action == "ack":
                return incidents.ack(iid, signed.who, now), "acknowledged"
            if action == "resolve":
                return incidents.resolve(iid, signed.who, now), "resolved"
            if action == "silence":
                self._silence(iid, duration, signed, now)
                return 0, "silenced"
            incidents.note(iid, signed.who, text, now)
            return 0, "noted"

        try:
            queued, done = await alerting.db(apply)
        except LookupError:
            return _html(render_not_found(iid, self.base), 404)
        except ValueError as e:
            raise web.HTTPSeeOther(f"{page}?error={quote(str(e))}") from e
        if action == "silence":
            alerting.kick()  # held-back notifications change at the next evaluation
        if queued:
            alerting.outbox_wake.set()
        log.info("page_action", action=action, incident_id=iid, by=session.who, notifications=queued)
        raise web.HTTPSeeOther(f"{page}?done={done}")

    def _silence(self, iid: int, duration: str, session: Session, now: datetime) -> None:
        alerting = self._api.daemon.alerting
        assert alerting is not None
        if duration not in SILENCE_CHOICES:
            raise ValueError(f"silence for {', '.join(SILENCE_CHOICES)}, not {duration!r}")
        view = alerting.incidents.get(iid)
        if view is None:
            raise LookupError(f"incident {iid} does not exist")
        hours = float(duration.removesuffix("h"))
        matchers = {k: v for k, v in view.alert.labels.items() if k != "severity"}
        alerting.incidents.silences.add(
            matchers,
            ends_at=now + timedelta(hours=hours),
            author=session.who,
            comment=f"silenced {duration} from the page of incident {iid}",
            now=now,
        )
