"""Validation in one round (issue 16, item 4): a cross-field problem is reported together with
every other problem wherever the fields it reads are valid, and never when one of them is not;
a schedule that cannot finish within the run is a warning, located like an error.

Most cases load in this process (milliseconds each); the few that check what `ccrun validate`
prints and exits with run it once each.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from runner.recipe.errors import RecipeError
from runner.recipe.load import load_recipe
from tests.helpers import ccrun

ROOT = Path(__file__).resolve().parents[2]

# Six field errors and one cross-field problem (micro_batch_size does not divide batch_size),
# each on its own line; init_lr > peak_lr is not reported, since peak_lr itself is wrong.
SIX_AND_ONE = """\
name: t
model:
  arch: gpt-neo
  checkpoint: EleutherAI/gpt-neo-125M
  dropout: 1.5
data:
  sources: [{type: jsonl, paths: [x.jsonl]}]
  seq_len: 1
optimizer:
  type: adamw
  b1: 1.5
schedule:
  type: warmup_cosine
  init_lr: 1.0
  peak_lr: -1.0e-4
  decay_steps: 100
train:
  batch_size: 8
  micro_batch_size: 3
  steps: 10
  log_every: 0
evals:
  - {suite: humaneval, timeout_s: -1.0}
"""

SIX_AND_ONE_REPORT = """\
bad.yaml:5:12: model.dropout: must be < 1 (got 1.5)
bad.yaml:8:12: data.seq_len: must be >= 2 (got 1)
bad.yaml:11:7: optimizer.b1: must be < 1 (got 1.5)
bad.yaml:15:12: schedule.peak_lr: must be > 0 (got -0.0001)
bad.yaml:19:21: train.micro_batch_size: must divide batch_size (8 % 3 = 2)
bad.yaml:21:14: train.log_every: must be >= 1 (got 0)
bad.yaml:23:35: evals[0].timeout_s: must be > 0 (got -1.0)
"""

# A valid training recipe that every case below changes with --set.
VALID = """\
name: t
model: {arch: gpt-neo, checkpoint: EleutherAI/gpt-neo-125M}
data: {sources: [{type: jsonl, paths: [x.jsonl]}]}
optimizer: {type: adamw}
schedule: {type: warmup_cosine, peak_lr: 1.0e-4, warmup_steps: 2, decay_steps: 8}
train: {batch_size: 8, steps: 10}
evals: [{suite: humaneval, sampling: [{temperature: 0.2, n_samples: 2, k: [1]}]}]
"""

# Cross-field problems: --set that makes one, and the problem as `key: message`.
CROSS = {
    "micro-batch": ("train.micro_batch_size=3", "train.micro_batch_size: must divide batch_size (8 % 3 = 2)"),
    "grad-accum": ("train.grad_accum_steps=3", "train.grad_accum_steps: must divide batch_size (8 % 3 = 2)"),
    "warmup": ("schedule.warmup_steps=20", "schedule.warmup_steps: must be <= train.steps (20 > 10)"),
    "eval-every": ("train.eval_every=5", "train.eval_every: needs data.validation to compute validation loss"),
    "lr-order": ("schedule.init_lr=1.0", "schedule.init_lr: must be <= peak_lr (1 > 0.0001)"),
    "pass-at-k": (
        "evals[0].sampling[0].k=[1, 3]",
        "evals[0].sampling[0].k[1]: pass@3 needs at least 3 samples per problem (n_samples is 2)",
    ),
}

# Field errors that none of those checks read.
FIELD = {
    "b1": ("optimizer.b1=1.5", "optimizer.b1: must be < 1 (got 1.5)"),
    "log-every": ("train.log_every=0", "train.log_every: must be >= 1 (got 0)"),
    "checkpoint-every": ("train.checkpoint.every=0", "train.checkpoint.every: must be >= 1 (got 0)"),
    "timeout": ("evals[0].timeout_s=-1.0", "evals[0].timeout_s: must be > 0 (got -1.0)"),
    "top-p": ("evals[0].sampling[0].top_p=2.0", "evals[0].sampling[0].top_p: must be <= 1 (got 2.0)"),
    "dropout": ("model.dropout=1.5", "model.dropout: must be < 1 (got 1.5)"),
    "seed": ("seed=-1", "seed: must be >= 0 (got -1)"),
    "wandb-mode": ("logging.wandb.mode=loud", "logging.wandb.mode: must be one of: offline, online, disabled (got 'loud')"),
}


def write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path, *overrides: str) -> list[str]:
    """Each problem as `key: message` (locations are checked through the CLI below)."""
    with pytest.raises(RecipeError) as info:
        load_recipe(path, list(overrides))
    return [f"{p.key}: {p.message}" for p in info.value.problems]


def test_six_field_errors_and_a_cross_field_one_in_one_run_each_located(tmp_path):
    write(tmp_path, SIX_AND_ONE)
    result = ccrun("validate", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == SIX_AND_ONE_REPORT
    assert len(result.stderr.splitlines()) == 7


@pytest.mark.parametrize(
    "cross,field", list(itertools.product(CROSS, FIELD)), ids=[f"{c}+{f}" for c, f in itertools.product(CROSS, FIELD)]
)
def test_a_field_error_hides_no_cross_field_problem(tmp_path, cross, field):
    path = write(tmp_path, VALID)
    (set_cross, said_cross), (set_field, said_field) = CROSS[cross], FIELD[field]
    assert sorted(problems(path, set_cross, set_field)) == sorted([said_cross, said_field])


def test_every_problem_at_once(tmp_path):
    path = write(tmp_path, VALID)
    found = problems(path, *(s for s, _ in CROSS.values()), *(s for s, _ in FIELD.values()))
    expected = [said for _, said in CROSS.values()] + [said for _, said in FIELD.values()]
    # With grad_accum_steps and micro_batch_size both set, they must also agree: a true problem.
    expected.append("train.grad_accum_steps: disagrees with batch_size / micro_batch_size (8 / 3)")
    expected.remove(CROSS["grad-accum"][1])
    assert sorted(found) == sorted(expected)


def test_the_cases_the_issue_names(tmp_path):
    path = write(tmp_path, VALID)
    micro = CROSS["micro-batch"][1]
    assert micro in problems(path, "optimizer.b1=2.0", "train.micro_batch_size=3")
    assert micro in problems(path, "train.log_every=0", "train.micro_batch_size=3")  # in the same section
    found = problems(path, "schedule.warmup_steps=20", "evals[0].sampling[0].n_samples=0")
    assert sorted(found) == sorted(
        [CROSS["warmup"][1], "evals[0].sampling[0].n_samples: must be >= 1 (got 0)"]
    )


# Cross-field checks whose inputs are wrong say nothing: (recipe, the one problem expected).
NOT_WHEN_INPUTS_FAIL = {
    "batch-size-wrong": (
        VALID.replace("batch_size: 8,", "batch_size: '8', micro_batch_size: 3,"),
        ["train.batch_size: must be an integer (got '8')"],
    ),
    "batch-size-missing": (
        VALID.replace("batch_size: 8,", "micro_batch_size: 3,"),
        ["train.batch_size: required"],
    ),
    "steps-wrong": (
        VALID.replace("steps: 10", "steps: ten").replace("warmup_steps: 2", "warmup_steps: 20"),
        ["train.steps: must be an integer (got 'ten')"],
    ),
    "peak-lr-wrong": (
        VALID.replace("peak_lr: 1.0e-4", "peak_lr: -1.0, init_lr: 0.5"),
        ["schedule.peak_lr: must be > 0 (got -1.0)"],
    ),
    "schedule-type-wrong": (
        VALID.replace("type: warmup_cosine", "type: warmup_cosin").replace("warmup_steps: 2", "warmup_steps: 20"),
        [
            "schedule.type: must be one of: warmup_cosine, warmup_linear, constant (got 'warmup_cosin') "
            "(did you mean 'warmup_cosine'?)"
        ],
    ),
    "checkpoint-missing": (
        # A pretrained model without a checkpoint is not a scratch model that lacks a tokenizer.
        VALID.replace(", checkpoint: EleutherAI/gpt-neo-125M", ""),
        ["model.checkpoint: required for init: pretrained (a hub id like EleutherAI/gpt-neo-125M, or a local directory)"],
    ),
    "d-model-wrong": (
        VALID.replace(
            "model: {arch: gpt-neo, checkpoint: EleutherAI/gpt-neo-125M}",
            "model: {arch: gpt-neo, init: scratch, config: {n_layer: 2, d_model: 0, n_head: 3, max_positions: x}}\n"
            "tokenizer: {name: gpt2}",
        ).replace("data: {", "data: {seq_len: 4096, "),
        ["model.config.d_model: must be >= 1 (got 0)", "model.config.max_positions: must be an integer (got 'x')"],
    ),
    "n-samples-wrong": (
        VALID.replace("n_samples: 2, k: [1]", "n_samples: two, k: [1, 3]"),
        ["evals[0].sampling[0].n_samples: must be an integer (got 'two')"],
    ),
}


@pytest.mark.parametrize("name", NOT_WHEN_INPUTS_FAIL)
def test_no_cross_field_problem_from_inputs_that_failed(tmp_path, name):
    text, expected = NOT_WHEN_INPUTS_FAIL[name]
    assert sorted(problems(write(tmp_path, text))) == sorted(expected)


def test_a_sweep_value_is_checked_even_when_the_recipe_has_problems(tmp_path):
    text = VALID + "sweep:\n  train.micro_batch_size: [2, 3]\n"
    found = problems(write(tmp_path, text), "optimizer.b1=2.0")
    assert sorted(found) == sorted(
        [
            "optimizer.b1: must be < 1 (got 2.0)",
            "sweep.train.micro_batch_size[1]: with train.micro_batch_size=3: "
            "train.micro_batch_size: must divide batch_size (8 % 3 = 2)",
        ]
    )


# --- warnings ------------------------------------------------------------------------------------

DECAY = (
    "bad.yaml:5:80: schedule.decay_steps: warning: the schedule decays until step 50002 but the run stops at 10: "
    "the learning rate never reaches end_lr (0); decay_steps: 8 ends the decay on the last step"
)


def test_a_schedule_that_cannot_finish_is_a_located_warning_and_exit_0(tmp_path):
    write(tmp_path, VALID.replace("decay_steps: 8", "decay_steps: 50000"))
    result = ccrun("validate", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok  bad.yaml  t  ")
    assert result.stderr == DECAY + "\n"
    strict = ccrun("validate", "--strict", "bad.yaml", cwd=tmp_path)
    assert strict.returncode == 2 and strict.stderr == DECAY + "\n" and strict.stdout == ""


def test_resolve_shows_the_warnings_on_stderr(tmp_path):
    write(tmp_path, VALID.replace("decay_steps: 8", "decay_steps: 50000"))
    result = ccrun("resolve", "--hash", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 0 and len(result.stdout.strip()) == 64
    assert result.stderr == DECAY + "\n"


def test_warnings_are_on_the_loaded_recipe(tmp_path):
    loaded = load_recipe(write(tmp_path, VALID), ["schedule.decay_steps=50000"])
    assert isinstance(loaded.warnings, tuple) and len(loaded.warnings) == 1
    assert loaded.warnings[0].endswith(DECAY.split("bad.yaml:5:80: ", 1)[1])
    assert load_recipe(write(tmp_path, VALID)).warnings == ()


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["schedule.decay_steps=8"], []),  # 2 + 8 = 10: ends on the last step
        (["schedule.decay_steps=9"], ["schedule.decay_steps: warning: the schedule decays until step 11"]),
        (["schedule.decay_steps=50000", "schedule.end_lr=1.0e-4"], []),  # end_lr == peak_lr: nothing to reach
        (["schedule.warmup_steps=10"], ["schedule.warmup_steps: warning: the warmup ends at the last step (10)"]),
        (["schedule={type: warmup_linear, peak_lr: 1.0e-4, warmup_steps: 10}"], ["schedule.warmup_steps: warning"]),
        (["schedule={type: constant, peak_lr: 1.0e-4}"], []),
        (["train.eval_every=20", "data.validation={fraction: 0.1}"], ["train.eval_every: warning: is more than train.steps"]),
        (["train.eval_every=10", "data.validation={fraction: 0.1}"], []),
        (
            ["train.checkpoint.keep_best_by=val/loss", "data.validation={fraction: 0.1}"],
            ["train.checkpoint.keep_best_by: warning: chooses among one checkpoint, the last"],
        ),
        (["train.checkpoint={every: 5, keep_best_by: val/loss}", "data.validation={fraction: 0.1}"], []),
        # With epochs the number of steps is not known before the data is: no warning.
        (["train.steps=null", "train.epochs=1.0", "schedule.decay_steps=50000", "schedule.warmup_steps=10"], []),
    ],
)
def test_which_settings_warn(tmp_path, overrides, expected):
    warnings = load_recipe(write(tmp_path, VALID), overrides).warnings
    assert len(warnings) == len(expected), warnings
    for warning, start in zip(warnings, expected):
        assert start in warning


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_have_no_warnings(path):
    assert load_recipe(path).warnings == ()


def test_a_fragment_has_no_warnings():
    assert load_recipe(ROOT / "recipes" / "base" / "gpt-neo-125m.yaml", allow_fragment=True).warnings == ()
