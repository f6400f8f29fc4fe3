"""Resolution: defaults and derived values explicit; a hash over meaning that survives a new checkout."""

import shutil
from pathlib import Path

from runner.recipe.load import load_recipe
from runner.recipe.resolve import flatten, recipe_hash, resolved_dict

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
name: r
model: {arch: gpt-neo, checkpoint: EleutherAI/gpt-neo-125M}
data: {sources: [{type: jsonl, paths: [data/train.jsonl]}], validation: {fraction: 0.1}}
optimizer: {type: adamw}
schedule: {type: constant, peak_lr: 1.0e-4}
train: {batch_size: 64, micro_batch_size: 16, steps: 100}
evals: [{suite: loss}, {suite: humaneval, name: he-greedy, sampling: [{temperature: 0.0}]}]
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_derived_values_are_explicit(tmp_path):
    r = load_recipe(write(tmp_path / "r.yaml", BASE)).recipe
    d = resolved_dict(r)
    assert d["train"]["grad_accum_steps"] == 4
    assert d["tokenizer"]["name"] == "EleutherAI/gpt-neo-125M"
    assert [e["name"] for e in d["evals"]] == ["loss", "he-greedy"]
    assert d["optimizer"]["b2"] == 0.999 and d["logging"]["wandb"]["mode"] == "offline"


def test_grad_accum_steps_can_be_given_instead_of_micro_batch(tmp_path):
    text = BASE.replace("micro_batch_size: 16", "grad_accum_steps: 8")
    r = load_recipe(write(tmp_path / "r.yaml", text)).recipe
    assert (r.train.micro_batch_size, r.train.grad_accum_steps) == (8, 8)


def test_scratch_attention_layers_and_ffn_are_derived(tmp_path):
    text = "name: s\nmodel: {arch: gpt-neo, init: scratch, config: {n_layer: 3, d_model: 32, n_head: 4}}\ntokenizer: {name: gpt2}\n"
    config = load_recipe(write(tmp_path / "s.yaml", text)).recipe.model.config
    assert config.attention_layers == ["global", "local", "global"] and config.d_ff == 128
    gpt2 = load_recipe(write(tmp_path / "g.yaml", text.replace("gpt-neo", "gpt2"))).recipe.model.config
    assert gpt2.attention_layers == ["global"] * 3


def test_local_paths_resolve_against_the_file_that_wrote_them(tmp_path):
    write(tmp_path / "base" / "data.yaml", "data: {sources: [{type: jsonl, paths: [../corpus/*.jsonl]}]}\n")
    f = write(tmp_path / "exp" / "r.yaml", "extends: ../base/data.yaml\nname: r\nmodel: {arch: gpt2, checkpoint: ./ckpt}\n")
    r = load_recipe(f).recipe
    assert r.data.sources[0].paths == [str(tmp_path / "corpus" / "*.jsonl")]
    assert r.model.checkpoint == str(tmp_path / "exp" / "ckpt")  # local: starts with ./
    hub = load_recipe(write(tmp_path / "h.yaml", "name: h\nmodel: {arch: gpt2, checkpoint: openai/gpt2}\n")).recipe
    assert hub.model.checkpoint == "openai/gpt2"  # a hub id stays a hub id


def test_set_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    f = write(tmp_path / "r.yaml", BASE)
    monkeypatch.chdir(tmp_path / "..")
    r = load_recipe(f, ["data.sources[0].paths=[other/x.jsonl]"]).recipe
    assert r.data.sources[0].paths == [str(tmp_path.parent / "other" / "x.jsonl")]


def test_hash_is_the_same_in_another_checkout(tmp_path):
    hashes = []
    for clone in ("one", "elsewhere/two"):
        top = tmp_path / clone
        shutil.copytree(ROOT / "recipes", top / "recipes")
        shutil.copytree(ROOT / "runner", top / "runner", ignore=shutil.ignore_patterns("__pycache__"))
        (top / "pyproject.toml").write_text("")  # marks the checkout root
        hashes.append([recipe_hash(load_recipe(p).recipe) for p in sorted((top / "recipes").glob("*.yaml"))])
    assert hashes[0] == hashes[1]
    assert len(set(hashes[0])) == len(hashes[0]), "different recipes, different hashes"


def test_hash_covers_meaning_not_naming(tmp_path):
    def h(text):
        return recipe_hash(load_recipe(write(tmp_path / "r.yaml", text)).recipe)

    base = h(BASE)
    assert h(BASE.replace("name: r", "name: renamed") + "description: words\n") == base
    assert h(BASE + "logging: {wandb: {project: elsewhere, mode: disabled}}\n") == base
    assert h(BASE + "seed: 1\n") != base
    assert h(BASE.replace("steps: 100", "steps: 101")) != base
    # A default written out is the same meaning as a default left out.
    assert h(BASE.replace("optimizer: {type: adamw}", "optimizer: {type: adamw, b1: 0.9}")) == base
    # micro-batching is spelled two ways; the resolved form (and hash) is one.
    assert h(BASE.replace("micro_batch_size: 16", "grad_accum_steps: 4")) == base


def test_flatten():
    data = {"a": {"b": 1, "c": [1, 2]}, "e": [{"x": 1}, {"y": None}], "f": {}, "g": []}
    assert flatten(data) == {"a.b": 1, "a.c": [1, 2], "e[0].x": 1, "e[1].y": None, "f": {}, "g": []}
