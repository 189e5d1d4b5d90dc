"""Benchmark ``retain --help``: how long the root command takes to start, and what it loads.

Usage: ``python benchmarks/cli_startup.py [--runs 10] [--json PATH]``

Runs ``python -m serving.cli --help`` ``--runs`` times in fresh processes (the code on
``PYTHONPATH``, or the installed retain) and prints the median wall time, the median CPU
time (user + system: steadier than wall time on a busy machine) and, for scale, the same for
``import typer.rich_utils`` alone (what any typer command with rich help pays). It also
prints how many modules the command loads and whether pandas, numpy or pyarrow are among
them: the help text needs none of them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NEUTRAL_CWD = tempfile.gettempdir()  # ``python -m`` puts the working directory first on sys.path


def timed(args: list[str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one fresh process running ``args``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, cwd=NEUTRAL_CWD)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def medians(args: list[str], runs: int) -> dict[str, float]:
    samples = [timed(args) for _ in range(runs)]
    return {
        "wall_s": round(statistics.median(s[0] for s in samples), 3),
        "cpu_s": round(statistics.median(s[1] for s in samples), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    python = sys.executable
    probe = (
        "import sys; sys.argv = ['retain', '--help']; import serving.cli; "
        "print(len(sys.modules), *(m in sys.modules for m in ('pandas', 'numpy', 'pyarrow')))"
    )
    loaded = subprocess.run(
        [python, "-c", probe], check=True, capture_output=True, text=True, cwd=NEUTRAL_CWD
    )
    n_modules, *heavy = loaded.stdout.split()
    result = {
        "code": os.environ.get("PYTHONPATH", "installed"),
        "help": medians([python, "-m", "serving.cli", "--help"], args.runs),
        "typer_rich_import": medians([python, "-c", "import typer.rich_utils"], args.runs),
        "modules_loaded": int(n_modules),
        "loads": dict(
            zip(("pandas", "numpy", "pyarrow"), (h == "True" for h in heavy), strict=True)
        ),
        "load_average": os.getloadavg()[0],
    }
    print(f"code: {result['code']}  (load average {result['load_average']:.1f})")
    print(
        f"retain --help            wall {result['help']['wall_s']:.3f} s  cpu {result['help']['cpu_s']:.3f} s"
    )
    rich = result["typer_rich_import"]
    print(f"import typer.rich_utils  wall {rich['wall_s']:.3f} s  cpu {rich['cpu_s']:.3f} s")
    print(f"modules loaded: {result['modules_loaded']}; heavy: {result['loads']}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
