"""The layer contract of edged (docs/architecture.md), checked on the source: an upward import fails.

    python3 tools/layers.py [ROOT]

Each module of the package belongs to one layer (the longest prefix in ``LAYERS`` that names it);
a module may import from its own layer and the layers below it, never from a layer above. Every
import counts: at module level, inside functions (lazy imports) and under ``TYPE_CHECKING``.
The same run checks the size limits: no module over ``MAX_LINES`` lines, no class with more than
``MAX_PUBLIC_METHODS`` public methods (``ALLOWED_LARGE`` names the justified exceptions).

Exits 1 and prints one line per violation (``path:line: what``), 0 when the contract holds.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "edged"
ORDER = ("base", "adapters", "domain", "service", "transport", "composition", "entry")
"""Bottom to top."""

LAYERS: dict[str, str] = {
    # entry: argument parsing → frozen settings → a command
    "edged.__main__": "entry",
    "edged.cli": "entry",
    "edged.cli_directory": "entry",
    "edged.cli_faces": "entry",
    "edged.cli_options": "entry",
    "edged.cli_request": "entry",
    "edged.cli_liveness": "entry",
    # composition: the only code that sees the whole configuration
    "edged.app": "composition",
    "edged.config": "composition",
    "edged.demo": "composition",
    # transport: MQTT and the request/response API
    "edged.mqtt": "transport",
    "edged.api": "transport",
    # service: face-API semantics, the door worker and its decider, sync, liveness sessions
    "edged.service": "service",
    "edged.door": "service",
    "edged.decider": "service",
    "edged.stats": "service",
    "edged.sync": "service",
    "edged.liveness": "service",
    # domain: pure-ish computation and the only SQL
    "edged.pipeline": "domain",
    "edged.matcher": "domain",
    "edged.directory": "domain",
    "edged.tracker": "domain",
    # adapters: hardware and native runtimes
    "edged.capture": "adapters",
    "edged.inference": "adapters",
    "edged.systemd": "adapters",
    # base: errors, values, time, logging, strict input, the environment
    "edged": "base",
}

MAX_LINES = 500
MAX_PUBLIC_METHODS = 25
ALLOWED_LARGE: dict[str, str] = {}
"""Module or ``module:Class`` → why it is better whole (also in the closing note of the change)."""


@dataclass(frozen=True, slots=True)
class Violation:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def layer_of(module: str) -> str | None:
    """The layer of a module of the package (longest matching prefix), None outside the package."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    for end in range(len(parts), 0, -1):
        layer = LAYERS.get(".".join(parts[:end]))
        if layer is not None:
            return layer
    return None


def module_name(path: Path, root: Path) -> str:
    relative = path.relative_to(root).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(root: Path, name: str) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(tree: ast.AST, module: str, is_package: bool, root: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``tree``, relative ones resolved; for
    ``from package import name`` also ``package.name`` when that is a module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                keep = len(base) - node.level + (1 if is_package else 0)
                prefix = ".".join(base[:keep])
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # ``from edged import app`` imports the module edged.app
                if is_module(root, f"{target}.{alias.name}"):
                    yield node.lineno, f"{target}.{alias.name}"


def check_imports(path: Path, root: Path, tree: ast.AST) -> Iterator[Violation]:
    module = module_name(path, root)
    own = layer_of(module)
    if own is None:
        yield Violation(path, 1, f"{module} has no layer in tools/layers.py LAYERS")
        return
    seen: set[tuple[int, str]] = set()
    for line, target in imported_modules(tree, module, path.name == "__init__.py", root):
        if target.split(".")[0] != PACKAGE or target == PACKAGE:
            continue
        if (line, target) in seen:
            continue
        seen.add((line, target))
        layer = layer_of(target)
        if layer is not None and ORDER.index(layer) > ORDER.index(own):
            yield Violation(path, line, f"{module} ({own}) imports {target} ({layer}): an upward import")


def check_shape(path: Path, root: Path, tree: ast.Module, text: str) -> Iterator[Violation]:
    module = module_name(path, root)
    lines = text.count("\n")
    if lines > MAX_LINES and module not in ALLOWED_LARGE:
        yield Violation(path, 1, f"{module} has {lines} lines (limit {MAX_LINES})")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            public = [
                item.name
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and not item.name.startswith("_")
            ]
            name = f"{module}:{node.name}"
            if len(public) > MAX_PUBLIC_METHODS and name not in ALLOWED_LARGE:
                yield Violation(
                    path,
                    node.lineno,
                    f"class {node.name} has {len(public)} public methods (limit {MAX_PUBLIC_METHODS})",
                )


def check(root: Path) -> list[Violation]:
    """Every violation under ``root`` (the directory that holds the package)."""
    violations: list[Violation] = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, str(path))
        violations += check_imports(path, root, tree)
        violations += check_shape(path, root, tree, text)
    return violations


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1]
    violations = check(root)
    for violation in violations:
        print(violation)
    if violations:
        print(f"layers: {len(violations)} violation(s) of the layer contract", file=sys.stderr)
        return 1
    print(f"layers: ok ({len(list((root / PACKAGE).rglob('*.py')))} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
