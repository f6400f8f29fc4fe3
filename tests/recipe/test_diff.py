"""`ccrun diff`: the keys that differ after resolution, in text, markdown and json; diff(1) exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import ccrun_here

ROOT = Path(__file__).resolve().parents[2]

A = """\
name: a
model: {arch: gpt-neo, checkpoint: EleutherAI/gpt-neo-125M}
data: {sources: [{type: jsonl, paths: [/data/x.jsonl]}]}
optimizer: {type: adamw, b2: 0.95}
schedule: {type: constant, peak_lr: 1.0e-4}
train: {batch_size: 64, micro_batch_size: 16, steps: 100}
"""
B = """\
name: b
model: {arch: gpt-neo, checkpoint: EleutherAI/gpt-neo-125M}
data: {sources: [{type: jsonl, paths: [/data/x.jsonl]}]}
optimizer: {type: adafactor, weight_decay: 0.1}
schedule: {type: constant, peak_lr: 1.0e-4}
train: {batch_size: 64, grad_accum_steps: 2, steps: 100}
"""


def ccrun(*args, cwd, fresh=False):
    """`ccrun ARGS` in this process (tests.helpers.ccrun_here: a fresh process's answer), or with
    `fresh` in a new one."""
    if not fresh:
        return ccrun_here(*args, cwd=cwd)
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture
def pair(tmp_path):
    (tmp_path / "a.yaml").write_text(A)
    (tmp_path / "b.yaml").write_text(B)
    return tmp_path


TEXT = """\
key                                    a.yaml    b.yaml
-------------------------------------  --------  ---------
name                                   a         b
optimizer.type                         adamw     adafactor
optimizer.b1                           0.9       (absent)
optimizer.b2                           0.95      (absent)
optimizer.eps                          1e-08     1e-30
optimizer.weight_decay                 0.0       0.1
optimizer.decay_rate                   (absent)  0.8
optimizer.clipping_threshold           (absent)  1.0
optimizer.factored                     (absent)  true
optimizer.min_dim_size_to_factor       (absent)  128
optimizer.multiply_by_parameter_scale  (absent)  true
optimizer.momentum                     (absent)  null
train.micro_batch_size                 16        32
train.grad_accum_steps                 4         2
"""

MARKDOWN_HEAD = """\
| key | a.yaml | b.yaml |
| --- | --- | --- |
| `name` | a | b |
| `optimizer.type` | adamw | adafactor |
"""


def test_text(pair):
    out = ccrun("diff", "a.yaml", "b.yaml", cwd=pair, fresh=True)
    assert (out.returncode, out.stderr) == (1, "")
    assert out.stdout == TEXT


def test_markdown(pair):
    out = ccrun("diff", "a.yaml", "b.yaml", "--format", "markdown", cwd=pair)
    assert out.returncode == 1
    assert out.stdout.startswith(MARKDOWN_HEAD)
    assert out.stdout.count("\n") == 2 + TEXT.count("\n") - 2


def test_json(pair):
    out = ccrun("diff", "a.yaml", "b.yaml", "-f", "json", cwd=pair)
    body = json.loads(out.stdout)
    assert out.returncode == 1 and body["same"] is False and (body["a"], body["b"]) == ("a.yaml", "b.yaml")
    rows = {d["key"]: d for d in body["differences"]}
    assert rows["optimizer.b1"] == {"key": "optimizer.b1", "a": 0.9, "b": None, "in_a": True, "in_b": False}
    assert rows["train.grad_accum_steps"]["a"] == 4 and rows["train.grad_accum_steps"]["b"] == 2
    assert [d["key"] for d in body["differences"]] == [line.split()[0] for line in TEXT.splitlines()[2:]]


def test_same_meaning_written_differently_is_no_difference(pair):
    (pair / "a2.yaml").write_text(A.replace("micro_batch_size: 16", "grad_accum_steps: 4") + "seed: 0\n")
    out = ccrun("diff", "a.yaml", "a2.yaml", cwd=pair)
    assert (out.returncode, out.stdout) == (0, "a.yaml and a2.yaml resolve to the same recipe\n")
    md = ccrun("diff", "a.yaml", "a2.yaml", "-f", "markdown", cwd=pair)
    assert md.returncode == 0 and "(no differences)" in md.stdout
    js = ccrun("diff", "a.yaml", "a2.yaml", "-f", "json", cwd=pair)
    assert js.returncode == 0 and json.loads(js.stdout)["differences"] == []


def test_a_null_section_covers_its_keys(pair):
    (pair / "c.yaml").write_text(A + "sweep: {seed: [1, 2]}\n")
    out = ccrun("diff", "a.yaml", "c.yaml", cwd=pair)
    assert out.returncode == 1
    assert out.stdout == (
        "key         a.yaml                   c.yaml\n"
        "----------  -----------------------  ------\n"
        "sweep.seed  (absent: sweep is null)  [1, 2]\n"
    )


def test_errors_exit_2(pair):
    missing = ccrun("diff", "a.yaml", "nope.yaml", cwd=pair)
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr and "Traceback" not in missing.stderr
    fmt = ccrun("diff", "a.yaml", "b.yaml", "--format", "html", cwd=pair)
    assert fmt.returncode == 2 and "--format" in fmt.stderr
    (pair / "emptydir").mkdir()
    notrun = ccrun("diff", "a.yaml", "emptydir", cwd=pair)
    assert notrun.returncode == 2 and "not a run directory" in notrun.stderr
    (pair / "bad.yaml").write_text("name: bad\nmodel: {arch: gpt3}\n")
    bad = ccrun("diff", "a.yaml", "bad.yaml", cwd=pair)
    assert bad.returncode == 2 and bad.stderr.splitlines()[0].startswith("bad.yaml:2:1: model.checkpoint: required")
    assert bad.stderr.splitlines()[1].startswith("bad.yaml:2:15: model.arch: must be one of")


def test_seed_experiments_differ_in_model_optimizer_and_schedule_only_where_they_differ():
    out = ccrun("diff", "recipes/apps-125m.yaml", "recipes/apps-1.3b.yaml", "-f", "json", cwd=ROOT)
    assert out.returncode == 1
    rows = json.loads(out.stdout)["differences"]
    keys = {d["key"] for d in rows}
    assert {"model.checkpoint", "optimizer.type", "schedule.peak_lr", "schedule.warmup_steps"} <= keys
    assert not any(d["a"] == d["b"] and d["in_a"] == d["in_b"] for d in rows), "nothing that is the same"
    assert not any(k.startswith(("data.", "model.arch", "schedule.type", "schedule.end_lr")) for k in keys)


def test_run_directory_against_its_recipe(tmp_path):
    runs = tmp_path / "runs"
    made = ccrun("run", "recipes/smoke.yaml", "--dry-run", "--runs-dir", str(runs), "--set", "seed=7", cwd=ROOT)
    assert made.returncode == 0, made.stderr
    run_dir = made.stdout.strip()
    out = ccrun("diff", "recipes/smoke.yaml", run_dir, cwd=ROOT)
    assert out.returncode == 1
    assert [line.split()[:3] for line in out.stdout.splitlines()[2:]] == [["seed", "0", "7"]]
