"""The latest result of every check, and the daemon's own series: what /metrics and the rules see.

One source of truth: `/metrics` renders `samples()`, and every check result is also appended to
the `History` the rules read (at the time the run started, as Prometheus stamps a scrape, with
the check's name as the source: a series the check no longer reports gets a staleness marker).
`record_own(t)` appends the daemon's own series (the extra sources) the same way.
A failed check keeps only what its error carried (status code, response time) plus `*_up 0`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from monitor.history import History
from monitor.model import CheckResult, Sample

OWN_SOURCE = "portal_monitor"  # the history source of the daemon's own series

METRICS: dict[str, tuple[str, str]] = {
    "portal_check_up": ("gauge", "1 when the check's last run succeeded (any type)"),
    "portal_check_duration_seconds": ("gauge", "how long the check's last run took"),
    "portal_check_last_run_timestamp_seconds": ("gauge", "when the check last ran (Unix time)"),
    "portal_check_errors_total": ("counter", "failed check runs by reason"),
    "portal_check_runs_total": ("counter", "check runs"),
}
# Labels of the series above besides `check` and the check's `labels` (see checks.LABELS).
LABELS: dict[str, tuple[str, ...]] = {
    "portal_check_up": ("type",),
    "portal_check_duration_seconds": ("type",),
    "portal_check_last_run_timestamp_seconds": ("type",),
    "portal_check_errors_total": ("type", "reason"),
    "portal_check_runs_total": ("type",),
}


class Store:
    """Latest `CheckResult` per check, error counters, and extra sample sources.

    `samples()` is cached until the next `put`, so /metrics scrapes and rule evaluations
    between two check runs cost nothing extra.
    """

    def __init__(self, history: History | None = None) -> None:
        self.history = history if history is not None else History()
        self._results: dict[str, CheckResult] = {}
        self._series: dict[str, list[Sample]] = {}
        self._errors: Counter[tuple[str, str, str]] = Counter()
        self._runs: Counter[tuple[str, str]] = Counter()
        self._sources: list[Callable[[], Iterable[Sample]]] = []
        self._cache: list[Sample] | None = None
        self.version = 0

    def add_source(self, source: Callable[[], Iterable[Sample]]) -> None:
        """Series computed at read time (outbox depth, alerts, loop lag)."""
        self._sources.append(source)

    def put(self, result: CheckResult, extra_labels: Mapping[str, str] | None = None) -> None:
        labels = {"check": result.check, **(extra_labels or {})}
        # Samples without labels of their own share one dict: a thousand checks hold
        # thousands of series, and their label dicts are most of the store's memory.
        out = [Sample(s.name, {**s.labels, **labels} if s.labels else labels, s.value) for s in result.samples]
        up = 1.0 if result.up else 0.0
        typed = {**labels, "type": result.type}
        out.append(Sample(f"portal_{result.type}_up", labels, up))
        out.append(Sample("portal_check_up", typed, up))
        out.append(Sample("portal_check_duration_seconds", typed, result.duration_s))
        out.append(Sample("portal_check_last_run_timestamp_seconds", typed, result.started_at))
        self._runs[(result.check, result.type)] += 1
        if not result.up:
            self._errors[(result.check, result.type, result.reason)] += 1
        self._results[result.check] = result
        self._series[result.check] = out
        self._cache = None
        self.version += 1
        check, typ = result.check, result.type
        counters = [
            Sample("portal_check_errors_total", {"check": c, "type": t, "reason": r}, n)
            for (c, t, r), n in self._errors.items()
            if c == check
        ]
        counters.append(Sample("portal_check_runs_total", {"check": check, "type": typ}, self._runs[(check, typ)]))
        self.history.append(result.started_at, [*out, *counters], source=check)

    def record_own(self, t: float) -> None:
        """Append the daemon's own series (the extra sources) to the history at `t`."""
        self.history.append(t, [s for source in self._sources for s in source()], source=OWN_SOURCE)

    def remove(self, check: str, at: float | None = None) -> None:
        """Forget a check that was removed from the config (its counters go too); its series in
        the history get staleness markers at `at` (default: now), as a vanished target's do."""
        last = self._results.get(check)
        when = time.time() if at is None else at
        if last is not None:
            when = max(when, last.started_at + 0.001)
        self.history.append(when, [], source=check)
        self._results.pop(check, None)
        self._series.pop(check, None)
        for key in [k for k in self._errors if k[0] == check]:
            del self._errors[key]
        for run_key in [k for k in self._runs if k[0] == check]:
            del self._runs[run_key]
        self._cache = None
        self.version += 1

    def result(self, check: str) -> CheckResult | None:
        return self._results.get(check)

    def results(self) -> list[CheckResult]:
        return list(self._results.values())

    def check_samples(self) -> list[Sample]:
        """Samples of the checks and their bookkeeping series (cached)."""
        if self._cache is None:
            out = [s for series in self._series.values() for s in series]
            for (check, typ, reason), n in self._errors.items():
                out.append(Sample("portal_check_errors_total", {"check": check, "type": typ, "reason": reason}, n))
            for (check, typ), n in self._runs.items():
                out.append(Sample("portal_check_runs_total", {"check": check, "type": typ}, n))
            self._cache = out
        return self._cache

    def samples(self) -> list[Sample]:
        """Everything /metrics shows and the rules see."""
        out = list(self.check_samples())
        for source in self._sources:
            out.extend(source())
        return out
