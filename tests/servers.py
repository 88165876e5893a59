"""Disposable Redis and PostgreSQL servers for tests: spawn, stop, crash, restart.

The tests of the `redis` and `postgres` checks (and the end-to-end and scheduler tests)
talk to real servers, never to the machine's own (6379, 5432): each server here runs on a
free loopback port, in its own temporary directory, and dies with the test process.

    server = RedisServer(workdir)          # or PostgresServer(workdir, max_connections=20)
    server.start()                         # returns once the server answers
    server.url / server.dsn, server.port
    server.stop()                          # clean shutdown (Redis SIGTERM, PostgreSQL "fast" = SIGINT)
    server.kill()                          # SIGKILL to the server and all its processes: a crash
    server.start()                         # again, on the same port and data directory
    server.ensure_running()                # start() unless it runs

Each server gets SIGKILL if the thread that started it dies (PR_SET_PDEATHSIG), so a
killed pytest leaves no server behind: call start() from the main thread, not from
`asyncio.to_thread` or an executor, whose threads may end before the test does.

The API is synchronous on purpose: a test calls it between awaits, and a start blocks the
event loop only for the few milliseconds the server needs. `wait_ready()` polls the server
(a PING, the `postmaster.pid` status line) under a bounded deadline; it does not sleep for
time to pass, it waits for the server.

PostgreSQL refuses to run as root. When the tests run as root, the data directory is
created under /tmp (the pytest base directory is 0700 root) owned by the `postgres` user, and
initdb/postgres run as that user via `subprocess.Popen(user=..., group=...)`, which is what
`runuser -u postgres --` would do, minus the extra parent process: the pid we hold is the
server's own, so the signals of stop()/kill() reach it directly.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

LOOPBACK = "127.0.0.1"
PORTS = (20000, 32768)  # where free_port() picks: below Linux's default ephemeral range (32768-60999)
_PICK = random.SystemRandom()  # not the seeded `random`: parallel test runs must not pick alike
PG_MAX_CONNECTIONS = 20  # small, so that saturating the test cluster takes only a few connections
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on the loopback that nothing is bound to right now, below the kernel's
    ephemeral range (`PORTS`, so never 6379 or 5432).

    Not from the ephemeral range: a server binds its port seconds after it was chosen
    (initdb first) and binds it again at every restart, and in between any outgoing
    connection on the machine may be given that port as its local one; the server then
    fails with "Address already in use". Below the range only another listener can take it."""
    for _ in range(1000):  # bounded: the range has thousands of ports, a handful in use
        port = _PICK.randrange(*PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {PORTS[0]}-{PORTS[1] - 1} after 1000 tries")


def _die_with_parent() -> None:
    """Child pre-exec hook: the server gets SIGKILL if the test process dies without cleanup."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


class _Process:
    """One server process in its own process group, logging to a file."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self, argv: Sequence[str], **popen: Any) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} already runs (pid {self.proc.pid})")  # type: ignore[union-attr]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent, **popen,
            )

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{_log_tail(self.log_path)}")

    def stop(self, sig: signal.Signals, timeout_s: float) -> None:
        """Send `sig`, wait up to `timeout_s` for the exit, then kill()."""
        if not self.running:
            return
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self, timeout_s: float = 10.0) -> None:
        """SIGKILL the server and every process under it, as in a crash of the whole machine.

        Not a killpg: PostgreSQL backends call setsid() and live in groups of their own; they
        would outlive the postmaster and keep answering their clients until they notice. The
        server is frozen first (SIGSTOP) so it forks nothing while we list its children, and
        kill() returns once all of them are dead, so their sockets are closed by then."""
        if not self.running:
            return
        assert self.proc is not None
        try:
            server = psutil.Process(self.proc.pid)
            server.suspend()
            family = [server, *server.children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for p in family:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        for p in family[1:]:  # reparented to init, which reaps them: wait until they are dead
            while _alive(p) and time.monotonic() < deadline:
                time.sleep(0.001)


def _alive(p: psutil.Process) -> bool:
    try:
        return bool(p.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _poll(ready: Any, what: str, proc: _Process, timeout_s: float) -> None:
    """Call `ready()` until it is true, the process dies, or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        proc.check_alive()
        if ready():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout_s}s:\n{_log_tail(proc.log_path)}")
        time.sleep(0.01)  # poll interval while the server starts; the deadline bounds the loop


class RedisServer:
    """A `redis-server` without persistence on a free loopback port.

    `args` are extra command-line options (e.g. `["--requirepass", "s3cret"]`); data is
    lost on every stop/kill (`--save "" --appendonly no`). With `tls=(cert, key)` the port
    speaks only TLS (clients are not asked for certificates) and `url` is `rediss://`.
    """

    def __init__(self, workdir: Path, *, port: int | None = None, args: Sequence[str] = (),
                 tls: tuple[Path, Path] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.args = list(args)
        self.tls = tls
        self.binary = shutil.which("redis-server") or "redis-server"
        self._proc = _Process(f"redis-server :{self.port}", self.workdir / "redis.log")

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{LOOPBACK}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc.running

    def start(self) -> None:
        ports = ["--port", str(self.port)]
        if self.tls:
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls[0]),
                     "--tls-key-file", str(self.tls[1]), "--tls-auth-clients", "no"]
        self._proc.spawn([
            self.binary, *ports, "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
            "--dir", str(self.workdir), "--daemonize", "no", *self.args,
        ])
        self.wait_ready()

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Until the server answers PING with anything but -LOADING (NOAUTH counts as up)."""
        _poll(self._answers_ping, f"redis-server on port {self.port}", self._proc, timeout_s)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1.0) as raw:
                s = raw
                if self.tls:
                    ctx = ssl.create_default_context(cafile=str(self.tls[0]))
                    s = ctx.wrap_socket(raw, server_hostname=LOOPBACK)
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
        except OSError:  # ssl.SSLError is an OSError too
            return False
        return bool(reply) and not reply.startswith(b"-LOADING")

    def stop(self) -> None:
        self._proc.stop(signal.SIGTERM, timeout_s=10.0)

    def kill(self) -> None:
        self._proc.kill()


def pg_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb and postgres."""
    found = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "initdb").exists()]
    found.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    return found[-1] if found else None


class PostgresServer:
    """A throwaway PostgreSQL cluster: initdb'd in `workdir`, trust auth, superuser `postgres`.

    `max_connections` is small (PG_MAX_CONNECTIONS = 20 by default) so saturation tests need only a few
    connections; superuser_reserved_connections stays at its default (3), so ordinary
    roles get max_connections - 3 and the superuser `postgres` all of them. Durability is
    off (fsync, full_page_writes): a kill() is a process crash, not an OS crash, and crash
    recovery on the next start() still works.
    """

    def __init__(self, workdir: Path, *, port: int | None = None,
                 max_connections: int = PG_MAX_CONNECTIONS) -> None:
        bindir = pg_bin_dir()
        if bindir is None:
            raise FileNotFoundError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bindir = bindir
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.port = port or free_port()
        self.max_connections = max_connections
        self._as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            self._as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            self.workdir.mkdir(parents=True, exist_ok=True)
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        else:
            self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc = _Process(f"postgres :{self.port}", self.workdir / "postgres.log")
        self._initdb()

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/postgres"

    @property
    def socket_dir(self) -> Path:
        return self.workdir

    @property
    def running(self) -> bool:
        return self._proc.running

    def _initdb(self) -> None:
        result = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
             "--no-locale", "-E", "UTF8", "--no-sync"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, **self._as_user,
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb {self.data_dir} failed ({result.returncode}):\n{result.stderr}")

    def start(self) -> None:
        self._proc.spawn([
            str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-k", str(self.socket_dir), "-c", f"listen_addresses={LOOPBACK}",
            "-c", f"max_connections={self.max_connections}",
            "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
            "-c", "shared_buffers=16MB", "-c", "logging_collector=off",
        ], **self._as_user)
        self.wait_ready()

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until `postmaster.pid` of *this* process says `ready` (what `pg_ctl -w` waits for)."""
        _poll(self._pid_file_ready, f"postgres on port {self.port}", self._proc, timeout_s)

    def _pid_file_ready(self) -> bool:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        pid = self._proc.proc.pid if self._proc.proc else None
        return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are disconnected, nothing waits for them."""
        self._proc.stop(signal.SIGINT, timeout_s=30.0)

    def kill(self) -> None:
        self._proc.kill()
