"""Load and run every ``.tflite`` file of a folder under the TFLite runtime of this venv.

Uses ``tflite_runtime`` when installed (e.g. ``tflite-runtime==2.14.0`` on a Pi), else
``ai_edge_litert``. Each model is loaded, its tensors allocated and one inference run on zeros;
a median latency taken and the result printed as a Markdown table row. Needs only numpy and the runtime::

    /work/venv-tfl/bin/python tools/check_runtime.py models/
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

try:
    import tflite_runtime
    from tflite_runtime.interpreter import Interpreter

    RUNTIME = f"tflite-runtime {tflite_runtime.__version__}"
except ImportError:
    from ai_edge_litert import __version__ as _litert_version
    from ai_edge_litert.interpreter import Interpreter

    RUNTIME = f"ai-edge-litert {_litert_version}"


def check(path: Path, runs: int) -> str:
    """``ok (median ms)`` or the first line of the error, at the stage that failed."""
    stage = "load"
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        stage = "allocate"
        interpreter.allocate_tensors()
        stage = "invoke"
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
        interpreter.invoke()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            interpreter.invoke()
            times.append(time.perf_counter() - start)
        return f"ok ({1000 * float(np.median(times)):.1f} ms median of {runs}, 1 thread)"
    except (RuntimeError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"fails at {stage}: {message}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--runs", type=int, default=50, help="timed runs per model")
    args = parser.parse_args(argv)
    print(f"| model | {RUNTIME} |\n|---|---|")
    for path in sorted(args.folder.glob("*.tflite")):
        print(f"| {path.name} | {check(path, args.runs)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
