"""The configuration's own models: the top-level keys of `alert_rules.yaml` and the loaded `Config`.

Each component keeps its config model beside it (a check type in `checks`, a receiver in
`monitor.delivery`, the heartbeat, the time intervals in `monitor.rules.timeintervals`);
`RootConfig` assembles them with the keys that belong to no component: defaults, rules,
escalation, re-notify cadence, inhibition, silences, the API. `Config` is the frozen result
of a load (`monitor.config.loader`), with what the loader learned on the way: key positions
for later errors, what is switched off and why, and the secrets to redact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from checks import CHECK_TYPES, CheckConfig
from monitor.config.fields import Duration, StrictModel
from monitor.config.yamlpos import nearest
from monitor.delivery import ReceiverConfig
from monitor.heartbeat import HeartbeatConfig
from monitor.rules.timeintervals import NamedTimeInterval
from monitor.secrets import Secret

DEFAULT_CONFIG = "alert_rules.yaml"
DEFAULT_LISTEN = "127.0.0.1:9820"
DEFAULT_STATE_DIR = "./state"
API_TOKEN_VAR = "MONITOR_API_TOKEN"
MIN_TOKEN_LENGTH = 16

Severity = Literal["P1", "P2", "P3", "P4"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
Level = Literal["L1", "L2", "L3", "L4"]


NoData = Literal["keep", "resolve", "alert"]
DEFAULT_NO_DATA_TIMEOUT = 3600.0


class Defaults(StrictModel):
    """Fallbacks for checks and rules that do not set their own. A check's timeout defaults to
    the smaller of its interval and `timeout`; a rule's `no_data` and `no_data_timeout` to
    these."""

    interval: Duration = 10.0
    timeout: Duration = 10.0
    no_data: NoData = "keep"
    no_data_timeout: Duration = DEFAULT_NO_DATA_TIMEOUT


class RuleConfig(StrictModel):
    """An alerting rule (`alert:`, `severity:`, ...) or a recording rule (`record:`, `expr:`,
    `labels:` only, as in Prometheus): `record` stores `expr`'s result as a new series."""

    alert: str = Field("", pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$")
    record: str = Field("", pattern=r"^([a-zA-Z_:][a-zA-Z0-9_:]*)?$")
    expr: str = Field(min_length=1)
    for_: Duration = Field(0.0, alias="for")
    keep_firing_for: Duration = 0.0
    severity: Severity | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    # Prometheus's `annotations:` map (any names, templated); `summary`, `description` and
    # `runbook` are shorthands for the `summary`, `description` and `runbook_url` annotations.
    annotations: dict[str, str] = Field(default_factory=dict)
    summary: str = ""
    description: str = ""
    runbook: str = ""
    vendor: str | None = None
    # Names from the top-level `time_intervals`: inside one, this rule's incidents are held
    # back as by a silence (opened, shown as held, paged when it ends if still firing).
    mute_time_intervals: list[str] = Field(default_factory=list)
    # A firing alert whose series is missing from its check's answer: keep it firing (marked
    # "no data since T (why)") until `no_data_timeout`, resolve it at once, or keep it and also
    # fire DatasourceNoData. None: `defaults.no_data` / `defaults.no_data_timeout`.
    no_data: NoData | None = None
    no_data_timeout: Duration | None = None

    @model_validator(mode="after")
    def _one_spelling(self) -> RuleConfig:
        for key, name in SHORTHANDS.items():
            if getattr(self, key) and name in self.annotations:
                raise ValueError(f"`{key}:` and `annotations.{name}` say the same thing: keep one")
        return self

    @model_validator(mode="after")
    def _alert_or_record(self) -> RuleConfig:
        if bool(self.alert) == bool(self.record):
            raise ValueError("a rule has either `alert:` (an alerting rule) or `record:` (a recording rule)")
        if self.record:
            alerting_only = [
                "for" if k == "for_" else k
                for k in (
                    "for_",
                    "keep_firing_for",
                    "severity",
                    "annotations",
                    "summary",
                    "description",
                    "runbook",
                    "vendor",
                )
                if k in self.model_fields_set
            ]
            if self.mute_time_intervals:
                alerting_only.append("mute_time_intervals")
            if alerting_only:
                raise ValueError(
                    f"recording rule {self.record!r}: {', '.join(alerting_only)} belong to alerting rules only"
                    " (a recording rule has record, expr and labels)"
                )
        return self  # an alerting rule without `severity:` is refused by the loader, at that key

    @property
    def name(self) -> str:
        """The alert's or the recorded series' name."""
        return self.alert or self.record

    def all_annotations(self) -> dict[str, str]:
        """Every annotation template by its Prometheus name, shorthands first, then the map's."""
        out = {name: getattr(self, key) for key, name in SHORTHANDS.items() if getattr(self, key)}
        out.update(self.annotations)
        return out


# The rule keys that are shorthands for annotations, and the annotation each one sets.
SHORTHANDS: dict[str, str] = {"summary": "summary", "description": "description", "runbook": "runbook_url"}


Matcher = dict[str, str | list[str]]


class EscalationStep(StrictModel):
    """One row of the escalation matrix: who is told, for which incidents, after how long."""

    level: Level
    after: Duration = 0.0
    severities: list[Severity] | None = None
    vendor: bool = False
    receivers: list[str] = Field(min_length=1)
    # Used instead of `receivers` when none of them is enabled (e.g. no PagerDuty key yet), and
    # as well as them for a P1/P2 whose page none of them has taken for `fallback_after`.
    fallback: list[str] = Field(default_factory=list)
    fallback_after: Duration | None = None  # None: the top-level `fallback_after`


class InhibitRule(StrictModel):
    """While an alert matching `source` fires, notifications of alerts matching `target`
    (and equal on the `equal` labels) are held back."""

    source: Matcher
    target: Matcher
    equal: list[str] = Field(default_factory=list)


class Silence(StrictModel):
    matchers: Matcher
    starts_at: str | None = None
    ends_at: str
    author: str
    comment: str


DEFAULT_ESCALATION = [
    EscalationStep.model_validate(step)
    for step in (
        {"level": "L1", "after": "0s", "severities": ["P1", "P2", "P3", "P4"], "receivers": ["oncall"]},
        {"level": "L2", "after": "30m", "severities": ["P1", "P2"], "receivers": ["lead"]},
        {"level": "L3", "after": "1h", "severities": ["P1"], "receivers": ["management"]},
        {"level": "L4", "after": "0s", "vendor": True, "receivers": ["vendors"]},
    )
]


class Renotify(StrictModel):
    """How often non-PagerDuty receivers hear again about an open incident (runbook cadence)."""

    P1: Duration = 1800.0
    P2: Duration = 3600.0
    P3: Duration = 4 * 3600.0
    P4: Duration = 24 * 3600.0


class BasicAuth(StrictModel):
    username: str = Field(min_length=1)
    password: Secret = Field(min_length=1)


class MetricsAuth(StrictModel):
    """Who may scrape /metrics: a bearer token, HTTP basic credentials, or either."""

    bearer: Secret = ""
    basic: BasicAuth | None = None


class ApiConfig(StrictModel):
    """The HTTP API. `token` guards every mutating call (ack, resolve, silences, reload); it
    defaults to $MONITOR_API_TOKEN, and while it is empty those calls are refused."""

    token: Secret = ""
    metrics_auth: MetricsAuth | None = None

    @field_validator("token")
    @classmethod
    def _token_is_long(cls, v: str) -> str:
        if v and len(v) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"the API token (${API_TOKEN_VAR} unless api.token names another variable) must be "
                f"at least {MIN_TOKEN_LENGTH} characters (e.g. `openssl rand -hex 32`)"
            )
        return v


class HistoryConfig(StrictModel):
    """The recent history the rules, `/api/v1/query` and the incident page's chart read."""

    # Hard cap on the samples kept in memory (12 bytes each plus slack); past it new samples are
    # refused and counted (portal_monitor_history_refused_samples_total).
    max_samples: int = Field(default=2_000_000, ge=1000)
    # How often the history is written to <state_dir>/history.msgpack (and at stop): what a
    # kill -9 can lose at most.
    save_every: Duration = Field(default=60.0, gt=0)


class RootConfig(StrictModel):
    listen: str = DEFAULT_LISTEN
    # Where people and receivers reach this daemon (Prometheus's --web.external-url): every link
    # a page carries is built from it, and the HTML pages also answer under its path. Empty:
    # http://<listen host, or this host's name for 0.0.0.0>:<port>.
    external_url: str = ""
    state_dir: str = DEFAULT_STATE_DIR
    retention: Duration = Field(90 * 86400.0, gt=0)  # resolved incidents, delivered pages: then pruned
    defaults: Defaults = Field(default_factory=Defaults)
    checks: list[CheckConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    receivers: dict[str, ReceiverConfig] = Field(default_factory=dict)
    escalation: list[EscalationStep] = Field(default_factory=lambda: list(DEFAULT_ESCALATION))
    renotify: Renotify = Field(default_factory=Renotify)
    inhibit: list[InhibitRule] = Field(default_factory=list)
    time_intervals: list[NamedTimeInterval] = Field(default_factory=list)
    api: ApiConfig = Field(default_factory=ApiConfig)
    heartbeat: HeartbeatConfig = Field(default_factory=HeartbeatConfig)
    # How long every receiver of an escalation step may fail a P1/P2 page before the step's
    # `fallback` receivers get it too (a step's own `fallback_after` wins).
    fallback_after: Duration = 120.0
    history: HistoryConfig = Field(default_factory=HistoryConfig)

    @field_validator("external_url")
    @classmethod
    def _external_url_is_http(cls, v: str) -> str:
        v = v.strip()
        if not v:
            return ""
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(
                f"{v!r} is not an http(s) URL without query or fragment (e.g. https://ops.example.com/monitor)"
            )
        return v.rstrip("/")

    @field_validator("listen")
    @classmethod
    def _listen_has_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{v!r} is not host:port (e.g. 127.0.0.1:9820)")
        return v


@dataclass(frozen=True)
class Config:
    """A loaded, valid configuration and what the loader learned on the way."""

    root: RootConfig
    path: Path
    positions: Mapping[tuple[str | int, ...], tuple[int, int]]
    disabled: Mapping[str, str]  # check or receiver name -> why ("set WHMCS_API_URL")
    # Every secret of the file in every form a peer may quote it in (`monitor.secrets.redaction_set`):
    # what the log, API and CLI redactors blank.
    secrets: frozenset[str] = field(default_factory=frozenset)
    skipped_types: Mapping[str, str] = field(default_factory=dict)  # disabled for a missing variable

    def disabled_checks(self) -> list[tuple[str, str, str]]:
        """(name, type, why) of every check that will not run."""
        out: list[tuple[str, str, str]] = [
            (c.name, c.type, self.disabled[c.name]) for c in self.root.checks if c.name in self.disabled
        ]
        out += [(n, t, self.disabled[n]) for n, t in self.skipped_types.items() if t in CHECK_TYPES]
        return out

    def disabled_receivers(self) -> list[tuple[str, str, str]]:
        """(name, type, why) of every receiver that is switched off."""
        out: list[tuple[str, str, str]] = [
            (n, r.type, self.disabled[n]) for n, r in self.root.receivers.items() if n in self.disabled
        ]
        out += [(n, t, self.disabled[n]) for n, t in self.skipped_types.items() if t not in CHECK_TYPES]
        return out

    @property
    def checks(self) -> list[Any]:
        """The checks that will run (enabled ones)."""
        return [c for c in self.root.checks if c.name not in self.disabled]

    def where(self, *path: str | int) -> str:
        """`file:line:col` of a key path, for errors found after loading (rule expressions)."""
        line, col = nearest(self.positions, tuple(path))
        return f"{self.path.name}:{line}:{col}"

    def interval(self, check: Any) -> float:
        return check.interval if check.interval is not None else self.root.defaults.interval

    def timeout(self, check: Any) -> float:
        if check.timeout is not None:
            own: float = check.timeout
            return own
        return min(self.interval(check), self.root.defaults.timeout)
