"""Following one log file across appends, rotation, truncation and re-creation.

`Follower.read(max_bytes)` returns the complete lines (each ending in `\\n`) appended since
the last call, at most about `max_bytes` of them, so a caller that wants to stay responsive
reads a big backlog in slices. `read_pieces(max_bytes, piece_bytes)` returns the same lines
cut at newlines into pieces of about `piece_bytes`. Why: a slice is read (`os.preadv`) into
a buffer the follower keeps while it has a backlog, and each piece is copied out of it
once; a fresh 1 MiB `bytes` per slice, copied again at its last newline and then into
pieces, cost about 90 ns a line more (page faults, data out of the CPU cache), a sixth of
what the logfile check spends on a line. When to read is the caller's business: the check
reads as soon as inotify says a file changed (`checks.logfile.watch`), and at every run.

What happens to the file, and what we do (as log shippers do: Filebeat, Vector, mtail):

- appended: read from where we stopped (`os.pread` at our own offset, no buffering);
- renamed away and a new file created at the path (logrotate `create`, with a restart or a
  SIGHUP reopen; also deleted and re-created): the new file is read from its start, and
  the old one, through the descriptor we hold, is read first at every read until it has not
  grown for `retire_s` (a logger writes to it until it reopens); its unterminated last line
  is then still a line. Counted as `rotations["rename"]`;
- truncated in place (logrotate `copytruncate`): seen when the file is shorter than our
  offset, or when its first bytes are no longer the ones we read (the *fingerprint*, the
  first `FINGERPRINT_BYTES` we read), so a file that grew back past our offset before we
  looked is seen too. The copy logrotate made is found next to it (a file whose name starts
  with the file's name and whose first bytes are the fingerprint) and read from our offset
  to its end before the truncated file is read from its start: `rotations["copytruncate"]`.
  What was in the file beyond the copy's end when we last looked was written between the
  copy and the truncation and is gone: `lost_bytes`, with a warning. Without a copy (none
  found, or compressed at once) it is `rotations["truncate"]` and everything we had not read
  is lost;
- missing when the check starts: `up` is False until it appears; a file that appears later
  is new, so it is read from its start even with `from: end`.

A partial last line (the logger has not written its newline yet) is not buffered: our
offset stays at its start and the next read reads it again, whole. So memory is one slice
of about `max_bytes`, and every slice starts at the start of a line. A line longer than
`max_line_bytes` is skipped whole (up to its newline, however far) and counted in
`oversize`; it is never held in memory.
"""

from __future__ import annotations

import os
import stat
import time
from collections import Counter
from collections.abc import Callable

import structlog

log = structlog.get_logger()

FINGERPRINT_BYTES = 1024  # the first bytes of a file that identify it (as Filebeat's fingerprint)
RETIRE_S = 5.0  # a renamed-away file is read until it has not grown for this long
MAX_CANDIDATES = 64  # files next to a truncated one examined for its copy (bounded)
ROTATION_KINDS = ("rename", "copytruncate", "truncate")


class _Stream:
    """One open file and where we are in it."""

    __slots__ = ("fd", "id", "pos", "skipping", "fingerprint", "seen_size", "grew_at", "final", "name")

    def __init__(self, fd: int, ident: tuple[int, int], name: str, now: float) -> None:
        self.fd = fd
        self.id = ident
        self.name = name
        self.pos = 0  # where the next line starts
        self.skipping = False  # inside an oversize line: drop until its newline
        self.fingerprint = b""  # the first bytes we read (up to FINGERPRINT_BYTES)
        self.seen_size = 0  # the largest size we saw
        self.grew_at = now  # when it last grew (for an old file: when to let it go)
        self.final = False  # a copy: nobody writes to it, done at its end


class Follower:
    """One path: yields whole lines as they are appended, survives rotation and truncation."""

    def __init__(
        self,
        path: str,
        *,
        from_end: bool = True,
        max_line_bytes: int = 65536,
        retire_s: float = RETIRE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.max_line_bytes = max_line_bytes
        self.retire_s = retire_s
        self.up = False
        self.oversize = 0  # lines longer than max_line_bytes, dropped
        self.rotations: Counter[str] = Counter()  # by kind: ROTATION_KINDS
        self.lost_bytes = 0  # bytes a rotation destroyed before we read them
        self.more = False  # the last read() stopped at its byte limit, not at the end
        self._from_end = from_end  # only for the file found at the first look
        self._clock = clock
        self._cur: _Stream | None = None
        self._old: list[_Stream] = []  # renamed-away files and copies, still read first
        self._last_error = ""
        self._buf = bytearray()  # the slice being read; kept while there is a backlog

    @property
    def unread_bytes(self) -> int:
        """Bytes in the open files past our offsets: the backlog still to read."""
        total = 0
        for s in (*self._old, *((self._cur,) if self._cur is not None else ())):
            try:
                total += max(0, os.fstat(s.fd).st_size - s.pos)
            except OSError:
                pass
        return total

    def read(self, max_bytes: int = 1 << 18) -> bytes:
        """Complete lines appended since the last call (b"" when there are none), about
        `max_bytes` at most. `more` is then True when it stopped at that limit rather than
        at the end of the file: call again. Never raises for a missing or unreadable file;
        `up` says whether the path can be read now."""
        pieces = self.read_pieces(max_bytes, max_bytes)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def read_pieces(self, max_bytes: int, piece_bytes: int) -> list[bytes]:
        """What `read(max_bytes)` returns, as pieces of whole lines of about `piece_bytes`
        (more when a line is longer)."""
        out: list[bytes] = []
        self.more = False
        for old in list(self._old):  # what a rotation left behind goes first
            for _ in range(4):
                pieces = self._read_lines(old, max_bytes, piece_bytes)
                if pieces is None:
                    break
                out += pieces
                if self.more:
                    return out
            self._maybe_retire(old, out)
        # Bounded: a pass reads one slice, moves to a replaced file (the old one is kept to
        # be read first), or stops; a busy writer may need a few passes.
        for _ in range(8):
            if self._cur is None and not self._open():
                break
            assert self._cur is not None
            if self._truncated(self._cur, out, max_bytes, piece_bytes):
                if self.more:
                    break
            pieces = self._read_lines(self._cur, max_bytes, piece_bytes)
            if pieces is not None:
                out += pieces
                if self.more:
                    break
                continue
            if not self._switch_if_replaced():
                break
        if not self.more:
            self._buf = bytearray()  # no backlog: hold no buffer until the next one
        return out

    def start_at(self, offset: int) -> None:
        """Read the file at the path from `offset` (the start of a line) on."""
        if self._cur is None and not self._open():
            return
        assert self._cur is not None
        self._cur.pos, self._cur.skipping = offset, False
        self._cur.fingerprint = self._first_bytes(self._cur, offset)

    def close(self) -> None:
        for s in (*self._old, *((self._cur,) if self._cur is not None else ())):
            os.close(s.fd)
        self._old, self._cur = [], None

    # --- internals -----------------------------------------------------------------------

    def _open(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            self._set_down(f"{type(e).__name__}: {e.strerror or e}")
            self._from_end = False  # it did not exist at start: when it appears, it is new
            return False
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            self._set_down("not a regular file")
            self._from_end = False
            return False
        cur = self._cur = _Stream(fd, (st.st_dev, st.st_ino), self.path, self._clock())
        if self._from_end and st.st_size:
            cur.pos = cur.seen_size = st.st_size
            # Starting in the middle of a line being written: skip its rest, do not parse it.
            cur.skipping = os.pread(fd, 1, st.st_size - 1) != b"\n"
            cur.fingerprint = self._first_bytes(cur, st.st_size)
        self._from_end = False
        self.up = True
        if self._last_error:
            log.info("log_file_opened", path=self.path, offset=cur.pos)
            self._last_error = ""
        return True

    def _set_down(self, why: str) -> None:
        self.up = False
        if why != self._last_error:  # log each new problem once, not every poll
            log.warning("log_file_unreadable", path=self.path, error=why)
            self._last_error = why

    @staticmethod
    def _first_bytes(s: _Stream, upto: int) -> bytes:
        return os.pread(s.fd, min(FINGERPRINT_BYTES, upto), 0) if upto else b""

    def _truncated(self, cur: _Stream, out: list[bytes], max_bytes: int, piece_bytes: int) -> bool:
        """Whether the open file was truncated (copytruncate) since we last read it; if so,
        its copy is queued to be read from our offset, and we start again at 0. What the
        copy holds is read into `out` now, as far as `max_bytes` allows."""
        try:
            size = os.fstat(cur.fd).st_size
            fp = cur.fingerprint
            same = size >= cur.pos and (not fp or os.pread(cur.fd, len(fp), 0) == fp)
        except OSError:
            return False  # _read_lines says what is wrong
        if same:
            if size > cur.seen_size:
                cur.seen_size = size
            return False
        copy = self._find_copy(cur)
        if copy is not None:
            kind = "copytruncate"
            copy_size = os.fstat(copy.fd).st_size
            lost = max(0, cur.seen_size - max(copy_size, cur.pos))
            copy.pos, copy.skipping, copy.final = cur.pos, cur.skipping, True
            self._old.append(copy)
        else:
            kind = "truncate"
            lost = max(0, cur.seen_size - cur.pos)
        self.rotations[kind] += 1
        self.lost_bytes += lost
        (log.warning if lost else log.info)(
            "log_file_truncated",
            path=self.path,
            kind=kind,
            offset=cur.pos,
            size=size,
            copy=copy.name if copy is not None else None,
            lost_bytes=lost,
        )
        cur.pos, cur.skipping, cur.fingerprint, cur.seen_size = 0, False, b"", size
        if copy is not None:
            for _ in range(4):
                pieces = self._read_lines(copy, max_bytes, piece_bytes)
                if pieces is None:
                    break
                out += pieces
                if self.more:
                    return True
            self._maybe_retire(copy, out)
        return True

    def _find_copy(self, cur: _Stream) -> _Stream | None:
        """The copy of a truncated file: next to it, named after it (`combined.log.1`,
        `combined.log-20240501`), starting with its fingerprint (as much of it as the copy
        holds: we may have read past the copy's end); the newest if several."""
        fp = cur.fingerprint
        if not fp:
            return None
        folder, base = os.path.split(self.path)
        try:
            names = [n for n in os.listdir(folder or ".") if n != base and n.startswith(base)]
        except OSError:
            return None
        held = {s.id for s in self._old} | {cur.id}
        found: list[tuple[float, str]] = []
        for name in names[:MAX_CANDIDATES]:
            full = os.path.join(folder, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in held and st.st_size:
                found.append((st.st_mtime, full))
        for _, full in sorted(found, reverse=True):
            try:
                fd = os.open(full, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                n = min(len(fp), st.st_size)  # we may have read past the copy's end
                if os.pread(fd, n, 0) == fp[:n]:
                    return _Stream(fd, (st.st_dev, st.st_ino), full, self._clock())
            except OSError:
                pass
            os.close(fd)
        return None

    def _read_lines(self, s: _Stream, limit: int, piece_bytes: int) -> list[bytes] | None:
        """The whole lines in the next slice of about `limit` bytes of `s`, in pieces
        (possibly none when the slice was all skipped), or None at the end of the file (or
        before a partial line). Sets `more` when the file goes on past the slice."""
        try:
            size = os.fstat(s.fd).st_size
            if size > s.seen_size:
                s.seen_size, s.grew_at = size, self._clock()
            if size <= s.pos:
                return None
            # at least a longest line and its newline, to tell a partial line from a long one
            want = min(max(limit, self.max_line_bytes + 1), size - s.pos)
            self.more = want < size - s.pos
            data, n = self._pread(s, want)
        except OSError as e:  # EIO, a directory at the path, ...
            if s is self._cur:
                self._set_down(f"{type(e).__name__}: {e.strerror or e}")
            else:
                log.warning("log_file_unreadable", path=s.name, error=f"{type(e).__name__}: {e.strerror or e}")
            self._drop(s)
            return None
        begin = 0
        if s.skipping:  # inside an oversize line: drop up to its newline
            nl = data.find(b"\n", 0, n)
            if nl < 0:
                s.pos += n
                return []
            begin, s.skipping = nl + 1, False
        cut = data.rfind(b"\n", begin, n)
        if cut < 0:
            if n - begin > self.max_line_bytes:
                self.oversize += 1
                s.pos += n
                s.skipping = True
                return []
            s.pos += begin
            return None if n < want or begin == 0 else []  # partial line: wait
        start = s.pos
        s.pos += cut + 1
        if len(s.fingerprint) == start < FINGERPRINT_BYTES:  # the fingerprint is the first bytes we read
            s.fingerprint += bytes(data[: min(cut + 1, FINGERPRINT_BYTES - start)])
        spans = self._short_spans(data, begin, cut + 1) if cut + 1 - begin > self.max_line_bytes else [(begin, cut + 1)]
        return _cut(data, spans, piece_bytes)

    def _pread(self, s: _Stream, want: int) -> tuple[bytearray, int]:
        """`want` bytes at the stream's offset into the kept buffer: (buffer, bytes read)."""
        if len(self._buf) < want:
            self._buf = bytearray(want)
        with memoryview(self._buf) as view, view[:want] as target:
            return self._buf, os.preadv(s.fd, [target], s.pos)

    def _drop(self, s: _Stream) -> None:
        os.close(s.fd)
        if s is self._cur:
            self._cur = None
        else:
            self._old.remove(s)

    def _maybe_retire(self, old: _Stream, out: list[bytes]) -> None:
        """At the end of an old file: let it go once nobody can still be writing to it (a
        copy at once; a renamed file after `retire_s` without growing). Its unterminated
        last line is still a line."""
        if old not in self._old or (not old.final and self._clock() - old.grew_at < self.retire_s):
            return
        if not old.skipping:
            try:
                rest = os.pread(old.fd, self.max_line_bytes + 1, old.pos)
            except OSError:
                rest = b""
            if rest and len(rest) <= self.max_line_bytes and b"\n" not in rest:
                out.append(rest + b"\n")
            elif len(rest) > self.max_line_bytes:
                self.oversize += 1
        self._drop(old)

    def _switch_if_replaced(self) -> bool:
        """At the end of the open file: if the path now names another file (rotated, or
        deleted and re-created), keep the old one to be read first and open the new one.
        A deleted path sets `up` False but keeps the old descriptor, since a writer may
        still append to it."""
        cur = self._cur
        assert cur is not None
        try:
            st = os.stat(self.path)
        except OSError as e:
            self._set_down(f"{type(e).__name__}: {e.strerror or e}")
            return False
        if (st.st_dev, st.st_ino) == cur.id:
            self.up = True
            return False
        log.info("log_file_rotated", path=self.path, old_offset=cur.pos)
        self.rotations["rename"] += 1
        cur.grew_at = self._clock()
        self._old.append(cur)
        self._cur = None
        self._from_end = False
        return self._open()

    def _short_spans(self, data: bytearray, begin: int, end: int) -> list[tuple[int, int]]:
        """The spans of data[begin:end] (whole lines) without the lines longer than
        max_line_bytes. Cheap: one rfind per max_line_bytes of text, since any line inside
        [pos, last newline] is short enough."""
        limit = self.max_line_bytes
        keep: list[tuple[int, int]] = []
        pos = start = begin
        while pos < end:
            j = data.rfind(b"\n", pos, min(end, pos + limit + 1))
            if j >= 0:
                pos = j + 1
                continue
            stop = data.find(b"\n", pos, end) + 1  # data[begin:end] ends with a newline: found
            keep.append((start, pos))
            self.oversize += 1
            pos = start = stop
        keep.append((start, end))
        return keep


def _cut(data: bytearray, spans: list[tuple[int, int]], piece_bytes: int) -> list[bytes]:
    """The spans of data as bytes, each cut after a newline about every `piece_bytes`."""
    out: list[bytes] = []
    with memoryview(data) as view:
        for start, end in spans:
            while start < end:
                stop = end if end - start <= piece_bytes else data.rfind(b"\n", start, start + piece_bytes) + 1
                if stop <= start:  # a line longer than a piece
                    stop = data.find(b"\n", start + piece_bytes, end) + 1
                out.append(bytes(view[start:stop]))
                start = stop
    return out
