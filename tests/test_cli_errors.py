"""Every command's bad input leaves through the one error path (runner.cli.app.main): exit 2, one
line on stderr saying what is wrong, no traceback, nothing written."""

import os
import shutil

import pytest

from .helpers import ROOT, ccrun, ccrun_here

# (command line, what the message must say); TMP is a fresh empty directory, FILE a file in it.
BAD = [
    (["launch", "recipes/smoke.yaml", "--executor", "pbs"], "--executor: slurm or local"),
    (["validate", "TMP/missing.yaml"], "file not found"),
    (["resolve", "TMP/missing.yaml"], "file not found"),
    (["diff", "recipes/smoke.yaml", "recipes/apps-125m.yaml", "--format", "xml"], "--format: must be one of"),
    (["diff", "recipes/smoke.yaml", "TMP"], "not a run directory"),
    (["schema", "--out-dir", "FILE"], "--out-dir"),
    (["runs", "TMP/missing"], "no such directory"),
    (["init", "bad name", "--dir", "TMP"], "not a recipe name"),
    (["export", "TMP", "--out", "TMP/out"], "not a run directory"),
    (["run", "recipes/smoke.yaml", "--sweep-index", "3", "--runs-dir", "TMP/runs"], "--sweep-index: the sweep has 1"),
    (["resume", "TMP"], "not a run directory"),
    (["reproduce", "TMP"], "not a run directory"),
    (["compare", "TMP"], "not a run directory"),
    (["compare", "TMP", "--wandb", "no-slash"], "--wandb: expected ENTITY/PROJECT"),
    (["data", "TMP/missing.yaml", "--out", "TMP/out"], "file not found"),
    (["eval-samples", "TMP/missing.jsonl", "--out", "TMP/out"], "no such file"),
    (["eval-samples", "FILE", "--suite", "mbpp", "--out", "TMP/out"], "--suite: must be humaneval or apps"),
    (["eval-samples", "FILE", "--k", "0", "--out", "TMP/out"], "--k: pass@k needs k >= 1"),
    (["eval-samples", "FILE", "--out", "FILE"], "--out"),
    (["eval", "TMP"], "not a run directory"),
    (["eval", "recipes/smoke.yaml", "--checkpoint", "best"], "--checkpoint applies to a run directory"),
    (["eval", "recipes/smoke.yaml"], "nothing to evaluate yet: `ccrun run recipes/smoke.yaml`, then"),
    (["serve", "TMP", "--checkpoint", "worst"], "--checkpoint: best or latest"),
    (["serve", "TMP/missing"], "no such directory"),
]


# Run in a fresh process as a user runs them (the rest in this one, tests.helpers.ccrun_here: the
# same answer, test_cli.py::test_in_process_is_a_fresh_process): the commands no other file runs so.
FRESH = {("init", "bad name"), ("resume", "TMP"), ("reproduce", "TMP"), ("serve", "TMP/missing"),
         ("data", "TMP/missing.yaml")}


@pytest.mark.parametrize("argv, needle", BAD, ids=lambda a: " ".join(a) if isinstance(a, list) else None)
def test_bad_input_exits_2_with_one_line(argv, needle, tmp_path):
    fresh = tuple(argv[:2]) in FRESH
    (tmp_path / "file.txt").write_text("x\n")
    argv = [a.replace("TMP", str(tmp_path)) if a != "FILE" else str(tmp_path / "file.txt") for a in argv]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = (ccrun if fresh else ccrun_here)(*argv)
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr, out.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    assert (tmp_path / "file.txt").read_text() == "x\n"


def test_every_command_is_tried():
    from runner.cli import app

    commands = {c.name or c.callback.__name__.rstrip("_") for c in app.registered_commands}
    assert commands == {argv[0] for argv, _ in BAD}


def test_a_bad_process_setting_is_bad_input(tmp_path):
    """jax.distributed settings that cannot be right: exit 2 before anything is created."""
    env = {**os.environ, "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "5"}
    out = ccrun_here("run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path), env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == "ccrun: JAX_PROCESS_ID 5 is not in 0..1 (JAX_NUM_PROCESSES 2)"
    assert list(tmp_path.iterdir()) == []


def test_errors_carry_their_exit_codes():
    """The classes raised where problems are found, by what they mean (DESIGN.md's contract)."""
    from runner.common.errors import BadInput, DataError, Interrupted, RunFailed
    from runner.recipe.errors import RecipeError
    from runner.track.rundir import RunDir

    assert issubclass(RecipeError, BadInput) and issubclass(DataError, BadInput)
    assert (BadInput.exit_code, RunFailed.exit_code, Interrupted.exit_code) == (2, 1, 130)
    with pytest.raises(BadInput, match="not a run directory"):
        RunDir.open(ROOT)


@pytest.mark.parametrize("name, content, needle", [
    ("summary.json", '{"status": "succeeded", "results": {}}', "not a ccrun summary"),
    ("metrics.jsonl", '{"step": 1}\n{"step": 2', "metrics.jsonl:2: not JSON"),
])
def test_compare_of_a_damaged_run_is_bad_input(tmp_path, made_run, name, content, needle):
    run = shutil.copytree(made_run, tmp_path / made_run.name)
    (run / name).write_text(content)
    out = ccrun_here("compare", str(run))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr, out.stderr
    assert (run / name).read_text() == content


def test_a_model_smaller_than_its_tokenizer_is_bad_input(tmp_path):
    """Found when the model is built (not by validation): still bad input, exit 2, the run
    directory named and marked failed — not an internal error."""
    import json

    from runner.data.tokenizer import train_tokenizer

    train_tokenizer([p.read_text() for p in sorted((ROOT / "runner" / "recipe").glob("*.py"))], vocab_size=300,
                    out_dir=tmp_path / "tok")
    (tmp_path / "r.yaml").write_text(
        "name: small\nmodel: {arch: gpt-neo, init: scratch, config: {vocab_size: 100, max_positions: 64, d_model: 32,"
        " n_layer: 1, n_head: 2, attention_layers: [global]}}\ntokenizer: {name: ./tok}\n")
    out = ccrun_here("run", str(tmp_path / "r.yaml"), "--runs-dir", str(tmp_path / "runs"), "--set", "logging.wandb.mode=disabled")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "internal error" not in out.stderr, out.stderr
    assert "ccrun: the tokenizer has 300 tokens, model.config.vocab_size only 100" in out.stderr
    (run,) = (tmp_path / "runs" / "small").iterdir()
    assert f"(the run directory keeps what was written: {run})" in out.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
