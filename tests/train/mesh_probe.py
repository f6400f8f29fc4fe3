"""Run a few train steps of a tiny model on one device and on data x fsdp meshes, in one process;
check which meshes fit the devices; print it all as JSON (for test_mesh.py).

Usage: python -m tests.train.mesh_probe DATA:FSDP ...   (0:0: one device, no mesh)
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from runner.model import GPTConfig, GPTNeo
from runner.recipe.schema_optim import AdamW, WarmupCosine
from runner.recipe.schema_train import MeshSpec
from runner.train.mesh import MeshError, batch_sharding, make_mesh, place, replicated
from runner.train.optim import optimizer, schedule
from runner.train.step import make_train_step

V, T, MB, ACCUM = 64, 16, 8, 2


def losses(graphdef, params, tx, data: int, fsdp: int) -> dict:
    """Four steps from `params` (untouched: the steps get a copy) on the mesh data x fsdp."""
    params = jax.tree_util.tree_map(jnp.copy, params)
    opt_state = tx.init(params)
    if data:
        mesh = make_mesh(MeshSpec(data=data, fsdp=fsdp))
        params, opt_state, (ps, os_) = place(params, opt_state, mesh)
        step = make_train_step(graphdef, tx, dropout=False,
                               out_shardings=(ps, os_, replicated(mesh)))
        put = lambda x: jax.device_put(x, batch_sharding(mesh))  # noqa: E731
        sharded = sum(1 for x in jax.tree_util.tree_leaves(params) if not x.sharding.is_fully_replicated)
    else:
        step = make_train_step(graphdef, tx, dropout=False)
        put, sharded = jnp.asarray, 0
    out = []
    rs = np.random.RandomState(0)
    for i in range(4):
        ids = ((rs.randint(0, V, size=(ACCUM * MB, 1)) + np.arange(T)) % V).astype(np.int32).reshape(ACCUM, MB, T)
        batch = {"input_ids": put(ids), "loss_weights": put(np.ones_like(ids, dtype=np.uint8))}
        params, opt_state, m = step(params, opt_state, batch, jax.random.key(i))
        out.append(float(m["loss"]))
    return {"losses": out, "sharded_leaves": sharded}


def fit() -> dict:
    """make_mesh on this process's devices: data=-1 takes them all; one device too many is refused."""
    n = jax.device_count()
    try:
        make_mesh(MeshSpec(data=n + 1, fsdp=1))
        refused = None
    except Exception as exc:  # noqa: BLE001 - reported, the test checks its type
        refused = {"mesh_error": isinstance(exc, MeshError), "message": str(exc)}
    return {"all": dict(make_mesh(MeshSpec(data=-1, fsdp=1)).shape), "one_too_many": refused}


def main() -> None:
    config = GPTConfig("gpt-neo", V, T, 32, 2, 4, 64, ("global", "local"), window_size=4)
    graphdef, params = nnx.split(GPTNeo(config, rngs=nnx.Rngs(0)))
    tx = optimizer(AdamW(type="adamw", weight_decay=0.1), schedule(
        WarmupCosine(type="warmup_cosine", peak_lr=3e-3, warmup_steps=2, decay_steps=10), 12))
    runs = {}
    for arg in sys.argv[1:]:
        data, fsdp = map(int, arg.split(":"))
        runs[arg] = losses(graphdef, params, tx, data, fsdp)
    print(json.dumps({"devices": jax.device_count(), "runs": runs, "fit": fit()}))


if __name__ == "__main__":
    main()
