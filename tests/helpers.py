"""What many test files share: the checkout's root and `ccrun` run as a user runs it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A whole smoke run kept short: 30 steps, a checkpoint every 10, the loss suite only.
SHORT = ["--set", "train.steps=30", "--set", "schedule.warmup_steps=5", "--set", "schedule.decay_steps=25",
         "--set", "train.checkpoint.every=10", "--set", "evals=[{suite: loss}]"]


def ccrun(*args, cwd=ROOT):
    """`ccrun ARGS` in a fresh process; the completed process (returncode, stdout, stderr)."""
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], cwd=cwd, capture_output=True, text=True)
