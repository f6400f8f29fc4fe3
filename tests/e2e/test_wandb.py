"""W&B asked to log online without a network or key: the run goes offline and says why."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import ROOT, SHORT

pytestmark = pytest.mark.e2e


def test_wandb_online_without_network_goes_offline_and_says_why(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"WANDB_DIR": str(tmp_path), "HOME": str(tmp_path)})  # no key anywhere
    out = subprocess.run([sys.executable, "-m", "runner.cli", "run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path),
                          *SHORT, "--set", "logging.wandb.mode=online"], cwd=ROOT, capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "wandb: online logging is off (" in out.stderr and "logging offline instead" in out.stderr
    run = Path(out.stdout.strip())
    assert json.loads((run / "summary.json").read_text())["status"] == "succeeded"
