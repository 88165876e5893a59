"""Following one log file across appends, rotation, truncation and re-creation.

`Follower.read(max_bytes)` returns the complete lines (each ending in `\\n`) appended since
the last call, at most about `max_bytes` of them, so a caller that wants to stay responsive
reads a big backlog in slices. `read_pieces(max_bytes, piece_bytes)` returns the same lines
cut at newlines into pieces of about `piece_bytes`. Why: a slice is read (`os.preadv`) into
a buffer the follower keeps while it has a backlog, and each piece is copied out of it
once; a fresh 1 MiB `bytes` per slice, copied again at its last newline and then into
pieces, cost about 90 ns a line more (page faults, data out of the CPU cache), a sixth of
what the logfile check spends on a line. Why polling, not inotify: the check runs every
few seconds anyway, a poll is two syscalls, and it behaves the same on every filesystem
(mtail polls too, every 250 ms; see `shared/reference/log-tailing.md`).

What happens to the file, and what we do (the same rules as mtail's `filestream.go`):

- appended: read from where we stopped (`os.pread` at our own offset, no buffering);
- renamed away and a new file created at the path (logrotate `create`): the old file is
  read to its end through the descriptor we hold, then the new one is opened and read
  from its start;
- deleted, re-created later: the same as a rename; until it is re-created `up` is False;
- truncated in place (logrotate `copytruncate`): its size drops below our offset, so we
  start again from 0. Lines written between the copy and the truncation, and a file that
  grows back past our offset before we look, are lost, as with every tailer;
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

import structlog

log = structlog.get_logger()


class Follower:
    """One path: yields whole lines as they are appended, survives rotation and truncation."""

    def __init__(self, path: str, *, from_end: bool = True, max_line_bytes: int = 65536) -> None:
        self.path = path
        self.max_line_bytes = max_line_bytes
        self.up = False
        self.oversize = 0  # lines longer than max_line_bytes, dropped
        self.truncations = 0
        self.rotations = 0
        self.more = False  # the last read() stopped at its byte limit, not at the end
        self._from_end = from_end  # only for the file found at the first look
        self._fd: int | None = None
        self._id: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._pos = 0  # where the next line starts
        self._skipping = False  # inside an oversize line: drop until its newline
        self._last_error = ""
        self._buf = bytearray()  # the slice being read; kept while there is a backlog

    @property
    def unread_bytes(self) -> int:
        """Bytes in the open file past our offset: the backlog still to read."""
        if self._fd is None:
            return 0
        try:
            return max(0, os.fstat(self._fd).st_size - self._pos)
        except OSError:
            return 0

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
        # Bounded: a pass reads one slice, moves to a replaced file (the old one is read to
        # its end first), or stops; a busy writer may need a few passes.
        for _ in range(8):
            if self._fd is None and not self._open():
                break
            pieces = self._read_lines(max_bytes, piece_bytes)
            if pieces is not None:
                out += pieces
                if self.more:
                    break
                continue
            switched, tail = self._switch_if_replaced()
            if tail:
                out.append(tail)
            if not switched:
                break
        if not self.more:
            self._buf = bytearray()  # no backlog: hold no buffer until the next one
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

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
        self._fd, self._id = fd, (st.st_dev, st.st_ino)
        self._pos, self._skipping = 0, False
        if self._from_end and st.st_size:
            self._pos = st.st_size
            # Starting in the middle of a line being written: skip its rest, do not parse it.
            self._skipping = os.pread(fd, 1, st.st_size - 1) != b"\n"
        self._from_end = False
        self.up = True
        if self._last_error:
            log.info("log_file_opened", path=self.path, offset=self._pos)
            self._last_error = ""
        return True

    def _set_down(self, why: str) -> None:
        self.up = False
        if why != self._last_error:  # log each new problem once, not every poll
            log.warning("log_file_unreadable", path=self.path, error=why)
            self._last_error = why

    def _read_lines(self, limit: int, piece_bytes: int) -> list[bytes] | None:
        """The whole lines in the next slice of about `limit` bytes, in pieces (possibly
        none when the slice was all skipped), or None at the end of the file (or before a
        partial line). Sets `more` when the file goes on past the slice."""
        assert self._fd is not None
        try:
            size = os.fstat(self._fd).st_size
            if size < self._pos:  # copytruncate: the same file, shorter than where we were
                log.info("log_file_truncated", path=self.path, offset=self._pos, size=size)
                self.truncations += 1
                self._pos, self._skipping = 0, False
            if size == self._pos:
                return None
            # at least a longest line and its newline, to tell a partial line from a long one
            want = min(max(limit, self.max_line_bytes + 1), size - self._pos)
            self.more = want < size - self._pos
            data, n = self._pread(want)
        except OSError as e:  # EIO, a directory at the path, ...
            self._set_down(f"{type(e).__name__}: {e.strerror or e}")
            self.close()
            return None
        begin = 0
        if self._skipping:  # inside an oversize line: drop up to its newline
            nl = data.find(b"\n", 0, n)
            if nl < 0:
                self._pos += n
                return []
            begin, self._skipping = nl + 1, False
        cut = data.rfind(b"\n", begin, n)
        if cut < 0:
            if n - begin > self.max_line_bytes:
                self.oversize += 1
                self._pos += n
                self._skipping = True
                return []
            self._pos += begin
            return None if n < want or begin == 0 else []  # partial line: wait
        self._pos += cut + 1
        spans = self._short_spans(data, begin, cut + 1) if cut + 1 - begin > self.max_line_bytes else [(begin, cut + 1)]
        return _cut(data, spans, piece_bytes)

    def _pread(self, want: int) -> tuple[bytearray, int]:
        """`want` bytes at our offset into the kept buffer: (buffer, bytes read)."""
        assert self._fd is not None
        if len(self._buf) < want:
            self._buf = bytearray(want)
        with memoryview(self._buf) as view, view[:want] as target:
            return self._buf, os.preadv(self._fd, [target], self._pos)

    def _switch_if_replaced(self) -> tuple[bool, bytes]:
        """At the end of the open file: if the path now names another file (rotated, or
        deleted and re-created), move to it. Returns (moved, the old file's unterminated
        last line, which is still a line). A deleted path sets `up` False but keeps the old
        descriptor, since a writer may still append to it."""
        try:
            st = os.stat(self.path)
        except OSError as e:
            self._set_down(f"{type(e).__name__}: {e.strerror or e}")
            return False, b""
        if (st.st_dev, st.st_ino) == self._id:
            self.up = True
            return False, b""
        log.info("log_file_rotated", path=self.path, old_offset=self._pos)
        self.rotations += 1
        tail = b""
        if not self._skipping and self._fd is not None:  # the old file's unterminated last line
            rest = os.pread(self._fd, self.max_line_bytes + 1, self._pos)
            if rest and len(rest) <= self.max_line_bytes and b"\n" not in rest:
                tail = rest + b"\n"
            elif len(rest) > self.max_line_bytes:
                self.oversize += 1
        self.close()
        self._from_end = False
        return self._open(), tail

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
