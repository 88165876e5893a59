"""The logfile check end to end: generated winston and pino logs on disk, a fake clock.

Window figures are compared with a brute-force computation over the same lines; the fast
path is compared with the general path on tricky lines. No test waits for time to pass.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import sys
import tracemalloc
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pydantic
import pytest

from checks import build_check
from checks.logfile.check import DURATION_BUCKETS, SLICE_BYTES, Config, LogfileCheck
from checks.logfile.parse import JsonParser
from checks.logfile.window import SKETCH_MAX_S, SKETCH_MIN_S, Window, sketch_index
from monitor.config.loader import ConfigError, load_config_text
from monitor.model import CheckContext, CheckError, MemoryState, Sample
from monitor.scheduler import run_check

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(
    tmp_path: Path, clock: Clock | None = None, paths: list[str] | None = None, **options: Any
) -> LogfileCheck:
    cfg = Config.model_validate(
        {
            "name": "bff_logs",
            "type": "logfile",
            "paths": paths or [str(tmp_path / "combined.log")],
            "from": "start",
            **options,
        }
    )
    ctx = CheckContext(interval_s=1.0, timeout_s=10.0, state=MemoryState(), now=clock or Clock())
    return LogfileCheck(cfg, ctx)


def values(samples: Iterable[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """name and labels -> value; a file's path label is left out, to compare two directories."""
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "path"))): s.value for s in samples
    }


def get(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and dict(s.labels) == labels]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


# --- generated logs -------------------------------------------------------------------------


@dataclass
class Rec:
    """What a generated line means, for computing expectations independently."""

    level: str
    status: int | None
    ms: float | None
    ip: str | None
    path: str | None
    t: float  # the line's own time


LEVEL_NUM = {"trace": 10, "debug": 20, "info": 30, "warn": 40, "error": 50, "fatal": 60}


def random_rec(rng: random.Random, t: float) -> Rec:
    if rng.random() < 0.8:
        status = rng.choice([200] * 20 + [201, 304, 400, 401, 403, 404, 500, 502, 503])
        path = rng.choice(["/api/invoices", "/api/auth/login", "/api/services/7", "/health"])
        level = (
            "error" if status >= 500 and rng.random() < 0.7 else rng.choice(["info", "info", "warn", "http"])
        )
        ms = rng.choice([rng.uniform(1, 50), rng.lognormvariate(5, 1.2), float(rng.randint(1, 9000))])
        return Rec(level, status, ms, f"198.51.100.{rng.randint(1, 6)}", path, t)
    level = rng.choice(["info", "debug", "error", "fatal", "warn"])
    ms = rng.uniform(10, 3000) if rng.random() < 0.3 else None
    return Rec(level, None, ms, None, None, t)


def iso(t: float) -> str:
    ms = int(round(t * 1000))
    s, frac = divmod(ms, 1000)
    return datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:03d}Z"


def winston(r: Rec) -> bytes:
    doc: dict[str, Any] = {"level": r.level, "message": "something happened"}
    if r.status is not None:
        doc.update(message=f"GET {r.path} {r.status}", method="GET", url=r.path, statusCode=r.status, ip=r.ip)
    if r.ms is not None:
        doc["duration"] = r.ms
    doc["timestamp"] = iso(r.t)
    return orjson.dumps(doc) + b"\n"


def pino(r: Rec) -> bytes:
    doc: dict[str, Any] = {
        "level": LEVEL_NUM.get(r.level, 30),
        "time": int(round(r.t * 1000)),
        "pid": 7,
        "hostname": "bff-1",
    }
    if r.status is not None:
        doc["req"] = {
            "id": 1,
            "method": "GET",
            "url": r.path,
            "headers": {"host": "portal"},
            "remoteAddress": r.ip,
            "remotePort": 5555,
        }
        doc["res"] = {"statusCode": r.status}
    if r.ms is not None:
        doc["responseTime"] = r.ms
    doc["msg"] = "request completed" if r.status else "event"
    return orjson.dumps(doc) + b"\n"


def pino_level(level: str) -> str:
    return level if level in LEVEL_NUM else "info"  # http has no pino number: written as 30


def write(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


# --- config ----------------------------------------------------------------------------------


def test_config_defaults_and_registration() -> None:
    cfg = load_config_text(
        "checks:\n"
        "  - {name: bff_logs, type: logfile, window: 5m,\n"
        "     paths: [/var/log/bff/combined.log, /var/log/bff/error.log]}\n",
        env={},
    )
    c = cfg.checks[0]
    assert isinstance(c, Config)
    assert (c.from_, c.format, c.preset, c.window, c.time_source) == ("end", "json", "winston", 300.0, "read")
    assert c.max_line_bytes == 65536
    rule = c.auth_rules()[0]
    assert rule.statuses == {401, 403} and rule.path is not None and rule.path.pattern == "/auth/login"
    check = build_check(c, CheckContext(1.0, 1.0, MemoryState(), Clock()))
    assert isinstance(check, LogfileCheck) and check.type == "logfile"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"format": "regex"}, "needs `regex`"),
        ({"trusted_proxies": ["10.0.0.0/8", "nginx"]}, "'nginx' is not an address or a network"),
        ({"format": "regex", "regex": "(?P<nothing>x)"}, "name at least one group"),
        ({"format": "regex", "regex": "(unclosed"}, "is not a regex"),
        ({"regex": r"(?P<status>\d+)"}, "only for format: regex"),
        ({"patterns": {"bad name": "x"}}, "pattern name"),
        ({"patterns": {"every": ".*"}}, "matches the empty string"),
        ({"fields": {"status": ["res", "res.statusCode"]}}, "also read as"),
        ({"fields": {"level": "a..b"}}, "not a dotted path"),
        ({"auth_failure": {}}, "at least one of"),
        ({"window": "500ms"}, "at least 1s"),
        ({"from": "middle"}, "from"),
        ({"patterns": {"x": "a{4294967296}"}}, "a repeat count is too large"),
        ({"patterns": {"x": "(?u)x"}}, "cannot use 'u' flag with a bytes pattern"),  # searched as bytes
        ({"format": "regex", "regex": "(" * 1000 + "(?P<status>x)" + ")" * 1000}, "nested too deeply"),
        ({"auth_failure": {"path": "a{4294967296}"}}, "a repeat count is too large"),
        ({"auth_failure": {"message": "[[a]"}}, "Possible nested set"),
    ],
)
def test_config_errors_say_what_is_wrong(options: dict[str, Any], error: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=error):
        Config.model_validate({"name": "x", "type": "logfile", "paths": ["/x.log"], **options})


def test_config_error_in_a_file_has_its_position() -> None:
    with pytest.raises(ConfigError, match=r"alert_rules.yaml:2:\d+: .*is not a regex"):
        load_config_text(
            "checks:\n  - {name: l, type: logfile, paths: [/x], format: regex, regex: '(x'}\n", env={}
        )


# --- counting generated logs -----------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("preset", ["winston", "pino"])
async def test_generated_log_counts(tmp_path: Path, preset: str, fast: bool) -> None:
    rng = random.Random(7)
    recs = [random_rec(rng, T0 - 100 + i * 0.01) for i in range(20_000)]
    fmt = winston if preset == "winston" else pino
    log = tmp_path / "combined.log"
    write(log, b"".join(map(fmt, recs)))
    check = make(tmp_path, preset=preset, fast_path=fast)
    samples = await check.collect()

    levels = Counter(r.level if preset == "winston" else pino_level(r.level) for r in recs)
    for level in ("fatal", "error", "warn", "info", "debug"):
        assert get(samples, "portal_log_lines_total", level=level) == levels[level]
    assert sum(s.value for s in samples if s.name == "portal_log_lines_total") == len(recs)
    classes = Counter(f"{r.status // 100}xx" for r in recs if r.status)
    for cls in ("1xx", "2xx", "3xx", "4xx", "5xx"):
        assert get(samples, "portal_log_requests_total", status_class=cls) == classes[cls]
    durations = [r.ms / 1000 for r in recs if r.ms is not None]
    assert get(samples, "portal_log_request_duration_seconds_count") == len(durations)
    assert get(samples, "portal_log_request_duration_seconds_sum") == pytest.approx(sum(durations), rel=1e-9)
    for le in DURATION_BUCKETS:
        assert get(samples, "portal_log_request_duration_seconds_bucket", le=str(le)) == sum(
            d <= le for d in durations
        )
    assert get(samples, "portal_log_request_duration_seconds_bucket", le="+Inf") == len(durations)
    assert all(v == 0 for (n, _), v in values(samples).items() if n == "portal_log_parse_errors_total")
    # read time: every line is in the window
    reqs = [r for r in recs if r.status]
    failed = [r for r in reqs if r.status >= 500 or r.level in ("error", "fatal")]
    assert get(samples, "portal_log_error_ratio") == pytest.approx(len(failed) / len(reqs))
    assert get(samples, "portal_log_response_seconds_avg") == pytest.approx(sum(durations) / len(durations))
    logins = [r for r in reqs if r.status in (401, 403) and r.path == "/api/auth/login"]
    assert get(samples, "portal_log_auth_failures") == len(logins)
    assert get(samples, "portal_log_auth_failures_max_per_source") == max(
        Counter(r.ip for r in logins).values()
    )
    assert get(samples, "portal_log_file_up", path=str(log)) == 1
    assert get(samples, "portal_log_unread_bytes", path=str(log)) == 0


# --- parse errors and the fast path ----------------------------------------------------------


GARBAGE = [
    (b"\xff\xfe\x00\x01 binary garbage", "invalid_utf8"),
    (b'{"level":"info","userAgent":"caf\xe9"}', "invalid_utf8"),  # Latin-1 in a field we skip
    (b"GET /api/invoices 200 12ms", "not_json"),
    (b'{"level":"info","message":"cut in the mid', "not_json"),
    (b'{"level":"info"}{"level":"error"}', "not_json"),  # two writes without a newline
    (b'{"level":"info",}', "not_json"),
    (b'{"level":"info","x":"tab\there"}', "not_json"),  # raw control character
    (b'{"level":1e400}', "not_json"),  # out of range for a float
    (b"[1,2,3]", "not_object"),
    (b'"just a string"', "not_object"),
    (b"null", "not_object"),
    (b'{"x":' + b"[" * 2000 + b"]" * 2000 + b"}", "not_json"),  # past msgspec's nesting limit, though skipped
]

TRICKY = [  # valid JSON that a naive scanner would get wrong
    rb'{"level":"error","message":"say \"hi\" {\"level\":\"info\",\"statusCode\":200}",'
    rb'"statusCode":500,"duration":12}',
    b'{"meta":{"level":"fatal","statusCode":200,"duration":1},"level":"info","statusCode":201}',
    b'{"duration":5,"statusCode":404,"timestamp":"2024-05-01T12:00:00.000Z","message":"x","level":"warn"}',
    '{"level":"info","message":"Überweisung – 日本語 🎉","statusCode":200,"duration":7}'.encode(),
    rb'{"level":"\u0065rror","statusCode":503,"duration":1.5}',
    rb'{"lev\u0065l":"fatal"}',
    b'{"level":"info","level":"error","statusCode":200,"statusCode":500}',
    b'{"level":{"a":1},"statusCode":[1,2],"duration":{"x":1}}',
    b'{"level":["error"],"status":{"code":500}}',
    b'{"level":"info","statusCode":"502","duration":"250"}',
    b'{"level":"info","status":500,"responseTime":40}',
    b'{"level":"info","statusCode":null,"status":404,"duration":null,"responseTime":3}',
    b'{"level":30,"statusCode":200}',
    b'{"level":"WARNING","statusCode":999}',
    b'{"level":true,"statusCode":true,"duration":true}',
    b'{"level":"info","duration":-5}',
    b'{"level":"info","statusCode":200.0,"duration":0}',
    b'{"level":"info","message":"an escaped\\nnewline"} ',
    b'  {"level":"debug"}\r',
    b"{}",
    b'{"url":"/api/auth/login","statusCode":401,"ip":"203.0.113.9","level":"warn"}',
    b'{"url":"/api/auth/login","status":"403","remoteAddr":"203.0.113.9","level":"warn"}',
    b'{"url":{"p":"/api/auth/login"},"statusCode":401,"ip":["x"],"level":"warn"}',
]

PINO_TRICKY = [
    b'{"level":50,"res":"oops","responseTime":5}',
    b'{"level":30,"res":null,"req":null}',
    b'{"level":30,"res":{"statusCode":500,"headers":{"x":{"y":1}}},"responseTime":2500}',
    b'{"level":60,"req":{"remoteAddress":"1.2.3.4","url":"/auth/login"},"res":{"statusCode":401}}',
    b'{"level":40,"req":{"remoteAddress":"1.2.3.4","url":"/auth/login"},"res":{"statusCode":"403"}}',
    b'{"level":"30","res":{"statusCode":[1]},"req":{"url":5,"remoteAddress":{"a":1}}}',
    b'{"level":35,"time":"1714564800123","res":{"statusCode":200}}',
    b'{"res":{"res":{"statusCode":500}},"level":20}',
]


async def _ingest_both(tmp_path: Path, data: bytes, **options: Any) -> tuple[list[Sample], list[Sample]]:
    out = []
    for fast in (True, False):
        d = tmp_path / f"fast-{fast}"
        d.mkdir(exist_ok=True)
        write(d / "combined.log", data)
        out.append(
            await make(
                d, fast_path=fast, patterns={"login": "auth/login", "ws": r"\s{2}"}, **options
            ).collect()
        )
    return out[0], out[1]


@pytest.mark.parametrize("preset", ["winston", "pino"])
async def test_fast_path_counts_tricky_lines_like_the_general_path(
    tmp_path: Path, preset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Valid but tricky lines: the fast path takes them (no fallback) and agrees."""
    data = b"".join(line + b"\n" for line in TRICKY + PINO_TRICKY)
    fallbacks = []
    original = JsonParser.parse_general

    def spy(self: JsonParser, chunk: bytes, errors: Counter[str]) -> Any:
        fallbacks.append(len(chunk))
        return original(self, chunk, errors)

    monkeypatch.setattr(JsonParser, "parse_general", spy)
    check = make(tmp_path, preset=preset)
    write(tmp_path / "combined.log", data)
    fast = await check.collect()
    assert fallbacks == []
    monkeypatch.undo()
    d = tmp_path / "general"
    d.mkdir()
    write(d / "combined.log", data)
    general = await make(d, preset=preset, fast_path=False).collect()
    assert values(fast) == values(general)
    assert sum(s.value for s in fast if s.name == "portal_log_lines_total") == len(TRICKY) + len(PINO_TRICKY)


def test_tricky_lines_are_read_at_the_top_level() -> None:
    """What the values are, not only that both paths agree."""
    check = make(Path("/nonexistent"))
    check.ingest(b"".join(line + b"\n" for line in TRICKY), T0)
    s = check.samples(T0)
    lv = {dict(x.labels)["level"]: x.value for x in s if x.name == "portal_log_lines_total"}
    # error: escaped-quotes line, \u0065rror, duplicate keys (last wins)
    assert lv["error"] == 3
    assert lv["fatal"] == 1  # "lev\u0065l"; the nested meta.level is not read
    assert lv["warn"] == 5  # field order, the WARNING alias, the three login lines
    assert lv["other"] == 2  # an object and a list as level
    assert lv["trace"] == 1  # true is a number (1) for Python's Counter, so for us too
    assert lv["unknown"] == 1  # {}
    cls = {dict(x.labels)["status_class"]: x.value for x in s if x.name == "portal_log_requests_total"}
    assert cls == {"1xx": 0, "2xx": 4, "3xx": 0, "4xx": 5, "5xx": 5}  # 999 and true are no statuses
    assert get(s, "portal_log_auth_failures") == 2  # the object url does not match the path rule
    assert get(s, "portal_log_auth_failures_max_per_source") == 2
    # 12, 5, 7, 1.5, "250", 40 and 3 (the alternative field), true (1), 0; not -5, null, objects
    assert get(s, "portal_log_request_duration_seconds_count") == 9


@pytest.mark.parametrize("preset", ["winston", "pino"])
async def test_each_bad_line_is_one_parse_error_and_never_a_line(tmp_path: Path, preset: str) -> None:
    good = TRICKY if preset == "winston" else PINO_TRICKY
    rng = random.Random(3)
    lines = [g + b"\n" for g in good] + [b + b"\n" for b, _ in GARBAGE] + [b"\n", b"   \n", b"\r\n"]
    rng.shuffle(lines)
    fast, general = await _ingest_both(tmp_path, b"".join(lines), preset=preset)
    assert values(fast) == values(general)
    expected = Counter(reason for _, reason in GARBAGE)
    for reason in ("invalid_utf8", "not_json", "not_object"):
        assert get(fast, "portal_log_parse_errors_total", reason=reason) == expected[reason]
    assert sum(s.value for s in fast if s.name == "portal_log_lines_total") == len(good)


async def test_invalid_utf8_in_a_field_we_skip_is_a_parse_error_on_both_paths(tmp_path: Path) -> None:
    """msgspec does not check strings it skips; the fast path must not count such a line."""
    data = b'{"level":"info"}\n{"level":"info","userAgent":"caf\xe9"}\n{"level":"warn"}\n'
    fast, general = await _ingest_both(tmp_path, data)
    assert values(fast) == values(general)
    assert get(fast, "portal_log_parse_errors_total", reason="invalid_utf8") == 1
    assert get(fast, "portal_log_lines_total", level="info") == 1


@pytest.mark.parametrize("preset", ["winston", "pino"])
async def test_fast_and_general_agree_on_generated_logs_with_tricky_lines(
    tmp_path: Path, preset: str
) -> None:
    rng = random.Random(11)
    fmt = winston if preset == "winston" else pino
    pool = TRICKY + PINO_TRICKY
    out = []
    for i in range(30_000):
        r = rng.random()
        if r < 0.01:
            out.append(rng.choice(pool) + b"\n")
        elif r < 0.012:
            out.append(rng.choice(GARBAGE)[0] + b"\n")
        else:
            out.append(fmt(random_rec(rng, T0 + i * 0.01)))
    for time_source in ("read", "line"):
        d = tmp_path / time_source
        d.mkdir()
        fast, general = await _ingest_both(d, b"".join(out), preset=preset, time_source=time_source)
        assert values(fast) == values(general)


def bff_line(rng: random.Random, i: int, names: tuple[str, str]) -> bytes:
    """A line as the BFF's winston request logger writes it (winston's key order, a
    fractional responseTime from process.hrtime), with the given status and duration names;
    about one line in eight an application event without either."""
    status_name, duration_name = names
    t = iso(T0 + i * 0.001)
    if rng.random() < 0.125:
        return orjson.dumps({"level": "info", "message": "Platform Event received", "timestamp": t}) + b"\n"
    status = rng.choice([200] * 20 + [201, 304, 401, 403, 404, 500, 503])
    path = rng.choice(["/api/auth/login", "/api/invoices", "/health"])
    doc = {
        "ip": f"10.0.0.1, 203.0.113.{rng.randint(1, 9)}",
        "level": "error" if status >= 500 else "warn" if status >= 400 else "info",
        "message": f"POST {path} {status}",
        "method": "POST",
        duration_name: round(rng.lognormvariate(4.5, 1.0), 3),
        status_name: status,
        "timestamp": t,
        "url": path,
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0",
    }
    return orjson.dumps(doc) + b"\n"


def pino_http_line(rng: random.Random, i: int) -> bytes:
    """pino-http's default request line (nested req/res, X-Forwarded-For in req.headers)."""
    status = rng.choice([200] * 20 + [401, 404, 500])
    doc = {
        "level": 50 if status >= 500 else 40 if status >= 400 else 30,
        "time": int(T0 * 1000) + i,
        "pid": 7,
        "hostname": "vm",
        "req": {
            "id": i,
            "method": "POST",
            "url": rng.choice(["/api/auth/login", "/health"]),
            "headers": {"host": "portal", "x-forwarded-for": f"203.0.113.{rng.randint(1, 9)}"},
            "remoteAddress": "::ffff:127.0.0.1",
            "remotePort": 40000,
        },
        "res": {"statusCode": status, "headers": {}},
        "responseTime": rng.choice([rng.randint(1, 900), round(rng.uniform(1, 900), 3)]),
        "msg": "request completed",
    }
    return orjson.dumps(doc) + b"\n"


@pytest.mark.parametrize("time_source", ["read", "line"])
async def test_fast_path_on_real_logger_shapes_counts_like_the_general_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, time_source: str
) -> None:
    """The BFF's request-logger lines in each family of names, in runs long enough for the
    fast path to specialise to one family and then meet another (and mixed line by line),
    and pino-http's lines: every figure equals the general path's, without a fallback."""
    monkeypatch.setattr(sys.modules[LogfileCheck.__module__], "PIECE_BYTES", 4096)  # many pieces: many switches
    monkeypatch.setattr(sys.modules[JsonParser.__module__], "STRICT_REST", 2)
    tally = sys.modules["checks.logfile.tally"]
    monkeypatch.setattr(tally, "DURATIONS_DISTINCT", 50)  # fractional: classified sorted soon
    monkeypatch.setattr(tally, "DURATIONS_SORTED", 700)
    rng = random.Random(14)
    families = [("status", "responseTime"), ("statusCode", "duration"), ("status", "response_time"), ("status", "ms")]
    runs = [families[0], families[1], families[0], families[2], families[3], None, families[0]]
    out, i = [], 0
    for names in runs:
        for _ in range(600):
            out.append(bff_line(rng, i, names or rng.choice(families)))
            i += 1
    fallbacks = []
    original = JsonParser.parse_general

    def spy(self: JsonParser, chunk: bytes, errors: Counter[str]) -> Any:
        fallbacks.append(len(chunk))
        return original(self, chunk, errors)

    for preset, data in (("winston", b"".join(out)), ("pino", b"".join(pino_http_line(rng, j) for j in range(4000)))):
        d = tmp_path / preset
        d.mkdir()
        write(d / "combined.log", data)
        monkeypatch.setattr(JsonParser, "parse_general", spy)
        check = make(d, preset=preset, time_source=time_source)
        fast = await check.collect()
        monkeypatch.setattr(JsonParser, "parse_general", original)
        assert fallbacks == []
        general = await make(d, preset=preset, fast_path=False, time_source=time_source).collect()
        # every count equal; a sum of fractional durations may differ in its last bits (tally)
        assert values(fast) == pytest.approx(values(general), rel=1e-12, abs=0)
        assert sum(s.value for s in fast if s.name == "portal_log_lines_total") == data.count(b"\n")
        if preset == "winston" and time_source == "read":
            assert check._parser._special_decoders, "never specialised to one family"  # type: ignore[union-attr]
            assert get(fast, "portal_log_request_duration_seconds_count") == data.count(b'"status')


async def test_values_int_and_float_refuse_are_no_value_not_a_crash(tmp_path: Path) -> None:
    """Each such line is one line, at level `other` (or its own), with no status or duration;
    a login failure whose ip is a number beyond float range still counts."""
    data = ('{"level":"²","statusCode":"²","duration":"٣"}\n'.encode()  # isdigit() says yes, int() no
            + b'{"level":"' + b"9" * 4301 + b'","statusCode":"' + b"9" * 4301 + b'"}\n'  # int()'s limit
            + b'{"level":"info","duration":1' + b"0" * 400 + b',"timestamp":1' + b"0" * 400 + b"}\n"
            + b'{"url":"/auth/login","statusCode":401,"ip":1e999,"level":"warn"}\n'  # only details hold it
            + b'{"x":' + b"[" * 2000 + b"]" * 2000 + b"}\n"  # msgspec's nesting limit: not_json
            + b'{"level":"error","statusCode":500}\n')
    for time_source in ("read", "line"):
        d = tmp_path / time_source
        d.mkdir()
        fast, general = await _ingest_both(d, data, time_source=time_source)
        assert values(fast) == values(general)
        assert get(fast, "portal_log_lines_total", level="other") == 2
        assert get(fast, "portal_log_lines_total", level="info") == 1
        assert get(fast, "portal_log_lines_total", level="warn") == 1
        assert get(fast, "portal_log_lines_total", level="error") == 1
        assert get(fast, "portal_log_parse_errors_total", reason="not_json") == 1
        assert get(fast, "portal_log_request_duration_seconds_count") == 0
        assert get(fast, "portal_log_auth_failures") == 1


async def test_pattern_lines_count_like_grep(tmp_path: Path) -> None:
    log = tmp_path / "combined.log"
    write(
        log,
        b'{"level":"info","message":"Platform Event received"}\n'
        b'{"level":"error","message":"WHMCS API error: WHMCS said no"}\n'
        b"WHMCS plain text line, not JSON\n"
        b'{"level":"info","message":"nothing"}\n',
    )
    patterns = {"platform_event": "Platform Event", "whmcs": "WHMCS", "err": 'error.*no"}$', "start": "^WHMCS"}
    s = await make(tmp_path, patterns=patterns).collect()
    assert get(s, "portal_log_pattern_lines_total", pattern="platform_event") == 1
    assert get(s, "portal_log_pattern_lines_total", pattern="whmcs") == 2  # twice in one line counts once
    assert get(s, "portal_log_pattern_lines_total", pattern="err") == 1  # `$` is the end of a line
    assert get(s, "portal_log_pattern_lines_total", pattern="start") == 1  # `^` the start of one
    assert get(s, "portal_log_parse_errors_total", reason="not_json") == 1


async def test_regex_format(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    write(
        log,
        b"203.0.113.9 - [error] POST /auth/login 401 12ms\n"
        b"203.0.113.9 - [info] GET /api/x 200 2500ms\n"
        b"this line does not match\n"
        b"\xff\xfe\n"
        b"10.0.0.1 - [info] GET /api/y 503 4ms\n",
    )
    s = await make(
        tmp_path,
        paths=[str(log)],
        format="regex",
        regex=r"^(?P<ip>\S+) - \[(?P<level>\w+)\] \w+ (?P<path>\S+) (?P<status>\d+) (?P<duration>\d+)ms$",
        auth_failure={"status": [401], "path": "^/auth/"},
    ).collect()
    assert get(s, "portal_log_lines_total", level="info") == 2
    assert get(s, "portal_log_lines_total", level="error") == 1
    assert get(s, "portal_log_parse_errors_total", reason="no_match") == 1
    assert get(s, "portal_log_parse_errors_total", reason="invalid_utf8") == 1
    assert get(s, "portal_log_error_ratio") == pytest.approx(2 / 3)
    assert get(s, "portal_log_response_seconds_avg") == pytest.approx((0.012 + 2.5 + 0.004) / 3)
    assert get(s, "portal_log_auth_failures_max_per_source") == 1


async def test_auth_failure_by_message(tmp_path: Path) -> None:
    write(
        tmp_path / "combined.log",
        b'{"level":"warn","message":"Login failed for user a@b.c","ip":"203.0.113.5"}\n' * 4
        + b'{"level":"warn","message":"Login failed for user x@y.z","ip":"203.0.113.6"}\n'
        + b'{"level":"info","message":"Login ok","ip":"203.0.113.5"}\n',
    )
    s = await make(tmp_path, auth_failure=[{"message": "^Login failed"}, {"status": [401]}]).collect()
    assert get(s, "portal_log_auth_failures") == 5
    assert get(s, "portal_log_auth_failures_max_per_source") == 4
    # whom to block: the clients themselves, with their counts
    assert get(s, "portal_log_auth_failures_by_source", source="203.0.113.5") == 4
    assert get(s, "portal_log_auth_failures_by_source", source="203.0.113.6") == 1
    s = await make(tmp_path, auth_failure=None).collect()
    assert get(s, "portal_log_auth_failures") == 0


# --- the window against brute force -----------------------------------------------------------


@dataclass
class Seen:
    rec: Rec
    bucket: int  # the window bucket it was placed in


def brute_force(
    seen: list[Seen], now: float, window_s: float, since: float, auth_path: str = "/api/auth/login"
) -> dict[str, float | None]:
    """The window's figures computed from scratch; None where the series must be absent
    (no line in the window: no data; no duration: no average)."""
    n = int(window_s)  # 1 s buckets for windows up to 600 s
    current = math.floor(now)
    live = [x.rec for x in seen if x.bucket > current - n]
    reqs = [r for r in live if r.status is not None]
    errors = [r for r in live if r.level in ("error", "fatal") or (r.status or 0) >= 500]
    failed = [r for r in reqs if r.level in ("error", "fatal") or r.status >= 500]
    durations = sorted(r.ms / 1000 for r in live if r.ms is not None)
    logins = [r for r in reqs if r.status in (401, 403) and auth_path in (r.path or "")]
    span = min(window_s, max(1.0, now - since))
    if not live:
        return {"portal_log_window_lines": 0.0, "portal_log_error_ratio": None, "portal_log_auth_failures": None}
    return {
        "portal_log_window_lines": float(len(live)),
        "portal_log_error_ratio": len(failed) / len(reqs) if reqs else len(errors) / len(live),
        "portal_log_response_seconds_avg": sum(durations) / len(durations) if durations else None,
        "p95": durations[max(1, math.ceil(0.95 * len(durations))) - 1] if durations else None,
        "portal_log_requests_per_second": len(reqs) / span,
        "portal_log_auth_failures": float(len(logins)),
        "portal_log_auth_failures_max_per_source": float(
            max(Counter(r.ip for r in logins).values(), default=0)
        ),
    }


def check_against(samples: list[Sample], want: dict[str, float | None]) -> None:
    for name, value in want.items():
        if value is None:
            absent = "portal_log_response_seconds_p95" if name == "p95" else name
            assert not [s for s in samples if s.name == absent], f"{absent} without data"
        elif name == "p95":
            got = get(samples, "portal_log_response_seconds_p95")
            assert got == pytest.approx(value, rel=0.0201), "p95 beyond the sketch's 2% bound"
        else:
            assert get(samples, name) == pytest.approx(value, rel=1e-9, abs=1e-12), name


@pytest.mark.parametrize("seed", range(4))
async def test_window_matches_brute_force_with_read_time(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock(T0 + rng.random())
    check = make(tmp_path, clock, window="60s")
    start = clock.t
    seen: list[Seen] = []
    log = tmp_path / "combined.log"
    log.touch()
    for _ in range(80):
        clock.t += rng.choice([0.0, 0.3, 1.0, 2.7, 9.0, 40.0, 75.0])
        recs = [random_rec(rng, 0) for _ in range(rng.randint(0, 60))]
        write(log, b"".join(map(winston, recs)))
        samples = await check.collect()
        seen += [Seen(r, math.floor(clock.t)) for r in recs]
        check_against(samples, brute_force(seen, clock.t, 60.0, start))


@pytest.mark.parametrize("preset", ["winston", "pino"])
@pytest.mark.parametrize("seed", range(3))
async def test_window_matches_brute_force_with_line_time(tmp_path: Path, seed: int, preset: str) -> None:
    """Lines carry their own times: some late, some older than the window, some from the future."""
    rng = random.Random(100 + seed)
    clock = Clock(T0 + 0.5)
    check = make(tmp_path, clock, window="2m", time_source="line", preset=preset)
    since = clock.t
    fmt = winston if preset == "winston" else pino
    seen: list[Seen] = []
    log = tmp_path / "combined.log"
    log.touch()
    for _ in range(60):
        clock.t += rng.choice([0.0, 0.5, 1.0, 3.0, 20.0, 130.0])
        current = math.floor(clock.t)
        recs = [random_rec(rng, clock.t - rng.uniform(-30, 200)) for _ in range(rng.randint(0, 50))]
        write(log, b"".join(map(fmt, recs)))
        samples = await check.collect()
        for r in recs:
            second = math.floor(round(r.t * 1000) / 1000)
            bucket = min(second, current)
            if bucket > current - 120:  # accepted when read
                seen.append(Seen(r, bucket))
                since = min(since, second)
        if preset == "pino":
            for x in seen:
                x.rec.level = pino_level(x.rec.level)
        check_against(samples, brute_force(seen, clock.t, 120.0, since))


def test_p95_error_bound_over_many_distributions() -> None:
    rng = random.Random(5)
    for trial in range(40):
        w = Window(300.0, start=T0)
        xs = [
            min(SKETCH_MAX_S, max(SKETCH_MIN_S, rng.lognormvariate(rng.uniform(-6, 3), rng.uniform(0.1, 3))))
            for _ in range(rng.randint(1, 3000))
        ]
        for x in xs:
            w.add_durations(T0, 1, x, {sketch_index(x): 1})
        xs.sort()
        true = xs[max(1, math.ceil(0.95 * len(xs))) - 1]
        assert abs(w.quantile(0.95) - true) / true <= 0.0201, (trial, true, w.quantile(0.95))


def test_window_memory_is_bounded_under_a_source_spray() -> None:
    """10,000 distinct failing IPs in one second, one IP hammering among them: it stays on top."""
    w = Window(300.0, max_sources=50, start=T0)
    rng = random.Random(1)
    for i in range(10_000):
        w.add_auth(T0, f"10.0.{i // 256}.{i % 256}", 1)
        if rng.random() < 0.05:
            w.add_auth(T0, "203.0.113.66", 1)
    assert all(len(b.sources) <= 50 for b in w._ring)
    assert len(w._sources_total) <= 50 * w.n_buckets
    stats = w.stats(T0)
    assert stats.auth_failures >= 10_000
    hammer = w._sources_total["203.0.113.66"]
    assert stats.auth_failures_max_per_source == hammer  # over-estimated at most by the bucket minimum
    assert hammer >= 400


# --- alerts' view of a burst -------------------------------------------------------------------


async def test_burst_of_errors_slow_responses_and_login_failures(tmp_path: Path) -> None:
    """What HighErrorRate (> 1%), SlowResponses (avg > 2 s) and LoginFailureSpike see."""
    clock = Clock()
    check = make(tmp_path, clock)
    log = tmp_path / "combined.log"
    rng = random.Random(9)
    normal = [
        Rec("info", 200, rng.uniform(20, 200), f"198.51.100.{rng.randint(1, 200)}", "/api/invoices", 0)
        for _ in range(500)
    ]
    write(log, b"".join(map(winston, normal)))
    s = await check.collect()
    assert get(s, "portal_log_error_ratio") == 0
    assert get(s, "portal_log_response_seconds_avg") < 0.3
    assert get(s, "portal_log_auth_failures_max_per_source") == 0

    clock.t += 30
    burst = (
        [Rec("error", 503, 4500.0, "198.51.100.7", "/api/services/1", 0)] * 300
        + [Rec("info", 200, 3200.0, "198.51.100.8", "/api/invoices", 0)] * 1500
        + [Rec("warn", 401, 40.0, "203.0.113.66", "/api/auth/login", 0)] * 250
        + [Rec("warn", 401, 40.0, f"198.51.100.{i}", "/api/auth/login", 0) for i in range(20)]
    )
    write(log, b"".join(map(winston, burst)))
    s = await check.collect()
    assert get(s, "portal_log_error_ratio") > 0.01
    assert get(s, "portal_log_response_seconds_avg") > 2.0
    assert get(s, "portal_log_response_seconds_p95") > 2.0
    assert get(s, "portal_log_auth_failures") == 270
    assert get(s, "portal_log_auth_failures_max_per_source") == 250

    clock.t += 301  # the window moves past the burst: the alerts resolve (no data)
    s = await check.collect()
    assert get(s, "portal_log_window_lines") == 0
    for gone in ("error_ratio", "response_seconds_avg", "response_seconds_p95", "auth_failures_max_per_source"):
        assert not [x for x in s if x.name == f"portal_log_{gone}"], f"{gone} without a line in the window"
    assert get(s, "portal_log_lines_total", level="error") == 300  # counters keep counting


async def test_counters_never_go_down_across_rotation_and_truncation(tmp_path: Path) -> None:
    clock = Clock()
    check = make(tmp_path, clock)
    log = tmp_path / "combined.log"
    rng = random.Random(2)
    previous: dict[Any, float] = {}
    for step in range(30):
        write(log, b"".join(winston(random_rec(rng, 0)) for _ in range(rng.randint(0, 200))))
        if step % 7 == 3:
            os.rename(log, tmp_path / f"combined.log.{step}")
            write(log, b"".join(winston(random_rec(rng, 0)) for _ in range(5)))
        if step % 11 == 5:
            with open(log, "r+b") as fh:
                fh.truncate(0)
        if step % 5 == 0:
            write(log, b"garbage line\n")
        clock.t += rng.choice([0.5, 5, 100, 400])
        now = values(await check.collect())
        for key, value in now.items():
            if key[0].endswith(("_total", "_bucket", "_count", "_sum")):
                assert value >= previous.get(key, 0.0), key
        previous = now


# --- files ---------------------------------------------------------------------------------------


async def test_missing_file_is_down_until_it_appears(tmp_path: Path) -> None:
    combined, error = tmp_path / "combined.log", tmp_path / "error.log"
    write(combined, b"")
    cfg = Config.model_validate({"name": "bff_logs", "type": "logfile", "paths": [str(combined), str(error)]})
    check = LogfileCheck(cfg, CheckContext(1.0, 1.0, MemoryState(), Clock()))
    s = await check.collect()
    assert get(s, "portal_log_file_up", path=str(combined)) == 1
    assert get(s, "portal_log_file_up", path=str(error)) == 0
    write(error, b'{"level":"error","message":"WHMCS API error"}\n')
    s = await check.collect()
    assert get(s, "portal_log_file_up", path=str(error)) == 1
    assert get(s, "portal_log_lines_total", level="error") == 1  # appeared later: read from its start


async def test_no_readable_file_fails_the_check_with_its_samples(tmp_path: Path) -> None:
    missing = tmp_path / "nope.log"
    check = make(tmp_path, paths=[str(missing)])
    with pytest.raises(CheckError) as e:
        await check.collect()
    assert e.value.reason == "no_file"
    assert str(missing) in str(e.value)
    assert get(e.value.samples, "portal_log_file_up", path=str(missing)) == 0
    result = await run_check(check)
    assert not result.up and result.reason == "no_file"


async def test_oversize_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    big = b'{"level":"error","message":"' + b"x" * 5000 + b'"}\n'
    write(tmp_path / "combined.log", b'{"level":"info"}\n' + big + b'{"level":"warn"}\n')
    s = await make(tmp_path, max_line_bytes=1024).collect()
    assert get(s, "portal_log_oversize_lines_total") == 1
    assert get(s, "portal_log_lines_total", level="error") == 0
    assert (
        get(s, "portal_log_lines_total", level="info") == 1
        and get(s, "portal_log_lines_total", level="warn") == 1
    )


async def test_a_backlog_is_read_in_slices_that_let_the_loop_run(tmp_path: Path) -> None:
    line = winston(Rec("info", 200, 12.0, "198.51.100.1", "/api/x", T0))
    n = (8 * SLICE_BYTES) // len(line)
    write(tmp_path / "combined.log", line * n)
    check = make(tmp_path)
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    s = await check.collect()
    done.set()
    await task
    assert get(s, "portal_log_lines_total", level="info") == n
    assert ticks >= 8  # the other task ran between slices


async def test_a_backlog_beyond_the_time_budget_waits_for_the_next_run(tmp_path: Path) -> None:
    line = winston(Rec("info", 200, 12.0, "198.51.100.1", "/api/x", T0))
    n = (5 * SLICE_BYTES) // len(line) + 1
    write(tmp_path / "combined.log", line * n)
    ticks = iter(range(10**6))  # a run-time clock that moves 1 s each time it is read
    cfg = Config.model_validate(
        {"name": "l", "type": "logfile", "paths": [str(tmp_path / "combined.log")], "from": "start"}
    )
    check = LogfileCheck(
        cfg, CheckContext(1.0, 2.0, MemoryState(), Clock()), clock=lambda: float(next(ticks))
    )
    s = await check.collect()
    first = get(s, "portal_log_lines_total", level="info")
    assert 0 < first < n
    assert get(s, "portal_log_unread_bytes", path=str(tmp_path / "combined.log")) > 0
    for _ in range(10):
        s = await check.collect()
    assert get(s, "portal_log_lines_total", level="info") == n
    assert get(s, "portal_log_unread_bytes", path=str(tmp_path / "combined.log")) == 0


async def test_runs_under_the_scheduler(tmp_path: Path) -> None:
    write(tmp_path / "combined.log", b'{"level":"info","statusCode":200,"duration":5}\n')
    result = await run_check(make(tmp_path))
    assert result.up, result.error
    assert get(result.samples, "portal_log_requests_total", status_class="2xx") == 1


def test_memory_does_not_grow_with_the_backlog(tmp_path: Path) -> None:
    """Reading a 40 MB backlog holds about one 1 MiB slice and its records at a time.

    A plain test with its own event loop: nothing else allocates while memory is traced."""
    rng = random.Random(8)
    block = b"".join(winston(random_rec(rng, T0)) for _ in range(10_000))
    log = tmp_path / "combined.log"
    log.touch()
    while log.stat().st_size < 40 << 20:
        write(log, block)
    check = make(tmp_path)

    async def read_all() -> list[Sample]:
        # A run stops after half its timeout and leaves the rest for the next one (slow when
        # traced on a busy machine): run until the backlog is gone, at most 20 runs.
        for _ in range(20):
            s = await check.collect()
            if get(s, "portal_log_unread_bytes", path=str(log)) == 0:
                break
        return s

    tracemalloc.start()
    try:
        s = asyncio.run(read_all())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert get(s, "portal_log_unread_bytes", path=str(log)) == 0
    assert peak < 12 << 20, f"peak {peak / 2**20:.1f} MiB while reading {log.stat().st_size / 2**20:.0f} MiB"


async def test_min_requests_keeps_a_quiet_window_from_reporting_an_error_ratio(tmp_path: Path) -> None:
    """Two failed requests among forty at night are not a 5% error rate to page on."""
    log = tmp_path / "combined.log"
    night = [Rec("info", 200, 20.0, "10.0.0.1", "/api/invoices", T0) for _ in range(38)]
    night += [Rec("error", 500, 20.0, "10.0.0.1", "/api/invoices", T0) for _ in range(2)]
    write(log, b"".join(winston(r) for r in night))
    quiet = make(tmp_path, min_requests=50)
    samples = await quiet.collect()
    assert not [s for s in samples if s.name == "portal_log_error_ratio"]
    assert get(samples, "portal_log_requests_total", status_class="5xx") == 2  # counted all the same
    assert get(await make(tmp_path).collect(), "portal_log_error_ratio") == 0.05  # default: no minimum
    write(log, b"".join(winston(r) for r in night[:10]))  # 50 requests now
    assert get(await quiet.collect(), "portal_log_error_ratio") == 0.04


# --- following as data arrives, `once` ------------------------------------------------------


def make_once(tmp_path: Path, clock: Clock, **options: Any) -> LogfileCheck:
    cfg = Config.model_validate(
        {"name": "bff_logs", "type": "logfile", "paths": [str(tmp_path / "combined.log")], **options}
    )
    ctx = CheckContext(interval_s=1.0, timeout_s=10.0, state=MemoryState(), now=clock, one_shot=True)
    return LogfileCheck(cfg, ctx)


@pytest.mark.parametrize("preset", ["winston", "pino"])
async def test_once_reads_the_last_window_of_the_file_by_its_lines_times(tmp_path: Path, preset: str) -> None:
    """`from: end` (the shipped setting) does not apply to a single run: it reads back from
    the end until the lines leave the window, and counts exactly the lines inside it."""
    rng = random.Random(7)
    fmt = winston if preset == "winston" else pino
    recs = [random_rec(rng, T0 + i * 0.05) for i in range(60_000)]  # 3000 s of lines, 1.5 MB+
    (tmp_path / "combined.log").write_bytes(b"".join(map(fmt, recs)))
    clock = Clock(T0 + 3000.0)
    check = make_once(tmp_path, clock, preset=preset, window="5m")
    samples = await check.collect()
    inside = [r for r in recs if r.t >= clock.t - 300]
    assert get(samples, "portal_log_window_lines") == len(inside)
    assert sum(s.value for s in samples if s.name == "portal_log_lines_total") == len(inside)
    reqs = [r for r in inside if r.status is not None]
    failed = [r for r in reqs if r.level in ("error", "fatal") or (r.status or 0) >= 500]
    assert get(samples, "portal_log_error_ratio") == pytest.approx(len(failed) / len(reqs))
    assert get(samples, "portal_log_requests_per_second") == pytest.approx(len(reqs) / 300)


async def test_once_reads_the_whole_file_when_its_lines_have_no_time(tmp_path: Path) -> None:
    lines = b"".join(orjson.dumps({"level": "error", "statusCode": 500}) + b"\n" for _ in range(5000))
    (tmp_path / "combined.log").write_bytes(lines)
    samples = await make_once(tmp_path, Clock()).collect()
    assert get(samples, "portal_log_window_lines") == 5000
    assert get(samples, "portal_log_error_ratio") == 1.0


async def test_once_with_no_line_in_the_window_is_no_data_not_up_with_zero_errors(tmp_path: Path) -> None:
    old = [Rec("error", 500, 12.5, None, "/x", T0 - 4000 + i) for i in range(100)]
    (tmp_path / "combined.log").write_bytes(b"".join(map(winston, old)))
    result = await run_check(make_once(tmp_path, Clock()))
    assert not result.up and result.reason == "no_data"
    assert "no log line in the last 300s" in result.error
    assert get(result.samples, "portal_log_window_lines") == 0
    assert not [s for s in result.samples if s.name in ("portal_log_error_ratio", "portal_log_response_seconds_avg")]
    (tmp_path / "combined.log").write_bytes(b"")
    result = await run_check(make_once(tmp_path, Clock()))
    assert not result.up and result.reason == "no_data"


async def test_watch_reads_lines_as_they_are_written_between_runs(tmp_path: Path) -> None:
    """The reader follows the writer (inotify), not the interval: lines written and then
    destroyed by a copytruncate before the next run were already counted."""
    log = tmp_path / "combined.log"
    log.write_bytes(b"")
    clock = Clock()
    check = make(tmp_path, clock)
    task = asyncio.create_task(check.watch(lambda: None))
    try:
        await asyncio.sleep(0)
        recs = [Rec("info", 200, 3.25, "198.51.100.1", "/a", T0)] * 40 + [Rec("error", 503, 40.5, None, "/b", T0)] * 2
        write(log, b"".join(map(winston, recs)))
        async with asyncio.timeout(10):  # waits on the condition: the follower read them
            while (
                check._followers[0].unread_bytes or check._followers[0]._cur is None or not check._followers[0]._cur.pos
            ):
                await asyncio.sleep(0.005)
        with open(log, "r+b") as fh:  # truncated without a copy: only the follower saved them
            fh.truncate(0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    s = await check.collect()
    assert get(s, "portal_log_requests_total", status_class="2xx") == 40
    assert get(s, "portal_log_requests_total", status_class="5xx") == 2
    assert get(s, "portal_logfile_rotations_total", path=str(log), kind="truncate") == 1
    assert get(s, "portal_logfile_lost_bytes_total", path=str(log)) == 0


async def test_copytruncate_under_the_check_loses_nothing_and_says_so(tmp_path: Path) -> None:
    log = tmp_path / "combined.log"
    clock = Clock()
    check = make(tmp_path, clock)
    write(log, b"".join(winston(Rec("info", 200, 1.5, None, "/a", T0)) for _ in range(100)))
    await check.collect()
    write(log, b"".join(winston(Rec("error", 500, 1.5, None, "/a", T0)) for _ in range(30)))  # unread
    (tmp_path / "combined.log.1").write_bytes(log.read_bytes())
    with open(log, "r+b") as fh:
        fh.truncate(0)
    write(log, b"".join(winston(Rec("warn", 404, 1.5, None, "/a", T0)) for _ in range(10)))
    s = await check.collect()
    assert get(s, "portal_log_requests_total", status_class="2xx") == 100
    assert get(s, "portal_log_requests_total", status_class="5xx") == 30
    assert get(s, "portal_log_requests_total", status_class="4xx") == 10
    assert get(s, "portal_logfile_rotations_total", path=str(log), kind="copytruncate") == 1


# --- the client behind a reverse proxy ------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "forwarded", "trusted", "client"),
    [
        ("127.0.0.1", "198.51.100.7", ["127.0.0.0/8"], "198.51.100.7"),
        ("::ffff:127.0.0.1", "198.51.100.7", ["127.0.0.0/8"], "198.51.100.7"),  # Node's IPv4-mapped form
        ("127.0.0.1", "6.6.6.6, 198.51.100.7", ["127.0.0.0/8"], "198.51.100.7"),  # the client wrote 6.6.6.6
        ("127.0.0.1", "198.51.100.7, 10.0.0.2", ["127.0.0.0/8", "10.0.0.0/8"], "198.51.100.7"),
        ("127.0.0.1", "198.51.100.7, 10.0.0.2", ["127.0.0.0/8"], "10.0.0.2"),  # 10.0.0.2 is not trusted
        ("198.51.100.9", "6.6.6.6", ["127.0.0.0/8"], "198.51.100.9"),  # not from our proxy: header ignored
        ("198.51.100.7, 127.0.0.1", None, ["127.0.0.0/8"], "198.51.100.7"),  # winston `ip` as the list
        ("127.0.0.1", None, ["127.0.0.0/8"], "127.0.0.1"),  # no header: the proxy itself
        ("127.0.0.1", "[2001:db8::1]:443", ["127.0.0.0/8"], "2001:db8::1"),
        ("127.0.0.1", "203.0.113.5:51000", ["127.0.0.0/8"], "203.0.113.5"),
        ("127.0.0.1", "unknown", ["127.0.0.0/8"], "unknown"),
        (None, None, ["127.0.0.0/8"], None),
    ],
)
def test_client_address_skips_trusted_proxies_from_the_nearest_hop(
    ip: str | None, forwarded: str | None, trusted: list[str], client: str | None
) -> None:
    from checks.logfile.normalize import client_address

    nets = Config.model_validate(
        {"name": "l", "type": "logfile", "paths": ["/x"], "trusted_proxies": trusted}
    ).trusted_networks()
    assert client_address(ip, forwarded, nets) == client


@pytest.mark.parametrize("preset", ["winston", "pino"])
async def test_login_failures_behind_the_proxy_are_counted_per_real_client(tmp_path: Path, preset: str) -> None:
    """Behind nginx every request comes from 127.0.0.1: the per-source maximum is taken from
    X-Forwarded-For (pino-http's req.headers, the winston request logger's forwardedFor)."""
    rng = random.Random(3)
    clients = [f"198.51.100.{i}" for i in range(1, 11)]
    sent = [rng.choice(clients) for _ in range(300)]
    lines = []
    for i, c in enumerate(sent):
        if preset == "pino":
            doc: dict[str, Any] = {
                "level": 40,
                "time": int(T0 * 1000) + i,
                "req": {
                    "url": "/api/auth/login",
                    "headers": {"host": "portal", "x-forwarded-for": f"{c}"},
                    "remoteAddress": "::ffff:127.0.0.1",
                },
                "res": {"statusCode": 401},
                "responseTime": 12.5,
            }
        else:
            doc = {"level": "warn", "status": 401, "url": "/api/auth/login", "ip": "127.0.0.1", "forwardedFor": c}
        lines.append(orjson.dumps(doc) + b"\n")
    write(tmp_path / "combined.log", b"".join(lines))
    s = await make(tmp_path, preset=preset).collect()
    assert get(s, "portal_log_auth_failures") == 300
    assert get(s, "portal_log_auth_failures_max_per_source") == max(Counter(sent).values())
    assert max(Counter(sent).values()) < 60  # spread out: not one source
    # with the proxy not trusted, every failure is the proxy's
    s = await make(tmp_path, preset=preset, trusted_proxies=["10.0.0.0/8"]).collect()
    assert get(s, "portal_log_auth_failures_max_per_source") == 300


async def test_watch_polls_where_inotify_is_not_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from checks.logfile import check as check_module

    monkeypatch.setattr(check_module.DirWatch, "open", classmethod(lambda cls, dirs: None))
    log = tmp_path / "combined.log"
    log.write_bytes(b"")
    check = make(tmp_path, Clock())
    task = asyncio.create_task(check.watch(lambda: None))
    try:
        write(log, b"".join(winston(Rec("info", 200, 3.25, None, "/a", T0)) for _ in range(25)))
        async with asyncio.timeout(10):  # the next poll reads them
            f = check._followers[0]
            while f._cur is None or f._cur.pos < log.stat().st_size:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert get(await check.collect(), "portal_log_requests_total", status_class="2xx") == 25


async def test_inotify_reports_the_names_written_in_a_directory(tmp_path: Path) -> None:
    from checks.logfile.inotify import DirWatch

    watch = DirWatch.open([str(tmp_path)])
    assert watch is not None, "inotify is available on Linux"
    try:
        assert await watch.changed(0.01) == set()
        (tmp_path / "combined.log").write_bytes(b"x\n")
        os.rename(tmp_path / "combined.log", tmp_path / "combined.log.1")
        async with asyncio.timeout(10):
            seen: set[str] = set()
            while not {"combined.log", "combined.log.1"} <= seen:
                seen |= await watch.changed(1.0)
    finally:
        watch.close()
    assert DirWatch.open([str(tmp_path / "missing")]) is None  # the caller polls


async def test_auth_failures_by_source_names_at_most_five_clients(tmp_path: Path) -> None:
    lines = b"".join(
        b'{"level":"warn","message":"Login failed","ip":"198.51.100.%d"}\n' % i * n
        for i, n in ((1, 2), (2, 9), (3, 4), (4, 4), (5, 1), (6, 7), (7, 3))
    )
    write(tmp_path / "combined.log", lines)
    s = await make(tmp_path, auth_failure=[{"message": "^Login failed"}]).collect()
    top = {x.labels["source"]: x.value for x in s if x.name == "portal_log_auth_failures_by_source"}
    assert top == {"198.51.100.2": 9, "198.51.100.6": 7, "198.51.100.3": 4, "198.51.100.4": 4, "198.51.100.7": 3}
    order = [x.labels["source"] for x in s if x.name == "portal_log_auth_failures_by_source"]
    assert order[:2] == ["198.51.100.2", "198.51.100.6"]
