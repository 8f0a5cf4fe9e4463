"""Strict input: the base of every settings model (frozen, and unknown keys are errors: a typo in
YAML must not be silently ignored) and a YAML reader that refuses duplicate keys (where PyYAML keeps
the last one). A base module, so config, transport and domain settings share it without cycles."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DuplicateKey(ValueError):
    """A YAML mapping names the same key twice (PyYAML keeps the last one silently)."""

    def __init__(self, path: str, key: str, first_line: int, line: int) -> None:
        super().__init__(f"{path}: key {key!r} appears twice: lines {first_line} and {line}")
        self.path = path
        self.key = key
        self.first_line = first_line
        self.line = line


def load_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """Parse one YAML document with the safe loader, refusing duplicate keys anywhere in it
    (``DuplicateKey``, with both 1-based lines); returns the data and its node tree (for the line
    numbers of later errors). ``yaml.YAMLError`` for text that is not YAML."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _refuse_duplicates(root, "", set())
        return loader.construct_document(root), root
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def _refuse_duplicates(node: yaml.Node, path: str, seen: set[int]) -> None:
    if id(node) in seen:  # an alias: checked where it was anchored (and no exponential walk)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                name = (key.tag, key.value)
                line = key.start_mark.line + 1
                where = f"{path}.{key.value}" if path else str(key.value)
                if name in first:
                    raise DuplicateKey(where, str(key.value), first[name], line)
                first[name] = line
                _refuse_duplicates(value, where, seen)
            else:
                _refuse_duplicates(value, path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicates(item, f"{path}.{i}" if path else str(i), seen)
