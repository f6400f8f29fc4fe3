"""Run a few train steps of a tiny model on a mesh; print the losses as JSON (for test_mesh.py).

Usage: python -m tests.train.mesh_probe DATA FSDP   (DATA=FSDP=0: one device, no mesh)
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
from runner.train.mesh import batch_sharding, make_mesh, place, replicated
from runner.train.optim import optimizer, schedule
from runner.train.step import make_train_step

V, T, MB, ACCUM = 64, 16, 8, 2


def main() -> None:
    data, fsdp = int(sys.argv[1]), int(sys.argv[2])
    config = GPTConfig("gpt-neo", V, T, 32, 2, 4, 64, ("global", "local"), window_size=4)
    graphdef, params = nnx.split(GPTNeo(config, rngs=nnx.Rngs(0)))
    tx = optimizer(AdamW(type="adamw", weight_decay=0.1), schedule(
        WarmupCosine(type="warmup_cosine", peak_lr=3e-3, warmup_steps=2, decay_steps=10), 12))
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
    losses = []
    rs = np.random.RandomState(0)
    for i in range(4):
        ids = ((rs.randint(0, V, size=(ACCUM * MB, 1)) + np.arange(T)) % V).astype(np.int32).reshape(ACCUM, MB, T)
        batch = {"input_ids": put(ids), "loss_weights": put(np.ones_like(ids, dtype=np.uint8))}
        params, opt_state, m = step(params, opt_state, batch, jax.random.key(i))
        losses.append(float(m["loss"]))
    print(json.dumps({"devices": jax.device_count(), "losses": losses, "sharded_leaves": sharded}))


if __name__ == "__main__":
    main()
