"""Wall time of `ccrun validate recipes/*.yaml` against `python -c "import pydantic, yaml"`.

The floor is what any pydantic + YAML tool pays to start; the ratio says what validating every
shipped recipe (fragments included) costs on top of it. Target: under 2.5x.

    python bench/cli.py [--runs 21]

Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from common import machine  # bench/common.py (this script's directory is on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def wall(cmd: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="Runs of each command; the median is reported.")
    args = parser.parse_args()

    ccrun = shutil.which("ccrun", path=str(Path(sys.executable).parent)) or shutil.which("ccrun")
    if ccrun is None:
        sys.exit("ccrun is not installed in this environment (pip install -e .)")
    recipes = sorted(glob.glob("recipes/**/*.yaml", root_dir=ROOT, recursive=True))
    baseline_cmd = [sys.executable, "-c", "import pydantic, yaml"]
    ours_cmd = [ccrun, "validate", *recipes]

    wall(baseline_cmd, 3)  # warm the page cache for both
    wall(ours_cmd, 3)
    baseline = wall(baseline_cmd, args.runs)
    ours = wall(ours_cmd, args.runs)
    b, o = statistics.median(baseline), statistics.median(ours)
    result = {
        "bench": "cli_validate",
        "recipes": len(recipes),
        "runs": args.runs,
        "baseline_s": round(b, 4),
        "ccrun_validate_s": round(o, 4),
        "ratio": round(o / b, 2),
        "target_ratio": 2.5,
        "machine": machine(),
    }
    print(f"import pydantic, yaml     {b * 1000:7.1f} ms (median of {args.runs})")
    print(f"ccrun validate {len(recipes):2d} files {o * 1000:7.1f} ms  ({o / b:.2f}x)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
