"""`ccrun resume` of a killed run gives the uninterrupted run's weights bit for bit; `ccrun reproduce`."""

import json
import sys
from pathlib import Path

import pytest

from ..helpers import ROOT, SHORT, ccrun

pytestmark = pytest.mark.e2e


def test_resume_and_reproduce(tmp_path):
    import signal
    import subprocess as sp
    import time

    done = ccrun("run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path / "a"), *SHORT)
    assert done.returncode == 0, done.stderr[-2000:]
    reference = Path(done.stdout.strip())
    # A run killed after its first checkpoint, then resumed in place.
    slow = Path(__file__).with_name("ccrun_slow.py")  # 0.2 s more per step, from outside the loop
    proc = sp.Popen([sys.executable, str(slow), "0.2", "run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path / "b"),
                     *SHORT], cwd=ROOT, stdout=sp.PIPE, stderr=sp.PIPE, text=True)
    deadline = time.time() + 240
    killed = None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "b").glob("smoke/*/checkpoints/10"))
        if found:
            proc.send_signal(signal.SIGKILL)
            killed = found[0].parent.parent
            break
        time.sleep(0.05)
    proc.communicate()
    assert killed is not None, "the run finished before it could be killed"
    assert json.loads((killed / "summary.json").read_text())["status"] == "running"
    resumed = ccrun("resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step" in resumed.stderr and "data: reused" in resumed.stderr
    from safetensors.numpy import load_file

    a, b = load_file(str(reference / "final" / "model.safetensors")), load_file(str(killed / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), "bitwise the same weights"
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 30
    again = ccrun("reproduce", str(reference), "--runs-dir", str(tmp_path / "c"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.startswith("reproduced: ")
