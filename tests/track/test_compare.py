"""`ccrun compare --wandb ENTITY/PROJECT`: the same table, recipe diff and plot from W&B's public API.

W&B has no server here, so the API is a stand-in with the public API's shape (Api.runs with a
display_name filter, Api.run by path, Run.config/summary/state/scan_history(keys=...)), filled
with what ccrun's Tracker logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import cli
from runner.recipe.load import load_recipe
from runner.recipe.resolve import recipe_hash, resolved_dict
from runner.track.compare import CompareError, wandb_runs


class FakeRun:
    def __init__(self, run_id, name, lr, losses, state="finished"):
        recipe = load_recipe("recipes/smoke.yaml", overrides=[f"schedule.peak_lr={lr}"]).recipe
        self.id, self.name, self.state = run_id, name, state
        self.config = {**resolved_dict(recipe), "ccrun": {"recipe_hash": recipe_hash(recipe)}}
        self.history = [{"_step": s, "train/loss": l, "train/lr": lr, "throughput/tokens_per_s": 1000.0 + s}
                        for s, l in losses]
        self.history.append({"_step": losses[-1][0], "val/loss": losses[-1][1] + 0.1})
        self.summary = {"train/loss": losses[-1][1], "val/loss": losses[-1][1] + 0.1, "humaneval/pass@1": 0.25,
                        "_runtime": 12.5, "eval/humaneval/samples": {"_type": "table-file"}}

    def scan_history(self, keys=None, page_size=1000, min_step=0, max_step=None):
        return iter([r for r in self.history if all(k in r for k in keys)])


class FakeApi:
    def __init__(self, runs):
        self.by_id = {r.id: r for r in runs}
        self.asked = []

    def runs(self, path=None, filters=None, **_):
        self.asked.append(path)
        return [r for r in self.by_id.values() if r.name == filters["display_name"]]

    def run(self, path=""):
        entity, project, run_id = path.split("/")
        if run_id not in self.by_id:
            raise ValueError(f"Could not find run {path}")
        return self.by_id[run_id]


@pytest.fixture
def api():
    return FakeApi([FakeRun("abc123", "20261126-1200-aaaa", 1.0e-3, [(10, 5.0), (20, 4.5)]),
                    FakeRun("def456", "20261126-1300-bbbb", 3.0e-3, [(10, 4.8), (20, 4.1)], state="crashed")])


def test_wandb_runs_by_name_or_id(api):
    a, b = wandb_runs("me/ccrun-smoke", ["20261126-1200-aaaa", "def456"], api=api)
    assert api.asked == ["me/ccrun-smoke", "me/ccrun-smoke"]
    assert a.row == {"status": "succeeded", "train/loss": 4.5, "val/loss": pytest.approx(4.6), "tokens_per_s": 1020.0,
                     "humaneval/pass@1": 0.25, "wall_time_s": 12.5}
    assert b.row["status"] == "failed" and b.name == "20261126-1300-bbbb"
    assert [m["step"] for m in a.metrics] == [10, 20] and a.metrics[-1]["val/loss"] == pytest.approx(4.6)
    assert "ccrun" not in a.recipe and a.recipe["schedule"]["peak_lr"] == 1.0e-3
    with pytest.raises(CompareError, match="no run 'nope' in me/ccrun-smoke"):
        wandb_runs("me/ccrun-smoke", ["nope"], api=api)


def test_cli_compare_wandb(api, monkeypatch, tmp_path, capsys):
    import wandb

    monkeypatch.setattr(wandb, "Api", lambda **kwargs: api)
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    with pytest.raises(SystemExit) as done:
        cli.main(["compare", "--wandb", "me/ccrun-smoke", "abc123", "def456", "--plot", str(tmp_path / "w.png")])
    out = capsys.readouterr().out
    assert done.value.code in (0, None), out
    lines = out.splitlines()
    assert lines[0].split() == ["metric", "20261126-1200-aaaa", "20261126-1300-bbbb"]
    assert any(line.split()[:3] == ["val/loss", "4.6000", "4.2000"] for line in lines)
    assert any(line.startswith("schedule.peak_lr") and "0.001" in line and "0.003" in line for line in lines)
    assert (tmp_path / "w.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit) as done:
        cli.main(["compare", "--wandb", "no-slash", "abc123"])
    assert done.value.code == 2 and "expected ENTITY/PROJECT" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        cli.main(["compare", "--wandb", "me/ccrun-smoke", "missing"])
    assert done.value.code == 1 and "no run 'missing'" in capsys.readouterr().err
