"""Knowing at once that a log file changed: inotify on its directory (Linux), via libc.

`DirWatch.open(dirs)` watches directories for writes, creations, renames and deletions of
the files in them (a directory watch sees the file at a path being replaced, which a watch
on the file itself would not) and `await changed(timeout)` returns the names that changed
since the last call (or an empty set after `timeout`). It returns None where inotify is
not available (not Linux, no libc symbol, out of watches, a directory that does not exist):
the caller then polls. No dependency: ctypes over `inotify_init1`/`inotify_add_watch`, the
descriptor read from the event loop (`loop.add_reader`).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Iterable

import structlog

log = structlog.get_logger()

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
MASK |= IN_DELETE_SELF | IN_MOVE_SELF
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of NUL-padded name)
ALL = "*"  # in the changed names: the queue overflowed or a directory went away: look at everything


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return libc


class DirWatch:
    """inotify watches on some directories; `changed()` waits for what changed in them."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._names: set[str] = set()
        self._ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._on_readable)

    @classmethod
    def open(cls, dirs: Iterable[str]) -> DirWatch | None:
        """A watch on every directory, or None (and a log line saying why) when one of them
        cannot be watched. Call from a running event loop."""
        libc = _libc()
        if libc is None:
            return None
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            log.info("log_inotify_unavailable", error=os.strerror(ctypes.get_errno()))
            return None
        for d in dirs:
            if libc.inotify_add_watch(fd, os.fsencode(d), MASK) < 0:
                log.info("log_inotify_unavailable", directory=d, error=os.strerror(ctypes.get_errno()))
                os.close(fd)
                return None
        return cls(fd)

    def _on_readable(self) -> None:
        for _ in range(64):  # bounded: a full queue is read in 64 KiB reads
            try:
                data = os.read(self._fd, 65536)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    self._names.add(ALL)
                break
            if not data:
                break
            pos = 0
            while pos + _EVENT.size <= len(data):
                _, mask, _, size = _EVENT.unpack_from(data, pos)
                name = data[pos + _EVENT.size : pos + _EVENT.size + size].rstrip(b"\0")
                pos += _EVENT.size + size
                if mask & (IN_Q_OVERFLOW | IN_DELETE_SELF | IN_MOVE_SELF) or not name:
                    self._names.add(ALL)
                else:
                    self._names.add(os.fsdecode(name))
        if self._names:
            self._ready.set()

    async def changed(self, timeout: float) -> set[str]:
        """The names that changed since the last call; waits up to `timeout` for one."""
        if not self._names:
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                pass
        names, self._names = self._names, set()
        self._ready.clear()
        return names

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
