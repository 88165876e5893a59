"""The BFF's JSON logs as metrics: error ratio, response times, request rate, login failures.

Runbook scenarios 5 (high error rate, > 2 s average responses: `tail error.log`, `grep
duration combined.log`) and 6 (unusual login patterns), and the "grep the BFF logs" steps
of scenarios 1 and 2 (`patterns`).

Lines are read as they arrive (`watch`: inotify on the files' directories, `inotify`;
polling every `POLL_S` where inotify is not available) and at every run, from where the
last read stopped (`tail.Follower`: rotation, copytruncate, re-creation), parsed (`parse`:
JSON with winston or pino fields or any dotted paths, or a regex) and added to cumulative
counters and to a sliding window (`window.Window`); each run returns every series' current
value. The interval only drives evaluation and metrics: a reader that trails the writer by
milliseconds is what lets a copytruncate lose (almost) nothing.

A single run (`once`, `CheckContext.one_shot`) reads the last `window` of each file: back
from the end until the lines' own times leave the window (the whole file when its lines
carry no time), and says how many lines it read (`portal_log_window_lines`). A run whose
window holds no line is "no data": the window gauges are absent (in the daemon), and
`once` reports the check down with reason `no_data`, never "up with 0 errors".

Decisions, and why:

- **Which time places a line in the window** (`time_source`). `read` (default): the time
  the line was read. It cannot be fooled by a logger's clock, zone or timestamp format
  (a local-time `timestamp` without a zone would push every line hours out of the window
  and silence every log alert), and with lines read every interval it is late by at most
  one interval. `line`: the line's own `timestamp`/`time`, to the second (lines without a
  readable time fall back to the read time; future times count as now; lines older than
  the window are ignored by the window, not by the counters). For backfills and replays
  (a 24 h log compressed in time), where read time would put everything in one instant.
- **Error ratio** = failed requests / requests (a request is a line with an HTTP status;
  it failed with status >= 500 or level error/fatal), which is the runbook's "error rate
  above 1%", so `HighErrorRate: portal_log_error_ratio > 0.01` means that. Debug/info
  chatter does not dilute it and error.log lines without a status do not count twice.
  When the window has no requests at all, it is error lines / lines, so a BFF that only
  logs errors (crashing on every request) reads 1, not 0. With `min_requests`, the ratio is
  not exported while the window holds fewer requests (or, without requests, fewer lines): two
  failed requests out of forty at night are not a 5% error rate worth a page.
- **Durations** (histogram, average, p95) come from every line with a duration field,
  including the BFF's calls to Salesforce/WHMCS/Freebit (runbook scenario 5 greps them).
- **Oversize lines** (longer than `max_line_bytes`) have their own counter: they were not
  read, so they are not parse errors.
- **Named patterns** count like `grep -c` on every line read, parsed or not.
- **Reading a backlog** (a restart with `from: start`, a burst of 100,000 lines/s) goes in
  slices of `SLICE_BYTES` with `await asyncio.sleep(0)` between them, so other checks keep
  their schedule, and stops after half the check's timeout; the rest waits for the next run
  (`portal_log_unread_bytes` shows it).
- **Counting at read time** (the default) is batched (`tally.Normalizer.add`/`flush`):
  a slice (as `Follower.read_pieces` reads it, out of a buffer kept while there is a
  backlog) is parsed and counted in pieces of `PIECE_BYTES`, as whole records in C (small
  pieces stay in the CPU cache: a few % faster); the batch is normalized once at the end of the run
  (`samples()` flushes), or earlier when it grows past `tally.BATCH_MAX`. Login failures
  are still matched per slice, so Space-Saving sees what it saw before batching.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator

import msgspec
import structlog

from checks.logfile.config import Config as Config
from checks.logfile.inotify import ALL, DirWatch
from checks.logfile.normalize import ERROR_LEVELS, FIELDS, first, norm_time
from checks.logfile.parse import JsonParser, RegexParser, count_pattern_lines
from checks.logfile.tail import ROTATION_KINDS, Follower
from checks.logfile.tally import Normalizer, Parsed, Tally
from checks.logfile.window import Classifier, Window, sketch_index
from monitor.model import CheckContext, CheckError, Sample

log = structlog.get_logger()

METRICS: dict[str, tuple[str, str]] = {
    "portal_logfile_up": ("gauge", "1 when at least one of the check's log files can be read"),
    "portal_log_file_up": ("gauge", "1 when this log file exists and can be read"),
    "portal_log_unread_bytes": ("gauge", "bytes appended to the file and not read yet (backlog)"),
    "portal_log_lines_total": ("counter", "parsed log lines by level"),
    "portal_log_requests_total": ("counter", "request lines (lines with an HTTP status) by status class"),
    "portal_log_parse_errors_total": ("counter", "lines that could not be parsed, by reason"),
    "portal_log_oversize_lines_total": ("counter", "lines longer than max_line_bytes, skipped unread"),
    "portal_log_pattern_lines_total": ("counter", "lines matching each named pattern"),
    "portal_log_request_duration_seconds": ("histogram", "durations logged by lines with a duration"),
    "portal_log_error_ratio": (
        "gauge",
        "failed requests / requests in the window (errors / lines without requests)",
    ),
    "portal_log_response_seconds_avg": ("gauge", "average logged duration in the window"),
    "portal_log_response_seconds_p95": (
        "gauge",
        "95th percentile of logged durations in the window (within 2%)",
    ),
    "portal_log_requests_per_second": ("gauge", "request lines per second over the window"),
    "portal_log_auth_failures": ("gauge", "lines matching auth_failure in the window"),
    "portal_log_auth_failures_max_per_source": (
        "gauge",
        "most auth failures from one client IP in the window",
    ),
    "portal_log_auth_failures_by_source": (
        "gauge",
        "auth failures in the window of each of the 5 clients with the most (`source`: the client address), "
        "so a page names whom to block",
    ),
    "portal_log_window_lines": ("gauge", "lines in the window (0: no data, the other window gauges are absent)"),
    "portal_logfile_rotations_total": ("counter", "rotations seen, by kind: rename, copytruncate, truncate"),
    "portal_logfile_lost_bytes_total": (
        "counter",
        "bytes a rotation destroyed before they were read (written between logrotate's copy and truncate)",
    ),
}
# Labels of each series besides `check` and the check's `labels` (the store adds those); a
# metric not named here has none. With METRICS, the catalogue `check-config` checks rules against.
LABELS: dict[str, tuple[str, ...]] = {
    "portal_log_file_up": ("path",),
    "portal_log_unread_bytes": ("path",),
    "portal_log_lines_total": ("level",),
    "portal_log_requests_total": ("status_class",),
    "portal_log_parse_errors_total": ("reason",),
    "portal_log_pattern_lines_total": ("pattern",),
    "portal_logfile_rotations_total": ("path", "kind"),
    "portal_log_auth_failures_by_source": ("source",),
    "portal_logfile_lost_bytes_total": ("path",),
}
KEY_METRICS = (
    "portal_log_window_lines",
    "portal_log_error_ratio",
    "portal_log_response_seconds_avg",
    "portal_log_auth_failures_max_per_source",
)

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SLICE_BYTES = 1 << 20  # about 3,000 lines: a few ms of parsing between two yields to the loop
PIECE_BYTES = 1 << 17  # a slice is parsed and counted in pieces this big (see the docstring)
POLL_S = 0.25  # without inotify: how often files are looked at between runs (as mtail)
FOLLOW_GAP_S = 0.001  # at least this long between two reads on inotify events (a write per line)
SEEK_BLOCK = 1 << 16  # `once`: bytes read at each probe while looking for the window's start
_LE = tuple(repr(b) for b in DURATION_BUCKETS) + ("+Inf",)
_SHOWN_LEVELS = ("fatal", "error", "warn", "info", "debug")
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def _pieces(chunk: bytes, size: int) -> Iterator[bytes]:
    """The chunk cut after a newline about every `size` bytes (the whole when smaller), as
    `Follower.read_pieces` cuts what it reads."""
    start, n = 0, len(chunk)
    while start < n:
        end = n if n - start <= size else chunk.rfind(b"\n", start, start + size) + 1
        if end <= start:  # a line longer than `size`
            end = chunk.find(b"\n", start + size) + 1 or n
        yield chunk if end - start == n else chunk[start:end]
        start = end


class LogfileCheck:
    """Follows the configured log files; each run turns what was appended into samples."""

    type = "logfile"

    def __init__(self, cfg: Config, ctx: CheckContext, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.name = cfg.name
        self.interval_s = ctx.interval_s
        self.timeout_s = ctx.timeout_s
        self._cfg = cfg
        self._now = ctx.now
        self._clock = clock
        self._one_shot = ctx.one_shot
        self._budget_s = max(0.05, (0.8 if self._one_shot else 0.5) * ctx.timeout_s)
        self._followers = [
            Follower(p, from_end=cfg.from_ == "end" and not self._one_shot, max_line_bytes=cfg.max_line_bytes)
            for p in dict.fromkeys(cfg.paths)
        ]
        rules = cfg.auth_rules()
        needed = {"level", "status", "duration"}
        if cfg.time_source == "line":
            needed.add("time")
        if rules:
            needed.add("status")
            needed.add("ip")
            needed.add("forwarded")
            if any(r.path is not None for r in rules):
                needed.add("path")
            if any(r.message is not None for r in rules):
                needed.add("message")
        ordered = [f for f in FIELDS if f in needed]
        if cfg.format == "regex":
            assert cfg.regex is not None
            self._parser: JsonParser | RegexParser = RegexParser(cfg.regex)
        else:
            self._parser = JsonParser(cfg.field_paths(), ordered)
        self._fast = cfg.fast_path and isinstance(self._parser, JsonParser)
        self._norm = Normalizer(
            self._parser,
            use_time=cfg.time_source == "line",
            duration_scale=0.001 if cfg.duration_unit == "ms" else 1.0,
            classify=lambda seconds: (bisect_left(DURATION_BUCKETS, seconds), sketch_index(seconds)),
            classifier=Classifier(DURATION_BUCKETS, 0.001 if cfg.duration_unit == "ms" else 1.0),
            auth=rules,
            trusted_proxies=cfg.trusted_networks(),
        )
        # MULTILINE: `^` and `$` anchor at each line, though a pattern searches a whole chunk
        self._patterns = {name: re.compile(p.encode(), re.MULTILINE) for name, p in cfg.patterns.items()}
        # `once`: the window is the one that ends now, however little of it the files cover
        start = ctx.now() - (cfg.window if self._one_shot else 0.0)
        self._window = Window(cfg.window, max_sources=cfg.max_sources, start=start)
        self._time_parser: JsonParser | RegexParser | None = None
        if self._one_shot:
            if isinstance(self._parser, RegexParser):
                self._time_parser = self._parser if "time" in self._parser.layout else None
            elif cfg.field_paths().get("time"):
                self._time_parser = JsonParser(cfg.field_paths(), ["time"])
        self._seeked = False
        self._lines: Counter[str] = Counter()
        self._requests: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._pattern_lines: Counter[str] = Counter()
        self._hist = [0] * (len(DURATION_BUCKETS) + 1)
        self._dur_sum = 0.0
        self._batch_now: float | None = None  # the read time of the pending batch (the last batch's)
        self._window_lines = 0

    async def collect(self) -> list[Sample]:
        self._flush()
        now = self._now()
        if self._one_shot and not self._seeked:
            self._seeked = True
            for f in self._followers:
                self._seek_window(f, now)
        await self._read_all(now)
        samples = self.samples(now)
        if not any(f.up for f in self._followers):
            raise CheckError("no_file", f"no log file can be read: {', '.join(self._cfg.paths)}", samples)
        if self._one_shot and not self._window_lines:
            raise CheckError(
                "no_data",
                f"no log line in the last {self._cfg.window:g}s of {', '.join(self._cfg.paths)}: nothing to judge",
                samples,
            )
        return samples

    async def _read_all(self, now: float) -> None:
        """Read what every file has past our offsets (within the time budget) and count it
        as read at `now`."""
        self._window.advance(now)
        deadline = self._clock() + self._budget_s
        active = list(self._followers)
        while active:  # round robin, a slice each, so one busy file does not starve the others
            for f in list(active):
                pieces = f.read_pieces(SLICE_BYTES, PIECE_BYTES)
                if pieces:
                    self._ingest_pieces(pieces, now)
                if not f.more:
                    active.remove(f)
                await asyncio.sleep(0)
            if self._clock() > deadline:
                break  # the rest waits for the next run: see portal_log_unread_bytes

    async def watch(self, wake: Callable[[], None]) -> None:
        """Read the files as they change, between runs (the scheduler runs this for the
        life of the check). `wake` is never called: the interval drives evaluation."""
        dirs = sorted({os.path.dirname(os.path.abspath(p)) for p in self._cfg.paths})
        names = {os.path.basename(p) for p in self._cfg.paths}
        notifier = DirWatch.open(dirs)
        log.info("log_follow", check=self.name, inotify=notifier is not None, directories=dirs)
        try:
            while True:  # until cancelled
                if notifier is None:
                    await asyncio.sleep(POLL_S)
                else:
                    changed = await notifier.changed(self.interval_s)
                    # a write to one of our files or its copy (combined.log.1); a timeout
                    # without events reads anyway (a file system that sends none)
                    if changed and ALL not in changed and not any(c.startswith(n) for c in changed for n in names):
                        continue
                await self._read_all(self._now())
                self._flush()
                if notifier is not None:
                    await asyncio.sleep(FOLLOW_GAP_S)  # let a burst of writes pile up a little
        finally:
            if notifier is not None:
                notifier.close()

    def _seek_window(self, f: Follower, now: float) -> None:
        """`once`: start `f` at the first line of the window (lines in time order), found
        by stepping back from the end, then bisecting; at 0 when its lines have no time."""
        if self._time_parser is None:
            return
        try:
            fd = os.open(f.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return
        try:
            size = os.fstat(fd).st_size
            start = self._window_start(fd, size, now - self._window.window_s)
        finally:
            os.close(fd)
        if start:
            f.start_at(start)

    def _window_start(self, fd: int, size: int, cutoff: float) -> int:
        lo, hi, step = -1, size, SEEK_BLOCK
        for _ in range(64):  # bounded: the step doubles
            probe = max(0, size - step)
            found = self._first_time(fd, probe, size)
            if found is not None and found[1] < cutoff:
                lo = found[0]
                break
            if found is not None:
                hi = min(hi, found[0])
            if probe == 0:
                return 0 if found is not None else 0  # all in the window, or no line with a time
            step *= 2
        if lo < 0:
            return 0
        for _ in range(64):  # bisect between a line before the window and one in it
            if hi - lo <= SEEK_BLOCK:
                break
            found = self._first_time(fd, (lo + hi) // 2, hi)
            if found is None or found[0] >= hi:
                break
            if found[1] < cutoff:
                lo = found[0]
            else:
                hi = found[0]
        pos = lo
        for _ in range(1 << 16):  # the lines from `lo`: the first one in the window
            found = self._first_time(fd, pos, hi, whole_from=True)
            if found is None or found[0] >= hi:
                return hi
            if found[1] >= cutoff:
                return found[0]
            pos = found[2]
        return hi

    def _first_time(self, fd: int, offset: int, end: int, *, whole_from: bool = False) -> tuple[int, float, int] | None:
        """The first line that starts at `offset` or after (at `offset` itself only when it
        starts a line) and before `end`, that has a time: (its start, its time, its end)."""
        pos = offset
        if offset and not whole_from and os.pread(fd, 1, offset - 1) != b"\n":
            data = os.pread(fd, self._cfg.max_line_bytes + 1, offset)
            nl = data.find(b"\n")
            if nl < 0:
                return None
            pos = offset + nl + 1
        for _ in range(256):  # bounded: at most this many blocks without a timed line
            if pos >= end:
                return None
            data = os.pread(fd, SEEK_BLOCK, pos)
            cut = data.rfind(b"\n") + 1
            if not cut:
                return None
            start = pos
            for line in data[:cut].split(b"\n")[:-1]:
                t = self._line_time(line)
                if t is not None:
                    return start, t, start + len(line) + 1
                start += len(line) + 1
                if start >= end:
                    return None
            pos += cut
        return None

    def _line_time(self, line: bytes) -> float | None:
        parser = self._time_parser
        assert parser is not None
        parsed = parser.parse_general(line, Counter())
        if not parsed.records:
            return None
        slots = parser.layout.get("time", ())
        raw = first(parser.column(parsed.records, i)[0] for i in slots)
        return norm_time(raw) if raw is not None else None

    async def aclose(self) -> None:
        for f in self._followers:
            f.close()

    def ingest(self, chunk: bytes, now: float) -> None:
        """Count a chunk of whole lines read at `now` (at read time, into the pending batch:
        `samples()` includes it)."""
        self._ingest_pieces(list(_pieces(chunk, PIECE_BYTES)) if self._norm.batching else [chunk], now)

    def _ingest_pieces(self, pieces: list[bytes], now: float) -> None:
        """Count one slice of whole lines, cut into pieces at newlines."""
        errors: Counter[str] = Counter()
        if self._patterns:  # on the whole slice, as a pattern may span a newline
            chunk = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            self._pattern_lines.update(count_pattern_lines(chunk, self._patterns))
        if not self._norm.batching:
            chunk = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            self._add(self._norm.tally(self._parse(chunk, errors)), now)
        else:
            if self._batch_now != now:
                self._flush()
            self._batch_now = now
            for piece in pieces:
                if self._norm.add(self._parse(piece, errors)):
                    self._flush()
            for (_, source), n in self._norm.take_auth().items():  # per slice: see the docstring
                self._window.add_auth(now, source, n)
        self._errors.update(errors)

    def _parse(self, chunk: bytes, errors: Counter[str]) -> Parsed:
        parser = self._parser
        if self._fast and isinstance(parser, JsonParser):
            try:
                return parser.parse_fast(chunk)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: deep arrays
                pass
        return parser.parse_general(chunk, errors)

    def _flush(self) -> None:
        """Add the pending batch to the counters and the window, at its read time."""
        if self._batch_now is not None:
            for tally in self._norm.flush():
                self._add(tally, self._batch_now)

    def _add(self, tally: Tally, now: float) -> None:
        window = self._window
        for (t, level, status), n in tally.groups.items():
            self._lines[level] += n
            failed = level in ERROR_LEVELS or (status is not None and status >= 500)
            if status is not None:
                self._requests[_CLASSES[status // 100 - 1]] += n
            window.add_lines(
                now if t is None else t,
                n,
                n if failed else 0,
                0 if status is None else n,
                n if failed and status is not None else 0,
            )
        hist = self._hist
        for t, d in tally.durations.items():
            slots: Counter[int] = Counter()
            for (bucket, slot), n in d.classes.items():
                hist[bucket] += n
                slots[slot] += n
            self._dur_sum += d.total_s
            window.add_durations(now if t is None else t, d.count, d.total_s, slots)
        for (t, source), n in tally.auth.items():
            window.add_auth(now if t is None else t, source, n)

    def samples(self, now: float) -> list[Sample]:
        """Every series' current value."""
        self._flush()
        out: list[Sample] = []
        add = out.append
        for f in self._followers:
            add(Sample("portal_log_file_up", {"path": f.path}, 1.0 if f.up else 0.0))
            add(Sample("portal_log_unread_bytes", {"path": f.path}, float(f.unread_bytes)))
        for level in dict.fromkeys((*_SHOWN_LEVELS, *sorted(self._lines))):
            add(Sample("portal_log_lines_total", {"level": level}, float(self._lines[level])))
        for cls in _CLASSES:
            add(Sample("portal_log_requests_total", {"status_class": cls}, float(self._requests[cls])))
        for reason in self._parser.reasons:
            add(Sample("portal_log_parse_errors_total", {"reason": reason}, float(self._errors[reason])))
        add(Sample("portal_log_oversize_lines_total", {}, float(sum(f.oversize for f in self._followers))))
        for f in self._followers:
            for kind in ROTATION_KINDS:
                add(Sample("portal_logfile_rotations_total", {"path": f.path, "kind": kind}, float(f.rotations[kind])))
            add(Sample("portal_logfile_lost_bytes_total", {"path": f.path}, float(f.lost_bytes)))
        for name in self._patterns:
            add(Sample("portal_log_pattern_lines_total", {"pattern": name}, float(self._pattern_lines[name])))
        cumulative = 0
        for le, n in zip(_LE, self._hist, strict=True):
            cumulative += n
            add(Sample("portal_log_request_duration_seconds_bucket", {"le": le}, float(cumulative)))
        add(Sample("portal_log_request_duration_seconds_sum", {}, self._dur_sum))
        add(Sample("portal_log_request_duration_seconds_count", {}, float(cumulative)))
        w = self._window.stats(now)
        self._window_lines = w.lines
        add(Sample("portal_log_window_lines", {}, float(w.lines)))
        if not w.lines:
            return out  # no data: no "0 errors", no "0 ms"
        if (w.requests or w.lines) >= self._cfg.min_requests:
            add(Sample("portal_log_error_ratio", {}, w.error_ratio))
        if w.durations:
            add(Sample("portal_log_response_seconds_avg", {}, w.response_seconds_avg))
            add(Sample("portal_log_response_seconds_p95", {}, w.response_seconds_p95))
        add(Sample("portal_log_requests_per_second", {}, w.requests_per_second))
        add(Sample("portal_log_auth_failures", {}, float(w.auth_failures)))
        add(Sample("portal_log_auth_failures_max_per_source", {}, float(w.auth_failures_max_per_source)))
        for source, n in w.auth_failures_top:
            add(Sample("portal_log_auth_failures_by_source", {"source": source}, float(n)))
        return out
