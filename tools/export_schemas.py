#!/usr/bin/env python3
"""Rewrite edged/api/jsonschema/ from the request/response models (edged.api.schemas).

python3 tools/export_schemas.py          # write
python3 tools/export_schemas.py --check  # exit 1 when the shipped files differ
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edged.api.catalog import FOLDER, generated

TARGET = Path(__file__).resolve().parents[1] / "edged" / "api" / FOLDER


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare")
    args = parser.parse_args()
    files = generated()
    stale = sorted(
        name
        for name, text in files.items()
        if not (TARGET / name).exists() or (TARGET / name).read_text(encoding="utf-8") != text
    )
    extra = sorted(p.name for p in TARGET.glob("*.json") if p.name not in files) if TARGET.exists() else []
    if args.check:
        for name in stale + extra:
            print(f"differs: {name}")
        return 1 if stale or extra else 0
    TARGET.mkdir(exist_ok=True)
    for name in extra:
        (TARGET / name).unlink()
    for name in stale:
        (TARGET / name).write_text(files[name], encoding="utf-8")
    print(f"{len(files)} schemas in {TARGET} ({len(stale)} rewritten, {len(extra)} removed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
