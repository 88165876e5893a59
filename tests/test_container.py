"""The container image, checked without a Docker engine (none runs on this machine).

What is verified here: the Dockerfile's structure (stages, base image, non-root final user,
only the venv and the config copied into the final stage, EXPOSE = the listen port, the
volume = the state directory, CMD), the HEALTHCHECK command itself run against a real
`/-/healthy`, and, in the slow test, the image's steps replayed in a plain venv: the build
stage's COPY set installed as its RUN lines do (the lock with `--require-hashes`, then the
package with `--no-deps`), then `check-config` and the daemon run
with the final stage's environment, as the image's non-root uid, answering the HEALTHCHECK.
What is not: the base image itself, `docker build`, layer contents, and the container's
user/filesystem as Docker would set them up.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from monitor.config.loader import load_config
from monitor.config.model import DEFAULT_LISTEN
from monitor.web.metrics import make_metrics_handler
from monitor.web.server import build_app, split_listen

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CONFIG_PATH = "/etc/portal-monitor/alert_rules.yaml"
STATE_DIR = "/var/lib/portal-monitor"
VENV_DIR = "/opt/portal-monitor/venv"
ENV_FILE = REPO / "systemd" / "portal-monitor.env"


# ---------------------------------------------------------------------- a small Dockerfile reader


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [args for o, args in self.instructions if o == op]

    def last(self, op: str) -> str:
        found = self.all(op)
        assert found, f"stage {self.name or self.base} has no {op}"
        return found[-1]

    def env(self) -> dict[str, str]:
        """ENV key=value pairs (shell-quoted, as Docker reads them), `$PATH` left unexpanded."""
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                out[key] = value
        return out

    def copies(self) -> list[tuple[str | None, list[str], str]]:
        """(from-stage or None for the build context, sources, destination) of each COPY."""
        out = []
        for args in self.all("COPY"):
            words = args.split()
            src_stage = None
            while words[0].startswith("--"):
                flag = words.pop(0)
                if flag.startswith("--from="):
                    src_stage = flag.removeprefix("--from=")
            out.append((src_stage, words[:-1], words[-1]))
        return out


def parse_dockerfile(path: Path) -> list[Stage]:
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        if raw.strip().startswith("#") and not pending:
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line:
            lines.append(line)
    stages: list[Stage] = []
    for line in lines:
        op, _, args = line.partition(" ")
        op, args = op.upper(), args.strip()
        if op == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            assert m, line
            stages.append(Stage(m[1], m[2]))
        else:
            assert stages, f"{op} before FROM"
            stages[-1].instructions.append((op, args))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE)


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(x, str) for x in value), args
    return value


def _healthcheck_command(stage: Stage) -> tuple[list[str], str]:
    """(the HEALTHCHECK's exec-form command, its options)."""
    args = stage.last("HEALTHCHECK")
    m = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(\[.*\])", args)
    assert m, f"HEALTHCHECK must be `[options] CMD [exec form]`: {args}"
    return _exec_form(m[2]), m[1]


# ---------------------------------------------------------------------- structure


def test_two_stages_from_the_official_slim_image(stages: list[Stage]) -> None:
    assert [s.base for s in stages] == ["python:3.11-slim", "python:3.11-slim"]
    build, runtime = stages
    assert build.name == "build" and runtime.name
    assert any(re.search(r"python -m venv " + re.escape(VENV_DIR), r) for r in build.all("RUN"))
    # the hash-checked lock first, then the package alone: nothing is resolved at build time
    installs = [r for r in build.all("RUN") if r.startswith(f"{VENV_DIR}/bin/pip install")]
    assert installs == [f"{VENV_DIR}/bin/pip install --require-hashes -r requirements.lock",
                        f"{VENV_DIR}/bin/pip install --no-deps ."]


def test_final_stage_copies_only_the_venv_and_the_config(stages: list[Stage]) -> None:
    build, runtime = stages
    assert runtime.copies() == [
        (build.name, [VENV_DIR], VENV_DIR),
        (None, ["alert_rules.yaml"], CONFIG_PATH),
    ]
    # nothing else of the source tree: no RUN pip, no ADD
    assert not runtime.all("ADD")
    assert not any("pip" in r for r in runtime.all("RUN"))


def test_final_stage_runs_as_a_non_root_user(stages: list[Stage]) -> None:
    runtime = stages[-1]
    user = runtime.last("USER")
    name, _, group = user.partition(":")
    assert name not in ("root", "0") and group not in ("root", "0"), user
    # the user is created in this stage, with a fixed uid so volumes can be chowned for it
    created = " ".join(runtime.all("RUN"))
    assert re.search(rf"useradd\b.*--uid \d+.*\b{re.escape(name)}\b", created), created
    # and the last instruction that sets the user is after every RUN (no root RUN afterwards)
    ops = [op for op, _ in runtime.instructions]
    last_user = max(i for i, op in enumerate(ops) if op == "USER")
    assert "RUN" not in ops[last_user:]


def test_expose_matches_the_listen_port(stages: list[Stage]) -> None:
    runtime = stages[-1]
    env = runtime.env()
    exposed = runtime.last("EXPOSE").split()
    assert exposed == ["9820"]
    assert env["PORTAL_MONITOR_LISTEN"] == "0.0.0.0:9820"  # all interfaces, inside the container
    assert split_listen(env["PORTAL_MONITOR_LISTEN"])[1] == int(exposed[0])
    assert split_listen(DEFAULT_LISTEN)[1] == int(exposed[0])  # the daemon's own default port
    rules = yaml.safe_load((REPO / "alert_rules.yaml").read_text())
    assert rules["listen"] == "${PORTAL_MONITOR_LISTEN:-127.0.0.1:9820}"  # the variable the image sets


def docker_env_file(path: Path, host_env: dict[str, str]) -> dict[str, str]:
    """What `docker run --env-file PATH` puts in the container's environment (Docker's
    `opts/envfile.go`): one `NAME=value` per line taken literally (no quotes removed, no `$`
    expansion, leading whitespace of the name trimmed), `#` lines and blank lines ignored, a bare
    `NAME` passing the host's value when the host has one."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.partition("=")
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"{path}: {line!r}: Docker refuses a variable name with whitespace")
        if eq:
            out[name] = value
        elif name in host_env:
            out[name] = host_env[name]
    return out


def test_docker_run_with_the_systemd_env_file_listens_on_all_interfaces(stages: list[Stage]) -> None:
    """`docker run --env-file systemd/portal-monitor.env -p 9820:9820`: the env file comes after
    the image's ENV, so a listen address in it would win; it must leave the image's 0.0.0.0."""
    exposed = stages[-1].last("EXPOSE").split()
    env = {**stages[-1].env(), **docker_env_file(ENV_FILE, {})}
    env.pop("PORTAL_MONITOR_CONFIG", None)
    cfg = load_config(REPO / "alert_rules.yaml", env={**env, "PORTAL_MONITOR_STATE_DIR": STATE_DIR})
    host, port = split_listen(cfg.root.listen)
    assert host == "0.0.0.0", f"the env file pins the listen address to {cfg.root.listen} inside the container"
    assert [str(port)] == [p.split("/")[0] for p in exposed]  # what `-p 9820:9820` publishes


def test_docker_env_file_reader_reads_as_docker_does(tmp_path: Path) -> None:
    f = tmp_path / "env"
    f.write_text("# c\n\n  A=1\nB='quoted'\nC=x=y # not a comment\nD\nE\n")
    assert docker_env_file(f, {"D": "from host"}) == {"A": "1", "B": "'quoted'", "C": "x=y # not a comment",
                                                      "D": "from host"}


def test_state_directory_is_the_volume(stages: list[Stage]) -> None:
    runtime = stages[-1]
    env = runtime.env()
    assert env["PORTAL_MONITOR_STATE_DIR"] == STATE_DIR
    assert runtime.last("VOLUME") == STATE_DIR
    rules = yaml.safe_load((REPO / "alert_rules.yaml").read_text())
    assert rules["state_dir"].startswith("${PORTAL_MONITOR_STATE_DIR")


def test_cmd_runs_the_daemon_with_the_documented_config(stages: list[Stage]) -> None:
    runtime = stages[-1]
    assert _exec_form(runtime.last("CMD")) == ["portal-monitor", "run", "-c", CONFIG_PATH]
    assert runtime.env()["PATH"].startswith(f"{VENV_DIR}/bin:")
    assert runtime.env()["PORTAL_MONITOR_CONFIG"] == CONFIG_PATH


def test_healthcheck_polls_healthy_with_python(stages: list[Stage]) -> None:
    command, options = _healthcheck_command(stages[-1])
    assert command[:2] == ["python", "-c"]
    assert "/-/healthy" in command[2] and "urllib.request" in command[2]
    assert re.search(r"--timeout=\d+s", options) and re.search(r"--interval=\d+s", options)
    m = re.search(r"timeout=(\d+)", command[2])
    assert m and int(m[1]) < int(re.search(r"--timeout=(\d+)s", options)[1])  # urllib gives up before Docker


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Whether .dockerignore drops `rel` (a path relative to the context): the subset of its
    syntax we use: plain patterns from the context root, `**/` prefixes, `!` exceptions."""
    hit = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if pattern.startswith("**/"):
            matched = any(fnmatch.fnmatch(part, pattern[3:]) for part in rel.split("/"))
        else:
            matched = fnmatch.fnmatch(rel, pattern) or rel.startswith(pattern + "/")
        if matched:
            hit = not negate
    return hit


def _dockerignore() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def test_dockerignore_keeps_the_context_small_but_complete(stages: list[Stage]) -> None:
    patterns = _dockerignore()
    for path in (".git", ".venv", "tests", "state", "bench", "portal_monitor.egg-info"):
        assert _ignored(path, patterns), f"{path} would be sent to the Docker daemon"
    needed = {src for stage in stages for frm, srcs, _ in stage.copies() if frm is None for src in srcs}
    assert needed >= {"requirements.lock", "pyproject.toml", "monitor", "checks", "alert_rules.yaml"}
    for src in needed:
        assert not _ignored(src, patterns), f".dockerignore drops {src}, which a COPY needs"
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"


# ---------------------------------------------------------------------- the HEALTHCHECK command, for real


@pytest.fixture
async def healthy_daemon_app() -> AsyncIterator[int]:
    """The daemon's real HTTP app (its /-/healthy handler) on a free loopback port."""
    app = build_app(make_metrics_handler(list, {}))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port
    finally:
        await runner.cleanup()


async def _run_healthcheck(stages: list[Stage], env: dict[str, str]) -> int:
    command, _ = _healthcheck_command(stages[-1])
    proc = await asyncio.create_subprocess_exec(sys.executable, *command[1:], env=env,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return await asyncio.wait_for(proc.wait(), timeout=30)


async def test_healthcheck_passes_against_the_real_endpoint(stages: list[Stage],
                                                            healthy_daemon_app: int) -> None:
    env = {**os.environ, "PORTAL_MONITOR_LISTEN": f"0.0.0.0:{healthy_daemon_app}"}
    assert await _run_healthcheck(stages, env) == 0


async def test_healthcheck_fails_on_an_error_status_and_a_closed_port(stages: list[Stage]) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    app = web.Application()
    app.router.add_get("/-/healthy", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        assert await _run_healthcheck(stages, {**os.environ, "PORTAL_MONITOR_LISTEN": f"0.0.0.0:{port}"}) != 0
    finally:
        await runner.cleanup()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
        port = closed.getsockname()[1]
        assert await _run_healthcheck(stages, {**os.environ, "PORTAL_MONITOR_LISTEN": f"0.0.0.0:{port}"}) != 0


# ---------------------------------------------------------------------- the image's steps, in a plain venv

IMAGE_UID = 9820  # the Dockerfile's useradd --uid
AS_IMAGE_USER = ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups", "--"]


def _can_switch_user() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


def _base_python() -> tuple[str, bool]:
    """(a Python 3.11 to build the venv from, whether the image's uid can run it).

    The image's interpreter (/usr/local/bin/python) is world-readable; ours may live under a
    private home (pyenv in /root), which uid 9820 cannot reach. Prefer one it can.
    """
    candidates = [sys.executable, "/usr/local/bin/python3.11", "/usr/bin/python3.11"]
    probe = ("import sys, ssl, sqlite3, venv, ensurepip; "
             "assert sys.version_info[:2] == (3, 11); print(sys.version)")
    if not _can_switch_user():
        return sys.executable, False
    for exe in candidates:
        if not Path(exe).exists():
            continue
        # the same interpreter for both users (a path the other uid cannot reach may run another one)
        mine = subprocess.run([exe, "-c", probe], capture_output=True, text=True, timeout=60, cwd="/")
        theirs = subprocess.run([*AS_IMAGE_USER, exe, "-c", probe], capture_output=True, text=True,
                                timeout=60, cwd="/")
        if mine.returncode == theirs.returncode == 0 and mine.stdout == theirs.stdout:
            return exe, True
    return sys.executable, False


@dataclass(frozen=True)
class Image:
    root: Path  # <root>/opt/portal-monitor/venv, <root>/etc/portal-monitor/alert_rules.yaml
    as_image_user: bool  # the daemon can be run as uid 9820 here


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, stages: list[Stage]) -> Image:
    """A directory laid out like the final stage: <root>/opt/portal-monitor/venv, <root>/etc/portal-monitor.

    The build stage is replayed: its COPYs (honouring .dockerignore) into a clean source
    directory, `python -m venv`, then the stage's `pip install` lines run in that directory.
    """
    build, runtime = stages
    root = tmp_path_factory.mktemp("image")
    src = root / "src"
    src.mkdir()
    patterns = _dockerignore()

    def ignore(directory: str, names: list[str]) -> list[str]:
        rel = Path(directory).relative_to(REPO)
        return [n for n in names if _ignored(str(rel / n), patterns)]

    for frm, sources, dest in build.copies():  # relative to WORKDIR /src
        assert frm is None
        for s in sources:
            target = src / dest / Path(s).name if dest.endswith("/") else src / dest
            if (REPO / s).is_dir():
                shutil.copytree(REPO / s, target, ignore=ignore)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / s, target)
    venv_dir = root / VENV_DIR.lstrip("/")
    python, switchable = _base_python()
    made = subprocess.run([python, "-m", "venv", str(venv_dir)], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    for run in build.all("RUN"):
        if not run.startswith(f"{VENV_DIR}/bin/pip "):
            continue
        argv = [str(venv_dir / "bin" / "pip"), *shlex.split(run)[1:], "--quiet", "--disable-pip-version-check"]
        pip = subprocess.run(argv, cwd=src, capture_output=True, text=True, timeout=900)
        assert pip.returncode == 0, \
            f"{run} (the build stage) failed:\n{pip.stdout[-3000:]}{pip.stderr[-3000:]}"
    for frm, sources, dest in runtime.copies():
        if frm is None:
            (root / dest.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / sources[0], root / dest.lstrip("/"))
    return Image(root, switchable)


def _image_env(root: Path, stage: Stage, **overrides: str) -> dict[str, str]:
    env = stage.env()
    env["PATH"] = env["PATH"].replace(VENV_DIR, str(root / VENV_DIR.lstrip("/")))
    env["PATH"] = env["PATH"].replace("$PATH", "/usr/bin:/bin")
    env["PORTAL_MONITOR_CONFIG"] = str(root / CONFIG_PATH.lstrip("/"))
    env.update(overrides)
    return env


@pytest.mark.slow
def test_image_steps_in_a_plain_venv_give_a_valid_config(image: Image, stages: list[Stage],
                                                         tmp_path: Path) -> None:
    """`portal-monitor check-config` from the image's venv, with the image's environment and config
    path, and the systemd env file on top as `docker run --env-file systemd/portal-monitor.env` puts it."""
    runtime = stages[-1]
    image_root = image.root
    env = {**_image_env(image_root, runtime), **docker_env_file(ENV_FILE, {})}
    exe = shutil.which("portal-monitor", path=env["PATH"])
    assert exe and exe.startswith(str(image_root)), "the venv's console script is not on the image's PATH"
    proc = subprocess.run([exe, "check-config", "-c", str(image_root / CONFIG_PATH.lstrip("/"))],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"listen 0.0.0.0:9820   state_dir {STATE_DIR}" in proc.stdout, proc.stdout


def _let_others_traverse(path: Path) -> None:
    """o+x on `path` and its parents (pytest's temp dirs are 0700), so another uid can reach it."""
    for p in [path, *path.parents]:
        if p != Path("/"):
            p.chmod(p.stat().st_mode | 0o001)


def _closed_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, never listening: every connection is refused at once
    return s


@pytest.mark.slow
def test_image_daemon_runs_as_the_image_user_and_answers_the_healthcheck(
        image: Image, stages: list[Stage], tmp_path: Path) -> None:
    """The CMD from the image's venv, as uid 9820 when we can switch to it, until the HEALTHCHECK passes.

    Deviations from the image, and why: a free loopback port instead of 0.0.0.0:9820 (the
    machine may use 9820); a temporary state directory instead of the volume; the checks'
    targets point at a refused port, because tests never touch the machine's own Redis or
    PostgreSQL.
    """
    runtime = stages[-1]
    image_root = image.root
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = _closed_port()
    dead = f"127.0.0.1:{closed.getsockname()[1]}"
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = _image_env(image_root, runtime, PORTAL_MONITOR_LISTEN=f"127.0.0.1:{port}",
                     PORTAL_MONITOR_STATE_DIR=str(state), REDIS_URL=f"redis://{dead}/0",
                     DATABASE_URL=f"postgresql://postgres@{dead}/postgres", BFF_HEALTH_URL=f"http://{dead}/health")
    command = _exec_form(runtime.last("CMD"))
    command[0] = shutil.which(command[0], path=env["PATH"]) or command[0]
    command[command.index(CONFIG_PATH)] = str(image_root / CONFIG_PATH.lstrip("/"))
    prefix: list[str] = []
    if image.as_image_user:
        # like USER portal-monitor: a uid with no rights beyond the state directory it owns
        _let_others_traverse(state)
        _let_others_traverse(image_root)
        os.chown(state, IMAGE_UID, IMAGE_UID)
        prefix = AS_IMAGE_USER
    proc = subprocess.Popen(prefix + command, env=env, cwd=state, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # bounded: the daemon logs "started" or exits (EOF)
            lines.append(line)
            if '"started"' in line:
                break
        assert proc.poll() is None, "".join(lines)
        started = json.loads(lines[-1])
        assert started["port"] == port and started["state_dir"] == str(state)
        python = shutil.which("python", path=env["PATH"])
        assert python and python.startswith(str(image_root))
        health, _ = _healthcheck_command(runtime)
        check = subprocess.run([python, *health[1:]], env=env, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        closed.close()
    if prefix:
        assert {p.stat().st_uid for p in state.iterdir()} <= {IMAGE_UID}, "state written by another user"
