"""`ccrun compare` of two finished runs: the table, the recipe difference, the plot."""

import pytest

from ..helpers import SHORT, ccrun

pytestmark = pytest.mark.e2e


def test_compare_two_runs(tmp_path):
    made = []
    for lr in ("1.0e-3", "3.0e-3"):
        out = ccrun("run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path), *SHORT, "--set", f"schedule.peak_lr={lr}")
        assert out.returncode == 0, out.stderr[-2000:]
        made.append(out.stdout.strip())
    shown = ccrun("compare", *made, "--plot", str(tmp_path / "curves.png"))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[0] == "metric" and any(line.startswith("val/loss") for line in lines)
    assert any(line.startswith("schedule.peak_lr") and "0.001" in line and "0.003" in line for line in lines)
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    bad = ccrun("compare", str(tmp_path))
    assert bad.returncode == 2 and "not a run directory" in bad.stderr
