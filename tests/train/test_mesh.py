"""8 simulated CPU devices: data x fsdp meshes train exactly like one device.

One process (8 devices need their own interpreter: XLA_FLAGS is read once) runs the one-device
reference, both meshes and the fit checks; the tests read its report.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MESHES = ((4, 2), (1, 8))
# JAX's switch for programs cheaper to run than to optimize (LLVM's optimizations off): each step
# compiles in about half the time. Every run compared is compiled alike, and the partitioning tested
# (HLO, before LLVM) is the same.
FAST_COMPILE = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}


@pytest.fixture(scope="module")
def probe():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
           **FAST_COMPILE}
    args = ["0:0", *(f"{data}:{fsdp}" for data, fsdp in MESHES)]
    out = subprocess.run([sys.executable, "-m", "tests.train.mesh_probe", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sharded_meshes_match_one_device(probe):
    assert probe["devices"] == 8
    one = probe["runs"]["0:0"]
    assert one["sharded_leaves"] == 0  # the reference: plain arrays, no mesh
    for data, fsdp in MESHES:
        got = probe["runs"][f"{data}:{fsdp}"]
        assert got["sharded_leaves"] > 0
        assert got["losses"] == pytest.approx(one["losses"], rel=1e-5), (data, fsdp)
    assert one["losses"][-1] < one["losses"][0]


def test_mesh_must_fit_the_devices(probe):
    n = probe["devices"]
    assert probe["fit"]["all"] == {"data": n, "fsdp": 1}
    refused = probe["fit"]["one_too_many"]
    assert refused is not None and refused["mesh_error"], refused
    assert "does not fit" in refused["message"]
