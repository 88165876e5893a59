"""The reference stack (Prometheus, Alertmanager, three exporters) as child processes.

What: installs Debian's packages when they are missing (as root), renders the configs of
`bench/compare/config/` with free loopback ports, starts each component directly (not
through its systemd unit) in a process group of its own, waits until each answers, and
stops them all, even on failure; reads Prometheus' scrape-to-evaluation offsets.

Why a module of its own: the runner (`run.py`) only orchestrates; everything that knows the
reference stack's binaries, flags and ports lives here, so the comparison reads as one page.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import shutil
import signal
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from tests.servers import free_port, pg_bin_dir

CONFIG_DIR = Path(__file__).resolve().parent / "config"
LOOPBACK = "127.0.0.1"

# Debian package -> the binary it installs (the systemd unit has the package's name).
PACKAGES: dict[str, str] = {
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "prometheus-redis-exporter": "prometheus-redis-exporter",
    "prometheus-postgres-exporter": "prometheus-postgres-exporter",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
    "mtail": "mtail",
}
_PR_SET_PDEATHSIG = 1
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class SetupError(RuntimeError):
    """The reference stack cannot be installed or started; the message says what and how to fix it."""


# ---------------------------------------------------------------- installing


def _run(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def require_servers() -> None:
    """The disposable targets need redis-server and PostgreSQL's server binaries (as `make
    test` does). Not installed here: Debian's postgresql package would start a cluster on 5432."""
    missing = [name for name, ok in (("redis-server", shutil.which("redis-server") is not None),
                                     ("postgresql", pg_bin_dir() is not None)) if not ok]
    if missing:
        raise SetupError(f"missing {' and '.join(missing)} (the disposable Redis/PostgreSQL targets); "
                         f"install them as for `make test`: apt-get install {' '.join(missing)}")


def missing_packages() -> list[str]:
    return [pkg for pkg, binary in PACKAGES.items() if shutil.which(binary) is None]


def ensure_installed() -> list[str]:
    """Install the missing packages with apt-get (root only); returns what was installed.

    Packages may start their services on install (systemd, or sysv-init where policy-rc.d
    allows it): those are stopped and disabled at once, so only the processes this runner
    starts, on ports it chose, take part. Raises SetupError when not root or apt-get fails."""
    missing = missing_packages()
    if not missing:
        return []
    cmd = "apt-get update && apt-get install -y --no-install-recommends " + " ".join(missing)
    if os.geteuid() != 0:
        raise SetupError(f"missing Debian packages {', '.join(missing)}; as root run: {cmd}")
    print(f"installing {' '.join(missing)} with apt-get", file=sys.stderr)
    for argv in (["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]):
        done = _run(argv, timeout_s=900)
        if done.returncode != 0:
            raise SetupError(f"`{' '.join(argv)}` failed ({done.returncode}):\n{done.stderr[-2000:]}")
    still = missing_packages()
    if still:
        raise SetupError(f"apt-get installed {', '.join(missing)} but {', '.join(still)} still has no binary")
    _stop_services(missing)
    return missing


def _stop_services(units: list[str]) -> None:
    """Stop and disable the services of the packages just installed (never redis or postgresql)."""
    if Path("/run/systemd/system").is_dir():
        _run(["systemctl", "disable", "--now", *units], timeout_s=120)
        return
    for unit in units:
        if Path("/etc/init.d", unit).exists():
            _run(["invoke-rc.d", unit, "stop"], timeout_s=60)
            _run(["update-rc.d", unit, "disable"], timeout_s=60)


def versions() -> dict[str, str]:
    """Debian version of each reference package, as dpkg knows it."""
    out: dict[str, str] = {}
    for pkg in PACKAGES:
        done = _run(["dpkg-query", "-W", "-f", "${Version}", pkg], timeout_s=30)
        out[pkg] = done.stdout.strip() if done.returncode == 0 else "?"
    return out


# ---------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """Child pre-exec hook: SIGKILL when the runner dies without cleaning up."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Component:
    """One reference process: its command line, the URL that answers 200 once it is up."""

    name: str
    argv: list[str]
    ready_url: str
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, workdir: Path) -> None:
        self.log_path = workdir / f"{self.name}.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.env}, cwd=workdir, start_new_session=True,
                                         preexec_fn=_die_with_parent)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:]) if self.log_path else ""
        except OSError:
            return "<no log>"

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after STOP_TIMEOUT_S."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait_s)
                return
            except subprocess.TimeoutExpired:
                continue


@dataclass
class ReferenceStack:
    """Prometheus + Alertmanager + redis/postgres/blackbox exporters, on free loopback ports."""

    workdir: Path
    redis_url: str
    postgres_dsn: str
    health_url: str
    webhook_url: str
    ports: dict[str, int] = field(default_factory=dict)
    components: list[Component] = field(default_factory=list)

    def render(self) -> None:
        """Write the configs into `workdir` with the chosen ports."""
        self.ports = {k: free_port() for k in ("prometheus", "alertmanager", "redis_exporter", "postgres_exporter",
                                               "blackbox")}
        values = {"alertmanager_port": self.ports["alertmanager"],
                  "redis_exporter_port": self.ports["redis_exporter"],
                  "postgres_exporter_port": self.ports["postgres_exporter"],
                  "blackbox_port": self.ports["blackbox"],
                  "health_url": self.health_url, "webhook_url": self.webhook_url}
        for name in ("prometheus.yml", "alertmanager.yml"):
            text = string.Template((CONFIG_DIR / name).read_text()).substitute(values)
            (self.workdir / name).write_text(text)
        for name in ("rules.yml", "blackbox.yml"):
            shutil.copy(CONFIG_DIR / name, self.workdir / name)

    def build(self) -> list[Component]:
        p, w = self.ports, self.workdir
        at = lambda k: f"{LOOPBACK}:{p[k]}"  # noqa: E731
        dsn = self.postgres_dsn + ("&" if "?" in self.postgres_dsn else "?") + "sslmode=disable"
        return [
            Component("redis_exporter", ["prometheus-redis-exporter", f"--redis.addr={self.redis_url}",
                                         f"--web.listen-address={at('redis_exporter')}"],
                      f"http://{at('redis_exporter')}/metrics"),
            Component("postgres_exporter", ["prometheus-postgres-exporter",
                                            f"--web.listen-address={at('postgres_exporter')}"],
                      f"http://{at('postgres_exporter')}/metrics", env={"DATA_SOURCE_NAME": dsn}),
            Component("blackbox_exporter", ["prometheus-blackbox-exporter", f"--config.file={w / 'blackbox.yml'}",
                                            f"--web.listen-address={at('blackbox')}"],
                      f"http://{at('blackbox')}/metrics"),
            Component("alertmanager", ["prometheus-alertmanager", f"--config.file={w / 'alertmanager.yml'}",
                                       f"--storage.path={w / 'am-data'}", f"--web.listen-address={at('alertmanager')}",
                                       "--cluster.listen-address="],
                      f"http://{at('alertmanager')}/-/ready"),
            Component("prometheus", ["prometheus", f"--config.file={w / 'prometheus.yml'}",
                                     f"--storage.tsdb.path={w / 'prom-data'}",
                                     f"--web.listen-address={at('prometheus')}"],
                      f"http://{at('prometheus')}/-/ready"),
        ]

    @property
    def prometheus_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['prometheus']}"

    async def start(self) -> None:
        """Render, spawn every component, and return once each answers its ready URL."""
        self.render()
        self.components = self.build()
        for c in self.components:
            c.start(self.workdir)
        async with aiohttp.ClientSession() as s:
            for c in self.components:
                await _wait_ready(s, c)

    def stop(self) -> None:
        for c in reversed(self.components):
            c.stop()

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.components if c.proc is not None]

    async def query(self, session: aiohttp.ClientSession, expr: str) -> list[float]:
        """The values of an instant PromQL query (empty when no series)."""
        data = await self._get(session, "/api/v1/query?" + urlencode({"query": expr}))
        return [float(item["value"][1]) for item in data["result"]]


    async def _get(self, session: aiohttp.ClientSession, path: str) -> Any:
        async with session.get(f"{self.prometheus_url}{path}", timeout=aiohttp.ClientTimeout(total=5)) as r:
            body = await r.json()
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path} failed at {self.prometheus_url}: {body}")
        return body["data"]

    async def eval_offsets(self, session: aiohttp.ClientSession, interval_s: float = 1.0) -> dict[str, float]:
        """Per scrape job: how long after its scrape starts the rule group evaluates, modulo
        the interval. Prometheus fixes both phases by hashing (the target, with its port; the
        rule group), so this offset is a constant of one run, and the reference's latency is
        about uniform over [offset, offset + interval]."""
        targets = (await self._get(session, "/api/v1/targets"))["activeTargets"]
        groups = (await self._get(session, "/api/v1/rules"))["groups"]
        evaluated = _rfc3339(groups[0]["lastEvaluation"])
        return {t["labels"]["job"]: (evaluated - _rfc3339(t["lastScrape"])) % interval_s for t in targets}


_NANOS = re.compile(r"(\.\d{6})\d+")


def _rfc3339(text: str) -> float:
    """Seconds since the epoch of Prometheus' RFC 3339 times (nanoseconds cut to micro)."""
    return datetime.fromisoformat(_NANOS.sub(r"\1", text)).timestamp()


async def _wait_ready(session: aiohttp.ClientSession, c: Component) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if c.proc is not None and c.proc.poll() is not None:
            raise SetupError(f"{c.name} exited with {c.proc.returncode}:\n{c.log_tail()}")
        try:
            async with session.get(c.ready_url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                if r.status == 200:
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise SetupError(f"{c.name} not ready at {c.ready_url} after {READY_TIMEOUT_S:.0f}s:\n{c.log_tail()}")
        await asyncio.sleep(0.1)  # waiting for a process to start listening, bounded by the deadline
