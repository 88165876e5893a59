"""/metrics: one prometheus_client Collector over the samples the daemon already holds.

Nothing is measured at scrape time: a slow target can never stall a scrape. Types and help
texts come from the `METRICS` tables of the modules that emit the series.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import CollectorRegistry

from monitor.model import Sample

MetricInfo = Mapping[str, tuple[str, str]]  # name -> (kind, help)

# The samples of a family by kind: a summary's quantiles carry the family's own name.
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}


class SampleCollector:
    """Turns the flat sample list into metric families at scrape time."""

    def __init__(self, samples: Callable[[], Iterable[Sample]], info: MetricInfo) -> None:
        self._samples = samples
        self._info = dict(info)
        self._family_of: dict[str, tuple[str, str, str]] = {}
        for name, (kind, help_) in self._info.items():
            if kind == "counter":
                self._family_of[name] = (name.removesuffix("_total"), "counter", help_)
            elif kind in _SUFFIXES:
                for suffix in _SUFFIXES[kind]:
                    self._family_of[name + suffix] = (name, kind, help_)
            else:
                self._family_of[name] = (name, kind, help_)

    def family(self, sample_name: str) -> tuple[str, str, str]:
        found = self._family_of.get(sample_name)
        if found is None:
            found = (sample_name, "untyped", sample_name)
            self._family_of[sample_name] = found
        return found

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for s in self._samples():
            name, kind, help_ = self.family(s.name)
            metric = families.get(name)
            if metric is None:
                metric = families[name] = Metric(name, help_, kind)
            metric.add_sample(s.name, dict(s.labels), s.value)
        return families.values()


def make_metrics_handler(samples: Callable[[], Iterable[Sample]], info: MetricInfo) -> Handler:
    """The /metrics handler: the sample list is taken on the event loop (a consistent
    snapshot, cheap: the store caches it), then encoded in a worker thread, so rendering
    thousands of series never holds the loop (and the checks' schedule) for more than the
    interpreter's switch interval. Text or OpenMetrics, as the scraper's Accept asks."""

    async def handler(request: web.Request) -> web.Response:
        snapshot = list(samples())
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SampleCollector(lambda: snapshot, info))
        encoder, content_type = choose_encoder(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        body = await asyncio.to_thread(encoder, registry)
        response = web.Response(body=body, headers={"Content-Type": content_type})
        response.enable_compression()
        return response

    return handler
