"""Rule evaluation on the PromQL engine: 200 rules over 5,000 series with 1 h of 1 s history,
side by side with a real Prometheus evaluating the same rule group, and the daemon's CPU at the
shipped config.

    .venv/bin/python bench/bench_rules.py [--cycles 30] [--prom-seconds 180] [--daemon-seconds 60]

1. Ours: 5,000 series (50 metrics x 100 instances; 25 counters, 25 gauges) with one sample a
   second for an hour (18,000,000 samples) in a `monitor.history.History`, loaded through its own
   dump format (the file is written one series at a time, so the bench holds no copy of it);
   200 rules = the shipped `alert_rules.yaml` rules + generated ones using ranges
   (rate, increase, max_over_time, predict_linear, deriv, quantile_over_time), aggregations
   (sum/avg/max by, topk, quantile, count) and joins (on/ignoring, group_left, and/unless).
   `monitor.rules.engine.evaluate` runs `--cycles` times, each one second later after one new
   sample per series: time per cycle p50/p99 (after one cycle more, the first after the load,
   reported on its own: it computes the sums the next cycles keep, as Prometheus's readings
   start after its first minute). RSS of the history: the process's RSS after the
   load minus before, per sample; and the sample arrays' own bytes per sample.
2. Prometheus (Debian's /usr/bin/prometheus, a free port, a temporary storage dir) holds the same
   hour: the same 5,000 series' values for the hour before it starts are backfilled into its data
   dir (`promtool tsdb create-blocks-from openmetrics`; the seconds that pass while promtool
   works are backfilled in further rounds, so only a few are missing), then it scrapes them every second from a
   tiny /metrics server in this process and evaluates the same rule group (the `export-rules`
   output of the generated config) every second; its `prometheus_rule_group_last_duration_seconds`
   is read every second for `--prom-seconds` (p50/p99 of the readings after the first minute).
   Both sides' values are one function of the epoch second, so the backfill and the scrapes are
   one series.
3. The daemon at the shipped config: `portal-monitor run -c alert_rules.yaml` for
   `--daemon-seconds` with every check enabled against closed ports (they run and fail fast),
   CPU seconds per second from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.config.loader import load_config  # noqa: E402
from monitor.history import History, Snapshot, write_snapshot  # noqa: E402
from monitor.model import Sample  # noqa: E402
from monitor.rules.engine import AlertStates, compile_rules, evaluate  # noqa: E402
from monitor.rules.export import export_prometheus  # noqa: E402

METRICS = 50
INSTANCES = 100
HOUR = 3600
N_RULES = 200


def series_labels() -> list[dict[str, str]]:
    out = []
    for m in range(METRICS):
        for i in range(INSTANCES):
            out.append({"__name__": f"bench_m{m}", "instance": f"i{i}", "job": f"j{i % 10}"})
    return out


def value(m: int, i: int, t: int) -> float:
    if m < METRICS // 2:  # counters: steady rates, a reset now and then
        return float(((m + 1) * (i + 1) * t // 7) % 10_000_000)
    return 50.0 + 40.0 * math.sin((t + 37 * i) / (300.0 + 10 * m)) + (i % 7)


class _Generated:
    """A Snapshot's series list made one series at a time as the writer reads it."""

    def __init__(self, t_end: int) -> None:
        self.labels = series_labels()
        self.t0 = t_end - HOUR + 1
        self.rel = array("I", range(0, HOUR * 1000, 1000))

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):  # type: ignore[no-untyped-def]
        for k, lb in enumerate(self.labels):
            m, i = divmod(k, INSTANCES)
            vs = array("d", (value(m, i, self.t0 + s) for s in range(HOUR)))
            yield tuple(sorted(lb.items())), self.t0 * 1000, self.rel, vs, array("q"), HOUR, 0


def write_dump(t_end: int, path: Path) -> None:
    """One hour of 1 s samples for every series, in History's dump format, one series at a time."""
    keys = [tuple(sorted(lb.items())) for lb in series_labels()]
    write_snapshot(Snapshot(_Generated(t_end), {"bench": keys}), path)  # type: ignore[arg-type]


def load_history(path: Path) -> History:
    history = History(retention_s=HOUR + 600, max_samples=20_000_000)
    history.load(path)
    return history


def generated_rules(n: int) -> list[str]:
    """YAML rule lines: ranges, aggregations and joins over the bench series."""
    c = [f"bench_m{m}" for m in range(METRICS // 2)]
    g = [f"bench_m{m}" for m in range(METRICS // 2, METRICS)]
    shapes = [
        lambda k: f"rate({c[k % len(c)]}[5m]) > 1e9",
        lambda k: f"increase({c[k % len(c)]}[10m]) > 1e12",
        lambda k: f"sum by (job) (rate({c[k % len(c)]}[5m])) > 1e9",
        lambda k: f"max_over_time({g[k % len(g)]}[15m]) > 1000",
        lambda k: f"predict_linear({g[k % len(g)]}[30m], 3600) > 1000",
        lambda k: f"deriv({g[k % len(g)]}[10m]) > 100",
        lambda k: f"avg without (instance) ({g[k % len(g)]}) > 1000",
        lambda k: f"topk(3, {g[k % len(g)]}) > 1000",
        lambda k: f"quantile(0.9, {g[k % len(g)]}) > 1000",
        lambda k: f"{g[k % len(g)]} / on (instance, job) {g[(k + 1) % len(g)]} > 100",
        lambda k: f"{g[k % len(g)]} > 1000 and on (instance) {g[(k + 2) % len(g)]} > 0",
        lambda k: f"{g[k % len(g)]} > 80 unless on (instance) {g[(k + 3) % len(g)]} < 10",
        lambda k: f"{g[k % len(g)]} * on (job) group_left sum by (job) ({g[(k + 4) % len(g)]}) > 1e9",
        lambda k: f"count by (job) ({g[k % len(g)]} > 60) > 1000",
        lambda k: f"quantile_over_time(0.99, {g[k % len(g)]}[5m]) > 1000",
    ]
    out = []
    for k in range(n):
        expr = shapes[k % len(shapes)](k)
        out.append(f"  - {{alert: Bench{k}, expr: '{expr}', for: 1m, severity: P4}}")
    return out


def bench_config(tmp: Path) -> Path:
    """The shipped rules + generated ones up to N_RULES, as a config file."""
    shipped = load_config(ROOT / "alert_rules.yaml", env={})
    n_shipped = len(shipped.root.rules)
    text = (ROOT / "alert_rules.yaml").read_text()
    head, _, rest = text.partition("\nrules:\n")
    if not rest:
        raise SystemExit("alert_rules.yaml has no top-level rules: block")
    # the shipped rules stay as they are; the generated ones go right after `rules:`
    path = tmp / "bench_rules.yaml"
    path.write_text(head + "\nrules:\n" + "\n".join(generated_rules(N_RULES - n_shipped)) + "\n" + rest)
    return path


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


# ---------------------------------------------------------------- ours


def run_ours(cfg_path: Path, cycles: int, t_end: int, tmp: Path) -> dict[str, float]:
    cfg = load_config(cfg_path, env={})
    rules = compile_rules(cfg)
    dump = tmp / "history.msgpack"
    write_dump(t_end, dump)
    before = rss()
    history = load_history(dump)
    after = rss()
    dump.unlink()
    samples = history.sample_count
    _, nbytes = history.usage()
    labels = series_labels()
    state = AlertStates()
    times, cpu = [], []
    for k in range(cycles + 1):
        t = t_end + 1 + k
        history.append(t, [Sample(lb["__name__"], {x: y for x, y in lb.items() if x != "__name__"},
                                  value(j // INSTANCES, j % INSTANCES, t)) for j, lb in enumerate(labels)],
                       source="bench")
        started, cpu0 = time.perf_counter(), time.process_time()
        state, _ = evaluate(rules, history, state, datetime.fromtimestamp(t, UTC))
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu0)
    first, first_cpu = times.pop(0), cpu.pop(0)  # the first after the load: sums over whole windows
    print("ours, wall ms per cycle: " + " ".join(f"{x * 1000:.0f}" for x in times), flush=True)
    return {
        "first": first,
        "first_cpu": first_cpu,
        "rules": len(rules),
        "series": history.series_count,
        "samples": samples,
        "p50": pct(times, 0.5),
        "p99": pct(times, 0.99),
        "cpu_p50": pct(cpu, 0.5),
        "cpu_p99": pct(cpu, 0.99),
        "rss_per_sample": (after - before) / samples,
        "arrays_per_sample": nbytes / samples,
        "alerts": len(state.alerts),
    }


# ---------------------------------------------------------------- Prometheus


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve_metrics(port: int) -> asyncio.AbstractServer:
    labels = series_labels()

    def body() -> bytes:
        t = int(time.time())  # the value at this epoch second, as in the backfill
        lines = []
        for j, lb in enumerate(labels):
            v = value(j // INSTANCES, j % INSTANCES, t)
            lines.append(f'{lb["__name__"]}{{instance="{lb["instance"]}",job_="{lb["job"]}"}} {v!r}')
        return ("\n".join(lines) + "\n").encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                data = body()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                             + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # Prometheus went away, or the bench is closing the server
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def read_metric(port: int, name: str) -> float | None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def backfill(tmp: Path) -> tuple[float, int]:
    """The hour before now of every series into Prometheus blocks under tmp/data, then the seconds
    that passed while promtool worked, again (at most 6 rounds), until less than 5 s are missing;
    returns the seconds it took and the seconds still missing when Prometheus starts scraping."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise SystemExit("promtool not found (Debian's prometheus package has it)")
    labels = series_labels()
    started = time.perf_counter()
    end = int(time.time())
    start = end - HOUR
    for _ in range(6):
        text = tmp / "backfill.om"
        with text.open("w") as f:
            for m in range(METRICS):
                f.write(f"# TYPE bench_m{m} gauge\n")
                for i in range(INSTANCES):
                    lb = labels[m * INSTANCES + i]
                    head = f'bench_m{m}{{instance="{lb["instance"]}",job="{lb["job"]}"}} '
                    f.writelines(f"{head}{value(m, i, t)!r} {t}\n" for t in range(start, end))
            f.write("# EOF\n")
        subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(text), str(tmp / "data")],
                       check=True, stdout=subprocess.DEVNULL, timeout=3600)
        text.unlink()
        start, end = end, int(time.time())
        if end - start < 5:
            break
    return time.perf_counter() - started, end - start


async def run_prometheus(rule_file: Path, seconds: int) -> dict[str, float]:
    prom = shutil.which("prometheus")
    if prom is None:
        return {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-prom-"))
    target, web = free_port(), free_port()
    took, missing = backfill(tmp)
    print(f"prometheus: an hour of history backfilled in {took:.0f} s ({missing} s not backfilled)", flush=True)
    server = await serve_metrics(target)
    # the series carry job_ (not job: Prometheus's own job label would overwrite it); the rules
    # use `job`, so the scrape renames job_ back with a metric relabelling
    (tmp / "prometheus.yml").write_text(f"""\
global: {{scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 1s}}
rule_files: [{rule_file}]
scrape_configs:
  - job_name: bench
    honor_labels: true
    static_configs: [{{targets: ['127.0.0.1:{target}']}}]
    metric_relabel_configs:
      - {{source_labels: [job_], target_label: job}}
      - {{regex: job_, action: labeldrop}}
""")
    proc = subprocess.Popen([prom, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
                             f"--web.listen-address=127.0.0.1:{web}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    readings: list[float] = []
    cpu0 = None
    try:
        started = time.time()
        while time.time() - started < seconds:
            await asyncio.sleep(1.0)  # one reading a second, as the group evaluates every second
            try:
                v = await read_metric(web, "prometheus_rule_group_last_duration_seconds")
            except (OSError, TimeoutError):
                continue
            if v is not None and time.time() - started > 60:
                readings.append(v)
                if cpu0 is None:
                    cpu0 = (psutil.Process(proc.pid).cpu_times(), time.time())
        cpu1 = (psutil.Process(proc.pid).cpu_times(), time.time())
        rss_prom = psutil.Process(proc.pid).memory_info().rss
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if not readings or cpu0 is None:
        return {}
    cpu = (cpu1[0].user + cpu1[0].system - cpu0[0].user - cpu0[0].system) / (cpu1[1] - cpu0[1])
    return {"p50": pct(readings, 0.5), "p99": pct(readings, 0.99), "n": len(readings), "cpu": cpu,
            "rss": rss_prom, "history_s": HOUR}


# ---------------------------------------------------------------- the daemon at the shipped config


def run_daemon(seconds: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    closed = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DATABASE_", "WHMCS_", "BFF_"))}
    env.update({
        "PORTAL_MONITOR_LISTEN": f"127.0.0.1:{free_port()}",
        "PORTAL_MONITOR_STATE_DIR": str(tmp / "state"),
        "REDIS_URL": f"redis://127.0.0.1:{closed}/0",
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed}/postgres",
        "WHMCS_API_URL": f"http://127.0.0.1:{closed}/includes/api.php",
        "WHMCS_API_IDENTIFIER": "bench", "WHMCS_API_SECRET": "bench-secret",
        "BFF_HEALTH_URL": f"http://127.0.0.1:{closed}/health",
        "BFF_LOG_DIR": str(tmp),
    })
    (tmp / "combined.log").touch()
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "-c", str(ROOT / "alert_rules.yaml"),
                             "--log-level", "error"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(10)  # start-up and the first round of checks are not the steady state
        p = psutil.Process(proc.pid)
        c0, t0 = p.cpu_times(), time.time()
        time.sleep(seconds)
        c1, t1 = p.cpu_times(), time.time()
        mem = p.memory_info().rss
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    cpu = (c1.user + c1.system - c0.user - c0.system) / (t1 - t0)
    return {"cpu": cpu, "rss": mem}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=30)
    ap.add_argument("--prom-seconds", type=int, default=180)
    ap.add_argument("--daemon-seconds", type=int, default=60)
    ap.add_argument("--skip-prometheus", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-rules-"))
    cfg_path = bench_config(tmp)
    rule_file = tmp / "rules.prom.yml"
    rule_file.write_text(export_prometheus(load_config(cfg_path, env={})))
    t_end = 1_800_000_000
    print(f"rules: {cfg_path} ({N_RULES} rules), Prometheus rule file: {rule_file}", flush=True)
    ours = run_ours(cfg_path, args.cycles, t_end, tmp)
    print(f"ours, 1 h history: {ours}", flush=True)
    prom: dict[str, float] = {}
    if not args.skip_prometheus:
        prom = asyncio.run(run_prometheus(rule_file, args.prom_seconds))
        print(f"prometheus (1 h backfilled, then {args.prom_seconds} s of 1 s scrapes): {prom}", flush=True)
    daemon = run_daemon(args.daemon_seconds)
    print(f"daemon at the shipped config: {daemon}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    ms = 1000.0
    print()
    print("| | rules | series | history | eval p50 | eval p99 | CPU per cycle p50 / p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| ours | {ours['rules']} | {ours['series']:,} | 1 h at 1 s ({ours['samples']:,} samples) | "
          f"{ours['p50'] * ms:.0f} ms | {ours['p99'] * ms:.0f} ms | "
          f"{ours['cpu_p50'] * ms:.0f} / {ours['cpu_p99'] * ms:.0f} ms |")
    print(f"(ours, the first cycle after the load, not in the percentiles: {ours['first'] * ms:.0f} ms wall, "
          f"{ours['first_cpu'] * ms:.0f} ms CPU)")
    if prom:
        print(f"| Prometheus (`prometheus_rule_group_last_duration_seconds`, {int(prom['n'])} readings) | "
              f"{ours['rules']} | {ours['series']:,} | 1 h at 1 s (backfilled) + scrapes | {prom['p50'] * ms:.0f} ms | "
              f"{prom['p99'] * ms:.0f} ms | ({prom['cpu']:.2f} CPU s/s for scraping and rules) |")
        print(f"ours / Prometheus: p50 {ours['p50'] / prom['p50']:.2f}, p99 {ours['p99'] / prom['p99']:.2f}")
    print()
    print(f"history RSS: {ours['rss_per_sample']:.1f} B/sample (process RSS growth while loading the dump), "
          f"{ours['arrays_per_sample']:.1f} B/sample (sample arrays)")
    if prom:
        print(f"Prometheus while evaluating: {prom['cpu']:.2f} CPU s/s, RSS {prom['rss'] / 2**20:.0f} MiB")
    print(f"daemon at the shipped config: {daemon['cpu']:.3f} CPU s/s, RSS {daemon['rss'] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
