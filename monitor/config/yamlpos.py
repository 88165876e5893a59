"""YAML with positions: plain values plus where each key and value stands in the file.

Every failure of PyYAML (syntax, a character YAML forbids, a scalar its constructors refuse,
a recursive alias, nesting past MAX_DEPTH, an alias bomb) becomes a `ConfigError` of
`file:line:col: key.path: message` lines, one problem per line, all of them at once.
`monitor.config.loader` builds the configuration on this; `test-rules` reads its files with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml


def one_line(text: str) -> str:
    """`text` with line breaks and other unprintable characters escaped as Python writes them
    (`\\r`, `\\x00`, `\\u2028`): a key or value quoted in an error can hold any character,
    and one error must stay one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(Exception):
    """The file could not be loaded; `errors` holds every problem, one line each
    (control characters in quoted keys or values are escaped, see `one_line`)."""

    def __init__(self, errors: list[str]) -> None:
        errors = [one_line(e) for e in errors]
        super().__init__("\n".join(errors))
        self.errors = errors


Path_ = tuple[str | int, ...]


MAX_DEPTH = 64  # nesting levels; a real config uses about six
MAX_VALUES = 100_000  # values after aliases are expanded (a "billion laughs" file stops here)


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than MAX_DEPTH while composing: PyYAML's
    composer recurses once per level, and would otherwise end in a RecursionError."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self._depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, f"nesting too deep (more than {MAX_DEPTH} levels)", mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


@dataclass
class _Tree:
    """Builds plain Python values from YAML nodes, recording each path's position and every
    problem found on the way (duplicate keys, scalars PyYAML cannot construct, recursive
    aliases), so that one load reports them all with their key paths."""

    loader: _Loader
    pos: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keypos: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    errors: list[tuple[Path_, str, tuple[int, int]]] = field(default_factory=list)  # (path, message, line:col)
    unreadable: set[Path_] = field(default_factory=set)  # values replaced after an error (not re-reported)
    values: int = 0
    _open: set[int] = field(default_factory=set)  # the collection nodes being built (ancestors)

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.pos[path] = _mark(node)
        self.values += 1
        if self.values > MAX_VALUES:
            raise yaml.constructor.ConstructorError(
                None, None, f"more than {MAX_VALUES} values once aliases are expanded", node.start_mark
            )
        if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            return self.scalar(node, path)
        if id(node) in self._open:
            return self._fail(node, path, "recursive alias: an anchor is used inside its own value", None)
        if len(path) > MAX_DEPTH:
            return self._fail(node, path, f"nesting too deep (more than {MAX_DEPTH} levels)", None)
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(v, (*path, i)) for i, v in enumerate(node.value)]
            self.loader.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for knode, vnode in node.value:
                key = self.scalar(knode, path, at_key=True)
                if not isinstance(key, (str, int)):
                    key = str(key)
                kpath = (*path, key)
                self.keypos[kpath] = _mark(knode)
                if key in out:
                    self.errors.append((kpath, f"duplicate key {key!r}", _mark(knode)))
                out[key] = self.build(vnode, kpath)
            return out
        finally:
            self._open.discard(id(node))

    def scalar(self, node: yaml.Node, path: Path_, at_key: bool = False) -> Any:
        """A scalar (or a complex key) as PyYAML constructs it; on failure the error is
        recorded at `path` (the node's own position) and the text as written stands in."""
        try:
            return self.loader.construct_object(node, deep=True)
        except RecursionError:
            raise
        except yaml.MarkedYAMLError as e:
            problem = e.problem or e.context or "cannot be read"
        except Exception as e:  # PyYAML's constructors raise ValueError, KeyError, AttributeError...
            problem = str(e) or type(e).__name__
        text = node.value if isinstance(node.value, str) else ""
        shown = repr(text[:40] + ("…" if len(text) > 40 else ""))
        kind = node.tag.rpartition(":")[2] if node.tag.startswith("tag:yaml.org,2002:") else node.tag
        if at_key:
            self.errors.append((path, f"key {shown} is not a valid {kind} ({problem})", _mark(node)))
            return text
        return self._fail(node, path, f"{shown} is not a valid {kind} ({problem})", text)

    def _fail(self, node: yaml.Node, path: Path_, message: str, stand_in: Any) -> Any:
        self.errors.append((path, message, _mark(node)))
        self.unreadable.add(path)
        return stand_in


def nearest(positions: Mapping[Path_, tuple[int, int]], path: Path_) -> tuple[int, int]:
    while path:
        if path in positions:
            return positions[path]
        path = path[:-1]
    return positions.get((), (1, 1))


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top)"


def read_yaml(text: str, name: str) -> tuple[_Tree, Any]:
    """The document's values with their positions; ConfigError when it is not YAML.

    Every failure of PyYAML becomes a positioned error: syntax (MarkedYAMLError), a
    character YAML does not allow (ReaderError, raised by the reader as it goes), nesting
    beyond MAX_DEPTH (raised by `_Loader`; RecursionError stays a backstop)."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        tree = _Tree(loader)
        node = loader.get_single_node()
        return tree, None if node is None else tree.build(node, ())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else f"{name}:1:1"
        raise ConfigError([f"{where}: invalid YAML: {e.problem or e.context}"]) from e
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        char = chr(e.character) if isinstance(e.character, int) else str(e.character)
        raise ConfigError(
            [
                f"{name}:{line}:{col}: invalid YAML: character {char!r} (U+{ord(char[:1] or ' '):04X}) "
                "is not allowed in YAML text"
            ]
        ) from e
    except RecursionError:
        mark = loader.get_mark() if loader is not None else None
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else f"{name}:1:1"
        raise ConfigError([f"{where}: invalid YAML: nesting too deep"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{name}:1:1: invalid YAML: {e}"]) from e
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_text(text: str, name: str) -> Any:
    """Any YAML document (a rule test file) as plain values, read as the config is: every
    PyYAML failure, duplicate key and unreadable scalar is a ConfigError of positioned lines."""
    tree, data = read_yaml(text, name)
    if tree.errors:
        found = sorted((where, f"{format_path(p)}: {msg}") for p, msg, where in tree.errors)
        raise ConfigError([f"{name}:{line}:{col}: {msg}" for (line, col), msg in found])
    return data
