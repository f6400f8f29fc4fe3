"""`train.checkpoint.keep_best_by`: a run whose validation loss rises at the end keeps, reports and
exports its lowest-loss checkpoint (as transformers' load_best_model_at_end), also after a SIGKILL
and `ccrun resume`; resuming a finished run changes nothing, and resuming one interrupted after
training redoes nothing that was done; `ccrun eval --checkpoint latest` evaluates the other one."""

import json
import shutil
import signal
import subprocess as sp
import sys
import time
from pathlib import Path

import pytest

from ..helpers import ROOT, ccrun

pytestmark = pytest.mark.e2e

# The learning rate climbs to 0.05 at step 30 (a warmup as long as the run): on the smoke corpus the
# validation loss falls to its lowest at step 25, then rises. Validation and a checkpoint every 5 steps.
RISING = ["--set", "train.steps=30", "--set", "schedule.warmup_steps=30", "--set", "schedule.decay_steps=10",
          "--set", "schedule.peak_lr=0.05", "--set", "train.eval_every=5", "--set", "train.checkpoint.every=5",
          "--set", "evals=[{suite: loss}]"]


def snapshot(run: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(run)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(run.rglob("*")) if p.is_file()}


def weights(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def export_checkpoint(run: Path, which: str, out: Path) -> dict:
    """The run's checkpoint (`which`: best | latest) through the public API, saved as final/ is."""
    from runner.model import save_pretrained
    from runner.track.rundir import RunDir
    from runner.train.checkpoint import load_run_model

    model, _ = load_run_model(run, RunDir.open(run).recipe().recipe, checkpoint=which)
    save_pretrained(model, out)
    return weights(out / "model.safetensors")


def test_the_best_checkpoint_is_kept_reported_and_exported_also_across_a_kill(tmp_path):
    done = ccrun("run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path / "a"), *RISING)
    assert done.returncode == 0, done.stderr[-2000:]
    a = Path(done.stdout.strip())
    records = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    val = {r["step"]: r["val/loss"] for r in records if "val/loss" in r}
    assert sorted(val) == [5, 10, 15, 20, 25, 30]
    best = min(val, key=val.get)
    assert best < 30 and val[30] > val[best], f"the validation loss must rise at the end: {val}"
    summary = json.loads((a / "summary.json").read_text())
    assert summary["train"]["best"] == {"step": best, "metric": "val/loss", "value": val[best]}
    assert summary["train"]["weights_step"] == best and summary["train"]["final"]["val/loss"] == val[30]
    (loss,) = summary["evals"]  # measured by training: the validation of the weights in use
    assert loss["val_loss"] == val[best] and loss["measured"] == "training"
    assert {p.name for p in (a / "checkpoints").iterdir()} == {str(best), "30"}
    assert f"use the best checkpoint, step {best}" in done.stderr
    # final/ holds the best checkpoint's weights, and not the last step's
    final_a = weights(a / "final" / "model.safetensors")
    assert same(final_a, export_checkpoint(a, "best", tmp_path / "a-best"))
    assert not same(final_a, export_checkpoint(a, "latest", tmp_path / "a-latest"))

    # The same run, SIGKILLed once its best checkpoint is written: those are the weights of a run
    # stopped at that step (the same schedule); after `ccrun resume` the loss rises again, and the
    # checkpoint saved before the kill is still scored, kept and exported.
    slow = Path(__file__).with_name("ccrun_slow.py")
    proc = sp.Popen([sys.executable, str(slow), "0.3", "run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path / "b"),
                     *RISING], cwd=ROOT, stdout=sp.PIPE, stderr=sp.PIPE, text=True)
    deadline, b = time.time() + 240, None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "b").glob(f"smoke/*/checkpoints/{best}/commit_success.txt"))
        if found:
            proc.send_signal(signal.SIGKILL)
            b = found[0].parents[2]
            break
        time.sleep(0.05)
    proc.communicate()
    assert b is not None, "the run finished before it could be killed"
    assert not (b / "checkpoints" / "30").exists()
    stopped = export_checkpoint(b, "latest", tmp_path / "b-stopped")
    assert json.loads((b / "checkpoints" / str(best) / "metrics" / "metrics").read_text())["val/loss"] == val[best]
    resumed = ccrun("resume", str(b))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from step {best}" in resumed.stderr
    summary_b = json.loads((b / "summary.json").read_text())
    assert summary_b["train"]["best"] == summary["train"]["best"] and summary_b["train"]["weights_step"] == best
    assert {p.name for p in (b / "checkpoints").iterdir()} == {str(best), "30"}
    final_b = weights(b / "final" / "model.safetensors")
    assert same(final_b, stopped) and same(final_b, final_a)
    assert (b / "final" / "model.safetensors").read_bytes() == (a / "final" / "model.safetensors").read_bytes()

    # Resuming the finished run: exit 0, not one file touched.
    before = snapshot(b)
    again = ccrun("resume", str(b))
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.strip() == f"succeeded: {b}"
    assert snapshot(b) == before


def test_resuming_a_run_interrupted_after_training_redoes_nothing_done(tmp_path):
    done = ccrun("run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path / "a"), *RISING)
    assert done.returncode == 0, done.stderr[-2000:]
    a = Path(done.stdout.strip())
    # What a kill during the evals leaves: training, checkpoints and data done; no eval results,
    # no final/, the summary still `running`.
    c = tmp_path / "c" / "smoke" / a.name
    shutil.copytree(a, c)  # contents and mtimes
    shutil.rmtree(c / "eval")
    shutil.rmtree(c / "final")
    summary = json.loads((c / "summary.json").read_text())
    running = {"name": summary["name"], "recipe_hash": summary["recipe_hash"], "status": "running"}
    (c / "summary.json").write_text(json.dumps(running))
    kept = {k: v for k, v in snapshot(c).items() if k.split("/")[0] in ("checkpoints", "data", "metrics.jsonl")}
    resumed = ccrun("resume", str(c))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = json.loads((c / "summary.json").read_text())
    assert after["status"] == "succeeded"
    assert after["train"] == summary["train"] | {"resumed_from": 30}
    assert after["evals"] == summary["evals"]
    assert {k: v for k, v in snapshot(c).items() if k in kept} == kept, "checkpoints, data and metrics untouched"
    assert (c / "final" / "model.safetensors").read_bytes() == (a / "final" / "model.safetensors").read_bytes()

    # `ccrun eval --checkpoint`: each checkpoint into its own eval-<which>/ (final/ and eval/ hold
    # the best's); the same seeded sampling, so different completions come from different weights only.
    suite = ("evals=[{suite: humaneval, name: %s, limit: 1, max_new_tokens: 16,"
             " sampling: [{temperature: 0.8, n_samples: 1, k: [1]}]}]")
    completions = {}
    for which in ("best", "latest"):
        out = ccrun("eval", str(a), "--checkpoint", which, "--set", suite % "he")
        assert out.returncode == 0, out.stderr[-2000:]
        samples = (a / f"eval-{which}" / "he" / "samples.jsonl").read_text().splitlines()
        completions[which] = [json.loads(line)["completion"] for line in samples]
    assert completions["best"] != completions["latest"]
    again = ccrun("eval", str(a), "--checkpoint", "latest", "--set", suite % "he")
    assert again.returncode == 2 and "already evaluated" in again.stderr
