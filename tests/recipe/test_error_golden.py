"""Golden error text: bad recipes through the real CLI, the way a user runs it.

Each case writes its file(s) into a temporary directory, runs `ccrun validate` there (so file
names show relative, `bad.yaml:3:5: ...`; in this process, tests.helpers.ccrun_here, whose answer
is a fresh process's; the --debug cases run `python -m runner.cli` in a fresh one) and checks that the problems come out
exactly as written here: `file:line:col: dotted.key: message`, one per line, sorted by
position, exit code 2, nothing on stdout, no traceback.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner.recipe.load import load_recipe

from ..helpers import ccrun_here

# A minimal valid recipe (lines 1-2) and the sections a training recipe adds (lines 3-6).
BASE = "name: t\nmodel: {arch: gpt-neo, checkpoint: EleutherAI/gpt-neo-125M}\n"
DATA = "data: {sources: [{type: jsonl, paths: [x.jsonl]}]}\n"
OPT = "optimizer: {type: adamw}\n"
SCHED = "schedule: {type: constant, peak_lr: 1.0e-4}\n"
TRAIN = "train: {batch_size: 8, steps: 10}\n"
TRAINING = DATA + OPT + SCHED + TRAIN


@dataclass
class Case:
    files: dict[str, str]
    expected: str
    args: tuple[str, ...] = ()
    target: str = "bad.yaml"


def validate(tmp_path: Path, case: Case) -> subprocess.CompletedProcess:
    for name, text in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    set_args = [a for arg in case.args for a in ("--set", arg)]
    return ccrun_here("validate", case.target, *set_args, cwd=tmp_path)


def bad(text: str, expected: str, *args: str) -> Case:
    return Case({"bad.yaml": text}, expected, tuple(args))


CASES = {
    # --- YAML itself ---------------------------------------------------------------------
    "yaml-unclosed-flow-mapping": bad(
        "name: t\nmodel: {arch: gpt-neo, checkpoint: x\nseed: 1\n",
        "bad.yaml:3:5: YAML syntax error: did not find expected ',' or '}' (while parsing a flow mapping at line 2)\n",
    ),
    "yaml-colon-in-plain-scalar": bad(
        "name: t: u\nmodel: {arch: gpt-neo}\n",
        "bad.yaml:1:8: YAML syntax error: mapping values are not allowed in this context\n",
    ),
    "yaml-bad-indentation": bad(
        "name: t\nmodel:\n  arch: gpt-neo\n checkpoint: x\n",
        "bad.yaml:4:2: YAML syntax error: did not find expected key (while parsing a block mapping at line 1)\n",
    ),
    "tab-indentation": bad(
        "name: t\nmodel:\n\tarch: gpt-neo\n\tcheckpoint: EleutherAI/gpt-neo-125M\n",
        "bad.yaml:3:1: tab character: YAML indentation must use spaces\n",
    ),
    "duplicate-top-level-key": bad(
        BASE + "seed: 1\nname: u\n",
        "bad.yaml:4:1: name: duplicate key (first set at line 1)\n",
    ),
    "duplicate-nested-key": bad(
        "name: t\nmodel:\n  arch: gpt-neo\n  checkpoint: EleutherAI/gpt-neo-125M\n  arch: gpt2\n",
        "bad.yaml:5:3: model.arch: duplicate key (first set at line 3)\n",
    ),
    # --- the shape of the file -----------------------------------------------------------
    "empty-file": bad("", "bad.yaml:1:1: the file is empty; a recipe is a mapping (name, model, ...)\n"),
    "comments-only": bad(
        "# nothing here yet\n", "bad.yaml:1:1: the file is empty; a recipe is a mapping (name, model, ...)\n"
    ),
    "top-level-list": bad(
        "- name: t\n- seed: 1\n", "bad.yaml:1:1: a recipe must be a mapping of keys to values, not a list\n"
    ),
    "top-level-scalar": bad(
        "hello\n", "bad.yaml:1:1: a recipe must be a mapping of keys to values, not a single value ('hello')\n"
    ),
    "top-level-number": bad(
        "42\n", "bad.yaml:1:1: a recipe must be a mapping of keys to values, not a single value (42)\n"
    ),
    "recipe-file-missing": Case({}, "file not found: nope.yaml\n", target="nope.yaml"),
    # --- keys and types ------------------------------------------------------------------
    "unknown-top-level-key-did-you-mean": bad(
        BASE + TRAINING + "optimzer: {type: adamw}\n",
        "bad.yaml:7:1: optimzer: unknown key (did you mean 'optimizer'?)\n",
    ),
    "unknown-top-level-key-lists-choices": bad(
        BASE + "zzz: 1\n",
        "bad.yaml:3:1: zzz: unknown key; expected one of: name, description, extends, seed, model, tokenizer, "
        "data, optimizer, schedule, train, evals, sweep, logging\n",
    ),
    "unknown-nested-key": bad(
        "name: t\nmodel: {arch: gpt-neo, checkpoint: EleutherAI/gpt-neo-125M, dropuot: 0.1}\n",
        "bad.yaml:2:61: model.dropuot: unknown key (did you mean 'dropout'?)\n",
    ),
    "unknown-deeply-nested-key": bad(
        "name: t\nmodel:\n  arch: gpt-neo\n  checkpoint: EleutherAI/gpt-neo-125M\n  dtype: {params: float32, xyz: 1}\n",
        "bad.yaml:5:28: model.dtype.xyz: unknown key; expected one of: params, compute\n",
    ),
    "unknown-key-in-tagged-variant": bad(
        BASE + DATA + "optimizer: {type: adafactor, b1: 0.9}\n" + SCHED + TRAIN,
        "bad.yaml:4:30: optimizer.b1: unknown key; expected one of: type, weight_decay, weight_decay_exclude, "
        "grad_clip, decay_rate, clipping_threshold, factored, min_dim_size_to_factor, "
        "multiply_by_parameter_scale, momentum, eps\n",
    ),
    "string-for-int": bad(
        BASE + DATA + OPT + SCHED + 'train: {batch_size: 8, steps: "100"}\n',
        "bad.yaml:6:31: train.steps: must be an integer (got '100')\n",
    ),
    "float-for-int": bad(
        BASE + DATA + OPT + SCHED + "train: {batch_size: 8.5, steps: 10}\n",
        "bad.yaml:6:21: train.batch_size: must be an integer (got 8.5)\n",
    ),
    "out-of-range": bad(
        BASE + DATA + "optimizer: {type: adamw, b2: 1.5}\n" + SCHED + TRAIN,
        "bad.yaml:4:30: optimizer.b2: must be < 1 (got 1.5)\n",
    ),
    "literal-did-you-mean": bad(
        "name: t\nmodel: {arch: gtp2, checkpoint: gpt2}\n",
        "bad.yaml:2:15: model.arch: must be one of: gpt-neo, gpt2, llama, qwen2 (got 'gtp2') (did you mean 'gpt2'?)\n",
    ),
    "bad-name-pattern": bad(
        "name: my run\nmodel: {arch: gpt-neo, checkpoint: EleutherAI/gpt-neo-125M}\n",
        "bad.yaml:1:7: name: must match ^[A-Za-z0-9][A-Za-z0-9._-]*$ (got 'my run')\n",
    ),
    "unknown-tag-did-you-mean": bad(
        BASE + DATA + "optimizer: {type: adamx}\n" + SCHED + TRAIN,
        "bad.yaml:4:19: optimizer.type: must be one of: adamw, adafactor (got 'adamx') (did you mean 'adamw'?)\n",
    ),
    "missing-tag": bad(
        BASE + DATA + "optimizer: {b1: 0.9}\n" + SCHED + TRAIN,
        "bad.yaml:4:1: optimizer.type: required; one of: adamw, adafactor\n",
    ),
    "missing-suite-tag-in-list": bad(
        BASE + "evals:\n  - {name: he}\n",
        "bad.yaml:4:5: evals[0].suite: required; one of: loss, humaneval, apps\n",
    ),
    # --- extends -------------------------------------------------------------------------
    "extends-cycle": Case(
        {"a.yaml": "extends: b.yaml\n" + BASE, "b.yaml": "extends: a.yaml\nseed: 1\n"},
        "b.yaml:1:10: extends: cycle: a.yaml -> b.yaml -> a.yaml\n",
        target="a.yaml",
    ),
    "extends-itself": bad(
        "extends: bad.yaml\n" + BASE,
        "bad.yaml:1:10: extends: cycle: bad.yaml -> bad.yaml\n",
    ),
    "extends-missing-file": bad(
        "extends: base/nope.yaml\n" + BASE,
        "bad.yaml:1:10: extends: file not found: base/nope.yaml\n",
    ),
    "extends-list-two-missing-files": bad(
        "extends: [base/x.yaml, nope.yaml]\n" + BASE,
        "bad.yaml:1:11: extends: file not found: base/x.yaml\nbad.yaml:1:24: extends: file not found: nope.yaml\n",
    ),
    "extends-not-a-path": bad(
        "extends: {a: 1}\n" + BASE,
        "bad.yaml:1:10: extends: must be a file path or a list of file paths\n",
    ),
    "error-in-base-file": Case(
        {
            "base/opt.yaml": "optimizer:\n  type: adamw\n  b1: 2.0\n",
            "bad.yaml": "extends: base/opt.yaml\n" + BASE + DATA + SCHED + TRAIN,
        },
        "base/opt.yaml:3:7: optimizer.b1: must be < 1 (got 2.0)\n",
    ),
    "errors-in-base-file-and-child": Case(
        {
            "base/m.yaml": "model:\n  arch: gpt-neo\n  checkpoint: EleutherAI/gpt-neo-125M\n  dropuot: 0.1\nseed: x\n",
            "bad.yaml": "extends: base/m.yaml\nname: t\ntokenizer: {nmae: gpt2}\n",
        },
        "bad.yaml:3:13: tokenizer.nmae: unknown key (did you mean 'name'?)\n"
        "base/m.yaml:4:3: model.dropuot: unknown key (did you mean 'dropout'?)\n"
        "base/m.yaml:5:7: seed: must be an integer (got 'x')\n",
    ),
    "child-overrides-bad-base-value": Case(
        {
            "base/m.yaml": "model:\n  arch: gpt-neo\n  checkpoint: EleutherAI/gpt-neo-125M\n  dropuot: 0.1\nseed: x\n",
            "bad.yaml": "extends: base/m.yaml\nname: t\nseed: 3\nmodel: {dropuot: 0.2}\n",
        },
        "bad.yaml:4:9: model.dropuot: unknown key (did you mean 'dropout'?)\n",
    ),
    # --- cross-field checks --------------------------------------------------------------
    "warmup-longer-than-training": bad(
        BASE + DATA + OPT
        + "schedule: {type: warmup_cosine, peak_lr: 1.0e-4, warmup_steps: 20, decay_steps: 100}\n" + TRAIN,
        "bad.yaml:5:64: schedule.warmup_steps: must be <= train.steps (20 > 10)\n",
    ),
    "micro-batch-does-not-divide": bad(
        BASE + DATA + OPT + SCHED + "train: {batch_size: 8, micro_batch_size: 3, steps: 10}\n",
        "bad.yaml:6:42: train.micro_batch_size: must divide batch_size (8 % 3 = 2)\n",
    ),
    "pretrained-without-checkpoint": bad(
        "name: t\nmodel: {arch: gpt-neo}\n",
        "bad.yaml:2:1: model.checkpoint: required for init: pretrained "
        "(a hub id like EleutherAI/gpt-neo-125M, or a local directory)\n",
    ),
    "pass-at-k-above-n-samples": bad(
        BASE + "evals:\n  - suite: humaneval\n    sampling:\n      - {temperature: 0.8, n_samples: 5, k: [1, 10]}\n",
        "bad.yaml:6:49: evals[0].sampling[0].k[1]: pass@10 needs at least 10 samples per problem (n_samples is 5)\n",
    ),
    "greedy-with-several-samples": bad(
        BASE + "evals:\n  - suite: apps\n    sampling:\n      - {temperature: 0, n_samples: 4, k: [1]}\n",
        "bad.yaml:6:37: evals[0].sampling[0].n_samples: greedy decoding (temperature 0) gives one distinct "
        "completion; set n_samples: 1\n",
    ),
    "files-source-root-and-stdlib": bad(
        BASE + "data: {sources: [{type: files, root: src, stdlib: true}]}\n",
        "bad.yaml:3:38: data.sources[0].root: give a root or stdlib: true, not both\n",
    ),
    "files-source-without-root": bad(
        BASE + "data: {sources: [{type: files, include: ['*.py']}]}\n",
        "bad.yaml:3:18: data.sources[0]: a files source needs a root (or stdlib: true)\n",
    ),
    "train-without-optimizer": bad(
        BASE + DATA + SCHED + TRAIN,
        "bad.yaml:5:1: optimizer: required when the recipe has a train section\n",
    ),
    "scratch-model-without-tokenizer": bad(
        "name: t\nmodel:\n  arch: gpt-neo\n  init: scratch\n  config: {n_layer: 2, d_model: 64, n_head: 4}\n",
        "bad.yaml:4:3: tokenizer: a scratch model needs tokenizer.name (a hub id or directory) or tokenizer.train\n",
    ),
    "two-yaml-documents": bad(
        BASE + "---\nname: u\n",
        "bad.yaml:3:1: a recipe file holds one YAML document; a second one starts here\n",
    ),
    "keep-best-by-val-loss-without-validation": bad(
        BASE + DATA + OPT + SCHED + "train:\n  batch_size: 8\n  steps: 10\n  checkpoint: {keep_best_by: val/loss}\n",
        "bad.yaml:9:30: train.checkpoint.keep_best_by: 'val/loss' needs data.validation\n",
    ),
    "duplicate-derived-eval-names": bad(
        BASE + "evals:\n  - {suite: humaneval}\n  - {suite: humaneval}\n",
        "bad.yaml:5:5: evals[1].name: eval name 'humaneval' is already used by evals[0]; give each a distinct name\n",
    ),
    "duplicate-eval-names": bad(
        BASE + "evals:\n  - {suite: humaneval, name: he}\n  - {suite: apps, name: he}\n",
        "bad.yaml:5:25: evals[1].name: eval name 'he' is already used by evals[0]; give each a distinct name\n",
    ),
    # --- --set ---------------------------------------------------------------------------
    "set-unknown-key": bad(
        BASE + TRAINING,
        "--set train.stpes=5: train.stpes: unknown key (did you mean 'steps'?)\n",
        "train.stpes=5",
    ),
    "set-unknown-section": bad(
        BASE + TRAINING,
        "--set trian.steps=5: trian: unknown key (did you mean 'train'?)\n",
        "trian.steps=5",
    ),
    "set-wrong-type": bad(
        BASE + TRAINING,
        "--set train.steps=abc: train.steps: must be an integer (got 'abc')\n",
        "train.steps=abc",
    ),
    "set-out-of-range": bad(
        BASE + TRAINING,
        "--set schedule.peak_lr=-1: schedule.peak_lr: must be > 0 (got -1)\n",
        "schedule.peak_lr=-1",
    ),
    "set-without-equals": bad(
        BASE + TRAINING,
        "--set train.steps: expected dotted.key=value\n",
        "train.steps",
    ),
    "set-bad-yaml-value": bad(
        BASE + TRAINING,
        "--set train.steps=[1: train.steps: YAML syntax error: did not find expected ',' or ']' "
        "(while parsing a flow sequence at line 1)\n",
        "train.steps=[1",
    ),
    "set-key-of-other-variant": bad(
        BASE + TRAINING,
        "--set optimizer.b1=0.5: optimizer.b1: unknown key; expected one of: type, weight_decay, "
        "weight_decay_exclude, grad_clip, decay_rate, clipping_threshold, factored, min_dim_size_to_factor, "
        "multiply_by_parameter_scale, momentum, eps\n",
        "optimizer.type=adafactor",
        "optimizer.b1=0.5",
    ),
    "set-unknown-tag": bad(
        BASE + TRAINING,
        "--set optimizer.type=adamx: optimizer.type: must be one of: adamw, adafactor (got 'adamx') "
        "(did you mean 'adamw'?)\n",
        "optimizer.type=adamx",
    ),
    "set-index-out-of-range": bad(
        BASE + "data: {sources: [{type: jsonl, paths: [x.jsonl]}, {type: jsonl, paths: [y.jsonl]}]}\n",
        "--set data.sources[5].type=jsonl: data.sources[5]: index 5 is out of range (the list has 2 items)\n",
        "data.sources[5].type=jsonl",
    ),
    "set-extends": bad(
        BASE + TRAINING,
        "--set extends=other.yaml: extends: can only be written in a recipe file\n",
        "extends=other.yaml",
    ),
    "set-and-file-problems-together": bad(
        BASE + DATA + "optimizer: {type: adamw, b2: 1.5}\n" + SCHED + TRAIN,
        "--set seed=x: seed: must be an integer (got 'x')\nbad.yaml:4:30: optimizer.b2: must be < 1 (got 1.5)\n",
        "seed=x",
    ),
    # --- many problems, sweeps -----------------------------------------------------------
    "several-problems-sorted-by-position": bad(
        "optimzer: 1\n"
        "name: t\n"
        "seed: -1\n"
        "model: {arch: gpt-neo, checkpoint: EleutherAI/gpt-neo-125M, dropuot: 0.1}\n"
        + DATA
        + 'train: {batch_size: 8, steps: "10"}\n'
        + SCHED
        + "optimizer: {type: adamw, b2: 1.5}\n",
        "bad.yaml:1:1: optimzer: unknown key (did you mean 'optimizer'?)\n"
        "bad.yaml:3:7: seed: must be >= 0 (got -1)\n"
        "bad.yaml:4:61: model.dropuot: unknown key (did you mean 'dropout'?)\n"
        "bad.yaml:6:31: train.steps: must be an integer (got '10')\n"
        "bad.yaml:8:30: optimizer.b2: must be < 1 (got 1.5)\n",
    ),
    "sweep-invalid-values": bad(
        BASE + TRAINING + "sweep:\n  schedule.peak_lr: [1.0e-4, -1.0e-4, 0]\n",
        "bad.yaml:8:30: sweep.schedule.peak_lr[1]: with schedule.peak_lr=-0.0001: schedule.peak_lr: "
        "must be > 0 (got -0.0001)\n"
        "bad.yaml:8:39: sweep.schedule.peak_lr[2]: with schedule.peak_lr=0: schedule.peak_lr: must be > 0 (got 0)\n",
    ),
    "sweep-unknown-key-and-name": bad(
        BASE + TRAINING + "sweep:\n  schedule.peak_rl: [1.0e-4]\n  name: [a, b]\n",
        "bad.yaml:8:3: sweep.schedule.peak_rl: unknown key (did you mean 'peak_lr'?)\n"
        "bad.yaml:9:3: sweep.name: cannot sweep over 'name'\n",
    ),
    "sweep-no-values": bad(
        BASE + TRAINING + "sweep:\n  train.steps: []\n",
        "bad.yaml:8:16: sweep.train.steps: needs at least one value\n",
    ),
}


@pytest.mark.parametrize("case", [pytest.param(c, id=name) for name, c in CASES.items()])
def test_error_text(tmp_path: Path, case: Case) -> None:
    result = validate(tmp_path, case)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    assert result.stderr == case.expected
    assert result.returncode == 2


def test_base_recipes_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cases break a valid recipe: both starting points load."""
    monkeypatch.chdir(tmp_path)
    for name, text in {"base.yaml": BASE, "training.yaml": BASE + TRAINING}.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert load_recipe(tmp_path / name).recipe is not None


# --- --debug -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "resolve"])
def test_debug_prints_a_traceback_and_exits_2(tmp_path: Path, command: str) -> None:
    (tmp_path / "bad.yaml").write_text(BASE + DATA + "optimizer: {type: adamw, b2: 1.5}\n" + SCHED + TRAIN)
    result = subprocess.run(
        [sys.executable, "-m", "runner.cli", "--debug", command, "bad.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "RecipeError" in result.stderr
    assert result.stderr.endswith("bad.yaml:4:30: optimizer.b2: must be < 1 (got 1.5)\n")
    assert result.stdout == ""


# --- known bugs: each test says what the text should be; see the reasons -----------------


def test_yaml_merge_key_is_refused_as_such(tmp_path: Path) -> None:
    result = validate(tmp_path, bad(BASE + "tokenizer:\n  <<: {name: gpt2}\n", ""))
    assert result.returncode == 2
    assert result.stderr == "bad.yaml:4:3: tokenizer: YAML merge keys (<<) are not supported; use extends\n"


def test_set_index_into_absent_list(tmp_path: Path) -> None:
    result = validate(tmp_path, bad(BASE + TRAINING, "", "evals[0].suite=loss"))
    assert result.returncode == 2
    assert result.stderr == "--set evals[0].suite=loss: evals[0]: index 0 is out of range (the list is empty)\n"
