"""After a real (short) smoke run: `ccrun runs` lists it, and `ccrun export` of it loads in
transformers with its model card (final/ and the best checkpoint)."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from ..helpers import SHORT, ccrun

pytestmark = pytest.mark.e2e

HUMANEVAL = ("evals=[{suite: loss}, {suite: humaneval, limit: 1, max_new_tokens: 16, "
             "sampling: [{temperature: 0.0, k: [1]}]}]")


def test_a_run_is_listed_and_exported(tmp_path):
    import torch
    import transformers

    from runner.model import from_pretrained
    from runner.model.hf import flat_params
    from runner.track.rundir import RunDir
    from runner.train.checkpoint import load_run_model

    done = ccrun("smoke", "--runs-dir", str(tmp_path / "runs"), *SHORT, "--set", HUMANEVAL)  # recipes/smoke.yaml
    assert done.returncode == 0, done.stderr[-3000:]
    run = Path(done.stdout.strip())
    summary = json.loads((run / "summary.json").read_text())

    listed = ccrun("runs", str(tmp_path / "runs"))
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    status, recipe, digest, steps, val_loss, pass1, wall, path = row.split()
    assert (status, recipe, digest, steps, path) == ("succeeded", "smoke", summary["recipe_hash"][:8], "30", str(run))
    assert float(val_loss) == pytest.approx(summary["train"]["final"]["val/loss"], abs=5e-5)
    assert float(pass1) == pytest.approx(summary["evals"][1]["pass_at_k"]["1"], abs=5e-5)
    assert wall.endswith("s") and wall[0].isdigit()
    (as_json,) = json.loads(ccrun("runs", str(tmp_path / "runs"), "--json").stdout)
    assert as_json["steps"] == 30 and as_json["status"] == "succeeded"

    out = tmp_path / "hf"
    exported = ccrun("export", str(run), "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    ids = np.array([tokenizer("import os\n\ndef main():\n    return os.getcwd()\n")["input_ids"]])
    with torch.no_grad():
        theirs = model(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(theirs, np.asarray(from_pretrained(run / "final")(ids)), rtol=1e-4, atol=1e-4)
    text = (out / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    front = yaml.safe_load(front)
    assert front["library_name"] == "transformers"
    metrics = front["model-index"][0]["results"][0]["metrics"]
    assert metrics[0]["type"] == "pass@1" and metrics[0]["value"] == pytest.approx(summary["evals"][1]["pass_at_k"]["1"])
    assert "dedup (variables)" in body and f"recipe hash: {summary['recipe_hash']}" in body
    assert (run / "resolved.yaml").read_text().strip() in body

    best = tmp_path / "best"  # the smoke recipe keeps the best checkpoint by val/loss
    exported = ccrun("export", str(run), "--out", str(best), "--checkpoint", "best")
    assert exported.returncode == 0, exported.stderr
    reference, _ = load_run_model(run, RunDir.open(run).recipe().recipe, checkpoint="best")
    ours, saved = flat_params(reference), flat_params(from_pretrained(best))
    assert ours.keys() == saved.keys() and all(np.array_equal(np.asarray(ours[k]), np.asarray(saved[k])) for k in ours)
    assert transformers.AutoModelForCausalLM.from_pretrained(best) is not None
    assert "the best checkpoint (step" in (best / "README.md").read_text()
