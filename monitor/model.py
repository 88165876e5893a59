"""The shared vocabulary: samples, check errors and the Check protocol.

Every other module imports from here; this module imports nothing of ours.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TextIO, runtime_checkable

from monitor.clock import utc_now

if TYPE_CHECKING:
    from monitor.httpclient import HttpClient


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one series, as `/metrics` shows it and the rules see it."""

    name: str  # "portal_redis_memory_used_bytes"
    labels: Mapping[str, str]
    value: float


class CheckError(Exception):
    """A check found its target unhealthy.

    `reason` is a short metric label (`timeout`, `auth`, `connect`, ...); the message is the
    context for people and names the target. `samples` are the measurements that still make
    sense on failure (an HTTP status code, a response time); the scheduler keeps them.
    """

    def __init__(self, reason: str, message: str, samples: list[Sample] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.samples = samples or []


@runtime_checkable
class Check(Protocol):
    """Anything with a name, a schedule and `collect()` is a check."""

    name: str
    type: str
    interval_s: float
    timeout_s: float

    async def collect(self) -> list[Sample]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Described(Protocol):
    """A check that can say in words what its last run found (the process check's matched PIDs).

    Read right after each `collect()`, success or failure; shown by `once`, the API and the status
    page beside the check's values."""

    def describe(self) -> str: ...


@runtime_checkable
class Watcher(Protocol):
    """A check that can tell at once when its target goes away (EOF on a held connection).

    `watch(wake)` runs for the life of the check and calls `wake()` whenever the next run
    should not wait for the interval; it returns or raises only when cancelled.
    """

    async def watch(self, wake: Callable[[], None]) -> None: ...


@dataclass(slots=True)
class CheckResult:
    """The outcome of one run of one check, as the store keeps it."""

    check: str
    type: str
    up: bool
    samples: list[Sample]
    started_at: float  # wall clock, seconds since the epoch
    duration_s: float
    reason: str = ""
    error: str = ""
    detail: str = ""  # what the run found, in words (`Described`), e.g. the PIDs a process check matched


class StateStore(Protocol):
    """Small durable key/value memory for checks (the replay ids' last change)."""

    def load(self, namespace: str) -> dict[str, Any]: ...

    def save(self, namespace: str, key: str, value: Any) -> None: ...

    def delete(self, namespace: str, key: str) -> None: ...


class MemoryState:
    """A StateStore that forgets on exit: for `once` and tests."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, Any]] = {}

    def load(self, namespace: str) -> dict[str, Any]:
        return dict(self._data.get(namespace, {}))

    def save(self, namespace: str, key: str, value: Any) -> None:
        self._data.setdefault(namespace, {})[key] = value

    def delete(self, namespace: str, key: str) -> None:
        self._data.get(namespace, {}).pop(key, None)


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What a check gets besides its config: its schedule, durable state and the clock."""

    interval_s: float
    timeout_s: float
    state: StateStore
    now: Callable[[], float]  # wall clock, seconds since the epoch
    http: HttpClient | None = None  # the daemon's shared HTTP client; None: the check makes its own
    one_shot: bool = False  # a single run (`once`): a check that follows a stream reads what is there


@dataclass(frozen=True, slots=True)
class ReceiverContext:
    """What a receiver gets besides its name and config: where it runs and the clocks.

    `host` is PagerDuty's default `source`; `external_url` is where this daemon is reached
    (links to incidents, `externalURL`, `generatorURL`); `now` is the wall clock (signature
    timestamps, Alertmanager `endsAt`, `Retry-After` dates), `clock` the monotonic one
    (PagerDuty's rate limit); `http` the daemon's shared HTTP client (None: the receiver makes
    its own and closes it in `aclose`); `stream` where the log receiver also prints.
    """

    host: str = ""
    external_url: str | None = None
    now: Callable[[], datetime] = utc_now
    clock: Callable[[], float] = time.monotonic
    http: HttpClient | None = None
    stream: TextIO | None = None


LOCAL_RECEIVER = ReceiverContext()  # the default: no shared client, the real clocks, no host


# Annotations with a place of their own in every message (and our acknowledged_by, check_error).
_NOT_OTHER = frozenset({"summary", "description", "runbook_url", "runbook", "acknowledged_by", "check_error"})


@dataclass(frozen=True, slots=True)
class Alert:
    """One firing (or pending) instance of a rule: one per matching series."""

    name: str  # the rule's `alert`
    labels: Mapping[str, str]  # series labels + rule labels, incl. alertname and severity
    annotations: Mapping[str, str]  # by name: summary, description, runbook_url, ... (templates filled in)
    severity: str  # P1..P4
    value: float
    vendor: str | None
    fingerprint: str  # stable hash of name + sorted labels: the dedup key
    # Set while the alert's series is missing from its check's answer (the rule's `no_data`
    # policy keeps it firing): since when, and why, as the status page, API and chat show it.
    no_data_since: datetime | None = None
    no_data_why: str = ""

    @property
    def no_data(self) -> str:
        """`no data since 2024-05-03T14:05:09+00:00 (why)`, or '' while the alert has data."""
        if self.no_data_since is None:
            return ""
        since = self.no_data_since.isoformat(timespec="seconds")
        return f"no data since {since} ({self.no_data_why})" if self.no_data_why else f"no data since {since}"

    @property
    def runbook(self) -> str:
        """The runbook link: the `runbook_url` annotation (`runbook` in states saved before it)."""
        return self.annotations.get("runbook_url") or self.annotations.get("runbook", "")

    def other_annotations(self) -> dict[str, str]:
        """The annotations besides summary, description and the runbook link (`annotations:` map)."""
        return {k: v for k, v in self.annotations.items() if k not in _NOT_OTHER}


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert changed state at `at`: pending, firing or resolved."""

    alert: Alert
    state: str  # "pending" | "firing" | "resolved"
    at: datetime
    active_since: datetime
    # Why a resolve is not "the condition is false on present data": "closed: no data for 1h",
    # "closed: rule removed by reload", ... ('' when the fault cleared).
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one receiver about one incident, as the outbox stores and delivers it."""

    id: int  # outbox row id (0 for `notify-test`)
    receiver: str
    kind: str  # "trigger" | "renotify" | "acknowledge" | "resolve" | "test"
    incident_id: int
    dedup_key: str  # the alert's fingerprint: the same on every host and restart
    level: str  # escalation level that sent it: L1..L4
    status: str  # "firing" | "acknowledged" | "resolved"
    alert: Alert
    started_at: datetime  # when the alert fired
    updated_at: datetime  # when this notification was made
    resolved_at: datetime | None = None
    next_update_at: datetime | None = None  # when the receiver will hear again (re-notify cadence)
    # A resolve that is not "fault cleared": "closed: no data for 1h", "closed: rule removed by reload"
    closed_reason: str = ""


class DeliveryError(Exception):
    """A receiver could not deliver. `retry_after` (seconds) when the peer said so;
    `permanent` when retrying cannot help (PagerDuty 400); `throttled` when our own rate
    limit held the message back (not a failure of the receiver: wait, don't count an attempt)."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, permanent: bool = False, throttled: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent
        self.throttled = throttled


class Receiver(Protocol):
    name: str

    async def send(self, notification: Notification) -> None: ...

    async def aclose(self) -> None: ...
