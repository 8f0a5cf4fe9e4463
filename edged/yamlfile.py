"""A YAML file read within bounds: the configuration and the model manifest. A malformed one is one
error, never a traceback, a hang or a memory spike.

- ``read_text`` takes only a regular file of at most ``MAX_YAML_BYTES`` (a directory, a FIFO or a
  device is refused without waiting on it) that is UTF-8;
- ``load_yaml`` refuses nesting deeper than ``MAX_YAML_DEPTH`` before it is composed (PyYAML's
  composer recurses once per level), a document whose aliases and merge keys would expand to more
  than ``MAX_YAML_NODES`` nodes (a "billion laughs": PyYAML copies merged mappings, and whatever
  walks the data visits every alias again), duplicate keys anywhere (PyYAML keeps the last one
  silently), and reads a scalar its tag cannot read (``2001-13-45``, ``!!int abc``) as a YAML error
  with its line.

A base module: the standard library and PyYAML only (``edged --version`` reads the manifest with it
without loading pydantic).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "MAX_YAML_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "DuplicateKey",
    "Unreadable",
    "load_yaml",
    "read_text",
]

MAX_YAML_BYTES = 1024 * 1024
"""The largest YAML file read (1 MiB; the shipped configuration is ≈ 10 KB, the manifest ≈ 10 KB)."""

MAX_YAML_DEPTH = 64
"""The most mappings and sequences nested in one another that are read (the configuration nests 4
deep, the manifest 5)."""

MAX_YAML_NODES = 100_000
"""The most nodes a document may expand to, aliases and merge keys counted at every use (the
configuration has a few hundred, the manifest a few thousand)."""


class DuplicateKey(ValueError):
    """A YAML mapping names the same key twice (PyYAML keeps the last one silently)."""

    def __init__(self, path: str, key: str, first_line: int, line: int) -> None:
        super().__init__(f"{path}: key {key!r} appears twice: lines {first_line} and {line}")
        self.path = path
        self.key = key
        self.first_line = first_line
        self.line = line


class Unreadable(ValueError):
    """A YAML input refused before it is parsed or composed: not a regular file, larger than
    ``MAX_YAML_BYTES``, not UTF-8, or nested deeper than ``MAX_YAML_DEPTH``. The message says which,
    as a predicate (``is not UTF-8 text: …``) the caller puts after the file's name."""


def read_text(path: Path, max_bytes: int = MAX_YAML_BYTES) -> str:
    """The UTF-8 text of the regular file at ``path``: ``Unreadable`` for a directory, FIFO, socket
    or device (opened without blocking, never read), a file over ``max_bytes`` or bytes that are not
    UTF-8 (naming the line and offset); ``OSError`` when it cannot be opened or read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise Unreadable(f"is not a regular file but a {_kind(mode)}")
        data = file.read(max_bytes + 1)  # size from fstat may lie (/proc) or grow
    if len(data) > max_bytes:
        raise Unreadable(f"is larger than {max_bytes:,} bytes: refused before parsing")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise Unreadable(
            f"is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line})"
        ) from None


def _kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "directory", stat.S_ISFIFO: "FIFO", stat.S_ISSOCK: "socket"}
    return next((name for test, name in kinds.items() if test(mode)), "device")


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, refusing nesting deeper than ``MAX_YAML_DEPTH`` as it composes, and turning
    a scalar its constructor cannot read (a ``ValueError`` and the like inside PyYAML) into a
    ``ConstructorError`` with the scalar's line."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH and self.check_event(  # type: ignore[no-untyped-call]
                yaml.SequenceStartEvent, yaml.MappingStartEvent
            ):
                line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
                raise Unreadable(f"nests deeper than {MAX_YAML_DEPTH} levels (line {line})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (DuplicateKey, Unreadable):
            raise
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            what = repr(node.value)[:60] if isinstance(node, yaml.ScalarNode) else "a collection"
            why = f": {exc}" if isinstance(exc, ValueError) else ""
            tag = node.tag.removeprefix("tag:yaml.org,2002:")
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {what} as {tag}{why}", node.start_mark
            ) from None


def load_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """Parse one YAML document with the safe loader, refusing duplicate keys anywhere in it
    (``DuplicateKey``, with both 1-based lines); returns the data and its node tree (for the line
    numbers of later errors). ``yaml.YAMLError`` for text that is not YAML (or a scalar its tag
    cannot read), ``Unreadable`` for nesting deeper than ``MAX_YAML_DEPTH`` or a document that
    expands to more than ``MAX_YAML_NODES`` nodes."""
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _refuse_expansion(root)
        _refuse_duplicates(root)
        return loader.construct_document(root), root
    except RecursionError:  # the depth bound should make this unreachable: still one clear error
        raise Unreadable("nests too deeply to read") from None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def _refuse_duplicates(root: yaml.Node) -> None:
    """``DuplicateKey`` for the first mapping that names a key twice. Iterative (a stack, not
    recursion), and each node is visited once: an alias is checked where it was anchored."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            children = []
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    name = (key.tag, key.value)
                    line = key.start_mark.line + 1
                    where = f"{path}.{key.value}" if path else str(key.value)
                    if name in first:
                        raise DuplicateKey(where, str(key.value), first[name], line)
                    first[name] = line
                    children.append((value, where))
                else:
                    children.append((value, path))
            stack.extend(reversed(children))
        elif isinstance(node, yaml.SequenceNode):
            items = [(item, f"{path}.{i}" if path else str(i)) for i, item in enumerate(node.value)]
            stack.extend(reversed(items))


def _refuse_expansion(root: yaml.Node) -> None:
    """``Unreadable`` when the document, each alias and merge key counted at every place it is used,
    has more than ``MAX_YAML_NODES`` nodes. Counted on the composed graph, each node once (memoised,
    iterative), so the count itself costs what the text costs, however large the expansion."""
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            size[id(node)] = 1
            continue
        if children_done:
            size[id(node)] = min(1 + sum(size[id(c)] for c in children), MAX_YAML_NODES + 1)
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)
    if size[id(root)] > MAX_YAML_NODES:
        line = root.start_mark.line + 1
        raise Unreadable(
            f"expands to more than {MAX_YAML_NODES:,} nodes through its aliases or merge keys "
            f"(from line {line})"
        )
