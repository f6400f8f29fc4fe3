"""Every shipped recipe validates, round-trips through its resolved form, and says what the seed says."""

import math
import sysconfig
from pathlib import Path

import pytest

from runner.recipe.load import is_fragment, load_recipe
from runner.recipe.resolve import recipe_hash, resolved_dict, to_yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
FRAGMENTS = sorted((ROOT / "recipes" / "base").glob("*.yaml"))


def test_the_seed_experiments_are_all_there():
    names = {p.name for p in RECIPES}
    assert {
        "code-clippy-125m.yaml",
        "code-clippy-gpt2.yaml",
        "apps-125m.yaml",
        "apps-1.3b.yaml",
        "humaneval-gpt-neo-125m.yaml",
        "smoke.yaml",
    } <= names
    assert FRAGMENTS, "recipes share a recipes/base layer"


@pytest.mark.parametrize("path", RECIPES + FRAGMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_schema_line_points_at_an_existing_schema(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    target = (path.parent / first.split("$schema=", 1)[1].strip()).resolve()
    assert target.is_file(), target
    expected = "recipe-fragment.schema.json" if path.parent.name == "base" else "recipe.schema.json"
    assert target.name == expected


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates_and_round_trips(path, tmp_path):
    loaded = load_recipe(path)
    assert not loaded.fragment
    first = to_yaml(loaded.recipe)
    again_file = tmp_path / "resolved.yaml"
    again_file.write_text(first)
    again = load_recipe(again_file)
    assert to_yaml(again.recipe) == first
    assert resolved_dict(again.recipe) == resolved_dict(loaded.recipe)
    assert recipe_hash(again.recipe) == recipe_hash(loaded.recipe)
    assert "extends" not in resolved_dict(loaded.recipe)


@pytest.mark.parametrize("path", FRAGMENTS, ids=lambda p: p.name)
def test_fragments_are_checked_but_do_not_run(path):
    assert is_fragment(path.read_text())
    assert load_recipe(path, allow_fragment=True).fragment


def _load(name):
    return load_recipe(ROOT / "recipes" / name).recipe


def test_code_clippy_125m_numbers():
    r = _load("code-clippy-125m.yaml")
    assert r.model.checkpoint == "EleutherAI/gpt-neo-125M" and r.model.arch == "gpt-neo"
    o, s, t = r.optimizer, r.schedule, r.train
    assert (o.type, o.b1, o.b2, o.weight_decay) == ("adamw", 0.9, 0.95, 0.1)
    assert (s.type, s.init_lr, s.peak_lr, s.warmup_steps, s.decay_steps, s.end_lr) == (
        "warmup_cosine", 0.0, 5e-5, 4000, 50000, 5e-6
    )
    assert t.batch_size == 1024 and r.data.seq_len == 2048
    assert t.grad_accum_steps * t.micro_batch_size == 1024
    assert r.data.dedup.type == "variables"
    filters = {f.type: f for f in r.data.filters}
    assert filters["stars"].min == 11 and filters["commits"].min == 3  # "> 10 stars", "> 2 commits"
    assert filters["size"].max == 70707  # "< 70708"
    assert {"license", "fork"} <= set(filters)
    # The seed's corpus: SEART repositories (meeting its criteria) plus all of the Pile's, unfiltered.
    m = r.data.metadata
    assert m.missing == "unfiltered" and m.columns["stars"] == "stargazers"
    seart = [f for f in r.data.filters if f.type in ("stars", "commits", "license", "fork", "size")]
    assert {f.column for f in seart} <= set(m.columns), "the SEART filters read joined columns only"
    d = filters["decontaminate"]
    assert d.ngram == 13 and d.humaneval and d.apps.split == "test"


def test_code_clippy_gpt2_is_the_125m_recipe_on_gpt2():
    r, neo = _load("code-clippy-gpt2.yaml"), _load("code-clippy-125m.yaml")
    assert (r.model.arch, r.model.checkpoint) == ("gpt2", "openai-community/gpt2")
    assert r.data.seq_len == 1024, "GPT-2 has 1024 positions"
    assert r.train.batch_size * r.data.seq_len == neo.train.batch_size * neo.data.seq_len  # tokens per step
    assert r.optimizer == neo.optimizer and r.schedule == neo.schedule and r.train.steps == neo.train.steps
    assert r.data.filters == neo.data.filters and r.data.metadata == neo.data.metadata


def test_apps_125m_numbers():
    r = _load("apps-125m.yaml")
    o, s, t = r.optimizer, r.schedule, r.train
    assert (o.type, o.b1, o.b2, o.weight_decay) == ("adamw", 0.9, 0.98, 0.1)
    assert (s.type, s.init_lr, s.warmup_steps, s.end_lr) == ("warmup_linear", 0.0, 800, 0.0)
    assert t.batch_size == 256 and r.data.seq_len == 1024 and t.epochs == 5 and t.steps is None
    assert (r.data.format.type, r.data.format.loss_on) == ("apps", "solution")
    assert (t.checkpoint.keep_best_by, t.checkpoint.mode) == ("val/loss", "min")
    assert r.sweep == {"schedule.peak_lr": [1e-5, 3e-5, 1e-4]}


def test_apps_1_3b_numbers():
    r = _load("apps-1.3b.yaml")
    o, s, t = r.optimizer, r.schedule, r.train
    assert r.model.checkpoint == "EleutherAI/gpt-neo-1.3B"
    assert (o.type, o.weight_decay) == ("adafactor", 0.1)
    assert (s.type, s.peak_lr, s.warmup_steps, s.end_lr) == ("warmup_linear", 2e-5, 5000, 0.0)
    assert t.batch_size == 24 and r.data.seq_len == 1024 and t.epochs == 5
    assert r.data.format.loss_on == "solution"


def test_humaneval_recipe_is_the_codex_protocol():
    r = _load("humaneval-gpt-neo-125m.yaml")
    assert r.train is None and r.data is None and r.optimizer is None
    (suite,) = r.evals
    assert suite.suite == "humaneval" and suite.timeout_s == 3.0
    assert suite.stop == ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
    by_k = {k: s for s in suite.sampling for k in s.k}
    assert set(by_k) == {1, 10, 100}
    assert by_k[1].temperature == 0.2 and by_k[10].temperature == by_k[100].temperature == 0.8
    assert all(s.top_p == 0.95 and s.n_samples == 200 for s in suite.sampling)


def test_smoke_is_small_offline_and_scratch():
    r = _load("smoke.yaml")
    assert r.model.init == "scratch" and r.tokenizer.train is not None
    assert r.logging.wandb.mode == "offline"
    assert r.model.config.n_layer <= 4 and r.train.steps <= 500
    source = r.data.sources[0]
    assert source.stdlib and source.root is None, "the smoke corpus (the stdlib) is present on every machine"
    root = Path(sysconfig.get_paths()["stdlib"])
    assert len([p for pattern in source.include for p in root.glob(pattern)]) > 50
    (apps,) = [e for e in r.evals if e.suite == "apps"]
    assert Path(apps.path).is_file() and "tests/fixtures" in apps.path, "APPS problems shipped with the tests"
    assert r.train.steps >= 200, "a few hundred steps"


def test_humaneval_defaults_are_the_codex_protocol_even_when_unwritten(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("name: r\nmodel: {arch: gpt2, checkpoint: gpt2}\nevals: [{suite: humaneval}]\n")
    (suite,) = load_recipe(f).recipe.evals
    assert [(s.temperature, s.top_p, s.n_samples, s.k) for s in suite.sampling] == [
        (0.2, 0.95, 200, [1]),
        (0.8, 0.95, 200, [10, 100]),
    ]
    assert math.isclose(suite.timeout_s, 3.0)
