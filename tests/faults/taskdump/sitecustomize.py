"""Put on the daemon's PYTHONPATH by the fault matrix: SIGUSR1 prints every asyncio task's stack.

Why: a daemon that does not exit on SIGTERM is idle in `select()` with some task still
waiting, and only the tasks' stacks say which one (a thread dump shows nothing). The handler
runs in the main thread between two bytecodes of the event loop, reads the running loop's
tasks and prints them to stderr, which the harness reports. The daemon itself never uses
SIGUSR1.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import traceback
from types import FrameType


def _dump(signum: int, frame: FrameType | None) -> None:
    loop = asyncio._get_running_loop()
    print("=== asyncio tasks ===", file=sys.stderr)
    if loop is not None:
        for task in asyncio.all_tasks(loop):
            print(f"--- {task.get_name()}: cancel requests pending {task.cancelling()}", file=sys.stderr)
            task.print_stack(file=sys.stderr)
    print("=== main thread ===", file=sys.stderr)
    traceback.print_stack(frame, file=sys.stderr)
    sys.stderr.flush()


signal.signal(signal.SIGUSR1, _dump)
