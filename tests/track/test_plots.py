"""Run outputs that read well: a plot's title and legend (each run named by what differs between
the recipes, `peak_lr=3e-05`, not by its directory), `ccrun compare`'s times as times, and a
dry-run directory shown as one."""

import json
from pathlib import Path

import pytest
import yaml

from runner import cli
from runner.recipe.load import load_recipe
from runner.recipe.resolve import resolved_dict
from runner.common.clock import duration
from runner.track.compare import RunView, figure, plot, run_labels

ROOT = Path(__file__).resolve().parents[2]


def recipe(*overrides: str) -> dict:
    return resolved_dict(load_recipe(ROOT / "recipes/smoke.yaml", overrides=list(overrides)).recipe)


def views(*recipes, metrics=()) -> list[RunView]:
    return [RunView(f"20261202-12000{i}-abcdef01", {}, r, list(metrics)) for i, r in enumerate(recipes)]


def test_labels_name_what_differs_between_the_recipes():
    base = recipe()
    # a sweep's points: the last segment of the key, as the point's directory label
    points = views(recipe("schedule.end_lr=0", "schedule.peak_lr=3e-5"),
                   recipe("schedule.end_lr=0", "schedule.peak_lr=1e-4"))
    assert run_labels(points) == ["peak_lr=3e-05", "peak_lr=0.0001"]
    # several differences, nested keys, in recipe order; a list shown whole
    two = recipe("seed=7", "schedule.peak_lr=1e-2", "model.config.attention_layers=[local,local]")
    assert run_labels(views(base, two)) == [
        f'seed={base["seed"]}, attention_layers=["global","local"], peak_lr={base["schedule"]["peak_lr"]}',
        'seed=7, attention_layers=["local","local"], peak_lr=0.01']
    # the same last segment under two keys: as many segments as tell them apart
    assert run_labels(views(base, {**base, "evals": [{**base["evals"][0], "name": "a"},
                                                     {**base["evals"][1], "name": "b"}, *base["evals"][2:]]})) == [
        f'evals[0].name={base["evals"][0]["name"]}, evals[1].name={base["evals"][1]["name"]}',
        "evals[0].name=a, evals[1].name=b"]
    # another recipe: its name first; past three parts, how many more
    other = {**recipe("seed=9", "train.steps=500", "train.log_every=1", "schedule.peak_lr=1e-2"), "name": "tiny"}
    first, second = run_labels(views(base, other))
    assert first.startswith("smoke, seed=") and first.endswith(", +2 more")
    assert second == "tiny, seed=9, peak_lr=0.01, +2 more"


def test_labels_fall_back_to_directories_or_the_recipe_name():
    base = recipe()
    named = views(base, recipe(), {**base, "description": "the same run, described otherwise"})
    assert run_labels(named) == [v.name for v in named]  # nothing (but free text) tells them apart
    unlogged = views(base, None)
    assert run_labels(unlogged) == [v.name for v in unlogged]
    assert run_labels(views(base)) == ["smoke"]
    assert run_labels(views(None)) == ["20261202-120000-abcdef01"]


METRICS = [{"step": s, "train/loss": 5.0 - s / 10, "train/lr": s * 1e-4} for s in range(1, 11)] + [
    {"step": 10, "val/loss": 4.5}]


def test_the_figure_has_a_title_and_a_legend_by_difference(tmp_path):
    import matplotlib.pyplot as plt

    fig = figure(views(recipe("schedule.peak_lr=1e-3"), recipe("schedule.peak_lr=1e-2"), metrics=METRICS))
    try:
        ax = fig.axes[0]
        assert ax.get_title() == "loss (train solid, validation dashed): smoke"
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["peak_lr=0.001", "peak_lr=0.01"]
        assert len(ax.get_lines()) == 4  # train and validation of each
    finally:
        plt.close(fig)
    out = plot(views(recipe(), metrics=METRICS), tmp_path / "one.png", metric="train/lr")
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_a_run_directory_plot_is_titled_by_its_recipe(tmp_path):
    """What runner/run.py draws into a run's plots/: its recipe name in the title, no legend."""
    import matplotlib.pyplot as plt

    (tmp_path / "resolved.yaml").write_text(yaml.safe_dump(recipe(), sort_keys=False))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in METRICS))
    fig = figure([tmp_path], metric="train/lr")
    try:
        assert fig.axes[0].get_title() == "train/lr: smoke" and fig.axes[0].get_legend() is None
    finally:
        plt.close(fig)
    out = plot([tmp_path], tmp_path / "plots" / "lr.png", metric="train/lr", exclusive=True)
    assert out.read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "resolved.yaml").write_text("{not: yaml")  # a plot never fails over the recipe
    assert plot([tmp_path], tmp_path / "plots" / "loss.png").is_file()


@pytest.mark.parametrize("seconds, shown", [(0.04, "0.0s"), (12.5, "12.5s"), (59.96, "1m00s"), (61.5, "1m02s"),
                                            (3599.4, "59m59s"), (3723.4, "1h02m03s"), (93784, "26h03m04s")])
def test_times_are_shown_as_times(seconds, shown):
    assert duration(seconds, precise=True) == shown


def test_compare_shows_times_and_dry_runs(tmp_path, monkeypatch, capsys):
    done, planned = tmp_path / "done", tmp_path / "planned"
    for run in (done, planned):
        run.mkdir()
        (run / "resolved.yaml").write_text(yaml.safe_dump(recipe(), sort_keys=False))
    (done / "summary.json").write_text(json.dumps({"name": "smoke", "recipe_hash": "ab" * 32,
                                                   "status": "succeeded", "wall_time_s": 3723.4}))
    (done / "metrics.jsonl").write_text(json.dumps({"step": 1, "throughput/tokens_per_s": 12345.6}) + "\n")
    (planned / "plan.json").write_text("{}")  # what `ccrun run --dry-run` leaves
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compare", str(done), str(planned)])
    out = capsys.readouterr().out
    assert exit_.value.code in (0, None), out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:4]}
    assert rows == {"status": ["succeeded", "dry", "run"], "tokens_per_s": ["12,346", "-"],
                    "wall_time": ["1h02m03s", "-"]}


@pytest.mark.parametrize("seconds, shown", [(0.4, "0s"), (42.4, "42s"), (59.6, "1m00s"), (65, "1m05s"),
                                            (7380, "2h03m"), (7399, "2h03m")])
def test_progress_lines_cards_and_listings_show_whole_seconds(seconds, shown):
    assert duration(seconds) == shown
