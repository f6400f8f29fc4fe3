"""Loss eval suites: reused from the last validation when they ask the same, measured otherwise."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import ROOT, SHORT, ccrun

pytestmark = pytest.mark.e2e


def test_loss_suites_reuse_the_last_validation_or_measure_their_own(tmp_path):
    evals = ("evals=[{suite: loss}, {suite: loss, name: loss-b, batch_size: 8, max_batches: 3},"
             " {suite: loss, name: loss-c, batch_size: 2}]")
    out = ccrun("run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path / "a"), *SHORT, "--set", evals)
    assert out.returncode == 0, out.stderr[-3000:]
    run = Path(out.stdout.strip())
    summary = json.loads((run / "summary.json").read_text())
    final = summary["train"]["final"]
    results = {e["name"]: e for e in summary["evals"]}
    assert list(results) == ["loss", "loss-b", "loss-c"]
    assert results["loss"] == {"suite": "loss", "name": "loss", "val_loss": final["val/loss"],
                               "val_perplexity": final["val/perplexity"], "measured": "training", "rows": None,
                               "batch_size": None}
    assert results["loss-b"]["measured"] == "eval" and results["loss-b"]["rows"] == 24  # 3 batches of 8
    # all blocks in batches of 2: the same token-weighted mean as the training's validation
    assert results["loss-c"]["val_loss"] == pytest.approx(final["val/loss"], rel=1e-5)
    for name in ("loss", "loss-b", "loss-c"):
        assert json.loads((run / "eval" / name / "results.json").read_text()) == results[name]
    assert "eval loss-b: val loss" in out.stderr
    # stderr is a pipe, not a terminal: plain progress lines every log_every (10) steps, no bars
    progress = [line for line in out.stderr.splitlines() if line.startswith("train: step ")]
    assert [line.split()[2] for line in progress] == ["10/30", "20/30", "30/30"], out.stderr[-2000:]
    assert all(" loss " in line and " ETA " in line for line in progress)
    assert "\r" not in out.stderr and "it/s]" not in out.stderr  # neither tqdm's bars nor datasets' 
    # a recipe without train: the loss suite still runs (on the untrained model)
    eval_only = ccrun("run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path / "b"), "--set", "train=null",
                      "--set", "optimizer=null", "--set", "schedule=null", "--set", "evals=[{suite: loss, max_batches: 2}]")
    assert eval_only.returncode == 0, eval_only.stderr[-3000:]
    summary = json.loads((Path(eval_only.stdout.strip()) / "summary.json").read_text())
    (loss,) = summary["evals"]
    assert summary["train"] is None
    assert loss["measured"] == "eval" and loss["rows"] == 16 and loss["val_loss"] > final["val/loss"]
    row = subprocess.run([sys.executable, "-m", "runner.cli", "compare", eval_only.stdout.strip()], cwd=ROOT,
                         capture_output=True, text=True).stdout
    assert any(line.startswith("val/loss") for line in row.splitlines())
