"""Fuzzing the log line parser (`checks/logfile/parse.py`) through the logfile check's line handling.

Property, for any chunk of byte lines fed to `LogfileCheck.ingest` then `samples`:
- nothing raises: every line is either counted (`portal_log_lines_total`) or a counted parse
  error (`portal_log_parse_errors_total{reason}`), and parsed + errors = the non-blank lines;
- label values stay bounded (levels from `lognorm.LEVELS`, reasons from the parser's list),
  and every value is finite and non-negative;
- the fast path (whole-chunk decoding) gives exactly what the line-by-line path gives.

Inputs: JSON lines built from winston/pino field names with values of every type (huge
integers, `1e999`, unicode digits, numeric strings, nested objects, deep arrays, duplicate
keys, escapes), valid lines with invalid UTF-8 or cuts spliced in, arbitrary bytes, and
space-separated lines for the regex format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checks.logfile.check import Config, LogfileCheck
from checks.logfile.parse import JsonParser, RegexParser
from checks.logfile.normalize import LEVELS
from monitor.model import CheckContext, MemoryState, Sample
from tests.fuzz import KnownBug, Outcomes, known_bug_cases

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z

KNOWN_BUGS: tuple[KnownBug, ...] = ()  # none open: add one here when the fuzzer finds a crash

# ---------------------------------------------------------------- generators


def _raw_json(value: Any) -> str:
    """JSON text for `value`; `Raw` pieces are written as is (numbers JSON cannot hold, deep arrays)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_raw_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_raw_json(v) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return "1e999" if value > 0 else "-1e999" if value < 0 else "0"
    return json.dumps(value)


class Raw:
    """A piece of JSON text written verbatim (an integer beyond float range, a deep array)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'…' if len(self.text) > 40 else ''})"


_KEYS = st.sampled_from([
    "level", "timestamp", "time", "statusCode", "status", "duration", "responseTime", "ip", "remoteAddr", "url",
    "path", "message", "msg", "res", "req", "meta", "lev\\u0065l", "x",
])
_STRINGS = st.one_of(
    st.sampled_from(["²", "٣٠٠", "Ⅻ", "9" * 4301, "1" + "0" * 400, "\u0000", "\ud800", "\u2028", " 500 "]),
    st.sampled_from(["info", "error", "ERROR", " warn ", "warning", "fatal", "crit", "30", "50", "500", "401", "200 ",
                     "1e3", "12.5", "-5", "NaN", "inf", "0x1F", "", "2024-05-01T12:00:00.123Z", "2024-05-01 12:00:00",
                     "2024-13-45T99:99:99Z", "1714564800123", "/auth/login", "10.0.0.1"]),
    st.text(max_size=10),
)
_NUMBERS = st.one_of(
    st.integers(-10**20, 10**20), st.floats(), st.booleans(), st.none(),
    st.sampled_from([Raw("1" + "0" * 400), Raw("-1" + "0" * 400), Raw("1e999"), Raw("-1e999"), Raw("1E400"),
                     Raw("1.5e-400"), Raw("18446744073709551616"), Raw("-0"), Raw("0.0")]),
)
_SCALARS = st.one_of(_STRINGS, _NUMBERS)
_DEEP = st.sampled_from([1, 2, 50, 900, 1000, 1500, 3000]).map(lambda n: Raw("[" * n + "]" * n))
_VALUES = st.recursive(st.one_of(_SCALARS, _DEEP), lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(_KEYS, inner, max_size=3), max_leaves=8)
_JSON_LINE = st.dictionaries(_KEYS, _VALUES, max_size=6).map(lambda d: _raw_json(d).encode("utf-8", "surrogatepass"))
_GOOD_LINE = st.sampled_from([
    b'{"level":"info","message":"GET /health","statusCode":200,"duration":12,"timestamp":"2024-05-01T12:00:00.123Z"}',
    b'{"level":"warn","url":"/auth/login","statusCode":401,"ip":"10.0.0.1","duration":"250"}',
    b'{"level":50,"time":1714564800123,"res":{"statusCode":500},"responseTime":40,"req":{"url":"/x"}}',
])
_BAD_BYTES = st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b'"', b"\\",
                              b"{", b"}", b"\x00", b"\r", b" ", b"\xe2\x80\xa8"])


@st.composite
def _spliced(draw: Any) -> bytes:
    """A valid line with bytes inserted or the tail cut off."""
    line = draw(st.one_of(_GOOD_LINE, _JSON_LINE))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(line)))
        cut = draw(st.integers(0, 3)) == 0
        line = line[:i] + draw(_BAD_BYTES) + (b"" if cut else line[i:])
    return line


_LINE = st.one_of(_JSON_LINE, _JSON_LINE, _spliced(), _GOOD_LINE,
                  st.binary(max_size=80), st.sampled_from([b"", b"   ", b"\r", b"[]", b"null", b"42", b'"x"']))
_CHUNK = st.lists(_LINE, min_size=1, max_size=12).map(lambda lines: b"\n".join(lines) + b"\n")

_TOKENS = st.one_of(_STRINGS.map(lambda s: s.encode("utf-8", "surrogatepass").replace(b" ", b"_")),
                    _NUMBERS.map(lambda v: (v.text if isinstance(v, Raw) else str(v)).encode()), _BAD_BYTES)
_REGEX_LINE = st.one_of(st.lists(_TOKENS, min_size=6, max_size=8).map(b" ".join),
                        st.lists(_TOKENS, max_size=5).map(b" ".join), st.binary(max_size=60))
_REGEX_CHUNK = st.lists(_REGEX_LINE, min_size=1, max_size=12).map(lambda lines: b"\n".join(lines) + b"\n")
REGEX = (r"^(?P<time>\S+) (?P<level>\S+) (?P<status>\S+) (?P<duration>\S+) (?P<ip>\S+) (?P<path>\S+)"
         r"(?: (?P<message>.*))?")

# ---------------------------------------------------------------- the property


def _make(**options: Any) -> LogfileCheck:
    cfg = Config.model_validate({"name": "fuzz_logs", "type": "logfile", "paths": ["/nonexistent/fuzz.log"],
                                 **options})
    return LogfileCheck(cfg, CheckContext(interval_s=1.0, timeout_s=10.0, state=MemoryState(), now=lambda: T0))


def _values(samples: Iterable[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}


def _ingest(check: LogfileCheck, chunk: bytes) -> list[Sample]:
    check.ingest(chunk, T0)
    return check.samples(T0)


def _expected_lines(chunk: bytes, regex: bool) -> int:
    """Lines that must be counted, as parsed or as parse errors (blank lines are neither)."""
    n = 0
    for line in chunk.split(b"\n"):
        if not regex:
            n += bool(line.strip())
            continue
        try:
            text = line.decode()
        except UnicodeDecodeError:
            n += 1
            continue
        n += bool(text.rstrip("\r").strip())
    return n


def _assert_counts(samples: list[Sample], chunk: bytes, reasons: tuple[str, ...], regex: bool) -> None:
    lines = errors = 0.0
    for s in samples:
        assert math.isfinite(s.value) and s.value >= 0, s
        if s.name == "portal_log_lines_total":
            assert s.labels["level"] in LEVELS, s
            lines += s.value
        elif s.name == "portal_log_parse_errors_total":
            assert s.labels["reason"] in reasons, s
            errors += s.value
    assert lines + errors == _expected_lines(chunk, regex), (lines, errors, chunk)


def _run(out: Outcomes, chunk: bytes, pairs: list[tuple[dict[str, Any], dict[str, Any] | None]],
         regex: bool) -> None:
    """Each config must count `chunk` by the rules above; its pair (the other path) alike."""
    reasons = RegexParser.reasons if regex else JsonParser.reasons
    try:
        for a, b in pairs:
            sa = _ingest(_make(**a), chunk)
            _assert_counts(sa, chunk, reasons, regex)
            if b is not None:
                assert _values(sa) == _values(_ingest(_make(**b), chunk)), (a, b, chunk)
    except AssertionError:
        raise
    except Exception as e:
        if out.known(e, KNOWN_BUGS):
            return
        raise AssertionError(f"{type(e).__name__}: {e} on chunk {chunk!r:.3000}") from e
    out.add("counted")


_JSON_PAIRS: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
    ({"preset": "winston"}, {"preset": "winston", "fast_path": False}),
    ({"preset": "pino", "time_source": "line"}, {"preset": "pino", "time_source": "line", "fast_path": False}),
    ({"preset": "winston", "time_source": "line", "duration_unit": "s",
      "auth_failure": [{"status": [401, 403], "path": "/auth/login"}, {"message": "(?i)invalid password"}],
      "patterns": {"login": "auth/login"}},
     {"preset": "winston", "time_source": "line", "duration_unit": "s", "fast_path": False,
      "auth_failure": [{"status": [401, 403], "path": "/auth/login"}, {"message": "(?i)invalid password"}],
      "patterns": {"login": "auth/login"}}),
]


def test_json_lines_fuzz() -> None:
    """JSON lines: counted or a counted parse error, and the fast path agrees with the general one."""
    out = Outcomes("log json-lines")

    @settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.data_too_large])
    @given(_CHUNK)
    def run(chunk: bytes) -> None:
        _run(out, chunk, _JSON_PAIRS, regex=False)

    run()
    print(out.report())
    assert out.counts["counted"] > 300, out.report()


def test_regex_lines_fuzz() -> None:
    """Plain-text lines through a regex with every named group: counted or `no_match`/`invalid_utf8`."""
    out = Outcomes("log regex-lines")
    options = {"format": "regex", "regex": REGEX, "time_source": "line",
               "auth_failure": {"status": [401], "message": "denied"}}

    @settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_REGEX_CHUNK)
    def run(chunk: bytes) -> None:
        _run(out, chunk, [(options, None), ({**options, "time_source": "read", "duration_unit": "s"}, None)],
             regex=True)

    run()
    print(out.report())
    assert out.counts["counted"] > 300, out.report()


@pytest.mark.parametrize("bug", known_bug_cases(KNOWN_BUGS))
def test_known_bug_minimal_input(bug: KnownBug) -> None:
    """Each known bug's minimal line is counted, as a line or a parse error (xfail while the bug stands)."""
    _assert_counts(_ingest(_make(preset="winston"), bug.example), bug.example, JsonParser.reasons, regex=False)
