"""Machine description and the writer of docs/BENCHMARKS.md sections."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from pathlib import Path

from edged.inference.catalog import package_version
from edged.inference.runtime import runtime_name

HEADER = (
    "# Benchmarks\n\nWritten by `edged bench … --record`; "
    "each section is replaced when its benchmark runs again.\n"
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def version_of(package: str) -> str:
    return package_version(package) or "absent"


def machine_line() -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {runtime_name()} {version_of('ai-edge-litert')}, "
        f"numpy {version_of('numpy')}, opencv {version_of('opencv-python-headless')}"
    )


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def record(path: Path, section: str, body: str, command: str) -> None:
    """Replace (or append) the section named ``section`` in ``path``."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"<!-- bench:{section} -->\n## {section}\n\n"
        f"Run {stamp} on: {machine_line()}\n\nReproduce: `{command}`\n\n{body.strip()}\n"
        f"<!-- /bench:{section} -->"
    )
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(section)} -->.*?<!-- /bench:{re.escape(section)} -->", re.S)
    text = (
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
