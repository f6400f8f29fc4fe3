"""8 simulated CPU devices: data x fsdp meshes train exactly like one device."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.recipe.schema_train import MeshSpec

ROOT = Path(__file__).resolve().parents[2]


def probe(data, fsdp):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-m", "tests.train.mesh_probe", str(data), str(fsdp)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sharded_meshes_match_one_device():
    one = probe(0, 0)
    for data, fsdp in ((4, 2), (1, 8)):
        got = probe(data, fsdp)
        assert got["devices"] == 8 and got["sharded_leaves"] > 0
        assert got["losses"] == pytest.approx(one["losses"], rel=1e-5), (data, fsdp)
    assert one["losses"][-1] < one["losses"][0]


def test_mesh_must_fit_the_devices():
    import jax

    from runner.train.mesh import MeshError, make_mesh

    n = jax.device_count()
    assert make_mesh(MeshSpec(data=-1, fsdp=1)).shape == {"data": n, "fsdp": 1}
    with pytest.raises(MeshError, match="does not fit"):
        make_mesh(MeshSpec(data=n + 1, fsdp=1))
