"""bench/lora.py --tiny: the LoRA-vs-full step benchmark runs on the CPU and prints one sane JSON line.

Expected values are recomputed here from the tiny sizes, independently of the bench: the model's
parameter count by hand, the adapters' r·(in + out) per targeted layer, AdamW's two fp32 moments
per trainable parameter, the first losses of a random model near ln(vocabulary).
"""

import math

import pytest

from ..helpers import bench_report

# A benchmark's smoke run: slow for the fast suite, and it makes no run directory.
pytestmark = pytest.mark.e2e
MAKES_RUN_DIRS = False

# bench/lora.py's --tiny model: 2 layers, d_model 64, d_ff 256, vocabulary 512, 32 positions (= seq);
# rank 8 on all six projections by default.
L, D, F, V, P, R = 2, 64, 256, 512, 32, 8


@pytest.fixture(scope="module")
def report():
    return bench_report("lora.py", "--tiny", env={"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""})


def test_parameter_and_optimizer_counts(report):
    assert report["bench"] == "lora" and report["tiny"] is True and report["backend"] == "cpu"
    full, lora = report["full"], report["lora"]
    # GPT-Neo by hand: embeddings, per block 2 LayerNorms, q/k/v (no bias), out_proj, the MLP; ln_f; positions.
    block = 2 * 2 * D + 3 * D * D + D * D + D + D * F + F + F * D + D
    n = V * D + L * block + 2 * D + P * D
    adapters = L * R * (4 * (D + D) + (D + F) + (F + D))  # A [in, r] + B [r, out] per projection
    assert (full["trainable_params"], full["frozen_params"]) == (n, 0)
    assert (lora["trainable_params"], lora["lora_params"], lora["frozen_params"]) == (adapters, adapters, n)
    # AdamW: mu and nu in fp32 per trainable parameter, plus a few step counters.
    for side, count in ((full, n), (lora, adapters)):
        assert 0 <= side["optimizer_state_bytes"] - 8 * count <= 64
    assert report["optimizer_state_ratio"] == pytest.approx(lora["optimizer_state_bytes"] / full["optimizer_state_bytes"],
                                                            rel=1e-3)


def test_memory_and_time_figures(report):
    full, lora = report["full"], report["lora"]
    # The LoRA step's arguments: the base once (fp32 here) and the small adapters with their moments;
    # the full step's: the parameters and two moments each.
    assert lora["argument_mib"] < full["argument_mib"]
    for side in (full, lora):
        assert side["peak_mib"] == pytest.approx(side["temp_mib"] + side["argument_mib"], abs=0.02)
        assert side["step_s"] > 0 and side["tokens_per_s"] == pytest.approx(2 * P / side["step_s"], rel=2e-2)
        assert abs(side["last_loss"] - math.log(V)) < 0.5  # a random model after a few steps at lr 1e-4
    assert report["speedup"] == pytest.approx(full["step_s"] / lora["step_s"], rel=2e-2)
    assert report["peak_ratio"] == pytest.approx(lora["peak_mib"] / full["peak_mib"], rel=2e-2)
