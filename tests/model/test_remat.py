"""Activation checkpointing (train.remat: none, block, dots; runner.model.set_remat): the same loss,
gradients and train step as without it, and less memory in the compiled step.

The reference is the model without checkpointing (`remat: none`, jax's plain autodiff). In fp32 a
checkpointed block recomputes the operations it ran in the forward pass; XLA may fuse and order
them differently, so results agree to fp32 rounding (measured: gradients bit for bit under XLA's
full optimizations; with them off, losses agree to 1e-7 and parameters after one Adam step to
3.5e-7). Tolerances: loss rtol 1e-6; parameters atol 1e-6, 0.1% of the step Adam's first update
takes (about lr * sign(g), lr 1e-3), as tests/train/test_step.py: Adam magnifies fp32 rounding of
near-zero gradients.
In bf16 the saved values cross the checkpoint as bf16 arrays, while without it XLA:CPU may keep a
fused intermediate in fp32 (it computes bf16 in fp32): gradients differ by bf16 rounding, measured
at most 1.3 times what bf16 itself moves them from the fp32 model's; the test allows twice that.

Speed: each program is compiled once (the step per policy, shared by two tests) and as
jax_disable_most_optimizations compiles it (LLVM's optimizations off; buffer assignment, which the
memory test reads, is XLA's as always); tests that compare policies jit all three in one program.

Also runnable as `python -m tests.model.test_remat mesh`: one train step per policy on a mesh of
two simulated CPU devices (fsdp 2), printed as JSON for test_fsdp_mesh_steps_match.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from runner.model import REMAT_CHOICES, GPTConfig, GPTNeo, set_remat
from runner.model.remat import compiler_options
from runner.recipe.schema_optim import AdamW, Constant
from runner.train.optim import optimizer, schedule
from runner.train.step import make_train_step, weighted_ce

from ..helpers import ROOT

POLICIES = ("block", "dots")
# The step's model: 4 layers (so the saving shows over one recomputed layer), dropout on, packed rows.
V, T, D, LAYERS, MB, ACCUM = 256, 64, 32, 4, 4, 2
# What jax_disable_most_optimizations sets (jax/_src/compiler.py), for these compilations only.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def config(layers: int = LAYERS, d_model: int = D, dropout: float = 0.1) -> GPTConfig:
    return GPTConfig("gpt-neo", V, T, d_model, layers, 4, 4 * d_model, ("global", "local") * (layers // 2),
                     window_size=32, embd_dropout=dropout, attn_dropout=dropout, resid_dropout=dropout)


def packed_batch(rows: int, seed: int) -> dict[str, np.ndarray]:
    """Rows of 4 packed examples (segment ids 1..4, positions restarting at 0), loss on the last 3/4."""
    rs = np.random.RandomState(seed)
    ids = rs.randint(0, V, size=(rows, T)).astype(np.int32)
    segment_ids = np.repeat(np.arange(1, 5), T // 4)[None].repeat(rows, 0).astype(np.int32)
    positions = np.tile(np.arange(T // 4), 4)[None].repeat(rows, 0).astype(np.int32)
    weights = (positions >= T // 16).astype(np.float32)
    return {"input_ids": ids, "loss_weights": weights, "segment_ids": segment_ids, "positions": positions}


def tx():
    return optimizer(AdamW(type="adamw", weight_decay=0.1), schedule(Constant(type="constant", peak_lr=1e-3), 10))


@pytest.fixture(scope="module")
def steps():
    """policy → (graphdef, params, optimizer, compiled train step, batch [ACCUM, MB, T] with segment
    ids): one model, the same initial parameters for every policy."""
    out = {}
    for policy in REMAT_CHOICES:
        graphdef, params = nnx.split(set_remat(GPTNeo(config(), rngs=nnx.Rngs(0)), policy))
        optim = tx()
        batch = {k: jnp.asarray(v.reshape(ACCUM, MB, T)) for k, v in packed_batch(ACCUM * MB, 0).items()}
        step = make_train_step(graphdef, optim, dropout=True)
        compiled = step.lower(params, optim.init(params), batch, jax.random.key(0)).compile(FAST)
        out[policy] = (graphdef, params, optim, compiled, batch)
    return out


def test_the_graphdef_carries_the_choice_and_a_typo_is_refused():
    model = GPTNeo(config(layers=2), rngs=nnx.Rngs(0))
    assert model.remat == "none"  # the default: XLA keeps what it wants
    assert set_remat(model, "dots") is model
    assert nnx.merge(*nnx.split(model)).remat == "dots"
    with pytest.raises(ValueError, match="remat must be one of none, block, dots"):
        set_remat(model, "full")


@pytest.mark.parametrize("policy", POLICIES)
def test_a_train_step_with_accumulation_dropout_and_packed_rows_is_unchanged(steps, policy):
    """One make_train_step update (2 accumulated micro-batches, dropout 0.1, segment ids): loss,
    gradient norm and new parameters as the step without checkpointing (fp32; module docstring)."""
    results = {}
    for name in ("none", policy):
        _, params, optim, compiled, batch = steps[name]
        params = jax.tree_util.tree_map(jnp.copy, params)  # the step donates its parameters
        results[name] = compiled(params, optim.init(params), batch, jax.random.key(7))
    (p0, _, m0), (p1, _, m1) = results["none"], results[policy]
    assert float(m0["loss"]) > 0 and float(m0["grad_norm"]) > 0
    assert float(m1["tokens"]) == float(m0["tokens"])
    for key in ("loss", "grad_norm"):
        assert float(m1[key]) == pytest.approx(float(m0[key]), rel=1e-6), key
    for a, b in zip(jax.tree_util.tree_leaves(p0), jax.tree_util.tree_leaves(p1), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-6)


def test_checkpointing_lowers_the_compiled_steps_peak_memory(steps):
    """XLA's own accounting of the compiled step (temporaries: activations kept for the backward
    pass, gradients, workspace). Measured here: none 9.1 MiB, dots 4.1, block 4.0: block keeps one
    [B, T, D] input per layer, dots also the q/k/v/out and MLP matmul outputs (a superset)."""
    temp = {name: steps[name][3].memory_analysis().temp_size_in_bytes for name in REMAT_CHOICES}
    assert temp["block"] <= temp["dots"] < 0.6 * temp["none"], temp


def test_without_the_cpu_option_xla_undoes_the_checkpoint(steps):
    """Why the step compiles with runner.model.remat.compiler_options() on CPU: without it XLA:CPU
    merges the recomputation back into the forward pass and block costs what none costs."""
    graphdef, params, optim, compiled, batch = steps["block"]
    plain = jax.jit(make_train_step(graphdef, optim, dropout=True).__wrapped__)  # no compiler options
    lowered = plain.lower(params, optim.init(params), batch, jax.random.key(0))
    temp = lowered.compile(FAST).memory_analysis().temp_size_in_bytes
    assert compiler_options("cpu") == {"xla_disable_hlo_passes": "cse_barrier_expander"}
    assert compiler_options("gpu") is None
    assert temp > 1.8 * compiled.memory_analysis().temp_size_in_bytes


def models(dtype: str = "float32", dropout: float = 0.1) -> dict[str, tuple]:
    """policy → (graphdef, params) of one 2-layer model (the same weights for every policy)."""
    model = GPTNeo(config(layers=2, d_model=32, dropout=dropout), dtype=dtype, rngs=nnx.Rngs(0))
    return {policy: nnx.split(set_remat(nnx.merge(*nnx.split(model)), policy)) for policy in REMAT_CHOICES}


def test_bf16_loss_and_gradients_equal_without_checkpointing():
    """jax.value_and_grad of the token-weighted loss (dropout and packed rows) in bf16 compute for
    every policy, against bf16's own error: the same weights in fp32 compute (module docstring)."""
    batch = {k: jnp.asarray(v) for k, v in packed_batch(2, 1).items()}
    split = models("bfloat16")
    fp32_graphdef, _ = models("float32")["none"]

    def loss(p, graphdef):
        logits = nnx.merge(graphdef, p)(batch["input_ids"], segment_ids=batch["segment_ids"],
                                        positions=batch["positions"], deterministic=False,
                                        rngs=nnx.Rngs(dropout=jax.random.key(3)))
        s, n = weighted_ce(logits, batch["input_ids"], batch["loss_weights"])
        return s / n

    def all_policies(params):
        out = {name: jax.value_and_grad(loss)(params[name], graphdef) for name, (graphdef, _) in split.items()}
        return out | {"fp32": jax.value_and_grad(loss)(params["none"], fp32_graphdef)}

    run = jax.jit(all_policies, compiler_options={**compiler_options(), **FAST})
    results = run({name: params for name, (_, params) in split.items()})
    loss0, grads0 = results["none"]
    leaves0, fp32 = jax.tree_util.tree_leaves(grads0), jax.tree_util.tree_leaves(results["fp32"][1])
    for policy in POLICIES:
        loss1, grads1 = results[policy]
        assert float(loss1) == float(loss0)  # the forward pass is the same computation
        for a, b, f in zip(leaves0, jax.tree_util.tree_leaves(grads1), fp32, strict=True):
            bf16_error = float(jnp.max(jnp.abs(a - f)))  # how far bf16 moves this leaf's gradient
            assert 0 < bf16_error < 0.05 * float(jnp.max(jnp.abs(f)))  # bf16 rounding, not a bug
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=2 * bf16_error)


def test_inference_and_the_kv_cache_are_unchanged():
    """Without differentiation a checkpointed block computes what a plain one does: the forward
    logits and the KV-cache path (prefill + one decode step) are bit-identical."""
    ids = jnp.asarray(packed_batch(2, 2)["input_ids"][:, :16])
    split = models(dropout=0.0)

    def run(p, graphdef):
        model = nnx.merge(graphdef, p)
        logits, cache = model.extend(ids[:, :12], model.init_cache(2, 16))
        step, _ = model.extend(ids[:, 12:13], cache)
        return model(ids), logits, step

    every = jax.jit(lambda params: {name: run(params[name], g) for name, (g, _) in split.items()})
    out = every({name: params for name, (_, params) in split.items()})
    for policy in POLICIES:
        for a, b in zip(out["none"], out[policy], strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fsdp_mesh_steps_match():
    """Parameters sharded over fsdp=2 (runner.train.mesh.place, as the loop does): each policy's
    step gives the no-remat step's loss and parameters on the same mesh (fp32, tolerances as in
    the step test above). That sharded equals unsharded is tests/train/test_mesh.py's."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    out = subprocess.run([sys.executable, "-m", "tests.model.test_remat", "mesh"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["devices"] == 2 and report["sharded_leaves"] > 0 and report["none"]["loss"] > 0
    for policy in POLICIES:
        assert report[policy]["loss"] == pytest.approx(report["none"]["loss"], rel=1e-6)
        assert report[policy]["max_param_diff"] <= 1e-6, policy


def _mesh_report() -> dict:
    """Loss after one step per policy on a data 1 x fsdp 2 mesh, and how far its parameters are
    from the no-remat step's."""
    from runner.recipe.schema_train import MeshSpec
    from runner.train.mesh import batch_sharding, make_mesh, place, replicated

    mesh = make_mesh(MeshSpec(data=1, fsdp=2))
    batch = {k: jax.device_put(v.reshape(1, 4, T), batch_sharding(mesh)) for k, v in packed_batch(4, 4).items()}
    optim = tx()
    report: dict = {"devices": jax.device_count()}
    reference = None
    for policy, (graphdef, params) in models(dropout=0.0).items():
        params, opt_state, shardings = place(params, optim.init(params), mesh)
        report["sharded_leaves"] = sum(not x.sharding.is_fully_replicated for x in jax.tree_util.tree_leaves(params))
        step = make_train_step(graphdef, optim, dropout=False, out_shardings=(*shardings, replicated(mesh)))
        params, _, metrics = step(params, opt_state, batch, jax.random.key(0))
        leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]
        reference = leaves if reference is None else reference  # "none" comes first
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(leaves, reference, strict=True))
        report[policy] = {"loss": float(metrics["loss"]), "max_param_diff": diff}
    return report


if __name__ == "__main__" and sys.argv[1:] == ["mesh"]:
    print(json.dumps(_mesh_report()))
