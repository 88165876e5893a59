"""`portal-monitor query EXPR [--at TIME] [--url URL]`: what a rule would see, without tracebacks.

Locally the command reads the history the daemon left in the state directory and adds one run of
the checks (here an HTTP check against a closed port: `portal_http_up 0`), then evaluates the
recording rules and the expression as the daemon would.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from monitor.cli.main import main
from monitor.daemon import HISTORY_FILE
from monitor.history import History
from tests.fakes import closed_port_url


@pytest.fixture(autouse=True)
def _logging_restored() -> Any:
    """`main` configures structlog for the process (level error): give the next tests theirs back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def setup(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    history = History()
    now = time.time()
    for i in range(10):  # what a daemon recorded over the last 10 minutes: a counter, +6 a minute
        history.add({"__name__": "portal_logins_failed_total", "ip": "10.0.0.9"}, now - 600 + 60 * i, 6.0 * i)
    history.dump(state / HISTORY_FILE)
    config = tmp_path / "alert_rules.yaml"
    config.write_text(f"""\
state_dir: {state}
checks:
  - {{name: web, type: http, url: "{closed_port_url()}/health", timeout: 1s}}
rules:
  - record: job:http_up:sum
    expr: sum(portal_http_up)
""")
    return config


def test_query_sees_the_saved_history_and_a_run_of_the_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = setup(tmp_path)
    assert main(["query", "-c", str(config), 'portal_http_up{check="web"}']) == 0
    out = capsys.readouterr().out
    assert out.startswith('portal_http_up{check="web"} => 0 @[') and out.count("\n") == 1
    assert main(["query", "-c", str(config), "job:http_up:sum"]) == 0
    assert capsys.readouterr().out.startswith("job:http_up:sum => 0 @[")
    assert main(["query", "-c", str(config), "--at", "-2m", "increase(portal_logins_failed_total[5m])"]) == 0
    out = capsys.readouterr().out
    found = re.fullmatch(r'\{ip="10.0.0.9"\} => ([0-9.e+-]+) @\[[0-9.]+\]\n', out)
    assert found and float(found.group(1)) == pytest.approx(30.0), out  # 6 a minute over 5 minutes


@pytest.mark.parametrize(("argv", "status", "message"), [
    (["sum("], 1, "portal-monitor query: sum(: unclosed left parenthesis at column 4"),
    (["up", "--at", "yesterday"], 2, "--at 'yesterday': expected Unix seconds"),
    (["up", "--url", closed_port_url()], 1, "cannot connect to"),
    (["x{a=~'('}"], 1, "portal-monitor query: x{a=~'('}:"),
])
def test_query_errors_are_one_line_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   argv: list[str], status: int, message: str) -> None:
    config = setup(tmp_path)
    assert main(["query", "-c", str(config), *argv]) == status
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
