"""bench/gpu.py --tiny: the GPU check's code paths run on the CPU and print one sane JSON line.

Expected values are recomputed here independently of the bench: the parameter count from the tiny
sizes by hand (and transformers' count of its own model of the same config, reported by the bench),
FLOPs/token from REFERENCE.md's formula 6N + 12·L·d·T, tokens/s from tokens per step ÷ step time,
the first losses of a random model near ln(vocabulary).
"""

import math

import pytest

from ..helpers import bench_report

# A benchmark's smoke run: slow for the fast suite, and it makes no run directory.
pytestmark = pytest.mark.e2e
MAKES_RUN_DIRS = False

# bench/gpu.py's --tiny model: 2 layers, d_model 64, d_ff 256, vocabulary 512, 1024 positions;
# seq 64, micro-batch 2; the protocol scaled to 4 samples x 8 new tokens, sampler batch 8.
L, D, F, V, P, T, MB = 2, 64, 256, 512, 1024, 64, 2


@pytest.fixture(scope="module")
def report():
    return bench_report("gpu.py", "--tiny", env={"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""})


def test_tiny_is_marked_a_cpu_smoke_check_with_no_target(report):
    assert report["bench"] == "gpu" and report["tiny"] is True
    assert report["backend"] == "cpu" and report["device"] == "cpu"
    # No dense bf16 peak is known for a CPU: MFU is null, and the JSON says why.
    assert report["peak_flops"] is None and "mfu is null" in report["peak_basis"]
    assert report["targets_met"] == {"mfu_125m": None, "mfu_1.3b": None, "humaneval_s": None}
    assert report["humaneval"]["target_s"] == 180.0
    assert {m: report["models"][m]["target_mfu"] for m in ("125m", "1.3b")} == {"125m": 0.40, "1.3b": 0.45}


@pytest.mark.parametrize("key, recipe, optimizer", [("125m", "recipes/code-clippy-125m.yaml", "adamw"),
                                                    ("1.3b", "recipes/apps-1.3b.yaml", "adafactor")])
def test_train_step_figures(report, key, recipe, optimizer):
    m = report["models"][key]
    assert (m["recipe"], m["optimizer"]) == (recipe, optimizer)  # the optimizer kind each recipe names
    assert m["dtype"] == {"compute": "bfloat16", "params": "float32"}  # both recipes' dtypes
    assert m["attention"] == "xla"  # cuDNN is GPU-only
    # Parameters counted by hand: embeddings, per block 2 LayerNorms, q/k/v/out (no q/k/v bias in
    # GPT-Neo), the MLP; the final LayerNorm; positions separately.
    block = 2 * 2 * D + 3 * D * D + D * D + D + D * F + F + F * D + D
    n = V * D + L * block + 2 * D
    assert m["params"] == n + P * D
    assert m["torch"]["params"] == m["params"]  # transformers' model of the same config, tied head
    assert m["flops_per_token"] == 6 * n + 12 * L * D * T
    assert m["mfu"] is None
    assert (m["seq_len"], m["micro_batch"], m["accum"], m["tokens_per_step"]) == (T, MB, 1, MB * T)
    for side in (m, m["torch"]):
        assert side["step_s"] > 0 and math.isfinite(side["tokens_per_s"]) and side["tokens_per_s"] > 0
        assert side["tokens_per_s"] == pytest.approx(MB * T / side["step_s"], rel=1e-3)  # step_s is rounded
    assert m["speedup"] == pytest.approx(m["tokens_per_s"] / m["torch"]["tokens_per_s"], rel=1e-2)
    # A few steps of a random model at lr ~0: the loss is still about ln V.
    assert abs(m["last_loss"] - math.log(V)) < 0.5


def test_sampler_and_humaneval_projection(report):
    s, h = report["sampler"], report["humaneval"]
    assert (h["problems"], h["samples"], h["new_tokens"]) == (164, 4, 8)
    assert s["batch"] == 8 and s["prompts_per_batch"] == 2
    assert h["batches"] == math.ceil(164 / 2)
    assert h["method"].startswith("extrapolated")
    assert all(x["prompt_len"] % 64 == 0 and x["batch_s"] > 0 and x["tokens_per_s"] > 0 and x["compile_s"] >= 0
               for x in s["measured"])
    # The projection interpolates the measured batch times: their sum lies between the extremes; the
    # protocol's time adds one compilation per padded length.
    times = [x["batch_s"] for x in s["measured"]]
    assert h["batches"] * min(times) - 0.01 <= h["projected_decode_s"] <= h["batches"] * max(times) + 0.01
    assert h["seconds"] == pytest.approx(h["projected_decode_s"] + h["projected_compile_s"], abs=0.02)
    assert 1 <= h["padded_lengths"] <= len(range(64, 1024 - 8 + 1, 64))
    assert s["tokens_per_s"] == pytest.approx(164 * 4 * 8 / h["projected_decode_s"], rel=1e-2)
