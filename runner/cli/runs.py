"""run, resume, reproduce: recipes into run directories (runner.run does the work)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import SetOption, app, directory_option


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe file.", show_default=False)],
    set_: SetOption = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plan (every sweep point: model size, tokens per step, steps, schedule, memory per "
        "device, inputs found or missing) and create the run directories with it; run nothing.")] = False,
    runs_dir: Annotated[Path, typer.Option(help="Root of the run directories.")] = Path("runs"),
    sweep_index: Annotated[
        Optional[int], typer.Option(help="Run only this point of the recipe's sweep (for job arrays; in a Slurm job "
                                    "array the default is the array's index, SLURM_ARRAY_TASK_ID).")
    ] = None,
) -> None:
    """Run a recipe: data → model → train → evals → final/ in a new run directory under runs/<name>/.
    A recipe with a sweep runs every point of its grid, one after another (or one: --sweep-index,
    or in a Slurm job array the point of the array's index)."""
    from ..sweep import expand

    directory_option(runs_dir, "--runs-dir")
    points = expand(recipe, set_ or (), sweep_index=sweep_index, array_task=os.environ.get("SLURM_ARRAY_TASK_ID"))
    for warning in dict.fromkeys(w for p in points for w in p.loaded.warnings):  # once, not once per point
        typer.echo(warning, err=True)
    if dry_run:  # the plan on stderr, the run directories (one per point) as the last lines of stdout
        from ..sweep import dry_run as make_dry_run

        for made in make_dry_run(points, runs_root=runs_dir):
            typer.echo(str(made.path))
        return
    from ..common.procs import is_primary, maybe_initialize_distributed
    from ..preflight import require
    from ..sweep import launch, sweep_table

    inputs = require([p.loaded.recipe for p in points])  # every missing input at once, before any directory
    maybe_initialize_distributed()  # before anything touches a device
    table = []
    for point, found in zip(points, inputs, strict=True):
        run_dir, summary = launch(point, runs_root=runs_dir, inputs=found)
        table.append((point, summary, run_dir.path))
        if is_primary():  # under jax.distributed only process 0 writes and reports
            typer.echo(str(run_dir.path))
    if is_primary() and len(table) > 1:
        typer.echo(sweep_table(table), err=True)


@app.command()
def resume(run_dir: Annotated[Path, typer.Argument(help="A run directory.", show_default=False)]) -> None:
    """Continue an interrupted run in place: finished stages are kept, training resumes from its
    latest checkpoint (the same weights as an uninterrupted run, bit for bit)."""
    from .. import run as conductor
    from ..common.procs import is_primary, maybe_initialize_distributed
    from ..track.rundir import RunDir

    run = RunDir.open(run_dir)
    loaded = run.recipe()
    if run.dry_run():  # nothing has run in it yet: its inputs are checked as a launch checks them
        from ..preflight import require

        require([loaded.recipe])
    maybe_initialize_distributed()
    summary = conductor.execute_in(loaded, run)
    if is_primary():
        typer.echo(f"{summary.status}: {run.path}")


@app.command()
def reproduce(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.", show_default=False)],
    runs_dir: Annotated[Optional[Path], typer.Option(help="Root of the new run directory (default: beside it).")] = None,
) -> None:
    """Run a run directory's resolved recipe again into a new directory and compare every logged
    metric. Exit 0 when they match exactly, 1 when they differ."""
    from .. import run as conductor
    from ..common.procs import maybe_initialize_distributed
    from ..track.rundir import RunDir

    if runs_dir is not None:
        directory_option(runs_dir, "--runs-dir")
    original = RunDir.open(run_dir)
    original.recipe()  # a broken recipe is bad input before anything starts
    maybe_initialize_distributed()
    outcome = conductor.reproduce(original, runs_root=runs_dir)
    if outcome is None:
        return  # process 0 compares and reports
    typer.echo(outcome.message)
    if not outcome.matches:
        raise typer.Exit(1)
