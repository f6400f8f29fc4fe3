"""`ccrun eval RECIPE` and `ccrun eval RUN_DIR`: sample, score, write eval/<name>/ — with a tiny local model
(made once for the file; the commands run in this process as `ccrun` runs them, tests.helpers.ccrun_here,
one in a fresh process)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from flax import nnx

from runner.data.tokenizer import train_tokenizer
from runner.model import GPTConfig, GPTNeo, save_pretrained

from ..helpers import ccrun_here
from .test_scoring import CALL_PROBLEM, STDIN_PROBLEM

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("eval-command")
    # The smallest model that makes the commands work (what it says does not matter here): 76
    # positions leave 64 for a prompt after 12 new tokens, so every prompt of both suites is cut to
    # one 64-token bucket and, with the same samples per batch, both suites decode with the one
    # compiled program; one weight shape fewer (d_ff = d_model) is one initializer compiled less.
    texts = [p.read_text() for p in sorted((ROOT / "runner" / "evals").glob("*.py"))]
    tok = train_tokenizer(texts, vocab_size=320, out_dir=tmp_path / "ckpt")
    config = GPTConfig("gpt-neo", len(tok), 76, 32, 1, 4, 32, ("global",),
                       eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    save_pretrained(GPTNeo(config, rngs=nnx.Rngs(0)), tmp_path / "ckpt")
    (tmp_path / "apps.jsonl").write_text("".join(json.dumps(p) + "\n" for p in (STDIN_PROBLEM, CALL_PROBLEM)))
    (tmp_path / "r.yaml").write_text(
        "name: tiny-eval\nmodel: {arch: gpt-neo, checkpoint: ./ckpt}\n"
        "evals:\n"
        "  - {suite: humaneval, limit: 2, max_new_tokens: 12, batch_size: 4,"
        " sampling: [{temperature: 0.8, top_p: 0.95, n_samples: 2, k: [1, 2]}]}\n"
        "  - {suite: apps, path: apps.jsonl, max_new_tokens: 12, timeout_s: 1.0, batch_size: 4,"
        " sampling: [{temperature: 0.8, top_p: 0.95, n_samples: 2, k: [1]}]}\n"
    )
    return tmp_path


def ccrun(cwd, *args):
    """`ccrun ARGS` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_eval_a_recipe_then_its_run_directory(workdir):
    out = ccrun_here("eval", "r.yaml", "--runs-dir", "runs", cwd=workdir)
    assert out.returncode == 0, out.stderr
    eval_dir = Path(workdir / out.stdout.strip().splitlines()[-1])
    assert eval_dir.name == "eval" and (eval_dir.parent / "resolved.yaml").is_file()
    samples = [json.loads(line) for line in (eval_dir / "humaneval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and {s["task_id"] for s in samples} == {"HumanEval/0", "HumanEval/1"}
    assert all(set(s) >= {"completion", "passed", "outcome", "sampling", "sample"} for s in samples)
    results = json.loads((eval_dir / "humaneval" / "results.json").read_text())
    assert set(results["pass_at_k"]) == {"1", "2"} and results["problems"] == 2
    apps = json.loads((eval_dir / "apps" / "results.json").read_text())
    assert apps["sampling"][0]["overall"]["problems"] == 2
    assert "humaneval: 2 problems; pass@1" in out.stdout and "apps: 2 problems; pass@1" in out.stdout
    # evaluating the same run directory again would overwrite: refused
    again = ccrun_here("eval", str(eval_dir.parent), cwd=workdir)
    assert again.returncode == 2 and "already evaluated" in again.stderr


def test_eval_refuses_a_recipe_without_generation_suites(tmp_path):
    (tmp_path / "r.yaml").write_text("name: x\nmodel: {arch: gpt2, checkpoint: gpt2}\n")
    out = ccrun(tmp_path, "eval", "r.yaml")
    assert out.returncode == 2 and "no humaneval or apps suite" in out.stderr


def test_run_of_a_recipe_without_train_evaluates_only(workdir):
    out = ccrun_here("run", "r.yaml", "--runs-dir", "runs", "--set", "logging.wandb.mode=disabled", cwd=workdir)
    assert out.returncode == 0, out.stderr[-3000:]
    run = workdir / out.stdout.strip().splitlines()[-1]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["train"] is None
    assert [e["suite"] for e in summary["evals"]] == ["humaneval", "apps"]
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists() and not (run / "data").exists()
    assert (run / "eval" / "humaneval" / "results.json").is_file() and (run / "eval" / "apps" / "results.json").is_file()
    assert "eval humaneval: pass@1" in out.stderr and "train:" not in out.stderr
