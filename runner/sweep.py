"""Sweeps: a recipe's `sweep:` grid as points, each loaded with its values and run into its own
run directory (named after the point, its place kept in sweep.json); one W&B group for them all,
the same in every job of a job array (`--sweep-index`)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .common.errors import BadInput
from .common.procs import is_primary
from .recipe.load import Loaded, load_recipe
from .recipe.resolve import recipe_hash
from .recipe.results import RunSummary
from .run import Log, execute_in, shared_run_dir, stderr_line
from .track.rundir import RunDir


def sweep_points(sweep: dict | None) -> list[dict]:
    """The grid of a sweep, in order (the last key varies fastest); [{}] without a sweep."""
    import itertools

    if not sweep:
        return [{}]
    keys = list(sweep)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(sweep[k] for k in keys))]


def check_index(points: Sequence[dict], sweep_index: int | None) -> None:
    """A --sweep-index names one of the points (0 .. len - 1); BadInput names the range."""
    if sweep_index is not None and not 0 <= sweep_index < len(points):
        raise BadInput(f"--sweep-index: the sweep has {len(points)} point(s) (0..{len(points) - 1}); got {sweep_index}")


def array_index(points: Sequence[dict], array_task: str) -> int:
    """The sweep point a job of an array runs: its SLURM_ARRAY_TASK_ID, which must name a point
    (an array submitted as --array=0-N-1 for N points)."""
    try:
        index = int(array_task)
    except ValueError:
        raise BadInput(f"SLURM_ARRAY_TASK_ID must be an integer (got {array_task!r})") from None
    if not 0 <= index < len(points):
        raise BadInput(f"SLURM_ARRAY_TASK_ID {index}: the sweep has {len(points)} point(s); submit the array as "
                       f"--array=0-{len(points) - 1}")
    return index


def point_label(point: dict) -> str:
    """A sweep point as a directory-name suffix: `peak_lr=0.001,seed=1` (last key segment=value)."""
    text = ",".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in point.items())
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", text)[:80]


def sweep_group(recipe) -> str:
    """The W&B group of a sweep's points: the recipe name and the hash of the recipe with its
    sweep, the same in every job of a job array."""
    return f"{recipe.name}-sweep-{recipe_hash(recipe)[:8]}"


def point_overrides(point: dict) -> list[str]:
    """--set arguments for a sweep point (values written so the schema reads them back)."""
    return [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in point.items()]


@dataclass(frozen=True)
class Point:
    """One run of a recipe: the recipe itself, or one point of its sweep (with `sweep.json`'s
    {"group", "index", "point"})."""

    loaded: Loaded
    values: dict
    sweep: dict | None = None

    @property
    def label(self) -> str | None:
        """The end of its run directory's name: `peak_lr=0.001` for a sweep point, else None."""
        return point_label(self.values) if self.sweep else None


def expand(path: str | Path, overrides: Sequence[str] = (), *, sweep_index: int | None = None,
           array_task: str | None = None) -> list[Point]:
    """A recipe as the runs it makes: itself, or every point of its sweep (only point
    `sweep_index`, for job arrays), each loaded with the point's values and `sweep: null`.

    `array_task`: the job array's index (SLURM_ARRAY_TASK_ID), the point to run when no
    `sweep_index` is given; a recipe without a sweep runs as it is, in each job of the array."""
    loaded = load_recipe(path, overrides)
    points = sweep_points(loaded.recipe.sweep)
    check_index(points, sweep_index)
    if not loaded.recipe.sweep:
        return [Point(loaded, {})]
    if sweep_index is None and array_task is not None:
        sweep_index = array_index(points, array_task)
    group = sweep_group(loaded.recipe)
    chosen = range(len(points)) if sweep_index is None else [sweep_index]
    return [Point(load_recipe(path, [*overrides, *point_overrides(points[i]), "sweep=null"]), points[i],
                  {"group": group, "index": i, "point": points[i]}) for i in chosen]


def point_plan(point: Point, *, runs_root: str | Path = "runs", inputs: Sequence = ()) -> dict:
    """The plan of one point (runner.plan), its run directory given as the pattern of its name."""
    from .plan import make_plan, run_dir_pattern

    recipe = point.loaded.recipe
    return make_plan(recipe, inputs=inputs, point=point.values,
                     run_dir=run_dir_pattern(runs_root, recipe, recipe_hash(recipe), point.label))


def dry_run(points: Sequence[Point], *, runs_root: str | Path = "runs", log: Log | None = None) -> list[RunDir]:
    """What a launch makes before its first stage, and nothing else: one run directory per point
    (sweep.json, plan.json, provenance, recipe.yaml, resolved.yaml). The plans are printed with
    every input found or missing (missing inputs are reported, not refused)."""
    from .plan import render
    from .preflight import check_recipes
    from .run import create_run_dir

    log = log or stderr_line
    inputs = check_recipes([p.loaded.recipe for p in points])
    plans = [point_plan(p, runs_root=runs_root, inputs=i) for p, i in zip(points, inputs, strict=True)]
    runs = [create_run_dir(p.loaded, runs_root=runs_root, sweep=p.sweep, plan=plan, label=p.label)
            for p, plan in zip(points, plans, strict=True)]
    log(render(plans))
    return runs


def launch(point: Point, *, runs_root: str | Path = "runs", log: Log | None = None,
           inputs: Sequence = ()) -> tuple[RunDir, RunSummary]:
    """Run one point into a new run directory (on every process of a multi-process run); `inputs`:
    the preflight's statuses of its inputs, for its plan.json."""
    log = log or stderr_line
    if point.sweep and is_primary():
        log("sweep point: " + ", ".join(f"{k}={v!r}" for k, v in point.values.items()))
    plan = point_plan(point, runs_root=runs_root, inputs=inputs)
    run = shared_run_dir(point.loaded, runs_root=runs_root, sweep=point.sweep, label=point.label, plan=plan)
    if is_primary():
        log(f"run directory: {run.path}")
    return run, execute_in(point.loaded, run, log=log)


def sweep_table(rows: Sequence[tuple[Point, RunSummary, Path]]) -> str:
    """One line per point: its values, status, final validation loss, pass@k, run directory."""
    lines = []
    for point, summary, path in rows:
        cells = [", ".join(f"{k}={v}" for k, v in point.values.items()), summary.status]
        final = summary.train.final if summary.train else {}
        if "val/loss" in final:
            cells.append(f"val/loss {final['val/loss']:.4f}")
        for suite in summary.generation():
            cells.append(f"{suite.name} " + " ".join(f"pass@{k} {v:.3f}" for k, v in suite.pass_at_k.items()))
        cells.append(str(path))
        lines.append("  ".join(cells))
    return "sweep:\n" + "\n".join(f"  {line}" for line in lines)
