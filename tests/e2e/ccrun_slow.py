"""`ccrun` with every training step made slower, so a test can interrupt a run at a known point
(e.g. SIGKILL it after its first checkpoint). The real loop knows nothing of it: this wraps the
loop's jitted-step factory from the outside, in this process only.

Usage: python tests/e2e/ccrun_slow.py SECONDS_PER_STEP ccrun-args...
e.g.   python tests/e2e/ccrun_slow.py 0.2 run recipes/smoke.yaml --runs-dir /tmp/runs
Exit code and output are ccrun's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def slow_training(seconds: float) -> None:
    """Make every train step this process runs from now on last `seconds` longer (after the step)."""
    import runner.train.loop as loop

    make = loop.make_train_step

    def make_slow(*args, **kwargs):
        step = make(*args, **kwargs)

        def slow_step(*step_args):
            out = step(*step_args)
            time.sleep(seconds)
            return out

        return slow_step

    loop.make_train_step = make_slow


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    seconds, *args = argv
    slow_training(float(seconds))
    from runner.entry import main as ccrun

    ccrun(args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's runner/, run as a script
    main(sys.argv[1:])
