"""The plan `ccrun run --dry-run` prints and every launch writes as plan.json: sweep points, model
size, tokens per step, steps, schedule shape, memory per device (checked against what XLA reports
for the compiled train step), inputs, and what is written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner import plan as planning
from runner.recipe.load import load_recipe
from runner.track.rundir import PLAN_FILE, RunDir

from .helpers import ROOT

DRY_RUN_FILES = {"sweep.json", PLAN_FILE, "provenance.json", "recipe.yaml", "overrides.yaml", "resolved.yaml"}


def test_apps_dry_run_shows_the_three_sweep_points_and_a_memory_estimate(tmp_path):
    runs = tmp_path / "runs"
    out = subprocess.run([sys.executable, "-m", "runner.cli", "run", "recipes/apps-125m.yaml", "--dry-run", "--runs-dir",
                          str(runs)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    dirs = [Path(line) for line in out.stdout.strip().splitlines()[-3:]]
    assert [d.parent for d in dirs] == [runs / "apps-125m"] * 3
    assert [d.name.split("-", 3)[-1] for d in dirs] == ["peak_lr=1e-05", "peak_lr=3e-05", "peak_lr=0.0001"]
    assert sorted(p.name for p in (runs / "apps-125m").iterdir()) == sorted(d.name for d in dirs)  # nothing else
    for i, d in enumerate(dirs):
        assert {p.name for p in d.iterdir()} - {"git.diff"} == DRY_RUN_FILES
        assert RunDir(d).dry_run()
        written = json.loads((d / PLAN_FILE).read_text())
        assert written["run_dir"] == str(d) and written["point"] == {"schedule.peak_lr": [1e-5, 3e-5, 1e-4][i]}
        assert written["model"]["parameters"] == 125_198_592  # GPT-Neo 125M, the tied head counted once
        assert written["memory"]["total"] > written["memory"]["activations"] > 0
        assert {i["name"]: i["state"] for i in written["inputs"]} == {"EleutherAI/gpt-neo-125M": "missing",
                                                                      "codeparrot/apps": "missing"}
    text = out.stderr
    for needle in ("point 0: schedule.peak_lr=1e-05", "point 1: schedule.peak_lr=3e-05", "point 2: schedule.peak_lr=0.0001",
                   "125.20M parameters", "tokens/step  262,144", "from epochs (5): known after the data stage",
                   "warmup 0→3e-05 over 800 steps, linear to 0 at the last step", "GiB per device: parameters",
                   "optimizer", "activations", "EleutherAI/gpt-neo-125M (model.checkpoint, tokenizer.name): missing",
                   "codeparrot/apps (data.sources[0].hub, evals[1].hub): missing"):
        assert needle in text, needle


# A tiny Llama-family model (grouped-query attention, untied head) with LoRA on every linear layer.
LLAMA_LORA = """
  arch: llama
  init: scratch
  config: {n_layer: LAYERS, d_model: 256, n_head: 8, n_kv_head: 2, vocab_size: 1024, max_positions: 256}
  lora: {rank: 8}"""


def recipe_text(optimizer: str, compute: str = "float32", remat: str = "none", layers: int = 2,
                arch: str = "gpt-neo") -> str:
    model = f"""
  arch: gpt-neo
  init: scratch
  config: {{n_layer: {layers}, d_model: 256, n_head: 8, vocab_size: 1024, max_positions: 256, window_size: 64}}"""
    if arch == "llama-lora":
        model = LLAMA_LORA.replace("LAYERS", str(layers))
    return f"""
name: tiny
model:{model}
  dtype: {{compute: {compute}}}
tokenizer: {{train: {{vocab_size: 1024}}}}
data: {{sources: [{{type: files, stdlib: true}}], seq_len: 256}}
optimizer: {{type: {optimizer}, weight_decay: 0.1}}
schedule: {{type: warmup_linear, peak_lr: 1.0e-3, warmup_steps: 10}}
train: {{batch_size: 16, micro_batch_size: 8, steps: 100, remat: {remat}}}
"""


def tiny_recipe(tmp_path, optimizer: str, compute: str = "float32", remat: str = "none", layers: int = 2,
                arch: str = "gpt-neo"):
    path = tmp_path / f"{optimizer}-{compute}-{remat}-{layers}-{arch}.yaml"
    path.write_text(recipe_text(optimizer, compute, remat, layers, arch))
    return load_recipe(path).recipe


def xla_peak(recipe) -> int:
    """What XLA reports for the compiled train step, as runner.train.loop builds it: arguments +
    outputs - aliased (donated) + temporaries (jax-ml/jax#31292)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from runner.model import build_model, set_remat
    from runner.train.optim import optimizer, schedule
    from runner.train.step import make_train_step, split_trainable

    model = nnx.eval_shape(lambda: build_model(recipe.model, seed=0))  # shapes only: nothing initialised
    graphdef, params, frozen = split_trainable(set_remat(model, recipe.train.remat))  # LoRA: adapters train
    tx = optimizer(recipe.optimizer, schedule(recipe.schedule, recipe.train.steps))
    opt_state = jax.eval_shape(tx.init, params)
    shape = (recipe.train.grad_accum_steps, recipe.train.micro_batch_size, recipe.data.seq_len)
    batch = {"input_ids": jax.ShapeDtypeStruct(shape, jnp.int32), "loss_weights": jax.ShapeDtypeStruct(shape, jnp.float32)}
    step = make_train_step(graphdef, tx, dropout=False)
    key = jax.eval_shape(lambda: jax.random.key(0))
    stats = step.lower(params, opt_state, batch, key, frozen).compile().memory_analysis()
    return (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
            + stats.temp_size_in_bytes)


@pytest.mark.parametrize("optimizer, compute, remat, layers, arch", [
    ("adamw", "float32", "none", 2, "gpt-neo"), ("adafactor", "float32", "none", 2, "gpt-neo"),
    ("adamw", "bfloat16", "none", 2, "gpt-neo"),
    # 4 layers: what every layer keeps under remat shows beside the one layer recomputed
    ("adamw", "float32", "block", 4, "gpt-neo"), ("adafactor", "float32", "dots", 4, "gpt-neo"),
    ("adamw", "bfloat16", "dots", 4, "gpt-neo"),
    # LoRA: the optimizer and gradients hold the adapters, the base sits in the compute dtype
    ("adamw", "float32", "none", 2, "llama-lora"), ("adamw", "bfloat16", "none", 2, "llama-lora")])
def test_the_memory_estimate_is_within_25_percent_of_xla(tmp_path, optimizer, compute, remat, layers, arch):
    recipe = tiny_recipe(tmp_path, optimizer, compute, remat, layers, arch)
    sizes, _ = planning.model_sizes(recipe)
    estimate = planning.memory_estimate(recipe, sizes, platform="cpu")
    measured = xla_peak(recipe)
    assert abs(estimate["total"] - measured) <= 0.25 * measured, (estimate, measured)


def test_parameters_and_optimizer_state_are_counted_as_built(tmp_path):
    """The analytic counts equal the model's own and optax's state (both optimizers, both archs)."""
    import jax
    import numpy as np
    from flax import nnx

    from runner.model import build_model
    from runner.train.optim import optimizer, schedule

    for optimizer_name in ("adamw", "adafactor"):
        recipe = tiny_recipe(tmp_path, optimizer_name)
        for arch in ("gpt-neo", "gpt2"):
            layers = ["global", "local"] if arch == "gpt-neo" else ["global"] * 2
            spec = recipe.model.model_copy(update={"arch": arch, "config": recipe.model.config.model_copy(
                update={"attention_layers": layers})})
            model = build_model(spec, seed=0)
            sizes = {**planning.model_sizes(recipe)[0], "arch": arch}
            _, params = nnx.split(model)
            leaves = jax.tree_util.tree_leaves(params)
            assert planning.param_count(sizes) == sum(x.size for x in leaves) == model.config.num_params()
            state = jax.eval_shape(optimizer(recipe.optimizer, schedule(recipe.schedule, 100)).init, params)
            values = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state) if x.ndim > 0)
            assert planning.optimizer_values(recipe.optimizer, planning.param_shapes(sizes)) == values


@pytest.mark.parametrize("arch, kv, tie, bias", [("llama", 2, False, False), ("llama", 8, True, True),
                                                 ("qwen2", 2, True, True), ("qwen2", 4, False, True)])
def test_llama_family_sizes_and_lora_counts_are_transformers_and_peft_counts(tmp_path, arch, kv, tie, bias):
    """The plan's parameter count equals transformers' own model of that config.json (the reference),
    and its LoRA count equals what peft adds for the same rank and target modules."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")

    fields = dict(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=8,
                  num_key_value_heads=kv, max_position_embeddings=128, tie_word_embeddings=tie)
    if arch == "llama":
        config = transformers.LlamaConfig(attention_bias=bias, **fields)
    else:
        config = transformers.Qwen2Config(**fields)
    (tmp_path / "ckpt").mkdir()
    config.to_json_file(str(tmp_path / "ckpt" / "config.json"))
    (tmp_path / "r.yaml").write_text(f"name: p\nmodel: {{arch: {arch}, checkpoint: ./ckpt, lora: {{rank: 4}}}}\n")
    recipe = load_recipe(tmp_path / "r.yaml").recipe
    sizes, _ = planning.model_sizes(recipe)
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(config)
    assert planning.param_count(sizes) == sum(p.numel() for p in hf.parameters())  # shared tensors once
    lora = peft.get_peft_model(hf, peft.LoraConfig(r=4, target_modules=list(recipe.model.lora.targets)))
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert sum(a * b for a, b in planning.lora_shapes(sizes, recipe.model.lora)) == trainable
    plan = planning.make_plan(recipe)
    assert plan["model"]["lora"]["trainable"] == trainable
    assert f"{trainable / 1e6:.3f}M trainable parameters, the base frozen" in planning.render([plan])


def test_the_schedule_shape_says_what_the_schedule_does(tmp_path):
    import optax  # noqa: F401 - the schedule below is optax's

    from runner.train.optim import schedule

    recipe = tiny_recipe(tmp_path, "adamw")
    spec = recipe.schedule.model_copy(update={"peak_lr": 3e-5, "warmup_steps": 800})
    assert planning.schedule_shape(spec, 5000) == "warmup 0→3e-05 over 800 steps, linear to 0 at step 5000"
    lr = schedule(spec, 5000)
    assert float(lr(0)) == 0 and float(lr(800)) == pytest.approx(3e-5) and float(lr(5000)) == pytest.approx(0, abs=1e-12)
    cosine = load_recipe(ROOT / "recipes" / "smoke.yaml").recipe.schedule
    assert planning.schedule_shape(cosine, 300) == "warmup 0→0.003 over 30 steps, cosine to 0.0003 at step 300"
    assert planning.schedule_shape(cosine, 400) == ("warmup 0→0.003 over 30 steps, cosine to 0.0003 at step 300, "
                                                    "then flat to step 400")


def test_a_pretrained_model_is_sized_from_its_config_json_or_said_unknown(tmp_path):
    """A local checkpoint's config.json (transformers' names), the seed's published sizes, or unknown."""
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "n_layer": 3, "n_embd": 96, "n_head": 4, "n_inner": None, "vocab_size": 500,
        "n_positions": 128}))
    (tmp_path / "r.yaml").write_text("name: p\nmodel: {arch: gpt2, checkpoint: ./ckpt}\n")
    recipe = load_recipe(tmp_path / "r.yaml").recipe
    sizes, source = planning.model_sizes(recipe)
    assert sizes == {"arch": "gpt2", "n_layer": 3, "d_model": 96, "n_head": 4, "d_ff": 384, "vocab_size": 500,
                     "max_positions": 128} and source == str(tmp_path / "ckpt" / "config.json")
    unknown = recipe.model.model_copy(update={"checkpoint": "someone/unseen-model"})
    assert planning.model_sizes(recipe.model_copy(update={"model": unknown})) == (None, "unknown (checkpoint not cached)")
    plan = planning.make_plan(recipe.model_copy(update={"model": unknown}), run_dir="runs/p/<utc-time>-x")
    assert "parameters unknown (checkpoint not cached)" in planning.render([plan])


def test_a_cached_hub_checkpoint_is_sized_from_the_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    entry, revision = tmp_path / "hub" / "models--someone--cached", "0" * 40
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(revision)
    (entry / "snapshots" / revision).mkdir(parents=True)
    (entry / "snapshots" / revision / "config.json").write_text(json.dumps({
        "model_type": "gpt_neo", "num_layers": 2, "hidden_size": 64, "num_heads": 4, "intermediate_size": None,
        "vocab_size": 300, "max_position_embeddings": 256}))
    (tmp_path / "r.yaml").write_text("name: p\nmodel: {arch: gpt-neo, checkpoint: someone/cached}\n")
    sizes, _ = planning.model_sizes(load_recipe(tmp_path / "r.yaml").recipe)
    assert sizes == {"arch": "gpt-neo", "n_layer": 2, "d_model": 64, "n_head": 4, "d_ff": 256, "vocab_size": 300,
                     "max_positions": 256}


# JAX takes 75% of a GPU's memory for its pool by default (XLA_PYTHON_CLIENT_MEM_FRACTION): of an
# 80 GB GPU (80 GiB, A100/H100 80GB), 60 GiB.
GPU_POOL = int(0.75 * 80 * planning.GIB)
FULL_SIZE = ["apps-1.3b.yaml", "apps-125m.yaml", "code-clippy-125m.yaml", "code-clippy-gpt2.yaml",
             "apps-qwen2.5-coder-0.5b-lora.yaml"]


@pytest.mark.parametrize("name", FULL_SIZE)
def test_each_shipped_full_size_recipe_fits_one_80gb_gpu_by_the_estimate(name):
    """The dry-run's GPU estimate of the seed's runs (sizes from the published configs the plan
    module knows, or the hub cache: the same numbers) stays within JAX's default pool of one 80 GB GPU;
    the recipe comments give the figures and what was changed to get there."""
    recipe = load_recipe(ROOT / "recipes" / name).recipe
    sizes, _ = planning.model_sizes(recipe)
    assert sizes is not None and sizes["n_layer"] in (12, 24)  # Qwen2.5-Coder 0.5B: 24 too
    estimate = planning.memory_estimate(recipe, sizes, platform="gpu")
    assert estimate["devices"].startswith("mesh data -1 × fsdp 1: 1 device(s)")  # one GPU, not divided
    assert estimate["total"] <= GPU_POOL, (name, estimate)


def test_remat_is_what_makes_apps_125m_fit():
    """apps-125m computes in fp32 (XLA attention, [heads, T, T] scores): its micro-batch of 32 fits
    because of train.remat: dots; without it the estimate is over an 80 GB GPU."""
    recipe = load_recipe(ROOT / "recipes" / "apps-125m.yaml").recipe
    assert recipe.train.remat == "dots" and recipe.train.micro_batch_size == 32
    sizes, _ = planning.model_sizes(recipe)
    plain = recipe.model_copy(update={"train": recipe.train.model_copy(update={"remat": "none"})})
    assert planning.memory_estimate(plain, sizes, platform="gpu")["total"] > 80 * planning.GIB


def test_a_streaming_recipe_plans_its_shuffle_buffer():
    """The Code Clippy recipes stream (data.streaming): the plan says so and counts the shuffle
    buffer's host memory, 10,000 blocks of 2,048 int32 ids + uint8 weights (5 bytes a token)."""
    recipe = load_recipe(ROOT / "recipes" / "code-clippy-125m.yaml").recipe
    plan = planning.make_plan(recipe)
    assert plan["stream"] == {"shuffle_buffer": 10000, "buffer_bytes": 10000 * 2048 * 5, "dedup": "variables"}
    assert "streamed while training: shuffle buffer 10,000 blocks (97.7 MiB" in planning.render([plan])
