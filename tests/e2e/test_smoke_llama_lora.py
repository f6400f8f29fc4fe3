"""The Llama-family LoRA smoke recipe end to end, offline: data (APPS fixtures, loss on solutions,
packed) → a tiny Qwen2-shaped model with LoRA → HumanEval and APPS → final/ (merged) and
final/adapter/ (PEFT's format). The references: transformers loads final/, and peft puts
final/adapter/ onto the same base and gives the merged model's logits."""

import json
from pathlib import Path

import numpy as np
import pytest

from ..helpers import ccrun

pytestmark = pytest.mark.e2e


def test_llama_lora_smoke_recipe_runs_end_to_end(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    out = ccrun("recipes/smoke-llama-lora.yaml", "--runs-dir", str(tmp_path), "--set", "train.steps=20",
                "--set", "evals[1].limit=2")
    assert out.returncode == 0, out.stderr[-3000:]
    run = Path(out.stdout.strip())
    for name in ("metrics.jsonl", "summary.json", "final/config.json", "final/model.safetensors", "final/tokenizer.json",
                 "final/adapter/adapter_config.json", "final/adapter/adapter_model.safetensors",
                 "eval/loss/results.json", "eval/humaneval/results.json", "eval/apps/results.json"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["train"]["steps"] == 20
    assert [e["suite"] for e in summary["evals"]] == ["loss", "humaneval", "apps"]
    for stage in ("model: qwen2 scratch", "LoRA rank 8, alpha 16 on q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                  "down_proj", "trainable parameters, the base frozen", "train: 20 steps", "eval apps: pass@1"):
        assert stage in out.stderr, stage
    losses = [json.loads(line)["train/loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "train/loss" in line]
    assert losses[-1] < losses[0]  # the adapters alone learn something

    # final/: the merged model, a plain Qwen2 checkpoint for transformers
    merged = transformers.AutoModelForCausalLM.from_pretrained(run / "final").eval()
    assert type(merged).__name__ == "Qwen2ForCausalLM"
    config = json.loads((run / "final" / "adapter" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 8, 16)
    assert sorted(config["target_modules"]) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                      "up_proj", "down_proj"])

    # The base the run froze: the recipe's scratch model from its seed (LoRA draws from its own stream).
    from runner.model import build_model, save_pretrained
    from runner.recipe.load import load_recipe

    recipe = load_recipe(run / "resolved.yaml").recipe
    tokenizer = transformers.AutoTokenizer.from_pretrained(run / "final")
    base = build_model(recipe.model.model_copy(update={"lora": None}), tokenizer=tokenizer, seed=recipe.seed)
    save_pretrained(base, tmp_path / "base")
    hf_base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    ids = torch.tensor(np.random.RandomState(0).randint(0, len(tokenizer), size=(2, 24)))
    with torch.no_grad():
        plain = hf_base(ids).logits.numpy()  # before peft wraps hf_base's layers in place
    adapted = peft.PeftModel.from_pretrained(hf_base, run / "final" / "adapter").eval()
    with torch.no_grad():
        want, got = merged(ids).logits.numpy(), adapted(ids).logits.numpy()
    assert np.abs(want - got).max() <= 1e-4
    assert np.abs(want - plain).max() > 1e-3  # the adapters changed the model

    # Its checkpoint (the adapters alone, onto the base the recipe rebuilds) is the model final/ holds:
    # what `ccrun eval RUN --checkpoint latest` and `ccrun serve RUN --checkpoint latest` load.
    import jax.numpy as jnp

    from runner.model import from_pretrained
    from runner.model.lora import lora_layers
    from runner.train.checkpoint import load_run_model

    from_adapters, _ = load_run_model(run, recipe, checkpoint="latest")
    assert len(lora_layers(from_adapters)) == 2 * 7
    ours = np.asarray(from_adapters(jnp.asarray(ids.numpy(), jnp.int32)))
    final = np.asarray(from_pretrained(run / "final")(jnp.asarray(ids.numpy(), jnp.int32)))
    assert np.abs(ours - want).max() <= 1e-4 and np.abs(final - want).max() <= 1e-4
    again = ccrun("eval", str(run), "--checkpoint", "latest", "--set", "evals[1].limit=1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "humaneval: 1 problems; pass@1" in again.stdout + again.stderr
    assert (run / "eval-latest" / "humaneval" / "results.json").is_file()

