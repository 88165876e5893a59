"""The folder tree is the data flow, and imports keep its direction.

check → store → rules → incidents → outbox → receivers: a module may import what comes before
it in the flow, never what comes after (checks never import rules or incidents; rules never
import incidents or receivers). The table below is the whole policy, checked by walking every
module's `import` statements (a short AST walk: no import-linter contract file to keep apart).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The bottom: the shared vocabulary every layer may use. They import only each other.
BOTTOM = (
    "monitor",  # the package itself: __version__
    "monitor.model",
    "monitor.clock",
    "monitor.secrets",
    "monitor.httpclient",
    "monitor.config.fields",
    "monitor.config.yamlpos",
    "monitor.history",
)

# prefix of the importing module -> prefixes it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "checks": (
        "monitor.rules",
        "monitor.incidents",
        "monitor.delivery",
        "monitor.web",
        "monitor.cli",
        "monitor.daemon",
        "monitor.alerting",
        "monitor.scheduler",
        "monitor.store",
        "monitor.statedb",
        "monitor.config.loader",
        "monitor.config.model",
    ),
    "monitor.store": ("checks", "monitor.rules", "monitor.incidents", "monitor.delivery", "monitor.web", "monitor.cli"),
    "monitor.scheduler": ("checks", "monitor.rules", "monitor.incidents", "monitor.delivery", "monitor.web"),
    "monitor.rules": (
        "monitor.incidents",
        "monitor.delivery",
        "monitor.web",
        "monitor.cli",
        "monitor.daemon",
        "monitor.alerting",
    ),
    "monitor.incidents": ("monitor.delivery", "monitor.web", "monitor.cli", "monitor.daemon", "monitor.alerting"),
    "monitor.statedb": ("monitor.rules", "monitor.incidents", "monitor.delivery", "monitor.web", "monitor.cli"),
    "monitor.delivery": ("monitor.rules", "monitor.web", "monitor.cli", "monitor.daemon", "monitor.alerting"),
    "monitor.alerting": ("monitor.web", "monitor.cli", "monitor.daemon"),
    "monitor.web": ("monitor.cli", "monitor.daemon"),
    "monitor.config": ("monitor.incidents", "monitor.web", "monitor.cli", "monitor.daemon", "monitor.alerting"),
    "monitor.heartbeat": ("monitor.rules", "monitor.incidents", "monitor.delivery", "monitor.web", "monitor.cli"),
    "monitor.systemd": ("checks", "monitor.rules", "monitor.incidents", "monitor.delivery", "monitor.web"),
    "monitor.logs": ("checks", "monitor.rules", "monitor.incidents", "monitor.delivery", "monitor.web"),
    # the PromQL engine: the history and the shared vocabulary only, nothing else of ours
    "monitor.rules.promql": (
        "checks",
        "monitor.config",
        "monitor.store",
        "monitor.scheduler",
        "monitor.statedb",
        "monitor.rules.engine",
        "monitor.rules.expr",
        "monitor.rules.templates",
    ),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of `monitor`/`checks` in the file, at any depth."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from monitor.rules import engine` imports monitor.rules.engine
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, m) for line, m in found if m.split(".")[0] in ("monitor", "checks")]


def in_bottom(target: str) -> bool:
    """`target` is a bottom module or a name imported from one (`monitor.__version__` included)."""
    return target in BOTTOM or target.rpartition(".")[0] in BOTTOM


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


SOURCES = sorted((ROOT / "monitor").rglob("*.py")) + sorted((ROOT / "checks").rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_later_layer(path: Path) -> None:
    me = module_name(path)
    rules = [bad for prefix, bad in FORBIDDEN.items() if under(me, prefix)]
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {me} imports {target}"
        for line, target in our_imports(path)
        for bad in rules
        for prefix in bad
        if under(target, prefix)
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", [b for b in BOTTOM if b != "monitor"])
def test_the_bottom_imports_only_the_bottom(name: str) -> None:
    path = ROOT / (name.replace(".", "/") + ".py")
    wrong = [f"{name}:{line} imports {t}" for line, t in our_imports(path) if not in_bottom(t)]
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_the_cli_or_the_daemon_but_their_callers() -> None:
    """`monitor.cli` is the top: only `__main__` imports it; only the CLI starts the daemon."""
    allowed = {"monitor.cli": ("monitor.__main__", "monitor.cli"), "monitor.daemon": ("monitor.cli", "monitor.daemon")}
    wrong = []
    for path in SOURCES:
        me = module_name(path)
        for line, target in our_imports(path):
            for top, callers in allowed.items():
                if under(target, top) and not any(under(me, c) for c in callers):
                    wrong.append(f"{path.relative_to(ROOT)}:{line}: {me} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_every_package_says_what_it_owns_and_may_import() -> None:
    for init in sorted((ROOT / "monitor").rglob("__init__.py")) + sorted((ROOT / "checks").rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc, f"{init.relative_to(ROOT)} has no docstring"
        if init.parent.name not in ("monitor", "checks", "delivery"):
            assert "May import" in doc or "may import" in doc, f"{init.relative_to(ROOT)} does not say what it may import"


def test_the_walk_sees_a_violation(tmp_path: Path) -> None:
    """The checker itself: a rules module importing incidents is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from monitor.incidents import lifecycle\nimport checks.redis\n")
    assert (1, "monitor.incidents.lifecycle") in our_imports(bad)
    assert (2, "checks.redis") in our_imports(bad)
