"""Put on the daemon's PYTHONPATH by the fault matrix: SIGUSR1 prints every asyncio task's stack.

Why: a daemon that does not exit on SIGTERM is idle in `select()` with some task still
waiting, and only the tasks' stacks say which one (a thread dump shows nothing). The handler
runs in the main thread between two bytecodes of the event loop, reads the running loop's
tasks and writes them to the file named by `FAULT_MATRIX_TASKDUMP` (stderr without it),
ending with `END` so that the harness waits for the whole dump, not for a guessed time. The
daemon itself never uses SIGUSR1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import traceback
from types import FrameType
from typing import TextIO

END = "=== end of task dump ===\n"


def _write(out: TextIO, frame: FrameType | None) -> None:
    loop = asyncio._get_running_loop()
    print("=== asyncio tasks ===", file=out)
    if loop is not None:
        for task in asyncio.all_tasks(loop):
            print(f"--- {task.get_name()}: cancel requests pending {task.cancelling()}", file=out)
            task.print_stack(file=out)
    print("=== main thread ===", file=out)
    traceback.print_stack(frame, file=out)
    out.write(END)
    out.flush()


def _dump(signum: int, frame: FrameType | None) -> None:
    path = os.environ.get("FAULT_MATRIX_TASKDUMP")
    if not path:
        _write(sys.stderr, frame)
        return
    with open(path, "a", encoding="utf-8") as out:
        _write(out, frame)


signal.signal(signal.SIGUSR1, _dump)
