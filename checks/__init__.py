"""The check types. `build_check(cfg, ctx)` is the one place that knows them all."""

from __future__ import annotations

from typing import Annotated, Any, Union, get_args

from pydantic import Field

from checks import http, postgres, process, redis, whmcs
from checks.logfile import check as logfile
from monitor.model import Check, CheckContext

_MODULES = (redis, postgres, whmcs, http, logfile, process)

CheckConfig = Annotated[
    Union[redis.Config, postgres.Config, whmcs.Config, http.Config, logfile.Config, process.Config],
    Field(discriminator="type"),
]
CHECK_TYPES: tuple[str, ...] = tuple(get_args(m.Config.model_fields["type"].annotation)[0] for m in _MODULES)

# name -> (kind, help) of every series a check may emit; /metrics reads types and help here.
METRICS: dict[str, tuple[str, str]] = {k: v for m in _MODULES for k, v in m.METRICS.items()}
# check type -> (METRICS, LABELS) of its module: what a check of that type exports.
EXPORTS: dict[str, tuple[dict[str, tuple[str, str]], dict[str, tuple[str, ...]]]] = {
    get_args(m.Config.model_fields["type"].annotation)[0]: (m.METRICS, m.LABELS) for m in _MODULES
}
KEY_METRICS: dict[str, tuple[str, ...]] = {
    get_args(m.Config.model_fields["type"].annotation)[0]: m.KEY_METRICS for m in _MODULES
}


def build_check(cfg: Any, ctx: CheckContext) -> Check:
    match cfg.type:
        case "redis":
            return redis.RedisCheck(cfg, ctx)
        case "postgres":
            return postgres.PostgresCheck(cfg, ctx)
        case "whmcs":
            return whmcs.WhmcsCheck(cfg, ctx)
        case "http":
            return http.HttpCheck(cfg, ctx)
        case "logfile":
            return logfile.LogfileCheck(cfg, ctx)
        case "process":
            return process.ProcessCheck(cfg, ctx)
    raise ValueError(f"unknown check type {cfg.type!r}")
