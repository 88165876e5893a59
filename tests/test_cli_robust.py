"""The CLI in the middle of an incident: no traceback for a bad argument, a closed pipe or an
unknown id, each failure one line on stderr with a documented exit status, and check-config
taking its file as promtool does (`check-config FILE`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.daemon_proc import ROOT, clean_env


def cli(*args: str, cwd: Path = ROOT, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "monitor", *args], cwd=cwd, env=clean_env(), stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=60)


def config(tmp_path: Path) -> Path:
    path = tmp_path / "alert_rules.yaml"
    path.write_text(f"""\
state_dir: {tmp_path / 'state'}
checks:
  - {{name: cache, type: redis, url: "redis://127.0.0.1:1/0"}}
rules:
  - {{alert: RedisDown, expr: 'portal_redis_up == 0', severity: P1, summary: down}}
receivers:
  oncall: {{type: log}}
""")
    return path


def test_check_config_takes_the_file_as_an_argument_too(tmp_path: Path) -> None:
    path = config(tmp_path)
    positional, option = cli("check-config", str(path)), cli("check-config", "-c", str(path))
    assert positional.returncode == option.returncode == 0, positional.stderr
    assert positional.stdout == option.stdout and positional.stdout.startswith(f"{path}: OK")
    both = cli("check-config", "-c", str(path), str(tmp_path / "other.yaml"))
    assert both.returncode == 2 and "two files given" in both.stderr and "Traceback" not in both.stderr
    missing = cli("check-config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "cannot read config file" in missing.stderr


def test_a_closed_pipe_ends_quietly_with_141(tmp_path: Path) -> None:
    """`check-config | head`: the reader is gone before anything is written."""
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "check-config", str(config(tmp_path))], cwd=ROOT,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_negative_duration_is_one_line_not_argparse_confusion(tmp_path: Path) -> None:
    path = config(tmp_path)
    for form in (["--duration", "-1h"], ["--duration=-1h"]):
        out = cli("silence", "add", "-c", str(path), "alertname=RedisDown", "--comment", "x", *form)
        assert out.returncode == 2, out.stderr
        assert out.stderr.strip() == "portal-monitor silence add: '-1h' is a negative duration: " \
                                     "a silence ends after it starts (e.g. 2h)"


def test_unknown_ids_are_one_line_each(tmp_path: Path) -> None:
    path = config(tmp_path)
    out = cli("silence", "expire", "42", "-c", str(path))
    assert out.returncode == 1 and out.stderr.strip() == "silence 42: not found or already expired"
    out = cli("incidents", "show", "99", "-c", str(path))
    assert out.returncode == 1 and out.stderr.strip() == f"incident 99 not found in {tmp_path / 'state'}"
    out = cli("silence", "expire", "x", "-c", str(path))
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_help_documents_the_exit_statuses() -> None:
    out = cli("--help")
    assert out.returncode == 0
    for line in ("0    done", "1    failed", "2    the command line is wrong", "130  interrupted", "141  the reader"):
        assert line in out.stdout


def test_on_call_commands_work_when_the_rules_are_broken(tmp_path: Path) -> None:
    """A bad rule in the middle of an incident: incidents, silence and notify-test still work on
    the state directory and the receivers, saying once which file was invalid."""
    path = config(tmp_path)
    path.write_text(config(tmp_path).read_text().replace("expr: 'portal_redis_up == 0'", "expr: 'portal_redis_up =='")
                    + "receivers:\n  console: {type: log}\n")
    assert cli("check-config", str(path)).returncode == 1
    said = f"portal-monitor: {path} has 1 error (`portal-monitor check-config {path}` lists them)"
    out = cli("incidents", "list", "-c", str(path))
    assert out.returncode == 0 and out.stdout.strip() == "no open incidents", out.stderr
    assert out.stderr.count(said) == 1 and f"(state directory {tmp_path / 'state'})" in out.stderr
    out = cli("silence", "add", "-c", str(path), "alertname=RedisDown", "--duration", "1h", "--comment", "upgrade")
    assert out.returncode == 0 and out.stdout.startswith("silence 1 added until"), out.stderr
    out = cli("silence", "list", "-c", str(path))
    assert out.returncode == 0 and "silence 1 (alertname=RedisDown" in out.stdout
    out = cli("notify-test", "console", "-c", str(path))
    assert out.returncode == 0 and "console (log): delivered" in out.stdout, out.stderr
    assert "Traceback" not in out.stderr


def test_on_call_commands_fall_back_to_the_state_directory_alone(tmp_path: Path) -> None:
    path = tmp_path / "alert_rules.yaml"
    path.write_text(f"state_dir: {tmp_path / 'st'}\nreceivers:\n  pd: {{type: pagerduty, routing_key: short}}\n"
                    "checks: [\n")
    out = cli("incidents", "list", "-c", str(path))
    assert out.returncode == 0, out.stderr
    assert "goes on with the default state directory" in out.stderr  # the YAML itself is cut short
    path.write_text(f"state_dir: {tmp_path / 'st'}\nreceivers:\n  pd: {{type: pagerduty, routing_key: short}}\n")
    out = cli("incidents", "list", "-c", str(path))
    assert out.returncode == 0 and "the state directory from it (its receivers are broken too)" in out.stderr
    assert f"(state directory {tmp_path / 'st'})" in out.stderr
