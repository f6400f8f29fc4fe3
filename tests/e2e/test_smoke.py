"""The smoke recipe end to end: `ccrun recipes/smoke.yaml` makes a whole run directory."""

import json
import sysconfig
from pathlib import Path

import pytest

from ..helpers import ccrun

pytestmark = pytest.mark.e2e


def test_smoke_recipe_runs_end_to_end(tmp_path):
    """`ccrun RECIPE` (short for `ccrun run RECIPE`): data → model → train → evals → final/."""
    transformers = pytest.importorskip("transformers")
    out = ccrun("recipes/smoke.yaml", "--runs-dir", str(tmp_path), "--set", "train.steps=60",
                "--set", "schedule.decay_steps=40", "--set", "evals[1].limit=2", "--set", "evals[1].sampling[0].n_samples=2",
                "--set", "evals[1].sampling[0].k=[1, 2]", "--set", "evals[2].sampling=[{temperature: 0.0, k: [1]}]",
                "--set", "evals[2].max_new_tokens=32")
    assert out.returncode == 0, out.stderr[-3000:]
    run = Path(out.stdout.strip())
    assert run.parent == tmp_path / "smoke"
    for name in ("recipe.yaml", "overrides.yaml", "resolved.yaml", "provenance.json", "metrics.jsonl", "summary.json",
                 "data/manifest.json", "final/config.json", "final/model.safetensors", "final/tokenizer.json",
                 "plots/loss.png", "plots/lr.png",
                 "eval/loss/results.json", "eval/humaneval/samples.jsonl", "eval/humaneval/results.json",
                 "eval/apps/samples.jsonl", "eval/apps/results.json"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "60").is_dir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["train"]["steps"] == 60 and summary["error"] is None
    assert [(e["suite"], e["name"]) for e in summary["evals"]] == [("loss", "loss"), ("humaneval", "humaneval"),
                                                                   ("apps", "apps")]
    devices = json.loads((run / "provenance.json").read_text())["devices"]
    assert devices and devices[0]["platform"] == "cpu"
    losses = [json.loads(line)["train/loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "train/loss" in line]
    assert losses[-1] < losses[0]
    for stage in ("data: dedup (variables)", "model: gpt-neo scratch", "train: 60 steps", "eval humaneval: pass@1",
                  "eval apps: pass@1"):
        assert stage in out.stderr
    manifest = json.loads((run / "data" / "manifest.json").read_text())  # the corpus: this Python's stdlib
    assert manifest["documents"]["sources"][0]["root"] == sysconfig.get_paths()["stdlib"]
    apps = summary["evals"][2]
    assert set(apps["pass_at_k"]) == {"1"} and 0 <= apps["strict_accuracy"] <= apps["test_case_average"] <= 1
    results = json.loads((run / "eval" / "apps" / "results.json").read_text())["sampling"][0]
    assert apps["strict_accuracy"] == results["overall"]["strict_accuracy"]
    assert {d: s["problems"] for d, s in apps["per_difficulty"].items()} == {
        d: results[d]["problems"] for d in ("introductory", "interview", "competition") if results[d]["problems"]}
    (wandb_dir,) = run.glob("wandb/offline-run-*")  # W&B offline: recipe hash, metrics, eval tables, recipe artifact
    log = next(wandb_dir.glob("run-*.wandb")).read_bytes()
    assert summary["recipe_hash"].encode() in log and b"train/loss" in log
    assert b"recipe-smoke" in log and b"recipe/smoke.yaml" in log and b"resolved.yaml" in log
    for name in ("humaneval", "apps"):
        (table,) = wandb_dir.glob(f"files/media/table/eval/{name}/samples_*.table.json")
        table = json.loads(table.read_text())
        samples = (run / "eval" / name / "samples.jsonl").read_text().splitlines()
        assert len(table["data"]) == len(samples) and "completion" in table["columns"]
    assert (run / "wandb_id").is_file()
    model = transformers.AutoModelForCausalLM.from_pretrained(run / "final")  # the export loads in PyTorch
    assert model.config.n_layer == 2 if hasattr(model.config, "n_layer") else model.config.num_layers == 2
