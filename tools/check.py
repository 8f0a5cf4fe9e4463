"""One command for every check: ruff format, ruff lint, mypy (strict on edged/ and the benchmarks in
tools/bench/edged_bench), the layer contract (tools/layers.py: no upward import, no module over 500
lines, no class over 25 public methods), pytest.

    python3 tools/check.py [pytest arguments…]

Runs them all, prints a summary, and exits non-zero if any failed. pytest runs last so its
closing line is the last thing printed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    py = sys.executable
    steps = [
        ("ruff format", [py, "-m", "ruff", "format", "--check", "edged", "tests", "tools"]),
        ("ruff lint", [py, "-m", "ruff", "check", "edged", "tests", "tools"]),
        ("mypy", [py, "-m", "mypy"]),
        ("layers", [py, "tools/layers.py"]),
        ("pytest", [py, "-m", "pytest", *sys.argv[1:]]),
    ]
    failed = []
    for name, command in steps:
        print(
            f"== {name}: {' '.join(command[1:] if command[1].endswith('.py') else command[2:])}", flush=True
        )
        if subprocess.run(command, cwd=ROOT, check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"check: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
